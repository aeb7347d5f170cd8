//! The registry side of a pull, over the project's one HTTP client and retry policy: manifest and
//! blob GETs with Basic credentials or the Bearer token flow the registry's challenge asks for,
//! redirects (ECR sends layers to S3; the Authorization header never leaves the registry's
//! origin), and a digest check of every document and blob before anything is kept.

use std::time::Duration;

use super::{
    parse_challenge, parse_manifest, select_platform, sha256_digest, Challenge, Descriptor,
    ManifestDoc, Platform, Reference, MANIFEST_ACCEPT,
};
use crate::aws::ecr::{RegistryCredentials, PULL_PERMISSIONS};
use crate::error::{Class, Classify};
use crate::http::{Client, HttpError, Request, Response, Url};
use crate::retry::{self, RetryPolicy};
use crate::secret::Secret;

/// Largest manifest accepted.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Largest image (all blobs together) accepted: sandbox images are a few hundred KiB.
pub const MAX_IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// Where and how to reach the registry of an image.
#[derive(Debug, Clone)]
pub struct RegistryTarget {
    /// Base URL serving `/v2/` (`https://<registry host>`, or the configured endpoint).
    pub base: Url,
    /// The registry as the image reference names it (for messages).
    pub name: String,
    /// Credentials (the ECR token), if any: without them the pull is anonymous.
    pub credentials: Option<RegistryCredentials>,
    /// Whether this is an ECR registry (errors then name the IAM permissions to grant).
    pub ecr: bool,
}

/// Why a pull failed. Messages name the registry and never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// 401/403: the credentials were refused.
    #[error("registry {registry} refused {what} (HTTP {status}){}", denied_hint(*.ecr))]
    Denied {
        /// The registry (its host, or the endpoint serving it).
        registry: String,
        /// What was asked for (manifest, blob, token).
        what: String,
        /// The HTTP status.
        status: u16,
        /// Whether the credentials were an ECR token (the hint names the IAM permissions).
        ecr: bool,
    },
    /// 404.
    #[error("registry {registry} has no {what} (HTTP 404): check the image reference and, for a mirror, that it holds the image")]
    NotFound {
        /// The registry (its host, or the endpoint serving it).
        registry: String,
        /// What was asked for (manifest, blob, token).
        what: String,
    },
    /// Transport failures and 429/5xx after the retries, or other HTTP statuses.
    #[error("registry {registry}: {what}: {source}")]
    Http {
        /// The registry (its host, or the endpoint serving it).
        registry: String,
        /// What was asked for (manifest, blob, token).
        what: String,
        /// The cause.
        #[source]
        source: Box<HttpError>,
    },
    /// Content that does not match its digest or size: refused, nothing is imported.
    #[error("registry {registry} sent {what} whose {detail}: refused, nothing was imported (a corrupted mirror or a tampering proxy)")]
    Mismatch {
        /// The registry (its host, or the endpoint serving it).
        registry: String,
        /// What was asked for (manifest, blob, token).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A document we cannot use.
    #[error("registry {registry}: {what}: {detail}")]
    Unusable {
        /// The registry (its host, or the endpoint serving it).
        registry: String,
        /// What was asked for (manifest, blob, token).
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The index has no manifest for this node.
    #[error("image {image} has no manifest for {platform} (it has: {available})")]
    NoPlatform {
        /// The image reference.
        image: String,
        /// This node's platform.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
}

fn denied_hint(ecr: bool) -> String {
    if ecr {
        format!(": the ECR token was not accepted; the node role needs {PULL_PERMISSIONS} on this registry")
    } else {
        ": check the registry's credentials".into()
    }
}

impl Classify for PullError {
    /// An unreachable or failing registry may come back; a refusal, a digest mismatch or an
    /// unusable document needs an operator.
    fn class(&self) -> Class {
        match self {
            PullError::Http { source, .. } => source.class(),
            _ => Class::Operator,
        }
    }
}

/// Whether following `from` -> `to` would leave TLS (an https registry never sends a layer over
/// plain http; a registry served over http, as `ecrRegistryEndpoint` may say, can).
fn is_downgrade(from: &Url, to: &Url) -> bool {
    from.scheme() == crate::http::Scheme::Https && to.scheme() == crate::http::Scheme::Http
}

/// An image fetched and verified: the platform manifest and every blob it names.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The manifest (digest verified).
    pub manifest: super::archive::Blob,
    /// Its media type.
    pub media_type: String,
    /// Config and layers (digests and sizes verified).
    pub blobs: Vec<super::archive::Blob>,
    /// Requests sent (retries and redirects included).
    pub requests: u32,
}

/// A session with one registry.
pub struct Registry<'a> {
    client: &'a Client,
    target: &'a RegistryTarget,
    policy: RetryPolicy,
    authorization: Option<Secret>,
    bearer_tried: bool,
    requests: u32,
}

impl<'a> Registry<'a> {
    /// A session; credentials (if any) are sent from the first request on, as Basic.
    pub fn new(client: &'a Client, target: &'a RegistryTarget, policy: RetryPolicy) -> Self {
        Registry {
            client,
            target,
            policy,
            authorization: target.credentials.as_ref().map(|c| c.basic.clone()),
            bearer_tried: false,
            requests: 0,
        }
    }

    fn http_error(&self, what: &str, source: HttpError) -> PullError {
        PullError::Http {
            registry: self.target.name.clone(),
            what: what.to_string(),
            source: Box::new(source),
        }
    }

    /// One attempt-with-retries of `url`: transient failures (connection, timeouts, 429, 5xx)
    /// are retried under the policy; any other answer is returned whatever its status.
    fn send(
        &mut self,
        url: &Url,
        accept: Option<&str>,
        auth: bool,
        what: &str,
    ) -> Result<Response, PullError> {
        let mut req = Request::get(url.clone());
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if auth {
            if let Some(a) = &self.authorization {
                req = req.secret_header("Authorization", a);
            }
        }
        let client = self.client;
        let requests = &mut self.requests;
        retry::run(&self.policy, &retry::RealClock, |attempt| {
            if attempt > 0 {
                log::info!("retrying {req:?} (attempt {})", attempt + 1);
            }
            *requests += 1;
            let resp = client.send(&req)?;
            if resp.status == 429 || resp.status >= 500 {
                return Err(resp
                    .error_for_status()
                    .err()
                    .unwrap_or(HttpError::Protocol {
                        peer: url.origin(),
                        detail: "unexpected status".into(),
                    }));
            }
            Ok(resp)
        })
        .map_err(|e| self.http_error(what, e))
    }

    /// GET `path` under the registry's base: follows redirects (credentials only to the
    /// registry's own origin) and answers the registry's auth challenge once.
    fn get(&mut self, path: &str, accept: Option<&str>, what: &str) -> Result<Response, PullError> {
        let base_origin = self.target.base.origin();
        let mut url = self.target.base.join(path);
        let mut redirects = 0;
        loop {
            let same_origin = url.origin() == base_origin;
            let resp = self.send(&url, accept, same_origin, what)?;
            match resp.status {
                200..=299 => return Ok(resp),
                301 | 302 | 303 | 307 | 308 => {
                    redirects += 1;
                    let location = resp.header("location").unwrap_or("");
                    if redirects > MAX_REDIRECTS || location.is_empty() {
                        return Err(PullError::Unusable {
                            registry: self.target.name.clone(),
                            what: what.into(),
                            detail: "too many redirects, or a redirect without Location".into(),
                        });
                    }
                    let next =
                        if location.starts_with("http://") || location.starts_with("https://") {
                            location.to_string()
                        } else if location.starts_with('/') {
                            format!("{}{location}", url.origin())
                        } else {
                            return Err(PullError::Unusable {
                                registry: self.target.name.clone(),
                                what: what.into(),
                                detail: "a relative redirect we do not follow".into(),
                            });
                        };
                    let next = Url::parse(&next).map_err(|e| self.http_error(what, e))?;
                    if is_downgrade(&url, &next) {
                        return Err(PullError::Unusable {
                            registry: self.target.name.clone(),
                            what: what.into(),
                            detail: format!(
                                "redirected from https down to plain http ({}): refused",
                                next.origin()
                            ),
                        });
                    }
                    url = next;
                    // Redirects go to storage (S3): log without the presigned query.
                    log::debug!("{what}: redirected to {}", url.origin());
                }
                401 if same_origin => {
                    let challenge = resp.header("www-authenticate").and_then(parse_challenge);
                    if !self.answer_challenge(challenge, what)? {
                        return Err(self.denied(what, 401));
                    }
                }
                401 | 403 => return Err(self.denied(what, resp.status)),
                404 => {
                    return Err(PullError::NotFound {
                        registry: self.target.name.clone(),
                        what: what.into(),
                    })
                }
                _ => {
                    let e = resp
                        .error_for_status()
                        .err()
                        .unwrap_or(HttpError::Protocol {
                            peer: url.origin(),
                            detail: "unexpected status".into(),
                        });
                    return Err(self.http_error(what, e));
                }
            }
        }
    }

    fn denied(&self, what: &str, status: u16) -> PullError {
        PullError::Denied {
            registry: self.target.name.clone(),
            what: what.into(),
            status,
            ecr: self.target.ecr,
        }
    }

    /// Sets the authorization the challenge asks for; `false` when there is nothing new to try.
    fn answer_challenge(
        &mut self,
        challenge: Option<Challenge>,
        what: &str,
    ) -> Result<bool, PullError> {
        match challenge {
            Some(Challenge::Basic) => match (&self.authorization, &self.target.credentials) {
                (None, Some(c)) => {
                    self.authorization = Some(c.basic.clone());
                    Ok(true)
                }
                _ => Ok(false),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) if !self.bearer_tried => {
                self.bearer_tried = true;
                let token =
                    self.bearer_token(&realm, service.as_deref(), scope.as_deref(), what)?;
                self.authorization = Some(Secret::new(format!("Bearer {}", token.expose())));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The Bearer flow: GET realm?service=..&scope=.. (with Basic credentials when we have
    /// them, anonymously otherwise) -> `{"token": ..}` or `{"access_token": ..}`.
    fn bearer_token(
        &mut self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        what: &str,
    ) -> Result<Secret, PullError> {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!(
                "service={}",
                utf8_percent_encode(s, NON_ALPHANUMERIC)
            ));
        }
        if let Some(s) = scope {
            query.push(format!(
                "scope={}",
                utf8_percent_encode(s, NON_ALPHANUMERIC)
            ));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url_text = if query.is_empty() {
            realm.to_string()
        } else {
            format!("{realm}{sep}{}", query.join("&"))
        };
        let url = Url::parse(&url_text).map_err(|e| self.http_error("the token endpoint", e))?;
        let mut req = Request::get(url);
        if let Some(c) = &self.target.credentials {
            req = req.secret_header("Authorization", &c.basic);
        }
        let client = self.client;
        let requests = &mut self.requests;
        let resp = retry::run(&self.policy, &retry::RealClock, |_| {
            *requests += 1;
            client.send(&req)?.error_for_status()
        })
        .map_err(|e| match e.status() {
            Some(401 | 403) => {
                self.denied(&format!("a token for {what}"), e.status().unwrap_or(401))
            }
            _ => self.http_error("the token endpoint", e),
        })?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let answer: TokenAnswer = resp
            .json()
            .map_err(|e| self.http_error("the token endpoint", e))?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| PullError::Unusable {
                registry: self.target.name.clone(),
                what: "the token endpoint's answer".into(),
                detail: "no token".into(),
            })
    }

    /// A manifest document by tag or digest; verified against `expected` when given, and against
    /// the registry's `Docker-Content-Digest` when it sends one.
    fn manifest(
        &mut self,
        repository: &str,
        reference: &str,
        expected: Option<&str>,
    ) -> Result<(Option<String>, Vec<u8>, String), PullError> {
        let what = format!("manifest {repository}:{reference}");
        let resp = self.get(
            &format!("v2/{repository}/manifests/{reference}"),
            Some(MANIFEST_ACCEPT),
            &what,
        )?;
        let body = resp.body().to_vec();
        if body.len() > MAX_MANIFEST {
            return Err(PullError::Unusable {
                registry: self.target.name.clone(),
                what,
                detail: "larger than 4 MiB".into(),
            });
        }
        let actual = sha256_digest(&body);
        let announced = resp.header("docker-content-digest").map(str::to_string);
        for want in expected.into_iter().chain(announced.as_deref()) {
            if want != actual {
                return Err(PullError::Mismatch {
                    registry: self.target.name.clone(),
                    what,
                    detail: format!("digest is {actual}, not {want}"),
                });
            }
        }
        let content_type = resp.header("content-type").map(str::to_string);
        Ok((content_type, body, actual))
    }

    /// A blob, checked against its descriptor's digest and size.
    fn blob(&mut self, repository: &str, d: &Descriptor, what: &str) -> Result<Vec<u8>, PullError> {
        let what = format!("{what} {}", d.digest);
        let resp = self.get(&format!("v2/{repository}/blobs/{}", d.digest), None, &what)?;
        let body = resp.body().to_vec();
        let actual = sha256_digest(&body);
        if actual != d.digest {
            return Err(PullError::Mismatch {
                registry: self.target.name.clone(),
                what,
                detail: format!("digest is {actual}"),
            });
        }
        if body.len() as u64 != d.size {
            return Err(PullError::Mismatch {
                registry: self.target.name.clone(),
                what,
                detail: format!("size is {} bytes, not {}", body.len(), d.size),
            });
        }
        Ok(body)
    }
}

/// Pulls `image` for `platform`: manifest (index -> the platform's manifest), config and layers,
/// every digest verified. Nothing is returned unless everything matched.
pub fn pull(
    client: &Client,
    target: &RegistryTarget,
    image: &Reference,
    platform: &Platform,
    policy: RetryPolicy,
) -> Result<PulledImage, PullError> {
    let mut reg = Registry::new(client, target, policy);
    let repo = image.repository.as_str();
    let (content_type, body, digest) =
        reg.manifest(repo, image.manifest_reference(), image.digest.as_deref())?;
    let unusable = |what: &str, detail: String| PullError::Unusable {
        registry: target.name.clone(),
        what: what.into(),
        detail,
    };
    let (media_type, body, digest, doc) = match parse_manifest(content_type.as_deref(), &body)
        .map_err(|e| unusable(&format!("manifest of {}", image.name), e))?
    {
        ManifestDoc::Index(entries) => {
            let chosen =
                select_platform(&entries, platform).ok_or_else(|| PullError::NoPlatform {
                    image: image.name.clone(),
                    platform: platform.to_string(),
                    available: entries
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            log::debug!("{}: {} manifest {}", image.name, platform, chosen.digest);
            let (ct, body, digest) = reg.manifest(repo, &chosen.digest, Some(&chosen.digest))?;
            if body.len() as u64 != chosen.size {
                return Err(PullError::Mismatch {
                    registry: target.name.clone(),
                    what: format!("manifest {}", chosen.digest),
                    detail: format!("size is {} bytes, not {}", body.len(), chosen.size),
                });
            }
            let doc = parse_manifest(ct.as_deref().or(Some(chosen.media_type.as_str())), &body)
                .map_err(|e| unusable(&format!("manifest {}", chosen.digest), e))?;
            let mt = match &doc {
                ManifestDoc::Image { media_type, .. } => media_type.clone(),
                ManifestDoc::Index(_) => {
                    return Err(unusable(
                        &format!("manifest {}", chosen.digest),
                        "a nested index".into(),
                    ))
                }
            };
            (mt, body, digest, doc)
        }
        doc @ ManifestDoc::Image { .. } => {
            let mt = match &doc {
                ManifestDoc::Image { media_type, .. } => media_type.clone(),
                ManifestDoc::Index(_) => unreachable!("matched Image"),
            };
            (mt, body, digest, doc)
        }
    };
    let ManifestDoc::Image { config, layers, .. } = doc else {
        return Err(unusable("manifest", "not an image manifest".into()));
    };
    let total: u64 = std::iter::once(&config)
        .chain(&layers)
        .map(|d| d.size)
        .fold(0, u64::saturating_add);
    if total > MAX_IMAGE_BYTES {
        return Err(unusable(
            &image.name,
            format!(
                "{total} bytes is more than a sandbox image should be (limit {MAX_IMAGE_BYTES})"
            ),
        ));
    }
    let mut blobs = vec![super::archive::Blob {
        digest: config.digest.clone(),
        data: reg.blob(repo, &config, "config")?,
    }];
    for l in &layers {
        blobs.push(super::archive::Blob {
            digest: l.digest.clone(),
            data: reg.blob(repo, l, "layer")?,
        });
    }
    Ok(PulledImage {
        manifest: super::archive::Blob { digest, data: body },
        media_type,
        blobs,
        requests: reg.requests,
    })
}

/// An HTTP client for registries: the proxy from the environment, the CA bundle if given, and
/// room for layer-sized bodies.
pub fn client(ca_bundle: Option<&std::path::Path>) -> Result<Client, HttpError> {
    let mut b = Client::builder()
        .max_response_bytes(MAX_IMAGE_BYTES as usize)
        .timeouts(crate::http::Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            total: Duration::from_secs(300),
        });
    if let Some(ca) = ca_bundle {
        b = b.ca_bundle_file(ca)?;
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ProxySettings;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    /// Serves `count` connections on 127.0.0.1, answering each request head with `answer`;
    /// returns the port and a handle giving the request heads seen.
    fn server(
        count: usize,
        answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            // Never hang a failing test: stop waiting for connections after 20 s.
            l.set_nonblocking(true).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            for _ in 0..count {
                let mut s = loop {
                    match l.accept() {
                        Ok((s, _)) => break s,
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(10))
                        }
                        Err(_) => return seen,
                    }
                };
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).unwrap();
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&b[..n]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                s.write_all(&answer(&text)).unwrap();
                seen.push(text);
            }
            seen
        });
        (port, h)
    }

    fn ok(content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn a_redirect_from_https_to_plain_http_is_a_downgrade() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(is_downgrade(
            &u("https://r.example/v2/x"),
            &u("http://s3.example/l")
        ));
        assert!(!is_downgrade(
            &u("https://r.example/v2/x"),
            &u("https://s3.example/l")
        ));
        assert!(!is_downgrade(
            &u("http://127.0.0.1:5000/v2/x"),
            &u("http://127.0.0.1:5001/l")
        ));
    }

    #[test]
    fn bearer_challenge_and_cross_origin_redirects() {
        let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
        let layer = b"layer-bytes".to_vec();
        let (cd, ld) = (sha256_digest(&config), sha256_digest(&layer));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"c","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"l","digest":"{ld}","size":{}}}]}}"#,
            super::super::OCI_MANIFEST,
            config.len(),
            layer.len()
        );
        // B: the token endpoint and the "storage" a layer is redirected to.
        let layer_b = layer.clone();
        let (pb, hb) = server(2, move |req| {
            if req.starts_with("GET /token?service=reg&scope=repository%3Aeks%2Fpause%3Apull ") {
                ok("application/json", br#"{"token":"bearer-tkn"}"#)
            } else if req.starts_with("GET /layer?X-Amz-Signature=presigned ") {
                ok("application/octet-stream", &layer_b)
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
            }
        });
        let (m, c) = (manifest.clone(), config.clone());
        let (pa, ha) = server(4, move |req| {
            let authed = req.contains("Authorization: Bearer bearer-tkn\r\n");
            if !authed {
                return format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{pb}/token\",service=\"reg\",scope=\"repository:eks/pause:pull\"\r\nContent-Length: 0\r\n\r\n").into_bytes();
            }
            if req.starts_with("GET /v2/eks/pause/manifests/3.5 ") {
                ok(super::super::OCI_MANIFEST, m.as_bytes())
            } else if req.starts_with(&format!("GET /v2/eks/pause/blobs/{cd} ")) {
                ok("application/octet-stream", &c)
            } else {
                format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{pb}/layer?X-Amz-Signature=presigned\r\nContent-Length: 0\r\n\r\n").into_bytes()
            }
        });
        let client = Client::builder()
            .proxy(ProxySettings::none())
            .build()
            .unwrap();
        let target = RegistryTarget {
            base: Url::parse(&format!("http://127.0.0.1:{pa}")).unwrap(),
            name: "registry.example".into(),
            credentials: None,
            ecr: false,
        };
        let image = Reference::parse("registry.example/eks/pause:3.5").unwrap();
        let pulled = pull(
            &client,
            &target,
            &image,
            &super::super::node_platform(),
            RetryPolicy::once(),
        )
        .unwrap();
        assert_eq!(pulled.manifest.digest, sha256_digest(manifest.as_bytes()));
        assert_eq!(pulled.blobs[0].data, config);
        assert_eq!(pulled.blobs[1].data, layer);
        assert_eq!(pulled.requests, 6);
        let a = ha.join().unwrap();
        let b = hb.join().unwrap();
        assert!(!a[0].contains("Authorization"), "anonymous first: {}", a[0]);
        // The registry's token never goes to the storage the layer was redirected to.
        assert!(
            b[1].starts_with("GET /layer") && !b[1].contains("Authorization"),
            "{}",
            b[1]
        );
    }

    #[test]
    fn a_tampered_blob_and_a_second_refusal_are_errors_of_their_class() {
        let config = b"{}".to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{}","size":2}},"layers":[]}}"#,
            sha256_digest(&config)
        );
        let (pa, ha) = server(2, move |req| {
            if !req.contains("Authorization: Basic ") {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n".to_vec()
            } else if req.contains("/manifests/") {
                ok(super::super::OCI_MANIFEST, manifest.as_bytes())
            } else {
                ok("application/octet-stream", b"[]")
            }
        });
        let client = Client::builder()
            .proxy(ProxySettings::none())
            .build()
            .unwrap();
        let target = RegistryTarget {
            base: Url::parse(&format!("http://127.0.0.1:{pa}")).unwrap(),
            name: "602401143452.dkr.ecr.us-west-2.amazonaws.com".into(),
            credentials: Some(RegistryCredentials::new("AWS", Secret::new("pw"))),
            ecr: true,
        };
        let image =
            Reference::parse("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5").unwrap();
        // Basic is sent from the start: the 401 page is never needed.
        let e = pull(
            &client,
            &target,
            &image,
            &super::super::node_platform(),
            RetryPolicy::once(),
        )
        .unwrap_err();
        assert!(matches!(e, PullError::Mismatch { .. }), "{e}");
        assert!(!e.is_transient());
        assert!(
            e.to_string().contains("refused, nothing was imported"),
            "{e}"
        );
        let seen = ha.join().unwrap();
        assert_eq!(seen.len(), 2, "manifest and config only");
        let (pa, ha) = server(1, |_| {
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\n\r\n".to_vec()
        });
        let target = RegistryTarget {
            base: Url::parse(&format!("http://127.0.0.1:{pa}")).unwrap(),
            ..target
        };
        let e = pull(
            &client,
            &target,
            &image,
            &super::super::node_platform(),
            RetryPolicy::once(),
        )
        .unwrap_err();
        ha.join().unwrap();
        let text = e.to_string();
        assert!(matches!(e, PullError::Denied { status: 401, .. }), "{text}");
        assert!(
            text.contains("ecr:BatchGetImage") && !text.contains("pw"),
            "{text}"
        );
    }

    #[test]
    fn server_errors_are_retried_then_transient() {
        let (pa, ha) = server(3, |_| {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec()
        });
        let client = Client::builder()
            .proxy(ProxySettings::none())
            .build()
            .unwrap();
        let target = RegistryTarget {
            base: Url::parse(&format!("http://127.0.0.1:{pa}")).unwrap(),
            name: "registry.example".into(),
            credentials: None,
            ecr: false,
        };
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            deadline: Duration::from_secs(10),
        };
        let image = Reference::parse("registry.example/eks/pause:3.5").unwrap();
        let e = pull(
            &client,
            &target,
            &image,
            &super::super::node_platform(),
            policy,
        )
        .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("HTTP 503"), "{e}");
        assert_eq!(ha.join().unwrap().len(), 3, "every attempt of the policy");
    }
}
