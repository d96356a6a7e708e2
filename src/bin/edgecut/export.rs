//! `edgecut export`: head/tail ONNX files of a split, the whole model, or a Triton model
//! repository of every cut candidate's tails.

use crate::load;
use anyhow::{bail, Context, Result};
use edgecut::encoding::Encoding;
use edgecut::export::{self, TensorSpec};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["out", "triton_repo"])))]
pub struct ExportArgs {
    /// Model directory or .onnx file.
    model: PathBuf,
    /// Cut after this block (name or index): writes head.onnx and tail.onnx into --out.
    #[arg(long, requires = "out")]
    cut: Option<String>,
    /// Encoding the tail receives the split tensor in (fp32, fp16 or int8).
    #[arg(long, default_value = "fp32", value_parser = parse_encoding, requires = "cut")]
    encoding: Encoding,
    /// Output folder: head.onnx + tail.onnx with --cut, else model.onnx (the whole model).
    #[arg(long, conflicts_with = "triton_repo")]
    out: Option<PathBuf>,
    /// With --out alone, for an image model (preprocessing in model.json): the whole model
    /// taking the 8-bit image, UINT8 [N, 3, H, W], with the preprocessing in the graph.
    #[arg(long, requires = "out", conflicts_with = "cut")]
    pixels: bool,
    /// Write a Triton/KServe model repository: the full model and the tail after every cut
    /// candidate in every encoding (see deploy/README.md).
    #[arg(long, conflicts_with_all = ["cut", "out"])]
    triton_repo: Option<PathBuf>,
    /// Write into a folder that already holds files (files of the same name are replaced).
    #[arg(long)]
    force: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_encoding(s: &str) -> Result<Encoding, String> {
    Encoding::parse(s).map_err(|e| e.to_string())
}

fn dims(t: &TensorSpec) -> String {
    let d: Vec<String> = t
        .dims
        .iter()
        .map(|&d| {
            if d < 0 {
                export::BATCH_DIM.to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("{} {} [{}]", t.name, t.datatype, d.join(", "))
}

fn io(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> String {
    let i: Vec<String> = inputs.iter().map(dims).collect();
    let o: Vec<String> = outputs.iter().map(dims).collect();
    format!("{} -> {}", i.join(", "), o.join(", "))
}

pub fn export(a: ExportArgs) -> Result<()> {
    let model = load(&a.model)?;
    if let Some(repo) = &a.triton_repo {
        let models = export::write_triton_repo(&model, repo, a.force)
            .with_context(|| format!("writing the repository {}", repo.display()))?;
        if a.json {
            let report = serde_json::json!({
                "model": model.name(), "repository": repo, "models": models,
            });
            println!("{report}");
        } else {
            for m in &models {
                println!(
                    "{:36} {:>10} B  {}",
                    m.name,
                    m.bytes,
                    io(&m.inputs, &m.outputs)
                );
            }
            let pixels = models.iter().any(|m| m.encoding == "uint8");
            println!(
                "wrote {} models of '{}' (the full model{}, and {} tails: cut candidates x fp32/fp16/int8) to {}",
                models.len(),
                model.name(),
                if pixels { " and its 8-bit pixel twin" } else { "" },
                models.len() - 1 - usize::from(pixels),
                repo.display()
            );
        }
        return Ok(());
    }
    let Some(out) = &a.out else {
        bail!("give --cut <block> --out <dir> (head.onnx + tail.onnx), --out <dir> alone (model.onnx), or --triton-repo <dir>");
    };
    let (files, cut) = match &a.cut {
        Some(cut) => {
            let k = export::parse_cut(&model, cut)?;
            let files = export::write_split(&model, k, a.encoding, out, a.force)
                .with_context(|| format!("writing {}", out.display()))?;
            (files, Some(k))
        }
        None if a.pixels => (
            vec![export::write_full_pixels(&model, out, a.force)
                .with_context(|| format!("writing {}", out.display()))?],
            None,
        ),
        None => (
            vec![export::write_full(&model, out, a.force)
                .with_context(|| format!("writing {}", out.display()))?],
            None,
        ),
    };
    if a.json {
        let report = serde_json::json!({
            "model": model.name(),
            "cut_after": cut,
            "cut_block": cut.map(|k| model.blocks[k].name.clone()),
            "encoding": cut.map(|_| a.encoding.to_string()),
            "files": files,
        });
        println!("{report}");
    } else {
        for f in &files {
            println!(
                "{} ({} B): {}",
                f.path.display(),
                f.bytes,
                io(&f.inputs, &f.outputs)
            );
        }
        if let Some(k) = cut {
            println!(
                "cut after block '{}' ({k}); the tail takes {}; exit heads are not exported",
                model.blocks[k].name, a.encoding
            );
        }
    }
    Ok(())
}
