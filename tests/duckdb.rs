//! DuckDB backups with the real binary and the real DuckDB CLI (PyPI duckdb-cli, installed
//! by scripts/test.sh, found through LIFEBOAT_DUCKDB): round trip with the tables checked by
//! DuckDB, a writer holding the file refused with the way that works, unchanged blocks never
//! stored twice, in-place restore, a kill during the backup, damage detected.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn cli() -> PathBuf {
    let p = std::env::var_os("LIFEBOAT_DUCKDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/duckdb"));
    assert!(
        p.exists(),
        "the DuckDB CLI is missing: set LIFEBOAT_DUCKDB or run scripts/test.sh"
    );
    p
}

/// Run SQL against `db` with the DuckDB CLI (read-write, then closed: checkpointed).
fn sql(db: &Path, statements: &str) -> String {
    let out = Command::new(cli())
        .arg(db)
        .args(["-csv", "-noheader", "-c", statements])
        .output()
        .expect("run duckdb");
    assert!(
        out.status.success(),
        "duckdb {statements}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn make_duckdb(db: &Path, rows: u64) {
    sql(
        db,
        &format!(
            "CREATE TABLE events AS SELECT i AS id, i % 97 AS kind, 'payload ' || (i * 7919 % 1000003) AS body \
             FROM range({rows}) t(i); CREATE TABLE \"odd name\" AS SELECT 1 AS x; CHECKPOINT;"
        ),
    );
}

/// Env's commands clear the environment: `lb` passes the CLI explicitly.
fn env_with_cli() -> Env {
    Env::new()
}

fn lb(env: &Env, args: &[&str]) -> Out {
    Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", cli())
            .args(args)
            .output()
            .expect("run lifeboat"),
    )
}

fn lb_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    lb(env, &a).ok(&format!("{args:?}")).json()
}

#[test]
fn a_duckdb_database_round_trips_and_verifies_with_duckdb() {
    let env = env_with_cli();
    let db = env.path("app.duckdb");
    make_duckdb(&db, 200_000);
    let v = lb_json(&env, &["backup", s(&db)]);
    assert_eq!(v["kind"], "duckdb", "{v}");
    assert_eq!(v["content"], "stream", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let m = lb_json(&env, &["show", &id]);
    assert_eq!(m["duckdb"]["tables"]["main.events"], 200_000, "{m}");
    assert_eq!(m["duckdb"]["tables"]["main.odd name"], 1, "{m}");
    assert_eq!(m["duckdb"]["block_size"], 262_144, "{m}");
    assert_eq!(m["duckdb"]["sha256"], sha256_file(&db).as_str());
    let out = env.path("restored.duckdb");
    lb_json(&env, &["restore", &id, "--output", s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&db));
    assert_eq!(
        sql(&out, "SELECT count(*), sum(kind) FROM events"),
        sql(&db, "SELECT count(*), sum(kind) FROM events")
    );
    let verified = lb_json(&env, &["verify", &id]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified
            .to_string()
            .contains("tables and row counts match (DuckDB)"),
        "{verified}"
    );
}

#[test]
fn a_writer_holding_the_file_is_refused_with_the_way_that_works() {
    let env = env_with_cli();
    let db = env.path("app.duckdb");
    make_duckdb(&db, 1000);
    // A real writer: the DuckDB CLI with the database open read-write, waiting on stdin. It
    // says "ready" once its commit is done: from then on it holds the file (probing for the
    // lock with read-only opens instead races the writer's own open, which then fails).
    let mut writer = Command::new(cli())
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a writer");
    // Kept open until the writer exits: a closed pipe would kill it early (SIGPIPE).
    let mut said = {
        use std::io::{BufRead, Write};
        let stdin = writer.stdin.as_mut().expect("stdin");
        writeln!(
            stdin,
            "INSERT INTO events VALUES (-1, 0, 'held'); SELECT 'writer-' || 'ready' AS r;"
        )
        .expect("write");
        stdin.flush().expect("flush");
        std::io::BufReader::new(writer.stdout.take().expect("stdout")).lines()
    };
    let ready = said.any(|l| l.is_ok_and(|l| l.contains("writer-ready")));
    assert!(ready, "the writer exited before it held the file");
    let out = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", cli())
            .env("LIFEBOAT_BUSY_TIMEOUT", "1")
            .args(["backup", s(&db)])
            .output()
            .expect("run"),
    );
    let out = out.fails(
        6,
        "backup while a writer holds the file",
        "open for writing",
    );
    assert!(out.text().contains("hint:"), "{}", out.text());
    assert!(
        !env.repo().join("backups").exists() || file_names(&env.repo().join("backups")).is_empty()
    );
    // Once the writer closes, the backup works and holds its last commit.
    drop(writer.stdin.take());
    said.for_each(drop);
    writer.wait().expect("writer exits");
    let v = lb_json(&env, &["backup", s(&db)]);
    let m = lb_json(&env, &["show", v["id"].as_str().unwrap()]);
    assert_eq!(m["duckdb"]["tables"]["main.events"], 1001, "{m}");
}

#[test]
fn unchanged_blocks_are_never_stored_twice() {
    let env = env_with_cli();
    let db = env.path("app.duckdb");
    // Rows that do not compress to nothing: a file of ~100 blocks.
    sql(
        &db,
        "CREATE TABLE events AS SELECT i AS id, i % 97 AS kind, md5(i::VARCHAR) AS body \
         FROM range(400000) t(i); CHECKPOINT;",
    );
    let first = lb_json(&env, &["backup", s(&db)]);
    let blocks = num(&first, "new_blobs");
    assert!(blocks > 8, "{first}");
    let again = lb_json(&env, &["backup", s(&db)]);
    assert_eq!(num(&again, "new_blobs"), 0, "{again}");
    // A day of appends: 1% new rows, checkpointed.
    sql(
        &db,
        "INSERT INTO events SELECT 400000 + i, i % 97, md5(i::VARCHAR) FROM range(4000) t(i); CHECKPOINT;",
    );
    let third = lb_json(&env, &["backup", s(&db)]);
    assert!(
        num(&third, "new_blobs") * 10 < blocks,
        "appending 1% rewrote {} of {blocks} blocks: {third}",
        num(&third, "new_blobs")
    );
    let out = env.path("out.duckdb");
    lb_json(
        &env,
        &[
            "restore",
            third["id"].as_str().unwrap(),
            "--output",
            s(&out),
        ],
    );
    assert_eq!(sql(&out, "SELECT count(*) FROM events"), "404000");
}

#[test]
fn in_place_restore_takes_a_safety_backup_and_removes_a_stale_log() {
    let env = env_with_cli();
    let db = env.path("app.duckdb");
    make_duckdb(&db, 5000);
    let id = lb_json(&env, &["backup", s(&db)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    sql(&db, "DELETE FROM events WHERE id < 2500; CHECKPOINT;");
    let r = lb_json(&env, &["restore", &id, "--db", s(&db), "--yes"]);
    let safety = r["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_string();
    assert_eq!(sql(&db, "SELECT count(*) FROM events"), "5000");
    let m = lb_json(&env, &["show", &safety]);
    assert_eq!(m["duckdb"]["tables"]["main.events"], 2500, "{m}");
    // A log beside the database that no checkpoint took in: no safety backup can read the
    // database without it, so both are moved aside, and the restored file is not replayed
    // into.
    std::fs::write(env.path("app.duckdb.wal"), b"stale log bytes").unwrap();
    let r = lb_json(&env, &["restore", &id, "--db", s(&db), "--yes"]);
    assert!(r["safety_backup"].is_null(), "{r}");
    let aside: Vec<&str> = r["moved_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(aside.len() == 2 && aside[1].ends_with(".wal"), "{r}");
    assert_eq!(std::fs::read(aside[1]).unwrap(), b"stale log bytes");
    assert!(
        !env.path("app.duckdb.wal").exists(),
        "the stale log was left"
    );
    assert_eq!(sql(&db, "SELECT count(*) FROM events"), "5000");
    // A stale log beside a new --output file is refused before anything is written.
    let out = env.path("new.duckdb");
    std::fs::write(env.path("new.duckdb.wal"), b"stale").unwrap();
    lb(&env, &["restore", &id, "--output", s(&out)]).fails(
        2,
        "restore beside a stale log",
        "new.duckdb.wal",
    );
    assert!(!out.exists());
}

#[test]
fn kill_during_a_duckdb_backup_leaves_no_backup_and_releases_the_file() {
    let env = env_with_cli();
    let db = env.path("big.duckdb");
    // Incompressible rows, so the backup takes long enough to be killed mid-way.
    sql(
        &db,
        "CREATE TABLE blobs AS SELECT i, md5(i::VARCHAR) || md5((i*3)::VARCHAR) || md5((i*7)::VARCHAR) AS h \
         FROM range(1500000) t(i); CHECKPOINT;",
    );
    lb_json(&env, &["repo", "init"]);
    let mut child = env
        .std_cmd()
        .env("LIFEBOAT_DUCKDB", cli())
        .env("LIFEBOAT_LEVEL", "19")
        .args(["backup", s(&db)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let data = env.repo().join("data");
    let landed = wait_until(std::time::Duration::from_secs(120), || {
        !walk_files(&data).is_empty() || !walk_files(&env.repo().join("tmp")).is_empty()
    });
    assert!(landed, "the backup wrote nothing before the kill");
    child.kill().expect("kill");
    assert!(
        !child.wait().expect("wait").success(),
        "killed, not finished"
    );
    assert!(
        !env.repo().join("backups").exists() || file_names(&env.repo().join("backups")).is_empty(),
        "no backup was committed"
    );
    // The read-only DuckDB process goes with lifeboat: a writer can open the file again.
    let released = wait_until(std::time::Duration::from_secs(20), || {
        Command::new(cli())
            .args([s(&db), "-c", "SELECT 1"])
            .output()
            .expect("probe")
            .status
            .success()
    });
    assert!(released, "the file is still locked after the kill");
    let check = lb_json(&env, &["repo", "check"]);
    assert_eq!(check["ok"], true, "{check}");
    let v = lb_json(&env, &["backup", s(&db)]);
    let out = env.path("out.duckdb");
    lb_json(
        &env,
        &["restore", v["id"].as_str().unwrap(), "--output", s(&out)],
    );
    assert_eq!(sha256_file(&out), sha256_file(&db));
}

#[test]
fn damage_to_a_duckdb_backup_is_detected() {
    let env = env_with_cli();
    let db = env.path("app.duckdb");
    make_duckdb(&db, 20_000);
    let id = lb_json(&env, &["backup", s(&db)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    for pack in walk_files(&env.repo().join("data")) {
        let good = std::fs::read(&pack).unwrap();
        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        std::fs::write(&pack, &bad).unwrap();
        let out = env.path("out.duckdb");
        lb(&env, &["restore", &id, "--output", s(&out)]).code(4, "restore of a damaged backup");
        assert!(!out.exists());
        std::fs::write(&pack, &good).unwrap();
    }
}

#[test]
fn a_missing_duckdb_cli_says_how_to_install_it() {
    let env = Env::new();
    let db = env.path("app.duckdb");
    make_duckdb(&db, 10);
    let out = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", env.path("no-such-duckdb"))
            .env("PATH", "/usr/bin:/bin")
            .args(["backup", s(&db)])
            .output()
            .expect("run"),
    );
    out.fails(2, "backup without the DuckDB CLI", "pip install duckdb-cli");
}
