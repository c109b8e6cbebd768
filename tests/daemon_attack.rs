//! `lifeboat daemon` under attack: callers without a token or with a low scope, local users
//! beside it, and webhook receivers, each against the real binary over real sockets.

mod common;

use common::daemon::{free_port, token_file, Daemon};
use common::{make_db, Env};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A test's world: a database `app.db` backed up once by the CLI, a reader token (file),
/// an admin token (file) and a backup token (variable `LIFEBOAT_TOKEN_CI`).
struct World {
    env: Env,
    db: PathBuf,
    backup: String,
    reader: String,
    ops: String,
    ci: String,
    port: u16,
}

const CI_TOKEN: &str = "ci-token-7d4c1f0e9b8a6d5c4b3a2f1e0d9c8b7a";

impl World {
    fn new() -> World {
        World::with_db(200)
    }

    fn with_db(rows: u32) -> World {
        let env = Env::new();
        let db = env.path("app.db");
        drop(make_db(&db, rows));
        let backup = env.backup(&db);
        let (_, reader) = token_file(&env, "reader");
        let (_, ops) = token_file(&env, "ops");
        World {
            db,
            backup,
            reader,
            ops,
            ci: CI_TOKEN.into(),
            port: free_port(),
            env,
        }
    }

    /// The config: source `app` (schedule off unless `source_extra` says), the three tokens;
    /// `daemon_extra` goes into `[daemon]`, `tail` at the end.
    fn config(&self, daemon_extra: &str, source_extra: &str, tail: &str) -> String {
        format!(
            r#"repo = "{repo}"
[daemon]
listen = "127.0.0.1:{port}"
health = "off"
{daemon_extra}
[[daemon.token]]
name = "reader"
file = "{reader}"
scopes = ["read"]
[[daemon.token]]
name = "ops"
file = "{ops}"
scopes = ["admin"]
[[daemon.token]]
name = "ci"
env = "LIFEBOAT_TOKEN_CI"
scopes = ["read", "backup"]
[[source]]
name = "app"
path = "{db}"
{source_extra}
{tail}
"#,
            repo = self.env.repo().display(),
            port = self.port,
            reader = self.env.path("reader.token").display(),
            ops = self.env.path("ops.token").display(),
            db = self.db.display(),
        )
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let config = self.env.path("lifeboat.toml");
        std::fs::write(&config, text).unwrap();
        config
    }

    fn start(&self, text: &str) -> Daemon {
        self.start_env(text, &[])
    }

    fn start_env(&self, text: &str, extra: &[(&str, &str)]) -> Daemon {
        let config = self.write_config(text);
        let mut vars = vec![("LIFEBOAT_TOKEN_CI", self.ci.as_str())];
        vars.extend_from_slice(extra);
        let mut d = Daemon::start_with(&self.env, &config, self.port, &vars);
        ready(&mut d);
        d
    }
}

fn ready(d: &mut Daemon) {
    d.wait_until(Duration::from_secs(60), "the daemon is ready", |d| {
        d.get("/api/v1/health/ready", None).status == 200
    });
}

/// A raw connection to the daemon, to send what a client library would not.
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Read from `s` until `done` says the bytes so far are enough, the peer closes, or
/// `limit` passes; returns what was read and whether `done` was met.
fn read_until(s: &mut TcpStream, limit: Duration, done: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
    let until = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if done(&got) {
            return (got, true);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => {
                return (got, false)
            }
            Err(_) => {
                let met = done(&got);
                return (got, met);
            }
        }
    }
}

fn head_done(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

/// The status of a raw HTTP answer (0: none).
fn status_of(b: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(b);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// GET over a raw connection, the head read (the body left unread).
fn raw_get(port: u16, path: &str, token: &str) -> (TcpStream, Vec<u8>) {
    let mut s = connect(port);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let (head, _) = read_until(&mut s, Duration::from_secs(60), head_done);
    (s, head)
}

/// POST on a connection of its own (a route that does not read its body may close a
/// reused one under the client's feet); the status, the JSON answer and `Retry-After`.
fn post_status(d: &Daemon, path: &str, token: &str, body: &Value) -> (u16, Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let r = agent
        .post(d.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .header("Connection", "close")
        .send(body.to_string().as_bytes());
    match r {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let v = serde_json::from_str(&text).unwrap_or_else(|_| json!(text));
            (status, v, retry)
        }
        Err(e) => (0, json!(e.to_string()), None),
    }
}

/// Wait until job `id` runs (holds its source).
fn wait_running(d: &mut Daemon, id: &str, token: &str) {
    d.wait_until(Duration::from_secs(30), "the job runs", |d| {
        d.get_json(&format!("/api/v1/jobs/{id}"), token)["job"]["state"] == "running"
    });
}

/// Idle connections are closed after the head timeout, and the daemon serves no more at
/// once than a share of its open-file limit: before, anyone who could reach the port held
/// a descriptor per connection for ever, until the scheduled backups failed with "Too many
/// open files".
#[test]
fn idle_connections_cannot_starve_the_jobs_of_file_descriptors() {
    let w = World::new();
    let config = w.write_config(&w.config("", r#"schedule = "every 1s""#, ""));
    let mut c = Daemon::command(&w.env, &config);
    c.env("LIFEBOAT_TOKEN_CI", &w.ci);
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon::start_command(&w.env, &config, w.port, c);
    ready(&mut d);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "the limit did not reach the daemon:\n{limits}"
    );
    let completed = |d: &Daemon| d.log_text().matches("event=backup.completed").count();
    d.wait_until(Duration::from_secs(30), "a scheduled backup", |d| {
        completed(d) >= 1
    });

    // The attacker: 400 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..400).map(|_| connect(w.port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    assert!(fds < 200, "the daemon holds {fds} descriptors");
    let before = completed(&d);
    d.wait_until(
        Duration::from_secs(30),
        "backups go on while 400 idle connections are open",
        |d| completed(d) >= before + 2,
    );
    let log = d.log_text();
    assert!(!log.contains("Too many open files"), "{log}");

    // The first connection (served at once) is closed by the daemon, not kept for ever.
    let mut first = idle.into_iter().next().unwrap();
    let started = Instant::now();
    let (got, _) = read_until(&mut first, Duration::from_secs(25), |_| false);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "an idle connection was kept {waited:?} ({} bytes)",
        got.len()
    );
    drop(first);
    // Once the idle ones are closed, the API answers again.
    d.wait_until(Duration::from_secs(60), "the API answers again", |d| {
        d.get("/api/v1/status", Some(&w.reader)).status == 200
    });
}

/// A request without a token is refused from its headers: before, the body was read
/// first, so a few unauthenticated clients sending a body slowly held every request slot
/// of the route and nobody could start a backup.
#[test]
fn a_request_without_a_token_cannot_hold_request_slots_with_a_slow_body() {
    let w = World::new();
    let d = w.start(&w.config("max_requests = 2", "", ""));
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(w.port);
            s.write_all(
                b"POST /api/v1/backups HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"source\":",
            )
            .unwrap();
            s
        })
        .collect();
    // Each is answered 401 at once, without the rest of its body.
    for s in &mut slow {
        let (head, done) = read_until(s, Duration::from_secs(5), head_done);
        assert!(done, "no answer to a slow unauthenticated body: {head:?}");
        assert_eq!(status_of(&head), 401, "{}", String::from_utf8_lossy(&head));
    }
    // A caller with a token gets a backup started, within seconds.
    let mut s = connect(w.port);
    let body = json!({"source": "app", "trigger": "pre-migration"}).to_string();
    write!(
        s,
        "POST /api/v1/backups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        w.ci,
        body.len()
    )
    .unwrap();
    let (head, done) = read_until(&mut s, Duration::from_secs(5), head_done);
    assert!(done, "the backup request waited behind slow clients");
    assert_eq!(status_of(&head), 202, "{}", String::from_utf8_lossy(&head));
    drop(slow);
    drop(d);
}

/// A token with the backup scope cannot queue jobs without end (each waited on a thread of
/// its own): one waits per source and kind, the next is answered 429 with Retry-After.
#[test]
fn the_api_queues_at_most_one_job_per_source_and_kind() {
    let w = World::new();
    let mut d = w.start(&w.config("", r#"before = "sleep 3""#, ""));
    let (status, v, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202, "{v}");
    wait_running(&mut d, v["job"]["id"].as_str().unwrap(), &w.reader);
    let mut statuses = vec![status];
    for _ in 0..9 {
        let (status, v, retry) =
            post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
        if status == 429 {
            assert_eq!(retry.as_deref(), Some("5"), "{v}");
            let m = v["error"]["message"].as_str().unwrap_or("");
            assert!(m.contains("waiting for its turn"), "{v}");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..2], [202, 202], "{statuses:?}");
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    // The same for verifies: one waits (behind the backups), the next is refused.
    let verify = format!("/api/v1/backups/{}/verify", w.backup);
    let (first, _, _) = post_status(&d, &verify, &w.ci, &json!({}));
    let (second, v, _) = post_status(&d, &verify, &w.ci, &json!({}));
    assert_eq!((first, second), (202, 429), "{v}");
    let jobs = d.get_json("/api/v1/jobs", &w.reader)["jobs"].clone();
    assert_eq!(jobs.as_array().map(|j| j.len()), Some(3), "{jobs}");
    // Once they ran, backups are taken again.
    for j in jobs.as_array().unwrap() {
        let done = d.wait_job(
            j["id"].as_str().unwrap(),
            &w.reader,
            Duration::from_secs(60),
        );
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let (status, _, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202);
}

/// `before` and `after` commands do not inherit the repository's passphrase, nor the
/// variables holding the API's tokens or a webhook's secret.
#[test]
fn before_and_after_commands_do_not_inherit_secrets() {
    let env = Env::new();
    let pass = "correct-horse-battery-staple-4f1e";
    env.cmd()
        .env("LIFEBOAT_PASSWORD", pass)
        .args([
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
    let db = env.path("app.db");
    drop(make_db(&db, 50));
    let (_, reader) = token_file(&env, "reader");
    let (_, ops) = token_file(&env, "ops");
    let w = World {
        db,
        backup: String::new(),
        reader,
        ops,
        ci: CI_TOKEN.into(),
        port: free_port(),
        env,
    };
    let secret = "webhook-secret-0a1b2c3d4e5f6a7b";
    let (before, after) = (w.env.path("before.env"), w.env.path("after.env"));
    let text = w
        .config(
            "",
            &format!(
                "before = \"env > '{}'\"\nafter = \"env > '{}'\"",
                before.display(),
                after.display()
            ),
            &format!(
                "[[daemon.webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_env = \"HOOK_SECRET\"\nevents = [\"drill.passed\"]\n",
                free_port()
            ),
        );
    let d = w.start_env(
        &text,
        &[("LIFEBOAT_PASSWORD", pass), ("HOOK_SECRET", secret)],
    );
    let (status, v, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202, "{v}");
    let job = d.wait_job(
        v["job"]["id"].as_str().unwrap(),
        &w.reader,
        Duration::from_secs(60),
    );
    // The daemon itself still had the passphrase: the encrypted backup was taken.
    assert_eq!(job["state"], "succeeded", "{job}");
    for (file, status) in [(&before, ""), (&after, "ok")] {
        let seen = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{} was not written: {e}", file.display()));
        assert!(seen.contains("LIFEBOAT_SOURCE_NAME=app"), "{seen}");
        assert!(
            seen.contains(&format!("LIFEBOAT_BACKUP_STATUS={status}\n")),
            "{seen}"
        );
        for (what, value) in [
            ("the passphrase", pass),
            ("a token", CI_TOKEN),
            ("a webhook secret", secret),
        ] {
            assert!(
                !seen.contains(value),
                "{what} reached {}:\n{seen}",
                file.display()
            );
        }
        assert!(!seen.contains("LIFEBOAT_PASSWORD="), "{seen}");
    }
}

/// The hash in the names of a daemon's state files, as the daemon makes it.
fn state_key(config: &Path) -> String {
    let canonical = std::fs::canonicalize(config).unwrap();
    hex::encode(&blake3::hash(canonical.display().to_string().as_bytes()).as_bytes()[..8])
}

/// A state folder made beforehand with room for others (a `mkdir` of 0777) is made 0700,
/// and a link someone left in it in place of the delivery log is not followed: before, the
/// daemon appended to whatever file the link named.
#[test]
fn a_state_folder_open_to_others_is_closed_and_links_in_it_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let state = w.env.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let text = w.config(
        &format!("state_dir = \"{}\"", state.display()),
        "",
        &format!(
            "[[daemon.webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nattempts = 1\nevents = [\"backup.completed\"]\n",
            free_port()
        ),
    );
    let config = w.write_config(&text);
    let victim = w.env.path("victim.txt");
    std::fs::write(&victim, "the victim's content\n").unwrap();
    let log_link = state.join(format!("daemon-{}-webhooks.log", state_key(&config)));
    std::os::unix::fs::symlink(&victim, &log_link).unwrap();

    let mut d = w.start(&text);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the state folder is {mode:o}");
    let (status, v, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202, "{v}");
    let job = d.wait_job(
        v["job"]["id"].as_str().unwrap(),
        &w.reader,
        Duration::from_secs(60),
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    d.wait_until(Duration::from_secs(30), "the delivery failed", |d| {
        d.get_json("/api/v1/webhooks/deliveries", &w.ops)["deliveries"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the victim's content\n",
        "the daemon wrote through the link"
    );
    assert!(std::fs::symlink_metadata(&log_link)
        .unwrap()
        .file_type()
        .is_symlink());
    let log = d.log_text();
    assert!(log.contains("now 700"), "{log}");
}

/// One HTTP request received by a receiver of the test's: its body.
fn receive_one(listener: &std::net::TcpListener) -> Vec<u8> {
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < until, "no webhook arrived");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    let (mut got, _) = read_until(&mut s, Duration::from_secs(30), head_done);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let (rest, _) = read_until(&mut s, Duration::from_secs(30), |b| {
        b.len() + got.len() >= head_end + len
    });
    got.extend_from_slice(&rest);
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    got[head_end..].to_vec()
}

/// A Slack webhook's text escapes `<`, `>` and `&`: a backup of a path that names
/// `<!channel>` (or `<mailto:a@evil|a link>`) is not a mention of everyone in Slack.
#[test]
fn slack_messages_do_not_carry_mentions_or_links_from_names() {
    let w = World::new();
    let odd = w
        .env
        .path("x<!channel>&<mailto:a@evil.example|restore here>.db");
    drop(make_db(&odd, 10));
    let id = w.env.backup(&odd);
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = w.config(
        "",
        "",
        &format!(
            "[[daemon.webhook]]\nurl = \"http://127.0.0.1:{}/slack\"\nformat = \"slack\"\nevents = [\"verify.passed\"]\n",
            receiver.local_addr().unwrap().port()
        ),
    );
    let d = w.start(&text);
    let (status, v, _) = post_status(
        &d,
        &format!("/api/v1/backups/{id}/verify"),
        &w.ci,
        &json!({}),
    );
    assert_eq!(status, 202, "{v}");
    let body = receive_one(&receiver);
    let msg: Value = serde_json::from_slice(&body).unwrap();
    let text = msg["text"].as_str().unwrap();
    assert!(text.contains("verify.passed"), "{text}");
    assert!(
        text.contains("x&lt;!channel&gt;&amp;&lt;mailto:a@evil.example|restore here&gt;.db"),
        "{text}"
    );
    assert!(
        !text.contains("<!channel>") && !text.contains("<https://"),
        "{text}"
    );
    drop(d);
}

/// Event streams are limited in number, and one ends when the token that opened it is
/// taken out of the config (SIGHUP): before, a revoked token kept following its job.
#[test]
fn event_streams_are_limited_and_end_when_their_token_is_revoked() {
    let w = World::new();
    let text = w.config("", r#"before = "sleep 30""#, "");
    let mut d = w.start(&text);
    let (status, v, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202, "{v}");
    let path = format!("/api/v1/jobs/{}/events", v["job"]["id"].as_str().unwrap());
    let mut streams = Vec::new();
    for i in 0..32 {
        let (s, head) = raw_get(w.port, &path, &w.reader);
        assert_eq!(
            status_of(&head),
            200,
            "stream {i}: {}",
            String::from_utf8_lossy(&head)
        );
        streams.push(s);
    }
    let (_, head) = raw_get(w.port, &path, &w.ops);
    let head = String::from_utf8_lossy(&head).to_string();
    assert_eq!(status_of(head.as_bytes()), 429, "the 33rd stream: {head}");
    assert!(head.to_lowercase().contains("retry-after: 5"), "{head}");

    // The reader's token goes; its streams end (the last chunk of the body arrives).
    let without_reader = text.replace(
        &format!(
            "[[daemon.token]]\nname = \"reader\"\nfile = \"{}\"\nscopes = [\"read\"]\n",
            w.env.path("reader.token").display()
        ),
        "",
    );
    assert_ne!(without_reader, text);
    std::fs::write(&d.config, without_reader).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_until(
        Duration::from_secs(10),
        "the reader token is refused",
        |d| d.get("/api/v1/status", Some(&w.reader)).status == 401,
    );
    for (i, s) in streams.iter_mut().enumerate() {
        let (got, ended) = read_until(s, Duration::from_secs(5), |b| {
            b.windows(5).any(|w| w == b"0\r\n\r\n")
        });
        assert!(
            ended,
            "stream {i} still open after its token was revoked: {}",
            String::from_utf8_lossy(&got)
        );
    }
    // Their places are free again.
    let (_, head) = raw_get(w.port, &path, &w.ops);
    assert_eq!(status_of(&head), 200, "{}", String::from_utf8_lossy(&head));
}

/// Downloads at once are limited: each keeps a restored copy of its backup on disk until
/// it is sent, so a token could fill the disk with parallel downloads of a large backup.
#[test]
fn downloads_at_once_are_limited() {
    let env = Env::new();
    let db = env.path("big.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE t(b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 6000) INSERT INTO t SELECT randomblob(4096) FROM n;",
        )
        .unwrap();
    }
    let backup = env.backup(&db);
    let (_, reader) = token_file(&env, "reader");
    let (_, ops) = token_file(&env, "ops");
    let w = World {
        db,
        backup,
        reader,
        ops,
        ci: CI_TOKEN.into(),
        port: free_port(),
        env,
    };
    let mut d = w.start(&w.config("", "", ""));
    let path = format!("/api/v1/backups/{}/download", w.backup);
    // Two downloads whose clients read nothing past the head: 23 MiB do not fit in the
    // socket buffers, so both stay under way.
    let (a, head) = raw_get(w.port, &path, &w.ops);
    assert_eq!(status_of(&head), 200, "{}", String::from_utf8_lossy(&head));
    let (b, head) = raw_get(w.port, &path, &w.ops);
    assert_eq!(status_of(&head), 200, "{}", String::from_utf8_lossy(&head));
    let (_, head) = raw_get(w.port, &path, &w.ops);
    let text = String::from_utf8_lossy(&head).to_string();
    assert_eq!(status_of(&head), 429, "a third download at once: {text}");
    assert!(text.to_lowercase().contains("retry-after: 5"), "{text}");
    // When one ends, the next is served, whole.
    drop(a);
    let mut size = 0;
    d.wait_until(Duration::from_secs(60), "a download is served again", |d| {
        let a = d.get(&path, Some(&w.ops));
        size = a.body.len();
        a.status == 200
    });
    assert!(size > 20 << 20, "{size} bytes");
    drop(b);
}

/// An API restore that waits for its turn checks its target again when it runs: before,
/// a folder on the way replaced meanwhile by a link out of restore_dirs (by anyone who may
/// write there) sent the restored file wherever the link pointed.
#[test]
fn a_restore_that_waited_checks_its_target_again() {
    let w = World::new();
    let restores = w.env.path("restores");
    let sub = restores.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let outside = w.env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let text = w.config(
        &format!("restore_dirs = [\"{}\"]", restores.display()),
        r#"before = "sleep 3""#,
        "",
    );
    let mut d = w.start(&text);
    // A backup holds the source for 3 s: the restore waits behind it.
    let (status, v, _) = post_status(&d, "/api/v1/backups", &w.ci, &json!({"source": "app"}));
    assert_eq!(status, 202, "{v}");
    wait_running(&mut d, v["job"]["id"].as_str().unwrap(), &w.reader);
    let (status, r, _) = post_status(
        &d,
        &format!("/api/v1/backups/{}/restore", w.backup),
        &w.ops,
        &json!({"to": sub.join("copy.db")}),
    );
    assert_eq!(status, 202, "{r}");
    assert_eq!(r["job"]["state"], "queued", "{r}");
    std::fs::rename(&sub, w.env.path("sub-moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &sub).unwrap();
    let job = d.wait_job(
        r["job"]["id"].as_str().unwrap(),
        &w.ops,
        Duration::from_secs(60),
    );
    assert!(
        !outside.join("copy.db").exists(),
        "the restore went out of restore_dirs: {job}"
    );
    assert_eq!(job["state"], "failed", "{job}");
    let e = job["error"].as_str().unwrap_or("");
    assert!(e.contains("restore_dirs"), "{job}");
}

/// A PostgreSQL source written with its password in the URI (or as `password=`): a read
/// token saw the password in `/api/v1/sources`, the status and the status page, and
/// `--check-config` printed it.
#[test]
fn a_postgres_password_in_a_source_uri_is_never_shown() {
    let w = World::new();
    let tail = r#"[[source]]
name = "pg"
path = "postgres://app:S3cretPw-in-uri@127.0.0.1:9/appdb"
[[source]]
name = "pg2"
path = "postgres://app@127.0.0.1:9/other?password=S3cretPw-in-query&sslmode=disable"
"#;
    let text = w.config("", "", tail);
    let d = w.start(&text);
    let secrets = ["S3cretPw-in-uri", "S3cretPw-in-query"];
    let sources = d.get_json("/api/v1/sources", &w.reader);
    assert_eq!(sources["sources"][1]["name"], "pg", "{sources}");
    assert_eq!(
        sources["sources"][1]["path"], "postgres://app@127.0.0.1:9/appdb",
        "{sources}"
    );
    let status = d.get("/api/v1/status", Some(&w.reader));
    let page = d.get("/", Some(&w.reader));
    assert_eq!((status.status, page.status), (200, 200));
    assert!(
        page.text().contains("postgres://app@127.0.0.1:9/other"),
        "{}",
        page.text()
    );
    let check = w
        .env
        .cmd()
        .env("LIFEBOAT_TOKEN_CI", CI_TOKEN)
        .arg("--config")
        .arg(&d.config)
        .args(["daemon", "--check-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        printed.contains("source pg (postgres://app@127.0.0.1:9/appdb)"),
        "{printed}"
    );
    for (what, text) in [
        ("/api/v1/sources", sources.to_string()),
        ("/api/v1/status", status.text()),
        ("the status page", page.text()),
        ("--check-config", printed),
        ("the log", d.log_text()),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows the password {s}:\n{text}");
        }
    }
}

/// Objects planted under `backups/` that do not authenticate are read once, not at every
/// refresh: before, each refresh read every one of them twice (and opened the repository
/// again, a key derivation), so a bucket writer could make the daemon read and log without
/// end.
#[test]
fn forged_manifests_are_read_once_not_at_every_refresh() {
    let w = World::new();
    let alphabet = b"0123456789abcdefghjkmnpqrstvwxyz";
    let stem = &w.backup[..w.backup.len() - 2];
    let mut forged = Vec::new();
    for (i, a) in alphabet.iter().enumerate().take(20) {
        let id = format!("{stem}{}{}", *a as char, alphabet[(i * 7) % 32] as char);
        if id != w.backup {
            std::fs::write(w.env.repo().join("backups").join(&id), b"not a manifest").unwrap();
            forged.push(id);
        }
    }
    let mut d = w.start(&w.config("refresh = \"1s\"", "", ""));
    let left_out = |d: &Daemon| d.log_text().matches("left out").count();
    d.wait_until(
        Duration::from_secs(30),
        "the forged manifests are met",
        |d| left_out(d) >= forged.len(),
    );
    // Three more refreshes: nothing is read again.
    std::thread::sleep(Duration::from_secs(2));
    let after_first = left_out(&d);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        left_out(&d),
        after_first,
        "forged manifests were read again:\n{}",
        d.log_text()
    );
    assert!(after_first <= 2 * forged.len(), "{after_first}");
    // The real backup is listed, none of the forged ones.
    let list = d.get_json("/api/v1/backups", &w.reader);
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(list["backups"][0]["id"], w.backup.as_str());
    // A backup made meanwhile still appears at the next refresh.
    w.env.backup(&w.db);
    d.wait_until(Duration::from_secs(30), "a new backup is listed", |d| {
        d.get_json("/api/v1/backups", &w.reader)["count"] == 2
    });
}

/// A verify whose (empty) body arrives after its head keeps the connection usable: before,
/// the daemon answered without reading it and closed the connection, so a client reusing
/// it (as HTTP libraries do) failed its next request.
#[test]
fn a_verify_body_sent_late_does_not_break_the_connection() {
    let w = World::new();
    let d = w.start(&w.config("", "", ""));
    let mut s = connect(w.port);
    for (i, pause) in [200u64, 0].into_iter().enumerate() {
        let head = format!(
            "POST /api/v1/backups/{}/verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
            w.backup, w.ci
        );
        let sent = s.write_all(head.as_bytes()).and_then(|()| {
            std::thread::sleep(Duration::from_millis(pause));
            s.write_all(b"{}")
        });
        assert!(sent.is_ok(), "request {i} could not be sent: {sent:?}");
        let (got, done) = read_until(&mut s, Duration::from_secs(10), |b| {
            head_done(b) && String::from_utf8_lossy(b).contains("}}")
        });
        assert!(done, "request {i}: {}", String::from_utf8_lossy(&got));
        let status = status_of(&got);
        assert!(
            [202, 429].contains(&status),
            "request {i}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    drop(d);
}

/// A caller with a token (here only the read scope, which may not even start the job it
/// asks for) cannot hold request slots by sending a body slowly: the body must come
/// within the head's time limit. Before, the body was read without a time limit before
/// the scope was checked, so two such connections held both request slots for ever and
/// nobody could start a backup.
#[test]
fn a_token_holder_cannot_hold_request_slots_with_a_slow_body() {
    let w = World::new();
    let d = w.start(&w.config("max_requests = 2", "", ""));
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(w.port);
            write!(
                s,
                "POST /api/v1/backups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"source\":",
                w.reader
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The slow callers keep sending a byte now and then.
    let started = Instant::now();
    let mut s = connect(w.port);
    let body = json!({"source": "app", "trigger": "pre-migration"}).to_string();
    write!(
        s,
        "POST /api/v1/backups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        w.ci,
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut done = false;
    while started.elapsed() < Duration::from_secs(30) && !done {
        for s in &mut slow {
            let _ = s.write_all(b" ");
        }
        let (h, d) = read_until(&mut s, Duration::from_secs(1), head_done);
        head.extend_from_slice(&h);
        done = d || head_done(&head);
    }
    let waited = started.elapsed();
    assert!(
        done,
        "the backup request waited {waited:?} behind slow bodies"
    );
    assert_eq!(status_of(&head), 202, "{}", String::from_utf8_lossy(&head));
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    // The slow callers were answered (and not with a job started for them).
    for s in &mut slow {
        let (h, _) = read_until(s, Duration::from_secs(5), head_done);
        let code = status_of(&h);
        assert!(
            code == 400 || code == 403 || code == 408,
            "{}",
            String::from_utf8_lossy(&h)
        );
    }
    drop(d);
}

/// A caller without a token cannot keep a connection by asking again and again within the
/// head's time limit: a 401 closes the connection. Before, 16 clients each repeating an
/// unauthenticated GET every 2 s held all the connections a daemon with 64 open files
/// serves, and a caller with a token waited for ever in the listen queue.
#[test]
fn a_caller_without_a_token_cannot_keep_connections_by_asking_again() {
    let w = World::new();
    let config = w.write_config(&w.config("", "", ""));
    let mut c = Daemon::command(&w.env, &config);
    c.env("LIFEBOAT_TOKEN_CI", &w.ci);
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut d = Daemon::start_command(&w.env, &config, w.port, c);
    ready(&mut d);
    // 16 connections (a quarter of 64; the harness may keep one of its own), each asking
    // without a token.
    let ask = |s: &mut TcpStream| -> u16 {
        if s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_err()
        {
            return 0;
        }
        let (h, _) = read_until(s, Duration::from_secs(2), |b| {
            head_done(b) && b.ends_with(b"}")
        });
        status_of(&h)
    };
    let mut held: Vec<TcpStream> = (0..16).map(|_| connect(w.port)).collect();
    let answered = held.iter_mut().map(&ask).filter(|c| *c == 401).count();
    assert!(answered >= 15, "{answered} answered 401");
    let started = Instant::now();
    let mut legit = connect(w.port);
    write!(
        legit,
        "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        w.reader
    )
    .unwrap();
    let mut head = Vec::new();
    let mut kept = 0;
    while started.elapsed() < Duration::from_secs(30) && !head_done(&head) {
        kept = 0;
        for s in &mut held {
            if ask(s) == 401 {
                kept += 1;
            }
        }
        let (h, _) = read_until(&mut legit, Duration::from_secs(1), head_done);
        head.extend_from_slice(&h);
    }
    assert!(
        head_done(&head),
        "a caller with a token waited {:?} while {kept} unauthenticated connections were kept",
        started.elapsed()
    );
    assert_eq!(status_of(&head), 200, "{}", String::from_utf8_lossy(&head));
    assert_eq!(kept, 0, "{kept} connections were kept after a 401");
}

/// A state folder that is a link (someone who can write where the folder is named put it
/// there, in place of the folder) to a folder open to others is refused, not narrowed:
/// before, a daemon running as root made whatever folder the link named (say /etc or
/// /usr/bin) 0700 at its next start.
#[test]
fn a_state_folder_linked_elsewhere_is_not_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let shared = w.env.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = w.env.path("state");
    std::os::unix::fs::symlink(&shared, &state).unwrap();
    let config = w.write_config(&w.config(&format!("state_dir = \"{}\"", state.display()), "", ""));
    let mut c = Daemon::command(&w.env, &config);
    c.env("LIFEBOAT_TOKEN_CI", &w.ci)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let started = Instant::now();
    let exited = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if exited.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o755,
        "the folder the link names was made {mode:o}: {err}"
    );
    let status = exited.expect("the daemon started on a linked state folder open to others");
    assert!(!status.success(), "{err}");
    assert!(err.contains("link"), "{err}");
}
