//! GPU workers: take a batch, run the tail plan for its cut and encoding on the received bytes
//! (the plan's first dispatch decodes them), reply.

use super::batcher::{Job, JobDone};
use super::http::err;
use super::Shared;
use crate::encoding::{Encoded, Encoding};
use crate::engine::{EngineError, Plan, PlanIo};
use crate::split::statistics::BatchStats;
use axum::http::StatusCode;
use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A GPU worker thread of one model: runs batches until its queue closes, answering every job
/// of a batch with its share of the logits and the batch timing (or the batch's error).
pub(super) fn worker(s: Arc<Shared>, model: usize) {
    let queue = s.queues[model].clone();
    let cfg = &s.config;
    while let Some(batch) = queue.take_batch(cfg.max_batch, cfg.max_delay, cfg.request_timeout) {
        let started = Instant::now();
        let (model, from) = (batch[0].model, batch[0].from);
        // A panic in one batch (a bug in a plan or a driver) must not take the worker, and with
        // one worker the whole server, down: its jobs are answered 500 and the worker goes on.
        // Nothing shared is left half-updated by `run_batch` (it only reads `Shared` and the
        // plan cache's lock is not held while a plan runs), hence `AssertUnwindSafe`.
        let result = panic::catch_unwind(AssertUnwindSafe(|| run_batch(&s, model, from, &batch)))
            .unwrap_or_else(|payload| {
                let why = panic_message(payload.as_ref());
                let samples = batch.iter().map(|j| j.samples).sum();
                let encoding = batch[0].input.encoding;
                // The plan may be in a broken state (buffers half-written): the next batch
                // compiles a fresh one.
                s.plans.remove(&(
                    model,
                    from,
                    capacity_for(samples, s.config.max_batch),
                    encoding,
                ));
                eprintln!(
                    "edgecut serve: a batch of {} request(s) for model '{}' from block {from} \
                     panicked ({why}); answered 500, plan dropped, worker goes on",
                    batch.len(),
                    s.models[model].name()
                );
                Err(format!(
                    "the batch failed internally (a bug in the server: {why}); the server keeps \
                     serving, retry the request and report this if it repeats"
                ))
            });
        let compute = started.elapsed();
        let compute_us = compute.as_micros() as u64;
        let compute_ns = u64::try_from(compute.as_nanos()).unwrap_or(u64::MAX);
        let n = batch.len();
        match result {
            Ok(logits) => {
                let classes = s.models[model].classes();
                let mut at = 0;
                let mut st = s.stats[model].lock().unwrap_or_else(|p| p.into_inner());
                let samples: usize = batch.iter().map(|j| j.samples).sum();
                st.execution_count += 1;
                st.inference_count += samples as u64;
                st.last_inference_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let size = st
                    .batches
                    .entry(samples as u64)
                    .or_insert_with(|| BatchStats {
                        batch_size: samples as u64,
                        ..BatchStats::default()
                    });
                // Decoding and encoding run inside the plan: all of it is compute_infer.
                size.compute_input.add(0);
                size.compute_infer.add(compute_ns);
                size.compute_output.add(0);
                for job in batch {
                    let queued = started.duration_since(job.enqueued);
                    let queue_us = queued.as_micros() as u64;
                    let i = &mut st.inference;
                    i.queue
                        .add(u64::try_from(queued.as_nanos()).unwrap_or(u64::MAX));
                    i.compute_input.add(0);
                    i.compute_infer.add(compute_ns);
                    i.compute_output.add(0);
                    let part = logits[at..at + job.samples * classes].to_vec();
                    at += job.samples * classes;
                    let _ = job.reply.send(Ok(JobDone {
                        logits: part,
                        queue_us,
                        compute_us,
                        batch_requests: n,
                    }));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job
                        .reply
                        .send(Err(err(StatusCode::INTERNAL_SERVER_ERROR, e.clone())));
                }
            }
        }
    }
}

/// The message a panic was raised with, when it is a string.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Batch capacities plans are compiled for: a plan's dispatches are sized for its capacity, so
/// a lone request runs on a capacity-1 plan rather than paying for a full batch.
fn capacity_for(samples: usize, max_batch: usize) -> usize {
    [1, 4, 16]
        .into_iter()
        .find(|&c| c >= samples && c < max_batch)
        .unwrap_or(max_batch)
}

/// The tail plan for `from..` of `model` sized for `samples` and decoding `encoding` in its
/// first step, compiled on first use.
pub(super) fn plan(
    s: &Shared,
    model: usize,
    from: usize,
    samples: usize,
    encoding: Encoding,
) -> Result<Arc<Plan>, EngineError> {
    let capacity = capacity_for(samples, s.config.max_batch);
    s.plans
        .get_or_compile((model, from, capacity, encoding), || {
            let m = &s.models[model];
            let io = PlanIo::decoding(encoding);
            Plan::compile_with(m, from..m.blocks.len(), &s.backend, capacity, io)
        })
}

/// Key of a compiled plan: model index, first block, batch capacity, input encoding.
pub(super) type PlanKey = (usize, usize, usize, Encoding);

/// Compiled plans shared by the workers. Compiling happens outside the lock, so a cold cut
/// (seconds of pipeline creation for a big model) never stalls workers serving warm plans; two
/// workers compiling the same key at once both compile and the first one stored is kept.
pub(super) struct PlanCache<K = PlanKey, V = Plan> {
    plans: Mutex<HashMap<K, Arc<V>>>,
}

impl<K: Eq + Hash + Copy, V> PlanCache<K, V> {
    pub(super) fn new() -> Self {
        Self {
            plans: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Arc<V>>> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value for `key`, or the result of `compile` (run without the lock held).
    pub(super) fn get_or_compile<E>(
        &self,
        key: K,
        compile: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let compiled = Arc::new(compile()?);
        Ok(self.lock().entry(key).or_insert(compiled).clone())
    }

    /// Forgets `key`, so its next use compiles afresh.
    pub(super) fn remove(&self, key: &K) {
        self.lock().remove(key);
    }
}

/// Runs a batch of jobs of one model, cut and encoding as one batch of the tail plan for
/// `from..`: the received bytes go to the plan as they are (uploaded once), its first step
/// decodes them; the logits of all jobs in order.
fn run_batch(s: &Shared, model: usize, from: usize, batch: &[Job]) -> Result<Vec<f32>, String> {
    let parts: Vec<&Encoded> = batch.iter().map(|j| &j.input).collect();
    let samples = batch.iter().map(|j| j.samples).sum();
    let encoding = batch[0].input.encoding;
    let failed = |e: EngineError| format!("running blocks {from}.. failed: {e}");
    let plan = plan(s, model, from, samples, encoding).map_err(failed)?;
    if s.config.inject_panic_at_samples == Some(samples) {
        panic!("injected panic in a batch of {samples} samples (test seam)");
    }
    if let Some((name, delay)) = &s.config.inject_slow_model {
        if s.models[model].name() == name {
            std::thread::sleep(*delay);
        }
    }
    let out = plan.run_encoded(&parts).map_err(failed)?;
    Ok(out.output.into_data())
}

#[cfg(test)]
mod tests {
    use super::PlanCache;
    use std::sync::mpsc::channel;
    use std::sync::Arc;
    use std::time::Duration;

    const PATIENCE: Duration = Duration::from_secs(20);

    #[test]
    fn a_warm_plan_is_served_while_another_worker_compiles_a_cold_one() {
        let cache: Arc<PlanCache<u32, &str>> = Arc::new(PlanCache::new());
        cache
            .get_or_compile(1, || Ok::<_, ()>("warm"))
            .expect("compiles");
        let (started_tx, started) = channel();
        let (release, release_rx) = channel::<()>();
        let cold = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.get_or_compile(2, || {
                    started_tx.send(()).expect("the test waits");
                    // A slow compilation: it ends only when the test says so.
                    release_rx
                        .recv_timeout(PATIENCE)
                        .expect("the test releases it");
                    Ok::<_, ()>("cold")
                })
            })
        };
        started.recv_timeout(PATIENCE).expect("compilation starts");
        // While the cold plan compiles, another worker gets the warm one (had compilation held
        // the lock, this would block until the release below, which comes only after it).
        let (served_tx, served) = channel();
        let warm = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let p = cache.get_or_compile(1, || Err("the warm plan is cached"));
                served_tx.send(p).expect("the test waits");
            })
        };
        let p = served
            .recv_timeout(PATIENCE)
            .expect("a warm plan is served during a cold compilation");
        assert_eq!(*p.expect("cached"), "warm");
        release.send(()).expect("the compiler waits");
        assert_eq!(*cold.join().expect("no panic").expect("compiles"), "cold");
        warm.join().expect("no panic");
    }

    #[test]
    fn two_workers_compiling_one_key_keep_the_first_plan_stored() {
        let cache: Arc<PlanCache<u32, u32>> = Arc::new(PlanCache::new());
        let (started_tx, started) = channel();
        let (release, release_rx) = channel::<()>();
        let slow = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.get_or_compile(7, || {
                    started_tx.send(()).expect("the test waits");
                    release_rx
                        .recv_timeout(PATIENCE)
                        .expect("the test releases it");
                    Ok::<_, ()>(1)
                })
            })
        };
        started.recv_timeout(PATIENCE).expect("compilation starts");
        let fast = cache
            .get_or_compile(7, || Ok::<_, ()>(2))
            .expect("compiles");
        release.send(()).expect("the compiler waits");
        let slow = slow.join().expect("no panic").expect("compiles");
        assert_eq!((*fast, *slow), (2, 2));
        assert!(Arc::ptr_eq(&fast, &slow));
    }

    #[test]
    fn a_failed_compilation_is_not_cached() {
        let cache: PlanCache<u32, u32> = PlanCache::new();
        assert_eq!(
            cache.get_or_compile(3, || Err("no adapter")),
            Err("no adapter")
        );
        assert_eq!(
            *cache
                .get_or_compile(3, || Ok::<_, ()>(5))
                .expect("compiles"),
            5
        );
    }
}
