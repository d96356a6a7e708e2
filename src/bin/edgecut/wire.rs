//! `edgecut wire`: the effect of each wire encoding at every cut of a model, on the MNIST test set
//! (accuracy) or on photos (agreement with FP32 for an image model).

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::report::wire::{wire_accuracy, wire_agreement};
use edgecut::tensor::Tensor;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WireArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist", conflicts_with = "images")]
    data: PathBuf,
    /// Folder of photos (JPEG/PNG) for an image model with preprocessing in its manifest: each
    /// photo gives its ten standard crops, and each encoding is scored by agreement with FP32.
    #[arg(long)]
    images: Option<PathBuf>,
    /// Only the first N samples (test digits, or photo crops).
    #[arg(long)]
    limit: Option<usize>,
    /// Where to run the head and tail plans.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn wire(a: WireArgs) -> Result<()> {
    let model = load(&a.model)?;
    let backend = backend(a.backend)?;
    let r = match &a.images {
        None => {
            let test = load_mnist(&a.data, Split::Test)?;
            wire_accuracy(&model, &backend, &test, a.limit.unwrap_or(test.len()))?
        }
        Some(dir) => {
            let Some(pre) = model.manifest.preprocess.clone() else {
                bail!(
                    "'{}' carries no image preprocessing: import it with `edgecut import --mean --std ...` first",
                    model.name()
                );
            };
            let files = edgecut::preprocess::photos_in(dir)?;
            let mut views = Vec::new();
            for path in &files {
                let img = image::open(path)
                    .with_context(|| format!("decoding {}", path.display()))?
                    .to_rgb8();
                views.extend(pre.ten_crop(&img, model.input_shape())?);
            }
            let per_photo = views.len() / files.len();
            views.truncate(a.limit.unwrap_or(views.len()));
            let mut shape = vec![views.len()];
            shape.extend_from_slice(model.input_shape());
            let what = format!(
                "{} crops of {} photos in {}, {per_photo} per photo",
                views.len(),
                files.len(),
                dir.display()
            );
            let inputs = Tensor::new(shape, views.concat())?;
            wire_agreement(&model, &backend, inputs, &what)?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if model.seeded {
        println!("note: '{}' has untrained seeded weights", r.model);
    }
    print!("{r}");
    Ok(())
}
