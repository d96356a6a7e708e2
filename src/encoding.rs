//! Encodings of split tensors, the one vocabulary shared by the plans, the wire, the scheduler and
//! the reports: `FP32` (as is), `FP16` (the `half` crate's IEEE binary16, round to nearest even)
//! and `INT8` (per-tensor affine quantisation with a scale and a zero point).
//!
//! The plain-Rust [`encode_cpu`] / [`decode_cpu`] are the reference of `shaders/quant.wgsl` and the
//! CPU backend's codec. Bytes are little-endian, as KServe's binary tensor data extension expects.

use crate::tensor::Tensor;
use thiserror::Error;

/// Errors encoding, decoding or naming a split tensor.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// An encoding name that is not `FP32`, `FP16` or `INT8`.
    #[error("unknown tensor encoding '{0}' (expected FP32, FP16 or INT8)")]
    UnknownEncoding(String),
    /// The byte count does not match the shape and encoding.
    #[error("{encoding} tensor of shape {shape:?} needs {expected} bytes, got {got}")]
    Length {
        /// The encoding.
        encoding: &'static str,
        /// The claimed shape.
        shape: Vec<usize>,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// INT8 parameters that cannot be right.
    #[error("INT8 needs a finite positive scale and a zero point in -128..=127, got scale {scale} and zero point {zero_point}")]
    BadInt8Params {
        /// The scale given.
        scale: f32,
        /// The zero point given.
        zero_point: i64,
    },
    /// INT8 data without its scale and zero point.
    #[error("INT8 data needs a scale and a zero point")]
    MissingInt8Params,
}

/// How a split tensor travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// 4 bytes per value, exact.
    Fp32,
    /// 2 bytes per value (IEEE binary16).
    Fp16,
    /// 1 byte per value, affine per-tensor quantisation.
    Int8,
}

impl Encoding {
    /// Every encoding, widest first.
    pub const ALL: [Encoding; 3] = [Encoding::Fp32, Encoding::Fp16, Encoding::Int8];

    /// The KServe v2 datatype name (`FP32`, `FP16`, `INT8`).
    pub fn datatype(self) -> &'static str {
        match self {
            Encoding::Fp32 => "FP32",
            Encoding::Fp16 => "FP16",
            Encoding::Int8 => "INT8",
        }
    }

    /// Parses a datatype or CLI name, case-insensitively (`fp32`, `FP16`, `int8`).
    pub fn parse(name: &str) -> Result<Self, EncodingError> {
        match name.to_ascii_uppercase().as_str() {
            "FP32" => Ok(Encoding::Fp32),
            "FP16" => Ok(Encoding::Fp16),
            "INT8" => Ok(Encoding::Int8),
            _ => Err(EncodingError::UnknownEncoding(name.to_string())),
        }
    }

    /// Bytes on the wire for `elems` values (INT8 adds 8 bytes of scale and zero point).
    pub fn bytes(self, elems: usize) -> u64 {
        let payload = (elems * self.bytes_per_value()) as u64;
        match self {
            Encoding::Int8 => payload + 8,
            _ => payload,
        }
    }

    /// Bytes per value.
    pub fn bytes_per_value(self) -> usize {
        match self {
            Encoding::Fp32 => 4,
            Encoding::Fp16 => 2,
            Encoding::Int8 => 1,
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Fp32 => "fp32",
            Encoding::Fp16 => "fp16",
            Encoding::Int8 => "int8",
        })
    }
}

/// Per-tensor INT8 quantisation: `value = (code - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Int8Params {
    /// Step between codes.
    pub scale: f32,
    /// The code of 0.0, in `-128..=127`.
    pub zero_point: i32,
}

impl Int8Params {
    /// Checks values received from a peer.
    pub fn checked(scale: f64, zero_point: i64) -> Result<Self, EncodingError> {
        let s = scale as f32;
        if !(s.is_finite() && s > 0.0 && (-128..=127).contains(&zero_point)) {
            return Err(EncodingError::BadInt8Params {
                scale: s,
                zero_point,
            });
        }
        Ok(Self {
            scale: s,
            zero_point: zero_point as i32,
        })
    }

    /// The parameters covering `data` (widened to include 0), computed as `int8_range` in
    /// `quant.wgsl` does.
    pub fn for_data(data: &[f32]) -> Self {
        let (lo, hi) = data
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let mut scale = (hi - lo) / 255.0;
        if scale.is_nan() || scale <= 0.0 {
            scale = 1.0;
        }
        let zero_point = (-128.0 - lo / scale).round_ties_even().clamp(-128.0, 127.0) as i32;
        Self { scale, zero_point }
    }

    /// The code of one value.
    pub fn quantize(self, v: f32) -> i8 {
        ((v / self.scale).round_ties_even() + self.zero_point as f32).clamp(-128.0, 127.0) as i8
    }

    /// The value of one code.
    pub fn dequantize(self, code: i8) -> f32 {
        (code as f32 - self.zero_point as f32) * self.scale
    }
}

/// A split tensor ready for the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// The encoding of `bytes`.
    pub encoding: Encoding,
    /// Tensor shape, batch first.
    pub shape: Vec<usize>,
    /// Little-endian payload.
    pub bytes: Vec<u8>,
    /// Scale and zero point for `INT8`.
    pub int8: Option<Int8Params>,
}

impl Encoded {
    /// Wraps received bytes, checking their length against the shape.
    pub fn new(
        encoding: Encoding,
        shape: Vec<usize>,
        bytes: Vec<u8>,
        int8: Option<Int8Params>,
    ) -> Result<Self, EncodingError> {
        let expected = shape.iter().product::<usize>() * encoding.bytes_per_value();
        if bytes.len() != expected {
            return Err(EncodingError::Length {
                encoding: encoding.datatype(),
                shape,
                expected,
                got: bytes.len(),
            });
        }
        if encoding == Encoding::Int8 && int8.is_none() {
            return Err(EncodingError::MissingInt8Params);
        }
        Ok(Self {
            encoding,
            shape,
            bytes,
            int8,
        })
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The CPU reference encoder (the oracle for `quant.wgsl`).
pub fn encode_cpu(t: &Tensor, encoding: Encoding) -> Encoded {
    let data = t.data();
    let (bytes, int8) = match encoding {
        Encoding::Fp32 => (bytemuck::cast_slice(data).to_vec(), None),
        Encoding::Fp16 => (
            data.iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            None,
        ),
        Encoding::Int8 => {
            let p = Int8Params::for_data(data);
            (data.iter().map(|&v| p.quantize(v) as u8).collect(), Some(p))
        }
    };
    Encoded {
        encoding,
        shape: t.shape().to_vec(),
        bytes,
        int8,
    }
}

/// The CPU reference decoder.
pub fn decode_cpu(e: &Encoded) -> Result<Tensor, EncodingError> {
    let expected = e.len() * e.encoding.bytes_per_value();
    if e.bytes.len() != expected {
        return Err(EncodingError::Length {
            encoding: e.encoding.datatype(),
            shape: e.shape.clone(),
            expected,
            got: e.bytes.len(),
        });
    }
    let data: Vec<f32> = match e.encoding {
        Encoding::Fp32 => e
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Encoding::Fp16 => e
            .bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Encoding::Int8 => {
            let p = e.int8.ok_or(EncodingError::MissingInt8Params)?;
            e.bytes.iter().map(|&b| p.dequantize(b as i8)).collect()
        }
    };
    Ok(Tensor::new(e.shape.clone(), data).expect("length checked against the shape"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_round_trip_error_is_at_most_half_a_step() {
        let data: Vec<f32> = (0..101).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let t = Tensor::new(vec![1, 101], data.clone()).expect("shape");
        let e = encode_cpu(&t, Encoding::Int8);
        let p = e.int8.expect("int8 params");
        let back = decode_cpu(&e).expect("decode");
        for (a, b) in data.iter().zip(back.data()) {
            assert!((a - b).abs() <= p.scale * 0.5 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn fp16_round_trip_keeps_eleven_significant_bits() {
        let data: Vec<f32> = (0..33).map(|i| i as f32 * 0.123 - 2.0).collect();
        let t = Tensor::new(vec![33], data.clone()).expect("shape");
        let back = decode_cpu(&encode_cpu(&t, Encoding::Fp16)).expect("decode");
        for (a, b) in data.iter().zip(back.data()) {
            assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn wrong_length_and_bad_int8_params_are_refused() {
        let err = Encoded::new(Encoding::Fp16, vec![2, 3], vec![0; 11], None).unwrap_err();
        assert!(err.to_string().contains("needs 12 bytes, got 11"), "{err}");
        assert!(Int8Params::checked(0.0, 0).is_err());
        assert!(Int8Params::checked(0.1, 200).is_err());
        assert!(Encoding::parse("bf16").is_err());
    }
}
