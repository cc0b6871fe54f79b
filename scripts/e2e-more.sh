#!/usr/bin/env bash
# More end-to-end scenarios of SOCI-SPEC.md §8 (pull/run/metrics/startup), on top of scripts/e2e.sh:
# soci-snapshotter-grpc + `soci image rpull` against containerd 1.6, distribution 2.8 and FUSE.
# Needs root, /dev/fuse and the packages of scripts/install-deps.sh; prints `SKIPPED: <reason>`
# (exit 0) when a prerequisite is missing.
#
# Scenarios (each asserts real behaviour):
#   1 sparse     `soci convert --min-layer-size` between two big layer sizes: FUSE mounts ==
#                indexed layers, the rest local; the whole rootfs (file list, modes, owners,
#                sizes, link targets, sha256 of every file) equals a normal overlayfs pull;
#                `ctr images rm --sync` unmounts
#   2 shared     two images sharing 3 big layers (same seed, different top layer), 3 containers of
#                one and 2 of the other run concurrently: distinct outputs, FUSE mounts == distinct
#                indexed layers, fuse_mount_failure_count stays 0; the metrics endpoint has the
#                `mount` and `synchronous_read` histograms, non-zero per-layer
#                synchronous_read_count, resolve_cache_hit (pre-resolved sibling layers) and the
#                per-image FUSE operation counts (log and soci_fs_image_operation_count_key)
#   3 outage     registry stopped after rpull: reading a not-yet-fetched file in a running
#                container fails with EIO within the configured retries (never hangs) and counts
#                in fuse_file_read_failure_count / raises fuse_failure_state 0 -> 1 (once per 5
#                minutes however many reads fail); after the registry is
#                back the same read succeeds with the right content
#   4 wrong      `rpull --soci-index-digest` of another image's index: that index is used (logged),
#                every layer is a local snapshot, the container runs
#   5 badztoc    v2 index whose zTOC blob is random bytes: 0 FUSE mounts, the layer is local,
#                fuse_mount_failure_count +1, the container runs and every file checks
#   6 dangling   manifest whose v2 annotation names an index absent from the repository:
#                "no valid SOCI index found", no v1 fallback, deferred, the container runs
#   7 defcfg     `soci-snapshotter-grpc config default` output as --config: the daemon starts
#   8 badcfg     non-numeric values where numbers are expected: exit != 0 within 2 s, message
#                names the problem
#   9 mounttimeout  a daemon with mount_timeout_sec = 3 (and the default 300 s blob timeout) pulls
#                through scripts/hang-range-proxy.py, which never answers ranged blob reads:
#                "timeout waiting for layer to resolve", the layer becomes a local snapshot,
#                fuse_mount_failure_count +1, rpull returns (well under the blob timeout) and the
#                container runs
#
# Environment: SOCI_E2E_BASE, REGISTRY_PORT, REFERRERS_PORT (scripts/services.sh; e.g.
# SOCI_E2E_BASE=/tmp/soci-e2e2 REGISTRY_PORT=5200 REFERRERS_PORT=5201 to stay away from other
# runs), METRICS_PORT (13381), HANG_PORT (METRICS_PORT + 1), CARGO_TARGET_DIR.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh"

e2e_prereqs containerd ctr runc docker-registry skopeo python3 curl timeout
e2e_build
T0=$(date +%s)

e2e_services
WORK=$SOCI_E2E_BASE/snap-e2e-more
SNAPROOT=$WORK/root
LOG=$WORK/daemon.log
METRICS_PORT=${METRICS_PORT:-13381}
PID=
NS=e2m$$

registry_up() { curl -sf --max-time 2 "http://$REGISTRY/v2/" >/dev/null; }
registry_start() { "$ROOT_DIR/scripts/services.sh" start >/dev/null 2>&1 || fail "registry restart"; }

cleanup() {
  set +e
  registry_up || registry_start
  purge_namespaces e2m
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  [ -n "${PID2:-}" ] && kill -KILL "$PID2" 2>/dev/null
  [ -n "${PROXY_PID:-}" ] && kill "$PROXY_PID" 2>/dev/null
  grep " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ "$started_services" = 1 ] && "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT

unmount_under "$WORK"
rm -rf "$WORK"; mkdir -p "$WORK"
# Short retries so that a registry outage turns into EIO quickly (§5.12, §5.16); no background
# fetch so that files stay unfetched until read.
cat >"$WORK/config.toml" <<TOML
metrics_address = "127.0.0.1:$METRICS_PORT"
fuse_metrics_emit_wait_duration_sec = 2
[http]
DialTimeoutMsec = 1000
ResponseHeaderTimeoutMsec = 2000
MaxRetries = 2
MinWaitMsec = 100
MaxWaitMsec = 400
[blob]
fetching_timeout_sec = 5
max_retries = 2
min_wait_msec = 100
max_wait_msec = 400
[background_fetch]
disable = true
[pull_modes.soci_v1]
enable = true
[pull_modes.soci_v2]
enable = true
TOML

metric() { # NAME: value of soci_fs_operation_count{layer="",operation_type=NAME}
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" \
    | awk -v n="operation_type=\"$1\"}" 'index($0, "soci_fs_operation_count{layer=\"\",") == 1 && index($0, n) { print $2 }'
}
metrics_text() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics"; }
layer_metric_sum() { # NAME: sum of soci_fs_operation_count{layer="sha256:…",operation_type=NAME}
  metrics_text | awk -v n="operation_type=\"$1\"}" \
    'index($0, "soci_fs_operation_count{layer=\"sha256:") == 1 && index($0, n) { s += $2 } END { print s + 0 }'
}
rpull() { # NS REF [ARGS...]
  local ns=$1 ref=$2
  shift 2
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$ns" image rpull --plain-http "$@" "$ref" >"$WORK/rpull-$ns.out" 2>&1 \
    || { cat "$WORK/rpull-$ns.out"; fail "rpull $ref"; }
}
# Log lines written since the last `mark`.
mark() { MARK=$(wc -l <"$LOG.cur"); }
since() { tail -n +"$((MARK + 1))" "$LOG.cur"; }
v2_index() { # REPO TAG: digest of the v2 SOCI index in the converted image index
  curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REGISTRY/v2/$1/manifests/$2" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print([m["digest"] for m in d["manifests"] if m.get("artifactType")=="application/vnd.amazon.soci.index.v2+json"][0])'
}

# Registry edits (python): `dangling REPO SRC DST` re-tags SRC's image manifest with a v2
# annotation naming an absent index; `badztoc REPO SRC DST` copies the converted image SRC into a
# new index whose zTOC blobs are random bytes (uploaded, digests valid) and a manifest pointing to it.
regedit() {
  python3 - "$REGISTRY" "$@" <<'PY'
import hashlib, json, os, sys, urllib.request
reg, op, repo, src, dst = sys.argv[1:6]
base = f"http://{reg}/v2/{repo}"
MAN, IDX = "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json"
ANN = "com.amazon.soci.index-digest"
def get(ref, accept):
    req = urllib.request.Request(f"{base}/manifests/{ref}", headers={"Accept": accept})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())
def put_manifest(ref, obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    req = urllib.request.Request(f"{base}/manifests/{ref}", data=data, method="PUT",
                                 headers={"Content-Type": obj["mediaType"]})
    urllib.request.urlopen(req).read()
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
def put_blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", data=b"", method="POST"))
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else f"http://{reg}{loc}"
    loc += ("&" if "?" in loc else "?") + "digest=" + d
    urllib.request.urlopen(urllib.request.Request(loc, data=data, method="PUT",
                           headers={"Content-Type": "application/octet-stream"})).read()
    return d
top = get(src, f"{IDX}, {MAN}")
if top["mediaType"] == IDX:
    img = [m for m in top["manifests"] if "artifactType" not in m][0]
    man = get(img["digest"], MAN)
else:
    man = top
if op == "dangling":
    absent = "sha256:" + hashlib.sha256(os.urandom(32)).hexdigest()
    man.setdefault("annotations", {})[ANN] = absent
    put_manifest(dst, man)
    print(absent)
elif op == "badztoc":
    index = get(man["annotations"][ANN], MAN)
    for layer in index["layers"]:
        if layer["mediaType"] == "application/octet-stream":
            layer["digest"] = put_blob(os.urandom(layer["size"]))
    idx_digest, _ = put_manifest(hashlib.sha256(json.dumps(index).encode()).hexdigest()[:20], index)
    man["annotations"][ANN] = idx_digest
    put_manifest(dst, man)
    print(idx_digest)
PY
}

# ------------------------------------------------------------------ images
REPO=e2e2/more-$$
BIG=$REGISTRY/$REPO
t=$(ms)
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" a --kind large --size-mb 48 --synthetic --seed 1 --json \
  >"$WORK/a.json" 2>/dev/null || fail "make image a"
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" b --kind large --size-mb 48 --synthetic --seed 1 --note image-b \
  >/dev/null 2>&1 || fail "make image b"
for s in 11 12 13 14; do
  python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" "s$s" --kind small --seed "$s" >/dev/null 2>&1 || fail "make s$s"
done
for tag in a b s11 s12 s13 s14; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$tag" "docker://$BIG:$tag" || fail "push $tag"
done
# Threshold between the 2nd and 3rd largest layer: exactly 2 of the 4 layers are indexed.
read -r MIN N_SPARSE < <(python3 -c '
import json,sys; s=sorted((l["size"] for l in json.load(open(sys.argv[1]))["layers"]), reverse=True)
assert s[1] > s[2], s; print((s[1]+s[2])//2, 2)' "$WORK/a.json")
convert() { # SRC DST ARGS...
  local src=$1 dst=$2
  shift 2
  "$SOCI" convert --standalone --plain-http "$@" "$BIG:$src" "$BIG:$dst" >"$WORK/convert-$dst.out" 2>&1 \
    || { cat "$WORK/convert-$dst.out"; fail "soci convert $src"; }
}
tc=$(ms); convert a a-sparse --min-layer-size "$MIN"; echo "convert a-sparse $(( $(ms) - tc )) ms"
tc=$(ms); convert a a-soci; echo "convert a-soci $(( $(ms) - tc )) ms"
tc=$(ms); convert b b-soci; echo "convert b-soci $(( $(ms) - tc )) ms"
convert s11 s11-soci --min-layer-size 0 --span-size 65536
convert s13 s13-soci --min-layer-size 0 --span-size 65536
convert s14 s14-soci --min-layer-size 0 --span-size 65536
T_IMAGES=$(( $(ms) - t ))
echo "images built, pushed and converted in ${T_IMAGES} ms"

start_daemon
purge_namespaces e2m

# ------------------------------------------------------------------ 1 sparse + rootfs identity
t=$(ms)
mark
rpull "$NS-sparse" "$BIG:a-sparse"
[ "$(fuse_mounts)" = "$N_SPARSE" ] || fail "sparse: expected $N_SPARSE FUSE mounts, got $(fuse_mounts)"
n_local=$(since | grep -c '"local-snapshot-prepared":"true"' || true)
[ "$n_local" = $((4 - N_SPARSE)) ] || fail "sparse: expected $((4 - N_SPARSE)) local snapshots, got $n_local"
since | grep '"msg":"skipping mounting layer as FUSE mount: no ztoc for layer"' >/dev/null || fail "sparse: no 'no ztoc' log"
$CTR -n "$NS-overlay" images pull --plain-http "$BIG:a" >/dev/null || fail "ctr pull (overlayfs)"
$CTR -n "$NS-sparse" run --rm --snapshotter soci "$BIG:a-sparse" "c$$-s1" sh -c "$TREE_CMD" >"$WORK/tree-lazy.txt" 2>&1 \
  || { head "$WORK/tree-lazy.txt"; fail "sparse: tree listing in the lazy container"; }
$CTR -n "$NS-overlay" run --rm "$BIG:a" "c$$-s2" sh -c "$TREE_CMD" >"$WORK/tree-overlay.txt" 2>&1 \
  || { head "$WORK/tree-overlay.txt"; fail "sparse: tree listing in the overlayfs container"; }
n_files=$(grep -c ' /usr/\| /data/' "$WORK/tree-overlay.txt" || true)
[ "$n_files" -gt 100 ] || fail "sparse: overlayfs listing too short ($n_files)"
diff -u "$WORK/tree-overlay.txt" "$WORK/tree-lazy.txt" >"$WORK/tree.diff" || { head -n 20 "$WORK/tree.diff"; fail "sparse: rootfs differs from the overlayfs pull"; }
grep -q '/usr/share/soci-test/tree1/' "$WORK/tree-lazy.txt" || fail "sparse: /usr tree missing"
grep -q ' /data/opaque/a.txt' "$WORK/tree-lazy.txt" && fail "sparse: opaque dir leaks"
$CTR -n "$NS-sparse" images rm --sync "$BIG:a-sparse" >/dev/null || fail "sparse: image rm"
sleep 1
[ "$(fuse_mounts)" = 0 ] || fail "sparse: image rm left $(fuse_mounts) FUSE mounts"
pass "sparse index: $N_SPARSE FUSE + $((4 - N_SPARSE)) local layers; rootfs ($(wc -l <"$WORK/tree-lazy.txt") lines, every file's sha256) identical to overlayfs; image rm unmounts ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 2 shared layers, concurrent runs
# (This scenario found the concurrent-open EIO fixed in soci-fs: see reads.rs
# r_concurrent_opens_of_a_local_file_all_succeed.)
t=$(ms)
fail0=$(metric fuse_mount_failure_count)
rpull "$NS-a" "$BIG:a-soci"
[ "$(fuse_mounts)" = 3 ] || fail "shared: expected 3 FUSE mounts for a, got $(fuse_mounts)"
rpull "$NS-b" "$BIG:b-soci"
[ "$(fuse_mounts)" = 3 ] || fail "shared: b should reuse a's 3 lazy layers, got $(fuse_mounts) FUSE mounts"
pids=()
for i in 1 2 3; do
  $CTR -n "$NS-a" run --rm --snapshotter soci "$BIG:a-soci" "c$$-a$i" sh -c \
    "echo id=a$i; cat /etc/soci-test-note 2>/dev/null || echo no-note; soci-test-entrypoint /data/big1/ready.bin /data/big2/ready.bin /data/big3/ready.bin" \
    >"$WORK/run-a$i.out" 2>&1 &
  pids+=($!)
done
for i in 1 2; do
  $CTR -n "$NS-b" run --rm --snapshotter soci "$BIG:b-soci" "c$$-b$i" sh -c \
    "echo id=b$i; cat /etc/soci-test-note; soci-test-entrypoint /data/big1/ready.bin /data/big3/ready.bin /data/big1/ready.hardlink" \
    >"$WORK/run-b$i.out" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
for i in 1 2 3; do
  [ "$(cat "$WORK/run-a$i.out")" = "$(printf 'id=a%s\nno-note\nREADY' "$i")" ] || fail "shared: a$i output: $(cat "$WORK/run-a$i.out")"
done
for i in 1 2; do
  [ "$(cat "$WORK/run-b$i.out")" = "$(printf 'id=b%s\nimage-b\nREADY' "$i")" ] || fail "shared: b$i output: $(cat "$WORK/run-b$i.out")"
done
[ "$(metric fuse_mount_failure_count)" = "$fail0" ] || fail "shared: fuse_mount_failure_count $fail0 -> $(metric fuse_mount_failure_count)"
# Metrics of the lazy runs (§5.15): latency histograms and the per-layer FUSE read counters.
metrics_text >"$WORK/metrics-shared.txt" || fail "metrics: endpoint"
grep -Eq '^soci_fs_operation_duration_milliseconds_bucket\{.*operation_type="mount".*\} [1-9]' "$WORK/metrics-shared.txt" \
  || fail "metrics: no mount histogram bucket with observations"
grep -Eq '^soci_fs_operation_duration_microseconds_bucket\{.*operation_type="synchronous_read".*\} [1-9]' "$WORK/metrics-shared.txt" \
  || fail "metrics: no synchronous_read histogram bucket with observations"
grep -Eq '^soci_fs_operation_duration_milliseconds_count\{layer="sha256:[0-9a-f]{64}",operation_type="remote_registry_get"\} [1-9]' "$WORK/metrics-shared.txt" \
  || fail "metrics: no remote_registry_get observations"
reads=$(layer_metric_sum synchronous_read_count)
[ "$reads" -gt 0 ] || fail "metrics: synchronous_read_count is $reads after lazy runs"
served=$(awk 'index($0, "soci_fs_bytes_served{layer=\"sha256:") == 1 { s += $2 } END { print s + 0 }' "$WORK/metrics-shared.txt")
[ "$served" -gt 0 ] || fail "metrics: synchronous_bytes_served is $served"
[ "$(metric fuse_failure_state)" = 0 ] || fail "metrics: fuse_failure_state $(metric fuse_failure_state) before any FUSE failure"
# The first layer mount of an image pre-resolves the others; their mounts take the result.
hits=$(layer_metric_sum resolve_cache_hit)
[ "$hits" -gt 0 ] || fail "metrics: no resolve_cache_hit (sibling layers not pre-resolved)"
# Per-image FUSE operation counts, emitted once fuse_metrics_emit_wait_duration_sec (2 s) after
# each image's first mount.
for _ in $(seq 100); do
  grep -q '"msg":"fuse operation count for image sha256:[0-9a-f]*: file.Read = ' "$LOG.cur" && break
  sleep 0.1
done
grep -q '"msg":"fuse operation count for image sha256:[0-9a-f]*: node.Lookup = ' "$LOG.cur" || fail "metrics: no per-image FUSE operation count log"
metrics_text | grep -Eq '^soci_fs_image_operation_count_key\{image="sha256:[0-9a-f]{64}",operation_type="file.Read"\} [0-9]+$' \
  || fail "metrics: no soci_fs_image_operation_count_key line"
pass "shared layers: 3 FUSE mounts for 2 images, 5 concurrent containers with distinct outputs, no mount failure; metrics: mount/synchronous_read histograms, $reads synchronous reads, $served bytes served, $hits pre-resolved layer mounts ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 3 registry outage during lazy reads
t=$(ms)
$CTR -n "$NS-a" run -d --snapshotter soci "$BIG:a-soci" "c$$-out" sleep 600 >/dev/null || fail "outage: run -d"
rfail0=$(layer_metric_sum fuse_file_read_failure_count)
REG_PID=$(cat "$SOCI_E2E_BASE/registry/pid")
kill -TERM "$REG_PID"
for _ in $(seq 50); do registry_up || break; sleep 0.1; done
registry_up && fail "outage: registry still up"
mark
t1=$(ms)
rc=0
timeout 60 $CTR -n "$NS-a" tasks exec --exec-id r1 "c$$-out" cat /data/big1/filler-000.bin >/dev/null 2>"$WORK/outage.err" || rc=$?
T_EIO=$(( $(ms) - t1 ))
[ "$rc" != 124 ] || fail "outage: read hung (> 60 s)"
[ "$rc" != 0 ] || fail "outage: read succeeded without registry"
grep -q 'Input/output error' "$WORK/outage.err" || fail "outage: not EIO: $(cat "$WORK/outage.err")"
[ "$T_EIO" -lt 30000 ] || fail "outage: EIO took ${T_EIO} ms"
# [blob] max_retries = 2: three attempts per request, then the error; backoff >= 100 + 200 ms.
since | grep '"msg":"request failed; retrying"' | grep '"attempt":3,' >/dev/null || fail "outage: no third attempt logged"
since | grep '"msg":"request failed; retrying"' | grep '"attempt":4,' >/dev/null && fail "outage: more than 2 retries"
[ "$T_EIO" -ge 300 ] || fail "outage: EIO after ${T_EIO} ms, before the configured backoff (min_wait_msec 100)"
rfail1=$(layer_metric_sum fuse_file_read_failure_count)
[ "$rfail1" -gt "$rfail0" ] || fail "outage: fuse_file_read_failure_count $rfail0 -> $rfail1"
[ "$(metric fuse_failure_state)" = 1 ] || fail "outage: fuse_failure_state is $(metric fuse_failure_state), want 1"
registry_start
registry_up || fail "outage: registry not back"
out=$(timeout 60 $CTR -n "$NS-a" tasks exec --exec-id r2 "c$$-out" soci-test-entrypoint /data/big1/filler-000.bin 2>&1) \
  || fail "outage: read after the registry came back: $out"
[ "$out" = READY ] || fail "outage: read after recovery: $out"
$CTR -n "$NS-a" tasks kill -s SIGKILL "c$$-out" >/dev/null 2>&1; sleep 0.3
$CTR -n "$NS-a" tasks rm -f "c$$-out" >/dev/null 2>&1 || true
$CTR -n "$NS-a" containers rm "c$$-out" >/dev/null 2>&1 || true
pass "registry outage: EIO after ${T_EIO} ms (no hang), fuse_file_read_failure_count $rfail0 -> $rfail1, fuse_failure_state 1; the same read succeeds once the registry is back ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 4 wrong index digest
t=$(ms)
I11=$(v2_index "$REPO" s11-soci) || fail "no v2 index for s11"
before=$(fuse_mounts)
mark
rpull "$NS-wrong" "$BIG:s12" --soci-index-digest "$I11"
since | grep '"msg":"using provided soci index digest"' >/dev/null || fail "wrong: no 'using provided soci index digest'"
since | grep '"msg":"fetching SOCI artifacts using index descriptor"' | grep "\"digest\":\"$I11\"" >/dev/null || fail "wrong: index $I11 not used"
since | grep '"local-snapshot-prepared":"true"' >/dev/null || fail "wrong: layer not a local snapshot"
[ "$(fuse_mounts)" = "$before" ] || fail "wrong: FUSE mount made with another image's index"
out=$($CTR -n "$NS-wrong" run --rm --snapshotter soci "$BIG:s12" "c$$-w" soci-test-entrypoint --all 2>&1) || fail "wrong: run: $out"
[[ $out == *READY* ]] || fail "wrong: run output: $out"
pass "wrong index digest: $I11 used, layer local, run --all ok ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 5 invalid zTOC blob
t=$(ms)
BAD_INDEX=$(regedit badztoc "$REPO" s13-soci s13-badztoc) || fail "badztoc: registry edit"
before=$(fuse_mounts)
fail0=$(metric fuse_mount_failure_count)
mark
rpull "$NS-bad" "$BIG:s13-badztoc"
since | grep '"msg":"fetching SOCI artifacts using index descriptor"' | grep "\"digest\":\"$BAD_INDEX\"" >/dev/null || fail "badztoc: index $BAD_INDEX not used"
[ "$(fuse_mounts)" = "$before" ] || fail "badztoc: FUSE mount from a random zTOC"
since | grep '"local-snapshot-prepared":"true"' >/dev/null || fail "badztoc: layer not a local snapshot"
fail1=$(metric fuse_mount_failure_count)
[ "$fail1" = $((fail0 + 1)) ] || fail "badztoc: fuse_mount_failure_count $fail0 -> $fail1 (want +1)"
out=$($CTR -n "$NS-bad" run --rm --snapshotter soci "$BIG:s13-badztoc" "c$$-z" soci-test-entrypoint --all 2>&1) || fail "badztoc: run: $out"
[[ $out == *READY* ]] || fail "badztoc: run output: $out"
pass "invalid zTOC blob: 0 FUSE mounts, local layer, fuse_mount_failure_count $fail0 -> $fail1, run --all ok ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 6 dangling v2 annotation
t=$(ms)
ABSENT=$(regedit dangling "$REPO" s11 s11-dangling) || fail "dangling: registry edit"
mark
rpull "$NS-dang" "$BIG:s11-dangling"
since | grep '"msg":"using soci v2 index annotation"' >/dev/null || fail "dangling: annotation not read"
since | grep '"msg":"fetching SOCI artifacts using index descriptor"' | grep "\"digest\":\"$ABSENT\"" >/dev/null || fail "dangling: attempted digest is not $ABSENT"
since | grep 'no valid SOCI index found' >/dev/null || fail "dangling: no 'no valid SOCI index found'"
since | grep '"msg":"checking for soci v1 index via referrers API"' >/dev/null && fail "dangling: v1 fallback attempted"
since | grep '"defer-snapshot-runtime":"true"' >/dev/null || fail "dangling: layer not deferred"
out=$($CTR -n "$NS-dang" run --rm --snapshotter soci "$BIG:s11-dangling" "c$$-d" 2>&1) || fail "dangling: run: $out"
[[ $out == *READY* ]] || fail "dangling: run output: $out"
pass "dangling v2 annotation: no valid SOCI index found, no v1 fallback, deferred, run ok ($(( $(ms) - t )) ms)"

stop_daemon INT
[ "$(fuse_mounts)" = 0 ] || fail "SIGINT left $(fuse_mounts) FUSE mounts"

# ------------------------------------------------------------------ 9 mount timeout
# The daemon pulls through a proxy that never answers ranged blob reads: the lazy mount's first
# range read (the gzip header) hangs. [blob] keeps its 300 s default timeout, so only
# mount_timeout_sec can end the wait; the layer then falls back to a local snapshot (whole-blob
# GETs pass the proxy).
t=$(ms)
HANG_PORT=${HANG_PORT:-$((METRICS_PORT + 1))}
python3 "$ROOT_DIR/scripts/hang-range-proxy.py" --listen "127.0.0.1:$HANG_PORT" --upstream "$REGISTRY" \
  >"$WORK/hang-proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 50); do curl -sf --max-time 2 "http://127.0.0.1:$HANG_PORT/v2/" >/dev/null && break; sleep 0.1; done
curl -sf --max-time 2 "http://127.0.0.1:$HANG_PORT/v2/" >/dev/null || fail "mounttimeout: proxy not up"
mv "$WORK/config.toml" "$WORK/config-main.toml"
printf 'metrics_address = "127.0.0.1:%s"\nmount_timeout_sec = 3\n[background_fetch]\ndisable = true\n' \
  "$METRICS_PORT" >"$WORK/config.toml"
start_daemon
mv "$WORK/config-main.toml" "$WORK/config.toml"
before=$(fuse_mounts)
fail0=$(metric fuse_mount_failure_count)
mark
t1=$(ms)
rc=0
timeout 120 "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-hang" image rpull --plain-http "127.0.0.1:$HANG_PORT/$REPO:s14-soci" \
  >"$WORK/rpull-hang.out" 2>&1 || rc=$?
T_HANG=$(( $(ms) - t1 ))
[ "$rc" != 124 ] || fail "mounttimeout: rpull still hanging after 120 s"
[ "$rc" = 0 ] || { cat "$WORK/rpull-hang.out"; fail "mounttimeout: rpull failed"; }
grep -q 'holding /v2/' "$WORK/hang-proxy.log" || fail "mounttimeout: no ranged read reached the proxy"
since | grep '"msg":"timeout waiting for layer to resolve"' | grep '"layerDigest":"sha256:' >/dev/null \
  || fail "mounttimeout: no 'timeout waiting for layer to resolve'"
since | grep '"msg":"failed to prepare remote snapshot"' | grep 'timeout waiting for layer sha256:[0-9a-f]* to resolve' >/dev/null \
  || fail "mounttimeout: remote prepare did not fail with the timeout"
since | grep '"local-snapshot-prepared":"true"' >/dev/null || fail "mounttimeout: layer not a local snapshot"
[ "$(fuse_mounts)" = "$before" ] || fail "mounttimeout: a FUSE mount was made"
fail1=$(metric fuse_mount_failure_count)
[ "$fail1" = $((fail0 + 1)) ] || fail "mounttimeout: fuse_mount_failure_count $fail0 -> $fail1 (want +1)"
# Generous bound: the 3 s mount timeout plus index/zTOC fetch and local unpack, far below the
# 300 s blob timeout that would end the hang otherwise.
[ "$T_HANG" -lt 60000 ] || fail "mounttimeout: rpull took ${T_HANG} ms"
out=$($CTR -n "$NS-hang" run --rm --snapshotter soci "127.0.0.1:$HANG_PORT/$REPO:s14-soci" "c$$-h" soci-test-entrypoint --all 2>&1) \
  || fail "mounttimeout: run: $out"
[[ $out == *READY* ]] || fail "mounttimeout: run output: $out"
stop_daemon INT
kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=
pass "mount timeout: ranged reads hung, remote mount gave up after mount_timeout_sec = 3, local snapshot, rpull in ${T_HANG} ms, run --all ok ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 7 default config starts
"$DAEMON" config default >"$WORK/default.toml" || fail "config default"
setsid "$DAEMON" --address "$WORK/def.sock" --root "$WORK/root-def" --config "$WORK/default.toml" >"$WORK/def.out" 2>&1 </dev/null &
PID2=$!
for _ in $(seq 100); do
  grep -q 'successfully started' "$WORK/def.out" && break
  kill -0 "$PID2" 2>/dev/null || break
  sleep 0.1
done
grep -q 'successfully started' "$WORK/def.out" || { cat "$WORK/def.out"; fail "default config: daemon did not start"; }
[ -S "$WORK/def.sock" ] || fail "default config: no socket"
kill -INT "$PID2"; wait "$PID2" 2>/dev/null || true; PID2=
pass "default config: the daemon starts"

# ------------------------------------------------------------------ 8 bad config exits quickly
bad_config() { # NAME TOML EXPECTED-MESSAGE-REGEX
  printf '%s\n' "$2" >"$WORK/bad-$1.toml"
  local t rc=0
  t=$(ms)
  timeout 10 "$DAEMON" --address "$WORK/bad.sock" --root "$WORK/root-bad" --config "$WORK/bad-$1.toml" \
    >"$WORK/bad-$1.out" 2>&1 </dev/null || rc=$?
  t=$(( $(ms) - t ))
  [ "$rc" != 0 ] || fail "bad config $1: exit 0"
  [ "$rc" != 124 ] || fail "bad config $1: still running after 10 s"
  [ "$t" -lt 2000 ] || fail "bad config $1: exit after $t ms (> 2 s)"
  grep -Eq "$3" "$WORK/bad-$1.out" || { cat "$WORK/bad-$1.out"; fail "bad config $1: unclear message"; }
}
bad_config chunk $'[pull_modes.parallel_pull_unpack]\nconcurrent_download_chunk_size = "badstring"' 'concurrent_download_chunk_size|badstring'
bad_config retries $'[http]\nMaxRetries = "abc"' 'MaxRetries'
bad_config timeout $'mount_timeout_sec = "thirty"' 'mount_timeout_sec'
pass "bad config values: exit != 0 within 2 s, message names the key"

echo "e2e-more: all scenarios passed in $(( $(date +%s) - T0 )) s (images ${T_IMAGES} ms)"
