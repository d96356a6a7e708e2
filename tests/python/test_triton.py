"""`edgecut run` against a real Triton serving the exported tails (started by
tests/python/triton.sh, which passes its URL and process id).

Checks, over the first SAMPLES digits of the MNIST test split, with exits off so that every
request goes to the server:
1. the device alone (`--policy device`) matches `edgecut eval`'s accuracy: the local reference;
2. `--policy static:<block>:<enc>` at every cut candidate and encoding: Triton answers every
   request, the client finds the tail by the naming convention, FP32 predictions are identical
   to the local ones and FP16/INT8 change at most MAX_CHANGED of them;
3. `--policy dynamic`: every request answered, the load signal read from Triton's statistics
   extension is in the scheduler's report (`server_load`);
4. Triton killed (SIGKILL) mid-run: every request still answered, by fallback after the kill,
   with the local predictions.
Environment: EDGECUT_BIN, TRITON_URL (host:port), TRITON_PID, MODEL (dir), DATA (MNIST dir).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

SAMPLES = 200
# FP16 and INT8 split tensors may change a prediction near a tie; at most this fraction may.
MAX_CHANGED = 0.02
# The dynamic run's device is emulated this many times slower than the CPU backend it runs on.
SLOW_DEVICE = 30
BIN = os.environ["EDGECUT_BIN"]
URL = os.environ["TRITON_URL"]
PID = int(os.environ["TRITON_PID"])
MODEL = os.environ["MODEL"]
DATA = os.environ["DATA"]
NAME = json.load(open(os.path.join(MODEL, "model.json")))["name"]


def edgecut(*args):
    out = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"triton: edgecut {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def run(policy, *extra):
    return edgecut("run", MODEL, "--server", f"http://{URL}", "--data", DATA, "--policy", policy,
                   "--limit", str(SAMPLES), "--exit-threshold", "1.0", "--backend", "cpu",
                   "--json", "--predictions", *extra)


def stats(model):
    with urllib.request.urlopen(f"http://{URL}/v2/models/{model}/stats", timeout=5) as r:
        return json.load(r)["model_stats"][0]


def check(ok, what):
    if not ok:
        sys.exit(f"triton: FAILED: {what}")
    print(f"triton: ok: {what}")


def main():
    start = time.monotonic()
    ev = edgecut("eval", MODEL, "--data", DATA, "--limit", str(SAMPLES), "--exit-threshold",
                 "1.0", "--backend", "cpu", "--json")
    local = run("device")
    check(local["accuracy"] == ev["accuracy"] and local["samples"] == SAMPLES,
          f"device-only accuracy {local['accuracy']} equals edgecut eval's {ev['accuracy']}")
    want = local["predictions"]
    info = edgecut("info", MODEL, "--json")
    cuts = [k for k, b in enumerate(info["blocks"])
            if b["natural_bottleneck"] and k + 1 < len(info["blocks"])]
    for k in cuts:
        for enc in ("fp32", "fp16", "int8"):
            j = run(f"static:{k}:{enc}", "--stats-interval-ms", "0")
            what = f"static:{k}:{enc}"
            check(j["server_kind"] == "triton", f"{what}: the client saw a Triton server")
            check(j["server_answers"] == SAMPLES and j["fallbacks"] == 0,
                  f"{what}: Triton answered all {SAMPLES} requests ({j['fallbacks']} fallbacks)")
            changed = sum(a != b for a, b in zip(j["predictions"], want))
            if enc == "fp32":
                check(changed == 0, f"{what}: predictions identical to the local ones")
            else:
                check(changed <= MAX_CHANGED * SAMPLES,
                      f"{what}: {changed} of {SAMPLES} predictions changed "
                      f"(at most {MAX_CHANGED:.0%})")
            check(j["server_load"] is not None and j["server_load"]["samples"] > 0,
                  f"{what}: load read from Triton's statistics {j['server_load']}")
            served = stats(f"{NAME}__cut{k}__{enc}")["inference_count"]
            check(served >= SAMPLES, f"{what}: Triton's tail model counted {served} inferences")
    # An emulated slow device, so that sending to the server pays off.
    j = run("dynamic", "--stats-interval-ms", "0", "--calibration-samples", "200",
            "--device-slowdown", str(SLOW_DEVICE))
    check(j["samples"] == SAMPLES and j["fallbacks"] == 0 and j["server_answers"] > 0,
          f"dynamic: all {SAMPLES} answered, {j['server_answers']} by Triton, no fallback; "
          f"choices {j.get('choices')}")
    load = j["server_load"]
    check(load is not None and load["samples"] > 0 and load["queue_ms"] >= 0,
          f"dynamic: the scheduler's load signal from Triton's statistics: {load}")
    changed = sum(a != b for a, b in zip(j["predictions"], want))
    check(changed <= MAX_CHANGED * SAMPLES, f"dynamic: {changed} predictions changed")

    # Fault: kill Triton once the run is under way (the uplink shaped so that it takes seconds).
    k = cuts[0]
    tail = f"{NAME}__cut{k}__fp32"
    before = stats(tail)["inference_count"]
    p = subprocess.Popen([BIN, "run", MODEL, "--server", f"http://{URL}", "--data", DATA,
                          "--policy", f"static:{k}:fp32", "--limit", str(SAMPLES),
                          "--exit-threshold", "1.0", "--backend", "cpu", "--json",
                          "--predictions", "--trace", "const:0.5", "--deadline-ms", "500"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while stats(tail)["inference_count"] < before + 20:
        if p.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"triton: the run ended before Triton served 20 requests: {p.stderr.read()}")
        time.sleep(0.02)
    os.kill(PID, signal.SIGKILL)
    killed = time.monotonic()
    out, err = p.communicate(timeout=120)
    if p.returncode != 0:
        sys.exit(f"triton: the run with Triton killed failed:\n{err}")
    j = json.loads(out)
    check(j["samples"] == SAMPLES and j["server_answers"] > 0 and j["fallbacks"] > 0
          and j["server_answers"] + j["fallbacks"] == SAMPLES,
          f"Triton killed mid-run: {j['server_answers']} answered by Triton, {j['fallbacks']} "
          f"by fallback, all {SAMPLES} answered ({time.monotonic() - killed:.1f} s after the kill)")
    check(j["predictions"] == want, "Triton killed mid-run: predictions identical to local ones")
    print(f"triton: all checks passed in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
