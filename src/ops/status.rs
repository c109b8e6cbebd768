//! Status: per target (the primary and each replica), how many backups it holds, how old
//! the newest is, how far a replica is behind, whether key changes are waiting for it, and
//! what went wrong last. What cannot be known (an unreachable target) is `None`, never 0.

use crate::error::{Error, Result};
use crate::ops::sync;
use crate::repo::Repository;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    pub backups: Option<u64>,
    pub newest_backup: Option<String>,
    pub newest_backup_age_s: Option<i64>,
    /// Why the target could not be reached or listed.
    pub error: Option<String>,
    /// Replicas only.
    #[serde(flatten)]
    pub replica: Option<ReplicaStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// The last sync from this machine failed (and none succeeded since).
    pub failing: bool,
    pub objects_behind: Option<u64>,
    pub bytes_behind: Option<u64>,
    /// Keys added or removed on the primary are not there yet (a removed passphrase still
    /// opens the replica). None: unknown.
    pub key_changes_pending: Option<bool>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_time: Option<String>,
}

/// A `lifeboat replicate` running on this machine into this repository.
#[derive(Debug, Clone, Serialize)]
pub struct Replicating {
    pub source: String,
    pub pid: u32,
    pub stream: String,
    /// Newest commit shipped.
    pub last_shipped: Option<String>,
    /// Age of the oldest commit not shipped yet (0 when everything is).
    pub lag_s: f64,
    /// When the process last wrote its status (about every second).
    pub updated: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub targets: Vec<TargetStatus>,
    pub replicating: Vec<Replicating>,
    /// Targets that cannot be reached or listed, or whose last sync failed: the command
    /// exits 7 after the report.
    #[serde(skip)]
    pub trouble: Option<Error>,
}

/// The status of `repo` and its replicas (its list plus `configured` ones).
pub fn status(repo: &Repository, configured: &[String]) -> Result<StatusReport> {
    let now = jiff::Timestamp::now();
    let age = |id: &Option<String>| {
        id.as_deref()
            .and_then(crate::id::backup_time)
            .map(|t| (now.as_second() - t.as_second()).max(0))
    };
    let mut trouble = Vec::new();
    let primary = sync::lag(repo, repo.storage());
    if let Some(e) = &primary.error {
        trouble.push(format!(
            "{} (the primary) cannot be listed ({e})",
            repo.location()
        ));
    }
    let mut targets = vec![TargetStatus {
        target: repo.location(),
        role: "primary",
        backups: primary.backups,
        newest_backup_age_s: age(&primary.newest_backup),
        newest_backup: primary.newest_backup,
        error: primary.error,
        replica: None,
    }];
    for url in sync::replica_urls(repo, configured)? {
        let lag = match crate::storage::open(&url, false) {
            Ok(t) => sync::lag(repo, t.as_ref()),
            Err(e) => sync::Lag::unreachable(&url, e.to_string()),
        };
        let state = sync::state_of(repo, &url);
        // RFC 3339 UTC strings of one format compare in time order.
        let failing = match (&state.last_error_time, &state.last_success) {
            (Some(err), Some(ok)) => err > ok,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let Some(e) = &lag.error {
            trouble.push(format!("{url} cannot be reached ({e})"));
        } else if failing {
            trouble.push(format!("the last sync of {url} failed"));
        }
        let key_changes_pending = sync::key_changes_pending(repo, &lag, &state);
        targets.push(TargetStatus {
            target: url,
            role: "replica",
            backups: lag.backups,
            newest_backup_age_s: age(&lag.newest_backup),
            newest_backup: lag.newest_backup,
            error: lag.error,
            replica: Some(ReplicaStatus {
                failing,
                objects_behind: lag.objects_behind,
                bytes_behind: lag.bytes_behind,
                key_changes_pending,
                last_success: state.last_success,
                last_error: state.last_error,
                last_error_time: state.last_error_time,
            }),
        });
    }
    let trouble = (!trouble.is_empty()).then(|| {
        Error::storage(trouble.join("; ")).hint(
            "backups on the primary are not affected; once the target is reachable, `lifeboat sync` catches it up",
        )
    });
    Ok(StatusReport {
        targets,
        replicating: replicating(repo),
        trouble,
    })
}

/// The replications of this machine that ship into `repo`, with their lag.
pub fn replicating(repo: &Repository) -> Vec<Replicating> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let here = repo.location();
    crate::wal::replicate::live_statuses()
        .into_iter()
        .filter(|l| crate::config::same_location(&l.repo, &here))
        .map(|l| {
            let lag_s = l
                .oldest_unshipped
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(0.0, |t| {
                    (now_ms - t.as_millisecond()).max(0) as f64 / 1000.0
                });
            Replicating {
                source: l.source,
                pid: l.pid,
                stream: l.stream,
                last_shipped: l.last_shipped,
                lag_s,
                updated: l.updated,
            }
        })
        .collect()
}
