//! The repository in Google Cloud Storage, on gcp-storage-emulator (started per test on
//! 127.0.0.1, with the XML API routes object_store needs added by tests/common/gcs_xml_api.py):
//! round trips, dedup, encryption, damage named, an unreachable endpoint a clear storage error.
//!
//! No concurrent-writer test here, unlike tests/s3.rs and tests/azure.rs: the emulator is a
//! single-threaded HTTP/1.0 server that handles one request at a time, and it has no
//! conditional writes of its own (create-only puts come from the launcher's check), so racing
//! writers would only be serialized and would prove nothing about GCS.

mod common;
use common::gcs::GcsServer;
use common::*;
use std::time::{Duration, Instant};

/// `lifeboat` pointed at `url` on `gcs`, with the Google variables and nothing else.
fn cmd(env: &Env, gcs: &GcsServer, url: &str) -> assert_cmd::Command {
    let mut c = env.cmd();
    c.env_remove("LIFEBOAT_REPO")
        .envs(gcs.env())
        .args(["--repo", url]);
    c
}

fn json(env: &Env, gcs: &GcsServer, url: &str, args: &[&str]) -> serde_json::Value {
    let out = cmd(env, gcs, url)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lifeboat {args:?} on {url}: {}\n{}\nemulator log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        gcs.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn emulator_harness_serves_both_apis_and_stops_on_drop() {
    let t = Instant::now();
    let gcs = GcsServer::start();
    eprintln!("GCS emulator ready with a bucket in {:?}", t.elapsed());
    assert_eq!(gcs.url("a/b"), format!("gs://{}/a/b", gcs.bucket));
    let sa: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gcs.service_account_path()).unwrap()).unwrap();
    assert_eq!(sa["gcs_base_url"], gcs.endpoint.as_str());
    assert_eq!(sa["disable_oauth"], true);

    // JSON API (the harness's helpers).
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let name = "dir/sub/an object.bin";
    let put = gcs.put(&gcs.bucket, name, &body);
    assert_eq!(put.status, 200, "{}", put.text());
    assert!(gcs.get(&gcs.bucket, name).body == body);
    assert_eq!(gcs.get(&gcs.bucket, "dir/missing").status, 404);
    assert_eq!(gcs.list(&gcs.bucket, "dir/"), vec![name.to_string()]);
    assert!(gcs.list(&gcs.bucket, "other/").is_empty());
    assert!(gcs.list(&gcs.new_bucket(), "").is_empty());

    // XML API as object_store speaks it (the launcher's routes): HEAD and ranged GET with the
    // metadata headers, ListObjectsV2, create-only PUT, DELETE.
    let xml_path = format!("/{}/{}", gcs.bucket, common::s3::encode(name));
    let head = gcs.request("HEAD", &xml_path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("70000"));
    assert!(head.header("etag").is_some() && head.header("last-modified").is_some());
    assert!(head.header("x-goog-generation").is_some());
    let range = gcs.request("GET", &xml_path, &[("Range", "bytes=10-19")], b"");
    assert_eq!(range.status, 206);
    assert!(range.body == body[10..20]);
    let list = gcs.request(
        "GET",
        &format!("/{}?list-type=2&prefix=dir%2F", gcs.bucket),
        &[],
        b"",
    );
    assert!(
        list.text()
            .contains("<Key>dir/sub/an object.bin</Key><Generation>"),
        "{}",
        list.text()
    );
    let create_only = [("x-goog-if-generation-match", "0")];
    assert_eq!(
        gcs.request("PUT", &xml_path, &create_only, b"x").status,
        412
    );
    let new_path = format!("/{}/dir%2Fnew", gcs.bucket);
    assert_eq!(gcs.request("PUT", &new_path, &create_only, b"").status, 200);
    assert_eq!(gcs.request("DELETE", &xml_path, &[], b"").status, 204);
    assert_eq!(gcs.request("HEAD", &xml_path, &[], b"").status, 404);
    assert_eq!(gcs.list(&gcs.bucket, ""), vec!["dir/new".to_string()]);

    let (pid, dir, addr) = (gcs.pid(), gcs.dir().to_path_buf(), gcs.addr().to_string());
    let t = Instant::now();
    drop(gcs);
    eprintln!("GCS emulator stopped in {:?}", t.elapsed());
    // Drop reaps the child, so its pid names no emulator process any more.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("gcs_xml_api"),
        "the GCS emulator (pid {pid}) still runs after drop"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(common::s3::http(&addr, "GET", "/", &[], b"").is_err());
}

#[test]
fn backup_verify_restore_and_dedup_on_gcs() {
    let env = Env::new();
    let gcs = GcsServer::start();
    let url = gcs.url("team/app");
    let db = env.path("app.db");
    let conn = make_db(&db, 3_000);

    let first = json(&env, &gcs, &url, &["backup", db.to_str().unwrap()]);
    assert_eq!(first["repository"], url.as_str());
    conn.execute("UPDATE t SET v = 'changed' WHERE id < 20", [])
        .unwrap();
    drop(conn);
    let second = json(&env, &gcs, &url, &["backup", db.to_str().unwrap()]);
    assert!(second["reused_blobs"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["new_stored_bytes"].as_u64() < first["new_stored_bytes"].as_u64(),
        "the second backup uploads only what changed: {first} {second}"
    );

    // The objects really are in the bucket, under the prefix.
    let names = gcs.list(&gcs.bucket, "team/app/");
    assert!(names.iter().any(|k| k == "team/app/config"), "{names:?}");
    assert!(
        names.iter().any(|k| k.starts_with("team/app/data/")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|k| k.starts_with("team/app/backups/")),
        "{names:?}"
    );

    let list = json(&env, &gcs, &url, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = json(&env, &gcs, &url, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let out = env.path("restored.db");
    cmd(&env, &gcs, &url)
        .args(["restore", "latest", "--output"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(dump(&out), dump(&db));
    let check = json(&env, &gcs, &url, &["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

#[test]
fn encrypted_repository_on_gcs_and_nothing_readable_in_the_bucket() {
    let env = Env::new();
    let gcs = GcsServer::start();
    let url = gcs.url("secret");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let with_pw = |args: &[&str]| {
        let mut c = cmd(&env, &gcs, &url);
        c.env("LIFEBOAT_PASSWORD", "gcs-pass").args(args);
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
    let wrong = cmd(&env, &gcs, &url)
        .env("LIFEBOAT_PASSWORD", "nope")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(8));
    let names = gcs.list(&gcs.bucket, "secret/");
    assert!(
        names.iter().any(|k| k.starts_with("secret/data/")),
        "{names:?}"
    );
    for name in names {
        let r = gcs.get(&gcs.bucket, &name);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains("row 999"), "{name} holds row data");
        assert!(!text.contains("gcs-pass"), "{name} holds the passphrase");
    }
}

#[test]
fn a_lost_object_is_named_and_an_unreachable_endpoint_is_a_storage_error() {
    let env = Env::new();
    let gcs = GcsServer::start();
    let url = gcs.url("damaged");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    let b = json(&env, &gcs, &url, &["backup", db.to_str().unwrap()]);
    let id = b["id"].as_str().unwrap().to_string();
    let pack = gcs
        .list(&gcs.bucket, "damaged/data/")
        .into_iter()
        .next()
        .expect("a pack");
    let deleted = gcs.delete(&gcs.bucket, &pack);
    assert!(deleted.status / 100 == 2, "{}", deleted.text());
    let out = cmd(&env, &gcs, &url)
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
    let out = cmd(&env, &gcs, &url)
        .args(["repo", "check", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));

    // Nothing listens on this port (GOOGLE_BASE_URL wins over the service account's
    // gcs_base_url): retries, then exit 7 naming the repository.
    let started = Instant::now();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(gcs.env())
        .env("GOOGLE_BASE_URL", "http://127.0.0.1:9")
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
    assert!(started.elapsed() < Duration::from_secs(60));
}
