"""The standard KServe v2 client (tritonclient[http]) against `edgecut serve`.

Run by .ci/run, or by hand:
    edgecut serve models/mnist-fixture --addr 127.0.0.1:8123 &
    EDGECUT_URL=127.0.0.1:8123 EDGECUT_BIN=target/debug/edgecut \
        python tests/python/test_tritonclient.py

Checks readiness, model metadata, a binary full-model inference (predictions and accuracy equal
to `edgecut eval`'s on the same digits), a JSON-only UINT8 request, and tail inferences with the
edgecut_* parameters whose logits match a NumPy computation of the tail from the model's weights,
and the statistics extension read through the client's own `get_inference_statistics`.
"""

import gzip
import json
import os
import struct
import subprocess
import unittest

import numpy as np
import tritonclient.http as httpclient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URL = os.environ.get("EDGECUT_URL", "127.0.0.1:8000")
BIN = os.environ.get("EDGECUT_BIN", os.path.join(ROOT, "target", "debug", "edgecut"))
MODEL_DIR = os.path.join(ROOT, "models", "mnist-fixture")
MODEL = "mnist-fixture"
SAMPLES = 64


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        dtype = {"F32": np.float32, "U32": np.uint32, "U16": np.uint16}[meta["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + lo : 8 + n + hi], dtype=dtype).reshape(meta["shape"])
    return out


def load_mnist_test(limit):
    d = os.path.join(ROOT, "models", "data", "mnist")
    with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    n, rows, cols = struct.unpack(">III", raw[4:16])
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols)[:limit]
    with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read()[8:], dtype=np.uint8)[:limit]
    return images, labels


class TritonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = httpclient.InferenceServerClient(url=URL)
        cls.weights = load_safetensors(os.path.join(MODEL_DIR, "weights.safetensors"))

    def test_server_and_model_are_ready(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready(MODEL))

    def test_model_metadata_names_input_output_and_hash(self):
        meta = self.client.get_model_metadata(MODEL)
        self.assertEqual(meta["name"], MODEL)
        self.assertEqual(meta["inputs"][0]["shape"], [-1, 1, 28, 28])
        self.assertEqual(meta["outputs"][0]["name"], "logits")
        self.assertEqual(len(meta["parameters"]["edgecut_model_hash"]), 64)

    def test_binary_full_model_inference_matches_edgecut_eval(self):
        images, labels = load_mnist_test(SAMPLES)
        x = images.astype(np.float32) / 255.0
        preds = []
        for lo in range(0, SAMPLES, 16):
            inp = httpclient.InferInput("input", [16, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(x[lo : lo + 16], binary_data=True)
            out = httpclient.InferRequestedOutput("logits", binary_data=True)
            res = self.client.infer(MODEL, [inp], outputs=[out])
            logits = res.as_numpy("logits")
            self.assertEqual(logits.shape, (16, 10))
            self.assertIn("compute_us", res.get_response()["parameters"])
            preds.extend(logits.argmax(axis=1))
        accuracy = float(np.mean(np.array(preds) == labels))
        ev = json.loads(
            subprocess.run(
                [BIN, "eval", MODEL_DIR, "--limit", str(SAMPLES), "--json",
                 "--data", os.path.join(ROOT, "models", "data", "mnist")],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        self.assertEqual(ev["samples"], SAMPLES)
        self.assertAlmostEqual(accuracy, ev["accuracy"], places=9)

        # The same digits as JSON-only UINT8 pixels give the same predictions.
        inp = httpclient.InferInput("input", [4, 1, 28, 28], "UINT8")
        inp.set_data_from_numpy(images[:4], binary_data=False)
        res = self.client.infer(MODEL, [inp])
        self.assertEqual(list(res.as_numpy("logits").argmax(axis=1)), list(preds[:4]))

    def tail(self, cut_after, x):
        hash_ = self.client.get_model_metadata(MODEL)["parameters"]["edgecut_model_hash"]
        inp = httpclient.InferInput("cut", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        res = self.client.infer(
            MODEL,
            [inp],
            outputs=[httpclient.InferRequestedOutput("logits", binary_data=True)],
            parameters={
                # The server runs the blocks after edgecut_cut_after.
                "edgecut_cut_after": cut_after,
                "edgecut_encoding": "FP32",
                "edgecut_model_hash": hash_,
            },
        )
        return res.as_numpy("logits")

    def test_tail_inference_with_parameters_matches_numpy(self):
        w = self.weights
        cuts = self.client.get_model_metadata(MODEL)["parameters"]["edgecut_cuts"]
        cut_after = {c["block"]: c["cut_after"] for c in cuts}
        rng = np.random.default_rng(7)

        def fc3(h):
            return h @ w["fc3.fc.weight"].T + w["fc3.fc.bias"]

        def fc2(h):  # fixed fan-in: output o sums k weighted inputs h[indices[o, :]]
            idx, wt = w["fc2.fc.indices"].astype(np.int64), w["fc2.fc.weights"]
            return np.maximum((h[:, idx] * wt).sum(axis=2) + w["fc2.fc.bias"], 0.0)

        x = rng.standard_normal((3, 84)).astype(np.float32)
        np.testing.assert_allclose(self.tail(cut_after["fc2"], x), fc3(x), rtol=1e-4, atol=1e-4)
        x = rng.random((2, 120)).astype(np.float32)
        np.testing.assert_allclose(self.tail(cut_after["fc1"], x), fc3(fc2(x)), rtol=1e-4, atol=1e-4)

    def test_wrong_model_hash_is_refused(self):
        inp = httpclient.InferInput("cut", [1, 84], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 84), np.float32))
        with self.assertRaises(Exception) as err:
            self.client.infer(MODEL, [inp], parameters={"edgecut_cut_after": 3, "edgecut_model_hash": "0" * 64})
        self.assertIn("hash", str(err.exception))

    def test_statistics_extension_counts_inferences_cumulatively(self):
        def counts():
            s = self.client.get_inference_statistics(MODEL)["model_stats"][0]
            return s["inference_count"], s["inference_stats"]["success"]["count"]

        inference, success = counts()
        inp = httpclient.InferInput("input", [2, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(np.zeros((2, 1, 28, 28), np.float32))
        self.client.infer(MODEL, [inp])
        self.assertEqual(counts(), (inference + 2, success + 1))
        every = self.client.get_inference_statistics()["model_stats"]
        self.assertIn(MODEL, [m["name"] for m in every])


if __name__ == "__main__":
    unittest.main(verbosity=2)
