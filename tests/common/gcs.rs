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

use super::server::{
    self, encode, find_executable, http, in_crate, is_executable, port_free, random,
    server_command, unique_name, PortPool, Response, ServerProcess, TestStore,
};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::AtomicU64;

/// Ports 31000..32000: above the S3 (10001..29997) and Azurite (30000..31000) harnesses' ports
/// and below Linux's ephemeral range (32768..).
const PORT_MIN: u16 = 31000;
const PORT_SLOTS: u64 = 1000;
const SERVICE_ACCOUNT_FILE: &str = "service-account.json";
const LOG: &str = "emulator.log";

/// Ports in use by emulators of this test process (tests run in parallel threads).
static PORTS_IN_USE: PortPool = PortPool::new();
static BUCKETS: AtomicU64 = AtomicU64::new(0);

pub struct GcsServer {
    /// `http://127.0.0.1:PORT`: the base URL of both the JSON and the XML API.
    pub endpoint: String,
    /// A bucket created for this emulator; `new_bucket` makes more.
    pub bucket: String,
    process: ServerProcess,
    /// `127.0.0.1:PORT`, for `http`.
    addr: String,
    port: u16,
    /// The project number this emulator reports on buckets: tells its answers from those of
    /// anyone else on the port.
    project: String,
}

impl GcsServer {
    /// The service-account file `env()` names (in the temp dir, removed on drop).
    pub fn service_account_path(&self) -> PathBuf {
        self.process.dir().join(SERVICE_ACCOUNT_FILE)
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
        let name = unique_name(&BUCKETS);
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

impl TestStore for GcsServer {
    const NAME: &'static str = "gcs";
    /// The emulator's JSON API answers a delete with 200 (GCS itself with 204).
    const DELETED: u16 = 200;

    /// Start an emulator and create `self.bucket`. Panics (with its log) if it cannot.
    fn start() -> GcsServer {
        let emulator = find_emulator();
        let python = interpreter(&emulator);
        // A new project number for each attempt: `new_bucket` checks that the buckets it
        // creates report the last one, i.e. come from the emulator we started.
        let mut project = String::new();
        let (process, addr, port) = server::start(server::Launch {
            name: "gcp-storage-emulator",
            dir_prefix: "lifeboat-gcs-",
            log_name: LOG,
            ports: &PORTS_IN_USE,
            candidate: &|| PORT_MIN + (random() % PORT_SLOTS) as u16,
            free: &port_free,
            addr: &|port| format!("127.0.0.1:{port}"),
            spawn: &mut |dir, port| {
                project = (100_000 + random() % 900_000).to_string();
                spawn(&python, dir, port, &project)
            },
            // The health endpoint (`GET /` -> 200 `OK`), with our process alive.
            ready: &|addr, _| http(addr, "GET", "/", &[], b"").is_ok_and(|r| r.status == 200),
        });
        let mut server = GcsServer {
            endpoint: format!("http://{addr}"),
            bucket: String::new(),
            process,
            addr,
            port,
            project,
        };
        server.bucket = server.new_bucket();
        server.write_service_account();
        server
    }

    /// What a lifeboat process needs to reach this emulator: add with `cmd.envs(gcs.env())`.
    /// object_store's GCS builder reads the service-account file named by
    /// `GOOGLE_SERVICE_ACCOUNT`, whose `gcs_base_url` points it here and whose `disable_oauth`
    /// makes it send no token; `GOOGLE_ALLOW_HTTP` lets it use plain HTTP.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "GOOGLE_SERVICE_ACCOUNT",
                self.service_account_path().display().to_string(),
            ),
            ("GOOGLE_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// `gs://<bucket>/<prefix>`: a repository location in this emulator's bucket.
    fn url(&self, prefix: &str) -> String {
        format!("gs://{}/{}", self.bucket, prefix)
    }

    /// JSON API download of `bucket/name`.
    fn get(&self, bucket: &str, name: &str) -> Response {
        self.request("GET", &(object_path(bucket, name) + "?alt=media"), &[], b"")
    }

    /// JSON API delete of `bucket/name`.
    fn delete(&self, bucket: &str, name: &str) -> Response {
        self.request("DELETE", &object_path(bucket, name), &[], b"")
    }

    /// Every object name in `bucket` that starts with `prefix`, in name order (JSON API list,
    /// following page tokens).
    fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
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

    fn process(&self) -> &ServerProcess {
        &self.process
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    /// GOOGLE_BASE_URL wins over the service account's gcs_base_url.
    fn unreachable_env(&self) -> (&'static str, &'static str) {
        ("GOOGLE_BASE_URL", "http://127.0.0.1:9")
    }

    /// None: the emulator needs no credentials (no OAuth).
    fn secrets(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.process.stop();
        PORTS_IN_USE.release(self.port);
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
    let venv = in_crate(".venv-test/bin/gcp-storage-emulator");
    if let Some(p) = find_executable("LIFEBOAT_GCS_EMULATOR", "gcp-storage-emulator", &venv) {
        return p;
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

fn spawn(python: &Path, dir: &Path, port: u16, project: &str) -> Child {
    let launcher = in_crate("tests/common/gcs_xml_api.py");
    // Nothing of ours (no GOOGLE_*); PYTHONUNBUFFERED so its log is complete when read.
    server_command(python, dir, LOG)
        .arg(&launcher)
        .args([
            "start",
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--in-memory",
            &format!("--project-number={project}"),
        ])
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} {}: {e}",
                python.display(),
                launcher.display()
            )
        })
}
