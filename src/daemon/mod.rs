//! `lifeboat daemon`: one process that runs every source's jobs on their schedules (backups,
//! continuous replication, verify, restore drills, health checks, retention), serves the
//! HTTP API, `/metrics` and the status page, and posts webhooks. It calls the same engine
//! as the CLI. This module owns the life cycle (start, reload on SIGHUP, clean stop on
//! SIGTERM), the catalog's refresh and the metrics it feeds; `scheduler` decides what runs
//! when, `work` is what each job does, `state` what is kept on this machine.

pub mod api;
pub mod catalog;
pub mod config;
mod download;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod schedule;
mod scheduler;
mod state;
mod tls;
pub mod view;
pub mod webhooks;
mod work;

use crate::config::FileConfig;
use crate::engine::Opener;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::secret::PassphraseSource;
use catalog::Catalog;
use config::DaemonConfig;
use jobs::{JobKind, Jobs};
use scheduler::next_by_schedule;
pub use scheduler::{job_key, source_body, Body};
use serde::Serialize;
pub use state::JobRecord;
use state::{private_state_dir, read_own_file, state_files, take_lock, State};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use webhooks::{Event, Webhooks};

/// How the daemon was started: what the CLI's global options said.
#[derive(Clone, Default)]
pub struct Options {
    pub config_path: Option<PathBuf>,
    /// `--repo` / `LIFEBOAT_REPO`.
    pub repo: Option<String>,
    pub passphrase: PassphraseSource,
    pub identity: Option<PathBuf>,
    pub accept_change: bool,
}

/// One health check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub source: String,
    pub time: String,
    pub ok: bool,
    pub checks: Vec<crate::ops::verify::Step>,
}

pub struct Daemon {
    opts: Options,
    cfg: RwLock<Arc<DaemonConfig>>,
    file: RwLock<Arc<FileConfig>>,
    opener: RwLock<Arc<Opener>>,
    pub catalog: RwLock<Catalog>,
    catalog_repo: Mutex<Option<Arc<Repository>>>,
    pub jobs: Jobs,
    pub metrics: metrics::Metrics,
    webhooks: RwLock<Arc<Webhooks>>,
    state: Mutex<State>,
    state_path: PathBuf,
    log_path: PathBuf,
    pub health: Mutex<BTreeMap<String, HealthReport>>,
    pub targets: Mutex<Vec<crate::ops::status::TargetStatus>>,
    pub replicating: Mutex<Vec<crate::ops::status::Replicating>>,
    /// Continuous sources reported lagging (a webhook was sent; the next is when they catch up).
    lagging: Mutex<std::collections::HashSet<String>>,
    pub ready: AtomicBool,
    stopping: AtomicBool,
    runtime: tokio::runtime::Handle,
    pub started: jiff::Timestamp,
    started_at: Instant,
}

fn opener_for(opts: &Options, file: &FileConfig) -> Opener {
    let (location, origin) = crate::config::repo_location(opts.repo.as_deref(), file);
    Opener {
        location,
        origin,
        passphrase: opts.passphrase.clone(),
        identity: opts.identity.clone(),
        accept_change: opts.accept_change,
        configured_replicas: file.replicas.clone(),
        configured_repo: file.repo.clone(),
        warn: Box::new(|notice| tracing::warn!("{notice}")),
    }
}

fn load(opts: &Options) -> Result<(FileConfig, DaemonConfig)> {
    let (file, found) = crate::config::load(opts.config_path.as_deref())?;
    let mut cfg = DaemonConfig::from_file(&file)?;
    cfg.config_file = found;
    Ok((file, cfg))
}

/// `lifeboat daemon --check-config`: every setting checked and secret read, and what the
/// daemon would run, in words (tokens by name, webhooks by host: never a secret).
pub fn check_config(opts: &Options) -> Result<String> {
    let (file, cfg) = load(opts)?;
    if let Some((cert, key)) = &cfg.tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        tls::server_config(cert, key)?;
    }
    let opener = opener_for(opts, &file);
    let now = jiff::Timestamp::now();
    let mut out = String::new();
    out.push_str(&format!("repository: {}\n", opener.location));
    // The plan from what ran: the newest backups and the schedule's state, when readable.
    let state: State = read_own_file(&state_files(&cfg).1)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut catalog = Catalog::default();
    match opener
        .open()
        .and_then(|r| Catalog::fetch(&r, &Default::default(), false))
    {
        Ok(changes) => {
            catalog.apply(changes);
        }
        Err(e) => out.push_str(&format!(
            "  (cannot read it now: {}; the times below assume no backups)\n",
            e.message
        )),
    }
    match cfg.listen {
        Some(a) => out.push_str(&format!(
            "API: {}://{a}/api/v1 ({} token{})\n",
            if cfg.tls.is_some() { "https" } else { "http" },
            cfg.tokens.len(),
            if cfg.tokens.len() == 1 { "" } else { "s" }
        )),
        None => out.push_str("API: off\n"),
    }
    for t in &cfg.tokens {
        let scopes: Vec<&str> = t.scopes.iter().map(|s| s.name()).collect();
        out.push_str(&format!("  token {}: {}\n", t.name, scopes.join(", ")));
    }
    if cfg.listen.is_some() && cfg.tokens.is_empty() {
        out.push_str("  warning: no [[daemon.token]]: the API answers only /api/v1/health/*\n");
    }
    for w in &cfg.webhooks {
        out.push_str(&format!(
            "webhook {}: {}{}{}\n",
            config::redact_url(&w.url),
            if w.events.is_empty() {
                "all events".to_string()
            } else {
                w.events.join(", ")
            },
            if w.slack { ", Slack format" } else { "" },
            if w.secret.is_some() {
                ", signed"
            } else {
                ", NOT signed (no secret)"
            },
        ));
    }
    if cfg.sources.is_empty() {
        out.push_str("warning: no [[source]]: the daemon has nothing to back up\n");
    }
    for s in &cfg.sources {
        out.push_str(&format!("source {} ({})\n", s.name, s.shown_path()));
        let jobs = [
            ("backup", Some(&s.schedule)),
            ("verify", s.verify.as_ref()),
            ("drill", s.drill.as_ref()),
            ("health", Some(&s.health)),
        ];
        for (name, sched) in jobs {
            let Some(sched) = sched else { continue };
            let kind = match name {
                "backup" => JobKind::Backup,
                "verify" => JobKind::Verify,
                "drill" => JobKind::Drill,
                _ => JobKind::Health,
            };
            let key = job_key(kind, &s.name);
            let rec = state.jobs.get(&key).cloned().unwrap_or_default();
            let newest = (kind == JobKind::Backup)
                .then(|| catalog.newest_of(&s.key).and_then(|e| e.timestamp()))
                .flatten();
            let next = match next_by_schedule(&key, &rec, sched, newest, now, &cfg.tz) {
                Some((t, _)) if t <= now => ", due: runs at start".to_string(),
                Some((t, _)) => format!(", next {}", t.strftime("%Y-%m-%d %H:%M:%S UTC")),
                None => String::new(),
            };
            out.push_str(&format!("  {name:<7} {}{next}\n", sched.describe()));
        }
        for (what, cmd) in [("before", &s.before), ("after", &s.after)] {
            if cmd.is_some() {
                out.push_str(&format!(
                    "  {what} command (time limit {})\n",
                    schedule::human_duration(s.command_timeout)
                ));
            }
        }
    }
    if let Some(r) = &cfg.retention {
        out.push_str(&format!("retention (forget + prune): {}\n", r.describe()));
    }
    out.push_str(&format!("state: {}\n", cfg.state_dir.display()));
    Ok(out)
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(opts: Options) -> Result<()> {
    let (file, cfg) = load(&opts)?;
    // One TLS provider for the process (webhooks and the API's TLS use it too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some((cert, key)) = &cfg.tls {
        tls::server_config(cert, key)?;
    }
    private_state_dir(&cfg.state_dir)?;
    let (lock_path, state_path, log_path) = state_files(&cfg);
    let _lock = take_lock(&lock_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lifeboat-api")
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    // Bind first: a port in use is found before anything runs.
    let listener = match cfg.listen {
        Some(addr) => Some(
            runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| {
                    Error::new(ErrorKind::InUse, format!("cannot listen on {addr}: {e}"))
                        .hint("set [daemon] listen to a free address, or \"off\"")
                })?,
        ),
        None => None,
    };
    let state: State = read_own_file(&state_path)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let metrics = metrics::Metrics::new();
    if !cfg.webhooks.is_empty() {
        // At 0 from the start, so that increase() sees the first delivery given up.
        for event in webhooks::EVENTS {
            metrics
                .webhook_failures
                .get_or_create(&metrics::EventLabel {
                    event: (*event).into(),
                })
                .inc_by(0);
        }
    }
    let failures = metrics.webhook_failures.clone();
    let hooks = Webhooks::new(
        cfg.webhooks.clone(),
        log_path.clone(),
        runtime.handle().clone(),
        Arc::new(move |event: &str| {
            failures
                .get_or_create(&metrics::EventLabel {
                    event: event.into(),
                })
                .inc();
        }),
    );
    let opener = opener_for(&opts, &file);
    let d = Arc::new(Daemon {
        opts,
        cfg: RwLock::new(Arc::new(cfg)),
        file: RwLock::new(Arc::new(file)),
        opener: RwLock::new(Arc::new(opener)),
        catalog: RwLock::new(Catalog::default()),
        catalog_repo: Mutex::new(None),
        jobs: Jobs::default(),
        metrics,
        webhooks: RwLock::new(Arc::new(hooks)),
        state: Mutex::new(state),
        state_path,
        log_path,
        health: Mutex::new(BTreeMap::new()),
        targets: Mutex::new(Vec::new()),
        replicating: Mutex::new(Vec::new()),
        lagging: Mutex::new(std::collections::HashSet::new()),
        ready: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
        runtime: runtime.handle().clone(),
        started: jiff::Timestamp::now(),
        started_at: Instant::now(),
    });
    let reload = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone());
    let server = listener.map(|l| {
        let d = d.clone();
        runtime.spawn(async move { api::serve(d, l).await })
    });
    tracing::info!(
        "lifeboat daemon {} started: {} source(s), repository {}",
        env!("CARGO_PKG_VERSION"),
        d.config().sources.len(),
        d.opener().location
    );
    // A repository that is not there at all is a mistake to report now; one that cannot be
    // reached (a bucket down) is retried while the daemon runs.
    match d.refresh_catalog() {
        Ok(()) => d.ready.store(true, Ordering::SeqCst),
        Err(e) if e.kind == ErrorKind::NotFound => {
            d.stopping.store(true, Ordering::SeqCst);
            if let Some(s) = server {
                s.abort();
            }
            return Err(e);
        }
        Err(e) => tracing::error!("cannot read the repository (retrying): {e}"),
    }
    d.scheduler(&reload);
    // Stopping: the engine saw the signal too, so running jobs end at their next safe
    // point, removing what they had not committed.
    tracing::info!("stopping: waiting for running jobs to end");
    let until = Instant::now() + Duration::from_secs(600);
    while d.jobs.running() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    d.webhooks().drain(Duration::from_secs(5));
    if let Some(s) = server {
        s.abort();
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped");
    Ok(())
}

impl Daemon {
    pub fn config(&self) -> Arc<DaemonConfig> {
        current(&self.cfg)
    }

    pub fn file(&self) -> Arc<FileConfig> {
        current(&self.file)
    }

    pub fn opener(&self) -> Arc<Opener> {
        current(&self.opener)
    }

    pub fn webhooks(&self) -> Arc<Webhooks> {
        current(&self.webhooks)
    }

    pub fn emit(&self, event: Event) {
        self.webhooks().emit(event);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || crate::interrupt::received().is_some()
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    pub fn record(&self, key: &str) -> JobRecord {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.jobs.get(key).cloned())
            .unwrap_or_default()
    }

    fn save_state(&self) {
        let bytes = match self.state.lock() {
            Ok(s) => serde_json::to_vec_pretty(&*s).unwrap_or_default(),
            Err(_) => return,
        };
        if let Err(e) = crate::storage::local::write_private_file(&self.state_path, &bytes) {
            tracing::warn!("cannot save the schedule's state: {e}");
        }
    }

    /// The repository the catalog reads through (opened once: one key derivation).
    fn catalog_repo(&self, reopen: bool) -> Result<Arc<Repository>> {
        let mut slot = self
            .catalog_repo
            .lock()
            .map_err(|_| Error::internal("catalog lock poisoned"))?;
        if let (Some(r), false) = (slot.as_ref(), reopen) {
            return Ok(r.clone());
        }
        let repo = Arc::new(work::open(self)?);
        *slot = Some(repo.clone());
        Ok(repo)
    }

    /// Read what changed in the repository into the catalog, and the repository-wide
    /// metrics with it.
    pub fn refresh_catalog(&self) -> Result<()> {
        let target = metrics::target(&self.opener().location);
        let read = self.read_catalog();
        match &read {
            Ok(()) => {
                self.metrics.target_up.get_or_create(&target).set(1);
            }
            Err(e) if e.kind == ErrorKind::Storage || e.kind == ErrorKind::NotFound => {
                self.metrics.target_up.get_or_create(&target).set(0);
                self.metrics.target_errors.get_or_create(&target).inc();
            }
            Err(_) => {}
        }
        read
    }

    fn read_catalog(&self) -> Result<()> {
        let repo = self.catalog_repo(false)?;
        let known = self.catalog.read().map(|c| c.seen()).unwrap_or_default();
        let read_records = self.catalog.read().is_ok_and(|c| c.records_due());
        let mut changes = catalog::Catalog::fetch(&repo, &known, read_records);
        if changes.as_ref().is_ok_and(|c| c.unreadable > 0) {
            // Keys may have changed (a rotation): open again and read once more.
            let repo = self.catalog_repo(true)?;
            changes = catalog::Catalog::fetch(&repo, &known, read_records);
        }
        let changes = changes?;
        let first = !self.ready.load(Ordering::SeqCst);
        if let Ok(mut c) = self.catalog.write() {
            let changed = c.apply(changes);
            self.metrics.repo_backups.set(c.len() as i64);
            // Sizing lists every pack: only when backups came or went.
            if changed > 0 || first {
                drop(c);
                if let Ok(b) = repo.stored_bytes() {
                    self.metrics.repo_size.set(b as i64);
                    if let Ok(mut c) = self.catalog.write() {
                        c.repo_stored_bytes = Some(b);
                    }
                }
            }
        }
        self.update_source_metrics();
        *self
            .replicating
            .lock()
            .map_err(|_| Error::internal("lock"))? = crate::ops::status::replicating(&repo);
        self.update_lag_metrics();
        Ok(())
    }

    fn update_source_metrics(&self) {
        let cfg = self.config();
        let catalog = match self.catalog.read() {
            Ok(c) => c,
            Err(_) => return,
        };
        for s in &cfg.sources {
            let label = metrics::source(&s.name);
            // The failure counter exists (at 0) before the first failure: Prometheus'
            // increase() does not see a series that is born at 1, so the first failure of
            // a source would never alert. Same labels as work::backup's failure.
            self.metrics
                .backups
                .get_or_create(&metrics::BackupLabels {
                    source: s.name.clone(),
                    kind: s.kind.map(|k| k.name().to_string()).unwrap_or_default(),
                    status: "failure".into(),
                })
                .inc_by(0);
            if let Some(e) = catalog.newest_of(&s.key) {
                self.metrics.last_success.get_or_create(&label).set(e.unix);
                self.metrics
                    .last_size
                    .get_or_create(&label)
                    .set(e.size_bytes as i64);
            }
            if let Some(p) = s.schedule.period(&cfg.tz) {
                self.metrics
                    .backup_interval
                    .get_or_create(&label)
                    .set(p.as_secs() as i64);
            }
            let verified = catalog
                .of_source(&s.key)
                .filter_map(|e| {
                    e.verified
                        .as_ref()?
                        .get("verified")?
                        .as_str()?
                        .parse::<jiff::Timestamp>()
                        .ok()
                })
                .max();
            if let Some(t) = verified {
                self.metrics
                    .verify_last_success
                    .get_or_create(&label)
                    .set(t.as_second());
            }
        }
    }

    /// Lag of each continuous source, and `replication.lagging` / `replication.caught_up`
    /// when it crosses `[daemon] lag_alert`.
    fn update_lag_metrics(&self) {
        let cfg = self.config();
        let lags: Vec<(String, f64)> = match self.replicating.lock() {
            Ok(r) => cfg
                .sources
                .iter()
                .filter(|s| s.schedule.is_continuous())
                .filter_map(|s| {
                    r.iter()
                        .find(|x| x.source == s.key)
                        .map(|rep| (s.name.clone(), rep.lag_s))
                })
                .collect(),
            Err(_) => return,
        };
        let limit = cfg.lag_alert.as_secs_f64();
        for (name, lag) in lags {
            self.metrics
                .replication_lag
                .get_or_create(&metrics::source(&name))
                .set(lag);
            let Ok(mut lagging) = self.lagging.lock() else {
                continue;
            };
            if lag > limit && lagging.insert(name.clone()) {
                self.emit(
                    Event::new(
                        "replication.lagging",
                        Some(&name),
                        format!("replication of {name} is {lag:.0} s behind"),
                    )
                    .details(serde_json::json!({"lag_s": lag, "limit_s": limit})),
                );
            } else if lag <= limit && lagging.remove(&name) {
                self.emit(
                    Event::new(
                        "replication.caught_up",
                        Some(&name),
                        format!("replication of {name} caught up ({lag:.1} s behind)"),
                    )
                    .details(serde_json::json!({"lag_s": lag, "limit_s": limit})),
                );
            }
        }
    }

    fn reload(&self) {
        match load(&self.opts) {
            Ok((file, cfg)) => {
                if cfg.listen != self.config().listen || cfg.tls != self.config().tls {
                    tracing::warn!(
                        "reload: [daemon] listen and TLS change at the next start, not on reload"
                    );
                }
                let hooks = Webhooks::new(
                    cfg.webhooks.clone(),
                    self.log_path.clone(),
                    self.runtime.clone(),
                    {
                        let failures = self.metrics.webhook_failures.clone();
                        Arc::new(move |event: &str| {
                            failures
                                .get_or_create(&metrics::EventLabel {
                                    event: event.into(),
                                })
                                .inc();
                        })
                    },
                );
                let opener = opener_for(&self.opts, &file);
                let n = cfg.sources.len();
                if let Ok(mut w) = self.opener.write() {
                    *w = Arc::new(opener);
                }
                if let Ok(mut w) = self.webhooks.write() {
                    *w = Arc::new(hooks);
                }
                if let Ok(mut w) = self.file.write() {
                    *w = Arc::new(file);
                }
                if let Ok(mut w) = self.cfg.write() {
                    *w = Arc::new(cfg);
                }
                if let Ok(mut slot) = self.catalog_repo.lock() {
                    *slot = None;
                }
                self.metrics
                    .config_reloads
                    .get_or_create(&metrics::EventLabel {
                        event: "success".into(),
                    })
                    .inc();
                tracing::info!("config reloaded: {n} source(s)");
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .get_or_create(&metrics::EventLabel {
                        event: "failure".into(),
                    })
                    .inc();
                tracing::error!(
                    "config not reloaded, the old one stays: {}{}",
                    e.message,
                    e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
                );
            }
        }
    }
}

/// The value behind a reloadable setting (a poisoned lock still holds a whole value).
fn current<T>(slot: &RwLock<Arc<T>>) -> Arc<T> {
    match slot.read() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    }
}
