//! Host-side scheduling of split inference (DESIGN §6): per request, pick where to cut the model
//! (device-only, server-only, or after one of the model's natural bottlenecks) and how to encode the
//! split tensor, from per-block time profiles and live estimates of data rate, RTT and server load.
//!
//! - [`profile`]: per-block time profiles (measured with one-block plans, scaled, updated online).
//! - [`cost`]: the cost model `T(k) = D(0..k) + (1 - P_exit(k)) (bytes(k, enc) / R + RTT + Q + S(k..n))`
//!   precomputed per option into a [`cost::CostTable`]; under load, the completion time given the
//!   device, uplink and server queues the request joins ([`cost::OptionCost::expected`]).
//! - [`estimate`]: data-rate, RTT and server-load estimators from observed transfers and reports.
//! - [`hedge`]: the outage rule: a remote request later than a local run would be, whose transfer
//!   has stalled, runs on the device (shared by the simulator and the live runner).
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
//! println!("{}", decision.option.label(&table.block_names));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cost;
pub mod estimate;
pub mod hedge;
pub mod policy;
pub mod profile;

use std::fmt;
use thiserror::Error;

/// Every policy form, for error messages.
pub const POLICY_FORMS: &str = "device, server, static:<block name or index>[:fp32|fp16|int8] (cut after that block), dynamic, dynamic-<fp32|fp16|int8>, oracle, oracle-<fp32|fp16|int8>";

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
    #[error("unknown policy '{0}'; known: {POLICY_FORMS}")]
    UnknownPolicy(String),
    /// A spelling whose meaning changed (or that was never the policy's form): the new form.
    #[error("policy '{given}' is no longer accepted: {hint}")]
    OldSpelling {
        /// The name given.
        given: String,
        /// What to write instead, and why.
        hint: String,
    },
    /// A policy that needs the future (the oracle) asked for where there is none: a live run.
    #[error("policy '{0}' knows the future data rate and server load, so it runs only in `edgecut simulate`; live, use `dynamic` (or `dynamic-<fp32|fp16|int8>`)")]
    NeedsFuture(String),
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

pub use crate::encoding::Encoding;

/// One split: where the model is cut and how what crosses the cut is encoded. The one
/// description of a split used by the policies, the device client, the request parameters, the
/// runner, the simulator and every report (labelled by [`Choice::label`]).
///
/// The two ends reuse [`Encoding`] rather than adding variants of their own:
/// - device-only sends nothing; its encoding is [`Encoding::Fp32`] by convention
///   ([`Choice::DEVICE`]) and never used;
/// - server-only sends the model input: [`Encoding::Int8`] when the input is an 8-bit image
///   (counted at 1 byte per pixel, what the pixels are before any normalisation), otherwise
///   [`Encoding::Fp32`] ([`cost::CostTable::server_choice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Choice {
    /// Where to cut.
    pub cut: Cut,
    /// How the tensor sent is encoded.
    pub encoding: Encoding,
}

impl Choice {
    /// Device-only: nothing is sent.
    pub const DEVICE: Choice = Choice {
        cut: Cut::Device,
        encoding: Encoding::Fp32,
    };

    /// Cut after block `k`, the split tensor sent as `encoding`.
    pub fn after(k: usize, encoding: Encoding) -> Self {
        Self {
            cut: Cut::After(k),
            encoding,
        }
    }

    /// The one label of a choice in every report: `device`, `server`, or `<block>:<encoding>`
    /// (the block the cut follows, e.g. `blocks_5:fp16`).
    pub fn label(&self, block_names: &[String]) -> String {
        match self.cut {
            Cut::Server => "server".into(),
            Cut::Device => "device".into(),
            Cut::After(k) => {
                let block = block_names.get(k).cloned().unwrap_or_else(|| k.to_string());
                format!("{block}:{}", self.encoding)
            }
        }
    }
}

/// Live estimates of the network and the server, and the device's own backlog, as a policy sees
/// them (seconds and bytes/s).
///
/// The three waits describe the queues a request would join, measured from the decision: the
/// device's head computations ahead of it (known exactly: the device keeps its own queue), the
/// bytes already queued on the uplink at the estimated rate, and the server work of the device's
/// own requests still unanswered. They are zero for a request that finds everything idle (the
/// cost model of DESIGN §6 then applies unchanged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimates {
    /// Uplink data rate, bytes per second (> 0).
    pub rate_bytes_per_s: f64,
    /// Round-trip time, seconds.
    pub rtt_s: f64,
    /// Server queueing delay caused by others (the background load), seconds.
    pub queue_s: f64,
    /// Seconds until the device has finished the head computations queued ahead of this request.
    pub device_wait_s: f64,
    /// Seconds until the uplink has sent the bytes queued ahead of this request.
    pub uplink_wait_s: f64,
    /// Seconds until the server has finished the device's own earlier requests (per worker).
    pub server_wait_s: f64,
}

impl Estimates {
    /// Estimates from a rate in MB/s (10^6 bytes) and RTT and queue in milliseconds; no backlog.
    pub fn from_mb_ms(rate_mb_per_s: f64, rtt_ms: f64, queue_ms: f64) -> Self {
        Self {
            rate_bytes_per_s: rate_mb_per_s * 1e6,
            rtt_s: rtt_ms * 1e-3,
            queue_s: queue_ms * 1e-3,
            device_wait_s: 0.0,
            uplink_wait_s: 0.0,
            server_wait_s: 0.0,
        }
    }

    /// The same estimates with the backlog of the device, the uplink and the server (seconds).
    pub fn with_backlog(self, device_wait_s: f64, uplink_wait_s: f64, server_wait_s: f64) -> Self {
        Self {
            device_wait_s: device_wait_s.max(0.0),
            uplink_wait_s: uplink_wait_s.max(0.0),
            server_wait_s: server_wait_s.max(0.0),
            ..self
        }
    }
}
