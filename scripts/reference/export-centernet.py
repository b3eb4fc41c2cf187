#!/usr/bin/env python3
"""Test oracle (never shipped): CenterNet ("Objects as Points", Zhou et al. 2019) rebuilt from the
paper and its reference code's ResNet variant (`msra_resnet.py`: ResNet-18, three 4×4 stride-2
transposed convolutions of 256/128/64 channels with BatchNorm and ReLU, output stride 4, heads of a
3×3 convolution (64) + ReLU + 1×1 convolution: `hm` (C class heatmaps, logits), `wh` (box sizes),
`reg` (sub-pixel offsets)), since no registry package carries the original code. Seeded random
weights, exported to ONNX as the reference code exports (the network; decoding is outside), and
on a fixed image the detections the paper's `ctdet_decode` makes of ONNX Runtime's maps
(sigmoid, 3×3 max-pool peak selection, top K = 100 over classes × positions, offsets and sizes,
boxes in input pixels = map cells × 4). Run in the oracle venv from the repository root:

    .venv-onnx/bin/python scripts/reference/export-centernet.py

Writes tests/golden/onnx/big/detector-centernet_resnet18.onnx (git-ignored) and
tests/golden/onnx/detectors/centernet_resnet18.json (export-effdet.py's layout).
Weights: torchvision's ResNet-18 initialization and PyTorch's defaults (seed 1); BatchNorm
statistics from the test image and three random ones; each head's last convolution rescaled per
channel to zero mean and unit std on them plus N(0, 1) biases (the `wh` head then × 8 + 16, so
sizes are tens of cells, not ±1).
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision

from oracle_common import pattern, reference_session, write_golden

OUT = Path("tests/golden/onnx/detectors")
BIG = Path("tests/golden/onnx/big")
OPSET = 17
SIZE = 384
NAME = "centernet_resnet18"
CLASSES = 80
K = 100


class CenterNet(nn.Module):
    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet18(weights=None)
        self.backbone = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        layers, c = [], 512
        for out in (256, 128, 64):
            layers += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.deconv = nn.Sequential(*layers)
        head = lambda n: nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, n, 1))
        self.hm, self.wh, self.reg = head(CLASSES), head(2), head(2)

    def forward(self, x):
        f = self.deconv(self.backbone(x))
        return self.hm(f), self.wh(f), self.reg(f)


def calibrate(net):
    gen = np.random.default_rng(2)
    batch = torch.cat([torch.from_numpy(pattern((1, 3, SIZE, SIZE))),
                       torch.from_numpy(gen.random((3, 3, SIZE, SIZE), dtype=np.float32))])
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        net(batch)
    net.eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for head, gain, shift in ((net.hm, 1.0, 0.0), (net.wh, 8.0, 16.0), (net.reg, 0.3, 0.5)):
            c = head[2]
            o = net.deconv(net.backbone(batch))
            o = c(head[1](head[0](o)))
            mean = o.transpose(0, 1).reshape(o.shape[1], -1).mean(1)
            std = o.transpose(0, 1).reshape(o.shape[1], -1).std(1).clamp(min=1e-6)
            c.weight /= std.view(-1, 1, 1, 1)
            c.bias.copy_((c.bias - mean) / std + torch.randn_like(c.bias))
            c.weight *= gain
            c.bias.mul_(gain).add_(shift)


def ctdet_decode(hm, wh, reg):
    """The reference code's `ctdet_decode` for one image, boxes in input pixels."""
    heat = torch.sigmoid(hm)
    hmax = nn.functional.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * (hmax == heat).float()
    _, c, h, w = heat.shape
    scores, inds = torch.topk(heat.reshape(-1), K)
    classes = inds // (h * w)
    pos = inds % (h * w)
    ys, xs = (pos // w).float(), (pos % w).float()
    off = reg[0].reshape(2, -1)[:, pos]
    size = wh[0].reshape(2, -1)[:, pos]
    xs, ys = xs + off[0], ys + off[1]
    boxes = torch.stack([xs - size[0] / 2, ys - size[1] / 2, xs + size[0] / 2, ys + size[1] / 2], 1) * 4
    return torch.cat([boxes, scores[:, None], classes[:, None].float()], 1)


def main():
    torch.manual_seed(1)
    net = CenterNet()
    calibrate(net)
    x = pattern((1, 3, SIZE, SIZE))
    path = BIG / f"detector-{NAME}.onnx"
    BIG.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, (torch.from_numpy(x),), str(path), opset_version=OPSET,
                      input_names=["images"], output_names=["hm", "wh", "reg"])
    sess = reference_session(path)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x})))
    dets = ctdet_decode(*(torch.from_numpy(outs[n]) for n in ("hm", "wh", "reg"))).numpy()
    # rows x1, y1, x2, y2 (input pixels), score, class (0-based), best first
    nodes = write_golden(
        OUT, NAME, path,
        "CenterNet ResNet-18 (deconv) rebuilt from the paper and msra_resnet.py, seed 1, "
        "BatchNorm and heads calibrated; detections by ctdet_decode (K = 100)",
        SIZE, OPSET, "onnxruntime %s CPU, graph optimizations off; ctdet_decode", dets, outs)
    print(f"{NAME}: {path} ({path.stat().st_size // 1024} KiB), scores {float(dets[:, 4].min()):.3f}.."
          f"{float(dets[:, 4].max()):.3f}, widths {float((dets[:, 2] - dets[:, 0]).mean()):.1f} px mean, "
          f"{nodes} nodes")

if __name__ == "__main__":
    main()
