//! Every WGSL kernel against its CPU reference on random data and edge shapes
//! (batch 1, odd sizes and tails, k = 1, k = inputs, large fan-in, depthwise, stride 2 with
//! padding). Each kernel family has a problem type with `reference()` and `run()`.

mod common;

use common::{assert_close, gpu, random, Tolerance};
use edgecut::cpu;
use edgecut::gpu::{kernels, GpuContext, Tiling};
use edgecut::model::{
    Activation, Binary, BinaryOp, BinaryOperand, Conv2d, Dense, FanIn, Op, Operand, Pool, PoolKind,
    Step,
};
use edgecut::sparsity::FanInPattern;
use std::sync::Arc;

/// Every activation, with parameters whose kinks fall inside the data's range.
const ACTIVATIONS: [Activation; 10] = [
    Activation::None,
    Activation::Relu,
    Activation::Relu6,
    Activation::Silu,
    Activation::Sigmoid,
    Activation::LeakyRelu(0.1),
    Activation::Clip(-0.25, 0.5),
    Activation::HardSigmoid(0.4, 0.3),
    Activation::HardSwish,
    Activation::Tanh,
];

/// `n` of the activations, a different run of them for each case `i`: over a table's cases
/// every activation is covered, while each pipeline specialised on one (the `ACT` constant)
/// is compiled only a few times.
fn activations_for(i: usize, n: usize) -> impl Iterator<Item = Activation> {
    (0..n).map(move |j| ACTIVATIONS[(i * n + j) % ACTIVATIONS.len()])
}

fn step(op: Op, input_shape: Vec<usize>, output_shape: Vec<usize>) -> Step {
    Step {
        label: format!("test.{}", op.kind_name()),
        op,
        input_shape,
        output_shape,
        save_as: None,
        from: None,
    }
}

fn tolerance_for(act: Activation, terms: usize) -> Tolerance {
    if matches!(
        act,
        Activation::Silu | Activation::Sigmoid | Activation::Tanh
    ) || terms > 256
    {
        Tolerance::Approximate
    } else {
        Tolerance::Close
    }
}

struct DenseProblem {
    batch: usize,
    dense: Dense,
    x: Vec<f32>,
}

impl DenseProblem {
    fn new(batch: usize, inputs: usize, outputs: usize, act: Activation, seed: u64) -> Self {
        Self {
            batch,
            dense: Dense {
                inputs,
                outputs,
                weight: random(inputs * outputs, seed),
                bias: random(outputs, seed + 1),
                activation: act,
            },
            x: random(batch * inputs, seed + 2),
        }
    }
    fn reference(&self) -> Vec<f32> {
        cpu::reference::dense(&self.dense, &self.x, self.batch)
    }
    /// Runs the problem on `ctx`; returns the dispatch labels and the result.
    fn run(&self, ctx: &GpuContext) -> (String, Vec<f32>) {
        let s = step(
            Op::Dense(self.dense.clone()),
            vec![self.dense.inputs],
            vec![self.dense.outputs],
        );
        let prepared = kernels::PreparedStep::new(ctx, &s, self.batch, &self.x, &[])
            .expect("dense kernel builds")
            .expect("dense has a kernel");
        let labels = prepared.labels().join(" ");
        (labels, prepared.run(ctx).expect("dense kernel runs"))
    }
    /// Checks the result against the reference and that the launcher picked `kernel`.
    fn check(&self, ctx: &GpuContext, kernel: &str) {
        let (labels, got) = self.run(ctx);
        let what = format!(
            "dense batch={} {}->{} {:?} ({:?} tiles, ran {labels})",
            self.batch, self.dense.inputs, self.dense.outputs, self.dense.activation, ctx.tiling
        );
        assert!(labels.contains(kernel), "{what}: expected {kernel}");
        let tol = tolerance_for(self.dense.activation, self.dense.inputs);
        assert_close(&what, &got, &self.reference(), tol);
    }
}

#[test]
fn dense_kernel_matches_cpu_reference_on_edge_shapes_in_every_tiling() {
    let Some(ctx) = gpu("dense_kernel_matches_cpu_reference_on_edge_shapes_in_every_tiling") else {
        return;
    };
    // vec4 path (inputs % 4 == 0), scalar path, the 16-row tile (batch >= 16) with row tails,
    // tails in batch and outputs, batch 1; in every tiling, so the subgroup tile (32 rows x 8
    // outputs, from 16 rows) also meets row and output tails and a one-vec4 reduction.
    let shapes = [
        (1, 4, 1),
        (1, 800, 3),
        (2, 3, 5),
        (3, 7, 9),
        (4, 16, 16),
        (5, 33, 10),
        (64, 800, 100),
        (7, 1000, 13),
        (65, 128, 67),
        (16, 12, 4),
        (17, 36, 9),
        (31, 800, 100),
        (40, 64, 17),
        (96, 4, 64),
        (33, 20, 1),
    ];
    for ctx in all_tilings(ctx) {
        for (i, &(b, n_in, n_out)) in shapes.iter().enumerate() {
            let kernel = match (n_in % 4 == 0, b) {
                (true, 16..) if ctx.tiling == Tiling::Subgroup => "dense_subgroup",
                (true, 16..) => "dense_vec4_r16",
                (true, _) => "dense_vec4",
                (false, _) => "dense_scalar",
            };
            for act in activations_for(i, 3) {
                DenseProblem::new(b, n_in, n_out, act, i as u64 * 10).check(&ctx, kernel);
            }
        }
    }
}

struct FanInProblem {
    batch: usize,
    fanin: FanIn,
    x: Vec<f32>,
}

impl FanInProblem {
    fn new(
        batch: usize,
        inputs: usize,
        outputs: usize,
        k: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        // Random rows with k distinct inputs (any k, not only fixed out-degree patterns).
        let mut indices = Vec::with_capacity(outputs * k);
        for o in 0..outputs {
            let mut row: Vec<u32> = (0..inputs as u32).collect();
            let keys = random(inputs, seed + 100 + o as u64);
            row.sort_by(|a, b| keys[*a as usize].total_cmp(&keys[*b as usize]));
            indices.extend_from_slice(&row[..k]);
        }
        Self {
            batch,
            fanin: FanIn {
                inputs,
                outputs,
                k,
                indices,
                weights: random(outputs * k, seed),
                bias: random(outputs, seed + 1),
                activation: act,
            },
            x: random(batch * inputs, seed + 2),
        }
    }
    /// Runs the step as inference does (lowered; feature-major from
    /// `FEATURE_MAJOR_MIN_BATCH` rows) and checks the kernels it picked.
    fn check(&self, ctx: &GpuContext) {
        let f = &self.fanin;
        let s = step(Op::FanIn(f.clone()), vec![f.inputs], vec![f.outputs]);
        let what = format!(
            "fanin batch={} {}->{} k={} {:?}",
            self.batch, f.inputs, f.outputs, f.k, f.activation
        );
        let prepared = kernels::PreparedStep::new(ctx, &s, self.batch, &self.x, &[])
            .expect("fan-in kernel builds")
            .expect("fan-in has a kernel");
        let labels = prepared.labels().join(" ");
        let want_kernel = if f.is_full() {
            "dense"
        } else if self.batch >= kernels::FEATURE_MAJOR_MIN_BATCH {
            "fanin_fm"
        } else {
            "fanin_vec4"
        };
        assert!(labels.contains(want_kernel), "{what}: ran {labels}");
        let got = prepared.run(ctx).expect("fan-in kernel runs");
        let want = cpu::reference::fanin(f, &self.x, self.batch);
        assert_close(&what, &got, &want, tolerance_for(f.activation, f.k));
    }

    /// Runs the row-major launcher directly, on the model's own layout (training's forward
    /// pass and input gradient use it at every batch size).
    fn check_row_major(&self, ctx: &GpuContext) {
        let f = &self.fanin;
        let op = Op::FanIn(f.clone());
        let w = kernels::OpWeights::upload(ctx, "test", &op)
            .expect("weights upload")
            .expect("fan-in has weights");
        let x = edgecut::gpu::upload(ctx, "test.x", &self.x).expect("input uploads");
        let n = self.batch * f.outputs;
        let y = edgecut::gpu::storage(ctx, "test.y", (n * 4) as u64).expect("output allocates");
        let k = kernels::fanin(ctx, "test", f, self.batch, &w, &x, &y).expect("kernel builds");
        let got = kernels::PreparedStep::from_kernel(k, y, n, vec![x])
            .run(ctx)
            .expect("kernel runs");
        let what = format!(
            "row-major fanin batch={} {}->{} k={}",
            self.batch, f.inputs, f.outputs, f.k
        );
        let want = cpu::reference::fanin(f, &self.x, self.batch);
        assert_close(&what, &got, &want, tolerance_for(f.activation, f.k));
    }
}

#[test]
fn fanin_kernel_matches_cpu_reference_on_edge_shapes() {
    let Some(ctx) = gpu("fanin_kernel_matches_cpu_reference_on_edge_shapes") else {
        return;
    };
    // k = 1, k = inputs (runs as dense), k % 4 != 0 (padded), large fan-in, tails, batch 1,
    // batches around the feature-major threshold and an odd number of row quads.
    let shapes = [
        (1, 10, 3, 1),
        (7, 30, 6, 5),
        (8, 30, 6, 5),
        (13, 50, 9, 1),
        (256, 800, 100, 160),
        (1, 8, 8, 8),
        (2, 9, 5, 9),
        (3, 50, 7, 3),
        (4, 64, 16, 4),
        (5, 800, 40, 40),
        (64, 800, 100, 160),
        (9, 4096, 33, 1024),
        (16, 40, 12, 8),
        (33, 100, 10, 100),
        (17, 800, 100, 160),
    ];
    for (i, &(b, n_in, n_out, k)) in shapes.iter().enumerate() {
        for act in ACTIVATIONS {
            FanInProblem::new(b, n_in, n_out, k, act, i as u64 * 7).check(&ctx);
        }
    }
}

#[test]
fn row_major_fanin_kernels_match_cpu_reference_at_any_batch() {
    let Some(ctx) = gpu("row_major_fanin_kernels_match_cpu_reference_at_any_batch") else {
        return;
    };
    // fanin_vec4 (k % 4 == 0) and fanin_scalar, full and partial row tiles, k = inputs.
    let shapes = [
        (1, 10, 3, 1),
        (3, 50, 7, 3),
        (9, 100, 10, 100),
        (16, 40, 12, 8),
        (33, 40, 40, 9),
        (64, 800, 100, 160),
    ];
    for (i, &(b, n_in, n_out, k)) in shapes.iter().enumerate() {
        FanInProblem::new(b, n_in, n_out, k, Activation::Relu, i as u64 * 11).check_row_major(&ctx);
    }
}

#[test]
fn feature_major_layout_matches_a_cpu_transpose() {
    let Some(ctx) = gpu("feature_major_layout_matches_a_cpu_transpose") else {
        return;
    };
    // features % 4 == 0 (vec4 path) and not; batches that fill quads and leave a partial one.
    for (batch, features) in [(8, 12), (9, 12), (5, 7), (1, 3), (64, 800)] {
        let x = random(batch * features, batch as u64 + features as u64);
        let xb = edgecut::gpu::upload(&ctx, "layout.x", &x).expect("input uploads");
        let quads = batch.div_ceil(4);
        let bytes = kernels::feature_major_bytes(features, batch);
        let y = edgecut::gpu::storage(&ctx, "layout.y", bytes).expect("output allocates");
        let k = kernels::to_feature_major(&ctx, "layout", features, batch, &xb, &y)
            .expect("kernel builds");
        let n = features * quads * 4;
        let got = kernels::PreparedStep::from_kernel(k, y, n, vec![xb])
            .run(&ctx)
            .expect("kernel runs");
        // Rows past the batch repeat the last row.
        let want: Vec<f32> = (0..features)
            .flat_map(|f| (0..quads * 4).map(move |r| (f, r.min(batch - 1))))
            .map(|(f, r)| x[r * features + f])
            .collect();
        assert_close(
            &format!("to_feature_major batch={batch} features={features}"),
            &got,
            &want,
            Tolerance::Exact,
        );
    }
}

#[test]
fn fanin_kernel_runs_fixed_degree_patterns() {
    let Some(ctx) = gpu("fanin_kernel_runs_fixed_degree_patterns") else {
        return;
    };
    let p = FanInPattern::random(800, 100, 20, 4).expect("valid degree");
    let f = FanIn {
        inputs: 800,
        outputs: 100,
        k: p.k,
        indices: p.indices,
        weights: random(100 * p.k, 1),
        bias: random(100, 2),
        activation: Activation::Relu,
    };
    let x = random(32 * 800, 3);
    let s = step(Op::FanIn(f.clone()), vec![800], vec![100]);
    let got = kernels::run_step(&ctx, &s, 32, &x, &[]).expect("fan-in kernel runs");
    assert_close(
        "fanin 800->100 d_out=20",
        &got,
        &cpu::reference::fanin(&f, &x, 32),
        Tolerance::Close,
    );
}

/// Grouped patterns (outputs sharing index rows) run `fanin_group` (row-major, small batches)
/// or `fanin_fm` with the group found in the indices, including groups that are not powers of
/// two and the 8-output cap.
#[test]
fn grouped_fanin_patterns_run_one_gather_per_group() {
    let Some(ctx) = gpu("grouped_fanin_patterns_run_one_gather_per_group") else {
        return;
    };
    // (batch, inputs, outputs, out_degree, pattern group, group the kernel uses)
    let cases = [
        (8, 64, 16, 4, 2, 2),
        (9, 800, 100, 20, 5, 5),
        (64, 90, 9, 3, 3, 3),
        (33, 128, 64, 8, 8, 8),
        (16, 128, 64, 16, 16, 8),
        (256, 100, 100, 25, 5, 5),
        (1, 800, 100, 20, 5, 5),
        (3, 90, 9, 3, 3, 3),
        (5, 128, 64, 16, 16, 8),
        (7, 64, 16, 4, 2, 2),
    ];
    for (i, &(batch, inputs, outputs, d_out, group, used)) in cases.iter().enumerate() {
        let p =
            FanInPattern::grouped(inputs, outputs, d_out, group, i as u64).expect("valid group");
        let f = FanIn {
            inputs,
            outputs,
            k: p.k,
            indices: p.indices,
            weights: random(outputs * p.k, 10 + i as u64),
            bias: random(outputs, 20 + i as u64),
            activation: Activation::Relu,
        };
        assert_eq!(f.row_group(kernels::FANIN_MAX_GROUP), used);
        let x = random(batch * inputs, 30 + i as u64);
        let s = step(Op::FanIn(f.clone()), vec![inputs], vec![outputs]);
        let prepared = kernels::PreparedStep::new(&ctx, &s, batch, &x, &[])
            .expect("fan-in kernel builds")
            .expect("fan-in has a kernel");
        let what = format!("grouped fanin batch={batch} {inputs}->{outputs} group={group}");
        let labels = prepared.labels().join(" ");
        let kernel = if batch >= kernels::FEATURE_MAJOR_MIN_BATCH {
            "fanin_fm"
        } else {
            "fanin_group"
        };
        assert!(
            labels.contains(&format!("{kernel}_g{used}")),
            "{what}: ran {labels}"
        );
        let got = prepared.run(&ctx).expect("fan-in kernel runs");
        assert_close(
            &what,
            &got,
            &cpu::reference::fanin(&f, &x, batch),
            tolerance_for(f.activation, f.k),
        );
    }
}

/// Where a convolution's windows fall: stride and dilation `(height, width)`, padding
/// `[top, left, bottom, right]`.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    stride: (usize, usize),
    dilation: (usize, usize),
    pads: [usize; 4],
}

/// One stride and the same padding on every side, no dilation.
const fn plain(stride: usize, pad: usize) -> Geometry {
    Geometry {
        stride: (stride, stride),
        dilation: (1, 1),
        pads: [pad; 4],
    }
}

/// One convolution problem: shape, geometry, groups and fused activation, random data.
struct ConvProblem {
    batch: usize,
    conv: Conv2d,
    hw: (usize, usize),
    x: Vec<f32>,
}

impl ConvProblem {
    #[allow(clippy::too_many_arguments)] // the axes of the conv test table
    fn new(
        batch: usize,
        (cin, h, w): (usize, usize, usize),
        cout: usize,
        k: usize,
        geometry: Geometry,
        groups: usize,
        act: Activation,
        seed: u64,
    ) -> Self {
        Self {
            batch,
            conv: Conv2d {
                in_channels: cin,
                out_channels: cout,
                kernel_h: k,
                kernel_w: k,
                stride: geometry.stride,
                dilation: geometry.dilation,
                pads: geometry.pads,
                groups,
                weight: random(cout * cin / groups * k * k, seed),
                bias: random(cout, seed + 1),
                activation: act,
            },
            hw: (h, w),
            x: random(batch * cin * h * w, seed + 2),
        }
    }

    fn reference(&self) -> Vec<f32> {
        cpu::reference::conv2d(&self.conv, &self.x, self.batch, self.hw.0, self.hw.1)
    }

    /// Runs the problem on `ctx` (with its tile variant); returns the dispatch labels and the
    /// result.
    fn run(&self, ctx: &GpuContext) -> (String, Vec<f32>) {
        let c = &self.conv;
        let (oh, ow) = c.output_hw(self.hw.0, self.hw.1).expect("valid conv shape");
        let s = step(
            Op::Conv2d(c.clone()),
            vec![c.in_channels, self.hw.0, self.hw.1],
            vec![c.out_channels, oh, ow],
        );
        let prepared = kernels::PreparedStep::new(ctx, &s, self.batch, &self.x, &[])
            .expect("conv kernel builds")
            .expect("conv has a kernel");
        let labels = prepared.labels().join(" ");
        (labels, prepared.run(ctx).expect("conv kernel runs"))
    }

    /// Checks the result against the reference and that the launcher picked `kernel`.
    fn check(&self, ctx: &GpuContext, kernel: &str) {
        let c = &self.conv;
        let (labels, got) = self.run(ctx);
        let what = format!(
            "conv batch={} {}x{}x{} -> {} k={} stride={:?} dilation={:?} pads={:?} g={} {:?} ({:?} tiles, ran {labels})",
            self.batch,
            c.in_channels,
            self.hw.0,
            self.hw.1,
            c.out_channels,
            c.kernel_h,
            c.stride,
            c.dilation,
            c.pads,
            c.groups,
            c.activation,
            ctx.tiling,
        );
        assert!(labels.contains(kernel), "{what}: expected {kernel}");
        let terms = c.in_channels / c.groups * c.kernel_h * c.kernel_w;
        assert_close(
            &what,
            &got,
            &self.reference(),
            tolerance_for(c.activation, terms),
        );
    }
}

/// Every tile variant this adapter runs: its own and the others, forced (subgroup tiles only
/// where the device has subgroups of 8 or more).
fn all_tilings(ctx: Arc<GpuContext>) -> Vec<Arc<GpuContext>> {
    let mut contexts = vec![ctx.clone()];
    for tiles in [Tiling::Registers, Tiling::Shared, Tiling::Subgroup] {
        if tiles == ctx.tiling
            || (tiles == Tiling::Subgroup && !Tiling::subgroups_usable(&ctx.info, ctx.features))
        {
            continue;
        }
        let forced = GpuContext::new()
            .expect("another context on the same adapter")
            .with_tiling(tiles);
        contexts.push(Arc::new(forced));
    }
    contexts
}

/// Every convolution geometry in every tile variant (the launcher's choice per variant checked).
#[test]
fn conv2d_kernel_matches_cpu_reference_on_edge_shapes() {
    let Some(ctx) = gpu("conv2d_kernel_matches_cpu_reference_on_edge_shapes") else {
        return;
    };
    // TF "SAME" padding on stride-2 convs is asymmetric: k3 pads 0 before and 1 after, k5 1 and 2.
    let same3 = Geometry {
        pads: [0, 0, 1, 1],
        ..plain(2, 0)
    };
    let same5 = Geometry {
        pads: [1, 1, 2, 2],
        ..plain(2, 0)
    };
    let dilated = Geometry {
        dilation: (2, 2),
        ..plain(1, 2)
    };
    let wide = Geometry {
        stride: (1, 2),
        dilation: (2, 1),
        pads: [2, 0, 1, 3],
    };
    let strided_rows = Geometry {
        stride: (2, 1),
        dilation: (1, 1),
        pads: [1, 2, 0, 1],
    };
    let cases = [
        // batch, input, out, k, geometry, groups
        (1, (1, 28, 28), 6, 5, plain(1, 2), 1),
        (2, (3, 17, 13), 8, 3, plain(2, 1), 1), // stride 2 with padding, odd sizes
        (1, (3, 9, 9), 5, 3, plain(1, 0), 1),   // out channels not a multiple of 4
        (3, (8, 7, 5), 8, 1, plain(1, 0), 1),   // pointwise
        (2, (8, 11, 11), 8, 3, plain(1, 1), 8), // depthwise
        (2, (16, 15, 15), 16, 5, plain(2, 2), 16), // depthwise stride 2
        (1, (8, 6, 6), 16, 3, plain(1, 1), 2),  // grouped
        (1, (6, 5, 5), 12, 3, plain(2, 1), 3),  // grouped, 4 outputs per group
        (4, (32, 32, 32), 32, 3, plain(1, 1), 1),
        (2, (3, 16, 15), 8, 3, same3, 1),       // asymmetric padding
        (1, (8, 13, 14), 8, 5, same5, 8),       // depthwise, asymmetric padding
        (2, (4, 9, 10), 4, 3, dilated, 1),      // dilation
        (1, (5, 11, 12), 7, 3, wide, 1),        // per-axis stride and dilation
        (2, (6, 9, 9), 6, 3, dilated, 6),       // depthwise, dilated (direct kernel)
        (1, (5, 12, 11), 5, 7, plain(1, 3), 5), // depthwise 7x7
        (8, (4, 10, 9), 4, 3, strided_rows, 4), // depthwise, per-axis stride, batch 8
        (8, (16, 5, 7), 16, 3, plain(1, 1), 2), // grouped, 8 outputs per group, batch 8
        (1, (6, 4, 4), 6, 3, plain(1, 1), 6),   // depthwise, 4 columns: 4 x 4 tiles
        (2, (3, 7, 7), 3, 5, plain(2, 2), 3),   // depthwise 5x5 stride 2 to 4 x 4
        (1, (24, 14, 14), 24, 5, plain(1, 2), 24), // depthwise 5x5 on an EfficientNet plane
        (8, (12, 7, 7), 12, 3, plain(1, 1), 12), // depthwise on 7 x 7 planes, batch 8
        (1, (10, 29, 29), 10, 3, same3, 10),    // depthwise stride 2, TF padding, odd size
        (1, (3, 19, 19), 32, 3, plain(2, 1), 1), // the EfficientNet stem, scaled down
        (1, (16, 9, 9), 16, 1, plain(2, 0), 1), // pointwise, stride 2 (implicit GEMM)
        (2, (8, 6, 6), 12, 1, plain(1, 1), 1),  // pointwise, padded (implicit GEMM)
        (1, (4, 35, 33), 4, 7, plain(2, 3), 4), // depthwise 7x7 stride 2: the largest patch, 2 x 2 shared tiles
        (2, (3, 40, 19), 3, 3, plain(1, 1), 3), // depthwise, 3 x 2 shared tiles with tails
        (1, (16, 9, 9), 80, 3, plain(1, 1), 2), // grouped, 40 outputs per group: past a 32-channel tile
        (2, (5, 9, 10), 20, 3, dilated, 1),     // dilated, 45 terms, pixel octets across samples
        (3, (6, 7, 7), 40, 5, same5, 1),        // 150 terms, a 32-channel block and a tail
    ];
    for ctx in all_tilings(ctx) {
        for (i, &(b, input, cout, k, geometry, g)) in cases.iter().enumerate() {
            for act in activations_for(i, 2) {
                let p = ConvProblem::new(b, input, cout, k, geometry, g, act, i as u64 * 13);
                let c = &p.conv;
                let gemm = k == 1 && c.stride == (1, 1) && c.pads == [0; 4] && g == 1;
                let subgroup = g == 1 && cout >= 16;
                let kernel = match ctx.tiling {
                    _ if c.is_depthwise() && c.dilation != (1, 1) => "depthwise",
                    Tiling::Shared if c.is_depthwise() => "depthwise_shared",
                    Tiling::Shared => "conv_shared",
                    _ if c.is_depthwise() => "depthwise_tiled",
                    Tiling::Subgroup if subgroup && gemm && input.0 % 4 == 0 => "conv1x1_subgroup",
                    Tiling::Subgroup if subgroup => "conv_subgroup",
                    _ if gemm => "conv1x1",
                    _ => "conv_tiled",
                };
                p.check(&ctx, kernel);
            }
        }
    }
}

/// Pointwise convolutions run as a GEMM in every tile variant: pixels per plane and input
/// channels multiples of 4 (vec4 loads, odd and even quad counts), input channels only
/// (`conv1x1_wvec4`: unaligned pixel octets) or neither, channel tiles of 8, 4, 2 and 1, input
/// channels across and within the shared variant's 16-deep slices, columns and channels past
/// its 32 x 32 tiles and past the subgroup variant's 32-channel blocks (one channel over, half
/// a block), planes whose last pixel octet ends half-way, batch 1 and 8.
#[test]
fn conv1x1_gemm_matches_cpu_reference_in_every_tiling() {
    let Some(ctx) = gpu("conv1x1_gemm_matches_cpu_reference_in_every_tiling") else {
        return;
    };
    let cases = [
        // batch, (cin, h, w), cout
        (1, (8, 4, 4), 8),
        (1, (3, 7, 7), 16),
        (8, (16, 7, 7), 12),
        (1, (37, 6, 6), 6),
        (8, (5, 3, 5), 7),
        (2, (144, 14, 14), 24),
        (1, (32, 8, 12), 33),
        (1, (1, 1, 1), 2),
        (3, (64, 9, 11), 40),
        (8, (12, 2, 6), 20),
        (1, (8, 2, 2), 16),
        (1, (192, 7, 7), 48), // an EfficientNet 7 x 7 layer, scaled down
        (2, (20, 1, 1), 80),  // a squeeze-excite FC: one pixel per plane
        (8, (4, 3, 3), 6),    // 9-pixel planes: every alignment of a pixel octet
        (8, (16, 6, 6), 64),  // 36-pixel planes: the last octet's second quad is past the plane
        (1, (48, 10, 10), 96),
        (2, (8, 5, 5), 16), // half a subgroup block, scalar pixels
        (1, (4, 1, 1), 40), // one pixel per plane, a block and a quarter
    ];
    for ctx in all_tilings(ctx) {
        for (i, &(b, input, cout)) in cases.iter().enumerate() {
            let (cin, h, w) = input;
            let subgroup = ctx.tiling == Tiling::Subgroup && cin % 4 == 0 && cout >= 16;
            let kernel = match ctx.tiling {
                Tiling::Subgroup if subgroup && (h * w) % 4 == 0 => "conv1x1_subgroup_vec4",
                Tiling::Subgroup if subgroup => "conv1x1_subgroup_scalar",
                Tiling::Registers | Tiling::Subgroup if (h * w) % 4 == 0 && cin % 4 == 0 => {
                    "conv1x1_vec4_c"
                }
                Tiling::Registers | Tiling::Subgroup if cin % 4 == 0 => "conv1x1_wvec4_c",
                Tiling::Registers | Tiling::Subgroup => "conv1x1_c",
                _ => "conv_shared_k1x1",
            };
            for act in activations_for(i, 2) {
                ConvProblem::new(b, input, cout, 1, plain(1, 0), 1, act, 50 + i as u64)
                    .check(&ctx, kernel);
            }
        }
    }
}

/// A squeeze-excite gate fused into the 1x1 convolution after it (`gated_conv1x1`) equals the
/// multiply followed by the convolution: vec4 and scalar pixels (6 x 6 and 7 x 7 planes),
/// batches whose pixel tiles straddle samples (each with its own gate), a channel tail past a
/// 32-channel block, a one-pixel plane.
#[test]
fn gated_conv1x1_matches_the_gate_then_the_convolution() {
    let Some(ctx) = gpu("gated_conv1x1_matches_the_gate_then_the_convolution") else {
        return;
    };
    let Some(ctx) = all_tilings(ctx)
        .into_iter()
        .find(|c| c.tiling == Tiling::Subgroup)
    else {
        eprintln!(
            "SKIPPED gated_conv1x1_matches_the_gate_then_the_convolution: the adapter has no \
             subgroups of 8 or more, so no gated kernel"
        );
        return;
    };
    let cases = [
        // batch, (cin, h, w), cout
        (3, (16, 6, 6), 24),
        (2, (36, 7, 7), 40),
        (1, (8, 14, 14), 96),
        (5, (4, 3, 3), 16),
        (2, (12, 1, 1), 33),
    ];
    for (i, &(b, input, cout)) in cases.iter().enumerate() {
        let (cin, h, w) = input;
        let act = [Activation::None, Activation::Silu][i % 2];
        let p = ConvProblem::new(b, input, cout, 1, plain(1, 0), 1, act, 90 + i as u64);
        let gate = random(b * cin, 200 + i as u64);
        let gated: Vec<f32> =
            p.x.iter()
                .enumerate()
                .map(|(j, v)| v * gate[j / (h * w)])
                .collect();
        let want = cpu::reference::conv2d(&p.conv, &gated, b, h, w);
        let op = Op::Conv2d(p.conv.clone());
        let weights = kernels::OpWeights::upload(&ctx, "gated", &op)
            .expect("weights upload")
            .expect("convolutions carry weights");
        let x = edgecut::gpu::upload(&ctx, "gated.x", &p.x).expect("upload");
        let g = edgecut::gpu::upload(&ctx, "gated.gate", &gate).expect("upload");
        let y = edgecut::gpu::storage(&ctx, "gated.y", (want.len() * 4) as u64).expect("output");
        let kernel =
            kernels::gated_conv1x1(&ctx, "gated", &p.conv, b, (h, w), &weights, &x, &g, &y)
                .expect("gated kernel builds");
        assert!(kernel.label.ends_with("_gated"), "{}", kernel.label);
        let prepared = kernels::PreparedStep::from_kernel(kernel, y, want.len(), vec![x, g]);
        let got = prepared.run(&ctx).expect("gated kernel runs");
        let what = format!("gated conv1x1 batch={b} {cin}x{h}x{w} -> {cout} {act:?}");
        assert_close(&what, &got, &want, tolerance_for(act, cin));
    }
}

#[test]
fn pool_kernels_match_cpu_reference() {
    let Some(ctx) = gpu("pool_kernels_match_cpu_reference") else {
        return;
    };
    // batch, channels, h, w, kernel, stride, pads [t, l, b, r], ceil_mode
    for (i, &(b, c, h, w, k, s, pads, ceil_mode)) in [
        (1, 1, 28, 28, 2, 2, [0; 4], false),
        (2, 3, 7, 9, 3, 2, [1; 4], false),
        (3, 4, 5, 5, 2, 1, [0; 4], false),
        (1, 2, 13, 11, 3, 3, [1; 4], false),
        (2, 3, 7, 8, 3, 2, [0; 4], true), // partial last windows
        (1, 2, 10, 9, 3, 2, [1, 0, 2, 1], true), // asymmetric padding
        (2, 1, 6, 7, 2, 2, [0, 1, 1, 0], false),
    ]
    .iter()
    .enumerate()
    {
        for (kind, count_include_pad) in [
            (PoolKind::Max, false),
            (PoolKind::Avg, false),
            (PoolKind::Avg, true),
        ] {
            let pool = Pool {
                kind,
                kernel_h: k,
                kernel_w: k,
                stride: (s, s),
                pads,
                ceil_mode,
                count_include_pad,
            };
            let (oh, ow) = pool.output_hw(h, w).expect("valid pool shape");
            let x = random(b * c * h * w, i as u64);
            let want = cpu::reference::pool(&pool, &x, b * c, h, w);
            let st = step(Op::Pool(pool), vec![c, h, w], vec![c, oh, ow]);
            let got = kernels::run_step(&ctx, &st, b, &x, &[]).expect("pool kernel runs");
            let tol = if kind == PoolKind::Max {
                Tolerance::Exact
            } else {
                Tolerance::Close
            };
            assert_close(&format!("{pool:?} case {i}"), &got, &want, tol);
        }
        let x = random(b * c * h * w, 99 + i as u64);
        let st = step(Op::GlobalAvgPool, vec![c, h, w], vec![c, 1, 1]);
        let got = kernels::run_step(&ctx, &st, b, &x, &[]).expect("global avgpool runs");
        assert_close(
            &format!("global avgpool case {i}"),
            &got,
            &cpu::reference::global_avgpool(&x, b * c, h * w),
            Tolerance::Close,
        );
    }
}

/// Elementwise kernels, one value per invocation (odd lengths) and four (`_vec4`: lengths and
/// gate planes in fours), a gate over 7 x 7 planes (quads straddle channels: scalar) and over
/// 1 x 1 planes, batch 1 to 8.
/// Global average pooling in its three forms: one invocation per small plane, a workgroup per
/// large plane with vec4 loads (size a multiple of 4) or scalar ones, batch 1 and 8.
#[test]
fn global_avgpool_matches_cpu_reference_on_small_and_large_planes() {
    let Some(ctx) = gpu("global_avgpool_matches_cpu_reference_on_small_and_large_planes") else {
        return;
    };
    // batch, channels, h, w, kernel
    for (i, &(b, c, h, w, kernel)) in [
        (1, 3, 7, 7, "global_avgpool"),
        (8, 5, 14, 14, "global_avgpool"),
        (1, 32, 112, 112, "global_avgpool_wg_vec4"),
        (8, 3, 28, 28, "global_avgpool_wg_vec4"),
        (2, 3, 23, 23, "global_avgpool_wg"),
        (1, 1, 1, 1031, "global_avgpool_wg"),
    ]
    .iter()
    .enumerate()
    {
        let x = random(b * c * h * w, 300 + i as u64);
        let st = step(Op::GlobalAvgPool, vec![c, h, w], vec![c, 1, 1]);
        let prepared = kernels::PreparedStep::new(&ctx, &st, b, &x, &[])
            .expect("global avgpool builds")
            .expect("global avgpool has a kernel");
        let labels = prepared.labels().join(" ");
        assert!(
            labels.ends_with(kernel),
            "{b}x{c}x{h}x{w}: expected {kernel}, ran {labels}"
        );
        assert_close(
            &format!("global avgpool {b}x{c}x{h}x{w}"),
            &prepared.run(&ctx).expect("global avgpool runs"),
            &cpu::reference::global_avgpool(&x, b * c, h * w),
            Tolerance::Close,
        );
    }
}

#[test]
fn elementwise_kernels_match_cpu_reference() {
    let Some(ctx) = gpu("elementwise_kernels_match_cpu_reference") else {
        return;
    };
    // batch, channels, h, w, whether the channel gate runs on quads
    for (i, &(b, c, h, w, gate_quads)) in [
        (3, 5, 7, 3, false),
        (2, 4, 4, 6, true),
        (1, 8, 7, 7, false),
        (8, 6, 1, 1, false),
        (1, 3, 2, 2, true),
    ]
    .iter()
    .enumerate()
    {
        let n = b * c * h * w;
        let seed = 10 * i as u64;
        let a = random(n, seed + 1);
        let other = random(n, seed + 2);
        let shape = vec![c, h, w];
        for act in ACTIVATIONS {
            let st = step(Op::Activation(act), shape.clone(), shape.clone());
            let got = kernels::run_step(&ctx, &st, b, &a, &[]).expect("activation runs");
            assert_close(
                &format!("activation {act:?} {b}x{shape:?}"),
                &got,
                &cpu::reference::activation(act, &a),
                tolerance_for(act, 1),
            );
            let st = step(
                Op::Binary(Binary {
                    op: BinaryOp::Add,
                    operand: BinaryOperand::Tensor(Operand::BlockInput),
                    operand_shape: shape.clone(),
                    reverse: false,
                    activation: act,
                }),
                shape.clone(),
                shape.clone(),
            );
            let got = kernels::run_step(&ctx, &st, b, &a, &[&other]).expect("add runs");
            assert_close(
                &format!("add {act:?} {b}x{shape:?}"),
                &got,
                &cpu::reference::add(&a, &other, act),
                tolerance_for(act, 1),
            );
        }
        // Squeeze-excite gate: [C,1,1] times [C,H,W].
        let gate = random(b * c, seed + 3);
        let st = step(
            Op::Binary(Binary {
                op: BinaryOp::Mul,
                operand: BinaryOperand::Tensor(Operand::Saved("x".into())),
                operand_shape: shape.clone(),
                reverse: false,
                activation: Activation::None,
            }),
            vec![c, 1, 1],
            shape.clone(),
        );
        let prepared = kernels::PreparedStep::new(&ctx, &st, b, &gate, &[&other])
            .expect("mul builds")
            .expect("mul has a kernel");
        let labels = prepared.labels().join(" ");
        assert_eq!(
            labels.ends_with("mul_vec4"),
            gate_quads,
            "{b}x{shape:?} ran {labels}"
        );
        assert_close(
            &format!("channel gate {b}x{shape:?}"),
            &prepared.run(&ctx).expect("mul runs"),
            &cpu::reference::mul(&gate, &other, h * w),
            Tolerance::Close,
        );
    }
}

#[test]
fn softmax_and_exit_stats_match_cpu_reference() {
    let Some(ctx) = gpu("softmax_and_exit_stats_match_cpu_reference") else {
        return;
    };
    for &(b, classes) in &[(1, 10), (7, 3), (65, 1000)] {
        let mut x = random(b * classes, classes as u64);
        x.iter_mut().for_each(|v| *v *= 8.0);
        let st = step(Op::Softmax { axis: 0 }, vec![classes], vec![classes]);
        let got = kernels::run_step(&ctx, &st, b, &x, &[]).expect("softmax runs");
        assert_close(
            "softmax",
            &got,
            &cpu::reference::softmax(&x, classes),
            Tolerance::Approximate,
        );
    }
}
