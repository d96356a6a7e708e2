//! NumPy `.npy` files as batch-first [`Tensor`]s, for `edgecut infer`: `float32` in and out;
//! `float64` and `uint8` inputs are converted. Sizes are checked against the file before any
//! allocation.

use crate::model::{checked_elems, MAX_TENSOR_ELEMS};
use crate::tensor::Tensor;
use npyz::WriterBuilder;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors reading or writing `.npy` files.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not an array edgecut can take.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a C-order `float32` (or `float64`, `uint8`) array of rank >= 1.
pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let invalid = |reason: String| NpyError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| invalid(format!("not a NumPy .npy file: {e}")))?;
    if file.order() != npyz::Order::C {
        return Err(invalid(
            "the array is in Fortran order; save it C-contiguous (np.ascontiguousarray)".into(),
        ));
    }
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    let n = checked_elems(&shape)
        .filter(|&n| n <= MAX_TENSOR_ELEMS)
        .ok_or_else(|| {
            invalid(format!(
                "shape {shape:?} holds more than {MAX_TENSOR_ELEMS} elements"
            ))
        })?;
    if shape.len() < 2 || n == 0 {
        return Err(invalid(format!(
            "shape {shape:?}: edgecut takes a non-empty batch-first array [batch, ...]"
        )));
    }
    let dtype = match file.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(invalid(format!(
                "dtype {other:?} is not a plain number type"
            )))
        }
    };
    let width = match dtype.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        "|u1" | "<u1" => 1,
        other => {
            return Err(invalid(format!(
                "dtype '{other}' is not supported; save float32 (also read: float64, uint8)"
            )))
        }
    };
    if n.saturating_mul(width) > bytes.len() {
        return Err(invalid(format!(
            "shape {shape:?} needs {} bytes but the file holds {}",
            n * width,
            bytes.len()
        )));
    }
    let read_err = |e: std::io::Error| invalid(format!("reading the data: {e}"));
    let data: Vec<f32> = match width {
        4 => file.into_vec::<f32>().map_err(read_err)?,
        8 => file
            .into_vec::<f64>()
            .map_err(read_err)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        _ => file
            .into_vec::<u8>()
            .map_err(read_err)?
            .into_iter()
            .map(f32::from)
            .collect(),
    };
    Tensor::new(shape, data).map_err(|e| invalid(e.to_string()))
}

/// Writes `tensor` as a C-order `float32` array.
pub fn write(path: &Path, tensor: &Tensor) -> Result<(), NpyError> {
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let file = std::fs::File::create(path).map_err(io)?;
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    writer.extend(tensor.data().iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_round_trip_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("edgecut-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("x.npy");
        let t = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).expect("tensor");
        write(&path, &t).expect("writes");
        assert_eq!(read(&path).expect("reads"), t);
        let bad = dir.join("bad.npy");
        std::fs::write(&bad, b"\x93NUMPY garbage").expect("write");
        assert!(read(&bad).unwrap_err().to_string().contains("not a NumPy"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
