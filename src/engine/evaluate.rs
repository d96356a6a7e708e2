//! Running a whole model over a labelled dataset: the one evaluation loop behind `eval`, exit
//! calibration, the simulator's exit confidences and the reports.

use super::{Answer, EngineError, Plan, PlanOutput};
use crate::cpu::ExitStat;
use crate::data::Dataset;
use crate::encoding::Encoded;
use crate::model::Model;
use crate::tensor::Tensor;
use std::sync::Arc;

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
    run_batches(model, plan.capacity(), data, limit, |x| {
        Ok(vec![plan.run(x)?])
    })
}

/// Runs a split model, `head` then `tail` (which together cover the whole model, cut where `head`
/// ends), over the first `limit` samples of `data`. Each batch's split tensor goes through `link`,
/// which turns it into the requests a server would receive (the wire's encoding, one or more
/// samples each); the tail, compiled with the matching [`super::PlanIo::decoding`], unpacks them in
/// its first dispatch as the server does. Batches are the smaller of the two plans' capacities.
pub fn evaluate_split<E: From<EngineError>>(
    head: &Plan,
    tail: &Plan,
    data: &Dataset,
    limit: usize,
    mut link: impl FnMut(&Tensor) -> Result<Vec<Encoded>, E>,
) -> Result<Evaluation, E> {
    let model = head.model();
    let blocks = model.blocks.len();
    let same_model = Arc::ptr_eq(model, tail.model()) || model.hash == tail.model().hash;
    if !same_model
        || head.range().start != 0
        || head.range().end != tail.range().start
        || tail.range().end != blocks
    {
        return Err(EngineError::Evaluate(format!(
            "a split evaluation needs a head from block 0 and a tail to block {blocks} of one model, meeting at the cut; got blocks {:?} and {:?}",
            head.range(),
            tail.range()
        ))
        .into());
    }
    let capacity = head.capacity().min(tail.capacity());
    run_batches(model, capacity, data, limit, |x| {
        let front = head.run(x)?;
        let parts = link(&front.output)?;
        let back = tail.run_encoded(&parts.iter().collect::<Vec<_>>())?;
        Ok(vec![front, back])
    })
}

/// The loop itself: `run` turns each batch into the outputs of plans covering the whole model in
/// block order (the last one ends the model).
fn run_batches<E: From<EngineError>>(
    model: &Model,
    capacity: usize,
    data: &Dataset,
    limit: usize,
    mut run: impl FnMut(&Tensor) -> Result<Vec<PlanOutput>, E>,
) -> Result<Evaluation, E> {
    let mut exit_order: Vec<usize> = (0..model.exits.len()).collect();
    exit_order.sort_by_key(|&i| model.exits[i].after_block);
    let classes = model.classes();
    let n = limit.min(data.len());
    let capacity = capacity.max(1);
    let mut samples = Vec::with_capacity(n);
    for lo in (0..n).step_by(capacity) {
        let hi = (lo + capacity).min(n);
        let x = data.batch(lo..hi, model.input_shape()).ok_or_else(|| {
            EngineError::Evaluate(format!(
                "the dataset has {} values per sample but model '{}' expects input {:?}",
                data.images.sample_len(),
                model.name(),
                model.input_shape()
            ))
        })?;
        let outputs = run(&x)?;
        collect(
            &outputs,
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
    outputs: &[PlanOutput],
    exit_order: &[usize],
    classes: usize,
    labels: &[u8],
    samples: &mut Vec<SampleResult>,
) -> Result<(), EngineError> {
    let last = outputs
        .last()
        .ok_or_else(|| EngineError::Evaluate("no plan ran".into()))?;
    let finals = last.final_stats.as_ref().ok_or_else(|| {
        EngineError::Evaluate("a whole-model plan produced no final logits".into())
    })?;
    let exits: Vec<&super::ExitOutput> = exit_order
        .iter()
        .map(|&e| {
            outputs
                .iter()
                .flat_map(|o| &o.exits)
                .find(|x| x.exit == e)
                .ok_or_else(|| EngineError::Evaluate(format!("exit head {e} did not run")))
        })
        .collect::<Result<_, _>>()?;
    let logits = last.output.data();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::{encode_cpu, Encoding};
    use crate::engine::{Backend, PlanIo};
    use crate::fixture::lenet;

    fn data(n: usize) -> Dataset {
        let values: Vec<f32> = (0..n * 28 * 28)
            .map(|i| ((i * 7) % 13) as f32 / 13.0)
            .collect();
        Dataset {
            images: Tensor::new(vec![n, 1, 28, 28], values).expect("sized"),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        }
    }

    #[test]
    fn a_split_evaluation_with_an_exact_link_matches_the_whole_model() {
        let model = Arc::new(lenet(3).expect("fixture builds"));
        let blocks = model.blocks.len();
        let whole = Plan::compile(&model, 0..blocks, &Backend::Cpu, 4).expect("compiles");
        let want = evaluate(&whole, &data(10), 10).expect("evaluates");
        assert_eq!(want.samples.len(), 10);
        let fp32_in = PlanIo::decoding(Encoding::Fp32);
        for cut in 1..blocks {
            let head = Plan::compile(&model, 0..cut, &Backend::Cpu, 3).expect("head");
            let tail =
                Plan::compile_with(&model, cut..blocks, &Backend::Cpu, 4, fp32_in).expect("tail");
            let got = evaluate_split(&head, &tail, &data(10), 10, |t| {
                Ok::<_, EngineError>(vec![encode_cpu(t, Encoding::Fp32)])
            })
            .expect("evaluates");
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn a_split_evaluation_refuses_plans_that_do_not_meet_at_the_cut() {
        let model = Arc::new(lenet(3).expect("fixture builds"));
        let head = Plan::compile(&model, 0..1, &Backend::Cpu, 2).expect("head");
        let io = PlanIo::decoding(Encoding::Fp32);
        let tail =
            Plan::compile_with(&model, 2..model.blocks.len(), &Backend::Cpu, 2, io).expect("tail");
        let err = evaluate_split(&head, &tail, &data(2), 2, |t| {
            Ok::<_, EngineError>(vec![encode_cpu(t, Encoding::Fp32)])
        })
        .expect_err("a gap between the plans");
        assert!(err.to_string().contains("meeting at the cut"), "{err}");
    }
}
