#!/usr/bin/env bash
# Install the system packages that soci-rs's end-to-end tests and demos need on a
# Debian 12 (bookworm) machine, as root: containerd + runc, a distribution 2.8
# registry, skopeo, FUSE 3, protoc, flatc, busybox-static and friends, plus Go and Python
# FlatBuffers for the zTOC cross-check (soci-ztoc/tests/go_crosscheck.rs), and systemd for
# systemd-socket-activate (soci-snapshotter/tests/socket_activation.rs).
#
# usage: scripts/install-deps.sh        # skips apt entirely if everything is present
#        FORCE=1 scripts/install-deps.sh  # always run apt-get update + install
#
# Idempotent: safe to run on a machine that already has some or all packages.
# Does not start any daemon (see scripts/services.sh for that).
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PACKAGES=(
    containerd runc docker-registry skopeo
    fuse3 libfuse3-dev pkg-config protobuf-compiler flatbuffers-compiler
    busybox-static curl python3 iproute2 kmod ca-certificates
    golang-go python3-flatbuffers systemd apache2-utils
)
# Binaries that must be found on PATH afterwards (one or more per package).
BINARIES=(
    containerd ctr runc docker-registry skopeo fusermount3 pkg-config protoc flatc
    busybox curl python3 ip modprobe go systemd-socket-activate htpasswd
)

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (apt-get install, modprobe)"
fi

# Python's stdlib under /usr/lib/python3.* is used as layer content by
# scripts/make-test-image.py, so the Debian python3 must be there, not just any
# python3 on PATH (e.g. a pyenv shim).
missing=()
for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
[ -x /usr/bin/python3 ] || missing+=("/usr/bin/python3")
# busybox must be the static one (it is copied into test images that have no
# libc); Debian's dynamic `busybox` package also provides /bin/busybox.
pkg_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
pkg_ok busybox-static || missing+=("busybox-static")
pkg-config --exists fuse3 2>/dev/null || missing+=("fuse3.pc (libfuse3-dev)")
# The zTOC cross-check imports Debian's module with the system interpreter.
/usr/bin/python3 -c 'import flatbuffers' 2>/dev/null || missing+=("python3-flatbuffers")
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=("ca-certificates")

if [ "${#missing[@]}" -eq 0 ] && [ "${FORCE:-0}" != 1 ]; then
    log "all dependencies present, skipping apt (FORCE=1 to reinstall)"
else
    if [ "${#missing[@]}" -gt 0 ]; then
        log "missing: ${missing[*]}"
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script targets Debian 12"
    export DEBIAN_FRONTEND=noninteractive
    start=$(date +%s)
    # retry: a mirror hiccup should not fail a CI run
    retry() {
        local n
        for n in 1 2 3; do
            "$@" && return 0
            log "attempt $n of '$*' failed"
            sleep $((n * 5))
        done
        die "'$*' failed 3 times"
    }
    log "apt-get update"
    retry apt-get -o DPkg::Lock::Timeout=120 update -qq
    log "apt-get install ${PACKAGES[*]}"
    retry apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    log "apt done in $(( $(date +%s) - start ))s"
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || die "'$b' still not on PATH after install"
    done
    /usr/bin/python3 -c 'import flatbuffers' 2>/dev/null ||
        die "python3-flatbuffers still not importable after install"
fi

# Kernel modules: fuse for the snapshotter, overlay for containerd's overlayfs.
# Missing modprobe or built-in modules are fine; report the state either way.
log "modprobe fuse overlay"
modprobe fuse 2>/dev/null || true
modprobe overlay 2>/dev/null || true
[ -c /dev/fuse ] || log "warning: /dev/fuse is missing; FUSE tests will fail"
grep -qw overlay /proc/filesystems || log "warning: overlay filesystem not available"

log "versions:"
{
    printf '  containerd: %s\n' "$(containerd --version 2>/dev/null | awk '{print $3}')"
    printf '  runc:       %s\n' "$(runc --version 2>/dev/null | awk 'NR==1{print $3}')"
    printf '  registry:   %s\n' "$(docker-registry --version 2>/dev/null | awk '{print $3}')"
    printf '  skopeo:     %s\n' "$(skopeo --version 2>/dev/null | awk '{print $3}')"
    printf '  protoc:     %s\n' "$(protoc --version 2>/dev/null | awk '{print $2}')"
    printf '  flatc:      %s\n' "$(flatc --version 2>/dev/null | awk '{print $3}')"
    printf '  fuse3:      %s\n' "$(pkg-config --modversion fuse3 2>/dev/null)"
    printf '  go:         %s\n' "$(go version 2>/dev/null | awk '{print $3}')"
} >&2
