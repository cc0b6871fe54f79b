#!/usr/bin/env bash
# Benchmark `soci convert --standalone` on a multi-layer image of >= 1 GiB (uncompressed):
#   1. with 1 zTOC build thread (--jobs 1)
#   2. with all cores (default)
#   3. plain decompression of all layers: `gzip -dc` one layer at a time, then all in parallel
# and print the ratios (speedup of 2 over 1; 2 over parallel plain decompression).
#
# usage: scripts/bench-convert.sh [SIZE_MB]   (default 1024)
# env:   BIG_LAYERS (number of big layers; default: make-test-image.py's, 7 for 1024 MiB),
#        RUNS (each measurement is the best of RUNS runs, default 3: the shared VM is noisy),
#        BENCH_DIR (default /tmp/soci-bench-convert; the image is kept for reruns),
#        CARGO_TARGET_DIR (where the release build goes)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${1:-1024}
DIR=${BENCH_DIR:-/tmp/soci-bench-convert}
BIG_LAYERS=${BIG_LAYERS:-}
IMG=$DIR/image-$SIZE_MB${BIG_LAYERS:+x$BIG_LAYERS}
mkdir -p "$DIR"

cargo build --release -q -p soci-cli --manifest-path "$ROOT/Cargo.toml"
SOCI=${CARGO_TARGET_DIR:-$ROOT/target}/release/soci

if [ ! -f "$IMG/index.json" ]; then
    echo "building a ${SIZE_MB} MiB test image in $IMG ..." >&2
    python3 "$ROOT/scripts/make-test-image.py" "$IMG" bench --kind large --synthetic --size-mb "$SIZE_MB" \
        ${BIG_LAYERS:+--big-layers "$BIG_LAYERS"} >/dev/null
fi

# The gzip layers of the image (largest first), for the plain decompression baseline.
mapfile -t LAYERS < <(python3 - "$IMG" <<'PY'
import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
for l in sorted(m["layers"], key=lambda l: -l["size"]):
    print(os.path.join(d, "blobs", *l["digest"].split(":")))
PY
)
CORES=$(nproc)
TOTAL=$(du -cb "${LAYERS[@]}" | tail -1 | cut -f1)

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

# Warm the page cache so every run reads from memory.
cat "${LAYERS[@]}" >/dev/null

run_convert() {
    local jobs=$1 out t0
    out=$DIR/out-$jobs
    rm -rf "$out"
    t0=$(now)
    SOCI_BUILD_JOBS=$jobs "$SOCI" convert --standalone --format oci-dir --min-layer-size 0 -q "$IMG" "$out" >/dev/null 2>&1
    elapsed "$t0"
}

plain_seq() { local t0; t0=$(now); for l in "${LAYERS[@]}"; do gzip -dc "$l" >/dev/null; done; elapsed "$t0"; }
plain_par() {
    local t0; t0=$(now)
    printf '%s\n' "${LAYERS[@]}" | xargs -P "$CORES" -I{} sh -c 'gzip -dc "$1" >/dev/null' _ {}
    elapsed "$t0"
}
# Best (smallest) of RUNS timings of "$@".
best() {
    local i t b=
    for ((i = 0; i < ${RUNS:-3}; i++)); do
        t=$("$@")
        if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
    done
    echo "$b"
}

t_plain_seq=$(best plain_seq)
t_plain_par=$(best plain_par)
t_one=$(best run_convert 1)
t_all=$(best run_convert 0)

mib=$(echo "scale=1; $TOTAL / 1048576" | bc)
printf 'image: %s MiB uncompressed (requested), %s MiB of gzip layers (%d layers), %d cores; best of %d runs\n' "$SIZE_MB" "$mib" "${#LAYERS[@]}" "$CORES" "${RUNS:-3}"
printf '%-40s %8.2f s\n' "gzip -dc, layers one after another" "$t_plain_seq"
printf '%-40s %8.2f s\n' "gzip -dc, layers in parallel" "$t_plain_par"
printf '%-40s %8.2f s\n' "soci convert --standalone, 1 job" "$t_one"
printf '%-40s %8.2f s\n' "soci convert --standalone, all cores" "$t_all"
printf 'speedup all cores vs 1 job:            %.2fx (target >= 1.7x with 2 cores)\n' "$(echo "$t_one / $t_all" | bc -l)"
printf 'convert (all cores) / parallel gzip -dc: %.2fx (target <= 1.2x)\n' "$(echo "$t_all / $t_plain_par" | bc -l)"
# Whole layers are the unit of parallelism (gzip inflates serially), so the layer mix caps the
# speedup: schedule the compressed sizes largest-first on $CORES cores and compare to one core.
bound=$(du -b "${LAYERS[@]}" | cut -f1 | python3 -c '
import sys
sizes = sorted((int(l) for l in sys.stdin), reverse=True)
cores = [0] * int(sys.argv[1])
for s in sizes:
    cores[cores.index(min(cores))] += s
print(f"{sum(sizes) / max(cores):.2f}")' "$CORES")
printf 'upper bound for this layer mix on %d cores: %sx (whole layers, largest first)\n' "$CORES" "$bound"
