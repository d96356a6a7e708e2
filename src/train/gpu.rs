//! GPU backward and optimizer kernels (`shaders/train/*.wgsl`), one-shot launchers that upload
//! their inputs, dispatch once and read the result back. Each mirrors a CPU reference in
//! [`super::backward`] / [`super::optim`] and is tested against it. The fan-in input gradient
//! reuses the fan-in *forward* kernel over the transposed pattern with gathered weights.

use super::backward::FanInBackward;
use super::spec::OptimizerSpec;
use crate::gpu::kernels::{self, Kernel, OpWeights};
use crate::gpu::{read_back, staging, storage, upload, GpuContext, GpuError, Shader};
use crate::model::{Activation, Conv2d, FanIn, Op, Pool, PoolKind};
use bytemuck::{Pod, Zeroable};

/// Uniform parameters of `train/backward.wgsl` (WGSL twin: `GradParams`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct GradParams {
    /// Rows in the batch.
    pub batch: u32,
    /// Input features.
    pub inputs: u32,
    /// Output features.
    pub outputs: u32,
    /// Fan-in (fan-in layers).
    pub k: u32,
    /// Activation code.
    pub activation: u32,
    /// Elements (activation_grad).
    pub len: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// Uniform parameters of `train/optim.wgsl` (WGSL twin: `OptimParams`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct OptimParams {
    /// Parameters in the tensor.
    pub len: u32,
    /// Padding.
    pub _pad0: u32,
    /// Learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Adam β1.
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// `1 - β1^t`.
    pub c1: f32,
    /// `1 - β2^t`.
    pub c2: f32,
    /// Padding to 16 bytes.
    pub _pad1: [u32; 3],
}

fn run(
    ctx: &GpuContext,
    kernel: &Kernel,
    out: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    let stage = staging(ctx, &format!("{}.staging", kernel.label), (len * 4) as u64);
    let mut enc = kernels::encode_pass(ctx, &kernel.label, [kernel]);
    enc.copy_buffer_to_buffer(out, 0, &stage, 0, crate::gpu::padded((len * 4) as u64));
    ctx.queue.submit([enc.finish()]);
    let mut v = read_back(ctx, &stage, len)?;
    v.truncate(len);
    Ok(v)
}

/// Uploads three inputs, runs one training entry point and reads its output back (tests and
/// one-off gradients; the training loop records [`train_kernel`]s instead).
fn one_shot<P: Pod>(
    ctx: &GpuContext,
    shader: Shader,
    entry: &'static str,
    p: &P,
    bufs: [&[f32]; 3],
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    let up = |i: usize, d: &[f32]| {
        upload(
            ctx,
            &format!("train.{entry}.{i}"),
            if d.is_empty() { &[0.0] } else { d },
        )
    };
    let (a, b, c) = (up(0, bufs[0])?, up(1, bufs[1])?, up(2, bufs[2])?);
    let out = storage(ctx, &format!("train.{entry}.out"), (len * 4) as u64)?;
    let k = train_kernel(ctx, shader, "train", entry, p, [&a, &b, &c], &out, len)?;
    run(ctx, &k, &out, len)
}

fn grad_kernel(
    ctx: &GpuContext,
    entry: &'static str,
    p: GradParams,
    bufs: [&[f32]; 3],
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    one_shot(ctx, Shader::TrainBackward, entry, &p, bufs, len)
}

fn params(
    batch: usize,
    inputs: usize,
    outputs: usize,
    k: usize,
    act: Activation,
    len: usize,
) -> GradParams {
    GradParams {
        batch: batch as u32,
        inputs: inputs as u32,
        outputs: outputs as u32,
        k: k as u32,
        activation: act.code(),
        len: len as u32,
        _pad: [0; 2],
    }
}

/// `dz = dy · act'(z)` on the GPU.
pub fn activation_grad(
    ctx: &GpuContext,
    act: Activation,
    z: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>, GpuError> {
    grad_kernel(
        ctx,
        "activation_grad",
        params(0, 0, 0, 0, act, z.len()),
        [z, dy, &[]],
        z.len(),
    )
}

/// Dense weight and bias gradients `(dw [outputs, inputs], db [outputs])` on the GPU.
pub fn dense_grad_weight(
    ctx: &GpuContext,
    x: &[f32],
    dz: &[f32],
    n: usize,
    inputs: usize,
    outputs: usize,
) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
    let mut v = grad_kernel(
        ctx,
        "dense_grad_weight",
        params(n, inputs, outputs, 0, Activation::None, 0),
        [x, dz, &[]],
        outputs * inputs + outputs,
    )?;
    let db = v.split_off(outputs * inputs);
    Ok((v, db))
}

/// Dense input gradient `dx [n, inputs]` on the GPU.
pub fn dense_grad_input(
    ctx: &GpuContext,
    dz: &[f32],
    weight: &[f32],
    n: usize,
    inputs: usize,
    outputs: usize,
) -> Result<Vec<f32>, GpuError> {
    grad_kernel(
        ctx,
        "dense_grad_input",
        params(n, inputs, outputs, 0, Activation::None, 0),
        [&[0.0], dz, weight],
        n * inputs,
    )
}

/// Fan-in weight and bias gradients over the ELL pattern on the GPU.
pub fn fanin_grad_weight(
    ctx: &GpuContext,
    f: &FanIn,
    x: &[f32],
    dz: &[f32],
    n: usize,
) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
    let idx: Vec<f32> = f.indices.iter().map(|&i| f32::from_bits(i)).collect();
    let mut v = grad_kernel(
        ctx,
        "fanin_grad_weight",
        params(n, f.inputs, f.outputs, f.k, Activation::None, 0),
        [x, dz, &idx],
        f.outputs * f.k + f.outputs,
    )?;
    let db = v.split_off(f.outputs * f.k);
    Ok((v, db))
}

/// Fan-in input gradient on the GPU: the fan-in forward kernel (`fanin.wgsl`) over the
/// transposed pattern (fixed fan-in = out-degree) with gathered weights and no bias.
pub fn fanin_grad_input(
    ctx: &GpuContext,
    f: &FanIn,
    back: &FanInBackward,
    dz: &[f32],
    n: usize,
) -> Result<Vec<f32>, GpuError> {
    let t = &back.transposed;
    let op = FanIn {
        inputs: t.inputs,
        outputs: t.outputs,
        k: t.k,
        indices: t.indices.clone(),
        weights: back.gather_weights(&f.weights),
        bias: vec![0.0; t.outputs],
        activation: Activation::None,
    };
    let label = "train.fanin_grad_input";
    let w =
        OpWeights::upload(ctx, label, &Op::FanIn(op.clone()))?.expect("fan-in ops carry weights");
    let x = upload(ctx, &format!("{label}.dz"), dz)?;
    let y = storage(ctx, &format!("{label}.dx"), (n * t.outputs * 4) as u64)?;
    let k = kernels::fanin(ctx, label, &op, n, &w, &x, &y)?;
    run(ctx, &k, &y, n * t.outputs)
}

/// New `(weights, first moment, second moment)` after an optimizer step.
pub type OptimOutput = (Vec<f32>, Vec<f32>, Vec<f32>);

/// One optimizer step on the GPU; returns the new `(weights, m, v)`.
#[allow(clippy::too_many_arguments)] // one optimizer step's inputs
pub fn optim_step(
    ctx: &GpuContext,
    opt: OptimizerSpec,
    lr: f32,
    t: u32,
    w: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
) -> Result<OptimOutput, GpuError> {
    let len = w.len();
    let (entry, mut p) = match opt {
        OptimizerSpec::Sgd { momentum } => (
            "sgd_step",
            OptimParams {
                len: len as u32,
                _pad0: 0,
                lr,
                momentum,
                beta1: 0.0,
                beta2: 0.0,
                eps: 1.0,
                c1: 1.0,
                c2: 1.0,
                _pad1: [0; 3],
            },
        ),
        OptimizerSpec::Adam { beta1, beta2, eps } => (
            "adam_step",
            OptimParams {
                len: len as u32,
                _pad0: 0,
                lr,
                momentum: 0.0,
                beta1,
                beta2,
                eps,
                c1: 1.0 - beta1.powi(t as i32),
                c2: 1.0 - beta2.powi(t as i32),
                _pad1: [0; 3],
            },
        ),
    };
    p.len = len as u32;
    let state: Vec<f32> = w.iter().chain(m).chain(v).copied().collect();
    let sbuf = upload(ctx, &format!("train.{entry}.state"), &state)?;
    let gbuf = upload(ctx, &format!("train.{entry}.grad"), g)?;
    let k = Kernel::new(
        ctx,
        format!("train.{entry}"),
        Shader::TrainOptim,
        entry,
        &[],
        &p,
        &[&gbuf],
        &sbuf,
        len as u64,
    )?;
    let mut out = run(ctx, &k, &sbuf, 3 * len)?;
    let v2 = out.split_off(2 * len);
    let m2 = out.split_off(len);
    Ok((out, m2, v2))
}

// ---- Buffer-to-buffer launchers (the GPU training loop records these) ----

/// A training dispatch (`train/backward.wgsl` or `train/conv.wgsl`, whose entry points all
/// read three buffers and write one) over existing buffers, `len` invocations.
#[allow(clippy::too_many_arguments)] // one launcher for every training entry point
pub fn train_kernel<P: Pod>(
    ctx: &GpuContext,
    shader: Shader,
    label: &str,
    entry: &'static str,
    p: &P,
    reads: [&wgpu::Buffer; 3],
    out: &wgpu::Buffer,
    len: usize,
) -> Result<Kernel, GpuError> {
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        shader,
        entry,
        &[],
        p,
        &reads,
        out,
        len as u64,
    )
}

/// Parameters of `train/backward.wgsl` (public twin of the private helper).
pub fn grad_params(
    batch: usize,
    inputs: usize,
    outputs: usize,
    k: usize,
    act: Activation,
    len: usize,
) -> GradParams {
    params(batch, inputs, outputs, k, act, len)
}

/// `ConvParams` in `train/conv.wgsl`: the geometry training supports (one stride, the same
/// padding on every side, no dilation; training specs refuse anything else).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConvParams {
    /// Samples (planes for pooling).
    pub batch: u32,
    /// Input channels.
    pub in_channels: u32,
    /// Input height.
    pub in_h: u32,
    /// Input width.
    pub in_w: u32,
    /// Output channels.
    pub out_channels: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Kernel height.
    pub kernel_h: u32,
    /// Kernel width.
    pub kernel_w: u32,
    /// Stride.
    pub stride: u32,
    /// Padding.
    pub padding: u32,
    /// Groups.
    pub groups: u32,
    /// Activation code (1 for max pooling in `pool_grad`).
    pub activation: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// The forward convolution's parameters for `n` samples of `h × w`.
pub fn conv_params(c: &Conv2d, n: usize, (h, w): (usize, usize)) -> ConvParams {
    let (oh, ow) = c
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let (stride, padding) = c
        .uniform()
        .expect("training specs refuse per-axis strides, asymmetric padding and dilation");
    // The gradients run on the pre-activation values: no fused activation here.
    ConvParams {
        batch: n as u32,
        in_channels: c.in_channels as u32,
        in_h: h as u32,
        in_w: w as u32,
        out_channels: c.out_channels as u32,
        out_h: oh as u32,
        out_w: ow as u32,
        kernel_h: c.kernel_h as u32,
        kernel_w: c.kernel_w as u32,
        stride: stride as u32,
        padding: padding as u32,
        groups: c.groups as u32,
        activation: 0,
        _pad: [0; 3],
    }
}

/// Pooling-gradient parameters over `planes` planes of `h × w` (in the conv layout).
pub fn pool_params(pool: &Pool, planes: usize, (h, w): (usize, usize)) -> ConvParams {
    let (oh, ow) = pool
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let (stride, padding) = pool
        .uniform()
        .expect("training specs refuse per-axis strides, asymmetric padding and ceil_mode");
    ConvParams {
        batch: planes as u32,
        in_channels: 1,
        in_h: h as u32,
        in_w: w as u32,
        out_channels: 1,
        out_h: oh as u32,
        out_w: ow as u32,
        kernel_h: pool.kernel_h as u32,
        kernel_w: pool.kernel_w as u32,
        stride: stride as u32,
        padding: padding as u32,
        groups: 1,
        activation: (pool.kind == PoolKind::Max) as u32,
        _pad: [0; 3],
    }
}

/// Global-average-pooling-gradient parameters over `planes` planes of `hw` cells.
pub fn global_avgpool_params(planes: usize, hw: usize) -> ConvParams {
    ConvParams {
        batch: planes as u32,
        in_channels: 1,
        in_h: hw as u32,
        in_w: 1,
        out_channels: 1,
        out_h: 1,
        out_w: 1,
        kernel_h: 1,
        kernel_w: 1,
        stride: 1,
        padding: 0,
        groups: 1,
        activation: 0,
        _pad: [0; 3],
    }
}

/// Optimizer parameters for step `t` over `len` values.
pub fn optim_params(
    opt: OptimizerSpec,
    lr: f32,
    t: u32,
    len: usize,
) -> (&'static str, OptimParams) {
    let base = OptimParams {
        len: len as u32,
        _pad0: 0,
        lr,
        momentum: 0.0,
        beta1: 0.0,
        beta2: 0.0,
        eps: 1.0,
        c1: 1.0,
        c2: 1.0,
        _pad1: [0; 3],
    };
    match opt {
        OptimizerSpec::Sgd { momentum } => ("sgd_step", OptimParams { momentum, ..base }),
        OptimizerSpec::Adam { beta1, beta2, eps } => (
            "adam_step",
            OptimParams {
                beta1,
                beta2,
                eps,
                c1: 1.0 - beta1.powi(t as i32),
                c2: 1.0 - beta2.powi(t as i32),
                ..base
            },
        ),
    }
}

/// An optimizer dispatch updating `state` (`[w | m | v]`, `len` each) from `grad` in place.
pub fn optim_kernel(
    ctx: &GpuContext,
    label: &str,
    (entry, p): (&'static str, OptimParams),
    grad: &wgpu::Buffer,
    state: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::TrainOptim,
        entry,
        &[],
        &p,
        &[grad],
        state,
        p.len as u64,
    )
}

fn conv_one_shot(
    ctx: &GpuContext,
    entry: &'static str,
    p: ConvParams,
    bufs: [&[f32]; 3],
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    one_shot(ctx, Shader::TrainConv, entry, &p, bufs, len)
}

/// Convolution weight and bias gradients `(dw, db)` on the GPU for `n` samples of `h × w`.
pub fn conv2d_grad_weight(
    ctx: &GpuContext,
    c: &Conv2d,
    x: &[f32],
    dz: &[f32],
    n: usize,
    hw: (usize, usize),
) -> Result<(Vec<f32>, Vec<f32>), GpuError> {
    let wl = c.weight.len();
    let mut v = conv_one_shot(
        ctx,
        "conv_grad_weight",
        conv_params(c, n, hw),
        [x, dz, &[]],
        wl + c.out_channels,
    )?;
    let db = v.split_off(wl);
    Ok((v, db))
}

/// Convolution input gradient `dx [n, in_channels, h, w]` on the GPU.
pub fn conv2d_grad_input(
    ctx: &GpuContext,
    c: &Conv2d,
    dz: &[f32],
    n: usize,
    hw: (usize, usize),
) -> Result<Vec<f32>, GpuError> {
    conv_one_shot(
        ctx,
        "conv_grad_input",
        conv_params(c, n, hw),
        [&[], dz, &c.weight],
        n * c.in_channels * hw.0 * hw.1,
    )
}

/// Pooling input gradient over `planes` planes of `h × w` on the GPU.
pub fn pool_grad(
    ctx: &GpuContext,
    pool: &Pool,
    x: &[f32],
    dy: &[f32],
    planes: usize,
    hw: (usize, usize),
) -> Result<Vec<f32>, GpuError> {
    conv_one_shot(
        ctx,
        "pool_grad",
        pool_params(pool, planes, hw),
        [x, dy, &[]],
        planes * hw.0 * hw.1,
    )
}

/// Global average pooling input gradient on the GPU.
pub fn global_avgpool_grad(
    ctx: &GpuContext,
    dy: &[f32],
    planes: usize,
    hw: usize,
) -> Result<Vec<f32>, GpuError> {
    conv_one_shot(
        ctx,
        "global_avgpool_grad",
        global_avgpool_params(planes, hw),
        [&[], dy, &[]],
        planes * hw,
    )
}
