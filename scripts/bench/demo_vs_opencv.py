#!/usr/bin/env python3
"""`make bench`'s headline (issue 21; never shipped): `vigil run pipelines/demo.yaml` against the
OpenCV loop of opencv_loop.py on the same video, model and output size, alternating, ROUNDS times
each, in one run. Prints each time and the ratio (goal: vigil ≥ 1.5× faster)."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

root = pathlib.Path(__file__).resolve().parents[2]
rounds = int(os.environ.get("ROUNDS", "2"))
assets = root / "assets"
loop = [sys.executable, str(root / "scripts/bench/opencv_loop.py"), "--cfg", str(root / "models/yolov3-tiny.cfg"),
        "--weights", str(assets / "yolov3-tiny.weights"), "--names", str(root / "models/coco.names"),
        "--video", str(assets / "vtest.avi")]
vigil, opencv = [], []
with tempfile.TemporaryDirectory() as tmp:
    for r in range(rounds):
        t = time.perf_counter()
        subprocess.run([str(root / "target/release/vigil"), "-q", "run", str(root / "pipelines/demo.yaml")],
                       check=True, cwd=root, stderr=subprocess.DEVNULL)
        vigil.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = subprocess.run(loop + ["--out", f"{tmp}/loop.mp4"], check=True, capture_output=True, text=True)
        opencv.append(time.perf_counter() - t)
        info = json.loads(out.stdout)
        print(f"round {r + 1}: vigil demo {vigil[-1]:.1f} s, OpenCV loop {opencv[-1]:.1f} s "
              f"({info['frames']} frames, OpenCV {info['opencv']}, 2 threads)", flush=True)
best_v, best_o = min(vigil), min(opencv)
print(f"demo: vigil {best_v:.1f} s vs OpenCV loop {best_o:.1f} s (best of {rounds}): vigil is "
      f"{best_o / best_v:.2f}x as fast (goal 1.5x)")
