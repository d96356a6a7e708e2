"""OpenBLAS sgemm reference for the dense-kernel target: times numpy's float32 matmul at 512^3.

Run: python3 benches/sgemm.py   (needs numpy; prints one JSON object)
Reports the median GFLOP/s (2·n³ FLOP per product) over repeated runs after warm-up, and the BLAS
numpy is linked against, so the README's "% of OpenBLAS" figure can be reproduced.
"""
import json
import statistics
import time

import numpy as np

n = 512
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
for _ in range(5):
    a @ b
times = []
for _ in range(50):
    t = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - t)
median = statistics.median(times)
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
except Exception:  # older numpy: no dict mode
    blas = "unknown"
print(json.dumps({
    "n": n,
    "blas": blas,
    "median_ms": median * 1e3,
    "gflops": 2 * n**3 / median / 1e9,
}))
