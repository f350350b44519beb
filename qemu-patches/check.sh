#!/usr/bin/env bash
# Proves the QEMU 7.2 series in qemu-patches/7.2/ on this machine:
#   1. installs the build dependencies, Debian's stock qemu-system-x86 and
#      the firmware packages (apt; a deb-src entry is derived from the
#      existing deb entries when none is configured);
#   2. fetches Debian's qemu source package, checks every patch with the
#      tree's scripts/checkpatch.pl (any error or warning is fatal) and
#      applies the series with patch --fuzz=0 (any fuzz or reject is fatal);
#   3. installs libvmig from this repository into the work dir and builds
#      qemu-system-x86_64 and tests/qtest/migration-test against it;
#   4. runs every migration-test case with the stock binary (Debian's
#      package; the tree's migration-test drives it) and with the patched
#      one, re-runs the known-flaky cases and every case that failed
#      $FLAKY_RUNS times on both, runs the compression cases patched ->
#      stock and stock -> patched, prints a summary table and exits
#      non-zero on any failure.
#
# Usage: qemu-patches/check.sh            (make qemu-check)
#        qemu-patches/check.sh --bench    (make qemu-bench: bench.py,
#                                          bench-smp.py and bench-comp.py,
#                                          stock versus patched)
# Environment:
#   VMIG_QEMU_WORK  work dir, kept between runs (default: target/qemu-check)
#   FLAKY_RUNS      runs per flaky case and binary (default 5)
#   FLAKY_TESTS     cases always run FLAKY_RUNS times (default: the two
#                   that fail on stock 7.2 here, see docs/qemu.md)
#   TEST_TIMEOUT    seconds per test case run (default 300)
#   QEMU_JOBS       ninja -j (default: nproc)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
series_dir=$repo/qemu-patches/7.2
work=${VMIG_QEMU_WORK:-$repo/target/qemu-check}
deb_version=1:7.2+dfsg-7+deb12u18
src_dirname=qemu-7.2+dfsg
flaky_runs=${FLAKY_RUNS:-5}
flaky_tests=${FLAKY_TESTS:-/x86_64/migration/dirty_ring /x86_64/migration/vcpu_dirty_limit}
# Registered by migration-test only when /dev/kvm works (and the kernel
# has the dirty ring); without KVM they are reported as skipped.
kvm_only_tests="/x86_64/migration/dirty_ring /x86_64/migration/vcpu_dirty_limit"
compress_tests="/x86_64/migration/precopy/unix/compress/wait /x86_64/migration/precopy/unix/compress/nowait"
test_timeout=${TEST_TIMEOUT:-300}
jobs=${QEMU_JOBS:-$(nproc)}
stock_bin=/usr/bin/qemu-system-x86_64

t_start=$(date +%s)
qc_name=qemu-check qc_log_tag=
# log, die, fetch_source, series_files, apply_series_to, install_vmig,
# link_firmware and the summary tables, shared with check-10.0.sh
. "$repo/qemu-patches/lib.sh"
mkdir -p "$work/logs"

# ---------------------------------------------------------------- deps
deps=(dpkg-dev patch ninja-build meson python3 python3-venv pkg-config
      gcc g++ make bison flex libglib2.0-dev libpixman-1-dev zlib1g-dev
      libfdt-dev libslirp-dev qemu-system-x86 seabios ipxe-qemu qemu-system-data)

# A deb-src twin of every enabled deb entry, derived at run time so that
# no archive address is written down here.
ensure_deb_src() {
    if apt-cache showsrc qemu 2>/dev/null | grep "^Version: ${deb_version}\$" >/dev/null; then
        return 0
    fi
    local d=/etc/apt/sources.list.d
    if [ -f $d/debian.sources ] && grep -q '^Types: deb$' $d/debian.sources; then
        sed 's/^Types: deb$/Types: deb-src/' $d/debian.sources > $d/vmig-deb-src.sources
    elif [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > $d/vmig-deb-src.list
    else
        die "no deb entry to derive a deb-src entry from"
    fi
    apt-get update -qq
}

install_deps() {
    local missing=()
    for p in "${deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    ensure_deb_src
}

# ---------------------------------------------------------------- source
# The patched tree is rebuilt from the pristine one whenever the series
# changes; otherwise the previous build is reused (incremental ninja).
apply_series() {
    local sum
    sum=$(cat "$series_dir/series" $(sed "s|^|$series_dir/|" "$series_dir/series") | sha256sum | cut -c1-16)
    if [ -f "$work/patched/.vmig-series-$sum" ]; then
        return 0
    fi
    log "applying the series to a fresh copy"
    rm -rf "$work/patched"
    cp -a "$work/pristine" "$work/patched"
    apply_series_to "$work/patched"
    touch "$work/patched/.vmig-series-$sum"
}

# Every patch passes the tree's own scripts/checkpatch.pl (QEMU's review
# gate): any error or warning fails the check before the long build.
checkpatch_series() {
    local p bad=0
    for p in $(series_files); do
        if ! (cd "$work/pristine" && perl scripts/checkpatch.pl -q "$series_dir/$p") >&2; then
            echo "   checkpatch: $p has style problems" >&2
            bad=1
        fi
    done
    [ $bad -eq 0 ] || die "scripts/checkpatch.pl rejects the series"
    log "scripts/checkpatch.pl: every patch is clean"
}

# ---------------------------------------------------------------- build
build_patched() {
    local b=$work/patched/build
    export PKG_CONFIG_PATH=$work/vmig/lib/pkgconfig
    if [ ! -f "$b/build.ninja" ]; then
        log "configuring the patched tree (-Dvmig=enabled)"
        mkdir -p "$b"
        # A minimal x86_64 system emulator.  slirp stays enabled because
        # Debian's binary has it: the default NIC's user-mode network then
        # exists on both sides and its "slirp" vmstate section is expected
        # by the destination (without it stock -> patched fails with
        # "Unknown savevm section or instance 'slirp' 0").
        (cd "$b" && ../configure --target-list=x86_64-softmmu --disable-install-blobs \
            --disable-docs --without-default-features --enable-kvm --enable-tcg \
            --enable-slirp --disable-werror --enable-vmig) > "$work/logs/configure.log" 2>&1 ||
            { tail -30 "$work/logs/configure.log" >&2; die "configure"; }
        grep -q "libvmig support *: YES" "$work/logs/configure.log" || die "configure did not find libvmig"
    fi
    log "building qemu-system-x86_64 and migration-test (ninja -j$jobs)"
    local t0=$(date +%s)
    (cd "$b" && ninja -j"$jobs" qemu-system-x86_64 tests/qtest/migration-test) \
        > "$work/logs/build.log" 2>&1 || { grep -E "error|FAILED" "$work/logs/build.log" | head -30 >&2; die "build"; }
    build_secs=$(( $(date +%s) - t0 ))
    link_firmware "$b"
    vmig_lib=$work/vmig/lib
    patched_bin=$b/qemu-system-x86_64
    mtest=$b/tests/qtest/migration-test
    # the patched binary must really be the vmig one
    LD_LIBRARY_PATH=$vmig_lib ldd "$patched_bin" | grep "libvmig" >/dev/null || die "patched binary is not linked with libvmig"
}

# ---------------------------------------------------------------- tests
# run_case NAME BINARY_SRC BINARY_DST TAG: status 0 when the case passed;
# its wall time is left in $last_secs, its log in logs/TAG_NAME.N.log.
run_no=0
run_case() {
    local name=$1 src=$2 dst=$3 tag=$4 t0 rc logf
    run_no=$((run_no + 1))
    logf="$work/logs/${tag}$(echo "$name" | tr '/' '_').$run_no.log"
    t0=$(date +%s.%N)
    set +e
    # in a subshell, so that "Aborted" for a failed g_assert goes to the log
    (LD_LIBRARY_PATH=$vmig_lib QTEST_QEMU_BINARY=$src QTEST_QEMU_BINARY_SRC=$src \
        QTEST_QEMU_BINARY_DST=$dst timeout -k 10 "$test_timeout" "$mtest" --tap -p "$name") \
        > "$logf" 2>&1
    rc=$?
    set -e
    last_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # glib prints "ok N" for a pass; a skipped case (g_test_skip) also exits 0
    if [ $rc -eq 0 ] && grep -q "^ok " "$logf"; then
        return 0
    fi
    echo "$logf" >> "$work/logs/failed.list"
    return 1
}

# Cases that fail now and then on the stock tree here and that the series
# fixes: /migration/dirty_ring loses dirty pages ("Memory content
# inconsistency") because the kernel writes past the end of the dirty ring;
# patch 0009 detects that and recovers (docs/dirty-ring-bug.md).  Every
# patched run of such a case must pass, whatever stock does.
fixed_by_series="/x86_64/migration/dirty_ring"

declare -A stock_res patched_res stock_secs patched_secs stock_rate patched_rate verdict

main() {
    install_deps
    if [ -n "${PATCHED_BUILD:-}" ]; then
        # Developer shortcut: test an existing build of the patched tree
        # (its libvmig in VMIG_PREFIX) instead of building one.
        vmig_lib=${VMIG_PREFIX:?PATCHED_BUILD needs VMIG_PREFIX}/lib
        patched_bin=$PATCHED_BUILD/qemu-system-x86_64
        mtest=$PATCHED_BUILD/tests/qtest/migration-test
        build_secs="- (PATCHED_BUILD)"
        link_firmware "$PATCHED_BUILD"
    else
        fetch_source
        checkpatch_series
        apply_series
        install_vmig
        build_patched
    fi
    [ -x "$stock_bin" ] || die "$stock_bin missing (qemu-system-x86)"
    if [ -z "${PATCHED_BUILD:-}" ]; then
        log "without CONFIG_VMIG the series must change nothing:"
        python3 "$repo/qemu-patches/disabled-equiv.py" "$work/patched/build" \
            "$work/pristine" "$work/patched" "$series_dir" || die "the series changes code with -Dvmig=disabled"
        disabled_equiv=identical
    fi
    if [ "${1:-}" = --bench ]; then
        [ -r /dev/kvm ] && [ -w /dev/kvm ] || die "qemu-bench needs a usable /dev/kvm"
        # compression on migration-test's boot sector (bench.py); the
        # reaper and the throttle on the SMP guest at a set rate
        # (bench-smp.py), which several vCPUs let show a difference
        LD_LIBRARY_PATH=$vmig_lib BENCH_ONLY=compress python3 "$repo/qemu-patches/bench.py" \
            "$stock_bin" "$patched_bin" "$(dirname "$patched_bin")/.."
        LD_LIBRARY_PATH=$vmig_lib python3 "$repo/qemu-patches/bench-smp.py" \
            "$stock_bin" "$patched_bin" "QEMU 7.2"
        # compression on a realistic Linux guest under TCG, source side
        # and end to end (bench-comp.py, guest/linux-fill)
        LD_LIBRARY_PATH=$vmig_lib python3 "$repo/qemu-patches/bench-comp.py" \
            "$stock_bin" "$patched_bin" "$work"
        return
    fi

    local have_kvm=no
    [ -r /dev/kvm ] && [ -w /dev/kvm ] && have_kvm=yes
    mapfile -t tests < <(QTEST_QEMU_BINARY=$patched_bin LD_LIBRARY_PATH=$vmig_lib "$mtest" -l | grep '^/')
    [ ${#tests[@]} -gt 0 ] || die "migration-test lists no test"
    log "${#tests[@]} migration-test cases, /dev/kvm usable: $have_kvm"
    rm -f "$work"/logs/{stock,patched,s2p,p2s}_*.log "$work/logs/failed.list"
    touch "$work/logs/failed.list"

    local t
    for t in "${tests[@]}"; do
        if run_case "$t" "$stock_bin" "$stock_bin" stock; then stock_res[$t]=pass; else stock_res[$t]=FAIL; fi
        stock_secs[$t]=$last_secs
        if run_case "$t" "$patched_bin" "$patched_bin" patched; then patched_res[$t]=pass; else patched_res[$t]=FAIL; fi
        patched_secs[$t]=$last_secs
        printf '   %-55s stock %-4s %6.1fs   patched %-4s %6.1fs\n' "$t" "${stock_res[$t]}" \
            "${stock_secs[$t]}" "${patched_res[$t]}" "${patched_secs[$t]}" >&2
    done

    # Flaky cases and every failure: measure pass rates on both binaries.
    local repeat=() f
    for t in "${tests[@]}"; do
        f=no
        for x in $flaky_tests; do [ "$x" = "$t" ] && f=yes; done
        if [ $f = yes ] || [ "${stock_res[$t]}" != pass ] || [ "${patched_res[$t]}" != pass ]; then
            repeat+=("$t")
        fi
    done
    for t in "${repeat[@]}"; do
        local sp=0 pp=0 i
        for i in $(seq 1 "$flaky_runs"); do
            run_case "$t" "$stock_bin" "$stock_bin" stock && sp=$((sp + 1))
            run_case "$t" "$patched_bin" "$patched_bin" patched && pp=$((pp + 1))
        done
        stock_rate[$t]="$sp/$flaky_runs"; patched_rate[$t]="$pp/$flaky_runs"
        log "repeated $t: stock $sp/$flaky_runs, patched $pp/$flaky_runs"
    done

    # Verdict.  A case that never fails on stock, or that the series fixes,
    # must never fail patched.  Any other case that fails on stock in some
    # of the runs is excluded from the verdict, with both pass rates
    # printed, unless the patched build never passes it while stock
    # sometimes does.
    local failed=0
    for t in "${tests[@]}"; do
        if [ -z "${stock_rate[$t]:-}" ]; then
            verdict[$t]=ok
            continue
        fi
        local sp=${stock_rate[$t]%/*} pp=${patched_rate[$t]%/*}
        if [[ " $fixed_by_series " == *" $t "* ]]; then
            if [ "$pp" -eq "$flaky_runs" ] && [ "${patched_res[$t]}" = pass ]; then
                verdict[$t]="ok (fixed by the series)"
            else
                verdict[$t]=FAIL; failed=1
            fi
        elif [ "$sp" -eq "$flaky_runs" ]; then
            if [ "$pp" -eq "$flaky_runs" ] && [ "${patched_res[$t]}" = pass ]; then
                verdict[$t]=ok
            else
                verdict[$t]=FAIL; failed=1
            fi
        elif [ "$sp" -gt 0 ] && [ "$pp" -eq 0 ]; then
            verdict[$t]=FAIL; failed=1
        else
            verdict[$t]="excluded: fails on stock"
        fi
    done

    # Interoperability: the compressed stream across builds.
    declare -A interop
    for t in $compress_tests; do
        if run_case "$t" "$patched_bin" "$stock_bin" p2s; then interop["$t p2s"]=pass; else interop["$t p2s"]=FAIL; failed=1; fi
        if run_case "$t" "$stock_bin" "$patched_bin" s2p; then interop["$t s2p"]=pass; else interop["$t s2p"]=FAIL; failed=1; fi
    done

    # ------------------------------------------------------------ summary
    echo
    echo "QEMU $deb_version + qemu-patches/7.2 ($(wc -l < "$series_dir/series") patches), libvmig $(sed -n 's/^Version: //p' "$vmig_lib/pkgconfig/vmig.pc")"
    echo "stock: $stock_bin ($(dpkg-query -W -f='${Version}' qemu-system-x86)); /dev/kvm usable: $have_kvm; flaky runs: $flaky_runs"
    print_case_table 50 /x86_64/migration/ 120
    echo
    # shellcheck disable=SC2086  # one argument per case
    print_interop_table 50 /x86_64/migration/ $compress_tests
    echo
    echo "-Dvmig=disabled: preprocessed non-test sources ${disabled_equiv:-not checked (PATCHED_BUILD)} to the unpatched tree"
    echo "build: ${build_secs}s; total: $(( $(date +%s) - t_start ))s; logs: $work/logs"
    if [ $failed -ne 0 ]; then
        echo "qemu-check: FAIL"
        exit 1
    fi
    echo "qemu-check: PASS"
}

main "$@"
