//! Which 3xx answers a request follows, and how (pure: no I/O).
//!
//! A redirect is never taken for a success: its body is not the resource. Each request says what
//! it may follow ([`Redirects`]); every other 3xx is an [`HttpError::Redirect`] naming where it
//! pointed, so that an operator sees "the mirror redirects to X" rather than an empty document.

use super::message::{shown, HeaderValue, Redirects, MAX_DOWNLOAD_HOPS};
use super::{HttpError, Request, Scheme, Url};

/// The request to send next, `None` when `status` is not a redirect this request follows (the
/// caller then treats the answer as final), or an error when the redirect must not be followed.
pub(super) fn next_request(
    req: &Request,
    status: u16,
    location: Option<&str>,
    peer: &str,
    hops: u32,
) -> Result<Option<Request>, HttpError> {
    let follows = match req.redirects {
        Redirects::None => false,
        Redirects::Download => matches!(status, 301 | 302 | 303 | 307 | 308),
        Redirects::Vault => matches!(status, 301 | 302 | 307 | 308),
    };
    if !follows {
        return Ok(None);
    }
    let refuse = |location: String, reason: String| HttpError::Redirect {
        peer: peer.to_string(),
        code: status,
        location,
        reason,
        transient: false,
    };
    let Some(raw) = location else {
        return Err(refuse(
            "(none)".into(),
            "the answer has no Location header".into(),
        ));
    };
    let target = resolve(&req.url, raw).map_err(|reason| refuse(shown(raw), reason))?;
    let max_hops = match req.redirects {
        Redirects::Vault => 1,
        _ => MAX_DOWNLOAD_HOPS,
    };
    if hops >= max_hops {
        return Err(HttpError::Redirect {
            peer: peer.to_string(),
            code: status,
            location: shown(raw),
            reason: format!("more than {max_hops} redirect(s) in a row"),
            // A standby redirected us to a node that now redirects too: leadership moved
            // meanwhile (a failover); the next attempt finds the new active node.
            transient: req.redirects == Redirects::Vault,
        });
    }
    let mut next = req.clone();
    match req.redirects {
        Redirects::Download => {
            if target.scheme != Scheme::Https {
                return Err(refuse(
                    shown(raw),
                    "downloads follow redirects to https:// only".into(),
                ));
            }
            if target.origin() != req.url.origin() {
                next.headers
                    .retain(|(name, value)| !is_credential(name, value));
            }
            if req.method != "HEAD" {
                next.method = "GET";
                next.body = Default::default();
            }
        }
        Redirects::Vault => {
            if req.url.scheme == Scheme::Https && target.scheme != Scheme::Https {
                return Err(refuse(
                    shown(raw),
                    "it would downgrade https to plain http".into(),
                ));
            }
        }
        Redirects::None => return Ok(None),
    }
    next.url = target;
    Ok(Some(next))
}

/// Headers that carry a credential: never sent to another origin than the one they were for.
fn is_credential(name: &str, value: &HeaderValue) -> bool {
    matches!(value, HeaderValue::Secret(_))
        || [
            "authorization",
            "cookie",
            "x-vault-token",
            "x-amz-security-token",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// `Location` resolved against the request's URL: absolute, scheme-relative (`//host/p`),
/// absolute-path (`/p`) or relative to the current path's directory.
fn resolve(base: &Url, location: &str) -> Result<Url, String> {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    let absolute = if lower.starts_with("https://") || lower.starts_with("http://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = match base.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{rest}")
    } else if location.contains("://") {
        return Err("it points to a scheme other than http(s)".into());
    } else if location.starts_with('/') {
        format!("{}{location}", base.origin())
    } else if location.is_empty() {
        return Err("the Location header is empty".into());
    } else {
        let path = base.path.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{dir}{location}", base.origin())
    };
    Url::parse(&absolute).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;
    use crate::secret::Secret;

    fn get(url: &str, r: Redirects) -> Request {
        Request::get(Url::parse(url).unwrap())
            .redirects(r)
            .secret_header("X-Vault-Token", &Secret::new("s.tok"))
            .header("Authorization", "Bearer x")
            .header("Accept-Encoding", "identity")
    }

    fn names(r: &Request) -> Vec<String> {
        r.headers.iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn downloads_drop_credentials_on_the_way_to_another_origin_only() {
        let req = get("https://mirror.example/a/kubelet", Redirects::Download);
        let same = next_request(&req, 302, Some("/b/kubelet"), "p", 0)
            .unwrap()
            .unwrap();
        assert_eq!(same.url.to_string(), "https://mirror.example:443/b/kubelet");
        assert_eq!(names(&same).len(), 3, "same origin keeps every header");
        let other = next_request(&req, 301, Some("https://cdn.example/x?sig=1"), "p", 1)
            .unwrap()
            .unwrap();
        assert_eq!(other.url.to_string(), "https://cdn.example:443/x?sig=1");
        assert_eq!(names(&other), ["Accept-Encoding"]);
        let rel = next_request(&req, 307, Some("v2/kubelet"), "p", 0)
            .unwrap()
            .unwrap();
        assert_eq!(rel.url.path, "/a/v2/kubelet");
    }

    #[test]
    fn downloads_refuse_http_targets_and_endless_chains_naming_the_location() {
        let req = get("https://mirror.example/k", Redirects::Download);
        let e = next_request(
            &req,
            302,
            Some("http://mirror.example/k?X-Amz-Signature=s"),
            "p",
            0,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("http://mirror.example/k?..."), "{text}");
        assert!(
            text.contains("https:// only") && !text.contains("Signature"),
            "{text}"
        );
        let e = next_request(&req, 302, Some("/k2"), "p", MAX_DOWNLOAD_HOPS).unwrap_err();
        assert!(e.to_string().contains("more than 5"), "{e}");
        assert!(
            !e.is_transient(),
            "a redirect loop needs the mirror's operator"
        );
        let e = next_request(&req, 302, None, "p", 0).unwrap_err();
        assert!(e.to_string().contains("no Location"), "{e}");
        let e = next_request(&req, 302, Some("ftp://x/y"), "p", 0).unwrap_err();
        assert!(e.to_string().contains("ftp://x/y"), "{e}");
    }

    #[test]
    fn vault_redirects_keep_method_body_and_token_once_and_never_downgrade() {
        let req = Request::post(Url::parse("https://standby:8200/v1/pki/sign/node").unwrap())
            .redirects(Redirects::Vault)
            .secret_header("X-Vault-Token", &Secret::new("s.tok"))
            .body("application/json", b"{\"csr\":1}".to_vec());
        let next = next_request(
            &req,
            307,
            Some("https://active:8200/v1/pki/sign/node"),
            "p",
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.method, "POST");
        assert_eq!(&next.body[..], b"{\"csr\":1}");
        assert_eq!(next.headers[0].1.as_str(), "s.tok");
        assert_eq!(next.url.host, "active");
        let e = next_request(&next, 307, Some("https://third:8200/v1/x"), "p", 1).unwrap_err();
        assert!(e.to_string().contains("more than 1"), "{e}");
        // Leadership moved during the request (a failover): retried, nothing was handled.
        assert!(e.is_transient() && e.before_request_sent(), "{e:?}");
        let e = next_request(&req, 307, Some("http://active:8200/v1/x"), "p", 0).unwrap_err();
        assert!(e.to_string().contains("downgrade"), "{e}");
        // 303 is not how Vault redirects: left to the caller, which reports it.
        assert!(next_request(&req, 303, Some("/x"), "p", 0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn requests_follow_nothing_unless_told() {
        let req = Request::get(Url::parse("https://h/").unwrap());
        assert!(next_request(&req, 302, Some("https://h/x"), "p", 0)
            .unwrap()
            .is_none());
    }
}
