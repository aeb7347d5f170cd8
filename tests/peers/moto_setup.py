#!/usr/bin/env python3
"""Populate a fresh moto server (see moto_server.py) for the tests, then turn auth checking on.

Usage:

    $VENV/bin/python tests/peers/moto_setup.py --endpoint http://127.0.0.1:<port>
        [--region us-east-1] [--cluster-name hybrid-test] [--service-cidr 172.20.0.0/16]
        [--remote-node-cidr 10.80.0.0/16] [--remote-pod-cidr 10.85.0.0/16]
        [--k8s-version 1.31] [--no-auth] [--out setup.json]

Prints ONE JSON line (and writes it, mode 0600, to ``--out`` if given; rolesanywhere.py
reads that file with ``--sts-credentials-file``):

    {"account_id": "123456789012", "region": "us-east-1", "endpoint": "http://127.0.0.1:<p>",
     "user_arn": "arn:aws:iam::123456789012:user/rolesanywhere-minter",
     "access_key_id": "AKIA...", "secret_access_key": "...",
     "role_arn": "arn:aws:iam::123456789012:role/hybrid-node",
     "cluster": {"name", "arn", "endpoint", "certificate_authority", "service_cidr",
                 "remote_node_cidrs", "remote_pod_cidrs", "status"}}

What it creates:
- IAM user ``rolesanywhere-minter`` with an access key and an inline policy allowing
  sts:AssumeRole (+TagSession, SetSourceIdentity) on the node role. The Roles Anywhere
  test endpoint mints credentials with this key.
- IAM role ``hybrid-node`` whose trust policy names the user's ARN (moto does not honour
  ``:root`` principals), with inline policies allowing eks:DescribeCluster/ListClusters and the
  ECR pull (ecr:GetAuthorizationToken, BatchGetImage, GetDownloadUrlForLayer).
- EKS cluster (ACTIVE) with the service CIDR and, where moto keeps it, the hybrid-node
  remote network config.
- Finally ``POST /moto-api/reset-auth`` body ``0``: from now on moto checks SigV4
  signatures and IAM policies (unless ``--no-auth``).

Also importable: ``setup(endpoint, ...) -> dict``.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request

import boto3

USER = "rolesanywhere-minter"
ROLE = "hybrid-node"


def _client(service: str, endpoint: str, region: str):
    # Auth is off during setup, so any key works; "testing" keeps it obviously fake.
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def set_auth(endpoint: str, on: bool) -> None:
    """Turn moto's signature + IAM policy checking on (``0``) or off (``inf``)."""
    req = urllib.request.Request(
        endpoint.rstrip("/") + "/moto-api/reset-auth",
        data=b"0" if on else b"inf",
        method="POST",
        # Not form-encoded: Flask would swallow the body and moto would read ''.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def setup(
    endpoint: str,
    region: str = "us-east-1",
    cluster_name: str = "hybrid-test",
    service_cidr: str = "172.20.0.0/16",
    remote_node_cidrs: tuple[str, ...] = ("10.80.0.0/16",),
    remote_pod_cidrs: tuple[str, ...] = ("10.85.0.0/16",),
    k8s_version: str = "1.31",
    auth: bool = True,
) -> dict:
    iam = _client("iam", endpoint, region)
    sts = _client("sts", endpoint, region)
    eks = _client("eks", endpoint, region)
    account = sts.get_caller_identity()["Account"]

    user_arn = iam.create_user(UserName=USER)["User"]["Arn"]
    key = iam.create_access_key(UserName=USER)["AccessKey"]

    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": user_arn},
                "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            }
        ],
    }
    role_arn = iam.create_role(
        RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=43200
    )["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=ROLE,
        PolicyName="eks-describe",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["eks:DescribeCluster", "eks:ListClusters"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    # What nodeadm's hybrid node role needs to pull the sandbox image from ECR.
    iam.put_role_policy(
        RoleName=ROLE,
        PolicyName="ecr-pull",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "ecr:GetAuthorizationToken",
                            "ecr:BatchGetImage",
                            "ecr:GetDownloadUrlForLayer",
                        ],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    iam.put_user_policy(
        UserName=USER,
        PolicyName="assume-node-role",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
                        "Resource": role_arn,
                    }
                ],
            }
        ),
    )

    cluster_role = iam.create_role(
        RoleName="eks-cluster",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "eks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    eks.create_cluster(
        name=cluster_name,
        version=k8s_version,
        roleArn=cluster_role,
        resourcesVpcConfig={"subnetIds": ["subnet-0a1b2c3d"], "securityGroupIds": []},
        kubernetesNetworkConfig={"serviceIpv4Cidr": service_cidr, "ipFamily": "ipv4"},
        remoteNetworkConfig={
            "remoteNodeNetworks": [{"cidrs": list(remote_node_cidrs)}],
            "remotePodNetworks": [{"cidrs": list(remote_pod_cidrs)}],
        },
    )
    c = eks.describe_cluster(name=cluster_name)["cluster"]
    rnc = c.get("remoteNetworkConfig") or {}
    out = {
        "account_id": account,
        "region": region,
        "endpoint": endpoint,
        "user_arn": user_arn,
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
        "role_arn": role_arn,
        "cluster": {
            "name": c["name"],
            "arn": c["arn"],
            "status": c["status"],
            "endpoint": c["endpoint"],
            "certificate_authority": c["certificateAuthority"]["data"],
            "service_cidr": c["kubernetesNetworkConfig"].get("serviceIpv4Cidr"),
            "remote_node_cidrs": [x for n in rnc.get("remoteNodeNetworks", []) for x in n.get("cidrs", [])],
            "remote_pod_cidrs": [x for n in rnc.get("remotePodNetworks", []) for x in n.get("cidrs", [])],
        },
    }
    if auth:
        set_auth(endpoint, True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="populate a moto server for hybridboot tests")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--cluster-name", default="hybrid-test")
    p.add_argument("--service-cidr", default="172.20.0.0/16")
    p.add_argument("--remote-node-cidr", action="append")
    p.add_argument("--remote-pod-cidr", action="append")
    p.add_argument("--k8s-version", default="1.31")
    p.add_argument("--no-auth", action="store_true", help="leave signature checking off")
    p.add_argument("--out", help="also write the JSON here (mode 0600)")
    a = p.parse_args(argv)
    out = setup(
        a.endpoint,
        region=a.region,
        cluster_name=a.cluster_name,
        service_cidr=a.service_cidr,
        remote_node_cidrs=tuple(a.remote_node_cidr or ["10.80.0.0/16"]),
        remote_pod_cidrs=tuple(a.remote_pod_cidr or ["10.85.0.0/16"]),
        k8s_version=a.k8s_version,
        auth=not a.no_auth,
    )
    line = json.dumps(out)
    if a.out:
        fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
