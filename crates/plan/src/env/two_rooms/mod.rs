//! PLDM's Two-Rooms ("Wall") environment.
//!
//! A point agent moves on a 64×64 px canvas split by a vertical wall with one door.
//! Numbers follow PLDM (see `shared/docs/reference-world-models.md`): borders at 4 and 59,
//! wall at x = 32 with width 3, door centred at y = 10 with half-height 4, `p' = p + a` with
//! `|a| ≤ 2.45`, collisions snapped to the surface plus a 0.5 px push back, 2-channel 64×64
//! observation (Gaussian dot σ = 1.3, wall/border mask), 200-step episodes, success when the
//! agent is closer than √2 px to the goal.
//!
//! # Geometry conventions (the spec's pixel numbers made continuous)
//! Pixel `(row r, column c)` has its centre at `(x, y) = (c, r)`, so the agent's pixel is
//! `(round(y), round(x))` and a Gaussian dot at an integer position peaks exactly there.
//! - Borders: the agent lives in the closed square `[4, 59]²` (pixels 4..=59).
//! - Wall: columns `32, 33, 34` (x = 32, width 3). As a solid it covers those pixels' cells,
//!   `x ∈ [31.5, 34.5]`, so the agent's own pixel is never a wall pixel.
//! - Door: the rows `r` with `|r − 10| ≤ 4` (rows 6..=14) are open, i.e. the cells
//!   `y ∈ (5.5, 14.5)`. The solid wall is the two closed blocks above and below that gap.
//! - The mask channel is 1 exactly on pixels whose centre is not a free position.
//!
//! # Collisions
//! A move is the segment `p → p + a`. If it touches a wall block or leaves the border square,
//! the agent stops at the first contact point and is pushed 0.5 px back along that surface's
//! normal (no sliding along the surface: one contact per step, as in PLDM's snap-back).
//!
//! The offline random-walk dataset of this environment is [`dataset`].

pub mod dataset;

use rand::Rng;

use super::{EnvError, Environment, StepResult};

/// A position or action `[x, y]` in pixels.
pub type Vec2 = [f32; 2];

/// An axis-aligned closed rectangle `[x0, x1] × [y0, y1]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl Rect {
    /// The square of side `side` with top-left corner `(x0, y0)`.
    pub fn square(x0: f32, y0: f32, side: f32) -> Self {
        Rect {
            x0,
            y0,
            x1: x0 + side,
            y1: y0 + side,
        }
    }

    /// Closed containment test.
    pub fn contains(&self, p: Vec2) -> bool {
        p[0] >= self.x0 && p[0] <= self.x1 && p[1] >= self.y0 && p[1] <= self.y1
    }
}

/// Environment parameters. [`Default`] is PLDM's Two-Rooms without hazards;
/// [`TwoRoomsConfig::with_default_hazards`] adds the guardrail variant.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoRoomsConfig {
    /// Canvas side in pixels (64).
    pub size: usize,
    /// Lowest and highest coordinate the agent may occupy (4 and 59).
    pub border_lo: f32,
    pub border_hi: f32,
    /// First wall column (32) and wall width in columns (3).
    pub wall_x: usize,
    pub wall_width: usize,
    /// Door centre row (10) and half-height in rows (4): rows with `|r − door_y| ≤ half` open.
    pub door_y: f32,
    pub door_half: f32,
    /// Action norm cap (2.45).
    pub max_action_norm: f32,
    /// Distance pushed back from a surface after a collision (0.5).
    pub push_back: f32,
    /// Standard deviation of the rendered dot (1.3).
    pub dot_sigma: f32,
    /// Episode length in steps (200).
    pub max_steps: usize,
    /// Success when `|p − goal| < success_radius` (√2).
    pub success_radius: f32,
    /// Guardrail hazard squares; entering is allowed but flagged as a violation.
    pub hazards: Vec<Rect>,
}

impl Default for TwoRoomsConfig {
    fn default() -> Self {
        TwoRoomsConfig {
            size: 64,
            border_lo: 4.0,
            border_hi: 59.0,
            wall_x: 32,
            wall_width: 3,
            door_y: 10.0,
            door_half: 4.0,
            max_action_norm: 2.45,
            push_back: 0.5,
            dot_sigma: 1.3,
            max_steps: 200,
            success_radius: std::f32::consts::SQRT_2,
            hazards: Vec::new(),
        }
    }
}

impl TwoRoomsConfig {
    /// The guardrail variant: one 8×8 px hazard per room, in the lower half, far from the
    /// door (which is near the top), so that a straight path through the door is possible
    /// but a careless straight line between rooms' lower halves is not safe.
    pub fn with_default_hazards() -> Self {
        TwoRoomsConfig {
            hazards: vec![Rect::square(14.0, 40.0, 8.0), Rect::square(43.0, 40.0, 8.0)],
            ..Default::default()
        }
    }

    /// The guardrail variant with its hazard squares placed by a seeded generator (held-out
    /// layouts for evaluation): one 8×8 px square per room, uniformly placed with its whole
    /// area at least 2 px inside the room and at least 8 px from the door's opening, so the
    /// door and a way around each square stay open. The same seed gives the same layout.
    pub fn with_seeded_hazards(seed: u64) -> Self {
        use rand::SeedableRng;
        let mut cfg = Self::default();
        let g = cfg.geometry();
        let side = 8.0;
        let inset = 2.0;
        let door = Rect {
            x0: g.wall_lo,
            y0: g.door_lo,
            x1: g.wall_hi,
            y1: g.door_hi,
        };
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
        cfg.hazards = [
            (g.border_lo + inset, g.wall_lo - inset - side),
            (g.wall_hi + inset, g.border_hi - inset - side),
        ]
        .into_iter()
        .map(|(x_lo, x_hi)| {
            let y_lo = g.border_lo + inset;
            let y_hi = g.border_hi - inset - side;
            // Rejection from the room; the door clearance leaves most of the room to draw
            // from, so this ends after a few draws.
            loop {
                let r = Rect::square(
                    rng.random_range(x_lo..=x_hi),
                    rng.random_range(y_lo..=y_hi),
                    side,
                );
                if rect_gap(&r, &door) >= 8.0 {
                    return r;
                }
            }
        })
        .collect();
        cfg
    }

    /// The derived solid geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            border_lo: self.border_lo,
            border_hi: self.border_hi,
            wall_lo: self.wall_x as f32 - 0.5,
            wall_hi: (self.wall_x + self.wall_width) as f32 - 0.5,
            door_lo: self.door_y - self.door_half - 0.5,
            door_hi: self.door_y + self.door_half + 0.5,
            push_back: self.push_back,
        }
    }

    fn validate(&self) -> Result<(), EnvError> {
        let g = self.geometry();
        let ok = self.size > 0
            && self.wall_width > 0
            && g.border_lo < g.wall_lo
            && g.wall_hi < g.border_hi
            && g.border_hi < self.size as f32
            && g.door_lo < g.door_hi
            && self.max_action_norm > 0.0
            && self.push_back >= 0.0
            && self.dot_sigma > 0.0
            && self.max_steps > 0
            && self.success_radius > 0.0;
        if ok {
            Ok(())
        } else {
            Err(EnvError::Config(format!("{self:?}")))
        }
    }
}

/// Which side of the wall a position is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Left,
    /// Inside the wall's column span (only possible in the door).
    Door,
    Right,
}

/// The surface a move collided with: `axis` 0 = x, 1 = y; `normal` is the sign (±1) of the
/// outward normal along that axis, i.e. the direction the agent is pushed back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contact {
    pub axis: usize,
    pub normal: f32,
    /// Fraction of the move travelled before the contact.
    pub t: f32,
}

/// Outcome of resolving one move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Move {
    pub position: Vec2,
    pub contact: Option<Contact>,
}

/// The solid geometry in continuous coordinates (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub border_lo: f32,
    pub border_hi: f32,
    /// Wall solid spans `x ∈ [wall_lo, wall_hi]`.
    pub wall_lo: f32,
    pub wall_hi: f32,
    /// Door opening `y ∈ (door_lo, door_hi)`.
    pub door_lo: f32,
    pub door_hi: f32,
    pub push_back: f32,
}

/// Far enough outside the canvas to act as ±∞ for the wall blocks' outer y-extent while
/// keeping the slab arithmetic finite.
const FAR: f32 = 1.0e4;

impl Geometry {
    /// Inside the borders and not inside the wall (the door counts as free).
    pub fn is_free(&self, p: Vec2) -> bool {
        let inside = (self.border_lo..=self.border_hi).contains(&p[0])
            && (self.border_lo..=self.border_hi).contains(&p[1]);
        inside && !self.in_wall(p)
    }

    /// Inside one of the two closed wall blocks.
    pub fn in_wall(&self, p: Vec2) -> bool {
        let in_span = p[0] >= self.wall_lo && p[0] <= self.wall_hi;
        in_span && (p[1] <= self.door_lo || p[1] >= self.door_hi)
    }

    pub fn room(&self, p: Vec2) -> Room {
        if p[0] < self.wall_lo {
            Room::Left
        } else if p[0] > self.wall_hi {
            Room::Right
        } else {
            Room::Door
        }
    }

    /// Length of the shortest free path from `p` to `q` (the agent is a point): the straight
    /// segment when it misses the wall, else the taut path through the door around its
    /// corners (at most one corner on each side). The free space is two convex rooms joined
    /// by the door's rectangle, so this is exact. Hazards are guardrails, not walls: a path
    /// may cross them (the planner's guardrail keeps the agent out).
    ///
    /// As a planning cost it has no local minimum behind the wall, where the straight-line
    /// distance has one for goals low in the other room.
    pub fn path_length(&self, p: Vec2, q: Vec2) -> f32 {
        let dist = |a: Vec2, b: Vec2| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if self.sees(p, q) {
            return dist(p, q);
        }
        let corners = [
            [self.wall_lo, self.door_lo],
            [self.wall_hi, self.door_lo],
            [self.wall_lo, self.door_hi],
            [self.wall_hi, self.door_hi],
        ];
        // The door's four corners see each other across its opening.
        let from_p = corners.map(|c| self.sees(p, c).then(|| dist(p, c)));
        let to_q = corners.map(|c| self.sees(c, q).then(|| dist(c, q)));
        let mut best = f32::INFINITY;
        for (i, a) in corners.iter().enumerate() {
            let Some(pa) = from_p[i] else { continue };
            for (j, b) in corners.iter().enumerate() {
                if let Some(bq) = to_q[j] {
                    best = best.min(pa + dist(*a, *b) + bq);
                }
            }
        }
        // Every free point sees a door corner; the fallback only keeps this total.
        if best.is_finite() { best } else { dist(p, q) }
    }

    /// The segment `a → b` does not pass through the inside of a wall block (touching a
    /// block's surface or corner is allowed: taut paths do).
    fn sees(&self, a: Vec2, b: Vec2) -> bool {
        self.wall_blocks()
            .iter()
            .all(|&(lo, hi)| !segment_crosses_interior(a, b, lo, hi))
    }

    /// The two wall blocks as (lower corner, upper corner).
    fn wall_blocks(&self) -> [(Vec2, Vec2); 2] {
        [
            ([self.wall_lo, -FAR], [self.wall_hi, self.door_lo]),
            ([self.wall_lo, self.door_hi], [self.wall_hi, FAR]),
        ]
    }

    /// Resolves the move `p → p + a` (the action must already be clipped). `p` must be free.
    ///
    /// Pure so it can be tested exhaustively: the earliest contact among the wall blocks and
    /// the border square wins, the agent is placed on that surface and pushed back by
    /// `push_back` along its normal. If that point were somehow not free (a corner case the
    /// geometry does not produce with the default numbers), the agent stays at `p`, which
    /// keeps the invariant "the state is always free" unconditional.
    pub fn resolve_move(&self, p: Vec2, a: Vec2) -> Move {
        let target = [p[0] + a[0], p[1] + a[1]];
        let mut first: Option<(Contact, f32)> = None; // contact and the surface coordinate
        let mut consider = |c: Contact, surface: f32| {
            if first.is_none_or(|(f, _)| c.t < f.t) {
                first = Some((c, surface));
            }
        };
        for (lo, hi) in self.wall_blocks() {
            if let Some((c, s)) = segment_box_entry(p, a, lo, hi) {
                consider(c, s);
            }
        }
        for axis in 0..2 {
            // Leaving the border square: the exit time along each axis whose target is outside.
            let (surface, normal) = if target[axis] > self.border_hi {
                (self.border_hi, -1.0)
            } else if target[axis] < self.border_lo {
                (self.border_lo, 1.0)
            } else {
                continue;
            };
            let t = ((surface - p[axis]) / a[axis]).clamp(0.0, 1.0);
            consider(Contact { axis, normal, t }, surface);
        }
        let Some((contact, surface)) = first else {
            // A move that grazes a wall surface can round onto it in f32 (e.g. sliding up
            // the door's side at x = 31.5 with a −1e-7 x component); stay put rather than
            // end inside the closed solid.
            let position = if self.is_free(target) { target } else { p };
            return Move {
                position,
                contact: None,
            };
        };
        let mut q = [p[0] + contact.t * a[0], p[1] + contact.t * a[1]];
        // Snap exactly onto the surface (no float drift), then push back off it.
        q[contact.axis] = surface + contact.normal * self.push_back;
        for v in &mut q {
            *v = v.clamp(self.border_lo, self.border_hi);
        }
        let position = if self.is_free(q) { q } else { p };
        Move {
            position,
            contact: Some(contact),
        }
    }
}

/// First time `t ∈ [0, 1]` at which the segment `p + t·a` touches the closed box
/// `[lo, hi]` (Liang–Barsky slab clipping), with the face it enters through and that face's
/// coordinate. `None` if it never touches it, or if `p` is already inside (cannot happen for
/// free states; treating it as no contact lets an agent leave rather than get stuck).
fn segment_box_entry(p: Vec2, a: Vec2, lo: Vec2, hi: Vec2) -> Option<(Contact, f32)> {
    let mut t_enter = f32::NEG_INFINITY;
    let mut t_exit = f32::INFINITY;
    let mut entry: Option<(usize, f32, f32)> = None; // axis, normal, surface
    for axis in 0..2 {
        if a[axis] == 0.0 {
            if p[axis] < lo[axis] || p[axis] > hi[axis] {
                return None;
            }
            continue;
        }
        // Moving in +axis direction enters through the low face (outward normal −1).
        let (near, far, normal) = if a[axis] > 0.0 {
            (lo[axis], hi[axis], -1.0)
        } else {
            (hi[axis], lo[axis], 1.0)
        };
        let t0 = (near - p[axis]) / a[axis];
        let t1 = (far - p[axis]) / a[axis];
        if t0 > t_enter {
            t_enter = t0;
            entry = Some((axis, normal, near));
        }
        t_exit = t_exit.min(t1);
    }
    let (axis, normal, surface) = entry?;
    if t_enter > t_exit || !(0.0..=1.0).contains(&t_enter) {
        return None;
    }
    Some((
        Contact {
            axis,
            normal,
            t: t_enter,
        },
        surface,
    ))
}

/// Whether the segment `a → b` runs through the open box `(lo, hi)` for a positive length.
fn segment_crosses_interior(a: Vec2, b: Vec2, lo: Vec2, hi: Vec2) -> bool {
    let d = [b[0] - a[0], b[1] - a[1]];
    let (mut t0, mut t1) = (0.0f32, 1.0f32);
    for axis in 0..2 {
        if d[axis] == 0.0 {
            if a[axis] <= lo[axis] || a[axis] >= hi[axis] {
                return false;
            }
        } else {
            let u = (lo[axis] - a[axis]) / d[axis];
            let v = (hi[axis] - a[axis]) / d[axis];
            t0 = t0.max(u.min(v));
            t1 = t1.min(u.max(v));
        }
    }
    t1 - t0 > 1e-6
}

/// Euclidean gap between two closed rectangles (0 when they touch or overlap).
fn rect_gap(a: &Rect, b: &Rect) -> f32 {
    let dx = (a.x0 - b.x1).max(b.x0 - a.x1).max(0.0);
    let dy = (a.y0 - b.y1).max(b.y0 - a.y1).max(0.0);
    (dx * dx + dy * dy).sqrt()
}

/// Scales `a` down to norm `max` if it is longer (direction preserved).
pub fn clip_action(a: Vec2, max: f32) -> Vec2 {
    let norm = (a[0] * a[0] + a[1] * a[1]).sqrt();
    if norm > max {
        let s = max / norm;
        [a[0] * s, a[1] * s]
    } else {
        a
    }
}

/// Renders the 2×H×W observation of an agent at `p` into `out`: channel 0 the Gaussian dot
/// `exp(−|pixel − p|² / 2σ²)` (peak 1), channel 1 the mask of non-free pixel centres.
pub fn render_observation(cfg: &TwoRoomsConfig, p: Vec2, out: &mut [f32]) -> Result<(), EnvError> {
    let n = cfg.size;
    let expected = 2 * n * n;
    if out.len() != expected {
        return Err(EnvError::RenderBuffer {
            expected,
            got: out.len(),
        });
    }
    let g = cfg.geometry();
    let inv = 1.0 / (2.0 * cfg.dot_sigma * cfg.dot_sigma);
    let (dot, mask) = out.split_at_mut(n * n);
    for r in 0..n {
        let dy = r as f32 - p[1];
        for c in 0..n {
            let dx = c as f32 - p[0];
            dot[r * n + c] = (-(dx * dx + dy * dy) * inv).exp();
            mask[r * n + c] = if g.is_free([c as f32, r as f32]) {
                0.0
            } else {
                1.0
            };
        }
    }
    Ok(())
}

/// The Two-Rooms environment. State = agent position `[x, y]`.
#[derive(Debug, Clone)]
pub struct TwoRooms {
    cfg: TwoRoomsConfig,
    geom: Geometry,
    pos: Vec2,
    goal: Vec2,
    steps: usize,
    done: bool,
    started: bool,
}

impl TwoRooms {
    pub fn new(cfg: TwoRoomsConfig) -> Result<Self, EnvError> {
        cfg.validate()?;
        let geom = cfg.geometry();
        Ok(TwoRooms {
            cfg,
            geom,
            pos: [0.0; 2],
            goal: [0.0; 2],
            steps: 0,
            done: false,
            started: false,
        })
    }

    pub fn config(&self) -> &TwoRoomsConfig {
        &self.cfg
    }

    pub fn geometry(&self) -> Geometry {
        self.geom
    }

    pub fn position(&self) -> Vec2 {
        self.pos
    }

    pub fn goal(&self) -> Vec2 {
        self.goal
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Guardrail predicate: `p` lies in one of the hazard squares.
    pub fn in_hazard(&self, p: Vec2) -> bool {
        self.cfg.hazards.iter().any(|h| h.contains(p))
    }

    pub fn is_success(&self, p: Vec2) -> bool {
        let d = [p[0] - self.goal[0], p[1] - self.goal[1]];
        (d[0] * d[0] + d[1] * d[1]).sqrt() < self.cfg.success_radius
    }

    /// A uniformly random free position in `room` (`Left` or `Right`; `Door` is refused
    /// and treated as `Left`), by rejection from the border square.
    pub fn sample_in_room<R: Rng + ?Sized>(&self, room: Room, rng: &mut R) -> Vec2 {
        let want = if room == Room::Right {
            Room::Right
        } else {
            Room::Left
        };
        let span = self.geom.border_hi - self.geom.border_lo;
        loop {
            let p = [
                self.geom.border_lo + rng.random::<f32>() * span,
                self.geom.border_lo + rng.random::<f32>() * span,
            ];
            if self.geom.is_free(p) && self.geom.room(p) == want {
                return p;
            }
        }
    }

    /// PLDM's evaluation setup: start in a random room, goal in the other one.
    pub fn sample_start_goal<R: Rng + ?Sized>(&self, rng: &mut R) -> (Vec2, Vec2) {
        let (a, b) = if rng.random::<bool>() {
            (Room::Left, Room::Right)
        } else {
            (Room::Right, Room::Left)
        };
        (self.sample_in_room(a, rng), self.sample_in_room(b, rng))
    }
}

impl Environment for TwoRooms {
    type State = Vec2;

    fn reset(&mut self, start: Vec2, goal: Vec2) -> Result<Vec2, EnvError> {
        for (what, p) in [("start", start), ("goal", goal)] {
            if !self.geom.is_free(p) {
                return Err(EnvError::InvalidPosition {
                    what,
                    x: p[0],
                    y: p[1],
                });
            }
        }
        self.pos = start;
        self.goal = goal;
        self.steps = 0;
        self.done = false;
        self.started = true;
        Ok(start)
    }

    fn step(&mut self, action: &[f32]) -> Result<StepResult<Vec2>, EnvError> {
        if !self.started {
            return Err(EnvError::NotReset);
        }
        if self.done {
            return Err(EnvError::EpisodeOver { steps: self.steps });
        }
        let &[ax, ay] = action else {
            return Err(EnvError::ActionDim {
                expected: 2,
                got: action.len(),
            });
        };
        if !(ax.is_finite() && ay.is_finite()) {
            return Err(EnvError::NonFiniteAction(action.to_vec()));
        }
        let a = clip_action([ax, ay], self.cfg.max_action_norm);
        self.pos = self.geom.resolve_move(self.pos, a).position;
        self.steps += 1;
        let success = self.is_success(self.pos);
        self.done = success || self.steps >= self.cfg.max_steps;
        Ok(StepResult {
            state: self.pos,
            violation: self.in_hazard(self.pos),
            success,
            done: self.done,
        })
    }

    fn observe_state(&self) -> Vec<f32> {
        self.pos.to_vec()
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (2, self.cfg.size, self.cfg.size)
    }

    fn render_into(&self, out: &mut [f32]) -> Result<(), EnvError> {
        render_observation(&self.cfg, self.pos, out)
    }

    fn action_dim(&self) -> usize {
        2
    }

    fn max_action_norm(&self) -> f32 {
        self.cfg.max_action_norm
    }
}
