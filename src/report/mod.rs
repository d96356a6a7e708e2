//! Reports: SVG plots (line charts and heatmaps) through `plotters`' SVG backend.

pub mod plot;
