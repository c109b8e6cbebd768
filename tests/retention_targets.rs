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

/// Change a few rows of one stretch of the table (a few pages): most pages stay as the first
/// backup stored them.
fn change_few(db: &std::path::Path, seed: u32) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE t SET v = printf('day %d %d %s', ?1, id, hex(randomblob(40))) \
         WHERE id BETWEEN ?1 * 300 AND ?1 * 300 + 40",
        [seed],
    )
    .unwrap();
}

/// Sizes of the files under `dir` (relative path -> bytes).
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    walk_files(dir)
        .into_iter()
        .map(|p| {
            let size = std::fs::metadata(&p).unwrap().len();
            (p.strip_prefix(dir).unwrap().display().to_string(), size)
        })
        .collect()
}

/// The ids `forget` removed on `target`, and the report of the prune that followed there.
fn forgot<'a>(
    out: &'a serde_json::Value,
    target: &std::path::Path,
) -> (Vec<String>, &'a serde_json::Value) {
    let t = out["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["target"] == target.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {} in {out}", target.display()));
    let removed = t["forget"]["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("no forget.removed in {t}"))
        .iter()
        .map(|x| x.as_str().expect("id").to_string())
        .collect();
    (removed, &t["prune"])
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
    let mut ids = vec![backup_at(&env, &db, 1)];
    env.json(&["replica", "add", replica.to_str().unwrap()]);
    for day in 2..=8 {
        change(&db, day);
        ids.push(backup_at(&env, &db, day));
    }
    assert_eq!(count(&env, &replica), 8);
    let out = env.json(&["forget", "--all-targets", "--prune"]);
    let targets = out["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{out}");
    assert_eq!(forgot(&out, &env.repo()).0, ids[..4], "{out}");
    assert_eq!(forgot(&out, &replica).0, ids[..6], "{out}");
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
    let mut ids = vec![backup_at(&env, &db, 1)];
    env.json(&["replica", "add", replica.to_str().unwrap()]);
    // Small changes: the first backup's pack stays mostly needed, so forgetting it leaves it
    // partly used, and prune --max-unused 0% repacks it.
    for day in 2..=8 {
        change_few(&db, day);
        ids.push(backup_at(&env, &db, day));
    }
    let out = env.json(&["forget", "--all-targets", "--prune", "--max-unused", "0%"]);
    let (removed, primary) = forgot(&out, &env.repo());
    assert_eq!(
        removed,
        ids[..6],
        "the primary keeps the last 2 days: {out}"
    );
    let (removed, on_replica) = forgot(&out, &replica);
    assert_eq!(
        removed,
        ids[..2],
        "the replica keeps the last 6 days: {out}"
    );
    assert_eq!(count(&env, &env.repo()), 2);
    assert_eq!(count(&env, &replica), 6);
    for p in [primary, on_replica] {
        assert!(num(p, "deleted_packs") > 0, "{p}");
        assert!(num(p, "bytes_after") < num(p, "bytes_before"), "{p}");
    }
    // The primary's prune wrote new packs (repacked pages); the replica holds those pages
    // already, so a sync copies no pack, and next to nothing in bytes.
    let repacked = num(primary, "repack_written_bytes");
    assert!(
        num(primary, "repacked_packs") > 0 && repacked > 0,
        "the primary's prune repacked: {primary}"
    );
    let data_before = files(&replica.join("data"));
    let s = env.json(&["sync"]);
    let copied = num(&s["targets"][0], "copied_bytes");
    assert_eq!(
        files(&replica.join("data")),
        data_before,
        "the sync copied a pack to the replica: {s}"
    );
    assert!(
        copied < repacked / 10,
        "only small objects copied ({copied} bytes), not the {repacked} bytes of repacked \
         data: {s}"
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
    let out = env.json(&["--repo", r, "forget", "--prune", "--max-unused", "0%"]);
    assert_eq!(
        out["forget"]["removed"],
        serde_json::json!([first]),
        "{out}"
    );
    assert!(num(&out, "prune.deleted_packs") > 0, "{out}");
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
        shown["sqlite"]["sha256"].as_str().unwrap()
    );
}
