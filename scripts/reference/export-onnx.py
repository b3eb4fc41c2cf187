#!/usr/bin/env python3
"""Test oracle (never shipped): ONNX detectors exported by each family's own code with seeded random
weights at a reduced input size, and ONNX Runtime's outputs for a seeded input, for issue 16's parity
tests. Run in the oracle venv (scripts/reference/onnx-venv) from the repository root:

    scripts/reference/onnx-venv
    .venv-onnx/bin/python scripts/reference/export-onnx.py              # every model
    .venv-onnx/bin/python scripts/reference/export-onnx.py yolov8n yolox-nano   # some

For each model it writes, under tests/golden/onnx/:
- input-1x3xHxW.f32: the input tensor (NCHW f32 in [0, 1), numpy default_rng(SEED)), one per size;
- <model>.f32 + <model>.json: every graph output of ONNX Runtime (CPU, 1 thread, all graph
  optimizations off) for that input, little-endian f32 back to back; the JSON gives each tensor's
  name, shape, offset (in f32 elements), the input file, and the ONNX file's SHA-256, opset, size
  and provenance.
- <model>.dets.json: the family's own post-processing (NMS, or the threshold for end-to-end
  RT-DETR) on those outputs: [x1, y1, x2, y2, score, class] in input pixels.
- <model>.ops.json: the operator inventory (op_type counts, opsets, IR version, inputs/outputs with
  shapes, initializer count/bytes, metadata_props): what vigil's executor must cover.
- <model>.onnx itself when it is under 1 MB (MAX_COMMIT); larger files go to tests/golden/onnx/big/
  (git-ignored) and only their SHA-256 (in the JSON) is committed. Re-running with the same pinned
  versions gives the same bytes.

Random weights are made useful (shared/design/FACTS.md): every BatchNorm gets the running statistics
of a seeded calibration batch (so activations keep unit scale through depth) plus random affine
terms, and every biased conv that ends a head is rescaled to unit output std with a N(0, 1) bias (so
heads do not sit on their bias prior: class scores spread over (0, 1)).

Families: Ultralytics (YOLOv8, YOLO11, YOLOv5u, RT-DETR) built from their YAML with no download
(YOLO_OFFLINE=1, YOLO_AUTOINSTALL=false), exported with Ultralytics' own exporter (simplify off:
onnxslim is not installed); YOLOX through the `yolox` package's exp + the export code of
yolox/tools/export_onnx.py (SiLU replaced as it does, decode_in_inference off as its default, no
onnxsim); YOLOv5 7.0's anchor-based head through PyPI yolov5 7.0.x's Model and
export.export_onnx. YOLOv6, YOLOv7 and DAMO-YOLO (no usable registry package) from their official
repositories' sources at pinned commits (OFFICIAL; $VIGIL_ONNX_SRC, fetched by
scripts/reference/onnx-official-sources), each through the code path of its own ONNX exporter
(YOLOv6 deploy/ONNX/export_onnx.py, yolov7 export.py, DAMO-YOLO tools/converter.py) minus loading
a checkpoint, with its output names, shapes and in-graph decode as that exporter writes them; the
commit used is recorded in each JSON. The "-micro" variants are the same code with a smaller width multiplier, so
that the ONNX file itself fits in the repository; VARIANTS are loader cases (opset 19, opset 17
LayerNormalization, initializers listed as graph inputs).
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx.version_converter  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

SEED = 1
OUT = Path("tests/golden/onnx")
BIG = OUT / "big"
MAX_COMMIT = 1_000_000
CONF, IOU = 0.25, 0.45  # reference post-processing
FIXED_DATE = "2026-01-01T00:00:00+00:00"
# The Ultralytics head's class branch is max(width*256, min(nc, 100)) channels wide: with 80
# classes it alone is ~2 MB; 20 classes (VOC-sized) keep the micro variants under 1 MB.
MICRO_NC = 20
# Its box branch is max(16, width*64, 4*reg_max) wide: reg_max 8 (DFL over 8 bins, still decoded in
# the graph, so the output layout is unchanged) instead of 16 takes it from 0.75 MB to 0.2 MB.
MICRO_REG_MAX = 8
MICRO_MAX_CHANNELS = 512

# name: (family, config, input size, opset, width multiplier override or None)
MODELS = {
    "yolov8n": ("ultralytics", "yolov8n.yaml", 160, 17, None),
    "yolov8-micro": ("ultralytics", "yolov8n.yaml", 160, 17, 0.0625),
    "yolo11n": ("ultralytics", "yolo11n.yaml", 160, 17, None),
    "yolo11-micro": ("ultralytics", "yolo11n.yaml", 160, 17, 0.0625),
    "yolov5nu": ("ultralytics", "yolov5nu.yaml", 160, 13, None),
    "yolov5u-micro": ("ultralytics", "yolov5nu.yaml", 160, 13, 0.0625),
    "rtdetr-l": ("rtdetr", "rtdetr-l.yaml", 160, 16, None),
    "rtdetr-micro": ("rtdetr", "rtdetr-l.yaml", 160, 16, 0.0625),
    "yolov5n": ("yolov5", "yolov5n.yaml", 160, 12, None),
    "yolov5-micro": ("yolov5", "yolov5n.yaml", 160, 12, 0.0625),
    "yolox-nano": ("yolox", "yolox-nano", 160, 11, None),
    "yolox-micro": ("yolox", "yolox-nano", 160, 11, 0.0625),
    "yolox-tiny": ("yolox", "yolox-tiny", 160, 11, None),
    # Official repositories (no usable registry package): their sources at OFFICIAL_COMMITS, found
    # under $VIGIL_ONNX_SRC (scripts/reference/onnx-official-sources fetches them). Opset = what
    # each exporter hard-codes or defaults to.
    "yolov6n": ("yolov6", "configs/yolov6n.py", 160, 13, None),
    "yolov6-micro": ("yolov6", "configs/yolov6n.py", 160, 13, 0.04),
    "yolov7-micro": ("yolov7", "cfg/deploy/yolov7-tiny.yaml", 160, 12, 0.0625),
    "damo-yolo-ns": ("damo", "configs/damoyolo_tinynasL18_Ns.py", 160, 11, None),
    "damo-yolo-micro": ("damo", "configs/damoyolo_tinynasL18_Ns.py", 160, 11, 0.25),
}
# The official repositories' commits the goldens were made from ($VIGIL_ONNX_SRC/<dir>).
OFFICIAL = {
    "yolov6": ("YOLOv6", "https://github.com/meituan/YOLOv6",
               "e86a483f3f6bded25d45970b56831345a99744a4"),
    "yolov7": ("yolov7", "https://github.com/WongKinYiu/yolov7",
               "a207844b1ce82d204ab36d87d496728d3d2348e7"),
    "damo": ("DAMO-YOLO", "https://github.com/tinyvision/DAMO-YOLO",
             "319572eef367340267ab6ab8ae253527a71d7c3a"),
}
# Variants for loader coverage (issue 16, done item 3), made from a model above:
# name: (base model, what is done to its file, opset). Same weights, so the same outputs.
VARIANTS = {
    # torch 1.13 exports up to opset 17: onnx's version converter takes the file to 19 (Split's
    # num_outputs, Reduce* axes as inputs, Resize's antialias/keep_aspect_ratio_policy, ...).
    "yolov8-micro-op19": ("yolov8-micro", "version_converter", 19),
    # opset 17 is where torch exports nn.LayerNorm as LayerNormalization (16: decomposed).
    "rtdetr-micro-op17": ("rtdetr-micro", "reexport", 17),
    # Old-IR style: every initializer also listed as a graph input (keep_initializers_as_inputs).
    "yolox-micro-initializers-as-inputs": ("yolox-micro", "initializers_as_inputs", 11),
    # Ultralytics' dynamic=True: batch, height and width symbolic, the shape arithmetic in the
    # graph (vigil fixes the dims at load and folds it).
    "yolov8-micro-dynamic": ("yolov8-micro", "dynamic", 17),
    # Ultralytics' nms=True: NMS in the graph (end to end, `[1, 300, 6]` x1 y1 x2 y2 score class).
    "yolov8-micro-nms": ("yolov8-micro", "nms", 17),
    # yolov7's export.py with --grid (no --end2end): Detect's decode in the graph, one output.
    "yolov7-micro-grid": ("yolov7-micro", "grid", 12),
}


def dumps(obj):
    """JSON with short lists of numbers on one line."""
    import re
    s = json.dumps(obj, indent=1)
    return re.sub(r"\[[^\[\]{}]*\]", lambda m: re.sub(r"\s+", " ", m.group(0)).replace("[ ", "[")
                  .replace(" ]", "]"), s) + "\n"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calibration(size, n=4):
    g = torch.Generator().manual_seed(SEED + 1)
    return torch.rand(n, 3, size, size, generator=g)


def randomize(model, size):
    """BN statistics from a calibration batch + random affine; head convs at unit std."""
    torch.manual_seed(SEED)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative: one batch -> its own statistics
    model.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        model(calibration(size))
        for m in bns:
            m.eval()
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
    model.eval()
    # RT-DETR's heads start at zero box deltas and a 0.01 class prior: every query would
    # return its anchor with the same score. Give them ordinary random weights.
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and ("score_head" in name or "bbox_head" in name):
                nn.init.normal_(m.weight, 0.0, 1.0 / m.in_features ** 0.5)
                nn.init.normal_(m.bias, 0.0, 0.1 if "score_head" in name else 0.5)
    # Biased convs: measure output std in one pass, rescale to 1, bias ~ N(0, 1).
    convs = [m for m in model.modules()
             if isinstance(m, nn.Conv2d) and m.bias is not None and m.weight.requires_grad]
    stds = {}

    def measure(mod, _inp, out):
        stds.setdefault(mod, float(out.std()))  # returns None: the output is kept

    hooks = [c.register_forward_hook(measure) for c in convs]
    with torch.no_grad():
        model(calibration(size))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for c in convs:
            if c in stds and stds[c] > 0:
                c.weight.div_(stds[c])
                c.bias.normal_(0.0, 1.0)
    return len(bns), len(convs)


def rtdetr_micro(d, width):
    """rtdetr-l.yaml with every channel count times `width` (HGNetv2 blocks are not scaled by the
    YAML's width multiplier, so this is done here), depth 0.33 (HGBlock 6 -> 2 layers, RepC3 3 -> 1),
    AIFI 64-wide with 4 heads, and a decoder of hidden 32, 100 queries, 4 heads, 2 layers, FFN 64."""
    s = lambda c: max(8, int(c * width))  # noqa: E731
    d = json.loads(json.dumps(d))
    d["scales"] = {"l": [0.33, 1.0, 1024]}
    for layer in d["backbone"] + d["head"]:
        m, a = layer[2], layer[3]
        if m in ("HGStem", "HGBlock"):
            a[0], a[1] = s(a[0]), s(a[1])
        elif m in ("DWConv", "Conv", "RepC3"):
            a[0] = s(a[0])
        elif m == "AIFI":
            layer[3] = [64, 4]
        elif m == "RTDETRDecoder":
            layer[3] = [a[0], 32, 100, 4, 4, 2, 64]  # nc, hd, nq, ndp, nh, ndl, d_ffn
    return d


def export_ultralytics(name, cfg, size, opset, width, work, dynamic=False, nms=False):
    from ultralytics import RTDETR, YOLO
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    family = MODELS[VARIANTS[name][0] if name in VARIANTS else name][0]
    torch.manual_seed(SEED)
    y = RTDETR(cfg) if family == "rtdetr" else YOLO(cfg)
    if width is not None and family == "rtdetr":
        from ultralytics.nn.tasks import RTDETRDetectionModel
        old = y.model
        torch.manual_seed(SEED)
        y.model = RTDETRDetectionModel(rtdetr_micro(yaml_model_load(cfg), width), nc=80, verbose=False)
        for k in ("args", "task", "pt_path"):
            if hasattr(old, k):
                setattr(y.model, k, getattr(old, k))
    elif width is not None:
        d = yaml_model_load(cfg)
        d["scales"] = {k: [v[0], width, MICRO_MAX_CHANNELS] for k, v in d["scales"].items()}
        d["reg_max"] = MICRO_REG_MAX
        old = y.model
        torch.manual_seed(SEED)
        y.model = DetectionModel(d, nc=MICRO_NC, verbose=False)
        for k in ("args", "task", "pt_path"):
            if hasattr(old, k):
                setattr(y.model, k, getattr(old, k))
    y.model.float()
    nbn, nconv = randomize(y.model, size)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            f = y.export(format="onnx", imgsz=size, opset=opset, simplify=False, dynamic=dynamic,
                         half=False, batch=1, device="cpu", nms=nms)
    finally:
        os.chdir(cwd)
    f = Path(work) / f
    # Ultralytics writes the export time into metadata_props["date"]: pin it so that the same
    # versions give the same bytes (and SHA-256).
    m = onnx.load(str(f))
    for p in m.metadata_props:
        if p.key == "date":
            p.value = FIXED_DATE
    onnx.save(m, str(f))
    return f, {"bn_randomized": nbn, "head_convs_rescaled": nconv}


def export_yolov5(name, cfg, size, opset, width, work):
    """YOLOv5 7.0's anchor-based head (PyPI yolov5 7.0.x): the package's Model from its YAML and
    its export.export_onnx, with the model prepared as its export.run does (fused, eval,
    Detect.inplace/export) without the checkpoint file run() wants to load."""
    import yaml
    import yolov5
    from yolov5.export import export_onnx
    from yolov5.models.yolo import Detect, Model

    d = yaml.safe_load(open(Path(yolov5.__file__).parent / "models" / cfg))
    if width is not None:
        d["width_multiple"] = width
    torch.manual_seed(SEED)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model = Model(d)
    model.eval()
    nbn, nconv = randomize(model, size)
    model = model.fuse().eval()
    for m in model.modules():
        if isinstance(m, Detect):
            m.inplace, m.dynamic, m.export = True, False, True
    im = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for _ in range(2):
            model(im)  # dry runs, as export.run does
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        f, _ = export_onnx(model, im, Path(work) / f"{name}.pt", opset, False, False)
    return Path(f), {"bn_randomized": nbn, "head_convs_rescaled": nconv}


def export_yolox(name, cfg, size, opset, width, work, initializers_as_inputs=False):
    from yolox.exp import get_exp
    from yolox.models.network_blocks import SiLU
    from yolox.utils import replace_module

    exp = get_exp(None, cfg)
    if width is not None:
        exp.width = width
    exp.test_size = (size, size)
    torch.manual_seed(SEED)
    model = exp.get_model()
    model.eval()
    nbn, nconv = randomize(model, size)
    # As yolox/tools/export_onnx.py does (its defaults: input "images", output "output",
    # decode_in_inference False, static batch 1).
    model = replace_module(model, nn.SiLU, SiLU)
    model.head.decode_in_inference = False
    f = Path(work) / f"{name}.onnx"
    dummy = torch.randn(1, 3, size, size)
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx._export(model, dummy, str(f), input_names=["images"], output_names=["output"],
                           dynamic_axes=None, opset_version=opset,
                           keep_initializers_as_inputs=initializers_as_inputs or None)
    return f, {"bn_randomized": nbn, "head_convs_rescaled": nconv}


@contextlib.contextmanager
def official_source(family):
    """The official repository's source tree on sys.path (and as cwd: DAMO-YOLO's configs read
    files by relative path); yields (path, provenance). Its commit is read from git or from a
    COMMIT file beside the sources (an exported tree) and recorded; a commit other than the
    pinned one is reported in the provenance, not refused."""
    sub, url, pinned = OFFICIAL[family]
    root = os.environ.get("VIGIL_ONNX_SRC")
    if not root:
        raise RuntimeError(f"{family}: set VIGIL_ONNX_SRC to a folder holding {sub}/ "
                           "(scripts/reference/onnx-official-sources)")
    src = (Path(root) / sub).resolve()
    if not src.is_dir():
        raise RuntimeError(f"{family}: {src} is missing (scripts/reference/onnx-official-sources)")
    commit = None
    if (src / "COMMIT").exists():
        commit = (src / "COMMIT").read_text().strip()
    else:
        import subprocess
        r = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                           text=True)
        commit = r.stdout.strip() or None
    prov = {"source": {"repository": url, "commit": commit}}
    if commit != pinned:
        prov["source"]["pinned_commit"] = pinned
    before = set(sys.modules)
    cwd = os.getcwd()
    sys.path.insert(0, str(src))
    os.chdir(src)
    try:
        yield src, prov
    finally:
        os.chdir(cwd)
        sys.path.remove(str(src))
        # yolov7 imports itself as the top-level packages `models` and `utils`: forget them so
        # that nothing else imports them by accident.
        for k in set(sys.modules) - before:
            if k.split(".")[0] in ("models", "utils", "yolov6", "damo"):
                del sys.modules[k]


def export_yolov6(name, cfg, size, opset, width, work):
    """YOLOv6 (v3.0/4.0 code) as deploy/ONNX/export_onnx.py writes it without --end2end: the
    model built as tools/train.py builds it (Config.fromfile, training_mode 'repvgg',
    build_model), made useful by randomize, then the exporter's steps after load_checkpoint
    (fuse_model, RepVGGBlock.switch_to_deploy, Upsample compat, SiLU swap, Detect.inplace False,
    dry run) and its torch.onnx.export call (opset 13 hard-coded, EVAL, constant folding,
    input 'images', output 'outputs')."""
    with official_source("yolov6") as (src, prov):
        from yolov6.layers.common import ConvModule, RepVGGBlock, SiLU
        from yolov6.models.effidehead import Detect
        from yolov6.models.yolo import build_model
        from yolov6.utils.config import Config
        from yolov6.utils.torch_utils import fuse_model

        c = Config.fromfile(str(src / cfg))
        if not hasattr(c, "training_mode"):
            setattr(c, "training_mode", "repvgg")  # as tools/train.py does
        if width is not None:
            c.model.width_multiple = width
        torch.manual_seed(SEED)
        with contextlib.redirect_stdout(io.StringIO()):
            model = build_model(c, 80, "cpu")
        # Detect.initialize_biases zero-initialises the prediction convs' weights (training starts
        # from the bias prior): give them torch's default Conv2d init first, or randomize cannot
        # scale them (zero output std).
        torch.manual_seed(SEED)
        det = model.detect
        for conv in list(det.cls_preds) + list(det.reg_preds):
            conv.reset_parameters()
        nbn, nconv = randomize(model, size)
        # reg_preds are the l, t, r, b distances in stride units, used as they are (no DFL, no exp
        # in the n config): with unit std and a N(0, 1) bias a third of the boxes had a negative
        # size. Trained models give positive distances: weights halved, bias N(2, 0.5), so the
        # distances are about N(2, 0.7) strides and boxes about 4 strides wide.
        with torch.no_grad():
            for conv in det.reg_preds:
                conv.weight.mul_(0.5)
                conv.bias.normal_(2.0, 0.5)
        model = fuse_model(model).eval()  # load_checkpoint(fuse=True)
        for layer in model.modules():
            if isinstance(layer, RepVGGBlock):
                layer.switch_to_deploy()
            elif isinstance(layer, nn.Upsample) and not hasattr(layer, "recompute_scale_factor"):
                layer.recompute_scale_factor = None
        img = torch.zeros(1, 3, size, size)
        model.eval()
        for k, m in model.named_modules():
            if isinstance(m, ConvModule):
                if hasattr(m, "act") and isinstance(m.act, nn.SiLU):
                    m.act = SiLU()
            elif isinstance(m, Detect):
                m.inplace = False  # --inplace not given
        with torch.no_grad():
            model(img)  # dry run
        f = Path(work) / f"{name}.onnx"
        with io.BytesIO() as b:
            torch.onnx.export(model, img, b, verbose=False, opset_version=opset,
                              training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True,
                              input_names=["images"], output_names=["outputs"],
                              dynamic_axes=None)
            b.seek(0)
            m = onnx.load(b)
            onnx.checker.check_model(m)
        onnx.save(m, str(f))
        prov.update(bn_randomized=nbn, head_convs_rescaled=nconv)
        return f, prov


def export_yolov7(name, cfg, size, opset, width, work, grid=False):
    """YOLOv7 as its export.py writes ONNX: the deploy cfg's Model (Detect head), made useful by
    randomize, then attempt_load's steps (float, fuse, eval, compat) and export.py's (Conv
    activation swap, Detect.export = not --grid, dry run, torch.onnx.export at opset 12, input
    'images', output_names ['output']). Default (no --grid): Detect returns its three raw conv
    maps, reshaped; --grid (variant): Detect.concat, the decoded boxes in one output."""
    import logging
    logging.disable(logging.INFO)  # its model summaries (logging to the original stderr)
    try:
        return _export_yolov7(name, cfg, size, opset, width, work, grid)
    finally:
        logging.disable(logging.NOTSET)


def _export_yolov7(name, cfg, size, opset, width, work, grid):
    with official_source("yolov7") as (src, prov):
        import yaml
        import models
        from models.experimental import Ensemble  # noqa: F401  (attempt_load's module)
        from models.yolo import Model
        from utils.activations import Hardswish, SiLU

        d = yaml.safe_load(open(src / cfg))
        if width is not None:
            d["width_multiple"] = width
        torch.manual_seed(SEED)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = Model(d, ch=3, nc=80)
        model.eval()
        nbn, nconv = randomize(model, size)
        with contextlib.redirect_stdout(io.StringIO()):
            model = model.float().fuse().eval()  # attempt_load
        for m in model.modules():
            if type(m) in [nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU]:
                m.inplace = True
            elif type(m) is nn.Upsample:
                m.recompute_scale_factor = None
            elif type(m) is models.common.Conv:
                m._non_persistent_buffers_set = set()
        img = torch.zeros(1, 3, size, size)
        for k, m in model.named_modules():
            m._non_persistent_buffers_set = set()
            if isinstance(m, models.common.Conv):
                if isinstance(m.act, nn.Hardswish):
                    m.act = Hardswish()
                elif isinstance(m.act, nn.SiLU):
                    m.act = SiLU()
        model.model[-1].export = not grid
        with torch.no_grad():
            model(img)  # dry run
        model.eval()
        if grid:
            model.model[-1].concat = True
        f = Path(work) / f"{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(model, img, str(f), verbose=False, opset_version=opset,
                              input_names=["images"], output_names=["output"], dynamic_axes=None)
        m = onnx.load(str(f))
        onnx.checker.check_model(m)
        onnx.save(m, str(f))
        prov.update(bn_randomized=nbn, head_convs_rescaled=nconv)
        return f, prov


def damo_micro(c, width):
    """DAMO-YOLO config with every channel count of the TinyNAS structure, the neck and the head
    times `width`, rounded up to a multiple of 8 (YOLOv6's make_divisible)."""
    import ast
    import math
    s = lambda ch: max(8, math.ceil(ch * width / 8) * 8)  # noqa: E731
    st = ast.literal_eval(c.model.backbone["net_structure_str"])
    for blk in st:
        for k in ("out", "btn"):
            if k in blk:
                blk[k] = s(blk[k])
        if blk["in"] != 3:
            blk["in"] = s(blk["in"])
    c.model.backbone["net_structure_str"] = str(st)
    outs = [st[i]["out"] for i in c.model.backbone["out_indices"]]
    c.model.neck["in_channels"] = outs
    c.model.neck["out_channels"] = [s(x) for x in c.model.neck["out_channels"]]
    c.model.head["in_channels"] = c.model.neck["out_channels"]


def export_damo(name, cfg, size, opset, width, work):
    """DAMO-YOLO as tools/converter.py writes ONNX (--mode onnx, no --benchmark, no --end2end):
    parse_config, build_local_model, (randomize instead of the checkpoint), SiLU swap,
    RepConv.switch_to_deploy, head.nms False (the head still decodes: export_with_post),
    dry run, torch.onnx._export at opset 11 (its default), input 'images', output_names
    ['output']. Its onnxsim step is skipped (not installed; it catches the ImportError itself)."""
    with official_source("damo") as (src, prov):
        from damo.base_models.core.ops import RepConv, SiLU
        from damo.config.base import parse_config
        from damo.detectors.detector import build_local_model
        from damo.utils.model_utils import replace_module

        c = parse_config(str(src / cfg))
        if width is not None:
            damo_micro(c, width)
        c.test.batch_size = 1
        torch.manual_seed(SEED)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = build_local_model(c, "cpu")
        model.eval()
        model.head.nms = False  # converter: "decouple postprocess" (set before randomize: no NMS)
        nbn, nconv = randomize(model, size)
        model = replace_module(model, nn.SiLU, SiLU)
        for layer in model.modules():
            if isinstance(layer, RepConv):
                layer.switch_to_deploy()
        model.head.nms = False
        dummy = torch.randn(1, 3, size, size)
        with torch.no_grad():
            model(dummy)
        f = Path(work) / f"{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx._export(model, dummy, str(f), input_names=["images"],
                               output_names=["output"], opset_version=opset)
        prov.update(bn_randomized=nbn, head_convs_rescaled=nconv)
        return f, prov


def dims(vi):
    t = vi.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]


def inventory(path):
    m = onnx.load(str(path))
    g = m.graph
    ops = Counter(n.op_type for n in g.node)
    inits = {i.name for i in g.initializer}
    attrs = {}
    for n in g.node:  # attributes seen per op (names and, for the small ones, values)
        a = attrs.setdefault(n.op_type, {})
        for at in n.attribute:
            v = onnx.helper.get_attribute_value(at)
            if isinstance(v, bytes):
                v = v.decode(errors="replace")
            if isinstance(v, (int, float, str)) or (isinstance(v, list) and len(v) <= 8
                                                    and all(isinstance(x, (int, float)) for x in v)):
                vals = a.setdefault(at.name, [])
                if v not in vals and len(vals) < 8:
                    vals.append(v)
            else:
                a.setdefault(at.name, ["<tensor/graph>"])
    return {
        "ir_version": m.ir_version,
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "producer": f"{m.producer_name} {m.producer_version}",
        "inputs": [{"name": i.name, "shape": dims(i)} for i in g.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": dims(o)} for o in g.output],
        "nodes": len(g.node),
        "op_types": dict(sorted(ops.items())),
        "attributes": {k: attrs[k] for k in sorted(attrs)},
        "initializers": len(g.initializer),
        "initializers_listed_as_inputs": sum(1 for i in g.input if i.name in inits),
        "initializer_bytes": sum(len(i.raw_data) or 4 * len(i.float_data) for i in g.initializer),
        "metadata_props": {p.key: p.value for p in m.metadata_props},
    }


def run_ort(path, x, threads=1, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3  # initializers listed as inputs: one warning each
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    outs = s.run(None, {name: x})
    return [(o.name, v) for o, v in zip(s.get_outputs(), outs)]


def detections(family, outs, size, cfg=None):
    """Each family's own post-processing on ONNX Runtime's outputs (a list of (name, array)):
    rows [x1, y1, x2, y2, score, class] in input pixels, in the order it returns them."""
    out = outs[0][1]
    if family in OFFICIAL:
        d, how = detections_official(family, outs, size, cfg)
    elif family == "ultralytics" and out.shape[-1] == 6:  # nms=True: already suppressed
        d = out[0][out[0][:, 4] > CONF]
        how = f"end to end (NMS in the graph): rows with score > {CONF}, as Ultralytics' end2end postprocess"
    elif family == "ultralytics":
        from ultralytics.utils.nms import non_max_suppression
        d = non_max_suppression(torch.from_numpy(out), conf_thres=CONF, iou_thres=IOU, max_det=300,
                                max_time_img=1e3)[0].numpy()
        how = (f"ultralytics.utils.nms.non_max_suppression(conf_thres={CONF}, iou_thres={IOU}, "
               "max_det=300, class-aware)")
    elif family == "yolov5":
        from yolov5.utils.general import non_max_suppression as nms5
        d = nms5(torch.from_numpy(out), conf_thres=CONF, iou_thres=IOU, max_det=300)[0].numpy()
        how = (f"yolov5.utils.general.non_max_suppression(conf_thres={CONF}, iou_thres={IOU}, "
               "max_det=300, class-aware; score = obj * cls)")
    elif family == "rtdetr":  # end-to-end: top-k in the graph, no NMS; boxes cxcywh in [0, 1]
        o = out[0]
        keep = o[:, 4] > CONF
        b = o[keep, :4] * size
        d = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2, o[keep, 4:6]], 1)
        how = f"ultralytics RTDETRPredictor.postprocess: cxcywh*size -> xyxy, score > {CONF}"
    else:
        from yolox.utils.demo_utils import demo_postprocess, multiclass_nms
        p = demo_postprocess(out.copy(), (size, size))[0]
        b = p[:, :4]
        xyxy = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
        r = multiclass_nms(xyxy, p[:, 4:5] * p[:, 5:], nms_thr=IOU, score_thr=CONF)
        d = np.zeros((0, 6), np.float32) if r is None else r
        how = (f"yolox.utils.demo_utils: demo_postprocess, scores = obj * cls, "
               f"multiclass_nms(nms_thr={IOU}, score_thr={CONF}, class_agnostic=True)")
    rows = [[round(float(v), 3) for v in r[:5]] + [int(r[5])] for r in d]
    return {"how": how, "count": len(rows), "rows": rows}


def detections_official(family, outs, size, cfg):
    with official_source(family) as (src, _):
        if family == "yolov6":  # decoded in the graph: cx, cy, w, h, obj (1.0), classes
            from yolov6.utils.nms import non_max_suppression
            d = non_max_suppression(torch.from_numpy(outs[0][1]), CONF, IOU, max_det=300)[0]
            how = (f"yolov6.utils.nms.non_max_suppression(conf_thres={CONF}, iou_thres={IOU}, "
                   "max_det=300, class-aware; score = obj (1.0 in the graph) * cls)")
        elif family == "yolov7":
            import yaml
            from models.yolo import Detect
            from utils.general import non_max_suppression
            if len(outs) == 1:  # --grid: decoded in the graph, as the yolov5 layout
                p = torch.from_numpy(outs[0][1])
                how = "the graph's decoded output"
            else:  # default export: Detect's raw maps, decoded here as Detect.forward does
                anchors = yaml.safe_load(open(src / cfg))["anchors"]
                z = []
                for i, (_, x) in enumerate(outs):
                    x = torch.from_numpy(x)
                    bs, na, ny, nx, no = x.shape
                    stride = size // ny
                    grid = Detect._make_grid(nx, ny)
                    ag = torch.tensor(anchors[i], dtype=torch.float32).view(1, na, 1, 1, 2)
                    y = x.sigmoid()
                    y[..., 0:2] = (y[..., 0:2] * 2. - 0.5 + grid) * stride
                    y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * ag
                    z.append(y.view(bs, -1, no))
                p = torch.cat(z, 1)
                how = ("models.yolo.Detect.forward's inference decode on the raw maps (sigmoid; "
                       "xy (2s - 0.5 + grid) * stride; wh (2s)^2 * anchor (pixels, cfg anchors))")
            d = non_max_suppression(p, CONF, IOU)[0]
            how += (f", then utils.general.non_max_suppression(conf_thres={CONF}, "
                    f"iou_thres={IOU}, class-aware, max_det 300; score = obj * cls)")
        else:  # damo: outputs (scores [1, A, nc], boxes [1, A, 4] xyxy)
            from damo.utils.boxes import multiclass_nms
            scores = torch.from_numpy(outs[0][1])[0]
            boxes = torch.from_numpy(outs[1][1])[0]
            b, sc, lab = multiclass_nms(boxes, scores, CONF, IOU, 500)
            d = torch.cat([b[:, :4], sc[:, None], lab[:, None].float()], 1)
            how = (f"damo.utils.boxes.multiclass_nms(score_thr={CONF}, iou_thr={IOU}, max_num=500) "
                   "as damo.utils.postprocess calls it: class-aware (batched_nms)")
    return d.numpy(), how


def write_golden(name, onnx_path, provenance):
    inv = inventory(onnx_path)
    # Symbolic dims (a dynamic export): batch 1, height and width the export size.
    size = provenance.get("input_size")
    shape = [d if isinstance(d, int) else (1 if i < 2 else size)
             for i, d in enumerate(inv["inputs"][0]["shape"])]
    x = np.random.default_rng(SEED).random(shape, dtype=np.float32)
    outs = run_ort(onnx_path, x)
    # The oracle's own noise floor: ONNX Runtime fully optimized (fusions) on 2 threads vs the
    # reference run. max |a - b| / max |b| per output.
    fast = run_ort(onnx_path, x, 2, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    floor = {n: float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
             for (n, b), (_, a) in zip(outs, fast)}
    # The input is the same for every model of a size: stored once, beside the outputs.
    in_file = OUT / f"input-{'x'.join(map(str, shape))}.f32"
    in_file.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
    tensors, off, blobs = [], 0, []
    for tname, t in outs:
        t = np.ascontiguousarray(t, dtype="<f4")
        tensors.append({"name": tname, "shape": list(t.shape), "offset": off,
                        "std": round(float(t.std()), 4), "min": round(float(t.min()), 4),
                        "max": round(float(t.max()), 4)})
        off += t.size
        blobs.append(t.tobytes())
    size = onnx_path.stat().st_size
    if size < MAX_COMMIT:
        dest = OUT / f"{name}.onnx"
    else:
        BIG.mkdir(parents=True, exist_ok=True)
        dest = BIG / f"{name}.onnx"
    shutil.copyfile(onnx_path, dest)
    meta = {
        "model": name,
        "onnx": str(dest),
        "onnx_sha256": sha256(dest),
        "onnx_bytes": size,
        "committed": size < MAX_COMMIT,
        "opset": inv["opset_import"].get("ai.onnx"),
        "input_name": inv["inputs"][0]["name"],
        "input": f"numpy default_rng({SEED}).random({shape}, float32)",
        "input_file": str(in_file),
        "oracle": f"onnxruntime {ort.__version__} CPUExecutionProvider, 1 thread, ORT_DISABLE_ALL",
        "ort_enable_all_2_threads_vs_reference": floor,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": ort.__version__, "numpy": np.__version__},
        **provenance,
        "tensors": tensors,
    }
    (OUT / f"{name}.f32").write_bytes(b"".join(blobs))
    (OUT / f"{name}.json").write_text(dumps(meta))
    (OUT / f"{name}.ops.json").write_text(dumps(inv))
    dets = detections(provenance["family"], outs, shape[-1], provenance.get("config_file"))
    (OUT / f"{name}.dets.json").write_text(dumps(dets))
    meta["detections"] = dets["count"]
    return meta, inv


def main(names):
    OUT.mkdir(parents=True, exist_ok=True)
    failures = {}
    for name in names:
        variant = None
        if name in VARIANTS:
            base, variant, vopset = VARIANTS[name]
            family, cfg, size, opset, width = MODELS[base]
            if variant == "reexport":
                opset = vopset
        else:
            family, cfg, size, opset, width = MODELS[name]
        work = tempfile.mkdtemp(prefix=f"onnx-{name}-")
        try:
            if family in ("ultralytics", "rtdetr"):
                import ultralytics
                f, extra = export_ultralytics(name, cfg, size, opset, width, work,
                                              dynamic=variant == "dynamic", nms=variant == "nms")
                micro = (f" with channels x{width}, depth 0.33, AIFI 64/4 heads, decoder hd 32 nq 100 "
                         f"nh 4, 2 layers, ffn 64 (rtdetr_micro)" if family == "rtdetr" else
                         f" with width {width}, max_channels {MICRO_MAX_CHANNELS}, nc={MICRO_NC}, "
                         f"reg_max={MICRO_REG_MAX}")
                prov = {"family": family, "exporter": f"ultralytics {ultralytics.__version__} "
                        f"{'RTDETR' if family == 'rtdetr' else 'YOLO'}.export(format=onnx, "
                        f"imgsz={size}, opset={opset}, simplify=False)",
                        "config": cfg + (micro if width else "")}
            elif family == "yolov5":
                import yolov5
                f, extra = export_yolov5(name, cfg, size, opset, width, work)
                prov = {"family": family, "exporter": f"yolov5 {yolov5.__version__} "
                        f"export.export_onnx (opset {opset}, simplify False)",
                        "config": cfg + (f" with width_multiple {width}" if width else "")}
            elif family in OFFICIAL:
                fn = {"yolov6": export_yolov6, "yolov7": export_yolov7, "damo": export_damo}[family]
                kw = {"grid": True} if variant == "grid" else {}
                f, extra = fn(name, cfg, size, opset, width, work, **kw)
                exporter = {
                    "yolov6": f"YOLOv6 deploy/ONNX/export_onnx.py code (no --end2end, opset {opset})",
                    "yolov7": f"yolov7 export.py ONNX code ({'--grid' if kw else 'no --grid'}, "
                              f"opset {opset})",
                    "damo": f"DAMO-YOLO tools/converter.py --mode onnx code (no --benchmark, no "
                            f"--end2end, opset {opset}, onnxsim not installed)",
                }[family]
                micro = {"yolov6": f" with width_multiple {width}",
                         "yolov7": f" with width_multiple {width}",
                         "damo": f" with every channel count x{width} (damo_micro)"}[family]
                prov = {"family": family, "exporter": exporter,
                        "config": cfg + (micro if width else ""), "config_file": cfg,
                        "source": extra.pop("source")}
            else:
                import yolox
                f, extra = export_yolox(name, cfg, size, opset, width, work,
                                        variant == "initializers_as_inputs")
                prov = {"family": family, "exporter": f"yolox {yolox.__version__} "
                        f"tools/export_onnx.py code (torch.onnx._export, opset {opset}, no onnxsim)",
                        "config": cfg + (f" with width {width}" if width else "")}
            prov.update(extra, seed=SEED, input_size=size)
            if variant:
                prov["variant_of"] = base
                if variant == "version_converter":
                    m = onnx.version_converter.convert_version(onnx.load(str(f)), vopset)
                    m.ir_version = max(m.ir_version, 9)  # opset 19 came with IR 9
                    onnx.checker.check_model(m)
                    onnx.save(m, str(f))
                    prov["variant"] = f"onnx.version_converter.convert_version(opset {vopset})"
                elif variant == "initializers_as_inputs":
                    prov["variant"] = "exported with keep_initializers_as_inputs=True"
                elif variant == "nms":
                    prov["variant"] = "exported with nms=True (NMS in the graph, end to end)"
                elif variant == "dynamic":
                    prov["variant"] = "exported with dynamic=True (batch, height, width symbolic)"
                elif variant == "grid":
                    prov["variant"] = "exported with yolov7 export.py's --grid (Detect.concat)"
                else:
                    prov["variant"] = f"re-exported at opset {vopset}"
            meta, inv = write_golden(name, f, prov)
            outs = ", ".join(f"{t['name']}{t['shape']} std {t['std']}" for t in meta["tensors"])
            print(f"{name}: {meta['onnx_bytes']} B opset {meta['opset']} {meta['detections']} dets "
                  f"{'committed' if meta['committed'] else 'big/'} {inv['nodes']} nodes; {outs}")
        except Exception as e:  # keep going: the report says which failed
            import traceback
            traceback.print_exc()
            failures[name] = f"{type(e).__name__}: {e}"
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for n, e in failures.items():
        print(f"FAILED {n}: {e}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    names = sys.argv[1:]
    if not names:
        names = list(MODELS) + list(VARIANTS)
        if not os.environ.get("VIGIL_ONNX_SRC"):  # the official repositories' families need it
            fam = lambda n: MODELS[VARIANTS[n][0] if n in VARIANTS else n][0]  # noqa: E731
            skipped = [n for n in names if fam(n) in OFFICIAL]
            names = [n for n in names if fam(n) not in OFFICIAL]
            print(f"VIGIL_ONNX_SRC not set (scripts/reference/onnx-official-sources): skipping "
                  f"{' '.join(skipped)}", file=sys.stderr)
    sys.exit(main(names))
