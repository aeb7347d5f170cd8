//! `hybridboot config ...`: the command-line side of the NodeConfig.

use clap::{Args, Subcommand};

use super::config;

/// `hybridboot config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Parse and validate a NodeConfig without changing anything.
    ///
    /// Reads the same files as `nodeadm init --config-source` (a multi-document file may also
    /// carry a hybridboot BootstrapConfig). Unknown fields, missing values and bad values are
    /// errors naming the file, line and field; questionable ARNs are warnings.
    ///
    /// Example: hybridboot config check --config-source file:///etc/eks/nodeconfig.yaml
    Check(CheckArgs),
}

/// Arguments of `config check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// file:///abs/path, file://relative/path (nodeadm's form) or a plain path.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
}

/// Runs a `config` subcommand.
pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check(args) => check(&args),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let loaded = config::load(&args.config_source)?;
    for w in &loaded.warnings {
        log::warn!("{}: {w}", loaded.path.display());
    }
    let n = &loaded.node;
    log::info!(
        "{}: valid NodeConfig for node {} in cluster {} ({}){}",
        loaded.path.display(),
        n.iam_roles_anywhere.node_name,
        n.cluster.name,
        n.cluster.region,
        if loaded.bootstrap.is_some() {
            ", with a BootstrapConfig document"
        } else {
            ""
        }
    );
    Ok(())
}
