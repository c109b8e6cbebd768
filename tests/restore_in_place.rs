//! `restore --db`: replacing a database in place, with confirmation, a safety backup,
//! stale sidecar removal, and refusal while another process has the database open.

mod common;
use common::*;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Names of the files in the test folder, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A database at version 1 (backed up) and then changed to version 2 on disk.
/// Returns (backup id of v1, dump of v1, dump of v2).
fn v1_backed_up_then_changed(env: &Env, db: &Path) -> (String, Vec<String>, Vec<String>) {
    let conn = make_db(db, 300);
    let v1 = dump(db);
    let id = env.backup(db);
    conn.execute_batch(
        "DELETE FROM t WHERE id % 3 = 0;
         UPDATE t SET v = 'version two' WHERE id % 5 = 1;
         CREATE TABLE extra(x); INSERT INTO extra VALUES (1), (2);",
    )
    .unwrap();
    drop(conn); // closes the database: nothing else has it open
    let v2 = dump(db);
    assert_ne!(v1, v2);
    (id, v1, v2)
}

#[test]
fn without_yes_and_no_terminal_nothing_changes() {
    let env = Env::new();
    let db = env.path("app.db");
    let (id, _, v2) = v1_backed_up_then_changed(&env, &db);
    let before = std::fs::read(&db).unwrap();
    let files_before = files_in(env.dir.path());

    let out = env
        .cmd()
        .args(["restore", &id, "--db", s(&db)])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--yes"),
        "the hint says how: {}",
        stderr(&out)
    );
    // Typing "y" into a pipe is not a confirmation either.
    let out = env
        .cmd()
        .args(["restore", &id, "--db", s(&db), "--json"])
        .write_stdin("y\n")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "Usage");

    assert_eq!(std::fs::read(&db).unwrap(), before, "database untouched");
    assert_eq!(dump(&db), v2);
    assert_eq!(files_in(env.dir.path()), files_before, "no files added");
    let list = env.json(&["list"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "no safety backup: {list}"
    );
}

#[test]
fn with_yes_restores_and_keeps_a_safety_backup() {
    let env = Env::new();
    let db = env.path("app.db");
    let (id, v1, v2) = v1_backed_up_then_changed(&env, &db);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();

    let r = env.json(&["restore", &id, "--db", s(&db), "--yes"]);
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["path"], s(&db));
    assert_eq!(r["moved_aside"], serde_json::json!([]));
    let safety = r["safety_backup"]
        .as_str()
        .expect("safety backup id")
        .to_string();
    let m = env.json(&["show", &id]);
    assert_eq!(
        sha256_file(&db),
        m["sqlite"]["sha256"].as_str().unwrap(),
        "the restored file is byte for byte the backed-up image"
    );
    assert_eq!(dump(&db), v1, "database holds the backup's content");
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o640,
        "the database keeps its permissions"
    );

    let list = env.json(&["list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let entry = list
        .iter()
        .find(|m| m["id"] == safety.as_str())
        .expect("safety backup listed");
    assert_eq!(entry["tags"], serde_json::json!(["pre-restore"]));
    assert_eq!(entry["trigger"], "pre-restore");
    assert_eq!(entry["source"], s(&db.canonicalize().unwrap()));
    let tagged = env.json(&["list", "--tag", "pre-restore"]);
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"], safety.as_str());
    // `latest` never means a safety backup: it is still the backup that was restored.
    assert_eq!(env.json(&["show", "latest"])["id"], id.as_str());

    // The safety backup holds what was there before.
    let before = env.path("before.db");
    env.cmd()
        .args(["restore", &safety, "--output", s(&before)])
        .assert()
        .success();
    assert_eq!(dump(&before), v2);
    env.cmd().args(["verify", "--all"]).assert().code(0);

    // Human output names the safety backup; -y is the short form.
    let out = env
        .cmd()
        .args(["restore", &safety, "--db", s(&db), "-y"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("safety backup") && text.contains("pre-restore"),
        "{text}"
    );
    assert!(text.contains(&safety) && text.contains(s(&db)), "{text}");
    assert_eq!(dump(&db), v2, "restored the safety backup back");
}

#[test]
fn stale_wal_and_shm_are_removed() {
    let env = Env::new();
    let src = env.path("src.db");
    let conn = make_db(&src, 200);
    let id = env.backup(&src);
    let v1 = dump(&src);
    // Commit more rows that stay in the -wal (no checkpoint), then copy the three files
    // while the connection is still open: a database as a crash would leave it.
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         INSERT INTO t(v) SELECT 'only in the wal ' || id FROM t;
         DELETE FROM t WHERE id < 50;",
    )
    .unwrap();
    let db = env.path("app.db");
    let probe = env.path("probe.db");
    for target in [&db, &probe] {
        for suffix in ["", "-wal", "-shm"] {
            std::fs::copy(sidecar(&src, suffix), sidecar(target, suffix)).unwrap();
        }
    }
    drop(conn);
    assert!(std::fs::metadata(sidecar(&db, "-wal")).unwrap().len() > 0);
    // What the database holds, -wal included (reading the probe copy may checkpoint it).
    let with_wal = dump(&probe);
    assert_eq!(with_wal.len(), 200 + 200 - 49);
    assert_ne!(with_wal, v1);

    let r = env.json(&["restore", &id, "--db", s(&db), "--yes", "--force"]);
    assert!(!sidecar(&db, "-wal").exists(), "stale -wal removed");
    assert!(!sidecar(&db, "-shm").exists(), "stale -shm removed");
    assert_eq!(dump(&db), v1);

    // The safety backup saw the committed rows that were only in the -wal.
    let safety = r["safety_backup"].as_str().expect("safety backup");
    let before = env.path("before.db");
    env.cmd()
        .args(["restore", safety, "--output", s(&before)])
        .assert()
        .success();
    assert_eq!(dump(&before), with_wal);
}

#[test]
fn refuses_while_another_process_has_the_database_open() {
    let env = Env::new();
    let db = env.path("app.db");
    let (id, _, v2) = v1_backed_up_then_changed(&env, &db);
    let before = std::fs::read(&db).unwrap();

    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .stdin(std::fs::File::open(&db).unwrap())
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    let results: Vec<Output> = [&["--yes"][..], &[], &["--yes", "--json"]]
        .iter()
        .map(|extra| {
            env.cmd()
                .args(["restore", &id, "--db", s(&db)])
                .args(*extra)
                .output()
                .unwrap()
        })
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();

    for out in &results {
        assert_eq!(code(out), 6, "{}", stderr(out));
    }
    let msg = stderr(&results[0]);
    assert!(msg.contains("sleep"), "names the process: {msg}");
    assert!(msg.contains(&pid.to_string()), "names the pid: {msg}");
    assert!(msg.contains(s(&db)), "{msg}");
    let v: Value = serde_json::from_slice(&results[2].stdout).unwrap();
    assert_eq!(v["error"]["kind"], "InUse");
    assert_eq!(v["error"]["exit_code"], 6);

    assert_eq!(std::fs::read(&db).unwrap(), before, "database untouched");
    assert_eq!(dump(&db), v2);
    let list = env.json(&["list"]);
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "no safety backup: {list}"
    );

    // Once the process is gone the same restore goes through.
    let r = env.json(&["restore", &id, "--db", s(&db), "--yes"]);
    assert!(r["safety_backup"].is_string());
}

#[test]
fn replaces_a_corrupted_file_and_keeps_it_aside() {
    let env = Env::new();
    let src = env.path("src.db");
    drop(make_db(&src, 100));
    let id = env.backup(&src);
    let want = dump(&src);
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();

    // JSON: moved_aside lists the old file, which still holds the garbage.
    let db = env.path("broken.db");
    std::fs::write(&db, &garbage).unwrap();
    std::fs::write(sidecar(&db, "-wal"), b"junk wal").unwrap();
    let r = env.json(&["restore", &id, "--db", s(&db), "--yes", "--force"]);
    assert!(r["safety_backup"].is_null(), "{r}");
    let aside: Vec<PathBuf> = r["moved_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert_eq!(aside.len(), 2, "{r}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    assert_eq!(std::fs::read(&aside[1]).unwrap(), b"junk wal");
    assert!(aside.iter().all(|p| p.starts_with(env.dir.path())));
    assert!(!sidecar(&db, "-wal").exists());
    assert_eq!(dump(&db), want);

    // Human: the output says where the old file went.
    let db = env.path("broken2.db");
    std::fs::write(&db, b"not sqlite").unwrap();
    let out = env
        .cmd()
        .args(["restore", &id, "--db", s(&db), "--yes", "--force"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("previous file kept as "))
        .unwrap_or_else(|| panic!("no 'previous file kept as' line: {text}"));
    assert_eq!(std::fs::read(kept.trim()).unwrap(), b"not sqlite");
    assert_eq!(dump(&db), want);
    // Only the real backup is in the repository: garbage cannot be backed up.
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 1);
}

#[test]
fn restore_to_a_new_path_creates_it() {
    let env = Env::new();
    let src = env.path("src.db");
    drop(make_db(&src, 150));
    let id = env.backup(&src);
    let db = env.path("fresh.db");
    let r = env.json(&["restore", &id, "--db", s(&db), "--yes"]);
    assert!(r["safety_backup"].is_null());
    assert_eq!(r["moved_aside"], serde_json::json!([]));
    assert!(db.is_file());
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(dump(&db), dump(&src));
    let leftovers: Vec<String> = files_in(env.dir.path())
        .into_iter()
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 1);
}

#[test]
fn refuses_to_replace_a_directory() {
    let env = Env::new();
    let src = env.path("src.db");
    drop(make_db(&src, 20));
    let id = env.backup(&src);
    let dir = env.path("data.db");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("important"), b"keep").unwrap();
    let out = env
        .cmd()
        .args(["restore", &id, "--db", s(&dir), "--yes"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("directory"), "{}", stderr(&out));
    assert!(dir.is_dir(), "the directory is left where it was");
    assert_eq!(std::fs::read(dir.join("important")).unwrap(), b"keep");
    let moved: Vec<String> = files_in(env.dir.path())
        .into_iter()
        .filter(|n| n.contains("lifeboat"))
        .collect();
    assert!(
        moved.is_empty(),
        "nothing moved aside or left behind: {moved:?}"
    );
}

/// When no safety backup can be taken the old files are kept, and they must stay one
/// database: SQLite finds a file's WAL by appending `-wal` to its name, so the kept WAL has to
/// be `<kept file>-wal`, or the committed transactions in it are lost to whoever recovers it.
#[test]
fn files_kept_aside_still_open_as_one_database() {
    let env = Env::new();
    let src = env.path("src.db");
    let conn = make_db(&src, 100);
    let id = env.backup(&src);
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint=0;
         INSERT INTO t(v) SELECT 'committed, only in the wal ' || id FROM t;",
    )
    .unwrap();
    let db = env.path("app.db");
    let probe = env.path("probe.db");
    for target in [&db, &probe] {
        for suffix in ["", "-wal"] {
            std::fs::copy(sidecar(&src, suffix), sidecar(target, suffix)).unwrap();
        }
    }
    drop(conn);
    let with_wal = dump(&probe);
    assert_eq!(with_wal.len(), 200);
    // Damage the header: lifeboat cannot back this file up, so it keeps it aside.
    let mut bytes = std::fs::read(&db).unwrap();
    let header: Vec<u8> = bytes[..16].to_vec();
    bytes[..16].fill(0);
    std::fs::write(&db, &bytes).unwrap();

    let r = env.json(&["restore", &id, "--db", s(&db), "--yes", "--force"]);
    assert!(r["safety_backup"].is_null(), "{r}");
    let aside: Vec<String> = r["moved_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(aside.len(), 2, "{r}");
    let main = aside
        .iter()
        .find(|p| !p.ends_with("-wal"))
        .expect("the main file");
    assert!(
        aside.contains(&format!("{main}-wal")),
        "the kept WAL belongs to the kept file: {aside:?}"
    );
    assert_eq!(dump(&db).len(), 100, "the database holds the backup");

    // Repair the header of the kept file: it opens with everything it had, -wal included.
    let main = PathBuf::from(main);
    let mut kept = std::fs::read(&main).unwrap();
    kept[..16].copy_from_slice(&header);
    std::fs::write(&main, &kept).unwrap();
    assert_eq!(dump(&main), with_wal);
}
