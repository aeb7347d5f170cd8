"""Shared fixtures for the peer tests: a throw-away PKI and the two servers as subprocesses.

Run with the project venv (it has moto, boto3, cryptography, iam-rolesanywhere-session):

    $HYBRIDBOOT_VENV/bin/python -m pytest -q tests/peers
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import select
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
TA_ROOT_EC = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/root-ec"
TA_INT_EC = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/intermediate-ec"
TA_ROOT_RSA = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/root-rsa"
PROFILE = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/hybrid-nodes"
PROFILE_ANY_NAME = f"arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/any-session-name"
PROFILE_MAX = 3600


# ---------------------------------------------------------------------------
# PKI
# ---------------------------------------------------------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_key(kind: str):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issue(
    cn: str,
    kind: str,
    issuer: Issued | None,
    ca: bool,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    san_ip: str | None = None,
) -> Issued:
    """Issue a certificate signed with SHA-256 (self-signed when issuer is None)."""
    key = new_key(kind)
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        b = b.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH]
                + ([ExtendedKeyUsageOID.SERVER_AUTH] if san_ip else [])
            ),
            critical=False,
        )
    if san_ip:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
            critical=False,
        )
    signer = issuer.key if issuer else key
    return Issued(b.sign(signer, hashes.SHA256()), key)


@dataclass
class Pki:
    dir: Path
    root_ec: Issued
    int_ec: Issued
    leaf_ec: Issued
    leaf_ec2: Issued
    expired_ec: Issued
    root_rsa: Issued
    int_rsa: Issued
    leaf_rsa: Issued
    other_root: Issued
    other_leaf: Issued
    tls_ca: Path
    tls_cert: Path
    tls_key: Path

    def write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        return p


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.timezone.utc)
    root_ec = issue("Test Root EC", "ec", None, ca=True)
    int_ec = issue("Test Intermediate EC", "ec", root_ec, ca=True)
    root_rsa = issue("Test Root RSA", "rsa", None, ca=True)
    int_rsa = issue("Test Intermediate RSA", "rsa", root_rsa, ca=True)
    other_root = issue("Untrusted Root", "ec", None, ca=True)
    tls_root = issue("Test TLS CA", "ec", None, ca=True)
    tls = issue("127.0.0.1", "ec", tls_root, ca=False, san_ip="127.0.0.1")
    p = Pki(
        dir=d,
        root_ec=root_ec,
        int_ec=int_ec,
        leaf_ec=issue("node-ec-01", "ec", int_ec, ca=False),
        leaf_ec2=issue("node-ec-02", "ec", int_ec, ca=False),
        expired_ec=issue(
            "node-expired",
            "ec",
            int_ec,
            ca=False,
            not_before=now - dt.timedelta(days=3),
            not_after=now - dt.timedelta(days=1),
        ),
        root_rsa=root_rsa,
        int_rsa=int_rsa,
        leaf_rsa=issue("node-rsa-01", "rsa", int_rsa, ca=False),
        other_root=other_root,
        other_leaf=issue("node-ec-01", "ec", other_root, ca=False),
        tls_ca=d / "tls-ca.pem",
        tls_cert=d / "tls.pem",
        tls_key=d / "tls.key",
    )
    p.tls_ca.write_bytes(tls_root.cert_pem)
    p.tls_cert.write_bytes(tls.cert_pem)
    p.tls_key.write_bytes(tls.key_pem)
    p.write("root-ec.pem", root_ec.cert_pem)
    p.write("int-ec.pem", int_ec.cert_pem)
    p.write("root-rsa.pem", root_rsa.cert_pem)
    return p


# ---------------------------------------------------------------------------
# Subprocess peers
# ---------------------------------------------------------------------------


class Peer:
    """A server started as a subprocess that announces itself with one JSON line."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, timeout: float = 20):
        self.log = log
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,  # closing it makes --exit-on-stdin-eof servers exit
            stdout=subprocess.PIPE,
            stderr=self._logf,
            env={**os.environ, **(env or {})},
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"{args[0]} did not start; log:\n{log.read_text()}")
        self.info = json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by PID
        self.proc.wait(timeout=10)
        self._logf.close()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    d = tmp_path_factory.mktemp("moto")
    peer = Peer([str(HERE / "moto_server.py"), "--exit-on-stdin-eof"], d / "moto.log")
    sys.path.insert(0, str(HERE))
    import moto_setup

    setup = moto_setup.setup(peer.info["endpoint"], region=REGION)
    yield setup
    peer.stop()


@dataclass
class Endpoint:
    https_port: int
    http_port: int
    tls_ca: Path
    peer: Peer

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.https_port}"

    def control(self, op: str, body: dict | None = None) -> dict:
        url = f"http://127.0.0.1:{self.http_port}/_control/{op}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="session")
def endpoint(pki: Pki, moto: dict, tmp_path_factory) -> Endpoint:
    d = tmp_path_factory.mktemp("rolesanywhere")
    cfg = {
        "region": REGION,
        "trust_anchors": {
            TA_ROOT_EC: [str(pki.dir / "root-ec.pem")],
            TA_INT_EC: [str(pki.dir / "int-ec.pem")],
            TA_ROOT_RSA: [str(pki.dir / "root-rsa.pem")],
        },
        "profiles": {
            PROFILE: {"role_arns": [moto["role_arn"]], "max_duration": PROFILE_MAX},
            PROFILE_ANY_NAME: {
                "role_arns": [moto["role_arn"]],
                "max_duration": 43200,
                "require_session_name_cn": False,
            },
        },
        "sts": {"endpoint": moto["endpoint"], "access_key_id": moto["access_key_id"]},
        "tls_cert": str(pki.tls_cert),
        "tls_key": str(pki.tls_key),
    }
    (d / "endpoint.json").write_text(json.dumps(cfg))
    peer = Peer(
        [
            str(HERE / "rolesanywhere.py"),
            "--config",
            str(d / "endpoint.json"),
            "--http-port",
            "0",
            "--exit-on-stdin-eof",
        ],
        d / "rolesanywhere.log",
        # The secret goes by environment so that it never shows on a command line.
        env={"RA_STS_SECRET_ACCESS_KEY": moto["secret_access_key"]},
    )
    yield Endpoint(peer.info["https_port"], peer.info["http_port"], pki.tls_ca, peer)
    peer.stop()


@pytest.fixture(autouse=True)
def fresh_endpoint_state(request):
    """Every test starts with zero counters, no faults, no throttle and no clock offset."""
    if "endpoint" in request.fixturenames:
        request.getfixturevalue("endpoint").control("reset", {})
    yield
