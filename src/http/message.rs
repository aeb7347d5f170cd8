//! Requests and responses. Neither shows headers or bodies in `Debug`: they may hold tokens.

use std::fmt;
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::date::{parse_http_date, parse_retry_after};
use super::{HttpError, Url};
use crate::secret::Secret;

/// One header value; secret values never appear in `Debug` output.
#[derive(Clone)]
pub(super) enum HeaderValue {
    Plain(String),
    Secret(Secret),
}

impl HeaderValue {
    pub(super) fn as_str(&self) -> &str {
        match self {
            HeaderValue::Plain(s) => s,
            HeaderValue::Secret(s) => s.expose(),
        }
    }
}

/// An HTTP request. `Debug` shows only the method and URL: headers and bodies may hold tokens.
#[derive(Clone)]
pub struct Request {
    pub(super) method: &'static str,
    pub(super) url: Url,
    pub(super) headers: Vec<(String, HeaderValue)>,
    pub(super) body: Zeroizing<Vec<u8>>,
    pub(super) redirects: Redirects,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No query: presigned URLs carry credentials there.
        let path = self.url.path.split('?').next().unwrap_or("");
        write!(f, "{} {}{}", self.method, self.url.origin(), path)
    }
}

impl Request {
    /// A request with no body.
    pub fn new(method: &'static str, url: Url) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Zeroizing::new(Vec::new()),
            redirects: Redirects::None,
        }
    }
    /// `GET url`.
    pub fn get(url: Url) -> Self {
        Self::new("GET", url)
    }
    /// `POST url`.
    pub fn post(url: Url) -> Self {
        Self::new("POST", url)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push((name.to_string(), HeaderValue::Plain(value.into())));
        self
    }
    /// Adds a header whose value is secret (a token): it is zeroized and never shown.
    pub fn secret_header(mut self, name: &str, value: &Secret) -> Self {
        self.headers
            .push((name.to_string(), HeaderValue::Secret(value.clone())));
        self
    }
    /// Sets the body and its content type. The buffer is zeroized after use.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Zeroizing::new(body);
        self.header("Content-Type", content_type)
    }
    /// Sets a JSON body.
    pub fn json(self, value: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(value).expect("serialising a JSON value cannot fail");
        self.body("application/json", bytes)
    }
    /// Which redirects to follow (default: none; a 3xx answer is then an error).
    pub fn redirects(mut self, redirects: Redirects) -> Self {
        self.redirects = redirects;
        self
    }
    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }
    /// The method.
    pub fn method(&self) -> &str {
        self.method
    }
}

/// A complete response.
pub struct Response {
    /// Who answered (`scheme://host:port`), for messages.
    pub peer: String,
    /// Status code.
    pub status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Response({} {}, {} bytes)",
            self.peer,
            self.status,
            self.body.len()
        )
    }
}

impl Response {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body. It may hold secrets (tokens): do not log it.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// The server's clock (`Date` header), for clock-skew detection.
    pub fn date(&self) -> Option<SystemTime> {
        parse_http_date(self.header("date")?)
    }
    /// `Retry-After` as a delay from now (seconds or an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.header("retry-after")?, SystemTime::now())
    }
    /// Parses the body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Protocol {
            peer: self.peer.clone(),
            detail: format!("unexpected JSON: {e}"),
        })
    }
    /// `Ok(self)` for 2xx; a 3xx (one the request did not follow) is [`HttpError::Redirect`]
    /// naming its `Location`; anything else [`HttpError::Status`] with a short, printable excerpt.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        if (300..400).contains(&self.status) {
            return Err(HttpError::Redirect {
                peer: self.peer.clone(),
                code: self.status,
                location: self
                    .header("location")
                    .map_or_else(|| "(none)".into(), shown),
                reason: "this request follows no such redirect (is the URL the final one?)".into(),
                transient: false,
            });
        }
        Err(HttpError::Status {
            retry_after: self.retry_after(),
            peer: self.peer.clone(),
            code: self.status,
            excerpt: excerpt(&self.body, 200),
            body: self.body.to_vec(),
        })
    }
}

/// The first `max` printable characters of a body, on one line.
fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// Most hops a download follows (a CDN in front of object storage takes one or two).
pub const MAX_DOWNLOAD_HOPS: u32 = 5;

/// What a request does with a 3xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redirects {
    /// Follows none: a 3xx answer is an error naming its `Location` (the default).
    #[default]
    None,
    /// Downloads from mirrors: up to [`MAX_DOWNLOAD_HOPS`] hops of 301/302/303/307/308, only to
    /// `https://`; on the way to another origin every credential header (tokens, `Authorization`,
    /// cookies) is dropped.
    Download,
    /// Vault's standby redirect, followed as Vault's own client does: one hop of 301/302/307/308
    /// with the same method, body and headers (`X-Vault-Token` included: the active node is the
    /// same Vault), never from `https://` down to `http://`.
    Vault,
}

/// A `Location` for messages: without its query (presigned URLs carry credentials there).
pub(super) fn shown(location: &str) -> String {
    let clean: String = location
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    match clean.split_once('?') {
        Some((before, _)) => format!("{before}?..."),
        None => clean,
    }
}
