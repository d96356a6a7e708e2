//! A device that classifies PNG/JPEG files through a tail server: each image is decoded,
//! converted to grey and resized to the model input with `image`, the head runs here, and the
//! cut tensor goes to the server unless an exit head is confident (the device finishes alone
//! when the server fails).
//!
//! Run (with `cargo run --example edge_server -- models/mnist-fixture` running):
//! `cargo run --example edge_device -- models/mnist-fixture http://127.0.0.1:8000 digit.png ...`
//! Optional: `--cut K` (default 1), `--encoding fp32|fp16|int8`, `--threshold T` (default 0.9).
//! Prints one line per file: the class, who answered, bytes sent and latency.

use edgecut::data::load_image;
use edgecut::engine::Backend;
use edgecut::model::Model;
use edgecut::split::client::{ClientConfig, DeviceClient, Route};
use edgecut::split::wire::Encoding;
use edgecut::tensor::Tensor;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: edge_device <model-dir> <server-url> <image>... [--cut K] [--encoding E] [--threshold T]";
    let model = Arc::new(Model::load(args.next().ok_or(usage)?)?);
    let server = args.next().ok_or(usage)?;
    let (mut files, mut cut, mut encoding, mut threshold) =
        (Vec::new(), 1usize, Encoding::Fp32, 0.9f32);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--cut" => cut = value()?.parse()?,
            "--encoding" => encoding = Encoding::parse(&value()?)?,
            "--threshold" => threshold = value()?.parse()?,
            f => files.push(PathBuf::from(f)),
        }
    }
    let shape = model.input_shape().to_vec();
    let [channels, height, width] = shape[..] else {
        return Err(format!("model input {shape:?} is not [channels, height, width]").into());
    };
    let config = ClientConfig::new(server).with_encoding(encoding);
    let mut client = DeviceClient::new(model.clone(), Backend::gpu_or_cpu(), config)?;
    for f in files {
        let pixels = load_image(&f, channels, height, width)?;
        let x = Tensor::new(vec![1, channels, height, width], pixels)?;
        let o = client.classify(&x, Route::Cut(cut), threshold)?;
        println!(
            "{}: class {} ({:?}, cut {}, {} bytes sent, {:.2} ms)",
            f.display(),
            o.class,
            o.by,
            o.cut,
            o.bytes_sent,
            o.latency.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
