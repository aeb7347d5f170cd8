//! Entry points shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`) and the stable
//! corpus replay (`tests/fuzz_corpus.rs`), so a crash found by the fuzzer and fixed stays fixed
//! in the normal test suite. Not an API: each function feeds arbitrary bytes to one parser of
//! data a peer, a file or an operator controls, and asserts the invariants that must hold for
//! any input. A panic here is a bug.
//!
//! Inputs that need more than one value use the first byte(s) as selectors; the rest is the
//! document.

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
];
