//! Objective-driven planning (issue 5).
//!
//! This first piece holds the environments a planner is evaluated in and the offline,
//! reward-free datasets a world model is trained on:
//! - [`env`](mod@env): the [`env::Environment`] trait and PLDM's Two-Rooms ([`env::two_rooms`]), with
//!   an optional guardrail variant (hazard squares that raise a violation flag).
//! - [`data`]: PLDM's random-walk dataset recipe (truncated-normal step lengths, von Mises
//!   heading walk), seeded and reproducible.
//!
//! Everything here is plain Rust on `f32` buffers; no tensor library is needed to simulate
//! or render, so datasets can be generated anywhere and fed to any model later.

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
