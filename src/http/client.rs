//! The client: configuration, and one request-response exchange over one connection.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use zeroize::Zeroizing;

use super::body::{framing, read_body, read_head, AcceptHead, BodySink, StatusGatedSink};
use super::connect::{connect, connect_tunnel, DeadlineStream, Stream};
use super::error::map_io;
use super::redirect;
use super::tls::{self, ClientIdentity, Roots};
use super::{HttpError, ProxySettings, Request, Response, Scheme};
use crate::retry::{self, RetryPolicy};

/// Connect, read and overall time limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (per address tried).
    pub connect: Duration,
    /// Longest silence while reading or writing.
    pub read: Duration,
    /// The whole exchange, connect to last body byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(60),
        }
    }
}

/// Builds a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    roots: Roots,
    identity: Option<ClientIdentity>,
    proxy: Option<ProxySettings>,
    timeouts: Timeouts,
    max_response_bytes: usize,
    user_agent: String,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            roots: Roots::WebPki,
            identity: None,
            proxy: None,
            timeouts: Timeouts::default(),
            max_response_bytes: 4 * 1024 * 1024,
            user_agent: format!("hybridboot/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ClientBuilder {
    /// Trust only the certificates in this PEM bundle (replaces the compiled-in roots).
    pub fn ca_bundle_file(self, path: &Path) -> Result<Self, HttpError> {
        // A system bundle is ~200 KiB; 4 MiB leaves room without letting a wrong path (a
        // device, a log) exhaust memory.
        let bytes =
            crate::fsutil::read_capped(path, 4 * 1024 * 1024).map_err(|e| HttpError::CaBundle {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        let text = String::from_utf8(bytes).map_err(|_| HttpError::CaBundle {
            path: path.display().to_string(),
            detail: "not UTF-8 text".into(),
        })?;
        self.ca_bundle_pem(&path.display().to_string(), &text)
    }

    /// Trust only the certificates in this PEM text; `name` appears in errors.
    pub fn ca_bundle_pem(mut self, name: &str, pem: &str) -> Result<Self, HttpError> {
        let certs = crate::x509::chain::parse_pem_bundle(pem).map_err(|e| HttpError::CaBundle {
            path: name.to_string(),
            detail: e.to_string(),
        })?;
        self.roots = Roots::Bundle(certs);
        Ok(self)
    }

    /// Authenticate with this certificate chain and hardware key (mutual TLS).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Use these proxy settings instead of the environment's.
    pub fn proxy(mut self, proxy: ProxySettings) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Time limits of each request.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Largest response body accepted (default 4 MiB); larger bodies fail with
    /// [`HttpError::TooLarge`].
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Builds the client: TLS configuration, roots, proxy settings (environment unless set).
    pub fn build(self) -> Result<Client, HttpError> {
        let config = tls::client_config(&self.roots, self.identity.as_ref())?;
        let proxy = match self.proxy {
            Some(p) => p,
            None => ProxySettings::from_env()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                tls: Arc::new(config),
                proxy,
                timeouts: self.timeouts,
                max_response_bytes: self.max_response_bytes,
                user_agent: self.user_agent,
            }),
        })
    }
}

/// The client. Cheap to clone (shared configuration).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Arc<rustls::ClientConfig>,
    proxy: ProxySettings,
    timeouts: Timeouts,
    max_response_bytes: usize,
    user_agent: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("timeouts", &self.inner.timeouts)
            .field("proxy", &self.inner.proxy)
            .finish()
    }
}

impl Client {
    /// A builder with defaults: compiled-in roots, no client certificate, proxies from the
    /// environment, 10 s connect / 30 s read / 60 s total, 4 MiB bodies.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sends one request (one attempt, following the redirects the request allows) and returns
    /// the final complete response, whatever its status.
    pub fn send(&self, req: &Request) -> Result<Response, HttpError> {
        let limit = self.inner.max_response_bytes;
        let mut current = Cow::Borrowed(req);
        let mut hops = 0u32;
        loop {
            let mut body = Vec::new();
            let (status, headers, peer) = self.exchange(&current, &mut body, limit)?;
            let resp = Response {
                peer,
                status,
                headers,
                body: Zeroizing::new(body),
            };
            match self.follow(&current, &resp, hops)? {
                Some(next) => {
                    current = Cow::Owned(next);
                    hops = hops.saturating_add(1);
                }
                None => return Ok(resp),
            }
        }
    }

    /// The next request of a redirect chain, logged; `None` for a final answer.
    fn follow(
        &self,
        req: &Request,
        resp: &Response,
        hops: u32,
    ) -> Result<Option<Request>, HttpError> {
        let next =
            redirect::next_request(req, resp.status, resp.header("location"), &resp.peer, hops)?;
        if let Some(n) = &next {
            log::info!(
                "{} answered HTTP {}: following to {n:?}",
                resp.peer,
                resp.status
            );
        }
        Ok(next)
    }

    /// Sends with the retry policy: transient failures (connection errors, timeouts, 429, 5xx)
    /// are retried with backoff; a final non-2xx status is an error ([`HttpError::Status`], or
    /// [`HttpError::Redirect`] for a 3xx the request does not follow).
    /// Only for idempotent requests, or requests that are safe to repeat.
    pub fn send_retrying(
        &self,
        req: &Request,
        policy: &RetryPolicy,
    ) -> Result<Response, HttpError> {
        retry::run(policy, &retry::RealClock, |attempt| {
            if attempt > 0 {
                log::debug!("retrying {req:?} (attempt {})", attempt + 1);
            }
            self.send(req)?.error_for_status()
        })
    }

    /// Streams the body of a 2xx response into `sink` (up to `limit` bytes; downloads). Other
    /// statuses return [`HttpError::Status`] without touching the sink.
    pub fn download(
        &self,
        req: &Request,
        sink: &mut dyn Write,
        limit: usize,
    ) -> Result<Response, HttpError> {
        self.download_with(req, sink, limit, &mut |_, _| Ok(()))
    }

    /// [`Client::download`], with `accept` shown the final 2xx answer's status and headers
    /// before its first body byte reaches `sink`; its error ends the exchange (resumed
    /// downloads check `206` and `Content-Range` there, or start over on `200`).
    pub fn download_with(
        &self,
        req: &Request,
        sink: &mut dyn Write,
        limit: usize,
        accept: AcceptHead<'_>,
    ) -> Result<Response, HttpError> {
        let mut current = Cow::Borrowed(req);
        let mut hops = 0u32;
        loop {
            let mut tee = StatusGatedSink {
                sink: &mut *sink,
                error: Vec::new(),
                ok: None,
                accept: &mut *accept,
            };
            let (status, headers, peer) = self.exchange(&current, &mut tee, limit)?;
            let resp = Response {
                peer,
                status,
                headers,
                body: Zeroizing::new(tee.error),
            };
            match self.follow(&current, &resp, hops)? {
                Some(next) => {
                    current = Cow::Owned(next);
                    hops = hops.saturating_add(1);
                }
                None => return resp.error_for_status(),
            }
        }
    }

    fn exchange(
        &self,
        req: &Request,
        sink: &mut dyn BodySink,
        limit: usize,
    ) -> Result<Exchanged, HttpError> {
        let started = Instant::now();
        let t = self.inner.timeouts;
        let deadline = crate::time::instant_after(started, t.total);
        let url = &req.url;
        let peer = url.origin();
        let proxy = self.inner.proxy.for_url(url);
        let (host, port) = match proxy {
            Some(p) => (p.url.host.as_str(), p.url.port),
            None => (url.host.as_str(), url.port),
        };
        let tcp = connect(host, port, t.connect, deadline, &peer)?;
        let mut raw = DeadlineStream {
            tcp,
            deadline,
            idle: t.read,
        };
        let mut stream: Box<dyn Stream> = match url.scheme {
            Scheme::Http => Box::new(raw),
            Scheme::Https => {
                if let Some(p) = proxy {
                    connect_tunnel(&mut raw, p, url, &peer)?;
                }
                let name =
                    ServerName::try_from(url.host.clone()).map_err(|_| HttpError::InvalidUrl {
                        url: url.to_string(),
                        reason: "host is not a valid DNS name or IP address".into(),
                    })?;
                let mut conn = rustls::ClientConnection::new(self.inner.tls.clone(), name)
                    .map_err(|e| HttpError::Config(e.to_string()))?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut raw)
                        .map_err(|e| map_io(e, &peer, "TLS handshake"))?;
                }
                Box::new(rustls::StreamOwned::new(conn, raw))
            }
        };

        // Request head: absolute-form target through a plain-http proxy.
        let target = match (proxy, url.scheme) {
            (Some(_), Scheme::Http) => url.to_string(),
            _ => url.path.clone(),
        };
        let mut head = Zeroizing::new(format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: close\r\n",
            req.method,
            target,
            url.host_header(),
            self.inner.user_agent
        ));
        if let (Some(p), Scheme::Http) = (proxy, url.scheme) {
            if let Some(auth) = &p.authorization {
                head.push_str(&format!("Proxy-Authorization: {}\r\n", auth.expose()));
            }
        }
        for (name, value) in &req.headers {
            let v = value.as_str();
            if name.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(HttpError::Config(format!(
                    "header {name:?} contains a line break or colon"
                )));
            }
            head.push_str(&format!("{name}: {v}\r\n"));
        }
        if !req.body.is_empty() || matches!(req.method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        head.push_str("\r\n");
        let mut out = Zeroizing::new(Vec::with_capacity(head.len() + req.body.len()));
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&req.body);
        stream
            .write_all(&out)
            .and_then(|_| stream.flush())
            .map_err(|e| map_io(e, &peer, "sending the request"))?;

        let (status, headers, mut reader) = read_head(stream, &peer, req.method == "HEAD")?;
        sink.start(status, &headers)?;
        let framing = framing(status, &headers, req.method == "HEAD", &peer)?;
        read_body(&mut reader, framing, sink, limit, &peer)?;
        // Without the query: presigned URLs carry credentials there.
        log::debug!(
            "{} {}{} -> {} ({} ms)",
            req.method,
            url.origin(),
            url.path.split('?').next().unwrap_or(""),
            status,
            started.elapsed().as_millis()
        );
        Ok((status, headers, peer))
    }
}

/// Status, headers and peer of a finished exchange.
type Exchanged = (u16, Vec<(String, String)>, String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;
    use crate::http::Url;
    use crate::secret::Secret;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::SystemTime;

    /// Serves each canned response to one connection, returning what the client sent.
    fn serve(responses: Vec<Vec<u8>>) -> (Url, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for r in responses {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                // Read the head and a Content-Length body.
                loop {
                    let n = s.read(&mut b).unwrap();
                    req.extend_from_slice(&b[..n]);
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                seen.push(req);
                if r == b"HANG" {
                    std::thread::sleep(Duration::from_millis(1500));
                    continue;
                }
                s.write_all(&r).unwrap();
            }
            seen
        });
        (url, h)
    }

    fn client(limit: usize) -> Client {
        Client::builder()
            .proxy(ProxySettings::none())
            .max_response_bytes(limit)
            .timeouts(Timeouts {
                connect: Duration::from_secs(2),
                read: Duration::from_millis(500),
                total: Duration::from_secs(3),
            })
            .build()
            .unwrap()
    }

    #[test]
    fn bodies_by_length_chunked_and_close() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec(),
            b"HTTP/1.1 404 Not Found\r\n\r\n{\"errors\":[\"nope\"]}".to_vec(),
        ]);
        let c = client(1024);
        let r = c
            .send(&Request::post(url.join("a")).json(&serde_json::json!({"k": "v"})))
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body(), b"hello");
        assert_eq!(
            r.date()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784111777
        );
        let r = c.send(&Request::get(url.join("b"))).unwrap();
        assert_eq!(r.body(), b"Wikipedia ");
        let e = c
            .send(&Request::get(url.join("c")))
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("nope"), "{e}");
        let seen = h.join().unwrap();
        let first = String::from_utf8_lossy(&seen[0]);
        assert!(first.starts_with("POST /a HTTP/1.1\r\n"), "{first}");
        assert!(first.contains("Content-Length: 9\r\n"));
        assert!(first.ends_with("{\"k\":\"v\"}"));
    }

    #[test]
    fn signed_lengths_and_chunk_sizes_are_refused() {
        // `+5` parses as 5 for Rust's integer parsers; HTTP allows digits only. A proxy that
        // reads the other framing would see a different body (request smuggling).
        let (url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: -0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n+0\r\n\r\n"
                .to_vec(),
        ]);
        let c = client(1024);
        for want in [
            "Content-Length \"+5\"",
            "chunk size \"+5\"",
            "Content-Length \"-0\"",
            "chunk size \"+0\"",
        ] {
            let e = c.send(&Request::get(url.clone())).unwrap_err();
            assert!(matches!(e, HttpError::Protocol { .. }), "{e:?}");
            assert!(e.to_string().contains(want), "{e}");
        }
        h.join().unwrap();
    }

    #[test]
    fn size_cap_and_timeouts() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n{}",
            "x".repeat(2000)
        );
        let chunked_big = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
            "y".repeat(1024),
            "y".repeat(1024)
        );
        let (url, h) = serve(vec![
            big.into_bytes(),
            chunked_big.into_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            b"HANG".to_vec(),
        ]);
        let c = client(1500);
        for _ in 0..2 {
            let e = c.send(&Request::get(url.clone())).unwrap_err();
            assert!(matches!(e, HttpError::TooLarge { limit: 1500, .. }), "{e}");
            assert!(e.to_string().contains("1500-byte limit"));
        }
        // A body cut short by the server closing: an I/O error naming the truncation.
        let e = c.send(&Request::get(url.clone())).unwrap_err();
        assert!(matches!(e, HttpError::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("truncated"), "{e}");
        // A server that accepts and then says nothing: the read timeout (500 ms) fires, and the
        // error is transient.
        let t = Instant::now();
        let e = c.send(&Request::get(url)).unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e:?}");
        assert!(e.is_transient() && !e.before_request_sent());
        assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(2));
        h.join().unwrap();
    }

    #[test]
    fn retries_honour_retry_after_and_stop_on_other_4xx() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(10),
            deadline: Duration::from_secs(10),
        };
        let c = client(1024);
        let t = Instant::now();
        let r = c
            .send_retrying(&Request::get(url.clone()), &policy)
            .unwrap();
        assert_eq!(r.body(), b"ok");
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "waited for Retry-After"
        );
        let e = c.send_retrying(&Request::get(url), &policy).unwrap_err();
        assert_eq!(e.status(), Some(403), "{e}");
        assert_eq!(h.join().unwrap().len(), 4, "403 was not retried");
    }

    #[test]
    fn a_redirect_is_an_error_naming_its_location_never_an_empty_success() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/m.yaml?sig=s3cr3t\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 301 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let c = client(64);
        let e = c
            .send_retrying(&Request::get(url.clone()), &RetryPolicy::default())
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, HttpError::Redirect { code: 302, .. }), "{e:?}");
        assert!(
            text.contains("https://elsewhere.example/m.yaml?...") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert!(!e.is_transient());
        let mut file = Vec::new();
        let e = c.download(&Request::get(url), &mut file, 64).unwrap_err();
        assert!(e.to_string().contains("redirecting to /new"), "{e}");
        assert!(file.is_empty());
        assert_eq!(h.join().unwrap().len(), 2, "a redirect is not retried");
    }

    #[test]
    fn vault_standby_307_is_followed_with_the_same_method_body_and_token() {
        let (active, active_seen) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"data\":{}}".to_vec(),
        ]);
        let location = active.join("v1/pki/sign/node");
        let (standby, standby_seen) = serve(vec![format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()]);
        let req = Request::post(standby.join("v1/pki/sign/node"))
            .redirects(super::super::Redirects::Vault)
            .secret_header("X-Vault-Token", &Secret::new("s.node-token"))
            .body("application/json", b"{\"csr\":\"x\"}".to_vec());
        let r = client(64).send(&req).unwrap().error_for_status().unwrap();
        assert_eq!((r.status, r.body()), (200, &b"{\"data\":{}}"[..]));
        assert_eq!(r.peer, active.origin());
        for seen in [standby_seen, active_seen] {
            let seen = String::from_utf8(seen.join().unwrap().remove(0)).unwrap();
            assert!(seen.starts_with("POST /v1/pki/sign/node "), "{seen}");
            assert!(seen.contains("X-Vault-Token: s.node-token\r\n"), "{seen}");
            assert!(seen.ends_with("{\"csr\":\"x\"}"), "{seen}");
        }
    }

    #[test]
    fn downloads_refuse_a_redirect_to_plain_http_without_contacting_it() {
        let (other, _unused) = serve(vec![]);
        let (url, h) = serve(vec![format!(
            "HTTP/1.1 302 Found\r\nLocation: {}kubelet\r\nContent-Length: 0\r\n\r\n",
            other
        )
        .into_bytes()]);
        let mut file = Vec::new();
        let req = Request::get(url).redirects(super::super::Redirects::Download);
        let e = client(64).download(&req, &mut file, 64).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&format!("{other}kubelet")), "{text}");
        assert!(text.contains("https:// only"), "{text}");
        h.join().unwrap();
    }

    #[test]
    fn a_server_dying_mid_handshake_is_transient_and_nothing_was_sent() {
        // A Vault node killed during failover, or a balancer losing its backend: the
        // connection is accepted, then closed before the TLS handshake completes.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Reads the whole ClientHello (unread data would turn the close into a reset).
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while s.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        let url = Url::parse(&format!("https://127.0.0.1:{port}/v1/pki/sign/node")).unwrap();
        let e = client(64).send(&Request::post(url)).unwrap_err();
        h.join().unwrap();
        assert!(e.is_transient(), "{e:?}");
        assert!(e.before_request_sent(), "{e:?}");
        assert!(e.to_string().contains("during the handshake"), "{e}");
    }

    #[test]
    fn downloads_stream_only_successful_bodies() {
        let (url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nbinary".to_vec(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec(),
        ]);
        let c = client(16);
        let mut file = Vec::new();
        let r = c
            .download(&Request::get(url.clone()), &mut file, 100)
            .unwrap();
        assert_eq!((r.status, file.as_slice()), (200, &b"binary"[..]));
        let mut file = Vec::new();
        let e = c.download(&Request::get(url), &mut file, 100).unwrap_err();
        assert_eq!(e.status(), Some(404));
        assert!(file.is_empty(), "an error page never reaches the sink");
        h.join().unwrap();
    }

    #[test]
    fn refused_connection_is_transient_and_names_the_peer() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client(10)
            .send(&Request::get(
                Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            ))
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
        assert!(e.is_transient() && e.before_request_sent());
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[test]
    fn plain_http_goes_through_the_proxy_in_absolute_form() {
        let (proxy_url, h) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        ]);
        let settings = ProxySettings::from_lookup(|k| {
            (k == "http_proxy").then(|| format!("http://u:secretpw@{}", proxy_url.authority()))
        })
        .unwrap();
        let c = Client::builder().proxy(settings).build().unwrap();
        let r = c
            .send(&Request::get(
                Url::parse("http://origin.invalid:8080/x?y=1").unwrap(),
            ))
            .unwrap();
        assert_eq!(r.body(), b"ok");
        let seen = String::from_utf8(h.join().unwrap().remove(0)).unwrap();
        assert!(
            seen.starts_with("GET http://origin.invalid:8080/x?y=1 HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains("Proxy-Authorization: Basic "), "{seen}");
    }

    #[test]
    fn requests_and_responses_do_not_show_secrets() {
        let req = Request::post(Url::parse("https://v/x?X-Amz-Signature=presigned").unwrap())
            .secret_header("X-Vault-Token", &Secret::new("s.topsecret"))
            .body(
                "application/json",
                b"{\"secret_id\":\"abc-secret\"}".to_vec(),
            );
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("abc-secret"),
            "{shown}"
        );
        assert_eq!(shown, "POST https://v:443/x");
    }
}
