//! The sandbox (pause) image, as `nodeadm init` caches it: after containerd runs with the
//! rendered config, the image its config pins must be in containerd's `k8s.io` namespace for this
//! node's platform, or no pod can start (the CRI plugin's own pull of a private ECR image has no
//! credentials and gets 401).
//!
//! ```text
//! containerd config dump -> sandbox image (v2 sandbox_image | v3+ pinned_images.sandbox)
//!   + grpc.address -> ctr images ls name==<image>: present -> done, no request at all
//!   -> ECR registry host? GetAuthorizationToken (SigV4, the node's credentials) -> Basic creds
//!   -> oci::registry::pull (index -> platform manifest -> config, layers; every digest checked)
//!   -> oci::archive (OCI layout tar, named by io.containerd.image.name)
//!   -> ctr -n k8s.io images import - (on stdin)
//! ```
//!
//! Why not CRI `PullImage` as nodeadm does: see [`crate::oci`] (gRPC/HTTP2/protobuf would cost
//! more binary than the whole pull). The registry token stays in this process: `ctr` gets the
//! verified archive, never the token (no argv, environment or file holds it).
//!
//! Endpoints: the ECR API is `https://api.ecr.<registry region>.<suffix>` unless
//! `ecr_endpoint` names another (VPC endpoint, tests); the registry is `https://<registry host>`
//! unless `registry_endpoint` names where it is served (a VPC endpoint or pull-through mirror;
//! `http://` only when written there). The ECR token is sent only for ECR registry hosts; other
//! registries are pulled anonymously (Bearer flow included).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::aws::credentials::Credentials;
use crate::aws::ecr::{self, EcrRegistry};
use crate::error::{Class, Classify};
use crate::http::{self, Url};
use crate::oci::{self, archive, registry, Reference};
use crate::retry::RetryPolicy;

/// containerd's CRI namespace.
pub const NAMESPACE: &str = "k8s.io";

/// What the sandbox step needs: plain settings, no command-line types.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// The node root (`/`, or a prefix in tests and image builds): containerd's socket is looked
    /// for under it.
    pub root: PathBuf,
    /// containerd's config file for `config dump` [default: containerd's own default, or
    /// `<root>/etc/containerd/config.toml` under another root].
    pub containerd_config: Option<PathBuf>,
    /// `containerd` program.
    pub containerd: PathBuf,
    /// `ctr` program.
    pub ctr: PathBuf,
    /// ECR API endpoint [default: the registry region's].
    pub ecr_endpoint: Option<String>,
    /// Where the image's registry is served [default: `https://<registry host>`].
    pub registry_endpoint: Option<String>,
    /// CAs for the ECR endpoint's and the registry's TLS certificates.
    pub ca_bundle: Option<PathBuf>,
    /// Retry policy of every remote call.
    pub retry: RetryPolicy,
}

impl SandboxSettings {
    /// Defaults: `containerd` and `ctr` from PATH, public endpoints, the default retry policy.
    pub fn new(root: &Path) -> SandboxSettings {
        SandboxSettings {
            root: root.to_path_buf(),
            containerd_config: None,
            containerd: PathBuf::from("containerd"),
            ctr: PathBuf::from("ctr"),
            ecr_endpoint: None,
            registry_endpoint: None,
            ca_bundle: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// What the step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The image was there: nothing was requested.
    Present(String),
    /// Pulled and imported.
    Pulled {
        /// The image name.
        image: String,
        /// The platform manifest's digest.
        digest: String,
        /// Bytes of config and layers.
        bytes: u64,
        /// Registry requests made.
        requests: u32,
    },
}

/// Why the step failed. Each knows its exit class ([`SandboxError::class`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `containerd config dump` could not run or its answer is unusable.
    #[error("containerd config: {0}")]
    Config(String),
    /// containerd is not answering on its socket (`ctr` failed).
    #[error("containerd at {address}: {detail}")]
    Containerd {
        /// containerd's socket.
        address: String,
        /// What is wrong with it.
        detail: String,
        /// Whether containerd may answer later (not running yet, restarting).
        transient: bool,
    },
    /// GetAuthorizationToken failed.
    #[error(transparent)]
    Ecr(#[from] ecr::EcrError),
    /// Reaching ECR failed.
    #[error("ECR GetAuthorizationToken at {endpoint}: {source}")]
    EcrHttp {
        /// The endpoint asked.
        endpoint: String,
        /// The cause.
        #[source]
        source: Box<http::HttpError>,
    },
    /// The node's AWS credentials could not be had.
    #[error("AWS credentials for ECR: {0:#}")]
    Credentials(anyhow::Error),
    /// The pull failed.
    #[error("pulling the sandbox image {image}: {source}")]
    Pull {
        /// The image reference.
        image: String,
        /// The cause.
        #[source]
        source: Box<registry::PullError>,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Settings(String),
}

impl Classify for SandboxError {
    /// Operator (exit 3) or retry later (exit 4): what the cause says.
    fn class(&self) -> Class {
        match self {
            SandboxError::Containerd {
                transient: true, ..
            } => Class::Transient,
            SandboxError::Ecr(e) => e.class(),
            SandboxError::EcrHttp { source, .. } => source.class(),
            SandboxError::Credentials(e) => crate::error::class_of(e),
            SandboxError::Pull { source, .. } => source.class(),
            SandboxError::Containerd { .. }
            | SandboxError::Config(_)
            | SandboxError::Settings(_) => Class::Operator,
        }
    }
}

/// What `containerd config dump` says about the sandbox image and the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpInfo {
    /// Config version (2 for containerd 1.x, 3+ for 2.x).
    pub version: i64,
    /// The pinned sandbox image.
    pub sandbox_image: String,
    /// The gRPC socket.
    pub grpc_address: String,
}

/// Parses `containerd config dump` output: version 2 keeps the image in
/// `plugins."io.containerd.grpc.v1.cri".sandbox_image`, version 3 and later (containerd 2.x,
/// which may migrate to 4 in memory) in `plugins."io.containerd.cri.v1.images".pinned_images.sandbox`.
pub fn parse_config_dump(text: &str) -> Result<DumpInfo, String> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("`containerd config dump` is not TOML: {e}"))?;
    let version = doc
        .get("version")
        .and_then(toml::Value::as_integer)
        .ok_or("`containerd config dump` has no version")?;
    let plugins = doc.get("plugins").and_then(toml::Value::as_table);
    let plugin = |name: &str| {
        plugins
            .and_then(|p| p.get(name))
            .and_then(toml::Value::as_table)
    };
    let sandbox_image = match version {
        2 => plugin("io.containerd.grpc.v1.cri")
            .and_then(|t| t.get("sandbox_image"))
            .and_then(toml::Value::as_str),
        v if v >= 3 => plugin("io.containerd.cri.v1.images")
            .and_then(|t| t.get("pinned_images"))
            .and_then(toml::Value::as_table)
            .and_then(|t| t.get("sandbox"))
            .and_then(toml::Value::as_str),
        v => return Err(format!("config version {v} is not supported (2 or later)")),
    }
    .filter(|s| !s.trim().is_empty())
    .ok_or_else(|| {
        if version == 2 {
            "no plugins.\"io.containerd.grpc.v1.cri\".sandbox_image (config version 2)".to_string()
        } else {
            format!("no plugins.\"io.containerd.cri.v1.images\".pinned_images.sandbox (config version {version})")
        }
    })?
    .trim()
    .to_string();
    let grpc_address = doc
        .get("grpc")
        .and_then(toml::Value::as_table)
        .and_then(|g| g.get("address"))
        .and_then(toml::Value::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or("/run/containerd/containerd.sock")
        .to_string();
    Ok(DumpInfo {
        version,
        sandbox_image,
        grpc_address,
    })
}

/// containerd's effective configuration: the config file itself when it is all of it (see
/// [`config_file_alone`]: no spawn), else `containerd [--config F] config dump`, parsed.
pub fn read_config(settings: &SandboxSettings) -> Result<DumpInfo, SandboxError> {
    let config = settings.containerd_config.clone().or_else(|| {
        (settings.root != Path::new("/")).then(|| {
            crate::fsutil::under_root(
                &settings.root,
                Path::new(crate::node::render::containerd::CONFIG_PATH),
            )
        })
    });
    let file = config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::node::render::containerd::CONFIG_PATH));
    if let Some(info) = config_file_alone(&file) {
        log::debug!(
            "{}: imports nothing, read as containerd's configuration",
            file.display()
        );
        return Ok(info);
    }
    let mut cmd = crate::process::command(&settings.containerd, crate::process::ChildEnv::System);
    if let Some(c) = &config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["config", "dump"]);
    let shown = match &config {
        Some(c) => format!(
            "{} --config {} config dump",
            settings.containerd.display(),
            c.display()
        ),
        None => format!("{} config dump", settings.containerd.display()),
    };
    let out =
        crate::process::output_with_timeout(&mut cmd, Duration::from_secs(30), 4 * 1024 * 1024)
            .map_err(|e| SandboxError::Config(format!("{shown}: {e}")))?;
    if !out.status.success() {
        return Err(SandboxError::Config(format!(
            "{shown} failed ({}): {}",
            out.status,
            last_line(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_config_dump(&text).map_err(|e| SandboxError::Config(format!("{shown}: {e}")))
}

/// The sandbox image and socket straight from containerd's config file, when `config dump`
/// could not say anything else: the file parses, names the sandbox image itself (else
/// containerd's built-in default applies) and none of its `imports` exists. An import is a path
/// (relative to the file's directory) or a pattern with one `*` in its last component (init's
/// `config.d/*.toml`); anything else, or a file that cannot be read, is left to `config dump`.
/// Saves starting containerd (tens of milliseconds) on every init.
pub fn config_file_alone(path: &Path) -> Option<DumpInfo> {
    let text = crate::fsutil::read_capped_string(path, crate::fsutil::MAX_TEXT_FILE).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    let dir = path.parent()?;
    let imports = match doc.get("imports") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    for import in &imports {
        if import_matches_a_file(dir, import)? {
            return None;
        }
    }
    parse_config_dump(&text).ok()
}

/// Whether `import` (resolved against `dir`) names an existing file; `None` when it is a
/// pattern this does not evaluate.
fn import_matches_a_file(dir: &Path, import: &str) -> Option<bool> {
    let path = dir.join(import);
    let name = path.file_name()?.to_str()?;
    let parent = path.parent()?;
    if parent.to_str()?.contains(['*', '?', '[']) || name.contains(['?', '[']) {
        return None;
    }
    let Some((prefix, suffix)) = name.split_once('*') else {
        return Some(path.exists());
    };
    if suffix.contains('*') {
        return None;
    }
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    for entry in entries {
        let name = entry.ok()?.file_name();
        let name = name.to_str()?;
        // As Go's filepath.Glob: `*` is any run of characters but `/`, hidden files included.
        if name.len() >= prefix.len() + suffix.len()
            && name.starts_with(prefix)
            && name.ends_with(suffix)
        {
            return Some(true);
        }
    }
    Some(false)
}

/// The last non-empty line of a program's stderr (where `ctr` and `containerd` say why), capped.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// The socket path on this machine (under the root when not `/`).
pub fn socket_path(settings: &SandboxSettings, info: &DumpInfo) -> PathBuf {
    let addr = info.grpc_address.trim_start_matches("unix://");
    if settings.root == Path::new("/") {
        PathBuf::from(addr)
    } else {
        crate::fsutil::under_root(&settings.root, Path::new(addr))
    }
}

fn ctr(settings: &SandboxSettings, socket: &Path) -> Command {
    let mut c = crate::process::command(&settings.ctr, crate::process::ChildEnv::System);
    c.arg("--address")
        .arg(socket)
        .args(["--namespace", NAMESPACE]);
    c
}

/// Whether containerd's `k8s.io` namespace has an image of this name (what the CRI plugin
/// looks the sandbox image up by).
pub fn image_present(
    settings: &SandboxSettings,
    socket: &Path,
    image: &str,
) -> Result<bool, SandboxError> {
    let mut cmd = ctr(settings, socket);
    cmd.args(["images", "ls", "-q"])
        .arg(format!("name=={image}"));
    let out = crate::process::output_with_timeout(&mut cmd, Duration::from_secs(60), 1024 * 1024)
        .map_err(|e| SandboxError::Containerd {
        address: socket.display().to_string(),
        detail: format!("{}: {e}", settings.ctr.display()),
        transient: false,
    })?;
    if !out.status.success() {
        return Err(SandboxError::Containerd {
            address: socket.display().to_string(),
            detail: format!(
                "ctr images ls failed ({}): {} (is containerd running?)",
                out.status,
                last_line(&out.stderr)
            ),
            transient: true,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == image))
}

/// `ctr -n k8s.io images import -` with `archive` on stdin.
pub fn import(
    settings: &SandboxSettings,
    socket: &Path,
    archive: &[u8],
) -> Result<(), SandboxError> {
    let address = socket.display().to_string();
    let mut cmd = ctr(settings, socket);
    cmd.args(["images", "import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| SandboxError::Containerd {
        address: address.clone(),
        detail: format!("cannot start {}: {e}", settings.ctr.display()),
        transient: false,
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = archive.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| SandboxError::Containerd {
            address: address.clone(),
            detail: format!("waiting for ctr: {e}"),
            transient: true,
        })?;
    let wrote = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")));
    if !out.status.success() || wrote.is_err() {
        return Err(SandboxError::Containerd {
            address,
            detail: format!(
                "ctr images import failed ({}): {}",
                out.status,
                last_line(&out.stderr)
            ),
            transient: true,
        });
    }
    Ok(())
}

/// Where the registry is reached and with what, for `image`.
fn registry_target(
    settings: &SandboxSettings,
    image: &Reference,
    credentials: &mut dyn FnMut() -> anyhow::Result<Credentials>,
) -> Result<registry::RegistryTarget, SandboxError> {
    let base_text = match &settings.registry_endpoint {
        Some(e) => e.trim_end_matches('/').to_string(),
        None => format!("https://{}", image.api_host()),
    };
    let base = Url::parse(&base_text)
        .map_err(|e| SandboxError::Settings(format!("registry endpoint {base_text:?}: {e}")))?;
    let host = image
        .registry
        .rsplit_once(':')
        .map_or(image.registry.as_str(), |(h, _)| h);
    let ecr_registry = EcrRegistry::parse(host);
    let creds = match &ecr_registry {
        None => {
            log::info!(
                "{}: not an ECR registry, pulling anonymously",
                image.registry
            );
            None
        }
        Some(r) => Some(ecr_token(settings, r, credentials)?),
    };
    Ok(registry::RegistryTarget {
        base,
        name: if settings.registry_endpoint.is_some() {
            format!("{} (at {base_text})", image.registry)
        } else {
            image.registry.clone()
        },
        credentials: creds,
        ecr: ecr_registry.is_some(),
    })
}

/// GetAuthorizationToken for `registry` in its own region.
fn ecr_token(
    settings: &SandboxSettings,
    registry: &EcrRegistry,
    credentials: &mut dyn FnMut() -> anyhow::Result<Credentials>,
) -> Result<ecr::RegistryCredentials, SandboxError> {
    let endpoint = settings
        .ecr_endpoint
        .clone()
        .unwrap_or_else(|| registry.api_endpoint())
        .trim_end_matches('/')
        .to_string();
    let creds = credentials().map_err(SandboxError::Credentials)?;
    let signed =
        ecr::authorization_token_request(&endpoint, &registry.region, &creds, SystemTime::now())?;
    let mut req =
        http::Request::post(Url::parse(&signed.url).map_err(|e| SandboxError::EcrHttp {
            endpoint: endpoint.clone(),
            source: Box::new(e),
        })?);
    let mut content_type = String::new();
    for (name, value) in &signed.request.headers {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        if name.eq_ignore_ascii_case("content-type") {
            content_type = value.clone();
            continue;
        }
        req = req.header(name, value.clone());
    }
    let req = req.body(&content_type, signed.request.body.clone());
    let mut builder = http::Client::builder();
    if let Some(ca) = &settings.ca_bundle {
        builder = builder
            .ca_bundle_file(ca)
            .map_err(|e| SandboxError::EcrHttp {
                endpoint: endpoint.clone(),
                source: Box::new(e),
            })?;
    }
    let client = builder.build().map_err(|e| SandboxError::EcrHttp {
        endpoint: endpoint.clone(),
        source: Box::new(e),
    })?;
    log::info!(
        "ECR GetAuthorizationToken for {} at {endpoint}",
        registry.account
    );
    let (status, error_type, body) = match client.send_retrying(&req, &settings.retry) {
        Ok(resp) => (
            resp.status,
            resp.header("x-amzn-errortype").map(str::to_string),
            resp.body().to_vec(),
        ),
        Err(http::HttpError::Status { code, body, .. }) if !(code == 429 || code >= 500) => {
            (code, None, body)
        }
        Err(e) => {
            return Err(SandboxError::EcrHttp {
                endpoint,
                source: Box::new(e),
            })
        }
    };
    Ok(ecr::parse_authorization_token(
        &endpoint,
        status,
        error_type.as_deref(),
        &body,
    )?)
}

/// The whole step: present -> nothing; else token, pull, verify, import. `credentials` is only
/// called when an ECR token is needed.
pub fn ensure(
    settings: &SandboxSettings,
    credentials: &mut dyn FnMut() -> anyhow::Result<Credentials>,
) -> Result<Outcome, SandboxError> {
    let info = read_config(settings)?;
    let socket = socket_path(settings, &info);
    ensure_with(settings, &info, &socket, credentials)
}

/// [`ensure`] once the config has been read.
pub fn ensure_with(
    settings: &SandboxSettings,
    info: &DumpInfo,
    socket: &Path,
    credentials: &mut dyn FnMut() -> anyhow::Result<Credentials>,
) -> Result<Outcome, SandboxError> {
    let image = Reference::parse(&info.sandbox_image).map_err(SandboxError::Config)?;
    if image_present(settings, socket, &image.name)? {
        log::info!(
            "sandbox image {} is present in containerd's {NAMESPACE} namespace",
            image.name
        );
        return Ok(Outcome::Present(image.name));
    }
    log::info!("sandbox image {} is missing: pulling it", image.name);
    let target = registry_target(settings, &image, credentials)?;
    let client =
        registry::client(settings.ca_bundle.as_deref()).map_err(|e| SandboxError::Pull {
            image: image.name.clone(),
            source: Box::new(registry::PullError::Http {
                registry: target.name.clone(),
                what: "client".into(),
                source: Box::new(e),
            }),
        })?;
    let platform = oci::node_platform();
    let pulled =
        registry::pull(&client, &target, &image, &platform, settings.retry).map_err(|source| {
            SandboxError::Pull {
                image: image.name.clone(),
                source: Box::new(source),
            }
        })?;
    let bytes = pulled.blobs.iter().map(|b| b.data.len() as u64).sum();
    let tar = archive::oci_archive(
        &image.name,
        &pulled.media_type,
        &pulled.manifest,
        &pulled.blobs,
    )
    .map_err(|e| SandboxError::Config(format!("building the image archive: {e}")))?;
    import(settings, socket, &tar)?;
    if !image_present(settings, socket, &image.name)? {
        return Err(SandboxError::Containerd {
            address: socket.display().to_string(),
            detail: format!(
                "ctr images import succeeded but {} is not listed",
                image.name
            ),
            transient: false,
        });
    }
    log::info!(
        "imported sandbox image {} ({} manifest {}, {bytes} bytes, {} registry requests)",
        image.name,
        platform,
        pulled.manifest.digest,
        pulled.requests
    );
    Ok(Outcome::Pulled {
        image: image.name,
        digest: pulled.manifest.digest,
        bytes,
        requests: pulled.requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_config_starts_containerd_only_when_the_file_is_not_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let mut settings = SandboxSettings::new(&root);
        settings.containerd = dir.path().join("no-containerd-here");
        let file = crate::fsutil::under_root(
            &root,
            Path::new(crate::node::render::containerd::CONFIG_PATH),
        );
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "version = 2\nimports = [\"config.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"x\"\n",
        )
        .unwrap();
        // No drop-in: read without starting containerd (which does not exist here).
        assert_eq!(read_config(&settings).unwrap().sandbox_image, "x");
        // With one, containerd is asked: the error names the program it tried.
        std::fs::create_dir_all(file.with_file_name("config.d")).unwrap();
        std::fs::write(file.with_file_name("config.d/site.toml"), "").unwrap();
        let e = read_config(&settings).unwrap_err().to_string();
        assert!(e.contains("no-containerd-here"), "{e}");
    }

    #[test]
    fn inits_config_is_read_without_containerd_until_a_drop_in_exists() {
        use crate::node::render::containerd::{base_config, sandbox_image};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let image = sandbox_image("us-west-2");
        // init's own file, its absolute import moved into this directory.
        let drop_ins = dir.path().join("config.d");
        std::fs::write(
            &file,
            base_config(&image).replace("/etc/containerd/config.d", drop_ins.to_str().unwrap()),
        )
        .unwrap();
        // `config.d/*.toml` matching nothing: the file is the configuration.
        let info = config_file_alone(&file).unwrap();
        assert_eq!(info.sandbox_image, image);
        assert_eq!(info.grpc_address, "/run/containerd/containerd.sock");
        assert_eq!(info.version, 2);
        std::fs::create_dir(&drop_ins).unwrap();
        std::fs::write(drop_ins.join("notes.txt"), "").unwrap();
        assert!(config_file_alone(&file).is_some());
        // A drop-in may change anything: containerd has to say.
        std::fs::write(drop_ins.join(".site.toml"), "").unwrap();
        assert!(config_file_alone(&file).is_none());
        // Imports of plain paths, patterns it does not evaluate, no sandbox image, no file.
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "version = 2\nimports = [\"notes.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"x\"\n").unwrap();
        assert_eq!(config_file_alone(&other).unwrap().sandbox_image, "x");
        std::fs::write(dir.path().join("notes.toml"), "").unwrap();
        assert!(config_file_alone(&other).is_none());
        std::fs::write(&other, "version = 2\nimports = [\"c*/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"x\"\n").unwrap();
        assert!(config_file_alone(&other).is_none());
        std::fs::write(&other, "version = 2\n").unwrap();
        assert!(config_file_alone(&other).is_none());
        assert!(config_file_alone(&dir.path().join("missing.toml")).is_none());
    }

    #[test]
    fn a_real_version_2_dump_names_the_image_and_socket() {
        // `containerd config dump` (containerd 1.6.20) of the config init renders for us-west-2.
        let text = include_str!("../../tests/fixtures/containerd/config-dump-v2.toml");
        let info = parse_config_dump(text).unwrap();
        assert_eq!(info.version, 2);
        assert_eq!(
            info.sandbox_image,
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5"
        );
        assert_eq!(info.grpc_address, "/run/containerd/containerd.sock");
    }

    #[test]
    fn version_3_and_later_use_pinned_images() {
        // containerd 2.x dumps with single-quoted strings and the images plugin split out.
        let v3 = "version = 3\nroot = '/var/lib/containerd'\n\n[grpc]\n  address = '/run/containerd/containerd.sock'\n\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'overlayfs'\n\n    [plugins.'io.containerd.cri.v1.images'.pinned_images]\n      sandbox = 'registry.k8s.io/pause:3.10'\n\n  [plugins.'io.containerd.grpc.v1.cri']\n    disable_tcp_service = true\n";
        let info = parse_config_dump(v3).unwrap();
        assert_eq!(
            (info.version, info.sandbox_image.as_str()),
            (3, "registry.k8s.io/pause:3.10")
        );
        let v4 = v3.replace("version = 3", "version = 4");
        assert_eq!(parse_config_dump(&v4).unwrap().version, 4);
        // A v3 dump that still carries a v2-style key is not read from the wrong place.
        let wrong =
            "version = 3\n[plugins.'io.containerd.grpc.v1.cri']\n  sandbox_image = 'x/y:1'\n";
        assert!(parse_config_dump(wrong)
            .unwrap_err()
            .contains("pinned_images.sandbox"));
        assert!(parse_config_dump("version = 1\n")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_config_dump("[grpc]\n")
            .unwrap_err()
            .contains("no version"));
        assert!(parse_config_dump("version = ").is_err());
        let no_socket = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"a.io/p:1\"\n";
        assert_eq!(
            parse_config_dump(no_socket).unwrap().grpc_address,
            "/run/containerd/containerd.sock"
        );
    }

    #[test]
    fn the_socket_is_taken_under_the_root() {
        let info = DumpInfo {
            version: 2,
            sandbox_image: "a.io/p:1".into(),
            grpc_address: "/run/containerd/containerd.sock".into(),
        };
        assert_eq!(
            socket_path(&SandboxSettings::new(Path::new("/")), &info),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path(&SandboxSettings::new(Path::new("/tmp/r")), &info),
            PathBuf::from("/tmp/r/run/containerd/containerd.sock")
        );
    }
}
