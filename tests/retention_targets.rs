//! Retention per target: a replica with its own policy keeps it across syncs. What it forgot
//! or pruned is not copied back, what a prune on the primary merely rewrote is not copied
//! twice, and a new backup that reuses data the replica dropped brings that data along.

mod common;
use common::*;

fn change(db: &std::path::Path, seed: u32) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE t SET v = printf('day %d %d %s', ?1, id, hex(randomblob(40))) WHERE id % 7 = ?1 % 7",
        [seed],
    )
    .unwrap();
}

fn backup_at(env: &Env, db: &std::path::Path, day: u32) -> String {
    let time = format!("2026-11-{day:02}T02:00:00Z");
    env.json(&["backup", db.to_str().unwrap(), "--time", &time])["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn count(env: &Env, repo: &std::path::Path) -> usize {
    env.json(&["--repo", repo.to_str().unwrap(), "list"])
        .as_array()
        .unwrap()
        .len()
}

fn assert_healthy(env: &Env, repo: &std::path::Path) {
    let r = repo.to_str().unwrap();
    let check = env.json(&["--repo", r, "repo", "check"]);
    assert_eq!(check["ok"], true, "{check}");
    let v = env.json(&["--repo", r, "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
}

fn config(env: &Env, primary_days: u32, replica: &std::path::Path, replica_days: u32) {
    std::fs::write(
        env.path("lifeboat.toml"),
        format!(
            "timezone = \"UTC\"\n[retention]\nkeep_daily = {primary_days}\n\
             [retention.target.\"{}\"]\nkeep_daily = {replica_days}\n",
            replica.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_shorter_replica_policy_survives_sync() {
    let env = Env::new();
    let db = env.path("app.db");
    make_db(&db, 3000);
    let replica = env.path("replica");
    config(&env, 4, &replica, 2);
    backup_at(&env, &db, 1);
    env.json(&["replica", "add", replica.to_str().unwrap()]);
    for day in 2..=8 {
        change(&db, day);
        backup_at(&env, &db, day);
    }
    assert_eq!(count(&env, &replica), 8);
    let out = env.json(&["forget", "--all-targets", "--prune"]);
    let targets = out["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{out}");
    assert_eq!(count(&env, &env.repo()), 4);
    assert_eq!(count(&env, &replica), 2);

    // The primary still has backups the replica forgot, and packs it pruned: sync copies
    // neither back.
    let s = env.json(&["sync"]);
    assert_eq!(
        count(&env, &replica),
        2,
        "forgotten backups stay forgotten: {s}"
    );
    let status = env.json(&["status"]);
    assert_eq!(status["targets"][1]["objects_behind"], 0, "{status}");
    assert_healthy(&env, &replica);

    // A new backup still reaches the replica, complete.
    change(&db, 9);
    backup_at(&env, &db, 9);
    assert_eq!(count(&env, &replica), 3);
    assert_healthy(&env, &replica);
    assert_healthy(&env, &env.repo());
}

#[test]
fn a_longer_replica_policy_keeps_more_and_repacks_are_not_copied_twice() {
    let env = Env::new();
    let db = env.path("app.db");
    make_db(&db, 3000);
    let replica = env.path("replica");
    config(&env, 2, &replica, 6);
    backup_at(&env, &db, 1);
    env.json(&["replica", "add", replica.to_str().unwrap()]);
    for day in 2..=8 {
        change(&db, day);
        backup_at(&env, &db, day);
    }
    env.json(&["forget", "--all-targets", "--prune", "--max-unused", "0%"]);
    assert_eq!(count(&env, &env.repo()), 2);
    assert_eq!(count(&env, &replica), 6);
    // The primary's prune wrote new packs (repacked pages); the replica holds those pages
    // already, so a sync copies no pack.
    let s = env.json(&["sync"]);
    let copied = s["targets"][0]["copied_bytes"].as_u64().unwrap();
    assert!(
        copied < 100_000,
        "only small objects copied, not repacked data: {s}"
    );
    let again = env.json(&["sync"]);
    assert_eq!(again["targets"][0]["copied_objects"], 0, "{again}");
    assert_healthy(&env, &replica);
    assert_healthy(&env, &env.repo());
}

#[test]
fn a_backup_reusing_data_the_replica_dropped_brings_it_back() {
    let env = Env::new();
    let db = env.path("app.db");
    make_db(&db, 3000);
    let replica = env.path("replica");
    config(&env, 5, &replica, 1);
    let first = backup_at(&env, &db, 1);
    env.json(&["replica", "add", replica.to_str().unwrap()]);
    change(&db, 2);
    backup_at(&env, &db, 2);
    // The replica keeps only day 2, and drops the pages only day 1 had.
    let r = replica.to_str().unwrap();
    env.json(&["--repo", r, "forget", "--prune", "--max-unused", "0%"]);
    assert_eq!(count(&env, &replica), 1);

    // Put day 1 back and back it up: on the primary every page is reused from day 1's
    // packs, which the replica no longer has.
    env.json(&["restore", &first, "--db", db.to_str().unwrap(), "--yes"]);
    let again = backup_at(&env, &db, 3);
    let shown = env.json(&["show", &again]);
    assert_eq!(shown["stored"]["new_blobs"], 0, "all reused: {shown}");
    assert!(count(&env, &replica) >= 2);
    assert_healthy(&env, &replica);
    let out = env.path("from-replica.db");
    env.json(&[
        "--repo",
        r,
        "restore",
        &again,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        sha256_file(&out),
        shown["database"]["sha256"].as_str().unwrap()
    );
}
