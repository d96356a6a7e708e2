//! Request validation: the input tensor against the model and the cut its parameters name.

use super::http::{err, ApiError};
use crate::model::Model;
use crate::split::kserve::{self, RawTensor};
use crate::split::wire::{Encoded, Encoding, Int8Params};
use axum::http::StatusCode;
use serde_json::Value;

/// Validates the input against the model and the cut it names.
pub(super) fn request_tensor(
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
    let from = int_param("edgecut_from_block")?;
    let blocks = m.blocks.len();
    let from = match from {
        None => 0,
        Some(k) if k >= 0 && (k as usize) < blocks => k as usize,
        Some(k) => {
            return Err(bad(format!(
                "edgecut_from_block {k} is not a cut of '{}' (0..{blocks})",
                m.name()
            )))
        }
    };
    let tail = msg.parameter("edgecut_from_block").is_some();
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
                "tail requests (edgecut_from_block) must carry edgecut_model_hash".into(),
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
    let e = Encoded::new(encoding, input.shape.clone(), input.bytes.clone(), int8)
        .map_err(|e| bad(e.to_string()))?;
    Ok((from, e))
}
