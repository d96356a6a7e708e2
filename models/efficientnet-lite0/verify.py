#!/usr/bin/env python3
"""Checks the converted EfficientNet-Lite0 with onnxruntime, before anything else touches it.

1. Preprocessing from the model itself: the stem convolution is linear, so the running mean of
   the stem's batch norm fixes the mean of the preprocessed input it was trained on, and its
   running variance fixes the scale. Both are compared with two candidate preprocessings,
   (x - 127) / 128 and ImageNet mean/std, using ImageNet's published mean pixel (and, for the
   variance, the 3x3 patch covariance of the photos at hand).
2. Classification of the photos in models/data/images/ with that preprocessing: prints top-5.

Needs numpy, onnx, onnxruntime and Pillow (`pip install numpy onnx onnxruntime pillow`).
Usage: python verify.py --model efficientnet-lite0.onnx [--images ../data/images] [--json]
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# What the weights were trained with (established by `stem_statistics` below; see README.md).
INPUT_SIZE = 224
RESIZE_SHORTER = 256  # shorter side resized to 256 (bilinear), then a centre crop of 224
MEAN = 127.0
SCALE = 128.0
# ImageNet's mean pixel and per-channel standard deviation (RGB, 0..255): the published figures
# behind the usual torchvision normalisation.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225]) * 255


def load_image(path):
    """RGB uint8 HWC: shorter side resized to RESIZE_SHORTER with PIL's bilinear filter (which
    widens its support when downscaling, i.e. antialiased), rounded to the nearest pixel, then
    the central INPUT_SIZE x INPUT_SIZE crop (offsets rounded down)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = RESIZE_SHORTER / min(w, h)
        nw, nh = max(INPUT_SIZE, round(w * scale)), max(INPUT_SIZE, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - INPUT_SIZE) // 2, (nh - INPUT_SIZE) // 2
        img = img.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
        return np.asarray(img, dtype=np.uint8)


def preprocess(rgb):
    """uint8 HWC RGB -> float32 CHW, (x - 127) / 128."""
    return ((rgb.astype(np.float32) - MEAN) / SCALE).transpose(2, 0, 1).copy()


def list_images(folder):
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    return [os.path.join(folder, n) for n in names]


def load_labels():
    with open(os.path.join(HERE, "labels.txt")) as f:
        labels = [line.rstrip("\n") for line in f]
    if len(labels) != 1000:
        raise ValueError(f"labels.txt has {len(labels)} lines, expected 1000")
    return labels


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def stem_statistics(model, photos):
    """Compares the stem batch norm's running statistics with what each candidate preprocessing
    predicts. Returns a dict of the numbers."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    weight = inits["_conv_stem.weight"]  # [32, 3, 3, 3]
    run_mean, run_var = inits["_bn0.running_mean"], inits["_bn0.running_var"]
    live = run_var > 0  # some stem channels are dead (zero variance); they say nothing
    per_channel = weight.sum(axis=(2, 3))  # [32, 3]: response to a constant input per channel
    # Mean of the preprocessed input the stem saw in training, per colour channel (least squares).
    fitted_mean = np.linalg.lstsq(per_channel, run_mean, rcond=None)[0]

    # 3x3 patch covariance of the photos in pixel units (0..255), on the stem's stride-2 grid.
    patches = []
    for rgb in photos:
        x = rgb.astype(np.float64).transpose(2, 0, 1)
        for i in range(0, INPUT_SIZE - 2, 2):
            for j in range(0, INPUT_SIZE - 2, 2):
                patches.append(x[:, i:i + 3, j:j + 3].ravel())
    patches = np.array(patches)
    cov = np.cov(patches, rowvar=False)
    w = weight.reshape(32, 27)
    candidates = {
        "(x-127)/128": (np.full(3, 127.0), np.full(3, 128.0)),
        "imagenet mean/std": (IMAGENET_MEAN, IMAGENET_STD),
    }
    result = {"fitted_input_mean": fitted_mean.tolist(), "candidates": {}}
    for name, (mean, std) in candidates.items():
        expected_input_mean = (IMAGENET_MEAN - mean) / std
        predicted_mean = per_channel @ expected_input_mean
        mean_error = float(np.linalg.norm(predicted_mean - run_mean) / np.linalg.norm(run_mean))
        inv = np.repeat(1.0 / std, 9)  # patch layout is channel-major, 9 pixels per channel
        predicted_var = np.einsum("oi,ij,oj->o", w * inv, cov, w * inv)
        ratio = run_var[live] / predicted_var[live]
        result["candidates"][name] = {
            "expected_input_mean": expected_input_mean.tolist(),
            "mean_rel_error": mean_error,
            "var_ratio_median": float(np.median(ratio)),
            "var_log_ratio_rms": float(np.sqrt(np.mean(np.log(ratio) ** 2))),
        }
    return result


def classify(session, paths, labels, top):
    batch = np.stack([preprocess(load_image(p)) for p in paths])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    probs = softmax(logits)
    out = []
    for path, p in zip(paths, probs):
        order = np.argsort(-p)[:top]
        out.append({
            "image": os.path.basename(path),
            "top": [{"class": int(k), "label": labels[k], "prob": float(p[k])} for k in order],
        })
    return out, logits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", default=os.path.join(HERE, "..", "data", "images"))
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort

    paths = list_images(args.images)
    if not paths:
        sys.exit(f"verify: no images in {args.images}")
    stats = stem_statistics(onnx.load(args.model), [load_image(p) for p in paths])
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    results, _ = classify(session, paths, load_labels(), args.top)
    if args.json:
        print(json.dumps({"stem_statistics": stats, "images": results}, indent=1))
        return
    print("stem batch norm vs preprocessing:")
    print(f"  fitted mean of the preprocessed input (R, G, B): {np.round(stats['fitted_input_mean'], 3).tolist()}")
    for name, c in stats["candidates"].items():
        print(
            f"  {name:18} expected input mean {np.round(c['expected_input_mean'], 3).tolist()}, "
            f"mean rel. error {c['mean_rel_error']:.2f}, running var / predicted var: median "
            f"{c['var_ratio_median']:.2f}, rms log ratio {c['var_log_ratio_rms']:.2f}"
        )
    for r in results:
        print(r["image"])
        for t in r["top"]:
            print(f"  {t['prob']:.3f}  {t['class']:4d}  {t['label']}")


if __name__ == "__main__":
    main()
