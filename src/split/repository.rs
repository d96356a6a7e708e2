//! The client's side of a model repository: which model a Triton or KServe server holding the
//! repository `edgecut export --triton-repo` writes ([`crate::export`]) runs for a split, the
//! check of its metadata against the cut, and the tensors a tail request carries
//! (deploy/README.md, "Triton and KServe").

use super::kserve::RawTensor;
use crate::encoding::{Encoded, Encoding};
use crate::export::{input_specs, tail_model_name};
use crate::model::Model;
use crate::sched::{Choice, Cut};
use serde_json::{Map, Value};

/// The model a repository server runs for `choice` of the model called `model` (the naming
/// convention of [`crate::export`]): `<model>` for the full model (server-only) and
/// [`tail_model_name`] (`<model>__cut<k>__<fp32|fp16|int8>`) for the tail after block `k`.
/// `None` for device-only.
pub fn repository_model_name(model: &str, choice: Choice) -> Option<String> {
    match choice.cut {
        Cut::Device => None,
        Cut::Server => Some(model.to_string()),
        Cut::After(k) => Some(tail_model_name(model, k, choice.encoding)),
    }
}

/// A tensor as model metadata declares it: name, datatype, shape with the batch first (`-1`).
type Declared = (String, String, Vec<i64>);

/// The inputs the exporter gives the repository model for `choice` ([`input_specs`]). The full
/// model takes the model's input as FP32, whatever the policy's server-only encoding.
fn expected_inputs(model: &Model, choice: Choice) -> Vec<Declared> {
    let (shape, encoding) = match choice.cut {
        Cut::After(k) => (model.blocks[k].output_shape.clone(), choice.encoding),
        _ => (model.input_shape().to_vec(), Encoding::Fp32),
    };
    input_specs(&shape, encoding)
        .into_iter()
        .map(|t| (t.name, t.datatype.to_string(), t.dims))
        .collect()
}

/// What `choice` is, for messages.
fn describe(model: &Model, choice: Choice) -> String {
    match choice.cut {
        Cut::After(k) => format!(
            "the tail after block {k} ('{}') taking {} of '{}'",
            model.blocks[k].name,
            choice.encoding,
            model.name()
        ),
        _ => format!("the full model '{}'", model.name()),
    }
}

/// The error for a repository without the model `name` that `choice` needs.
pub fn missing(model: &Model, choice: Choice, name: &str) -> String {
    format!(
        "the server has no model '{name}', where edgecut's naming convention puts {}; load the \
         repository `edgecut export {} --triton-repo <dir>` writes, or pick a policy without this split",
        describe(model, choice),
        model.name()
    )
}

/// Checks the metadata (`GET /v2/models/{name}`) of the repository model for `choice`: the
/// inputs of the naming convention (the cut's tensor in the encoding's datatype) and an `output`
/// FP32 `[-1, classes]`. The batch dimension may be variable or fixed; every other dimension must
/// match.
pub fn check_metadata(
    model: &Model,
    choice: Choice,
    name: &str,
    meta: &Value,
) -> Result<(), String> {
    let declared = |key: &str| -> Vec<Declared> {
        let list = meta.get(key).and_then(Value::as_array);
        list.into_iter()
            .flatten()
            .map(|t| {
                let text = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let shape = t
                    .get("shape")
                    .and_then(Value::as_array)
                    .map(|d| d.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                (text("name"), text("datatype"), shape)
            })
            .collect()
    };
    let same = |(n, d, s): &Declared, (wn, wd, ws): &Declared| {
        n == wn && d == wd && s.len() == ws.len() && s.get(1..) == ws.get(1..)
    };
    let show = |list: &[Declared]| {
        list.iter()
            .map(|(n, d, s)| format!("{n} {d} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (inputs, outputs) = (declared("inputs"), declared("outputs"));
    let want = expected_inputs(model, choice);
    let output: Declared = (
        "output".into(),
        "FP32".into(),
        vec![-1, model.classes() as i64],
    );
    let inputs_match =
        inputs.len() == want.len() && want.iter().all(|w| inputs.iter().any(|i| same(i, w)));
    if inputs_match && outputs.iter().any(|o| same(o, &output)) {
        return Ok(());
    }
    Err(format!(
        "model '{name}' on the server takes [{}] and gives [{}], but {} needs [{}] and [{}]; \
         re-export the repository from this model",
        show(&inputs),
        show(&outputs),
        describe(model, choice),
        show(&want),
        show(std::slice::from_ref(&output))
    ))
}

/// The tensors of a repository request for `e` (a batch of `batch` samples): the data as `FP32`,
/// `FP16` or `UINT8`; for INT8 also `scale` `FP32 [batch, 1]` and `zero_point` `UINT8 [batch, 1]`.
/// edgecut's INT8 codes are signed, so codes and zero point travel shifted by 128, which
/// dequantizes to the same values.
pub fn wire_inputs(e: Encoded, batch: usize) -> Vec<RawTensor> {
    let tensor = |name: &str, datatype: &str, shape: Vec<usize>, bytes: Vec<u8>| RawTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        bytes,
        parameters: Map::new(),
    };
    match (e.encoding, e.int8) {
        (Encoding::Int8, Some(p)) => {
            let shifted = e.bytes.iter().map(|b| b ^ 0x80).collect();
            let zero_point = (p.zero_point + 128).clamp(0, 255) as u8;
            vec![
                tensor("input", "UINT8", e.shape, shifted),
                tensor(
                    "scale",
                    "FP32",
                    vec![batch, 1],
                    p.scale.to_le_bytes().repeat(batch),
                ),
                tensor(
                    "zero_point",
                    "UINT8",
                    vec![batch, 1],
                    vec![zero_point; batch],
                ),
            ]
        }
        (encoding, _) => vec![tensor("input", encoding.datatype(), e.shape, e.bytes)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode_cpu, Int8Params};
    use crate::tensor::Tensor;

    #[test]
    fn shifted_int8_codes_dequantize_to_the_signed_codes_values() {
        let t = Tensor::new(vec![2, 3], vec![-1.5, 0.0, 0.25, 2.0, -0.75, 1.0]).expect("shape");
        let e = encode_cpu(&t, Encoding::Int8);
        let p = e.int8.expect("int8 parameters");
        let wire = wire_inputs(e.clone(), 2);
        let zero = wire[2].bytes[0] as f32;
        let scale = f32::from_le_bytes(wire[1].bytes[..4].try_into().expect("4 bytes"));
        for (signed, unsigned) in e.bytes.iter().zip(&wire[0].bytes) {
            // DequantizeLinear on the wire form == edgecut's dequantization of the code.
            let onnx = (*unsigned as f32 - zero) * scale;
            assert_eq!(onnx, Int8Params::dequantize(p, *signed as i8));
        }
        assert_eq!(wire[1].shape, [2, 1]);
        assert_eq!(wire[2].bytes.len(), 2);
    }
}
