//! The errors of one HTTP exchange and how I/O and TLS failures map onto them.

use std::io;
use std::time::Duration;

use crate::error::{Class, Classify};
use crate::retry::Retryable;

/// Errors of one HTTP exchange. Messages are one line and name the peer; they never contain
/// request headers or bodies (which may carry tokens).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot resolve {peer}: {detail}")]
    Resolve { peer: String, detail: String },
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("proxy {proxy} refused the tunnel to {peer}: {detail}")]
    Proxy {
        proxy: String,
        peer: String,
        detail: String,
        /// Whether the proxy's answer suggests trying again (502/503/504).
        transient: bool,
    },
    #[error("TLS certificate verification of {peer} failed: {detail} (check the CA bundle and the server name)")]
    TlsVerification { peer: String, detail: String },
    #[error("TLS handshake with {peer} failed: {detail}")]
    Tls { peer: String, detail: String },
    #[error("{peer} did not answer in time ({phase})")]
    Timeout { peer: String, phase: &'static str },
    #[error("connection to {peer} failed while {phase}: {source}")]
    Io {
        peer: String,
        phase: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("malformed HTTP response from {peer}: {detail}")]
    Protocol { peer: String, detail: String },
    #[error("response from {peer} exceeds the {limit}-byte limit")]
    TooLarge { peer: String, limit: usize },
    #[error("{peer} answered HTTP {code}{}", excerpt_suffix(.excerpt))]
    Status {
        peer: String,
        code: u16,
        /// The start of the body, printable characters only (error bodies; never request data).
        excerpt: String,
        /// The full body, for callers that parse structured errors.
        body: Vec<u8>,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
    },
    #[error("{peer} answered HTTP {code} redirecting to {location}, not followed: {reason}")]
    Redirect {
        peer: String,
        code: u16,
        /// The `Location`, without its query (which may carry a presigned signature).
        location: String,
        reason: String,
        /// A redirect chain that a failover may end (Vault's standbys pointing at an active
        /// node that has just changed): worth retrying from the start.
        transient: bool,
    },
    #[error("reading CA bundle {path}: {detail}")]
    CaBundle { path: String, detail: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

/// The phase of an [`HttpError::Io`] that the caller's sink raised while the body was being
/// stored (a full disk, a gzip stream that does not decompress): not the peer's trouble.
pub(crate) const STORING_PHASE: &str = "storing the response";

impl Classify for HttpError {
    /// Transient: connection problems, timeouts, 429 and 5xx (the peer may recover).
    /// Operator: bad URLs, TLS verification, other statuses, redirects not followed, CA bundles,
    /// oversized answers, and a body the caller could not store (asking again brings the same
    /// bytes: a corrupt gzip stream would otherwise be fetched until the deadline).
    fn class(&self) -> Class {
        let transient = match self {
            HttpError::Io {
                phase: STORING_PHASE,
                ..
            } => false,
            HttpError::Resolve { .. }
            | HttpError::Connect { .. }
            | HttpError::Timeout { .. }
            | HttpError::Io { .. } => true,
            HttpError::Proxy { transient, .. } | HttpError::Redirect { transient, .. } => {
                *transient
            }
            HttpError::Status { code, .. } => *code == 429 || (500..600).contains(code),
            _ => false,
        };
        if transient {
            Class::Transient
        } else {
            Class::Operator
        }
    }
}

impl HttpError {
    /// Whether the request certainly never reached the server's application (so even a
    /// non-idempotent request, such as unwrapping a single-use token, may be sent again).
    pub fn before_request_sent(&self) -> bool {
        matches!(
            self,
            HttpError::Resolve { .. }
                | HttpError::Connect { .. }
                | HttpError::Proxy { .. }
                | HttpError::Timeout {
                    phase: "resolving the host name" | "connecting" | "TLS handshake",
                    ..
                }
                | HttpError::Io {
                    phase: "TLS handshake",
                    ..
                }
                // Answered by standbys' redirects only: no node handled the request.
                | HttpError::Redirect {
                    transient: true,
                    ..
                }
        )
    }

    /// The HTTP status code, for status errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Retryable for HttpError {
    fn is_throttled(&self) -> bool {
        matches!(self, HttpError::Status { code: 429, .. })
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Maps an I/O error to the error kinds callers act on (timeout, TLS verification, reset).
pub(super) fn map_io(e: io::Error, peer: &str, phase: &'static str) -> HttpError {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        return HttpError::Timeout {
            peer: peer.into(),
            phase,
        };
    }
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(reason) => HttpError::TlsVerification {
                peer: peer.into(),
                detail: describe_certificate_error(reason),
            },
            rustls::Error::AlertReceived(alert) => HttpError::Tls {
                peer: peer.into(),
                detail: format!(
                    "the server sent alert {alert:?} (does it trust our CA, or require a client certificate?)"
                ),
            },
            other => HttpError::Tls {
                peer: peer.into(),
                detail: other.to_string(),
            },
        };
    }
    if phase == "TLS handshake" && e.kind() == io::ErrorKind::UnexpectedEof {
        // Transient: a server that dies (or a load balancer losing its backend) mid-handshake
        // closes like this; a plain-http server answers garbage instead, a TLS error.
        return HttpError::Io {
            peer: peer.into(),
            phase,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake (is it speaking TLS?)",
            ),
        };
    }
    HttpError::Io {
        peer: peer.into(),
        phase,
        source: e,
    }
}

/// Plain words for the verification failures operators meet.
fn describe_certificate_error(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::UnknownIssuer => "its certificate is not issued by a trusted CA (UnknownIssuer)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "its certificate is not valid for this host name or address (NotValidForName)".into()
        }
        C::Expired | C::ExpiredContext { .. } => "its certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "its certificate is not valid yet (is the clock right?)".into()
        }
        C::Revoked => "its certificate is revoked".into(),
        C::BadSignature => "its certificate has a bad signature".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_the_caller_cannot_store_is_not_the_peers_trouble() {
        let io = |phase| HttpError::Io {
            peer: "m:443".into(),
            phase,
            source: io::Error::new(io::ErrorKind::InvalidInput, "invalid gzip header"),
        };
        assert_eq!(io(STORING_PHASE).class(), Class::Operator);
        assert_eq!(io("reading the response").class(), Class::Transient);
    }
}
