//! Entry points shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`) and the stable
//! corpus replay (`tests/fuzz_corpus.rs`), so a crash found by the fuzzer and fixed stays fixed
//! in the normal test suite. Not an API: each function feeds arbitrary bytes to one parser of
//! data a peer, a file or an operator controls, and asserts the invariants that must hold for
//! any input. A panic here is a bug.
//!
//! Inputs that need more than one value use the first byte(s) as selectors; the rest is the
//! document.

use crate::error::Classify;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aws::{credentials, credfile, eks, imds, sts_token};
use crate::key::uri::KeyRef;
use crate::secret::Secret;
use crate::x509::chain;

/// A fixed "now" (2026-11-01T00:00:00Z) so replays are deterministic.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_793_491_200)
}

/// A status code chosen by one selector byte: the interesting ones, then anything.
fn status(b: u8) -> u16 {
    const COMMON: [u16; 12] = [200, 201, 204, 400, 403, 404, 409, 429, 500, 502, 503, 504];
    COMMON
        .get(b as usize)
        .copied()
        .unwrap_or(100 + u16::from(b) * 2)
}

/// Splits `data` at the first NUL: (header value, body); no NUL means no header.
fn split_header(data: &[u8]) -> (Option<String>, &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (
            Some(String::from_utf8_lossy(&data[..i]).into_owned()),
            &data[i + 1..],
        ),
        None => (None, data),
    }
}

/// The signed manifest (`install::signed`). Byte 0 even: the rest is a document as a mirror
/// serves it: split, verified (against a fixed key, so it fails unless the fuzzer forges
/// Ed25519), and its lines parsed anyway. Byte 0 odd: the rest is the signed lines, signed here
/// with that key: opening the document must give exactly what parsing the lines gives. Every
/// parsed document renders to lines that parse back to the same content, and its checks
/// (manifest digest, expiry, serial) never panic.
pub fn signed_manifest(data: &[u8]) {
    use crate::node::install::{signature::PublicKey, signed};
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(kp) = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]) else {
        return;
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(kp.public_key());
    let Ok(key) = PublicKey::parse(b64.as_bytes(), "fuzz.pub") else {
        return;
    };
    let check_body = |body: &[u8]| {
        let Ok(m) = signed::parse_body(body, "fuzz") else {
            return;
        };
        let lines = m.render_body();
        let again = signed::parse_body(lines.as_bytes(), "fuzz")
            .unwrap_or_else(|e| panic!("rendered {lines:?} does not parse: {e}"));
        assert_eq!(again.render_body(), lines);
        assert_eq!(
            (again.serial, again.manifest_sha256, &again.artifacts),
            (m.serial, m.manifest_sha256, &m.artifacts)
        );
        for installed in [None, Some(m.serial), Some(m.serial.saturating_add(1))] {
            if let Err(e) = m.check(body, now(), installed, "fuzz") {
                let _ = e.to_string();
            }
        }
    };
    if mode % 2 == 0 {
        if let Err(e) = signed::open(rest, &key, "fuzz") {
            let _ = e.to_string();
        }
        if let Ok((body, _)) = signed::split(rest, "fuzz") {
            check_body(body);
        }
        check_body(rest);
    } else {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(sig) = <[u8; 64]>::try_from(kp.sign(rest).as_ref()) else {
            return;
        };
        let doc = signed::assemble(text, &sig);
        match (
            signed::open(doc.as_bytes(), &key, "fuzz"),
            signed::parse_body(rest, "fuzz"),
        ) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("open {a:?} but parse_body {b:?} for {text:?}"),
        }
        check_body(rest);
    }
}

/// NodeConfig (+ BootstrapConfig) YAML, as `init`/`config check` read it.
pub fn node_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = crate::node::config::parse(Path::new("/etc/hybridboot/nodeconfig.yaml"), &text)
    {
        // Errors are one operator-facing message.
        let _ = e.to_string();
    }
}

/// Key references (`handle:`, `pkcs11:` URIs with percent-encoding, `file:` and paths).
/// A parsed reference prints as something that parses back to the same reference (PIN values
/// excepted: they print redacted by design).
pub fn key_ref(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match KeyRef::parse(text) {
        Ok(r) => {
            let shown = r.to_string();
            if !text.contains("pin-value") {
                let again = KeyRef::parse(&shown)
                    .unwrap_or_else(|e| panic!("{text:?} printed as {shown:?}, which fails: {e}"));
                assert_eq!(again, r, "{text:?} printed as {shown:?}");
            }
            let _ = format!("{r:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// PEM bundles, certificates and chain ordering (Vault answers, CA files).
pub fn pem_chain(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = chain::parse_pem_bundle(&text);
    if let Ok(certs) = chain::parse_pem_certs(&text) {
        for c in &certs {
            let _ = (c.info(), c.serial_bytes(), c.to_pem());
            let _ = c.check_valid_at(now());
        }
        let n = certs.len();
        if let Ok(ordered) = chain::order_chain(certs) {
            assert!(ordered.len() <= n, "ordering invented certificates");
            for pair in ordered.windows(2) {
                let _ = pair[0].verify_issued_by(&pair[1]);
            }
        }
    }
    // The same bytes as one DER certificate.
    if let Ok(c) = chain::Cert::from_der(data) {
        let _ = (c.info(), c.verify_issued_by(&c));
    }
}

/// TSS2 PEM ("TSS2 PRIVATE KEY") files: the one parser both TPM backends use.
pub fn tss2_pem(data: &[u8]) {
    use crate::key::tss2pem;
    let _ = tss2pem::parse_pem(data);
    let _ = tss2pem::parse_der(data);
}

/// Vault login, unwrap, error and `pki/sign` JSON (with the chain verification it feeds).
pub fn vault_json(data: &[u8]) {
    crate::vault::fuzz_answers(data, now());
}

/// Roles Anywhere `CreateSession` answers (success and error) and `credential_process` output.
/// Byte 0 picks the status; an optional `x-amzn-ErrorType` header ends at the first NUL.
pub fn create_session(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = split_header(rest);
    let date = "Sun, 01 Nov 2026 00:00:00 GMT";
    match credentials::handle_create_session_answer(
        status(sel),
        header.as_deref(),
        Some(date),
        body,
        now(),
    ) {
        Ok(c) => {
            // What we parsed renders to credential_process JSON that parses back the same.
            let rendered = credentials::render_credential_process(&c);
            let back = credentials::parse_credential_process(rendered.expose().as_bytes())
                .expect("our own credential_process output parses");
            assert_eq!(back.access_key_id, c.access_key_id);
            assert_eq!(
                back.secret_access_key.expose(),
                c.secret_access_key.expose()
            );
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_transient());
        }
    }
    let _ = credentials::parse_credential_process(body);
}

/// EKS `DescribeCluster` answers. Byte 0 picks the status; an optional error-type header ends
/// at the first NUL.
pub fn describe_cluster(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = split_header(rest);
    match eks::parse_describe_cluster("fuzz", "us-west-2", status(sel), header.as_deref(), body) {
        Ok(d) => {
            let _ = format!("{d:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.is_transient());
        }
    }
}

/// The shared credentials file (INI) that `update` rewrites: rendering into any existing text
/// succeeds or refuses, and rendering its own output again changes nothing.
pub fn credentials_ini(data: &[u8]) {
    let Ok(existing) = std::str::from_utf8(data) else {
        return;
    };
    let creds = credentials::Credentials {
        access_key_id: "AKIAFUZZ".into(),
        secret_access_key: Secret::new("fuzz-secret-key"),
        session_token: Some(Secret::new("fuzz-session-token")),
        expiration: Some(now()),
    };
    if let Ok(out) = credfile::render(existing, "hybridboot", &creds) {
        let again = credfile::render(out.expose(), "hybridboot", &creds)
            .expect("our own output renders again");
        assert_eq!(
            again.expose(),
            out.expose(),
            "rendering is not idempotent for {existing:?}"
        );
    }
}

/// The IMDS emulator's request parser (`serve`), fed arbitrary bytes from a local client.
pub fn imds_request(data: &[u8]) {
    match imds::parse_request(data) {
        imds::Parse::Complete { consumed, request } => {
            assert!(consumed <= data.len(), "consumed more than was read");
            let _ = format!("{request:?}");
        }
        imds::Parse::Reject(r) => {
            let _ = r.to_bytes();
        }
        imds::Parse::Incomplete => {}
    }
}

/// `KUBERNETES_EXEC_INFO` (ExecCredential input) as kubectl passes it to `token`.
pub fn exec_info(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(v) = sts_token::exec_info_api_version(Some(&text)) {
        let token = Secret::new("k8s-aws-v1.fuzz");
        let out = sts_token::render_exec_credential(&token, now(), &v);
        let _: serde_json::Value =
            serde_json::from_str(out.expose()).expect("ExecCredential output is JSON");
    }
}

/// The HTTP client's response parser (head, framing, chunked and length bodies, size cap).
/// Byte 0 picks the request method (HEAD or GET).
pub fn http_response(data: &[u8]) {
    let Some((&sel, raw)) = data.split_first() else {
        return;
    };
    let method = if sel & 1 == 1 { "HEAD" } else { "GET" };
    const LIMIT: usize = 64 * 1024;
    if let Ok((_, _, body)) = crate::http::parse_response_bytes(raw, method, LIMIT) {
        assert!(body.len() <= LIMIT, "body over the cap");
        assert!(body.len() <= raw.len(), "body longer than the input");
    }
}

/// nodeadm's artifact manifest (`install`). The first line is the Kubernetes version to select
/// (`1.31` or `1.31.2`), the rest is the manifest YAML. A selected patch release is one of the
/// manifest's own, of the requested minor version (and patch, when one was given).
pub fn manifest(data: &[u8]) {
    use crate::node::install::manifest::Manifest;
    let (version, doc) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let m = match Manifest::parse(doc) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    match m.select(&version) {
        Ok(p) => {
            let parts: Vec<&str> = version.trim_start_matches('v').split('.').collect();
            let minor = format!("{}.{}", parts[0], parts[1]);
            let release = m
                .supported_eks_releases
                .iter()
                .find(|r| r.major_minor_version == minor)
                .expect("selected from a release the manifest has");
            assert!(
                release.patch_releases.iter().any(|q| std::ptr::eq(q, p)),
                "{version}: selected patch is not one of {minor}'s"
            );
            if parts.len() == 3 {
                assert_eq!(p.version, format!("{minor}.{}", parts[2]));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Some(h) = m.latest_signing_helper() {
        let all = m.iam_roles_anywhere_releases.as_deref().unwrap_or_default();
        assert!(all.iter().any(|r| std::ptr::eq(r, h)));
    }
}

/// Checksum files (`*.sha256`, `sha256sum` output). Byte 0 picks the artifact and file name the
/// caller asks for. An accepted digest is written in the file (as hex).
pub fn checksum(data: &[u8]) {
    use crate::node::install::manifest::parse_checksum;
    const NAMES: [(&str, &str); 3] = [
        ("kubelet", "kubelet"),
        ("cni-plugins", "cni-plugins-linux-amd64-v1.5.1.tgz"),
        ("kubelet", "kubelet.gz"),
    ];
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let (artifact, file_name) = NAMES[sel as usize % NAMES.len()];
    match parse_checksum(text, artifact, file_name) {
        Ok(d) => {
            let hex = hex::encode(d);
            let lower = String::from_utf8_lossy(text).to_ascii_lowercase();
            assert!(lower.contains(&hex), "digest {hex} is not in the file");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A scratch directory on tmpfs when there is one (each input writes files, with fsync).
fn scratch_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "hybridboot-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Every path under `dir` (not following symbolic links), relative to it.
fn walk(dir: &Path) -> Vec<(std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("scratch directory readable") {
            let e = e.expect("directory entry");
            let meta = std::fs::symlink_metadata(e.path()).expect("metadata");
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((
                e.path().strip_prefix(dir).expect("under dir").to_path_buf(),
                meta,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The CNI plugins tarball extractor (`install`), run for real against a scratch directory.
/// The input is a tar archive (gzip'd here unless it already starts with the gzip magic).
/// Invariants: nothing is written outside the destination (its parent holds only it), the
/// destination holds only regular files without setuid/setgid/sticky bits and no temporary
/// files; an archive `plan` accepts extracts to exactly the planned files, and `plan` rejecting
/// an archive means `install` writes nothing (it never calls `extract` then). `extract` is also
/// run on archives `plan` refused, as defence in depth: still nothing outside the destination.
pub fn cni_tarball(data: &[u8]) {
    use crate::node::install::cni;
    use std::os::unix::fs::PermissionsExt;
    let tgz = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, data).expect("gzip into memory");
        gz.finish().expect("gzip into memory")
    };
    let limits = cni::Limits {
        max_file_bytes: 64 * 1024,
        max_total_bytes: 256 * 1024,
        max_entries: 32,
    };
    let planned = cni::plan(&tgz[..], &limits);
    if let Err(e) = &planned {
        let _ = e.to_string();
    }
    let outer = scratch_dir();
    let dest = outer.join("bin");
    std::fs::create_dir_all(&dest).expect("scratch directory");
    let extracted = cni::extract(&tgz[..], &dest, &limits);
    let outside: Vec<_> = std::fs::read_dir(&outer)
        .expect("scratch directory readable")
        .map(|e| e.expect("directory entry").file_name())
        .filter(|n| n != "bin")
        .collect();
    let inside = walk(&dest);
    std::fs::remove_dir_all(&outer).expect("scratch directory removable");
    assert!(
        outside.is_empty(),
        "written outside the destination: {outside:?}"
    );
    for (path, meta) in &inside {
        assert!(meta.is_file(), "{} is not a regular file", path.display());
        assert_eq!(path.components().count(), 1, "{} is nested", path.display());
        assert_eq!(meta.permissions().mode() & 0o7000, 0, "{}", path.display());
        assert!(
            !path.to_string_lossy().contains(".hbtmp."),
            "temporary file {} left behind",
            path.display()
        );
    }
    match (&planned, &extracted) {
        (Ok(plan), Ok(placed)) => {
            assert_eq!(placed.len(), plan.len());
            for (entry, (path, _)) in plan.iter().zip(placed) {
                assert_eq!(path, &dest.join(&entry.name));
            }
            let mut names: Vec<_> = plan
                .iter()
                .map(|e| std::path::PathBuf::from(&e.name))
                .collect();
            names.sort();
            let found: Vec<_> = inside.iter().map(|(p, _)| p.clone()).collect();
            assert_eq!(found, names, "files in the destination");
            for entry in plan {
                let meta = &inside
                    .iter()
                    .find(|(p, _)| p.as_os_str() == entry.name.as_str())
                    .expect("planned file present")
                    .1;
                assert_eq!(meta.len(), entry.size, "{}", entry.name);
                assert_eq!(
                    meta.permissions().mode() & 0o7777,
                    entry.mode,
                    "{}",
                    entry.name
                );
            }
        }
        (Ok(_), Err(e)) => panic!("plan accepted an archive extract refused: {e}"),
        (Err(_), Ok(_)) | (Err(_), Err(_)) => {}
    }
    if let Err(e) = &extracted {
        let _ = e.to_string();
    }
}

/// The checks of peer-supplied fields (`peer_fields`). The first byte picks the check, the
/// rest is the value. For any input: no panic; an accepted value holds no control character or
/// white space and respects its length cap; accepted AWS credentials render into a credentials
/// file of exactly one section and three keys that reads back the same (no injected line);
/// accepted PEM text holds only marker, base64 and empty lines; a message made one line holds
/// no control character or line break and is bounded; no error message spans two lines.
pub fn peer_fields(data: &[u8]) {
    use crate::peer_fields as pf;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let value = text.as_ref();
    let clean = |v: &str| !v.chars().any(|c| c.is_control() || c.is_whitespace());
    let checked = |r: Result<(), pf::InvalidField>, max: usize| match r {
        Ok(()) => {
            assert!(clean(value), "accepted a control character or white space");
            assert!(value.len() <= max, "accepted {} bytes", value.len());
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    };
    match sel % 9 {
        0 => checked(pf::access_key_id("f", value), pf::MAX_ACCESS_KEY_ID),
        1 => checked(pf::secret_access_key("f", value), pf::MAX_SECRET_ACCESS_KEY),
        2 => checked(pf::session_token("f", value), pf::MAX_SESSION_TOKEN),
        3 => checked(pf::timestamp("f", value), pf::MAX_TIMESTAMP),
        4 => checked(pf::https_url("f", value), pf::MAX_URL),
        5 => checked(pf::cidr("f", value), pf::MAX_CIDR),
        6 => checked(pf::name("f", value), pf::MAX_NAME),
        7 => {
            if pf::pem_certificates("f", value).is_ok() {
                for line in value.split('\n') {
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    assert!(
                        line.is_empty()
                            || line.starts_with("-----")
                            || line
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
                        "accepted a PEM line with other text"
                    );
                }
            }
            let one = pf::one_line(value);
            assert!(!one.chars().any(|c| c.is_control() || c == '\n'));
            assert!(one.chars().count() <= pf::MAX_MESSAGE + 3);
        }
        _ => {
            // Three values separated by NUL: key id, secret, token.
            let mut parts = value.splitn(3, '\0');
            let creds = credentials::Credentials {
                access_key_id: parts.next().unwrap_or("").to_string(),
                secret_access_key: Secret::new(parts.next().unwrap_or("")),
                session_token: parts.next().map(Secret::new),
                expiration: None,
            };
            let ok = creds.validate().is_ok();
            match credfile::render("", "default", &creds) {
                Ok(out) => {
                    assert!(ok, "the credentials file took what validate refuses");
                    let lines: Vec<&str> = out.expose().lines().collect();
                    let want = 3 + usize::from(creds.session_token.is_some());
                    assert_eq!(lines.len(), want, "injected lines");
                    assert_eq!(lines[0], "[default]");
                    assert_eq!(
                        lines[1].strip_prefix("aws_access_key_id = "),
                        Some(creds.access_key_id.as_str())
                    );
                }
                Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
    }
}

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Every target: its name (the folder under `fuzz/corpus/`) and entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("node_config", node_config),
    ("key_ref", key_ref),
    ("pem_chain", pem_chain),
    ("tss2_pem", tss2_pem),
    ("vault_json", vault_json),
    ("create_session", create_session),
    ("describe_cluster", describe_cluster),
    ("credentials_ini", credentials_ini),
    ("imds_request", imds_request),
    ("exec_info", exec_info),
    ("http_response", http_response),
    ("manifest", manifest),
    ("checksum", checksum),
    ("cni_tarball", cni_tarball),
    ("peer_fields", peer_fields),
    ("signed_manifest", signed_manifest),
];
