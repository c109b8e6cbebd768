//! Replicas: `replica add` copies everything, every backup then updates every replica, `sync`
//! catches up and repairs, `status` shows lag, restore reads a lost object from a replica,
//! and a replica that cannot be written fails the command without harming the primary.

mod common;
use common::fault_proxy::{Down, FaultProxy, Faults};
use common::s3::S3Server;
use common::server::TestStore;
use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn replicas_follow_backups_and_serve_lost_objects() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = make_db(&db, 2_000);
    let first = env.backup(&db);
    let first_content = dump(&db);
    let copy1 = env.path("copy1");
    let copy2 = env.path("copy2");
    for c in [&copy1, &copy2] {
        let r = env.json(&["replica", "add", c.to_str().unwrap()]);
        assert!(
            r["targets"][0]["copied_objects"].as_u64().unwrap() >= 4,
            "{r}"
        );
    }
    let list = env.json(&["replica", "list"]);
    assert_eq!(list["replicas"].as_array().unwrap().len(), 2);

    conn.execute("UPDATE t SET v = 'new' WHERE id < 50", [])
        .unwrap();
    drop(conn);
    let b = env.json(&["backup", db.to_str().unwrap()]);
    let second = b["id"].as_str().unwrap().to_string();
    let replication = b["replication"].as_array().unwrap();
    assert_eq!(replication.len(), 2, "{b}");
    assert!(replication.iter().all(|r| r["error"].is_null()), "{b}");

    // Each replica is a complete repository of its own.
    for c in [&copy1, &copy2] {
        let v = env.json(&["--repo", c.to_str().unwrap(), "verify", "--all"]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    }
    let status = env.json(&["status"]);
    let targets = status["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{status}");
    for t in &targets[1..] {
        assert_eq!(t["objects_behind"], 0, "{t}");
        assert_eq!(t["backups"], 2, "{t}");
        assert_eq!(t["newest_backup"], second.as_str(), "{t}");
        assert!(t["last_success"].is_string(), "{t}");
    }

    // A replica that lost objects is behind, and `sync` brings it back.
    std::fs::remove_dir_all(copy2.join("data")).unwrap();
    let status = env.json(&["status"]);
    assert!(
        status["targets"][2]["objects_behind"].as_u64().unwrap() > 0,
        "{status}"
    );
    let s = env.json(&["sync", "--target", copy2.to_str().unwrap()]);
    assert!(
        s["targets"][0]["copied_objects"].as_u64().unwrap() > 0,
        "{s}"
    );
    let v = env.json(&["--repo", copy2.to_str().unwrap(), "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");

    // The primary loses a pack: restore reads it from a replica and says so.
    let shown = env.json(&["show", &first]);
    let pack_id = shown["stored"]["packs"][0].as_str().unwrap().to_string();
    let pack = env.repo().join("data").join(&pack_id[..2]).join(&pack_id);
    std::fs::remove_file(&pack).unwrap();
    let out = env.path("restored.db");
    let r = env
        .cmd()
        .args(["restore", &first, "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("from replica"),
        "the fallback is reported: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    // What it restored is the database as it was backed up, not just a file.
    assert_eq!(dump(&out), first_content, "the restore from the replica");
    assert_eq!(integrity_check(&out), ["ok"]);
    assert_eq!(
        sha256_file(&out),
        shown["sqlite"]["sha256"].as_str().expect("sha256"),
        "{shown}"
    );
    let (code, _) = env.run(&["repo", "check"]);
    assert_eq!(code, 4, "the primary itself is still reported as damaged");

    let removed = env.json(&["replica", "remove", copy1.to_str().unwrap()]);
    assert_eq!(removed["removed"], copy1.to_str().unwrap());
    assert_eq!(
        env.json(&["replica", "list"])["replicas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_unwritable_replica_fails_the_backup_but_not_the_primary() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 500));
    env.backup(&db);
    let good = env.path("good");
    env.json(&["replica", "add", good.to_str().unwrap()]);
    // A target that cannot be written is refused by `replica add`...
    std::fs::write(env.path("blocker"), b"x").unwrap();
    let (code, _) = env.run(&[
        "replica",
        "add",
        env.path("blocker/replica").to_str().unwrap(),
    ]);
    assert_eq!(code, 7, "adding an unusable target fails");
    let mut list = env.json(&["replica", "list"]);
    assert_eq!(list["replicas"].as_array().unwrap().len(), 1);
    // ...and one that breaks later fails the backup that cannot reach it.
    let bad = env.path("bad");
    env.json(&["replica", "add", bad.to_str().unwrap()]);
    std::fs::remove_dir_all(&bad).unwrap();
    std::fs::write(&bad, b"not a folder any more").unwrap();
    let (code, out) = env.run(&["backup", db.to_str().unwrap()]);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("replication failed"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    // The backup itself is on the primary and on the good replica.
    list = env.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = env.json(&["--repo", good.to_str().unwrap(), "verify", "--all"]);
    assert_eq!(v["backups"].as_array().unwrap().len(), 2, "{v}");
    let (code, status, _) = env.run_json(&["status"]);
    assert_eq!(code, 7, "a replica cannot be reached: {status}");
    let bad_row = status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == bad.to_str().unwrap())
        .cloned()
        .expect("the failing replica is listed");
    assert!(bad_row["last_error"].is_string(), "{status}");
    assert!(bad_row["objects_behind"].is_null(), "{status}");
}

#[test]
fn a_replica_on_s3() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("replica");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    env.backup(&db);
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .envs(s3.env())
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    run(&["replica", "add", &url]);
    run(&["backup", db.to_str().unwrap()]);
    let v = run(&["--repo", &url, "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    let status = run(&["status"]);
    assert_eq!(status["targets"][1]["objects_behind"], 0, "{status}");
}

#[test]
fn a_replica_with_its_own_credential_variables() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("elsewhere");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    env.backup(&db);
    // Only prefixed variables: the replica's provider differs from the primary's.
    let prefixed: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (format!("REPLICA_{k}"), v))
        .collect();
    let run = |args: &[&str]| {
        env.cmd()
            .envs(prefixed.clone())
            .args(args)
            .arg("--json")
            .output()
            .unwrap()
    };
    let out = run(&["replica", "add", &url]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no credentials without the section"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials for s3://"));

    std::fs::write(
        env.path("lifeboat.toml"),
        format!("[target.\"{url}\"]\nenv_prefix = \"REPLICA_\"\n"),
    )
    .unwrap();
    let out = run(&["replica", "add", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--repo", &url, "verify", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}

const OLD_PW: &str = "old-passphrase-1234";
const NEW_PW: &str = "new-passphrase-5678";

/// `lifeboat ARGS` with the passphrase `pw` and extra variables (whatever the outcome).
fn with_pw(env: &Env, pw: &str, vars: &[(&str, String)], args: &[&str]) -> Out {
    let mut c = env.std_cmd();
    c.env("LIFEBOAT_PASSWORD", pw);
    for (k, v) in vars {
        c.env(k, v);
    }
    Out::of(c.args(args).output().expect("run lifeboat"))
}

/// An encrypted repository opened by `OLD_PW` with one backup of `app.db`.
fn encrypted_repo(env: &Env, vars: &[(&str, String)]) -> std::path::PathBuf {
    let db = env.path("app.db");
    drop(make_db(&db, 500));
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST_KDF);
    with_pw(env, OLD_PW, vars, &init).ok("repo init");
    with_pw(env, OLD_PW, vars, &["backup", db.to_str().unwrap()]).ok("backup");
    db
}

/// `key add NEW_PW` (opened by `OLD_PW`).
fn add_new_key(env: &Env, vars: &[(&str, String)]) {
    let mut vars = vars.to_vec();
    vars.push(("LIFEBOAT_NEW_PASSWORD", NEW_PW.to_string()));
    let mut add = vec!["key", "add"];
    add.extend(FAST_KDF);
    with_pw(env, OLD_PW, &vars, &add).ok("key add");
}

/// The id of the key file that `pw` does not open (of two).
fn other_key_id(env: &Env, pw: &str, vars: &[(&str, String)]) -> String {
    let keys = with_pw(env, pw, vars, &["key", "list", "--json"])
        .ok("key list")
        .json();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["in_use"] == false)
        .unwrap_or_else(|| panic!("two keys: {keys}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `key remove` of the key file `OLD_PW` opens (opened by `NEW_PW`); returns its id.
fn remove_old_key(env: &Env, vars: &[(&str, String)]) -> String {
    let old = other_key_id(env, NEW_PW, vars);
    with_pw(env, NEW_PW, vars, &["key", "remove", &old]).ok("key remove");
    with_pw(env, OLD_PW, vars, &["list"]).code(8, "the removed passphrase on the primary");
    old
}

/// The status row of `target`.
fn status_row(status: &serde_json::Value, target: &str) -> serde_json::Value {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .cloned()
        .unwrap_or_else(|| panic!("{target} is in the status: {status}"))
}

#[test]
fn key_changes_reach_the_replicas_at_the_next_sync() {
    let env = Env::new();
    encrypted_repo(&env, &[]);
    let copy = env.path("copy");
    let copy = copy.to_str().unwrap();
    with_pw(&env, OLD_PW, &[], &["replica", "add", copy]).ok("replica add");

    // A passphrase added on the primary opens the replica once it is synced.
    add_new_key(&env, &[]);
    let status = with_pw(&env, OLD_PW, &[], &["status", "--json"])
        .ok("status")
        .json();
    assert_eq!(
        status_row(&status, copy)["key_changes_pending"],
        true,
        "{status}"
    );
    with_pw(&env, OLD_PW, &[], &["sync"]).ok("sync");
    with_pw(&env, NEW_PW, &[], &["--repo", copy, "list"]).ok("the new passphrase on the replica");

    // A key file deleted on the primary behind Lifeboat's back (its authenticated config
    // still lists it) stays on the replica: a listing proves nothing.
    let new_id = other_key_id(&env, OLD_PW, &[]);
    let key_file = env.repo().join("keys").join(&new_id);
    let saved = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let sync = with_pw(&env, OLD_PW, &[], &["sync", "--json"])
        .ok("sync")
        .json();
    assert_eq!(
        sync["targets"][0]["key_files_removed"],
        serde_json::json!([]),
        "{sync}"
    );
    with_pw(&env, NEW_PW, &[], &["--repo", copy, "list"]).ok("the new passphrase, still");
    std::fs::write(&key_file, saved).unwrap();

    // A passphrase removed on the primary: pending until the sync, then gone there too.
    let old = remove_old_key(&env, &[]);
    let status = with_pw(&env, NEW_PW, &[], &["status", "--json"])
        .ok("status (a replica merely behind is no failure)")
        .json();
    let row = status_row(&status, copy);
    assert_eq!(row["key_changes_pending"], true, "{status}");
    assert!(row["objects_behind"].as_u64().unwrap() >= 1, "{status}");
    let text = with_pw(&env, NEW_PW, &[], &["status"]).ok("status");
    assert!(
        text.stdout.contains("key changes pending"),
        "{}",
        text.text()
    );
    let sync = with_pw(&env, NEW_PW, &[], &["sync", "--json"])
        .ok("sync")
        .json();
    assert_eq!(
        sync["targets"][0]["key_files_removed"],
        serde_json::json!([old]),
        "{sync}"
    );
    with_pw(&env, OLD_PW, &[], &["--repo", copy, "list"])
        .code(8, "the removed passphrase on the replica");
    with_pw(&env, NEW_PW, &[], &["--repo", copy, "verify", "--all"])
        .ok("the remaining passphrase on the replica");
    let status = with_pw(&env, NEW_PW, &[], &["status", "--json"])
        .ok("status")
        .json();
    let row = status_row(&status, copy);
    assert_eq!(row["key_changes_pending"], false, "{status}");
    assert_eq!(row["objects_behind"], 0, "{status}");
}

/// An S3 replica behind a fault proxy, for a local primary: the variables for `lifeboat`.
fn via_proxy(s3: &S3Server, proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    let mut vars = s3.env();
    vars.retain(|(k, _)| *k != "AWS_ENDPOINT");
    vars.push(("AWS_ENDPOINT", proxy.endpoint()));
    vars.push(("LIFEBOAT_RETRIES", "1".into()));
    vars.push(("LIFEBOAT_RETRY_TIMEOUT_SECS", "2".into()));
    vars
}

#[test]
fn key_changes_wait_for_an_unreachable_replica_and_status_says_so() {
    let env = Env::new();
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(s3.addr(), Faults::default());
    let vars = via_proxy(&s3, &proxy);
    let url = s3.url("replica");
    encrypted_repo(&env, &vars);
    add_new_key(&env, &vars);
    with_pw(&env, OLD_PW, &vars, &["replica", "add", &url]).ok("replica add");
    let status = with_pw(&env, OLD_PW, &vars, &["status", "--json"])
        .ok("status, all reachable")
        .json();
    assert_eq!(status["error"], serde_json::Value::Null, "{status}");

    // The replica is down when the key is removed and when sync runs.
    proxy.set_down(Down::ServiceUnavailable);
    remove_old_key(&env, &vars);
    with_pw(&env, NEW_PW, &vars, &["sync"]).fails(7, "sync, replica down", &url);
    let out = with_pw(&env, NEW_PW, &vars, &["status", "--json"]).code(7, "status, replica down");
    let status = out.json();
    let row = status_row(&status, &url);
    assert_eq!(row["key_changes_pending"], true, "{status}");
    assert!(row["objects_behind"].is_null(), "unknown, not 0: {status}");
    assert!(row["bytes_behind"].is_null(), "{status}");
    assert!(row["backups"].is_null(), "{status}");
    assert_eq!(row["failing"], true, "{status}");
    assert_eq!(status["error"]["exit_code"], 7, "{status}");
    let text = with_pw(&env, NEW_PW, &vars, &["status"]).code(7, "status, replica down");
    for says in ["behind by ? (unreachable)", "key changes pending", "error:"] {
        assert!(text.text().contains(says), "{says:?}:\n{}", text.text());
    }

    // Reachable again: still pending (and the last sync failed) until a sync applies them.
    proxy.set_down(Down::No);
    let status = with_pw(&env, NEW_PW, &vars, &["status", "--json"])
        .code(7, "status, the last sync failed")
        .json();
    assert_eq!(
        status_row(&status, &url)["key_changes_pending"],
        true,
        "{status}"
    );
    with_pw(&env, NEW_PW, &vars, &["sync"]).ok("sync");
    with_pw(&env, OLD_PW, &vars, &["--repo", &url, "list"])
        .code(8, "the removed passphrase on the replica");
    with_pw(&env, NEW_PW, &vars, &["--repo", &url, "list"]).ok("the remaining passphrase");
    let status = with_pw(&env, NEW_PW, &vars, &["status", "--json"])
        .ok("status, all good again")
        .json();
    let row = status_row(&status, &url);
    assert_eq!(row["key_changes_pending"], false, "{status}");
    assert_eq!(row["objects_behind"], 0, "{status}");
}

#[test]
fn a_backup_reports_the_time_its_replicas_took_in_one_document() {
    let env = Env::new();
    let s3 = S3Server::start();
    // Every request to the replica held back: replication takes seconds, the backup not.
    let proxy = FaultProxy::start(
        s3.addr(),
        Faults {
            delay_every: 1,
            delay_ms: 150,
            ..Faults::default()
        },
    );
    let vars = via_proxy(&s3, &proxy);
    let url = s3.url("slow");
    let db = env.path("app.db");
    let conn = make_db(&db, 2_000);
    let run = |args: &[&str]| {
        let mut c = env.std_cmd();
        c.envs(vars.clone());
        Out::of(c.args(args).output().expect("run lifeboat"))
    };
    run(&["backup", db.to_str().unwrap()]).ok("backup");
    run(&["replica", "add", &url]).ok("replica add");

    conn.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0", [])
        .unwrap();
    let started = std::time::Instant::now();
    let out = run(&["backup", db.to_str().unwrap(), "--json"]).ok("backup");
    let wall = started.elapsed().as_millis() as u64;
    let b = out.json(); // the whole of stdout: one document
    let total = b["duration_ms"].as_u64().unwrap();
    let own = b["backup_duration_ms"].as_u64().unwrap();
    let replication = b["replication_duration_ms"].as_u64().unwrap();
    assert!(wall > 1_000, "the proxy slowed replication down: {wall} ms");
    assert!(
        total + 500 >= wall,
        "reported {total} ms of a {wall} ms run: {b}"
    );
    assert!(total <= wall, "{b}");
    assert!(own + replication <= total, "{b}");
    assert!(replication >= total / 2, "{b}");
    let text = run(&["backup", db.to_str().unwrap()]).ok("backup");
    assert!(
        text.stdout.contains("replication"),
        "the text says where the time went: {}",
        text.stdout
    );

    // A replica that is down: one document, with the failure in it, and exit 7.
    proxy.set_faults(Faults {
        down: Down::ServiceUnavailable,
        ..Faults::default()
    });
    conn.execute("UPDATE t SET v = 'again' WHERE id % 5 = 0", [])
        .unwrap();
    for args in [
        vec!["backup", db.to_str().unwrap(), "--json"],
        vec!["sync", "--json"],
        vec!["replica", "add", &url, "--json"],
    ] {
        let out = run(&args).code(7, "replica down");
        let v = out.json();
        assert_eq!(v["error"]["exit_code"], 7, "{args:?}: {v}");
        let reports = if args[0] == "backup" {
            &v["replication"]
        } else {
            &v["targets"]
        };
        assert!(reports[0]["error"].is_string(), "{args:?}: {v}");
        assert!(out.stderr.contains("replication failed"), "{}", out.stderr);
    }
    drop(conn);
}

#[test]
fn one_replica_whatever_its_spelling() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 300));
    env.backup(&db);
    let copy = env.path("copy");
    let plain = copy.to_str().unwrap().to_string();
    let listed = |env: &Env| -> Vec<String> {
        env.json(&["replica", "list"])["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    env.json(&["replica", "add", &plain]);
    // The test's folder is the current one: `copy` is the same place.
    for other in [
        format!("{plain}/"),
        format!("file://{plain}"),
        format!("{plain}/./"),
        "copy".to_string(),
        "./copy/".to_string(),
    ] {
        env.json(&["replica", "add", &other]);
        assert_eq!(listed(&env), vec![plain.clone()], "after adding {other}");
    }
    // The configuration file's spelling is the same target too.
    std::fs::write(
        env.path("lifeboat.toml"),
        format!("replicas = [\"{plain}//\", \"file://copy\"]\n"),
    )
    .unwrap();
    assert_eq!(listed(&env), vec![plain.clone()]);
    let status = env.json(&["status"]);
    assert_eq!(status["targets"].as_array().unwrap().len(), 2, "{status}");
    let b = env.json(&["backup", db.to_str().unwrap()]);
    assert_eq!(b["replication"].as_array().unwrap().len(), 1, "{b}");
    std::fs::remove_file(env.path("lifeboat.toml")).unwrap();

    env.json(&["replica", "remove", &format!("{plain}/")]);
    assert!(listed(&env).is_empty());
    let (code, out) = env.run(&["replica", "remove", &plain]);
    assert_eq!(code, 3, "{out}");
}

/// An attacker with write access to the primary plants junk under a key file's and a
/// manifest's names: a sync must not overwrite the replica's good copies with it.
#[test]
fn junk_planted_on_the_primary_does_not_overwrite_the_replicas_copies() {
    let env = Env::new();
    encrypted_repo(&env, &[]);
    let copy = env.path("copy");
    let copy_s = copy.to_str().unwrap();
    with_pw(&env, OLD_PW, &[], &["replica", "add", copy_s]).ok("replica add");
    add_new_key(&env, &[]);
    with_pw(&env, OLD_PW, &[], &["sync"]).ok("sync");
    let key_id = other_key_id(&env, OLD_PW, &[]);
    let key = format!("keys/{key_id}");
    let backup = std::fs::read_dir(env.repo().join("backups"))
        .unwrap()
        .flatten()
        .map(|e| format!("backups/{}", e.file_name().to_string_lossy()))
        .next()
        .expect("a backup");
    let replica_key = std::fs::read(copy.join(&key)).unwrap();
    let replica_manifest = std::fs::read(copy.join(&backup)).unwrap();
    for name in [&key, &backup] {
        let p = env.repo().join(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, b"junk").unwrap();
    }
    // The sync may fail on the manifest it cannot authenticate; either way nothing is replaced.
    let _ = with_pw(&env, OLD_PW, &[], &["sync"]);
    assert_eq!(
        std::fs::read(copy.join(&key)).unwrap(),
        replica_key,
        "key file overwritten"
    );
    assert_eq!(
        std::fs::read(copy.join(&backup)).unwrap(),
        replica_manifest,
        "manifest overwritten"
    );
    with_pw(&env, NEW_PW, &[], &["--repo", copy_s, "verify", "--all"])
        .ok("the replica still opens and verifies");
}

/// The primary's config is put back from before a `key add` and the new key file deleted
/// there, then synced from a host that has no record of the repository: the replica keeps
/// its newer config and the key file it lists.
#[test]
fn a_rolled_back_primary_config_does_not_roll_back_the_replica() {
    let env = Env::new();
    encrypted_repo(&env, &[]);
    let copy = env.path("copy");
    let copy_s = copy.to_str().unwrap();
    with_pw(&env, OLD_PW, &[], &["replica", "add", copy_s]).ok("replica add");
    let old_config = std::fs::read(env.repo().join("config")).unwrap();
    add_new_key(&env, &[]);
    with_pw(&env, OLD_PW, &[], &["sync"]).ok("sync");
    let key_id = other_key_id(&env, OLD_PW, &[]);
    let replica_config = std::fs::read(copy.join("config")).unwrap();
    let config = env.repo().join("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&config, &old_config).unwrap();
    std::fs::remove_file(env.repo().join("keys").join(&key_id)).unwrap();
    // A fresh host: no trust record catches the rollback.
    std::fs::remove_dir_all(env.path("home/.local/state")).unwrap();
    with_pw(&env, OLD_PW, &[], &["sync"]).fails(7, "sync after a config rollback", "newer config");
    assert!(
        copy.join("keys").join(&key_id).exists(),
        "the replica lost a key file its config lists"
    );
    assert_eq!(
        std::fs::read(copy.join("config")).unwrap(),
        replica_config,
        "the replica's config was rolled back"
    );
    with_pw(&env, NEW_PW, &[], &["--repo", copy_s, "list"])
        .ok("the newer passphrase still opens the replica");
}
