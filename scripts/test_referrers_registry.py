#!/usr/bin/env python3
"""Protocol tests for scripts/referrers-registry.py (Python 3 stdlib unittest).

usage: python3 scripts/test_referrers_registry.py [-v]

Starts the registry in-process on an ephemeral loopback port with a temporary
data directory, and checks the OCI distribution subset it claims: ping, blob
uploads (monolithic, chunked, chunked transfer encoding, cross-repo mount),
digest verification, Range GETs, manifests by tag and digest, tags pagination,
and the Referrers API (OCI-Subject, artifactType filtering, Link pagination,
deletion, persistence across a restart).
"""

import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import unittest
from http.server import ThreadingHTTPServer

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("referrers_registry",
                                               os.path.join(HERE, "referrers-registry.py"))
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SOCI_V1 = "application/vnd.amazon.soci.index.v1+json"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Server:
    def __init__(self, data_dir, page_size=None):
        handler = type("H", (rr.Handler,), {"store": rr.Store(data_dir), "quiet": True,
                                            "referrers_page_size": page_size})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class RegistryTest(unittest.TestCase):
    page_size = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="rr-test-")
        self.srv = Server(self.dir, self.page_size)

    def tearDown(self):
        self.srv.close()
        shutil.rmtree(self.dir)

    def req(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.headers, data

    def push_blob(self, repo, data):
        d = sha(data)
        st, _, body = self.req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
        self.assertEqual(st, 201, body)
        return {"mediaType": "application/octet-stream", "digest": d, "size": len(data)}

    def push_manifest(self, repo, ref, doc, media_type=OCI_MANIFEST):
        raw = json.dumps(doc).encode()
        st, h, body = self.req("PUT", f"/v2/{repo}/manifests/{ref}", raw, {"Content-Type": media_type})
        self.assertEqual(st, 201, body)
        self.assertEqual(h["Docker-Content-Digest"], sha(raw))
        return {"mediaType": media_type, "digest": sha(raw), "size": len(raw)}, h

    def image(self, repo="r/img", tag="v1"):
        cfg = self.push_blob(repo, b'{"architecture":"amd64","os":"linux"}')
        layer = self.push_blob(repo, os.urandom(5000))
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
               "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")]}
        return self.push_manifest(repo, tag, doc)[0]

    def artifact(self, subject, artifact_type, n, repo="r/img", via_config=False):
        empty = self.push_blob(repo, b"{}")
        blob = self.push_blob(repo, f"ztoc {n}".encode())
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": dict(empty, mediaType=artifact_type if via_config else "application/vnd.oci.empty.v1+json"),
               "layers": [blob], "subject": subject, "annotations": {"n": str(n)}}
        if not via_config:
            doc["artifactType"] = artifact_type
        desc, h = self.push_manifest(repo, sha(json.dumps(doc).encode()), doc)
        self.assertEqual(h["OCI-Subject"], subject["digest"])
        return desc


class BasicTest(RegistryTest):
    def test_ping(self):
        st, h, body = self.req("GET", "/v2/")
        self.assertEqual((st, json.loads(body)), (200, {}))
        self.assertEqual(h["Docker-Distribution-API-Version"], "registry/2.0")

    def test_monolithic_and_range(self):
        data = bytes(range(256)) * 40
        d = self.push_blob("a/b", data)["digest"]
        st, h, body = self.req("GET", f"/v2/a/b/blobs/{d}", headers={"Range": "bytes=100-1123"})
        self.assertEqual((st, body), (206, data[100:1124]))
        self.assertEqual(h["Content-Range"], f"bytes 100-1123/{len(data)}")
        st, _, body = self.req("GET", f"/v2/a/b/blobs/{d}", headers={"Range": "bytes=-10"})
        self.assertEqual((st, body), (206, data[-10:]))
        st, _, body = self.req("GET", f"/v2/a/b/blobs/{d}", headers={"Range": "bytes=10000-"})
        self.assertEqual((st, body), (206, data[10000:]))
        st, h, _ = self.req("GET", f"/v2/a/b/blobs/{d}", headers={"Range": f"bytes={len(data)}-"})
        self.assertEqual(st, 416)
        self.assertEqual(h["Content-Range"], f"bytes */{len(data)}")
        st, h, body = self.req("HEAD", f"/v2/a/b/blobs/{d}")
        self.assertEqual((st, body, int(h["Content-Length"])), (200, b"", len(data)))
        self.assertEqual(h["Accept-Ranges"], "bytes")
        # blobs are scoped to their repository
        self.assertEqual(self.req("GET", f"/v2/other/blobs/{d}")[0], 404)

    def test_digest_mismatch(self):
        st, _, body = self.req("POST", f"/v2/a/b/blobs/uploads/?digest={sha(b'x')}", b"y")
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "DIGEST_INVALID")

    def test_chunked_upload(self):
        data = os.urandom(300000)
        st, h, _ = self.req("POST", "/v2/a/b/blobs/uploads/")
        self.assertEqual(st, 202)
        loc = h["Location"]
        st, h, _ = self.req("PATCH", loc, data[:100000], {"Content-Range": "0-99999"})
        self.assertEqual((st, h["Range"]), (202, "0-99999"))
        st, _, _ = self.req("PATCH", loc, data[100000:], {"Content-Range": "5-10"})
        self.assertEqual(st, 416)
        # chunked transfer encoding, as Go clients stream PATCH bodies
        c = http.client.HTTPConnection("127.0.0.1", self.srv.port)
        c.request("PATCH", loc, body=iter([data[100000:200000], data[200000:]]),
                  encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        r.read()
        c.close()
        self.assertEqual((r.status, r.headers["Range"]), (202, f"0-{len(data) - 1}"))
        st, h, _ = self.req("PUT", f"{loc}?digest={sha(data)}")
        self.assertEqual((st, h["Docker-Content-Digest"]), (201, sha(data)))
        self.assertEqual(self.req("GET", f"/v2/a/b/blobs/{sha(data)}")[2], data)
        self.assertEqual(self.req("GET", loc)[0], 404)  # session is gone

    def test_mount(self):
        d = self.push_blob("src/repo", b"shared")["digest"]
        st, h, _ = self.req("POST", f"/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo")
        self.assertEqual((st, h["Docker-Content-Digest"]), (201, d))
        st, h, _ = self.req("POST", f"/v2/dst/other/blobs/uploads/?mount={d}&from=nowhere")
        self.assertEqual(st, 202)
        self.assertIn("/v2/dst/other/blobs/uploads/", h["Location"])

    def test_manifests_and_tags(self):
        desc = self.image("r/img", "v1")
        st, h, body = self.req("GET", "/v2/r/img/manifests/v1")
        self.assertEqual((st, h["Content-Type"], sha(body)), (200, OCI_MANIFEST, desc["digest"]))
        st, h, body = self.req("HEAD", f"/v2/r/img/manifests/{desc['digest']}")
        self.assertEqual((st, body, int(h["Content-Length"])), (200, b"", desc["size"]))
        for t in ("a", "b", "c"):
            self.req("PUT", f"/v2/r/img/manifests/{t}", self.req("GET", "/v2/r/img/manifests/v1")[2],
                     {"Content-Type": OCI_MANIFEST})
        st, h, body = self.req("GET", "/v2/r/img/tags/list?n=2")
        self.assertEqual(json.loads(body)["tags"], ["a", "b"])
        self.assertIn("last=b", h["Link"])
        self.assertEqual(json.loads(self.req("GET", "/v2/r/img/tags/list?n=2&last=b")[2])["tags"], ["c", "v1"])
        self.assertEqual(self.req("DELETE", "/v2/r/img/manifests/a")[0], 202)
        self.assertEqual(self.req("GET", "/v2/r/img/manifests/a")[0], 404)
        self.assertEqual(self.req("DELETE", f"/v2/r/img/manifests/{desc['digest']}")[0], 202)
        self.assertEqual(json.loads(self.req("GET", "/v2/r/img/tags/list")[2])["tags"], [])
        st, _, body = self.req("GET", "/v2/r/img/manifests/v1")
        self.assertEqual((st, json.loads(body)["errors"][0]["code"]), (404, "MANIFEST_UNKNOWN"))

    def test_manifest_errors(self):
        st, _, body = self.req("PUT", "/v2/r/img/manifests/v1", b"{nope", {"Content-Type": OCI_MANIFEST})
        self.assertEqual((st, json.loads(body)["errors"][0]["code"]), (400, "MANIFEST_INVALID"))
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
               "config": {"mediaType": "x", "digest": sha(b"missing"), "size": 7}, "layers": []}
        st, _, body = self.req("PUT", "/v2/r/img/manifests/v1", json.dumps(doc).encode(),
                               {"Content-Type": OCI_MANIFEST})
        self.assertEqual((st, json.loads(body)["errors"][0]["code"]), (400, "MANIFEST_BLOB_UNKNOWN"))
        st, _, body = self.req("PUT", f"/v2/r/img/manifests/{sha(b'other')}", json.dumps(doc).encode(),
                               {"Content-Type": OCI_MANIFEST})
        self.assertEqual(st, 400)
        self.assertEqual(self.req("GET", "/v2/BAD/manifests/v1")[0], 400)

    def test_referrers(self):
        subject = self.image()
        a1 = self.artifact(subject, SOCI_V1, 1)
        a2 = self.artifact(subject, "application/vnd.example.sbom", 2)
        a3 = self.artifact(subject, SOCI_V1, 3, via_config=True)  # artifactType from config.mediaType
        st, h, body = self.req("GET", f"/v2/r/img/referrers/{subject['digest']}")
        self.assertEqual((st, h["Content-Type"]), (200, "application/vnd.oci.image.index.v1+json"))
        self.assertNotIn("OCI-Filters-Applied", h)
        idx = json.loads(body)
        self.assertEqual([m["digest"] for m in idx["manifests"]], [a1["digest"], a2["digest"], a3["digest"]])
        self.assertEqual(idx["manifests"][0], dict(a1, artifactType=SOCI_V1, annotations={"n": "1"}))
        # filtering, with the '+' sent unescaped as well as escaped
        for q in (SOCI_V1, SOCI_V1.replace("+", "%2B")):
            st, h, body = self.req("GET", f"/v2/r/img/referrers/{subject['digest']}?artifactType={q}")
            self.assertEqual(h["OCI-Filters-Applied"], "artifactType")
            self.assertEqual([m["digest"] for m in json.loads(body)["manifests"]], [a1["digest"], a3["digest"]])
        # unknown subject: 200 with an empty index, never 404
        st, _, body = self.req("GET", f"/v2/r/img/referrers/{sha(b'nothing')}")
        self.assertEqual((st, json.loads(body)["manifests"]), (200, []))
        self.assertEqual(self.req("GET", "/v2/r/img/referrers/sha256:zz")[0], 400)
        # deleting a referrer removes it from the list
        self.assertEqual(self.req("DELETE", f"/v2/r/img/manifests/{a2['digest']}")[0], 202)
        body = self.req("GET", f"/v2/r/img/referrers/{subject['digest']}")[2]
        self.assertEqual([m["digest"] for m in json.loads(body)["manifests"]], [a1["digest"], a3["digest"]])
        # survives a restart (state is on disk)
        self.srv.close()
        self.srv = Server(self.dir)
        body = self.req("GET", f"/v2/r/img/referrers/{subject['digest']}")[2]
        self.assertEqual(len(json.loads(body)["manifests"]), 2)


class PagedReferrersTest(RegistryTest):
    page_size = 2

    def test_link_pagination(self):
        subject = self.image()
        want = [self.artifact(subject, SOCI_V1, n)["digest"] for n in range(5)]
        got, path, pages = [], f"/v2/r/img/referrers/{subject['digest']}?artifactType={SOCI_V1}", 0
        while path:
            st, h, body = self.req("GET", path)
            self.assertEqual(st, 200)
            got += [m["digest"] for m in json.loads(body)["manifests"]]
            link = h.get("Link")
            path = link[link.index("<") + 1:link.index(">")] if link else None
            pages += 1
        self.assertEqual((got, pages), (want, 3))


if __name__ == "__main__":
    unittest.main()
