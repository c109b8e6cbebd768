//! `lifeboat daemon`: one process that runs every source's jobs on their schedules (backups,
//! continuous replication, verify, restore drills, health checks, retention), serves the
//! HTTP API, `/metrics` and the status page, and posts webhooks. It calls the same engine
//! as the CLI; this module owns the life cycle (lock, start, reload on SIGHUP, clean stop on
//! SIGTERM) and the scheduler.

pub mod api;
pub mod catalog;
pub mod config;
mod download;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod schedule;
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
use config::{DaemonConfig, Source};
use jobs::{Job, JobKind, Jobs};
use serde::{Deserialize, Serialize};
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

/// What one job of the schedule remembers across restarts.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub last_run: Option<String>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    /// Outcomes of the last runs, oldest first (the success rate).
    #[serde(default)]
    pub recent: Vec<bool>,
    /// A failed run is retried at this time.
    pub retry_at: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

impl JobRecord {
    pub fn success_rate(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().filter(|ok| **ok).count() as f64 / self.recent.len() as f64)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    jobs: BTreeMap<String, JobRecord>,
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

/// The files of one daemon: keyed by its config file, so two daemons with different
/// configs can share a state folder and a second one on the same config is refused.
fn state_files(cfg: &DaemonConfig) -> (PathBuf, PathBuf, PathBuf) {
    // The file found, however it was named (--config, LIFEBOAT_CONFIG, the default places).
    let key = cfg
        .config_file
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "default".into());
    let h = hex::encode(&blake3::hash(key.as_bytes()).as_bytes()[..8]);
    let d = &cfg.state_dir;
    (
        d.join(format!("daemon-{h}.lock")),
        d.join(format!("daemon-{h}.json")),
        d.join(format!("daemon-{h}-webhooks.log")),
    )
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The state folder, made if missing, and private: it must be this user's, and a folder
/// others could read or write (made before, say by `mkdir`) is narrowed to 0700, so that no
/// one else can read the delivery log or plant a file or link where the daemon writes.
fn private_state_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    crate::storage::local::create_private_dir(dir)?;
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("cannot read", dir, e))?;
    let me = euid();
    if meta.uid() != me {
        return Err(Error::usage(format!(
            "the daemon's state folder {} belongs to user {}, not to this one ({me})",
            dir.display(),
            meta.uid()
        ))
        .hint("set [daemon] state_dir to a folder of the user the daemon runs as"));
    }
    if meta.mode() & 0o077 != 0 {
        // Not through a link: whoever could put one in place of the folder would have the
        // daemon (say as root) narrow a folder of their choice, /etc or /usr/bin.
        let linked =
            std::fs::symlink_metadata(dir).map_err(|e| Error::io("cannot read", dir, e))?;
        if linked.file_type().is_symlink() {
            return Err(Error::usage(format!(
                "the daemon's state folder {} is a link to a folder open to other users (mode {:o}): not changed",
                dir.display(),
                meta.mode() & 0o7777
            ))
            .hint("set [daemon] state_dir to a private folder (mode 700), not a link to a shared one"));
        }
        tracing::warn!(
            "the daemon's state folder {} was open to other users (mode {:o}): now 700",
            dir.display(),
            meta.mode() & 0o7777
        );
        // Through the folder opened without following a link (the one just checked).
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)
            .and_then(|f| {
                if f.metadata()?.uid() != me {
                    return Err(std::io::Error::other("it changed owner"));
                }
                f.set_permissions(std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| Error::io("cannot make private", dir, e))?;
    }
    Ok(())
}

/// A file of the state folder, if it is there, is a file (not a link) and is this user's.
fn read_own_file(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.uid() != euid() {
        tracing::warn!("{} is not a file of this user: ignored", path.display());
        return None;
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn take_lock(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("cannot open the daemon's lock", path, e))?;
    let owner = f
        .metadata()
        .map_err(|e| Error::io("cannot open the daemon's lock", path, e))?
        .uid();
    if owner != euid() {
        return Err(Error::usage(format!(
            "the daemon's lock {} belongs to user {owner}, not to this one",
            path.display()
        ))
        .hint("remove it (someone else made it in the state folder)"));
    }
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            // The holder's pid, for the message of a second daemon.
            use std::io::Write;
            let _ = f.set_len(0);
            let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(f)
        }
        Err(_) => {
            let pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .map(|p| format!("pid {p}, "))
                .unwrap_or_default();
            Err(Error::new(
                ErrorKind::InUse,
                format!(
                    "another lifeboat daemon is running with this config ({pid}it holds {})",
                    path.display()
                ),
            )
            .hint("stop it first (systemctl stop lifeboat), or give this one another config"))
        }
    }
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
        // At the default location a first start creates it, as a first backup would.
        let repo = Arc::new(self.opener().open_or_init(false)?.0);
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

    /// The scheduler: every second, start each job that is due. Returns when asked to stop.
    fn scheduler(self: &Arc<Self>, reload: &AtomicBool) {
        // Just read at start when ready.
        let mut last_refresh: Option<Instant> =
            self.ready.load(Ordering::SeqCst).then(Instant::now);
        loop {
            if self.stopping() {
                self.stopping.store(true, Ordering::SeqCst);
                return;
            }
            if reload.swap(false, Ordering::SeqCst) {
                self.reload();
                last_refresh = None;
            }
            let refresh = self.config().refresh;
            if last_refresh.is_none_or(|t| t.elapsed() >= refresh) {
                match self.refresh_catalog() {
                    Ok(()) => {
                        self.ready.store(true, Ordering::SeqCst);
                        last_refresh = Some(Instant::now());
                    }
                    Err(e) => {
                        tracing::error!("cannot read the repository: {e}");
                        // Retried at the next tick, but not more than every 5 s.
                        let wait = Duration::from_secs(5).min(refresh);
                        last_refresh = Instant::now().checked_sub(refresh - wait);
                    }
                }
            }
            if self.ready.load(Ordering::SeqCst) {
                self.start_due_jobs();
            }
            std::thread::sleep(Duration::from_millis(250).min(tick_left()));
        }
    }

    /// When job `key` runs next, and why; None: not due.
    fn due(
        &self,
        key: &str,
        sched: &schedule::Schedule,
        newest_backup: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> Option<(jiff::Timestamp, &'static str)> {
        let rec = self.record(key);
        if let Some(at) = rec
            .retry_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            return Some((at, "retry"));
        }
        let (next, last) =
            next_by_schedule(key, &rec, sched, newest_backup, now, &self.config().tz)?;
        let why = if last.is_some() && next < self.started {
            "catch-up"
        } else {
            "schedule"
        };
        Some((next, why))
    }

    fn start_due_jobs(self: &Arc<Self>) {
        let cfg = self.config();
        let now = jiff::Timestamp::now();
        for s in &cfg.sources {
            let (newest, has_backup) = match self.catalog.read() {
                Ok(c) => {
                    let n = c.newest_of(&s.key);
                    (n.and_then(|e| e.timestamp()), n.is_some())
                }
                Err(_) => continue,
            };
            if s.schedule.is_continuous() {
                if !self.jobs.pending(JobKind::Replicate, Some(&s.name)) {
                    let key = job_key(JobKind::Replicate, &s.name);
                    let retry = self
                        .record(&key)
                        .retry_at
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                    if retry.is_none_or(|t| t <= now) {
                        let why = if retry.is_some() { "retry" } else { "schedule" };
                        self.spawn(JobKind::Replicate, s, None, why, Vec::new());
                    }
                }
            } else if let Some((next, why)) =
                self.due(&job_key(JobKind::Backup, &s.name), &s.schedule, newest, now)
            {
                self.metrics
                    .next_run
                    .get_or_create(&metrics::source(&s.name))
                    .set(next.as_second());
                if next <= now && !self.jobs.pending(JobKind::Backup, Some(&s.name)) {
                    self.spawn(JobKind::Backup, s, None, why, Vec::new());
                }
            }
            let others = [
                (JobKind::Verify, s.verify.as_ref(), true),
                (JobKind::Drill, s.drill.as_ref(), true),
                (JobKind::Health, Some(&s.health), false),
            ];
            // A source's checks wait for its pending backup (at a first start both are due in
            // one tick, and a health check that took the source first found no backup).
            let backing_up = self.jobs.pending(JobKind::Backup, Some(&s.name));
            for (kind, sched, needs_backup) in others {
                let Some(sched) = sched else { continue };
                if (needs_backup && !has_backup) || backing_up {
                    continue;
                }
                if self.jobs.pending(kind, Some(&s.name)) {
                    continue;
                }
                if let Some((next, why)) = self.due(&job_key(kind, &s.name), sched, None, now) {
                    if next <= now {
                        self.spawn(kind, s, None, why, Vec::new());
                    }
                }
            }
        }
        if let Some(sched) = &cfg.retention {
            if !self.jobs.pending(JobKind::Retention, None) {
                if let Some((next, why)) =
                    self.due(&job_key(JobKind::Retention, ""), sched, None, now)
                {
                    if next <= now {
                        self.spawn_job(
                            JobKind::Retention,
                            None,
                            None,
                            why,
                            Box::new(work::retention),
                        );
                    }
                }
            }
        }
    }

    /// Start a job of source `s` (`backup`: the one a verify, drill or restore works on).
    pub fn spawn(
        self: &Arc<Self>,
        kind: JobKind,
        s: &Source,
        backup: Option<String>,
        trigger: &str,
        tags: Vec<String>,
    ) -> Arc<Job> {
        let body = source_body(kind, s, backup.clone(), trigger, tags);
        self.spawn_job(kind, Some(s.name.clone()), backup, trigger, body)
    }

    /// Start a job the API asked for, unless too many are waiting already (`Jobs::admit`):
    /// then why not.
    pub fn spawn_api_job(
        self: &Arc<Self>,
        kind: JobKind,
        source: Option<String>,
        backup: Option<String>,
        trigger: &str,
        body: Body,
    ) -> std::result::Result<Arc<Job>, String> {
        let job = self.jobs.admit(Job::new(
            kind,
            source.as_deref(),
            backup.as_deref(),
            trigger,
        ))?;
        self.launch(job.clone(), kind, source, trigger, body);
        Ok(job)
    }

    /// Start a job: it waits for its source to be free, runs `body` on its own thread,
    /// then records the outcome (state file, retries, metrics).
    pub fn spawn_job(
        self: &Arc<Self>,
        kind: JobKind,
        source: Option<String>,
        backup: Option<String>,
        trigger: &str,
        body: Body,
    ) -> Arc<Job> {
        let key = job_key(kind, source.as_deref().unwrap_or(""));
        let attempt = self.record(&key).attempts + 1;
        let job = Job::new(kind, source.as_deref(), backup.as_deref(), trigger);
        job.with(|v| v.attempt = if trigger == "retry" { attempt } else { 1 });
        let job = self.jobs.add(job);
        self.launch(job.clone(), kind, source, trigger, body);
        job
    }

    fn launch(
        self: &Arc<Self>,
        job: Arc<Job>,
        kind: JobKind,
        source: Option<String>,
        trigger: &str,
        body: Body,
    ) {
        let key = job_key(kind, source.as_deref().unwrap_or(""));
        let d = self.clone();
        let j = job.clone();
        let scheduled = matches!(trigger, "schedule" | "catch-up" | "retry");
        let spawned = std::thread::Builder::new()
            .name(format!("job-{}", kind.name()))
            .spawn(move || {
                // A replication runs for ever; the others take their source in turn.
                let hold_key = match (kind, &source) {
                    (JobKind::Replicate, Some(s)) => format!("replicate:{s}"),
                    (JobKind::Retention, _) => "@retention".to_string(),
                    (_, Some(s)) => s.clone(),
                    (_, None) => "@repository".to_string(),
                };
                let Some(_held) = d.jobs.hold(&hold_key, &|| d.stopping()) else {
                    j.finish(&Err(Error::new(
                        ErrorKind::Interrupted,
                        "the daemon stopped before this job started",
                    )));
                    return;
                };
                let started = jiff::Timestamp::now();
                j.start();
                d.metrics.jobs_running.inc();
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&d, &j)))
                        .unwrap_or_else(|_| {
                            Err(Error::internal(format!("the {} job panicked", kind.name())))
                        });
                d.metrics.jobs_running.dec();
                // Recorded before the job shows finished: a scheduler tick in between saw
                // neither the job pending nor its run recorded, and started it again.
                d.after_job(&key, kind, source.as_deref(), started, scheduled, &outcome);
                j.finish(&outcome);
            });
        if let Err(e) = spawned {
            job.finish(&Err(Error::internal(format!("cannot start a thread: {e}"))));
        }
    }

    fn after_job(
        &self,
        key: &str,
        kind: JobKind,
        source: Option<&str>,
        started: jiff::Timestamp,
        scheduled: bool,
        outcome: &Result<serde_json::Value>,
    ) {
        if let Err(e) = outcome {
            if e.kind == ErrorKind::Interrupted {
                tracing::warn!(
                    "{} job of {} abandoned: {}",
                    kind.name(),
                    source.unwrap_or("the repository"),
                    e.message
                );
                return; // Nothing recorded: it runs again at the next start.
            }
            self.metrics
                .job_failures
                .get_or_create(&metrics::JobLabels {
                    source: source.unwrap_or("").into(),
                    job: kind.name().into(),
                })
                .inc();
            tracing::error!(
                "{} job of {} failed: {}",
                kind.name(),
                source.unwrap_or("the repository"),
                e.message
            );
        }
        let cfg = self.config();
        if let Ok(mut st) = self.state.lock() {
            let rec = st.jobs.entry(key.to_string()).or_default();
            rec.last_ok = Some(outcome.is_ok());
            rec.last_error = outcome.as_ref().err().map(|e| e.message.clone());
            rec.recent.push(outcome.is_ok());
            if rec.recent.len() > 30 {
                rec.recent.remove(0);
            }
            match outcome {
                // A failed API or CLI-triggered job leaves the schedule (and a retry it
                // waits for) as it was.
                Err(_) if !scheduled => {}
                Err(_) if rec.attempts < cfg.retries => {
                    rec.attempts += 1;
                    let at = backoff(cfg.retry_delay, rec.attempts - 1);
                    rec.retry_at = Some(at.to_string());
                    tracing::info!("{key}: retry {} of {} at {at}", rec.attempts, cfg.retries);
                }
                _ => {
                    rec.retry_at = None;
                    rec.attempts = 0;
                    if kind == JobKind::Replicate && scheduled && outcome.is_err() {
                        // A replication has no next run to wait for: after its retries it
                        // waits as long as one more would, then starts a new round (else it
                        // would be started again at the next tick, four times a second).
                        let at = backoff(cfg.retry_delay, cfg.retries);
                        rec.retry_at = Some(at.to_string());
                        tracing::info!("{key}: started again at {at}");
                    }
                    if scheduled || rec.last_run.is_none() || outcome.is_ok() {
                        rec.last_run = Some(started.to_string());
                    }
                }
            }
        }
        self.save_state();
    }
}

/// The body of a job of source `s` (`backup`: the one a verify or drill works on).
pub fn source_body(
    kind: JobKind,
    s: &Source,
    backup: Option<String>,
    trigger: &str,
    tags: Vec<String>,
) -> Body {
    let src = s.clone();
    let t = trigger.to_string();
    match kind {
        JobKind::Backup => Box::new(move |d, job| work::backup(d, &src, job, &tags, &t)),
        JobKind::Verify => {
            Box::new(move |d, job| work::verify(d, Some(&src), backup.as_deref(), job))
        }
        JobKind::Drill => {
            Box::new(move |d, job| work::drill(d, Some(&src), backup.as_deref(), job))
        }
        JobKind::Health => Box::new(move |d, job| work::health(d, &src, job)),
        JobKind::Replicate => Box::new(move |d, job| work::replicate(d, &src, job)),
        JobKind::Retention | JobKind::Restore => {
            Box::new(|_, _| Err(Error::internal("not a source job")))
        }
    }
}

/// When job `key` runs next by its schedule, after its last run or the source's newest
/// backup, whichever is later; and that time.
fn next_by_schedule(
    key: &str,
    rec: &JobRecord,
    sched: &schedule::Schedule,
    newest_backup: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Option<(jiff::Timestamp, Option<jiff::Timestamp>)> {
    let ran = rec
        .last_run
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let last = ran.max(newest_backup);
    // The jitter of a job stays the same across restarts.
    let seed = u64::from_le_bytes(
        blake3::hash(key.as_bytes()).as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    Some((sched.next_run(last, now, tz, seed)?, last))
}

/// Now plus `delay` doubled `doublings` times (at most 2^16): when a retry runs.
fn backoff(delay: Duration, doublings: u32) -> jiff::Timestamp {
    let wait = delay.saturating_mul(1 << doublings.min(16));
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The value behind a reloadable setting (a poisoned lock still holds a whole value).
fn current<T>(slot: &RwLock<Arc<T>>) -> Arc<T> {
    match slot.read() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

pub type Body = Box<dyn FnOnce(&Arc<Daemon>, &Job) -> Result<serde_json::Value> + Send>;

pub fn job_key(kind: JobKind, source: &str) -> String {
    format!("{}:{source}", kind.name())
}

/// What is left of this second: the scheduler wakes on whole seconds, so a schedule of
/// `every 1s` keeps its pace without a busy loop.
fn tick_left() -> Duration {
    let ms = jiff::Timestamp::now().subsec_millisecond() as u64;
    Duration::from_millis(1000 - ms.min(999))
}
