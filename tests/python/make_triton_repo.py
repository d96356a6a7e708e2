"""Writes the Triton model repository of an edgecut MNIST model by the naming convention of
deploy/README.md ("Triton and KServe"), for the Triton test until `edgecut export --triton-repo`
writes it: the full model `<model>` and one tail `<model>__cut<k>__<fp32|fp16|int8>` per cut
candidate k, each `<name>/config.pbtxt` (`platform: "onnxruntime_onnx"`, dynamic batching) and
`<name>/1/model.onnx` (opset 13, dynamic batch dim `N`).

It maps the ops the MNIST models use (conv2d, relu, maxpool, flatten, dense, fanin as a dense
matrix) and nothing else; unknown ops are refused by name.

Usage: python make_triton_repo.py <model-dir> --edgecut <bin> --out <repo>
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
MAX_BATCH = 64
DTYPES = {"F32": np.float32, "U32": np.uint32, "U16": np.uint16}
CONFIG_TYPES = {TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16",
                TensorProto.UINT8: "TYPE_UINT8"}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


class Graph:
    def __init__(self, weights):
        self.weights = weights
        self.nodes = []
        self.inits = []
        self.count = 0

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint, array):
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, hint, **attrs):
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def block_ops(self, block, x, features):
        """Appends one edgecut block; `features` is the flattened size of `x` (for fan-in)."""
        for op in block["ops"]:
            key = f"{block['name']}.{op['name']}"
            kind = op["op"]
            if kind == "conv2d":
                p, s = op.get("padding", 0), op.get("stride", 1)
                inputs = [x, self.const("w", self.weights[key + ".weight"])]
                if op.get("bias"):
                    inputs.append(self.const("b", self.weights[key + ".bias"]))
                x = self.node("Conv", inputs, "conv", kernel_shape=[op["kernel"]] * 2,
                              pads=[p] * 4, strides=[s] * 2, group=op.get("groups", 1))
            elif kind == "relu":
                x = self.node("Relu", [x], "relu")
            elif kind == "maxpool":
                k, p = op["kernel"], op.get("padding", 0)
                x = self.node("MaxPool", [x], "pool", kernel_shape=[k, k],
                              strides=[op.get("stride", k)] * 2, pads=[p] * 4)
            elif kind == "flatten":
                x = self.node("Flatten", [x], "flatten", axis=1)
            elif kind in ("dense", "fanin"):
                if kind == "dense":
                    w = self.weights[key + ".weight"]
                else:
                    idx = self.weights[key + ".indices"].astype(np.int64)
                    vals = self.weights[key + ".weights"]
                    w = np.zeros((op["outputs"], features), np.float32)
                    rows = np.repeat(np.arange(op["outputs"]), idx.shape[1])
                    np.add.at(w, (rows, idx.reshape(-1)), vals.reshape(-1))
                b = (self.weights[key + ".bias"] if op.get("bias")
                     else np.zeros(op["outputs"], np.float32))
                x = self.node("Gemm", [x, self.const("w", w), self.const("b", b)], "gemm",
                              transB=1)
            else:
                sys.exit(f"make_triton_repo: op '{kind}' of block '{block['name']}' is not mapped")
        return x


def tail_model(manifest, weights, first, in_shape, encoding):
    g = Graph(weights)
    dims = ["N"] + list(in_shape)
    if encoding == "fp32":
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)]
        x = "input"
    elif encoding == "fp16":
        inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT16, dims)]
        x = g.node("Cast", ["input"], "cast", to=TensorProto.FLOAT)
    else:
        inputs = [helper.make_tensor_value_info("input", TensorProto.UINT8, dims),
                  helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1]),
                  helper.make_tensor_value_info("zero_point", TensorProto.UINT8, ["N", 1])]
        flat = g.const("shape", np.array([-1], np.int64))
        scale = g.node("Reshape", ["scale", flat], "scale")
        zero = g.node("Reshape", ["zero_point", flat], "zero")
        x = g.node("DequantizeLinear", ["input", scale, zero], "dequant", axis=0)
    features = int(np.prod(in_shape))
    for block in manifest["blocks"][first:]:
        x = g.block_ops(block, x, features)
        features = block["_elems"]
    g.nodes.append(helper.make_node("Identity", [x], ["output"]))
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                             ["N", manifest["classes"]])]
    graph = helper.make_graph(g.nodes, "tail", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def config(name, model):
    def tensors(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value for d in t.shape.dim[1:]]
            out.append(f'  {{ name: "{v.name}", data_type: {CONFIG_TYPES[t.elem_type]}, '
                       f'dims: [ {", ".join(map(str, dims))} ] }}')
        return ",\n".join(out)
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {MAX_BATCH}\n'
            f"input [\n{tensors(model.graph.input)}\n]\n"
            f"output [\n{tensors(model.graph.output)}\n]\ndynamic_batching {{ }}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--edgecut", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.model, "model.json")) as f:
        manifest = json.load(f)
    info = json.loads(subprocess.run([a.edgecut, "info", a.model, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    for block, b in zip(manifest["blocks"], info["blocks"]):
        block["_elems"] = b["output_elems"]
    weights = read_safetensors(os.path.join(a.model, "weights.safetensors"))
    name = manifest["name"]
    models = {name: tail_model(manifest, weights, 0, manifest["input"], "fp32")}
    for k, b in enumerate(info["blocks"]):
        if b["natural_bottleneck"] and k + 1 < len(info["blocks"]):
            for enc in ("fp32", "fp16", "int8"):
                models[f"{name}__cut{k}__{enc}"] = tail_model(manifest, weights, k + 1,
                                                              b["output_shape"], enc)
    for n, m in models.items():
        os.makedirs(os.path.join(a.out, n, "1"), exist_ok=True)
        onnx.save(m, os.path.join(a.out, n, "1", "model.onnx"))
        with open(os.path.join(a.out, n, "config.pbtxt"), "w") as f:
            f.write(config(n, m))
    print(f"make_triton_repo: {len(models)} models in {a.out}")


if __name__ == "__main__":
    main()
