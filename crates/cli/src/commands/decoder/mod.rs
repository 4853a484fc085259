//! `lcm train-decoder` ([`mod@train`]) and `lcm eval-decoder` ([`mod@eval`]): flags → `lcm_decoder`
//! → printing. Decoders of SONAR's architecture trained for an open encoder's concept
//! space, and their round-trip evaluation next to the retrieval decoder.

mod eval;
mod train;

pub use eval::{EvalArgs, eval};
pub use train::{TrainArgs, train};
