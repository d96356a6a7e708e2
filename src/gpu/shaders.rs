//! The WGSL sources, compiled into the binary (no shader file I/O at run time).

/// A WGSL kernel family (one file in `shaders/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `dense.wgsl`: register-blocked dense layer.
    Dense,
    /// `dense_subgroup.wgsl`: dense layers over 16 or more rows sharing input loads through
    /// subgroup broadcasts (needs [`wgpu::Features::SUBGROUP`]).
    DenseSubgroup,
    /// `fanin.wgsl`: fixed-fan-in sparse layer.
    FanIn,
    /// `conv2d.wgsl`: convolution and depthwise convolution.
    Conv2d,
    /// `conv_shared.wgsl`: convolutions tiled through workgroup-shared memory (hardware GPUs).
    ConvShared,
    /// `conv_subgroup.wgsl`: convolutions sharing weight loads through subgroup
    /// broadcasts (needs [`wgpu::Features::SUBGROUP`]).
    ConvSubgroup,
    /// `pool.wgsl`: max/avg and global average pooling.
    Pool,
    /// `elementwise.wgsl`: activation, residual add, channel gate.
    Elementwise,
    /// `binary.wgsl`: broadcasting add, sub, mul, div.
    Binary,
    /// `movement.wgsl`: strided copy for transpose, pad and concat.
    Movement,
    /// `normalize.wgsl`: LRN and softmax along an axis.
    Normalize,
    /// `exit.wgsl`: softmax and exit statistics.
    Exit,
    /// `layout.wgsl`: row-major to feature-major activations (for `fanin_fm`).
    Layout,
    /// `copy.wgsl`: a large vec4 copy used to measure memory bandwidth.
    Copy,
    /// `quant.wgsl`: f16 / int8 packing of split tensors for the wire, and back.
    Quant,
    /// `train/backward.wgsl`: weight, bias, input and activation gradients.
    TrainBackward,
    /// `train/optim.wgsl`: SGD-momentum and Adam steps.
    TrainOptim,
    /// `train/conv.wgsl`: convolution and pooling gradients, and a gather.
    TrainConv,
}

impl Shader {
    /// Every shader, for validation tests.
    pub const ALL: [Shader; 18] = [
        Shader::Dense,
        Shader::DenseSubgroup,
        Shader::FanIn,
        Shader::Conv2d,
        Shader::ConvShared,
        Shader::ConvSubgroup,
        Shader::Pool,
        Shader::Elementwise,
        Shader::Binary,
        Shader::Movement,
        Shader::Normalize,
        Shader::Exit,
        Shader::Layout,
        Shader::Copy,
        Shader::Quant,
        Shader::TrainBackward,
        Shader::TrainOptim,
        Shader::TrainConv,
    ];

    /// The WGSL source text; shaders that apply activations get `activation.wgsl` (the one
    /// `activate(v, act, a, b)`) joined in front, convolutions and dense layers also
    /// `conv_common.wgsl` or `dense_common.wgsl` (their parameters and bindings), and the
    /// subgroup kernels `subgroup_tile.wgsl` (their register tile).
    pub fn source(self) -> &'static str {
        macro_rules! joined {
            ($($file:literal),+) => {
                concat!(
                    include_str!("../../shaders/activation.wgsl"),
                    $(include_str!(concat!("../../shaders/", $file))),+
                )
            };
        }
        match self {
            Shader::Dense => joined!("dense_common.wgsl", "dense.wgsl"),
            Shader::DenseSubgroup => {
                joined!(
                    "dense_common.wgsl",
                    "subgroup_tile.wgsl",
                    "dense_subgroup.wgsl"
                )
            }
            Shader::FanIn => joined!("fanin.wgsl"),
            Shader::Conv2d => joined!("conv_common.wgsl", "conv2d.wgsl"),
            Shader::ConvShared => joined!("conv_common.wgsl", "conv_shared.wgsl"),
            Shader::ConvSubgroup => joined!(
                "conv_common.wgsl",
                "subgroup_tile.wgsl",
                "conv_subgroup.wgsl"
            ),
            Shader::Pool => include_str!("../../shaders/pool.wgsl"),
            Shader::Elementwise => joined!("elementwise.wgsl"),
            Shader::Binary => joined!("binary.wgsl"),
            Shader::Movement => include_str!("../../shaders/movement.wgsl"),
            Shader::Normalize => include_str!("../../shaders/normalize.wgsl"),
            Shader::Exit => include_str!("../../shaders/exit.wgsl"),
            Shader::Layout => include_str!("../../shaders/layout.wgsl"),
            Shader::Copy => include_str!("../../shaders/copy.wgsl"),
            Shader::Quant => include_str!("../../shaders/quant.wgsl"),
            Shader::TrainBackward => include_str!("../../shaders/train/backward.wgsl"),
            Shader::TrainOptim => include_str!("../../shaders/train/optim.wgsl"),
            Shader::TrainConv => include_str!("../../shaders/train/conv.wgsl"),
        }
    }

    /// File name, for labels.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Dense => "dense.wgsl",
            Shader::DenseSubgroup => "dense_subgroup.wgsl",
            Shader::FanIn => "fanin.wgsl",
            Shader::Conv2d => "conv2d.wgsl",
            Shader::ConvShared => "conv_shared.wgsl",
            Shader::ConvSubgroup => "conv_subgroup.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Binary => "binary.wgsl",
            Shader::Movement => "movement.wgsl",
            Shader::Normalize => "normalize.wgsl",
            Shader::Exit => "exit.wgsl",
            Shader::Layout => "layout.wgsl",
            Shader::Copy => "copy.wgsl",
            Shader::Quant => "quant.wgsl",
            Shader::TrainBackward => "train/backward.wgsl",
            Shader::TrainOptim => "train/optim.wgsl",
            Shader::TrainConv => "train/conv.wgsl",
        }
    }

    /// Entry points the launchers use.
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Shader::Dense => &["dense_vec4", "dense_vec4_r16", "dense_scalar"],
            Shader::DenseSubgroup => &["dense_subgroup"],
            Shader::FanIn => &["fanin_vec4", "fanin_scalar", "fanin_group", "fanin_fm"],
            Shader::Conv2d => &[
                "depthwise",
                "conv1x1",
                "conv1x1_vec4",
                "conv1x1_wvec4",
                "conv_tiled",
                "depthwise_tiled",
            ],
            Shader::ConvShared => &["conv_shared", "depthwise_shared"],
            Shader::ConvSubgroup => &[
                "conv1x1_subgroup",
                "conv1x1_subgroup_scalar",
                "conv_subgroup",
            ],
            Shader::Pool => &[
                "pool",
                "global_avgpool",
                "global_avgpool_wg",
                "global_avgpool_wg_vec4",
            ],
            Shader::Elementwise => &[
                "activation",
                "add",
                "mul",
                "activation_vec4",
                "add_vec4",
                "mul_vec4",
            ],
            Shader::Binary => &["binary"],
            Shader::Movement => &["copy_strided"],
            Shader::Normalize => &["lrn", "softmax_axis"],
            Shader::Exit => &["softmax", "exit_stats"],
            Shader::Layout => &["to_feature_major", "to_feature_major_vec4"],
            Shader::Copy => &["copy"],
            Shader::Quant => &[
                "int8_range",
                "quantize_int8",
                "dequantize_int8",
                "pack_f16",
                "unpack_f16",
            ],
            Shader::TrainBackward => &[
                "activation_grad",
                "dense_grad_weight",
                "dense_grad_input",
                "fanin_grad_weight",
            ],
            Shader::TrainOptim => &["sgd_step", "adam_step"],
            Shader::TrainConv => &[
                "conv_grad_weight",
                "conv_grad_input",
                "pool_grad",
                "global_avgpool_grad",
                "gather",
            ],
        }
    }

    /// Read-only storage buffers bound after the uniform (the write buffer comes last).
    pub fn read_buffers(self) -> usize {
        match self {
            Shader::Dense
            | Shader::DenseSubgroup
            | Shader::Conv2d
            | Shader::ConvShared
            | Shader::TrainBackward
            | Shader::TrainConv => 3,
            Shader::FanIn | Shader::ConvSubgroup => 4,
            Shader::Elementwise | Shader::Binary | Shader::Quant => 2,
            Shader::Pool
            | Shader::Exit
            | Shader::Layout
            | Shader::Copy
            | Shader::Movement
            | Shader::Normalize
            | Shader::TrainOptim => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shader_parses_validates_and_has_its_entry_points() {
        for shader in Shader::ALL {
            let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
                panic!(
                    "{}: {}",
                    shader.file_name(),
                    e.emit_to_string(shader.source())
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {e:?}", shader.file_name()));
            for entry in shader.entry_points() {
                assert!(
                    module.entry_points.iter().any(|e| e.name == *entry),
                    "{} lacks entry point {entry}",
                    shader.file_name()
                );
            }
        }
    }
}
