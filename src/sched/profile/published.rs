//! Profiles from published per-stage measurements (`published.csv`: model, hardware, kind,
//! framework, precision, batch, stage, ms, source), for hardware that is not at hand.
//!
//! Published figures time an architecture's standard stages, not edgecut blocks, so each model
//! has a documented stage → block map ([`stage_map`]). A stage's time is spread over its blocks in
//! proportion to their multiply-accumulates; a model with only a `whole` figure has it spread over
//! every block the same way. Where both stage and `whole` figures exist, the stages give the
//! shape and `whole` the total: every block is scaled by `whole / sum(stages)`, because stage
//! partitions carry overheads (PORTEND times each stage with an exit head attached) or leave them
//! out (TFLite per-op sums), while `whole` is the end-to-end latency a request sees.
//!
//! Published data is batch 1 only. [`with_batch_curve`] derives batch sizes `1..=B` from a
//! measured batch-scaling curve `t(b) / t(1)` of the whole model, and [`mac_scaled`] carries a
//! profile over to another model by the ratio of their MACs.

use super::{Clock, Profile, PROFILE_FORMAT};
use crate::model::Model;
use crate::sched::SchedError;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The CSV columns, in any order (more are allowed).
pub const COLUMNS: [&str; 9] = [
    "model",
    "hardware",
    "kind",
    "framework",
    "precision",
    "batch",
    "stage",
    "ms",
    "source",
];

/// The stage that stands for the whole model.
pub const WHOLE: &str = "whole";

/// Errors reading published figures or deriving profiles from them.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PublishedError {
    /// The file could not be read (the cause follows in the error chain).
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The header lacks columns.
    #[error("{path}: missing column(s) {missing:?}; the header has {found:?} (need {COLUMNS:?})")]
    MissingColumns {
        /// The file.
        path: String,
        /// Columns not found.
        missing: Vec<String>,
        /// Columns found.
        found: Vec<String>,
    },
    /// A row that does not parse.
    #[error("{path} line {line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No row for the model.
    #[error("no published figures for model '{model}'; the file has {known:?}")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// Models in the file.
        known: Vec<String>,
    },
    /// No hardware (of the asked kind and precision) matches.
    #[error("no hardware matching '{given}' for model '{model}'; available: {available:?}")]
    UnknownHardware {
        /// The model.
        model: String,
        /// The substring (with kind and precision filters) given.
        given: String,
        /// Every configuration published for the model.
        available: Vec<String>,
    },
    /// More than one configuration matches.
    #[error("'{given}' matches several configurations: {matches:?}; give a longer --hardware substring, --kind or --precision")]
    Ambiguous {
        /// The substring given.
        given: String,
        /// The configurations it matches.
        matches: Vec<String>,
    },
    /// The configuration has no batch-1 figures.
    #[error("{config}: no batch-1 figures (published batches: {batches:?})")]
    NoBatchOne {
        /// The configuration.
        config: String,
        /// Batches found.
        batches: Vec<usize>,
    },
    /// A model without a stage map, given per-stage figures.
    #[error("no stage map for model '{0}' (known: efficientnet-b0, mobilenet-v2, efficientnet-lite0); only a 'whole' figure can be used")]
    NoStageMap(String),
    /// A stage name not in the model's map.
    #[error("model '{model}': unknown stage '{stage}'; known stages: {known:?}")]
    UnknownStage {
        /// The model.
        model: String,
        /// The stage.
        stage: String,
        /// Stages of the map.
        known: Vec<String>,
    },
    /// The stages do not cover the model's blocks exactly once.
    #[error("model '{model}': {reason}")]
    Coverage {
        /// The model.
        model: String,
        /// What is missing or doubled.
        reason: String,
    },
    /// A derivation setting out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The quantity.
        what: String,
        /// Why.
        reason: String,
    },
    /// A profile that does not fit the model.
    #[error(transparent)]
    Sched(#[from] SchedError),
}

/// One published figure.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedRow {
    /// Architecture (`efficientnet-b0`, `mobilenet-v2`, ...).
    pub model: String,
    /// Hardware description.
    pub hardware: String,
    /// `device-cpu`, `device-gpu` or `server-gpu`.
    pub kind: String,
    /// Framework measured.
    pub framework: String,
    /// `fp32`, `fp16`, ...
    pub precision: String,
    /// Batch size.
    pub batch: usize,
    /// Stage name, or [`WHOLE`].
    pub stage: String,
    /// Milliseconds per inference.
    pub ms: f64,
    /// Where the figure comes from.
    pub source: String,
}

impl PublishedRow {
    /// The configuration a figure belongs to: hardware, kind, framework, precision.
    pub fn config(&self) -> String {
        format!(
            "{} [{}, {}, {}]",
            self.hardware, self.kind, self.framework, self.precision
        )
    }
}

/// Reads `published.csv`.
pub fn read_csv(path: &Path) -> Result<Vec<PublishedRow>, PublishedError> {
    let text = std::fs::read_to_string(path).map_err(|source| PublishedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_csv(&text, &path.display().to_string())
}

/// Splits one CSV line on commas, honouring double-quoted fields (`""` is a quote).
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur.trim().to_string());
    Ok(out)
}

/// Parses the text of `published.csv` (`path` names it in errors).
pub fn parse_csv(text: &str, path: &str) -> Result<Vec<PublishedRow>, PublishedError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let parse = |line: usize, reason: String| PublishedError::Parse {
        path: path.to_string(),
        line,
        reason,
    };
    let Some((h, header)) = lines.next() else {
        return Err(PublishedError::MissingColumns {
            path: path.to_string(),
            missing: COLUMNS.iter().map(|c| c.to_string()).collect(),
            found: Vec::new(),
        });
    };
    let header = fields(header).map_err(|r| parse(h + 1, r))?;
    let missing: Vec<String> = COLUMNS
        .iter()
        .filter(|c| !header.iter().any(|h| h == *c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(PublishedError::MissingColumns {
            path: path.to_string(),
            missing,
            found: header,
        });
    }
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .expect("checked present above")
    };
    let idx: Vec<usize> = COLUMNS.iter().map(|c| col(c)).collect();
    let mut rows = Vec::new();
    for (i, line) in lines {
        let f = fields(line).map_err(|r| parse(i + 1, r))?;
        if f.len() != header.len() {
            return Err(parse(
                i + 1,
                format!("{} fields, the header has {}", f.len(), header.len()),
            ));
        }
        let get = |k: usize| f[idx[k]].clone();
        let batch: usize = get(5)
            .parse()
            .ok()
            .filter(|b| *b >= 1)
            .ok_or_else(|| parse(i + 1, format!("batch '{}' is not a count >= 1", get(5))))?;
        let ms: f64 = get(7)
            .parse()
            .ok()
            .filter(|m: &f64| m.is_finite() && *m > 0.0)
            .ok_or_else(|| {
                parse(
                    i + 1,
                    format!("ms '{}' is not a positive number of milliseconds", get(7)),
                )
            })?;
        rows.push(PublishedRow {
            model: get(0),
            hardware: get(1),
            kind: get(2),
            framework: get(3),
            precision: get(4),
            batch,
            stage: get(6),
            ms,
            source: get(8),
        });
    }
    Ok(rows)
}

/// Which published configuration to use: a case-insensitive hardware substring, optionally
/// narrowed by kind and precision.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Substring of the hardware description.
    pub hardware: String,
    /// Exact kind (`device-gpu`, ...), if given.
    pub kind: Option<String>,
    /// Exact precision (`fp32`, ...), if given.
    pub precision: Option<String>,
}

/// Drops repeated entries, keeping the first of each in order.
fn unique(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

/// `efficientnet_lite0` and `EfficientNet-Lite0` name the same architecture.
fn canonical(model: &str) -> String {
    model.to_lowercase().replace('_', "-")
}

/// The batch-1 rows of the one configuration of `model` that `sel` picks.
pub fn select<'a>(
    rows: &'a [PublishedRow],
    model: &str,
    sel: &Selection,
) -> Result<Vec<&'a PublishedRow>, PublishedError> {
    let name = canonical(model);
    let of_model: Vec<&PublishedRow> = rows
        .iter()
        .filter(|r| canonical(&r.model) == name)
        .collect();
    if of_model.is_empty() {
        let mut known: Vec<String> = rows.iter().map(|r| r.model.clone()).collect();
        unique(&mut known);
        return Err(PublishedError::UnknownModel {
            model: model.to_string(),
            known,
        });
    }
    let needle = sel.hardware.to_lowercase();
    let matches = |r: &&PublishedRow| {
        r.hardware.to_lowercase().contains(&needle)
            && sel.kind.as_ref().is_none_or(|k| *k == r.kind)
            && sel.precision.as_ref().is_none_or(|p| *p == r.precision)
    };
    let mut configs: Vec<String> = of_model
        .iter()
        .filter(|r| matches(r))
        .map(|r| r.config())
        .collect();
    unique(&mut configs);
    match configs.len() {
        0 => {
            let mut available: Vec<String> = of_model.iter().map(|r| r.config()).collect();
            unique(&mut available);
            let mut given = sel.hardware.clone();
            if let Some(k) = &sel.kind {
                given += &format!(", kind {k}");
            }
            if let Some(p) = &sel.precision {
                given += &format!(", precision {p}");
            }
            Err(PublishedError::UnknownHardware {
                model: model.to_string(),
                given,
                available,
            })
        }
        1 => {
            let picked: Vec<&PublishedRow> = of_model
                .into_iter()
                .filter(|r| r.config() == configs[0])
                .collect();
            let one: Vec<&PublishedRow> = picked.iter().copied().filter(|r| r.batch == 1).collect();
            if one.is_empty() {
                return Err(PublishedError::NoBatchOne {
                    config: configs[0].clone(),
                    batches: picked.iter().map(|r| r.batch).collect(),
                });
            }
            Ok(one)
        }
        _ => Err(PublishedError::Ambiguous {
            given: sel.hardware.clone(),
            matches: configs,
        }),
    }
}

/// A stage and the blocks it covers: `(stage, first block, last block)`, inclusive.
pub type StageSpan = (&'static str, &'static str, &'static str);

/// EfficientNet-B0 (torchvision layout): stages of 1, 2, 2, 3, 3, 4, 1 MBConv blocks.
const EFFICIENTNET_B0: &[StageSpan] = &[
    ("stem", "stem", "stem"),
    ("stage1", "blocks_0", "blocks_0"),
    ("stage2", "blocks_1", "blocks_2"),
    ("stage3", "blocks_3", "blocks_4"),
    ("stage4", "blocks_5", "blocks_7"),
    ("stage5", "blocks_8", "blocks_10"),
    ("stage6", "blocks_11", "blocks_14"),
    ("stage7", "blocks_15", "blocks_15"),
    ("head", "head", "head"),
    ("stage7+head", "blocks_15", "head"),
];

/// MobileNetV2 (imgclsmob `mobilenetv2_w1`): stages of 1, 2, 3, 4, 3, 3, 1 inverted residuals.
const MOBILENET_V2: &[StageSpan] = &[
    ("stem", "stem", "stem"),
    ("stage1", "blocks_0", "blocks_0"),
    ("stage2", "blocks_1", "blocks_2"),
    ("stage3", "blocks_3", "blocks_5"),
    ("stage4", "blocks_6", "blocks_9"),
    ("stage5", "blocks_10", "blocks_12"),
    ("stage6", "blocks_13", "blocks_15"),
    ("stage7", "blocks_16", "blocks_16"),
    ("head", "head", "head"),
];

/// EfficientNet-Lite0 as imported from ONNX: blocks are the spans between valid cuts, named
/// after their last node; MBConv block `i` of the stages (1, 2, 2, 3, 3, 4, 1) spans
/// `block<i>_*`.
const EFFICIENTNET_LITE0: &[StageSpan] = &[
    ("stem", "stem_relu6", "stem_relu6"),
    ("stage1", "block0_depthwise_relu6", "block0_project_conv"),
    ("stage2", "block1_expand_relu6", "block2_add"),
    ("stage3", "block3_expand_relu6", "block4_add"),
    ("stage4", "block5_expand_relu6", "block7_add"),
    ("stage5", "block8_expand_relu6", "block10_add"),
    ("stage6", "block11_expand_relu6", "block14_add"),
    ("stage7", "block15_expand_relu6", "block15_project_conv"),
    ("head", "head_relu6", "fc"),
];

/// The stage → block map of a model, by its name.
pub fn stage_map(model: &str) -> Option<&'static [StageSpan]> {
    match canonical(model).as_str() {
        "efficientnet-b0" => Some(EFFICIENTNET_B0),
        "mobilenet-v2" => Some(MOBILENET_V2),
        "efficientnet-lite0" => Some(EFFICIENTNET_LITE0),
        _ => None,
    }
}

/// Spreads `total` over blocks in proportion to their MACs (evenly when none has any).
pub fn spread_by_macs(total: f64, macs: &[usize]) -> Vec<f64> {
    let sum: usize = macs.iter().sum();
    if sum == 0 {
        return vec![total / macs.len().max(1) as f64; macs.len()];
    }
    macs.iter()
        .map(|&m| total * m as f64 / sum as f64)
        .collect()
}

/// Per-block seconds of a model (its name, block names and MACs) from one configuration's
/// figures, and a note of how they were derived. See the module doc for the rule.
pub fn block_seconds(
    model: &str,
    names: &[String],
    macs: &[usize],
    rows: &[&PublishedRow],
) -> Result<(Vec<f64>, String), PublishedError> {
    let whole = rows.iter().find(|r| r.stage == WHOLE).map(|r| r.ms);
    let stages: Vec<&&PublishedRow> = rows.iter().filter(|r| r.stage != WHOLE).collect();
    let coverage = |reason: String| PublishedError::Coverage {
        model: model.to_string(),
        reason,
    };
    if stages.is_empty() {
        let Some(ms) = whole else {
            return Err(coverage("no stage and no 'whole' figure".into()));
        };
        let t = spread_by_macs(ms * 1e-3, macs);
        return Ok((
            t,
            format!("whole model {ms} ms spread over all blocks by MACs"),
        ));
    }
    let map = stage_map(model).ok_or_else(|| PublishedError::NoStageMap(model.to_string()))?;
    let block = |name: &str| {
        names.iter().position(|n| n == name).ok_or_else(|| {
            coverage(format!(
                "stage map names block '{name}', which the model lacks"
            ))
        })
    };
    let mut t = vec![0.0; names.len()];
    let mut covered = vec![None::<&str>; names.len()];
    let mut stage_sum = 0.0;
    for r in &stages {
        let Some(&(stage, first, last)) = map.iter().find(|s| s.0 == r.stage) else {
            return Err(PublishedError::UnknownStage {
                model: model.to_string(),
                stage: r.stage.clone(),
                known: map.iter().map(|s| s.0.to_string()).collect(),
            });
        };
        let (a, b) = (block(first)?, block(last)?);
        for (i, c) in covered.iter_mut().enumerate().take(b + 1).skip(a) {
            if let Some(other) = c {
                return Err(coverage(format!(
                    "block '{}' is in stages '{other}' and '{stage}'",
                    names[i]
                )));
            }
            *c = Some(stage);
        }
        for (i, s) in spread_by_macs(r.ms * 1e-3, &macs[a..=b])
            .into_iter()
            .enumerate()
        {
            t[a + i] = s;
        }
        stage_sum += r.ms;
    }
    if let Some(i) = covered.iter().position(Option::is_none) {
        return Err(coverage(format!(
            "block '{}' is in no published stage",
            names[i]
        )));
    }
    let note = match whole {
        Some(w) => {
            let k = w / stage_sum;
            t.iter_mut().for_each(|s| *s *= k);
            format!("{} stages ({stage_sum:.3} ms) spread over their blocks by MACs, scaled to the whole-model {w} ms", stages.len())
        }
        None => format!(
            "{} stages ({stage_sum:.3} ms) spread over their blocks by MACs",
            stages.len()
        ),
    };
    Ok((t, note))
}

/// A batch-1 profile of `model` from the published figures `sel` picks.
pub fn from_published(
    model: &Model,
    rows: &[PublishedRow],
    sel: &Selection,
    csv_name: &str,
) -> Result<Profile, PublishedError> {
    let picked = select(rows, model.name(), sel)?;
    let names: Vec<String> = model.blocks.iter().map(|b| b.name.clone()).collect();
    let macs: Vec<usize> = model.blocks.iter().map(|b| b.stats.macs).collect();
    let (seconds, note) = block_seconds(model.name(), &names, &macs, &picked)?;
    let first = picked[0];
    let mut sources: Vec<String> = picked.iter().map(|r| r.source.clone()).collect();
    unique(&mut sources);
    Ok(Profile {
        format: PROFILE_FORMAT,
        model: model.name().to_string(),
        hash: model.hash.clone(),
        backend: "published".into(),
        adapter: first.hardware.clone(),
        batches: vec![1],
        slowdown: 1.0,
        warmup: 0,
        runs: 0,
        clock: Clock::Wall,
        blocks: names
            .into_iter()
            .zip(seconds)
            .map(|(name, s)| super::BlockTime {
                name,
                seconds: vec![s],
            })
            .collect(),
        observed_runs: 0,
        source: Some(format!(
            "{csv_name}: {} ({}, {}, {}, batch 1; {}); {note}",
            first.hardware,
            first.kind,
            first.framework,
            first.precision,
            sources.join(", ")
        )),
    })
}

/// How the whole model's time grows with the batch: `t(b) / t(1)` at measured batch sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCurve {
    /// Batch sizes, ascending, starting at 1.
    pub batches: Vec<usize>,
    /// `t(b) / t(1)` at each.
    pub ratio: Vec<f64>,
}

impl BatchCurve {
    /// The curve of a profile measured at several batch sizes, including 1.
    pub fn from_profile(p: &Profile) -> Result<Self, PublishedError> {
        let mut pts: Vec<(usize, f64)> = p
            .batches
            .iter()
            .enumerate()
            .map(|(j, &b)| (b, p.blocks.iter().map(|x| x.seconds[j]).sum::<f64>()))
            .collect();
        pts.sort_by_key(|x| x.0);
        let bad = |reason: String| PublishedError::Invalid {
            what: "batch curve".into(),
            reason,
        };
        if pts.len() < 2 || pts[0].0 != 1 {
            return Err(bad(format!(
                "profile of '{}' has batches {:?}; need batch 1 and at least one more",
                p.model, p.batches
            )));
        }
        let t1 = pts[0].1;
        if !(t1.is_finite() && t1 > 0.0) {
            return Err(bad(format!("batch-1 total {t1} s is not positive")));
        }
        Ok(Self {
            batches: pts.iter().map(|x| x.0).collect(),
            ratio: pts.iter().map(|x| x.1 / t1).collect(),
        })
    }

    /// `t(b) / t(1)` at `b`: linear between measured sizes, extended linearly past the last two.
    pub fn at(&self, b: usize) -> f64 {
        let n = self.batches.len();
        let i = self.batches.partition_point(|&x| x < b).clamp(1, n - 1);
        let (b0, b1) = (self.batches[i - 1] as f64, self.batches[i] as f64);
        let (r0, r1) = (self.ratio[i - 1], self.ratio[i]);
        (r0 + (r1 - r0) * (b as f64 - b0) / (b1 - b0)).max(r0.min(1.0))
    }
}

/// Batch sizes `1..=max_batch` from a batch-1 profile: every block's batch-`b` time is its
/// batch-1 time times `curve.at(b)`. `curve_from` is recorded in the source.
pub fn with_batch_curve(
    p: &Profile,
    curve: &BatchCurve,
    max_batch: usize,
    curve_from: &str,
) -> Result<Profile, PublishedError> {
    if max_batch == 0 || max_batch > 4096 {
        return Err(PublishedError::Invalid {
            what: "--max-batch".into(),
            reason: format!("{max_batch}: need 1..=4096"),
        });
    }
    let one = p.block_seconds();
    let mut out = p.clone();
    out.batches = (1..=max_batch).collect();
    for (b, s) in out.blocks.iter_mut().zip(one) {
        b.seconds = out.batches.iter().map(|&k| s * curve.at(k)).collect();
    }
    let note = format!(
        "batch b = batch 1 x t(b)/t(1) of {curve_from} (measured at {:?}, linear between)",
        curve.batches
    );
    out.source = Some(match &p.source {
        Some(s) => format!("{s}; {note}"),
        None => note,
    });
    Ok(out)
}

/// The profile `p` of model `from` carried over to model `to`: at each batch size, `to`'s total
/// is `from`'s total times the ratio of their MACs, spread over `to`'s blocks by MACs.
pub fn mac_scaled(p: &Profile, from: &Model, to: &Model) -> Result<Profile, PublishedError> {
    p.check(from, "profile to scale")?;
    let (mf, mt) = (from.totals().macs, to.totals().macs);
    if mf == 0 {
        return Err(PublishedError::Invalid {
            what: "MAC scaling".into(),
            reason: format!("model '{}' has no MACs", from.name()),
        });
    }
    let k = mt as f64 / mf as f64;
    let macs: Vec<usize> = to.blocks.iter().map(|b| b.stats.macs).collect();
    let columns: Vec<Vec<f64>> = (0..p.batches.len())
        .map(|j| {
            spread_by_macs(
                k * p.blocks.iter().map(|b| b.seconds[j]).sum::<f64>(),
                &macs,
            )
        })
        .collect();
    let mut out = p.clone();
    out.model = to.name().to_string();
    out.hash = to.hash.clone();
    out.blocks = to
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| super::BlockTime {
            name: b.name.clone(),
            seconds: columns.iter().map(|c| c[i]).collect(),
        })
        .collect();
    let note = format!(
        "carried over from {} by the MAC ratio {mt}/{mf} = {k:.3}, spread over blocks by MACs",
        from.name()
    );
    out.source = Some(match &p.source {
        Some(s) => format!("{s}; {note}"),
        None => note,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "model,hardware,kind,framework,precision,batch,stage,ms,source";
    /// Sums and ratios of a few float products: exact but for rounding.
    const ROUNDING: f64 = 1e-12;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < ROUNDING)
    }

    fn rows(text: &str) -> Vec<PublishedRow> {
        parse_csv(&format!("{HEADER}\n{text}"), "test.csv").expect("parses")
    }

    fn b0_names() -> Vec<String> {
        let mut v = vec!["stem".to_string()];
        v.extend((0..16).map(|i| format!("blocks_{i}")));
        v.push("head".into());
        v
    }

    #[test]
    fn stage_times_spread_over_their_blocks_by_macs_and_sum_to_the_stage() {
        let csv: String = EFFICIENTNET_B0
            .iter()
            .filter(|s| !matches!(s.0, "stage7" | "head"))
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "efficientnet-b0,T4,server-gpu,pt,fp32,1,{},{},x\n",
                    s.0,
                    i + 1
                )
            })
            .collect();
        let r = rows(&csv);
        let picked: Vec<&PublishedRow> = r.iter().collect();
        let names = b0_names();
        let macs: Vec<usize> = (0..names.len()).map(|i| 100 * (i + 1)).collect();
        let (t, note) = block_seconds("efficientnet-b0", &names, &macs, &picked).expect("maps");
        assert!(note.contains("by MACs"));
        // Each stage's blocks sum to its figure; within a stage, time follows MACs.
        for (i, s) in EFFICIENTNET_B0
            .iter()
            .filter(|s| !matches!(s.0, "stage7" | "head"))
            .enumerate()
        {
            let a = names.iter().position(|n| n == s.1).expect("block");
            let b = names.iter().position(|n| n == s.2).expect("block");
            let sum: f64 = t[a..=b].iter().sum();
            assert!(
                (sum - (i + 1) as f64 * 1e-3).abs() < ROUNDING,
                "stage {}",
                s.0
            );
            for j in a..b {
                let ratio = t[j + 1] / t[j];
                assert!(close(&[ratio], &[macs[j + 1] as f64 / macs[j] as f64]));
            }
        }
    }

    #[test]
    fn a_whole_figure_rescales_the_stages_to_the_end_to_end_total() {
        let r = rows(
            "mobilenet-v2,P4,device-gpu,tfl,fp32,1,stem,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage1,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage2,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage3,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage4,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage5,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage6,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,stage7,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,head,1,x\n\
             mobilenet-v2,P4,device-gpu,tfl,fp32,1,whole,18,x\n",
        );
        let picked: Vec<&PublishedRow> = r.iter().collect();
        let mut names = vec!["stem".to_string()];
        names.extend((0..17).map(|i| format!("blocks_{i}")));
        names.push("head".into());
        let macs = vec![1; names.len()];
        let (t, _) = block_seconds("mobilenet-v2", &names, &macs, &picked).expect("maps");
        assert!(close(&[t.iter().sum::<f64>()], &[18e-3]));
        // stem (one block) had 1 of 9 ms: 2 of 18 after scaling.
        assert!(close(&[t[0]], &[2e-3]));
    }

    #[test]
    fn a_whole_only_figure_spreads_over_every_block_by_macs() {
        let r = rows("efficientnet-lite0,Pixel 4,device-gpu,tfl,fp32,1,whole,9.0,x\n");
        let picked: Vec<&PublishedRow> = r.iter().collect();
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let (t, _) =
            block_seconds("efficientnet-lite0", &names, &[1, 0, 2], &picked).expect("maps");
        assert!(close(&t, &[3e-3, 0.0, 6e-3]), "{t:?}");
    }

    #[test]
    fn every_stage_map_covers_the_committed_models_blocks_once() {
        for (m, n) in [("efficientnet-b0", 18), ("mobilenet-v2", 19)] {
            let map = stage_map(m).expect("known");
            let total: usize = map
                .iter()
                .filter(|s| s.0 != "stage7+head")
                .map(|s| {
                    let idx = |b: &str| match b {
                        "stem" => 0,
                        "head" => n - 1,
                        b => 1 + b["blocks_".len()..].parse::<usize>().expect("index"),
                    };
                    idx(s.2) - idx(s.1) + 1
                })
                .sum();
            assert_eq!(total, n, "{m}");
        }
    }

    #[test]
    fn missing_columns_are_named() {
        let e = parse_csv("model,hardware,stage,ms\nx,y,whole,1\n", "p.csv").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("kind") && msg.contains("batch") && msg.contains("source"),
            "{msg}"
        );
        assert!(matches!(e, PublishedError::MissingColumns { .. }));
    }

    #[test]
    fn bad_numbers_name_the_line() {
        let e =
            parse_csv(&format!("{HEADER}\nm,h,k,f,fp32,1,whole,fast,s\n"), "p.csv").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_csv(&format!("{HEADER}\nm,h,k,f,fp32,1,whole\n"), "p.csv").unwrap_err();
        assert!(e.to_string().contains("7 fields"), "{e}");
    }

    #[test]
    fn unknown_hardware_lists_what_exists() {
        let r = rows(
            "efficientnet-b0,NVIDIA T4,server-gpu,pt,fp32,1,whole,8.9,x\n\
             efficientnet-b0,NVIDIA A10G,server-gpu,pt,fp32,1,whole,7.1,x\n",
        );
        let sel = |h: &str| Selection {
            hardware: h.into(),
            ..Selection::default()
        };
        let e = select(&r, "efficientnet-b0", &sel("H100")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("NVIDIA T4") && msg.contains("NVIDIA A10G"),
            "{msg}"
        );
        let e = select(&r, "efficientnet-b0", &sel("nvidia")).unwrap_err();
        assert!(matches!(e, PublishedError::Ambiguous { .. }), "{e}");
        let e = select(&r, "resnet50", &sel("t4")).unwrap_err();
        assert!(e.to_string().contains("efficientnet-b0"), "{e}");
        assert_eq!(
            select(&r, "efficientnet_b0", &sel("t4"))
                .expect("one")
                .len(),
            1
        );
    }

    #[test]
    fn the_batch_curve_interpolates_between_measured_sizes() {
        let c = BatchCurve {
            batches: vec![1, 2, 4],
            ratio: vec![1.0, 1.5, 2.5],
        };
        assert_eq!(c.at(1), 1.0);
        assert_eq!(c.at(3), 2.0);
        assert_eq!(c.at(4), 2.5);
        assert_eq!(c.at(6), 3.5);
    }
}
