//! `edgecut classify`: top-k classes of images, preprocessed as the model's manifest says.

use crate::{backend, load, BackendChoice};
use anyhow::{bail, Context, Result};
use edgecut::engine::Plan;
use edgecut::model::Op;
use edgecut::preprocess::{read_labels, top_k, ChannelOrder, Interpolation, Preprocess};
use edgecut::tensor::Tensor;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Preprocessing flags: they set (`import`) or override (`classify`) the manifest's values.
#[derive(clap::Args, Default)]
pub struct PreprocessArgs {
    /// Resize the image's shorter side to N pixels, then centre-crop to the input size.
    #[arg(long)]
    pub resize: Option<u32>,
    /// Resampling filter.
    #[arg(long, value_parser = ["nearest", "bilinear", "bicubic"])]
    pub interpolation: Option<String>,
    /// Multiply raw 0..255 pixel values by S first (e.g. 0.00392156862745098 for 1/255).
    #[arg(long)]
    pub scale: Option<f32>,
    /// Per-channel mean subtracted after scaling: `R,G,B` or one value for all.
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation divided by: `R,G,B` or one value for all.
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Channel order of the model input.
    #[arg(long, value_parser = ["rgb", "bgr"])]
    pub channels: Option<String>,
    /// Class names, one per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

fn per_channel(v: &[f32], what: &str) -> Result<[f32; 3]> {
    match *v {
        [a] => Ok([a; 3]),
        [r, g, b] => Ok([r, g, b]),
        _ => bail!("--{what} takes one value or three (R,G,B), got {}", v.len()),
    }
}

impl PreprocessArgs {
    /// `base` with these flags applied; `None` when there is neither a base nor `--mean` and
    /// `--std`.
    pub fn merge(&self, base: Option<Preprocess>) -> Result<Option<Preprocess>> {
        let given = self.resize.is_some()
            || self.interpolation.is_some()
            || self.scale.is_some()
            || self.mean.is_some()
            || self.std.is_some()
            || self.channels.is_some()
            || self.labels.is_some();
        let mut p = match (base, &self.mean, &self.std) {
            (Some(p), _, _) => p,
            (None, Some(_), Some(_)) => Preprocess {
                resize: None,
                interpolation: Interpolation::default(),
                scale: 1.0,
                mean: [0.0; 3],
                std: [1.0; 3],
                channels: ChannelOrder::default(),
                labels: None,
            },
            (None, _, _) if !given => return Ok(None),
            (None, _, _) => bail!(
                "the model carries no preprocessing: give at least --mean and --std (with --scale and --resize as the model was trained)"
            ),
        };
        if let Some(r) = self.resize {
            p.resize = Some(r);
        }
        if let Some(i) = &self.interpolation {
            p.interpolation = serde_json::from_value(json!(i))?;
        }
        if let Some(s) = self.scale {
            p.scale = s;
        }
        if let Some(m) = &self.mean {
            p.mean = per_channel(m, "mean")?;
        }
        if let Some(s) = &self.std {
            p.std = per_channel(s, "std")?;
        }
        if let Some(c) = &self.channels {
            p.channels = serde_json::from_value(json!(c))?;
        }
        if let Some(l) = &self.labels {
            p.labels = Some(l.display().to_string());
        }
        p.validate()?;
        Ok(Some(p))
    }
}

#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The folder relative paths in a model's manifest are resolved against.
fn model_folder(model: &Path) -> &Path {
    if model.is_dir() {
        model
    } else {
        model.parent().unwrap_or(Path::new("."))
    }
}

pub fn classify(a: ClassifyArgs) -> Result<()> {
    let model = load(&a.model)?;
    let Some(pre) = a.preprocess.merge(model.manifest.preprocess.clone())? else {
        bail!(
            "'{}' carries no preprocessing: pass --mean and --std (and --scale, --resize) as the model was trained, or import it with them",
            model.name()
        );
    };
    let labels = match (&a.preprocess.labels, &pre.labels) {
        (Some(path), _) => Some(read_labels(path, model.classes())?),
        (None, Some(name)) => Some(read_labels(
            &model_folder(&a.model).join(name),
            model.classes(),
        )?),
        (None, None) => None,
    };
    let mut data = Vec::new();
    for path in &a.images {
        data.extend(pre.load(path, model.input_shape())?);
    }
    let n = a.images.len();
    let backend = backend(a.backend)?;
    let plan =
        Plan::compile(&model, 0..model.blocks.len(), &backend, n).context("compiling the model")?;
    let mut shape = vec![n];
    shape.extend_from_slice(model.input_shape());
    let out = plan.run(&Tensor::new(shape, data)?)?;
    let classes = model.classes();
    // A model ending in softmax already outputs probabilities: rank their logarithms.
    let ends_in_softmax = model
        .blocks
        .last()
        .and_then(|b| b.steps.last())
        .is_some_and(|s| matches!(s.op, Op::Softmax { .. }));
    let mut results = Vec::new();
    for (i, path) in a.images.iter().enumerate() {
        let row = &out.output.data()[i * classes..(i + 1) * classes];
        let scores: Vec<f32> = if ends_in_softmax {
            row.iter().map(|p| p.max(f32::MIN_POSITIVE).ln()).collect()
        } else {
            row.to_vec()
        };
        results.push((path, top_k(&scores, a.top, labels.as_deref())));
    }
    if a.json {
        let images: Vec<_> = results
            .iter()
            .map(|(p, top)| json!({"image": p.display().to_string(), "top": top}))
            .collect();
        let report = json!({
            "model": model.name(),
            "backend": backend.name(),
            "adapter": backend.adapter(),
            "images": images,
        });
        println!("{report}");
        return Ok(());
    }
    for (path, top) in results {
        println!("{}:", path.display());
        for r in top {
            println!(
                "  {:6.2}%  {} ({})",
                r.probability * 100.0,
                r.label,
                r.class
            );
        }
    }
    Ok(())
}
