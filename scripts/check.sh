#!/usr/bin/env bash
# The whole test suite: README's test command (`make check`) runs this.
# Layers that need the nightly toolchain (Miri, the TSan-instrumented
# library) install it with rustup first (scripts/nightly.sh, as .ci/run);
# only when rustup cannot do that do they print a loud SKIP line.
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
# shellcheck source=scripts/nightly.sh
. scripts/nightly.sh

step "nightly toolchain with miri and rust-src (rustup)"
ensure_nightly || skip "rustup could not install the nightly toolchain with miri and rust-src: the Miri and TSan layers will SKIP"

step "cargo test (unit, integration, header drift, stress, benches in quick mode)"
cargo test --release --all-targets

step "deflate backends libdeflate and system zlib: wire compatibility both ways (tests/pool_backends.rs)"
cargo test --release --features libdeflate,system-zlib --test pool_backends --test pool_fuzz

step "doctests of the public Rust API (--all-targets does not run them)"
cargo test --release --doc -p vmig

step "vmig-legacy: the QEMU 7.2 replicas and the simulated KVM dirty ring"
cargo test --release -p vmig-legacy

step "vmig::kvm against /dev/kvm (feature kvm; SKIPs loudly without it)"
cargo test --release --features kvm --test kvm_harvest

step "vmig-sim: unit tests and short whole-migration scenarios"
cargo test --release -p vmig-sim

step "loom models of the pool's sleep/wake hand-off (tests/loom_pool.rs)"
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg vmig_loom" LOOM_MAX_PREEMPTIONS=3 \
  cargo test --release --test loom_pool

step "loom models of the ring (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2} RUSTFLAGS="--cfg vmig_loom" \
  cargo test --release --test loom_ring --target-dir target/loom

step "loom models of the postcopy page maps (tests/loom_postcopy.rs)"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2} RUSTFLAGS="--cfg vmig_loom" \
  cargo test --release --test loom_postcopy --target-dir target/loom
step "loom models of the dirty-page scheduler (tests/loom_dirty.rs, LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3})"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} RUSTFLAGS="--cfg vmig_loom" \
  cargo test --release --test loom_dirty --target-dir target/loom

step "Miri: ring unit tests and the Miri-sized stress (strict provenance)"
if has_nightly_component miri && has_nightly_component rust-src; then
  MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" cargo +nightly miri test --lib ring::
  MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" cargo +nightly miri test --test ring_stress
else
  skip "Miri: the nightly toolchain with miri and rust-src could not be installed (see above)"
fi

step "C tests: header as C11 and C++, plain, ASan+UBSan, TSan"
cargo build --release --lib
scripts/c-tests.sh

step "install: SONAME, exported symbols, pkg-config shared and static"
scripts/install-test.sh
