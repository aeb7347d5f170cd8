//! Proxy selection from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.

use std::fmt;

use super::url::redact_userinfo;
use super::{HttpError, Scheme, Url};
use crate::secret::Secret;

/// A proxy server.
#[derive(Clone)]
pub struct Proxy {
    pub(super) url: Url,
    /// `Proxy-Authorization` value from the proxy URL's user info (Basic).
    pub(super) authorization: Option<Secret>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({})", self.url.origin())
    }
}

impl Proxy {
    /// Parses a proxy URL (`http://[user:pass@]host:port`; a bare `host:port` means http).
    pub fn parse(s: &str) -> Result<Proxy, HttpError> {
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        };
        let (url, userinfo) = Url::parse_inner(&with_scheme, true)?;
        if url.scheme == Scheme::Https {
            return Err(HttpError::InvalidUrl {
                url: redact_userinfo(s),
                reason: "TLS to the proxy itself is not supported: use an http:// proxy URL (https traffic is still tunnelled end to end)".into(),
            });
        }
        let authorization = userinfo.map(|ui| {
            use base64::Engine;
            let decoded = percent_encoding::percent_decode_str(&ui).decode_utf8_lossy();
            Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes())
            ))
        });
        Ok(Proxy { url, authorization })
    }
}

/// Which proxy to use for which URL, from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    pub(super) https: Option<Proxy>,
    pub(super) http: Option<Proxy>,
    pub(super) no_proxy: Vec<String>,
}

impl ProxySettings {
    /// No proxy at all.
    pub fn none() -> Self {
        ProxySettings::default()
    }

    /// From the process environment. Lowercase names win over uppercase (as in curl); an
    /// unparsable proxy URL is an error rather than silently going direct.
    pub fn from_env() -> Result<Self, HttpError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (pure; for tests and configuration files).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, HttpError> {
        // An empty variable counts as unset (as in curl): `https_proxy=` must not hide
        // `HTTPS_PROXY`.
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let var = |lower: &str, upper: &str| set(lower).or_else(|| set(upper));
        let https = var("https_proxy", "HTTPS_PROXY")
            .map(|v| Proxy::parse(v.trim()))
            .transpose()?;
        let http = var("http_proxy", "HTTP_PROXY")
            .map(|v| Proxy::parse(v.trim()))
            .transpose()?;
        let no_proxy = var("no_proxy", "NO_PROXY")
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_ascii_lowercase())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(ProxySettings {
            https,
            http,
            no_proxy,
        })
    }

    /// The proxy for `url`, or `None` to connect directly.
    pub fn for_url(&self, url: &Url) -> Option<&Proxy> {
        if self.bypass(url) {
            return None;
        }
        match url.scheme {
            Scheme::Https => self.https.as_ref(),
            Scheme::Http => self.http.as_ref(),
        }
    }

    fn bypass(&self, url: &Url) -> bool {
        let host = url.host.trim_end_matches('.');
        let host_ip = host.parse::<std::net::IpAddr>().ok();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            // A CIDR block ("10.0.0.0/8", "fd00::/8") matches IP-literal hosts inside it, as in
            // Go's httpproxy (what containerd and the kubelet use): names are not resolved.
            if entry.contains('/') {
                return match (crate::node::config::parse_cidr(entry), host_ip) {
                    (Ok(net), Some(ip)) => net.contains(ip),
                    _ => false,
                };
            }
            // Entries may carry a port ("host:port", "[v6]:port"): then it must match too.
            let (name, port) = match entry.strip_prefix('[') {
                Some(r) => match r.split_once(']') {
                    Some((h, p)) => (h, p.strip_prefix(':')),
                    None => (r, None),
                },
                None => match entry.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => (h, Some(p)),
                    _ => (entry.as_str(), None),
                },
            };
            if let Some(p) = port {
                if p.parse::<u16>().ok() != Some(url.port) {
                    return false;
                }
            }
            let name = name
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.');
            !name.is_empty()
                && (host == name
                    || (host.len() > name.len()
                        && host.ends_with(name)
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_selection_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = ProxySettings::from_lookup(env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://user:p%40ss@lower:3128"),
            ("HTTP_PROXY", "plain:8080"),
            (
                "NO_PROXY",
                "localhost, .internal.example,10.0.0.5,svc.local:8443",
            ),
        ]))
        .unwrap();
        let pick = |u: &str| {
            s.for_url(&Url::parse(u).unwrap())
                .map(|p| p.url.authority())
        };
        assert_eq!(
            pick("https://sts.amazonaws.com/").as_deref(),
            Some("lower:3128")
        );
        assert_eq!(pick("http://x.example/").as_deref(), Some("plain:8080"));
        assert_eq!(pick("https://localhost:8200/"), None);
        assert_eq!(pick("https://vault.internal.example/"), None);
        assert_eq!(pick("https://internal.example/"), None);
        assert_eq!(
            pick("https://xinternal.example/").as_deref(),
            Some("lower:3128")
        );
        assert_eq!(pick("https://10.0.0.5/"), None);
        assert_eq!(pick("https://10.0.0.6/").as_deref(), Some("lower:3128"));
        assert_eq!(pick("https://svc.local:8443/"), None);
        assert_eq!(
            pick("https://svc.local:443/").as_deref(),
            Some("lower:3128")
        );
        let auth = s.https.as_ref().unwrap().authorization.as_ref().unwrap();
        use base64::Engine;
        assert_eq!(
            auth.expose(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:p@ss")
            )
        );
        assert!(!format!("{s:?}").contains("p@ss"));
        let empty_lower = ProxySettings::from_lookup(env(&[
            ("https_proxy", ""),
            ("HTTPS_PROXY", "http://upper:3128"),
        ]))
        .unwrap();
        assert!(empty_lower
            .for_url(&Url::parse("https://a/").unwrap())
            .is_some());
        let all =
            ProxySettings::from_lookup(env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]))
                .unwrap();
        assert!(all.for_url(&Url::parse("https://a/").unwrap()).is_none());
        assert!(ProxySettings::from_lookup(env(&[("https_proxy", "https://p:1")])).is_err());
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_and_cidrs() {
        let s = ProxySettings::from_lookup(|k| match k {
            "HTTPS_PROXY" | "HTTP_PROXY" => Some("http://proxy:3128".to_string()),
            "NO_PROXY" => Some(
                "example.com, .corp.example, 10.0.0.0/8,192.168.1.0/24 ,fd00::/8,127.0.0.1".into(),
            ),
            _ => None,
        })
        .unwrap();
        let direct = |u: &str| s.for_url(&Url::parse(u).unwrap()).is_none();
        // Hosts and suffixes, with or without the leading dot.
        assert!(direct("https://example.com/"));
        assert!(direct("https://api.example.com/"));
        assert!(!direct("https://notexample.com/"));
        assert!(direct("https://corp.example/") && direct("https://a.b.corp.example/"));
        // CIDR blocks match IP literals inside them, v4 and v6, http and https.
        assert!(direct("https://10.1.2.3:6443/") && direct("http://10.255.0.1/"));
        assert!(direct("https://192.168.1.77/"));
        assert!(!direct("https://192.168.2.1/"));
        assert!(!direct("https://11.0.0.1/"));
        assert!(direct("https://[fd12::1]:8443/"));
        assert!(!direct("https://[fe80::1]/"));
        assert!(direct("http://127.0.0.1:5000/"));
        assert!(!direct("http://127.0.0.2:5000/"));
        // A CIDR never matches a name (no resolution), and a bad block matches nothing.
        assert!(!direct("https://ten.example/"));
        let bad = ProxySettings::from_lookup(|k| match k {
            "HTTPS_PROXY" => Some("http://proxy:3128".to_string()),
            "NO_PROXY" => Some("10.0.0.0/33".into()),
            _ => None,
        })
        .unwrap();
        assert!(bad
            .for_url(&Url::parse("https://10.0.0.1/").unwrap())
            .is_some());
    }
}
