#!/usr/bin/env python3
"""IAM Roles Anywhere ``CreateSession`` test endpoint (no emulator of it exists).

Written from the protocol description (docs/protocols.md §1) and independently of the
Rust client, so that the two can check each other. It verifies everything the
real service verifies about the request itself, then mints credentials through
STS AssumeRole on a moto server (so later SigV4 calls made with them are
verified by moto), or locally when no STS endpoint is configured.

Usage (run with the project venv's python, which has ``cryptography`` and ``boto3``):

    $VENV/bin/python tests/peers/rolesanywhere.py \\
        --tls-cert server.pem --tls-key server.key [--port 0] [--http-port 0] \\
        --region us-east-1 \\
        --trust-anchor arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta=ca.pem[,ca2.pem] \\
        --profile arn:aws:rolesanywhere:us-east-1:123456789012:profile/p=arn:aws:iam::123456789012:role/r \\
        [--max-duration 3600] [--no-session-name-cn] \\
        [--sts-endpoint http://127.0.0.1:<moto port> --sts-access-key-id AKIA..
         | --sts-credentials-file moto-setup.json] \\
        [--clock-offset 0] [--max-clock-skew 300] [--throttle-rps 0] [--exit-on-stdin-eof]
        [--log-file ra.log] [--issued-credentials-file issued.json]

    ``--issued-credentials-file``: every minted key pair is added to this JSON file (mode 0600,
    replaced atomically) as ``{"credentials": [{"access_key_id", "secret_access_key"}, ...]}``,
    the format of apiserver.py's ``--credentials-file``: the test API server then knows the
    sessions this endpoint issued, like EKS asks STS about them.

    The STS secret key comes from env ``RA_STS_SECRET_ACCESS_KEY``, the config file or
    ``--sts-credentials-file`` (a JSON file with ``endpoint``, ``access_key_id`` and
    ``secret_access_key``: exactly what moto_setup.py prints), never from a flag, so that
    it does not show in ``ps``.

or ``--config endpoint.json`` with the same settings (command-line flags win):

    {"region": "us-east-1",
     "trust_anchors": {"<ta arn>": ["ca.pem", ...]},
     "profiles": {"<profile arn>": {"role_arns": ["<role arn>"], "max_duration": 3600,
                  "require_session_name_cn": true, "accept_role_session_name": true}},
     "sts": {"endpoint": "http://127.0.0.1:<p>", "access_key_id": "..",
             "secret_access_key": ".."},
     "tls_cert": "server.pem", "tls_key": "server.key",
     "clock_offset": 0, "max_clock_skew": 300, "throttle_rps": 0}

Relative file names in the config are relative to the config file.

When ready it prints ONE JSON line on stdout and keeps serving:

    {"https_port": 43121, "http_port": null, "pid": 1234}

All listeners bind 127.0.0.1. ``POST /sessions`` is CreateSession. Control API (same
listeners, loopback peers only; JSON in and out):

    GET  /_control/stats     {"total","ok","failed","rejected","faulted","throttled",
                              "by_status": {"200": n, "403": n, ...}, "last_error": ".."}
    GET  /_control/last      the last CreateSession request as received (method, path,
                             query, headers, body) and its outcome (status, error)
    POST /_control/reset     zero the counters, clear faults, throttle and clock offset
                             back to the command-line values
    POST /_control/fault     {"mode": "500"|"503"|"429"|"drop"|"delay"|"newline-token", "count": N}
                             ("count": -1 or "forever": true = until recovered;
                             "delay_seconds": s for mode "delay", which then answers normally;
                             "newline-token" answers 200 with a session token that carries a
                             line break and an INI section, as a hostile or broken peer might)
    POST /_control/recover   clear the fault mode
    POST /_control/throttle  {"rps": N}  (0 = off): beyond N CreateSession calls in any
                             1 s window answer 429 ThrottlingException
    POST /_control/clock     {"offset_seconds": S}  the endpoint's clock = real time + S
                             (used for X-Amz-Date freshness, certificate validity and the
                             ``Date`` response header)

Errors look like the real service: ``{"message": ".."}`` with header
``x-amzn-ErrorType``: 403 AccessDeniedException (untrusted certificate, bad signature,
...), 400 ValidationException, 404 ResourceNotFoundException (unknown ARN),
429 ThrottlingException, 500 InternalServerException, 503 ServiceUnavailableException.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

SERVICE = "rolesanywhere"
MIN_DURATION = 900
MAX_DURATION = 43200
DEFAULT_DURATION = 3600
ALGORITHMS = {"AWS4-X509-ECDSA-SHA256": "EC", "AWS4-X509-RSA-SHA256": "RSA"}
# Headers the service insists on seeing in SignedHeaders (the chain only when sent).
REQUIRED_SIGNED = ("host", "x-amz-date", "x-amz-x509")
AUTH_RE = re.compile(
    r"^(?P<alg>AWS4-X509-[A-Z0-9]+-[A-Z0-9]+) +"
    r"Credential=(?P<cred>[^,\s]+), *"
    r"SignedHeaders=(?P<signed>[^,\s]+), *"
    r"Signature=(?P<sig>[^,\s]+)$"
)
AMZ_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")


class ApiError(Exception):
    """An error answered to the client the way the service does."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def denied(msg: str) -> ApiError:
    return ApiError(403, "AccessDeniedException", msg)


def invalid(msg: str) -> ApiError:
    return ApiError(400, "ValidationException", msg)


def not_found(msg: str) -> ApiError:
    return ApiError(404, "ResourceNotFoundException", msg)


# ---------------------------------------------------------------------------
# Pure SigV4 (X.509 variant) pieces: functions of the raw request only.
# ---------------------------------------------------------------------------


def uri_encode(s: str, keep_slash: bool = False) -> str:
    """RFC 3986 encoding as SigV4 wants it: only unreserved characters stay."""
    return urllib.parse.quote(s, safe="-_.~" + ("/" if keep_slash else ""))


def canonical_uri(raw_path: str) -> str:
    """Canonical URI for a non-S3 service: normalised, then each segment encoded again."""
    if not raw_path:
        return "/"
    segments: list[str] = []
    for seg in raw_path.split("/")[1:]:
        if seg == ".":
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    path = "/" + "/".join(segments)
    if raw_path.endswith("/") and not path.endswith("/"):
        path += "/"
    return uri_encode(path, keep_slash=True)


def canonical_query(raw_query: str) -> str:
    """Decode every name and value, re-encode per RFC 3986, sort by name then value."""
    if not raw_query:
        return ""
    pairs = []
    for part in raw_query.split("&"):
        if part == "":
            continue
        k, _, v = part.partition("=")
        pairs.append(
            (uri_encode(urllib.parse.unquote(k)), uri_encode(urllib.parse.unquote(v)))
        )
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_header_value(values: list[str]) -> str:
    """Trim each value, collapse inner whitespace runs, join repeated headers with ','."""
    return ",".join(" ".join(v.split()) for v in values)


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    signed_headers: list[str],
    body: bytes,
) -> str:
    """The canonical request; raises ApiError if a signed header is absent."""
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(value)
    lines = []
    for name in signed_headers:
        if name not in by_name:
            raise denied(f"signed header '{name}' is not present in the request")
        lines.append(f"{name}:{canonical_header_value(by_name[name])}\n")
    return "\n".join(
        [
            method,
            canonical_uri(raw_path),
            canonical_query(raw_query),
            "".join(lines),
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def string_to_sign(alg: str, amz_date: str, scope: str, creq: str) -> str:
    return "\n".join([alg, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


@dataclass
class ParsedAuth:
    algorithm: str
    serial: int
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: list[str]
    signature: bytes


def parse_authorization(value: str | None) -> ParsedAuth:
    """Parse ``Authorization``; every malformation is an AccessDenied like the service."""
    if not value:
        raise denied("missing Authorization header")
    m = AUTH_RE.match(value.strip())
    if not m:
        raise denied(
            "malformed Authorization header: want '<ALG> Credential=.., SignedHeaders=.., Signature=..'"
        )
    alg = m.group("alg")
    if alg not in ALGORITHMS:
        raise denied(f"unsupported signing algorithm '{alg}'")
    cred = m.group("cred").split("/")
    if len(cred) != 5:
        raise denied(
            "malformed Credential: want <serial>/<yyyymmdd>/<region>/rolesanywhere/aws4_request"
        )
    serial_s, date, region, service, term = cred
    if not serial_s.isdigit():
        raise denied(f"Credential serial '{serial_s}' is not a decimal number")
    if not re.fullmatch(r"\d{8}", date):
        raise denied(f"Credential date '{date}' is not yyyymmdd")
    if service != SERVICE or term != "aws4_request":
        raise denied(
            f"Credential scope must end in /{SERVICE}/aws4_request, got /{service}/{term}"
        )
    signed = m.group("signed").split(";")
    if any(h != h.lower() or not h for h in signed):
        raise denied("SignedHeaders must be lowercase header names")
    if signed != sorted(signed) or len(set(signed)) != len(signed):
        raise denied("SignedHeaders must be sorted and unique")
    sig_hex = m.group("sig")
    if not re.fullmatch(r"[0-9a-f]+", sig_hex) or len(sig_hex) % 2:
        raise denied("Signature must be lowercase hex")
    return ParsedAuth(
        alg,
        int(serial_s),
        date,
        region,
        service,
        term,
        signed,
        binascii.unhexlify(sig_hex),
    )


def decode_cert(b64: str, what: str) -> x509.Certificate:
    try:
        der = base64.b64decode(b64.strip(), validate=True)
        return x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as e:
        raise denied(f"{what} is not a base64 DER certificate: {e}") from None


def verify_signature(alg: str, cert: x509.Certificate, sts: str, sig: bytes) -> None:
    key = cert.public_key()
    want = ALGORITHMS[alg]
    try:
        if want == "EC":
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise denied(f"{alg} used with a non-EC certificate key")
            key.verify(sig, sts.encode(), ec.ECDSA(hashes.SHA256()))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise denied(f"{alg} used with a non-RSA certificate key")
            key.verify(sig, sts.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise denied(
            "signature does not match the string to sign computed from the request "
            "and the certificate's public key"
        ) from None


def check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise denied(f"{what} is not yet valid (notBefore {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ})")
    if now > cert.not_valid_after_utc:
        raise denied(f"{what} has expired (notAfter {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})")


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def verify_chain(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    now: dt.datetime,
) -> list[x509.Certificate]:
    """Walk leaf -> intermediates (from the request) -> one of the anchor CAs.

    Every link's signature and every certificate's validity is checked; returns the
    path (leaf first, anchor last).
    """
    check_validity(leaf, now, "leaf certificate")
    if is_ca(leaf):
        raise denied("the signing certificate is a CA certificate, not an end-entity certificate")
    path = [leaf]
    current = leaf
    for _ in range(len(chain) + 1):
        for anchor in anchors:
            if issued_by(current, anchor):
                check_validity(anchor, now, "trust anchor certificate")
                path.append(anchor)
                return path
        nxt = next(
            (c for c in chain if c not in path and issued_by(current, c)),
            None,
        )
        if nxt is None:
            break
        check_validity(nxt, now, f"intermediate certificate '{nxt.subject.rfc4514_string()}'")
        if not is_ca(nxt):
            raise denied(
                f"intermediate certificate '{nxt.subject.rfc4514_string()}' is not a CA"
            )
        path.append(nxt)
        current = nxt
    raise denied(
        f"certificate '{leaf.subject.rfc4514_string()}' is not trusted by the trust anchor "
        f"(no signature-verified path from issuer '{current.issuer.rfc4514_string()}'"
        f"{'' if chain else '; no X-Amz-X509-Chain was sent'})"
    )


def common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


# ---------------------------------------------------------------------------
# Configuration and state
# ---------------------------------------------------------------------------


@dataclass
class Profile:
    role_arns: list[str]
    max_duration: int = DEFAULT_DURATION
    require_session_name_cn: bool = True
    accept_role_session_name: bool = True


@dataclass
class Config:
    region: str = "us-east-1"
    trust_anchors: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    sts_endpoint: str | None = None
    sts_access_key_id: str | None = None
    sts_secret_access_key: str | None = None
    clock_offset: float = 0.0
    max_clock_skew: float = 300.0
    throttle_rps: float = 0.0
    issued_credentials_file: str | None = None


def load_pems(files: list[str]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for f in files:
        with open(f, "rb") as fh:
            out.extend(x509.load_pem_x509_certificates(fh.read()))
    if not out:
        raise SystemExit(f"rolesanywhere: no certificates in {files}")
    return out


class State:
    """Counters, fault mode, throttle and clock; shared by the handler threads."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.counts = {"total": 0, "ok": 0, "rejected": 0, "faulted": 0, "throttled": 0}
            self.by_status: dict[str, int] = {}
            self.last_error: str | None = None
            self.last: dict | None = None
            self.fault_mode: str | None = None
            self.fault_remaining = 0  # -1 = forever
            self.fault_delay = 0.0
            self.clock_offset = self.cfg.clock_offset
            self.throttle_rps = self.cfg.throttle_rps
            self.window: deque[float] = deque()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.clock_offset, dt.timezone.utc)

    def take_fault(self) -> tuple[str | None, float]:
        with self.lock:
            if self.fault_mode is None or self.fault_remaining == 0:
                return None, 0.0
            if self.fault_remaining > 0:
                self.fault_remaining -= 1
            mode = self.fault_mode
            if self.fault_remaining == 0:
                self.fault_mode = None
            return mode, self.fault_delay

    def over_rate(self) -> bool:
        with self.lock:
            if self.throttle_rps <= 0:
                return False
            t = time.monotonic()
            while self.window and t - self.window[0] >= 1.0:
                self.window.popleft()
            if len(self.window) >= self.throttle_rps:
                return True
            self.window.append(t)
            return False

    def record(self, status: int, outcome: str, error: str | None, last: dict) -> None:
        with self.lock:
            self.counts["total"] += 1
            self.counts[outcome] += 1
            self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
            if error:
                self.last_error = error
            last["status"] = status
            last["error"] = error
            self.last = last

    def stats(self) -> dict:
        with self.lock:
            d = dict(self.counts)
            d["failed"] = d["total"] - d["ok"]
            d["by_status"] = dict(self.by_status)
            d["last_error"] = self.last_error
            d["fault"] = {"mode": self.fault_mode, "remaining": self.fault_remaining}
            d["throttle_rps"] = self.throttle_rps
            d["clock_offset"] = self.clock_offset
            return d


# ---------------------------------------------------------------------------
# CreateSession
# ---------------------------------------------------------------------------


def fmt_time(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_sts_lock = threading.Lock()
_sts_clients: dict[tuple, object] = {}


def sts_client(cfg: Config):
    """One boto3 STS client per endpoint (clients are thread-safe; making one costs ~50 ms)."""
    import boto3  # imported lazily: only needed with an STS endpoint
    from botocore.config import Config as BotoConfig

    key = (cfg.sts_endpoint, cfg.region, cfg.sts_access_key_id)
    with _sts_lock:
        if key not in _sts_clients:
            _sts_clients[key] = boto3.client(
                "sts",
                endpoint_url=cfg.sts_endpoint,
                region_name=cfg.region,
                aws_access_key_id=cfg.sts_access_key_id,
                aws_secret_access_key=cfg.sts_secret_access_key,
                config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10),
            )
        return _sts_clients[key]


def mint_credentials(cfg: Config, role_arn: str, session_name: str, duration: int, now: dt.datetime) -> dict:
    """STS AssumeRole against moto, or local random credentials without an STS endpoint."""
    if not cfg.sts_endpoint:
        acct = role_arn.split(":")[4] if role_arn.count(":") >= 5 else "123456789012"
        role_name = role_arn.rsplit("/", 1)[-1]
        role_id = "AROA" + secrets.token_hex(8).upper()
        return {
            "credentials": {
                "accessKeyId": "ASIA" + secrets.token_hex(8).upper(),
                "secretAccessKey": secrets.token_urlsafe(30),
                "sessionToken": secrets.token_urlsafe(96),
                "expiration": fmt_time(now + dt.timedelta(seconds=duration)),
            },
            "assumedRoleUser": {
                "arn": f"arn:aws:sts::{acct}:assumed-role/{role_name}/{session_name}",
                "assumedRoleId": f"{role_id}:{session_name}",
            },
            "packedPolicySize": 0,
        }
    from botocore.exceptions import BotoCoreError, ClientError

    client = sts_client(cfg)
    try:
        r = client.assume_role(RoleArn=role_arn, RoleSessionName=session_name, DurationSeconds=duration)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "AccessDeniedException"):
            raise denied(f"STS AssumeRole of {role_arn} refused: {e}") from None
        raise ApiError(500, "InternalServerException", f"STS AssumeRole failed: {e}") from None
    except BotoCoreError as e:
        raise ApiError(500, "InternalServerException", f"STS endpoint {cfg.sts_endpoint} unreachable: {e}") from None
    c = r["Credentials"]
    exp = c["Expiration"]
    return {
        "credentials": {
            "accessKeyId": c["AccessKeyId"],
            "secretAccessKey": c["SecretAccessKey"],
            "sessionToken": c["SessionToken"],
            "expiration": fmt_time(exp) if isinstance(exp, dt.datetime) else str(exp),
        },
        "assumedRoleUser": {
            "arn": r["AssumedRoleUser"]["Arn"],
            "assumedRoleId": r["AssumedRoleUser"]["AssumedRoleId"],
        },
        "packedPolicySize": int(r.get("PackedPolicySize", 0) or 0),
    }


_issued_lock = threading.Lock()


def record_issued(path: str, c: dict) -> None:
    """Adds one minted key pair to the issued-credentials file (0600, atomic replace)."""
    with _issued_lock:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            doc = {"credentials": []}
        doc["credentials"].append(
            {"access_key_id": c["accessKeyId"], "secret_access_key": c["secretAccessKey"]}
        )
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)


def create_session(
    state: State,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> dict:
    """Verify one CreateSession request and return the response document (or raise ApiError)."""
    cfg = state.cfg
    hmap = {k.lower(): v for k, v in headers}
    auth = parse_authorization(hmap.get("authorization"))

    for h in REQUIRED_SIGNED:
        if h not in auth.signed_headers:
            raise denied(f"header '{h}' must be signed (SignedHeaders={';'.join(auth.signed_headers)})")
    if "x-amz-x509-chain" in hmap and "x-amz-x509-chain" not in auth.signed_headers:
        raise denied("header 'x-amz-x509-chain' is present but not signed")

    amz_date = hmap.get("x-amz-date")
    if not amz_date or not AMZ_DATE_RE.match(amz_date.strip()):
        raise denied("X-Amz-Date missing or not in YYYYMMDDTHHMMSSZ form")
    amz_date = amz_date.strip()
    try:
        req_time = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise denied(f"X-Amz-Date '{amz_date}' is not a valid time") from None
    now = state.now()
    skew = abs((now - req_time).total_seconds())
    if skew > cfg.max_clock_skew:
        raise denied(
            f"Signature expired or not yet valid: X-Amz-Date {amz_date} is {skew:.0f} s from "
            f"the server time {now:%Y%m%dT%H%M%SZ} (limit {cfg.max_clock_skew:.0f} s)"
        )
    if auth.date != amz_date[:8]:
        raise denied(f"Credential date {auth.date} does not match X-Amz-Date {amz_date}")
    if auth.region != cfg.region:
        raise denied(f"Credential region '{auth.region}' does not match the endpoint region '{cfg.region}'")

    if "x-amz-x509" not in hmap:
        raise denied("missing X-Amz-X509 header")
    leaf = decode_cert(hmap["x-amz-x509"], "X-Amz-X509")
    chain: list[x509.Certificate] = []
    if hmap.get("x-amz-x509-chain", "").strip():
        chain = [decode_cert(p, "X-Amz-X509-Chain entry") for p in hmap["x-amz-x509-chain"].split(",")]
    if auth.serial != leaf.serial_number:
        raise denied(
            f"Credential serial {auth.serial} does not match the certificate serial {leaf.serial_number}"
        )

    creq = canonical_request(method, raw_path, raw_query, headers, auth.signed_headers, body)
    scope = f"{auth.date}/{auth.region}/{SERVICE}/aws4_request"
    verify_signature(auth.algorithm, leaf, string_to_sign(auth.algorithm, amz_date, scope, creq), auth.signature)

    # Parameters: the reference client sends the ARNs as query parameters, others in the body.
    try:
        doc = json.loads(body.decode()) if body.strip() else {}
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid(f"request body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise invalid("request body must be a JSON object")
    query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
    params = {}
    for name in ("profileArn", "roleArn", "trustAnchorArn"):
        v = query.get(name) or doc.get(name)
        if not v or not isinstance(v, str):
            raise invalid(f"missing required parameter {name}")
        params[name] = v

    if params["trustAnchorArn"] not in cfg.trust_anchors:
        raise not_found(f"Trust anchor {params['trustAnchorArn']} not found")
    profile = cfg.profiles.get(params["profileArn"])
    if profile is None:
        raise not_found(f"Profile {params['profileArn']} not found")
    for name, arn in params.items():
        parts = arn.split(":")
        if name != "roleArn" and len(parts) > 3 and parts[3] != cfg.region:
            raise invalid(f"{name} {arn} is not in region {cfg.region}")

    duration = doc.get("durationSeconds", min(DEFAULT_DURATION, profile.max_duration))
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise invalid("durationSeconds must be an integer")
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise invalid(f"durationSeconds {duration} is outside {MIN_DURATION}..{MAX_DURATION}")
    if duration > profile.max_duration:
        raise invalid(f"durationSeconds {duration} exceeds the profile's maximum {profile.max_duration}")

    path = verify_chain(leaf, chain, cfg.trust_anchors[params["trustAnchorArn"]], now)

    if params["roleArn"] not in profile.role_arns:
        raise denied(f"role {params['roleArn']} is not part of profile {params['profileArn']}")
    cn = common_name(leaf)
    session_name = doc.get("roleSessionName")
    if session_name is not None:
        if not isinstance(session_name, str) or not re.fullmatch(r"[\w+=,.@-]{2,64}", session_name):
            raise invalid("roleSessionName must be 2-64 characters of [A-Za-z0-9_+=,.@-]")
        if not profile.accept_role_session_name:
            raise invalid("the profile does not accept roleSessionName")
        if profile.require_session_name_cn and session_name != cn:
            raise denied(
                f"roleSessionName '{session_name}' must equal the certificate CN '{cn}' "
                "(trust policy sts:RoleSessionName == aws:PrincipalTag/x509Subject/CN)"
            )
    else:
        session_name = format(leaf.serial_number, "x")

    creds = mint_credentials(cfg, params["roleArn"], session_name, duration, now)
    if cfg.issued_credentials_file:
        record_issued(cfg.issued_credentials_file, creds["credentials"])
    acct = params["profileArn"].split(":")[4] if params["profileArn"].count(":") >= 5 else "123456789012"
    subject_id = uuid.uuid5(
        uuid.NAMESPACE_OID,
        leaf.subject.rfc4514_string() + "|" + path[-1].subject.rfc4514_string(),
    )
    entry = dict(creds)
    entry["roleArn"] = params["roleArn"]
    entry["sourceIdentity"] = f"CN={cn}" if cn else ""
    return {
        "credentialSet": [entry],
        "subjectArn": f"arn:aws:rolesanywhere:{cfg.region}:{acct}:subject/{subject_id}",
    }


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------

FAULT_KIND = {
    "500": (500, "InternalServerException", "injected internal error"),
    "503": (503, "ServiceUnavailableException", "injected service unavailable"),
    "429": (429, "ThrottlingException", "injected throttling"),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rolesanywhere-test"
    sys_version = ""
    state: State  # set on the subclass made per process

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt: str, *args) -> None:  # stderr, never bodies
        sys.stderr.write("rolesanywhere: %s %s\n" % (self.address_string(), fmt % args))

    def date_time_string(self, timestamp=None) -> str:
        # The service's clock, offset included, so clients can detect skew from Date.
        return email.utils.formatdate(time.time() + self.state.clock_offset, usegmt=True)

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status: int, doc, kind: str | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if kind:
            self.send_header("x-amzn-ErrorType", kind)
        self.end_headers()
        self.wfile.write(data)

    def send_error_doc(self, e: ApiError) -> None:
        self.send_json(e.status, {"message": e.message}, e.kind)

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        body = self.read_body()
        raw_path, _, raw_query = self.path.partition("?")
        if raw_path.startswith("/_control/"):
            self.control(method, raw_path[len("/_control/"):], body)
        elif raw_path == "/sessions" and method == "POST":
            self.handle_create_session(method, raw_path, raw_query, body)
        else:
            self.send_error_doc(ApiError(404, "UnknownOperationException", f"no operation {method} {raw_path}"))

    def handle_create_session(self, method: str, raw_path: str, raw_query: str, body: bytes) -> None:
        st = self.state
        headers = list(self.headers.items())
        last = {
            "method": method,
            "path": raw_path,
            "query": raw_query,
            "headers": [[k, v] for k, v in headers],
            "body": body.decode("utf-8", "replace"),
        }
        if st.over_rate():
            e = ApiError(429, "ThrottlingException", "Rate exceeded")
            st.record(429, "throttled", e.message, last)
            return self.send_error_doc(e)
        mode, delay = st.take_fault()
        if mode == "drop":
            st.record(0, "faulted", "injected connection drop", last)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode in FAULT_KIND:
            status, kind, msg = FAULT_KIND[mode]
            st.record(status, "faulted", msg, last)
            return self.send_error_doc(ApiError(status, kind, msg))
        if mode == "delay":
            time.sleep(delay)
        try:
            doc = create_session(st, method, raw_path, raw_query, headers, body)
            if mode == "newline-token":
                creds = doc["credentialSet"][0]["credentials"]
                creds["sessionToken"] += "\n[evil]\ncredential_process = /bin/sh -c 'id > /tmp/pwned'"
        except ApiError as e:
            self.log_message("CreateSession rejected %d %s: %s", e.status, e.kind, e.message)
            st.record(e.status, "rejected", f"{e.kind}: {e.message}", last)
            return self.send_error_doc(e)
        except Exception as e:  # a bug here must show as a 500, not a hang
            self.log_message("CreateSession internal error: %r", e)
            st.record(500, "rejected", f"internal: {e!r}", last)
            return self.send_error_doc(ApiError(500, "InternalServerException", repr(e)))
        st.record(200, "ok", None, last)
        self.send_json(200, doc)

    def control(self, method: str, op: str, body: bytes) -> None:
        st = self.state
        if self.client_address[0] not in ("127.0.0.1", "::1"):
            return self.send_error_doc(ApiError(403, "AccessDeniedException", "control API is loopback only"))
        try:
            args = json.loads(body) if body.strip() else {}
        except ValueError:
            return self.send_error_doc(invalid("control body must be JSON"))
        if method == "GET" and op == "stats":
            return self.send_json(200, st.stats())
        if method == "GET" and op == "last":
            with st.lock:
                return self.send_json(200, st.last or {})
        if method != "POST":
            return self.send_error_doc(not_found(f"no control operation {method} {op}"))
        if op == "reset":
            st.reset()
        elif op == "fault":
            mode = str(args.get("mode", ""))
            if mode not in ("500", "503", "429", "drop", "delay", "newline-token"):
                return self.send_error_doc(
                    invalid("mode must be one of 500, 503, 429, drop, delay, newline-token"))
            count = -1 if args.get("forever") else int(args.get("count", 1))
            with st.lock:
                st.fault_mode = mode
                st.fault_remaining = count
                st.fault_delay = float(args.get("delay_seconds", 0))
        elif op == "recover":
            with st.lock:
                st.fault_mode = None
                st.fault_remaining = 0
        elif op == "throttle":
            with st.lock:
                st.throttle_rps = float(args.get("rps", 0))
                st.window.clear()
        elif op == "clock":
            with st.lock:
                st.clock_offset = float(args.get("offset_seconds", 0))
        else:
            return self.send_error_doc(not_found(f"no control operation {op}"))
        self.send_json(200, st.stats())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False


class TLSServer(Server):
    """Handshakes happen in the per-connection thread, so one slow client blocks no one."""

    def __init__(self, addr, handler, ctx: ssl.SSLContext):
        self.ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.settimeout(30)
            request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            sys.stderr.write(f"rolesanywhere: TLS handshake with {client_address[0]} failed: {e}\n")
            return
        super().finish_request(request, client_address)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def split_assign(s: str, flag: str) -> tuple[str, list[str]]:
    # ARNs contain ':' and '/', never '='.
    if "=" not in s:
        raise SystemExit(f"rolesanywhere: {flag} wants ARN=VALUE[,VALUE], got '{s}'")
    k, _, v = s.partition("=")
    return k, [x for x in v.split(",") if x]


def build_config(a: argparse.Namespace) -> tuple[Config, str | None, str | None]:
    raw: dict = {}
    base = "."
    if a.config:
        with open(a.config) as fh:
            raw = json.load(fh)
        base = os.path.dirname(os.path.abspath(a.config))

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    cfg = Config()
    cfg.region = a.region or raw.get("region", "us-east-1")
    for arn, files in (raw.get("trust_anchors") or {}).items():
        files = files if isinstance(files, list) else [files]
        cfg.trust_anchors[arn] = load_pems([rel(f) for f in files])
    for s in a.trust_anchor or []:
        arn, files = split_assign(s, "--trust-anchor")
        cfg.trust_anchors[arn] = load_pems(files)
    for arn, p in (raw.get("profiles") or {}).items():
        cfg.profiles[arn] = Profile(
            role_arns=list(p.get("role_arns", [])),
            max_duration=int(p.get("max_duration", DEFAULT_DURATION)),
            require_session_name_cn=bool(p.get("require_session_name_cn", True)),
            accept_role_session_name=bool(p.get("accept_role_session_name", True)),
        )
    for s in a.profile or []:
        arn, roles = split_assign(s, "--profile")
        cfg.profiles[arn] = Profile(
            role_arns=roles,
            max_duration=a.max_duration or DEFAULT_DURATION,
            require_session_name_cn=not a.no_session_name_cn,
        )
    sts = dict(raw.get("sts") or {})
    if a.sts_credentials_file:
        with open(a.sts_credentials_file) as fh:
            sts.update({k: v for k, v in json.load(fh).items() if k in ("endpoint", "access_key_id", "secret_access_key")})
    cfg.sts_endpoint = a.sts_endpoint or sts.get("endpoint")
    cfg.sts_access_key_id = a.sts_access_key_id or sts.get("access_key_id")
    cfg.sts_secret_access_key = os.environ.get("RA_STS_SECRET_ACCESS_KEY") or sts.get("secret_access_key")
    if cfg.sts_endpoint and not (cfg.sts_access_key_id and cfg.sts_secret_access_key):
        raise SystemExit(
            "rolesanywhere: --sts-endpoint needs --sts-access-key-id and RA_STS_SECRET_ACCESS_KEY "
            "(or sts.access_key_id / sts.secret_access_key in the config)"
        )
    cfg.clock_offset = a.clock_offset if a.clock_offset is not None else float(raw.get("clock_offset", 0))
    cfg.max_clock_skew = a.max_clock_skew if a.max_clock_skew is not None else float(raw.get("max_clock_skew", 300))
    cfg.throttle_rps = a.throttle_rps if a.throttle_rps is not None else float(raw.get("throttle_rps", 0))
    cfg.issued_credentials_file = getattr(a, "issued_credentials_file", None)
    if not cfg.trust_anchors or not cfg.profiles:
        raise SystemExit("rolesanywhere: configure at least one trust anchor and one profile")
    cert = a.tls_cert or (rel(raw["tls_cert"]) if raw.get("tls_cert") else None)
    key = a.tls_key or (rel(raw["tls_key"]) if raw.get("tls_key") else None)
    return cfg, cert, key


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="IAM Roles Anywhere CreateSession test endpoint")
    p.add_argument("--config")
    p.add_argument("--tls-cert", help="server certificate PEM (chain allowed)")
    p.add_argument("--tls-key", help="server private key PEM")
    p.add_argument("--port", type=int, default=0, help="HTTPS port on 127.0.0.1 (0 = free port)")
    p.add_argument("--http-port", type=int, default=None, help="also serve plain HTTP on this port (0 = free)")
    p.add_argument("--region")
    p.add_argument("--trust-anchor", action="append", metavar="ARN=CA.pem[,CA2.pem]")
    p.add_argument("--profile", action="append", metavar="ARN=ROLE_ARN[,ROLE_ARN]")
    p.add_argument("--max-duration", type=int, help="profile maximum session duration (s)")
    p.add_argument("--no-session-name-cn", action="store_true", help="do not require roleSessionName == CN")
    p.add_argument("--sts-endpoint")
    p.add_argument("--sts-access-key-id")
    p.add_argument("--sts-credentials-file", help="JSON with endpoint, access_key_id, secret_access_key (moto_setup.py output)")
    p.add_argument("--clock-offset", type=float)
    p.add_argument("--max-clock-skew", type=float)
    p.add_argument("--throttle-rps", type=float)
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent died)")
    p.add_argument("--log-file", help="append the request log here instead of stderr")
    p.add_argument("--issued-credentials-file", help="add every minted key pair here (apiserver.py's --credentials-file format)")
    a = p.parse_args(argv)
    if a.log_file:
        # A parent that pipes stderr and never reads it would stall us once the pipe fills.
        sys.stderr = open(a.log_file, "a", buffering=1)

    cfg, cert, key = build_config(a)
    state = State(cfg)
    handler = type("BoundHandler", (Handler,), {"state": state})

    servers: list[http.server.HTTPServer] = []
    https_port = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        srv = TLSServer(("127.0.0.1", a.port), handler, ctx)
        https_port = srv.server_address[1]
        servers.append(srv)
    elif a.http_port is None:
        raise SystemExit("rolesanywhere: give --tls-cert/--tls-key (https) and/or --http-port")
    http_port = None
    if a.http_port is not None:
        srv = Server(("127.0.0.1", a.http_port), handler)
        http_port = srv.server_address[1]
        servers.append(srv)

    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps({"https_port": https_port, "http_port": http_port, "pid": os.getpid()}), flush=True)

    if a.exit_on_stdin_eof:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
