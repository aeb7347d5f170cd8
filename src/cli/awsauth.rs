//! `aws-auth render` and `access-entry render`: the cluster side of letting the node role in.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::emit;
use crate::awsauth::{access_entry_json, mappings, merge, render, AdminSpec};
use crate::error::ResultExt;

/// The flags of `aws-auth render` as clap sees them; [`AwsAuthRenderArgs`] pairs them up.
#[derive(Args, Debug)]
struct RenderFlags {
    /// The hybrid nodes' IAM role (its path, if any, is stripped: aws-auth cannot match it).
    #[arg(long, value_name = "ARN")]
    node_role_arn: String,
    /// An IAM role for people, followed by one or more --group (and optionally --username).
    /// Repeatable.
    #[arg(long = "admin-role-arn", value_name = "ARN")]
    admin_role_arns: Vec<String>,
    /// A Kubernetes group for the preceding --admin-role-arn, e.g. system:masters.
    #[arg(long = "group", value_name = "GROUP")]
    groups: Vec<String>,
    /// Kubernetes username for the preceding --admin-role-arn [default: ROLENAME:{{SessionName}}].
    #[arg(long = "username", value_name = "NAME")]
    usernames: Vec<String>,
    /// Merge into this existing ConfigMap (kubectl get cm aws-auth -n kube-system -o yaml)
    /// instead of rendering a new one.
    #[arg(long, value_name = "FILE")]
    merge: Option<PathBuf>,
    /// With --merge: overwrite an existing entry that maps the same role differently.
    #[arg(long, requires = "merge")]
    replace: bool,
    /// Write the YAML to this file (atomically, mode 0644; may be the --merge file) instead of
    /// stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Arguments of `hybridboot aws-auth render`: the flags, with each `--group`/`--username`
/// attached to the `--admin-role-arn` before it on the command line.
#[derive(Debug)]
pub struct AwsAuthRenderArgs {
    /// `--node-role-arn`.
    pub node_role_arn: String,
    /// Each `--admin-role-arn` with its groups and username.
    pub admins: Vec<AdminSpec>,
    /// `--merge`.
    pub merge: Option<PathBuf>,
    /// `--replace`.
    pub replace: bool,
    /// `--out`.
    pub out: Option<PathBuf>,
}

impl clap::FromArgMatches for AwsAuthRenderArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = RenderFlags::from_arg_matches(m)?;
        let indexed = |id: &str, values: &[String]| -> Vec<(usize, String)> {
            m.indices_of(id)
                .map(|ix| ix.zip(values.iter().cloned()).collect())
                .unwrap_or_default()
        };
        let roles = indexed("admin_role_arns", &flags.admin_role_arns);
        let mut admins: Vec<AdminSpec> = roles
            .iter()
            .map(|(_, arn)| AdminSpec {
                role_arn: arn.clone(),
                groups: Vec::new(),
                username: None,
            })
            .collect();
        let owner = |at: usize, flag: &str| -> Result<usize, clap::Error> {
            roles.iter().rposition(|(i, _)| *i < at).ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("{flag} must follow the --admin-role-arn it applies to"),
                )
            })
        };
        for (at, group) in indexed("groups", &flags.groups) {
            admins[owner(at, "--group")?].groups.push(group);
        }
        for (at, name) in indexed("usernames", &flags.usernames) {
            let i = owner(at, "--username")?;
            if admins[i].username.is_some() {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("--admin-role-arn {} has two --username", admins[i].role_arn),
                ));
            }
            admins[i].username = Some(name);
        }
        Ok(AwsAuthRenderArgs {
            node_role_arn: flags.node_role_arn,
            admins,
            merge: flags.merge,
            replace: flags.replace,
            out: flags.out,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for AwsAuthRenderArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        RenderFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        RenderFlags::augment_args_for_update(cmd)
    }
}

/// `hybridboot aws-auth ...`.
#[derive(Subcommand, Debug)]
pub enum AwsAuthCommand {
    /// Print the aws-auth ConfigMap mapping the node role (and admin roles), or merge them into
    /// an existing one.
    ///
    /// Example: hybridboot aws-auth render --node-role-arn arn:aws:iam::111122223333:role/HybridNodes
    /// --admin-role-arn arn:aws:iam::111122223333:role/KubernetesAdmin --group system:masters
    Render(AwsAuthRenderArgs),
}

/// Arguments of `hybridboot access-entry render`.
#[derive(Args, Debug)]
pub struct AccessEntryArgs {
    /// The hybrid nodes' IAM role.
    #[arg(long, value_name = "ARN")]
    pub node_role_arn: String,
    /// The EKS cluster name.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: String,
    /// Write the JSON to this file (atomically, mode 0644) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `hybridboot access-entry ...`.
#[derive(Subcommand, Debug)]
pub enum AccessEntryCommand {
    /// Print the request for `aws eks create-access-entry --cli-input-json file://FILE` that lets
    /// the node role join as a hybrid node (type HYBRID_LINUX).
    Render(AccessEntryArgs),
}

/// Runs an `aws-auth` subcommand.
pub fn run_aws_auth(command: AwsAuthCommand) -> anyhow::Result<()> {
    let AwsAuthCommand::Render(args) = command;
    let (maps, warnings) = mappings(&args.node_role_arn, &args.admins).classed()?;
    for w in warnings {
        log::warn!("{w}");
    }
    let yaml = match &args.merge {
        None => render(&maps).classed()?,
        Some(path) => {
            let name = path.display().to_string();
            let existing = crate::fsutil::read_capped_string(path, crate::fsutil::MAX_TEXT_FILE)
                .with_context(|| format!("reading {name}"))?;
            let merged = merge(&existing, &name, &maps, args.replace).classed()?;
            for w in &merged.warnings {
                log::warn!("{name}: {w}");
            }
            if merged.changed.is_empty() {
                log::info!("{name} already maps every role; unchanged");
            }
            for c in &merged.changed {
                log::info!("{c}");
            }
            merged.yaml
        }
    };
    emit(args.out.as_ref(), yaml.as_bytes(), "aws-auth ConfigMap")
}

/// Runs an `access-entry` subcommand.
pub fn run_access_entry(command: AccessEntryCommand) -> anyhow::Result<()> {
    let AccessEntryCommand::Render(args) = command;
    let json = access_entry_json(&args.cluster_name, &args.node_role_arn).classed()?;
    emit(args.out.as_ref(), json.as_bytes(), "access entry request")
}
