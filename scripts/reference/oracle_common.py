"""Helpers the export scripts share (test oracles, never part of vigil): the fixed input pattern,
ONNX Runtime's reference session, the strided samples of large maps kept in goldens, and the
golden file itself."""
import hashlib
import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort


def pattern(shape):
    """Element i of the flattened tensor is ((i * 2654435761) mod 2^32) / 2^32."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.uint64)
    v = ((i * np.uint64(2654435761)) % np.uint64(2**32)).astype(np.float64) / 2**32
    return v.astype(np.float32).reshape(shape)


def reference_session(path):
    """ONNX Runtime on the CPU, graph optimizations off, one thread: the reference run."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sample(o, most=500):
    """A strided sample of at most `most` values, with the stride and the largest magnitude."""
    flat = o.reshape(-1)
    stride = max(1, len(flat) // most)
    return {"shape": list(o.shape), "stride": stride, "max_abs": float(np.abs(flat).max()),
            "values": [float(v) for v in flat[::stride][:most]]}


def write_golden(out_dir, name, path, source, size, opset, reference, dets, maps, **extra):
    """tests/golden/onnx/detectors/<name>.json: the file's SHA-256 and operators, the reference
    detections (rows x1, y1, x2, y2, score, class) and samples of every map."""
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    meta = {
        "model": name,
        "source": source,
        "onnx": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "opset": opset,
        "input_size": size,
        "ops": dict(sorted(ops.items())),
        "reference": reference % ort.__version__,
        "outputs": {"detections": {"name": "detections", "shape": list(dets.shape),
                                   "values": [float(v) for v in dets.reshape(-1)]}},
        **extra,
        "heads": {n: sample(o) for n, o in maps.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=0) + "\n")
    return sum(ops.values())
