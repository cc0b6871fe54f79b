#!/usr/bin/env python3
"""Build deterministic OCI image layouts for soci-rs tests, offline.

usage: make-test-image.py OUT_LAYOUT_DIR TAG --kind {small,large,multi}
                          [--size-mb N] [--docker-media-types] [--synthetic]
                          [--seed S] [--note TEXT] [--json]

Kinds (all runnable on the host architecture, from Debian's static busybox):
  small  one layer, < 10 MiB: /bin/busybox + applet symlinks, /etc/soci-test-release,
         a 1 MiB generated file, a file owned by 1000:1000.
  large  N >= 3 layers of >= 10 MiB gzip each (host trees such as the Python
         stdlib and /usr/share, plus generated half-random data), then one small
         top layer (busybox, whiteouts, an opaque dir, a file owned by 1000:1000,
         checksums). --size-mb sets
         the total uncompressed size (default 96; use >= 500 for benchmarks);
         --big-layers N overrides N (e.g. --size-mb 320 --big-layers 1: one
         320 MiB layer, > 200 MiB gzip).
  multi  an OCI image index: a runnable manifest for the host platform and one for
         the other of linux/amd64 / linux/arm64 that shares the layers (one big,
         one small) but has its own config.

Every image runs /usr/bin/soci-test-entrypoint by default: it checks one file
against /etc/soci-test-sums and prints READY. `soci-test-entrypoint --all`
checks every regular file and that whiteouted paths are absent;
`soci-test-entrypoint FILE...` checks the given files.

Determinism: sorted tar entries, fixed mtimes ($SOURCE_DATE_EPOCH, default
2020-01-01), uid/gid 0 (except one test file), gzip mtime 0, generated data from
a seeded PRNG. Host files (busybox, and for large images the trees below) make
digests machine-dependent; --synthetic replaces the host trees with generated
ones so only /bin/busybox comes from the host.

OUT_LAYOUT_DIR may already hold a layout: blobs are added and the index.json
entry for TAG is replaced, other tags are kept.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import stat
import sys
import tarfile
import tempfile
import time

MiB = 1 << 20
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1577836800"))  # 2020-01-01T00:00:00Z
REF_NAME = "org.opencontainers.image.ref.name"
BUSYBOX = "/bin/busybox"
APPLETS = sorted("""
    [ awk basename cat chmod chown cmp cp cut date dd df diff dirname du echo env
    expr false find grep gunzip gzip head hexdump hostname id kill ln ls md5sum
    mkdir mktemp mount mv nproc od printf ps pwd readlink realpath rm rmdir sed
    seq sh sha1sum sha256sum sha512sum sleep sort stat tail tar tee test time
    timeout touch tr true umount uname uniq wc which xargs xxd yes zcat
""".split())

MEDIA = {
    "oci": {
        "index": "application/vnd.oci.image.index.v1+json",
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
    },
    "docker": {
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
}
OCI_INDEX = MEDIA["oci"]["index"]

# Host trees used as realistic layer content for --kind large, per big layer.
HOST_TREES = [
    ["/usr/lib/python3.11", "/usr/lib/python3"],
    ["/usr/share/i18n", "/usr/share/zoneinfo", "/usr/share/perl", "/usr/share/mime"],
    ["/usr/include", "/usr/share/doc", "/usr/share/locale"],
]
SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages"}

ENTRYPOINT = r"""#!/bin/sh
# soci-test-entrypoint: check files against /etc/soci-test-sums, then print READY.
#   (no args)  check the image's default file
#   --all      check every regular file, and that paths in /etc/soci-test-absent are absent
#   FILE...    check these files
set -eu
SUMS=/etc/soci-test-sums
check() {
    want=""
    while IFS= read -r line; do
        if [ "${line#*  }" = "$1" ]; then want=$line; break; fi
    done <"$SUMS"
    [ -n "$want" ] || { echo "FAIL $1: not listed in $SUMS"; exit 1; }
    echo "$want" | sha256sum -c -s - || { echo "FAIL $1: checksum mismatch"; exit 1; }
}
case "${1:-}" in
"") check @DEFAULT_FILE@ ;;
--all)
    if ! sha256sum -c -s "$SUMS"; then
        echo "FAIL: checksum mismatch"
        sha256sum -c "$SUMS" 2>&1 | grep -v ': OK$' | head -n 20
        exit 1
    fi
    while IFS= read -r p; do
        if [ -e "$p" ] || [ -L "$p" ]; then echo "FAIL $p: should be absent"; exit 1; fi
    done </etc/soci-test-absent
    echo "checked $(wc -l <"$SUMS") files"
    ;;
*) for f in "$@"; do check "$f"; done ;;
esac
echo READY
"""


def log(msg):
    print(f"make-test-image: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- content sources

class Entry:
    """One tar member. `src` is a host path, bytes, or a GenData; `sha` set when written."""

    def __init__(self, path, kind="file", mode=0o644, src=b"", link="", uid=0, gid=0):
        self.path, self.kind, self.mode, self.src = path.strip("/"), kind, mode, src
        self.link, self.uid, self.gid = link, uid, gid
        self.sha = None

    def size(self):
        if self.kind != "file":
            return 0
        if isinstance(self.src, bytes):
            return len(self.src)
        if isinstance(self.src, GenData):
            return self.src.size
        return os.path.getsize(self.src)


class GenData:
    """Deterministic, half-incompressible data: 4 KiB random + 4 KiB of word text, repeated."""

    _pool = None

    def __init__(self, size, seed):
        self.size, self.seed = size, seed

    @classmethod
    def text_pool(cls):
        if cls._pool is None:
            rng = random.Random(0x50C1)
            words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
                     for _ in range(2000)]
            pool = []
            for _ in range(256):
                s = bytearray()
                while len(s) < 4096:
                    s += (" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + ".\n").encode()
                pool.append(bytes(s[:4096]))
            cls._pool = pool
        return cls._pool

    def open(self):
        return GenReader(self)


class GenReader(io.RawIOBase):
    def __init__(self, gen):
        self.left, self.rng, self.pool, self.buf = gen.size, random.Random(gen.seed), GenData.text_pool(), b""

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left + len(self.buf)
        while len(self.buf) < n and self.left > 0:
            block = self.rng.randbytes(4096) + self.pool[self.rng.randrange(256)]
            block = block[: self.left]
            self.left -= len(block)
            self.buf += block
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


class HashReader:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n=-1):
        b = self.f.read(n)
        self.h.update(b)
        return b


class HashWriter:
    """File-like sink that hashes and counts what is written, optionally to a file."""

    def __init__(self, f=None):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        if self.f:
            self.f.write(b)
        return len(b)

    def tell(self):
        return self.n

    def flush(self):
        if self.f:
            self.f.flush()


def dirs_for(path):
    """Parent directories of a tar path, outermost first."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def host_tree(root, budget, seen):
    """Entries for files under host dir `root`, in sorted order, up to `budget` bytes."""
    out, used = [], 0
    if not os.path.isdir(root):
        return out, used
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel = dirpath.strip("/")
        if rel not in seen:
            seen.add(rel)
            out.append(Entry(rel, "dir", stat.S_IMODE(os.lstat(dirpath).st_mode)))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            if "\n" in p:
                continue
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(p, "symlink", 0o777, link=os.readlink(p)))
            elif stat.S_ISREG(st.st_mode) and os.access(p, os.R_OK):
                if used + st.st_size > budget:
                    return out, used
                used += st.st_size
                out.append(Entry(p, "file", mode, src=p))
    return out, used


def synthetic_tree(base, budget, seed):
    """Many small text files (100 B .. 64 KiB) under `base`, up to `budget` bytes."""
    rng, out, used, i = random.Random(seed), [], 0, 0
    pool = GenData.text_pool()
    while True:
        size = int(100 * (655.36 ** rng.random()))  # log-uniform 100 B .. 64 KiB
        if used + size > budget:
            return out, used
        body = b"".join(pool[rng.randrange(256)] for _ in range(size // 4096 + 1))[:size]
        out.append(Entry(f"{base}/d{i // 64:03d}/f{i:05d}.txt", "file", 0o644, src=body))
        used, i = used + size, i + 1


# ---------------------------------------------------------------- layers

def write_layer(entries, blobs_dir):
    """Write entries as a deterministic tar+gzip blob. Returns the layer's metadata."""
    seen, ordered = set(), []
    for e in entries:
        for d in dirs_for(e.path):
            if d not in seen:
                seen.add(d)
                ordered.append(Entry(d, "dir", 0o755))
        if e.kind == "dir":
            if e.path in seen:
                # explicit dir entry after an implicit one: use the explicit mode
                for o in ordered:
                    if o.path == e.path and o.kind == "dir":
                        o.mode = e.mode
                continue
            seen.add(e.path)
        ordered.append(e)
    ordered.sort(key=lambda e: e.path.encode())  # parents sort before their children
    where = {e.path: i for i, e in enumerate(ordered)}
    for i, e in enumerate(ordered):
        if e.kind == "hardlink" and where.get(e.link.strip("/"), i) >= i:
            raise SystemExit(f"make-test-image: hardlink {e.path} sorts before its target {e.link}")

    fd, tmp = tempfile.mkstemp(dir=blobs_dir, prefix=".layer-")
    try:
        gz_sink, tar_sink = _write_tar_gz(fd, ordered)
    except BaseException:
        os.unlink(tmp)
        raise
    digest = "sha256:" + gz_sink.h.hexdigest()
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(blobs_dir, digest.split(":")[1]))
    return {"digest": digest, "size": gz_sink.n, "diff_id": "sha256:" + tar_sink.h.hexdigest(),
            "uncompressed": tar_sink.n, "entries": ordered}


def _write_tar_gz(fd, ordered):
    with os.fdopen(fd, "wb") as raw:
        gz_sink = HashWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=gz_sink, mtime=0) as gz:
            tar_sink = HashWriter(gz)
            with tarfile.open(fileobj=tar_sink, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for e in ordered:
                    ti = tarfile.TarInfo(e.path)
                    ti.mtime, ti.mode, ti.uid, ti.gid = EPOCH, e.mode, e.uid, e.gid
                    ti.uname = ti.gname = ""
                    if e.kind == "dir":
                        ti.type = tarfile.DIRTYPE
                        tf.addfile(ti)
                    elif e.kind == "symlink":
                        ti.type, ti.linkname = tarfile.SYMTYPE, e.link
                        tf.addfile(ti)
                    elif e.kind == "hardlink":
                        ti.type, ti.linkname = tarfile.LNKTYPE, e.link.strip("/")
                        tf.addfile(ti)
                    else:
                        ti.size = e.size()
                        if isinstance(e.src, bytes):
                            f = io.BytesIO(e.src)
                        elif isinstance(e.src, GenData):
                            f = e.src.open()
                        else:
                            f = open(e.src, "rb")
                        with f:
                            hr = HashReader(f)
                            tf.addfile(ti, hr)
                        e.sha = hr.h.hexdigest()
    return gz_sink, tar_sink


def busybox_entries(kind, release_extra=""):
    if not os.path.isfile(BUSYBOX):
        sys.exit(f"make-test-image: {BUSYBOX} not found (apt-get install busybox-static)")
    out = [Entry(d, "dir", 0o1777 if d == "tmp" else 0o755)
           for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "usr/bin", "data", "run", "var"]]
    out.append(Entry("bin/busybox", "file", 0o755, src=BUSYBOX))
    out += [Entry("bin/" + a, "symlink", 0o777, link="busybox") for a in APPLETS]
    out.append(Entry("etc/soci-test-release", "file", 0o644,
                     src=f"soci-test-image kind={kind} version=1{release_extra}\n".encode()))
    out.append(Entry("etc/passwd", "file", 0o644,
                     src=b"root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/tmp:/bin/sh\n"))
    out.append(Entry("etc/group", "file", 0o644, src=b"root:x:0:\ntester:x:1000:\n"))
    return out


def entrypoint_entry(default_file):
    return Entry("usr/bin/soci-test-entrypoint", "file", 0o755,
                 src=ENTRYPOINT.replace("@DEFAULT_FILE@", default_file).encode())


def final_view(layers):
    """Apply layers in order (whiteouts, opaque dirs) and return ({path: sha256 or None
    for non-regular files}, whiteouted paths)."""
    files, absent = {}, set()
    for layer in layers:
        opaque = set()
        for e in layer["entries"]:
            d, base = os.path.split(e.path)
            if base == ".wh..wh..opq":
                opaque.add(d)
            elif base.startswith(".wh."):
                victim = os.path.join(d, base[4:])
                for p in [p for p in files if p == victim or p.startswith(victim + "/")]:
                    files.pop(p)
                    absent.add(p)
        for d in opaque:  # hides lower layers' entries only
            for p in [p for p in files if p.startswith(d + "/")]:
                files.pop(p)
                absent.add(p)
        for e in layer["entries"]:
            if os.path.basename(e.path).startswith(".wh."):
                continue
            absent.discard(e.path)
            if e.kind == "file":
                files[e.path] = e.sha
            elif e.kind == "hardlink":
                files[e.path] = files.get(e.link.strip("/"))
            else:
                files[e.path] = None
    return files, absent


def content_sha(e):
    if isinstance(e.src, bytes):
        return hashlib.sha256(e.src).hexdigest()
    h = hashlib.sha256()
    with (e.src.open() if isinstance(e.src, GenData) else open(e.src, "rb")) as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def sums_entries(layers):
    """The /etc/soci-test-sums and /etc/soci-test-absent entries for the final view."""
    files, absent = final_view(layers)
    sums = "".join(f"{h}  /{p}\n" for p, h in sorted(files.items()) if h)
    return [Entry("etc/soci-test-sums", "file", 0o644, src=sums.encode()),
            Entry("etc/soci-test-absent", "file", 0o644,
                  src="".join(f"/{p}\n" for p in sorted(absent)).encode())], len(files)


def top_layer(kind, layers_below, blobs, default_file, extra=()):
    """Small top layer: busybox, entrypoint, extra entries, then the checksum files."""
    entries = busybox_entries(kind) + [entrypoint_entry(default_file)] + list(extra)
    # Checksums of this layer's own files are known before writing it.
    for e in entries:
        if e.kind == "file":
            e.sha = content_sha(e)
    sums, _ = sums_entries(layers_below + [{"entries": entries}])
    return write_layer(entries + sums, blobs)


def small_layers(blobs, seed):
    extra = [
        Entry("data/small.bin", "file", 0o644, src=GenData(1 * MiB, seed)),
        Entry("data/owned-by-1000", "file", 0o640, src=b"owned by uid 1000\n", uid=1000, gid=1000),
    ]
    return [top_layer("small", [], blobs, "/data/small.bin", extra)]


def big_layer(i, target, blobs, seed, synthetic):
    """Big layer number i (1-based) of about `target` uncompressed bytes, >= 10 MiB gzip."""
    entries, seen = [], set()
    tree_budget = int(target * 0.3)
    if synthetic:
        tree, used = synthetic_tree(f"usr/share/soci-test/tree{i}", tree_budget, seed + 1000 * i)
        entries += tree
    else:
        used = 0
        for root in HOST_TREES[i - 1] if i <= len(HOST_TREES) else []:
            if used < tree_budget:
                tree, n = host_tree(root, tree_budget - used, seen)
                entries += tree
                used += n
        if i > len(HOST_TREES):
            tree, used = synthetic_tree(f"usr/share/soci-test/tree{i}", tree_budget, seed + 1000 * i)
            entries += tree
    filler = max(target - used, 22 * MiB)  # >= 11 MiB of random bytes => >= 10 MiB gzip
    chunk, k = 16 * MiB, 0
    while filler > 0:
        n = min(chunk, filler)
        entries.append(Entry(f"data/big{i}/filler-{k:03d}.bin", "file", 0o644,
                             src=GenData(n, seed * 7919 + i * 101 + k)))
        filler, k = filler - n, k + 1
    entries.append(Entry(f"data/big{i}/ready.bin", "file", 0o644, src=GenData(256 << 10, seed + i)))
    if i == 1:
        entries += [
            Entry("data/big1/ready.hardlink", "hardlink", 0o644, link="data/big1/ready.bin"),
            Entry("data/big1/ready.symlink", "symlink", 0o777, link="ready.bin"),
            Entry("data/big1/deleted.txt", "file", 0o644, src=b"whited out by the top layer\n"),
            Entry("data/opaque/a.txt", "file", 0o644, src=b"hidden by an opaque dir\n"),
            Entry("data/opaque/sub/b.txt", "file", 0o644, src=b"hidden by an opaque dir\n"),
        ]
    layer = write_layer(entries, blobs)
    if layer["size"] < 10 * MiB:
        sys.exit(f"make-test-image: big layer {i} is only {layer['size']} bytes compressed (< 10 MiB)")
    return layer


def large_layers(blobs, seed, size_mb, n_big, synthetic, kind="large", note=None):
    target = max(24 * MiB, size_mb * MiB // n_big)
    layers = []
    for i in range(1, n_big + 1):
        t0 = time.time()
        layers.append(big_layer(i, target, blobs, seed, synthetic))
        log(f"layer {i}: {layers[-1]['uncompressed'] / MiB:.1f} MiB tar, "
            f"{layers[-1]['size'] / MiB:.1f} MiB gzip, {time.time() - t0:.1f}s")
    whiteouts = [
        Entry("data/big1/.wh.deleted.txt", "file", 0o644, src=b""),
        Entry("data/opaque", "dir", 0o755),
        Entry("data/opaque/.wh..wh..opq", "file", 0o644, src=b""),
        Entry("data/opaque/c.txt", "file", 0o644, src=b"visible in the opaque dir\n"),
        Entry("data/owned-by-1000", "file", 0o640, src=b"owned by uid 1000\n", uid=1000, gid=1000),
    ]
    if note is not None:
        whiteouts.append(Entry("etc/soci-test-note", "file", 0o644, src=(note + "\n").encode()))
    layers.append(top_layer(kind, layers, blobs, "/data/big2/ready.bin" if n_big >= 2
                            else "/data/big1/ready.bin", whiteouts))
    return layers


# ---------------------------------------------------------------- manifests

def put_blob(blobs, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(blobs, digest.split(":")[1])
    if not os.path.exists(path):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    return digest


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def image_manifest(blobs, layers, mt, arch, variant, kind):
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    cfg = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/usr/bin/soci-test-entrypoint"],
            "WorkingDir": "/",
            "Labels": {"org.soci-rs.test.kind": kind},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
        "history": [{"created": created, "created_by": f"make-test-image.py --kind {kind} (layer {i + 1})"}
                    for i in range(len(layers))],
    }
    if variant:
        cfg["variant"] = variant
    cfg_bytes = canonical(cfg)
    man = {
        "schemaVersion": 2,
        "mediaType": mt["manifest"],
        "config": {"mediaType": mt["config"], "digest": put_blob(blobs, cfg_bytes), "size": len(cfg_bytes)},
        "layers": [{"mediaType": mt["layer"], "digest": layer["digest"], "size": layer["size"]}
                   for layer in layers],
    }
    man_bytes = canonical(man)
    return {"mediaType": mt["manifest"], "digest": put_blob(blobs, man_bytes), "size": len(man_bytes)}


def host_arch():
    m = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def write_index_json(out, tag, desc):
    path = os.path.join(out, "index.json")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if os.path.exists(path):
        with open(path) as f:
            index = json.load(f)
        index["manifests"] = [m for m in index.get("manifests", [])
                              if (m.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"].append(dict(desc, annotations={REF_NAME: tag}))
    with open(path + ".tmp", "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("out", help="OCI image layout directory (created or extended)")
    ap.add_argument("tag", help="value of the org.opencontainers.image.ref.name annotation")
    ap.add_argument("--kind", choices=["small", "large", "multi"], required=True)
    ap.add_argument("--size-mb", type=int, default=96,
                    help="large: total uncompressed size of the big layers (default %(default)s)")
    ap.add_argument("--big-layers", type=int, default=None,
                    help="large: number of big layers (default max(3, size-mb / 160))")
    ap.add_argument("--docker-media-types", action="store_true",
                    help="Docker schema2 media types for manifest/list, config and layers")
    ap.add_argument("--synthetic", action="store_true",
                    help="large/multi: generated file trees instead of host trees")
    ap.add_argument("--seed", type=int, default=1, help="PRNG seed for generated data")
    ap.add_argument("--note", help="large: add /etc/soci-test-note with this text to the top layer only "
                    "(images with the same seed and size then share every big layer)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = ap.parse_args()

    t0 = time.time()
    mt = MEDIA["docker" if args.docker_media_types else "oci"]
    blobs = os.path.join(args.out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    arch = host_arch()
    variant = "v8" if arch == "arm64" else None

    if args.kind == "small":
        layers = small_layers(blobs, args.seed)
    elif args.kind == "large":
        n_big = args.big_layers if args.big_layers else max(3, -(-args.size_mb // 160))
        layers = large_layers(blobs, args.seed, args.size_mb, n_big, args.synthetic, note=args.note)
    else:
        layers = large_layers(blobs, args.seed, 24, 1, args.synthetic, "multi")

    if args.kind != "multi":
        desc = image_manifest(blobs, layers, mt, arch, variant, args.kind)
        desc["platform"] = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        top = dict(desc)
        top.pop("platform")
        manifests = [desc]
    else:
        other = "arm64" if arch == "amd64" else "amd64"
        manifests = []
        for a in (arch, other):
            v = "v8" if a == "arm64" else None
            d = image_manifest(blobs, layers, mt, a, v, "multi")
            d["platform"] = {"architecture": a, "os": "linux", **({"variant": v} if v else {})}
            manifests.append(d)
        idx = canonical({"schemaVersion": 2, "mediaType": mt["index"], "manifests": manifests})
        top = {"mediaType": mt["index"], "digest": put_blob(blobs, idx), "size": len(idx)}
    write_index_json(args.out, args.tag, top)

    total = sum(layer["size"] for layer in layers)
    log(f"{args.kind} image {args.out}:{args.tag} {top['digest']}: {len(layers)} layers, "
        f"{total / MiB:.1f} MiB compressed, "
        f"{sum(layer['uncompressed'] for layer in layers) / MiB:.1f} MiB uncompressed, "
        f"{time.time() - t0:.1f}s")
    if args.json:
        json.dump({
            "layout": args.out, "tag": args.tag, "kind": args.kind,
            "digest": top["digest"], "mediaType": top["mediaType"],
            "manifests": manifests,
            "layers": [{k: layer[k] for k in ("digest", "size", "diff_id", "uncompressed")}
                       for layer in layers],
        }, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
