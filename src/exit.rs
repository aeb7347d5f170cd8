//! Exit codes. Scripts and systemd units rely on these; they do not change between releases.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | internal error (a bug: please report it with the log) |
//! | 2    | usage error: unknown flag, missing argument |
//! | 3    | needs an operator: configuration, key or permission problem that retrying cannot fix |
//! | 4    | retry later: a peer (TPM, Vault, AWS) is unreachable, throttling or failing transiently |
//!
//! A failure's class comes from the error itself ([`crate::error`]); [`code`] is the one map
//! from classes to codes. This module knows no domain type.

use crate::error::Class;

/// Success.
pub const SUCCESS: i32 = 0;
/// An internal error: a bug ([`Class::Bug`]).
pub const INTERNAL: i32 = 1;
/// A usage error: unknown flag, missing argument (the command line's parser says which).
pub const USAGE: i32 = 2;
/// Needs an operator ([`Class::Operator`]).
pub const OPERATOR: i32 = 3;
/// Retry later ([`Class::Transient`]).
pub const RETRY_LATER: i32 = 4;

/// The exit code of a failure of class `class`.
pub fn code(class: Class) -> i32 {
    match class {
        Class::Bug => INTERNAL,
        Class::Operator => OPERATOR,
        Class::Transient => RETRY_LATER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_documented_code() {
        assert_eq!(code(Class::Operator), 3);
        assert_eq!(code(Class::Transient), 4);
        assert_eq!(code(Class::Bug), 1);
    }
}
