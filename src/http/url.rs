//! Absolute http(s) URLs, parsed just enough to connect and build a request line.

use std::fmt;

use super::HttpError;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// An absolute http(s) URL, parsed just enough to connect and build a request line.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
}

impl Url {
    /// Parses `http[s]://host[:port][/path][?query]`. User info is refused (credentials do not
    /// belong in URLs); IPv6 hosts go in brackets.
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        Self::parse_inner(s, false).map(|(u, _)| u)
    }

    pub(super) fn parse_inner(
        s: &str,
        allow_userinfo: bool,
    ) -> Result<(Url, Option<String>), HttpError> {
        let bad = |reason: &str| HttpError::InvalidUrl {
            url: redact_userinfo(s),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = strip_prefix_ci(s, "https://") {
            (Scheme::Https, r)
        } else if let Some(r) = strip_prefix_ci(s, "http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (mut authority, tail) = rest.split_at(split);
        let tail = tail.split('#').next().unwrap_or("");
        let mut userinfo = None;
        if let Some(at) = authority.rfind('@') {
            if !allow_userinfo {
                return Err(bad("user info (user:password@) is not allowed here"));
            }
            userinfo = Some(authority[..at].to_string());
            authority = &authority[at + 1..];
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '[' in host"))?;
            let host = &r[..end];
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("invalid IPv6 address"))?;
            let after = &r[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ']'")),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("invalid port"))?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad("invalid character in host"));
        }
        let path = if tail.is_empty() {
            "/".to_string()
        } else if tail.starts_with('?') {
            format!("/{tail}")
        } else {
            tail.to_string()
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "spaces or control characters in the path: percent-encode them",
            ));
        }
        Ok((
            Url {
                scheme,
                host: host.to_ascii_lowercase(),
                port,
                path,
            },
            userinfo,
        ))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Path and query, starting with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.path
    }

    /// `host:port`, with brackets around IPv6 addresses (for `Host` and `CONNECT`).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value: the port only when it is not the scheme's default.
    pub(super) fn host_header(&self) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default {
            if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }

    /// This URL with `path` (which may contain a query) appended to its path, one `/` between.
    /// A base URL like `https://vault:8200/prefix` plus `v1/sys/health` gives
    /// `https://vault:8200/prefix/v1/sys/health`; the base's query is dropped.
    pub fn join(&self, path: &str) -> Url {
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        let mut u = self.clone();
        u.path = format!("{base}/{}", path.trim_start_matches('/'));
        u
    }

    /// The origin, `scheme://authority`, for messages.
    pub fn origin(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({self})")
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// `scheme://user:pass@host` -> `scheme://<redacted>@host`, for error messages.
pub(super) fn redact_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &s[..scheme_end + 3], &rest[at + 1..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("https://Vault.example.com:8200/prefix/").unwrap();
        assert_eq!(u.host(), "vault.example.com");
        assert_eq!(u.port(), 8200);
        assert_eq!(
            u.join("/v1/pki/sign/node").to_string(),
            "https://vault.example.com:8200/prefix/v1/pki/sign/node"
        );
        let v6 = Url::parse("http://[::1]:8080?x=1").unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(v6.path_and_query(), "/?x=1");
        assert_eq!(Url::parse("https://h").unwrap().port(), 443);
        assert!(Url::parse("ftp://h").is_err());
        assert!(Url::parse("https://user:pw@h/").is_err());
        assert!(Url::parse("https://h:99999/").is_err());
        assert!(Url::parse("https:///x").is_err());
        let err = Url::parse("https://user:pw@h/").unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
    }
}
