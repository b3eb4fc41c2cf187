#!/usr/bin/env python3
"""Test oracle (never shipped): the real COCO yolov3-tiny darknet weights as an ONNX file, for issue
16's done item 2 (real trained weights through the ONNX path) when no COCO-trained ONNX detector can
be had from a registry. Run in the oracle venv from the repository root, after scripts/fetch-assets:

    .venv-onnx/bin/python scripts/reference/onnx-yolov3-tiny.py

A small hand-written darknet -> torch model for yolov3-tiny's layer types ([convolutional] with
batch norm + leaky or linear, [maxpool] including the size-2 stride-1 one with darknet's padding
(one row/column on the right and bottom only, which never wins the max: exported as an edge Pad +
MaxPool), [route], [upsample], [yolo]) loads assets/yolov3-tiny.weights and is exported with
torch.onnx.export. The graph ends at the two raw head tensors (the linear 1x1 convs feeding the
[yolo] layers, named as OpenCV names them: conv_15 13x13 and conv_22 26x26 at 416): decoding (and
the anchor masks, which models/yolov3-tiny.cfg corrects) stays in vigil's `yolov3` decoder.

Checked on vtest.avi frame FRAME (blobFromImage: 1/255, 416x416 stretch, BGR->RGB) against OpenCV
DNN's darknet importer on the same cfg and weights: raw head tensors and the [yolo] layers' decoded
rows (decoded here from ONNX Runtime's raw outputs with darknet's formula). Writes, under
tests/golden/onnx/:
- yolov3-tiny-vtest.u8: the input, RGB CHW bytes (divide by 255 in f32 for the model input);
- yolov3-tiny-vtest.f32 + .json: ONNX Runtime's raw outputs (conv_15, conv_22), the ONNX file's
  SHA-256 (the 35 MB file itself goes to tests/golden/onnx/big/, git-ignored) and the measured
  errors against OpenCV;
- yolov3-tiny.ops.json: the operator inventory.
"""
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

CFG = "models/yolov3-tiny.cfg"
WEIGHTS = "assets/yolov3-tiny.weights"
VIDEO = "assets/vtest.avi"
FRAME = 20
SIZE = 416
OPSET = 13
OUT = Path("tests/golden/onnx")
BIG = OUT / "big"


def parse_cfg(path):
    sections = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]"), "opts": {}})
        else:
            k, v = (s.strip() for s in line.split("=", 1))
            sections[-1]["opts"][k] = v
    return sections[0], sections[1:]


class Darknet(nn.Module):
    """The layer types of yolov3-tiny, nothing more; outputs = inputs of the [yolo] layers."""

    def __init__(self, cfg):
        super().__init__()
        net, self.layers = parse_cfg(cfg)
        self.mods = nn.ModuleList()
        chans, c = [], int(net.get("channels", 3))
        for i, s in enumerate(self.layers):
            o, t = s["opts"], s["type"]
            m = nn.Identity()
            if t == "convolutional":
                k, n, st = int(o["size"]), int(o["filters"]), int(o.get("stride", 1))
                bn = int(o.get("batch_normalize", 0))
                pad = (k - 1) // 2 if int(o.get("pad", 0)) else int(o.get("padding", 0))
                m = nn.Sequential()
                m.add_module("conv", nn.Conv2d(c, n, k, st, pad, bias=not bn))
                if bn:
                    m.add_module("bn", nn.BatchNorm2d(n, eps=1e-6))  # as OpenCV (darknet: sqrt(var) + 1e-6)
                act = o.get("activation", "linear")
                if act == "leaky":
                    m.add_module("act", nn.LeakyReLU(0.1))
                elif act != "linear":
                    raise ValueError(f"layer {i}: activation {act} not handled")
                c = n
            elif t == "maxpool":
                s["size"], s["stride"] = int(o["size"]), int(o["stride"])
            elif t == "route":
                s["from"] = [int(v) if int(v) >= 0 else i + int(v) for v in o["layers"].split(",")]
                c = sum(chans[j] for j in s["from"])
            elif t == "upsample":
                s["stride"] = int(o["stride"])
            elif t == "yolo":
                pass
            else:
                raise ValueError(f"layer {i}: [{t}] not handled")
            self.mods.append(m)
            chans.append(c)

    def load_darknet(self, path):
        with open(path, "rb") as f:
            major, minor, _rev = np.fromfile(f, np.int32, 3)
            np.fromfile(f, np.int64 if major * 10 + minor >= 2 else np.int32, 1)  # images seen
            w = np.fromfile(f, np.float32)
        p = 0

        def take(t):
            nonlocal p
            n = t.numel()
            t.data.copy_(torch.from_numpy(w[p:p + n]).view_as(t))
            p += n

        for s, m in zip(self.layers, self.mods):
            if s["type"] != "convolutional":
                continue
            if hasattr(m, "bn"):
                for t in (m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var):
                    take(t)
            else:
                take(m.conv.bias)
            take(m.conv.weight)
        if p != len(w):
            raise ValueError(f"{path}: {len(w) - p} floats left over")

    def forward(self, x):
        outs, heads = [], []
        for i, (s, m) in enumerate(zip(self.layers, self.mods)):
            t = s["type"]
            if t == "convolutional":
                x = m(x)
            elif t == "maxpool":
                if s["stride"] == 1:  # darknet pads size-1 on the right/bottom; edge = never wins
                    x = F.pad(x, (0, s["size"] - 1, 0, s["size"] - 1), mode="replicate")
                x = F.max_pool2d(x, s["size"], s["stride"])
            elif t == "route":
                x = torch.cat([outs[j] for j in s["from"]], 1) if len(s["from"]) > 1 else outs[s["from"][0]]
            elif t == "upsample":
                x = F.interpolate(x, scale_factor=s["stride"], mode="nearest")
            elif t == "yolo":
                heads.append(outs[i - 1])
            outs.append(x)
        return tuple(heads)


def yolo_decode(raw, anchors, mask, size):
    """darknet's [yolo] forward + OpenCV's row layout: x, y, w, h relative, objectness, class scores
    (multiplied by objectness, as OpenCV writes them)."""
    n, c, h, w = raw.shape
    na = len(mask)
    r = raw.reshape(na, c // na, h, w)
    gy, gx = np.mgrid[0:h, 0:w]
    rows = []
    for a in range(na):
        aw, ah = anchors[mask[a]]
        sig = 1 / (1 + np.exp(-r[a]))
        x = (gx + sig[0]) / w
        y = (gy + sig[1]) / h
        bw = np.exp(r[a, 2]) * aw / size
        bh = np.exp(r[a, 3]) * ah / size
        obj = sig[4]
        cls = sig[5:] * obj
        rows.append(np.concatenate([np.stack([x, y, bw, bh, obj]), cls]).reshape(c // na, -1).T)
    # OpenCV orders rows (y, x, anchor)
    rows = np.stack(rows, 1)  # (h*w, na, 85)
    return rows.reshape(-1, c // na)


def errors(a, b):
    d = np.abs(a.astype(np.float64) - b)
    scale = float(np.abs(b).max())
    rel = d / np.maximum(np.abs(b), 1e-2 * scale)
    return {"max_abs": float(d.max()), "max_abs_over_max_ref": float(d.max() / scale),
            "max_rel_elementwise_floor_1pct_of_max": float(rel.max()),
            "allclose_rtol1e-3_atol1e-4": bool(np.allclose(a, b, rtol=1e-3, atol=1e-4))}


def main():
    torch.manual_seed(0)
    net = Darknet(CFG)
    net.load_darknet(WEIGHTS)
    net.eval()
    BIG.mkdir(parents=True, exist_ok=True)
    onnx_path = BIG / "yolov3-tiny.onnx"
    names = [f"conv_{i - 1}" for i, s in enumerate(net.layers) if s["type"] == "yolo"]
    torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE), str(onnx_path), opset_version=OPSET,
                      input_names=["images"], output_names=names, do_constant_folding=True)

    cap = cv2.VideoCapture(VIDEO)
    cap.set(cv2.CAP_PROP_POS_FRAMES, FRAME)
    ok, frame = cap.read()
    if not ok:
        sys.exit(f"cannot read frame {FRAME} of {VIDEO}")
    blob = cv2.dnn.blobFromImage(frame, 1 / 255.0, (SIZE, SIZE), swapRB=True, crop=False)
    u8 = np.round(blob[0] * 255).clip(0, 255).astype(np.uint8)  # exact: blob = u8 / 255
    x = (u8.astype(np.float32) / 255)[None]

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    ort_outs = sess.run(None, {"images": x})
    with torch.no_grad():
        torch_outs = [t.numpy() for t in net(torch.from_numpy(x))]

    cvnet = cv2.dnn.readNetFromDarknet(CFG, WEIGHTS)
    cvnet.setInput(x)
    yolo_names = [n for n in cvnet.getUnconnectedOutLayersNames()]
    cv_outs = cvnet.forward(names + yolo_names)
    cv_raw, cv_yolo = cv_outs[:len(names)], cv_outs[len(names):]

    _, layers = parse_cfg(CFG)
    yolos = [s["opts"] for s in layers if s["type"] == "yolo"]
    report = {}
    for k, n in enumerate(names):
        report[n] = {"onnxruntime_vs_opencv": errors(ort_outs[k], cv_raw[k]),
                     "torch_vs_opencv": errors(torch_outs[k], cv_raw[k])}
        o = yolos[k]
        a = [int(v) for v in o["anchors"].split(",")]
        anchors = list(zip(a[0::2], a[1::2]))
        mask = [int(v) for v in o["mask"].split(",")]
        dec = yolo_decode(ort_outs[k], anchors, mask, SIZE)
        ref = cv_yolo[k]
        # OpenCV writes 0 for a class score under its threshold: compare boxes and objectness
        # everywhere, class scores where OpenCV kept them, and say how high the zeroed ones go.
        kept = ref[:, 5:] > 0
        report[n]["decoded_vs_opencv_yolo_layer"] = {
            "xywh_obj": errors(dec[:, :5], ref[:, :5]),
            "class_scores_kept_by_opencv": errors(dec[:, 5:][kept], ref[:, 5:][kept]) if kept.any() else None,
            "max_decoded_score_where_opencv_wrote_0": float(dec[:, 5:][~kept].max()),
            "min_score_opencv_kept": float(ref[:, 5:][kept].min()) if kept.any() else None,
        }
        report[n]["opencv_rows_with_score_ge_0.25"] = int((ref[:, 5:].max(1) >= 0.25).sum())
        report[n]["decoded_rows_with_score_ge_0.25"] = int((dec[:, 5:].max(1) >= 0.25).sum())

    (OUT / "yolov3-tiny-vtest.u8").write_bytes(u8.tobytes())
    tensors, off, blobs = [], 0, []
    for n, t in zip(names, ort_outs):
        t = np.ascontiguousarray(t, dtype="<f4")
        tensors.append({"name": n, "shape": list(t.shape), "offset": off})
        off += t.size
        blobs.append(t.tobytes())
    (OUT / "yolov3-tiny-vtest.f32").write_bytes(b"".join(blobs))
    spec = importlib.util.spec_from_file_location("export_onnx", Path(__file__).with_name("export-onnx.py"))
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    meta = {
        "model": "yolov3-tiny",
        "onnx": str(onnx_path),
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnx_bytes": onnx_path.stat().st_size,
        "committed": False,
        "opset": OPSET,
        "cfg": CFG,
        "weights": WEIGHTS,
        "weights_sha256": hashlib.sha256(Path(WEIGHTS).read_bytes()).hexdigest(),
        "input_name": "images",
        "input": f"yolov3-tiny-vtest.u8: {VIDEO} frame {FRAME}, cv2.dnn.blobFromImage(1/255, "
                 f"{SIZE}x{SIZE} stretch, swapRB) as RGB CHW u8 [3, {SIZE}, {SIZE}]; model input = u8 / 255",
        "oracle": f"onnxruntime {ort.__version__} CPUExecutionProvider, 1 thread, ORT_DISABLE_ALL",
        "reference": f"OpenCV {cv2.__version__} dnn.readNetFromDarknet (cfg {CFG})",
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__,
                     "opencv": cv2.__version__, "numpy": np.__version__},
        "errors": report,
        "tensors": tensors,
    }
    (OUT / "yolov3-tiny-vtest.json").write_text(ex.dumps(meta))
    (OUT / "yolov3-tiny.ops.json").write_text(ex.dumps(ex.inventory(onnx_path)))
    for n in names:
        r = report[n]
        print(f"{n}: ORT vs OpenCV max abs {r['onnxruntime_vs_opencv']['max_abs']:.3g} "
              f"(/max|ref| {r['onnxruntime_vs_opencv']['max_abs_over_max_ref']:.3g}); decoded vs "
              f"[yolo] max abs {r['decoded_vs_opencv_yolo_layer']['xywh_obj']['max_abs']:.3g}; rows >= 0.25: "
              f"{r['decoded_rows_with_score_ge_0.25']} vs OpenCV {r['opencv_rows_with_score_ge_0.25']}")


if __name__ == "__main__":
    main()
