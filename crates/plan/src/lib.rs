//! Objective-driven planning (issue 5): a world model predicts the consequences of candidate
//! actions, a cost scores them against an objective plus guardrails, a planner picks the plan
//! that reaches the objective without breaking a hard guardrail, and the predicted cost is the
//! agent's anticipation.
//!
//! - [`env`](mod@env): the [`env::Environment`] trait, PLDM's Two-Rooms and DINO-WM's PointMaze
//!   U-maze, each with hazard variants and its seeded reward-free dataset
//!   (`env::two_rooms::dataset`, `env::point_maze::dataset`).
//! - [`world`]: the [`world::WorldModel`] interface and the oracle simulators; the JEPA world
//!   model, its trainer and loader, and its use by planners (`world::{jepa, train, load,
//!   learned}`).
//! - [`cost`]: objectives and hard/soft guardrails, with the one guardrail accumulation and
//!   boundary convention every cost shares.
//! - [`planners`]: CEM, MPPI, feasible-first constrained CEM, augmented Lagrangian, gradient
//!   descent, random; frameskip; the MPC loop.
//! - [`evaluation`]: the agent × planner matrix of `lcm wm eval`: seeded episodes, success
//!   intervals, violations, calibration, plots.
//! - [`concept`]: the same ideas in concept space, with an LCM as the world model behind a
//!   proposer trait (this crate never depends on the LCM stack).
//!
//! Environments, datasets and the sampling planners are plain Rust on `f32` buffers; only the
//! JEPA and the gradient planner use the tensor library.

pub mod concept;
pub mod cost;
pub mod env;
pub mod evaluation;
pub mod planners;
pub mod world;

pub use env::{EnvError, Environment, StepResult};
