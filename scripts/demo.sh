#!/usr/bin/env bash
# The main job of soci-rs, end to end, on a fresh Debian 12 machine (root):
#   local registry -> sample image -> `soci convert` (SOCI index v2) -> lazy pull through
#   soci-snapshotter-grpc -> the container runs -> summary of bytes fetched and time,
#   side by side with a normal pull + run through containerd's overlayfs snapshotter.
# Everything (packages, registry, containerd, daemon) is installed/started by the project's own
# scripts under $SOCI_E2E_BASE (default /tmp/soci-e2e) and stopped by PID at the end.
#
#   scripts/demo.sh                  # ~100 MiB image
#   DEMO_SIZE_MB=512 scripts/demo.sh # a bigger image
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${DEMO_SIZE_MB:-96}
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh" # wait_proxy_reachable, ms
die() { echo "demo: $*" >&2; [ -f "${LOG:-/dev/null}" ] && tail -n 20 "$LOG" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || die "run as root (containerd, FUSE and overlayfs need it)"

say "installing system packages (containerd, runc, docker-registry, skopeo, fuse3, ...)"
"$ROOT_DIR/scripts/install-deps.sh" >/dev/null

say "building soci and soci-snapshotter-grpc (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
(cd "$ROOT_DIR" && cargo build --release -q -p soci-cli -p soci-snapshotter --bins)
SOCI=$CARGO_TARGET_DIR/release/soci
DAEMON=$CARGO_TARGET_DIR/release/soci-snapshotter-grpc

say "starting a local registry and containerd (fresh state)"
# A rerun must not find the previous run's images and snapshots in containerd: they would make
# both pulls no-ops. `clean` stops the services and removes the base dir they created.
"$ROOT_DIR/scripts/services.sh" clean >/dev/null 2>&1 || true
"$ROOT_DIR/scripts/services.sh" start >/dev/null
eval "$("$ROOT_DIR/scripts/services.sh" env)"
CTR="ctr -a $CONTAINERD_ADDRESS"
WORK=$SOCI_E2E_BASE/demo
SNAPROOT=$WORK/root
LOG=$WORK/daemon.log
PID=
cleanup() {
  set +e
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1 && kill -KILL "$PID" 2>/dev/null
  grep " $SNAPROOT/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT
rm -rf "$WORK"; mkdir -p "$WORK"

say "building a sample image (${SIZE_MB} MiB of layers; its entrypoint reads one file and prints READY)"
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" v1 --kind large --size-mb "$SIZE_MB" >/dev/null
IMG=$REGISTRY/demo/app
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:v1" "docker://$IMG:v1"
IMAGE_BYTES=$(python3 - "$WORK/layout" <<'PY'
import json, sys, os
lay = sys.argv[1]
idx = json.load(open(os.path.join(lay, "index.json")))
def blob(d): return os.path.join(lay, "blobs", *d["digest"].split(":"))
m = json.load(open(blob(idx["manifests"][0])))
print(sum(l["size"] for l in m["layers"]))
PY
)
echo "pushed $IMG:v1 ($(( IMAGE_BYTES / 1048576 )) MiB of compressed layers)"

say "soci convert: build zTOCs and a SOCI index v2, push $IMG:soci (registry to registry, no containerd)"
t=$(ms)
"$SOCI" convert --standalone --plain-http "$IMG:v1" "$IMG:soci"
T_CONVERT=$(( $(ms) - t ))

say "baseline: normal pull + run with containerd's overlayfs snapshotter"
t=$(ms)
$CTR images pull --plain-http "$IMG:v1" >/dev/null
T_PULL_OVL=$(( $(ms) - t ))
t=$(ms)
out=$($CTR run --rm "$IMG:v1" demo-ovl 2>&1)
T_RUN_OVL=$(( $(ms) - t ))
[[ $out == *READY* ]] || die "overlayfs container did not print READY: $out"
echo "$out"

say "starting soci-snapshotter-grpc"
cat >"$WORK/config.toml" <<TOML
metrics_address = "127.0.0.1:13381"
TOML
setsid "$DAEMON" --address "$SOCI_PROXY_SOCKET" --root "$SNAPROOT" --config "$WORK/config.toml" \
  --log-level debug >"$LOG" 2>&1 </dev/null &
PID=$!
for _ in $(seq 100); do grep -q 'successfully started' "$LOG" && break; sleep 0.1; done
grep -q 'successfully started' "$LOG" || die "daemon did not start"
wait_proxy_reachable || die "containerd cannot reach the proxy snapshotter"

say "lazy pull: soci image rpull $IMG:soci"
NS=demo-lazy-$$
t=$(ms)
"$SOCI" -a "$CONTAINERD_ADDRESS" -n "$NS" image rpull --plain-http "$IMG:soci"
T_PULL_SOCI=$(( $(ms) - t ))
MOUNTS=$(grep -c "^soci $SNAPROOT/" /proc/mounts || true)
echo "lazy layers mounted over FUSE: $MOUNTS"
grep '"msg":"fetching SOCI artifacts using index descriptor"' "$LOG" | head -n1

say "run the container through the soci snapshotter"
t=$(ms)
out=$($CTR -n "$NS" run --rm --snapshotter soci "$IMG:soci" demo-soci 2>&1)
T_RUN_SOCI=$(( $(ms) - t ))
[[ $out == *READY* ]] || die "lazy container did not print READY: $out"
echo "$out"

# Bytes fetched by the lazy layers at the moment the container was ready (the background fetcher
# keeps going afterwards), from each layer's /.soci-snapshotter/<digest>.json progress file.
FETCHED=0; LAZY_SIZE=0
while read -r mnt; do
  for f in "$mnt"/.soci-snapshotter/*.json; do
    [ -f "$f" ] || continue
    read -r fs sz < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["fetchedSize"], d["size"])' "$f")
    FETCHED=$(( FETCHED + fs )); LAZY_SIZE=$(( LAZY_SIZE + sz ))
  done
done < <(grep "^soci $SNAPROOT/" /proc/mounts | awk '{print $2}')
EAGER=$(( IMAGE_BYTES - LAZY_SIZE ))

say "summary"
printf '%-44s %10s\n' "image compressed layers" "$(( IMAGE_BYTES / 1024 )) KiB"
printf '%-44s %10s\n' "soci convert (zTOCs + index, push)" "${T_CONVERT} ms"
printf '%-44s %10s\n' "overlayfs: pull" "${T_PULL_OVL} ms"
printf '%-44s %10s\n' "overlayfs: run to READY" "${T_RUN_OVL} ms"
printf '%-44s %10s\n' "overlayfs: total" "$(( T_PULL_OVL + T_RUN_OVL )) ms"
printf '%-44s %10s\n' "soci: rpull" "${T_PULL_SOCI} ms"
printf '%-44s %10s\n' "soci: run to READY" "${T_RUN_SOCI} ms"
printf '%-44s %10s\n' "soci: total" "$(( T_PULL_SOCI + T_RUN_SOCI )) ms"
printf '%-44s %10s\n' "soci: lazy layers (FUSE mounts)" "$MOUNTS"
printf '%-44s %10s\n' "soci: bytes fetched lazily by READY" "$(( FETCHED / 1024 )) KiB of $(( LAZY_SIZE / 1024 )) KiB"
printf '%-44s %10s\n' "soci: small layers pulled eagerly" "$(( EAGER / 1024 )) KiB"
echo
echo "demo: done (daemon log: $LOG)"
