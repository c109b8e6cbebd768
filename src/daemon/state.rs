//! What a daemon keeps on this machine: its state folder (private, this user's), the lock
//! that keeps a second daemon off the same config, and the state file (each job's last run,
//! outcome and pending retry), read only from files that are this user's and not links.

use super::config::DaemonConfig;
use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
pub(super) struct State {
    pub(super) jobs: BTreeMap<String, JobRecord>,
}

/// The files of one daemon: keyed by its config file, so two daemons with different
/// configs can share a state folder and a second one on the same config is refused.
pub(super) fn state_files(cfg: &DaemonConfig) -> (PathBuf, PathBuf, PathBuf) {
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

pub(super) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The state folder, made if missing, and private: it must be this user's, and a folder
/// others could read or write (made before, say by `mkdir`) is narrowed to 0700, so that no
/// one else can read the delivery log or plant a file or link where the daemon writes.
pub(super) fn private_state_dir(dir: &std::path::Path) -> Result<()> {
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
pub(super) fn read_own_file(path: &std::path::Path) -> Option<Vec<u8>> {
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

pub(super) fn take_lock(path: &std::path::Path) -> Result<std::fs::File> {
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
