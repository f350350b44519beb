"""A minimal QMP client for the qemu-patches benchmarks (bench*.py).

One UNIX-socket connection per QEMU: waits for the socket, reads the
greeting, negotiates capabilities; cmd() returns a command's "return" or
raises on its "error", skipping asynchronous events.  quit_qemu() ends a
QEMU process through it.
"""
import json
import socket
import subprocess
import time


class QMP:
    def __init__(self, path, timeout=120):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
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


def quit_qemu(p, q, timeout=10):
    """Asks QEMU process `p` to quit over its QMP connection `q`, waits up
    to `timeout` seconds for it to exit, and kills it if it does not (also
    when QMP is already gone)."""
    try:
        q.cmd("quit")
    except Exception:
        pass
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
