#!/usr/bin/env bash
# The whole test suite: README's test command (`make check`) runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "cargo test (unit, integration, header drift, stress)"
cargo test --release --all-targets

step "vmig-sim: unit tests and short whole-migration scenarios"
cargo test --release -p vmig-sim

step "loom models of the pool's sleep/wake hand-off (tests/loom_pool.rs)"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
  cargo test --release --test loom_pool

step "C tests: C++ header, plain, ASan+UBSan, TSan"
cargo build --release --lib
scripts/c-tests.sh
