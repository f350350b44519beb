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

Usage: bench.py STOCK_BINARY PATCHED_BINARY TREE  (TREE: patched source)
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CALC_SECS = 10          # dirty logging window for the ring-full count
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


class QMP:
    def __init__(self, path, timeout=120):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())            # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")
            return r["return"]


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


def stop(p, q):
    try:
        q.cmd("quit")
    except Exception:
        pass
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


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
        stop(sp, sq)
        stop(dp, dq)


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
        stop(p, q)
    text = open(trace).read() if os.path.exists(trace) else ""
    return text.count("kvm_dirty_ring_full"), text.count("kvm_dirty_ring_reap "), rate


def main():
    stock, patched, tree = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix="vmig-qemu-bench-")
    try:
        bootsect(tree, f"{tmp}/bootsect")
        rows = {}
        for label, binary in (("stock", stock), ("patched", patched)):
            rows[label] = {"comp": [], "ring": []}
        for r in range(ROUNDS):          # interleaved: same load for both
            for label, binary in (("stock", stock), ("patched", patched)):
                rows[label]["comp"].append(compress_run(binary, tmp))
                rows[label]["ring"].append(ringfull_run(binary, tmp))
        load = open("/proc/loadavg").read().split()[0]
        print(f"qemu-bench: {ROUNDS} interleaved rounds, load {load} at the end")
        print(f"{'binary':8} | {'compressed migration':>22} | {'compressed pages':>16} | "
              f"{'pages/s':>9} | {'busy':>6} | {'ring-full exits':>15} | {'reaps':>6} | dirty MB/s")
        med = lambda v: sorted(v)[len(v) // 2]
        for label in ("stock", "patched"):
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
        print("medians of the rounds; raw:", json.dumps(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
