//! `lifeboat daemon` run as a process: schedules, jobs and the HTTP API over real HTTP.

mod common;

use common::daemon::{free_port, token_file, Daemon};
use common::Env;
use std::time::Duration;

fn sqlite_db(env: &Env, name: &str, rows: i64) -> std::path::PathBuf {
    let path = env.path(name);
    let db = rusqlite::Connection::open(&path).expect("db");
    db.execute_batch("CREATE TABLE t(x INTEGER, pad TEXT);")
        .expect("schema");
    for i in 0..rows {
        db.execute("INSERT INTO t VALUES (?1, hex(randomblob(64)))", [i])
            .expect("row");
    }
    path
}

#[test]
fn scheduled_backups_run_and_the_api_lists_them() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let config = format!(
        r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["read"]
[[source]]
name = "app"
path = "{db}"
schedule = "every 2s"
"#,
        repo = env.repo().display(),
        tok = tok.display(),
        db = db.display()
    );
    env.cmd().args(["repo", "init"]).assert().success();
    let mut d = Daemon::start(&env, &config, port);
    d.wait_until(Duration::from_secs(30), "three backups are listed", |d| {
        d.get_json("/api/v1/backups?source=app", &token)["count"].as_u64() >= Some(3)
    });
    let list = d.get_json("/api/v1/backups?source=app&order=asc", &token);
    let times: Vec<i64> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        })
        .collect();
    // Every 2 s: no two backups closer than a second, none more than 4 s apart.
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!((1..=4).contains(&gap), "gaps {times:?}");
    }
    assert_eq!(list["backups"][0]["trigger"], "schedule");
    assert_eq!(d.get("/api/v1/backups", None).status, 401);
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}");
}

#[test]
fn first_health_checks_wait_for_the_first_backups() {
    // At a first start every source is due for its first backup and a health check in the
    // same tick. A health check that took the source before its backup failed ("there is no
    // backup of this source"), sent health.failed and scheduled a retry a minute later.
    let env = Env::new();
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let mut config = format!(
        r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
health = "every 1h"
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["read"]
"#,
        repo = env.repo().display(),
        tok = tok.display(),
    );
    let n = 40;
    for i in 0..n {
        let db = sqlite_db(&env, &format!("s{i}.db"), 10);
        config.push_str(&format!(
            "[[source]]\nname = \"s{i}\"\npath = \"{}\"\nschedule = \"every 1h\"\n",
            db.display()
        ));
    }
    env.cmd().args(["repo", "init"]).assert().success();
    let mut d = Daemon::start(&env, &config, port);
    let finished = |jobs: &serde_json::Value, kind: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .filter(|j| {
                j["kind"] == kind && !matches!(j["state"].as_str(), Some("queued" | "running"))
            })
            .count()
    };
    d.wait_until(
        Duration::from_secs(60),
        "a backup and a health check of every source have finished",
        |d| {
            let jobs = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
            finished(&jobs, "backup") >= n && finished(&jobs, "health") >= n
        },
    );
    let jobs = d.get_json("/api/v1/jobs", &token)["jobs"].clone();
    assert_eq!(jobs.as_array().unwrap().len(), 2 * n, "{jobs:#}");
    for j in jobs.as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{j:#}\n{}", d.log_text());
    }
    let status = d.get_json("/api/v1/status", &token);
    for s in status["sources"].as_array().unwrap() {
        assert_eq!(s["health"]["ok"], true, "{s:#}");
        assert_eq!(s["backups"], 1, "{s:#}");
    }
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}");
}
