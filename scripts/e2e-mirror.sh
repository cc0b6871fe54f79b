#!/usr/bin/env bash
# End-to-end test of `[resolver]` registry mirrors and insecure (plain-HTTP) non-loopback registries
# in soci-snapshotter-grpc (SOCI-SPEC.md §5.12, §5.16; §8 TestMirror), against containerd 1.6,
# distribution 2.8 and FUSE. Needs root, /dev/fuse, iproute2 and the packages of
# scripts/install-deps.sh; prints `SKIPPED: <reason>` (exit 0) when a prerequisite is missing.
#
# Scenarios (each asserts real behaviour, through the registries' access logs: every daemon request
# carries `User-Agent: soci-snapshotter/<version>`):
#   1 mirror    a second distribution instance on 127.0.0.1:$MIRROR_PORT holds a copy of the image;
#               the daemon has `[resolver.host."$REGISTRY"]` with an invalid bare `host:port` mirror
#               (skipped with a warning) and the mirror as a URL. rpull + run from the primary
#               reference: the index, zTOCs and every range GET of the daemon go to the mirror, none
#               to the primary.
#   2 failover  the mirror is stopped: a read in the running container fails on the mirror, the
#               layer's fetcher resolves its hosts again and the data comes from the primary
#               ("layer read failed; resolving the hosts again"); a new container's Prepare checks
#               the other lazy layers (`check_always`), they switch to the primary too ("layer blob
#               host check failed") and the new container reads them from the primary.
#   3 back      the mirror is back and the primary is stopped: the next read moves back to the mirror.
#   4 insecure  a registry on the non-loopback address 10.231.0.1 (added to `lo` for the test,
#               removed at exit), plain HTTP. Without configuration the daemon uses https, fails
#               ("unable to fetch SOCI artifacts", the https URL in the log) and defers the image to
#               containerd: 0 FUSE mounts, the container runs. With
#               `[[resolver.host."10.231.0.1:P".mirrors]] host = "http://10.231.0.1:P", insecure = true`
#               the image is mounted lazily over plain HTTP and the container reads its files.
#
# Environment: SOCI_E2E_BASE, REGISTRY_PORT, REFERRERS_PORT (scripts/services.sh), MIRROR_PORT
# (REGISTRY_PORT + 2), INSECURE_PORT (REGISTRY_PORT + 3), INSECURE_ADDR (10.231.0.1),
# CARGO_TARGET_DIR.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/e2e-common.sh
. "$ROOT_DIR/scripts/lib/e2e-common.sh"

e2e_prereqs containerd ctr runc docker-registry skopeo python3 curl timeout ip
e2e_build
T0=$(date +%s)

e2e_services
WORK=$SOCI_E2E_BASE/snap-e2e-mirror
SNAPROOT=$WORK/root
LOG=$WORK/daemon.log
PID=
NS=e2mir$$-m
REG_PORT=${REGISTRY#*:}
MIRROR_PORT=${MIRROR_PORT:-$((REG_PORT + 2))}
INSECURE_PORT=${INSECURE_PORT:-$((REG_PORT + 3))}
INSECURE_ADDR=${INSECURE_ADDR:-10.231.0.1}
MIRROR=127.0.0.1:$MIRROR_PORT
INSECURE=$INSECURE_ADDR:$INSECURE_PORT
PRIMARY_LOG=$SOCI_E2E_BASE/registry/log
added_addr=0

registry_up() { curl -sf --max-time 2 "http://$REGISTRY/v2/" >/dev/null; }
registry_start() { "$ROOT_DIR/scripts/services.sh" start >/dev/null 2>&1 || fail "registry restart"; }

# A distribution 2.8 instance with its own config, data dir, log and pid file under $WORK/NAME.
reg_start() { # NAME ADDR
  local dir=$WORK/$1
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $2
YML
  setsid docker-registry serve "$dir/config.yml" >>"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    curl -sf --max-time 1 "http://$2/v2/" >/dev/null && return 0
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 5 "$dir/log" >&2
  fail "registry $1 did not start on $2"
}
reg_stop() { # NAME
  local p
  p=$(cat "$WORK/$1/pid" 2>/dev/null) || return 0
  kill -TERM "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  rm -f "$WORK/$1/pid"
}

cleanup() {
  set +e
  registry_up || registry_start
  purge_namespaces e2mir
  [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
  reg_stop mirror
  reg_stop insecure
  [ "$added_addr" = 1 ] && ip addr del "$INSECURE_ADDR/32" dev lo 2>/dev/null
  grep " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  [ "$started_services" = 1 ] && "$ROOT_DIR/scripts/services.sh" stop >/dev/null 2>&1
}
trap cleanup EXIT

# Log lines written since the last `mark`, for the daemon and the three registries.
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
mark() {
  M_DAEMON=$(lines "$LOG.cur"); M_PRIMARY=$(lines "$PRIMARY_LOG")
  M_MIRROR=$(lines "$WORK/mirror/log"); M_INSECURE=$(lines "$WORK/insecure/log")
}
since() { tail -n +"$((M_DAEMON + 1))" "$LOG.cur"; }
# Requests of the daemon (User-Agent soci-snapshotter/...) in a registry log since the mark;
# `ranges` counts only its 206 answers to blob GETs (lazy range reads and host probes).
daemon_reqs() { # LOG MARK
  tail -n +"$(($2 + 1))" "$1" 2>/dev/null | grep -c '"soci-snapshotter/' || true
}
daemon_ranges() { # LOG MARK
  tail -n +"$(($2 + 1))" "$1" 2>/dev/null | grep '"soci-snapshotter/' | grep '"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]* HTTP/1.1" 206 ' -c || true
}
rpull() { # NS REF
  "$SOCI" -a "$CONTAINERD_ADDRESS" -n "$1" image rpull --plain-http "$2" >"$WORK/rpull-$1.out" 2>&1 \
    || { cat "$WORK/rpull-$1.out"; fail "rpull $2"; }
}
# Reads FILE... in the running container C (checked against the image's sha256 list).
exec_read() { # NS C ID FILE...
  local ns=$1 c=$2 id=$3 out
  shift 3
  out=$(timeout 120 $CTR -n "$ns" tasks exec --exec-id "$id" "$c" soci-test-entrypoint "$@" 2>&1) \
    || fail "read $* in $c: $out"
  [ "$out" = READY ] || fail "read $* in $c: $out"
}
write_config() { # RESOLVER-TOML
  cat >"$WORK/config.toml" <<TOML
[http]
DialTimeoutMsec = 1000
ResponseHeaderTimeoutMsec = 2000
MaxRetries = 1
MinWaitMsec = 50
MaxWaitMsec = 100
[blob]
check_always = true
fetching_timeout_sec = 5
max_retries = 1
min_wait_msec = 50
max_wait_msec = 100
[background_fetch]
disable = true
[pull_modes.soci_v2]
enable = true
$1
TOML
}

unmount_under "$WORK"
rm -rf "$WORK"; mkdir -p "$WORK"

# ------------------------------------------------------------------ images
t=$(ms)
REPO=e2e-mirror/app-$$
python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" a --kind large --size-mb 24 --synthetic --seed 5 \
  >/dev/null 2>&1 || fail "make image a"
for s in 21 22; do
  python3 "$ROOT_DIR/scripts/make-test-image.py" "$WORK/layout" "s$s" --kind small --seed "$s" >/dev/null 2>&1 || fail "make s$s"
done
skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:a" "docker://$REGISTRY/$REPO:a" || fail "push a"
"$SOCI" convert --standalone --plain-http "$REGISTRY/$REPO:a" "$REGISTRY/$REPO:a-soci" >"$WORK/convert.out" 2>&1 \
  || { cat "$WORK/convert.out"; fail "soci convert"; }
reg_start mirror "$MIRROR"
# The mirror gets a copy of the converted image: the image manifest, the SOCI index manifest and
# every blob keep their digests (skopeo rewrites only the top-level image index).
skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false \
  "docker://$REGISTRY/$REPO:a-soci" "docker://$MIRROR/$REPO:a-soci" || fail "copy to the mirror"
echo "images built, pushed, converted and mirrored in $(( $(ms) - t )) ms"

# ------------------------------------------------------------------ 1 mirror serves the lazy pull
write_config "[[resolver.host.\"$REGISTRY\".mirrors]]
host = \"127.0.0.1:$((REG_PORT + 9))\"
[[resolver.host.\"$REGISTRY\".mirrors]]
host = \"http://$MIRROR\""
start_daemon
purge_namespaces e2mir
t=$(ms)
mark
rpull "$NS" "$REGISTRY/$REPO:a-soci"
n_fuse=$(fuse_mounts)
[ "$n_fuse" = 3 ] || fail "mirror: expected 3 FUSE mounts, got $n_fuse"
since | grep '"msg":"skipping mirror"' | grep "127.0.0.1:$((REG_PORT + 9))" | grep -q 'invalid host' \
  || fail "mirror: the bare host:port mirror was not skipped as an invalid host"
$CTR -n "$NS" run -d --snapshotter soci "$REGISTRY/$REPO:a-soci" "c$$-1" sleep 600 >/dev/null || fail "mirror: run -d"
exec_read "$NS" "c$$-1" r1 /data/big1/ready.bin
m_mirror=$(daemon_ranges "$WORK/mirror/log" "$M_MIRROR")
m_primary_all=$(daemon_reqs "$PRIMARY_LOG" "$M_PRIMARY")
[ "$m_mirror" -ge 4 ] || fail "mirror: $m_mirror daemon range GETs on the mirror (want >= 4: 3 probes + a span)"
[ "$m_primary_all" = 0 ] || fail "mirror: the daemon sent $m_primary_all requests to the primary registry"
tail -n +"$((M_MIRROR + 1))" "$WORK/mirror/log" | grep '"soci-snapshotter/' | grep -q '"GET /v2/[^ ]*/manifests/sha256:' \
  || fail "mirror: the SOCI index was not fetched from the mirror"
pass "mirror: index, zTOCs and $m_mirror range GETs from the mirror, 0 daemon requests to the primary; bare host:port mirror skipped ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 2 mirror down: reads move to the primary
t=$(ms)
reg_stop mirror
mark
# Read path: layer 1's fetcher is on the mirror; the read fails there after retries and is served
# by the primary.
exec_read "$NS" "c$$-1" r2 /data/big1/filler-000.bin
since | grep '"msg":"layer read failed; resolving the hosts again"' >/dev/null || fail "failover: no re-resolve after the read failure"
since | grep '"msg":"switched layer blob host"' | grep -q "\"to\":\"http://$REGISTRY/v2\"" || fail "failover: no switch to the primary"
p_read=$(daemon_ranges "$PRIMARY_LOG" "$M_PRIMARY")
[ "$p_read" -ge 2 ] || fail "failover: $p_read range GETs on the primary after the mirror went down"
# Check path: a new container's Prepare checks layers 2 and 3 (still on the mirror, check_always).
mark
out=$($CTR -n "$NS" run --rm --snapshotter soci "$REGISTRY/$REPO:a-soci" "c$$-2" \
  soci-test-entrypoint /data/big2/ready.bin /data/big3/ready.bin 2>&1) || fail "failover: new container: $out"
[ "$out" = READY ] || fail "failover: new container: $out"
n_checked=$(since | grep -c '"msg":"layer blob host check failed; resolving the hosts again"' || true)
[ "$n_checked" -ge 2 ] || fail "failover: $n_checked failed host checks (want >= 2: layers 2 and 3)"
p_new=$(daemon_ranges "$PRIMARY_LOG" "$M_PRIMARY")
[ "$p_new" -ge 4 ] || fail "failover: $p_new range GETs on the primary for the new container (want >= 4)"
pass "mirror down: read failure re-resolved to the primary ($p_read GETs), new container's Prepare checks switched $n_checked layers, $p_new GETs from the primary ($(( $(ms) - t )) ms)"

# ------------------------------------------------------------------ 3 mirror back, primary down: back to the mirror
t=$(ms)
reg_start mirror "$MIRROR"
kill -TERM "$(cat "$SOCI_E2E_BASE/registry/pid")"
for _ in $(seq 50); do registry_up || break; sleep 0.1; done
registry_up && fail "back: primary registry still up"
mark
exec_read "$NS" "c$$-1" r3 /data/big2/filler-000.bin
since | grep '"msg":"switched layer blob host"' | grep -q "\"to\":\"http://$MIRROR/v2\"" || fail "back: no switch to the mirror"
m_back=$(daemon_ranges "$WORK/mirror/log" "$M_MIRROR")
[ "$m_back" -ge 2 ] || fail "back: $m_back range GETs on the mirror"
registry_start
registry_up || fail "back: primary registry not restarted"
$CTR -n "$NS" tasks kill -s SIGKILL "c$$-1" >/dev/null 2>&1; sleep 0.3
$CTR -n "$NS" tasks rm -f "c$$-1" >/dev/null 2>&1 || true
$CTR -n "$NS" containers rm "c$$-1" >/dev/null 2>&1 || true
pass "primary down, mirror back: the read moved back to the mirror ($m_back GETs) ($(( $(ms) - t )) ms)"
# Remove the image while the daemon runs (unmounts its lazy layers), so the next daemon restores
# nothing.
purge_namespaces e2mir
sleep 1
[ "$(fuse_mounts)" = 0 ] || fail "back: image removal left $(fuse_mounts) FUSE mounts"
stop_daemon INT

# ------------------------------------------------------------------ 4 insecure non-loopback registry
t=$(ms)
if ! ip -o addr show dev lo | grep -q " $INSECURE_ADDR/"; then
  ip addr add "$INSECURE_ADDR/32" dev lo || fail "insecure: ip addr add $INSECURE_ADDR"
  added_addr=1
fi
reg_start insecure "$INSECURE"
for s in 21 22; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:s$s" "docker://$INSECURE/$REPO:s$s" || fail "push s$s"
  "$SOCI" convert --standalone --plain-http --min-layer-size 0 --span-size 65536 \
    "$INSECURE/$REPO:s$s" "$INSECURE/$REPO:s$s-soci" >"$WORK/convert-s$s.out" 2>&1 \
    || { cat "$WORK/convert-s$s.out"; fail "soci convert s$s"; }
done
# Without configuration: https to a plain-HTTP registry fails; the image is deferred.
write_config ""
start_daemon
mark
rpull "e2mir$$-plain" "$INSECURE/$REPO:s21-soci"
since | grep 'unable to fetch SOCI artifacts' | grep -q "https://$INSECURE/v2/" \
  || fail "insecure: no 'unable to fetch SOCI artifacts' error with the https URL"
since | grep '"defer-snapshot-runtime":"true"' >/dev/null || fail "insecure: layer not deferred without configuration"
[ "$(fuse_mounts)" = 0 ] || fail "insecure: FUSE mount without configuration"
[ "$(daemon_reqs "$WORK/insecure/log" "$M_INSECURE")" = 0 ] || fail "insecure: plain-HTTP requests without configuration"
out=$($CTR -n "e2mir$$-plain" run --rm --snapshotter soci "$INSECURE/$REPO:s21-soci" "c$$-3" 2>&1) || fail "insecure: deferred run: $out"
[[ $out == *READY* ]] || fail "insecure: deferred run output: $out"
stop_daemon INT
# With `insecure = true` on a mirror naming the registry itself: lazy pull over plain HTTP.
write_config "[[resolver.host.\"$INSECURE\".mirrors]]
host = \"http://$INSECURE\"
insecure = true"
start_daemon
mark
rpull "e2mir$$-insec" "$INSECURE/$REPO:s22-soci"
[ "$(fuse_mounts)" = 1 ] || fail "insecure: expected 1 FUSE mount, got $(fuse_mounts)"
since | grep '"remote-snapshot-prepared":"true"' >/dev/null || fail "insecure: no remote snapshot"
since | grep -q "https://$INSECURE" && fail "insecure: the daemon still used https"
out=$($CTR -n "e2mir$$-insec" run --rm --snapshotter soci "$INSECURE/$REPO:s22-soci" "c$$-4" soci-test-entrypoint --all 2>&1) \
  || fail "insecure: lazy run: $out"
[[ $out == *READY* ]] || fail "insecure: lazy run output: $out"
n_plain=$(daemon_ranges "$WORK/insecure/log" "$M_INSECURE")
[ "$n_plain" -ge 2 ] || fail "insecure: $n_plain plain-HTTP range GETs"
pass "insecure non-loopback registry $INSECURE: without config https fails and the image is deferred; with insecure = true 1 FUSE mount and $n_plain plain-HTTP range GETs, run --all ok ($(( $(ms) - t )) ms)"
purge_namespaces e2mir
stop_daemon INT
[ "$(fuse_mounts)" = 0 ] || fail "SIGINT left $(fuse_mounts) FUSE mounts"

echo "e2e-mirror: all scenarios passed in $(( $(date +%s) - T0 )) s"
