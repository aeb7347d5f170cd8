//! `debug`.

use std::path::PathBuf;

use clap::Args;

use super::firstboot::ConfigArgs;
use crate::debug::{self, DebugSettings};

/// `hybridboot debug`.
#[derive(Args, Debug)]
pub struct DebugArgs {
    /// Where the configuration is (the one first boot uses).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// Print JSON (`{"checks": [{"name", "outcome", "detail", "fix", "class"}]}`) instead of
    /// one line per check.
    #[arg(long)]
    pub json: bool,
    /// STS endpoint for GetCallerIdentity [default: env AWS_ENDPOINT_URL_STS, then
    /// AWS_ENDPOINT_URL, then the cluster region's].
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
    /// containerd's socket, for the sandbox image check (taken under --root).
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_address: PathBuf,
}

/// Runs `debug`: prints the report; fails (exit 3 or 4) when a check failed.
pub fn run(args: DebugArgs) -> anyhow::Result<()> {
    let source = args.source.source();
    let mut settings = DebugSettings::new(source.clone());
    settings.sts_endpoint = args.sts_endpoint;
    settings.containerd_address = crate::fsutil::under_root(&source.root, &args.containerd_address);
    let report = debug::run(&settings);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report serialises")
        );
    } else {
        print!("{}", report.render_text());
    }
    match report.failure() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
