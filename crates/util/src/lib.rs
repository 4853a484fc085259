//! Small utilities that every layer of the workspace shares, each written once: vector
//! math on `f32` slices, seeded standard-normal draws, atomic file writes, statistics
//! (Wilson interval, Spearman correlation) and a stable content hash.
//!
//! It also holds the heap setting of long loops ([`memory`]).
//!
//! This crate sits at the bottom of the dependency graph: it depends on `rand` and `libc`
//! only, so
//! any crate may use it and it may use none of them.

pub mod fs;
pub mod hash;
pub mod memory;
pub mod random;
pub mod stats;
pub mod vector;
