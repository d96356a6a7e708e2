//! `edgecut info`: blocks, shapes, complexity, natural bottlenecks and cut candidates.

use crate::load;
use anyhow::Result;
use edgecut::report::info::ModelInfo;
use std::path::Path;

pub fn info(path: &Path, as_json: bool) -> Result<()> {
    let model = load(path)?;
    let info = ModelInfo::of(&model);
    if as_json {
        println!("{}", serde_json::to_string(&info)?);
    } else {
        print!("{info}");
    }
    Ok(())
}
