#!/usr/bin/env bash
# Id-mapped rootfs end to end (SOCI-SPEC.md §5.3.7, §8 TestRunWithIdMap): soci-snapshotter-grpc +
# `soci image rpull` against containerd 1.6, distribution 2.8 and FUSE.
# Needs root, /dev/fuse and the packages of scripts/install-deps.sh; prints `SKIPPED: <reason>`
# (exit 0) when a prerequisite is missing.
#
# containerd 1.6's `ctr run --uidmap C:H:N --gidmap C:H:N --remap-labels` runs the container in a
# user namespace and passes the mapping to the snapshotter as the labels
# containerd.io/snapshot/{uid,gid}mapping = "C:H:N" on the rootfs Prepare.
#
# For three images, each pulled with `soci image rpull`:
#   fuse    the small image converted with a zTOC for its only layer (all layers lazy)
#   mixed   a 4-layer image: 3 big layers lazy + the small top layer a local snapshot
#   noindex the small image without SOCI index (every layer deferred to containerd)
# scenarios:
#   1 userns  `ctr run --uidmap 0:12345:65536 --gidmap 0:12345:65536 --remap-labels`: inside the
#             container `/` is 0:0 and /data/owned-by-1000 is 1000:1000, and the whole rootfs
#             listing (paths, modes, owners, sizes, mtimes, link targets, sha256 of every file)
#             equals a run without mapping; on the host there is one
#             snapshots/<parentId>_<activeId>/fs view per layer, lazy layers' views are FUSE
#             mounts, owners are 12345 / 13345; removing the container removes every view
#   2 multi   two ranges (0:12345:1000 + 1000:22222:64536; JSON LinuxIDMapping list for uids,
#             comma list for gids) through `--snapshotter-label`, no user namespace: the
#             container sees the host owners 12345 and 22222
#   3 restart (mixed) daemon restarted (SIGTERM) under a running id-mapped container: the views
#             of lazy layers are mounted again with mapped owners; a new id-mapped container
#             starts; removal cleans up
#
# Environment: SOCI_E2E_BASE, REGISTRY_PORT, REFERRERS_PORT (scripts/services.sh; e.g.
# SOCI_E2E_BASE=/tmp/soci-e2e3 REGISTRY_PORT=5210 REFERRERS_PORT=5211 to stay away from other
# runs), CARGO_TARGET_DIR.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh"

e2e_prereqs containerd ctr runc docker-registry skopeo python3 curl
e2e_build
T0=$(date +%s)

e2e_services
WORK=$SOCI_E2E_BASE/snap-e2e-idmap
SNAPROOT=$WORK/root
LOG=$WORK/daemon.log
SNAPS=$SNAPROOT/snapshotter/snapshots
PID=
NS=e2i$$

cleanup() {
  set +e
  purge_namespaces e2i
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  unmount_under "$WORK"
  [ "$started_services" = 1 ] && "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT

unmount_under "$WORK"
rm -rf "$WORK"; mkdir -p "$WORK"
cat >"$WORK/config.toml" <<TOML
[pull_modes.soci_v2]
enable = true
TOML

rpull() { # NS REF
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$1" image rpull --plain-http "$2" >"$WORK/rpull-$1.out" 2>&1 \
    || { cat "$WORK/rpull-$1.out"; fail "rpull $2"; }
}
views() { find "$SNAPS" -mindepth 1 -maxdepth 1 -name '*_*' -printf '%f\n' | sort; }
view_mounts() { grep -c "^soci $SNAPS/[0-9]*_[0-9]*/fs " /proc/mounts || true; }
stop_ctr() { # NS NAME
  $CTR -n "$1" tasks kill -s SIGKILL "$2" >/dev/null 2>&1 || true
  for _ in $(seq 50); do $CTR -n "$1" tasks ls -q | grep -qx "$2" || break
    $CTR -n "$1" tasks rm -f "$2" >/dev/null 2>&1 || true; sleep 0.1; done
  $CTR -n "$1" containers rm "$2" >/dev/null 2>&1 || fail "containers rm $2"
}
# Waits until the views of removed containers are gone (containerd removes snapshots in the
# background after `containers rm`).
wait_no_views() {
  for _ in $(seq 50); do [ -z "$(views)" ] && return 0; sleep 0.1; done
  fail "views left after container removal: $(views | tr '\n' ' ')"
}

# ------------------------------------------------------------------ images
REPO=e2e/idmap-$$
IMG=$REGISTRY/$REPO
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" small --kind small --seed 31 >/dev/null 2>&1 || fail "make small"
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" large --kind large --size-mb 24 --synthetic --seed 32 >/dev/null 2>&1 || fail "make large"
for tag in small large; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$tag" "docker://$IMG:$tag" || fail "push $tag"
done
"$SOCI" convert --standalone --plain-http --min-layer-size 0 --span-size 65536 "$IMG:small" "$IMG:small-soci" >/dev/null 2>&1 || fail "convert small"
"$SOCI" convert --standalone --plain-http "$IMG:large" "$IMG:large-soci" >/dev/null 2>&1 || fail "convert large"

start_daemon
purge_namespaces e2i

# name  image ref  layers  lazy layers
CASES=("fuse $IMG:small-soci 1 1" "mixed $IMG:large-soci 4 3" "noindex $IMG:small 1 0")

# ------------------------------------------------------------------ 1 user namespace, one range
for c in "${CASES[@]}"; do
  read -r name ref n_layers n_lazy <<<"$c"
  t=$(ms)
  ns=$NS-$name
  rpull "$ns" "$ref"
  [ -z "$(views)" ] || fail "$name: views before any container: $(views)"
  fuse0=$(fuse_mounts)
  $CTR -n "$ns" run --rm --snapshotter soci "$ref" "c$$-$name-p" sh -c "$TREE_CMD" >"$WORK/tree-$name-plain.txt" 2>&1 \
    || { head "$WORK/tree-$name-plain.txt"; fail "$name: plain run"; }
  $CTR -n "$ns" run -d --snapshotter soci --uidmap 0:12345:65536 --gidmap 0:12345:65536 --remap-labels \
    "$ref" "c$$-$name-m" sleep 600 >/dev/null || fail "$name: id-mapped run -d"
  $CTR -n "$ns" tasks exec --exec-id tree "c$$-$name-m" sh -c "$TREE_CMD" >"$WORK/tree-$name-mapped.txt" 2>&1 \
    || { head "$WORK/tree-$name-mapped.txt"; fail "$name: tree listing in the id-mapped container"; }
  grep -qE '^/ [0-9a-f]+ 0:0$' "$WORK/tree-$name-mapped.txt" || fail "$name: / is not 0:0 in the container"
  grep -qE '^/data/owned-by-1000 [0-9a-f]+ 1000:1000 ' "$WORK/tree-$name-mapped.txt" || fail "$name: owned-by-1000 is not 1000:1000 in the container"
  # /proc and /sys show the kernel's mounts, owned by the host's root (65534 in a user namespace).
  diff -u <(grep -vE '^/(proc|sys) ' "$WORK/tree-$name-plain.txt") <(grep -vE '^/(proc|sys) ' "$WORK/tree-$name-mapped.txt") >"$WORK/tree-$name.diff" \
    || { head -n 20 "$WORK/tree-$name.diff"; fail "$name: id-mapped rootfs differs from the plain run"; }
  # Host side: one view per layer, named <parentId>_<activeId>, the lazy ones FUSE mounts.
  mapfile -t vs < <(views)
  [ "${#vs[@]}" = "$n_layers" ] || fail "$name: expected $n_layers views, got ${#vs[@]}: ${vs[*]}"
  active=${vs[0]#*_}
  for v in "${vs[@]}"; do
    [ "${v#*_}" = "$active" ] || fail "$name: view $v is not of active snapshot $active"
    [ "$(stat -c %u:%g "$SNAPS/$v/fs")" = 12345:12345 ] || fail "$name: $v/fs owner $(stat -c %u:%g "$SNAPS/$v/fs")"
    [ "$(stat -c %u:%g "$SNAPS/${v%_*}/fs")" = 0:0 ] || fail "$name: parent ${v%_*}/fs owner changed"
  done
  [ "$(stat -c %u:%g "$SNAPS/$active/fs")" = 12345:12345 ] || fail "$name: upper dir owner $(stat -c %u:%g "$SNAPS/$active/fs")"
  owned=$(find "${vs[@]/#/$SNAPS/}" -path '*/fs/data/owned-by-1000' -printf '%U:%G\n' | sort -u)
  [ "$owned" = 13345:13345 ] || fail "$name: owned-by-1000 on the host: '$owned'"
  [ "$(view_mounts)" = "$n_lazy" ] || fail "$name: expected $n_lazy FUSE views, got $(view_mounts)"
  [ "$(fuse_mounts)" = $((fuse0 + n_lazy)) ] || fail "$name: FUSE mounts $fuse0 -> $(fuse_mounts)"
  lower=$($CTR -n "$ns" snapshots --snapshotter soci mounts /x "c$$-$name-m" | grep -o 'lowerdir=[^, ]*' | cut -d= -f2)
  [ "$(tr ':' '\n' <<<"$lower" | grep -cE "^$SNAPS/[0-9]+_$active/fs\$")" = "$n_layers" ] \
    || fail "$name: overlay lowerdirs are not the views: $lower"
  stop_ctr "$ns" "c$$-$name-m"
  wait_no_views
  [ "$(fuse_mounts)" = "$fuse0" ] || fail "$name: views still mounted after removal"
  pass "$name: id-mapped container sees 0:0 and 1000:1000, rootfs ($(wc -l <"$WORK/tree-$name-mapped.txt") lines) identical to the plain run; $n_layers views ($n_lazy FUSE) owned 12345, owned-by-1000 is 13345 on the host; removed with the container ($(( $(ms) - t )) ms)"
done

# ------------------------------------------------------------------ 2 several ranges (JSON and comma lists)
t=$(ms)
ns=$NS-mixed
UIDMAP='[{"containerID":0,"hostID":12345,"size":1000},{"containerID":1000,"hostID":22222,"size":64536}]'
out=$($CTR -n "$ns" run --rm --snapshotter soci \
  --snapshotter-label "containerd.io/snapshot/uidmapping=$UIDMAP" \
  --snapshotter-label "containerd.io/snapshot/gidmapping=0:12345:1000,1000:22222:64536" \
  "$IMG:large-soci" "c$$-multi" stat -c '%u:%g %n' / /data/owned-by-1000 /usr/share/soci-test/tree1 2>&1) || fail "multi: run: $out"
[ "$out" = "$(printf '12345:12345 /\n22222:22222 /data/owned-by-1000\n12345:12345 /usr/share/soci-test/tree1')" ] \
  || fail "multi: owners seen in the container: $out"
wait_no_views
pass "multi: two ranges (JSON + comma list): host owners 12345 (lazy and local layers) and 22222 ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 3 daemon restart
t=$(ms)
$CTR -n "$ns" run -d --snapshotter soci --uidmap 0:12345:65536 --gidmap 0:12345:65536 --remap-labels \
  "$IMG:large-soci" "c$$-r1" sleep 600 >/dev/null || fail "restart: run -d"
[ "$(view_mounts)" = 3 ] || fail "restart: expected 3 FUSE views, got $(view_mounts)"
stop_daemon TERM
start_daemon
grep -q '"msg":"restored id-mapped rootfs"' "$LOG.cur" || fail "restart: no 'restored id-mapped rootfs'"
[ "$(view_mounts)" = 3 ] || fail "restart: expected 3 FUSE views after restart, got $(view_mounts)"
for v in $(views); do
  [ "$(stat -c %u:%g "$SNAPS/$v/fs")" = 12345:12345 ] || fail "restart: $v/fs owner after restart"
done
[ "$(find "$SNAPS"/*_*/fs/usr/share/soci-test -maxdepth 0 -printf '%U\n' | sort -u)" = 12345 ] || fail "restart: lazy view owners"
out=$($CTR -n "$ns" run --rm --snapshotter soci --uidmap 0:12345:65536 --gidmap 0:12345:65536 --remap-labels \
  "$IMG:large-soci" "c$$-r2" stat -c '%u:%g %n' / /data/owned-by-1000 2>&1) || fail "restart: new id-mapped run: $out"
[ "$out" = "$(printf '0:0 /\n1000:1000 /data/owned-by-1000')" ] || fail "restart: new container sees: $out"
stop_ctr "$ns" "c$$-r1"
wait_no_views
pass "restart: 3 FUSE views re-mounted with mapped owners, a new id-mapped container runs, removal cleans up ($(( $(ms) - t )) ms)"

stop_daemon INT
[ "$(fuse_mounts)" = 0 ] || fail "SIGINT left $(fuse_mounts) FUSE mounts"
echo "e2e-idmap: all scenarios passed in $(( $(date +%s) - T0 )) s"
