//! `lifeboat daemon` webhooks delivered to real local HTTP receivers that check the
//! signature themselves: headers and body of an event, retries with backoff, the delivery
//! log and its API, giving up (and the metric that counts it), per-event filters, the Slack
//! format, secret URL paths kept out of every output, and each kind of event.

mod common;

use common::daemon::{sqlite_db, token_file, Daemon};
use common::webhook_receiver::{unix_now, verify, Receiver};
use common::Env;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "whsec-0123456789abcdef-shared";

/// The shared secret in a private file.
fn secret_file(env: &Env) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = env.path("webhook.secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The daemon's delivery log in `state` (there is one daemon per state folder here).
fn delivery_log(state: &Path) -> PathBuf {
    let logs: Vec<PathBuf> = std::fs::read_dir(state)
        .expect("state dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("daemon-") && n.ends_with("-webhooks.log")
        })
        .collect();
    assert_eq!(
        logs.len(),
        1,
        "delivery logs in {}: {logs:?}",
        state.display()
    );
    logs[0].clone()
}

/// (endpoint, attempt, status, ok) of each delivery of `event_id` in a list of deliveries.
fn attempts_of(list: &[serde_json::Value], event_id: &str) -> BTreeSet<(String, u64, u64, bool)> {
    list.iter()
        .filter(|d| d["event_id"] == event_id)
        .map(|d| {
            (
                d["endpoint"].as_str().unwrap().to_string(),
                d["attempt"].as_u64().unwrap(),
                d["status"].as_u64().unwrap_or(0),
                d["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn is_failure(event: &str) -> bool {
    event.ends_with(".failed") || matches!(event, "replication.lagging" | "storage.low")
}

#[test]
fn backup_completed_is_signed_retried_logged_and_given_up() {
    let env = Env::new();
    let db = sqlite_db(&env, "app.db", 200);
    let (admin_file, admin) = token_file(&env, "ops");
    let (viewer_file, viewer) = token_file(&env, "viewer");
    let secret = secret_file(&env);
    let state = env.path("state");
    let port = common::daemon::free_port();

    let good = Receiver::ok(SECRET.as_bytes());
    // 500 to the first two attempts, then 200.
    let flaky = Receiver::start(SECRET.as_bytes(), |n| if n < 2 { 500 } else { 200 });
    let dead = Receiver::start(SECRET.as_bytes(), |_| 500);
    // The first attempt gets no answer within the endpoint's time limit.
    let slow = Receiver::start(SECRET.as_bytes(), |n| if n == 0 { 0 } else { 200 });
    let slack = Receiver::ok(SECRET.as_bytes());
    let dead_path = "/services/T999/B999/ZZZZsecret";
    let slack_path = "/services/T000/B000/XXXXsecret";

    let config = format!(
        r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
[[daemon.token]]
name = "ops"
file = "{admin_file}"
scopes = ["admin"]
[[daemon.token]]
name = "viewer"
file = "{viewer_file}"
scopes = ["read"]
[[daemon.webhook]]
url = "{good}"
secret_file = "{secret}"
events = ["backup.completed"]
[[daemon.webhook]]
url = "{flaky}"
secret_file = "{secret}"
events = ["backup.completed"]
attempts = 5
retry_delay = "1s"
timeout = "5s"
[[daemon.webhook]]
url = "{dead}"
secret_file = "{secret}"
events = ["backup.completed"]
attempts = 3
retry_delay = "200ms"
[[daemon.webhook]]
url = "{slow}"
secret_file = "{secret}"
events = ["backup.completed"]
attempts = 2
retry_delay = "200ms"
timeout = "500ms"
[[daemon.webhook]]
url = "{slack}"
secret_file = "{secret}"
events = ["backup.completed"]
format = "slack"
[[source]]
name = "app"
path = "{db}"
schedule = "every 1h"
"#,
        repo = env.repo().display(),
        state = state.display(),
        admin_file = admin_file.display(),
        viewer_file = viewer_file.display(),
        good = good.url("/hook"),
        flaky = flaky.url("/hook"),
        dead = dead.url(dead_path),
        slow = slow.url("/hook"),
        slack = slack.url(slack_path),
        secret = secret.display(),
        db = db.display()
    );
    env.cmd().args(["repo", "init"]).assert().success();
    let config_path = env.path("lifeboat.toml");
    std::fs::write(&config_path, &config).unwrap();

    // --check-config names each endpoint by scheme, host and port only.
    let check = Daemon::command(&env, &config_path)
        .arg("--check-config")
        .output()
        .unwrap();
    let check_text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{check_text}");
    for r in [&good, &flaky, &dead, &slow, &slack] {
        assert!(
            check_text.contains(&format!("webhook http://127.0.0.1:{}/…", r.port)),
            "{check_text}"
        );
    }
    assert!(check_text.contains("Slack format"), "{check_text}");
    assert!(!check_text.contains("NOT signed"), "{check_text}");

    let mut d = Daemon::start_with(&env, &config_path, port, &[]);
    let log_file = d.log.clone();
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();

    // The scheduled backup (the first run is at start).
    let got = good.wait(Duration::from_secs(60), "backup.completed", log, |r| {
        !r.is_empty()
    });
    let list = d.get_json("/api/v1/backups?source=app", &admin);
    assert_eq!(list["count"], 1, "{list}");
    let backup = &list["backups"][0];
    let id = backup["id"].as_str().unwrap();

    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    let t = req
        .verdict
        .clone()
        .expect("the receiver accepted the signature");
    assert!((unix_now() - t).abs() < 120, "signature time {t}");
    assert_eq!(req.status, 200);
    assert_eq!(req.event(), "backup.completed");
    assert!(
        req.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{:?}",
        req.headers
    );
    let body = req.json();
    assert_eq!(req.delivery(), body["id"].as_str().unwrap(), "{body}");
    assert_eq!(body["event"], "backup.completed");
    assert_eq!(body["source"], "app");
    assert_eq!(body["backup"], id);
    assert_eq!(body["host"], backup["host"], "{body}\n{backup}");
    assert!(
        body["message"].as_str().unwrap().contains(id),
        "{}",
        body["message"]
    );
    assert_eq!(
        body["details"]["size_bytes"], backup["size_bytes"],
        "{body}"
    );
    assert!(backup["size_bytes"].as_u64().unwrap() > 200 * 64);
    assert_eq!(body["details"]["id"], id);
    assert_eq!(body["details"]["trigger"], backup["trigger"]);
    let sent: jiff::Timestamp = body["time"].as_str().unwrap().parse().unwrap();
    assert!((unix_now() - sent.as_second()).abs() < 120, "{body}");

    // The check a receiver makes can fail: another secret, one byte changed, an old time.
    let sig = req.header("x-lifeboat-signature");
    assert_eq!(verify(SECRET.as_bytes(), sig, &req.body, unix_now()), Ok(t));
    assert_eq!(
        verify(b"whsec-not-the-shared-one", sig, &req.body, unix_now()),
        Err("signature mismatch".to_string())
    );
    let mut tampered = req.body.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"\"app")
        .expect("source in body")
        + 1;
    tampered[at] = b'b';
    assert_eq!(
        verify(SECRET.as_bytes(), sig, &tampered, unix_now()),
        Err("signature mismatch".to_string())
    );
    assert!(
        verify(SECRET.as_bytes(), sig, &req.body, t + 301)
            .unwrap_err()
            .contains("replay"),
        "an old signature is refused"
    );

    // Retries: the same delivery three times, gaps growing (1 s, then 2 s).
    let tries = flaky.wait(Duration::from_secs(30), "three attempts", log, |r| {
        r.len() >= 3
    });
    assert_eq!(tries.len(), 3, "no attempt after a success");
    for r in &tries {
        assert_eq!(r.delivery(), req.delivery(), "same delivery id");
        assert_eq!(r.body, req.body, "same body at every attempt");
        assert!(r.verdict.is_ok(), "{:?}", r.verdict);
    }
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let g1 = (tries[1].at - tries[0].at).as_secs_f64();
    let g2 = (tries[2].at - tries[1].at).as_secs_f64();
    assert!(
        (0.8..5.0).contains(&g1) && (1.6..10.0).contains(&g2) && g2 - g1 > 0.5,
        "retry gaps {g1:.2} s then {g2:.2} s (retry_delay 1s, doubled)"
    );

    // Given up after `attempts`, and counted.
    let dead_tries = dead.wait(Duration::from_secs(30), "three attempts", log, |r| {
        r.len() >= 3
    });
    assert!(dead_tries.iter().all(|r| r.delivery() == req.delivery()));
    assert!(dead_tries.iter().all(|r| r.path == dead_path));
    let metric = r#"lifeboat_webhook_failures_total{event="backup.completed"} 1"#;
    d.wait_until(Duration::from_secs(20), "the failure is counted", |d| {
        d.get("/metrics", Some(&viewer)).text().contains(metric)
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(dead.received().len(), 3, "no attempt after giving up");

    // The time limit: the first attempt timed out, the second went through.
    let slow_tries = slow.wait(Duration::from_secs(20), "two attempts", log, |r| {
        r.len() >= 2
    });
    assert!(slow_tries.iter().all(|r| r.delivery() == req.delivery()));

    // Slack format: {"text": …} naming the event and the source.
    let s = slack.wait(Duration::from_secs(20), "a Slack message", log, |r| {
        !r.is_empty()
    });
    assert_eq!(s[0].path, slack_path);
    let text_body = s[0].json();
    let obj = text_body.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["text"], "{text_body}");
    let text = obj["text"].as_str().unwrap();
    assert!(
        text.contains("backup.completed") && text.contains("app") && text.contains(id),
        "{text}"
    );

    // The deliveries API (admin only) and the delivery log tell the same story.
    assert_eq!(
        d.get("/api/v1/webhooks/deliveries", Some(&viewer)).status,
        403
    );
    let api = d.get_json("/api/v1/webhooks/deliveries", &admin);
    let api = api["deliveries"].as_array().unwrap().clone();
    let ep = |r: &Receiver| format!("http://127.0.0.1:{}/…", r.port);
    let want: BTreeSet<(String, u64, u64, bool)> = [
        (ep(&good), 1, 200, true),
        (ep(&flaky), 1, 500, false),
        (ep(&flaky), 2, 500, false),
        (ep(&flaky), 3, 200, true),
        (ep(&dead), 1, 500, false),
        (ep(&dead), 2, 500, false),
        (ep(&dead), 3, 500, false),
        (ep(&slow), 1, 0, false),
        (ep(&slow), 2, 200, true),
        (ep(&slack), 1, 200, true),
    ]
    .into_iter()
    .collect();
    assert_eq!(attempts_of(&api, &req.delivery()), want, "{api:#?}");
    let failed = api
        .iter()
        .find(|d| d["ok"] == false)
        .expect("a failed attempt");
    assert_eq!(
        failed["error"], "HTTP 500 Internal Server Error",
        "{failed}"
    );
    let timed_out = api
        .iter()
        .find(|d| d["endpoint"] == ep(&slow) && d["attempt"] == 1)
        .expect("the slow endpoint's first attempt");
    assert!(
        timed_out["status"].is_null()
            && timed_out["error"]
                .as_str()
                .unwrap()
                .starts_with("timed out"),
        "{timed_out}"
    );

    let log_path = delivery_log(&state);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(attempts_of(&lines, &req.delivery()), want, "{lines:#?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", log_path.display());
    }

    let status = d.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");

    // Secrets and secret URL paths appear nowhere.
    let outputs = [
        ("delivery log", std::fs::read_to_string(&log_path).unwrap()),
        ("deliveries API", serde_json::to_string(&api).unwrap()),
        ("daemon log", d.log_text()),
        ("--check-config", check_text),
    ];
    assert!(
        outputs[2].1.contains("given up"),
        "the log says the dead endpoint was given up:\n{}",
        outputs[2].1
    );
    for (what, text) in &outputs {
        for needle in [SECRET, "XXXXsecret", "ZZZZsecret", "/services/", "/hook"] {
            assert!(!text.contains(needle), "{what} shows {needle:?}:\n{text}");
        }
    }
}

#[test]
fn filters_choose_events_and_every_kind_of_event_arrives() {
    let env = Env::new();
    let good_db = sqlite_db(&env, "good.db", 300);
    let broken_db = sqlite_db(&env, "broken.db", 10);
    let (tok_file, token) = token_file(&env, "ops");
    let secret = secret_file(&env);
    let port = common::daemon::free_port();

    let all = Receiver::ok(SECRET.as_bytes());
    let failures = Receiver::ok(SECRET.as_bytes());
    let drills = Receiver::ok(SECRET.as_bytes());

    let config = format!(
        r#"repo = "{repo}"
[retention]
keep_last = 1
[daemon]
listen = "127.0.0.1:{port}"
state_dir = "{state}"
retention = "every 2s"
# /tmp may be fuller than the default 85%: the good source stays healthy.
storage_warn = 0.99
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["read"]
[[daemon.webhook]]
url = "{all}"
secret_file = "{secret}"
[[daemon.webhook]]
url = "{failures}"
secret_file = "{secret}"
events = ["failures"]
[[daemon.webhook]]
url = "{drills}"
secret_file = "{secret}"
events = ["drill.passed"]
[[source]]
name = "good"
path = "{good_db}"
schedule = "every 2s"
verify = "every 3s"
drill = "every 3s"
[[source]]
name = "broken"
path = "{broken_db}"
schedule = "every 1h"
before = "exit 1"
"#,
        repo = env.repo().display(),
        state = env.path("state").display(),
        tok = tok_file.display(),
        all = all.url("/all"),
        failures = failures.url("/failures"),
        drills = drills.url("/drills"),
        secret = secret.display(),
        good_db = good_db.display(),
        broken_db = broken_db.display()
    );
    env.cmd().args(["repo", "init"]).assert().success();
    let mut d = Daemon::start(&env, &config, port);
    let wanted = [
        "backup.completed",
        "backup.failed",
        "verify.passed",
        "drill.passed",
        "retention.cleanup",
        "health.failed",
    ];
    all.wait(
        Duration::from_secs(90),
        "every kind of event",
        || d.log_text(),
        |r| {
            let seen: BTreeSet<String> = r.iter().map(|x| x.event()).collect();
            wanted.iter().all(|w| seen.contains(*w))
        },
    );
    // keep_last = 1 is applied: fewer backups listed than were completed.
    let kept = d.get_json("/api/v1/backups?source=good", &token)["count"]
        .as_u64()
        .unwrap();
    let completed = all
        .received()
        .iter()
        .filter(|r| r.event() == "backup.completed")
        .count() as u64;
    assert!(kept < completed, "{kept} backups kept of {completed}");
    let status = d.stop(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    // What was in flight was sent before the daemon stopped.
    let everything = all.received();
    for r in everything
        .iter()
        .chain(failures.received().iter())
        .chain(drills.received().iter())
    {
        assert!(r.verdict.is_ok(), "{:?}: {:?}", r.event(), r.verdict);
        assert_eq!(r.event(), r.json()["event"].as_str().unwrap());
        assert_eq!(r.delivery(), r.json()["id"].as_str().unwrap());
    }
    let by_event = |rs: &[common::webhook_receiver::Received]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in rs {
            m.entry(r.event()).or_default().insert(r.delivery());
        }
        m
    };
    let all_events = by_event(&everything);

    // `failures`: exactly the failure events, backup.failed and health.failed among them.
    let f = by_event(&failures.received());
    let want_f: BTreeMap<String, BTreeSet<String>> = all_events
        .iter()
        .filter(|(e, _)| is_failure(e))
        .map(|(e, ids)| (e.clone(), ids.clone()))
        .collect();
    assert_eq!(f, want_f, "the failures endpoint got {f:?}");
    assert!(f.contains_key("backup.failed") && f.contains_key("health.failed"));
    assert!(!f.contains_key("backup.completed"));

    // `drill.passed`: only those, every one of them.
    let dr = by_event(&drills.received());
    assert_eq!(dr.keys().collect::<Vec<_>>(), ["drill.passed"], "{dr:?}");
    assert_eq!(dr["drill.passed"], all_events["drill.passed"]);

    // The bodies say what happened.
    let first_of = |event: &str, source: &str| {
        everything
            .iter()
            .map(|r| r.json())
            .find(|b| b["event"] == event && b["source"] == source)
            .unwrap_or_else(|| panic!("no {event} of {source}"))
    };
    let first = |event: &str| first_of(event, "good");
    let failed = first_of("backup.failed", "broken");
    assert_eq!(failed["source"], "broken", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("the before command failed"),
        "{failed}"
    );
    assert!(failed["backup"].is_null());
    let health = first_of("health.failed", "broken");
    assert_eq!(health["source"], "broken", "{health}");
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("there is no backup of this source"),
        "{health}"
    );
    assert_eq!(health["details"]["ok"], false);
    for event in ["verify.passed", "drill.passed", "backup.completed"] {
        let b = first(event);
        assert_eq!(b["source"], "good", "{b}");
        assert_eq!(b["backup"].as_str().unwrap().len(), 14, "{b}");
    }
    let cleanup = everything
        .iter()
        .find(|r| r.event() == "retention.cleanup")
        .unwrap()
        .json();
    assert!(cleanup["source"].is_null(), "{cleanup}");
    assert!(
        !cleanup["details"]["forgotten"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{cleanup}"
    );
}
