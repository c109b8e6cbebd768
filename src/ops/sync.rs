//! Replication: copies of a repository on other targets, kept up to date by copying the
//! objects they lack. Objects are write-once and named by content (or by backup id), so a
//! copy is complete when every name is present with the right bytes; the order — keys,
//! packs, index files, manifests, config last — keeps a replica valid at every moment: a
//! manifest is never there before what it needs, and a replica is not a repository until its
//! first sync has finished.

use crate::error::{Error, ErrorKind, Result};
use crate::id::Hash;
use crate::repo::Repository;
use crate::storage::{ObjectInfo, Storage};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The replica list, stored in the primary as versioned objects `replicas/<time>-<rand>`;
/// the newest version wins (write-once even for settings).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaList {
    pub replicas: Vec<String>,
}

pub fn read_replicas(storage: &dyn Storage) -> Result<ReplicaList> {
    let mut versions = storage.list("replicas/")?;
    versions.sort_by(|a, b| a.name.cmp(&b.name));
    match versions.last() {
        None => Ok(ReplicaList::default()),
        Some(v) => serde_json::from_slice(&storage.get(&v.name)?)
            .map_err(|e| Error::integrity(format!("{} is unreadable: {e}", v.name))),
    }
}

pub fn write_replicas(storage: &dyn Storage, list: &ReplicaList) -> Result<()> {
    let name = format!(
        "replicas/{:016}-{:08x}",
        jiff::Timestamp::now().as_millisecond(),
        rand::random::<u32>()
    );
    let data = serde_json::to_vec_pretty(list).map_err(|e| Error::internal(e.to_string()))?;
    storage.put_new(&name, &data)?;
    Ok(())
}

/// What one sync of one target did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub target: String,
    pub copied_objects: u64,
    pub copied_bytes: u64,
    /// Objects the target had with the wrong size or bytes, replaced.
    pub repaired: Vec<String>,
    pub error: Option<String>,
}

/// How far a target is behind the primary.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub target: String,
    pub objects_behind: u64,
    pub bytes_behind: u64,
    pub backups: u64,
    /// Id of the newest backup there.
    pub newest_backup: Option<String>,
    pub error: Option<String>,
}

/// The object groups in copy order; `config` goes last, alone.
const GROUPS: [&str; 4] = ["keys/", "data/", "index/", "backups/"];

fn by_name(list: Vec<ObjectInfo>) -> HashMap<String, u64> {
    list.into_iter().map(|o| (o.name, o.size)).collect()
}

/// Objects named by the BLAKE3 of their bytes can be checked on the way.
fn content_addressed(name: &str) -> Option<Hash> {
    if name.starts_with("data/") || name.starts_with("index/") {
        Hash::from_hex(name.rsplit('/').next()?).ok()
    } else {
        None
    }
}

/// Copy everything `target` lacks from `source`, `parallel` objects at a time.
pub fn sync(source: &dyn Storage, target: &dyn Storage, parallel: usize) -> Result<SyncReport> {
    // A sync may copy a manifest that needs packs a prune on the target has planned to
    // delete; its marker (which sees no plan) holds such sweeps until it is done.
    crate::repo::locks::as_writer(target, "sync", false, |_| {
        sync_marked(source, target, parallel)
    })
}

fn sync_marked(source: &dyn Storage, target: &dyn Storage, parallel: usize) -> Result<SyncReport> {
    let copied = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let repaired = Mutex::new(Vec::new());
    for group in GROUPS {
        let have = by_name(target.list(group)?);
        let want: Vec<ObjectInfo> = source
            .list(group)?
            .into_iter()
            .filter(|o| have.get(&o.name) != Some(&o.size))
            .collect();
        let queue = Mutex::new(want.into_iter());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some(obj) = next else { return };
                    let replace = have.contains_key(&obj.name);
                    match copy_one(source, target, &obj.name, replace) {
                        Ok(n) => {
                            copied.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n, Ordering::Relaxed);
                            if replace {
                                if let Ok(mut r) = repaired.lock() {
                                    r.push(obj.name.clone());
                                }
                            }
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
    }
    // The config last: only now is the replica a repository.
    if !target.exists("config")? {
        let n = copy_one(source, target, "config", false)?;
        copied.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(n, Ordering::Relaxed);
    }
    Ok(SyncReport {
        target: target.describe(),
        copied_objects: copied.into_inner(),
        copied_bytes: bytes.into_inner(),
        repaired: repaired.into_inner().unwrap_or_default(),
        error: None,
    })
}

fn copy_one(source: &dyn Storage, target: &dyn Storage, name: &str, replace: bool) -> Result<u64> {
    let data = source.get(name)?;
    if let Some(id) = content_addressed(name) {
        if Hash::of(&data) != id {
            return Err(Error::integrity(format!(
                "{}/{name} is damaged on the source (its bytes do not match its name); not copied",
                source.describe()
            ))
            .hint("run `lifeboat repo check --read-data`; restore that object from another copy"));
        }
    }
    if replace {
        // Only a copy with the wrong size gets here: it is damaged, and it is replaced.
        target.delete(name)?;
    }
    target.put_new(name, &data)?;
    Ok(data.len() as u64)
}

/// Compare a target with the source without copying.
pub fn lag(source: &dyn Storage, target: &dyn Storage) -> Lag {
    let mut lag = Lag {
        target: target.describe(),
        objects_behind: 0,
        bytes_behind: 0,
        backups: 0,
        newest_backup: None,
        error: None,
    };
    let result = (|| -> Result<()> {
        if !target.exists("config")? {
            lag.objects_behind += 1;
        }
        for group in GROUPS {
            let have = by_name(target.list(group)?);
            for o in source.list(group)? {
                if have.get(&o.name) != Some(&o.size) {
                    lag.objects_behind += 1;
                    lag.bytes_behind += o.size;
                }
            }
            if group == "backups/" {
                let mut ids: Vec<String> = have
                    .keys()
                    .filter_map(|n| n.rsplit('/').next().map(str::to_string))
                    .filter(|id| crate::id::is_backup_id(id))
                    .collect();
                ids.sort();
                lag.backups = ids.len() as u64;
                lag.newest_backup = ids.pop();
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        lag.error = Some(e.to_string());
    }
    lag
}

/// Sync every replica of `repo` (or only `only`), one after another; a failing target does
/// not stop the others.
pub fn sync_replicas(
    repo: &Repository,
    configured: &[String],
    only: Option<&str>,
) -> Result<Vec<SyncReport>> {
    let all = replica_urls(repo, configured)?;
    let targets: Vec<&String> = all
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.as_str()))
        .collect();
    if let Some(o) = only {
        if targets.is_empty() {
            return Err(
                Error::not_found(format!("{o} is not a replica of this repository")).hint(
                    "`lifeboat replica list` shows them; `lifeboat replica add URL` adds one",
                ),
            );
        }
    }
    let mut reports = Vec::new();
    for url in targets {
        let result = crate::config::open_storage(url, true)
            .and_then(|t| sync(repo.storage(), t.as_ref(), 4));
        let report = match result {
            Ok(r) => r,
            Err(e) => SyncReport {
                target: url.clone(),
                copied_objects: 0,
                copied_bytes: 0,
                repaired: Vec::new(),
                error: Some(format!("{e}")),
            },
        };
        crate::ops::sync::record(repo, &report);
        reports.push(report);
    }
    Ok(reports)
}

/// Replicas from the repository (`replica add`) and from the configuration, without repeats.
pub fn replica_urls(repo: &Repository, configured: &[String]) -> Result<Vec<String>> {
    let mut urls = read_replicas(repo.storage())?.replicas;
    for c in configured {
        if !urls.contains(c) {
            urls.push(c.clone());
        }
    }
    Ok(urls)
}

/// Last success and last error per target, kept on this machine
/// (`$XDG_STATE_HOME/lifeboat/targets.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetState {
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_time: Option<String>,
}

fn state_path() -> std::path::PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("lifeboat")
        .join("targets.json")
}

pub fn load_states() -> HashMap<String, TargetState> {
    std::fs::read(state_path())
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default()
}

/// Remember how a sync went (best effort: status is a convenience, never a reason to fail).
pub fn record(repo: &Repository, report: &SyncReport) {
    let key = format!("{} {}", repo.config.id, report.target);
    let mut states = load_states();
    let state = states.entry(key).or_default();
    let now = jiff::Timestamp::now().to_string();
    match &report.error {
        None => state.last_success = Some(now),
        Some(e) => {
            state.last_error = Some(e.clone());
            state.last_error_time = Some(now);
        }
    }
    let path = state_path();
    if let Some(dir) = path.parent() {
        let _ = crate::storage::local::create_private_dir(dir);
    }
    if let Ok(data) = serde_json::to_vec_pretty(&states) {
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!("cannot record sync state in {}: {e}", path.display());
        }
    }
}

pub fn state_of(repo: &Repository, target: &str) -> TargetState {
    load_states()
        .remove(&format!("{} {target}", repo.config.id))
        .unwrap_or_default()
}

/// An error for a replica that failed during a command that otherwise succeeded.
pub fn replica_failure(reports: &[SyncReport]) -> Option<Error> {
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.target)))
        .collect();
    (!failed.is_empty()).then(|| {
        Error::new(
            ErrorKind::Storage,
            format!("replication failed for {}", failed.join("; ")),
        )
        .hint("the primary is complete; run `lifeboat sync` once the target is reachable again")
    })
}
