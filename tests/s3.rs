//! The repository on a real S3-compatible server (SeaweedFS `weed mini`, started per test on
//! 127.0.0.1): the same guarantees as on local disk — round trips, dedup, encryption,
//! concurrent writers, damage named, an unreachable endpoint a clear storage error.

mod common;
use common::s3::S3Server;
use common::*;

/// `lifeboat` pointed at `url` on `s3`, with the S3 variables and nothing else.
fn cmd(env: &Env, s3: &S3Server, url: &str) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .args(["--repo", url]);
    c
}

fn json(env: &Env, s3: &S3Server, url: &str, args: &[&str]) -> serde_json::Value {
    let out = cmd(env, s3, url).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "lifeboat {args:?} on {url}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn backup_verify_restore_and_dedup_on_s3() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("team/app");
    let db = env.path("app.db");
    let conn = make_db(&db, 3_000);

    let first = json(&env, &s3, &url, &["backup", db.to_str().unwrap()]);
    assert_eq!(first["repository"], url.as_str());
    conn.execute("UPDATE t SET v = 'changed' WHERE id < 20", [])
        .unwrap();
    drop(conn);
    let second = json(&env, &s3, &url, &["backup", db.to_str().unwrap()]);
    assert!(second["reused_blobs"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["new_stored_bytes"].as_u64() < first["new_stored_bytes"].as_u64(),
        "the second backup uploads only what changed: {first} {second}"
    );

    // The objects really are in the bucket, under the prefix.
    let keys = s3.list(&s3.bucket, "team/app/");
    assert!(keys.iter().any(|k| k == "team/app/config"), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("team/app/data/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("team/app/backups/")),
        "{keys:?}"
    );

    let list = json(&env, &s3, &url, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = json(&env, &s3, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let out = env.path("restored.db");
    cmd(&env, &s3, &url)
        .args(["restore", "latest", "--output"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let check = json(&env, &s3, &url, &["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

#[test]
fn encrypted_repository_on_s3_and_nothing_readable_in_the_bucket() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("secret");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let with_pw = |args: &[&str]| {
        let mut c = cmd(&env, &s3, &url);
        c.env("LIFEBOAT_PASSWORD", "s3-pass").args(args);
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
    with_pw(&["backup", db.to_str().unwrap()])
        .assert()
        .success();
    with_pw(&["verify"]).assert().success();
    let out = env.path("r.db");
    with_pw(&["restore", "latest", "--output", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let wrong = cmd(&env, &s3, &url)
        .env("LIFEBOAT_PASSWORD", "nope")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(8));
    for key in s3.list(&s3.bucket, "secret/") {
        let body = s3.get(&s3.bucket, &key).body;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("row 999"), "{key} holds row data");
        assert!(!text.contains("s3-pass"), "{key} holds the passphrase");
    }
}

#[test]
fn concurrent_backups_into_one_bucket() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("shared");
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
                .envs(s3.env())
                .args(["--repo", &url, "backup", db.to_str().unwrap(), "--json"])
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
    let v = json(&env, &s3, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 3);
}

#[test]
fn a_lost_object_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("damaged");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let b = json(&env, &s3, &url, &["backup", db.to_str().unwrap()]);
    let id = b["id"].as_str().unwrap().to_string();
    let pack = s3
        .list(&s3.bucket, "damaged/data/")
        .into_iter()
        .next()
        .expect("a pack");
    s3.delete(&s3.bucket, &pack);
    let out = cmd(&env, &s3, &url).args(["verify", &id]).output().unwrap();
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
    let out = cmd(&env, &s3, &url)
        .args(["repo", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Nothing listens on this port: retries, then exit 7 naming the repository.
    let started = std::time::Instant::now();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .env("AWS_ENDPOINT", "http://127.0.0.1:9")
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
    assert!(
        !err.contains("test"),
        "no credentials in the message: {err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
