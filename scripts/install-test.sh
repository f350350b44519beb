#!/usr/bin/env bash
# `make install PREFIX=<tmp>`, then build a C program against the installed
# ring with `pkg-config --cflags --libs vmig`, shared and --static; check the
# SONAME and that libvmig.so exports only vmig_* functions.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-gcc}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix" >/dev/null

# make install honours CARGO_TARGET_DIR (packaging environments set it):
# it must install what cargo built there, not target/release.
plan=$(make -n install PREFIX="$prefix/alt" CARGO_TARGET_DIR=/nonexistent/tgt)
echo "$plan" | grep -q '/nonexistent/tgt/release/libvmig.so ' &&
  ! echo "$plan" | grep -q ' target/release/' ||
  { echo "install-test: make install ignores CARGO_TARGET_DIR:" >&2; echo "$plan" >&2; exit 1; }
CARGO_TARGET_DIR=$PWD/target make -s install PREFIX="$prefix/alt" >/dev/null
cmp "$prefix/alt/lib/libvmig.a" target/release/libvmig.a ||
  { echo "install-test: CARGO_TARGET_DIR install differs" >&2; exit 1; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
lib=$prefix/lib/libvmig.so

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libvmig.so.0 ] || { echo "install-test: SONAME is '$soname', want libvmig.so.0" >&2; exit 1; }
[ -e "$prefix/lib/libvmig.so.0" ] || { echo "install-test: libvmig.so.0 link missing" >&2; exit 1; }

# Exported: only vmig_* functions (no Rust std or dependency symbols).
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^vmig_' || true)
[ -z "$bad" ] || { echo "install-test: non-vmig symbols exported:" $bad >&2; exit 1; }
nm -D --defined-only "$lib" | awk '$2 != "T" { bad = 1; print "install-test: not a function:", $0 } END { exit bad }' >&2

cat > "$prefix/ring-demo.c" <<'C'
#include <stdio.h>
#include <vmig.h>
int main(void)
{
    int a = 1, b = 2;
    vmig_ring *r = vmig_ring_new(8, VMIG_RING_MP);
    if (!r || vmig_ring_enqueue(r, &a) || vmig_ring_enqueue(r, &b)) return 1;
    int ok = vmig_ring_dequeue(r) == &a && vmig_ring_dequeue(r) == &b && !vmig_ring_dequeue(r);
    vmig_ring_free(r);
    printf("ring-demo (vmig %s): %s\n", vmig_version(), ok ? "ok" : "FAILED");
    return !ok;
}
C
# shellcheck disable=SC2046 # pkg-config output is meant to be split
"$CC" -std=c11 -Wall -Wextra -Werror "$prefix/ring-demo.c" -o "$prefix/demo-shared" $(pkg-config --cflags --libs vmig)
LD_LIBRARY_PATH=$prefix/lib "$prefix/demo-shared"
readelf -d "$prefix/demo-shared" | grep 'NEEDED.*libvmig.so.0' >/dev/null || { echo "install-test: demo does not need libvmig.so.0" >&2; exit 1; }
# Fully static: glibc warns about getaddrinfo & co. in Rust's std, which
# the ring never calls; show the linker output only on failure.
# shellcheck disable=SC2046
if ! "$CC" -std=c11 -Wall -Wextra -Werror "$prefix/ring-demo.c" -o "$prefix/demo-static" -static \
     $(pkg-config --static --cflags --libs vmig) 2>"$prefix/static.log"; then
  cat "$prefix/static.log" >&2; exit 1
fi
"$prefix/demo-static"

# The inline fast path's header is installed beside vmig.h and works from there.
cat > "$prefix/ring-inline-demo.c" <<'C'
#include <stdio.h>
#include <vmig_ring_inline.h>
int main(void)
{
    int a = 1;
    void *out = NULL;
    vmig_ring *r = vmig_ring_new(8, 0);
    vmig_ring_producer *p = vmig_ring_producer_new(r);
    vmig_ring_consumer *c = vmig_ring_consumer_new(r);
    vmig_ring_producer_fast *pf = vmig_ring_producer_fast_view(p);
    vmig_ring_consumer_fast *cf = vmig_ring_consumer_fast_view(c);
    int ok = pf && cf && vmig_ring_fast_enqueue(pf, &a) == 0 && vmig_ring_fast_dequeue(cf, &out) == 0 && out == &a;
    vmig_ring_producer_free(p);
    vmig_ring_consumer_free(c);
    vmig_ring_free(r);
    printf("ring-inline-demo: %s\n", ok ? "ok" : "FAILED");
    return !ok;
}
C
# shellcheck disable=SC2046
"$CC" -std=c11 -Wall -Wextra -Werror "$prefix/ring-inline-demo.c" -o "$prefix/inline-demo" $(pkg-config --cflags --libs vmig)
LD_LIBRARY_PATH=$prefix/lib "$prefix/inline-demo"
echo "install-test: SONAME, exports, pkg-config shared and static, vmig_ring_inline.h: ok"
