#!/usr/bin/env python3
"""A small OCI distribution registry with the OCI 1.1 native Referrers API.

Test infrastructure for soci-rs: Debian's distribution 2.8 (`docker-registry`)
has no Referrers API, and no installable registry here has one, so this script
gives the end-to-end tests a registry that does. Python 3 standard library only.

usage: referrers-registry.py [--addr 127.0.0.1:5001] [--referrers-page-size N]
                             [--quiet] DATA_DIR

Implemented (OCI distribution-spec v1.1 subset, plain HTTP, no auth):
  GET  /v2/                                       ping
  GET  /v2/_catalog                               repository list
  GET|HEAD|DELETE /v2/<name>/blobs/<digest>       Range: bytes=a-b, a-, -n (206/416)
  POST /v2/<name>/blobs/uploads/                  202 session; ?digest= monolithic;
                                                  ?mount=<d>&from=<repo> (201, or 202)
  PATCH|PUT|GET|DELETE /v2/<name>/blobs/uploads/<id>   chunked upload, PUT ?digest=
  GET|HEAD|PUT|DELETE /v2/<name>/manifests/<tag|digest>
  GET  /v2/<name>/tags/list                       ?n= &last= with Link pagination
  GET  /v2/<name>/referrers/<digest>              ?artifactType= filter, Link pagination

Manifests with a `subject` are indexed as referrers when pushed (the PUT
response carries `OCI-Subject`), in push order; the referrers response is an
OCI image index of descriptors {mediaType, digest, size, artifactType,
annotations}, artifactType being the manifest's artifactType or, failing that,
its config.mediaType. Uploaded content is verified against its digest
(400 DIGEST_INVALID). Request bodies may use Content-Length or chunked
transfer encoding.

Storage under DATA_DIR (survives restarts):
  blobs/<alg>/<hex>                      content (blobs and manifests), shared
  repos/<name>/_blobs/<alg>/<hex>        empty file: blob linked in repo
  repos/<name>/_manifests/<alg>/<hex>    JSON {"mediaType": ...}
  repos/<name>/_tags/<tag>               manifest digest
  repos/<name>/_referrers/<alg>/<hex>.json  ordered descriptor list for a subject
  uploads/<uuid>, uploads/<uuid>.repo    upload sessions
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}

NAME_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")
HEX_LEN = {"sha256": 64, "sha512": 128}
ROUTE_RE = re.compile(
    r"^/v2/(?P<name>.+?)/(?:"
    r"blobs/uploads/(?P<upload>[A-Za-z0-9-]*)"
    r"|blobs/(?P<blob>[^/]+)"
    r"|manifests/(?P<ref>[^/]+)"
    r"|(?P<tags>tags/list)"
    r"|referrers/(?P<subject>[^/]+)"
    r")$"
)
MAX_MANIFEST = 4 << 20
COPY_CHUNK = 1 << 20


class RegistryError(Exception):
    """An OCI error response: HTTP status, error code, message."""

    def __init__(self, status, code, message, detail=None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


def parse_digest(s):
    m = DIGEST_RE.match(s or "")
    if not m or len(m.group(2)) != HEX_LEN[m.group(1)]:
        raise RegistryError(400, "DIGEST_INVALID", f"invalid digest {s!r}")
    return m.group(1), m.group(2)


def atomic_write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Store:
    """On-disk registry state. Metadata changes are serialized by one lock."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.lock = threading.Lock()
        for d in ("blobs", "repos", "uploads"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)

    # -- paths
    def blob_path(self, digest):
        alg, hx = parse_digest(digest)
        return os.path.join(self.root, "blobs", alg, hx)

    def repo_dir(self, name):
        return os.path.join(self.root, "repos", name)

    def repo_file(self, name, kind, digest, suffix=""):
        alg, hx = parse_digest(digest)
        return os.path.join(self.repo_dir(name), kind, alg, hx + suffix)

    def upload_path(self, upload_id):
        if not re.fullmatch(r"[a-f0-9-]{36}", upload_id or ""):
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown")
        return os.path.join(self.root, "uploads", upload_id)

    # -- blobs
    def has_blob(self, name, digest):
        return os.path.exists(self.repo_file(name, "_blobs", digest)) and os.path.exists(
            self.blob_path(digest)
        )

    def link_blob(self, name, digest):
        p = self.repo_file(name, "_blobs", digest)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "ab").close()

    def commit_file(self, name, src, digest):
        """Verify src's content against digest, move it into the blob store, link it."""
        alg, _ = parse_digest(digest)
        h = hashlib.new(alg)
        with open(src, "rb") as f:
            while True:
                b = f.read(COPY_CHUNK)
                if not b:
                    break
                h.update(b)
        actual = f"{alg}:{h.hexdigest()}"
        if actual != digest:
            os.unlink(src)
            raise RegistryError(400, "DIGEST_INVALID", "content does not match digest",
                                {"expected": digest, "actual": actual})
        dst = self.blob_path(digest)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
        self.link_blob(name, digest)

    def put_bytes(self, digest, data):
        dst = self.blob_path(digest)
        if not os.path.exists(dst):
            atomic_write(dst, data)

    # -- manifests and tags
    def resolve(self, name, ref):
        """Return the manifest digest for a tag or digest reference, or raise."""
        if ":" in ref:
            parse_digest(ref)
            digest = ref
        else:
            if not TAG_RE.match(ref):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {ref!r}")
            try:
                with open(os.path.join(self.repo_dir(name), "_tags", ref)) as f:
                    digest = f.read().strip()
            except FileNotFoundError:
                raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}:{ref}") from None
        if not os.path.exists(self.repo_file(name, "_manifests", digest)):
            raise RegistryError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {name}@{digest}")
        return digest

    def manifest_media_type(self, name, digest):
        with open(self.repo_file(name, "_manifests", digest)) as f:
            return json.load(f)["mediaType"]

    def tags(self, name):
        d = os.path.join(self.repo_dir(name), "_tags")
        if not os.path.isdir(self.repo_dir(name)):
            raise RegistryError(404, "NAME_UNKNOWN", f"repository name not known: {name}")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def repositories(self):
        base = os.path.join(self.root, "repos")
        out = []
        for dirpath, dirnames, _ in os.walk(base):
            if "_manifests" in dirnames:
                out.append(os.path.relpath(dirpath, base))
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        return sorted(out)

    # -- referrers
    def referrers(self, name, subject):
        try:
            with open(self.repo_file(name, "_referrers", subject, ".json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return []

    def set_referrers(self, name, subject, descs):
        p = self.repo_file(name, "_referrers", subject, ".json")
        if descs:
            atomic_write(p, json.dumps(descs, indent=1).encode())
        elif os.path.exists(p):
            os.unlink(p)


def referrer_descriptor(media_type, digest, size, doc):
    desc = {"mediaType": media_type, "digest": digest, "size": size}
    artifact_type = doc.get("artifactType")
    if not artifact_type and media_type not in INDEX_TYPES:
        artifact_type = (doc.get("config") or {}).get("mediaType")
    if artifact_type:
        desc["artifactType"] = artifact_type
    if doc.get("annotations"):
        desc["annotations"] = doc["annotations"]
    return desc


def paginate(items, key, last, n):
    """Items after `last` (by key), at most n of them; returns (page, more)."""
    if last:
        keys = [key(i) for i in items]
        items = items[keys.index(last) + 1:] if last in keys else [i for i in items if key(i) > last]
    if n is None:
        return items, False
    return items[:n], len(items) > n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "soci-test-registry/1"
    store = None  # set by main()
    referrers_page_size = None
    quiet = False

    # -- plumbing
    def log_message(self, fmt, *args):
        if not self.quiet:
            # escape non-printable bytes (e.g. a TLS ClientHello sent to this plain-HTTP port)
            msg = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in fmt % args)
            sys.stderr.write(f"{self.log_date_time_string()} {msg}\n")

    def send(self, status, body=b"", headers=None, content_type=None, head=False, length=None):
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            for item in v if isinstance(v, list) else [v]:
                self.send_header(k, str(item))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def send_json(self, status, obj, headers=None, content_type="application/json", head=False):
        self.send(status, json.dumps(obj).encode(), headers, content_type, head)

    def send_error_json(self, e):
        err = {"code": e.code, "message": e.message}
        if e.detail is not None:
            err["detail"] = e.detail
        self.send_json(e.status, {"errors": [err]}, head=self.command == "HEAD")

    def body_chunks(self):
        """Yield the request body, from Content-Length or chunked encoding."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise RegistryError(400, "BLOB_UPLOAD_INVALID", "truncated chunked body")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    b = self.rfile.read(min(left, COPY_CHUNK))
                    if not b:
                        raise RegistryError(400, "BLOB_UPLOAD_INVALID", "truncated chunked body")
                    left -= len(b)
                    yield b
                self.rfile.readline(3)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                b = self.rfile.read(min(left, COPY_CHUNK))
                if not b:
                    raise RegistryError(400, "BLOB_UPLOAD_INVALID", "truncated body")
                left -= len(b)
                yield b

    def read_body(self, limit=None):
        buf = bytearray()
        for b in self.body_chunks():
            buf += b
            if limit is not None and len(buf) > limit:
                self.close_connection = True
                raise RegistryError(413, "SIZE_INVALID", f"body larger than {limit} bytes")
        return bytes(buf)

    def append_body(self, path):
        with open(path, "ab") as f:
            for b in self.body_chunks():
                f.write(b)
            return f.tell()

    def query(self):
        # A literal '+' stays '+' (media types such as ...+json are often sent unescaped).
        q = urllib.parse.urlsplit(self.path).query.replace("+", "%2B")
        return urllib.parse.parse_qs(q, keep_blank_values=True)

    def dispatch(self):
        self._body_read = False
        try:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            if path in ("/v2", "/v2/"):
                if self.command not in ("GET", "HEAD"):
                    raise RegistryError(405, "UNSUPPORTED", "method not allowed")
                return self.send_json(200, {}, head=self.command == "HEAD")
            if path == "/v2/_catalog" and self.command == "GET":
                q = self.query()
                n = int(q["n"][0]) if "n" in q else None
                repos, more = paginate(self.store.repositories(), lambda r: r,
                                       q.get("last", [""])[0], n)
                hdr = {}
                if more:
                    hdr["Link"] = f'</v2/_catalog?n={n}&last={urllib.parse.quote(repos[-1])}>; rel="next"'
                return self.send_json(200, {"repositories": repos}, hdr)
            m = ROUTE_RE.match(path)
            if not m:
                raise RegistryError(404, "UNSUPPORTED", f"no route for {path}")
            name = m.group("name")
            if not NAME_RE.match(name) or len(name) > 255:
                raise RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}")
            if m.group("upload") is not None:
                return self.route_upload(name, m.group("upload"))
            if m.group("blob"):
                return self.route_blob(name, m.group("blob"))
            if m.group("ref"):
                return self.route_manifest(name, m.group("ref"))
            if m.group("tags") and self.command == "GET":
                return self.get_tags(name)
            if m.group("subject") and self.command == "GET":
                return self.get_referrers(name, m.group("subject"))
            raise RegistryError(405, "UNSUPPORTED", "method not allowed")
        except RegistryError as e:
            if not self._body_read and self.command in ("PUT", "POST", "PATCH"):
                self.close_connection = True  # unread body: don't reuse the connection
            self.send_error_json(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - report, keep serving
            self.log_message("internal error: %r", e)
            self.close_connection = True
            self.send_error_json(RegistryError(500, "UNKNOWN", f"internal error: {e}"))

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = dispatch

    # -- blobs
    def route_blob(self, name, digest):
        st = self.store
        parse_digest(digest)
        if self.command == "DELETE":
            p = st.repo_file(name, "_blobs", digest)
            if not os.path.exists(p):
                raise RegistryError(404, "BLOB_UNKNOWN", f"blob unknown: {digest}")
            os.unlink(p)
            return self.send(202)
        if self.command not in ("GET", "HEAD"):
            raise RegistryError(405, "UNSUPPORTED", "method not allowed")
        if not st.has_blob(name, digest):
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob unknown: {digest}")
        path = st.blob_path(digest)
        size = os.path.getsize(path)
        hdr = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            r = self.parse_range(rng, size)
            if r == "unsatisfiable":
                hdr["Content-Range"] = f"bytes */{size}"
                return self.send(416, headers=hdr, content_type="application/octet-stream")
            if r is not None:
                start, end, status = r[0], r[1], 206
                hdr["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        self.send(status, headers=hdr, content_type="application/octet-stream",
                  head=True, length=length)
        if self.command == "GET":
            with open(path, "rb") as f:
                f.seek(start)
                left = length
                while left:
                    b = f.read(min(left, COPY_CHUNK))
                    if not b:
                        break
                    self.wfile.write(b)
                    left -= len(b)

    @staticmethod
    def parse_range(value, size):
        """(start, end) for one byte range; None to ignore the header; 'unsatisfiable'."""
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return None  # multi-range or malformed: serve the whole blob (RFC 9110 allows it)
        if m.group(1) == "":
            n = int(m.group(2))
            if n == 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        if start >= size:
            return "unsatisfiable"
        if start > end:
            return None
        return start, min(end, size - 1)

    # -- uploads
    def upload_headers(self, name, upload_id, size):
        return {
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{max(size - 1, 0)}",
            "OCI-Chunk-Min-Length": "0",
        }

    def blob_created(self, name, digest):
        self.send(201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                "Docker-Content-Digest": digest})

    def new_upload(self, name):
        upload_id = str(uuid.uuid4())
        path = self.store.upload_path(upload_id)
        open(path, "wb").close()
        with open(path + ".repo", "w") as f:
            f.write(name)
        return upload_id, path

    def open_upload(self, name, upload_id):
        path = self.store.upload_path(upload_id)
        try:
            with open(path + ".repo") as f:
                if f.read() != name:
                    raise FileNotFoundError
        except FileNotFoundError:
            raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"upload unknown: {upload_id}") from None
        return path

    def drop_upload(self, path):
        for p in (path, path + ".repo"):
            if os.path.exists(p):
                os.unlink(p)

    def route_upload(self, name, upload_id):
        st = self.store
        q = self.query()
        if upload_id == "":
            if self.command != "POST":
                raise RegistryError(405, "UNSUPPORTED", "method not allowed")
            if "mount" in q:
                digest = q["mount"][0]
                parse_digest(digest)
                src = q.get("from", [""])[0]
                ok = st.has_blob(src, digest) if src and NAME_RE.match(src) else (
                    not src and os.path.exists(st.blob_path(digest)))
                self.read_body()
                if ok:
                    st.link_blob(name, digest)
                    return self.blob_created(name, digest)
                upload_id, _ = self.new_upload(name)
                return self.send(202, headers=self.upload_headers(name, upload_id, 0))
            upload_id, path = self.new_upload(name)
            if "digest" in q:  # monolithic POST
                digest = q["digest"][0]
                parse_digest(digest)
                try:
                    self.append_body(path)
                    st.commit_file(name, path, digest)
                finally:
                    self.drop_upload(path)
                return self.blob_created(name, digest)
            self.read_body()
            return self.send(202, headers=self.upload_headers(name, upload_id, 0))

        path = self.open_upload(name, upload_id)
        size = os.path.getsize(path)
        if self.command == "GET":
            return self.send(204, headers=self.upload_headers(name, upload_id, size))
        if self.command == "DELETE":
            self.drop_upload(path)
            return self.send(204)
        if self.command == "PATCH":
            cr = self.headers.get("Content-Range")
            if cr:
                m = re.fullmatch(r"\s*(?:bytes )?(\d+)-(\d+)\s*", cr)
                if not m or int(m.group(1)) != size:
                    raise RegistryError(416, "BLOB_UPLOAD_INVALID",
                                        f"Content-Range {cr!r} does not start at offset {size}")
            size = self.append_body(path)
            return self.send(202, headers=self.upload_headers(name, upload_id, size))
        if self.command == "PUT":
            if "digest" not in q:
                raise RegistryError(400, "DIGEST_INVALID", "digest query parameter missing")
            digest = q["digest"][0]
            parse_digest(digest)
            try:
                self.append_body(path)
                st.commit_file(name, path, digest)
            finally:
                self.drop_upload(path)
            return self.blob_created(name, digest)
        raise RegistryError(405, "UNSUPPORTED", "method not allowed")

    # -- manifests
    def route_manifest(self, name, ref):
        if self.command in ("GET", "HEAD"):
            return self.get_manifest(name, ref)
        if self.command == "PUT":
            return self.put_manifest(name, ref)
        if self.command == "DELETE":
            return self.delete_manifest(name, ref)
        raise RegistryError(405, "UNSUPPORTED", "method not allowed")

    def get_manifest(self, name, ref):
        st = self.store
        digest = st.resolve(name, ref)
        with open(st.blob_path(digest), "rb") as f:
            body = f.read()
        self.send(200, body, {"Docker-Content-Digest": digest, "ETag": f'"{digest}"'},
                  st.manifest_media_type(name, digest), head=self.command == "HEAD")

    def put_manifest(self, name, ref):
        st = self.store
        body = self.read_body(MAX_MANIFEST)
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            raise RegistryError(400, "MANIFEST_INVALID", f"manifest is not valid JSON: {e}") from None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        media_type = ctype or doc.get("mediaType") or ""
        if doc.get("mediaType") and ctype and doc["mediaType"] != ctype:
            raise RegistryError(400, "MANIFEST_INVALID",
                                f"mediaType {doc['mediaType']!r} does not match Content-Type {ctype!r}")
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(400, "MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
        if doc.get("schemaVersion") != 2:
            raise RegistryError(400, "MANIFEST_INVALID", "schemaVersion must be 2")
        alg = "sha256"
        if ":" in ref:
            alg, _ = parse_digest(ref)
        digest = f"{alg}:{hashlib.new(alg, body).hexdigest()}"
        if ":" in ref and ref != digest:
            raise RegistryError(400, "DIGEST_INVALID", "manifest does not match digest",
                                {"expected": ref, "actual": digest})
        tags = ([] if ":" in ref else [ref]) + self.query().get("tag", [])
        for t in tags:
            if not TAG_RE.match(t):
                raise RegistryError(400, "TAG_INVALID", f"invalid tag {t!r}")

        # Referenced content must already be in this repository (the subject need not).
        missing = []
        if media_type in INDEX_TYPES:
            for d in doc.get("manifests") or []:
                if not os.path.exists(st.repo_file(name, "_manifests", d.get("digest", ""))):
                    missing.append(d.get("digest"))
        else:
            descs = [doc.get("config") or {}] + list(doc.get("layers") or [])
            for d in descs:
                if "nondistributable" in d.get("mediaType", "") or "foreign" in d.get("mediaType", ""):
                    continue
                if not d.get("digest") or not st.has_blob(name, d["digest"]):
                    missing.append(d.get("digest"))
        if missing:
            raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", "manifest references unknown content",
                                {"missing": missing})
        subject = doc.get("subject")
        if subject is not None:
            if not isinstance(subject, dict):
                raise RegistryError(400, "MANIFEST_INVALID", "subject must be a descriptor")
            parse_digest(subject.get("digest"))

        with st.lock:
            st.put_bytes(digest, body)
            atomic_write(st.repo_file(name, "_manifests", digest),
                         json.dumps({"mediaType": media_type}).encode())
            for t in tags:
                atomic_write(os.path.join(st.repo_dir(name), "_tags", t), digest.encode())
            if subject is not None:
                descs = st.referrers(name, subject["digest"])
                if not any(d["digest"] == digest for d in descs):
                    descs.append(referrer_descriptor(media_type, digest, len(body), doc))
                    st.set_referrers(name, subject["digest"], descs)
        hdr = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        if subject is not None:
            hdr["OCI-Subject"] = subject["digest"]
        self.send(201, headers=hdr)

    def delete_manifest(self, name, ref):
        st = self.store
        with st.lock:
            if ":" not in ref:  # delete a tag only
                st.resolve(name, ref)
                os.unlink(os.path.join(st.repo_dir(name), "_tags", ref))
                return self.send(202)
            digest = st.resolve(name, ref)
            with open(st.blob_path(digest), "rb") as f:
                doc = json.load(f)
            os.unlink(st.repo_file(name, "_manifests", digest))
            for t in st.tags(name):
                p = os.path.join(st.repo_dir(name), "_tags", t)
                with open(p) as f:
                    if f.read().strip() == digest:
                        os.unlink(p)
            subject = (doc.get("subject") or {}).get("digest") if isinstance(doc, dict) else None
            if subject:
                descs = [d for d in st.referrers(name, subject) if d["digest"] != digest]
                st.set_referrers(name, subject, descs)
        self.send(202)

    def get_tags(self, name):
        q = self.query()
        n = int(q["n"][0]) if "n" in q and q["n"][0] else None
        tags, more = paginate(self.store.tags(name), lambda t: t, q.get("last", [""])[0], n)
        hdr = {}
        if more:
            hdr["Link"] = f'</v2/{name}/tags/list?n={n}&last={urllib.parse.quote(tags[-1])}>; rel="next"'
        self.send_json(200, {"name": name, "tags": tags}, hdr)

    def get_referrers(self, name, subject):
        parse_digest(subject)
        q = self.query()
        descs = self.store.referrers(name, subject)
        hdr = {}
        types = q.get("artifactType")
        if types:
            descs = [d for d in descs if d.get("artifactType") == types[0]]
            hdr["OCI-Filters-Applied"] = "artifactType"
        n = self.referrers_page_size
        if "n" in q and q["n"][0]:
            n = int(q["n"][0])
        page, more = paginate(descs, lambda d: d["digest"], q.get("last", [""])[0], n)
        if more:
            params = {"n": n, "last": page[-1]["digest"]}
            if types:
                params["artifactType"] = types[0]
            hdr["Link"] = f'</v2/{name}/referrers/{subject}?{urllib.parse.urlencode(params)}>; rel="next"'
        self.send_json(200, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page},
                       hdr, content_type=OCI_INDEX)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", help="storage directory (created if missing)")
    ap.add_argument("--addr", default="127.0.0.1:5001", help="listen HOST:PORT (default %(default)s)")
    ap.add_argument("--referrers-page-size", type=int, default=None,
                    help="return at most N referrers per response, with a Link header")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    Handler.store = Store(args.data_dir)
    Handler.referrers_page_size = args.referrers_page_size
    Handler.quiet = args.quiet
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
    sys.stderr.write(f"referrers-registry: listening on {args.addr}, data in {Handler.store.root}\n")
    sys.stderr.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
