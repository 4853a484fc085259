//! The length of the shortest free path to a goal in a maze, as a planning cost.
//!
//! The straight-line distance to a goal in the other arm of the U has a local minimum
//! against the wall between the arms (the same trap as Two-Rooms' wall, see
//! [`Geometry::path_length`](crate::env::two_rooms::Geometry::path_length)). For a map of
//! cells there is no closed form as simple as Two-Rooms' door, so [`MazeDistanceField`]
//! computes it numerically: Dijkstra from the goal over a grid of `step`-spaced nodes,
//! 8-connected, where a node is free when the ball fits there. Diagonal moves need both
//! orthogonal neighbours free, so no path cuts a wall's corner.
//!
//! Nodes where the ball does not fit (inside or against a wall) get finite values too, at
//! [`WALL_FACTOR`] times the length travelled through them: a position a learned model
//! predicts inside a wall is then ranked by how far it is from free space and from the
//! goal, and crossing a wall never pays off. Between nodes the field is interpolated
//! bilinearly; outside the map it grows with the distance to the map's extent.
//!
//! The grid distance is within ~8% of the true shortest path (8-connectivity); it has no
//! local minimum in free space: every free node has a neighbour with a smaller value, down
//! to the goal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::MazeGeometry;
use crate::env::two_rooms::Vec2;

/// Cost per unit length through nodes where the ball does not fit.
pub const WALL_FACTOR: f32 = 50.0;

/// Shortest-free-path distances to one goal on a grid over the maze.
#[derive(Debug, Clone, PartialEq)]
pub struct MazeDistanceField {
    x0: f32,
    y0: f32,
    step: f32,
    nx: usize,
    ny: usize,
    values: Vec<f32>,
    goal: Vec2,
}

impl MazeDistanceField {
    /// The field of `goal` over `geometry`'s extent with nodes `step` apart (0.05 resolves
    /// the U-maze's 1-wide corridors with 20 nodes). A non-positive or non-finite `step`
    /// falls back to 0.05.
    pub fn new(geometry: &MazeGeometry, goal: Vec2, step: f32) -> Self {
        let step = if step.is_finite() && step > 0.0 {
            step
        } else {
            0.05
        };
        let ext = geometry.extent();
        let nx = (((ext.x1 - ext.x0) / step).ceil() as usize).max(1) + 1;
        let ny = (((ext.y1 - ext.y0) / step).ceil() as usize).max(1) + 1;
        let node = |i: usize, j: usize| [ext.x0 + i as f32 * step, ext.y0 + j as f32 * step];
        let free: Vec<bool> = (0..nx * ny)
            .map(|k| geometry.is_free(node(k / ny, k % ny)))
            .collect();
        let mut values = vec![f32::INFINITY; nx * ny];
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, k: usize, v: f32| {
            // Non-negative floats order like their bit patterns.
            heap.push(Reverse((v.to_bits(), k)));
        };
        // Seeds: the free nodes of the goal's neighbourhood, at their straight distance.
        let d = |a: Vec2, b: Vec2| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        for (k, value) in values.iter_mut().enumerate() {
            let p = node(k / ny, k % ny);
            if d(p, goal) <= 1.5 * step && (free[k] || !geometry.is_free(goal)) {
                *value = d(p, goal);
                push(&mut heap, k, *value);
            }
        }
        if heap.is_empty() {
            // A goal off the grid: seed the nearest node.
            let i = (((goal[0] - ext.x0) / step).round().max(0.0) as usize).min(nx - 1);
            let j = (((goal[1] - ext.y0) / step).round().max(0.0) as usize).min(ny - 1);
            let k = i * ny + j;
            values[k] = d(node(i, j), goal);
            push(&mut heap, k, values[k]);
        }
        const MOVES: [(i64, i64); 8] = [
            (1, 0),
            (-1, 0),
            (0, 1),
            (0, -1),
            (1, 1),
            (1, -1),
            (-1, 1),
            (-1, -1),
        ];
        while let Some(Reverse((bits, k))) = heap.pop() {
            let v = f32::from_bits(bits);
            if v > values[k] {
                continue;
            }
            let (i, j) = ((k / ny) as i64, (k % ny) as i64);
            for (di, dj) in MOVES {
                let (a, b) = (i + di, j + dj);
                if a < 0 || b < 0 || a >= nx as i64 || b >= ny as i64 {
                    continue;
                }
                let n = a as usize * ny + b as usize;
                let diagonal = di != 0 && dj != 0;
                let both_free = free[k] && free[n];
                // A free-to-free diagonal must not cut a blocked corner.
                let cuts = diagonal
                    && both_free
                    && !(free[(i + di) as usize * ny + j as usize]
                        && free[i as usize * ny + (j + dj) as usize]);
                let len = if diagonal {
                    std::f32::consts::SQRT_2 * step
                } else {
                    step
                };
                let w = if both_free && !cuts { 1.0 } else { WALL_FACTOR };
                let nv = v + w * len;
                if nv < values[n] {
                    values[n] = nv;
                    push(&mut heap, n, nv);
                }
            }
        }
        MazeDistanceField {
            x0: ext.x0,
            y0: ext.y0,
            step,
            nx,
            ny,
            values,
            goal,
        }
    }

    pub fn goal(&self) -> Vec2 {
        self.goal
    }

    /// The shortest-free-path distance from `p` to the goal (bilinear between nodes; plus
    /// the distance to the map for positions outside it; `+∞` for a non-finite `p`).
    pub fn value(&self, p: Vec2) -> f32 {
        if !(p[0].is_finite() && p[1].is_finite()) {
            return f32::INFINITY;
        }
        let fx = (p[0] - self.x0) / self.step;
        let fy = (p[1] - self.y0) / self.step;
        let max_x = (self.nx - 1) as f32;
        let max_y = (self.ny - 1) as f32;
        let (cx, cy) = (fx.clamp(0.0, max_x), fy.clamp(0.0, max_y));
        let outside = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt() * self.step * WALL_FACTOR;
        let i = (cx.floor() as usize).min(self.nx.saturating_sub(2));
        let j = (cy.floor() as usize).min(self.ny.saturating_sub(2));
        let (tx, ty) = (cx - i as f32, cy - j as f32);
        let at =
            |a: usize, b: usize| self.values[a.min(self.nx - 1) * self.ny + b.min(self.ny - 1)];
        let v = (1.0 - tx) * (1.0 - ty) * at(i, j)
            + tx * (1.0 - ty) * at(i + 1, j)
            + (1.0 - tx) * ty * at(i, j + 1)
            + tx * ty * at(i + 1, j + 1);
        v + outside
    }
}
