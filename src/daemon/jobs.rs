//! Jobs: what the daemon runs (a backup, a verify, a drill, a health check, retention, an
//! API restore, continuous replication), one at a time per source, each with its state and
//! progress for `GET /api/v1/jobs/{id}`. The job bodies call the same engine as the CLI.

use crate::progress::Progress;
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Verify,
    Drill,
    Health,
    Retention,
    Restore,
    Replicate,
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
            JobKind::Health => "health",
            JobKind::Retention => "retention",
            JobKind::Restore => "restore",
            JobKind::Replicate => "replicate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Stopped by the daemon's shutdown before it committed anything.
    Abandoned,
}

impl JobState {
    pub fn finished(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub kind: JobKind,
    pub source: Option<String>,
    /// The backup a verify, drill or restore works on, or the one a backup made.
    pub backup: Option<String>,
    /// Why it runs: `schedule`, `catch-up`, `retry`, `api`, or the trigger the caller gave.
    pub trigger: String,
    pub state: JobState,
    pub attempt: u32,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub phase: Option<String>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub eta_s: Option<u64>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub result: serde_json::Value,
}

pub struct Job {
    view: Mutex<JobView>,
    pub progress: Progress,
    started_at: Mutex<Option<std::time::Instant>>,
}

impl Job {
    pub fn new(kind: JobKind, source: Option<&str>, backup: Option<&str>, trigger: &str) -> Job {
        let now = jiff::Timestamp::now();
        Job {
            view: Mutex::new(JobView {
                id: format!(
                    "j-{}",
                    crate::id::new_backup_id(now.as_millisecond().max(0) as u64)
                        .to_ascii_lowercase()
                ),
                kind,
                source: source.map(str::to_string),
                backup: backup.map(str::to_string),
                trigger: trigger.to_string(),
                state: JobState::Queued,
                attempt: 1,
                created: now.to_string(),
                started: None,
                finished: None,
                phase: None,
                bytes_done: 0,
                bytes_total: 0,
                eta_s: None,
                error: None,
                hint: None,
                result: serde_json::Value::Null,
            }),
            progress: Progress::hidden(),
            started_at: Mutex::new(None),
        }
    }

    pub fn id(&self) -> String {
        self.with(|v| v.id.clone())
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut JobView) -> T) -> T {
        let mut v = match self.view.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        f(&mut v)
    }

    /// The job with its progress as of now.
    pub fn view(&self) -> JobView {
        let mut v = self.with(|v| v.clone());
        if v.state == JobState::Running {
            let (phase, done, total) = self.progress.snapshot();
            if !phase.is_empty() {
                v.phase = Some(phase);
            }
            v.bytes_done = done;
            v.bytes_total = total;
            let elapsed = self
                .started_at
                .lock()
                .ok()
                .and_then(|s| *s)
                .map(|s| s.elapsed().as_secs_f64());
            v.eta_s = match elapsed {
                Some(e) if done > 0 && total > done => {
                    Some(((total - done) as f64 * e / done as f64).ceil() as u64)
                }
                _ => None,
            };
        }
        v
    }

    pub fn start(&self) {
        if let Ok(mut s) = self.started_at.lock() {
            *s = Some(std::time::Instant::now());
        }
        self.with(|v| {
            v.state = JobState::Running;
            v.started = Some(jiff::Timestamp::now().to_string());
        });
    }

    pub fn finish(&self, outcome: &crate::Result<serde_json::Value>) {
        let (_, done, total) = self.progress.snapshot();
        self.with(|v| {
            v.finished = Some(jiff::Timestamp::now().to_string());
            v.bytes_done = done;
            v.bytes_total = total;
            v.eta_s = None;
            match outcome {
                Ok(result) => {
                    v.state = JobState::Succeeded;
                    v.result = result.clone();
                }
                Err(e) => {
                    v.state = if e.kind == crate::ErrorKind::Interrupted {
                        JobState::Abandoned
                    } else {
                        JobState::Failed
                    };
                    v.error = Some(e.message.clone());
                    v.hint = e.hint.clone();
                }
            }
        });
    }
}

/// Every job of this daemon's life that is running or recent, and which sources are busy.
#[derive(Default)]
pub struct Jobs {
    list: Mutex<VecDeque<Arc<Job>>>,
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Finished jobs kept for the API (running ones are always kept).
const KEPT: usize = 1000;

/// Jobs waiting for their turn that the API may add to: one per kind and source, this many
/// in all (each waits on a thread of its own).
pub const MAX_QUEUED: usize = 32;

fn push(l: &mut VecDeque<Arc<Job>>, job: Arc<Job>) {
    l.push_back(job);
    while l.len() > KEPT {
        match l.iter().position(|j| j.with(|v| v.state.finished())) {
            Some(i) => {
                l.remove(i);
            }
            None => break,
        }
    }
}

impl Jobs {
    pub fn add(&self, job: Job) -> Arc<Job> {
        let job = Arc::new(job);
        if let Ok(mut l) = self.list.lock() {
            push(&mut l, job.clone());
        }
        job
    }

    /// Add a job the API asked for, unless a job of the same kind and source is already
    /// waiting for its turn, or `MAX_QUEUED` jobs are: then why it was refused.
    pub fn admit(&self, job: Job) -> Result<Arc<Job>, String> {
        let (kind, source) = job.with(|v| (v.kind, v.source.clone()));
        let mut l = self
            .list
            .lock()
            .map_err(|_| "the job list is unusable".to_string())?;
        let queued: Vec<&Arc<Job>> = l
            .iter()
            .filter(|j| j.with(|v| v.state == JobState::Queued))
            .collect();
        if let Some(same) = queued
            .iter()
            .find(|j| j.with(|v| v.kind == kind && v.source == source))
        {
            return Err(format!(
                "a {} job of {} is already waiting for its turn ({})",
                kind.name(),
                source.as_deref().unwrap_or("the repository"),
                same.id()
            ));
        }
        if queued.len() >= MAX_QUEUED {
            return Err(format!(
                "{MAX_QUEUED} jobs are already waiting for their turn"
            ));
        }
        let job = Arc::new(job);
        push(&mut l, job.clone());
        Ok(job)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let l = self.list.lock().ok()?;
        l.iter().find(|j| j.with(|v| v.id == id)).cloned()
    }

    /// Newest first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        self.list
            .lock()
            .map(|l| l.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// A job of this kind for this source that has not finished.
    pub fn pending(&self, kind: JobKind, source: Option<&str>) -> bool {
        self.list.lock().is_ok_and(|l| {
            l.iter().any(|j| {
                j.with(|v| v.kind == kind && v.source.as_deref() == source && !v.state.finished())
            })
        })
    }

    pub fn running(&self) -> usize {
        self.list.lock().map_or(0, |l| {
            l.iter()
                .filter(|j| j.with(|v| v.state == JobState::Running))
                .count()
        })
    }

    /// Wait until no other job holds `key` (a source's name, or the repository's
    /// maintenance), then hold it until the guard drops. None when `stop` says to give up.
    pub fn hold<'a>(&'a self, key: &str, stop: &dyn Fn() -> bool) -> Option<Held<'a>> {
        let mut busy = self.busy.lock().ok()?;
        while busy.contains(key) {
            if stop() {
                return None;
            }
            busy = self
                .freed
                .wait_timeout(busy, std::time::Duration::from_millis(200))
                .ok()?
                .0;
        }
        busy.insert(key.to_string());
        Some(Held {
            jobs: self,
            key: key.to_string(),
        })
    }

    pub fn is_busy(&self, key: &str) -> bool {
        self.busy.lock().is_ok_and(|b| b.contains(key))
    }
}

pub struct Held<'a> {
    jobs: &'a Jobs,
    key: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.jobs.busy.lock() {
            b.remove(&self.key);
        }
        self.jobs.freed.notify_all();
    }
}
