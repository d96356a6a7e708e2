//! Models: the `model.json` + `weights.safetensors` format, loading and validation, batchnorm
//! folding and activation fusion, the content hash, per-block complexity statistics and the
//! natural bottlenecks where a model can be cut.

mod compile;
pub mod manifest;
mod op;
pub mod weights;

pub use manifest::{BinaryOp, Manifest, OpKind, OpSpec};
pub use op::{
    broadcast_shape, broadcast_strides, Activation, Binary, BinaryOperand, Concat, Conv2d, Dense,
    FanIn, Lrn, Op, Operand, Pool, PoolKind, Step, MAX_RANK,
};

use compile::compile_ops;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;
use weights::WeightSource;

/// Most elements one tensor (a weight or a per-sample activation) may declare: 2^28, 1 GiB
/// as `f32`. Checked before anything is allocated, so a mutated or hostile `model.json` gets
/// an error instead of an allocation abort; real models here stay far below it.
pub const MAX_TENSOR_ELEMS: usize = 1 << 28;

/// Most parameters a whole model may declare: 2^29, 2 GiB as `f32`. Checked before drawing
/// or reading any weight.
pub const MAX_MODEL_PARAMS: usize = 1 << 29;

/// The product of `shape`, or `None` when it overflows `usize`.
pub(crate) fn checked_elems(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Errors loading or validating a model. Messages name the block and op at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A model file could not be read.
    #[error("cannot read {path}: {source}; a model is a directory holding model.json (and weights.safetensors unless model.json has an \"init\" seed) or an .onnx file")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `model.json` is not valid JSON for the schema.
    #[error("{path}: malformed model.json: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What serde reported.
        reason: String,
    },
    /// An op is invalid (unknown, bad parameters, shapes that do not chain…).
    #[error("block '{block}', op {index} ('{op}'): {reason}")]
    Op {
        /// Block (or exit) name.
        block: String,
        /// Op index within the block.
        index: usize,
        /// Op name.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// A weight tensor is missing or has the wrong shape or dtype.
    #[error("tensor '{key}': {reason}")]
    Weights {
        /// Tensor key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An `.onnx` file that cannot be imported.
    #[error("{path}: {source}")]
    Onnx {
        /// The file.
        path: PathBuf,
        /// What the importer reported.
        source: Box<crate::onnx::OnnxError>,
    },
    /// A model-level inconsistency.
    #[error("model '{model}': {reason}")]
    Invalid {
        /// Model name.
        model: String,
        /// What is wrong.
        reason: String,
    },
}

/// Complexity of one block (per sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockStats {
    /// Trainable parameters as stored (batchnorm counted before folding: 4 per channel).
    pub params: usize,
    /// Weights that are structurally present (dense: all; fan-in: outputs·k), biases excluded.
    pub nonzero_weights: usize,
    /// Multiply-accumulates of conv, dense and fan-in ops.
    pub macs: usize,
}

/// A block: a chain of steps between two cut points.
#[derive(Debug, Clone)]
pub struct Block {
    /// Block name.
    pub name: String,
    /// Compiled steps.
    pub steps: Vec<Step>,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Complexity.
    pub stats: BlockStats,
}

impl Block {
    /// Elements of the block output per sample.
    pub fn output_elems(&self) -> usize {
        self.output_shape.iter().product()
    }
}

/// An early-exit head evaluated on the output of block `after_block`.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Head name.
    pub name: String,
    /// Index of the block whose output feeds the head.
    pub after_block: usize,
    /// Loss weight for multi-exit training.
    pub loss_weight: f32,
    /// Steps of the head (ending in `[classes]` logits).
    pub steps: Vec<Step>,
    /// Complexity.
    pub stats: BlockStats,
}

/// A loaded, validated model.
#[derive(Debug, Clone)]
pub struct Model {
    /// The manifest as read.
    pub manifest: Manifest,
    /// Blocks in order.
    pub blocks: Vec<Block>,
    /// Exit heads.
    pub exits: Vec<Exit>,
    /// SHA-256 (hex) over `model.json` and `weights.safetensors`: identifies the model on both
    /// sides of a split.
    pub hash: String,
    /// True when weights were drawn from the manifest's seed (untrained).
    pub seeded: bool,
}

impl Model {
    /// Loads `dir/model.json` and `dir/weights.safetensors` (or seeded weights), or imports
    /// an ONNX file when `dir` is a file ([`crate::onnx`]): every command takes either.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return crate::onnx::load(dir);
        }
        let manifest_path = dir.join("model.json");
        let json = std::fs::read(&manifest_path).map_err(|source| ModelError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let weights_path = dir.join("weights.safetensors");
        let weights = match std::fs::read(&weights_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ModelError::Io {
                    path: weights_path,
                    source,
                })
            }
        };
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| ModelError::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
        Self::from_parts(manifest, &json, weights.as_deref()).map_err(|e| match e {
            ModelError::Invalid { model, reason } if reason.starts_with("no weights") => {
                ModelError::Invalid {
                    model,
                    reason: format!("{reason} (looked for {})", weights_path.display()),
                }
            }
            other => other,
        })
    }

    /// Builds a model from a parsed manifest, its raw JSON bytes (for the hash) and the
    /// safetensors bytes, if any.
    pub fn from_parts(
        manifest: Manifest,
        json: &[u8],
        weights: Option<&[u8]>,
    ) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::Invalid {
            model: manifest.name.clone(),
            reason,
        };
        if manifest.format != 1 {
            return Err(invalid(format!(
                "format {} is not supported; this build reads format 1",
                manifest.format
            )));
        }
        if manifest.blocks.is_empty() {
            return Err(invalid("the model has no blocks".into()));
        }
        if manifest.input.is_empty() || manifest.input.contains(&0) {
            return Err(invalid(format!(
                "input shape {:?} must be non-empty with positive sizes",
                manifest.input
            )));
        }
        if checked_elems(&manifest.input).is_none_or(|n| n > MAX_TENSOR_ELEMS) {
            return Err(invalid(format!(
                "input shape {:?} has more than {MAX_TENSOR_ELEMS} elements; declare a smaller input",
                manifest.input
            )));
        }
        let source = match (weights, &manifest.init) {
            (Some(bytes), _) => {
                WeightSource::File(safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
                    ModelError::Weights {
                        key: "*".into(),
                        reason: format!("weights.safetensors is not a valid safetensors file: {e}"),
                    }
                })?)
            }
            (None, Some(init)) => WeightSource::Seeded(init.seed),
            (None, None) => {
                return Err(invalid(
                    "no weights.safetensors and no \"init\" seed in model.json".into(),
                ))
            }
        };
        let mut hasher = Sha256::new();
        hasher.update(json);
        if let Some(w) = weights {
            hasher.update(w);
        }
        let hash = format!("{:x}", hasher.finalize());

        let mut declared = 0usize;
        let mut names = std::collections::HashSet::new();
        let mut blocks = Vec::with_capacity(manifest.blocks.len());
        let mut shape = manifest.input.clone();
        for spec in &manifest.blocks {
            if !names.insert(spec.name.clone()) {
                return Err(invalid(format!("duplicate block name '{}'", spec.name)));
            }
            let (steps, stats) =
                compile_ops(&spec.name, &spec.ops, &shape, &source, &mut declared)?;
            let output_shape = steps
                .last()
                .map(|s| s.output_shape.clone())
                .unwrap_or_else(|| shape.clone());
            blocks.push(Block {
                name: spec.name.clone(),
                steps,
                input_shape: shape.clone(),
                output_shape: output_shape.clone(),
                stats,
            });
            shape = output_shape;
        }
        if shape != [manifest.classes] {
            return Err(invalid(format!(
                "the last block outputs {shape:?}, but the model declares {} classes (expected [{}])",
                manifest.classes, manifest.classes
            )));
        }
        let mut exits = Vec::new();
        for (j, spec) in manifest.exits.iter().enumerate() {
            let after = blocks
                .iter()
                .position(|b| b.name == spec.after_block)
                .ok_or_else(|| {
                    invalid(format!(
                        "exit {j} is attached after block '{}', which does not exist",
                        spec.after_block
                    ))
                })?;
            let name = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("exit_{}", spec.after_block));
            let (steps, stats) = compile_ops(
                &name,
                &spec.ops,
                &blocks[after].output_shape,
                &source,
                &mut declared,
            )?;
            let out = steps
                .last()
                .map(|s| s.output_shape.clone())
                .unwrap_or_default();
            if out != [manifest.classes] {
                return Err(invalid(format!(
                    "exit '{name}' outputs {out:?}, expected [{}] class logits",
                    manifest.classes
                )));
            }
            exits.push(Exit {
                name,
                after_block: after,
                loss_weight: spec.loss_weight.unwrap_or(1.0),
                steps,
                stats,
            });
        }
        exits.sort_by_key(|e| e.after_block);
        Ok(Self {
            seeded: matches!(source, WeightSource::Seeded(_)),
            manifest,
            blocks,
            exits,
            hash,
        })
    }

    /// Model name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.manifest.input
    }

    /// Elements of one input sample.
    pub fn input_elems(&self) -> usize {
        self.manifest.input.iter().product()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.manifest.classes
    }

    /// Per-sample input shape of block `i` (`i == blocks.len()` gives the model output).
    pub fn shape_at(&self, i: usize) -> &[usize] {
        if i < self.blocks.len() {
            &self.blocks[i].input_shape
        } else {
            &self.blocks[self.blocks.len() - 1].output_shape
        }
    }

    /// Totals over blocks and exits.
    pub fn totals(&self) -> BlockStats {
        self.blocks
            .iter()
            .map(|b| b.stats)
            .chain(self.exits.iter().map(|e| e.stats))
            .fold(BlockStats::default(), |a, s| BlockStats {
                params: a.params + s.params,
                nonzero_weights: a.nonzero_weights + s.nonzero_weights,
                macs: a.macs + s.macs,
            })
    }

    /// Natural bottleneck (Bakhtiarnia et al.): the block's output has fewer elements than the
    /// model input. The last block is the model output, not a split, so it is never one.
    pub fn is_natural_bottleneck(&self, block: usize) -> bool {
        block + 1 < self.blocks.len() && self.blocks[block].output_elems() < self.input_elems()
    }

    /// Cut candidates: natural bottlenecks whose output is strictly smaller than every earlier
    /// candidate's. Returned as block indices; cutting after block `i` runs `0..=i` on the device.
    pub fn cut_candidates(&self) -> Vec<usize> {
        let mut best = usize::MAX;
        let mut out = Vec::new();
        for i in 0..self.blocks.len() {
            if self.is_natural_bottleneck(i) && self.blocks[i].output_elems() < best {
                best = self.blocks[i].output_elems();
                out.push(i);
            }
        }
        out
    }

    /// Index of the block named `name`.
    pub fn block_index(&self, name: &str) -> Option<usize> {
        self.blocks.iter().position(|b| b.name == name)
    }
}

impl Model {
    /// The model's tensors under their manifest keys, for saving. Only models without
    /// batchnorm can be exported exactly (folded statistics cannot be split back out).
    pub fn export_tensors(
        &self,
    ) -> Result<std::collections::BTreeMap<String, weights::TensorData>, ModelError> {
        use weights::TensorData;
        let mut out = std::collections::BTreeMap::new();
        let has_bn = self
            .manifest
            .blocks
            .iter()
            .flat_map(|b| b.ops.iter())
            .chain(self.manifest.exits.iter().flat_map(|e| e.ops.iter()))
            .any(|v| v.get("op").and_then(|o| o.as_str()) == Some("batchnorm"));
        if has_bn {
            return Err(ModelError::Invalid {
                model: self.name().into(),
                reason: "models with batchnorm cannot be exported after folding".into(),
            });
        }
        let steps = self
            .blocks
            .iter()
            .flat_map(|b| b.steps.iter())
            .chain(self.exits.iter().flat_map(|e| e.steps.iter()));
        for step in steps {
            let key = |p: &str| format!("{}.{p}", step.label);
            match &step.op {
                Op::Conv2d(c) => {
                    out.insert(
                        key("weight"),
                        TensorData::F32(
                            vec![
                                c.out_channels,
                                c.in_channels / c.groups,
                                c.kernel_h,
                                c.kernel_w,
                            ],
                            c.weight.clone(),
                        ),
                    );
                    out.insert(
                        key("bias"),
                        TensorData::F32(vec![c.out_channels], c.bias.clone()),
                    );
                }
                Op::Dense(d) => {
                    out.insert(
                        key("weight"),
                        TensorData::F32(vec![d.outputs, d.inputs], d.weight.clone()),
                    );
                    out.insert(
                        key("bias"),
                        TensorData::F32(vec![d.outputs], d.bias.clone()),
                    );
                }
                Op::Binary(Binary {
                    operand: BinaryOperand::Const(value),
                    operand_shape,
                    ..
                }) => {
                    out.insert(
                        key("value"),
                        TensorData::F32(operand_shape.clone(), value.clone()),
                    );
                }
                Op::FanIn(f) => {
                    out.insert(
                        key("weights"),
                        TensorData::F32(vec![f.outputs, f.k], f.weights.clone()),
                    );
                    out.insert(
                        key("indices"),
                        TensorData::Indices(vec![f.outputs, f.k], f.indices.clone()),
                    );
                    out.insert(
                        key("bias"),
                        TensorData::F32(vec![f.outputs], f.bias.clone()),
                    );
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Writes `model.json` (every parametrised op with `"bias": true`, no `init`) and
    /// `weights.safetensors` to `dir`. Files are written to a temporary sibling folder and
    /// renamed into place, so a failure never leaves a partial model behind.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        let tensors = self.export_tensors()?;
        let mut manifest = self.manifest.clone();
        manifest.init = None;
        let with_bias = |ops: &mut Vec<serde_json::Value>| {
            for op in ops.iter_mut() {
                if matches!(
                    op.get("op").and_then(|o| o.as_str()),
                    Some("conv2d" | "dense" | "fanin")
                ) {
                    op["bias"] = serde_json::Value::Bool(true);
                }
            }
        };
        manifest
            .blocks
            .iter_mut()
            .for_each(|b| with_bias(&mut b.ops));
        manifest
            .exits
            .iter_mut()
            .for_each(|e| with_bias(&mut e.ops));
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ModelError::Invalid {
            model: self.name().into(),
            reason: e.to_string(),
        })?;
        let bytes = weights::serialize(&tensors)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let mut json = json;
        json.push(b'\n');
        std::fs::write(tmp.join("model.json"), &json).map_err(io(&tmp))?;
        std::fs::write(tmp.join("weights.safetensors"), &bytes).map_err(io(&tmp))?;
        if dir.exists() {
            // Keep files we do not own (README, spec); replace ours.
            for f in ["model.json", "weights.safetensors"] {
                std::fs::rename(tmp.join(f), dir.join(f)).map_err(io(dir))?;
            }
            let _ = std::fs::remove_dir_all(&tmp);
        } else {
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
        }
        Ok(())
    }
}
