//! What `edgecut info` reports about a model: blocks, shapes, complexity, natural bottlenecks and
//! cut candidates, as typed rows whose field names are the command's JSON keys.

use crate::model::Model;
use serde::Serialize;

/// One block of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockInfo {
    /// Block name.
    pub name: String,
    /// Output shape of one sample.
    pub output_shape: Vec<usize>,
    /// Values in the output of one sample.
    pub output_elems: usize,
    /// Output values over input values.
    pub output_ratio: f64,
    /// FP32 bytes of the output of one sample.
    pub bytes: usize,
    /// Multiply-accumulates.
    pub macs: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Structurally present weights.
    pub nonzero_weights: usize,
    /// Whether the output is smaller than everything before it.
    pub natural_bottleneck: bool,
    /// Whether a cut after this block is a candidate of the scheduler.
    pub cut_candidate: bool,
}

/// One exit head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExitInfo {
    /// Exit name.
    pub name: String,
    /// The block it follows.
    pub after_block: String,
    /// Multiply-accumulates of the head.
    pub macs: usize,
    /// Trainable parameters of the head.
    pub params: usize,
}

/// Everything `edgecut info` says about a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Content hash.
    pub hash: String,
    /// Whether the weights are drawn from the manifest's seed (untrained).
    pub seeded: bool,
    /// Input shape of one sample.
    pub input: Vec<usize>,
    /// Output classes.
    pub classes: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Structurally present weights.
    pub nonzero_weights: usize,
    /// Multiply-accumulates of every block and exit head.
    pub macs: usize,
    /// Blocks in order.
    pub blocks: Vec<BlockInfo>,
    /// Exit heads.
    pub exits: Vec<ExitInfo>,
    /// Names of the blocks after which the scheduler considers cutting.
    pub cut_candidates: Vec<String>,
}

impl ModelInfo {
    /// Describes `model`.
    pub fn of(model: &Model) -> Self {
        let totals = model.totals();
        let candidates = model.cut_candidates();
        let input = model.input_elems();
        let blocks = model
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| BlockInfo {
                name: b.name.clone(),
                output_shape: b.output_shape.clone(),
                output_elems: b.output_elems(),
                output_ratio: b.output_elems() as f64 / input as f64,
                bytes: b.output_elems() * 4,
                macs: b.stats.macs,
                params: b.stats.params,
                nonzero_weights: b.stats.nonzero_weights,
                natural_bottleneck: model.is_natural_bottleneck(i),
                cut_candidate: candidates.contains(&i),
            })
            .collect();
        let exits = model
            .exits
            .iter()
            .map(|e| ExitInfo {
                name: e.name.clone(),
                after_block: model.blocks[e.after_block].name.clone(),
                macs: e.stats.macs,
                params: e.stats.params,
            })
            .collect();
        Self {
            name: model.name().to_string(),
            hash: model.hash.clone(),
            seeded: model.seeded,
            input: model.input_shape().to_vec(),
            classes: model.classes(),
            params: totals.params,
            nonzero_weights: totals.nonzero_weights,
            macs: totals.macs,
            blocks,
            exits,
            cut_candidates: candidates
                .iter()
                .map(|&i| model.blocks[i].name.clone())
                .collect(),
        }
    }
}

/// The text of `edgecut info`: a header and one line per block and exit.
impl std::fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}  (hash {})",
            self.name,
            &self.hash[..16.min(self.hash.len())]
        )?;
        if self.seeded {
            writeln!(f, "weights: drawn from the manifest's seed (untrained)")?;
        }
        writeln!(
            f,
            "input {:?} ({} elements), {} classes; {} params, {} nonzero weights, {:.3} G MACs",
            self.input,
            self.input.iter().product::<usize>(),
            self.classes,
            self.params,
            self.nonzero_weights,
            self.macs as f64 / 1e9
        )?;
        writeln!(
            f,
            "{:<12} {:>16} {:>10} {:>7} {:>12} {:>10} {:>10}  cut",
            "block", "output", "elements", "ratio", "MACs", "params", "nonzero"
        )?;
        for b in &self.blocks {
            let mark = match (b.cut_candidate, b.natural_bottleneck) {
                (true, _) => "candidate",
                (false, true) => "bottleneck",
                _ => "",
            };
            writeln!(
                f,
                "{:<12} {:>16} {:>10} {:>7.4} {:>12} {:>10} {:>10}  {mark}",
                b.name,
                format!("{:?}", b.output_shape),
                b.output_elems,
                b.output_ratio,
                b.macs,
                b.params,
                b.nonzero_weights
            )?;
        }
        for e in &self.exits {
            writeln!(
                f,
                "exit '{}' after {} ({} MACs)",
                e.name, e.after_block, e.macs
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_of_the_fixture_names_every_block_and_its_documented_keys() {
        let model = crate::fixture::lenet(1).expect("fixture builds");
        let info = ModelInfo::of(&model);
        assert_eq!(info.blocks.len(), model.blocks.len());
        let heads: usize = info.exits.iter().map(|e| e.macs).sum();
        assert_eq!(
            info.macs,
            info.blocks.iter().map(|b| b.macs).sum::<usize>() + heads
        );
        let json = serde_json::to_value(&info).expect("serialises");
        for key in [
            "name",
            "hash",
            "params",
            "nonzero_weights",
            "macs",
            "blocks",
            "exits",
        ] {
            assert!(!json[key].is_null(), "missing {key}");
        }
        for key in [
            "name",
            "output_shape",
            "output_elems",
            "macs",
            "params",
            "nonzero_weights",
            "natural_bottleneck",
        ] {
            assert!(!json["blocks"][0][key].is_null(), "block missing {key}");
        }
    }
}
