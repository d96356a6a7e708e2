//! The one block profiler: per-block time profiles of a model on a backend, and the timing of
//! plans that `edgecut profile`, `edgecut bench` and `edgecut report-sparsity` all use.
//!
//! One clock: GPU timestamps around a plan's compute pass ([`PlanOutput::device_seconds`]) where the
//! adapter has them, wall time around `Plan::run` otherwise; every result says which ([`Clock`]).
//! Each block is timed in its own submission (a one-block [`Plan`]), as the median of repeated runs
//! after warm-up, for one or more batch sizes. Profiles are saved as JSON with the model hash and
//! block names and refused for another model. A block's exit heads run in its plan, so their time
//! is part of the block's.
//!
//! Profiles of hardware that is not at hand come from published figures ([`published`]); every
//! profile names where its times come from ([`Profile::source`]).
//!
//! [`PlanOutput::device_seconds`]: crate::engine::PlanOutput::device_seconds

pub mod published;

use super::SchedError;
use crate::engine::{Backend, EngineError, Plan};
use crate::model::Model;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The clock a time was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// GPU timestamps around the plan's compute pass: the dispatches alone, no upload or readback.
    GpuTimestamps,
    /// Wall time around `Plan::run` (upload, dispatches, readback): the CPU backend and adapters
    /// without `TIMESTAMP_QUERY`.
    Wall,
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clock::GpuTimestamps => "GPU timestamps",
            Clock::Wall => "wall",
        })
    }
}

impl Clock {
    /// The clock every timing in `timings` has: GPU timestamps only when all of them do, so that
    /// times compared with each other come from one clock.
    pub fn common<'a>(timings: impl IntoIterator<Item = &'a Timing>) -> Clock {
        let mut timings = timings.into_iter().peekable();
        if timings.peek().is_some() && timings.all(|t| t.device_seconds.is_some()) {
            Clock::GpuTimestamps
        } else {
            Clock::Wall
        }
    }
}

/// Median time of a plan's timed runs, by both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    /// Median wall seconds of `Plan::run`.
    pub wall_seconds: f64,
    /// Median GPU-timestamp seconds, when every run had them.
    pub device_seconds: Option<f64>,
}

impl Timing {
    /// The clock this timing prefers: GPU timestamps when it has them.
    pub fn clock(&self) -> Clock {
        Clock::common([self])
    }

    /// Seconds by this timing's own clock ([`Timing::clock`]).
    pub fn seconds(&self) -> f64 {
        self.seconds_by(self.clock())
    }

    /// Seconds by `clock` (wall time when asked for timestamps it does not have).
    pub fn seconds_by(&self, clock: Clock) -> f64 {
        match (clock, self.device_seconds) {
            (Clock::GpuTimestamps, Some(d)) => d,
            _ => self.wall_seconds,
        }
    }
}

/// Times `plans` on one input: `warmup` untimed runs of each, then `runs` timed rounds (at least
/// one) with the plans interleaved (plan 0, plan 1, plan 0, ...), so that drift on a shared machine
/// hits every plan alike. One [`Timing`] per plan.
pub fn time_plans(
    plans: &[&Plan],
    input: &Tensor,
    warmup: usize,
    runs: usize,
) -> Result<Vec<Timing>, EngineError> {
    for p in plans {
        for _ in 0..warmup {
            p.run(input)?;
        }
    }
    let runs = runs.max(1);
    let mut wall = vec![Vec::with_capacity(runs); plans.len()];
    let mut device = vec![Vec::with_capacity(runs); plans.len()];
    for _ in 0..runs {
        for (i, p) in plans.iter().enumerate() {
            let start = Instant::now();
            let out = p.run(input)?;
            wall[i].push(start.elapsed().as_secs_f64());
            device[i].extend(out.device_seconds);
        }
    }
    Ok(wall
        .iter()
        .zip(&device)
        .map(|(w, d)| Timing {
            wall_seconds: crate::stats::median(w),
            device_seconds: (d.len() == w.len()).then(|| crate::stats::median(d)),
        })
        .collect())
}

/// A seeded random input of `batch` samples of `sample` shape, values in `-1..1`.
pub fn random_input(rng: &mut impl Rng, batch: usize, sample: &[usize]) -> Tensor {
    let elems: usize = sample.iter().product();
    let data: Vec<f32> = (0..batch * elems)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut shape = vec![batch];
    shape.extend_from_slice(sample);
    Tensor::new(shape, data).expect("data sized to the shape")
}

/// Times every block of `model` on `backend`, each as its own one-block plan (compiled once for the
/// largest batch), at each batch size on a seeded random input: `[block][batch]`.
pub fn time_blocks(
    model: &Arc<Model>,
    backend: &Backend,
    batches: &[usize],
    warmup: usize,
    runs: usize,
) -> Result<Vec<Vec<Timing>>, SchedError> {
    if batches.is_empty() || batches.contains(&0) {
        return Err(SchedError::Invalid {
            what: "batch sizes".into(),
            reason: format!("{batches:?}: need one or more sizes >= 1"),
        });
    }
    let capacity = batches.iter().copied().max().unwrap_or(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut blocks = Vec::with_capacity(model.blocks.len());
    for (i, block) in model.blocks.iter().enumerate() {
        let engine = |source| SchedError::Engine {
            block: block.name.clone(),
            source,
        };
        let plan = Plan::compile(model, i..i + 1, backend, capacity).map_err(engine)?;
        let mut times = Vec::with_capacity(batches.len());
        for &b in batches {
            let input = random_input(&mut rng, b, model.shape_at(i));
            let t = time_plans(&[&plan], &input, warmup, runs).map_err(engine)?;
            times.extend(t);
        }
        blocks.push(times);
    }
    Ok(blocks)
}

/// The profile file format version.
pub const PROFILE_FORMAT: u32 = 1;

/// Measured time of one block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockTime {
    /// Block name.
    pub name: String,
    /// Seconds per run, one entry per batch size of [`Profile::batches`].
    pub seconds: Vec<f64>,
}

/// Per-block times of one model on one backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// File format version ([`PROFILE_FORMAT`]).
    pub format: u32,
    /// Model name.
    pub model: String,
    /// Model content hash: a profile is refused for another model.
    pub hash: String,
    /// `cpu` or `gpu`.
    pub backend: String,
    /// Adapter description.
    pub adapter: String,
    /// Batch sizes measured.
    pub batches: Vec<usize>,
    /// Factor applied to the measured times (1 = as measured; 4 emulates a device 4x slower).
    pub slowdown: f64,
    /// Untimed runs per block and batch before timing.
    pub warmup: usize,
    /// Timed runs per block and batch (the median is kept).
    pub runs: usize,
    /// The clock of every time here (profiles written before this field were wall time).
    #[serde(default = "wall_clock")]
    pub clock: Clock,
    /// Per-block times, in block order.
    pub blocks: Vec<BlockTime>,
    /// Runs observed online since measuring ([`Profile::observe`]).
    #[serde(default)]
    pub observed_runs: u64,
    /// Where the times come from, when not measured here as they stand (published figures, a
    /// derivation, the CPU model of a measurement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Profile {
    /// Times every block of `model` on `backend` for each batch size with [`time_blocks`]:
    /// `warmup` untimed runs, then the median of `runs` timed runs, all by one [`Clock`].
    pub fn measure(
        model: &Arc<Model>,
        backend: &Backend,
        batches: &[usize],
        warmup: usize,
        runs: usize,
    ) -> Result<Self, SchedError> {
        if runs == 0 {
            return Err(SchedError::Invalid {
                what: "runs".into(),
                reason: "need at least one timed run".into(),
            });
        }
        let timings = time_blocks(model, backend, batches, warmup, runs)?;
        let clock = Clock::common(timings.iter().flatten());
        let blocks = model
            .blocks
            .iter()
            .zip(&timings)
            .map(|(block, t)| BlockTime {
                name: block.name.clone(),
                seconds: t.iter().map(|t| t.seconds_by(clock)).collect(),
            })
            .collect();
        Ok(Self {
            format: PROFILE_FORMAT,
            model: model.name().to_string(),
            hash: model.hash.clone(),
            backend: backend.name().to_string(),
            adapter: backend.adapter(),
            batches: batches.to_vec(),
            slowdown: 1.0,
            warmup,
            runs,
            clock,
            blocks,
            observed_runs: 0,
            source: match backend {
                Backend::Cpu => cpu_model().map(|m| format!("measured on {m}")),
                Backend::Gpu(_) => None,
            },
        })
    }

    /// The same profile with every time multiplied by `factor` (emulates a slower device).
    pub fn scaled(&self, factor: f64) -> Result<Self, SchedError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(SchedError::Invalid {
                what: "slowdown".into(),
                reason: format!("{factor} is not a positive finite factor"),
            });
        }
        let mut p = self.clone();
        p.slowdown *= factor;
        for b in &mut p.blocks {
            b.seconds.iter_mut().for_each(|s| *s *= factor);
        }
        Ok(p)
    }

    /// Checks that the profile was measured on `model`: same hash, block count and names, and
    /// one positive time per batch size.
    pub fn check(&self, model: &Model, what: &str) -> Result<(), SchedError> {
        let mismatch = |reason: String| SchedError::ProfileMismatch {
            what: what.to_string(),
            model: model.name().to_string(),
            reason,
        };
        if self.blocks.len() != model.blocks.len() {
            return Err(mismatch(format!(
                "it has {} blocks, the model {}",
                self.blocks.len(),
                model.blocks.len()
            )));
        }
        if self.hash != model.hash {
            return Err(mismatch(format!(
                "it was measured on model hash {}, the model's is {}",
                short(&self.hash),
                short(&model.hash)
            )));
        }
        for (p, b) in self.blocks.iter().zip(&model.blocks) {
            if p.name != b.name {
                return Err(mismatch(format!(
                    "block '{}' in the profile is '{}' in the model",
                    p.name, b.name
                )));
            }
            if p.seconds.len() != self.batches.len()
                || p.seconds.iter().any(|s| !(s.is_finite() && *s >= 0.0))
            {
                return Err(mismatch(format!(
                    "block '{}' needs {} non-negative times (one per batch size), has {:?}",
                    p.name,
                    self.batches.len(),
                    p.seconds
                )));
            }
        }
        if self.batches.is_empty() {
            return Err(mismatch("it lists no batch sizes".into()));
        }
        Ok(())
    }

    /// Reads a profile and checks it against `model`.
    pub fn load(path: impl AsRef<Path>, model: &Model) -> Result<Self, SchedError> {
        let path = path.as_ref();
        let p = Self::read(path)?;
        p.check(model, &path.display().to_string())?;
        Ok(p)
    }

    /// Reads a profile without checking it against a model (e.g. to take its batch curve).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SchedError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchedError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let p: Profile = serde_json::from_str(&text).map_err(|e| SchedError::Format {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if p.format != PROFILE_FORMAT {
            return Err(SchedError::Format {
                path: path.display().to_string(),
                reason: format!("format {} (this build reads {PROFILE_FORMAT})", p.format),
            });
        }
        Ok(p)
    }

    /// Writes the profile as pretty JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SchedError> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).expect("profiles serialise");
        std::fs::write(path, text + "\n").map_err(|source| SchedError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Index of the smallest batch size (the latency of one request).
    fn latency_batch(&self) -> usize {
        self.batches
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| **b)
            .map(|(i, _)| i)
            .unwrap_or(0)
    }

    /// Seconds of each block for one request (the smallest batch size measured).
    pub fn block_seconds(&self) -> Vec<f64> {
        let j = self.latency_batch();
        self.blocks.iter().map(|b| b.seconds[j]).collect()
    }

    /// Seconds of each block at batch size `batch`, if measured.
    pub fn block_seconds_at(&self, batch: usize) -> Option<Vec<f64>> {
        let j = self.batches.iter().position(|&b| b == batch)?;
        Some(self.blocks.iter().map(|b| b.seconds[j]).collect())
    }

    /// Online update from an observed run of blocks `range` (one request, smallest batch) that took
    /// `seconds`: the blocks' times move toward the observation by `alpha` (0..=1), keeping their
    /// proportions. Returns the ratio observed / predicted.
    pub fn observe(
        &mut self,
        range: std::ops::Range<usize>,
        seconds: f64,
        alpha: f64,
    ) -> Result<f64, SchedError> {
        if range.start >= range.end || range.end > self.blocks.len() {
            return Err(SchedError::Invalid {
                what: "observed block range".into(),
                reason: format!("{range:?} for {} blocks", self.blocks.len()),
            });
        }
        if !(seconds.is_finite() && seconds > 0.0 && (0.0..=1.0).contains(&alpha)) {
            return Err(SchedError::Invalid {
                what: "observation".into(),
                reason: format!("{seconds} s with alpha {alpha}"),
            });
        }
        let j = self.latency_batch();
        let predicted: f64 = self.blocks[range.clone()]
            .iter()
            .map(|b| b.seconds[j])
            .sum();
        let ratio = if predicted > 0.0 {
            seconds / predicted
        } else {
            1.0
        };
        let n = range.len() as f64;
        for b in &mut self.blocks[range] {
            let target = if predicted > 0.0 {
                b.seconds[j] * ratio
            } else {
                seconds / n
            };
            b.seconds[j] += alpha * (target - b.seconds[j]);
        }
        self.observed_runs += 1;
        Ok(ratio)
    }
}

/// The CPU's model name (`model name` of `/proc/cpuinfo`), where the system tells it.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let name = text
        .lines()
        .find(|l| l.starts_with("model name"))?
        .split_once(':')?
        .1
        .trim()
        .to_string();
    let cores = text.lines().filter(|l| l.starts_with("processor")).count();
    Some(format!("{name}, {cores} logical cores"))
}

fn wall_clock() -> Clock {
    Clock::Wall
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(wall: f64, device: Option<f64>) -> Timing {
        Timing {
            wall_seconds: wall,
            device_seconds: device,
        }
    }

    #[test]
    fn timestamps_are_the_clock_only_when_every_timing_has_them() {
        let gpu = timing(2.0, Some(1.0));
        let wall = timing(3.0, None);
        assert_eq!(gpu.clock(), Clock::GpuTimestamps);
        assert_eq!(gpu.seconds(), 1.0);
        assert_eq!(wall.clock(), Clock::Wall);
        assert_eq!(wall.seconds(), 3.0);
        assert_eq!(Clock::common([&gpu, &gpu]), Clock::GpuTimestamps);
        assert_eq!(Clock::common([&gpu, &wall]), Clock::Wall);
        assert_eq!(Clock::common([]), Clock::Wall);
        // A mixed set is read by the wall clock throughout, never half and half.
        assert_eq!(gpu.seconds_by(Clock::Wall), 2.0);
    }

    #[test]
    fn the_cpu_backend_is_profiled_by_the_wall_clock() {
        let model = Arc::new(crate::fixture::lenet(1).expect("fixture builds"));
        let p = Profile::measure(&model, &Backend::Cpu, &[1, 2], 0, 1).expect("measures");
        assert_eq!(p.clock, Clock::Wall);
        assert_eq!(p.blocks.len(), model.blocks.len());
        assert!(p.blocks.iter().flat_map(|b| &b.seconds).all(|s| *s > 0.0));
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(json["clock"], "wall");
    }

    #[test]
    fn profiles_written_before_the_clock_field_read_as_wall_time() {
        let model = Arc::new(crate::fixture::lenet(1).expect("fixture builds"));
        let p = Profile::measure(&model, &Backend::Cpu, &[1], 0, 1).expect("measures");
        let mut json = serde_json::to_value(&p).expect("serialises");
        json.as_object_mut().expect("an object").remove("clock");
        let back: Profile = serde_json::from_value(json).expect("reads");
        assert_eq!(back.clock, Clock::Wall);
    }
}
