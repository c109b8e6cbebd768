//! A fault-injecting HTTP/1.1 proxy for integration tests: put it between lifeboat and a real
//! server (`AWS_ENDPOINT=proxy.endpoint()`) and it forwards requests, except those its
//! schedule picks for a fault.
//!
//! ```ignore
//! let s3 = S3Server::start();
//! let proxy = FaultProxy::start(s3.addr(), Faults { slow_down_every: 5, ..Faults::default() });
//! env.cmd().envs(s3.env()).env("AWS_ENDPOINT", proxy.endpoint())...
//! assert!(proxy.injected() > 0);
//! proxy.set_down(Down::ServiceUnavailable); // every request now gets 503
//! ```
//!
//! Clients keep connections alive, so faults are per *request*: the proxy parses each request
//! on a client connection (request line, headers, body framed by `Content-Length` or
//! `Transfer-Encoding: chunked`), numbers it in order of arrival (1, 2, ...; PUTs with a body
//! are also numbered among themselves), and the schedule in [`Faults`] decides from those
//! numbers alone: either forward it (over an upstream connection kept for this client
//! connection, reopened when the upstream closes it) and relay the response byte for byte,
//! or inject a fault. Which of several concurrent requests gets which number depends on
//! timing; the pattern (every k-th) does not.
//!
//! Not supported (object_store sends none of them): `Expect: 100-continue`, HTTP/2, TLS.
//!
//! Threads and `std::net` only. Dropping the proxy stops it: no new connections, open ones
//! shut down.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long an idle or silent connection may block a proxy thread.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// What the proxy does when it is down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Down {
    /// Up: the schedule applies.
    #[default]
    No,
    /// Every request is answered `503 Slow Down` (and its connection closed).
    ServiceUnavailable,
    /// Every connection is closed at once, and every request on an open connection is met by
    /// closing it, with no response.
    Refuse,
}

/// The fault schedule. `*_every: k` means the k-th, 2k-th, ... request (0 = never). When
/// several faults fall on one request, the first in this order wins: down, dropped upload,
/// 503, 500, lost response; a delay is added to whichever of these forwards the request.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Every k-th request answered `503 Slow Down` with an S3 XML error and `Connection: close`.
    pub slow_down_every: u64,
    /// Every k-th request answered `500 Internal Error` likewise.
    pub internal_error_every: u64,
    /// Every k-th PUT whose body has at least `drop_upload_min_bytes` and (unless 0) at most
    /// `drop_upload_max_bytes`: read part of its body (half, at most 1 MiB), then close the
    /// connection ("dropped mid-upload"). Closing with unread bytes in the socket sends a
    /// reset, which a client still writing a big body sees at once ("connection reset");
    /// one that had written all of a small body sees the connection end without a response.
    pub drop_upload_every: u64,
    pub drop_upload_min_bytes: u64,
    pub drop_upload_max_bytes: u64,
    /// Every k-th request held `delay_ms` before it is forwarded.
    pub delay_every: u64,
    pub delay_ms: u64,
    /// Every k-th request forwarded, and the upstream's response then thrown away and the
    /// client connection closed: the server did the work, the client never hears of it.
    pub lose_response_every: u64,
    /// Lose the response (as `lose_response_every`) of the first request whose `METHOD target`
    /// contains this, e.g. `"PUT /bucket/repo/backups/"`.
    pub lose_response_at: Option<String>,
    /// The down switch (also `FaultProxy::set_down`).
    pub down: Down,
    /// Go down (`Down::ServiceUnavailable`) at the first request whose `METHOD target`
    /// contains this, and answer it as down: e.g. `"PUT /bucket/repo/backups/"` lets a backup
    /// store its packs and fails it just before its manifest lands.
    pub down_at: Option<String>,
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests read (whole or, for a dropped upload, their head).
    pub requests: u64,
    /// Requests forwarded whose response was relayed.
    pub forwarded: u64,
    pub slow_down: u64,
    pub internal_error: u64,
    pub dropped_uploads: u64,
    pub delayed: u64,
    pub lost_responses: u64,
    /// Connections or requests refused (closed) while down with `Down::Refuse`.
    pub refused: u64,
    /// Requests the upstream did not answer (answered 502 by the proxy; not a fault).
    pub upstream_errors: u64,
}

impl Counts {
    /// Faults injected: every kind above except plain forwarding and upstream errors.
    pub fn injected(&self) -> u64 {
        self.slow_down
            + self.internal_error
            + self.dropped_uploads
            + self.delayed
            + self.lost_responses
            + self.refused
    }
}

struct Shared {
    upstream: String,
    faults: Mutex<Faults>,
    stop: AtomicBool,
    requests: AtomicU64,
    puts: AtomicU64,
    counts: Mutex<Counts>,
    /// One line per injected fault, e.g. `#12 PUT /bucket/repo/data/ab/cd: 503 Slow Down`.
    log: Mutex<Vec<String>>,
    /// One line per request read, e.g. `#12 PUT /bucket/repo/data/ab/cd (Content-Length 4194321)`.
    requests_seen: Mutex<Vec<String>>,
    /// Open sockets (client and upstream), shut down on drop to end their threads.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap());
    }

    fn note(&self, n: u64, head: &Head, what: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("#{n} {} {}: {what}", head.method, head.target));
    }

    fn register(&self, s: &TcpStream) -> Option<u64> {
        let id = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let clone = s.try_clone().ok()?;
        self.sockets.lock().unwrap().insert(id, clone);
        Some(id)
    }

    fn unregister(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.lock().unwrap().remove(&id);
        }
    }
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port) and forward to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            faults: Mutex::new(faults),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
            log: Mutex::new(Vec::new()),
            requests_seen: Mutex::new(Vec::new()),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fault-proxy-accept".into())
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the proxy's accept thread");
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Replace the schedule (request numbering goes on).
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Flip the down switch, keeping the rest of the schedule.
    pub fn set_down(&self, down: Down) {
        self.shared.faults.lock().unwrap().down = down;
    }

    pub fn counts(&self) -> Counts {
        *self.shared.counts.lock().unwrap()
    }

    /// How many faults were injected so far (see `Counts::injected`).
    pub fn injected(&self) -> u64 {
        self.counts().injected()
    }

    /// One line per injected fault, in order.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    /// One line per request read (method, target and body framing), in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests_seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, s) in self.shared.sockets.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        if shared.faults.lock().unwrap().down == Down::Refuse {
            shared.count(|c| c.refused += 1);
            drop(conn);
            continue;
        }
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                let id = s.register(&conn);
                let _ = serve(&s, conn);
                s.unregister(id);
            });
    }
}

/// A parsed request or response head, with its bytes as received.
struct Head {
    raw: Vec<u8>,
    /// Request: method; response: the HTTP version.
    method: String,
    /// Request: target; response: status code.
    target: String,
    /// Names in lowercase.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn status(&self) -> u16 {
        self.target.parse().unwrap_or(0)
    }
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilEof,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Read a head up to its blank line; `None` on a clean end of stream before its first byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = r.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(bad("head too long"));
        }
        let line = &raw[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Stray blank line between messages: allowed, skipped.
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        method,
        target,
        headers,
    }))
}

fn content_length(h: &Head) -> io::Result<Option<u64>> {
    h.header("content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| bad(format!("bad Content-Length {v}")))
        })
        .transpose()
}

fn request_framing(h: &Head) -> io::Result<Framing> {
    Ok(if h.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else {
        match content_length(h)? {
            Some(n) => Framing::Length(n),
            None => Framing::Empty,
        }
    })
}

fn response_framing(request_method: &str, h: &Head) -> io::Result<Framing> {
    let status = h.status();
    Ok(
        if request_method.eq_ignore_ascii_case("HEAD")
            || status / 100 == 1
            || status == 204
            || status == 304
        {
            Framing::Empty
        } else if h.has_token("transfer-encoding", "chunked") {
            Framing::Chunked
        } else {
            match content_length(h)? {
                Some(n) => Framing::Length(n),
                None => Framing::UntilEof,
            }
        },
    )
}

/// Read a body as it is on the wire (chunk headers and trailers included), to pass on as is.
fn read_body(r: &mut impl BufRead, framing: &Framing) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            r.take(*n).read_to_end(&mut raw)?;
            if raw.len() as u64 != *n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Framing::UntilEof => {
            r.read_to_end(&mut raw)?;
        }
        Framing::Chunked => loop {
            let start = raw.len();
            if r.read_until(b'\n', &mut raw)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let line = String::from_utf8_lossy(&raw[start..]).into_owned();
            let hex = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, up to a blank line.
                loop {
                    let start = raw.len();
                    if r.read_until(b'\n', &mut raw)? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    if raw[start..] == *b"\r\n" || raw[start..] == *b"\n" {
                        return Ok(raw);
                    }
                }
            }
            let want = size + 2; // data and its CRLF
            let got = r.take(want).read_to_end(&mut raw)? as u64;
            if got != want {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        },
    }
    Ok(raw)
}

/// An S3-style error response that closes the connection.
fn error_response(
    status: u16,
    reason: &str,
    code: &str,
    message: &str,
    n: u64,
    head: &Head,
) -> Vec<u8> {
    let resource = head.target.split('?').next().unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>fault-proxy-{n}</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy-{n}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// An upstream connection, kept for the requests of one client connection.
struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    id: Option<u64>,
    used: bool,
}

fn connect_upstream(shared: &Shared) -> io::Result<Upstream> {
    let addr: SocketAddr = shared
        .upstream
        .parse()
        .map_err(|e| bad(format!("upstream {}: {e}", shared.upstream)))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let id = shared.register(&s);
    Ok(Upstream {
        reader: BufReader::with_capacity(256 * 1024, s.try_clone()?),
        writer: s,
        id,
        used: false,
    })
}

/// Send one request upstream and read the whole response (interim 1xx responses included).
/// Returns the response bytes and whether the upstream connection may be used again.
fn exchange(up: &mut Upstream, head: &Head, body: &[u8]) -> io::Result<(Vec<u8>, bool)> {
    up.used = true;
    up.writer.write_all(&head.raw)?;
    up.writer.write_all(body)?;
    up.writer.flush()?;
    let mut out = Vec::new();
    loop {
        let resp = read_head(&mut up.reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let framing = response_framing(&head.method, &resp)?;
        let body = read_body(&mut up.reader, &framing)?;
        out.extend_from_slice(&resp.raw);
        out.extend_from_slice(&body);
        let status = resp.status();
        if status / 100 == 1 && status != 101 {
            continue;
        }
        let reusable = !matches!(framing, Framing::UntilEof)
            && !resp.has_token("connection", "close")
            && resp.method != "HTTP/1.0";
        return Ok((out, reusable));
    }
}

/// Forward over the kept upstream connection, or a new one; a kept connection that the
/// upstream closed meanwhile is replaced once.
fn forward(
    shared: &Shared,
    upstream: &mut Option<Upstream>,
    head: &Head,
    body: &[u8],
) -> io::Result<Vec<u8>> {
    for _attempt in 0..2 {
        let reused = upstream.as_ref().is_some_and(|u| u.used);
        if upstream.is_none() {
            *upstream = Some(connect_upstream(shared)?);
        }
        let up = upstream.as_mut().expect("upstream");
        match exchange(up, head, body) {
            Ok((resp, reusable)) => {
                if !reusable {
                    close_upstream(shared, upstream);
                }
                return Ok(resp);
            }
            Err(e) => {
                close_upstream(shared, upstream);
                if !reused {
                    return Err(e);
                }
            }
        }
    }
    Err(bad("upstream closed the connection twice"))
}

fn close_upstream(shared: &Shared, upstream: &mut Option<Upstream>) {
    if let Some(u) = upstream.take() {
        let _ = u.writer.shutdown(Shutdown::Both);
        shared.unregister(u.id);
    }
}

/// Serve one client connection, request after request, until it closes or a fault ends it.
fn serve(shared: &Shared, client: TcpStream) -> io::Result<()> {
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::with_capacity(256 * 1024, client.try_clone()?);
    let mut writer = client;
    let mut upstream: Option<Upstream> = None;
    let result = (|| loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        shared.count(|c| c.requests += 1);
        let line = format!("{} {}", head.method, head.target);
        let faults = {
            let mut f = shared.faults.lock().unwrap();
            if f.down_at
                .as_ref()
                .is_some_and(|p| line.contains(p.as_str()))
            {
                f.down = Down::ServiceUnavailable;
                f.down_at = None;
                drop(f);
                shared.note(n, &head, "the proxy goes down here (down_at)");
                shared.faults.lock().unwrap().clone()
            } else {
                f.clone()
            }
        };
        let every = |k: u64, i: u64| k > 0 && i % k == 0;
        let framing = request_framing(&head)?;
        let body_kind = match framing {
            Framing::Length(len) => format!("Content-Length {len}"),
            Framing::Chunked => "chunked".to_string(),
            _ => "no body".to_string(),
        };
        shared.requests_seen.lock().unwrap().push(format!(
            "#{n} {} {} ({body_kind})",
            head.method, head.target
        ));

        if faults.down == Down::Refuse {
            shared.count(|c| c.refused += 1);
            shared.note(n, &head, "refused (connection closed, no response)");
            return Ok(());
        }
        // Dropped mid-upload: numbered among the PUTs whose body size is in range.
        let upload_size = match framing {
            Framing::Length(len) => len,
            Framing::Chunked => u64::MAX,
            _ => 0,
        };
        if head.method == "PUT"
            && upload_size > 0
            && upload_size >= faults.drop_upload_min_bytes
            && (faults.drop_upload_max_bytes == 0 || upload_size <= faults.drop_upload_max_bytes)
        {
            let p = shared.puts.fetch_add(1, Ordering::SeqCst) + 1;
            if faults.down == Down::No && every(faults.drop_upload_every, p) {
                let part = if upload_size == u64::MAX {
                    16 * 1024
                } else {
                    (upload_size / 2).min(1 << 20)
                };
                let got = io::copy(&mut (&mut reader).take(part), &mut io::sink())?;
                shared.count(|c| c.dropped_uploads += 1);
                shared.note(
                    n,
                    &head,
                    &format!("dropped mid-upload after {got} of {upload_size} body bytes"),
                );
                return Ok(());
            }
        }
        let body = read_body(&mut reader, &framing)?;

        let injected = if faults.down == Down::ServiceUnavailable {
            Some((
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate. (down)",
            ))
        } else if every(faults.slow_down_every, n) {
            Some((
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            ))
        } else if every(faults.internal_error_every, n) {
            Some((
                500,
                "Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            ))
        } else {
            None
        };
        if let Some((status, reason, code, message)) = injected {
            shared.count(|c| {
                if status == 503 {
                    c.slow_down += 1
                } else {
                    c.internal_error += 1
                }
            });
            shared.note(n, &head, &format!("{status} {reason}"));
            writer.write_all(&error_response(status, reason, code, message, n, &head))?;
            writer.flush()?;
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
        if every(faults.delay_every, n) && faults.delay_ms > 0 {
            shared.count(|c| c.delayed += 1);
            shared.note(n, &head, &format!("delayed {} ms", faults.delay_ms));
            std::thread::sleep(Duration::from_millis(faults.delay_ms));
        }
        let response = match forward(shared, &mut upstream, &head, &body) {
            Ok(r) => r,
            Err(e) => {
                shared.count(|c| c.upstream_errors += 1);
                shared.note(n, &head, &format!("upstream failed: {e} (502)"));
                let msg = format!("the upstream failed: {e}");
                writer.write_all(&error_response(
                    502,
                    "Bad Gateway",
                    "BadGateway",
                    &msg,
                    n,
                    &head,
                ))?;
                return Ok(());
            }
        };
        let lose_this = {
            let mut f = shared.faults.lock().unwrap();
            let hit = f
                .lose_response_at
                .as_ref()
                .is_some_and(|p| line.contains(p.as_str()));
            if hit {
                f.lose_response_at = None;
            }
            hit
        };
        if lose_this || every(faults.lose_response_every, n) {
            shared.count(|c| c.lost_responses += 1);
            let status = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
            shared.note(
                n,
                &head,
                &format!("forwarded, response ({status}...) lost, connection closed"),
            );
            return Ok(());
        }
        writer.write_all(&response)?;
        writer.flush()?;
        shared.count(|c| c.forwarded += 1);
        let resp_close = read_head(&mut &response[..])
            .ok()
            .flatten()
            .is_some_and(|h| h.has_token("connection", "close"));
        if head.has_token("connection", "close") || resp_close {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    })();
    close_upstream(shared, &mut upstream);
    result
}
