#!/usr/bin/env bash
# Peak RSS of registry -> registry `soci convert --standalone` for an image with one big layer
# (default 320 MiB tar, ~210 MiB gzip): layers are downloaded to disk and uploaded from disk in
# streams, so the peak should not grow with the layer size.
#
# The source is pushed to the distribution registry and the result to the Referrers API registry
# of scripts/services.sh (they must be running), so the layer is really uploaded (within one
# registry it would be mounted).
#
# usage: scripts/bench-convert-rss.sh [SOCI_BINARY]   (default: a release build of soci-cli)
# env:   REGISTRY_PORT (5000), REFERRERS_PORT (5001), SIZE_MB (320),
#        BENCH_DIR (default /tmp/soci-bench-rss; the image is kept for reruns), CARGO_TARGET_DIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MB=${SIZE_MB:-320}
DIR=${BENCH_DIR:-/tmp/soci-bench-rss}
IMG=$DIR/image-$SIZE_MB
SRC=127.0.0.1:${REGISTRY_PORT:-5000}/soci-bench/rss-$SIZE_MB:src
DST=127.0.0.1:${REFERRERS_PORT:-5001}/soci-bench/rss-$SIZE_MB:soci
mkdir -p "$DIR"

SOCI=${1:-}
if [ -z "$SOCI" ]; then
    cargo build --release -q -p soci-cli --manifest-path "$ROOT/Cargo.toml"
    SOCI=${CARGO_TARGET_DIR:-$ROOT/target}/release/soci
fi
[ -x /usr/bin/time ] || { echo "bench-convert-rss: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

if [ ! -f "$IMG/index.json" ]; then
    echo "building a ${SIZE_MB} MiB single-big-layer test image in $IMG ..." >&2
    python3 "$ROOT/scripts/make-test-image.py" "$IMG" rss --kind large --synthetic \
        --size-mb "$SIZE_MB" --big-layers 1 >/dev/null
fi
python3 "$ROOT/scripts/push-layout.py" "$IMG:rss" "$SRC" >/dev/null

largest=$(du -b "$IMG"/blobs/sha256/* | sort -n | tail -1 | cut -f1)
/usr/bin/time -v "$SOCI" convert --standalone --plain-http --min-layer-size 0 -q "$SRC" "$DST" \
    >"$DIR/convert.out" 2>"$DIR/time.txt"
rss_kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$DIR/time.txt")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$DIR/time.txt")
printf 'largest layer: %.1f MiB gzip\n' "$(echo "$largest / 1048576" | bc -l)"
printf 'convert %s -> %s: peak RSS %.1f MiB, wall %s, digest %s\n' "$SRC" "$DST" \
    "$(echo "$rss_kb / 1024" | bc -l)" "$wall" "$(tail -1 "$DIR/convert.out")"
