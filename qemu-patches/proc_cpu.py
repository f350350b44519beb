"""CPU time of a QEMU process and of its vCPU threads, from /proc, for
the benches (bench.py, bench-smp.py, bench-comp.py)."""

import os
import re


def _stat_cpu_secs(path):
    """utime + stime of a /proc stat file, in seconds."""
    f = open(path).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_secs(pid):
    """utime + stime of a whole process, its exited threads included."""
    return _stat_cpu_secs(f"/proc/{pid}/stat")


def vcpu_cpu_secs(pid):
    """{vCPU index: utime + stime} of QEMU pid's vCPU threads, the threads
    named "CPU n/..." (-name ...,debug-threads=on)."""
    secs = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            m = re.match(r"CPU (\d+)/", open(f"/proc/{pid}/task/{tid}/comm").read())
            if m:
                secs[int(m.group(1))] = _stat_cpu_secs(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            pass                        # the thread exited meanwhile
    return secs
