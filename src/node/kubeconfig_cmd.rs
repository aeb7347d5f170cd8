//! `hybridboot kubeconfig`: a kubeconfig for a person (or automation) whose exec credential
//! plugin is `hybridboot token` with IAM Roles Anywhere parameters, so a certificate whose key
//! sits in a YubiKey, smart card (pkcs11:) or TPM gives kubectl access with no AWS CLI.
//! `--intermediates`, `--endpoint` and `--ca-bundle` are passed through to the plugin (a chain
//! to a root trust anchor, a VPC endpoint, a private or inspecting TLS CA).

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;

use crate::aws::token_cmd::{self, RolesAnywhereArgs};
use crate::exit;
use crate::fsutil::{self, WriteOptions};

/// Arguments of `hybridboot kubeconfig`.
#[derive(Args, Debug)]
pub struct KubeconfigArgs {
    /// EKS cluster name.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: String,
    /// Region of the cluster.
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// IAM Roles Anywhere parameters the token plugin uses (all required).
    #[command(flatten)]
    pub roles_anywhere: RolesAnywhereArgs,
    /// API server URL (default: from DescribeCluster).
    #[arg(long, value_name = "URL", requires = "certificate_authority")]
    pub server: Option<String>,
    /// The cluster CA (PEM) (default: from DescribeCluster).
    #[arg(long, value_name = "FILE", requires = "server")]
    pub certificate_authority: Option<PathBuf>,
    /// Write here (atomically, mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The hybridboot the plugin runs (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub hybridboot_path: Option<PathBuf>,
}

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

/// Runs `hybridboot kubeconfig`.
pub fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    crate::aws::eks::validate_cluster_name(&args.cluster_name)
        .map_err(|e| exit::operator(e.to_string()))?;
    // The plugin runs from kubectl's working directory: make the file paths absolute.
    let mut ra = args.roles_anywhere.clone();
    for (flag, path) in [
        ("--certificate", &mut ra.certificate),
        ("--intermediates", &mut ra.intermediates),
        ("--ca-bundle", &mut ra.ca_bundle),
    ] {
        if let Some(p) = path {
            *p = std::path::absolute(&*p).with_context(|| format!("{flag} {}", p.display()))?;
        }
    }
    let Some(ra_args) = ra.process_args() else {
        return Err(exit::operator(
            "--certificate, --private-key, --trust-anchor-arn, --profile-arn and --role-arn are required",
        ));
    };
    // The kubeconfig stores the arguments in clear text (and kubectl shows them): a PIN in the
    // key reference would be written into it.
    if let Some(Ok(crate::key::uri::KeyRef::Pkcs11(u))) = ra
        .private_key
        .as_deref()
        .map(crate::key::uri::KeyRef::parse)
    {
        if matches!(u.pin, Some(crate::key::uri::PinSource::Value(_))) {
            return Err(exit::operator(
                "--private-key carries the PIN (pin-value=), which the kubeconfig would store in clear text: use ?pin-source=file:/path or the HYBRIDBOOT_PKCS11_PIN environment variable",
            ));
        }
    }
    let (server, ca) = match (&args.server, &args.certificate_authority) {
        (Some(s), Some(f)) => {
            let ca = crate::fsutil::read_capped(f, crate::fsutil::MAX_TEXT_FILE).map_err(|e| {
                exit::operator(format!("--certificate-authority {}: {e}", f.display()))
            })?;
            if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
                return Err(exit::operator(format!(
                    "--certificate-authority {}: no PEM certificate in it",
                    f.display()
                )));
            }
            (s.clone(), ca)
        }
        _ => {
            let env = |k: &str| std::env::var(k).ok();
            let (creds, _) = token_cmd::credentials_for(&ra, &env)
                .context("getting AWS credentials for DescribeCluster")?;
            let d = super::init_cmd::describe_cluster_by_name(
                &args.cluster_name,
                &args.region,
                &creds,
                &super::init_cmd::EksTarget::default(),
                &env,
            )?;
            (d.endpoint, d.certificate_authority_pem)
        }
    };
    let hybridboot = match &args.hybridboot_path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this executable")?,
    };
    let text = render(
        &args.cluster_name,
        &args.region,
        &server,
        &ca,
        &hybridboot.display().to_string(),
        &ra_args,
    );
    match &args.out {
        Some(path) => {
            fsutil::atomic_write(path, text.as_bytes(), &WriteOptions::private())
                .with_context(|| format!("writing {}", path.display()))?;
            log::info!(
                "kubeconfig for {} written to {}",
                args.cluster_name,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
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
