//! CPU execution. [`reference`](mod@reference) holds the plain-Rust loops of every op: the oracle every GPU
//! kernel and every fast CPU kernel is tested against.

pub mod reference;

pub use reference::{exit_stats, ExitStat};
