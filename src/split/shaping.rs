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
        self.write_watched(out, buf, deadline, None)
            .map_err(|e| match e {
                Upload::Io(e) => e,
                Upload::Stalled { .. } => {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "the upload stalled")
                }
            })
    }

    /// Writes `buf` in paced chunks; past `watch.at` the outage rule
    /// ([`crate::sched::hedge::Progress::verdict`]) decides at every chunk whether to go on or
    /// give up ([`Upload::Stalled`], with the bytes written so far).
    pub fn write_watched<W: Write>(
        &mut self,
        out: &mut W,
        buf: &[u8],
        deadline: Instant,
        mut watch: Option<Watch>,
    ) -> Result<(), Upload> {
        let started = Instant::now();
        let mut written = 0usize;
        for chunk in buf.chunks(CHUNK) {
            loop {
                let until = watch.map_or(deadline, |w| w.at.min(deadline));
                match self.acquire(chunk.len(), until) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => return Err(Upload::Io(e)),
                    Err(_) => {}
                }
                let Some(w) = watch.as_mut() else {
                    continue;
                };
                let progress = crate::sched::hedge::Progress {
                    bytes: buf.len() as u64,
                    acked: written as u64,
                    in_flight_s: started.elapsed().as_secs_f64(),
                    after_upload_s: w.after_upload_s,
                };
                match progress.verdict(w.local_s) {
                    crate::sched::hedge::Verdict::Wait { recheck_s } => {
                        w.at = Instant::now() + Duration::from_secs_f64(recheck_s);
                    }
                    crate::sched::hedge::Verdict::FallBack { .. } => {
                        return Err(Upload::Stalled {
                            written,
                            after: started.elapsed(),
                        })
                    }
                }
            }
            out.write_all(chunk).map_err(Upload::Io)?;
            written += chunk.len();
        }
        Ok(())
    }
}

/// The outage rule's parameters for one upload ([`Shaper::write_watched`]).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// When to check first.
    pub at: Instant,
    /// Seconds a local run of the rest would take.
    pub local_s: f64,
    /// Seconds the answer is expected to need once the upload is done.
    pub after_upload_s: f64,
}

/// Why a watched upload did not finish.
#[derive(Debug)]
pub enum Upload {
    /// The socket failed, or the hard deadline passed.
    Io(std::io::Error),
    /// The outage rule gave up: `written` bytes went in `after`.
    Stalled {
        /// Bytes written.
        written: usize,
        /// Time since the first byte.
        after: Duration,
    },
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

    fn watch(local_s: f64) -> Watch {
        Watch {
            at: Instant::now() + Duration::from_millis(20),
            local_s,
            after_upload_s: 0.001,
        }
    }

    #[test]
    fn a_watched_upload_into_an_outage_is_given_up_at_the_check() {
        // No byte for 10 s: nothing moves by the check, so the outage rule gives up.
        let trace = Trace::from_segments("outage", &[10.0, 1.0], &[0.0, 1e6]).expect("trace");
        let mut s = Shaper::new(trace);
        let start = Instant::now();
        let mut sink = Vec::new();
        let r = s.write_watched(
            &mut sink,
            &[0u8; 20_000],
            start + Duration::from_secs(5),
            Some(watch(0.05)),
        );
        assert!(
            matches!(r, Err(Upload::Stalled { written: 0, .. })),
            "{r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_watched_upload_that_is_slow_but_moving_completes() {
        // 200 kB/s: 40 kB take about 0.2 s, far past the check, but the projected answer beats
        // a 2 s local run all along.
        let mut s = Shaper::new(Trace::constant(200_000.0).expect("a positive rate"));
        let start = Instant::now();
        let mut sink = Vec::new();
        s.write_watched(
            &mut sink,
            &[0u8; 40_000],
            start + Duration::from_secs(5),
            Some(watch(2.0)),
        )
        .expect("not given up");
        assert_eq!(sink.len(), 40_000);
    }
}
