//! What the object-store test servers (`s3.rs`, `azure.rs`, `gcs.rs`) share: finding the
//! server's executable, reserving ports, starting the process in a temp dir (retried with other
//! ports when it exits early), stopping it (SIGTERM, SIGKILL after 3 s), its log, and a tiny
//! HTTP/1.1 client with the XML helpers to read listings — all without any cloud crate.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server may take to answer (they usually take 0.5-1 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Startups retried with other ports when the server exits early (a port taken meanwhile).
const START_ATTEMPTS: u32 = 5;
/// How long SIGTERM may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running server process with its temp dir (data, log, sockets). Dropping it stops the
/// process; the temp dir is removed after that.
pub struct ServerProcess {
    child: Child,
    dir: tempfile::TempDir,
    log_name: &'static str,
}

impl ServerProcess {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server's log, to add to a failing test's message.
    pub fn log(&self) -> String {
        log_tail(self.dir.path(), self.log_name)
    }

    /// SIGTERM (via `kill`), then SIGKILL after `STOP_GRACE`; always reaps the child.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        stop(&mut self.child);
        // `dir` is removed after this, when the fields are dropped.
    }
}

/// What the three object-store test servers have in common: started per test with a bucket
/// (or container) of their own, the variables that point lifeboat at them, and unsigned or
/// signed requests to look at or change the bucket behind lifeboat's back. The scenarios in
/// `store_scenarios.rs` run on any of them.
pub trait TestStore: Sized {
    /// `s3`, `az` or `gcs`: part of passphrases, to find them in stored objects.
    const NAME: &'static str;
    /// The status of a successful `delete`.
    const DELETED: u16;

    /// Start a server and create its bucket. Panics (with the server's log) if it cannot.
    fn start() -> Self;
    /// What a lifeboat process needs to reach this server: add with `cmd.envs(server.env())`.
    fn env(&self) -> Vec<(&'static str, String)>;
    /// A repository location in this server's bucket (`<scheme>://<bucket>/<prefix>`).
    fn url(&self, prefix: &str) -> String;
    /// The object `key` in `bucket`.
    fn get(&self, bucket: &str, key: &str) -> Response;
    /// Delete the object `key` in `bucket`.
    fn delete(&self, bucket: &str, key: &str) -> Response;
    /// Every key in `bucket` that starts with `prefix`, following continuation tokens.
    fn list(&self, bucket: &str, prefix: &str) -> Vec<String>;
    /// The server's process.
    fn process(&self) -> &ServerProcess;
    /// The bucket (or container) created for this server.
    fn bucket(&self) -> &str;
    /// The variable (with its value) that, added to `env()`, points lifeboat at a port where
    /// nothing listens.
    fn unreachable_env(&self) -> (&'static str, &'static str);
    /// Credentials from `env()` that must never show in an error message.
    fn secrets(&self) -> Vec<&'static str>;

    /// The server's process id.
    fn pid(&self) -> u32 {
        self.process().pid()
    }

    /// The server's temp dir (data, log, sockets; removed on drop).
    fn dir(&self) -> &Path {
        self.process().dir()
    }

    /// The end of the server's log, to add to a failing test's message.
    fn log(&self) -> String {
        self.process().log()
    }
}

/// How to start one kind of server, for `start`.
pub struct Launch<'a> {
    /// The server's name in messages, e.g. `weed mini`.
    pub name: &'a str,
    /// The temp dir's name prefix, e.g. `lifeboat-s3-`.
    pub dir_prefix: &'a str,
    /// The log file in the temp dir that `spawn` writes to.
    pub log_name: &'static str,
    /// The ports of this kind of server in use in this process.
    pub ports: &'a PortPool,
    /// A random port (or base port) to try; `free` tells whether it can be used now.
    pub candidate: &'a dyn Fn() -> u16,
    pub free: &'a dyn Fn(u16) -> bool,
    /// `127.0.0.1:PORT` to poll for a port (or base port).
    pub addr: &'a dyn Fn(u16) -> String,
    /// Start the process in the dir with the port; it must write its output to `log_name`.
    pub spawn: &'a mut dyn FnMut(&Path, u16) -> Child,
    /// Does the server on `addr` answer, and is it ours (given our dir)?
    pub ready: &'a dyn Fn(&str, &Path) -> bool,
}

/// Start a server: reserve a port, spawn it in a new temp dir and wait until it answers;
/// retried with other ports when it exits early. Returns the process, its `addr` and its port.
/// Panics with the server's log when it cannot start.
pub fn start(launch: Launch) -> (ServerProcess, String, u16) {
    let name = launch.name;
    let mut last_failure = String::new();
    for attempt in 1..=START_ATTEMPTS {
        let dir = tempfile::Builder::new()
            .prefix(launch.dir_prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir for {name}: {e}"));
        let port = launch
            .ports
            .reserve(launch.candidate, launch.free)
            .unwrap_or_else(|| panic!("found no free ports for {name} on 127.0.0.1"));
        let child = (launch.spawn)(dir.path(), port);
        let addr = (launch.addr)(port);
        let mut process = ServerProcess {
            child,
            dir,
            log_name: launch.log_name,
        };
        match wait_ready(&mut process.child, || {
            (launch.ready)(&addr, process.dir.path())
        }) {
            Ready::Yes => return (process, addr, port),
            Ready::Exited(status) => {
                // Most likely a port taken between our check and its bind: try other ports.
                last_failure = format!(
                    "attempt {attempt}: {name} (port {port}) exited with {status} before it \
                     was ready; its log:\n{}",
                    process.log()
                );
                launch.ports.release(port);
            }
            Ready::TimedOut => {
                process.stop();
                launch.ports.release(port);
                panic!(
                    "{name} on {addr} did not answer within {READY_TIMEOUT:?}; its log:\n{}",
                    process.log()
                );
            }
        }
    }
    panic!("{name} failed to start {START_ATTEMPTS} times; last failure:\n{last_failure}");
}

enum Ready {
    Yes,
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Poll `answers` until it holds, and check that our process is still alive then.
fn wait_ready(child: &mut Child, answers: impl Fn() -> bool) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        if answers() {
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

fn log_tail(dir: &Path, log_name: &str) -> String {
    let log = std::fs::read(dir.join(log_name)).unwrap_or_default();
    let tail = &log[log.len().saturating_sub(8000)..];
    String::from_utf8_lossy(tail).into_owned()
}

/// A new log file `name` in `dir`, as (stdout, stderr) for the server's `Command`.
pub fn log_file(dir: &Path, name: &str) -> (File, File) {
    let log = File::create(dir.join(name))
        .unwrap_or_else(|e| panic!("server log file {}: {e}", dir.join(name).display()));
    (log.try_clone().expect("log file"), log)
}

/// A `Command` for a server in `dir`: nothing of ours in its environment (no AWS_*, AZURE_*,
/// GOOGLE_*) but PATH, HOME and TMPDIR in the dir, which is its working dir too; its output
/// goes to the log file `log_name` in the dir.
pub fn server_command(program: &Path, dir: &Path, log_name: &str) -> Command {
    let (stdout, stderr) = log_file(dir, log_name);
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    cmd
}

/// Ports (or base ports) in use by the servers of one kind in this test process (tests run in
/// parallel threads).
pub struct PortPool(Mutex<Vec<u16>>);

impl PortPool {
    pub const fn new() -> PortPool {
        PortPool(Mutex::new(Vec::new()))
    }

    /// One of up to 200 `candidate`s that is not in use here and is `free`, now in use.
    pub fn reserve(&self, candidate: &dyn Fn() -> u16, free: &dyn Fn(u16) -> bool) -> Option<u16> {
        let mut in_use = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..200 {
            let port = candidate();
            if !in_use.contains(&port) && free(port) {
                in_use.push(port);
                return Some(port);
            }
        }
        None
    }

    pub fn release(&self, port: u16) {
        let mut in_use = self.0.lock().unwrap_or_else(|e| e.into_inner());
        in_use.retain(|&p| p != port);
    }
}

/// Is `port` free on 127.0.0.1 now?
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A server's executable: `$var` (which must then be executable), else `name` on PATH, else
/// `local` (inside this crate, where scripts/test.sh installs it). `None` if none is there.
pub fn find_executable(var: &str, name: &str, local: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "{var}={} is not an executable file; unset it or run scripts/test.sh",
            p.display()
        );
        return Some(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p));
    on_path.or_else(|| is_executable(local).then(|| local.to_path_buf()))
}

pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `path` inside this crate.
pub fn in_crate(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Random bits from std's per-process random hash keys (no crate needed).
pub fn random() -> u64 {
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

/// A unique bucket or container name: `lifeboat-<pid>-<n>-<random>`.
pub fn unique_name(counter: &std::sync::atomic::AtomicU64) -> String {
    format!(
        "lifeboat-{}-{}-{:06x}",
        std::process::id(),
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        random() & 0xff_ffff
    )
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
/// `path` must be already percent-encoded (see `encode`).
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

/// `name` with each of its `/`-separated segments percent-encoded (the slashes kept).
pub fn encode_segments(name: &str) -> String {
    let segments: Vec<String> = name.split('/').map(encode).collect();
    segments.join("/")
}

/// The texts of the elements `<name>...</name>` in `xml` (no nesting of the same name).
pub fn xml_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
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

/// The five predefined XML entities and numeric character references decoded.
pub fn xml_unescape(s: &str) -> String {
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
