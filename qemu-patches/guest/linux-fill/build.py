#!/usr/bin/env python3
"""Builds the realistic guest of bench-comp.py: a kernel and an initramfs.

Kernel: Debian 12's cloud kernel, the package linux-image-cloud-amd64
depends on at build time (apt-get download + dpkg -x; its version is
returned and printed by the benchmark).  Initramfs (newc cpio written
here, so no cpio tool is needed): busybox-static's /bin/busybox, /init
(a busybox sh script), /fill (fill.c, built with the host cc -static)
and /corpus, the text fill.c copies into its text pages: the host's
/usr/share/common-licenses and /usr/include/*.h (English and C text,
present on every Debian 12 with a C toolchain), in sorted order.

Usage: build.py WORKDIR   (prints the kernel, the initrd and the version)
"""
import os
import stat
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
APT = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "-qq"]

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/fill /corpus/* || echo VMIG-FILL-FAILED
while :; do /bin/busybox sleep 3600; done
"""


def apt_extract(work, pkg):
    """Downloads @pkg (apt-get download) and extracts it; its root and version."""
    root = os.path.join(work, pkg)
    stamp = os.path.join(root, ".vmig-version")
    if os.path.exists(stamp):
        return root, open(stamp).read().strip()
    dl = os.path.join(work, "dl")
    os.makedirs(dl, exist_ok=True)
    subprocess.run(APT + ["download", pkg], cwd=dl, check=True)
    deb = [f for f in os.listdir(dl) if f.startswith(pkg + "_") and f.endswith(".deb")]
    if len(deb) != 1:
        raise RuntimeError(f"apt-get download {pkg}: found {deb}")
    deb = os.path.join(dl, deb[0])
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    open(stamp, "w").write(version + "\n")
    return root, version


def kernel_package():
    """The versioned package linux-image-cloud-amd64 depends on now."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise RuntimeError("linux-image-cloud-amd64 depends on no linux-image package")


def corpus_files():
    lic = "/usr/share/common-licenses"
    seen, files = set(), []
    for name in sorted(os.listdir(lic)):
        real = os.path.realpath(os.path.join(lic, name))
        if os.path.isfile(real) and real not in seen:
            seen.add(real)
            files.append(real)
    inc = "/usr/include"
    files += [os.path.join(inc, n) for n in sorted(os.listdir(inc))
              if n.endswith(".h") and os.path.isfile(os.path.join(inc, n))]
    return files


class Cpio:
    """A newc ("070701") archive, the format the kernel unpacks."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name_b), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name, major, minor):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def build(work):
    """(kernel path, initrd path, kernel package and version, busybox version)."""
    os.makedirs(work, exist_ok=True)
    kpkg = kernel_package()
    kroot, kver = apt_extract(work, kpkg)
    boot = os.path.join(kroot, "boot")
    vmlinuz = [f for f in os.listdir(boot) if f.startswith("vmlinuz-")]
    if len(vmlinuz) != 1:
        raise RuntimeError(f"{kpkg}: vmlinuz files {vmlinuz}")
    broot, bver = apt_extract(work, "busybox-static")
    fill = os.path.join(work, "fill")
    subprocess.run(["cc", "-O2", "-static", "-Wall", "-Werror", "-o", fill,
                    os.path.join(HERE, "fill.c")], check=True)
    c = Cpio()
    for d in ("bin", "dev", "proc", "corpus"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", open(os.path.join(broot, "bin/busybox"), "rb").read(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    c.file("fill", open(fill, "rb").read(), 0o755)
    for i, f in enumerate(corpus_files()):
        c.file(f"corpus/{i:04d}", open(f, "rb").read())
    initrd = os.path.join(work, "initrd.cpio")
    with open(initrd, "wb") as f:
        f.write(c.finish())
    return (os.path.join(boot, vmlinuz[0]), initrd, f"{kpkg} {kver}", f"busybox-static {bver}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for x in build(sys.argv[1]):
        print(x)
