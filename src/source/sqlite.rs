//! SQLite: a consistent page stream from a live database without writing to it.
//!
//! The snapshot is one read transaction on a read-only connection; pages come from the
//! `sqlite_dbpage` virtual table, which reads through SQLite's pager and so sees committed
//! pages that are still only in the `-wal` file. In WAL mode writers keep committing while we
//! read; in rollback-journal mode they wait for our shared lock (SQLite's own rule). No
//! checkpoint is forced and the journal mode is never changed.

use super::{Facts, Snapshot};
use crate::error::{Error, IoContext, Result};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HEADER: &[u8; 16] = b"SQLite format 3\0";

pub struct SqliteSnapshot {
    conn: Connection,
    page_size: u32,
    page_count: u64,
    pub journal_mode: String,
}

/// Check that `path` is a SQLite database file, with an error a person can act on.
pub fn check_is_sqlite(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("database {} does not exist", path.display()))
                .hint("check the path; `lifeboat demo` creates a sample database to try")
        } else {
            Error::io("cannot read", path, e)
        }
    })?;
    if meta.is_dir() {
        return Err(Error::source(format!(
            "{} is a directory, not a SQLite database",
            path.display()
        )));
    }
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).ctx("cannot open", path)?;
    let n = f.read(&mut head).ctx("cannot read", path)?;
    if n < 16 || &head != HEADER {
        return Err(Error::source(format!(
            "{} is not a SQLite database (no SQLite header)",
            path.display()
        ))
        .hint("point lifeboat at the database file itself, not a dump or a -wal file"));
    }
    Ok(())
}

impl SqliteSnapshot {
    pub fn open(path: &Path) -> Result<SqliteSnapshot> {
        check_is_sqlite(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|e| Error::source(format!("cannot open {}: {e}", path.display())))?;
        let ctx = |e: rusqlite::Error| Error::source(format!("{}: {e}", path.display()));
        // Wait for a writer's lock rather than failing at once; in WAL mode readers never wait.
        conn.busy_timeout(Duration::from_secs(30)).map_err(ctx)?;
        // Reads go through mmap (a read-only mapping of the file) instead of a copy per page.
        let _ = conn.pragma_update(None, "mmap_size", 1i64 << 40);
        conn.pragma_update(None, "cache_size", -2048).map_err(ctx)?;
        conn.execute_batch("BEGIN").map_err(ctx)?;
        // The first read fixes the snapshot for the whole transaction.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| {
                Error::source(format!("cannot read {}: {e}", path.display()))
                    .hint("is it a SQLite database, and is it readable by this user?")
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
            page_size,
            page_count,
            journal_mode,
        })
    }
}

impl Snapshot for SqliteSnapshot {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
    fn block_size(&self) -> u32 {
        self.page_size
    }
    fn block_count(&self) -> u64 {
        self.page_count
    }

    fn read_blocks(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT pgno, data FROM sqlite_dbpage WHERE pgno <= ?1")
            .map_err(|e| {
                Error::internal(format!(
                    "sqlite_dbpage is unavailable ({e}); lifeboat was built without \
                     SQLITE_ENABLE_DBPAGE_VTAB"
                ))
            })?;
        let mut rows = stmt.query([self.page_count as i64])?;
        let size = self.page_size as usize;
        let zero = vec![0u8; size];
        let mut next: u64 = 1;
        while let Some(row) = rows.next()? {
            let pgno = row.get::<_, i64>(0)? as u64;
            // SQLite never stores the lock-byte page (the page holding byte 2^30 in files over
            // 1 GiB); the image still has it, as zeros, so offsets stay page-aligned.
            while next < pgno {
                f(&zero)?;
                next += 1;
            }
            let data = row
                .get_ref(1)?
                .as_blob()
                .map_err(|e| Error::source(format!("page {pgno}: {e}")))?;
            if data.len() != size {
                return Err(Error::source(format!(
                    "page {pgno} has {} bytes, expected {size}",
                    data.len()
                )));
            }
            f(data)?;
            next = pgno + 1;
        }
        while next <= self.page_count {
            f(&zero)?;
            next += 1;
        }
        Ok(())
    }

    fn facts(&mut self) -> Result<Facts> {
        facts(&self.conn)
    }
}

impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

/// Schema hash and row counts of an open database (source snapshot or restored copy).
pub fn facts(conn: &Connection) -> Result<Facts> {
    let mut hasher = Sha256::new();
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
                hasher.update((part.len() as u64).to_le_bytes());
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
        schema_hash: hex::encode(hasher.finalize()),
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
        let uses = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l == target || l == wal)
        });
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
        s.read_blocks(&mut |p| {
            assert_eq!(p.len(), s_len());
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, s.block_count());
        let facts = s.facts().unwrap();
        assert_eq!(facts.tables["t"], 3);
        fn s_len() -> usize {
            4096
        }
    }

    #[test]
    fn not_sqlite_is_a_source_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.db");
        std::fs::write(&f, b"hello, not a database at all").unwrap();
        let e = SqliteSnapshot::open(&f).err().unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::Source);
        let e = SqliteSnapshot::open(&dir.path().join("missing.db")).err().unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
    }
}
