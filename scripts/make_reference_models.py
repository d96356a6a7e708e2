#!/usr/bin/env python3
"""Generate the architecture-only reference model manifests (format 1).

Writes:
    models/efficientnet-b0/model.json   + README.md
    models/mobilenet-v2/model.json      + README.md

The manifests describe the architecture only; they carry "init": {"seed": 0}
so the loader draws seeded (untrained) weights when no weights.safetensors is
present.

For each model the script walks the shapes of the manifest it generated and
prints a per-block table (output shape, element count, params, MACs) plus the
totals, and asserts the totals are within 3% of the published figures.

Counting conventions:
  * params: conv weight (+ bias), dense weight + bias, batchnorm 4*C
    (gamma, beta, running mean, running var -- all stored in the weights file).
  * MACs: conv out_c*oh*ow*(in_c/groups)*k*k, dense in*out; pools, adds,
    muls, activations and batchnorm (folded into the conv at load) are free.

Usage (from the repository root):
    python3 scripts/make_reference_models.py

Python 3.11 standard library only; output is deterministic.
"""

from __future__ import annotations

import json
import os
import sys

FORMAT = 1
COMMAND = "python3 scripts/make_reference_models.py"
TOLERANCE = 0.03

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# op constructors
# ---------------------------------------------------------------------------

def conv(name, out_channels, kernel, stride=1, padding=0, groups=1, bias=False):
    return {
        "op": "conv2d",
        "name": name,
        "out_channels": out_channels,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "groups": groups,
        "bias": bias,
    }


def bn(name, eps):
    return {"op": "batchnorm", "name": name, "eps": eps}


def act(kind, save_as=None):
    op = {"op": kind}
    if save_as is not None:
        op["save_as"] = save_as
    return op


def dense(name, outputs, bias=True):
    return {"op": "dense", "name": name, "outputs": outputs, "bias": bias}


# ---------------------------------------------------------------------------
# EfficientNet-B0
# ---------------------------------------------------------------------------

EFFNET_BN_EPS = 0.001

# (expand ratio, kernel, stride of first layer, out channels, repeats)
EFFNET_B0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]


def mbconv(c_in, c_out, ratio, kernel, stride):
    eps = EFFNET_BN_EPS
    e = c_in * ratio
    ops = []
    if ratio != 1:
        ops += [conv("expand", e, 1), bn("expand_bn", eps), act("silu")]
    ops += [
        conv("dw", e, kernel, stride=stride, padding=kernel // 2, groups=e),
        bn("dw_bn", eps),
        act("silu", save_as="dw"),
    ]
    # Squeeze-excite: reduced width is a quarter of the block INPUT channels
    # (se_ratio 0.25 applied to input filters, as in the reference code).
    r = max(1, c_in // 4)
    ops += [
        {"op": "global_avgpool"},
        conv("se_reduce", r, 1, bias=True),
        act("silu"),
        conv("se_expand", e, 1, bias=True),
        act("sigmoid"),
        {"op": "mul", "with": "dw"},
    ]
    ops += [conv("project", c_out, 1), bn("project_bn", eps)]
    if stride == 1 and c_in == c_out:
        ops.append({"op": "add", "with": "input"})
    return ops


def efficientnet_b0():
    eps = EFFNET_BN_EPS
    blocks = [{
        "name": "stem",
        "ops": [conv("conv", 32, 3, stride=2, padding=1), bn("bn", eps), act("silu")],
    }]
    c_in = 32
    idx = 0
    for ratio, kernel, stride, c_out, repeats in EFFNET_B0_STAGES:
        for i in range(repeats):
            s = stride if i == 0 else 1
            blocks.append({"name": f"blocks_{idx}", "ops": mbconv(c_in, c_out, ratio, kernel, s)})
            c_in = c_out
            idx += 1
    blocks.append({
        "name": "head",
        "ops": [
            conv("conv", 1280, 1),
            bn("bn", eps),
            act("silu"),
            {"op": "global_avgpool"},
            {"op": "flatten"},
            dense("fc", 1000, bias=True),
        ],
    })
    return {
        "format": FORMAT,
        "name": "efficientnet-b0",
        "description": "EfficientNet-B0 (Tan & Le, 2019), architecture only: "
                       "weights are drawn from a seeded initialiser (untrained)",
        "input": [3, 224, 224],
        "classes": 1000,
        "init": {"seed": 0},
        "blocks": blocks,
        "exits": [],
    }


# ---------------------------------------------------------------------------
# MobileNet-V2 (width multiplier 1.0)
# ---------------------------------------------------------------------------

MBV2_BN_EPS = 1e-05

# (expansion t, out channels c, repeats n, stride of first layer s)
MBV2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def inverted_residual(c_in, c_out, t, stride):
    eps = MBV2_BN_EPS
    e = c_in * t
    ops = []
    if t != 1:
        ops += [conv("expand", e, 1), bn("expand_bn", eps), act("relu6")]
    ops += [
        conv("dw", e, 3, stride=stride, padding=1, groups=e),
        bn("dw_bn", eps),
        act("relu6"),
        conv("project", c_out, 1),
        bn("project_bn", eps),
    ]
    if stride == 1 and c_in == c_out:
        ops.append({"op": "add", "with": "input"})
    return ops


def mobilenet_v2():
    eps = MBV2_BN_EPS
    blocks = [{
        "name": "stem",
        "ops": [conv("conv", 32, 3, stride=2, padding=1), bn("bn", eps), act("relu6")],
    }]
    c_in = 32
    idx = 0
    for t, c_out, n, s in MBV2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            blocks.append({"name": f"blocks_{idx}", "ops": inverted_residual(c_in, c_out, t, stride)})
            c_in = c_out
            idx += 1
    blocks.append({
        "name": "head",
        "ops": [
            conv("conv", 1280, 1),
            bn("bn", eps),
            act("relu6"),
            {"op": "global_avgpool"},
            {"op": "flatten"},
            dense("fc", 1000, bias=True),
        ],
    })
    return {
        "format": FORMAT,
        "name": "mobilenet-v2",
        "description": "MobileNetV2 (Sandler et al., 2018), width 1.0, architecture only: "
                       "weights are drawn from a seeded initialiser (untrained)",
        "input": [3, 224, 224],
        "classes": 1000,
        "init": {"seed": 0},
        "blocks": blocks,
        "exits": [],
    }


# ---------------------------------------------------------------------------
# shape walk / accounting
# ---------------------------------------------------------------------------

ELEMENTWISE = {"relu", "relu6", "silu", "sigmoid", "softmax"}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def walk(manifest):
    """Walk the manifest's shapes; return per-block rows and totals."""
    assert manifest["format"] == FORMAT
    shape = list(manifest["input"])
    in_elems = numel(shape)
    rows = []
    total_params = 0
    total_macs = 0
    block_names = set()
    for block in manifest["blocks"]:
        bname = block["name"]
        assert bname not in block_names, f"duplicate block {bname}"
        block_names.add(bname)
        block_in = list(shape)
        saved = {}
        op_names = set()
        params = 0
        macs = 0
        for op in block["ops"]:
            kind = op["op"]
            where = f"{bname}/{op.get('name', kind)}"
            if "name" in op:
                assert op["name"] not in op_names, f"duplicate op name {where}"
                op_names.add(op["name"])
            if kind == "conv2d":
                assert len(shape) == 3, where
                c, h, w = shape
                k, s, p, g = op["kernel"], op["stride"], op["padding"], op["groups"]
                oc = op["out_channels"]
                assert c % g == 0 and oc % g == 0, where
                oh = (h + 2 * p - k) // s + 1
                ow = (w + 2 * p - k) // s + 1
                assert oh > 0 and ow > 0, where
                params += oc * (c // g) * k * k + (oc if op["bias"] else 0)
                macs += oc * oh * ow * (c // g) * k * k
                shape = [oc, oh, ow]
            elif kind == "batchnorm":
                assert len(shape) == 3, where
                params += 4 * shape[0]
            elif kind in ELEMENTWISE:
                pass
            elif kind == "global_avgpool":
                assert len(shape) == 3, where
                shape = [shape[0], 1, 1]
            elif kind == "flatten":
                shape = [numel(shape)]
            elif kind == "dense":
                assert len(shape) == 1, f"dense input must be 1-D at {where}"
                n_in, n_out = shape[0], op["outputs"]
                params += n_in * n_out + (n_out if op["bias"] else 0)
                macs += n_in * n_out
                shape = [n_out]
            elif kind == "add":
                other = block_in if op["with"] == "input" else saved[op["with"]]
                assert other == shape, f"add shape mismatch at {where}: {other} vs {shape}"
            elif kind == "mul":
                other = saved[op["with"]]
                assert len(shape) == 3 and shape[1:] == [1, 1] and other[0] == shape[0], \
                    f"mul shape mismatch at {where}: {shape} x {other}"
                shape = list(other)
            else:
                raise ValueError(f"unexpected op {kind} at {where}")
            if "save_as" in op:
                saved[op["save_as"]] = list(shape)
        total_params += params
        total_macs += macs
        rows.append((bname, list(shape), numel(shape), numel(shape) / in_elems, params, macs))
    assert shape == [manifest["classes"]], f"final shape {shape} != classes"
    return rows, total_params, total_macs


def print_table(manifest, rows, total_params, total_macs):
    print(f"== {manifest['name']}  input {manifest['input']}")
    print(f"{'block':<10} {'output shape':<16} {'elements':>10} {'ratio':>8} {'params':>10} {'MACs':>13}")
    for name, shape, elems, ratio, params, macs in rows:
        shp = "x".join(str(d) for d in shape)
        print(f"{name:<10} {shp:<16} {elems:>10} {ratio:>8.4f} {params:>10} {macs:>13}")
    print(f"{'TOTAL':<10} {'':<16} {'':>10} {'':>8} {total_params:>10} {total_macs:>13}")
    print(f"  params {total_params / 1e6:.3f} M, MACs {total_macs / 1e9:.4f} G")


def check(name, what, got, expected):
    rel = (got - expected) / expected
    print(f"  {what}: {got} vs published {expected:.4g} ({rel:+.2%})")
    assert abs(rel) <= TOLERANCE, f"{name}: {what} {got} not within 3% of {expected}"


# ---------------------------------------------------------------------------
# READMEs
# ---------------------------------------------------------------------------

def readme_efficientnet(rows, params, macs):
    return f"""# efficientnet-b0

EfficientNet-B0 (Mingxing Tan and Quoc V. Le, "EfficientNet: Rethinking Model
Scaling for Convolutional Neural Networks", ICML 2019, arXiv:1905.11946):
ImageNet classifier, 224x224x3 input, 1000 classes.

**Architecture only.** `model.json` carries no trained weights: it has
`"init": {{"seed": 0}}`, so when `weights.safetensors` is absent the loader
draws seeded (untrained) weights. Outputs are therefore meaningless as
predictions; the model is for cost / latency / partitioning work, where only
the shapes and the amount of compute matter.

## Structure

- `stem`: conv 3x3 stride 2 (32), batchnorm (eps 1e-3), SiLU.
- `blocks_0` ... `blocks_15`: 16 MBConv blocks, stages
  (expand ratio, kernel, stride, out channels, repeats):
  (1,3,1,16,1), (6,3,2,24,2), (6,5,2,40,2), (6,3,2,80,3), (6,5,1,112,3),
  (6,5,2,192,4), (6,3,1,320,1). Each block: 1x1 expand + BN + SiLU (ratio 6
  only), depthwise kxk + BN + SiLU, squeeze-excite (reduced width
  max(1, input channels / 4), SiLU, sigmoid gate), 1x1 linear projection + BN,
  residual add when stride 1 and input channels equal output channels.
- `head`: conv 1x1 (1280) + BN + SiLU, global average pool, flatten,
  dense 1000 with bias (dropout omitted: inference only).

Padding is symmetric (k // 2), as in the PyTorch ports, not TensorFlow "SAME".

## Reference figures

Published: 5.3 M parameters, 0.39 G FLOPs (multiply-accumulates) (paper,
Table 2); torchvision's `efficientnet_b0` reports 5,288,548 parameters and
0.39 GFLOPS.

This manifest, counted by the generating script: {params:,} parameters and
{macs:,} MACs ({macs / 1e9:.3f} G). The parameter count includes the batchnorm
running mean and variance (4 values per channel), which torchvision keeps as
buffers rather than parameters; MACs count convolutions and the dense layer
only.

## Regenerating

```
{COMMAND}
```

(run from the repository root; Python 3.11 standard library only,
deterministic output).
"""


def readme_mobilenet(rows, params, macs):
    return f"""# mobilenet-v2

MobileNetV2, width multiplier 1.0 (Mark Sandler, Andrew Howard, Menglong Zhu,
Andrey Zhmoginov, Liang-Chieh Chen, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018, arXiv:1801.04381): ImageNet classifier,
224x224x3 input, 1000 classes.

**Architecture only.** `model.json` carries no trained weights: it has
`"init": {{"seed": 0}}`, so when `weights.safetensors` is absent the loader
draws seeded (untrained) weights. Outputs are therefore meaningless as
predictions; the model is for cost / latency / partitioning work, where only
the shapes and the amount of compute matter.

## Structure

- `stem`: conv 3x3 stride 2 (32), batchnorm (eps 1e-5), ReLU6.
- `blocks_0` ... `blocks_16`: 17 inverted-residual blocks, settings
  (t, c, n, s): (1,16,1,1), (6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1),
  (6,160,3,2), (6,320,1,1). Each block: 1x1 expand + BN + ReLU6 (t = 6 only),
  depthwise 3x3 + BN + ReLU6, 1x1 linear projection + BN, residual add when
  stride 1 and input channels equal output channels.
- `head`: conv 1x1 (1280) + BN + ReLU6, global average pool, flatten,
  dense 1000 with bias (dropout omitted: inference only).

## Reference figures

Published: 300 M multiply-adds, 3.4 M parameters (paper, Table 4);
torchvision's `mobilenet_v2` reports 3,504,872 parameters and 0.30 GFLOPS.

This manifest, counted by the generating script: {params:,} parameters and
{macs:,} MACs ({macs / 1e6:.1f} M). The parameter count includes the batchnorm
running mean and variance (4 values per channel), which torchvision keeps as
buffers rather than parameters; MACs count convolutions and the dense layer
only.

## Regenerating

```
{COMMAND}
```

(run from the repository root; Python 3.11 standard library only,
deterministic output).
"""


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

MODELS = [
    # (builder, published MACs, published params, readme)
    (efficientnet_b0, 0.39e9, 5.29e6, readme_efficientnet),
    (mobilenet_v2, 0.300e9, 3.50e6, readme_mobilenet),
]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}")


def main():
    for build, exp_macs, exp_params, readme in MODELS:
        manifest = build()
        rows, params, macs = walk(manifest)
        print_table(manifest, rows, params, macs)
        check(manifest["name"], "MACs", macs, exp_macs)
        check(manifest["name"], "params", params, exp_params)
        out_dir = os.path.join(REPO_ROOT, "models", manifest["name"])
        write(os.path.join(out_dir, "model.json"), json.dumps(manifest, indent=2) + "\n")
        write(os.path.join(out_dir, "README.md"), readme(rows, params, macs))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
