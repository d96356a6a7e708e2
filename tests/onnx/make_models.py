#!/usr/bin/env python3
"""Writes the small ONNX test models of this folder that cover what the third-party files
(mnist-8, light_squeezenet, light_resnet50) and EfficientNet-Lite0 miss.

Each model is a few operators with seeded random weights, a dynamic batch dimension `N` (unless
the point of the model is a fixed batch) and one opset; the opsets are spread over 7..21 so that
the attribute and input forms of Clip, Pad, Unsqueeze, ReduceMean, Dropout and Softmax are all
exercised. Only `onnx` and `numpy` are needed:

    python tests/onnx/make_models.py [--out tests/onnx]

The output is deterministic (same bytes on every run with the same onnx version).
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20260611


class Builder:
    """Collects nodes and initialisers of one graph; names are `<prefix><n>` and unique."""

    def __init__(self, name, opset, rng):
        self.name, self.opset, self.rng = name, opset, rng
        self.nodes, self.inits = [], []
        self.count = 0

    def fresh(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array, prefix="c"):
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else np.sqrt(2.0 / max(fan_in, 1))
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(op_type + "_"), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, c_in, c_out, k, bias=True, group=1, **attrs):
        kh, kw = (k, k) if isinstance(k, int) else k
        inputs = [x, self.weight(c_out, c_in // group, kh, kw)]
        if bias:
            inputs.append(self.const((self.rng.standard_normal(c_out) * 0.1).astype(np.float32), "b"))
        return self.op("Conv", inputs, kernel_shape=[kh, kw], group=group, **attrs)

    def batchnorm(self, x, c):
        scale = self.const(self.rng.uniform(0.5, 1.5, c).astype(np.float32), "bn_scale")
        bias = self.const((self.rng.standard_normal(c) * 0.1).astype(np.float32), "bn_bias")
        mean = self.const((self.rng.standard_normal(c) * 0.1).astype(np.float32), "bn_mean")
        var = self.const(self.rng.uniform(0.5, 2.0, c).astype(np.float32), "bn_var")
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def model(self, x_shape, y, doc):
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
            self.inits,
        )
        opset = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opset, producer_name="tests/onnx/make_models.py")
        # IR 4 at least: from IR 4 on, initialisers need not be listed as graph inputs (mnist-8
        # covers the IR 3 form).
        model.ir_version = max(4, helper.find_min_ir_version_for(opset))
        model.doc_string = doc
        # Declare the output's shape as shape inference finds it (batch dim symbolic).
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        found = [v for v in list(inferred.graph.value_info) + list(inferred.graph.output) if v.name == y and v.type.tensor_type.HasField("shape")]
        if not found:
            raise ValueError(f"{self.name}: shape inference found no shape for the output {y}")
        model.graph.output[0].CopyFrom(found[0])
        onnx.checker.check_model(model, full_check=True)
        return model


def silu(b, x):
    return b.op("Mul", [x, b.op("Sigmoid", [x])])


def conv_silu_se(rng):
    """SiLU as x*sigmoid(x), squeeze-excite (GlobalAveragePool, 1x1 convs, Sigmoid, Mul),
    ReduceMean over H and W without keepdims, Gemm, Softmax (opset 13, axis -1)."""
    b = Builder("conv_silu_se", 13, rng)
    x = silu(b, b.conv("x", 3, 16, 3, pads=[1, 1, 1, 1]))
    s = b.op("GlobalAveragePool", [x])
    s = b.op("Relu", [b.conv(s, 16, 4, 1)])
    s = b.op("Sigmoid", [b.conv(s, 4, 16, 1)])
    x = b.op("Mul", [x, s])
    x = silu(b, b.conv(x, 16, 8, 1, strides=[2, 2]))
    x = b.op("ReduceMean", [x], axes=[2, 3], keepdims=0)
    x = b.op("Gemm", [x, b.weight(10, 8, scale=4.0), b.const(np.zeros(10, np.float32))], transB=1)
    y = b.op("Softmax", [x])
    return b.model(["N", 3, 13, 13], y, conv_silu_se.__doc__)


def concat_dilated_grouped(rng):
    """Two branches (1x1 conv; dilated 3x3 conv with LeakyRelu) joined by Concat, MaxPool with
    pads and strides, a grouped conv and a depthwise conv, Flatten (opset 11)."""
    b = Builder("concat_dilated_grouped", 11, rng)
    x = b.op("Relu", [b.conv("x", 4, 8, 3, pads=[1, 1, 1, 1])])
    left = b.op("Relu", [b.conv(x, 8, 6, 1)])
    right = b.op("LeakyRelu", [b.conv(x, 8, 6, 3, pads=[2, 2, 2, 2], dilations=[2, 2])], alpha=0.2)
    x = b.op("Concat", [left, right], axis=1)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.op("Relu", [b.conv(x, 12, 6, 3, group=3, pads=[1, 1, 1, 1])])
    x = b.conv(x, 6, 6, 3, group=6, strides=[2, 2], pads=[1, 1, 1, 1])
    y = b.op("Flatten", [x], axis=1)
    return b.model(["N", 4, 11, 11], y, concat_dilated_grouped.__doc__)


def pad_transpose_asymmetric(rng):
    """Pad (constant, inputs form, opset 18), conv with asymmetric pads, Transpose of H and W,
    conv with auto_pad SAME_UPPER and stride 2, Tanh, Transpose to NHWC, Flatten, MatMul by a
    constant plus Add (a PyTorch Linear without Gemm)."""
    b = Builder("pad_transpose_asymmetric", 18, rng)
    pads = b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")
    x = b.op("Pad", ["x", pads, b.const(np.array(0.5, np.float32))], mode="constant")
    x = b.op("Relu", [b.conv(x, 3, 8, 3, strides=[2, 2], pads=[0, 1, 1, 0])])
    x = b.op("Transpose", [x], perm=[0, 1, 3, 2])
    x = b.op("Tanh", [b.conv(x, 8, 6, 3, strides=[2, 2], auto_pad="SAME_UPPER")])
    x = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = b.op("Flatten", [x], axis=1)
    # input 10x9 -> pad 13x12 -> conv s2 (pads t0 l1 b1 r0) 6x6 -> transpose 6x6 -> SAME s2 3x3
    x = b.op("MatMul", [x, b.weight(6 * 3 * 3, 10, scale=0.2)])
    y = b.op("Add", [x, b.const((rng.standard_normal(10) * 0.1).astype(np.float32))])
    return b.model(["N", 3, 10, 9], y, pad_transpose_asymmetric.__doc__)


def pad_attributes_same(rng):
    """Pad in its attribute form (opset 7), auto_pad SAME_UPPER with an even kernel (asymmetric
    padding), auto_pad SAME_LOWER with stride 2, auto_pad VALID, Sigmoid."""
    b = Builder("pad_attributes_same", 7, rng)
    x = b.op("Pad", ["x"], mode="constant", pads=[0, 0, 1, 0, 0, 0, 0, 1], value=-0.25)
    x = b.op("Relu", [b.conv(x, 2, 6, 4, auto_pad="SAME_UPPER")])
    x = b.op("Relu", [b.conv(x, 6, 6, 3, strides=[2, 2], auto_pad="SAME_LOWER")])
    y = b.op("Sigmoid", [b.conv(x, 6, 4, 2, auto_pad="VALID")])
    return b.model(["N", 2, 9, 8], y, pad_attributes_same.__doc__)


def gemm_mlp(rng):
    """Gemm with transB, alpha and beta; Gemm without transB and a [1, M] bias; LeakyRelu,
    HardSigmoid, MatMul by a constant, Sub with a constant first operand, Div by a broadcast
    constant, Tanh, Softmax (opset 9, 2-D)."""
    b = Builder("gemm_mlp", 9, rng)
    c1 = b.const((rng.standard_normal(16) * 0.1).astype(np.float32))
    x = b.op("Gemm", ["x", b.weight(16, 20), c1], transB=1, alpha=0.7, beta=1.5)
    x = b.op("LeakyRelu", [x], alpha=0.1)
    c2 = b.const((rng.standard_normal((1, 12)) * 0.1).astype(np.float32))
    x = b.op("Gemm", [x, b.weight(16, 12, scale=0.35), c2], alpha=1.0, beta=0.5)
    x = b.op("HardSigmoid", [x], alpha=0.3, beta=0.45)
    x = b.op("MatMul", [x, b.weight(12, 10, scale=0.6)])
    x = b.op("Sub", [b.const(rng.uniform(-0.5, 0.5, 10).astype(np.float32)), x])
    x = b.op("Div", [x, b.const(rng.uniform(0.5, 2.0, 10).astype(np.float32))])
    y = b.op("Softmax", [b.op("Tanh", [x])], axis=1)
    return b.model(["N", 20], y, gemm_mlp.__doc__)


def gemm_trans_a(rng):
    """Gemm with transA (the activation arrives transposed, as some exporters write a
    Linear on a transposed view) and no C (optional from opset 11); the batch is fixed to 1."""
    b = Builder("gemm_trans_a", 11, rng)
    x = b.op("Transpose", ["x"], perm=[1, 0])
    x = b.op("Gemm", [x, b.weight(8, 6)], transA=1, transB=1, alpha=2.0)
    y = b.op("Relu", [x])
    return b.model([1, 6], y, gemm_trans_a.__doc__)


def batchnorm_clip_pools(rng):
    """A standalone BatchNormalization on the input, Clip with attributes (opset 10), a
    BatchNormalization after a conv, HardSigmoid, AveragePool with pads, ceil_mode and
    count_include_pad, MaxPool with ceil_mode, Dropout, Flatten, Gemm."""
    b = Builder("batchnorm_clip_pools", 10, rng)
    x = b.batchnorm("x", 4)
    x = b.op("Clip", [x], min=-0.5, max=1.5)
    x = b.batchnorm(b.conv(x, 4, 8, 3, bias=False), 8)
    x = b.op("HardSigmoid", [x], alpha=0.3, beta=0.4)
    x = b.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    x = b.op("Dropout", [x], ratio=0.3)
    x = b.op("Flatten", [x], axis=1)
    # input 8x8 -> conv 6x6 -> avgpool ceil 4x4 (ceil((6+2-3)/2)+1 = 4, the last window
    # overhangs the end padding) -> maxpool ceil 2x2 (the last window overhangs the input)
    y = b.op("Gemm", [x, b.weight(10, 8 * 2 * 2), b.const(np.zeros(10, np.float32))], transB=1)
    return b.model(["N", 4, 8, 8], y, batchnorm_clip_pools.__doc__)


def hardswish_clip_inputs(rng):
    """HardSwish (opset 14), Clip with only a min input and with only a max input, a standalone
    BatchNormalization after the clip, Softmax over the channel axis of a 4-D tensor, Identity."""
    b = Builder("hardswish_clip_inputs", 14, rng)
    x = b.op("HardSwish", [b.conv("x", 3, 8, 3, pads=[1, 1, 1, 1])])
    x = b.op("Clip", [x, b.const(np.array(-0.2, np.float32))])
    x = b.conv(x, 8, 8, 3, strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.op("Clip", [x, "", b.const(np.array(0.8, np.float32))])
    x = b.batchnorm(x, 8)
    x = b.op("Softmax", [x], axis=1)
    y = b.op("Identity", [x])
    return b.model(["N", 3, 7, 9], y, hardswish_clip_inputs.__doc__)


def lrn_sum_avgpool(rng):
    """LRN, MaxPool with pads, two conv branches and the trunk joined by one Sum, AveragePool
    with end pads and count_include_pad=0, Identity, Dropout without ratio (opset 12),
    GlobalAveragePool, Flatten."""
    b = Builder("lrn_sum_avgpool", 12, rng)
    x = b.op("Relu", [b.conv("x", 3, 8, 3)])
    x = b.op("LRN", [x], size=5, alpha=1e-3, beta=0.75, bias=2.0)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    left = b.conv(x, 8, 8, 1)
    right = b.conv(x, 8, 8, 3, pads=[1, 1, 1, 1])
    x = b.op("Relu", [b.op("Sum", [left, right, x])])
    x = b.op("AveragePool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1], count_include_pad=0)
    x = b.op("Dropout", [b.op("Identity", [x])])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    return b.model(["N", 3, 12, 10], y, lrn_sum_avgpool.__doc__)


def pytorch_view_flatten(rng):
    """The chain PyTorch writes for `x.view(x.size(0), 8, -1)`: Shape, Gather, Unsqueeze (axes
    input, opset 13), Concat with a constant, Reshape; then Flatten, Gemm, Unsqueeze and
    Squeeze of a unit axis."""
    b = Builder("pytorch_view_flatten", 13, rng)
    x = b.op("Relu", [b.conv("x", 3, 8, 3, strides=[2, 2], pads=[1, 1, 1, 1])])
    n = b.op("Gather", [b.op("Shape", [x]), b.const(np.array(0, np.int64))], axis=0)
    n = b.op("Unsqueeze", [n, b.const(np.array([0], np.int64))])
    shape = b.op("Concat", [n, b.const(np.array([8, -1], np.int64))], axis=0)
    x = b.op("Reshape", [x, shape])
    x = b.op("Flatten", [x], axis=1)
    x = b.op("Gemm", [x, b.weight(10, 8 * 5 * 5), b.const(np.zeros(10, np.float32))], transB=1)
    x = b.op("Unsqueeze", [x, b.const(np.array([2], np.int64))])
    y = b.op("Squeeze", [x, b.const(np.array([2], np.int64))])
    return b.model(["N", 3, 10, 10], y, pytorch_view_flatten.__doc__)


def strided_reduce_mean(rng):
    """Unequal strides and dilations, a grouped conv, ReduceMean over H and W with keepdims and
    axes as an input (opset 18+; written at opset 21), a 1x1 conv on the pooled tensor, Flatten."""
    b = Builder("strided_reduce_mean", 21, rng)
    x = b.op("Relu", [b.conv("x", 4, 8, 3, group=2, strides=[2, 1], dilations=[1, 2], pads=[1, 2, 1, 2])])
    x = b.op("ReduceMean", [x, b.const(np.array([2, 3], np.int64))], keepdims=1)
    y = b.op("Flatten", [b.conv(x, 8, 5, 1)], axis=1)
    return b.model(["N", 4, 9, 11], y, strided_reduce_mean.__doc__)


MODELS = [
    conv_silu_se,
    concat_dilated_grouped,
    pad_transpose_asymmetric,
    pad_attributes_same,
    gemm_mlp,
    gemm_trans_a,
    batchnorm_clip_pools,
    hardswish_clip_inputs,
    lrn_sum_avgpool,
    pytorch_view_flatten,
    strided_reduce_mean,
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    for i, make in enumerate(MODELS):
        model = make(np.random.default_rng([SEED, i]))
        path = os.path.join(args.out, f"{model.graph.name}.onnx")
        onnx.save(model, path)
        print(f"make_models: {path} (opset {model.opset_import[0].version}, {len(model.graph.node)} nodes)")


if __name__ == "__main__":
    main()
