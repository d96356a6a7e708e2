//! Decoding: the `ModelProto`, its opset, and tensors (initialisers and `Constant` values) with
//! their declared sizes checked against [`MAX_TENSOR_ELEMS`] and their data before anything is
//! allocated from them; external data read only from files beside the model.

use super::proto::{tensor_proto, ModelProto, TensorProto};
use super::{OnnxError, MAX_OPSET, MIN_OPSET};
use crate::model::{checked_elems, MAX_TENSOR_ELEMS};
use prost::Message;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Decodes a `ModelProto`. prost checks every length prefix against the remaining bytes, so a
/// truncated or hostile file cannot make it allocate more than the file holds.
pub(super) fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::Decode("the file is empty".into()));
    }
    ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))
}

/// The default-domain opset, checked to lie in [`MIN_OPSET`]..=[`MAX_OPSET`].
pub(super) fn default_opset(model: &ModelProto) -> Result<i64, OnnxError> {
    let versions: Vec<i64> = model
        .opset_import
        .iter()
        .filter(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .map(|o| o.version.unwrap_or(0))
        .collect();
    match versions.as_slice() {
        [] => Err(OnnxError::Opset(
            "the model imports no default-domain (ai.onnx) opset; re-export it with an opset in 7..=21".into(),
        )),
        [v] if (MIN_OPSET..=MAX_OPSET).contains(v) => Ok(*v),
        [v] => Err(OnnxError::Opset(format!(
            "opset {v} of the default domain is outside the supported {MIN_OPSET}..={MAX_OPSET}; re-export the model with an opset in that range"
        ))),
        more => Err(OnnxError::Opset(format!(
            "the model imports the default domain {} times ({more:?}); a model imports it once",
            more.len()
        ))),
    }
}

/// Values of a constant tensor: floats, or integers where `None` stands for the batch size
/// (unknown at import; it enters through `Shape` of an activation).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Data {
    /// Float tensors (any float type, read as `f32`).
    F(Vec<f32>),
    /// Integer and boolean tensors.
    I(Vec<Option<i64>>),
}

impl Data {
    pub(super) fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }
}

/// A constant tensor with its full ONNX shape.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    pub(super) fn floats(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|x| x.unwrap_or(0) as f32).collect(),
        }
    }

    /// Integer values, or why they are not known integers.
    pub(super) fn ints(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            Data::I(v) => v
                .iter()
                .map(|x| x.ok_or_else(|| "a value depends on the batch size".to_string()))
                .collect(),
            Data::F(v) => Ok(v.iter().map(|&x| x as i64).collect()),
        }
    }

    /// The one value of a scalar (or one-element) tensor as `f32`.
    pub(super) fn scalar(&self) -> Option<f32> {
        (self.data.len() == 1).then(|| self.floats()[0])
    }
}

/// Checked dims of a tensor: non-negative, product within [`MAX_TENSOR_ELEMS`].
pub(super) fn checked_dims(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize), OnnxError> {
    let err = |reason: String| OnnxError::Tensor {
        name: name.into(),
        reason,
    };
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| err(format!("dims {dims:?} hold a negative size")))
        })
        .collect::<Result<_, _>>()?;
    let n = checked_elems(&dims)
        .filter(|&n| n <= MAX_TENSOR_ELEMS)
        .ok_or_else(|| {
            err(format!(
                "dims {dims:?} hold more than {MAX_TENSOR_ELEMS} elements (or overflow)"
            ))
        })?;
    Ok((dims, n))
}

/// Reads a tensor's values. `dir` is the model's folder for external data (`None`: refused).
pub(super) fn tensor(t: &TensorProto, dir: Option<&Path>) -> Result<Const, OnnxError> {
    use tensor_proto::DataType as D;
    let name = t.name.clone().unwrap_or_default();
    let err = |reason: String| OnnxError::Tensor {
        name: name.clone(),
        reason,
    };
    let (dims, n) = checked_dims(&name, &t.dims)?;
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let dtype = t.data_type.unwrap_or(0);
    let kind = D::try_from(dtype).map_err(|_| err(format!("unknown data type {dtype}")))?;
    let width = match kind {
        D::Float | D::Int32 | D::Uint32 => 4,
        D::Double | D::Int64 | D::Uint64 => 8,
        D::Float16 | D::Int16 | D::Uint16 => 2,
        D::Int8 | D::Uint8 | D::Bool => 1,
        other => {
            return Err(err(format!(
                "data type {} is not supported (float, double, float16 and integer types are)",
                other.as_str_name()
            )))
        }
    };
    let external = t.data_location == Some(tensor_proto::DataLocation::External as i32);
    let raw = if external {
        Some(read_external(t, dir, n * width).map_err(err)?)
    } else {
        t.raw_data.clone()
    };
    let count_err = |have: usize| {
        err(format!(
            "dims {dims:?} need {n} values but the data holds {have}"
        ))
    };
    if let Some(raw) = raw {
        if raw.len() != n * width {
            return Err(count_err(raw.len() / width));
        }
        let chunks = raw.chunks_exact(width);
        let le = |c: &[u8]| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            b
        };
        let data = match kind {
            D::Float => Data::F(
                chunks
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            D::Double => Data::F(chunks.map(|c| f64::from_le_bytes(le(c)) as f32).collect()),
            D::Float16 => Data::F(
                chunks
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            ),
            D::Int64 => Data::I(chunks.map(|c| Some(i64::from_le_bytes(le(c)))).collect()),
            D::Uint64 => Data::I(
                chunks
                    .map(|c| i64::try_from(u64::from_le_bytes(le(c))).ok())
                    .collect(),
            ),
            D::Int32 => Data::I(
                chunks
                    .map(|c| Some(i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64))
                    .collect(),
            ),
            D::Uint32 => Data::I(
                chunks
                    .map(|c| Some(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64))
                    .collect(),
            ),
            D::Int16 => Data::I(
                chunks
                    .map(|c| Some(i16::from_le_bytes([c[0], c[1]]) as i64))
                    .collect(),
            ),
            D::Uint16 => Data::I(
                chunks
                    .map(|c| Some(u16::from_le_bytes([c[0], c[1]]) as i64))
                    .collect(),
            ),
            D::Int8 => Data::I(chunks.map(|c| Some(c[0] as i8 as i64)).collect()),
            _ => Data::I(chunks.map(|c| Some(c[0] as i64)).collect()),
        };
        if matches!(&data, Data::I(v) if v.contains(&None)) {
            return Err(err("a uint64 value does not fit in int64".into()));
        }
        return Ok(Const { dims, data });
    }
    let data = match kind {
        D::Float => Data::F(t.float_data.clone()),
        D::Double => Data::F(t.double_data.iter().map(|&x| x as f32).collect()),
        D::Float16 => Data::F(
            t.int32_data
                .iter()
                .map(|&x| half::f16::from_bits(x as u16).to_f32())
                .collect(),
        ),
        D::Int64 => Data::I(t.int64_data.iter().map(|&x| Some(x)).collect()),
        D::Uint32 | D::Uint64 => Data::I(
            t.uint64_data
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect(),
        ),
        _ => Data::I(t.int32_data.iter().map(|&x| Some(x as i64)).collect()),
    };
    if data.len() != n {
        return Err(count_err(data.len()));
    }
    if matches!(&data, Data::I(v) if v.contains(&None)) {
        return Err(err("a uint64 value does not fit in int64".into()));
    }
    Ok(Const { dims, data })
}

/// Reads `expected` bytes of external data: a relative path inside the model's folder (no
/// absolute paths, no `..`, no symlink leading out), the declared offset and length checked
/// against the file before reading.
fn read_external(t: &TensorProto, dir: Option<&Path>, expected: usize) -> Result<Vec<u8>, String> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("external data without a \"location\"")?;
    let number = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data \"{key}\" = '{v}' is not a number"))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let Some(dir) = dir else {
        return Err(format!(
            "data lives in the external file '{location}', but the model was given as bytes; load it from its file"
        ));
    };
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location '{location}' must be a relative path inside the model's folder (no absolute path, no '..')"
        ));
    }
    let folder = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the model's folder: {e}"))?;
    let path = folder
        .join(rel)
        .canonicalize()
        .map_err(|e| format!("cannot open external data file '{location}': {e}"))?;
    if !path.starts_with(&folder) {
        return Err(format!(
            "external data file '{location}' resolves outside the model's folder (a symlink?); copy the data beside the model"
        ));
    }
    if let Some(len) = length.filter(|&l| l != expected as u64) {
        return Err(format!(
            "external data length {len} does not match the {expected} bytes its dims and type need"
        ));
    }
    let mut file = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open external data file '{location}': {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read external data file '{location}': {e}"))?
        .len();
    if offset
        .checked_add(expected as u64)
        .is_none_or(|end| end > size)
    {
        return Err(format!(
            "external data file '{location}' holds {size} bytes, too few for {expected} bytes at offset {offset}"
        ));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek in '{location}': {e}"))?;
    let mut bytes = vec![0u8; expected];
    file.read_exact(&mut bytes)
        .map_err(|e| format!("cannot read external data file '{location}': {e}"))?;
    Ok(bytes)
}
