//! An interrupted backup is resumable: every pack it finished was indexed at once, so the
//! next run finds those pages stored and uploads only the rest.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn a_killed_backup_leaves_indexed_packs_that_the_next_run_reuses() {
    let env = Env::new();
    let db = env.path("big.db");
    // Incompressible rows, ~48 MB: several 16 MiB packs.
    make_random_db(&db, "wal", 90_000, 500);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lifeboat"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("LIFEBOAT_REPO", env.repo())
        .env("LIFEBOAT_INIT", "1")
        .env("LIFEBOAT_TRANSFERS", "1")
        .args(["backup", db.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let index = env.repo().join("index");
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if std::fs::read_dir(&index).map(|d| d.count()).unwrap_or(0) >= 1 {
            child.kill().unwrap();
            killed = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.wait();
    assert!(
        killed,
        "the backup finished before a pack was indexed; make the database bigger"
    );
    assert!(
        env.json(&["list"]).as_array().unwrap().is_empty(),
        "nothing was committed"
    );

    let b = env.json(&["backup", db.to_str().unwrap()]);
    let reused = b["reused_blobs"].as_u64().unwrap();
    assert!(
        reused >= 1000,
        "the pages of the interrupted run's packs are reused: {b}"
    );
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let (code, out) = env.run(&["repo", "check"]);
    assert_eq!(code, 0, "{out}");
}
