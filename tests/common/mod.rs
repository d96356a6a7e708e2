//! Shared test helpers: the GPU context (skipping loudly without an adapter, failing when
//! `EDGECUT_REQUIRE_GPU=1`), named tolerances, random data and a raw HTTP exchange.
#![allow(dead_code)] // each test binary uses a different subset

use edgecut::gpu::GpuContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The shared GPU context, or `None` (with a visible message) when no adapter exists.
/// Panics when `EDGECUT_REQUIRE_GPU=1` and no adapter exists, so CI cannot pass silently.
pub fn gpu(test: &str) -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| GpuContext::new().map(Arc::new).map_err(|e| e.to_string()));
    match ctx {
        Ok(c) => Some(c.clone()),
        Err(e) => {
            if std::env::var("EDGECUT_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("EDGECUT_REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            eprintln!("SKIPPED {test}: no GPU adapter ({e})");
            None
        }
    }
}

/// How close GPU results must be to the CPU reference.
#[derive(Debug, Clone, Copy)]
pub enum Tolerance {
    /// Bit-identical (data movement: pooling max, flatten).
    Exact,
    /// Same arithmetic in a different order: a few ulps per accumulated term.
    Close,
    /// Long reductions and transcendental functions (exp in silu/sigmoid/softmax).
    Approximate,
}

impl Tolerance {
    fn bounds(self) -> (f32, f32) {
        match self {
            Tolerance::Exact => (0.0, 0.0),
            Tolerance::Close => (1e-5, 1e-4),
            Tolerance::Approximate => (1e-4, 1e-3),
        }
    }
}

/// Asserts `|a - b| <= abs + rel·|b|` elementwise, naming the first mismatch.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (abs, rel) = tol.bounds();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= abs + rel * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: gpu {g} vs cpu {w} ({tol:?})");
    }
}

/// Seeded uniform values in `[-1, 1)`.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Sends raw bytes on a fresh connection, reads until the server closes it (20 s at most) and
/// returns the HTTP status and the body as text.
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // A server may answer and close before reading the whole request (e.g. 413).
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
