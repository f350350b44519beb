#!/usr/bin/env python3
"""Compressed migration of a realistic guest, stock versus patched QEMU.

The guest (qemu-patches/guest/linux-fill) is Debian's cloud kernel under
TCG with a busybox initramfs whose fill program fills its RAM with the
code/text/zero/random mix of benches/pool.rs; its RAM is a shared file in
/dev/shm so that the host can read the very pages QEMU sends.  One source
per binary is booted, waits for the fill's marker and is stopped (the
source is paused for every migration, so each one sends the same pages
once and nothing is dirtied behind it); then, in BENCH_ROUNDS rounds, the
two binaries take turns (the first alternates per round):

  source  for each compress-threads N in BENCH_THREADS: compress on,
          compress-level 1, the link unlimited, migrate to
          exec:cat > /dev/null, so only the source side is measured:
          total-time, compressed pages (query-migrate), pages/s.
  raw     the raw single-core rate of the same deflate on the same pages
          (sim/src/bin/page-deflate-rate.rs: the pages of the patched
          source's RAM that are not zero, once each, zlib-rs level 1 as
          libvmig's pool runs it and the system zlib level 1 as stock
          QEMU's threads do), so "% of min(N, cores) x raw" can be given.
  e2e     for each N in BENCH_E2E_THREADS: a destination of the same
          binary on this host (-incoming on a unix socket,
          decompress-threads N), timed from the migrate command until the
          destination reports completed.

Prints medians over the rounds of pages/s and of the per-round ratios.

Usage: bench-comp.py STOCK_BINARY PATCHED_BINARY WORK_DIR
  (WORK_DIR keeps the downloaded kernel and busybox between runs)
Environment: BENCH_ROUNDS (3), BENCH_THREADS (1,2,4), BENCH_E2E_THREADS (2),
  PAGE_DEFLATE_RATE (the page-deflate-rate binary; default: cargo builds it).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "guest", "linux-fill"))
from qmp import QMP, quit_qemu  # noqa: E402  (qemu-patches/qmp.py)
from proc_cpu import process_cpu_secs  # noqa: E402  (qemu-patches/proc_cpu.py)
import build as linux_fill  # noqa: E402  (guest/linux-fill/build.py)

# 256 MiB: about 36 k filled pages plus the kernel's, enough that the
# slowest contender (stock, 1 thread, ~7 k pages/s) runs for seconds,
# while a TCG boot and the fill take well under a minute.
RAM_MIB = 256
MARKER = "VMIG-FILL-DONE"
BOOT_TIMEOUT = 600      # TCG boot + fill on a loaded 2-core machine
MIGRATE_TIMEOUT = 600
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
THREADS = [int(x) for x in os.environ.get("BENCH_THREADS", "1,2,4").split(",") if x]
E2E_THREADS = [int(x) for x in os.environ.get("BENCH_E2E_THREADS", "2").split(",") if x]
CORES = os.cpu_count()


def med(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


class Guest:
    """One QEMU process of the benchmark (source or destination)."""

    def __init__(self, binary, tmp, name, kernel, initrd, incoming=False):
        self.name, self.tmp = name, tmp
        self.serial = os.path.join(tmp, f"{name}.serial")
        self.shm = None
        if incoming:
            mem = f"memory-backend-ram,id=pc.ram,size={RAM_MIB}M"
        else:
            self.shm = f"/dev/shm/vmig-bench-comp-{os.getpid()}-{name}"
            mem = f"memory-backend-file,id=pc.ram,size={RAM_MIB}M,mem-path={self.shm},share=on"
        qmp = os.path.join(tmp, f"{name}.qmp")
        cmd = [binary, "-nodefaults", "-display", "none", "-accel", "tcg",
               "-m", f"{RAM_MIB}M", "-object", mem, "-machine", "pc,memory-backend=pc.ram",
               "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 rdinit=/init quiet panic=-1",
               "-serial", f"file:{self.serial}", "-no-reboot",
               "-qmp", f"unix:{qmp},server=on,wait=off"]
        if incoming:
            cmd += ["-incoming", "defer"]
        self.log = open(os.path.join(tmp, f"{name}.log"), "w")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.q = QMP(qmp)

    def marker(self):
        """The fill's marker line, or None while it is not printed yet."""
        if self.p.poll() is not None:
            raise RuntimeError(f"{self.name}: QEMU exited ({self.p.returncode}), see {self.log.name}")
        try:
            text = open(self.serial, errors="replace").read()
        except FileNotFoundError:
            return None
        if "VMIG-FILL-FAILED" in text:
            raise RuntimeError(f"{self.name}: the fill failed:\n{text[-2000:]}")
        for line in text.splitlines():
            if line.startswith(MARKER):
                return line
        return None

    def quit(self):
        quit_qemu(self.p, self.q, timeout=20)
        if self.shm and os.path.exists(self.shm):
            os.unlink(self.shm)


def set_compress(q, threads):
    q.cmd("migrate-set-capabilities", capabilities=[{"capability": "compress", "state": True}])
    q.cmd("migrate-set-parameters", **{"compress-threads": threads, "compress-level": 1,
                                       "decompress-threads": threads,
                                       "max-bandwidth": 1 << 40})


def wait_migration(q, what):
    deadline = time.time() + MIGRATE_TIMEOUT
    while True:
        info = q.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.time() > deadline:
            raise RuntimeError(f"{what}: migration still {info.get('status')} after {MIGRATE_TIMEOUT}s")
        time.sleep(0.01)
    if info["status"] != "completed":
        raise RuntimeError(f"{what}: migration {info['status']}: {info.get('error-desc', '')}")
    return info


def repause(src):
    """QEMU refuses to migrate a source a completed migration paused
    ("postmigrate"): let it run for a moment and pause it again (the guest
    is idle in its fill program; a few kernel pages change)."""
    if src.q.cmd("query-status")["status"] == "postmigrate":
        src.q.cmd("cont")
        src.q.cmd("stop")


def source_run(src, threads):
    """One migration of the paused source to exec:cat > /dev/null."""
    repause(src)
    set_compress(src.q, threads)
    cpu0 = process_cpu_secs(src.p.pid)
    src.q.cmd("migrate", uri="exec:cat > /dev/null")
    info = wait_migration(src.q, f"{src.name} x{threads}")
    cpu = process_cpu_secs(src.p.pid) - cpu0
    comp = info.get("compression", {})
    ms = info["total-time"]
    return {"ms": ms, "pages": comp.get("pages", 0), "pps": comp.get("pages", 0) / (ms / 1000),
            "cores": cpu / (ms / 1000), "cpu_us": cpu * 1e6 / max(comp.get("pages", 0), 1),
            "normal": info["ram"]["normal"], "zero": info["ram"]["duplicate"],
            "bytes": info["ram"]["transferred"]}


def e2e_run(binary, src, threads, tmp, kernel, initrd):
    """The paused source into a destination of the same binary on this host."""
    dst = Guest(binary, tmp, f"{src.name}-dst", kernel, initrd, incoming=True)
    sock = os.path.join(tmp, f"{src.name}-mig.sock")
    try:
        repause(src)
        set_compress(src.q, threads)
        set_compress(dst.q, threads)
        dst.q.cmd("migrate-incoming", uri=f"unix:{sock}")
        t0 = time.time()
        src.q.cmd("migrate", uri=f"unix:{sock}")
        wait_migration(dst.q, f"{dst.name} x{threads}")
        secs = time.time() - t0
        info = wait_migration(src.q, f"{src.name} x{threads} (e2e)")
        pages = info.get("compression", {}).get("pages", 0)
        return {"ms": secs * 1000, "pages": pages, "pps": pages / secs}
    finally:
        dst.quit()
        if os.path.exists(sock):
            os.unlink(sock)


def raw_rates(tool, ram_file):
    """The raw rates of one deflate process alone, then the summed wall
    rate of CORES of them at once: whether the cores really add up to
    CORES x one (they need not on a virtual machine whose vCPUs share
    physical cores, or under other load)."""
    out = json.loads(subprocess.run(tool + [ram_file, "1"], check=True, capture_output=True,
                                    text=True).stdout)
    procs = [subprocess.Popen(tool + [ram_file, "1"], stdout=subprocess.PIPE, text=True)
             for _ in range(CORES)]
    together = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("page-deflate-rate failed")
    out["together"] = {b: sum(x[b]["pages_per_s"] for x in together) for b in ("zlib-rs", "zlib")}
    return out


def page_deflate_rate(repo):
    if os.environ.get("PAGE_DEFLATE_RATE"):
        return [os.environ["PAGE_DEFLATE_RATE"]]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "vmig-sim", "--bin", "page-deflate-rate"],
                   cwd=repo, check=True)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=repo, check=True, capture_output=True, text=True).stdout)
    return [os.path.join(meta["target_directory"], "release", "page-deflate-rate")]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    stock, patched, work = sys.argv[1:4]
    # a timeout's SIGTERM still quits the guests and removes their RAM files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench-comp: terminated"))
    repo = os.path.dirname(HERE)
    tool = page_deflate_rate(repo)
    kernel, initrd, kver, bver = linux_fill.build(os.path.join(work, "linux-fill"))
    tmp = tempfile.mkdtemp(prefix="vmig-bench-comp-")
    binaries = (("stock", stock), ("patched", patched))
    srcs = {}
    try:
        t0 = time.time()
        for label, binary in binaries:      # both boot at once
            srcs[label] = Guest(binary, tmp, label, kernel, initrd)
        markers = {}
        while len(markers) < len(srcs):
            if time.time() - t0 > BOOT_TIMEOUT:
                raise RuntimeError(f"no {MARKER} after {BOOT_TIMEOUT}s")
            for label, g in srcs.items():
                if label not in markers and (m := g.marker()):
                    markers[label] = m
                    g.q.cmd("stop")
            time.sleep(0.2)
        boot_secs = time.time() - t0
        load0 = loadavg()
        res = {label: {n: [] for n in THREADS} for label, _ in binaries}
        e2e = {label: {n: [] for n in E2E_THREADS} for label, _ in binaries}
        raw = []
        for r in range(ROUNDS):
            order = binaries if r % 2 == 0 else binaries[::-1]
            raw.append(raw_rates(tool, srcs["patched"].shm))
            print(f"bench-comp: round {r + 1}/{ROUNDS}, raw zlib-rs "
                  f"{raw[-1]['zlib-rs']['pages_per_cpu_s']:.0f} pages per CPU-second", file=sys.stderr)
            for n in THREADS:
                for label, _ in order:
                    res[label][n].append(source_run(srcs[label], n))
                    print(f"bench-comp: {label} x{n}: {res[label][n][-1]['pps']:.0f} pages/s", file=sys.stderr)
            for n in E2E_THREADS:
                for label, binary in order:
                    e2e[label][n].append(e2e_run(binary, srcs[label], n, tmp, kernel, initrd))
        load1 = loadavg()
    finally:
        for g in srcs.values():
            g.quit()
        shutil.rmtree(tmp, ignore_errors=True)

    r0 = raw[0]
    print(f"qemu-bench (compression, realistic guest): {ROUNDS} rounds, stock and patched taking turns; "
          f"{CORES} cores; load {load0} before, {load1} after")
    print(f"guest: {kver}, {bver}, TCG, {RAM_MIB} MiB, booted and filled in {boot_secs:.0f} s; "
          f"source paused for every migration")
    for label in ("stock", "patched"):
        print(f"  {label}: {markers[label]}")
    print(f"  RAM pages {r0['pages']}, zero {r0['zero_pages']}, "
          f"non-zero {r0['pages'] - r0['zero_pages']}")
    def rate(backend, key):
        return med([x[backend][key] for x in raw])
    print(f"raw single-core level 1 on the non-zero pages (medians): zlib-rs "
          f"{rate('zlib-rs', 'pages_per_cpu_s'):.0f} pages per CPU-second "
          f"({rate('zlib-rs', 'cpu_us_per_page'):.1f} us/page; {rate('zlib-rs', 'pages_per_s'):.0f} per wall "
          f"second), ratio {r0['zlib-rs']['ratio']:.2f}; system zlib {rate('zlib', 'pages_per_cpu_s'):.0f} "
          f"per CPU-second ({rate('zlib', 'cpu_us_per_page'):.1f} us/page; {rate('zlib', 'pages_per_s'):.0f} "
          f"per wall second), ratio {r0['zlib']['ratio']:.2f}")
    tog = med([x["together"]["zlib-rs"] / x["zlib-rs"]["pages_per_s"] for x in raw])
    print(f"{CORES} such processes at once: zlib-rs {med([x['together']['zlib-rs'] for x in raw]):.0f} pages/s "
          f"in total = {tog:.2f}x one alone (wall), system zlib "
          f"{med([x['together']['zlib'] for x in raw]):.0f} pages/s")
    print()
    print("source side, migrate to exec:cat > /dev/null (medians of the rounds):")
    print(f"{'threads':>7} | {'stock ms':>8} {'pages/s':>8} {'cores':>5} {'% lim':>6} | {'patched ms':>10} "
          f"{'pages/s':>8} {'cores':>5} {'us/pg':>5} {'% lim':>6} | {'patched/stock':>13} | "
          f"compressed pages stock/patched")
    verdicts = []
    for n in THREADS:
        s, p = res["stock"][n], res["patched"][n]
        lim = min(n, CORES)
        ratio = med([b["pps"] / a["pps"] for a, b in zip(s, p)])
        s_lim = med([a["pps"] / (lim * x["zlib"]["pages_per_cpu_s"]) for a, x in zip(s, raw)]) * 100
        p_lim = med([b["pps"] / (lim * x["zlib-rs"]["pages_per_cpu_s"]) for b, x in zip(p, raw)]) * 100
        print(f"{n:>7} | {med([a['ms'] for a in s]):>8.0f} {med([a['pps'] for a in s]):>8.0f} "
              f"{med([a['cores'] for a in s]):>5.2f} {s_lim:>5.0f}% | "
              f"{med([b['ms'] for b in p]):>10.0f} {med([b['pps'] for b in p]):>8.0f} "
              f"{med([b['cores'] for b in p]):>5.2f} {med([b['cpu_us'] for b in p]):>5.1f} {p_lim:>5.0f}% | "
              f"{ratio:>12.2f}x | {med([a['pages'] for a in s]):.0f}/{med([b['pages'] for b in p]):.0f}")
        verdicts.append(f"source {n} thread(s): patched/stock {ratio:.2f}x (goal >= 4x: "
                        f"{'met' if ratio >= 4 else 'NOT met'}), {p_lim:.0f}% of min({n}, {CORES}) x raw "
                        f"zlib-rs (goal >= 75%: {'met' if p_lim >= 75 else 'NOT met'})")
    print("  % lim: pages/s against min(threads, cores) x the raw single-core rate (per CPU-second) of "
          "the binary's own deflate (stock: system zlib, patched: zlib-rs), same round;\n"
          "  cores: CPU-seconds the source process used per second of the migration (what the "
          "scheduler gave it); us/pg: its CPU per compressed page, against the raw us/page above")
    if E2E_THREADS:
        print()
        print("end to end, destination of the same binary on this host (unix socket), "
              "migrate until the destination completed:")
        print(f"{'threads':>7} | {'stock ms':>8} {'pages/s':>8} | {'patched ms':>10} {'pages/s':>8} | patched/stock")
        for n in E2E_THREADS:
            s, p = e2e["stock"][n], e2e["patched"][n]
            ratio = med([b["pps"] / a["pps"] for a, b in zip(s, p)])
            print(f"{n:>7} | {med([a['ms'] for a in s]):>8.0f} {med([a['pps'] for a in s]):>8.0f} | "
                  f"{med([b['ms'] for b in p]):>10.0f} {med([b['pps'] for b in p]):>8.0f} | {ratio:>12.2f}x")
            if n == 2:
                verdicts.append(f"end to end 2 threads: patched/stock {ratio:.2f}x (goal >= 3.5x: "
                                f"{'met' if ratio >= 3.5 else 'NOT met'})")
    print()
    for v in verdicts:
        print("goal:", v)
    print("raw:", json.dumps({"source": res, "e2e": e2e, "raw": raw}))


if __name__ == "__main__":
    main()
