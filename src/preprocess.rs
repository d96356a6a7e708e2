//! Image preprocessing as an image model was trained with, carried in its manifest: decode,
//! resize the shorter side, centre-crop to the input size, scale, normalise per channel and
//! lay out as `[3, H, W]`. And the top-k reading of class scores against a labels file.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How a raw image becomes a model input. Each pixel value `p` (0..=255, in `channels` order)
/// becomes `(p · scale - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// The image's shorter side is resized to this many pixels (aspect kept) before the centre
    /// crop to the model's input size; absent: resized to the input size without crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<u32>,
    /// Resampling filter of the resize.
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Multiplies raw pixel values first (`1/255` for models trained on 0..1 inputs).
    #[serde(default = "one")]
    pub scale: f32,
    /// Subtracted per channel after scaling.
    pub mean: [f32; 3],
    /// Divides per channel after the mean is subtracted.
    pub std: [f32; 3],
    /// Channel order of the input tensor.
    #[serde(default)]
    pub channels: ChannelOrder,
    /// Class names, one per line, in a file beside `model.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

fn one() -> f32 {
    1.0
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear (triangle filter).
    #[default]
    Bilinear,
    /// Bicubic (Catmull-Rom).
    Bicubic,
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue.
    #[default]
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// Errors preparing an image or reading labels.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The image could not be read or decoded.
    #[error("cannot read image {path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The model does not take `[3, H, W]` images.
    #[error("the model's input is {0:?}, not an image [3, height, width]")]
    NotAnImageModel(Vec<usize>),
    /// A preprocessing parameter is unusable.
    #[error("invalid preprocessing: {0}")]
    Invalid(String),
    /// The labels file could not be read or does not match the classes.
    #[error("labels {path}: {reason}")]
    Labels {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Preprocess {
    /// Checks the parameters: positive resize, non-zero std, finite values.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |what: String| Err(PreprocessError::Invalid(what));
        if self.resize == Some(0) {
            return bad("resize must be positive".into());
        }
        if self.std.contains(&0.0) {
            return bad(format!("std {:?} has a zero", self.std));
        }
        let all = self.mean.iter().chain(&self.std).chain([&self.scale]);
        if !all.clone().all(|v| v.is_finite()) {
            return bad("scale, mean and std must be finite".into());
        }
        Ok(())
    }

    /// Decodes the image at `path` and turns it into a `[3, H, W]` input for a model whose
    /// per-sample input shape is `input`.
    pub fn load(&self, path: &Path, input: &[usize]) -> Result<Vec<f32>, PreprocessError> {
        let img = image::open(path).map_err(|e| PreprocessError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        self.apply(&img.to_rgb8(), input)
    }

    /// Resizes, centre-crops and normalises an RGB image into a `[3, H, W]` input.
    pub fn apply(
        &self,
        img: &image::RgbImage,
        input: &[usize],
    ) -> Result<Vec<f32>, PreprocessError> {
        let (resized, w, h) = self.resized(img, input)?;
        let (x0, y0) = ((resized.width() - w) / 2, (resized.height() - h) / 2);
        Ok(self.normalised(&image::imageops::crop_imm(&resized, x0, y0, w, h).to_image()))
    }

    /// The ten standard evaluation views of an image (torchvision's `TenCrop`): after the
    /// shorter-side resize, the four corner crops and the centre crop, each also mirrored
    /// left-right. More real inputs from a handful of photos, each one a plausible framing.
    /// Without `resize` the five crops coincide, so only the image and its mirror are returned.
    pub fn ten_crop(
        &self,
        img: &image::RgbImage,
        input: &[usize],
    ) -> Result<Vec<Vec<f32>>, PreprocessError> {
        let (resized, w, h) = self.resized(img, input)?;
        let (rw, rh) = (resized.width(), resized.height());
        let mut origins = vec![((rw - w) / 2, (rh - h) / 2)];
        if self.resize.is_some() {
            origins.extend([(0, 0), (rw - w, 0), (0, rh - h), (rw - w, rh - h)]);
        }
        let mut views = Vec::new();
        for (x0, y0) in origins {
            let crop = image::imageops::crop_imm(&resized, x0, y0, w, h).to_image();
            views.push(self.normalised(&crop));
            views.push(self.normalised(&image::imageops::flip_horizontal(&crop)));
        }
        Ok(views)
    }

    /// The image resized as the model was trained (shorter side to `resize`, or straight to the
    /// input size), with the crop size `(w, h)` it must be cut to.
    fn resized(
        &self,
        img: &image::RgbImage,
        input: &[usize],
    ) -> Result<(image::RgbImage, u32, u32), PreprocessError> {
        self.validate()?;
        let &[3, h, w] = input else {
            return Err(PreprocessError::NotAnImageModel(input.to_vec()));
        };
        let (h, w) = (h as u32, w as u32);
        if img.width() == 0 || img.height() == 0 {
            return Err(PreprocessError::Invalid("the image is empty".into()));
        }
        let filter = match self.interpolation {
            Interpolation::Nearest => image::imageops::FilterType::Nearest,
            Interpolation::Bilinear => image::imageops::FilterType::Triangle,
            Interpolation::Bicubic => image::imageops::FilterType::CatmullRom,
        };
        let resized = match self.resize {
            None => image::imageops::resize(img, w, h, filter),
            Some(short) => {
                let (iw, ih) = (img.width() as f64, img.height() as f64);
                let k = short as f64 / iw.min(ih);
                let (rw, rh) = (
                    ((iw * k).round() as u32).max(w),
                    ((ih * k).round() as u32).max(h),
                );
                image::imageops::resize(img, rw, rh, filter)
            }
        };
        Ok((resized, w, h))
    }

    /// Scales, normalises and lays out a crop of the input size as `[3, H, W]`.
    fn normalised(&self, crop: &image::RgbImage) -> Vec<f32> {
        let plane = (crop.width() * crop.height()) as usize;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, px) in crop.pixels().enumerate() {
            for c in 0..3 {
                let src = match self.channels {
                    ChannelOrder::Rgb => c,
                    ChannelOrder::Bgr => 2 - c,
                };
                out[c * plane + i] =
                    (f32::from(px.0[src]) * self.scale - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// The photos (`.jpg`, `.jpeg`, `.png`) in `dir`, sorted by name; an error when there are none.
pub fn photos_in(dir: &Path) -> Result<Vec<PathBuf>, PreprocessError> {
    let err = |reason: String| PreprocessError::Image {
        path: dir.to_path_buf(),
        reason,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| err(e.to_string()))? {
        let path = entry.map_err(|e| err(e.to_string()))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ["jpg", "jpeg", "png"].contains(&ext.to_ascii_lowercase().as_str()) {
            out.push(path);
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(err("the folder holds no .jpg, .jpeg or .png files".into()));
    }
    Ok(out)
}

/// Reads a labels file (one class name per line) and checks it names `classes` classes.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<String>, PreprocessError> {
    let err = |reason: String| PreprocessError::Labels {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let labels: Vec<String> = match labels.last() {
        Some(last) if last.is_empty() => labels[..labels.len() - 1].to_vec(),
        _ => labels,
    };
    if labels.len() != classes {
        return Err(err(format!(
            "{} lines, but the model has {classes} classes",
            labels.len()
        )));
    }
    Ok(labels)
}

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Class index.
    pub class: usize,
    /// Class name (the index when the model has no labels).
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// The `k` most probable classes of one sample's logits, most probable first.
pub fn top_k(logits: &[f32], k: usize, labels: Option<&[String]>) -> Vec<Ranked> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&v| (v - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class| Ranked {
            class,
            label: labels
                .and_then(|l| l.get(class).cloned())
                .unwrap_or_else(|| class.to_string()),
            probability: (logits[class] - max).exp() / sum,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inception() -> Preprocess {
        Preprocess {
            resize: Some(4),
            interpolation: Interpolation::Nearest,
            scale: 1.0,
            mean: [127.0; 3],
            std: [128.0; 3],
            channels: ChannelOrder::Rgb,
            labels: None,
        }
    }

    #[test]
    fn the_centre_crop_keeps_the_middle_and_normalises() {
        // 8x4 image: the left half red 255, the right half blue 255; resize 4 → 8x4 stays,
        // the 2x2 centre crop straddles the middle column.
        let img = image::RgbImage::from_fn(8, 4, |x, _| {
            if x < 4 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let x = inception().apply(&img, &[3, 2, 2]).expect("valid");
        let (hi, lo) = (128.0 / 128.0, -127.0 / 128.0);
        assert_eq!(&x[0..4], &[hi, lo, hi, lo]); // red: left column only
        assert_eq!(&x[4..8], &[lo; 4]); // green: none
        assert_eq!(&x[8..12], &[lo, hi, lo, hi]); // blue: right column only
        let bgr = Preprocess {
            channels: ChannelOrder::Bgr,
            ..inception()
        };
        let y = bgr.apply(&img, &[3, 2, 2]).expect("valid");
        assert_eq!(&y[0..4], &x[8..12]);
    }

    #[test]
    fn ten_crop_gives_corners_centre_and_their_mirrors() {
        // 8x4 image whose pixel red value is its x coordinate; resize 4 keeps 8x4; 2x2 crops.
        let img = image::RgbImage::from_fn(8, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        let p = Preprocess {
            mean: [0.0; 3],
            std: [1.0; 3],
            ..inception()
        };
        let views = p.ten_crop(&img, &[3, 2, 2]).expect("valid");
        assert_eq!(views.len(), 10);
        assert_eq!(views[0], p.apply(&img, &[3, 2, 2]).expect("valid"));
        let red_row = |v: &Vec<f32>| [v[0], v[1]];
        // centre, then top-left, top-right, bottom-left, bottom-right; each followed by its mirror
        let want = [[3.0, 4.0], [0.0, 1.0], [6.0, 7.0], [0.0, 1.0], [6.0, 7.0]];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(red_row(&views[2 * i]), *w, "view {}", 2 * i);
            assert_eq!(
                red_row(&views[2 * i + 1]),
                [w[1], w[0]],
                "mirror {}",
                2 * i + 1
            );
        }
        let no_resize = Preprocess { resize: None, ..p };
        assert_eq!(
            no_resize.ten_crop(&img, &[3, 2, 2]).expect("valid").len(),
            2
        );
    }

    #[test]
    fn bad_parameters_and_shapes_are_refused() {
        let img = image::RgbImage::new(4, 4);
        let zero_std = Preprocess {
            std: [1.0, 0.0, 1.0],
            ..inception()
        };
        assert!(zero_std.apply(&img, &[3, 2, 2]).is_err());
        assert!(matches!(
            inception().apply(&img, &[784]),
            Err(PreprocessError::NotAnImageModel(_))
        ));
    }

    #[test]
    fn top_k_orders_by_probability() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = top_k(&[0.0, 2.0, 1.0], 2, Some(&labels));
        assert_eq!(r[0].label, "b");
        assert_eq!(r[1].class, 2);
        assert!(r[0].probability > r[1].probability);
        let total: f32 = top_k(&[0.0, 2.0, 1.0], 3, None)
            .iter()
            .map(|r| r.probability)
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
