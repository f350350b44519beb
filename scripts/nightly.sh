# Sourced by scripts/check.sh and .ci/run: makes sure the nightly toolchain
# with miri and rust-src is there (Miri, and the TSan-instrumented libvmig
# that the C TSan tests link against need it), installing it with rustup.
# An installed nightly is only completed, not updated, so runs stay
# repeatable. Returns non-zero, after saying why on stderr, only when
# rustup is missing or cannot install it; callers then SKIP those layers.
ensure_nightly() {
  if ! command -v rustup >/dev/null; then
    echo "nightly: rustup is not installed" >&2
    return 1
  fi
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup component add --toolchain nightly miri rust-src >&2 || return 1
  else
    rustup toolchain install nightly --profile minimal --component miri,rust-src >&2 || return 1
  fi
  # Builds Miri's sysroot once; later runs find it ready.
  cargo +nightly miri setup >/dev/null 2>&1 || { echo "nightly: cargo miri setup failed" >&2; return 1; }
}
