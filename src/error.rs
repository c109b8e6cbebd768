//! Errors: what failed, what to do next, and the stable exit code for each kind.

use std::fmt;
use std::path::Path;

/// Broad classes of failure. Each maps to one documented exit code
/// (the README's "Exit codes" table) so scripts can react without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bug or an unexpected condition.
    Internal,
    /// Bad arguments, bad config, ambiguous id.
    Usage,
    /// A database file, backup id or repository that does not exist.
    NotFound,
    /// Stored data failed a check: missing, truncated or corrupted object, or a mismatch on verify.
    Integrity,
    /// The source is not something Lifeboat can back up (not a SQLite database, unreadable).
    Source,
    /// The database is in use by another process (in-place restore refuses).
    InUse,
    /// Reading or writing storage failed (permissions, full disk, unreachable target).
    Storage,
    /// Wrong password or key (reserved for encrypted repositories).
    Auth,
    /// The repository is not what this machine saw before, or not authenticated: replaced,
    /// rolled back, its security lowered, or a record forged. `--accept-change` accepts a
    /// deliberate change.
    Trust,
    /// The user declined a confirmation.
    Aborted,
    /// SIGINT or SIGTERM stopped the command (exit 130 or 143: 128 + the signal).
    Interrupted,
}

/// Every exit code with what it means: `lifeboat --help` prints this list, and a test holds
/// the README's table to it.
pub const EXIT_CODES: [(i32, &str); 13] = [
    (0, "success"),
    (1, "internal error"),
    (2, "usage"),
    (3, "not found"),
    (4, "integrity"),
    (5, "bad source"),
    (6, "in use"),
    (7, "storage failure"),
    (8, "wrong or missing passphrase"),
    (9, "trust"),
    (10, "aborted"),
    (130, "interrupted by SIGINT"),
    (143, "interrupted by SIGTERM"),
];

impl ErrorKind {
    /// Every kind, for tests and listings.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Internal,
        ErrorKind::Usage,
        ErrorKind::NotFound,
        ErrorKind::Integrity,
        ErrorKind::Source,
        ErrorKind::InUse,
        ErrorKind::Storage,
        ErrorKind::Auth,
        ErrorKind::Trust,
        ErrorKind::Aborted,
        ErrorKind::Interrupted,
    ];

    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Usage => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Integrity => 4,
            ErrorKind::Source => 5,
            ErrorKind::InUse => 6,
            ErrorKind::Storage => 7,
            ErrorKind::Auth => 8,
            ErrorKind::Trust => 9,
            ErrorKind::Aborted => 10,
            ErrorKind::Interrupted => crate::interrupt::exit_code(),
        }
    }
}

/// The one error type of the library: a kind, a sentence saying what failed, and a hint
/// saying what to do about it.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
    pub fn usage(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn integrity(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, m)
    }
    pub fn source(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Source, m)
    }
    pub fn storage(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Storage, m)
    }

    /// An I/O error on a named path, classified so the exit code says whether the thing is
    /// missing or the storage is failing.
    pub fn io(action: &str, path: &Path, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let what = format!("{action} {}: {e}", path.display());
        match e.kind() {
            K::NotFound => Error::not_found(what),
            K::PermissionDenied => Error::storage(what)
                .hint("check the permissions of that path for the user running lifeboat"),
            K::StorageFull | K::QuotaExceeded => {
                Error::storage(what).hint("free some space there, then run the command again")
            }
            _ => Error::storage(what),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The Lifeboat error an I/O error carries (one raised inside a reader or writer Lifeboat
    /// handed to a library, passed back through `std::io::Error::other`), else the I/O error.
    pub fn carried_by(io: std::io::Error) -> std::result::Result<Error, std::io::Error> {
        if !io.get_ref().is_some_and(|e| e.is::<Error>()) {
            return Err(io);
        }
        match io.into_inner().map(|e| e.downcast::<Error>()) {
            Some(Ok(e)) => Ok(*e),
            _ => Ok(Error::internal("an error was lost on its way back")),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::source(format!("SQLite: {e}"))
    }
}

/// Attach a path and action to `std::io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, action: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, action: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_listed_exit_code() {
        // A new kind must be added to ALL: this match stops compiling until it is handled.
        for kind in ErrorKind::ALL {
            match kind {
                ErrorKind::Internal
                | ErrorKind::Usage
                | ErrorKind::NotFound
                | ErrorKind::Integrity
                | ErrorKind::Source
                | ErrorKind::InUse
                | ErrorKind::Storage
                | ErrorKind::Auth
                | ErrorKind::Trust
                | ErrorKind::Aborted
                | ErrorKind::Interrupted => {}
            }
            assert!(
                EXIT_CODES.iter().any(|(c, _)| *c == kind.exit_code()),
                "{kind:?} exits {} which EXIT_CODES does not list",
                kind.exit_code()
            );
        }
        let listed: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(listed, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 130, 143]);
    }
}
