#!/usr/bin/env bash
# Parallel pull/unpack end to end (SOCI-SPEC.md §5.4, §5.14; §8 TestPullModes,
# TestExperimentalParallelPullAsFallback, TestPullWithParallelism): soci-snapshotter-grpc +
# `soci image rpull` against containerd 1.6, distribution 2.8 and FUSE. Needs root, /dev/fuse and
# the packages of scripts/install-deps.sh; prints `SKIPPED: <reason>` (exit 0) when a prerequisite
# is missing. Each scenario runs a fresh daemon (own root and config) and containerd namespace.
#
# Scenarios (each asserts real behaviour):
#   1 parallel   `enable = true`, containerd content store, an image WITH a SOCI index: every
#                layer is a parallel local snapshot (no FUSE mount, no remote attempt), the layer
#                blobs are in containerd's content store, the rootfs (every path, mode, owner, size,
#                link target and file sha256) equals an overlayfs pull, local_mount_failure_count 0,
#                the scratch space <root>/unpack is empty afterwards
#   2 chunked    `concurrent_download_chunk_size = "1mb"`, 4 downloads and 2 unpacks per image:
#                the registry access log shows, per layer, the 2-byte probe plus exactly
#                ceil(size / 1 MiB) ranged GETs (206); rootfs identical; local_mount_failure_count 0
#   3 fallback   `experimental_parallel_pull_as_fallback`: indexed image ⇒ FUSE mounts for the
#                indexed layers; unindexed image ⇒ "no SOCI index found; falling back to parallel
#                pull/unpack" and every layer local; both containers run
#   4 nofallback defaults, unindexed image ⇒ every layer deferred to the runtime
#   5 override   `enable` and the fallback key together, indexed image ⇒ local (no FUSE, no
#                fallback log)
#   6 discard    soci content store + `discard_unpacked_layers` + fallback, unindexed image ⇒
#                local, no blob kept in either content store, the container runs
#   7 corrupt    a layer blob corrupted in the registry's storage (same size, digest mismatch),
#                downloaded in 256 KiB chunks ⇒ rpull fails with "compressed digest did not
#                match", no snapshot and no scratch directory left behind;
#                an image config with a wrong diffID ⇒ "uncompressed digests did not match"
#   8 decompress `decompress_streams.gzip` = a wrapper around `gzip -d -c` that records each call:
#                called once per layer, rootfs identical to overlayfs, local_mount_failure_count 0
#
# Environment: SOCI_E2E_BASE, REGISTRY_PORT, REFERRERS_PORT (scripts/services.sh; e.g.
# SOCI_E2E_BASE=/tmp/soci-e2e-b REGISTRY_PORT=5220 REFERRERS_PORT=5221 to stay away from other
# runs), METRICS_PORT (13382), CARGO_TARGET_DIR.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh"

e2e_prereqs containerd ctr runc docker-registry skopeo python3 curl timeout
e2e_build
T0=$(date +%s)

e2e_services
WORK=$SOCI_E2E_BASE/snap-e2e-parallel
LOG=$WORK/daemon.log
METRICS_PORT=${METRICS_PORT:-13382}
PID=
NS=e2p$$
REG_LOG=$SOCI_E2E_BASE/registry/log
REG_DATA=$SOCI_E2E_BASE/registry/data

cleanup() {
  set +e
  [ -f "$WORK/blob.orig" ] && [ -n "${DATA:-}" ] && cp "$WORK/blob.orig" "$DATA"
  purge_namespaces e2p
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  grep " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ "$started_services" = 1 ] && "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT

unmount_under "$WORK"
rm -rf "$WORK"; mkdir -p "$WORK"

metric() { # NAME: value of soci_fs_operation_count{layer="",operation_type=NAME}
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" \
    | awk -v n="operation_type=\"$1\"}" 'index($0, "soci_fs_operation_count{layer=\"\",") == 1 && index($0, n) { print $2 }'
}
rpull() { # NS REF
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$1" image rpull --plain-http "$2" >"$WORK/rpull-$1.out" 2>&1 \
    || { cat "$WORK/rpull-$1.out"; fail "rpull $2"; }
}
count() { grep -c "$1" "$LOG.cur" || true; }
# Whole-rootfs listing, as in scripts/e2e-more.sh: every path with type/mode, owner, size (mtime
# and link target for non-directories), then the sha256 of every file.
TREE_CMD='cd /; find / -xdev -type d -exec stat -c "%n %f %u:%g" {} + | sort;
find / -xdev ! -type d -exec stat -c "%n %f %u:%g %s %Y %N" {} + | sort;
find / -xdev -type f -exec sha256sum {} + | sort -k2'

# Stops the running daemon (if any), purges the namespaces of earlier scenarios, and starts a
# fresh daemon with a new root and the given config body (metrics always on).
scenario() { # NAME CONFIG
  [ -n "$PID" ] && stop_daemon INT
  purge_namespaces e2p
  SNAPROOT=$WORK/root-$1
  printf 'metrics_address = "127.0.0.1:%s"\n%s\n' "$METRICS_PORT" "$2" >"$WORK/config.toml"
  start_daemon
}
tree_matches_overlay() { # NS REF NAME
  $CTR -n "$1" run --rm --snapshotter soci "$2" "c$$-$3" sh -c "$TREE_CMD" >"$WORK/tree-$3.txt" 2>&1 \
    || { head "$WORK/tree-$3.txt"; fail "$3: tree listing in the container"; }
  diff -u "$WORK/tree-overlay.txt" "$WORK/tree-$3.txt" >"$WORK/tree-$3.diff" \
    || { head -n 20 "$WORK/tree-$3.diff"; fail "$3: rootfs differs from the overlayfs pull"; }
}
unpack_empty() { [ -z "$(ls -A "$SNAPROOT/unpack")" ] || fail "$1: $SNAPROOT/unpack not empty: $(ls "$SNAPROOT/unpack")"; }

# ------------------------------------------------------------------ images
REPO=e2e2/par-$$
IMG=$REGISTRY/$REPO
t=$(ms)
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" a --kind large --size-mb 32 --synthetic --seed 7 --json \
  >"$WORK/a.json" 2>/dev/null || fail "make image a"
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" s --kind small --seed 21 --json \
  >"$WORK/s.json" 2>/dev/null || fail "make image s"
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" d --kind small --seed 22 --json \
  >"$WORK/d.json" 2>/dev/null || fail "make image d"
# Scenario 7 corrupts this image's layer in the registry's storage: a seed of its own, so that no
# other image (or later run) shares the blob.
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" c --kind small --seed "$(( $$ % 100000 + 1000 ))" --json \
  >"$WORK/c.json" 2>/dev/null || fail "make image c"
for tag in a s d; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$tag" "docker://$IMG:$tag" || fail "push $tag"
done
"$SOCI" convert --standalone --plain-http "$IMG:a" "$IMG:a-soci" >"$WORK/convert.out" 2>&1 \
  || { cat "$WORK/convert.out"; fail "soci convert"; }
N=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["layers"]))' "$WORK/a.json")
# Layers soci convert indexes (default --min-layer-size 10 MiB).
N_IDX=$(python3 -c 'import json,sys; print(sum(l["size"] >= 10<<20 for l in json.load(open(sys.argv[1]))["layers"]))' "$WORK/a.json")
[ "$N_IDX" -ge 1 ] && [ "$N_IDX" -lt "$N" ] || fail "image a: $N_IDX of $N layers >= 10 MiB"
echo "images built, pushed and converted in $(( $(ms) - t )) ms ($N layers, $N_IDX indexed)"

$CTR -n "$NS-overlay" images pull --plain-http "$IMG:a" >/dev/null || fail "ctr pull (overlayfs)"
$CTR -n "$NS-overlay" run --rm "$IMG:a" "c$$-ov" sh -c "$TREE_CMD" >"$WORK/tree-overlay.txt" 2>&1 \
  || { head "$WORK/tree-overlay.txt"; fail "tree listing in the overlayfs container"; }
[ "$(grep -c ' /usr/\| /data/' "$WORK/tree-overlay.txt")" -gt 100 ] || fail "overlayfs listing too short"
# The namespace is kept: purge_namespaces only removes e2p<pid>-* after each scenario, and the
# overlayfs image lives in containerd's own snapshotter.
$CTR -n "$NS-overlay" images rm --sync "$IMG:a" >/dev/null || true

CTRD_STORE=$'[content_store]\ntype = "containerd"\ncontainerd_address = "'"$CONTAINERD_ADDRESS"'"'

# ------------------------------------------------------------------ 1 parallel, containerd store
t=$(ms)
scenario parallel "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nenable = true'
grep -q '"msg":"Parallel image pull enabled"' "$LOG.cur" || fail "parallel: no 'Parallel image pull enabled'"
rpull "$NS-par" "$IMG:a-soci"
[ "$(fuse_mounts)" = 0 ] || fail "parallel: $(fuse_mounts) FUSE mounts"
[ "$(count '"msg":"preparing snapshot with parallel pull/unpack"')" = "$N" ] || fail "parallel: not every layer took the parallel path"
[ "$(count '"local-snapshot-prepared":"true"')" = "$N" ] || fail "parallel: $(count '"local-snapshot-prepared":"true"') local snapshots, want $N"
[ "$(count '"msg":"preparing local filesystem at mountpoint=')" = "$N" ] || fail "parallel: mountpoint log"
[ "$(count 'remote-snapshot-prepared')" = 0 ] || fail "parallel: a remote attempt was made"
# (The listing goes to a file first: `ctr … | grep -q` under pipefail fails when grep exits early.)
$CTR -n "$NS-par" content ls -q >"$WORK/content-par.txt" || fail "parallel: content ls"
for d in $(python3 -c 'import json,sys; print(" ".join(l["digest"] for l in json.load(open(sys.argv[1]))["layers"]))' "$WORK/a.json"); do
  grep -qx "$d" "$WORK/content-par.txt" || fail "parallel: layer $d not in containerd's content store"
done
tree_matches_overlay "$NS-par" "$IMG:a-soci" par
[ "$(metric local_mount_failure_count)" = 0 ] || fail "parallel: local_mount_failure_count $(metric local_mount_failure_count)"
unpack_empty parallel
pass "parallel pull/unpack: $N local layers, 0 FUSE, blobs in containerd's store, rootfs identical to overlayfs, local_mount_failure_count 0 ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 2 chunked downloads, concurrent unpacks
t=$(ms)
scenario chunked "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nenable = true\nconcurrent_download_chunk_size = "1mb"\nmax_concurrent_downloads_per_image = 4\nmax_concurrent_unpacks_per_image = 2\nmax_concurrent_unpacks = 2'
reg0=$(wc -l <"$REG_LOG")
rpull "$NS-chunk" "$IMG:a"
tail -n +"$((reg0 + 1))" "$REG_LOG" >"$WORK/reg-chunk.log"
python3 - "$WORK/a.json" "$WORK/reg-chunk.log" "$REPO" <<'PY' || fail "chunked: ranged GETs do not match the chunk plan"
import json, math, re, sys
layers = json.load(open(sys.argv[1]))["layers"]
log = open(sys.argv[2]).read()
for l in layers:
    hits = re.findall(r'"GET /v2/%s/blobs/%s HTTP/1\.1" (\d+) (\d+)' % (re.escape(sys.argv[3]), l["digest"]), log)
    ranged = [int(n) for s, n in hits if s == "206"]
    want = math.ceil(l["size"] / (1 << 20))
    if want == 1:  # no probe, one plain GET
        ok = len(hits) == 1 and hits[0][0] == "200"
    else:          # the 2-byte probe, then one 206 per chunk, nothing else
        ok = len(hits) == want + 1 and len(ranged) == want + 1 and ranged.count(2) >= 1 \
            and sum(ranged) - 2 == l["size"]
    print(f"  layer {l['digest'][:19]} {l['size']} B: {len(ranged)} ranged GETs (want {want} + probe)")
    if not ok:
        print("  unexpected requests:", hits, file=sys.stderr)
        sys.exit(1)
PY
[ "$(count '"local-snapshot-prepared":"true"')" = "$N" ] || fail "chunked: not every layer local"
tree_matches_overlay "$NS-chunk" "$IMG:a" chunk
[ "$(metric local_mount_failure_count)" = 0 ] || fail "chunked: local_mount_failure_count $(metric local_mount_failure_count)"
unpack_empty chunked
pass "chunked (1 MiB) parallel downloads with 2 concurrent unpacks: probe + ceil(size/1 MiB) 206 GETs per layer, rootfs identical ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 3 fallback
t=$(ms)
scenario fallback "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nexperimental_parallel_pull_as_fallback = true'
rpull "$NS-fbi" "$IMG:a-soci"
[ "$(fuse_mounts)" = "$N_IDX" ] || fail "fallback+indexed: $(fuse_mounts) FUSE mounts, want $N_IDX"
[ "$(count '"remote-snapshot-prepared":"true"')" = "$N_IDX" ] || fail "fallback+indexed: remote snapshots"
[ "$(count 'falling back to parallel')" = 0 ] || fail "fallback+indexed: fell back"
out=$($CTR -n "$NS-fbi" run --rm --snapshotter soci "$IMG:a-soci" "c$$-fbi" 2>&1) || fail "fallback+indexed: run: $out"
[[ $out == *READY* ]] || fail "fallback+indexed: run output: $out"
rpull "$NS-fbu" "$IMG:s"
[ "$(count '"msg":"no SOCI index found; falling back to parallel pull/unpack"')" = 1 ] || fail "fallback+unindexed: no fallback log"
[ "$(count '"msg":"preparing snapshot with parallel pull/unpack"')" = 1 ] || fail "fallback+unindexed: not parallel"
[ "$(count 'defer-snapshot-runtime')" = 0 ] || fail "fallback+unindexed: deferred"
out=$($CTR -n "$NS-fbu" run --rm --snapshotter soci "$IMG:s" "c$$-fbu" soci-test-entrypoint --all 2>&1) || fail "fallback+unindexed: run: $out"
[[ $out == *READY* ]] || fail "fallback+unindexed: run output: $out"
pass "fallback: indexed image ⇒ $N_IDX FUSE mounts; unindexed image ⇒ parallel local snapshot; both run ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 4 no fallback, unindexed ⇒ deferred
t=$(ms)
scenario nofallback ""
rpull "$NS-nofb" "$IMG:s"
[ "$(count '"defer-snapshot-runtime":"true"')" = 1 ] || fail "no fallback: layer not deferred"
[ "$(count 'parallel pull/unpack')" = 0 ] || fail "no fallback: parallel path taken"
pass "no fallback, unindexed image ⇒ deferred to the runtime ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 5 enable overrides fallback
t=$(ms)
scenario override "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nenable = true\nexperimental_parallel_pull_as_fallback = true'
rpull "$NS-ovr" "$IMG:a-soci"
[ "$(fuse_mounts)" = 0 ] || fail "override: $(fuse_mounts) FUSE mounts"
[ "$(count '"local-snapshot-prepared":"true"')" = "$N" ] || fail "override: not every layer local"
[ "$(count 'falling back to parallel')" = 0 ] || fail "override: fallback log although enable is set"
pass "enable overrides the fallback key: indexed image ⇒ $N local layers ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 6 soci store + discard_unpacked_layers
t=$(ms)
scenario discard $'[pull_modes.parallel_pull_unpack]\nexperimental_parallel_pull_as_fallback = true\ndiscard_unpacked_layers = true'
rpull "$NS-disc" "$IMG:d"
[ "$(count '"msg":"preparing snapshot with parallel pull/unpack"')" = 1 ] || fail "discard: not parallel"
[ "$(count '"local-snapshot-prepared":"true"')" = 1 ] || fail "discard: not local"
DL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/d.json")
[ ! -e "$SNAPROOT/content/blobs/sha256/${DL#sha256:}" ] || fail "discard: blob kept in the soci store"
$CTR -n "$NS-disc" content ls -q >"$WORK/content-disc.txt" || fail "discard: content ls"
grep -qx "$DL" "$WORK/content-disc.txt" && fail "discard: blob in containerd's store"
out=$($CTR -n "$NS-disc" run --rm --snapshotter soci "$IMG:d" "c$$-disc" soci-test-entrypoint --all 2>&1) || fail "discard: run: $out"
[[ $out == *READY* ]] || fail "discard: run output: $out"
unpack_empty discard
pass "soci store + discard_unpacked_layers ⇒ local snapshot, blob kept nowhere, run ok ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 7 corrupted blob / wrong diffID
t=$(ms)
# Chunked, so that the blob is verified by the unpack (one whole-blob GET is verified by
# soci-registry's copy_blob already: "digest mismatch").
scenario corrupt "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nenable = true\nconcurrent_download_chunk_size = "256kb"'
CREPO=e2e2/par-corrupt-$$
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:c" "docker://$REGISTRY/$CREPO:s" || fail "push image c"
SL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/c.json")
DATA=$REG_DATA/docker/registry/v2/blobs/sha256/${SL:7:2}/${SL#sha256:}/data
[ -f "$DATA" ] || fail "corrupt: registry blob file $DATA not found"
cp "$DATA" "$WORK/blob.orig"
python3 - "$DATA" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0xff
open(p, "wb").write(bytes(b))
PY
expect_fail() { # NAME REF MESSAGE
  local rc=0
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-$1" image rpull --plain-http "$2" >"$WORK/rpull-$1.out" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "$1: rpull succeeded"
  grep -q "$3" "$LOG.cur" || fail "$1: no '$3' in the daemon log"
  grep -q "$3" "$WORK/rpull-$1.out" || { cat "$WORK/rpull-$1.out"; fail "$1: rpull error does not say '$3'"; }
  [ -z "$($CTR -n "$NS-$1" snapshots --snapshotter soci ls | tail -n +2)" ] || fail "$1: snapshot left behind"
  [ -z "$(ls -A "$SNAPROOT/snapshotter/snapshots")" ] || fail "$1: snapshot directory left: $(ls "$SNAPROOT/snapshotter/snapshots")"
  unpack_empty "$1"
}
expect_fail badblob "$REGISTRY/$CREPO:s" "compressed digest did not match"
cp "$WORK/blob.orig" "$DATA"
# Wrong diffID: the same layer under a config whose diff_ids name other content.
python3 - "$REGISTRY" "$CREPO" <<'PY' || fail "corrupt: registry edit"
import hashlib, json, sys, urllib.request
reg, repo = sys.argv[1:3]
base = f"http://{reg}/v2/{repo}"
MAN = "application/vnd.oci.image.manifest.v1+json"
man = json.loads(urllib.request.urlopen(urllib.request.Request(f"{base}/manifests/s", headers={"Accept": MAN})).read())
cfg = json.loads(urllib.request.urlopen(f"{base}/blobs/{man['config']['digest']}").read())
cfg["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(b"not this layer").hexdigest()]
data = json.dumps(cfg).encode()
d = "sha256:" + hashlib.sha256(data).hexdigest()
loc = urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", data=b"", method="POST")).headers["Location"]
loc = loc if loc.startswith("http") else f"http://{reg}{loc}"
loc += ("&" if "?" in loc else "?") + "digest=" + d
urllib.request.urlopen(urllib.request.Request(loc, data=data, method="PUT", headers={"Content-Type": "application/octet-stream"})).read()
man["config"] = {"mediaType": man["config"]["mediaType"], "digest": d, "size": len(data)}
body = json.dumps(man).encode()
urllib.request.urlopen(urllib.request.Request(f"{base}/manifests/baddiff", data=body, method="PUT", headers={"Content-Type": MAN})).read()
PY
expect_fail baddiff "$REGISTRY/$CREPO:baddiff" "uncompressed digests did not match"
pass "corrupted blob ⇒ 'compressed digest did not match', wrong diffID ⇒ 'uncompressed digests did not match'; rpull fails, no snapshot left ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 8 external gzip decompressor
t=$(ms)
cat >"$WORK/gunzip-ext" <<SH
#!/bin/sh
echo used >>"$WORK/gunzip-ext.calls"
exec gzip -d -c
SH
chmod +x "$WORK/gunzip-ext"
: >"$WORK/gunzip-ext.calls"
scenario decompress "$CTRD_STORE"$'\n[pull_modes.parallel_pull_unpack]\nenable = true\n[pull_modes.parallel_pull_unpack.decompress_streams.gzip]\npath = "'"$WORK/gunzip-ext"'"'
rpull "$NS-ext" "$IMG:a"
[ "$(wc -l <"$WORK/gunzip-ext.calls")" = "$N" ] || fail "decompress: external gzip ran $(wc -l <"$WORK/gunzip-ext.calls") times for $N layers"
[ "$(count '"local-snapshot-prepared":"true"')" = "$N" ] || fail "decompress: not every layer local"
tree_matches_overlay "$NS-ext" "$IMG:a" ext
[ "$(metric local_mount_failure_count)" = 0 ] || fail "decompress: local_mount_failure_count $(metric local_mount_failure_count)"
pass "decompress_streams.gzip: the external binary unpacked all $N layers, rootfs identical ($(( $(ms) - t )) ms)"

stop_daemon INT
echo "e2e-parallel: all scenarios passed in $(( $(date +%s) - T0 )) s"
