//! The GPU executor: turns the planner's dispatches into buffers, bind groups and pipelines at
//! compile time; a run writes the input, encodes every dispatch into one compute pass, submits
//! once and reads everything back through one staging buffer. With a [`PlanIo`], decoding the
//! received split tensor is the pass's first dispatch and encoding the output its last
//! (`quant.wgsl`), so the wire bytes come back in the same readback.

use super::plan::{self, Placed, Work};
use super::{EngineError, ExitOutput, OpTimes, PlanIo, PlanOutput};
use crate::cpu::ExitStat;
use crate::encoding::{encode_cpu, Encoded, Encoding, Int8Params};
use crate::gpu::kernels::{self, Kernel, QuantParams};
use crate::gpu::{self, GpuContext, GpuError};
use crate::model::{Model, Op};
use crate::tensor::Tensor;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Two `u64` GPU timestamps.
const TIMESTAMP_BYTES: u64 = 16;

/// The first dispatch of a tail plan: packed FP16 / INT8 words to the f32 input.
struct Decode {
    encoding: Encoding,
    /// Received bytes, padded to whole words.
    packed: wgpu::Buffer,
    /// INT8 `(scale, zero_point)` per sample row (unused by FP16).
    rows: wgpu::Buffer,
    kernel: Kernel,
}

/// The last dispatches of a head plan: the output packed into FP16 / INT8 words.
struct Encode {
    encoding: Encoding,
    packed: wgpu::Buffer,
    /// INT8 `(scale, zero_point, min, max)` written by `int8_range`.
    range: wgpu::Buffer,
    kernels: Vec<Kernel>,
}

pub(crate) struct GpuPlan {
    ctx: Arc<GpuContext>,
    model: Arc<Model>,
    range: Range<usize>,
    capacity: usize,
    kernels: Vec<Kernel>,
    _weights: Vec<kernels::OpWeights>,
    _constants: Vec<wgpu::Buffer>,
    slots: Vec<wgpu::Buffer>,
    input_slot: usize,
    output_slot: usize,
    input_elems: usize,
    output_elems: usize,
    exit_bufs: Vec<(usize, wgpu::Buffer, wgpu::Buffer)>,
    final_stats: Option<wgpu::Buffer>,
    io: PlanIo,
    /// `None` for FP32 input, whose bytes are the input buffer's.
    decode: Option<Decode>,
    /// `None` for FP32 output, whose bytes are the output's.
    encode: Option<Encode>,
    staging: wgpu::Buffer,
    /// Timestamp queries around the compute pass and their resolve buffer (adapters with
    /// `TIMESTAMP_QUERY`).
    timestamps: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// Runs of one plan share its buffers, so they take turns.
    lock: Mutex<()>,
}

/// Buffers and dispatches of the model's steps.
struct Recorded {
    kernels: Vec<Kernel>,
    weights: Vec<kernels::OpWeights>,
    /// Constant operands of binary ops.
    constants: Vec<wgpu::Buffer>,
}

fn record_steps(
    ctx: &GpuContext,
    placed: &[Placed<'_>],
    slot_of: &[usize],
    slots: &[wgpu::Buffer],
    batch: usize,
) -> Result<Recorded, EngineError> {
    let mut out = Recorded {
        kernels: Vec::new(),
        weights: Vec::new(),
        constants: Vec::new(),
    };
    for p in placed {
        let (x, y) = (&slots[slot_of[p.input]], &slots[slot_of[p.output]]);
        match &p.work {
            Work::Step(step) => {
                let w = kernels::OpWeights::upload(ctx, &step.label, &step.op)?;
                let constant = kernels::upload_constant(ctx, &step.label, &step.op)?;
                let mut others: Vec<&wgpu::Buffer> =
                    p.others.iter().map(|&o| &slots[slot_of[o]]).collect();
                others.extend(constant.as_ref());
                out.kernels
                    .extend(kernels::step(ctx, step, batch, w.as_ref(), x, &others, y)?);
                out.weights.extend(w);
                out.constants.extend(constant);
            }
            Work::FanInFm { step, out_fm } => {
                let Op::FanIn(f) = &step.op else {
                    unreachable!("only fan-in steps read feature-major inputs")
                };
                let w = kernels::OpWeights::upload(ctx, &step.label, &step.op)?
                    .expect("fan-in ops carry weights");
                out.kernels.push(kernels::fanin_fm(
                    ctx,
                    &step.label,
                    f,
                    batch,
                    &w,
                    x,
                    y,
                    *out_fm,
                )?);
                out.weights.push(w);
            }
            Work::GatedConv(step) => {
                let Op::Conv2d(c) = &step.op else {
                    unreachable!("only convolutions take a gate")
                };
                let w = kernels::OpWeights::upload(ctx, &step.label, &step.op)?
                    .expect("convolutions carry weights");
                let hw = (step.input_shape[1], step.input_shape[2]);
                let gate = &slots[slot_of[p.others[0]]];
                out.kernels.push(kernels::gated_conv1x1(
                    ctx,
                    &step.label,
                    c,
                    batch,
                    hw,
                    &w,
                    x,
                    gate,
                    y,
                )?);
                out.weights.push(w);
            }
            Work::ToFeatureMajor { label, features } => {
                out.kernels.push(kernels::to_feature_major(
                    ctx, label, *features, batch, x, y,
                )?);
            }
        }
    }
    Ok(out)
}

/// Exit statistics dispatches (after the steps, before the encode) and their buffers.
struct Exits {
    kernels: Vec<Kernel>,
    bufs: Vec<(usize, wgpu::Buffer, wgpu::Buffer)>,
    final_stats: Option<wgpu::Buffer>,
}

fn record_exits(
    ctx: &GpuContext,
    model: &Model,
    exit_slots: &[(usize, usize)],
    ends: bool,
    slots: &[wgpu::Buffer],
    output_slot: usize,
    batch: usize,
) -> Result<Exits, EngineError> {
    let classes = model.classes();
    let mut out = Exits {
        kernels: Vec::new(),
        bufs: Vec::new(),
        final_stats: None,
    };
    let stats_of = |label: &str, logits: &wgpu::Buffer| -> Result<_, EngineError> {
        let stats = gpu::storage(ctx, &format!("{label}.stats"), (batch * 16) as u64)?;
        let k = kernels::exit(ctx, label, "exit_stats", batch, classes, logits, &stats)?;
        Ok((k, stats))
    };
    for &(e, slot) in exit_slots {
        let (k, stats) = stats_of(&model.exits[e].name, &slots[slot])?;
        out.kernels.push(k);
        out.bufs.push((e, slots[slot].clone(), stats));
    }
    if ends {
        let (k, stats) = stats_of("final", &slots[output_slot])?;
        out.kernels.push(k);
        out.final_stats = Some(stats);
    }
    Ok(out)
}

impl Decode {
    fn build(
        ctx: &GpuContext,
        encoding: Encoding,
        elems: usize,
        batch: usize,
        input: &wgpu::Buffer,
    ) -> Result<Option<Self>, GpuError> {
        let entry = match encoding {
            Encoding::Fp32 => return Ok(None),
            Encoding::Fp16 => "unpack_f16",
            Encoding::Int8 => "dequantize_int8",
        };
        let len = elems * batch;
        let params = QuantParams::new(len, elems, encoding);
        let packed = gpu::storage(ctx, "decode.packed", params.words as u64 * 4)?;
        let rows = gpu::storage(ctx, "decode.rows", (batch * 8) as u64)?;
        let kernel = kernels::quant(ctx, "decode", entry, params, &packed, &rows, input, len)?;
        Ok(Some(Self {
            encoding,
            packed,
            rows,
            kernel,
        }))
    }

    /// Writes received parts (`n` samples in all) for the next pass: their bytes back to back,
    /// padded to a word, and INT8 parameters per sample row.
    fn write(&self, ctx: &GpuContext, parts: &[&Encoded], n: usize, elems: usize) {
        let mut bytes = Vec::with_capacity(n * elems * self.encoding.bytes_per_value() + 3);
        let mut rows = Vec::new();
        for p in parts {
            bytes.extend_from_slice(&p.bytes);
            if let Some(q) = p.int8 {
                let samples = p.shape.first().copied().unwrap_or(0);
                rows.extend((0..samples).flat_map(|_| [q.scale, q.zero_point as f32]));
            }
        }
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        ctx.queue.write_buffer(&self.packed, 0, &bytes);
        if !rows.is_empty() {
            ctx.queue
                .write_buffer(&self.rows, 0, bytemuck::cast_slice(&rows));
        }
        let params = QuantParams::new(n * elems, elems, self.encoding);
        self.kernel.write_params(&ctx.queue, &params);
    }
}

impl Encode {
    fn build(
        ctx: &GpuContext,
        encoding: Encoding,
        elems: usize,
        batch: usize,
        output: &wgpu::Buffer,
    ) -> Result<Option<Self>, GpuError> {
        if encoding == Encoding::Fp32 {
            return Ok(None);
        }
        let params = QuantParams::new(elems * batch, elems, encoding);
        let words = params.words as usize;
        let packed = gpu::storage(ctx, "encode.packed", words as u64 * 4)?;
        let range = gpu::storage(ctx, "encode.range", 16)?;
        let kernels = match encoding {
            Encoding::Int8 => {
                let wg = kernels::WORKGROUP as usize;
                // `int8_range` never reads its `range` binding: `packed` fills the slot.
                let find = kernels::quant(
                    ctx,
                    "encode",
                    "int8_range",
                    params,
                    output,
                    &packed,
                    &range,
                    wg,
                )?;
                let q = "quantize_int8";
                let quantize =
                    kernels::quant(ctx, "encode", q, params, output, &range, &packed, words)?;
                vec![find, quantize]
            }
            _ => vec![kernels::quant(
                ctx, "encode", "pack_f16", params, output, &range, &packed, words,
            )?],
        };
        Ok(Some(Self {
            encoding,
            packed,
            range,
            kernels,
        }))
    }

    fn words(&self) -> usize {
        (self.packed.size() / 4) as usize
    }
}

impl GpuPlan {
    pub fn compile(
        ctx: Arc<GpuContext>,
        model: &Arc<Model>,
        range: Range<usize>,
        exits: &[usize],
        batch: usize,
        io: PlanIo,
    ) -> Result<Self, EngineError> {
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let plan = Self::build(ctx.clone(), model, range.clone(), exits, batch, io);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Failed {
                context: format!("compiling blocks {range:?} of {}", model.name()),
                reason: e.to_string(),
            }
            .into());
        }
        plan
    }

    fn build(
        ctx: Arc<GpuContext>,
        model: &Arc<Model>,
        range: Range<usize>,
        exits: &[usize],
        batch: usize,
        io: PlanIo,
    ) -> Result<Self, EngineError> {
        let sched = plan::schedule(model, range.clone(), exits);
        let (placed, values) = plan::place(&sched, batch, &|c| kernels::subgroup_gemm(&ctx, c));
        let slots = plan::assign_slots(&plan::edges(&placed), values, &plan::kept_values(&sched));
        let slot_of = slots.of;
        // Feature-major values pad the batch to quads of 4 rows.
        let slot_bytes = (sched.max_elems * batch.next_multiple_of(4) * 4) as u64;
        let buffers = (0..slots.count)
            .map(|i| gpu::storage(&ctx, &format!("activations.{i}"), slot_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let steps = record_steps(&ctx, &placed, &slot_of, &buffers, batch)?;
        let (input_slot, output_slot) = (slot_of[0], slot_of[sched.output]);
        let input_elems: usize = model.shape_at(range.start).iter().product();
        let output_elems: usize = model.shape_at(range.end).iter().product();
        let decode = match io.input {
            Some(e) => Decode::build(&ctx, e, input_elems, batch, &buffers[input_slot])?,
            None => None,
        };
        let encode = match io.output {
            Some(e) => Encode::build(&ctx, e, output_elems, batch, &buffers[output_slot])?,
            None => None,
        };
        let exit_slots: Vec<(usize, usize)> = sched
            .exit_outputs
            .iter()
            .map(|&(e, v)| (e, slot_of[v]))
            .collect();
        let ends = range.end == model.blocks.len();
        let exits = record_exits(&ctx, model, &exit_slots, ends, &buffers, output_slot, batch)?;
        let mut kernels = steps.kernels;
        kernels.extend(exits.kernels);
        let encoded_words = encode.as_ref().map_or(0, |e| e.words() + 4);
        let readback_elems = batch
            * (output_elems
                + exits.bufs.len() * (model.classes() + 4)
                + if exits.final_stats.is_some() { 4 } else { 0 })
            + encoded_words;
        let staging_bytes = (readback_elems * 4) as u64 + TIMESTAMP_BYTES;
        Ok(Self {
            staging: gpu::staging(&ctx, "plan.readback", staging_bytes),
            timestamps: timestamps(&ctx),
            ctx,
            model: model.clone(),
            range,
            capacity: batch,
            kernels,
            _weights: steps.weights,
            _constants: steps.constants,
            slots: buffers,
            input_slot,
            output_slot,
            input_elems,
            output_elems,
            exit_bufs: exits.bufs,
            final_stats: exits.final_stats,
            io,
            decode,
            encode,
            lock: Mutex::new(()),
        })
    }

    /// Activation buffers in the pool.
    pub fn activation_buffers(&self) -> usize {
        self.slots.len()
    }

    /// Dispatch labels in encoding order (decode, steps, exits, encode).
    pub fn kernel_labels(&self) -> Vec<String> {
        let decode = self.decode.iter().map(|d| &d.kernel);
        let encode = self.encode.iter().flat_map(|e| &e.kernels);
        decode
            .chain(&self.kernels)
            .chain(encode)
            .map(|k| k.label.clone())
            .collect()
    }

    pub fn run(&self, input: &Tensor) -> Result<PlanOutput, EngineError> {
        let _turn = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let input_buf = &self.slots[self.input_slot];
        let bytes: &[u8] = bytemuck::cast_slice(input.data());
        self.ctx.queue.write_buffer(input_buf, 0, bytes);
        let out = self.execute(input.batch(), false);
        self.checked(scope, out)
    }

    /// [`Self::run`] after timing every step dispatch on its own (submit and wait, wall
    /// clock), added to `times` under the kernel's name: where the time goes, and, against
    /// the run's own time, what a dispatch costs beyond its work.
    pub fn run_profiled(
        &self,
        input: &Tensor,
        times: &mut OpTimes,
    ) -> Result<PlanOutput, EngineError> {
        {
            let _turn = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let scope = self
                .ctx
                .device
                .push_error_scope(wgpu::ErrorFilter::Validation);
            let bytes: &[u8] = bytemuck::cast_slice(input.data());
            self.ctx
                .queue
                .write_buffer(&self.slots[self.input_slot], 0, bytes);
            let mut timed = || -> Result<(), GpuError> {
                for k in &self.kernels {
                    let start = std::time::Instant::now();
                    let enc = kernels::encode_pass(&self.ctx, "plan.profile", [k]);
                    self.ctx.queue.submit([enc.finish()]);
                    self.ctx
                        .device
                        .poll(wgpu::PollType::wait_indefinitely())
                        .map_err(|e| GpuError::Failed {
                            context: k.label.clone(),
                            reason: e.to_string(),
                        })?;
                    times.add(kernel_kind(&k.label), start.elapsed().as_secs_f64());
                }
                Ok(())
            };
            let out = timed().map_err(EngineError::from);
            self.checked(scope, out)?;
        }
        self.run(input)
    }

    /// Runs received parts (`n` samples in all, checked by the caller against the plan).
    pub fn run_encoded(&self, parts: &[&Encoded], n: usize) -> Result<PlanOutput, EngineError> {
        let _turn = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let scope = self
            .ctx
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let decoding = match &self.decode {
            Some(d) => {
                d.write(&self.ctx, parts, n, self.input_elems);
                true
            }
            None => {
                // FP32 bytes are the input buffer's contents as they are.
                let mut at = 0;
                for p in parts {
                    let input_buf = &self.slots[self.input_slot];
                    self.ctx.queue.write_buffer(input_buf, at, &p.bytes);
                    at += p.bytes.len() as u64;
                }
                false
            }
        };
        let out = self.execute(n, decoding);
        self.checked(scope, out)
    }

    fn checked<T>(
        &self,
        scope: wgpu::ErrorScopeGuard,
        out: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Failed {
                context: format!("plan {:?} of {}", self.range, self.model.name()),
                reason: e.to_string(),
            }
            .into());
        }
        out
    }

    /// Encodes one pass (the decode first when `decoding`, the encode last), copies every
    /// result into the staging buffer, submits once and reads back.
    fn execute(&self, n: usize, decoding: bool) -> Result<PlanOutput, EngineError> {
        let ctx = &self.ctx;
        if let Some(e) = &self.encode {
            let params = QuantParams::new(n * self.output_elems, self.output_elems, e.encoding);
            for k in &e.kernels {
                k.write_params(&ctx.queue, &params);
            }
        }
        let decode = self.decode.iter().filter(|_| decoding).map(|d| &d.kernel);
        let encode = self.encode.iter().flat_map(|e| &e.kernels);
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("plan.run"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("plan.steps"),
                timestamp_writes: self.timestamps.as_ref().map(|(set, _)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }
                }),
            });
            for k in decode.chain(&self.kernels).chain(encode) {
                k.encode(&mut pass);
            }
        }
        let at = self.record_copies(&mut enc);
        ctx.queue.submit([enc.finish()]);
        let data = gpu::read_back(ctx, &self.staging, at.total)?;
        Ok(self.unpack(&data, &at, n))
    }

    /// Records the copies into the staging buffer; returns where each result lands (in f32s).
    fn record_copies(&self, enc: &mut wgpu::CommandEncoder) -> Offsets {
        let (cap, classes) = (self.capacity, self.model.classes());
        let mut offset = 0u64;
        let mut copy = |enc: &mut wgpu::CommandEncoder, src: &wgpu::Buffer, elems: usize| {
            let bytes = (elems * 4) as u64;
            enc.copy_buffer_to_buffer(src, 0, &self.staging, offset, bytes);
            offset += bytes;
            ((offset - bytes) / 4) as usize
        };
        let output = copy(enc, &self.slots[self.output_slot], cap * self.output_elems);
        let exits = self
            .exit_bufs
            .iter()
            .map(|(_, logits, stats)| (copy(enc, logits, cap * classes), copy(enc, stats, cap * 4)))
            .collect();
        let final_stats = self.final_stats.as_ref().map(|s| copy(enc, s, cap * 4));
        let encoded = self
            .encode
            .as_ref()
            .map(|e| (copy(enc, &e.packed, e.words()), copy(enc, &e.range, 4)));
        let ticks = self.timestamps.as_ref().map(|(set, resolve)| {
            enc.resolve_query_set(set, 0..2, resolve, 0);
            copy(enc, resolve, (TIMESTAMP_BYTES / 4) as usize)
        });
        Offsets {
            output,
            exits,
            final_stats,
            encoded,
            ticks,
            total: (offset / 4) as usize,
        }
    }

    /// Splits the readback into the plan's results for `n` samples.
    fn unpack(&self, data: &[f32], at: &Offsets, n: usize) -> PlanOutput {
        let classes = self.model.classes();
        let stats_of = |at: usize| -> Vec<ExitStat> {
            data[at..at + n * 4]
                .chunks(4)
                .map(|c| ExitStat {
                    confidence: c[0],
                    entropy: c[1],
                    argmax: c[2] as u32,
                })
                .collect()
        };
        let mut shape = vec![n];
        shape.extend_from_slice(self.model.shape_at(self.range.end));
        let out = &data[at.output..at.output + n * self.output_elems];
        let output = Tensor::new(shape, out.to_vec()).expect("readback matches the output shape");
        let exits = self
            .exit_bufs
            .iter()
            .zip(&at.exits)
            .map(|((e, _, _), &(l, s))| ExitOutput {
                exit: *e,
                logits: Tensor::new(vec![n, classes], data[l..l + n * classes].to_vec())
                    .expect("readback matches the logits shape"),
                stats: stats_of(s),
            })
            .collect();
        let encoded = match (&self.encode, at.encoded) {
            (Some(e), Some((words, range))) => {
                let mut bytes: Vec<u8> =
                    bytemuck::cast_slice(&data[words..words + e.words()]).to_vec();
                bytes.truncate(output.len() * e.encoding.bytes_per_value());
                let int8 = (e.encoding == Encoding::Int8).then(|| Int8Params {
                    scale: data[range],
                    zero_point: data[range + 1] as i32,
                });
                Some(Encoded {
                    encoding: e.encoding,
                    shape: output.shape().to_vec(),
                    bytes,
                    int8,
                })
            }
            _ => self.io.output.map(|e| encode_cpu(&output, e)),
        };
        PlanOutput {
            device_seconds: at.ticks.and_then(|t| self.seconds(&data[t..t + 4])),
            final_stats: at.final_stats.map(stats_of),
            output,
            exits,
            encoded,
        }
    }

    /// Seconds between the two timestamps in `ticks` (four f32 words holding two u64).
    fn seconds(&self, ticks: &[f32]) -> Option<f64> {
        let bytes: Vec<u8> = ticks.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let start = u64::from_ne_bytes(bytes[0..8].try_into().ok()?);
        let end = u64::from_ne_bytes(bytes[8..16].try_into().ok()?);
        let elapsed = end.checked_sub(start).filter(|&t| t > 0)?;
        Some(elapsed as f64 * self.ctx.queue.get_timestamp_period() as f64 * 1e-9)
    }
}

/// The profile key of a dispatch: its kernel and tile, the last part of its label
/// (`block3.conv.conv1x1_vec4_c8` -> `conv1x1_vec4_c8`).
fn kernel_kind(label: &str) -> String {
    label.rsplit('.').next().unwrap_or(label).to_string()
}

/// Where each result lands in the readback, in f32 words.
struct Offsets {
    output: usize,
    exits: Vec<(usize, usize)>,
    final_stats: Option<usize>,
    /// Packed words and the INT8 range.
    encoded: Option<(usize, usize)>,
    ticks: Option<usize>,
    total: usize,
}

fn timestamps(ctx: &GpuContext) -> Option<(wgpu::QuerySet, wgpu::Buffer)> {
    ctx.features
        .contains(wgpu::Features::TIMESTAMP_QUERY)
        .then(|| {
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("plan.timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("plan.timestamps.resolve"),
                size: TIMESTAMP_BYTES,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve)
        })
}
