#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

Seeds are valid (or nearly valid) documents from the project's fixtures and the wire formats in
docs/protocols.md, so the fuzzers start from inputs that reach deep into each parser.
Re-running rewrites the seeds only; inputs found by fuzzing stay.
"""
import base64, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
X509 = os.path.join(ROOT, "tests", "fixtures", "x509")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def read(p):
    with open(p) as f:
        return f.read()


leaf, inter, root = (read(os.path.join(X509, n)) for n in ("leaf.pem", "int.pem", "root.pem"))

# NodeConfig YAML.
NODE = """---
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: my-cluster
    region: us-west-2
  hybrid:
    iamRolesAnywhere:
      nodeName: mock-hybrid-node
      roleArn: arn:aws:iam::123456789010:role/mockHybridNodeRole
      profileArn: arn:aws:rolesanywhere:us-west-2:123456789010:profile/p1
      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t1
"""
put("node_config", "rolesanywhere.yaml", NODE)
put("node_config", "ssm.yaml", """apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: c
    region: eu-west-1
    apiServerEndpoint: https://example.com
    certificateAuthority: Y2E=
    cidr: 10.100.0.0/16
  hybrid:
    ssm:
      activationCode: code
      activationId: id
  kubelet:
    config:
      maxPods: 110
    flags: ["--node-labels=a=b"]
""")
put("node_config", "two-docs.yaml", NODE + "---\napiVersion: hybridboot/v1alpha1\nkind: BootstrapConfig\nspec: {}\n")
# The nodeadm test cases (aws/eks-hybrid test/integration/cases), where the golden tests find them.
for fixtures in [os.environ.get("HYBRIDBOOT_NODEADM_FIXTURES"),
                 os.path.join(ROOT, "..", "shared", "fixtures", "nodeadm"),
                 os.path.join(ROOT, "..", "..", "shared", "fixtures", "nodeadm")]:
    fx = fixtures and os.path.join(fixtures, "cases", "hybrid-node-system-aspects", "config.yaml")
    if fx and os.path.exists(fx):
        put("node_config", "nodeadm-hybrid-system-aspects.yaml", read(fx))
        break

# Key references.
for i, ref in enumerate([
    "handle:0x81000001",
    "handle:0x81FFFFFF",
    "pkcs11:token=hybrid%20node;object=node-key;type=private?pin-source=file:/etc/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
    "pkcs11:token=t;id=%01%02?pin-value=1234",
    "PKCS11:object=a%2Fb;slot-id=3",
    "file:///etc/hybridboot/key.pem",
    "file:key.pem",
    "/var/lib/hybridboot/node.tss2.pem",
]):
    put("key_ref", f"{i}", ref)

# PEM bundles and chains.
put("pem_chain", "leaf-int-root.pem", leaf + inter + root)
put("pem_chain", "root-leaf-int.pem", root + leaf + inter)
put("pem_chain", "leaf.pem", leaf)
body = "".join(l for l in leaf.splitlines() if not l.startswith("-----"))
put("pem_chain", "leaf.der", base64.b64decode(body))


# TSS2 PEM: TPMKey { type, [0] emptyAuth, parent, pubkey, privkey } as tpm2-openssl writes it.
def der(tag, body):
    n = len(body)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + ln + body


def tpm2b(b):
    return len(b).to_bytes(2, "big") + b


oid = der(0x06, bytes([0x67, 0x81, 0x05, 0x0A, 0x01, 0x03]))  # 2.23.133.10.1.3
tpmkey = der(0x30, oid + der(0xA0, der(0x01, b"\xff")) + der(0x02, b"\x00\x81\x00\x00\x01")
             + der(0x04, tpm2b(b"PUBLIC" * 10)) + der(0x04, tpm2b(b"PRIVATE" * 20)))
b64 = base64.encodebytes(tpmkey).decode()
tss2 = "-----BEGIN TSS2 PRIVATE KEY-----\n" + b64 + "-----END TSS2 PRIVATE KEY-----\n"
for t in ("tss2_pem",):
    put(t, "loadable.pem", tss2)
    put(t, "loadable.der", tpmkey)

# Vault answers.
put("vault_json", "sign.json", json.dumps({"data": {"certificate": leaf, "issuing_ca": inter,
    "ca_chain": [inter, root], "serial_number": "01:02"}, "warnings": ["x"]}))
put("vault_json", "login.json", json.dumps({"auth": {"client_token": "hvs.x", "lease_duration": 60}}))
put("vault_json", "unwrap.json", json.dumps({"data": {"secret_id": "abc"}}))
put("vault_json", "errors.json", json.dumps({"errors": ["permission denied", "1 error occurred:\n\t* x\n\n"]}))
put("vault_json", "duration", "1h30m")

# CreateSession: byte 0 selects the status (0 -> 200, 4 -> 403, 7 -> 429), NUL ends the header.
OK = {"credentialSet": [{"assumedRoleUser": {"arn": "arn:aws:sts::1:assumed-role/node/abc", "assumedRoleId": "AROA:abc"},
      "credentials": {"accessKeyId": "ASIAEXAMPLEKEY", "secretAccessKey": "SECRETKEYVALUE123",
                      "sessionToken": "SESSIONTOKENVALUE456", "expiration": "2026-11-01T13:00:00Z"},
      "packedPolicySize": 0, "roleArn": "arn:aws:iam::1:role/node", "sourceIdentity": "CN=node-1"}],
      "subjectArn": "arn:aws:rolesanywhere:us-east-1:1:subject/x"}
put("create_session", "ok", b"\x00" + json.dumps(OK).encode())
put("create_session", "denied", b"\x04AccessDeniedException:http://internal\x00" + b'{"message":"Untrusted certificate. Insufficient certificate"}')
put("create_session", "throttled", b"\x07" + b'{"__type":"ThrottlingException","message":"slow down"}')
put("create_session", "credential-process", b"\x00" + json.dumps({"Version": 1, "AccessKeyId": "A",
    "SecretAccessKey": "S", "SessionToken": "T", "Expiration": "2026-11-01T13:00:00Z"}).encode())

# DescribeCluster.
ca = base64.b64encode(root.encode()).decode()
put("describe_cluster", "active", b"\x00" + json.dumps({"cluster": {"name": "hybrid", "arn": "arn:aws:eks:us-west-2:1:cluster/hybrid",
    "version": "1.31", "endpoint": "https://ABC.gr7.us-west-2.eks.amazonaws.com", "status": "ACTIVE",
    "certificateAuthority": {"data": ca}, "kubernetesNetworkConfig": {"serviceIpv4Cidr": "172.16.0.0/16", "ipFamily": "ipv4"},
    "remoteNetworkConfig": {"remoteNodeNetworks": [{"cidrs": ["10.80.0.0/16"]}], "remotePodNetworks": [{"cidrs": ["10.85.0.0/16"]}]}}}).encode())
put("describe_cluster", "not-found", b"\x05ResourceNotFoundException\x00" + b'{"message":"No cluster found for name: hybrid."}')

# Shared credentials file.
put("credentials_ini", "two-profiles", "[default]\naws_access_key_id = AKIA\naws_secret_access_key = s\n\n[hybridboot]\naws_access_key_id=OLD\naws_session_token = t\n  continued\nregion=us-west-2\n")
put("credentials_ini", "comments-crlf", "# comment\r\n; other\r\n[profile x]\r\nkey = v\r\n")

# IMDS requests.
put("imds_request", "token", "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n")
put("imds_request", "creds", "GET /latest/meta-data/iam/security-credentials/node HTTP/1.1\r\nHost: 127.0.0.1\r\nX-aws-ec2-metadata-token: abc\r\n\r\n")
put("imds_request", "body", "POST /x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")

# KUBERNETES_EXEC_INFO.
put("exec_info", "v1", json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1",
    "spec": {"interactive": False}}))
put("exec_info", "v1beta1", json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1beta1", "spec": {}}))

# HTTP responses: byte 0 even -> GET, odd -> HEAD.
put("http_response", "length", b"\x00HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nhello")
put("http_response", "chunked", b"\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n")
put("http_response", "continue-close", b"\x00HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Unavailable\r\nRetry-After: 3\r\n\r\nbody until close")
put("http_response", "head", b"\x01HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")

# Artifact manifest: the first line is the version to select, the rest the manifest YAML.
MANIFEST = """supported_eks_releases:
- latest_patch_version: "2"
  major_minor_version: "1.31"
  patch_releases:
  - version: 1.31.1
    patch_version: "1"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://m/1.31.1/kubelet", checksum_uri: "https://m/1.31.1/kubelet.sha256"}
  - version: 1.31.2
    patch_version: "2"
    release_date: "2026-10-01"
    artifacts:
    - {name: kubelet, arch: amd64, os: linux, uri: "https://m/1.31.2/kubelet", checksum_uri: "https://m/1.31.2/kubelet.sha256", gzip_uri: "https://m/1.31.2/kubelet.gz"}
- major_minor_version: "1.30"
  patch_releases:
  - {version: 1.30.7, patch_version: "7"}
  - {version: 1.30.10, patch_version: "10"}
iam_roles_anywhere_releases:
- {version: 1.2.0, artifacts: []}
- {version: v1.10.1, artifacts: [{name: aws_signing_helper, arch: arm64, os: linux}]}
region_config: {us-east-1: {partition: aws}}
ssm_releases: null
"""
put("manifest", "latest", "1.31\n" + MANIFEST)
put("manifest", "exact", "v1.31.1\n" + MANIFEST)
put("manifest", "highest-patch", "1.30\n" + MANIFEST)
put("manifest", "missing", "1.29.3\n" + MANIFEST)
put("manifest", "nodeadm-fixture", "M.m\n" + read(os.path.join(ROOT, "tests", "fixtures", "nodeadm", "manifest.yaml")))

# Signed manifest: byte 0 even -> a document as served (signature line last), odd -> the signed
# lines alone (the target signs them). docs/signed-manifest.md.
SIGNED = ("hybridboot-signed-manifest 1\nserial 2026120601\nexpires 2027-03-01T00:00:00Z\n"
          "manifest-sha256 " + "3b" * 32 + "\n"
          "artifact 1.31.2 linux amd64 kubelet " + "9f" * 32 + "\n"
          "artifact 1.31.2 linux arm64 cni-plugins " + "0a" * 32 + "\n")
put("signed_manifest", "document", "\x00" + SIGNED + "signature " + base64.b64encode(bytes(range(64))).decode() + "\n")
put("signed_manifest", "lines", "\x01" + SIGNED)
put("signed_manifest", "minimal", "\x01hybridboot-signed-manifest 1\nserial 0\nmanifest-sha256 " + "00" * 32 + "\n")
put("signed_manifest", "legacy-sig", "\x00" + base64.b64encode(bytes(64)).decode() + "\n")

# Checksum files: byte 0 picks (artifact, file name): 0 kubelet, 1 cni-plugins tarball, 2 kubelet.gz.
H1, H2 = "ab" * 32, "0123456789abcdefABCDEF" * 2 + "0123456789abcdefABCD"
put("checksum", "bare", b"\x00" + H1.encode())
put("checksum", "bare-newline", b"\x00" + (H1 + "\n").encode())
put("checksum", "named", b"\x00" + (H1 + "  kubelet\n").encode())
put("checksum", "binary-path", b"\x02" + (H2 + " *bin/kubelet.gz\n").encode())
put("checksum", "multi", b"\x01" + (H1 + "  kubectl\n" + H2 + "  cni-plugins-linux-amd64-v1.5.1.tgz\r\n").encode())
put("checksum", "wrong-name", b"\x00" + (H1 + "  kubectl").encode())

# CNI plugins tarball: raw tar (the target gzips it; gzip input is used as is).
import io, tarfile


def tar(members, fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, data, mode, link in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.size, ti.mtime = kind, mode, len(data), 1700000000
            if link:
                ti.linkname = link
            t.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    b = buf.getvalue().rstrip(b"\0")
    return b + b"\0" * (-len(b) % 512 + 1024)  # keep the two zero end blocks, drop the padding


R, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
flat = [("./", D, b"", 0o755, None), ("./bridge", R, b"\x7fELF bridge", 0o4755, None),
        ("./host-local", R, b"\x7fELF host-local", 0o755, None), ("./LICENSE", R, b"Apache 2.0\n", 0o644, None)]
put("cni_tarball", "flat.tar", tar(flat))
put("cni_tarball", "flat-gnu.tar", tar(flat + [("./" + "l" * 120, R, b"long name", 0o755, None)], tarfile.GNU_FORMAT))
put("cni_tarball", "flat-pax.tar", tar(flat + [("./p\u00e9x", R, b"pax", 0o700, None)], tarfile.PAX_FORMAT))
put("cni_tarball", "symlink.tar", tar(flat[:2] + [("./loopback", S, b"", 0o777, "/etc/passwd")]))
put("cni_tarball", "hardlink.tar", tar(flat[:2] + [("./loopback", L, b"", 0o755, "bridge")]))
put("cni_tarball", "nested.tar", tar(flat[:2] + [("./sub/", D, b"", 0o755, None), ("./sub/x", R, b"x", 0o755, None)]))
put("cni_tarball", "duplicate.tar", tar(flat[:2] + [("bridge", R, b"again", 0o755, None)]))
# Raw header for a traversal name (tarfile would write it, but keep it explicit).
put("cni_tarball", "traversal.tar", tar(flat[:2] + [("../../etc/cron.d/x", R, b"* * * * * root id\n", 0o644, None)]))
put("cni_tarball", "absolute.tar", tar(flat[:2] + [("/etc/x", R, b"x", 0o644, None)]))

# Peer fields: selector byte (the check) + value; 8 = key id, secret, token separated by NUL.
put("peer_fields", "access-key-id", b"\x00ASIAEXAMPLEKEY1234")
put("peer_fields", "secret", b"\x01wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
put("peer_fields", "token", b"\x02FwoGZXIvYXdzEJr//////////wEaD+abc-_=")
put("peer_fields", "token-newline", b"\x02tok\n[evil]\ncredential_process = /bin/sh -c id")
put("peer_fields", "timestamp", b"\x032024-05-01T13:00:00.123+02:00")
put("peer_fields", "endpoint", b"\x04https://ABC.gr7.us-west-2.eks.amazonaws.com:443/x")
put("peer_fields", "cidr", b"\x05fd00:ab::/64")
put("peer_fields", "name", b"\x06hybrid-test_1.31")
put("peer_fields", "pem", b"\x07" + root.encode())
put("peer_fields", "message", b"\x07denied\r\nerror: forged \x1b[31m line")
put("peer_fields", "credentials", b"\x08ASIAX\x00SECRET+/=\x00TOKEN-_")
put("peer_fields", "credentials-evil", b"\x08ASIAX\x00SECRET\x00TOK\n[evil]\ncredential_process = id")
