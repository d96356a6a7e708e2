//! A device that classifies PNG/JPEG files through a tail server: each image is decoded,
//! converted to grey and resized to the model input with `image`, the head runs here, and the
//! cut tensor goes to the server unless an exit head is confident (the device finishes alone
//! when the server fails).
//!
//! Run (with `cargo run --example edge_server -- models/mnist-fixture` running):
//! `cargo run --example edge_device -- models/mnist-fixture http://127.0.0.1:8000 digit.png ...`
//! Optional: `--policy static:<block>[:fp32|fp16|int8]` (cut after that block; default
//! `static:0`, after the first block, as fp32), `--threshold T` (default 0.9).
//! Prints one line per file: the class, who answered, bytes sent and latency.

use edgecut::data::load_image;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::sched::policy::{parse_live, Context};
use edgecut::split::client::{ClientConfig, DeviceClient};
use edgecut::split::live::Feedback;
use edgecut::tensor::Tensor;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: edge_device <model-dir> <server-url> <image>... [--policy P] [--threshold T]";
    let model = Arc::new(Model::load(args.next().ok_or(usage)?)?);
    let server = args.next().ok_or(usage)?;
    let (mut files, mut policy, mut threshold) = (Vec::new(), "static:0:fp32".to_string(), 0.9f32);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--policy" => policy = value()?,
            "--threshold" => threshold = value()?.parse()?,
            f => files.push(PathBuf::from(f)),
        }
    }
    let shape = model.input_shape().to_vec();
    let [channels, height, width] = shape[..] else {
        return Err(format!("model input {shape:?} is not [channels, height, width]").into());
    };
    // The one policy parser; a fixed policy needs no profiles, so the table has none.
    let feedback = Feedback::without_profiles(model.clone())?;
    let mut policy = parse_live(&policy, feedback.table())?;
    let choice = policy
        .decide(&Context {
            estimates: feedback.estimator.estimates(),
            truth: None,
        })
        .option;
    let config = ClientConfig::new(server);
    let mut client = DeviceClient::new(model.clone(), Backend::gpu_or_cpu(), config)?;
    for f in files {
        let pixels = load_image(&f, channels, height, width)?;
        let x = Tensor::new(vec![1, channels, height, width], pixels)?;
        let o = client.classify(&x, choice, threshold)?;
        println!(
            "{}: class {} ({:?}, {}, {} bytes sent, {:.2} ms)",
            f.display(),
            o.class,
            o.by,
            feedback.table().label(o.choice),
            o.bytes_sent,
            o.latency.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
