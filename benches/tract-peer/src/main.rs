//! The tract runner of the peer benchmark (`benches/peers.py`): loads an ONNX file with tract,
//! fixes the input shape (so the batch is part of the optimised model, as a deployment would),
//! optimises it, runs it a given number of times and prints the per-run times as one JSON object.
//!
//! Run:
//!   tract-peer model.onnx --input x.npy [--batch 8] [--output y.npy] [--repeat 20] [--warmup 2]
//!   tract-peer model.onnx --batch 8 [--seed 0] ...   (seeded uniform input in [-1, 1))
//!
//! With `--input`, the array's shape is the input shape (`--batch`, if given, must match its
//! first dimension); otherwise the model's declared input shape with the batch set to `--batch`.
//! The same input goes to every engine in the benchmark, and `--output` writes the last run's
//! output as float32 `.npy` so the script can check that the engines agree.
//!
//! Threads: one. tract runs a model on the calling thread; its optional multi-threaded executor
//! (tract-linalg's `multithread-mm` feature) covers matrix products only and is not enabled here.
//! Each run reuses one tract state (its buffers), as edgecut's plan and onnxruntime's session do.

use anyhow::{bail, ensure, Context, Result};
use npyz::WriterBuilder;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

/// The tract version in `Cargo.toml` (pinned with `=`), reported with the timings.
const TRACT_VERSION: &str = "0.23.9";

/// Largest input accepted, in elements (a 224x224 RGB batch of 512 is 77M): bounds the
/// allocation before a shape from the command line or a file is trusted.
const MAX_INPUT_ELEMS: usize = 1 << 28;

const USAGE: &str = "usage: tract-peer <model.onnx> (--input x.npy | --batch N [--seed S]) \
                     [--output y.npy] [--repeat N] [--warmup N]";

/// Command-line options.
struct Options {
    model: PathBuf,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    batch: Option<usize>,
    seed: u64,
    repeat: usize,
    warmup: usize,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut model = None;
    let mut opts = Options {
        model: PathBuf::new(),
        input: None,
        output: None,
        batch: None,
        seed: 0,
        repeat: 10,
        warmup: 2,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| -> Result<usize> {
            v.parse()
                .with_context(|| format!("{name} takes a non-negative integer, not '{v}'"))
        };
        match arg.as_str() {
            "--input" => opts.input = Some(value("--input")?.into()),
            "--output" => opts.output = Some(value("--output")?.into()),
            "--batch" => opts.batch = Some(number("--batch", value("--batch")?)?),
            "--seed" => opts.seed = number("--seed", value("--seed")?)? as u64,
            "--repeat" => opts.repeat = number("--repeat", value("--repeat")?)?,
            "--warmup" => opts.warmup = number("--warmup", value("--warmup")?)?,
            "-h" | "--help" => bail!("{USAGE}"),
            flag if flag.starts_with('-') => bail!("unknown option '{flag}'\n{USAGE}"),
            path if model.is_none() => model = Some(PathBuf::from(path)),
            extra => bail!("unexpected argument '{extra}'\n{USAGE}"),
        }
    }
    opts.model = model.with_context(|| format!("no model given\n{USAGE}"))?;
    ensure!(opts.repeat >= 1, "--repeat must be at least 1");
    ensure!(
        opts.batch != Some(0),
        "--batch must be at least 1 (a batch of 0 has nothing to time)"
    );
    ensure!(
        opts.input.is_some() || opts.batch.is_some(),
        "give --input x.npy or --batch N\n{USAGE}"
    );
    Ok(opts)
}

/// Reads a C-order float32 `.npy` array, checking its size before allocating for it.
fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a NumPy .npy file", path.display()))?;
    ensure!(
        file.order() == npyz::Order::C,
        "{}: Fortran-order array; save it C-contiguous",
        path.display()
    );
    let dtype = match file.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => bail!("{}: dtype {other:?} is not float32", path.display()),
    };
    ensure!(
        dtype == "<f4",
        "{}: dtype '{dtype}' is not float32 ('<f4'); save the input as float32",
        path.display()
    );
    let shape = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .with_context(|| format!("{}: dimension out of range", path.display()))?;
    let elems = checked_elems(&shape)
        .with_context(|| format!("{}: shape {shape:?} is too large", path.display()))?;
    ensure!(
        elems * 4 <= bytes.len(),
        "{}: shape {shape:?} needs {} bytes of data but the file holds {}",
        path.display(),
        elems * 4,
        bytes.len()
    );
    let data = file
        .into_vec::<f32>()
        .with_context(|| format!("{}: reading the data", path.display()))?;
    Tensor::from_shape(&shape, &data)
}

/// Writes `tensor` (float32) as a C-order `.npy` file.
fn write_npy(path: &Path, tensor: &Tensor) -> Result<()> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    writer.extend(tensor.to_plain_array_view::<f32>()?.iter().copied())?;
    writer.finish()?;
    Ok(())
}

/// The element count of `shape`, or `None` when it overflows or exceeds [`MAX_INPUT_ELEMS`].
fn checked_elems(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_INPUT_ELEMS)
}

/// Seeded input in [-1, 1) from a SplitMix64 stream: reproducible without a random crate.
fn seeded_input(shape: &[usize], seed: u64) -> Result<Tensor> {
    let elems =
        checked_elems(shape).with_context(|| format!("input shape {shape:?} is too large"))?;
    let mut state = seed;
    let data: Vec<f32> = (0..elems)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // The top 24 bits as a fraction in [0, 1), scaled to [-1, 1).
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_shape(shape, &data)
}

/// The model's declared input shape with the batch (first dimension) set to `batch`.
fn declared_shape(model: &InferenceModel, batch: usize) -> Result<Vec<usize>> {
    let fact = model.input_fact(0)?;
    let mut shape = vec![batch];
    for (i, dim) in fact.shape.dims().enumerate().skip(1) {
        let size = dim
            .concretize()
            .and_then(|d| d.to_usize().ok())
            .with_context(|| {
                format!("input dimension {i} is not a fixed size; pass the input as --input x.npy")
            })?;
        shape.push(size);
    }
    ensure!(
        shape.len() >= 2,
        "the model's input has no declared rank; pass the input as --input x.npy"
    );
    Ok(shape)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("tract-peer: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let opts = parse_args(args)?;
    let t = Instant::now();
    let model = tract_onnx::onnx()
        .model_for_path(&opts.model)
        .with_context(|| format!("loading {}", opts.model.display()))?;
    let load_seconds = t.elapsed().as_secs_f64();

    let input = match &opts.input {
        Some(path) => {
            let x = read_npy(path)?;
            if let Some(batch) = opts.batch {
                ensure!(
                    x.shape().first() == Some(&batch),
                    "--batch {batch} does not match {} of shape {:?}",
                    path.display(),
                    x.shape()
                );
            }
            x
        }
        None => {
            let batch = opts.batch.context("--batch is required without --input")?;
            seeded_input(&declared_shape(&model, batch)?, opts.seed)?
        }
    };
    let input_shape = input.shape().to_vec();

    let t = Instant::now();
    let plan = model
        .with_input_fact(0, f32::fact(&input_shape).into())?
        .into_optimized()
        .context("optimising the model for this input shape")?
        .into_runnable()?;
    let optimise_seconds = t.elapsed().as_secs_f64();

    let mut state = plan.spawn()?;
    let input = input.into_tvalue();
    for _ in 0..opts.warmup {
        state.run(tvec!(input.clone()))?;
    }
    let mut run_seconds = Vec::with_capacity(opts.repeat);
    let mut output = None;
    for _ in 0..opts.repeat {
        let t = Instant::now();
        let outputs = state.run(tvec!(input.clone()))?;
        run_seconds.push(t.elapsed().as_secs_f64());
        output = outputs.into_iter().next();
    }
    let output = output.context("the model has no output")?;
    let output = output.cast_to::<f32>()?;
    if let Some(path) = &opts.output {
        write_npy(path, &output)?;
    }
    let report = serde_json::json!({
        "engine": "tract",
        "tract_version": TRACT_VERSION,
        "threads": 1,
        "input_shape": input_shape,
        "output_shape": output.shape(),
        "load_seconds": load_seconds,
        "optimise_seconds": optimise_seconds,
        "warmup_runs": opts.warmup,
        "run_seconds": run_seconds,
    });
    println!("{report}");
    Ok(())
}
