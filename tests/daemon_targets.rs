//! `lifeboat daemon` against other targets and modes than tests/daemon.rs: a repository on
//! the S3 server (SeaweedFS), and a `continuous` SQLite source that the daemon replicates.

mod common;

use common::daemon::{admin_config, free_port, token_file, Daemon};
use common::s3::S3Server;
use common::server::TestStore;
use common::Env;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn daemon_config(repo: &str, port: u16, tok: &Path, daemon: &str, sources: &str) -> String {
    admin_config(repo, port, tok, "", daemon, sources)
}

fn backups(d: &Daemon, token: &str, source: &str) -> Vec<Value> {
    d.get_json(&format!("/api/v1/backups?source={source}&order=asc"), token)["backups"]
        .as_array()
        .expect("backups")
        .clone()
}

#[test]
fn scheduled_backups_land_in_the_s3_bucket_and_the_api_lists_them() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("daemon");
    let db = env.path("app.db");
    drop(common::make_db(&db, 500));
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .args(["--repo", &url, "repo", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = env.path("lifeboat.toml");
    std::fs::write(
        &config,
        daemon_config(
            &url,
            port,
            &tok,
            "",
            &format!(
                "[[source]]\nname = \"app\"\npath = \"{}\"\nschedule = \"every 2s\"\n",
                db.display()
            ),
        ),
    )
    .unwrap();
    let vars = s3.env();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut d = Daemon::start_with(&env, &config, port, &vars);
    d.wait_until(Duration::from_secs(60), "two backups are listed", |d| {
        backups(d, &token, "app").len() >= 2
    });
    let list = backups(&d, &token, "app");
    let st = d.get_json("/api/v1/status", &token);
    assert_eq!(st["daemon"]["repository"], url.as_str(), "{st}");
    let keys = s3.list(s3.bucket(), "daemon/backups/");
    for b in &list {
        assert_eq!(b["trigger"], "schedule", "{b}");
        let id = b["id"].as_str().unwrap();
        assert!(
            keys.iter().any(|k| k.ends_with(&format!("/{id}"))),
            "{id} not in the bucket: {keys:?}"
        );
    }
    let gap = |a: &Value, b: &Value| {
        let t = |v: &Value| {
            v["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond()
        };
        t(b) - t(a)
    };
    assert!((1500..=4500).contains(&gap(&list[0], &list[1])), "{list:?}");
    assert!(d.stop(Duration::from_secs(30)).success());
    // What the daemon wrote is a sound repository.
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .args(["--repo", &url, "repo", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn rows(path: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open restored");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count")
}

/// The live status files of replications (`lifeboat status` reads them).
fn status_files(env: &Env) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(env.path("home/.local/state/lifeboat/replicate"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_continuous_source_is_replicated_and_stops_cleanly() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = common::make_db(&db, 200);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    env.cmd().args(["repo", "init"]).assert().success();
    let cfg = daemon_config(
        &env.repo().display().to_string(),
        port,
        &tok,
        "refresh = \"1s\"",
        &format!(
            "[[source]]\nname = \"app\"\npath = \"{}\"\nschedule = \"continuous\"\n",
            db.display()
        ),
    );
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(60), "the status shows its lag", |d| {
        let st = d.get_json("/api/v1/status", &token);
        st["sources"][0]["lag_s"].is_number()
    });
    let j = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
    let rep: Vec<&Value> = j
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "replicate")
        .collect();
    assert_eq!(rep.len(), 1, "{j}");
    assert_eq!(rep[0]["state"], "running", "{j}");
    // New rows reach the repository within seconds.
    conn.execute_batch(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) \
         INSERT INTO t(v) SELECT 'new ' || i FROM s;",
    )
    .unwrap();
    let t = Instant::now();
    let mut n = 0;
    let out = loop {
        n += 1;
        let out = env.path(&format!("restored-{n}.db"));
        let (code, text) = env.run(&[
            "restore",
            "--source",
            db.to_str().unwrap(),
            "--at",
            "latest",
            "--output",
            out.to_str().unwrap(),
        ]);
        if code == 0 && rows(&out) == 250 {
            break out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the new rows are not in the repository after 15 s: {text}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(common::dump(&out), common::dump(&db));
    let st = d.get_json("/api/v1/status", &token);
    let lag = st["sources"][0]["lag_s"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&lag), "{st}");
    let metrics = d.get("/metrics", Some(&token)).text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("lifeboat_replication_lag_seconds{source=\"app\"}")),
        "{metrics}"
    );
    assert_eq!(status_files(&env).len(), 1, "{:?}", status_files(&env));
    // SIGTERM: the replication stops cleanly with the daemon.
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}\n{}", d.log_text());
    let (code, text) = env.run(&["repo", "check"]);
    assert_eq!(code, 0, "{text}");
    // Its live status file is gone: nothing claims to replicate any more.
    assert!(status_files(&env).is_empty(), "{:?}", status_files(&env));
    drop(conn);
}

#[test]
fn a_continuous_source_that_fails_backs_off_instead_of_spinning() {
    let env = Env::new();
    // Not a SQLite database: every replication attempt fails at once.
    let db = env.path("app.db");
    std::fs::write(&db, "not a database").unwrap();
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    env.cmd().args(["repo", "init"]).assert().success();
    let cfg = daemon_config(
        &env.repo().display().to_string(),
        port,
        &tok,
        "retries = 1\nretry_delay = \"1s\"",
        &format!(
            "[[source]]\nname = \"app\"\npath = \"{}\"\nschedule = \"continuous\"\n",
            db.display()
        ),
    );
    let mut d = Daemon::start(&env, &cfg, port);
    std::thread::sleep(Duration::from_secs(7));
    let j = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
    let mut starts: Vec<f64> = j
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "replicate")
        .map(|j| {
            assert_eq!(j["state"], "failed", "{j}");
            j["started"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_nanosecond() as f64
                / 1e9
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    // Fail, retry 1 s later, then wait 2 s before a new round: never two within a second.
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(starts.len() >= 3, "it is retried: {j}");
    assert!(gaps.iter().all(|g| *g >= 0.9), "gaps {gaps:?}");
    assert!(gaps.iter().any(|g| *g >= 1.9), "gaps {gaps:?}");
    assert!(d.stop(Duration::from_secs(30)).success());
}

/// The bucket becomes unreachable (a fault proxy in front of the real S3 server answers 503
/// to everything): backups fail and are retried, the failure shows in the jobs, the status,
/// the health check and the metrics, the API keeps answering from its catalog; once the
/// bucket is back, the next retry succeeds and the repository is sound.
#[test]
fn an_unreachable_bucket_fails_backups_visibly_and_they_resume_when_it_is_back() {
    use common::fault_proxy::{Down, FaultProxy, Faults};
    let env = Env::new();
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(s3.addr(), Faults::default());
    let url = s3.url("flaky");
    let db = env.path("app.db");
    drop(common::make_db(&db, 300));
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let mut vars = s3.env();
    vars.push(("AWS_ENDPOINT", proxy.endpoint()));
    // Few, quick store retries: a failure is reached in seconds.
    vars.push(("LIFEBOAT_RETRIES", "1".into()));
    vars.push(("LIFEBOAT_RETRY_TIMEOUT_SECS", "2".into()));
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(vars.iter().map(|(k, v)| (*k, v.clone())))
        .args(["--repo", &url, "repo", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = env.path("lifeboat.toml");
    std::fs::write(
        &config,
        daemon_config(
            &url,
            port,
            &tok,
            "retries = 50\nretry_delay = \"1s\"\nrefresh = \"1s\"",
            &format!(
                "[[source]]\nname = \"app\"\npath = \"{}\"\nschedule = \"every 2s\"\nhealth = \"every 1s\"\n",
                db.display()
            ),
        ),
    )
    .unwrap();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut d = Daemon::start_with(&env, &config, port, &pairs);
    d.wait_until(Duration::from_secs(60), "a first backup", |d| {
        !backups(d, &token, "app").is_empty()
    });

    proxy.set_down(Down::ServiceUnavailable);
    let down_at = proxy.counts();
    d.wait_until(
        Duration::from_secs(90),
        "a backup fails on the bucket",
        |d| {
            let jobs = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
            jobs.as_array()
                .unwrap()
                .iter()
                .any(|j| j["kind"] == "backup" && j["state"] == "failed" && j["error"].is_string())
        },
    );
    assert!(
        proxy.injected() > 0,
        "the proxy injected nothing: {down_at:?}"
    );
    d.wait_until(
        Duration::from_secs(60),
        "the failure shows everywhere",
        |d| {
            let st = d.get_json("/api/v1/status", &token);
            let src = &st["sources"][0];
            let metrics = d.get("/metrics", Some(&token)).text();
            src["last_error"].is_string()
                && src["health"]["ok"] == false
                && metrics
                    .lines()
                    .any(|l| l.starts_with("lifeboat_target_up{") && l.ends_with(" 0"))
                && metrics.lines().any(|l| {
                    l.starts_with("lifeboat_backups_total{")
                        && l.contains("status=\"failure\"")
                        && !l.ends_with(" 0")
                })
        },
    );
    // The API still answers from memory while the bucket is down.
    assert_eq!(d.get("/api/v1/health/live", None).status, 200);
    let listed = backups(&d, &token, "app").len();
    assert!(listed >= 1);
    let jobs = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["trigger"] == "retry"),
        "failed backups are retried: {jobs}"
    );

    proxy.set_down(Down::No);
    let back = Instant::now();
    d.wait_until(Duration::from_secs(60), "a backup succeeds again", |d| {
        backups(d, &token, "app").len() > listed
    });
    d.wait_until(Duration::from_secs(30), "the target is up again", |d| {
        let metrics = d.get("/metrics", Some(&token)).text();
        metrics
            .lines()
            .filter(|l| l.starts_with("lifeboat_target_up{"))
            .all(|l| l.ends_with(" 1"))
    });
    assert!(back.elapsed() < Duration::from_secs(60));
    assert!(d.stop(Duration::from_secs(30)).success());
    let out = env
        .cmd()
        .env_remove("LIFEBOAT_REPO")
        .envs(s3.env())
        .args(["--repo", &url, "repo", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
