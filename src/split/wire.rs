//! Former home of the split-tensor codec. Encoding now happens inside the plans (the head's
//! last dispatch, the tail's first: see [`crate::engine::PlanIo`]) with [`crate::encoding`] as
//! the one vocabulary; this module only re-exports it for callers not yet moved.

pub use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding, EncodingError, Int8Params};
