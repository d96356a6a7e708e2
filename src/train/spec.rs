//! The training spec: architecture (blocks of ops, exit heads with loss weights), per-layer
//! sparsity, optimizer and schedule. A spec is JSON; it compiles to a model manifest with a
//! seeded initialisation, so training starts from an ordinary [`Model`].

use super::TrainError;
use crate::model::manifest::{BlockSpec, ExitSpec, InitSpec};
use crate::model::{Manifest, Model, OpKind, OpSpec};
use crate::sparsity::{valid_groups, valid_out_degrees, FanInPattern};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// A training spec as written in a `spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Name of the trained model.
    pub name: String,
    /// Free text for the model's manifest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Per-sample input shape (`[800]` for padded MNIST MLPs, `[1, 28, 28]` for CNNs).
    pub input: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Blocks in order; ops as in `model.json`, except that `fanin` takes `outputs` and either
    /// `out_degree` or `density` (the fan-in `k` and the pattern are derived and drawn), and
    /// optionally `group` (consecutive outputs sharing one index row).
    pub blocks: Vec<BlockSpec>,
    /// Exit heads, each with a `loss_weight` (default 1).
    #[serde(default)]
    pub exits: Vec<ExitSpec>,
    /// Loss weight of the final classifier (default 1).
    #[serde(default = "one")]
    pub final_loss_weight: f32,
    /// The optimizer.
    pub optimizer: OptimizerSpec,
    /// Learning rate.
    pub lr: f32,
    /// Factor applied to the learning rate after every epoch (1 keeps it constant).
    #[serde(default = "one")]
    pub lr_decay: f32,
    /// Samples per step.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of the weights, the fan-in patterns and the data order.
    pub seed: u64,
}

fn one() -> f32 {
    1.0
}
fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn eps() -> f32 {
    1e-8
}

/// Optimizer and its hyper-parameters.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Adam (Kingma & Ba) with bias correction.
    Adam {
        /// First-moment decay.
        #[serde(default = "beta1")]
        beta1: f32,
        /// Second-moment decay.
        #[serde(default = "beta2")]
        beta2: f32,
        /// Denominator epsilon.
        #[serde(default = "eps")]
        eps: f32,
    },
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Momentum coefficient (0 for plain SGD).
        #[serde(default)]
        momentum: f32,
    },
}

impl TrainSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let spec: TrainSpec = serde_json::from_str(&text).map_err(|e| TrainError::Spec {
            reason: format!("{}: {e}", path.display()),
        })?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks the schedule and optimizer values.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |reason: String| Err(TrainError::Spec { reason });
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return bad(format!("lr_decay must be in (0, 1], got {}", self.lr_decay));
        }
        match self.optimizer {
            OptimizerSpec::Adam { beta1, beta2, eps } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) || eps <= 0.0 {
                    return bad(format!(
                        "adam needs 0 <= beta1, beta2 < 1 and eps > 0 (got {beta1}, {beta2}, {eps})"
                    ));
                }
            }
            OptimizerSpec::Sgd { momentum } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("sgd momentum must be in [0, 1), got {momentum}"));
                }
            }
        }
        for (i, e) in self.exits.iter().enumerate() {
            if let Some(w) = e.loss_weight {
                if !(w.is_finite() && w >= 0.0) {
                    return bad(format!("exit {i}: loss_weight must be >= 0, got {w}"));
                }
            }
        }
        Ok(())
    }

    /// The manifest this spec describes: fan-in degrees resolved to `k`, every parametrised
    /// op with a bias, weights and patterns drawn from `seed`.
    pub fn manifest(&self, seed: u64) -> Result<Manifest, TrainError> {
        let mut shape = self.input.clone();
        let mut blocks = Vec::new();
        let mut block_shapes = Vec::new();
        for b in &self.blocks {
            let (ops, out) = resolve_ops(&b.name, &b.ops, &shape)?;
            blocks.push(BlockSpec {
                name: b.name.clone(),
                ops,
            });
            block_shapes.push((b.name.clone(), out.clone()));
            shape = out;
        }
        let mut exits = Vec::new();
        for (j, e) in self.exits.iter().enumerate() {
            let Some((_, at)) = block_shapes.iter().find(|(n, _)| *n == e.after_block) else {
                let names: Vec<&str> = self.blocks.iter().map(|b| b.name.as_str()).collect();
                return Err(TrainError::Spec {
                    reason: format!(
                        "exit {j} is attached after block '{}', which does not exist; blocks: {names:?}",
                        e.after_block
                    ),
                });
            };
            let name = e
                .name
                .clone()
                .unwrap_or_else(|| format!("exit_{}", e.after_block));
            let (ops, _) = resolve_ops(&name, &e.ops, at)?;
            exits.push(ExitSpec {
                after_block: e.after_block.clone(),
                name: e.name.clone(),
                loss_weight: Some(e.loss_weight.unwrap_or(1.0)),
                ops,
            });
        }
        Ok(Manifest {
            format: 1,
            name: self.name.clone(),
            description: self.description.clone(),
            input: self.input.clone(),
            classes: self.classes,
            init: Some(InitSpec { seed }),
            blocks,
            exits,
            preprocess: None,
            provenance: None,
        })
    }

    /// Builds the untrained model (seeded weights and patterns), validating every op and shape.
    pub fn build(&self, seed: u64) -> Result<Model, TrainError> {
        let manifest = self.manifest(seed)?;
        let json = serde_json::to_vec(&manifest).map_err(|e| TrainError::Spec {
            reason: e.to_string(),
        })?;
        Ok(Model::from_parts(manifest, &json, None)?)
    }
}

/// Resolves `fanin` degrees, rejects ops training does not support, and walks the shapes with
/// each op's shape rule ([`OpKind::output_shape`]).
fn resolve_ops(
    block: &str,
    ops: &[Value],
    input: &[usize],
) -> Result<(Vec<Value>, Vec<usize>), TrainError> {
    let mut shape = input.to_vec();
    let mut out = Vec::with_capacity(ops.len());
    for (index, value) in ops.iter().enumerate() {
        let op_name = value
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let err = |reason: String| TrainError::Layer {
            block: block.to_string(),
            index,
            op: op_name.clone(),
            reason,
        };
        let mut value = value.clone();
        if op_name == "fanin" {
            value = resolve_fanin(&value, &shape).map_err(&err)?;
        }
        let spec = OpSpec::parse(&value, index).map_err(&err)?;
        match &spec.kind {
            OpKind::Softmax { .. } => {
                return Err(err(
                    "softmax is part of the loss; leave it out of the spec".into()
                ))
            }
            OpKind::Conv2d {
                stride,
                padding,
                dilation,
                ..
            } if stride.hw().0 != stride.hw().1
                || dilation.hw() != (1, 1)
                || padding.sides().iter().any(|&p| p != padding.sides()[0]) =>
            {
                return Err(err(
                    "training supports one stride, the same padding on every side and no dilation".into(),
                ))
            }
            OpKind::Maxpool {
                stride,
                padding,
                ceil_mode,
                ..
            }
            | OpKind::Avgpool {
                stride,
                padding,
                ceil_mode,
                ..
            } if stride.is_some_and(|s| s.hw().0 != s.hw().1)
                || *ceil_mode
                || matches!(spec.kind, OpKind::Avgpool { count_include_pad: true, .. })
                || padding.sides().iter().any(|&p| p != padding.sides()[0]) =>
            {
                return Err(err(
                    "training supports pooling with one stride, the same padding on every side, no ceil_mode and no count_include_pad".into(),
                ))
            }
            OpKind::Conv2d { .. }
            | OpKind::Dense { .. }
            | OpKind::Fanin { .. }
            | OpKind::Maxpool { .. }
            | OpKind::Avgpool { .. }
            | OpKind::GlobalAvgpool
            | OpKind::Flatten
            | OpKind::Relu
            | OpKind::Relu6
            | OpKind::Silu
            | OpKind::Sigmoid => {}
            _ => {
                return Err(err(format!(
                    "'{op_name}' is not supported by training; trainable ops are conv2d, dense, fanin, maxpool, avgpool, global_avgpool, flatten, relu, relu6, silu, sigmoid"
                )))
            }
        }
        if spec.from.is_some() {
            return Err(err(
                "training specs are plain chains: \"from\" is not supported".into(),
            ));
        }
        // The op's own shape rule, the one model loading applies.
        shape = spec.kind.output_shape(&shape, &[]).map_err(&err)?;
        let mut v = spec.to_value();
        if matches!(
            spec.kind,
            OpKind::Conv2d { .. } | OpKind::Dense { .. } | OpKind::Fanin { .. }
        ) {
            v["bias"] = Value::Bool(true);
        }
        out.push(v);
    }
    Ok((out, shape))
}

/// Turns `{"op": "fanin", "outputs": O, "out_degree": d}` (or `"density": ρ`) into the
/// manifest form with `inputs` and `k`.
fn resolve_fanin(value: &Value, shape: &[usize]) -> Result<Value, String> {
    let Value::Object(map) = value else {
        return Err("an op must be a JSON object".into());
    };
    let mut map: Map<String, Value> = map.clone();
    let [inputs] = *shape else {
        return Err(format!(
            "needs a 1-D input (add a flatten op first), got {shape:?}"
        ));
    };
    let outputs = map
        .get("outputs")
        .and_then(Value::as_u64)
        .ok_or("fanin needs \"outputs\" (a positive integer)")? as usize;
    if outputs == 0 {
        return Err("outputs must be positive".into());
    }
    let out_degree = map.remove("out_degree");
    let density = map.remove("density");
    let degree = match (out_degree, density, map.contains_key("k")) {
        (Some(d), None, false) => {
            let d = d
                .as_u64()
                .ok_or("\"out_degree\" must be a positive integer")? as usize;
            if d == 0 || d > outputs || !(inputs * d).is_multiple_of(outputs) {
                return Err(format!(
                    "out-degree {d} is impossible for {inputs} → {outputs}: inputs·out_degree must be a multiple of outputs; valid out-degrees: {:?}",
                    valid_out_degrees(inputs, outputs)
                ));
            }
            d
        }
        (None, Some(rho), false) => {
            let rho = rho
                .as_f64()
                .filter(|r| *r > 0.0 && *r <= 1.0)
                .ok_or("\"density\" must be a number in (0, 1]")?;
            let p = FanInPattern::with_density(inputs, outputs, rho, 0).map_err(|e| e.to_string())?;
            p.out_degree().unwrap_or(outputs)
        }
        _ => {
            return Err(
                "fanin in a training spec takes exactly one of \"out_degree\" or \"density\" (k is derived)"
                    .into(),
            )
        }
    };
    if let Some(g) = map.get("group") {
        let g = g.as_u64().ok_or("\"group\" must be a positive integer")? as usize;
        if g == 0 || !outputs.is_multiple_of(g) || !degree.is_multiple_of(g) {
            return Err(format!(
                "group {g} is impossible with {outputs} outputs and out-degree {degree}: the group must divide both; valid groups: {:?}",
                valid_groups(outputs, degree)
            ));
        }
    }
    map.insert("inputs".into(), Value::from(inputs));
    map.insert("k".into(), Value::from(inputs * degree / outputs));
    Ok(Value::Object(map))
}
