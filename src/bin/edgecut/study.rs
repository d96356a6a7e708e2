//! `edgecut study`.
use anyhow::Result;
#[derive(clap::Args)]
pub struct StudyArgs {}
pub fn study(_a: StudyArgs) -> Result<()> {
    Ok(())
}
