//! edgecut: deep neural networks split between an edge device and a server, on any GPU
//! through wgpu, with predefined (fixed-fan-in) sparsity and early exits.
//!
//! The main types: [`model::Model`] (a validated `model.json` + `weights.safetensors`),
//! [`engine::Plan`] (a block range compiled once for a [`engine::Backend`], run many times)
//! and [`gpu::GpuContext`] (one adapter, its device and pipeline cache).
//!
//! ```no_run
//! use edgecut::{engine::{Backend, Plan}, model::Model, tensor::Tensor};
//! let model = std::sync::Arc::new(Model::load("models/mnist-lenet-ee")?);
//! let backend = Backend::gpu_or_cpu();
//! let plan = Plan::compile(&model, 0..model.blocks.len(), &backend, 8)?;
//! let input = Tensor::zeros(vec![8, 1, 28, 28]);
//! let out = plan.run(&input)?;
//! println!("{:?}", out.output.shape());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod bench;
pub mod cpu;
pub mod data;
pub mod encoding;
pub mod engine;
pub mod export;
pub mod fixture;
#[cfg(test)]
mod fuzz;
pub mod gpu;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod preprocess;
pub mod report;
pub mod sched;
pub mod sim;
pub mod sparsity;
pub mod split;
pub mod stats;
pub mod tensor;
pub mod train;
