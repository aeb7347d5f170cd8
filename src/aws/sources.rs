//! Where `hybridboot token` finds AWS credentials, the way an AWS SDK does: the environment, the
//! shared credentials file, then the `credential_process` of the config file's profile. When that
//! process is `hybridboot credential-process ...` itself, the caller runs it in-process (with the
//! session cache) instead of spawning it: see [`hybridboot_process_args`].
//!
//! Also the command-line quoting used to write `credential_process = ...` lines that survive both
//! botocore's `shlex.split` and the `sh -c` of the Go and Rust SDKs (pkcs11 URIs contain `;`).

use crate::error::{Class, Classify};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::credentials::{parse_credential_process, Credentials};
use super::time::parse_rfc3339;
use crate::secret::Secret;

/// Largest `credential_process` output read.
pub const MAX_PROCESS_OUTPUT: usize = 64 * 1024;

/// Problems finding credentials; one line, naming the source, no secrets.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give profile {profile:?} keys in {credentials_file} or a credential_process in {config_file}")]
    NotFound {
        profile: String,
        credentials_file: String,
        config_file: String,
    },
    #[error("{0}")]
    Environment(String),
    #[error("credential_process {command:?} in profile {profile:?}: {detail}")]
    Process {
        profile: String,
        command: String,
        detail: String,
    },
}

impl Classify for SourceError {
    /// Missing or unusable credentials need an operator.
    fn class(&self) -> Class {
        Class::Operator
    }
}

/// One `[section]` of an INI file as botocore reads it: lowercase keys, trimmed values,
/// continuation lines appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub entries: Vec<(String, String)>,
}

impl Section {
    /// A key's value (last one wins, like configparser).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses AWS config/credentials INI text. Comments are full lines starting with `#` or `;`.
pub fn parse_ini(text: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut last_key: Option<usize> = None;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let (Some(sec), Some(i)) = (out.last_mut(), last_key) {
                let v = &mut sec.entries[i].1;
                v.push('\n');
                v.push_str(t);
                continue;
            }
        }
        if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            out.push(Section {
                name: inner.trim().to_string(),
                entries: Vec::new(),
            });
            last_key = None;
            continue;
        }
        if let (Some(sec), Some(idx)) = (out.last_mut(), t.find(['=', ':'])) {
            sec.entries.push((
                t[..idx].trim().to_ascii_lowercase(),
                t[idx + 1..].trim().to_string(),
            ));
            last_key = Some(sec.entries.len() - 1);
        }
    }
    out
}

fn find_section<'a>(sections: &'a [Section], names: &[String]) -> Option<&'a Section> {
    names
        .iter()
        .find_map(|n| sections.iter().find(|s| &s.name == n))
}

fn creds_from_section(s: &Section) -> Option<Credentials> {
    let id = s.get("aws_access_key_id").filter(|v| !v.is_empty())?;
    let secret = s.get("aws_secret_access_key").filter(|v| !v.is_empty())?;
    Some(Credentials {
        access_key_id: id.to_string(),
        secret_access_key: Secret::new(secret),
        session_token: s
            .get("aws_session_token")
            .filter(|v| !v.is_empty())
            .map(Secret::new),
        expiration: None,
    })
}

/// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_CREDENTIAL_EXPIRATION`. Only one of the two keys set is an error, as in the SDKs.
pub fn from_environment(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, SourceError> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (None, None) => Ok(None),
        (Some(id), Some(secret)) => {
            let expiration = match get("AWS_CREDENTIAL_EXPIRATION") {
                None => None,
                Some(e) => Some(parse_rfc3339(&e).ok_or_else(|| {
                    SourceError::Environment(format!(
                        "AWS_CREDENTIAL_EXPIRATION {e:?} is not an RFC 3339 time"
                    ))
                })?),
            };
            Ok(Some(Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
                expiration,
            }))
        }
        _ => Err(SourceError::Environment(
            "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set: set both or neither"
                .into(),
        )),
    }
}

/// Static keys of `profile` in a shared credentials file (`[name]` sections).
pub fn from_credentials_file(text: &str, profile: &str) -> Option<Credentials> {
    let sections = parse_ini(text);
    find_section(&sections, &[profile.to_string()]).and_then(creds_from_section)
}

/// What a config file (`AWS_CONFIG_FILE`, `~/.aws/config`) says about a profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigProfile {
    pub region: Option<String>,
    pub credential_process: Option<String>,
    /// Static keys written in the config file (legal, if unusual).
    pub has_static_keys: bool,
}

/// The `[profile NAME]` section (or `[default]` / `[profile default]`) of a config file.
pub fn config_profile(text: &str, profile: &str) -> Option<(ConfigProfile, Option<Credentials>)> {
    let sections = parse_ini(text);
    let mut names = vec![format!("profile {profile}")];
    if profile == "default" {
        names.insert(0, "default".into());
    }
    let s = find_section(&sections, &names)?;
    let creds = creds_from_section(s);
    Some((
        ConfigProfile {
            region: s.get("region").map(str::to_string),
            credential_process: s
                .get("credential_process")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            has_static_keys: creds.is_some(),
        },
        creds,
    ))
}

/// Quotes one argument for a POSIX shell and Python's `shlex.split` alike (as `shlex.quote`).
pub fn quote_arg(arg: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', "'\"'\"'"))
}

/// Joins arguments into one command line with [`quote_arg`].
pub fn join_command(args: &[&str]) -> String {
    args.iter()
        .map(|a| quote_arg(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a command line like Python's `shlex.split` (POSIX mode, no comments), which is what
/// botocore does with `credential_process`.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("no closing single quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('\\' | '"' | '$' | '`' | '\n')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err("no closing double quotation".into()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("no closing double quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => cur.push(ch),
                    None => return Err("no escaped character after a final backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    Ok(args)
}

/// When `command` runs `hybridboot credential-process ...` (the program's file name is
/// `hybridboot`, or it is `self_exe`), the arguments after `credential-process`, so the caller can
/// serve them in-process through the cache instead of spawning itself.
pub fn hybridboot_process_args(command: &str, self_exe: Option<&Path>) -> Option<Vec<String>> {
    let argv = split_command(command).ok()?;
    let program = Path::new(argv.first()?);
    let is_us = program.file_name().is_some_and(|n| n == "hybridboot")
        || self_exe.is_some_and(|s| s == program);
    if is_us && argv.get(1).map(String::as_str) == Some("credential-process") {
        Some(argv[2..].to_vec())
    } else {
        None
    }
}

/// The command line for messages: `pin-value=` values and the argument after any
/// `--*password*`, `--*pin*`, `--*secret*` or `--*token*` flag replaced by `<redacted>`.
pub fn redact_command(command: &str) -> String {
    let Ok(argv) = split_command(command) else {
        return "<unparseable command>".into();
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for a in &argv {
        if hide_next {
            out.push("<redacted>".to_string());
            hide_next = false;
            continue;
        }
        let lower = a.to_ascii_lowercase();
        let secret_flag = lower.starts_with("--")
            && ["password", "pin", "secret", "token"]
                .iter()
                .any(|w| lower.contains(w));
        if secret_flag {
            if let Some((flag, _)) = a.split_once('=') {
                out.push(format!("{flag}=<redacted>"));
            } else {
                out.push(a.clone());
                hide_next = !lower.starts_with("--no-");
            }
            continue;
        }
        let mut v = a.clone();
        while let Some(pos) = v.find("pin-value=") {
            let start = pos + "pin-value=".len();
            if v[start..].starts_with("<redacted>") {
                break;
            }
            let end = v[start..].find(['&', ';']).map_or(v.len(), |e| start + e);
            v.replace_range(start..end, "<redacted>");
        }
        out.push(v);
    }
    out.join(" ")
}

/// Runs a `credential_process` (split like botocore, no shell), reads at most
/// [`MAX_PROCESS_OUTPUT`] bytes of stdout, and parses it. A non-zero exit reports the first line
/// of stderr. The child is killed after `timeout`.
pub fn run_credential_process(
    profile: &str,
    command: &str,
    timeout: Duration,
) -> Result<Credentials, SourceError> {
    let err = |detail: String| SourceError::Process {
        profile: profile.to_string(),
        command: redact_command(command),
        detail,
    };
    let argv = split_command(command).map_err(err)?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| err("the command is empty".into()))?;
    let captured = crate::process::output_with_timeout(
        crate::process::command(program, crate::process::ChildEnv::CredentialProcess).args(args),
        timeout,
        MAX_PROCESS_OUTPUT,
    )
    .map_err(|e| err(e.to_string()))?;
    let (status, out, errs) = (captured.status, captured.stdout, captured.stderr);
    if !status.success() {
        let first = String::from_utf8_lossy(&errs)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        return Err(err(format!("exited with {status}: {first}")));
    }
    if out.len() > MAX_PROCESS_OUTPUT {
        return Err(err(format!("printed more than {MAX_PROCESS_OUTPUT} bytes")));
    }
    parse_credential_process(&out).map_err(err)
}

// ---------------------------------------------------------------------------------------------
// The chain `token` walks.

/// How long a `credential_process` may take (CreateSession with a TPM signature and retries).
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Where credentials were found (for the debug log, never with values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// A `[profile]` of the shared credentials file.
    CredentialsFile(PathBuf),
    /// Static keys in the config file profile.
    ConfigFile(PathBuf),
    /// The config profile's `credential_process`, spawned.
    Process,
    /// `hybridboot credential-process` arguments (config profile or `--certificate ...`).
    RolesAnywhere,
}

/// The file an SDK reads: `var` if set, else `$HOME/<rel>`.
fn sdk_file(env: &dyn Fn(&str) -> Option<String>, var: &str, rel: &str) -> Option<PathBuf> {
    env(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(rel)))
}

/// Reads a file that may be absent (`Ok(None)`); other errors name the file.
fn read_optional(path: &Path) -> Result<Option<String>, SourceError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SourceError::Environment(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `hybridboot credential-process ARGS`. Today it runs as a child process of this
/// executable; the cache keeps repeated calls from costing a CreateSession each.
pub type RolesAnywhereFetch<'a> = &'a dyn Fn(&[String]) -> Result<Credentials, SourceError>;

/// Finds credentials like an AWS SDK: environment, shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, `~/.aws/credentials`), then the config file
/// (`AWS_CONFIG_FILE`, `~/.aws/config`) profile (`AWS_PROFILE`, else `default`): static keys, or
/// `credential_process`. A `credential_process` that is `hybridboot credential-process` goes
/// through `roles_anywhere` instead of a generic spawn.
pub fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    self_exe: Option<&Path>,
    roles_anywhere: RolesAnywhereFetch<'_>,
    spawn_timeout: Duration,
) -> Result<(Credentials, Origin), SourceError> {
    if let Some(c) = from_environment(env)? {
        return Ok((c, Origin::Environment));
    }
    let profile = env("AWS_PROFILE")
        .or_else(|| env("AWS_DEFAULT_PROFILE"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "default".into());
    let cred_file = sdk_file(env, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    if let Some(path) = &cred_file {
        if let Some(text) = read_optional(path)? {
            if let Some(c) = from_credentials_file(&text, &profile) {
                return Ok((c, Origin::CredentialsFile(path.clone())));
            }
        }
    }
    let config_file = sdk_file(env, "AWS_CONFIG_FILE", ".aws/config");
    if let Some(path) = &config_file {
        if let Some(text) = read_optional(path)? {
            if let Some((p, creds)) = config_profile(&text, &profile) {
                if let Some(command) = p.credential_process {
                    if let Some(args) = hybridboot_process_args(&command, self_exe) {
                        return Ok((roles_anywhere(&args)?, Origin::RolesAnywhere));
                    }
                    let c = run_credential_process(&profile, &command, spawn_timeout)?;
                    return Ok((c, Origin::Process));
                }
                if let Some(c) = creds {
                    return Ok((c, Origin::ConfigFile(path.clone())));
                }
            }
        }
    }
    let show = |p: Option<PathBuf>| p.map_or("~/.aws/...".into(), |p| p.display().to_string());
    Err(SourceError::NotFound {
        profile,
        credentials_file: show(cred_file),
        config_file: show(config_file),
    })
}

/// `credential-process` through this executable: spawned, with the same timeout as any
/// `credential_process`.
pub fn spawn_self_credential_process(
    self_exe: &Path,
    args: &[String],
    timeout: Duration,
) -> Result<Credentials, SourceError> {
    let mut argv = vec![self_exe.display().to_string(), "credential-process".into()];
    argv.extend(args.iter().cloned());
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    run_credential_process("hybridboot", &join_command(&refs), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn environment_credentials() {
        assert!(from_environment(&env_of(&[])).unwrap().is_none());
        let c = from_environment(&env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtoken"),
            ("AWS_CREDENTIAL_EXPIRATION", "2030-01-01T00:00:00Z"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.access_key_id, "AKIAENV");
        assert_eq!(c.session_token.unwrap().expose(), "envtoken");
        assert!(c.expiration.is_some());
        let e = from_environment(&env_of(&[("AWS_ACCESS_KEY_ID", "A")])).unwrap_err();
        assert!(e.to_string().contains("both or neither"));
        let e = from_environment(&env_of(&[
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "topsecret"),
            ("AWS_CREDENTIAL_EXPIRATION", "soon"),
        ]))
        .unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
    }

    #[test]
    fn files_like_botocore() {
        let creds = "[default]\naws_access_key_id = AKIAD\naws_secret_access_key = sd\n\n[node]\n# c\nAWS_ACCESS_KEY_ID=AKIAN\naws_secret_access_key= sn\naws_session_token =tn\n";
        assert_eq!(
            from_credentials_file(creds, "default")
                .unwrap()
                .access_key_id,
            "AKIAD"
        );
        let n = from_credentials_file(creds, "node").unwrap();
        assert_eq!(
            (n.access_key_id.as_str(), n.session_token.unwrap().expose()),
            ("AKIAN", "tn")
        );
        assert!(from_credentials_file(creds, "missing").is_none());

        let config = "[default]\nregion = us-west-2\ncredential_process = hybridboot credential-process --certificate /etc/iam/pki/server.pem --private-key 'pkcs11:token=node;object=id' --region us-west-2\n[profile other]\nregion=eu-west-1\n";
        let (p, c) = config_profile(config, "default").unwrap();
        assert_eq!(p.region.as_deref(), Some("us-west-2"));
        assert!(p
            .credential_process
            .as_deref()
            .unwrap()
            .contains("'pkcs11:token=node;object=id'"));
        assert!(c.is_none() && !p.has_static_keys);
        assert_eq!(
            config_profile(config, "other").unwrap().0.region.as_deref(),
            Some("eu-west-1")
        );
        assert!(config_profile(config, "nope").is_none());
        assert!(config_profile("[profile default]\nregion=x\n", "default").is_some());
    }

    #[test]
    fn quoting_and_splitting_round_trip() {
        let args = [
            "/usr/bin/hybridboot",
            "credential-process",
            "--private-key",
            "pkcs11:token=node 1;object=key?pin-source=file:/etc/pin",
            "it's",
            "",
            "a\"b\\c$d`e",
            "plain-ARN:arn:aws:iam::1:role/x",
        ];
        let line = join_command(&args);
        assert_eq!(split_command(&line).unwrap(), args);
        assert_eq!(quote_arg("simple/path.pem"), "simple/path.pem");
        assert_eq!(quote_arg("a;b"), "'a;b'");
        assert_eq!(quote_arg("it's"), "'it'\"'\"'s'");
        assert_eq!(
            split_command(r#"a "b \" \x" c\ d 'e'f"#).unwrap(),
            vec!["a", "b \" \\x", "c d", "ef"]
        );
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("a \\").is_err());
    }

    #[test]
    fn recognises_itself() {
        let line = join_command(&[
            "/usr/local/bin/hybridboot",
            "credential-process",
            "--certificate",
            "/c.pem",
            "--private-key",
            "pkcs11:token=a;object=b",
        ]);
        assert_eq!(
            hybridboot_process_args(&line, None).unwrap(),
            vec![
                "--certificate",
                "/c.pem",
                "--private-key",
                "pkcs11:token=a;object=b"
            ]
        );
        assert!(hybridboot_process_args(
            "/opt/x/hb credential-process",
            Some(Path::new("/opt/x/hb"))
        )
        .is_some());
        assert!(hybridboot_process_args("aws_signing_helper credential-process", None).is_none());
        assert!(hybridboot_process_args("hybridboot token", None).is_none());
    }

    #[test]
    fn commands_in_messages_hide_pins_and_passwords() {
        let line = join_command(&[
            "hybridboot",
            "credential-process",
            "--private-key",
            "pkcs11:token=a;object=b?pin-value=1234&module-path=/x.so",
            "--tpm-key-password",
            "hunter2",
            "--pin=5678",
            "--no-tpm-key-password",
            "--region",
            "r",
        ]);
        let shown = redact_command(&line);
        for secret in ["1234", "hunter2", "5678"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("--region r") && shown.contains("module-path=/x.so"),
            "{shown}"
        );
        let e =
            run_credential_process("p", "/nonexistent 'pin-value=4321'", Duration::from_secs(1))
                .unwrap_err();
        assert!(!e.to_string().contains("4321"), "{e}");
    }

    #[test]
    fn runs_a_process() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.sh");
        std::fs::write(
            &ok,
            "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"ASIAP\",\"SecretAccessKey\":\"sp\",\"SessionToken\":\"tp\",\"Expiration\":\"2030-01-01T00:00:00Z\"}'\n",
        )
        .unwrap();
        let fail = dir.path().join("fail.sh");
        std::fs::write(&fail, "#!/bin/sh\necho 'bad things happened' >&2\nexit 3\n").unwrap();
        let slow = dir.path().join("slow.sh");
        std::fs::write(&slow, "#!/bin/sh\nsleep 5\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        for p in [&ok, &fail, &slow] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let c = run_credential_process(
            "default",
            &quote_arg(ok.to_str().unwrap()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(c.access_key_id, "ASIAP");
        let e = run_credential_process("default", fail.to_str().unwrap(), Duration::from_secs(10))
            .unwrap_err();
        assert!(e.to_string().contains("bad things happened"), "{e}");
        let t0 = std::time::Instant::now();
        let e = run_credential_process(
            "default",
            slow.to_str().unwrap(),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        let e =
            run_credential_process("p", "/nonexistent/prog", Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;
    use std::collections::HashMap;

    fn env_map(m: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
        move |k| m.get(k).cloned()
    }

    fn no_ra(_: &[String]) -> Result<Credentials, SourceError> {
        panic!("Roles Anywhere must not be used here")
    }

    #[test]
    fn chain_order_and_profiles() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        let config = d.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s1\n[other]\naws_access_key_id=AKIDOTHER\naws_secret_access_key=s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = s3\n",
        )
        .unwrap();
        let base = |extra: &[(&'static str, String)]| {
            let mut m: HashMap<&'static str, String> = HashMap::new();
            m.insert("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string());
            m.insert("AWS_CONFIG_FILE", config.display().to_string());
            for (k, v) in extra {
                m.insert(k, v.clone());
            }
            env_map(m)
        };
        let t = Duration::from_secs(5);
        let (c, o) = resolve(&base(&[]), None, &no_ra, t).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDFILE", Origin::CredentialsFile(creds.clone()))
        );
        let (c, _) = resolve(&base(&[("AWS_PROFILE", "other".into())]), None, &no_ra, t).unwrap();
        assert_eq!(c.access_key_id, "AKIDOTHER");
        let (c, o) = resolve(&base(&[("AWS_PROFILE", "cfg".into())]), None, &no_ra, t).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDCFG", Origin::ConfigFile(config.clone()))
        );
        let (c, o) = resolve(
            &base(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV".into()),
                ("AWS_SECRET_ACCESS_KEY", "s4".into()),
            ]),
            None,
            &no_ra,
            t,
        )
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("AKIDENV", Origin::Environment)
        );
        let e = resolve(&base(&[("AWS_PROFILE", "nope".into())]), None, &no_ra, t).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("\"nope\"") && msg.contains(&config.display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn hybridboot_process_is_routed_in_process_and_others_are_spawned() {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("config");
        std::fs::write(
            &config,
            "[default]\ncredential_process = /usr/bin/hybridboot credential-process --certificate /c.pem --private-key 'pkcs11:token=a;object=b'\n",
        )
        .unwrap();
        let mut m: HashMap<&'static str, String> = HashMap::new();
        m.insert("AWS_CONFIG_FILE", config.display().to_string());
        m.insert("HOME", d.path().display().to_string());
        let seen = std::cell::RefCell::new(Vec::new());
        let ra = |args: &[String]| -> Result<Credentials, SourceError> {
            seen.borrow_mut().push(args.to_vec());
            Ok(Credentials {
                access_key_id: "ASIARA".into(),
                secret_access_key: crate::secret::Secret::new("x"),
                session_token: Some(crate::secret::Secret::new("t")),
                expiration: None,
            })
        };
        let (c, o) = resolve(&env_map(m.clone()), None, &ra, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), o),
            ("ASIARA", Origin::RolesAnywhere)
        );
        assert_eq!(
            seen.borrow()[0],
            vec![
                "--certificate",
                "/c.pem",
                "--private-key",
                "pkcs11:token=a;object=b"
            ]
        );

        // Any other program is spawned and its output parsed.
        let script = d.path().join("proc.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\necho '{\"Version\":1,\"AccessKeyId\":\"AKIDPROC\",\"SecretAccessKey\":\"s\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            &config,
            format!("[default]\ncredential_process = {}\n", script.display()),
        )
        .unwrap();
        let (c, o) = resolve(&env_map(m), None, &no_ra, Duration::from_secs(5)).unwrap();
        assert_eq!((c.access_key_id.as_str(), o), ("AKIDPROC", Origin::Process));
    }
}
