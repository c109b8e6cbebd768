//! The scheduler: what is due and when (the catch-up rule, retries with backoff), and how
//! a job is started (on its own thread, one per source at a time) and its outcome recorded.

use super::config::Source;
use super::jobs::{Job, JobKind};
use super::state::JobRecord;
use super::{metrics, schedule, work, Daemon};
use crate::error::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Daemon {
    /// The scheduler: every second, start each job that is due. Returns when asked to stop.
    pub(super) fn scheduler(self: &Arc<Self>, reload: &AtomicBool) {
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
    pub(super) fn due(
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
pub(super) fn next_by_schedule(
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
