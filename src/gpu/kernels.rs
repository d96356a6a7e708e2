//! Launchers: one per kernel family. Each turns an op (what to compute, from `model`) and its
//! buffers into a [`Kernel`] (pipeline, bind group, dispatch size) that a plan encodes later.
//! The `Pod` parameter structs are the twins of the WGSL structs of the same names.

use super::{check_storage_size, upload, GpuContext, GpuError, Shader, Tiling};
use crate::encoding::Encoding;
use crate::model::{
    broadcast_shape, broadcast_strides, Activation, Binary, BinaryOp, BinaryOperand, Conv2d, Dense,
    FanIn, Lrn, Op, Pool, PoolKind, Step,
};
use bytemuck::{Pod, Zeroable};
use std::borrow::Cow;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// Workgroup size of every kernel (an override constant, part of the pipeline key).
pub const WORKGROUP: u32 = 64;

/// `DenseParams` in `dense.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct DenseParams {
    /// Rows.
    pub batch: u32,
    /// Input features.
    pub inputs: u32,
    /// Output features.
    pub outputs: u32,
    /// Activation code ([`Activation::code`]).
    pub activation: u32,
    /// First activation parameter ([`Activation::params`]).
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// `FanInParams` in `fanin.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct FanInParams {
    /// Rows.
    pub batch: u32,
    /// Input features.
    pub inputs: u32,
    /// Output features.
    pub outputs: u32,
    /// Inputs per output.
    pub k: u32,
    /// Activation code ([`Activation::code`]).
    pub activation: u32,
    /// First activation parameter ([`Activation::params`]).
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

/// `ConvParams` in `conv2d.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ConvParams {
    /// Samples.
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
    /// Stride along the height.
    pub stride_h: u32,
    /// Stride along the width.
    pub stride_w: u32,
    /// Dilation along the height.
    pub dilation_h: u32,
    /// Dilation along the width.
    pub dilation_w: u32,
    /// Padding above.
    pub pad_top: u32,
    /// Padding on the left.
    pub pad_left: u32,
    /// Groups.
    pub groups: u32,
    /// Activation code ([`Activation::code`]).
    pub activation: u32,
    /// First activation parameter ([`Activation::params`]).
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

impl ConvParams {
    /// The parameters of convolution `c` over `batch` inputs of `h × w` (its fused activation
    /// included).
    pub fn new(c: &Conv2d, batch: usize, (h, w): (usize, usize)) -> Self {
        let (oh, ow) = c
            .output_hw(h, w)
            .expect("shapes were validated when the model was loaded");
        Self {
            batch: batch as u32,
            in_channels: c.in_channels as u32,
            in_h: h as u32,
            in_w: w as u32,
            out_channels: c.out_channels as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            kernel_h: c.kernel_h as u32,
            kernel_w: c.kernel_w as u32,
            stride_h: c.stride.0 as u32,
            stride_w: c.stride.1 as u32,
            dilation_h: c.dilation.0 as u32,
            dilation_w: c.dilation.1 as u32,
            pad_top: c.pads[0] as u32,
            pad_left: c.pads[1] as u32,
            groups: c.groups as u32,
            activation: c.activation.code(),
            act_a: c.activation.params().0,
            act_b: c.activation.params().1,
            _pad: 0,
        }
    }
}

/// `PoolParams` in `pool.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct PoolParams {
    /// `batch · channels`.
    pub planes: u32,
    /// Input height.
    pub in_h: u32,
    /// Input width.
    pub in_w: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Window height.
    pub kernel_h: u32,
    /// Window width.
    pub kernel_w: u32,
    /// Stride along the height.
    pub stride_h: u32,
    /// Stride along the width.
    pub stride_w: u32,
    /// Padding above.
    pub pad_top: u32,
    /// Padding on the left.
    pub pad_left: u32,
    /// Padding below.
    pub pad_bottom: u32,
    /// Padding on the right.
    pub pad_right: u32,
    /// 1 for max, 0 for average.
    pub is_max: u32,
    /// 1 when the average divides by the window cells inside the padded input.
    pub count_include_pad: u32,
}

/// `ElementwiseParams` in `elementwise.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ElementwiseParams {
    /// Output values.
    pub len: u32,
    /// Values per gate entry (`H·W` for a channel gate, 1 otherwise).
    pub inner: u32,
    /// Activation code ([`Activation::code`]).
    pub activation: u32,
    /// Padding.
    pub _pad0: u32,
    /// First activation parameter ([`Activation::params`]).
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// Padding to 16 bytes.
    pub _pad1: [u32; 2],
}

/// `BinaryParams` in `binary.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct BinaryParams {
    /// Output values (all samples).
    pub len: u32,
    /// [`BinaryOp::code`].
    pub op: u32,
    /// Activation code ([`Activation::code`]).
    pub activation: u32,
    /// Output values per sample.
    pub out_sample: u32,
    /// First activation parameter ([`Activation::params`]).
    pub act_a: f32,
    /// Second activation parameter.
    pub act_b: f32,
    /// Values per sample of `a` (0 for a constant).
    pub a_sample: u32,
    /// Values per sample of `b` (0 for a constant).
    pub b_sample: u32,
    /// Per-sample output dimensions, right-aligned, leading 1s.
    pub out_dims: [u32; 4],
    /// Strides of `a` along `out_dims` (0 where broadcast).
    pub a_strides: [u32; 4],
    /// Strides of `b` along `out_dims` (0 where broadcast).
    pub b_strides: [u32; 4],
}

/// Dimensions of the iteration space of `movement.wgsl`.
pub const MOVE_DIMS: usize = 8;

/// `MoveParams` in `movement.wgsl`: a strided copy over an iteration space of up to
/// [`MOVE_DIMS`] dimensions.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct MoveParams {
    /// Values written.
    pub len: u32,
    /// Offset of the first written value in `y`.
    pub y_offset: u32,
    /// Value of cells outside the source.
    pub value: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
    /// Iteration space, outermost first, unused dimensions 1.
    pub dims: [[u32; 4]; 2],
    /// Source extent per dimension.
    pub src_dims: [[u32; 4]; 2],
    /// Leading padding per dimension (source coordinate = coordinate − pad).
    pub pads: [[u32; 4]; 2],
    /// Source strides.
    pub x_strides: [[u32; 4]; 2],
    /// Destination strides.
    pub y_strides: [[u32; 4]; 2],
}

/// One dimension of a strided copy: its size, source extent, leading pad and strides.
#[derive(Debug, Clone, Copy)]
pub struct MoveDim {
    /// Size of the iteration space along this dimension.
    pub size: usize,
    /// Source extent (coordinates past it, after the pad, read as the fill value).
    pub src: usize,
    /// Leading padding.
    pub pad: usize,
    /// Source stride.
    pub x_stride: usize,
    /// Destination stride.
    pub y_stride: usize,
}

impl MoveDim {
    /// A dimension copied one to one.
    pub fn plain(size: usize, x_stride: usize, y_stride: usize) -> Self {
        Self {
            size,
            src: size,
            pad: 0,
            x_stride,
            y_stride,
        }
    }
}

impl MoveParams {
    /// Parameters of a copy over `dims` (outermost first, at most [`MOVE_DIMS`]), writing from
    /// `y_offset` and filling cells outside the source with `value`.
    pub fn new(dims: &[MoveDim], y_offset: usize, value: f32) -> Self {
        assert!(
            dims.len() <= MOVE_DIMS,
            "strided copies have at most {MOVE_DIMS} dimensions"
        );
        let mut p = Self {
            len: dims.iter().map(|d| d.size).product::<usize>() as u32,
            y_offset: y_offset as u32,
            value,
            _pad: 0,
            dims: [[1; 4]; 2],
            src_dims: [[1; 4]; 2],
            pads: [[0; 4]; 2],
            x_strides: [[0; 4]; 2],
            y_strides: [[0; 4]; 2],
        };
        let skip = MOVE_DIMS - dims.len();
        for (i, d) in dims.iter().enumerate() {
            let (v, c) = ((skip + i) / 4, (skip + i) % 4);
            p.dims[v][c] = d.size as u32;
            p.src_dims[v][c] = d.src as u32;
            p.pads[v][c] = d.pad as u32;
            p.x_strides[v][c] = d.x_stride as u32;
            p.y_strides[v][c] = d.y_stride as u32;
        }
        p
    }
}

/// `NormParams` in `normalize.wgsl`: a tensor viewed as `[outer, len, inner]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct NormParams {
    /// Product of the dimensions before the axis (batch included).
    pub outer: u32,
    /// Size of the axis.
    pub len: u32,
    /// Product of the dimensions after the axis.
    pub inner: u32,
    /// LRN window size.
    pub size: u32,
    /// LRN alpha.
    pub alpha: f32,
    /// LRN beta.
    pub beta: f32,
    /// LRN bias.
    pub bias: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

/// `ExitParams` in `exit.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ExitParams {
    /// Samples.
    pub batch: u32,
    /// Classes per sample.
    pub classes: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// `LayoutParams` in `layout.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct LayoutParams {
    /// Rows of the row-major input.
    pub batch: u32,
    /// Features per row.
    pub features: u32,
    /// Quads of 4 rows in the feature-major output.
    pub quads: u32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

/// `CopyParams` in `copy.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct CopyParams {
    /// vec4 elements to copy.
    pub len4: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 3],
}

/// A ready-to-encode dispatch.
pub struct Kernel {
    /// Label (`block3.fc.dense_vec4`).
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    params: wgpu::Buffer,
    workgroups: (u32, u32),
}

impl Kernel {
    /// Builds a dispatch of `invocations` threads of `shader::entry` with the given uniform
    /// parameters, read-only buffers and output buffer, in workgroups of [`WORKGROUP`]
    /// invocations unless `constants` sets `WG`.
    #[allow(clippy::too_many_arguments)] // one call site per kernel family; a struct would only rename them
    pub fn new<P: Pod>(
        ctx: &GpuContext,
        label: String,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        reads: &[&wgpu::Buffer],
        write: &wgpu::Buffer,
        invocations: u64,
    ) -> Result<Self, GpuError> {
        assert_eq!(
            reads.len(),
            shader.read_buffers(),
            "launcher of {} binds the wrong number of buffers",
            shader.file_name()
        );
        let mut all_constants = constants.to_vec();
        let wg = match constants.iter().find(|(name, _)| *name == "WG") {
            Some((_, v)) => *v as u32,
            None => {
                all_constants.insert(0, ("WG", WORKGROUP as f64));
                WORKGROUP
            }
        };
        let pipeline = ctx.pipeline(shader, entry, &all_constants);
        ctx.count_created(2);
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("{label}.params")),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in reads.iter().chain(std::iter::once(&write)).enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &ctx.layout(shader.read_buffers()),
            entries: &entries,
        });
        Ok(Self {
            workgroups: dispatch_size(ctx, &label, invocations, wg)?,
            label,
            pipeline,
            bind_group,
            params: uniform,
        })
    }

    /// Replaces the uniform parameters (same type and size as at creation) before the next
    /// submission, so a recorded kernel can be reused with new values (e.g. the optimizer's
    /// step count).
    pub fn write_params<P: Pod>(&self, queue: &wgpu::Queue, params: &P) {
        queue.write_buffer(&self.params, 0, bytemuck::bytes_of(params));
    }

    /// Records the dispatch into a compute pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups.0, self.workgroups.1, 1);
    }
}

/// A command encoder holding one compute pass that dispatches `kernels` in order; the caller
/// adds copies and submits.
pub fn encode_pass<'k>(
    ctx: &GpuContext,
    label: &str,
    kernels: impl IntoIterator<Item = &'k Kernel>,
) -> wgpu::CommandEncoder {
    let mut enc = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for k in kernels {
            k.encode(&mut pass);
        }
    }
    enc
}

/// Workgroups of `wg` invocations for `invocations` threads, folded into 2-D when one
/// dimension is not enough (kernels rebuild the linear id from `num_workgroups`).
pub fn dispatch_size(
    ctx: &GpuContext,
    what: &str,
    invocations: u64,
    wg: u32,
) -> Result<(u32, u32), GpuError> {
    let groups = invocations.div_ceil(wg as u64).max(1);
    let max = ctx.limits.max_compute_workgroups_per_dimension as u64;
    let x = groups.min(max);
    let y = groups.div_ceil(x);
    if y > max {
        return Err(GpuError::LimitExceeded {
            what: format!("{what} dispatch of {groups} workgroups"),
            needed: y,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max,
        });
    }
    Ok((x as u32, y as u32))
}

/// Weights of a parametrised op, uploaded once.
pub struct OpWeights {
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
    indices: Option<wgpu::Buffer>,
}

impl OpWeights {
    /// Wraps buffers that already hold an op's weights, bias and (fan-in) indices, e.g. the
    /// parameters a training run keeps on the GPU.
    pub fn from_buffers(
        weight: wgpu::Buffer,
        bias: wgpu::Buffer,
        indices: Option<wgpu::Buffer>,
    ) -> Self {
        Self {
            weight,
            bias,
            indices,
        }
    }

    /// The fan-in index buffer, if any.
    pub fn indices(&self) -> Option<&wgpu::Buffer> {
        self.indices.as_ref()
    }

    /// Uploads the weights of `op` (None for ops without parameters).
    pub fn upload(ctx: &GpuContext, label: &str, op: &Op) -> Result<Option<Self>, GpuError> {
        let (w, b, idx) = match op {
            Op::Conv2d(c) => (&c.weight, &c.bias, None),
            Op::Dense(d) => (&d.weight, &d.bias, None),
            Op::FanIn(f) => (&f.weights, &f.bias, Some(&f.indices)),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            weight: upload(ctx, &format!("{label}.weights"), w)?,
            bias: upload(ctx, &format!("{label}.bias"), b)?,
            indices: idx
                .map(|i| upload(ctx, &format!("{label}.indices"), i))
                .transpose()?,
        }))
    }
}

fn rows_tile(batch: usize) -> u32 {
    if batch >= 4 {
        4
    } else {
        1
    }
}

/// Dense layer launcher: `dense_subgroup` from 16 rows on [`Tiling::Subgroup`] (inputs in
/// fours), else the register tiles `dense_vec4_r16` (from 16 rows), `dense_vec4` or
/// `dense_scalar`.
pub fn dense(
    ctx: &GpuContext,
    label: &str,
    d: &Dense,
    batch: usize,
    weights: &OpWeights,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = DenseParams {
        batch: batch as u32,
        inputs: d.inputs as u32,
        outputs: d.outputs as u32,
        activation: d.activation.code(),
        act_a: d.activation.params().0,
        act_b: d.activation.params().1,
        _pad: [0; 2],
    };
    let vec4 = d.inputs.is_multiple_of(4);
    if vec4 && batch >= DENSE_SUBGROUP_MIN_ROWS && ctx.tiling == Tiling::Subgroup {
        let per_block = (d.outputs as u64)
            .div_ceil(DENSE_SUBGROUP_OUTPUTS)
            .div_ceil(SUBGROUP_WORKGROUP);
        let blocks = (batch as u64).div_ceil(SUBGROUP_TILE_ROWS as u64);
        return Kernel::new(
            ctx,
            format!("{label}.dense_subgroup"),
            Shader::DenseSubgroup,
            "dense_subgroup",
            &[
                ("WG", SUBGROUP_WORKGROUP as f64),
                activation_constant(d.activation),
            ],
            &params,
            &[x, &weights.weight, &weights.bias],
            y,
            blocks * per_block * SUBGROUP_WORKGROUP,
        );
    }
    let (entry, rows) = match (vec4, batch) {
        (true, 16..) => ("dense_vec4_r16", 16),
        (true, _) => ("dense_vec4", rows_tile(batch)),
        (false, _) => ("dense_scalar", rows_tile(batch)),
    };
    let inv = (batch as u64).div_ceil(rows as u64) * (d.outputs as u64).div_ceil(4);
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Dense,
        entry,
        &[("ROWS", rows as f64), activation_constant(d.activation)],
        &params,
        &[x, &weights.weight, &weights.bias],
        y,
        inv,
    )
}

/// The uniform parameters and index buffer of a fan-in launch.
fn fanin_binding<'w>(
    f: &FanIn,
    batch: usize,
    weights: &'w OpWeights,
) -> (FanInParams, &'w wgpu::Buffer) {
    let params = FanInParams {
        batch: batch as u32,
        inputs: f.inputs as u32,
        outputs: f.outputs as u32,
        k: f.k as u32,
        activation: f.activation.code(),
        act_a: f.activation.params().0,
        act_b: f.activation.params().1,
        _pad: 0,
    };
    let indices = weights
        .indices
        .as_ref()
        .expect("fan-in weights always carry indices");
    (params, indices)
}

/// Fixed-fan-in layer launcher (row-major activations; also training's forward pass).
pub fn fanin(
    ctx: &GpuContext,
    label: &str,
    f: &FanIn,
    batch: usize,
    weights: &OpWeights,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let rows = rows_tile(batch);
    let group = if f.k.is_multiple_of(4) {
        f.row_group(FANIN_MAX_GROUP)
    } else {
        1
    };
    let (entry, per_invocation) = match (group, f.k.is_multiple_of(4)) {
        (2.., _) => ("fanin_group", group),
        (_, true) => ("fanin_vec4", 4),
        (_, false) => ("fanin_scalar", 4),
    };
    let (params, indices) = fanin_binding(f, batch, weights);
    let inv =
        (batch as u64).div_ceil(rows as u64) * (f.outputs as u64).div_ceil(per_invocation as u64);
    let label = match group {
        2.. => format!("{label}.{entry}_g{group}"),
        _ => format!("{label}.{entry}"),
    };
    Kernel::new(
        ctx,
        label,
        Shader::FanIn,
        entry,
        &[
            ("ROWS", rows as f64),
            ("G", group as f64),
            activation_constant(f.activation),
        ],
        &params,
        &[x, indices, &weights.weight, &weights.bias],
        y,
        inv,
    )
}

/// Smallest batch at which inference runs fan-in layers on feature-major activations
/// (`fanin_fm`); below it a pair of 4-row quads would be mostly padding. On lavapipe `fanin_fm`
/// was already the faster kernel at 8 rows (800 → 100, k = 160), before the input's layout
/// change.
pub const FEATURE_MAJOR_MIN_BATCH: usize = 8;

/// The step as inference runs it. A fan-in layer that reads every input is a dense layer (same
/// weights, no index loads); other fan-in layers get `k` padded to a multiple of 4 with
/// zero-weight taps, so the vec4 kernels always apply. Training keeps the model's own layout.
pub fn lower(step: &Step) -> Cow<'_, Step> {
    let op = match &step.op {
        Op::FanIn(f) if f.is_full() => Op::Dense(f.to_dense()),
        Op::FanIn(f) if !f.k.is_multiple_of(4) => Op::FanIn(f.padded(4)),
        _ => return Cow::Borrowed(step),
    };
    Cow::Owned(Step { op, ..step.clone() })
}

/// True when inference runs this (lowered) step as `fanin_fm` on feature-major input.
pub fn uses_feature_major(step: &Step, batch: usize) -> bool {
    matches!(step.op, Op::FanIn(_)) && batch >= FEATURE_MAJOR_MIN_BATCH
}

/// Bytes of a feature-major copy of `features` per row for `batch` rows.
pub fn feature_major_bytes(features: usize, batch: usize) -> u64 {
    (features * batch.div_ceil(4) * 16) as u64
}

/// Largest group of outputs sharing an index row that `fanin_fm` computes together (its
/// accumulators live in registers).
pub const FANIN_MAX_GROUP: usize = 8;

/// Fan-in on feature-major input (`k % 4 == 0`, see [`lower`]); writes feature-major output
/// when `out_feature_major`, row-major otherwise. Outputs that share an index row (a grouped
/// pattern, [`FanIn::row_group`]) are computed together, each gathered input loaded once.
#[allow(clippy::too_many_arguments)] // the fan-in launcher's arguments plus the output layout
pub fn fanin_fm(
    ctx: &GpuContext,
    label: &str,
    f: &FanIn,
    batch: usize,
    weights: &OpWeights,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    out_feature_major: bool,
) -> Result<Kernel, GpuError> {
    assert!(
        f.k.is_multiple_of(4),
        "fanin_fm needs k % 4 == 0 (lower the step first)"
    );
    let (params, indices) = fanin_binding(f, batch, weights);
    let group = f.row_group(FANIN_MAX_GROUP);
    let pairs = (batch as u64).div_ceil(8);
    Kernel::new(
        ctx,
        format!("{label}.fanin_fm_g{group}"),
        Shader::FanIn,
        "fanin_fm",
        &[
            ("OUT_FM", out_feature_major as u32 as f64),
            ("G", group as f64),
            activation_constant(f.activation),
        ],
        &params,
        &[x, indices, &weights.weight, &weights.bias],
        y,
        pairs * (f.outputs / group) as u64,
    )
}

/// Row-major `[batch, features]` to feature-major (quads of 4 rows per feature).
pub fn to_feature_major(
    ctx: &GpuContext,
    label: &str,
    features: usize,
    batch: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let quads = batch.div_ceil(4);
    let params = LayoutParams {
        batch: batch as u32,
        features: features as u32,
        quads: quads as u32,
        _pad: 0,
    };
    let (entry, per) = if features.is_multiple_of(4) {
        ("to_feature_major_vec4", 4)
    } else {
        ("to_feature_major", 1)
    };
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Layout,
        entry,
        &[],
        &params,
        &[x],
        y,
        (features / per * quads) as u64,
    )
}

/// Most output channels one invocation of `conv1x1` / `conv_tiled` accumulates.
pub const CONV_CHANNEL_TILE: usize = 8;

/// Pixels per `conv1x1` invocation (its register tile is `CO_T` channels x this many pixels).
const CONV1X1_PIXELS: u64 = 8;

/// Rows of a subgroup register tile (`subgroup_tile.wgsl`): output channels of
/// `conv1x1_subgroup`, batch rows of `dense_subgroup`.
const SUBGROUP_TILE_ROWS: usize = 32;

/// Outputs per `dense_subgroup` invocation (the tile's columns).
const DENSE_SUBGROUP_OUTPUTS: u64 = 8;

/// Fewest batch rows `dense_subgroup` takes: half a tile, as for `conv1x1_subgroup`.
const DENSE_SUBGROUP_MIN_ROWS: usize = 16;

/// Fewest output channels `conv1x1_subgroup` takes: half a tile still beats `conv1x1_vec4`
/// (EfficientNet-B0 on lavapipe, `infer --op-times`: its 1x1 layers 203 → 181 ms per image).
const SUBGROUP_MIN_OUT_CHANNELS: usize = 16;

/// Workgroup of the subgroup kernels: one lavapipe subgroup. Each workgroup covers the tiles of
/// one row block, so small planes waste few lanes (16 and 64 measured up to 1.5x slower
/// on 7 x 7 planes at batch 1, no faster on 56 x 56).
const SUBGROUP_WORKGROUP: u64 = 8;

/// Output tile (channels and columns) of one `conv_shared` workgroup of 64 invocations.
const SHARED_TILE: u64 = 32;

/// Output tile side (rows and columns of one plane) of one `depthwise_shared` workgroup.
const DEPTHWISE_SHARED_TILE: u64 = 16;

/// Largest kernel side and stride `depthwise_tiled` handles (its input row span is
/// `7 · stride + kernel <= 21` values and its taps `kernel² <= 49`, held in registers).
const DEPTHWISE_TILED_MAX_KERNEL: usize = 7;
const DEPTHWISE_TILED_MAX_STRIDE: usize = 2;

/// The `ACT` pipeline constant (`activation.wgsl`) that specialises a kernel on `activation`:
/// a compile-time code leaves only its own case of the activation switch.
fn activation_constant(activation: Activation) -> (&'static str, f64) {
    ("ACT", f64::from(activation.code()))
}

/// Channels per invocation for a group of `per_group` output channels: the largest of 8, 4,
/// 2, 1 that divides it, so a tile never straddles two groups.
fn channel_tile(per_group: usize) -> usize {
    [CONV_CHANNEL_TILE, 4, 2, 1]
        .into_iter()
        .find(|t| per_group.is_multiple_of(*t))
        .unwrap_or(1)
}

/// True when `c` is a pointwise convolution that is a plain GEMM per sample: 1x1 kernel,
/// stride 1, no padding, one group.
fn is_gemm(c: &Conv2d) -> bool {
    c.is_pointwise() && c.groups == 1
}

/// True when `depthwise_tiled` handles `c`'s geometry (no dilation, small kernel and stride).
fn depthwise_tiles(c: &Conv2d) -> bool {
    c.is_depthwise()
        && c.dilation == (1, 1)
        && c.kernel_h.max(c.kernel_w) <= DEPTHWISE_TILED_MAX_KERNEL
        && c.stride.0.max(c.stride.1) <= DEPTHWISE_TILED_MAX_STRIDE
}

/// Convolution launcher for `[batch, C, h, w]` inputs with the context's tiling
/// ([`GpuContext::tiling`]). Register tiles (CPU adapters): 1x1 stride-1 convolutions as a
/// GEMM (`conv1x1` tiles of up to 8 channels x 8 pixels, `conv1x1_vec4` when pixels and input
/// channels come in fours, `conv1x1_wvec4` when only input channels do; on subgroup tiling
/// `conv1x1_subgroup` tiles of 32 channels x 8 pixels for 16 or more output channels and input
/// channels in fours), depthwise ones as `depthwise_tiled` (4 x 8 outputs per invocation,
/// 4 x 4 on rows of 4 or fewer), the rest as the implicit GEMM `conv_tiled` (up to 8 channels
/// x 4 columns; on subgroup tiling `conv_subgroup`, 32 channels x 8 pixels, for one-group
/// convolutions with 16 or more outputs). Workgroup-shared tiles (hardware GPUs):
/// `conv_shared` for every non-depthwise convolution, `depthwise_shared` for depthwise ones.
/// Depthwise geometries outside the tiled kernels' range (dilation, large kernels or strides)
/// fall back to the direct `depthwise`. The label names the kernel and its tile
/// (`block3.conv.conv1x1_c8`).
#[allow(clippy::too_many_arguments)] // shapes + buffers of one convolution
pub fn conv2d(
    ctx: &GpuContext,
    label: &str,
    c: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    weights: &OpWeights,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    if subgroup_gemm(ctx, c) || subgroup_implicit_gemm(ctx, c) {
        return conv_subgroup(ctx, label, c, batch, (h, w), weights, x, None, y);
    }
    if ctx.tiling == Tiling::Shared && (!c.is_depthwise() || depthwise_tiles(c)) {
        return conv_shared(ctx, label, c, batch, (h, w), weights, x, y);
    }
    let params = ConvParams::new(c, batch, (h, w));
    let (oh, ow) = (params.out_h as u64, params.out_w as u64);
    let n = batch as u64;
    let channels = c.out_channels as u64;
    let co_t = channel_tile(c.out_channels / c.groups);
    let co_tiles = channels / co_t as u64;
    // Output columns per `depthwise_tiled` invocation: 8 (each loaded tap feeds twice the
    // outputs) unless the rows are too short to fill them.
    let tw: u64 = if ow > 4 { 8 } else { 4 };
    // (entry point, label, override constants, invocations)
    let (entry, name, constants, invocations): (_, _, Vec<(&'static str, f64)>, u64) =
        if c.is_depthwise() && depthwise_tiles(c) {
            (
                "depthwise_tiled",
                format!(
                    "depthwise_tiled_4x{tw}_k{}x{}s{}x{}",
                    c.kernel_h, c.kernel_w, c.stride.0, c.stride.1
                ),
                vec![
                    ("KH", c.kernel_h as f64),
                    ("KW", c.kernel_w as f64),
                    ("SH", c.stride.0 as f64),
                    ("SW", c.stride.1 as f64),
                    ("TW", tw as f64),
                ],
                n * channels * ow.div_ceil(tw) * oh.div_ceil(4),
            )
        } else if c.is_depthwise() {
            let inv = n * channels * oh * ow.div_ceil(4);
            ("depthwise", "depthwise".into(), vec![], inv)
        } else if is_gemm(c) && (oh * ow).is_multiple_of(4) && c.in_channels.is_multiple_of(4) {
            (
                "conv1x1_vec4",
                format!("conv1x1_vec4_c{co_t}"),
                vec![("CO_T", co_t as f64)],
                co_tiles * n * (oh * ow).div_ceil(CONV1X1_PIXELS),
            )
        } else if is_gemm(c) && c.in_channels.is_multiple_of(4) {
            (
                "conv1x1_wvec4",
                format!("conv1x1_wvec4_c{co_t}"),
                vec![("CO_T", co_t as f64)],
                co_tiles * n * (oh * ow).div_ceil(CONV1X1_PIXELS),
            )
        } else if is_gemm(c) {
            (
                "conv1x1",
                format!("conv1x1_c{co_t}"),
                vec![
                    ("CO_T", co_t as f64),
                    (
                        "WHOLE_TILES",
                        f64::from(u8::from((oh * ow).is_multiple_of(CONV1X1_PIXELS))),
                    ),
                ],
                co_tiles * n * (oh * ow).div_ceil(CONV1X1_PIXELS),
            )
        } else {
            (
                "conv_tiled",
                format!("conv_tiled_c{co_t}"),
                vec![("CO_T", co_t as f64)],
                co_tiles * n * oh * ow.div_ceil(4),
            )
        };
    let mut constants = constants;
    constants.push(activation_constant(c.activation));
    Kernel::new(
        ctx,
        format!("{label}.{name}"),
        Shader::Conv2d,
        entry,
        &constants,
        &params,
        &[x, &weights.weight, &weights.bias],
        y,
        invocations,
    )
}

/// `conv_shared` (any non-depthwise convolution) or `depthwise_shared` (within
/// [`depthwise_tiles`]' range): workgroups of 64 staging shared inputs in workgroup memory.
#[allow(clippy::too_many_arguments)] // shapes + buffers of one convolution
fn conv_shared(
    ctx: &GpuContext,
    label: &str,
    c: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    weights: &OpWeights,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = ConvParams::new(c, batch, (h, w));
    let (oh, ow) = (params.out_h as u64, params.out_w as u64);
    let (n, groups) = (batch as u64, c.groups as u64);
    let kernel = format!("k{}x{}", c.kernel_h, c.kernel_w);
    let (entry, name, workgroups) = if c.is_depthwise() {
        let t = DEPTHWISE_SHARED_TILE;
        let tiles = oh.div_ceil(t) * ow.div_ceil(t);
        let strides = format!("s{}x{}", c.stride.0, c.stride.1);
        let name = format!("depthwise_shared_{kernel}{strides}");
        ("depthwise_shared", name, n * c.out_channels as u64 * tiles)
    } else {
        let m_tiles = (c.out_channels as u64 / groups).div_ceil(SHARED_TILE);
        let tiles = groups * m_tiles * (n * oh * ow).div_ceil(SHARED_TILE);
        ("conv_shared", format!("conv_shared_{kernel}"), tiles)
    };
    Kernel::new(
        ctx,
        format!("{label}.{name}"),
        Shader::ConvShared,
        entry,
        &[
            ("KH", c.kernel_h as f64),
            ("KW", c.kernel_w as f64),
            ("SH", c.stride.0 as f64),
            ("SW", c.stride.1 as f64),
            activation_constant(c.activation),
        ],
        &params,
        &[x, &weights.weight, &weights.bias],
        y,
        workgroups * WORKGROUP as u64,
    )
}

/// True when `c` runs as `conv1x1_subgroup` on this context: a pointwise GEMM with input
/// channels in fours and at least 16 outputs, on
/// [`Tiling::Subgroup`]. Only then can a squeeze-excite gate fuse into it ([`gated_conv1x1`]).
pub fn subgroup_gemm(ctx: &GpuContext, c: &Conv2d) -> bool {
    is_gemm(c)
        && ctx.tiling == Tiling::Subgroup
        && c.in_channels.is_multiple_of(4)
        && c.out_channels >= SUBGROUP_MIN_OUT_CHANNELS
}

/// True when `c` runs as the implicit GEMM `conv_subgroup` on this context: one group, 16 or
/// more outputs, not a plain GEMM (those with input channels not in fours stay on register
/// tiles: on the 1 x 1 planes of squeeze-excite FCs `conv_subgroup` measured 2.4x slower), on
/// [`Tiling::Subgroup`].
fn subgroup_implicit_gemm(ctx: &GpuContext, c: &Conv2d) -> bool {
    ctx.tiling == Tiling::Subgroup
        && c.groups == 1
        && c.out_channels >= SUBGROUP_MIN_OUT_CHANNELS
        && !is_gemm(c)
}

/// The pointwise convolution `c` over `x` with every input channel scaled by `gate`
/// (`[batch, in_channels]`, one value per sample and channel) as it is loaded: a squeeze-excite
/// gate fused into the 1x1 projection that follows it. Needs [`subgroup_gemm`].
#[allow(clippy::too_many_arguments)] // shapes + buffers of one convolution
pub fn gated_conv1x1(
    ctx: &GpuContext,
    label: &str,
    c: &Conv2d,
    batch: usize,
    hw: (usize, usize),
    weights: &OpWeights,
    x: &wgpu::Buffer,
    gate: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    assert!(
        subgroup_gemm(ctx, c),
        "gated 1x1 convolutions need subgroup tiles"
    );
    conv_subgroup(ctx, label, c, batch, hw, weights, x, Some(gate), y)
}

/// `conv1x1_subgroup` (`_scalar` for planes whose size is not a multiple of 4) for
/// [`subgroup_gemm`] convolutions, gated when `gate` is given (without one the bias buffer is
/// bound in its place, unread); the implicit GEMM `conv_subgroup` for
/// [`subgroup_implicit_gemm`] ones.
#[allow(clippy::too_many_arguments)] // shapes + buffers of one convolution
fn conv_subgroup(
    ctx: &GpuContext,
    label: &str,
    c: &Conv2d,
    batch: usize,
    (h, w): (usize, usize),
    weights: &OpWeights,
    x: &wgpu::Buffer,
    gate: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = ConvParams::new(c, batch, (h, w));
    let hw = params.out_h as u64 * params.out_w as u64;
    let (entry, name) = if subgroup_implicit_gemm(ctx, c) {
        let geometry = format!(
            "conv_subgroup_k{}x{}s{}x{}",
            c.kernel_h, c.kernel_w, c.stride.0, c.stride.1
        );
        ("conv_subgroup", geometry)
    } else if hw.is_multiple_of(4) {
        ("conv1x1_subgroup", "conv1x1_subgroup_vec4".into())
    } else {
        ("conv1x1_subgroup_scalar", "conv1x1_subgroup_scalar".into())
    };
    let per_block = (batch as u64 * hw.div_ceil(CONV1X1_PIXELS)).div_ceil(SUBGROUP_WORKGROUP);
    let blocks = (c.out_channels as u64).div_ceil(SUBGROUP_TILE_ROWS as u64);
    let gated = if gate.is_some() { "_gated" } else { "" };
    Kernel::new(
        ctx,
        format!("{label}.{name}{gated}"),
        Shader::ConvSubgroup,
        entry,
        &[
            ("WG", SUBGROUP_WORKGROUP as f64),
            ("GATED", f64::from(u8::from(gate.is_some()))),
            ("KH", c.kernel_h as f64),
            ("KW", c.kernel_w as f64),
            activation_constant(c.activation),
        ],
        &params,
        &[
            x,
            &weights.weight,
            &weights.bias,
            gate.unwrap_or(&weights.bias),
        ],
        y,
        blocks * per_block * SUBGROUP_WORKGROUP,
    )
}

/// Pooling launcher over `planes` planes of `h × w`.
pub fn pool(
    ctx: &GpuContext,
    label: &str,
    p: &Pool,
    planes: usize,
    (h, w): (usize, usize),
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let (oh, ow) = p
        .output_hw(h, w)
        .expect("shapes were validated when the model was loaded");
    let params = PoolParams {
        planes: planes as u32,
        in_h: h as u32,
        in_w: w as u32,
        out_h: oh as u32,
        out_w: ow as u32,
        kernel_h: p.kernel_h as u32,
        kernel_w: p.kernel_w as u32,
        stride_h: p.stride.0 as u32,
        stride_w: p.stride.1 as u32,
        pad_top: p.pads[0] as u32,
        pad_left: p.pads[1] as u32,
        pad_bottom: p.pads[2] as u32,
        pad_right: p.pads[3] as u32,
        is_max: (p.kind == PoolKind::Max) as u32,
        count_include_pad: p.count_include_pad as u32,
    };
    Kernel::new(
        ctx,
        format!("{label}.pool"),
        Shader::Pool,
        "pool",
        &[],
        &params,
        &[x],
        y,
        (planes * oh * ow) as u64,
    )
}

/// Planes of at least this many values get a workgroup each (`global_avgpool_wg`): one
/// invocation per plane would leave most of the device idle on the few large planes of a
/// network's first blocks (EfficientNet-B0: 32 planes of 112 x 112); smaller planes come in
/// hundreds (672 or 1152 channels at 14 x 14 and 7 x 7), enough invocations without the
/// workgroup's barriers.
const GAP_WORKGROUP_PIXELS: usize = 512;

/// Global average pooling launcher: `global_avgpool_wg` for large planes, else one
/// invocation per plane.
pub fn global_avgpool(
    ctx: &GpuContext,
    label: &str,
    planes: usize,
    hw: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = PoolParams {
        planes: planes as u32,
        in_h: hw as u32,
        in_w: 1,
        out_h: 1,
        out_w: 1,
        kernel_h: 0,
        kernel_w: 0,
        stride_h: 1,
        stride_w: 1,
        pad_top: 0,
        pad_left: 0,
        pad_bottom: 0,
        pad_right: 0,
        is_max: 0,
        count_include_pad: 0,
    };
    if hw >= GAP_WORKGROUP_PIXELS {
        let entry = if hw.is_multiple_of(4) {
            "global_avgpool_wg_vec4"
        } else {
            "global_avgpool_wg"
        };
        return Kernel::new(
            ctx,
            format!("{label}.{entry}"),
            Shader::Pool,
            entry,
            &[],
            &params,
            &[x],
            y,
            planes as u64 * WORKGROUP as u64,
        );
    }
    Kernel::new(
        ctx,
        format!("{label}.global_avgpool"),
        Shader::Pool,
        "global_avgpool",
        &[],
        &params,
        &[x],
        y,
        planes as u64,
    )
}

/// Elementwise launcher: `entry` is `activation`, `add` or `mul` (`a` is the gate of `mul`);
/// four values per invocation (`_vec4`) when the length and the gate's plane allow.
#[allow(clippy::too_many_arguments)] // one launcher for three entry points
pub fn elementwise(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    len: usize,
    inner: usize,
    activation: Activation,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let (act_a, act_b) = activation.params();
    let params = ElementwiseParams {
        len: len as u32,
        inner: inner as u32,
        activation: activation.code(),
        _pad0: 0,
        act_a,
        act_b,
        _pad1: [0; 2],
    };
    // Quads of values (one gate value per quad for a channel gate).
    let quads = len.is_multiple_of(4) && (entry != "mul" || inner.is_multiple_of(4));
    let (entry, invocations) = match entry {
        "activation" if quads => ("activation_vec4", len / 4),
        "add" if quads => ("add_vec4", len / 4),
        "mul" if quads => ("mul_vec4", len / 4),
        _ => (entry, len),
    };
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Elementwise,
        entry,
        &[activation_constant(activation)],
        &params,
        &[a, b],
        y,
        invocations as u64,
    )
}

/// `QuantParams` in `quant.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct QuantParams {
    /// Values.
    pub len: u32,
    /// Packed 32-bit words.
    pub words: u32,
    /// Values per sample row: `dequantize_int8` reads row `i / row`'s scale and zero point.
    pub row: u32,
    /// Padding to 16 bytes.
    pub _pad: u32,
}

impl QuantParams {
    /// Parameters for `len` values in `encoding`, `row` values per sample.
    pub fn new(len: usize, row: usize, encoding: Encoding) -> Self {
        Self {
            len: len as u32,
            words: quant_words(len, encoding) as u32,
            row: row.max(1) as u32,
            _pad: 0,
        }
    }
}

/// 32-bit words holding `len` values packed in `encoding`.
pub fn quant_words(len: usize, encoding: Encoding) -> usize {
    len.div_ceil(4 / encoding.bytes_per_value())
}

/// A `quant.wgsl` launcher: `entry` over `invocations` threads, reading `x` and `range`,
/// writing `y`, with room for `capacity` values (the live count goes in with
/// [`Kernel::write_params`] before each run).
#[allow(clippy::too_many_arguments)] // the bindings of one family, named as in the shader
pub fn quant(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    params: QuantParams,
    x: &wgpu::Buffer,
    range: &wgpu::Buffer,
    y: &wgpu::Buffer,
    invocations: usize,
) -> Result<Kernel, GpuError> {
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Quant,
        entry,
        &[],
        &params,
        &[x, range],
        y,
        invocations as u64,
    )
}

/// Softmax (`entry = "softmax"`) or exit statistics (`"exit_stats"`) launcher.
pub fn exit(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    batch: usize,
    classes: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = ExitParams {
        batch: batch as u32,
        classes: classes as u32,
        _pad: [0; 2],
    };
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Exit,
        entry,
        &[],
        &params,
        &[x],
        y,
        batch as u64,
    )
}

/// Broadcasting binary-op launcher (`binary.wgsl`): `x ∘ operand` (`operand ∘ x` when
/// reversed) for `batch` samples of `x_shape`; `operand` holds one sample of `b.operand_shape`
/// for a constant, `batch` samples otherwise.
#[allow(clippy::too_many_arguments)] // the op, its shapes and its three buffers
pub fn binary(
    ctx: &GpuContext,
    label: &str,
    b: &Binary,
    batch: usize,
    x_shape: &[usize],
    x: &wgpu::Buffer,
    operand: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let out = broadcast_shape(x_shape, &b.operand_shape)
        .expect("shapes were validated when the model was loaded");
    let aligned = |strides: Vec<usize>| {
        let mut v = [0u32; 4];
        for (i, s) in strides.iter().rev().enumerate() {
            v[3 - i] = *s as u32;
        }
        v
    };
    let mut out_dims = [1u32; 4];
    for (i, d) in out.iter().rev().enumerate() {
        out_dims[3 - i] = *d as u32;
    }
    let out_sample: usize = out.iter().product();
    let x_side = (
        x,
        x_shape.iter().product::<usize>(),
        aligned(broadcast_strides(x_shape, &out)),
    );
    let operand_sample = match b.operand {
        BinaryOperand::Tensor(_) => b.operand_shape.iter().product(),
        BinaryOperand::Const(_) => 0,
    };
    let operand_side = (
        operand,
        operand_sample,
        aligned(broadcast_strides(&b.operand_shape, &out)),
    );
    let (a, bb) = if b.reverse {
        (operand_side, x_side)
    } else {
        (x_side, operand_side)
    };
    let (act_a, act_b) = b.activation.params();
    let params = BinaryParams {
        len: (batch * out_sample) as u32,
        op: b.op.code(),
        activation: b.activation.code(),
        out_sample: out_sample as u32,
        act_a,
        act_b,
        a_sample: a.1 as u32,
        b_sample: bb.1 as u32,
        out_dims,
        a_strides: a.2,
        b_strides: bb.2,
    };
    Kernel::new(
        ctx,
        format!("{label}.binary"),
        Shader::Binary,
        "binary",
        &[activation_constant(b.activation)],
        &params,
        &[a.0, bb.0],
        y,
        (batch * out_sample) as u64,
    )
}

/// The fast path of a binary op on a tensor operand, if one applies: a same-shape add or
/// product (`add`/`mul` of `elementwise.wgsl`) or a `[C,1,1]` gate times `[C,H,W]` (either
/// side). Returns the entry, the gate-side and full-side buffers and values per gate entry.
fn binary_fast_path<'b>(
    b: &Binary,
    x_shape: &[usize],
    x: &'b wgpu::Buffer,
    operand: &'b wgpu::Buffer,
) -> Option<(&'static str, &'b wgpu::Buffer, &'b wgpu::Buffer, usize)> {
    if !matches!(b.operand, BinaryOperand::Tensor(_)) {
        return None;
    }
    let same = x_shape == b.operand_shape.as_slice();
    let gate_of = |gate: &[usize], full: &[usize]| match (gate, full) {
        ([c, 1, 1], [cf, h, w]) if c == cf => Some(h * w),
        _ => None,
    };
    match b.op {
        BinaryOp::Add if same => Some(("add", x, operand, 1)),
        BinaryOp::Mul if same => Some(("mul", x, operand, 1)),
        BinaryOp::Mul => match gate_of(x_shape, &b.operand_shape) {
            Some(inner) => Some(("mul", x, operand, inner)),
            None => gate_of(&b.operand_shape, x_shape).map(|inner| ("mul", operand, x, inner)),
        },
        _ => None,
    }
}

/// A strided-copy launcher (`movement.wgsl`).
pub fn copy_strided(
    ctx: &GpuContext,
    label: String,
    params: MoveParams,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let len = params.len as u64;
    Kernel::new(
        ctx,
        label,
        Shader::Movement,
        "copy_strided",
        &[],
        &params,
        &[x],
        y,
        len,
    )
}

/// Row-major strides of `shape`.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Transpose of `batch` samples of `shape`: output axis `i` is input axis `perm[i]`.
pub fn transpose(
    ctx: &GpuContext,
    label: &str,
    batch: usize,
    shape: &[usize],
    perm: &[usize],
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let elems: usize = shape.iter().product();
    let (xs, out): (Vec<usize>, Vec<usize>) =
        (strides_of(shape), perm.iter().map(|&p| shape[p]).collect());
    let ys = strides_of(&out);
    let mut dims = vec![MoveDim::plain(batch, elems, elems)];
    dims.extend((0..out.len()).map(|d| MoveDim::plain(out[d], xs[perm[d]], ys[d])));
    copy_strided(
        ctx,
        format!("{label}.transpose"),
        MoveParams::new(&dims, 0, 0.0),
        x,
        y,
    )
}

/// Constant padding of `batch` samples of `shape`; `pads` is `[begin.., end..]`.
#[allow(clippy::too_many_arguments)] // shapes, padding and the two buffers
pub fn pad(
    ctx: &GpuContext,
    label: &str,
    batch: usize,
    shape: &[usize],
    pads: &[usize],
    value: f32,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let r = shape.len();
    let out: Vec<usize> = (0..r).map(|d| shape[d] + pads[d] + pads[r + d]).collect();
    let (xs, ys) = (strides_of(shape), strides_of(&out));
    let (in_elems, out_elems) = (shape.iter().product(), out.iter().product());
    let mut dims = vec![MoveDim::plain(batch, in_elems, out_elems)];
    dims.extend((0..r).map(|d| MoveDim {
        size: out[d],
        src: shape[d],
        pad: pads[d],
        x_stride: xs[d],
        y_stride: ys[d],
    }));
    copy_strided(
        ctx,
        format!("{label}.pad"),
        MoveParams::new(&dims, 0, value),
        x,
        y,
    )
}

/// Concatenation along per-sample `axis`: one strided copy per piece into its slice of `y`.
/// `pieces` are the buffers and per-sample shapes, the step's input first.
pub fn concat(
    ctx: &GpuContext,
    label: &str,
    batch: usize,
    axis: usize,
    pieces: &[(&wgpu::Buffer, &[usize])],
    y: &wgpu::Buffer,
) -> Result<Vec<Kernel>, GpuError> {
    let Some((_, first)) = pieces.first() else {
        return Ok(Vec::new());
    };
    let outer: usize = first[..axis].iter().product();
    let chunk = |shape: &[usize]| shape[axis..].iter().product::<usize>();
    let total: usize = pieces.iter().map(|(_, s)| chunk(s)).sum();
    let mut offset = 0;
    let mut kernels = Vec::with_capacity(pieces.len());
    for (i, (x, shape)) in pieces.iter().enumerate() {
        let c = chunk(shape);
        let dims = [
            MoveDim::plain(batch, outer * c, outer * total),
            MoveDim::plain(outer, c, total),
            MoveDim::plain(c, 1, 1),
        ];
        let params = MoveParams::new(&dims, offset, 0.0);
        kernels.push(copy_strided(
            ctx,
            format!("{label}.concat{i}"),
            params,
            x,
            y,
        )?);
        offset += c;
    }
    Ok(kernels)
}

/// A `normalize.wgsl` launcher over `invocations` threads.
fn normalize(
    ctx: &GpuContext,
    label: &str,
    entry: &'static str,
    params: NormParams,
    invocations: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    Kernel::new(
        ctx,
        format!("{label}.{entry}"),
        Shader::Normalize,
        entry,
        &[],
        &params,
        &[x],
        y,
        invocations as u64,
    )
}

/// LRN launcher for `batch` samples of `shape` (channels first).
pub fn lrn(
    ctx: &GpuContext,
    label: &str,
    l: &Lrn,
    batch: usize,
    shape: &[usize],
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let inner: usize = shape[1..].iter().product();
    let params = NormParams {
        outer: batch as u32,
        len: shape[0] as u32,
        inner: inner as u32,
        size: l.size as u32,
        alpha: l.alpha,
        beta: l.beta,
        bias: l.bias,
        _pad: 0,
    };
    normalize(ctx, label, "lrn", params, batch * shape[0] * inner, x, y)
}

/// Softmax along per-sample `axis` of `batch` samples of `shape`: the exit kernel's row
/// softmax when the axis is innermost, else `softmax_axis`.
pub fn softmax(
    ctx: &GpuContext,
    label: &str,
    batch: usize,
    shape: &[usize],
    axis: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let outer = batch * shape[..axis].iter().product::<usize>();
    let inner: usize = shape[axis + 1..].iter().product();
    if inner == 1 {
        return exit(ctx, label, "softmax", outer, shape[axis], x, y);
    }
    let params = NormParams {
        outer: outer as u32,
        len: shape[axis] as u32,
        inner: inner as u32,
        size: 0,
        alpha: 0.0,
        beta: 0.0,
        bias: 0.0,
        _pad: 0,
    };
    normalize(ctx, label, "softmax_axis", params, outer * inner, x, y)
}

/// The constant operand of a binary op, uploaded (the second operand its kernel reads); `None`
/// for other ops.
pub fn upload_constant(
    ctx: &GpuContext,
    label: &str,
    op: &Op,
) -> Result<Option<wgpu::Buffer>, GpuError> {
    match op {
        Op::Binary(Binary {
            operand: BinaryOperand::Const(c),
            ..
        }) => Ok(Some(upload(ctx, &format!("{label}.value"), c)?)),
        _ => Ok(None),
    }
}

/// The launchers for one model step (several for a concat, none for `flatten`). `input` is the
/// step's input; `others` the further tensors it reads ([`Op::operands`], or the uploaded
/// constant of a binary op, [`upload_constant`]).
pub fn step(
    ctx: &GpuContext,
    step: &Step,
    batch: usize,
    weights: Option<&OpWeights>,
    input: &wgpu::Buffer,
    others: &[&wgpu::Buffer],
    output: &wgpu::Buffer,
) -> Result<Vec<Kernel>, GpuError> {
    let label = step.label.as_str();
    let elems: usize = step.output_shape.iter().product::<usize>() * batch;
    check_storage_size(ctx, label, (elems * 4) as u64)?;
    let need_weights = || weights.expect("parametrised ops have uploaded weights");
    let need_other = |i: usize| {
        *others
            .get(i)
            .expect("the planner binds every operand of the step")
    };
    let hw = |s: &[usize]| (s[1], s[2]);
    let shape = step.input_shape.as_slice();
    Ok(vec![match &step.op {
        Op::Dense(d) => dense(ctx, label, d, batch, need_weights(), input, output)?,
        Op::FanIn(f) => fanin(ctx, label, f, batch, need_weights(), input, output)?,
        Op::Conv2d(c) => conv2d(
            ctx,
            label,
            c,
            batch,
            hw(shape),
            need_weights(),
            input,
            output,
        )?,
        Op::Pool(p) => pool(ctx, label, p, batch * shape[0], hw(shape), input, output)?,
        Op::GlobalAvgPool => global_avgpool(
            ctx,
            label,
            batch * shape[0],
            shape[1] * shape[2],
            input,
            output,
        )?,
        Op::Flatten => return Ok(Vec::new()),
        Op::Activation(a) => {
            elementwise(ctx, label, "activation", elems, 1, *a, input, input, output)?
        }
        Op::Binary(b) => match binary_fast_path(b, shape, input, need_other(0)) {
            Some((entry, gate, full, inner)) => elementwise(
                ctx,
                label,
                entry,
                elems,
                inner,
                b.activation,
                gate,
                full,
                output,
            )?,
            None => binary(ctx, label, b, batch, shape, input, need_other(0), output)?,
        },
        Op::Concat(c) => {
            let mut pieces = vec![(input, shape)];
            for (i, s) in c.with_shapes.iter().enumerate() {
                pieces.push((need_other(i), s.as_slice()));
            }
            return concat(ctx, label, batch, c.axis, &pieces, output);
        }
        Op::Transpose { perm } => transpose(ctx, label, batch, shape, perm, input, output)?,
        Op::Pad { pads, value } => pad(ctx, label, batch, shape, pads, *value, input, output)?,
        Op::Lrn(l) => lrn(ctx, label, l, batch, shape, input, output)?,
        Op::Softmax { axis } => softmax(ctx, label, batch, shape, *axis, input, output)?,
    }])
}

/// One step with its own buffers and uploaded weights, ready to dispatch repeatedly: kernel
/// tests read it back once, benchmarks dispatch it many times per submission. It runs the step
/// as a plan would ([`lower`]ed; a feature-major fan-in includes its input's layout change).
pub struct PreparedStep {
    kernels: Vec<Kernel>,
    output: wgpu::Buffer,
    out_elems: usize,
    _buffers: Vec<wgpu::Buffer>,
    _weights: Option<OpWeights>,
}

impl PreparedStep {
    /// Uploads `input` (and `others`, the further tensors the step reads: [`Op::operands`])
    /// and builds the dispatches. `None` for ops that need no kernel (flatten).
    pub fn new(
        ctx: &GpuContext,
        step: &Step,
        batch: usize,
        input: &[f32],
        others: &[&[f32]],
    ) -> Result<Option<Self>, GpuError> {
        let step = lower(step);
        let x = upload(ctx, &format!("{}.input", step.label), input)?;
        let mut operands = others
            .iter()
            .enumerate()
            .map(|(i, d)| upload(ctx, &format!("{}.other{i}", step.label), d))
            .collect::<Result<Vec<_>, _>>()?;
        operands.extend(upload_constant(ctx, &step.label, &step.op)?);
        let out_elems = batch * step.output_shape.iter().product::<usize>();
        let y = super::storage(
            ctx,
            &format!("{}.output", step.label),
            (out_elems * 4) as u64,
        )?;
        let w = OpWeights::upload(ctx, &step.label, &step.op)?;
        let mut buffers = vec![x];
        let kernels = match &step.op {
            Op::FanIn(f) if uses_feature_major(&step, batch) => {
                let xt = super::storage(
                    ctx,
                    &format!("{}.input.feature_major", step.label),
                    feature_major_bytes(f.inputs, batch),
                )?;
                let w = w.as_ref().expect("fan-in ops carry weights");
                let layout = to_feature_major(ctx, &step.label, f.inputs, batch, &buffers[0], &xt)?;
                let k = fanin_fm(ctx, &step.label, f, batch, w, &xt, &y, false)?;
                buffers.push(xt);
                vec![layout, k]
            }
            _ => {
                let refs: Vec<&wgpu::Buffer> = operands.iter().collect();
                let kernels = self::step(ctx, &step, batch, w.as_ref(), &buffers[0], &refs, &y)?;
                if kernels.is_empty() {
                    return Ok(None);
                }
                kernels
            }
        };
        buffers.extend(operands);
        Ok(Some(Self {
            kernels,
            output: y,
            out_elems,
            _buffers: buffers,
            _weights: w,
        }))
    }

    /// Labels of the dispatches, in order (`bench.fanin.to_feature_major_vec4`, …).
    pub fn labels(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.label.as_str()).collect()
    }

    /// Wraps an already built kernel and its output buffer (e.g. the exit-statistics kernel).
    pub fn from_kernel(
        kernel: Kernel,
        output: wgpu::Buffer,
        out_elems: usize,
        buffers: Vec<wgpu::Buffer>,
    ) -> Self {
        Self {
            kernels: vec![kernel],
            output,
            out_elems,
            _buffers: buffers,
            _weights: None,
        }
    }

    /// Encodes `times` dispatches in one pass, submits once and waits for the device.
    pub fn dispatch(&self, ctx: &GpuContext, times: usize) -> Result<(), GpuError> {
        self.timed(ctx, times, None)
    }

    /// Seconds taken by `times` dispatches in one pass: from GPU timestamps at the start and
    /// end of the pass when the device has `TIMESTAMP_QUERY`, else wall-clock around
    /// submit-and-wait. Returns `(seconds, used_timestamps)`.
    pub fn time(&self, ctx: &GpuContext, times: usize) -> Result<(f64, bool), GpuError> {
        if ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("prepared.timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let start = std::time::Instant::now();
            self.timed(ctx, times, Some(&queries))?;
            let wall = start.elapsed().as_secs_f64();
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("prepared.timestamps.resolve"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = super::staging(ctx, "prepared.timestamps.read", 16);
            let mut enc = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("prepared.timestamps.resolve"),
                });
            enc.resolve_query_set(&queries, 0..2, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
            ctx.queue.submit([enc.finish()]);
            let raw = super::read_back(ctx, &staging, 4)?;
            let ticks: &[u64] = bytemuck::cast_slice(&raw);
            let period = ctx.queue.get_timestamp_period() as f64;
            let gpu = ticks[1].saturating_sub(ticks[0]) as f64 * period * 1e-9;
            // A zero or absurd reading (some drivers) falls back to the wall clock.
            if gpu > 0.0 && gpu <= wall * 1.5 {
                return Ok((gpu, true));
            }
            return Ok((wall, false));
        }
        let start = std::time::Instant::now();
        self.timed(ctx, times, None)?;
        Ok((start.elapsed().as_secs_f64(), false))
    }

    fn timed(
        &self,
        ctx: &GpuContext,
        times: usize,
        queries: Option<&wgpu::QuerySet>,
    ) -> Result<(), GpuError> {
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("prepared.dispatch"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("prepared.dispatch"),
                timestamp_writes: queries.map(|q| wgpu::ComputePassTimestampWrites {
                    query_set: q,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            for _ in 0..times {
                for k in &self.kernels {
                    k.encode(&mut pass);
                }
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Failed {
                context: self.labels().join(" + "),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Dispatches once and reads the output back.
    pub fn run(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        let bytes = (self.out_elems * 4) as u64;
        let staging = super::staging(ctx, "prepared.readback", bytes);
        let mut enc = encode_pass(ctx, "prepared.run", &self.kernels);
        enc.copy_buffer_to_buffer(&self.output, 0, &staging, 0, bytes);
        ctx.queue.submit([enc.finish()]);
        super::read_back(ctx, &staging, self.out_elems)
    }
}

/// Runs one step on its own (upload, dispatch, read back): for kernel tests.
/// Plans batch many steps into one submission instead.
pub fn run_step(
    ctx: &GpuContext,
    step: &Step,
    batch: usize,
    input: &[f32],
    others: &[&[f32]],
) -> Result<Vec<f32>, GpuError> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = match PreparedStep::new(ctx, step, batch, input, others)? {
        Some(p) => p.run(ctx)?,
        None => input.to_vec(),
    };
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(GpuError::Failed {
            context: step.label.clone(),
            reason: e.to_string(),
        });
    }
    Ok(out)
}

/// Bandwidth kernel launcher: copies `len4` vec4 values from `x` to `y`.
pub fn copy(
    ctx: &GpuContext,
    len4: usize,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
) -> Result<Kernel, GpuError> {
    let params = CopyParams {
        len4: len4 as u32,
        _pad: [0; 3],
    };
    Kernel::new(
        ctx,
        "bandwidth.copy".into(),
        Shader::Copy,
        "copy",
        &[],
        &params,
        &[x],
        y,
        len4 as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Member offsets (by name) and size of the WGSL struct `name` in `shader`, from naga.
    fn wgsl_struct(shader: Shader, name: &str) -> (HashMap<String, u32>, u32) {
        let module = naga::front::wgsl::parse_str(shader.source())
            .unwrap_or_else(|e| panic!("{}: {e}", shader.file_name()));
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("{} has no struct {name}", shader.file_name()));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{name} is not a struct");
        };
        let offsets = members
            .iter()
            .filter_map(|m| Some((m.name.clone()?, m.offset)))
            .collect();
        (offsets, *span)
    }

    /// Asserts that the Rust `Pod` struct and its WGSL twin agree on size and on the offset of
    /// every named (non-padding) member, and that the list names every such WGSL member.
    macro_rules! assert_twin {
        ($shader:expr, $ty:ident, [$($field:ident),* $(,)?]) => {{
            let (offsets, span) = wgsl_struct($shader, stringify!($ty));
            assert_eq!(span as usize, std::mem::size_of::<$ty>(), "size of {}", stringify!($ty));
            let fields = [$(stringify!($field)),*];
            $(
                assert_eq!(
                    offsets.get(stringify!($field)).copied(),
                    Some(std::mem::offset_of!($ty, $field) as u32),
                    "{}.{}",
                    stringify!($ty),
                    stringify!($field)
                );
            )*
            let named = offsets.keys().filter(|k| !k.starts_with('_')).count();
            assert_eq!(named, fields.len(), "{} members listed", stringify!($ty));
        }};
    }

    #[test]
    fn params_structs_match_their_wgsl_twins() {
        assert_twin!(
            Shader::Dense,
            DenseParams,
            [batch, inputs, outputs, activation, act_a, act_b]
        );
        assert_twin!(
            Shader::FanIn,
            FanInParams,
            [batch, inputs, outputs, k, activation, act_a, act_b]
        );
        assert_twin!(
            Shader::Conv2d,
            ConvParams,
            [
                batch,
                in_channels,
                in_h,
                in_w,
                out_channels,
                out_h,
                out_w,
                kernel_h,
                kernel_w,
                stride_h,
                stride_w,
                dilation_h,
                dilation_w,
                pad_top,
                pad_left,
                groups,
                activation,
                act_a,
                act_b
            ]
        );
        assert_twin!(
            Shader::Elementwise,
            ElementwiseParams,
            [len, inner, activation, act_a, act_b]
        );
        assert_twin!(
            Shader::Binary,
            BinaryParams,
            [
                len, op, activation, out_sample, act_a, act_b, a_sample, b_sample, out_dims,
                a_strides, b_strides
            ]
        );
        assert_twin!(
            Shader::Movement,
            MoveParams,
            [len, y_offset, value, dims, src_dims, pads, x_strides, y_strides]
        );
        assert_twin!(
            Shader::Normalize,
            NormParams,
            [outer, len, inner, size, alpha, beta, bias]
        );
    }
}
