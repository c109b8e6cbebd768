//! Tests against the real DuckDB CLI: scripts/test.sh installs it (PyPI duckdb-cli) into
//! .venv-test and sets LIFEBOAT_DUCKDB.

use super::*;
use std::process::Command;

/// The DuckDB CLI: `find_cli()` (LIFEBOAT_DUCKDB or PATH), else this crate's .venv-test.
fn cli() -> PathBuf {
    if let Ok(p) = find_cli() {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/duckdb");
    if is_executable(&venv) {
        return venv;
    }
    panic!(
        "the DuckDB CLI is not installed: set LIFEBOAT_DUCKDB or run scripts/test.sh (it \
         installs PyPI duckdb-cli into .venv-test), neither is {} there",
        venv.display()
    );
}

fn quick() -> Timeouts {
    Timeouts {
        busy: Duration::ZERO,
        answer: Duration::from_secs(60),
    }
}

/// Run SQL on `db` read-write (`None`: an in-memory database) and wait for the CLI to end.
fn sql(db: Option<&Path>, sql: &str) {
    let mut cmd = Command::new(cli());
    cmd.args(["-init", "/dev/null", "-batch"]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    let out = cmd.arg("-c").arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "duckdb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A DuckDB process holding `db` read-write (or read-only) until dropped.
fn holder(db: &Path, read_only: bool) -> Cli {
    let mut c = Cli::spawn(
        &cli(),
        &db.canonicalize().unwrap(),
        read_only,
        quick().answer,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    c.request("SELECT 1 AS up;")
        .unwrap_or_else(|e| panic!("{e:?}"));
    c
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256Stream::default();
    h.update(&std::fs::read(p).unwrap());
    h.finish_hex()
}

fn image(s: &mut DuckdbSnapshot) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    s.read_chunks(&mut |c| {
        sizes.push(c.len());
        out.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    (out, sizes)
}

/// Pids of the processes in `c`'s process group (the wrapper and the real duckdb).
fn group_pids(c: &Cli) -> Vec<u32> {
    let pgid = c.child.id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                // Fields after the command name: state, ppid, pgrp.
                let rest = &s[s.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(2) == Some(&pgid.to_string())
            })
        })
        .collect()
}

const AWKWARD: &str = r#"
    CREATE SCHEMA "we ird";
    CREATE TABLE "we ird"."ta""b le" AS SELECT range AS x FROM range(7);
    CREATE TABLE "new
line\back" AS SELECT range AS x FROM range(3);
    CREATE TABLE "ünï😀" (x INT);
    CREATE TABLE "it's" AS SELECT range AS x FROM range(4);
    CREATE TABLE "a.b" AS SELECT range AS x FROM range(2);
    CREATE SCHEMA a;
    CREATE TABLE a.b AS SELECT range AS x FROM range(5);
    CREATE TABLE big AS SELECT range AS id, md5(range::VARCHAR) AS v FROM range(200000);
    DELETE FROM big WHERE id % 10 = 0;
    CREATE VIEW not_a_table AS SELECT 1 AS one;
"#;

fn awkward_counts() -> BTreeMap<String, u64> {
    [
        ("we ird.\"ta\"\"b le\"", 7),
        ("main.new\nline\\back", 3),
        ("main.ünï😀", 0),
        ("main.it's", 4),
        ("main.\"a.b\"", 2),
        ("a.b", 5),
        ("main.big", 180_000),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn snapshot_is_the_file_and_facts_name_every_table() {
    let dir = tempfile::tempdir().unwrap();
    // A database name that needs quoting both as an identifier and as a literal.
    let db = dir.path().join("my 'app\".duckdb");
    sql(Some(&db), AWKWARD);
    let before = sha256_file(&db);
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    assert_eq!(s.len(), std::fs::metadata(&db).unwrap().len());
    let (bytes, _) = image(&mut s);
    assert!(
        bytes == std::fs::read(&db).unwrap(),
        "image differs from file"
    );
    let facts = s.facts().unwrap();
    assert_eq!(facts.tables, awkward_counts());
    assert_eq!(facts.sha256, before);
    assert_eq!(facts.block_size, 262_144);
    assert_eq!(facts.storage_version, 64);
    assert!(facts.duckdb_version.starts_with('v'), "{facts:?}");
    assert!(facts.created_by.starts_with('v'), "{facts:?}");
    drop(s);
    // Read-only: the file is as it was and no log appeared.
    assert_eq!(sha256_file(&db), before);
    assert_eq!(pending_log(&db), None);
    // The facts survive a round trip through JSON (they go into manifests).
    let json = serde_json::to_string(&facts).unwrap();
    assert_eq!(serde_json::from_str::<DuckdbFacts>(&json).unwrap(), facts);
}

#[test]
fn facts_before_reading_hash_the_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS x FROM range(10);",
    );
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    let facts = s.facts().unwrap();
    assert_eq!(facts.sha256, sha256_file(&db));
    assert_eq!(facts.tables["main.t"], 10);
}

#[test]
fn chunks_are_the_header_then_blocks_of_the_header_block_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("small-blocks.duckdb");
    // A block size other than the default, so it must come from the header.
    sql(
        None,
        &format!(
            "ATTACH '{}' AS s (BLOCK_SIZE 16384);
             CREATE TABLE s.t AS SELECT range AS id, md5(range::VARCHAR) AS v FROM range(50000);",
            db.display()
        ),
    );
    let file = std::fs::read(&db).unwrap();
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    assert_eq!(s.header_bytes(), 12_288);
    assert_eq!(s.block_size(), 16_384);
    let (bytes, sizes) = image(&mut s);
    assert!(bytes == file);
    assert_eq!(sizes[0], 12_288);
    let blocks = &sizes[1..];
    assert!(blocks.len() > 10, "{} blocks", blocks.len());
    assert!(blocks.iter().all(|&n| n == 16_384), "{sizes:?}");
    assert_eq!(file.len(), 12_288 + 16_384 * blocks.len());
    assert_eq!(s.facts().unwrap().block_size, 16_384);

    // And the default: 256 KiB blocks after 12 KiB.
    let db = dir.path().join("default.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS id, md5(range::VARCHAR) AS v FROM range(200000);",
    );
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    let (bytes, sizes) = image(&mut s);
    assert!(bytes == std::fs::read(&db).unwrap());
    assert_eq!(sizes[0], 12_288);
    assert!(sizes.len() > 2 && sizes[1..].iter().all(|&n| n == 262_144));
}

#[test]
fn header_parsing_takes_the_current_database_header() {
    let mut h = vec![0u8; HEADER_BYTES as usize];
    h[8..12].copy_from_slice(b"DUCK");
    h[12..20].copy_from_slice(&64u64.to_le_bytes());
    h[52..58].copy_from_slice(b"v1.5.6");
    let set = |h: &mut Vec<u8>, i: usize, iteration: u64, alloc: u64| {
        let at = 4096 * (1 + i);
        h[at + 8..at + 16].copy_from_slice(&iteration.to_le_bytes());
        h[at + 40..at + 48].copy_from_slice(&alloc.to_le_bytes());
    };
    set(&mut h, 0, 3, 16_384);
    set(&mut h, 1, 4, 65_536);
    let parsed = parse_header(&h).unwrap();
    assert_eq!(
        parsed,
        Header {
            storage_version: 64,
            created_by: "v1.5.6".into(),
            block_size: 65_536
        }
    );
    set(&mut h, 0, 5, 16_384);
    assert_eq!(parse_header(&h).unwrap().block_size, 16_384);
    set(&mut h, 0, 6, 0);
    assert_eq!(parse_header(&h).unwrap().block_size, 262_144);
    set(&mut h, 0, 7, 12_345);
    assert!(parse_header(&h).unwrap_err().contains("12345"));
    assert!(parse_header(&h[..4096]).is_err());
    h[8] = b'X';
    assert!(parse_header(&h).is_err());
}

#[test]
fn a_writer_holding_the_file_is_a_clear_in_use_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS x FROM range(10);",
    );
    let writer = holder(&db, false);
    let pids = group_pids(&writer);
    let e = DuckdbSnapshot::open_with(&cli(), &db, quick())
        .err()
        .expect("a snapshot under a writer");
    assert_eq!(e.kind, ErrorKind::InUse, "{e:?}");
    let canonical = db.canonicalize().unwrap();
    assert!(
        e.message.starts_with("another process (pid ")
            && e.message.contains(&format!(
                "has {} open for writing; DuckDB lets only one process open a database file \
                 while it writes",
                canonical.display()
            ))
            && e.message.contains("Could not set lock on file"),
        "{}",
        e.message
    );
    // The pid named is the duckdb process (under the PyPI wrapper, its child).
    assert!(
        pids.iter()
            .any(|p| e.message.contains(&format!("(pid {p}, "))),
        "{pids:?} not in {}",
        e.message
    );
    let hint = e.hint.unwrap();
    assert!(
        hint.contains("stop the application") && hint.contains("COPY FROM DATABASE"),
        "{hint}"
    );
    // Nothing of ours is left holding the file: the writer still works and, once it is gone,
    // a new writer opens at once.
    drop(writer);
    drop(holder(&db, false));
}

#[test]
fn a_snapshot_waits_for_a_writer_that_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS x FROM range(10);",
    );
    let writer = holder(&db, false);
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(writer);
    });
    let timeouts = Timeouts {
        busy: Duration::from_secs(30),
        ..quick()
    };
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, timeouts).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(600));
    assert_eq!(s.facts().unwrap().tables["main.t"], 10);
    t.join().unwrap();
}

#[test]
fn readers_share_the_file_and_keep_writers_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS x FROM range(10);",
    );
    let canonical = db.canonicalize().unwrap();
    let other_reader = holder(&db, true);
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    // While the snapshot holds the file no writer gets in: its bytes stay one state.
    drop(other_reader);
    match try_open(&cli(), &canonical, false, quick().answer) {
        Err(Failure::Exited(text)) => assert!(is_lock_conflict(&text), "{text}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a writer opened the file under a snapshot"),
    }
    let (bytes, _) = image(&mut s);
    assert!(bytes == std::fs::read(&db).unwrap());
    assert_eq!(s.facts().unwrap().tables["main.t"], 10);
    // Dropping the snapshot ends its DuckDB process (the wrapper's child too): a writer opens
    // right after.
    drop(s);
    let mut w = holder(&db, false);
    w.request("INSERT INTO t VALUES (10);").unwrap();
}

/// Leave `db` with a committed transaction only in its write-ahead log, as a killed writer
/// does.
fn crash_with_wal(db: &Path, insert: &str) {
    let mut w = holder(db, false);
    w.request(insert).unwrap();
    w.kill();
    let (wal, len) = pending_log(&db.canonicalize().unwrap()).expect("a .wal after the crash");
    assert!(wal.ends_with("app.duckdb.wal") && len > 0);
}

#[test]
fn a_pending_wal_is_refused_until_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(
        Some(&db),
        "CREATE TABLE t AS SELECT range AS x FROM range(10);",
    );
    crash_with_wal(&db, "INSERT INTO t SELECT range FROM range(5);");
    let wal = sidecar(&db, ".wal");
    let (db_sum, wal_sum) = (sha256_file(&db), sha256_file(&wal));
    let e = DuckdbSnapshot::open_with(&cli(), &db, quick())
        .err()
        .expect("a snapshot with a pending log");
    assert_eq!(e.kind, ErrorKind::Source);
    assert!(
        e.message
            .contains("has a write-ahead log that is not checkpointed into it")
            && e.message.contains("app.duckdb.wal"),
        "{}",
        e.message
    );
    assert!(e.hint.unwrap().contains("-c CHECKPOINT"));
    // Refusing wrote nothing.
    assert_eq!((sha256_file(&db), sha256_file(&wal)), (db_sum, wal_sum));

    // A checkpoint on request replays the log into the file.
    checkpoint(&cli(), &db, quick()).unwrap();
    assert_eq!(pending_log(&db), None);
    let mut s = DuckdbSnapshot::open_with(&cli(), &db, quick()).unwrap();
    assert_eq!(s.facts().unwrap().tables["main.t"], 15);
    // And a checkpoint under a reader is refused, not waited for.
    let e = checkpoint(&cli(), &db, quick()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InUse, "{e:?}");
}

#[test]
fn check_restored_compares_tables_counts_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(Some(&db), AWKWARD);
    let facts = DuckdbSnapshot::open_with(&cli(), &db, quick())
        .unwrap()
        .facts()
        .unwrap();
    let copies = tempfile::tempdir().unwrap();
    // Same name as the source, as a restore writes it: the database name is the file's stem.
    let copy = copies.path().join("app.duckdb");
    std::fs::copy(&db, &copy).unwrap();
    assert_eq!(
        check_restored_with(&cli(), &copy, &facts, quick()).unwrap(),
        Vec::<String>::new()
    );
    // Checking does not touch the file.
    assert_eq!(sha256_file(&copy), facts.sha256);
    assert_eq!(pending_log(&copy), None);

    sql(
        Some(&copy),
        "INSERT INTO a.b VALUES (99); DROP TABLE \"it's\"; CREATE TABLE extra (x INT);",
    );
    let before = sha256_file(&copy);
    let bad = check_restored_with(&cli(), &copy, &facts, quick()).unwrap();
    assert!(
        bad.contains(&"table a.b has 6 rows, the backup recorded 5".to_string()),
        "{bad:?}"
    );
    assert!(
        bad.contains(&"table main.it's is missing".to_string()),
        "{bad:?}"
    );
    assert!(
        bad.contains(&"table main.extra was not in the backup".to_string()),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|m| m.starts_with("the file's SHA-256 is")),
        "{bad:?}"
    );
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert_eq!(sha256_file(&copy), before);

    // A stale log next to a restored file would be replayed into it: reported, not opened.
    std::fs::copy(&db, &copy).unwrap();
    std::fs::write(sidecar(&copy, ".wal"), b"stale log").unwrap();
    let bad = check_restored_with(&cli(), &copy, &facts, quick()).unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("app.duckdb.wal exists next to the restored database"));

    // Not a DuckDB file at all.
    std::fs::write(&copy, b"garbage").unwrap();
    let bad = check_restored_with(&cli(), &copy, &facts, quick()).unwrap();
    assert!(bad[0].contains("is not a DuckDB database"), "{bad:?}");
    let e = check_restored_with(&cli(), &copies.path().join("gone.duckdb"), &facts, quick())
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn is_duckdb_tells_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let duck = dir.path().join("a.duckdb");
    sql(Some(&duck), "CREATE TABLE t (x INT);");
    assert!(is_duckdb(&duck));
    let lite = dir.path().join("a.sqlite");
    rusqlite::Connection::open(&lite)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    assert!(!is_duckdb(&lite));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(!is_duckdb(&empty));
    let short = dir.path().join("short");
    std::fs::write(&short, b"12345678DUC").unwrap();
    assert!(!is_duckdb(&short));
    assert!(!is_duckdb(&dir.path().join("missing")));
    assert!(!is_duckdb(dir.path()));

    let e = DuckdbSnapshot::open_with(&cli(), &lite, quick())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Source);
    assert!(
        e.message.contains("is not a DuckDB database"),
        "{}",
        e.message
    );
    let e = DuckdbSnapshot::open_with(&cli(), &empty, quick())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Source);
    let e = DuckdbSnapshot::open_with(&cli(), &dir.path().join("missing"), quick())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn find_cli_says_how_to_install_it() {
    let e = find_cli_in(None, Some(OsString::from("/nonexistent-dir"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(
        e.message.contains("DuckDB command-line tool"),
        "{}",
        e.message
    );
    let hint = e.hint.unwrap();
    assert!(hint.contains("pip install duckdb-cli") && hint.contains("LIFEBOAT_DUCKDB"));
    let e = find_cli_in(Some(OsString::from("/nonexistent/duckdb")), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(e.message.contains("LIFEBOAT_DUCKDB=/nonexistent/duckdb"));

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("duckdb");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(["/nonexistent-dir", dir.path().to_str().unwrap()]).unwrap();
    assert_eq!(find_cli_in(None, Some(path.clone())).unwrap(), fake);
    assert_eq!(
        find_cli_in(Some(OsString::new()), Some(path)).unwrap(),
        fake,
        "an empty LIFEBOAT_DUCKDB means unset"
    );
}

#[test]
fn a_cli_that_hangs_is_killed_after_the_answer_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.duckdb");
    sql(Some(&db), "CREATE TABLE t (x INT);");
    // A stand-in that never answers, with a child of its own (like the PyPI wrapper).
    let marker = format!("{}.{}", std::process::id(), 4242);
    let fake = dir.path().join("hang");
    std::fs::write(&fake, format!("#!/bin/sh\nsleep {marker}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let start = Instant::now();
    let timeouts = Timeouts {
        busy: Duration::ZERO,
        answer: Duration::from_millis(500),
    };
    let e = DuckdbSnapshot::open_with(&fake, &db, timeouts)
        .err()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(e.kind, ErrorKind::Source);
    assert!(
        e.message.contains("gave no answer within 0.5 s"),
        "{}",
        e.message
    );
    let sleeping = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .is_ok_and(|c| c == format!("sleep\0{marker}\0").as_bytes())
    });
    assert!(!sleeping, "the hung CLI's child outlived the timeout");

    // A CLI that is not DuckDB at all ends with its own words.
    let e = DuckdbSnapshot::open_with(Path::new("/bin/false"), &db, quick())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Source, "{e:?}");
}

#[test]
fn table_keys_are_unambiguous() {
    assert_eq!(table_key("main", "t"), "main.t");
    assert_eq!(table_key("a", "b"), "a.b");
    assert_eq!(table_key("main", "a.b"), "main.\"a.b\"");
    assert_eq!(table_key("main.a", "b"), "\"main.a\".b");
    assert_eq!(table_key("s", "x\"y"), "s.\"x\"\"y\"");
    assert_eq!(pid_in("held in /x/duckdb (PID 4321). However"), Some(4321));
    assert_eq!(pid_in("no pid here"), None);
}
