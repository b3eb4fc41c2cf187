#!/usr/bin/env python3
"""Test oracle (never shipped): replays recorded detections through published tracker
implementations and writes their tracks, for vigil's tracker golden tests (tests/it/trackers.rs).

Input: tests/golden/track/vtest_detections.csv (frame,x1,y1,x2,y2,score,class_id).
Output: tests/golden/track/{bytetrack,sort,ocsort}_reference.csv (frame,id,x1,y1,x2,y2).

References (install into a venv; no torch needed):
  pip install "numpy<2" scipy "supervision==0.26.1" "filterpy==1.4.5"
  pip install --no-deps "sort-track==0.0.8" "ocsort==0.0.2"
- ByteTrack: supervision 0.26.1 `ByteTrack.update_with_tensors` (the ifzhang/ByteTrack algorithm;
  IoU without the +1 pixel of cython_bbox, boxes held in float32), high 0.5, buffer 30, match 0.8.
- SORT: sort-track 0.0.8 (abewley/sort's sort.py with scipy's assignment), max_age 1, min_hits 3,
  IoU 0.3.
- OC-SORT: ocsort 0.0.2 (noahcao/OC_SORT's ocsort.py, association.py, kalmanfilter.py), det_thresh
  0.5, max_age 30, min_hits 3, IoU 0.3, delta_t 3, inertia 0.2. Its association reads the score from
  the last column, so detections are passed as x1,y1,x2,y2,score,score (upstream passes 5 columns).
Run from the repository root: python3 scripts/reference/trackers.py
"""
import collections

import numpy as np
import supervision as sv
from ocsort.ocsort import OCSort
from sort.tracker import SortTracker

frames = collections.defaultdict(list)
last = 0
for line in open("tests/golden/track/vtest_detections.csv"):
    if line.startswith("#"):
        continue
    f, x1, y1, x2, y2, s, c = line.strip().split(",")
    frames[int(f)].append([float(x1), float(y1), float(x2), float(y2), float(s), float(c)])
    last = max(last, int(f))


def write(name, rows):
    with open(f"tests/golden/track/{name}_reference.csv", "w") as out:
        out.write(f"# frame,id,x1,y1,x2,y2 — written by scripts/reference/trackers.py\n")
        for r in rows:
            out.write("%d,%d,%.4f,%.4f,%.4f,%.4f\n" % r)


bt = sv.ByteTrack(track_activation_threshold=0.5, lost_track_buffer=30, minimum_matching_threshold=0.8, frame_rate=30)
rows = []
for f in range(1, last + 1):
    d = np.array(frames[f], dtype=np.float64).reshape(-1, 6)
    for t in sorted(bt.update_with_tensors(d[:, :5]), key=lambda t: t.external_track_id):
        x1, y1, x2, y2 = t.tlbr
        rows.append((f, t.external_track_id, x1, y1, x2, y2))
write("bytetrack", rows)

st = SortTracker(max_age=1, min_hits=3, iou_threshold=0.3)
rows = []
for f in range(1, last + 1):
    d = np.array(frames[f], dtype=np.float64).reshape(-1, 6)
    out = st.update(d, None)
    for r in sorted(out.tolist(), key=lambda r: r[4]):
        rows.append((f, int(r[4]), r[0], r[1], r[2], r[3]))
write("sort", rows)


class Tensor(np.ndarray):
    """ocsort 0.0.2 calls .numpy() on its input (it expects torch tensors)."""

    def numpy(self):
        return np.asarray(self)


oc = OCSort(det_thresh=0.5, max_age=30, min_hits=3, iou_threshold=0.3, delta_t=3, asso_func="iou", inertia=0.2)
rows = []
for f in range(1, last + 1):
    d = np.array(frames[f], dtype=np.float64).reshape(-1, 6)
    d = np.column_stack((d[:, :5], d[:, 4])).view(Tensor)
    out = oc.update(d, None)
    for r in sorted(np.asarray(out).tolist(), key=lambda r: r[4]):
        rows.append((f, int(r[4]), r[0], r[1], r[2], r[3]))
write("ocsort", rows)
