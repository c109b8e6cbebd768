//! What a tired operator hits at 3 a.m.: `latest` meaning the wrong backup, typos that
//! create repositories, locked databases, closed pipes, Ctrl-C, plain-http endpoints and
//! retention rules that keep nothing. Each test fails on the behaviour it guards against.

mod common;

use common::{dump, make_db, make_random_db, sha256_file, wait_until, Env, Out};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// `lifeboat ARGS` in the test's environment.
fn lb(env: &Env, args: &[&str]) -> Out {
    Out::of(env.std_cmd().args(args).output().expect("run lifeboat"))
}

/// Two databases, a.db (100 rows) and b.db (300 rows), each backed up once (b last).
fn two_backed_up_databases(env: &Env) -> (std::path::PathBuf, String, std::path::PathBuf, String) {
    let a = env.path("a.db");
    let b = env.path("b.db");
    drop(make_db(&a, 100));
    drop(make_db(&b, 300));
    let a_id = env.backup(&a);
    let b_id = env.backup(&b);
    (a, a_id, b, b_id)
}

fn insert(db: &Path, rows: u32) {
    let c = rusqlite::Connection::open(db).expect("open");
    for i in 0..rows {
        c.execute("INSERT INTO t(v) VALUES (?1)", [format!("later {i}")])
            .expect("insert");
    }
}

/// The headline: a second `restore latest --db` must not put back what the first replaced.
#[test]
fn restoring_latest_twice_does_not_roll_back_to_the_safety_backup() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 200));
    let good = dump(&db);
    let good_id = env.backup(&db);
    insert(&db, 50); // the bad change, never backed up
    let bad = dump(&db);
    assert_ne!(good, bad);
    let d = db.to_str().expect("utf-8");

    let first =
        lb(&env, &["restore", "latest", "--db", d, "--yes"]).ok("first restore latest --db");
    assert!(
        first
            .text()
            .contains(&format!("using backup {good_id} of ")),
        "{}",
        first.text()
    );
    assert_eq!(dump(&db), good);
    let list = env.json(&["list"]);
    let safety: Vec<_> = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|b| b["trigger"] == "pre-restore")
        .collect();
    assert_eq!(safety.len(), 1, "a safety backup of the bad state: {list}");

    // Again (a retry after an interrupted restore): still the good backup, not the safety one.
    lb(&env, &["restore", "latest", "--db", d, "--yes"]).ok("second restore latest --db");
    assert_eq!(
        dump(&db),
        good,
        "the second restore put back the state the first replaced"
    );

    // `show latest` and `verify` agree on which backup `latest` is.
    let shown = env.json(&["show", "latest", "--source", d]);
    assert_eq!(shown["id"], good_id.as_str());
}

#[test]
fn latest_is_scoped_to_one_database() {
    let env = Env::new();
    let (a, a_id, b, b_id) = two_backed_up_databases(&env); // b's is newer
    let (a_s, b_s) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));

    // Without a source, `latest` is ambiguous: both databases are named.
    let out = lb(&env, &["restore", "latest", "--output", "x.db"]).fails(
        2,
        "restore latest with two databases",
        "ambiguous",
    );
    assert!(
        out.text().contains(a_s) && out.text().contains(b_s),
        "{}",
        out.text()
    );
    assert!(!env.path("x.db").exists());

    // --db picks that database's newest backup, although b's is newer.
    let a_before = dump(&a);
    insert(&a, 10);
    lb(&env, &["restore", "latest", "--db", a_s, "--yes"]).ok("restore latest --db a");
    assert_eq!(dump(&a), a_before);

    // --source narrows restore --output, show and verify.
    let out_db = env.path("b-copy.db");
    lb(
        &env,
        &[
            "restore",
            "latest",
            "--source",
            b_s,
            "--output",
            out_db.to_str().expect("utf-8"),
        ],
    )
    .ok("restore latest --source b");
    assert_eq!(dump(&out_db), dump(&b));
    assert_eq!(
        env.json(&["show", "latest", "--source", a_s])["id"],
        a_id.as_str()
    );
    let v = env.json(&["verify", "--source", b_s]);
    let ids: Vec<_> = v["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, vec![serde_json::json!(b_id)]);

    // verify with no id checks the newest (non-safety) backup of every database.
    let v = env.json(&["verify"]);
    let mut ids: Vec<String> = v["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    let mut want = vec![a_id.clone(), b_id.clone()];
    want.sort();
    assert_eq!(ids, want, "verify without an id: {v}");

    // A full id of another source with --source is refused.
    lb(&env, &["show", &a_id, "--source", b_s]).fails(3, "show an id of another source", "not of");
}

#[test]
fn restoring_another_databases_backup_over_a_file_needs_force() {
    let env = Env::new();
    let (a, a_id, b, _) = two_backed_up_databases(&env);
    let b_sha = sha256_file(&b);
    let b_s = b.to_str().expect("utf-8");
    let out = lb(&env, &["restore", &a_id, "--db", b_s, "--yes"]).fails(
        2,
        "restore a's backup over b",
        "--force",
    );
    assert!(
        out.text().contains(a.to_str().expect("utf-8")) && out.text().contains(b_s),
        "names both: {}",
        out.text()
    );
    assert_eq!(sha256_file(&b), b_sha, "b was changed by a refused restore");
    lb(&env, &["restore", &a_id, "--db", b_s, "--yes", "--force"])
        .ok("restore a's backup over b with --force");
    assert_eq!(dump(&b), dump(&a));
}

#[test]
fn in_place_restore_without_a_terminal_names_both_flags() {
    let env = Env::new();
    let a = env.path("a.db");
    drop(make_db(&a, 10));
    env.backup(&a);
    lb(
        &env,
        &["restore", "latest", "--db", a.to_str().expect("utf-8")],
    )
    .fails(2, "restore --db without --yes and no terminal", "--yes");
    lb(&env, &["restore", "latest"]).fails(2, "restore without a destination", "--output");
}

/// `env.std_cmd()` without `LIFEBOAT_INIT`: what a user's shell looks like.
fn user_cmd(env: &Env) -> std::process::Command {
    let mut c = env.std_cmd();
    c.env_remove("LIFEBOAT_INIT").env_remove("LIFEBOAT_REPO");
    c
}

/// `lifeboat ARGS` as a user's shell runs it.
fn as_user(env: &Env, args: &[&str]) -> Out {
    Out::of(user_cmd(env).args(args).output().expect("run lifeboat"))
}

#[test]
fn mistyped_repositories_are_not_created() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 20));
    let d = db.to_str().expect("utf-8");
    let real = env.path("backups/lifeboat");
    let real_s = real.to_str().expect("utf-8");
    as_user(&env, &["--repo", real_s, "repo", "init"]).ok("repo init");
    as_user(&env, &["--repo", real_s, "backup", d]).ok("backup");

    // A typo of a repository this machine used: not found, and the hint names the real one.
    let typo = env.path("backups/lifebot");
    let out = as_user(
        &env,
        &["--repo", typo.to_str().expect("utf-8"), "backup", d],
    )
    .fails(
        3,
        "backup into a mistyped repository",
        "no Lifeboat repository",
    );
    assert!(
        out.text().contains(&format!("did you mean {real_s}?")),
        "{}",
        out.text()
    );
    assert!(!typo.exists(), "the typo created a folder");

    // A path under folders that do not exist.
    let deep = env.path("nonexistent/dir/repo");
    as_user(
        &env,
        &["--repo", deep.to_str().expect("utf-8"), "backup", d],
    )
    .fails(3, "backup into a path that does not exist", "repo init");
    assert!(!env.path("nonexistent").exists());

    // A restic-style URL: refused, nothing created, the hint spells it our way.
    let out = as_user(&env, &["--repo", "s3:primary/app", "backup", d]).fails(
        2,
        "a restic-style s3: location",
        "s3:",
    );
    assert!(out.text().contains("s3://primary/app"), "{}", out.text());
    assert!(
        !env.path("s3:primary").exists(),
        "a local s3:primary folder was made"
    );

    // A file given as the repository.
    as_user(&env, &["--repo", d, "list"]).fails(
        2,
        "--repo naming a database file",
        "is a file, not a repository",
    );

    // --init creates it on purpose.
    let new = env.path("new-repo");
    as_user(
        &env,
        &[
            "--repo",
            new.to_str().expect("utf-8"),
            "backup",
            "--init",
            d,
        ],
    )
    .ok("backup --init");
    assert!(new.join("config").exists());

    // The default location is still created by a first backup, with no set-up at all.
    let out = as_user(&env, &["backup", d]).ok("backup into the default");
    assert!(out.text().contains("(the default"), "{}", out.text());
    assert!(env.path("home/.local/share/lifeboat/repo/config").exists());
}

#[test]
fn a_passphrase_for_an_unencrypted_repository_is_an_error() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 20));
    env.backup(&db);
    let out = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_PASSWORD", "secret words")
            .args(["backup", db.to_str().expect("utf-8")])
            .output()
            .expect("run"),
    )
    .code(9, "backup with a passphrase into a plain repository");
    assert!(
        out.text().contains("not encrypted") || out.text().contains("unencrypted"),
        "{}",
        out.text()
    );
    assert_eq!(
        env.json(&["list"]).as_array().expect("list").len(),
        1,
        "a backup was taken"
    );
}

#[test]
fn a_database_locked_past_the_timeout_is_in_use_with_a_hint() {
    let env = Env::new();
    let db = env.path("app.db");
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE t(v); INSERT INTO t VALUES (1);")
        .expect("schema");
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2);")
        .expect("lock");
    let out = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_BUSY_TIMEOUT", "0.5")
            .args(["backup", db.to_str().expect("utf-8")])
            .output()
            .expect("run"),
    )
    .fails(
        6,
        "backup of an exclusively locked database",
        "locked by another process",
    );
    assert!(out.text().contains("hint:"), "{}", out.text());
    c.execute_batch("COMMIT").expect("commit");
    env.backup(&db);
}

/// Run lifeboat with its stdout a pipe whose reader is already gone.
fn with_closed_stdout(env: &Env, args: &[&str]) -> (i32, String) {
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // the reader closes before anything is printed
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let status = child.wait().expect("wait");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn a_closed_pipe_ends_quietly_and_the_work_is_still_done() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 20));
    for _ in 0..3 {
        env.backup(&db);
    }
    for args in [
        vec!["list"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["show", "latest"],
        vec!["list", "--json"],
    ] {
        let (code, err) = with_closed_stdout(&env, &args);
        assert_eq!(code, 0, "{args:?} with a closed stdout: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("failed printing"),
            "{args:?}: {err}"
        );
    }
    // A command that changes something finishes its work although nobody reads its output.
    let (code, err) = with_closed_stdout(&env, &["forget", "--keep-last", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        env.json(&["list"]).as_array().expect("list").len(),
        1,
        "forget stopped half-way"
    );
}

fn lock_markers(repo: &Path) -> Vec<String> {
    common::file_names(&repo.join("locks"))
}

fn temp_files(dir: &Path) -> Vec<String> {
    common::walk_files(dir)
        .into_iter()
        .map(|p| p.display().to_string())
        .filter(|p| p.ends_with(".tmp"))
        .collect()
}

#[test]
fn sigint_during_a_backup_stops_cleanly_and_keeps_what_was_stored() {
    let env = Env::new();
    let small = env.path("small.db");
    drop(make_db(&small, 10));
    env.backup(&small); // the repository exists
    let db = env.path("big.db");
    make_random_db(&db, "wal", 120_000, 1000); // ~130 MB that does not compress
    let child = env
        .std_cmd()
        .args(["backup", db.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Aim: after the first pack of this backup is stored, before the backup commits.
    let packs_before = common::walk_files(&env.repo().join("data")).len();
    assert!(
        wait_until(Duration::from_secs(60), || common::walk_files(
            &env.repo().join("data")
        )
        .len()
            > packs_before),
        "no pack was stored"
    );
    assert!(
        !lock_markers(&env.repo()).is_empty(),
        "the backup's lock marker is there while it runs"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = Out::of(child.wait_with_output().expect("wait")).code(130, "backup after SIGINT");
    assert!(
        out.text().contains("interrupted by SIGINT"),
        "{}",
        out.text()
    );
    assert!(
        out.text().contains("not committed"),
        "says what was kept: {}",
        out.text()
    );
    assert_eq!(
        env.json(&["list"]).as_array().expect("list").len(),
        1,
        "an interrupted backup committed"
    );
    assert!(
        lock_markers(&env.repo()).is_empty(),
        "lock marker left: {:?}",
        lock_markers(&env.repo())
    );
    assert!(
        temp_files(&env.repo()).is_empty(),
        "temp files left: {:?}",
        temp_files(&env.repo())
    );
    assert_eq!(env.json(&["repo", "check"])["ok"], true);

    // The next backup reuses the pages the interrupted one stored.
    let v = env.json(&["backup", db.to_str().expect("utf-8")]);
    assert!(
        v["reused_blobs"].as_u64().expect("reused_blobs") > 0,
        "nothing was kept: {v}"
    );
    let restored = env.path("restored.db");
    env.json(&[
        "restore",
        v["id"].as_str().expect("id"),
        "--output",
        restored.to_str().expect("utf-8"),
    ]);
    assert_eq!(sha256_file(&restored), sha256_file(&db));
}

#[test]
fn sigterm_during_a_restore_removes_the_partial_file() {
    let env = Env::new();
    let db = env.path("big.db");
    make_random_db(&db, "wal", 150_000, 1000);
    let id = env.backup(&db);
    let out_db = env.path("out.db");
    let child = env
        .std_cmd()
        .args(["restore", &id, "--output", out_db.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Aim: while the restore writes its temporary file beside the output.
    let temp_seen = wait_until(Duration::from_secs(60), || {
        common::file_names(env.dir.path())
            .iter()
            .any(|n| n.starts_with(".out.db.lifeboat-"))
    });
    assert!(temp_seen, "never saw the restore's temporary file");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = Out::of(child.wait_with_output().expect("wait"));
    assert_eq!(
        out.code,
        143,
        "the kill landed after the restore finished, or it failed: {}",
        out.text()
    );
    assert!(
        out.text().contains("interrupted by SIGTERM"),
        "{}",
        out.text()
    );
    assert!(!out_db.exists(), "a partial output file");
    let left: Vec<_> = common::file_names(env.dir.path())
        .into_iter()
        .filter(|n| n.contains("lifeboat-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert!(lock_markers(&env.repo()).is_empty());
}

#[test]
fn a_plain_http_endpoint_names_the_variable_to_set() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    let out = Out::of(
        env.std_cmd()
            .env("AWS_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_ACCESS_KEY_ID", "key")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_REGION", "us-east-1")
            .args([
                "--repo",
                "s3://bucket/app",
                "backup",
                db.to_str().expect("utf-8"),
            ])
            .output()
            .expect("run"),
    )
    .fails(2, "a plain-http S3 endpoint", "AWS_ALLOW_HTTP");
    assert!(!out.text().contains("builder error"), "{}", out.text());
}

#[test]
fn a_count_of_zero_is_refused() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    for _ in 0..3 {
        env.backup(&db);
    }
    lb(&env, &["forget", "--keep-last", "0"]).fails(2, "forget --keep-last 0", "count of 0");
    lb(&env, &["forget", "--max-count", "+00"]).fails(2, "forget --max-count +00", "count of 0");
    std::fs::write(env.path("lifeboat.toml"), "[retention]\nkeep_last = 0\n").expect("config");
    lb(&env, &["forget", "--dry-run"]).fails(2, "keep_last = 0 in the config", "count of 0");
    std::fs::remove_file(env.path("lifeboat.toml")).expect("rm config");
    assert_eq!(env.json(&["list"]).as_array().expect("list").len(), 3);
}

#[test]
fn retention_source_sections_are_matched_like_source_flags_or_warned_about() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    for _ in 0..3 {
        env.backup(&db);
    }
    // A relative spelling of the real path applies; a misspelt one is reported.
    std::fs::write(
        env.path("lifeboat.toml"),
        "[retention]\nkeep_last = 5\n[retention.source.\"./app.db\"]\nkeep_last = 1\n[retention.source.\"/srv/ap.db\"]\nkeep_last = 2\n",
    )
    .expect("config");
    let out = env
        .std_cmd()
        .args(["forget", "--dry-run", "--json"])
        .output()
        .expect("run");
    let out = Out::of(out).ok("forget --dry-run");
    let v = out.json();
    assert_eq!(
        v["forget"]["removed"].as_array().expect("removed").len(),
        2,
        "{v}"
    );
    assert!(
        out.text().contains("[retention.source.\"/srv/ap.db\"]"),
        "{}",
        out.text()
    );
    assert!(
        !out.text().contains("[retention.source.\"./app.db\"]"),
        "{}",
        out.text()
    );
}

#[test]
fn output_of_a_backup_that_stored_nothing_new_and_of_list() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    let first = env.backup(&db);
    let v = env.json(&["backup", db.to_str().expect("utf-8")]);
    assert_eq!(v["new_blobs"], 0);
    assert!(v["dedup_ratio"].is_null(), "a ratio of nothing: {v}");
    let out = lb(&env, &["backup", db.to_str().expect("utf-8")]).ok("backup");
    assert!(!out.text().contains("0.0x"), "{}", out.text());
    assert!(out.text().contains("nothing new"), "{}", out.text());

    // A long source path keeps the columns in line; pins show; one backup is "1 backup".
    let deep = env.path(&format!("{}/app.db", "very-long-folder-name".repeat(4)));
    std::fs::create_dir_all(deep.parent().expect("parent")).expect("mkdir");
    drop(make_db(&deep, 10));
    env.backup(&deep);
    env.json(&["pin", &first]);
    let out = lb(&env, &["list"]).ok("list");
    let text = out.stdout.clone();
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    let desc_col = header.find("DESCRIPTION").expect("header");
    let source_col = header.find("SOURCE").expect("header");
    for l in &lines[1..lines.len() - 1] {
        assert!(
            l.len() <= desc_col || l.is_char_boundary(source_col),
            "{text}"
        );
        assert!(
            l[source_col..].starts_with('/'),
            "SOURCE column out of line:\n{text}"
        );
    }
    let pinned_line = lines
        .iter()
        .find(|l| l.starts_with(&first))
        .expect("first backup listed");
    assert!(pinned_line.contains("pinned"), "{text}");
    assert!(
        lines.last().expect("footer").starts_with("4 backups in"),
        "{text}"
    );
    let one = lb(&env, &["list", "--source", deep.to_str().expect("utf-8")]).ok("list");
    assert!(one.text().contains("1 backup in"), "{}", one.text());
    assert_eq!(env.json(&["list"])[0]["pinned"], true);
}

#[test]
fn a_stale_lock_marker_is_named_by_repo_check() {
    let env = Env::new();
    let db = env.path("big.db");
    make_random_db(&db, "wal", 60_000, 1000);
    env.backup(&db);
    let mut child = env
        .std_cmd()
        .args(["backup", db.to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        wait_until(Duration::from_secs(30), || !lock_markers(&env.repo())
            .is_empty()),
        "no marker"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    if lock_markers(&env.repo()).is_empty() {
        panic!("the backup finished before it was killed; the test needs a larger database");
    }
    let out = lb(&env, &["repo", "check"]).ok("repo check");
    assert!(
        out.text().contains("stale lock marker locks/"),
        "{}",
        out.text()
    );
    assert_eq!(
        env.json(&["repo", "check"])["stale_locks"]
            .as_array()
            .expect("stale_locks")
            .len(),
        1
    );
}

#[test]
fn a_new_codec_on_the_command_line_starts_from_its_own_default_level() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 2000));
    std::fs::write(env.path("lifeboat.toml"), "level = 3\n").expect("config");
    let v = env.json(&[
        "backup",
        db.to_str().expect("utf-8"),
        "--compression",
        "gzip",
    ]);
    let shown = env.json(&["show", v["id"].as_str().expect("id")]);
    assert_eq!(shown["stored"]["compression"], "gzip");
    assert_eq!(shown["stored"]["level"], 6, "{shown}");
    let v = env.json(&["backup", db.to_str().expect("utf-8")]);
    let shown = env.json(&["show", v["id"].as_str().expect("id")]);
    assert_eq!(
        (
            shown["stored"]["compression"].clone(),
            shown["stored"]["level"].clone()
        ),
        (serde_json::json!("zstd"), serde_json::json!(3))
    );
}

/// Give backup `id` of a plain repository another host (as if another machine took it).
fn set_host(env: &Env, id: &str, host: &str) {
    let path = env.repo().join("backups").join(id);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("plain JSON");
    m["source"]["host"] = serde_json::json!(host);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
}

#[test]
fn latest_of_a_path_prefers_this_hosts_backups() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 100));
    let ours = env.backup(&db);
    let ours_dump = dump(&db);
    insert(&db, 20);
    let theirs = env.backup(&db); // newer, of the same path, "from production"
    set_host(&env, &theirs, "prod-1");
    let d = db.to_str().expect("utf-8");
    let out = lb(&env, &["restore", "latest", "--db", d, "--yes"]).ok("restore latest --db");
    assert!(
        out.text().contains(&format!("using backup {ours} ")),
        "{}",
        out.text()
    );
    assert_eq!(dump(&db), ours_dump, "another host's backup was restored");
    // On a third host both are someone else's: ambiguous, both named.
    set_host(&env, &ours, "staging-1");
    let out = lb(&env, &["show", "latest", "--source", d]).fails(
        2,
        "latest of two other hosts",
        "ambiguous",
    );
    assert!(
        out.text().contains("on prod-1") && out.text().contains("on staging-1"),
        "{}",
        out.text()
    );
    // verify without an id checks each host's newest.
    let v = env.json(&["verify"]);
    assert_eq!(v["backups"].as_array().expect("backups").len(), 2, "{v}");
}

/// A backup whose content kind this version does not know (written by a newer Lifeboat):
/// nothing may be deleted on its account, and every walker says so the same way.
#[test]
fn a_content_kind_from_a_newer_lifeboat_stops_prune_and_is_named_by_check() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 100));
    env.backup(&db);
    insert(&db, 10);
    let newer = env.backup(&db);
    let path = env.repo().join("backups").join(&newer);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("plain JSON");
    m["content"]["kind"] = serde_json::json!("hologram");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).expect("json")).expect("write");
    let before = common::walk_files(&env.repo().join("data")).len();
    let out = lb(&env, &["prune"]).fails(2, "prune with an unknown content kind", "does not know");
    assert!(
        out.text().contains("prune changed nothing"),
        "{}",
        out.text()
    );
    assert_eq!(
        common::walk_files(&env.repo().join("data")).len(),
        before,
        "prune deleted data"
    );
    let out = lb(&env, &["repo", "check"]).code(4, "check with an unknown content kind");
    assert!(
        out.text().contains(&newer) && out.text().contains("'hologram'"),
        "{}",
        out.text()
    );
}

/// A name planted under `backups/` (dated far ahead) does not make `status` report a fresh
/// backup: the newest one shown is the newest that reads as a manifest.
#[test]
fn status_is_not_fooled_by_a_planted_backup_name() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    let id = env.backup(&db);
    let planted = "0zzzzzzzzzzzzz";
    std::fs::write(env.repo().join("backups").join(planted), b"").expect("plant");
    let v = env.json(&["status"]);
    assert_eq!(v["targets"][0]["newest_backup"], id.as_str(), "{v}");
}
