//! AWS: the SigV4 signers (HMAC for EKS and STS, X.509 for IAM Roles Anywhere), the EKS bearer
//! token, credentials and where they are kept (cache, shared credentials file, IMDSv2 emulation).
//!
//! Everything in this module is pure or local-file logic except [`rolesanywhere`] (the
//! CreateSession exchange) and [`commands`] (the Roles Anywhere subcommands); the HTTP exchanges
//! go through the project's one HTTP client:
//!
//! ```text
//! credential-process / update / serve:
//!   sigv4x509::resolve_region, session_body, sign_create_session(&input, key)
//!     -> HTTP POST signed.url, signed.headers, signed.body
//!     -> credentials::handle_create_session_answer(status, x-amzn-ErrorType, Date, body, now)
//!   wrapped in cache::CredentialCache::get_or_fetch(cache_key(..), now, || ..)
//!   -> credentials::render_credential_process | credfile::write | imds::Imds::handle
//!   refresh::next_delay schedules update/serve.
//! init: eks::describe_cluster_request -> HTTP GET -> eks::parse_describe_cluster
//! token: sources::{from_environment, from_credentials_file, config_profile,
//!   hybridboot_process_args | run_credential_process}
//!   -> sts_token::eks_token -> sts_token::render_exec_credential
//! ```

pub mod cache;
pub mod commands;
pub mod credentials;
pub mod credfile;
pub mod ecr;
pub mod eks;
pub mod imds;
pub mod refresh;
pub mod rolesanywhere;
pub mod sigv4;
pub mod sigv4x509;
pub mod sources;
pub mod sts_token;
/// Time formats (moved to the crate root; re-exported for existing callers).
pub use crate::time;
pub mod token_cmd;

pub use credentials::{CreateSessionError, Credentials};
