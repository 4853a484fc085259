//! Objective-driven planning (issue 5): a world model predicts the consequences of candidate
//! actions, a cost scores them against an objective plus guardrails, a planner picks the plan
//! that reaches the objective without breaking a hard guardrail, and the predicted cost is the
//! agent's anticipation.
//!
//! - [`env`](mod@env): the [`env::Environment`] trait, PLDM's Two-Rooms and DINO-WM's PointMaze
//!   U-maze, each with hazard variants; [`data`] and [`data_point_maze`]: seeded reward-free
//!   datasets.
//! - [`world`]: the [`world::WorldModel`] interface and the oracle simulators; [`jepa`],
//!   [`wm_train`], [`learned`]: the JEPA world model, its trainer, and its use by planners.
//! - [`cost`]: objectives and hard/soft guardrails; [`planner`] and [`gradient`]: CEM, MPPI,
//!   feasible-first constrained CEM, augmented Lagrangian, gradient descent, random; frameskip;
//!   the MPC loop.
//! - [`wm_eval`]: seeded episodes, success intervals, violations, calibration, plots.
//! - [`concept`]: the same ideas in concept space, with an LCM as the world model.
//!
//! Environments, datasets and the sampling planners are plain Rust on `f32` buffers; only the
//! JEPA and the gradient planner use the tensor library.

pub mod concept;
pub mod cost;
pub mod data;
pub mod data_point_maze;
pub mod env;
pub mod gradient;
pub mod jepa;
pub mod learned;
pub mod planner;
pub mod wm_eval;
pub mod wm_train;
pub mod world;

pub use env::{EnvError, Environment, StepResult};
