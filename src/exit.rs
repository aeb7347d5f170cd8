//! Exit codes. Scripts and systemd units rely on these; they do not change between releases.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | internal error (a bug: please report it with the log) |
//! | 2    | usage error: unknown flag, missing argument |
//! | 3    | needs an operator: configuration, key or permission problem that retrying cannot fix |
//! | 4    | retry later: a peer (TPM, Vault, AWS) is unreachable, throttling or failing transiently |

use crate::key::KeyError;

/// What kind of failure ended the command; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Needs an operator to change something (exit 3).
    Operator,
    /// May succeed later without any change (exit 4).
    Transient,
    /// Unexpected (exit 1).
    Internal,
}

impl Class {
    /// The process exit code of this class.
    pub fn code(self) -> i32 {
        match self {
            Class::Internal => INTERNAL,
            Class::Operator => OPERATOR,
            Class::Transient => RETRY_LATER,
        }
    }
}

pub const SUCCESS: i32 = 0;
pub const INTERNAL: i32 = 1;
pub const USAGE: i32 = 2;
pub const OPERATOR: i32 = 3;
pub const RETRY_LATER: i32 = 4;

/// Classifies an error by the first typed error in its chain.
pub fn classify(err: &anyhow::Error) -> Class {
    for cause in err.chain() {
        if let Some(k) = cause.downcast_ref::<KeyError>() {
            return if k.is_transient() {
                Class::Transient
            } else {
                Class::Operator
            };
        }
        if let Some(v) = cause.downcast_ref::<crate::vault::VaultError>() {
            return transient_or_operator(v.is_transient());
        }
        if let Some(h) = cause.downcast_ref::<crate::http::HttpError>() {
            return transient_or_operator(h.is_transient());
        }
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.class;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return match io.kind() {
                NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists => {
                    Class::Operator
                }
                TimedOut | ConnectionRefused | ConnectionReset | Interrupted => Class::Transient,
                _ => Class::Internal,
            };
        }
    }
    Class::Operator
}

fn transient_or_operator(transient: bool) -> Class {
    if transient {
        Class::Transient
    } else {
        Class::Operator
    }
}

/// An error with an explicit class, for orchestration code that knows better than the cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Classified {
    pub class: Class,
    pub message: String,
}

/// Shorthand: an operator-class error with a message.
pub fn operator(message: impl Into<String>) -> anyhow::Error {
    Classified {
        class: Class::Operator,
        message: message.into(),
    }
    .into()
}
