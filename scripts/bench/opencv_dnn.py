#!/usr/bin/env python3
"""Baseline for `vigil bench` (never shipped): OpenCV DNN's darknet importer on the same cfg, weights
and input as vigil's detector, timed over repeats on the given number of threads.

Prints one JSON object: {"opencv": version, "median_ms": …, "min_ms": …, "repeats": N, "threads": T}.
Needs OpenCV 4.x with the darknet importer (`pip install "opencv-python-headless<5"`).
"""
import argparse
import json
import statistics
import time

import cv2

ap = argparse.ArgumentParser()
ap.add_argument("--cfg", required=True)
ap.add_argument("--weights", required=True)
ap.add_argument("--video", required=True)
ap.add_argument("--size", type=int, default=416)
ap.add_argument("--repeats", type=int, default=30)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

cv2.setNumThreads(a.threads)
net = cv2.dnn.readNetFromDarknet(a.cfg, a.weights)
net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
ok, frame = cv2.VideoCapture(a.video).read()
if not ok:
    raise SystemExit(f"cannot read a frame from {a.video}")
blob = cv2.dnn.blobFromImage(frame, 1 / 255.0, (a.size, a.size), swapRB=True, crop=False)
names = net.getUnconnectedOutLayersNames()
for _ in range(3):
    net.setInput(blob)
    net.forward(names)
times = []
for _ in range(a.repeats):
    t = time.perf_counter()
    net.setInput(blob)
    net.forward(names)
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"opencv": cv2.__version__, "median_ms": statistics.median(times), "min_ms": min(times),
                  "repeats": a.repeats, "threads": a.threads}))
