//! `edgecut report-sparsity`: measures the sparse-vs-dense report ([`edgecut::report::sparsity`])
//! and writes `docs/sparsity-results.md`, `docs/sparsity-exits.svg` and the README's section.

use crate::{backend, BackendChoice};
use anyhow::{Context, Result};
use edgecut::data::{load_mnist, Split};
use edgecut::report::sparsity::{measure, update_readme};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Folder holding the shipped models.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Folder with the MNIST IDX files.
    #[arg(long, default_value = "models/data/mnist")]
    pub data: PathBuf,
    /// Where to write the Markdown table and the SVG plot.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// README whose results section (between the `sparsity-results` markers) is replaced by the
    /// tables; left alone when it has no markers or does not exist.
    #[arg(long, default_value = "README.md")]
    pub readme: PathBuf,
    /// Timed runs per measurement (the median is reported; batch-1 wall times spread widely
    /// on a shared machine, hence many).
    #[arg(long, default_value_t = 100)]
    pub reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn report(a: ReportArgs) -> Result<()> {
    let test = load_mnist(&a.data, Split::Test)?;
    let train_set = load_mnist(&a.data, Split::Train)?;
    let gpu = backend(BackendChoice::Gpu).context("the report measures GPU inference time")?;
    let report = measure(&a.models, &train_set, &test, &gpu, a.reps)?;
    let md = report.markdown();
    let (md_path, plot) = (
        a.out.join("sparsity-results.md"),
        a.out.join("sparsity-exits.svg"),
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    report.plot_exits(&plot)?;
    let readme_note = update_readme(&a.readme, &md, &plot)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["markdown"] = md_path.display().to_string().into();
        v["readme"] = readme_note.into();
        println!("{v}");
    } else {
        print!("{md}");
        eprintln!("{readme_note}");
    }
    Ok(())
}
