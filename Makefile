# vigil: `make demo` and `make test` do all the set-up on a fresh Debian 12 machine.
SHELL := /bin/bash
CARGO ?= cargo
export VIGIL_ASSETS_MIRROR ?= $(if $(wildcard ../shared/assets/SHA256SUMS),$(abspath ../shared/assets),)

.PHONY: demo test deps assets build bench lint clean

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
test: deps assets
	$(CARGO) test --release --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --locked -- -D warnings

clean:
	rm -rf out
	$(CARGO) clean
