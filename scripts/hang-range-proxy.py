#!/usr/bin/env python3
"""HTTP proxy in front of a registry that never answers ranged blob reads.

usage: hang-range-proxy.py --listen HOST:PORT --upstream HOST:PORT

Every request is relayed to the upstream registry, except a GET of `/v2/<name>/blobs/<digest>`
with a closed byte range (`Range: bytes=N-M`, what a lazy layer read sends): that connection is
accepted, its request read, and then left without an answer until the proxy exits. Whole-blob
downloads (no Range, or an open `bytes=N-` resume) and manifests pass through, so a snapshotter
behind it can fetch SOCI indexes and zTOCs and unpack layers locally, but a lazy mount hangs on
its first range read. Used by scripts/e2e-more.sh to test `mount_timeout_sec`. Python 3 stdlib
only; one thread per connection; bodies are buffered in memory (test images are small).
"""

import argparse
import http.client
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLOSED_RANGE = re.compile(r"^\s*bytes=\d+-\d+\s*$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "host", "content-length"}
STOP = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = ("127.0.0.1", 5000)
    hung = 0

    def log_message(self, fmt, *args):  # quiet: one line per hung request only
        pass

    def relay(self):
        rng = self.headers.get("Range", "")
        if self.command == "GET" and "/blobs/" in self.path and CLOSED_RANGE.match(rng):
            Handler.hung += 1
            print(f"hang-range-proxy: holding {self.path} {rng} (#{Handler.hung})", file=sys.stderr,
                  flush=True)
            STOP.wait()
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            self.send_error(502, f"upstream: {e}")
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = relay
    do_HEAD = relay
    do_POST = relay
    do_PUT = relay
    do_PATCH = relay
    do_DELETE = relay


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, type=hostport)
    ap.add_argument("--upstream", required=True, type=hostport)
    args = ap.parse_args()
    Handler.upstream = args.upstream
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(args.listen, Handler)
    print(f"hang-range-proxy: listening on {args.listen[0]}:{args.listen[1]}", file=sys.stderr,
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        STOP.set()


if __name__ == "__main__":
    main()
