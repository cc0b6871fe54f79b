#!/usr/bin/env bash
# Lazy pull benchmark (the issue's performance goal): time from pull to the container's ready
# line for a >= 500 MiB image whose entrypoint reads one small file, lazily through
# soci-snapshotter-grpc (`soci image rpull` + `ctr run --snapshotter soci`) against a full pull +
# run through containerd's overlayfs snapshotter (`ctr images pull` + `ctr run`), both from the
# same registry over a shaped link.
#
# Goals: soci time <= 25% of the overlayfs time; bytes the daemon fetched <= 1.25 x (compressed
# bytes of the spans holding the files read + zTOCs + SOCI index). Also reported: bytes on the
# wire, daemon peak RSS (VmHWM).
#
# Setup (all under $BASE, removed at exit unless KEEP=1; processes stopped by PID):
#   - network namespace `sociregns`, veth soci-bh 10.77.0.1 (host) <-> soci-bn 10.77.0.2 (ns);
#     the registry (Debian's distribution 2.8, own config/storage) listens on 10.77.0.2:5000 in
#     the ns; scripts/delay-proxy.py relays 127.0.0.1:$REG_PORT (root ns) to it and adds $DELAY_MS
#     each way. (The loopback address is needed because the daemon talks plain HTTP only to
#     loopback registries; `[resolver]` insecure mirrors are not implemented yet.)
#     `tc qdisc tbf rate $RATE` on BOTH veth ends. (sch_netem, which would do both in the kernel,
#     is used instead when the kernel has it: `netem delay $DELAY_MS rate $RATE`, the relay then
#     adds no delay.)
#     The shaping is switched on after the image is pushed and converted.
#   - containerd 1.6 with its own root/state/socket and the proxy snapshotter `soci`;
#   - per soci run a fresh daemon root; per run a fresh containerd namespace, and
#     `images rm --sync` + `content rm` afterwards so every pull starts from nothing.
#
# Scenarios (RUNS each): ovl = overlayfs pull + run; soci = default config (background fetch
# on, paused 30 s after the first mount); soci-nobg = `[background_fetch] disable = true`;
# par = parallel pull/unpack (`[pull_modes.parallel_pull_unpack] enable = true`, containerd
# content store, default limits: whole-layer GETs, 3 downloads and 1 unpack per image); par-chunk
# = the same with 8 MiB ranged GETs, 6 downloads and 2 unpacks per image. (par* are not lazy:
# every layer is downloaded and unpacked before the run.)
#
# usage: scripts/bench-pull.sh
# env:   RUNS (3), SIZE_MB (512: uncompressed size of the big layers), RATE (200mbit),
#        DELAY_MS (5, one way), REG_PORT (15090), SOCI_BENCH_BASE (/tmp/soci-pullb), KEEP=1 (keep the base dir;
#        the image layout there is reused by the next run), SKIP_BUILD=1, LOG_LEVEL (info),
#        METRICS_PORT (13390), CARGO_TARGET_DIR (/tmp/target-bench), RESULTS (also write the
#        result table to this file), SCENARIOS ("ovl soci soci-nobg"; also par, par-chunk).
# Needs root, /dev/fuse, ip/tc (iproute2), containerd/ctr/runc, docker-registry, skopeo, curl.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${SOCI_BENCH_BASE:-/tmp/soci-pullb}
BASE=${BASE%/}
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-512}
RATE=${RATE:-200mbit}
DELAY_MS=${DELAY_MS:-5}
LOG_LEVEL=${LOG_LEVEL:-info}
METRICS_PORT=${METRICS_PORT:-13390}
SCENARIOS=${SCENARIOS:-ovl soci soci-nobg}
NETNS=sociregns
VH=soci-bh VN=soci-bn HOST_IP=10.77.0.1 NS_IP=10.77.0.2
REG_PORT=${REG_PORT:-15090}
REG=127.0.0.1:$REG_PORT  # the relay in front of the registry (see above)
REPO=bench/large
IMG=$REG/$REPO:v1
IMG_SOCI=$REG/$REPO:soci
READ_FILE=data/big2/ready.bin  # what the large image's entrypoint reads (testdata/README.md)

log() { printf 'bench-pull: %s\n' "$*" >&2; }
die() { printf 'bench-pull: error: %s\n' "$*" >&2; exit 1; }
ms() { date +%s%3N; }

[ "$(id -u)" = 0 ] || die "needs root"
[ -e /dev/fuse ] || die "needs /dev/fuse"
for b in ip tc containerd ctr runc docker-registry skopeo curl python3 setsid; do
    command -v "$b" >/dev/null || die "missing $b (scripts/install-deps.sh)"
done
case "$BASE" in /tmp/?*) ;; *) die "SOCI_BENCH_BASE must be under /tmp" ;; esac
ip netns list | grep -qw "$NETNS" && die "netns $NETNS exists (another run?); ip netns del $NETNS"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-bench}
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building (release)"
    (cd "$ROOT_DIR" && cargo build --release -q -p soci-cli -p soci-snapshotter -p soci-benches --bins) \
        || die "build failed"
fi
BIN=$CARGO_TARGET_DIR/release
DAEMON=$BIN/soci-snapshotter-grpc
SOCI=$BIN/soci
EXTRACT=$BIN/extract-count

CTRD_DIR=$BASE/ctrd
CTRD_SOCK=$CTRD_DIR/containerd.sock
SOCI_SOCK=$BASE/soci.sock
CTR="ctr -a $CTRD_SOCK"
REG_PID= PROXY_PID= CTRD_PID= DPID=

mounts_under() { awk -v b="$1/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r; }

stop_pid() { # PID: TERM, wait 10 s, KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_daemon() {
    local i
    [ -n "$DPID" ] || return 0
    kill -INT "$DPID" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
}

cleanup() {
    set +e
    local ns t cmd pid args
    if [ -n "$CTRD_PID" ]; then
        for ns in $($CTR namespaces ls -q 2>/dev/null); do
            for t in $($CTR -n "$ns" tasks ls -q 2>/dev/null); do
                $CTR -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1
                $CTR -n "$ns" tasks rm -f "$t" >/dev/null 2>&1
            done
        done
    fi
    stop_daemon
    stop_pid "$CTRD_PID"
    for cmd in /proc/[0-9]*/cmdline; do  # runc shims of our containerd, by PID
        pid=${cmd#/proc/}; pid=${pid%/cmdline}
        { args=$(tr '\0' ' ' <"$cmd"); } 2>/dev/null || continue
        [[ $args == *containerd-shim*" -address $CTRD_SOCK "* ]] && kill -KILL "$pid" 2>/dev/null
    done
    stop_pid "$PROXY_PID"
    stop_pid "$REG_PID"
    mounts_under "$BASE" | while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    ip netns del "$NETNS" 2>/dev/null
    ip link del "$VH" 2>/dev/null
    if [ -z "${KEEP:-}" ]; then
        rm -rf --one-file-system "$BASE"
    else
        log "kept $BASE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fresh base; a kept image layout is reused.
mounts_under "$BASE" | while IFS= read -r m; do umount -l "$m"; done
if [ -d "$BASE" ]; then
    find "$BASE" -mindepth 1 -maxdepth 1 ! -name layout -exec rm -rf --one-file-system {} +
fi
mkdir -p "$BASE" "$CTRD_DIR"/{root,state,opt} "$BASE/registry/data" "$BASE/ztocs"

# --- network namespace, registry, delay proxy ------------------------------------------------
ip netns add "$NETNS"
ip link add "$VH" type veth peer name "$VN"
ip link set "$VN" netns "$NETNS"
ip addr add "$HOST_IP/24" dev "$VH"
ip link set "$VH" up
ip netns exec "$NETNS" ip addr add "$NS_IP/24" dev "$VN"
ip netns exec "$NETNS" ip link set "$VN" up
ip netns exec "$NETNS" ip link set lo up
if tc qdisc add dev lo root netem delay 0ms 2>/dev/null; then
    tc qdisc del dev lo root 2>/dev/null || true
    SHAPER=netem
else
    SHAPER=tbf
fi

cat >"$BASE/registry/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $BASE/registry/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $NS_IP:5000
YML
setsid ip netns exec "$NETNS" docker-registry serve "$BASE/registry/config.yml" \
    >"$BASE/registry/log" 2>&1 </dev/null &
REG_PID=$!
setsid python3 -u "$ROOT_DIR/scripts/delay-proxy.py" --listen "$REG" --upstream "$NS_IP:5000" \
    --delay-ms "$( [ "$SHAPER" = tbf ] && echo "$DELAY_MS" || echo 0)" >"$BASE/proxy.log" 2>&1 </dev/null &
PROXY_PID=$!
for _ in $(seq 100); do curl -sf --max-time 1 "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
curl -sf --max-time 2 "http://$REG/v2/" >/dev/null || { cat "$BASE/registry/log" >&2; die "registry not reachable at $REG"; }

# --- containerd -------------------------------------------------------------------------------
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
TOML
setsid containerd --config "$CTRD_DIR/config.toml" >"$CTRD_DIR/log" 2>&1 </dev/null &
CTRD_PID=$!
for _ in $(seq 100); do $CTR --timeout 1s version >/dev/null 2>&1 && break; sleep 0.1; done
$CTR --timeout 2s version >/dev/null || { tail "$CTRD_DIR/log" >&2; die "containerd not ready"; }

# --- image: build (or reuse), push, convert ---------------------------------------------------
IMAGE_JSON=$BASE/layout/image.json
if [ ! -s "$IMAGE_JSON" ]; then
    log "building the test image (--kind large --size-mb $SIZE_MB, about 40 s)"
    rm -rf "$BASE/layout"
    python3 "$ROOT_DIR/scripts/make-test-image.py" "$BASE/layout" v1 --kind large --size-mb "$SIZE_MB" \
        --json >"$BASE/image.json.tmp"
    mv "$BASE/image.json.tmp" "$IMAGE_JSON"
fi
read -r N_LAYERS COMP_BYTES UNCOMP_BYTES < <(python3 -c '
import json,sys; d=json.load(open(sys.argv[1]))
print(len(d["layers"]), sum(l["size"] for l in d["layers"]), sum(l["uncompressed"] for l in d["layers"]))' "$IMAGE_JSON")
log "image: $N_LAYERS layers, $((COMP_BYTES >> 20)) MiB compressed, $((UNCOMP_BYTES >> 20)) MiB uncompressed"
skopeo copy -q --dest-tls-verify=false "oci:$BASE/layout:v1" "docker://$IMG" || die "push"
t=$(ms)
"$SOCI" convert --standalone --plain-http "$IMG" "$IMG_SOCI" >"$BASE/convert.out" 2>&1 \
    || { cat "$BASE/convert.out" >&2; die "soci convert"; }
log "soci convert: $(( $(ms) - t )) ms"

# SOCI index + zTOCs (sizes, and the files locally for the touched-span computation)
python3 - "$REG" "$REPO" "$BASE/ztocs" >"$BASE/ztocs.txt" <<'PY'
import json, sys, urllib.request
reg, repo, out = sys.argv[1:4]
def get(path, accept):
    r = urllib.request.Request(f"http://{reg}/v2/{repo}/{path}", headers={"Accept": accept})
    return urllib.request.urlopen(r).read()
idx = json.loads(get("manifests/soci", "application/vnd.oci.image.index.v1+json"))
m = [m for m in idx["manifests"]
     if m.get("artifactType") == "application/vnd.amazon.soci.index.v2+json"][0]
raw = get(f"manifests/{m['digest']}", m["mediaType"])
soci = json.loads(raw)
print("index", m["digest"], len(raw), "-")
for l in soci["layers"]:
    layer = l.get("annotations", {}).get("com.amazon.soci.image-layer-digest")
    if not layer:
        continue
    blob = get(f"blobs/{l['digest']}", "*/*")
    open(f"{out}/{l['digest'].split(':')[1]}", "wb").write(blob)
    print("ztoc", l["digest"], len(blob), layer)
PY
INDEX_BYTES=$(awk '$1 == "index" { s += $3 } END { print s + 0 }' "$BASE/ztocs.txt")
ZTOC_BYTES=$(awk '$1 == "ztoc" { s += $3 } END { print s + 0 }' "$BASE/ztocs.txt")
N_ZTOCS=$(grep -c '^ztoc' "$BASE/ztocs.txt")
# Compressed bytes of the spans holding the file the entrypoint reads (through the zTOC).
TOUCHED_BYTES=0
while read -r kind zd _ layer; do
    [ "$kind" = ztoc ] || continue
    zf=$BASE/ztocs/${zd#sha256:}
    "$SOCI" ztoc info --file "$zf" >"$zf.json"
    if grep -q "\"filename\": *\"\(\./\)\?$READ_FILE\"" "$zf.json"; then
        line=$("$EXTRACT" "$zf" "$BASE/layout/blobs/sha256/${layer#sha256:}" "$READ_FILE")
        log "touched: $line"
        b=$(sed -n 's/.* read_bytes=\([0-9]*\).*/\1/p' <<<"$line")
        TOUCHED_BYTES=$((TOUCHED_BYTES + b))
    fi
done <"$BASE/ztocs.txt"
[ "$TOUCHED_BYTES" -gt 0 ] || die "no zTOC holds $READ_FILE"
log "SOCI index $INDEX_BYTES B, $N_ZTOCS zTOCs $ZTOC_BYTES B, spans touched $TOUCHED_BYTES B"

# --- shaping -----------------------------------------------------------------------------------
if [ "$SHAPER" = netem ]; then
    tc qdisc add dev "$VH" root netem delay "${DELAY_MS}ms" rate "$RATE"
    ip netns exec "$NETNS" tc qdisc add dev "$VN" root netem delay "${DELAY_MS}ms" rate "$RATE"
else
    tc qdisc add dev "$VH" root tbf rate "$RATE" burst 64kb latency 50ms
    ip netns exec "$NETNS" tc qdisc add dev "$VN" root tbf rate "$RATE" burst 64kb latency 50ms
fi
BIG_LAYER=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(max(d["layers"], key=lambda l: l["size"])["digest"])' "$IMAGE_JSON")
LINK_TPUT=$(curl -s -o /dev/null -w '%{speed_download}' "http://$REG/v2/$REPO/blobs/$BIG_LAYER")
LINK_MBIT=$(awk -v b="$LINK_TPUT" 'BEGIN { printf "%.1f", b * 8 / 1e6 }')
# Round trip of one HTTP request on an open connection (what a span fetch pays).
LINK_RTT=$(curl -s -w '%{time_total}\n' $(for _ in 1 2 3 4 5 6; do echo "-o /dev/null http://$REG/v2/"; done) \
    | tail -n 5 | awk '{ s += $1 * 1000 } END { printf "%.1f", s / NR }')
PING_RTT=
if command -v ping >/dev/null; then
    PING_RTT=$( { ping -c 5 -i 0.2 -q "$NS_IP" 2>/dev/null || true; } | sed -n 's|.* = [0-9.]*/\([0-9.]*\)/.*|\1|p')
fi
log "link ($SHAPER): $LINK_MBIT Mbit/s measured on a $(( $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(max(l["size"] for l in d["layers"]))' "$IMAGE_JSON") >> 20 )) MiB blob, HTTP RTT $LINK_RTT ms, ping RTT ${PING_RTT:-?} ms"

rx() { cat "/sys/class/net/$VH/statistics/rx_bytes"; }

# run_ready OUT CMD...: runs CMD, appends its output to OUT, writes the time of the READY line
# to OUT.ready
run_ready() {
    local out=$1 line
    shift
    rm -f "$out.ready"
    "$@" 2>&1 | while IFS= read -r line; do
        [[ $line == *READY* && ! -e $out.ready ]] && ms >"$out.ready"
        printf '%s\n' "$line" >>"$out"
    done
    [ -s "$out.ready" ] || { tail "$out" >&2; die "no READY from: $*"; }
}

purge_ns() { # NS
    $CTR -n "$1" images ls -q 2>/dev/null | xargs -r $CTR -n "$1" images rm --sync >/dev/null 2>&1 || true
    $CTR -n "$1" content ls -q 2>/dev/null | xargs -r $CTR -n "$1" content rm >/dev/null 2>&1 || true
    $CTR -n "$1" leases ls -q 2>/dev/null | xargs -r $CTR -n "$1" leases rm --sync >/dev/null 2>&1 || true
    $CTR namespaces rm "$1" >/dev/null 2>&1 || true
}

RESULTS_TSV=$BASE/results.tsv
: >"$RESULTS_TSV"
# columns: scenario run pull_ms run_ms total_ms wire_bytes fetched_bytes lazy_layers hwm_kib rss_kib

bench_ovl() { # RUN
    local i=$1 ns=ovl$1 t0 t1 r0 r1
    sync; echo 3 >/proc/sys/vm/drop_caches
    r0=$(rx); t0=$(ms)
    $CTR -n "$ns" images pull --plain-http "$IMG" >"$BASE/ovl-pull-$i.out" 2>&1 \
        || { tail "$BASE/ovl-pull-$i.out" >&2; die "ctr pull"; }
    t1=$(ms)
    run_ready "$BASE/ovl-run-$i.out" $CTR -n "$ns" run --rm "$IMG" "bench-ovl-$i"
    r1=$(rx)
    local tr; tr=$(cat "$BASE/ovl-run-$i.out.ready")
    printf 'ovl\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$i" $((t1 - t0)) $((tr - t1)) $((tr - t0)) $((r1 - r0)) >>"$RESULTS_TSV"
    log "ovl #$i: pull $((t1 - t0)) ms, run to READY $((tr - t1)) ms, wire $(((r1 - r0) >> 20)) MiB"
    purge_ns "$ns"
}

start_daemon() { # ROOT CONFIG LOG
    setsid "$DAEMON" --address "$SOCI_SOCK" --root "$1" --config "$2" --log-level "$LOG_LEVEL" \
        >"$3" 2>&1 </dev/null &
    DPID=$!
    for _ in $(seq 100); do
        grep -q 'successfully started' "$3" && break
        kill -0 "$DPID" 2>/dev/null || { tail "$3" >&2; die "daemon exited at startup"; }
        sleep 0.1
    done
    local i
    for i in $(seq 60); do  # containerd may still be in reconnect backoff towards the socket
        if $CTR -n probe snapshots --snapshotter soci prepare "probe-$i" >/dev/null 2>&1; then
            $CTR -n probe snapshots --snapshotter soci rm "probe-$i" >/dev/null 2>&1 || true
            purge_ns probe
            return 0
        fi
        sleep 0.5
    done
    die "containerd cannot reach the proxy snapshotter"
}

bench_soci() { # SCENARIO RUN
    local sc=$1 i=$2 ns=${1//-/}$2 root=$BASE/$1-$2 t0 t1 r0 r1 tr
    mkdir -p "$root"
    {
        echo "metrics_address = \"127.0.0.1:$METRICS_PORT\""
        echo "[pull_modes.soci_v2]"
        echo "enable = true"
        if [ "$sc" = soci-nobg ]; then echo "[background_fetch]"; echo "disable = true"; fi
        case $sc in par | par-chunk)
            printf '[content_store]\ntype = "containerd"\ncontainerd_address = "%s"\n' "$CTRD_SOCK"
            echo "[pull_modes.parallel_pull_unpack]"
            echo "enable = true"
            if [ "$sc" = par-chunk ]; then
                echo 'concurrent_download_chunk_size = "8mb"'
                echo "max_concurrent_downloads_per_image = 6"
                echo "max_concurrent_unpacks_per_image = 2"
            fi
        esac
    } >"$root.toml"
    start_daemon "$root" "$root.toml" "$root.log"
    sync; echo 3 >/proc/sys/vm/drop_caches
    r0=$(rx); t0=$(ms)
    "$SOCI" -a "$CTRD_SOCK" -n "$ns" image rpull --plain-http "$IMG_SOCI" >"$root-rpull.out" 2>&1 \
        || { tail "$root-rpull.out" "$root.log" >&2; die "rpull"; }
    t1=$(ms)
    run_ready "$root-run.out" $CTR -n "$ns" run --rm --snapshotter soci "$IMG_SOCI" "bench-$ns"
    r1=$(rx)
    tr=$(cat "$root-run.out.ready")
    # fetch progress of every lazy layer (SPEC §5.11 state files) and the daemon's memory
    local fetched layers hwm rss
    read -r fetched layers < <(cat "$root"/snapshotter/snapshots/*/fs/.soci-snapshotter/*.json 2>/dev/null \
        | python3 -c 'import json,sys
ls=[json.loads(l) for l in sys.stdin if l.strip()]
print(sum(l["fetchedSize"] for l in ls), len(ls))')
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$root-metrics.txt" || true
    hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$DPID/status")
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DPID/status")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sc" "$i" $((t1 - t0)) $((tr - t1)) $((tr - t0)) \
        $((r1 - r0)) "$fetched" "$layers" "$hwm" "$rss" >>"$RESULTS_TSV"
    log "$sc #$i: rpull $((t1 - t0)) ms, run to READY $((tr - t1)) ms, wire $(((r1 - r0) >> 10)) KiB," \
        "lazy layers fetched $((fetched >> 10)) KiB ($layers layers), daemon VmHWM $hwm KiB"
    purge_ns "$ns"
    stop_daemon
    mounts_under "$root" | while IFS= read -r m; do umount -l "$m"; done
}

for i in $(seq "$RUNS"); do
    for sc in $SCENARIOS; do
        case $sc in
            ovl) bench_ovl "$i" ;;
            soci | soci-nobg | par | par-chunk) bench_soci "$sc" "$i" ;;
            *) die "unknown scenario $sc" ;;
        esac
    done
done

# --- report -------------------------------------------------------------------------------------
python3 - "$RESULTS_TSV" "$COMP_BYTES" "$UNCOMP_BYTES" "$N_LAYERS" "$INDEX_BYTES" "$ZTOC_BYTES" \
    "$N_ZTOCS" "$TOUCHED_BYTES" "$LINK_MBIT" "$LINK_RTT" "$RATE" "$DELAY_MS" "$SHAPER" "$READ_FILE" \
    >"$BASE/report.md" <<'PY'
import statistics as st, sys
(tsv, comp, uncomp, nl, idx, zt, nz, touched, mbit, rtt, rate, delay, shaper, rfile) = sys.argv[1:]
comp, uncomp, idx, zt, touched = map(int, (comp, uncomp, idx, zt, touched))
rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
MiB = 1 << 20
def med(sc, col):
    v = [float(r[col]) for r in rows if r[0] == sc and r[col] != "-"]
    return st.median(v) if v else None
def rng(sc, col, scale=1.0, fmt="{:.2f}"):
    v = sorted(float(r[col]) / scale for r in rows if r[0] == sc and r[col] != "-")
    if not v:
        return "-"
    m = fmt.format(st.median(v))
    return m if len(v) == 1 else f"{m} ({fmt.format(v[0])}–{fmt.format(v[-1])})"
scs = [s for s in ("ovl", "soci", "soci-nobg", "par", "par-chunk") if any(r[0] == s for r in rows)]
n = {s: sum(1 for r in rows if r[0] == s) for s in scs}
print(f"Image: {nl} layers, {comp / MiB:.1f} MiB compressed / {uncomp / MiB:.1f} MiB uncompressed; "
      f"the entrypoint reads `/{rfile}` (256 KiB). SOCI index {idx} B, {nz} zTOCs {zt / 1024:.1f} KiB; "
      f"compressed spans holding the file read: {touched / 1024:.1f} KiB.")
print(f"Link ({shaper}): {rate} each way, {delay} ms one-way delay; measured {mbit} Mbit/s on a large "
      f"blob, {rtt} ms HTTP request round trip. Medians (min–max) of the runs.")
print()
print("| scenario | runs | pull / rpull (s) | run to READY (s) | total (s) | bytes on the wire (MiB) "
      "| lazy layers fetched (KiB) | daemon VmHWM (MiB) |")
print("|---|---|---|---|---|---|---|---|")
names = {"ovl": "overlayfs: `ctr images pull` + `ctr run`",
         "soci": "soci, default config: `soci image rpull` + `ctr run --snapshotter soci`",
         "soci-nobg": "soci, `[background_fetch] disable = true`",
         "par": "soci, parallel pull/unpack (`enable = true`, defaults: 3 downloads, 1 unpack)",
         "par-chunk": "soci, parallel pull/unpack, 8 MiB chunks, 6 downloads, 2 unpacks"}
for s in scs:
    print(f"| {names[s]} | {n[s]} | {rng(s, 2, 1000)} | {rng(s, 3, 1000)} | {rng(s, 4, 1000)} "
          f"| {rng(s, 5, MiB, '{:.1f}')} | {rng(s, 6, 1024, '{:.0f}')} | {rng(s, 8, 1024, '{:.1f}')} |")
print()
if "ovl" in scs:
    o = med("ovl", 4)
    for s in scs[1:]:
        r = med(s, 4) / o
        if s.startswith("par"):  # not lazy: no goal, just the comparison
            print(f"* {s}: time {100 * r:.1f}% of overlayfs")
        else:
            print(f"* {s}: time {100 * r:.1f}% of overlayfs (goal <= 25%): {'met' if r <= 0.25 else 'MISSED'}")
for s in [s for s in scs if s.startswith("soci")]:
    f = med(s, 6)
    need = touched + zt + idx
    tot = f + zt + idx
    print(f"* {s}: daemon fetched {tot / 1024:.0f} KiB (lazy layers {f / 1024:.0f} KiB + zTOCs + index) "
          f"= {tot / need:.2f}x the touched spans + zTOCs + index ({need / 1024:.0f} KiB; goal <= 1.25x): "
          f"{'met' if tot <= 1.25 * need else 'MISSED'}")
PY
cat "$BASE/report.md"
[ -n "${RESULTS:-}" ] && cp "$BASE/report.md" "$RESULTS"
[ -n "${RESULTS:-}" ] && cp "$RESULTS_TSV" "$RESULTS.tsv"
exit 0
