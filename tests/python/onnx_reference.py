#!/usr/bin/env python3
"""edgecut vs onnxruntime on every ONNX test model.

For each `tests/onnx/*.onnx` (and EfficientNet-Lite0 when `--efficientnet` names its .onnx): a
seeded random input at batch 1 and 8 (batch 1 only where the file fixes the batch), the output of
onnxruntime against `edgecut infer` on the CPU and GPU backends, unsplit, and at the largest batch
also split at every cut candidate that `edgecut info --json` lists. Asserted: the maximum difference relative to the
largest reference magnitude (named tolerances below) and argmax agreement per sample (where the
reference's top two differ by more than the tolerance: a tie has no argmax to agree on). Also the
mnist-8 zoo reference output, and for EfficientNet-Lite0 the classes of the photos in
models/data/images. Prints a table of the measured differences; exits 1 on any failure.

Needs numpy, onnx, onnxruntime and Pillow in the interpreter (tests/python/run.sh installs them);
a missing package is a failure, not a skip.
Usage: EDGECUT_BIN=target/debug/edgecut python tests/python/onnx_reference.py [--efficientnet F]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import PIL  # verify.py's image loading; imported here so that a missing Pillow fails up front

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ONNX_DIR = os.path.join(REPO, "tests", "onnx")
SEED = 11

# Largest |edgecut - onnxruntime| allowed, relative to the largest |onnxruntime| element of the
# output. Both run float32; the CPU backend accumulates in a different order than onnxruntime's
# MLAS kernels, the GPU backend (lavapipe in CI) also uses fused multiply-adds and its own
# exp/tanh. README.md quotes the measured maxima.
CPU_TOLERANCE = 1e-4
GPU_TOLERANCE = 1e-3
# A split run (head, then tail from the decoded FP32 split tensor) must equal the unsplit run of
# the same backend up to reordering inside the kernels: the same tolerances apply against
# onnxruntime.
TOLERANCE = {"cpu": CPU_TOLERANCE, "gpu": GPU_TOLERANCE}
BATCHES = (1, 8)


def edgecut_bin():
    path = os.environ.get("EDGECUT_BIN")
    if not path or not os.path.isfile(path):
        sys.exit(f"onnx_reference: EDGECUT_BIN must name the edgecut binary (got {path!r})")
    return path


def run_edgecut(args):
    proc = subprocess.run([edgecut_bin()] + args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"edgecut {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def data_input(model):
    """The graph input that is not an initialiser (IR 3 files list initialisers as inputs too)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"expected one data input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return inputs[0].name, shape


def compare(ref, out, tolerance):
    """(max relative difference, argmax agreements, argmax checks, problem or None)."""
    ref = ref.reshape(ref.shape[0], -1).astype(np.float64)
    if out.size != ref.size:
        return float("inf"), 0, 0, f"edgecut output shape {list(out.shape)} vs onnxruntime {list(ref.shape)}"
    out = out.reshape(ref.shape).astype(np.float64)
    if not np.all(np.isfinite(out)):
        return float("inf"), 0, 0, "edgecut output holds NaN or Inf"
    scale = max(np.abs(ref).max(), 1e-30)
    rel = float(np.abs(out - ref).max() / scale)
    agree = checked = 0
    for r, o in zip(ref, out):
        top2 = np.sort(r)[-2:] if r.size > 1 else None
        if top2 is not None and top2[1] - top2[0] <= tolerance * scale:
            continue  # a tie within tolerance: no argmax to agree on
        checked += 1
        agree += int(np.argmax(r) == np.argmax(o))
    problem = None
    if rel > tolerance:
        problem = f"max relative difference {rel:.2e} > {tolerance:.0e}"
    elif agree != checked:
        problem = f"argmax agrees on {agree} of {checked} samples"
    return rel, agree, checked, problem


class Report:
    def __init__(self):
        self.rows, self.failures, self.passed, self.skipped = [], [], 0, []

    def add(self, model, batch, backend, cut, rel, agree, checked, problem, seconds):
        self.rows.append((model, batch, backend, cut, rel, f"{agree}/{checked}", seconds, "FAIL" if problem else "ok"))
        if problem:
            self.failures.append(f"{model} batch {batch} {backend} cut {cut}: {problem}")
        else:
            self.passed += 1

    def fail(self, what, problem):
        self.failures.append(f"{what}: {problem}")
        self.rows.append((what, "-", "-", "-", float("nan"), "-", 0.0, "FAIL"))

    def print(self):
        print(f"{'model':28} {'batch':>5} {'backend':7} {'cut':24} {'max rel diff':>12} {'argmax':>7} {'s':>6}")
        for m, b, be, c, rel, arg, s, status in self.rows:
            print(f"{m:28} {b!s:>5} {be:7} {c:24} {rel:12.2e} {arg:>7} {s:6.1f}  {status}")


# Files the importer refuses on purpose (a documented limit), with what its error must say:
# a clear refusal naming the node is the expected behaviour, anything else fails.
KNOWN_REFUSALS = {
    # Transpose [1, 0] of the input then Gemm transA: the batch axis moves into the features.
    "gemm_trans_a": "moves the batch axis",
    # Opset-9 Softmax over axis 1 of a [N, 1000, 1, 1] tensor (flattened softmax before 13).
    "light_squeezenet": "Softmax",
}


def check_model(path, report, tmp, cut_backends):
    name = os.path.splitext(os.path.basename(path))[0]
    model = onnx.load(path)
    input_name, shape = data_input(model)
    if any(d is None for d in shape[1:]):
        raise ValueError(f"{name}: input {input_name} has dynamic non-batch dims {shape}")
    fixed = shape[0]
    batches = [b for b in BATCHES if fixed is None or b == fixed]
    if not batches:
        raise ValueError(f"{name}: the file fixes batch {fixed}, none of {BATCHES}")
    info = json.loads(run_edgecut(["info", path, "--json"]))
    cuts = info["cut_candidates"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng([SEED, sum(name.encode())])
    for batch in batches:
        x = rng.standard_normal([batch] + shape[1:]).astype(np.float32)
        ref = session.run(None, {input_name: x})[0]
        x_path = os.path.join(tmp, f"{name}_b{batch}_x.npy")
        np.save(x_path, x)
        runs = [(backend, None) for backend in ("cpu", "gpu")]
        if batch == batches[-1]:  # splits at the largest batch only: they test the cut, not batching
            runs += [(backend, cut) for backend in cut_backends for cut in cuts]
        for backend, cut in runs:
            y_path = os.path.join(tmp, f"{name}_y.npy")
            args = ["infer", path, "--input", x_path, "--backend", backend, "--out", y_path]
            if cut is not None:
                args += ["--cut", cut]
            start = time.monotonic()
            try:
                run_edgecut(args)
                out = np.load(y_path)
            except (RuntimeError, OSError, ValueError) as e:
                report.fail(f"{name} batch {batch} {backend} cut {cut or '-'}", str(e))
                continue
            rel, agree, checked, problem = compare(ref, out, TOLERANCE[backend])
            report.add(name, batch, backend, cut or "-", rel, agree, checked, problem, time.monotonic() - start)
    return len(cuts)


def check_mnist_zoo_output(report, tmp):
    """mnist-8 on the zoo's own input: edgecut (CPU) vs the zoo's recorded output."""
    x = os.path.join(ONNX_DIR, "mnist-8_input_0.npy")
    ref = np.load(os.path.join(ONNX_DIR, "mnist-8_output_0.npy"))
    for backend in ("cpu", "gpu"):
        y_path = os.path.join(tmp, "mnist_zoo_y.npy")
        start = time.monotonic()
        try:
            run_edgecut(["infer", os.path.join(ONNX_DIR, "mnist-8.onnx"), "--input", x, "--backend", backend, "--out", y_path])
        except RuntimeError as e:
            report.fail(f"mnist-8 zoo output {backend}", str(e))
            continue
        rel, agree, checked, problem = compare(ref, np.load(y_path), TOLERANCE[backend])
        report.add("mnist-8 (zoo output_0)", 1, backend, "-", rel, agree, checked, problem, time.monotonic() - start)


def check_photos(onnx_path, model_paths, report, tmp):
    """EfficientNet-Lite0 on the committed photos: onnxruntime's and edgecut's classes."""
    sys.path.insert(0, os.path.join(REPO, "models", "efficientnet-lite0"))
    import verify  # the preprocessing established for these weights

    paths = verify.list_images(os.path.join(REPO, "models", "data", "images"))
    expected = {
        "chelsea.png": ("top1", set(range(281, 286))),  # the five domestic cat classes
        "coffee.png": ("top1", {967}),  # espresso
        "grace_hopper.jpg": ("top5", {652}),  # military uniform
    }
    x = np.stack([verify.preprocess(verify.load_image(p)) for p in paths])
    x_path = os.path.join(tmp, "photos_x.npy")
    np.save(x_path, x)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    names = [os.path.basename(p) for p in paths]
    for name, logits in zip(names, ref):
        if name in expected:
            kind, classes = expected[name]
            top = np.argsort(-logits)[: 1 if kind == "top1" else 5]
            if not classes & set(top.tolist()):
                report.fail(f"onnxruntime {name}", f"{kind} {top.tolist()} misses {sorted(classes)}")
    for model_path in model_paths:
        for backend in ("cpu", "gpu"):
            y_path = os.path.join(tmp, "photos_y.npy")
            label = f"photos {os.path.basename(model_path.rstrip('/'))}"
            start = time.monotonic()
            try:
                run_edgecut(["infer", model_path, "--input", x_path, "--backend", backend, "--out", y_path])
            except RuntimeError as e:
                report.fail(f"{label} {backend}", str(e))
                continue
            out = np.load(y_path)
            rel, agree, checked, problem = compare(ref, out, TOLERANCE[backend])
            if problem is None and not np.array_equal(np.argmax(out, axis=1), np.argmax(ref, axis=1)):
                problem = "top-1 differs from onnxruntime"
            report.add(label, len(paths), backend, "-", rel, agree, checked, problem, time.monotonic() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--efficientnet", help="efficientnet-lite0.onnx made by models/efficientnet-lite0/convert.py")
    parser.add_argument("--only", help="check only the models whose name contains this")
    args = parser.parse_args()
    files = sorted(os.path.join(ONNX_DIR, f) for f in os.listdir(ONNX_DIR) if f.endswith(".onnx"))
    if args.efficientnet:
        files.append(os.path.abspath(args.efficientnet))
    if args.only:
        files = [f for f in files if args.only in os.path.basename(f)]
    print(f"onnx_reference: onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}")
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            name = os.path.basename(path)
            # Split runs at every cut on both backends, except EfficientNet-Lite0's GPU splits
            # (each is a full inference on lavapipe); its CPU splits cover the cut logic.
            cut_backends = ("cpu",) if "efficientnet" in name else ("cpu", "gpu")
            stem = os.path.splitext(name)[0]
            try:
                check_model(path, report, tmp, cut_backends)
                if stem in KNOWN_REFUSALS:
                    report.fail(name, "imported, but it is listed as a known refusal: update KNOWN_REFUSALS")
            except (RuntimeError, ValueError) as e:
                expected = KNOWN_REFUSALS.get(stem)
                if expected and expected in str(e) and "unsupported node" in str(e):
                    report.skipped.append(f"{name}: refused by the importer as documented ({expected})")
                else:
                    report.fail(name, str(e))
        if not args.only or "mnist" in args.only:
            check_mnist_zoo_output(report, tmp)
        if args.efficientnet:
            models = [os.path.abspath(args.efficientnet)]
            native = os.path.join(REPO, "models", "efficientnet-lite0")
            if os.path.isfile(os.path.join(native, "model.json")):
                models.append(native)
            else:
                report.skipped.append(f"{native}: no model.json (make it with `edgecut import`, see its README)")
            check_photos(os.path.abspath(args.efficientnet), models, report, tmp)
    report.print()
    for f in report.failures:
        print(f"FAILED: {f}")
    for s in report.skipped:
        print(f"SKIPPED: {s}")
    print(f"onnx_reference: {report.passed} passed, {len(report.failures)} failed, {len(report.skipped)} skipped")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
