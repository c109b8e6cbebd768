//! `kill -9` in the middle of a backup or a restore: the repository stays consistent (only
//! harmless leftovers), no half-written backup appears, and a database being restored is
//! always either wholly the old one or wholly the new one.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Rows of 300 random bytes: about 13 per 4 KiB page.
const PAYLOAD: u32 = 300;
/// About 25 MB of incompressible pages: two packs (packs close at 16 MiB).
const BIG_ROWS: u32 = 80_000;

/// Start `lifeboat ARGS`, let it run for `delay` (or until `until` holds), then SIGKILL it.
/// Returns its exit status and whether it was still running when killed.
fn run_and_kill(
    env: &Env,
    args: &[&str],
    delay: Duration,
    mut until: Option<&mut dyn FnMut() -> bool>,
) -> (ExitStatus, bool) {
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lifeboat");
    match until.as_mut() {
        Some(cond) => {
            wait_until(delay, || {
                cond() || child.try_wait().ok().flatten().is_some()
            });
        }
        None => std::thread::sleep(delay),
    }
    let running = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("kill"); // SIGKILL; harmless if it already exited
    let status = child.wait().expect("wait");
    (status, running)
}

/// How long `lifeboat ARGS` takes when left alone (run with `repo` as its repository).
fn time_uninterrupted(env: &Env, repo: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = env
        .std_cmd()
        .env("LIFEBOAT_REPO", repo)
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

/// Kill points spread over a run that takes `full` when left alone, so the kills land in
/// every phase however fast lifeboat gets.
fn kill_points(full: Duration, fractions: &[f64]) -> Vec<Duration> {
    fractions.iter().map(|f| full.mul_f64(*f)).collect()
}

/// Backup ids `list` shows.
fn listed(env: &Env) -> BTreeSet<String> {
    let v = env.json(&["list"]);
    v.as_array()
        .expect("list is an array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// `repo check` passes, and reports what the interruptions left behind.
fn check_clean(env: &Env, read_data: bool) -> serde_json::Value {
    let mut args = vec!["repo", "check"];
    if read_data {
        args.push("--read-data");
    }
    let (code, v, err) = env.run_json(&args);
    assert_eq!(code, 0, "repo check failed after a kill: {v}\n{err}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    v
}

fn pack_names(env: &Env) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for sub in file_names(&env.repo().join("data")) {
        for f in file_names(&env.repo().join("data").join(&sub)) {
            out.insert(f);
        }
    }
    out
}

/// The killed backup changed nothing in the database and left no lock on it: a writer gets
/// an exclusive lock at once.
fn source_untouched_and_unlocked(db: &Path, sha: &str) {
    assert_eq!(sha256_file(db), sha, "a killed backup changed the database");
    for suffix in ["-journal", "-wal"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        assert!(
            !Path::new(&side).exists(),
            "a killed backup left a {suffix} file"
        );
    }
    let c = rusqlite::Connection::open(db).expect("open");
    c.busy_timeout(Duration::ZERO).expect("busy_timeout");
    c.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
        .expect("the database is still locked after the backup was killed");
}

fn restore_to(env: &Env, id: &str, out: &Path) {
    env.cmd()
        .args(["restore", id, "--output", out.to_str().expect("utf-8")])
        .assert()
        .success();
}

#[test]
fn kill_during_backup_leaves_a_consistent_repository() {
    let env = Env::new();
    let small = env.path("small.db");
    make_random_db(&small, "wal", 3_000, PAYLOAD);
    let base = env.backup(&small);
    let base_dump = dump(&small);
    // Rollback-journal mode: the backup holds a shared lock on the file while it reads.
    let big = env.path("big.db");
    make_random_db(&big, "delete", BIG_ROWS, PAYLOAD);
    let big_s = big.to_str().expect("utf-8");
    let big_sha = sha256_file(&big);

    let committed: BTreeSet<String> = [base.clone()].into();

    // Kill as soon as the first new pack is stored: the pack is in data/, but no index file
    // or manifest refers to it yet.
    let before = pack_names(&env);
    let mut new_pack = || pack_names(&env).len() > before.len();
    let (status, running) = run_and_kill(
        &env,
        &["backup", big_s],
        Duration::from_secs(60),
        Some(&mut new_pack),
    );
    assert!(
        running,
        "the backup finished before it could be killed ({status})"
    );
    source_untouched_and_unlocked(&big, &big_sha);
    let report = check_clean(&env, true);
    println!("after the first-pack kill: {report}");
    // The pack stored before the kill is either already indexed (each pack is indexed as
    // soon as it is stored, so a rerun reuses it) or, killed in between, unreferenced.
    assert!(
        report["packs"].as_u64().unwrap_or(0) + report["unreferenced_packs"].as_u64().unwrap_or(0)
            >= 1,
        "the pack stored before the kill is accounted for: {report}"
    );
    assert_eq!(listed(&env), committed, "no half-written backup is listed");

    // Kills spread over the whole backup. Nothing was committed by the kill above, so each
    // of these runs does the whole work again.
    let full = time_uninterrupted(&env, &env.path("scratch-repo"), &["backup", big_s]);
    let mut committed = committed;
    let mut killed_mid_backup = 0;
    for delay in kill_points(full, &[0.01, 0.1, 0.25, 0.45, 0.65, 0.85]) {
        let (status, running) = run_and_kill(&env, &["backup", big_s], delay, None);
        if running {
            killed_mid_backup += 1;
        } else {
            assert!(status.success(), "backup failed on its own: {status}");
        }
        source_untouched_and_unlocked(&big, &big_sha);
        check_clean(&env, false);
        let now = listed(&env);
        // Nothing disappears and at most this run's backup appears: a kill that lands after
        // the manifest was written (while the process reports) still commits it, which is
        // fine because a listed backup is complete (all of them verify below).
        assert!(now.is_superset(&committed), "a backup disappeared: {now:?}");
        assert!(now.len() <= committed.len() + 1, "{now:?}");
        committed = now;
    }
    println!("backup takes {full:?} alone; {killed_mid_backup} of 6 kills landed during it");
    assert!(
        killed_mid_backup >= 3,
        "the kills should land during the backups"
    );
    let report = check_clean(&env, true);
    println!("after all the kills: {report}");

    // Every earlier backup still verifies and restores.
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let out = env.path("base-restored.db");
    restore_to(&env, &base, &out);
    assert_eq!(dump(&out), base_dump);

    // A new backup after all that works, verifies and is the database byte for byte.
    let id = env.backup(&big);
    let v = env.json(&["verify", &id]);
    assert_eq!(v["ok"], true, "{v}");
    let m = env.json(&["show", &id]);
    assert_eq!(m["database"]["sha256"], sha256_file(&big).as_str());
    let out = env.path("big-restored.db");
    restore_to(&env, &id, &out);
    assert_eq!(sha256_file(&out), sha256_file(&big));
    check_clean(&env, true);
}

#[test]
fn kill_during_the_first_backup_leaves_a_usable_repository() {
    for ms in [0u64, 5, 20, 60] {
        let env = Env::new();
        let db = env.path("db.db");
        make_random_db(&db, "wal", 3_000, PAYLOAD);
        run_and_kill(
            &env,
            &["backup", db.to_str().expect("utf-8")],
            Duration::from_millis(ms),
            None,
        );
        if env.repo().join("config").exists() {
            check_clean(&env, false);
        }
        // Whatever the kill left, the next backup sets up or reuses the repository and works.
        let id = env.backup(&db);
        assert!(listed(&env).contains(&id));
        check_clean(&env, true);
        let out = env.path("restored.db");
        restore_to(&env, &id, &out);
        assert_eq!(dump(&out), dump(&db));
    }
}

#[test]
fn kill_during_restore_to_a_new_file_leaves_no_partial_file() {
    let env = Env::new();
    let big = env.path("big.db");
    make_random_db(&big, "wal", BIG_ROWS, PAYLOAD);
    let id = env.backup(&big);
    let sha = sha256_file(&big);

    let full = time_uninterrupted(
        &env,
        &env.repo(),
        &[
            "restore",
            &id,
            "--output",
            env.path("timed.db").to_str().expect("utf-8"),
        ],
    );
    let mut saw_temp = false;
    let mut absent = 0;
    let points = kill_points(full, &[0.01, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0]);
    for (i, delay) in points.into_iter().enumerate() {
        let name = format!("out-{i}.db");
        let out = env.path(&name);
        let (status, running) = run_and_kill(
            &env,
            &["restore", &id, "--output", out.to_str().expect("utf-8")],
            delay,
            None,
        );
        if out.exists() {
            // Only a finished restore (or one killed after the final link) has the file, and
            // then it is complete.
            assert_eq!(
                sha256_file(&out),
                sha,
                "{name} exists but is not the whole backup"
            );
        } else {
            assert!(
                running || !status.success(),
                "a finished restore left no file"
            );
            absent += 1;
        }
        for f in file_names(env.dir.path()) {
            if f.contains(&name) && f != name {
                let temp = f
                    .strip_prefix(&format!(".{name}.lifeboat-"))
                    .and_then(|rest| rest.strip_suffix(".tmp"));
                assert!(temp.is_some(), "unexpected leftover {f}");
                saw_temp = true;
            }
        }
    }
    println!("restore takes {full:?} alone; {absent} of 8 kills left no output file");
    assert!(absent >= 3, "the kills should land during the restores");
    assert!(
        saw_temp,
        "some kill should land while the temp file is written"
    );

    // The leftovers stop nothing: the same paths restore fine now.
    for i in 0..2 {
        let out = env.path(&format!("out-{i}.db"));
        if !out.exists() {
            restore_to(&env, &id, &out);
            assert_eq!(sha256_file(&out), sha);
            assert_eq!(integrity_check(&out), ["ok"]);
        }
    }
    // Restores only read the repository, and write a small lock that keeps a prune from
    // deleting what they read: a kill can leave at most that lock's temporary file.
    let report = check_clean(&env, false);
    assert_eq!(report["unreferenced_packs"], 0, "{report}");
    let tmp = env.repo().join("tmp");
    for f in file_names(&tmp) {
        let size = std::fs::metadata(tmp.join(&f))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size < 4096, "a restore left {f} ({size} bytes) in tmp/");
    }
}

#[test]
fn kill_during_in_place_restore_leaves_old_or_new_database_never_a_mix() {
    let env = Env::new();
    let big = env.path("big.db");
    make_random_db(&big, "wal", BIG_ROWS, PAYLOAD);
    let id = env.backup(&big);
    let new_sha = sha256_file(&big);

    let target = env.path("target.db");
    make_random_db(&target, "wal", 8_000, PAYLOAD);
    let old_bytes = std::fs::read(&target).expect("old");
    let old_sha = sha256_file(&target);
    let old_dump = dump(&target);
    let t = target.to_str().expect("utf-8");

    // Time one in-place restore over a copy. (Its safety backup stores the old pages, so the
    // safety backups below are quicker: the later kill points land after the restore.)
    let copy = env.path("copy.db");
    std::fs::copy(&target, &copy).expect("copy");
    let full = time_uninterrupted(
        &env,
        &env.repo(),
        &[
            "restore",
            &id,
            "--db",
            copy.to_str().expect("utf-8"),
            "--yes",
            // The backup is of another file (big.db): restoring it over this one is deliberate.
            "--force",
        ],
    );
    assert_eq!(sha256_file(&copy), new_sha);

    let (mut old, mut new) = (0, 0);
    let points = kill_points(
        full,
        &[0.01, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.1, 1.3],
    );
    for delay in points {
        let ms = delay.as_millis();
        let (status, running) = run_and_kill(
            &env,
            &["restore", &id, "--db", t, "--yes", "--force"],
            delay,
            None,
        );
        assert!(
            running || status.success(),
            "restore failed on its own: {status}"
        );
        assert!(
            target.exists(),
            "the database vanished (killed after {ms} ms)"
        );
        for suffix in ["-journal", "-wal"] {
            let side = env.path(&format!("target.db{suffix}"));
            let len = std::fs::metadata(&side).map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                len, 0,
                "a non-empty {suffix} beside the database would be replayed into it"
            );
        }
        let sha = sha256_file(&target);
        assert_eq!(integrity_check(&target), ["ok"], "killed after {ms} ms");
        if sha == old_sha {
            old += 1;
            assert_eq!(dump(&target), old_dump);
        } else {
            assert_eq!(
                sha, new_sha,
                "killed after {ms} ms: neither the old nor the new database"
            );
            new += 1;
            std::fs::write(&target, &old_bytes).expect("put the old database back");
        }
        for f in file_names(env.dir.path()) {
            if f.starts_with(".target.db.") {
                assert!(
                    f.starts_with(".target.db.lifeboat-") && f.ends_with(".tmp"),
                    "unexpected leftover {f}"
                );
                std::fs::remove_file(env.path(&f)).expect("remove leftover");
            } else {
                assert!(
                    !f.starts_with("target.db.lifeboat-old"),
                    "the old database was moved aside: {f}"
                );
            }
        }
    }
    println!(
        "in-place restore takes about {full:?}; kills: {old} left the old database, {new} the new one"
    );
    assert!(old >= 2, "the early kills should leave the old database");

    // Uninterrupted, it does replace it.
    env.cmd()
        .args(["restore", &id, "--db", t, "--yes", "--force"])
        .assert()
        .success();
    assert_eq!(sha256_file(&target), new_sha);

    // The interrupted safety backups left nothing that breaks the repository, and every
    // safety backup that was committed restores.
    check_clean(&env, false);
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let safety = env.json(&["list", "--tag", "pre-restore"]);
    assert!(!safety.as_array().expect("list").is_empty());
}
