"""Turns an exported Triton repository (`<name>/config.pbtxt` with `platform: "onnxruntime_onnx"`,
`<name>/1/model.onnx`) into one the Python backend serves: the `tritonserver` bundled with the
`nvidia-pytriton` wheel has no onnxruntime backend, so each model becomes a `model.py` that runs
the same ONNX file with onnxruntime, with the same inputs, outputs, batch size and dynamic
batching, plus one warm-up request. Only for the tests: a real deployment serves the exported repository as it is.

Usage: python triton_python_models.py <exported-repo> <out-repo>
"""

import os
import re
import shutil
import site
import sys

import onnx
from onnx import TensorProto

CONFIG_TYPES = {TensorProto.FLOAT: "TYPE_FP32", TensorProto.FLOAT16: "TYPE_FP16",
                TensorProto.UINT8: "TYPE_UINT8", TensorProto.INT8: "TYPE_INT8"}

# The stub does not inherit PYTHONPATH: the model puts this venv's packages on sys.path itself.
MODEL_PY = '''import os
import sys

sys.path[:0] = {paths!r}
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {{n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                    for n in self.inputs}}
            values = self.session.run(self.outputs, feed)
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v))
                       for n, v in zip(self.outputs, values)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''


def tensors(values):
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = ", ".join(str(d.dim_value) for d in t.shape.dim[1:])
        out.append(f'  {{ name: "{v.name}", data_type: {CONFIG_TYPES[t.elem_type]}, '
                   f'dims: [ {dims} ] }}')
    return ",\n".join(out)


def warmup(values):
    """One batch-1 warm-up request of zeros, run by Triton before the model is ready: the first
    execution of a Python-backend model is slow (over 100 ms here), which a client would
    otherwise measure as the server's compute time."""
    inputs = []
    for v in values:
        t = v.type.tensor_type
        dims = ", ".join(str(d.dim_value) for d in t.shape.dim[1:])
        inputs.append(f'    inputs {{ key: "{v.name}" value: {{ data_type: '
                      f'{CONFIG_TYPES[t.elem_type]} dims: [ {dims} ] zero_data: true }} }}')
    return ("model_warmup [ {\n    name: \"zeros\"\n    batch_size: 1\n"
            + "\n".join(inputs) + "\n} ]\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    paths = site.getsitepackages()
    names = sorted(n for n in os.listdir(src)
                   if os.path.isfile(os.path.join(src, n, "config.pbtxt")))
    if not names:
        sys.exit(f"triton_python_models: no <name>/config.pbtxt in {src}")
    for name in names:
        with open(os.path.join(src, name, "config.pbtxt")) as f:
            exported = f.read()
        if 'platform: "onnxruntime_onnx"' not in exported:
            sys.exit(f"triton_python_models: {name}/config.pbtxt is not an onnxruntime_onnx model")
        batch = re.search(r"max_batch_size:\s*(\d+)", exported)
        onnx_path = os.path.join(src, name, "1", "model.onnx")
        model = onnx.load(onnx_path)
        os.makedirs(os.path.join(dst, name, "1"), exist_ok=True)
        shutil.copy(onnx_path, os.path.join(dst, name, "1", "model.onnx"))
        with open(os.path.join(dst, name, "1", "model.py"), "w") as f:
            f.write(MODEL_PY.format(paths=paths))
        with open(os.path.join(dst, name, "config.pbtxt"), "w") as f:
            f.write(f'name: "{name}"\nbackend: "python"\n'
                    f"max_batch_size: {batch.group(1) if batch else 64}\n"
                    f"input [\n{tensors(model.graph.input)}\n]\n"
                    f"output [\n{tensors(model.graph.output)}\n]\n"
                    "dynamic_batching { }\n"
                    "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
                    + warmup(model.graph.input))
    print(f"triton_python_models: {len(names)} models in {dst}")


if __name__ == "__main__":
    main()
