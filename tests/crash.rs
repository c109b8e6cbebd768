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
/// (A WAL database's reader creates its `-wal` file if there is none: a killed one leaves
/// it, empty, which is harmless: there is nothing in it to replay.)
fn source_untouched_and_unlocked(db: &Path, sha: &str) {
    assert_eq!(sha256_file(db), sha, "a killed backup changed the database");
    for suffix in ["-journal", "-wal"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        let len = std::fs::metadata(&side).map(|m| m.len());
        assert!(
            len.is_err() || (suffix == "-wal" && len.as_ref().is_ok_and(|l| *l == 0)),
            "a killed backup left a {suffix} file ({len:?} bytes)"
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
        num(&report, "packs") + num(&report, "unreferenced_packs") >= 1,
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
    assert_eq!(m["sqlite"]["sha256"], sha256_file(&big).as_str());
    let out = env.path("big-restored.db");
    restore_to(&env, &id, &out);
    assert_eq!(sha256_file(&out), sha256_file(&big));
    check_clean(&env, true);
}

/// What a first backup (of a small database, one pack) had done when it was killed.
#[derive(Debug, PartialEq)]
struct FirstBackupState {
    config: bool,
    marker: bool,
    packs: usize,
    index_files: usize,
    backups: usize,
}

fn first_backup_state(env: &Env) -> FirstBackupState {
    let repo = env.repo();
    FirstBackupState {
        config: repo.join("config").exists(),
        marker: !file_names(&repo.join("locks")).is_empty(),
        packs: walk_files(&repo.join("data")).len(),
        index_files: file_names(&repo.join("index")).len(),
        backups: file_names(&repo.join("backups")).len(),
    }
}

#[test]
fn kill_during_the_first_backup_leaves_a_usable_repository() {
    // Kills aimed with strace at each step of a first backup into a new local repository.
    // Objects are stored with linkat(2) (create-only) and their staging file unlinked after;
    // the backup's marker is written with renameat(2). strace counts calls per thread: the
    // main thread stores the config, writes the marker and stores the manifest; a writer
    // thread stores the pack and then its index file.
    let st = |config, marker, packs, index_files, backups| FirstBackupState {
        config,
        marker,
        packs,
        index_files,
        backups,
    };
    let points = [
        (
            "linkat",
            1,
            "as it stores the config",
            st(false, false, 0, 0, 0),
        ),
        (
            "unlinkat",
            1,
            "once the config is stored",
            st(true, false, 0, 0, 0),
        ),
        (
            "renameat",
            1,
            "as it writes its marker",
            st(true, false, 0, 0, 0),
        ),
        (
            "renameat",
            2,
            "as it rewrites its marker",
            st(true, true, 0, 0, 0),
        ),
        (
            "linkat",
            2,
            "once its pack is stored",
            st(true, true, 1, 0, 0),
        ),
        (
            "unlinkat",
            2,
            "once its index file is stored",
            st(true, true, 1, 1, 0),
        ),
        (
            "unlinkat",
            3,
            "once its manifest is stored",
            st(true, true, 1, 1, 1),
        ),
    ];
    for (syscall, n, what, want) in points {
        let ctx = format!("first backup killed {what} ({syscall} #{n})");
        let env = Env::new();
        let db = env.path("db.db");
        make_random_db(&db, "wal", 3_000, PAYLOAD);
        let sha = sha256_file(&db);
        let log = env.path("strace.log");
        let mut c = lifeboat_under_strace_at(syscall, Some(n), &log);
        env.setup(&mut c);
        let out = c
            .args(["backup", db.to_str().expect("utf-8")])
            .output()
            .expect("strace");
        // Killed, and where it was aimed: during that call (strace logs it unfinished), with
        // exactly the objects stored that the steps before it store.
        assert_eq!(
            out.status.code(),
            None,
            "{ctx}: not killed: {:?}",
            out.status
        );
        assert!(
            killed_in(&log, syscall),
            "{ctx}: the kill did not land in a {syscall}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert_eq!(first_backup_state(&env), want, "{ctx}");
        source_untouched_and_unlocked(&db, &sha);

        // What the kill left checks clean, lists no half-written backup, and lists the one
        // whose manifest was stored (it is complete).
        if want.config {
            check_clean(&env, true);
            let ids = listed(&env);
            assert_eq!(ids.len(), want.backups, "{ctx}");
            for id in ids {
                let out = env.path(&format!("killed-{id}.db"));
                restore_to(&env, &id, &out);
                assert_eq!(sha256_file(&out), sha, "{ctx}: the committed backup {id}");
            }
        }
        // The next backup sets up or reuses the repository and works.
        let id = env.backup(&db);
        assert!(listed(&env).contains(&id), "{ctx}");
        assert_eq!(listed(&env).len(), want.backups + 1, "{ctx}");
        check_clean(&env, true);
        let out = env.path("restored.db");
        restore_to(&env, &id, &out);
        assert_eq!(sha256_file(&out), sha, "{ctx}: the backup after the kill");
        assert_eq!(dump(&out), dump(&db), "{ctx}");
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

/// What an interrupted in-place restore left in place of the database.
#[derive(Debug, PartialEq)]
enum Left {
    Old,
    New,
}

/// The in-place restore of `id` over `target`, killed in various ways: each must leave the
/// database byte for byte the old one or the new one (SHA-256 of the source files, computed
/// here), never a mix.
struct InPlace<'a> {
    env: &'a Env,
    id: String,
    target: std::path::PathBuf,
    old_bytes: Vec<u8>,
    old_sha: String,
    new_sha: String,
}

impl InPlace<'_> {
    fn args(&self) -> Vec<String> {
        vec![
            "restore".into(),
            self.id.clone(),
            "--db".into(),
            self.target.to_str().expect("utf-8").into(),
            "--yes".into(),
            // The backup is of big.db: restoring it over target.db is deliberate.
            "--force".into(),
        ]
    }

    /// The restore's temporary files beside the database: (name, size).
    fn temps(&self) -> Vec<(String, u64)> {
        file_names(self.env.dir.path())
            .into_iter()
            .filter(|f| f.starts_with(".target.db."))
            .map(|f| {
                let size = std::fs::metadata(self.env.path(&f)).map_or(0, |m| m.len());
                (f, size)
            })
            .collect()
    }

    /// After a kill: the database is whole (old or new), nothing beside it would be replayed
    /// into it, leftovers are only the restore's temp file (returned, then removed), and the
    /// old database is put back for the next round.
    fn judge(&self, ctx: &str) -> (Left, Vec<(String, u64, String)>) {
        assert!(self.target.exists(), "{ctx}: the database vanished");
        for suffix in ["-journal", "-wal"] {
            let side = self.env.path(&format!("target.db{suffix}"));
            let len = std::fs::metadata(&side).map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                len, 0,
                "{ctx}: a non-empty {suffix} beside the database would be replayed into it"
            );
        }
        let sha = sha256_file(&self.target);
        let left = if sha == self.old_sha {
            Left::Old
        } else if sha == self.new_sha {
            Left::New
        } else {
            panic!("{ctx}: the database is neither the old nor the new one ({sha})");
        };
        assert_eq!(integrity_check(&self.target), ["ok"], "{ctx}");
        let mut temps = Vec::new();
        for (f, size) in self.temps() {
            assert!(
                f.starts_with(".target.db.lifeboat-") && f.ends_with(".tmp"),
                "{ctx}: unexpected leftover {f}"
            );
            let path = self.env.path(&f);
            temps.push((f, size, sha256_file(&path)));
            std::fs::remove_file(&path).expect("remove leftover");
        }
        for f in file_names(self.env.dir.path()) {
            assert!(
                !f.starts_with("target.db.lifeboat-old"),
                "{ctx}: the old database was moved aside: {f}"
            );
        }
        if left == Left::New {
            std::fs::write(&self.target, &self.old_bytes).expect("put the old database back");
        }
        (left, temps)
    }

    /// The restore under strace, killed as its thread enters its `n`-th `syscall`.
    fn killed_at(&self, syscall: &str, n: u32, ctx: &str) -> (Left, Vec<(String, u64, String)>) {
        let log = self.env.path("strace.log");
        let mut c = lifeboat_under_strace_at(syscall, Some(n), &log);
        self.env.setup(&mut c);
        let out = c.args(self.args()).output().expect("strace");
        assert_eq!(
            out.status.code(),
            None,
            "{ctx}: not killed: {:?}",
            out.status
        );
        assert!(
            killed_in(&log, syscall),
            "{ctx}: the kill did not land in a {syscall}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.judge(ctx)
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
    assert_ne!(old_sha, new_sha);
    let t = InPlace {
        env: &env,
        id: id.clone(),
        target: target.clone(),
        old_bytes,
        old_sha,
        new_sha: new_sha.clone(),
    };

    // One in-place restore over a copy, timed; another under strace, to see its steps: the
    // temp file is written with pwritev(2), then renamed over the database with rename(2)
    // (the trust state is replaced with rename(2) too). (Its safety backup stores the old
    // pages, so the safety backups below are quicker.)
    let copy = env.path("copy.db");
    std::fs::write(&copy, &t.old_bytes).expect("copy");
    let copy_args = [
        "restore",
        &id,
        "--db",
        copy.to_str().expect("utf-8"),
        "--yes",
        "--force",
    ];
    let full = time_uninterrupted(&env, &env.repo(), &copy_args);
    assert_eq!(sha256_file(&copy), new_sha);
    std::fs::write(&copy, &t.old_bytes).expect("copy");
    let log = env.path("probe.log");
    let mut c = strace_cmd();
    env.setup(&mut c);
    let out = c
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .args(["-e", "trace=pwritev,rename"])
        .arg(lifeboat_bin())
        .args(copy_args)
        .output()
        .expect("strace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&copy), new_sha);
    let writes = calls_logged(&log, "pwritev").len() as u32;
    let renames = calls_logged(&log, "rename");
    let into_place = 1 + renames
        .iter()
        .position(|l| l.contains("/.copy.db.lifeboat-") && l.contains("/copy.db\")"))
        .unwrap_or_else(|| panic!("no rename of the temp file over copy.db: {renames:#?}"))
        as u32;
    assert!(
        writes >= 10,
        "the restore writes its temp file in {writes} calls"
    );
    println!(
        "in-place restore takes about {full:?}: {writes} writes, then rename {into_place} moves it into place"
    );

    // Kills aimed at the steps: the temp file exists but is empty; half written; complete
    // and checked, about to be renamed: each leaves the old database, and the temp file
    // (a SIGKILL runs no clean-up) proves where the kill landed.
    let (left, temps) = t.killed_at("pwritev", 1, "killed at its first write");
    assert_eq!(left, Left::Old);
    assert!(
        matches!(temps.as_slice(), [(_, 0, _)]),
        "killed at its first write: the empty temp file is left: {temps:?}"
    );
    let (left, temps) = t.killed_at("pwritev", writes / 2, "killed half way through writing");
    assert_eq!(left, Left::Old);
    assert!(
        matches!(temps.as_slice(), [(_, size, sha)] if *size > 0 && *sha != new_sha),
        "killed half way: a partly written temp file is left: {temps:?}"
    );
    let (left, temps) = t.killed_at(
        "rename",
        into_place,
        "killed as it moves the new file into place",
    );
    assert_eq!(left, Left::Old);
    assert!(
        matches!(temps.as_slice(), [(_, _, sha)] if *sha == new_sha),
        "killed at the rename: the complete new database is left beside the old one: {temps:?}"
    );

    // Killed after the rename, at the next one (the trust state, as it finishes): the new
    // database, and nothing left beside it.
    assert!(
        renames.len() as u32 > into_place,
        "a rename follows the one into place: {renames:#?}"
    );
    let (left, temps) = t.killed_at("rename", into_place + 1, "killed after the rename");
    assert_eq!(left, Left::New);
    assert!(temps.is_empty(), "killed after the rename: {temps:?}");

    // And kills spread over a run, wherever they land.
    let (mut old, mut new) = (0, 0);
    for f in [0.1, 0.3, 0.5, 0.7, 0.9, 1.5] {
        let delay = full.mul_f64(f);
        let args = t.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, running) = run_and_kill(&env, &args, delay, None);
        assert!(
            running || status.success(),
            "restore failed on its own: {status}"
        );
        match t.judge(&format!("killed after {delay:?}")).0 {
            Left::Old => old += 1,
            Left::New => new += 1,
        }
    }
    println!("kills spread over the restore: {old} left the old database, {new} the new one");

    // Uninterrupted, it does replace it.
    env.cmd().args(t.args()).assert().success();
    assert_eq!(sha256_file(&target), new_sha);

    // The interrupted safety backups left nothing that breaks the repository, and every
    // safety backup that was committed restores to the old database.
    check_clean(&env, false);
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let safety = env.json(&["list", "--tag", "pre-restore"]);
    let safety = safety.as_array().expect("list");
    assert!(!safety.is_empty());
    let out = env.path("safety.db");
    restore_to(&env, safety[0]["id"].as_str().expect("id"), &out);
    assert_eq!(sha256_file(&out), t.old_sha);
}
