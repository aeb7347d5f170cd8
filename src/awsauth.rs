//! Mapping IAM roles to Kubernetes identities (docs/protocols.md §7): the `aws-auth` ConfigMap that
//! aws-iam-authenticator reads, and the EKS access entry that replaces it.
//!
//! Both map the hybrid node role to `system:node:{{SessionName}}` in `system:bootstrappers` and
//! `system:nodes` (the Roles Anywhere session name is the node name). The ConfigMap is rendered
//! fresh or merged into an existing one (`kubectl get cm aws-auth -n kube-system -o yaml`):
//! entries already present are not added again, everything else (mapUsers, mapAccounts, other
//! roles, metadata) is kept, and merging the result again changes nothing.
//!
//! aws-auth matches the *session's* role ARN, which STS reports without the role's path
//! (`assumed-role/NAME/SESSION`), so an entry with a path never matches. Per the EKS user guide,
//! aws-auth ARNs must not include a path; access entries may. Paths are therefore stripped (with
//! a warning) for aws-auth and kept for access entries.

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::{exit, fsutil};

/// Why a role ARN, a group or an existing ConfigMap was refused.
#[derive(Debug, thiserror::Error)]
pub enum AwsAuthError {
    /// Not an IAM role ARN of the form `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
    #[error("{flag} {arn:?}: {detail}")]
    BadArn {
        flag: String,
        arn: String,
        detail: String,
    },
    /// The existing ConfigMap cannot be read or is not aws-auth.
    #[error("{source_name}: {detail}")]
    BadConfigMap { source_name: String, detail: String },
    /// The existing ConfigMap maps the role differently (`detail` says how).
    #[error("{source_name}: mapRoles already maps {rolearn} {detail}; pass --replace to overwrite that entry, or edit it by hand")]
    Conflict {
        source_name: String,
        rolearn: String,
        detail: String,
    },
    /// A bad cluster name, group or username.
    #[error("{0}")]
    Invalid(String),
}

/// A parsed IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: String,
    /// Twelve digits.
    pub account: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// The role name (1-64 characters of `A-Za-z0-9+=,.@_-`).
    pub name: String,
}

impl RoleArn {
    /// Parses `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`; `flag` names the input in errors.
    pub fn parse(arn: &str, flag: &str) -> Result<RoleArn, AwsAuthError> {
        let bad = |detail: &str| AwsAuthError::BadArn {
            flag: flag.to_string(),
            arn: arn.to_string(),
            detail: detail.to_string(),
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(bad(
                "not an ARN; expected arn:aws:iam::111122223333:role/NAME",
            ));
        }
        let (partition, service, region, account, resource) =
            (parts[1], parts[2], parts[3], parts[4], parts[5]);
        if service == "sts" && resource.starts_with("assumed-role/") {
            return Err(bad("this is an assumed-role session ARN; pass the role's own ARN, arn:aws:iam::ACCOUNT:role/NAME"));
        }
        if service != "iam" || !region.is_empty() {
            return Err(bad(
                "not an IAM ARN (expected arn:PARTITION:iam::ACCOUNT:role/NAME)",
            ));
        }
        if partition.is_empty()
            || !partition.starts_with("aws")
            || !partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "unknown partition (expected aws, aws-cn, aws-us-gov, ...)",
            ));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account id must be 12 digits"));
        }
        let Some(rest) = resource.strip_prefix("role/") else {
            if resource.starts_with("user/") {
                return Err(bad("this is an IAM user; a role is needed here"));
            }
            return Err(bad("not a role ARN (expected ...:role/NAME)"));
        };
        let (path, name) = match rest.rfind('/') {
            Some(i) => (format!("/{}", &rest[..=i]), &rest[i + 1..]),
            None => ("/".to_string(), rest),
        };
        if name.is_empty() || name.len() > 64 {
            return Err(bad("the role name must be 1 to 64 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
        {
            return Err(bad(
                "the role name may contain only letters, digits and + = , . @ _ -",
            ));
        }
        if path.len() > 512
            || path.contains("//")
            || !path.bytes().all(|b| (0x21..=0x7e).contains(&b))
        {
            return Err(bad(
                "invalid role path (printable ASCII segments, at most 512 characters)",
            ));
        }
        Ok(RoleArn {
            partition: partition.to_string(),
            account: account.to_string(),
            path,
            name: name.to_string(),
        })
    }

    /// The ARN as IAM shows it (with the path).
    pub fn full(&self) -> String {
        format!(
            "arn:{}:iam::{}:role{}{}",
            self.partition, self.account, self.path, self.name
        )
    }

    /// The ARN without its path: the only form aws-auth matches.
    pub fn without_path(&self) -> String {
        format!(
            "arn:{}:iam::{}:role/{}",
            self.partition, self.account, self.name
        )
    }
}

/// One `mapRoles` entry, keys in the order the EKS guides write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleMapping {
    pub rolearn: String,
    pub username: String,
    pub groups: Vec<String>,
}

/// The username of hybrid nodes: the Roles Anywhere session name is the node name.
pub const NODE_USERNAME: &str = "system:node:{{SessionName}}";
/// The groups of nodes.
pub const NODE_GROUPS: [&str; 2] = ["system:bootstrappers", "system:nodes"];

/// What the caller asked to map, before ARN normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSpec {
    pub role_arn: String,
    pub groups: Vec<String>,
    pub username: Option<String>,
}

/// The mappings for a node role and admin roles, with paths stripped. Returns the mappings and
/// warnings for the operator (one per stripped path).
pub fn mappings(
    node_role_arn: &str,
    admins: &[AdminSpec],
) -> Result<(Vec<RoleMapping>, Vec<String>), AwsAuthError> {
    let mut warnings = Vec::new();
    let mut strip = |arn: &RoleArn, flag: &str| {
        if arn.path != "/" {
            warnings.push(format!(
                "{flag} {}: aws-auth matches role ARNs without their path (STS reports assumed roles without it); using {}",
                arn.full(),
                arn.without_path()
            ));
        }
        arn.without_path()
    };
    let node = RoleArn::parse(node_role_arn, "--node-role-arn")?;
    let mut out = vec![RoleMapping {
        rolearn: strip(&node, "--node-role-arn"),
        username: NODE_USERNAME.into(),
        groups: NODE_GROUPS.iter().map(|g| g.to_string()).collect(),
    }];
    for admin in admins {
        let arn = RoleArn::parse(&admin.role_arn, "--admin-role-arn")?;
        let rolearn = strip(&arn, "--admin-role-arn");
        if out.iter().any(|m| m.rolearn == rolearn) {
            return Err(AwsAuthError::Invalid(format!(
                "--admin-role-arn {}: role is given twice (or is the node role); aws-auth maps each role once",
                admin.role_arn
            )));
        }
        if admin.groups.is_empty() {
            return Err(AwsAuthError::Invalid(format!(
                "--admin-role-arn {}: no --group after it; add e.g. --group system:masters for cluster administrators",
                admin.role_arn
            )));
        }
        for g in &admin.groups {
            check_name(g, "--group")?;
        }
        let username = match &admin.username {
            Some(u) => {
                check_name(u, "--username")?;
                u.clone()
            }
            // Who did what stays visible in the audit log: the role name plus the session name
            // of whoever assumed it.
            None => format!("{}:{{{{SessionName}}}}", arn.name),
        };
        out.push(RoleMapping {
            rolearn,
            username,
            groups: admin.groups.clone(),
        });
    }
    Ok((out, warnings))
}

fn check_name(value: &str, flag: &str) -> Result<(), AwsAuthError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AwsAuthError::Invalid(format!(
            "{flag} {value:?}: must be non-empty, without spaces"
        )));
    }
    Ok(())
}

fn yaml_error(source_name: &str, what: &str, e: impl std::fmt::Display) -> AwsAuthError {
    AwsAuthError::BadConfigMap {
        source_name: source_name.to_string(),
        detail: format!("{what}: {e}"),
    }
}

/// The mapRoles string for a list of mappings.
fn map_roles_text(entries: &[Value]) -> Result<String, AwsAuthError> {
    serde_yaml_ng::to_string(entries).map_err(|e| yaml_error("mapRoles", "encoding", e))
}

fn mapping_value(m: &RoleMapping) -> Value {
    serde_yaml_ng::to_value(m).expect("a struct of strings always encodes")
}

/// A fresh aws-auth ConfigMap holding `mappings`.
pub fn render(mappings: &[RoleMapping]) -> Result<String, AwsAuthError> {
    let entries: Vec<Value> = mappings.iter().map(mapping_value).collect();
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), "aws-auth".into());
    metadata.insert("namespace".into(), "kube-system".into());
    let mut data = Mapping::new();
    data.insert("mapRoles".into(), map_roles_text(&entries)?.into());
    let mut cm = Mapping::new();
    cm.insert("apiVersion".into(), "v1".into());
    cm.insert("kind".into(), "ConfigMap".into());
    cm.insert("metadata".into(), Value::Mapping(metadata));
    cm.insert("data".into(), Value::Mapping(data));
    serde_yaml_ng::to_string(&Value::Mapping(cm)).map_err(|e| yaml_error("aws-auth", "encoding", e))
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The ConfigMap YAML to apply.
    pub yaml: String,
    /// Mappings added or replaced (empty: the input already had them all and is returned as
    /// it was, byte for byte).
    pub changed: Vec<String>,
    /// Problems in the existing entries that were left alone.
    pub warnings: Vec<String>,
}

/// Merges `mappings` into an existing aws-auth ConfigMap (YAML or JSON, as kubectl prints it).
///
/// An entry whose `rolearn` (path stripped) is already mapped with the same username and groups
/// is left alone; one mapped differently is a [`AwsAuthError::Conflict`] unless `replace`, in
/// which case its username and groups are overwritten in place (other keys of that entry kept).
/// Nothing else in the document is touched.
pub fn merge(
    existing: &str,
    source_name: &str,
    mappings: &[RoleMapping],
    replace: bool,
) -> Result<Merged, AwsAuthError> {
    let bad = |detail: String| AwsAuthError::BadConfigMap {
        source_name: source_name.to_string(),
        detail,
    };
    let mut doc: Value =
        serde_yaml_ng::from_str(existing).map_err(|e| yaml_error(source_name, "not YAML", e))?;
    let Some(cm) = doc.as_mapping_mut() else {
        return Err(bad("not a ConfigMap object".into()));
    };
    let field = |cm: &Mapping, key: &str| cm.get(key).and_then(Value::as_str).map(str::to_string);
    match field(cm, "kind").as_deref() {
        Some("ConfigMap") => {}
        Some(other) => {
            return Err(bad(format!(
                "kind is {other:?}, not ConfigMap (save the output of kubectl get configmap aws-auth -n kube-system -o yaml)"
            )))
        }
        None => return Err(bad("has no kind: ConfigMap".into())),
    }
    if let Some(v) = field(cm, "apiVersion") {
        if v != "v1" {
            return Err(bad(format!("apiVersion is {v:?}, not v1")));
        }
    }
    let meta = cm.get("metadata").and_then(Value::as_mapping);
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
    if name != Some("aws-auth") {
        return Err(bad(format!(
            "metadata.name is {name:?}, not \"aws-auth\"; aws-iam-authenticator reads only kube-system/aws-auth"
        )));
    }
    if let Some(ns) = meta.and_then(|m| m.get("namespace")) {
        if ns.as_str() != Some("kube-system") {
            return Err(bad(format!(
                "metadata.namespace is {ns:?}, not kube-system"
            )));
        }
    }

    let data_slot = cm
        .entry("data".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if data_slot.is_null() {
        *data_slot = Value::Mapping(Mapping::new());
    }
    let Some(data) = data_slot.as_mapping_mut() else {
        return Err(bad("data is not a mapping".into()));
    };
    let mut entries: Vec<Value> = match data.get("mapRoles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => match serde_yaml_ng::from_str::<Value>(text) {
            Ok(Value::Sequence(seq)) => seq,
            Ok(Value::Null) => Vec::new(),
            Ok(_) => return Err(bad("data.mapRoles is not a YAML list".into())),
            Err(e) => return Err(yaml_error(source_name, "data.mapRoles is not YAML", e)),
        },
        Some(_) => {
            return Err(bad(
                "data.mapRoles must be a string (ConfigMap data values are strings)".into(),
            ))
        }
    };

    let warnings = dead_entries(&entries);
    let mut changed = Vec::new();
    for m in mappings {
        let found = entries.iter().position(|e| {
            e.get("rolearn")
                .and_then(Value::as_str)
                .map(|a| same_role(a, &m.rolearn))
                .unwrap_or(false)
        });
        match found {
            None => {
                entries.push(mapping_value(m));
                changed.push(format!("added {} as {}", m.rolearn, m.username));
            }
            Some(i) => {
                let entry = &entries[i];
                let username = entry
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let groups: Vec<String> = entry
                    .get("groups")
                    .and_then(Value::as_sequence)
                    .map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut have = groups.clone();
                have.sort();
                let mut want = m.groups.clone();
                want.sort();
                if username == m.username && have == want {
                    continue;
                }
                if !replace {
                    return Err(AwsAuthError::Conflict {
                        source_name: source_name.to_string(),
                        rolearn: m.rolearn.clone(),
                        detail: format!(
                            "as username {username:?} groups {groups:?}, not {:?} groups {:?}",
                            m.username, m.groups
                        ),
                    });
                }
                let entry = entries[i].as_mapping_mut().expect("matched a mapping");
                entry.insert("username".into(), m.username.clone().into());
                entry.insert(
                    "groups".into(),
                    Value::Sequence(m.groups.iter().map(|g| g.clone().into()).collect()),
                );
                changed.push(format!("replaced the mapping of {}", m.rolearn));
            }
        }
    }
    if changed.is_empty() {
        return Ok(Merged {
            yaml: existing.to_string(),
            changed,
            warnings,
        });
    }
    data.insert("mapRoles".into(), map_roles_text(&entries)?.into());
    let yaml =
        serde_yaml_ng::to_string(&doc).map_err(|e| yaml_error(source_name, "encoding", e))?;
    Ok(Merged {
        yaml,
        changed,
        warnings,
    })
}

/// Whether an existing `rolearn` maps the wanted (path-less) role. An existing entry with a
/// path is *not* the same: aws-iam-authenticator never matches it, so the node would not join.
fn same_role(existing: &str, wanted: &str) -> bool {
    existing == wanted
}

/// Warnings about existing entries that can never match (role ARN with a path).
fn dead_entries(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e.get("rolearn").and_then(Value::as_str))
        .filter_map(|a| RoleArn::parse(a, "rolearn").ok())
        .filter(|a| a.path != "/")
        .map(|a| {
            format!(
                "existing mapRoles entry {} has a path and never matches (aws-auth needs {}); fix or remove it",
                a.full(),
                a.without_path()
            )
        })
        .collect()
}

/// The JSON for `aws eks create-access-entry --cli-input-json` (the node role may keep its path
/// here; access entries accept it).
pub fn access_entry_json(cluster_name: &str, node_role_arn: &str) -> Result<String, AwsAuthError> {
    let arn = RoleArn::parse(node_role_arn, "--node-role-arn")?;
    // EKS cluster names: 1-100 characters, a letter or digit first, then letters, digits, - and _.
    let valid_name = !cluster_name.is_empty()
        && cluster_name.len() <= 100
        && cluster_name.as_bytes()[0].is_ascii_alphanumeric()
        && cluster_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(AwsAuthError::Invalid(format!(
            "--cluster-name {cluster_name:?}: EKS cluster names are 1-100 letters, digits, - and _, starting with a letter or digit"
        )));
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster_name: String,
        principal_arn: String,
        #[serde(rename = "type")]
        type_: &'static str,
    }
    let req = Request {
        cluster_name: cluster_name.to_string(),
        principal_arn: arn.full(),
        type_: "HYBRID_LINUX",
    };
    let mut out = serde_json::to_string_pretty(&req).expect("strings always encode");
    out.push('\n');
    Ok(out)
}

/// The flags of `aws-auth render` as clap sees them; [`AwsAuthRenderArgs`] pairs them up.
#[derive(clap::Args, Debug)]
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
    pub node_role_arn: String,
    pub admins: Vec<AdminSpec>,
    pub merge: Option<PathBuf>,
    pub replace: bool,
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
#[derive(clap::Subcommand, Debug)]
pub enum AwsAuthCommand {
    /// Print the aws-auth ConfigMap mapping the node role (and admin roles), or merge them into
    /// an existing one.
    ///
    /// Example: hybridboot aws-auth render --node-role-arn arn:aws:iam::111122223333:role/HybridNodes
    /// --admin-role-arn arn:aws:iam::111122223333:role/KubernetesAdmin --group system:masters
    Render(AwsAuthRenderArgs),
}

/// Arguments of `hybridboot access-entry render`.
#[derive(clap::Args, Debug)]
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
#[derive(clap::Subcommand, Debug)]
pub enum AccessEntryCommand {
    /// Print the request for `aws eks create-access-entry --cli-input-json file://FILE` that lets
    /// the node role join as a hybrid node (type HYBRID_LINUX).
    Render(AccessEntryArgs),
}

fn emit(out: Option<&PathBuf>, text: &str, what: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            fsutil::atomic_write(path, text.as_bytes(), &fsutil::WriteOptions::public())
                .with_context(|| format!("writing {what} to {}", path.display()))?;
            log::info!("{what} written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Runs an `aws-auth` subcommand.
pub fn run_aws_auth(command: AwsAuthCommand) -> anyhow::Result<()> {
    let AwsAuthCommand::Render(args) = command;
    let (maps, warnings) =
        mappings(&args.node_role_arn, &args.admins).map_err(|e| exit::operator(e.to_string()))?;
    for w in warnings {
        log::warn!("{w}");
    }
    let yaml = match &args.merge {
        None => render(&maps).map_err(|e| exit::operator(e.to_string()))?,
        Some(path) => {
            let name = path.display().to_string();
            let existing = crate::fsutil::read_capped_string(path, crate::fsutil::MAX_TEXT_FILE)
                .with_context(|| format!("reading {name}"))?;
            let merged = merge(&existing, &name, &maps, args.replace)
                .map_err(|e| exit::operator(e.to_string()))?;
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
    emit(args.out.as_ref(), &yaml, "aws-auth ConfigMap")
}

/// Runs an `access-entry` subcommand.
pub fn run_access_entry(command: AccessEntryCommand) -> anyhow::Result<()> {
    let AccessEntryCommand::Render(args) = command;
    let json = access_entry_json(&args.cluster_name, &args.node_role_arn)
        .map_err(|e| exit::operator(e.to_string()))?;
    emit(args.out.as_ref(), &json, "access entry request")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "arn:aws:iam::111122223333:role/HybridNodes";

    #[test]
    fn role_arn_rules() {
        let a = RoleArn::parse("arn:aws:iam::111122223333:role/teams/dev/my-role", "f").unwrap();
        assert_eq!(a.path, "/teams/dev/");
        assert_eq!(a.name, "my-role");
        assert_eq!(a.without_path(), "arn:aws:iam::111122223333:role/my-role");
        assert_eq!(a.full(), "arn:aws:iam::111122223333:role/teams/dev/my-role");
        let b = RoleArn::parse("arn:aws-cn:iam::111122223333:role/x", "f").unwrap();
        assert_eq!(b.path, "/");
        for (bad, why) in [
            ("arn:aws:sts::111122223333:assumed-role/r/s", "assumed-role"),
            ("arn:aws:iam::111122223333:user/bob", "IAM user"),
            ("arn:aws:iam::1111:role/x", "12 digits"),
            (
                "arn:aws:iam:us-east-1:111122223333:role/x",
                "not an IAM ARN",
            ),
            ("role/x", "not an ARN"),
            ("arn:aws:iam::111122223333:role/", "1 to 64"),
            ("arn:aws:iam::111122223333:role/a b", "may contain only"),
            ("arn:aws:iam::111122223333:role/a//b", "invalid role path"),
        ] {
            let e = RoleArn::parse(bad, "--node-role-arn")
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.starts_with("--node-role-arn"), "{e}");
        }
    }

    #[test]
    fn paths_are_stripped_with_a_warning() {
        let (m, w) = mappings("arn:aws:iam::111122223333:role/edge/HybridNodes", &[]).unwrap();
        assert_eq!(m[0].rolearn, NODE);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("without their path"), "{}", w[0]);
    }

    #[test]
    fn admins_need_groups_and_unique_roles() {
        let admin = |arn: &str, groups: &[&str]| AdminSpec {
            role_arn: arn.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            username: None,
        };
        let e = mappings(NODE, &[admin("arn:aws:iam::111122223333:role/Admin", &[])]).unwrap_err();
        assert!(e.to_string().contains("system:masters"), "{e}");
        let e = mappings(NODE, &[admin(NODE, &["system:masters"])]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let (m, _) = mappings(
            NODE,
            &[admin(
                "arn:aws:iam::111122223333:role/Admin",
                &["system:masters"],
            )],
        )
        .unwrap();
        assert_eq!(m[1].username, "Admin:{{SessionName}}");
    }

    #[test]
    fn merge_is_idempotent_and_keeps_the_rest() {
        let existing = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\n  namespace: kube-system\n  resourceVersion: \"42\"\ndata:\n  mapUsers: |\n    - userarn: arn:aws:iam::111122223333:user/alice\n      username: alice\n      groups: [system:masters]\n";
        let (m, _) = mappings(NODE, &[]).unwrap();
        let once = merge(existing, "cm.yaml", &m, false).unwrap();
        assert_eq!(once.changed.len(), 1);
        assert!(
            once.yaml.contains("resourceVersion: '42'")
                || once.yaml.contains("resourceVersion: \"42\""),
            "{}",
            once.yaml
        );
        assert!(once.yaml.contains("user/alice"));
        let twice = merge(&once.yaml, "cm.yaml", &m, false).unwrap();
        assert!(twice.changed.is_empty());
        assert_eq!(twice.yaml, once.yaml);
    }

    #[test]
    fn conflicting_entry_needs_replace() {
        let existing = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\n  namespace: kube-system\ndata:\n  mapRoles: |\n    - rolearn: {NODE}\n      username: wrong\n      groups: [system:nodes]\n");
        let (m, _) = mappings(NODE, &[]).unwrap();
        let e = merge(&existing, "cm.yaml", &m, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--replace"), "{e}");
        let r = merge(&existing, "cm.yaml", &m, true).unwrap();
        assert!(r.yaml.contains("system:bootstrappers"), "{}", r.yaml);
        assert!(!r.yaml.contains("wrong"), "{}", r.yaml);
    }

    #[test]
    fn existing_entry_with_path_is_not_taken_for_the_role() {
        let existing = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\n  namespace: kube-system\ndata:\n  mapRoles: |\n    - rolearn: arn:aws:iam::111122223333:role/edge/HybridNodes\n      username: system:node:{{SessionName}}\n      groups: [system:bootstrappers, system:nodes]\n";
        let (m, _) = mappings(NODE, &[]).unwrap();
        let r = merge(existing, "cm.yaml", &m, false).unwrap();
        assert_eq!(r.changed.len(), 1);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("never matches"));
        assert!(r.yaml.contains("role/edge/HybridNodes") && r.yaml.contains(NODE));
    }

    #[test]
    fn merge_refuses_other_objects() {
        let (m, _) = mappings(NODE, &[]).unwrap();
        for (doc, why) in [
            ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: aws-auth\n", "not ConfigMap"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n", "aws-auth"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\n  namespace: default\n", "kube-system"),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aws-auth\ndata:\n  mapRoles: |\n    rolearn: x\n", "not a YAML list"),
            ("- a\n- b\n", "not a ConfigMap"),
        ] {
            let e = merge(doc, "cm.yaml", &m, false).unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("cm.yaml: "), "{doc}: {e}");
        }
    }

    #[test]
    fn access_entry_shape() {
        let j = access_entry_json(
            "my-cluster",
            "arn:aws:iam::111122223333:role/edge/HybridNodes",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"clusterName": "my-cluster", "principalArn": "arn:aws:iam::111122223333:role/edge/HybridNodes", "type": "HYBRID_LINUX"})
        );
        assert!(access_entry_json("-bad", NODE).is_err());
    }
}
