//! `lifeboat daemon` run as a process: schedules, jobs and the HTTP API over real HTTP, and
//! its life cycle (catch-up after a stop, retries, signals, kill -9). The S3 and continuous
//! replication runs are in tests/daemon_targets.rs.

mod common;

use common::daemon::{admin_config, free_port, sqlite_db, token_file, Daemon};
use common::Env;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A database of about `mb` MiB of random rows (nothing dedups, nothing compresses).
fn big_db(env: &Env, name: &str, mb: u32) -> PathBuf {
    let path = env.path(name);
    common::make_random_db(&path, "delete", mb * 1024, 1000);
    path
}

fn config(env: &Env, port: u16, tok: &Path, top: &str, daemon: &str, rest: &str) -> String {
    admin_config(
        &env.repo().display().to_string(),
        port,
        tok,
        top,
        daemon,
        rest,
    )
}

fn init(env: &Env) {
    env.cmd().args(["repo", "init"]).assert().success();
}

fn secs(t: &Value) -> f64 {
    let t: jiff::Timestamp = t
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {t}"))
        .parse()
        .expect("RFC 3339");
    t.as_nanosecond() as f64 / 1e9
}

fn now_s() -> f64 {
    jiff::Timestamp::now().as_nanosecond() as f64 / 1e9
}

/// The backups of `source` the API lists, oldest first.
fn backups(d: &Daemon, token: &str, source: &str) -> Vec<Value> {
    d.get_json(
        &format!("/api/v1/backups?source={source}&order=asc&limit=1000"),
        token,
    )["backups"]
        .as_array()
        .expect("backups")
        .clone()
}

/// Jobs of `kind` (and `source`), oldest first.
fn jobs(d: &Daemon, token: &str, kind: &str, source: Option<&str>) -> Vec<Value> {
    let mut v: Vec<Value> = d.get_json("/api/v1/jobs", token)["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["kind"] == kind && source.is_none_or(|s| j["source"] == s))
        .cloned()
        .collect();
    v.reverse();
    v
}

fn source_status(d: &Daemon, token: &str, name: &str) -> Value {
    let s = d.get_json("/api/v1/status", token);
    s["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {s}"))
        .clone()
}

/// The value of metric `name` whose labels include every `labels` pair (`k="v"`).
fn metric(d: &Daemon, token: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let a = d.get("/metrics", Some(token));
    assert_eq!(a.status, 200, "{}", a.text());
    a.text().lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let (n, l) = key.split_once('{').unwrap_or((key, ""));
        (n == name && labels.iter().all(|p| l.contains(p))).then(|| value.parse().ok())?
    })
}

/// `lifeboat ARGS --json` with the exit code (for checks that must pass).
fn cli_ok(env: &Env, args: &[&str]) -> Value {
    let (code, v, err) = env.run_json(args);
    assert_eq!(code, 0, "lifeboat {args:?}: {v}\n{err}");
    v
}

/// The ids `lifeboat list` shows, oldest first.
fn listed(env: &Env) -> Vec<String> {
    let v = cli_ok(env, &["list"]);
    let arr = v
        .as_array()
        .or_else(|| v["backups"].as_array())
        .unwrap_or_else(|| panic!("list --json: {v}"))
        .clone();
    let mut rows: Vec<(String, String)> = arr
        .iter()
        .map(|b| {
            (
                b["time"].as_str().expect("time").to_string(),
                b["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, id)| id).collect()
}

/// `repo check` passes and every listed backup verifies.
fn repository_is_clean(env: &Env) -> Vec<String> {
    let (code, out) = env.run(&["repo", "check"]);
    assert_eq!(code, 0, "repo check:\n{out}");
    let ids = listed(env);
    for id in &ids {
        let (code, out) = env.run(&["verify", id]);
        assert_eq!(code, 0, "verify {id}:\n{out}");
    }
    ids
}

fn source_toml(name: &str, path: &Path, schedule: &str, more: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\npath = \"{}\"\nschedule = \"{schedule}\"\n{more}\n",
        path.display()
    )
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
    let times: Vec<f64> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| secs(&b["time"]))
        .collect();
    // Every 2 s, counted from the previous backup's time to the nanosecond: never less,
    // and not much more (the scheduler's tick, the backup's start).
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!((2.0..3.5).contains(&gap), "gaps {times:?}");
    }
    assert_eq!(list["backups"][0]["trigger"], "schedule");
    assert_eq!(d.get("/api/v1/backups", None).status, 401);
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}");
}

#[test]
fn a_jittered_interval_stays_within_its_bounds() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("app", &db, "every 3s jitter 1s", ""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let sources = d.get_json("/api/v1/sources", &token);
    assert_eq!(sources["sources"][0]["schedule"], "every 3s jitter 1s");
    // Each run is due 3 s plus a jitter in [0, 1 s) after the previous backup, and starts
    // at the scheduler's next tick: gaps in [3, 4 s] plus the tick and the backup's start.
    // Without the jitter no gap would pass 3.4 s: wait for one (or fail after 10 gaps).
    let mut gaps = Vec::new();
    d.wait_until(Duration::from_secs(80), "a gap shows the jitter", |d| {
        let times: Vec<f64> = backups(d, &token, "app")
            .iter()
            .map(|b| secs(&b["time"]))
            .collect();
        gaps = times.windows(2).map(|w| w[1] - w[0]).collect();
        for g in &gaps {
            assert!((3.0..=5.0).contains(g), "gaps {gaps:?}");
        }
        assert!(gaps.len() <= 10, "no gap beyond 3.4 s: {gaps:?}");
        gaps.iter().any(|g| *g > 3.4)
    });
    // The next run the status announces is 3 to 4 s after the newest backup.
    let st = source_status(&d, &token, "app");
    let ahead = secs(&st["next_run"]) - secs(&st["last_backup"]["time"]);
    assert!(
        (3.0..4.0).contains(&ahead),
        "next run {ahead} s ahead: {st}"
    );
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn check_config_refuses_a_bad_schedule_naming_the_source_and_the_forms() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 10);
    let (tok, _) = token_file(&env, "ops");
    let path = env.path("lifeboat.toml");
    let check = |rest: &str| {
        std::fs::write(&path, config(&env, 7474, &tok, "", "", rest)).unwrap();
        let out = Daemon::command(&env, &path)
            .arg("--check-config")
            .output()
            .expect("run");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A 6-field (seconds) cron expression.
    let (code, out) = check(&source_toml("app", &db, "0 0 2 * * *", ""));
    assert_eq!(code, Some(2), "{out}");
    for want in [
        "app",
        "0 0 2 * * *",
        "5 fields",
        "every 6h",
        "every 1d at 02:00",
    ] {
        assert!(out.contains(want), "should say {want:?}:\n{out}");
    }
    assert!(
        out.contains("continuous") && out.contains("0 2 * * *"),
        "{out}"
    );
    // A bad drill schedule names its key.
    let (code, out) = check(&source_toml("app", &db, "every 1h", "drill = \"every 2x\""));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("app") && out.contains("drill"), "{out}");
    assert!(out.contains("every 6h"), "{out}");
    // A good one prints what it would run.
    let (code, out) = check(&source_toml(
        "app",
        &db,
        "every 3s jitter 1s",
        "drill = \"30 4 * * 1\"",
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("every 3s jitter 1s"), "{out}");
    assert!(out.contains("cron 30 4 * * 1"), "{out}");
    assert!(out.contains("config OK"), "{out}");
}

#[test]
fn missed_runs_are_caught_up_once_at_start() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("app", &db, "every 4s", ""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "the first backup", |d| {
        !backups(d, &token, "app").is_empty()
    });
    assert!(d.stop(Duration::from_secs(30)).success());
    let first = listed(&env);
    assert_eq!(first.len(), 1, "{first:?}");
    // The schedule's state survives the stop, where the docs say it is.
    let dir = env.path("home/.local/state/lifeboat/daemon");
    let state: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json") && !p.to_string_lossy().contains("webhooks")
        })
        .collect();
    assert_eq!(state.len(), 1, "{state:?}");
    let st: Value = serde_json::from_slice(&std::fs::read(&state[0]).unwrap()).unwrap();
    assert!(
        st["jobs"]["backup:app"]["last_run"].is_string(),
        "state: {st}"
    );

    // Two slots (and more) pass while it is stopped.
    std::thread::sleep(Duration::from_secs(9));
    let t0 = now_s();
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "the catch-up backup", |d| {
        backups(d, &token, "app").len() >= 2
    });
    let list = backups(&d, &token, "app");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[1]["trigger"], "catch-up", "{list:?}");
    let late = secs(&list[1]["time"]) - t0;
    assert!(late < 2.5, "the catch-up ran {late} s after the start");
    // Once, not once per missed slot: nothing more until the next slot, 4 s later.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(backups(&d, &token, "app").len(), 2);
    d.wait_until(Duration::from_secs(20), "the next scheduled backup", |d| {
        backups(d, &token, "app").len() >= 3
    });
    let list = backups(&d, &token, "app");
    assert_eq!(list[2]["trigger"], "schedule", "{list:?}");
    let gap = secs(&list[2]["time"]) - secs(&list[1]["time"]);
    assert!((4.0..6.0).contains(&gap), "{gap}");
    let catch_up: Vec<Value> = jobs(&d, &token, "backup", Some("app"));
    assert_eq!(catch_up[0]["trigger"], "catch-up", "{catch_up:?}");
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn retention_runs_on_its_schedule() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    // Backups run every second while the flag file exists; retention every 3 s.
    let flag = env.path("flag");
    std::fs::write(&flag, "").unwrap();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retention = \"every 3s\"\nrefresh = \"1s\"\nretries = 0",
        &format!(
            "[retention]\nkeep_last = 2\n\n{}",
            source_toml(
                "app",
                &db,
                "every 1s",
                &format!("before = \"test -e {}\"", flag.display())
            )
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let ok_backups = |d: &Daemon| -> Vec<String> {
        jobs(d, &token, "backup", Some("app"))
            .iter()
            .filter(|j| j["state"] == "succeeded")
            .map(|j| j["backup"].as_str().expect("backup id").to_string())
            .collect()
    };
    d.wait_until(
        Duration::from_secs(60),
        "six backups and a retention that forgot some",
        |d| {
            ok_backups(d).len() >= 6
                && jobs(d, &token, "retention", None).iter().any(|j| {
                    j["state"] == "succeeded"
                        && j["result"]["forgotten"]
                            .as_array()
                            .is_some_and(|f| !f.is_empty())
                })
        },
    );
    // Stop the backups: the next one fails.
    std::fs::remove_file(&flag).unwrap();
    let mut failed_at = 0.0;
    d.wait_until(Duration::from_secs(20), "a backup fails", |d| {
        let failed: Vec<Value> = jobs(d, &token, "backup", Some("app"))
            .into_iter()
            .filter(|j| j["state"] == "failed")
            .collect();
        if let Some(j) = failed.first() {
            failed_at = secs(&j["finished"]);
        }
        !failed.is_empty()
    });
    d.wait_until(
        Duration::from_secs(20),
        "a retention after the last backup",
        |d| {
            jobs(d, &token, "retention", None)
                .iter()
                .any(|j| j["state"] == "succeeded" && secs(&j["started"]) > failed_at)
        },
    );
    let made = ok_backups(&d);
    assert!(made.len() >= 6, "{made:?}");
    let mut newest: Vec<String> = made[made.len() - 2..].to_vec();
    newest.sort();
    // The repository keeps the two newest, the CLI and the API agree.
    let mut kept = repository_is_clean(&env);
    kept.sort();
    assert_eq!(kept, newest, "made {made:?}");
    d.wait_until(Duration::from_secs(10), "the API lists the two", |d| {
        let mut ids: Vec<String> = backups(d, &token, "app")
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids == newest
    });
    let total = d.get_json("/api/v1/backups", &token)["total"].clone();
    assert_eq!(total, 2);
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn a_drill_records_an_rto_and_fails_on_a_corrupted_pack_or_a_failing_query() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let bad = sqlite_db(&env, "bad.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retries = 0",
        &format!(
            "{}{}",
            source_toml(
                "app",
                &db,
                "every 1h",
                "drill = \"every 2s\"\ndrill_query = \"SELECT count(*) = 100 FROM t\""
            ),
            source_toml(
                "bad",
                &bad,
                "every 1h",
                "drill = \"every 2s\"\ndrill_query = \"SELECT 0\""
            )
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(40), "a drill of app passed", |d| {
        let s = source_status(d, &token, "app");
        s["last_drill"]["ok"] == true && s["last_drill"]["rto_ms"].is_u64()
    });
    let list = backups(&d, &token, "app");
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(list[0]["verified"]["rto_ms"].is_u64(), "{list:?}");
    assert_eq!(list[0]["verified"]["drill"], true, "{list:?}");
    let st = source_status(&d, &token, "app");
    assert_eq!(st["last_drill"]["backup"], id.as_str(), "{st}");
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_drill_last_success",
            &["source=\"app\""]
        ),
        Some(1.0)
    );
    assert!(metric(
        &d,
        &token,
        "lifeboat_drill_rto_seconds",
        &["source=\"app\""]
    )
    .is_some());
    // The drill is recorded in the repository too.
    let shown = cli_ok(&env, &["show", &id]);
    let packs: Vec<String> = shown["stored"]["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!packs.is_empty(), "{shown}");

    // A failing check query fails the drill, naming it.
    d.wait_until(Duration::from_secs(30), "the drill of bad failed", |d| {
        source_status(d, &token, "bad")["last_drill"]["ok"] == false
    });
    let st = source_status(&d, &token, "bad");
    let err = st["last_drill"]["error"].as_str().unwrap_or("");
    assert!(err.contains("check query"), "{st}");
    assert!(st["last_drill"]["rto_ms"].is_null(), "{st}");
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_drill_last_success",
            &["source=\"bad\""]
        ),
        Some(0.0)
    );

    // Damage every pack of app's backup, then drill it through the API.
    for p in &packs {
        let path = env.repo().join("data").join(&p[..2]).join(p);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let a = d.post(
        &format!("/api/v1/backups/{id}/drill"),
        Some(&token),
        &json!({}),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    let job = a.json()["job"]["id"].as_str().unwrap().to_string();
    let j = d.wait_job(&job, &token, Duration::from_secs(60));
    assert_eq!(j["state"], "failed", "{j}");
    let err = j["error"].as_str().unwrap_or("");
    assert!(err.contains(&id) && err.contains("restore"), "{j}");
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_drill_last_success",
            &["source=\"app\""]
        ),
        Some(0.0)
    );
    let st = source_status(&d, &token, "app");
    assert_eq!(st["last_drill"]["ok"], false, "{st}");
    assert!(
        st["last_drill"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("restore"),
        "{st}"
    );
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn verify_runs_on_schedule_and_health_flags_a_sudden_size_drop() {
    let env = Env::new();
    let db = big_db(&env, "app.db", 3);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "size_drop = 0.5\nstorage_warn = 0.999\nrefresh = \"1s\"",
        &source_toml(
            "app",
            &db,
            "every 1h",
            "verify = \"every 2s\"\nhealth = \"every 1s\"",
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(40), "a verified backup", |d| {
        backups(d, &token, "app")
            .first()
            .is_some_and(|b| b["verified"]["verified"].is_string())
    });
    let b = &backups(&d, &token, "app")[0];
    assert!(
        b["verified"]["rto_ms"].is_null(),
        "a verify, not a drill: {b}"
    );
    let v = metric(
        &d,
        &token,
        "lifeboat_verify_last_success_timestamp_seconds",
        &["source=\"app\""],
    )
    .expect("verify metric");
    assert!((now_s() - v).abs() < 60.0, "{v}");
    assert!(jobs(&d, &token, "verify", Some("app"))
        .iter()
        .any(|j| j["state"] == "succeeded" && j["trigger"] == "schedule"));

    // A second backup of the same size: healthy.
    let api_backup = |d: &Daemon| {
        let a = d.post("/api/v1/backups", Some(&token), &json!({"source": "app"}));
        assert_eq!(a.status, 202, "{}", a.text());
        let j = d.wait_job(
            a.json()["job"]["id"].as_str().unwrap(),
            &token,
            Duration::from_secs(60),
        );
        assert_eq!(j["state"], "succeeded", "{j}");
        secs(&j["finished"])
    };
    let done = api_backup(&d);
    d.wait_until(Duration::from_secs(20), "a healthy check", |d| {
        let h = &source_status(d, &token, "app")["health"];
        h["time"].is_string() && secs(&h["time"]) > done && h["ok"] == true
    });
    let h = source_status(&d, &token, "app")["health"].clone();
    let size = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "size")
        .unwrap_or_else(|| panic!("no size check: {h}"))
        .clone();
    assert_eq!(size["ok"], true, "{h}");
    assert_eq!(
        metric(&d, &token, "lifeboat_health_check_ok", &["source=\"app\""]),
        Some(1.0)
    );
    // The first check, at start, waited for the first backup: no false alarm.
    let checks = jobs(&d, &token, "health", Some("app"));
    assert!(
        checks.iter().all(|j| j["state"] == "succeeded"),
        "{checks:?}"
    );

    // The database shrinks to a tenth: the next backup is flagged.
    let small = env.path("small.db");
    common::make_random_db(&small, "delete", 300, 1000);
    std::fs::rename(&small, &db).unwrap();
    let done = api_backup(&d);
    d.wait_until(Duration::from_secs(20), "an unhealthy check", |d| {
        let h = &source_status(d, &token, "app")["health"];
        secs(&h["time"]) > done && h["ok"] == false
    });
    let h = source_status(&d, &token, "app")["health"].clone();
    let failing: Vec<&Value> = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{h}");
    assert_eq!(failing[0]["name"], "size", "{h}");
    assert!(
        failing[0]["detail"]
            .as_str()
            .unwrap()
            .contains("sudden drop"),
        "{h}"
    );
    assert_eq!(
        metric(&d, &token, "lifeboat_health_check_ok", &["source=\"app\""]),
        Some(0.0)
    );
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn health_flags_an_overdue_newest_backup() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    // The newest backup is three hours old, and new ones fail (their `before` does).
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    let (code, out) = env.run(&["backup", db.to_str().unwrap(), "--time", &old.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retries = 0\nstorage_warn = 0.999",
        &source_toml(
            "app",
            &db,
            "every 1h",
            "before = \"exit 1\"\nhealth = \"every 1s\"",
        ),
    );
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "a health check", |d| {
        source_status(d, &token, "app")["health"]["ok"] == false
    });
    let h = source_status(&d, &token, "app")["health"].clone();
    let failing: Vec<&Value> = h["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failing.len(), 1, "{h}");
    assert_eq!(failing[0]["name"], "age", "{h}");
    let detail = failing[0]["detail"].as_str().unwrap();
    assert_eq!(detail, "3h00m old; the schedule allows 2h01m", "{h}");
    assert_eq!(
        metric(&d, &token, "lifeboat_health_check_ok", &["source=\"app\""]),
        Some(0.0)
    );
    // The catch-up backup was tried, and failed.
    assert!(jobs(&d, &token, "backup", Some("app"))
        .iter()
        .any(|j| j["state"] == "failed" && j["trigger"] == "catch-up"));
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn a_failing_before_command_is_retried_then_waits_for_the_next_run() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retries = 2\nretry_delay = \"1s\"",
        &source_toml("app", &db, "every 1h", "before = \"exit 3\""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "three failed attempts", |d| {
        jobs(d, &token, "backup", Some("app"))
            .iter()
            .filter(|j| j["state"] == "failed")
            .count()
            >= 3
    });
    // Retries after 1 s then 2 s; a third retry would come 4 s later: wait past it.
    std::thread::sleep(Duration::from_secs(6));
    let js = jobs(&d, &token, "backup", Some("app"));
    assert_eq!(js.len(), 3, "{js:?}");
    let attempts: Vec<(u64, &str)> = js
        .iter()
        .map(|j| {
            (
                j["attempt"].as_u64().unwrap(),
                j["trigger"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [(1, "schedule"), (2, "retry"), (3, "retry")],
        "{js:?}"
    );
    for j in &js {
        assert_eq!(j["state"], "failed");
        let e = j["error"].as_str().unwrap();
        assert!(
            e.contains("before command failed") && e.contains('3'),
            "{j}"
        );
        assert!(j["backup"].is_null(), "{j}");
    }
    let gap = |a: &Value, b: &Value| secs(&b["started"]) - secs(&a["finished"]);
    assert!((0.9..2.5).contains(&gap(&js[0], &js[1])), "{js:?}");
    assert!((1.9..3.5).contains(&gap(&js[1], &js[2])), "{js:?}");
    assert!(listed(&env).is_empty());
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_job_failures_total",
            &["source=\"app\"", "job=\"backup\""]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_backups_total",
            &["source=\"app\"", "status=\"failure\""]
        ),
        Some(3.0)
    );
    // Then the next run is the schedule's, an hour on.
    let st = source_status(&d, &token, "app");
    let next = secs(&st["next_run"]) - now_s();
    assert!(next > 3000.0, "next run in {next} s: {st}");
    assert!(st["last_error"]
        .as_str()
        .unwrap()
        .contains("before command"));
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn after_sees_the_backup_and_a_slow_before_is_killed_with_its_children() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let slow = sqlite_db(&env, "slow.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let after = env.path("after.txt");
    let pid = env.path("child.pid");
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retries = 0",
        &format!(
            "{}{}",
            source_toml(
                "app",
                &db,
                "every 1h",
                &format!(
                    "after = '''printf '%s %s %s\\n' \"$LIFEBOAT_BACKUP_STATUS\" \"$LIFEBOAT_BACKUP_ID\" \"$LIFEBOAT_SOURCE_NAME\" >> {}'''",
                    after.display()
                )
            ),
            source_toml(
                "slow",
                &slow,
                "every 1h",
                &format!(
                    "before = '''sleep 30 & echo $! > {}; wait'''\ncommand_timeout = \"1s\"",
                    pid.display()
                )
            )
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "both backup jobs end", |d| {
        ["app", "slow"].iter().all(|s| {
            jobs(d, &token, "backup", Some(s))
                .iter()
                .any(|j| j["state"] != "queued" && j["state"] != "running")
        })
    });
    let app = backups(&d, &token, "app");
    assert_eq!(app.len(), 1);
    let id = app[0]["id"].as_str().unwrap();
    let text = std::fs::read_to_string(&after).expect("the after command ran");
    assert_eq!(text, format!("ok {id} app\n"));

    let j = &jobs(&d, &token, "backup", Some("slow"))[0];
    assert_eq!(j["state"], "failed", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("before command did not finish within 1s"),
        "{j}"
    );
    let took = secs(&j["finished"]) - secs(&j["started"]);
    assert!(took < 5.0, "{took}");
    assert!(backups(&d, &token, "slow").is_empty());
    // Its child went with it.
    let child: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    let alive = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!alive, "sleep {child} still runs: {state}");
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn one_job_per_source_an_api_backup_waits_for_the_scheduled_one() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("app", &db, "every 1h", "before = \"sleep 2\""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "the scheduled backup runs", |d| {
        jobs(d, &token, "backup", Some("app"))
            .first()
            .is_some_and(|j| j["state"] == "running")
    });
    let a = d.post(
        "/api/v1/backups",
        Some(&token),
        &json!({"source": "app", "trigger": "pre-migration"}),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    let api = a.json()["job"].clone();
    assert_eq!(api["state"], "queued", "{api}");
    let api = d.wait_job(api["id"].as_str().unwrap(), &token, Duration::from_secs(60));
    let js = jobs(&d, &token, "backup", Some("app"));
    assert_eq!(js.len(), 2, "{js:?}");
    let sched = &js[0];
    assert_eq!(sched["trigger"], "schedule");
    assert_eq!(sched["state"], "succeeded", "{sched}");
    assert_eq!(api["state"], "succeeded", "{api}");
    assert!(
        secs(&sched["finished"]) <= secs(&api["started"]),
        "they overlap: {sched}\n{api}"
    );
    let list = backups(&d, &token, "app");
    let triggers: Vec<&str> = list
        .iter()
        .map(|b| b["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["schedule", "pre-migration"]);
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_invalid() {
    let env = Env::new();
    let a = sqlite_db(&env, "a.db", 50);
    let b = sqlite_db(&env, "b.db", 50);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let one = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("a", &a, "every 1s", ""),
    );
    let two = format!("{one}{}", source_toml("b", &b, "every 1s", ""));
    init(&env);
    let mut d = Daemon::start(&env, &one, port);
    d.wait_until(Duration::from_secs(30), "a backup of a", |d| {
        !backups(d, &token, "a").is_empty()
    });
    assert_eq!(
        d.get_json("/api/v1/sources", &token)["sources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    std::fs::write(&d.config, &two).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_until(Duration::from_secs(30), "backups of b", |d| {
        backups(d, &token, "b").len() >= 2
    });
    assert!(d.log_text().contains("config reloaded: 2 source(s)"));
    // An invalid config is refused; the old one goes on.
    std::fs::write(
        &d.config,
        format!("{two}{}", source_toml("c", &b, "every 0x", "")),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_until(Duration::from_secs(20), "the refusal is logged", |d| {
        d.log_text().contains("config not reloaded")
    });
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config not reloaded"))
        .unwrap();
    assert!(
        line.contains("every 0x") && line.contains("[[source]] c"),
        "{line}"
    );
    assert_eq!(
        metric(
            &d,
            &token,
            "lifeboat_config_reloads_total",
            &["event=\"failure\""]
        ),
        Some(1.0)
    );
    let (na, nb) = (
        backups(&d, &token, "a").len(),
        backups(&d, &token, "b").len(),
    );
    d.wait_until(Duration::from_secs(20), "both sources go on", |d| {
        backups(d, &token, "a").len() > na && backups(d, &token, "b").len() > nb
    });
    let names: Vec<String> = d.get_json("/api/v1/sources", &token)["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(d.stop(Duration::from_secs(30)).success());
}

#[test]
fn a_second_daemon_on_the_same_config_refuses_to_start() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 10);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("app", &db, "every 1h", ""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let out = Daemon::command(&env, &d.config)
        .output()
        .expect("second daemon");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(
        text.contains("another lifeboat daemon is running")
            && text.contains(&format!("pid {}", d.pid())),
        "{text}"
    );
    // The first one is untouched.
    assert_eq!(d.get("/api/v1/health/live", None).status, 200);
    d.get_json("/api/v1/status", &token);
    assert!(d.stop(Duration::from_secs(30)).success());
    // Once it stopped, the same config starts again.
    let mut d = Daemon::start(&env, &cfg, port);
    assert!(d.stop(Duration::from_secs(30)).success());
}

/// Wait until the backup job of `source` has written some bytes but not all.
fn wait_mid_backup(d: &mut Daemon, token: &str, source: &str) -> Value {
    let mut seen = Value::Null;
    d.wait_until(Duration::from_secs(60), "the backup is half way", |d| {
        let j = jobs(d, token, "backup", Some(source));
        match j.first() {
            Some(j) if j["state"] == "running" => {
                let (done, total) = (j["bytes_done"].as_u64(), j["bytes_total"].as_u64());
                let mid = done > Some(0) && total > done;
                if mid {
                    seen = j.clone();
                }
                mid
            }
            Some(j) => panic!("the backup ended before it was caught half way: {j}"),
            None => false,
        }
    });
    seen
}

#[test]
fn sigterm_during_a_backup_stops_cleanly_with_nothing_half_written() {
    let env = Env::new();
    let db = big_db(&env, "big.db", 60);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "verify = \"full\"",
        "",
        &source_toml("big", &db, "every 1h", ""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let j = wait_mid_backup(&mut d, &token, "big");
    let t = Instant::now();
    let s = d.stop(Duration::from_secs(60));
    assert!(s.success(), "{s}\n{}", d.log_text());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let log = d.log_text();
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
    // Whatever it had written is gone or committed whole.
    let ids = repository_is_clean(&env);
    // Abandoned (it stopped at a safe point), or finished whole.
    match ids.len() {
        0 => assert!(log.contains("backup job of big abandoned"), "{log}"),
        1 => {}
        _ => panic!("{ids:?} (caught at {j})"),
    }
}

#[test]
fn kill9_mid_backup_leaves_the_repository_clean_and_the_schedule_resumes() {
    let env = Env::new();
    let db = big_db(&env, "big.db", 40);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml("big", &db, "every 2s", ""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let j = wait_mid_backup(&mut d, &token, "big");
    d.kill9();
    let before = repository_is_clean(&env);
    assert!(before.len() <= 1, "{before:?} (killed at {j})");
    // The next start runs the schedule again: new backups, every 2 s.
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(90), "two new backups", |d| {
        backups(d, &token, "big").len() >= before.len() + 2
    });
    let list = backups(&d, &token, "big");
    for b in &list[before.len()..] {
        assert!(
            matches!(b["trigger"].as_str(), Some("schedule" | "catch-up")),
            "{b}"
        );
    }
    assert!(d.stop(Duration::from_secs(60)).success());
    let after = repository_is_clean(&env);
    assert!(after.len() >= before.len() + 2, "{after:?}");
}

#[test]
fn sigterm_during_a_before_command_stops_it_and_still_runs_after() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let after = env.path("after.txt");
    // The default time limit of a command is 5 minutes: the stop must not wait for it.
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "",
        &source_toml(
            "app",
            &db,
            "every 1h",
            &format!(
                "before = \"sleep 60\"\nafter = '''echo \"$LIFEBOAT_BACKUP_STATUS\" > {}'''",
                after.display()
            ),
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(Duration::from_secs(30), "the before command runs", |d| {
        jobs(d, &token, "backup", Some("app"))
            .first()
            .is_some_and(|j| j["state"] == "running" && j["phase"] == "before command")
    });
    let t = Instant::now();
    let s = d.stop(Duration::from_secs(40));
    assert!(s.success(), "{s}\n{}", d.log_text());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the stop waited {:?} for the before command",
        t.elapsed()
    );
    // `after` ran (it may resume what `before` paused), and saw the backup did not happen.
    assert_eq!(std::fs::read_to_string(&after).unwrap(), "failed\n");
    let log = d.log_text();
    assert!(
        log.contains("backup job of app abandoned: the daemon stopped during the before command"),
        "{log}"
    );
    assert!(repository_is_clean(&env).is_empty());
}

#[test]
fn a_verify_after_a_drill_keeps_the_drills_rto() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "refresh = \"1s\"",
        &source_toml(
            "app",
            &db,
            "every 1h",
            "drill = \"every 1h\"\nverify = \"every 1s\"",
        ),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    let mut drilled = 0.0;
    d.wait_until(Duration::from_secs(30), "a drill passed", |d| {
        let j = jobs(d, &token, "drill", Some("app"));
        if let Some(j) = j.iter().find(|j| j["state"] == "succeeded") {
            drilled = secs(&j["finished"]);
        }
        drilled > 0.0
    });
    d.wait_until(Duration::from_secs(30), "two verifies after it", |d| {
        jobs(d, &token, "verify", Some("app"))
            .iter()
            .filter(|j| j["state"] == "succeeded" && secs(&j["started"]) > drilled)
            .count()
            >= 2
    });
    let check = |d: &Daemon| {
        let b = &backups(d, &token, "app")[0];
        assert!(b["verified"]["rto_ms"].is_u64(), "{b}");
        assert!(secs(&b["verified"]["verified"]) > drilled, "{b}");
        let st = source_status(d, &token, "app");
        assert!(st["last_drill"]["rto_ms"].is_u64(), "{st}");
        let a = d.get("/api/v1/backups?status=drilled", Some(&token)).json();
        assert_eq!(a["count"], 1, "{a}");
    };
    check(&d);
    // As the repository records it: a restarted daemon reads the same.
    assert!(d.stop(Duration::from_secs(30)).success());
    let d = Daemon::start(&env, &cfg, port);
    check(&d);
}

#[test]
fn a_failed_api_backup_leaves_the_scheduled_retry_in_place() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 100);
    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let cfg = config(
        &env,
        port,
        &tok,
        "",
        "retries = 1\nretry_delay = \"4s\"",
        &source_toml("app", &db, "every 1h", "before = \"exit 3\""),
    );
    init(&env);
    let mut d = Daemon::start(&env, &cfg, port);
    d.wait_until(
        Duration::from_secs(30),
        "the scheduled backup failed",
        |d| {
            jobs(d, &token, "backup", Some("app"))
                .first()
                .is_some_and(|j| j["state"] == "failed")
        },
    );
    // An operator tries by hand meanwhile, and fails too.
    let a = d.post("/api/v1/backups", Some(&token), &json!({"source": "app"}));
    assert_eq!(a.status, 202, "{}", a.text());
    let j = d.wait_job(
        a.json()["job"]["id"].as_str().unwrap(),
        &token,
        Duration::from_secs(30),
    );
    assert_eq!(j["state"], "failed", "{j}");
    // The scheduled retry still comes, 4 s after the scheduled failure.
    d.wait_until(Duration::from_secs(15), "the retry", |d| {
        jobs(d, &token, "backup", Some("app"))
            .iter()
            .any(|j| j["trigger"] == "retry")
    });
    let js = jobs(&d, &token, "backup", Some("app"));
    let triggers: Vec<&str> = js.iter().map(|j| j["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["schedule", "api", "retry"], "{js:?}");
    assert_eq!(js[2]["attempt"], 2, "{js:?}");
    let late = secs(&js[2]["started"]) - secs(&js[0]["finished"]);
    assert!((3.9..6.0).contains(&late), "{late}");
    assert!(d.stop(Duration::from_secs(30)).success());
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
# This machine's disk is fuller than the default 85%: not what this test is about.
storage_warn = 0.999
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
