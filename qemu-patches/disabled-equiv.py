#!/usr/bin/env python3
"""Show that the series changes nothing when CONFIG_VMIG is off.

For every C file the series touches outside tests/, preprocess the pristine and the
patched file with the patched build's own compile command, but with a
config-host.h that lacks CONFIG_VMIG, and compare the results.  __FILE__
paths and __LINE__ numbers are normalised (the patches add lines); every
other difference is printed.  Exit status 1 when a file differs.

Usage: disabled-equiv.py BUILD_DIR PRISTINE_TREE PATCHED_TREE SERIES_DIR
"""
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile

build, pristine, patched, series_dir = (os.path.abspath(a) for a in sys.argv[1:5])


def touched_c_files():
    files = set()
    for name in open(os.path.join(series_dir, "series")).read().split():
        for line in open(os.path.join(series_dir, name)):
            m = re.match(r"^\+\+\+ b/(\S+\.c)$", line)
            # the test patches change the tests on purpose
            if m and not m.group(1).startswith("tests/"):
                files.add(m.group(1))
    return sorted(files)


def preprocess(entry, tree, cfgdir):
    cmd = entry["command"]
    rel = os.path.relpath(entry["file"] if os.path.isabs(entry["file"])
                          else os.path.join(entry["directory"], entry["file"]),
                          os.path.join(build, ".."))
    # the build's own tree is the patched one; point every include and the
    # source at the tree under test, and put the VMIG-less config first
    cmd = cmd.replace(entry["file"], os.path.join(tree, rel))
    cmd = cmd.replace(f"-iquote {patched}", f"-iquote {tree}")
    cmd = cmd.replace("-iquote .", f"-iquote {cfgdir} -iquote .", 1)
    cmd = re.sub(r" -o \S+", "", cmd)
    cmd = re.sub(r" -MD -MQ \S+ -MF \S+", "", cmd)
    cmd = cmd.replace(" -c ", " -E -P ")
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True,
                       cwd=entry["directory"])
    if r.returncode:
        sys.exit(f"preprocessing {rel} in {tree} failed:\n{r.stderr[-2000:]}")
    text = r.stdout.replace(tree, "TREE").replace(patched, "TREE").replace(pristine, "TREE")
    text = re.sub(r'("TREE/[^"]*"\s*,\s*)\d+', r"\1LINE", text)
    return text.splitlines()


def main():
    commands = json.load(open(os.path.join(build, "compile_commands.json")))
    with tempfile.TemporaryDirectory() as cfgdir:
        with open(os.path.join(build, "config-host.h")) as src, \
                open(os.path.join(cfgdir, "config-host.h"), "w") as dst:
            for line in src:
                if not re.match(r"#define CONFIG_VMIG\b", line):
                    dst.write(line)
        bad = 0
        for rel in touched_c_files():
            entry = next((e for e in commands
                          if os.path.normpath(os.path.join(e["directory"], e["file"]))
                          == os.path.join(patched, rel)), None)
            if entry is None:
                print(f"  {rel:32} not built in this configuration")
                continue
            a = preprocess(entry, pristine, cfgdir)
            b = preprocess(entry, patched, cfgdir)
            diff = [l for l in difflib.unified_diff(a, b, lineterm="", n=0)
                    if not l.startswith(("---", "+++", "@@"))]
            # a declaration that only moved shows as one - and one + line
            moved = {l[1:] for l in diff if l.startswith("-")} & \
                    {l[1:] for l in diff if l.startswith("+")}
            rest = [l for l in diff if l[1:] not in moved]
            if rest:
                bad = 1
                print(f"  {rel:32} DIFFERS without CONFIG_VMIG:")
                for l in rest[:20]:
                    print("      " + l[:160])
            else:
                note = f" ({len(moved)} declaration(s) moved)" if moved else ""
                print(f"  {rel:32} identical without CONFIG_VMIG{note}")
        sys.exit(bad)


main()
