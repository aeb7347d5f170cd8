//! NodeConfig (`node.eks.aws/v1alpha1`, kind `NodeConfig`): the file operators already write for
//! `nodeadm init`, read strictly.
//!
//! Layers: the YAML text is split into documents; each document's `apiVersion`/`kind` decides
//! what it is; the NodeConfig document is decoded into raw serde structs that reject unknown
//! fields (the error names the file, line, column and the allowed keys); one [`validate`] turns
//! the raw structs into typed settings ([`NodeConfig`]) and collects warnings for things nodeadm
//! accepts but that are probably wrong (ARN syntax). A `hybridboot/v1alpha1` `BootstrapConfig`
//! document next to the NodeConfig is returned untouched as a [`RawDocument`].

use crate::error::{Class, Classify};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer};

use crate::key::KeyRef;
use crate::secret::Secret;

/// `apiVersion` of nodeadm's NodeConfig.
pub const NODECONFIG_API_VERSION: &str = "node.eks.aws/v1alpha1";
/// `kind` of nodeadm's NodeConfig.
pub const NODECONFIG_KIND: &str = "NodeConfig";
/// `apiVersion` of hybridboot's own documents.
pub const HYBRIDBOOT_API_VERSION: &str = "hybridboot/v1alpha1";
/// `kind` of hybridboot's first-boot document.
pub const BOOTSTRAP_KIND: &str = "BootstrapConfig";

/// nodeadm's default certificate path (`/etc/iam/pki/server.pem`).
pub const DEFAULT_CERTIFICATE_PATH: &str = "/etc/iam/pki/server.pem";
/// nodeadm's default private key path (`/etc/iam/pki/server.key`).
pub const DEFAULT_PRIVATE_KEY_PATH: &str = "/etc/iam/pki/server.key";
/// nodeadm's default AWS config path (`/etc/aws/hybrid/config`).
pub const DEFAULT_AWS_CONFIG_PATH: &str = "/etc/aws/hybrid/config";
/// Longest node name nodeadm accepts (it becomes the Roles Anywhere session name, max 64).
pub const MAX_NODE_NAME_LEN: usize = 64;

/// Why a configuration cannot be used. Every variant prints as one line naming the file and
/// the field, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config-source` is not something hybridboot can read.
    #[error("--config-source {source_arg:?}: {reason}")]
    Source { source_arg: String, reason: String },
    /// The file could not be read.
    #[error("cannot read configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax error, wrong type or unknown field, with its position.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A YAML problem without a position (rare: libyaml reports one for nearly everything).
    #[error("{}: {message}", path.display())]
    Document { path: PathBuf, message: String },
    /// No `NodeConfig` document in the file.
    #[error("{}: no document with apiVersion: {NODECONFIG_API_VERSION} and kind: {NODECONFIG_KIND}", path.display())]
    NoNodeConfig { path: PathBuf },
    /// No BootstrapConfig document where first boot expects one.
    #[error("{}: no document with apiVersion: {HYBRIDBOOT_API_VERSION} and kind: {BOOTSTRAP_KIND}; add one next to the NodeConfig or give --bootstrap-config FILE", path.display())]
    NoBootstrapConfig { path: PathBuf },
    /// Problems found in the text before parsing (TAB indentation, unsubstituted
    /// placeholders), every one of them.
    #[error("{}: {}", path.display(), problems.join("; "))]
    Text {
        path: PathBuf,
        /// One message per problem, each naming its line(s).
        problems: Vec<String>,
    },
    /// A value is missing or invalid.
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

impl Classify for ConfigError {
    /// A missing, unreadable or invalid configuration needs an operator.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// A non-fatal finding: accepted (nodeadm accepts it too) but worth an operator's look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The field, as a YAML path (`spec.hybrid.iamRolesAnywhere.roleArn`).
    pub field: &'static str,
    /// What looks wrong.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A document of another kind found next to the NodeConfig, kept as text so that its own parser
/// can report positions in the original file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDocument {
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    /// Line (1-based) of the file where the document's text starts.
    pub first_line: usize,
    /// The document's text, exactly as in the file.
    pub text: String,
}

impl RawDocument {
    /// The text preceded by blank lines, so that a YAML parser's line numbers are the file's.
    pub fn text_with_file_lines(&self) -> String {
        let mut s = "\n".repeat(self.first_line.saturating_sub(1));
        s.push_str(&self.text);
        s
    }
}

/// Everything read from a configuration source.
#[derive(Debug)]
pub struct Loaded {
    /// Where it came from.
    pub path: PathBuf,
    /// The validated NodeConfig.
    pub node: NodeConfig,
    /// hybridboot's `BootstrapConfig` document, if the file has one.
    pub bootstrap: Option<RawDocument>,
    /// Accepted oddities.
    pub warnings: Vec<Warning>,
}

// ---------------------------------------------------------------------------------------------
// Typed settings.

/// A validated NodeConfig with nodeadm's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `metadata.name`, if given.
    pub name: Option<String>,
    /// `spec.cluster`.
    pub cluster: Cluster,
    /// `spec.kubelet`.
    pub kubelet: Kubelet,
    /// `spec.containerd.config`: user TOML written as a drop-in.
    pub containerd_config: Option<String>,
    /// `spec.hybrid.enableCredentialsFile`: keep a shared credentials file refreshed by a unit.
    pub enable_credentials_file: bool,
    /// `spec.hybrid.iamRolesAnywhere`.
    pub iam_roles_anywhere: IamRolesAnywhere,
}

/// `spec.cluster`; the optional parts are filled from DescribeCluster when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// EKS cluster name.
    pub name: String,
    /// Cluster region.
    pub region: String,
    /// `apiServerEndpoint`.
    pub api_server_endpoint: Option<String>,
    /// `certificateAuthority`, decoded from base64 (PEM bytes).
    pub certificate_authority: Option<Vec<u8>>,
    /// `cidr`: the service CIDR.
    pub cidr: Option<String>,
}

impl Cluster {
    /// True when DescribeCluster is needed to fill endpoint, CA or service CIDR (nodeadm's rule).
    pub fn needs_cluster_details(&self) -> bool {
        self.api_server_endpoint.is_none()
            || self.certificate_authority.is_none()
            || self.cidr.is_none()
    }
}

/// `spec.kubelet`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kubelet {
    /// User KubeletConfiguration fields merged over (or dropped in next to) the defaults.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Extra kubelet flags, appended after hybridboot's so that they win.
    pub flags: Vec<String>,
}

/// `spec.hybrid.iamRolesAnywhere` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamRolesAnywhere {
    /// Kubernetes node name, Roles Anywhere session name and certificate CN.
    pub node_name: String,
    /// `trustAnchorArn`.
    pub trust_anchor_arn: String,
    /// `profileArn`.
    pub profile_arn: String,
    /// `roleArn`.
    pub role_arn: String,
    /// `awsConfigPath`: where the AWS config with `credential_process` is written.
    pub aws_config_path: PathBuf,
    /// `certificatePath`.
    pub certificate_path: PathBuf,
    /// `privateKeyPath` as written (a path, or a key reference), for rendering.
    pub private_key: String,
    /// `privateKeyPath` parsed as a key reference.
    pub private_key_ref: KeyRef,
}

// ---------------------------------------------------------------------------------------------
// Raw serde structs: what the file says, nothing more. Unknown fields are errors.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNodeConfig {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    spec: RawSpec,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    namespace: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    containerd: RawContainerd,
    #[serde(default)]
    kubelet: RawKubelet,
    #[serde(default)]
    hybrid: Option<RawHybrid>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    api_server_endpoint: Option<String>,
    #[serde(default, deserialize_with = "base64_bytes")]
    certificate_authority: Option<Vec<u8>>,
    #[serde(default)]
    cidr: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContainerd {
    #[serde(default)]
    config: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKubelet {
    #[serde(default)]
    config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHybrid {
    #[serde(default)]
    enable_credentials_file: Option<bool>,
    #[serde(default)]
    iam_roles_anywhere: Option<RawIamRolesAnywhere>,
    #[serde(default)]
    ssm: Option<RawSsm>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIamRolesAnywhere {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    trust_anchor_arn: Option<String>,
    #[serde(default)]
    profile_arn: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    aws_config_path: Option<String>,
    #[serde(default)]
    certificate_path: Option<String>,
    #[serde(default)]
    private_key_path: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSsm {
    #[serde(default, deserialize_with = "secret_string")]
    activation_code: Option<Secret>,
    #[serde(default)]
    activation_id: Option<String>,
}

/// A credential read straight into a [`Secret`], so no Debug output can show it.
fn secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

/// Only `apiVersion` and `kind`, to decide what a document is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypeMeta {
    #[serde(default)]
    pub(crate) api_version: Option<String>,
    #[serde(default)]
    pub(crate) kind: Option<String>,
}

/// `certificateAuthority` is base64 (Go's `[]byte` in JSON/YAML): decoded while the parser still
/// knows the position, so a bad value is reported with its line and column.
fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    let Some(text) = text else { return Ok(None) };
    // Go's decoder skips line breaks; operators paste wrapped base64.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "certificateAuthority is not valid base64 ({e}): paste the output of `base64 -w0 ca.crt`"
            ))
        })
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Where `--config-source` points: nodeadm's `file://` URL (host + path, so `file://x.yaml` is
/// the relative path `x.yaml`) or a plain path.
pub fn parse_config_source(source: &str) -> Result<PathBuf, ConfigError> {
    let bad = |reason: &str| ConfigError::Source {
        source_arg: source.to_string(),
        reason: reason.to_string(),
    };
    if source.trim().is_empty() {
        return Err(bad("empty; give file:///path/to/nodeconfig.yaml or a path"));
    }
    if let Some(rest) = source.strip_prefix("file://") {
        // Go's url.Parse: host is up to the first '/', path is the rest; the result is
        // host+path with percent-escapes decoded. Query and fragment are not part of it.
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let decoded = percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| bad("the path is not valid UTF-8 after percent-decoding"))?;
        if decoded.is_empty() {
            return Err(bad(
                "file:// needs a path, e.g. file:///etc/eks/nodeconfig.yaml",
            ));
        }
        return Ok(PathBuf::from(decoded.into_owned()));
    }
    if let Some((scheme, _)) = source.split_once("://") {
        let reason = if scheme == "imds" {
            "imds:// reads EC2 user data; hybrid nodes have none. Use file:///path or a path"
                .to_string()
        } else {
            format!("unsupported scheme {scheme:?}; use file:///path or a plain path")
        };
        return Err(bad(&reason));
    }
    Ok(PathBuf::from(source))
}

/// The file `--config-source` names on the node whose `/` is `root`, by the `--root` rule: a
/// relative path is taken from the current directory, then the whole path under `root` as a
/// chroot would resolve it ([`crate::fsutil::under_root`]). With root `/`, the path as given.
pub fn source_path(source: &str, root: &Path) -> Result<PathBuf, ConfigError> {
    let path = parse_config_source(source)?;
    if root == Path::new("/") {
        return Ok(path);
    }
    let absolute = std::path::absolute(&path).unwrap_or(path);
    Ok(crate::fsutil::under_root(root, &absolute))
}

/// Reads and validates the configuration at `--config-source`.
pub fn load(source: &str) -> Result<Loaded, ConfigError> {
    load_under(source, Path::new("/"))
}

/// Reads and validates the configuration `--config-source` names on the node whose `/` is
/// `root` (see [`source_path`]); errors name the file under `root`.
pub fn load_under(source: &str, root: &Path) -> Result<Loaded, ConfigError> {
    let path = source_path(source, root)?;
    let meta = std::fs::metadata(&path).map_err(|e| ConfigError::Read {
        path: path.clone(),
        source: e,
    })?;
    if meta.is_dir() {
        return Err(ConfigError::Source {
            source_arg: source.to_string(),
            reason: format!(
                "{} is a directory; give the NodeConfig file itself",
                path.display()
            ),
        });
    }
    let text =
        crate::fsutil::read_capped_string(&path, crate::fsutil::MAX_TEXT_FILE).map_err(|e| {
            ConfigError::Read {
                path: path.clone(),
                source: e,
            }
        })?;
    parse(&path, &text)
}

/// Parses and validates configuration text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let problems = text_problems(text);
    if !problems.is_empty() {
        return Err(ConfigError::Text {
            path: path.to_path_buf(),
            problems,
        });
    }
    let mut node: Option<(NodeConfig, Vec<Warning>)> = None;
    let mut bootstrap: Option<RawDocument> = None;
    for doc in split_documents(text) {
        let padded = doc.text_with_file_lines();
        let meta: Option<TypeMeta> =
            serde_yaml_ng::from_str(&padded).map_err(|e| yaml_error(path, &e))?;
        // An empty document (only `---` or comments) is allowed, as in any YAML stream.
        let Some(meta) = meta else { continue };
        let api_version = meta.api_version.unwrap_or_default();
        let kind = meta.kind.unwrap_or_default();
        let at = |message: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: doc.first_line,
            column: 1,
            message,
        };
        match (api_version.as_str(), kind.as_str()) {
            (NODECONFIG_API_VERSION, NODECONFIG_KIND) => {
                if node.is_some() {
                    return Err(at(
                        "a second NodeConfig document; keep exactly one per file".into(),
                    ));
                }
                let raw: RawNodeConfig =
                    serde_yaml_ng::from_str(&padded).map_err(|e| yaml_error(path, &e))?;
                node = Some(validate(path, raw)?);
            }
            (HYBRIDBOOT_API_VERSION, BOOTSTRAP_KIND) => {
                if bootstrap.is_some() {
                    return Err(at(
                        "a second BootstrapConfig document; keep at most one per file".into(),
                    ));
                }
                bootstrap = Some(RawDocument {
                    api_version,
                    kind,
                    first_line: doc.first_line,
                    text: doc.text.clone(),
                });
            }
            ("", _) | (_, "") => {
                return Err(at(format!(
                    "document without apiVersion and kind; expected apiVersion: {NODECONFIG_API_VERSION}, kind: {NODECONFIG_KIND}"
                )))
            }
            (v, k) => {
                return Err(at(format!(
                    "unsupported document apiVersion: {v}, kind: {k}; expected {NODECONFIG_API_VERSION} {NODECONFIG_KIND} (or {HYBRIDBOOT_API_VERSION} {BOOTSTRAP_KIND})"
                )))
            }
        }
    }
    let Some((node, warnings)) = node else {
        return Err(ConfigError::NoNodeConfig {
            path: path.to_path_buf(),
        });
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        node,
        bootstrap,
        warnings,
    })
}

/// Splits a YAML stream at document markers. A line starting with `---` or `...` (followed by
/// a blank or the end of the line) is always a document boundary in YAML: such lines are
/// forbidden inside scalars, so splitting the text is exact.
pub(crate) fn split_documents(text: &str) -> Vec<RawDocument> {
    let is_marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches('\n');
        if is_marker(bare, "---") || is_marker(bare, "...") {
            if !current.is_empty() {
                docs.push(raw_doc(first_line, std::mem::take(&mut current)));
            }
            first_line = i + 1;
            if is_marker(bare, "...") {
                // The end marker belongs to no document; the next starts after it.
                first_line = i + 2;
                continue;
            }
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        docs.push(raw_doc(first_line, current));
    }
    docs
}

fn raw_doc(first_line: usize, text: String) -> RawDocument {
    RawDocument {
        api_version: String::new(),
        kind: String::new(),
        first_line,
        text,
    }
}

/// What the YAML parser would report badly or not at all, each problem with its line: TABs in
/// indentation (the parser's own message names neither TABs nor spaces), and `$NAME` /
/// `${NAME}` placeholders a provisioning step forgot to substitute (YAML takes them as text, so
/// the node would try to join as `$NODE_NAME`).
pub fn text_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut tab_lines = Vec::new();
    // (indent, key) of the mappings enclosing the current line, for the field's path.
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let content = line.trim_start_matches([' ', '\t']);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let lead = &line[..line.len() - content.len()];
        if lead.contains('\t') {
            tab_lines.push(number);
        }
        if content.starts_with("---") {
            stack.clear();
            continue;
        }
        let indent = lead.len();
        let item = content.trim_start_matches("- ");
        let key = item
            .split_once(':')
            .map(|(k, _)| k.trim())
            .filter(|k| !k.is_empty() && !k.contains(' ') && !k.starts_with(['"', '\'', '$', '-']));
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        let value = strip_comment(item);
        for placeholder in placeholders(value) {
            let mut field: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            if let Some(k) = key {
                field.push(k);
            }
            problems.push(format!(
                "line {number} ({}): unsubstituted placeholder {placeholder}: put the value in (the step meant to substitute it did not run)",
                if field.is_empty() { "?".to_string() } else { field.join(".") }
            ));
        }
        if let Some(k) = key {
            stack.push((indent, k.to_string()));
        }
    }
    if !tab_lines.is_empty() {
        let list: Vec<String> = tab_lines.iter().map(usize::to_string).collect();
        problems.insert(
            0,
            format!(
                "{} {} start{} with a TAB; YAML needs spaces for indentation: replace the TABs with spaces",
                if tab_lines.len() == 1 { "line" } else { "lines" },
                list.join(", "),
                if tab_lines.len() == 1 { "s" } else { "" }
            ),
        );
    }
    problems
}

/// The line without a trailing ` # comment`.
fn strip_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// `${NAME}` and `$NAME` (upper case, as environment variables are written) in `text`.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let rest = &text[i + 1..];
            if let Some(inner) = rest.strip_prefix('{') {
                if let Some(end) = inner.find('}') {
                    let name = &inner[..end];
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        found.push(format!("${{{name}}}"));
                        i += end + 3;
                        continue;
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > 1 && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                    found.push(format!("${name}"));
                    i += name.len() + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    found
}

pub(crate) fn yaml_error(path: &Path, e: &serde_yaml_ng::Error) -> ConfigError {
    let mut message = e.to_string();
    match e.location() {
        Some(loc) => {
            // The position is put in front, file:line:column style; drop its repeat.
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
            }
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line: loc.line(),
                column: loc.column(),
                message,
            }
        }
        None => ConfigError::Document {
            path: path.to_path_buf(),
            message,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: raw -> typed.

/// nodeadm's validation rules (plus a few that catch at `config check` what nodeadm only finds
/// half-way through `init`), and defaults. Returns the typed config and the warnings.
fn validate(path: &Path, raw: RawNodeConfig) -> Result<(NodeConfig, Vec<Warning>), ConfigError> {
    let invalid = |field: &'static str, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        field,
        message,
    };
    let mut warnings = Vec::new();
    let spec = raw.spec;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());

    let name = non_empty(spec.cluster.name).ok_or_else(|| {
        invalid(
            "spec.cluster.name",
            "missing: set the EKS cluster name this node joins".into(),
        )
    })?;
    let region = non_empty(spec.cluster.region).ok_or_else(|| {
        invalid(
            "spec.cluster.region",
            "missing: set the AWS region of the cluster, e.g. us-west-2".into(),
        )
    })?;
    if !is_region_like(&region) {
        return Err(invalid(
            "spec.cluster.region",
            format!("{region:?} is not an AWS region name such as us-west-2"),
        ));
    }
    let api_server_endpoint = non_empty(spec.cluster.api_server_endpoint);
    if let Some(ep) = &api_server_endpoint {
        if !(ep.starts_with("https://") || ep.starts_with("http://")) {
            return Err(invalid(
                "spec.cluster.apiServerEndpoint",
                format!("{ep:?} is not a URL; expected https://<id>.<region>.eks.amazonaws.com"),
            ));
        }
    }
    let cidr = non_empty(spec.cluster.cidr);
    if let Some(c) = &cidr {
        parse_cidr(c).map_err(|e| invalid("spec.cluster.cidr", e))?;
    }

    let flags = spec.kubelet.flags.unwrap_or_default();
    if let Some(flag) = flags
        .iter()
        .find(|f| *f == "--hostname-override" || f.starts_with("--hostname-override="))
    {
        return Err(invalid(
            "spec.kubelet.flags",
            format!(
                "{flag:?} is not supported for hybrid nodes: the node name is spec.hybrid.iamRolesAnywhere.nodeName"
            ),
        ));
    }

    let containerd_config = spec.containerd.config.filter(|c| !c.is_empty());
    if let Some(toml_text) = &containerd_config {
        if let Err(e) = toml_text.parse::<toml::Table>() {
            let detail = e.to_string().lines().next().unwrap_or_default().to_string();
            return Err(invalid(
                "spec.containerd.config",
                format!("not valid TOML: {detail}"),
            ));
        }
    }

    let Some(hybrid) = spec.hybrid else {
        return Err(invalid(
            "spec.hybrid",
            "missing: hybridboot configures EKS hybrid nodes; add spec.hybrid.iamRolesAnywhere"
                .into(),
        ));
    };
    let ira = match (hybrid.iam_roles_anywhere, hybrid.ssm) {
        (None, None) => return Err(invalid(
            "spec.hybrid",
            "either iamRolesAnywhere or ssm must be provided (hybridboot uses iamRolesAnywhere)"
                .into(),
        )),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "spec.hybrid",
                "only one of iamRolesAnywhere or ssm may be provided".into(),
            ))
        }
        (None, Some(ssm)) => {
            // Check what nodeadm checks, so the message is right, then say what hybridboot does.
            if ssm.activation_code.is_none() {
                return Err(invalid("spec.hybrid.ssm.activationCode", "missing".into()));
            }
            if ssm.activation_id.as_deref().unwrap_or("").is_empty() {
                return Err(invalid("spec.hybrid.ssm.activationId", "missing".into()));
            }
            return Err(invalid(
                "spec.hybrid.ssm",
                "SSM hybrid activations are not supported by hybridboot: its node identity is a hardware-bound key; use spec.hybrid.iamRolesAnywhere".into(),
            ));
        }
        (Some(ira), None) => ira,
    };

    let role_arn = non_empty(ira.role_arn).ok_or_else(|| {
        invalid(
            "spec.hybrid.iamRolesAnywhere.roleArn",
            "missing: the IAM role the node assumes".into(),
        )
    })?;
    let profile_arn = non_empty(ira.profile_arn).ok_or_else(|| {
        invalid(
            "spec.hybrid.iamRolesAnywhere.profileArn",
            "missing: the IAM Roles Anywhere profile ARN".into(),
        )
    })?;
    let trust_anchor_arn = non_empty(ira.trust_anchor_arn).ok_or_else(|| {
        invalid(
            "spec.hybrid.iamRolesAnywhere.trustAnchorArn",
            "missing: the IAM Roles Anywhere trust anchor ARN".into(),
        )
    })?;
    let node_name = ira.node_name.unwrap_or_default();
    if node_name.is_empty() {
        return Err(invalid(
            "spec.hybrid.iamRolesAnywhere.nodeName",
            "missing: the node's name, which is also its certificate's CN".into(),
        ));
    }
    if node_name.chars().count() > MAX_NODE_NAME_LEN {
        return Err(invalid(
            "spec.hybrid.iamRolesAnywhere.nodeName",
            format!(
                "{} characters; at most {MAX_NODE_NAME_LEN} are allowed (it is the IAM role session name)",
                node_name.chars().count()
            ),
        ));
    }
    if !is_dns_subdomain(&node_name) {
        warnings.push(Warning {
            field: "spec.hybrid.iamRolesAnywhere.nodeName",
            message: format!(
                "{node_name:?} is not a lowercase DNS name; Kubernetes will refuse to register the node"
            ),
        });
    }

    check_arn(
        &mut warnings,
        "spec.hybrid.iamRolesAnywhere.roleArn",
        &role_arn,
        "iam",
        "role/",
    );
    check_arn(
        &mut warnings,
        "spec.hybrid.iamRolesAnywhere.profileArn",
        &profile_arn,
        "rolesanywhere",
        "profile/",
    );
    check_arn(
        &mut warnings,
        "spec.hybrid.iamRolesAnywhere.trustAnchorArn",
        &trust_anchor_arn,
        "rolesanywhere",
        "trust-anchor/",
    );

    let aws_config_path =
        non_empty(ira.aws_config_path).unwrap_or_else(|| DEFAULT_AWS_CONFIG_PATH.into());
    if !aws_config_path.starts_with('/') {
        return Err(invalid(
            "spec.hybrid.iamRolesAnywhere.awsConfigPath",
            format!("{aws_config_path:?} must be an absolute path"),
        ));
    }
    let certificate_path =
        non_empty(ira.certificate_path).unwrap_or_else(|| DEFAULT_CERTIFICATE_PATH.into());
    if !certificate_path.starts_with('/') {
        return Err(invalid(
            "spec.hybrid.iamRolesAnywhere.certificatePath",
            format!("{certificate_path:?} must be an absolute path"),
        ));
    }
    let private_key =
        non_empty(ira.private_key_path).unwrap_or_else(|| DEFAULT_PRIVATE_KEY_PATH.into());
    let private_key_ref = KeyRef::parse(&private_key).map_err(|e| {
        invalid(
            "spec.hybrid.iamRolesAnywhere.privateKeyPath",
            format!("{e}; use a file path, handle:0x81..., pkcs11:token=..;object=.. or a TSS2 PEM file"),
        )
    })?;
    if let KeyRef::Path(p) = &private_key_ref {
        if !p.is_absolute() {
            return Err(invalid(
                "spec.hybrid.iamRolesAnywhere.privateKeyPath",
                format!("{private_key:?} must be an absolute path or a key reference"),
            ));
        }
    }
    private_key_ref
        .refuse_pin_value()
        .map_err(|e| invalid("spec.hybrid.iamRolesAnywhere.privateKeyPath", e))?;

    let node = NodeConfig {
        name: raw.metadata.and_then(|m| m.name),
        cluster: Cluster {
            name,
            region,
            api_server_endpoint,
            certificate_authority: spec.cluster.certificate_authority,
            cidr,
        },
        kubelet: Kubelet {
            config: spec.kubelet.config.unwrap_or_default(),
            flags,
        },
        containerd_config,
        enable_credentials_file: hybrid.enable_credentials_file.unwrap_or(false),
        iam_roles_anywhere: IamRolesAnywhere {
            node_name,
            trust_anchor_arn,
            profile_arn,
            role_arn,
            aws_config_path: aws_config_path.into(),
            certificate_path: certificate_path.into(),
            private_key,
            private_key_ref,
        },
    };
    Ok((node, warnings))
}

/// Warns (never fails: nodeadm's own fixtures use odd ARNs) when an ARN does not have the shape
/// `arn:<partition>:<service>:<region>:<account>:<resource>` expected for the field.
fn check_arn(
    warnings: &mut Vec<Warning>,
    field: &'static str,
    arn: &str,
    service: &str,
    resource_prefix: &str,
) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let problem = if parts.len() != 6 || parts[0] != "arn" {
        Some("is not an ARN (arn:partition:service:region:account:resource)".to_string())
    } else if !parts[1].starts_with("aws") {
        Some(format!("has an unknown partition {:?}", parts[1]))
    } else if parts[4].len() != 12 || !parts[4].bytes().all(|b| b.is_ascii_digit()) {
        Some(format!(
            "has an account id {:?} that is not 12 digits",
            parts[4]
        ))
    } else if parts[2] != service || !parts[5].starts_with(resource_prefix) {
        Some(format!(
            "names {}:{}..., expected a {service} {} ARN",
            parts[2],
            parts[5].split('/').next().unwrap_or(""),
            resource_prefix.trim_end_matches('/')
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        warnings.push(Warning {
            field,
            message: format!("{arn:?} {p}"),
        });
    }
}

fn is_region_like(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.contains('-')
}

/// RFC 1123 subdomain, as Kubernetes requires for node names.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address as written.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses `a.b.c.d/n` or `x::/n`.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let bad = || format!("{text:?} is not a CIDR block such as 10.100.0.0/16");
    let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(Cidr { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabs_and_placeholders_are_all_reported_with_lines_and_fields() {
        let text = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: ${CLUSTER}\n  hybrid:\n    iamRolesAnywhere:\n      nodeName: $NODE_NAME # the node\n      roleArn: ${ROLE_ARN}\n";
        let p = text_problems(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("line 5 (spec.cluster.name): unsubstituted placeholder ${CLUSTER}"),
            "{p:?}"
        );
        assert!(p[1].starts_with("line 8 (spec.hybrid.iamRolesAnywhere.nodeName): unsubstituted placeholder $NODE_NAME"), "{p:?}");
        assert!(
            p[2].contains("line 9 (spec.hybrid.iamRolesAnywhere.roleArn)"),
            "{p:?}"
        );
        let tabs = "spec:\n\tcluster:\n\t\tname: x\n  ok: 1\n";
        assert_eq!(
            text_problems(tabs)[0],
            "lines 2, 3 start with a TAB; YAML needs spaces for indentation: replace the TABs with spaces"
        );
        // Costs and prices are not placeholders; a lone `$` or lower case is not either.
        assert!(text_problems("a: costs $5\nb: $x\nc: x # $NOT_EITHER\n").is_empty());
    }

    const GOOD: &str = "\
---
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  cluster:
    name: my-cluster
    region: us-west-2
  hybrid:
    iamRolesAnywhere:
      nodeName: mock-hybrid-node
      roleArn: arn:aws:iam::123456789010:role/mockHybridNodeRole
      profileArn: arn:aws:rolesanywhere:us-west-2:123456789010:profile/p1
      trustAnchorArn: arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t1
";

    fn p(text: &str) -> Result<Loaded, ConfigError> {
        parse(Path::new("node.yaml"), text)
    }

    #[test]
    fn defaults_follow_nodeadm() {
        let l = p(GOOD).unwrap();
        let ira = &l.node.iam_roles_anywhere;
        assert_eq!(ira.certificate_path, Path::new("/etc/iam/pki/server.pem"));
        assert_eq!(ira.private_key, "/etc/iam/pki/server.key");
        assert_eq!(ira.aws_config_path, Path::new("/etc/aws/hybrid/config"));
        assert!(!l.node.enable_credentials_file);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(l.node.cluster.needs_cluster_details());
    }

    #[test]
    fn unknown_field_names_line_column_and_allowed_keys() {
        let text = GOOD.replace(
            "    region: us-west-2\n",
            "    region: us-west-2\n    regoin: x\n",
        );
        let e = p(&text).unwrap_err().to_string();
        assert!(e.starts_with("node.yaml:8:5: "), "{e}");
        assert!(e.contains("unknown field `regoin`"), "{e}");
        assert!(
            e.contains("`apiServerEndpoint`") && e.contains("`cidr`"),
            "{e}"
        );
        assert!(!e.contains(" at line "), "{e}");
    }

    #[test]
    fn malformed_yaml_has_a_position() {
        let e = p("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: [\n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert!(e.to_string().starts_with("node.yaml:"), "{e}");
    }

    #[test]
    fn node_name_length_bounds() {
        let ok = GOOD.replace("mock-hybrid-node", &"a".repeat(64));
        p(&ok).unwrap();
        let long = GOOD.replace("mock-hybrid-node", &"a".repeat(65));
        let e = p(&long).unwrap_err().to_string();
        assert!(
            e.contains("spec.hybrid.iamRolesAnywhere.nodeName: 65 characters"),
            "{e}"
        );
        let empty = GOOD.replace("nodeName: mock-hybrid-node", "nodeName: \"\"");
        assert!(p(&empty)
            .unwrap_err()
            .to_string()
            .contains("nodeName: missing"));
    }

    #[test]
    fn hostname_override_is_refused() {
        let t = GOOD.replace(
            "  hybrid:\n",
            "  kubelet:\n    flags: [\"--v=2\", \"--hostname-override=x\"]\n  hybrid:\n",
        );
        let e = p(&t).unwrap_err().to_string();
        assert!(
            e.contains("spec.kubelet.flags") && e.contains("hostname-override"),
            "{e}"
        );
    }

    #[test]
    fn exactly_one_credential_provider() {
        let both = GOOD.replace(
            "  hybrid:\n",
            "  hybrid:\n    ssm:\n      activationCode: abcdefghijklmnopqrstuvwxyz\n      activationId: 00000000-0000-0000-0000-000000000000\n",
        );
        assert!(p(&both).unwrap_err().to_string().contains("only one of"));
        let none = GOOD.split("  hybrid:").next().unwrap().to_string() + "  hybrid: {}\n";
        assert!(p(&none)
            .unwrap_err()
            .to_string()
            .contains("either iamRolesAnywhere or ssm"));
    }

    #[test]
    fn ssm_activation_code_never_printed() {
        let t = GOOD.split("  hybrid:").next().unwrap().to_string()
            + "  hybrid:\n    ssm:\n      activationCode: TOPSECRETACTIVATIONCODE123\n      activationId: 00000000-0000-0000-0000-000000000000\n";
        let e = p(&t).unwrap_err();
        assert!(!e.to_string().contains("TOPSECRET"), "{e}");
        assert!(!format!("{e:?}").contains("TOPSECRET"));
        let raw: RawNodeConfig = serde_yaml_ng::from_str(&t).unwrap();
        let code = raw
            .spec
            .hybrid
            .unwrap()
            .ssm
            .unwrap()
            .activation_code
            .unwrap();
        assert!(!format!("{code:?}").contains("TOPSECRET"));
    }

    #[test]
    fn odd_arns_warn_but_pass() {
        let t = GOOD
            .replace(
                "arn:aws:rolesanywhere:us-west-2:123456789010:trust-anchor/t1",
                "arn:aws:acm-pca:us-west-2:123456789010:certificate-authority/fc32",
            )
            .replace(
                "arn:aws:iam::123456789010:role/mockHybridNodeRole",
                "not-an-arn",
            );
        let l = p(&t).unwrap();
        let fields: Vec<_> = l.warnings.iter().map(|w| w.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.hybrid.iamRolesAnywhere.roleArn",
                "spec.hybrid.iamRolesAnywhere.trustAnchorArn"
            ]
        );
    }

    #[test]
    fn private_key_accepts_key_references() {
        for (value, want) in [
            ("handle:0x81000001", KeyRef::TpmHandle(0x8100_0001)),
            (
                "/etc/iam/pki/node.tss2.pem",
                KeyRef::Path("/etc/iam/pki/node.tss2.pem".into()),
            ),
        ] {
            let t = GOOD.replace(
                "      nodeName:",
                &format!("      privateKeyPath: {value}\n      nodeName:"),
            );
            let l = p(&t).unwrap();
            assert_eq!(l.node.iam_roles_anywhere.private_key_ref, want);
            assert_eq!(l.node.iam_roles_anywhere.private_key, value);
        }
        let t = GOOD.replace(
            "      nodeName:",
            "      privateKeyPath: \"pkcs11:token=edge;object=node\"\n      nodeName:",
        );
        assert!(matches!(
            p(&t).unwrap().node.iam_roles_anywhere.private_key_ref,
            KeyRef::Pkcs11(_)
        ));
        let t = GOOD.replace(
            "      nodeName:",
            "      privateKeyPath: tpm:0x81000001\n      nodeName:",
        );
        let e = p(&t).unwrap_err().to_string();
        assert!(
            e.contains("spec.hybrid.iamRolesAnywhere.privateKeyPath"),
            "{e}"
        );
    }

    #[test]
    fn pkcs11_pin_value_is_refused_without_printing_it() {
        let t = GOOD.replace(
            "      nodeName:",
            "      privateKeyPath: \"pkcs11:token=edge;object=node?pin-value=SECRETPIN42\"\n      nodeName:",
        );
        let e = p(&t).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(text.contains("pin-source=file:"), "{text}");
        assert!(!text.contains("SECRETPIN42"), "{text}");
    }

    #[test]
    fn bootstrap_document_is_kept_raw_with_its_lines() {
        let t = format!(
            "{GOOD}---\napiVersion: hybridboot/v1alpha1\nkind: BootstrapConfig\nvault:\n  address: https://vault\n"
        );
        let l = p(&t).unwrap();
        let b = l.bootstrap.unwrap();
        assert_eq!(b.kind, "BootstrapConfig");
        assert_eq!(b.first_line, 14);
        assert!(b.text.starts_with("---\napiVersion: hybridboot/v1alpha1"));
        let padded = b.text_with_file_lines();
        assert_eq!(padded.lines().nth(17), Some("  address: https://vault"));
        // Bootstrap first is fine too.
        let t2 = format!("apiVersion: hybridboot/v1alpha1\nkind: BootstrapConfig\n{GOOD}");
        assert!(p(&t2).unwrap().bootstrap.is_some());
    }

    #[test]
    fn foreign_or_missing_documents() {
        let e = p("apiVersion: v1\nkind: ConfigMap\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported document apiVersion: v1, kind: ConfigMap"),
            "{e}"
        );
        let e = p("# nothing\n---\n").unwrap_err();
        assert!(matches!(e, ConfigError::NoNodeConfig { .. }));
    }

    #[test]
    fn bad_base64_ca_has_position() {
        let t = GOOD.replace(
            "    region: us-west-2\n",
            "    region: us-west-2\n    certificateAuthority: \"%%%\"\n",
        );
        let e = p(&t).unwrap_err().to_string();
        assert!(
            e.starts_with("node.yaml:") && e.contains("spec.cluster: certificateAuthority"),
            "{e}"
        );
        assert!(e.contains("not valid base64"), "{e}");
    }

    #[test]
    fn containerd_toml_is_checked() {
        let t = GOOD.replace(
            "  hybrid:\n",
            "  containerd:\n    config: |\n      version = = 2\n  hybrid:\n",
        );
        let e = p(&t).unwrap_err().to_string();
        assert!(e.contains("spec.containerd.config: not valid TOML"), "{e}");
    }

    #[test]
    fn config_source_is_taken_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(
            source_path("file:///etc/eks/n.yaml", Path::new("/")).unwrap(),
            Path::new("/etc/eks/n.yaml")
        );
        assert_eq!(
            source_path("file:///etc/eks/n.yaml", r).unwrap(),
            r.join("etc/eks/n.yaml")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            source_path("n.yaml", r).unwrap(),
            r.join(cwd.strip_prefix("/").unwrap()).join("n.yaml")
        );
        // Errors name the file under the root.
        let err = load_under("/etc/eks/absent.yaml", r)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&r.join("etc/eks/absent.yaml").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn config_source_forms() {
        assert_eq!(
            parse_config_source("file://x.yaml").unwrap(),
            Path::new("x.yaml")
        );
        assert_eq!(
            parse_config_source("file:///etc/eks/node%20config.yaml").unwrap(),
            Path::new("/etc/eks/node config.yaml")
        );
        assert_eq!(
            parse_config_source("file://dir/x.yaml").unwrap(),
            Path::new("dir/x.yaml")
        );
        assert_eq!(
            parse_config_source("/etc/n.yaml").unwrap(),
            Path::new("/etc/n.yaml")
        );
        assert_eq!(parse_config_source("n.yaml").unwrap(), Path::new("n.yaml"));
        assert!(parse_config_source("imds://user-data")
            .unwrap_err()
            .to_string()
            .contains("hybrid nodes have none"));
        assert!(parse_config_source("https://x/y").is_err());
    }

    #[test]
    fn cidr_matching() {
        let c = parse_cidr("172.16.0.0/24").unwrap();
        assert!(c.contains("172.16.0.1".parse().unwrap()));
        assert!(!c.contains("172.16.1.1".parse().unwrap()));
        assert!(parse_cidr("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(parse_cidr("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
    }

    #[test]
    fn an_oversized_configuration_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.yaml");
        // Valid YAML (a comment) one byte over the cap: refused before parsing, by size.
        let mut text = "#".repeat(crate::fsutil::MAX_TEXT_FILE as usize);
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        let err = load(&path.display().to_string()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("larger than 1048576 bytes"), "{msg}");
        assert!(msg.contains("node.yaml"), "{msg}");
        // At the cap it is read (and parsed: no NodeConfig in a comment).
        text.pop();
        std::fs::write(&path, &text).unwrap();
        let err = load(&path.display().to_string()).unwrap_err();
        assert!(!matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
