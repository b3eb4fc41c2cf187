#!/usr/bin/env python3
"""Test oracle (never shipped): torchvision's detectors beyond the YOLO line, with seeded random
weights at reduced sizes, exported to ONNX as users export them (post-processing, NMS and
data-dependent shapes inside the graph: `torch.onnx.export(model, ([image],))`), and ONNX
Runtime's outputs on a fixed image, for tests/it/detectors.rs. Run in the oracle venv from the
repository root:

    .venv-onnx/bin/python scripts/reference/export-detectors.py            # every model
    .venv-onnx/bin/python scripts/reference/export-detectors.py fcos       # some

R-FCN has no package: it is built here from torchvision's R-CNN parts (its RPN and
post-processing) with the paper's position-sensitive score maps, pooling and voting in the box
stage (`PSRoIVoting`, checked equal to `torchvision.ops.ps_roi_align` at every export).

Mask R-CNN's masks ([N, 1, H, W] probabilities, pasted in the graph by a `Loop`) are kept as COCO
RLE of `mask > 0.5`, and it is also run on a photo (`maskrcnn-photo.png`, committed, at the input
size) for the end-to-end test of masks in vigil's metadata and overlay.

Writes tests/golden/onnx/big/detector-<name>.onnx (git-ignored; tens of MB) and the committed
tests/golden/onnx/detectors/<name>.json: the file's SHA-256, the input size, the operator
inventory and ONNX Runtime's outputs (CPU, graph optimizations off) for the input image.

Weights: torchvision's own initialization (seed 1); every BatchNorm's running statistics from a
seeded calibration batch (BatchNorm modules alone in training mode, momentum None); each head's
last convolutions rescaled, channel by channel, to zero mean and unit std on that batch plus N(0, 1)
biases, so class scores
spread over (0, 1) instead of sitting on the focal-loss prior (0.01, under every score threshold)
and every pyramid level keeps candidates (the RetinaNet export cannot take an empty level:
ONNX Runtime fails on it too).
Input: element i of the flattened CHW image is ((i * 2654435761) mod 2^32) / 2^32.
"""
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torchvision.models import detection as D
from torchvision.ops import MultiScaleRoIAlign

OUT = Path("tests/golden/onnx/detectors")
BIG = Path("tests/golden/onnx/big")
OPSET = 17


def heads(model):
    """The layers that end each head (convolutions; the R-CNN box predictor's linear layers)."""
    if hasattr(model, "roi_heads") and isinstance(model.roi_heads.box_roi_pool, PSRoIVoting):  # R-FCN
        pool = model.roi_heads.box_roi_pool
        return [model.rpn.head.cls_logits, model.rpn.head.bbox_pred, pool.cls_conv, pool.box_conv]
    if hasattr(model, "roi_heads"):  # Faster / Mask R-CNN
        p = model.roi_heads.box_predictor
        convs = [model.rpn.head.cls_logits, model.rpn.head.bbox_pred, p.cls_score, p.bbox_pred]
        if model.roi_heads.mask_predictor is not None:  # Mask R-CNN: masks of every shape
            convs.append(model.roi_heads.mask_predictor.mask_fcn_logits)
        return convs
    h = model.head
    if hasattr(h.classification_head, "module_list"):  # SSD, SSDlite
        last = lambda m: m if isinstance(m, torch.nn.Conv2d) else m[-1]
        return [last(m) for m in h.classification_head.module_list] + [
            last(m) for m in h.regression_head.module_list
        ]
    convs = [h.classification_head.cls_logits, h.regression_head.bbox_reg]
    if hasattr(h.regression_head, "bbox_ctrness"):  # FCOS
        convs.append(h.regression_head.bbox_ctrness)
    return convs


class PSRoIVoting(MultiScaleRoIAlign):
    """R-FCN's second stage (Dai et al. 2016) in torchvision's `box_roi_pool` slot: position-
    sensitive score maps (k²·(C+1) for classes, k²·4 for class-agnostic boxes), position-sensitive
    RoI pooling — bin (i, j) of group g averages channel g·k² + i·k + j inside that bin, exactly
    `torchvision.ops.ps_roi_align` (checked at export) — then voting (the mean over the k² bins).
    Written as `roi_align` over every channel and a bin-diagonal mask, the standard ONNX operators
    (RoiAlign, Mul, ReduceSum) carry it: ONNX has no position-sensitive pooling operator."""

    def __init__(self, channels, classes, k=3, stride=16):
        super().__init__(["0"], k, 2)  # the type torchvision's FasterRCNN asks for; forward is ours
        self.k, self.groups, self.scale = k, classes + 4, 1.0 / stride
        self.cls_conv = torch.nn.Conv2d(channels, k * k * classes, 1)
        self.box_conv = torch.nn.Conv2d(channels, k * k * 4, 1)
        self.register_buffer("diagonal", torch.eye(k * k).view(1, 1, k * k, k * k))

    def score_maps(self, x):
        return torch.cat([self.cls_conv(x), self.box_conv(x)], 1)

    def forward(self, features, proposals, image_shapes):
        from torchvision.ops import roi_align
        maps = self.score_maps(features["0"])
        pooled = roi_align(maps, proposals, self.k, self.scale, sampling_ratio=2, aligned=True)
        r = pooled.shape[0]
        per_bin = (pooled.reshape(r, self.groups, self.k * self.k, self.k * self.k) * self.diagonal).sum(3)
        return per_bin.mean(2)  # [R, C + 1 + 4]: votes


class RFCNPredictor(torch.nn.Module):
    """Votes → class logits and box deltas; R-FCN's regression is class-agnostic, repeated per
    class for torchvision's post-processing."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes

    def forward(self, votes):
        logits, deltas = votes[:, :self.classes], votes[:, self.classes:]
        return logits, deltas.repeat(1, self.classes)


def rfcn_resnet50(size, classes=21):
    """R-FCN on ResNet-50 at a reduced size: the trunk to conv4 (stride 16, 1024 channels), a 1×1
    reduction to 256, an RPN of 4 sizes × 3 aspect ratios, 3 × 3 position-sensitive bins and
    PASCAL VOC's 20 classes + background."""
    from torchvision.models import resnet50
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FasterRCNN
    r = resnet50(weights=None)
    backbone = torch.nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                                   torch.nn.Conv2d(1024, 256, 1), torch.nn.ReLU())
    backbone.out_channels = 256
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors,
                      box_roi_pool=PSRoIVoting(256, classes), box_head=torch.nn.Identity(),
                      box_predictor=RFCNPredictor(classes), min_size=size, max_size=size)


def check_ps_pooling(model, x):
    """The pooling above equals torchvision's own `ps_roi_align` on this model's maps."""
    from torchvision.ops import ps_roi_align
    pool = model.roi_heads.box_roi_pool
    with torch.no_grad():
        feats = model.backbone(torch.from_numpy(x)[None])
        maps = pool.score_maps(feats)
        rois = torch.tensor([[0.0, 10.5, 20.25, 200.0, 150.75], [0.0, 0.0, 0.0, 255.0, 255.0],
                             [0.0, 100.0, 30.0, 140.0, 90.0]])
        ours = pool({"0": feats}, [rois[:, 1:]], None)
        ref = ps_roi_align(maps, rois, pool.k, pool.scale, sampling_ratio=2).mean((2, 3))
    err = float((ours - ref).abs().max())
    assert err < 1e-5, f"position-sensitive pooling differs from ps_roi_align by {err}"
    print(f"rfcn: pooling equals torchvision.ops.ps_roi_align within {err:.1e}")


MODELS = {
    # name: (builder, input size)
    "ssdlite320_mobilenet_v3_large": (lambda: D.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None), 320),
    "ssd300_vgg16": (lambda: D.ssd300_vgg16(weights=None, weights_backbone=None), 300),
    "retinanet_resnet50_fpn": (lambda: D.retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=256, max_size=256), 256),
    "fcos_resnet50_fpn": (lambda: D.fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=256, max_size=256), 256),
    "fasterrcnn_mobilenet_v3_large_fpn": (lambda: D.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, min_size=256, max_size=256), 256),
    "fasterrcnn_resnet50_fpn": (lambda: D.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=256, max_size=256), 256),
    "maskrcnn_resnet50_fpn": (lambda: D.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=256, max_size=256), 256),
    "rfcn_resnet50": (lambda: rfcn_resnet50(256), 256),
}

# Mask R-CNN is also checked end to end on a photo (`vigil detect --json` → masks as RLE): the
# photo at the model's input size, so vigil's stretch is the identity and both runtimes read the
# same pixels.
PHOTO = {"maskrcnn_resnet50_fpn": ("images/person.jpg", OUT / "maskrcnn-photo.png")}


def pattern(size):
    n = 3 * size * size
    i = np.arange(n, dtype=np.uint64)
    v = ((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32
    return v.astype(np.float32).reshape(3, size, size)


def calibrate(model, size, extra=()):
    """`extra`: images besides the random ones (a photo the model is also checked on)."""
    gen = np.random.default_rng(2)
    batch = [torch.from_numpy(gen.random((3, size, size), dtype=np.float32)) for _ in range(4)]
    batch += [torch.from_numpy(x) for x in extra]
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        model(batch)
    for m in bns:
        m.eval()
    stats = {}
    # statistics per output channel (dim 1), over every other dim
    per_channel = lambda o: (o.transpose(0, 1).reshape(o.shape[1], -1).mean(1),
                             o.transpose(0, 1).reshape(o.shape[1], -1).std(1))
    def record(mod, i, o):  # returns None: a hook's value would replace the output
        if o.numel():  # the mask head sees no region when an image has no detection
            stats.setdefault(mod, []).append(per_channel(o))

    hooks = [c.register_forward_hook(record) for c in heads(model)]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    torch.manual_seed(3)
    mask_logits = getattr(getattr(model, "roi_heads", None), "mask_predictor", None)
    with torch.no_grad():
        for c, s in stats.items():
            # per output channel, o' = (o - mean) / std + N(0, 1): centred, unit spread, a
            # random offset (means over the pyramid levels the conv is applied to); mask logits
            # without the offset, so every class's masks cover about half their box
            mean = torch.stack([m for m, _ in s]).mean(0)
            std = torch.stack([d for _, d in s]).mean(0).clamp(min=1e-6)
            c.weight /= std.view(-1, *([1] * (c.weight.dim() - 1)))
            centred = mask_logits is not None and c is mask_logits.mask_fcn_logits
            offset = torch.zeros_like(c.bias) if centred else torch.randn_like(c.bias)
            c.bias.copy_((c.bias - mean) / std + offset)
    model.eval()


# The first-stage heads' last convolutions, one node per pyramid level, as torch.onnx names them:
# RetinaNet/FCOS `cls_logits`, `bbox_reg`, `bbox_ctrness` (`_1`… per level); SSD's module_list
# entries (SSDlite: the entry's second module); the RPN's `cls_logits`, `bbox_pred`.
HEAD_NODE = re.compile(
    r"^/(head/(classification_head/cls_logits|regression_head/(bbox_reg|bbox_ctrness))(_\d+)?/Conv"
    r"|head/(classification|regression)_head/module_list\.\d+/(module_list\.\d+\.1/)?Conv"
    r"|rpn/head/(cls_logits|bbox_pred)(_\d+)?/Conv"
    r"|roi_heads/box_roi_pool/(cls|box)_conv/Conv)$")


def expose_heads(path):
    """Add the first-stage heads' convolution outputs as graph outputs, so both runtimes report
    them. Returns their names."""
    m = onnx.load(str(path))
    added = []
    for n in m.graph.node:
        if n.op_type == "Conv" and HEAD_NODE.match(n.name):
            m.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None))
            added.append(n.output[0])
    onnx.save(m, str(path))
    return set(added)


def sample(o, most=500):
    flat = o.reshape(-1)
    stride = max(1, len(flat) // most)
    return {"shape": list(o.shape), "stride": stride, "max_abs": float(np.abs(flat).max()),
            "values": [float(v) for v in flat[::stride][:most]]}


def role(o):
    """boxes [N, 4], float scores [N], integer labels [N], masks [N, 1, H, W]."""
    if o.ndim == 4:
        return "masks"
    if o.ndim == 2:
        return "boxes"
    return "scores" if np.issubdtype(o.dtype, np.floating) else "labels"


def rle(mask):
    """COCO's uncompressed RLE of a binary H×W mask, as vigil writes it: column-major runs,
    starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def described(names, outs):
    """Outputs by role; masks (too large to keep as floats) as RLE of `mask > 0.5`."""
    out = {}
    for n, o in zip(names, outs):
        if role(o) == "masks":
            out["masks"] = {"name": n, "shape": list(o.shape), "rle": [rle(m[0] > 0.5) for m in o]}
        else:
            out[role(o)] = {"name": n, "shape": list(o.shape), "values": [float(v) for v in o.reshape(-1)]}
    return out


def photo(size, asset, png):
    """The photo at the input size as the model reads it (RGB planes in [0, 1]), from the
    committed `png`: its pixels go into the BatchNorm calibration, so they must not depend on
    this machine's OpenCV build. Made from the asset (resized, INTER_AREA) only when missing."""
    import cv2
    import os
    if not png.exists():
        assets = Path(os.environ.get("VIGIL_ASSETS_DIR", "assets"))
        bgr = cv2.resize(cv2.imread(str(assets / asset)), (size, size), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(png), bgr)
    return np.ascontiguousarray(cv2.imread(str(png))[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32) / 255


def photo_reference(sess, x, skip, asset, png):
    """ONNX Runtime's outputs on the photo `x`."""
    outs = sess.run(None, {"images": x})
    names = [o.name for o in sess.get_outputs()]
    kept = [(n, o) for n, o in zip(names, outs) if n not in skip]
    return {"image": str(png), "from": asset, "outputs": described(*zip(*kept))}


def export(name):
    build, size = MODELS[name]
    torch.manual_seed(1)
    model = build()
    photo_x = photo(size, *PHOTO[name]) if name in PHOTO else None
    calibrate(model, size, [] if photo_x is None else [photo_x])
    if name.startswith("rfcn"):
        with torch.no_grad():  # votes average k² bins: spread the class maps as much again
            pool = model.roi_heads.box_roi_pool
            pool.cls_conv.weight *= pool.k
            pool.cls_conv.bias *= pool.k
        check_ps_pooling(model, pattern(size))
    x = pattern(size)
    path = BIG / f"detector-{name}.onnx"
    BIG.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, ([torch.from_numpy(x)],), str(path), opset_version=OPSET,
                      input_names=["images"])
    head_outputs = expose_heads(path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"images": x})
    names = [o.name for o in sess.get_outputs()]
    heads_raw = {n: o for n, o in zip(names, outs) if n in head_outputs}
    names, outs = zip(*[(n, o) for n, o in zip(names, outs) if n not in head_outputs])
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    meta = {
        "model": name,
        "source": f"torchvision models.detection.{name}, seed 1, BatchNorm and heads calibrated",
        "onnx": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "opset": OPSET,
        "input_size": size,
        "ops": dict(sorted(ops.items())),
        "reference": "onnxruntime %s CPU, graph optimizations off" % ort.__version__,
        # by role (the exporter numbers the outputs, and their order differs by family)
        "outputs": described(names, outs),
        # the raw heads (first stage: every level's class and box convolutions), a strided
        # sample of each: too large to keep whole
        "heads": {n: sample(o) for n, o in heads_raw.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    if name in PHOTO:
        meta["photo"] = photo_reference(sess, photo_x, head_outputs, *PHOTO[name])
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=0) + "\n")
    scores = next(o for o in outs if role(o) == "scores")
    print(f"{name}: {path} ({path.stat().st_size // 1024} KiB), {len(scores)} detections, "
          f"scores {float(scores.max()) if len(scores) else 0:.3f} max, {sum(ops.values())} nodes")


def main():
    for n in sys.argv[1:] or list(MODELS):
        export(n)


if __name__ == "__main__":
    main()
