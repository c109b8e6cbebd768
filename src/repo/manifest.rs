//! Backup manifests (`backups/<id>`): everything known about one backup, written last.
//! A backup exists exactly when its manifest does.
//!
//! Two manifest formats. Format 1 (every release before content kinds) holds SQLite backups
//! only: the SQLite facts under `database` and `content` of kind `pages`. Format 2 names the
//! source's kind in `source.kind`, holds that kind's facts in a section of the same name
//! (`sqlite`, `duckdb`, `files`) and tags `content` with its kind (`pages`, `stream`,
//! `tree`). A repository holds manifests of format 2 only once its config lists the feature
//! `manifest-2` (new repositories do; `repo upgrade` adds it), so that a Lifeboat that knows
//! only format 1 refuses the repository as "made by a newer Lifeboat" instead of misreading
//! it. Until then SQLite backups are written as format 1.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The newest manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 2;
/// The repository feature that allows manifests of format 2.
pub const FEATURE: &str = "manifest-2";

/// `trigger` of the safety backup an in-place restore takes of the database it replaces.
pub const SAFETY_TRIGGER: &str = "pre-restore";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// RFC 3339, UTC, when the snapshot was taken.
    pub time: String,
    pub source: SourceInfo,
    /// The run this backup was part of: the backups of one `lifeboat backup A B …` share it
    /// (and their time). Absent for a run of one source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
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
    /// SQLite facts (`database` in format 1).
    #[serde(
        rename = "sqlite",
        alias = "database",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sqlite: Option<DatabaseInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duckdb: Option<DuckdbInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresInfo>,
    pub content: Content,
    pub stored: StoredInfo,
    /// A base of continuous replication (`lifeboat replicate`): the image is the database
    /// as it was after the segments of `wal.stream` numbered below `wal.next_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalLink>,
}

/// Where a base stands in its stream of segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalLink {
    pub stream: String,
    /// The first segment to apply on top of this image.
    pub next_seq: u64,
    /// The WAL position the image corresponds to.
    pub pos: crate::repo::segment::WalPos,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `sqlite`, `duckdb`, `files` or `postgres`.
    pub kind: String,
    /// Absolute path of the database (or folder) when it was backed up; for PostgreSQL the
    /// connection URI without its password (`postgres://user@host:5432/app`).
    pub path: String,
    pub host: String,
}

/// Facts about a SQLite database that `verify` checks a restored copy against.
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

/// Facts about a DuckDB database that `verify` checks a restored copy against.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DuckdbInfo {
    /// The storage format version from the file's header.
    pub storage_version: u64,
    /// The DuckDB that read the tables (its CLI).
    pub duckdb_version: String,
    /// The DuckDB that created the file, from its header.
    #[serde(default)]
    pub created_by: String,
    /// Bytes of the file's headers, then blocks of `block_size`.
    pub header_bytes: u64,
    pub block_size: u32,
    pub logical_bytes: u64,
    /// SHA-256 of the database file, hex.
    pub sha256: String,
    /// Rows per table, `schema.table`.
    pub tables: BTreeMap<String, u64>,
}

/// Facts about a PostgreSQL backup (a `pg_dump` archive in directory format, stored as a
/// tree: `toc.dat` and one data file per table), or of a cluster's global objects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PostgresInfo {
    /// The database dumped; empty for the globals (roles, tablespaces) of `--all-databases`.
    pub database: String,
    /// `host:port` (or socket folder and port) as connected to.
    pub server: String,
    pub user: String,
    /// `server_version` of the server, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version_num: u32,
    /// The `pg_dump --version` that took the dump.
    pub client_version: String,
    /// `directory` (a `pg_dump -Fd -Z0` archive) or `globals` (`pg_dumpall --globals-only`).
    pub dump_format: String,
    /// `pg_database_size()` when the dump started.
    pub database_bytes: u64,
    /// Rows per table as dumped, `schema.table` (a part quoted when it is not a plain
    /// lower-case name: `public."Mixed Case"`).
    pub tables: BTreeMap<String, u64>,
    pub large_objects: u64,
    /// SHA-256 over the archive's schema (every entry's kind, name and definition).
    pub schema_sha256: String,
    /// `--schema` and `--exclude-table` as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_tables: Vec<String>,
    /// A physical base backup of the whole cluster (`dump_format` `physical`), whose tree
    /// is the data directory; absent for dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<Box<PhysicalInfo>>,
}

/// Facts about a physical base backup (`pg_basebackup`): the WAL it needs from the archive
/// (`pgwal/<system_id>/`) to be consistent, and what it was taken of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct PhysicalInfo {
    /// The cluster's system identifier (`pg_control`), decimal.
    pub system_id: String,
    pub timeline: u32,
    /// WAL range the backup needs replayed (`0/2000028`), from its `backup_label` and
    /// `backup_manifest`.
    pub start_lsn: String,
    pub stop_lsn: String,
    pub checkpoint_lsn: String,
    /// The segments holding the start and stop positions.
    pub start_wal: String,
    pub stop_wal: String,
    pub wal_segment_size: u64,
    /// RFC 3339: when the backup's checkpoint started and when the backup ended (the
    /// earliest moment it can be restored to).
    pub start_time: String,
    pub stop_time: String,
    /// Tablespaces other than the default ones: oid and location on the server (their
    /// files are stored under `pg_tblspc/<oid>/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tablespaces: Vec<Tablespace>,
    pub files: u64,
    pub data_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tablespace {
    pub oid: u32,
    pub location: String,
}

/// Facts about a backup of files and folders (an application's configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct FilesInfo {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of the files as stored (after redaction).
    pub bytes: u64,
    /// The `--exclude` patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// Whether values of secret-looking keys were redacted, and by which key patterns.
    pub redaction: Option<Vec<String>>,
    /// What was redacted: each file with the keys whose values were replaced (never the
    /// values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<RedactedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedactedFile {
    pub path: String,
    pub keys: Vec<String>,
}

/// How to rebuild what was backed up, by kind:
/// * `pages`: an image of `blocks` blocks of `block_size` bytes, whose blob ids are listed
///   in order in the list blobs `lists` (each holding up to `ids_per_list` ids of 32 bytes);
/// * `stream`: an image of `bytes` bytes cut into `chunks` blobs of any size (content-defined,
///   or at the source's own block boundaries), listed the same way;
/// * `tree`: files and folders, described by the tree blobs `nodes` in path order (see
///   `repo::tree`), each file's content a list of chunk ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Content {
    Pages {
        block_size: u32,
        blocks: u64,
        ids_per_list: u32,
        lists: Vec<String>,
    },
    Stream {
        bytes: u64,
        chunks: u64,
        ids_per_list: u32,
        lists: Vec<String>,
    },
    Tree {
        entries: u64,
        bytes: u64,
        nodes: Vec<String>,
    },
    /// A kind this version does not know (written by a newer Lifeboat), kept as it was
    /// stored.
    #[serde(untagged)]
    Unknown(serde_json::Value),
}

/// The content kinds this version knows.
pub const CONTENT_KINDS: &[&str] = &["pages", "stream", "tree"];

impl Content {
    pub fn kind(&self) -> &str {
        match self {
            Content::Pages { .. } => "pages",
            Content::Stream { .. } => "stream",
            Content::Tree { .. } => "tree",
            Content::Unknown(stored) => stored
                .get("kind")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("(none)"),
        }
    }

    /// Bytes of what a restore writes.
    pub fn logical_bytes(&self) -> u64 {
        match self {
            Content::Pages {
                block_size, blocks, ..
            } => u64::from(*block_size) * blocks,
            Content::Stream { bytes, .. } | Content::Tree { bytes, .. } => *bytes,
            Content::Unknown(_) => 0,
        }
    }

    /// The list blobs of an image (pages or stream): ids in order.
    pub fn lists(&self) -> &[String] {
        match self {
            Content::Pages { lists, .. } | Content::Stream { lists, .. } => lists,
            _ => &[],
        }
    }

    /// The blobs the manifest names: an image's lists, a tree's tree blobs.
    pub fn roots(&self) -> &[String] {
        match self {
            Content::Pages { lists, .. } | Content::Stream { lists, .. } => lists,
            Content::Tree { nodes, .. } => nodes,
            Content::Unknown(_) => &[],
        }
    }

    /// Blobs of the image (pages or chunks); entries of a tree.
    pub fn items(&self) -> u64 {
        match self {
            Content::Pages { blocks, .. } => *blocks,
            Content::Stream { chunks, .. } => *chunks,
            Content::Tree { entries, .. } => *entries,
            Content::Unknown(_) => 0,
        }
    }
}

impl Manifest {
    /// Bytes of what a restore writes (the database file, or the files of a tree).
    pub fn logical_bytes(&self) -> u64 {
        self.content.logical_bytes()
    }

    /// SHA-256 of the database image, for the kinds that restore one file.
    pub fn image_sha256(&self) -> Option<&str> {
        match (&self.sqlite, &self.duckdb) {
            (Some(s), _) => Some(&s.sha256),
            (_, Some(d)) => Some(&d.sha256),
            _ => None,
        }
    }

    /// Rows per table, for the database kinds.
    pub fn tables(&self) -> Option<&BTreeMap<String, u64>> {
        match (&self.sqlite, &self.duckdb, &self.postgres) {
            (Some(s), _, _) => Some(&s.tables),
            (_, Some(d), _) => Some(&d.tables),
            (_, _, Some(p)) => Some(&p.tables),
            _ => None,
        }
    }

    /// The stored bytes, in the manifest's format (format 1 names the SQLite facts
    /// `database`).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let fail = |e: serde_json::Error| Error::internal(format!("cannot encode manifest: {e}"));
        if self.format >= 2 {
            // Compact: a files backup lists every redacted key, and a manifest is stored
            // whole by every backup, however little else changed.
            return serde_json::to_vec(self).map_err(fail);
        }
        if self.source.kind != "sqlite" || !matches!(self.content, Content::Pages { .. }) {
            return Err(Error::internal(
                "manifest format 1 holds SQLite page images only",
            ));
        }
        let mut value = serde_json::to_value(self).map_err(fail)?;
        if let Some(o) = value.as_object_mut() {
            if let Some(facts) = o.remove("sqlite") {
                o.insert("database".into(), facts);
            }
        }
        serde_json::to_vec_pretty(&value).map_err(fail)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_manifest(format: u32) -> Manifest {
        Manifest {
            format,
            id: "01m9632037jmvq".into(),
            time: "2026-12-06T00:00:00Z".into(),
            source: SourceInfo {
                kind: "sqlite".into(),
                path: "/srv/app.db".into(),
                host: "h".into(),
            },
            run: None,
            description: None,
            tags: vec![],
            trigger: "manual".into(),
            tool_version: "0.1.0".into(),
            duration_ms: 1,
            verification: None,
            sqlite: Some(DatabaseInfo {
                page_size: 4096,
                page_count: 2,
                logical_bytes: 8192,
                sha256: "00".repeat(32),
                schema_hash: "11".repeat(32),
                tables: BTreeMap::from([("t".into(), 3)]),
                journal_mode: "wal".into(),
                sqlite_version: "3".into(),
            }),
            duckdb: None,
            files: None,
            postgres: None,
            content: Content::Pages {
                block_size: 4096,
                blocks: 2,
                ids_per_list: 1024,
                lists: vec!["ab".repeat(32)],
            },
            stored: StoredInfo::default(),
            wal: None,
        }
    }

    #[test]
    fn format_1_is_written_as_format_1_readers_expect_and_read_back() {
        let m = sqlite_manifest(1);
        let v: serde_json::Value = serde_json::from_slice(&m.encode().unwrap()).unwrap();
        assert!(v.get("sqlite").is_none(), "{v}");
        assert_eq!(v["database"]["page_size"], 4096);
        assert_eq!(v["content"]["kind"], "pages");
        assert_eq!(v["content"]["block_size"], 4096);
        let back: Manifest = serde_json::from_value(v).unwrap();
        assert_eq!(back.sqlite, m.sqlite);
        assert_eq!(back.content, m.content);
    }

    #[test]
    fn format_2_names_the_kind_section_and_tags_the_content() {
        let m = sqlite_manifest(2);
        let v: serde_json::Value = serde_json::from_slice(&m.encode().unwrap()).unwrap();
        assert!(v.get("database").is_none(), "{v}");
        assert_eq!(v["sqlite"]["page_count"], 2);
        let mut t = m.clone();
        t.sqlite = None;
        t.source.kind = "files".into();
        t.files = Some(FilesInfo::default());
        t.content = Content::Tree {
            entries: 3,
            bytes: 10,
            nodes: vec!["cd".repeat(32)],
        };
        let back: Manifest = serde_json::from_slice(&t.encode().unwrap()).unwrap();
        assert_eq!(back.content, t.content);
        assert_eq!(back.files, t.files);
        assert!(back.sqlite.is_none());
        // Format 1 cannot hold it.
        t.format = 1;
        assert!(t.encode().is_err());
    }

    #[test]
    fn an_unknown_content_kind_is_kept_by_name() {
        let mut v = serde_json::to_value(sqlite_manifest(2)).unwrap();
        v["content"]["kind"] = "hologram".into();
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert!(matches!(m.content, Content::Unknown(_)), "{:?}", m.content);
        assert_eq!(m.content.kind(), "hologram");
        // A known kind with a field missing is not mistaken for a well-formed one.
        let mut v = serde_json::to_value(sqlite_manifest(2)).unwrap();
        v["content"].as_object_mut().unwrap().remove("block_size");
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert!(matches!(m.content, Content::Unknown(_)), "{:?}", m.content);
        let e = crate::repo::reach::known_kind(&m).unwrap_err();
        assert!(e.message.contains("malformed"), "{e}");
    }
}
