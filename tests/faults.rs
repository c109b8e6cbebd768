//! Lifeboat against an S3 store that misbehaves: a fault-injecting proxy
//! (tests/common/fault_proxy.rs) between lifeboat and a real SeaweedFS answers some requests
//! `503 Slow Down` or `500 Internal Error`, drops uploads half-way, delays others, or goes
//! down altogether. Backups through transient faults succeed and restore exactly; a store
//! that stays down fails the command cleanly (exit 7, the repository named, a hint), in
//! bounded time, and damages nothing; a replica that is down fails the backup but not the
//! primary, and `sync` catches up once it is back.
//!
//! Retries: object_store retries transient errors itself (10 retries within 180 s by
//! default). The down tests bound them with `LIFEBOAT_RETRIES` and
//! `LIFEBOAT_RETRY_TIMEOUT_SECS` (src/storage/object.rs) so that they fail in seconds.

mod common;
use common::fault_proxy::{Down, FaultProxy, Faults};
use common::s3::S3Server;
use common::server::TestStore;
use common::*;
use std::time::{Duration, Instant};

/// Retries allowed while a store is down: enough to show they happen, few enough to be quick.
const DOWN_RETRIES: &str = "3";
const DOWN_RETRY_TIMEOUT_SECS: &str = "5";
/// A command against a store that is down must give up within this.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(20);

/// `lifeboat` with the S3 variables, its endpoint `endpoint` (the proxy or the server itself),
/// and no LIFEBOAT_REPO (callers pass `--repo`, or set it for a local primary).
fn lifeboat(env: &Env, s3: &S3Server, endpoint: &str) -> std::process::Command {
    let mut c = env.std_cmd();
    c.env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .env("AWS_ENDPOINT", endpoint);
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

fn run(mut c: std::process::Command, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = c.args(args).output().expect("run lifeboat");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// Run and insist on success; the proxy's fault log goes into the failure message.
fn ok(c: std::process::Command, args: &[&str], proxy: &FaultProxy) -> Run {
    let r = run(c, args);
    assert_eq!(
        r.code,
        0,
        "lifeboat {args:?} failed:\n{}\nfaults injected so far:\n{}",
        r.text(),
        proxy.log().join("\n")
    );
    r
}

/// A database of about 20 MiB of random pages: two packs (16 MiB packs), so the backup
/// makes two multi-MiB PUTs besides the config, index files and manifest.
fn big_db(env: &Env) -> std::path::PathBuf {
    let db = env.path("app.db");
    make_random_db(&db, "wal", 10_000, 2000);
    db
}

/// Every row of `filler` (the whole content of `big_db`'s database), in order.
fn rows(path: &std::path::Path) -> Vec<(i64, Vec<u8>)> {
    let c = rusqlite::Connection::open(path).expect("open");
    let mut s = c
        .prepare("SELECT id, payload FROM filler ORDER BY id")
        .expect("select");
    let rows = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<Vec<_>, _>>()
        .expect("row");
    rows
}

#[test]
fn a_backup_through_transient_faults_succeeds_and_restores_exactly() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("flaky");
    let db = big_db(&env);
    let proxy = FaultProxy::start(
        s3.addr(),
        Faults {
            // About 20% of requests answered 503 Slow Down, a few more 500.
            slow_down_every: 5,
            internal_error_every: 13,
            // Every other small upload (config, index files, manifests) cut off half-way.
            // Packs are spared: a reset in the middle of a multi-MiB create-only PUT is not
            // retried (see `a_pack_upload_reset_mid_body_is_retried`).
            drop_upload_every: 2,
            drop_upload_max_bytes: 256 * 1024,
            delay_every: 7,
            delay_ms: 200,
            ..Faults::default()
        },
    );
    let via_proxy = || {
        let mut c = lifeboat(&env, &s3, &proxy.endpoint());
        c.args(["--repo", &url]);
        c
    };
    let started = Instant::now();
    let b = ok(
        via_proxy(),
        &["backup", db.to_str().unwrap(), "--json"],
        &proxy,
    )
    .json();
    let backup_took = started.elapsed();
    let id = b["id"].as_str().expect("backup id").to_string();
    let after_backup = proxy.counts();

    let v = ok(via_proxy(), &["verify", "--all", "--json"], &proxy).json();
    assert_eq!(v["ok"], true, "{v}");
    let through_proxy = env.path("restored-via-proxy.db");
    ok(
        via_proxy(),
        &["restore", &id, "--output", through_proxy.to_str().unwrap()],
        &proxy,
    );
    // And once more straight from the server, to be sure what landed there is whole.
    let mut direct = lifeboat(&env, &s3, &s3.endpoint);
    direct.args(["--repo", &url]);
    let restored = env.path("restored.db");
    ok(
        direct,
        &["restore", &id, "--output", restored.to_str().unwrap()],
        &proxy,
    );
    let original = rows(&db);
    for out in [&through_proxy, &restored] {
        assert_eq!(integrity_check(out), ["ok"]);
        assert!(rows(out) == original, "{} differs", out.display());
    }

    let counts = proxy.counts();
    eprintln!(
        "backup {backup_took:?} with {after_backup:?}; in all {:?}: {counts:?}\n{}",
        started.elapsed(),
        proxy.log().join("\n")
    );
    assert!(
        after_backup.injected() > 5,
        "the backup met more than 5 faults: {after_backup:?}"
    );
    assert!(after_backup.slow_down > 0 && after_backup.dropped_uploads > 0);
    assert!(
        counts.delayed > 0 && counts.internal_error > 0,
        "{counts:?}"
    );
    // Multi-MiB PUTs (the packs) went through the proxy, framed by Content-Length.
    let big_puts = proxy
        .requests()
        .iter()
        .filter(|r| r.contains(" PUT ") && r.contains("/data/"))
        .filter_map(|r| r.split("(Content-Length ").nth(1))
        .filter_map(|n| n.trim_end_matches(')').parse::<u64>().ok())
        .filter(|&n| n >= 1 << 20)
        .count();
    assert!(big_puts >= 2, "{:#?}", proxy.requests());
}

#[test]
fn a_store_that_stays_down_fails_cleanly_and_damages_nothing() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("down");
    let db = big_db(&env);
    let direct = || {
        let mut c = lifeboat(&env, &s3, &s3.endpoint);
        c.args(["--repo", &url]);
        c
    };
    let proxy = FaultProxy::start(s3.addr(), Faults::default());
    let first = ok(
        direct(),
        &["backup", db.to_str().unwrap(), "--json"],
        &proxy,
    )
    .json();
    let first_id = first["id"].as_str().unwrap().to_string();
    let first_rows = rows(&db);
    // Change the database, so that a second backup has new pages to store.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE filler SET payload = randomblob(2000) WHERE id % 3 = 0")
        .unwrap();

    let via_proxy = || {
        let mut c = lifeboat(&env, &s3, &proxy.endpoint());
        c.args(["--repo", &url])
            .env("LIFEBOAT_RETRIES", DOWN_RETRIES)
            .env("LIFEBOAT_RETRY_TIMEOUT_SECS", DOWN_RETRY_TIMEOUT_SECS);
        c
    };
    let assert_clean_failure = |r: &Run, what: &str| {
        assert_eq!(r.code, 7, "{what}: {}", r.text());
        assert!(
            r.stderr.contains(&url),
            "{what} names the repository: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("hint:"),
            "{what} gives a hint: {}",
            r.stderr
        );
        assert!(r.took < GIVE_UP_WITHIN, "{what} gave up after {:?}", r.took);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    };

    // A retry setting that is not a number is refused before anything is tried.
    let r = run(
        {
            let mut c = via_proxy();
            c.env("LIFEBOAT_RETRIES", "many");
            c
        },
        &["backup", db.to_str().unwrap()],
    );
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stderr.contains("LIFEBOAT_RETRIES"), "{}", r.stderr);
    assert_eq!(proxy.counts().requests, 0);

    // 1. Down from the start: every request answered 503.
    proxy.set_down(Down::ServiceUnavailable);
    let r = run(via_proxy(), &["backup", db.to_str().unwrap()]);
    assert_clean_failure(&r, "backup while the store answers 503");
    let c = proxy.counts();
    assert_eq!(
        c.slow_down, 4,
        "the first request (GET config) and its {DOWN_RETRIES} retries, no more: {c:?}"
    );
    eprintln!(
        "down (503): exit {} after {:?}, {c:?}\n{}",
        r.code, r.took, r.stderr
    );

    // 2. Down as in refusing: connections closed without a response.
    proxy.set_down(Down::Refuse);
    let r = run(via_proxy(), &["backup", db.to_str().unwrap()]);
    assert_clean_failure(&r, "backup while the store closes every connection");
    assert!(proxy.counts().refused > 0);
    eprintln!(
        "down (refuse): exit {} after {:?}\n{}",
        r.code, r.took, r.stderr
    );

    // 3. Going down in the middle: the packs and index files are stored, the manifest is not.
    proxy.set_faults(Faults {
        down_at: Some(format!("PUT /{}/down/backups/", s3.bucket)),
        ..Faults::default()
    });
    let r = run(via_proxy(), &["backup", db.to_str().unwrap()]);
    assert_clean_failure(&r, "backup whose manifest cannot be stored");
    assert!(
        proxy
            .requests()
            .iter()
            .any(|q| q.contains(&format!("PUT /{}/down/data/", s3.bucket))),
        "the interrupted backup stored packs first: {:#?}",
        proxy.requests()
    );
    eprintln!(
        "down mid-backup: exit {} after {:?}\n{}",
        r.code, r.took, r.stderr
    );

    // Nothing is damaged: straight against the server the repository checks clean, holds
    // only the first backup, and that restores exactly.
    let check = run(direct(), &["repo", "check", "--json"]);
    assert_eq!(check.code, 0, "repo check: {}", check.text());
    assert_eq!(check.json()["ok"], true, "{}", check.stdout);
    let list = ok(direct(), &["list", "--json"], &proxy).json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str()], "{list}");
    let out = env.path("first.db");
    ok(
        direct(),
        &["restore", &first_id, "--output", out.to_str().unwrap()],
        &proxy,
    );
    assert_eq!(integrity_check(&out), ["ok"]);
    assert!(
        rows(&out) == first_rows,
        "the first backup restores exactly"
    );
    // And once the store is back, the next backup goes through (reusing the stored packs).
    proxy.set_faults(Faults::default());
    let again = ok(
        via_proxy(),
        &["backup", db.to_str().unwrap(), "--json"],
        &proxy,
    )
    .json();
    let restored = env.path("second.db");
    ok(
        direct(),
        &[
            "restore",
            again["id"].as_str().unwrap(),
            "--output",
            restored.to_str().unwrap(),
        ],
        &proxy,
    );
    assert!(rows(&restored) == rows(&db));
}

#[test]
fn a_replica_that_goes_down_fails_the_backup_not_the_primary_and_sync_catches_up() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("replica");
    let db = big_db(&env);
    let proxy = FaultProxy::start(s3.addr(), Faults::default());
    // The primary is the local repository (LIFEBOAT_REPO); the replica is on S3, behind the
    // proxy.
    let local = || {
        let mut c = lifeboat(&env, &s3, &proxy.endpoint());
        c.env("LIFEBOAT_REPO", env.repo())
            .env("LIFEBOAT_RETRIES", DOWN_RETRIES)
            .env("LIFEBOAT_RETRY_TIMEOUT_SECS", DOWN_RETRY_TIMEOUT_SECS);
        c
    };
    ok(local(), &["backup", db.to_str().unwrap(), "--json"], &proxy);
    ok(local(), &["replica", "add", &url, "--json"], &proxy);

    proxy.set_down(Down::ServiceUnavailable);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE filler SET payload = randomblob(2000) WHERE id % 5 = 0")
        .unwrap();
    let r = run(local(), &["backup", db.to_str().unwrap()]);
    assert_eq!(r.code, 7, "{}", r.text());
    assert!(r.stderr.contains(&url), "names the replica: {}", r.stderr);
    assert!(r.stderr.contains("replication failed"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(r.took < GIVE_UP_WITHIN, "gave up after {:?}", r.took);
    eprintln!(
        "backup with its replica down: exit 7 after {:?}\n{}",
        r.took, r.stderr
    );

    // The primary has the backup.
    let list = ok(local(), &["list", "--json"], &proxy).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let v = ok(local(), &["verify", "--all", "--json"], &proxy).json();
    assert_eq!(v["ok"], true, "{v}");

    // Status shows the replica's last error (and that it cannot be reached now).
    let status = run(local(), &["status", "--json"]);
    assert!(
        status.took < GIVE_UP_WITHIN,
        "status took {:?}",
        status.took
    );
    let s = status.json();
    let row = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == url.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the replica is listed: {s}"));
    assert!(row["last_error"].is_string(), "{s}");
    assert_eq!(row["failing"], true, "{s}");
    assert!(row["error"].is_string(), "unreachable now: {s}");

    // Back up: sync catches up and the replica verifies.
    proxy.set_down(Down::No);
    let sync = ok(local(), &["sync", "--json"], &proxy);
    eprintln!("sync: {}", sync.stdout);
    let mut replica = lifeboat(&env, &s3, &s3.endpoint);
    replica.args(["--repo", &url]);
    let v = ok(replica, &["verify", "--all", "--json"], &proxy).json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 2, "{v}");
    let s = ok(local(), &["status", "--json"], &proxy).json();
    let row = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == url.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["objects_behind"], 0, "{s}");
    assert!(row["error"].is_null(), "{s}");
    assert!(row["last_success"].is_string(), "{s}");
    assert_eq!(row["failing"], false, "the later success clears it: {s}");
}

/// The proxy itself: requests on one kept-alive connection are forwarded or faulted one by
/// one, and a chunked request body is relayed intact.
#[test]
fn the_proxy_faults_single_requests_on_a_kept_alive_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        s3.addr(),
        Faults {
            slow_down_every: 3,
            ..Faults::default()
        },
    );
    let conn = std::net::TcpStream::connect(proxy.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    // Status, headers (lowercase names) and body of one response (Content-Length framed).
    let mut response = || -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let code = status.split(' ').nth(1).unwrap().parse().unwrap();
        (code, headers, body)
    };
    let key = format!("/{}/chunked", s3.bucket);
    let host = proxy.addr();
    // 1: a chunked PUT, forwarded.
    write!(
        writer,
        "PUT {key} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    .unwrap();
    let (status, _, body) = response();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // 2: a GET on the same connection, forwarded: the body arrived whole.
    write!(writer, "GET {key} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let (status, _, body) = response();
    assert_eq!((status, body.as_slice()), (200, &b"hello, world"[..]));
    // 3: the third request is answered 503 Slow Down, and the connection closed.
    write!(writer, "GET {key} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let (status, headers, body) = response();
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("<Code>SlowDown</Code>"));
    assert!(headers.contains(&("connection".into(), "close".into())));
    let mut rest = Vec::new();
    assert_eq!(
        reader.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the 503"
    );
    let c = proxy.counts();
    assert_eq!((c.requests, c.forwarded, c.slow_down), (3, 2, 1), "{c:?}");
    assert!(
        proxy.requests()[0].ends_with("(chunked)"),
        "{:?}",
        proxy.requests()
    );
}

// ---- Faults that once broke Lifeboat: a pack upload reset mid-body, a lost response ----

/// A connection reset in the middle of a pack upload (a multi-MiB create-only PUT) should be
/// retried like any transient error. object_store does not retry it: a create-only PUT is
/// not idempotent in its eyes, and a reset while the body is being written is an
/// "interrupted" error, retried only for idempotent requests. Lifeboat could retry it
/// itself: if the first attempt did land, the retry's 412 becomes `AlreadyExists`, which
/// `store_pack` already handles by checking the stored copy's hash.
#[test]
fn a_pack_upload_reset_mid_body_is_retried() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("reset");
    let db = big_db(&env);
    let proxy = FaultProxy::start(
        s3.addr(),
        Faults {
            // The second upload of at least 1 MiB (the second pack) is reset half-way; its
            // retry (the third) goes through.
            drop_upload_every: 2,
            drop_upload_min_bytes: 1 << 20,
            ..Faults::default()
        },
    );
    let mut c = lifeboat(&env, &s3, &proxy.endpoint());
    c.args(["--repo", &url]);
    let r = run(c, &["backup", db.to_str().unwrap()]);
    assert_eq!(proxy.counts().dropped_uploads, 1, "{:?}", proxy.log());
    assert_eq!(r.code, 0, "{}\n{}", r.text(), proxy.log().join("\n"));
}

/// The manifest PUT reaches the store but its response is lost (connection closed before
/// the answer). object_store retries (the request was complete, the answer "incomplete"),
/// the retry gets 412 (the manifest exists: the first attempt stored it), and Lifeboat reads
/// that as "backup id ... already exists": exit 1 (internal error) for a backup that is in
/// fact committed. `write_manifest` could compare the stored manifest with its own bytes
/// and succeed when they are the same.
#[test]
fn a_lost_response_to_the_manifest_put_is_not_an_error() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("lost");
    let db = env.path("app.db");
    drop(make_db(&db, 2_000));
    let proxy = FaultProxy::start(
        s3.addr(),
        Faults {
            lose_response_at: Some(format!("PUT /{}/lost/backups/", s3.bucket)),
            ..Faults::default()
        },
    );
    let mut c = lifeboat(&env, &s3, &proxy.endpoint());
    c.args(["--repo", &url]);
    let r = run(c, &["backup", db.to_str().unwrap(), "--json"]);
    assert_eq!(proxy.counts().lost_responses, 1, "{:?}", proxy.log());
    assert_eq!(r.code, 0, "{}\n{}", r.text(), proxy.log().join("\n"));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut c = lifeboat(&env, &s3, &s3.endpoint);
    c.args(["--repo", &url]);
    let out = env.path("r.db");
    ok(
        c,
        &["restore", &id, "--output", out.to_str().unwrap()],
        &proxy,
    );
    assert_eq!(dump(&out), dump(&db));
}
