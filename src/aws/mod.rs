//! AWS: the SigV4 signers (HMAC for EKS and STS, X.509 for IAM Roles Anywhere), the EKS bearer
//! token, credentials and where they are kept (cache, shared credentials file, IMDSv2 emulation).
//!
//! Everything in this module is pure or local-file logic except [`rolesanywhere`] (the
//! CreateSession exchange), [`session`] (a session from [`session::RolesAnywhereSettings`]:
//! files, key, cache), and the loops of [`update`] and [`serve`]; the HTTP exchanges go through
//! the project's one HTTP client:
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

#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod cache;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod credentials;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod credfile;
pub mod ecr;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod eks;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod imds;
pub mod inspect;
pub mod refresh;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod rolesanywhere;
pub mod serve;
pub mod session;
pub mod sigv4;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod sigv4x509;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod sources;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod sts_token;
pub mod update;
/// Time formats (moved to the crate root; re-exported for existing callers).
pub use crate::time;

pub use credentials::{CreateSessionError, Credentials};
