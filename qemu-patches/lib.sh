# Shell functions shared by check.sh (QEMU 7.2) and check-10.0.sh (QEMU
# 10.0); sourced, not run.  The sourcing script sets, before it sources:
#   qc_name      the name its failures start with ("qemu-check")
#   qc_log_tag   what its log lines start with after "== " ("" or "[10.0] ")
# and before it calls them: work, repo, series_dir, deb_version,
# src_dirname (the work dir, this checkout, the series, Debian's source
# version and the directory its source unpacks to).

log() { printf '== %s%s\n' "$qc_log_tag" "$*" >&2; }
die() { printf '%s: FAIL: %s\n' "$qc_name" "$*" >&2; exit 1; }

# ---------------------------------------------------------------- source
fetch_source() {
    if [ -f "$work/pristine/.vmig-fetched" ]; then
        return 0
    fi
    log "fetching qemu $deb_version source"
    rm -rf "$work/dl" "$work/pristine"
    mkdir -p "$work/dl"
    (cd "$work/dl" && apt-get source -qq "qemu=$deb_version" >/dev/null 2>&1) ||
        die "apt-get source qemu=$deb_version"
    mv "$work/dl/$src_dirname" "$work/pristine"
    rm -rf "$work/dl"
    touch "$work/pristine/.vmig-fetched"
}

# The patch file names of the series, in order (blank lines and # comments
# of the series file skipped).
series_files() {
    local p
    while read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        echo "$p"
    done < "$series_dir/series"
}

# apply_series_to DIR: applies the series to the tree in DIR with
# patch --fuzz=0; a patch that does not apply, or applies only with fuzz
# or at an offset, is fatal.
apply_series_to() {
    local dir=$1 p out
    for p in $(series_files); do
        out=$(cd "$dir" && patch -p1 -N --fuzz=0 --no-backup-if-mismatch \
                  -i "$series_dir/$p" 2>&1) || { echo "$out" >&2; die "$p does not apply"; }
        if echo "$out" | grep -iE 'fuzz|FAILED|reject|offset' >/dev/null; then
            echo "$out" >&2
            die "$p applies only with fuzz or offset: refresh it"
        fi
        echo "   applied $p" >&2
    done
}

# ---------------------------------------------------------------- build
install_vmig() {
    log "installing libvmig into $work/vmig"
    make -C "$repo" -s install PREFIX="$work/vmig" > "$work/logs/vmig-install.log" 2>&1 ||
        { tail -20 "$work/logs/vmig-install.log" >&2; die "make install (libvmig)"; }
}

# Firmware is stripped from Debian's source; a binary run from its build
# tree looks in build/qemu-bundle/<prefix>/share/qemu.
link_firmware() {
    local dir=$1/qemu-bundle/usr/local/share/qemu f
    mkdir -p "$dir"
    for f in /usr/share/seabios/*.bin /usr/share/qemu/*.bin /usr/lib/ipxe/qemu/*.rom; do
        [ -e "$f" ] && ln -sf "$f" "$dir/"
    done
}

# ---------------------------------------------------------------- summary
# print_case_table WIDTH PREFIX RULE: the pass-rate table, one row per
# case of ${tests[@]} (its name without PREFIX, in a WIDTH-wide column):
# the first stock and patched runs (stock_res, stock_secs, patched_res,
# patched_secs), the pass rates of the repeated cases (stock_rate,
# patched_rate) and the verdict; a rule of RULE dashes under the header.
# Without a usable /dev/kvm ($have_kvm no) the cases of $kvm_only_tests,
# which migration-test then does not register, are listed as skipped.
print_case_table() {
    local w=$1 prefix=$2 rule=$3 t
    printf "%-${w}s | %-5s %6s | %-7s %6s | %-9s %-9s | %s\n" "migration-test case" stock secs patched secs "stock" "patched" verdict
    printf "%-${w}s | %-12s | %-14s | %-9s %-9s | %s\n" "" "(one run)" "(one run)" "pass rate" "pass rate" ""
    printf -- '%.0s-' $(seq 1 "$rule"); echo
    for t in "${tests[@]}"; do
        printf "%-${w}s | %-5s %6.1f | %-7s %6.1f | %-9s %-9s | %s\n" "${t#"$prefix"}" \
            "${stock_res[$t]}" "${stock_secs[$t]}" "${patched_res[$t]}" "${patched_secs[$t]}" \
            "${stock_rate[$t]:--}" "${patched_rate[$t]:--}" "${verdict[$t]}"
    done
    if [ "$have_kvm" = no ]; then
        for t in $kvm_only_tests; do
            printf "%-${w}s | %-5s %6s | %-7s %6s | %-9s %-9s | %s\n" "${t#"$prefix"}" \
                skip - skip - - - "SKIPPED: no usable /dev/kvm"
        done
    fi
}

# print_interop_table WIDTH PREFIX CASES...: the results of the runs across
# builds (interop["CASE p2s"], interop["CASE s2p"]; "not run" when unset).
print_interop_table() {
    local w=$1 prefix=$2 t
    shift 2
    printf "%-${w}s | %-22s | %-22s\n" "interoperability" "patched src -> stock dst" "stock src -> patched dst"
    for t in "$@"; do
        printf "%-${w}s | %-22s | %-22s\n" "${t#"$prefix"}" "${interop["$t p2s"]:-not run}" "${interop["$t s2p"]:-not run}"
    done
}
