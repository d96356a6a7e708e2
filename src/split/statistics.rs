//! The KServe / Triton statistics extension (`GET /v2/models/{name}/stats`,
//! `GET /v2/models/stats`): one set of types that `edgecut serve` renders and the device client
//! parses, so the client reads `edgecut serve`, Triton and KServe servers alike.
//!
//! Every counter is cumulative since the server started; a load reading is the difference of two
//! polls ([`LoadSample::between`]):
//!
//! - queue time per request = Δ`inference_stats.queue.ns` / Δ`inference_stats.queue.count`,
//! - compute time per request = Δ`inference_stats.compute_infer.ns` /
//!   Δ`inference_stats.compute_infer.count` (with dynamic batching a request is charged the
//!   whole batch's compute time, as Triton does),
//!
//! both over the requests the server finished between the two polls, from every client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A cumulative count and total duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatDuration {
    /// How many times it happened.
    #[serde(default)]
    pub count: u64,
    /// Their total duration in nanoseconds.
    #[serde(default)]
    pub ns: u64,
}

impl StatDuration {
    /// Adds one occurrence of `ns` nanoseconds (saturating: counters never wrap).
    pub fn add(&mut self, ns: u64) {
        self.count = self.count.saturating_add(1);
        self.ns = self.ns.saturating_add(ns);
    }
}

/// Per-request statistics of a model (counts are requests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InferenceStats {
    /// Requests answered successfully, with their time from arrival to answer.
    #[serde(default)]
    pub success: StatDuration,
    /// Requests that failed, with their time until the failure.
    #[serde(default)]
    pub fail: StatDuration,
    /// Time requests waited in the scheduling queue.
    #[serde(default)]
    pub queue: StatDuration,
    /// Time preparing inputs.
    #[serde(default)]
    pub compute_input: StatDuration,
    /// Time computing the model (the whole batch's, for each request in it).
    #[serde(default)]
    pub compute_infer: StatDuration,
    /// Time extracting outputs.
    #[serde(default)]
    pub compute_output: StatDuration,
}

/// Statistics of the executions of one batch size (counts are executions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchStats {
    /// Samples in the batch.
    pub batch_size: u64,
    /// Preparing inputs.
    #[serde(default)]
    pub compute_input: StatDuration,
    /// Computing.
    #[serde(default)]
    pub compute_infer: StatDuration,
    /// Extracting outputs.
    #[serde(default)]
    pub compute_output: StatDuration,
}

/// Statistics of one model version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelStatistics {
    /// Model name.
    pub name: String,
    /// Version (edgecut serves version `"1"`).
    #[serde(default)]
    pub version: String,
    /// When the last inference ran, milliseconds since the Unix epoch (0: never).
    #[serde(default)]
    pub last_inference: u64,
    /// Samples computed (a request of batch 4 counts 4).
    #[serde(default)]
    pub inference_count: u64,
    /// Model executions (dynamic batches).
    #[serde(default)]
    pub execution_count: u64,
    /// Per-request statistics.
    #[serde(default)]
    pub inference_stats: InferenceStats,
    /// Per batch size.
    #[serde(default)]
    pub batch_stats: Vec<BatchStats>,
    /// Fields only `edgecut serve` reports (not part of the extension; absent from Triton).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edgecut: Option<EdgecutExtras>,
}

/// What `edgecut serve` adds to a model's statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EdgecutExtras {
    /// Requests waiting for a worker at the time of the poll.
    pub queue_depth: u64,
}

/// The body of a statistics response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatisticsResponse {
    /// One entry per model version.
    pub model_stats: Vec<ModelStatistics>,
}

impl StatisticsResponse {
    /// Parses a body, or says what is wrong with it.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("statistics are not JSON: {e}"))?;
        serde_json::from_value(v)
            .map_err(|e| format!("statistics are not in the statistics-extension format: {e}"))
    }

    /// The per-request statistics of `name`, summed over its versions.
    pub fn model(&self, name: &str) -> Option<InferenceStats> {
        let mut found = None::<InferenceStats>;
        for m in self.model_stats.iter().filter(|m| m.name == name) {
            let s = found.get_or_insert_with(InferenceStats::default);
            let i = &m.inference_stats;
            for (sum, add) in [
                (&mut s.success, i.success),
                (&mut s.fail, i.fail),
                (&mut s.queue, i.queue),
                (&mut s.compute_input, i.compute_input),
                (&mut s.compute_infer, i.compute_infer),
                (&mut s.compute_output, i.compute_output),
            ] {
                sum.count = sum.count.saturating_add(add.count);
                sum.ns = sum.ns.saturating_add(add.ns);
            }
        }
        found
    }
}

/// The server's load over the requests it finished between two polls of a model's statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    /// Requests finished in between (Δ`queue.count`).
    pub requests: u64,
    /// Mean queue time per request, seconds.
    pub queue_s: f64,
    /// Mean compute time per request, seconds (0 when no compute was counted).
    pub compute_s: f64,
}

impl LoadSample {
    /// The load between two polls; `None` when no request was queued in between (nothing new is
    /// known) or the counters went backwards (the server restarted: `now` is the new baseline).
    pub fn between(before: &InferenceStats, now: &InferenceStats) -> Option<Self> {
        let delta = |a: StatDuration, b: StatDuration| {
            Some((b.count.checked_sub(a.count)?, b.ns.checked_sub(a.ns)?))
        };
        let (requests, queue_ns) = delta(before.queue, now.queue)?;
        let (computed, compute_ns) = delta(before.compute_infer, now.compute_infer)?;
        if requests == 0 {
            return None;
        }
        Some(Self {
            requests,
            queue_s: queue_ns as f64 * 1e-9 / requests as f64,
            compute_s: if computed == 0 {
                0.0
            } else {
                compute_ns as f64 * 1e-9 / computed as f64
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(queue: (u64, u64), compute: (u64, u64)) -> InferenceStats {
        InferenceStats {
            queue: StatDuration {
                count: queue.0,
                ns: queue.1,
            },
            compute_infer: StatDuration {
                count: compute.0,
                ns: compute.1,
            },
            ..InferenceStats::default()
        }
    }

    #[test]
    fn load_is_the_mean_of_the_differences_between_polls() {
        let a = stats((10, 5_000_000), (10, 20_000_000));
        let b = stats((14, 13_000_000), (14, 24_000_000));
        let l = LoadSample::between(&a, &b).expect("four requests in between");
        assert_eq!(l.requests, 4);
        assert!((l.queue_s - 0.002).abs() < 1e-12);
        assert!((l.compute_s - 0.001).abs() < 1e-12);
    }

    #[test]
    fn no_requests_or_a_restarted_server_give_no_load_sample() {
        let a = stats((10, 5_000), (10, 5_000));
        assert_eq!(LoadSample::between(&a, &a), None);
        assert_eq!(LoadSample::between(&a, &stats((2, 100), (2, 100))), None);
    }

    #[test]
    fn a_triton_statistics_body_parses_and_sums_versions() {
        // The shape Triton 2.51 answers (cache fields and all), two versions of one model.
        let body = br#"{"model_stats":[
          {"name":"m__cut1__fp32","version":"1","last_inference":1700000000000,"inference_count":6,
           "execution_count":2,"inference_stats":{"success":{"count":6,"ns":900},
           "fail":{"count":0,"ns":0},"queue":{"count":6,"ns":600},"compute_input":{"count":6,"ns":6},
           "compute_infer":{"count":6,"ns":120},"compute_output":{"count":6,"ns":6},
           "cache_hit":{"count":0,"ns":0},"cache_miss":{"count":0,"ns":0}},
           "batch_stats":[{"batch_size":3,"compute_input":{"count":2,"ns":6},
           "compute_infer":{"count":2,"ns":120},"compute_output":{"count":2,"ns":6}}],
           "memory_usage":[]},
          {"name":"m__cut1__fp32","version":"2","inference_stats":{"queue":{"count":1,"ns":10}}}]}"#;
        let r = StatisticsResponse::parse(body).expect("parses");
        let s = r.model("m__cut1__fp32").expect("present");
        assert_eq!(s.queue, StatDuration { count: 7, ns: 610 });
        assert_eq!(s.compute_infer.count, 6);
        assert!(r.model("other").is_none());
        assert!(StatisticsResponse::parse(br#"{"name":"m","samples":3}"#).is_err());
    }
}
