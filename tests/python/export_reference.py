#!/usr/bin/env python3
"""onnxruntime runs what `edgecut export` writes: head.onnx then tail.onnx equals edgecut's model.

For every shipped model (models/*/model.json) and the all-ops fixture (tests/export/all-ops): a
seeded random input batch and `edgecut infer` on the CPU backend as the reference. At every cut
(every block but the last for models of up to EVERY_CUT_BLOCKS blocks, else the cut candidates
`edgecut info --json` lists, which are the tails of the Triton repository), for each encoding:
`edgecut export <model> --cut <block> --encoding <e> --out <dir>`, then onnxruntime runs
head.onnx on the input and tail.onnx on the head's output, encoded as the device client sends it:
- fp32: equals `edgecut infer` and `edgecut infer --cut <block>` (tolerance and argmax, as
  onnx_reference.py checks imports);
- fp16: the head output rounded to float16; int8: quantised per sample as edgecut does
  (encoding.rs, Int8Params::for_data), sent as code + 128 with zero_point + 128 (UINT8), and
  scale, both [N, 1]. Each must equal the FP32 tail fed the decoded values (the Cast and
  DequantizeLinear fronts decode exactly as edgecut does) and `edgecut infer` within the
  encoding's tolerance.
Also `edgecut export --out` (the whole model) once per model, and for models with preprocessing
(image models) `edgecut export --out --pixels`: onnxruntime runs it on random 8-bit images and
must equal `edgecut infer` on the images preprocessed here, and the FP32 model.onnx on them.
Prints a table; exits 1 on any failure. Uses onnx_reference.py's driver (EDGECUT_BIN, comparison, report).
Usage: EDGECUT_BIN=target/debug/edgecut python tests/python/export_reference.py [--only NAME]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_reference import CPU_TOLERANCE, REPO, Report, compare, run_edgecut  # noqa: E402

SEED = 23
# Models with at most this many blocks are checked at every cut, larger ones at their cut
# candidates (each cut of an ImageNet model costs three exports and a full `infer --cut`).
EVERY_CUT_BLOCKS = 8
# Largest |onnxruntime - edgecut| relative to the largest |edgecut| output element when the
# split tensor travels as FP16 (11 significant bits) or INT8 (255 steps over its range per
# sample), against the unsplit model. The same values as tests/export.rs.
FP16_TOLERANCE = 1e-2
INT8_TOLERANCE = 1e-1
# Samples per model: MNIST-sized models 4, ImageNet-sized 1 (bounded run time).
SMALL_BATCH, LARGE_BATCH, LARGE_INPUT = 4, 1, 100_000


def models():
    root = os.path.join(REPO, "models")
    found = [os.path.join(root, d) for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, "model.json"))]
    return found + [os.path.join(REPO, "tests", "export", "all-ops")]


def quantize(h):
    """Per-sample INT8 as edgecut encodes it, on the UINT8 wire: (codes + 128, scale, zero_point + 128)."""
    codes, scales, zeros = [], [], []
    for sample in h.reshape(h.shape[0], -1):
        lo = np.float32(min(sample.min(), 0.0))
        hi = np.float32(max(sample.max(), 0.0))
        scale = np.float32((hi - lo) / np.float32(255.0))
        if not np.isfinite(scale) or scale <= 0:
            scale = np.float32(1.0)
        zero = np.float32(np.clip(np.rint(np.float32(-128.0) - lo / scale), -128, 127))
        code = np.clip(np.rint(sample / scale) + zero, -128, 127)
        codes.append((code + 128).astype(np.uint8))
        scales.append(scale)
        zeros.append(np.uint8(zero + 128))
    n = h.shape[0]
    return (
        np.stack(codes).reshape(h.shape),
        np.array(scales, dtype=np.float32).reshape(n, 1),
        np.array(zeros, dtype=np.uint8).reshape(n, 1),
    )


def dequantize(codes, scale, zero):
    n = codes.shape[0]
    flat = codes.reshape(n, -1).astype(np.int32) - zero.astype(np.int32)
    return (flat.astype(np.float32) * scale).reshape(codes.shape)


def session(path):
    onnx.checker.check_model(onnx.load(path), full_check=True)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def relative(out, ref):
    return float(np.abs(out.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def check_pixels(path, name, pre, shape, batch, full, report, tmp):
    """The whole model taking 8-bit pixels (`export --pixels`) on random images, against
    `edgecut infer` and the FP32 model on the same images preprocessed as edgecut does:
    (pixel * scale - mean) / std per channel, in float32."""
    start = time.monotonic()
    rng = np.random.default_rng([SEED, sum(name.encode()), 8])
    pixels = rng.integers(0, 256, [batch] + shape, dtype=np.uint8)
    scale = np.float32(pre.get("scale", 1.0))
    mean = np.array(pre["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.array(pre["std"], dtype=np.float32).reshape(3, 1, 1)
    x = ((pixels.astype(np.float32) * scale - mean) / std).astype(np.float32)
    x_path, y_path = os.path.join(tmp, f"{name}_px.npy"), os.path.join(tmp, f"{name}_py.npy")
    np.save(x_path, x)
    run_edgecut(["infer", path, "--input", x_path, "--backend", "cpu", "--out", y_path])
    ref = np.load(y_path).astype(np.float64)
    out = os.path.join(tmp, f"{name}_pixels")
    run_edgecut(["export", path, "--out", out, "--pixels"])
    model = session(os.path.join(out, "model.onnx"))
    inputs = model.get_inputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(uint8)":
        report.fail(name, f"export --pixels takes {[(i.name, i.type) for i in inputs]}, not one uint8 input")
        return
    y = model.run(None, {"input": pixels})[0]
    report.add(name, batch, "ort uint8", "- (whole) vs infer", *compare(ref, y, CPU_TOLERANCE), time.monotonic() - start)
    rel = relative(y, full.run(None, {"input": x})[0].astype(np.float64))
    problem = f"pixel front differs by {rel:.2e} > {CPU_TOLERANCE:.0e}" if rel > CPU_TOLERANCE else None
    report.add(name, batch, "ort uint8", "- (whole) vs fp32 model", rel, 0, 0, problem, 0.0)


def check_model(path, report, tmp):
    name = os.path.basename(path.rstrip("/"))
    info = json.loads(run_edgecut(["info", path, "--json"]))
    blocks = [b["name"] for b in info["blocks"]]
    cuts = blocks[:-1] if len(blocks) <= EVERY_CUT_BLOCKS else info["cut_candidates"]
    with open(os.path.join(path, "model.json")) as f:
        manifest = json.load(f)
    shape = manifest["input"]
    batch = LARGE_BATCH if np.prod(shape) > LARGE_INPUT else SMALL_BATCH
    x = np.random.default_rng([SEED, sum(name.encode())]).standard_normal([batch] + shape).astype(np.float32)
    x_path, y_path = os.path.join(tmp, f"{name}_x.npy"), os.path.join(tmp, f"{name}_y.npy")
    np.save(x_path, x)
    run_edgecut(["infer", path, "--input", x_path, "--backend", "cpu", "--out", y_path])
    ref = np.load(y_path).astype(np.float64)

    start = time.monotonic()
    out = os.path.join(tmp, f"{name}_full")
    run_edgecut(["export", path, "--out", out])
    full = session(os.path.join(out, "model.onnx"))
    y = full.run(None, {"input": x})[0]
    report.add(name, batch, "ort", "- (whole)", *compare(ref, y, CPU_TOLERANCE), time.monotonic() - start)
    if manifest.get("preprocess") and len(shape) == 3 and shape[0] == 3:
        check_pixels(path, name, manifest["preprocess"], shape, batch, full, report, tmp)

    for cut in cuts:
        start = time.monotonic()
        run_edgecut(["infer", path, "--input", x_path, "--backend", "cpu", "--cut", cut, "--out", y_path])
        split_ref = np.load(y_path).astype(np.float64)
        tails = {}
        for encoding in ("fp32", "fp16", "int8"):
            out = os.path.join(tmp, f"{name}_{cut}_{encoding}")
            run_edgecut(["export", path, "--cut", cut, "--encoding", encoding, "--out", out])
            if encoding == "fp32":
                h = session(os.path.join(out, "head.onnx")).run(None, {"input": x})[0]
            tails[encoding] = session(os.path.join(out, "tail.onnx"))
        y = tails["fp32"].run(None, {"input": h})[0]
        seconds = time.monotonic() - start
        report.add(name, batch, "ort fp32", f"{cut} vs infer", *compare(ref, y, CPU_TOLERANCE), seconds)
        report.add(name, batch, "ort fp32", f"{cut} vs --cut", *compare(split_ref, y, CPU_TOLERANCE), 0.0)

        h16 = h.astype(np.float16)
        codes, scale, zero = quantize(h)
        encoded = {
            "fp16": ({"input": h16}, h16.astype(np.float32), FP16_TOLERANCE),
            "int8": ({"input": codes, "scale": scale, "zero_point": zero}, dequantize(codes, scale, zero), INT8_TOLERANCE),
        }
        for encoding, (feeds, decoded, tolerance) in encoded.items():
            y = tails[encoding].run(None, feeds)[0]
            # The decode front: the same as the FP32 tail on edgecut's decoded values.
            same = tails["fp32"].run(None, {"input": decoded})[0].astype(np.float64)
            rel = relative(y, same)
            problem = f"decode front differs by {rel:.2e} > {CPU_TOLERANCE:.0e}" if rel > CPU_TOLERANCE else None
            report.add(name, batch, f"ort {encoding}", f"{cut} vs fp32 tail", rel, 0, 0, problem, 0.0)
            rel = relative(y, ref)
            problem = f"max relative difference {rel:.2e} > {tolerance:.0e}" if rel > tolerance else None
            report.add(name, batch, f"ort {encoding}", f"{cut} vs infer", rel, 0, 0, problem, 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="check only the models whose folder name contains this")
    args = parser.parse_args()
    paths = [p for p in models() if not args.only or args.only in os.path.basename(p)]
    print(f"export_reference: onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    report = Report()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            try:
                check_model(path, report, tmp)
            except (RuntimeError, ValueError, OSError, onnx.checker.ValidationError) as e:
                report.fail(os.path.basename(path), str(e))
    report.print()
    for f in report.failures:
        print(f"FAILED: {f}")
    print(f"export_reference: {report.passed} passed, {len(report.failures)} failed in {time.monotonic() - start:.0f} s")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
