#!/usr/bin/env python3
"""A tiny HTTPS stand-in for an EKS API server: answers ``GET /version`` with 200 only for a
valid EKS bearer token, 401 otherwise, and ``POST
/apis/authentication.k8s.io/v1/selfsubjectreviews`` (201, the user ``aws:<access key id>``) on
the same terms. It verifies the token independently of hybridboot:

1. ``Authorization: Bearer k8s-aws-v1.<base64url of a presigned URL>``, at most 4096 bytes;
2. the URL follows aws-iam-authenticator's rules (docs/protocols.md §3): https, host
   ``sts.<region>.amazonaws.com``, path ``/``, only known query keys,
   ``Action=GetCallerIdentity``, ``Version=2011-06-15``, signed headers exactly
   ``host;x-k8s-aws-id``, ``X-Amz-Expires`` in 0..900, signed within the last 15 minutes and
   not in the future, credential scope ``<date>/<region>/sts/aws4_request``;
3. the SigV4 query signature is recomputed with **botocore** (``SigV4QueryAuth``) from the
   secret key of the access key id, looked up in ``--credentials-file`` (re-read on every
   request, so a test can add keys), with ``x-k8s-aws-id: --cluster-name``.

Usage:

    $VENV/bin/python tests/peers/apiserver.py --port 0 --tls-cert cert.pem --tls-key key.pem \\
        --cluster-name hybrid-test --region us-east-1 --credentials-file creds.json \\
        [--exit-on-stdin-eof] [--log-file F]

``creds.json``: ``{"credentials": [{"access_key_id": "...", "secret_access_key": "..."}]}``
(a moto_setup.py output document, with top-level ``access_key_id``/``secret_access_key``, is
accepted too). Prints ONE JSON line when ready: ``{"port": P, "pid": N}``.

``GET /_control/stats`` gives ``{"ok": n, "rejected": n, "last_error": "...",
"last_access_key_id": "..."}`` (no token needed; loopback only).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hmac
import json
import os
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PREFIX = "k8s-aws-v1."
ALLOWED_KEYS = {
    "action", "version", "x-amz-algorithm", "x-amz-credential", "x-amz-date",
    "x-amz-expires", "x-amz-security-token", "x-amz-signature", "x-amz-signedheaders",
}


class Rejected(Exception):
    pass


def load_secrets(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out = {}
    for c in doc.get("credentials", []):
        out[c["access_key_id"]] = c["secret_access_key"]
    if "access_key_id" in doc and "secret_access_key" in doc:
        out[doc["access_key_id"]] = doc["secret_access_key"]
    return out


def verify(token: str, cluster: str, region: str, secrets: dict[str, str],
           now: datetime.datetime) -> str:
    """Returns the access key id of a valid token, raises Rejected otherwise."""
    if len(token) > 4096:
        raise Rejected("token longer than 4096 bytes")
    if not token.startswith(PREFIX):
        raise Rejected("no k8s-aws-v1. prefix")
    b64 = token[len(PREFIX):]
    if "=" in b64:
        raise Rejected("padded base64")
    try:
        url = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()
    except Exception as e:  # noqa: BLE001
        raise Rejected(f"not base64url: {e}") from None
    u = urllib.parse.urlsplit(url)
    if u.scheme != "https":
        raise Rejected("not https")
    if u.hostname != f"sts.{region}.amazonaws.com" or u.port is not None:
        raise Rejected(f"unexpected STS host {u.netloc}")
    if u.path != "/":
        raise Rejected("path is not /")
    pairs = urllib.parse.parse_qsl(u.query, keep_blank_values=True, strict_parsing=True)
    q = {}
    for k, v in pairs:
        if k.lower() not in ALLOWED_KEYS:
            raise Rejected(f"unknown query key {k}")
        if k in q:
            raise Rejected(f"repeated query key {k}")
        q[k] = v
    if q.get("Action") != "GetCallerIdentity" or q.get("Version") != "2011-06-15":
        raise Rejected("not GetCallerIdentity 2011-06-15")
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise Rejected("algorithm")
    signed = q.get("X-Amz-SignedHeaders", "").split(";")
    if sorted(signed) != ["host", "x-k8s-aws-id"]:
        raise Rejected(f"signed headers {signed}")
    try:
        expires = int(q["X-Amz-Expires"])
        date = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except (KeyError, ValueError):
        raise Rejected("bad X-Amz-Expires or X-Amz-Date") from None
    if not 0 <= expires <= 900:
        raise Rejected("X-Amz-Expires outside 0..900")
    age = (now - date).total_seconds()
    if age > 15 * 60 or age < -300:
        raise Rejected(f"token signed {age:.0f} s ago")
    cred = q.get("X-Amz-Credential", "").split("/")
    if len(cred) != 5 or cred[2:] != [region, "sts", "aws4_request"] or \
            cred[1] != q["X-Amz-Date"][:8]:
        raise Rejected("credential scope")
    akid = cred[0]
    secret = secrets.get(akid)
    if secret is None:
        raise Rejected(f"unknown access key id {akid}")

    # Recompute the signature with botocore from everything but the signature itself.
    token_param = q.get("X-Amz-Security-Token")
    auth = SigV4QueryAuth(Credentials(akid, secret, token_param), "sts", region, expires=expires)
    base_params = {"Action": q["Action"], "Version": q["Version"]}
    req = AWSRequest(method="GET", url=f"https://{u.hostname}/", params=base_params,
                     headers={"x-k8s-aws-id": cluster})
    req.context["timestamp"] = q["X-Amz-Date"]
    # What SigV4QueryAuth.add_auth does, with the token's own timestamp instead of now.
    auth._modify_request_before_signing(req)  # adds the X-Amz-* query parameters
    canonical = auth.canonical_request(req)
    expected = auth.signature(auth.string_to_sign(req, canonical), req)
    if not hmac.compare_digest(expected, q.get("X-Amz-Signature", "")):
        raise Rejected("signature mismatch (wrong secret, cluster name or tampered URL)")
    return akid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--cluster-name", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--credentials-file", required=True)
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    p.add_argument("--log-file")
    a = p.parse_args()
    log = open(a.log_file, "a", encoding="utf-8") if a.log_file else sys.stderr
    stats = {"ok": 0, "rejected": 0, "last_error": None, "last_access_key_id": None}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # noqa: D401
            log.write("%s\n" % (fmt % args))
            log.flush()

        def _send(self, code: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authenticate(self):
            """The access key id of a valid token, or None after answering 401."""
            authz = self.headers.get("Authorization", "")
            try:
                if not authz.startswith("Bearer "):
                    raise Rejected("no bearer token")
                akid = verify(authz[len("Bearer "):].strip(), a.cluster_name, a.region,
                              load_secrets(a.credentials_file),
                              datetime.datetime.now(datetime.timezone.utc))
            except Rejected as e:
                with lock:
                    stats["rejected"] += 1
                    stats["last_error"] = str(e)
                log.write(f"401: {e}\n")
                log.flush()
                self._send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "message": "Unauthorized", "reason": "Unauthorized",
                                 "code": 401})
                return None
            with lock:
                stats["ok"] += 1
                stats["last_access_key_id"] = akid
            return akid

        def do_GET(self):  # noqa: N802
            if self.path == "/_control/stats":
                with lock:
                    return self._send(200, dict(stats))
            if self._authenticate() is None:
                return None
            if self.path == "/version":
                return self._send(200, {"major": "1", "minor": "31",
                                        "gitVersion": "v1.31.0-hybridboot-test",
                                        "platform": "linux/amd64"})
            return self._send(404, {"kind": "Status", "code": 404, "message": "not found"})

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length", "0") or 0)
            body = self.rfile.read(length) if length else b""
            akid = self._authenticate()
            if akid is None:
                return None
            if self.path == "/apis/authentication.k8s.io/v1/selfsubjectreviews":
                try:
                    doc = json.loads(body or b"{}")
                except ValueError:
                    doc = {}
                if doc.get("kind") != "SelfSubjectReview":
                    return self._send(400, {"kind": "Status", "code": 400,
                                            "message": "expected a SelfSubjectReview"})
                return self._send(201, {
                    "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                    "status": {"userInfo": {"username": f"aws:{akid}",
                                            "groups": ["system:authenticated"]}}})
            return self._send(404, {"kind": "Status", "code": 404, "message": "not found"})

    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls_cert, a.tls_key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(json.dumps({"port": srv.server_address[1], "pid": os.getpid()}), flush=True)
    if a.exit_on_stdin_eof:
        def watch():
            sys.stdin.read()
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
