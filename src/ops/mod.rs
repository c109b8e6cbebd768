//! Operations on a repository: the data path forwards (backup) and backwards (restore,
//! verify, PostgreSQL restores and drills), and the repository's own health (check, stats,
//! repair).

pub mod backup;
pub mod check;
pub mod drill;
pub mod forget;
pub mod pg;
pub mod pg_physical;
pub mod pgwal;
pub mod policy;
pub mod prune;
pub mod rekey;
pub mod repair;
pub mod restore;
pub mod restore_tree;
pub mod status;
pub mod sync;
pub mod verify;

/// How much `backup` checks before it writes the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyLevel {
    /// Trust the writes.
    None,
    /// Read every new object back and check its hash (the default).
    Written,
    /// Rebuild the database and run the full `verify` before the backup is committed.
    Full,
}
