"""Signs a CreateSession request offline with PyPI iam-rolesanywhere-session's signer.

An independent implementation to compare hybridboot's X.509 SigV4 signer with, byte for byte
(RSA PKCS#1 v1.5 is deterministic) or by verification (ECDSA is not). No network: the signer's
add_auth is called on a request that is never sent.

Usage: rolesanywhere_sign.py JSON_ARGS
  {"cert": PEM path, "key": PEM path, "chain": PEM path or null, "region": .., "url": full URL
   with the already-encoded query, "body": text, "unix_time": int,
   "verify_signature_hex": optional hex signature to verify over the string to sign}
Prints JSON: {"authorization", "canonical_request", "string_to_sign", "headers", "verified"}.
"""

import json
import logging
import sys
from datetime import datetime, timezone

import iam_rolesanywhere_session.iam_rolesanywhere_session as ras
from botocore.awsrequest import AWSRequest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.hashes import SHA256


def main() -> None:
    args = json.loads(sys.argv[1])
    fixed = datetime.fromtimestamp(args["unix_time"], tz=timezone.utc)

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    # The signer reads the clock through its module's `datetime` name.
    ras.datetime = FrozenDatetime

    captured = {}

    class Capture(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            for key, prefix in (("canonical_request", "CanonicalRequest:\n"), ("string_to_sign", "StringToSign:\n")):
                if msg.startswith(prefix):
                    captured[key] = msg[len(prefix):]

    log = logging.getLogger(ras.__name__)
    log.setLevel(logging.DEBUG)
    log.addHandler(Capture())

    with open(args["cert"], "rb") as f:
        cert_pem = f.read()
    with open(args["key"], "rb") as f:
        key_pem = f.read()
    chain_pem = None
    if args.get("chain"):
        with open(args["chain"], "rb") as f:
            chain_pem = f.read()

    signer = ras.IAMRolesAnywhereSigner(
        certificate=cert_pem,
        private_key=key_pem,
        certificate_chain=chain_pem,
        region=args["region"],
    )
    request = AWSRequest(method="POST", url=args["url"], data=args["body"])
    signer.add_auth(request)

    verified = None
    if args.get("verify_signature_hex"):
        public = x509.load_pem_x509_certificate(cert_pem).public_key()
        sig = bytes.fromhex(args["verify_signature_hex"])
        data = captured["string_to_sign"].encode()
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(sig, data, ec.ECDSA(SHA256()))
            else:
                public.verify(sig, data, padding.PKCS1v15(), SHA256())
            verified = True
        except Exception:  # cryptography raises InvalidSignature
            verified = False

    print(json.dumps({
        "authorization": request.headers["Authorization"],
        "canonical_request": captured.get("canonical_request"),
        "string_to_sign": captured.get("string_to_sign"),
        "headers": {k: v for k, v in request.headers.items()},
        "verified": verified,
    }))


if __name__ == "__main__":
    main()
