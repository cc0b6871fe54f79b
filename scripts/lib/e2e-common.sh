# shellcheck shell=bash disable=SC2034
# (SC2034: variables set here are used by the scripts that source this file.)
# Shared by scripts/e2e*.sh and scripts/demo.sh (sourced, not run): prerequisites, build,
# services, and starting/stopping soci-snapshotter-grpc. The sourcing script sets ROOT_DIR, and
# after e2e_services: WORK, SNAPROOT, LOG (the daemon log; the current run goes to $LOG.cur).

skip() { echo "SKIPPED: $*"; exit 0; }
fail() {
  echo "FAIL: $*" >&2
  if [ -s "${LOG:-/nonexistent}.cur" ]; then tail -n 30 "$LOG.cur" >&2
  elif [ -f "${LOG:-/nonexistent}" ]; then tail -n 30 "$LOG" >&2; fi
  exit 1
}
pass() { echo "ok: $*"; }
ms() { date +%s%3N; }

# Skips (exit 0 with SKIPPED) unless root, /dev/fuse and the given binaries are present.
e2e_prereqs() { # BINARY...
  [ "$(id -u)" = 0 ] || skip "needs root"
  [ -e /dev/fuse ] || skip "no /dev/fuse"
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null || skip "missing $b (scripts/install-deps.sh)"
  done
  [ -x /bin/busybox ] || skip "missing /bin/busybox (busybox-static)"
}

# Builds the binaries; sets DAEMON and SOCI.
e2e_build() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
  (cd "$ROOT_DIR" && cargo build ${LOCKED:-} -q -p soci-snapshotter -p soci-cli --bins) || fail "build"
  DAEMON=$CARGO_TARGET_DIR/debug/soci-snapshotter-grpc
  SOCI=$CARGO_TARGET_DIR/debug/soci
}

# Starts scripts/services.sh unless it already runs (then it is left running at the end); sets
# started_services, the services' environment and CTR.
e2e_services() {
  started_services=0
  if ! "$ROOT_DIR/scripts/services.sh" status >/dev/null 2>&1; then
    "$ROOT_DIR/scripts/services.sh" start >/dev/null || fail "services start"
    started_services=1
  fi
  eval "$("$ROOT_DIR/scripts/services.sh" env)"
  CTR="ctr -a $CONTAINERD_ADDRESS"
}

# Starts the daemon with $WORK/config.toml and waits until containerd can reach it; sets PID.
start_daemon() {
  : >"$LOG.cur"
  setsid "$DAEMON" --address "$SOCI_PROXY_SOCKET" --root "$SNAPROOT" --config "$WORK/config.toml" \
    --log-level debug >"$LOG.cur" 2>&1 </dev/null &
  PID=$!
  for _ in $(seq 100); do
    grep -q 'successfully started' "$LOG.cur" && break
    kill -0 "$PID" 2>/dev/null || fail "daemon exited at startup"
    sleep 0.1
  done
  grep -q 'successfully started' "$LOG.cur" || fail "daemon not ready"
  wait_proxy_reachable || fail "containerd cannot reach the proxy snapshotter"
}

# Waits (up to 30 s) until containerd reaches the proxy snapshotter through $CTR: containerd
# may still be in gRPC reconnect backoff towards the socket (it tried it, e.g. on a GC walk,
# before the daemon was up), and calls fail fast with UNAVAILABLE until it reconnects.
wait_proxy_reachable() {
  local i
  for i in $(seq 60); do
    if $CTR -n probe snapshots --snapshotter soci prepare "probe-$$-$i" >/dev/null 2>&1; then
      $CTR -n probe snapshots --snapshotter soci rm "probe-$$-$i" >/dev/null 2>&1 || true
      return 0
    fi
    sleep 0.5
  done
  return 1
}

stop_daemon() { # SIGNAL
  kill "-$1" "$PID"; wait "$PID" 2>/dev/null || true; PID=
  cat "$LOG.cur" >>"$LOG"
}

# Whole-rootfs listing for `sh -c` in a container: every path with type/mode, owner, size (and
# mtime and link target for non-directories: runc creates mount points at run time), then the
# sha256 of every file.
TREE_CMD='cd /; find / -xdev -type d -exec stat -c "%n %f %u:%g" {} + | sort;
find / -xdev ! -type d -exec stat -c "%n %f %u:%g %s %Y %N" {} + | sort;
find / -xdev -type f -exec sha256sum {} + | sort -k2'

fuse_mounts() { grep -c "^soci $SNAPROOT/snapshotter/snapshots/" /proc/mounts || true; }

# Unmounts whatever an earlier run left under DIR.
unmount_under() { # DIR
  grep " $1/" /proc/mounts 2>/dev/null | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

# Removes what earlier runs left in containerd namespaces named PREFIX<pid>-*: containerd shares
# backend snapshots between namespaces by chain id, so leftovers would keep lazy layers referenced.
purge_namespaces() { # PREFIX
  local n
  for n in $($CTR namespaces ls -q 2>/dev/null | grep -E "^$1[0-9]+-" || true); do
    $CTR -n "$n" tasks ls -q 2>/dev/null | xargs -r -n1 $CTR -n "$n" tasks kill -s SIGKILL >/dev/null 2>&1 || true
    sleep 0.2
    $CTR -n "$n" tasks ls -q 2>/dev/null | xargs -r -n1 $CTR -n "$n" tasks rm -f >/dev/null 2>&1 || true
    $CTR -n "$n" containers ls -q 2>/dev/null | xargs -r $CTR -n "$n" containers rm >/dev/null 2>&1 || true
    $CTR -n "$n" images ls -q 2>/dev/null | xargs -r $CTR -n "$n" images rm --sync >/dev/null 2>&1 || true
    $CTR namespaces rm "$n" >/dev/null 2>&1 || true
  done
}
