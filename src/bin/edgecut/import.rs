//! `edgecut import`: an ONNX file to the native format (model.json + weights.safetensors).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The .onnx file.
    model: PathBuf,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Replace model.json and weights.safetensors if the directory already has them.
    #[arg(long)]
    force: bool,
    /// Image preprocessing to record in model.json (for `edgecut classify`); `--labels` is
    /// copied into the output directory.
    #[command(flatten)]
    preprocess: crate::classify::PreprocessArgs,
}

pub fn import(a: ImportArgs) -> Result<()> {
    if !a.force && a.out.join("model.json").exists() {
        bail!(
            "{} already holds a model.json; pass --force to replace it",
            a.out.display()
        );
    }
    let mut imported = edgecut::onnx::import(&a.model)
        .with_context(|| format!("importing {}", a.model.display()))?;
    imported.manifest.preprocess = a.preprocess.merge(None)?;
    if let Some(labels) = &a.preprocess.labels {
        let classes = imported.manifest.classes;
        edgecut::preprocess::read_labels(labels, classes)?;
        let name = labels
            .file_name()
            .context("--labels must name a file")?
            .to_string_lossy()
            .into_owned();
        std::fs::create_dir_all(&a.out)?;
        let target = a.out.join(&name);
        if std::fs::canonicalize(labels).ok() != std::fs::canonicalize(&target).ok() {
            std::fs::copy(labels, &target)
                .with_context(|| format!("copying {} to {}", labels.display(), target.display()))?;
        }
        if let Some(p) = imported.manifest.preprocess.as_mut() {
            p.labels = Some(name);
        }
    }
    imported
        .save(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "imported {} as '{}': {} blocks, input {:?}, {} outputs; wrote {}",
        a.model.display(),
        imported.manifest.name,
        imported.manifest.blocks.len(),
        imported.manifest.input,
        imported.manifest.classes,
        a.out.display()
    );
    Ok(())
}
