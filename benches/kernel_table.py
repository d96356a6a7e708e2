"""Runs the criterion kernel benchmarks and numpy's OpenBLAS sgemm in one go and prints the
README's kernel table: GFLOP/s per kernel, fan-in (independent and grouped rows) vs dense time
ratios against the target
(fan-in time <= 1.25 x density x dense time at batch 64) and the dense kernel's share of OpenBLAS
sgemm at 512^3.

Run: WGPU_BACKEND=vulkan python3 benches/kernel_table.py   (needs numpy for the sgemm figure)
"""
import json
import re
import subprocess
import sys

bench = subprocess.run(
    ["cargo", "bench", "--bench", "kernels"], capture_output=True, text=True, check=True
).stdout
sgemm = json.loads(
    subprocess.run([sys.executable, "benches/sgemm.py"], capture_output=True, text=True, check=True).stdout
)

# criterion prints "<id>\n time: [lo mid hi]\n thrpt: [lo mid hi]" (id and time may share a line).
results = {}
name = None
for line in bench.splitlines():
    m = re.match(r"^(gpu_\S+)", line)
    if m:
        name = m.group(1)
    t = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
    if t and name:
        value, unit = float(t.group(1)), t.group(2)
        scale = {"Kelem/s": 1e-6, "Melem/s": 1e-3, "Gelem/s": 1.0, "Telem/s": 1e3}[unit]
        results[name] = value * scale  # GFLOP/s
        name = None

print("| kernel | GFLOP/s |")
print("|---|---:|")
for k, v in results.items():
    print(f"| `{k}` | {v:.3f} |")

print()
print("| kernel | shape, batch | density | fan-in time / dense time | target (1.25 x density) | met |")
print("|---|---|---:|---:|---:|---|")
for kernel in ["fanin", "fanin_grouped"]:
    for shape in ["800x512", "4096x4096"]:
        for batch in [1, 64]:
            dense = results.get(f"gpu_dense/{shape}_b{batch}")
            for d in [100, 25, 10, 5]:
                fan = results.get(f"gpu_{kernel}/{shape}_d{d:03d}_b{batch}")
                if not dense or not fan:
                    continue
                # Same FLOP definition (2 per MAC actually performed): time ratio = density * dense/fan rate.
                ratio = (d / 100) * dense / fan
                target = 1.25 * d / 100
                met = "yes" if ratio <= target else "no"
                print(f"| {kernel} | {shape}, {batch} | {d}% | {ratio:.3f} | {target:.3f} | {met if batch == 64 else '(batch 1: not a target)'} |")

dense512 = results.get("gpu_dense/512x512_b512")
print()
print(
    f"Dense kernel at 512^3: {dense512:.2f} GFLOP/s; numpy {sgemm['blas']} sgemm in the same run: "
    f"{sgemm['gflops']:.1f} GFLOP/s -> {100 * dense512 / sgemm['gflops']:.1f}% (target >= 10%)."
)
