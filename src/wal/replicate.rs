//! `lifeboat replicate`: ship every transaction committed to live SQLite databases, within
//! an interval, as write-once segments; take bases that bound restore time; resume after a
//! restart without a gap, a duplicate or a full upload.
//!
//! How the `-wal` file is kept readable (docs/REPLICATION.md says why): Lifeboat always holds
//! a read transaction (a *pin*) on the database. While a reader is in the WAL, SQLite never
//! restarts it, so no frame Lifeboat has not read is overwritten. The pin moves forward by a
//! hand-over: a second connection begins a read transaction, the WAL is read to its end, then
//! the first ends its own. Because a pin stops the application's checkpoints from ever
//! restarting the WAL, Lifeboat restarts it itself when it grows past ~1,000 pages: holding
//! SQLite's write lock for a moment (`BEGIN IMMEDIATE`, which writes nothing), it reads the
//! last frames, lets go of its pins, runs a PASSIVE checkpoint and pins again; the next
//! writer then starts the WAL over. The same moment under the write lock aligns a base (its
//! snapshot is exactly the state after the commits read) and a restart of Lifeboat.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::id::Hash;
use crate::ops::backup::BackupOptions;
use crate::repo::manifest::{Manifest, WalLink};
use crate::repo::segment::{self, CommitRec, Segment, SegmentHeader, WalPos, TARGET_DATA};
use crate::repo::Repository;
use crate::source::sqlite::{SqliteSnapshot, SqliteSource};
use crate::source::Snapshot;
use crate::wal::frames::{Scan, WalFile, WalHeader};
use crate::wal::streams;
use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of a `replicate` run.
pub struct ReplicateOptions {
    pub databases: Vec<SourceSettings>,
    pub compression: crate::repo::compress::Compression,
    pub verify: crate::ops::VerifyLevel,
    pub transfers: usize,
    /// Replicas from the config file (bases are synced to every replica after they commit).
    pub configured_replicas: Vec<String>,
    /// Where notices go (stderr for the CLI).
    pub say: Arc<dyn Fn(&str) + Send + Sync>,
}

/// One database and its settings.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub path: PathBuf,
    /// The longest a commit waits before it is shipped.
    pub interval: Duration,
    /// A new base after this long.
    pub base_every: Duration,
}

/// What one database's replication did, printed when it stops.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DbReport {
    pub source: String,
    pub stream: String,
    /// How it started: `new stream`, `resumed` (the WAL still held every commit after the
    /// last one shipped) or `caught up` (the changed pages were found by comparison).
    pub start: String,
    pub segments: u64,
    pub commits: u64,
    /// Bytes of segments stored (compressed, sealed).
    pub bytes_shipped: u64,
    /// Bytes shipped again at start-up for commits already shipped before (0 when resumed).
    pub reshipped_bytes: u64,
    pub bases: u64,
    pub base_failures: u64,
}

/// Run until a signal (or a fatal error); each database in its own thread.
pub fn replicate(repo: &Repository, opts: &ReplicateOptions) -> Result<Vec<DbReport>> {
    bounded_allocator();
    repo.require_writable("replicate")?;
    if !repo.has_feature(segment::FEATURE) {
        return Err(Error::usage(format!(
            "the repository at {} was made before continuous replication: it cannot hold \
             segments yet",
            repo.location()
        ))
        .hint("run `lifeboat repo upgrade` (Lifeboat versions before this one can then no longer open the repository)"));
    }
    let mut fences = Vec::new();
    for source in &opts.databases {
        let abs = crate::ops::backup::absolute(&source.path)?;
        crate::source::sqlite::check_is_sqlite(&abs)?;
        let settings = SourceSettings {
            path: abs.clone(),
            ..source.clone()
        };
        fences.push((settings, Fence::take(&abs)?));
    }
    let stop = AtomicBool::new(false);
    let results: Vec<Result<DbReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = fences
            .iter()
            .map(|(settings, fence)| {
                let stop = &stop;
                s.spawn(move || {
                    let r = run_source(repo, settings, fence, opts, stop);
                    if r.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a replication thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

fn stopping(stop: &AtomicBool) -> bool {
    stop.load(Ordering::SeqCst) || crate::interrupt::received().is_some()
}

/// One database, through replacements: a database replaced or deleted ends its stream; a
/// new one starts when it is back.
fn run_source(
    repo: &Repository,
    settings: &SourceSettings,
    fence: &Fence,
    opts: &ReplicateOptions,
    stop: &AtomicBool,
) -> Result<DbReport> {
    let db = settings.path.as_path();
    let mut total = DbReport {
        source: db.display().to_string(),
        ..Default::default()
    };
    let mut fresh = false;
    loop {
        let outcome = Replicator::run(repo, settings, fence, opts, stop, fresh)?;
        total.add(&outcome.report);
        if !outcome.replaced || stopping(stop) {
            return Ok(total);
        }
        fresh = true;
        (opts.say)(&format!(
            "{} was replaced or removed: its stream {} ends here; a new stream starts when it \
             is back",
            db.display(),
            outcome.report.stream
        ));
        while !stopping(stop) && crate::source::sqlite::check_is_sqlite(db).is_err() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl DbReport {
    fn add(&mut self, o: &DbReport) {
        self.stream = o.stream.clone();
        if self.start.is_empty() {
            self.start = o.start.clone();
        }
        self.segments += o.segments;
        self.commits += o.commits;
        self.bytes_shipped += o.bytes_shipped;
        self.reshipped_bytes += o.reshipped_bytes;
        self.bases += o.bases;
        self.base_failures += o.base_failures;
    }
}

/// The local lock that fences off a second `replicate` of the same database, and the status
/// file `lifeboat status` reads (`$XDG_STATE_HOME/lifeboat/replicate/<hash of the path>`).
pub struct Fence {
    _lock: File,
    status: PathBuf,
}

pub fn state_dir() -> PathBuf {
    crate::trust::state_home().join("replicate")
}

fn state_name(db: &Path) -> String {
    let h = blake3::hash(db.as_os_str().as_encoded_bytes());
    hex::encode(&h.as_bytes()[..16])
}

impl Fence {
    fn take(db: &Path) -> Result<Fence> {
        use std::io::{Read, Seek, Write};
        let dir = state_dir();
        crate::storage::local::create_private_dir(&dir)?;
        let name = state_name(db);
        let path = dir.join(format!("{name}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .ctx("cannot open", &path)?;
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(Error::new(
                ErrorKind::InUse,
                format!(
                    "another `lifeboat replicate` (pid {}) is shipping {}",
                    pid.trim(),
                    db.display()
                ),
            )
            .hint("stop it first: two would ship the same commits into separate streams"));
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        Ok(Fence {
            _lock: f,
            status: dir.join(format!("{name}.json")),
        })
    }
}

/// What `status` shows of a running replication (written about once a second).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LiveStatus {
    pub source: String,
    pub pid: u32,
    pub repo: String,
    pub stream: String,
    /// Newest commit shipped to the primary (RFC 3339), if any.
    pub last_shipped: Option<String>,
    /// Oldest commit not yet shipped: its age is the lag.
    pub oldest_unshipped: Option<String>,
    pub updated: String,
}

impl LiveStatus {
    /// Seconds the oldest commit not stored yet has waited (0 when everything is stored).
    pub fn lag_s(&self) -> f64 {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        self.oldest_unshipped
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0.0, |t| {
                (now_ms - t.as_millisecond()).max(0) as f64 / 1000.0
            })
    }
}

/// The status files of replications running on this machine (stale ones, of a process that
/// is gone, are left out).
pub fn live_statuses() -> Vec<LiveStatus> {
    let Ok(dir) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            if let Some(s) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<LiveStatus>(&b).ok())
            {
                if Path::new(&format!("/proc/{}", s.pid)).exists() {
                    out.push(s);
                }
            }
        }
    }
    out.sort_by(|a, b| a.source.cmp(&b.source));
    out
}

fn rfc3339_ns(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A long-running process that moves 8 MiB buffers between threads: with glibc's defaults
/// the mmap threshold climbs to 32 MiB after the first large free, so such buffers land in
/// per-thread arenas that keep them after they are freed, and the resident size grows to
/// several times what is in use. A fixed threshold (which disables the climb) returns every
/// buffer of 1 MiB or more to the system when it is freed.
fn bounded_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Give the calling thread (and the threads it starts) a lower CPU priority (nice 5): on a
/// busy machine the thread that dates commits and the loop that ships them go first, the
/// compression of bases and segments after. Linux applies this per thread.
fn lower_priority() {
    // SAFETY: a plain syscall on the calling thread; failure changes nothing.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 5);
    }
}

pub(crate) fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

fn open_conn(db: &Path, writable: bool) -> Result<Connection> {
    let mode = if writable {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let c = Connection::open_with_flags(
        db,
        mode | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::source(format!("cannot open {}: {e}", db.display())))?;
    c.busy_timeout(Duration::from_secs(5))
        .map_err(|e| Error::source(format!("cannot open {}: {e}", db.display())))?;
    Ok(c)
}

fn sql_err(db: &Path, what: &str) -> impl Fn(rusqlite::Error) -> Error {
    let what = what.to_string();
    let db = db.to_path_buf();
    move |e| Error::source(format!("{what} {}: {e}", db.display()))
}

fn pin(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN")?;
    c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
}

fn unpin(c: &Connection) {
    let _ = c.execute_batch("COMMIT");
}

/// A commit read from the WAL and not yet handed to the shipper.
struct Pending {
    rec: CommitRec,
    data: Vec<u8>,
    /// The WAL position after it (None for a part of a commit that continues).
    pos: Option<WalPos>,
}

/// A segment on its way to the targets, and what shipping it told the loop.
struct Outgoing {
    segment: Segment,
}

/// What the shipper thread reports back.
#[derive(Default)]
struct Shipped {
    segments: AtomicU64,
    commits: AtomicU64,
    bytes: AtomicU64,
    /// Newest commit time shipped (ns), 0 if none.
    last_ns: AtomicI64,
    /// Page bytes handed over and not yet stored.
    in_flight: AtomicUsize,
    /// First commit time (ns) of each segment handed over and not yet stored, oldest first.
    queued: Mutex<std::collections::VecDeque<i64>>,
    failed: Mutex<Option<Error>>,
}

struct Outcome {
    report: DbReport,
    replaced: bool,
}

/// Outcome of a base running in the background.
type BaseResult = Result<Manifest>;

struct Replicator<'a> {
    // Fields drop in this order: the read-write connections first, while the read-only pins
    // keep them from being the last connection (which would checkpoint and delete the WAL),
    // then the pins, then our descriptor of the database.
    /// Read-write: `BEGIN IMMEDIATE` (the write lock, nothing written) and checkpoints.
    gate: Connection,
    checkpointer: Connection,
    /// Two read-only connections: one holds the pin, the other takes it over.
    pins: [Connection; 2],
    /// Our descriptor of the `-shm` file (the clock reads SQLite's WAL index through it),
    /// closed only after the connections, like `db_file`.
    shm_file: Arc<File>,
    /// Held until every connection has closed: closing any descriptor of the database would
    /// drop this process's SQLite locks on it (POSIX), so none is ever closed before.
    db_file: Arc<File>,
    pinned: usize,
    repo: &'a Repository,
    db: PathBuf,
    opts: &'a ReplicateOptions,
    identity: (u64, u64),
    wal: WalFile,
    interval: Duration,
    base_every: Duration,
    /// SQLite's write lock is held (`with_gate`): nothing may wait on uploads.
    gated: bool,
    /// When each commit appeared, and a nudge when one did.
    clock: Arc<crate::wal::clock::Clock>,
    wake: Receiver<()>,
    /// Time given to the newest commit read (times never go backwards).
    last_commit_ns: i64,
    /// Where closed segments go (the shipper thread), and what it reports back.
    tx: Sender<Outgoing>,
    shipped: Arc<Shipped>,
    /// A new stream replaced one that had bases: the first base's new bytes count as
    /// shipped again.
    reship_base: bool,
    page_size: u32,
    stream: String,
    next_seq: u64,
    /// The position after the last commit read (None: no WAL yet; the next header starts).
    pos: Option<WalPos>,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// When the oldest pending commit was seen.
    oldest_pending: Option<Instant>,
    /// The next commit read stands for commits not seen one by one since this time.
    unseen_since: Option<i64>,
    last_base: Instant,
    base_due: bool,
    last_checkpoint: Instant,
    report: DbReport,
}

enum Start {
    /// Continue stream `stream` at `pos` (the WAL still holds what follows).
    Resume {
        stream: String,
        next_seq: u64,
        prev: Option<blake3::Hash>,
        last_ns: i64,
        pos: Option<WalPos>,
        /// What the repository holds of it (its bases and segments), for a catch-up.
        found: Box<streams::Stream>,
    },
    /// Continue stream `stream`, whose last state is `map` (page ids), by comparison.
    CatchUp {
        stream: String,
        next_seq: u64,
        prev: Option<blake3::Hash>,
        last_ns: i64,
        map: Vec<Hash>,
    },
    /// A new stream; `replaces`: one of this database could not be continued (its base's
    /// new bytes count as shipped again).
    New { replaces: bool },
}

impl<'a> Replicator<'a> {
    fn run(
        repo: &'a Repository,
        settings: &SourceSettings,
        fence: &Fence,
        opts: &'a ReplicateOptions,
        stop: &AtomicBool,
        fresh: bool,
    ) -> Result<Outcome> {
        let db = settings.path.as_path();
        let plan = if fresh {
            Start::New { replaces: false }
        } else {
            plan_start(repo, db, opts)?
        };
        let shipped = Arc::new(Shipped::default());
        // Memory is bounded by bytes, not by segments (`observe` stops reading at 4 ×
        // TARGET_DATA waiting to be stored; commits then wait in the WAL): while a target is
        // down the loop keeps timing commits and never blocks on the queue.
        let (tx, rx) = crossbeam_channel::unbounded::<Outgoing>();
        let clock = Arc::new(crate::wal::clock::Clock::default());
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let mut r = Replicator::open(
            repo,
            settings,
            opts,
            tx,
            shipped.clone(),
            clock.clone(),
            wake_rx,
        )?;
        let observing = AtomicBool::new(false);
        let shm = r.shm_file.clone();
        let wal_path = r.wal.path().to_path_buf();
        let prev = match &plan {
            Start::Resume { prev, .. } | Start::CatchUp { prev, .. } => *prev,
            Start::New { .. } => None,
        };
        std::thread::scope(|s| -> Result<Outcome> {
            let shipper = s.spawn(|| {
                lower_priority();
                ship_loop(repo, &r_targets(repo), rx, &shipped, prev)
            });
            let observer = s.spawn(|| clock.run(&shm, &wal_path, db, &observing, &wake_tx));
            let result = r.replicate(s, plan, &shipped, fence, stop);
            observing.store(true, Ordering::SeqCst);
            let _ = observer.join();
            // Closing the queue lets the shipper finish what it holds and return.
            let (closed, _) = crossbeam_channel::bounded::<Outgoing>(0);
            drop(std::mem::replace(&mut r.tx, closed));
            let shipper_result = shipper
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the shipper thread panicked")));
            r.report.segments = shipped.segments.load(Ordering::SeqCst);
            r.report.commits = shipped.commits.load(Ordering::SeqCst);
            r.report.bytes_shipped = shipped.bytes.load(Ordering::SeqCst);
            r.write_status(fence, &shipped, true);
            shipper_result?;
            let replaced = result?;
            Ok(Outcome {
                report: r.report.clone(),
                replaced,
            })
        })
    }

    fn open(
        repo: &'a Repository,
        settings: &SourceSettings,
        opts: &'a ReplicateOptions,
        tx: Sender<Outgoing>,
        shipped: Arc<Shipped>,
        clock: Arc<crate::wal::clock::Clock>,
        wake: Receiver<()>,
    ) -> Result<Self> {
        let db = settings.path.as_path();
        let db_file = Arc::new(File::open(db).ctx("cannot open", db)?);
        let meta = db_file.metadata().ctx("cannot stat", db)?;
        // Declared before the connections, so that on an early return it is closed after
        // them (locals drop in reverse order).
        let shm_file: Arc<File>;
        let pins = [open_conn(db, false)?, open_conn(db, false)?];
        let mode: String = pins[0]
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(sql_err(db, "cannot read"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::source(format!(
                "{} is in rollback-journal mode (journal_mode={mode}); continuous replication \
                 reads the WAL",
                db.display()
            ))
            .hint("switch the database to WAL mode once (`sqlite3 DB 'PRAGMA journal_mode=WAL'`, it persists), or take scheduled backups with `lifeboat backup` instead"));
        }
        let page_size: u32 = pins[0]
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err(db, "cannot read"))?;
        let shm = crate::wal::clock::shm_path(db);
        shm_file = Arc::new(File::open(&shm).ctx("cannot open", &shm)?);
        let gate = open_conn(db, true)?;
        // A moment at most: the loop must go on shipping while a writer holds the lock (it
        // tries again on its next turn).
        gate.busy_timeout(Duration::from_millis(50))
            .map_err(sql_err(db, "cannot open"))?;
        let checkpointer = open_conn(db, true)?;
        checkpointer
            .busy_timeout(Duration::from_millis(0))
            .map_err(sql_err(db, "cannot open"))?;
        Ok(Replicator {
            repo,
            db: db.to_path_buf(),
            opts,
            db_file,
            identity: (meta.dev(), meta.ino()),
            wal: WalFile::new(db),
            interval: settings.interval,
            base_every: settings.base_every,
            gated: false,
            clock,
            wake,
            last_commit_ns: 0,
            shm_file,
            tx,
            shipped,
            reship_base: false,
            pins,
            pinned: 0,
            gate,
            checkpointer,
            page_size,
            stream: String::new(),
            next_seq: 0,
            pos: None,
            pending: Vec::new(),
            pending_bytes: 0,
            oldest_pending: None,
            unseen_since: None,
            last_base: Instant::now(),
            base_due: false,
            last_checkpoint: Instant::now(),
            report: DbReport {
                source: db.display().to_string(),
                ..Default::default()
            },
        })
    }

    /// Hold SQLite's write lock (nothing is written) while `f` runs: no transaction commits
    /// meanwhile. None if the lock stayed busy (another writer's long transaction).
    fn with_gate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.gate.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(sql_err(&self.db, "cannot lock")(e)),
        }
        self.gated = true;
        let r = f(self);
        self.gated = false;
        let _ = self.gate.execute_batch("ROLLBACK");
        r.map(Some)
    }

    /// The gate, waiting for it as long as it takes (start-up, bases).
    fn with_gate_waiting<T>(
        &mut self,
        stop: &AtomicBool,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<T> {
        loop {
            if let Some(v) = self.with_gate(&mut f)? {
                return Ok(v);
            }
            if stopping(stop) {
                return Err(crate::interrupt::check()
                    .err()
                    .unwrap_or_else(|| Error::internal("stopped")));
            }
            tracing::info!("the database's write lock is busy; waiting");
        }
    }

    fn replicate<'s>(
        &mut self,
        s: &'s std::thread::Scope<'s, '_>,
        plan: Start,
        shipped: &Shipped,
        fence: &Fence,
        stop: &AtomicBool,
    ) -> Result<bool>
    where
        'a: 's,
    {
        let mut base: Option<std::thread::ScopedJoinHandle<'s, BaseResult>> = None;
        self.start(s, plan, stop, &mut base)?;
        let mut last_status = Instant::now() - Duration::from_secs(10);
        let replaced = loop {
            if let Some(e) = shipped
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Err(e);
            }
            if stopping(stop) {
                self.observe()?;
                self.close_segment()?;
                break false;
            }
            if !self.same_file() {
                self.close_segment()?;
                break true;
            }
            self.observe()?;
            let interval = self.interval;
            let margin = (interval / 4).min(Duration::from_millis(300));
            if self
                .oldest_pending
                .is_some_and(|t| t.elapsed() + margin >= interval)
            {
                self.close_segment()?;
            }
            self.checkpoint_if_large(shipped)?;
            if base.as_ref().is_some_and(|h| h.is_finished()) {
                self.finish_base(base.take());
            }
            if base.is_none() && (self.base_due || self.last_base.elapsed() >= self.base_every) {
                self.try_start_base(s, &mut base)?;
            }
            if last_status.elapsed() >= Duration::from_secs(1) {
                self.write_status(fence, shipped, false);
                last_status = Instant::now();
            }
            let wait = match self.oldest_pending {
                Some(t) => {
                    (interval.saturating_sub(t.elapsed() + margin)).min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            let _ = self.wake.recv_timeout(wait);
        };
        if let Some(h) = base.take() {
            self.finish_base(Some(h));
        }
        Ok(replaced)
    }

    fn same_file(&self) -> bool {
        std::fs::metadata(&self.db).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    fn new_stream(&mut self) {
        self.stream = crate::id::new_backup_id(jiff::Timestamp::now().as_millisecond() as u64);
        self.next_seq = 0;
        self.report.stream = self.stream.clone();
    }

    /// Begin: pin the WAL under the write lock, and resume, catch up or start a new stream.
    fn start<'s>(
        &mut self,
        s: &'s std::thread::Scope<'s, '_>,
        plan: Start,
        stop: &AtomicBool,
        base: &mut Option<std::thread::ScopedJoinHandle<'s, BaseResult>>,
    ) -> Result<()>
    where
        'a: 's,
    {
        match plan {
            Start::Resume {
                stream,
                next_seq,
                last_ns,
                pos,
                found,
                ..
            } => {
                let holds = self.with_gate_waiting(stop, |me| {
                    pin(&me.pins[me.pinned]).map_err(sql_err(&me.db, "cannot read"))?;
                    let holds = match &pos {
                        Some(p) => me.wal.holds(p)?,
                        None => false,
                    };
                    if holds {
                        me.pos = pos;
                        // Commits made while Lifeboat was away (read after the lock is let go:
                        // the pin keeps them) are seen only now: the first one says so.
                        let waiting = match &pos {
                            Some(p) => matches!(
                                me.wal.scan(p, me.committed(p))?,
                                Scan::Continues { ref commits, .. } if !commits.is_empty()
                            ),
                            None => false,
                        };
                        if waiting {
                            me.unseen_since = Some(last_ns);
                        }
                    }
                    Ok(holds)
                })?;
                if holds {
                    self.stream = stream;
                    self.next_seq = next_seq;
                    self.last_commit_ns = self.last_commit_ns.max(last_ns);
                    self.report.stream = self.stream.clone();
                    self.report.start = "resumed".into();
                    (self.opts.say)(&format!(
                        "{}: resuming stream {} at segment {next_seq}: the WAL still holds every \
                         commit since the last one shipped",
                        self.db.display(),
                        self.stream
                    ));
                    return Ok(());
                }
                // The WAL moved on while Lifeboat was away: compare.
                match plan_catch_up(self.repo, &found)? {
                    Some(map) => {
                        unpin(&self.pins[self.pinned]);
                        self.start(
                            s,
                            Start::CatchUp {
                                stream,
                                next_seq,
                                prev: None,
                                last_ns,
                                map,
                            },
                            stop,
                            base,
                        )
                    }
                    None => {
                        unpin(&self.pins[self.pinned]);
                        self.start(s, Start::New { replaces: true }, stop, base)
                    }
                }
            }
            Start::CatchUp {
                stream,
                next_seq,
                last_ns,
                map,
                ..
            } => {
                let mut snap = self.with_gate_waiting(stop, |me| {
                    pin(&me.pins[me.pinned]).map_err(sql_err(&me.db, "cannot read"))?;
                    // The snapshot holds what the WAL holds now: read on after its end.
                    me.skip_to_end()?;
                    SqliteSnapshot::open_sharing(&me.db, me.db_file.clone())
                })?;
                self.stream = stream;
                self.next_seq = next_seq;
                self.report.stream = self.stream.clone();
                let changed = self.catch_up(&mut snap, &map, last_ns)?;
                drop(snap);
                match changed {
                    Some(bytes) => {
                        self.report.start = "caught up".into();
                        self.report.reshipped_bytes = 0;
                        (self.opts.say)(&format!(
                            "{}: resumed stream {}: the WAL had been checkpointed meanwhile; \
                             {bytes} bytes of pages changed since the last commit shipped",
                            self.db.display(),
                            self.stream
                        ));
                        Ok(())
                    }
                    None => {
                        unpin(&self.pins[self.pinned]);
                        self.start(s, Start::New { replaces: true }, stop, base)
                    }
                }
            }
            Start::New { replaces } => {
                self.reship_base |= replaces;
                // Pinned, and the base's snapshot opened, under one write lock: the stream
                // starts exactly after what the base holds.
                let snap = self.with_gate_waiting(stop, |me| {
                    pin(&me.pins[me.pinned]).map_err(sql_err(&me.db, "cannot read"))?;
                    me.skip_to_end()?;
                    me.pending.clear();
                    me.pending_bytes = 0;
                    me.oldest_pending = None;
                    SqliteSnapshot::open_sharing(&me.db, me.db_file.clone())
                })?;
                self.new_stream();
                self.report.start = "new stream".into();
                (self.opts.say)(&format!(
                    "{}: new stream {}, starting with a base",
                    self.db.display(),
                    self.stream
                ));
                self.spawn_base(s, snap, base);
                Ok(())
            }
        }
    }

    /// Compare the snapshot's pages with `map` (the state after the last commit shipped);
    /// ship the changed ones as one commit. None when too much changed for that to pay (a
    /// base is cheaper to restore from).
    fn catch_up(
        &mut self,
        snap: &mut SqliteSnapshot,
        map: &[Hash],
        last_ns: i64,
    ) -> Result<Option<u64>> {
        let hasher = self.repo.hasher();
        let ps = self.page_size as usize;
        let pages = (snap.len() / ps as u64) as u32;
        let limit = (snap.len() / 4).max(TARGET_DATA as u64);
        let mut changed = Vec::new();
        let mut data = Vec::new();
        let mut pgno = 0u32;
        let mut too_much = false;
        snap.read_chunks(&mut |chunk| {
            for page in chunk.chunks(ps) {
                pgno += 1;
                let same = map
                    .get(pgno as usize - 1)
                    .is_some_and(|id| hasher.matches(page, id));
                if !same {
                    changed.push(pgno);
                    data.extend_from_slice(page);
                    if data.len() as u64 > limit {
                        too_much = true;
                    }
                }
            }
            Ok(())
        })?;
        if too_much {
            return Ok(None);
        }
        if changed.is_empty() && u64::from(pages) == map.len() as u64 {
            // Nothing changed while Lifeboat was away: no gap to record.
            return Ok(Some(0));
        }
        let bytes = data.len() as u64;
        // Commits read from now on come after this one.
        let time = now_ns().max(self.last_commit_ns);
        self.last_commit_ns = time;
        // Pages in pieces of a segment's size, one commit continued across them.
        let per = (TARGET_DATA / ps).max(1);
        let n = changed.len().div_ceil(per).max(1);
        for i in 0..n {
            let lo = i * per;
            let hi = ((i + 1) * per).min(changed.len());
            let last = i + 1 == n;
            self.pending.push(Pending {
                rec: CommitRec {
                    time_ns: time,
                    db_pages: pages.max(1),
                    pages: changed[lo..hi].to_vec(),
                    unseen_since_ns: (i == 0).then_some(last_ns),
                    continues: !last,
                },
                data: data[lo * ps..hi * ps].to_vec(),
                pos: if last {
                    self.pos.or(Some(WalPos::none()))
                } else {
                    None
                },
            });
            self.pending_bytes += (hi - lo) * ps;
            self.oldest_pending.get_or_insert_with(Instant::now);
            self.close_segment()?;
        }
        Ok(Some(bytes))
    }

    /// Move the pin to the WAL's end and take the commits found on the way.
    fn observe(&mut self) -> Result<()> {
        // While too much waits to be stored (a target that is down), commits stay in the
        // WAL, which the pin keeps: nothing is lost, they are read once the targets catch up.
        if self.pending_bytes + self.shipped.in_flight.load(Ordering::SeqCst) > 4 * TARGET_DATA {
            return Ok(());
        }
        let spare = 1 - self.pinned;
        pin(&self.pins[spare]).map_err(sql_err(&self.db, "cannot read"))?;
        let r = self.read_new_commits();
        unpin(&self.pins[self.pinned]);
        self.pinned = spare;
        r
    }

    /// Read the commits after `pos` to the end of the WAL, into `pending`.
    fn read_new_commits(&mut self) -> Result<()> {
        for _ in 0..4 {
            let Some(pos) = self.pos else {
                match self.wal.header()? {
                    Some(h) => {
                        self.check_page_size(&h)?;
                        self.pos = Some(h.start());
                        continue;
                    }
                    None => return Ok(()),
                }
            };
            match self.wal.scan(&pos, self.committed(&pos))? {
                Scan::NoHeader => return Ok(()),
                Scan::Restarted(h) => {
                    self.check_page_size(&h)?;
                    // A new generation. The pins guarantee every frame of the previous one
                    // was read. Its salts say nothing more: a TRUNCATE checkpoint moves them
                    // on even when the WAL was empty, so a restart may skip numbers.
                    self.pos = Some(h.start());
                }
                Scan::Continues { commits, end } => {
                    let now = now_ns();
                    let frame_len =
                        u64::from(self.page_size) + crate::wal::frames::FRAME_HEADER_LEN;
                    for c in commits {
                        let frame = ((c.end - crate::wal::frames::HEADER_LEN) / frame_len) as u32;
                        let seen = self
                            .clock
                            .time_of(pos.salt1, pos.salt2, frame)
                            .unwrap_or(now);
                        let time = seen.max(self.last_commit_ns);
                        tracing::debug!(frame, seen, time, salt1 = pos.salt1, "commit read");
                        self.last_commit_ns = time;
                        self.take_commit(c, time, &pos)?;
                        // A backlog (a burst, a target that was slow) is shipped as it is read,
                        // never held whole: every commit up to the end must be read before
                        // the pin moves on, so the bound is waiting for the shipper here.
                        if self.pending_bytes >= TARGET_DATA {
                            self.close_segment()?;
                            self.wait_for_shipper();
                        }
                    }
                    self.pos = Some(end);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The last frame of `pos`'s generation that SQLite's WAL index shows committed (0 when
    /// the index is of another generation, or being rewritten: nothing is taken then).
    fn committed(&self, pos: &WalPos) -> u32 {
        match crate::wal::clock::read_index(&self.shm_file) {
            Some(ix) if ix.salt1 == pos.salt1 && ix.salt2 == pos.salt2 => ix.mx_frame,
            _ => 0,
        }
    }

    fn check_page_size(&self, h: &WalHeader) -> Result<()> {
        if h.page_size != self.page_size {
            return Err(Error::source(format!(
                "{}: its WAL has pages of {} bytes, the database {}",
                self.db.display(),
                h.page_size,
                self.page_size
            ))
            .hint(
                "the page size changed (VACUUM with a new page_size): restart `lifeboat replicate`",
            ));
        }
        Ok(())
    }

    fn take_commit(
        &mut self,
        c: crate::wal::frames::FoundCommit,
        time: i64,
        gen: &WalPos,
    ) -> Result<()> {
        let frame_len = u64::from(self.page_size) + crate::wal::frames::FRAME_HEADER_LEN;
        let mut cur = Pending {
            rec: CommitRec {
                time_ns: time,
                db_pages: c.db_pages,
                pages: Vec::new(),
                unseen_since_ns: self.unseen_since.take(),
                continues: false,
            },
            data: Vec::new(),
            pos: None,
        };
        let mut at = c.start;
        while at < c.end {
            let upto = c.end.min(at + 1024 * frame_len);
            let (pages, data) = (&mut cur.rec.pages, &mut cur.data);
            self.wal
                .read_frames(self.page_size, at, upto, &mut |p, d| {
                    pages.push(p);
                    data.extend_from_slice(d);
                    Ok(())
                })?;
            at = upto;
            if at < c.end && self.pending_bytes + cur.data.len() >= TARGET_DATA {
                // A transaction larger than a segment: shipped in parts.
                cur.rec.continues = true;
                let next = Pending {
                    rec: CommitRec {
                        pages: Vec::new(),
                        unseen_since_ns: None,
                        continues: false,
                        ..cur.rec.clone()
                    },
                    data: Vec::new(),
                    pos: None,
                };
                let part = std::mem::replace(&mut cur, next);
                self.push(part);
                // A transaction of gigabytes (a VACUUM) is read no faster than it is stored.
                self.wait_for_shipper();
                self.close_segment()?;
            }
        }
        cur.pos = Some(WalPos {
            offset: c.end,
            cksum: c.cksum,
            ..*gen
        });
        self.push(cur);
        Ok(())
    }

    /// Under the write lock, with a snapshot opened there: take the WAL's end as the position
    /// (what it holds is in the snapshot), read nothing.
    fn skip_to_end(&mut self) -> Result<()> {
        self.pending.clear();
        self.pending_bytes = 0;
        self.oldest_pending = None;
        self.pos = self.wal.header()?.map(|h| h.start());
        if let Some(pos) = self.pos {
            if let Scan::Continues { end, .. } = self.wal.scan(&pos, self.committed(&pos))? {
                self.pos = Some(end);
            }
        }
        Ok(())
    }

    /// Wait while more than 4 × TARGET_DATA waits to be stored (memory stays bounded; the
    /// commits meanwhile wait in the WAL, which the pins keep), unless asked to stop, the
    /// shipper failed, or the write lock is held (the application must not wait on uploads).
    fn wait_for_shipper(&self) {
        while !self.gated
            && self.shipped.in_flight.load(Ordering::SeqCst) > 4 * TARGET_DATA
            && crate::interrupt::received().is_none()
            && self.shipped.failed.lock().map_or(true, |f| f.is_none())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn push(&mut self, p: Pending) {
        self.pending_bytes += p.data.len();
        self.pending.push(p);
        self.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// Hand everything pending to the shipper as segments of at most ~TARGET_DATA.
    fn close_segment(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            let mut take = 0;
            let mut bytes = 0;
            for p in &self.pending {
                if take > 0 && bytes + p.data.len() > TARGET_DATA {
                    break;
                }
                bytes += p.data.len();
                take += 1;
            }
            let batch: Vec<Pending> = self.pending.drain(..take).collect();
            self.pending_bytes -= bytes;
            let wal = batch
                .iter()
                .rev()
                .find_map(|p| p.pos)
                .filter(|p| !p.is_none());
            let mut data = Vec::with_capacity(bytes);
            let mut commits = Vec::with_capacity(batch.len());
            for p in batch {
                data.extend_from_slice(&p.data);
                commits.push(p.rec);
            }
            let segment = Segment {
                header: SegmentHeader {
                    format: segment::SEGMENT_FORMAT,
                    stream: self.stream.clone(),
                    seq: self.next_seq,
                    path: self.db.display().to_string(),
                    host: crate::host::hostname(),
                    page_size: self.page_size,
                    prev: None,
                    wal,
                    commits,
                    last_seq: None,
                    ends: None,
                },
                data,
            };
            self.next_seq += 1;
            self.shipped
                .in_flight
                .fetch_add(segment.data.len(), Ordering::SeqCst);
            self.shipped
                .queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(segment.first_ns());
            tracing::debug!(
                seq = segment.header.seq,
                commits = segment.header.commits.len(),
                "segment closed"
            );
            if self.tx.send(Outgoing { segment }).is_err() {
                return Err(Error::internal("the shipper stopped"));
            }
        }
        self.oldest_pending = None;
        Ok(())
    }

    /// Restart the WAL when it has grown past ~1,000 pages (see the module doc).
    fn checkpoint_if_large(&mut self, shipped: &Shipped) -> Result<()> {
        // Before SQLite's own auto-checkpoint (1,000 pages): under a pin that trails by a
        // commit, the application's would run (and fsync) after every commit.
        let threshold = 800 * (u64::from(self.page_size) + 24);
        if self.last_checkpoint.elapsed() < Duration::from_millis(250)
            || self.pending_bytes > 4 * TARGET_DATA
            || shipped.in_flight.load(Ordering::SeqCst) > 4 * TARGET_DATA
            // Frames of this generation read so far (the file itself never shrinks).
            || self.pos.map_or(0, |p| p.offset) < threshold
        {
            return Ok(());
        }
        // Tried at most every 250 ms, done or not: under writers that never pause, each try
        // may wait out the lock's busy timeout, and shipping must go on meanwhile.
        self.last_checkpoint = Instant::now();
        // What is pending and half its interval old goes first: it must not wait behind the
        // checkpoint's sync (younger commits can, without closing a segment early: one PUT
        // per interval).
        if self
            .oldest_pending
            .is_some_and(|t| t.elapsed() >= self.interval / 2)
        {
            self.close_segment()?;
        }
        let started = Instant::now();
        let done = self.with_gate(|me| {
            // Only when every commit has been read already: the write lock is held for
            // milliseconds, never while frames are read or wait for a slow target.
            if !me.at_end()? {
                return Ok(None);
            }
            unpin(&me.pins[me.pinned]);
            let r: rusqlite::Result<(i64, i64, i64)> =
                me.checkpointer
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
            pin(&me.pins[me.pinned]).map_err(sql_err(&me.db, "cannot read"))?;
            Ok(r.ok())
        })?;
        tracing::debug!(?done, took = ?started.elapsed(), "checkpoint");
        Ok(())
    }

    /// Under the write lock (no commit can come): read the commits after `pos` if they are
    /// few (the few milliseconds since the last look), and say whether every commit is read
    /// now. Many, or a new WAL generation: false, the caller tries again after `observe`.
    fn at_end(&mut self) -> Result<bool> {
        let Some(pos) = self.pos else {
            return Ok(self.wal.header()?.is_none());
        };
        match self.wal.scan(&pos, self.committed(&pos))? {
            Scan::Continues { commits, .. } if commits.is_empty() => Ok(true),
            Scan::Continues { commits, .. } => {
                let bytes: u64 = commits.iter().map(|c| c.end - c.start).sum();
                if bytes > (TARGET_DATA / 8) as u64 {
                    return Ok(false);
                }
                self.read_new_commits()?;
                Ok(true)
            }
            Scan::NoHeader => Ok(true),
            Scan::Restarted(_) => Ok(false),
        }
    }

    /// Try to take a base now: under the write lock, once every commit is read, open a
    /// snapshot there (exactly the state after them), then back it up in the background
    /// while commits keep being shipped. Busy (a writer holds the lock): tried again on the
    /// next turn of the loop, which meanwhile goes on shipping.
    fn try_start_base<'s>(
        &mut self,
        s: &'s std::thread::Scope<'s, '_>,
        base: &mut Option<std::thread::ScopedJoinHandle<'s, BaseResult>>,
    ) -> Result<()>
    where
        'a: 's,
    {
        if base.is_some() {
            self.finish_base(base.take());
        }
        self.observe()?;
        let snap = self.with_gate(|me| {
            if !me.at_end()? {
                return Ok(None);
            }
            SqliteSnapshot::open_sharing(&me.db, me.db_file.clone()).map(Some)
        })?;
        let Some(Some(snap)) = snap else {
            self.base_due = true;
            return Ok(());
        };
        // Everything read so far goes in segments before the base.
        self.close_segment()?;
        self.spawn_base(s, snap, base);
        Ok(())
    }

    /// Back up `snap` (the state after every commit read) as the base the next segment
    /// follows.
    fn spawn_base<'s>(
        &mut self,
        s: &'s std::thread::Scope<'s, '_>,
        snap: SqliteSnapshot,
        base: &mut Option<std::thread::ScopedJoinHandle<'s, BaseResult>>,
    ) where
        'a: 's,
    {
        self.base_due = false;
        self.last_base = Instant::now();
        let link = WalLink {
            stream: self.stream.clone(),
            next_seq: self.next_seq,
            pos: self.pos.unwrap_or(WalPos::none()),
        };
        let repo = self.repo;
        let opts = BackupOptions {
            database: self.db.clone(),
            kind: Some(crate::source::Kind::Sqlite),
            source: Default::default(),
            run: None,
            description: None,
            tags: Vec::new(),
            trigger: "replicate".into(),
            compression: self.opts.compression,
            verify: self.opts.verify,
            progress: crate::progress::Progress::hidden(),
            // Fewer packs in flight: a base shares the process with a stream that must stay
            // within its memory.
            transfers: 1,
            time: None,
        };
        let replicas = self.opts.configured_replicas.clone();
        *base = Some(s.spawn(move || {
            lower_priority();
            let source = Box::new(SqliteSource::of_snapshot(snap));
            let o = crate::ops::backup::backup_prepared(repo, &opts, Some(source), Some(link))?;
            if !repo.replica_locations().is_empty() || !replicas.is_empty() {
                if let Ok(reports) = crate::ops::sync::sync_replicas(repo, &replicas, None) {
                    if let Some(e) = crate::ops::sync::replica_failure(&reports) {
                        tracing::warn!("base {} not copied to every replica: {e}", o.manifest.id);
                    }
                }
            }
            Ok(o.manifest)
        }));
    }

    fn finish_base(&mut self, h: Option<std::thread::ScopedJoinHandle<'_, BaseResult>>) {
        let Some(h) = h else { return };
        match h.join() {
            Ok(Ok(m)) => {
                self.report.bases += 1;
                if std::mem::take(&mut self.reship_base) {
                    self.report.reshipped_bytes += m.stored.new_stored_bytes;
                }
                (self.opts.say)(&format!(
                    "{}: base {} of stream {} committed",
                    self.db.display(),
                    m.id,
                    self.stream
                ));
            }
            Ok(Err(e)) if e.kind == ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                self.report.base_failures += 1;
                // Tried again after a while: segments keep flowing meanwhile.
                self.last_base = Instant::now() - self.base_every + Duration::from_secs(30);
                (self.opts.say)(&format!(
                    "{}: a base failed (tried again in 30 s): {}",
                    self.db.display(),
                    e.message
                ));
            }
            Err(_) => self.report.base_failures += 1,
        }
    }

    fn write_status(&self, fence: &Fence, shipped: &Shipped, stopped: bool) {
        if stopped {
            let _ = std::fs::remove_file(&fence.status);
            return;
        }
        let last = shipped.last_ns.load(Ordering::SeqCst);
        let oldest = self
            .oldest_pending
            .map(|t| now_ns() - t.elapsed().as_nanos() as i64);
        let status = LiveStatus {
            source: self.db.display().to_string(),
            pid: std::process::id(),
            repo: self.repo.location(),
            stream: self.stream.clone(),
            last_shipped: (last != 0).then(|| rfc3339_ns(last)),
            oldest_unshipped: oldest.map(rfc3339_ns),
            updated: jiff::Timestamp::now().to_string(),
        };
        if let Ok(json) = serde_json::to_vec(&status) {
            // Replaced by a rename, not synced: it is rewritten every second, and an fsync on
            // a busy disk would hold up the loop.
            let tmp = fence.status.with_extension("json.tmp");
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, &json))
                .and_then(|()| std::fs::rename(&tmp, &fence.status));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

impl WalPos {
    /// "No WAL": a base taken while the database had no `-wal` file.
    pub fn none() -> WalPos {
        WalPos {
            salt1: 0,
            salt2: 0,
            ckpt_seq: 0,
            offset: 0,
            cksum: [0, 0],
        }
    }

    pub fn is_none(&self) -> bool {
        self.offset == 0
    }
}

/// The targets segments go to: the primary, then each replica.
fn r_targets(repo: &Repository) -> Vec<&dyn crate::storage::Storage> {
    let mut t: Vec<&dyn crate::storage::Storage> = vec![repo.storage()];
    t.extend(repo.replicas().iter().map(|r| r.as_ref()));
    t
}

/// Store segments in order: seal, put to the primary (retrying while it is down), then to
/// each replica (a replica that fails is caught up by the next `sync`).
fn ship_loop(
    repo: &Repository,
    targets: &[&dyn crate::storage::Storage],
    rx: Receiver<Outgoing>,
    shipped: &Shipped,
    mut prev: Option<blake3::Hash>,
) -> Result<()> {
    let mut replica_down = vec![false; targets.len()];
    for Outgoing { mut segment } in rx {
        let data_len = segment.data.len();
        if segment.header.seq == 0 {
            prev = None;
        }
        segment.header.prev = prev.map(|h| h.to_hex().to_string());
        let encoded = segment.encode()?;
        let name = segment.object_name();
        let sealed = segment::seal(repo, &name, &encoded)?;
        let mut delay = Duration::from_millis(200);
        let mut warned = false;
        loop {
            match put_segment(targets[0], &name, &sealed) {
                Ok(()) => break,
                Err(e) if e.kind == ErrorKind::Usage => {
                    let e = Error::new(
                        ErrorKind::InUse,
                        format!(
                            "segment {} of stream {} was written by another process: {}",
                            segment.header.seq, segment.header.stream, e.message
                        ),
                    )
                    .hint("another `lifeboat replicate` ships this database (on another machine?); stop one of them");
                    *shipped.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                    return Err(e);
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "cannot store segment {name} (retrying until it works; commits \
                             wait in the WAL meanwhile): {e}"
                        );
                        warned = true;
                    }
                    if crate::interrupt::received().is_some() && delay > Duration::from_secs(10) {
                        let e = e.hint(format!(
                            "stopped while the target was down: segment {} and later ones were \
                             not stored; their commits are in the database, and the next \
                             `lifeboat replicate` takes them up",
                            segment.header.seq
                        ));
                        *shipped.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(15));
                }
            }
        }
        if warned {
            tracing::warn!("segment {name} stored: the target is back");
        } else {
            tracing::debug!(%name, "segment stored");
        }
        for (i, t) in targets.iter().enumerate().skip(1) {
            match put_segment(*t, &name, &sealed) {
                Ok(()) => replica_down[i] = false,
                Err(e) => {
                    if !replica_down[i] {
                        tracing::warn!(
                            "replica {} missed segment {name} (`lifeboat sync` copies it): {e}",
                            t.describe()
                        );
                    }
                    replica_down[i] = true;
                }
            }
        }
        prev = Some(blake3::hash(&encoded));
        shipped.segments.fetch_add(1, Ordering::SeqCst);
        shipped.commits.fetch_add(
            segment
                .header
                .commits
                .iter()
                .filter(|c| !c.continues)
                .count() as u64,
            Ordering::SeqCst,
        );
        shipped
            .bytes
            .fetch_add(sealed.len() as u64, Ordering::SeqCst);
        shipped.last_ns.store(segment.last_ns(), Ordering::SeqCst);
        shipped.in_flight.fetch_sub(data_len, Ordering::SeqCst);
        shipped
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
    }
    Ok(())
}

/// Store a segment (create-only; our own earlier attempt with the same bytes is fine),
/// giving up on a request that hangs after a time that grows with its size: the shipper
/// tries again, and commits must not wait behind a dead connection.
fn put_segment(target: &dyn crate::storage::Storage, name: &str, sealed: &[u8]) -> Result<()> {
    let within = Duration::from_secs(10 + (sealed.len() >> 20) as u64);
    crate::storage::put_new_or_same_within(target, name, sealed, within)
}

/// How to start on `db`: the newest stream of this database on this host, if its last
/// segment (or base) tells where the WAL stood.
fn plan_start(repo: &Repository, db: &Path, opts: &ReplicateOptions) -> Result<Start> {
    if repo.is_write_only() {
        // Nothing stored can be read back here: every start is a new stream.
        return Ok(Start::New { replaces: false });
    }
    let backups = repo.list_backups()?;
    let all = streams::load(repo, &backups)?;
    let path = db.display().to_string();
    let host = crate::host::hostname();
    let Some(stream) = all
        .iter()
        .filter(|s| s.path == path && s.host == host && !s.bases.is_empty())
        .max_by(|a, b| a.id.cmp(&b.id))
    else {
        return Ok(Start::New { replaces: false });
    };
    let newest_base = stream
        .bases
        .iter()
        .max_by_key(|b| b.wal.as_ref().map(|w| w.next_seq));
    let Some(base_link) = newest_base.and_then(|b| b.wal.clone()) else {
        return Ok(Start::New { replaces: true });
    };
    let after = stream.segments_from(base_link.next_seq);
    // Every segment from the base on must be there, in order.
    if stream.check_contiguous(base_link.next_seq, after).is_err() {
        (opts.say)(&format!(
            "{}: stream {} has missing segments; a new stream starts",
            db.display(),
            stream.id
        ));
        return Ok(Start::New { replaces: true });
    }
    let (pos, last_ns, prev, next_seq) = match after.last() {
        Some(last) => {
            let (seg, hash) = segment::read(repo, repo.storage(), last)?;
            if seg.header.commits.last().is_none_or(|c| c.continues) {
                // Stopped in the middle of a large transaction: its parts cannot be finished.
                return Ok(Start::New { replaces: true });
            }
            // No position: the database had no WAL then; a resume compares pages.
            let pos = seg.header.wal.unwrap_or(WalPos::none());
            (pos, seg.last_ns(), Some(hash), last.last_seq + 1)
        }
        None => {
            let t = newest_base
                .and_then(|b| b.time.parse::<jiff::Timestamp>().ok())
                .map_or(0, |t| t.as_nanosecond() as i64);
            (base_link.pos, t, None, base_link.next_seq)
        }
    };
    let prev = match prev {
        Some(h) => Some(h),
        // No segment after the base: the chain goes on from the one before it, if any.
        None => match stream.segments.iter().find(|s| s.last_seq + 1 == next_seq) {
            Some(b) => Some(segment::read(repo, repo.storage(), b)?.1),
            None => None,
        },
    };
    Ok(Start::Resume {
        stream: stream.id.clone(),
        next_seq,
        prev,
        last_ns,
        pos: (!pos.is_none()).then_some(pos),
        found: Box::new(stream.clone()),
    })
}

/// The page ids of the state after the last segment of `stream`: its newest base's pages,
/// then every segment's pages. None when there is nothing to compare with.
fn plan_catch_up(repo: &Repository, stream: &streams::Stream) -> Result<Option<Vec<Hash>>> {
    let Some(base) = stream
        .bases
        .iter()
        .max_by_key(|b| b.wal.as_ref().map(|w| w.next_seq))
    else {
        return Ok(None);
    };
    let Some(link) = &base.wal else {
        return Ok(None);
    };
    let index = repo.load_index()?;
    let mut map: Vec<Hash> = Vec::new();
    crate::ops::restore::for_each_id(repo, &index, base, &mut |id| {
        map.push(id);
        Ok(())
    })?;
    let hasher = repo.hasher();
    for s in stream.segments_from(link.next_seq) {
        let (seg, _) = segment::read(repo, repo.storage(), s)?;
        for (c, pages) in seg.commits() {
            for (p, data) in pages {
                let i = p as usize - 1;
                if i >= map.len() {
                    map.resize(i + 1, Hash([0; 32]));
                }
                map[i] = hasher.id(data);
            }
            if !c.continues {
                map.truncate(c.db_pages as usize);
            }
        }
    }
    Ok(Some(map))
}
