//! The site's HTTP proxy for the services that outlive first boot: systemd drop-ins that give
//! containerd (image pulls) and the kubelet (API server, and through its exec credential plugin
//! every `hybridboot token` and credential refresh) `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`.
//! These are the files and contents the EKS hybrid nodes guide asks for and that nodeadm's proxy
//! validation checks; nodeadm leaves writing them to the operator, init writes them.
//!
//! `NO_PROXY` is the operator's list plus `localhost`, `127.0.0.1` and the cluster's service
//! CIDR (in-cluster addresses never go out through the site proxy). A proxy URL with a password
//! makes the drop-ins readable by root only.

use super::{ClusterDetails, Effect, FilePhase, RenderedFile};

/// containerd's drop-in.
pub const CONTAINERD_DROP_IN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";
/// The kubelet's drop-in.
pub const KUBELET_DROP_IN: &str = "/etc/systemd/system/kubelet.service.d/http-proxy.conf";

/// The proxy settings in force for init (its environment, which first boot fills from
/// BootstrapConfig `spec.proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyEnv {
    /// `HTTPS_PROXY`.
    pub https_proxy: Option<String>,
    /// `HTTP_PROXY`.
    pub http_proxy: Option<String>,
    /// `NO_PROXY`, split at commas.
    pub no_proxy: Vec<String>,
}

impl ProxyEnv {
    /// From variables looked up with `get` (lowercase first, as the HTTP client reads them);
    /// `None` when neither proxy is set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<ProxyEnv> {
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let var = |lower: &str, upper: &str| set(lower).or_else(|| set(upper));
        let env = ProxyEnv {
            https_proxy: var("https_proxy", "HTTPS_PROXY"),
            http_proxy: var("http_proxy", "HTTP_PROXY"),
            no_proxy: var("no_proxy", "NO_PROXY")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        };
        (env.https_proxy.is_some() || env.http_proxy.is_some()).then_some(env)
    }

    /// From the process environment.
    pub fn from_env() -> Option<ProxyEnv> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Whether a proxy URL carries a user and password (then it must not be written where
    /// anyone can read it, nor put on a command line).
    pub fn has_credentials(&self) -> bool {
        [&self.https_proxy, &self.http_proxy]
            .into_iter()
            .flatten()
            .any(|u| {
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                rest.split(['/', '?', '#'])
                    .next()
                    .unwrap_or("")
                    .contains('@')
            })
    }

    /// `NO_PROXY` as the variable holds it.
    pub fn no_proxy_value(&self) -> String {
        self.no_proxy.join(",")
    }
}

/// The operator's `NO_PROXY` plus the node-local and in-cluster addresses, without duplicates.
pub fn node_no_proxy(env: &ProxyEnv, cluster: &ClusterDetails) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in env
        .no_proxy
        .iter()
        .cloned()
        .chain(["localhost".to_string(), "127.0.0.1".to_string()])
        .chain(std::iter::once(cluster.service_cidr.clone()))
    {
        if !e.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&e)) {
            out.push(e);
        }
    }
    out
}

/// One `Environment="NAME=value"` line: backslash and double quote escaped, `%` doubled (systemd
/// expands specifiers there; percent-encoded proxy passwords contain `%`).
fn environment_line(name: &str, value: &str) -> String {
    let v = value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("Environment=\"{name}={v}\"\n")
}

/// The drop-in text.
pub fn drop_in(env: &ProxyEnv, no_proxy: &[String]) -> String {
    let mut text = String::from(
        "# Written by hybridboot init: the site's HTTP proxy (BootstrapConfig spec.proxy or the\n\
         # environment init ran with).\n[Service]\n",
    );
    if let Some(p) = &env.http_proxy {
        text.push_str(&environment_line("HTTP_PROXY", p));
    }
    if let Some(p) = &env.https_proxy {
        text.push_str(&environment_line("HTTPS_PROXY", p));
    }
    text.push_str(&environment_line("NO_PROXY", &no_proxy.join(",")));
    text
}

/// The proxy a drop-in gives its service: the `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` of its
/// `Environment=` lines (quoted or not, several per line, escapes as systemd reads them: `\\`,
/// `\"`, `%%`; lowercase names too). What `debug` compares with the configured proxy.
pub fn parse_drop_in(text: &str) -> ProxyEnv {
    let mut env = ProxyEnv::default();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("Environment=") else {
            continue;
        };
        for word in environment_words(rest) {
            let Some((name, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.trim().to_string();
            match name.to_ascii_uppercase().as_str() {
                "HTTPS_PROXY" => env.https_proxy = Some(value).filter(|v| !v.is_empty()),
                "HTTP_PROXY" => env.http_proxy = Some(value).filter(|v| !v.is_empty()),
                "NO_PROXY" => {
                    env.no_proxy = value
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect()
                }
                _ => {}
            }
        }
    }
    env
}

/// The assignments of one `Environment=` value: split at unquoted whitespace, quotes removed,
/// `\\` and `\"` unescaped inside quotes, `%%` read as `%`.
fn environment_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = value.chars();
    let mut quoted = false;
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words.into_iter().map(|w| w.replace("%%", "%")).collect()
}

/// The drop-ins for `env` (none without a proxy: an operator's own files stay untouched).
pub fn files(env: Option<&ProxyEnv>, cluster: &ClusterDetails) -> Vec<RenderedFile> {
    let Some(env) = env else {
        return Vec::new();
    };
    let text = drop_in(env, &node_no_proxy(env, cluster));
    let mode = if env.has_credentials() { 0o600 } else { 0o644 };
    let file = |path: &str, phase: FilePhase, restart: Effect| RenderedFile {
        phase,
        path: path.into(),
        contents: text.clone().into_bytes(),
        mode,
        effects: vec![Effect::DaemonReload, restart],
    };
    vec![
        file(
            CONTAINERD_DROP_IN,
            FilePhase::Containerd,
            Effect::Containerd,
        ),
        file(KUBELET_DROP_IN, FilePhase::Kubelet, Effect::Kubelet),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_in_reads_back_as_written_and_as_operators_write_it() {
        let env = ProxyEnv {
            https_proxy: Some("http://u:p%41\"q@proxy:3128".into()),
            http_proxy: Some("http://proxy:3128".into()),
            no_proxy: vec![".corp.example".into(), "10.0.0.0/8".into()],
        };
        let no_proxy = node_no_proxy(&env, &cluster());
        let back = parse_drop_in(&drop_in(&env, &no_proxy));
        assert_eq!(back.https_proxy, env.https_proxy);
        assert_eq!(back.http_proxy, env.http_proxy);
        assert_eq!(back.no_proxy, no_proxy);
        // The README's form, and several unquoted assignments on one line.
        let text = "[Service]\nEnvironment=\"HTTPS_PROXY=http://p:1\"\nEnvironment=http_proxy=http://q:2 NO_PROXY=a,b\n";
        let back = parse_drop_in(text);
        assert_eq!(back.https_proxy.as_deref(), Some("http://p:1"));
        assert_eq!(back.http_proxy.as_deref(), Some("http://q:2"));
        assert_eq!(back.no_proxy, ["a", "b"]);
        assert_eq!(parse_drop_in("[Service]\n"), ProxyEnv::default());
    }

    fn cluster() -> ClusterDetails {
        ClusterDetails {
            endpoint: "https://ABC.gr7.us-west-2.eks.amazonaws.com".into(),
            certificate_authority: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            service_cidr: "172.20.0.0/16".into(),
        }
    }

    #[test]
    fn drop_ins_are_golden() {
        let env = ProxyEnv::from_lookup(|k| match k {
            "HTTPS_PROXY" | "HTTP_PROXY" => Some("http://proxy.example.com:3128".into()),
            "NO_PROXY" => Some(" .corp.example, 10.0.0.0/8 ,localhost".into()),
            _ => None,
        })
        .unwrap();
        let files = files(Some(&env), &cluster());
        assert_eq!(files.len(), 2);
        let golden = "# Written by hybridboot init: the site's HTTP proxy (BootstrapConfig spec.proxy or the\n\
# environment init ran with).\n\
[Service]\n\
Environment=\"HTTP_PROXY=http://proxy.example.com:3128\"\n\
Environment=\"HTTPS_PROXY=http://proxy.example.com:3128\"\n\
Environment=\"NO_PROXY=.corp.example,10.0.0.0/8,localhost,127.0.0.1,172.20.0.0/16\"\n";
        for f in &files {
            assert_eq!(String::from_utf8_lossy(&f.contents), golden);
            assert_eq!(f.mode, 0o644);
        }
        assert_eq!(files[0].path, std::path::Path::new(CONTAINERD_DROP_IN));
        assert_eq!(
            files[0].effects,
            vec![Effect::DaemonReload, Effect::Containerd]
        );
        assert_eq!(files[0].phase, FilePhase::Containerd);
        assert_eq!(files[1].path, std::path::Path::new(KUBELET_DROP_IN));
        assert_eq!(
            files[1].effects,
            vec![Effect::DaemonReload, Effect::Kubelet]
        );
        assert_eq!(files[1].phase, FilePhase::Kubelet);
    }

    #[test]
    fn no_proxy_no_files_and_secrets_stay_root_only() {
        assert_eq!(ProxyEnv::from_lookup(|_| None), None);
        assert_eq!(
            ProxyEnv::from_lookup(|k| (k == "NO_PROXY").then(|| "a".into())),
            None
        );
        assert!(files(None, &cluster()).is_empty());
        // lowercase wins, as in the HTTP client; a password makes the files 0600 and its `%`
        // survives systemd's specifier expansion.
        let env = ProxyEnv::from_lookup(|k| match k {
            "https_proxy" => Some("http://edge:p%40ss@proxy:3128".into()),
            "HTTPS_PROXY" => Some("http://other:1".into()),
            _ => None,
        })
        .unwrap();
        assert!(env.has_credentials());
        let f = files(Some(&env), &cluster());
        assert!(f.iter().all(|f| f.mode == 0o600));
        let text = String::from_utf8_lossy(&f[0].contents);
        assert!(
            text.contains("Environment=\"HTTPS_PROXY=http://edge:p%%40ss@proxy:3128\"\n"),
            "{text}"
        );
        assert!(!text.contains("HTTP_PROXY="), "{text}");
        assert!(
            !ProxyEnv::from_lookup(|k| (k == "HTTP_PROXY").then(|| "http://p:1/a@b".into()))
                .unwrap()
                .has_credentials()
        );
    }
}
