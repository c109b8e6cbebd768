//! Storage targets: where repository objects live. One trait, one implementation per kind
//! of place (local disk today; object stores later). Objects are write-once: `put_new`
//! never replaces an existing object, which is what makes concurrent writers and crashes safe.

pub mod local;
pub mod location;
pub mod memory;
pub mod object;

pub use location::{local_path, open};

pub use local::LocalStorage;
pub use object::ObjectStorage;

use crate::error::Result;
use std::path::{Path, PathBuf};

/// A private temporary folder (removed on drop) for files a remote or in-memory target
/// consumes from local disk (`put_file_new`).
pub fn staging_tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| {
            crate::error::Error::io(
                "cannot create a staging folder in",
                &std::env::temp_dir(),
                e,
            )
        })
}

/// Create `name` holding `data`, or accept an existing object with exactly these bytes (our
/// own earlier attempt whose answer was lost, or a concurrent writer of the same content).
/// Errors if a different object holds the name.
pub fn put_new_or_same(storage: &dyn Storage, name: &str, data: &[u8]) -> Result<()> {
    let created = storage.put_new(name, data)?;
    accept_same(storage, name, data, created)
}

/// [`put_new_or_same`] through [`Storage::put_new_within`]: a request that hangs is given up
/// after `within`.
pub fn put_new_or_same_within(
    storage: &dyn Storage,
    name: &str,
    data: &[u8],
    within: std::time::Duration,
) -> Result<()> {
    let created = storage.put_new_within(name, data, within)?;
    accept_same(storage, name, data, created)
}

/// After a create-only put: fine if it created `name`, or if what is there is `data`.
fn accept_same(storage: &dyn Storage, name: &str, data: &[u8], created: bool) -> Result<()> {
    if created {
        return Ok(());
    }
    if storage.get(name)? == data {
        return Ok(());
    }
    Err(crate::error::Error::usage(format!(
        "{}/{name} already exists with other content",
        storage.describe()
    ))
    .hint("another process created it at the same moment; run the command again"))
}

/// Object `name` (never larger than `max` bytes: see [`Storage::get_small`]), or None if it
/// is not there (deleted since it was listed, say).
pub fn get_if_present(storage: &dyn Storage, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
    match storage.get_small(name, max) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An error if object `name`, of `size` bytes, is larger than `max`, the most it can hold
/// if genuine.
pub fn check_small<S: Storage + ?Sized>(
    storage: &S,
    name: &str,
    size: u64,
    max: u64,
) -> Result<()> {
    if size <= max {
        return Ok(());
    }
    Err(crate::error::Error::integrity(format!(
        "{}/{name} is {size} bytes, more than such an object ever holds ({max}); not read",
        storage.describe()
    ))
    .hint("it was damaged or planted: restore it from a replica, or remove it if nothing made it"))
}

/// An object name and its size, as listed.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// The seam between the repository format and a place that stores bytes. Names are
/// `/`-separated relative paths such as `data/ab/ab12…` or `backups/<id>`.
pub trait Storage: Send + Sync {
    /// Where this target is, for messages (never contains credentials).
    fn describe(&self) -> String;
    /// Create `name` holding `data` unless it exists. Returns false when it already existed.
    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool>;
    /// `put_new`, giving up (a Storage error) after `within`: a request that hangs (a network
    /// partition) must not hold up a caller that will try again (continuous replication).
    /// Stores that cannot hang ignore the limit.
    fn put_new_within(&self, name: &str, data: &[u8], within: std::time::Duration) -> Result<bool> {
        let _ = within;
        self.put_new(name, data)
    }
    /// Create `name` from a finished local file written in `staging_dir`, unless it exists.
    /// The staged file is consumed either way.
    fn put_file_new(&self, name: &str, staged: &Path) -> Result<bool>;
    /// A local directory for temporary files that `put_file_new` can consume cheaply.
    fn staging_dir(&self) -> Result<PathBuf>;
    /// Create or atomically replace `name`. Only for the small mutable coordination objects
    /// (`locks/`, `pins/`, `verified/`); repository data is write-once, except that `repo
    /// repair` puts a damaged object's true bytes back under its name.
    fn put_replace(&self, name: &str, data: &[u8]) -> Result<()>;
    fn get(&self, name: &str) -> Result<Vec<u8>>;
    /// `get`, for an object that is never larger than `max` bytes: a larger one is an
    /// Integrity error, found before it is read.
    fn get_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let data = self.get(name)?;
        check_small(self, name, data.len() as u64, max)?;
        Ok(data)
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Read several ranges of `name`, (offset, length) in increasing order without overlaps,
    /// handing range `i` to `part` as soon as it has arrived. An object store reads them all
    /// with one request (the bytes between them are read and dropped): a restore reads ~1,000
    /// frames per GiB, and one request per frame costs more than the transfer. An error from
    /// `part` stops the read and is returned as it is.
    fn read_ranges(
        &self,
        name: &str,
        ranges: &[(u64, usize)],
        part: &mut dyn FnMut(usize, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        for (i, &(offset, len)) in ranges.iter().enumerate() {
            part(i, self.get_range(name, offset, len)?)?;
        }
        Ok(())
    }
    /// Objects directly or indirectly under `prefix` (e.g. `data/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Remove the staging folder's files last written more than `older_than` ago (leftovers
    /// of killed runs); how many were removed. Only a store that stages inside the repository
    /// (`tmp/` of a local folder) has any. The age matters, not only "no writer is running":
    /// a writer's lock marker is itself staged before it is visible.
    fn remove_staged_leftovers(&self, older_than: std::time::Duration) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }
    fn exists(&self, name: &str) -> Result<bool>;
    fn delete(&self, name: &str) -> Result<()>;
    /// How many reads to keep in flight: a local disk wants one per core, an object store
    /// many more, since each ranged read waits on a round trip.
    fn read_parallelism(&self) -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }
}
