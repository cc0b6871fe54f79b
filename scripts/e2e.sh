#!/usr/bin/env bash
# End-to-end tests of soci-snapshotter-grpc + `soci image rpull` against containerd 1.6, a local
# registry and FUSE. Needs root, /dev/fuse and the packages of scripts/install-deps.sh; prints
# `SKIPPED: <reason>` (exit 0) when a prerequisite is missing, never passes silently otherwise.
#
# Scenarios (each asserts real behaviour):
#   1 plain      ctr pull/run through the proxy snapshotter (overlay semantics, no FUSE mounts)
#   2 deferred   rpull of an image without SOCI index: layers deferred to the runtime, run works
#   3 lazy       rpull of a `soci convert`ed image: 1 FUSE mount, v2 index digest logged, run --all
#   3b large     4-layer image (3 indexed, 1 small top layer with whiteouts): 3 FUSE mounts + 1 local
#                snapshot, every file and whiteout checked; `ctr images rm --sync` unmounts them
#   4 restart    SIGTERM + restart: the FUSE mount is re-established, run works again
#   5 metrics    /metrics exposes the fuse_mount_failure_count line
#   6 sigint     SIGINT unmounts every FUSE layer
#   7 config     explicit missing config ⇒ fatal "failed to open config file"
#   8 v1         daemon with only SOCI v1 enabled finds a `soci create`+`soci push`ed v1 index
#                through the referrers tag fallback of distribution 2.8
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh"

e2e_prereqs containerd ctr runc docker-registry skopeo python3 curl
e2e_build
e2e_services
WORK=$SOCI_E2E_BASE/snap-e2e
SNAPROOT=$WORK/root
LOG=$WORK/daemon.log
METRICS_PORT=${METRICS_PORT:-13380}
PID=

cleanup() {
  set +e
  purge_namespaces e2e
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  grep " $SNAPROOT/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ "$started_services" = 1 ] && "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT

unmount_under "$SNAPROOT"
rm -rf "$WORK"; mkdir -p "$WORK"
cat >"$WORK/config.toml" <<TOML
metrics_address = "127.0.0.1:$METRICS_PORT"
[pull_modes.soci_v2]
enable = true
TOML


# Images: one small runnable image, and the same converted with a v2 SOCI index.
IMG=$REGISTRY/e2e/snap
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" v1 --kind small >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:v1" "docker://$IMG:v1" || fail "push image"
"$SOCI" convert --standalone --plain-http --min-layer-size 0 --span-size 65536 "$IMG:v1" "$IMG:soci" \
  >"$WORK/convert.out" 2>&1 || { cat "$WORK/convert.out"; fail "soci convert"; }
V2_INDEX=$(curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REGISTRY/v2/e2e/snap/manifests/soci" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print([m["digest"] for m in d["manifests"] if m.get("artifactType")=="application/vnd.amazon.soci.index.v2+json"][0])') \
  || fail "no v2 index in the converted image"

NS=e2e$$
start_daemon
purge_namespaces e2e

# 1 plain
$CTR -n "$NS-plain" images pull --plain-http --snapshotter soci "$IMG:v1" >/dev/null || fail "ctr pull"
out=$($CTR -n "$NS-plain" run --rm --snapshotter soci "$IMG:v1" "c$$-1" 2>&1) || fail "ctr run: $out"
[[ $out == *READY* ]] || fail "plain run output: $out"
[ "$(fuse_mounts)" = 0 ] || fail "plain pull made FUSE mounts"
pass "plain ctr pull/run through the proxy"

# 2 deferred (no index)
t=$(ms)
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-def" image rpull --plain-http "$IMG:v1" >"$WORK/rpull-def.out" || fail "rpull (no index)"
T_DEF=$(( $(ms) - t ))
grep -q '"msg":"no valid SOCI index found; deferring to container runtime"' "$LOG.cur" || fail "no deferral log"
grep -q '"defer-snapshot-runtime":"true"' "$LOG.cur" || fail "no defer-snapshot-runtime field"
out=$($CTR -n "$NS-def" run --rm --snapshotter soci "$IMG:v1" "c$$-2" 2>&1) || fail "run deferred: $out"
[[ $out == *READY* ]] || fail "deferred run output: $out"
pass "rpull without index defers to the runtime (${T_DEF} ms)"

# 3 lazy
t=$(ms)
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-lazy" image rpull --plain-http "$IMG:soci" >"$WORK/rpull-lazy.out" || fail "rpull (lazy)"
T_LAZY=$(( $(ms) - t ))
[ "$(fuse_mounts)" = 1 ] || fail "expected 1 FUSE mount, got $(fuse_mounts)"
grep '"msg":"fetching SOCI artifacts using index descriptor"' "$LOG.cur" | grep -q "\"digest\":\"$V2_INDEX\"" \
  || fail "index digest $V2_INDEX not logged"
grep -q '"remote-snapshot-prepared":"true"' "$LOG.cur" || fail "no remote-snapshot-prepared"
grep -q '"msg":"checking mount point"' "$LOG.cur" && fail "unexpected check before run"
t=$(ms)
out=$($CTR -n "$NS-lazy" run --rm --snapshotter soci "$IMG:soci" "c$$-3" soci-test-entrypoint --all 2>&1) || fail "lazy run: $out"
T_RUN=$(( $(ms) - t ))
[[ $out == *READY* && $out == *checked* ]] || fail "lazy run output: $out"
grep -q '"msg":"checking mount point"' "$LOG.cur" || fail "no 'checking mount point' log"
pass "lazy rpull: 1 FUSE mount, v2 index $V2_INDEX, all files verified (pull ${T_LAZY} ms, run ${T_RUN} ms)"

# 3b large multi-layer image (E2E_LARGE=0 skips it)
if [ "${E2E_LARGE:-1}" = 1 ]; then
  BIG=$REGISTRY/e2e/snapbig
  python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/big" v1 --kind large --size-mb 48 >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/big:v1" "docker://$BIG:v1" || fail "push large image"
  "$SOCI" convert --standalone --plain-http "$BIG:v1" "$BIG:soci" >"$WORK/convert-big.out" 2>&1 \
    || { cat "$WORK/convert-big.out"; fail "soci convert (large)"; }
  before=$(fuse_mounts)
  t=$(ms)
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-big" image rpull --plain-http "$BIG:soci" >"$WORK/rpull-big.out" || fail "rpull (large)"
  T_BIG=$(( $(ms) - t ))
  [ "$(fuse_mounts)" = $((before + 3)) ] || fail "large: expected 3 more FUSE mounts, got $(( $(fuse_mounts) - before ))"
  grep -q '"msg":"skipping mounting layer as FUSE mount: no ztoc for layer"' "$LOG.cur" || fail "large: no 'no ztoc' log"
  grep -q '"local-snapshot-prepared":"true"' "$LOG.cur" || fail "large: no local snapshot"
  t=$(ms)
  out=$($CTR -n "$NS-big" run --rm --snapshotter soci "$BIG:soci" "c$$-b1" 2>&1) || fail "large run: $out"
  T_BIG_RUN=$(( $(ms) - t ))
  [[ $out == *READY* ]] || fail "large run output: $out"
  t=$(ms)
  out=$($CTR -n "$NS-big" run --rm --snapshotter soci "$BIG:soci" "c$$-b2" soci-test-entrypoint --all 2>&1) || fail "large run --all: $out"
  T_BIG_ALL=$(( $(ms) - t ))
  [[ $out == *READY* && $out == *checked* ]] || fail "large run --all output: $out"
  $CTR -n "$NS-big" images rm --sync "$BIG:soci" >/dev/null || fail "image rm"
  sleep 1
  [ "$(fuse_mounts)" = "$before" ] || fail "image rm left $(( $(fuse_mounts) - before )) FUSE mounts"
  # Same layers without an index (after the lazy snapshots are gone): a full pull for comparison.
  t=$(ms)
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-bigfull" image rpull --plain-http "$BIG:v1" >"$WORK/rpull-bigfull.out" || fail "rpull (large, no index)"
  T_BIG_FULL=$(( $(ms) - t ))
  grep -q ' 4 unpacked' "$WORK/rpull-bigfull.out" || fail "large without index: $(cat "$WORK/rpull-bigfull.out")"
  out=$($CTR -n "$NS-bigfull" run --rm --snapshotter soci "$BIG:v1" "c$$-b3" 2>&1) || fail "large full run: $out"
  [[ $out == *READY* ]] || fail "large full run output: $out"
  pass "large: 3 FUSE + 1 local layer, all files verified; image rm unmounts (lazy rpull ${T_BIG} ms, first run ${T_BIG_RUN} ms, read all ${T_BIG_ALL} ms; full rpull without index ${T_BIG_FULL} ms)"
fi

# 4 restart (SIGTERM keeps state; restart re-mounts)
stop_daemon TERM
start_daemon
[ "$(fuse_mounts)" = 1 ] || fail "after restart expected 1 FUSE mount, got $(fuse_mounts)"
grep -q '"msg":"restored remote snapshot"' "$LOG.cur" || fail "no restore log"
out=$($CTR -n "$NS-lazy" run --rm --snapshotter soci "$IMG:soci" "c$$-4" soci-test-entrypoint --all 2>&1) || fail "run after restart: $out"
[[ $out == *READY* ]] || fail "run after restart: $out"
out=$($CTR -n "$NS-plain" run --rm --snapshotter soci "$IMG:v1" "c$$-5" 2>&1) || fail "plain run after restart: $out"
pass "restart: FUSE mount restored, lazy and plain images run"

# 5 metrics
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics.txt" || fail "metrics endpoint"
grep -q '^soci_fs_operation_count{layer="",operation_type="fuse_mount_failure_count"} 0' "$WORK/metrics.txt" \
  || fail "fuse_mount_failure_count line missing"
grep -q '^soci_fs_layer_size_bytes{digest="sha256:[0-9a-f]*",mountpoint="'"$SNAPROOT"'/snapshotter/snapshots/[0-9]*/fs"} [1-9]' "$WORK/metrics.txt" \
  || fail "soci_fs_layer_size_bytes of the mounted layer missing"
pass "metrics"

# 6 SIGINT unmounts
stop_daemon INT
[ "$(fuse_mounts)" = 0 ] || fail "SIGINT left $(fuse_mounts) FUSE mounts"
pass "SIGINT unmounts lazy layers"

# 7 config
if "$DAEMON" --address "$WORK/x.sock" --root "$WORK/r2" --config "$WORK/missing.toml" >"$WORK/cfg.out" 2>&1; then
  fail "missing explicit config did not fail"
fi
grep -q 'failed to open config file' "$WORK/cfg.out" || fail "missing config message"
pass "explicit missing config is fatal"

# 8 v1 index discovered through referrers (tag-schema fallback on distribution 2.8)
V1IMG=$REGISTRY/e2e/snapv1-$$
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:v1" "docker://$V1IMG:v1" || fail "push v1 image"
$CTR -n "$NS-v1src" images pull --plain-http "$V1IMG:v1" >/dev/null || fail "ctr pull (v1 source)"
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-v1src" --root "$WORK/cli-root" create --min-layer-size 0 --span-size 65536 "$V1IMG:v1" \
  >"$WORK/create.out" 2>&1 || { cat "$WORK/create.out"; fail "soci create"; }
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-v1src" --root "$WORK/cli-root" push --plain-http "$V1IMG:v1" \
  >"$WORK/push.out" 2>&1 || { cat "$WORK/push.out"; fail "soci push"; }
V1_INDEX=$(grep -o 'pushing soci index with digest: sha256:[0-9a-f]*' "$WORK/push.out" | awk '{print $NF}')
[ -n "$V1_INDEX" ] || V1_INDEX=$(grep -o 'sha256:[0-9a-f]\{64\}' "$WORK/push.out" | tail -1)
cat >"$WORK/config.toml" <<TOML
[pull_modes.soci_v1]
enable = true
[pull_modes.soci_v2]
enable = false
TOML
start_daemon
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS-v1" image rpull --plain-http "$V1IMG:v1" >"$WORK/rpull-v1.out" || fail "rpull (v1)"
grep -q '"msg":"using soci v1 index via referrers API"' "$LOG.cur" || fail "v1 index not discovered"
grep '"msg":"fetching SOCI artifacts using index descriptor"' "$LOG.cur" | grep -q "\"digest\":\"$V1_INDEX\"" \
  || fail "v1 index $V1_INDEX not used"
out=$($CTR -n "$NS-v1" run --rm --snapshotter soci "$V1IMG:v1" "c$$-v1" soci-test-entrypoint --all 2>&1) || fail "v1 run: $out"
[[ $out == *READY* ]] || fail "v1 run output: $out"
stop_daemon INT
pass "v1 index $V1_INDEX found via the referrers tag fallback and used"

echo "e2e: all scenarios passed (deferred rpull ${T_DEF} ms, lazy rpull ${T_LAZY} ms, lazy run --all ${T_RUN} ms)"
