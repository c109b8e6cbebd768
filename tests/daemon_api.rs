//! The daemon's HTTP API over real HTTP: every route of `src/daemon/api.rs` against a real
//! `lifeboat daemon` process with SQLite and files sources whose schedules are off, so the
//! API drives every job. Tokens and scopes, the OpenAPI document against the router, list
//! filters, backups with a trigger, verify and drill jobs followed as server-sent events,
//! restores into `restore_dirs` and their refusals, downloads checked byte for byte, TLS,
//! and the request body limit.

mod common;

use common::daemon::{free_port, token_file, Answer, Daemon};
use common::{dump, make_db, sha256_file, Env};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---- requests the harness does not make: any header, any body ----

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// GET with exactly these headers.
fn get_with(d: &Daemon, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut req = agent().get(d.url(path));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    Daemon::answer(req.call())
}

/// `method` (GET or POST) with this bearer token and, for a POST, this raw JSON body.
fn call(d: &Daemon, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let auth: Vec<(&str, String)> = token
        .map(|t| vec![("Authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    match method {
        "get" => get_with(d, path, &auth),
        "post" => {
            let mut req = agent()
                .post(d.url(path))
                .header("Content-Type", "application/json");
            for (k, v) in &auth {
                req = req.header(*k, v);
            }
            Daemon::answer(req.send(body))
        }
        m => panic!("method {m}"),
    }
}

fn basic(user: &str, password: &str) -> (&'static str, String) {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ("Authorization", format!("Basic {b}"))
}

fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An error answer: this status, a JSON `{"error": {"message": …}}` body; the message.
fn assert_error(a: &Answer, status: u16, what: &str) -> String {
    assert_eq!(a.status, status, "{what}: {}", a.text());
    let v = a.json();
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error message in {v}"))
        .to_string();
    assert!(!message.is_empty(), "{what}: empty error message");
    message
}

fn ids(list: &Value) -> Vec<String> {
    list["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("no backups array in {list}"))
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

/// Backup ids as a list compares with `ids`.
fn l(v: &[&String]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- the test's world: a SQLite database, a folder, tokens, a config ----

struct Tokens {
    /// ["admin"], from a file.
    ops: String,
    /// ["read"], from a file.
    reader: String,
    /// ["read", "backup"], from the variable LIFEBOAT_TOKEN_CI.
    ci: String,
    /// ["restore"], given in the config as its SHA-256 only.
    restorer: String,
}

struct World {
    env: Env,
    db: PathBuf,
    docs: PathBuf,
    restores: PathBuf,
    tokens: Tokens,
    port: u16,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let db = env.path("app.db");
        drop(make_db(&db, 200));
        let docs = env.path("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::write(docs.join("readme.txt"), "the docs of the app\n").unwrap();
        std::fs::write(docs.join("sub/notes.md"), "# notes\nsecond file\n").unwrap();
        let restores = env.path("restores");
        std::fs::create_dir_all(&restores).unwrap();
        let (_, ops) = token_file(&env, "ops");
        let (_, reader) = token_file(&env, "reader");
        let ci = format!(
            "ci-token-{}",
            sha256_hex(&env.dir.path().display().to_string())
        );
        let restorer = format!(
            "restorer-token-{}",
            &sha256_hex(&format!("r{}", env.dir.path().display()))[..32]
        );
        env.cmd().args(["repo", "init"]).assert().success();
        World {
            db,
            docs,
            restores,
            tokens: Tokens {
                ops,
                reader,
                ci,
                restorer,
            },
            port: free_port(),
            env,
        }
    }

    /// The config: sources `app` (SQLite) and `docs` (a folder), schedules off, the four
    /// tokens; `daemon_extra` goes into `[daemon]`.
    fn config(&self, daemon_extra: &str) -> String {
        format!(
            r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
health = "off"
{daemon_extra}
[[daemon.token]]
name = "ops"
file = "{ops}"
scopes = ["admin"]
[[daemon.token]]
name = "reader"
file = "{reader}"
scopes = ["read"]
[[daemon.token]]
name = "ci"
env = "LIFEBOAT_TOKEN_CI"
scopes = ["read", "backup"]
[[daemon.token]]
name = "restorer"
sha256 = "sha256:{restorer_hash}"
scopes = ["restore"]
[[source]]
name = "app"
path = "{db}"
schedule = "off"
[[source]]
name = "docs"
path = "{docs}"
schedule = "off"
"#,
            repo = self.env.repo().display(),
            port = self.port,
            ops = self.env.path("ops.token").display(),
            reader = self.env.path("reader.token").display(),
            restorer_hash = sha256_hex(&self.tokens.restorer),
            db = self.db.display(),
            docs = self.docs.display(),
        )
    }

    fn start(&self, daemon_extra: &str) -> Daemon {
        let config = self.env.path("lifeboat.toml");
        std::fs::write(&config, self.config(daemon_extra)).unwrap();
        let mut d = Daemon::start_with(
            &self.env,
            &config,
            self.port,
            &[
                ("LIFEBOAT_TOKEN_CI", self.tokens.ci.as_str()),
                // The most talkative level: even then no token may reach the log.
                ("LIFEBOAT_LOG", "debug"),
            ],
        );
        d.wait_until(Duration::from_secs(60), "the daemon is ready", |d| {
            d.get("/api/v1/health/ready", None).status == 200
        });
        d
    }

    fn all_tokens(&self) -> [&str; 4] {
        [
            &self.tokens.ops,
            &self.tokens.reader,
            &self.tokens.ci,
            &self.tokens.restorer,
        ]
    }
}

/// POST that must start a job: 202, `Location` naming the job; the job's view.
fn accepted(d: &Daemon, path: &str, token: &str, body: &Value) -> Value {
    let a = d.post(path, Some(token), body);
    assert_eq!(a.status, 202, "POST {path}: {}\n{}", a.text(), d.log_text());
    let job = a.json()["job"].clone();
    let id = job["id"].as_str().expect("job id");
    assert_eq!(
        a.header("location"),
        Some(format!("/api/v1/jobs/{id}").as_str()),
        "POST {path}: Location"
    );
    job
}

fn finished_ok(d: &Daemon, job: &Value, token: &str) -> Value {
    let id = job["id"].as_str().expect("job id");
    let j = d.wait_job(id, token, Duration::from_secs(120));
    assert_eq!(j["state"], "succeeded", "job {j}\n{}", d.log_text());
    j
}

/// The `(path, method)` pairs of the router in src/daemon/api.rs, read from its
/// `.route("PATH", get(..).post(..))` lines.
fn router_routes() -> BTreeSet<(String, String)> {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon/api.rs"))
            .unwrap();
    let mut out = BTreeSet::new();
    for line in src.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix(".route(\"") else {
            continue;
        };
        let (path, handlers) = rest.split_once('"').expect("route path");
        let mut found = 0;
        for method in ["get", "post", "put", "delete", "patch"] {
            let n = handlers.matches(&format!("{method}(")).count();
            assert!(n <= 1, "{line}");
            if n == 1 {
                out.insert((path.to_string(), method.to_string()));
                found += 1;
            }
        }
        assert!(found > 0, "no method read from {line}");
    }
    assert!(
        out.len() >= 15,
        "the router's routes were not read: {out:?}"
    );
    out
}

#[test]
fn every_route_is_documented_guarded_and_answers() {
    let w = World::new();
    // Backups to work on, taken by the CLI before the daemon starts.
    let app_id = w.env.backup(&w.db);
    let d = w.start("");
    let t = &w.tokens;

    // The OpenAPI document: public, JSON, and the same routes as the router.
    let a = d.get("/api/v1/openapi.json", None);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let doc = a.json();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            documented.insert((path.clone(), method.clone()));
        }
    }
    let routed = router_routes();
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes the OpenAPI document does not list"
    );
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented routes the router does not have"
    );

    // Health probes: no token needed.
    let live = d.get("/api/v1/health/live", None);
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "live");
    let ready = d.get("/api/v1/health/ready", None);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");

    // Every documented operation against every kind of caller. `{id}` is a backup id
    // nobody has (or an unknown job), so a caller that is let in starts nothing.
    let scope_token = |scope: &str| -> (&str, &str) {
        // (a token with the scope, a token without it)
        match scope {
            "read" => (&t.reader, &t.restorer),
            "backup" => (&t.ci, &t.reader),
            "restore" => (&t.restorer, &t.ci),
            "admin" => (&t.ops, &t.ci),
            s => panic!("unknown scope {s} in the OpenAPI document"),
        }
    };
    let unknown_token = "tok-unknown-0123456789abcdef0123456789";
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let url = path
                .replace("/backups/{id}", "/backups/00000000000000")
                .replace("/jobs/{id}", "/jobs/j-00000000000000");
            let what = format!("{method} {url}");
            let public = op["security"].as_array().is_some_and(|s| s.is_empty());
            if public {
                assert!(op.get("x-lifeboat-scope").is_none(), "{what}");
                let a = call(&d, method, &url, None, b"{}");
                assert_eq!(a.status, 200, "{what} without a token: {}", a.text());
                continue;
            }
            let scope = op["x-lifeboat-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no x-lifeboat-scope"));
            let a = call(&d, method, &url, None, b"{}");
            assert_error(&a, 401, &format!("{what} without a token"));
            // One challenge per header (Chromium reads only the first of a header).
            let challenge: String = a
                .headers
                .iter()
                .filter(|(k, _)| k == "www-authenticate")
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(" | ");
            assert!(
                challenge.contains("Bearer") && challenge.contains("Basic"),
                "{what}: WWW-Authenticate {challenge:?}"
            );
            let a = call(&d, method, &url, Some(unknown_token), b"{}");
            assert_error(&a, 401, &format!("{what} with an unknown token"));
            let (with, without) = scope_token(scope);
            let a = call(&d, method, &url, Some(without), b"{}");
            let m = assert_error(&a, 403, &format!("{what} without the {scope} scope"));
            assert!(m.contains(scope), "{what}: {m}");
            let a = call(&d, method, &url, Some(with), b"{}");
            assert!(
                ![0, 401, 403].contains(&a.status),
                "{what} with the {scope} scope: {} {}",
                a.status,
                a.text()
            );
            // Admin implies every scope.
            let a = call(&d, method, &url, Some(&t.ops), b"{}");
            assert!(
                ![0, 401, 403].contains(&a.status),
                "{what} as admin: {} {}",
                a.status,
                a.text()
            );
        }
    }
    // The scope boundaries the brief names, on real ids.
    let boundaries = [
        ("post", "/api/v1/backups".to_string(), &t.reader, "backup"),
        (
            "post",
            format!("/api/v1/backups/{app_id}/restore"),
            &t.ci,
            "restore",
        ),
        (
            "get",
            format!("/api/v1/backups/{app_id}/download"),
            &t.ci,
            "restore",
        ),
        ("get", "/api/v1/webhooks/deliveries".into(), &t.ci, "admin"),
        (
            "get",
            "/api/v1/webhooks/deliveries".into(),
            &t.reader,
            "admin",
        ),
        ("get", "/api/v1/status".into(), &t.restorer, "read"),
    ];
    let body = json!({"source": "app", "to": w.restores.join("x.db")}).to_string();
    for (method, path, token, scope) in boundaries {
        let a = call(&d, method, &path, Some(token), body.as_bytes());
        let m = assert_error(&a, 403, &format!("{method} {path}"));
        assert!(m.contains(scope), "{m}");
    }
    assert!(!w.restores.join("x.db").exists());
    assert_eq!(
        d.get_json("/api/v1/jobs", &t.reader)["jobs"]
            .as_array()
            .map(|j| j.len()),
        Some(0),
        "a refused request started a job"
    );

    // Each way of giving a token works: file, variable, SHA-256 in the config, and Basic
    // auth with the token as the password.
    let status = d.get_json("/api/v1/status", &t.reader);
    let names: Vec<&str> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "docs"], "{status}");
    assert_eq!(status["sources"][0]["backups"], 1, "{status}");
    assert_eq!(status["sources"][0]["last_backup"]["id"], app_id.as_str());
    assert_eq!(status["daemon"]["backups"], 1);
    assert_eq!(d.get_json("/api/v1/status", &t.ci)["daemon"]["backups"], 1);
    let a = get_with(
        &d,
        &format!("/api/v1/backups/{app_id}/download"),
        &[("Authorization", format!("Bearer {}", t.restorer))],
    );
    assert_eq!(a.status, 200, "the sha256 token: {}", a.text());
    let a = get_with(&d, "/api/v1/status", &[basic("anyone", &t.reader)]);
    assert_eq!(a.status, 200, "Basic auth: {}", a.text());
    assert_eq!(a.json()["sources"][0]["name"], "app");
    let a = get_with(
        &d,
        "/api/v1/status",
        &[basic("anyone", "wrong-password-0123456789")],
    );
    assert_error(&a, 401, "Basic auth with a wrong password");
    let a = get_with(
        &d,
        "/api/v1/status",
        &[("Authorization", format!("Token {}", t.reader))],
    );
    assert_error(&a, 401, "an unknown scheme");

    // The read-only routes, with content.
    let sources = d.get_json("/api/v1/sources", &t.reader);
    assert_eq!(sources["sources"][0]["name"], "app");
    assert_eq!(sources["sources"][0]["path"], w.db.display().to_string());
    assert_eq!(sources["sources"][1]["name"], "docs");
    assert_eq!(sources["sources"][0]["schedule"], "off", "{sources}");
    let page = get_with(&d, "/", &[basic("", &t.reader)]);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("app") && html.contains("docs"), "{html}");
    let metrics = d.get("/metrics", Some(&t.reader));
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for name in [
        "lifeboat_build_info",
        "lifeboat_repository_backups",
        "lifeboat_jobs_running",
    ] {
        assert!(text.contains(name), "{name} not in /metrics:\n{text}");
    }
    assert!(text.contains("lifeboat_repository_backups 1"), "{text}");
    let deliveries = d.get_json("/api/v1/webhooks/deliveries", &t.ops);
    assert_eq!(deliveries["deliveries"], json!([]), "{deliveries}");
    let a = d.get("/api/v1/nowhere", Some(&t.reader));
    assert_error(&a, 404, "an unknown route");

    // Restores through the API are off when restore_dirs is empty.
    let target = w.restores.join("restored.db");
    let a = d.post(
        &format!("/api/v1/backups/{app_id}/restore"),
        Some(&t.restorer),
        &json!({"to": target}),
    );
    let m = assert_error(&a, 400, "a restore without restore_dirs");
    assert!(m.contains("off"), "{m}");
    assert!(!target.exists());

    // Bodies over 64 KiB are refused with 413, before anything runs.
    let big = json!({"source": "app", "tags": ["x".repeat(70 * 1024)]}).to_string();
    let a = call(&d, "post", "/api/v1/backups", Some(&t.ci), big.as_bytes());
    assert_error(&a, 413, "a 70 KiB body");
    let big = json!({"to": format!("/{}", "x".repeat(70 * 1024))}).to_string();
    let a = call(
        &d,
        "post",
        &format!("/api/v1/backups/{app_id}/restore"),
        Some(&t.restorer),
        big.as_bytes(),
    );
    assert_error(&a, 413, "a 70 KiB restore body");
    // Just under the limit is read (and refused for what it says, not its size).
    let under = json!({"source": "app", "tags": ["x".repeat(60 * 1024)]}).to_string();
    let a = call(&d, "post", "/api/v1/backups", Some(&t.ci), under.as_bytes());
    assert_error(&a, 400, "a 60 KiB body with a bad tag");
    assert_eq!(d.get_json("/api/v1/jobs", &t.reader)["jobs"], json!([]));

    // No token reaches the log, whatever was refused or let in.
    let log = d.log_text();
    assert!(
        log.contains("unknown token"),
        "the refusals are logged:\n{log}"
    );
    for token in w.all_tokens() {
        assert!(
            !log.contains(token),
            "a token is in the daemon's log:\n{log}"
        );
    }
    assert!(!log.contains(unknown_token));
    assert!(!log.contains("wrong-password-0123456789"));
}

#[test]
fn backups_are_listed_with_filters_created_with_a_trigger_verified_and_drilled() {
    let w = World::new();
    let t = &w.tokens;
    // History from the CLI: two old backups of the app at known times, one of the docs.
    let jan = w.env.json(&[
        "backup",
        w.db.to_str().unwrap(),
        "--time",
        "2024-01-01T00:00:00Z",
        "--tag",
        "old",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let jun = w.env.json(&[
        "backup",
        w.db.to_str().unwrap(),
        "--time",
        "2024-06-01T00:00:00Z",
    ])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let docs = w.env.backup(&w.docs);
    let mut d = w.start("");

    // A backup before a migration, through the API.
    let job = accepted(
        &d,
        "/api/v1/backups",
        &t.ci,
        &json!({"source": "app", "tags": ["pre-migration"], "trigger": "pre-migration"}),
    );
    assert_eq!(job["kind"], "backup");
    assert_eq!(job["trigger"], "pre-migration");
    assert_eq!(job["source"], "app");
    let done = finished_ok(&d, &job, &t.reader);
    let api = done["backup"]
        .as_str()
        .expect("the job names its backup")
        .to_string();
    assert_eq!(done["result"]["id"], api.as_str());
    let listed = d.get_json("/api/v1/backups?trigger=pre-migration", &t.reader);
    assert_eq!(ids(&listed), l(&[&api]), "{listed}");
    assert_eq!(listed["backups"][0]["tags"], json!(["pre-migration"]));
    assert_eq!(listed["backups"][0]["source"], w.db.display().to_string());
    // The CLI sees the same backup, with the same trigger and tag.
    let cli = w.env.json(&["list"]);
    let row = cli
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == api.as_str())
        .unwrap_or_else(|| panic!("{api} not in lifeboat list: {cli}"));
    assert_eq!(row["trigger"], "pre-migration");
    assert_eq!(row["tags"], json!(["pre-migration"]));
    // Its content is the database's.
    let dir = w.env.path("check");
    std::fs::create_dir_all(&dir).unwrap();
    w.env
        .cmd()
        .args(["restore", &api, "--output"])
        .arg(dir.join("api.db"))
        .assert()
        .success();
    assert_eq!(dump(&dir.join("api.db")), dump(&w.db));

    // Refusals of a create: unknown source (404 naming the configured ones), bad labels,
    // bad bodies; none starts a job.
    let a = d.post("/api/v1/backups", Some(&t.ci), &json!({"source": "nope"}));
    let m = assert_error(&a, 404, "an unknown source");
    assert!(m.contains("nope"), "{m}");
    let hint = a.json()["error"]["hint"].as_str().unwrap_or("").to_string();
    assert!(hint.contains("app") && hint.contains("docs"), "{hint}");
    for bad in [
        json!({"source": "app", "trigger": "pre migration"}),
        json!({"source": "app", "trigger": "x".repeat(65)}),
        json!({"source": "app", "trigger": ""}),
        json!({"source": "app", "trigger": "a\nb"}),
        json!({"source": "app", "tags": ["two words"]}),
        json!({"source": "app", "colour": "red"}),
        json!({"tags": ["no-source"]}),
        json!({"source": 7}),
    ] {
        let a = d.post("/api/v1/backups", Some(&t.ci), &bad);
        assert_error(&a, 400, &format!("POST /api/v1/backups {bad}"));
    }
    let a = call(&d, "post", "/api/v1/backups", Some(&t.ci), b"{not json");
    assert_error(&a, 400, "a body that is not JSON");
    // The longest trigger allowed is 64 characters; that one is taken below.
    let jobs_now = d.get_json("/api/v1/jobs", &t.reader)["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_now, 1, "a refused create started a job");

    // Verify one backup, drill another; follow the drill as server-sent events.
    let verify = accepted(
        &d,
        &format!("/api/v1/backups/{jun}/verify"),
        &t.ci,
        &json!({}),
    );
    assert_eq!(verify["kind"], "verify");
    assert_eq!(verify["backup"], jun.as_str());
    let drill = accepted(
        &d,
        &format!("/api/v1/backups/{api}/drill"),
        &t.ci,
        &json!({}),
    );
    let drill_id = drill["id"].as_str().unwrap().to_string();
    let events = d.get(&format!("/api/v1/jobs/{drill_id}/events"), Some(&t.reader));
    assert_eq!(events.status, 200, "{}", events.text());
    assert!(events
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    let mut seen = Vec::new();
    for block in events.text().split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        assert_eq!(lines.next(), Some("event: job"), "{block}");
        let data = lines
            .next()
            .and_then(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no data in {block}"));
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        assert_eq!(v["id"], drill_id.as_str());
        seen.push(v);
    }
    assert!(!seen.is_empty(), "no events: {}", events.text());
    let last = seen.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{}", events.text());
    assert!(last["finished"].is_string());
    finished_ok(&d, &verify, &t.reader);
    let drilled = finished_ok(&d, &drill, &t.reader);
    assert_eq!(&drilled, last, "the last event is the finished job");
    // Both are recorded: the drill with its measured restore time.
    let shown = d.get_json(&format!("/api/v1/backups/{api}"), &t.reader);
    let rto = shown["backup"]["verified"]["rto_ms"].as_u64();
    assert!(rto.is_some(), "no rto_ms: {shown}");
    assert_eq!(shown["backup"]["verified"]["drill"], true);
    let shown_jun = d.get_json(&format!("/api/v1/backups/{jun}"), &t.reader);
    assert!(
        shown_jun["backup"]["verified"]["verified"].is_string(),
        "{shown_jun}"
    );
    let cli = w.env.json(&["list"]);
    let row = cli
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == api.as_str())
        .unwrap();
    assert_eq!(row["verified"]["rto_ms"].as_u64(), rto, "{row}");
    let status = d.get_json("/api/v1/status", &t.reader);
    assert_eq!(
        status["sources"][0]["last_drill"]["rto_ms"].as_u64(),
        rto,
        "{status}"
    );
    let metrics = d.get("/metrics", Some(&t.reader)).text();
    assert!(
        metrics.contains("lifeboat_drill_last_success{source=\"app\"} 1"),
        "{metrics}"
    );

    // The 64-character trigger is accepted.
    let long = "t".repeat(64);
    let job = accepted(
        &d,
        "/api/v1/backups",
        &t.ci,
        &json!({"source": "docs", "trigger": long}),
    );
    let docs2 = finished_ok(&d, &job, &t.reader)["backup"]
        .as_str()
        .unwrap()
        .to_string();

    // Show: entry and manifest; a bad id is 400, an unknown one 404, `latest` the newest.
    let shown = d.get_json(&format!("/api/v1/backups/{jan}"), &t.reader);
    assert_eq!(shown["backup"]["id"], jan.as_str());
    assert_eq!(shown["backup"]["time"], "2024-01-01T00:00:00Z");
    assert_eq!(shown["manifest"]["id"], jan.as_str());
    assert_eq!(shown["manifest"]["tags"], json!(["old"]));
    assert_eq!(
        shown["manifest"]["source"]["path"],
        w.db.display().to_string()
    );
    assert_eq!(
        d.get_json(
            &format!("/api/v1/backups/{}", jan.to_ascii_uppercase()),
            &t.reader
        )["backup"]["id"],
        jan.as_str()
    );
    for bad in ["not-an-id", "0123", "..%2F..%2Fetc", "iiiiiiiiiiiiii"] {
        let a = d.get(&format!("/api/v1/backups/{bad}"), Some(&t.reader));
        assert_error(&a, 400, &format!("backup id {bad}"));
    }
    let a = d.get("/api/v1/backups/00000000000000", Some(&t.reader));
    assert_error(&a, 404, "an unknown backup");
    for verb in ["verify", "drill"] {
        let a = d.post(
            &format!("/api/v1/backups/00000000000000/{verb}"),
            Some(&t.ci),
            &json!({}),
        );
        assert_error(&a, 404, &format!("{verb} of an unknown backup"));
        let a = d.post(
            &format!("/api/v1/backups/nope/{verb}"),
            Some(&t.ci),
            &json!({}),
        );
        assert_error(&a, 400, &format!("{verb} of a bad id"));
    }
    let latest = d.get_json("/api/v1/backups/latest", &t.reader);
    assert_eq!(latest["backup"]["id"], docs2.as_str(), "{latest}");
    let a = d.get("/api/v1/jobs/j-nope", Some(&t.reader));
    assert_error(&a, 404, "an unknown job");
    let a = d.get("/api/v1/jobs/j-nope/events", Some(&t.reader));
    assert_error(&a, 404, "events of an unknown job");

    // The list and its filters.
    let q = |query: &str| -> Vec<String> {
        ids(&d.get_json(&format!("/api/v1/backups{query}"), &t.reader))
    };
    let all = d.get_json("/api/v1/backups", &t.reader);
    assert_eq!(all["count"], 5);
    assert_eq!(all["total"], 5);
    // Newest first by default, oldest first on asking.
    assert_eq!(q(""), l(&[&docs2, &api, &docs, &jun, &jan]));
    assert_eq!(q("?order=desc"), q(""));
    assert_eq!(q("?order=asc"), l(&[&jan, &jun, &docs, &api, &docs2]));
    assert_eq!(q("?limit=2"), l(&[&docs2, &api]));
    assert_eq!(q("?limit=1&order=asc"), l(&[&jan]));
    assert_eq!(q("?limit=0"), Vec::<String>::new());
    // A source by its name, by its path as configured, by either for the folder.
    assert_eq!(q("?source=app"), l(&[&api, &jun, &jan]));
    assert_eq!(
        q(&format!(
            "?source={}",
            query_value(&w.db.display().to_string())
        )),
        l(&[&api, &jun, &jan])
    );
    assert_eq!(q("?source=docs"), l(&[&docs2, &docs]));
    assert_eq!(
        q(&format!(
            "?source={}",
            query_value(&w.docs.display().to_string())
        )),
        l(&[&docs2, &docs])
    );
    assert_eq!(q("?source=nothing"), Vec::<String>::new());
    assert_eq!(q("?kind=sqlite"), l(&[&api, &jun, &jan]));
    assert_eq!(q("?kind=files"), l(&[&docs2, &docs]));
    assert_eq!(q("?kind=logical").len(), 5);
    assert_eq!(q("?kind=physical"), Vec::<String>::new());
    assert_eq!(q("?tag=old"), l(&[&jan]));
    assert_eq!(q("?tag=pre-migration"), l(&[&api]));
    assert_eq!(q("?trigger=manual"), l(&[&docs, &jun, &jan]));
    assert_eq!(q(&format!("?trigger={long}")), l(&[&docs2]));
    assert_eq!(q("?status=verified"), l(&[&api, &jun]));
    assert_eq!(q("?status=drilled"), l(&[&api]));
    assert_eq!(q("?status=unverified"), l(&[&docs2, &docs, &jan]));
    assert_eq!(q("?until=2024-03-01"), l(&[&jan]));
    assert_eq!(q("?since=2024-03-01&until=2024-12-31"), l(&[&jun]));
    assert_eq!(
        q(&format!(
            "?since={}&until={}",
            query_value("2024-01-01T00:00:00Z"),
            query_value("2024-06-01T00:00:00Z")
        )),
        l(&[&jun, &jan]),
        "since and until are inclusive"
    );
    assert_eq!(q("?since=2025-01-01&source=app&order=asc"), l(&[&api]));
    assert_eq!(
        q("?source=app&status=unverified&until=2024-12-31&tag=old&trigger=manual&kind=sqlite"),
        l(&[&jan])
    );
    for bad in [
        "?order=sideways",
        "?status=maybe",
        "?since=yesterday",
        "?until=2024-13-45",
        "?limit=many",
        "?limit=-1",
        "?colour=red",
    ] {
        let a = d.get(&format!("/api/v1/backups{bad}"), Some(&t.reader));
        assert_error(&a, 400, &format!("GET /api/v1/backups{bad}"));
    }

    // Jobs: newest first, each with its final state.
    let jobs = d.get_json("/api/v1/jobs", &t.reader)["jobs"].clone();
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["source"].is_string() && j["kind"] != "health")
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["backup", "drill", "verify", "backup"], "{jobs}");
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == "succeeded"),
        "{jobs}"
    );
    let s = d.stop(Duration::from_secs(30));
    assert!(s.success(), "{s}");
}

#[test]
fn restores_stay_in_restore_dirs_and_downloads_match_their_checksum() {
    let w = World::new();
    let t = &w.tokens;
    let app = w.env.backup(&w.db);
    let docs = w.env.backup(&w.docs);
    let outside = w.env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, w.restores.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("planted.db"), w.restores.join("planted.db")).unwrap();
    std::fs::create_dir_all(w.restores.join("nested")).unwrap();
    let existing = w.restores.join("existing.db");
    std::fs::write(&existing, "precious bytes").unwrap();
    let d = w.start(&format!("restore_dirs = [\"{}\"]", w.restores.display()));

    // A restore into the folder: the file holds the database's rows.
    let to = w.restores.join("nested/app-restored.db");
    let job = accepted(
        &d,
        &format!("/api/v1/backups/{app}/restore"),
        &t.restorer,
        &json!({"to": to}),
    );
    assert_eq!(job["kind"], "restore");
    assert_eq!(job["backup"], app.as_str());
    let done = finished_ok(&d, &job, &t.ops);
    assert_eq!(done["result"]["path"], to.display().to_string(), "{done}");
    assert_eq!(dump(&to), dump(&w.db));
    assert!(dump(&to).len() >= 200);
    // A folder's backup restores as the folder.
    let to_docs = w.restores.join("docs-restored");
    let job = accepted(
        &d,
        &format!("/api/v1/backups/{docs}/restore"),
        &t.restorer,
        &json!({"to": to_docs}),
    );
    finished_ok(&d, &job, &t.ops);
    assert_eq!(
        std::fs::read_to_string(to_docs.join("sub/notes.md")).unwrap(),
        "# notes\nsecond file\n"
    );
    assert_eq!(
        std::fs::read_to_string(to_docs.join("readme.txt")).unwrap(),
        "the docs of the app\n"
    );
    let jobs_before = d.get_json("/api/v1/jobs", &t.ops)["jobs"]
        .as_array()
        .unwrap()
        .len();

    // Refused: outside the folder, with .., through a link out of it, onto what exists,
    // a relative path, the folder itself.
    let refusals: [(PathBuf, u16, &str); 8] = [
        (outside.join("x.db"), 400, "not inside"),
        (w.restores.join("../outside/y.db"), 400, ".."),
        (w.restores.join("nested/../../outside/z.db"), 400, ".."),
        (w.restores.join("escape/w.db"), 400, "not inside"),
        (w.restores.join("planted.db"), 409, "exists"),
        (existing.clone(), 409, "exists"),
        (PathBuf::from("restores/rel.db"), 400, "absolute"),
        (w.restores.clone(), 400, "not inside"),
    ];
    for (path, status, words) in &refusals {
        let a = d.post(
            &format!("/api/v1/backups/{app}/restore"),
            Some(&t.restorer),
            &json!({ "to": path }),
        );
        let m = assert_error(&a, *status, &format!("restore to {}", path.display()));
        assert!(m.contains(words), "restore to {}: {m}", path.display());
    }
    for (bad, status) in [
        (json!({}), 400),
        (json!({"to": 7}), 400),
        (json!({"to": "/x", "overwrite": true}), 400),
    ] {
        let a = d.post(
            &format!("/api/v1/backups/{app}/restore"),
            Some(&t.restorer),
            &bad,
        );
        assert_error(&a, status, &format!("restore body {bad}"));
    }
    let a = d.post(
        "/api/v1/backups/00000000000000/restore",
        Some(&t.restorer),
        &json!({"to": w.restores.join("u.db")}),
    );
    assert_error(&a, 404, "restore of an unknown backup");
    // Nothing was written anywhere, the existing file is untouched, no job started.
    assert_eq!(common::file_names(&outside), Vec::<String>::new());
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious bytes");
    assert_eq!(
        common::file_names(&w.restores),
        [
            "docs-restored",
            "escape",
            "existing.db",
            "nested",
            "planted.db"
        ]
    );
    assert_eq!(
        d.get_json("/api/v1/jobs", &t.ops)["jobs"]
            .as_array()
            .unwrap()
            .len(),
        jobs_before
    );

    // The download of the SQLite backup: size and checksum in the headers, a database
    // with the source's rows in the body.
    let a = d.get(
        &format!("/api/v1/backups/{app}/download"),
        Some(&t.restorer),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let length: usize = a
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, a.body.len());
    let got = w.env.path("downloaded.db");
    std::fs::write(&got, &a.body).unwrap();
    assert_eq!(
        a.header("x-lifeboat-sha256"),
        Some(sha256_file(&got).as_str())
    );
    assert_eq!(dump(&got), dump(&w.db));
    let disposition = a.header("content-disposition").unwrap_or("");
    assert!(
        disposition.contains(&format!("app.db-{app}")),
        "{disposition}"
    );
    let shown = d.get_json(&format!("/api/v1/backups/{app}"), &t.ops);
    assert_eq!(
        a.header("x-lifeboat-sha256"),
        shown["manifest"]["sqlite"]["sha256"].as_str(),
        "the checksum the backup recorded"
    );
    // The folder downloads as a tar holding its files.
    let a = d.get(&format!("/api/v1/backups/{docs}/download"), Some(&t.ops));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(a.body.len())
    );
    let tar_path = w.env.path("docs.tar");
    std::fs::write(&tar_path, &a.body).unwrap();
    assert_eq!(
        a.header("x-lifeboat-sha256"),
        Some(sha256_file(&tar_path).as_str())
    );
    let disposition = a.header("content-disposition").unwrap_or("");
    assert!(disposition.ends_with(".tar\""), "{disposition}");
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(a.body.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if entry.header().entry_type().is_file() {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.insert(path, text);
        }
    }
    assert_eq!(
        files,
        [
            (
                "docs/readme.txt".to_string(),
                "the docs of the app\n".to_string()
            ),
            (
                "docs/sub/notes.md".to_string(),
                "# notes\nsecond file\n".to_string()
            ),
        ]
        .into_iter()
        .collect()
    );
    // Nothing of the downloads is left in the temporary folder.
    let leftovers: Vec<String> = common::file_names(w.env.dir.path())
        .into_iter()
        .filter(|n| n.starts_with("lifeboat-download-"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    let a = d.get("/api/v1/backups/00000000000000/download", Some(&t.ops));
    assert_error(&a, 404, "download of an unknown backup");
    let a = d.get("/api/v1/backups/bad/download", Some(&t.ops));
    assert_error(&a, 400, "download of a bad id");
}

// ---- configuration refused, TLS, the CLI's trigger ----

#[test]
fn a_token_file_others_can_read_fails_the_config_check() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let config = w.env.path("lifeboat.toml");
    std::fs::write(&config, w.config("")).unwrap();
    let check = |extra: &[(&str, &str)]| {
        let mut c = Daemon::command(&w.env, &config);
        c.arg("--check-config");
        for (k, v) in extra {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(&[("LIFEBOAT_TOKEN_CI", &w.tokens.ci)]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("token ops: admin"), "{out}");
    assert!(out.contains("config OK"), "{out}");
    // Without the variable the ci token names it.
    let (code, out, err) = check(&[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("LIFEBOAT_TOKEN_CI"), "{err}");
    // A token file others can read.
    let reader = w.env.path("reader.token");
    std::fs::set_permissions(&reader, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = check(&[("LIFEBOAT_TOKEN_CI", &w.tokens.ci)]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(&reader.display().to_string()) && err.contains("other users"),
        "{err}"
    );
    assert!(err.contains("chmod 600"), "{err}");
    for token in w.all_tokens() {
        assert!(!out.contains(token) && !err.contains(token), "{out}{err}");
    }
    // The daemon itself refuses to start the same way, and does not listen.
    let out = Daemon::command(&w.env, &config)
        .env("LIFEBOAT_TOKEN_CI", &w.tokens.ci)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other users"));
}

#[test]
fn the_cli_records_a_backup_trigger() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 20));
    let id = env.json(&["backup", db.to_str().unwrap(), "--trigger", "pre-deploy"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = env.backup(&db);
    let list = env.json(&["list"]);
    let trigger_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))["trigger"]
            .clone()
    };
    assert_eq!(trigger_of(&id), "pre-deploy");
    assert_eq!(trigger_of(&plain), "manual");
    for bad in ["a b", "", &"x".repeat(65), "semi;colon"] {
        let (code, out) = env.run(&["backup", db.to_str().unwrap(), "--trigger", bad]);
        assert_eq!(code, 2, "--trigger {bad:?}: {out}");
        assert!(out.contains("--trigger"), "{out}");
    }
    assert_eq!(
        env.json(&["list"]).as_array().unwrap().len(),
        2,
        "a refused --trigger took a backup"
    );
}

/// A daemon started without the harness (it waits over plain HTTP): killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for the TLS test and did not run: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &cert,
        ],
        dir,
    );
    (dir.join(cert), dir.join(key))
}

/// curl with these arguments: exit code and stdout (stderr with it).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl is needed for the TLS test and did not run: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn tls_serves_https_only_and_refuses_a_key_of_another_certificate() {
    let w = World::new();
    let t = &w.tokens;
    let dir = w.env.dir.path();
    let (cert, key) = self_signed(dir, "server");
    let (_, other_key) = self_signed(dir, "other");
    let tls = |key: &Path| {
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        )
    };

    // A key that is not the certificate's: the check and the start both refuse.
    let config = w.env.path("lifeboat.toml");
    std::fs::write(&config, w.config(&tls(&other_key))).unwrap();
    for check in [true, false] {
        let mut c = Daemon::command(&w.env, &config);
        if check {
            c.arg("--check-config");
        }
        let out = c
            .env("LIFEBOAT_TOKEN_CI", &t.ci)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check {check}: {err}");
        assert!(
            err.contains("tls_cert and tls_key do not go together"),
            "{err}"
        );
    }
    assert_ne!(
        curl(&["http://127.0.0.1:{}/"
            .replace("{}", &w.port.to_string())
            .as_str()])
        .0,
        0
    );

    // The right key: HTTPS answers, plain HTTP on the same port does not.
    std::fs::write(&config, w.config(&tls(&key))).unwrap();
    let log = w.env.path("tls.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut p = Process {
        child: Daemon::command(&w.env, &config)
            .env("LIFEBOAT_TOKEN_CI", &t.ci)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
        log,
    };
    let base = format!("https://127.0.0.1:{}", w.port);
    let cacert = cert.display().to_string();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out) = curl(&["--cacert", &cacert, &format!("{base}/api/v1/health/ready")]);
        if code == 0 && out.contains("\"ready\"") {
            break;
        }
        if let Ok(Some(s)) = p.child.try_wait() {
            panic!(
                "the daemon exited ({s}):\n{}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < until,
            "no HTTPS answer ({out}):\n{}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out) = curl(&[
        "--cacert",
        &cacert,
        &format!("{base}/api/v1/status"),
        "-H",
        &format!("Authorization: Bearer {}", t.reader),
    ]);
    assert_eq!(code, 0, "{out}");
    let status: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(status["sources"][0]["name"], "app", "{status}");
    // Without the token, over TLS: 401.
    let (code, out) = curl(&[
        "--cacert",
        &cacert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/api/v1/status"),
    ]);
    assert_eq!((code, out.as_str()), (0, "401"));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, out) = curl(&[
        &format!("http://127.0.0.1:{}/api/v1/status", w.port),
        "-H",
        &format!("Authorization: Bearer {}", t.reader),
    ]);
    assert_ne!(code, 0, "plain HTTP answered: {out}");
    assert!(!out.contains("\"sources\""), "{out}");
    let plain = Daemon::answer(
        agent()
            .get(format!("http://127.0.0.1:{}/api/v1/health/live", w.port))
            .call(),
    );
    assert_eq!(plain.status, 0, "plain HTTP answered: {}", plain.text());
    // A client that does not trust the certificate is refused; the daemon still serves.
    let (code, _) = curl(&[&format!("{base}/api/v1/health/live")]);
    assert_ne!(code, 0, "curl trusted a self-signed certificate");
    let (code, out) = curl(&["--cacert", &cacert, &format!("{base}/api/v1/health/live")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"live\""), "{out}");
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(!log.contains(&t.reader), "{log}");
}
