//! Backup manifests (`backups/<id>`): everything known about one backup, written last.
//! A backup exists exactly when its manifest does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_FORMAT: u32 = 1;

/// `trigger` of the safety backup an in-place restore takes of the database it replaces.
pub const SAFETY_TRIGGER: &str = "pre-restore";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// RFC 3339, UTC, when the snapshot was taken.
    pub time: String,
    pub source: SourceInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Why the backup was taken: `manual`, `scheduled`, `pre-restore`, …
    pub trigger: String,
    pub tool_version: String,
    pub duration_ms: u64,
    /// What the backup checked before committing: `none`, `written` (every new object read
    /// back) or `full` (restored and verified). Absent in manifests of early versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    pub database: DatabaseInfo,
    pub content: Content,
    pub stored: StoredInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `sqlite` today; `postgres`, `duckdb`, `files` later.
    pub kind: String,
    /// Absolute path of the database when it was backed up.
    pub path: String,
    pub host: String,
}

/// Facts about the database that `verify` checks a restored copy against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub page_size: u32,
    pub page_count: u64,
    pub logical_bytes: u64,
    /// SHA-256 of the restored database file, hex.
    pub sha256: String,
    /// SHA-256 over `sqlite_schema` (type, name, table, sql), hex.
    pub schema_hash: String,
    /// Rows per ordinary table.
    pub tables: BTreeMap<String, u64>,
    pub journal_mode: String,
    pub sqlite_version: String,
}

/// How to rebuild the database image: `kind = "pages"` means `blocks` fixed-size blocks of
/// `block_size` bytes, whose blob ids are listed in order in the list blobs `lists`
/// (each holding up to `ids_per_list` ids of 32 bytes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Content {
    pub kind: String,
    pub block_size: u32,
    pub blocks: u64,
    pub ids_per_list: u32,
    pub lists: Vec<String>,
}

/// What this backup added to the repository.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StoredInfo {
    pub compression: String,
    pub level: i32,
    pub new_blobs: u64,
    pub reused_blobs: u64,
    /// Uncompressed bytes of the new blobs.
    pub new_raw_bytes: u64,
    /// Bytes of new packs and index files.
    pub new_stored_bytes: u64,
    pub packs: Vec<String>,
    pub index_files: Vec<String>,
}
