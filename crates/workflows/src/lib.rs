//! The LCM workflows: the one library API that the `lcm` binary (and later the Python
//! bindings and the HTTP server) call. Entry points parse flags or requests, call these
//! functions and print; every decision about stores, checkpoints, normalisers and models
//! is made here.
//!
//! - [`store`]: the concept-store layout (normaliser and sentence-bank paths, the bank
//!   built on first use).
//! - [`train`]: the LCM trainer on `lcm_train::run`.
//! - [`load`]: a trained LCM with its normaliser, checked against the store's encoder.
//! - [`evaluate`]: teacher-forced evaluation on the held-out split against the baselines.
//! - [`generate`]: continuing a prompt concept by concept, with the stop rules.
//! - [`planning`]: concept-space planning with the LCM as world model (the LCM- and
//!   bank-backed proposers, the method comparison, case files and reports).

pub mod evaluate;
pub mod generate;
pub mod load;
pub mod planning;
pub mod store;
pub mod train;
