//! `firstboot` and `status`.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Args;

use crate::firstboot::{self, status, ConfigSource};

/// `hybridboot firstboot`.
#[derive(Args, Debug)]
pub struct FirstbootArgs {
    /// Where the configuration is.
    #[command(flatten)]
    pub source: ConfigArgs,
    /// Show what first boot would do from here, and do none of it: each step as the state file
    /// and the disk say (done, would run, skipped), then, once the certificate exists, init's
    /// files (`new`, `changed`, `unchanged`, `remove`) and `systemctl` actions. Creates no key,
    /// requests no certificate, writes no state and starts nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write init's files but reload, enable or restart no unit (implied by --root other than
    /// /: the units of an image or a test tree are not this machine's).
    #[arg(long)]
    pub no_start: bool,
    /// With --root: (re)start the units anyway (tests with a recording service manager).
    #[arg(long, conflicts_with = "no_start")]
    pub start: bool,
    /// The hybridboot path written into the credential_process and kubeconfig exec-plugin
    /// lines [default: this executable; with --root other than /, /usr/bin/hybridboot].
    #[arg(long, value_name = "PATH")]
    pub hybridboot_path: Option<PathBuf>,
}

/// Where the configuration comes from, and the root to work under.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The NodeConfig (and BootstrapConfig) file: file:///path (nodeadm's form) or a path.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: String,
    /// The BootstrapConfig in its own file [default: the document next to the NodeConfig].
    #[arg(long, value_name = "FILE")]
    pub bootstrap_config: Option<PathBuf>,
    /// Work under this directory instead of / (every file read or written by path, for tests and
    /// image builds). TPM and PKCS#11 keys are not affected.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

impl ConfigArgs {
    /// The source these flags say.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            config_source: self.config_source.clone(),
            bootstrap_config: self.bootstrap_config.clone(),
            root: self.root.clone(),
        }
    }
}

/// Runs `firstboot`.
pub fn run_firstboot(args: FirstbootArgs) -> anyhow::Result<()> {
    let placement = super::node::root_rule(
        &args.source.root,
        (args.no_start, args.start),
        args.hybridboot_path.clone(),
    );
    if args.dry_run {
        return super::print(&firstboot::dry_run(&args.source.source(), &placement)?.render_text());
    }
    firstboot::run(&args.source.source(), &placement)
}

/// `hybridboot status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The configuration to read when first boot has not run (a node set up by hand): its node
    /// name and certificate are shown (taken under --root, like every path).
    #[arg(
        long,
        short = 'c',
        value_name = "SOURCE",
        default_value = "file:///etc/hybridboot/config.yaml"
    )]
    pub config_source: String,
    /// The BootstrapConfig in its own file [default: the document next to the NodeConfig].
    #[arg(long, value_name = "FILE")]
    pub bootstrap_config: Option<PathBuf>,
    /// Read under this directory instead of /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Runs `status`.
pub fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let source = ConfigSource {
        config_source: args.config_source.clone(),
        bootstrap_config: args.bootstrap_config.clone(),
        root: args.root.clone(),
    };
    let v = status::collect_with_config(&source, SystemTime::now())?;
    if args.json {
        let mut text = serde_json::to_string_pretty(&v).expect("json");
        text.push('\n');
        super::print(&text)
    } else {
        super::print(&status::render_text(&v))
    }
}
