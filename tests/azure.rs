//! The repository in Azure Blob Storage, on the Azurite emulator (started per test on
//! 127.0.0.1, Shared Key auth enforced): the same guarantees as on local disk — round trips,
//! dedup, encryption, concurrent writers, damage named, an unreachable endpoint a clear
//! storage error.

mod common;
use common::azure::{AzuriteServer, ACCOUNT_KEY};
use common::*;
use std::time::{Duration, Instant};

/// `lifeboat` pointed at `url` on `az`, with the Azure variables and nothing else.
fn cmd(env: &Env, az: &AzuriteServer, url: &str) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env_remove("LIFEBOAT_REPO")
        .envs(az.env())
        .args(["--repo", url]);
    c
}

fn json(env: &Env, az: &AzuriteServer, url: &str, args: &[&str]) -> serde_json::Value {
    let out = cmd(env, az, url).args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "lifeboat {args:?} on {url}: {}\n{}\nemulator log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        az.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn emulator_harness_signs_requests_and_stops_on_drop() {
    let t = Instant::now();
    let az = AzuriteServer::start();
    eprintln!("Azurite ready with a container in {:?}", t.elapsed());
    assert_eq!(az.url("a/b"), format!("az://{}/a/b", az.container));
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let put = az.put(&az.container, "dir/sub/a blob.bin", &body);
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(az.get(&az.container, "dir/sub/a blob.bin").body == body);
    assert_eq!(az.get(&az.container, "dir/missing").status, 404);
    assert_eq!(
        az.list(&az.container, "dir/"),
        vec!["dir/sub/a blob.bin".to_string()]
    );
    assert!(az.list(&az.container, "other/").is_empty());
    assert!(az.list(&az.new_container(), "").is_empty());
    // Shared Key auth is enforced: an unsigned request is refused.
    let unsigned = common::s3::http(
        az.addr(),
        "GET",
        &common::azure::blob_path(&az.container, "dir/sub/a blob.bin"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(unsigned.status, 403);
    assert_eq!(az.delete(&az.container, "dir/sub/a blob.bin").status, 202);
    assert!(az.list(&az.container, "").is_empty());

    let (pid, dir, addr) = (az.pid(), az.dir().to_path_buf(), az.addr().to_string());
    let t = Instant::now();
    drop(az);
    eprintln!("Azurite stopped in {:?}", t.elapsed());
    // Drop reaps the child, so its pid names no Azurite process any more.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("azurite"),
        "Azurite (pid {pid}) still runs after drop"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(common::s3::http(&addr, "GET", "/", &[], b"").is_err());
}

#[test]
fn backup_verify_restore_and_dedup_on_azure() {
    let env = Env::new();
    let az = AzuriteServer::start();
    let url = az.url("team/app");
    let db = env.path("app.db");
    let conn = make_db(&db, 3_000);

    let first = json(&env, &az, &url, &["backup", db.to_str().unwrap()]);
    assert_eq!(first["repository"], url.as_str());
    conn.execute("UPDATE t SET v = 'changed' WHERE id < 20", [])
        .unwrap();
    drop(conn);
    let second = json(&env, &az, &url, &["backup", db.to_str().unwrap()]);
    assert!(second["reused_blobs"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["new_stored_bytes"].as_u64() < first["new_stored_bytes"].as_u64(),
        "the second backup uploads only what changed: {first} {second}"
    );

    // The blobs really are in the container, under the prefix.
    let names = az.list(&az.container, "team/app/");
    assert!(names.iter().any(|k| k == "team/app/config"), "{names:?}");
    assert!(
        names.iter().any(|k| k.starts_with("team/app/data/")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|k| k.starts_with("team/app/backups/")),
        "{names:?}"
    );

    let list = json(&env, &az, &url, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = json(&env, &az, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let out = env.path("restored.db");
    cmd(&env, &az, &url)
        .args(["restore", "latest", "--output"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let check = json(&env, &az, &url, &["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

#[test]
fn encrypted_repository_on_azure_and_nothing_readable_in_the_container() {
    let env = Env::new();
    let az = AzuriteServer::start();
    let url = az.url("secret");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let with_pw = |args: &[&str]| {
        let mut c = cmd(&env, &az, &url);
        c.env("LIFEBOAT_PASSWORD", "az-pass").args(args);
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
    let wrong = cmd(&env, &az, &url)
        .env("LIFEBOAT_PASSWORD", "nope")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(8));
    let names = az.list(&az.container, "secret/");
    assert!(
        names.iter().any(|k| k.starts_with("secret/data/")),
        "{names:?}"
    );
    for name in names {
        let r = az.get(&az.container, &name);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("row 999"), "{name} holds row data");
        assert!(!text.contains("az-pass"), "{name} holds the passphrase");
    }
}

/// Azurite serves requests concurrently and honours `If-None-Match: *` (409 on an existing
/// blob), so racing first backups exercise the create-only puts for real.
#[test]
fn concurrent_backups_into_one_container() {
    let env = Env::new();
    let az = AzuriteServer::start();
    let url = az.url("shared");
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
                .envs(az.env())
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
    let v = json(&env, &az, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 3);
}

#[test]
fn a_lost_blob_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    let env = Env::new();
    let az = AzuriteServer::start();
    let url = az.url("damaged");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let b = json(&env, &az, &url, &["backup", db.to_str().unwrap()]);
    let id = b["id"].as_str().unwrap().to_string();
    let pack = az
        .list(&az.container, "damaged/data/")
        .into_iter()
        .next()
        .expect("a pack");
    assert_eq!(az.delete(&az.container, &pack).status, 202);
    let out = cmd(&env, &az, &url).args(["verify", &id]).output().unwrap();
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
    let out = cmd(&env, &az, &url)
        .args(["repo", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Nothing listens on this port: retries, then exit 7 naming the repository.
    let started = Instant::now();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(az.env())
        .env("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:9")
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
        !err.contains(ACCOUNT_KEY) && !err.contains(&ACCOUNT_KEY[..16]),
        "no credentials in the message: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
