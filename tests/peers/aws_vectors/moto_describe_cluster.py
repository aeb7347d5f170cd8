"""Prints moto's raw DescribeCluster answer body for an ACTIVE cluster, in-process (no network).

Usage: moto_describe_cluster.py CLUSTER_NAME REGION
"""

import sys

import boto3
from moto import mock_aws


def main() -> None:
    name, region = sys.argv[1:3]
    with mock_aws():
        iam = boto3.client("iam", region_name=region)
        role = iam.create_role(RoleName="cluster", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        eks = boto3.client("eks", region_name=region)
        kwargs = dict(
            name=name,
            roleArn=role,
            resourcesVpcConfig={"subnetIds": ["subnet-1"]},
            kubernetesNetworkConfig={"serviceIpv4Cidr": "172.16.0.0/16"},
        )
        try:
            eks.create_cluster(remoteNetworkConfig={"remoteNodeNetworks": [{"cidrs": ["10.80.0.0/16"]}]}, **kwargs)
        except Exception:  # older moto without remoteNetworkConfig
            eks.create_cluster(**kwargs)
        raw = {}

        def keep(http_response, **_):
            raw["body"] = http_response.content

        eks.meta.events.register("after-call.eks.DescribeCluster", keep)
        eks.describe_cluster(name=name)
        sys.stdout.write(raw["body"].decode())


if __name__ == "__main__":
    main()
