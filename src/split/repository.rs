//! The client's side of a model repository: which model a Triton or KServe server holding the
//! repository `edgecut export --triton-repo` writes ([`crate::export`]) runs for a split, the
//! check of its metadata against the cut, and the tensors a tail request carries
//! (deploy/README.md, "Triton and KServe").
//!
//! Server-only requests of an image model go to the full model's 8-bit pixel twin
//! ([`pixel_model_name`]) when the repository holds it and the input is an 8-bit image mapped
//! through the manifest's preprocessing ([`pixels_of`]): one byte per input value, as the cost
//! model prices server-only. Otherwise they go to the FP32 full model.

use super::kserve::RawTensor;
use crate::encoding::{Encoded, Encoding};
use crate::export::{input_specs, pixel_input_spec, pixel_model_name, tail_model_name};
use crate::model::Model;
use crate::preprocess::Preprocess;
use crate::sched::{Choice, Cut};
use crate::tensor::Tensor;
use serde_json::{Map, Value};

/// How far, in pixel values, an input value mapped back through the preprocessing may lie from
/// a whole 8-bit value and still count as that pixel. Preprocessing an 8-bit value in float32
/// and mapping it back moves it by about 1e-5 (three roundings of at most 255 * 2^-24 each), a
/// value that is not a pixel lies anywhere in between.
pub const PIXEL_TOLERANCE: f32 = 1e-3;

/// The 8-bit image that `preprocess` maps to `x` (`[N, 3, H, W]`, channels in the model's
/// order): `(x * std + mean) / scale` per channel, rounded. `None` when `x` is not such an
/// image: a value maps back outside 0..=255 or further than [`PIXEL_TOLERANCE`] from a whole
/// value (an input that did not come from 8-bit pixels, or another preprocessing).
pub fn pixels_of(preprocess: &Preprocess, x: &Tensor) -> Option<Vec<u8>> {
    let &[_, 3, h, w] = x.shape() else {
        return None;
    };
    let plane = h * w;
    if plane == 0 || preprocess.scale == 0.0 {
        return None;
    }
    let mut out = Vec::with_capacity(x.len());
    for (i, &v) in x.data().iter().enumerate() {
        let c = (i / plane) % 3;
        let p = (f64::from(v) * f64::from(preprocess.std[c]) + f64::from(preprocess.mean[c]))
            / f64::from(preprocess.scale);
        let whole = p.round();
        if !(0.0..=255.0).contains(&whole) || (p - whole).abs() > f64::from(PIXEL_TOLERANCE) {
            return None;
        }
        out.push(whole as u8);
    }
    Some(out)
}

/// The request tensor of the pixel twin: `input` UINT8 of `shape`.
pub fn pixel_input(shape: Vec<usize>, pixels: Vec<u8>) -> RawTensor {
    RawTensor {
        name: "input".into(),
        datatype: "UINT8".into(),
        shape,
        bytes: pixels,
        parameters: Map::new(),
    }
}

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

/// The inputs the exporter gives the repository model `name` for `choice` ([`input_specs`]).
/// The full model takes the model's input as FP32, whatever the policy's server-only encoding;
/// its pixel twin ([`pixel_model_name`]) takes UINT8.
fn expected_inputs(model: &Model, choice: Choice, name: &str) -> Vec<Declared> {
    let specs = match choice.cut {
        Cut::After(k) => input_specs(&model.blocks[k].output_shape, choice.encoding),
        _ if name == pixel_model_name(model.name()) => vec![pixel_input_spec(model)],
        _ => input_specs(model.input_shape(), Encoding::Fp32),
    };
    specs
        .into_iter()
        .map(|t| (t.name, t.datatype.to_string(), t.dims))
        .collect()
}

/// What the repository model `name` for `choice` is, for messages.
fn describe(model: &Model, choice: Choice, name: &str) -> String {
    match choice.cut {
        Cut::After(k) => format!(
            "the tail after block {k} ('{}') taking {} of '{}'",
            model.blocks[k].name,
            choice.encoding,
            model.name()
        ),
        _ if name == pixel_model_name(model.name()) => {
            format!("the full model '{}' taking 8-bit pixels", model.name())
        }
        _ => format!("the full model '{}'", model.name()),
    }
}

/// The error for a repository without the model `name` that `choice` needs.
pub fn missing(model: &Model, choice: Choice, name: &str) -> String {
    format!(
        "the server has no model '{name}', where edgecut's naming convention puts {}; load the \
         repository `edgecut export {} --triton-repo <dir>` writes, or pick a policy without this split",
        describe(model, choice, name),
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
    let want = expected_inputs(model, choice, name);
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
        describe(model, choice, name),
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

    /// Preprocessings of the kinds image models use: Inception-style 127/128 (Lite0), and
    /// torchvision's 1/255 with ImageNet mean and std, in BGR order.
    fn preprocessings() -> Vec<Preprocess> {
        let lite0: Preprocess = serde_json::from_value(serde_json::json!({
            "scale": 1.0, "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0]
        }))
        .expect("valid");
        let torchvision = Preprocess {
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channels: crate::preprocess::ChannelOrder::Bgr,
            ..lite0.clone()
        };
        vec![lite0, torchvision]
    }

    #[test]
    fn pixels_of_recovers_the_8_bit_image_the_preprocessing_made() {
        // Every 8-bit value appears in some channel; 2 samples of [3, 5, 11].
        let (h, w) = (5u32, 11u32);
        let image = |seed: u32| {
            image::RgbImage::from_fn(w, h, |x, y| {
                let v = |c: u32| ((x * 7 + y * 53 + c * 91 + seed * 131) % 256) as u8;
                image::Rgb([v(0), v(1), v(2)])
            })
        };
        for p in preprocessings() {
            let (a, b) = (image(0), image(1));
            let mut data = p.apply(&a, &[3, 5, 11]).expect("applies");
            data.extend(p.apply(&b, &[3, 5, 11]).expect("applies"));
            let x = Tensor::new(vec![2, 3, 5, 11], data).expect("shape");
            let pixels = pixels_of(&p, &x).expect("an 8-bit image");
            // The same layout as the input: [N, 3, H, W], channels in the model's order.
            let mut want = Vec::new();
            for img in [&a, &b] {
                for c in 0..3 {
                    let src = match p.channels {
                        crate::preprocess::ChannelOrder::Rgb => c,
                        crate::preprocess::ChannelOrder::Bgr => 2 - c,
                    };
                    want.extend(img.pixels().map(|px| px.0[src]));
                }
            }
            assert_eq!(pixels, want);
            // A third of a pixel step off, or past 255, is no 8-bit image.
            let step = p.scale / p.std[0];
            let mut off = x.clone();
            off.data_mut()[7] += step / 3.0;
            assert_eq!(pixels_of(&p, &off), None);
            let mut high = x.clone();
            high.data_mut()[0] = (256.0 * p.scale - p.mean[0]) / p.std[0];
            assert_eq!(pixels_of(&p, &high), None);
        }
        // Not [N, 3, H, W].
        let p = &preprocessings()[0];
        let flat = Tensor::new(vec![1, 3], vec![0.0; 3]).expect("shape");
        assert_eq!(pixels_of(p, &flat), None);
    }

    #[test]
    fn the_pixel_twin_is_checked_for_an_8_bit_image_input() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/efficientnet-lite0");
        let model = Model::load(dir).expect("loads");
        let name = pixel_model_name(model.name());
        let meta = |datatype: &str| {
            serde_json::json!({
                "name": name,
                "inputs": [{"name": "input", "datatype": datatype, "shape": [-1, 3, 224, 224]}],
                "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 1000]}],
            })
        };
        let server_only = Choice {
            cut: Cut::Server,
            encoding: Encoding::Int8,
        };
        check_metadata(&model, server_only, &name, &meta("UINT8")).expect("the pixel twin");
        let err = check_metadata(&model, server_only, &name, &meta("FP32")).unwrap_err();
        assert!(
            err.contains("taking 8-bit pixels") && err.contains("UINT8"),
            "{err}"
        );
        // The FP32 full model keeps its FP32 input.
        check_metadata(&model, server_only, model.name(), &meta("FP32")).expect("full model");
        assert!(missing(&model, server_only, &name).contains("8-bit pixels"));
    }
}
