//! Running `lifeboat daemon` as a real process for a test: a config written into the test's
//! folder, a token file, a free port, and an HTTP client for its API.

use super::Env;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Write a private token file and return (path, token).
pub fn token_file(env: &Env, name: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let token = format!("tok-{name}-{:032x}", rand_u128());
    let path = env.path(&format!("{name}.token"));
    std::fs::write(&path, format!("{token}\n")).expect("token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (path, token)
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    u128::from_le_bytes(b)
}

/// A daemon config on repository `repo`: `top` keys before any table, `daemon` keys in
/// `[daemon]` (which listens on `port`), one admin token `ops` read from `tok`, then `rest`
/// (`[[source]]`, `[retention]`…).
pub fn admin_config(
    repo: &str,
    port: u16,
    tok: &Path,
    top: &str,
    daemon: &str,
    rest: &str,
) -> String {
    format!(
        r#"repo = "{repo}"
{top}
[daemon]
listen = "127.0.0.1:{port}"
{daemon}
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["admin"]

{rest}
"#,
        tok = tok.display(),
    )
}

/// A SQLite database of `rows` rows of random text in table `t`.
pub fn sqlite_db(env: &Env, name: &str, rows: i64) -> PathBuf {
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

pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub home: PathBuf,
    pub dir: PathBuf,
    agent: ureq::Agent,
}

/// An HTTP answer: status, headers (lower-case names) and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Daemon {
    /// The command that runs the daemon with `config` for `env` (HOME, temp dir and state
    /// inside the test's folder).
    pub fn command(env: &Env, config: &Path) -> Command {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("lifeboat"));
        c.current_dir(env.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env.path("home"))
            .env("LIFEBOAT_TEMP_DIR", env.dir.path())
            .arg("--config")
            .arg(config)
            .arg("daemon");
        c
    }

    /// Start the daemon with the config text `toml` (written to `lifeboat.toml` in the test's
    /// folder) listening on `port`; waits until `/api/v1/health/live` answers.
    pub fn start(env: &Env, toml: &str, port: u16) -> Daemon {
        let config = env.path("lifeboat.toml");
        std::fs::write(&config, toml).expect("config");
        Daemon::start_with(env, &config, port, &[])
    }

    pub fn start_with(env: &Env, config: &Path, port: u16, extra_env: &[(&str, &str)]) -> Daemon {
        let mut c = Daemon::command(env, config);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        Daemon::start_command(env, config, port, c)
    }

    /// Start the daemon with a command of the caller's (made by `Daemon::command`, then
    /// changed: variables, limits).
    pub fn start_command(env: &Env, config: &Path, port: u16, mut c: Command) -> Daemon {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = env.path(&format!("daemon-{n}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let child = c
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn daemon");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut d = Daemon {
            child: Some(child),
            port,
            config: config.to_path_buf(),
            log,
            home: env.path("home"),
            dir: env.dir.path().to_path_buf(),
            agent,
        };
        d.wait_until(Duration::from_secs(60), "the API answers", |d| {
            d.get("/api/v1/health/live", None).status == 200
        });
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        match r {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(4 << 30)
                    .read_to_vec()
                    .unwrap_or_default();
                Answer {
                    status,
                    headers,
                    body,
                }
            }
            // No answer at all (refused, reset): status 0.
            Err(e) => Answer {
                status: 0,
                headers: Vec::new(),
                body: e.to_string().into_bytes(),
            },
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Daemon::answer(req.call())
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &serde_json::Value) -> Answer {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Daemon::answer(req.send(body.to_string().as_bytes()))
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let a = self.get(path, Some(token));
        assert_eq!(
            a.status,
            200,
            "GET {path}: {}\n{}",
            a.text(),
            self.log_text()
        );
        a.json()
    }

    /// Wait for a job started by the API to finish; returns its final view.
    pub fn wait_job(&self, id: &str, token: &str, limit: Duration) -> serde_json::Value {
        let until = Instant::now() + limit;
        loop {
            let j = self.get_json(&format!("/api/v1/jobs/{id}"), token)["job"].clone();
            let state = j["state"].as_str().unwrap_or("").to_string();
            if !matches!(state.as_str(), "queued" | "running") {
                return j;
            }
            assert!(
                Instant::now() < until,
                "job {id} still {state}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_until(&mut self, limit: Duration, what: &str, mut ok: impl FnMut(&Daemon) -> bool) {
        let until = Instant::now() + limit;
        loop {
            if ok(self) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "the daemon exited ({status}) before {what}:\n{}",
                        self.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < until,
                "timed out waiting until {what}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then wait for the exit (panics after `limit`). Returns the exit status.
    pub fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return s;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!(
                    "the daemon did not stop within {limit:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no clean-up at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
