//! A webhook receiver as a user would write one: a small HTTP server on 127.0.0.1 that
//! checks `X-Lifeboat-Signature` itself (HMAC-SHA256 over `"<t>.<raw body>"` with the shared
//! secret, `v1` compared in constant time, `t` older than 5 minutes refused), answers 401 to
//! a bad signature, and otherwise the status its plan says for the n-th request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How old a signature's time may be.
pub const TOLERANCE_S: i64 = 300;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The signature check (Ok: the signature's time).
    pub verdict: Result<i64, String>,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn event(&self) -> String {
        self.header("x-lifeboat-event").unwrap_or("").to_string()
    }

    pub fn delivery(&self) -> String {
        self.header("x-lifeboat-delivery").unwrap_or("").to_string()
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Check a signature header the way a receiver does; Ok gives its time.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8], now: i64) -> Result<i64, String> {
    let header = header.ok_or("no X-Lifeboat-Signature header")?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| format!("bad t {v:?}"))?),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or("no t= in the signature")?;
    if v1.is_empty() {
        return Err("no v1= in the signature".into());
    }
    if now - t > TOLERANCE_S {
        return Err(format!(
            "signature time {t} is {} s old: a replay?",
            now - t
        ));
    }
    if t - now > TOLERANCE_S {
        return Err(format!("signature time {t} is in the future"));
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    for v in &v1 {
        let Ok(mac) = hex::decode(v) else { continue };
        // Constant time.
        if ring::hmac::verify(&key, &signed, &mac).is_ok() {
            return Ok(t);
        }
    }
    Err("signature mismatch".into())
}

type Plan = Box<dyn Fn(usize) -> u16 + Send + Sync>;

pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// A receiver that checks signatures with `secret` and answers `plan(n)` to its n-th
    /// (0-based) well-signed request.
    pub fn start(secret: &[u8], plan: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let secret = secret.to_vec();
        let plan: Arc<Plan> = Arc::new(Box::new(plan));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (g, plan, secret) = (g.clone(), plan.clone(), secret.clone());
                std::thread::spawn(move || serve(conn, &secret, &plan, &g));
            }
        });
        Receiver { port, got, stop }
    }

    /// Answers 200 to every well-signed request.
    pub fn ok(secret: &[u8]) -> Receiver {
        Receiver::start(secret, |_| 200)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    pub fn events(&self) -> Vec<String> {
        self.received().iter().map(|r| r.event()).collect()
    }

    /// Wait until `ok` holds for what was received (panics with `what` and `log` after
    /// `limit`).
    pub fn wait(
        &self,
        limit: Duration,
        what: &str,
        log: impl Fn() -> String,
        ok: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let until = Instant::now() + limit;
        loop {
            let r = self.received();
            if ok(&r) {
                return r;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting until the receiver on port {} got {what}; it got {:?}\n{}",
                self.port,
                r.iter()
                    .map(|x| (x.event(), x.status, x.verdict.clone()))
                    .collect::<Vec<_>>(),
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, secret: &[u8], plan: &Plan, got: &Mutex<Vec<Received>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return; // The wake-up connection of Drop, or a probe.
    }
    let at = Instant::now();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let verdict = if let Some(n) = find("content-length") {
        let n: usize = n.parse().unwrap_or(0);
        body.resize(n, 0);
        match reader.read_exact(&mut body) {
            Ok(()) => verify(
                secret,
                find("x-lifeboat-signature").as_deref(),
                &body,
                unix_now(),
            ),
            Err(e) => Err(format!("short body: {e}")),
        }
    } else {
        Err("no Content-Length (this receiver reads only sized bodies)".into())
    };
    let status = {
        let mut g = got.lock().expect("lock");
        let n = g.iter().filter(|r| r.verdict.is_ok()).count();
        let status = if verdict.is_ok() { plan(n) } else { 401 };
        g.push(Received {
            at,
            method,
            path,
            headers,
            body,
            verdict,
            status,
        });
        status
    };
    // 0: no timely answer (the sender's time limit is tested): 200, but 3 s late.
    let status = if status == 0 {
        std::thread::sleep(Duration::from_secs(3));
        200
    } else {
        status
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Error",
    };
    let mut conn = conn;
    let _ = conn.write_all(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .as_bytes(),
    );
    let _ = conn.flush();
}
