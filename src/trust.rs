//! What this machine remembers of each repository it has used (as borg's security folder
//! does), so that someone who can write to the storage cannot silently replace, roll back or
//! weaken it: `$XDG_STATE_HOME/lifeboat/trust/<hash of the location>.json` (0600, in a 0700
//! folder), holding the repository's id, format, encryption, write-only recipient, key
//! fingerprint and epoch, data-key generations, newest backup and replica list seen.
//!
//! Each command compares what it finds with that record before acting. A repository id that
//! changed under the same location, encryption turned off, a recipient changed or removed,
//! a format or key epoch gone back, a data-key generation gone, keys replaced within an epoch,
//! the newest backup seen here vanished, or the replica list rolled back: each stops the
//! command (exit 9) naming what changed, until it is accepted deliberately with
//! `--accept-change`. What it cannot protect: the first contact with a repository (nothing
//! is known yet), and deletion of everything (that is what replicas and object lock are for).
//!
//! It also holds the replicas this machine agreed to send backups to, for repositories whose
//! replica list cannot be authenticated (unencrypted ones).

use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Seen {
    pub location: String,
    pub id: String,
    pub format_version: u32,
    pub encryption: String,
    #[serde(default)]
    pub recipient: Option<String>,
    #[serde(default)]
    pub key_fingerprint: Option<String>,
    #[serde(default)]
    pub key_epoch: u32,
    #[serde(default)]
    pub data_key_generations: u32,
    /// The config's revision (raised by every change of it).
    #[serde(default)]
    pub config_revision: u64,
    #[serde(default)]
    pub newest_backup: Option<String>,
    /// Object name of the newest authentic replica list version.
    #[serde(default)]
    pub replica_list: Option<String>,
    /// Replicas added on this machine (what counts where the list is not authenticated).
    #[serde(default)]
    pub replicas: Vec<String>,
    /// The key file that opened the repository last: tried first next time.
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub first_seen: String,
    #[serde(default)]
    pub updated: String,
}

fn state_dir() -> PathBuf {
    state_home().join("trust")
}

/// Lifeboat's folder of local state (`$XDG_STATE_HOME/lifeboat`).
pub fn state_home() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lifeboat")
}

/// One spelling per location: local paths made absolute and resolved, URLs without a
/// trailing slash. It names this machine's state file, so it must not change; comparing
/// spellings a user wrote is `config::same_location` (which does not follow symlinks).
pub fn normalize_location(location: &str) -> String {
    if crate::storage::object::is_object_url(location) {
        return location.trim_end_matches('/').to_string();
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    let path = std::path::Path::new(path);
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| location.to_string())
}

fn state_file(location: &str) -> PathBuf {
    let key = blake3::hash(normalize_location(location).as_bytes()).to_hex();
    state_dir().join(format!("{}.json", &key[..32]))
}

/// Every repository location this machine has recorded (for "did you mean" hints).
pub fn known_locations() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|data| serde_json::from_slice::<Seen>(&data).ok())
        .map(|s| normalize_location(&s.location))
        .collect()
}

/// What this machine recorded for `location`, if anything.
pub fn load(location: &str) -> Option<Seen> {
    let data = std::fs::read(state_file(location)).ok()?;
    serde_json::from_slice(&data).ok()
}

fn store(seen: &Seen) -> Result<()> {
    let path = state_file(&seen.location);
    let dir = state_dir();
    crate::storage::local::create_private_dir(&dir)?;
    let data = serde_json::to_vec_pretty(seen).map_err(|e| Error::internal(e.to_string()))?;
    crate::storage::local::write_private_file(&path, &data)
}

/// The replicas added on this machine for the repository at `location`.
pub fn confirmed_replicas(location: &str) -> Vec<String> {
    load(location).map(|s| s.replicas).unwrap_or_default()
}

/// Remember that this machine added (or removed) a replica.
pub fn confirm_replica(location: &str, url: &str, added: bool) -> Result<()> {
    let Some(mut seen) = load(location) else {
        return Ok(()); // recorded with the repository on the command's way out
    };
    // Any spelling of the same target (`/x/`, `file:///x`) is that target.
    seen.replicas
        .retain(|r| !crate::config::same_location(r, url));
    if added {
        seen.replicas.push(crate::config::normalize_location(url));
    }
    store(&seen)
}

/// What a repository shows now.
fn observe(repo: &Repository, location: &str) -> Result<Seen> {
    let keys = repo.keys();
    // Only backups this process read (and authenticated) or wrote count: a name anyone can
    // plant in a listing must not become what "the newest" means.
    let newest = repo.newest_authentic();
    let replica_list = if repo.records().is_sealed() {
        crate::repo::replicas::read_replicas(repo.storage(), &repo.records())?.1
    } else {
        None
    };
    Ok(Seen {
        location: normalize_location(location),
        id: repo.config.id.clone(),
        format_version: repo.config.format_version,
        encryption: repo.config.encryption.clone(),
        recipient: repo
            .recipient()
            .map(|r| crate::repo::crypto::recipient_string(&r)),
        key_fingerprint: keys.map(|k| k.root.fingerprint()),
        key_epoch: keys.map_or(0, |k| k.root.epoch),
        data_key_generations: keys.map_or(0, |k| k.master.data_keys.len() as u32),
        config_revision: repo.config.revision,
        newest_backup: newest,
        replica_list,
        replicas: Vec::new(),
        key_id: keys.map(|k| k.key_id.clone()).filter(|id| id != "identity"),
        first_seen: String::new(),
        updated: jiff::Timestamp::now().to_string(),
    })
}

/// How what is seen now differs from what was recorded, in ways that could be an attack:
/// one sentence per change. A first contact (nothing recorded) is no change.
fn changes(was: &Seen, now: &Seen, repo: &Repository) -> Vec<String> {
    let mut out = Vec::new();
    if was.id != now.id {
        out.push(format!(
            "the repository id changed from {} to {}: this location now holds another repository",
            was.id, now.id
        ));
        return out; // everything else follows from that
    }
    if was.encryption != "none" && now.encryption == "none" {
        out.push("encryption was turned off".into());
    }
    if now.config_revision < was.config_revision {
        out.push(format!(
            "the config went back from revision {} to {} (an older copy put back)",
            was.config_revision, now.config_revision
        ));
    }
    if now.format_version < was.format_version {
        out.push(format!(
            "the format went back from {} to {}",
            was.format_version, now.format_version
        ));
    }
    match (&was.recipient, &now.recipient) {
        (Some(a), None) => out.push(format!(
            "it is no longer write-only (recipient {a} removed)"
        )),
        (Some(a), Some(b)) if a != b => {
            out.push(format!("the write-only recipient changed from {a} to {b}"))
        }
        _ => {}
    }
    if now.key_epoch < was.key_epoch {
        out.push(format!(
            "the key epoch went back from {} to {} (an old config restored?)",
            was.key_epoch, now.key_epoch
        ));
    } else if let (Some(a), Some(b)) = (&was.key_fingerprint, &now.key_fingerprint) {
        if a != b {
            let by_passphrase = repo.keys().is_some_and(|k| !k.by_identity);
            // A full rotation raises the epoch. Keys a passphrase opened were wrapped by
            // someone who knew it; keys sealed to a public recipient could be anyone's.
            if now.key_epoch == was.key_epoch || !by_passphrase {
                out.push(format!(
                    "the repository's keys were replaced (fingerprint {a} is now {b}, key epoch {} → {})",
                    was.key_epoch, now.key_epoch
                ));
            }
        }
    }
    if now.key_epoch == was.key_epoch && now.data_key_generations < was.data_key_generations {
        out.push(format!(
            "data key generations went from {} to {}: the newest data key is gone",
            was.data_key_generations, now.data_key_generations
        ));
    }
    if let Some(newest) = &was.newest_backup {
        let still_there = repo
            .storage()
            .exists(&format!("backups/{newest}"))
            .unwrap_or(true);
        if !still_there {
            out.push(format!(
                "backup {newest}, the newest this machine has seen here, is gone (deleted elsewhere, or the repository rolled back)"
            ));
        }
    }
    if let Some(list) = &was.replica_list {
        let order = |n: &String| (crate::ops::sync::version_ms(n), n.clone());
        if now
            .replica_list
            .as_ref()
            .is_none_or(|n| order(n) < order(list))
        {
            out.push(format!(
                "the replica list went back to {} (newest seen here: {list})",
                now.replica_list.as_deref().unwrap_or("none")
            ));
        }
    }
    out
}

/// Compare the repository with what this machine recorded before acting on it. Returns
/// notices to print; errors (exit 9) on any change that could be an attack, unless `accept`.
pub fn check(repo: &Repository, location: &str, accept: bool) -> Result<Vec<String>> {
    let now = observe(repo, location)?;
    let mut notices = Vec::new();
    let Some(was) = load(location) else {
        if repo.keys().is_some_and(|k| k.by_identity) {
            notices.push(format!(
                "first use of repository {} here (key fingerprint {}); compare it with `lifeboat repo show` where it was created",
                now.id,
                now.key_fingerprint.as_deref().unwrap_or("-")
            ));
        }
        save(repo, None, now);
        return Ok(notices);
    };
    let found = changes(&was, &now, repo);
    if !found.is_empty() && !accept {
        return Err(Error::new(
            ErrorKind::Trust,
            format!(
                "the repository at {} is not what this machine saw before: {}",
                now.location,
                found.join("; ")
            ),
        )
        .hint("if this was deliberate (a restored copy, a repository made again, a forget run elsewhere), run the command again with --accept-change; otherwise someone who can write to the storage may be tampering with it: write nothing to it and compare it with a replica"));
    }
    for c in found {
        notices.push(format!("accepted: {c}"));
    }
    if now.key_epoch > was.key_epoch && was.key_fingerprint != now.key_fingerprint {
        notices.push(format!(
            "the repository's keys were rotated (key epoch {} → {})",
            was.key_epoch, now.key_epoch
        ));
    }
    save(repo, Some(was), now);
    Ok(notices)
}

/// Record the repository as it is now (after a command changed it: a new backup, a forget,
/// a key rotation, a new replica list).
pub fn record(repo: &Repository, location: &str) -> Result<()> {
    let now = observe(repo, location)?;
    save(repo, load(location), now);
    Ok(())
}

/// Store the record; a machine whose state folder cannot be written still works (with a
/// warning), it only loses this protection.
fn save(repo: &Repository, was: Option<Seen>, mut now: Seen) {
    match was {
        Some(was) => {
            // The newest seen stays until this machine sees a newer one, or deletes it.
            if let Some(old) = was.newest_backup {
                let gone = repo.forgot(&old)
                    || !repo
                        .storage()
                        .exists(&format!("backups/{old}"))
                        .unwrap_or(true);
                if !gone && now.newest_backup.as_ref().is_none_or(|n| *n < old) {
                    now.newest_backup = Some(old);
                }
            }
            now.first_seen = was.first_seen;
            now.replicas = was.replicas;
            if repo.keys().is_some_and(|k| k.by_identity) {
                now.key_id = was.key_id;
            }
        }
        None => now.first_seen = now.updated.clone(),
    }
    if let Err(e) = store(&now) {
        tracing::warn!(
            "cannot record what this machine saw of {}: {e}",
            now.location
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_normalized() {
        assert_eq!(normalize_location("s3://b/p/"), "s3://b/p");
        let dir = tempfile::tempdir().unwrap();
        let a = normalize_location(&dir.path().display().to_string());
        let b = normalize_location(&format!("file://{}/", dir.path().display()));
        assert_eq!(a, b);
        assert_eq!(state_file(&a), state_file(&b));
    }
}
