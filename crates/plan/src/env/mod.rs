//! Environments a planner acts in.
//!
//! The trait is deliberately small: a planner needs to reset to a (start, goal) pair, apply an
//! action, read the low-dimensional state, and render the pixel observation a world model
//! sees. Rewards are not part of it: objective-driven planning computes its own cost from
//! the goal, and the environment only reports facts (success, guardrail violation, done).

pub mod point_maze;
pub mod two_rooms;

pub use point_maze::{PointMaze, PointMazeConfig};
pub use two_rooms::{TwoRooms, TwoRoomsConfig};

/// Errors from driving an environment. They come from caller input (a wrong action length,
/// a start inside the wall, ...), so they are reported, never panicked on.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EnvError {
    #[error("action has {got} components, the environment expects {expected}")]
    ActionDim { expected: usize, got: usize },
    #[error("action contains a non-finite value: {0:?}")]
    NonFiniteAction(Vec<f32>),
    #[error("{what} position ({x}, {y}) is not a free position of the environment")]
    InvalidPosition { what: &'static str, x: f32, y: f32 },
    #[error("the episode is over (after {steps} steps); call reset first")]
    EpisodeOver { steps: usize },
    #[error("step called before reset")]
    NotReset,
    #[error("render buffer has {got} values, expected {expected} (C×H×W)")]
    RenderBuffer { expected: usize, got: usize },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult<S> {
    /// The state after the step (collisions already resolved).
    pub state: S,
    /// The new state lies in a guardrail hazard region (the move itself is still allowed:
    /// hazards are soft constraints a planner must learn to avoid, not walls).
    pub violation: bool,
    /// The goal is reached after this step.
    pub success: bool,
    /// The episode ended (success or step budget exhausted); further steps are refused.
    pub done: bool,
}

/// A goal-conditioned environment with a continuous action and a pixel observation.
pub trait Environment {
    /// The low-dimensional state (for Two-Rooms, the agent's position).
    type State;

    /// Starts a new episode at `start` with target `goal`; returns the initial state.
    fn reset(&mut self, start: Self::State, goal: Self::State) -> Result<Self::State, EnvError>;

    /// Applies one action (clipped to [`Environment::max_action_norm`]).
    fn step(&mut self, action: &[f32]) -> Result<StepResult<Self::State>, EnvError>;

    /// The current state as a flat vector (what a state-based world model consumes).
    fn observe_state(&self) -> Vec<f32>;

    /// Observation image shape as (channels, height, width).
    fn image_shape(&self) -> (usize, usize, usize);

    /// Renders the current observation into `out` (row-major C×H×W).
    fn render_into(&self, out: &mut [f32]) -> Result<(), EnvError>;

    /// Renders the current observation into a new buffer (row-major C×H×W).
    fn render(&self) -> Vec<f32> {
        let (c, h, w) = self.image_shape();
        let mut out = vec![0.0; c * h * w];
        // The buffer has exactly the size render_into expects, so this cannot fail.
        let _ = self.render_into(&mut out);
        out
    }

    /// Number of action components.
    fn action_dim(&self) -> usize;

    /// Actions with a larger Euclidean norm are scaled down to this norm.
    fn max_action_norm(&self) -> f32;
}
