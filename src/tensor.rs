//! Host tensors: a shape (batch first) and row-major `f32` data.

use thiserror::Error;

/// Errors about tensor shapes and sizes.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorError {
    /// The data length does not match the product of the shape.
    #[error("tensor of shape {shape:?} needs {expected} values but {actual} were given")]
    LengthMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape implies.
        expected: usize,
        /// Elements actually supplied.
        actual: usize,
    },
    /// A tensor did not have the shape an operation expects.
    #[error("expected a tensor of shape {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// The shape that was expected.
        expected: Vec<usize>,
        /// The shape that was found.
        actual: Vec<usize>,
    },
}

/// A dense host tensor in row-major order. Activations use `[batch, features...]`
/// with NCHW layout for images.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that `data` has exactly as many values as `shape` implies.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, TensorError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(TensorError::LengthMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// The shape, batch first for activations.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable access to the values.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the tensor, returning its values.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The leading (batch) dimension, or 1 for a scalar.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per sample (all dimensions but the first).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values of sample `i` (a row of the batch).
    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// Reinterprets the data with a new shape of the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self, TensorError> {
        Self::new(shape, self.data)
    }

    /// Fails unless the tensor's per-sample shape equals `sample_shape`.
    pub fn check_sample_shape(&self, sample_shape: &[usize]) -> Result<(), TensorError> {
        if self.shape.len() != sample_shape.len() + 1 || &self.shape[1..] != sample_shape {
            let mut expected = vec![self.batch()];
            expected.extend_from_slice(sample_shape);
            return Err(TensorError::ShapeMismatch {
                expected,
                actual: self.shape.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_rejects_data_of_the_wrong_length() {
        let err = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6 values but 5"));
    }

    #[test]
    fn sample_returns_one_row_of_the_batch() {
        let t = Tensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.sample(1), &[3.0, 4.0]);
        assert!(t.check_sample_shape(&[2]).is_ok());
        assert!(t.check_sample_shape(&[3]).is_err());
    }
}
