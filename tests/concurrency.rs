//! Several `lifeboat` processes on one repository at the same time: backups of different
//! databases and of the same one, backups while a verify, a restore or a `repo check` runs.
//! Objects are write-once and named by their content, so none of this needs a lock: every
//! process must succeed and the repository must stay clean.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn spawn(env: &Env, args: &[&str]) -> Child {
    env.std_cmd()
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeboat")
}

/// Wait for `child`, assert it succeeded, return its JSON output.
fn finish(child: Child, what: &str) -> serde_json::Value {
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn backup_args(db: &Path) -> [&str; 2] {
    ["backup", db.to_str().expect("utf-8")]
}

/// Everything in the repository is sound: every backup verifies, `repo check --read-data`
/// finds nothing, and nothing was left in `tmp/`.
fn all_clean(env: &Env, backups: usize) {
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().map(Vec::len), Some(backups), "{v}");
    let r = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["temp_files"], 0, "{r}");
}

fn restores_to(env: &Env, id: &str, db: &Path) {
    let out = env.path(&format!("restored-{id}.db"));
    env.cmd()
        .args(["restore", id, "--output", out.to_str().expect("utf-8")])
        .assert()
        .success();
    assert_eq!(
        sha256_file(&out),
        sha256_file(db),
        "backup {id} of {}",
        db.display()
    );
}

#[test]
fn concurrent_first_backups_share_one_new_repository() {
    // The repository does not exist yet: every process finds none and creates it at once.
    for round in 0..4 {
        let env = Env::new();
        let dbs: Vec<_> = (0..3)
            .map(|i| {
                let db = env.path(&format!("db{i}.db"));
                make_random_db(&db, "wal", 800, 300);
                db
            })
            .collect();
        let children: Vec<_> = dbs.iter().map(|db| spawn(&env, &backup_args(db))).collect();
        let ids: BTreeSet<String> = children
            .into_iter()
            .map(|c| {
                finish(c, &format!("round {round}: backup into a new repository"))["id"]
                    .as_str()
                    .expect("id")
                    .to_string()
            })
            .collect();
        assert_eq!(ids.len(), 3);
        all_clean(&env, 3);
    }
}

#[test]
fn concurrent_backups_of_different_databases() {
    let env = Env::new();
    env.cmd().args(["repo", "init"]).assert().success();
    let dbs: Vec<_> = (0..3)
        .map(|i| {
            let db = env.path(&format!("db{i}.db"));
            make_random_db(&db, if i == 1 { "delete" } else { "wal" }, 15_000, 300);
            db
        })
        .collect();
    let children: Vec<_> = dbs.iter().map(|db| spawn(&env, &backup_args(db))).collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            finish(c, "concurrent backup")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    all_clean(&env, 3);
    for (id, db) in ids.iter().zip(&dbs) {
        restores_to(&env, id, db);
    }
}

#[test]
fn concurrent_backups_of_the_same_database() {
    let env = Env::new();
    let db = env.path("same.db");
    make_random_db(&db, "wal", 20_000, 300);
    env.cmd().args(["repo", "init"]).assert().success();
    let children: Vec<_> = (0..3).map(|_| spawn(&env, &backup_args(&db))).collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| finish(c, "concurrent backup of one database"))
        .collect();
    let ids: BTreeSet<&str> = outs.iter().map(|o| o["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 3, "each backup gets its own id");
    let sha = sha256_file(&db);
    for o in &outs {
        assert_eq!(o["sha256"], sha.as_str());
    }
    all_clean(&env, 3);
    for id in ids {
        restores_to(&env, id, &db);
    }
    // Racing writers may store the same pages twice, but a fourth backup finds them all.
    let again = env.json(&backup_args(&db));
    assert_eq!(again["new_blobs"], 0, "{again}");
}

#[test]
fn backups_while_verify_and_restore_run() {
    let env = Env::new();
    let big = env.path("big.db");
    make_random_db(&big, "wal", 40_000, 300);
    let first = env.backup(&big);

    let other = env.path("other.db");
    make_random_db(&other, "delete", 10_000, 300);
    // Change the big database so the second backup of it stores new pages too.
    {
        let c = rusqlite::Connection::open(&big).expect("open");
        c.execute(
            "UPDATE filler SET payload = randomblob(300) WHERE id % 7 = 0",
            [],
        )
        .expect("update");
    }

    let out = env.path("restored-first.db");
    let verify = spawn(&env, &["verify", &first]);
    let restore = spawn(
        &env,
        &["restore", &first, "--output", out.to_str().expect("utf-8")],
    );
    let b1 = spawn(&env, &backup_args(&other));
    let b2 = spawn(&env, &backup_args(&big));

    let v = finish(verify, "verify during backups");
    assert_eq!(v["ok"], true, "{v}");
    finish(restore, "restore during backups");
    let other_id = finish(b1, "backup during verify")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let big_id = finish(b2, "backup during verify")["id"]
        .as_str()
        .expect("id")
        .to_string();

    all_clean(&env, 3);
    restores_to(&env, &other_id, &other);
    restores_to(&env, &big_id, &big);
    let m = env.json(&["show", &first]);
    assert_eq!(
        sha256_file(&out),
        m["sqlite"]["sha256"].as_str().expect("sha")
    );
}

/// `repo check` run again and again while backups commit must never report a problem: a
/// backup that commits while a check runs is either wholly seen or not seen at all.
#[test]
fn repo_check_during_backups_finds_no_problems() {
    let env = Env::new();
    // Fresh content for every backup, so each one stores packs and an index file.
    let dbs: Vec<_> = (0..6)
        .map(|i| {
            let db = env.path(&format!("db{i}.db"));
            make_random_db(&db, "wal", 10_000, 300);
            db
        })
        .collect();
    env.backup(&dbs[0]);

    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            for db in &dbs[1..] {
                finish(spawn(&env, &backup_args(db)), "backup during checks");
            }
        });
        let started = Instant::now();
        let mut checks = 0;
        while !runner.is_finished() && started.elapsed() < Duration::from_secs(60) {
            let args: &[&str] = if checks % 3 == 2 {
                &["repo", "check"]
            } else {
                &["repo", "check", "--read-data"]
            };
            let (code, v, err) = env.run_json(args);
            assert_eq!(code, 0, "{args:?} while backups run: {v}\n{err}");
            assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
            checks += 1;
        }
        println!("{checks} checks ran during the backups");
        assert!(checks >= 2, "too few checks overlapped the backups");
        runner.join().expect("backups");
    });
    all_clean(&env, dbs.len());
}
