#!/usr/bin/env bash
# Runs every soci-ztoc fuzz target for FUZZ_SECS (default 20) seconds with cargo-fuzz
# (libFuzzer + ASan). Only the stable toolchain exists here, so cargo-fuzz runs with
# RUSTC_BOOTSTRAP=1 (it needs -Zsanitizer). If cargo-fuzz cannot be installed or cannot
# build, this says why and runs the same checks over the checked-in corpus plus random
# inputs instead (soci-ztoc/tests/fuzz_corpus.rs), so CI still exercises them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${FUZZ_SECS:-20}
TARGETS=(ztoc_decode checkpoints_decode tar_walk extract)

fallback() {
    echo "fuzz-smoke: $1; running the corpus tests instead" >&2
    cd "$ROOT"
    cargo test -p soci-ztoc --test fuzz_corpus
    exit 0
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz >&2 || fallback "cargo install cargo-fuzz failed"
fi

cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >&2 || fallback "cargo fuzz build failed (sanitizer/toolchain)"
for t in "${TARGETS[@]}"; do
    echo "fuzz-smoke: $t for ${SECS}s" >&2
    # Fuzz a scratch copy so new inputs do not pile up in the checked-in corpus.
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/"
    cargo fuzz run -O "$t" "$work" -- -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=200000 >&2
    rm -rf "$work"
done
# The corpus also runs on stable, as in CI without cargo-fuzz.
cd "$ROOT"
cargo test -p soci-ztoc --test fuzz_corpus
