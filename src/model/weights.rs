//! Where a model's tensors come from: a `weights.safetensors` file, or a seeded
//! initialiser for architecture-only models.

use super::ModelError;
use crate::sparsity::FanInPattern;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;

/// The role of a requested tensor, which decides the seeded initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Conv/dense/fan-in weights: He-normal with this fan-in.
    Weight {
        /// Inputs per output, for the He scale.
        fan_in: usize,
    },
    /// Biases and batchnorm shifts and means: zeros.
    Zero,
    /// Batchnorm scale and variance: ones.
    One,
}

/// A source of named tensors.
pub enum WeightSource<'a> {
    /// Tensors read from a safetensors file.
    File(SafeTensors<'a>),
    /// Tensors drawn from a seed (untrained).
    Seeded(u64),
}

fn key_seed(seed: u64, key: &str) -> u64 {
    // FNV-1a over the key: every tensor gets its own reproducible stream.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ seed
}

impl WeightSource<'_> {
    /// An `f32` tensor of exactly `shape`.
    pub fn f32(&self, key: &str, shape: &[usize], role: Role) -> Result<Vec<f32>, ModelError> {
        let n = super::checked_elems(shape)
            .filter(|&n| n <= super::MAX_TENSOR_ELEMS)
            .ok_or_else(|| ModelError::Weights {
                key: key.into(),
                reason: format!(
                    "shape {shape:?} has more than {} elements (or overflows); reduce the sizes in model.json",
                    super::MAX_TENSOR_ELEMS
                ),
            })?;
        match self {
            WeightSource::Seeded(seed) => Ok(match role {
                Role::Zero => vec![0.0; n],
                Role::One => vec![1.0; n],
                Role::Weight { fan_in } => {
                    let std = (2.0 / fan_in.max(1) as f32).sqrt();
                    let normal = Normal::new(0.0f32, std).map_err(|e| ModelError::Weights {
                        key: key.into(),
                        reason: e.to_string(),
                    })?;
                    let mut rng = ChaCha8Rng::seed_from_u64(key_seed(*seed, key));
                    (0..n).map(|_| normal.sample(&mut rng)).collect()
                }
            }),
            WeightSource::File(st) => {
                let view = self.view(st, key, shape)?;
                if view.dtype() != Dtype::F32 {
                    return Err(ModelError::Weights {
                        key: key.into(),
                        reason: format!("dtype is {:?}, expected F32", view.dtype()),
                    });
                }
                Ok(bytemuck::pod_collect_to_vec::<u8, f32>(view.data()))
            }
        }
    }

    /// A fan-in index table `[outputs, k]` (u32, u16, i32 or i64 on disk).
    pub fn indices(
        &self,
        key: &str,
        inputs: usize,
        outputs: usize,
        k: usize,
        group: usize,
    ) -> Result<Vec<u32>, ModelError> {
        match self {
            WeightSource::Seeded(seed) => {
                let out_degree = outputs * k / inputs.max(1);
                if inputs == 0 || !(outputs * k).is_multiple_of(inputs) {
                    return Err(ModelError::Weights {
                        key: key.into(),
                        reason: format!(
                            "a seeded fan-in pattern needs outputs·k ({outputs}·{k}) divisible by inputs ({inputs}) so every input has the same out-degree"
                        ),
                    });
                }
                let p =
                    FanInPattern::grouped(inputs, outputs, out_degree, group, key_seed(*seed, key))
                        .map_err(|e| ModelError::Weights {
                            key: key.into(),
                            reason: e.to_string(),
                        })?;
                Ok(p.indices)
            }
            WeightSource::File(st) => {
                let view = self.view(st, key, &[outputs, k])?;
                let data = view.data();
                let to_u32 = |v: i64| -> Result<u32, ModelError> {
                    u32::try_from(v).map_err(|_| ModelError::Weights {
                        key: key.into(),
                        reason: format!("index {v} is negative or too large"),
                    })
                };
                match view.dtype() {
                    Dtype::U32 => Ok(bytemuck::pod_collect_to_vec::<u8, u32>(data)),
                    Dtype::U16 => Ok(bytemuck::pod_collect_to_vec::<u8, u16>(data)
                        .into_iter()
                        .map(u32::from)
                        .collect()),
                    Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(data)
                        .into_iter()
                        .map(|v| to_u32(v as i64))
                        .collect(),
                    Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(data)
                        .into_iter()
                        .map(to_u32)
                        .collect(),
                    other => Err(ModelError::Weights {
                        key: key.into(),
                        reason: format!("dtype is {other:?}, expected U32, U16, I32 or I64"),
                    }),
                }
            }
        }
    }

    fn view<'s>(
        &self,
        st: &'s SafeTensors<'s>,
        key: &str,
        shape: &[usize],
    ) -> Result<safetensors::tensor::TensorView<'s>, ModelError> {
        let view = st.tensor(key).map_err(|_| ModelError::Weights {
            key: key.into(),
            reason: "tensor is missing from weights.safetensors".into(),
        })?;
        if view.shape() != shape {
            return Err(ModelError::Weights {
                key: key.into(),
                reason: format!("shape is {:?}, expected {:?}", view.shape(), shape),
            });
        }
        Ok(view)
    }
}

/// A tensor to write into a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `f32` values with a shape.
    F32(Vec<usize>, Vec<f32>),
    /// Fan-in indices with a shape: written as `u16` when every index fits (inputs up to
    /// 65,536, which halves their bytes on disk), else `u32`.
    Indices(Vec<usize>, Vec<u32>),
}

/// Serialises named tensors to safetensors bytes (sorted by name, so output is reproducible).
pub fn serialize(tensors: &BTreeMap<String, TensorData>) -> Result<Vec<u8>, ModelError> {
    let narrow: BTreeMap<&String, Vec<u16>> = tensors
        .iter()
        .filter_map(|(k, t)| match t {
            TensorData::Indices(_, d) if d.iter().all(|&i| i <= u16::MAX as u32) => {
                Some((k, d.iter().map(|&i| i as u16).collect()))
            }
            _ => None,
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            let (dtype, shape, bytes): (Dtype, &Vec<usize>, &[u8]) = match (t, narrow.get(k)) {
                (TensorData::F32(s, d), _) => (Dtype::F32, s, bytemuck::cast_slice(d)),
                (TensorData::Indices(s, _), Some(d)) => (Dtype::U16, s, bytemuck::cast_slice(d)),
                (TensorData::Indices(s, d), None) => (Dtype::U32, s, bytemuck::cast_slice(d)),
            };
            safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| ModelError::Weights {
                    key: k.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None).map_err(|e| ModelError::Weights {
        key: "*".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dtype_of(bytes: &[u8], key: &str) -> Dtype {
        let st = SafeTensors::deserialize(bytes).expect("valid safetensors");
        st.tensor(key).expect("tensor exists").dtype()
    }

    #[test]
    fn indices_are_written_as_u16_when_they_fit_and_read_back_unchanged() {
        for (values, want) in [
            (vec![0u32, 7, 65_535, 3], Dtype::U16),
            (vec![0u32, 65_536, 2, 1], Dtype::U32),
        ] {
            let mut t = BTreeMap::new();
            t.insert(
                "fc.indices".to_string(),
                TensorData::Indices(vec![2, 2], values.clone()),
            );
            let bytes = serialize(&t).expect("serializes");
            assert_eq!(dtype_of(&bytes, "fc.indices"), want);
            let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
            let back = WeightSource::File(st)
                .indices("fc.indices", 70_000, 2, 2, 1)
                .expect("reads back");
            assert_eq!(back, values);
        }
    }
}
