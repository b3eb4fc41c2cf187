#!/usr/bin/env python3
"""Test oracle (never shipped): EfficientDet-D0 from PyPI's `effdet` 0.4.1 (Ross Wightman's
PyTorch port of the official TF implementation, Apache-2.0) with seeded random weights, exported to
ONNX the way its users export it for deployment: the network alone (class and box maps of levels
P3–P7; effdet's post-processing is a TorchScript loop that does not export), and on a fixed image
ONNX Runtime's maps and the detections effdet's own post-processing (DetBenchPredict: top 5000
over anchors × classes, anchor decoding, batched NMS 0.5, 100 kept) makes of them, for
tests/it/detectors.rs. Run in the oracle venv from the repository root:

    .venv-onnx/bin/python scripts/reference/export-effdet.py

Writes tests/golden/onnx/big/detector-efficientdet_d0.onnx (git-ignored) and the committed
tests/golden/onnx/detectors/efficientdet_d0.json (the layout of export-detectors.py's: SHA-256,
input size, operators, the detections, and strided samples of every class and box map).

Weights: timm/effdet's own initialization (seed 1); BatchNorm statistics from a seeded
calibration batch (the test image and three random ones); the class and box heads' last (pointwise) convolutions rescaled per channel to
zero mean and unit std on that batch, plus N(0, 1) biases, so scores spread over (0, 1) instead of
sitting on the focal-loss prior. Input: element i of the flattened NCHW image is
((i * 2654435761) mod 2^32) / 2^32.
"""
from pathlib import Path

import numpy as np
import torch
from effdet import create_model
from effdet.bench import _batch_detection, _post_process

from oracle_common import pattern, reference_session, write_golden

OUT = Path("tests/golden/onnx/detectors")
BIG = Path("tests/golden/onnx/big")
OPSET = 17
SIZE = 256
NAME = "efficientdet_d0"
MAX_POINTS = 5000


def heads(net):
    """The last convolution of the class and box heads (shared over the levels)."""
    return [net.class_net.predict.conv_pw, net.box_net.predict.conv_pw]


def calibrate(bench):
    net = bench.model
    gen = np.random.default_rng(2)
    # the test image among them: it is a fine grating, far from random pixels for EfficientNet's
    # depthwise convolutions, and statistics without it put its logits in the thousands
    batch = torch.cat([torch.from_numpy(pattern((1, 3, SIZE, SIZE))),
                       torch.from_numpy(gen.random((3, 3, SIZE, SIZE), dtype=np.float32))])
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    net.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        net(batch)
    for m in bns:
        m.eval()
    stats = {}
    per_channel = lambda o: (o.transpose(0, 1).reshape(o.shape[1], -1).mean(1),
                             o.transpose(0, 1).reshape(o.shape[1], -1).std(1))
    hooks = [c.register_forward_hook(lambda mod, i, o: stats.setdefault(mod, []).append(per_channel(o)))
             for c in heads(net)]
    with torch.no_grad():
        net(batch)
    for h in hooks:
        h.remove()
    torch.manual_seed(3)
    with torch.no_grad():
        for c, s in stats.items():
            mean = torch.stack([m for m, _ in s]).mean(0)
            std = torch.stack([d for _, d in s]).mean(0).clamp(min=1e-6)
            c.weight /= std.view(-1, 1, 1, 1)
            c.bias.copy_((c.bias - mean) / std + torch.randn_like(c.bias))
    bench.eval()


def main():
    torch.manual_seed(1)
    bench = create_model(NAME, bench_task="predict", pretrained=False, pretrained_backbone=False,
                         num_classes=90, image_size=(SIZE, SIZE))
    calibrate(bench)
    net = bench.model
    x = pattern((1, 3, SIZE, SIZE))
    path = BIG / f"detector-{NAME}.onnx"
    BIG.mkdir(parents=True, exist_ok=True)
    levels = range(3, 8)
    names = [f"class_p{l}" for l in levels] + [f"box_p{l}" for l in levels]
    torch.onnx.export(net, (torch.from_numpy(x),), str(path), opset_version=OPSET,
                      input_names=["images"], output_names=names)
    sess = reference_session(path)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))
    # effdet's own post-processing (DetBenchPredict's) on ONNX Runtime's maps
    cls = [torch.from_numpy(outs[f"class_p{l}"]) for l in levels]
    box = [torch.from_numpy(outs[f"box_p{l}"]) for l in levels]
    cls_top, box_top, indices, classes = _post_process(cls, box, num_levels=5, num_classes=90,
                                                      max_detection_points=MAX_POINTS)
    dets = _batch_detection(1, cls_top, box_top, bench.anchors.boxes, indices, classes)[0].numpy()
    topk_min = float(torch.sigmoid(cls_top.min()))
    # rows x1, y1, x2, y2, score, class (effdet's class ids start at 1: background is 0);
    # topk_min_score: the lowest score among the top-5000 candidates effdet keeps before NMS
    nodes = write_golden(
        OUT, NAME, path,
        "PyPI effdet 0.4.1 (timm 0.9.16), create_model(bench_task='predict', num_classes=90), "
        "seed 1, BatchNorm and heads calibrated; the network exported, detections by "
        "effdet's DetBenchPredict post-processing (top 5000, anchors, batched NMS 0.5, 100)",
        SIZE, OPSET, "onnxruntime %s CPU, graph optimizations off; effdet post-processing",
        dets, outs, topk_min_score=topk_min)
    print(f"{NAME}: {path} ({path.stat().st_size // 1024} KiB), {len(dets)} detections, scores "
          f"{float(dets[:, 4].min()):.3f}..{float(dets[:, 4].max()):.3f}, top-5000 floor {topk_min:.3f}, "
          f"{nodes} nodes")

if __name__ == "__main__":
    main()
