//! The HTTP API (`/api/v1`, JSON), `/metrics` and the status page, on axum. Every route
//! but the health probes and the OpenAPI document needs a bearer token from the config with
//! the route's scope; tokens are compared as SHA-256 digests in constant time. Lists and
//! status are answered from memory; work (a backup, a verify, a drill, a restore) becomes a
//! job, answered 202 with the job to follow.

// Handlers return a ready response as their error: that is how axum answers.
#![allow(clippy::result_large_err)]

use super::config::Scope;
use super::jobs::{JobKind, JobView};
use super::Daemon;
use crate::error::{Error, ErrorKind};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type D = State<Arc<Daemon>>;

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// Job event streams open at once (each is a task that follows its job).
const MAX_STREAMS: usize = 32;
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Downloads at once: each keeps a restored copy of its backup on disk until it is sent.
const MAX_DOWNLOADS: usize = 2;
static DOWNLOADS: AtomicUsize = AtomicUsize::new(0);

/// One of a limited number of places, given back when dropped.
struct Slot(&'static AtomicUsize);

impl Slot {
    fn take(count: &'static AtomicUsize, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn router(d: Arc<Daemon>) -> Router {
    let max = d.config().max_requests;
    // The probes and the API's description answer anyone, outside the request limit.
    let public = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/health/live", get(live))
        .route("/api/v1/health/ready", get(ready));
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/backups", get(list_backups).post(create_backup))
        .route("/api/v1/backups/{id}", get(show_backup))
        .route("/api/v1/backups/{id}/verify", post(verify_backup))
        .route("/api/v1/backups/{id}/drill", post(drill_backup))
        .route("/api/v1/backups/{id}/restore", post(restore_backup))
        .route("/api/v1/backups/{id}/download", get(download_backup))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(show_job))
        .route("/api/v1/jobs/{id}/events", get(job_events))
        .route("/api/v1/webhooks/deliveries", get(deliveries))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        // A request without a known token is answered before its body is read.
        .layer(axum::middleware::from_fn_with_state(d.clone(), known_token))
        // One limit for all routes (a layer of its own per route would multiply it).
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max))
        .merge(public)
        .with_state(d)
}

/// How long a client has to send a request's head (and a TLS client its handshake); a
/// connection idle that long between requests is closed too.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once: a quarter of the open files the process may have (at least
/// 16, at most 1024), so that idle or slow clients cannot take the descriptors the jobs
/// need. More wait in the listen queue.
fn max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    usize::try_from(soft / 4).unwrap_or(1024).clamp(16, 1024)
}

async fn stopped(d: &Daemon) {
    while !d.stopping() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serve until the daemon stops: each connection on its own task, at most
/// `max_connections()` at once, each closed when its client is silent for `HEAD_TIMEOUT`
/// where a request (or a handshake) is due.
pub async fn serve(d: Arc<Daemon>, listener: tokio::net::TcpListener) {
    let app = router(d.clone());
    let tls = match d.config().tls.clone() {
        Some((cert, key)) => match super::tls::acceptor(&cert, &key) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!("the API stopped: {e}");
                return;
            }
        },
        None => None,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections()));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = stopped(&d) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&d) => break,
        };
        let (tcp, addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (d, app, tls) = (d.clone(), app.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(&d, app, tcp).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(&d, app, stream).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(d: &Daemon, app: Router, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let conn = builder.serve_connection(
        hyper_util::rt::TokioIo::new(io),
        hyper_util::service::TowerToHyperService::new(app),
    );
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(d) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// An error as JSON, with the HTTP status its kind calls for.
pub fn error_response(e: &Error) -> Response {
    let status = match e.kind {
        ErrorKind::Usage => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InUse | ErrorKind::Trust | ErrorKind::Aborted => StatusCode::CONFLICT,
        ErrorKind::Auth => StatusCode::UNAUTHORIZED,
        ErrorKind::Storage | ErrorKind::Source => StatusCode::BAD_GATEWAY,
        ErrorKind::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Integrity | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = json!({"error": {"kind": format!("{:?}", e.kind).to_lowercase(), "message": e.message, "hint": e.hint}});
    (status, Json(body)).into_response()
}

fn refuse(status: StatusCode, message: &str, hint: &str) -> Response {
    let mut r = (
        status,
        Json(json!({"error": {"message": message, "hint": hint}})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        // Browsers then ask (any user name, the token as password) for the status page.
        // One challenge per header: Chromium reads only the first challenge of a header,
        // and would never send Basic credentials after `Bearer …, Basic …`.
        let h = r.headers_mut();
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"lifeboat\""),
        );
        h.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lifeboat\""),
        );
        // And the connection closed: a caller without a token cannot keep one by asking
        // again within the head's time limit.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The token a request carries: `Authorization: Bearer T`, or Basic with T as the password.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.trim().to_string()),
        "basic" => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            Some(text.split_once(':')?.1.to_string())
        }
        _ => None,
    }
}

/// Refuse a request without a known token (401) before anything reads its body; the
/// handler then checks the scope its route needs.
async fn known_token(
    State(d): D,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cfg = d.config();
    if let Err(r) = token_of(&cfg, req.headers()) {
        return r;
    }
    drop(cfg);
    next.run(body_in_time(req)).await
}

/// A request whose body must come whole within `HEAD_TIMEOUT` of its head: past that, its
/// reader gets an error and the request's slot is given back (a body sent a byte at a time
/// held a request slot for ever).
fn body_in_time(req: axum::extract::Request) -> axum::extract::Request {
    let h = req.headers();
    if !h.contains_key(header::CONTENT_LENGTH) && !h.contains_key(header::TRANSFER_ENCODING) {
        return req;
    }
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let (parts, body) = req.into_parts();
    let chunks = futures::stream::unfold(Some(body.into_data_stream()), move |data| async move {
        let mut data = data?;
        match tokio::time::timeout_at(deadline, data.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(data))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request's body came too slowly",
                )),
                None,
            )),
        }
    });
    axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(chunks))
}

/// The configured token the request carries; 401 when there is none.
fn token_of<'a>(
    cfg: &'a super::config::DaemonConfig,
    headers: &HeaderMap,
) -> Result<&'a super::config::Token, Response> {
    let Some(token) = presented(headers) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "this needs a token",
            "send Authorization: Bearer TOKEN (a [[daemon.token]] of the daemon's config)",
        ));
    };
    let digest = super::config::token_hash(&token);
    // Every token is compared, the same way, whichever matches.
    let mut found = None;
    for t in &cfg.tokens {
        if same_digest(&t.sha256, &digest) {
            found = Some(t);
        }
    }
    found.ok_or_else(|| {
        note_refused();
        refuse(
            StatusCode::UNAUTHORIZED,
            "unknown token",
            "check the token against the [[daemon.token]] files of the daemon's config",
        )
    })
}

/// Check the request's token for `scope`: 401 without a known token, 403 without the scope.
fn authorize(d: &Daemon, headers: &HeaderMap, scope: Scope) -> Result<String, Response> {
    let cfg = d.config();
    let t = token_of(&cfg, headers)?;
    if !t.allows(scope) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "token {:?} does not have the {} scope",
                t.name,
                scope.name()
            ),
            "give the token that scope in [[daemon.token]] scopes, or use another token",
        ));
    }
    Ok(t.name.clone())
}

/// Log refused tokens at most once every 10 s, with how many there were: whoever sends
/// unknown tokens cannot flood the log.
fn note_refused() {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let n = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = jiff::Timestamp::now().as_second();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE.store(0, Ordering::Relaxed);
        tracing::warn!("API: {n} request(s) with an unknown token refused");
    }
}

/// Equal digests, compared in time that does not depend on where they differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

macro_rules! authorized {
    ($d:expr, $headers:expr, $scope:expr) => {
        match authorize(&$d, &$headers, $scope) {
            Ok(name) => name,
            Err(r) => return r,
        }
    };
}

async fn not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "no such route",
        "GET /api/v1/openapi.json lists the API",
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn live(State(d): D) -> Response {
    Json(json!({"status": "live", "uptime_s": d.uptime().as_secs()})).into_response()
}

async fn ready(State(d): D) -> Response {
    if d.ready.load(std::sync::atomic::Ordering::SeqCst) && !d.stopping() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": if d.stopping() { "stopping" } else { "starting" }})),
        )
            .into_response()
    }
}

async fn metrics(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Read);
    (
        [(
            header::CONTENT_TYPE,
            // What prometheus-client writes (`_total` samples under the family's name,
            // `# EOF`); Prometheus parses it as such only when told so.
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.metrics.render(),
    )
        .into_response()
}

async fn status(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Read);
    Json(super::view::status(&d)).into_response()
}

async fn page(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Read);
    let html = super::page::render(&super::view::status(&d));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn sources(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Read);
    let cfg = d.config();
    let list: Vec<_> = cfg
        .sources
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "path": s.shown_path(), "schedule": s.schedule.describe(),
                "verify": s.verify.as_ref().map(|x| x.describe()),
                "drill": s.drill.as_ref().map(|x| x.describe()),
                "health": s.health.describe(), "tags": s.tags,
            })
        })
        .collect();
    Json(json!({ "sources": list })).into_response()
}

async fn list_backups(
    State(d): D,
    headers: HeaderMap,
    query: Result<Query<super::catalog::Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    authorized!(d, headers, Scope::Read);
    let Query(mut q) =
        match query {
            Ok(q) => q,
            Err(e) => {
                return error_response(&Error::usage(e.body_text()).hint(
                    "filters: source, kind, tag, trigger, status, since, until, limit, order",
                ))
            }
        };
    if let Some(s) = q
        .source
        .as_deref()
        .and_then(|s| d.config().source(s).map(|s| s.key.clone()))
    {
        q.source = Some(s);
    }
    let catalog = match d.catalog.read() {
        Ok(c) => c,
        Err(_) => return error_response(&Error::internal("catalog lock poisoned")),
    };
    match catalog.query(&q) {
        Ok(rows) => Json(BackupList {
            count: rows.len(),
            total: catalog.len(),
            backups: rows,
        })
        .into_response(),
        Err(e) => error_response(&Error::usage(e)),
    }
}

/// The catalog's entry of backup `id` (`latest`: the newest backup of all).
fn lookup(d: &Daemon, id: &str) -> Option<super::catalog::Entry> {
    let c = d.catalog.read().ok()?;
    if id == "latest" {
        let newest = super::catalog::Query {
            limit: Some(1),
            ..Default::default()
        };
        return c.query(&newest).ok()?.first().map(|e| (*e).clone());
    }
    c.get(id).cloned()
}

/// The answer of `GET /api/v1/backups`, serialized straight from the catalog's entries (a
/// `json!` value of 10,000 of them took 4x the time and 20 MiB more memory).
#[derive(serde::Serialize)]
struct BackupList<'a> {
    count: usize,
    total: usize,
    backups: Vec<&'a super::catalog::Entry>,
}

fn checked_id(id: &str) -> Result<String, Response> {
    let id = id.to_ascii_lowercase();
    if crate::id::is_backup_id(&id) || id == "latest" {
        Ok(id)
    } else {
        Err(error_response(
            &Error::usage(format!("{id:?} is not a backup id"))
                .hint("GET /api/v1/backups lists them"),
        ))
    }
}

/// The catalog entry of backup `id` (an id or `latest`): 400 for what is not an id, 404
/// for one the repository does not hold.
fn backup_entry(d: &Daemon, id: &str) -> Result<super::catalog::Entry, Response> {
    let id = checked_id(id)?;
    lookup(d, &id).ok_or_else(|| {
        error_response(
            &Error::not_found(format!("no backup {id}")).hint("GET /api/v1/backups lists them"),
        )
    })
}

async fn show_backup(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(d, headers, Scope::Read);
    let entry = match backup_entry(&d, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = entry.id.clone();
    let d2 = d.clone();
    let manifest = tokio::task::spawn_blocking(move || {
        d2.catalog_repo(false).and_then(|r| r.read_manifest(&id))
    })
    .await;
    match manifest {
        Ok(Ok(m)) => Json(json!({"backup": entry, "manifest": m})).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&Error::internal("the manifest read panicked")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBackup {
    source: String,
    #[serde(default)]
    tags: Vec<String>,
    trigger: Option<String>,
}

/// A JSON body that could not be read: 413 when it is over the limit, else 400.
fn body_refused(e: axum::extract::rejection::JsonRejection, hint: &str) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is over {} KiB", MAX_BODY / 1024),
            hint,
        );
    }
    error_response(&Error::usage(e.body_text()).hint(hint))
}

fn accepted(job: JobView) -> Response {
    let location = format!("/api/v1/jobs/{}", job.id);
    let mut r = (StatusCode::ACCEPTED, Json(json!({ "job": job }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// 202 with the job, or 429 when too many jobs wait for their turn already.
fn admitted(job: Result<Arc<super::jobs::Job>, String>) -> Response {
    match job {
        Ok(job) => accepted(job.view()),
        Err(why) => busy(
            &why,
            "ask again when it has started (GET /api/v1/jobs lists them)",
        ),
    }
}

/// 429 with a `Retry-After`.
fn busy(message: &str, hint: &str) -> Response {
    let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, message, hint);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn create_backup(
    State(d): D,
    headers: HeaderMap,
    body: Result<Json<CreateBackup>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = authorized!(d, headers, Scope::Backup);
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return body_refused(
                e,
                r#"{"source": NAME, "tags": [...], "trigger": "pre-migration"}"#,
            )
        }
    };
    let trigger = req.trigger.unwrap_or_else(|| "api".into());
    for (what, s) in
        std::iter::once(("trigger", &trigger)).chain(req.tags.iter().map(|t| ("tag", t)))
    {
        if let Err(e) = crate::ops::backup::check_label(what, s) {
            return error_response(&e);
        }
    }
    let cfg = d.config();
    let Some(s) = cfg.source(&req.source) else {
        let names: Vec<&str> = cfg.sources.iter().map(|s| s.name.as_str()).collect();
        return error_response(
            &Error::not_found(format!("no source {:?} in the daemon's config", req.source))
                .hint(format!("sources: {}", names.join(", "))),
        );
    };
    if s.schedule.is_continuous() && s.kind.is_none() {
        tracing::info!("API backup of continuously replicated {}", s.name);
    }
    tracing::info!(
        "API: token {who} asked for a backup of {} (trigger {trigger})",
        s.name
    );
    let body = super::source_body(JobKind::Backup, s, None, &trigger, req.tags.clone());
    let job = d.spawn_api_job(JobKind::Backup, Some(s.name.clone()), None, &trigger, body);
    admitted(job)
}

// These take no body but read one if sent: a body left unread when the answer goes makes
// hyper close the connection, and a client that reuses it fails its next request.
async fn verify_backup(
    State(d): D,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> Response {
    backup_job(d, headers, id, JobKind::Verify).await
}

async fn drill_backup(
    State(d): D,
    headers: HeaderMap,
    Path(id): Path<String>,
    _body: axum::body::Bytes,
) -> Response {
    backup_job(d, headers, id, JobKind::Drill).await
}

/// A verify or drill of one backup, as a job on its source's turn.
async fn backup_job(d: Arc<Daemon>, headers: HeaderMap, id: String, kind: JobKind) -> Response {
    authorized!(d, headers, Scope::Backup);
    let entry = match backup_entry(&d, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = entry.id.clone();
    let cfg = d.config();
    let source = cfg.source(&entry.source).cloned();
    let name = source
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or(entry.source.clone());
    let b = id.clone();
    let body: super::Body = match kind {
        JobKind::Verify => {
            Box::new(move |d, job| super::work::verify(d, source.as_ref(), Some(&b), job))
        }
        _ => Box::new(move |d, job| super::work::drill(d, source.as_ref(), Some(&b), job)),
    };
    admitted(d.spawn_api_job(kind, Some(name), Some(id), "api", body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreRequest {
    /// A new file or folder inside one of `[daemon] restore_dirs`.
    to: std::path::PathBuf,
}

async fn restore_backup(
    State(d): D,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<RestoreRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let who = authorized!(d, headers, Scope::Restore);
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return body_refused(e, r#"{"to": "/allowed/folder/new-name.db"}"#),
    };
    let entry = match backup_entry(&d, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = entry.id.clone();
    if entry.form == "physical" {
        return error_response(&Error::usage(
            "a PostgreSQL base backup is restored with `lifeboat restore ID --pgdata DIR`",
        ));
    }
    let to = match super::work::restore_target(&d, &req.to) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    tracing::info!("API: token {who} restores {id} to {}", to.display());
    let name = d
        .config()
        .source(&entry.source)
        .map(|s| s.name.clone())
        .unwrap_or(entry.source.clone());
    let b = id.clone();
    admitted(d.spawn_api_job(
        JobKind::Restore,
        Some(name),
        Some(id),
        "api",
        Box::new(move |d, job| super::work::restore(d, &b, to, job)),
    ))
}

async fn download_backup(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let who = authorized!(d, headers, Scope::Restore);
    let entry = match backup_entry(&d, &id) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let id = entry.id.clone();
    if entry.form == "physical" {
        return error_response(
            &Error::usage("a PostgreSQL base backup is not downloaded as one file")
                .hint("restore it with `lifeboat restore ID --pgdata DIR`"),
        );
    }
    let Some(slot) = Slot::take(&DOWNLOADS, MAX_DOWNLOADS) else {
        return busy(
            &format!("{MAX_DOWNLOADS} downloads are under way"),
            "ask again when one of them has finished",
        );
    };
    tracing::info!("API: token {who} downloads {id}");
    let d2 = d.clone();
    // The slot is held while the copy exists: through the restore (which goes on if the
    // client leaves) and the sending.
    let prepared =
        tokio::task::spawn_blocking(move || (super::download::prepare(&d2, &id), slot)).await;
    let (file, slot) = match prepared {
        Ok((Ok(f), slot)) => (f, slot),
        Ok((Err(e), _)) => return error_response(&e),
        Err(_) => return error_response(&Error::internal("the download panicked")),
    };
    let stream = futures::StreamExt::map(super::download::stream(file.file), move |chunk| {
        let _held = &slot;
        chunk
    });
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    let pairs = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, file.size.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", file.name),
        ),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&file.sha256) {
        h.insert("x-lifeboat-sha256", v);
    }
    r
}

async fn list_jobs(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Read);
    let jobs: Vec<JobView> = d.jobs.all().iter().take(200).map(|j| j.view()).collect();
    Json(json!({ "jobs": jobs })).into_response()
}

async fn show_job(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(d, headers, Scope::Read);
    match d.jobs.get(&id) {
        Some(j) => Json(json!({"job": j.view()})).into_response(),
        None => error_response(
            &Error::not_found(format!("no job {id}"))
                .hint("jobs are kept in memory: a restarted daemon has forgotten older ones"),
        ),
    }
}

/// Server-sent events: the job as JSON every half second while it changes, until it ends
/// (or the token that opened the stream is no longer in the config).
async fn job_events(State(d): D, headers: HeaderMap, Path(id): Path<String>) -> Response {
    authorized!(d, headers, Scope::Read);
    let Some(job) = d.jobs.get(&id) else {
        return error_response(&Error::not_found(format!("no job {id}")));
    };
    let Some(slot) = Slot::take(&STREAMS, MAX_STREAMS) else {
        return busy(
            &format!("{MAX_STREAMS} event streams are open"),
            "poll GET /api/v1/jobs/{id} instead, or close a stream",
        );
    };
    let digest = presented(&headers).map(|t| super::config::token_hash(&t));
    let state = (job, None::<String>, false, d, digest, slot);
    let stream = futures::stream::unfold(state, |(job, last, done, d, digest, slot)| async move {
        if done {
            return None;
        }
        loop {
            let allowed = digest.is_some_and(|digest| {
                d.config()
                    .tokens
                    .iter()
                    .any(|t| same_digest(&t.sha256, &digest) && t.allows(Scope::Read))
            });
            if !allowed {
                return None;
            }
            let view = job.view();
            let text = serde_json::to_string(&view).unwrap_or_default();
            let finished = view.state.finished();
            if last.as_deref() != Some(text.as_str()) || finished {
                let chunk = format!("event: job\ndata: {text}\n\n");
                return Some((
                    Ok::<_, std::convert::Infallible>(chunk),
                    (job, Some(text), finished, d, digest, slot),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn deliveries(State(d): D, headers: HeaderMap) -> Response {
    authorized!(d, headers, Scope::Admin);
    Json(json!({"deliveries": d.webhooks().recent()})).into_response()
}
