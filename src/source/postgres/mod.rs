//! PostgreSQL (logical): a database dumped by `pg_dump` in directory format without
//! compression, stored as a tree (`toc.dat` and one file per table), so each table is its own
//! stream of content-defined chunks: a table that did not change stores nothing, one that
//! changed a little stores a few chunks. Lifeboat compresses and encrypts; pg_dump does not
//! (compressed data would not deduplicate). docs/POSTGRES.md has the measurements behind the
//! choice.
//!
//! Facts come from the dump itself, so they match its snapshot exactly: rows per table
//! (lines of each COPY data file), large objects, a checksum of the schema (from the table of
//! contents); the server's version and the database's size from one query before the dump.

pub mod archive;
pub mod cluster;
pub mod conn;
pub mod follow;
pub mod physical;
pub mod tools;

use crate::error::{Error, Result};
use crate::repo::manifest::PostgresInfo;
use crate::repo::tree::{EntryKind, TreeEntry};
use crate::source::{BackedUp, Chunking, ContentWriter, Kind, Source, SourceFacts, TreeWriter};
use archive::{Counting, RowCounter, TOC};
use conn::{ClientEnv, PgTarget};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use tools::{client_failure, Client, Psql};

pub use conn::is_postgres_uri;

/// What to dump of a database.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `--schema` (only these schemas; pg_dump patterns).
    pub schemas: Vec<String>,
    /// `--exclude-table` (pg_dump patterns).
    pub exclude_tables: Vec<String>,
    /// Parallel pg_dump workers (`--jobs`), at least 1.
    pub jobs: usize,
}

/// The name of the one file of a globals backup.
pub const GLOBALS_FILE: &str = "globals.sql";

/// A PostgreSQL database (or, with `globals`, a cluster's roles and tablespaces).
pub struct PgSource {
    target: PgTarget,
    opts: PgOptions,
    globals: bool,
    physical: bool,
}

impl PgSource {
    pub fn new(uri: &str, opts: &PgOptions) -> Result<PgSource> {
        let target = PgTarget::parse(uri)?;
        // A URI without a database names the server (its globals); the database libpq would
        // pick (PGDATABASE, the user's name) must not be backed up under that name.
        if !target.names_database() {
            return Err(Error::usage(format!(
                "{} names a server, not a database",
                target.display()
            ))
            .hint("add the database: postgres://USER@HOST:PORT/DB, or --all-databases for every database of the server and its roles"));
        }
        Ok(PgSource {
            target,
            opts: opts.clone(),
            globals: false,
            physical: false,
        })
    }

    /// The roles and tablespaces of the cluster at `uri` (`pg_dumpall --globals-only`).
    pub fn globals(uri: &str) -> Result<PgSource> {
        Ok(PgSource {
            target: PgTarget::parse(uri)?,
            opts: PgOptions::default(),
            globals: true,
            physical: false,
        })
    }

    /// A physical base backup of the whole cluster at `uri` (`pg_basebackup`).
    pub fn physical(uri: &str) -> Result<PgSource> {
        Ok(PgSource {
            target: PgTarget::parse(uri)?,
            opts: PgOptions::default(),
            globals: false,
            physical: true,
        })
    }

    /// How backups of this source are named: the URI without password, user, host, port
    /// and database filled in (`postgres://app@db:5432/shop`); `postgres://app@db:5432/`
    /// for the globals.
    pub fn source_key(&self) -> String {
        if self.globals || self.physical {
            self.target.with_database("").source_key()
        } else {
            self.target.source_key()
        }
    }
}

/// A folder for a dump's temporary files: private (0700), in `LIFEBOAT_TEMP_DIR` or the
/// system's temp folder, removed when dropped. It holds a lock for as long as it lives, so
/// the folder of a Lifeboat that was killed (nothing removed it) is known as such and
/// removed by the next one. It is made and locked under a name of its own, then renamed
/// into the name the cleanup looks at, so no cleanup sees it unlocked.
pub struct WorkDir {
    path: std::path::PathBuf,
    _lock: std::fs::File,
}

impl WorkDir {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

const WORK_PREFIX: &str = "lifeboat-pg-";
const WORK_LOCK: &str = ".lock";

pub fn work_dir(what: &str) -> Result<WorkDir> {
    let base = crate::ops::verify::temp_dir();
    remove_abandoned(&base);
    let hint = "set LIFEBOAT_TEMP_DIR to a folder with room for the largest table's data";
    let fresh = tempfile::Builder::new()
        .prefix(".lifeboat-pg-new-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| Error::io("cannot create a temporary folder in", &base, e).hint(hint))?;
    let lock_path = fresh.path().join(WORK_LOCK);
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock_path)
        .map_err(|e| Error::io("cannot create", &lock_path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| Error::io("cannot lock", &lock_path, std::io::Error::from(e)))?;
    let suffix = fresh
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('-').next())
        .unwrap_or("x")
        .to_string();
    let path = base.join(format!("{WORK_PREFIX}{what}-{suffix}"));
    let fresh = fresh.keep();
    std::fs::rename(&fresh, &path).map_err(|e| {
        let _ = std::fs::remove_dir_all(&fresh);
        Error::io("cannot create a temporary folder in", &base, e).hint(hint)
    })?;
    Ok(WorkDir { path, _lock: lock })
}

/// Remove the work folders of killed Lifeboat processes: this user's folders whose lock
/// nobody holds. Anything else (another user's folder, a lock that is not a plain file) is
/// left alone.
fn remove_abandoned(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(WORK_PREFIX) {
            continue;
        }
        let ours = std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !ours {
            continue;
        }
        let lock = rustix::fs::open(
            e.path().join(WORK_LOCK),
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        );
        let Ok(lock) = lock else { continue };
        let plain = rustix::fs::fstat(&lock).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        });
        if !plain {
            continue;
        }
        let free =
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        if free {
            tracing::info!(
                "removing {}, left by a Lifeboat that was stopped",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The server's version and the database's size; the first connection, so a wrong password,
/// an unreachable server or a missing database is reported here, before anything runs.
pub struct ServerFacts {
    pub version: String,
    pub version_num: u32,
    pub database_bytes: u64,
}

pub fn server_facts(psql: &Psql) -> Result<ServerFacts> {
    let row = psql
        .query(
            "SELECT current_setting('server_version'), current_setting('server_version_num'), \
             pg_database_size(current_database())",
        )?
        .into_iter()
        .next()
        .unwrap_or_default();
    let (Some(version), Some(num), Some(size)) = (row.first(), row.get(1), row.get(2)) else {
        return Err(Error::source(format!(
            "PostgreSQL at {} did not say its version",
            psql.target.display()
        )));
    };
    Ok(ServerFacts {
        version: version.clone(),
        version_num: num.trim().parse().unwrap_or(0),
        database_bytes: size.trim().parse().unwrap_or(0),
    })
}

/// Connect: the password file, psql, and the server's facts.
pub fn connect<'a>(target: &'a PgTarget, env: &'a ClientEnv) -> Result<(Psql<'a>, ServerFacts)> {
    let psql = Psql {
        client: tools::find("psql", None)?,
        target,
        env,
    };
    let facts = server_facts(&psql)?;
    Ok((psql, facts))
}

impl Source for PgSource {
    fn kind(&self) -> Kind {
        Kind::Postgres
    }

    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
        if self.physical {
            return physical::back_up(&self.target, writer);
        }
        let work = work_dir("dump")?;
        let env = self.target.client_env(work.path())?;
        let (_psql, server) = connect(&self.target, &env)?;
        let major = server.version_num / 10000;
        let mut info = PostgresInfo {
            database: if self.globals {
                String::new()
            } else {
                self.target.database()
            },
            server: self.target.server(),
            user: self.target.user(),
            server_version: server.version,
            server_version_num: server.version_num,
            database_bytes: server.database_bytes,
            schemas: self.opts.schemas.clone(),
            excluded_tables: self.opts.exclude_tables.clone(),
            ..PostgresInfo::default()
        };
        if self.globals {
            let dumpall = tools::find("pg_dumpall", Some(major))?;
            info.client_version = dumpall.version.clone();
            info.dump_format = "globals".into();
            info.database_bytes = 0;
            let content = dump_globals(&self.target, &env, &dumpall, writer)?;
            return Ok(BackedUp {
                content,
                facts: SourceFacts::Postgres(info),
                warnings: Vec::new(),
            });
        }
        let pg_dump = tools::find("pg_dump", Some(major))?;
        info.client_version = pg_dump.version.clone();
        info.dump_format = "directory".into();
        let dir = work.path().join("dump");
        crate::storage::local::create_private_dir(&dir)?;
        let mut cmd = Command::new(&pg_dump.path);
        // --no-sync: its files are stored and deleted at once, never read from this disk again.
        cmd.args([
            "--format=directory",
            "--compress=0",
            "--no-password",
            "--no-sync",
        ])
        .arg(format!("--jobs={}", self.opts.jobs.max(1)))
        .arg(format!("--file={}", dir.display()))
        .arg(format!("--lock-wait-timeout={}", lock_wait_ms()));
        for s in &self.opts.schemas {
            cmd.arg(format!("--schema={s}"));
        }
        for t in &self.opts.exclude_tables {
            cmd.arg(format!("--exclude-table={t}"));
        }
        cmd.arg(format!("--dbname={}", self.target.conn_uri()))
            .env("PGAPPNAME", "lifeboat")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr_file(work.path())?));
        env.apply(&mut cmd);
        let mut folder = follow::DumpFolder::start(&dir, cmd, &pg_dump.path)?;
        let mut dumped = Dumped::default();
        let content = writer.tree(&mut |tree| ingest(&mut folder, tree, &mut dumped));
        // pg_dump's own account of a failure explains more than what it left behind.
        let status = folder.wait();
        let stderr = std::fs::read_to_string(work.path().join("pg_dump.err")).unwrap_or_default();
        match status {
            Ok(s) if s.success() => {}
            Ok(_) => return Err(client_failure("pg_dump", &self.target, &stderr)),
            Err(e) => return Err(e),
        }
        let content = content?;
        let toc = archive::parse_toc(&dumped.toc)?;
        archive::check_data_files(&toc)?;
        for (file, table) in toc.table_files() {
            let rows = dumped.rows.get(&file).copied().flatten().ok_or_else(|| {
                Error::source(format!(
                    "pg_dump's data file {file} of table {table} is missing or incomplete"
                ))
                .hint("nothing was committed; run the backup again, and check pg_dump's messages")
            })?;
            info.tables.insert(table, rows);
        }
        info.large_objects = dumped.blobs;
        info.schema_sha256 = toc.schema_sha256();
        let mut warnings = Vec::new();
        for line in stderr.lines().filter(|l| l.contains("warning")) {
            warnings.push(format!("pg_dump: {line}"));
        }
        Ok(BackedUp {
            content,
            facts: SourceFacts::Postgres(info),
            warnings,
        })
    }
}

/// `--lock-wait-timeout` for pg_dump: `LIFEBOAT_BUSY_TIMEOUT` seconds (default 30), so a
/// table locked by a long migration fails the backup with a message instead of hanging it.
fn lock_wait_ms() -> u64 {
    (crate::source::seconds_from_env("LIFEBOAT_BUSY_TIMEOUT", 30).as_millis() as u64).max(1)
}

fn stderr_file(dir: &std::path::Path) -> Result<std::fs::File> {
    private_file(&dir.join("pg_dump.err"))
}

/// A new file only this user may read (client messages may quote rows; scripts hold roles'
/// password hashes).
pub fn private_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot create", path, e))
}

/// What the files of a dump held, besides their chunks.
#[derive(Default)]
struct Dumped {
    toc: Vec<u8>,
    /// Data file → rows (`None`: the file did not end as complete table data does).
    rows: BTreeMap<String, Option<u64>>,
    blobs: u64,
}

/// Store every file of the dump as pg_dump writes it, then add the tree's entries in path
/// order: the root folder, then the files.
fn ingest(
    folder: &mut follow::DumpFolder,
    tree: &mut dyn TreeWriter,
    dumped: &mut Dumped,
) -> Result<()> {
    let mut entries = Vec::new();
    while let Some(name) = folder.next_file()? {
        let keep_bytes = name == TOC || archive::is_blobs_list(&name);
        let is_table_data = archive::is_table_data(&name);
        // Table data changes everywhere at once (updated rows move): small chunks. So does
        // the table of contents, whose first bytes (the dump's time) change every time: small
        // chunks keep the rest of it from being stored again.
        let chunking = if name.starts_with("blob_") {
            Chunking::FILES
        } else {
            Chunking::ROWS
        };
        let mut counter = RowCounter::default();
        let mut kept = Vec::new();
        let (chunks, size) = {
            // Read in 1 MiB gulps: the chunker asks for at most a chunk (16 KiB) at a time,
            // which would be a system call each.
            let growing = std::io::BufReader::with_capacity(1 << 20, folder.open(&name)?);
            let mut reader = Counting {
                inner: growing,
                counter: &mut counter,
            };
            if keep_bytes {
                let mut tee = Tee {
                    inner: &mut reader,
                    copy: &mut kept,
                };
                tree.store(&name, &mut tee, chunking)?
            } else {
                tree.store(&name, &mut reader, chunking)?
            }
        };
        if is_table_data {
            dumped.rows.insert(name.clone(), counter.rows());
        }
        if name == TOC {
            dumped.toc = kept;
        } else if archive::is_blobs_list(&name) {
            dumped.blobs += archive::count_blobs(&kept);
        }
        // Stored: its room in the temporary folder is free for what pg_dump writes next.
        let _ = std::fs::remove_file(folder.path(&name));
        entries.push(file_entry(name, size, chunks));
    }
    if dumped.toc.is_empty() {
        // pg_dump failed before writing its table of contents; its exit status says why.
        return Ok(());
    }
    tree.add(root_entry(), None)?;
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    for e in entries {
        tree.add(e, None)?;
    }
    Ok(())
}

// Entries of a dump's tree carry no time: a dump's files are new every time, and a time that
// changed would store every tree blob (and its lists of chunk ids) again.

fn root_entry() -> TreeEntry {
    TreeEntry {
        path: String::new(),
        path_hex: None,
        kind: EntryKind::Dir,
        mode: 0o700,
        mtime_ns: 0,
        size: 0,
        target: None,
        target_hex: None,
        chunks: Vec::new(),
    }
}

fn file_entry(path: String, size: u64, chunks: Vec<String>) -> TreeEntry {
    TreeEntry {
        path,
        kind: EntryKind::File,
        mode: 0o600,
        size,
        chunks,
        ..root_entry()
    }
}

/// A reader that keeps a copy of what it passes on (the small files Lifeboat reads itself).
struct Tee<'a, R> {
    inner: R,
    copy: &'a mut Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// `pg_dumpall --globals-only`, streamed into a tree of one file.
fn dump_globals(
    target: &PgTarget,
    env: &ClientEnv,
    dumpall: &Client,
    writer: &mut dyn ContentWriter,
) -> Result<crate::repo::manifest::Content> {
    let work = work_dir("globals")?;
    let mut cmd = Command::new(&dumpall.path);
    cmd.args(["--globals-only", "--no-password"])
        .arg(format!("--dbname={}", target.conn_uri()))
        .env("PGAPPNAME", "lifeboat")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file(work.path())?));
    env.apply(&mut cmd);
    let mut child = tools::Guarded::spawn(&mut cmd, &dumpall.path)?;
    let mut stdout = child
        .child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("pg_dumpall has no stdout"))?;
    let content = writer.tree(&mut |tree| {
        let (chunks, size) = tree.store(GLOBALS_FILE, &mut stdout, Chunking::FILES)?;
        tree.add(root_entry(), None)?;
        tree.add(file_entry(GLOBALS_FILE.into(), size, chunks), None)
    });
    let status = child
        .wait()
        .map_err(|e| Error::io("cannot wait for", &dumpall.path, e))?;
    if !status.success() {
        let stderr = std::fs::read_to_string(work.path().join("pg_dump.err")).unwrap_or_default();
        return Err(client_failure("pg_dumpall", target, &stderr));
    }
    content
}

/// The databases of the server at `uri` that accept connections (templates left out), as
/// URIs of the same server and user; the password stays in them.
pub fn list_databases(uri: &str) -> Result<Vec<String>> {
    let target = PgTarget::parse(uri)?;
    // Any database answers the question; `postgres` exists unless dropped on purpose.
    let probe = if target.names_database() {
        target.clone()
    } else {
        target.with_database("postgres")
    };
    let work = work_dir("list")?;
    let env = probe.client_env(work.path())?;
    let (psql, _) = connect(&probe, &env)?;
    let names = psql.query(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    )?;
    names
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .map(|db| conn::with_database_keeping_password(uri, &db))
        .collect()
}
