//! The untrained fixture model written by `edgecut init`: a LeNet-style MNIST network with
//! fixed-fan-in layers and an early exit after the first conv block, with seeded weights.
//! It exercises every part of the runtime before trained models exist; its accuracy is chance.

use crate::model::{Manifest, Model, ModelError};
use serde_json::json;

/// The fixture's manifest (seeded initialisation, no weight file).
pub fn lenet_manifest(seed: u64) -> Manifest {
    let value = json!({
        "format": 1,
        "name": "mnist-fixture",
        "description": format!("UNTRAINED fixture: LeNet-style MNIST net (conv-pool x2, fan-in sparse fc) with an early exit after conv1; weights drawn from seed {seed} by `edgecut init`. Accuracy is chance level; use it to test the runtime, not to classify."),
        "input": [1, 28, 28],
        "classes": 10,
        "init": {"seed": seed},
        "blocks": [
            {"name": "conv1", "ops": [
                {"op": "conv2d", "name": "conv", "out_channels": 6, "kernel": 5, "padding": 2, "bias": true},
                {"op": "relu"},
                {"op": "maxpool", "kernel": 2}
            ]},
            {"name": "conv2", "ops": [
                {"op": "conv2d", "name": "conv", "out_channels": 16, "kernel": 5, "bias": true},
                {"op": "relu"},
                {"op": "maxpool", "kernel": 2}
            ]},
            {"name": "fc1", "ops": [
                {"op": "flatten"},
                {"op": "fanin", "name": "fc", "outputs": 120, "k": 40, "bias": true},
                {"op": "relu"}
            ]},
            {"name": "fc2", "ops": [
                {"op": "fanin", "name": "fc", "outputs": 84, "k": 30, "bias": true},
                {"op": "relu"}
            ]},
            {"name": "fc3", "ops": [
                {"op": "dense", "name": "fc", "outputs": 10, "bias": true}
            ]}
        ],
        "exits": [
            {"after_block": "conv1", "name": "exit_conv1", "ops": [
                {"op": "maxpool", "kernel": 2},
                {"op": "flatten"},
                {"op": "dense", "name": "fc", "outputs": 10, "bias": true}
            ]}
        ]
    });
    serde_json::from_value(value).expect("the fixture manifest matches the schema")
}

/// Builds the fixture model in memory.
pub fn lenet(seed: u64) -> Result<Model, ModelError> {
    let manifest = lenet_manifest(seed);
    let json = serde_json::to_vec(&manifest).map_err(|e| ModelError::Invalid {
        model: manifest.name.clone(),
        reason: e.to_string(),
    })?;
    Model::from_parts(manifest, &json, None)
}
