//! What `GET /api/v1/status` and the status page show, built from memory only (the
//! catalog, the schedule's state, the last health checks): answering never touches the
//! repository.

use super::jobs::JobKind;
use super::{job_key, Daemon, HealthReport};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BackupBrief {
    pub id: String,
    pub time: String,
    pub age_s: i64,
    pub size_bytes: u64,
    pub trigger: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillBrief {
    pub time: Option<String>,
    pub ok: Option<bool>,
    pub error: Option<String>,
    /// Restore time of the newest passed drill, and its backup.
    pub rto_ms: Option<u64>,
    pub backup: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Oldest and newest moments a restore can bring back.
    pub from: String,
    pub to: String,
    #[serde(skip)]
    pub from_unix: i64,
    #[serde(skip)]
    pub to_unix: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    pub name: String,
    pub path: String,
    pub kind: Option<String>,
    pub schedule: String,
    pub next_run: Option<String>,
    pub backups: usize,
    pub last_backup: Option<BackupBrief>,
    /// Of the last (up to 30) scheduled and API backups of this daemon.
    pub success_rate: Option<f64>,
    pub last_error: Option<String>,
    pub lag_s: Option<f64>,
    pub window: Option<Window>,
    pub last_drill: Option<DrillBrief>,
    pub health: Option<HealthReport>,
    pub running: Vec<String>,
    /// Times of the newest backups (at most 200), for the timeline picture.
    #[serde(skip)]
    pub times: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonView {
    pub version: &'static str,
    pub host: String,
    pub started: String,
    pub uptime_s: u64,
    pub ready: bool,
    pub repository: String,
    pub repository_bytes: Option<u64>,
    pub backups: usize,
    pub jobs_running: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub daemon: DaemonView,
    pub sources: Vec<SourceView>,
    /// As the last health check found them.
    pub targets: Vec<crate::ops::status::TargetStatus>,
}

pub fn status(d: &Daemon) -> StatusView {
    let cfg = d.config();
    let now = jiff::Timestamp::now().as_second();
    let health = d.health.lock().map(|h| h.clone()).unwrap_or_default();
    let replicating = d.replicating.lock().map(|r| r.clone()).unwrap_or_default();
    let jobs = d.jobs.all();
    let catalog = d.catalog.read();
    let mut sources = Vec::new();
    for s in &cfg.sources {
        let backups: Vec<&super::catalog::Entry> = match &catalog {
            Ok(c) => c.of_source(&s.key).collect(),
            Err(_) => Vec::new(),
        };
        let newest = backups.last();
        let rep = replicating.iter().find(|r| r.source == s.key);
        let shipped = rep
            .and_then(|r| r.last_shipped.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        let window = match (backups.first(), newest) {
            (Some(first), Some(last)) => {
                let to = shipped.unwrap_or(last.unix).max(last.unix);
                Some(Window {
                    from: first.time.clone(),
                    to: jiff::Timestamp::from_second(to)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    from_unix: first.unix,
                    to_unix: to,
                })
            }
            _ => None,
        };
        let backup_rec = d.record(&job_key(JobKind::Backup, &s.name));
        let drill_rec = d.record(&job_key(JobKind::Drill, &s.name));
        let drilled = backups
            .iter()
            .rev()
            .find_map(|e| e.rto_ms().map(|r| (e.id.clone(), r)));
        let last_drill = (drill_rec.last_run.is_some() || drilled.is_some()).then(|| DrillBrief {
            time: drill_rec.last_run.clone(),
            ok: drill_rec.last_ok,
            error: drill_rec.last_error.clone(),
            rto_ms: drilled.as_ref().map(|d| d.1),
            backup: drilled.map(|d| d.0),
        });
        let next_run = if s.schedule.is_continuous() {
            None
        } else {
            d.due(
                &job_key(JobKind::Backup, &s.name),
                &s.schedule,
                newest.and_then(|e| e.timestamp()),
                jiff::Timestamp::now(),
            )
            .map(|(t, _)| t.to_string())
        };
        sources.push(SourceView {
            name: s.name.clone(),
            path: s.shown_path(),
            kind: newest
                .map(|e| e.kind.clone())
                .or_else(|| s.kind.map(|k| k.name().to_string())),
            schedule: s.schedule.describe(),
            next_run,
            backups: backups.len(),
            last_backup: newest.map(|e| BackupBrief {
                id: e.id.clone(),
                time: e.time.clone(),
                age_s: (now - e.unix).max(0),
                size_bytes: e.size_bytes,
                trigger: e.trigger.clone(),
            }),
            success_rate: backup_rec.success_rate(),
            last_error: backup_rec.last_error.clone(),
            lag_s: rep.map(|r| r.lag_s),
            window,
            last_drill,
            health: health.get(&s.name).cloned(),
            running: jobs
                .iter()
                .filter(|j| j.with(|v| v.source.as_deref() == Some(&s.name) && !v.state.finished()))
                .map(|j| j.id())
                .collect(),
            times: backups.iter().rev().take(200).map(|e| e.unix).collect(),
        });
    }
    let (count, bytes) = match &catalog {
        Ok(c) => (c.len(), c.repo_stored_bytes),
        Err(_) => (0, None),
    };
    StatusView {
        daemon: DaemonView {
            version: env!("CARGO_PKG_VERSION"),
            host: crate::host::hostname(),
            started: d.started.to_string(),
            uptime_s: d.uptime().as_secs(),
            ready: d.ready.load(std::sync::atomic::Ordering::SeqCst),
            repository: d.opener().location.clone(),
            repository_bytes: bytes,
            backups: count,
            jobs_running: d.jobs.running(),
        },
        sources,
        targets: d.targets.lock().map(|t| t.clone()).unwrap_or_default(),
    }
}
