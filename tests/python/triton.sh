#!/usr/bin/env bash
# A real Triton serving the exported tails of models/mnist-lenet-ee, and `edgecut run` through it
# (tests/python/test_triton.py). The `tritonserver` 2.51 bundled with the PyPI wheel
# nvidia-pytriton 0.7.0 runs on CPU-only machines with its Python backend but has no onnxruntime
# backend, so the exported `onnxruntime_onnx` repository is wrapped model by model into Python-
# backend models running the same ONNX files with onnxruntime (triton_python_models.py).
# Triton is started once, on loopback (HTTP only, a free port), and always killed at the end.
# Its start-up prints CUDA/NVML errors on machines without a GPU: harmless.
# Usage: bash tests/python/triton.sh <venv with nvidia-pytriton, onnx, onnxruntime> <edgecut binary>
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="$1"
bin="$2"
py="$venv/bin/python"
model=models/mnist-lenet-ee
site="$("$py" -c 'import site; print(site.getsitepackages()[0])')"
server_dir="$site/pytriton/tritonserver"
pyver="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
stub="$server_dir/python_backend_stubs/$pyver/triton_python_backend_stub"
[ -x "$server_dir/bin/tritonserver" ] || { echo "triton: no tritonserver in $server_dir (install nvidia-pytriton==0.7.0)"; exit 1; }
[ -f "$stub" ] || { echo "triton: the wheel has no Python backend stub for Python $pyver"; exit 1; }

work="$(mktemp -d)"
triton=""
cleanup() {
    if [ -n "$triton" ]; then
        kill -9 "$triton" 2>/dev/null || true
        wait "$triton" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

# The exported repository (deploy/README.md), then its Python-backend twin.
"$bin" export "$model" --triton-repo "$work/export"
"$py" tests/python/triton_python_models.py "$work/export" "$work/repo"
# The stub must sit in the Python backend's folder; a copy keeps the venv untouched.
cp -r "$server_dir/backends" "$work/backends"
cp "$stub" "$work/backends/python/"

port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
LD_LIBRARY_PATH="$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$server_dir/bin/tritonserver" --model-repository="$work/repo" \
    --backend-directory="$work/backends" --http-address=127.0.0.1 --http-port="$port" \
    --allow-grpc=false --allow-metrics=false --exit-timeout-secs=5 >"$work/triton.log" 2>&1 &
triton=$!
ready=0
for _ in $(seq 1 240); do
    if ! kill -0 "$triton" 2>/dev/null; then break; fi
    if "$py" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/v2/health/ready', timeout=1)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.5
done
if [ "$ready" != 1 ]; then
    tail -n 40 "$work/triton.log"
    echo "triton: tritonserver did not become ready (log above)"
    exit 1
fi
echo "triton: tritonserver ready on 127.0.0.1:$port after $((SECONDS - started)) s"
TRITON_URL="127.0.0.1:$port" TRITON_PID="$triton" EDGECUT_BIN="$bin" MODEL="$model" \
    DATA=models/data/mnist "$py" tests/python/test_triton.py
echo "triton: done in $((SECONDS - started)) s"
