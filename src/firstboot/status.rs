//! `hybridboot status`: what first boot left behind, for people (text) and machines (`--json`).
//! Reads only files (state, certificate, stamp): it never opens the TPM or calls a peer, so it
//! is safe to run at any time, also while first boot runs.

use std::path::Path;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::state::{self, State, Step};
use crate::fsutil;
use crate::x509::chain::{self, rfc3339};

/// Collects the status as JSON (the text form is rendered from it).
pub fn collect(root: &Path, now: SystemTime) -> anyhow::Result<Value> {
    let st = State::load(root)?;
    let stamp = fsutil::under_root(root, Path::new(state::STAMP_FILE));
    let joined = stamp.exists();
    let certificate = st
        .certificate
        .as_ref()
        .map(|c| certificate_json(root, &c.path, c.renew_before, now));
    // In the order first boot runs them, each with how long its last run took.
    let mut steps: Vec<(Step, Value)> = st
        .completed
        .iter()
        .map(|s| (*s, json!({"step": s.name(), "state": "done"})))
        .chain(st.skipped.iter().map(|s| {
            (
                s.step,
                json!({"step": s.step.name(), "state": "skipped", "reason": s.reason}),
            )
        }))
        .collect();
    steps.sort_by_key(|(step, _)| *step);
    let steps: Vec<Value> = steps
        .into_iter()
        .map(|(step, mut v)| {
            if let Some(ms) = st.durations_ms.get(&step) {
                v["ms"] = json!(ms);
            }
            v
        })
        .collect();
    let install = match &st.install_tracker {
        Some(p) => json!({"tracker": p, "present": fsutil::under_root(root, p).exists()}),
        None => Value::Null,
    };
    Ok(json!({
        "nodeName": st.node_name,
        "joined": joined,
        "stamp": if joined { json!(state::STAMP_FILE) } else { Value::Null },
        "key": st.key.as_ref().map(|k| json!({"ref": k.reference, "algorithm": k.algorithm, "fingerprint": k.fingerprint})),
        "certificate": certificate,
        "vaultLogin": st.vault_login.as_ref().map(|l| json!({
            "method": l.method,
            "role": l.role,
            "subject": l.subject,
            "serial": l.serial,
            "deviceSerialNumber": l.device_serial,
        })),
        "credentialsExpiry": st.credentials_expiry,
        "install": install,
        "steps": steps,
        "lastError": st.last_error.as_ref().map(|e| json!({"step": e.step, "message": e.message, "exitCode": e.exit_code, "at": e.at})),
    }))
}

/// The certificate at `path` (under `root`) as status shows it.
fn certificate_json(root: &Path, path: &Path, renew_before: f64, now: SystemTime) -> Value {
    let full = fsutil::under_root(root, path);
    let leaf = std::fs::read_to_string(&full)
        .map_err(|e| format!("{}: {e}", full.display()))
        .and_then(|t| chain::parse_pem_certs(&t).map_err(|e| e.to_string()))
        .and_then(|certs| {
            certs
                .into_iter()
                .next()
                .ok_or_else(|| "no certificate in it".to_string())
        });
    match leaf {
        Ok(leaf) => {
            let info = leaf.info();
            json!({
                "path": path,
                "subject": info.subject,
                "issuer": info.issuer,
                "serial": info.serial_hex,
                "notBefore": rfc3339(info.not_before),
                "notAfter": rfc3339(info.not_after),
                "valid": leaf.check_valid_at(now).is_ok(),
                "nextRenewal": rfc3339(crate::vault::renewal_due(info.not_before, info.not_after, renew_before)),
            })
        }
        Err(e) => json!({"path": path, "error": e}),
    }
}

/// [`collect`], and when first boot has not run (no state file: a node set up by hand with
/// `enroll` and `init`), what the configuration at `source` names: the node, its certificate.
pub fn collect_with_config(source: &super::ConfigSource, now: SystemTime) -> anyhow::Result<Value> {
    let root = &source.root;
    let mut v = collect(root, now)?;
    let ran = fsutil::under_root(root, Path::new(state::STATE_FILE)).exists();
    v["firstBoot"] = json!(if ran { "ran" } else { "not run" });
    if ran {
        return Ok(v);
    }
    match source.load() {
        Ok(configs) => {
            let ira = &configs.node.iam_roles_anywhere;
            v["config"] = json!(configs.path);
            v["nodeName"] = json!(ira.node_name);
            v["certificate"] = certificate_json(
                root,
                &ira.certificate_path,
                configs.bootstrap.vault.renew_before,
                now,
            );
        }
        Err(e) => v["config"] = json!({"source": source.config_source, "error": format!("{e:#}")}),
    }
    Ok(v)
}

/// The text form.
pub fn render_text(v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<22} {val}\n"));
    if v["firstBoot"] == json!("not run") {
        line(
            "first boot",
            format!(
                "has not run (no {}): the node was set up by hand (enroll, init), or first boot has not started",
                state::STATE_FILE
            ),
        );
        match &v["config"] {
            Value::String(p) => line("config", p.clone()),
            Value::Null => {}
            c => line("config", format!("{}: {}", s(&c["source"]), s(&c["error"]))),
        }
    }
    line("node", s(&v["nodeName"]));
    line(
        "joined",
        if v["joined"] == json!(true) {
            format!("yes ({})", s(&v["stamp"]))
        } else {
            "no".into()
        },
    );
    if v["key"].is_null() {
        line("key", "-".into());
    } else {
        line(
            "key",
            format!("{} ({})", s(&v["key"]["ref"]), s(&v["key"]["algorithm"])),
        );
        line(
            "key fingerprint",
            format!("sha256 {}", s(&v["key"]["fingerprint"])),
        );
    }
    let c = &v["certificate"];
    if c.is_null() {
        line("certificate", "-".into());
    } else if !c["error"].is_null() {
        line(
            "certificate",
            format!("{}: {}", s(&c["path"]), s(&c["error"])),
        );
    } else {
        line("certificate", s(&c["path"]));
        line("  subject", s(&c["subject"]));
        line("  serial", s(&c["serial"]));
        line(
            "  expires",
            format!(
                "{}{}",
                s(&c["notAfter"]),
                if c["valid"] == json!(true) {
                    ""
                } else {
                    " (NOT VALID NOW)"
                }
            ),
        );
        line("  next renewal", s(&c["nextRenewal"]));
    }
    let l = &v["vaultLogin"];
    if !l.is_null() {
        let role = if l["role"].is_null() {
            String::new()
        } else {
            format!(" (role {})", s(&l["role"]))
        };
        line("vault login", format!("{}{role}", s(&l["method"])));
        if !l["subject"].is_null() {
            line("  subject", s(&l["subject"]));
            line("  serial", s(&l["serial"]));
        }
        if !l["deviceSerialNumber"].is_null() {
            line("  device serial", s(&l["deviceSerialNumber"]));
        }
    }
    line(
        "credentials expiry",
        match &v["credentialsExpiry"] {
            Value::Null => "unknown".into(),
            x => s(x),
        },
    );
    line(
        "install",
        if v["install"].is_null() {
            "no install tracker".into()
        } else {
            s(&v["install"]["tracker"])
        },
    );
    if let Some(steps) = v["steps"].as_array() {
        for st in steps {
            let mut extra = if st["reason"].is_null() {
                String::new()
            } else {
                format!(": {}", s(&st["reason"]))
            };
            if let Some(ms) = st["ms"].as_u64() {
                extra.push_str(&format!(" ({ms} ms)"));
            }
            line(
                &format!("step {}", s(&st["step"])),
                format!("{}{extra}", s(&st["state"])),
            );
        }
    }
    let e = &v["lastError"];
    if e.is_null() {
        line("last error", "-".into());
    } else {
        line(
            "last error",
            format!(
                "{} (step {}, exit {}): {}",
                s(&e["at"]),
                s(&e["step"]),
                s(&e["exitCode"]),
                s(&e["message"])
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_fresh_machine_and_of_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let v = collect(dir.path(), SystemTime::now()).unwrap();
        assert_eq!(v["joined"], json!(false));
        assert!(v["certificate"].is_null());
        let text = render_text(&v);
        assert!(text.contains("joined                 no\n"), "{text}");

        let mut st = State::load(dir.path()).unwrap();
        st.complete(state::Step::Key);
        st.key = Some(state::KeyRecord {
            reference: "handle:0x81000001".into(),
            algorithm: "ecdsa-p256".into(),
            fingerprint: "ab".into(),
        });
        st.certificate = Some(state::CertificateRecord {
            path: "/etc/iam/pki/server.pem".into(),
            renew_before: crate::time::DEFAULT_RENEW_BEFORE,
        });
        st.vault_login = Some(state::LoginRecord {
            method: "device-certificate".into(),
            role: Some("factory-devices".into()),
            subject: Some("CN=hb-0001,SERIALNUMBER=hb-0001".into()),
            serial: Some("1f03".into()),
            device_serial: Some("hb-0001".into()),
        });
        st.last_error = Some(state::LastError {
            step: "enroll".into(),
            message: "Vault at x is sealed".into(),
            exit_code: 4,
            at: "2026-01-01T00:00:00Z".into(),
        });
        st.save(dir.path()).unwrap();
        let v = collect(dir.path(), SystemTime::now()).unwrap();
        assert_eq!(v["key"]["fingerprint"], json!("ab"));
        assert!(v["certificate"]["error"].as_str().is_some());
        let text = render_text(&v);
        assert!(text.contains("key fingerprint        sha256 ab"), "{text}");
        assert_eq!(v["vaultLogin"]["deviceSerialNumber"], json!("hb-0001"));
        assert!(
            text.contains("vault login            device-certificate (role factory-devices)\n  subject              CN=hb-0001,SERIALNUMBER=hb-0001\n  serial               1f03\n  device serial        hb-0001\n"),
            "{text}"
        );
        assert!(
            text.contains("last error             2026-01-01T00:00:00Z (step enroll, exit 4): Vault at x is sealed"),
            "{text}"
        );
    }
}
