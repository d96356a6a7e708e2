//! Training on the same ops the engine runs: a JSON spec ([`TrainSpec`]) compiles to a seeded
//! [`Model`]; the training loop runs mini-batch forward and backward passes (softmax
//! cross-entropy, multi-exit loss = weighted sum over exits, BranchyNet style), steps an
//! optimizer (SGD with momentum or Adam) and stops with an error naming the epoch and layer
//! when the loss turns NaN or explodes. The result is an ordinary model directory.
//!
//! Backward passes: [`backward`] (plain Rust, the CPU backend and the oracle for the GPU
//! kernels in `shaders/train/`).

pub mod backward;
pub mod gpu;
pub mod gpu_net;
pub mod net;
pub mod optim;
pub mod spec;

pub use spec::{OptimizerSpec, TrainSpec};

use crate::data::{DataError, Dataset};
use crate::engine::{Backend, EngineError, Plan};
use crate::model::{Model, ModelError};
use net::{params_mut, step_at, step_at_mut, CpuNet};
use optim::OptimState;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;

/// Errors of training.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The spec file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spec is malformed or inconsistent.
    #[error("bad training spec: {reason}")]
    Spec {
        /// What is wrong.
        reason: String,
    },
    /// One op of the spec is invalid.
    #[error("bad training spec: block '{block}', op {index} ('{op}'): {reason}")]
    Layer {
        /// Block or exit head name.
        block: String,
        /// Op index within it.
        index: usize,
        /// Op name.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// The spec compiled to an invalid model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Evaluation failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The data does not fit the model input.
    #[error("the data has {got} values per sample, but the model input {want:?} needs {elems} (or fewer, zero-padded, for a flat input)")]
    DataShape {
        /// Values per sample in the data.
        got: usize,
        /// Model input shape.
        want: Vec<usize>,
        /// Its element count.
        elems: usize,
    },
    /// The loss became NaN/infinite or exceeded the limit.
    #[error("training diverged in epoch {epoch} (step {step}): loss {loss} at layer '{layer}'; lower the learning rate")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The first layer with non-finite values, or the one with the largest gradient.
        layer: String,
        /// The offending loss.
        loss: f32,
    },
}

/// Options of a training run beyond the spec.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TrainOptions {
    /// Overrides the spec's epochs.
    pub epochs: Option<usize>,
    /// Overrides the spec's seed.
    pub seed: Option<u64>,
    /// Stop after this many optimizer steps in total (short test runs).
    pub max_steps: Option<usize>,
    /// A finite loss above this counts as exploding.
    pub max_loss: f32,
    /// Overrides the spec's learning rate.
    pub lr: Option<f32>,
    /// Evaluate on the test set after every epoch (else only at the end).
    pub eval_every_epoch: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: None,
            seed: None,
            max_steps: None,
            max_loss: 1e3,
            lr: None,
            eval_every_epoch: true,
        }
    }
}

impl TrainOptions {
    /// Options with the spec's schedule.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Something to report while training.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Progress {
    /// An optimizer step finished.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step in the epoch.
        step: usize,
        /// Steps per epoch.
        steps: usize,
        /// Weighted loss of the batch.
        loss: f32,
    },
    /// An epoch finished.
    Epoch(EpochReport),
}

/// Figures of one epoch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean weighted training loss.
    pub loss: f32,
    /// Training accuracy of the final classifier (during the epoch).
    pub train_accuracy: f64,
    /// Test accuracy of the final classifier (when evaluated).
    pub test_accuracy: Option<f64>,
    /// Training samples per second (forward, backward and optimizer).
    pub samples_per_sec: f64,
}

/// The outcome of a training run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainSummary {
    /// Model name.
    pub model: String,
    /// `cpu` or `gpu`.
    pub backend: String,
    /// Adapter name (or `cpu`).
    pub adapter: String,
    /// Epochs run.
    pub epochs: usize,
    /// Optimizer steps run.
    pub steps: usize,
    /// Seed used.
    pub seed: u64,
    /// Training samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Test accuracy of the final classifier.
    pub test_accuracy: f64,
    /// Test accuracy of every exit head (threshold 1: each head on its own), by head name.
    pub exit_accuracy: std::collections::BTreeMap<String, f64>,
    /// Final mean training loss.
    pub final_loss: f32,
    /// Training throughput (samples/s, forward + backward + optimizer), whole run.
    pub samples_per_sec: f64,
    /// Wall time of training (evaluation excluded).
    pub train_seconds: f64,
    /// Per-epoch figures.
    pub history: Vec<EpochReport>,
}

/// Gathers samples `idx` of `data` into a batch of `elems` values each (zero-padded).
fn gather(data: &Dataset, idx: &[usize], elems: usize) -> (Vec<f32>, Vec<u8>) {
    let per = data.images.sample_len();
    let mut x = vec![0.0f32; idx.len() * elems];
    let mut labels = Vec::with_capacity(idx.len());
    for (i, &s) in idx.iter().enumerate() {
        x[i * elems..i * elems + per].copy_from_slice(data.images.sample(s));
        labels.push(data.labels[s]);
    }
    (x, labels)
}

/// Test accuracy of the final classifier and of every exit head on `data`.
pub fn evaluate(
    model: &Arc<Model>,
    data: &Dataset,
    backend: &Backend,
) -> Result<(f64, Vec<f64>), TrainError> {
    let n = data.len();
    let plan = Plan::compile(model, 0..model.blocks.len(), backend, n.clamp(1, 500))?;
    let result = crate::engine::evaluate(&plan, data, n)?;
    let d = n.max(1) as f64;
    let correct = |stat: &crate::cpu::ExitStat, label: u32| usize::from(stat.argmax == label);
    let mut exits = vec![0usize; model.exits.len()];
    let mut finals = 0usize;
    for s in &result.samples {
        finals += correct(&s.final_stat, s.label);
        for (stat, &e) in s.exits.iter().zip(&result.exit_order) {
            exits[e] += correct(stat, s.label);
        }
    }
    Ok((
        finals as f64 / d,
        exits.into_iter().map(|c| c as f64 / d).collect(),
    ))
}

/// Trains `spec` on `train`, evaluates on `test`, and returns the trained model (with its
/// provenance filled in, `command` recorded) and a summary.
pub fn train(
    spec: &TrainSpec,
    train: &Dataset,
    test: &Dataset,
    backend: &Backend,
    opts: &TrainOptions,
    command: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Model, TrainSummary), TrainError> {
    spec.check()?;
    let seed = opts.seed.unwrap_or(spec.seed);
    let epochs = opts.epochs.unwrap_or(spec.epochs);
    let lr = opts.lr.unwrap_or(spec.lr);
    let mut model = spec.build(seed)?;
    let elems = model.input_elems();
    check_data(&model, train, test)?;
    let mut weights: Vec<f32> = model.exits.iter().map(|e| e.loss_weight).collect();
    weights.push(spec.final_loss_weight);
    let batch = spec.batch_size.min(train.len());
    let mut engine = Engine::new(&model, backend, batch)?;
    let steps_per_epoch = train.len().div_ceil(batch);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut t = 0u32;
    let mut total_steps = 0usize;
    let mut train_secs = 0.0f64;
    let mut trained_samples = 0usize;
    let mut final_loss = f32::NAN;
    'epochs: for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (s, idx) in order.chunks(batch).enumerate() {
            if opts.max_steps.is_some_and(|m| total_steps >= m) {
                break;
            }
            let (x, labels) = gather(train, idx, elems);
            t += 1;
            let lr = lr * spec.lr_decay.powi(epoch as i32 - 1);
            let f = engine.step(&mut model, &x, &labels, &weights, spec.optimizer, lr, t)?;
            if !f.loss.is_finite() || f.loss > opts.max_loss {
                let layer = match f.culprit {
                    Some(l) => Some(l),
                    None => engine.blame(idx.len())?,
                };
                return Err(TrainError::Diverged {
                    epoch,
                    step: s + 1,
                    layer: layer.unwrap_or_else(|| "loss".into()),
                    loss: f.loss,
                });
            }
            loss_sum += f.loss as f64 * idx.len() as f64;
            correct += f.final_correct;
            seen += idx.len();
            total_steps += 1;
            progress(Progress::Step {
                epoch,
                step: s + 1,
                steps: steps_per_epoch,
                loss: f.loss,
            });
        }
        let secs = start.elapsed().as_secs_f64();
        train_secs += secs;
        trained_samples += seen;
        if seen == 0 {
            break 'epochs;
        }
        final_loss = (loss_sum / seen as f64) as f32;
        engine.sync(&mut model)?;
        let test_accuracy = if opts.eval_every_epoch || epoch == epochs {
            Some(evaluate(&Arc::new(model.clone()), test, backend)?.0)
        } else {
            None
        };
        let report = EpochReport {
            epoch,
            loss: final_loss,
            train_accuracy: correct as f64 / seen as f64,
            test_accuracy,
            samples_per_sec: seen as f64 / secs.max(1e-9),
        };
        progress(Progress::Epoch(report.clone()));
        history.push(report);
    }
    engine.sync(&mut model)?;
    let shared = Arc::new(model.clone());
    let (test_accuracy, exit_acc) = evaluate(&shared, test, backend)?;
    let exit_accuracy = model
        .exits
        .iter()
        .zip(&exit_acc)
        .map(|(e, &a)| (e.name.clone(), a))
        .collect();
    let summary = TrainSummary {
        model: model.name().to_string(),
        backend: backend.name().to_string(),
        adapter: backend.adapter(),
        epochs: history.len(),
        steps: total_steps,
        seed,
        train_samples: train.len(),
        test_samples: test.len(),
        test_accuracy,
        exit_accuracy,
        final_loss,
        samples_per_sec: trained_samples as f64 / train_secs.max(1e-9),
        train_seconds: train_secs,
        history,
    };
    model.manifest.provenance = Some(provenance(spec, (seed, epochs, lr), command, &summary));
    Ok((model, summary))
}

/// Checks that the data fits the model: sample size (a 1-D input may take shorter samples,
/// zero-padded), labels within the classes, a non-empty training set.
fn check_data(model: &Model, train: &Dataset, test: &Dataset) -> Result<(), TrainError> {
    let elems = model.input_elems();
    let per = train.images.sample_len();
    let flat_ok = model.input_shape().len() == 1 && per <= elems;
    if !(per == elems || flat_ok) || test.images.sample_len() != per {
        return Err(TrainError::DataShape {
            got: per,
            want: model.input_shape().to_vec(),
            elems,
        });
    }
    for (set, data) in [("training", train), ("test", test)] {
        if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= model.classes()) {
            return Err(TrainError::Spec {
                reason: format!(
                    "the {set} data has label {bad}, but the spec declares {} classes",
                    model.classes()
                ),
            });
        }
    }
    if train.is_empty() {
        return Err(TrainError::Spec {
            reason: "the training set is empty".into(),
        });
    }
    Ok(())
}

/// The trained model's provenance: the command, the spec with the values actually used
/// (`(seed, epochs, lr)` after command-line overrides) and the results.
fn provenance(
    spec: &TrainSpec,
    (seed, epochs, lr): (u64, usize, f32),
    command: &str,
    summary: &TrainSummary,
) -> Value {
    let mut spec_value = serde_json::to_value(spec).unwrap_or(Value::Null);
    spec_value["seed"] = json!(seed);
    spec_value["epochs"] = json!(epochs);
    spec_value["lr"] = json!(lr);
    json!({
        "trained_by": format!("edgecut {}", env!("CARGO_PKG_VERSION")),
        "command": command,
        "spec": spec_value,
        "backend": summary.backend,
        "adapter": summary.adapter,
        "epochs": summary.epochs,
        "steps": summary.steps,
        "seed": seed,
        "train_samples": summary.train_samples,
        "test_samples": summary.test_samples,
        "test_accuracy": summary.test_accuracy,
        "exit_accuracy": summary.exit_accuracy,
        "final_loss": summary.final_loss,
    })
}

/// The label whose weight gradient has the largest norm, a non-finite norm counting as
/// infinite: the layer a diverged step is blamed on when no activation went non-finite.
fn largest_gradient<G: AsRef<[f32]>>(
    grads: impl IntoIterator<Item = (String, G)>,
) -> Option<String> {
    let norm = |g: &[f32]| {
        let n = g.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n.is_finite() {
            n
        } else {
            f32::INFINITY
        }
    };
    grads
        .into_iter()
        .map(|(label, g)| (norm(g.as_ref()), label))
        .fold(None, |best: Option<(f32, String)>, (n, l)| match best {
            Some((b, _)) if b >= n => best,
            _ => Some((n, l)),
        })
        .map(|(_, l)| l)
}

/// What one optimizer step reports.
struct StepResult {
    loss: f32,
    final_correct: usize,
    culprit: Option<String>,
}

/// The backend-specific part of training: gradients and optimizer steps.
enum Engine {
    Cpu {
        net: CpuNet,
        state: Vec<Option<(OptimState, OptimState)>>,
    },
    Gpu(Box<gpu_net::GpuNet>),
}

impl Engine {
    /// The layer to name after a diverged step that did not name one (GPU: read back).
    fn blame(&self, n: usize) -> Result<Option<String>, TrainError> {
        match self {
            Engine::Cpu { .. } => Ok(None),
            Engine::Gpu(net) => Ok(net.blame(n).map_err(EngineError::from)?),
        }
    }

    fn new(model: &Model, backend: &Backend, batch: usize) -> Result<Self, TrainError> {
        match backend {
            Backend::Cpu => {
                let net = CpuNet::new(model);
                let state = net
                    .grads
                    .iter()
                    .map(|g| {
                        g.as_ref().map(|g| {
                            (
                                OptimState::new(g.weight.len()),
                                OptimState::new(g.bias.len()),
                            )
                        })
                    })
                    .collect();
                Ok(Engine::Cpu { net, state })
            }
            Backend::Gpu(ctx) => Ok(Engine::Gpu(Box::new(
                gpu_net::GpuNet::new(ctx.clone(), model, batch).map_err(EngineError::from)?,
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)] // one optimizer step's inputs
    fn step(
        &mut self,
        model: &mut Model,
        x: &[f32],
        labels: &[u8],
        weights: &[f32],
        opt: OptimizerSpec,
        lr: f32,
        t: u32,
    ) -> Result<StepResult, TrainError> {
        match self {
            Engine::Gpu(net) => {
                let f = net
                    .step(x, labels, weights, opt, lr, t)
                    .map_err(EngineError::from)?;
                // Non-finite logits name only the head; `blame` finds the layer.
                Ok(StepResult {
                    loss: f.loss,
                    final_correct: f.final_correct,
                    culprit: None,
                })
            }
            Engine::Cpu { net, state } => {
                net.zero_grads();
                let f = net.forward_backward(model, x, labels, weights, true);
                let bad = !f.loss.is_finite();
                // Exploding or NaN without a non-finite activation: blame the layer with the
                // largest (or a non-finite) gradient.
                let culprit = f.non_finite_at.clone().or_else(|| {
                    largest_gradient(net.refs().iter().zip(&net.grads).filter_map(|(r, g)| {
                        g.as_ref()
                            .map(|g| (step_at(model, *r).label.clone(), &g.weight))
                    }))
                });
                let result = StepResult {
                    loss: f.loss,
                    final_correct: f.heads.last().map(|h| h.1).unwrap_or(0),
                    culprit,
                };
                if bad {
                    return Ok(result);
                }
                for ((r, g), st) in net.refs().iter().zip(&net.grads).zip(state.iter_mut()) {
                    if let (Some(g), Some((sw, sb))) = (g, st) {
                        let step = step_at_mut(model, *r);
                        if let Some((w, b)) = params_mut(&mut step.op) {
                            optim::step(opt, lr, t, w, &g.weight, sw);
                            optim::step(opt, lr, t, b, &g.bias, sb);
                        }
                    }
                }
                Ok(result)
            }
        }
    }

    /// Copies trained parameters back into `model` (a no-op on the CPU, where they live there).
    fn sync(&mut self, model: &mut Model) -> Result<(), TrainError> {
        match self {
            Engine::Cpu { .. } => Ok(()),
            Engine::Gpu(net) => Ok(net.sync(model).map_err(EngineError::from)?),
        }
    }
}
