#!/usr/bin/env bash
# Smoke test of the end-to-end test infrastructure, independent of soci-rs:
# install deps (skipped when present), unit-test the referrers registry, start
# the services, build the small and large test images, push them to both
# registries (distribution 2.8 and the OCI 1.1 referrers registry), check the
# Referrers API, pull each image with ctr (default overlayfs snapshotter), run
# it and check its output, then stop the services again (only if this script
# started them).
#
# usage: scripts/e2e-smoke.sh
# environment: SOCI_E2E_BASE, REGISTRY_PORT, REFERRERS_PORT (see services.sh);
#   SKIP_INSTALL=1 to not run install-deps.sh; KEEP_SERVICES=1 to leave them running.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NS=soci-smoke                       # containerd namespace used here
T_START=$(date +%s%N)
T_STEP=$T_START
STEP="setup"
STARTED_SERVICES=0

log() { printf 'e2e-smoke: %s\n' "$*" >&2; }
fail() { printf 'e2e-smoke: FAIL: %s\n' "$*" >&2; exit 1; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
step() {
    [ "$STEP" = setup ] || log "  done: $STEP ($(ms_since "$T_STEP") ms)"
    STEP=$1
    T_STEP=$(date +%s%N)
    log "== $STEP"
}

on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        log "FAILED during: $STEP (exit $rc)"
        [ -n "${SOCI_E2E_BASE:-}" ] && log "logs: $SOCI_E2E_BASE/{registry,referrers,ctrd}/log"
    fi
    if [ "$STARTED_SERVICES" = 1 ] && [ "${KEEP_SERVICES:-0}" != 1 ]; then
        "$SCRIPT_DIR/services.sh" stop || true
    fi
    exit "$rc"
}
trap on_exit EXIT

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "install dependencies"
    "$SCRIPT_DIR/install-deps.sh"
fi

step "referrers registry protocol tests"
python3 "$SCRIPT_DIR/test_referrers_registry.py"

step "start services"
if ! "$SCRIPT_DIR/services.sh" status >/dev/null 2>&1; then
    STARTED_SERVICES=1
fi
"$SCRIPT_DIR/services.sh" start
eval "$("$SCRIPT_DIR/services.sh" env)"
CTR=(ctr --address "$CONTAINERD_ADDRESS" --namespace "$NS")

step "build test images"
LAYOUT=$SOCI_E2E_BASE/smoke/layout
rm -rf "$LAYOUT"
"$SCRIPT_DIR/make-test-image.py" "$LAYOUT" small --kind small
"$SCRIPT_DIR/make-test-image.py" "$LAYOUT" large --kind large

layout_digest() {  # TAG -> manifest digest recorded in the layout's index.json
    python3 - "$LAYOUT/index.json" "$1" <<'PY'
import json, sys
for m in json.load(open(sys.argv[1]))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
        print(m["digest"])
PY
}

# remote_digest REG REPO:TAG -> sha256 of the manifest bytes the registry serves
remote_digest() {
    echo "sha256:$(skopeo inspect --raw --tls-verify=false "docker://$1/$2" | sha256sum | cut -d' ' -f1)"
}

for reg in "$REGISTRY" "$REFERRERS_REGISTRY"; do
    step "push small + large to $reg (skopeo)"
    for kind in small large; do
        skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:$kind" "docker://$reg/smoke/$kind:v1"
        want=$(layout_digest "$kind")
        got=$(remote_digest "$reg" "smoke/$kind:v1")
        [ "$got" = "$want" ] || fail "$reg/smoke/$kind:v1 has digest $got, layout has $want"
    done
done

step "referrers API on $REFERRERS_REGISTRY, fallback expectations on $REGISTRY"
subject=$(layout_digest large)
subject_size=$(stat -c %s "$LAYOUT/blobs/sha256/${subject#sha256:}")
ART_TYPE=application/vnd.amazon.soci.index.v1+json
art_dir=$SOCI_E2E_BASE/smoke/artifact
mkdir -p "$art_dir"
printf '{}' >"$art_dir/config"
printf 'ztoc-placeholder' >"$art_dir/layer"
cfg_digest=sha256:$(sha256sum "$art_dir/config" | cut -d' ' -f1)
layer_digest=sha256:$(sha256sum "$art_dir/layer" | cut -d' ' -f1)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"%s","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/octet-stream","digest":"%s","size":16}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s},"annotations":{"org.example.smoke":"1"}}' \
    "$ART_TYPE" "$cfg_digest" "$layer_digest" "$subject" "$subject_size" >"$art_dir/manifest.json"
art_digest=sha256:$(sha256sum "$art_dir/manifest.json" | cut -d' ' -f1)
# upload_blob REG REPO FILE: POST then PUT ?digest= (distribution 2.8 ignores a monolithic POST)
upload_blob() {
    local digest loc
    digest=sha256:$(sha256sum "$3" | cut -d' ' -f1)
    loc=$(curl -sf -D - -o /dev/null -X POST "http://$1/v2/$2/blobs/uploads/" | tr -d '\r' \
        | awk 'tolower($1) == "location:" { print $2 }') || fail "$1: upload POST failed"
    case "$loc" in
        http*) ;;
        /*) loc=http://$1$loc ;;
        *) fail "$1: upload POST returned no Location" ;;
    esac
    case "$loc" in *\?*) loc="$loc&digest=$digest" ;; *) loc="$loc?digest=$digest" ;; esac
    curl -sf -o /dev/null -X PUT --data-binary "@$3" -H 'Content-Type: application/octet-stream' "$loc" \
        || fail "$1: blob PUT of $3 failed"
}

for reg in "$REGISTRY" "$REFERRERS_REGISTRY"; do
    for blob in config layer; do
        upload_blob "$reg" smoke/large "$art_dir/$blob"
    done
    headers=$(curl -sf -D - -o /dev/null -X PUT --data-binary "@$art_dir/manifest.json" \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        "http://$reg/v2/smoke/large/manifests/$art_digest" | tr -d '\r') \
        || fail "artifact manifest PUT to $reg failed"
    code=$(curl -s -o "$art_dir/referrers.json" -D "$art_dir/referrers.headers" -w '%{http_code}' \
        "http://$reg/v2/smoke/large/referrers/$subject?artifactType=$ART_TYPE")
    if [ "$reg" = "$REFERRERS_REGISTRY" ]; then
        grep -qi "^OCI-Subject: $subject" <<<"$headers" || fail "$reg: no OCI-Subject header on PUT"
        [ "$code" = 200 ] || fail "$reg: referrers API returned HTTP $code"
        grep -qi '^OCI-Filters-Applied: artifactType' "$art_dir/referrers.headers" \
            || fail "$reg: no OCI-Filters-Applied header"
        python3 - "$art_dir/referrers.json" "$art_digest" "$ART_TYPE" <<'PY' || fail "$reg: bad referrers response"
import json, sys
idx = json.load(open(sys.argv[1]))
assert idx["mediaType"] == "application/vnd.oci.image.index.v1+json", idx
[d] = idx["manifests"]
assert d["digest"] == sys.argv[2] and d["artifactType"] == sys.argv[3], d
assert d["annotations"] == {"org.example.smoke": "1"}, d
PY
        log "  $reg: referrers API lists $art_digest"
    else
        # distribution 2.8 stores the artifact but has no Referrers API: clients must fall back
        [ "$code" = 404 ] || fail "$reg: expected 404 from the referrers endpoint (no API), got $code"
        log "  $reg: no referrers API (404) as expected; artifact stored"
    fi
done

n=0
for reg in "$REGISTRY" "$REFERRERS_REGISTRY"; do
    for kind in small large; do
        ref=$reg/smoke/$kind:v1
        step "pull + run $ref (ctr, overlayfs)"
        "${CTR[@]}" images pull --plain-http "$ref" >/dev/null
        n=$((n + 1))
        id=smoke-$n
        "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        "${CTR[@]}" containers rm "$id" >/dev/null 2>&1 || true
        out=$("${CTR[@]}" run --rm "$ref" "$id") || fail "ctr run $ref failed: $out"
        [ "$out" = READY ] || fail "ctr run $ref printed '$out', expected READY"
        if [ "$kind" = large ]; then
            # every file's checksum, whiteouts, opaque dir, hard and symbolic links
            out=$("${CTR[@]}" run --rm "$ref" "$id-all" /usr/bin/soci-test-entrypoint --all) \
                || fail "full check of $ref failed: $out"
            [ "$(tail -n 1 <<<"$out")" = READY ] || fail "full check of $ref printed: $out"
            log "  $(head -n 1 <<<"$out")"
        fi
        # drop image + content so the next registry's pull really downloads the blobs
        "${CTR[@]}" images rm --sync "$ref" >/dev/null
    done
done

step "stop services"
if [ "$STARTED_SERVICES" = 1 ] && [ "${KEEP_SERVICES:-0}" != 1 ]; then
    STARTED_SERVICES=0
    "$SCRIPT_DIR/services.sh" stop
else
    log "  services were already running before this script (or KEEP_SERVICES=1): left running"
fi
log "  done: $STEP ($(ms_since "$T_STEP") ms)"
STEP="finished"
log "PASS in $(ms_since "$T_START") ms"
