//! Execution: a [`Plan`] is a block range `a..b` of a model compiled once for a [`Backend`] and
//! run many times on batches. The split point is just the range: the device runs `0..k`, the
//! server `k..n`, with the same machinery.
//!
//! A plan compiled with a [`PlanIo`] carries the split tensor's encoding inside it: a head
//! plan's last step packs its output into the wire bytes ([`PlanOutput::encoded`]), a tail
//! plan's first step unpacks received bytes ([`Plan::run_encoded`]), so the tensor crosses
//! between host and device once per side.
//!
//! Rooms: `plan` is the planner (pure data: steps, layouts, buffer liveness), `cpu` and `gpu`
//! the executors, [`evaluate()`] the loop over a labelled dataset.

use crate::cpu::ExitStat;
use crate::encoding::{Encoded, Encoding, EncodingError};
use crate::gpu::{GpuContext, GpuError};
use crate::model::Model;
use crate::tensor::{Tensor, TensorError};
use std::ops::Range;
use std::sync::Arc;
use thiserror::Error;

mod cpu;
pub mod evaluate;
mod gpu;
mod plan;

pub use cpu::{run_steps_cpu, run_steps_reference, OpTime, OpTimes};
pub use evaluate::{evaluate, Evaluation, SampleResult};

/// Errors compiling or running a plan.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The block range is empty or outside the model.
    #[error("block range {start}..{end} is invalid for a model of {blocks} blocks (need start < end <= {blocks})")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Blocks in the model.
        blocks: usize,
    },
    /// A batch larger than the plan was compiled for, or empty.
    #[error("batch of {got} samples does not fit this plan (compiled for 1..={capacity}); compile a plan with a larger batch")]
    BatchTooLarge {
        /// Samples given.
        got: usize,
        /// Plan capacity.
        capacity: usize,
    },
    /// Input of the wrong shape.
    #[error("wrong input for blocks {range:?}: {source}")]
    Shape {
        /// The plan's range.
        range: Range<usize>,
        /// The shape error.
        source: TensorError,
    },
    /// A plan or dataset that cannot be evaluated together.
    #[error("cannot evaluate: {0}")]
    Evaluate(String),
    /// Received bytes that do not match their shape or encoding.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// Encoded input given to a plan compiled for another input encoding (or for none).
    #[error("blocks {range:?} were compiled for {expected} input, got {got}; compile the plan with PlanIo {{ input: Some({got:?}), .. }}")]
    EncodingMismatch {
        /// The plan's range.
        range: Range<usize>,
        /// The plan's input encoding (`none` for plain tensors only).
        expected: String,
        /// The encoding received.
        got: Encoding,
    },
    /// A GPU failure.
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// How a plan's input arrives and its output leaves: `None` is a plain f32 tensor, an
/// [`Encoding`] makes decoding the plan's first step (tails) or encoding its last (heads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PlanIo {
    /// Encoding of the input given to [`Plan::run_encoded`].
    pub input: Option<Encoding>,
    /// Encoding of [`PlanOutput::encoded`].
    pub output: Option<Encoding>,
}

impl PlanIo {
    /// A tail receiving `encoding`.
    pub fn decoding(encoding: Encoding) -> Self {
        Self {
            input: Some(encoding),
            output: None,
        }
    }

    /// A head sending `encoding`.
    pub fn encoding(encoding: Encoding) -> Self {
        Self {
            input: None,
            output: Some(encoding),
        }
    }
}

/// Where a plan runs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The host CPU: fast SIMD kernels on a thread pool ([`crate::cpu::fast`]).
    Cpu,
    /// WGSL kernels on a wgpu adapter.
    Gpu(Arc<GpuContext>),
}

impl Backend {
    /// The GPU when an adapter exists, else the CPU (with a warning on the log).
    pub fn gpu_or_cpu() -> Self {
        match GpuContext::new() {
            Ok(ctx) => Backend::Gpu(Arc::new(ctx)),
            Err(e) => {
                log::warn!("no GPU adapter, running on the CPU backend: {e}");
                Backend::Cpu
            }
        }
    }

    /// `"cpu"` or `"gpu"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(_) => "gpu",
        }
    }

    /// The adapter description, or the CPU backend with its thread count.
    pub fn adapter(&self) -> String {
        match self {
            Backend::Cpu => format!("cpu ({} threads)", crate::cpu::threads()),
            Backend::Gpu(ctx) => ctx.summary().to_string(),
        }
    }
}

/// What an exit head said about a batch.
#[derive(Debug, Clone)]
pub struct ExitOutput {
    /// Index into `model.exits`.
    pub exit: usize,
    /// `[batch, classes]` logits.
    pub logits: Tensor,
    /// Per-sample confidence, entropy and argmax.
    pub stats: Vec<ExitStat>,
}

/// The result of running a plan on a batch.
#[derive(Debug, Clone)]
pub struct PlanOutput {
    /// The output of the last block of the range (`[batch, ...]`; logits if the range ends the model).
    pub output: Tensor,
    /// Exit heads attached inside the range, in block order.
    pub exits: Vec<ExitOutput>,
    /// Statistics of the final logits when the range ends the model.
    pub final_stats: Option<Vec<ExitStat>>,
    /// Device time of the plan's dispatches in seconds, from GPU timestamps around its compute
    /// pass (no upload, submit or readback); `None` on the CPU backend and on adapters without
    /// `TIMESTAMP_QUERY`.
    pub device_seconds: Option<f64>,
    /// The output in the plan's output encoding, ready for the wire (plans compiled with
    /// [`PlanIo::output`]).
    pub encoded: Option<Encoded>,
}

/// Who answered a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An exit head (index into `model.exits`) was confident enough.
    Exit {
        /// Exit index.
        exit: usize,
        /// Predicted class.
        class: u32,
    },
    /// The final classifier (the range ends the model).
    Final {
        /// Predicted class.
        class: u32,
    },
    /// No exit was confident and the range stops before the end: the rest must run elsewhere.
    Continue,
}

impl Answer {
    /// The predicted class, if the sample was answered.
    pub fn class(self) -> Option<u32> {
        match self {
            Answer::Exit { class, .. } | Answer::Final { class } => Some(class),
            Answer::Continue => None,
        }
    }
}

impl PlanOutput {
    /// Per-sample answers: the first exit whose confidence is strictly above `threshold`
    /// answers; otherwise the final classifier if present. `threshold >= 1.0` never exits;
    /// `threshold < 1/classes` always exits at the first head.
    pub fn answers(&self, threshold: f32) -> Vec<Answer> {
        (0..self.output.batch())
            .map(|i| {
                for e in &self.exits {
                    let s = e.stats[i];
                    if s.confidence > threshold {
                        return Answer::Exit {
                            exit: e.exit,
                            class: s.argmax,
                        };
                    }
                }
                match &self.final_stats {
                    Some(f) => Answer::Final { class: f[i].argmax },
                    None => Answer::Continue,
                }
            })
            .collect()
    }
}

/// A block range of a model compiled once for a backend, run many times.
pub struct Plan {
    model: Arc<Model>,
    range: Range<usize>,
    capacity: usize,
    exits: Vec<usize>,
    io: PlanIo,
    exec: Exec,
}

enum Exec {
    Cpu(cpu::CpuPrepared),
    Gpu(Box<gpu::GpuPlan>),
}

impl Plan {
    /// Compiles blocks `range` of `model` for `backend`, for batches of up to `batch` samples.
    /// On the GPU: uploads weights, allocates activation buffers and builds every dispatch.
    pub fn compile(
        model: &Arc<Model>,
        range: Range<usize>,
        backend: &Backend,
        batch: usize,
    ) -> Result<Self, EngineError> {
        Self::compile_with(model, range, backend, batch, PlanIo::default())
    }

    /// [`Plan::compile`] with the split tensor's encodings inside the plan: `io.input` adds a
    /// decode as the first step, `io.output` an encode as the last; on the GPU their buffers and
    /// dispatches are made here, like the others.
    pub fn compile_with(
        model: &Arc<Model>,
        range: Range<usize>,
        backend: &Backend,
        batch: usize,
        io: PlanIo,
    ) -> Result<Self, EngineError> {
        let blocks = model.blocks.len();
        if range.start >= range.end || range.end > blocks {
            return Err(EngineError::BadRange {
                start: range.start,
                end: range.end,
                blocks,
            });
        }
        if batch == 0 {
            return Err(EngineError::BatchTooLarge {
                got: 0,
                capacity: 0,
            });
        }
        let exits: Vec<usize> = model
            .exits
            .iter()
            .enumerate()
            .filter(|(_, e)| range.contains(&e.after_block))
            .map(|(i, _)| i)
            .collect();
        let exec = match backend {
            Backend::Cpu => Exec::Cpu(cpu::CpuPrepared::new(model, range.clone(), &exits, batch)),
            Backend::Gpu(ctx) => Exec::Gpu(Box::new(gpu::GpuPlan::compile(
                ctx.clone(),
                model,
                range.clone(),
                &exits,
                batch,
                io,
            )?)),
        };
        Ok(Self {
            model: model.clone(),
            range,
            capacity: batch,
            exits,
            io,
            exec,
        })
    }

    /// The block range.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Largest batch this plan accepts.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The model.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The encodings compiled into the plan.
    pub fn io(&self) -> PlanIo {
        self.io
    }

    /// Activation buffers the plan allocated (0 on the CPU backend): two for a plain chain,
    /// more while residual inputs, saved tensors or exit inputs must stay live.
    pub fn activation_buffers(&self) -> usize {
        match &self.exec {
            Exec::Cpu(_) => 0,
            Exec::Gpu(g) => g.activation_buffers(),
        }
    }

    /// Labels of the GPU dispatches in encoding order (`fc1.fanin.fanin_vec4`, …), naming the
    /// kernel each step uses; empty on the CPU backend.
    pub fn kernel_labels(&self) -> Vec<String> {
        match &self.exec {
            Exec::Cpu(_) => Vec::new(),
            Exec::Gpu(g) => g.kernel_labels(),
        }
    }

    /// Per-sample input shape of the range.
    pub fn input_shape(&self) -> &[usize] {
        self.model.shape_at(self.range.start)
    }

    /// The input's per-sample shape and batch size against the plan's.
    fn check_input(&self, input: &Tensor) -> Result<(), EngineError> {
        input
            .check_sample_shape(self.input_shape())
            .map_err(|source| EngineError::Shape {
                range: self.range.clone(),
                source,
            })?;
        self.check_batch(input.batch())
    }

    /// Runs the range on a batch of `[n, input_shape...]` with `1 <= n <= capacity`.
    pub fn run(&self, input: &Tensor) -> Result<PlanOutput, EngineError> {
        self.check_input(input)?;
        match &self.exec {
            Exec::Cpu(p) => Ok(self.cpu(p).run(input.data(), input.batch())),
            Exec::Gpu(g) => g.run(input),
        }
    }

    /// [`Self::run`], adding each step's time to `times` under its op kind (the per-op
    /// profile). On a GPU every dispatch then gets its own submission and wait, keyed by its
    /// kernel (`conv1x1_vec4_c8`, ...), before one ordinary run produces the output.
    pub fn run_profiled(
        &self,
        input: &Tensor,
        times: &mut OpTimes,
    ) -> Result<PlanOutput, EngineError> {
        self.check_input(input)?;
        match &self.exec {
            Exec::Cpu(p) => Ok(self.cpu(p).run_profiled(input.data(), input.batch(), times)),
            Exec::Gpu(g) => g.run_profiled(input, times),
        }
    }

    /// Runs received split tensors as one batch (a server's batch of requests, each with its
    /// own INT8 scale and zero point): the plan's first step decodes them. Every part must be
    /// in the plan's input encoding and of its per-sample shape.
    pub fn run_encoded(&self, parts: &[&Encoded]) -> Result<PlanOutput, EngineError> {
        let mut n = 0;
        for p in parts {
            if self.io.input != Some(p.encoding) {
                return Err(EngineError::EncodingMismatch {
                    range: self.range.clone(),
                    expected: self.io.input.map_or("plain f32".into(), |e| e.to_string()),
                    got: p.encoding,
                });
            }
            let expected = p.len() * p.encoding.bytes_per_value();
            if p.bytes.len() != expected {
                return Err(EncodingError::Length {
                    encoding: p.encoding.datatype(),
                    shape: p.shape.clone(),
                    expected,
                    got: p.bytes.len(),
                }
                .into());
            }
            if p.encoding == Encoding::Int8 && p.int8.is_none() {
                return Err(EncodingError::MissingInt8Params.into());
            }
            let sample = self.input_shape();
            if p.shape.len() != sample.len() + 1 || &p.shape[1..] != sample {
                let mut expected = vec![p.shape.first().copied().unwrap_or(0)];
                expected.extend_from_slice(sample);
                return Err(EngineError::Shape {
                    range: self.range.clone(),
                    source: TensorError::ShapeMismatch {
                        expected,
                        actual: p.shape.clone(),
                    },
                });
            }
            n += p.shape[0];
        }
        self.check_batch(n)?;
        match &self.exec {
            Exec::Cpu(p) => self.cpu(p).run_encoded(parts),
            Exec::Gpu(g) => g.run_encoded(parts, n),
        }
    }

    fn check_batch(&self, n: usize) -> Result<(), EngineError> {
        if n == 0 || n > self.capacity {
            return Err(EngineError::BatchTooLarge {
                got: n,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn cpu<'p>(&'p self, prepared: &'p cpu::CpuPrepared) -> cpu::CpuPlan<'p> {
        cpu::CpuPlan {
            model: &self.model,
            prepared,
            range: self.range.clone(),
            exits: &self.exits,
            output: self.io.output,
        }
    }
}

/// Runs `model` on a batch-first `input` and returns its output: in one plan, or with
/// `cut = Some(k)` as the head `0..=k` then the tail `k+1..` in two plans, as a split runs,
/// so a split can be checked against the whole model.
pub fn infer(
    model: &Arc<Model>,
    backend: &Backend,
    input: &Tensor,
    cut: Option<usize>,
) -> Result<Tensor, EngineError> {
    let n = model.blocks.len();
    let batch = input.batch();
    match cut {
        None => Ok(Plan::compile(model, 0..n, backend, batch)?
            .run(input)?
            .output),
        Some(k) if k + 1 < n => {
            let head = Plan::compile(model, 0..k + 1, backend, batch)?.run(input)?;
            Ok(Plan::compile(model, k + 1..n, backend, batch)?
                .run(&head.output)?
                .output)
        }
        Some(k) => Err(EngineError::BadRange {
            start: k + 1,
            end: n,
            blocks: n,
        }),
    }
}
