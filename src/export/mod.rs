//! ONNX export: a block range of a model as a standard ONNX file, the head and tail of a split,
//! and a Triton model repository of tails, so that a server needs nothing of edgecut.
//!
//! - [`to_onnx`]: blocks `a..b` as a `ModelProto` (opset 13, or 14 when a `hard_swish` needs
//!   it; dynamic batch dimension `N`), input `input`, output `output`. The input is FP32, or for
//!   a tail receiving an encoded split tensor ([`Encoding`]): FP16 followed by a `Cast` to
//!   float, or UINT8 data with per-sample `scale` `[N, 1]` and `zero_point` `[N, 1]` reshaped to
//!   `[N]` and dequantized by `DequantizeLinear` on axis 0. edgecut's INT8 codes are signed;
//!   on this wire a code travels as `code + 128` and the zero point as `zero_point + 128`,
//!   which dequantizes to the same value.
//! - [`write_split`]: `head.onnx` (model input → output of the cut block, FP32) and `tail.onnx`
//!   (the encoded cut tensor → model output) in a folder.
//! - [`pixels_to_onnx`] / [`write_full_pixels`]: the whole model of an image model (one whose
//!   manifest has preprocessing) taking the 8-bit image itself, `input` UINT8 `[N, 3, H, W]`
//!   (the resized and cropped pixels, channels in the model's order): `Cast` to float, then
//!   the manifest's `(pixel * scale - mean) / std` per channel as `Mul`, `Sub`, `Div`, the
//!   same operations in the same order as edgecut's preprocessing. Server-only then sends one
//!   byte per input value, as the cost model prices it.
//! - [`write_triton_repo`]: the full model (and, for image models, its 8-bit pixel twin) and
//!   one tail per cut candidate and encoding, named by [`tail_model_name`] and
//!   [`pixel_model_name`], each as `<name>/config.pbtxt` + `<name>/1/model.onnx`.
//!
//! Exit heads are not exported: a head or tail computes the main path only (the early-exit
//! decision stays with the device, which runs its own exits).
//! How each native op is written: see the docs of `src/export/graph.rs` (fixed fan-in becomes a dense
//! `Gemm` with zeros for the missing connections).

mod graph;
mod triton;

pub use graph::BATCH_DIM;
pub use triton::{
    pixel_model_name, tail_model_name, write_triton_repo, TritonModel, TRITON_MAX_BATCH_SIZE,
};

use crate::encoding::Encoding;
use crate::model::Model;
use crate::onnx::proto::{
    tensor_proto::DataType, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
};
use crate::preprocess::Preprocess;
use graph::Builder;
use prost::Message;
use serde::Serialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The default-domain opset of exported files (14 only when a `HardSwish` needs it).
pub const OPSET: i64 = 13;

/// ONNX IR version written: 7, the one that introduced opsets 13 and 14.
pub const IR_VERSION: i64 = 7;

/// Most bytes of weights one `.onnx` file may hold: protobuf messages are limited to 2 GiB, and
/// the graph itself needs some room.
pub const MAX_ONNX_WEIGHT_BYTES: usize = (2 << 30) - (16 << 20);

/// Errors exporting a model. Messages name the block, step or file at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    /// `--cut` names no block that can be cut after.
    #[error("cannot cut model '{model}' after '{cut}': {reason}; blocks that can be cut after: {blocks}")]
    BadCut {
        /// The model.
        model: String,
        /// The cut as given.
        cut: String,
        /// Why it is refused.
        reason: String,
        /// `name (index)` of every block a cut may follow.
        blocks: String,
    },
    /// A block range outside the model.
    #[error("block range {start}..{end} is not a non-empty range within the {blocks} blocks of model '{model}'")]
    BadRange {
        /// The model.
        model: String,
        /// First block.
        start: usize,
        /// One past the last block.
        end: usize,
        /// Blocks in the model.
        blocks: usize,
    },
    /// A step the exporter cannot write as it stands.
    #[error("step '{step}': {reason}")]
    Invalid {
        /// `<block>.<op name>`.
        step: String,
        /// What is wrong.
        reason: String,
    },
    /// The weights do not fit in one protobuf message.
    #[error("blocks {start}..{end} hold {bytes} bytes of weights, more than the {MAX_ONNX_WEIGHT_BYTES} one .onnx file can hold (protobuf's 2 GiB limit); export a smaller block range")]
    TooLarge {
        /// First block.
        start: usize,
        /// One past the last block.
        end: usize,
        /// Bytes of weights.
        bytes: usize,
    },
    /// The output folder already holds files.
    #[error("{} is not empty; pass --force to write into it (files of the same name are replaced)", .path.display())]
    NotEmpty {
        /// The folder.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One input or output of an exported file: its name, element type (KServe v2 datatype name:
/// `FP32`, `FP16`, `UINT8`) and dims with `-1` for the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// `FP32`, `FP16` or `UINT8`.
    pub datatype: &'static str,
    /// Dims, batch first (`-1`).
    pub dims: Vec<i64>,
}

impl TensorSpec {
    fn new(name: &str, datatype: &'static str, per_sample: &[usize]) -> Self {
        Self {
            name: name.into(),
            datatype,
            dims: std::iter::once(-1)
                .chain(per_sample.iter().map(|&d| d as i64))
                .collect(),
        }
    }
}

/// The inputs of a range whose first block receives `shape` in `encoding`.
pub fn input_specs(shape: &[usize], encoding: Encoding) -> Vec<TensorSpec> {
    match encoding {
        Encoding::Fp32 => vec![TensorSpec::new("input", "FP32", shape)],
        Encoding::Fp16 => vec![TensorSpec::new("input", "FP16", shape)],
        Encoding::Int8 => vec![
            TensorSpec::new("input", "UINT8", shape),
            TensorSpec::new("scale", "FP32", &[1]),
            TensorSpec::new("zero_point", "UINT8", &[1]),
        ],
    }
}

/// The input of the whole model taking 8-bit pixels ([`pixels_to_onnx`]): `input` UINT8.
pub fn pixel_input_spec(model: &Model) -> TensorSpec {
    TensorSpec::new("input", "UINT8", model.input_shape())
}

/// The preprocessing an 8-bit pixel input of `model` goes through: the manifest's, when it has
/// one, it is valid and the input is an image `[3, H, W]`. `None`: the model has no pixel form.
pub fn pixel_preprocess(model: &Model) -> Option<&Preprocess> {
    let p = model.manifest.preprocess.as_ref()?;
    let image = matches!(model.input_shape(), [3, _, _]);
    (image && p.validate().is_ok()).then_some(p)
}

/// The block index a cut given as a block name (or, failing that, an index) follows, checked
/// to leave a tail: the vocabulary of `run --policy static:<block>` and `infer --cut`.
pub fn parse_cut(model: &Model, cut: &str) -> Result<usize, ExportError> {
    let k = model.block_index(cut).or_else(|| cut.parse::<usize>().ok());
    match k {
        Some(k) => check_cut(model, k).map_err(|reason| bad_cut(model, cut, reason)),
        None => Err(bad_cut(model, cut, "no block of that name or index".into())),
    }
}

/// Why cutting after block `k` leaves no head and tail, if it does not.
fn check_cut(model: &Model, k: usize) -> Result<usize, String> {
    let n = model.blocks.len();
    if k + 1 < n {
        Ok(k)
    } else if k + 1 == n {
        Err("the last block is the model output, nothing is left for a tail".into())
    } else {
        Err(format!("the model has {n} blocks (indices 0..{n})"))
    }
}

fn bad_cut(model: &Model, cut: &str, reason: String) -> ExportError {
    let n = model.blocks.len();
    ExportError::BadCut {
        model: model.name().into(),
        cut: cut.into(),
        reason,
        blocks: model.blocks[..n.saturating_sub(1)]
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{} ({i})", b.name))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// How the first block's input arrives in an exported file.
#[derive(Clone, Copy)]
enum Front<'a> {
    /// As the tensor itself in an encoding (FP32, or FP16 / INT8 decoded first).
    Encoded(Encoding),
    /// As the 8-bit image that this preprocessing maps to the model input (whole model only).
    Pixels(&'a Preprocess),
}

impl Front<'_> {
    /// The `edgecut_input_encoding` metadata value.
    fn label(&self) -> String {
        match self {
            Front::Encoded(e) => e.to_string(),
            Front::Pixels(_) => "uint8 pixels".into(),
        }
    }
}

/// Blocks `blocks` of `model` as an ONNX model whose input arrives in `input` (see the module
/// docs for the encoded fronts). Exit heads are left out.
pub fn to_onnx(
    model: &Model,
    blocks: Range<usize>,
    input: Encoding,
) -> Result<ModelProto, ExportError> {
    build(model, blocks, Front::Encoded(input))
}

/// The whole of an image model as an ONNX model taking the 8-bit image (see the module docs);
/// [`ExportError::Invalid`] for a model without preprocessing or an image input.
pub fn pixels_to_onnx(model: &Model) -> Result<ModelProto, ExportError> {
    build(
        model,
        0..model.blocks.len(),
        Front::Pixels(require_pixel_preprocess(model)?),
    )
}

/// [`pixel_preprocess`], or the error saying why the model has no 8-bit pixel form.
fn require_pixel_preprocess(model: &Model) -> Result<&Preprocess, ExportError> {
    pixel_preprocess(model).ok_or_else(|| ExportError::Invalid {
        step: model.name().into(),
        reason: format!(
            "an 8-bit pixel input needs an image model: input [3, height, width] (this one: {:?}) and valid preprocessing in model.json (\"preprocess\": {})",
            model.input_shape(),
            match &model.manifest.preprocess {
                None => "absent".to_string(),
                Some(p) => p.validate().err().map_or("valid".into(), |e| e.to_string()),
            }
        ),
    })
}

/// [`to_onnx`] with the input arriving as `front` says.
fn build(model: &Model, blocks: Range<usize>, front: Front<'_>) -> Result<ModelProto, ExportError> {
    let n = model.blocks.len();
    if blocks.start >= blocks.end || blocks.end > n {
        return Err(ExportError::BadRange {
            model: model.name().into(),
            start: blocks.start,
            end: blocks.end,
            blocks: n,
        });
    }
    let in_shape = model.shape_at(blocks.start).to_vec();
    let out_shape = model.blocks[blocks.end - 1].output_shape.clone();
    let mut b = Builder::default();
    for name in ["input", "scale", "zero_point", "output"] {
        b.reserve(name);
    }
    let (inputs, mut x) = match front {
        Front::Pixels(p) => {
            // (pixel * scale - mean) / std per channel, in edgecut's order (Preprocess::apply).
            let x = b.node(
                "Cast",
                vec!["input".into()],
                "input.float",
                vec![graph::int_attribute("to", DataType::Float as i64)],
            );
            let scale = b.floats("preprocess.scale", &[1], &[p.scale]);
            let x = b.node("Mul", vec![x, scale], "input.scaled", vec![]);
            let mean = b.floats("preprocess.mean", &[3, 1, 1], &p.mean);
            let x = b.node("Sub", vec![x, mean], "input.centred", vec![]);
            let std = b.floats("preprocess.std", &[3, 1, 1], &p.std);
            let x = b.node("Div", vec![x, std], "input.normalised", vec![]);
            (
                vec![graph::value_info("input", DataType::Uint8, &in_shape)],
                x,
            )
        }
        Front::Encoded(Encoding::Fp32) => (
            vec![graph::value_info("input", DataType::Float, &in_shape)],
            "input".to_string(),
        ),
        Front::Encoded(Encoding::Fp16) => {
            let x = b.node(
                "Cast",
                vec!["input".into()],
                "input.decoded",
                vec![graph::int_attribute("to", DataType::Float as i64)],
            );
            (
                vec![graph::value_info("input", DataType::Float16, &in_shape)],
                x,
            )
        }
        Front::Encoded(Encoding::Int8) => {
            // Per-sample parameters [N, 1] (so a server may concatenate requests), flattened
            // to the [N] that DequantizeLinear takes along axis 0.
            let flat = b.int64s("per_sample.shape", &[-1]);
            let scale = b.node(
                "Reshape",
                vec!["scale".into(), flat.clone()],
                "scale.per_sample",
                vec![],
            );
            let zero = b.node(
                "Reshape",
                vec!["zero_point".into(), flat],
                "zero_point.per_sample",
                vec![],
            );
            let x = b.node(
                "DequantizeLinear",
                vec!["input".into(), scale, zero],
                "input.decoded",
                vec![graph::int_attribute("axis", 0)],
            );
            (
                vec![
                    graph::value_info("input", DataType::Uint8, &in_shape),
                    graph::value_info("scale", DataType::Float, &[1]),
                    graph::value_info("zero_point", DataType::Uint8, &[1]),
                ],
                x,
            )
        }
    };
    for block in &model.blocks[blocks.clone()] {
        x = graph::block(&mut b, &block.steps, &x, &block.input_shape)?;
    }
    if b.initializer_bytes > MAX_ONNX_WEIGHT_BYTES {
        return Err(ExportError::TooLarge {
            start: blocks.start,
            end: blocks.end,
            bytes: b.initializer_bytes,
        });
    }
    // The last node's output becomes `output`, unless something else reads it (or no node
    // made it): then an Identity copies it there.
    let read = b.nodes.iter().any(|n| n.input.contains(&x));
    match b.nodes.last_mut() {
        Some(last) if last.output.first() == Some(&x) && !read => {
            last.output = vec!["output".into()];
        }
        _ => {
            b.nodes.push(crate::onnx::proto::NodeProto {
                input: vec![x],
                output: vec!["output".into()],
                name: Some("output".into()),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
    }
    let opset = if b.needs_opset_14 { 14 } else { OPSET };
    let first = &model.blocks[blocks.start].name;
    let last = &model.blocks[blocks.end - 1].name;
    let meta = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    let mut metadata = vec![
        meta("edgecut_model", model.name().into()),
        meta("edgecut_hash", model.hash.clone()),
        meta(
            "edgecut_blocks",
            format!("{}..{} ({first}..={last})", blocks.start, blocks.end),
        ),
        meta("edgecut_input_encoding", front.label()),
    ];
    if let Some(k) = blocks.start.checked_sub(1) {
        metadata.push(meta("edgecut_cut_after", k.to_string()));
    }
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("edgecut".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "edgecut model '{}' blocks {first}..={last}; exit heads are not included",
            model.name()
        )),
        graph: Some(GraphProto {
            node: b.nodes,
            name: Some(model.name().into()),
            initializer: b.initializers,
            input: inputs,
            output: vec![graph::value_info("output", DataType::Float, &out_shape)],
            ..Default::default()
        }),
        metadata_props: metadata,
        ..Default::default()
    })
}

/// [`to_onnx`] encoded as `.onnx` bytes.
pub fn to_onnx_bytes(
    model: &Model,
    blocks: Range<usize>,
    input: Encoding,
) -> Result<Vec<u8>, ExportError> {
    Ok(to_onnx(model, blocks, input)?.encode_to_vec())
}

/// A file written by the exporter, with its interface.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// Where.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Graph inputs.
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// Writes `head.onnx` (blocks `0..=cut`, FP32 input) and `tail.onnx` (blocks after `cut`,
/// receiving the cut tensor in `encoding`) into `out`, which must be empty or absent unless
/// `force` (then files of the same name are replaced).
pub fn write_split(
    model: &Model,
    cut: usize,
    encoding: Encoding,
    out: &Path,
    force: bool,
) -> Result<Vec<Written>, ExportError> {
    let n = model.blocks.len();
    check_cut(model, cut).map_err(|reason| bad_cut(model, &cut.to_string(), reason))?;
    prepare_dir(out, force)?;
    let head = write_range(model, 0..cut + 1, Encoding::Fp32, &out.join("head.onnx"))?;
    let tail = write_range(model, cut + 1..n, encoding, &out.join("tail.onnx"))?;
    Ok(vec![head, tail])
}

/// Writes the whole model as `model.onnx` into `out` (empty or absent unless `force`).
pub fn write_full(model: &Model, out: &Path, force: bool) -> Result<Written, ExportError> {
    prepare_dir(out, force)?;
    write_range(
        model,
        0..model.blocks.len(),
        Encoding::Fp32,
        &out.join("model.onnx"),
    )
}

/// Writes the whole of an image model taking 8-bit pixels ([`pixels_to_onnx`]) as `model.onnx`
/// into `out` (empty or absent unless `force`).
pub fn write_full_pixels(model: &Model, out: &Path, force: bool) -> Result<Written, ExportError> {
    require_pixel_preprocess(model)?;
    prepare_dir(out, force)?;
    write_pixels(model, &out.join("model.onnx"))
}

/// Writes [`pixels_to_onnx`] to `path`.
fn write_pixels(model: &Model, path: &Path) -> Result<Written, ExportError> {
    let bytes = pixels_to_onnx(model)?.encode_to_vec();
    write_file(path, &bytes)?;
    Ok(Written {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        inputs: vec![pixel_input_spec(model)],
        outputs: vec![TensorSpec::new(
            "output",
            "FP32",
            &model.blocks[model.blocks.len() - 1].output_shape,
        )],
    })
}

/// Writes blocks `blocks` to `path` (through a temporary file renamed into place).
fn write_range(
    model: &Model,
    blocks: Range<usize>,
    input: Encoding,
    path: &Path,
) -> Result<Written, ExportError> {
    let out_shape = model.blocks[blocks.end - 1].output_shape.clone();
    let inputs = input_specs(model.shape_at(blocks.start), input);
    let bytes = to_onnx_bytes(model, blocks, input)?;
    write_file(path, &bytes)?;
    Ok(Written {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        inputs,
        outputs: vec![TensorSpec::new("output", "FP32", &out_shape)],
    })
}

/// Writes `bytes` to a temporary sibling of `path` and renames it into place, so a failure
/// never leaves a truncated file under the final name.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Creates `dir` if needed; refuses one that holds anything unless `force`.
fn prepare_dir(dir: &Path, force: bool) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if !force && entries.next().is_some() {
                return Err(ExportError::NotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}
