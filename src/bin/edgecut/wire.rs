//! `edgecut wire`: the accuracy effect of each wire encoding at every cut of a model.

use crate::{backend, load, BackendChoice};
use anyhow::Result;
use edgecut::data::{load_mnist, Split};
use edgecut::report::wire::wire_accuracy;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WireArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist")]
    data: PathBuf,
    /// Only the first N test samples.
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
    let test = load_mnist(&a.data, Split::Test)?;
    let backend = backend(a.backend)?;
    let r = wire_accuracy(&model, &backend, &test, a.limit.unwrap_or(test.len()))?;
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
