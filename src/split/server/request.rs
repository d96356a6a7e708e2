//! Request validation: the input tensor against the model and the cut its parameters name.

use super::http::{err, ApiError};
use crate::encoding::{Encoded, Encoding, Int8Params};
use crate::model::Model;
use crate::split::kserve::{self, RawTensor};
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// A validated infer request: what the worker runs and how to answer.
pub(crate) struct InferRequest {
    /// First block to run (0 for a full-model request).
    pub(super) from: usize,
    /// The input tensor as it arrived (decoded by the worker).
    pub(crate) input: Encoded,
    /// Samples in the request.
    pub(super) samples: usize,
    /// Whether the answer uses the binary tensor extension.
    pub(super) binary_out: bool,
    /// The request's `id`, echoed in the answer.
    pub(super) id: Option<Value>,
}

/// Parses a KServe v2 infer body (`header_length` from `Inference-Header-Content-Length`) and
/// validates it against `m`; `max_batch` bounds the samples per request.
pub(crate) fn parse(
    m: &Model,
    bytes: &[u8],
    header_length: Option<usize>,
    max_batch: usize,
) -> Result<InferRequest, ApiError> {
    let msg = kserve::parse(bytes, header_length, "inputs")
        .map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let [input] = &msg.tensors[..] else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("expected exactly one input, got {}", msg.tensors.len()),
        ));
    };
    let (from, input) = request_tensor(m, &msg, input)?;
    let samples = input.shape.first().copied().unwrap_or(0);
    if samples == 0 || samples > max_batch {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "batch of {samples} samples; this server takes 1..={max_batch} per request (--max-batch)"
            ),
        ));
    }
    Ok(InferRequest {
        from,
        input,
        samples,
        binary_out: wants_binary(&msg.header),
        id: msg.header.get("id").cloned(),
    })
}

/// Binary output when the request says so for the whole request or for `logits`.
fn wants_binary(header: &Map<String, Value>) -> bool {
    let top = header
        .get("parameters")
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let per_output = header
        .get("outputs")
        .and_then(Value::as_array)
        .map(|outs| {
            outs.iter().any(|o| {
                o.get("parameters")
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false);
    top || per_output
}

/// Validates the input against the model and the cut it names (`edgecut_cut_after`: the block
/// the cut follows; the server runs the blocks after it; absent: a full-model request).
fn request_tensor(
    m: &Model,
    msg: &kserve::Message,
    input: &RawTensor,
) -> Result<(usize, Encoded), ApiError> {
    let bad = |msg: String| err(StatusCode::BAD_REQUEST, msg);
    let int_param = |name: &str| -> Result<Option<i64>, ApiError> {
        msg.parameter(name)
            .map(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| bad(format!("parameter {name} must be an integer")))
            })
            .transpose()
    };
    if msg.parameter("edgecut_from_block").is_some() {
        return Err(bad(
            "parameter edgecut_from_block is no longer accepted: name the cut with edgecut_cut_after = K (the server runs the blocks after block K; edgecut_from_block = B is edgecut_cut_after = B - 1)".into(),
        ));
    }
    let after = int_param("edgecut_cut_after")?;
    let blocks = m.blocks.len();
    let from = match after {
        None => 0,
        Some(k) if k >= 0 && (k as usize) + 1 < blocks => k as usize + 1,
        Some(k) => {
            return Err(bad(format!(
                "edgecut_cut_after {k} is not a cut of '{}' (0..{})",
                m.name(),
                blocks.saturating_sub(1)
            )))
        }
    };
    let tail = after.is_some();
    match msg.parameter("edgecut_model_hash") {
        Some(Value::String(h)) if *h != m.hash => {
            return Err(err(
                StatusCode::CONFLICT,
                format!(
                    "model hash mismatch: the request was made for {h} but '{}' here is {}",
                    m.name(),
                    m.hash
                ),
            ))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(bad("parameter edgecut_model_hash must be a string".into())),
        None if tail => {
            return Err(bad(
                "tail requests (edgecut_cut_after) must carry edgecut_model_hash".into(),
            ))
        }
        None => {}
    }
    let want = m.shape_at(from);
    if input.shape.len() != want.len() + 1 || input.shape[1..] != *want {
        return Err(bad(format!(
            "input '{}' has shape {:?} but {} expects [batch, {}]",
            input.name,
            input.shape,
            if from == 0 {
                "the model input".to_string()
            } else {
                format!("the cut before block {from} ('{}')", m.blocks[from].name)
            },
            want.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !tail && input.datatype == "UINT8" {
        let data: Vec<u8> = input
            .bytes
            .iter()
            .flat_map(|&b| (b as f32 / 255.0).to_le_bytes())
            .collect();
        let e = Encoded::new(Encoding::Fp32, input.shape.clone(), data, None)
            .map_err(|e| bad(e.to_string()))?;
        return Ok((0, e));
    }
    let encoding = match msg.parameter("edgecut_encoding") {
        Some(Value::String(e)) => Encoding::parse(e).map_err(|e| bad(e.to_string()))?,
        Some(_) => return Err(bad("parameter edgecut_encoding must be a string".into())),
        None => Encoding::parse(&input.datatype).map_err(|_| {
            bad(format!(
                "input datatype {} is not supported (FP32, FP16, INT8, or UINT8 images)",
                input.datatype
            ))
        })?,
    };
    if encoding.datatype() != input.datatype {
        return Err(bad(format!(
            "edgecut_encoding {encoding} does not match the input datatype {}",
            input.datatype
        )));
    }
    let int8 = if encoding == Encoding::Int8 {
        let scale = msg
            .parameter("edgecut_scale")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("INT8 input needs a numeric edgecut_scale".into()))?;
        let zp = int_param("edgecut_zero_point")?
            .ok_or_else(|| bad("INT8 input needs an integer edgecut_zero_point".into()))?;
        Some(Int8Params::checked(scale, zp).map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    if let Some(i) = first_non_finite(encoding, &input.bytes) {
        return Err(bad(format!(
            "input '{}' holds NaN or Inf at element {i}; send finite values",
            input.name
        )));
    }
    let e = Encoded::new(encoding, input.shape.clone(), input.bytes.clone(), int8)
        .map_err(|e| bad(e.to_string()))?;
    Ok((from, e))
}

/// Index of the first NaN or Inf in little-endian FP32 or FP16 data (all exponent bits set).
/// Such inputs would otherwise be answered with normal-looking logits. INT8 carries no NaN;
/// its scale is checked by [`Int8Params::checked`].
fn first_non_finite(encoding: Encoding, bytes: &[u8]) -> Option<usize> {
    match encoding {
        Encoding::Fp32 => bytes.chunks_exact(4).position(|c| {
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        Encoding::Fp16 => bytes
            .chunks_exact(2)
            .position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_inf_inputs_are_found_in_fp32_and_fp16_data() {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            first_non_finite(Encoding::Fp32, &f32s(&[1.0, f32::MAX])),
            None
        );
        assert_eq!(
            first_non_finite(Encoding::Fp32, &f32s(&[1.0, f32::NAN])),
            Some(1)
        );
        assert_eq!(
            first_non_finite(Encoding::Fp32, &f32s(&[f32::NEG_INFINITY])),
            Some(0)
        );
        // FP16: 0x7bff is the largest finite value, 0x7c00 is +Inf, 0xfe00 a NaN.
        let f16s = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            first_non_finite(Encoding::Fp16, &f16s(&[0x3c00, 0x7bff])),
            None
        );
        assert_eq!(
            first_non_finite(Encoding::Fp16, &f16s(&[0, 0, 0x7c00])),
            Some(2)
        );
        assert_eq!(first_non_finite(Encoding::Fp16, &f16s(&[0xfe00])), Some(0));
        assert_eq!(first_non_finite(Encoding::Int8, &[0xff; 4]), None);
    }
}
