//! End-to-end tests of the `lifeboat` command line: every subcommand through the real
//! binary, exit codes, JSON shapes, configuration precedence and file permissions.

mod common;
use common::*;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn run(cmd: &mut assert_cmd::Command) -> Output {
    cmd.output().expect("run lifeboat")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert the documented `--json` error shape and return the `error` object.
fn json_error(out: &Output, expected_code: i32) -> serde_json::Map<String, Value> {
    assert_eq!(
        code(out),
        expected_code,
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", stdout(out)));
    let err = v["error"].as_object().expect("an `error` object").clone();
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["exit_code", "hint", "kind", "message"], "{v}");
    assert_eq!(err["exit_code"], expected_code, "{v}");
    assert!(err["kind"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(err["hint"].is_null() || err["hint"].is_string(), "{v}");
    err
}

fn integrity_check(p: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open restored file");
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Restore `id` to a new file `name` in the env and return its path.
fn restore_to(env: &Env, id: &str, name: &str) -> std::path::PathBuf {
    let out = env.path(name);
    env.cmd()
        .args(["restore", id, "--output", s(&out)])
        .assert()
        .success();
    out
}

#[test]
fn backup_list_show_verify_restore() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = make_db(&db, 2000);
    let other = env.path("other.db");
    drop(make_db(&other, 10));

    let b1 = env.json(&[
        "backup",
        s(&db),
        "--description",
        "before migration",
        "--tag",
        "nightly",
        "--tag",
        "v1",
    ]);
    let id = b1["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 14);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    assert_eq!(b1["source"], s(&db.canonicalize().unwrap()));
    assert!(b1["new_blobs"].as_u64().unwrap() > 0);
    assert_eq!(b1["reused_blobs"], 0);
    assert_eq!(b1["verify"], "written");
    let other_id = env.json(&["backup", s(&other), "--tag", "other"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(other_id > id, "ids sort by time: {id} then {other_id}");

    // list --json: both, oldest first.
    let all = env.json(&["list"]);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), other_id.as_str()]);
    assert_eq!(all[0]["tags"], serde_json::json!(["nightly", "v1"]));
    assert_eq!(all[0]["description"], "before migration");
    assert_eq!(all[0]["trigger"], "manual");

    // --source accepts a relative path (the command runs in the env folder).
    let by_source = env.json(&["list", "--source", "app.db"]);
    assert_eq!(by_source.as_array().unwrap().len(), 1);
    assert_eq!(by_source[0]["id"], id.as_str());
    let by_source = env.json(&["list", "--source", s(&other)]);
    assert_eq!(by_source.as_array().unwrap().len(), 1);
    assert_eq!(by_source[0]["id"], other_id.as_str());
    let by_tag = env.json(&["list", "--tag", "v1"]);
    assert_eq!(by_tag.as_array().unwrap().len(), 1);
    assert_eq!(by_tag[0]["id"], id.as_str());
    assert_eq!(env.json(&["list", "--tag", "nope"]), serde_json::json!([]));

    // Human list.
    let out = run(env.cmd().arg("list"));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains(&id) && text.contains(&other_id), "{text}");
    assert!(
        text.contains("nightly,v1") && text.contains("before migration"),
        "{text}"
    );
    assert!(text.contains("2 backups in"), "{text}");
    let out = run(env.cmd().args(["list", "--tag", "other"]));
    let text = stdout(&out);
    assert!(text.contains(&other_id) && !text.contains(&id), "{text}");
    let summary = text.lines().last().unwrap_or_default();
    assert!(summary.starts_with("1 backup"), "{text}");

    // show --json: the whole manifest.
    let m = env.json(&["show", &id]);
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["trigger"], "manual");
    assert_eq!(m["description"], "before migration");
    assert_eq!(m["tags"], serde_json::json!(["nightly", "v1"]));
    assert_eq!(m["tool_version"], env!("CARGO_PKG_VERSION"));
    assert!(m["duration_ms"].is_u64());
    assert_eq!(m["source"]["kind"], "sqlite");
    assert!(m["source"]["host"].as_str().is_some_and(|h| !h.is_empty()));
    let d = &m["sqlite"];
    assert_eq!(d["tables"]["t"], 2000);
    assert_eq!(d["page_size"], 4096);
    let page_count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let page_count = page_count as u64;
    assert_eq!(d["page_count"], page_count);
    assert_eq!(d["logical_bytes"], page_count * 4096);
    assert_eq!(d["journal_mode"], "wal");
    let sha = d["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(b1["sha256"], sha.as_str());

    // Human show.
    let out = run(env.cmd().args(["show", &id]));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains(&id) && text.contains(&sha), "{text}");
    assert!(
        text.contains("nightly, v1") && text.contains("manual"),
        "{text}"
    );

    // verify: every step passes.
    let out = run(env.cmd().args(["verify", &id]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let ticks = text
        .lines()
        .filter(|l| l.trim_start().starts_with('✓'))
        .count();
    assert_eq!(ticks, 7, "{text}");
    assert!(!text.contains('✗'), "{text}");
    assert!(text.contains("OK: this backup restores"), "{text}");
    assert!(
        text.contains("PRAGMA integrity_check") && text.contains(&sha),
        "{text}"
    );
    let v = env.json(&["verify", "--all"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    let out = run(env.cmd().args(["verify", "--all"]));
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("2 of 2 backups verified"),
        "{}",
        stdout(&out)
    );

    // restore --output: a plain SQLite file with the same content.
    let restored = restore_to(&env, &id, "restored.db");
    assert_eq!(sha256_file(&restored), sha);
    assert_eq!(integrity_check(&restored), "ok");
    assert_eq!(dump(&restored), dump(&db));
    drop(conn);
}

#[test]
fn second_backup_stores_only_the_change() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = make_db(&db, 5000);
    let first = env.json(&["backup", s(&db)]);
    let pages = first["page_count"].as_u64().unwrap();
    assert!(pages > 50, "{first}");
    assert_eq!(first["new_blobs"], pages);

    conn.execute("UPDATE t SET v = 'changed' WHERE id = 2500", [])
        .unwrap();
    let second = env.json(&["backup", s(&db)]);
    let (n1, n2) = (
        first["new_stored_bytes"].as_u64().unwrap(),
        second["new_stored_bytes"].as_u64().unwrap(),
    );
    assert!(n2 > 0, "{second}");
    assert!(n2 * 4 < n1, "second backup stored {n2} B, first {n1} B");
    let new = second["new_blobs"].as_u64().unwrap();
    assert!((1..=4).contains(&new), "{second}");
    assert_eq!(second["reused_blobs"].as_u64().unwrap() + new, pages);
    assert_ne!(first["sha256"], second["sha256"]);

    // Both restore to their own content.
    let out = restore_to(&env, second["id"].as_str().unwrap(), "second.db");
    assert_eq!(dump(&out), dump(&db));
    let v2500 = |p: &Path| -> String {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT v FROM t WHERE id = 2500", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(v2500(&out), "changed");
    let out = restore_to(&env, first["id"].as_str().unwrap(), "first.db");
    assert!(v2500(&out).starts_with("row 2499 "), "{}", v2500(&out));
    assert_eq!(dump(&out).len(), 5000);
}

#[test]
fn every_codec_round_trips() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 1500));
    let want = dump(&db);
    for (codec, level) in [
        ("zstd", Some("19")),
        ("gzip", Some("9")),
        ("lz4", None),
        ("none", None),
    ] {
        // One repository per codec, so each one really stores the pages.
        let repo = env.path(&format!("repo-{codec}"));
        let mut args = vec!["--repo", s(&repo), "backup", s(&db), "--compression", codec];
        if let Some(l) = level {
            args.extend(["--level", l]);
        }
        let b = env.json(&args);
        assert!(b["new_blobs"].as_u64().unwrap() > 0, "{b}");
        let id = b["id"].as_str().unwrap();
        let m = env.json(&["--repo", s(&repo), "show", id]);
        assert_eq!(m["stored"]["compression"], codec, "{m}");
        if let Some(l) = level {
            assert_eq!(m["stored"]["level"].to_string(), l);
        }
        let ratio = b["compression_ratio"].as_f64().unwrap();
        if codec == "none" {
            // Stored bytes are the raw pages plus pack and index overhead.
            assert!(ratio > 0.9 && ratio <= 1.0, "{b}");
        } else {
            assert!(ratio > 1.5, "{codec} did not compress: {b}");
        }
        let out = env.path(&format!("restored-{codec}.db"));
        env.cmd()
            .args(["--repo", s(&repo), "restore", id, "--output", s(&out)])
            .assert()
            .success();
        assert_eq!(dump(&out), want, "{codec}");
        assert_eq!(sha256_file(&out), m["sqlite"]["sha256"].as_str().unwrap());
        env.cmd()
            .args(["--repo", s(&repo), "verify", id])
            .assert()
            .code(0);
    }
}

#[test]
fn bad_compression_settings_are_usage_errors() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    for args in [
        ["--compression", "zstd", "--level", "0"],
        ["--compression", "zstd", "--level", "23"],
        ["--compression", "gzip", "--level", "10"],
        ["--compression", "gzip", "--level", "-1"],
        ["--compression", "brotli", "--level", "3"],
    ] {
        let out = run(env.cmd().arg("backup").arg(&db).args(args).arg("--json"));
        let err = json_error(&out, 2);
        assert_eq!(err["kind"], "Usage", "{args:?}");
    }
    let out = run(env.cmd().args(["backup", s(&db), "--level", "3x"]));
    assert_eq!(code(&out), 2);
    assert!(!env.repo().exists(), "no repository for a refused backup");
}

#[test]
fn ids_prefixes_latest_and_unknown() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = make_db(&db, 100);
    let id1 = env.backup(&db);
    conn.execute("INSERT INTO t(v) VALUES ('second')", [])
        .unwrap();
    let id2 = env.backup(&db);
    drop(conn);
    assert_ne!(id1, id2);
    let common = id1
        .chars()
        .zip(id2.chars())
        .take_while(|(a, b)| a == b)
        .count();
    // Ids start with the time: two backups a moment apart share their first characters.
    assert!(common >= 3, "{id1} {id2}");

    for ambiguous in [&id1[..1], &id1[..3], &id1[..common]] {
        let out = run(env.cmd().args(["show", ambiguous]));
        assert_eq!(code(&out), 2, "{ambiguous}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&id1) && err.contains(&id2), "{err}");
        let out = run(env.cmd().args(["show", ambiguous, "--json"]));
        assert_eq!(json_error(&out, 2)["kind"], "Usage");
    }
    let unique1 = &id1[..common + 1];
    let unique2 = &id2[..common + 1];
    assert_eq!(env.json(&["show", unique1])["id"], id1.as_str());
    assert_eq!(env.json(&["show", unique2])["id"], id2.as_str());
    assert_eq!(
        env.json(&["show", &unique1.to_ascii_uppercase()])["id"],
        id1.as_str()
    );
    assert_eq!(env.json(&["show", "latest"])["id"], id2.as_str());

    let out = restore_to(&env, unique1, "one.db");
    assert_eq!(dump(&out).len(), 100);
    let out = restore_to(&env, "latest", "latest.db");
    assert_eq!(dump(&out), dump(&db));
    env.cmd().args(["verify", unique2]).assert().code(0);

    for unknown in ["zzzzzzzzzzzzzz", "zz"] {
        let out = run(env.cmd().args(["show", unknown]));
        assert_eq!(code(&out), 3, "{}", stderr(&out));
        assert!(stderr(&out).contains(unknown));
        let out = run(env.cmd().args(["show", unknown, "--json"]));
        assert_eq!(json_error(&out, 3)["kind"], "NotFound");
        let x = env.path("x.db");
        let out = run(env.cmd().args(["restore", unknown, "--output", s(&x)]));
        assert_eq!(code(&out), 3);
        assert!(!x.exists());
        assert_eq!(code(&run(env.cmd().args(["verify", unknown]))), 3);
    }
}

#[test]
fn latest_in_an_empty_repository_is_not_found() {
    let env = Env::new();
    env.cmd().args(["repo", "init"]).assert().success();
    let out = run(env.cmd().args(["show", "latest", "--json"]));
    assert_eq!(json_error(&out, 3)["kind"], "NotFound");
    assert_eq!(code(&run(env.cmd().arg("verify"))), 3);
    assert_eq!(env.json(&["list"]), serde_json::json!([]));
}

#[test]
fn bad_sources() {
    let env = Env::new();
    // Named as a database but not one: exit 5, and no repository is created for it.
    let junk = env.path("notes.db");
    std::fs::write(&junk, "this is not a database, just some text\n".repeat(20)).unwrap();
    let out = run(env.cmd().args(["backup", s(&junk)]));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a SQLite database") && stderr(&out).contains("--kind files"),
        "{}",
        stderr(&out)
    );
    let out = run(env.cmd().args(["backup", s(&junk), "--json"]));
    assert_eq!(json_error(&out, 5)["kind"], "Source");
    // A SQLite database forced to be one when it is not.
    let text = env.path("notes.txt");
    std::fs::write(&text, "plain text\n").unwrap();
    let out = run(env.cmd().args(["backup", s(&text), "--kind", "sqlite"]));
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    // Missing: exit 3.
    let missing = env.path("missing.db");
    let out = run(env.cmd().args(["backup", s(&missing)]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.db"), "{}", stderr(&out));
    assert!(!missing.exists(), "backup must not create its source");
    let out = run(env.cmd().args(["backup", s(&missing), "--json"]));
    assert_eq!(json_error(&out, 3)["kind"], "NotFound");
    assert!(!env.repo().exists(), "no repository was created");
    // No repository at all: list/show/verify say so with exit 3.
    for args in [
        &["list"][..],
        &["show", "latest"],
        &["verify"],
        &["repo", "check"],
    ] {
        let out = run(env.cmd().args(args));
        assert_eq!(code(&out), 3, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no Lifeboat repository"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!env.repo().exists());
}

/// A database this user cannot read is a bad source (exit 5, as the README's table says),
/// not a storage failure: the repository is fine, and the hint says what to check.
#[test]
fn unreadable_source_is_a_source_error() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Tests run as root, who reads anything: run lifeboat as `nobody`, who can reach the
    // folder but not read the database.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |json: bool| {
        let mut c = env.std_cmd();
        c.args(["backup", s(&db)]);
        if json {
            c.arg("--json");
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.output().expect("run lifeboat as nobody")
    };
    let out = as_nobody(false);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains(s(&db)), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert_eq!(json_error(&as_nobody(true), 5)["kind"], "Source");
    assert!(!env.repo().exists(), "no repository was created");
}

/// Tests run as root, so a read-only folder would not stop writes. A repository path below a
/// regular file can never be created (ENOTDIR) whoever runs it. That is a storage failure
/// (exit 7, "unwritable/unusable target"), not "not found" (exit 3): nothing the user named
/// is missing, and retrying will not help until the location is fixed.
#[test]
fn repository_below_a_regular_file_is_a_storage_failure() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    let file = env.path("file.txt");
    std::fs::write(&file, "I am a file").unwrap();
    let repo = file.join("repo");
    for args in [
        &["backup", s(&db)][..],
        &["repo", "init"][..],
        &["demo", "--rows", "10", "--db", s(&env.path("demo.db"))][..],
    ] {
        let out = run(env.cmd().arg("--repo").arg(&repo).args(args));
        assert_eq!(code(&out), 7, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(s(&file)), "message names the path: {err}");
        assert!(err.contains("Not a directory"), "message says why: {err}");
        let out = run(env.cmd().arg("--repo").arg(&repo).args(args).arg("--json"));
        let e = json_error(&out, 7);
        assert_eq!(e["kind"], "Storage");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "I am a file");
}

#[test]
fn repo_init_check_stats() {
    let env = Env::new();
    let init = env.json(&["repo", "init"]);
    assert_eq!(init["format_version"], 2);
    assert_eq!(init["encryption"], "none");
    assert_eq!(init["repository"], s(&env.repo()));
    assert!(env.repo().join("config").is_file());
    let out = run(env.cmd().args(["repo", "init"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"));
    let out = run(env.cmd().args(["repo", "init", "--json"]));
    assert_eq!(json_error(&out, 2)["kind"], "Usage");

    let db = env.path("app.db");
    let conn = make_db(&db, 1000);
    let id1 = env.backup(&db);
    conn.execute("DELETE FROM t WHERE id < 100", []).unwrap();
    let id2 = env.backup(&db);
    drop(conn);

    for args in [&["repo", "check"][..], &["repo", "check", "--read-data"]] {
        let out = run(env.cmd().args(args));
        assert_eq!(code(&out), 0, "{}", stdout(&out));
        assert!(
            stdout(&out).contains("no problems found"),
            "{}",
            stdout(&out)
        );
        assert!(!stdout(&out).contains('✗'));
    }
    let c = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(c["read_data"], true);
    assert_eq!(c["backups"], 2);
    assert_eq!(c["problems"], serde_json::json!([]));
    assert!(c["bytes_read"].as_u64().unwrap() > 0);

    let st = env.json(&["repo", "stats"]);
    assert_eq!(st["location"], s(&env.repo()));
    assert_eq!(st["format_version"], 2);
    assert_eq!(st["encryption"], "none");
    assert_eq!(st["backups"], 2);
    let src = db.canonicalize().unwrap();
    assert_eq!(st["sources"][s(&src)], 2, "{st}");
    let m1 = env.json(&["show", &id1]);
    let m2 = env.json(&["show", &id2]);
    assert_eq!(
        st["logical_bytes"].as_u64().unwrap(),
        m1["sqlite"]["logical_bytes"].as_u64().unwrap()
            + m2["sqlite"]["logical_bytes"].as_u64().unwrap()
    );
    for k in [
        "unique_bytes",
        "stored_bytes",
        "packs",
        "blobs",
        "index_files",
    ] {
        assert!(st[k].as_u64().unwrap() > 0, "{k}: {st}");
    }
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.0, "{st}");
    assert!(st["compression_ratio"].as_f64().unwrap() > 1.0, "{st}");
    assert!(
        st["unique_bytes"].as_u64().unwrap() < st["logical_bytes"].as_u64().unwrap(),
        "{st}"
    );
    let out = run(env.cmd().args(["repo", "stats"]));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("backups"))
        .unwrap_or_default();
    assert!(line.contains("2 of 1 source"), "{text}");
}

#[test]
fn config_file_env_and_flag_precedence() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 50));
    let file_repo = env.path("file-repo");
    let env_repo = env.repo();
    let flag_repo = env.path("flag-repo");
    std::fs::write(
        env.path("lifeboat.toml"),
        format!(
            "repo = \"{}\"\ncompression = \"gzip\"\nlevel = 2\n",
            file_repo.display()
        ),
    )
    .unwrap();

    // Only the file: its repo and compression are used.
    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["backup", s(&db), "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["repository"], s(&file_repo));
    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["show", "latest", "--json"]));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["stored"]["compression"], "gzip");
    assert_eq!(m["stored"]["level"], 2);

    // LIFEBOAT_REPO beats the file; the flag beats both.
    assert_eq!(env.json(&["backup", s(&db)])["repository"], s(&env_repo));
    assert_eq!(
        env.json(&[
            "--repo",
            s(&flag_repo),
            "backup",
            s(&db),
            "--compression",
            "lz4"
        ])["repository"],
        s(&flag_repo)
    );
    let m = env.json(&["--repo", s(&flag_repo), "show", "latest"]);
    assert_eq!(m["stored"]["compression"], "lz4", "the flag beats the file");
    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .arg("--repo")
        .arg(&flag_repo)
        .args(["list", "--json"]));
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1);
    for repo in [&file_repo, &env_repo, &flag_repo] {
        let out = run(env.cmd().arg("--repo").arg(repo).args(["list", "--json"]));
        let l: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(l.as_array().unwrap().len(), 1, "{}", repo.display());
    }

    // An explicit --config elsewhere replaces ./lifeboat.toml.
    let other_cfg = env.path("other.toml");
    let cfg_repo = env.path("cfg-repo");
    std::fs::write(&other_cfg, format!("repo = \"{}\"\n", cfg_repo.display())).unwrap();
    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .arg("--config")
        .arg(&other_cfg)
        .args(["backup", s(&db), "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["repository"], s(&cfg_repo));
    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .env("LIFEBOAT_CONFIG", &other_cfg)
        .args(["list", "--json"]));
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1);
}

#[test]
fn invalid_config_is_a_usage_error() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 5));
    std::fs::write(env.path("lifeboat.toml"), "rpeo = \"/somewhere\"\n").unwrap();
    let out = run(env.cmd().args(["backup", s(&db)]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("lifeboat.toml") && err.contains("rpeo"),
        "{err}"
    );
    let out = run(env.cmd().args(["list", "--json"]));
    assert_eq!(json_error(&out, 2)["kind"], "Usage");
    assert!(!env.repo().exists());

    let cfg = env.path("bad.toml");
    for text in [
        "colour = 'blue'\n",
        "verify = 'sometimes'\n",
        "compression = 'rar'\n",
        "level = 'high'\n",
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = run(env.cmd().arg("--config").arg(&cfg).args(["backup", s(&db)]));
        assert_eq!(code(&out), 2, "{text}: {}", stderr(&out));
    }
    // A --config that does not exist is not silently ignored.
    let out = run(env
        .cmd()
        .arg("--config")
        .arg(env.path("absent.toml"))
        .arg("list"));
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));
}

#[test]
fn created_files_are_private() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 800));
    let id = env.backup(&db);
    env.backup(&db);
    let out = restore_to(&env, &id, "restored.db");
    assert_eq!(mode(&out), 0o600, "restored --output file");

    let mut dirs = 0;
    let mut files = 0;
    let mut stack = vec![env.repo()];
    while let Some(dir) = stack.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        dirs += 1;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    // root, backups, data, data/xx, index, tmp; config, 2 manifests, pack, index file.
    assert!(dirs >= 5 && files >= 5, "{dirs} dirs, {files} files");
}

#[test]
fn restore_output_never_overwrites() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 100));
    let id = env.backup(&db);
    let existing = env.path("precious.txt");
    std::fs::write(&existing, "do not touch").unwrap();
    let out = run(env.cmd().args(["restore", &id, "--output", s(&existing)]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = run(env
        .cmd()
        .args(["restore", &id, "--json", "--output", s(&existing)]));
    assert_eq!(json_error(&out, 2)["kind"], "Usage");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "do not touch");
    // Nor an existing database, and nothing is left beside it.
    let out = run(env.cmd().args(["restore", &id, "--output", s(&db)]));
    assert_eq!(code(&out), 2);
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lifeboat-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn demo_works_without_any_configuration() {
    let env = Env::new();
    let demo_db = env.path("demo/sample.db");
    let out = run(env.cmd().env_remove("LIFEBOAT_REPO").args([
        "demo",
        "--rows",
        "1000",
        "--db",
        s(&demo_db),
    ]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let default_repo = env.path("home/.local/share/lifeboat/repo");
    assert!(default_repo.join("config").is_file());
    assert!(!env.repo().exists(), "LIFEBOAT_REPO was not set");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains(s(&default_repo)),
        "the output says where the repository is: {text}"
    );
    assert!(
        stdout(&out).contains("✓"),
        "demo verifies its backup: {text}"
    );
    assert!(demo_db.is_file());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&demo_db).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the sample database is private");
    }

    let out = run(env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["list", "--json"]));
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(l[0]["tags"], serde_json::json!(["demo"]));
    assert_eq!(l[0]["source"], s(&demo_db.canonicalize().unwrap()));
    let m = env.json(&["--repo", s(&default_repo), "show", "latest"]);
    assert_eq!(m["sqlite"]["tables"]["signals"], 1000);
    let restored = env.path("demo-restored.db");
    env.cmd()
        .env_remove("LIFEBOAT_REPO")
        .args(["restore", "latest", "--output", s(&restored)])
        .assert()
        .success();
    assert_eq!(dump(&restored), dump(&demo_db));
}

#[test]
fn json_errors_have_one_shape() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 10));
    env.backup(&db);
    // Errors from the engine.
    let out = run(env.cmd().args(["show", "zzzzzz", "--json"]));
    let e = json_error(&out, 3);
    assert_eq!(e["kind"], "NotFound");
    assert!(e["message"].as_str().unwrap().contains("zzzzzz"));
    assert!(e["hint"].is_string());
    // Errors from argument parsing are errors too: still JSON on stdout, still exit 2.
    for args in [
        &["restore", "latest", "--json"][..],
        &["backup", s(&db), "--level", "high", "--json"],
        &["--json", "frobnicate"],
        &[
            "restore", "latest", "--output", "a.db", "--db", "b.db", "--json",
        ],
    ] {
        let out = run(env.cmd().args(args));
        let e = json_error(&out, 2);
        assert_eq!(e["kind"], "Usage", "{args:?}");
    }
    // Without --json, nothing is printed on stdout for an error.
    let out = run(env.cmd().args(["show", "zzzzzz"]));
    assert_eq!(code(&out), 3);
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    // --help and --version still work (and exit 0) with --json.
    env.cmd().args(["--json", "--help"]).assert().success();
    env.cmd().args(["--json", "--version"]).assert().success();
}

#[test]
fn verify_levels_and_repository_locations() {
    let env = Env::new();
    let db = env.path("my app.db");
    drop(make_db(&db, 300));

    let b = env.json(&["backup", s(&db), "--verify"]);
    assert_eq!(b["verify"], "full");
    assert_eq!(b["verify_report"]["ok"], true, "{b}");
    assert_eq!(b["verify_report"]["steps"].as_array().unwrap().len(), 7);
    let b = env.json(&["backup", s(&db), "--no-verify"]);
    assert_eq!(b["verify"], "none");
    assert!(b["verify_report"].is_null());
    let out = run(env
        .cmd()
        .env("LIFEBOAT_VERIFY", "full")
        .args(["backup", s(&db)]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("✓ PRAGMA integrity_check"),
        "{}",
        stdout(&out)
    );
    let out = run(env
        .cmd()
        .env("LIFEBOAT_VERIFY", "always")
        .args(["backup", s(&db)]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run(env
        .cmd()
        .args(["backup", s(&db), "--verify", "--no-verify"]));
    assert_eq!(code(&out), 2);
    assert_eq!(env.json(&["list"]).as_array().unwrap().len(), 3);

    // file://PATH is the same as PATH; an object store without credentials is a usage error
    // (and no request is sent to a cloud metadata service); unknown schemes too.
    let repo = env.path("url repo");
    let url = format!("file://{}", repo.display());
    let b = env.json(&["--repo", &url, "backup", s(&db)]);
    assert!(repo.join("config").is_file());
    let id = b["id"].as_str().unwrap();
    assert_eq!(env.json(&["--repo", s(&repo), "show", id])["id"], id);
    let out = run(env
        .cmd()
        .args(["--repo", "s3://bucket/lifeboat", "backup", s(&db), "--json"]));
    let e = json_error(&out, 2);
    assert_eq!(e["kind"], "Usage");
    assert!(
        e["hint"].as_str().unwrap().contains("AWS_ACCESS_KEY_ID"),
        "{e:?}"
    );
    let out = run(env.cmd().args(["--repo", "ftp://host/x", "list", "--json"]));
    assert_eq!(json_error(&out, 2)["kind"], "Usage");
}
