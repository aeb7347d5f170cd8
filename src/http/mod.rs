//! The one HTTP client of hybridboot: blocking HTTP/1.1 over rustls (ring provider, webpki
//! verification), used by every remote call (Vault, IAM Roles Anywhere, EKS, STS, downloads).
//!
//! Why our own small client rather than `ureq`/`minreq`: the TLS client certificate's private
//! key lives in a TPM or HSM, so the handshake must sign through [`NodeKey`]; `minreq` cannot take
//! a custom CA or client certificate, and `ureq` 3 only takes an in-memory private key unless one
//! writes a connector against its unversioned transport API. A request here is one connection
//! (`Connection: close`), which keeps the state machine small: head parsing by `httparse`,
//! `Content-Length`, chunked, or read-to-close bodies, a size cap, and deadlines. Redirects are
//! followed only as each request allows ([`Redirects`]): downloads to https without credentials,
//! Vault's standby 307 as Vault's own client does; any other 3xx is an error naming its Location.
//!
//! Trust roots: by default the Mozilla roots compiled in from `webpki-roots`, not the system
//! bundle. The binary is static and lands on images (Yocto, minimal rootfs) that may ship no CA
//! bundle or keep it at another path; compiled-in roots behave the same everywhere, and the
//! private CAs that matter (Vault's) are always configured explicitly with a bundle
//! ([`ClientBuilder::ca_bundle_file`]), which then replaces the defaults.
//!
//! Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (lowercase first; `NO_PROXY` takes
//! hosts, suffixes, IPs, `host:port` and CIDR blocks): `CONNECT` tunnels
//! for https, absolute-form requests for http.
//!
//! One file per concern: [`url`](Url) parsing, proxy selection, TLS (roots and the key-backed
//! client certificate), connections, response framing, dates, and the client that ties them.

mod body;
mod client;
mod connect;
mod date;
mod error;
mod message;
mod proxy;
mod redirect;
mod tls;
mod url;

pub use body::{parse_response_bytes, AcceptHead, ParsedResponse};
pub use client::{Client, ClientBuilder, Timeouts};
pub use date::{parse_http_date, parse_retry_after};
pub use error::HttpError;
pub use message::{Redirects, MAX_DOWNLOAD_HOPS};
pub use message::{Request, Response};
pub use proxy::{Proxy, ProxySettings};
pub use tls::ClientIdentity;
pub use url::{Scheme, Url};
