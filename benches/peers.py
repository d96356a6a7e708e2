"""The peer benchmark: the same ONNX files through edgecut (CPU backend and every GPU adapter),
onnxruntime and tract, interleaved in one run, medians and ratios.

Run: python benches/peers.py [--edgecut target/release/edgecut] [--out docs/peers] [--quick]
                             [--models a,b] [--batches 1,8] [--tract | --no-tract] [--no-gpu]
                             [--tract-bin target/tract-peer/release/tract-peer]
Needs numpy, onnx and onnxruntime (tests/python/run.sh builds such a venv under target/py-venv),
and a release build of edgecut (`cargo build --release`). tract runs when cargo is on PATH
(or with --tract; --no-tract leaves it out): the script builds benches/tract-peer, a standalone
Rust program on the tract-onnx crate (pinned in its Cargo.toml and Cargo.lock), in release into
target/tract-peer (the first build takes several minutes and about 0.5 GB), or uses the runner
given by --tract-bin.

Models: EfficientNet-Lite0 (pretrained, from models/efficientnet-lite0), EfficientNet-B0 and
MobileNet-V2 (architectures of models/*, weights drawn by benches/native_to_onnx.py) at batch 1
and 8; the trained MNIST models at batch 1 and 64. Each (model, batch) is timed in rounds; every
round runs every engine for `reps` runs after a warm-up, so the engines interleave and share the
machine's state. edgecut reports its own run times (`edgecut infer --repeat`: model compiled
once, input uploaded per run, output read back per run); onnxruntime is timed around
`session.run`. Threads: onnxruntime with 1 and with all cores, edgecut's CPU backend with the
same counts (`--threads`). GPU adapters (lavapipe is slow) run at batch 1 and on the MNIST
models only, with at most `--gpu-reps` runs per round. The load average before and after each
row is recorded: on a shared machine it says how much the other processes took.
tract runs on one thread, its own mode (its optional multi-threaded executor covers matrix
products only and is not enabled), with the input shape fixed before optimisation; it reports its
own run times (model loaded and optimised once per round, one state reused across runs), so the
ratio to read is edgecut's CPU backend on 1 thread / tract. Where tract cannot run a model, the
report says why. Every engine's output is checked against onnxruntime's on the same input.
Writes report.md and report.json to --out.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benches"))
import native_to_onnx  # noqa: E402

import onnx  # noqa: E402


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ort_times(path, x, threads, reps):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for _ in range(2):
        s.run(None, {name: x})
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        y = s.run(None, {name: x})[0]
        out.append(time.perf_counter() - t)
    return out, y


def edgecut_times(exe, model, x_path, backend, threads, reps, y_path):
    cmd = [str(exe), "infer", str(model), "--input", str(x_path), "--out", str(y_path),
           "--backend", backend, "--repeat", str(reps), "--json"]
    if threads:
        cmd += ["--threads", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return report["run_seconds"], report


TRACT_DIR = ROOT / "benches" / "tract-peer"
TRACT_TARGET = ROOT / "target" / "tract-peer"


def build_tract():
    """Builds the tract runner in release; returns its path (cargo's output goes to stderr)."""
    cmd = ["cargo", "build", "--release", "--locked", "--manifest-path", str(TRACT_DIR / "Cargo.toml"),
           "--target-dir", str(TRACT_TARGET)]
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return TRACT_TARGET / "release" / "tract-peer"


def tract_run(exe, model, x_path, reps, y_path):
    """tract's report (`run_seconds`: its own per-run times on one thread, `tract_version`);
    raises RuntimeError with tract's message."""
    cmd = [str(exe), str(model), "--input", str(x_path), "--output", str(y_path), "--repeat", str(reps)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rel_diff(y, y_ref):
    return float(np.max(np.abs(y - y_ref)) / max(1e-12, float(np.max(np.abs(y_ref)))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgecut", default=str(ROOT / "target/release/edgecut"))
    ap.add_argument("--out", default=str(ROOT / "docs/peers"))
    ap.add_argument("--quick", action="store_true", help="batch 1 only, fewer runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="", help="comma-separated subset of model names")
    ap.add_argument("--batches", default="", help="comma-separated batch sizes to keep")
    ap.add_argument("--gpu-reps", type=int, default=3, help="runs per round on a GPU adapter")
    ap.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=True,
                    help="run edgecut on the GPU adapters found (--no-gpu leaves them out)")
    ap.add_argument("--tract", action=argparse.BooleanOptionalAction, default=None,
                    help="run tract (default: when cargo is on PATH)")
    ap.add_argument("--tract-bin", help="a built tract runner (benches/tract-peer) to use instead "
                    "of building one")
    args = ap.parse_args()
    exe = Path(args.edgecut)
    if not exe.exists():
        sys.exit(f"{exe} not found: build it with `cargo build --release` or pass --edgecut")
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="edgecut-peers-"))
    tract, tract_version = None, None
    if args.tract_bin and args.tract is not False:
        tract = Path(args.tract_bin)
        if not tract.exists():
            sys.exit(f"{tract} not found (--tract-bin)")
    elif args.tract or (args.tract is None and shutil.which("cargo")):
        try:
            tract = build_tract()
        except (subprocess.CalledProcessError, OSError) as e:
            if args.tract:
                sys.exit(f"building the tract runner failed: {e}")
            print(f"tract left out: building the tract runner failed: {e}", file=sys.stderr)
    cnn_batches = [1] if args.quick else [1, 8]
    mnist_batches = [1] if args.quick else [1, 64]
    models = [
        ("efficientnet-lite0", "models/efficientnet-lite0", cnn_batches),
        ("efficientnet-b0", "models/efficientnet-b0", cnn_batches),
        ("mobilenet-v2", "models/mobilenet-v2", cnn_batches),
        ("mnist-lenet-ee", "models/mnist-lenet-ee", mnist_batches),
        ("mnist-mlp-dense", "models/mnist-mlp-dense", mnist_batches),
        ("mnist-mlp-sparse-4x", "models/mnist-mlp-sparse-4x", mnist_batches),
    ]
    if args.models:
        keep = set(args.models.split(","))
        models = [m for m in models if m[0] in keep]
    if args.batches:
        keep = {int(b) for b in args.batches.split(",")}
        models = [(n, f, [b for b in bs if b in keep]) for n, f, bs in models]
    adapters = json.loads(subprocess.run([str(exe), "adapters", "--json"], capture_output=True,
                                         text=True, check=True).stdout)["adapters"]
    gpus = [a for a in adapters if str(a.get("backend", "")).lower() in ("vulkan", "metal", "dx12")]
    gpus = gpus if args.gpu else []
    rows = []
    for name, folder, batches in models:
        onnx_path = work / f"{name}.onnx"
        onnx.save(native_to_onnx.convert(ROOT / folder), str(onnx_path))
        m = onnx.load(str(onnx_path))
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:]]
        for batch in batches:
            heavy = np.prod(dims) * batch > 2e5
            reps = (3 if heavy else 20) if args.quick else (5 if heavy else 50)
            rng = np.random.default_rng(0)
            x = rng.standard_normal([batch] + dims).astype(np.float32)
            x_path = work / "x.npy"
            np.save(x_path, x)
            engines = {}
            # Same answers first: tract runs once on the input (a model it cannot run is
            # recorded with tract's reason and timed without it).
            _, y_ref = ort_times(onnx_path, x, cores, 1)
            tract_error, tract_diff = None, None
            if tract:
                try:
                    tract_version = tract_run(tract, onnx_path, x_path, 1,
                                              work / "y_tract.npy")["tract_version"]
                    tract_diff = rel_diff(np.load(work / "y_tract.npy"), y_ref)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                    tract_error = str(e)
            for t in sorted({1, cores}):
                engines[f"onnxruntime {t}T"] = lambda t=t: ort_times(onnx_path, x, t, reps)[0]
                engines[f"edgecut cpu {t}T"] = lambda t=t: edgecut_times(
                    exe, onnx_path, x_path, "cpu", t, reps, work / "y.npy")[0]
            if tract and tract_error is None:
                engines["tract 1T"] = lambda: tract_run(tract, onnx_path, x_path, reps,
                                                        work / "y_tract.npy")["run_seconds"]
            # Lavapipe at batch 8 of a 224x224 model takes seconds per run: batch 1 and MNIST only.
            if gpus and (batch == 1 or not name.startswith(("efficientnet", "mobilenet"))):
                engines["edgecut gpu"] = lambda: edgecut_times(
                    exe, onnx_path, x_path, "gpu", None, min(reps, args.gpu_reps),
                    work / "y.npy")[0]
            times = {k: [] for k in engines}
            load_before = os.getloadavg()[0]
            for _ in range(args.rounds):
                for k, f in engines.items():
                    print(f"{name} batch {batch}: {k}", file=sys.stderr)
                    times[k] += f()
            # Same answers: edgecut's CPU output vs onnxruntime's.
            edgecut_times(exe, onnx_path, x_path, "cpu", None, 1, work / "y.npy")
            diff = rel_diff(np.load(work / "y.npy"), y_ref)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append({"model": name, "batch": batch, "median_ms": med,
                         "max_rel_diff_vs_onnxruntime": diff,
                         "tract_max_rel_diff_vs_onnxruntime": tract_diff,
                         "tract_error": tract_error,
                         "runs_per_engine": {k: len(v) for k, v in times.items()},
                         "load_average_1min": [load_before, os.getloadavg()[0]]})
    report = {
        "cpu": cpu_model(), "cores": cores, "onnxruntime": ort.__version__,
        "tract": f"tract-onnx {tract_version or '?'}, 1 thread" if tract else None,
        "gpu_adapters": [a["name"] for a in gpus], "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    engines = []
    for r in rows:
        engines += [e for e in r["median_ms"] if e not in engines]
    tract_note = f"; tract: {report['tract']}" if tract else "; tract: not run"
    lines = [f"CPU: {report['cpu']} ({cores} cores); onnxruntime {ort.__version__}{tract_note}; GPU adapters: "
             f"{', '.join(report['gpu_adapters']) or 'none'}; `python benches/peers.py {' '.join(sys.argv[1:])}`", "",
             "| model | batch | " + " | ".join(f"{e} ms" for e in engines)
             + " | edgecut cpu / onnxruntime (same threads) | edgecut cpu 1T / tract | edgecut gpu / onnxruntime "
             f"{cores}T | max rel. diff (edgecut; tract) | load avg |",
             "|---|---:|" + "---:|" * len(engines) + "---|---:|---:|---|---|"]
    notes = []
    for r in rows:
        med = r["median_ms"]
        ratios = ", ".join(f"{t}T {med[f'edgecut cpu {t}T'] / med[f'onnxruntime {t}T']:.2f}x"
                           for t in sorted({1, cores}))
        if "tract 1T" in med:
            vs_tract = f"{med['edgecut cpu 1T'] / med['tract 1T']:.2f}x"
        elif r["tract_error"]:
            vs_tract = "tract failed (below)"
            notes.append(f"- tract on {r['model']} batch {r['batch']}: {r['tract_error']}")
        else:
            vs_tract = "–"
        gpu = (f"{med['edgecut gpu'] / med[f'onnxruntime {cores}T']:.1f}x"
               if "edgecut gpu" in med else "–")
        load = " → ".join(f"{v:.1f}" for v in r["load_average_1min"])
        diffs = f"{r['max_rel_diff_vs_onnxruntime']:.1e}"
        if r["tract_max_rel_diff_vs_onnxruntime"] is not None:
            diffs += f"; {r['tract_max_rel_diff_vs_onnxruntime']:.1e}"
        lines.append(f"| {r['model']} | {r['batch']} | "
                     + " | ".join(f"{med[e]:.2f}" if e in med else "–" for e in engines)
                     + f" | {ratios} | {vs_tract} | {gpu} | {diffs} | {load} |")
    if notes:
        lines += ["", "Where tract could not run a model:"] + notes
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
