#!/usr/bin/env python3
"""A tiny test CA (Python ``cryptography``) for tests where OpenBao is not the point: it can
issue certificates valid in the past (expired) and TLS server certificates for 127.0.0.1.

    mini_ca.py ca OUT_CERT OUT_KEY CN [ISSUER_CERT ISSUER_KEY]   root, or intermediate
    mini_ca.py leaf CSR CA_CERT CA_KEY OUT_CERT START_OFFSET_S END_OFFSET_S
                                        end-entity cert for the CSR's key and subject,
                                        valid from now+START to now+END (seconds)
    mini_ca.py tls CA_CERT CA_KEY OUT_CERT OUT_KEY [DNS_NAME ...]
                                        server cert for IP 127.0.0.1 and localhost (plus
                                        the DNS names given, e.g. for a VM guest's view)

Keys are P-256, signatures SHA-256. Writes PEM files; prints nothing.
"""

import datetime as dt
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
import ipaddress

NOW = dt.datetime.now(dt.timezone.utc)


def load(cert_path, key_path):
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def write_key(path, key):
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def base(subject, issuer, public_key, start, end):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def cmd_ca(out_cert, out_key, cn, issuer_cert=None, issuer_key=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    if issuer_cert:
        icert, ikey = load(issuer_cert, issuer_key)
        issuer, signer = icert.subject, ikey
    else:
        issuer, signer = subject, key
    b = base(subject, issuer, key.public_key(), NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=30))
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    b = b.add_extension(
        x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
    )
    write_cert(out_cert, b.sign(signer, hashes.SHA256()))
    write_key(out_key, key)


def cmd_leaf(csr_path, ca_cert, ca_key, out_cert, start, end):
    with open(csr_path, "rb") as f:
        csr = x509.load_pem_x509_csr(f.read())
    icert, ikey = load(ca_cert, ca_key)
    b = base(
        csr.subject,
        icert.subject,
        csr.public_key(),
        NOW + dt.timedelta(seconds=float(start)),
        NOW + dt.timedelta(seconds=float(end)),
    )
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(
        x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
    )
    write_cert(out_cert, b.sign(ikey, hashes.SHA256()))


def cmd_tls(ca_cert, ca_key, out_cert, out_key, *dns_names):
    icert, ikey = load(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    b = base(subject, icert.subject, key.public_key(), NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=2))
    b = b.add_extension(
        x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            + [x509.DNSName(n) for n in dns_names]
        ),
        critical=False,
    )
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    write_cert(out_cert, b.sign(ikey, hashes.SHA256()))
    write_key(out_key, key)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ca": cmd_ca, "leaf": cmd_leaf, "tls": cmd_tls}[cmd](*args)
