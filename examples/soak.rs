//! Load and soak benchmark of `edgecut serve`: N loopback clients on keep-alive connections send
//! binary full-model requests for a fixed time; prints throughput, latency percentiles, errors
//! and the server's resident memory at start, peak and end as one JSON object.
//!
//! Run: `cargo build --release && cargo run --release --example soak -- --clients 16 --seconds 60`
//! Flags: `--clients N` (16), `--seconds S` (60), `--model DIR` (models/mnist-fixture),
//! `--backend cpu|gpu` (cpu), `--bin PATH` (target/release/edgecut).
//! The server runs as its own process, so its RSS (`/proc/<pid>/status`, Linux) is its own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One binary full-model request of a zero sample.
fn request(model: &str, shape: &[usize]) -> Vec<u8> {
    let elems: usize = shape.iter().product();
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let json = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,{dims}],"parameters":{{"binary_data_size":{}}}}}]}}"#,
        elems * 4
    );
    let mut r = format!(
        "POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n{json}",
        json.len(),
        json.len() + elems * 4
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(0u8, elems * 4));
    r
}

/// Reads one HTTP response from a keep-alive connection; its status.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(status)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut clients, mut seconds) = (16usize, 60u64);
    let mut model_dir = "models/mnist-fixture".to_string();
    let mut backend = "cpu".to_string();
    let mut bin = "target/release/edgecut".to_string();
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--clients" => clients = value()?.parse()?,
            "--seconds" => seconds = value()?.parse()?,
            "--model" => model_dir = value()?,
            "--backend" => backend = value()?,
            "--bin" => bin = value()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let model = edgecut::model::Model::load(&model_dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(&bin)
        .args(["serve", &model_dir, "--addr", &addr, "--backend", &backend])
        .args(["--max-connections", &(clients + 16).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting {bin}: {e} (build it with `cargo build --release`)"))?;
    let pid = server.id();
    let mut out = BufReader::new(server.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("edgecut serving") {
        let _ = server.kill();
        return Err(format!("the server did not start: {line:?}").into());
    }
    let rss_start = rss_kib(pid).unwrap_or(0);
    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(request(model.name(), model.input_shape()));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, body, addr) = (stop.clone(), body.clone(), addr.clone());
            std::thread::spawn(move || {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = (|| -> std::io::Result<bool> {
                        if conn.is_none() {
                            let s = TcpStream::connect(&addr)?;
                            s.set_read_timeout(Some(Duration::from_secs(30)))?;
                            conn = Some((s.try_clone()?, BufReader::new(s)));
                        }
                        let (w, r) = conn.as_mut().expect("connected above");
                        w.write_all(&body)?;
                        Ok(read_response(r)? == 200)
                    })();
                    match ok {
                        Ok(true) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                        _ => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let start = Instant::now();
    let mut rss_peak = rss_start;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(250));
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0usize);
    for t in threads {
        let (l, e) = t.join().map_err(|_| "a client thread panicked")?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rss_end = rss_kib(pid).unwrap_or(0);
    let _ = server.kill();
    let _ = server.wait();
    lat.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "model": model.name(),
        "backend": backend,
        "clients": clients,
        "seconds": elapsed,
        "requests": lat.len(),
        "errors": errors,
        "throughput_rps": lat.len() as f64 / elapsed,
        "latency_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": lat.last().copied().unwrap_or(0.0)},
        "server_rss_mib": {"start": rss_start as f64 / 1024.0, "peak": rss_peak as f64 / 1024.0, "end": rss_end as f64 / 1024.0},
    });
    println!("{report}");
    Ok(())
}
