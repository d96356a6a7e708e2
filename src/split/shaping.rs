//! Uplink shaping: a token bucket ([`Shaper`]) that paces the client's socket writes to a
//! bandwidth trace, so a real data rate is felt on loopback. The trace is the simulator's
//! [`Trace`] (every format it reads: Pensieve, Mahimahi, 5G CSV, synthetic specs), replayed in a
//! loop from the moment the shaper starts.

use crate::sim::trace::Trace;
use std::io::Write;
use std::time::{Duration, Instant};

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
    fn shaper_paces_writes_to_the_trace_rate() {
        // 1 Mbit/s = 125 kB/s: 25 kB take about 0.2 s (minus the initial burst allowance).
        let mut s = Shaper::new(Trace::constant(125_000.0).expect("a positive rate"));
        let start = Instant::now();
        let mut sink = Vec::new();
        s.write_all(&mut sink, &[0u8; 25_000], start + Duration::from_secs(5))
            .expect("within the deadline");
        let took = start.elapsed().as_secs_f64();
        assert!((0.15..0.6).contains(&took), "took {took} s");
        assert_eq!(sink.len(), 25_000);
    }
}
