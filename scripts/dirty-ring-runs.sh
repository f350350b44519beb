#!/usr/bin/env bash
# Runs migration-test's /x86_64/migration/dirty_ring N times per binary, the
# binaries interleaved, one log per run; prints pass counts (issue 16,
# docs/dirty-ring-bug.md).  With TRACE=1 each run also records the kernel's
# kvm_dirty_ring_{push,exit,reset} events (tracefs) into its own file.
#
# Usage: scripts/dirty-ring-runs.sh N OUTDIR MIGRATION_TEST LIBDIR TAG=BINARY...
set -uo pipefail
n=$1 out=$2 mtest=$3 libdir=$4
shift 4
mkdir -p "$out"
tr=/sys/kernel/tracing
declare -A pass
for spec in "$@"; do pass[${spec%%=*}]=0; done
for i in $(seq 1 "$n"); do
    for spec in "$@"; do
        tag=${spec%%=*} bin=${spec#*=}
        log=$out/$tag.$i.log
        if [ "${TRACE:-0}" = 1 ]; then
            echo 0 > $tr/tracing_on; echo > $tr/trace
            for e in kvm_dirty_ring_push kvm_dirty_ring_exit kvm_dirty_ring_reset; do
                echo 1 > $tr/events/kvm/$e/enable
            done
            echo 1 > $tr/tracing_on
        fi
        t0=$(date +%s.%N)
        LD_LIBRARY_PATH=$libdir QTEST_QEMU_BINARY=$bin QTEST_QEMU_BINARY_SRC=$bin \
            QTEST_QEMU_BINARY_DST=$bin timeout -k 10 300 "$mtest" --tap \
            -p /x86_64/migration/dirty_ring > "$log" 2>&1
        rc=$?
        secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        if [ "${TRACE:-0}" = 1 ]; then
            echo 0 > $tr/tracing_on
            grep -v '^#' $tr/trace | gzip > "$out/$tag.$i.trace.gz"
        fi
        if [ $rc -eq 0 ] && grep -q "^ok " "$log"; then
            res=pass; pass[$tag]=$((pass[$tag] + 1))
        else
            res="FAIL ($(grep -m1 -oE 'Memory content inconsistency at [0-9a-f]+|Assertion.*|Aborted|timeout' "$log" || echo rc=$rc))"
        fi
        printf '%s run %d %-8s %5.1fs %s\n' "$(date -u +%H:%M:%S)" "$i" "$tag" "$secs" "$res"
    done
done
for spec in "$@"; do tag=${spec%%=*}; echo "$tag: ${pass[$tag]}/$n passed"; done
