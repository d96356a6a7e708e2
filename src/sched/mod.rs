//! Host-side scheduling of split inference (DESIGN §6): per request, pick where to cut the model
//! (device-only, server-only, or after one of the model's natural bottlenecks) and how to encode the
//! split tensor, from per-block time profiles and live estimates of data rate, RTT and server load.
//!
//! - [`profile`]: per-block time profiles (measured with one-block plans, scaled, updated online).
//! - [`cost`]: the cost model `T(k) = D(0..k) + (1 - P_exit(k)) (bytes(k, enc) / R + RTT + Q + S(k..n))`
//!   precomputed per option into a [`cost::CostTable`].
//! - [`estimate`]: data-rate, RTT and server-load estimators from observed transfers and reports.
//! - [`policy`]: the [`policy::Policy`] trait and `DeviceOnly`, `ServerOnly`, `Static`, `Dynamic`, `Oracle`.
//!
//! Live use (the split runtime): build a [`cost::CostTable`] once from the model and the two profiles,
//! make a [`policy::Dynamic`], feed transfers and server reports to an [`estimate::Estimator`], and ask
//! [`policy::Dynamic::choose`] with [`estimate::Estimator::estimates`] before each request.
//!
//! ```no_run
//! use edgecut::model::Model;
//! use edgecut::sched::{cost::{CostTable, ExitProbabilities}, estimate::Estimator, policy::Dynamic, profile::Profile};
//! let model = Model::load("models/efficientnet-b0")?;
//! let device = Profile::load("models/efficientnet-b0/profiles/device-slowdown4.json", &model)?;
//! let server = Profile::load("models/efficientnet-b0/profiles/lavapipe.json", &model)?;
//! let table = CostTable::new(&model, &device, &server, &ExitProbabilities::none(&model))?;
//! let dynamic = Dynamic::new(&table);
//! let mut estimator = Estimator::default();
//! estimator.observe_transfer(120_000, 0.012); // bytes, seconds: after each upload
//! estimator.observe_rtt(0.020);               // seconds, from response timing
//! estimator.observe_queue_us(1500);           // the server's reported queue time
//! let decision = dynamic.choose(&estimator.estimates());
//! println!("cut {} as {}", decision.option.cut, decision.option.encoding);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cost;
pub mod estimate;
pub mod policy;
pub mod profile;

use std::fmt;
use thiserror::Error;

/// Errors of the scheduler: profiles, options and policies.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SchedError {
    /// A profile file could not be read or written.
    #[error("cannot access profile {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A profile file is not valid JSON of the profile schema.
    #[error("profile {path} is not a valid profile: {reason}")]
    Format {
        /// The file.
        path: String,
        /// Parser message.
        reason: String,
    },
    /// A profile measured on another model (block count, names or hash differ).
    #[error("profile {what} does not match model '{model}': {reason}; measure one with `edgecut profile`")]
    ProfileMismatch {
        /// Which profile.
        what: String,
        /// The model name.
        model: String,
        /// What differs.
        reason: String,
    },
    /// A cut that is not one of the model's candidates.
    #[error("cut '{cut}' is not a candidate of model '{model}'; candidates: {candidates}")]
    NotACandidate {
        /// The cut asked for.
        cut: String,
        /// The model name.
        model: String,
        /// The valid cuts.
        candidates: String,
    },
    /// A policy name that is not known.
    #[error("unknown policy '{0}'; known: device, server, static:<block name or index>, dynamic, dynamic-fp32, dynamic-fp16, dynamic-int8, oracle")]
    UnknownPolicy(String),
    /// A value outside its valid range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The quantity.
        what: String,
        /// Why.
        reason: String,
    },
    /// Running a plan while profiling failed.
    #[error("profiling block {block}: {source}")]
    Engine {
        /// The block.
        block: String,
        /// The engine error.
        source: crate::engine::EngineError,
    },
}

/// Where the model is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cut {
    /// The whole model runs on the server; the input is sent.
    Server,
    /// Blocks `0..=k` run on the device, the rest on the server.
    After(usize),
    /// The whole model runs on the device; nothing is sent.
    Device,
}

impl Cut {
    /// Blocks run on the device (`0..device_blocks(n)`).
    pub fn device_blocks(self, n: usize) -> usize {
        match self {
            Cut::Server => 0,
            Cut::After(k) => k + 1,
            Cut::Device => n,
        }
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cut::Server => write!(f, "server"),
            Cut::After(k) => write!(f, "after:{k}"),
            Cut::Device => write!(f, "device"),
        }
    }
}

/// How the tensor sent to the server is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// 4 bytes per element.
    Fp32,
    /// 2 bytes per element.
    Fp16,
    /// 1 byte per element (+ scale and zero point).
    Int8,
    /// The input image as 8-bit pixels (server-only with an image input), 1 byte per element.
    Uint8Image,
    /// Nothing is sent (device-only).
    None,
}

impl Encoding {
    /// Split-tensor encodings a policy can choose from.
    pub const SPLIT: [Encoding; 3] = [Encoding::Fp32, Encoding::Fp16, Encoding::Int8];

    /// Bytes on the wire for `elems` elements (int8 adds 8 bytes of scale and zero point).
    pub fn bytes(self, elems: usize) -> u64 {
        let e = elems as u64;
        match self {
            Encoding::Fp32 => 4 * e,
            Encoding::Fp16 => 2 * e,
            Encoding::Int8 => e + 8,
            Encoding::Uint8Image => e,
            Encoding::None => 0,
        }
    }

    /// Parses `fp32`, `fp16` or `int8`.
    pub fn parse(s: &str) -> Result<Self, SchedError> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Encoding::Fp32),
            "fp16" | "f16" => Ok(Encoding::Fp16),
            "int8" | "i8" => Ok(Encoding::Int8),
            _ => Err(SchedError::Invalid {
                what: "encoding".into(),
                reason: format!("'{s}' is not fp32, fp16 or int8"),
            }),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Fp32 => "fp32",
            Encoding::Fp16 => "fp16",
            Encoding::Int8 => "int8",
            Encoding::Uint8Image => "uint8",
            Encoding::None => "none",
        })
    }
}

/// One schedulable option: a cut and the encoding of what is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Choice {
    /// Where to cut.
    pub cut: Cut,
    /// How to encode the tensor sent (`None` for device-only).
    pub encoding: Encoding,
}

/// Live estimates of the network and the server, as a policy sees them (seconds and bytes/s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimates {
    /// Uplink data rate, bytes per second (> 0).
    pub rate_bytes_per_s: f64,
    /// Round-trip time, seconds.
    pub rtt_s: f64,
    /// Server queueing delay, seconds.
    pub queue_s: f64,
}

impl Estimates {
    /// Estimates from a rate in MB/s (10^6 bytes) and RTT and queue in milliseconds.
    pub fn from_mb_ms(rate_mb_per_s: f64, rtt_ms: f64, queue_ms: f64) -> Self {
        Self {
            rate_bytes_per_s: rate_mb_per_s * 1e6,
            rtt_s: rtt_ms * 1e-3,
            queue_s: queue_ms * 1e-3,
        }
    }
}
