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
}

pub fn import(a: ImportArgs) -> Result<()> {
    if !a.force && a.out.join("model.json").exists() {
        bail!(
            "{} already holds a model.json; pass --force to replace it",
            a.out.display()
        );
    }
    let imported = edgecut::onnx::import(&a.model)
        .with_context(|| format!("importing {}", a.model.display()))?;
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
