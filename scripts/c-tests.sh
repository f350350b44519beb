#!/usr/bin/env bash
# Builds every c-tests/test_*.c against the release libvmig and runs it:
#   plain    -std=c11 -Wall -Wextra -Wpedantic -Werror, linked to libvmig.so
#   asan     -fsanitize=address,undefined, linked to libvmig.a
#   tsan     -fsanitize=thread, linked to a TSan-instrumented libvmig.a
#            (target/tsan, built here with nightly -Zsanitizer=thread
#            -Zbuild-std: TSan cannot see the atomics of an uninstrumented
#            Rust library and would report false races on the items' payloads)
#   backends test_comp.c again, plain, against a libvmig.so built with the
#            libdeflate and system-zlib features (the other modes link the
#            default build, where test_comp SKIPs those two backends)
# The header is also compiled as C11 and as C++ (-Wall -Wextra -Werror).
# Usage: scripts/c-tests.sh [plain|asan|tsan|cxx|backends]...   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
out=c-tests/build
mkdir -p "$out"
lib=target/release
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(cxx plain asan tsan backends)
CC=${CC:-gcc}
CXX=${CXX:-g++}
warn=(-std=c11 -Wall -Wextra -Wpedantic -Werror -g -Iinclude -Ic-tests)
# -lz: the pool tests check wire compatibility against system zlib.
libs=(-lpthread -ldl -lm -lz)
# The cdylib's SONAME is libvmig.so.0; give the loader that name.
ln -sf "$PWD/$lib/libvmig.so" "$out/libvmig.so.0"
fail=0
pass=0
for mode in "${modes[@]}"; do
  case $mode in
    cxx)
      printf '#include "vmig.h"\nint main(void) { return vmig_version() ? 0 : 1; }\n' > "$out/header.c"
      cp "$out/header.c" "$out/header.cc"
      "$CC" -std=c11 -Wall -Wextra -Wpedantic -Werror -Iinclude "$out/header.c" -o "$out/header-c" -L"$lib" -l:libvmig.a "${libs[@]}"
      "$CXX" -std=c++11 -Wall -Wextra -Werror -Iinclude "$out/header.cc" -o "$out/header-cxx" -L"$lib" -l:libvmig.a "${libs[@]}"
      "$out/header-c" && "$out/header-cxx"
      echo "c-tests: header compiles as C11 and as C++11: ok"
      continue ;;
    plain) flags=(-O1); link=(-L"$lib" -lvmig -Wl,-rpath,"$PWD/$out") ;;
    backends)
      # Same profile and features as make check's backend wire tests, so
      # only vmig itself is compiled again; the default build's artifact
      # stays in target/release/deps and is put back below.
      cargo build -q --release --lib --features libdeflate,system-zlib
      mkdir -p "$out/backends"
      cp "$lib/libvmig.so" "$out/backends/libvmig.so.0"
      cargo build -q --release --lib
      bin="$out/test_comp-backends"
      "$CC" "${warn[@]}" -O1 c-tests/test_comp.c -o "$bin" -L"$lib" -lvmig -Wl,-rpath,"$PWD/$out/backends" "${libs[@]}"
      if VMIG_TEST_MODE=$mode "$bin" 2> "$out/test_comp-backends.err" && ! grep SKIP "$out/test_comp-backends.err" >/dev/null; then
        echo "c-tests: test_comp [backends: zlib-rs, libdeflate, system zlib]: ok"; pass=$((pass+1))
      else
        cat "$out/test_comp-backends.err" >&2
        echo "c-tests: test_comp [backends]: FAILED (or a backend was missing)" >&2; fail=$((fail+1))
      fi
      continue ;;
    asan)  flags=(-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all); link=("$lib/libvmig.a") ;;
    tsan)
      tsan_lib=target/tsan/x86_64-unknown-linux-gnu/release/libvmig.a
      if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep '^rust-src' >/dev/null ||
         ! RUSTFLAGS=-Zsanitizer=thread cargo +nightly build -q -Zbuild-std --target x86_64-unknown-linux-gnu \
           --release --lib --target-dir target/tsan; then
        echo "c-tests: ************************************************************" >&2
        echo "c-tests: SKIP tsan: could not build a TSan-instrumented libvmig.a" >&2
        echo "c-tests: (needs the nightly toolchain with rust-src: scripts/nightly.sh, run by make check, installs it)" >&2
        echo "c-tests: ************************************************************" >&2
        continue
      fi
      flags=(-O1 -fsanitize=thread); link=(c-tests/support/tsan_mem.c "$tsan_lib") ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  for src in c-tests/test_*.c; do
    name=$(basename "$src" .c)
    bin="$out/$name-$mode"
    "$CC" "${warn[@]}" "${flags[@]}" "$src" -o "$bin" "${link[@]}" "${libs[@]}"
    if [ "$mode" = asan ] && ! nm "$bin" | grep __asan_init >/dev/null; then
      echo "c-tests: $bin is not linked with ASan" >&2; exit 1
    fi
    if VMIG_TEST_MODE=$mode "$bin"; then
      echo "c-tests: $name [$mode]: ok"; pass=$((pass+1))
    else
      echo "c-tests: $name [$mode]: FAILED" >&2; fail=$((fail+1))
    fi
  done
done
echo "c-tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
