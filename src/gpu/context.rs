//! `GpuContext`: one adapter, its device and queue, and the pipeline cache.

use super::shaders::Shader;
use super::GpuError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Key of a cached compute pipeline: shader, entry point and override constants
/// (values stored as bits so the key is hashable).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: Shader,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

/// A description of an adapter, for listings and reports.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// Adapter name.
    pub name: String,
    /// Backend (`vulkan`, `gl`, `metal`, `dx12`).
    pub backend: String,
    /// Device type (discrete, integrated, cpu…).
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, driver {})",
            self.name, self.backend, self.device_type, self.driver
        )
    }
}

impl From<&wgpu::AdapterInfo> for AdapterSummary {
    fn from(info: &wgpu::AdapterInfo) -> Self {
        let driver = format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string();
        Self {
            name: info.name.clone(),
            backend: info.backend.to_str().to_string(),
            device_type: format!("{:?}", info.device_type).to_lowercase(),
            driver,
        }
    }
}

/// How the convolution and dense kernels tile their work, chosen per adapter class: the plan
/// records it in its kernel labels (`conv1x1_vec4_c8`, `conv1x1_subgroup_vec4`,
/// `conv_shared_k3x3`, `depthwise_shared_k5x5s2x2`, `dense_subgroup`) and the bench report
/// shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tiling {
    /// Register tiles with workgroup-uniform weight loads: CPU-emulated adapters (lavapipe)
    /// run invocations as SIMD lanes, where workgroup memory and barriers only add copies.
    Registers,
    /// Workgroup-shared tiles with coalesced loads for convolutions (`conv_shared`,
    /// `depthwise_shared`): hardware GPUs, whose memory system rewards staging tiles on chip.
    Shared,
    /// Register tiles whose operands common to every lane (weight rows of a 1x1 convolution
    /// with 16 or more outputs, input rows of a dense layer over 16 or more rows) are loaded
    /// once per subgroup and shared by broadcasts: CPU adapters with subgroups of 8 or more
    /// invocations, which load memory lane by lane.
    Subgroup,
}

/// Smallest subgroup the subgroup tiles work with (their shared rows come from 8 lanes).
const SUBGROUP_MIN_LANES: u32 = 8;

impl Tiling {
    /// The variant that suits an adapter: subgroup-shared registers on CPU adapters with
    /// subgroups (`features` as enabled on the device), registers on other CPU adapters,
    /// shared tiles elsewhere.
    pub fn for_adapter(info: &wgpu::AdapterInfo, features: wgpu::Features) -> Self {
        match info.device_type {
            wgpu::DeviceType::Cpu if Self::subgroups_usable(info, features) => Tiling::Subgroup,
            wgpu::DeviceType::Cpu => Tiling::Registers,
            _ => Tiling::Shared,
        }
    }

    /// True when the device can run [`Tiling::Subgroup`]: subgroup operations enabled and
    /// subgroups of at least 8 invocations.
    pub fn subgroups_usable(info: &wgpu::AdapterInfo, features: wgpu::Features) -> bool {
        features.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= SUBGROUP_MIN_LANES
    }

    /// Short name for reports (`registers`, `shared`, `subgroup`).
    pub fn name(self) -> &'static str {
        match self {
            Tiling::Registers => "registers",
            Tiling::Shared => "shared",
            Tiling::Subgroup => "subgroup",
        }
    }
}

/// One GPU adapter with its device, queue and pipeline cache. Build once, share by
/// reference (it is `Send + Sync`); every GPU function takes `&GpuContext`.
pub struct GpuContext {
    /// The logical device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// What the adapter is.
    pub info: wgpu::AdapterInfo,
    /// Limits granted to the device (the adapter's own).
    pub limits: wgpu::Limits,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// The tiling in use ([`Tiling::for_adapter`] unless overridden with
    /// [`GpuContext::with_tiling`]).
    pub tiling: Tiling,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<usize, Arc<wgpu::BindGroupLayout>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Buffers and bind groups made through this crate's helpers, so tests can check that a
    /// compiled plan makes none while it runs.
    created: AtomicUsize,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .finish()
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see on this machine, on every backend.
pub fn list_adapters() -> Vec<AdapterSummary> {
    list_adapters_raw()
        .iter()
        .map(|a| AdapterSummary::from(&a.get_info()))
        .collect()
}

/// Every adapter on every backend, ready to open with [`GpuContext::from_adapter`].
pub fn list_adapters_raw() -> Vec<wgpu::Adapter> {
    let inst = instance(wgpu::Backends::all());
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl GpuContext {
    /// Opens the best adapter, honouring wgpu's `WGPU_BACKEND` (e.g. `vulkan`, `gl`) and
    /// `WGPU_ADAPTER_NAME` (substring, case-insensitive). Discrete GPUs are preferred over
    /// integrated, virtual and CPU (software) adapters.
    pub fn new() -> Result<Self, GpuError> {
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let wanted = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let inst = instance(backends);
        let mut adapters: Vec<wgpu::Adapter> =
            pollster::block_on(inst.enumerate_adapters(backends))
                .into_iter()
                .filter(|a| {
                    wanted
                        .as_deref()
                        .is_none_or(|w| a.get_info().name.to_lowercase().contains(w))
                })
                .collect();
        adapters.sort_by_key(|a| {
            let info = a.get_info();
            // Vulkan/Metal/DX12 before GL on the same device type.
            (rank(info.device_type), info.backend == wgpu::Backend::Gl)
        });
        let Some(adapter) = adapters.into_iter().next() else {
            let found = list_adapters();
            return Err(GpuError::NoAdapter {
                filter: format!(
                    "WGPU_BACKEND={}, WGPU_ADAPTER_NAME={}",
                    std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "(any)".into()),
                    wanted.unwrap_or_else(|| "(any)".into())
                ),
                found: if found.is_empty() {
                    "none".into()
                } else {
                    found
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            });
        };
        Self::from_adapter(adapter)
    }

    /// Opens a device on a given adapter with the adapter's full limits (large models need
    /// big storage bindings), timestamp queries and subgroup operations when available.
    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features =
            adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("edgecut.device"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        // Errors outside an error scope would otherwise panic inside wgpu; plans and launchers
        // check their own work with scopes, so anything left is logged.
        device.on_uncaptured_error(Arc::new(|e| log::error!("uncaptured GPU error: {e}")));
        Ok(Self {
            device,
            queue,
            tiling: Tiling::for_adapter(&info, features),
            info,
            limits,
            features,
            modules: Mutex::default(),
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            created: AtomicUsize::new(0),
        })
    }

    /// The same context running its convolution and dense kernels with `tiles` instead of the
    /// adapter's default (tests run every variant on any adapter); [`Tiling::Subgroup`] on a
    /// device that cannot run it gives [`Tiling::Registers`].
    pub fn with_tiling(mut self, tiles: Tiling) -> Self {
        self.tiling = match tiles {
            Tiling::Subgroup if !Tiling::subgroups_usable(&self.info, self.features) => {
                Tiling::Registers
            }
            t => t,
        };
        self
    }

    /// Buffers and bind groups created so far through the crate's helpers ([`crate::gpu::storage`],
    /// [`crate::gpu::upload`], [`crate::gpu::staging`], [`crate::gpu::kernels::Kernel::new`]).
    pub fn objects_created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// Counts `n` created objects (see [`GpuContext::objects_created`]).
    pub(crate) fn count_created(&self, n: usize) {
        self.created.fetch_add(n, Ordering::Relaxed);
    }

    /// A one-line description of the adapter.
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary::from(&self.info)
    }

    /// The bind group layout of a kernel family: binding 0 a uniform, then `reads`
    /// read-only storage buffers, then one read-write storage buffer.
    pub fn layout(&self, reads: usize) -> Arc<wgpu::BindGroupLayout> {
        let mut layouts = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        layouts
            .entry(reads)
            .or_insert_with(|| {
                let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                // 0: shape/stride parameters.
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                // 1..=reads: inputs and weights; last: the output.
                entries.extend((1..=reads as u32).map(|b| storage(b, true)));
                entries.push(storage(reads as u32 + 1, false));
                Arc::new(
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some(&format!("layout.uniform+{reads}r+1w")),
                            entries: &entries,
                        }),
                )
            })
            .clone()
    }

    /// A compute pipeline from the cache, built on first use.
    pub fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Arc<wgpu::ComputePipeline> {
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        };
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return p.clone();
        }
        let layout = self.layout(shader.read_buffers());
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(shader.file_name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            modules
                .entry(shader)
                .or_insert_with(|| {
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.file_name()),
                            source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                        })
                })
                .clone()
        };
        let label = format!("{}::{entry}{constants:?}", shader.file_name());
        // CPU adapters compile each pipeline with LLVM, seconds for the large tiles.
        let started = std::time::Instant::now();
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            },
        ));
        log::debug!("built pipeline {label} in {:.2?}", started.elapsed());
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        pipeline
    }

    /// Number of pipelines built so far (for tests of the cache).
    pub fn cached_pipelines(&self) -> usize {
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
