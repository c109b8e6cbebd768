//! Sources: what can be backed up. Each kind (SQLite, DuckDB, files) implements [`Source`]:
//! it takes a consistent snapshot, hands its content to the engine through a
//! [`ContentWriter`] (an image of blocks, or a tree of files), and records the facts that
//! `verify` later checks. The engine (ops/backup.rs) owns what happens to the bytes after
//! that: chunk → dedup → compress → encrypt → store.

pub mod duckdb;
pub mod files;
pub mod postgres;
pub mod redact;
pub mod sqlite;

use crate::error::{Error, Result};
use crate::repo::manifest::{Content, DatabaseInfo, DuckdbInfo, FilesInfo, PostgresInfo};
use crate::repo::tree::TreeEntry;
use std::collections::BTreeMap;
use std::path::Path;

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Duckdb,
    Files,
    Postgres,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Duckdb => "duckdb",
            Kind::Files => "files",
            Kind::Postgres => "postgres",
        }
    }

    pub fn parse(name: &str) -> Result<Kind> {
        match name.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Kind::Sqlite),
            "duckdb" => Ok(Kind::Duckdb),
            "files" => Ok(Kind::Files),
            "postgres" | "postgresql" => Ok(Kind::Postgres),
            other => Err(Error::usage(format!(
                "'{other}' is not a kind of source Lifeboat backs up"
            ))
            .hint("use --kind sqlite, duckdb or files; a PostgreSQL database is given as postgres://USER@HOST:PORT/DB")),
        }
    }
}

/// The facts a source recorded, by kind (the manifest's per-kind section).
#[derive(Debug, Clone)]
pub enum SourceFacts {
    Sqlite(DatabaseInfo),
    Duckdb(DuckdbInfo),
    Files(FilesInfo),
    Postgres(PostgresInfo),
}

/// What a source's backup produced.
pub struct BackedUp {
    pub content: Content,
    pub facts: SourceFacts,
    /// What the user should know about this backup (printed as warnings).
    pub warnings: Vec<String>,
}

/// An image as stored: its content and its SHA-256.
pub struct StoredImage {
    pub content: Content,
    pub sha256: String,
}

/// How an image is cut into blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every buffer `read_chunks` hands over is a whole number of pages of `block_size`:
    /// content `pages`.
    Pages,
    /// Buffers are cut into blobs of `block_size` (the last of a buffer may be shorter):
    /// content `stream`. A source with a header before its blocks hands the header over as
    /// a buffer of its own, so blocks stay aligned.
    Blocks,
}

/// The engine's side of the seam: where a source's content goes.
pub trait ContentWriter {
    /// Store the image `snap` reads.
    fn image(&mut self, snap: &mut dyn Snapshot, cut: Cut) -> Result<StoredImage>;
    /// Store a tree: `walk` adds every entry, in path order.
    fn tree(&mut self, walk: &mut dyn FnMut(&mut dyn TreeWriter) -> Result<()>) -> Result<Content>;
}

/// Where a tree's entries go. A file's content is read from `data` and cut by content
/// (the entry's `chunks` are filled in); folders and links have none.
pub trait TreeWriter {
    fn add(&mut self, entry: TreeEntry, data: Option<&mut dyn std::io::Read>) -> Result<()>;
    /// Store a file's content now and return its chunk ids and size, for an entry added
    /// later (with no data): a source that produces files out of path order stores each as
    /// it is ready, then adds the entries in order.
    fn store(
        &mut self,
        path: &str,
        data: &mut dyn std::io::Read,
        chunking: Chunking,
    ) -> Result<(Vec<String>, u64)>;
}

/// How a file is cut into content-defined chunks (FastCDC): smallest, average and largest
/// chunk in bytes. Not part of the format (a reader only concatenates chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Chunking {
    /// Files (configuration, dumps' small files): 64 KiB / 256 KiB / 1 MiB. A config file is
    /// one chunk; a large file changed in one place stores about one new chunk. Measured
    /// (examples/cdc_sizes.rs, docs/PERFORMANCE.md): as little stored for a local change as
    /// 64 KiB chunks, with a quarter of the index entries.
    pub const FILES: Chunking = Chunking {
        min: 64 << 10,
        avg: 256 << 10,
        max: 1 << 20,
    };
    /// Rows of a table (a PostgreSQL dump's COPY data): 1 KiB / 4 KiB / 16 KiB. An updated
    /// row moves to the end of the table, so a day's updates are spread over the whole
    /// dump, and a chunk of n rows survives 1% of rows updated with probability 0.99^n.
    /// Measured (docs/POSTGRES.md) with 140-byte rows, 1% of them updated: a second backup
    /// stored 1.0x a new compressed dump with 256 KiB chunks, 0.60x with 8 KiB, 0.41x with
    /// 4 KiB, 0.28x with 2 KiB; each halving adds ~1.7% of index and chunk lists to a full
    /// backup and doubles the index entries in memory.
    pub const ROWS: Chunking = Chunking {
        min: 1 << 10,
        avg: 4 << 10,
        max: 16 << 10,
    };
    /// Pages of PostgreSQL relation files: fixed 8 KiB blocks, so a block changed in a 1 GiB
    /// segment stores one new chunk. (Fixed: `min == max`.)
    pub const PAGES: Chunking = Chunking {
        min: 8 << 10,
        avg: 8 << 10,
        max: 8 << 10,
    };
}

/// Something to back up.
pub trait Source {
    fn kind(&self) -> Kind;
    /// Take the snapshot and hand its content to `writer`.
    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp>;
}

/// Open the source at `path` as a source of `kind` (given, or found by `detect`).
pub fn open(path: &Path, kind: Kind, options: &SourceOptions) -> Result<Box<dyn Source>> {
    Ok(match kind {
        Kind::Sqlite => Box::new(sqlite::SqliteSource::new(path)?),
        Kind::Duckdb => Box::new(duckdb::DuckdbSource::new(path)?),
        Kind::Files => Box::new(files::FilesSource::new(path, &options.files)?),
        Kind::Postgres => Box::new(postgres_source(path, options)?),
    })
}

fn postgres_source(path: &Path, options: &SourceOptions) -> Result<postgres::PgSource> {
    let uri = path
        .to_str()
        .ok_or_else(|| Error::usage("a PostgreSQL URI must be UTF-8"))?;
    if options.postgres_physical {
        postgres::PgSource::physical(uri)
    } else if options.postgres_globals {
        postgres::PgSource::globals(uri)
    } else {
        postgres::PgSource::new(uri, &options.postgres)
    }
}

/// The options of every kind of source, as a backup was asked for.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub files: files::FilesOptions,
    pub postgres: postgres::PgOptions,
    /// Back up the PostgreSQL cluster's roles and tablespaces, not a database.
    pub postgres_globals: bool,
    /// A physical base backup of the whole PostgreSQL cluster (`--physical`).
    pub postgres_physical: bool,
}

/// How the source at `path` is recorded in manifests: the absolute path of a file or folder,
/// or a PostgreSQL URI without its password (see [`postgres::PgSource::source_key`]).
pub fn source_name(path: &Path, kind: Kind, options: &SourceOptions) -> Result<String> {
    if kind == Kind::Postgres {
        return Ok(postgres_source(path, options)?.source_key());
    }
    Ok(crate::ops::backup::absolute(path)?.display().to_string())
}

/// `var` as seconds (fractions allowed, at most a day), else `default`: the time limits
/// (`LIFEBOAT_BUSY_TIMEOUT`, …).
pub(crate) fn seconds_from_env(var: &str, default: u64) -> std::time::Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(std::time::Duration::from_secs(default), |s| {
            std::time::Duration::from_secs_f64(s.min(86_400.0))
        })
}

/// Whether `p` is a file this process may run (the client programs Lifeboat drives).
pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A source this user may not read is a bad source (exit 5), not a storage failure.
pub(crate) fn unreadable(path: &Path, action: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        Error::source(format!("{action} {}: {e}", path.display())).hint(
            "check the permissions of the source and its folders for the user running lifeboat",
        )
    } else {
        Error::io(action, path, e)
    }
}

/// Open the database file of a `what` ("SQLite", "DuckDB") source: it must exist, be a file,
/// hold something and be readable by this user, with an error a person can act on.
pub(crate) fn open_database_file(path: &Path, what: &str) -> Result<std::fs::File> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("database {} does not exist", path.display()))
                .hint("check the path; `lifeboat demo` creates a sample database to try")
        } else {
            unreadable(path, "cannot read", e)
        }
    })?;
    if meta.is_dir() {
        return Err(Error::source(format!(
            "{} is a directory, not a {what} database",
            path.display()
        ))
        .hint("to back up a folder of files, add --kind files"));
    }
    if meta.len() == 0 {
        return Err(Error::source(format!(
            "{} is empty (0 bytes): there is no database to back up yet",
            path.display()
        )));
    }
    std::fs::File::open(path).map_err(|e| unreadable(path, "cannot open", e))
}

/// File names that promise a database: one whose header is not a database's is refused
/// rather than backed up as a plain file (a damaged database, or the wrong path).
const DATABASE_SUFFIXES: &[&str] = &["db", "sqlite", "sqlite3", "db3", "duckdb", "ddb"];

/// The kind of source at `path`: a folder is files, a file is known by its header (SQLite,
/// DuckDB); any other file is files, unless its name says it is a database.
pub fn detect(path: &Path) -> Result<Kind> {
    if path.to_str().is_some_and(postgres::is_postgres_uri) {
        return Ok(Kind::Postgres);
    }
    let unreadable = |e: std::io::Error| unreadable(path, "cannot read", e);
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("{} does not exist", path.display()))
                .hint("check the path; `lifeboat demo` creates a sample database to try")
        } else {
            unreadable(e)
        }
    })?;
    if meta.is_dir() {
        return Ok(Kind::Files);
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(unreadable)?;
    if n == 16 && &head == b"SQLite format 3\0" {
        return Ok(Kind::Sqlite);
    }
    if n >= 12 && &head[8..12] == b"DUCK" {
        return Ok(Kind::Duckdb);
    }
    let named_database = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| DATABASE_SUFFIXES.contains(&e.to_ascii_lowercase().as_str()));
    if named_database {
        return Err(Error::source(format!(
            "{} is not a SQLite database, nor a DuckDB one (its first bytes are neither's{})",
            path.display(),
            if n == 0 { "; it is empty" } else { "" }
        ))
        .hint("check the path; to keep it as a plain file, add --kind files"));
    }
    Ok(Kind::Files)
}

/// Facts recorded at backup time and compared after a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub schema_hash: String,
    pub tables: BTreeMap<String, u64>,
}

/// A consistent, read-only view of a live database, held open until dropped.
pub trait Snapshot {
    fn block_size(&self) -> u32;
    /// Bytes of the image.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Call `f` with every block in order, a few at a time: each call gets a buffer holding
    /// a whole number of blocks (about 128 KiB). `f` may keep the buffer by swapping in
    /// another (ideally a recycled one of the same size), which saves a copy per chunk.
    fn read_chunks(&mut self, f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()>;
}

/// How a database path is recorded in manifests and compared (`--source`, `--db`,
/// `[retention.source."PATH"]`): absolute, symlinks resolved, no trailing slash. A path that
/// does not exist (a deleted database) is resolved through its parent folder.
pub fn source_key(path: &std::path::Path) -> String {
    if let Some(key) = path
        .to_str()
        .filter(|p| postgres::is_postgres_uri(p))
        .and_then(|p| postgres::conn::PgTarget::parse(p).ok())
    {
        return key.source_key();
    }
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
