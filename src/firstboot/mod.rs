//! `hybridboot firstboot`: the whole first boot as one resumable, crash-safe run.
//!
//! ```text
//! config -> clock (NTP wait, build-date floor) -> key -> clock vs Vault's Date -> enroll
//!        -> roles-anywhere check -> install (if configured) -> init -> stamp (last)
//! ```
//!
//! Every step first checks whether its result already exists (the key is found, not created
//! twice; a valid, young certificate for the key and node name is kept, so a single-use AppRole
//! secret id is never needed twice), does its work with atomic writes, then records itself in
//! the state file ([`state`]). A run killed at any point (power cut, SIGKILL) therefore
//! converges to the same end state when started again; the stamp `/var/lib/hybridboot/joined`
//! is written last, so the unit's `ConditionPathExists=!` only stops it once everything is done.
//!
//! Progress goes to systemd with `sd_notify` ([`notify`]); failures end with exit code 3 (needs
//! an operator: configuration, permission) or 4 (retry later: peer unreachable, throttled, clock
//! not yet synchronised), see [`crate::exit`].
//!
//! Steps not available in this build are recorded as skipped with the reason (`status` shows
//! them), never pretended.

pub mod clock;
pub mod config;
pub mod notify;
pub mod state;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;

use crate::cli::KeyArgs;
use crate::exit::{self, Class, Classified};
use crate::fsutil;
use crate::http::{Client, Request, Url};
use crate::key::{KeyRef, OpenMode};
use crate::node::config::{self as nodeconfig, NodeConfig};
use crate::node::init_cmd::{self, InitArgs};
use crate::node::install;
use crate::retry::RetryPolicy;
use crate::vault::{self, VaultArgs};
use config::{BootstrapConfig, VaultAuth};
use state::{State, Step};

/// `hybridboot firstboot`.
#[derive(Args, Debug)]
pub struct FirstbootArgs {
    #[command(flatten)]
    pub source: ConfigArgs,
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

/// Both documents, validated.
#[derive(Debug)]
pub struct Loaded {
    /// Where the NodeConfig came from.
    pub path: PathBuf,
    /// The NodeConfig.
    pub node: NodeConfig,
    /// The BootstrapConfig.
    pub bootstrap: BootstrapConfig,
}

impl ConfigArgs {
    /// Reads and validates the NodeConfig and the BootstrapConfig (under `--root`).
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let path = nodeconfig::parse_config_source(&self.config_source).map_err(config_error)?;
        let path = fsutil::under_root(&self.root, &absolute(&path));
        let loaded = nodeconfig::load(&path.display().to_string()).map_err(config_error)?;
        for w in &loaded.warnings {
            log::warn!("{}: {w}", loaded.path.display());
        }
        let bootstrap = match (&self.bootstrap_config, &loaded.bootstrap) {
            (Some(file), _) => config::load_file(file),
            (None, Some(doc)) => config::from_raw_document(&loaded.path, doc),
            (None, None) => Err(nodeconfig::ConfigError::NoBootstrapConfig {
                path: loaded.path.clone(),
            }),
        }
        .map_err(|e| exit::operator(e.to_string()))?;
        // The credential helper written by init uses the NodeConfig's key; enrollment uses this
        // one. Different references would give a certificate the helper cannot use.
        let ira = &loaded.node.iam_roles_anywhere;
        if ira.private_key_ref != bootstrap.key.parsed {
            log::warn!(
                "{}: spec.key.ref {} differs from the NodeConfig's spec.hybrid.iamRolesAnywhere.privateKeyPath {}: set both to the same key",
                loaded.path.display(),
                bootstrap.key.reference,
                ira.private_key
            );
        }
        if let Some(proxy) = &bootstrap.proxy {
            export_proxy(proxy);
        }
        Ok(Loaded {
            path: loaded.path,
            node: loaded.node,
            bootstrap,
        })
    }
}

/// Puts `spec.proxy` into this process's environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `NO_PROXY`, and their lowercase forms, which the HTTP client reads first): every client
/// built afterwards, every program run (`credential_process`, `ctr`) and init's rendering of
/// the drop-ins and the credential_process line see the site's proxy. Called while loading the
/// configuration, before any thread or request exists. It replaces a proxy from the unit's
/// environment (said in the log).
fn export_proxy(proxy: &config::ProxyConfig) {
    let no_proxy = proxy.no_proxy.join(",");
    let vars: [(&str, &str, Option<&str>); 3] = [
        ("HTTPS_PROXY", "https_proxy", proxy.https_proxy.as_deref()),
        ("HTTP_PROXY", "http_proxy", proxy.http_proxy.as_deref()),
        (
            "NO_PROXY",
            "no_proxy",
            Some(no_proxy.as_str()).filter(|v| !v.is_empty()),
        ),
    ];
    for (upper, lower, value) in vars {
        let before = std::env::var(lower).or_else(|_| std::env::var(upper)).ok();
        match value {
            Some(v) => {
                if before.as_deref().is_some_and(|b| b != v) {
                    log::warn!("spec.proxy replaces {upper} from the environment");
                }
                std::env::set_var(upper, v);
                std::env::set_var(lower, v);
            }
            None => {
                if before.is_some() {
                    log::warn!(
                        "spec.proxy is set without {upper}: ignoring {upper} from the environment"
                    );
                }
                std::env::remove_var(upper);
                std::env::remove_var(lower);
            }
        }
    }
    // Origins only: a proxy URL may carry a password.
    let shown = |u: Option<&str>| {
        u.and_then(|u| crate::http::Proxy::parse(u).ok())
            .map_or_else(|| "none".to_string(), |p| format!("{p:?}"))
    };
    log::info!(
        "proxy from spec.proxy: https {}, http {}, no proxy for [{}]",
        shown(proxy.https_proxy.as_deref()),
        shown(proxy.http_proxy.as_deref()),
        no_proxy
    );
}

fn config_error(e: nodeconfig::ConfigError) -> anyhow::Error {
    exit::operator(e.to_string())
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// The files first boot uses, resolved under `--root`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--root`.
    pub root: PathBuf,
    /// Node name: certificate CN and Kubernetes node name.
    pub node_name: String,
    /// How to open the key.
    pub key: KeyArgs,
    /// Algorithm of a key created here.
    pub algorithm: crate::key::Algorithm,
    /// Everything the Vault client needs (paths under root).
    pub vault: VaultArgs,
    /// `spec.vault.renewal.renewBefore`.
    pub renew_before: f64,
    /// Certificate path as configured (without root), for the record.
    pub certificate: PathBuf,
    /// The AppRole secret id file, if that is the auth method (removed once used).
    pub secret_id_file: Option<PathBuf>,
}

impl Plan {
    /// Resolves the configuration into concrete paths and client settings.
    pub fn new(loaded: &Loaded, root: &Path, timeout: Duration) -> Plan {
        let b = &loaded.bootstrap;
        let ira = &loaded.node.iam_roles_anywhere;
        let r = |p: &Path| fsutil::under_root(root, p);
        let key_ref = match &b.key.parsed {
            KeyRef::Path(p) => r(p).display().to_string(),
            _ => b.key.reference.clone(),
        };
        let key = KeyArgs {
            key: key_ref,
            tcti: b.key.tcti.clone(),
            pkcs11_lib: b.key.pkcs11_lib.clone(),
            tpm_key_auth_file: None,
        };
        let (token_file, role_id_file, secret_id_file, wrapped) = match &b.vault.auth {
            VaultAuth::TokenFile(t) => (Some(r(t)), None, None, false),
            VaultAuth::AppRole {
                role_id_file,
                secret_id_file,
                wrapped,
            } => (
                None,
                Some(r(role_id_file)),
                Some(r(secret_id_file)),
                *wrapped,
            ),
        };
        let vault = VaultArgs {
            vault_addr: b.vault.address.clone(),
            vault_ca: b.vault.ca_bundle.as_deref().map(r),
            vault_namespace: b.vault.namespace.clone(),
            pki_mount: b.vault.pki_mount.clone(),
            pki_role: b.vault.role.clone(),
            key: key.clone(),
            common_name: ira.node_name.clone(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            ttl: b.vault.ttl,
            certificate: r(&ira.certificate_path),
            ca_certificate: None,
            vault_token_file: token_file,
            approle_role_id_file: role_id_file,
            approle_secret_id_file: secret_id_file.clone(),
            secret_id_wrapped: wrapped,
            cert_auth_role: b.vault.cert_auth_role.clone(),
            cert_auth_mount: "cert".into(),
            approle_mount: "approle".into(),
            timeout,
        };
        Plan {
            root: root.to_path_buf(),
            node_name: ira.node_name.clone(),
            key,
            algorithm: b.key.algorithm,
            vault,
            renew_before: b.vault.renew_before,
            certificate: ira.certificate_path.clone(),
            secret_id_file,
        }
    }
}

/// An error tagged with the step it happened in (for the state file's `last_error`).
fn in_step(step: &str, e: anyhow::Error) -> (String, anyhow::Error) {
    (step.to_string(), e)
}

/// `hybridboot firstboot`.
pub fn run(args: FirstbootArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = args.source.root.clone();
    let loaded = args.source.load()?;
    let deadline = started + loaded.bootstrap.timeouts.overall;
    // Temporary files of writes a power cut interrupted: the directories first boot writes.
    // (init cleans the directories it writes itself.)
    for dir in [
        PathBuf::from(state::STATE_DIR),
        PathBuf::from(crate::aws::cache::DEFAULT_DIR),
        loaded
            .node
            .iam_roles_anywhere
            .certificate_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ] {
        let dir = fsutil::under_root(&root, &dir);
        match fsutil::remove_stale_temp_files(&dir) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "removed {n} temporary file(s) of an interrupted run in {}",
                dir.display()
            ),
            Err(e) => log::warn!("{e}"),
        }
    }
    let mut st = State::load(&root)?;
    if state::joined(&root) {
        notify::status("already joined: nothing to do");
        notify::notify("READY=1");
        return Ok(());
    }
    match steps(&loaded, &root, deadline, &mut st) {
        Ok(summary) => {
            notify::status(&summary);
            notify::notify("READY=1");
            log::info!("first boot done in {} ms", started.elapsed().as_millis());
            Ok(())
        }
        Err((step, err)) => {
            let class = exit::classify(&err);
            let message = crate_chain(&err);
            st.last_error = Some(state::LastError {
                step,
                message: message.clone(),
                exit_code: class.code(),
                at: crate::x509::chain::rfc3339(SystemTime::now()),
            });
            if let Err(e) = st.save(&root) {
                log::warn!("could not record the failure: {e:#}");
            }
            notify::notify(&format!("STATUS=failed: {message}"));
            Err(err)
        }
    }
}

fn crate_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn remaining(deadline: Instant, what: &str) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Classified {
            class: Class::Transient,
            message: format!("the first-boot deadline (spec.timeouts.overall) passed before {what}; the next run resumes here"),
        }
        .into());
    }
    Ok(left)
}

/// The steps; returns the summary line.
fn steps(
    loaded: &Loaded,
    root: &Path,
    deadline: Instant,
    st: &mut State,
) -> Result<String, (String, anyhow::Error)> {
    let b = &loaded.bootstrap;
    st.version = state::VERSION;
    st.node_name = Some(loaded.node.iam_roles_anywhere.node_name.clone());

    // Clock, part 1: NTP and the build-date floor, before the key signs anything.
    notify::status("checking the system clock");
    let left = remaining(deadline, "the clock check").map_err(|e| in_step("clock", e))?;
    match clock::wait_for_sync(&clock::SyncSources::default(), b.timeouts.time_sync.min(left)) {
        clock::Sync::TimedOut => log::warn!(
            "the clock is not NTP-synchronised after {} (spec.timeouts.timeSync): continuing, the checks against the build date and Vault's clock still apply",
            vault::format_duration(b.timeouts.time_sync)
        ),
        clock::Sync::Synchronised => log::debug!("clock is NTP-synchronised"),
        clock::Sync::Unknown => log::debug!("no NTP synchronisation status available"),
    }
    clock::check_floor(SystemTime::now(), clock::build_date())
        .map_err(|e| in_step("clock", transient(e.to_string())))?;

    let left = remaining(deadline, "the key step").map_err(|e| in_step("key", e))?;
    let plan = Plan::new(loaded, root, left);

    // Key.
    notify::status("opening the node key");
    let t = Instant::now();
    let key = plan
        .key
        .open(OpenMode::CreateIfAbsent(plan.algorithm))
        .with_context(|| format!("spec.key.ref {}", b.key.reference))
        .map_err(|e| in_step("key", e))?;
    st.key = Some(state::KeyRecord {
        reference: b.key.reference.clone(),
        algorithm: key.algorithm().to_string(),
        fingerprint: key.fingerprint(),
    });
    drop(key); // the Vault client opens it again; swtpm serves one connection at a time
    st.complete(Step::Key);
    st.record_duration(Step::Key, t.elapsed());
    st.save(root).map_err(|e| in_step("key", e))?;

    // Clock, part 2: against Vault's own clock, before any certificate is checked.
    notify::status("checking the clock against Vault");
    let left = remaining(deadline, "contacting Vault").map_err(|e| in_step("enroll", e))?;
    check_clock_with_vault(&plan, left).map_err(|e| in_step("clock", e))?;

    // Enroll (or keep a valid, young certificate).
    notify::status("enrolling certificate with Vault");
    let t = Instant::now();
    let mut vault_args = plan.vault.clone();
    vault_args.timeout = remaining(deadline, "enrolling").map_err(|e| in_step("enroll", e))?;
    let renewal = vault::renew_certificate(&vault_args, plan.renew_before)
        .map_err(|e| in_step("enroll", explain_enroll_error(e, b, &plan)))?;
    // A single-use secret id is spent once a certificate exists; a run killed between writing
    // the certificate and removing the file removes it here.
    if let Some(f) = &plan.secret_id_file {
        if fsutil::remove_file(f).map_err(|e| in_step("enroll", e.into()))? {
            log::info!("removed the used AppRole secret id file {}", f.display());
        }
    }
    st.certificate = Some(state::CertificateRecord {
        path: plan.certificate.clone(),
        renew_before: plan.renew_before,
    });
    st.complete(Step::Enroll);
    st.record_duration(Step::Enroll, t.elapsed());
    st.save(root).map_err(|e| in_step("enroll", e))?;

    // Roles Anywhere: one CreateSession with the new certificate proves the trust anchor,
    // profile and role accept it before anything is installed; the session is cached where
    // init and the node's credential_process find it.
    notify::status("getting AWS credentials from IAM Roles Anywhere");
    let t = Instant::now();
    let policy = deadline_policy(deadline, "the Roles Anywhere check")
        .map_err(|e| in_step("roles-anywhere", e))?;
    let mut init_args = init_args(loaded, root);
    let creds = roles_anywhere_check(loaded, &init_args, &policy)
        .map_err(|e| in_step("roles-anywhere", e))?;
    st.credentials_expiry = creds.expiration.map(crate::x509::chain::rfc3339);
    st.complete(Step::RolesAnywhere);
    st.record_duration(Step::RolesAnywhere, t.elapsed());
    st.save(root).map_err(|e| in_step("roles-anywhere", e))?;

    // Install (only when the image does not carry the binaries).
    match &b.install {
        None => st.skip(
            Step::Install,
            "spec.install not set: the Kubernetes binaries are part of the image",
        ),
        Some(settings) => {
            notify::status("installing Kubernetes binaries");
            let t = Instant::now();
            // A finished install is verified against its record without the network.
            let offline = st.completed.contains(&Step::Install)
                && install::read_record(root).ok().flatten().is_some_and(|r| {
                    r.kubernetes_version
                        .starts_with(settings.kubernetes_version.trim_start_matches('v'))
                });
            remaining(deadline, "installing").map_err(|e| in_step("install", e))?;
            install::run_install(install_args(settings, root, offline))
                .map_err(|e| in_step("install", e.context("spec.install")))?;
            st.install_tracker = Some(PathBuf::from(install::TRACKER_PATH));
            st.complete(Step::Install);
            st.record_duration(Step::Install, t.elapsed());
        }
    }
    st.save(root).map_err(|e| in_step("install", e))?;

    // Init: nodeadm's phases, then the units. After a power cut the files may already be
    // written while the units were never restarted, so until init is recorded complete the
    // units are (re)started whether or not their files changed.
    notify::status("configuring the node (init)");
    let t = Instant::now();
    let policy = deadline_policy(deadline, "init").map_err(|e| in_step("init", e))?;
    init_args.retry = Some(policy);
    init_args.apply_unchanged = !st.completed.contains(&Step::Init);
    init_cmd::init(&init_args, &mut init_cmd::Systemctl::from_env())
        .map_err(|e| in_step("init", e))?;
    st.complete(Step::Init);
    st.record_duration(Step::Init, t.elapsed());

    // Stamp, last. The state is saved first so that a power cut between the two leaves a state
    // that says everything is done but no stamp: the next run re-checks and writes the stamp.
    st.last_error = None;
    st.save(root).map_err(|e| in_step("stamp", e))?;
    let stamp = fsutil::under_root(root, Path::new(state::STAMP_FILE));
    let text = format!(
        "node {}\ncertificate serial {}\n",
        plan.node_name, renewal.info.serial_hex
    );
    fsutil::atomic_write(&stamp, text.as_bytes(), &fsutil::WriteOptions::public())
        .with_context(|| format!("writing {}", stamp.display()))
        .map_err(|e| in_step("stamp", e))?;
    Ok(format!(
        "joined: certificate serial {} for {} valid until {} (renewal due {})",
        renewal.info.serial_hex,
        plan.node_name,
        crate::x509::chain::rfc3339(renewal.info.not_after),
        crate::x509::chain::rfc3339(renewal.due)
    ))
}

fn transient(message: String) -> anyhow::Error {
    Classified {
        class: Class::Transient,
        message,
    }
    .into()
}

/// The retry policy of a remote step: the default schedule, bounded by what is left of
/// `spec.timeouts.overall`.
fn deadline_policy(deadline: Instant, what: &str) -> anyhow::Result<RetryPolicy> {
    Ok(RetryPolicy {
        max_attempts: 30,
        ..RetryPolicy::default()
    }
    .with_deadline(remaining(deadline, what)?))
}

/// `hybridboot init` as first boot runs it: the BootstrapConfig's AWS endpoints and key
/// location reach the node's credential_process line.
fn init_args(loaded: &Loaded, root: &Path) -> InitArgs {
    let b = &loaded.bootstrap;
    InitArgs {
        config_source: loaded.path.display().to_string(),
        root: root.to_path_buf(),
        skip: Vec::new(),
        no_start: false,
        kubelet_version: None,
        hybridboot_path: None,
        roles_anywhere_endpoint: b.aws.roles_anywhere_endpoint.clone(),
        eks_endpoint: b.aws.eks_endpoint.clone(),
        ecr_endpoint: b.aws.ecr_endpoint.clone(),
        ecr_registry_endpoint: b.aws.ecr_registry_endpoint.clone(),
        aws_ca_bundle: b.aws.ca_bundle.clone(),
        tcti: b.key.tcti.clone(),
        pkcs11_lib: b.key.pkcs11_lib.clone(),
        retry: None,
        apply_unchanged: false,
    }
}

/// One CreateSession (or a cached session with time left) with the enrolled certificate and
/// exactly the arguments and cache the node's credential_process will use.
fn roles_anywhere_check(
    loaded: &Loaded,
    init: &InitArgs,
    policy: &RetryPolicy,
) -> anyhow::Result<crate::aws::credentials::Credentials> {
    let creds = init_cmd::roles_anywhere_credentials(
        &loaded.node,
        &init.aws_overrides(),
        &init.root,
        policy,
    )
    .map_err(|e| {
        if exit::classify(&e) == Class::Operator {
            e.context(
                "IAM Roles Anywhere refused the node: check spec.hybrid.iamRolesAnywhere.trustAnchorArn, profileArn and roleArn in the NodeConfig, and that the trust anchor holds the CA that issues spec.vault.role's certificates",
            )
        } else {
            e
        }
    })?;
    // (A new session is logged with its expiry where it is made; a cached one at debug.)
    Ok(creds)
}

/// `hybridboot install` as `spec.install` describes it.
fn install_args(s: &config::InstallSettings, root: &Path, offline: bool) -> install::InstallArgs {
    install::InstallArgs {
        kubernetes_version: s.kubernetes_version.clone(),
        credential_provider: "iam-ra".into(),
        manifest: s
            .manifest
            .clone()
            .unwrap_or_else(|| install::DEFAULT_MANIFEST.into()),
        manifest_public_key: s
            .manifest_public_key
            .as_deref()
            .map(|p| fsutil::under_root(root, p)),
        root: root.to_path_buf(),
        containerd_source: match s.containerd_source.as_str() {
            "none" => install::ContainerdSource::None,
            _ => install::ContainerdSource::Distro,
        },
        arch: None,
        ca_bundle: s.ca_bundle.as_deref().map(|p| fsutil::under_root(root, p)),
        offline,
    }
}

/// Asks Vault's unauthenticated health endpoint for its `Date`, with retries, and compares.
fn check_clock_with_vault(plan: &Plan, left: Duration) -> anyhow::Result<()> {
    let addr = Url::parse(&plan.vault.vault_addr)
        .map_err(|e| exit::operator(format!("spec.vault.address: {e}")))?;
    let mut builder = Client::builder();
    if let Some(ca) = &plan.vault.vault_ca {
        builder = builder
            .ca_bundle_file(ca)
            .with_context(|| "spec.vault.caBundle".to_string())?;
    }
    let client = builder.build()?;
    // Every state (standby, sealed, uninitialised) answers 200 here: any other status comes from
    // something in between and is retried like a network fault.
    let url = addr.join(
        "v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200&drsecondarycode=200",
    );
    let policy = RetryPolicy {
        max_attempts: 30,
        ..RetryPolicy::default()
    }
    .with_deadline(left);
    let response = client
        .send_retrying(&Request::get(url), &policy)
        .with_context(|| format!("asking Vault at {} for its time", addr.origin()))?;
    let Some(server) = response.date() else {
        log::warn!(
            "Vault at {} sent no Date header: cannot compare clocks",
            addr.origin()
        );
        return Ok(());
    };
    clock::check_against_server(
        SystemTime::now(),
        server,
        &format!("Vault at {}", addr.origin()),
    )
    .map_err(|e| transient(e.to_string()))
}

/// Names the configuration field behind an enrollment failure the operator must fix.
fn explain_enroll_error(e: anyhow::Error, b: &BootstrapConfig, plan: &Plan) -> anyhow::Error {
    let field = e.chain().find_map(|c| {
        c.downcast_ref::<vault::VaultError>().and_then(|v| match v {
            vault::VaultError::NotAllowed { .. } => Some(format!(
                "Vault PKI role {:?} (spec.vault.role) refuses CN {:?}: fix spec.hybrid.iamRolesAnywhere.nodeName in the NodeConfig, or the role's allowed_domains",
                b.vault.role, plan.node_name
            )),
            vault::VaultError::UnknownRole { .. } => Some(
                "check spec.vault.pkiMount and spec.vault.role".to_string(),
            ),
            vault::VaultError::PermissionDenied { .. } => Some(match &b.vault.auth {
                VaultAuth::TokenFile(f) => format!(
                    "the token in spec.vault.auth.tokenFile ({}) is not allowed to sign with spec.vault.role {:?}",
                    f.display(),
                    b.vault.role
                ),
                VaultAuth::AppRole { .. } => format!(
                    "the AppRole (spec.vault.auth.appRole) is not allowed to sign with spec.vault.role {:?}, or its secret id is used up",
                    b.vault.role
                ),
            }),
            vault::VaultError::TtlAboveMax { .. } => Some("lower spec.vault.ttl".to_string()),
            _ => None,
        })
    });
    match field {
        Some(f) => e.context(f),
        None => e,
    }
}

/// `hybridboot renew`: from the BootstrapConfig (`--config-source`, as the shipped timer unit
/// runs it) or from explicit Vault flags (those of `enroll`).
#[derive(Debug)]
pub struct RenewArgs {
    /// `--config-source` and friends.
    pub own: RenewOwnArgs,
    /// The Vault flags; `None` with `--config-source`.
    pub vault: Option<VaultArgs>,
}

/// The flags of `renew` besides the Vault ones.
#[derive(Args, Debug)]
pub struct RenewOwnArgs {
    /// The NodeConfig + BootstrapConfig file (file:///path or a path); replaces the Vault flags.
    #[arg(long, short = 'c', value_name = "SOURCE")]
    pub config_source: Option<String>,
    /// The BootstrapConfig in its own file.
    #[arg(long, value_name = "FILE", requires = "config_source")]
    pub bootstrap_config: Option<PathBuf>,
    /// Work under this directory instead of / (with --config-source).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Renew once less than this fraction of the lifetime remains (0 < F <= 1; 1 renews now)
    /// [default: spec.vault.renewal.renewBefore, else 1/3].
    #[arg(long, value_name = "FRACTION", value_parser = vault::parse_fraction)]
    pub renew_before: Option<f64>,
}

// By hand rather than derived: the Vault flags are required only without --config-source, which
// derive cannot say for a flattened group (they stay required inside an `Option`).
impl clap::FromArgMatches for RenewArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let own = RenewOwnArgs::from_arg_matches(m)?;
        let vault = if own.config_source.is_some() {
            None
        } else {
            Some(VaultArgs::from_arg_matches(m).map_err(|_| {
                clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "give --config-source FILE (the BootstrapConfig), or --vault-addr, --pki-role, --key, --common-name and --certificate\n",
                )
            })?)
        };
        Ok(RenewArgs { own, vault })
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for RenewArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        VaultArgs::augment_args_for_update(RenewOwnArgs::augment_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Runs `renew`; prints the RFC 3339 time of the next renewal on stdout.
pub fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let own = args.own;
    let (vault_args, fraction) = match (&own.config_source, args.vault) {
        (Some(source), None) => {
            let cfg = ConfigArgs {
                config_source: source.clone(),
                bootstrap_config: own.bootstrap_config.clone(),
                root: own.root.clone(),
            };
            let loaded = cfg.load()?;
            let plan = Plan::new(&loaded, &own.root, Duration::from_secs(120));
            let fraction = own.renew_before.unwrap_or(plan.renew_before);
            let mut v = plan.vault;
            // The secret id of the first enrollment is spent; renewal uses cert auth (or a
            // token file, which stays valid as long as its TTL).
            if v.cert_auth_role.is_some() {
                v.approle_role_id_file = None;
                v.approle_secret_id_file = None;
            }
            (v, fraction)
        }
        (None, Some(v)) => (v, own.renew_before.unwrap_or(1.0 / 3.0)),
        (Some(_), Some(_)) => {
            return Err(exit::operator(
                "give either --config-source or the Vault flags (--vault-addr, --pki-role, ...), not both",
            ))
        }
        (None, None) => {
            return Err(exit::operator(
                "give --config-source FILE (the BootstrapConfig) or the Vault flags (--vault-addr, --pki-role, --key, --common-name, --certificate)",
            ))
        }
    };
    let r = vault::renew_certificate(&vault_args, fraction)?;
    println!("{}", crate::x509::chain::rfc3339(r.due));
    Ok(())
}
