//! Wire encodings of split tensors: `FP32` (as is), `FP16` (the `half` crate's IEEE binary16,
//! round to nearest even) and `INT8` (per-tensor affine quantisation with a scale and a zero
//! point). The packing runs on the GPU (`shaders/quant.wgsl`) when a GPU backend is at hand, with
//! the plain-Rust functions here as its reference and as the CPU backend's codec.
//!
//! Bytes on the wire are little-endian, as KServe's binary tensor data extension expects.

pub use crate::encoding::{decode_cpu, encode_cpu, Encoded, Encoding, EncodingError, Int8Params};
use crate::engine::Backend;
use crate::gpu::{self, kernels::Kernel, GpuContext, GpuError, Shader};
use crate::tensor::Tensor;
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;
use thiserror::Error;

/// Errors encoding or decoding a split tensor on a backend.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The tensor or its encoding is invalid.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// A GPU failure while packing.
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// `QuantParams` in `quant.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct QuantParams {
    /// Values.
    pub len: u32,
    /// Packed 32-bit words.
    pub words: u32,
    /// Padding to 16 bytes.
    pub _pad: [u32; 2],
}

/// Encodes and decodes split tensors on a backend: `quant.wgsl` on a GPU, the CPU reference
/// otherwise. `FP32` is a plain copy on both.
#[derive(Debug, Clone)]
pub enum Codec {
    /// The plain-Rust reference.
    Cpu,
    /// `quant.wgsl` on this adapter.
    Gpu(Arc<GpuContext>),
}

impl Codec {
    /// The codec of a backend.
    pub fn for_backend(backend: &Backend) -> Self {
        match backend {
            Backend::Cpu => Codec::Cpu,
            Backend::Gpu(ctx) => Codec::Gpu(ctx.clone()),
        }
    }

    /// Encodes a tensor.
    pub fn encode(&self, t: &Tensor, encoding: Encoding) -> Result<Encoded, WireError> {
        match (self, encoding) {
            (Codec::Cpu, _) | (_, Encoding::Fp32) => Ok(encode_cpu(t, encoding)),
            (Codec::Gpu(ctx), _) => gpu_encode(ctx, t, encoding),
        }
    }

    /// Decodes a received tensor.
    pub fn decode(&self, e: &Encoded) -> Result<Tensor, WireError> {
        match (self, e.encoding) {
            (Codec::Cpu, _) | (_, Encoding::Fp32) => Ok(decode_cpu(e)?),
            (Codec::Gpu(ctx), _) => gpu_decode(ctx, e),
        }
    }
}

fn words_of(len: usize, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Fp32 => len,
        Encoding::Fp16 => len.div_ceil(2),
        Encoding::Int8 => len.div_ceil(4),
    }
}

/// Runs `quant.wgsl` kernels in one submission and reads `read` (buffer, u32 words) back.
fn run_quant(
    ctx: &GpuContext,
    what: &str,
    kernels: &[Kernel],
    reads: &[(&wgpu::Buffer, usize)],
) -> Result<Vec<Vec<u8>>, WireError> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let total: usize = reads.iter().map(|r| r.1).sum();
    let staging = gpu::staging(ctx, &format!("{what}.readback"), (total * 4) as u64);
    let mut enc = gpu::kernels::encode_pass(ctx, what, kernels);
    let mut offset = 0u64;
    for (buf, words) in reads {
        let bytes = (*words * 4) as u64;
        if bytes > 0 {
            enc.copy_buffer_to_buffer(buf, 0, &staging, offset, bytes);
        }
        offset += bytes;
    }
    ctx.queue.submit([enc.finish()]);
    let data = gpu::read_back(ctx, &staging, total)?;
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(GpuError::Failed {
            context: what.to_string(),
            reason: e.to_string(),
        }
        .into());
    }
    let bytes: &[u8] = bytemuck::cast_slice(&data);
    let mut out = Vec::new();
    let mut at = 0;
    for (_, words) in reads {
        out.push(bytes[at..at + words * 4].to_vec());
        at += words * 4;
    }
    Ok(out)
}

fn gpu_encode(ctx: &GpuContext, t: &Tensor, encoding: Encoding) -> Result<Encoded, WireError> {
    let len = t.len();
    let words = words_of(len, encoding);
    let params = QuantParams {
        len: len as u32,
        words: words as u32,
        _pad: [0; 2],
    };
    let x = gpu::upload(ctx, "wire.encode.input", t.data())?;
    let packed = gpu::storage(ctx, "wire.encode.packed", (words * 4) as u64)?;
    let range = gpu::storage(ctx, "wire.encode.range", 16)?;
    let mut bytes = match encoding {
        Encoding::Fp16 => {
            let k = Kernel::new(
                ctx,
                "wire.pack_f16".into(),
                Shader::Quant,
                "pack_f16",
                &[],
                &params,
                &[&x, &range],
                &packed,
                words as u64,
            )?;
            run_quant(ctx, "wire.encode.fp16", &[k], &[(&packed, words)])?.swap_remove(0)
        }
        Encoding::Int8 => {
            let unused = gpu::storage(ctx, "wire.encode.unused", 16)?;
            let find = Kernel::new(
                ctx,
                "wire.int8_range".into(),
                Shader::Quant,
                "int8_range",
                &[],
                &params,
                &[&x, &unused],
                &range,
                crate::gpu::kernels::WORKGROUP as u64,
            )?;
            let quantize = Kernel::new(
                ctx,
                "wire.quantize_int8".into(),
                Shader::Quant,
                "quantize_int8",
                &[],
                &params,
                &[&x, &range],
                &packed,
                words as u64,
            )?;
            let mut out = run_quant(
                ctx,
                "wire.encode.int8",
                &[find, quantize],
                &[(&packed, words), (&range, 4)],
            )?;
            let r = out.pop().expect("two buffers were read back");
            let f =
                |i: usize| f32::from_le_bytes([r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]]);
            let p = Int8Params {
                scale: f(0),
                zero_point: f(1) as i32,
            };
            let mut bytes = out.pop().expect("two buffers were read back");
            bytes.truncate(len);
            return Ok(Encoded {
                encoding,
                shape: t.shape().to_vec(),
                bytes,
                int8: Some(p),
            });
        }
        Encoding::Fp32 => bytemuck::cast_slice(t.data()).to_vec(),
    };
    bytes.truncate(len * encoding.bytes_per_value());
    Ok(Encoded {
        encoding,
        shape: t.shape().to_vec(),
        bytes,
        int8: None,
    })
}

fn gpu_decode(ctx: &GpuContext, e: &Encoded) -> Result<Tensor, WireError> {
    let e = Encoded::new(e.encoding, e.shape.clone(), e.bytes.clone(), e.int8)?;
    let len = e.len();
    let words = words_of(len, e.encoding);
    let mut padded = e.bytes.clone();
    padded.resize(words * 4, 0);
    let params = QuantParams {
        len: len as u32,
        words: words as u32,
        _pad: [0; 2],
    };
    let x = gpu::upload(ctx, "wire.decode.packed", &padded)?;
    let (entry, range) = match e.encoding {
        Encoding::Int8 => {
            let p = e.int8.ok_or(EncodingError::MissingInt8Params)?;
            ("dequantize_int8", [p.scale, p.zero_point as f32, 0.0, 0.0])
        }
        _ => ("unpack_f16", [0.0; 4]),
    };
    let range = gpu::upload(ctx, "wire.decode.range", &range)?;
    let y = gpu::storage(ctx, "wire.decode.output", (len * 4) as u64)?;
    let k = Kernel::new(
        ctx,
        format!("wire.{entry}"),
        Shader::Quant,
        entry,
        &[],
        &params,
        &[&x, &range],
        &y,
        len as u64,
    )?;
    let bytes = run_quant(ctx, "wire.decode", &[k], &[(&y, len)])?.swap_remove(0);
    let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
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
