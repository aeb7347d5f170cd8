//! The Roles Anywhere subcommands: `credential-process`, `update`, `serve` and
//! `credentials inspect`, with aws_signing_helper's flag names so that existing configuration
//! (and nodeadm's generated `credential_process` lines) carries over.
//!
//! The pure pieces live in the sibling modules; this is the wiring: files, the key, the HTTP
//! client, the cache lock, the refresh loop and the IMDS socket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Subcommand};

use super::cache::{self, CacheKeyParts, CredentialCache, Source};
use super::credentials::{render_credential_process, Credentials};
use super::rolesanywhere::{self, RolesAnywhereError, SessionRequest};
use super::{credfile, imds, refresh, sigv4x509};
use crate::cli::KeyArgs;
use crate::exit::{Class, Classified};
use crate::http::{Client, ProxySettings};
use crate::key::{spki_algorithm, NodeKey, OpenMode};
use crate::retry::{RealClock, RetryPolicy};
use crate::x509::chain::{self, Cert};

/// The flags of every command that makes a Roles Anywhere session (aws_signing_helper's names).
#[derive(Args, Debug, Clone)]
pub struct RolesAnywhereArgs {
    /// The node certificate (PEM or DER); its first certificate is the leaf.
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// The certificate's key: handle:0x81.., pkcs11:token=..;object=.., a TSS2 PEM file, or
    /// file:/path (see `hybridboot --help`).
    #[arg(long, value_name = "REF", visible_alias = "key")]
    pub private_key: String,
    /// PEM bundle of intermediate CA certificates, issuer of the leaf first (sent as
    /// X-Amz-X509-Chain when the trust anchor is a root above the issuing CA).
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,
    /// Trust anchor ARN.
    #[arg(long, value_name = "ARN")]
    pub trust_anchor_arn: String,
    /// Profile ARN.
    #[arg(long, value_name = "ARN")]
    pub profile_arn: String,
    /// Role ARN to assume.
    #[arg(long, value_name = "ARN")]
    pub role_arn: String,
    /// Signing region [default: the trust anchor ARN's].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Endpoint URL (default: env AWS_ENDPOINT_URL_ROLESANYWHERE, then AWS_ENDPOINT_URL, then
    /// `https://rolesanywhere.<region>.amazonaws.com`).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Session duration in seconds (900-43200).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub session_duration: u32,
    /// Role session name (usually the node name; often required to equal the certificate CN).
    #[arg(long, value_name = "NAME")]
    pub role_session_name: Option<String>,
    /// PKCS#11 module to load when the key URI has no module-path.
    #[arg(long, value_name = "FILE", env = "HYBRIDBOOT_PKCS11_LIB")]
    pub pkcs11_lib: Option<PathBuf>,
    /// TPM TCTI [default: env HYBRIDBOOT_TCTI, then TPM2TOOLS_TCTI, then device:/dev/tpmrm0].
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// File holding the TPM key's auth value, if it has one.
    #[arg(long, value_name = "FILE")]
    pub tpm_key_auth_file: Option<PathBuf>,
    /// Use HTTPS_PROXY / NO_PROXY from the environment (off by default, like the reference).
    #[arg(long)]
    pub with_proxy: bool,
    /// Proxy for https endpoints (`http://host:port`), whatever the environment says: init
    /// writes it into the credential_process line so every later refresh goes through the
    /// site's proxy.
    #[arg(long, value_name = "URL")]
    pub https_proxy: Option<String>,
    /// Proxy for plain-http endpoints.
    #[arg(long, value_name = "URL")]
    pub http_proxy: Option<String>,
    /// Hosts, domain suffixes, IP addresses and CIDR blocks reached without the proxy (comma
    /// separated; with --https-proxy/--http-proxy).
    #[arg(long, value_name = "LIST")]
    pub no_proxy: Option<String>,
    /// Trust only the CAs in this PEM bundle for the endpoint's TLS certificate (the AWS SDKs'
    /// `AWS_CA_BUNDLE`).
    #[arg(long, value_name = "FILE", env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

/// The loaded inputs of a session request, before the key is opened.
pub struct Prepared {
    /// The request (certificate, chain, ARNs, endpoint, region).
    pub request: SessionRequest,
    /// The cache key of this session.
    pub cache_key: String,
    args: RolesAnywhereArgs,
    client: Client,
}

fn operator(e: impl std::fmt::Display) -> anyhow::Error {
    crate::exit::operator(e.to_string())
}

/// The cause chain on one line (`outer: inner`), without repeats.
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
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

/// A Roles Anywhere failure as an error with the right exit code (4 when retrying may help).
pub fn classified(e: RolesAnywhereError) -> anyhow::Error {
    // The key's own errors keep their type so that `exit::classify` sees them.
    if let RolesAnywhereError::Sign(sigv4x509::X509SignError::Key(k)) = e {
        return anyhow::Error::new(k).context("signing CreateSession with the node key");
    }
    let class = if e.is_transient() {
        Class::Transient
    } else {
        Class::Operator
    };
    Classified {
        class,
        message: e.to_string(),
    }
    .into()
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)
        .map_err(|e| operator(format!("reading {what} {}: {e}", path.display())))?;
    if bytes.first() == Some(&0x30) {
        // DER: one certificate.
        Cert::from_der(&bytes).map_err(|e| operator(format!("{what} {}: {e}", path.display())))?;
        return Ok(vec![bytes]);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| operator(format!("{what} {} is neither PEM nor DER", path.display())))?;
    let certs = chain::parse_pem_bundle(&text)
        .map_err(|e| operator(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(operator(format!(
            "{what} {} holds no CERTIFICATE block",
            path.display()
        )));
    }
    for (i, der) in certs.iter().enumerate() {
        Cert::from_der(der).map_err(|e| {
            operator(format!(
                "{what} {} (certificate #{}): {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(certs)
}

/// The endpoint: the flag, else the AWS SDK environment convention, else the region's.
pub fn resolve_endpoint(
    explicit: Option<&str>,
    region: &str,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| env("AWS_ENDPOINT_URL_ROLESANYWHERE"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| sigv4x509::default_endpoint(region))
        .trim_end_matches('/')
        .to_string()
}

impl RolesAnywhereArgs {
    /// Reads the certificate files and checks the flags; builds the HTTP client.
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        let certs = read_certs(&self.certificate, "certificate")?;
        let leaf_der = certs[0].clone();
        let leaf = Cert::from_der(&leaf_der).map_err(operator)?;
        let now = SystemTime::now();
        if leaf.not_after() < now {
            return Err(operator(format!(
                "certificate {} ({}) expired at {}: renew it (hybridboot renew), or check the clock if that date is wrong",
                self.certificate.display(),
                leaf.subject(),
                chain::rfc3339(leaf.not_after())
            )));
        }
        if leaf.not_before() > now + Duration::from_secs(300) {
            return Err(operator(format!(
                "certificate {} is not valid before {}: check the clock (NTP/RTC)",
                self.certificate.display(),
                chain::rfc3339(leaf.not_before())
            )));
        }
        // Without --intermediates, the certificates after the leaf in the certificate file
        // (Vault's chain, which enroll writes leaf first) are the chain: a trust anchor at the
        // root then works without a second file.
        let intermediates = match &self.intermediates {
            Some(p) => read_certs(p, "intermediates file")?,
            None => certs[1..].to_vec(),
        };
        let region = sigv4x509::resolve_region(
            self.region.as_deref(),
            &self.trust_anchor_arn,
            &self.profile_arn,
        )
        .map_err(operator)?;
        let endpoint =
            resolve_endpoint(self.endpoint.as_deref(), &region, |k| std::env::var(k).ok());
        sigv4x509::endpoint_host(&endpoint).map_err(operator)?;
        sigv4x509::session_body(self.session_duration, None).map_err(operator)?;
        let fingerprint = cache::certificate_fingerprint(&leaf_der);
        let cache_key = cache::cache_key(&CacheKeyParts {
            certificate_fingerprint: &fingerprint,
            trust_anchor_arn: &self.trust_anchor_arn,
            profile_arn: &self.profile_arn,
            role_arn: &self.role_arn,
            session_name: self.role_session_name.as_deref(),
            endpoint: &endpoint,
        });
        let mut b = Client::builder();
        if let Some(ca) = &self.ca_bundle {
            b = b.ca_bundle_file(ca)?;
        }
        b = b.proxy(self.proxy_settings()?);
        let client = b.build()?;
        log::debug!(
            "Roles Anywhere: endpoint {endpoint}, region {region}, certificate {} ({} intermediates)",
            leaf.subject(),
            intermediates.len()
        );
        Ok(Prepared {
            request: SessionRequest {
                endpoint,
                region,
                trust_anchor_arn: self.trust_anchor_arn.clone(),
                profile_arn: self.profile_arn.clone(),
                role_arn: self.role_arn.clone(),
                certificate_der: leaf_der,
                intermediates_der: intermediates,
                duration_secs: self.session_duration,
                role_session_name: self.role_session_name.clone(),
            },
            cache_key,
            args: self.clone(),
            client,
        })
    }

    /// The proxy: the explicit flags, else the environment with `--with-proxy`, else none.
    pub fn proxy_settings(&self) -> anyhow::Result<ProxySettings> {
        if self.https_proxy.is_some() || self.http_proxy.is_some() {
            let pick = |k: &str| match k {
                "https_proxy" => self.https_proxy.clone(),
                "http_proxy" => self.http_proxy.clone(),
                "no_proxy" => self.no_proxy.clone(),
                _ => None,
            };
            return ProxySettings::from_lookup(pick)
                .map_err(|e| operator(format!("--https-proxy/--http-proxy: {e}")));
        }
        if self.no_proxy.is_some() {
            return Err(operator("--no-proxy needs --https-proxy or --http-proxy"));
        }
        Ok(if self.with_proxy {
            ProxySettings::from_env()?
        } else {
            ProxySettings::none()
        })
    }

    fn key_args(&self) -> KeyArgs {
        KeyArgs {
            key: self.private_key.clone(),
            tcti: self.tcti.clone(),
            pkcs11_lib: self.pkcs11_lib.clone(),
            tpm_key_auth_file: self.tpm_key_auth_file.clone(),
        }
    }
}

impl Prepared {
    /// Opens the node key (only when a session must actually be made).
    pub fn open_key(&self) -> anyhow::Result<Box<dyn NodeKey>> {
        self.args.key_args().open(OpenMode::Existing)
    }

    /// Opens the key and makes one CreateSession under `policy`. The long-running commands
    /// open the key for each refresh rather than holding a TPM context or PKCS#11 session for
    /// hours (a restarted resource manager or re-inserted token would break a held one).
    pub fn fetch(&self, policy: &RetryPolicy) -> anyhow::Result<Credentials> {
        let key = self.open_key()?;
        self.fetch_with(key.as_ref(), policy)
    }

    /// One CreateSession under `policy`.
    pub fn fetch_with(
        &self,
        key: &dyn NodeKey,
        policy: &RetryPolicy,
    ) -> anyhow::Result<Credentials> {
        rolesanywhere::create_session(&self.client, &self.request, key, policy, &RealClock).map_err(
            |e| match e {
                RolesAnywhereError::Sign(sigv4x509::X509SignError::KeyMismatch { .. }) => operator(
                    format!("certificate {}: {e}", self.args.certificate.display()),
                ),
                e => classified(e),
            },
        )
    }
}

/// Credentials for the arguments of a `credential_process = hybridboot credential-process ...`
/// line (everything after `credential-process`), served in-process through the same cache: for
/// `token` and other callers that find hybridboot configured as the credential process.
pub fn credentials_from_process_args(args: &[String]) -> anyhow::Result<Credentials> {
    credentials_from_process_args_with(args, &rolesanywhere::interactive_policy())
}

/// [`credentials_from_process_args`] with the caller's retry policy (first boot's deadline).
pub fn credentials_from_process_args_with(
    args: &[String],
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    #[derive(clap::Parser)]
    #[command(name = "credential-process")]
    struct Wrapper {
        #[command(flatten)]
        inner: CredentialProcessArgs,
    }
    let matches = Wrapper::command()
        .try_get_matches_from(
            std::iter::once("credential-process".to_string()).chain(args.iter().cloned()),
        )
        .map_err(|e| operator(format!("credential_process arguments: {}", e.kind())))?;
    let parsed = Wrapper::from_arg_matches(&matches)
        .map_err(|e| operator(format!("credential_process arguments: {}", e.kind())))?;
    credentials_with(&parsed.inner.ra, &parsed.inner.cache, policy)
}

/// The cache directory: `--cache-dir` / `HYBRIDBOOT_CACHE_DIR`, else `$RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/hybridboot`, else `/run/hybridboot`.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Do not read or write the session cache (always make a new session).
    #[arg(long)]
    pub no_cache: bool,
    /// Session cache directory [default: $RUNTIME_DIRECTORY, then $XDG_RUNTIME_DIR/hybridboot,
    /// then /run/hybridboot].
    #[arg(long, value_name = "DIR", env = "HYBRIDBOOT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `hybridboot credential-process`.
#[derive(Args, Debug)]
pub struct CredentialProcessArgs {
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Credentials for these arguments: a cached session with more than 5 minutes left, else a new
/// one (concurrent callers wait on one lock and share the single CreateSession). For
/// `credential-process` and for in-process callers such as `token`.
pub fn credentials(ra: &RolesAnywhereArgs, cache_args: &CacheArgs) -> anyhow::Result<Credentials> {
    credentials_with(ra, cache_args, &rolesanywhere::interactive_policy())
}

/// [`credentials`] with the caller's retry policy for a new session.
pub fn credentials_with(
    ra: &RolesAnywhereArgs,
    cache_args: &CacheArgs,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let prepared = ra.prepare()?;
    let fetch = || -> anyhow::Result<Credentials> {
        let key = prepared.open_key()?;
        prepared.fetch_with(key.as_ref(), policy)
    };
    if cache_args.no_cache {
        return fetch();
    }
    let dir = cache::default_dir(
        cache_args.cache_dir.as_deref(),
        std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
    );
    let cache = CredentialCache::new(dir);
    let (creds, source) = cache.get_or_fetch(&prepared.cache_key, SystemTime::now(), fetch)?;
    if source == Source::Cache {
        log::debug!(
            "using cached session {} from {}",
            creds.access_key_id,
            cache.dir().display()
        );
    }
    Ok(creds)
}

/// Prints `{"Version":1,...}` for an AWS SDK's `credential_process`.
pub fn credential_process(args: CredentialProcessArgs) -> anyhow::Result<()> {
    let creds = credentials(&args.ra, &args.cache)?;
    let out = render_credential_process(&creds);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.expose().as_bytes())
        .and_then(|_| stdout.write_all(b"\n"))
        .and_then(|_| stdout.flush())
        .context("writing credentials to stdout")?;
    Ok(())
}

/// `hybridboot update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    /// Profile of the shared credentials file to keep fresh.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub profile: String,
    /// Shared credentials file [default: env AWS_SHARED_CREDENTIALS_FILE, then ~/.aws/credentials].
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Write once and exit (non-zero when the session cannot be made).
    #[arg(long)]
    pub once: bool,
}

/// Keeps one profile of the shared credentials file fresh: a new session 5 minutes before the
/// current one expires; after a failure the file keeps the old credentials and the attempt is
/// retried with backoff (5 s doubling to 5 min).
pub fn update(args: UpdateArgs) -> anyhow::Result<()> {
    credfile::validate_profile(&args.profile).map_err(operator)?;
    let path = match &args.credentials_file {
        Some(p) => p.clone(),
        None => credfile::default_path(
            std::env::var("AWS_SHARED_CREDENTIALS_FILE").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
        .ok_or_else(|| {
            operator("no credentials file: give --credentials-file or set AWS_SHARED_CREDENTIALS_FILE or HOME")
        })?,
    };
    let prepared = args.ra.prepare()?;
    // A key that cannot be opened is a configuration error: say so now, not in the loop.
    drop(prepared.open_key()?);
    let policy = if args.once {
        rolesanywhere::interactive_policy()
    } else {
        // The loop below does the long backoff; one quick retry smooths over a blip.
        RetryPolicy {
            max_attempts: 2,
            ..rolesanywhere::interactive_policy()
        }
    };
    let mut expiration: Option<SystemTime> = None;
    let mut failures = 0u32;
    loop {
        match prepared.fetch(&policy).and_then(|c| {
            credfile::write(&path, &args.profile, &c).map_err(operator)?;
            Ok(c)
        }) {
            Ok(c) => {
                failures = 0;
                expiration = c.expiration;
                log::info!(
                    "profile [{}] of {} now holds session {} (expires {})",
                    args.profile,
                    path.display(),
                    c.access_key_id,
                    c.expiration
                        .map(super::time::rfc3339)
                        .unwrap_or_else(|| "-".into())
                );
            }
            Err(e) if args.once => return Err(e),
            Err(e) => {
                failures += 1;
                let kept = match expiration {
                    Some(exp) => format!(
                        "the file keeps the previous credentials (valid until {})",
                        super::time::rfc3339(exp)
                    ),
                    None => "the file keeps whatever credentials it had".into(),
                };
                log::error!("{}; {kept}", one_line(&e));
            }
        }
        if args.once {
            return Ok(());
        }
        let delay = refresh::next_delay(SystemTime::now(), expiration, failures);
        log::info!("next refresh in {} s", delay.as_secs());
        std::thread::sleep(delay);
    }
}

/// `hybridboot serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub ra: RolesAnywhereArgs,
    /// Port on 127.0.0.1 (SDKs: `AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:<port>/`).
    #[arg(long, default_value_t = 9911)]
    pub port: u16,
}

/// Longest time a client may take to send its request.
const SERVE_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections handled at once; more wait in the kernel's backlog.
const SERVE_MAX_CONNECTIONS: usize = 16;

#[derive(Default)]
struct Current {
    credentials: Option<Credentials>,
    last_updated: Option<SystemTime>,
}

/// Emulates IMDSv2 on 127.0.0.1 with Roles Anywhere credentials refreshed in the background.
/// When no valid credentials are at hand the answer is an error status, never empty or expired
/// keys.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let prepared = args.ra.prepare()?;
    drop(prepared.open_key()?);
    let role_name = args
        .ra
        .role_arn
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or("hybridboot")
        .to_string();
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .map_err(|e| operator(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let port = listener.local_addr()?.port();
    log::info!("serving IMDSv2 on http://127.0.0.1:{port}/ (role {role_name})");

    let current: Arc<Mutex<Current>> = Arc::default();
    {
        let current = Arc::clone(&current);
        std::thread::spawn(move || refresher(prepared, current));
    }
    let imds = Arc::new(Mutex::new(imds::Imds::new(role_name)));
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        use std::sync::atomic::Ordering;
        if active.load(Ordering::SeqCst) >= SERVE_MAX_CONNECTIONS {
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (imds, current, active) =
            (Arc::clone(&imds), Arc::clone(&current), Arc::clone(&active));
        std::thread::spawn(move || {
            if let Err(e) = serve_one(stream, &imds, &current) {
                log::debug!("IMDS connection: {e}");
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn refresher(prepared: Prepared, current: Arc<Mutex<Current>>) {
    let policy = RetryPolicy {
        max_attempts: 2,
        ..rolesanywhere::interactive_policy()
    };
    let mut failures = 0u32;
    loop {
        let expiration = match prepared.fetch(&policy) {
            Ok(c) => {
                failures = 0;
                let exp = c.expiration;
                let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                cur.credentials = Some(c);
                cur.last_updated = Some(SystemTime::now());
                exp
            }
            Err(e) => {
                failures += 1;
                let cur = current.lock().unwrap_or_else(|p| p.into_inner());
                log::error!(
                    "{}; serving the previous credentials while they are valid",
                    one_line(&e)
                );
                cur.credentials.as_ref().and_then(|c| c.expiration)
            }
        };
        std::thread::sleep(refresh::next_delay(SystemTime::now(), expiration, failures));
    }
}

fn serve_one(
    mut stream: TcpStream,
    imds: &Mutex<imds::Imds>,
    current: &Mutex<Current>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SERVE_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVE_IO_TIMEOUT))?;
    let deadline = std::time::Instant::now() + SERVE_IO_TIMEOUT;
    let cap = imds::MAX_HEAD_BYTES + imds::MAX_BODY_BYTES;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let response = loop {
        match imds::parse_request(&buf) {
            imds::Parse::Complete { request, .. } => {
                let cur = current.lock().unwrap_or_else(|p| p.into_inner());
                let view = imds::CredentialView {
                    credentials: cur.credentials.as_ref(),
                    last_updated: cur.last_updated.unwrap_or(SystemTime::UNIX_EPOCH),
                };
                let mut imds = imds.lock().unwrap_or_else(|p| p.into_inner());
                let r = imds.handle(&request, SystemTime::now(), view, imds::random_token);
                log::debug!("IMDS {} {} -> {}", request.method, request.path, r.status);
                break r;
            }
            imds::Parse::Reject(r) => break r,
            imds::Parse::Incomplete => {}
        }
        if buf.len() >= cap || std::time::Instant::now() > deadline {
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        let take = n.min(cap - buf.len());
        buf.extend_from_slice(&chunk[..take]);
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()
}

/// `hybridboot credentials ...`.
#[derive(Subcommand, Debug)]
pub enum CredentialsCommand {
    /// Show what a certificate (and chain) presents to IAM Roles Anywhere: key type, serial
    /// (decimal, as in Credential=, and hex), subject, validity, chain links.
    Inspect(InspectArgs),
}

/// `hybridboot credentials inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The node certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub certificate: PathBuf,
    /// PEM bundle of intermediate CA certificates.
    #[arg(long, value_name = "FILE")]
    pub intermediates: Option<PathBuf>,
}

/// Runs a `credentials` subcommand.
pub fn run_credentials(cmd: CredentialsCommand) -> anyhow::Result<()> {
    match cmd {
        CredentialsCommand::Inspect(a) => {
            print!("{}", inspect(&a)?);
            Ok(())
        }
    }
}

/// The text `credentials inspect` prints.
pub fn inspect(args: &InspectArgs) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let certs = read_certs(&args.certificate, "certificate")?;
    let leaf = Cert::from_der(&certs[0]).map_err(operator)?;
    let info = leaf.info();
    let algorithm = spki_algorithm(&leaf.spki_der(), &args.certificate.display().to_string())
        .map(|a| a.to_string())
        .unwrap_or_else(|e| format!("unsupported ({e})"));
    let now = SystemTime::now();
    let status = if info.not_after < now {
        "EXPIRED"
    } else if info.not_before > now {
        "NOT YET VALID"
    } else {
        "valid"
    };
    let mut out = String::new();
    let _ = writeln!(out, "key type: {algorithm}");
    // The signer's view of the serial: decimal as in `Credential=`, hex without leading zeros
    // as the service's default session name.
    let serial = sigv4x509::leaf_info(leaf.der()).map_err(operator)?;
    let _ = writeln!(out, "serial (decimal): {}", serial.serial_decimal);
    let _ = writeln!(out, "serial (hex): {}", serial.serial_hex);
    let _ = writeln!(out, "subject: {}", info.subject);
    let _ = writeln!(out, "issuer: {}", info.issuer);
    let _ = writeln!(out, "not before: {}", chain::rfc3339(info.not_before));
    let _ = writeln!(out, "not after: {}", chain::rfc3339(info.not_after));
    let _ = writeln!(out, "status: {status}");
    let _ = writeln!(
        out,
        "sha256 fingerprint: {}",
        cache::certificate_fingerprint(leaf.der())
    );
    let mut chain_certs: Vec<Cert> = Vec::new();
    for der in certs.iter().skip(1) {
        chain_certs.push(Cert::from_der(der).map_err(operator)?);
    }
    if let Some(p) = &args.intermediates {
        for der in read_certs(p, "intermediates file")? {
            chain_certs.push(Cert::from_der(&der).map_err(operator)?);
        }
    }
    let mut child = leaf.clone();
    for (i, c) in chain_certs.iter().enumerate() {
        let link = match child.verify_issued_by(c) {
            Ok(()) => "signs the previous".to_string(),
            Err(e) => format!("DOES NOT sign the previous: {e}"),
        };
        let _ = writeln!(
            out,
            "chain[{}]: {} (not after {}; {link})",
            i + 1,
            c.subject(),
            chain::rfc3339(c.not_after())
        );
        child = c.clone();
    }
    if chain_certs.is_empty() {
        let _ = writeln!(out, "chain: none (the trust anchor must be the issuer)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_flags_override_the_environment() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            ra: RolesAnywhereArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "x",
                "--certificate",
                "/c",
                "--private-key",
                "file:/k",
                "--trust-anchor-arn",
                "a",
                "--profile-arn",
                "p",
                "--role-arn",
                "r",
            ];
            argv.extend_from_slice(extra);
            W::try_parse_from(argv).unwrap().ra
        };
        let url = |s: &ProxySettings, u: &str| {
            format!("{:?}", s.for_url(&crate::http::Url::parse(u).unwrap()))
        };
        let s = parse(&[
            "--https-proxy",
            "http://proxy:3128",
            "--no-proxy",
            "10.0.0.0/8,.corp",
        ])
        .proxy_settings()
        .unwrap();
        assert_eq!(
            url(&s, "https://rolesanywhere.us-west-2.amazonaws.com/"),
            "Some(Proxy(http://proxy:3128))"
        );
        assert_eq!(url(&s, "https://10.1.2.3/"), "None");
        assert_eq!(url(&s, "https://ra.corp/"), "None");
        assert_eq!(
            url(&parse(&[]).proxy_settings().unwrap(), "https://a/"),
            "None"
        );
        assert!(parse(&["--no-proxy", "x"]).proxy_settings().is_err());
        assert!(parse(&["--https-proxy", "https://tls-proxy:1"])
            .proxy_settings()
            .is_err());
    }
    use clap::{CommandFactory as _, FromArgMatches as _, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        CredentialProcess(CredentialProcessArgs),
        Update(UpdateArgs),
        Serve(ServeArgs),
    }

    fn parse(line: &str) -> Sub {
        let argv = super::super::sources::split_command(line).unwrap();
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&m).unwrap().cmd
    }

    /// The lines nodeadm (and our NodeConfig renderer) write must parse unchanged.
    #[test]
    fn accepts_nodeadm_style_lines() {
        let flags = "--certificate /etc/iam/pki/server.pem --private-key /etc/iam/pki/server.key \
            --trust-anchor-arn arn:aws:acm-pca:us-west-2:123456789010:certificate-authority/fc32b514 \
            --profile-arn arn:aws:iam::123456789010:instance-profile/mockHybridNodeRole \
            --role-arn arn:aws:iam::123456789010:role/mockHybridNodeRole \
            --role-session-name mock-hybrid-node";
        match parse(&format!("hybridboot credential-process {flags}")) {
            Sub::CredentialProcess(a) => {
                assert_eq!(a.ra.private_key, "/etc/iam/pki/server.key");
                assert_eq!(a.ra.role_session_name.as_deref(), Some("mock-hybrid-node"));
                assert_eq!(a.ra.session_duration, 3600);
                assert!(!a.cache.no_cache && !a.ra.with_proxy);
            }
            _ => unreachable!(),
        }
        match parse(&format!("hybridboot update {flags} --region us-west-2")) {
            Sub::Update(a) => {
                assert_eq!(a.ra.region.as_deref(), Some("us-west-2"));
                assert_eq!(a.profile, "default");
                assert!(!a.once);
            }
            _ => unreachable!(),
        }
        match parse(&format!("hybridboot serve {flags}")) {
            Sub::Serve(a) => assert_eq!(a.port, 9911),
            _ => unreachable!(),
        }
        // aws_signing_helper's other flags.
        match parse(&format!(
            "hybridboot credential-process {flags} --intermediates /c.pem --region eu-west-1 \
             --endpoint https://x.test --session-duration 900 --pkcs11-lib /l.so --with-proxy \
             --ca-bundle /ca.pem --tcti swtpm: --no-cache"
        )) {
            Sub::CredentialProcess(a) => {
                assert_eq!(a.ra.session_duration, 900);
                assert!(a.ra.with_proxy && a.cache.no_cache);
                assert_eq!(a.ra.pkcs11_lib.as_deref(), Some(Path::new("/l.so")));
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn endpoint_precedence() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL_ROLESANYWHERE" => Some("https://ra.test/".to_string()),
            "AWS_ENDPOINT_URL" => Some("https://all.test".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve_endpoint(Some("https://flag.test"), "eu-west-1", env),
            "https://flag.test"
        );
        assert_eq!(resolve_endpoint(None, "eu-west-1", env), "https://ra.test");
        let only_all = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "https://all.test".to_string());
        assert_eq!(
            resolve_endpoint(None, "eu-west-1", only_all),
            "https://all.test"
        );
        assert_eq!(
            resolve_endpoint(None, "eu-west-1", |_| None),
            "https://rolesanywhere.eu-west-1.amazonaws.com"
        );
    }
}
