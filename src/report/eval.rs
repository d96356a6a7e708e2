//! What `edgecut eval` reports: accuracy and exit rate of a whole model on a labelled dataset,
//! measured with the one evaluation loop ([`crate::engine::evaluate()`]).

use super::ReportError;
use crate::data::Dataset;
use crate::engine::{evaluate, Backend, Plan};
use crate::model::Model;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Accuracy and exit behaviour of a model on a dataset at one exit threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Model name.
    pub model: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Fraction answered correctly (by an exit head or the final classifier).
    pub accuracy: f64,
    /// `cpu` or `gpu`.
    pub backend: String,
    /// Adapter description.
    pub adapter: String,
    /// An exit head answers when its confidence is strictly above this.
    pub exit_threshold: f32,
    /// Fraction answered by any exit head.
    pub exit_rate: f64,
    /// Samples answered by each exit head, by exit name.
    pub exits: BTreeMap<String, usize>,
    /// Wall seconds of the evaluation (plan compilation excluded).
    pub seconds: f64,
}

/// Evaluates `model` on the first `limit` samples of `data` on `backend` in batches of `batch`.
pub fn eval_model(
    model: &Arc<Model>,
    backend: &Backend,
    data: &Dataset,
    threshold: f32,
    batch: usize,
    limit: usize,
) -> Result<EvalReport, ReportError> {
    let n = limit.min(data.len());
    if batch == 0 {
        return Err(ReportError::Invalid("--batch must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&threshold) {
        return Err(ReportError::Invalid(format!(
            "--exit-threshold must be in [0, 1], got {threshold}"
        )));
    }
    if n == 0 {
        return Err(ReportError::Invalid(
            "no samples to evaluate (--limit 0 or an empty dataset?)".into(),
        ));
    }
    let plan = Plan::compile(model, 0..model.blocks.len(), backend, batch.min(n))?;
    let start = Instant::now();
    let result = evaluate(&plan, data, n)?;
    let seconds = start.elapsed().as_secs_f64();
    let counts = result.exit_counts(threshold, model.exits.len());
    Ok(EvalReport {
        model: model.name().to_string(),
        samples: n,
        accuracy: result.accuracy(threshold),
        backend: backend.name().to_string(),
        adapter: backend.adapter(),
        exit_threshold: threshold,
        exit_rate: result.exit_rate(threshold),
        exits: model
            .exits
            .iter()
            .map(|e| e.name.clone())
            .zip(counts)
            .collect(),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_mnist, Split};
    use std::path::Path;

    #[test]
    fn eval_report_of_a_shipped_model_counts_exits_by_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = Arc::new(Model::load(root.join("models/mnist-lenet-ee")).expect("loads"));
        let test = load_mnist(&root.join("models/data/mnist"), Split::Test).expect("MNIST");
        let r = eval_model(&model, &Backend::Cpu, &test, 0.5, 32, 100).expect("evaluates");
        assert_eq!(r.samples, 100);
        let exited: usize = r.exits.values().sum();
        assert_eq!(exited as f64 / 100.0, r.exit_rate);
        assert!(r.accuracy > 0.8, "{r:?}");
        let json = serde_json::to_value(&r).expect("serialises");
        for key in [
            "samples",
            "accuracy",
            "backend",
            "adapter",
            "exit_rate",
            "exits",
        ] {
            assert!(!json[key].is_null(), "missing {key}");
        }
        let err = eval_model(&model, &Backend::Cpu, &test, 1.5, 32, 100).expect_err("bad T");
        assert!(err.to_string().contains("[0, 1]"), "{err}");
    }
}
