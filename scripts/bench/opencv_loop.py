#!/usr/bin/env python3
"""The peer of `vigil run pipelines/demo.yaml` (issue 21; never shipped): what a user writes in an
afternoon with OpenCV — capture → cv2.dnn YOLOv3-tiny (stretch to 416) → NMS → draw → mp4v
VideoWriter, every frame, 2 threads. Prints one JSON object: frames, seconds, fps."""
import argparse
import json
import time

import cv2
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--cfg", required=True)
ap.add_argument("--weights", required=True)
ap.add_argument("--names", required=True)
ap.add_argument("--video", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

cv2.setNumThreads(a.threads)
names = open(a.names).read().split("\n")
net = cv2.dnn.readNetFromDarknet(a.cfg, a.weights)
layers = net.getUnconnectedOutLayersNames()
cap = cv2.VideoCapture(a.video)
w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
out = cv2.VideoWriter(a.out, cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS) or 10, (w, h))
start, frames = time.perf_counter(), 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    net.setInput(cv2.dnn.blobFromImage(frame, 1 / 255.0, (416, 416), swapRB=True, crop=False))
    boxes, scores, classes = [], [], []
    for o in np.vstack(net.forward(layers)):
        c = int(np.argmax(o[5:]))
        s = float(o[4] * o[5 + c])
        if s >= 0.25:
            cx, cy, bw, bh = o[0] * w, o[1] * h, o[2] * w, o[3] * h
            boxes.append([int(cx - bw / 2), int(cy - bh / 2), int(bw), int(bh)])
            scores.append(s)
            classes.append(c)
    for i in np.array(cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)).flatten():
        x, y, bw, bh = boxes[i]
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), (0, 255, 0), 2)
        cv2.putText(frame, f"{names[classes[i]]} {scores[i]:.2f}", (x, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
    out.write(frame)
    frames += 1
out.release()
secs = time.perf_counter() - start
print(json.dumps({"frames": frames, "seconds": secs, "fps": frames / secs, "opencv": cv2.__version__}))
