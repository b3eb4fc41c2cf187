#!/usr/bin/env python3
"""The LiteRT interpreter's latency on a TFLite model (default op resolver: XNNPACK on): the
baseline `vigil bench --model X.tflite` prints beside vigil's. A test oracle, never part of vigil.
Run with the venv scripts/reference/tflite-reference builds:
  .venv-tflite/bin/python scripts/bench/litert_bench.py MODEL.tflite --threads 2
The input is the pattern vigil's side uses: element i is (i * 7919) % 251. Prints `median_ms X`.
"""
import argparse
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--repeats", type=int, default=30)
a = ap.parse_args()

it = Interpreter(a.model, num_threads=a.threads)
it.allocate_tensors()
inp = it.get_input_details()[0]
n = int(np.prod(inp["shape"]))
x = ((np.arange(n, dtype=np.int64) * 7919) % 251).astype(np.uint8)
if inp["dtype"] == np.int8:
    x = (x.astype(np.int16) - 128).astype(np.int8)
x = x.reshape(inp["shape"])
for _ in range(3):
    it.set_tensor(inp["index"], x)
    it.invoke()
times = []
for _ in range(max(1, a.repeats)):
    t0 = time.perf_counter()
    it.set_tensor(inp["index"], x)
    it.invoke()
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(f"median_ms {times[len(times) // 2]:.3f}")
