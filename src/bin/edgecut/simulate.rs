//! `edgecut simulate`.
use anyhow::Result;
#[derive(clap::Args)]
pub struct SimulateArgs {}
pub fn simulate(_a: SimulateArgs) -> Result<()> {
    Ok(())
}
