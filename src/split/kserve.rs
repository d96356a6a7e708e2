//! The KServe v2 / Open Inference Protocol message bodies, with the binary tensor data extension:
//! a request or response body is a JSON header (its length in the `Inference-Header-Content-Length`
//! HTTP header) followed by the raw little-endian bytes of every tensor whose `parameters` carry
//! `binary_data_size`, in order. Without that HTTP header the body is JSON only.
//!
//! Parsing never allocates in proportion to a size the peer claims: every claimed size is checked
//! against the bytes actually received first.

use serde_json::{json, Map, Value};
use thiserror::Error;

/// HTTP header naming the length of the JSON part of a body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A malformed request or response body.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The body is not what the protocol allows; the message says what and where.
    #[error("{0}")]
    Malformed(String),
}

fn bad(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(msg.into())
}

/// One tensor of a request or response, its data as little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Tensor name.
    pub name: String,
    /// KServe datatype (`FP32`, `FP16`, `INT8`, `UINT8`, ...).
    pub datatype: String,
    /// Shape, batch first.
    pub shape: Vec<usize>,
    /// Little-endian data.
    pub bytes: Vec<u8>,
    /// The tensor's `parameters` object (without `binary_data_size`).
    pub parameters: Map<String, Value>,
}

/// Bytes per element of a KServe datatype this server handles.
pub fn datatype_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP16" | "INT16" | "UINT16" => 2,
        "INT8" | "UINT8" | "BOOL" => 1,
        "FP64" | "INT64" | "UINT64" => 8,
        _ => return None,
    })
}

/// A parsed message: its JSON header (without tensor data) and its tensors.
#[derive(Debug, Clone)]
pub struct Message {
    /// The JSON header (`id`, `parameters`, `outputs`, ...).
    pub header: Map<String, Value>,
    /// The `inputs` (request) or `outputs` (response) with their data.
    pub tensors: Vec<RawTensor>,
}

impl Message {
    /// A top-level parameter.
    pub fn parameter(&self, name: &str) -> Option<&Value> {
        self.header.get("parameters")?.as_object()?.get(name)
    }
}

/// Parses a body. `tensors_key` is `"inputs"` for requests, `"outputs"` for responses;
/// `header_length` is the `Inference-Header-Content-Length` value, if any.
pub fn parse(
    body: &[u8],
    header_length: Option<usize>,
    tensors_key: &str,
) -> Result<Message, ProtocolError> {
    let json_len = header_length.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {json_len} but the body has only {} bytes",
            body.len()
        )));
    }
    let text = std::str::from_utf8(&body[..json_len]).map_err(|e| {
        bad(format!(
            "the JSON header is not valid UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let mut header: Map<String, Value> = match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("the JSON header must be an object")),
        Err(e) => return Err(bad(format!("the JSON header does not parse: {e}"))),
    };
    let list = match header.remove(tensors_key) {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad(format!("'{tensors_key}' must be an array"))),
        None => return Err(bad(format!("the JSON header has no '{tensors_key}'"))),
    };
    let mut binary = &body[json_len..];
    let mut tensors = Vec::with_capacity(list.len().min(16));
    for (i, t) in list.into_iter().enumerate() {
        let Value::Object(mut t) = t else {
            return Err(bad(format!("{tensors_key}[{i}] must be an object")));
        };
        let name = match t.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad(format!("{tensors_key}[{i}] has no string 'name'"))),
        };
        let datatype = match t.get("datatype") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(bad(format!(
                    "{tensors_key} '{name}' has no string 'datatype'"
                )))
            }
        };
        let size = datatype_size(&datatype).ok_or_else(|| {
            bad(format!(
                "{tensors_key} '{name}': unsupported datatype '{datatype}'"
            ))
        })?;
        let shape: Vec<usize> = match t.get("shape") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    bad(format!(
                        "{tensors_key} '{name}': shape must be non-negative integers"
                    ))
                })?,
            _ => return Err(bad(format!("{tensors_key} '{name}' has no 'shape' array"))),
        };
        let elems = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|e| e.checked_mul(size).is_some())
            .ok_or_else(|| bad(format!("{tensors_key} '{name}': shape {shape:?} overflows")))?;
        let mut parameters = match t.remove("parameters") {
            Some(Value::Object(p)) => p,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(bad(format!(
                    "{tensors_key} '{name}': parameters must be an object"
                )))
            }
        };
        let bytes = if let Some(v) = parameters.remove("binary_data_size") {
            let n = v.as_u64().ok_or_else(|| {
                bad(format!(
                    "{tensors_key} '{name}': binary_data_size must be an integer"
                ))
            })? as usize;
            if header_length.is_none() {
                return Err(bad(format!(
                    "{tensors_key} '{name}' has binary_data_size but the request has no Inference-Header-Content-Length header"
                )));
            }
            if n > binary.len() {
                return Err(bad(format!(
                    "{tensors_key} '{name}': binary_data_size is {n} but only {} bytes follow the JSON header (truncated body?)",
                    binary.len()
                )));
            }
            if n != elems * size {
                return Err(bad(format!(
                    "{tensors_key} '{name}': binary_data_size {n} does not match shape {shape:?} of {datatype} ({} bytes)",
                    elems * size
                )));
            }
            let (head, rest) = binary.split_at(n);
            binary = rest;
            head.to_vec()
        } else {
            let data = t.get("data").ok_or_else(|| {
                bad(format!(
                    "{tensors_key} '{name}' has neither 'data' nor binary_data_size"
                ))
            })?;
            json_data_to_bytes(&name, &datatype, data, elems)?
        };
        tensors.push(RawTensor {
            name,
            datatype,
            shape,
            bytes,
            parameters,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes follow the tensors' binary data",
            binary.len()
        )));
    }
    Ok(Message { header, tensors })
}

/// Flattens JSON tensor data (nested or flat arrays of numbers) into little-endian bytes,
/// checking the count against the shape before converting anything.
fn json_data_to_bytes(
    name: &str,
    datatype: &str,
    data: &Value,
    elems: usize,
) -> Result<Vec<u8>, ProtocolError> {
    let mut flat = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            other => out.push(other),
        }
    }
    walk(data, &mut flat);
    if flat.len() != elems {
        return Err(bad(format!(
            "input '{name}': data has {} values but the shape needs {elems}",
            flat.len()
        )));
    }
    let mut out = Vec::with_capacity(elems * datatype_size(datatype).unwrap_or(4));
    for (i, v) in flat.iter().enumerate() {
        let num = || {
            v.as_f64()
                .ok_or_else(|| bad(format!("input '{name}': data[{i}] is not a number")))
        };
        let int = |lo: f64, hi: f64| -> Result<f64, ProtocolError> {
            let x = num()?;
            if x.fract() != 0.0 || x < lo || x > hi {
                return Err(bad(format!(
                    "input '{name}': data[{i}] = {x} is not a {datatype} value"
                )));
            }
            Ok(x)
        };
        match datatype {
            "FP32" => out.extend((num()? as f32).to_le_bytes()),
            "FP16" => out.extend(half::f16::from_f64(num()?).to_le_bytes()),
            "INT8" => out.push(int(-128.0, 127.0)? as i8 as u8),
            "UINT8" => out.push(int(0.0, 255.0)? as u8),
            "INT32" => out.extend((int(i32::MIN as f64, i32::MAX as f64)? as i32).to_le_bytes()),
            _ => {
                return Err(bad(format!(
                    "input '{name}': JSON data of datatype {datatype} is not supported"
                )))
            }
        }
    }
    Ok(out)
}

/// Builds a body with one FP32 tensor per entry; tensors go as binary data when `binary`.
/// Returns the body and the JSON header length (for `Inference-Header-Content-Length`) when
/// any tensor went binary.
pub fn build(
    mut header: Map<String, Value>,
    tensors_key: &str,
    tensors: &[RawTensor],
    binary: bool,
) -> (Vec<u8>, Option<usize>) {
    let mut list = Vec::new();
    let mut payload = Vec::new();
    for t in tensors {
        let mut entry = json!({"name": t.name, "datatype": t.datatype, "shape": t.shape});
        let mut params = t.parameters.clone();
        if binary {
            params.insert("binary_data_size".into(), json!(t.bytes.len()));
            payload.extend_from_slice(&t.bytes);
        } else {
            entry["data"] = bytes_to_json(&t.datatype, &t.bytes);
        }
        if !params.is_empty() {
            entry["parameters"] = Value::Object(params);
        }
        list.push(entry);
    }
    header.insert(tensors_key.into(), Value::Array(list));
    let mut body = serde_json::to_vec(&Value::Object(header)).expect("JSON values serialise");
    let json_len = body.len();
    body.extend_from_slice(&payload);
    (body, binary.then_some(json_len))
}

fn bytes_to_json(datatype: &str, bytes: &[u8]) -> Value {
    match datatype {
        "FP32" => bytes
            .chunks_exact(4)
            .map(|c| json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "FP16" => bytes
            .chunks_exact(2)
            .map(|c| json!(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
        "INT8" => bytes.iter().map(|&b| json!(b as i8)).collect(),
        _ => bytes.iter().map(|&b| json!(b)).collect(),
    }
}

/// Little-endian FP32 bytes as values.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Environment variable holding the bearer token for `edgecut serve` and `edgecut run`: unlike a
/// `--token` flag it is not visible to other users in `ps`.
pub const TOKEN_ENV: &str = "EDGECUT_TOKEN";

/// A bearer token that could not be read from where it was asked for.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The token file holds nothing but line endings; an empty token would authorize nothing.
    #[error("the token file {path} is empty; write the token into it (one line)")]
    EmptyFile {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The environment variable is set but empty.
    #[error("{TOKEN_ENV} is set but empty; give it the token or unset it")]
    EmptyEnv,
}

/// The bearer token from the first source given: `flag` (`--token`), then `file`
/// (`--token-file`, its trailing line ending trimmed), then `env` (the value of [`TOKEN_ENV`]).
/// `None` when none is given. An empty file or variable is an error rather than no token, so a
/// mistake never silently turns authentication off.
pub fn resolve_token(
    flag: Option<String>,
    file: Option<&std::path::Path>,
    env: Option<String>,
) -> Result<Option<String>, TokenError> {
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        if token.is_empty() {
            return Err(TokenError::EmptyFile {
                path: path.to_path_buf(),
            });
        }
        return Ok(Some(token.to_string()));
    }
    match env {
        Some(t) if t.is_empty() => Err(TokenError::EmptyEnv),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(n: usize) -> RawTensor {
        let vals: Vec<f32> = (0..n * 3).map(|i| i as f32 * 0.5 - 1.0).collect();
        RawTensor {
            name: "logits".into(),
            datatype: "FP32".into(),
            shape: vec![n, 3],
            bytes: bytemuck::cast_slice(&vals).to_vec(),
            parameters: Map::new(),
        }
    }

    #[test]
    fn binary_and_json_bodies_parse_back_to_the_same_tensors() {
        for binary in [true, false] {
            let (body, len) = build(Map::new(), "outputs", &[logits(2)], binary);
            let msg = parse(&body, len, "outputs").expect("parses");
            assert_eq!(msg.tensors, vec![logits(2)], "binary = {binary}");
        }
    }

    #[test]
    fn truncated_binary_body_and_oversized_header_length_are_refused() {
        let (body, len) = build(Map::new(), "inputs", &[logits(2)], true);
        let err = parse(&body[..body.len() - 3], len, "inputs").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let err = parse(&body, Some(body.len() + 1), "inputs").unwrap_err();
        assert!(
            err.to_string().contains("Inference-Header-Content-Length"),
            "{err}"
        );
    }

    #[test]
    fn json_data_count_must_match_the_shape() {
        let body = br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000000,1000000000],"data":[1,2]}]}"#;
        let err = parse(body, None, "inputs").unwrap_err();
        assert!(err.to_string().contains("data has 2 values"), "{err}");
    }
}
