//! The GPU training backend: forward with the inference kernels (`kernels::step`, run without
//! the fused activation so the pre-activation is kept), loss on the host from the read-back
//! logits (a few values per sample), backward with `shaders/train/*.wgsl` and optimizer steps
//! in place. Parameters live in GPU buffers (`[w | b | m | v]` per layer) for the whole run and
//! are read back by [`GpuNet::sync`].

use super::backward as bw;
use super::gpu as tg;
use super::net::{params, params_mut, step_at, step_at_mut, step_refs, StepRef};
use super::spec::OptimizerSpec;
use crate::cpu;
use crate::gpu::kernels::{self, Kernel, OpWeights};
use crate::gpu::{read_back, read_buffer, staging, storage, upload, GpuContext, GpuError, Shader};
use crate::model::{Activation, FanIn, Model, Op, Step};
use std::sync::Arc;

struct Param {
    /// Weight values, then bias values (`len` in all).
    len_w: usize,
    len: usize,
    /// `[w | b | m | v]`, `len` each plane.
    state: wgpu::Buffer,
    /// A copy of the bias plane (the forward kernels bind weights and bias separately).
    bias: wgpu::Buffer,
    /// `[dw | db]`.
    grad: wgpu::Buffer,
    weights: OpWeights,
    fanin_t: Option<FanInT>,
}

struct FanInT {
    op: FanIn,
    positions: wgpu::Buffer,
    gathered: wgpu::Buffer,
    weights: OpWeights,
    len: usize,
}

struct NetStep {
    label: String,
    /// The step with its fused activation removed and weights dropped (shapes only).
    lin: Step,
    act: Activation,
    input: wgpu::Buffer,
    pre: Option<wgpu::Buffer>,
    out: wgpu::Buffer,
    dout: wgpu::Buffer,
    dz: Option<wgpu::Buffer>,
    din: wgpu::Buffer,
    param: Option<Param>,
    in_elems: usize,
    out_elems: usize,
}

/// What one GPU training step reports.
pub struct GpuStep {
    /// Weighted loss.
    pub loss: f32,
    /// Correct answers of the final classifier.
    pub final_correct: usize,
    /// The head whose logits are not finite, if any.
    pub non_finite_at: Option<String>,
}

/// The GPU trainer: buffers for a batch capacity, parameters and optimizer state on the GPU.
pub struct GpuNet {
    ctx: Arc<GpuContext>,
    cap: usize,
    classes: usize,
    refs: Vec<StepRef>,
    steps: Vec<NetStep>,
    /// Step indices of the main path, in order.
    main: Vec<usize>,
    /// Per exit head, its step indices.
    exits: Vec<Vec<usize>>,
    /// Junctions: producer step -> the consumers' own input-gradient buffers to sum.
    joins: Vec<(usize, Vec<wgpu::Buffer>)>,
    input: wgpu::Buffer,
    dummy: wgpu::Buffer,
    /// The dispatches of one step, recorded once per batch size and reused: only the
    /// optimizer kernels' parameters change between steps.
    recorded: Option<Recorded>,
}

/// A training step's dispatches for batches of `n`.
struct Recorded {
    n: usize,
    fwd: Vec<Kernel>,
    bwd: Vec<Kernel>,
    /// `(index in bwd, parameter count)` of every optimizer kernel.
    optim: Vec<(usize, usize)>,
}

fn unsupported(what: String) -> GpuError {
    GpuError::Failed {
        context: "GPU training".into(),
        reason: what,
    }
}

impl Param {
    /// Uploads a layer's weights `w` and bias `b` with zeroed optimizer state and gradients;
    /// a fan-in layer also gets its transposed pattern for the input gradient.
    fn upload(
        ctx: &GpuContext,
        label: &str,
        op: &Op,
        w: &[f32],
        b: &[f32],
    ) -> Result<Self, GpuError> {
        let len = w.len() + b.len();
        let mut init: Vec<f32> = w.iter().chain(b).copied().collect();
        init.resize(3 * len, 0.0);
        let state = upload(ctx, &format!("train.{label}.state"), &init)?;
        let bias = upload(ctx, &format!("train.{label}.bias"), b)?;
        let grad = storage(ctx, &format!("train.{label}.grad"), (len * 4) as u64)?;
        let (indices, fanin_t) = match op {
            Op::FanIn(f) => {
                let (idx, t) = FanInT::upload(ctx, label, f)?;
                (Some(idx), Some(t))
            }
            _ => (None, None),
        };
        Ok(Param {
            len_w: w.len(),
            len,
            weights: OpWeights::from_buffers(state.clone(), bias.clone(), indices),
            state,
            bias,
            grad,
            fanin_t,
        })
    }
}

impl FanInT {
    /// Uploads a fan-in layer's indices and the transposed (fan-out) pattern whose kernel
    /// computes its input gradient; returns the forward indices buffer too.
    fn upload(ctx: &GpuContext, label: &str, f: &FanIn) -> Result<(wgpu::Buffer, Self), GpuError> {
        let idx = upload(ctx, &format!("train.{label}.indices"), &f.indices)?;
        let back = bw::FanInBackward::new(f).ok_or_else(|| {
            unsupported(format!(
                "GPU training of '{label}': the fan-in pattern has a non-uniform out-degree"
            ))
        })?;
        let t = &back.transposed;
        let tl = t.indices.len();
        let positions = upload(ctx, &format!("train.{label}.positions"), &back.positions)?;
        let gathered = storage(ctx, &format!("train.{label}.gathered"), (tl * 4) as u64)?;
        let zeros = storage(ctx, &format!("train.{label}.zeros"), (t.outputs * 4) as u64)?;
        let tidx = upload(ctx, &format!("train.{label}.tindices"), &t.indices)?;
        let op = FanIn {
            inputs: t.inputs,
            outputs: t.outputs,
            k: t.k,
            indices: Vec::new(),
            weights: Vec::new(),
            bias: Vec::new(),
            activation: Activation::None,
        };
        Ok((
            idx,
            FanInT {
                op,
                positions,
                weights: OpWeights::from_buffers(gathered.clone(), zeros, Some(tidx)),
                gathered,
                len: tl,
            },
        ))
    }
}

/// How the steps connect: the producer of each step's input (`None`: the model input), the
/// main path and each exit head's steps, as indices into the step list.
struct Topology {
    srcs: Vec<Option<usize>>,
    main: Vec<usize>,
    exits: Vec<Vec<usize>>,
}

impl Topology {
    fn new(model: &Model, refs: &[StepRef]) -> Self {
        let pos = |r: StepRef| refs.iter().position(|&x| x == r).unwrap_or(0);
        // Producer of each step's input.
        let mut srcs: Vec<Option<usize>> = vec![None; refs.len()];
        let mut main = Vec::new();
        let mut exits = vec![Vec::new(); model.exits.len()];
        let mut prev: Option<usize> = None;
        let mut block_end: Vec<Option<usize>> = vec![None; model.blocks.len()];
        for (b, block) in model.blocks.iter().enumerate() {
            for s in 0..block.steps.len() {
                let i = pos(StepRef {
                    exit: None,
                    block: b,
                    step: s,
                });
                srcs[i] = prev;
                prev = Some(i);
                main.push(i);
            }
            block_end[b] = prev;
        }
        for (e, exit) in model.exits.iter().enumerate() {
            let mut p = block_end[exit.after_block];
            for s in 0..exit.steps.len() {
                let i = pos(StepRef {
                    exit: Some(e),
                    block: 0,
                    step: s,
                });
                srcs[i] = p;
                p = Some(i);
                exits[e].push(i);
            }
        }
        Self { srcs, main, exits }
    }
}

impl GpuNet {
    /// Uploads `model`'s parameters and allocates buffers for batches of up to `cap` samples.
    pub fn new(ctx: Arc<GpuContext>, model: &Model, cap: usize) -> Result<Self, GpuError> {
        let refs = step_refs(model);
        let cap = cap.max(1);
        let Topology { srcs, main, exits } = Topology::new(model, &refs);
        let mut consumers = vec![0usize; refs.len()];
        for p in srcs.iter().flatten() {
            consumers[*p] += 1;
        }
        if let Some(i) = consumers.iter().position(|&c| c > 2) {
            return Err(unsupported(format!(
                "GPU training of '{}': more than one exit head after the same block",
                step_at(model, refs[i]).label
            )));
        }
        let input = storage(
            ctx.as_ref(),
            "train.input",
            (cap * model.input_elems() * 4) as u64,
        )?;
        let dummy = storage(ctx.as_ref(), "train.dummy", 16)?;
        let mut steps: Vec<NetStep> = Vec::with_capacity(refs.len());
        let mut join_bufs: Vec<Vec<wgpu::Buffer>> = vec![Vec::new(); refs.len()];
        for (i, &r) in refs.iter().enumerate() {
            let step = step_at(model, r);
            let label = step.label.clone();
            let in_elems: usize = step.input_shape.iter().product();
            let out_elems: usize = step.output_shape.iter().product();
            let buf = |what: &str, elems: usize| {
                storage(
                    ctx.as_ref(),
                    &format!("train.{label}.{what}"),
                    (cap * elems * 4) as u64,
                )
            };
            let src = srcs[i];
            let input_buf = match src {
                Some(p) => steps[p].out.clone(),
                None => input.clone(),
            };
            let din = match src {
                Some(p) if consumers[p] == 1 => steps[p].dout.clone(),
                Some(p) => {
                    let b = buf("din", in_elems)?;
                    join_bufs[p].push(b.clone());
                    b
                }
                None => buf("din", in_elems)?,
            };
            let mut lin = step.clone();
            let act = match &mut lin.op {
                Op::Conv2d(c) => std::mem::replace(&mut c.activation, Activation::None),
                Op::Dense(d) => std::mem::replace(&mut d.activation, Activation::None),
                Op::FanIn(f) => std::mem::replace(&mut f.activation, Activation::None),
                Op::Binary(_)
                | Op::Concat(_)
                | Op::Transpose { .. }
                | Op::Pad { .. }
                | Op::Lrn(_)
                | Op::Softmax { .. } => {
                    return Err(unsupported(format!(
                        "GPU training of '{label}': {} is not trainable",
                        step.op.kind_name()
                    )))
                }
                Op::Activation(a) if !a.is_trainable() => {
                    return Err(unsupported(format!(
                        "GPU training of '{label}': activation {a:?} is not trainable"
                    )))
                }
                _ => Activation::None,
            };
            if !act.is_trainable() || step.from.is_some() {
                return Err(unsupported(format!(
                    "GPU training of '{label}': a fused {act:?} or an input from another op (\"from\") is not trainable"
                )));
            }
            let (pre, dz) = if act != Activation::None {
                (Some(buf("pre", out_elems)?), Some(buf("dz", out_elems)?))
            } else {
                (None, None)
            };
            let (out, dout) = if matches!(step.op, Op::Flatten) {
                (input_buf.clone(), din.clone())
            } else {
                (buf("out", out_elems)?, buf("dout", out_elems)?)
            };
            let param = match params(&step.op) {
                None => None,
                Some((w, b)) => Some(Param::upload(ctx.as_ref(), &label, &step.op, w, b)?),
            };
            // Drop the weights of the shape-only copy.
            if let Some((w, b)) = params_mut(&mut lin.op) {
                *w = Vec::new();
                *b = Vec::new();
            }
            steps.push(NetStep {
                label,
                lin,
                act,
                input: input_buf,
                pre,
                out,
                dout,
                dz,
                din,
                param,
                in_elems,
                out_elems,
            });
        }
        let joins = join_bufs
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Ok(Self {
            ctx,
            cap,
            classes: model.classes(),
            refs,
            steps,
            main,
            exits,
            joins,
            input,
            dummy,
            recorded: None,
        })
    }

    /// Batch capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn forward_kernels(&self, i: usize, n: usize) -> Result<Vec<Kernel>, GpuError> {
        let ctx = self.ctx.as_ref();
        let s = &self.steps[i];
        let mut ks = Vec::new();
        let lin_out = s.pre.as_ref().unwrap_or(&s.out);
        ks.extend(kernels::step(
            ctx,
            &s.lin,
            n,
            s.param.as_ref().map(|p| &p.weights),
            &s.input,
            &[],
            lin_out,
        )?);
        if let Some(pre) = &s.pre {
            ks.push(kernels::elementwise(
                ctx,
                &s.label,
                "activation",
                n * s.out_elems,
                1,
                s.act,
                pre,
                pre,
                &s.out,
            )?);
        }
        Ok(ks)
    }

    fn backward_kernels(
        &self,
        i: usize,
        n: usize,
        want_dx: bool,
        optim: (OptimizerSpec, f32, u32),
    ) -> Result<Vec<Kernel>, GpuError> {
        let ctx = self.ctx.as_ref();
        let s = &self.steps[i];
        let label = format!("train.{}", s.label);
        let mut ks = Vec::new();
        let g = match (&s.pre, &s.dz) {
            (Some(pre), Some(dz)) => {
                let len = n * s.out_elems;
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainBackward,
                    &label,
                    "activation_grad",
                    &tg::grad_params(0, 0, 0, 0, s.act, len),
                    [pre, &s.dout, &self.dummy],
                    dz,
                    len,
                )?);
                dz
            }
            _ => &s.dout,
        };
        let shape = &s.lin.input_shape;
        match &s.lin.op {
            Op::Dense(_) | Op::FanIn(_) | Op::Conv2d(_) => {
                ks.extend(self.layer_grad_kernels(s, &label, g, n, want_dx)?);
            }
            Op::Pool(pool) if want_dx => {
                let planes = n * shape[0];
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainConv,
                    &label,
                    "pool_grad",
                    &tg::pool_params(pool, planes, (shape[1], shape[2])),
                    [&s.input, &s.dout, &self.dummy],
                    &s.din,
                    n * s.in_elems,
                )?);
            }
            Op::GlobalAvgPool if want_dx => {
                let hw = shape[1] * shape[2];
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainConv,
                    &label,
                    "global_avgpool_grad",
                    &tg::global_avgpool_params(n * shape[0], hw),
                    [&self.dummy, &s.dout, &self.dummy],
                    &s.din,
                    n * s.in_elems,
                )?);
            }
            Op::Activation(a) if want_dx => {
                let len = n * s.in_elems;
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainBackward,
                    &label,
                    "activation_grad",
                    &tg::grad_params(0, 0, 0, 0, *a, len),
                    [&s.input, &s.dout, &self.dummy],
                    &s.din,
                    len,
                )?);
            }
            _ => {}
        }
        if let Some(p) = &s.param {
            let (opt, lr, t) = optim;
            ks.push(tg::optim_kernel(
                ctx,
                &label,
                tg::optim_params(opt, lr, t, p.len),
                &p.grad,
                &p.state,
            )?);
        }
        Ok(ks)
    }

    /// Gradient dispatches of a parametrised layer (dense, fan-in, conv) given `g`, the
    /// gradient at its pre-activation: weight and bias gradients, and the input gradient
    /// when `want_dx`.
    fn layer_grad_kernels(
        &self,
        s: &NetStep,
        label: &str,
        g: &wgpu::Buffer,
        n: usize,
        want_dx: bool,
    ) -> Result<Vec<Kernel>, GpuError> {
        let ctx = self.ctx.as_ref();
        let shape = &s.lin.input_shape;
        let mut ks = Vec::new();
        match &s.lin.op {
            Op::Dense(d) => {
                let p = s.param.as_ref().expect("dense has parameters");
                let gp = tg::grad_params(n, d.inputs, d.outputs, 0, Activation::None, 0);
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainBackward,
                    label,
                    "dense_grad_weight",
                    &gp,
                    [&s.input, g, &self.dummy],
                    &p.grad,
                    p.len,
                )?);
                if want_dx {
                    ks.push(tg::train_kernel(
                        ctx,
                        Shader::TrainBackward,
                        label,
                        "dense_grad_input",
                        &gp,
                        [&self.dummy, g, &p.state],
                        &s.din,
                        n * d.inputs,
                    )?);
                }
            }
            Op::FanIn(f) => {
                let p = s.param.as_ref().expect("fan-in has parameters");
                let idx = p.weights_indices();
                let gp = tg::grad_params(n, f.inputs, f.outputs, f.k, Activation::None, 0);
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainBackward,
                    label,
                    "fanin_grad_weight",
                    &gp,
                    [&s.input, g, idx],
                    &p.grad,
                    p.len,
                )?);
                if want_dx {
                    let t = p.fanin_t.as_ref().expect("fan-in layers have a transpose");
                    let mut gather = tg::global_avgpool_params(t.len, 1);
                    gather.batch = t.len as u32;
                    ks.push(tg::train_kernel(
                        ctx,
                        Shader::TrainConv,
                        label,
                        "gather",
                        &gather,
                        [&p.state, &self.dummy, &t.positions],
                        &t.gathered,
                        t.len,
                    )?);
                    ks.push(kernels::fanin(
                        ctx,
                        &format!("{label}.grad_input"),
                        &t.op,
                        n,
                        &t.weights,
                        g,
                        &s.din,
                    )?);
                }
            }
            Op::Conv2d(c) => {
                let p = s.param.as_ref().expect("conv has parameters");
                let cp = tg::conv_params(c, n, (shape[1], shape[2]));
                ks.push(tg::train_kernel(
                    ctx,
                    Shader::TrainConv,
                    label,
                    "conv_grad_weight",
                    &cp,
                    [&s.input, g, &self.dummy],
                    &p.grad,
                    p.len,
                )?);
                if want_dx {
                    ks.push(tg::train_kernel(
                        ctx,
                        Shader::TrainConv,
                        label,
                        "conv_grad_input",
                        &cp,
                        [&self.dummy, g, &p.state],
                        &s.din,
                        n * s.in_elems,
                    )?);
                }
            }
            _ => {}
        }
        Ok(ks)
    }

    /// Records the forward, backward and optimizer dispatches of a step on `n` samples.
    fn record(&self, n: usize, optim: (OptimizerSpec, f32, u32)) -> Result<Recorded, GpuError> {
        let ctx = self.ctx.as_ref();
        let mut fwd = Vec::new();
        for &i in self.main.iter().chain(self.exits.iter().flatten()) {
            fwd.extend(self.forward_kernels(i, n)?);
        }
        // Backward and optimizer: exit heads, then the main path (junctions summed first).
        let mut bwd = Vec::new();
        let mut optim_at = Vec::new();
        let mut push = |bwd: &mut Vec<Kernel>, i: usize, ks: Vec<Kernel>| {
            bwd.extend(ks);
            if let Some(p) = &self.steps[i].param {
                // backward_kernels ends with the layer's optimizer kernel.
                optim_at.push((bwd.len() - 1, p.len));
            }
        };
        for e in &self.exits {
            for &i in e.iter().rev() {
                let ks = self.backward_kernels(i, n, true, optim)?;
                push(&mut bwd, i, ks);
            }
        }
        for (pos, &i) in self.main.iter().enumerate().rev() {
            if let Some((_, bufs)) = self.joins.iter().find(|(p, _)| *p == i) {
                // The main consumer wrote its input gradient into its own buffer too.
                let s = &self.steps[i];
                let len = n * s.out_elems;
                let a = &bufs[0];
                let b = bufs.get(1).unwrap_or(&self.dummy);
                bwd.push(kernels::elementwise(
                    ctx,
                    &format!("train.{}.join", s.label),
                    "add",
                    len,
                    1,
                    Activation::None,
                    a,
                    b,
                    &s.dout,
                )?);
            }
            let ks = self.backward_kernels(i, n, pos > 0, optim)?;
            push(&mut bwd, i, ks);
        }
        Ok(Recorded {
            n,
            fwd,
            bwd,
            optim: optim_at,
        })
    }

    /// One training step on `x` (`n = labels.len()` samples): forward, host loss, backward
    /// and optimizer update on the GPU. `weights` are the head loss weights (exits, then final).
    #[allow(clippy::too_many_arguments)] // one optimizer step's inputs
    pub fn step(
        &mut self,
        x: &[f32],
        labels: &[u8],
        weights: &[f32],
        opt: OptimizerSpec,
        lr: f32,
        t: u32,
    ) -> Result<GpuStep, GpuError> {
        let ctx = self.ctx.as_ref();
        let n = labels.len();
        if n > self.cap {
            return Err(unsupported(format!(
                "GPU training batch of {n} exceeds the capacity {}",
                self.cap
            )));
        }
        ctx.queue
            .write_buffer(&self.input, 0, bytemuck::cast_slice(x));
        if self.recorded.as_ref().is_none_or(|r| r.n != n) {
            self.recorded = Some(self.record(n, (opt, lr, t))?);
        }
        let Some(rec) = &self.recorded else {
            unreachable!("recorded just above")
        };
        for &(k, len) in &rec.optim {
            rec.bwd[k].write_params(&ctx.queue, &tg::optim_params(opt, lr, t, len).1);
        }
        let mut heads: Vec<usize> = self
            .exits
            .iter()
            .filter_map(|e| e.last().copied())
            .collect();
        heads.extend(self.main.last().copied());
        let per = n * self.classes;
        let stages: Vec<wgpu::Buffer> = heads
            .iter()
            .map(|&h| {
                staging(
                    ctx,
                    &format!("train.{}.logits", self.steps[h].label),
                    (per * 4) as u64,
                )
            })
            .collect();
        let mut enc = kernels::encode_pass(ctx, "train.forward", &rec.fwd);
        for (&h, st) in heads.iter().zip(&stages) {
            enc.copy_buffer_to_buffer(
                &self.steps[h].out,
                0,
                st,
                0,
                crate::gpu::padded((per * 4) as u64),
            );
        }
        ctx.queue.submit([enc.finish()]);
        // Loss on the host.
        let mut loss = 0.0f32;
        let mut final_correct = 0;
        let mut non_finite_at = None;
        for (hi, (&h, st)) in heads.iter().zip(&stages).enumerate() {
            let mut logits = read_back(ctx, st, per)?;
            logits.truncate(per);
            if non_finite_at.is_none() && logits.iter().any(|v| !v.is_finite()) {
                non_finite_at = Some(self.steps[h].label.clone());
            }
            let (l, g) = bw::softmax_cross_entropy(&logits, labels, self.classes);
            loss += weights[hi] * l;
            if hi == heads.len() - 1 {
                final_correct = cpu::exit_stats(&logits, self.classes)
                    .iter()
                    .zip(labels)
                    .filter(|(s, &l)| s.argmax == l as u32)
                    .count();
            }
            let g: Vec<f32> = g.into_iter().map(|v| v * weights[hi]).collect();
            ctx.queue
                .write_buffer(&self.steps[h].dout, 0, bytemuck::cast_slice(&g));
        }
        if !loss.is_finite() || non_finite_at.is_some() {
            return Ok(GpuStep {
                loss,
                final_correct,
                non_finite_at,
            });
        }
        let mut enc = kernels::encode_pass(ctx, "train.backward", &rec.bwd);
        for s in &self.steps {
            if let Some(p) = &s.param {
                let lb = p.len - p.len_w;
                if lb > 0 {
                    enc.copy_buffer_to_buffer(
                        &p.state,
                        (p.len_w * 4) as u64,
                        &p.bias,
                        0,
                        (lb * 4) as u64,
                    );
                }
            }
        }
        ctx.queue.submit([enc.finish()]);
        Ok(GpuStep {
            loss,
            final_correct,
            non_finite_at,
        })
    }

    /// The layer to blame after the last step of `n` samples diverged: the first step (in
    /// forward order) whose output holds a non-finite value, else the one with the largest
    /// (or a non-finite) weight gradient — as the CPU trainer decides. Reads buffers back, so it
    /// is only called on failure.
    pub fn blame(&self, n: usize) -> Result<Option<String>, GpuError> {
        let ctx = self.ctx.as_ref();
        let order: Vec<&NetStep> = self
            .main
            .iter()
            .chain(self.exits.iter().flatten())
            .map(|&i| &self.steps[i])
            .collect();
        for s in &order {
            let out = read_buffer(ctx, "train.blame.output", &s.out, n * s.out_elems)?;
            if out.iter().any(|v| !v.is_finite()) {
                return Ok(Some(s.label.clone()));
            }
        }
        let grads = order
            .iter()
            .filter_map(|s| s.param.as_ref().map(|p| (s, p)))
            .map(|(s, p)| {
                read_buffer(ctx, "train.blame.grad", &p.grad, p.len_w).map(|g| (s.label.clone(), g))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(super::largest_gradient(grads))
    }

    /// Reads the trained parameters back into `model`.
    pub fn sync(&self, model: &mut Model) -> Result<(), GpuError> {
        let ctx = self.ctx.as_ref();
        for (s, &r) in self.steps.iter().zip(&self.refs) {
            let Some(p) = &s.param else { continue };
            let mut v = read_buffer(ctx, &format!("train.{}.readback", s.label), &p.state, p.len)?;
            let b = v.split_off(p.len_w);
            if let Some((w, bias)) = params_mut(&mut step_at_mut(model, r).op) {
                *w = v;
                *bias = b;
            }
        }
        Ok(())
    }
}

impl Param {
    fn weights_indices(&self) -> &wgpu::Buffer {
        self.weights
            .indices()
            .expect("fan-in weights carry indices")
    }
}
