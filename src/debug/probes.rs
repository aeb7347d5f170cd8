//! The checks themselves: each asks one peer or reads one thing, read-only, and turns what it
//! found into a [`Check`] whose remediation names the field, file, permission or command.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Check, DebugSettings, Report};
use crate::aws::credentials::Credentials;
use crate::aws::{eks, session, sigv4, sigv4x509, sts_token};
use crate::error::{self, Class, Classify};
use crate::firstboot::clock::{self, Sync};
use crate::firstboot::{Configs, Plan};
use crate::fsutil::under_root;
use crate::http::{self, Client, ClientIdentity, Request, Timeouts, Url};
use crate::key::{KeyError, NodeKey, OpenMode};
use crate::node::init::{self, EksTarget};
use crate::node::render::aws::roles_anywhere_settings;
use crate::node::sandbox::{self, SandboxSettings};
use crate::node::{checks, render};
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::time::rfc3339;
use crate::vault::{self, SecretAuth, Vault, VaultError};
use crate::x509::chain::{self, Cert};

const CLOCK_FIX: &str = "synchronise the clock: `timedatectl set-ntp true` (systemd-timesyncd) or `chronyc makestep`, make sure NTP (udp/123) is reachable, and check the RTC battery if it is wrong after every power cut";

/// Everything later checks need from earlier ones.
#[derive(Default)]
struct Found {
    vault_up: bool,
    key_spki: Option<Vec<u8>>,
    certificate_ok: bool,
    creds: Option<Credentials>,
    cluster: Option<eks::ClusterDetails>,
}

pub(super) fn run(s: &DebugSettings) -> Report {
    let mut r = Report::default();
    let root = s.source.root.clone();
    let configs = match s.source.load() {
        Ok(c) => {
            r.checks.push(Check::pass(
                "config",
                format!(
                    "{}: node {} for cluster {} in {}",
                    c.path.display(),
                    c.node.iam_roles_anywhere.node_name,
                    c.node.cluster.name,
                    c.node.cluster.region
                ),
            ));
            Some(c)
        }
        Err(e) => {
            r.checks.push(Check::fail(
                "config",
                error::class_of(&e),
                error::cause_chain(&e),
                format!(
                    "fix the file and field named above (`hybridboot config check --config-source {}` lists every problem)",
                    s.source.config_source
                ),
            ));
            None
        }
    };
    r.checks.push(clock_check(s));
    if let Some(configs) = &configs {
        match Plan::new(configs, &root, s.timeout) {
            Ok(plan) => remote_checks(s, configs, &plan, &mut r),
            Err(e) => r.checks.push(Check::fail(
                "vault",
                error::class_of(&e),
                error::cause_chain(&e),
                "fix spec.vault in the BootstrapConfig",
            )),
        }
    } else {
        for name in [
            "vault",
            "clock-vault",
            "clock-aws",
            "key",
            "certificate",
            "vault-auth",
            "roles-anywhere",
            "sts",
            "eks",
            "apiserver",
            "node-ip",
        ] {
            r.checks
                .push(Check::skip(name, "needs a valid configuration"));
        }
    }
    r.checks.push(proxy_check(s, configs.as_ref()));
    r.checks.push(swap_check(&root));
    for unit in ["containerd", "kubelet"] {
        r.checks.push(unit_check(s, unit));
    }
    r.checks.push(sandbox_check(s, configs.as_ref()));
    r
}

fn client(ca: Option<&Path>, timeout: Duration) -> anyhow::Result<Client> {
    let mut b = Client::builder().timeouts(Timeouts {
        connect: timeout.min(Duration::from_secs(5)),
        read: timeout,
        total: timeout,
    });
    if let Some(ca) = ca {
        b = b.ca_bundle_file(ca).map_err(Classify::classed)?;
    }
    b.build().map_err(Classify::classed)
}

fn clock_check(s: &DebugSettings) -> Check {
    let now = SystemTime::now();
    if let Err(e) = clock::check_floor(now, clock::build_date()) {
        return Check::fail("clock", Class::Operator, e.to_string(), CLOCK_FIX);
    }
    match clock::wait_for_sync(&s.time_sync, Duration::ZERO) {
        Sync::Synchronised => Check::pass("clock", format!("reads {}, NTP-synchronised", rfc3339(now))),
        Sync::TimedOut => Check::fail(
            "clock",
            Class::Operator,
            format!("reads {}, not NTP-synchronised (systemd-timesyncd has no sync yet)", rfc3339(now)),
            CLOCK_FIX,
        ),
        Sync::Unknown => Check::pass(
            "clock",
            format!(
                "reads {}; NTP state unknown here (no systemd-timesyncd or timedated): the comparisons with Vault and AWS below decide",
                rfc3339(now)
            ),
        ),
    }
}

fn skew_check(name: &'static str, peer: &str, date: Option<SystemTime>) -> Check {
    let Some(server) = date else {
        return Check::skip(name, format!("{peer} sent no Date header"));
    };
    skew_check_at(name, peer, SystemTime::now(), server)
}

/// This machine's clock against a peer's `Date`: pass within [`clock::WARN_SKEW`], warn
/// within [`clock::MAX_SKEW`] (signatures still pass, but a clock that drifts this far is not
/// synchronised and will not stay inside), fail beyond.
fn skew_check_at(name: &'static str, peer: &str, now: SystemTime, server: SystemTime) -> Check {
    if let Err(e) = clock::check_against_server(now, server, peer) {
        return Check::fail(name, Class::Operator, e.to_string(), CLOCK_FIX);
    }
    let (skew, direction) = clock::skew(now, server);
    if skew > clock::WARN_SKEW {
        return Check::warn(
            name,
            format!(
                "{} {} {peer} (still within the {}s that signatures and certificates allow, but more than the {}s of a synchronised clock)",
                crate::vault::format_duration(skew),
                if direction == "ahead" { "ahead of" } else { "behind" },
                clock::MAX_SKEW.as_secs(),
                clock::WARN_SKEW.as_secs()
            ),
            CLOCK_FIX,
        );
    }
    Check::pass(
        name,
        format!("within {}s of {peer}", clock::WARN_SKEW.as_secs()),
    )
}

fn remote_checks(s: &DebugSettings, configs: &Configs, plan: &Plan, r: &mut Report) {
    let mut found = Found::default();
    let b = &configs.bootstrap;

    // Vault: reachable and unsealed, its clock.
    let (vault, vault_date) = vault_health(s, plan);
    found.vault_up = vault.outcome == super::Outcome::Pass;
    r.checks.push(vault);
    r.checks.push(if vault_date.is_some() {
        skew_check(
            "clock-vault",
            &format!("Vault at {}", plan.vault.address.origin()),
            vault_date,
        )
    } else {
        Check::skip("clock-vault", "needs an answer from Vault")
    });

    // AWS's clock, at the Roles Anywhere endpoint the node uses.
    let env = |k: &str| std::env::var(k).ok();
    let ra = roles_anywhere_settings(&configs.node, &plan.init(configs).aws)
        .under_root(&plan.root)
        .with_env_defaults(&env);
    let ra_endpoint = sigv4x509::resolve_region(None, &ra.trust_anchor_arn, &ra.profile_arn)
        .ok()
        .map(|region| session::resolve_endpoint(ra.endpoint.as_deref(), &region, env));
    r.checks.push(match &ra_endpoint {
        None => Check::skip("clock-aws", "the trust anchor ARN names no region"),
        Some(ep) => match Url::parse(ep)
            .map_err(Classify::classed)
            .and_then(|u| {
                let c = client(ra.ca_bundle.as_deref(), s.timeout)?;
                c.send(&Request::get(u.join(""))).map_err(Classify::classed)
            }) {
            Ok(resp) => skew_check("clock-aws", &format!("AWS at {ep}"), resp.date()),
            Err(e) => Check::fail(
                "clock-aws",
                error::class_of(&e),
                format!("cannot ask {ep} for its time: {}", error::cause_chain(&e)),
                "check the network path and proxy to IAM Roles Anywhere (spec.aws.rolesAnywhereEndpoint, spec.aws.caBundle)",
            ),
        },
    });

    // The node key.
    r.checks.push(key_check(plan, &mut found));

    // The certificate: chain, key, time left.
    r.checks.push(certificate_check(s, plan, &mut found));

    // Vault auth, without spending anything.
    r.checks.push(vault_auth_check(s, configs, plan, &found));

    // Roles Anywhere: one CreateSession, not cached (debug writes nothing).
    r.checks.push(if !found.certificate_ok {
        Check::skip("roles-anywhere", "needs a valid certificate for the node key")
    } else {
        match ra.prepare().and_then(|sess| sess.fetch(&RetryPolicy::once())) {
            Ok(c) => {
                let detail = format!(
                    "CreateSession accepted: role {}, credentials {} until {}",
                    ra.role_arn,
                    c.access_key_id,
                    c.expiration.map(rfc3339).unwrap_or_else(|| "-".into())
                );
                found.creds = Some(c);
                Check::pass("roles-anywhere", detail)
            }
            Err(e) => {
                let class = error::class_of(&e);
                let fix = if class == Class::Operator {
                    format!(
                        "IAM Roles Anywhere refused this certificate: check spec.hybrid.iamRolesAnywhere.trustAnchorArn ({}) holds the CA that issues spec.vault.role {:?}'s certificates, profileArn ({}) is enabled and lists roleArn ({}), and the role's trust policy allows rolesanywhere.amazonaws.com",
                        ra.trust_anchor_arn, b.vault.role, ra.profile_arn, ra.role_arn
                    )
                } else {
                    format!(
                        "IAM Roles Anywhere at {} is unreachable: check the network path and proxy, or spec.aws.rolesAnywhereEndpoint for a private endpoint",
                        ra_endpoint.as_deref().unwrap_or("-")
                    )
                };
                Check::fail("roles-anywhere", class, error::cause_chain(&e), fix)
            }
        }
    });

    let region = configs.node.cluster.region.clone();
    r.checks.push(match &found.creds {
        None => Check::skip("sts", "needs Roles Anywhere credentials"),
        Some(c) => sts_check(s, &region, c),
    });

    // EKS DescribeCluster.
    let cluster_name = configs.node.cluster.name.clone();
    r.checks.push(match &found.creds {
        None => Check::skip("eks", "needs Roles Anywhere credentials"),
        Some(c) => {
            let target = EksTarget {
                endpoint: b.aws.eks_endpoint.clone(),
                ca_bundle: b.aws.ca_bundle.as_deref().map(|p| under_root(&plan.root, p)),
                retry: Some(RetryPolicy::once()),
            };
            match init::describe_cluster_by_name(&cluster_name, &region, c, &target, &env) {
                Ok(d) => {
                    let detail = format!(
                        "cluster {cluster_name}: endpoint {}, remote node networks {}",
                        d.endpoint,
                        if d.remote_node_cidrs.is_empty() {
                            "none".to_string()
                        } else {
                            d.remote_node_cidrs.join(", ")
                        }
                    );
                    found.cluster = Some(d);
                    Check::pass("eks", detail)
                }
                Err(e) => {
                    let class = error::class_of(&e);
                    let fix = if class == Class::Operator {
                        format!("check spec.cluster.name ({cluster_name}) and spec.cluster.region ({region}), and that roleArn ({}) may call eks:DescribeCluster on it", ra.role_arn)
                    } else {
                        "check the network path and proxy to EKS (spec.aws.eksEndpoint for a private endpoint)".to_string()
                    };
                    Check::fail("eks", class, error::cause_chain(&e), fix)
                }
            }
        }
    });

    // The API server, with the node's own token.
    let endpoint = configs
        .node
        .cluster
        .api_server_endpoint
        .clone()
        .or_else(|| found.cluster.as_ref().map(|d| d.endpoint.clone()));
    let ca = configs
        .node
        .cluster
        .certificate_authority
        .clone()
        .or_else(|| {
            found
                .cluster
                .as_ref()
                .map(|d| d.certificate_authority_pem.clone())
        });
    r.checks.push(match (&found.creds, &endpoint, &ca) {
        (Some(c), Some(ep), Some(ca)) => {
            apiserver_check(s, c, ep, ca, &cluster_name, &region, &ra.role_arn)
        }
        (None, _, _) => Check::skip("apiserver", "needs Roles Anywhere credentials"),
        _ => Check::skip(
            "apiserver",
            "needs the endpoint and CA (spec.cluster or DescribeCluster)",
        ),
    });

    // The node IP against the cluster's remote node networks.
    r.checks.push(match (&found.cluster, &endpoint) {
        (Some(d), Some(ep)) => match checks::check_node_ip(
            &cluster_name,
            &configs.node.kubelet.flags,
            init::detect_node_ip(ep),
            &d.remote_node_cidrs,
        ) {
            Ok(ip) => Check::pass("node-ip", format!("{ip} is inside {}", d.remote_node_cidrs.join(", "))),
            Err(e) => Check::fail(
                "node-ip",
                e.class(),
                e.to_string(),
                "set --node-ip=<address> in spec.kubelet.flags to an address inside the remote node networks, or add this network to the cluster (aws eks update-cluster-config --remote-network-config)",
            ),
        },
        _ => Check::skip("node-ip", "needs DescribeCluster (the remote node networks)"),
    });
}

fn vault_health(s: &DebugSettings, plan: &Plan) -> (Check, Option<SystemTime>) {
    let addr = &plan.vault.address;
    let url = addr.join("v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200&drsecondarycode=200");
    let resp = client(plan.vault.ca_bundle.as_deref(), s.timeout)
        .and_then(|c| c.send(&Request::get(url)).map_err(Classify::classed));
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let class = error::class_of(&e);
            let fix = if class == Class::Transient {
                format!("Vault at {} is unreachable: check spec.vault.address, that Vault runs, and the network path (firewall, HTTPS_PROXY/NO_PROXY)", addr.origin())
            } else {
                "check spec.vault.address and spec.vault.caBundle (the CA of Vault's TLS certificate)".to_string()
            };
            return (
                Check::fail("vault", class, error::cause_chain(&e), fix),
                None,
            );
        }
    };
    let date = resp.date();
    let health: serde_json::Value = resp.json().unwrap_or_default();
    let version = health["version"].as_str().unwrap_or("?").to_string();
    let check = if resp.status >= 300 {
        Check::fail(
            "vault",
            Class::Transient,
            format!(
                "Vault at {} answered HTTP {} to its health check",
                addr.origin(),
                resp.status
            ),
            "check what answers at spec.vault.address (a load balancer or proxy in between?)",
        )
    } else if health["initialized"] == false {
        Check::fail(
            "vault",
            Class::Transient,
            format!("Vault at {} is not initialised", addr.origin()),
            "Vault's operators must initialise it (vault operator init); nothing to change on the node",
        )
    } else if health["sealed"] == true {
        Check::fail(
            "vault",
            Class::Transient,
            format!("Vault at {} is sealed", addr.origin()),
            "Vault's operators must unseal it (`vault operator unseal` / `bao operator unseal`); nothing to change on the node",
        )
    } else {
        Check::pass(
            "vault",
            format!("{} reachable, unsealed (version {version})", addr.origin()),
        )
    };
    (check, date)
}

fn key_check(plan: &Plan, found: &mut Found) -> Check {
    let reference = &plan.key.reference;
    match plan.key.open(OpenMode::Existing) {
        Ok(k) => {
            found.key_spki = Some(k.public_key_der().to_vec());
            Check::pass(
                "key",
                format!(
                    "{reference}: {}, SHA-256 {}",
                    k.algorithm(),
                    k.fingerprint()
                ),
            )
        }
        Err(e) => {
            let class = error::class_of(&e);
            let key_error = e.chain().find_map(|c| c.downcast_ref::<KeyError>());
            let fix = match key_error {
                Some(KeyError::TpmUnreachable { tcti, .. }) => format!("the TPM is unreachable through {tcti:?}: check that /dev/tpmrm0 exists and this user may open it (group tss), or spec.key.tcti"),
                Some(KeyError::NotFound { .. }) => format!("the node key spec.key.ref {reference} does not exist: `hybridboot firstboot` creates it (or `hybridboot key create --key {reference} --algorithm {}`); a key made elsewhere cannot match the certificate", plan.algorithm),
                Some(KeyError::TokenNotFound { .. } | KeyError::WrongPin { .. }) => "check the token label in spec.key.ref, the PIN (pin-source) and spec.key.pkcs11Lib".to_string(),
                Some(KeyError::InsecureKeyFile { path, .. }) => format!("chmod 600 {path}"),
                _ => "check spec.key.ref, spec.key.tcti and spec.key.pkcs11Lib in the BootstrapConfig".to_string(),
            };
            Check::fail("key", class, error::cause_chain(&e), fix)
        }
    }
}

fn certificate_check(s: &DebugSettings, plan: &Plan, found: &mut Found) -> Check {
    let path = &plan.vault.certificate;
    let renew = format!(
        "renew it: `hybridboot renew --config-source {}` (an expired certificate needs spec.vault.auth again), and check the renewal timer (systemctl status hybridboot-renew.timer)",
        s.source.config_source
    );
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Check::fail(
                "certificate",
                Class::Operator,
                format!("cannot read {}: {e}", path.display()),
                format!("spec.hybrid.iamRolesAnywhere.certificatePath has no certificate yet: run `hybridboot firstboot --config-source {}` (it enrolls with Vault)", s.source.config_source),
            )
        }
    };
    let certs = match String::from_utf8(bytes)
        .map_err(|_| "not PEM".to_string())
        .and_then(|t| chain::parse_pem_certs(&t).map_err(|e| e.to_string()))
    {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => {
            return Check::fail(
                "certificate",
                Class::Operator,
                format!("{} holds no certificate", path.display()),
                "enroll again: remove the file and run hybridboot firstboot",
            )
        }
        Err(e) => {
            return Check::fail(
                "certificate",
                Class::Operator,
                format!("{}: {e}", path.display()),
                "enroll again: remove the file and run hybridboot firstboot",
            )
        }
    };
    let leaf = &certs[0];
    let now = SystemTime::now();
    let serial = chain::serial_colon_hex(&leaf.serial_bytes());
    if leaf.not_after() < now {
        return Check::fail(
            "certificate",
            Class::Operator,
            format!(
                "{} (serial {serial}) expired at {}",
                path.display(),
                rfc3339(leaf.not_after())
            ),
            renew,
        );
    }
    if leaf.not_before() > now + checks::NOT_BEFORE_TOLERANCE {
        return Check::fail(
            "certificate",
            Class::Operator,
            format!(
                "{} is not valid before {}",
                path.display(),
                rfc3339(leaf.not_before())
            ),
            CLOCK_FIX,
        );
    }
    if leaf.common_name().as_deref() != Some(plan.node_name.as_str()) {
        return Check::fail(
            "certificate",
            Class::Operator,
            format!("{} is for CN {:?}, the node is {:?}", path.display(), leaf.common_name().unwrap_or_default(), plan.node_name),
            "the certificate belongs to another node name: move it away and run hybridboot firstboot, or fix spec.hybrid.iamRolesAnywhere.nodeName",
        );
    }
    for pair in certs.windows(2) {
        if let Err(e) = pair[0].verify_issued_by(&pair[1]) {
            return Check::fail(
                "certificate",
                Class::Operator,
                format!("{}: {e}", path.display()),
                "the file must hold the leaf, then its issuers in order (what enroll writes): enroll again",
            );
        }
    }
    if let Some(spki) = &found.key_spki {
        if leaf.spki_der() != *spki {
            return Check::fail(
                "certificate",
                Class::Operator,
                format!(
                    "{} was issued for another key than spec.key.ref {}",
                    path.display(),
                    plan.key.reference
                ),
                "move the certificate away and run hybridboot firstboot to enroll the node key",
            );
        }
    }
    let left = leaf.not_after().duration_since(now).unwrap_or_default();
    found.certificate_ok = found.key_spki.is_some();
    Check::pass(
        "certificate",
        format!(
            "{}: CN {}, serial {serial}, chain of {} verified, {} the node key, valid until {} ({} left)",
            path.display(),
            plan.node_name,
            certs.len(),
            if found.key_spki.is_some() { "matches" } else { "not compared with" },
            rfc3339(leaf.not_after()),
            vault::format_duration(Duration::from_secs(left.as_secs()))
        ),
    )
}

fn vault_auth_check(s: &DebugSettings, configs: &Configs, plan: &Plan, found: &Found) -> Check {
    if !found.vault_up {
        return Check::skip("vault-auth", "needs Vault reachable and unsealed");
    }
    let b = &configs.bootstrap;
    let sign_path = format!(
        "{}/sign/{}",
        plan.vault.pki_mount.trim_matches('/'),
        plan.vault.pki_role
    );
    let vault = Vault::new(
        match client(plan.vault.ca_bundle.as_deref(), s.timeout) {
            Ok(c) => c,
            Err(e) => {
                return Check::fail(
                    "vault-auth",
                    error::class_of(&e),
                    error::cause_chain(&e),
                    "check spec.vault.caBundle",
                )
            }
        },
        plan.vault.address.clone(),
        plan.vault.namespace.clone(),
        Instant::now() + s.timeout,
    );
    let can_sign = |token: &Secret, how: &str, fix: &str| -> Check {
        match vault.capabilities_self(token, &sign_path) {
            Ok(caps) if caps.iter().any(|c| matches!(c.as_str(), "update" | "create" | "root" | "sudo")) => {
                Check::pass("vault-auth", format!("{how}: may sign at {sign_path}"))
            }
            Ok(caps) => Check::fail(
                "vault-auth",
                Class::Operator,
                format!("{how}: capabilities on {sign_path} are [{}]", caps.join(", ")),
                format!("{fix} needs a policy with `update` on {sign_path} (spec.vault.pkiMount, spec.vault.role)"),
            ),
            Err(e) => vault_error_check(e, fix),
        }
    };
    let mut parts = Vec::new();
    match &plan.vault.auth {
        Some(SecretAuth::TokenFile(f)) => {
            let token = match Secret::from_file(f) {
                Ok(t) if !t.is_empty() => t,
                Ok(_) => {
                    return Check::fail(
                        "vault-auth",
                        Class::Operator,
                        format!("{} is empty", f.display()),
                        "write a Vault token into spec.vault.auth.tokenFile",
                    )
                }
                Err(e) => return Check::fail(
                    "vault-auth",
                    Class::Operator,
                    format!("cannot read {}: {e}", f.display()),
                    "spec.vault.auth.tokenFile must exist and be readable by this user (mode 0600)",
                ),
            };
            let fix = format!("the token in spec.vault.auth.tokenFile ({}) (write a current token there if it expired)", f.display());
            // capabilities-self is in Vault's default policy: a refusal means the token is
            // invalid, expired, or lacks the default policy.
            let c = can_sign(&token, "token from spec.vault.auth.tokenFile", &fix);
            if c.outcome != super::Outcome::Pass || b.vault.cert_auth_role.is_none() {
                return c;
            }
            parts.push(c.detail);
        }
        Some(SecretAuth::AppRole {
            role_id_file,
            secret_id_file,
            ..
        }) => {
            match Secret::from_file(role_id_file) {
                Ok(t) if !t.is_empty() => {}
                _ => return Check::fail("vault-auth", Class::Operator, format!("cannot read the AppRole role id {}", role_id_file.display()), "write the role id into spec.vault.auth.appRole.roleIdFile (readable by this user)"),
            }
            let secret_present = std::fs::metadata(secret_id_file)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
            if !secret_present && !found.certificate_ok {
                return Check::fail(
                    "vault-auth",
                    Class::Operator,
                    format!(
                        "no certificate yet and the AppRole secret id file {} is missing or empty",
                        secret_id_file.display()
                    ),
                    "issue a new (wrapped) secret id into spec.vault.auth.appRole.secretIdFile",
                );
            }
            parts.push(if secret_present {
                "AppRole role id and secret id present (the secret id is single-use: not tried)"
                    .to_string()
            } else {
                "AppRole secret id already used (expected once enrolled)".to_string()
            });
        }
        _ => {}
    }
    if let Some(role) = &b.vault.cert_auth_role {
        if !found.certificate_ok {
            return Check::fail(
                "vault-auth",
                Class::Operator,
                format!(
                    "TLS certificate auth role {role:?} needs a valid certificate for the node key"
                ),
                "see the certificate check",
            );
        }
        let login = (|| -> anyhow::Result<Secret> {
            let key: Arc<dyn NodeKey> = Arc::from(plan.key.open(OpenMode::Existing)?);
            let text = std::fs::read_to_string(&plan.vault.certificate)?;
            let chain: Vec<Vec<u8>> = chain::parse_pem_certs(&text)
                .map_err(Classify::classed)?
                .iter()
                .map(|c: &Cert| c.der().to_vec())
                .collect();
            let mut b = Client::builder().client_identity(ClientIdentity { chain, key });
            if let Some(ca) = &plan.vault.ca_bundle {
                b = b.ca_bundle_file(ca).map_err(Classify::classed)?;
            }
            let mtls = vault.with_http(b.build().map_err(Classify::classed)?);
            mtls.cert_login(&plan.vault.cert_auth_mount, role)
                .map_err(Classify::classed)
        })();
        let fix = format!("TLS certificate auth (spec.vault.renewal.certAuthRole {role:?})");
        match login {
            Ok(token) => {
                let c = can_sign(&token, &format!("cert auth login as {role:?}"), &fix);
                if c.outcome != super::Outcome::Pass {
                    return c;
                }
                parts.push(c.detail);
            }
            Err(e) => {
                let class = error::class_of(&e);
                return Check::fail("vault-auth", class, error::cause_chain(&e), format!("{fix}: the role must trust the CA that issues spec.vault.role's certificates and allow CN {:?}; Vault must be reached over https", plan.node_name));
            }
        }
    }
    if parts.is_empty() {
        return Check::fail(
            "vault-auth",
            Class::Operator,
            "no Vault auth configured",
            "set spec.vault.auth (tokenFile or appRole) or spec.vault.renewal.certAuthRole",
        );
    }
    Check::pass("vault-auth", parts.join("; "))
}

fn vault_error_check(e: VaultError, what: &str) -> Check {
    let class = e.class();
    let fix = match &e {
        VaultError::Sealed { .. } => "Vault's operators must unseal it".to_string(),
        VaultError::PermissionDenied { .. } => format!("{what} is refused: check its policies"),
        _ if class == Class::Transient => {
            "Vault stopped answering: check that it runs and the network path".to_string()
        }
        _ => format!("{what}: see Vault's answer"),
    };
    Check::fail("vault-auth", class, e.to_string(), fix)
}

fn sts_check(s: &DebugSettings, region: &str, creds: &Credentials) -> Check {
    let env = |k: &str| std::env::var(k).ok();
    let endpoint = s
        .sts_endpoint
        .clone()
        .or_else(|| eks::endpoint_from_env("STS", env))
        .unwrap_or_else(|| format!("https://{}", sts_token::sts_host(region)));
    let result = (|| -> anyhow::Result<String> {
        let url = Url::parse(&endpoint).map_err(Classify::classed)?;
        let host = sigv4x509::endpoint_host(&endpoint).map_err(Classify::classed)?;
        let body = "Action=GetCallerIdentity&Version=2011-06-15";
        let mut signed = sigv4::HttpRequest::new("POST", &host, "/")
            .with_header(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .with_body(body);
        sigv4::sign_request(&mut signed, creds, region, "sts", SystemTime::now());
        let mut req = Request::post(url.join("")).body(
            "application/x-www-form-urlencoded; charset=utf-8",
            body.as_bytes().to_vec(),
        );
        for (name, value) in &signed.headers {
            if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-type") {
                req = req.header(name, value.clone());
            }
        }
        let c = client(
            env("AWS_CA_BUNDLE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .as_deref(),
            s.timeout,
        )?;
        let resp = c
            .send(&req)
            .and_then(http::Response::error_for_status)
            .map_err(Classify::classed)?;
        let text = String::from_utf8_lossy(resp.body()).into_owned();
        Ok(between(&text, "<Arn>", "</Arn>").unwrap_or("?").to_string())
    })();
    match result {
        Ok(arn) => Check::pass("sts", format!("GetCallerIdentity: {arn}")),
        Err(e) => {
            let class = error::class_of(&e);
            let fix = if class == Class::Operator {
                "STS refused the Roles Anywhere session: check the role's trust policy and that the credentials are current (clock)".to_string()
            } else {
                format!("STS at {endpoint} is unreachable: check the network path and proxy (AWS_ENDPOINT_URL_STS for a private endpoint)")
            };
            Check::fail("sts", class, error::cause_chain(&e), fix)
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

fn apiserver_check(
    s: &DebugSettings,
    creds: &Credentials,
    endpoint: &str,
    ca_pem: &[u8],
    cluster: &str,
    region: &str,
    role_arn: &str,
) -> Check {
    let token = sts_token::eks_token(
        creds,
        region,
        &sts_token::sts_host(region),
        cluster,
        SystemTime::now(),
    );
    let result = (|| -> anyhow::Result<http::Response> {
        let url = Url::parse(endpoint)
            .map_err(Classify::classed)?
            .join("apis/authentication.k8s.io/v1/selfsubjectreviews");
        let c = Client::builder()
            .ca_bundle_pem("the cluster CA", &String::from_utf8_lossy(ca_pem))
            .map_err(Classify::classed)?
            .timeouts(Timeouts {
                connect: s.timeout.min(Duration::from_secs(5)),
                read: s.timeout,
                total: s.timeout,
            })
            .build()
            .map_err(Classify::classed)?;
        let bearer = Secret::new(format!("Bearer {}", token.expose()));
        let req = Request::post(url)
            .secret_header("Authorization", &bearer)
            .json(&serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "SelfSubjectReview"
            }));
        c.send(&req).map_err(Classify::classed)
    })();
    match result {
        Ok(resp) if resp.status < 300 => {
            let v: serde_json::Value = resp.json().unwrap_or_default();
            let user = v["status"]["userInfo"]["username"].as_str().unwrap_or("?").to_string();
            Check::pass("apiserver", format!("{endpoint} accepts the node's token as {user:?}"))
        }
        Ok(resp) if resp.status == 401 => Check::fail(
            "apiserver",
            Class::Operator,
            format!("{endpoint} answered 401 Unauthorized to the node's token"),
            format!("map the node role {role_arn} in the cluster: an access entry of type HYBRID_LINUX (`hybridboot access-entry render`) or the aws-auth ConfigMap (`hybridboot aws-auth render`); check spec.cluster.name ({cluster}) names this cluster"),
        ),
        Ok(resp) if resp.status == 403 => Check::pass(
            "apiserver",
            format!("{endpoint} authenticates the node's token (SelfSubjectReview itself is forbidden by RBAC)"),
        ),
        Ok(resp) => Check::fail(
            "apiserver",
            if resp.status >= 500 { Class::Transient } else { Class::Operator },
            format!("{endpoint} answered HTTP {} to SelfSubjectReview", resp.status),
            "check spec.cluster.apiServerEndpoint and what answers there",
        ),
        Err(e) => {
            let class = error::class_of(&e);
            let fix = if class == Class::Transient {
                format!("the API server {endpoint} is unreachable from this node: check the route from the remote node network to the cluster's VPC (tcp/443), firewalls, and HTTPS_PROXY/NO_PROXY")
            } else {
                "check spec.cluster.certificateAuthority (the cluster CA) and spec.cluster.apiServerEndpoint".to_string()
            };
            Check::fail("apiserver", class, error::cause_chain(&e), fix)
        }
    }
}

/// Proxy URL without credentials.
fn shown_proxy(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(i), Some(at)) if at > i => format!("{}{}", &value[..i + 3], &value[at + 1..]),
        (None, Some(at)) => value[at + 1..].to_string(),
        _ => value.to_string(),
    }
}

/// The proxy the node is configured with (BootstrapConfig `spec.proxy`, else this process's
/// environment) against the containerd and kubelet drop-ins init wrote from it.
fn proxy_check(s: &DebugSettings, configs: Option<&Configs>) -> Check {
    use render::proxy::{parse_drop_in, ProxyEnv, CONTAINERD_DROP_IN, KUBELET_DROP_IN};
    if let Err(e) = http::ProxySettings::from_env() {
        return Check::fail(
            "proxy",
            Class::Operator,
            e.to_string(),
            "fix HTTPS_PROXY / HTTP_PROXY: http://host:port",
        );
    }
    let (configured, from) = match configs.and_then(|c| c.bootstrap.proxy.as_ref()) {
        Some(p) => (
            Some(ProxyEnv {
                https_proxy: p.https_proxy.clone(),
                http_proxy: p.http_proxy.clone(),
                no_proxy: p.no_proxy.clone(),
            }),
            "BootstrapConfig spec.proxy",
        ),
        None => (
            ProxyEnv::from_env(),
            "the environment (HTTPS_PROXY, HTTP_PROXY)",
        ),
    };
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for drop_in in [CONTAINERD_DROP_IN, KUBELET_DROP_IN] {
        let path = under_root(&s.source.root, Path::new(drop_in));
        match std::fs::read_to_string(&path) {
            Ok(text) => found.push((drop_in, parse_drop_in(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if configured.is_some() {
                    problems.push(format!("{drop_in} is missing"));
                }
            }
            Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    let Some(want) = configured else {
        let stray: Vec<String> = found
            .iter()
            .filter_map(|(file, have)| {
                let proxy = have.https_proxy.as_ref().or(have.http_proxy.as_ref())?;
                Some(format!("{file} sets {}", shown_proxy(proxy)))
            })
            .collect();
        if stray.is_empty() && problems.is_empty() {
            return Check::pass(
                "proxy",
                "no proxy configured (spec.proxy, HTTPS_PROXY, HTTP_PROXY unset)",
            );
        }
        return Check::warn(
            "proxy",
            format!(
                "no proxy configured (spec.proxy, HTTPS_PROXY, HTTP_PROXY unset), but {}",
                [stray, problems].concat().join("; ")
            ),
            "if the site has a proxy, set it in the BootstrapConfig's spec.proxy and run init again; if not, remove those drop-ins, then `systemctl daemon-reload` and restart containerd and kubelet",
        );
    };
    for (file, have) in &found {
        for difference in drop_in_differences(&want, have) {
            problems.push(format!("{file}: {difference}"));
        }
    }
    let shown = |p: &Option<String>| {
        p.as_deref()
            .map_or_else(|| "unset".to_string(), shown_proxy)
    };
    if !problems.is_empty() {
        return Check::fail(
            "proxy",
            Class::Operator,
            format!(
                "{from} names HTTPS_PROXY {}, but {}: containerd and the kubelet do not use the site's proxy",
                shown(&want.https_proxy),
                problems.join("; ")
            ),
            format!(
                "run `hybridboot init --config-source {}` again: it writes both drop-ins from {from} (or make {CONTAINERD_DROP_IN} and {KUBELET_DROP_IN} say {}), then `systemctl daemon-reload` and restart containerd and kubelet",
                s.source.config_source,
                wanted_environment(&want)
            ),
        );
    }
    Check::pass(
        "proxy",
        format!(
            "HTTPS_PROXY {}, NO_PROXY {:?} from {from}; the containerd and kubelet drop-ins say the same",
            shown(&want.https_proxy),
            want.no_proxy_value()
        ),
    )
}

/// The `Environment=` assignments a drop-in for `want` holds (credentials not shown; NO_PROXY
/// with what init adds).
fn wanted_environment(want: &render::proxy::ProxyEnv) -> String {
    let mut no_proxy: Vec<&str> = Vec::new();
    for e in want.no_proxy.iter().map(String::as_str).chain([
        "localhost",
        "127.0.0.1",
        "<the cluster's service CIDR>",
    ]) {
        if !no_proxy.contains(&e) {
            no_proxy.push(e);
        }
    }
    let mut out = Vec::new();
    if let Some(p) = &want.https_proxy {
        out.push(format!("HTTPS_PROXY={}", shown_proxy(p)));
    }
    if let Some(p) = &want.http_proxy {
        out.push(format!("HTTP_PROXY={}", shown_proxy(p)));
    }
    out.push(format!("NO_PROXY={}", no_proxy.join(",")));
    out.join(" ")
}

/// How a drop-in's proxy differs from the configured one (credentials never shown): another
/// proxy URL, or `NO_PROXY` entries it lacks (init adds its own, so more is fine).
fn drop_in_differences(
    want: &render::proxy::ProxyEnv,
    have: &render::proxy::ProxyEnv,
) -> Vec<String> {
    let shown = |p: &Option<String>| {
        p.as_deref()
            .map_or_else(|| "unset".to_string(), shown_proxy)
    };
    let mut out = Vec::new();
    for (name, w, h) in [
        ("HTTPS_PROXY", &want.https_proxy, &have.https_proxy),
        ("HTTP_PROXY", &want.http_proxy, &have.http_proxy),
    ] {
        if w != h {
            out.push(format!("{name} is {} instead of {}", shown(h), shown(w)));
        }
    }
    let lacking: Vec<&str> = want
        .no_proxy
        .iter()
        .filter(|w| !have.no_proxy.iter().any(|h| h.eq_ignore_ascii_case(w)))
        .map(String::as_str)
        .collect();
    if !lacking.is_empty() {
        out.push(format!("NO_PROXY lacks {}", lacking.join(",")));
    }
    out
}

fn swap_check(root: &Path) -> Check {
    let path = under_root(root, Path::new("/proc/swaps"));
    match std::fs::read_to_string(&path) {
        Err(e) => Check::skip("swap", format!("cannot read {}: {e}", path.display())),
        Ok(text) => {
            let active: Vec<&str> = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            if active.is_empty() {
                Check::pass("swap", "off")
            } else {
                Check::fail(
                    "swap",
                    Class::Operator,
                    format!("swap is on: {}", active.join(", ")),
                    "the kubelet refuses to run with swap (failSwapOn): `swapoff -a` and remove the swap entries from /etc/fstab",
                )
            }
        }
    }
}

fn unit_check(s: &DebugSettings, unit: &'static str) -> Check {
    match crate::process::command(&s.systemctl, crate::process::ChildEnv::System)
        .args(["is-active", unit])
        .output()
    {
        Err(e) => Check::skip(unit, format!("cannot run {}: {e}", s.systemctl.display())),
        Ok(out) => {
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "active" {
                Check::pass(unit, format!("{unit}.service active"))
            } else {
                Check::fail(
                    unit,
                    Class::Operator,
                    format!("{unit}.service is {}", if state.is_empty() { "unknown" } else { &state }),
                    format!("`systemctl start {unit}` and read `journalctl -u {unit}`; if it was never set up, run `hybridboot init` (or first boot)"),
                )
            }
        }
    }
}

/// The sandbox image containerd is configured with (init's config), else the region's default.
fn sandbox_image(root: &Path, configs: Option<&Configs>) -> Option<String> {
    let text = std::fs::read_to_string(under_root(root, Path::new("/etc/containerd/config.toml")))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("sandbox_image"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .or_else(|| configs.map(|c| render::containerd::sandbox_image(&c.node.cluster.region)))
}

fn sandbox_check(s: &DebugSettings, configs: Option<&Configs>) -> Check {
    // The image and socket as init's sandbox step finds them (`containerd config dump`), else
    // what the rendered config pins, else the region's default.
    let mut sandbox = SandboxSettings::new(&s.source.root);
    sandbox.ctr = s.ctr.clone();
    let (image, socket) = match sandbox::read_config(&sandbox) {
        Ok(info) => {
            let socket = sandbox::socket_path(&sandbox, &info);
            (Some(info.sandbox_image), socket)
        }
        Err(_) => (
            sandbox_image(&s.source.root, configs),
            s.containerd_address.clone(),
        ),
    };
    let Some(image) = image else {
        return Check::skip(
            "sandbox-image",
            "no containerd config and no region to name the image",
        );
    };
    if let Err(e) = crate::process::command(&s.ctr, crate::process::ChildEnv::System)
        .arg("--version")
        .output()
    {
        return Check::fail(
            "sandbox-image",
            Class::Operator,
            format!("cannot run {}: {e}", s.ctr.display()),
            "`ctr` (containerd's client) is not installed: install containerd (hybridboot install), or check the image by hand",
        );
    }
    match sandbox::image_present(&sandbox, &socket, &image) {
        Ok(true) => Check::pass("sandbox-image", format!("{image} present")),
        Ok(false) => Check::fail(
            "sandbox-image",
            Class::Operator,
            format!("{image} is not in containerd's k8s.io namespace"),
            format!("run `hybridboot init` again (it pulls the pinned sandbox image with the node's credentials), or `ctr -n k8s.io images pull {image}` with registry credentials"),
        ),
        Err(e) => Check::fail(
            "sandbox-image",
            Class::Operator,
            format!("containerd is not running at {}: {}", socket.display(), one_line_of(&e.to_string())),
            "start containerd (`systemctl start containerd`), then check again",
        ),
    }
}

fn one_line_of(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_printed_as_vault_does() {
        assert_eq!(
            chain::serial_colon_hex(&[0x00, 0x1a, 0x2b, 0x03]),
            "1a:2b:03"
        );
        assert_eq!(chain::serial_colon_hex(&[0x00]), "00");
    }

    #[test]
    fn skew_passes_warns_then_fails() {
        use std::time::UNIX_EPOCH;
        let server = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |ahead: u64| {
            skew_check_at(
                "clock-aws",
                "AWS",
                server + Duration::from_secs(ahead),
                server,
            )
        };
        assert_eq!(at(0).outcome, super::super::Outcome::Pass);
        assert_eq!(at(5).outcome, super::super::Outcome::Pass);
        let w = at(6);
        assert_eq!(w.outcome, super::super::Outcome::Warn);
        assert!(w.detail.starts_with("6s ahead of AWS"), "{}", w.detail);
        assert_eq!(w.fix.as_deref(), Some(CLOCK_FIX));
        assert_eq!(at(60).outcome, super::super::Outcome::Warn);
        let f = at(61);
        assert_eq!(f.outcome, super::super::Outcome::Fail);
        assert_eq!(f.class, Some("operator"));
        let behind = skew_check_at(
            "clock-vault",
            "Vault",
            server,
            server + Duration::from_secs(30),
        );
        assert!(
            behind.detail.starts_with("30s behind Vault"),
            "{}",
            behind.detail
        );
    }

    #[test]
    fn drop_in_differences_name_the_proxy_and_missing_no_proxy_entries() {
        use render::proxy::ProxyEnv;
        let want = ProxyEnv {
            https_proxy: Some("http://u:secret@p:3128".into()),
            http_proxy: None,
            no_proxy: vec![".corp".into(), "10.0.0.0/8".into()],
        };
        let same = ProxyEnv {
            no_proxy: vec![".CORP".into(), "10.0.0.0/8".into(), "localhost".into()],
            ..want.clone()
        };
        assert!(drop_in_differences(&want, &same).is_empty());
        let other = ProxyEnv {
            https_proxy: Some("http://old:1".into()),
            http_proxy: Some("http://old:1".into()),
            no_proxy: vec!["10.0.0.0/8".into()],
        };
        let d = drop_in_differences(&want, &other).join("; ");
        assert_eq!(
            d,
            "HTTPS_PROXY is http://old:1 instead of http://p:3128; HTTP_PROXY is http://old:1 instead of unset; NO_PROXY lacks .corp"
        );
        assert!(!wanted_environment(&want).contains("secret"));
    }

    #[test]
    fn proxy_credentials_are_not_shown() {
        assert_eq!(
            shown_proxy("http://user:pw@proxy:3128"),
            "http://proxy:3128"
        );
        assert_eq!(shown_proxy("proxy:3128"), "proxy:3128");
    }

    #[test]
    fn swap_reads_proc_swaps_under_the_root() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(swap_check(d.path()).outcome, super::super::Outcome::Skip);
        std::fs::create_dir(d.path().join("proc")).unwrap();
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        std::fs::write(d.path().join("proc/swaps"), header).unwrap();
        assert_eq!(swap_check(d.path()).outcome, super::super::Outcome::Pass);
        std::fs::write(
            d.path().join("proc/swaps"),
            format!("{header}/swapfile  file  1048572  0  -2\n"),
        )
        .unwrap();
        let c = swap_check(d.path());
        assert_eq!(c.outcome, super::super::Outcome::Fail);
        assert!(c.fix.unwrap().contains("swapoff -a"));
    }
}
