//! The AWS signers checked against independent implementations:
//! - our HMAC SigV4 (header signing and presigning) against the AWS SDK's `aws-sigv4` crate;
//! - our X.509 `CreateSession` signer against PyPI `iam-rolesanywhere-session` 3.0.0 (run offline
//!   from the test venv), byte for byte for RSA and by verification for ECDSA, with certificates
//!   made by openssl.

use crate::util;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hybridboot::aws::credentials::Credentials;
use hybridboot::aws::sigv4::{self, HttpRequest};
use hybridboot::aws::sigv4x509::{self, CreateSessionInput};
use hybridboot::aws::sts_token;
use hybridboot::key::{self, KeyOptions, KeyRef, OpenMode};
use hybridboot::secret::Secret;
use util::x509::openssl;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn creds(token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: token.map(Secret::new),
        expiration: None,
    }
}

/// Signs with aws-sigv4 (header location) and returns its Authorization header.
fn sdk_authorization(
    req: &HttpRequest,
    c: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> String {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.expose().to_string(),
        c.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = req.header("host").unwrap();
    let uri = format!("https://{host}{}", req.path_and_query());
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signable = SignableRequest::new(
        &req.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&req.body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let auth = instructions
        .headers()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_string())
        .expect("aws-sigv4 produced an Authorization header");
    auth
}

#[test]
fn hmac_signing_matches_aws_sigv4() {
    let now = at(1_700_000_123);
    let cases: Vec<(&str, HttpRequest, Option<&str>, &str, &str)> = vec![
        (
            "EKS DescribeCluster GET",
            HttpRequest::new("GET", "eks.us-west-2.amazonaws.com", "/clusters/my-cluster"),
            None,
            "us-west-2",
            "eks",
        ),
        (
            "GET with query needing encoding",
            HttpRequest::new("GET", "example.amazonaws.com", "/")
                .with_query("Param2", "value 2/x")
                .with_query("Param1", "a+b=c&d")
                .with_query("empty", "")
                .with_query("tilde~", "é"),
            None,
            "us-east-1",
            "service",
        ),
        (
            "POST with JSON body and session token",
            HttpRequest::new("POST", "sts.eu-central-1.amazonaws.com", "/")
                .with_header(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .with_body("Action=GetCallerIdentity&Version=2011-06-15"),
            Some("FQoGZXIvYXdzEJr//////////wEaDOaQ+token/with+specials=="),
            "eu-central-1",
            "sts",
        ),
        (
            "odd whitespace and repeated headers",
            HttpRequest::new("PUT", "example.amazonaws.com:8443", "/a/b-c_d.e~f")
                .with_header("X-Custom", "   lots   of    spaces   ")
                .with_header("x-custom", "second value")
                .with_header("My-Header1", "value1")
                .with_body(vec![0u8, 1, 2, 255]),
            Some("short-token"),
            "ap-southeast-2",
            "execute-api",
        ),
    ];
    for (name, req, token, region, service) in cases {
        let c = creds(token);
        let mut ours = req.clone();
        sigv4::sign_request(&mut ours, &c, region, service, now);
        let expected = sdk_authorization(&req, &c, region, service, now);
        assert_eq!(
            ours.header("authorization").unwrap(),
            expected,
            "case {name}"
        );
    }
}

#[test]
fn presigned_sts_url_matches_aws_sigv4() {
    use aws_sigv4::http_request::{
        sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    };
    let now = at(1_682_640_000);
    for token in [None, Some("IQoJb3JpZ2luX2VjE+/session==")] {
        let c = creds(token);
        let url = sts_token::presigned_url(
            &c,
            "us-west-2",
            "sts.us-west-2.amazonaws.com",
            "test-cluster",
            now,
        );
        let ours_sig = url
            .expose()
            .rsplit_once("X-Amz-Signature=")
            .unwrap()
            .1
            .to_string();

        let identity = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.expose().to_string(),
            token.map(str::to_string),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(60));
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-west-2")
            .name("sts")
            .time(now)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "GET",
            "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            [("x-k8s-aws-id", "test-cluster")].into_iter(),
            SignableBody::Bytes(&[]),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let sdk_sig = instructions
            .params()
            .iter()
            .find(|(k, _)| *k == "X-Amz-Signature")
            .map(|(_, v)| v.to_string())
            .unwrap();
        assert_eq!(ours_sig, sdk_sig, "token {token:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// X.509 signer against iam-rolesanywhere-session.

/// A root CA, an intermediate, and a leaf (key type `leaf_alg`: "RSA" or "EC") issued by the
/// intermediate with a 20-byte serial, all signed with SHA-256.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(leaf_alg: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ext.cnf"),
            "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
             [leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "root.key",
                "-out",
                "root.pem",
                "-subj",
                "/CN=Test Root",
                "-days",
                "2",
                "-sha256",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "int.key",
                "-out",
                "int.csr",
                "-subj",
                "/CN=Test Intermediate",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-set_serial",
                "0x1001",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ca",
                "-out",
                "int.pem",
            ],
        );
        let keygen: &[&str] = if leaf_alg == "RSA" {
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "leaf.key",
            ]
        } else {
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "leaf.key",
            ]
        };
        openssl(d, keygen);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("leaf.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=node-1",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "int.pem",
                "-CAkey",
                "int.key",
                "-set_serial",
                "0x7a3b1f0a64e2c5d1e5f6a7b8c9d0e1f203142536",
                "-days",
                "1",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "leaf",
                "-out",
                "leaf.pem",
            ],
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.path(name)).unwrap();
        let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
        der
    }
}

struct PySigned {
    authorization: String,
    canonical_request: String,
    string_to_sign: String,
    headers: serde_json::Map<String, serde_json::Value>,
    verified: Option<bool>,
}

fn python_sign(
    pki: &Pki,
    with_chain: bool,
    region: &str,
    url: &str,
    body: &str,
    unix_time: u64,
    verify_signature_hex: Option<&str>,
) -> PySigned {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aws_vectors/rolesanywhere_sign.py");
    let args = serde_json::json!({
        "cert": pki.path("leaf.pem"),
        "key": pki.path("leaf.key"),
        "chain": if with_chain { Some(pki.path("int.pem")) } else { None },
        "region": region,
        "url": url,
        "body": body,
        "unix_time": unix_time,
        "verify_signature_hex": verify_signature_hex,
    });
    let py = util::python();
    let run = util::tool(
        py.to_str().unwrap(),
        &[script.to_str().unwrap(), &args.to_string()],
        &[],
    );
    assert_eq!(run.code, 0, "python signer failed: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    PySigned {
        authorization: v["authorization"].as_str().unwrap().to_string(),
        canonical_request: v["canonical_request"].as_str().unwrap().to_string(),
        string_to_sign: v["string_to_sign"].as_str().unwrap().to_string(),
        headers: v["headers"].as_object().unwrap().clone(),
        verified: v["verified"].as_bool(),
    }
}

const TA: &str = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/4579702c-9a1c-4d3b-8b6e-1a2b3c4d5e6f";
const PROFILE: &str =
    "arn:aws:rolesanywhere:us-east-1:123456789012:profile/6f4d5e3c-2b1a-4c9d-8e7f-0a1b2c3d4e5f";
const ROLE: &str = "arn:aws:iam::123456789012:role/Hybrid Nodes/eks-hybrid-node";

fn compare_with_python(leaf_alg: &str, endpoint: &str, with_chain: bool) {
    let pki = Pki::new(leaf_alg);
    let key = key::open(
        &KeyRef::parse(pki.path("leaf.key").to_str().unwrap()).unwrap(),
        &KeyOptions::default(),
        OpenMode::Existing,
    )
    .unwrap();
    let leaf = pki.der("leaf.pem");
    let chain = if with_chain {
        vec![pki.der("int.pem")]
    } else {
        vec![]
    };
    let body = sigv4x509::session_body(3600, Some("node-1")).unwrap();
    let unix_time = 1_763_900_000;
    let input = CreateSessionInput {
        endpoint,
        region: "us-east-1",
        trust_anchor_arn: TA,
        profile_arn: PROFILE,
        role_arn: ROLE,
        certificate_der: &leaf,
        intermediates_der: &chain,
        body: &body,
        // iam-rolesanywhere-session always sends the AWS JSON 1.0 content type; sign the same
        // header set so the outputs are comparable.
        content_type: "application/x-amz-json-1.0",
        time: at(unix_time),
    };
    let ours = sigv4x509::sign_create_session(&input, key.as_ref()).unwrap();
    let ours_auth = ours.header("authorization").unwrap();
    let ours_sig = ours_auth.rsplit_once("Signature=").unwrap().1;
    let py = python_sign(
        &pki,
        with_chain,
        "us-east-1",
        &ours.url,
        std::str::from_utf8(&body).unwrap(),
        unix_time,
        Some(ours_sig),
    );
    let ctx = format!("{leaf_alg} {endpoint} chain={with_chain}");
    assert_eq!(ours.canonical_request, py.canonical_request, "{ctx}");
    assert_eq!(ours.string_to_sign, py.string_to_sign, "{ctx}");
    assert!(
        ours_auth.starts_with(&format!(
            "AWS4-X509-{}-SHA256 Credential=697815322025009553431893438683478345506058675510/",
            if leaf_alg == "RSA" { "RSA" } else { "ECDSA" }
        )),
        "{ours_auth}"
    );
    // Every header Python sends, we send with the same value (Authorization is compared below:
    // ECDSA signatures are randomised).
    for (k, v) in py.headers.iter().filter(|(k, _)| *k != "Authorization") {
        assert_eq!(ours.header(k), v.as_str(), "{ctx}: header {k}");
    }
    assert_eq!(
        py.verified,
        Some(true),
        "{ctx}: python rejects our signature"
    );
    if leaf_alg == "RSA" {
        // PKCS#1 v1.5 is deterministic: the whole header is equal byte for byte.
        assert_eq!(ours_auth, py.authorization, "{ctx}");
    } else {
        let strip = |a: &str| a.rsplit_once("Signature=").unwrap().0.to_string();
        assert_eq!(strip(ours_auth), strip(&py.authorization), "{ctx}");
    }
}

#[test]
fn rsa_authorization_equals_iam_rolesanywhere_session_byte_for_byte() {
    compare_with_python(
        "RSA",
        "https://rolesanywhere.us-east-1.amazonaws.com",
        false,
    );
    compare_with_python("RSA", "https://127.0.0.1:8443", true);
}

#[test]
fn ecdsa_signature_verifies_in_iam_rolesanywhere_session() {
    compare_with_python("EC", "https://rolesanywhere.us-east-1.amazonaws.com", true);
    compare_with_python("EC", "https://localhost:9443/", false);
}

#[test]
fn tampering_is_detected_by_the_python_verifier() {
    // The verifier in the Python script must be able to say no, or the tests above prove nothing.
    let pki = Pki::new("EC");
    let key = key::open(
        &KeyRef::parse(pki.path("leaf.key").to_str().unwrap()).unwrap(),
        &KeyOptions::default(),
        OpenMode::Existing,
    )
    .unwrap();
    let leaf = pki.der("leaf.pem");
    let body = sigv4x509::session_body(3600, None).unwrap();
    let input = CreateSessionInput {
        endpoint: "https://rolesanywhere.us-east-1.amazonaws.com",
        region: "us-east-1",
        trust_anchor_arn: TA,
        profile_arn: PROFILE,
        role_arn: ROLE,
        certificate_der: &leaf,
        intermediates_der: &[],
        body: &body,
        content_type: "application/x-amz-json-1.0",
        time: at(1_763_900_000),
    };
    let ours = sigv4x509::sign_create_session(&input, key.as_ref()).unwrap();
    let sig = ours
        .header("authorization")
        .unwrap()
        .rsplit_once("Signature=")
        .unwrap()
        .1;
    // Python signs a different body, so its string to sign differs from what we signed.
    let py = python_sign(
        &pki,
        false,
        "us-east-1",
        &ours.url,
        "{\"durationSeconds\":3601}",
        1_763_900_000,
        Some(sig),
    );
    assert_eq!(py.verified, Some(false));
}

#[test]
fn wrong_key_for_the_certificate_is_refused_before_signing() {
    let pki = Pki::new("EC");
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("k.pem");
    let key = key::open(
        &KeyRef::parse(other_key.to_str().unwrap()).unwrap(),
        &KeyOptions::default(),
        OpenMode::CreateIfAbsent(key::Algorithm::EcdsaP256),
    )
    .unwrap();
    let leaf = pki.der("leaf.pem");
    let input = CreateSessionInput {
        endpoint: "https://rolesanywhere.us-east-1.amazonaws.com",
        region: "us-east-1",
        trust_anchor_arn: TA,
        profile_arn: PROFILE,
        role_arn: ROLE,
        certificate_der: &leaf,
        intermediates_der: &[],
        body: b"{}",
        content_type: sigv4x509::CONTENT_TYPE,
        time: at(1_763_900_000),
    };
    let e = sigv4x509::sign_create_session(&input, key.as_ref()).unwrap_err();
    assert!(
        matches!(e, sigv4x509::X509SignError::KeyMismatch { .. }),
        "{e}"
    );
    let bad = CreateSessionInput {
        certificate_der: b"not a certificate",
        ..input
    };
    assert!(matches!(
        sigv4x509::sign_create_session(&bad, key.as_ref()).unwrap_err(),
        sigv4x509::X509SignError::BadCertificate(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// What we write, read back by botocore (an SDK, not our code).

fn botocore_read(config: &Path, credentials: &Path, profile: &str) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aws_vectors/botocore_read.py");
    let py = util::python();
    let run = util::tool(
        py.to_str().unwrap(),
        &[
            script.to_str().unwrap(),
            config.to_str().unwrap(),
            credentials.to_str().unwrap(),
            profile,
        ],
        &[],
    );
    assert_eq!(run.code, 0, "botocore failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn session_creds(id: &str, expires: u64) -> Credentials {
    Credentials {
        access_key_id: id.into(),
        secret_access_key: Secret::new(format!("secret/{id}+key")),
        session_token: Some(Secret::new(format!("token+/={id}"))),
        expiration: Some(at(expires)),
    }
}

#[test]
fn botocore_reads_our_credential_process_output() {
    use hybridboot::aws::credentials::render_credential_process;
    let dir = tempfile::tempdir().unwrap();
    // Far in the future so botocore does not consider it expired.
    let c = session_creds("ASIAPROCESS", 4_102_444_800);
    let out = dir.path().join("out.json");
    std::fs::write(&out, render_credential_process(&c).expose()).unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[profile node]\ncredential_process = cat {}\n",
            out.display()
        ),
    )
    .unwrap();
    let v = botocore_read(&config, &dir.path().join("none"), "node");
    assert_eq!(v["access_key"], "ASIAPROCESS");
    assert_eq!(v["secret_key"], "secret/ASIAPROCESS+key");
    assert_eq!(v["token"], "token+/=ASIAPROCESS");
    assert_eq!(v["method"], "custom-process");
    assert_eq!(v["expiry"], "2100-01-01T00:00:00+00:00");
}

#[test]
fn botocore_reads_the_profile_we_rewrote_and_the_others_unchanged() {
    use hybridboot::aws::credfile;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials");
    std::fs::write(
        &path,
        "# operator comment\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = othersecret\n\n\
         [default]\n; keep\naws_access_key_id = OLD\naws_secret_access_key = OLDSECRET\naws_session_token = OLDTOKEN\n  continuation\nregion = eu-west-1\n",
    )
    .unwrap();
    credfile::write(&path, "default", &session_creds("ASIANEW", 4_102_444_800)).unwrap();
    let none = dir.path().join("no-config");
    let v = botocore_read(&none, &path, "default");
    assert_eq!(v["access_key"], "ASIANEW");
    assert_eq!(v["secret_key"], "secret/ASIANEW+key");
    assert_eq!(v["token"], "token+/=ASIANEW");
    let v = botocore_read(&none, &path, "other");
    assert_eq!(v["access_key"], "AKIAOTHER");
    assert_eq!(v["token"], serde_json::Value::Null);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# operator comment\n[other]\n"));
    assert!(text.contains("; keep\n") && !text.contains("continuation") && !text.contains("OLD"));
}

#[test]
fn moto_describe_cluster_answer_parses() {
    use base64::Engine as _;
    use hybridboot::aws::eks;
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/aws_vectors/moto_describe_cluster.py");
    let py = util::python();
    let run = util::tool(
        py.to_str().unwrap(),
        &[script.to_str().unwrap(), "hybrid-1", "us-west-2"],
        &[],
    );
    assert_eq!(run.code, 0, "moto failed: {}", run.stderr);
    // moto's default certificateAuthority.data is random bytes, not a certificate: refused
    // before it could become the node's cluster CA file.
    let e = eks::parse_describe_cluster("hybrid-1", "us-west-2", 200, None, run.stdout.as_bytes())
        .unwrap_err();
    assert!(e.to_string().contains("certificateAuthority.data"), "{e}");
    // With a real CA (what EKS sends, and what the tests give moto with --eks-ca-file) the
    // rest of moto's answer parses.
    let mut answer: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ca =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x509/root.pem"))
            .unwrap();
    answer["cluster"]["certificateAuthority"]["data"] =
        base64::engine::general_purpose::STANDARD.encode(ca).into();
    let d = eks::parse_describe_cluster(
        "hybrid-1",
        "us-west-2",
        200,
        None,
        answer.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(d.name, "hybrid-1");
    assert_eq!(d.status, "ACTIVE");
    assert!(d.endpoint.starts_with("https://"), "{}", d.endpoint);
    assert!(!d.certificate_authority_pem.is_empty());
    assert_eq!(d.service_cidr.as_deref(), Some("172.16.0.0/16"));
}

#[test]
fn credential_process_lines_survive_botocore_and_sh() {
    use hybridboot::aws::credentials::render_credential_process;
    use hybridboot::aws::sources::{join_command, split_command};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("creds.json");
    std::fs::write(
        &json,
        render_credential_process(&session_creds("ASIAQUOTED", 4_102_444_800)).expose(),
    )
    .unwrap();
    // The script prints the credentials only when it got exactly the awkward arguments.
    let script = dir.path().join("helper with space.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$#\" = 3 ] && [ \"$1\" = 'pkcs11:token=node 1;object=key' ] && [ \"$2\" = \"it's\" ] && [ \"$3\" = '$HOME`x`' ] && exec cat {}\necho \"bad args: $*\" >&2; exit 1\n",
            json.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = [
        script.to_str().unwrap(),
        "pkcs11:token=node 1;object=key",
        "it's",
        "$HOME`x`",
    ];
    let line = join_command(&args);
    assert_eq!(split_command(&line).unwrap(), args);
    // botocore: shlex.split, no shell.
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!("[profile node]\ncredential_process = {line}\n"),
    )
    .unwrap();
    let v = botocore_read(&config, &dir.path().join("none"), "node");
    assert_eq!(v["access_key"], "ASIAQUOTED");
    // The Go and Rust SDKs: sh -c.
    let run = util::tool("sh", &["-c", &line], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("ASIAQUOTED"));
}

// ---------------------------------------------------------------------------------------------
// The cache's lock across processes (what concurrent `credential-process` runs rely on): this
// test binary re-runs itself 20 times as the helper below.

const CACHE_CHILD_ENV: &str = "HYBRIDBOOT_TEST_CACHE_CHILD_DIR";

#[test]
#[ignore = "helper process of twenty_processes_with_a_cold_cache_fetch_once"]
fn cache_child_process() {
    use hybridboot::aws::cache::CredentialCache;
    use std::io::Write;
    let dir = PathBuf::from(std::env::var(CACHE_CHILD_ENV).expect("run by the parent test"));
    let cache = CredentialCache::new(dir.join("cache"));
    let now = SystemTime::now();
    let (c, _) = cache
        .get_or_fetch("shared-key", now, || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(dir.join("fetches"))
                .unwrap();
            writeln!(f, "{}", std::process::id()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            Ok::<_, String>(session_creds(
                "ASIAPROCESSES",
                hybridboot::aws::time::unix_seconds(now) as u64 + 3600,
            ))
        })
        .unwrap();
    println!("GOT {}", c.access_key_id);
}

#[test]
fn twenty_processes_with_a_cold_cache_fetch_once() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..20)
        .map(|_| {
            util::helper_test("aws_pure::cache_child_process")
                .arg("--nocapture")
                .env(CACHE_CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("GOT ASIAPROCESSES"),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fetches = std::fs::read_to_string(dir.path().join("fetches")).unwrap();
    assert_eq!(fetches.lines().count(), 1, "fetches by pids: {fetches}");
}

// ---------------------------------------------------------------------------------------------
// IMDS logic driven by botocore's own IMDSv2 client, through a pipe (no socket): the helper below
// is the "server", reading framed raw HTTP requests on stdin and answering on stderr.

const IMDS_CHILD_ENV: &str = "HYBRIDBOOT_TEST_IMDS_MODE";

#[test]
#[ignore = "helper process of botocore_gets_credentials_from_our_imds_logic"]
fn imds_child_process() {
    use hybridboot::aws::imds::{parse_request, CredentialView, Imds, Parse};
    use std::io::{Read, Write};
    let mode = std::env::var(IMDS_CHILD_ENV).expect("run by the parent test");
    let now = SystemTime::now();
    let creds = session_creds(
        "ASIAIMDS",
        hybridboot::aws::time::unix_seconds(now) as u64 + 3600,
    );
    let mut imds = Imds::new("eks-hybrid-node");
    let mut stdin = std::io::stdin().lock();
    // Frames go to stderr: libtest writes its own progress lines to stdout.
    let mut stdout = std::io::stderr().lock();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            return;
        }
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        stdin.read_exact(&mut buf).unwrap();
        let resp = match parse_request(&buf) {
            Parse::Complete { request, consumed } => {
                assert_eq!(consumed, buf.len());
                let view = CredentialView {
                    credentials: (mode == "ok").then_some(&creds),
                    last_updated: now,
                };
                imds.handle(&request, now, view, hybridboot::aws::imds::random_token)
            }
            Parse::Reject(r) => r,
            Parse::Incomplete => panic!("botocore sent an incomplete request"),
        };
        let bytes = resp.to_bytes();
        stdout
            .write_all(&(bytes.len() as u32).to_be_bytes())
            .unwrap();
        stdout.write_all(&bytes).unwrap();
        stdout.flush().unwrap();
    }
}

fn botocore_imds(mode: &str) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/aws_vectors/botocore_imds.py");
    let mut helper = util::helper_test_argv("aws_pure::imds_child_process");
    helper.extend(["--nocapture".to_string(), "--quiet".to_string()]);
    let helper = serde_json::json!(helper);
    let py = util::python();
    let run = util::tool(
        py.to_str().unwrap(),
        &[script.to_str().unwrap(), &helper.to_string()],
        &[(IMDS_CHILD_ENV, mode)],
    );
    assert_eq!(run.code, 0, "botocore IMDS run failed: {}", run.stderr);
    // libtest prints its own lines on stdout after ours: take the JSON line.
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from the script: {}", run.stdout));
    serde_json::from_str(line).unwrap()
}

#[test]
fn botocore_gets_credentials_from_our_imds_logic() {
    let v = botocore_imds("ok");
    let c = &v["credentials"];
    assert_eq!(c["role_name"], "eks-hybrid-node", "{v}");
    assert_eq!(c["access_key"], "ASIAIMDS");
    assert_eq!(c["secret_key"], "secret/ASIAIMDS+key");
    assert_eq!(c["token"], "token+/=ASIAIMDS");
    assert_eq!(
        v["sent"],
        serde_json::json!([
            "PUT /latest/api/token",
            "GET /latest/meta-data/iam/security-credentials/",
            "GET /latest/meta-data/iam/security-credentials/eks-hybrid-node"
        ])
    );
}

#[test]
fn botocore_gets_no_credentials_when_refresh_failed() {
    let v = botocore_imds("failed");
    assert_eq!(v["credentials"], serde_json::json!({}), "{v}");
}
