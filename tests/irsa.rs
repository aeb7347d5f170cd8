//! `irsa keys` and `irsa discovery` against independent implementations: the JWKS is recomputed
//! with Python `cryptography`, and tokens signed with PyJWT (as kube-apiserver signs them, RS256
//! with the kid header) must verify against the published keys.json fetched by PyJWKClient
//! from a loopback HTTP server.
use crate::util;

use std::path::{Path, PathBuf};

use util::{dir_entries, run, tool};

/// Recomputes the expected JWKS from the private keys, compares it with keys.json, then signs
/// a token with each key and verifies it through PyJWKClient against keys.json served on
/// 127.0.0.1. A token from a foreign key carrying a published kid must fail.
const CHECK_JWKS: &str = r#"
import base64, hashlib, http.server, json, sys, threading, time
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

keys_json, legacy, *key_files = sys.argv[1:]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
ib = lambda i: i.to_bytes((i.bit_length() + 7) // 8, "big")
privs = [serialization.load_pem_private_key(open(f, "rb").read(), None) for f in key_files]
jwks = []
for k in privs:
    pub = k.public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    nums = pub.public_numbers()
    jwks.append({"use": "sig", "kty": "RSA", "kid": b64(hashlib.sha256(der).digest()),
                 "alg": "RS256", "n": b64(ib(nums.n)), "e": b64(ib(nums.e))})
if legacy == "1":
    jwks += [dict(j, kid="") for j in jwks]
raw = open(keys_json, "rb").read()
got = json.loads(raw)
assert got == {"keys": jwks}, f"JWKS differs:\n got {got}\nwant {{'keys': {jwks}}}"

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(raw)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
client = jwt.PyJWKClient(f"http://127.0.0.1:{srv.server_address[1]}/keys.json", cache_keys=False)
iss = "https://s3.eu-west-1.amazonaws.com/c1-irsa"
now = int(time.time())
claims = {"iss": iss, "sub": "system:serviceaccount:default:s3-ops", "aud": ["sts.amazonaws.com"],
          "iat": now, "nbf": now, "exp": now + 600}
for k, j in zip(privs, jwks):
    tok = jwt.encode(claims, k, algorithm="RS256", headers={"kid": j["kid"]})
    sk = client.get_signing_key_from_jwt(tok)
    out = jwt.decode(tok, sk.key, algorithms=["RS256"], audience="sts.amazonaws.com", issuer=iss)
    assert out["sub"] == claims["sub"]
    if legacy == "1":
        # Pre-1.16 tokens: verified against the empty-kid copies.
        old = jwt.encode(claims, k, algorithm="RS256", headers={"kid": ""})
        empties = [x for x in jwt.PyJWKSet.from_dict(got).keys if x.key_id == ""]
        ok = 0
        for e in empties:
            try:
                jwt.decode(old, e.key, algorithms=["RS256"], audience="sts.amazonaws.com", issuer=iss)
                ok += 1
            except jwt.InvalidSignatureError:
                pass
        assert ok == 1, ok
forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
forged = jwt.encode(claims, forged_key, algorithm="RS256", headers={"kid": jwks[0]["kid"]})
try:
    jwt.decode(forged, client.get_signing_key_from_jwt(forged).key, algorithms=["RS256"],
               audience="sts.amazonaws.com", issuer=iss)
    sys.exit("a token from a foreign key verified")
except jwt.InvalidSignatureError:
    pass
srv.shutdown()
print("verified", len(privs))
"#;

fn openssl(args: &[&str]) {
    util::x509::openssl(Path::new("."), args);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh RSA key and its public forms: SPKI PEM, PKCS#1 PEM, self-signed certificate PEM.
struct RsaFixture {
    private: PathBuf,
    spki: PathBuf,
    pkcs1: PathBuf,
    cert: PathBuf,
}

fn rsa_fixture(dir: &Path, name: &str) -> RsaFixture {
    let f = RsaFixture {
        private: dir.join(format!("{name}.key")),
        spki: dir.join(format!("{name}.pub")),
        pkcs1: dir.join(format!("{name}.pkcs1.pub")),
        cert: dir.join(format!("{name}.crt")),
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        s(&f.private),
    ]);
    openssl(&["pkey", "-in", s(&f.private), "-pubout", "-out", s(&f.spki)]);
    openssl(&[
        "rsa",
        "-in",
        s(&f.private),
        "-RSAPublicKey_out",
        "-out",
        s(&f.pkcs1),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&f.private),
        "-subj",
        "/CN=sa",
        "-days",
        "1",
        "-out",
        s(&f.cert),
    ]);
    f
}

fn check_with_python(keys_json: &Path, legacy: bool, private_keys: &[&Path]) {
    let mut args = vec![
        "-c",
        CHECK_JWKS,
        s(keys_json),
        if legacy { "1" } else { "0" },
    ];
    args.extend(private_keys.iter().map(|p| s(p)));
    let r = tool(util::python().to_str().unwrap(), &args, &[]);
    assert_eq!(
        r.code, 0,
        "python check failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout
            .contains(&format!("verified {}", private_keys.len())),
        "{}",
        r.stdout
    );
}

#[test]
fn jwks_equals_python_computation_and_verifies_pyjwt_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let k = rsa_fixture(dir.path(), "sa");
    let out = dir.path().join("keys.json");
    let r = run(
        &[
            "irsa",
            "keys",
            "--service-account-key",
            s(&k.spki),
            "--out",
            s(&out),
        ],
        &[],
    );
    r.ok();
    assert!(r.stdout.is_empty(), "--out must leave stdout empty");
    check_with_python(&out, false, &[&k.private]);

    let legacy = dir.path().join("keys-legacy.json");
    run(
        &[
            "irsa",
            "keys",
            "--service-account-key",
            s(&k.spki),
            "--legacy-empty-kid",
            "--out",
            s(&legacy),
        ],
        &[],
    )
    .ok();
    check_with_python(&legacy, true, &[&k.private]);
    let mode = std::fs::metadata(&legacy).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o644);
}

#[test]
fn every_key_form_gives_the_same_kid_and_rotation_publishes_both() {
    let dir = tempfile::tempdir().unwrap();
    let old = rsa_fixture(dir.path(), "old");
    let new = rsa_fixture(dir.path(), "new");
    // What a user pastes from `kubectl get secret c-sa -o jsonpath='{.data.tls\.crt}'` without
    // `base64 -d`.
    let pem = std::fs::read(&old.cert).unwrap();
    let pasted = dir.path().join("pasted.b64");
    use base64::Engine;
    std::fs::write(
        &pasted,
        base64::engine::general_purpose::STANDARD.encode(&pem) + "\n",
    )
    .unwrap();
    let der = dir.path().join("old.der");
    openssl(&[
        "pkey",
        "-pubin",
        "-in",
        s(&old.spki),
        "-outform",
        "DER",
        "-out",
        s(&der),
    ]);
    let r = run(
        &[
            "irsa",
            "keys",
            "--service-account-key",
            s(&old.spki),
            s(&old.pkcs1),
            s(&old.cert),
            s(&pasted),
            s(&der),
            "--service-account-key",
            s(&new.cert),
        ],
        &[],
    );
    r.ok();
    let out = dir.path().join("keys.json");
    std::fs::write(&out, &r.stdout).unwrap();
    // Exactly [old, new]: the five forms of the old key collapse into one entry.
    check_with_python(&out, false, &[&old.private, &new.private]);
}

#[test]
fn non_rsa_and_private_keys_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ec_key = dir.path().join("ec.key");
    let ec_pub = dir.path().join("ec.pub");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&ec_key),
    ]);
    openssl(&["pkey", "-in", s(&ec_key), "-pubout", "-out", s(&ec_pub)]);
    let ec_cert = dir.path().join("ec.crt");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&ec_key),
        "-subj",
        "/CN=sa",
        "-days",
        "1",
        "-out",
        s(&ec_cert),
    ]);
    let ed_key = dir.path().join("ed.key");
    let ed_pub = dir.path().join("ed.pub");
    openssl(&["genpkey", "-algorithm", "ED25519", "-out", s(&ed_key)]);
    openssl(&["pkey", "-in", s(&ed_key), "-pubout", "-out", s(&ed_pub)]);
    let rsa = rsa_fixture(dir.path(), "rsa");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("keys.json");

    for (file, what) in [
        (&ec_pub, "EC"),
        (&ec_cert, "EC"),
        (&ed_pub, "Ed25519"),
        (&ec_key, "private key"),
        (&rsa.private, "private key"),
    ] {
        // A good key first: nothing may be written when a later one is bad.
        let r = run(
            &[
                "irsa",
                "keys",
                "--service-account-key",
                s(&rsa.spki),
                s(file),
                "--out",
                s(&out),
            ],
            &[],
        );
        assert_eq!(r.code, 3, "{}: {}", file.display(), r.stderr);
        let line = r.stderr.trim().lines().last().unwrap();
        assert!(
            line.contains(s(file)) && line.contains(what),
            "{}: {line}",
            file.display()
        );
        assert!(
            dir_entries(&out_dir).is_empty(),
            "{:?}",
            dir_entries(&out_dir)
        );
    }
    // The refusal of a private key must not echo any of it.
    let r = run(
        &["irsa", "keys", "--service-account-key", s(&rsa.private)],
        &[],
    );
    let body: String = std::fs::read_to_string(&rsa.private)
        .unwrap()
        .lines()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(!r.stderr.contains(&body), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

fn discovery(issuer: &str, extra: &[&str]) -> util::Run {
    let mut args = vec!["irsa", "discovery", "--issuer", issuer];
    args.extend_from_slice(extra);
    run(&args, &[])
}

#[test]
fn discovery_has_exactly_the_protocol_fields() {
    for (issuer, jwks_uri) in [
        (
            "https://s3.eu-west-1.amazonaws.com/c1-irsa-oidc",
            "https://s3.eu-west-1.amazonaws.com/c1-irsa-oidc/keys.json",
        ),
        (
            "https://s3.eu-west-1.amazonaws.com/c1-irsa-oidc/",
            "https://s3.eu-west-1.amazonaws.com/c1-irsa-oidc/keys.json",
        ),
        (
            "https://oidc.example.com:8443",
            "https://oidc.example.com:8443/keys.json",
        ),
    ] {
        let r = discovery(issuer, &[]);
        r.ok();
        let got: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let want = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": "urn:kubernetes:programmatic_authorization",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "iss"],
        });
        assert_eq!(got, want);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("discovery.json");
    let issuer = "https://s3.us-west-2.amazonaws.com/b";
    discovery(
        issuer,
        &["--service-account-issuer", issuer, "--out", s(&out)],
    )
    .ok();
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got["issuer"], issuer);
}

#[test]
fn discovery_refuses_issuers_that_cannot_match() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("discovery.json");
    for (issuer, extra, why) in [
        ("http://s3.amazonaws.com/b", vec![], "https://"),
        ("https://s3.amazonaws.com/b?x=1", vec![], "query"),
        ("https://s3.amazonaws.com/b#top", vec![], "fragment"),
        ("https://s3.amazonaws.com//b", vec![], "empty path segment"),
        (
            "https://user@s3.amazonaws.com/b",
            vec![],
            "user information",
        ),
        ("s3.amazonaws.com/b", vec![], "https://"),
        (
            "https://s3.amazonaws.com/b/",
            vec!["--service-account-issuer", "https://s3.amazonaws.com/b"],
            "trailing slash",
        ),
        (
            "https://s3.amazonaws.com/b",
            vec!["--service-account-issuer", "https://s3.amazonaws.com/c"],
            "differs",
        ),
    ] {
        let mut extra = extra.clone();
        extra.extend_from_slice(&["--out", s(&out)]);
        let r = discovery(issuer, &extra);
        assert_eq!(r.code, 3, "{issuer}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(why) && r.stderr.contains(issuer),
            "{issuer}: {}",
            r.stderr
        );
        assert!(!out.exists());
    }
}
