#!/usr/bin/env bash
# Page-request latency of the three postcopy modes, as the preempt-full
# cover letter measured them (shared seed postcopy-preempt-full.txt): one
# run of vmig-sim per mode x access pattern x link rate, same seed, the
# bulk stream saturating the link. Prints each run's bpftrace-style
# histogram, then one table with the goals of issue 13 checked against the
# loopback round trip measured in the same runs. docs/postcopy.md explains
# the output. Extra arguments go to every vmig-sim run (e.g. --mem 512M).
#   scripts/postcopy-bench.sh [vmig-sim options]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p vmig-sim
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "load before: $(uptime)"
for bw in 1G 10G; do
  for access in random sequential; do
    for mode in vanilla preempt preempt-full; do
      f="$out/$bw-$access-$mode.json"
      target/release/vmig-sim --postcopy "$mode" --access "$access" --bandwidth "$bw" --json -q "$@" > "$f" ||
        echo "vmig-sim --postcopy $mode --access $access --bandwidth $bw failed (exit $?)" >&2
    done
  done
done
echo "load after: $(uptime)"
python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
def human(v):
    for s, u in ((30, "G"), (20, "M"), (10, "K")):
        if v >= 1 << s and v % (1 << s) == 0:
            return f"{v >> s}{u}"
    return str(v)
def hist(title, lat):
    print(title); print("-" * len(title))
    print(f"Average: {lat['mean']:.0f} (us)"); print("@delay_us:")
    b = lat["histogram"]
    if not b:
        print("(no samples)"); return
    counts = {lo: c for lo, hi, c in b}
    mx = max(counts.values())
    lo = b[0][0]
    while lo <= b[-1][0]:
        hi = 1 if lo == 0 else lo * 2
        c = counts.get(lo, 0)
        label = f"[{human(lo)}]" if hi - lo == 1 else f"[{human(lo)}, {human(hi)})"
        print(f"{label:<14}{c:>8} |{'@' * (c * 52 // mx):<52}|")
        lo = hi
    print()
titles = {"vanilla": "Postcopy Vanilla", "preempt": "Postcopy Preempt", "preempt-full": "Postcopy Preempt-Full"}
rows = []
for bw in ("1G", "10G"):
    for access in ("random", "sequential"):
        print(f"=== link {bw}bit/s, {access} access ===")
        for mode in ("vanilla", "preempt", "preempt-full"):
            f = os.path.join(d, f"{bw}-{access}-{mode}.json")
            try:
                r = json.load(open(f))
            except Exception:
                print(f"{mode}: no result\n"); continue
            p = r.get("postcopy")
            if not p:
                print(f"{mode}: {r.get('status')} {r.get('status_detail')}\n"); continue
            hist(titles[mode], p["latency_us"])
            rows.append((bw, access, mode, r, p))
print(f"{'link':>4} {'access':<10} {'mode':<12} {'status':<9} {'req':>6} {'mean us':>8} {'p50':>6} {'p99':>6} "
      f"{'pc ms':>6} {'bulk Mb/s':>9} {'guest %':>7} {'RTT us':>6} {'bound':>6} {'FIFO RTT':>8}")
for bw, access, mode, r, p in rows:
    l = p["latency_us"]
    print(f"{bw:>4} {access:<10} {mode:<12} {r['status']:<9} {p['requests']:>6} {l['mean']:>8.0f} {l['p50']:>6} {l['p99']:>6} "
          f"{p['postcopy_ms']:>6.0f} {p['bulk_mbps']:>9.0f} {p['guest_progress']*100:>7.0f} {p['loopback_rtt_us']:>6.0f} {p['goal_bound_us']:>6.0f} "
          f"{(p.get('loopback_rtt_rt_us') or float('nan')):>8.0f}")
print()
by = {(bw, a, m): p for bw, a, m, _, p in rows}
for bw in ("1G", "10G"):
    for a in ("random", "sequential"):
        v, pr, pf = (by.get((bw, a, m)) for m in ("vanilla", "preempt", "preempt-full"))
        if not (v and pr and pf):
            continue
        vm, pm, fm = (x["latency_us"]["mean"] for x in (v, pr, pf))
        print(f"{bw:>4} {a:<10} vanilla/preempt-full {vm / max(fm, 1e-9):6.1f}x   preempt/preempt-full {pm / max(fm, 1e-9):5.2f}x   "
              f"preempt-full <= preempt: {'yes' if fm <= pm else 'NO'}   preempt-full mean / bound {fm / pf['goal_bound_us']:.2f}")
PY
