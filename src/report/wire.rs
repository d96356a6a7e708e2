//! What `edgecut wire` reports: the accuracy effect of each split-tensor encoding at every cut of a
//! model, measured with the one split evaluation loop ([`evaluate_split`]). Each sample's split
//! tensor is packed as the device client sends it (one request per sample, so INT8 has a scale
//! and zero point per sample) by the reference encoder ([`encode_cpu`]); the tail plan unpacks the
//! batch of requests in its first dispatch (`quant.wgsl` on a GPU), as the server does. The heads'
//! own GPU encode step matches [`encode_cpu`]: FP16 byte for byte, INT8 with the same scale and
//! zero point and codes within one step (tests/plans.rs).

use super::ReportError;
use crate::data::Dataset;
use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding};
use crate::engine::evaluate::evaluate_split;
use crate::engine::{Backend, Plan, PlanIo};
use crate::model::Model;
use crate::tensor::Tensor;
use serde::Serialize;
use std::sync::Arc;

/// Samples per batch of the head and tail plans.
const BATCH: usize = 250;

/// One encoding at one cut.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireRow {
    /// Index of the block the cut follows (`static:<index>`, `edgecut_cut_after`): the head runs
    /// blocks `0..=cut_after`.
    pub cut_after: usize,
    /// Name of the block the cut follows.
    pub after_block: String,
    /// KServe datatype of the encoding (`FP32`, `FP16`, `INT8`).
    pub encoding: &'static str,
    /// Payload bytes of one sample's split tensor.
    pub bytes_per_sample: usize,
    /// True when the cut is one of the model's cut candidates (natural bottlenecks the scheduler
    /// chooses among).
    pub candidate: bool,
    /// Fraction answered correctly by the final classifier (labelled data only).
    pub accuracy: Option<f64>,
    /// Accuracy minus the FP32 accuracy at the same cut (labelled data only).
    pub accuracy_change: Option<f64>,
    /// Fraction of samples given the same class as with FP32.
    pub agreement_with_fp32: f64,
    /// Largest absolute difference between a decoded and the original split value.
    pub max_abs_error: f32,
}

/// Every encoding at every cut of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireReport {
    /// Model name.
    pub model: String,
    /// Model content hash.
    pub hash: String,
    /// Samples evaluated at each cut and encoding.
    pub samples: usize,
    /// What the samples are (e.g. `MNIST test set`, `4 photos x 10 crops`).
    pub inputs: String,
    /// `cpu` or `gpu`.
    pub backend: String,
    /// Adapter description.
    pub adapter: String,
    /// Rows by cut, then encoding (widest first).
    pub rows: Vec<WireRow>,
}

/// The text of `edgecut wire`: a header line and one row per cut and encoding.
impl std::fmt::Display for WireReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: wire encodings at every cut (* = cut candidate), {} samples ({}), tails unpack on {}",
            self.model, self.samples, self.inputs, self.adapter
        )?;
        let name = self
            .rows
            .iter()
            .map(|r| r.after_block.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:>5} {:<name$} {:<5} {:>10} {:>9} {:>9} {:>10} {:>10}",
            "after", "block", "enc", "bytes/smp", "accuracy", "change", "agree fp32", "max |err|"
        )?;
        let percent = |v: Option<f64>, signed: bool| match (v, signed) {
            (None, _) => "-".to_string(),
            (Some(v), false) => format!("{:.2}%", v * 100.0),
            (Some(v), true) => format!("{:+.2}%", v * 100.0),
        };
        for r in &self.rows {
            writeln!(
                f,
                "{:>4}{} {:<name$} {:<5} {:>10} {:>9} {:>9} {:>9.2}% {:>10.3e}",
                r.cut_after,
                if r.candidate { "*" } else { " " },
                r.after_block,
                r.encoding,
                r.bytes_per_sample,
                percent(r.accuracy, false),
                percent(r.accuracy_change, true),
                r.agreement_with_fp32 * 100.0,
                r.max_abs_error
            )?;
        }
        Ok(())
    }
}

/// Encodes the split tensor one sample at a time, as the device client sends them, and raises
/// `max_err` to the largest difference the reference decoder ([`decode_cpu`]) finds.
fn requests(
    mid: &Tensor,
    encoding: Encoding,
    max_err: &mut f32,
) -> Result<Vec<Encoded>, ReportError> {
    let mut shape = mid.shape().to_vec();
    shape[0] = 1;
    (0..mid.batch())
        .map(|i| {
            let one = Tensor::new(shape.clone(), mid.sample(i).to_vec())?;
            let e = encode_cpu(&one, encoding);
            for (a, b) in decode_cpu(&e)?.data().iter().zip(one.data()) {
                *max_err = max_err.max((a - b).abs());
            }
            Ok(e)
        })
        .collect()
}

/// Evaluates the first `limit` samples of the labelled `data` split at every cut of `model` with
/// every encoding.
pub fn wire_accuracy(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    limit: usize,
) -> Result<WireReport, ReportError> {
    measure(
        model,
        backend,
        data,
        limit.min(data.len()),
        true,
        "MNIST test set",
    )
}

/// Measures how often each encoding keeps the FP32 top-1 class at every cut of `model` on
/// unlabelled `inputs` (batch first, e.g. photos), described by `what`. No accuracy is reported.
pub fn wire_agreement(
    model: &Arc<Model>,
    backend: &Backend,
    inputs: Tensor,
    what: &str,
) -> Result<WireReport, ReportError> {
    let n = inputs.batch();
    // The one split evaluation loop takes a dataset; its labels are never read here.
    let data = Dataset {
        images: inputs,
        labels: vec![0; n],
    };
    measure(model, backend, &data, n, false, what)
}

fn measure(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    n: usize,
    labelled: bool,
    what: &str,
) -> Result<WireReport, ReportError> {
    if n == 0 {
        return Err(ReportError::Invalid("no samples to evaluate".into()));
    }
    let blocks = model.blocks.len();
    let candidates = model.cut_candidates();
    let batch = BATCH.min(n);
    let mut rows = Vec::new();
    for cut in 1..blocks {
        let head = Plan::compile(model, 0..cut, backend, batch)?;
        let elems: usize = model.shape_at(cut).iter().product();
        let mut fp32: Option<(f64, Vec<Option<u32>>)> = None;
        for encoding in Encoding::ALL {
            let io = PlanIo::decoding(encoding);
            let tail = Plan::compile_with(model, cut..blocks, backend, batch, io)?;
            let mut max_abs_error = 0f32;
            let result = evaluate_split(&head, &tail, data, n, |mid| {
                requests(mid, encoding, &mut max_abs_error)
            })?;
            let accuracy = result.accuracy(1.0);
            let classes: Vec<Option<u32>> = result.answers(1.0).iter().map(|a| a.class()).collect();
            let (reference_accuracy, reference) = fp32.get_or_insert((accuracy, classes.clone()));
            let agree = classes.iter().zip(reference.iter()).filter(|(a, b)| a == b);
            rows.push(WireRow {
                cut_after: cut - 1,
                after_block: model.blocks[cut - 1].name.clone(),
                encoding: encoding.datatype(),
                bytes_per_sample: elems * encoding.bytes_per_value(),
                candidate: candidates.contains(&(cut - 1)),
                accuracy: labelled.then_some(accuracy),
                accuracy_change: labelled.then_some(accuracy - *reference_accuracy),
                agreement_with_fp32: agree.count() as f64 / n as f64,
                max_abs_error,
            });
        }
    }
    Ok(WireReport {
        model: model.name().to_string(),
        hash: model.hash.clone(),
        samples: n,
        inputs: what.to_string(),
        backend: backend.name().to_string(),
        adapter: backend.adapter(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_mnist, Split};
    use crate::engine::evaluate;
    use std::path::Path;

    #[test]
    fn wire_rows_of_a_shipped_model_give_fp32_the_unsplit_accuracy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = Arc::new(Model::load(root.join("models/mnist-lenet-ee")).expect("loads"));
        let test = load_mnist(&root.join("models/data/mnist"), Split::Test).expect("MNIST");
        let n = 60;
        let r = wire_accuracy(&model, &Backend::Cpu, &test, n).expect("measures");
        let blocks = model.blocks.len();
        assert_eq!((r.samples, r.rows.len()), (n, (blocks - 1) * 3));
        let candidates = model.cut_candidates();
        assert!(!candidates.is_empty());
        for row in &r.rows {
            assert_eq!(row.candidate, candidates.contains(&row.cut_after));
        }
        let whole = Plan::compile(&model, 0..blocks, &Backend::Cpu, n).expect("compiles");
        let unsplit = evaluate(&whole, &test, n).expect("evaluates").accuracy(1.0);
        for row in &r.rows {
            let elems: usize = model.shape_at(row.cut_after + 1).iter().product();
            match row.encoding {
                "FP32" => {
                    assert_eq!(row.accuracy, Some(unsplit), "cut {}", row.cut_after);
                    assert_eq!((row.max_abs_error, row.accuracy_change), (0.0, Some(0.0)));
                    assert_eq!(row.agreement_with_fp32, 1.0);
                    assert_eq!(row.bytes_per_sample, 4 * elems);
                }
                "FP16" => assert_eq!(row.bytes_per_sample, 2 * elems),
                _ => {
                    assert_eq!(row.bytes_per_sample, elems);
                    assert!(
                        row.max_abs_error > 0.0,
                        "INT8 is lossy at cut {}",
                        row.cut_after
                    );
                }
            }
            assert!(row.agreement_with_fp32 >= 0.9, "{row:?}");
        }
        let json = serde_json::to_value(&r).expect("serialises");
        for key in [
            "cut_after",
            "after_block",
            "encoding",
            "bytes_per_sample",
            "accuracy",
        ] {
            assert!(!json["rows"][0][key].is_null(), "row missing {key}");
        }
        for key in ["accuracy_change", "agreement_with_fp32", "max_abs_error"] {
            assert!(!json["rows"][0][key].is_null(), "row missing {key}");
        }
    }

    #[test]
    fn unlabelled_inputs_report_agreement_without_accuracy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = Arc::new(Model::load(root.join("models/mnist-lenet-ee")).expect("loads"));
        let test = load_mnist(&root.join("models/data/mnist"), Split::Test).expect("MNIST");
        let inputs = test.batch(0..20, model.input_shape()).expect("batch");
        let r = wire_agreement(&model, &Backend::Cpu, inputs, "20 digits").expect("measures");
        assert_eq!((r.samples, r.inputs.as_str()), (20, "20 digits"));
        for row in &r.rows {
            assert_eq!((row.accuracy, row.accuracy_change), (None, None));
            if row.encoding == "FP32" {
                assert_eq!(row.agreement_with_fp32, 1.0);
            }
        }
        assert!(r.to_string().contains(" - "), "no accuracy is shown as '-'");
    }
}
