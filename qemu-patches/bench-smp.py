#!/usr/bin/env python3
"""Stock versus patched QEMU, reaper and throttle, on a multi-vCPU guest
that dirties memory at a set rate (make qemu-bench).

The guest is qemu-patches/guest/smp-dirty.S, assembled here and booted
from a raw drive as migration-test boots its boot sector: every vCPU
writes one byte per 4 KiB page of its own 64 MiB at RATE pages per second
(0: as fast as it can) and counts the pages it wrote.  For each binary,
stock and patched interleaved in every round (same load for both):

  ring-full  -accel kvm,dirty-ring-size=4096, the guest at each rate of
             RING_RATES on every vCPU; KVM_EXIT_DIRTY_RING_FULL exits
             (trace event kvm_dirty_ring_full) and reaps (kvm_dirty_ring_reap)
             during a calc-dirty-rate in dirty-ring mode (dirty logging on
             for CALC_SECS seconds), and the dirty rate QEMU measured.
             The stock reaper sleeps one second, so from about 4000 pages/s
             per vCPU each ring fills before it is collected.  A vCPU
             whose ring is full exits again and again until a reap with
             entries resets it (on kernel 6.18 here: hundreds of
             thousands of exits in 10 s, trace-log bound), so the exits
             are also counted as episodes (runs of exits between two
             non-empty reaps), and the guest's own progress (pages/s it
             wrote, all vCPUs) shows what the stalls cost it.
  throttle   the guest as fast as it can, migrating to exec:cat at 20
             MB/s with a 1 ms downtime limit (never converges) with auto-converge pinned at 20, 50,
             80 and 99 %: the throttle measured as 1 - the guest's own
             progress (pages written by all vCPUs per second) / its
             progress in the same migration without auto-converge, and the
             spread between the vCPUs (min and max of the per-vCPU
             throttle).  The VM-wide timer of stock QEMU skips a vCPU that
             is still asleep at its tick, which only a guest with several
             vCPUs can show.

Usage: bench-smp.py STOCK_BINARY PATCHED_BINARY [LABEL]
Environment: BENCH_ROUNDS (2), BENCH_VCPUS (2), SMP_BENCH_ONLY (ring-full,throttle),
RING_RATES (comma-separated pages/s per vCPU, default 2000,8000,32000),
THROTTLE_PCTS (default 20,50,80,99).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QMP, quit_qemu  # noqa: E402  (qemu-patches/qmp.py)
from proc_cpu import vcpu_cpu_secs  # noqa: E402  (qemu-patches/proc_cpu.py)

HERE = os.path.dirname(os.path.abspath(__file__))
CALC_SECS = 10          # dirty logging window for the ring-full count
THROTTLE_SECS = 4       # progress sampling window per throttle level
MIGRATE_BW = 20 << 20   # bytes/s: the first pass over the guest's RAM takes
                        # ~8 s, then auto-converge engages
THROTTLE_PCTS = tuple(int(x) for x in os.environ.get("THROTTLE_PCTS", "20,50,80,99").split(","))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
VCPUS = int(os.environ.get("BENCH_VCPUS", "2"))
RING_RATES = [int(x) for x in os.environ.get("RING_RATES", "2000,8000,32000").split(",")]
SECTIONS = ("ring-full", "throttle")
ONLY = [x for x in os.environ.get("SMP_BENCH_ONLY", ",".join(SECTIONS)).split(",") if x]
# Layout of the guest (qemu-patches/guest/smp-dirty.S)
RATE_OFFSET = 0x1f0
COUNTERS = 0x9000
MEM_MIB = 2 + 64 * VCPUS + 30     # MEM_START + slices + slack


def build_guest(tmp):
    """Assemble the guest as migration-test's Makefile does its boot sector."""
    obj, flat = f"{tmp}/smp-dirty.o", f"{tmp}/smp-dirty.boot"
    subprocess.run(["gcc", "-m32", "-c", os.path.join(HERE, "guest/smp-dirty.S"), "-o", obj],
                   check=True)
    subprocess.run(["objcopy", "-O", "binary", obj, flat], check=True)
    data = open(flat, "rb").read()[0x7c00:0x7e00]
    if len(data) != 512 or data[510:] != b"\x55\xaa":
        sys.exit("bench-smp: the guest is not a 512-byte boot sector")
    return data


def image(tmp, sector, rate):
    path = f"{tmp}/guest-{rate}.img"
    b = bytearray(sector)
    b[RATE_OFFSET:RATE_OFFSET + 4] = rate.to_bytes(4, "little")
    open(path, "wb").write(b)
    return path


def start(binary, tmp, name, img, extra):
    qmp = os.path.join(tmp, f"{name}.qmp")
    log = open(os.path.join(tmp, f"{name}.log"), "w")
    cmd = [binary, "-display", "none", "-nodefaults", "-m", f"{MEM_MIB}M",
           "-smp", str(VCPUS), "-name", f"{name},debug-threads=on",
           "-serial", f"file:{tmp}/{name}.serial",
           "-drive", f"file={img},format=raw",
           "-qmp", f"unix:{qmp},server=on,wait=off"] + extra
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    return p, QMP(qmp)


def wait_guest(tmp, name, timeout=180):
    """Until every vCPU has printed its letter."""
    path = f"{tmp}/{name}.serial"
    want = {chr(ord("A") + i) for i in range(VCPUS)}
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and want <= set(open(path).read()):
            return
        time.sleep(0.05)
    seen = open(path).read() if os.path.exists(path) else ""
    raise RuntimeError(f"{name}: not every vCPU started (serial: {seen!r})")


def died(p, tmp, name):
    """For a run whose QMP connection broke (called while that OSError or
    ValueError is handled): if QEMU exited, the run's result, why it died
    (the last line of its log that is not a warning: stock 7.2 aborts on
    a short dirty ring reset, "Assertion `ret == total' failed", when KVM
    overruns a ring); if it still runs, the error goes on up."""
    time.sleep(1)                       # time to exit after the pipe broke
    if p.poll() is None:
        raise                           # noqa: PLE0704 (the handled error)
    lines = [x.strip() for x in open(os.path.join(tmp, f"{name}.log"))
             if x.strip() and "warning:" not in x]
    return {"died": lines[-1][-100:] if lines else f"exit status {p.returncode}"}


def progress(q, tmp):
    """Pages written so far by each vCPU (the guest's counters)."""
    path = f"{tmp}/counters.bin"
    q.cmd("pmemsave", val=COUNTERS, size=16 * VCPUS, filename=path)
    b = open(path, "rb").read()
    return [int.from_bytes(b[16 * i:16 * i + 4], "little") for i in range(VCPUS)], time.time()


def vcpu_cpu_list(pid):
    """CPU seconds used so far by each vCPU thread, in vCPU order (NaN for
    one not found)."""
    secs = vcpu_cpu_secs(pid)
    return [secs.get(i, float("nan")) for i in range(VCPUS)]


def rates(q, tmp, secs, pid):
    """Pages per second written by each vCPU over secs (32-bit counters),
    and the share of that time each vCPU thread was on a host CPU."""
    c0, t0 = progress(q, tmp)
    u0 = vcpu_cpu_list(pid)
    time.sleep(secs)
    c1, t1 = progress(q, tmp)
    u1 = vcpu_cpu_list(pid)
    return ([((b - a) & 0xffffffff) / (t1 - t0) for a, b in zip(c0, c1)],
            [(b - a) / (t1 - t0) for a, b in zip(u0, u1)])


def ringfull_run(binary, tmp, sector, rate):
    trace = f"{tmp}/trace.log"
    if os.path.exists(trace):
        os.unlink(trace)
    p, q = start(binary, tmp, "ring", image(tmp, sector, rate),
                 ["-accel", "kvm,dirty-ring-size=4096",
                  "-trace", "kvm_dirty_ring_full", "-trace", "kvm_dirty_ring_reap",
                  "-D", trace])
    try:
        wait_guest(tmp, "ring")
        time.sleep(1)
        q.cmd("calc-dirty-rate", **{"calc-time": CALC_SECS, "mode": "dirty-ring"})
        g, _ = rates(q, tmp, CALC_SECS - 1, p.pid)
        while q.cmd("query-dirty-rate")["status"] != "measured":
            time.sleep(0.1)
        mbps = q.cmd("query-dirty-rate").get("dirty-rate", 0)
    except (OSError, ValueError):
        return died(p, tmp, "ring")     # QMP broke: QEMU died, a result too
    finally:
        quit_qemu(p, q)
    full = reaps = episodes = 0
    after_reap = True
    for line in open(trace) if os.path.exists(trace) else ():
        if "kvm_dirty_ring_full" in line:
            full += 1
            episodes += after_reap
            after_reap = False
        elif "kvm_dirty_ring_reap " in line:
            reaps += 1
            after_reap = True
    return {"full": full, "episodes": episodes, "reaps": reaps,
            "dirty_mbps": mbps, "guest_pps": round(sum(g))}


def throttle_run(binary, tmp, sector, pct):
    p, q = start(binary, tmp, "thr", image(tmp, sector, 0), ["-accel", "kvm"])
    try:
        wait_guest(tmp, "thr")
        # MIGRATE_BW is below the guest's dirty rate even at 99 %
        # throttle, and a 1 ms downtime limit leaves no room to converge.
        q.cmd("migrate-set-parameters", **{"cpu-throttle-initial": pct,
                                           "max-cpu-throttle": pct,
                                           "max-bandwidth": MIGRATE_BW,
                                           "downtime-limit": 1})
        # The baseline runs under the same dirty logging: a migration
        # without auto-converge.
        q.cmd("migrate", uri="exec:cat > /dev/null")
        time.sleep(1)
        base, base_cpu = rates(q, tmp, THROTTLE_SECS, p.pid)
        q.cmd("migrate_cancel")
        while q.cmd("query-migrate").get("status") not in ("cancelled", "failed"):
            time.sleep(0.1)
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": "auto-converge", "state": True}])
        q.cmd("migrate", uri="exec:cat > /dev/null")
        deadline = time.time() + 90
        while q.cmd("query-migrate").get("cpu-throttle-percentage", 0) != pct:
            if time.time() > deadline:
                raise RuntimeError(f"throttle {pct} never engaged")
            time.sleep(0.1)
        time.sleep(0.5)
        thr, thr_cpu = rates(q, tmp, THROTTLE_SECS, p.pid)
        status = q.cmd("query-migrate").get("status")
        if status != "active":
            raise RuntimeError(f"throttle {pct}: the migration ended ({status}) "
                               "while the throttle was measured")
        q.cmd("migrate_cancel")
    except (OSError, ValueError):
        return died(p, tmp, "thr")
    finally:
        quit_qemu(p, q)
    per = [100.0 * (1 - t / b) if b else float("nan") for t, b in zip(thr, base)]
    total = 100.0 * (1 - sum(thr) / sum(base)) if sum(base) else float("nan")
    # The same from the vCPU threads' CPU time: progress alone also moves
    # with how many of the guest's writes fault on write-protected pages,
    # which differs between the windows (syncs re-protect pages).
    cpu = 100.0 * (1 - sum(thr_cpu) / sum(base_cpu)) if sum(base_cpu) else float("nan")
    return {"total": round(total, 1), "min": round(min(per), 1), "max": round(max(per), 1),
            "cpu": round(cpu, 1), "cpu_share": [round(x, 3) for x in thr_cpu],
            "cpu_share_base": [round(x, 3) for x in base_cpu]}


def main():
    stock, patched = sys.argv[1:3]
    label = sys.argv[3] if len(sys.argv) > 3 else ""
    unknown = [x for x in ONLY if x not in SECTIONS]
    if unknown:
        sys.exit(f"SMP_BENCH_ONLY: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    tmp = tempfile.mkdtemp(prefix="vmig-qemu-bench-smp-")
    try:
        sector = build_guest(tmp)
        rows = {b: {"ring": {r: [] for r in RING_RATES}, "thr": {p: [] for p in THROTTLE_PCTS}}
                for b in ("stock", "patched")}
        load0 = open("/proc/loadavg").read().split()[0]
        for _ in range(ROUNDS):          # interleaved: same load for both
            for name, binary in (("stock", stock), ("patched", patched)):
                if "ring-full" in ONLY:
                    for r in RING_RATES:
                        rows[name]["ring"][r].append(ringfull_run(binary, tmp, sector, r))
                if "throttle" in ONLY:
                    for pct in THROTTLE_PCTS:
                        rows[name]["thr"][pct].append(throttle_run(binary, tmp, sector, pct))
        load1 = open("/proc/loadavg").read().split()[0]
        print(f"qemu-bench {label}: {VCPUS}-vCPU smp-dirty guest, {ROUNDS} interleaved rounds, "
              f"load {load0} at the start, {load1} at the end; each cell: the rounds' values")
        seq = lambda v: " / ".join(str(x) for x in v)
        died_runs = [(name, what, x["died"]) for name in ("stock", "patched")
                     for what in ("ring", "thr") for k, v in rows[name][what].items()
                     for x in v if "died" in x]
        for name, what, why in died_runs:
            print(f"{name}: QEMU died in a {what} run: {why}")
        if "ring-full" in ONLY:
            print(f"ring-full exits in {CALC_SECS} s of dirty-ring logging (episodes; non-empty "
                  "reaps; dirty MB/s QEMU measured; guest pages/s, all vCPUs)")
            print(f"{'pages/s per vCPU':>16} | {'stock':^52} | {'patched':^52}")
            for r in RING_RATES:
                cells = []
                for name in ("stock", "patched"):
                    v = [x for x in rows[name]["ring"][r] if "died" not in x]
                    lost = len(rows[name]["ring"][r]) - len(v)
                    if not v:
                        cells.append(f"QEMU died ({lost}/{lost} runs)")
                        continue
                    cells.append((f"[{lost} died] " if lost else "") +
                                 f"{seq([x['full'] for x in v])} ({seq([x['episodes'] for x in v])}; "
                                 f"{seq([x['reaps'] for x in v])}; "
                                 f"{seq([x['dirty_mbps'] for x in v])}; "
                                 f"{seq([x['guest_pps'] for x in v])})")
                print(f"{r:>16} | {cells[0]:52} | {cells[1]:52}")
        if "throttle" in ONLY:
            print("measured throttle, 100 * (1 - guest progress / progress unthrottled), all "
                  "vCPUs [per-vCPU min..max]; cpu: the same from the vCPU threads' CPU time")
            print(f"{'target':>6} | {'stock':^40} | {'patched':^40}")
            for pct in THROTTLE_PCTS:
                cells = []
                for name in ("stock", "patched"):
                    v = rows[name]["thr"][pct]
                    cells.append(" / ".join("died" if "died" in x else
                                            f"{x['total']}% [{x['min']}..{x['max']}] cpu {x['cpu']}%"
                                            for x in v))
                print(f"{pct:>5}% | {cells[0]:40} | {cells[1]:40}")
        print("raw:", json.dumps(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
