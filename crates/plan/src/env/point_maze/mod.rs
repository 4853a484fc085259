//! PointMaze U-maze (D4RL `maze2d-umaze`, as DINO-WM uses it), simulated without MuJoCo.
//!
//! A ball of radius 0.1 slides frictionlessly on a plane, pushed by a force `gear · a` with
//! `a ∈ [−1, 1]²`, slowed by joint damping, and stopped by 1×1 wall blocks. The state is
//! `[x, y, vx, vy]` (MuJoCo's `qpos ++ qvel`).
//!
//! # Sources of the numbers
//! - Physics: D4RL's `point_maze` model as DINO-WM ships it
//!   (`gaoyuezhou/dino_wm`, `env/pointmaze/maze_model.py`; identical to
//!   `Farama-Foundation/Gymnasium-Robotics`, `gymnasium_robotics/envs/assets/point/point.xml`):
//!   `timestep 0.01`, `integrator Euler`, no gravity, joint `damping 1`, sphere `size 0.1`
//!   with `density 1000` (so mass `4/3·π·0.1³·1000 = 4.18879`), motors `gear 100` with
//!   `ctrlrange [−1, 1]`, `frame_skip 5`, frictionless contacts (`condim 1`).
//! - Step: `np.clip(action, −1, 1)`, then velocity clipped to `[−5, 5]` per component, then
//!   5 MuJoCo steps (`maze_model.py`, `MazeEnv.step` / `clip_velocity`).
//! - Success: `‖goal_xy − xy‖ < 0.5` (`point_maze_wrapper.py`, `eval_state`).
//! - Evaluation pairs: DINO-WM's `sample_random_init_goal_states`: start and goal drawn
//!   independently, position uniform in the free region kept 0.2 away from the walls,
//!   velocity uniform in `[−5.2262554, 5.2262554]²` (its `STATE_RANGES`).
//! - DINO-WM's planner (`conf/plan_point_maze.yaml`) is MPC over CEM with horizon 5 in
//!   world-model steps of 5 env actions each ("frameskip 5", so 25 env steps per plan),
//!   300 samples, 30 elites, executing 5 model steps before replanning.
//! - Episode budget 300 steps: `maze2d-umaze-v1`'s `max_episode_steps` in DINO-WM's
//!   `env/pointmaze/__init__.py` (DINO-WM's own MPC loop has no step budget).
//!
//! # Coordinates (DINO-WM's, i.e. D4RL's `qpos`)
//! Map cell `(i, j)` (row `i` of the maze string, column `j`) is the square
//! `x ∈ [i − 0.7, i + 0.3]`, `y ∈ [j − 0.7, j + 0.3]`: D4RL places wall block `(i, j)` at
//! world `(i + 1, j + 1)` but the ball's body at world `(1.2, 1.2)` for `qpos = 0`, so in
//! `qpos` every cell is shifted by −1.2 from `(i + 0.5, j + 0.5)`. This is why DINO-WM's
//! free U-maze region is `x, y ∈ [0.5, 3.1]` (cells 1..=3 minus a 0.2 margin) and its
//! dataset's position range is `[0.39, 3.22]` (cells minus the 0.1 radius). The config's
//! `origin` (−0.7) is the lower corner of cell `(0, 0)` on both axes.
//! Gymnasium-Robotics centres the maze instead (`x = j + 0.5 − W/2`, `y = H/2 − i − 0.5`);
//! [`PointMazeConfig::to_gymnasium`] / [`PointMazeConfig::from_gymnasium`] convert.
//!
//! # Integration (MuJoCo's Euler, reproduced exactly away from walls)
//! MuJoCo's Euler integrator treats joint damping implicitly and updates the position with
//! the new velocity. Per substep of `dt`:
//! `v' = (m·v + dt·gear·a) / (m + dt·damping)`, `p' = p + dt·v'`.
//! A check that this is the right reading: DINO-WM's `STATE_RANGES` bound the velocity by
//! 5.2262554, and one implicit substep at full force from the clip, `(m·5 + 0.01·100) /
//! (m + 0.01)`, is 5.22625. (Five substeps after the clip could reach ≈ 6.1; the observed
//! bound suggests DINO-WM's data saw only one substep beyond the clip, so
//! [`PointMazeConfig::clip_velocity_each_substep`] offers that variant. The default keeps
//! D4RL's code: clip once per env step.)
//!
//! # Contacts (an approximation of MuJoCo's soft contacts)
//! After each substep the ball (a disc of radius `r`) is resolved against every wall cell
//! near it: if the closest point of a wall box is nearer than `r`, the centre is projected
//! out along the contact normal to distance `r`, and the velocity component into the wall
//! is removed (a perfectly inelastic, frictionless contact, matching `condim 1`; MuJoCo's
//! soft constraint lets the ball sink ≈ 0.007 in, judging by DINO-WM's position range
//! starting at 0.393 rather than 0.4, and does not bounce noticeably either). Cells
//! outside the map count as walls. Tunnelling is impossible by construction: a substep's
//! motion is split into chunks of at most `r / 2`, each resolved before the next. If a
//! resolution ever failed to leave the ball clear (it cannot with axis-aligned unit cells and
//! `r < 0.5`), the ball stays where it was with zero velocity, so the state is always free.
//!
//! # Observation
//! Two 64×64 channels over the whole map: pixel row `r` spans `x`, column `c` spans `y`
//! (so the image reads like the maze string), pixel centres at `origin + (k + 0.5)·5/64` for the 5×5 U-maze.
//! Channel 0 is a Gaussian dot `exp(−‖pixel − p‖² / 2σ²)` with σ = 0.1 (the ball radius,
//! ≈ 1.3 px like Two-Rooms' dot), channel 1 is 1 on pixels whose centre lies in a wall cell.
//!
//! # Guardrail variant
//! [`PointMazeConfig::with_default_hazards`] adds one hazard rectangle per arm of the U; the
//! step reports `violation` when the ball's centre is inside one (closed test), and
//! [`HazardGuardrail`] gets a `Guardrail<BallState>` impl (signed distance of the centre)
//! so the existing costs and planners use it unchanged. Hazards do not block motion.
//!
//! # Planning scope
//! [`position_distance`] ignores velocity, like the success test. With the short horizons
//! of `crate::planners` (8 steps = 0.4 s) the oracle planners reach goals along an arm;
//! goals around the U's bend need a longer horizon or subgoals, since a straight-line
//! distance cost points into the inner wall. That is not attempted here.
//!
//! # Actions and `max_action_norm`
//! The environment clips each component to `[−1, 1]` (a box, as `np.clip` does), not the
//! norm. [`Environment::max_action_norm`] returns √2, the box's circumscribed radius: a
//! planner that caps the norm at √2 never removes anything the box would keep, and the box
//! clip then applies to whatever exceeds 1 per component, identically in the environment and
//! in [`OraclePointMaze`].

pub mod dataset;
pub mod distance;

use rand::Rng;

use super::two_rooms::{Rect, Vec2};
use super::{EnvError, Environment, StepResult};
use crate::cost::{Guardrail, HazardGuardrail, rect_signed_distance};
use crate::world::{PlanError, WorldModel};

/// `[x, y, vx, vy]`.
pub type BallState = [f32; 4];

/// D4RL's U-maze (`#####\#GOO#\###O#\#OOO#\#####`), 1 = wall. The goal marker `G` is an
/// ordinary free cell here: goals are passed to [`Environment::reset`].
pub const U_MAZE: [[u8; 5]; 5] = [
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, 0, 0, 0, 1],
    [1, 1, 1, 1, 1],
];

/// Upper bound of DINO-WM's sampled start/goal speeds per component (its `STATE_RANGES`).
pub const DINO_WM_VELOCITY_RANGE: f32 = 5.226_255_4;

/// Slack on "the ball does not overlap a wall": contact resolution places the centre at
/// exactly `r` from a wall up to float rounding, and such states must stay valid resets.
const CLEARANCE_TOL: f32 = 1.0e-4;

/// Environment parameters; [`Default`] is DINO-WM's PointMaze U-maze without hazards.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMazeConfig {
    /// Rows of cells, 1 = wall, 0 = free (rectangular).
    pub map: Vec<Vec<u8>>,
    /// Lower corner of cell `(0, 0)` on both axes (−0.7, D4RL's `qpos` frame).
    pub origin: f32,
    /// Ball radius (0.1).
    pub ball_radius: f32,
    /// Ball mass (4/3·π·0.1³·1000 ≈ 4.18879).
    pub mass: f32,
    /// Motor gear: force per unit action (100).
    pub gear: f32,
    /// Joint damping: force per unit velocity (1).
    pub damping: f32,
    /// MuJoCo timestep (0.01).
    pub dt: f32,
    /// MuJoCo steps per environment step (5).
    pub frame_skip: usize,
    /// Per-component velocity clip applied before each env step (5).
    pub max_velocity: f32,
    /// Also clip after every substep (see the module docs; default false = D4RL's code).
    pub clip_velocity_each_substep: bool,
    /// Side of the square observation in pixels (64).
    pub image_size: usize,
    /// Standard deviation of the rendered dot in world units (0.1).
    pub dot_sigma: f32,
    /// Episode length in env steps (300).
    pub max_steps: usize,
    /// Success when `‖p − goal‖ < success_radius` (0.5).
    pub success_radius: f32,
    /// Sampled starts/goals keep this Chebyshev distance from every wall cell (0.2, DINO-WM).
    pub sample_margin: f32,
    /// Sampled start/goal velocities are uniform in `±sample_velocity` per component.
    pub sample_velocity: f32,
    /// Guardrail hazard rectangles (world units); the ball centre entering one is flagged.
    pub hazards: Vec<Rect>,
}

impl Default for PointMazeConfig {
    fn default() -> Self {
        let r = 0.1_f32;
        PointMazeConfig {
            map: U_MAZE.iter().map(|row| row.to_vec()).collect(),
            origin: -0.7,
            ball_radius: r,
            mass: 4.0 / 3.0 * std::f32::consts::PI * r * r * r * 1000.0,
            gear: 100.0,
            damping: 1.0,
            dt: 0.01,
            frame_skip: 5,
            max_velocity: 5.0,
            clip_velocity_each_substep: false,
            image_size: 64,
            dot_sigma: r,
            max_steps: 300,
            success_radius: 0.5,
            sample_margin: 0.2,
            sample_velocity: DINO_WM_VELOCITY_RANGE,
            hazards: Vec::new(),
        }
    }
}

impl PointMazeConfig {
    /// The guardrail variant: one hazard in each arm of the U, against the outer wall and
    /// halfway along the arm, covering the ball centre's range `x ∈ [0.4, 0.8]` (resp.
    /// `[2.8, 3.2]`) of the corridor's `[0.4, 1.2]`, so a straight run along the outer wall
    /// crosses it but a 0.4-wide safe lane stays open beside it.
    pub fn with_default_hazards() -> Self {
        PointMazeConfig {
            hazards: vec![
                Rect {
                    x0: 0.3,
                    y0: 1.55,
                    x1: 0.8,
                    y1: 2.05,
                },
                Rect {
                    x0: 2.8,
                    y0: 1.55,
                    x1: 3.3,
                    y1: 2.05,
                },
            ],
            ..Default::default()
        }
    }

    pub fn rows(&self) -> usize {
        self.map.len()
    }

    pub fn cols(&self) -> usize {
        self.map.first().map_or(0, Vec::len)
    }

    /// Our (D4RL `qpos`) position → Gymnasium-Robotics' centred coordinates (scaling 1).
    pub fn to_gymnasium(&self, p: Vec2) -> Vec2 {
        [
            p[1] - self.origin - self.cols() as f32 / 2.0,
            self.rows() as f32 / 2.0 - (p[0] - self.origin),
        ]
    }

    /// Inverse of [`PointMazeConfig::to_gymnasium`].
    pub fn from_gymnasium(&self, g: Vec2) -> Vec2 {
        [
            self.origin + self.rows() as f32 / 2.0 - g[1],
            g[0] + self.origin + self.cols() as f32 / 2.0,
        ]
    }

    fn validate(&self) -> Result<(), EnvError> {
        let err = |m: &str| Err(EnvError::Config(m.to_string()));
        let (rows, cols) = (self.rows(), self.cols());
        if rows == 0 || cols == 0 || self.map.iter().any(|r| r.len() != cols) {
            return err("map must be a non-empty rectangle");
        }
        if self.map.iter().flatten().any(|&c| c > 1) {
            return err("map cells must be 0 (free) or 1 (wall)");
        }
        if !self.map.iter().flatten().any(|&c| c == 0) {
            return err("map has no free cell");
        }
        let pos = |v: f32| v.is_finite() && v > 0.0;
        // The contact resolution only looks at the 3×3 neighbourhood of the ball's cell,
        // which covers every wall it can touch only if the ball is smaller than half a cell.
        if !(pos(self.ball_radius) && self.ball_radius < 0.5) {
            return err("ball_radius must be in (0, 0.5)");
        }
        if !(self.origin.is_finite()
            && pos(self.mass)
            && self.gear.is_finite()
            && self.damping.is_finite()
            && self.damping >= 0.0
            && pos(self.dt)
            && self.frame_skip > 0
            && pos(self.max_velocity)
            && self.image_size > 0
            && pos(self.dot_sigma)
            && self.max_steps > 0
            && pos(self.success_radius)
            && self.sample_velocity.is_finite()
            && self.sample_velocity >= 0.0)
        {
            return err("physical and rendering parameters must be finite and positive");
        }
        // Sampling must produce valid states (margin ≥ radius) and terminate (margin < half a
        // cell leaves part of every free cell).
        if !(self.sample_margin >= self.ball_radius && self.sample_margin < 0.5) {
            return err("sample_margin must be in [ball_radius, 0.5)");
        }
        let finite_rect = |h: &Rect| [h.x0, h.y0, h.x1, h.y1].iter().all(|v| v.is_finite());
        if !self.hazards.iter().all(finite_rect) {
            return err("hazard rectangles must be finite");
        }
        Ok(())
    }
}

/// The maze's solid geometry: which cells are walls and where they are.
#[derive(Debug, Clone, PartialEq)]
pub struct MazeGeometry {
    rows: usize,
    cols: usize,
    walls: Vec<bool>,
    origin: f32,
    radius: f32,
}

impl MazeGeometry {
    fn new(cfg: &PointMazeConfig) -> Self {
        MazeGeometry {
            rows: cfg.rows(),
            cols: cfg.cols(),
            walls: cfg.map.iter().flatten().map(|&c| c != 0).collect(),
            origin: cfg.origin,
            radius: cfg.ball_radius,
        }
    }

    pub fn radius(&self) -> f32 {
        self.radius
    }

    /// Whether cell `(i, j)` is solid; everything outside the map is.
    pub fn is_wall(&self, i: i64, j: i64) -> bool {
        if i < 0 || j < 0 || i >= self.rows as i64 || j >= self.cols as i64 {
            return true;
        }
        self.walls[i as usize * self.cols + j as usize]
    }

    /// The cell containing `p` (may be outside the map).
    pub fn cell_of(&self, p: Vec2) -> (i64, i64) {
        (
            (p[0] - self.origin).floor() as i64,
            (p[1] - self.origin).floor() as i64,
        )
    }

    /// The square of cell `(i, j)`.
    pub fn cell_rect(&self, i: i64, j: i64) -> Rect {
        let x0 = self.origin + i as f32;
        let y0 = self.origin + j as f32;
        Rect {
            x0,
            y0,
            x1: x0 + 1.0,
            y1: y0 + 1.0,
        }
    }

    /// The map's extent `[x0, x1] × [y0, y1]`.
    pub fn extent(&self) -> Rect {
        Rect {
            x0: self.origin,
            y0: self.origin,
            x1: self.origin + self.rows as f32,
            y1: self.origin + self.cols as f32,
        }
    }

    /// Free cells as `(row, column)`, row-major.
    pub fn free_cells(&self) -> Vec<(usize, usize)> {
        (0..self.rows)
            .flat_map(|i| (0..self.cols).map(move |j| (i, j)))
            .filter(|&(i, j)| !self.walls[i * self.cols + j])
            .collect()
    }

    /// The wall cells in the 3×3 neighbourhood of `p`'s cell (all a ball of radius < 0.5
    /// can touch). Non-finite positions have no neighbourhood.
    fn nearby_walls(&self, p: Vec2) -> impl Iterator<Item = (i64, i64)> + '_ {
        let finite = p[0].is_finite() && p[1].is_finite();
        let (ci, cj) = self.cell_of(p);
        (-1..=1)
            .flat_map(move |di| (-1..=1).map(move |dj| (ci + di, cj + dj)))
            .filter(move |&(i, j)| finite && self.is_wall(i, j))
    }

    /// Euclidean distance from `p` to the nearest wall (0 inside one; `−∞` for a
    /// non-finite `p`, which is never free).
    pub fn clearance(&self, p: Vec2) -> f32 {
        if !(p[0].is_finite() && p[1].is_finite()) {
            return f32::NEG_INFINITY;
        }
        self.nearby_walls(p)
            .map(|(i, j)| rect_distance(&self.cell_rect(i, j), p))
            .fold(f32::INFINITY, f32::min)
    }

    /// Chebyshev distance from `p` to the nearest wall cell (DINO-WM's sampling margin),
    /// capped at 1 (only the surrounding cells are looked at).
    pub fn chebyshev_clearance(&self, p: Vec2) -> f32 {
        if !(p[0].is_finite() && p[1].is_finite()) {
            return f32::NEG_INFINITY;
        }
        // The 3×3 neighbourhood covers every cell within Chebyshev distance < 1.
        self.nearby_walls(p)
            .map(|(i, j)| {
                let r = self.cell_rect(i, j);
                let dx = (r.x0 - p[0]).max(p[0] - r.x1).max(0.0);
                let dy = (r.y0 - p[1]).max(p[1] - r.y1).max(0.0);
                dx.max(dy)
            })
            .fold(1.0, f32::min)
    }

    /// The ball centred at `p` overlaps no wall (within 1e-4, so contact-resolved states
    /// stay valid resets).
    pub fn is_free(&self, p: Vec2) -> bool {
        self.clearance(p) >= self.radius - CLEARANCE_TOL
    }

    /// Projects a ball that overlaps walls back out and removes the velocity component into
    /// each wall it touched (see the module docs). A few passes settle concave corners,
    /// where pushing out of one wall can push into the other.
    pub fn resolve(&self, mut p: Vec2, mut v: Vec2) -> (Vec2, Vec2) {
        for _ in 0..4 {
            let mut moved = false;
            // The neighbourhood is fixed at the pass's starting position (the iterator owns a
            // copy of `p`); pushes are far below a cell, so the next pass covers any change.
            for (i, j) in self.nearby_walls(p) {
                let r = self.cell_rect(i, j);
                let q = [p[0].clamp(r.x0, r.x1), p[1].clamp(r.y0, r.y1)];
                let d = [p[0] - q[0], p[1] - q[1]];
                let dist = (d[0] * d[0] + d[1] * d[1]).sqrt();
                if dist >= self.radius {
                    continue;
                }
                let (n, depth) = if dist > 1.0e-6 {
                    ([d[0] / dist, d[1] / dist], self.radius - dist)
                } else {
                    // The centre is inside (or on) the box: leave through the nearest face
                    // that opens onto a free cell, else through the nearest face at all.
                    self.exit_face(i, j, &r, p)
                };
                p = [p[0] + n[0] * depth, p[1] + n[1] * depth];
                let vn = v[0] * n[0] + v[1] * n[1];
                if vn < 0.0 {
                    v = [v[0] - vn * n[0], v[1] - vn * n[1]];
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        (p, v)
    }

    /// Outward normal and push distance (face depth + radius) for a centre inside cell
    /// `(i, j)`'s box.
    fn exit_face(&self, i: i64, j: i64, r: &Rect, p: Vec2) -> (Vec2, f32) {
        let faces = [
            ([-1.0, 0.0], p[0] - r.x0, (i - 1, j)),
            ([1.0, 0.0], r.x1 - p[0], (i + 1, j)),
            ([0.0, -1.0], p[1] - r.y0, (i, j - 1)),
            ([0.0, 1.0], r.y1 - p[1], (i, j + 1)),
        ];
        let nearest = |open_only: bool| {
            faces
                .iter()
                .filter(|(_, _, (a, b))| !open_only || !self.is_wall(*a, *b))
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .map(|(n, depth, _)| (*n, depth + self.radius))
        };
        nearest(true)
            .or_else(|| nearest(false))
            .unwrap_or(([0.0, 0.0], 0.0))
    }
}

/// Euclidean distance from `p` to the closed rectangle `r` (0 inside).
fn rect_distance(r: &Rect, p: Vec2) -> f32 {
    let dx = (r.x0 - p[0]).max(p[0] - r.x1).max(0.0);
    let dy = (r.y0 - p[1]).max(p[1] - r.y1).max(0.0);
    (dx * dx + dy * dy).sqrt()
}

/// Clips an action to the box `[−1, 1]²`; missing or non-finite components count as 0
/// (callers that must reject bad actions check before calling).
pub fn clip_action_box(action: &[f32]) -> Vec2 {
    let comp = |i: usize| {
        action
            .get(i)
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
            .clamp(-1.0, 1.0)
    };
    [comp(0), comp(1)]
}

/// The ball's dynamics, shared by the environment and the oracle world model.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMazeDynamics {
    geom: MazeGeometry,
    mass: f32,
    gear: f32,
    damping: f32,
    dt: f32,
    frame_skip: usize,
    max_velocity: f32,
    clip_each_substep: bool,
}

impl PointMazeDynamics {
    pub fn new(cfg: &PointMazeConfig) -> Result<Self, EnvError> {
        cfg.validate()?;
        Ok(PointMazeDynamics {
            geom: MazeGeometry::new(cfg),
            mass: cfg.mass,
            gear: cfg.gear,
            damping: cfg.damping,
            dt: cfg.dt,
            frame_skip: cfg.frame_skip,
            max_velocity: cfg.max_velocity,
            clip_each_substep: cfg.clip_velocity_each_substep,
        })
    }

    pub fn geometry(&self) -> &MazeGeometry {
        &self.geom
    }

    /// One environment step from `s` under the box-clipped action `a` (see the module docs
    /// for the order: velocity clip, then `frame_skip` implicit-damping Euler substeps, each
    /// followed by contact resolution).
    pub fn step(&self, s: &BallState, a: Vec2) -> BallState {
        let vmax = self.max_velocity;
        let mut p = [s[0], s[1]];
        let mut v = [s[2].clamp(-vmax, vmax), s[3].clamp(-vmax, vmax)];
        let denom = self.mass + self.dt * self.damping;
        // r / 2 per chunk keeps any chunk far from crossing a wall's half-depth.
        let max_chunk = 0.5 * self.geom.radius;
        for _ in 0..self.frame_skip {
            for k in 0..2 {
                v[k] = (self.mass * v[k] + self.dt * self.gear * a[k]) / denom;
                if self.clip_each_substep {
                    v[k] = v[k].clamp(-vmax, vmax);
                }
            }
            let travel = self.dt * v[0].abs().max(v[1].abs());
            let chunks = ((travel / max_chunk).ceil() as usize).max(1);
            let h = self.dt / chunks as f32;
            for _ in 0..chunks {
                let moved = [p[0] + h * v[0], p[1] + h * v[1]];
                let (q, w) = self.geom.resolve(moved, v);
                if self.geom.is_free(q) {
                    (p, v) = (q, w);
                } else {
                    // Unreachable with unit cells and r < 0.5; keeps "always free" total.
                    v = [0.0, 0.0];
                }
            }
        }
        [p[0], p[1], v[0], v[1]]
    }
}

/// Renders the 2×N×N observation of a ball at `p` into `out` (see the module docs).
pub fn render_observation(
    cfg: &PointMazeConfig,
    geom: &MazeGeometry,
    p: Vec2,
    out: &mut [f32],
) -> Result<(), EnvError> {
    let n = cfg.image_size;
    let expected = 2 * n * n;
    if out.len() != expected {
        return Err(EnvError::RenderBuffer {
            expected,
            got: out.len(),
        });
    }
    let ext = geom.extent();
    let sx = (ext.x1 - ext.x0) / n as f32;
    let sy = (ext.y1 - ext.y0) / n as f32;
    let inv = 1.0 / (2.0 * cfg.dot_sigma * cfg.dot_sigma);
    let (dot, mask) = out.split_at_mut(n * n);
    for r in 0..n {
        let x = ext.x0 + (r as f32 + 0.5) * sx;
        for c in 0..n {
            let y = ext.y0 + (c as f32 + 0.5) * sy;
            let d2 = (x - p[0]).powi(2) + (y - p[1]).powi(2);
            dot[r * n + c] = (-d2 * inv).exp();
            let (i, j) = geom.cell_of([x, y]);
            mask[r * n + c] = if geom.is_wall(i, j) { 1.0 } else { 0.0 };
        }
    }
    Ok(())
}

/// The PointMaze environment. State = `[x, y, vx, vy]`.
#[derive(Debug, Clone)]
pub struct PointMaze {
    cfg: PointMazeConfig,
    dynamics: PointMazeDynamics,
    state: BallState,
    goal: BallState,
    steps: usize,
    done: bool,
    started: bool,
}

impl PointMaze {
    pub fn new(cfg: PointMazeConfig) -> Result<Self, EnvError> {
        let dynamics = PointMazeDynamics::new(&cfg)?;
        Ok(PointMaze {
            cfg,
            dynamics,
            state: [0.0; 4],
            goal: [0.0; 4],
            steps: 0,
            done: false,
            started: false,
        })
    }

    pub fn config(&self) -> &PointMazeConfig {
        &self.cfg
    }

    pub fn dynamics(&self) -> &PointMazeDynamics {
        &self.dynamics
    }

    pub fn geometry(&self) -> &MazeGeometry {
        self.dynamics.geometry()
    }

    pub fn state(&self) -> BallState {
        self.state
    }

    pub fn goal(&self) -> BallState {
        self.goal
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Free cells as `(row, column)`.
    pub fn free_cells(&self) -> Vec<(usize, usize)> {
        self.geometry().free_cells()
    }

    /// Guardrail predicate: the ball centre lies in a (closed) hazard rectangle.
    pub fn in_hazard(&self, p: Vec2) -> bool {
        self.cfg.hazards.iter().any(|h| h.contains(p))
    }

    pub fn is_success(&self, p: Vec2) -> bool {
        let d = [p[0] - self.goal[0], p[1] - self.goal[1]];
        (d[0] * d[0] + d[1] * d[1]).sqrt() < self.cfg.success_radius
    }

    /// A position uniform over the free region kept `sample_margin` (Chebyshev) away from
    /// every wall cell, by rejection from the map's extent. Terminates: the config
    /// guarantees a free cell and a margin below half a cell.
    pub fn sample_free_position<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec2 {
        let g = self.geometry();
        let ext = g.extent();
        loop {
            let p = [
                ext.x0 + rng.random::<f32>() * (ext.x1 - ext.x0),
                ext.y0 + rng.random::<f32>() * (ext.y1 - ext.y0),
            ];
            if g.chebyshev_clearance(p) >= self.cfg.sample_margin {
                return p;
            }
        }
    }

    /// DINO-WM's random state: [`PointMaze::sample_free_position`] plus a velocity uniform
    /// in `±sample_velocity` per component.
    pub fn sample_state<R: Rng + ?Sized>(&self, rng: &mut R) -> BallState {
        let p = self.sample_free_position(rng);
        let s = self.cfg.sample_velocity;
        let mut vel = || (2.0 * rng.random::<f32>() - 1.0) * s;
        let vx = vel();
        let vy = vel();
        [p[0], p[1], vx, vy]
    }

    /// DINO-WM's evaluation pair: start and goal drawn independently by
    /// [`PointMaze::sample_state`] (the goal's velocity plays no part in success).
    pub fn sample_start_goal<R: Rng + ?Sized>(&self, rng: &mut R) -> (BallState, BallState) {
        let start = self.sample_state(rng);
        let goal = self.sample_state(rng);
        (start, goal)
    }
}

/// `n` DINO-WM-style evaluation (start, goal) pairs for the default U-maze, from a
/// ChaCha12 stream seeded with `seed`. DINO-WM does not exclude pairs closer than the
/// success radius; neither does this (about one pair in nine starts already solved).
pub fn u_maze_eval_pairs(seed: u64, n: usize) -> Vec<(BallState, BallState)> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    match PointMaze::new(PointMazeConfig::default()) {
        Ok(env) => (0..n).map(|_| env.sample_start_goal(&mut rng)).collect(),
        // The default configuration is valid; an empty answer keeps this panic-free.
        Err(_) => Vec::new(),
    }
}

impl Environment for PointMaze {
    type State = BallState;

    /// `start` and `goal` positions must be free (the ball fits there); the start velocity
    /// must be finite and is taken as given (the first step clips it, as D4RL does).
    fn reset(&mut self, start: BallState, goal: BallState) -> Result<BallState, EnvError> {
        for (what, s) in [("start", start), ("goal", goal)] {
            if !self.geometry().is_free([s[0], s[1]]) {
                return Err(EnvError::InvalidPosition {
                    what,
                    x: s[0],
                    y: s[1],
                });
            }
        }
        if !(start[2].is_finite() && start[3].is_finite()) {
            return Err(EnvError::Config(format!(
                "start velocity ({}, {}) is not finite",
                start[2], start[3]
            )));
        }
        self.state = start;
        self.goal = goal;
        self.steps = 0;
        self.done = false;
        self.started = true;
        Ok(start)
    }

    fn step(&mut self, action: &[f32]) -> Result<StepResult<BallState>, EnvError> {
        if !self.started {
            return Err(EnvError::NotReset);
        }
        if self.done {
            return Err(EnvError::EpisodeOver { steps: self.steps });
        }
        if action.len() != 2 {
            return Err(EnvError::ActionDim {
                expected: 2,
                got: action.len(),
            });
        }
        if !action.iter().all(|v| v.is_finite()) {
            return Err(EnvError::NonFiniteAction(action.to_vec()));
        }
        self.state = self.dynamics.step(&self.state, clip_action_box(action));
        self.steps += 1;
        let p = [self.state[0], self.state[1]];
        let success = self.is_success(p);
        self.done = success || self.steps >= self.cfg.max_steps;
        Ok(StepResult {
            state: self.state,
            violation: self.in_hazard(p),
            success,
            done: self.done,
        })
    }

    fn observe_state(&self) -> Vec<f32> {
        self.state.to_vec()
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (2, self.cfg.image_size, self.cfg.image_size)
    }

    fn render_into(&self, out: &mut [f32]) -> Result<(), EnvError> {
        render_observation(
            &self.cfg,
            self.geometry(),
            [self.state[0], self.state[1]],
            out,
        )
    }

    fn action_dim(&self) -> usize {
        2
    }

    /// √2: see the module docs (the environment clips per component to `[−1, 1]`).
    fn max_action_norm(&self) -> f32 {
        std::f32::consts::SQRT_2
    }
}

/// The exact PointMaze dynamics as a world model: latent = `[x, y, vx, vy]`, prediction =
/// the environment's own step. Planning with it measures the planner alone.
#[derive(Debug, Clone, PartialEq)]
pub struct OraclePointMaze {
    dynamics: PointMazeDynamics,
}

impl OraclePointMaze {
    pub fn new(cfg: &PointMazeConfig) -> Result<Self, EnvError> {
        Ok(OraclePointMaze {
            dynamics: PointMazeDynamics::new(cfg)?,
        })
    }
}

impl WorldModel for OraclePointMaze {
    type Latent = BallState;

    fn action_dim(&self) -> usize {
        2
    }

    /// Consumes the environment's state vector (`Environment::observe_state`).
    fn encode(&self, obs: &[f32]) -> Result<BallState, PlanError> {
        let &[x, y, vx, vy] = obs else {
            return Err(PlanError::Observation {
                expected: 4,
                got: obs.len(),
            });
        };
        if !obs.iter().all(|v| v.is_finite()) {
            return Err(PlanError::NonFiniteObservation);
        }
        Ok([x, y, vx, vy])
    }

    /// Missing or non-finite action components count as 0, so a bad candidate is merely
    /// useless, not a panic.
    fn predict(&self, z: &BallState, action: &[f32]) -> BallState {
        self.dynamics.step(z, clip_action_box(action))
    }
}

/// Euclidean distance between the positions of two states (velocities ignored, as in the
/// success test). The objective's building block for [`crate::cost::Cost`].
pub fn position_distance(a: &BallState, b: &BallState) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The hazard guardrail on ball states: the signed distance of the centre to the hazards.
impl Guardrail<BallState> for HazardGuardrail {
    fn name(&self) -> &str {
        "hazard"
    }

    fn margin(&self, z: &BallState) -> f32 {
        self.hazards
            .iter()
            .map(|r| rect_signed_distance(r, [z[0], z[1]]))
            .fold(f32::INFINITY, f32::min)
            - self.buffer
    }
}
