//! The kubeconfig `hybridboot kubeconfig` writes: a kubeconfig for a person (or automation) whose exec credential
//! plugin is `hybridboot token` with IAM Roles Anywhere parameters, so a certificate whose key
//! sits in a YubiKey, smart card (pkcs11:) or TPM gives kubectl access with no AWS CLI.
//! `--intermediates`, `--endpoint` and `--ca-bundle` are passed through to the plugin (a chain
//! to a root trust anchor, a VPC endpoint, a private or inspecting TLS CA).

use base64::Engine as _;

fn q(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).expect("strings serialise")
}

/// The kubeconfig text. `ca_pem` is embedded (certificate-authority-data) so the file works
/// from anywhere; every argument is quoted.
pub fn render(
    cluster_name: &str,
    region: &str,
    server: &str,
    ca_pem: &[u8],
    hybridboot: &str,
    ra_args: &[String],
) -> String {
    let user = format!("{cluster_name}-rolesanywhere");
    let mut args = vec![
        "token".to_string(),
        "--cluster-name".into(),
        cluster_name.into(),
        "--region".into(),
        region.into(),
    ];
    args.extend(ra_args.iter().cloned());
    let args_yaml: String = args
        .iter()
        .map(|a| format!("          - {}\n", q(a)))
        .collect();
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: {c}
    cluster:
      server: {server}
      certificate-authority-data: {ca}
contexts:
  - name: {c}
    context:
      cluster: {c}
      user: {u}
current-context: {c}
users:
  - name: {u}
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1beta1
        command: {cmd}
        args:
{args_yaml}        interactiveMode: Never
        provideClusterInfo: false
",
        c = q(cluster_name),
        u = q(&user),
        server = q(server),
        ca = base64::engine::general_purpose::STANDARD.encode(ca_pem),
        cmd = q(hybridboot),
    )
}

/// `new` (one cluster, context and user, as [`render`] makes) merged into the kubeconfig text
/// `existing` like `aws eks update-kubeconfig` does: entries of the same name are replaced, the
/// others kept, the new context becomes current, other top-level fields stay. `Err` says what
/// is wrong with `existing` (nothing is written then).
pub fn merge(existing: &str, new: &str) -> Result<String, String> {
    use serde_yaml_ng::Value;
    let mut old: Value = if existing.trim().is_empty() {
        Value::Mapping(Default::default())
    } else {
        serde_yaml_ng::from_str(existing).map_err(|e| format!("not YAML: {e}"))?
    };
    let new: Value =
        serde_yaml_ng::from_str(new).map_err(|e| format!("rendered kubeconfig: {e}"))?;
    let Value::Mapping(map) = &mut old else {
        return Err("not a kubeconfig (the top level is not a mapping)".into());
    };
    if let Some(kind) = map.get("kind").and_then(Value::as_str) {
        if kind != "Config" {
            return Err(format!("kind is {kind:?}, not Config"));
        }
    }
    for list in ["clusters", "contexts", "users"] {
        let entries = map
            .entry(Value::from(list))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if entries.is_null() {
            *entries = Value::Sequence(Vec::new());
        }
        let Value::Sequence(entries) = entries else {
            return Err(format!("{list} is not a list"));
        };
        for item in new[list].as_sequence().into_iter().flatten() {
            let name = &item["name"];
            match entries.iter_mut().find(|e| &e["name"] == name) {
                Some(e) => *e = item.clone(),
                None => entries.push(item.clone()),
            }
        }
    }
    for key in ["apiVersion", "kind", "current-context"] {
        map.insert(Value::from(key), new[key].clone());
    }
    serde_yaml_ng::to_string(&old).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_other_clusters_replaces_the_same_name_and_selects_the_new_context() {
        let a = render(
            "a",
            "us-east-1",
            "https://a",
            b"ca",
            "/usr/bin/hybridboot",
            &[],
        );
        let b = render(
            "b",
            "us-east-1",
            "https://b",
            b"ca",
            "/usr/bin/hybridboot",
            &[],
        );
        let both = merge(&a, &b).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&both).unwrap();
        assert_eq!(v["current-context"], "b");
        assert_eq!(v["clusters"].as_sequence().unwrap().len(), 2);
        let a2 = render(
            "a",
            "us-east-1",
            "https://a2",
            b"ca",
            "/usr/bin/hybridboot",
            &[],
        );
        let again: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&merge(&both, &a2).unwrap()).unwrap();
        assert_eq!(again["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(again["clusters"][0]["cluster"]["server"], "https://a2");
        assert_eq!(again["current-context"], "a");
        assert!(merge("- a list", &a).is_err());
        assert!(merge("kind: Pod\n", &a).unwrap_err().contains("Pod"));
    }

    #[test]
    fn rendered_kubeconfig_parses_and_quotes_arguments() {
        let ra = vec![
            "--certificate".to_string(),
            "/home/a/me.pem".into(),
            "--private-key".into(),
            "pkcs11:token=yk;object=piv auth?pin-source=file:/p".into(),
        ];
        let text = render(
            "prod",
            "eu-west-1",
            "https://k8s:443",
            b"-----BEGIN CERTIFICATE-----\n",
            "/usr/bin/hybridboot",
            &ra,
        );
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let exec = &v["users"][0]["user"]["exec"];
        assert_eq!(exec["command"].as_str(), Some("/usr/bin/hybridboot"));
        let args: Vec<&str> = exec["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            vec![
                "token",
                "--cluster-name",
                "prod",
                "--region",
                "eu-west-1",
                "--certificate",
                "/home/a/me.pem",
                "--private-key",
                "pkcs11:token=yk;object=piv auth?pin-source=file:/p"
            ]
        );
        assert_eq!(v["current-context"].as_str(), Some("prod"));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://k8s:443")
        );
    }
}
