//! Running a whole model over a labelled dataset: the one evaluation loop behind `eval`, exit
//! calibration, the simulator's exit confidences and the reports.

use super::{Answer, EngineError, Plan, PlanOutput};
use crate::cpu::ExitStat;
use crate::data::Dataset;

/// What one sample produced: its label, final logits and the statistics of every exit head.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResult {
    /// The true class.
    pub label: u32,
    /// Final-classifier logits (`classes` values).
    pub logits: Vec<f32>,
    /// Softmax statistics of the final logits.
    pub final_stat: ExitStat,
    /// Softmax statistics of each exit head, in the order of [`Evaluation::exit_order`].
    pub exits: Vec<ExitStat>,
}

impl SampleResult {
    /// The answer at `threshold`: the first exit (in block order) strictly above it, else the
    /// final classifier, as [`PlanOutput::answers`] decides.
    pub fn answer(&self, threshold: f32, exit_order: &[usize]) -> Answer {
        self.exits
            .iter()
            .zip(exit_order)
            .find(|(s, _)| s.confidence > threshold)
            .map_or(
                Answer::Final {
                    class: self.final_stat.argmax,
                },
                |(s, &exit)| Answer::Exit {
                    exit,
                    class: s.argmax,
                },
            )
    }
}

/// Per-sample results of a model on a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Indices into `model.exits`, sorted by the block they follow (the order of
    /// [`SampleResult::exits`]).
    pub exit_order: Vec<usize>,
    /// One result per evaluated sample, in dataset order.
    pub samples: Vec<SampleResult>,
}

impl Evaluation {
    /// Answers of every sample at `threshold`.
    pub fn answers(&self, threshold: f32) -> Vec<Answer> {
        self.samples
            .iter()
            .map(|s| s.answer(threshold, &self.exit_order))
            .collect()
    }

    /// Fraction answered correctly at `threshold` (`NaN` when empty).
    pub fn accuracy(&self, threshold: f32) -> f64 {
        let correct = self
            .samples
            .iter()
            .filter(|s| s.answer(threshold, &self.exit_order).class() == Some(s.label))
            .count();
        correct as f64 / self.samples.len() as f64
    }

    /// Samples answered by each exit head at `threshold`, indexed like `model.exits`.
    pub fn exit_counts(&self, threshold: f32, exits: usize) -> Vec<usize> {
        let mut counts = vec![0; exits];
        for s in &self.samples {
            if let Answer::Exit { exit, .. } = s.answer(threshold, &self.exit_order) {
                counts[exit] += 1;
            }
        }
        counts
    }

    /// Fraction answered by any exit head at `threshold` (`NaN` when empty).
    pub fn exit_rate(&self, threshold: f32) -> f64 {
        let exited = self
            .samples
            .iter()
            .filter(|s| matches!(s.answer(threshold, &self.exit_order), Answer::Exit { .. }))
            .count();
        exited as f64 / self.samples.len() as f64
    }
}

/// Runs `plan` (which must cover the whole model) over the first `limit` samples of `data`, in
/// batches of the plan's capacity.
pub fn evaluate(plan: &Plan, data: &Dataset, limit: usize) -> Result<Evaluation, EngineError> {
    let model = plan.model();
    if plan.range() != (0..model.blocks.len()) {
        return Err(EngineError::Evaluate(format!(
            "evaluation needs a plan of the whole model (blocks 0..{}), got blocks {:?}",
            model.blocks.len(),
            plan.range()
        )));
    }
    let mut exit_order: Vec<usize> = (0..model.exits.len()).collect();
    exit_order.sort_by_key(|&i| model.exits[i].after_block);
    let classes = model.classes();
    let n = limit.min(data.len());
    let mut samples = Vec::with_capacity(n);
    for lo in (0..n).step_by(plan.capacity().max(1)) {
        let hi = (lo + plan.capacity()).min(n);
        let x = data.batch(lo..hi, model.input_shape()).ok_or_else(|| {
            EngineError::Evaluate(format!(
                "the dataset has {} values per sample but model '{}' expects input {:?}",
                data.images.sample_len(),
                model.name(),
                model.input_shape()
            ))
        })?;
        let out = plan.run(&x)?;
        collect(
            &out,
            &exit_order,
            classes,
            &data.labels[lo..hi],
            &mut samples,
        )?;
    }
    Ok(Evaluation {
        exit_order,
        samples,
    })
}

fn collect(
    out: &PlanOutput,
    exit_order: &[usize],
    classes: usize,
    labels: &[u8],
    samples: &mut Vec<SampleResult>,
) -> Result<(), EngineError> {
    let finals = out.final_stats.as_ref().ok_or_else(|| {
        EngineError::Evaluate("a whole-model plan produced no final logits".into())
    })?;
    let exits: Vec<&super::ExitOutput> = exit_order
        .iter()
        .map(|&e| {
            out.exits
                .iter()
                .find(|x| x.exit == e)
                .ok_or_else(|| EngineError::Evaluate(format!("exit head {e} did not run")))
        })
        .collect::<Result<_, _>>()?;
    let logits = out.output.data();
    for (i, &label) in labels.iter().enumerate() {
        samples.push(SampleResult {
            label: u32::from(label),
            logits: logits[i * classes..(i + 1) * classes].to_vec(),
            final_stat: finals[i],
            exits: exits.iter().map(|x| x.stats[i]).collect(),
        });
    }
    Ok(())
}
