"""The test API server's token check (apiserver.verify) proven on its own: it accepts
aws-iam-authenticator's known-answer token (docs/protocols.md §3) and one botocore presigns
itself, and refuses each rule's violation. Run: $VENV/bin/python -m pytest tests/peers -k apiserver
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.parse

import boto3
import pytest

import apiserver

VECTOR_URL = (
    "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAR2TG44V6AS3ZZE7C%2F20230428%2F"
    "us-west-2%2Fsts%2Faws4_request&X-Amz-Date=20230428T000000Z&X-Amz-Expires=60"
    "&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"
    "&X-Amz-Signature=e211dba77aba9dc44b0b6be38b8eaad092599c5157f6314444c5b9d85747f5ce"
)
SECRETS = {"ASIAR2TG44V6AS3ZZE7C": "4KD5cntGcVmLWRdF5wvNRuzNL5Qxmp6OKVY6Fz/Q"}
NOW = dt.datetime(2023, 4, 28, 0, 1, tzinfo=dt.timezone.utc)


def tok(url: str) -> str:
    return apiserver.PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def test_known_answer_vector_is_accepted():
    assert apiserver.verify(tok(VECTOR_URL), "test-cluster", "us-west-2", SECRETS, NOW) == \
        "ASIAR2TG44V6AS3ZZE7C"


@pytest.mark.parametrize("mutate,cluster,secrets,now,why", [
    (lambda u: u, "other-cluster", SECRETS, NOW, "signature mismatch"),
    (lambda u: u, "test-cluster", {"ASIAR2TG44V6AS3ZZE7C": "x"}, NOW, "signature mismatch"),
    (lambda u: u, "test-cluster", {}, NOW, "unknown access key"),
    (lambda u: u, "test-cluster", SECRETS, NOW + dt.timedelta(minutes=16), "signed"),
    (lambda u: u.replace("https://", "http://"), "test-cluster", SECRETS, NOW, "https"),
    (lambda u: u.replace("sts.us-west-2", "evil.us-west-2"), "test-cluster", SECRETS, NOW, "host"),
    (lambda u: u.replace("X-Amz-Expires=60", "X-Amz-Expires=901"), "test-cluster", SECRETS, NOW,
     "0..900"),
    (lambda u: u + "&Extra=1", "test-cluster", SECRETS, NOW, "unknown query key"),
    (lambda u: u.replace("GetCallerIdentity", "AssumeRole"), "test-cluster", SECRETS, NOW,
     "GetCallerIdentity"),
    (lambda u: u.replace("host%3Bx-k8s-aws-id", "host"), "test-cluster", SECRETS, NOW,
     "signed headers"),
    (lambda u: u.replace("Signature=e2", "Signature=f2"), "test-cluster", SECRETS, NOW,
     "signature mismatch"),
])
def test_rule_violations_are_refused(mutate, cluster, secrets, now, why):
    with pytest.raises(apiserver.Rejected, match=why):
        apiserver.verify(tok(mutate(VECTOR_URL)), cluster, "us-west-2", secrets, now)


def test_oversized_and_unprefixed_tokens():
    with pytest.raises(apiserver.Rejected, match="4096"):
        apiserver.verify("k8s-aws-v1." + "A" * 5000, "c", "us-west-2", SECRETS, NOW)
    with pytest.raises(apiserver.Rejected, match="prefix"):
        apiserver.verify(tok(VECTOR_URL)[3:], "test-cluster", "us-west-2", SECRETS, NOW)


def test_botocore_presigned_token_with_session_token():
    """A token made the way `aws eks get-token` does (botocore presign + header hook)."""
    sts = boto3.client("sts", region_name="us-east-1", aws_access_key_id="ASIATEST",
                       aws_secret_access_key="sekrit", aws_session_token="sess/tok+en==",
                       endpoint_url="https://sts.us-east-1.amazonaws.com")

    def add_header(request, **_):
        request.headers["x-k8s-aws-id"] = "hybrid-test"

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_header)
    url = sts.generate_presigned_url("get_caller_identity", ExpiresIn=60, HttpMethod="GET")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    now = dt.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    assert apiserver.verify(tok(url), "hybrid-test", "us-east-1", {"ASIATEST": "sekrit"}, now) \
        == "ASIATEST"
    with pytest.raises(apiserver.Rejected, match="signature"):
        apiserver.verify(tok(url.replace("sess%2Ftok", "sess%2Ftak")), "hybrid-test",
                         "us-east-1", {"ASIATEST": "sekrit"}, now)
