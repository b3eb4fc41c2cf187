#!/usr/bin/env python3
"""Test oracle (never shipped): the backbones the detector survey stands on, built by torchvision
with seeded random weights, exported to ONNX, and ONNX Runtime's outputs on a fixed input, for the
test that vigil's executor runs them (tests/it/backbones.rs). Run in the oracle venv from the
repository root:

    .venv-onnx/bin/python scripts/reference/export-backbones.py            # every backbone
    .venv-onnx/bin/python scripts/reference/export-backbones.py resnet50   # some

Writes tests/golden/onnx/big/backbone-<name>.onnx (git-ignored: ResNet-50 alone is 100 MB) and the
committed tests/golden/onnx/backbones/<name>.json: the ONNX file's SHA-256, opset, input size,
the operator inventory and ONNX Runtime's output (CPU, graph optimizations off) as a list.

Weights: torchvision's own initialization (seed 1), then every BatchNorm's running statistics from
a seeded calibration batch, so activations keep their scale through depth instead of exploding or
vanishing (a random-weight network in eval mode with unit statistics says little).
Input: element i of the flattened NCHW tensor is ((i * 2654435761) mod 2^32) / 2^32, a pattern the
Rust test recomputes exactly.
"""
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

OUT = Path("tests/golden/onnx/backbones")
BIG = Path("tests/golden/onnx/big")
OPSET = 17
# name: input size (Swin-T's windows want 224; the convolutional ones run at a reduced 96)
BACKBONES = {
    "mobilenet_v2": 96,
    "mobilenet_v3_large": 96,
    "squeezenet1_1": 96,
    "resnet50": 96,
    "efficientnet_b0": 96,
    "swin_t": 224,
}


def pattern(size):
    n = 3 * size * size
    i = np.arange(n, dtype=np.uint64)
    v = ((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32
    return v.astype(np.float32).reshape(1, 3, size, size)


def calibrate(model, size):
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(np.random.default_rng(2).random((8, 3, size, size), dtype=np.float32)))
    model.eval()


def export(name, size):
    torch.manual_seed(1)
    model = getattr(torchvision.models, name)(weights=None)
    calibrate(model, size)
    x = pattern(size)
    path = BIG / f"backbone-{name}.onnx"
    BIG.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, torch.from_numpy(x), str(path), opset_version=OPSET,
                      input_names=["images"], output_names=["logits"])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    (y,) = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    meta = {
        "backbone": name,
        "source": f"torchvision {torchvision.__version__} models.{name}(weights=None), seed 1, BatchNorm calibrated",
        "onnx": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "opset": OPSET,
        "input_size": size,
        "output_shape": list(y.shape),
        "ops": dict(sorted(ops.items())),
        "reference": "onnxruntime %s CPU, graph optimizations off" % ort.__version__,
        "output": [float(v) for v in y.reshape(-1)],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: {path} ({path.stat().st_size // 1024} KiB), output {list(y.shape)}, "
          f"std {float(y.std()):.3g}, {sum(ops.values())} nodes")


def main():
    names = sys.argv[1:] or list(BACKBONES)
    for n in names:
        export(n, BACKBONES[n])


if __name__ == "__main__":
    main()
