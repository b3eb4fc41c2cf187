#!/usr/bin/env python3
"""Test oracle (never shipped): OpenCV DNN's darknet importer on the same weights and cfg as vigil,
with the preprocessing the assets README describes (blobFromImage: 1/255, 416x416 stretch, RGB),
confidence 0.25, NMS 0.45 per class. Prints one JSON object per image; the output is committed as
tests/golden/opencv_dnn_yolov3_tiny.jsonl and read by tests/detect_parity.rs.

Run once: python3 scripts/reference/opencv_dnn_detect.py assets/images/{person,dog}.jpg
(needs `pip install "opencv-python-headless<5"` or Debian's python3-opencv: OpenCV 5 dropped darknet).
"""
import json
import sys

import cv2
import numpy as np

CONF, NMS, SIZE = 0.25, 0.45, 416

net = cv2.dnn.readNetFromDarknet("models/yolov3-tiny.cfg", "assets/yolov3-tiny.weights")
names = [l.strip() for l in open("models/coco.names") if l.strip()]
for path in sys.argv[1:]:
    img = cv2.imread(path)
    h, w = img.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(img, 1 / 255.0, (SIZE, SIZE), swapRB=True, crop=False))
    per_class = {}
    for out in net.forward(net.getUnconnectedOutLayersNames()):
        for d in out:
            for c in np.nonzero(d[5:] >= CONF)[0]:
                cx, cy, bw, bh = (float(v) for v in (d[0] * w, d[1] * h, d[2] * w, d[3] * h))
                per_class.setdefault(int(c), []).append(([cx - bw / 2, cy - bh / 2, bw, bh], float(d[5 + c])))
    dets = []
    for c, items in sorted(per_class.items()):
        boxes = [b for b, _ in items]
        scores = [s for _, s in items]
        for i in np.array(cv2.dnn.NMSBoxes(boxes, scores, CONF, NMS)).flatten():
            x, y, bw, bh = boxes[i]
            dets.append({"class": names[c], "class_id": c, "score": round(scores[i], 4),
                         "box": [round(x, 1), round(y, 1), round(x + bw, 1), round(y + bh, 1)]})
    dets.sort(key=lambda d: -d["score"])
    print(json.dumps({"image": path.split("/")[-1], "opencv": cv2.__version__, "detections": dets}))
