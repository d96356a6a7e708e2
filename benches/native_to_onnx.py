"""Writes an edgecut model directory (model.json + weights.safetensors) as a standard ONNX file, so
the same network runs in edgecut and in onnxruntime for the peer benchmark (benches/peers.py).

Run: python benches/native_to_onnx.py models/mnist-lenet-ee out.onnx   (needs numpy and onnx)

Trained models keep their weights (fixed-fan-in layers become dense Gemm matrices holding the
same taps, zeros elsewhere). Architecture-only models (model.json with an "init" seed and no
weights file, such as EfficientNet-B0 and MobileNet-V2) get weights drawn here from a seeded
NumPy generator (He-scaled convolutions, batch-norm statistics near 1 and 0) — not edgecut's
seeded weights, which is fine for timing: both engines then run this one file. Early-exit heads
are left out: the file computes the final logits.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    dtypes = {"F32": np.float32, "U16": np.uint16, "U32": np.uint32, "I32": np.int32, "I64": np.int64}
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        out[key] = np.frombuffer(body[a:b], dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return out


class Weights:
    """Stored tensors, or seeded draws for architecture-only models."""

    def __init__(self, folder, seed):
        path = folder / "weights.safetensors"
        self.stored = read_safetensors(path) if path.exists() else None
        self.rng = np.random.default_rng(seed)

    def get(self, key, shape, kind):
        if self.stored is not None:
            if key in self.stored:
                return np.asarray(self.stored[key], dtype=np.float32).reshape(shape)
            if kind in ("zero", "bias"):
                return np.zeros(shape, np.float32)
            raise KeyError(f"{key} missing from weights.safetensors")
        if kind == "weight":
            fan_in = int(np.prod(shape[1:]))
            return (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if kind == "one":
            return self.rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return (self.rng.standard_normal(shape) * 0.1).astype(np.float32)

    def indices(self, key, outputs, k, inputs):
        if self.stored is None:
            return np.stack([self.rng.choice(inputs, k, replace=False) for _ in range(outputs)])
        return np.asarray(self.stored[key], dtype=np.int64).reshape(outputs, k)


def pair(v):
    return list(v) if isinstance(v, list) else [v, v]


def sides(v):
    return list(v) if isinstance(v, list) else [v] * 4


class Builder:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, array):
        n = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def node(self, op, inputs, hint, **attrs):
        out = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def convert(folder):
    m = json.loads((folder / "model.json").read_text())
    seed = (m.get("init") or {}).get("seed", 0)
    b = Builder(Weights(folder, seed))
    shape = list(m["input"])
    x = "input"
    for block in m["blocks"]:
        block_input, saved = x, {}
        for i, op in enumerate(block["ops"]):
            kind = op["op"]
            key = f"{block['name']}.{op.get('name', kind + str(i))}"
            if kind == "conv2d":
                kh, kw = pair(op["kernel"])
                g = op.get("groups", 1)
                out = op["out_channels"]
                w = b.w.get(key + ".weight", [out, shape[0] // g, kh, kw], "weight")
                bias = b.w.get(key + ".bias", [out], "bias") if op.get("bias") else np.zeros(out, np.float32)
                st, dil, pads = pair(op.get("stride", 1)), pair(op.get("dilation", 1)), sides(op.get("padding", 0))
                x = b.node("Conv", [x, b.const("w", w), b.const("b", bias)], "conv", group=g,
                           kernel_shape=[kh, kw], strides=st, dilations=dil, pads=pads)
                oh = (shape[1] + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // st[0] + 1
                ow = (shape[2] + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // st[1] + 1
                shape = [out, oh, ow]
            elif kind == "batchnorm":
                c = shape[0]
                p = [b.const(n, b.w.get(f"{key}.{n}", [c], k)) for n, k in
                     (("gamma", "one"), ("beta", "zero"), ("mean", "zero"), ("var", "one"))]
                x = b.node("BatchNormalization", [x] + p, "bn", epsilon=op.get("eps", 1e-5))
            elif kind in ("dense", "fanin"):
                inputs, outputs = shape[0], op["outputs"]
                if kind == "dense":
                    w = b.w.get(key + ".weight", [outputs, inputs], "weight")
                else:
                    k = op["k"]
                    taps = b.w.get(key + ".weights", [outputs, k], "weight")
                    idx = b.w.indices(key + ".indices", outputs, k, inputs)
                    w = np.zeros((outputs, inputs), np.float32)
                    np.add.at(w, (np.arange(outputs)[:, None], idx), taps)
                bias = b.w.get(key + ".bias", [outputs], "bias") if op.get("bias") else np.zeros(outputs, np.float32)
                x = b.node("Gemm", [x, b.const("w", w), b.const("b", bias)], kind, transB=1)
                shape = [outputs]
            elif kind == "relu":
                x = b.node("Relu", [x], "relu")
            elif kind == "relu6":
                x = b.node("Clip", [x, b.const("lo", np.float32(0)), b.const("hi", np.float32(6))], "relu6")
            elif kind == "sigmoid":
                x = b.node("Sigmoid", [x], "sigmoid")
            elif kind == "silu":
                x = b.node("Mul", [x, b.node("Sigmoid", [x], "sigmoid")], "silu")
            elif kind in ("maxpool", "avgpool"):
                kh, kw = pair(op["kernel"])
                st = pair(op.get("stride", [kh, kw]))
                pads = sides(op.get("padding", 0))
                ceil = int(op.get("ceil_mode", False))
                attrs = dict(kernel_shape=[kh, kw], strides=st, pads=pads, ceil_mode=ceil)
                if kind == "avgpool":
                    attrs["count_include_pad"] = int(op.get("count_include_pad", False))
                x = b.node("MaxPool" if kind == "maxpool" else "AveragePool", [x], kind, **attrs)
                rnd = np.ceil if ceil else np.floor
                shape = [shape[0]] + [int(rnd((shape[1 + a] + pads[a] + pads[a + 2] - (kh, kw)[a]) / st[a])) + 1
                                      for a in range(2)]
            elif kind == "global_avgpool":
                x = b.node("GlobalAveragePool", [x], "gap")
                shape = [shape[0], 1, 1]
            elif kind == "flatten":
                x = b.node("Flatten", [x], "flatten", axis=1)
                shape = [int(np.prod(shape))]
            elif kind in ("add", "mul"):
                other = block_input if op["with"] == "input" else saved[op["with"]][0]
                x = b.node("Add" if kind == "add" else "Mul", [x, other], kind)
                if kind == "mul" and op["with"] != "input":
                    shape = saved[op["with"]][1]
            elif kind == "softmax":
                x = b.node("Softmax", [x], "softmax", axis=-1)
            else:
                sys.exit(f"{key}: op '{kind}' has no ONNX mapping in this script")
            if "save_as" in op:
                saved[op["save_as"]] = (x, list(shape))
    b.nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    graph = helper.make_graph(
        b.nodes, m["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N"] + list(m["input"]))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", m["classes"]])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgecut benches/native_to_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: native_to_onnx.py <model dir> <out.onnx>")
    onnx.save(convert(Path(sys.argv[1])), sys.argv[2])
    print(f"wrote {sys.argv[2]}")
