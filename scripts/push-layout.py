#!/usr/bin/env python3
"""Push an image from an OCI image layout to a plain-HTTP registry, bytes unchanged.

usage: push-layout.py LAYOUT_DIR[:TAG] HOST:PORT/REPO[:TAG]

Why not skopeo: skopeo 1.9 (Debian 12) cannot read a layout whose index.json
entries use Docker media types (make-test-image.py --docker-media-types), and
when copying an index it drops `artifactType` from the entries, which changes
the index digest. This pusher uploads every blob and manifest of the graph as
stored (children before parents, existing blobs skipped), then tags the root;
digests are preserved and checked against the registry's Docker-Content-Digest.
Without a source TAG the layout's index.json must hold exactly one entry.
Without a destination TAG the source tag is used. Python 3 stdlib only.
"""

import json
import os
import sys
import urllib.error
import urllib.request

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = INDEX_TYPES | {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
REF_NAME = "org.opencontainers.image.ref.name"


def die(msg):
    sys.exit(f"push-layout: error: {msg}")


class Pusher:
    def __init__(self, layout, registry, repo):
        self.layout, self.base, self.repo = layout, f"http://{registry}/v2/{repo}", repo
        self.blobs = self.manifests = self.skipped = 0

    def path(self, digest):
        alg, hx = digest.split(":", 1)
        return os.path.join(self.layout, "blobs", alg, hx)

    def request(self, method, url, data=None, headers=None, ok=(200, 201, 202, 204)):
        """Send one request; return (status, headers). Exit on a status not in ok."""
        if url.startswith("/"):
            url = self.base.split("/v2/")[0] + url
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req) as resp:
                resp.read()
                return resp.status, resp.headers
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return e.code, e.headers
            body = e.read().decode(errors="replace")[:500]
            raise SystemExit(f"push-layout: error: {method} {url}: HTTP {e.code}: {body}") from None
        except urllib.error.URLError as e:
            die(f"{method} {url}: {e.reason}")

    def blob_exists(self, digest):
        return self.request("HEAD", f"{self.base}/blobs/{digest}", ok=(200, 404))[0] == 200

    def push_blob(self, desc):
        digest = desc["digest"]
        if self.blob_exists(digest):
            self.skipped += 1
            return
        path = self.path(digest)
        if not os.path.exists(path):
            die(f"blob {digest} is not in the layout")
        _, hdr = self.request("POST", f"{self.base}/blobs/uploads/")
        loc = hdr.get("Location") or die("upload POST returned no Location")
        loc += ("&" if "?" in loc else "?") + "digest=" + urllib.request.quote(digest)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            self.request("PUT", loc, data=f, headers={"Content-Length": str(size),
                                                      "Content-Type": "application/octet-stream"})
        self.blobs += 1

    def push_manifest(self, desc, ref):
        """Push desc's subgraph, then the manifest itself under ref (digest or tag)."""
        with open(self.path(desc["digest"]), "rb") as f:
            body = f.read()
        doc = json.loads(body)
        media_type = desc.get("mediaType") or doc.get("mediaType")
        if media_type not in MANIFEST_TYPES:
            die(f"{desc['digest']}: not a manifest or index (mediaType {media_type!r})")
        if media_type in INDEX_TYPES:
            for child in doc.get("manifests", []):
                self.push_manifest(child, child["digest"])
        else:
            for blob in [doc["config"]] + doc.get("layers", []):
                self.push_blob(blob)
        _, hdr = self.request("PUT", f"{self.base}/manifests/{ref}", data=body,
                              headers={"Content-Type": media_type})
        got = hdr.get("Docker-Content-Digest")
        if got and got != desc["digest"]:
            die(f"registry stored {ref} as {got}, expected {desc['digest']}")
        self.manifests += 1


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    src, dst = sys.argv[1], sys.argv[2]
    layout, _, src_tag = src.partition(":")
    host, _, repo = dst.partition("/")
    if not repo:
        die(f"destination must be HOST:PORT/REPO[:TAG], got {dst!r}")
    repo, _, dst_tag = repo.partition(":")
    try:
        with open(os.path.join(layout, "index.json")) as f:
            entries = json.load(f).get("manifests", [])
    except OSError as e:
        die(f"cannot read {layout}/index.json: {e}")
    if src_tag:
        entries = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) == src_tag]
    if len(entries) != 1:
        die(f"{src}: expected one index.json entry{' tagged ' + src_tag if src_tag else ''}, "
            f"found {len(entries)}")
    tag = dst_tag or src_tag
    if not tag:
        die("no tag: give LAYOUT:TAG or REPO:TAG")
    p = Pusher(layout, host, repo)
    p.push_manifest(entries[0], tag)
    print(f"push-layout: {host}/{repo}:{tag}@{entries[0]['digest']}: "
          f"{p.manifests} manifests, {p.blobs} blobs uploaded, {p.skipped} already present",
          file=sys.stderr)


if __name__ == "__main__":
    main()
