//! PostgreSQL backups out of the repository: restore into a database (`pg_restore` of the
//! stored dump, in parallel), write a standalone archive any `pg_restore` reads, and drills
//! (restore into a throwaway database, compare tables and row counts with the manifest, run
//! the user's check query, drop it, record the measured restore time).
//!
//! The dump is rebuilt into a private temporary folder first (every chunk checked against
//! its id), then handed to `pg_restore`: a corrupt or missing object stops the restore
//! before anything reaches the database.

use crate::error::{Error, ErrorKind, Result};
use crate::id::Hash;
use crate::ops::verify::VerifyReport;
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::manifest::Content;
use crate::repo::manifest::{Manifest, PostgresInfo};
use crate::repo::tree::{decode_node, EntryKind, TreeEntry};
use crate::repo::FrameCache;
use crate::repo::Repository;
use crate::source::postgres::archive::{self, TOC};
use crate::source::postgres::cluster::Cluster;
use crate::source::postgres::conn::{ClientEnv, PgTarget};
use crate::source::postgres::tools::{self, client_failure, Psql};
use crate::source::postgres::{connect, work_dir, GLOBALS_FILE};
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The PostgreSQL facts of a backup, or an error saying it is not one.
pub fn pg_info(m: &Manifest) -> Result<&PostgresInfo> {
    m.postgres.as_ref().ok_or_else(|| {
        Error::usage(format!(
            "backup {} is of {} ({}), not of a PostgreSQL database",
            m.id, m.source.path, m.source.kind
        ))
        .hint("--to restores PostgreSQL backups; restore this one with --output")
    })
}

/// How to restore into a database.
#[derive(Debug, Clone, Default)]
pub struct PgRestoreOptions {
    /// `postgres://…/DB`: where to restore.
    pub to: String,
    /// Create the database (it must not exist).
    pub create: bool,
    /// Drop the objects the dump creates before creating them (`pg_restore --clean`).
    pub clean: bool,
    /// Parallel pg_restore jobs.
    pub jobs: usize,
    /// Leave ownership and privileges out (restoring onto a server without the same roles).
    pub no_owner: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgRestored {
    /// The database restored into, as a URI without password.
    pub target: String,
    pub created: bool,
    /// The whole restore: reading the repository and pg_restore (psql, for globals), at once.
    pub restore_ms: u64,
    pub tables: usize,
    pub rows: u64,
    pub warnings: Vec<String>,
}

/// Restore backup `m` into the database `opts.to`.
pub fn restore_to_database(
    repo: &Repository,
    m: &Manifest,
    opts: &PgRestoreOptions,
    progress: &Progress,
) -> Result<PgRestored> {
    let info = pg_info(m)?;
    let target = PgTarget::parse(&opts.to)?;
    let work = work_dir("restore")?;
    let env = target.client_env(work.path())?;
    if info.dump_format == "globals" {
        return restore_globals(repo, m, &target, &env, work.path());
    }
    // A new database is built under a name that says it is incomplete, and renamed when the
    // restore is done: a restore that is killed leaves `<db>_lifeboat_incomplete`, never a
    // half-restored database under the name asked for.
    let into = if opts.create {
        ensure_absent(&target, &env)?;
        let building = target.with_database(&incomplete_name(&target.database()));
        // One left by a restore that was killed is dropped: the name says what it is.
        drop_database(&building, &env)?;
        create_database(&building, &env)?;
        building
    } else {
        check_empty(&target, &env, opts.clean)?;
        target.clone()
    };
    let created = opts.create;
    let started = Instant::now();
    let done = stream_restore(repo, m, work.path(), &into, &env, opts, progress, "restore");
    if done.is_err() && created {
        // A database Lifeboat created and could not fill must not pass for a restored one.
        if let Err(e) = drop_database(&into, &env) {
            tracing::warn!("could not drop the half-restored database: {e}");
        }
    }
    let done = done.map_err(|e| {
        if created {
            e
        } else {
            let hint = format!(
                "database {} may hold part of the backup now: restore again with --clean --yes, or into a new database with --create",
                target.database()
            );
            e.hint(hint)
        }
    })?;
    if created {
        // Complete: from here on a failure keeps the database, under the name it was built as.
        rename_database(&into, &target.database(), &env)?;
    }
    Ok(PgRestored {
        target: target.display(),
        created,
        restore_ms: started.elapsed().as_millis() as u64,
        tables: info.tables.len(),
        rows: info.tables.values().sum(),
        warnings: done,
    })
}

/// The name a database is built under by `restore --create` (at most 63 bytes, PostgreSQL's
/// limit, cut at a character boundary).
fn incomplete_name(db: &str) -> String {
    const SUFFIX: &str = "_lifeboat_incomplete";
    let mut keep = 63 - SUFFIX.len();
    while !db.is_char_boundary(keep.min(db.len())) {
        keep -= 1;
    }
    format!("{}{SUFFIX}", &db[..keep.min(db.len())])
}

fn rename_database(from: &PgTarget, to: &str, env: &ClientEnv) -> Result<()> {
    let maintenance = from.with_database("postgres");
    let (psql, _) = connect(&maintenance, env)?;
    let rename = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(&from.database()),
        quote_ident(to)
    );
    // A session still on the database (a monitoring tool that noticed it) stops the rename:
    // nobody else has business in a database being restored.
    let renamed = psql.query(&rename).or_else(|_| {
        psql.query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            from.database().replace('\'', "''")
        ))?;
        psql.query(&rename)
    });
    renamed.map_err(|e| {
        Error::new(
            e.kind,
            format!(
                "the restore is complete in database {}, but it could not be renamed to {to} \
                 (the database is kept as it is): {}",
                from.database(),
                e.message
            ),
        )
    })?;
    Ok(())
}

/// The database must not exist yet (`--create`).
fn ensure_absent(target: &PgTarget, env: &ClientEnv) -> Result<()> {
    match connect(target, env) {
        Ok(_) => Err(Error::usage(format!(
            "database {} exists already at {}; --create makes a new one",
            target.database(),
            target.server()
        ))
        .hint("restore into a new name with --create, or into this one without --create (with --clean --yes to replace what it holds)")),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_database(target: &PgTarget, env: &ClientEnv) -> Result<()> {
    let maintenance = target.with_database("postgres");
    let (psql, _) = connect(&maintenance, env)?;
    psql.query(&format!(
        "CREATE DATABASE {}",
        quote_ident(&target.database())
    ))?;
    Ok(())
}

/// The database must exist and hold no tables, views or sequences, unless `clean`.
fn check_empty(target: &PgTarget, env: &ClientEnv, clean: bool) -> Result<()> {
    let db = target.database();
    let psql = match connect(target, env) {
        Ok((psql, _)) => psql,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(Error::not_found(format!(
                "database {db} does not exist at {}",
                target.server()
            ))
            .hint("add --create to create it"))
        }
        Err(e) => return Err(e),
    };
    let tables = psql.value(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
    )?;
    if tables.trim() != "0" && !clean {
        return Err(Error::usage(format!(
            "database {db} at {} already holds {} tables, views or sequences",
            target.server(),
            tables.trim()
        ))
        .hint("restore into a new database with --create, or add --clean --yes to drop and recreate the objects the backup holds"));
    }
    Ok(())
}

fn drop_database(target: &PgTarget, env: &ClientEnv) -> Result<()> {
    let maintenance = target.with_database("postgres");
    let (psql, server) = connect(&maintenance, env)?;
    let force = if server.version_num >= 130000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    psql.query(&format!(
        "DROP DATABASE IF EXISTS {}{force}",
        quote_ident(&target.database())
    ))?;
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The files of a stored dump, by name.
struct StoredDump {
    files: Vec<TreeEntry>,
}

impl StoredDump {
    fn load(repo: &Repository, index: &Index, m: &Manifest) -> Result<StoredDump> {
        crate::repo::reach::known_kind(m)?;
        let Content::Tree { nodes, .. } = &m.content else {
            return Err(Error::integrity(format!(
                "backup {} is a PostgreSQL backup whose content is not a tree",
                m.id
            )));
        };
        let mut cache = FrameCache::default();
        let mut files = Vec::new();
        for hex in nodes {
            let id = Hash::from_hex(hex)?;
            let data = repo.read_blob_cached(index, &id, &mut cache)?;
            for e in decode_node(&data, &id)? {
                match e.kind {
                    EntryKind::File => {
                        // Names come from the repository: only plain names in the folder.
                        if e.path.is_empty()
                            || e.path.contains('/')
                            || e.path.starts_with('.')
                            || e.path_hex.is_some()
                        {
                            return Err(Error::integrity(format!(
                                "backup {} holds a file named '{}', which no pg_dump writes",
                                m.id, e.path
                            )));
                        }
                        files.push(e);
                    }
                    EntryKind::Dir if e.path.is_empty() => {}
                    _ => {
                        return Err(Error::integrity(format!(
                            "backup {} holds '{}', which is not a file of a pg_dump archive",
                            m.id, e.path
                        )))
                    }
                }
            }
        }
        Ok(StoredDump { files })
    }

    /// The table of contents, its data files checked: plain names, each once, all stored.
    fn toc(&self, repo: &Repository, index: &Index) -> Result<archive::Toc> {
        let toc = archive::parse_toc(&self.read_all(repo, index, TOC)?)?;
        archive::check_data_files(&toc)?;
        for e in toc.data_files() {
            self.get(&e.filename)?;
        }
        Ok(toc)
    }

    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    fn get(&self, name: &str) -> Result<&TreeEntry> {
        self.files
            .iter()
            .find(|f| f.path == name)
            .ok_or_else(|| Error::integrity(format!("the stored dump has no {name}")))
    }

    fn read_all(&self, repo: &Repository, index: &Index, name: &str) -> Result<Vec<u8>> {
        let entry = self.get(name)?;
        if entry.size > archive::MAX_LIST_BYTES {
            return Err(Error::integrity(format!(
                "the stored dump's {name} is {} bytes, more than any pg_dump writes",
                entry.size
            )));
        }
        let mut out = Vec::new();
        ChunkReader::new(repo, index, entry)?
            .read_to_end(&mut out)
            .map_err(|e| io_to_error(e, name))?;
        Ok(out)
    }
}

/// A stored file's bytes, chunk by chunk, each checked against its id; its size checked at
/// the end.
struct ChunkReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    name: String,
    ids: std::vec::IntoIter<Hash>,
    chunk: Vec<u8>,
    at: usize,
    read: u64,
    size: u64,
    cache: FrameCache,
}

impl<'a> ChunkReader<'a> {
    fn new(repo: &'a Repository, index: &'a Index, entry: &TreeEntry) -> Result<ChunkReader<'a>> {
        Ok(ChunkReader {
            repo,
            index,
            name: entry.path.clone(),
            ids: entry.chunk_ids()?.into_iter(),
            chunk: Vec::new(),
            at: 0,
            read: 0,
            size: entry.size,
            cache: FrameCache::default(),
        })
    }
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            crate::interrupt::check().map_err(std::io::Error::other)?;
            let Some(id) = self.ids.next() else {
                if self.read != self.size {
                    return Err(std::io::Error::other(Error::integrity(format!(
                        "{} restores to {} bytes but the backup recorded {}",
                        self.name, self.read, self.size
                    ))));
                }
                return Ok(0);
            };
            self.chunk = self
                .repo
                .read_blob_cached(self.index, &id, &mut self.cache)
                .map_err(std::io::Error::other)?;
            self.at = 0;
            self.read += self.chunk.len() as u64;
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An I/O error that carries a Lifeboat error (a chunk that failed its check) gives it back.
fn io_to_error(e: std::io::Error, name: &str) -> Error {
    Error::carried_by(e).unwrap_or_else(|e| Error::io("cannot write", Path::new(name), e))
}

/// Restore a stored dump with pg_restore without writing the tables' data to disk: the small
/// files (`toc.dat`, large objects) are written to `work`, each table's data file is a named
/// pipe, and each pipe is filled from the repository as pg_restore opens it (`--jobs` at
/// once). A chunk that fails its check stops pg_restore and the restore; so does a file that
/// pg_restore stops reading.
#[allow(clippy::too_many_arguments)]
fn stream_restore(
    repo: &Repository,
    m: &Manifest,
    work: &Path,
    target: &PgTarget,
    env: &ClientEnv,
    opts: &PgRestoreOptions,
    progress: &Progress,
    why: &str,
) -> Result<Vec<String>> {
    let info = pg_info(m)?;
    // The reader marker keeps a concurrent prune from deleting what the restore reads.
    crate::repo::locks::as_reader(repo.storage(), &repo.records(), why, || {
        let index = repo.load_index()?;
        let dump = StoredDump::load(repo, &index, m)?;
        progress.start("restore", dump.bytes());
        let done =
            stream_restore_marked(repo, &index, &dump, work, target, env, info, opts, progress);
        progress.finish();
        done
    })
}

#[allow(clippy::too_many_arguments)]
fn stream_restore_marked(
    repo: &Repository,
    index: &Index,
    dump: &StoredDump,
    work: &Path,
    target: &PgTarget,
    env: &ClientEnv,
    info: &PostgresInfo,
    opts: &PgRestoreOptions,
    progress: &Progress,
) -> Result<Vec<String>> {
    dump.toc(repo, index)?;
    let dir = work.join("dump");
    crate::storage::local::create_private_dir(&dir)?;
    let mut pipes = Vec::new();
    for f in &dump.files {
        let path = dir.join(&f.path);
        if archive::is_table_data(&f.path) {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(|e| Error::io("cannot create the pipe", &path, e.into()))?;
            pipes.push(f);
        } else {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| Error::io("cannot create", &path, e))?;
            let copied = std::io::copy(&mut ChunkReader::new(repo, index, f)?, &mut out)
                .map_err(|e| io_to_error(e, &f.path))?;
            progress.inc(copied);
        }
    }
    let (_, server) = connect(target, env)?;
    let major = (server.version_num / 10000).max(info.server_version_num / 10000);
    let client = tools::find("pg_restore", Some(major))?;
    let err_path = work.join("pg_restore.err");
    let err_file = crate::source::postgres::private_file(&err_path)?;
    let mut cmd = Command::new(&client.path);
    cmd.args(["--no-password", "--format=directory"])
        .arg(format!("--jobs={}", opts.jobs.max(1)))
        .arg(format!("--dbname={}", target.conn_uri()));
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    cmd.arg(&dir)
        .env("PGAPPNAME", "lifeboat")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file));
    env.apply(&mut cmd);
    let mut child = tools::Guarded::spawn(&mut cmd, &client.path)?;
    let fed: Result<()> = std::thread::scope(|s| {
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<()>>();
        let mut waiting: Vec<&TreeEntry> = pipes.clone();
        let mut running = 0usize;
        let mut first_error: Option<Error> = None;
        let mut exited = false;
        loop {
            // Pipes pg_restore opened: a writer each.
            waiting.retain(|f| {
                let path = dir.join(&f.path);
                match rustix::fs::open(
                    &path,
                    rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    Ok(fd) => {
                        let tx = done_tx.clone();
                        let f = *f;
                        running += 1;
                        s.spawn(move || {
                            let _ = tx.send(feed_pipe(repo, index, f, fd, progress));
                        });
                        false
                    }
                    Err(rustix::io::Errno::NXIO) => true,
                    Err(e) => {
                        first_error.get_or_insert(Error::io(
                            "cannot open the pipe",
                            &path,
                            e.into(),
                        ));
                        false
                    }
                }
            });
            while let Ok(r) = done_rx.try_recv() {
                running -= 1;
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
            if first_error.is_none() {
                if let Err(e) = crate::interrupt::check() {
                    first_error = Some(e);
                }
            }
            if first_error.is_some() && !exited {
                child.kill();
            }
            if !exited {
                exited = child
                    .try_wait()
                    .map_err(|e| Error::io("cannot wait for", &client.path, e))?
                    .is_some();
            }
            if exited && running == 0 {
                break;
            }
            if exited {
                // pg_restore is gone: a writer still blocked on its pipe gets EPIPE and ends.
                if let Ok(r) = done_rx.recv_timeout(std::time::Duration::from_millis(50)) {
                    running -= 1;
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                }
                continue;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    let status = child
        .wait()
        .map_err(|e| Error::io("cannot wait for", &client.path, e))?;
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    // A chunk that failed its check (or an interruption) is the cause; a pipe pg_restore
    // stopped reading is a symptom of what pg_restore says.
    match fed {
        Err(e) if e.kind != ErrorKind::Source || status.success() => return Err(e),
        _ => {}
    }
    if !status.success() {
        let e = client_failure("pg_restore", target, &stderr);
        return Err(Error::new(
            e.kind,
            format!(
                "the restore into {} failed: {}",
                target.display(),
                e.message
            ),
        )
        .hint(
            "pg_restore's messages above say what failed; often a role the dump names is missing \
             on this server (add --no-owner), an extension or object outside the dumped schemas \
             is missing (a backup with --schema leaves out extensions of other schemas: create \
             them first), or the database was not empty (add --clean --yes)",
        ));
    }
    Ok(stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .map(|l| l.to_string())
        .collect())
}

/// Fill one named pipe with a stored file, then close it.
fn feed_pipe(
    repo: &Repository,
    index: &Index,
    entry: &TreeEntry,
    fd: std::os::fd::OwnedFd,
    progress: &Progress,
) -> Result<()> {
    // Blocking writes from here on: pg_restore reads at its own pace.
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty())
        .map_err(|e| Error::io("cannot set up the pipe", Path::new(&entry.path), e.into()))?;
    let mut pipe = std::fs::File::from(fd);
    let mut reader = ChunkReader::new(repo, index, entry)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| io_to_error(e, &entry.path))?;
        if n == 0 {
            return Ok(());
        }
        pipe.write_all(&buf[..n]).map_err(|e| {
            Error::source(format!(
                "pg_restore stopped reading {} ({e}); its messages say why",
                entry.path
            ))
        })?;
        progress.inc(n as u64);
    }
}

fn restore_globals(
    repo: &Repository,
    m: &Manifest,
    target: &PgTarget,
    env: &ClientEnv,
    work: &Path,
) -> Result<PgRestored> {
    let started = Instant::now();
    let script = crate::repo::locks::as_reader(repo.storage(), &repo.records(), "restore", || {
        let index = repo.load_index()?;
        StoredDump::load(repo, &index, m)?.read_all(repo, &index, GLOBALS_FILE)
    })?;
    let path = work.join(GLOBALS_FILE);
    let script = restricted_script(&script, &tools::find("psql", None)?)?;
    crate::source::postgres::private_file(&path)?
        .write_all(&script)
        .map_err(|e| Error::io("cannot write", &path, e))?;
    let (psql, _) = connect(target, env)?;
    let mut cmd = Command::new(&psql.client.path);
    // Roles that exist already fail their CREATE ROLE and the script goes on: the rest still
    // applies (their ALTER ROLE sets the stored attributes and passwords).
    cmd.args(["-X", "-q", "--no-password", "-f"])
        .arg(&path)
        .arg(format!("--dbname={}", target.conn_uri()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    env.apply(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| Error::io("cannot run", &psql.client.path, e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(client_failure("psql", target, &stderr));
    }
    Ok(PgRestored {
        target: target.display(),
        created: false,
        restore_ms: started.elapsed().as_millis() as u64,
        tables: 0,
        rows: 0,
        warnings: stderr
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_string)
            .collect(),
    })
}

/// Write backup `m` as a tar-format archive at `output`, which `pg_restore` reads without
/// Lifeboat (`pg_restore -d DB FILE`); a globals backup is written as its SQL script.
pub fn write_archive(
    repo: &Repository,
    m: &Manifest,
    output: &Path,
    overwrite: bool,
    progress: &Progress,
) -> Result<u64> {
    let info = pg_info(m)?;
    if output.exists() && !overwrite {
        return Err(Error::usage(format!("{} exists already", output.display()))
            .hint("give a new file name, or add --yes to replace it"));
    }
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lifeboat-archive-")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create a file in", parent, e))?;
    let written =
        crate::repo::locks::as_reader(repo.storage(), &repo.records(), "restore", || {
            let index = repo.load_index()?;
            let dump = StoredDump::load(repo, &index, m)?;
            progress.start("restore", dump.bytes());
            let out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let written = if info.dump_format == "globals" {
                let mut out = out;
                let n = std::io::copy(
                    &mut ChunkReader::new(repo, &index, dump.get(GLOBALS_FILE)?)?,
                    &mut out,
                )
                .map_err(|e| io_to_error(e, GLOBALS_FILE))?;
                out.flush()
                    .map_err(|e| Error::io("cannot write", output, e))?;
                n
            } else {
                write_tar(repo, &index, &dump, out, output)?
            };
            progress.finish();
            Ok(written)
        })?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot write", output, e))?;
    // Without --yes, a file that appeared at OUTPUT meanwhile is not replaced either.
    if overwrite {
        tmp.persist(output)
            .map_err(|e| Error::io("cannot write", output, e.error))?;
    } else {
        tmp.persist_noclobber(output)
            .map_err(|e| Error::io("cannot write", output, e.error))?;
    }
    Ok(written)
}

/// The tar format of pg_dump: `toc.dat`, then the data files in the order of the table of
/// contents (pg_restore reads a tar front to back), large objects where their entry is,
/// each `blob_<oid>.dat` before `blobs.toc`. Directory and tar archives share `toc.dat`
/// (both name each entry's file the same way).
fn write_tar<W: Write>(
    repo: &Repository,
    index: &Index,
    dump: &StoredDump,
    out: W,
    output: &Path,
) -> Result<u64> {
    let toc = dump.toc(repo, index)?;
    let mut tar = tar::Builder::new(out);
    let mut written = 0u64;
    let mut add = |tar: &mut tar::Builder<W>, name: &str| -> Result<()> {
        let entry = dump.get(name)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.size);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = ChunkReader::new(repo, index, entry)?;
        tar.append_data(&mut header, name, &mut reader)
            .map_err(|e| io_to_error(e, name))?;
        written += entry.size;
        Ok(())
    };
    add(&mut tar, TOC)?;
    for entry in toc.data_files() {
        if archive::is_blobs_list(&entry.filename) {
            let list = dump.read_all(repo, index, &entry.filename)?;
            for line in String::from_utf8_lossy(&list).lines() {
                if let Some(file) = line.split_whitespace().nth(1) {
                    add(&mut tar, file)?;
                }
            }
        }
        add(&mut tar, &entry.filename)?;
    }
    let mut inner = tar
        .into_inner()
        .map_err(|e| Error::io("cannot write", output, e))?;
    inner
        .flush()
        .map_err(|e| Error::io("cannot write", output, e))?;
    Ok(written)
}

/// Check a rebuilt dump against its manifest without a server: the table of contents reads,
/// and every table's data file is complete and holds the rows the backup recorded.
pub fn check_dump(dump: &Path, info: &PostgresInfo) -> Vec<(&'static str, bool, String)> {
    if info.dump_format == "globals" {
        let ok = dump.join(GLOBALS_FILE).is_file();
        return vec![("roles and tablespaces script", ok, GLOBALS_FILE.to_string())];
    }
    let toc_path = dump.join(TOC);
    let too_big = std::fs::metadata(&toc_path).is_ok_and(|m| m.len() > archive::MAX_LIST_BYTES);
    if too_big {
        return vec![(
            "table of contents",
            false,
            "larger than any pg_dump writes".into(),
        )];
    }
    let toc = match std::fs::read(&toc_path)
        .map_err(|e| Error::io("cannot read", &toc_path, e))
        .and_then(|b| archive::parse_toc(&b))
    {
        Ok(t) => t,
        Err(e) => return vec![("table of contents", false, e.to_string())],
    };
    if let Err(e) = archive::check_data_files(&toc) {
        return vec![("table of contents", false, e.to_string())];
    }
    let mut steps = vec![(
        "table of contents",
        true,
        format!("{} entries", toc.entries.len()),
    )];
    let schema_ok = toc.schema_sha256() == info.schema_sha256;
    steps.push(("schema checksum matches", schema_ok, toc.schema_sha256()));
    let mut wrong = Vec::new();
    let mut rows_total = 0u64;
    let tables = toc.table_files();
    for (file, table) in &tables {
        let mut counter = archive::RowCounter::default();
        let counted = std::fs::File::open(dump.join(file)).and_then(|f| {
            let mut r = archive::Counting {
                inner: std::io::BufReader::with_capacity(1 << 20, f),
                counter: &mut counter,
            };
            std::io::copy(&mut r, &mut std::io::sink())
        });
        let rows = counted.ok().and_then(|_| counter.rows());
        rows_total += rows.unwrap_or(0);
        match (rows, info.tables.get(table)) {
            (Some(n), Some(&want)) if n == want => {}
            (n, want) => wrong.push(format!(
                "{table}: {} in the dump, {} recorded",
                n.map_or("incomplete data".into(), |n| format!("{n} rows")),
                want.map_or("none".into(), |w| format!("{w} rows"))
            )),
        }
    }
    let same_tables = tables.len() == info.tables.len();
    steps.push((
        "row counts match",
        wrong.is_empty() && same_tables,
        if wrong.is_empty() && same_tables {
            format!("{} tables, {rows_total} rows", tables.len())
        } else if !wrong.is_empty() {
            join_some(&wrong)
        } else {
            format!(
                "{} tables in the dump, {} recorded",
                tables.len(),
                info.tables.len()
            )
        },
    ));
    steps
}

/// How to drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// A server where a database may be created and dropped; else a throwaway local cluster.
    pub server: Option<String>,
    /// The user's check: SQL run in the restored database; it passes when it runs and its
    /// first value is not false, 0 or empty.
    pub query: Option<String>,
    pub jobs: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// `id`, `ok` and the `steps`, as `verify` reports them.
    #[serde(flatten)]
    pub check: VerifyReport,
    /// Where the drill restored (a URI without password, or "throwaway cluster").
    pub restored_into: String,
    /// Restore time objective as measured: reading the repository and pg_restore, at once.
    pub rto_ms: u64,
}

impl DrillReport {
    pub(crate) fn push(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.check.push(name, ok, detail);
    }

    pub fn ok(&self) -> bool {
        self.check.ok
    }

    pub fn first_failure(&self) -> Option<&str> {
        self.check.first_failure()
    }

    /// A drill that passed is recorded beside the backup (`verified/<id>`), with its
    /// measured restore time.
    pub fn record(&self, repo: &Repository, id: &str) {
        if !self.ok() {
            return;
        }
        let record = serde_json::json!({
            "drill": true,
            "rto_ms": self.rto_ms,
            "restored_into": self.restored_into,
        });
        if let Err(e) = crate::ops::forget::record_verified_with(repo, id, record) {
            tracing::warn!("could not record the drill of {id}: {e}");
        }
    }
}

/// Restore `m` into a throwaway database, compare it with the manifest, run the check
/// query, drop it; record the result beside the backup when it passed.
pub fn drill(
    repo: &Repository,
    m: &Manifest,
    opts: &DrillOptions,
    progress: &Progress,
) -> Result<DrillReport> {
    let info = pg_info(m)?.clone();
    if info.dump_format == "globals" {
        return Err(Error::usage(format!(
            "backup {} holds a server's roles and tablespaces, which a drill does not restore",
            m.id
        ))
        .hint("drill the backups of its databases; `lifeboat verify` checks this one"));
    }
    let mut report = DrillReport {
        check: VerifyReport::new(&m.id),
        restored_into: String::new(),
        rto_ms: 0,
    };
    // The cluster (when local) outlives everything that connects to it.
    let cluster;
    // One name per drill: two drills of a backup on one server must not drop each other's.
    let name = format!(
        "lifeboat_drill_{}_{:08x}",
        m.id.to_ascii_lowercase(),
        rand::random::<u32>()
    );
    let target = match &opts.server {
        Some(uri) => {
            let server = PgTarget::parse(uri)?;
            report.restored_into = server.with_database(&name).display();
            server.with_database(&name)
        }
        None => {
            let major = info.server_version_num / 10000;
            cluster = Cluster::start(major)?;
            report.restored_into = format!("a throwaway PostgreSQL {major} cluster");
            cluster.target(&name)?
        }
    };
    let restore_opts = PgRestoreOptions {
        to: String::new(),
        create: true,
        clean: false,
        jobs: opts.jobs.max(1),
        no_owner: true,
    };
    let work = work_dir("drill")?;
    let env = target.client_env(work.path())?;
    create_database(&target, &env)?;
    let result = drill_in(
        repo,
        m,
        &info,
        &target,
        &env,
        work.path(),
        &restore_opts,
        opts,
        progress,
        &mut report,
    );
    let dropped = drop_database(&target, &env);
    result?;
    match dropped {
        Ok(()) => report.push("drop the drill's database", true, name),
        Err(e) => report.push("drop the drill's database", false, e.to_string()),
    }
    report.record(repo, &m.id);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn drill_in(
    repo: &Repository,
    m: &Manifest,
    info: &PostgresInfo,
    target: &PgTarget,
    env: &ClientEnv,
    work: &Path,
    restore_opts: &PgRestoreOptions,
    opts: &DrillOptions,
    progress: &Progress,
    report: &mut DrillReport,
) -> Result<()> {
    let started = Instant::now();
    let restored = stream_restore(repo, m, work, target, env, restore_opts, progress, "drill");
    match restored {
        Ok(_) => report.push(
            "read and check every object",
            true,
            "every chunk matches its id",
        ),
        Err(e) if e.kind == ErrorKind::Integrity || e.kind == ErrorKind::NotFound => {
            report.push("read and check every object", false, e.to_string());
            return Ok(());
        }
        Err(e) => {
            report.push("pg_restore", false, e.to_string());
            return Ok(());
        }
    }
    report.rto_ms = started.elapsed().as_millis() as u64;
    report.push(
        "pg_restore",
        true,
        format!("restored in {:.1} s", report.rto_ms as f64 / 1000.0),
    );
    let (psql, _) = connect(target, env)?;
    compare_tables(&psql, info, report)?;
    if info.large_objects > 0 {
        let n = psql.value("SELECT count(*) FROM pg_largeobject_metadata")?;
        let n: u64 = n.trim().parse().unwrap_or(u64::MAX);
        report.push(
            "large objects match",
            n == info.large_objects,
            format!("{n} of {}", info.large_objects),
        );
    }
    if let Some(q) = &opts.query {
        match psql.query(q) {
            Ok(rows) => {
                let first = rows
                    .first()
                    .and_then(|r| r.first())
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default();
                let passed = !matches!(first.as_str(), "" | "f" | "false" | "0");
                report.push(
                    "check query",
                    passed,
                    format!(
                        "first value: {}",
                        if first.is_empty() { "(none)" } else { &first }
                    ),
                );
            }
            Err(e) => report.push("check query", false, e.to_string()),
        }
    }
    Ok(())
}

/// Tables of the restored database and their rows against the manifest.
fn compare_tables(psql: &Psql, info: &PostgresInfo, report: &mut DrillReport) -> Result<()> {
    let present: std::collections::BTreeSet<String> = psql
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%'",
        )?
        .into_iter()
        .filter_map(|r| Some(archive::table_key(r.first()?, r.get(1)?)))
        .collect();
    let missing: Vec<&String> = info
        .tables
        .keys()
        .filter(|k| !present.contains(*k))
        .collect();
    report.push(
        "tables match",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} tables", info.tables.len())
        } else {
            format!("missing after the restore: {}", join_some(&missing))
        },
    );
    let keys: Vec<&String> = info
        .tables
        .keys()
        .filter(|k| present.contains(*k))
        .collect();
    let mut wrong = Vec::new();
    for batch in keys.chunks(200) {
        let mut sql = Vec::new();
        for (i, key) in batch.iter().enumerate() {
            sql.push(format!(
                "SELECT {i}, count(*) FROM ONLY {}",
                archive::key_to_sql(key)?
            ));
        }
        let rows = psql.query(&sql.join(" UNION ALL "))?;
        for r in rows {
            let (Some(i), Some(n)) = (r.first(), r.get(1)) else {
                continue;
            };
            let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.parse::<u64>()) else {
                continue;
            };
            let Some(key) = batch.get(i) else { continue };
            let want = info.tables[*key];
            if n != want {
                wrong.push(format!("{key}: {n} rows, backed up {want}"));
            }
        }
    }
    let rows: u64 = info.tables.values().sum();
    report.push(
        "row counts match",
        wrong.is_empty() && missing.is_empty(),
        if wrong.is_empty() {
            format!("{rows} rows")
        } else {
            join_some(&wrong)
        },
    );
    Ok(())
}

fn join_some<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(|i| i.to_string()).collect();
    if items.len() > 5 {
        format!("{} and {} more", shown.join(", "), items.len() - 5)
    } else {
        shown.join(", ")
    }
}

/// The roles script to run: pg_dumpall writes SQL only (its own `\restrict` lines aside), so
/// a line starting with a psql command (`\!`, `\o`, `\copy` …) was not written by it and
/// the script is refused. The script then runs under a `\restrict` key of Lifeboat's own
/// (psql 13.22, 14.19, 15.14, 16.10, 17.6 and later), which forbids psql commands anywhere
/// in it, even mid-line.
fn restricted_script(script: &[u8], psql: &tools::Client) -> Result<Vec<u8>> {
    let text = String::from_utf8_lossy(script);
    let mut body = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("\\restrict ") || t.starts_with("\\unrestrict ") {
            continue;
        }
        if t.starts_with('\\') {
            return Err(Error::integrity(format!(
                "the stored roles script holds the psql command '{}', which pg_dumpall never writes; it was not run",
                t.split_whitespace().next().unwrap_or(t)
            ))
            .hint("the repository may have been tampered with: restore the roles from a backup you trust"));
        }
        body.push_str(line);
        body.push('\n');
    }
    let key = hex::encode(rand::random::<[u8; 16]>());
    let mut out = String::new();
    if restrict_supported(&psql.version) {
        out.push_str(&format!("\\restrict {key}\n"));
        out.push_str(&body);
        out.push_str(&format!("\\unrestrict {key}\n"));
    } else {
        out.push_str(&body);
    }
    Ok(out.into_bytes())
}

/// Whether this psql knows `\restrict` (added in the August 2025 minor releases).
fn restrict_supported(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(version: &str) -> tools::Client {
        tools::Client {
            path: "psql".into(),
            version: version.into(),
            major: tools::parse_major(version).unwrap_or(0),
        }
    }

    #[test]
    fn a_roles_script_runs_restricted_and_psql_commands_are_refused() {
        let script =
            b"\\restrict abc\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN;\n\\unrestrict abc\n";
        let out = String::from_utf8(restricted_script(script, &client("15.18 (Debian)")).unwrap())
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("\\restrict ") && lines[0] != "\\restrict abc");
        assert_eq!(
            &lines[1..3],
            ["CREATE ROLE app;", "ALTER ROLE app WITH LOGIN;"]
        );
        assert!(lines[3].starts_with("\\unrestrict ") && lines[3][12..] == lines[0][10..]);
        let planted = b"CREATE ROLE app;\n  \\! id > /tmp/x\n";
        let e = restricted_script(planted, &client("15.18")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Integrity);
        assert!(!restrict_supported("15.13"));
        assert!(restrict_supported("18.1"));
    }

    #[test]
    fn incomplete_names_fit_postgres_limit() {
        assert_eq!(incomplete_name("shop"), "shop_lifeboat_incomplete");
        let long = "é".repeat(40);
        let n = incomplete_name(&long);
        assert!(n.len() <= 63 && n.ends_with("_lifeboat_incomplete"), "{n}");
    }
}
