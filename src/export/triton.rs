//! A Triton Inference Server (or KServe) model repository of a model's tails: the naming
//! convention the device client finds them by, `config.pbtxt` for the ONNX Runtime backend
//! with dynamic batching, and `1/model.onnx`.
//!
//! Layout, for a model whose manifest name is `<model>`:
//! - `<model>/`: the full model (input `input` FP32, output `output` FP32);
//! - `<model>__cut<k>__<e>/`: the tail after block `k` (0-based, the block the cut follows)
//!   receiving encoding `e` (`fp32`, `fp16`, `int8`), for every cut candidate `k`
//!   ([`Model::cut_candidates`]) and every encoding.

use super::{input_specs, prepare_dir, write_range, ExportError, TensorSpec};
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

/// One model of a written repository.
#[derive(Debug, Clone, Serialize)]
pub struct TritonModel {
    /// Repository name (the folder).
    pub name: String,
    /// The block the tail's cut follows; `None` for the full model.
    pub cut_after: Option<usize>,
    /// Encoding of the input (`fp32` for the full model).
    pub encoding: String,
    /// Inputs, batch first (`-1`).
    pub inputs: Vec<TensorSpec>,
    /// Outputs, batch first (`-1`).
    pub outputs: Vec<TensorSpec>,
    /// Size of `1/model.onnx`.
    pub bytes: u64,
}

/// Writes the repository of `model` into `dir` (empty or absent unless `force`; then the
/// folders of the same names are rewritten): the full model and the tail after every cut
/// candidate in every encoding. Returns what was written, full model first.
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
    {
        return Err(ExportError::Invalid {
            step: name.into(),
            reason: "a repository model name takes ASCII letters, digits, '-', '_' and '.', does not start with '.' and does not contain \"__cut\"; rename the model in model.json".into(),
        });
    }
    prepare_dir(dir, force)?;
    let n = model.blocks.len();
    let mut entries = vec![(name.to_string(), None, Encoding::Fp32)];
    for k in model.cut_candidates() {
        for e in Encoding::ALL {
            entries.push((tail_model_name(name, k, e), Some(k), e));
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
        let file = write_range(model, start..n, encoding, &version.join("model.onnx"))?;
        let entry = TritonModel {
            name: folder.clone(),
            cut_after: cut,
            encoding: encoding.to_string(),
            inputs: input_specs(model.shape_at(start), encoding),
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
