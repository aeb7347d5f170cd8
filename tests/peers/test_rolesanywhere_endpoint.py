"""Prove the Roles Anywhere test endpoint right with an independent client.

The client is PyPI ``iam-rolesanywhere-session`` (its own SigV4-X509 signer); the
credentials it gets are then checked by moto with signature checking on. Tampered
requests are built by signing with that library and changing one thing afterwards, and
every rejection is checked for the reason, so each check is shown to be the one that fired.

    $HYBRIDBOOT_VENV/bin/python -m pytest -q tests/peers
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import json
import re
import ssl
import time
import urllib.parse

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from iam_rolesanywhere_session import IAMRolesAnywhereSession
from iam_rolesanywhere_session.exceptions import CredentialsRetrievalError
from iam_rolesanywhere_session.iam_rolesanywhere_session import IAMRolesAnywhereSigner

from conftest import (
    PROFILE,
    PROFILE_ANY_NAME,
    PROFILE_MAX,
    REGION,
    TA_INT_EC,
    TA_ROOT_EC,
    TA_ROOT_RSA,
    Issued,
)

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def ra_session(endpoint, leaf: Issued, chain: list[Issued] | None = None, **kw) -> IAMRolesAnywhereSession:
    args = dict(
        profile_arn=PROFILE,
        role_arn=kw.pop("role_arn"),
        trust_anchor_arn=TA_INT_EC,
        certificate=leaf.cert_pem,
        private_key=leaf.key_pem,
        certificate_chain=b"".join(c.cert_pem for c in chain) if chain else None,
        region=REGION,
        endpoint=endpoint.host,
        verify=str(endpoint.tls_ca),
    )
    args.update(kw)
    return IAMRolesAnywhereSession(**args)


def fetch(session: IAMRolesAnywhereSession):
    return session.get_refreshable_credentials().get_frozen_credentials()


def sign(
    endpoint,
    cert: Issued,
    key: Issued | None = None,
    chain: list[Issued] | None = None,
    body: dict | None = None,
    query: str = "",
    region: str = REGION,
    signer_cls=IAMRolesAnywhereSigner,
    http_port: bool = False,
) -> tuple[dict, bytes, str]:
    """Sign like the library does; returns (headers, body, path) ready to send or tamper."""
    signer = signer_cls(
        certificate=cert.cert_pem,
        private_key=(key or cert).key_pem,
        certificate_chain=b"".join(c.cert_pem for c in chain) if chain else None,
        region=region,
    )
    port = endpoint.http_port if http_port else endpoint.https_port
    scheme = "http" if http_port else "https"
    path = "/sessions" + (f"?{query}" if query else "")
    data = json.dumps(body or {}).encode()
    req = AWSRequest(method="POST", url=f"{scheme}://127.0.0.1:{port}{path}", data=data)
    signer.add_auth(req)
    return dict(req.headers.items()), data, path


def send(endpoint, headers: dict, body: bytes, path: str = "/sessions", http_port: bool = False):
    """POST raw bytes; returns (status, headers, parsed JSON)."""
    if http_port:
        conn = http.client.HTTPConnection("127.0.0.1", endpoint.http_port, timeout=10)
    else:
        ctx = ssl.create_default_context(cafile=str(endpoint.tls_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", endpoint.https_port, context=ctx, timeout=10)
    try:
        h = {k: v for k, v in headers.items() if k.lower() not in ("content-length",)}
        conn.request("POST", path, body=body, headers=h)
        r = conn.getresponse()
        raw = r.read()
        return r.status, r.headers, json.loads(raw) if raw else None
    finally:
        conn.close()


def body_for(moto, ta=TA_INT_EC, profile=PROFILE, **extra) -> dict:
    b = {"durationSeconds": 900, "profileArn": profile, "roleArn": moto["role_arn"], "trustAnchorArn": ta}
    b.update(extra)
    return b


def assert_error(result, status: int, kind: str, fragment: str) -> None:
    st, headers, doc = result
    assert st == status, (st, doc)
    assert headers["x-amzn-ErrorType"] == kind
    assert set(doc) == {"message"}
    assert fragment in doc["message"], doc["message"]


def moto_client(service: str, moto: dict, creds):
    return boto3.client(
        service,
        endpoint_url=moto["endpoint"],
        region_name=REGION,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
    )


# ---------------------------------------------------------------------------
# Accepted requests; the credentials are real to moto
# ---------------------------------------------------------------------------


def test_ec_leaf_under_intermediate_anchor_gets_working_credentials(endpoint, moto, pki):
    creds = fetch(ra_session(endpoint, pki.leaf_ec, role_arn=moto["role_arn"], role_session_name="node-ec-01"))
    ident = moto_client("sts", moto, creds).get_caller_identity()
    assert ident["Arn"] == f"arn:aws:sts::{moto['account_id']}:assumed-role/hybrid-node/node-ec-01"
    # EKS DescribeCluster is a signed GET: this only passes with moto_server.py's patch.
    cluster = moto_client("eks", moto, creds).describe_cluster(name=moto["cluster"]["name"])["cluster"]
    assert cluster["status"] == "ACTIVE"
    stats = endpoint.control("stats")
    assert (stats["ok"], stats["failed"], stats["total"]) == (1, 0, 1)


def test_moto_checks_signatures_of_minted_credentials(endpoint, moto, pki):
    creds = fetch(ra_session(endpoint, pki.leaf_ec, role_arn=moto["role_arn"]))
    bad = boto3.client(
        "sts",
        endpoint_url=moto["endpoint"],
        region_name=REGION,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key[:-1] + ("A" if creds.secret_key[-1] != "A" else "B"),
        aws_session_token=creds.token,
    )
    with pytest.raises(ClientError) as e:
        bad.get_caller_identity()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_rsa_leaf_with_chain_to_root_anchor(endpoint, moto, pki):
    session = ra_session(
        endpoint,
        pki.leaf_rsa,
        chain=[pki.int_rsa],
        role_arn=moto["role_arn"],
        trust_anchor_arn=TA_ROOT_RSA,
    )
    assert session._request_signer.algorithm == "AWS4-X509-RSA-SHA256"
    creds = fetch(session)
    ident = moto_client("sts", moto, creds).get_caller_identity()
    # No roleSessionName: the session is named after the serial in hex, like the service.
    assert ident["Arn"].endswith("/hybrid-node/" + format(pki.leaf_rsa.cert.serial_number, "x"))


def test_response_shape_duration_and_date_header(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto, durationSeconds=1800))
    before = time.time()
    status, rh, doc = send(endpoint, headers, body, path)
    assert status == 200, doc
    assert set(doc) == {"credentialSet", "subjectArn"}
    assert doc["subjectArn"].startswith(f"arn:aws:rolesanywhere:{REGION}:{moto['account_id']}:subject/")
    (entry,) = doc["credentialSet"]
    assert entry["roleArn"] == moto["role_arn"]
    assert set(entry["credentials"]) == {"accessKeyId", "secretAccessKey", "sessionToken", "expiration"}
    assert set(entry["assumedRoleUser"]) == {"arn", "assumedRoleId"}
    assert isinstance(entry["packedPolicySize"], int)
    exp = entry["credentials"]["expiration"]
    assert ISO_Z.match(exp), exp
    exp_t = dt.datetime.strptime(exp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    assert abs(exp_t - (before + 1800)) < 60
    date = email.utils.parsedate_to_datetime(rh["Date"]).timestamp()
    assert abs(date - before) < 30
    assert rh["Content-Type"] == "application/json"


def test_arns_as_query_parameters(endpoint, moto, pki):
    """The reference client sends the ARNs in the query string, RFC 3986-encoded."""
    q = urllib.parse.urlencode(
        {"profileArn": PROFILE, "roleArn": moto["role_arn"], "trustAnchorArn": TA_INT_EC},
        quote_via=urllib.parse.quote,
        safe="",
    )
    headers, body, path = sign(endpoint, pki.leaf_ec, body={"durationSeconds": 900}, query=q)
    status, _, doc = send(endpoint, headers, body, path)
    assert status == 200, doc
    last = endpoint.control("last")
    assert last["query"] == q and last["status"] == 200


def test_query_must_be_canonically_encoded(endpoint, moto, pki):
    """A client that signs ':' and '/' unencoded gets a signature mismatch, as with AWS."""
    q = f"profileArn={PROFILE}&roleArn={moto['role_arn']}&trustAnchorArn={TA_INT_EC}"
    headers, body, path = sign(endpoint, pki.leaf_ec, body={"durationSeconds": 900}, query=q)
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "signature does not match")


def test_header_values_are_trimmed_and_collapsed(endpoint, moto, pki):
    req_body = json.dumps(body_for(moto)).encode()
    signer = IAMRolesAnywhereSigner(certificate=pki.leaf_ec.cert_pem, private_key=pki.leaf_ec.key_pem, region=REGION)
    req = AWSRequest(
        method="POST",
        url=f"https://127.0.0.1:{endpoint.https_port}/sessions",
        data=req_body,
        headers={"X-Node-Note": "  first   second \t third  "},
    )
    signer.add_auth(req)
    assert "x-node-note" in req.headers["Authorization"]
    status, _, doc = send(endpoint, dict(req.headers.items()), req_body)
    assert status == 200, doc


def test_plain_http_listener(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto), http_port=True)
    status, _, doc = send(endpoint, headers, body, path, http_port=True)
    assert status == 200, doc


def test_session_name_must_equal_cn_unless_profile_allows(endpoint, moto, pki):
    with pytest.raises(CredentialsRetrievalError) as e:
        fetch(ra_session(endpoint, pki.leaf_ec, role_arn=moto["role_arn"], role_session_name="someone-else"))
    assert e.value.status_code == 403 and "must equal the certificate CN 'node-ec-01'" in e.value.message
    creds = fetch(
        ra_session(
            endpoint,
            pki.leaf_ec,
            role_arn=moto["role_arn"],
            role_session_name="someone-else",
            profile_arn=PROFILE_ANY_NAME,
        )
    )
    assert moto_client("sts", moto, creds).get_caller_identity()["Arn"].endswith("/someone-else")


# ---------------------------------------------------------------------------
# Rejected requests
# ---------------------------------------------------------------------------


def test_modified_body_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    tampered = body.replace(b'"durationSeconds": 900', b'"durationSeconds": 901')
    assert tampered != body
    assert_error(send(endpoint, headers, tampered, path), 403, "AccessDeniedException", "signature does not match")
    # The untouched request still passes: the tampering alone made the difference.
    assert send(endpoint, headers, body, path)[0] == 200


def test_modified_signature_byte_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_rsa, chain=[pki.int_rsa], body=body_for(moto, ta=TA_ROOT_RSA))
    sig = headers["Authorization"].rsplit("Signature=", 1)[1]
    flipped = sig[:20] + ("0" if sig[20] != "0" else "1") + sig[21:]
    bad = dict(headers, Authorization=headers["Authorization"].replace(sig, flipped))
    assert_error(send(endpoint, bad, body, path), 403, "AccessDeniedException", "signature does not match")
    assert send(endpoint, headers, body, path)[0] == 200


def test_certificate_of_another_key_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, key=pki.leaf_ec2, body=body_for(moto))
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "signature does not match")


def test_serial_mismatch_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    serial = str(pki.leaf_ec.cert.serial_number)
    assert f"Credential={serial}/" in headers["Authorization"]
    bad = dict(headers, Authorization=headers["Authorization"].replace(f"Credential={serial}/", f"Credential={int(serial) + 1}/"))
    assert_error(send(endpoint, bad, body, path), 403, "AccessDeniedException", "does not match the certificate serial")


def test_untrusted_issuer_is_rejected(endpoint, moto, pki):
    # Same CN as the good leaf, and the trusted intermediate sent along: still no path.
    headers, body, path = sign(endpoint, pki.other_leaf, chain=[pki.int_ec], body=body_for(moto, ta=TA_ROOT_EC))
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "is not trusted")


def test_expired_leaf_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.expired_ec, body=body_for(moto))
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "leaf certificate has expired")


def test_ca_certificate_as_signer_is_rejected(endpoint, moto, pki):
    # The intermediate chains to the root anchor fine, but it is a CA, not an end entity.
    headers, body, path = sign(endpoint, pki.int_ec, body=body_for(moto, ta=TA_ROOT_EC))
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "is a CA certificate")


def test_stale_date_is_rejected_and_date_header_shows_server_clock(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    endpoint.control("clock", {"offset_seconds": 400})
    t0 = time.time()
    st, rh, doc = send(endpoint, headers, body, path)
    assert_error((st, rh, doc), 403, "AccessDeniedException", "Signature expired")
    assert abs(email.utils.parsedate_to_datetime(rh["Date"]).timestamp() - (t0 + 400)) < 30
    # Within the 5 minute window the same request passes.
    endpoint.control("clock", {"offset_seconds": -200})
    assert send(endpoint, headers, body, path)[0] == 200


def test_chain_needed_when_anchor_is_root(endpoint, moto, pki):
    with pytest.raises(CredentialsRetrievalError) as e:
        fetch(ra_session(endpoint, pki.leaf_ec, role_arn=moto["role_arn"], trust_anchor_arn=TA_ROOT_EC))
    assert e.value.status_code == 403 and "no X-Amz-X509-Chain was sent" in e.value.message
    creds = fetch(
        ra_session(endpoint, pki.leaf_ec, chain=[pki.int_ec], role_arn=moto["role_arn"], trust_anchor_arn=TA_ROOT_EC)
    )
    assert moto_client("sts", moto, creds).get_caller_identity()["Account"] == moto["account_id"]


@pytest.mark.parametrize(
    "header,fragment",
    [
        ("x-amz-x509-chain", "present but not signed"),
        ("x-amz-x509", "'x-amz-x509' must be signed"),
        ("x-amz-date", "'x-amz-date' must be signed"),
        ("host", "'host' must be signed"),
    ],
)
def test_unsigned_required_header_is_rejected(endpoint, moto, pki, header, fragment):
    class Unsigned(IAMRolesAnywhereSigner):
        def headers_to_sign(self, request):
            h = super().headers_to_sign(request)
            del h[header]
            return h

    headers, body, path = sign(
        endpoint, pki.leaf_ec, chain=[pki.int_ec], body=body_for(moto, ta=TA_ROOT_EC), signer_cls=Unsigned
    )
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert header not in signed and header.title() in headers
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", fragment)


def test_missing_certificate_header_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    del headers["X-Amz-X509"]
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "missing X-Amz-X509")


def test_wrong_region_is_rejected(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto), region="eu-west-1")
    assert_error(send(endpoint, headers, body, path), 403, "AccessDeniedException", "region 'eu-west-1'")


def test_unknown_arns_and_validation(endpoint, moto, pki):
    def call(**overrides):
        b = body_for(moto)
        b.update(overrides)
        headers, body, path = sign(endpoint, pki.leaf_ec, body=b)
        return send(endpoint, headers, body, path)

    ta = TA_INT_EC.replace("intermediate-ec", "nope")
    assert_error(call(trustAnchorArn=ta), 404, "ResourceNotFoundException", "Trust anchor")
    assert_error(call(profileArn=PROFILE + "x"), 404, "ResourceNotFoundException", "Profile")
    assert_error(call(roleArn=moto["role_arn"] + "x"), 403, "AccessDeniedException", "not part of profile")
    assert_error(call(durationSeconds=PROFILE_MAX + 1), 400, "ValidationException", "exceeds the profile")
    assert_error(call(durationSeconds=600), 400, "ValidationException", "outside")
    assert_error(call(roleArn=None), 400, "ValidationException", "roleArn")
    stats = endpoint.control("stats")
    assert stats["ok"] == 0 and stats["rejected"] == 6
    assert stats["by_status"] == {"404": 2, "403": 1, "400": 3}


def test_raw_r_s_ecdsa_signature_is_rejected(endpoint, moto, pki):
    """ECDSA signatures must be DER; raw r||s (what TPMs return) must not pass."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    sig = headers["Authorization"].rsplit("Signature=", 1)[1]
    r, s = decode_dss_signature(bytes.fromhex(sig))
    raw = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    bad = dict(headers, Authorization=headers["Authorization"].replace(sig, raw))
    assert_error(send(endpoint, bad, body, path), 403, "AccessDeniedException", "signature does not match")


# ---------------------------------------------------------------------------
# Control hooks
# ---------------------------------------------------------------------------


def test_fault_count_then_recovery(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    endpoint.control("fault", {"mode": "503", "count": 2})
    for _ in range(2):
        assert_error(send(endpoint, headers, body, path), 503, "ServiceUnavailableException", "injected")
    assert send(endpoint, headers, body, path)[0] == 200
    stats = endpoint.control("stats")
    assert (stats["faulted"], stats["ok"], stats["failed"]) == (2, 1, 2)


def test_fault_forever_until_recover(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    endpoint.control("fault", {"mode": "500", "forever": True})
    for _ in range(3):
        assert_error(send(endpoint, headers, body, path), 500, "InternalServerException", "injected")
    endpoint.control("fault", {"mode": "429", "count": 1})
    assert_error(send(endpoint, headers, body, path), 429, "ThrottlingException", "injected")
    endpoint.control("fault", {"mode": "500", "forever": True})
    endpoint.control("recover", {})
    assert send(endpoint, headers, body, path)[0] == 200


def test_drop_connection(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    endpoint.control("fault", {"mode": "drop", "count": 1})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        send(endpoint, headers, body, path)
    assert send(endpoint, headers, body, path)[0] == 200
    assert endpoint.control("stats")["faulted"] == 1


def test_delay_fault(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    endpoint.control("fault", {"mode": "delay", "count": 1, "delay_seconds": 0.6})
    t0 = time.monotonic()
    assert send(endpoint, headers, body, path)[0] == 200
    assert time.monotonic() - t0 >= 0.6


def test_throttle(endpoint, moto, pki):
    headers, body, path = sign(endpoint, pki.leaf_ec, body=body_for(moto))
    # Rejected calls count against the rate too; they answer in milliseconds, so the four
    # calls fit in one second even on a loaded machine.
    bad_body = body.replace(b"900", b"901")
    endpoint.control("throttle", {"rps": 2})
    statuses = [send(endpoint, headers, bad_body, path)[0] for _ in range(4)]
    assert statuses == [403, 403, 429, 429]
    st, rh, doc = send(endpoint, headers, body, path)
    assert st == 429 and rh["x-amzn-ErrorType"] == "ThrottlingException" and doc == {"message": "Rate exceeded"}
    time.sleep(1.05)
    st = send(endpoint, headers, body, path)
    assert st[0] == 200, st
    stats = endpoint.control("stats")
    assert (stats["throttled"], stats["rejected"], stats["ok"]) == (3, 2, 1)


# ---------------------------------------------------------------------------
# The command lines the Rust harness uses
# ---------------------------------------------------------------------------


def test_cli_flags_https_only_local_credentials(pki, moto, tmp_path):
    """Flags instead of a config file; without an STS endpoint credentials are made locally."""
    from conftest import HERE, Peer

    ta = f"arn:aws:rolesanywhere:eu-west-1:{moto['account_id']}:trust-anchor/cli"
    profile = f"arn:aws:rolesanywhere:eu-west-1:{moto['account_id']}:profile/cli"
    peer = Peer(
        [
            str(HERE / "rolesanywhere.py"),
            "--tls-cert", str(pki.tls_cert),
            "--tls-key", str(pki.tls_key),
            "--region", "eu-west-1",
            "--trust-anchor", f"{ta}={pki.dir / 'root-ec.pem'},{pki.dir / 'root-rsa.pem'}",
            "--profile", f"{profile}={moto['role_arn']}",
            "--max-duration", "7200",
            "--issued-credentials-file", str(tmp_path / "issued.json"),
            "--exit-on-stdin-eof",
        ],
        tmp_path / "cli.log",
    )
    try:
        assert peer.info["http_port"] is None and peer.info["https_port"] > 0
        ep = type("Ep", (), {"host": f"127.0.0.1:{peer.info['https_port']}", "tls_ca": pki.tls_ca})
        sessions = [
            ra_session(ep, leaf, chain=[inter], role_arn=moto["role_arn"], trust_anchor_arn=ta,
                       profile_arn=profile, region="eu-west-1", session_duration=7200)
            for leaf, inter in ((pki.leaf_ec, pki.int_ec), (pki.leaf_rsa, pki.int_rsa))
        ]
        a, b = (fetch(s) for s in sessions)
        assert a.access_key.startswith("ASIA") and a.access_key != b.access_key and a.token
        # Both minted key pairs are in the issued-credentials file, which apiserver.py reads.
        import os
        import stat

        import apiserver

        issued = tmp_path / "issued.json"
        assert stat.S_IMODE(os.stat(issued).st_mode) == 0o600
        assert apiserver.load_secrets(str(issued)) == {
            a.access_key: a.secret_key, b.access_key: b.secret_key}
        # The control API answers on the HTTPS listener too.
        ctx = ssl.create_default_context(cafile=str(pki.tls_ca))
        conn = http.client.HTTPSConnection("127.0.0.1", peer.info["https_port"], context=ctx, timeout=10)
        conn.request("GET", "/_control/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        assert (stats["ok"], stats["failed"]) == (2, 0)
        # Closing stdin (the parent went away) ends the server.
        peer.proc.stdin.close()
        assert peer.proc.wait(timeout=5) == 0
    finally:
        peer.stop()


def test_harness_command_lines(pki, tmp_path):
    """The exact command lines the Rust harness uses, end to end."""
    import base64
    import subprocess
    import sys

    from conftest import HERE, Peer

    moto_peer = Peer(
        [
            str(HERE / "moto_server.py"),
            "--eks-ca-file", str(pki.dir / "root-ec.pem"),
            "--eks-endpoint", "https://127.0.0.1:6443",
            "--exit-on-stdin-eof",
            "--log-file", str(tmp_path / "moto-requests.log"),
        ],
        tmp_path / "moto.log",
    )
    ra_peer = None
    try:
        moto_ep = moto_peer.info["endpoint"]
        out = subprocess.run(
            [sys.executable, str(HERE / "moto_setup.py"), "--endpoint", moto_ep,
             "--cluster-name", "edge", "--service-cidr", "10.96.0.0/12",
             "--remote-node-cidr", "192.168.10.0/24", "--remote-pod-cidr", "192.168.64.0/18",
             "--out", str(tmp_path / "setup.json")],
            check=True, capture_output=True, timeout=60,
        )
        setup = json.loads(out.stdout)
        assert json.loads((tmp_path / "setup.json").read_text()) == setup
        assert (tmp_path / "setup.json").stat().st_mode & 0o777 == 0o600
        c = setup["cluster"]
        assert base64.b64decode(c["certificate_authority"]) == pki.root_ec.cert_pem
        assert c["endpoint"] == "https://127.0.0.1:6443" and c["status"] == "ACTIVE"
        assert c["service_cidr"] == "10.96.0.0/12"
        assert c["remote_node_cidrs"] == ["192.168.10.0/24"] and c["remote_pod_cidrs"] == ["192.168.64.0/18"]
        # Auth checking is on now: an unknown key is refused.
        anon = boto3.client("sts", endpoint_url=moto_ep, region_name=REGION,
                            aws_access_key_id="AKIAUNKNOWN000000000", aws_secret_access_key="x" * 40)
        with pytest.raises(ClientError) as e:
            anon.get_caller_identity()
        assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"

        ta = f"arn:aws:rolesanywhere:{REGION}:{setup['account_id']}:trust-anchor/harness"
        profile = f"arn:aws:rolesanywhere:{REGION}:{setup['account_id']}:profile/harness"
        ra_peer = Peer(
            [
                str(HERE / "rolesanywhere.py"),
                "--tls-cert", str(pki.tls_cert), "--tls-key", str(pki.tls_key),
                "--region", REGION,
                "--trust-anchor", f"{ta}={pki.dir / 'root-ec.pem'}",
                "--profile", f"{profile}={setup['role_arn']}",
                "--sts-credentials-file", str(tmp_path / "setup.json"),
                "--http-port", "0",
                "--exit-on-stdin-eof",
                "--log-file", str(tmp_path / "ra-requests.log"),
            ],
            tmp_path / "ra.log",
        )
        ep = type("Ep", (), {"host": f"127.0.0.1:{ra_peer.info['https_port']}", "tls_ca": pki.tls_ca})
        creds = fetch(ra_session(ep, pki.leaf_ec, chain=[pki.int_ec], role_arn=setup["role_arn"],
                                 trust_anchor_arn=ta, profile_arn=profile, role_session_name="node-ec-01"))
        kw = dict(endpoint_url=moto_ep, region_name=REGION, aws_access_key_id=creds.access_key,
                  aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)
        assert boto3.client("sts", **kw).get_caller_identity()["Arn"].endswith("/hybrid-node/node-ec-01")
        got = boto3.client("eks", **kw).describe_cluster(name="edge")["cluster"]
        assert base64.b64decode(got["certificateAuthority"]["data"]) == pki.root_ec.cert_pem
        log = (tmp_path / "ra-requests.log").read_text()
        assert '"POST /sessions HTTP/1.1" 200' in log
        assert setup["secret_access_key"] not in log and creds.secret_key not in log and creds.token not in log
        assert "/moto-api/reset-auth" in (tmp_path / "moto-requests.log").read_text()
    finally:
        if ra_peer:
            ra_peer.stop()
        moto_peer.stop()


# ---------------------------------------------------------------------------
# Pure canonicalisation against botocore's (an independent implementation)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,query,extra_headers",
    [
        ("/sessions", "", {}),
        ("/sessions", "b=2&a=1&a=0", {"X-Multi": "  a   b\t c "}),
        ("/a%20b/c~d", "k%20ey=v%2Falue&z=&%C3%A9=%E2%82%AC", {"X-Empty": ""}),
        ("/sessions/", "profileArn=arn%3Aaws%3Arolesanywhere%3Aus-east-1%3A1%3Aprofile%2Fp", {}),
    ],
)
def test_canonical_request_matches_botocore(path, query, extra_headers):
    import hashlib

    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

    import rolesanywhere as ra

    url = "https://127.0.0.1:8443" + path + (f"?{query}" if query else "")
    body = b'{"durationSeconds": 900}'
    req = AWSRequest(method="POST", url=url, data=body, headers={"Host": "127.0.0.1:8443", **extra_headers})
    req.context["timestamp"] = "20261123T120000Z"
    auth = SigV4Auth(Credentials("AKID", "SECRET"), "rolesanywhere", REGION)
    auth._modify_request_before_signing(req)
    theirs = auth.canonical_request(req)
    signed = auth.signed_headers(auth.headers_to_sign(req)).split(";")
    ours = ra.canonical_request("POST", path, query, list(req.headers.items()), signed, body)
    assert ours == theirs
    assert ours.endswith(hashlib.sha256(body).hexdigest())
