//! IAM Roles Anywhere sessions from settings: the certificate files read and checked, region and
//! endpoint resolved, the node key opened only when a session must be made, and the session
//! cache shared by every process of the node (`credential-process`, `token`, `init`, first
//! boot). [`RolesAnywhereSettings`] is the one description of a session, whoever asks: the
//! command line, or `init` and first boot (from the NodeConfig, see
//! `node::render::aws::roles_anywhere_settings`; the node's `credential_process` line is
//! rendered from the same settings).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::cache::{self, CacheKeyParts, CredentialCache, Source};
use super::credentials::Credentials;
use super::rolesanywhere::{self, RolesAnywhereError, SessionRequest};
use super::sigv4x509;
use crate::error::{operator, Class, Classify, ResultExt, WithClass};
use crate::http::{Client, ProxySettings};
use crate::key::{KeyRef, KeySettings, NodeKey, OpenMode};
use crate::retry::{RealClock, RetryPolicy};
use crate::x509::chain::{self, Cert};

/// Session duration unless told otherwise (seconds; the service accepts 900-43200).
pub const DEFAULT_SESSION_DURATION: u32 = 3600;

/// One Roles Anywhere session's parameters (aws_signing_helper's, whose flag names
/// `credential-process` keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesAnywhereSettings {
    /// The node certificate (PEM or DER); its first certificate is the leaf.
    pub certificate: PathBuf,
    /// The certificate's key.
    pub key: KeySettings,
    /// PEM bundle of intermediate CA certificates, issuer of the leaf first [default: the
    /// certificates after the leaf in the certificate file].
    pub intermediates: Option<PathBuf>,
    /// Trust anchor ARN.
    pub trust_anchor_arn: String,
    /// Profile ARN.
    pub profile_arn: String,
    /// Role ARN to assume.
    pub role_arn: String,
    /// Signing region [default: the trust anchor ARN's].
    pub region: Option<String>,
    /// Endpoint URL [default: env `AWS_ENDPOINT_URL_ROLESANYWHERE`, then `AWS_ENDPOINT_URL`,
    /// then the region's].
    pub endpoint: Option<String>,
    /// Session duration in seconds.
    pub session_duration: u32,
    /// Role session name (usually the node name).
    pub role_session_name: Option<String>,
    /// Which proxy CreateSession goes through.
    pub proxy: SessionProxy,
    /// Trust only the CAs in this PEM bundle for the endpoint's TLS certificate.
    pub ca_bundle: Option<PathBuf>,
}

/// Which proxy a session's requests go through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionProxy {
    /// None: the endpoint is reached directly (the reference's default).
    #[default]
    Direct,
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the environment (`--with-proxy`).
    Environment,
    /// These proxies, whatever the environment says (`--https-proxy`, `--http-proxy`,
    /// `--no-proxy`): what init writes into the node's `credential_process` line, so that every
    /// later refresh goes through the site's proxy.
    Explicit {
        /// Proxy for https endpoints (`http://host:port`).
        https_proxy: Option<String>,
        /// Proxy for plain-http endpoints.
        http_proxy: Option<String>,
        /// Hosts, suffixes, IP addresses and CIDR blocks reached directly (comma separated).
        no_proxy: Option<String>,
    },
}

impl SessionProxy {
    /// The HTTP client's proxy settings.
    pub fn settings(&self) -> anyhow::Result<ProxySettings> {
        match self {
            SessionProxy::Direct => Ok(ProxySettings::none()),
            SessionProxy::Environment => Ok(ProxySettings::from_env().classed()?),
            SessionProxy::Explicit {
                https_proxy,
                http_proxy,
                no_proxy,
            } => {
                if https_proxy.is_none() && http_proxy.is_none() {
                    return Err(operator("--no-proxy needs --https-proxy or --http-proxy"));
                }
                let pick = |k: &str| match k {
                    "https_proxy" => https_proxy.clone(),
                    "http_proxy" => http_proxy.clone(),
                    "no_proxy" => no_proxy.clone(),
                    _ => None,
                };
                ProxySettings::from_lookup(pick)
                    .map_err(|e| operator(format!("--https-proxy/--http-proxy: {e}")))
            }
        }
    }
}

impl RolesAnywhereSettings {
    /// A session for this certificate, key and ARNs, everything else at its default.
    pub fn new(
        certificate: PathBuf,
        key: KeySettings,
        trust_anchor_arn: impl Into<String>,
        profile_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> RolesAnywhereSettings {
        RolesAnywhereSettings {
            certificate,
            key,
            intermediates: None,
            trust_anchor_arn: trust_anchor_arn.into(),
            profile_arn: profile_arn.into(),
            role_arn: role_arn.into(),
            region: None,
            endpoint: None,
            session_duration: DEFAULT_SESSION_DURATION,
            role_session_name: None,
            proxy: SessionProxy::Direct,
            ca_bundle: None,
        }
    }

    /// The `credential-process` flags and values that say these settings, for a line another
    /// process runs (the node's AWS config, a kubeconfig's exec plugin): nodeadm's five first,
    /// then whatever is set beyond the defaults. A flag without a value (`--with-proxy`) comes
    /// with an empty value.
    pub fn process_args(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut args = vec![
            ("--certificate", self.certificate.display().to_string()),
            ("--private-key", self.key.reference.clone()),
            ("--trust-anchor-arn", self.trust_anchor_arn.clone()),
            ("--profile-arn", self.profile_arn.clone()),
            ("--role-arn", self.role_arn.clone()),
        ];
        let optional = [
            ("--role-session-name", self.role_session_name.clone()),
            ("--intermediates", path(&self.intermediates)),
            ("--endpoint", self.endpoint.clone()),
            ("--ca-bundle", path(&self.ca_bundle)),
            ("--tcti", self.key.tcti.clone()),
            ("--pkcs11-lib", path(&self.key.pkcs11_lib)),
            ("--tpm-key-auth-file", path(&self.key.tpm_key_auth_file)),
            ("--region", self.region.clone()),
            (
                "--session-duration",
                (self.session_duration != DEFAULT_SESSION_DURATION)
                    .then(|| self.session_duration.to_string()),
            ),
        ];
        args.extend(
            optional
                .into_iter()
                .filter_map(|(flag, value)| value.map(|v| (flag, v))),
        );
        if self.key.reuse_pin {
            args.push(("--reuse-pin", String::new()));
        }
        match &self.proxy {
            SessionProxy::Direct => {}
            SessionProxy::Environment => args.push(("--with-proxy", String::new())),
            SessionProxy::Explicit {
                https_proxy,
                http_proxy,
                no_proxy,
            } => {
                let explicit = [
                    ("--https-proxy", https_proxy),
                    ("--http-proxy", http_proxy),
                    ("--no-proxy", no_proxy),
                ];
                args.extend(
                    explicit
                        .into_iter()
                        .filter_map(|(flag, value)| value.clone().map(|v| (flag, v))),
                );
            }
        }
        args
    }

    /// The certificate for messages: its path, or its URI without any PIN value.
    fn certificate_name(&self) -> String {
        match self.token_certificate() {
            Some(uri) => KeyRef::parse(uri)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "pkcs11:(unparsable URI)".into()),
            None => self.certificate.display().to_string(),
        }
    }

    /// The certificate as a `pkcs11:` URI (read from the token), when it is one.
    fn token_certificate(&self) -> Option<&str> {
        self.certificate
            .to_str()
            .filter(|c| c.starts_with("pkcs11:"))
    }

    /// The same session seen from a run under `root` (tests, image builds): the certificate,
    /// the CA bundle and a key file are taken under it.
    pub fn under_root(mut self, root: &Path) -> RolesAnywhereSettings {
        let r = |p: &Path| crate::fsutil::under_root(root, p);
        if self.token_certificate().is_none() {
            self.certificate = r(&self.certificate);
        }
        self.ca_bundle = self.ca_bundle.as_deref().map(r);
        if let Ok(KeyRef::Path(p)) = KeyRef::parse(&self.key.reference) {
            self.key.reference = r(&p).display().to_string();
        }
        self
    }

    /// What `credential-process` takes from the environment when its flags leave them out
    /// (`HYBRIDBOOT_PKCS11_LIB`, `AWS_CA_BUNDLE`), for in-process callers.
    pub fn with_env_defaults(mut self, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if self.key.pkcs11_lib.is_none() {
            self.key.pkcs11_lib = var("HYBRIDBOOT_PKCS11_LIB");
        }
        if self.ca_bundle.is_none() {
            self.ca_bundle = var("AWS_CA_BUNDLE");
        }
        self
    }

    /// Reads the certificate files and checks the settings; builds the HTTP client.
    pub fn prepare(&self) -> anyhow::Result<Session> {
        let certs = match self.token_certificate() {
            Some(uri) => {
                let opts = self.key.options()?;
                vec![crate::key::read_token_certificate(uri, &opts).classed()?]
            }
            None => read_certs(&self.certificate, "certificate")?,
        };
        let leaf_der = certs[0].clone();
        let leaf = Cert::from_der(&leaf_der).classed()?;
        let now = SystemTime::now();
        if leaf.not_after() < now {
            return Err(operator(format!(
                "certificate {} ({}) expired at {}: renew it (hybridboot renew), or check the clock if that date is wrong",
                self.certificate_name(),
                leaf.subject(),
                chain::rfc3339(leaf.not_after())
            )));
        }
        if leaf.not_before() > now + Duration::from_secs(300) {
            return Err(operator(format!(
                "certificate {} is not valid before {}: check the clock (NTP/RTC)",
                self.certificate_name(),
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
        .classed()?;
        let endpoint =
            resolve_endpoint(self.endpoint.as_deref(), &region, |k| std::env::var(k).ok());
        sigv4x509::endpoint_host(&endpoint).classed()?;
        sigv4x509::session_body(self.session_duration, None).classed()?;
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
            b = b.ca_bundle_file(ca).classed()?;
        }
        b = b.proxy(self.proxy.settings()?);
        let client = b.build().classed()?;
        log::debug!(
            "Roles Anywhere: endpoint {endpoint}, region {region}, certificate {} ({} intermediates)",
            leaf.subject(),
            intermediates.len()
        );
        Ok(Session {
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
            settings: self.clone(),
            client,
        })
    }
}

/// The loaded inputs of a session request, before the key is opened.
pub struct Session {
    /// The request (certificate, chain, ARNs, endpoint, region).
    pub request: SessionRequest,
    /// The cache key of this session.
    pub cache_key: String,
    settings: RolesAnywhereSettings,
    client: Client,
}

pub(crate) fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading {what} {}", path.display()))
        .with_class(Class::Operator)?;
    if bytes.first() == Some(&0x30) {
        // DER: one certificate.
        Cert::from_der(&bytes)
            .classed()
            .with_context(|| format!("{what} {}", path.display()))?;
        return Ok(vec![bytes]);
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| operator(format!("{what} {} is neither PEM nor DER", path.display())))?;
    let certs = chain::parse_pem_bundle(&text)
        .classed()
        .with_context(|| format!("{what} {}", path.display()))?;
    if certs.is_empty() {
        return Err(operator(format!(
            "{what} {} holds no CERTIFICATE block",
            path.display()
        )));
    }
    for (i, der) in certs.iter().enumerate() {
        Cert::from_der(der)
            .classed()
            .with_context(|| format!("{what} {} (certificate #{})", path.display(), i + 1))?;
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

impl Session {
    /// Opens the node key (only when a session must actually be made).
    pub fn open_key(&self) -> anyhow::Result<Box<dyn NodeKey>> {
        let reference = &self.settings.key.reference;
        let certificate = self.settings.certificate.display();
        self.settings.key.open(OpenMode::Existing).map_err(|e| {
            let missing = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<crate::key::KeyError>(),
                    Some(crate::key::KeyError::NotFound { .. })
                )
            });
            if missing {
                // `key create` would make a new key, which cannot match the certificate.
                operator(format!(
                    "the key {reference} of certificate {certificate} does not exist, so nothing was sent to IAM Roles Anywhere: restore that key (a new key cannot match the certificate), or enroll a new certificate for a new key"
                ))
            } else {
                e.context(format!(
                    "opening the key {reference} of certificate {certificate} (nothing was sent to IAM Roles Anywhere)"
                ))
            }
        })
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
                RolesAnywhereError::Sign(sigv4x509::X509SignError::KeyMismatch { .. }) => e
                    .classed()
                    .context(format!("certificate {}", self.settings.certificate_name())),
                e => e.classed(),
            },
        )
    }
}

/// Where sessions are cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSettings {
    /// Do not read or write the session cache (always make a new session).
    pub no_cache: bool,
    /// Session cache directory [default: `$RUNTIME_DIRECTORY`, then
    /// `$XDG_RUNTIME_DIR/hybridboot`, then `/run/hybridboot`].
    pub dir: Option<PathBuf>,
}

impl CacheSettings {
    /// The cache of a run under `root`: `<root>/run/hybridboot` unless the environment names one
    /// (`HYBRIDBOOT_CACHE_DIR`, `RUNTIME_DIRECTORY`); the default one for `/`.
    pub fn for_root(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> CacheSettings {
        let named = env("HYBRIDBOOT_CACHE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        CacheSettings {
            no_cache: false,
            dir: cache::dir_for_root(root, env).or(named),
        }
    }
}

/// Credentials for these settings: a cached session with more than 5 minutes left, else a new
/// one (concurrent callers wait on one lock and share the single CreateSession). For
/// `credential-process` and for in-process callers such as `token`.
pub fn credentials(
    settings: &RolesAnywhereSettings,
    cache_settings: &CacheSettings,
) -> anyhow::Result<Credentials> {
    credentials_with(
        settings,
        cache_settings,
        &rolesanywhere::interactive_policy(),
    )
}

/// [`credentials`] with the caller's retry policy for a new session.
pub fn credentials_with(
    settings: &RolesAnywhereSettings,
    cache_settings: &CacheSettings,
    policy: &RetryPolicy,
) -> anyhow::Result<Credentials> {
    let session = settings.prepare()?;
    let fetch = || -> anyhow::Result<Credentials> {
        let key = session.open_key()?;
        session.fetch_with(key.as_ref(), policy)
    };
    if cache_settings.no_cache {
        return fetch();
    }
    let dir = cache::default_dir(
        cache_settings.dir.as_deref(),
        std::env::var("RUNTIME_DIRECTORY").ok().as_deref(),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
    );
    let cache = CredentialCache::new(dir);
    let (creds, source) = cache.get_or_fetch(&session.cache_key, SystemTime::now(), fetch)?;
    if source == Source::Cache {
        log::debug!(
            "using cached session {} from {}",
            creds.access_key_id,
            cache.dir().display()
        );
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn reuse_pin_is_written_into_the_line_as_a_bare_flag() {
        let mut key = KeySettings::new("pkcs11:token=piv;object=9c");
        let ra = |key: &KeySettings| {
            RolesAnywhereSettings::new("/c.pem".into(), key.clone(), "ta", "p", "r").process_args()
        };
        assert!(!ra(&key).iter().any(|(f, _)| *f == "--reuse-pin"));
        key.reuse_pin = true;
        let args = ra(&key);
        assert_eq!(args.last(), Some(&("--reuse-pin", String::new())));
        let words = crate::node::render::aws::flag_words(&args);
        assert_eq!(words.last().map(String::as_str), Some("--reuse-pin"));
    }
}
