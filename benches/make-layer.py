#!/usr/bin/env python3
"""Writes a realistic uncompressed layer tar to stdout: the files of /usr/lib/python3*,
/usr/share/perl* and /usr/lib/x86_64-linux-gnu (text, bytecode, shared objects), in sorted order,
repeated under copyN/ prefixes until the tar holds at least TARGET bytes of uncompressed data.
Deterministic for a given machine: mtimes/owners are fixed, so only the file contents vary.

usage: make-layer.py TARGET_BYTES > layer.tar
"""
import glob
import os
import sys
import tarfile

ROOTS = sorted(glob.glob("/usr/lib/python3*") + glob.glob("/usr/share/perl*")) + [
    "/usr/lib/x86_64-linux-gnu"
]


def walk():
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            yield dirpath
            for f in sorted(filenames):
                yield os.path.join(dirpath, f)


def main():
    target = int(sys.argv[1])
    out = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
    written = 0
    copy = 0
    while written < target:
        for path in walk():
            if written >= target:
                break
            try:
                st = os.lstat(path)
            except OSError:
                continue
            ti = tarfile.TarInfo(f"copy{copy}{path}")
            ti.mtime = 1700000000
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mode = st.st_mode & 0o7777
            if os.path.islink(path):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(path)
                out.addfile(ti)
            elif os.path.isdir(path):
                ti.type = tarfile.DIRTYPE
                out.addfile(ti)
            elif os.path.isfile(path):
                try:
                    f = open(path, "rb")
                except OSError:
                    continue
                with f:
                    ti.size = st.st_size
                    out.addfile(ti, f)
                written += st.st_size + 512
        copy += 1
    out.close()


if __name__ == "__main__":
    main()
