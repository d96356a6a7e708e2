//! A Triton Inference Server (or KServe) model repository of a model's tails: the naming
//! convention the device client finds them by, `config.pbtxt` for the ONNX Runtime backend
//! with dynamic batching, and `1/model.onnx`.
//!
//! Layout, for a model whose manifest name is `<model>`:
//! - `<model>/`: the full model (input `input` FP32, output `output` FP32);
//! - `<model>__full__uint8/`: for an image model (preprocessing in its manifest), the full model
//!   taking the 8-bit image (`input` UINT8 `[N, 3, H, W]`, [`super::pixels_to_onnx`]), which
//!   the device client sends server-only requests to when the repository has it;
//! - `<model>__cut<k>__<e>/`: the tail after block `k` (0-based, the block the cut follows)
//!   receiving encoding `e` (`fp32`, `fp16`, `int8`), for every cut candidate `k`
//!   ([`Model::cut_candidates`]) and every encoding.

use super::{
    input_specs, pixel_input_spec, pixel_preprocess, prepare_dir, write_pixels, write_range,
    ExportError, TensorSpec,
};
use crate::encoding::Encoding;
use crate::model::Model;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// `max_batch_size` of every generated `config.pbtxt`.
pub const TRITON_MAX_BATCH_SIZE: usize = 64;

/// The repository name of the tail of `model` (its manifest name) after block `cut_after`
/// receiving `encoding`: `<model>__cut<k>__<fp32|fp16|int8>`.
pub fn tail_model_name(model: &str, cut_after: usize, encoding: Encoding) -> String {
    format!("{model}__cut{cut_after}__{encoding}")
}

/// The repository name of the full model of `model` (its manifest name) taking 8-bit pixels:
/// `<model>__full__uint8`.
pub fn pixel_model_name(model: &str) -> String {
    format!("{model}__full__uint8")
}

/// One model of a written repository.
#[derive(Debug, Clone, Serialize)]
pub struct TritonModel {
    /// Repository name (the folder).
    pub name: String,
    /// The block the tail's cut follows; `None` for the full model.
    pub cut_after: Option<usize>,
    /// Encoding of the input: `fp32`, `fp16` or `int8`; `uint8` for the 8-bit pixels of the
    /// full model's pixel twin.
    pub encoding: String,
    /// Inputs, batch first (`-1`).
    pub inputs: Vec<TensorSpec>,
    /// Outputs, batch first (`-1`).
    pub outputs: Vec<TensorSpec>,
    /// Size of `1/model.onnx`.
    pub bytes: u64,
}

/// Writes the repository of `model` into `dir` (empty or absent unless `force`; then the
/// folders of the same names are rewritten): the full model, for an image model its 8-bit
/// pixel twin, and the tail after every cut candidate in every encoding. Returns what was
/// written, full model first.
pub fn write_triton_repo(
    model: &Model,
    dir: &Path,
    force: bool,
) -> Result<Vec<TritonModel>, ExportError> {
    let name = model.name();
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.starts_with('.')
        || !name.chars().all(plain)
        || name.contains("__cut")
        || name.contains("__full")
    {
        return Err(ExportError::Invalid {
            step: name.into(),
            reason: "a repository model name takes ASCII letters, digits, '-', '_' and '.', does not start with '.' and does not contain \"__cut\" or \"__full\"; rename the model in model.json".into(),
        });
    }
    prepare_dir(dir, force)?;
    let n = model.blocks.len();
    // (folder, cut, encoding); `None` for the encoding: the 8-bit pixel twin.
    let mut entries = vec![(name.to_string(), None, Some(Encoding::Fp32))];
    if pixel_preprocess(model).is_some() {
        entries.push((pixel_model_name(name), None, None));
    }
    for k in model.cut_candidates() {
        for e in Encoding::ALL {
            entries.push((tail_model_name(name, k, e), Some(k), Some(e)));
        }
    }
    let mut written = Vec::with_capacity(entries.len());
    for (folder, cut, encoding) in entries {
        let start = cut.map_or(0, |k| k + 1);
        let version = dir.join(&folder).join("1");
        std::fs::create_dir_all(&version).map_err(|source| ExportError::Io {
            path: version.clone(),
            source,
        })?;
        let path = version.join("model.onnx");
        let (file, encoding, inputs) = match encoding {
            Some(e) => (
                write_range(model, start..n, e, &path)?,
                e.to_string(),
                input_specs(model.shape_at(start), e),
            ),
            None => (
                write_pixels(model, &path)?,
                "uint8".to_string(),
                vec![pixel_input_spec(model)],
            ),
        };
        let entry = TritonModel {
            name: folder.clone(),
            cut_after: cut,
            encoding,
            inputs,
            outputs: file.outputs,
            bytes: file.bytes,
        };
        super::write_file(
            &dir.join(&folder).join("config.pbtxt"),
            config_pbtxt(model, &entry).as_bytes(),
        )?;
        written.push(entry);
    }
    Ok(written)
}

/// The `config.pbtxt` of one repository model (dims without the batch dimension).
fn config_pbtxt(model: &Model, m: &TritonModel) -> String {
    let mut s = String::new();
    let tensors = |s: &mut String, key: &str, specs: &[TensorSpec]| {
        let _ = writeln!(s, "{key} [");
        for (i, t) in specs.iter().enumerate() {
            let dims: Vec<String> = t.dims[1..].iter().map(i64::to_string).collect();
            let _ = writeln!(
                s,
                "  {{\n    name: \"{}\"\n    data_type: TYPE_{}\n    dims: [ {} ]\n  }}{}",
                t.name,
                t.datatype,
                dims.join(", "),
                if i + 1 < specs.len() { "," } else { "" }
            );
        }
        let _ = writeln!(s, "]");
    };
    let _ = writeln!(s, "name: \"{}\"", m.name);
    let _ = writeln!(s, "platform: \"onnxruntime_onnx\"");
    let _ = writeln!(s, "max_batch_size: {TRITON_MAX_BATCH_SIZE}");
    let _ = writeln!(s, "dynamic_batching {{ }}");
    tensors(&mut s, "input", &m.inputs);
    tensors(&mut s, "output", &m.outputs);
    let mut parameters = vec![
        ("edgecut_model", model.name().to_string()),
        ("edgecut_hash", model.hash.clone()),
        ("edgecut_encoding", m.encoding.clone()),
    ];
    if let Some(k) = m.cut_after {
        parameters.push(("edgecut_cut_after", k.to_string()));
    }
    for (key, value) in parameters {
        let _ = writeln!(
            s,
            "parameters {{ key: \"{key}\" value: {{ string_value: \"{value}\" }} }}"
        );
    }
    s
}
