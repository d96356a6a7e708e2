//! The cost model of DESIGN §6, precomputed per option so that a decision is a few multiply-adds
//! per option.
//!
//! For a cut after block `k`, with device exits `e <= k` whose heads answer first with
//! probability `p_e` (`P_exit(k) = sum p_e`):
//!
//! `T(k) = sum_e p_e D(0..=e) + (1 - P_exit(k)) (D(0..=k) + bytes(k, enc) / R + RTT + Q + S(k+1..n))`
//!
//! which is DESIGN's `D(0..k) + (1 - P_exit(k)) (bytes / R + RTT + Q + S)` with the time saved by
//! exiting early on the device counted too (equal to it when the model has no exits). Device-only
//! has no network term; server-only runs no device block and sends the input (as uint8 pixels
//! when the input is an image).

use super::profile::Profile;
use super::{Choice, Cut, Encoding, Estimates, SchedError};
use crate::data::Dataset;
use crate::engine::{evaluate, Backend, Evaluation, Plan};
use crate::model::Model;
use std::sync::Arc;

/// What the early exits of a model do on some data: the probability that each exit is the first
/// to answer, and optionally the accuracy reached with the first `j` exits enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitProbabilities {
    /// `after_block` of each exit, ascending.
    pub after_block: Vec<usize>,
    /// Probability that exit `j` (in `after_block` order) is the first whose confidence passes.
    pub first: Vec<f64>,
    /// Accuracy with exits `0..j` enabled and the final classifier for the rest (`j = 0..=exits`);
    /// `None` when unknown (untrained models, calibrated probabilities).
    pub accuracy: Option<Vec<f64>>,
}

/// One sample's exit behaviour, measured by running the model on real data.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleExits {
    /// Confidence of each exit, in `after_block` order.
    pub confidence: Vec<f32>,
    /// Whether each exit's answer is right, same order.
    pub exit_correct: Vec<bool>,
    /// Whether the final classifier is right.
    pub final_correct: bool,
}

impl SampleExits {
    /// Every sample's exit behaviour from an evaluation of the whole model
    /// ([`crate::engine::evaluate()`]); exits in block order, as [`ExitProbabilities`] has them.
    pub fn from_evaluation(eval: &Evaluation) -> Vec<Self> {
        eval.samples
            .iter()
            .map(|s| SampleExits {
                confidence: s.exits.iter().map(|e| e.confidence).collect(),
                exit_correct: s.exits.iter().map(|e| e.argmax == s.label).collect(),
                final_correct: s.final_stat.argmax == s.label,
            })
            .collect()
    }

    /// Runs `model` on `backend` over the first `limit` samples of `data` (in batches of up to
    /// 256) and returns each sample's exit behaviour.
    pub fn measure(
        model: &Arc<Model>,
        backend: &Backend,
        data: &Dataset,
        limit: usize,
    ) -> Result<Vec<Self>, SchedError> {
        let n = limit.min(data.len());
        let engine = |source| SchedError::Engine {
            block: "the whole model".into(),
            source,
        };
        if n == 0 {
            return Err(SchedError::Invalid {
                what: "exit samples".into(),
                reason: "no labelled samples to run the exits on".into(),
            });
        }
        let plan =
            Plan::compile(model, 0..model.blocks.len(), backend, 256.min(n)).map_err(engine)?;
        Ok(Self::from_evaluation(
            &evaluate(&plan, data, n).map_err(engine)?,
        ))
    }

    /// Index (in `after_block` order) of the first exit among the first `enabled` whose
    /// confidence is strictly above `threshold`.
    pub fn first_exit(&self, threshold: f32, enabled: usize) -> Option<usize> {
        self.confidence
            .iter()
            .take(enabled)
            .position(|&c| c > threshold)
    }

    /// Whether the answer is right when the first `enabled` exits may answer.
    pub fn correct(&self, threshold: f32, enabled: usize) -> bool {
        match self.first_exit(threshold, enabled) {
            Some(e) => self.exit_correct[e],
            None => self.final_correct,
        }
    }
}

impl ExitProbabilities {
    /// No exit ever answers (models without exits, or exits disabled).
    pub fn none(model: &Model) -> Self {
        let after_block = sorted_exits(model);
        Self {
            first: vec![0.0; after_block.len()],
            after_block,
            accuracy: None,
        }
    }

    /// Calibrated probabilities: `first[j]` for each exit in `after_block` order.
    pub fn calibrated(model: &Model, first: Vec<f64>) -> Result<Self, SchedError> {
        let after_block = sorted_exits(model);
        let bad = |reason: String| SchedError::Invalid {
            what: "exit probabilities".into(),
            reason,
        };
        if first.len() != after_block.len() {
            return Err(bad(format!(
                "{} given, model '{}' has {} exits",
                first.len(),
                model.name(),
                after_block.len()
            )));
        }
        if first.iter().any(|p| !(0.0..=1.0).contains(p)) || first.iter().sum::<f64>() > 1.0 + 1e-9
        {
            return Err(bad(format!(
                "{first:?} must be in [0, 1] and sum to at most 1"
            )));
        }
        Ok(Self {
            after_block,
            first,
            accuracy: None,
        })
    }

    /// Measured on samples at an exit threshold (confidence strictly above it answers).
    pub fn from_samples(model: &Model, samples: &[SampleExits], threshold: f32) -> Self {
        let after_block = sorted_exits(model);
        let m = after_block.len();
        let n = samples.len().max(1) as f64;
        let mut first = vec![0.0; m];
        for s in samples {
            if let Some(e) = s.first_exit(threshold, m) {
                first[e] += 1.0 / n;
            }
        }
        let accuracy = (0..=m)
            .map(|j| samples.iter().filter(|s| s.correct(threshold, j)).count() as f64 / n)
            .collect();
        Self {
            after_block,
            first,
            accuracy: Some(accuracy),
        }
    }

    /// Exits (count, in `after_block` order) that run on the device for `cut` in a model of `n` blocks.
    pub fn enabled(&self, cut: Cut, n: usize) -> usize {
        let d = cut.device_blocks(n);
        self.after_block.iter().filter(|&&b| b < d).count()
    }
}

/// `after_block` of every exit of the model, ascending.
pub fn sorted_exits(model: &Model) -> Vec<usize> {
    let mut v: Vec<usize> = model.exits.iter().map(|e| e.after_block).collect();
    v.sort_unstable();
    v
}

/// One option with its precomputed terms.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionCost {
    /// The cut and encoding.
    pub choice: Choice,
    /// Bytes sent when no device exit answers.
    pub bytes: u64,
    /// Device seconds when no exit answers: `D(0..=k)`.
    pub device_s: f64,
    /// Server seconds: `S(k+1..n)`.
    pub server_s: f64,
    /// `P_exit(k)`: probability that a device exit answers.
    pub p_exit: f64,
    /// `sum_e p_e D(0..=e)`: expected device seconds of the samples exits answer.
    pub exit_s: f64,
    /// Exits enabled on the device (in `after_block` order).
    pub exits_enabled: usize,
    /// Expected accuracy, when known.
    pub accuracy: Option<f64>,
}

impl OptionCost {
    /// Whether something is sent to the server.
    pub fn remote(&self) -> bool {
        self.choice.cut != Cut::Device
    }

    /// Expected latency (seconds) under `est`: the completion time of a request that joins the
    /// device, uplink and server queues `est` describes. With every wait zero this is the formula
    /// of DESIGN §6; under load:
    ///
    /// - the head starts after the device's own backlog (`device_wait_s`; server-only runs no
    ///   head and skips it);
    /// - the split tensor is sent when both the head and the bytes queued ahead on the uplink
    ///   are done (`max(head end, uplink_wait_s)`), at the estimated rate;
    /// - the server starts after the background queue and after the device's own earlier
    ///   requests (`max(arrival + queue_s, server_wait_s)`).
    ///
    /// Minimising it per request is earliest-finish-time list scheduling over the three
    /// resources: a long device queue sends work to the server, a long server queue keeps it on
    /// the device, so under overload the choices spread over whatever drains fastest.
    #[inline]
    pub fn expected(&self, est: &Estimates) -> f64 {
        if !self.remote() {
            return self.expected_given(est.device_wait_s, est.device_wait_s + self.device_s);
        }
        let head_end = if self.device_s > 0.0 {
            est.device_wait_s + self.device_s
        } else {
            0.0
        };
        let sent = head_end.max(est.uplink_wait_s) + self.bytes as f64 / est.rate_bytes_per_s;
        let arrive = sent + est.rtt_s / 2.0;
        let start = (arrive + est.queue_s).max(est.server_wait_s);
        self.expected_given(est.device_wait_s, start + self.server_s + est.rtt_s / 2.0)
    }

    /// Expected latency given the device's backlog and `done_s`, when the request would be
    /// answered (seconds from the decision) if no exit answers; exits answer after the backlog
    /// and their own head.
    #[inline]
    pub fn expected_given(&self, device_wait_s: f64, done_s: f64) -> f64 {
        self.p_exit * device_wait_s + self.exit_s + (1.0 - self.p_exit) * done_s
    }

    /// Expected latency given the seconds the remote part adds before the server computes
    /// (transfer + RTT + queue) when nothing is queued ahead.
    #[inline]
    pub fn expected_with(&self, network_and_queue_s: f64) -> f64 {
        let remote = if self.remote() {
            network_and_queue_s + self.server_s
        } else {
            0.0
        };
        self.exit_s + (1.0 - self.p_exit) * (self.device_s + remote)
    }

    /// Seconds of each resource one request of this option occupies on average: the device
    /// (head and exits), the uplink at `rate_bytes_per_s`, and the server divided over `workers`.
    pub fn demand(&self, rate_bytes_per_s: f64, workers: usize) -> [f64; 3] {
        let go = 1.0 - self.p_exit;
        let (uplink, server) = if self.remote() {
            (
                go * self.bytes as f64 / rate_bytes_per_s,
                go * self.server_s / workers.max(1) as f64,
            )
        } else {
            (0.0, 0.0)
        };
        [self.exit_s + go * self.device_s, uplink, server]
    }
}

/// How many requests per second the options can sustain: each option alone (a static policy)
/// and the best mix of them (what a policy that spreads requests over the options can reach at
/// most), with the device, the uplink and the server as three resources in a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Requests per second of each option of the table (same order).
    pub options: Vec<f64>,
    /// Requests per second of the best mix (a linear programme over the options' demands).
    pub mix: f64,
    /// The options of the best mix with their requests per second (at most three).
    pub mix_options: Vec<(usize, f64)>,
    /// Index of the option with the highest capacity alone.
    pub best_option: usize,
}

impl Capacity {
    /// The highest capacity of any policy: the best mix, at least the best option alone.
    pub fn best(&self) -> f64 {
        self.mix.max(self.options[self.best_option])
    }

    /// Whether `offered` requests per second exceed every policy's capacity (queues then grow
    /// without bound, whatever the policy does).
    pub fn overloaded(&self, offered: f64) -> bool {
        offered > self.best()
    }
}

/// The best mix of options `o` with per-request resource demands `demands[o]` (seconds of device,
/// uplink, server): its requests per second and the options it uses with their shares.
///
/// Largest `sum x` over `x >= 0` with `sum_o x_o demand_o[r] <= 1` for each resource `r`: at a
/// vertex at most three options are used, each resource tight or not, so every subset of up to
/// three options with as many tight resources is solved and the feasible best kept.
pub fn best_mix(demands: &[[f64; 3]]) -> (f64, Vec<(usize, f64)>) {
    const EPS: f64 = 1e-12;
    let feasible = |pairs: &[(usize, f64)]| {
        (0..3).all(|r| pairs.iter().map(|&(o, x)| x * demands[o][r]).sum::<f64>() <= 1.0 + 1e-9)
            && pairs.iter().all(|&(_, x)| x >= -EPS)
    };
    let mut best: f64 = 0.0;
    let mut support: Vec<(usize, f64)> = Vec::new();
    let mut keep = |value: f64, used: &[(usize, f64)]| {
        if value > best * (1.0 + 1e-12) {
            best = value;
            support = used.iter().copied().filter(|&(_, x)| x > EPS).collect();
        }
    };
    let n = demands.len();
    for a in 0..n {
        let peak = demands[a].iter().cloned().fold(0.0, f64::max);
        if peak > EPS {
            keep(1.0 / peak, &[(a, 1.0 / peak)]);
        }
        for b in a + 1..n {
            for (r, q) in [(0, 1), (0, 2), (1, 2)] {
                let (m00, m01, m10, m11) =
                    (demands[a][r], demands[b][r], demands[a][q], demands[b][q]);
                let det = m00 * m11 - m01 * m10;
                if det.abs() < EPS {
                    continue;
                }
                let xa = (m11 - m01) / det;
                let xb = (m00 - m10) / det;
                if feasible(&[(a, xa), (b, xb)]) {
                    keep(xa + xb, &[(a, xa), (b, xb)]);
                }
            }
            for c in b + 1..n {
                let m = [0, 1, 2].map(|r| [demands[a][r], demands[b][r], demands[c][r]]);
                if let Some(x) = solve3(m) {
                    let used = [(a, x[0]), (b, x[1]), (c, x[2])];
                    if feasible(&used) {
                        keep(x.iter().sum(), &used);
                    }
                }
            }
        }
    }
    (best, support)
}

/// Solves `m x = 1` (3x3) by Cramer's rule; `None` when singular.
fn solve3(m: [[f64; 3]; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-12 {
        return None;
    }
    let mut x = [0.0; 3];
    for (c, xc) in x.iter_mut().enumerate() {
        let mut mc = m;
        for row in &mut mc {
            row[c] = 1.0;
        }
        *xc = det(mc) / d;
    }
    Some(x)
}

/// All options of a model: device-only, server-only and every cut candidate in every split
/// encoding, with the terms of the cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct CostTable {
    /// Model name.
    pub model: String,
    /// Blocks in the model.
    pub blocks: usize,
    /// Block names.
    pub block_names: Vec<String>,
    /// The cut candidates (block indices).
    pub candidates: Vec<usize>,
    /// Options: server-only first, then candidates x encodings, device-only last.
    pub options: Vec<OptionCost>,
    /// Device per-block seconds.
    pub device_block_s: Vec<f64>,
    /// Server per-block seconds.
    pub server_block_s: Vec<f64>,
    /// The exits.
    pub exits: ExitProbabilities,
}

/// Whether a model input looks like an 8-bit image (`[1 or 3, H, W]`): then server-only sends
/// its pixels, 1 byte each.
pub fn image_input(model: &Model) -> bool {
    let s = model.input_shape();
    s.len() == 3 && (s[0] == 1 || s[0] == 3)
}

impl CostTable {
    /// Builds the table from two profiles checked against the model.
    pub fn new(
        model: &Model,
        device: &Profile,
        server: &Profile,
        exits: &ExitProbabilities,
    ) -> Result<Self, SchedError> {
        device.check(model, "device profile")?;
        server.check(model, "server profile")?;
        Self::from_times(model, device.block_seconds(), server.block_seconds(), exits)
    }

    /// Builds the table from per-block seconds (device, server).
    pub fn from_times(
        model: &Model,
        device_block_s: Vec<f64>,
        server_block_s: Vec<f64>,
        exits: &ExitProbabilities,
    ) -> Result<Self, SchedError> {
        let n = model.blocks.len();
        if device_block_s.len() != n || server_block_s.len() != n {
            return Err(SchedError::Invalid {
                what: "block times".into(),
                reason: format!(
                    "{} device and {} server times for {n} blocks",
                    device_block_s.len(),
                    server_block_s.len()
                ),
            });
        }
        let candidates = model.cut_candidates();
        let mut prefix = vec![0.0; n + 1];
        for i in 0..n {
            prefix[i + 1] = prefix[i] + device_block_s[i];
        }
        let server_total: f64 = server_block_s.iter().sum();
        let mut server_suffix = vec![0.0; n + 1];
        for i in (0..n).rev() {
            server_suffix[i] = server_suffix[i + 1] + server_block_s[i];
        }
        let make = |choice: Choice, bytes: u64| {
            let cut = choice.cut;
            let d = cut.device_blocks(n);
            let enabled = exits.enabled(cut, n);
            let p_exit: f64 = exits.first[..enabled].iter().sum();
            let exit_s: f64 = (0..enabled)
                .map(|j| exits.first[j] * prefix[exits.after_block[j] + 1])
                .sum();
            OptionCost {
                choice,
                bytes,
                device_s: prefix[d],
                server_s: server_suffix[d],
                p_exit,
                exit_s,
                exits_enabled: enabled,
                accuracy: exits.accuracy.as_ref().map(|a| a[enabled]),
            }
        };
        let server = Self::server_choice_of(model);
        let input_bytes = if image_input(model) {
            // 8-bit pixels: 1 byte each, no quantisation parameters to send.
            model.input_elems() as u64
        } else {
            server.encoding.bytes(model.input_elems())
        };
        let mut options = vec![make(server, input_bytes)];
        debug_assert!((options[0].server_s - server_total).abs() < 1e-12);
        for &k in &candidates {
            for enc in Encoding::ALL {
                let bytes = enc.bytes(model.blocks[k].output_elems());
                options.push(make(Choice::after(k, enc), bytes));
            }
        }
        options.push(make(Choice::DEVICE, 0));
        Ok(Self {
            model: model.name().to_string(),
            blocks: n,
            block_names: model.blocks.iter().map(|b| b.name.clone()).collect(),
            candidates,
            options,
            device_block_s,
            server_block_s,
            exits: exits.clone(),
        })
    }

    /// What deciding at the estimated rate could cost if the true rate were `spread` times
    /// higher or lower: the larger loss, in seconds, of the option best at `est` against the
    /// option best at that other rate. Zero when no plausible rate changes the choice (e.g. a
    /// device so fast that offloading never wins), so refreshing the estimate cannot pay.
    pub fn rate_regret(&self, est: &Estimates, spread: f64) -> f64 {
        [spread, 1.0 / spread]
            .iter()
            .map(|k| {
                let other = Estimates {
                    rate_bytes_per_s: est.rate_bytes_per_s * k,
                    ..*est
                };
                self.regret(est, &other)
            })
            .fold(0.0, f64::max)
    }

    /// The loss, in seconds, of the option best under `decided` when `actual` holds, against
    /// the option best under `actual` (0 when they agree).
    pub fn regret(&self, decided: &Estimates, actual: &Estimates) -> f64 {
        let best = |e: &Estimates| {
            self.options
                .iter()
                .enumerate()
                .map(|(i, o)| (i, o.expected(e)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
        };
        match (best(decided), best(actual)) {
            (Some((chosen, _)), Some((_, best_t))) => {
                (self.options[chosen].expected(actual) - best_t).max(0.0)
            }
            _ => 0.0,
        }
    }

    /// Index of the option for `choice`.
    pub fn index(&self, choice: Choice) -> Option<usize> {
        self.options.iter().position(|o| o.choice == choice)
    }

    /// The server-only choice of `model`: the input as INT8 when it is an 8-bit image, else FP32.
    pub fn server_choice_of(model: &Model) -> Choice {
        Choice {
            cut: Cut::Server,
            encoding: if image_input(model) {
                Encoding::Int8
            } else {
                Encoding::Fp32
            },
        }
    }

    /// The capacity of every option and of the best mix at `rate_bytes_per_s` with `workers`
    /// server workers ([`Capacity`]).
    pub fn capacity(&self, rate_bytes_per_s: f64, workers: usize) -> Capacity {
        let demands: Vec<[f64; 3]> = self
            .options
            .iter()
            .map(|o| o.demand(rate_bytes_per_s, workers))
            .collect();
        let options: Vec<f64> = demands
            .iter()
            .map(|d| {
                let peak = d.iter().cloned().fold(0.0, f64::max);
                if peak > 0.0 {
                    1.0 / peak
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let best_option = (0..options.len())
            .max_by(|&a, &b| options[a].total_cmp(&options[b]))
            .unwrap_or(0);
        let (mix, mix_options) = best_mix(&demands);
        Capacity {
            mix,
            mix_options,
            options,
            best_option,
        }
    }

    /// The server-only choice of this table (its first option).
    pub fn server_choice(&self) -> Choice {
        self.options[0].choice
    }

    /// The label of `choice` ([`Choice::label`] with this model's block names).
    pub fn label(&self, choice: Choice) -> String {
        choice.label(&self.block_names)
    }

    /// Parses a cut given as a block name or index, checking it is a candidate.
    pub fn parse_cut(&self, s: &str) -> Result<Cut, SchedError> {
        let k = s
            .parse::<usize>()
            .ok()
            .or_else(|| self.block_names.iter().position(|b| b == s));
        match k {
            Some(k) if self.candidates.contains(&k) => Ok(Cut::After(k)),
            _ => Err(SchedError::NotACandidate {
                cut: s.to_string(),
                model: self.model.clone(),
                candidates: self
                    .candidates
                    .iter()
                    .map(|&k| format!("{} ({k})", self.block_names[k]))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
