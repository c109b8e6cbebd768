//! A sample database so a new user can try a real backup before pointing Lifeboat at theirs.

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::Path;

/// Create (or extend) a WAL-mode SQLite database with a `signals` table of `rows` rows.
pub fn create_demo_database(path: &Path, rows: u64) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::storage::local::create_private_dir(dir)?;
    }
    if !path.exists() {
        // Created empty and private first: SQLite keeps the mode, and gives it to -wal/-shm.
        crate::storage::local::create_private_file(path)?;
    }
    let conn = Connection::open(path)
        .map_err(|e| Error::source(format!("cannot create {}: {e}", path.display())))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS signals(
             id INTEGER PRIMARY KEY, source TEXT NOT NULL, kind TEXT NOT NULL,
             score REAL NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS signals_by_source ON signals(source, created_at);
         CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT OR REPLACE INTO settings VALUES ('schema_version', '3'), ('owner', 'demo');",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO signals(source, kind, score, created_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let sources = ["github", "hackernews", "reddit", "rss", "mastodon"];
        let kinds = ["mention", "release", "issue", "discussion"];
        for i in 0..rows {
            let source = sources[(i % 5) as usize];
            let kind = kinds[(i % 4) as usize];
            let body = format!(
                "{{\"title\":\"signal {i} from {source}\",\"url\":\"https://example.com/{source}/{i}\",\"tags\":[\"{kind}\",\"demo\"]}}"
            );
            stmt.execute(rusqlite::params![
                source,
                kind,
                (i % 1000) as f64 / 10.0,
                1_700_000_000 + i as i64 * 37,
                body
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}
