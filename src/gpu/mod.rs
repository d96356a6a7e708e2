//! The GPU side: adapter choice (`GpuContext`), the WGSL shaders, one launcher per kernel
//! family (`kernels`) and the readback helper.

mod context;
pub mod kernels;
pub mod shaders;

pub use context::{list_adapters, list_adapters_raw, AdapterSummary, GpuContext, Tiling};
pub use shaders::Shader;

use thiserror::Error;
use wgpu::util::DeviceExt;

/// Errors of the GPU layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter matched the request.
    #[error("no GPU adapter matches ({filter}); adapters found: {found}. Install a Vulkan driver (e.g. mesa-vulkan-drivers for the lavapipe CPU fallback), unset WGPU_ADAPTER_NAME/WGPU_BACKEND, or use --backend cpu")]
    NoAdapter {
        /// The filters in force.
        filter: String,
        /// Every adapter seen.
        found: String,
    },
    /// The adapter refused to open a device.
    #[error("adapter '{adapter}' could not open a device: {reason}")]
    Device {
        /// Adapter name.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// A size exceeds a device limit.
    #[error("{what} needs {needed}, but the adapter's {limit_name} is {limit}; use a smaller --batch or a larger GPU")]
    LimitExceeded {
        /// What was being created.
        what: String,
        /// The amount needed.
        needed: u64,
        /// Which limit.
        limit_name: &'static str,
        /// The limit's value.
        limit: u64,
    },
    /// Mapping a buffer for readback failed.
    #[error("reading results back from the GPU failed: {0}")]
    Readback(String),
    /// The device reported an error (validation, out of memory, lost device).
    #[error("GPU error in {context}: {reason}")]
    Failed {
        /// What was running.
        context: String,
        /// wgpu's message.
        reason: String,
    },
}

/// Checks a storage buffer size against the device limits.
pub fn check_storage_size(ctx: &GpuContext, what: &str, bytes: u64) -> Result<(), GpuError> {
    let binding = ctx.limits.max_storage_buffer_binding_size;
    if bytes > binding {
        return Err(GpuError::LimitExceeded {
            what: what.to_string(),
            needed: bytes,
            limit_name: "max_storage_buffer_binding_size",
            limit: binding,
        });
    }
    if bytes > ctx.limits.max_buffer_size {
        return Err(GpuError::LimitExceeded {
            what: what.to_string(),
            needed: bytes,
            limit_name: "max_buffer_size",
            limit: ctx.limits.max_buffer_size,
        });
    }
    Ok(())
}

/// Rounds a byte size up to a multiple of 16 (one vec4), at least 16.
pub fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(16).max(1) * 16
}

/// Creates a storage buffer holding `data` (padded to 16 bytes).
pub fn upload<T: bytemuck::Pod>(
    ctx: &GpuContext,
    label: &str,
    data: &[T],
) -> Result<wgpu::Buffer, GpuError> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    check_storage_size(ctx, label, bytes.len() as u64)?;
    ctx.count_created(1);
    let mut contents = bytes.to_vec();
    contents.resize(padded(bytes.len() as u64) as usize, 0);
    Ok(ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &contents,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        }))
}

/// Creates an uninitialised (zeroed) storage buffer of `bytes` (padded to 16).
pub fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
    check_storage_size(ctx, label, bytes)?;
    ctx.count_created(1);
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: padded(bytes),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    }))
}

/// A buffer the CPU can map to read results.
pub fn staging(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.count_created(1);
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: padded(bytes),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Copies the first `len` f32 values of a storage buffer (with `COPY_SRC`) back to the host:
/// one copy, one submission, [`read_back`].
pub fn read_buffer(
    ctx: &GpuContext,
    label: &str,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    let st = staging(ctx, label, (len * 4) as u64);
    let mut enc = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    enc.copy_buffer_to_buffer(buffer, 0, &st, 0, padded((len * 4) as u64));
    ctx.queue.submit([enc.finish()]);
    let mut v = read_back(ctx, &st, len)?;
    v.truncate(len);
    Ok(v)
}

/// How long a readback waits for its map callback after the device went idle.
const READBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The one readback path: waits for submitted work, maps `staging`, copies `len` f32 values
/// out and unmaps. Mapping is asynchronous in wgpu; the callback fires during `poll`, so we
/// wait on the device rather than spin, and surface a failed map as an error.
pub fn read_back(
    ctx: &GpuContext,
    staging: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<f32>, GpuError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let bytes = (len * 4) as u64;
    let (tx, mut rx) = futures_channel::oneshot::channel();
    staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| GpuError::Readback(e.to_string()))?;
    // When several threads share the device, another thread's poll may be the one running our
    // callback, a moment after our own poll returned: keep polling until it arrives.
    let deadline = std::time::Instant::now() + READBACK_TIMEOUT;
    loop {
        match rx.try_recv() {
            Ok(Some(Ok(()))) => break,
            Ok(Some(Err(e))) => return Err(GpuError::Readback(e.to_string())),
            Ok(None) if std::time::Instant::now() < deadline => {
                ctx.device
                    .poll(wgpu::PollType::Poll)
                    .map_err(|e| GpuError::Readback(e.to_string()))?;
                std::thread::yield_now();
            }
            Ok(None) => {
                return Err(GpuError::Readback(format!(
                    "the buffer was not mapped within {READBACK_TIMEOUT:?}"
                )))
            }
            Err(_) => return Err(GpuError::Readback("the map request was dropped".into())),
        }
    }
    let out = {
        let view = staging
            .get_mapped_range(0..bytes)
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        bytemuck::pod_collect_to_vec::<u8, f32>(&view)
    };
    staging.unmap();
    Ok(out)
}
