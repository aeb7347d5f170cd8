#!/usr/bin/env python3
"""moto 5.2.5 server for the tests, with the patches listed below.

Usage (the project venv's python, which has moto[server]):

    $VENV/bin/python tests/peers/moto_server.py [--port 0] [--eks-ca-file ca.pem]
        [--eks-endpoint https://127.0.0.1:<p>] [--exit-on-stdin-eof] [--log-file moto.log]

Binds 127.0.0.1 only. When ready it prints ONE JSON line on stdout and keeps serving:

    {"port": 40123, "endpoint": "http://127.0.0.1:40123", "pid": 1234}

Signature and IAM policy checking start OFF (so that setup can create users, roles and
clusters); ``moto_setup.py`` turns them on at the end with ``POST /moto-api/reset-auth``
body ``0`` (body ``inf`` turns them off again).

Patches applied before serving:
- ``moto.iam.access_control.IAMRequestBase._create_aws_request``: moto 5.2.5 hashes the
  request's form data (the headers, for a GET) as the payload, so every correctly signed
  EKS DescribeCluster GET fails signature checking. GET/HEAD/DELETE now use an empty
  payload, as the signer did.
- ``--eks-ca-file`` / ``--eks-endpoint``: moto gives every cluster a random string as
  ``certificateAuthority.data`` and a made-up endpoint. With these flags, clusters created
  afterwards carry base64(PEM of the file) and the given endpoint, so a client can really
  talk TLS to a test API server with what DescribeCluster returned.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading


def patch_moto(eks_ca_pem: bytes | None = None, eks_endpoint: str | None = None) -> None:
    """Apply the signature-check fix (always) and the optional EKS cluster overrides."""
    from botocore.awsrequest import AWSRequest
    from moto.iam import access_control

    def _create_aws_request(self) -> AWSRequest:
        signed_headers = self._get_string_between(
            "SignedHeaders=", ",", self._headers["Authorization"]
        ).split(";")
        headers = self._create_headers_for_aws_request(signed_headers, self._headers)
        if self._method.upper() in ("GET", "HEAD", "DELETE"):
            data = b""  # what the client hashed; moto 5.2.5 passes the headers here
        else:
            data = self._body or self._data
        request = AWSRequest(method=self._method, url=self._path, data=data, headers=headers)
        request.context["timestamp"] = headers["X-Amz-Date"]
        return request

    access_control.IAMRequestBase._create_aws_request = _create_aws_request

    if eks_ca_pem is None and eks_endpoint is None:
        return
    from moto.eks import models as eks_models

    original_init = eks_models.Cluster.__init__

    def cluster_init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        if eks_ca_pem is not None:
            self.certificate_authority = {"data": base64.b64encode(eks_ca_pem).decode()}
        if eks_endpoint is not None:
            self.endpoint = eks_endpoint

    eks_models.Cluster.__init__ = cluster_init


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="moto server for hybridboot tests")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = free port)")
    p.add_argument("--eks-ca-file", help="PEM served as every new cluster's certificateAuthority.data")
    p.add_argument("--eks-endpoint", help="URL served as every new cluster's endpoint")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent died)")
    p.add_argument("--log-file", help="append moto's request log here instead of stderr")
    a = p.parse_args(argv)
    if a.log_file:
        # A parent that pipes stderr and never reads it would stall moto once the pipe fills.
        sys.stderr = open(a.log_file, "a", buffering=1)

    ca = None
    if a.eks_ca_file:
        with open(a.eks_ca_file, "rb") as fh:
            ca = fh.read()
    patch_moto(ca, a.eks_endpoint)

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", a.port, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)  # moto builds some URLs from it
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": port, "endpoint": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)

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
