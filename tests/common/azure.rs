//! A real Azure Blob Storage emulator for integration tests: Azurite (npm `azurite`, pinned
//! 3.35.0, installed into `.ci/node` by scripts/test.sh), one per `AzuriteServer`, blob service
//! only, on 127.0.0.1 with a free port and its data in memory. It enforces Shared Key auth for
//! the fixed development account `devstoreaccount1`.
//!
//! ```ignore
//! let az = AzuriteServer::start();
//! env.cmd().envs(az.env()).args(["--repo", &az.url("repo"), "backup", ...])...
//! ```
//!
//! Dropping the `AzuriteServer` stops the emulator (SIGTERM, SIGKILL after 3 s) and removes its
//! temp dir. Keep it in a local of the test, not in a `static` (statics are never dropped).
//!
//! Also Shared Key signed requests (`request`, and `put`/`get`/`delete`/`list` on blobs) to look
//! at or change the container behind lifeboat's back without any Azure crate: HMAC-SHA256 comes
//! from `ring`, which lifeboat already depends on.

use super::s3::{encode, http, Response};
use base64::Engine;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Azurite's fixed development account and its well-known key (public, not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Any version works: the emulator runs with `--skipApiVersionCheck`.
const API_VERSION: &str = "2021-08-06";

/// How long the emulator may take to answer (it usually takes 0.5-1 s).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Startups retried with another port when the emulator exits early (a port taken meanwhile).
const START_ATTEMPTS: u32 = 5;
/// How long SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Ports 30000..31000: above the S3 harness's ports (10001..29997), below the GCS harness's
/// (31000..32000) and below Linux's ephemeral range (32768..).
const PORT_MIN: u16 = 30000;
const PORT_SLOTS: u64 = 1000;

/// Ports in use by emulators of this test process (tests run in parallel threads).
static PORTS_IN_USE: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static CONTAINERS: AtomicU64 = AtomicU64::new(0);

pub struct AzuriteServer {
    /// `http://127.0.0.1:PORT`: the blob service; the account is the first path segment.
    pub endpoint: String,
    /// A container created for this emulator; `new_container` makes more.
    pub container: String,
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, for `http`.
    addr: String,
    port: u16,
}

impl AzuriteServer {
    /// Start an emulator and create `self.container`. Panics (with its log) if it cannot.
    pub fn start() -> AzuriteServer {
        let azurite = find_azurite();
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-azurite-")
                .tempdir()
                .expect("tempdir for Azurite");
            let port = reserve_port();
            let mut child = spawn(&azurite, dir.path(), port);
            let addr = format!("127.0.0.1:{port}");
            match wait_ready(&mut child, &addr) {
                Ready::Yes => {
                    let mut server = AzuriteServer {
                        endpoint: format!("http://{addr}"),
                        container: String::new(),
                        child,
                        dir,
                        addr,
                        port,
                    };
                    server.container = server.new_container();
                    return server;
                }
                Ready::Exited(status) => {
                    // Most likely the port was taken between our check and its bind.
                    last_failure = format!(
                        "attempt {attempt}: azurite-blob (port {port}) exited with {status} \
                         before it was ready; its log:\n{}",
                        log_tail(dir.path())
                    );
                    release_port(port);
                }
                Ready::TimedOut => {
                    stop(&mut child);
                    release_port(port);
                    panic!(
                        "azurite-blob on {addr} did not answer within {READY_TIMEOUT:?}; \
                         its log:\n{}",
                        log_tail(dir.path())
                    );
                }
            }
        }
        panic!(
            "azurite-blob failed to start {START_ATTEMPTS} times; last failure:\n{last_failure}"
        );
    }

    /// What a lifeboat process needs to reach this emulator: add with `cmd.envs(az.env())`.
    /// object_store's Azure builder reads `AZURE_STORAGE_USE_EMULATOR` (then the service URL
    /// from `AZURITE_BLOB_STORAGE_URL`, path-style, with plain HTTP allowed) and the account
    /// from `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY` (which default to the
    /// development account; set here explicitly).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT.to_string()),
            ("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY.to_string()),
        ]
    }

    /// `az://<container>/<prefix>`: a repository location in this emulator's container.
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{}/{}", self.container, prefix)
    }

    /// Create another empty container with a unique name and return its name.
    pub fn new_container(&self) -> String {
        let name = format!(
            "lifeboat-{}-{}-{:06x}",
            std::process::id(),
            CONTAINERS.fetch_add(1, Ordering::Relaxed),
            random() & 0xff_ffff
        );
        let path = format!("/{ACCOUNT}/{name}");
        let r = self.request("PUT", &path, &[("restype", "container")], &[], b"");
        assert_eq!(
            r.status,
            201,
            "creating container {name} on {}: {}\nemulator log:\n{}",
            self.endpoint,
            r.text(),
            self.log()
        );
        name
    }

    /// `127.0.0.1:PORT` of the blob service, for `http`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The emulator's temp dir (its log; removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the emulator's log, to add to a failing test's message.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }

    /// Signed Put Blob (a block blob) of `body` at `container/name`.
    pub fn put(&self, container: &str, name: &str, body: &[u8]) -> Response {
        let headers = [("x-ms-blob-type", "BlockBlob")];
        self.request("PUT", &blob_path(container, name), &[], &headers, body)
    }

    /// Signed Get Blob.
    pub fn get(&self, container: &str, name: &str) -> Response {
        self.request("GET", &blob_path(container, name), &[], &[], b"")
    }

    /// Signed Delete Blob.
    pub fn delete(&self, container: &str, name: &str) -> Response {
        self.request("DELETE", &blob_path(container, name), &[], &[], b"")
    }

    /// Every blob name in `container` that starts with `prefix`, in the service's order
    /// (List Blobs, following markers).
    pub fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let path = format!("/{ACCOUNT}/{}", encode(container));
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", prefix),
            ];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            let r = self.request("GET", &path, &query, &[], b"");
            assert_eq!(r.status, 200, "list {container}/{prefix}: {}", r.text());
            let xml = r.text();
            for blob in xml_elements(&xml, "Blob") {
                names.extend(xml_elements(blob, "Name").into_iter().map(xml_unescape));
            }
            marker = xml_elements(&xml, "NextMarker")
                .first()
                .map(|m| xml_unescape(m))
                .unwrap_or_default();
            if marker.is_empty() {
                return names;
            }
        }
    }

    /// Any request to the blob service, signed with the account key (Shared Key).
    /// `path` is percent-encoded and starts with `/devstoreaccount1`; `query` is not encoded.
    /// Panics on a connection error (with the emulator's log).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        all.push(("x-ms-date".into(), date));
        all.push(("x-ms-version".into(), API_VERSION.into()));
        let signature = sign(method, path, query, &all, body.len());
        all.push((
            "authorization".into(),
            format!("SharedKey {ACCOUNT}:{signature}"),
        ));
        let mut target = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&format!("{}={}", encode(k), encode(v)));
        }
        let header_refs: Vec<(&str, &str)> =
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http(&self.addr, method, &target, &header_refs, body).unwrap_or_else(|e| {
            panic!(
                "{method} {target} on {}: {e}\nemulator log:\n{}",
                self.endpoint,
                self.log()
            )
        })
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        stop(&mut self.child);
        release_port(self.port);
        // `dir` is removed after this, when the fields are dropped.
    }
}

/// `/devstoreaccount1/<container>/<name>`, each segment of `name` percent-encoded.
pub fn blob_path(container: &str, name: &str) -> String {
    let name: Vec<String> = name.split('/').map(encode).collect();
    format!("/{ACCOUNT}/{}/{}", encode(container), name.join("/"))
}

/// The Shared Key signature of a request (the headers given in lowercase, with x-ms-date).
/// <https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>
fn sign(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(String, String)],
    body_len: usize,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let content_length = if body_len == 0 {
        String::new()
    } else {
        body_len.to_string()
    };
    let mut ms: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    ms.sort();
    let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    // Path-style (emulator) URLs already start with the account, which is prefixed once more.
    let mut resource = format!("/{ACCOUNT}{path}");
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (k, v) in params {
        resource.push_str(&format!("\n{k}:{v}"));
    }
    let to_sign = format!(
        "{method}\n{}\n{}\n{content_length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(ACCOUNT_KEY).expect("account key is base64");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref())
}

/// `azurite-blob`: $LIFEBOAT_AZURITE, else on PATH, else in this crate's `.ci/node`.
fn find_azurite() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFEBOAT_AZURITE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "LIFEBOAT_AZURITE={} is not an executable file; unset it or run scripts/test.sh",
            p.display()
        );
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("azurite-blob"))
        .find(|p| is_executable(p));
    if let Some(p) = on_path {
        return p;
    }
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/node/node_modules/.bin/azurite-blob");
    if is_executable(&local) {
        return local;
    }
    let ci = if std::env::var_os("CI").is_some() {
        "CI must run the tests through scripts/test.sh, which installs it. "
    } else {
        ""
    };
    panic!(
        "the Azure test server `azurite-blob` (npm azurite) is not installed: neither \
         $LIFEBOAT_AZURITE, nor `azurite-blob` on PATH, nor {}. {ci}Run scripts/test.sh once \
         (it installs it into .ci/node), or: mkdir -p .ci/node && cd .ci/node && npm install \
         --no-audit --no-fund azurite@3.35.0",
        local.display()
    );
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
    panic!("found no free port for Azurite on 127.0.0.1 in {PORT_MIN}..");
}

fn release_port(port: u16) {
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    in_use.retain(|&p| p != port);
}

fn spawn(azurite: &Path, dir: &Path, port: u16) -> Child {
    let log = File::create(dir.join("azurite.log")).expect("Azurite log file");
    let mut cmd = Command::new(azurite);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--inMemoryPersistence",
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ])
        // PATH for `#!/usr/bin/env node`; nothing else of ours (no AZURE_*).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", azurite.display()))
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Poll with an unsigned request until Azurite answers it (with 403), and check that the
/// answer comes from an Azurite whose process is ours and still alive.
fn wait_ready(child: &mut Child, addr: &str) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        let answered =
            http(addr, "GET", &format!("/{ACCOUNT}?comp=list"), &[], b"").is_ok_and(|r| {
                r.header("server")
                    .is_some_and(|s| s.starts_with("Azurite-Blob"))
            });
        if answered {
            return match child.try_wait() {
                Ok(Some(status)) => Ready::Exited(status),
                _ => Ready::Yes,
            };
        }
        if Instant::now() > deadline {
            return Ready::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
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
    let log = std::fs::read(dir.join("azurite.log")).unwrap_or_default();
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

/// The texts of the elements `<name>...</name>` in `xml` (no nesting of the same name).
fn xml_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        found.push(&rest[..end]);
        rest = &rest[end + close.len()..];
    }
    found
}

/// The five predefined XML entities (all that blob names in listings use).
fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
