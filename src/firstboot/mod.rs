//! `hybridboot firstboot`: the whole first boot as one resumable, crash-safe run.
//!
//! ```text
//! config -> Clock (NTP wait, build-date floor) -> Key -> ClockVault (vs Vault's Date) -> Enroll
//!        -> RolesAnywhere check -> Install (if configured) -> Init -> Stamp (last)
//! ```
//!
//! The steps are [`state::Step`]; one runner (`Run::run_step`) does the bookkeeping of each
//! (status line, deadline, timer, record, save). Every step first checks whether its result already exists (the key is found, not created
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

#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod clock;
pub mod config;
mod dry_run;
pub mod notify;
mod plan;
pub mod state;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::error::{self, Class, ResultExt};
use crate::exit;
use crate::fsutil;
use crate::http::{Client, Redirects, Request};
use crate::key::OpenMode;
use crate::node::config::{self as nodeconfig, NodeConfig};
use crate::node::init;
use crate::node::install;
use crate::retry::RetryPolicy;
use crate::vault;
use config::{BootstrapConfig, VaultAuth};
pub use dry_run::{dry_run, FirstbootDryRun};
pub use plan::{renewal_settings, Plan};
use state::{State, Step};

/// Where the configuration comes from, and the root to work under.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The NodeConfig (and BootstrapConfig) file: file:///path (nodeadm's form) or a path.
    pub config_source: String,
    /// The BootstrapConfig in its own file [default: the document next to the NodeConfig].
    pub bootstrap_config: Option<PathBuf>,
    /// Work under this directory instead of / (every file read or written by path).
    pub root: PathBuf,
}

/// What first boot's init step may do to the machine it runs on, by the `--root` rule: under a
/// root other than `/` it starts no unit and the lines it writes name `/usr/bin/hybridboot`,
/// unless the command line says otherwise (`--start`, `--hybridboot-path`). At `/` (the node):
/// units are started and the lines name this executable.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Write init's files but reload, enable and restart no unit.
    pub no_start: bool,
    /// The hybridboot path the credential_process and exec-plugin lines name [default: this
    /// executable].
    pub hybridboot_path: Option<PathBuf>,
}

impl Placement {
    /// Puts this placement into init's settings.
    pub fn apply(&self, init: &mut init::InitSettings) {
        init.no_start = self.no_start;
        init.hybridboot_path = self.hybridboot_path.clone();
    }
}

/// Both documents, validated.
#[derive(Debug)]
pub struct Configs {
    /// `--config-source` as given: the node's own path (init's step takes it under the root
    /// itself).
    pub source: String,
    /// Where the NodeConfig was read (under the root).
    pub path: PathBuf,
    /// The NodeConfig.
    pub node: NodeConfig,
    /// The BootstrapConfig.
    pub bootstrap: BootstrapConfig,
}

impl ConfigSource {
    /// Reads and validates the NodeConfig and the BootstrapConfig (under `root`).
    pub fn load(&self) -> anyhow::Result<Configs> {
        let loaded = nodeconfig::load_under(&self.config_source, &self.root).classed()?;
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
        .classed()?;
        // The credential helper written by init uses the NodeConfig's key; enrollment uses this
        // one. Different references would give a certificate the helper cannot use.
        let ira = &loaded.node.iam_roles_anywhere;
        if ira.private_key_ref != bootstrap.key.parsed {
            log::warn!(
                "{}: spec.key.ref {} differs from the NodeConfig's spec.hybrid.iamRolesAnywhere.privateKeyPath {}: set both to the same key",
                loaded.path.display(),
                bootstrap.key.shown(),
                crate::key::uri::redact_pin_value(&ira.private_key)
            );
        }
        if let Some(proxy) = &bootstrap.proxy {
            export_proxy(proxy);
        }
        Ok(Configs {
            source: self.config_source.clone(),
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

/// `hybridboot firstboot`.
pub fn run(source: &ConfigSource, placement: &Placement) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = source.root.clone();
    let configs = source.load()?;
    let deadline = crate::time::instant_after(started, configs.bootstrap.timeouts.overall);
    // Temporary files of writes a power cut interrupted: the directories first boot writes.
    // (init cleans the directories it writes itself.)
    for dir in [
        PathBuf::from(state::STATE_DIR),
        PathBuf::from(crate::aws::cache::DEFAULT_DIR),
        configs
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
    let result = steps(
        &configs,
        &mut Run {
            root: &root,
            deadline,
            st: &mut st,
            placement,
        },
    );
    match result {
        Ok(summary) => {
            notify::status(&summary);
            notify::notify("READY=1");
            log::info!("first boot done in {} ms", started.elapsed().as_millis());
            Ok(())
        }
        Err(StepFailed { step, error }) => {
            let class = error::class_of(&error);
            let message = error::cause_chain(&error);
            st.last_error = Some(state::LastError {
                step: step.name().to_string(),
                message: message.clone(),
                exit_code: exit::code(class),
                at: crate::x509::chain::rfc3339(SystemTime::now()),
            });
            if let Err(e) = st.save(&root) {
                log::warn!("could not record the failure: {e:#}");
            }
            notify::notify(&format!("STATUS=failed: {message}"));
            Err(error)
        }
    }
}

/// Records who logged in to Vault for a certificate `renew --config-source` just issued, so
/// that `status` tells whether the node certificate or the factory identity did. Only where
/// first boot has left its state (a machine without it gets none).
pub fn record_login(root: &Path, login: &vault::Login) -> anyhow::Result<()> {
    if !fsutil::under_root(root, Path::new(state::STATE_FILE)).exists() {
        return Ok(());
    }
    let mut st = State::load(root)?;
    st.vault_login = Some(login.into());
    st.save(root)
}

/// A failure and the step it happened in (for the state file's `last_error`).
struct StepFailed {
    step: Step,
    error: anyhow::Error,
}

/// How a step ended.
enum Outcome<T> {
    /// Its result exists (made now or found).
    Done(T),
    /// Left out, and why (`status` shows it).
    Skipped(&'static str),
}

/// One run of first boot: where it works, until when, and its record.
struct Run<'a> {
    root: &'a Path,
    deadline: Instant,
    st: &'a mut State,
    placement: &'a Placement,
}

impl Step {
    /// What systemd's status line says while the step runs.
    fn status(self) -> Option<&'static str> {
        Some(match self {
            Step::Clock => "checking the system clock",
            Step::Key => "opening the node key",
            Step::ClockVault => "checking the clock against Vault",
            Step::Enroll => "enrolling certificate with Vault",
            Step::RolesAnywhere => "getting AWS credentials from IAM Roles Anywhere",
            Step::Install => "installing Kubernetes binaries",
            Step::Init => "configuring the node (init)",
            Step::Stamp => return None,
        })
    }

    /// What the deadline message says the run did not reach.
    fn what(self) -> &'static str {
        match self {
            Step::Clock => "the clock check",
            Step::Key => "the key step",
            Step::ClockVault => "contacting Vault",
            Step::Enroll => "enrolling",
            Step::RolesAnywhere => "the Roles Anywhere check",
            Step::Install => "installing",
            Step::Init => "init",
            Step::Stamp => "the stamp",
        }
    }
}

impl Run<'_> {
    /// The one step runner: status line, deadline, timer, then the step's own work, then the
    /// record (done with its duration, or skipped with the reason) and an atomic save. The
    /// step gets the state and what is left of `spec.timeouts.overall`.
    fn run_step<T>(
        &mut self,
        step: Step,
        work: impl FnOnce(&mut State, Duration) -> anyhow::Result<Outcome<T>>,
    ) -> Result<Option<T>, StepFailed> {
        let failed = |error| StepFailed { step, error };
        if let Some(status) = step.status() {
            notify::status(status);
        }
        let left = remaining(self.deadline, step.what()).map_err(failed)?;
        let started = Instant::now();
        let outcome = work(self.st, left).map_err(failed)?;
        if !step.recorded() {
            return Ok(match outcome {
                Outcome::Done(v) => Some(v),
                Outcome::Skipped(_) => None,
            });
        }
        let value = match outcome {
            Outcome::Done(v) => {
                self.st.complete(step);
                self.st.record_duration(step, started.elapsed());
                Some(v)
            }
            Outcome::Skipped(reason) => {
                self.st.skip(step, reason);
                None
            }
        };
        self.st.save(self.root).map_err(failed)?;
        Ok(value)
    }
}

fn remaining(deadline: Instant, what: &str) -> anyhow::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(error::transient(format!("the first-boot deadline (spec.timeouts.overall) passed before {what}; the next run resumes here")));
    }
    Ok(left)
}

/// The retry policy of a remote step: the default schedule, bounded by what is left of
/// `spec.timeouts.overall`.
fn deadline_policy(left: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 30,
        ..RetryPolicy::default()
    }
    .with_deadline(left)
}

/// The steps, in order ([`Step::ALL`]); returns the summary line.
fn steps(configs: &Configs, run: &mut Run<'_>) -> Result<String, StepFailed> {
    let b = &configs.bootstrap;
    let root = run.root;
    run.st.version = state::VERSION;
    run.st.node_name = Some(configs.node.iam_roles_anywhere.node_name.clone());

    // Clock, part 1: NTP and the build-date floor, before the key signs anything.
    run.run_step(Step::Clock, |_, left| {
        match clock::wait_for_sync(&clock::SyncSources::default(), b.timeouts.time_sync.min(left)) {
            clock::Sync::TimedOut => log::warn!(
                "the clock is not NTP-synchronised after {} (spec.timeouts.timeSync): continuing, the checks against the build date and Vault's clock still apply",
                vault::format_duration(b.timeouts.time_sync)
            ),
            clock::Sync::Synchronised => log::debug!("clock is NTP-synchronised"),
            clock::Sync::Unknown => log::debug!("no NTP synchronisation status available"),
        }
        clock::check_floor(SystemTime::now(), clock::build_date()).classed()?;
        Ok(Outcome::Done(()))
    })?;

    // Key: found, or created under the owner hierarchy.
    let plan = run
        .run_step(Step::Key, |st, left| {
            let plan = Plan::new(configs, root, left)?;
            let key = plan
                .key
                .open(OpenMode::CreateIfAbsent(plan.algorithm))
                .with_context(|| format!("spec.key.ref {}", b.key.shown()))?;
            st.key = Some(state::KeyRecord {
                reference: b.key.shown(),
                algorithm: key.algorithm().to_string(),
                fingerprint: key.fingerprint(),
            });
            drop(key); // the Vault client opens it again; swtpm serves one connection at a time
            Ok(Outcome::Done(plan))
        })?
        .expect("the key step is never skipped");

    // Clock, part 2: against Vault's own clock, before any certificate is checked.
    run.run_step(Step::ClockVault, |_, left| {
        check_clock_with_vault(&plan, left)?;
        Ok(Outcome::Done(()))
    })?;

    // Enroll (or keep a valid, young certificate).
    let renewal = run
        .run_step(Step::Enroll, |st, left| {
            let mut settings = plan.vault.clone();
            settings.timeout = left;
            let renewal = vault::renew_certificate(&settings, plan.renew_before)
                .map_err(|e| explain_enroll_error(e, b, &plan))?;
            // A single-use secret id is spent once a certificate exists; a run killed between
            // writing the certificate and removing the file removes it here.
            if let Some(f) = &plan.secret_id_file {
                if fsutil::remove_file(f)? {
                    log::info!("removed the used AppRole secret id file {}", f.display());
                }
                let kept = vault::KeptLogin::at(fsutil::under_root(
                    root,
                    Path::new(state::APPROLE_LOGIN_FILE),
                ));
                if kept.remove()? {
                    log::info!("removed the kept AppRole login {}", kept.path().display());
                }
            }
            st.certificate = Some(state::CertificateRecord {
                path: plan.certificate.clone(),
                renew_before: plan.renew_before,
            });
            // Who logged in: this run's login, else (a certificate a killed run wrote before
            // recording it) the configured method's, which is the only one that enrolls a
            // first certificate.
            let login = match &renewal.login {
                Some(l) => Some(l.clone()),
                None if st.vault_login.is_none() => vault::configured_login(&settings),
                None => None,
            };
            if let Some(login) = &login {
                st.vault_login = Some(login.into());
            }
            Ok(Outcome::Done(renewal))
        })?
        .expect("the enroll step is never skipped");

    // Roles Anywhere: one CreateSession with the new certificate proves the trust anchor,
    // profile and role accept it before anything is installed; the session is cached where
    // init and the node's credential_process find it.
    let mut init_settings = plan.init(configs);
    run.placement.apply(&mut init_settings);
    run.run_step(Step::RolesAnywhere, |st, left| {
        let creds = roles_anywhere_check(configs, &init_settings, &deadline_policy(left))?;
        st.credentials_expiry = creds.expiration.map(crate::x509::chain::rfc3339);
        Ok(Outcome::Done(()))
    })?;

    // Install (only when the image does not carry the binaries).
    run.run_step(Step::Install, |st, _| {
        let Some(spec) = &b.install else {
            return Ok(Outcome::Skipped(
                "spec.install not set: the Kubernetes binaries are part of the image",
            ));
        };
        // A finished install is verified against its record without the network.
        let offline = st.completed.contains(&Step::Install)
            && install::read_record(root).ok().flatten().is_some_and(|r| {
                r.kubernetes_version
                    .starts_with(spec.kubernetes_version.trim_start_matches('v'))
            });
        install::install(&plan::install(spec, root, offline))
            .map_err(|e| e.context("spec.install"))?;
        st.install_tracker = Some(PathBuf::from(install::TRACKER_PATH));
        Ok(Outcome::Done(()))
    })?;

    // Init: nodeadm's phases, then the units. After a power cut the files may already be
    // written while the units were never restarted, so until init is recorded complete the
    // units are (re)started whether or not their files changed.
    run.run_step(Step::Init, |st, left| {
        init_settings.retry = Some(deadline_policy(left));
        init_settings.apply_unchanged = !st.completed.contains(&Step::Init);
        init::init(&init_settings, &mut init::Systemctl::from_env())?;
        Ok(Outcome::Done(()))
    })?;

    // Stamp, last. The state is saved first so that a power cut between the two leaves a state
    // that says everything is done but no stamp: the next run re-checks and writes the stamp.
    run.run_step(Step::Stamp, |st, _| {
        st.last_error = None;
        st.save(root)?;
        let stamp = fsutil::under_root(root, Path::new(state::STAMP_FILE));
        let text = format!(
            "node {}\ncertificate serial {}\n",
            plan.node_name, renewal.info.serial_hex
        );
        fsutil::atomic_write(&stamp, text.as_bytes(), &fsutil::WriteOptions::public())
            .with_context(|| format!("writing {}", stamp.display()))?;
        Ok(Outcome::Done(()))
    })?;
    Ok(format!(
        "joined: certificate serial {} for {} valid until {} (renewal due {})",
        renewal.info.serial_hex,
        plan.node_name,
        crate::x509::chain::rfc3339(renewal.info.not_after),
        crate::x509::chain::rfc3339(renewal.due)
    ))
}

/// One CreateSession (or a cached session with time left) with the enrolled certificate and
/// exactly the arguments and cache the node's credential_process will use.
fn roles_anywhere_check(
    configs: &Configs,
    init: &init::InitSettings,
    policy: &RetryPolicy,
) -> anyhow::Result<crate::aws::credentials::Credentials> {
    let creds = init::roles_anywhere_credentials(&configs.node, &init.aws, &init.root, policy)
    .map_err(|e| {
        // Only the service's own refusal is about the ARNs; a key that could not be opened
        // or a request that could not be signed never reached it.
        let refused = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<crate::aws::rolesanywhere::RolesAnywhereError>(),
                Some(crate::aws::rolesanywhere::RolesAnywhereError::Service(_))
            )
        });
        if refused && error::class_of(&e) == Class::Operator {
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

/// Asks Vault's unauthenticated health endpoint for its `Date`, with retries, and compares.
fn check_clock_with_vault(plan: &Plan, left: Duration) -> anyhow::Result<()> {
    let addr = &plan.vault.address;
    let mut builder = Client::builder();
    if let Some(ca) = &plan.vault.ca_bundle {
        builder = builder
            .ca_bundle_file(ca)
            .classed()
            .context("spec.vault.caBundle")?;
    }
    let client = builder.build().classed()?;
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
        .send_retrying(&Request::get(url).redirects(Redirects::Vault), &policy)
        .classed()
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
    .classed()
}

/// Names the configuration field behind an enrollment failure the operator must fix.
fn explain_enroll_error(e: anyhow::Error, b: &BootstrapConfig, plan: &Plan) -> anyhow::Error {
    let field = e.chain().find_map(|c| {
        c.downcast_ref::<vault::VaultError>().and_then(|v| match v {
            vault::VaultError::NotAllowed { .. } => Some(match &b.vault.auth {
                VaultAuth::DeviceCertificate(d) => format!(
                    "Vault PKI role {:?} (spec.vault.role) refuses CN {:?} to the factory identity {}: the role binds each device to its own name (allowed_domains templated from the certificate-auth identity), so spec.hybrid.iamRolesAnywhere.nodeName must be this device's own name (its IDevID common name)",
                    b.vault.role,
                    plan.node_name,
                    d.certificate.display()
                ),
                _ => format!(
                    "Vault PKI role {:?} (spec.vault.role) refuses CN {:?}: fix spec.hybrid.iamRolesAnywhere.nodeName in the NodeConfig, or the role's allowed_domains",
                    b.vault.role, plan.node_name
                ),
            }),
            vault::VaultError::KeyTypeRefused { role, wanted, .. } => Some(format!(
                "the node key (spec.key.ref {}) does not have the key type Vault PKI role {role:?} (spec.vault.role) requires ({wanted}); spec.hybrid.iamRolesAnywhere.nodeName is not the problem",
                b.key.reference
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
                VaultAuth::DeviceCertificate(d) => format!(
                    "the token of cert auth role {:?} (spec.vault.auth.deviceCertificate.role) is not allowed to sign with spec.vault.role {:?}: check the role's token_policies",
                    d.role, b.vault.role
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
