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

#[cfg(test)]
mod tests {
    use super::*;

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
