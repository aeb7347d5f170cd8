# hybridboot developer entry points. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export HYBRIDBOOT_VENV ?= $(HOME)/.cache/hybridboot/venv

.PHONY: help setup build test lint bench run clean static dynamic dist-test vm-test fuzz

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

setup: ## install system packages and the test peers (idempotent)
	@bash scripts/setup.sh

build: ## debug build of the binary (all backends)
	$(CARGO) build --locked

test: setup ## every test: unit, CLI, and against real peers (swtpm, SoftHSM2, ...)
	@# The VM test's Debian root (minutes to debootstrap when not cached) builds meanwhile;
	@# vm-test's own call waits for it (the script holds a lock) or finds it cached.
	mkdir -p target && (bash tests/vm/setup.sh && bash tests/vm/build-debian-root.sh) >target/vm-root.log 2>&1 &
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --features tpm-native --lib
	$(CARGO) test --locked --features tpm-native --test tests tpm_native::
	$(CARGO) build --locked --no-default-features
	@if ls tests/peers/test_*.py >/dev/null 2>&1; then $(HYBRIDBOOT_VENV)/bin/python -m pytest -q tests/peers; fi
	$(MAKE) dist-test
	$(MAKE) vm-test

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --no-default-features -- -D warnings
	$(CARGO) clippy --locked --all-targets --features tpm-native -- -D warnings
	$(CARGO) clippy --locked --all-targets --no-default-features --features tpm-native -- -D warnings

bench: setup ## benchmarks; results in target/bench/
	$(CARGO) build --locked --release
	bash scripts/bench.sh

run: setup ## the main job on the embedded default (local swtpm); see README
	$(CARGO) build --locked
	bash scripts/run-main.sh

fuzz: ## cargo-fuzz every parser FUZZ_SECONDS (180) each; crashes land in fuzz/corpus/ as regressions
	bash scripts/fuzz.sh

clean:
	$(CARGO) clean

static: ## fully static musl binaries (x86_64, aarch64) into target/dist/
	bash cross/setup.sh
	bash cross/build.sh static

dynamic: ## glibc-2.17 binaries with every backend into target/dist/
	bash cross/setup.sh
	bash cross/build.sh dynamic

dist-test: ## builds the dynamic binaries, checks glibc 2.17 and every backend on both arches
	bash cross/setup.sh
	bash cross/build.sh dynamic
	$(CARGO) test --locked --test tests dist:: -- --ignored --nocapture

vm-test: ## aarch64 and x86_64 QEMU guests with swtpm run first boot to the joined stamp (builds the static binaries)
	bash cross/setup.sh
	bash cross/build.sh static
	bash tests/vm/setup.sh
	$(CARGO) test --locked --test tests vm:: -- --ignored --nocapture
