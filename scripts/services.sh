#!/usr/bin/env bash
# Start/stop the daemons soci-rs's end-to-end tests need, isolated under one
# base directory (no systemd, nothing system-wide):
#   - registry:  Debian's distribution 2.8 `docker-registry` on 127.0.0.1:$REGISTRY_PORT
#                (OCI 1.0: no Referrers API; tests use the tag-schema fallback)
#   - referrers: scripts/referrers-registry.py on 127.0.0.1:$REFERRERS_PORT
#                (OCI 1.1 native Referrers API)
#   - containerd 1.6 with its own root/state/socket, CRI disabled, and a proxy
#                snapshotter `soci` at $SOCI_E2E_BASE/soci.sock (started by the tests)
#
# usage: scripts/services.sh start|stop|status|env|clean
#   start   start whatever is not running yet, wait until ready (idempotent)
#   stop    stop by PID (TERM, then KILL), kill leftover tasks/shims of our
#           containerd, unmount leftover mounts under the base dir
#   status  show each service; exit 0 only if all are up
#   env     print export lines: eval "$(scripts/services.sh env)"
#   clean   stop, then delete the base dir (only if this script created it)
#
# environment: SOCI_E2E_BASE (default /tmp/soci-e2e; keep it short: unix socket
# paths must stay under 107 bytes), REGISTRY_PORT (5000), REFERRERS_PORT (5001),
# SERVICES_TIMEOUT (readiness wait in seconds, 30), STOP_TIMEOUT (10).
# Needs the packages from scripts/install-deps.sh.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${SOCI_E2E_BASE:-/tmp/soci-e2e}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
REFERRERS_PORT=${REFERRERS_PORT:-5001}
SERVICES_TIMEOUT=${SERVICES_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}

CTRD_DIR=$BASE/ctrd
CTRD_SOCK=$CTRD_DIR/containerd.sock
SOCI_SOCK=$BASE/soci.sock
REG_DIR=$BASE/registry
REF_DIR=$BASE/referrers
MARKER=$BASE/.soci-e2e-base

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

case "$BASE" in
    /*) ;;
    *) die "SOCI_E2E_BASE must be an absolute path, got '$BASE'" ;;
esac
BASE=${BASE%/}
[ -n "$BASE" ] || die "SOCI_E2E_BASE must not be /"

# is_ours PIDFILE NAME: the pid in PIDFILE is alive and runs NAME (guards against PID reuse)
is_ours() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# alive PID: running and not a zombie waiting to be reaped by its (new) parent
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

show_log() {
    log "last lines of $1:"
    tail -n 25 "$1" 2>/dev/null | sed 's/^/    /' >&2 || true
}

# wait_ready NAME PIDFILE LOG CHECK...: poll CHECK until it succeeds, the process dies, or timeout
wait_ready() {
    local name=$1 pidfile=$2 logfile=$3 deadline
    shift 3
    deadline=$(( $(date +%s) + SERVICES_TIMEOUT ))
    while ! "$@" >/dev/null 2>&1; do
        if ! alive "$(cat "$pidfile")"; then
            show_log "$logfile"
            die "$name exited during startup (log: $logfile)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            show_log "$logfile"
            kill -TERM "$(cat "$pidfile")" 2>/dev/null || true  # the process we just launched
            rm -f "$pidfile"
            die "$name not ready after ${SERVICES_TIMEOUT}s (log: $logfile)"
        fi
        sleep 0.1
    done
}

port_free() {
    ! curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null
}

# launch PIDFILE LOG CMD...: start CMD detached in its own session, record its PID
launch() {
    local pidfile=$1 logfile=$2
    shift 2
    [ -e "$logfile" ] && mv -f "$logfile" "$logfile.1"  # keep the previous run's log
    setsid "$@" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

registry_ready() { curl -sf --max-time 2 "http://127.0.0.1:$REGISTRY_PORT/v2/"; }
referrers_ready() {
    curl -sf --max-time 2 \
        "http://127.0.0.1:$REFERRERS_PORT/v2/ready/referrers/sha256:$(printf '%064d' 0)"
}
containerd_ready() { [ -S "$CTRD_SOCK" ] && ctr --address "$CTRD_SOCK" --timeout 2s version; }

start_registry() {
    if is_ours "$REG_DIR/pid" docker-registry; then
        log "registry already running (pid $(cat "$REG_DIR/pid"))"
        return
    fi
    port_free "$REGISTRY_PORT" || die "port $REGISTRY_PORT is in use by another process (set REGISTRY_PORT)"
    mkdir -p "$REG_DIR/data"
    # Own config: Debian's /etc/docker/registry/config.yml enables htpasswd auth on :5000.
    cat >"$REG_DIR/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REGISTRY_PORT
YML
    log "starting registry (distribution) on 127.0.0.1:$REGISTRY_PORT"
    launch "$REG_DIR/pid" "$REG_DIR/log" docker-registry serve "$REG_DIR/config.yml"
    wait_ready registry "$REG_DIR/pid" "$REG_DIR/log" registry_ready
}

start_referrers() {
    if is_ours "$REF_DIR/pid" referrers-registry.py; then
        log "referrers registry already running (pid $(cat "$REF_DIR/pid"))"
        return
    fi
    port_free "$REFERRERS_PORT" || die "port $REFERRERS_PORT is in use by another process (set REFERRERS_PORT)"
    mkdir -p "$REF_DIR/data"
    log "starting referrers registry (OCI 1.1) on 127.0.0.1:$REFERRERS_PORT"
    launch "$REF_DIR/pid" "$REF_DIR/log" python3 -u "$SCRIPT_DIR/referrers-registry.py" \
        --addr "127.0.0.1:$REFERRERS_PORT" "$REF_DIR/data"
    wait_ready "referrers registry" "$REF_DIR/pid" "$REF_DIR/log" referrers_ready
}

start_containerd() {
    if is_ours "$CTRD_DIR/pid" containerd; then
        log "containerd already running (pid $(cat "$CTRD_DIR/pid"))"
        return
    fi
    mkdir -p "$CTRD_DIR/root" "$CTRD_DIR/state" "$CTRD_DIR/opt"
    rm -f "$CTRD_SOCK" "$CTRD_SOCK.ttrpc"  # stale sockets from a killed instance
    cat >"$CTRD_DIR/config.toml" <<TOML
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"

[proxy_plugins]
  [proxy_plugins.soci]
    type = "snapshot"
    address = "$SOCI_SOCK"
    # id-mapped rootfs (spec §5.3.7, §6.3); read by containerd >= 1.7, ignored by 1.6
    capabilities = ["multi-remap-ids", "remap-ids"]
TOML
    log "starting containerd (socket $CTRD_SOCK)"
    launch "$CTRD_DIR/pid" "$CTRD_DIR/log" containerd --config "$CTRD_DIR/config.toml"
    wait_ready containerd "$CTRD_DIR/pid" "$CTRD_DIR/log" containerd_ready
}

cmd_start() {
    local b missing=()
    for b in containerd ctr runc docker-registry python3 curl setsid; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    [ "${#missing[@]}" -eq 0 ] || die "missing ${missing[*]}: run scripts/install-deps.sh"
    # unix socket paths (sun_path) are limited to 108 bytes including the NUL
    for s in "$CTRD_SOCK.ttrpc" "$SOCI_SOCK"; do
        [ "${#s}" -lt 107 ] || die "socket path too long (${#s} bytes): $s; use a shorter SOCI_E2E_BASE"
    done
    mkdir -p "$BASE"
    touch "$MARKER"
    local t0
    t0=$(date +%s%N)
    start_registry
    start_referrers
    start_containerd
    log "all services up in $(( ($(date +%s%N) - t0) / 1000000 )) ms; eval \"\$($0 env)\" to use them"
}

# stop_pid PIDFILE NAME: TERM, wait, KILL
stop_pid() {
    local pidfile=$1 name=$2 pid i
    if ! is_ours "$pidfile" "$name"; then
        rm -f "$pidfile"
        return
    fi
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name (pid $pid) did not exit after ${STOP_TIMEOUT}s: KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
}

# Kill tasks and remove containers in every namespace of our containerd, so the
# runc shims exit; then kill any shim still bound to our socket, by PID.
stop_tasks() {
    local ns task ctr_=(ctr --address "$CTRD_SOCK" --timeout 5s) pid cmd args
    if is_ours "$CTRD_DIR/pid" containerd && [ -S "$CTRD_SOCK" ]; then
        for ns in $("${ctr_[@]}" namespaces ls -q 2>/dev/null || true); do
            for task in $("${ctr_[@]}" -n "$ns" tasks ls -q 2>/dev/null || true); do
                log "killing task $ns/$task"
                "${ctr_[@]}" -n "$ns" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
                "${ctr_[@]}" -n "$ns" tasks rm -f "$task" >/dev/null 2>&1 || true
            done
            for task in $("${ctr_[@]}" -n "$ns" containers ls -q 2>/dev/null || true); do
                "${ctr_[@]}" -n "$ns" containers rm "$task" >/dev/null 2>&1 || true
            done
        done
    fi
    for cmd in /proc/[0-9]*/cmdline; do
        pid=${cmd#/proc/}
        pid=${pid%/cmdline}
        { args=$(tr '\0' ' ' <"$cmd"); } 2>/dev/null || continue  # may have exited meanwhile
        if [[ $args == *containerd-shim*" -address $CTRD_SOCK "* ]]; then
            log "killing leftover shim pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

# Unmount everything mounted under BASE, deepest first; lazy unmount as a fallback.
# Only in a base dir this script created: never sweep e.g. all of /tmp.
unmount_all() {
    local m
    [ -e "$MARKER" ] || return 0
    awk -v base="$BASE/" '{ m = $5; gsub(/\\040/, " ", m); if (index(m, base) == 1) print m }' \
        /proc/self/mountinfo | sort -r | while IFS= read -r m; do
        log "unmounting $m"
        umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" \
            || log "warning: could not unmount $m"
    done
}

cmd_stop() {
    stop_tasks
    stop_pid "$CTRD_DIR/pid" containerd
    stop_pid "$REF_DIR/pid" referrers-registry.py
    stop_pid "$REG_DIR/pid" docker-registry
    rm -f "$CTRD_SOCK" "$CTRD_SOCK.ttrpc"
    unmount_all
    log "stopped"
}

cmd_status() {
    local ok=0
    report() {  # NAME PIDFILE PROCNAME CHECK...
        local name=$1 pidfile=$2 proc=$3
        shift 3
        if ! is_ours "$pidfile" "$proc"; then
            printf '%-10s stopped\n' "$name"
            ok=1
        elif "$@" >/dev/null 2>&1; then
            printf '%-10s running (pid %s)\n' "$name" "$(cat "$pidfile")"
        else
            printf '%-10s not ready (pid %s)\n' "$name" "$(cat "$pidfile")"
            ok=1
        fi
    }
    report registry "$REG_DIR/pid" docker-registry registry_ready
    report referrers "$REF_DIR/pid" referrers-registry.py referrers_ready
    report containerd "$CTRD_DIR/pid" containerd containerd_ready
    if [ -S "$SOCI_SOCK" ]; then
        printf '%-10s socket present: %s\n' soci "$SOCI_SOCK"
    else
        printf '%-10s no listener socket: %s\n' soci "$SOCI_SOCK"
    fi
    return "$ok"
}

cmd_env() {
    printf 'export SOCI_E2E_BASE=%q\n' "$BASE"
    printf 'export CONTAINERD_ADDRESS=%q\n' "$CTRD_SOCK"
    printf 'export SOCI_PROXY_SOCKET=%q\n' "$SOCI_SOCK"
    printf 'export REGISTRY=%q\n' "127.0.0.1:$REGISTRY_PORT"
    printf 'export REFERRERS_REGISTRY=%q\n' "127.0.0.1:$REFERRERS_PORT"
}

cmd_clean() {
    cmd_stop
    if [ -d "$BASE" ]; then
        [ -e "$MARKER" ] || die "$BASE was not created by this script (no $MARKER); not deleting it"
        if grep -q " $BASE/" /proc/self/mountinfo; then
            die "mounts remain under $BASE; not deleting it"
        fi
        log "removing $BASE"
        rm -rf --one-file-system "$BASE"
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    clean) cmd_clean ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
