//! The planner: pure data, no device. It numbers the values a block range computes
//! (`schedule`), lowers its steps and picks activation layouts (`place`), and assigns the
//! values to a pool of reusable buffers by liveness (`assign_slots`). The GPU executor turns
//! the result into buffers and dispatches; these functions are testable without a GPU.

use crate::gpu::kernels;
use crate::model::{Activation, Binary, BinaryOp, BinaryOperand, Conv2d, Model, Op, Operand, Step};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// One step in execution order, reading and writing numbered values.
pub(crate) struct Recorded<'m> {
    pub step: &'m Step,
    pub input: usize,
    /// Further values the step reads ([`Op::operands`]), in order.
    pub others: Vec<usize>,
    pub output: usize,
}

/// The values of a range in execution order: value 0 is the plan input; `flatten` aliases
/// its input instead of producing a value. A step reads the previous step's value, or the
/// block input or a saved value when it has a `from`.
pub(crate) struct Schedule<'m> {
    pub ops: Vec<Recorded<'m>>,
    pub values: usize,
    /// `(exit index, value of its logits)` in block order.
    pub exit_outputs: Vec<(usize, usize)>,
    /// The value the range ends with.
    pub output: usize,
    /// Largest per-sample value, in elements.
    pub max_elems: usize,
}

/// Numbers the values blocks `range` (and the exit heads `exits` inside it) compute.
pub(crate) fn schedule<'m>(model: &'m Model, range: Range<usize>, exits: &[usize]) -> Schedule<'m> {
    let mut s = Schedule {
        ops: Vec::new(),
        values: 1,
        exit_outputs: Vec::new(),
        output: 0,
        max_elems: model.shape_at(range.start).iter().product(),
    };
    let chain = |s: &mut Schedule<'m>, steps: &'m [Step], start: usize| -> usize {
        let mut saved: HashMap<&str, usize> = HashMap::new();
        let mut x = start;
        for step in steps {
            s.max_elems = s.max_elems.max(step.output_shape.iter().product());
            let value_of = |o: &Operand| match o {
                Operand::BlockInput => start,
                Operand::Saved(l) => saved[l.as_str()],
            };
            if let Some(from) = &step.from {
                x = value_of(from);
            }
            if !matches!(step.op, Op::Flatten) {
                let others = step.op.operands().into_iter().map(value_of).collect();
                s.ops.push(Recorded {
                    step,
                    input: x,
                    others,
                    output: s.values,
                });
                x = s.values;
                s.values += 1;
            }
            if let Some(label) = &step.save_as {
                saved.insert(label, x);
            }
        }
        x
    };
    let mut current = 0;
    for b in range {
        current = chain(&mut s, &model.blocks[b].steps, current);
        for &e in exits {
            if model.exits[e].after_block == b {
                let logits = chain(&mut s, &model.exits[e].steps, current);
                s.exit_outputs.push((e, logits));
            }
        }
    }
    s.output = current;
    s
}

/// What one dispatch of a GPU plan does.
pub(crate) enum Work<'m> {
    /// A model step ([`kernels::lower`]ed), row-major in and out.
    Step(Cow<'m, Step>),
    /// A fan-in step reading a feature-major input; `out_fm` when it writes feature-major too.
    FanInFm { step: Cow<'m, Step>, out_fm: bool },
    /// A feature-major copy of a row-major value with `features` per row.
    ToFeatureMajor { label: String, features: usize },
    /// A pointwise convolution of its input with every channel scaled by the gate it also
    /// reads (`others[0]`, `[C, 1, 1]` per sample): a squeeze-excite multiply fused into the
    /// 1x1 convolution that reads it ([`kernels::gated_conv1x1`]).
    GatedConv(Cow<'m, Step>),
}

/// One dispatch over numbered values.
pub(crate) struct Placed<'m> {
    pub work: Work<'m>,
    pub input: usize,
    pub others: Vec<usize>,
    pub output: usize,
}

/// The operands of a squeeze-excite multiply, `x ∘ g` in either order with `x` of shape
/// `[C, H, W]` and `g` its gate `[C, 1, 1]`, no activation: `(x value, g value)`.
fn se_gate(r: &Recorded<'_>) -> Option<(usize, usize)> {
    let Op::Binary(Binary {
        op: BinaryOp::Mul,
        operand: BinaryOperand::Tensor(_),
        operand_shape,
        activation: Activation::None,
        ..
    }) = &r.step.op
    else {
        return None;
    };
    let (&[other], out) = (r.others.as_slice(), &r.step.output_shape) else {
        return None;
    };
    let &[c, _, _] = out.as_slice() else {
        return None;
    };
    let gate = [c, 1, 1];
    if r.step.input_shape == *out && *operand_shape == gate {
        Some((r.input, other))
    } else if *operand_shape == *out && r.step.input_shape == gate {
        Some((other, r.input))
    } else {
        None
    }
}

/// Lowers every step for inference and picks activation layouts. From
/// [`kernels::FEATURE_MAJOR_MIN_BATCH`] rows up, a fan-in step reads a feature-major input:
/// its producer writes it so when every reader is such a fan-in (and it is neither an exit nor
/// the plan output); otherwise one layout step per value makes the copy. A squeeze-excite
/// multiply whose only reader is a pointwise convolution that `gates` accepts fuses into it
/// ([`Work::GatedConv`]; the product is never written). Returns the dispatches and the new
/// number of values.
pub(crate) fn place<'m>(
    sched: &Schedule<'m>,
    batch: usize,
    gates: &dyn Fn(&Conv2d) -> bool,
) -> (Vec<Placed<'m>>, usize) {
    let lowered: Vec<Cow<'m, Step>> = sched.ops.iter().map(|r| kernels::lower(r.step)).collect();
    let fm: Vec<bool> = lowered
        .iter()
        .map(|s| kernels::uses_feature_major(s, batch))
        .collect();
    let kept: HashSet<usize> = sched
        .exit_outputs
        .iter()
        .map(|&(_, v)| v)
        .chain([sched.output])
        .collect();
    // Per value: how many steps read it, and whether all of them are feature-major fan-ins
    // reading it as their input.
    let mut readers = vec![(0usize, true); sched.values];
    for (j, o) in sched.ops.iter().enumerate() {
        readers[o.input].0 += 1;
        readers[o.input].1 &= fm[j];
        for &v in &o.others {
            readers[v] = (readers[v].0 + 1, false);
        }
    }
    let mut written_fm = vec![false; sched.values];
    for (i, r) in sched.ops.iter().enumerate() {
        let (count, all_fm) = readers[r.output];
        written_fm[r.output] = fm[i] && !kept.contains(&r.output) && count > 0 && all_fm;
    }
    // Squeeze-excite multiplies that fuse into the convolution after them: the convolution's
    // index → (x value, gate value).
    let mut fused: HashMap<usize, (usize, usize)> = HashMap::new();
    for (i, r) in sched.ops.iter().enumerate() {
        let Some(next) = sched.ops.get(i + 1) else {
            continue;
        };
        let reads_only_this =
            next.input == r.output && readers[r.output].0 == 1 && !kept.contains(&r.output);
        if let (Some(operands), Op::Conv2d(c)) = (se_gate(r), &lowered[i + 1].op) {
            if reads_only_this && gates(c) {
                fused.insert(i + 1, operands);
            }
        }
    }
    let mut values = sched.values;
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let mut placed = Vec::new();
    for (i, (r, step)) in sched.ops.iter().zip(lowered).enumerate() {
        if fused.contains_key(&(i + 1)) {
            continue;
        }
        if let Some(&(x, gate)) = fused.get(&i) {
            placed.push(Placed {
                work: Work::GatedConv(step),
                input: x,
                others: vec![gate],
                output: r.output,
            });
            continue;
        }
        if !fm[i] {
            placed.push(Placed {
                work: Work::Step(step),
                input: r.input,
                others: r.others.clone(),
                output: r.output,
            });
            continue;
        }
        let input = if written_fm[r.input] {
            r.input
        } else if let Some(&copy) = copies.get(&r.input) {
            copy
        } else {
            let copy = values;
            values += 1;
            copies.insert(r.input, copy);
            placed.push(Placed {
                work: Work::ToFeatureMajor {
                    label: format!("{}.input", step.label),
                    features: step.input_shape.iter().product(),
                },
                input: r.input,
                others: Vec::new(),
                output: copy,
            });
            copy
        };
        placed.push(Placed {
            work: Work::FanInFm {
                step,
                out_fm: written_fm[r.output],
            },
            input,
            others: Vec::new(),
            output: r.output,
        });
    }
    (placed, values)
}

/// Buffer slots of a plan's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slots {
    /// The slot of each value.
    pub of: Vec<usize>,
    /// Slots allocated.
    pub count: usize,
}

/// Assigns `values` numbered values to reusable buffer slots. `ops` are `(input, others,
/// output)` in execution order, value 0 is the plan input. A slot is recycled after the last op
/// that reads its value; the values in `kept` (exit logits, the output) stay live until
/// readback.
pub(crate) fn assign_slots(
    ops: &[(usize, Vec<usize>, usize)],
    values: usize,
    kept: &[usize],
) -> Slots {
    const FOREVER: usize = usize::MAX;
    let mut last_use = vec![0usize; values];
    for (i, (input, others, output)) in ops.iter().enumerate() {
        last_use[*output] = last_use[*output].max(i);
        last_use[*input] = i;
        for &o in others {
            last_use[o] = i;
        }
    }
    for &v in kept {
        last_use[v] = FOREVER;
    }
    let mut of = vec![usize::MAX; values];
    let mut free: Vec<usize> = Vec::new();
    let mut count = 0usize;
    let mut take = |free: &mut Vec<usize>| {
        free.pop().unwrap_or_else(|| {
            count += 1;
            count - 1
        })
    };
    of[0] = take(&mut free);
    for (i, (input, others, output)) in ops.iter().enumerate() {
        of[*output] = take(&mut free);
        let mut dead = vec![*input];
        dead.extend(others);
        dead.push(*output);
        for v in dead {
            if last_use[v] == i && !free.contains(&of[v]) {
                free.push(of[v]);
            }
        }
    }
    Slots { of, count }
}

/// The values a placed plan keeps until readback: the exit logits and the output.
pub(crate) fn kept_values(sched: &Schedule<'_>) -> Vec<usize> {
    sched
        .exit_outputs
        .iter()
        .map(|&(_, v)| v)
        .chain([sched.output])
        .collect()
}

/// The `(input, others, output)` triples of placed dispatches, for [`assign_slots`].
pub(crate) fn edges(placed: &[Placed<'_>]) -> Vec<(usize, Vec<usize>, usize)> {
    placed
        .iter()
        .map(|p| (p.input, p.others.clone(), p.output))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet() -> Model {
        crate::fixture::lenet(7).expect("the fixture builds")
    }

    #[test]
    fn a_plain_chain_ping_pongs_between_two_slots() {
        let ops = [
            (0, vec![], 1),
            (1, vec![], 2),
            (2, vec![], 3),
            (3, vec![], 4),
        ];
        let s = assign_slots(&ops, 5, &[4]);
        assert_eq!(s.count, 2);
        assert_eq!(s.of, [0, 1, 0, 1, 0]);
    }

    #[test]
    fn a_residual_input_stays_live_until_its_add() {
        // 1 = f(0); 2 = g(1); 3 = add(2, 0): value 0 must not be overwritten before op 2.
        let ops = [(0, vec![], 1), (1, vec![], 2), (2, vec![0], 3)];
        let s = assign_slots(&ops, 4, &[3]);
        assert_eq!(s.count, 3);
        assert_ne!(s.of[2], s.of[0]);
        assert_ne!(s.of[1], s.of[0]);
    }

    #[test]
    fn every_piece_of_a_concat_stays_live_until_it_runs() {
        // 1 = f(0); 2 = g(1); 3 = concat(2, 1, 0): neither 0 nor 1 may be overwritten by 2.
        let ops = [(0, vec![], 1), (1, vec![], 2), (2, vec![1, 0], 3)];
        let s = assign_slots(&ops, 4, &[3]);
        for v in [0, 1] {
            assert_ne!(s.of[2], s.of[v], "value 2 overwrites piece {v}");
            assert_ne!(s.of[3], s.of[v], "the concat overwrites piece {v}");
        }
    }

    #[test]
    fn a_step_with_from_reads_the_named_value() {
        let text = r#"{"format": 1, "name": "dag", "input": [4], "classes": 4, "init": {"seed": 1},
            "blocks": [{"name": "b0", "ops": [
                {"op": "relu", "save_as": "r"},
                {"op": "tanh"},
                {"op": "sigmoid", "from": "input"},
                {"op": "add", "with": "r"}
            ]}]}"#;
        let manifest = serde_json::from_str(text).expect("parses");
        let m = Model::from_parts(manifest, text.as_bytes(), None).expect("loads");
        let s = schedule(&m, 0..1, &[]);
        let io: Vec<(usize, Vec<usize>)> =
            s.ops.iter().map(|o| (o.input, o.others.clone())).collect();
        // relu(0) = 1, tanh(1) = 2, sigmoid(0) = 3, add(3, 1) = 4.
        assert_eq!(io, [(0, vec![]), (1, vec![]), (0, vec![]), (3, vec![1])]);
        assert_eq!(s.output, 4);
    }

    #[test]
    fn kept_values_are_never_recycled() {
        // Value 1 is an exit's logits read by nothing later; it must keep its slot.
        let ops = [
            (0, vec![], 1),
            (0, vec![], 2),
            (2, vec![], 3),
            (3, vec![], 4),
        ];
        let s = assign_slots(&ops, 5, &[1, 4]);
        for v in [0, 2, 3, 4] {
            assert_ne!(s.of[v], s.of[1], "value {v} reuses the exit's slot");
        }
    }

    #[test]
    fn the_schedule_numbers_every_step_and_the_exit_of_the_fixture() {
        let m = lenet();
        let exits: Vec<usize> = (0..m.exits.len()).collect();
        let s = schedule(&m, 0..m.blocks.len(), &exits);
        let steps: usize = m.blocks.iter().map(|b| b.steps.len()).sum::<usize>()
            + m.exits.iter().map(|e| e.steps.len()).sum::<usize>();
        let flattens = m
            .blocks
            .iter()
            .flat_map(|b| &b.steps)
            .chain(m.exits.iter().flat_map(|e| &e.steps))
            .filter(|s| matches!(s.op, Op::Flatten))
            .count();
        assert_eq!(s.ops.len(), steps - flattens);
        assert_eq!(s.values, s.ops.len() + 1);
        assert_eq!(s.exit_outputs.len(), m.exits.len());
        assert_eq!(s.output, s.ops.last().map_or(0, |o| o.output));
    }

    #[test]
    fn large_batches_read_fan_in_inputs_feature_major() {
        let m = lenet();
        let s = schedule(&m, 0..m.blocks.len(), &[]);
        let (small, _) = place(&s, 1, &|_| false);
        assert!(small.iter().all(|p| matches!(p.work, Work::Step(_))));
        let (large, values) = place(&s, kernels::FEATURE_MAJOR_MIN_BATCH, &|_| false);
        assert!(large.iter().any(|p| matches!(p.work, Work::FanInFm { .. })));
        let slots = assign_slots(&edges(&large), values, &kept_values(&s));
        assert!(slots.count >= 2 && slots.count <= values);
    }
}
