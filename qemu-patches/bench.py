#!/usr/bin/env python3
"""Stock versus patched QEMU on the same guest workload (make qemu-bench).

The guest is migration-test's boot sector (tests/migration/i386): it
increments one byte in every 4 KiB page of 1..100 MiB in a loop, so all
of that memory is dirtied continuously.  For each binary, in one run:

  compress   a compressed migration (compress-threads 2, level 1,
             decompress-threads 2) to a destination of the same binary:
             total time, compressed pages, pages per second of total time.
  ring-full  KVM_EXIT_DIRTY_RING_FULL exits (trace event
             kvm_dirty_ring_full) during a calc-dirty-rate in dirty-ring
             mode (dirty logging on for CALC_SECS) with
             -accel kvm,dirty-ring-size=4096.
  throttle   the vCPU thread's CPU share (/proc) with auto-converge pinned
             at 20, 50, 80 and 99%, against its unthrottled share.

Usage: bench.py STOCK_BINARY PATCHED_BINARY TREE  (TREE: patched source)
Environment: BENCH_ROUNDS (3), BENCH_ONLY (compress,ring-full,throttle:
the sections to run).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, quit_qemu  # noqa: E402  (qemu-patches/qmp.py)
from proc_cpu import vcpu_cpu_secs  # noqa: E402  (qemu-patches/proc_cpu.py)

CALC_SECS = 10          # dirty logging window for the ring-full count
THROTTLE_SECS = 4       # CPU-share sampling window per throttle level
THROTTLE_PCTS = (20, 50, 80, 99)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# BENCH_ONLY=throttle (or compress, ring-full; comma-separated): run only those.
SECTIONS = ("compress", "ring-full", "throttle")
ONLY = [x for x in os.environ.get("BENCH_ONLY", ",".join(SECTIONS)).split(",") if x]


def bootsect(tree, path):
    text = open(os.path.join(tree, "tests/migration/i386/a-b-bootblock.h")).read()
    body = text[text.index("{") + 1:text.index("}")]
    data = bytes(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", body))
    with open(path, "wb") as f:
        f.write(data)


def start(binary, tmp, name, extra):
    qmp = os.path.join(tmp, f"{name}.qmp")
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    cmd = [binary, "-display", "none", "-m", "150M", "-name", name,
           "-serial", f"file:{tmp}/{name}.serial",
           "-drive", f"file={tmp}/bootsect,format=raw",
           "-qmp", f"unix:{qmp},server=on,wait=off"] + extra
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return p, QMP(qmp)


def wait_serial(tmp, name, timeout=60):
    path = f"{tmp}/{name}.serial"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name}: guest did not start")


def compress_run(binary, tmp):
    sock = f"{tmp}/mig.sock"
    dp, dq = start(binary, tmp, "dst", ["-accel", "kvm", "-incoming", f"unix:{sock}"])
    sp, sq = start(binary, tmp, "src", ["-accel", "kvm"])
    try:
        for q in (sq, dq):
            q.cmd("migrate-set-capabilities",
                  capabilities=[{"capability": "compress", "state": True}])
        sq.cmd("migrate-set-parameters", **{"compress-threads": 2, "compress-level": 1,
                                            "max-bandwidth": 1 << 40,
                                            "downtime-limit": 30000})
        dq.cmd("migrate-set-parameters", **{"decompress-threads": 2})
        wait_serial(tmp, "src")
        time.sleep(1)       # the guest has dirtied its 100 MiB at least once
        sq.cmd("migrate", uri=f"unix:{sock}")
        while True:
            info = sq.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        if info["status"] != "completed":
            raise RuntimeError(f"migration {info['status']}")
        ms = info["total-time"]
        comp = info.get("compression", {})
        return ms, comp.get("pages", 0), comp.get("busy", 0)
    finally:
        quit_qemu(sp, sq)
        quit_qemu(dp, dq)


def ringfull_run(binary, tmp):
    trace = f"{tmp}/trace.log"
    p, q = start(binary, tmp, "ring", ["-accel", "kvm,dirty-ring-size=4096",
                                       "-trace", "kvm_dirty_ring_full",
                                       "-trace", "kvm_dirty_ring_reap", "-D", trace])
    try:
        wait_serial(tmp, "ring")
        time.sleep(1)
        q.cmd("calc-dirty-rate", **{"calc-time": CALC_SECS, "mode": "dirty-ring"})
        while q.cmd("query-dirty-rate")["status"] != "measured":
            time.sleep(0.1)
        rate = q.cmd("query-dirty-rate").get("dirty-rate", 0)
    finally:
        quit_qemu(p, q)
    text = open(trace).read() if os.path.exists(trace) else ""
    return text.count("kvm_dirty_ring_full"), text.count("kvm_dirty_ring_reap "), rate


def vcpu_cpu_seconds(pid):
    """utime + stime of the "CPU 0/KVM" thread (debug-threads=on)."""
    secs = vcpu_cpu_secs(pid)
    if 0 not in secs:
        raise RuntimeError("no vCPU thread")
    return secs[0]


def share(pid, secs):
    c0, t0 = vcpu_cpu_seconds(pid), time.time()
    time.sleep(secs)
    return (vcpu_cpu_seconds(pid) - c0) / (time.time() - t0)


def throttle_run(binary, tmp, pct):
    """vCPU CPU share at auto-converge throttle pct, relative to the same
    vCPU's share in a migration without auto-converge just before.  The migration goes to exec:cat >/dev/null
    at 100 MB/s, which the guest's 100 MiB working set never lets converge;
    cpu-throttle-initial = max-cpu-throttle = pct pins the throttle."""
    p, q = start(binary, tmp, "thr", ["-accel", "kvm", "-name", "thr,debug-threads=on"])
    try:
        wait_serial(tmp, "thr")
        q.cmd("migrate-set-parameters", **{"cpu-throttle-initial": pct,
                                           "max-cpu-throttle": pct,
                                           "max-bandwidth": 100 << 20})
        # The baseline runs under the same dirty logging (its faults are
        # vCPU thread time too): a migration without auto-converge.
        q.cmd("migrate", uri="exec:cat > /dev/null")
        time.sleep(1)
        base = share(p.pid, THROTTLE_SECS)
        q.cmd("migrate_cancel")
        while q.cmd("query-migrate").get("status") not in ("cancelled", "failed"):
            time.sleep(0.1)
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "auto-converge", "state": True}])
        q.cmd("migrate", uri="exec:cat > /dev/null")
        deadline = time.time() + 60
        while q.cmd("query-migrate").get("cpu-throttle-percentage", 0) != pct:
            if time.time() > deadline:
                raise RuntimeError(f"throttle {pct} never engaged")
            time.sleep(0.1)
        time.sleep(0.5)
        thr = share(p.pid, THROTTLE_SECS)
        q.cmd("migrate_cancel")
    finally:
        quit_qemu(p, q)
    return 100.0 * (1 - thr / base) if base else float("nan")


def main():
    stock, patched, tree = sys.argv[1:4]
    unknown = [x for x in ONLY if x not in SECTIONS]
    if unknown:
        sys.exit(f"BENCH_ONLY: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    tmp = tempfile.mkdtemp(prefix="vmig-qemu-bench-")
    try:
        bootsect(tree, f"{tmp}/bootsect")
        rows = {}
        for label, binary in (("stock", stock), ("patched", patched)):
            rows[label] = {"comp": [], "ring": [], "thr": []}
        for r in range(ROUNDS):          # interleaved: same load for both
            for label, binary in (("stock", stock), ("patched", patched)):
                if "compress" in ONLY:
                    rows[label]["comp"].append(compress_run(binary, tmp))
                if "ring-full" in ONLY:
                    rows[label]["ring"].append(ringfull_run(binary, tmp))
                if "throttle" in ONLY:
                    rows[label]["thr"].append(
                        [throttle_run(binary, tmp, pct) for pct in THROTTLE_PCTS])
        load = open("/proc/loadavg").read().split()[0]
        print(f"qemu-bench: {ROUNDS} interleaved rounds of {', '.join(ONLY)}, load {load} at the end")
        med = lambda v: sorted(v)[len(v) // 2]
        if "compress" in ONLY and "ring-full" in ONLY:
            print(f"{'binary':8} | {'compressed migration':>22} | {'compressed pages':>16} | "
                  f"{'pages/s':>9} | {'busy':>6} | {'ring-full exits':>15} | {'reaps':>6} | dirty MB/s")
        for label in ("stock", "patched"):
            if not ("compress" in ONLY and "ring-full" in ONLY):
                break
            c, g = rows[label]["comp"], rows[label]["ring"]
            ms = med([x[0] for x in c])
            pages = med([x[1] for x in c])
            pps = med([x[1] / (x[0] / 1000) for x in c])
            busy = med([x[2] for x in c])
            full = med([x[0] for x in g])
            reaps = med([x[1] for x in g])
            rate = med([x[2] for x in g])
            print(f"{label:8} | {ms:>19} ms | {pages:>16} | {pps:>9.0f} | {busy:>6} | "
                  f"{full:>15} | {reaps:>6} | {rate}")
        if "throttle" not in ONLY:
            print("raw:", json.dumps(rows))
            return
        print()
        print("measured throttle (100 * (1 - vCPU CPU share / unthrottled share)), target:")
        print(f"{'binary':8} | " + " | ".join(f"{p:>6}%" for p in THROTTLE_PCTS))
        for label in ("stock", "patched"):
            t = rows[label]["thr"]
            print(f"{label:8} | " + " | ".join(
                f"{med([r[i] for r in t]):>6.1f}%" for i in range(len(THROTTLE_PCTS))))
        print("medians of the rounds; raw:", json.dumps(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
