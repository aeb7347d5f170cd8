//! `irsa keys` and `irsa discovery`: the files an IRSA issuer publishes.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::emit;
use crate::error::ResultExt;
use crate::irsa::{build_jwks, discovery, key_id, rsa_keys_from_bytes};

/// Pretty JSON with a final newline, as uploaded to the bucket.
fn to_json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value).context("encoding JSON")?;
    out.push(b'\n');
    Ok(out)
}

/// Arguments of `hybridboot irsa keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Service-account public key: PEM PUBLIC KEY, PEM RSA PUBLIC KEY, a certificate PEM (the
    /// <cluster>-sa secret's tls.crt), or the base64 of one. Repeat for rotation: every key is
    /// published.
    #[arg(long = "service-account-key", value_name = "FILE", required = true, num_args = 1..)]
    pub service_account_keys: Vec<PathBuf>,
    /// Write keys.json to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also publish each key with an empty kid, for tokens issued by Kubernetes before 1.16.
    #[arg(long)]
    pub legacy_empty_kid: bool,
}

/// Arguments of `hybridboot irsa discovery`.
#[derive(Args, Debug)]
pub struct DiscoveryArgs {
    /// The issuer URL, exactly as kube-apiserver's --service-account-issuer (trailing slash
    /// included or not, the same way), e.g. https://s3.eu-west-1.amazonaws.com/my-bucket.
    #[arg(long, value_name = "URL")]
    pub issuer: String,
    /// The API server's --service-account-issuer, to check that --issuer matches it exactly.
    #[arg(long, value_name = "URL")]
    pub service_account_issuer: Option<String>,
    /// Write the document to this file (atomically, mode 0644) instead of stdout. Upload it as
    /// <issuer>/.well-known/openid-configuration.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `hybridboot irsa {keys,discovery}`.
#[derive(Subcommand, Debug)]
pub enum IrsaCommand {
    /// Print the JWKS (keys.json) of the cluster's service-account public keys.
    ///
    /// Example: kubectl get secret c1-sa -n eksa-system -o jsonpath='{.data.tls\.crt}' | base64 -d
    /// > sa.pub && hybridboot irsa keys --service-account-key sa.pub --out keys.json
    Keys(KeysArgs),
    /// Print the OpenID discovery document (.well-known/openid-configuration) for an issuer.
    Discovery(DiscoveryArgs),
}

/// Runs an `irsa` subcommand.
pub fn run_irsa(command: IrsaCommand) -> anyhow::Result<()> {
    match command {
        IrsaCommand::Keys(a) => keys_command(a),
        IrsaCommand::Discovery(a) => discovery_command(a),
    }
}

fn keys_command(args: KeysArgs) -> anyhow::Result<()> {
    let mut spkis = Vec::new();
    for path in &args.service_account_keys {
        let name = path.display().to_string();
        let data = crate::fsutil::read_capped(path, crate::fsutil::MAX_TEXT_FILE)
            .with_context(|| format!("reading {name}"))?;
        let found = rsa_keys_from_bytes(&data, &name).classed()?;
        for spki in &found {
            log::info!("{name}: RSA key, kid {}", key_id(spki));
        }
        spkis.extend(found);
    }
    let jwks = build_jwks(&spkis, args.legacy_empty_kid).classed()?;
    emit(args.out.as_ref(), &to_json(&jwks)?, "JWKS")
}

fn discovery_command(args: DiscoveryArgs) -> anyhow::Result<()> {
    let doc = discovery(&args.issuer, args.service_account_issuer.as_deref()).classed()?;
    if args.issuer.ends_with('/') {
        log::warn!(
            "issuer {:?} ends with '/': kube-apiserver --service-account-issuer and the IAM identity provider must use it with the slash too",
            args.issuer
        );
    }
    emit(args.out.as_ref(), &to_json(&doc)?, "discovery document")
}
