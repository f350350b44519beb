#!/usr/bin/env bash
# Proves the QEMU 10.0 series in qemu-patches/10.0/ on this machine (Debian
# 12 host, root), the way check.sh proves the 7.2 one:
#   1. installs the build dependencies (apt) and meson 1.5.0 into a venv in
#      the work dir (PyPI: QEMU 10.0 needs meson >= 1.5, Debian 12 has
#      1.0, and Debian's +ds source drops the bundled wheel);
#   2. fetches Debian 13's qemu source package 1:10.0.13+ds-0+deb13u1 (a
#      trixie deb-src entry is derived from the machine's deb entries when
#      none is configured: source only, so no trixie binary can ever be
#      installed) and applies the series with patch --fuzz=0 (any fuzz,
#      offset or reject is fatal); checks every patch with the tree's
#      scripts/checkpatch.pl (any error or warning is fatal);
#   3. builds the unpatched tree (the stock peer) and the patched tree
#      (-Dvmig=enabled, libvmig installed from this checkout into the work
#      dir) with the same minimal configuration: qemu-system-x86_64 and
#      tests/qtest/migration-test only, through ccache so the second build
#      reuses the first one's objects;
#   4. proves that -Dvmig=disabled changes nothing (disabled-equiv.py);
#   5. runs the core migration-test cases (below; QEMU10_FULL=1: every
#      case of --full -m slow) with the stock binary and
#      with the patched one, each case on its own; re-runs the flaky cases
#      and every case that failed FLAKY_RUNS times on both binaries; runs
#      the dirty ring and auto-converge cases patched -> stock and
#      stock -> patched; prints the pass-rate table and exits non-zero on
#      any failure.
#
# Why the stock peer is built rather than Debian's binary: the only stock
# 10.0 binary for Debian 12 (bookworm-backports qemu-system-x86
# 1:10.0.2+ds-2+deb13u1~bpo12+1) would replace the 7.2 binary that
# check.sh's interop tests need if installed, and unpacked with dpkg -x it
# needs some thirty libraries this machine does not have (spice, usbredir,
# virglrenderer, xen, ...).  The unpatched 10.0.13 tree, configured like
# the patched one, is the same source minus the series, so every
# stock/patched difference is the series' and not 10.0.2 -> 10.0.13.
#
# Usage: qemu-patches/check-10.0.sh          (run by make qemu-check)
#        qemu-patches/check-10.0.sh --build  (build only; prints the paths)
#        qemu-patches/check-10.0.sh --bench  (make qemu-bench, 10.0 part)
# Environment:
#   VMIG_QEMU10_WORK work dir, kept between runs (default: target/qemu10)
#   FLAKY_RUNS       runs per flaky case and binary (default 5)
#   FLAKY_TESTS      cases always run FLAKY_RUNS times (default below)
#   QEMU10_FULL      1: every migration-test case, not only the core ones
#   TESTS_FILTER     grep -E pattern: run only the matching cases (for
#                    development; the verdict then covers only those)
#   INTEROP_TESTS    cases run patched -> stock and stock -> patched
#                    (default: dirty_ring, auto_converge, auto_converge_dirty_ring)
#   TEST_TIMEOUT     seconds per test case run (default 300)
#   QEMU_JOBS        ninja -j (default: nproc)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
series_dir=$repo/qemu-patches/10.0
work=${VMIG_QEMU10_WORK:-$repo/target/qemu10}
deb_version=1:10.0.13+ds-0+deb13u1
src_dirname=qemu-10.0.13+ds
# QEMU 10.0's pythondeps.toml: meson >= 1.5.0, installs 1.5.0.
meson_version=1.5.0
flaky_runs=${FLAKY_RUNS:-5}
# vcpu_dirty_limit and dirty_limit measure dirty rates against
# wall-clock quotas, which a loaded machine upsets.
flaky_tests=${FLAKY_TESTS:-/x86_64/migration/vcpu_dirty_limit /x86_64/dirty_limit}
# Cases that fail on the stock tree here and that the series fixes:
# /migration/dirty_ring hangs on stock 10.0 (the kernel writes past the end
# of the dirty ring and the source guest freezes; patch 0006 detects that
# and recovers: docs/dirty-ring-bug.md, docs/qemu10.md).  Like check.sh's
# rule for 7.2, every patched run must pass whatever stock does; they run
# FLAKY_RUNS more times patched, and stock only once (for the table: its
# runs end at TEST_TIMEOUT and would not change the verdict).
fixed_by_series=${FIXED_BY_SERIES:-/x86_64/migration/dirty_ring}
# Registered by migration-test only with a usable /dev/kvm and dirty ring.
kvm_only_tests="/x86_64/migration/dirty_ring /x86_64/migration/vcpu_dirty_limit /x86_64/dirty_limit /x86_64/migration/auto_converge_dirty_ring"
# Across builds, with the dirty ring and auto-converge at work.
interop_tests=${INTEROP_TESTS:-/x86_64/migration/dirty_ring /x86_64/migration/auto_converge /x86_64/migration/auto_converge_dirty_ring}
mtest_args=(--full -m slow)
# make qemu-check runs the cases the 10.0 series is about: precopy,
# auto-converge (plain and with the dirty ring), the dirty ring,
# dirty-limit, postcopy (plain, recovery, preempt), multifd (none, zlib,
# zstd).  The whole suite (55 cases, QEMU10_FULL=1, make
# qemu-check-10.0-full) does not fit .ci/run's 60 minutes next to the 7.2
# check: docs/qemu10.md, "Time".
core_tests='/migration/precopy/(unix|tcp)/plain$|/migration/auto_converge(_dirty_ring)?$|/migration/dirty_ring$|/x86_64/dirty_limit$|/migration/vcpu_dirty_limit$|/migration/postcopy/(preempt/)?(recovery/)?plain$|/multifd/tcp/uri/plain/none$|/multifd/tcp/plain/(zlib|zstd)$'
if [ "${QEMU10_FULL:-0}" = 1 ]; then
    tests_filter=${TESTS_FILTER:-.}
else
    tests_filter=${TESTS_FILTER:-$core_tests}
fi
test_timeout=${TEST_TIMEOUT:-300}
jobs=${QEMU_JOBS:-$(nproc)}

t_start=$(date +%s)
qc_name="qemu-check 10.0" qc_log_tag="[10.0] "
# log, die, fetch_source, series_files, apply_series_to, install_vmig,
# link_firmware and the summary tables, shared with check.sh
. "$repo/qemu-patches/lib.sh"
mkdir -p "$work/logs"

# ---------------------------------------------------------------- deps
deps=(dpkg-dev patch ninja-build python3 python3-venv pkg-config ccache
      gcc g++ make bison flex libglib2.0-dev libpixman-1-dev zlib1g-dev
      libzstd-dev libslirp-dev seabios ipxe-qemu qemu-system-data binutils perl)

# A deb-src entry for trixie next to every enabled bookworm deb entry,
# derived at run time so that no archive address is written down here.
ensure_deb_src() {
    if apt-cache showsrc qemu 2>/dev/null | grep "^Version: ${deb_version}\$" >/dev/null; then
        return 0
    fi
    local d=/etc/apt/sources.list.d
    if [ -f $d/debian.sources ] && grep -q '^Types: deb$' $d/debian.sources; then
        sed -e 's/^Types: deb$/Types: deb-src/' -e '/^Suites:/s/bookworm/trixie/g' \
            $d/debian.sources > $d/vmig-trixie-src.sources
    elif [ -f /etc/apt/sources.list ] && grep -q '^deb .*bookworm' /etc/apt/sources.list; then
        sed -n '/^deb .*bookworm/{s/^deb /deb-src /;s/bookworm/trixie/g;p}' \
            /etc/apt/sources.list > $d/vmig-trixie-src.list
    else
        die "no bookworm deb entry to derive a trixie deb-src entry from"
    fi
    apt-get -o DPkg::Lock::Timeout=900 update -qq
}

install_deps() {
    local missing=() p
    for p in "${deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "ok installed" >/dev/null || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get -o DPkg::Lock::Timeout=900 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
    ensure_deb_src
    if ! "$work/meson-venv/bin/meson" --version 2>/dev/null | grep -qx "$meson_version"; then
        log "installing meson $meson_version into $work/meson-venv"
        rm -rf "$work/meson-venv"
        /usr/bin/python3 -m venv "$work/meson-venv"
        "$work/meson-venv/bin/pip" install -q "meson==$meson_version" ||
            die "pip install meson==$meson_version"
    fi
}

# ---------------------------------------------------------------- source
# The patched tree is rebuilt from the pristine one whenever the series
# changes; otherwise the previous build is reused (incremental ninja).
apply_series() {
    local sum
    sum=$(cat "$series_dir/series" $(series_files | sed "s|^|$series_dir/|") | sha256sum | cut -c1-16)
    if [ -f "$work/patched/.vmig-series-$sum" ]; then
        return 0
    fi
    log "applying the series to a fresh copy"
    rm -rf "$work/patched"
    mkdir -p "$work/patched"
    (cd "$work/pristine" && tar --exclude=./build --exclude=./.vmig-fetched -cf - .) |
        (cd "$work/patched" && tar xf -)
    apply_series_to "$work/patched"
    touch "$work/patched/.vmig-series-$sum"
}

# QEMU's own style checker, from the tree the series is for.
run_checkpatch() {
    local p out
    for p in $(series_files); do
        out=$(cd "$work/pristine" && perl scripts/checkpatch.pl --no-color "$series_dir/$p" 2>&1) ||
            { echo "$out" >&2; die "checkpatch.pl: $p has errors"; }
        echo "$out" | grep -E '^total: 0 errors, 0 warnings' >/dev/null ||
            { echo "$out" >&2; die "checkpatch.pl: $p has warnings"; }
    done
    log "checkpatch.pl: $(series_files | wc -l) patches, 0 errors, 0 warnings"
}

# ---------------------------------------------------------------- build
# Both trees build in <tree>/build, so the compile commands, relative to
# the build dir, are the same for both and ccache (base dir: the work dir,
# no cwd in the hash) serves the patched build from the stock one's objects
# wherever the preprocessed source is the same.
export CCACHE_DIR=$work/ccache CCACHE_BASEDIR=$work CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=5G

# build_tree TREE TAG [CONFIGURE_ARGS...]: qemu-system-x86_64 and
# migration-test in TREE/build; seconds in build_secs[TAG].
declare -A build_secs
build_tree() {
    local tree=$1 tag=$2 b=$1/build t0
    shift 2
    if [ ! -f "$b/build.ninja" ]; then
        log "configuring the $tag tree $*"
        mkdir -p "$b"
        # Minimal x86_64 system emulator, as check.sh builds 7.2; slirp
        # for the default NIC's vmstate section, zstd for multifd/zstd.
        (cd "$b" && ../configure --cc=/usr/lib/ccache/cc --host-cc=/usr/lib/ccache/cc \
            --cxx=/usr/lib/ccache/c++ --python="$work/meson-venv/bin/python3" \
            --target-list=x86_64-softmmu --disable-install-blobs --disable-docs \
            --without-default-features --enable-kvm --enable-tcg --enable-slirp \
            --enable-zstd --disable-werror --disable-download "$@") \
            > "$work/logs/configure-$tag.log" 2>&1 ||
            { tail -30 "$work/logs/configure-$tag.log" >&2; die "configure ($tag)"; }
    fi
    log "building the $tag qemu-system-x86_64 and migration-test (ninja -j$jobs)"
    t0=$(date +%s)
    (cd "$b" && ninja -j"$jobs" qemu-system-x86_64 tests/qtest/migration-test) \
        > "$work/logs/build-$tag.log" 2>&1 ||
        { grep -E "error|FAILED" "$work/logs/build-$tag.log" | head -30 >&2; die "build ($tag)"; }
    build_secs[$tag]=$(( $(date +%s) - t0 ))
    link_firmware "$b"
}

build_all() {
    fetch_source
    apply_series
    run_checkpatch
    install_vmig
    vmig_lib=$work/vmig/lib
    build_tree "$work/pristine" stock
    export PKG_CONFIG_PATH=$work/vmig/lib/pkgconfig
    build_tree "$work/patched" patched --enable-vmig
    grep -q "libvmig support *: YES" "$work/logs/configure-patched.log" ||
        die "configure did not find libvmig"
    stock_bin=$work/pristine/build/qemu-system-x86_64
    patched_bin=$work/patched/build/qemu-system-x86_64
    mtest=$work/patched/build/tests/qtest/migration-test
    stock_mtest=$work/pristine/build/tests/qtest/migration-test
    # the patched binary must really be the vmig one, the stock one not
    LD_LIBRARY_PATH=$vmig_lib ldd "$patched_bin" | grep "libvmig" >/dev/null ||
        die "patched binary is not linked with libvmig"
    ! ldd "$stock_bin" | grep "libvmig" >/dev/null || die "stock binary is linked with libvmig"
}

# ---------------------------------------------------------------- tests
# run_case NAME BINARY_SRC BINARY_DST TAG: status 0 when the case passed;
# its wall time is left in $last_secs, its log in logs/TAG_NAME.N.log.
# 10.0's migration-test takes QTEST_QEMU_BINARY for both sides and at most
# one of QTEST_QEMU_BINARY_SRC / _DST to override one side.
run_no=0
run_case() {
    local name=$1 src=$2 dst=$3 tag=$4 t0 rc logf env=()
    run_no=$((run_no + 1))
    logf="$work/logs/${tag}$(echo "$name" | tr '/' '_').$run_no.log"
    if [ "$src" = "$dst" ]; then
        env=(QTEST_QEMU_BINARY="$src")
    else
        env=(QTEST_QEMU_BINARY="$dst" QTEST_QEMU_BINARY_SRC="$src")
    fi
    last_log=$logf
    t0=$(date +%s.%N)
    set +e
    # in a subshell, so that "Aborted" for a failed g_assert goes to the log
    (env LD_LIBRARY_PATH="$vmig_lib" "${env[@]}" timeout -k 10 "$test_timeout" \
        "$mtest" "${mtest_args[@]}" --tap -p "$name") > "$logf" 2>&1
    rc=$?
    set -e
    last_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # glib prints "ok N" for a pass, "ok N # SKIP" for a skip: a skip is
    # not a pass (a case the machine cannot run must not look proven)
    if [ $rc -eq 0 ] && grep -q "^ok " "$logf" && ! grep -q "^ok .*# SKIP" "$logf"; then
        return 0
    fi
    if [ $rc -eq 0 ] && grep -q "^ok .*# SKIP" "$logf"; then
        last_skip=1
    fi
    echo "$logf" >> "$work/logs/failed.list"
    return 1
}

# The failure signature of a failed run's log: its first assertion or
# error line (migration-test's own, or a QEMU process's; QEMU's warnings,
# which every run may print, are not failures), digits removed so
# that line numbers of the two trees compare equal; "timeout" when the run
# was killed; "skipped" for a skip.
failure_sig() {
    local logf=$1 line
    line=$(grep -E 'Bail out!|ERROR:|[Aa]ssertion|qemu-system-x86_64: ' "$logf" |
               grep -v 'warning:' | head -1 || true)
    if [ -n "$line" ]; then
        echo "$line" | sed -e 's/[0-9]\+/N/g' -e 's|/[^ :]*/||g' | cut -c1-120
    elif grep -q "^ok .*# SKIP" "$logf"; then
        echo skipped
    else
        echo "timeout or crash without message"
    fi
}

# The signatures of case $1's failed patched runs that no stock run of it
# showed, one per line (empty: every patched failure is also stock's).
patched_only_failures() {
    local n logf
    n=$(echo "$1" | tr '/' '_')
    declare -A stock_sigs=()
    while read -r logf; do
        [[ $logf =~ /stock${n}\.[0-9]+\.log$ ]] && stock_sigs["$(failure_sig "$logf")"]=1
    done < "$work/logs/failed.list"
    while read -r logf; do
        [[ $logf =~ /patched${n}\.[0-9]+\.log$ ]] || continue
        local sig
        sig=$(failure_sig "$logf")
        [ -n "${stock_sigs["$sig"]:-}" ] || echo "$sig ($logf)"
    done < "$work/logs/failed.list"
}

# Whether a stock run of case $1 failed with failure signature $2.
stock_failed_with() {
    local n logf
    n=$(echo "$1" | tr '/' '_')
    while read -r logf; do
        [[ $logf =~ /stock${n}\.[0-9]+\.log$ ]] || continue
        [ "$(failure_sig "$logf")" = "$2" ] && return 0
    done < "$work/logs/failed.list"
    return 1
}

last_skip=0
declare -A stock_res patched_res stock_secs patched_secs stock_rate patched_rate verdict

run_tests() {
    local have_kvm=no t x f
    [ -r /dev/kvm ] && [ -w /dev/kvm ] && have_kvm=yes
    mapfile -t tests < <(QTEST_QEMU_BINARY=$patched_bin LD_LIBRARY_PATH=$vmig_lib \
        "$mtest" "${mtest_args[@]}" -l | grep '^/' | grep -E "$tests_filter")
    [ ${#tests[@]} -gt 0 ] || die "migration-test lists no test"
    log "${#tests[@]} migration-test cases, /dev/kvm usable: $have_kvm"
    rm -f "$work"/logs/{stock,patched,s2p,p2s}_*.log "$work/logs/failed.list"
    touch "$work/logs/failed.list"

    for t in "${tests[@]}"; do
        last_skip=0
        if run_case "$t" "$stock_bin" "$stock_bin" stock; then stock_res[$t]=pass; else stock_res[$t]=FAIL; fi
        [ $last_skip = 1 ] && stock_res[$t]=skip
        stock_secs[$t]=$last_secs
        last_skip=0
        if run_case "$t" "$patched_bin" "$patched_bin" patched; then patched_res[$t]=pass; else patched_res[$t]=FAIL; fi
        [ $last_skip = 1 ] && patched_res[$t]=skip
        patched_secs[$t]=$last_secs
        printf '   %-58s stock %-4s %6.1fs   patched %-4s %6.1fs\n' "$t" "${stock_res[$t]}" \
            "${stock_secs[$t]}" "${patched_res[$t]}" "${patched_secs[$t]}" >&2
    done

    # Flaky cases and every failure: measure pass rates on both binaries.
    local repeat=()
    for t in "${tests[@]}"; do
        f=no
        for x in $flaky_tests $fixed_by_series; do [ "$x" = "$t" ] && f=yes; done
        [ "${stock_res[$t]}" = skip ] && [ "${patched_res[$t]}" = skip ] && continue
        if [ $f = yes ] || [ "${stock_res[$t]}" != pass ] || [ "${patched_res[$t]}" != pass ]; then
            repeat+=("$t")
        fi
    done
    for t in "${repeat[@]}"; do
        local sp=0 pp=0 sn=0 i fixed=no
        [[ " $fixed_by_series " == *" $t "* ]] && fixed=yes
        for i in $(seq 1 "$flaky_runs"); do
            if [ $fixed = no ]; then
                sn=$((sn + 1))
                run_case "$t" "$stock_bin" "$stock_bin" stock && sp=$((sp + 1))
            fi
            run_case "$t" "$patched_bin" "$patched_bin" patched && pp=$((pp + 1))
        done
        stock_rate[$t]="$sp/$sn"; patched_rate[$t]="$pp/$flaky_runs"
        log "repeated $t: stock $sp/$sn, patched $pp/$flaky_runs"
    done

    # Verdict, as strict as 7.2's: a case that passes every stock run must
    # pass every patched run.  A case that fails some stock runs is
    # excluded from the verdict, loudly and with both pass rates, only if
    # every patched failure is one that stock shows too (same failure
    # signature, see failure_sig) and the patched build passes it at least
    # once when stock does.  A case both binaries skip is reported as
    # skipped, never as passed.
    failed=0
    for t in "${tests[@]}"; do
        if [ "${stock_res[$t]}" = skip ] && [ "${patched_res[$t]}" = skip ]; then
            verdict[$t]="SKIPPED by both (see its log)"
            continue
        fi
        if [ -z "${stock_rate[$t]:-}" ]; then
            verdict[$t]=ok
            continue
        fi
        local sp=${stock_rate[$t]%/*} pp=${patched_rate[$t]%/*} s1=0 p1=0 new
        [ "${stock_res[$t]}" = pass ] && s1=1
        [ "${patched_res[$t]}" = pass ] && p1=1
        sp=$((sp + s1)); pp=$((pp + p1))
        stock_rate[$t]="$sp/$(( ${stock_rate[$t]#*/} + 1 ))"
        patched_rate[$t]="$pp/$((flaky_runs + 1))"
        if [[ " $fixed_by_series " == *" $t "* ]]; then
            if [ "$pp" -eq $((flaky_runs + 1)) ]; then
                verdict[$t]="ok (fixed by the series)"
            else
                verdict[$t]="FAIL: the series fixes it, every patched run must pass"; failed=1
            fi
        elif [ "$sp" -eq $((flaky_runs + 1)) ]; then
            if [ "$pp" -eq $((flaky_runs + 1)) ]; then
                verdict[$t]=ok
            else
                verdict[$t]=FAIL; failed=1
            fi
        elif [ "$sp" -gt 0 ] && [ "$pp" -eq 0 ]; then
            verdict[$t]="FAIL: never passes patched"; failed=1
        elif new=$(patched_only_failures "$t") && [ -n "$new" ]; then
            verdict[$t]="FAIL: patched-only failure: $new"; failed=1
        else
            verdict[$t]="EXCLUDED: fails on stock too"
            log "EXCLUDED from the verdict: $t fails on stock too, with every failure patched shows (stock $sp/$((flaky_runs + 1)), patched $pp/$((flaky_runs + 1)))"
        fi
    done

    # Interoperability, both ways, with the dirty ring and auto-converge.
    # Any interop failure fails, with one exception: a case that fails on
    # stock by itself may fail across builds with a failure signature that
    # a stock run of it showed, in any direction if the case is excluded
    # from the verdict (it fails patched alike), and only with the stock
    # source if the series fixes it (the dirty ring overrun is the
    # source's: only the source tracks dirty pages).
    declare -gA interop
    local dir src dst sig
    for t in $interop_tests; do
        printf '%s\n' "${tests[@]}" | grep -qx "$t" || continue
        for dir in p2s s2p; do
            if [ $dir = p2s ]; then src=$patched_bin dst=$stock_bin; else src=$stock_bin dst=$patched_bin; fi
            if run_case "$t" "$src" "$dst" $dir; then
                interop["$t $dir"]=pass
                continue
            fi
            interop["$t $dir"]=FAIL
            sig=$(failure_sig "$last_log")
            if stock_failed_with "$t" "$sig" &&
               { [[ ${verdict[$t]} == EXCLUDED* ]] ||
                 { [ $dir = s2p ] && [[ " $fixed_by_series " == *" $t "* ]]; }; }; then
                interop["$t $dir"]="FAIL as stock ($sig)"
                log "interop $t $dir: stock's own failure ($sig), not counted"
            else
                failed=1
            fi
        done
        log "interop $t: patched -> stock ${interop["$t p2s"]}, stock -> patched ${interop["$t s2p"]}"
    done

    # ------------------------------------------------------------ summary
    echo
    echo "QEMU $deb_version + qemu-patches/10.0 ($(series_files | wc -l) patches), libvmig $(sed -n 's/^Version: //p' "$vmig_lib/pkgconfig/vmig.pc")"
    echo "stock: the unpatched tree built alike ($stock_bin); /dev/kvm usable: $have_kvm; flaky runs: $flaky_runs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    print_case_table 52 /x86_64/ 124
    echo
    # shellcheck disable=SC2086  # one argument per case
    print_interop_table 52 /x86_64/ $interop_tests
    echo
}

main() {
    install_deps
    build_all
    log "without CONFIG_VMIG the series must change nothing:"
    python3 "$repo/qemu-patches/disabled-equiv.py" "$work/patched/build" \
        "$work/pristine" "$work/patched" "$series_dir" ||
        die "the series changes code with -Dvmig=disabled"
    case "${1:-}" in
    --build)
        echo "stock:   $stock_bin"
        echo "patched: $patched_bin (LD_LIBRARY_PATH=$vmig_lib)"
        echo "migration-test: $mtest (stock tree's: $stock_mtest)"
        return ;;
    --bench)
        [ -r /dev/kvm ] && [ -w /dev/kvm ] || die "qemu-bench needs a usable /dev/kvm"
        LD_LIBRARY_PATH=$vmig_lib python3 "$repo/qemu-patches/bench-smp.py" \
            "$stock_bin" "$patched_bin" "QEMU 10.0"
        return ;;
    esac
    run_tests
    echo "-Dvmig=disabled: preprocessed non-test sources identical to the unpatched tree"
    echo "checkpatch.pl: 0 errors, 0 warnings; build: stock ${build_secs[stock]}s, patched ${build_secs[patched]}s; total: $(( $(date +%s) - t_start ))s; logs: $work/logs"
    if [ $failed -ne 0 ]; then
        echo "qemu-check 10.0: FAIL"
        exit 1
    fi
    echo "qemu-check 10.0: PASS"
}

main "$@"
