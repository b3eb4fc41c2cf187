"""Reference outputs of the quantized COCO SSD MobileNet v2 from the LiteRT interpreter as installed
(PyPI ai-edge-litert 2.3.0, default op resolver: XNNPACK on, 2 threads), written as the golden
tests/golden/tflite/ssd-mobilenet-v2.json. A test oracle only: vigil never runs it.

Inputs: assets/images/*.jpg (OpenCV imread) and vtest.avi frames 0, 40, ..., 760 (decoded by
GStreamer as vigil's ingest does), converted BGR->RGB and resized to 300x300 with OpenCV's bilinear resize (what vigil's `resize: stretch` does), uint8 as is. Each case
records the SHA-256 of that input, so the test knows when vigil fed the interpreter's exact bytes.

Also measured and written: how far TFLite's reference kernels (BUILTIN_REF) are from the
default kernels on the same input, and the interpreter's time per image.
"""
import hashlib, json, subprocess, sys, time
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

root = Path(__file__).resolve().parents[2]
assets = root / "assets"
model = assets / "ssd-mobilenet-v2/mobilenet_ssd_v2_coco_quant_postprocess.tflite"
out = root / "tests/golden/tflite/ssd-mobilenet-v2.json"


def interpreter(resolver, preserve=False):
    it = Interpreter(str(model), num_threads=2, experimental_op_resolver_type=resolver,
                     experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def run(it, x):
    it.set_tensor(it.get_input_details()[0]["index"], x[None])
    it.invoke()
    boxes, classes, scores, count = (it.get_tensor(o["index"]) for o in it.get_output_details())
    n = int(count[0])
    return [{"class_id": int(classes[0][i]), "score": float(scores[0][i]),
             "box": [float(v) for v in boxes[0][i]]} for i in range(n)]


def prepare(bgr):
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (300, 300), interpolation=cv2.INTER_LINEAR)


def cases():
    for p in sorted((assets / "images").glob("*.jpg")):
        yield f"images/{p.name}", cv2.imread(str(p))
    # decoded as vigil's ingest decodes (uridecodebin ! videoconvert ! BGR): OpenCV's FFmpeg
    # backend converts YUV to BGR with other rounding, which moves small boxes by a quantization step
    w, h = 768, 576
    gst = subprocess.Popen(
        ["gst-launch-1.0", "-q", "uridecodebin", f"uri={(assets / 'vtest.avi').as_uri()}", "!",
         "videoconvert", "!", "video/x-raw,format=BGR", "!", "fdsink", "fd=1"],
        stdout=subprocess.PIPE)
    for i in range(761):
        raw = gst.stdout.read(w * h * 3)
        if len(raw) < w * h * 3:
            break
        if i % 40 == 0:
            yield f"vtest.avi#{i}", np.frombuffer(raw, np.uint8).reshape(h, w, 3)
    gst.kill()
    gst.wait()


def main():
    auto = interpreter(OpResolverType.AUTO)
    ref = interpreter(OpResolverType.BUILTIN_REF)
    result = {"interpreter": "ai-edge-litert 2.3.0, OpResolverType.AUTO (XNNPACK), 2 threads",
              "input": "images: cv2.imread; vtest: uridecodebin ! videoconvert ! BGR; then BGR->RGB, cv2.resize 300x300 INTER_LINEAR, uint8", "cases": []}
    same_as_ref = 0
    for name, bgr in cases():
        x = prepare(bgr)
        dets = run(auto, x)
        same_as_ref += dets == run(ref, x)
        result["cases"].append({"name": name, "size": [bgr.shape[1], bgr.shape[0]],
                                "input_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
                                "detections": dets})
    result["reference_kernels_give_the_same_detections"] = f"{same_as_ref} of {len(result['cases'])} cases"
    x = prepare(cv2.imread(str(assets / "images/person.jpg")))
    for _ in range(5):
        run(auto, x)
    t = time.perf_counter()
    for _ in range(50):
        run(auto, x)
    result["litert_ms_per_image"] = round((time.perf_counter() - t) / 50 * 1000, 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}: {len(result['cases'])} cases; reference kernels agree on {same_as_ref}; "
          f"LiteRT {result['litert_ms_per_image']} ms/image")


if __name__ == "__main__":
    sys.exit(main())
