#!/usr/bin/env python3
"""Writes a seed corpus of small layer tars (benign and hostile) to corpus/apply_layer/ for the fuzzer."""
import io
import os
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "apply_layer")


def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644, pax=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if pax:
        info.pax_headers = pax
    return info, data


SEEDS = {
    "basic": [entry("etc/", tarfile.DIRTYPE, mode=0o755), entry("etc/passwd", data=b"root:x:0:0\n"),
              entry("bin/sh", tarfile.SYMTYPE, link="busybox"), entry("bin/busybox", data=b"ELF"),
              entry("bin/ls", tarfile.LNKTYPE, link="bin/busybox")],
    "whiteouts": [entry("a/x", data=b"x"), entry("a/.wh.x"), entry("a/.wh..wh..opq"), entry(".wh.a")],
    "symlink_write": [entry("var/run", tarfile.SYMTYPE, link="/run"), entry("var/run/pid", data=b"1"),
                      entry("esc", tarfile.SYMTYPE, link="../../outside"), entry("esc/secret", data=b"evil")],
    "dotdot": [entry("../outside/evil", data=b"evil"), entry("a/../../x", data=b"x")],
    "hardlink_out": [entry("s", tarfile.SYMTYPE, link="../../outside/secret"), entry("h", tarfile.LNKTYPE, link="s"),
                     entry("h2", tarfile.LNKTYPE, link="../outside/secret")],
    "pax": [entry("x" * 200 + "/f", data=b"long", pax={"SCHILY.xattr.user.a": "1", "mtime": "1.5"}),
            entry("fifo", tarfile.FIFOTYPE), entry("dev/null", tarfile.CHRTYPE)],
}

os.makedirs(OUT, exist_ok=True)
for name, entries in SEEDS.items():
    for fmt, suffix in [(tarfile.PAX_FORMAT, "pax"), (tarfile.GNU_FORMAT, "gnu")]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for info, data in entries:
                tar.addfile(info, io.BytesIO(data))
        with open(os.path.join(OUT, f"{name}-{suffix}.tar"), "wb") as f:
            f.write(buf.getvalue())
print(f"seeds written to {OUT}")
