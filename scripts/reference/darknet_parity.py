#!/usr/bin/env python3
"""Test oracle (never shipped): reference outputs of the darknet YOLO line on seeded random weights,
committed under tests/golden/darknet/ and read by tests/it/darknet_parity.rs.

For each model: `vigil synth-weights` writes the weights (seed 1) and the cfg with a reduced input
size (the cfg is kept beside the golden: the test checks vigil builds the same one); one fixed input
(assets/images/person.jpg resized to the model's size, RGB CHW bytes) is written as
input-WxH.u8 so both sides read the same bytes (and divide by 255 in f32). Then one reference runs it:

- OpenCV DNN's darknet importer (pip opencv-python-headless 4.x) where it has every layer: the raw
  tensor entering each head (the `conv_N` before it) and the head's decoded rows (`[yolo]`,
  `[region]`: x, y, w, h relative to the input, objectness, class scores);
- Debian 12's darknet (pjreddie, git 2018-09-14; libdarknet.so through ctypes) for the layers
  OpenCV lacks ([local]/[connected]/[dropout]/[detection] of YOLOv1, the WordTree of YOLO9000): the raw head input
  (the network cut before the head), the head's output, and get_network_boxes' boxes; for
  YOLO9000 the tree softmax, the hierarchical class probabilities of hierarchy_predictions and
  the class of hierarchy_top_prediction (see darknet_tree: darknet's own functions on
  the planar layout, as its CPU [region] tree path is broken).

Each golden is <model>.f32 (all tensors, little-endian f32, back to back) + <model>.json (name,
shape, offset of each). Run from the repository root after `cargo build --release`:

    python3 scripts/reference/darknet_parity.py            # all models
    python3 scripts/reference/darknet_parity.py yolov2     # some

darknet: `apt-get download darknet && dpkg-deb -x darknet_*.deb /tmp/darknet` (its dependencies,
libopencv-*406, come with Debian 12's python3-opencv), or set DARKNET_LIB to libdarknet.so.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np

SEED = 1
OUT = "tests/golden/darknet"
# model: (input size, reference). OpenCV's [region] zeroes class scores below the cfg's thresh
# (0.6: all of them on random weights), so YOLOv2's softmax is checked against darknet too.
# Sizes are multiples of each network's stride, small so the
# goldens stay small and the tests fast.
MODELS = {
    "yolov1": (128, "darknet"),
    "yolov1-tiny": (96, "darknet"),
    "yolov2": (96, "opencv+darknet"),
    "yolov2-tiny": (96, "opencv+darknet"),
    "yolo9000": (32, "darknet"),
    "yolov3": (64, "opencv"),
    "yolov3-spp": (64, "opencv"),
    "yolov3-tiny": (96, "opencv"),
    "yolov4": (64, "opencv"),
    "yolov4-tiny": (96, "opencv"),
    "yolov4-tiny-mish": (96, "opencv"),
}
# Test-only variants live beside the goldens; the real models in models/.
MANIFESTS = {"yolov4-tiny-mish": f"{OUT}/variants/yolov4-tiny-mish.yaml"}
HIER_THRESHS = (0.5, 0.001)
DARKNET_LIB = os.environ.get("DARKNET_LIB", "/tmp/darknet/usr/lib/darknet/libdarknet.so")


def sections(cfg_text):
    """[(kind, {key: value})] of a cfg, in order."""
    out = []
    for line in cfg_text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            out.append((line[1:-1], {}))
        else:
            k, v = line.split("=", 1)
            out[-1][1][k.strip()] = v.strip()
    return out


def write_input(size):
    """The input as RGB CHW bytes; both sides compute byte / 255 in f32 (one correctly rounded
    IEEE division), so they see identical values from a quarter of the file size."""
    img = cv2.imread("assets/images/person.jpg")
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    chw = img[:, :, ::-1].transpose(2, 0, 1).copy()
    chw.tofile(f"{OUT}/input-{size}x{size}.u8")
    return chw.astype(np.float32) / np.float32(255)


def opencv(cfg, weights, chw, secs):
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    layers = secs[1:]
    heads = [i for i, (k, _) in enumerate(layers) if k in ("yolo", "region")]
    names = []
    for i in heads:
        kind, opts = layers[i - 1]
        assert kind == "convolutional" and "batch_normalize" not in opts
        act = opts.get("activation", "linear")
        # OpenCV names a conv's activation after the next layer's index
        names.append(f"conv_{i - 1}" if act == "linear" else f"{act}_{i}")
    outs = list(net.getUnconnectedOutLayersNames())
    net.setInput(chw[None])
    got = net.forward(names + outs)
    tensors = {}
    for n, (name, t) in enumerate(zip(names, got[: len(names)])):
        tensors[f"raw{n}"] = t
    for n, t in enumerate(got[len(names):]):
        tensors[f"decoded{n}"] = t
    return tensors, f"OpenCV DNN {cv2.__version__} (readNetFromDarknet, DNN_BACKEND_OPENCV)"


class Box(ctypes.Structure):
    _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float), ("w", ctypes.c_float), ("h", ctypes.c_float)]


class Detection(ctypes.Structure):
    _fields_ = [("bbox", Box), ("classes", ctypes.c_int), ("prob", ctypes.POINTER(ctypes.c_float)),
                ("mask", ctypes.POINTER(ctypes.c_float)), ("objectness", ctypes.c_float),
                ("sort_class", ctypes.c_int)]


class Tree(ctypes.Structure):
    _fields_ = [("leaf", ctypes.POINTER(ctypes.c_int)), ("n", ctypes.c_int),
                ("parent", ctypes.POINTER(ctypes.c_int)), ("child", ctypes.POINTER(ctypes.c_int)),
                ("group", ctypes.POINTER(ctypes.c_int)), ("name", ctypes.POINTER(ctypes.c_char_p)),
                ("groups", ctypes.c_int), ("group_size", ctypes.POINTER(ctypes.c_int)),
                ("group_offset", ctypes.POINTER(ctypes.c_int))]


def libdarknet():
    lib = ctypes.CDLL(DARKNET_LIB)
    lib.load_network.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    lib.load_network.restype = ctypes.c_void_p
    lib.set_batch_network.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.network_predict.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float)]
    lib.network_predict.restype = ctypes.POINTER(ctypes.c_float)
    lib.get_network_boxes.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                      ctypes.c_float, ctypes.POINTER(ctypes.c_int), ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int)]
    lib.get_network_boxes.restype = ctypes.POINTER(Detection)
    lib.read_tree.argtypes = [ctypes.c_char_p]
    lib.read_tree.restype = ctypes.POINTER(Tree)
    f32p = ctypes.POINTER(ctypes.c_float)
    lib.softmax.argtypes = [f32p, ctypes.c_int, ctypes.c_float, ctypes.c_int, f32p]
    lib.hierarchy_predictions.argtypes = [f32p, ctypes.c_int, ctypes.POINTER(Tree), ctypes.c_int, ctypes.c_int]
    lib.hierarchy_top_prediction.argtypes = [f32p, ctypes.POINTER(Tree), ctypes.c_float, ctypes.c_int]
    lib.hierarchy_top_prediction.restype = ctypes.c_int
    return lib


def darknet_tree(lib, tree_path, raw, num, classes, cells):
    """The WordTree head on darknet's own functions with the planar stride (cells): what
    darknet's GPU path computes. Its CPU [region] (forward_region_layer, `#ifndef GPU`) offsets the
    tree softmax by elements where planes are meant and returns NaN and garbage (seen on this
    very input), so it cannot be the reference."""
    tree = lib.read_tree(tree_path.encode())
    t = tree.contents
    assert t.n == classes
    f32p = ctypes.POINTER(ctypes.c_float)
    x = raw.reshape(num, 5 + classes, cells).astype(np.float32).copy()
    x[:, [0, 1, 4]] = 1 / (1 + np.exp(-x[:, [0, 1, 4]]))
    hier = np.zeros_like(x)
    top = np.zeros((2, num, cells), np.float32)
    def at(arr, a, entry, cell):  # pointer to entry `entry` of anchor `a` at `cell`
        return ctypes.cast(arr.ctypes.data + 4 * ((a * (5 + classes) + entry) * cells + cell), f32p)

    for a in range(num):
        for cell in range(cells):
            for g in range(t.groups):
                ptr = at(x, a, 5 + t.group_offset[g], cell)
                lib.softmax(ptr, t.group_size[g], 1.0, cells, ptr)
    hier[:] = x
    for a in range(num):
        for cell in range(cells):
            cls = at(hier, a, 5, cell)
            lib.hierarchy_predictions(cls, classes, tree, 0, cells)
            # darknet's default hier_thresh, and a low one that walks deep into the tree
            for n, thresh in enumerate(HIER_THRESHS):
                top[n, a, cell] = lib.hierarchy_top_prediction(cls, tree, thresh, cells)
    return x.reshape(-1), hier.reshape(-1), top


def darknet_run(lib, cfg, weights, chw, count):
    net = lib.load_network(cfg.encode(), weights.encode(), 0)
    lib.set_batch_network(net, 1)
    x = np.ascontiguousarray(chw.reshape(-1))
    out = lib.network_predict(net, x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    return net, out, np.ctypeslib.as_array(out, shape=(count,)).copy()


def darknet(cfg, weights, chw, secs, size, tmp):
    lib = libdarknet()
    layers = secs[1:]
    head = next(i for i, (k, _) in enumerate(layers) if k in ("detection", "region"))
    kind, opts = layers[head]
    # the network cut before its head: its output is the raw head input
    text = open(cfg).read()
    lines = text.splitlines()
    starts = [n for n, l in enumerate(lines) if l.startswith("[")]
    cut = "\n".join(lines[: starts[head + 1]]) + "\n"
    full = text
    if "tree" in opts:  # darknet opens tree= relative to its working directory
        full = full.replace(f"tree={opts['tree']}", f"tree={os.path.abspath('models/' + opts['tree'])}")
    cut_cfg, full_cfg = f"{tmp}/cut.cfg", f"{tmp}/full.cfg"
    open(cut_cfg, "w").write(cut)
    open(full_cfg, "w").write(full)
    classes = int(opts["classes"])
    num = int(opts["num"])
    if kind == "detection":
        side = int(opts["side"])
        count, boxes = side * side * (classes + 5 * num), side * side * num
    else:
        grid = size // 32
        count, boxes = grid * grid * num * (5 + classes), grid * grid * num
    _, _, raw = darknet_run(lib, cut_cfg, weights, chw, count)
    version = "darknet 0.0.0+git20180914.61c9d02e (Debian 12 libdarknet.so, CPU)"
    if "tree" in opts:
        activated, hier, top = darknet_tree(lib, os.path.abspath("models/" + opts["tree"]), raw, num,
                                            classes, boxes // num)
        return {"raw0": raw, "activated0": activated, "hier0": hier, "top0": top}, \
            version + ": cut before [region], tree through its softmax/hierarchy_predictions/hierarchy_top_prediction"
    net, out_ptr, activated = darknet_run(lib, full_cfg, weights, chw, count)
    tensors = {"raw0": raw, "activated0": activated}
    n = ctypes.c_int(0)
    # thresh far below any value: every box and every class probability comes back
    thresh = -1e30 if kind == "detection" else 0.0
    dets = lib.get_network_boxes(net, size, size, thresh, 0.5, None, 1, ctypes.byref(n))
    assert n.value == boxes, (n.value, boxes)
    rows = np.zeros((boxes, 5 + classes), np.float32)
    for i in range(boxes):
        d = dets[i]
        rows[i, :4] = (d.bbox.x, d.bbox.y, d.bbox.w, d.bbox.h)
        rows[i, 4] = d.objectness
        rows[i, 5:] = np.ctypeslib.as_array(d.prob, shape=(classes,))
    tensors["boxes0"] = rows
    return tensors, version


def main():
    os.makedirs(OUT, exist_ok=True)
    wanted = sys.argv[1:] or list(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        for model in wanted:
            size, ref = MODELS[model]
            weights = f"{tmp}/{model}.weights"
            subprocess.run(["target/release/vigil", "synth-weights", "--model", MANIFESTS.get(model, f"models/{model}.yaml"),
                            "--seed", str(SEED), "--size", f"{size}x{size}", "--out", weights], check=True)
            cfg = f"{OUT}/{model}.cfg"
            os.replace(f"{tmp}/{model}.cfg", cfg)
            secs = sections(open(cfg).read())
            chw = write_input(size)
            tensors, versions = {}, []
            if "opencv" in ref:
                t, v = opencv(cfg, weights, chw, secs)
                tensors.update(t)
                versions.append(v)
            if "darknet" in ref:
                t, v = darknet(cfg, weights, chw, secs, size, tmp)
                if "raw0" in tensors:  # both ran: keep OpenCV's raw, record darknet's as well
                    t["darknet_raw0"] = t.pop("raw0")
                tensors.update(t)
                versions.append(v)
            version = " + ".join(versions)
            table, blob, offset = [], [], 0
            for name, t in tensors.items():
                t = np.asarray(t, np.float32)
                table.append({"name": name, "shape": list(t.shape), "offset": offset})
                blob.append(t.reshape(-1))
                offset += t.size
            np.concatenate(blob).astype("<f4").tofile(f"{OUT}/{model}.f32")
            meta = {"model": model, "seed": SEED, "size": [size, size], "input": f"input-{size}x{size}.u8",
                    "reference": version, "tensors": table}
            json.dump(meta, open(f"{OUT}/{model}.json", "w"), indent=1)
            print(model, version, [(e["name"], e["shape"]) for e in table])


if __name__ == "__main__":
    main()
