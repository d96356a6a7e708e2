//! GPU workers: take a batch, decode its inputs, run the tail plan for its cut, reply.

use super::batcher::{Job, JobDone};
use super::http::err;
use super::{Shared, RECENT};
use crate::engine::{EngineError, Plan};
use crate::split::wire::Codec;
use crate::tensor::Tensor;
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::Instant;

pub(super) fn worker(s: Arc<Shared>) {
    let codec = Codec::for_backend(&s.backend);
    while let Some(batch) = s.queue.take_batch(s.config.max_batch, s.config.max_delay) {
        let started = Instant::now();
        let (model, from) = (batch[0].model, batch[0].from);
        let result = run_batch(&s, &codec, model, from, &batch);
        let compute_us = started.elapsed().as_micros() as u64;
        let n = batch.len();
        match result {
            Ok(logits) => {
                let classes = s.models[model].classes();
                let mut at = 0;
                let mut st = s.stats[model].lock().unwrap_or_else(|p| p.into_inner());
                st.batches += 1;
                for job in batch {
                    let queue_us = started.duration_since(job.enqueued).as_micros() as u64;
                    st.samples += job.samples as u64;
                    st.recent.push_back((queue_us, compute_us));
                    if st.recent.len() > RECENT {
                        st.recent.pop_front();
                    }
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
                    let _ = job.reply.send(Err(err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("running blocks {from}.. failed: {e}"),
                    )));
                }
            }
        }
    }
}

/// Batch capacities plans are compiled for: a plan's dispatches are sized for its capacity, so
/// a lone request runs on a capacity-1 plan rather than paying for a full batch.
fn capacity_for(samples: usize, max_batch: usize) -> usize {
    [1, 4, 16]
        .into_iter()
        .find(|&c| c >= samples && c < max_batch)
        .unwrap_or(max_batch)
}

pub(super) fn plan(
    s: &Shared,
    model: usize,
    from: usize,
    samples: usize,
) -> Result<Arc<Plan>, EngineError> {
    let capacity = capacity_for(samples, s.config.max_batch);
    let mut plans = s.plans.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = plans.get(&(model, from, capacity)) {
        return Ok(p.clone());
    }
    let m = &s.models[model];
    let p = Arc::new(Plan::compile(
        m,
        from..m.blocks.len(),
        &s.backend,
        capacity,
    )?);
    plans.insert((model, from, capacity), p.clone());
    Ok(p)
}

fn run_batch(
    s: &Shared,
    codec: &Codec,
    model: usize,
    from: usize,
    batch: &[Job],
) -> Result<Vec<f32>, String> {
    let mut data = Vec::new();
    let mut samples = 0;
    for job in batch {
        let t = codec.decode(&job.input).map_err(|e| e.to_string())?;
        samples += t.batch();
        data.extend_from_slice(t.data());
    }
    let plan = plan(s, model, from, samples).map_err(|e| e.to_string())?;
    let mut shape = vec![samples];
    shape.extend_from_slice(plan.input_shape());
    let x = Tensor::new(shape, data).map_err(|e| e.to_string())?;
    let out = plan.run(&x).map_err(|e| e.to_string())?;
    Ok(out.output.into_data())
}
