//! Restore drills of every kind of backup: PostgreSQL dumps and base backups have their own
//! (`ops::pg`, `ops::pg_physical`); a SQLite or DuckDB image or a file tree is restored
//! into a throwaway folder, timed (the restore time objective), checked (SQLite's
//! `integrity_check` and the user's query), and the passed drill recorded beside it.

use crate::error::{ErrorKind, Result};
use crate::ops::pg::{DrillOptions, DrillReport};
use crate::ops::restore::Destination;
use crate::ops::verify::VerifyReport;
use crate::progress::Progress;
use crate::repo::manifest::Manifest;
use crate::repo::Repository;

/// Drill backup `m` the way its kind is restored.
pub fn drill(
    repo: &Repository,
    m: &Manifest,
    opts: &DrillOptions,
    progress: &Progress,
) -> Result<DrillReport> {
    if crate::ops::pg_physical::physical_info(m).is_ok() {
        return crate::ops::pg_physical::drill(repo, m, opts.query.as_deref(), progress);
    }
    if m.postgres.is_some() {
        return crate::ops::pg::drill(repo, m, opts, progress);
    }
    drill_local(repo, m, opts.query.as_deref(), progress)
}

fn drill_local(
    repo: &Repository,
    m: &Manifest,
    query: Option<&str>,
    progress: &Progress,
) -> Result<DrillReport> {
    crate::repo::reach::known_kind(m)?;
    let kind = crate::source::Kind::parse(&m.source.kind)?;
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-drill-")
        .tempdir_in(crate::ops::verify::temp_dir())
        .map_err(|e| {
            crate::error::Error::io(
                "cannot create the drill's folder",
                &crate::ops::verify::temp_dir(),
                e,
            )
            .hint("set LIFEBOAT_TEMP_DIR to a folder with room for one copy of the database")
        })?;
    let path = dir.path().join("restored");
    let mut report = DrillReport {
        check: VerifyReport::new(&m.id),
        restored_into: "a throwaway folder".into(),
        rto_ms: 0,
    };
    let started = std::time::Instant::now();
    let restored = crate::repo::locks::as_reader(repo.storage(), &repo.records(), "drill", || {
        let mut target = crate::ops::restore::target_for(
            m,
            Destination::New {
                path: path.clone(),
                overwrite: false,
            },
        )?;
        crate::ops::restore::restore(repo, m, target.as_mut(), progress)
    });
    match restored {
        Ok(out) => {
            report.rto_ms = started.elapsed().as_millis() as u64;
            report.push(
                "restore",
                true,
                format!(
                    "{} bytes restored in {:.1} s, every object checked",
                    out.bytes,
                    report.rto_ms as f64 / 1000.0
                ),
            );
        }
        Err(e) if matches!(e.kind, ErrorKind::Integrity | ErrorKind::NotFound) => {
            report.push("restore", false, e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    }
    if kind == crate::source::Kind::Sqlite {
        check_sqlite(&path, query, &mut report);
    } else if let Some(q) = query {
        // The general `[drill] query` is SQL for the SQLite and PostgreSQL backups; said,
        // not hidden, when a DuckDB image or a file tree has nothing to run it in.
        report.push(
            "check query",
            true,
            format!(
                "not run: {q:?} is SQL for SQLite and PostgreSQL backups; this one is of {}",
                m.source.kind
            ),
        );
    }
    report.record(repo, &m.id);
    Ok(report)
}

fn check_sqlite(path: &std::path::Path, query: Option<&str>, report: &mut DrillReport) {
    let db = match rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) {
        Ok(db) => db,
        Err(e) => {
            report.push("open the restored database", false, e.to_string());
            return;
        }
    };
    let integrity: rusqlite::Result<String> =
        db.query_row("PRAGMA integrity_check", [], |r| r.get(0));
    match integrity {
        Ok(s) if s == "ok" => report.push("integrity_check", true, "ok"),
        Ok(s) => report.push("integrity_check", false, s),
        Err(e) => report.push("integrity_check", false, e.to_string()),
    }
    if let Some(q) = query {
        let first: rusqlite::Result<rusqlite::types::Value> = db.query_row(q, [], |r| r.get(0));
        match first {
            Ok(v) => {
                use rusqlite::types::Value;
                let passed = match &v {
                    Value::Null => false,
                    Value::Integer(i) => *i != 0,
                    Value::Real(f) => *f != 0.0,
                    Value::Text(t) => !matches!(t.as_str(), "" | "0" | "f" | "false"),
                    Value::Blob(b) => !b.is_empty(),
                };
                report.push("check query", passed, format!("{q} → {v:?}"));
            }
            Err(e) => report.push("check query", false, format!("{q}: {e}")),
        }
    }
}
