//! The kernel suite: dense and fan-in at densities 100/25/10/5 % and batch 1/64, conv2d,
//! convolutions at EfficientNet-B0 shapes (1x1 with a dense twin at the same GEMM shape, the
//! 3x3 stem, depthwise 3x3 and 5x5), pools and the exit head, each with random data, its CPU
//! reference, FLOP and compulsory bytes.

use crate::cpu;
use crate::engine::{run_steps_cpu, run_steps_reference};
use crate::gpu::{self, kernels, GpuContext, GpuError};
use crate::model::{Activation, Conv2d, Dense, FanIn, Op, Pool, PoolKind, Step};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One benchmark problem.
pub struct KernelCase {
    /// Kernel family (`dense`, `fanin`, `conv2d`, `depthwise`, `conv1x1`, `dense_gemm` (the
    /// dense kernel at a `conv1x1` case's GEMM shape, same shape label), `conv3x3`,
    /// `depthwise3x3`, `depthwise5x5`, `maxpool`, `global_avgpool`, `exit_head`).
    pub name: String,
    /// Shape, for reports.
    pub shape: String,
    /// Batch.
    pub batch: usize,
    /// Density (fan-in), 1 otherwise.
    pub density: f64,
    /// FLOP per run (2 per multiply-add).
    pub flops: u64,
    /// Compulsory bytes per run (weights, indices, input and output once).
    pub bytes: u64,
    /// Whether memory bandwidth (not arithmetic) bounds it.
    pub memory_bound: bool,
    /// The op (exit head: a softmax step over the logits, evaluated with `exit_stats`).
    pub step: Step,
    /// Input values.
    pub input: Vec<f32>,
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn random_rows(inputs: usize, outputs: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(outputs * k);
    for _ in 0..outputs {
        let mut row: Vec<u32> = rand::seq::index::sample(&mut rng, inputs, k)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        row.sort_unstable();
        out.extend(row);
    }
    out
}

fn step(label: &str, op: Op, input: Vec<usize>, output: Vec<usize>) -> Step {
    Step {
        label: format!("bench.{label}"),
        op,
        input_shape: input,
        output_shape: output,
        save_as: None,
        from: None,
    }
}

/// Dense `inputs → outputs` on `batch` rows (ReLU fused).
pub fn dense_case(inputs: usize, outputs: usize, batch: usize, seed: u64) -> KernelCase {
    let d = Dense {
        inputs,
        outputs,
        weight: random(inputs * outputs, seed),
        bias: random(outputs, seed + 1),
        activation: Activation::Relu,
    };
    KernelCase {
        name: "dense".into(),
        shape: format!("{inputs}x{outputs}"),
        batch,
        density: 1.0,
        flops: 2 * (batch * inputs * outputs) as u64,
        bytes: 4 * (inputs * outputs + batch * (inputs + outputs)) as u64,
        memory_bound: batch == 1,
        step: step("dense", Op::Dense(d), vec![inputs], vec![outputs]),
        input: random(batch * inputs, seed + 2),
    }
}

/// The arithmetic-ceiling problem: the dense kernel at a large size.
pub fn dense_ceiling_case(quick: bool) -> KernelCase {
    if quick {
        dense_case(512, 512, 512, 90)
    } else {
        dense_case(1024, 1024, 512, 90)
    }
}

/// The suite; `quick` keeps the sizes that finish in seconds on lavapipe.
pub fn kernel_suite(quick: bool) -> Vec<KernelCase> {
    let mut cases = Vec::new();
    let shapes: &[(usize, usize)] = if quick {
        &[(800, 512)]
    } else {
        &[(800, 512), (2048, 2048)]
    };
    for &(inputs, outputs) in shapes {
        for batch in [1usize, 64] {
            cases.push(dense_case(inputs, outputs, batch, 1));
            for density in [1.0f64, 0.25, 0.10, 0.05] {
                cases.push(fanin_case(inputs, outputs, batch, density, 1, 4));
            }
            for density in [0.25f64, 0.10, 0.05] {
                cases.push(fanin_case(inputs, outputs, batch, density, 8, 4));
            }
        }
    }
    cases.push(conv_case("conv2d", 32, 32, 1));
    cases.push(conv_case("depthwise", 32, if quick { 56 } else { 112 }, 32));
    cases.extend(efficientnet_cases(quick));
    let (c, hw) = (32, 56);
    cases.push(KernelCase {
        name: "maxpool".into(),
        shape: format!("2x2 {hw}x{hw}x{c}"),
        batch: 1,
        density: 1.0,
        flops: 0,
        bytes: 4 * (c * hw * hw + c * hw * hw / 4) as u64,
        memory_bound: true,
        step: step(
            "maxpool",
            Op::Pool(Pool {
                kind: PoolKind::Max,
                kernel_h: 2,
                kernel_w: 2,
                stride: (2, 2),
                pads: [0; 4],
                ceil_mode: false,
                count_include_pad: false,
            }),
            vec![c, hw, hw],
            vec![c, hw / 2, hw / 2],
        ),
        input: random(c * hw * hw, 11),
    });
    cases.push(KernelCase {
        name: "global_avgpool".into(),
        shape: format!("{hw}x{hw}x{c}"),
        batch: 1,
        density: 1.0,
        flops: 0,
        bytes: 4 * (c * hw * hw + c) as u64,
        memory_bound: true,
        step: step(
            "global_avgpool",
            Op::GlobalAvgPool,
            vec![c, hw, hw],
            vec![c, 1, 1],
        ),
        input: random(c * hw * hw, 12),
    });
    let (batch, classes) = (64, 1000);
    cases.push(KernelCase {
        name: "exit_head".into(),
        shape: format!("{classes} classes"),
        batch,
        density: 1.0,
        flops: 0,
        bytes: 4 * (batch * classes + batch * 4) as u64,
        memory_bound: true,
        step: step(
            "exit_head",
            Op::Softmax { axis: 0 },
            vec![classes],
            vec![classes],
        ),
        input: random(batch * classes, 13),
    });
    cases
}

/// Fixed-fan-in `inputs → outputs` at `density` (k rounded to a multiple of 4 so the vec4
/// path runs, as in shipped models), random distinct rows; with `group > 1` (`fanin_grouped`)
/// each row is shared by `group` consecutive outputs, as in a grouped pattern.
pub fn fanin_case(
    inputs: usize,
    outputs: usize,
    batch: usize,
    density: f64,
    group: usize,
    seed: u64,
) -> KernelCase {
    let k = (((inputs as f64 * density) / 4.0).round() as usize * 4).clamp(4, inputs);
    let indices = random_rows(inputs, outputs / group, k, seed)
        .chunks(k)
        .flat_map(|row| std::iter::repeat_n(row, group).flatten().copied())
        .collect();
    let f = FanIn {
        inputs,
        outputs,
        k,
        indices,
        weights: random(outputs * k, seed + 1),
        bias: random(outputs, seed + 2),
        activation: Activation::Relu,
    };
    KernelCase {
        name: if group > 1 { "fanin_grouped" } else { "fanin" }.into(),
        shape: format!("{inputs}x{outputs}"),
        batch,
        density,
        flops: 2 * (batch * outputs * k) as u64,
        bytes: (8 * outputs * k + 4 * batch * (inputs + outputs)) as u64,
        memory_bound: batch == 1,
        step: step("fanin", Op::FanIn(f), vec![inputs], vec![outputs]),
        input: random(batch * inputs, seed + 3),
    }
}

/// EfficientNet-B0 convolution shapes: pointwise (expand and project) convolutions, each
/// followed by the dense kernel at the same GEMM shape (`dense_gemm`: `hw²` rows, `cin` inputs,
/// `cout` outputs), the 3x3 stride-2 stem, depthwise 3x3 at 112² and 5x5 at 14².
pub fn efficientnet_cases(quick: bool) -> Vec<KernelCase> {
    let pointwise: &[(usize, usize, usize)] = if quick {
        &[(56, 144, 24), (14, 480, 80)]
    } else {
        &[(112, 32, 16), (56, 144, 24), (14, 480, 80), (7, 1152, 320)]
    };
    let mut cases = Vec::new();
    for &(hw, cin, cout) in pointwise {
        let conv = conv1x1_case(hw, cin, cout);
        let mut dense = dense_case(cin, cout, hw * hw, 20);
        dense.name = "dense_gemm".into();
        dense.shape = conv.shape.clone();
        cases.push(conv);
        cases.push(dense);
    }
    cases.push(conv_geometry_case("conv3x3", (3, 224), 32, 3, 2, 1));
    cases.push(conv_geometry_case("depthwise3x3", (32, 112), 32, 3, 1, 32));
    cases.push(conv_geometry_case(
        "depthwise5x5",
        (480, 14),
        480,
        5,
        1,
        480,
    ));
    cases
}

/// 1x1 convolution `cin → cout` over one `hw × hw` image (SiLU fused), as in EfficientNet's
/// expand and project layers.
pub fn conv1x1_case(hw: usize, cin: usize, cout: usize) -> KernelCase {
    let mut case = conv_geometry_case("conv1x1", (cin, hw), cout, 1, 1, 1);
    case.shape = format!("{hw}x{hw}x{cin}->{cout}");
    case
}

/// A `k × k` convolution of one `(channels, hw × hw)` image to `out` channels at `stride`
/// with "same" padding (`k / 2` on every side), SiLU fused; `groups == channels` is depthwise.
pub fn conv_geometry_case(
    name: &str,
    (ch, hw): (usize, usize),
    out: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> KernelCase {
    let conv = Conv2d {
        in_channels: ch,
        out_channels: out,
        kernel_h: k,
        kernel_w: k,
        stride: (stride, stride),
        dilation: (1, 1),
        pads: [k / 2; 4],
        groups,
        weight: random(out * ch / groups * k * k, 30),
        bias: random(out, 31),
        activation: Activation::Silu,
    };
    let (oh, ow) = conv.output_hw(hw, hw).expect("suite geometries are valid");
    let macs = out * oh * ow * ch / groups * k * k;
    KernelCase {
        name: name.into(),
        shape: format!("{k}x{k}/{stride} {hw}x{hw}x{ch}->{out}"),
        batch: 1,
        density: 1.0,
        flops: 2 * macs as u64,
        bytes: 4 * (out * ch / groups * k * k + ch * hw * hw + out * oh * ow) as u64,
        memory_bound: groups == ch,
        step: step(name, Op::Conv2d(conv), vec![ch, hw, hw], vec![out, oh, ow]),
        input: random(ch * hw * hw, 32),
    }
}

/// 3x3 convolution (stride 1, padding 1, ReLU6) of one `hw × hw × channels` image;
/// `groups == channels` is depthwise.
pub fn conv_case(name: &str, channels: usize, hw: usize, groups: usize) -> KernelCase {
    let (ch, out) = (channels, channels);
    let conv = Conv2d {
        in_channels: ch,
        out_channels: out,
        kernel_h: 3,
        kernel_w: 3,
        stride: (1, 1),
        dilation: (1, 1),
        pads: [1; 4],
        groups,
        weight: random(out * ch / groups * 9, 8),
        bias: random(out, 9),
        activation: Activation::Relu6,
    };
    let macs = out * hw * hw * ch / groups * 9;
    KernelCase {
        name: name.into(),
        shape: format!("3x3 {hw}x{hw}x{ch}->{out}"),
        batch: 1,
        density: 1.0,
        flops: 2 * macs as u64,
        bytes: 4 * (out * ch / groups * 9 + ch * hw * hw + out * hw * hw) as u64,
        memory_bound: groups == channels,
        step: step(name, Op::Conv2d(conv), vec![ch, hw, hw], vec![out, hw, hw]),
        input: random(ch * hw * hw, 10),
    }
}

impl KernelCase {
    fn is_exit_head(&self) -> bool {
        self.name == "exit_head"
    }

    /// The CPU reference result.
    pub fn reference(&self) -> Vec<f32> {
        self.on_cpu(run_steps_reference)
    }

    /// The result on the CPU backend (its fast kernels): what the CPU rows of the benchmark
    /// time.
    pub fn run_cpu(&self) -> Vec<f32> {
        self.on_cpu(run_steps_cpu)
    }

    fn on_cpu(&self, run: fn(&[Step], Vec<f32>, usize) -> Vec<f32>) -> Vec<f32> {
        if self.is_exit_head() {
            let classes = self.step.output_shape[0];
            return cpu::exit_stats(&self.input, classes)
                .into_iter()
                .flat_map(|s| [s.confidence, s.entropy, s.argmax as f32, 0.0])
                .collect();
        }
        run(
            std::slice::from_ref(&self.step),
            self.input.clone(),
            self.batch,
        )
    }

    /// Uploads the problem and builds its dispatch on `ctx`.
    pub fn prepare(&self, ctx: &GpuContext) -> Result<kernels::PreparedStep, GpuError> {
        if self.is_exit_head() {
            let classes = self.step.output_shape[0];
            let x = gpu::upload(ctx, "bench.exit.logits", &self.input)?;
            let y = gpu::storage(ctx, "bench.exit.stats", (self.batch * 16) as u64)?;
            let k = kernels::exit(ctx, "bench.exit", "exit_stats", self.batch, classes, &x, &y)?;
            return Ok(kernels::PreparedStep::from_kernel(
                k,
                y,
                self.batch * 4,
                vec![x],
            ));
        }
        kernels::PreparedStep::new(ctx, &self.step, self.batch, &self.input, &[])?.ok_or_else(
            || GpuError::Failed {
                context: self.name.clone(),
                reason: "op has no kernel".into(),
            },
        )
    }
}
