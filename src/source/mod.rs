//! Database sources: each kind of database yields a consistent snapshot as a stream of
//! fixed-size blocks plus the facts `verify` later checks (schema, row counts).

pub mod redact;
pub mod sqlite;

use crate::error::Result;
use std::collections::BTreeMap;

/// Facts recorded at backup time and compared after a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub schema_hash: String,
    pub tables: BTreeMap<String, u64>,
}

/// A consistent, read-only view of a live database, held open until dropped.
pub trait Snapshot {
    /// `sqlite`, `postgres`, …
    fn kind(&self) -> &'static str;
    fn block_size(&self) -> u32;
    fn block_count(&self) -> u64;
    /// Call `f` with every block in order, a few at a time: each call gets a buffer holding
    /// a whole number of blocks (about 128 KiB). `f` may keep the buffer by swapping in
    /// another (ideally a recycled one of the same size), which saves a copy per chunk.
    fn read_chunks(&mut self, f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()>;
    /// Schema and row counts, from the same snapshot as the blocks.
    fn facts(&mut self) -> Result<Facts>;
}

/// How a database path is recorded in manifests and compared (`--source`, `--db`,
/// `[retention.source."PATH"]`): absolute, symlinks resolved, no trailing slash. A path that
/// does not exist (a deleted database) is resolved through its parent folder.
pub fn source_key(path: &std::path::Path) -> String {
    if let Ok(p) = path.canonicalize() {
        return p.display().to_string();
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let resolved = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or_else(|_| absolute.clone()),
        _ => absolute.clone(),
    };
    let text = resolved.display().to_string();
    match text.trim_end_matches('/') {
        "" => "/".to_string(),
        t => t.to_string(),
    }
}
