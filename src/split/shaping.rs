//! Uplink shaping: a bandwidth trace ([`Trace`]) and a token bucket ([`Shaper`]) that paces the
//! client's socket writes to it, so a real data rate is felt on loopback.
//!
//! Two trace formats are read as they are published:
//! - Pensieve-style "cooked" traces: `time_seconds  Mbit/s` per line (whitespace separated,
//!   irregular sampling, each value holding until the next timestamp);
//! - Mahimahi packet-delivery traces: one integer millisecond timestamp per line, each a chance
//!   to deliver one 1500-byte packet.
//!
//! Both loop when the replay runs past their end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes per Mahimahi delivery opportunity.
pub const MAHIMAHI_PACKET: f64 = 1500.0;

/// Errors reading a trace.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line that is neither format.
    #[error("{path}:{line}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A bandwidth trace, replayed in a loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Trace {
    /// Piecewise-constant rate: `(start seconds, bytes per second)`, starting at 0.
    Rate(Vec<(f64, f64)>, f64),
    /// Mahimahi delivery opportunities in milliseconds (sorted), and the loop period.
    Packets(Vec<u64>, u64),
}

impl Trace {
    /// Reads a trace file, telling the format from its first data line (two columns: a
    /// Pensieve rate trace; one integer: Mahimahi).
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| TraceError::Format {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses trace text; errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let lines: Vec<(usize, Vec<&str>)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        let Some((_, first)) = lines.first() else {
            return Err((1, "the trace is empty".into()));
        };
        if first.len() >= 2 {
            let mut points = Vec::new();
            for (n, f) in &lines {
                let parse = |s: &str| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .ok_or((*n, format!("'{s}' is not a non-negative number")))
                };
                if f.len() < 2 {
                    return Err((*n, "expected 'time Mbit/s'".into()));
                }
                let (t, mbps) = (parse(f[0])?, parse(f[1])?);
                if points.last().is_some_and(|&(p, _)| t < p) {
                    return Err((*n, format!("time {t} goes backwards")));
                }
                points.push((t, mbps * 1e6 / 8.0));
            }
            let t0 = points[0].0;
            let points: Vec<(f64, f64)> = points.into_iter().map(|(t, r)| (t - t0, r)).collect();
            let last = points[points.len() - 1].0;
            // The last sample holds for the mean sampling interval before the loop restarts.
            let period = if points.len() > 1 {
                last + last / (points.len() - 1) as f64
            } else {
                1.0
            };
            Ok(Trace::Rate(points, period))
        } else {
            let mut ms = Vec::with_capacity(lines.len());
            for (n, f) in &lines {
                let v = f[0]
                    .parse::<u64>()
                    .map_err(|_| (*n, format!("'{}' is not a millisecond timestamp", f[0])))?;
                if ms.last().is_some_and(|&p| v < p) {
                    return Err((*n, format!("timestamp {v} goes backwards")));
                }
                ms.push(v);
            }
            let period = ms[ms.len() - 1].max(1);
            Ok(Trace::Packets(ms, period))
        }
    }

    /// A synthetic 3G-like trace: 60 s alternating between 0.4 and 2.0 Mbit/s every 5 s.
    pub fn synthetic_3g() -> Self {
        let points = (0..12)
            .map(|i| {
                (
                    i as f64 * 5.0,
                    if i % 2 == 0 { 2.0e6 / 8.0 } else { 0.4e6 / 8.0 },
                )
            })
            .collect();
        Trace::Rate(points, 60.0)
    }

    /// Mean rate over one period, in Mbit/s.
    pub fn mean_mbps(&self) -> f64 {
        let period = self.period();
        self.bytes_between(0.0, period) * 8.0 / period / 1e6
    }

    fn period(&self) -> f64 {
        match self {
            Trace::Rate(_, p) => *p,
            Trace::Packets(_, p) => *p as f64 / 1000.0,
        }
    }

    /// Bytes deliverable between trace times `a <= b` (seconds), looping.
    pub fn bytes_between(&self, a: f64, b: f64) -> f64 {
        self.cumulative(b) - self.cumulative(a)
    }

    /// Bytes deliverable from time 0 to `t`.
    fn cumulative(&self, t: f64) -> f64 {
        let period = self.period();
        let loops = (t / period).floor();
        let within = t - loops * period;
        loops * self.within(period) + self.within(within)
    }

    /// Bytes from 0 to `t` inside one period.
    fn within(&self, t: f64) -> f64 {
        match self {
            Trace::Rate(points, period) => {
                let mut total = 0.0;
                for (i, &(start, rate)) in points.iter().enumerate() {
                    if start >= t {
                        break;
                    }
                    let end = points.get(i + 1).map_or(*period, |p| p.0).min(t);
                    total += rate * (end - start);
                }
                total
            }
            Trace::Packets(ms, _) => {
                let limit = t * 1000.0;
                ms.partition_point(|&m| (m as f64) < limit) as f64 * MAHIMAHI_PACKET
            }
        }
    }
}

/// A token bucket following a trace: bytes may be written when the trace has delivered
/// enough since the shaper started (at most `burst` saved up while idle).
#[derive(Debug, Clone)]
pub struct Shaper {
    trace: Trace,
    start: Instant,
    tokens: f64,
    last: f64,
    burst: f64,
}

/// Bytes per paced write (one Ethernet payload).
pub const CHUNK: usize = 1460;

impl Shaper {
    /// Starts replaying `trace` now.
    pub fn new(trace: Trace) -> Self {
        Self {
            trace,
            start: Instant::now(),
            tokens: 0.0,
            last: 0.0,
            burst: 4.0 * CHUNK as f64,
        }
    }

    fn refill(&mut self) {
        let now = self.start.elapsed().as_secs_f64();
        if now > self.last {
            self.tokens = (self.tokens + self.trace.bytes_between(self.last, now)).min(self.burst);
            self.last = now;
        }
    }

    /// Waits until `n` bytes may go, or fails with `TimedOut` at `deadline`.
    pub fn acquire(&mut self, n: usize, deadline: Instant) -> std::io::Result<()> {
        let n = n as f64;
        loop {
            self.refill();
            if self.tokens >= n.min(self.burst) {
                self.tokens -= n;
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the shaped uplink did not deliver the request before the deadline",
                ));
            }
            // Sleep about as long as the current rate needs for the missing bytes, in short
            // steps so rate changes are followed.
            let t = self.last;
            let rate = self.trace.bytes_between(t, t + 0.01) / 0.01;
            let missing = n.min(self.burst) - self.tokens;
            let wait = if rate > 0.0 { missing / rate } else { 0.01 };
            let wait = Duration::from_secs_f64(wait.clamp(0.0002, 0.02)).min(deadline - now);
            std::thread::sleep(wait);
        }
    }

    /// Writes `buf` in paced chunks.
    pub fn write_all<W: Write>(
        &mut self,
        out: &mut W,
        buf: &[u8],
        deadline: Instant,
    ) -> std::io::Result<()> {
        for chunk in buf.chunks(CHUNK) {
            self.acquire(chunk.len(), deadline)?;
            out.write_all(chunk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pensieve_trace_integrates_its_piecewise_rate_and_loops() {
        let t = Trace::parse("10.0\t8.0\n12.0\t0.8\n14.0\t8.0\n").expect("parses");
        // 0..2 s at 1 MB/s, 2..4 s at 0.1 MB/s, then 4..6 s at 1 MB/s (period 6 s).
        assert!((t.bytes_between(0.0, 2.0) - 2.0e6).abs() < 1.0);
        assert!((t.bytes_between(2.0, 4.0) - 0.2e6).abs() < 1.0);
        assert!((t.bytes_between(6.0, 8.0) - 2.0e6).abs() < 1.0);
    }

    #[test]
    fn mahimahi_trace_counts_packets_per_window() {
        let t = Trace::parse("1\n1\n2\n5\n10\n").expect("parses");
        assert_eq!(t.bytes_between(0.0, 0.003), 3.0 * MAHIMAHI_PACKET);
        assert_eq!(t.bytes_between(0.0, 0.010), 4.0 * MAHIMAHI_PACKET);
        assert_eq!(t.bytes_between(0.010, 0.013), 3.0 * MAHIMAHI_PACKET);
    }

    #[test]
    fn malformed_trace_names_the_line() {
        let err = Trace::parse("0 1.0\n1 fast\n").unwrap_err();
        assert_eq!(err.0, 2);
    }

    #[test]
    fn shaper_paces_writes_to_the_trace_rate() {
        // 1 Mbit/s = 125 kB/s: 25 kB take about 0.2 s (minus the initial burst allowance).
        let mut s = Shaper::new(Trace::Rate(vec![(0.0, 125_000.0)], 1.0));
        let start = Instant::now();
        let mut sink = Vec::new();
        s.write_all(&mut sink, &[0u8; 25_000], start + Duration::from_secs(5))
            .expect("within the deadline");
        let took = start.elapsed().as_secs_f64();
        assert!((0.15..0.6).contains(&took), "took {took} s");
        assert_eq!(sink.len(), 25_000);
    }
}
