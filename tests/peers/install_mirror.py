#!/usr/bin/env python3
"""HTTPS artifact mirror for tests/install.rs: serves files, counts requests, injects faults.

Usage: install_mirror.py --cert CERT --key KEY --dir DIR [--dir DIR2 ...]
Files are looked up in the --dir directories in order (a per-test overlay first, then the shared
artifact store). Binds 127.0.0.1 on a free port and prints `PORT <n>` once listening.

Control endpoints (not counted):
  GET  /__counts                          -> JSON {path: number of GETs}
  POST /__fault?path=/p&mode=cut&times=1  -> the next `times` GETs of /p send half the body
                                             (with the full Content-Length) and close
  POST /__fault?path=/p&mode=unframed-cut&times=1
                                          -> the next `times` GETs of /p send no Content-Length
                                             (a body framed by the connection's close), half the
                                             body, and close without TLS close_notify
  POST /__fault?path=/p&mode=wrong        -> /p is served with one byte flipped (until cleared)
  POST /__fault?path=/p&mode=503          -> GETs of /p answer 503 Service Unavailable (an outage)
  POST /__fault?path=/p&mode=redirect&to=URL -> GETs of /p answer 302 with Location URL
  GET  /__creds                           -> JSON list of credential headers (Authorization,
                                             Cookie, X-Vault-Token, X-Amz-Security-Token) seen
  POST /__fault?path=/p&mode=cut-at&bytes=N&times=1
                                          -> the next `times` GETs of /p announce their whole
                                             (ranged) body but send only N bytes of it, then close
  POST /__fault?path=/p&mode=changed-cut&bytes=N&times=1
                                          -> the same, serving a changed file (first byte flipped,
                                             its own ETag): the mirror replaced it in between
  POST /__fault?path=/p&mode=huge         -> GETs of /p announce a 600 MiB body (then close)
  POST /__validators?etag=1&last_modified=1 -> artifact answers carry a strong ETag (from the
                                             content's SHA-256) and/or Last-Modified (default none)
  POST /__hold?count=K&seconds=S          -> each artifact GET waits, before its body, until K
                                             artifact GETs are in flight or S seconds passed
  GET  /__log                             -> JSON {"requests": [{path, range, if_range, status}],
                                             "max_active": most artifact GETs in flight at once}
  POST /__clear                           -> removes all faults

Ranges: `Range: bytes=N-` is answered 206 with `Content-Range` (416 past the end); with
`If-Range` naming anything but the current validator the whole file is answered (200).
"""

import argparse
import email.utils
import hashlib
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
COUNTS = {}
FAULTS = {}  # path -> {"mode": str, "times": int or None, "to": str or None}
CREDS = []  # "path: header" of every GET that carried a credential header
CREDENTIAL_HEADERS = ("authorization", "cookie", "x-vault-token", "x-amz-security-token")
VALIDATORS = {"etag": False, "last_modified": False}
HOLD = {"count": 0, "seconds": 0.0}
LOG = []  # one entry per artifact GET
ETAGS = {}  # (path, mtime, size, altered) -> ETag
ACTIVE = {"now": 0, "max": 0}
ACTIVE_CHANGED = threading.Condition(LOCK)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "install-mirror"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("mirror: " + (fmt % args) + "\n")

    def reply(self, code, body, ctype="application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def artifact(self, rel, path, body, mode, cut_at):
        """An artifact: validators, ranges, holds, cuts; logged."""
        headers = {}
        if VALIDATORS["etag"]:
            # Computed once per file version, as a real mirror stores it with the object.
            st = os.stat(path)
            key = (path, st.st_mtime_ns, st.st_size, mode in ("wrong", "changed-cut"))
            with LOCK:
                tag = ETAGS.get(key)
            if tag is None:
                tag = '"%s"' % hashlib.sha256(body).hexdigest()[:32]
                with LOCK:
                    ETAGS[key] = tag
            headers["ETag"] = tag
        if VALIDATORS["last_modified"]:
            mtime = os.stat(path).st_mtime + (1 if mode == "changed-cut" else 0)
            headers["Last-Modified"] = email.utils.formatdate(mtime, usegmt=True)
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        status, start = 200, 0
        if rng and rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit():
            current = headers.get("ETag") or headers.get("Last-Modified")
            if if_range is None or if_range == current:
                start = int(rng[6:-1])
                status = 206 if start < len(body) else 416
        entry = {"path": rel, "range": rng, "if_range": if_range, "status": status}
        with LOCK:
            LOG.append(entry)
            ACTIVE["now"] += 1
            ACTIVE["max"] = max(ACTIVE["max"], ACTIVE["now"])
            ACTIVE_CHANGED.notify_all()
            if HOLD["count"]:
                ACTIVE_CHANGED.wait_for(lambda: ACTIVE["now"] >= HOLD["count"], timeout=HOLD["seconds"])
        try:
            if status == 416:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(body))
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            part = body[start:]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            for k, v in headers.items():
                self.send_header(k, v)
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(body) - 1, len(body)))
            self.send_header("Content-Length", str(600 * 1024 * 1024 if mode == "huge" else len(part)))
            self.send_header("Connection", "close")
            self.end_headers()
            if mode == "huge":
                self.wfile.write(part[:1024])
            elif cut_at is not None:
                self.wfile.write(part[:cut_at])
            else:
                self.wfile.write(part)
            self.wfile.flush()
            if mode == "huge" or cut_at is not None:
                self.close_connection = True
                self.connection.shutdown(2) if hasattr(self.connection, "shutdown") else None
        finally:
            with LOCK:
                ACTIVE["now"] -= 1

    def do_POST(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with LOCK:
            if url.path == "/__fault":
                times = int(q["times"]) if "times" in q else None
                FAULTS[q["path"]] = {"mode": q["mode"], "times": times, "to": q.get("to"), "bytes": q.get("bytes")}
            elif url.path == "/__clear":
                FAULTS.clear()
            elif url.path == "/__validators":
                VALIDATORS["etag"] = q.get("etag") == "1"
                VALIDATORS["last_modified"] = q.get("last_modified") == "1"
            elif url.path == "/__hold":
                HOLD["count"], HOLD["seconds"] = int(q["count"]), float(q["seconds"])
            else:
                return self.reply(404, b"no such control endpoint\n", "text/plain")
        self.reply(200, b"ok\n", "text/plain")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/__counts":
            with LOCK:
                body = json.dumps(COUNTS).encode()
            return self.reply(200, body, "application/json")
        if url.path == "/__creds":
            with LOCK:
                body = json.dumps(CREDS).encode()
            return self.reply(200, body, "application/json")
        if url.path == "/__log":
            with LOCK:
                body = json.dumps({"requests": LOG, "max_active": ACTIVE["max"]}).encode()
            return self.reply(200, body, "application/json")
        rel = url.path.lstrip("/")
        if ".." in rel.split("/"):
            return self.reply(400, b"bad path\n", "text/plain")
        with LOCK:
            COUNTS[url.path] = COUNTS.get(url.path, 0) + 1
            CREDS.extend(f"{url.path}: {h}" for h in self.headers.keys() if h.lower() in CREDENTIAL_HEADERS)
            fault = FAULTS.get(url.path)
            mode = to = cut_at = None
            if fault is not None:
                mode, to = fault["mode"], fault["to"]
                cut_at = int(fault["bytes"]) if fault.get("bytes") else None
                if fault["times"] is not None:
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        del FAULTS[url.path]
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", to)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        if mode == "503":
            return self.reply(503, b"mirror is down for maintenance\n", "text/plain")
        for d in self.server.dirs:
            path = os.path.join(d, rel)
            if os.path.isfile(path):
                break
        else:
            return self.reply(404, b"not found\n", "text/plain")
        with open(path, "rb") as f:
            body = f.read()
        if mode in ("wrong", "changed-cut"):
            body = bytes([body[0] ^ 0xFF]) + body[1:] if body else b"x"
        artifact = not (url.path.startswith("/manifest") or url.path.endswith(".sha256"))
        if artifact and mode not in ("cut", "unframed-cut"):
            return self.artifact(url.path, path, body, mode, cut_at if mode in ("cut-at", "changed-cut") else None)
        if mode in ("cut", "unframed-cut"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if mode == "cut":
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            # An abrupt close, as when a link drops: no TLS close_notify.
            self.connection.shutdown(2) if hasattr(self.connection, "shutdown") else None
            return
        self.reply(200, body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--dir", action="append", required=True)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.dirs = args.dir
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
