//! Predefined (fixed) sparsity: fixed-fan-in connection patterns.
//!
//! A junction `inputs → outputs` with out-degree `d_out` connects every input to exactly
//! `d_out` outputs and every output to exactly `k = inputs·d_out / outputs` distinct inputs
//! (Dey, Chugg & Beerel). The pattern is drawn once from a seed and never changes, so it is
//! stored with the model and executed in ELL layout (`indices [outputs, k]`).
//!
//! A *grouped* pattern draws one index row per group of `group` consecutive outputs and shares
//! it within the group; degrees stay fixed (`group` divides `outputs` and `d_out`). Kernels
//! then load each gathered input once for the whole group, which is what makes sparse layers
//! faster than dense ones in measured time on SIMD hardware (see `docs/sparsity.md`).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

/// Errors building or checking a fan-in pattern.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SparsityError {
    /// `inputs · out_degree` is not a multiple of `outputs`, so no pattern with fixed degrees exists.
    #[error("out-degree {out_degree} is impossible for {inputs} → {outputs}: inputs·out_degree must be a multiple of outputs; valid out-degrees: {valid:?}")]
    InvalidDegree {
        /// Inputs of the junction.
        inputs: usize,
        /// Outputs of the junction.
        outputs: usize,
        /// The requested out-degree.
        out_degree: usize,
        /// The out-degrees that would work.
        valid: Vec<usize>,
    },
    /// `group` does not divide both the outputs and the out-degree.
    #[error("group of {group} outputs is impossible with {outputs} outputs and out-degree {out_degree}: the group must divide both; valid groups: {valid:?}")]
    InvalidGroup {
        /// Outputs of the junction.
        outputs: usize,
        /// The out-degree.
        out_degree: usize,
        /// The requested group size.
        group: usize,
        /// The group sizes that would work.
        valid: Vec<usize>,
    },
    /// A row references an input outside `0..inputs`.
    #[error("output {row} reads input {index}, but the layer has only {inputs} inputs")]
    IndexOutOfRange {
        /// The output row.
        row: usize,
        /// The offending index.
        index: u32,
        /// Number of inputs.
        inputs: usize,
    },
    /// A row references the same input twice.
    #[error(
        "output {row} reads input {index} more than once; every output must read k distinct inputs"
    )]
    DuplicateIndex {
        /// The output row.
        row: usize,
        /// The repeated index.
        index: u32,
    },
    /// The index table does not have `outputs · k` entries, or k is out of range.
    #[error("fan-in table has {actual} indices, expected outputs·k = {outputs}·{k}; k must be in 1..={inputs}")]
    BadTable {
        /// Outputs of the layer.
        outputs: usize,
        /// Fan-in.
        k: usize,
        /// Inputs of the layer.
        inputs: usize,
        /// Indices supplied.
        actual: usize,
    },
}

/// A fixed-fan-in connection pattern: output `o` reads inputs `indices[o*k .. (o+1)*k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanInPattern {
    /// Number of inputs.
    pub inputs: usize,
    /// Number of outputs.
    pub outputs: usize,
    /// Inputs per output (fan-in).
    pub k: usize,
    /// Row-major `[outputs, k]` input indices, each row sorted and distinct.
    pub indices: Vec<u32>,
}

/// The group sizes for which a grouped pattern with `outputs` and `out_degree` exists.
pub fn valid_groups(outputs: usize, out_degree: usize) -> Vec<usize> {
    (1..=out_degree.min(outputs))
        .filter(|g| outputs.is_multiple_of(*g) && out_degree.is_multiple_of(*g))
        .collect()
}

/// The out-degrees for which `inputs → outputs` has a fixed-degree pattern.
pub fn valid_out_degrees(inputs: usize, outputs: usize) -> Vec<usize> {
    (1..=outputs)
        .filter(|d| (inputs * d).is_multiple_of(outputs))
        .collect()
}

impl FanInPattern {
    /// Draws a pattern where every input feeds `out_degree` outputs and every output reads
    /// `inputs·out_degree/outputs` distinct inputs. Deterministic for a given seed.
    pub fn random(
        inputs: usize,
        outputs: usize,
        out_degree: usize,
        seed: u64,
    ) -> Result<Self, SparsityError> {
        if inputs == 0
            || outputs == 0
            || out_degree == 0
            || out_degree > outputs
            || !(inputs * out_degree).is_multiple_of(outputs)
        {
            return Err(SparsityError::InvalidDegree {
                inputs,
                outputs,
                out_degree,
                valid: valid_out_degrees(inputs, outputs),
            });
        }
        let k = inputs * out_degree / outputs;
        if out_degree == outputs {
            // Every output reads every input: the only pattern, no draw needed.
            return Ok(Self {
                inputs,
                outputs,
                k,
                indices: (0..outputs).flat_map(|_| 0..inputs as u32).collect(),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Configuration model: every input appears `out_degree` times; deal k per output,
        // then repair duplicate entries in a row by swapping with another row.
        let mut slots: Vec<u32> = (0..inputs as u32)
            .flat_map(|i| std::iter::repeat_n(i, out_degree))
            .collect();
        slots.shuffle(&mut rng);
        for row in 0..outputs {
            let mut pos = 0;
            while pos < k {
                let at = row * k + pos;
                let value = slots[at];
                let row_slice = &slots[row * k..row * k + k];
                let dup = row_slice.iter().filter(|&&v| v == value).count() > 1;
                if !dup {
                    pos += 1;
                    continue;
                }
                // Find a swap partner in another row that keeps both rows duplicate-free.
                let mut swapped = false;
                for _ in 0..64 * slots.len().max(1) {
                    let other = rng.random_range(0..slots.len());
                    let other_row = other / k;
                    if other_row == row {
                        continue;
                    }
                    let candidate = slots[other];
                    let mine = &slots[row * k..row * k + k];
                    let theirs = &slots[other_row * k..other_row * k + k];
                    if !mine.contains(&candidate) && !theirs.contains(&value) {
                        slots.swap(at, other);
                        swapped = true;
                        break;
                    }
                }
                if !swapped {
                    // Only possible when k == inputs with repeated draws; fall back to a full row.
                    return Err(SparsityError::InvalidDegree {
                        inputs,
                        outputs,
                        out_degree,
                        valid: valid_out_degrees(inputs, outputs),
                    });
                }
                pos += 1;
            }
        }
        for row in slots.chunks_mut(k) {
            row.sort_unstable();
        }
        Ok(Self {
            inputs,
            outputs,
            k,
            indices: slots,
        })
    }

    /// Draws a grouped pattern: a random fixed-degree pattern for `outputs / group` outputs
    /// with out-degree `out_degree / group`, each row repeated for `group` consecutive outputs.
    /// `group = 1` is [`FanInPattern::random`].
    pub fn grouped(
        inputs: usize,
        outputs: usize,
        out_degree: usize,
        group: usize,
        seed: u64,
    ) -> Result<Self, SparsityError> {
        if group == 0
            || !outputs.is_multiple_of(group)
            || !out_degree.is_multiple_of(group)
            || out_degree == 0
        {
            return Err(SparsityError::InvalidGroup {
                outputs,
                out_degree,
                group,
                valid: valid_groups(outputs, out_degree),
            });
        }
        let p = Self::random(inputs, outputs / group, out_degree / group, seed)?;
        let indices = p
            .indices
            .chunks(p.k)
            .flat_map(|row| std::iter::repeat_n(row, group).flatten().copied())
            .collect();
        Ok(Self {
            inputs,
            outputs,
            k: p.k,
            indices,
        })
    }

    /// Picks the valid out-degree whose density `out_degree/outputs` is nearest `density`
    /// and draws a pattern with it.
    pub fn with_density(
        inputs: usize,
        outputs: usize,
        density: f64,
        seed: u64,
    ) -> Result<Self, SparsityError> {
        let valid = valid_out_degrees(inputs, outputs);
        let best = valid
            .iter()
            .copied()
            .min_by(|a, b| {
                let da = (*a as f64 / outputs as f64 - density).abs();
                let db = (*b as f64 / outputs as f64 - density).abs();
                da.total_cmp(&db)
            })
            .unwrap_or(outputs);
        Self::random(inputs, outputs, best, seed)
    }

    /// Wraps an index table after checking its size, range and row distinctness.
    pub fn from_indices(
        inputs: usize,
        outputs: usize,
        k: usize,
        indices: Vec<u32>,
    ) -> Result<Self, SparsityError> {
        if k == 0 || k > inputs || indices.len() != outputs * k {
            return Err(SparsityError::BadTable {
                outputs,
                k,
                inputs,
                actual: indices.len(),
            });
        }
        let mut seen = vec![u32::MAX; inputs];
        for (row, chunk) in indices.chunks(k).enumerate() {
            for &index in chunk {
                if index as usize >= inputs {
                    return Err(SparsityError::IndexOutOfRange { row, index, inputs });
                }
                if seen[index as usize] == row as u32 {
                    return Err(SparsityError::DuplicateIndex { row, index });
                }
                seen[index as usize] = row as u32;
            }
        }
        Ok(Self {
            inputs,
            outputs,
            k,
            indices,
        })
    }

    /// Fraction of the dense connections present.
    pub fn density(&self) -> f64 {
        self.k as f64 / self.inputs as f64
    }

    /// How many outputs each input feeds (`None` when the out-degree is not uniform).
    pub fn out_degree(&self) -> Option<usize> {
        let mut counts = vec![0usize; self.inputs];
        for &i in &self.indices {
            counts[i as usize] += 1;
        }
        let first = counts[0];
        counts.iter().all(|&c| c == first).then_some(first)
    }

    /// The transposed pattern (inputs ↔ outputs), itself fixed-fan-in when the out-degree is
    /// uniform; `positions[t]` gives where entry `t` of the transpose sits in `self.indices`,
    /// so weights can be gathered for the backward pass.
    pub fn transpose(&self) -> Option<(FanInPattern, Vec<u32>)> {
        let degree = self.out_degree()?;
        let mut fill = vec![0usize; self.inputs];
        let mut indices = vec![0u32; self.inputs * degree];
        let mut positions = vec![0u32; self.inputs * degree];
        for (pos, &i) in self.indices.iter().enumerate() {
            let i = i as usize;
            let slot = i * degree + fill[i];
            indices[slot] = (pos / self.k) as u32;
            positions[slot] = pos as u32;
            fill[i] += 1;
        }
        Some((
            FanInPattern {
                inputs: self.outputs,
                outputs: self.inputs,
                k: degree,
                indices,
            },
            positions,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_pattern_has_fixed_in_and_out_degree() {
        for &(i, o, d) in &[
            (800, 100, 20),
            (100, 100, 25),
            (100, 10, 10),
            (40, 40, 9),
            (7, 7, 7),
            (100, 10, 10),
            (400, 10, 10),
        ] {
            let p = FanInPattern::random(i, o, d, 3).unwrap();
            assert_eq!(p.k, i * d / o);
            assert_eq!(p.out_degree(), Some(d));
            FanInPattern::from_indices(i, o, p.k, p.indices.clone()).unwrap();
        }
    }

    #[test]
    fn same_seed_gives_same_pattern() {
        let a = FanInPattern::random(64, 32, 4, 9).unwrap();
        let b = FanInPattern::random(64, 32, 4, 9).unwrap();
        let c = FanInPattern::random(64, 32, 4, 10).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn impossible_degree_lists_the_valid_ones() {
        let err = FanInPattern::random(10, 4, 1, 0).unwrap_err();
        assert!(
            err.to_string().contains("valid out-degrees: [2, 4]"),
            "{err}"
        );
    }

    #[test]
    fn density_picks_the_nearest_valid_degree() {
        let p = FanInPattern::with_density(800, 100, 0.21, 1).unwrap();
        assert_eq!(p.out_degree(), Some(21));
    }

    #[test]
    fn transpose_is_fixed_fan_in_and_round_trips_weights() {
        let p = FanInPattern::random(12, 8, 2, 5).unwrap();
        let (t, positions) = p.transpose().unwrap();
        assert_eq!((t.inputs, t.outputs, t.k), (8, 12, 2));
        for (slot, &pos) in positions.iter().enumerate() {
            let input = slot / t.k;
            assert_eq!(p.indices[pos as usize] as usize, input);
            assert_eq!(t.indices[slot] as usize, pos as usize / p.k);
        }
    }

    #[test]
    fn duplicate_and_out_of_range_indices_are_rejected() {
        assert!(matches!(
            FanInPattern::from_indices(4, 1, 2, vec![1, 1]),
            Err(SparsityError::DuplicateIndex { row: 0, index: 1 })
        ));
        assert!(matches!(
            FanInPattern::from_indices(4, 1, 2, vec![1, 4]),
            Err(SparsityError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn grouped_pattern_shares_rows_and_keeps_both_degrees() {
        let p = FanInPattern::grouped(800, 100, 20, 5, 3).unwrap();
        assert_eq!((p.k, p.out_degree()), (160, Some(20)));
        for group in p.indices.chunks(5 * p.k) {
            assert!(group.chunks(p.k).all(|row| row == &group[..p.k]));
        }
        // Different groups read different inputs.
        assert_ne!(&p.indices[..p.k], &p.indices[5 * p.k..6 * p.k]);
        FanInPattern::from_indices(800, 100, p.k, p.indices.clone()).unwrap();
        assert_eq!(
            FanInPattern::grouped(64, 32, 4, 1, 9).unwrap(),
            FanInPattern::random(64, 32, 4, 9).unwrap()
        );
    }

    #[test]
    fn impossible_group_lists_the_valid_ones() {
        let err = FanInPattern::grouped(100, 100, 25, 4, 0).unwrap_err();
        assert!(
            err.to_string().contains("valid groups: [1, 5, 25]"),
            "{err}"
        );
    }
}
