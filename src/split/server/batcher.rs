//! The bounded GPU queue of one model: jobs wait here until a worker takes the oldest one
//! together with every queued job for the same cut, up to the batch size or the batching
//! deadline. Jobs nobody waits for any more (the client left, or its deadline passed) are
//! dropped before they cost compute.

use super::http::{err, ApiError};
use crate::encoding::Encoded;
use axum::http::StatusCode;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a validated request asks the GPU to do.
pub(super) struct Job {
    pub(super) model: usize,
    pub(super) from: usize,
    pub(super) input: Encoded,
    pub(super) samples: usize,
    pub(super) enqueued: Instant,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<JobDone, ApiError>>,
}

pub(super) struct JobDone {
    pub(super) logits: Vec<f32>,
    pub(super) queue_us: u64,
    pub(super) compute_us: u64,
    pub(super) batch_requests: usize,
}

pub(super) struct QueueState {
    pub(super) jobs: VecDeque<Job>,
    pub(super) closed: bool,
}

/// The bounded GPU queue.
pub(super) struct Queue {
    pub(super) jobs: Mutex<QueueState>,
    pub(super) ready: Condvar,
    pub(super) capacity: usize,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub(super) fn push(&self, job: Job) -> Result<(), Job> {
        let mut q = self.lock();
        if q.closed || q.jobs.len() >= self.capacity {
            return Err(job);
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_all();
        Ok(())
    }

    pub(super) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.jobs.clear();
        drop(q);
        self.ready.notify_all();
    }

    /// The next batch: the oldest job plus every queued job for the same cut, waiting up to
    /// `max_delay` after the oldest arrived for more while fewer than `max_batch` samples.
    /// Jobs whose client has gone are dropped, and those queued for `timeout` or longer are
    /// answered 504, before they join a batch.
    pub(super) fn take_batch(
        &self,
        max_batch: usize,
        max_delay: Duration,
        timeout: Duration,
    ) -> Option<Vec<Job>> {
        let mut q = self.lock();
        let first = loop {
            if q.closed {
                return None;
            }
            match q.jobs.pop_front() {
                Some(job) => {
                    if let Some(job) = live(job, timeout) {
                        break job;
                    }
                }
                None => q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
            }
        };
        // One batch runs one plan, which decodes one encoding in its first step.
        let key = (first.model, first.from, first.input.encoding);
        let deadline = first.enqueued + max_delay;
        let mut samples = first.samples;
        let mut batch = vec![first];
        loop {
            let mut i = 0;
            while i < q.jobs.len() && samples < max_batch {
                let j = &q.jobs[i];
                if (j.model, j.from, j.input.encoding) == key && samples + j.samples <= max_batch {
                    let j = q.jobs.remove(i).expect("index is in range");
                    if let Some(j) = live(j, timeout) {
                        samples += j.samples;
                        batch.push(j);
                    }
                } else {
                    i += 1;
                }
            }
            let now = Instant::now();
            if samples >= max_batch || now >= deadline || q.closed {
                return Some(batch);
            }
            q = self
                .ready
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// The job if someone still waits for its answer: `None` when its client has gone (the
/// request's handler dropped the receiver) or it waited `timeout` already (answered 504).
fn live(job: Job, timeout: Duration) -> Option<Job> {
    if job.reply.is_closed() {
        return None;
    }
    let waited = job.enqueued.elapsed();
    if waited >= timeout {
        let _ = job.reply.send(Err(err(
            StatusCode::GATEWAY_TIMEOUT,
            format!("queued for {waited:?}, past the server's request timeout; not computed"),
        )));
        return None;
    }
    Some(job)
}
