#!/usr/bin/env python3
"""ONNX Runtime's latency on a model: the baseline `vigil bench --model` prints beside vigil's.

ONNX Runtime is a test oracle, never part of vigil. Run with the venv scripts/reference/onnx-venv
builds: .venv-onnx/bin/python scripts/bench/ort_bench.py MODEL.onnx --shape 1,3,640,640
Prints `median_ms X`.
"""
import argparse
import time

import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--shape", required=True, help="input shape, e.g. 1,3,640,640")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=30)
a = ap.parse_args()

opts = ort.SessionOptions()
opts.intra_op_num_threads = a.threads
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
shape = [int(v) for v in a.shape.split(",")]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
name = sess.get_inputs()[0].name
for _ in range(3):
    sess.run(None, {name: x})
times = []
for _ in range(max(1, a.repeats)):
    t0 = time.perf_counter()
    sess.run(None, {name: x})
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(f"median_ms {times[len(times) // 2]:.3f}")
