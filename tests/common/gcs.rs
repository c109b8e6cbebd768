//! A Google Cloud Storage emulator for integration tests: gcp-storage-emulator (PyPI, pure
//! Python, installed into `.venv-test` by scripts/test.sh), one per `GcsServer`, on 127.0.0.1
//! with a free port, its data in memory, no auth (any bearer token, or none, is accepted).
//!
//! object_store's GCS client uses GCS's XML API for objects (PUT, GET, HEAD, DELETE, ListObjectsV2),
//! of which the emulator only has PUT and GET, and those without the headers object_store needs.
//! So the emulator runs through `gcs_xml_api.py` beside this file, which adds those routes on
//! the emulator's own storage and then starts it as usual (see that file). Limits that remain:
//! the emulator serves one request at a time over HTTP/1.0, so concurrent writers are
//! serialized rather than raced.
//!
//! ```ignore
//! let gcs = GcsServer::start();
//! env.cmd().envs(gcs.env()).args(["--repo", &gcs.url("repo"), "backup", ...])...
//! ```
//!
//! Dropping the `GcsServer` stops the emulator (SIGTERM, SIGKILL after 3 s) and removes its temp
//! dir (with the service-account file that `env()` names). Keep it in a local of the test.
//!
//! Also unsigned JSON API requests (`request`, and `put`/`get`/`delete`/`list` on objects) to
//! look at or change the bucket behind lifeboat's back.

use super::s3::{encode, http, Response};
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the emulator may take to answer (it usually takes well under 1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Startups retried with another port when the emulator exits early (a port taken meanwhile).
const START_ATTEMPTS: u32 = 5;
/// How long SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Ports 31000..32000: above the S3 (10001..29997) and Azurite (30000..31000) harnesses' ports
/// and below Linux's ephemeral range (32768..).
const PORT_MIN: u16 = 31000;
const PORT_SLOTS: u64 = 1000;
const SERVICE_ACCOUNT_FILE: &str = "service-account.json";

/// Ports in use by emulators of this test process (tests run in parallel threads).
static PORTS_IN_USE: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static BUCKETS: AtomicU64 = AtomicU64::new(0);

pub struct GcsServer {
    /// `http://127.0.0.1:PORT`: the base URL of both the JSON and the XML API.
    pub endpoint: String,
    /// A bucket created for this emulator; `new_bucket` makes more.
    pub bucket: String,
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, for `http`.
    addr: String,
    port: u16,
    /// The project number this emulator reports on buckets: tells its answers from those of
    /// anyone else on the port.
    project: String,
}

impl GcsServer {
    /// Start an emulator and create `self.bucket`. Panics (with its log) if it cannot.
    pub fn start() -> GcsServer {
        let emulator = find_emulator();
        let python = interpreter(&emulator);
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-gcs-")
                .tempdir()
                .expect("tempdir for the GCS emulator");
            let port = reserve_port();
            let project = (100_000 + random() % 900_000).to_string();
            let mut child = spawn(&python, dir.path(), port, &project);
            let addr = format!("127.0.0.1:{port}");
            match wait_ready(&mut child, &addr) {
                Ready::Yes => {
                    let mut server = GcsServer {
                        endpoint: format!("http://{addr}"),
                        bucket: String::new(),
                        child,
                        dir,
                        addr,
                        port,
                        project,
                    };
                    server.bucket = server.new_bucket();
                    server.write_service_account();
                    return server;
                }
                Ready::Exited(status) => {
                    // Most likely the port was taken between our check and its bind.
                    last_failure = format!(
                        "attempt {attempt}: gcp-storage-emulator (port {port}) exited with \
                         {status} before it was ready; its log:\n{}",
                        log_tail(dir.path())
                    );
                    release_port(port);
                }
                Ready::TimedOut => {
                    stop(&mut child);
                    release_port(port);
                    panic!(
                        "gcp-storage-emulator on {addr} did not answer within {READY_TIMEOUT:?}; \
                         its log:\n{}",
                        log_tail(dir.path())
                    );
                }
            }
        }
        panic!(
            "gcp-storage-emulator failed to start {START_ATTEMPTS} times; last failure:\n\
             {last_failure}"
        );
    }

    /// What a lifeboat process needs to reach this emulator: add with `cmd.envs(gcs.env())`.
    /// object_store's GCS builder reads the service-account file named by
    /// `GOOGLE_SERVICE_ACCOUNT`, whose `gcs_base_url` points it here and whose `disable_oauth`
    /// makes it send no token; `GOOGLE_ALLOW_HTTP` lets it use plain HTTP.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "GOOGLE_SERVICE_ACCOUNT",
                self.service_account_path().display().to_string(),
            ),
            ("GOOGLE_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// `gs://<bucket>/<prefix>`: a repository location in this emulator's bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("gs://{}/{}", self.bucket, prefix)
    }

    /// The service-account file `env()` names (in the temp dir, removed on drop).
    pub fn service_account_path(&self) -> PathBuf {
        self.dir.path().join(SERVICE_ACCOUNT_FILE)
    }

    fn write_service_account(&self) {
        // object_store needs the three key fields present; with disable_oauth they are unused.
        let json = serde_json::json!({
            "gcs_base_url": self.endpoint,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        std::fs::write(self.service_account_path(), json.to_string())
            .expect("write the service-account file");
    }

    /// Create another empty bucket with a unique name and return its name.
    pub fn new_bucket(&self) -> String {
        let name = format!(
            "lifeboat-{}-{}-{:06x}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed),
            random() & 0xff_ffff
        );
        let body = serde_json::json!({ "name": name }).to_string();
        let r = self.request(
            "POST",
            "/storage/v1/b?project=lifeboat-test",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            200,
            "creating bucket {name} on {}: {}\nemulator log:\n{}",
            self.endpoint,
            r.text(),
            self.log()
        );
        let created: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        assert_eq!(
            created["projectNumber"].as_str(),
            Some(self.project.as_str()),
            "the server on {} is not the emulator we started: {}",
            self.endpoint,
            r.text()
        );
        name
    }

    /// `127.0.0.1:PORT`, for `http`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The emulator's temp dir (its log and the service-account file; removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the emulator's log, to add to a failing test's message.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }

    /// JSON API media upload of `body` as `bucket/name`.
    pub fn put(&self, bucket: &str, name: &str, body: &[u8]) -> Response {
        let path = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            encode(bucket),
            encode(name)
        );
        let headers = [("Content-Type", "application/octet-stream")];
        self.request("POST", &path, &headers, body)
    }

    /// JSON API download of `bucket/name`.
    pub fn get(&self, bucket: &str, name: &str) -> Response {
        self.request("GET", &(object_path(bucket, name) + "?alt=media"), &[], b"")
    }

    /// JSON API delete of `bucket/name`.
    pub fn delete(&self, bucket: &str, name: &str) -> Response {
        self.request("DELETE", &object_path(bucket, name), &[], b"")
    }

    /// Every object name in `bucket` that starts with `prefix`, in name order (JSON API list,
    /// following page tokens).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "/storage/v1/b/{}/o?prefix={}",
                encode(bucket),
                encode(prefix)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&pageToken={}", encode(t)));
            }
            let r = self.request("GET", &path, &[], b"");
            assert_eq!(r.status, 200, "list {bucket}/{prefix}: {}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("list {bucket}/{prefix}: {e}: {}", r.text()));
            for item in v["items"].as_array().into_iter().flatten() {
                names.push(item["name"].as_str().expect("object name").to_string());
            }
            token = v["nextPageToken"].as_str().map(str::to_string);
            if token.is_none() {
                return names;
            }
        }
    }

    /// Any request to the emulator (no auth needed); panics on a connection error (with the
    /// emulator's log). `path` must be percent-encoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http(&self.addr, method, path, headers, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}\nemulator log:\n{}",
                self.endpoint,
                self.log()
            )
        })
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        stop(&mut self.child);
        release_port(self.port);
        // `dir` is removed after this, when the fields are dropped.
    }
}

/// `/storage/v1/b/<bucket>/o/<name>` with the name encoded whole (its slashes too).
pub fn object_path(bucket: &str, name: &str) -> String {
    format!("/storage/v1/b/{}/o/{}", encode(bucket), encode(name))
}

/// `gcp-storage-emulator`: $LIFEBOAT_GCS_EMULATOR, else on PATH, else in this crate's
/// `.venv-test`.
fn find_emulator() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFEBOAT_GCS_EMULATOR").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "LIFEBOAT_GCS_EMULATOR={} is not an executable file; unset it or run scripts/test.sh",
            p.display()
        );
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("gcp-storage-emulator"))
        .find(|p| is_executable(p));
    if let Some(p) = on_path {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/gcp-storage-emulator");
    if is_executable(&venv) {
        return venv;
    }
    let ci = if std::env::var_os("CI").is_some() {
        "CI must run the tests through scripts/test.sh, which installs it. "
    } else {
        ""
    };
    panic!(
        "the GCS test server `gcp-storage-emulator` (PyPI) is not installed: neither \
         $LIFEBOAT_GCS_EMULATOR, nor `gcp-storage-emulator` on PATH, nor {}. {ci}Run \
         scripts/test.sh once (it installs it into .venv-test), or: python3 -m venv .venv-test \
         && .venv-test/bin/pip install gcp-storage-emulator==2026.7.19",
        venv.display()
    );
}

/// The Python that runs the emulator's entry-point script (its `#!` line), which has the
/// emulator's package: `gcs_xml_api.py` imports it.
fn interpreter(emulator: &Path) -> PathBuf {
    let text = std::fs::read(emulator).unwrap_or_default();
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut words = first
        .strip_prefix("#!")
        .unwrap_or_default()
        .split_whitespace();
    let python = match words.next() {
        Some(env) if env.ends_with("/env") => words.next().map(PathBuf::from),
        Some(p) => Some(PathBuf::from(p)),
        None => None,
    };
    let python = python.unwrap_or_else(|| emulator.with_file_name("python3"));
    if python.is_absolute() {
        assert!(
            is_executable(&python),
            "{} (the interpreter of {}) is not executable; reinstall the emulator \
             (scripts/test.sh)",
            python.display(),
            emulator.display()
        );
    }
    python
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A random port in PORT_MIN.. that is free on 127.0.0.1 now and not used by another emulator
/// of this process.
fn reserve_port() -> u16 {
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let port = PORT_MIN + (random() % PORT_SLOTS) as u16;
        if !in_use.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            in_use.push(port);
            return port;
        }
    }
    panic!("found no free port for the GCS emulator on 127.0.0.1 in {PORT_MIN}..");
}

fn release_port(port: u16) {
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    in_use.retain(|&p| p != port);
}

fn spawn(python: &Path, dir: &Path, port: u16, project: &str) -> Child {
    let log = File::create(dir.join("emulator.log")).expect("GCS emulator log file");
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/gcs_xml_api.py");
    let mut cmd = Command::new(python);
    cmd.arg(&launcher)
        .args([
            "start",
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--in-memory",
            &format!("--project-number={project}"),
        ])
        // Nothing of ours (no GOOGLE_*); PYTHONUNBUFFERED so its log is complete when read.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {} {}: {e}",
            python.display(),
            launcher.display()
        )
    })
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Poll the health endpoint (`GET /` -> 200 `OK`) until it answers, with our process alive.
fn wait_ready(child: &mut Child, addr: &str) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        if http(addr, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200) {
            return match child.try_wait() {
                Ok(Some(status)) => Ready::Exited(status),
                _ => Ready::Yes,
            };
        }
        if Instant::now() > deadline {
            return Ready::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// SIGTERM (via `kill`), then SIGKILL after `STOP_GRACE`; always reaps the child.
fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let termed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if termed {
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read(dir.join("emulator.log")).unwrap_or_default();
    let tail = &log[log.len().saturating_sub(8000)..];
    String::from_utf8_lossy(tail).into_owned()
}

/// Random bits from std's per-process random hash keys (no crate needed).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}
