#!/usr/bin/env python3
"""Writes the malformed-ONNX corpus (issue 16): tests/corpus/onnx/*.onnx and EXPECTED.md.

Each file is a small, deterministic ONNX (or would-be ONNX) file that vigil's ONNX executor must
reject with a clear error, never a panic, and with bounded memory (several declare tensors of
hundreds of GB, or lengths far past the end of the file). Most are hand-built graphs around one
control model (`valid-conv-sigmoid.onnx`: 1x3x8x8 `images` -> Conv 3x3 -> Sigmoid -> `output0`,
which must load and run); the rest are byte edits of it.

Invalid models are written with `SerializeToString()` directly (onnx.save may validate). The
table in EXPECTED.md is generated from CASES below, so the phrases in it and in this script are
one list. With onnxruntime importable, EXPECTED.md also records what onnx.load, onnx.checker
(full_check) and ONNX Runtime (CPU) say about each file, as a second opinion; ORT is an oracle,
never a dependency of vigil.

    python3 -m venv --system-site-packages /tmp/venv-malformed     # numpy from Debian is fine
    /tmp/venv-malformed/bin/pip install onnx==1.23.2 onnxruntime==1.32.0 protobuf==7.36.2
    /tmp/venv-malformed/bin/python scripts/reference/malformed-onnx.py

(or .venv-onnx/bin/python from scripts/reference/onnx-venv, which has the same pins).
Two runs give byte-identical files.
"""
import hashlib
import os
import re
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "corpus", "onnx")
PRODUCER = "vigil-malformed"
OPSET = 17
IR = 8  # the IR version that goes with opset 17

F = TensorProto.FLOAT


def values(n, seed=0):
    """Deterministic small float32 values in [-0.25, 0.25] (no RNG: stable across numpy versions)."""
    i = np.arange(n, dtype=np.int64)
    return (((i * 37 + seed * 11) % 17 - 8) / 32.0).astype(np.float32)


def weight(name, dims, seed=0):
    return helper.make_tensor(name, F, dims, values(int(np.prod(dims)), seed).tobytes(), raw=True)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opsets=(("", OPSET),), ir=IR, name="g"):
    g = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(inits))
    return helper.make_model(
        g, producer_name=PRODUCER, ir_version=ir,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


IMAGES = ("images", F, [1, 3, 8, 8])


def conv_sigmoid(w_dims=(4, 3, 3, 3), in_shape=(1, 3, 8, 8), out_shape=(1, 4, 8, 8),
                 conv_attrs=None, opsets=(("", OPSET),), ir=IR, w=None, extra_inits=()):
    """The control model: images -> Conv(W, B, pads 1) -> Sigmoid -> output0."""
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]} if conv_attrs is None else conv_attrs
    conv = helper.make_node("Conv", ["images", "W", "B"], ["conv"], name="conv0", **attrs)
    sig = helper.make_node("Sigmoid", ["conv"], ["output0"], name="sigmoid0")
    W = weight("W", list(w_dims)) if w is None else w
    B = weight("B", [w_dims[0]], seed=1)
    return model([conv, sig], [vi("images", F, list(in_shape))], [vi("output0", F, list(out_shape))],
                 [W, B, *extra_inits], opsets=opsets, ir=ir)


def ser(m):
    return m.SerializeToString()


def cut_inside(data, needle, frac=0.5):
    """data truncated part-way through the first occurrence of needle."""
    at = data.find(needle)
    assert at >= 0, "needle not found"
    return data[: at + max(1, int(len(needle) * frac))]


# ---------------------------------------------------------------------------------------------
# The cases. Each: file, bytes (a function), what is wrong, phase, key phrases (all lower-case;
# the error, lower-cased, must contain every one of them).
# Phases: parse (protobuf decode), load (validation of the decoded model: opsets, operators,
# attributes, tensors, graph structure), shape (static shape resolution from the input shape),
# run (the first inference).
# ---------------------------------------------------------------------------------------------


def c_valid():
    return ser(conv_sigmoid())


def c_empty():
    return b""


def c_random():
    out, h = b"", b"vigil-malformed"
    while len(out) < 4096:
        h = hashlib.sha256(h).digest()
        out += h
    # Start with an invalid tag (field 0, wire type 7) so no decoder can read it as a message.
    return b"\x07" + out[:4095]


def c_text():
    return (b"# This is a vigil config, not a model: someone pointed model.path at the wrong file.\n"
            b"cameras:\n  - name: door\n    url: rtsp://10.0.0.5/stream\n")


def c_truncated_mid_initializer():
    # A bigger weight so that the cut falls clearly inside raw_data.
    w = weight("W", [16, 3, 3, 3])
    data = ser(conv_sigmoid(w_dims=(16, 3, 3, 3), out_shape=(1, 16, 8, 8), w=w))
    return cut_inside(data, w.raw_data, 0.5)


def c_truncated_mid_node():
    m = conv_sigmoid()
    return cut_inside(ser(m), m.graph.node[0].SerializeToString(), 0.5)


def c_truncated_header():
    return ser(conv_sigmoid())[:7]  # inside producer_name


def c_length_prefix_huge():
    # The graph field (ModelProto field 7, tag 0x3a) claims 0x7fffffff bytes; the file has ~1 KB.
    m = conv_sigmoid()
    g = m.graph.SerializeToString()
    head = onnx.ModelProto()
    head.CopyFrom(m)
    head.ClearField("graph")
    head.ClearField("opset_import")
    return ser(head) + b"\x3a" + b"\xff\xff\xff\xff\x07" + g


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def c_nested_deep():
    # 200 levels of If, each then_branch holding the next: 600+ messages deep. A recursive
    # decoder without a depth limit overflows its stack. Python's protobuf refuses to build
    # this (its own depth limit), so the nesting is encoded by hand: each level is a
    # serialized If node (inputs, outputs, else_branch: a leaf) plus an appended then_branch
    # attribute (AttributeProto name=1, g=6, type=20 GRAPH) wrapping the level below, in a
    # GraphProto (node=1) with its output.
    def leaf(name):
        return helper.make_graph([helper.make_node("Identity", ["x"], [name])], "leaf", [],
                                 [vi(name, F, [1])])

    inner = leaf("y0").SerializeToString()
    for depth in range(1, 201):
        y = "y%d" % depth if depth < 200 else "output0"
        node = helper.make_node("If", ["cond"], [y], else_branch=leaf(y)).SerializeToString()
        attr = field(1, b"then_branch") + varint(20 << 3) + varint(5) + field(6, inner)
        node += field(5, attr)
        if depth == 200:
            break
        g = helper.make_graph([], "b%d" % depth, [], [vi(y, F, [1])]).SerializeToString()
        inner = g + field(1, node)
    head = model([], [vi("cond", TensorProto.BOOL, []), vi("x", F, [1])],
                 [vi("output0", F, [1])])
    graph = head.graph.SerializeToString() + field(1, node)
    head.ClearField("graph")
    return ser(head) + field(7, graph)


def c_no_graph():
    m = onnx.ModelProto()
    m.ir_version = IR
    m.producer_name = PRODUCER
    m.opset_import.append(helper.make_opsetid("", OPSET))
    return ser(m)


def c_no_opset_import():
    # What a download cut exactly at a field boundary looks like: everything up to the graph.
    m = conv_sigmoid()
    m.ClearField("opset_import")
    return ser(m)


def c_opset(v, ir):
    return lambda: ser(conv_sigmoid(opsets=(("", v),), ir=ir))


def c_unknown_op():
    n = helper.make_node("FooBar", ["images"], ["output0"], name="foo0")
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])]))


def c_foreign_domain():
    # A real operator, but from ONNX Runtime's contrib domain (ORT itself runs it).
    n = helper.make_node("FusedConv", ["images", "W", "B"], ["output0"], name="fused0",
                         domain="com.microsoft", activation="Relu", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1])
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 4, 8, 8])],
                     [weight("W", [4, 3, 3, 3]), weight("B", [4], 1)],
                     opsets=(("", OPSET), ("com.microsoft", 1))))


def c_no_outputs():
    m = conv_sigmoid()
    del m.graph.output[:]
    return ser(m)


def c_output_not_produced():
    m = conv_sigmoid()
    m.graph.output.append(vi("ghost_out", F, [1, 4, 8, 8]))
    return ser(m)


def c_undefined_input():
    n = helper.make_node("Add", ["images", "ghost"], ["output0"], name="add0")
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])]))


def c_cycle():
    a = helper.make_node("Add", ["images", "t2"], ["t1"], name="add0")
    b = helper.make_node("Relu", ["t1"], ["t2"], name="relu0")
    c = helper.make_node("Sigmoid", ["t1"], ["output0"], name="sigmoid0")
    return ser(model([a, b, c], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])]))


def c_duplicate_output():
    a = helper.make_node("Relu", ["images"], ["t_dup"], name="relu0")
    b = helper.make_node("Sigmoid", ["images"], ["t_dup"], name="sigmoid0")
    c = helper.make_node("Identity", ["t_dup"], ["output0"], name="id0")
    return ser(model([a, b, c], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])]))


def c_huge_tensor(raw):
    # W declares 100000 x 100000 x 10 = 1e11 floats (400 GB; 1e11 elements = "100 G") and holds
    # none of it (or 16 bytes). Nothing may be allocated from the declared size.
    def f():
        w = TensorProto()
        w.name = "W"
        w.data_type = F
        w.dims.extend([100000, 100000, 10])
        if raw:
            w.raw_data = bytes(16)
        n = helper.make_node("Add", ["images", "W"], ["output0"], name="add0")
        return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])], [w]))
    return f


def c_dims_overflow():
    w = TensorProto()
    w.name = "W"
    w.data_type = F
    w.dims.extend([1 << 62, 1 << 62, 16])  # product overflows i64 and u64
    n = helper.make_node("Add", ["images", "W"], ["output0"], name="add0")
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 3, 8, 8])], [w]))


def c_raw_len_mismatch():
    w = weight("W", [4, 3, 3, 3])
    w.raw_data = w.raw_data[:400]  # dims need 108 floats = 432 bytes
    return ser(conv_sigmoid(w=w))


def c_negative_dim():
    w = TensorProto()
    w.name = "W"
    w.data_type = F
    w.dims.extend([4, -3, 3, 3])
    w.raw_data = values(108).tobytes()
    return ser(conv_sigmoid(w=w))


def c_external(location):
    def f():
        w = TensorProto()
        w.name = "W"
        w.data_type = F
        w.dims.extend([4, 3, 3, 3])
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "432")):
            e = w.external_data.add()
            e.key, e.value = k, v
        return ser(conv_sigmoid(w=w))
    return f


def c_unknown_dtype():
    w = TensorProto()
    w.name = "W"
    w.data_type = 999
    w.dims.extend([4, 3, 3, 3])
    w.raw_data = values(108).tobytes()
    return ser(conv_sigmoid(w=w))


def c_weight_int64():
    w = helper.make_tensor("W", TensorProto.INT64, [4, 3, 3, 3],
                           np.arange(108, dtype=np.int64).tobytes(), raw=True)
    return ser(conv_sigmoid(w=w))


def c_string_input():
    n = helper.make_node("Identity", ["images"], ["output0"], name="id0")
    return ser(model([n], [vi("images", TensorProto.STRING, [1, 3, 8, 8])],
                     [vi("output0", TensorProto.STRING, [1, 3, 8, 8])]))


def c_resize_cubic():
    scales = helper.make_tensor("scales", F, [4], np.array([1, 1, 2, 2], np.float32).tobytes(),
                                raw=True)
    n = helper.make_node("Resize", ["images", "", "scales"], ["output0"], name="resize0",
                         mode="cubic")
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 3, 16, 16])], [scales]))


def c_attr_wrong_type():
    return ser(conv_sigmoid(conv_attrs={"kernel_shape": [3.0, 3.0], "pads": [1, 1, 1, 1]}))


def c_conv_missing_weight():
    conv = helper.make_node("Conv", ["images"], ["conv"], name="conv0", kernel_shape=[3, 3])
    sig = helper.make_node("Sigmoid", ["conv"], ["output0"], name="sigmoid0")
    return ser(model([conv, sig], [vi(*IMAGES)], [vi("output0", F, [1, 4, 6, 6])]))


def c_input_rank2():
    n = helper.make_node("Sigmoid", ["images"], ["output0"], name="sigmoid0")
    return ser(model([n], [vi("images", F, [8, 8])], [vi("output0", F, [8, 8])]))


def c_two_inputs():
    n = helper.make_node("Add", ["images", "images2"], ["output0"], name="add0")
    return ser(model([n], [vi(*IMAGES), vi("images2", F, [1, 3, 8, 8])],
                     [vi("output0", F, [1, 3, 8, 8])]))


def c_huge_input():
    # 1 x 3 x 100000 x 100000 floats = 120 GB per frame.
    return ser(conv_sigmoid(in_shape=(1, 3, 100000, 100000), out_shape=(1, 4, 100000, 100000)))


def c_conv_channels():
    return ser(conv_sigmoid(w_dims=(4, 5, 3, 3)))  # the input has 3 channels


def c_reshape_count():
    shape = helper.make_tensor("shape", TensorProto.INT64, [2],
                               np.array([1, 100], np.int64).tobytes(), raw=True)
    n = helper.make_node("Reshape", ["images", "shape"], ["output0"], name="reshape0")
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 100])], [shape]))


def c_concat_mismatch():
    other = weight("other", [1, 2, 4, 4])
    n = helper.make_node("Concat", ["images", "other"], ["output0"], name="concat0", axis=1)
    # output0's shape is left undeclared, so the mismatch is the Concat's own.
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, None)], [other]))


def c_gather_oob():
    idx = helper.make_tensor("idx", TensorProto.INT64, [1], np.array([5], np.int64).tobytes(),
                             raw=True)
    n = helper.make_node("Gather", ["images", "idx"], ["output0"], name="gather0", axis=1)
    return ser(model([n], [vi(*IMAGES)], [vi("output0", F, [1, 1, 8, 8])], [idx]))


CASES = [
    # file, make, what is wrong, phase, phrases
    ("valid-conv-sigmoid.onnx", c_valid,
     "control: 1x3x8x8 `images` -> Conv 3x3 (W 4x3x3x3, B 4, pads 1) -> Sigmoid -> `output0` "
     "1x4x8x8, opset 17. Every other case is a variation of this one", "none: loads and runs", []),
    # -- parse --------------------------------------------------------------------------------
    ("empty.onnx", c_empty, "0 bytes (decodes as an all-default ModelProto)", "parse", ["empty"]),
    ("random-bytes.onnx", c_random, "4 KB of SHA-256 chain bytes, first byte an invalid "
     "protobuf tag", "parse", ["protobuf"]),
    ("text-file.onnx", c_text, "a YAML text file named .onnx", "parse", ["protobuf"]),
    ("truncated-header.onnx", c_truncated_header, "the control model cut after 7 bytes, "
     "inside producer_name", "parse", ["truncated"]),
    ("truncated-mid-node.onnx", c_truncated_mid_node, "the control model cut half-way "
     "through the Conv NodeProto", "parse", ["truncated"]),
    ("truncated-mid-initializer.onnx", c_truncated_mid_initializer, "a 16-filter control "
     "model cut half-way through W's raw_data", "parse", ["truncated"]),
    ("length-prefix-huge.onnx", c_length_prefix_huge, "ModelProto.graph's length prefix says "
     "2,147,483,647 bytes, about 1 KB follow (nothing may be allocated from the prefix)",
     "parse", ["truncated"]),
    ("nested-subgraph-deep.onnx", c_nested_deep, "200 If nodes nested through their then_branch "
     "(600+ messages deep): a decoder must stop at a depth limit, not overflow its "
     "stack", "parse", ["nest"]),
    # -- load validation ----------------------------------------------------------------------
    ("no-graph.onnx", c_no_graph, "ModelProto with ir_version and opset but no graph", "load",
     ["no graph"]),
    ("no-opset-import.onnx", c_no_opset_import, "the control model without opset_import "
     "(what a download cut at the graph's end looks like)", "load", ["opset"]),
    ("opset-7.onnx", c_opset(7, 4), "default-domain opset 7 (supported: 11-19); the graph "
     "itself is valid there (IR 4, so initializers need not be graph inputs)", "load",
     ["opset 7"]),
    ("opset-99.onnx", c_opset(99, IR), "default-domain opset 99 (supported: 11-19)", "load",
     ["opset 99"]),
    ("unknown-op-foobar.onnx", c_unknown_op, "node of op_type FooBar in the default domain",
     "load", ["unknown operator foobar"]),
    ("foreign-domain-fusedconv.onnx", c_foreign_domain, "com.microsoft FusedConv (a real ORT "
     "contrib op; ORT runs it, vigil does not)", "load", ["com.microsoft", "fusedconv"]),
    ("no-outputs.onnx", c_no_outputs, "graph with no outputs", "load", ["no outputs"]),
    ("output-not-produced.onnx", c_output_not_produced, "graph output ghost_out is not "
     "produced by any node, initializer or input", "load", ["ghost_out", "not produced"]),
    ("undefined-input.onnx", c_undefined_input, "Add reads tensor ghost, which nothing defines",
     "load", ["ghost", "undefined"]),
    ("cycle.onnx", c_cycle, "Add(images, t2) -> t1, Relu(t1) -> t2: a cycle", "load",
     ["cycle"]),
    ("duplicate-output-names.onnx", c_duplicate_output, "Relu and Sigmoid both produce t_dup",
     "load", ["t_dup", "more than once"]),
    ("tensor-100gb-no-data.onnx", c_huge_tensor(False), "initializer W declares dims "
     "[100000, 100000, 10] float (1e11 elements, 400 GB) and has no data", "load",
     ["declares"]),
    ("tensor-100gb-short-raw.onnx", c_huge_tensor(True), "the same W with 16 bytes of "
     "raw_data", "load", ["declares"]),
    ("tensor-dims-overflow.onnx", c_dims_overflow, "initializer W dims [2^62, 2^62, 16]: "
     "the element count overflows 64 bits", "load", ["overflow"]),
    ("raw-data-length-mismatch.onnx", c_raw_len_mismatch, "W dims [4, 3, 3, 3] float need "
     "432 bytes, raw_data has 400", "load", ["432", "400"]),
    ("negative-dim.onnx", c_negative_dim, "initializer W dims [4, -3, 3, 3]", "load",
     ["negative"]),
    ("external-data-missing.onnx", c_external("weights-missing.bin"), "W is data_location "
     "EXTERNAL at weights-missing.bin, which does not exist", "load", ["external"]),
    ("external-data-path-escape.onnx", c_external("../../../../../../etc/passwd"), "W is "
     "EXTERNAL at ../../../../../../etc/passwd: must be refused without opening it", "load",
     ["external"]),
    ("unknown-data-type.onnx", c_unknown_dtype, "initializer W has data_type 999", "load",
     ["data type", "999"]),
    ("conv-weight-int64.onnx", c_weight_int64, "Conv weight W is int64 (Conv takes float "
     "types)", "load", ["int64"]),
    ("string-input.onnx", c_string_input, "graph input images is of element type string",
     "load", ["string"]),
    ("resize-cubic.onnx", c_resize_cubic, "Resize with mode 'cubic' (valid ONNX, ORT runs "
     "it; vigil takes nearest and linear)", "load", ["cubic"]),
    ("attr-wrong-type.onnx", c_attr_wrong_type, "Conv kernel_shape given as FLOATS "
     "[3.0, 3.0] instead of INTS", "load", ["kernel_shape"]),
    ("conv-missing-weight.onnx", c_conv_missing_weight, "Conv with one input (no weight)",
     "load", ["conv", "input"]),
    ("input-rank-2.onnx", c_input_rank2, "input images is [8, 8] (rank 2); a detector "
     "needs NCHW (rank 4) or one CHW image (rank 3)", "load", ["rank 2"]),
    ("two-inputs.onnx", c_two_inputs, "two graph inputs (images, images2); a detector takes "
     "one", "load", ["2 inputs"]),
    ("huge-input-shape.onnx", c_huge_input, "input images declares [1, 3, 100000, 100000] "
     "(120 GB a frame)", "load", ["100000"]),
    # -- shape resolution ---------------------------------------------------------------------
    ("conv-weight-channels.onnx", c_conv_channels, "Conv W is [4, 5, 3, 3] but images has "
     "3 channels", "shape", ["channels"]),
    ("reshape-count.onnx", c_reshape_count, "Reshape of [1, 3, 8, 8] (192 elements) to "
     "[1, 100]", "shape", ["reshape", "192"]),
    ("concat-mismatch.onnx", c_concat_mismatch, "Concat on axis 1 of [1, 3, 8, 8] and "
     "[1, 2, 4, 4]", "shape", ["concat"]),
    # -- first run ----------------------------------------------------------------------------
    ("gather-index-out-of-range.onnx", c_gather_oob, "Gather on axis 1 (size 3) with index "
     "5 (a constant: may be caught earlier)", "run", ["out of range"]),
]

PHASES = {"parse": "parse", "load": "load validation", "shape": "shape resolution",
          "run": "first run"}


def oracle(fname, data):
    """What onnx.load, onnx.checker and ONNX Runtime say about a file (one line each)."""
    def short(e):
        s = " ".join(str(e).split())
        # ORT's source locations and C++ signatures say nothing about the file.
        s = re.sub(r"/onnxruntime_src/\S+\.(?:cc|h):\d+ (?:[^()]*\([^()]*\)(?: const)? )?", "", s)
        s = re.sub(r"\S+\.cc:\d+ \w+ ", "", s)
        s = re.sub(r"Load model from \S+ failed:", "", s).replace(OUT, "<corpus>")
        return (s[:197] + "...") if len(s) > 200 else s

    try:
        m = onnx.load_from_string(data)
        load = "ok"
    except Exception as e:  # noqa: BLE001
        m, load = None, "error: " + short(e)
    if m is None:
        check = "-"
    else:
        try:
            onnx.checker.check_model(m, full_check=True)
            check = "ok"
        except Exception as e:  # noqa: BLE001
            check = short(e)
    try:
        import onnxruntime as ort
    except ImportError:
        return load, check, "not run (no onnxruntime)"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    try:
        # From the path (relative to the corpus), so external data resolves as it would.
        cwd = os.getcwd()
        os.chdir(OUT)
        try:
            s = ort.InferenceSession(fname, so, providers=["CPUExecutionProvider"])
        finally:
            os.chdir(cwd)
    except Exception as e:  # noqa: BLE001
        return load, check, "session: " + short(e)
    feeds = {}
    for i in s.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type == "tensor(float)" and int(np.prod(shape)) <= 1 << 20:
            feeds[i.name] = np.full(shape, 0.5, np.float32)
        elif i.type == "tensor(string)":
            feeds[i.name] = np.full(shape, "0.5", dtype=object)
        elif i.type == "tensor(bool)":
            feeds[i.name] = np.array(True)
        else:
            return load, check, "session ok; not run (input %s %s %s)" % (i.name, i.type, i.shape)
    try:
        outs = s.run(None, feeds)
        return load, check, "runs: " + ", ".join(str(list(o.shape)) for o in outs)
    except Exception as e:  # noqa: BLE001
        return load, check, "run: " + short(e)


def cell(s):
    return s.replace("|", "\\|")


def main():
    os.makedirs(OUT, exist_ok=True)
    rows, total = [], 0
    for fname, make, what, phase, phrases in CASES:
        assert phrases == [p.lower() for p in phrases], fname
        data = make()
        assert len(data) < 50_000, (fname, len(data))
        total += len(data)
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(data)
        load, check, ort = oracle(fname, data)
        rows.append((fname, len(data), what, phase, phrases, load, check, ort))
        print("%-34s %6d  %-5s %s" % (fname, len(data), phase, ort), file=sys.stderr)
    assert total < 500_000, total

    try:
        import onnxruntime
        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "(not installed)"
    n_bad = len(CASES) - 1
    lines = [
        "# Malformed ONNX corpus (issue 16)",
        "",
        "Generated by `scripts/reference/malformed-onnx.py` (do not edit by hand; edit `CASES` "
        "there and rerun). %d malformed files plus one control (`valid-conv-sigmoid.onnx`), "
        "%s bytes in all, each under 50 KB." % (n_bad, format(total, ",")),
        "",
        "For every malformed file vigil must return an error (never panic, never abort) "
        "without allocating anything near what the file declares (several declare hundreds "
        "of GB, or lengths far past the end of the file), in the phase given or earlier. "
        "The error, lower-cased, must contain every key phrase. The phrases are deliberately "
        "generic; change them here (in `CASES`) along with the messages.",
        "",
        "Phases: **parse** = protobuf decode; **load validation** = checks on the decoded "
        "model (opsets 11-19 of the default domain, known operators, attribute types, tensor "
        "sizes against their data, graph structure, a single NCHW float input); **shape "
        "resolution** = static shapes from the input shape; **first run** = the first "
        "inference.",
        "",
        "| file | bytes | what is wrong | phase | key phrases |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for fname, size, what, phase, phrases, *_ in rows:
        lines.append("| `%s` | %s | %s | %s | %s |" % (
            fname, format(size, ","), cell(what), PHASES.get(phase, phase),
            ", ".join("`%s`" % p for p in phrases) or "-"))
    lines += [
        "",
        "## What the reference tools say",
        "",
        "onnx %s (`onnx.load_from_string`, then `onnx.checker.check_model(full_check=True)`) "
        "and ONNX Runtime %s (CPU, 1 thread, no graph optimizations, the file's path; a run "
        "feeds 0.5 everywhere). A second opinion only: where ORT accepts a file (FusedConv, "
        "cubic Resize, opset 7, rank 2, two inputs, ...) vigil still rejects it, on purpose."
        % (onnx.__version__, ort_version),
        "",
        "Notes: ORT rejects the three huge-initializer files on the Add's broadcast "
        "(`[1, 3, 8, 8]` against the declared dims) before it looks at their size; vigil must "
        "check declared sizes against the data first (load validation precedes shape "
        "resolution). `onnx.load` accepts everything protobuf can decode, so only the parse "
        "cases fail there. ORT's messages are shortened (source locations, C++ signatures and "
        "the `Load model from ... failed:` prefix removed, at most 200 characters).",
        "",
        "| file | onnx.load | onnx.checker | onnxruntime |",
        "| --- | --- | --- | --- |",
    ]
    for fname, _, _, _, _, load, check, ort in rows:
        lines.append("| `%s` | %s | %s | %s |" % (fname, cell(load), cell(check), cell(ort)))
    with open(os.path.join(OUT, "EXPECTED.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%d files, %d bytes -> %s" % (len(CASES), total, OUT), file=sys.stderr)


if __name__ == "__main__":
    main()
