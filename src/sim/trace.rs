//! Uplink bandwidth traces: piecewise-constant rate over time, looping, with readers for the real
//! trace formats (read in place) and seeded synthetic traces.
//!
//! - Pensieve "cooked" files: `time_seconds<TAB>Mbit/s` per line; the value holds until the next time.
//! - Mahimahi packet-delivery files: one millisecond timestamp per line, one 1500-byte packet each
//!   (repeated timestamps: several packets in that millisecond); the trace loops.
//! - 5G CSV files (5Gophers): a header, one row per second; the column is picked by name (default:
//!   the first whose name contains `throughput`), values in Mbit/s.
//!
//! A single zero sample is an outage (the real 3G and 5G traces have them) and is kept; a negative
//! rate, or a trace that never carries a byte, is an error.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Bytes in one Mahimahi packet.
pub const MAHIMAHI_PACKET_BYTES: f64 = 1500.0;

/// Errors reading or making traces.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read trace {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line that does not parse.
    #[error("trace {path}, line {line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No samples at all.
    #[error("trace {0} is empty (no samples)")]
    Empty(String),
    /// The trace never carries a byte (every rate is zero).
    #[error("trace {0} has no capacity: every rate is zero")]
    NoCapacity(String),
    /// A CSV column that does not exist.
    #[error("trace {path} has no column '{wanted}'; columns: {available}")]
    Column {
        /// The file.
        path: String,
        /// The column asked for.
        wanted: String,
        /// The header.
        available: String,
    },
    /// A bad synthetic trace specification or parameter.
    #[error("invalid trace {what}: {reason}")]
    Invalid {
        /// The specification or parameter.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A looping piecewise-constant rate: segment `i` starts at `starts[i]` (seconds, `starts[0] = 0`)
/// and carries `rates[i]` bytes per second until the next start or `period`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// A name for reports (file stem or synthetic spec).
    pub name: String,
    starts: Vec<f64>,
    rates: Vec<f64>,
    /// Bytes delivered from 0 to `starts[i]`.
    cum: Vec<f64>,
    period: f64,
    total: f64,
}

impl Trace {
    /// A trace from segment durations (seconds) and rates (bytes/s).
    pub fn from_segments(
        name: impl Into<String>,
        durations: &[f64],
        rates: &[f64],
    ) -> Result<Self, TraceError> {
        let name = name.into();
        if durations.is_empty() {
            return Err(TraceError::Empty(name));
        }
        if durations.len() != rates.len() {
            return Err(TraceError::Invalid {
                what: name,
                reason: "one rate per segment needed".into(),
            });
        }
        for (i, (&d, &r)) in durations.iter().zip(rates).enumerate() {
            if !(d.is_finite() && d > 0.0) {
                return Err(TraceError::Invalid {
                    what: name,
                    reason: format!("segment {i} has duration {d} s (must be > 0)"),
                });
            }
            if !(r.is_finite() && r >= 0.0) {
                return Err(TraceError::Invalid {
                    what: name,
                    reason: format!("segment {i} has rate {r} B/s (must be >= 0)"),
                });
            }
        }
        let mut starts = Vec::with_capacity(durations.len());
        let mut cum = Vec::with_capacity(durations.len());
        let (mut t, mut c) = (0.0, 0.0);
        for (&d, &r) in durations.iter().zip(rates) {
            starts.push(t);
            cum.push(c);
            t += d;
            c += d * r;
        }
        if c <= 0.0 {
            return Err(TraceError::NoCapacity(name));
        }
        Ok(Self {
            name,
            starts,
            rates: rates.to_vec(),
            cum,
            period: t,
            total: c,
        })
    }

    /// A constant rate (bytes/s, > 0).
    pub fn constant(rate: f64) -> Result<Self, TraceError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(TraceError::Invalid {
                what: "constant rate".into(),
                reason: format!("{rate} B/s must be positive"),
            });
        }
        Self::from_segments(format!("const:{}MB", rate / 1e6), &[1.0], &[rate])
    }

    /// Cycles through `rates` (bytes/s, each > 0), `dwell` seconds each.
    pub fn steps(rates: &[f64], dwell: f64) -> Result<Self, TraceError> {
        if rates.is_empty() || rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(TraceError::Invalid {
                what: "step rates".into(),
                reason: format!("{rates:?} must be one or more positive rates"),
            });
        }
        let d = vec![dwell; rates.len()];
        let mb: Vec<String> = rates.iter().map(|r| format!("{}", r / 1e6)).collect();
        Self::from_segments(format!("steps:{}MB@{dwell}", mb.join(",")), &d, rates)
    }

    /// The demo's built-in 3G-like uplink: 2.0 and 0.4 Mbit/s alternating every 5 s.
    pub fn synthetic_3g() -> Self {
        let rates = [2.0e6 / 8.0, 0.4e6 / 8.0];
        let durations = [5.0, 5.0];
        Self::from_segments(
            "built-in synthetic 3G (2.0/0.4 Mbit/s alternating every 5 s)",
            &durations,
            &rates,
        )
        .expect("two positive segments make a valid trace")
    }

    /// Bytes the link carries between times `a <= b` (seconds).
    pub fn bytes_between(&self, a: f64, b: f64) -> f64 {
        self.bytes_until(b) - self.bytes_until(a)
    }

    /// A two-state Markov chain between `high` and `low` (bytes/s, > 0) over `duration` seconds in
    /// steps of `dt`, switching state with probability `dt / mean_dwell` per step; seeded.
    pub fn markov(
        high: f64,
        low: f64,
        mean_dwell: f64,
        duration: f64,
        dt: f64,
        seed: u64,
    ) -> Result<Self, TraceError> {
        if !(high > 0.0 && low > 0.0 && mean_dwell > dt && dt > 0.0 && duration >= dt) {
            return Err(TraceError::Invalid {
                what: "markov trace".into(),
                reason: format!(
                    "rates {high}/{low} B/s must be > 0, mean dwell {mean_dwell} s > step {dt} s > 0, duration {duration} s >= step"
                ),
            });
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let steps = (duration / dt).round() as usize;
        let p = dt / mean_dwell;
        let mut state = 0;
        let mut rates = Vec::with_capacity(steps);
        for _ in 0..steps {
            rates.push(if state == 0 { high } else { low });
            if rng.random_bool(p) {
                state = 1 - state;
            }
        }
        Self::from_segments(
            format!(
                "markov:{}MB,{}MB@{mean_dwell}:{seed}",
                high / 1e6,
                low / 1e6
            ),
            &vec![dt; steps],
            &rates,
        )
    }

    /// Reads a Pensieve-style file: `time_seconds<whitespace>Mbit/s` per line (blank lines skipped).
    /// The last sample lasts as long as the one before it.
    pub fn pensieve(path: &Path) -> Result<Self, TraceError> {
        let text = read(path)?;
        let p = path.display().to_string();
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| TraceError::Parse {
                path: p.clone(),
                line: i + 1,
                reason,
            };
            let mut it = line.split_whitespace();
            let (Some(t), Some(v), None) = (it.next(), it.next(), it.next()) else {
                return Err(bad(format!("expected 'time Mbit/s', got '{line}'")));
            };
            let t: f64 = t
                .parse()
                .map_err(|_| bad(format!("time '{t}' is not a number")))?;
            let v: f64 = v
                .parse()
                .map_err(|_| bad(format!("rate '{v}' is not a number")))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad(format!("rate {v} Mbit/s is negative")));
            }
            if let Some(&(prev, _)) = pts.last() {
                if t <= prev {
                    return Err(bad(format!(
                        "time {t} s does not increase (previous {prev} s)"
                    )));
                }
            }
            pts.push((t, v));
        }
        if pts.is_empty() {
            return Err(TraceError::Empty(p));
        }
        let mut durations: Vec<f64> = pts.windows(2).map(|w| w[1].0 - w[0].0).collect();
        durations.push(*durations.last().unwrap_or(&1.0));
        let rates: Vec<f64> = pts.iter().map(|&(_, v)| v * 1e6 / 8.0).collect();
        Self::from_segments(stem(path), &durations, &rates)
    }

    /// Reads a Mahimahi packet-delivery file (millisecond timestamps, non-decreasing).
    pub fn mahimahi(path: &Path) -> Result<Self, TraceError> {
        let text = read(path)?;
        let p = path.display().to_string();
        let mut stamps: Vec<u64> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let t: u64 = line.parse().map_err(|_| TraceError::Parse {
                path: p.clone(),
                line: i + 1,
                reason: format!("'{line}' is not a millisecond timestamp (non-negative integer)"),
            })?;
            if stamps.last().is_some_and(|&prev| t < prev) {
                return Err(TraceError::Parse {
                    path: p.clone(),
                    line: i + 1,
                    reason: format!("timestamp {t} ms goes back in time"),
                });
            }
            stamps.push(t);
        }
        let Some(&last) = stamps.last() else {
            return Err(TraceError::Empty(p));
        };
        // One bin per millisecond over [0, period); a packet at t ms is delivered in bin t - 1
        // (t = 0 in bin 0): the trace loops with period = the last timestamp.
        let period = last.max(1) as usize;
        let mut counts = vec![0u32; period];
        for t in stamps {
            counts[(t as usize).saturating_sub(1).min(period - 1)] += 1;
        }
        // Merge runs of equal counts into segments.
        let (mut durations, mut rates) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < period {
            let mut j = i + 1;
            while j < period && counts[j] == counts[i] {
                j += 1;
            }
            durations.push((j - i) as f64 * 1e-3);
            rates.push(counts[i] as f64 * MAHIMAHI_PACKET_BYTES / 1e-3);
            i = j;
        }
        Self::from_segments(stem(path), &durations, &rates)
    }

    /// Reads a 5G CSV file: one row per second, rates in Mbit/s from `column` (default: the first
    /// column whose name contains `throughput`).
    pub fn csv(path: &Path, column: Option<&str>) -> Result<Self, TraceError> {
        let text = read(path)?;
        let p = path.display().to_string();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(TraceError::Empty(p));
        };
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let col = match column {
            Some(c) => names.iter().position(|n| *n == c),
            None => names.iter().position(|n| n.contains("throughput")),
        }
        .ok_or_else(|| TraceError::Column {
            path: p.clone(),
            wanted: column.unwrap_or("*throughput*").to_string(),
            available: names.join(", "),
        })?;
        let mut rates = Vec::new();
        for (i, line) in lines {
            let f: Vec<&str> = line.split(',').collect();
            let bad = |reason: String| TraceError::Parse {
                path: p.clone(),
                line: i + 1,
                reason,
            };
            let v = f
                .get(col)
                .ok_or_else(|| {
                    bad(format!(
                        "has {} fields, column '{}' is field {}",
                        f.len(),
                        names[col],
                        col + 1
                    ))
                })?
                .trim();
            let v: f64 = v
                .parse()
                .map_err(|_| bad(format!("'{v}' in column '{}' is not a number", names[col])))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad(format!("rate {v} Mbit/s is negative")));
            }
            rates.push(v * 1e6 / 8.0);
        }
        if rates.is_empty() {
            return Err(TraceError::Empty(p));
        }
        let name = format!("{}:{}", stem(path), names[col]);
        Self::from_segments(name, &vec![1.0; rates.len()], &rates)
    }

    /// Reads a trace file, choosing the reader by content: a CSV header (commas), one integer per
    /// line (Mahimahi), or two numbers per line (Pensieve).
    pub fn load(path: &Path, column: Option<&str>) -> Result<Self, TraceError> {
        let text = read(path)?;
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if first.contains(',') {
            Self::csv(path, column)
        } else if first.split_whitespace().count() == 1 && first.trim().parse::<u64>().is_ok() {
            Self::mahimahi(path)
        } else {
            Self::pensieve(path)
        }
    }

    /// A trace from a specification: a file path, or `const:R`, `steps:R1,R2,...@DWELL`,
    /// `markov:HIGH,LOW@MEAN_DWELL[:SEED]` with rates in MB/s (append `Mbit` for Mbit/s) and
    /// dwell times in seconds.
    pub fn from_spec(spec: &str, column: Option<&str>) -> Result<Self, TraceError> {
        let bad = |reason: &str| TraceError::Invalid {
            what: format!("specification '{spec}'"),
            reason: reason.into(),
        };
        if let Some(r) = spec.strip_prefix("const:") {
            return Self::constant(parse_rate(r).map_err(|e| bad(&e))?);
        }
        if let Some(rest) = spec.strip_prefix("steps:") {
            let (rates, dwell) = rest
                .split_once('@')
                .ok_or_else(|| bad("expected steps:R1,R2@DWELL"))?;
            let rates = rates
                .split(',')
                .map(parse_rate)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            let dwell: f64 = dwell
                .parse()
                .map_err(|_| bad("dwell is not a number of seconds"))?;
            if dwell.is_nan() || dwell <= 0.0 {
                return Err(bad("dwell must be positive"));
            }
            return Self::steps(&rates, dwell);
        }
        if let Some(rest) = spec.strip_prefix("markov:") {
            let (rates, tail) = rest
                .split_once('@')
                .ok_or_else(|| bad("expected markov:HIGH,LOW@DWELL[:SEED]"))?;
            let (dwell, seed) = tail.split_once(':').unwrap_or((tail, "1"));
            let r = rates
                .split(',')
                .map(parse_rate)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e))?;
            if r.len() != 2 {
                return Err(bad("markov needs two rates, HIGH,LOW"));
            }
            let dwell: f64 = dwell
                .parse()
                .map_err(|_| bad("dwell is not a number of seconds"))?;
            let seed: u64 = seed.parse().map_err(|_| bad("seed is not an integer"))?;
            return Self::markov(r[0], r[1], dwell, 600.0, 0.1, seed);
        }
        Self::load(Path::new(spec), column)
    }

    /// Length of one loop, seconds.
    pub fn period(&self) -> f64 {
        self.period
    }

    /// Mean rate over one loop, bytes/s.
    pub fn mean_rate(&self) -> f64 {
        self.total / self.period
    }

    /// Rate at time `t` (bytes/s).
    pub fn rate_at(&self, t: f64) -> f64 {
        let u = t.rem_euclid(self.period);
        let i = self.starts.partition_point(|&s| s <= u).saturating_sub(1);
        self.rates[i]
    }

    /// Bytes the link carries from time 0 to `t` (`t >= 0`).
    pub fn bytes_until(&self, t: f64) -> f64 {
        let loops = (t / self.period).floor();
        let u = t - loops * self.period;
        let i = self.starts.partition_point(|&s| s <= u).saturating_sub(1);
        loops * self.total + self.cum[i] + (u - self.starts[i]) * self.rates[i]
    }

    /// The time at which the cumulative bytes reach `c`.
    pub fn time_at_bytes(&self, c: f64) -> f64 {
        let loops = (c / self.total).floor();
        let mut rem = c - loops * self.total;
        if rem <= 0.0 {
            return loops * self.period;
        }
        // Last segment whose start cumulative is < rem (positive rate there, since cum grows).
        let i = self.cum.partition_point(|&x| x < rem).saturating_sub(1);
        rem -= self.cum[i];
        let mut t = self.starts[i];
        let mut j = i;
        // Skip zero-rate segments and numerical slack.
        loop {
            let end = if j + 1 < self.starts.len() {
                self.starts[j + 1]
            } else {
                self.period
            };
            let cap = (end - t) * self.rates[j];
            if rem <= cap && self.rates[j] > 0.0 {
                return loops * self.period + t + rem / self.rates[j];
            }
            rem -= cap.min(rem);
            if j + 1 >= self.starts.len() {
                return loops * self.period + end;
            }
            j += 1;
            t = self.starts[j];
        }
    }

    /// When `bytes` sent from time `start` on an otherwise idle link have crossed it.
    pub fn transfer_end(&self, start: f64, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return start;
        }
        self.time_at_bytes(self.bytes_until(start) + bytes)
    }

    /// `(duration, rate)` of each segment over one loop.
    pub fn segments(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        (0..self.starts.len()).map(|i| {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.period);
            (end - self.starts[i], self.rates[i])
        })
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("Mbit") {
        (n, 1e6 / 8.0)
    } else {
        (s.strip_suffix("MB").unwrap_or(s), 1e6)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("rate '{s}' is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate '{s}' must be positive"));
    }
    Ok(v * scale)
}

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn stem(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
