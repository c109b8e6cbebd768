//! The scenarios that tests/s3.rs, tests/azure.rs and tests/gcs.rs run on their object store,
//! written once against `TestStore`: round trip with dedup, encrypted repository, concurrent
//! writers, a lost object named, an unreachable endpoint a clear storage error.

use super::server::TestStore;
use super::{dump, make_db, make_random_db, num, Env};
use std::time::{Duration, Instant};

/// `lifeboat` pointed at `url` on `store`, with its variables and nothing else.
pub fn cmd<S: TestStore>(env: &Env, store: &S, url: &str) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env_remove("LIFEBOAT_REPO")
        .envs(store.env())
        .args(["--repo", url]);
    c
}

/// Run `lifeboat ARGS --json` on `url`, assert success, parse stdout.
pub fn json<S: TestStore>(env: &Env, store: &S, url: &str, args: &[&str]) -> serde_json::Value {
    let out = cmd(env, store, url)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lifeboat {args:?} on {url}: {}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        store.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two backups (the second reusing the first's blobs), the objects under the prefix, then
/// list, verify, restore and a full check.
pub fn backup_verify_restore_and_dedup<S: TestStore>() {
    let env = Env::new();
    let store = S::start();
    let url = store.url("team/app");
    let db = env.path("app.db");
    let conn = make_db(&db, 3_000);

    let first = json(&env, &store, &url, &["backup", db.to_str().unwrap()]);
    assert_eq!(first["repository"], url.as_str());
    conn.execute("UPDATE t SET v = 'changed' WHERE id < 20", [])
        .unwrap();
    drop(conn);
    let second = json(&env, &store, &url, &["backup", db.to_str().unwrap()]);
    assert!(num(&second, "reused_blobs") > 0, "{second}");
    assert!(
        num(&second, "new_stored_bytes") < num(&first, "new_stored_bytes"),
        "the second backup uploads only what changed: {first} {second}"
    );

    // The objects really are in the bucket, under the prefix.
    let keys = store.list(store.bucket(), "team/app/");
    assert!(keys.iter().any(|k| k == "team/app/config"), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("team/app/data/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("team/app/backups/")),
        "{keys:?}"
    );

    let list = json(&env, &store, &url, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = json(&env, &store, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let out = env.path("restored.db");
    cmd(&env, &store, &url)
        .args(["restore", "latest", "--output"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let check = json(&env, &store, &url, &["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

/// An encrypted repository works end to end, refuses a wrong passphrase (exit 8), and no
/// stored object holds row data, the schema or the passphrase, though the backup searched is
/// stored uncompressed: the same backup in an unencrypted repository shows them (the
/// control that proves the search can find them).
pub fn encrypted_repository_and_nothing_readable<S: TestStore>() {
    let env = Env::new();
    let store = S::start();
    let url = store.url("secret");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let pass = format!("{}-pass", S::NAME);
    let with_pw = |args: &[&str]| {
        let mut c = cmd(&env, &store, &url);
        c.env("LIFEBOAT_PASSWORD", &pass).args(args);
        c
    };
    with_pw(&[
        "repo",
        "init",
        "--encrypt",
        "--argon2-memory",
        "64",
        "--argon2-iterations",
        "1",
    ])
    .assert()
    .success();
    with_pw(&["backup", db.to_str().unwrap(), "--compression", "none"])
        .assert()
        .success();
    with_pw(&["verify"]).assert().success();
    let out = env.path("r.db");
    with_pw(&["restore", "latest", "--output", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let wrong = cmd(&env, &store, &url)
        .env("LIFEBOAT_PASSWORD", "nope")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(8));
    let markers = ["row 999", "CREATE TABLE"];
    let found = |prefix: &str| -> Vec<(String, &str)> {
        let keys = store.list(store.bucket(), prefix);
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{prefix}data/"))),
            "{keys:?}"
        );
        let mut found = Vec::new();
        for key in keys {
            let r = store.get(store.bucket(), &key);
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            let text = String::from_utf8_lossy(&r.body);
            for m in markers.iter().chain([&pass.as_str()]) {
                if text.contains(m) {
                    found.push((key.clone(), *m));
                }
            }
        }
        found
    };
    let leaked = found("secret/");
    assert!(
        leaked.is_empty(),
        "stored objects hold plaintext: {leaked:?}"
    );
    // The control: the same database backed up uncompressed without encryption.
    let plain = store.url("plain");
    json(
        &env,
        &store,
        &plain,
        &["backup", db.to_str().unwrap(), "--compression", "none"],
    );
    let seen: Vec<&str> = found("plain/").into_iter().map(|(_, m)| m).collect();
    for m in markers {
        assert!(
            seen.contains(&m),
            "the search finds {m:?} in an unencrypted repository: {seen:?}"
        );
    }
}

/// Three first backups at once into one new repository, racing to create it and to store
/// their packs; then all three verify.
pub fn concurrent_backups_into_one_repository<S: TestStore>() {
    let env = Env::new();
    let store = S::start();
    let url = store.url("shared");
    let dbs: Vec<_> = (0..3)
        .map(|i| {
            let p = env.path(&format!("db{i}.db"));
            make_random_db(&p, "wal", 2_000, 200);
            p
        })
        .collect();
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("lifeboat"))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", env.path("home"))
                .envs(store.env())
                .args([
                    "--repo",
                    &url,
                    "backup",
                    "--init",
                    db.to_str().unwrap(),
                    "--json",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All three run at once, racing to create the repository and store their packs.
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = json(&env, &store, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 3);
}

/// A pack deleted behind lifeboat's back: verify and check fail (exit 4) and name it and the
/// backup. Then an endpoint where nothing listens: retries, then exit 7 naming the repository
/// and no credentials, within a minute.
pub fn lost_object_named_and_unreachable_endpoint_a_storage_error<S: TestStore>() {
    let env = Env::new();
    let store = S::start();
    let url = store.url("damaged");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let b = json(&env, &store, &url, &["backup", db.to_str().unwrap()]);
    let id = b["id"].as_str().unwrap().to_string();
    let pack = store
        .list(store.bucket(), "damaged/data/")
        .into_iter()
        .next()
        .expect("a pack");
    let deleted = store.delete(store.bucket(), &pack);
    assert_eq!(deleted.status, S::DELETED, "{}", deleted.text());
    let out = cmd(&env, &store, &url)
        .args(["verify", &id])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let name = pack.trim_start_matches("damaged/");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(name), "verify names {name}: {text}");
    let out = cmd(&env, &store, &url)
        .args(["repo", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Nothing listens on this port: retries, then exit 7 naming the repository.
    let started = Instant::now();
    let (var, value) = store.unreachable_env();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(store.env())
        .env(var, value)
        .args(["--repo", &url, "list"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
    for secret in store.secrets() {
        assert!(
            !err.contains(secret),
            "no credentials in the message: {err}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}
