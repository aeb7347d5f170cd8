//! The error-class contract: every failure says, where it is made, who can fix it.
//!
//! - [`Class::Operator`]: a person must change something (configuration, key, permission);
//!   running again unchanged fails the same way.
//! - [`Class::Transient`]: a peer (TPM, Vault, AWS, the mirror) is unreachable, sealed,
//!   throttling or failing; running again later may succeed without any change.
//! - [`Class::Bug`]: nothing foresaw this failure; the log is worth a bug report.
//!
//! Each domain error enum implements [`Classify`] next to its `retry::Retryable`, and whether
//! the retry policy tries again ([`Classify::is_transient`]) is derived from that one answer,
//! so retrying and the exit code cannot disagree. When a typed error leaves its module as an
//! `anyhow::Error`, it goes through [`Classified`] ([`ResultExt::classed`] or
//! [`Classify::classed`]), which carries the class through any context added on the way up;
//! the error keeps its type in the chain (callers may still downcast to it).
//! [`class_of`] reads the class back from the outermost [`Classified`] in the chain. An error
//! nobody classified is an I/O error (classed by its kind) or a bug: never silently "operator".
//!
//! This module is a leaf: it knows no domain type. `crate::exit` maps classes to exit codes.

use std::error::Error as StdError;
use std::fmt;

/// Who can fix a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Needs an operator to change something.
    Operator,
    /// May succeed later without any change.
    Transient,
    /// Unexpected: an internal error.
    Bug,
}

impl Class {
    /// `operator`, `transient` or `bug`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Operator => "operator",
            Class::Transient => "transient",
            Class::Bug => "bug",
        }
    }
}

/// An error that knows its class. Implemented by every domain error enum.
pub trait Classify {
    /// Who can fix this failure.
    fn class(&self) -> Class;

    /// Whether the same operation may succeed later: derived from [`Classify::class`] (do not
    /// override), which is what the retry policy asks.
    fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }

    /// This error as an `anyhow::Error` that carries its class.
    fn classed(self) -> anyhow::Error
    where
        Self: StdError + Send + Sync + Sized + 'static,
    {
        let class = self.class();
        Classified::new(class, anyhow::Error::new(self)).into()
    }
}

/// An error with its class, as it travels through `anyhow`. Shows exactly its inner error's
/// message; the inner error follows it in the chain, with its type.
#[derive(Debug)]
pub struct Classified {
    class: Class,
    /// Held as an `anyhow::Error` so that its outermost error keeps its type in the chain
    /// (`anyhow::Error::as_ref` is the error itself, with its own `source`).
    inner: anyhow::Error,
}

impl Classified {
    /// `inner` with class `class`.
    pub fn new(class: Class, inner: impl Into<anyhow::Error>) -> Self {
        Classified {
            class,
            inner: inner.into(),
        }
    }

    /// The class this error carries.
    pub fn class(&self) -> Class {
        self.class
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl StdError for Classified {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.inner.as_ref())
    }
}

/// A plain message (an error made where the class is known, with no typed cause).
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

/// A message error of class `class`.
pub fn message(class: Class, text: impl Into<String>) -> anyhow::Error {
    Classified::new(class, anyhow::Error::new(Message(text.into()))).into()
}

/// An operator-class message: the operator must change what the message names.
pub fn operator(text: impl Into<String>) -> anyhow::Error {
    message(Class::Operator, text)
}

/// A transient message: running again later may succeed.
pub fn transient(text: impl Into<String>) -> anyhow::Error {
    message(Class::Transient, text)
}

/// `err` (with its whole chain) with another class, for orchestration that knows better than
/// the cause (a deadline that passed, a failure that only a changed configuration fixes).
pub fn reclass(class: Class, err: anyhow::Error) -> anyhow::Error {
    Classified::new(class, err).into()
}

/// `.classed()` on results: the typed error becomes an `anyhow::Error` that carries its class.
pub trait ResultExt<T> {
    /// See the module documentation.
    fn classed(self) -> anyhow::Result<T>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: Classify + StdError + Send + Sync + 'static,
{
    fn classed(self) -> anyhow::Result<T> {
        self.map_err(Classify::classed)
    }
}

/// `.with_class(class)` on results whose error has no class of its own (an I/O error where
/// the operator is the one to act, an `anyhow::Error` orchestration knows better about).
pub trait WithClass<T> {
    /// The error, with its chain, as an `anyhow::Error` of class `class`.
    fn with_class(self, class: Class) -> anyhow::Result<T>;
}

impl<T, E> WithClass<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn with_class(self, class: Class) -> anyhow::Result<T> {
        self.map_err(|e| reclass(class, e.into()))
    }
}

/// The class of `err`: the outermost [`Classified`] in its chain; failing that, the first I/O
/// error's kind (a missing or unreadable file is the operator's, a refused or reset
/// connection transient); failing that, [`Class::Bug`].
pub fn class_of(err: &anyhow::Error) -> Class {
    chain_class(err.chain())
}

fn chain_class<'a>(chain: impl Iterator<Item = &'a (dyn StdError + 'static)> + Clone) -> Class {
    if let Some(c) = chain
        .clone()
        .find_map(|cause| cause.downcast_ref::<Classified>())
    {
        return c.class;
    }
    match chain
        .clone()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())
    {
        Some(io) => io_class(io.kind()),
        None => Class::Bug,
    }
}

/// The class of an I/O error nobody classified, by its kind.
pub fn io_class(kind: std::io::ErrorKind) -> Class {
    use std::io::ErrorKind::*;
    match kind {
        NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists => Class::Operator,
        // A unit's sandbox that does not let it write (ProtectSystem=strict without the path in
        // ReadWritePaths=), a full disk: a person changes the unit or frees space.
        ReadOnlyFilesystem | StorageFull => Class::Operator,
        TimedOut | ConnectionRefused | ConnectionReset | Interrupted => Class::Transient,
        _ => Class::Bug,
    }
}

/// The whole cause chain on one line, `outer: inner: root cause`, leaving out a cause whose
/// text is already shown (a wrapper that repeats its source).
pub fn cause_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[derive(Debug, thiserror::Error)]
    enum Peer {
        #[error("peer is down")]
        Down,
        #[error("peer refused: {0}")]
        Refused(String),
        #[error("peer broke: {source}")]
        Broke {
            #[source]
            source: std::io::Error,
        },
    }

    impl Classify for Peer {
        fn class(&self) -> Class {
            match self {
                Peer::Down => Class::Transient,
                Peer::Refused(_) => Class::Operator,
                Peer::Broke { .. } => Class::Bug,
            }
        }
    }

    fn down() -> Result<(), Peer> {
        Err(Peer::Down)
    }

    #[test]
    fn the_class_survives_context_and_the_type_stays_in_the_chain() {
        let e = down()
            .classed()
            .context("asking the peer")
            .context("first boot")
            .unwrap_err();
        assert_eq!(class_of(&e), Class::Transient);
        assert!(e
            .chain()
            .any(|c| matches!(c.downcast_ref(), Some(Peer::Down))));
        assert_eq!(cause_chain(&e), "first boot: asking the peer: peer is down");

        let e = Peer::Refused("no".into()).classed();
        assert_eq!(class_of(&e), Class::Operator);
        assert_eq!(e.to_string(), "peer refused: no");
    }

    #[test]
    fn retrying_is_derived_from_the_class() {
        assert!(Peer::Down.is_transient());
        assert!(!Peer::Refused(String::new()).is_transient());
        assert!(!Peer::Broke {
            source: std::io::Error::other("x")
        }
        .is_transient());
    }

    #[test]
    fn a_write_the_sandbox_or_the_disk_refuses_needs_an_operator() {
        // Seen under systemd: ProtectSystem=strict without the directory in ReadWritePaths=.
        let io: Result<(), _> = Err(std::io::Error::from_raw_os_error(30)); // EROFS
        let e = io.context("writing /etc/iam/pki/server.pem").unwrap_err();
        assert_eq!(class_of(&e), Class::Operator);
        assert_eq!(io_class(std::io::ErrorKind::StorageFull), Class::Operator);
    }

    #[test]
    fn the_outermost_class_wins() {
        let inner = Peer::Down.classed().context("the deadline passed");
        let e = reclass(Class::Operator, inner);
        assert_eq!(class_of(&e), Class::Operator);
        assert_eq!(
            class_of(&reclass(Class::Transient, operator("x"))),
            Class::Transient
        );
        let io: Result<(), _> = Err(std::io::Error::from(std::io::ErrorKind::Other));
        let e = io.with_class(Class::Operator).unwrap_err();
        assert_eq!(class_of(&e), Class::Operator);
        assert!(e.chain().any(|c| c.is::<std::io::Error>()));
        // A classed typed error beats the io error below it.
        let e = Peer::Broke {
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }
        .classed();
        assert_eq!(class_of(&e), Class::Bug);
    }

    #[test]
    fn unclassified_errors_are_io_kinds_or_bugs_never_operator_by_default() {
        let io = |k| anyhow::Error::new(std::io::Error::from(k)).context("reading /etc/x");
        assert_eq!(class_of(&io(std::io::ErrorKind::NotFound)), Class::Operator);
        assert_eq!(
            class_of(&io(std::io::ErrorKind::PermissionDenied)),
            Class::Operator
        );
        assert_eq!(
            class_of(&io(std::io::ErrorKind::ConnectionRefused)),
            Class::Transient
        );
        assert_eq!(
            class_of(&io(std::io::ErrorKind::TimedOut)),
            Class::Transient
        );
        assert_eq!(class_of(&io(std::io::ErrorKind::OutOfMemory)), Class::Bug);
        assert_eq!(class_of(&anyhow::anyhow!("what?")), Class::Bug);
        let parse: anyhow::Error = "x".parse::<u32>().unwrap_err().into();
        assert_eq!(class_of(&parse), Class::Bug);
    }

    #[test]
    fn messages_and_chains_read_once() {
        let e = operator("spec.vault.address: missing");
        assert_eq!(class_of(&e), Class::Operator);
        assert_eq!(cause_chain(&e), "spec.vault.address: missing");
        let e = transient("Vault sealed").context("enrolling");
        assert_eq!(class_of(&e), Class::Transient);
        assert_eq!(cause_chain(&e), "enrolling: Vault sealed");
        assert_eq!(Class::Transient.name(), "transient");
    }
}
