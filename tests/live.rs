//! Backups of a database that another *process* keeps writing to while they run.
//!
//! The writer is this test binary run again (`writer_process`, ignored unless the
//! `LIFEBOAT_TEST_WRITER_DB` variable is set). Each of its transactions adds row `n` to
//! `counter` and to `log` and sets `state.last = n`, so a restored database shows whether the
//! backup captured a state the writer really committed: `counter` and `log` both hold exactly
//! 1..k and `state.last` is k. A torn transaction or a mix of two snapshots breaks that.

mod common;
use common::*;

use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITER_DB: &str = "LIFEBOAT_TEST_WRITER_DB";
const WRITER_STOP: &str = "LIFEBOAT_TEST_WRITER_STOP";
const WRITER_OUT: &str = "LIFEBOAT_TEST_WRITER_OUT";
const WRITER_MAX_SECS: &str = "LIFEBOAT_TEST_WRITER_MAX_SECS";
/// Set: the writer opens a new connection for every transaction and closes it after.
const WRITER_REOPEN: &str = "LIFEBOAT_TEST_WRITER_REOPEN";

const FILLER_ROWS: u32 = 40_000;
const FILLER_BYTES: u32 = 200;
const BACKUPS: usize = 6;

/// The writer: only does something when started by `Writer::start`.
#[test]
#[ignore = "helper process for the live tests; does nothing unless LIFEBOAT_TEST_WRITER_DB is set"]
fn writer_process() {
    let Some(db) = std::env::var_os(WRITER_DB) else {
        return;
    };
    let stop = PathBuf::from(std::env::var_os(WRITER_STOP).expect("stop file"));
    let out = PathBuf::from(std::env::var_os(WRITER_OUT).expect("result file"));
    let max_secs: u64 = std::env::var(WRITER_MAX_SECS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let reopen = std::env::var_os(WRITER_REOPEN).is_some();
    let open = || {
        let mut c = Connection::open(&db).expect("writer open");
        // Like busy_timeout(60 s), but counting the waits: a wait means another process (a
        // backup) held a lock while the writer tried to write.
        c.busy_handler(Some(busy_wait)).expect("busy_handler");
        c.pragma_update(None, "synchronous", "NORMAL")
            .expect("sync");
        // Checkpoint often, so pages of the database file change while backups read it.
        c.pragma_update(None, "wal_autocheckpoint", 64)
            .expect("autocheckpoint");
        c
    };
    let mut conn = Some(open());
    let mut n: i64 = conn
        .as_ref()
        .expect("connection")
        .query_row("SELECT last FROM state WHERE id = 1", [], |r| r.get(0))
        .expect("state");
    let started = Instant::now();
    let mut max_latency = Duration::ZERO;
    let mut commits = 0u64;
    while !stop.exists() && started.elapsed() < Duration::from_secs(max_secs) {
        n += 1;
        let t = Instant::now();
        let c = conn.get_or_insert_with(open);
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("begin");
        tx.execute("INSERT INTO counter(n) VALUES (?1)", [n])
            .expect("counter");
        tx.execute(
            "INSERT INTO log(n, payload) VALUES (?1, randomblob(200))",
            [n],
        )
        .expect("log");
        tx.execute("UPDATE state SET last = ?1 WHERE id = 1", [n])
            .expect("state");
        // And one filler row spread over the whole file, so old pages change too.
        tx.execute(
            "UPDATE filler SET ver = ?1 WHERE id = ?2",
            [n, filler_row(n)],
        )
        .expect("filler");
        tx.commit().expect("commit");
        if reopen {
            // The last connection to close checkpoints the whole WAL and deletes it, unless
            // another process (the backup) still holds the database open.
            conn = None;
        }
        max_latency = max_latency.max(t.elapsed());
        commits += 1;
        // Publish progress for the parent (it must not open the database to look).
        publish(
            &out,
            &format!(
                "running {n} {commits} {} {}",
                max_latency.as_millis(),
                BUSY_WAITS.load(Ordering::Relaxed)
            ),
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    publish(
        &out,
        &format!(
            "done {n} {commits} {} {}",
            max_latency.as_millis(),
            BUSY_WAITS.load(Ordering::Relaxed)
        ),
    );
}

/// Times the writer found the database locked and waited (1 ms each).
static BUSY_WAITS: AtomicU64 = AtomicU64::new(0);

/// The writer's busy handler: wait 1 ms and try again, for up to 60 s.
fn busy_wait(attempt: i32) -> bool {
    BUSY_WAITS.fetch_add(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1));
    attempt < 60_000
}

/// Replace the writer's report file atomically, so the parent never reads half of it.
fn publish(out: &Path, text: &str) {
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write report");
    std::fs::rename(&tmp, out).expect("publish report");
}

/// What the writer reported: last committed n, number of commits, max commit latency, and
/// how many times it found the database locked (and waited 1 ms).
#[derive(Debug)]
struct WriterResult {
    last: i64,
    commits: u64,
    max_latency_ms: u64,
    busy_waits: u64,
}

fn parse_result(text: &str) -> Option<(bool, WriterResult)> {
    let mut it = text.split_whitespace();
    let done = it.next()? == "done";
    let last = it.next()?.parse().ok()?;
    let commits = it.next()?.parse().ok()?;
    let max_latency_ms = it.next()?.parse().ok()?;
    let busy_waits = it.next()?.parse().ok()?;
    Some((
        done,
        WriterResult {
            last,
            commits,
            max_latency_ms,
            busy_waits,
        },
    ))
}

/// A running writer process; stopped (and killed if need be) on drop.
struct Writer {
    child: Option<Child>,
    stop: PathBuf,
    out: PathBuf,
}

impl Writer {
    fn start(dir: &Path, db: &Path, reopen: bool) -> Writer {
        let stop = dir.join("writer.stop");
        let out = dir.join("writer.out");
        let log = std::fs::File::create(dir.join("writer.log")).expect("writer log");
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        if reopen {
            cmd.env(WRITER_REOPEN, "1");
        }
        let child = cmd
            .args([
                "--exact",
                "writer_process",
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(WRITER_DB, db)
            .env(WRITER_STOP, &stop)
            .env(WRITER_OUT, &out)
            .env(WRITER_MAX_SECS, "90")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn writer");
        let mut w = Writer {
            child: Some(child),
            stop,
            out,
        };
        // Wait until it has committed a few transactions.
        let ok = wait_until(Duration::from_secs(30), || {
            w.progress().is_some_and(|r| r.commits >= 20)
        });
        assert!(ok, "the writer process did not start committing");
        if let Some(c) = w.child.as_mut() {
            assert!(
                c.try_wait().expect("try_wait").is_none(),
                "writer exited early"
            );
        }
        w
    }

    fn progress(&self) -> Option<WriterResult> {
        let text = std::fs::read_to_string(&self.out).ok()?;
        parse_result(&text).map(|(_, r)| r)
    }

    /// Ask the writer to stop, wait for it, and return its final report.
    fn finish(mut self) -> WriterResult {
        std::fs::write(&self.stop, b"stop").expect("stop file");
        let mut child = self.child.take().expect("child");
        let status = child.wait().expect("wait writer");
        assert!(
            status.success(),
            "the writer process failed: {status}\n{}",
            std::fs::read_to_string(self.out.with_file_name("writer.log")).unwrap_or_default()
        );
        let text = std::fs::read_to_string(&self.out).expect("writer result");
        let (done, r) = parse_result(&text).expect("parse writer result");
        assert!(done, "writer did not finish cleanly: {text}");
        r
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::fs::write(&self.stop, b"stop");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The filler row that transaction `n` stamps with `ver = n` (a different row, far from the
/// previous one, for each of the first `FILLER_ROWS` transactions).
fn filler_row(n: i64) -> i64 {
    (n * 7919) % i64::from(FILLER_ROWS) + 1
}

fn create_live_db(db: &Path, journal_mode: &str) {
    make_random_db(db, journal_mode, FILLER_ROWS, FILLER_BYTES);
    let c = Connection::open(db).expect("open");
    c.execute_batch(
        "ALTER TABLE filler ADD COLUMN ver INTEGER NOT NULL DEFAULT 0;
         CREATE TABLE counter(n INTEGER PRIMARY KEY);
         CREATE TABLE log(n INTEGER PRIMARY KEY, payload BLOB NOT NULL);
         CREATE TABLE state(id INTEGER PRIMARY KEY, last INTEGER NOT NULL);
         INSERT INTO state VALUES (1, 0);",
    )
    .expect("schema");
    let size = std::fs::metadata(db).expect("size").len();
    assert!(
        size > 4 << 20,
        "the database should be a few MB, is {size} bytes"
    );
}

/// The writer's state captured in a (restored) database; panics if it is not one the writer
/// committed.
fn committed_state(db: &Path) -> i64 {
    let c = Connection::open(db).expect("open restored");
    let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let last = q("SELECT last FROM state WHERE id = 1");
    let (counter_rows, counter_min, counter_max) = (
        q("SELECT count(*) FROM counter"),
        q("SELECT coalesce(min(n), 0) FROM counter"),
        q("SELECT coalesce(max(n), 0) FROM counter"),
    );
    let (log_rows, log_max) = (
        q("SELECT count(*) FROM log"),
        q("SELECT coalesce(max(n), 0) FROM log"),
    );
    let joined = q("SELECT count(*) FROM counter JOIN log USING (n)");
    assert_eq!(
        counter_rows,
        last,
        "{}: counter has {counter_rows} rows, state.last is {last}",
        db.display()
    );
    assert!(
        last == 0 || counter_min == 1,
        "{}: counter does not start at 1",
        db.display()
    );
    assert_eq!(
        counter_max,
        last,
        "{}: counter is not the contiguous prefix 1..{last}",
        db.display()
    );
    assert_eq!(
        log_rows,
        last,
        "{}: log has {log_rows} rows, counter {last}: a torn transaction",
        db.display()
    );
    assert_eq!(
        log_max,
        last,
        "{}: log max {log_max} but state.last {last}",
        db.display()
    );
    assert_eq!(joined, last, "{}: counter and log disagree", db.display());
    assert_eq!(q("SELECT count(*) FROM filler"), i64::from(FILLER_ROWS));
    // The filler rows stamped by transactions 1..=last, and no others.
    let mut expected = std::collections::BTreeMap::new();
    for n in 1..=last {
        expected.insert(filler_row(n), n);
    }
    let mut stmt = c
        .prepare("SELECT id, ver FROM filler WHERE ver <> 0")
        .expect("filler");
    let actual: std::collections::BTreeMap<i64, i64> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("filler rows")
        .collect::<Result<_, _>>()
        .expect("filler rows");
    if actual != expected {
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(id, n)| actual.get(id) != Some(n))
            .take(5)
            .collect();
        let extra: Vec<_> = actual
            .iter()
            .filter(|(id, _)| !expected.contains_key(id))
            .take(5)
            .collect();
        panic!(
            "{}: filler rows disagree with state.last = {last}: missing/wrong {wrong:?}, \
             from later transactions {extra:?}",
            db.display()
        );
    }
    last
}

fn journal_mode(db: &Path) -> String {
    let c = Connection::open(db).expect("open");
    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode")
}

fn live_backups(journal_mode_name: &str, reopen: bool) {
    let env = Env::new();
    let db = env.path("live.db");
    create_live_db(&db, journal_mode_name);
    let writer = Writer::start(env.dir.path(), &db, reopen);

    let mut ids = Vec::new();
    let mut durations = Vec::new();
    let mut windows = Vec::new();
    let mut commits_during = Vec::new();
    let mut blocked_during = Vec::new();
    for _ in 0..BACKUPS {
        let before = writer.progress().expect("writer progress");
        let t = Instant::now();
        ids.push(env.backup(&db));
        durations.push(t.elapsed());
        let after = writer.progress().expect("writer progress").last;
        commits_during.push(after - before.last);
        windows.push((before.last, after));
        // Let the writer move on between backups (in rollback-journal mode it waits for them):
        // the next backup then captures a later state than this one (which is at most
        // `after + 1`: progress is published right after each commit).
        let target = after + 5;
        assert!(
            wait_until(Duration::from_secs(20), || writer
                .progress()
                .is_some_and(|r| r.last >= target)),
            "the writer stopped making progress"
        );
        // Times the writer found the database locked since this backup started: only a
        // backup (a reader) locks it, and the next one has not started yet.
        let busy = writer.progress().expect("writer progress").busy_waits;
        blocked_during.push(busy - before.busy_waits);
    }
    let result = writer.finish();
    println!(
        "{journal_mode_name}: writer committed {} transactions (last n = {}), max commit latency {} ms; backups took {:?}; commits seen during each backup {:?}; writer blocked (1 ms waits) during each {:?}",
        result.commits, result.last, result.max_latency_ms, durations, commits_during, blocked_during
    );

    // Every backup verifies.
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().map(Vec::len), Some(BACKUPS));

    // Every backup restores to a state the writer committed, and the writer moved on.
    let mut states = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let m = env.json(&["show", id]);
        assert_eq!(m["sqlite"]["journal_mode"], journal_mode_name, "{m}");
        let out = env.path(&format!("restored-{i}.db"));
        env.cmd()
            .args(["restore", id, "--output", out.to_str().expect("utf-8")])
            .assert()
            .success();
        assert_eq!(integrity_check(&out), ["ok"]);
        let k = committed_state(&out);
        assert_eq!(
            m["sqlite"]["tables"]["counter"].as_u64(),
            Some(k as u64),
            "manifest row count differs from the restored copy"
        );
        // A state of the time the backup ran: committed before it ended, not before it began.
        let (before, after) = windows[i];
        assert!(
            before <= k && k <= after + 1,
            "backup {i} captured state {k}, outside its run ({before}..={after} + 1)"
        );
        states.push(k);
    }
    println!("{journal_mode_name}: restored states {states:?}");
    assert!(
        states[0] > 0,
        "the first backup came after the writer started"
    );
    assert!(
        states.windows(2).all(|w| w[0] < w[1]),
        "each backup should capture a later state: {states:?}"
    );
    assert!(*states.last().expect("states") <= result.last);

    // The source: same journal mode, sound, and holding everything the writer committed.
    assert_eq!(journal_mode(&db), journal_mode_name);
    assert_eq!(integrity_check(&db), ["ok"]);
    assert_eq!(committed_state(&db), result.last);

    if journal_mode_name == "wal" {
        // Every backup overlapped writes: the writer committed while each one ran.
        assert!(
            commits_during.iter().all(|&c| c > 0),
            "the writer should keep committing while every backup runs: {commits_during:?}"
        );
        assert!(
            result.max_latency_ms < 2000,
            "in WAL mode backups must not block the writer, but a commit took {} ms",
            result.max_latency_ms
        );
    } else {
        // Every backup overlapped a write: the writer tried to write while the backup held
        // the database's shared lock, and waited for it.
        assert!(
            blocked_during.iter().all(|&b| b > 0),
            "the writer should try to write while every backup reads: {blocked_during:?}"
        );
        assert!(
            commits_during.iter().sum::<i64>() > 0,
            "the writer committed while backups ran: {commits_during:?}"
        );
    }
}

#[test]
fn backups_of_a_wal_database_under_a_writer_process() {
    live_backups("wal", false);
}

/// An application that opens and closes its connection for each transaction: each close
/// tries to checkpoint the whole WAL and delete it, which must wait while a backup reads.
#[test]
fn backups_of_a_wal_database_under_short_lived_writer_connections() {
    live_backups("wal", true);
}

#[test]
fn backups_of_a_rollback_journal_database_under_a_writer_process() {
    live_backups("delete", false);
}

/// Commits that are still only in the `-wal` file are in the backup, and the backup neither
/// checkpoints them into the database file nor touches the WAL.
#[test]
fn wal_backup_reads_through_the_wal_without_checkpointing() {
    let env = Env::new();
    let db = env.path("wal.db");
    create_live_db(&db, "wal");
    let wal = env.path("wal.db-wal");

    // Keep a connection open (so the WAL outlives it) that never checkpoints.
    let c = Connection::open(&db).expect("open");
    c.pragma_update(None, "wal_autocheckpoint", 0)
        .expect("autocheckpoint");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    for n in 1..=200i64 {
        c.execute_batch(&format!(
            "BEGIN; INSERT INTO counter VALUES ({n}); \
             INSERT INTO log VALUES ({n}, randomblob(200)); \
             UPDATE state SET last = {n} WHERE id = 1; \
             UPDATE filler SET ver = {n} WHERE id = {}; COMMIT;",
            filler_row(n)
        ))
        .expect("commit");
    }
    let wal_len = std::fs::metadata(&wal).expect("wal exists").len();
    assert!(wal_len > 0);
    let db_hash = sha256_file(&db);
    let wal_hash = sha256_file(&wal);

    let id = env.backup(&db);

    assert_eq!(
        sha256_file(&db),
        db_hash,
        "the backup changed the database file (checkpoint?)"
    );
    assert_eq!(
        std::fs::metadata(&wal).expect("wal still exists").len(),
        wal_len
    );
    assert_eq!(
        sha256_file(&wal),
        wal_hash,
        "the backup changed the -wal file"
    );
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");

    // The writes that exist only in the WAL are in the backup.
    let out = env.path("restored.db");
    env.cmd()
        .args(["restore", &id, "--output", out.to_str().expect("utf-8")])
        .assert()
        .success();
    assert_eq!(committed_state(&out), 200);
    assert_eq!(integrity_check(&out), ["ok"]);
    drop(c);
}

/// In rollback-journal mode the backup leaves the database file byte for byte as it was and
/// creates no journal or WAL.
#[test]
fn rollback_journal_backup_leaves_the_file_untouched() {
    let env = Env::new();
    let db = env.path("delete.db");
    create_live_db(&db, "delete");
    let hash = sha256_file(&db);
    let id = env.backup(&db);
    assert_eq!(sha256_file(&db), hash);
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(
            !env.path(&format!("delete.db{suffix}")).exists(),
            "the backup left a {suffix} file"
        );
    }
    assert_eq!(journal_mode(&db), "delete");
    let m = env.json(&["show", &id]);
    assert_eq!(m["sqlite"]["journal_mode"], "delete");
    assert_eq!(m["sqlite"]["sha256"], hash.as_str());
}
