//! AWS: the SigV4 signers (HMAC for EKS and STS, X.509 for IAM Roles Anywhere), the EKS bearer
//! token, credentials and where they are kept (cache, shared credentials file, IMDSv2 emulation).
//!
//! Everything in this module is pure or local-file logic; the HTTP exchanges are wired by the
//! callers through the project's one HTTP client:
//!
//! ```text
//! sigv4x509::sign_create_session --HTTP--> credentials::parse_create_session_{response,error}
//!     -> cache (get_or_fetch) -> credential_process output | credfile | imds
//! sigv4::sign_request (DescribeCluster)        sts_token::eks_token (kubectl exec plugin)
//! ```

pub mod cache;
pub mod credentials;
pub mod credfile;
pub mod eks;
pub mod imds;
pub mod refresh;
pub mod sigv4;
pub mod sigv4x509;
pub mod sources;
pub mod sts_token;
pub mod time;

pub use credentials::{CreateSessionError, Credentials};
