//! Webhooks: each event is posted as JSON (or a Slack-compatible `{"text": …}`) to every
//! endpoint that wants it, signed like Stripe's and GitHub's:
//! `X-Lifeboat-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, so a
//! receiver can check who sent it and refuse a replay (an old `t`). A failed delivery is
//! retried with exponential backoff; every attempt is written to the delivery log.

use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook endpoint: the key of its signature is read once, kept in memory only.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Event names sent; empty: all.
    pub events: Vec<String>,
    pub slack: bool,
    pub attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({})", redact_url(&self.url))
    }
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty()
            || self
                .events
                .iter()
                .any(|e| e == event || (e == "failures" && is_failure(event)))
    }
}

/// A URL as it may be shown: scheme, host and port (a Slack webhook's path is its secret).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(not a URL)".into(),
    }
}

/// Every event the daemon sends.
pub const EVENTS: &[&str] = &[
    "backup.completed",
    "backup.failed",
    "verify.passed",
    "verify.failed",
    "drill.passed",
    "drill.failed",
    "retention.cleanup",
    "retention.failed",
    "replication.lagging",
    "replication.caught_up",
    "storage.low",
    "health.failed",
];

/// The events a `failures` filter sends.
pub fn is_failure(event: &str) -> bool {
    event.ends_with(".failed") || matches!(event, "replication.lagging" | "storage.low")
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unique per event; the same in every retry (`X-Lifeboat-Delivery`), so a receiver can
    /// drop duplicates.
    pub id: String,
    pub event: String,
    pub time: String,
    pub host: String,
    pub source: Option<String>,
    pub backup: Option<String>,
    pub message: String,
    pub details: serde_json::Value,
}

impl Event {
    pub fn new(event: &str, source: Option<&str>, message: impl Into<String>) -> Event {
        debug_assert!(EVENTS.contains(&event), "{event}");
        Event {
            id: crate::id::new_backup_id(jiff::Timestamp::now().as_millisecond().max(0) as u64)
                .to_ascii_lowercase(),
            event: event.to_string(),
            time: jiff::Timestamp::now().to_string(),
            host: crate::host::hostname(),
            source: source.map(str::to_string),
            backup: None,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn backup(mut self, id: &str) -> Event {
        self.backup = Some(id.to_string());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Event {
        self.details = details;
        self
    }
}

/// One attempt to deliver an event, as the log and `GET /api/v1/webhooks/deliveries` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub time: String,
    pub event: String,
    pub event_id: String,
    pub endpoint: String,
    pub attempt: u32,
    /// The HTTP status received, if any.
    pub status: Option<u16>,
    pub ok: bool,
    pub error: Option<String>,
}

pub struct Webhooks {
    endpoints: Vec<Webhook>,
    client: reqwest::Client,
    log_path: PathBuf,
    recent: Arc<Mutex<VecDeque<Delivery>>>,
    runtime: tokio::runtime::Handle,
    /// Deliveries not finished yet (a clean stop waits a little for them).
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Called once per delivery that finally failed (the metrics count them).
    on_failure: Arc<dyn Fn(&str) + Send + Sync>,
}

const RECENT: usize = 200;

impl Webhooks {
    pub fn new(
        endpoints: Vec<Webhook>,
        log_path: PathBuf,
        runtime: tokio::runtime::Handle,
        on_failure: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Webhooks {
        let client = reqwest::Client::builder()
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Webhooks {
            endpoints,
            client,
            log_path,
            recent: Arc::new(Mutex::new(VecDeque::new())),
            runtime,
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            on_failure,
        }
    }

    /// Send `event` to every endpoint that wants it, in the background.
    pub fn emit(&self, event: Event) {
        tracing::info!(event = %event.event, source = ?event.source, "{}", event.message);
        for endpoint in self.endpoints.iter().filter(|w| w.wants(&event.event)) {
            let body = match body(endpoint, &event) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("webhook body: {e}");
                    continue;
                }
            };
            let job = Deliver {
                endpoint: endpoint.clone(),
                event: event.clone(),
                body,
                client: self.client.clone(),
                log_path: self.log_path.clone(),
                recent: self.recent.clone(),
                pending: self.pending.clone(),
                on_failure: self.on_failure.clone(),
            };
            self.pending
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.runtime.spawn(job.run());
        }
    }

    pub fn recent(&self) -> Vec<Delivery> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Wait up to `limit` for deliveries in flight (a stopping daemon sends what it can).
    pub fn drain(&self, limit: Duration) {
        let until = std::time::Instant::now() + limit;
        while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn body(endpoint: &Webhook, event: &Event) -> serde_json::Result<Vec<u8>> {
    if endpoint.slack {
        let icon = if is_failure(&event.event) {
            ":red_circle:"
        } else {
            ":large_green_circle:"
        };
        // Slack reads `<…>` as a link or a mention (`<!channel>`): names and messages,
        // which may quote a file or path, are escaped as its docs ask.
        let mut text = format!(
            "{icon} *{}* on {}: {}",
            event.event,
            slack_escape(&event.host),
            slack_escape(&event.message)
        );
        if let Some(s) = &event.source {
            text.push_str(&format!("\nsource: {}", slack_escape(s)));
        }
        if let Some(b) = &event.backup {
            text.push_str(&format!("\nbackup: {}", slack_escape(b)));
        }
        return serde_json::to_vec(&serde_json::json!({ "text": text }));
    }
    serde_json::to_vec(event)
}

/// Text as Slack's `mrkdwn` shows it literally: `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `t=<unix>,v1=<hex>`: the HMAC-SHA256 of `"<unix>.<body>"` under `secret`.
pub fn signature(secret: &[u8], unix: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(unix.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={unix},v1={}", hex::encode(ctx.sign().as_ref()))
}

struct Deliver {
    endpoint: Webhook,
    event: Event,
    body: Vec<u8>,
    client: reqwest::Client,
    log_path: PathBuf,
    recent: Arc<Mutex<VecDeque<Delivery>>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    on_failure: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Deliver {
    async fn run(self) {
        let mut delay = self.endpoint.retry_delay;
        for attempt in 1..=self.endpoint.attempts {
            let (status, error) = self.attempt().await;
            let ok = error.is_none();
            self.log(Delivery {
                time: jiff::Timestamp::now().to_string(),
                event: self.event.event.clone(),
                event_id: self.event.id.clone(),
                endpoint: redact_url(&self.endpoint.url),
                attempt,
                status,
                ok,
                error: error.clone(),
            });
            if ok {
                break;
            }
            if attempt == self.endpoint.attempts {
                tracing::warn!(
                    "webhook {} for {} failed {} times, given up: {}",
                    redact_url(&self.endpoint.url),
                    self.event.event,
                    attempt,
                    error.unwrap_or_default()
                );
                (self.on_failure)(&self.event.event);
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(3600));
        }
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    async fn attempt(&self) -> (Option<u16>, Option<String>) {
        let mut req = self
            .client
            .post(&self.endpoint.url)
            .timeout(self.endpoint.timeout)
            .header("content-type", "application/json")
            .header("x-lifeboat-event", &self.event.event)
            .header("x-lifeboat-delivery", &self.event.id);
        if let Some(secret) = &self.endpoint.secret {
            // Signed at each attempt: the time in it is when this attempt was made.
            let sig = signature(secret, jiff::Timestamp::now().as_second(), &self.body);
            req = req.header("x-lifeboat-signature", sig);
        }
        match req.body(self.body.clone()).send().await {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (
                Some(r.status().as_u16()),
                Some(format!("HTTP {}", r.status())),
            ),
            // Not the URL: a Slack webhook's path is its secret.
            Err(e) => (None, Some(describe_error(&e))),
        }
    }

    fn log(&self, d: Delivery) {
        if let Ok(mut line) = serde_json::to_vec(&d) {
            line.push(b'\n');
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                // Never through a link someone left in its place.
                .custom_flags(libc::O_NOFOLLOW)
                .open(&self.log_path)
                .and_then(|mut f| f.write_all(&line));
            if let Err(e) = written {
                tracing::warn!("delivery log {}: {e}", self.log_path.display());
            }
        }
        if let Ok(mut r) = self.recent.lock() {
            r.push_back(d);
            while r.len() > RECENT {
                r.pop_front();
            }
        }
    }
}

fn describe_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's message names the URL; keep only the cause below it.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // Reference: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let sig = signature(b"secret", 1_700_000_000, br#"{"a":1}"#);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"secret");
        let expect = ring::hmac::sign(&key, br#"1700000000.{"a":1}"#);
        assert_eq!(
            sig,
            format!("t=1700000000,v1={}", hex::encode(expect.as_ref()))
        );
        assert_ne!(sig, signature(b"other", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(sig, signature(b"secret", 1_700_000_001, br#"{"a":1}"#));
    }

    #[test]
    fn failure_filter() {
        assert!(is_failure("backup.failed"));
        assert!(is_failure("storage.low"));
        assert!(!is_failure("backup.completed"));
        assert!(!is_failure("replication.caught_up"));
    }
}
