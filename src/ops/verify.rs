//! Verify: prove a backup restores. Rebuild it into a temporary file (reading and checking
//! every object it needs), then compare SHA-256, size, schema and row counts with what the
//! manifest recorded, and run SQLite's own `PRAGMA integrity_check`.

use crate::error::{Error, Result};
use crate::ops::restore::{write_image, TempFile};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::manifest::{Content, DatabaseInfo, DuckdbInfo, Manifest};
use crate::repo::Repository;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub id: String,
    pub ok: bool,
    pub steps: Vec<Step>,
}

impl VerifyReport {
    pub(crate) fn new(id: &str) -> VerifyReport {
        VerifyReport {
            id: id.to_string(),
            ok: true,
            steps: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, name: &str, ok: bool, detail: impl Into<String>) -> bool {
        self.steps.push(Step {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
        self.ok &= ok;
        ok
    }

    pub fn first_failure(&self) -> Option<&str> {
        self.steps.iter().find(|s| !s.ok).map(|s| s.name.as_str())
    }
}

/// Where verify rebuilds databases: `LIFEBOAT_TEMP_DIR`, else the system temp dir.
pub fn temp_dir() -> PathBuf {
    std::env::var_os("LIFEBOAT_TEMP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// What `verify_backups` tells its caller as it goes.
pub enum Progressed<'a> {
    /// About to verify this backup.
    Starting(&'a Manifest),
    /// Done with it.
    Verified(&'a VerifyReport),
}

/// Verify each of `backups` under a reader marker (a concurrent prune deletes nothing they
/// need), and record each one that passed (the "newest verified" retention rail; a
/// read-only target just misses it).
pub fn verify_backups(
    repo: &Repository,
    backups: &[Manifest],
    progress: &Progress,
    tell: &mut dyn FnMut(Progressed),
) -> Result<Vec<VerifyReport>> {
    crate::repo::locks::as_reader(repo.storage(), &repo.records(), "verify", || {
        let index = repo.load_index()?;
        let mut reports = Vec::new();
        for m in backups {
            tell(Progressed::Starting(m));
            let r = verify_manifest(repo, &index, m, progress)?;
            if r.ok {
                if let Err(e) = crate::ops::forget::record_verified(repo, &m.id) {
                    tracing::warn!("could not record the verification of {}: {e}", m.id);
                }
            }
            tell(Progressed::Verified(&r));
            reports.push(r);
        }
        Ok(reports)
    })
}

pub fn verify_manifest(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    progress: &Progress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        id: m.id.clone(),
        ok: true,
        steps: Vec::new(),
    };
    crate::repo::reach::known_kind(m)?;
    if let Content::Tree { entries, bytes, .. } = &m.content {
        verify_tree(repo, index, m, *entries, *bytes, progress, &mut report)?;
        return Ok(report);
    }
    let dir = temp_dir();
    let mut tmp = TempFile::in_dir(&dir, &format!("verify-{}", m.id)).map_err(|e| {
        Error::new(
            e.kind,
            format!("cannot create a temporary file for verify: {e}"),
        )
        .hint("set LIFEBOAT_TEMP_DIR to a folder with room for one copy of the database")
    })?;
    let path = tmp.path.clone();
    let file = tmp
        .file
        .as_mut()
        .ok_or_else(|| Error::internal("temp file closed"))?;
    let stats = match write_image(repo, index, m, file, &path, true, progress) {
        Ok(s) => s,
        Err(e) => {
            if e.kind == crate::error::ErrorKind::Integrity {
                report.push("read and check every object", false, e.to_string());
                return Ok(report);
            }
            return Err(e);
        }
    };
    report.push(
        "read and check every object",
        true,
        format!("{} blobs, {} lists", stats.blocks, m.content.lists().len()),
    );
    let packs = crate::ops::check::packs_used_by(repo, index, m)?;
    let damaged: Vec<String> = packs
        .iter()
        .filter_map(|&p| crate::ops::check::pack_structure_problem(repo, index, p))
        .collect();
    report.push(
        "packs intact (size, directory)",
        damaged.is_empty(),
        if damaged.is_empty() {
            format!("{} packs", packs.len())
        } else {
            damaged.join("; ")
        },
    );
    report.push(
        "size matches",
        stats.bytes == m.logical_bytes(),
        format!("{} bytes", stats.bytes),
    );
    let sha256 = stats.sha256.unwrap_or_default();
    report.push(
        "SHA-256 matches",
        Some(sha256.as_str()) == m.image_sha256(),
        sha256,
    );
    tmp.file = None;
    match (&m.sqlite, &m.duckdb) {
        (Some(info), _) => check_sqlite(&mut report, &path, info),
        (_, Some(info)) => check_duckdb(&mut report, &path, info),
        _ => {
            report.push(
                "open the rebuilt database",
                false,
                format!("backup {} records no facts of a database", m.id),
            );
        }
    }
    if report.ok && m.wal.is_some() {
        verify_span(repo, m, &path, &mut report)?;
    }
    Ok(report)
}

/// A base of continuous replication: replay the segments it starts (up to the next base)
/// onto the rebuilt copy, each authenticated and chained, then `integrity_check` the result.
fn verify_span(
    repo: &Repository,
    m: &Manifest,
    path: &std::path::Path,
    report: &mut VerifyReport,
) -> Result<()> {
    let Some(plan) = crate::wal::pitr::plan_span(repo, m)? else {
        report.push(
            "replay its segments",
            true,
            "its stream has no segments".to_string(),
        );
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e))?;
    let applied = match crate::wal::pitr::apply(repo, &plan, &file, path) {
        Ok(a) => a,
        Err(e) if e.kind == crate::error::ErrorKind::Integrity => {
            report.push("replay its segments", false, e.to_string());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    drop(file);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::integrity(format!("cannot open the replayed copy: {e}")))?;
    let check: std::result::Result<String, _> =
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0));
    let (ok, detail) = match check {
        Ok(s) if s == "ok" => (
            true,
            format!(
                "{} segments, {} commits up to {}; integrity_check ok",
                applied.segments,
                applied.commits,
                applied.last_commit.as_deref().unwrap_or("the base")
            ),
        ),
        Ok(s) => (false, format!("integrity_check after replay: {s}")),
        Err(e) => (false, format!("integrity_check after replay: {e}")),
    };
    report.push("replay its segments", ok, detail);
    Ok(())
}

/// Rebuild a tree into a temporary folder (every chunk checked against its id, every file's
/// size against the tree) and compare what was written with what the backup recorded.
fn verify_tree(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    entries: u64,
    bytes: u64,
    progress: &Progress,
    report: &mut VerifyReport,
) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("lifeboat-verify-{}", m.id))
        .tempdir_in(temp_dir())
        .map_err(|e| Error::io("cannot create a temporary folder in", &temp_dir(), e))?;
    let target = dir.path().join("tree");
    let mut folder = crate::ops::restore_tree::FolderTarget::new(target, false);
    let done = match crate::ops::restore::restore_marked(repo, index, m, &mut folder, progress) {
        Ok(done) => done.tree.unwrap_or_default(),
        Err(e) if e.kind == crate::error::ErrorKind::Integrity => {
            report.push("read and check every object", false, e.to_string());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let restored = done.files + done.dirs + done.symlinks;
    report.push(
        "read and check every object",
        true,
        format!("{restored} entries"),
    );
    report.push(
        "entries match",
        restored == entries,
        format!("{restored} of {entries}"),
    );
    report.push(
        "size matches",
        done.bytes == bytes,
        format!("{} bytes", done.bytes),
    );
    if crate::ops::pg_physical::physical_info(m).is_ok() {
        for (name, ok, detail) in crate::ops::pg_physical::check_restored(repo, m, &done.path) {
            report.push(name, ok, detail);
        }
    } else if let Some(info) = &m.postgres {
        for (name, ok, detail) in crate::ops::pg::check_dump(&done.path, info) {
            report.push(name, ok, detail);
        }
    }
    if let Some(f) = &m.files {
        let same = (done.files, done.dirs, done.symlinks) == (f.files, f.dirs, f.symlinks);
        report.push(
            "files, folders and links match",
            same,
            format!(
                "{} files, {} folders, {} links",
                done.files, done.dirs, done.symlinks
            ),
        );
    }
    Ok(())
}

/// Open a rebuilt SQLite database: `PRAGMA integrity_check`, schema and row counts.
fn check_sqlite(report: &mut VerifyReport, path: &std::path::Path, info: &DatabaseInfo) {
    let conn = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(c) => c,
        Err(e) => {
            report.push("open the rebuilt database", false, e.to_string());
            return;
        }
    };
    let integrity: Result<Vec<String>> = (|| {
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    })();
    match integrity {
        Ok(lines) if lines == ["ok"] => report.push("PRAGMA integrity_check", true, "ok"),
        Ok(lines) => report.push(
            "PRAGMA integrity_check",
            false,
            lines.into_iter().take(5).collect::<Vec<_>>().join("; "),
        ),
        Err(e) => report.push("PRAGMA integrity_check", false, e.to_string()),
    };
    match crate::source::sqlite::facts(&conn) {
        Ok(facts) => {
            report.push(
                "schema matches",
                facts.schema_hash == info.schema_hash,
                format!("{} tables", facts.tables.len()),
            );
            let rows: u64 = facts.tables.values().sum();
            let diff: Vec<String> = info
                .tables
                .iter()
                .filter(|(t, n)| facts.tables.get(*t) != Some(n))
                .map(|(t, n)| {
                    format!(
                        "{t}: {} instead of {n}",
                        facts.tables.get(t).copied().unwrap_or(0)
                    )
                })
                .collect();
            report.push(
                "row counts match",
                diff.is_empty() && facts.tables.len() == info.tables.len(),
                if diff.is_empty() {
                    format!("{rows} rows")
                } else {
                    diff.join(", ")
                },
            );
        }
        Err(e) => {
            report.push("schema matches", false, e.to_string());
        }
    }
    drop(conn);
}

/// Open a rebuilt DuckDB database with the DuckDB CLI: tables and row counts.
fn check_duckdb(report: &mut VerifyReport, path: &std::path::Path, info: &DuckdbInfo) {
    use crate::source::duckdb;
    let checked = duckdb::find_cli()
        .and_then(|cli| duckdb::check_restored(&cli, path, &duckdb::DuckdbFacts::from(info)));
    match checked {
        Ok(bad) => {
            let rows: u64 = info.tables.values().sum();
            report.push(
                "tables and row counts match (DuckDB)",
                bad.is_empty(),
                if bad.is_empty() {
                    format!("{} tables, {rows} rows", info.tables.len())
                } else {
                    bad.join("; ")
                },
            );
        }
        Err(e) => {
            report.push("open the rebuilt database", false, e.to_string());
        }
    }
}
