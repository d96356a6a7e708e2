//! Input data: MNIST IDX files (plain or gzipped) and image files.

use crate::tensor::Tensor;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors reading datasets.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Neither `name` nor `name.gz` exists in the folder.
    #[error("{dir} holds neither {name} nor {name}.gz; point --data at a folder with the MNIST IDX files (e.g. models/data/mnist)")]
    Missing {
        /// The folder.
        dir: PathBuf,
        /// The base file name.
        name: String,
    },
    /// The file is not a valid IDX file.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
}

/// A labelled image set: `images` is `[n, 1, rows, cols]` with pixels scaled to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Images, NCHW.
    pub images: Tensor,
    /// Class labels.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Samples `range` reshaped to the per-sample shape a model expects (same element count;
    /// a larger flat shape is zero-padded, e.g. 784 → 800 for MLPs).
    pub fn batch(&self, range: std::ops::Range<usize>, sample_shape: &[usize]) -> Option<Tensor> {
        let per = self.images.sample_len();
        let want: usize = sample_shape.iter().product();
        if want < per || (want != per && sample_shape.len() != 1) {
            return None;
        }
        let n = range.len();
        let mut data = vec![0.0f32; n * want];
        for (i, s) in range.enumerate() {
            data[i * want..i * want + per].copy_from_slice(self.images.sample(s));
        }
        let mut shape = vec![n];
        shape.extend_from_slice(sample_shape);
        Tensor::new(shape, data).ok()
    }
}

fn read_maybe_gz(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    if plain.exists() {
        return Ok((plain.clone(), std::fs::read(&plain).map_err(io(&plain))?));
    }
    if gz.exists() {
        let raw = std::fs::read(&gz).map_err(io(&gz))?;
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Format {
                path: gz.clone(),
                reason: format!("not a valid gzip stream: {e}"),
            })?;
        return Ok((gz, out));
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })
}

/// Parses an IDX file with u8 data and the given magic; returns the dimensions and the data.
pub fn parse_idx(
    path: &Path,
    bytes: &[u8],
    magic: u32,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let fail = |reason: String| DataError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4 {
        return Err(fail("truncated: shorter than the 4-byte IDX magic".into()));
    }
    let got = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if got != magic {
        return Err(fail(format!(
            "wrong IDX magic {got:#010x}, expected {magic:#010x} (u8 data with {} dimensions)",
            magic & 0xff
        )));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(fail(format!(
            "truncated: header needs {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fail(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() - header != n {
        return Err(fail(format!(
            "dimensions {dims:?} need {n} data bytes but the file has {} (truncated or corrupt)",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Which half of MNIST to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train-*-ubyte`.
    Train,
    /// `t10k-*-ubyte`.
    Test,
}

/// Reads MNIST images and labels of `split` from `dir` (files plain or `.gz`).
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let (ipath, ibytes) = read_maybe_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let (lpath, lbytes) = read_maybe_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (idims, pixels) = parse_idx(&ipath, &ibytes, 0x0000_0803)?;
    let (ldims, labels) = parse_idx(&lpath, &lbytes, 0x0000_0801)?;
    if idims[0] != ldims[0] {
        return Err(DataError::Format {
            path: lpath,
            reason: format!("{} labels for {} images", ldims[0], idims[0]),
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l > 9) {
        return Err(DataError::Format {
            path: lpath,
            reason: format!("label {bad} is not a digit 0-9"),
        });
    }
    let data = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let images = Tensor::new(vec![idims[0], 1, idims[1], idims[2]], data).map_err(|e| {
        DataError::Format {
            path: ipath,
            reason: e.to_string(),
        }
    })?;
    Ok(Dataset { images, labels })
}

/// Loads an image file (PNG/JPEG), converts it to `channels` (1 = luma, 3 = RGB), resizes it
/// to `height × width` and returns `[channels, height, width]` values in `[0, 1]`.
pub fn load_image(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<f32>, DataError> {
    let img = image::open(path).map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let img = img.resize_exact(
        width as u32,
        height as u32,
        image::imageops::FilterType::Triangle,
    );
    let mut out = vec![0.0f32; channels * height * width];
    if channels == 1 {
        let g = img.to_luma8();
        for (i, p) in g.pixels().enumerate() {
            out[i] = p.0[0] as f32 / 255.0;
        }
    } else {
        let rgb = img.to_rgb8();
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3.min(channels) {
                out[c * height * width + i] = p.0[c] as f32 / 255.0;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_with_wrong_magic_is_rejected() {
        let err = parse_idx(Path::new("x"), &[0, 0, 8, 1, 0, 0, 0, 1, 7], 0x803).unwrap_err();
        assert!(err.to_string().contains("wrong IDX magic"), "{err}");
    }

    #[test]
    fn truncated_idx_is_rejected() {
        let err = parse_idx(Path::new("x"), &[0, 0, 8, 1, 0, 0, 0, 3, 7], 0x801).unwrap_err();
        assert!(err.to_string().contains("need 3 data bytes"), "{err}");
    }
}
