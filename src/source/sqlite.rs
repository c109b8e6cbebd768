//! SQLite: a consistent page stream from a live database without writing to it.
//!
//! The snapshot is one read transaction on a read-only connection; pages come from the
//! `sqlite_dbpage` virtual table, which reads through SQLite's pager and so sees committed
//! pages that are still only in the `-wal` file. In WAL mode writers keep committing while we
//! read; in rollback-journal mode they wait for our shared lock (SQLite's own rule). No
//! checkpoint is forced and the journal mode is never changed.

use super::{BackedUp, ContentWriter, Cut, Facts, Kind, Snapshot, Source, SourceFacts};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::id::Sha256Stream;
use crate::repo::manifest::DatabaseInfo;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Files beside a database that belong to it: a restore removes stale ones.
pub const SIDECARS: &[&str] = &["-wal", "-shm", "-journal"];
/// Those that hold data, moved aside with a database a restore replaces without a safety
/// backup (`-shm` is only an index of the `-wal`).
pub const KEPT_SIDECARS: &[&str] = &["-wal", "-journal"];

pub struct SqliteSnapshot {
    conn: Connection,
    path: PathBuf,
    page_size: u32,
    page_count: u64,
    pub journal_mode: String,
    /// Our own descriptor of the database file, for direct reads. Closing any descriptor of a
    /// file drops every POSIX lock this process holds on it, SQLite's shared lock included, so
    /// it stays open until the connection has closed (fields drop after `Drop::drop`, in order).
    /// Shared with a caller that keeps other connections to the database open (replication),
    /// which holds it until they have closed too.
    db_file: std::sync::Arc<std::fs::File>,
}

/// Check that `path` is a SQLite database file, with an error a person can act on.
pub fn check_is_sqlite(path: &Path) -> Result<()> {
    let mut f = super::open_database_file(path, "SQLite")?;
    let mut head = [0u8; 16];
    let n = f
        .read(&mut head)
        .map_err(|e| super::unreadable(path, "cannot read", e))?;
    if n < 16 || &head != HEADER {
        return Err(Error::source(format!(
            "{} is not a SQLite database (no SQLite header)",
            path.display()
        ))
        .hint("point lifeboat at the database file itself, not a dump or a -wal file"));
    }
    Ok(())
}

/// How long to wait for another process's lock on the database: `LIFEBOAT_BUSY_TIMEOUT`
/// seconds, default 30.
fn busy_timeout() -> Duration {
    std::env::var("LIFEBOAT_BUSY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        // At most a day: SQLite takes milliseconds in an int.
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(30), |s| {
            Duration::from_secs_f64(s.min(86_400.0))
        })
}

/// A SQLite error as an operator reads it: a lock held past the busy timeout is "in use"
/// (exit 6, try again later), anything else a bad source (exit 5).
fn sqlite_error(path: &Path, action: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => Error::new(
            ErrorKind::InUse,
            format!(
                "{} is locked by another process (busy timeout {} s): {e}",
                path.display(),
                busy_timeout().as_secs_f64()
            ),
        )
        .hint(
            "a program holds a long write transaction (or an exclusive lock) on it; run the \
             backup again when it is done. In WAL mode (`PRAGMA journal_mode=WAL`) only \
             checkpoints and exclusive locks make a backup wait; LIFEBOAT_BUSY_TIMEOUT sets how \
             long it waits (seconds)",
        ),
        _ => Error::source(format!("{action} {}: {e}", path.display())),
    }
}

impl SqliteSnapshot {
    pub fn open(path: &Path) -> Result<SqliteSnapshot> {
        check_is_sqlite(path)?;
        let db_file = std::fs::File::open(path).ctx("cannot open", path)?;
        Self::open_sharing(path, std::sync::Arc::new(db_file))
    }

    /// A snapshot reading the database through `db_file`, a descriptor of it the caller keeps
    /// open for as long as it has any connection to the database: this opens and closes no
    /// other descriptor of the file (closing one would drop the caller's SQLite locks).
    pub fn open_sharing(
        path: &Path,
        db_file: std::sync::Arc<std::fs::File>,
    ) -> Result<SqliteSnapshot> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| sqlite_error(path, "cannot open", e))?;
        let ctx = |e: rusqlite::Error| sqlite_error(path, "cannot read", e);
        // Wait for a writer's lock rather than failing at once; in WAL mode readers never wait.
        conn.busy_timeout(busy_timeout()).map_err(ctx)?;
        conn.pragma_update(None, "cache_size", -2048).map_err(ctx)?;
        conn.execute_batch("BEGIN").map_err(ctx)?;
        // The first read fixes the snapshot for the whole transaction.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| match sqlite_error(path, "cannot read", e) {
                e if e.kind == ErrorKind::InUse => e,
                e => e.hint("is it a SQLite database, and is it readable by this user?"),
            })?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(ctx)?;
        let page_count: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(ctx)?;
        let page_count = page_count as u64;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(ctx)?;
        Ok(SqliteSnapshot {
            conn,
            path: path.to_path_buf(),
            page_size,
            page_count,
            journal_mode,
            db_file,
        })
    }
}

impl Snapshot for SqliteSnapshot {
    fn block_size(&self) -> u32 {
        self.page_size
    }
    fn len(&self) -> u64 {
        self.page_count * u64::from(self.page_size)
    }

    fn read_chunks(&mut self, f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        if std::env::var_os("LIFEBOAT_SQLITE_READ").is_some_and(|v| v == "dbpage") {
            return self.read_all_through_sqlite(f);
        }
        self.read_file_with_wal_overlay(f)
    }
}

/// A SQLite database as a [`Source`]: its pages, read in one read transaction.
pub struct SqliteSource {
    path: PathBuf,
    /// A snapshot opened beforehand (at a moment the caller chose).
    snapshot: Option<SqliteSnapshot>,
}

impl SqliteSource {
    pub fn new(path: &Path) -> Result<SqliteSource> {
        check_is_sqlite(path)?;
        Ok(SqliteSource {
            path: path.to_path_buf(),
            snapshot: None,
        })
    }

    /// The source of a snapshot already open.
    pub fn of_snapshot(snapshot: SqliteSnapshot) -> SqliteSource {
        SqliteSource {
            path: snapshot.path.clone(),
            snapshot: Some(snapshot),
        }
    }
}

impl Source for SqliteSource {
    fn kind(&self) -> Kind {
        Kind::Sqlite
    }

    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
        let mut snap = match self.snapshot.take() {
            Some(s) => s,
            None => SqliteSnapshot::open(&self.path)?,
        };
        let image = writer.image(&mut snap, Cut::Pages)?;
        let facts = facts(&snap.conn)?;
        let info = DatabaseInfo {
            page_size: snap.page_size,
            page_count: snap.page_count,
            logical_bytes: snap.len(),
            sha256: image.sha256,
            schema_hash: facts.schema_hash,
            tables: facts.tables,
            journal_mode: snap.journal_mode.clone(),
            sqlite_version: sqlite_version(),
        };
        drop(snap); // ends the read transaction
        if image.content.items() != info.page_count {
            return Err(Error::source(format!(
                "read {} pages from {} but it has {}",
                image.content.items(),
                self.path.display(),
                info.page_count
            )));
        }
        Ok(BackedUp {
            content: image.content,
            facts: SourceFacts::Sqlite(info),
            warnings: Vec::new(),
        })
    }
}

/// Bytes per read and per chunk handed to the backup pipeline. Cold 128 KiB reads cost a
/// third of the kernel time of 1 MiB reads on the machines measured here (the copy target
/// stays in the CPU cache).
const CHUNK_BYTES: usize = 128 << 10;

impl SqliteSnapshot {
    /// The page holding SQLite's lock bytes (byte 2^30); never written, always zeros in images.
    fn lock_byte_page(&self) -> u64 {
        (1u64 << 30) / u64::from(self.page_size) + 1
    }

    /// Every page through `sqlite_dbpage`: simple, but ~16 µs of SQLite machinery per page.
    /// Kept as the reference path (`LIFEBOAT_SQLITE_READ=dbpage`) that tests compare against.
    fn read_all_through_sqlite(
        &mut self,
        f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let size = self.page_size as usize;
        let per_chunk = (CHUNK_BYTES / size).max(1);
        let mut chunk = Vec::with_capacity(per_chunk * size);
        let mut stmt =
            self.dbpage_statement("SELECT pgno, data FROM sqlite_dbpage WHERE pgno <= ?1")?;
        let mut rows = stmt.query([self.page_count as i64])?;
        let mut next: u64 = 1;
        let mut emit = |chunk: &mut Vec<u8>, page: &[u8]| -> Result<()> {
            chunk.extend_from_slice(page);
            if chunk.len() >= per_chunk * size {
                f(chunk)?;
                chunk.clear();
            }
            Ok(())
        };
        let zero = vec![0u8; size];
        while let Some(row) = rows.next()? {
            let pgno = row.get::<_, i64>(0)? as u64;
            while next < pgno {
                emit(&mut chunk, &zero)?;
                next += 1;
            }
            let data = page_blob(row, 1, pgno, size)?;
            emit(&mut chunk, data)?;
            next = pgno + 1;
        }
        while next <= self.page_count {
            emit(&mut chunk, &zero)?;
            next += 1;
        }
        if !chunk.is_empty() {
            f(&mut chunk)?;
        }
        Ok(())
    }

    /// Large sequential reads of the database file, with every page that appears anywhere in
    /// the `-wal` file read through `sqlite_dbpage` instead.
    ///
    /// Why this is consistent: while our read transaction is open, SQLite changes a page in
    /// the main file only by checkpointing a WAL frame of it, and only frames up to our
    /// snapshot's end (a checkpoint never backfills past the oldest reader; a reader that
    /// ignores the WAL holds `WAL_READ_LOCK(0)`, which blocks backfill entirely). Every such
    /// frame is in the WAL file when we list it, after the snapshot began (the WAL cannot be
    /// restarted under a reader that uses it). So a page absent from the list is the same in
    /// the file and in our snapshot; listing every frame, valid or stale, only sends more
    /// pages down the exact path. In rollback-journal mode our shared lock keeps writers out
    /// of the file and the WAL list is empty.
    fn read_file_with_wal_overlay(
        &mut self,
        f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let size = self.page_size as usize;
        let in_wal = wal_pages(&self.path, self.page_size)?;
        let file = &self.db_file;
        let per_chunk = (CHUNK_BYTES / size).max(1) as u64;
        let lock_page = self.lock_byte_page();
        let mut stmt = self.dbpage_statement("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")?;
        let mut buf = vec![0u8; per_chunk as usize * size];
        let mut first: u64 = 1;
        let mut prefetched: u64 = 0;
        while first <= self.page_count {
            let n = per_chunk.min(self.page_count - first + 1);
            let offset = (first - 1) * size as u64;
            if offset + PREFETCH_BYTES / 2 >= prefetched {
                // Keep the disk busy ahead of us, so reading overlaps hashing instead of
                // alternating with it (cold second backups varied from 1.7 s to 2.5 s).
                prefetch(file, prefetched.max(offset), PREFETCH_BYTES);
                prefetched = prefetched.max(offset) + PREFETCH_BYTES;
            }
            // `f` may have kept the last buffer and handed back another: size this one.
            buf.resize(n as usize * size, 0);
            let chunk = &mut buf[..];
            let got = read_full_at(file, chunk, (first - 1) * size as u64)
                .ctx("cannot read", &self.path)?;
            for i in 0..n {
                let pgno = first + i;
                let page = &mut chunk[i as usize * size..(i as usize + 1) * size];
                let beyond_file = (i as usize + 1) * size > got;
                if pgno == lock_page {
                    page.fill(0);
                } else if beyond_file || in_wal.contains(&(pgno as u32)) {
                    let mut rows = stmt.query([pgno as i64])?;
                    match rows.next()? {
                        Some(row) => page.copy_from_slice(page_blob(row, 0, pgno, size)?),
                        None => page.fill(0),
                    }
                }
            }
            f(&mut buf)?;
            first += n;
        }
        Ok(())
    }

    fn dbpage_statement(&self, sql: &str) -> Result<rusqlite::Statement<'_>> {
        self.conn.prepare(sql).map_err(|e| {
            Error::internal(format!(
                "sqlite_dbpage is unavailable ({e}); lifeboat was built without \
                 SQLITE_ENABLE_DBPAGE_VTAB"
            ))
        })
    }
}

/// Column `col` of a `sqlite_dbpage` row: one page of exactly `size` bytes.
fn page_blob<'r>(row: &'r rusqlite::Row, col: usize, pgno: u64, size: usize) -> Result<&'r [u8]> {
    let data = row
        .get_ref(col)?
        .as_blob()
        .map_err(|e| Error::source(format!("page {pgno}: {e}")))?;
    if data.len() != size {
        return Err(Error::source(format!(
            "page {pgno} has {} bytes, expected {size}",
            data.len()
        )));
    }
    Ok(data)
}

/// How far ahead of the reader the database file is requested from the disk.
const PREFETCH_BYTES: u64 = 16 << 20;

/// Ask the kernel to read a range of the file into the page cache in the background.
fn prefetch(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advisory syscall on a descriptor we own; it changes no memory of ours.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// Read as much of `buf` as the file has at `offset` (short only at end of file).
fn read_full_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Page numbers of every frame in `DB-wal` (each frame starts with its page number, 4 bytes
/// big-endian, after the 32-byte file header). Reads only the frame headers.
fn wal_pages(db: &Path, page_size: u32) -> Result<std::collections::HashSet<u32>> {
    use std::os::unix::fs::FileExt;
    let mut pages = std::collections::HashSet::new();
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal_path = PathBuf::from(wal_path);
    let wal = match std::fs::File::open(&wal_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pages),
        Err(e) => return Err(Error::io("cannot open", &wal_path, e)),
    };
    let len = wal.metadata().ctx("cannot stat", &wal_path)?.len();
    let frame = 24 + u64::from(page_size);
    let mut off = 32;
    let mut head = [0u8; 4];
    while off + 4 <= len {
        match wal.read_at(&mut head, off) {
            Ok(4) => {}
            Ok(_) => break, // the file shrank (WAL truncated): frames past here are gone
            Err(e) => return Err(Error::io("cannot read", &wal_path, e)),
        }
        pages.insert(u32::from_be_bytes(head));
        off += frame;
    }
    Ok(pages)
}

impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

/// Schema hash and row counts of an open database (source snapshot or restored copy).
pub fn facts(conn: &Connection) -> Result<Facts> {
    let mut hasher = Sha256Stream::default();
    let mut tables = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (ty, name, tbl, sql): (String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            for part in [&ty, &name, &tbl, &sql] {
                hasher.update(&(part.len() as u64).to_le_bytes());
                hasher.update(part.as_bytes());
            }
            let virtual_table = sql.to_ascii_uppercase().starts_with("CREATE VIRTUAL");
            if ty == "table" && !virtual_table {
                tables.push(name);
            }
        }
    }
    let mut counts = BTreeMap::new();
    for t in tables {
        let q = format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\""));
        let n: i64 = conn.query_row(&q, [], |r| r.get(0))?;
        counts.insert(t, n as u64);
    }
    Ok(Facts {
        schema_hash: hasher.finish_hex(),
        tables: counts,
    })
}

/// Processes (pid, command name) holding `db` or its `-wal` open, found through `/proc`.
/// Used to refuse an in-place restore under a running application and say who it is.
pub fn processes_using(db: &Path) -> Vec<(u32, String)> {
    let Ok(target) = db.canonicalize() else {
        return Vec::new();
    };
    let mut wal = target.clone().into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let uses = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target || l == wal));
        if uses {
            let name = std::fs::read_to_string(p.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            found.push((pid, name));
        }
    }
    found
}

/// The SQLite library version linked into lifeboat.
pub fn sqlite_version() -> String {
    rusqlite::version().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_streams_every_page_and_facts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);",
        )
        .unwrap();
        let mut s = SqliteSnapshot::open(&db).unwrap();
        assert_eq!(s.journal_mode, "wal");
        let mut n = 0u64;
        s.read_chunks(&mut |p| {
            assert_eq!(p.len() % s_len(), 0);
            n += (p.len() / s_len()) as u64;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, s.page_count);
        let facts = facts(&s.conn).unwrap();
        assert_eq!(facts.tables["t"], 3);
        fn s_len() -> usize {
            4096
        }
    }

    fn image(s: &mut SqliteSnapshot, through_sqlite: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f = |c: &mut Vec<u8>| {
            out.extend_from_slice(c);
            Ok(())
        };
        if through_sqlite {
            s.read_all_through_sqlite(&mut f).unwrap();
        } else {
            s.read_file_with_wal_overlay(&mut f).unwrap();
        }
        out
    }

    #[test]
    fn file_reads_with_wal_overlay_equal_sqlite_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let w = Connection::open(&db).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
        let insert = |from: i64, to: i64| {
            w.execute(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i+1 FROM n WHERE i < ?2)
                 INSERT INTO t SELECT i, printf('row %d %s', i, hex(randomblob(40))) FROM n",
                [from, to],
            )
            .unwrap();
        };
        insert(1, 3000);
        w.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        // Committed pages now live only in the WAL: updates, and growth past the file's end.
        insert(3001, 6000);
        w.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0", [])
            .unwrap();
        let mut s = SqliteSnapshot::open(&db).unwrap();
        let file_len = std::fs::metadata(&db).unwrap().len();
        assert!(
            file_len < s.len(),
            "the test needs pages beyond the main file"
        );
        let fast = image(&mut s, false);
        // A writer commits and checkpoints while the snapshot is open; it must not show.
        w.execute("DELETE FROM t WHERE id < 500", []).unwrap();
        w.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").unwrap();
        let fast_again = image(&mut s, false);
        let exact = image(&mut s, true);
        assert_eq!(fast.len() as u64, s.len());
        assert!(fast == exact, "direct reads differ from sqlite_dbpage");
        assert!(fast_again == exact, "a checkpoint leaked into the snapshot");
    }

    #[test]
    fn not_sqlite_is_a_source_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.db");
        std::fs::write(&f, b"hello, not a database at all").unwrap();
        let e = SqliteSnapshot::open(&f).err().unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::Source);
        let e = SqliteSnapshot::open(&dir.path().join("missing.db"))
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    }
}
