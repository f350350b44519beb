#!/usr/bin/env bash
# The whole test suite: README's test command (`make check`) runs this.
# Layers that need the nightly toolchain (Miri, the TSan-instrumented
# library) print a loud SKIP line when it is missing; .ci/run installs it.
# LOOM_MAX_PREEMPTIONS (default 2) bounds the loom models.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }
skip() {
  printf '\n****************************************************************\n' >&2
  printf 'SKIP: %s\n' "$*" >&2
  printf '****************************************************************\n' >&2
}
has_nightly_component() { rustup component list --toolchain nightly --installed 2>/dev/null | grep "^$1" >/dev/null; }

step "cargo test (unit, integration, header drift, stress, benches in quick mode)"
cargo test --release --all-targets

step "vmig::kvm against /dev/kvm (feature kvm; SKIPs loudly without it)"
cargo test --release --features kvm --test kvm_harvest

step "vmig-sim: unit tests and short whole-migration scenarios"
cargo test --release -p vmig-sim

step "loom models of the pool's sleep/wake hand-off (tests/loom_pool.rs)"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
  cargo test --release --test loom_pool

step "loom models of the ring (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2} RUSTFLAGS="--cfg loom" \
  cargo test --release --test loom_ring --target-dir target/loom

step "Miri: ring unit tests and the Miri-sized stress (strict provenance)"
if has_nightly_component miri && has_nightly_component rust-src; then
  MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" cargo +nightly miri test --lib ring::
  MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" cargo +nightly miri test --test ring_stress
else
  skip "Miri: the nightly toolchain with miri and rust-src is not installed (.ci/run installs it)"
fi

step "C tests: header as C11 and C++, plain, ASan+UBSan, TSan"
cargo build --release --lib
scripts/c-tests.sh

step "install: SONAME, exported symbols, pkg-config shared and static"
scripts/install-test.sh
