//! The engine's front door, which the CLI calls and a daemon will: open (or create) the
//! repository a command works on the way every caller must — unlock with the identity or a
//! passphrase, check it against what this machine saw of it (`trust`), read damaged objects
//! from the replicas — and remember it as the command left it; resolve the settings of a
//! run (compression, checks, transfers); back up a run of sources then bring the replicas up
//! to date; restore a backup (or a run) to wherever it goes. Verify (`ops::verify`), status
//! (`ops::status`) and the other verbs are called on the opened repository directly; each
//! takes its reader or writer marker itself.

use crate::config::{self, Origin};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::restore::{Destination, RestoreOutcome};
use crate::progress::Progress;
use crate::repo::crypto::{Identity, KdfParams};
use crate::repo::manifest::Manifest;
use crate::repo::{NewRepo, Repository, Unlock};
use crate::secret::PassphraseSource;
use crate::storage::Storage;
use std::path::PathBuf;

/// How to open the repository of one command (or one daemon job).
pub struct Opener {
    /// Where the repository is, and where that setting came from.
    pub location: String,
    pub origin: Origin,
    pub passphrase: PassphraseSource,
    /// Write-only repositories: the private identity file that reads them.
    pub identity: Option<PathBuf>,
    /// Accept a repository that changed since this machine last saw it.
    pub accept_change: bool,
    /// Replicas from the config file, besides those in the repository's own list.
    pub configured_replicas: Vec<String>,
    /// The config file's `repo`, for "did you mean" hints.
    pub configured_repo: Option<String>,
    /// Where warnings go (trust notices): stderr for the CLI, a log for a daemon.
    pub warn: Box<dyn Fn(&str) + Send + Sync>,
}

/// A repository `open_or_init` created.
pub struct Created {
    pub encrypted: bool,
    /// At the default location (created without being asked).
    pub default_location: bool,
}

impl Opener {
    /// Open the repository; a missing one is NotFound, with a "did you mean" hint when the
    /// location looks like a typo of one this machine knows.
    pub fn open(&self) -> Result<Repository> {
        self.open_at(crate::storage::open(&self.location, false)?)
            .map_err(|e| self.explain_missing(e))
    }

    /// Open the repository in `storage` (a replica, say) with this opener's keys, then
    /// compare it with what this machine saw of it before.
    pub fn open_at(&self, storage: Box<dyn Storage>) -> Result<Repository> {
        let repo = self.unlock_at(storage)?;
        self.vouch(&repo)?;
        Ok(repo)
    }

    /// Open the repository, creating it if it does not exist yet, but only at the default
    /// location (a first backup needs no set-up) or when `init` asks: a mistyped location
    /// must not quietly start a new repository that nothing else looks at.
    pub fn open_or_init(&self, init: bool) -> Result<(Repository, Option<Created>)> {
        let loc = &self.location;
        match self.open_at(crate::storage::open(loc, false)?) {
            Err(e) if e.kind == ErrorKind::NotFound && self.origin != Origin::Default && !init => {
                Err(self.explain_missing(e))
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                let passphrase = if self.passphrase_configured() {
                    Some(self.passphrase.get("New repository passphrase", true)?)
                } else {
                    None
                };
                let kind = match &passphrase {
                    Some(p) => NewRepo::Encrypted {
                        passphrase: p,
                        params: KdfParams::default(),
                        recipient: None,
                    },
                    None => NewRepo::Plain,
                };
                let repo = match Repository::init(crate::storage::open(loc, true)?, kind) {
                    Ok(repo) => {
                        self.vouch(&repo)?;
                        repo
                    }
                    // Another process created it a moment ago (concurrent first backups):
                    // use it, giving its creator a few seconds to write the keys (Argon2id
                    // takes a while).
                    Err(e) => {
                        if !crate::storage::open(loc, false)?.exists("config")? {
                            return Err(e);
                        }
                        let mut waited = 0;
                        loop {
                            match self.open_at(crate::storage::open(loc, false)?) {
                                Err(e2) if e2.kind == ErrorKind::NotFound && waited < 100 => {
                                    std::thread::sleep(std::time::Duration::from_millis(100));
                                    waited += 1;
                                }
                                other => return other.map(|r| (r, None)),
                            }
                        }
                    }
                };
                let created = Created {
                    encrypted: repo.is_encrypted(),
                    default_location: self.origin == Origin::Default,
                };
                Ok((repo, Some(created)))
            }
            other => other.map(|r| (r, None)),
        }
    }

    /// Remember the repository as this command left it (new backups, keys, replicas).
    pub fn record(&self, repo: &Repository) {
        if let Err(e) = crate::trust::record(repo, &repo.location()) {
            tracing::warn!("could not record the state of {}: {e}", repo.location());
        }
    }

    /// Whether the user gave a passphrase without being asked (then new repositories are
    /// created encrypted).
    pub fn passphrase_configured(&self) -> bool {
        self.passphrase.file.is_some()
            || self.passphrase.command.is_some()
            || std::env::var_os(self.passphrase.env_var).is_some()
    }

    /// A missing repository: say which known one the location may be a typo of.
    fn explain_missing(&self, e: Error) -> Error {
        if e.kind != ErrorKind::NotFound || !e.message.starts_with("no Lifeboat repository") {
            return e;
        }
        let mut known = crate::trust::known_locations();
        known.extend(
            self.configured_repo
                .iter()
                .map(|r| crate::trust::normalize_location(r)),
        );
        known.push(crate::trust::normalize_location(
            &config::default_repo().display().to_string(),
        ));
        let hint = config::missing_repo_hint(&self.location, &known);
        e.hint(hint)
    }

    fn unlock_at(&self, storage: Box<dyn Storage>) -> Result<Repository> {
        if let Some(path) = &self.identity {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| Error::io("cannot read identity", path, e))?,
            );
            let identity = Identity::from_file_text(&text)?;
            return Repository::open(storage, Unlock::Identity(&identity));
        }
        let preferred_key = crate::trust::load(&storage.describe()).and_then(|s| s.key_id);
        let mut ask = || self.passphrase.get("Repository passphrase", false);
        Repository::open(
            storage,
            Unlock::Passphrase {
                ask: &mut ask,
                given: self.passphrase_configured(),
                preferred_key,
            },
        )
    }

    /// The trust check, and where damaged objects may be read from.
    fn vouch(&self, repo: &Repository) -> Result<()> {
        for notice in crate::trust::check(repo, &repo.location(), self.accept_change)? {
            (self.warn)(&notice);
        }
        let configured = self.configured_replicas.clone();
        repo.set_replica_resolver(Box::new(move |repo| {
            crate::ops::sync::replica_urls(repo, &configured).unwrap_or_default()
        }));
        Ok(())
    }
}

/// What `backup_then_replicate` did.
pub struct BackedUp {
    /// One per source of the run, in order.
    pub outcomes: Vec<crate::ops::backup::BackupOutcome>,
    /// One report per replica.
    pub replication: Vec<crate::ops::sync::SyncReport>,
    /// A replica that failed (or a signal between replicas): the backup stands on the
    /// primary either way, and the command reports it, then fails with this.
    pub failure: Option<Error>,
    /// The whole run, replication included.
    pub took: std::time::Duration,
}

/// Back up each source of a run into `repo`, record it, then bring every replica up to
/// date. A source that fails stops the run; the backups committed before it are named.
pub fn backup_then_replicate(
    opener: &Opener,
    repo: &Repository,
    runs: &[crate::ops::backup::BackupOptions],
) -> Result<BackedUp> {
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for opts in runs {
        match crate::ops::backup::backup(repo, opts) {
            Ok(o) => outcomes.push(o),
            Err(e) if outcomes.is_empty() => return Err(e),
            Err(e) => {
                opener.record(repo);
                let done: Vec<&str> = outcomes.iter().map(|o| o.manifest.id.as_str()).collect();
                return Err(e.hint(format!(
                    "the backups of this run before {} are committed: {}; run `lifeboat sync` \
                     to copy them to the replicas",
                    crate::source::source_key(&opts.database),
                    done.join(", ")
                )));
            }
        }
    }
    opener.record(repo);
    let newest = outcomes
        .last()
        .map(|o| o.manifest.id.clone())
        .unwrap_or_default();
    let (replication, failure) =
        match crate::ops::sync::sync_replicas(repo, &opener.configured_replicas, None) {
            Ok(r) => {
                let failure = crate::ops::sync::replica_failure(&r);
                (r, failure)
            }
            // Stopped between replicas: the backup itself is committed, and must be reported.
            Err(e) if e.kind == ErrorKind::Interrupted => {
                let e = e.hint(format!(
                    "backup {newest} is committed on the primary; the replicas were not brought \
                     up to date: run `lifeboat sync`"
                ));
                (Vec::new(), Some(e))
            }
            Err(e) => return Err(e),
        };
    Ok(BackedUp {
        outcomes,
        replication,
        failure,
        took: started.elapsed(),
    })
}

/// Restore backup `m` to `to`: the kind of its content picks the target (an image to a
/// file, a tree to a folder).
pub fn restore(
    repo: &Repository,
    m: &Manifest,
    to: Destination,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let mut target = crate::ops::restore::target_for(m, to)?;
    crate::ops::restore::restore(repo, m, target.as_mut(), progress)
}

/// The run `spec` names (a run id or an unambiguous prefix) and its backups.
pub fn run_backups(repo: &Repository, spec: &str) -> Result<(String, Vec<Manifest>)> {
    let all = repo.list_backups()?;
    let wanted = spec.to_ascii_lowercase();
    let runs: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|m| m.run.as_deref())
        .filter(|r| r.starts_with(&wanted))
        .collect();
    let run = match runs.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => one.to_string(),
        [] => {
            return Err(
                Error::not_found(format!("no run {spec} in {}", repo.location()))
                    .hint("`lifeboat list` shows the run of each backup taken with others"),
            )
        }
        several => {
            return Err(Error::usage(format!(
                "'{spec}' matches several runs: {}",
                several.join(", ")
            ))
            .hint("give more of the run id"))
        }
    };
    let backups = all
        .into_iter()
        .filter(|m| m.run.as_deref() == Some(run.as_str()))
        .collect();
    Ok((run, backups))
}

/// Restore every backup of a run into folder `dir` (created if missing), each as a file or
/// folder named after its source (`app.duckdb`, `myapp`; `-2`, `-3` … when two sources share
/// a name). `done` hears of each one restored.
pub fn restore_run(
    repo: &Repository,
    backups: &[Manifest],
    dir: &std::path::Path,
    overwrite: bool,
    progress: &Progress,
    done: &mut dyn FnMut(&Manifest, &RestoreOutcome),
) -> Result<()> {
    if !dir.exists() {
        crate::storage::local::create_private_dir(dir)?;
    }
    let mut used = std::collections::BTreeSet::new();
    for m in backups {
        let base = std::path::Path::new(&m.source.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.id.clone());
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let path = dir.join(&name);
        let out = restore(repo, m, Destination::New { path, overwrite }, progress)?;
        done(m, &out);
    }
    Ok(())
}

/// The compression of new data: `--compression`/`LIFEBOAT_COMPRESSION` (`codec`), else the
/// file's `compression` (zstd); `--level`/`LIFEBOAT_LEVEL` (`level`), else the file's `level`
/// when the codec is the file's, else the codec's default.
pub fn compression(
    file: &crate::config::FileConfig,
    codec: Option<&str>,
    level: Option<i32>,
) -> Result<crate::repo::compress::Compression> {
    use crate::repo::compress::{Codec, Compression};
    let file_codec = match &file.compression {
        Some(c) => Codec::parse(c)?,
        None => Codec::Zstd,
    };
    let codec = match codec {
        Some(c) => Codec::parse(c)?,
        None => file_codec,
    };
    // A level given on the command line (or LIFEBOAT_LEVEL) must fit the codec. The file's
    // `level` belongs to the file's codec: choosing another codec with --compression starts
    // from that codec's own default (gzip 6, not zstd's 3 from the file).
    let file_level = file.level.filter(|_| codec == file_codec);
    Compression::new(codec, level.or(file_level))
}

/// What a backup checks before committing: `--verify` (full), `--no-verify` (none), else
/// `LIFEBOAT_VERIFY`, else the file's `verify`, else `written`.
pub fn verify_level(
    file: &crate::config::FileConfig,
    verify: bool,
    no_verify: bool,
) -> Result<crate::ops::VerifyLevel> {
    use crate::ops::VerifyLevel;
    if verify {
        return Ok(VerifyLevel::Full);
    }
    if no_verify {
        return Ok(VerifyLevel::None);
    }
    let from_env = std::env::var("LIFEBOAT_VERIFY").ok();
    match from_env.as_deref().or(file.verify.as_deref()) {
        None | Some("written") => Ok(VerifyLevel::Written),
        Some("full") => Ok(VerifyLevel::Full),
        Some("none") => Ok(VerifyLevel::None),
        Some(other) => Err(Error::usage(format!("verify = '{other}' is not valid"))
            .hint("use written, full or none")),
    }
}

/// Packs uploaded at once: `LIFEBOAT_TRANSFERS`, else the file's `transfers`, else 4.
pub fn transfers(file: &crate::config::FileConfig) -> Result<usize> {
    match std::env::var("LIFEBOAT_TRANSFERS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| {
                Error::usage(format!(
                    "LIFEBOAT_TRANSFERS={v} is not a number from 1 to 64"
                ))
            }),
        Err(_) => Ok(file
            .transfers
            .unwrap_or(crate::ops::backup::DEFAULT_TRANSFERS)
            .clamp(1, 64)),
    }
}

/// What a point-in-time restore did.
pub struct RestoredAt {
    pub outcome: RestoreOutcome,
    pub plan: crate::wal::pitr::Plan,
    pub applied: crate::wal::pitr::Applied,
}

/// Restore the database at `source` (absolute path, as recorded) as it was at `at`: the
/// newest base of its replication at or before that moment, then the commits shipped after
/// it up to the moment, to a new file or in place (same safety backup and swap as any
/// restore).
pub fn restore_at(
    repo: &Repository,
    source: &str,
    at: crate::wal::pitr::At,
    to: Destination,
    progress: &Progress,
) -> Result<RestoredAt> {
    use crate::ops::restore::{image_kind, InPlace, NewFile, RestoreTarget};
    use std::sync::{Arc, Mutex};
    let plan = crate::wal::pitr::plan(repo, source, at)?;
    let applied = Arc::new(Mutex::new(crate::wal::pitr::Applied::default()));
    let replay: crate::ops::restore::Replay = {
        let plan = plan.clone();
        let applied = applied.clone();
        Box::new(move |repo, file, path| {
            let a = crate::wal::pitr::apply(repo, &plan, file, path)?;
            let bytes = a.bytes;
            *applied.lock().unwrap_or_else(|p| p.into_inner()) = a;
            Ok(bytes)
        })
    };
    let kind = image_kind(&plan.base)?;
    let mut target: Box<dyn RestoreTarget> = match to {
        Destination::New { path, .. } => {
            Box::new(NewFile::new(path, Some(kind)).with_replay(replay))
        }
        Destination::InPlace { db, compression } => {
            Box::new(InPlace::new(db, kind, compression).with_replay(replay))
        }
    };
    let outcome = crate::ops::restore::restore(repo, &plan.base, target.as_mut(), progress)?;
    let applied = applied.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(RestoredAt {
        outcome,
        plan,
        applied,
    })
}
