//! Per-block time profiles: each block of a model timed on a backend in its own submission (a one-block
//! [`Plan`] compiled per block, `run` timed, median of repeated runs after warm-up), for one or more
//! batch sizes. Saved as JSON with the model hash and block names; refused for another model.
//! A block's exit heads run in its plan, so their time is part of the block's.

use super::SchedError;
use crate::engine::{Backend, Plan};
use crate::model::Model;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

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
    /// Per-block times, in block order.
    pub blocks: Vec<BlockTime>,
    /// Runs observed online since measuring ([`Profile::observe`]).
    #[serde(default)]
    pub observed_runs: u64,
}

impl Profile {
    /// Times every block of `model` on `backend` for each batch size: `warmup` untimed runs, then
    /// the median of `runs` timed `Plan::run` calls (random input, seeded).
    pub fn measure(
        model: &Arc<Model>,
        backend: &Backend,
        batches: &[usize],
        warmup: usize,
        runs: usize,
    ) -> Result<Self, SchedError> {
        if batches.is_empty() || batches.contains(&0) {
            return Err(SchedError::Invalid {
                what: "batch sizes".into(),
                reason: format!("{batches:?}: need one or more sizes >= 1"),
            });
        }
        if runs == 0 {
            return Err(SchedError::Invalid {
                what: "runs".into(),
                reason: "need at least one timed run".into(),
            });
        }
        let capacity = *batches.iter().max().expect("checked non-empty");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut blocks = Vec::with_capacity(model.blocks.len());
        for (i, block) in model.blocks.iter().enumerate() {
            let engine = |source| SchedError::Engine {
                block: block.name.clone(),
                source,
            };
            let plan = Plan::compile(model, i..i + 1, backend, capacity).map_err(engine)?;
            let sample: Vec<usize> = model.shape_at(i).to_vec();
            let elems: usize = sample.iter().product();
            let mut seconds = Vec::with_capacity(batches.len());
            for &b in batches {
                let data: Vec<f32> = (0..b * elems)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let mut shape = vec![b];
                shape.extend_from_slice(&sample);
                let input = Tensor::new(shape, data).expect("data sized to the shape");
                for _ in 0..warmup {
                    plan.run(&input).map_err(engine)?;
                }
                let mut times = Vec::with_capacity(runs);
                for _ in 0..runs {
                    let t = Instant::now();
                    plan.run(&input).map_err(engine)?;
                    times.push(t.elapsed().as_secs_f64());
                }
                seconds.push(crate::stats::median(&times));
            }
            blocks.push(BlockTime {
                name: block.name.clone(),
                seconds,
            });
        }
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
            blocks,
            observed_runs: 0,
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
        p.check(model, &path.display().to_string())?;
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

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}
