#!/usr/bin/env bash
# Runs tests/python/test_tritonclient.py against a real `edgecut serve`: creates a virtual
# environment under the cargo target dir, installs tritonclient[http] and numpy from PyPI,
# starts the server on a free loopback port, runs the test and stops the server.
# Usage: bash tests/python/run.sh   (from anywhere; builds the binary if needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/py-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tritonclient.http, numpy" 2>/dev/null; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        echo "python: installing python3-venv"
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "tritonclient[http]" numpy
fi
# The binary `cargo test` builds for the integration tests (same features, so nothing is rebuilt
# after the test run; a plain `cargo build --bin` would unify features differently and rebuild).
cargo test --locked -q --no-run
bin="$target/debug/edgecut"
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
