//! Replication: copies of a repository on other targets. A sync copies the backups a target
//! lacks with exactly the packs they need that it does not hold (by blob, not by object
//! name), packs it lost (repair), and index entries for what it copied. A replica can thus
//! keep its own retention policy: what it forgot or pruned on purpose (its tombstones) is
//! not copied back, and a pack a prune on the primary merely rewrote is not copied twice.
//! The order — keys, packs, index files, manifests, config last — keeps a replica valid at
//! every moment: a manifest is never there before what it needs, and a replica is not a
//! repository until its first sync has finished. A write-only host, which cannot read page
//! lists, copies by object name instead.
//!
//! Continuous-replication segments (`wal/`) are copied after the backups, by name: every
//! segment the target lacks, except those the target removed on purpose (its tombstones:
//! retention there removed a stream's segments below some number). Like forgotten backups,
//! segments the source deleted stay on the target until its own `forget` or `prune` removes
//! them; a segment that a base on the target needs is never taken away by a sync.

use crate::error::{Error, ErrorKind, Result};
use crate::id::{Hash, Key};
use crate::repo::index::IndexedPack;
use crate::repo::locks::Lease;
use crate::repo::pack::pack_object_name;
use crate::repo::{tombstones, RepoConfig, Repository};
use crate::storage::{ObjectInfo, Storage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use crate::repo::replicas::{read_replicas, version_ms, write_replicas, ReplicaList};

/// What one sync of one target did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub target: String,
    pub copied_objects: u64,
    pub copied_bytes: u64,
    /// Objects the target had with the wrong size or bytes, replaced.
    pub repaired: Vec<String>,
    /// Key files deleted from the target because they were removed from the source
    /// (`key remove`, `key passwd`, `key rotate --full`): their passphrases no longer open it.
    pub key_files_removed: Vec<String>,
    /// How long this target took (including the time it took to fail).
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl SyncReport {
    fn failed(target: &str, e: &Error, duration_ms: u64) -> SyncReport {
        SyncReport {
            target: target.to_string(),
            copied_objects: 0,
            copied_bytes: 0,
            repaired: Vec::new(),
            key_files_removed: Vec::new(),
            duration_ms,
            error: Some(match &e.hint {
                Some(h) => format!("{e} ({h})"),
                None => format!("{e}"),
            }),
        }
    }
}

/// How far a target is behind the primary. The counts are None when the target could not be
/// reached or listed (`error` says why): unknown, not zero.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub target: String,
    /// Objects a sync would copy, plus key files it would delete.
    pub objects_behind: Option<u64>,
    pub bytes_behind: Option<u64>,
    pub backups: Option<u64>,
    /// Id of the newest backup there.
    pub newest_backup: Option<String>,
    /// Key objects the target lacks (a `key add`, a new data key) plus key files it still
    /// holds that were removed from the source (`key remove`): what the next sync changes in
    /// who can open the target.
    pub key_changes: Option<u64>,
    pub error: Option<String>,
}

impl Lag {
    /// A target that could not be opened: nothing about it is known.
    pub fn unreachable(target: &str, error: String) -> Lag {
        Lag {
            target: target.to_string(),
            objects_behind: None,
            bytes_behind: None,
            backups: None,
            newest_backup: None,
            key_changes: None,
            error: Some(error),
        }
    }
}

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

/// Bring `target` up to date with `repo`, `parallel` objects at a time.
pub fn sync(repo: &Repository, target: &dyn Storage, parallel: usize) -> Result<SyncReport> {
    repo.require_writable("sync")?;
    let update = target_config_update(repo, target)?;
    let records = repo.records();
    // A sync may copy a manifest that needs packs a prune on the target has planned to
    // delete; its marker (which sees no plan) holds such sweeps until it is done.
    // And a reader's marker on the source, whose own prune must not delete what this copies.
    crate::repo::locks::as_reader(repo.storage(), &records, "sync", || {
        crate::repo::locks::as_writer(target, &records, "sync", false, |_, lease| {
            sync_marked(repo, target, parallel, lease, update)
        })
    })
}

/// What a sync does with the target's config.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ConfigUpdate {
    /// The same as the source's, or missing (copied last).
    None,
    /// Replaced by the source's at the end (new data key generations).
    Replace,
    /// Replaced at the end, after the target is re-keyed for a full rotation it has not
    /// seen (its config is authentic under the keys of epoch `from_epoch`): see
    /// [`crate::ops::rekey::reseal_replica`].
    Rekey { from_epoch: u32 },
}

/// What to do with the target's config. Refuses a target that holds another repository, a
/// newer state of this one, or an older format (upgraded where it is, which checks it).
fn target_config_update(repo: &Repository, target: &dyn Storage) -> Result<ConfigUpdate> {
    let data = match target.get_small("config", crate::repo::format::SMALL_OBJECT_MAX) {
        Ok(d) => d,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(ConfigUpdate::None),
        Err(e) => return Err(e),
    };
    let source = repo
        .storage()
        .get_small("config", crate::repo::format::SMALL_OBJECT_MAX)?;
    if data == source {
        return Ok(ConfigUpdate::None);
    }
    let (theirs, mac) = RepoConfig::parse(&data, &target.describe())?;
    if theirs.id != repo.config.id {
        return Err(Error::usage(format!(
            "{} holds another repository ({}), not a replica of this one ({})",
            target.describe(),
            theirs.id,
            repo.config.id
        ))
        .hint(
            "remove it from the replicas (`lifeboat replica remove URL`) or empty that location",
        ));
    }
    let ahead = theirs.format_version > repo.config.format_version
        || match (&theirs.keys, &repo.config.keys) {
            (Some(t), Some(s)) => t.epoch > s.epoch || t.data_keys.len() > s.data_keys.len(),
            _ => false,
        };
    if ahead {
        return Err(Error::usage(format!(
            "the replica at {} has newer keys or a newer format than this repository",
            target.describe()
        ))
        .hint("sync from the copy that was rotated or upgraded last; if none was, that config was tampered with (it cannot be checked without the newer keys it claims): delete `config` on the replica and sync again"));
    }
    if theirs.format_version < repo.config.format_version {
        return Err(Error::usage(format!(
            "the replica at {} is in format {}; this repository is in format {}",
            target.describe(),
            theirs.format_version,
            repo.config.format_version
        ))
        .hint(format!(
            "upgrade it where it is first: `lifeboat --repo {} repo upgrade` (with --identity FILE for a write-only repository), then sync",
            target.describe()
        )));
    }
    // Act on the target's config only if it is authentic (under the keys of its epoch): an
    // edited one is simply replaced, and nothing of the replica is re-sealed on its word.
    if let (Some(keys), Some(t)) = (repo.keys(), &theirs.keys) {
        let root = if t.epoch == keys.root.epoch {
            Some(&keys.root)
        } else {
            keys.past.get(t.epoch as usize)
        };
        let authentic = root.is_some_and(|r| theirs.verify(mac.as_deref(), r).is_ok());
        if !authentic {
            tracing::warn!(
                "the config of the replica at {} is not authentic; replaced by this repository's",
                target.describe()
            );
            return Ok(ConfigUpdate::Replace);
        }
        if t.epoch < keys.root.epoch || t.rekeying {
            return Ok(ConfigUpdate::Rekey {
                from_epoch: t.epoch,
            });
        }
        // An authentic config newer than this one: this repository's was put back (a
        // rollback), or the replica was changed where it is. Replacing it would roll the
        // replica back too, and remove the key files only the newer config lists.
        if theirs.revision > repo.config.revision {
            return Err(Error::usage(format!(
                "the replica at {} has a newer config (revision {}) than this repository ({})",
                target.describe(),
                theirs.revision,
                repo.config.revision
            ))
            .hint("if this repository's config was put back from an old copy, restore the newer one; keys are changed on the primary and reach the replicas by sync"));
        }
    }
    Ok(ConfigUpdate::Replace)
}

fn sync_marked(
    repo: &Repository,
    target: &dyn Storage,
    parallel: usize,
    lease: &Lease,
    update: ConfigUpdate,
) -> Result<SyncReport> {
    let records = repo.records();
    let copier = Copier::new(repo, target, parallel);
    copier.copy_missing("keys/", |name| !crate::ops::rekey::is_inventory(name))?;
    let mut key_files_removed = Vec::new();
    if !matches!(update, ConfigUpdate::Rekey { .. }) {
        // Every key file here wraps the same root keys: a removed passphrase stops opening
        // the replica now, whatever happens to the rest of the sync.
        key_files_removed = remove_revoked_key_files(repo, target)?;
    }
    if let ConfigUpdate::Rekey { from_epoch } = update {
        // The replica has not seen a full key rotation: its manifests become this
        // repository's, its index is rebuilt below, its records dropped (but for pins).
        let keys = repo
            .keys()
            .ok_or_else(|| Error::internal("a rotated repository without keys"))?;
        let report =
            crate::ops::rekey::reseal_replica(target, &keys.master, repo.storage(), from_epoch)?;
        tracing::info!(
            "{}: re-keyed: {} manifests taken from this repository, {} index files dropped (indexed again now), {} pins kept",
            target.describe(),
            report.manifests,
            report.index_files,
            report.records
        );
        if !report.left_out.is_empty() {
            tracing::warn!(
                "{}: {} backups only this replica held are no longer readable there (a full key rotation cannot vouch for them)",
                target.describe(),
                report.left_out.len()
            );
        }
    }
    if repo.is_write_only() {
        // Without the key to the page lists, copy by name: every pack the target lacks
        // (a new backup may need one it dropped; its next prune drops it again), and
        // the backups it did not forget.
        let tomb = tombstones::read(target, &records)?;
        // Packs a prune there is deleting cannot be relied on, nor stored again under their
        // names: wait for that prune rather than copy backups that may need them.
        let planned: HashSet<String> = crate::repo::locks::read_plans(target, &records)?
            .into_iter()
            .flat_map(|p| p.packs)
            .collect();
        if !planned.is_empty() {
            let source_packs = repo.storage().list("data/")?;
            if let Some(o) = source_packs
                .iter()
                .find(|o| planned.contains(object_id(&o.name)))
            {
                return Err(Error::storage(format!(
                    "a prune on {} is deleting {}, which this repository still has",
                    target.describe(),
                    o.name
                ))
                .hint("run `lifeboat sync` again once that prune has finished"));
            }
        }
        copier.copy_missing("data/", |_| true)?;
        copier.copy_missing("index/", |_| true)?;
        lease.check()?;
        copier.copy_missing("backups/", |name| !tomb.backups.contains(object_id(name)))?;
    } else {
        let reindex = matches!(update, ConfigUpdate::Rekey { .. });
        copy_backups(repo, target, &copier, lease, reindex)?;
    }
    // Segments after the bases they continue (a segment alone is of no use, and one a
    // target holds without its base is removed by its prune a day later).
    copy_segments(repo, target, &copier)?;
    // PostgreSQL's archived WAL (write-once, named by PostgreSQL; checked as copied).
    copier.copy_missing(crate::repo::pgwal::PREFIX, |name| {
        pg_wal_name(name).is_some()
    })?;
    // The config last: only now is the replica a repository (or has the new keys).
    if update != ConfigUpdate::None {
        let data = repo
            .storage()
            .get_small("config", crate::repo::format::SMALL_OBJECT_MAX)?;
        check_config(repo, &data).map_err(|e| {
            Error::integrity(format!(
                "the config of {} changed during this sync and does not check ({e}); the replica keeps its own",
                repo.location()
            ))
            .hint("run the command again; if it fails again, someone replaced that config")
        })?;
        target.put_replace("config", &data)?;
        copier.count(data.len() as u64);
        if matches!(update, ConfigUpdate::Rekey { .. }) {
            // Only now: until the new config was in place, the replica's own key files
            // were the ones that opened it. Those the source removed open only retired keys.
            key_files_removed = remove_revoked_key_files(repo, target)?;
        }
    } else if !target.exists("config")? {
        copier.copy_one("config", false)?;
    }
    let mut report = copier.report();
    report.key_files_removed = key_files_removed;
    Ok(report)
}

/// Whether `name` is a key file (`keys/<16 hex>`, a passphrase's wrapping of the root keys).
fn is_key_file(name: &str) -> bool {
    name.strip_prefix("keys/")
        .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The key files `target` holds that were removed from the repository: those its
/// authenticated config no longer lists (`key remove`, `key passwd` and `key rotate --full`
/// keep that list current) and that its storage no longer holds either. Both must say so:
/// the listing alone is not authenticated (someone who deleted a key file on the primary must
/// not lock the owners out of every replica), and a key file the config does not list yet may
/// be a `key add` under way. Nothing the target says decides anything: it only says what it
/// holds. Without the authenticated list (an unencrypted repository, or a config written
/// before Lifeboat kept it), none.
fn revoked_key_files(
    repo: &Repository,
    source: &[ObjectInfo],
    target: &[ObjectInfo],
) -> Vec<String> {
    let Some(listed) = repo
        .config
        .keys
        .as_ref()
        .map(|k| &k.key_files)
        .filter(|l| !l.is_empty())
    else {
        return Vec::new();
    };
    let on_source: HashSet<&str> = source.iter().map(|o| o.name.as_str()).collect();
    target
        .iter()
        .map(|o| o.name.as_str())
        .filter(|name| is_key_file(name))
        .filter(|name| !on_source.contains(name))
        .filter(|name| !listed.iter().any(|id| id == object_id(name)))
        .map(str::to_string)
        .collect()
}

/// Delete from `target` the key files removed from the repository ([`revoked_key_files`]);
/// returns their ids.
fn remove_revoked_key_files(repo: &Repository, target: &dyn Storage) -> Result<Vec<String>> {
    let source = repo.storage().list("keys/")?;
    let revoked = revoked_key_files(repo, &source, &target.list("keys/")?);
    let mut removed = Vec::new();
    for name in revoked {
        target.delete(&name)?;
        tracing::info!("{}: removed key file {name}", target.describe());
        removed.push(object_id(&name).to_string());
    }
    Ok(removed)
}

fn object_id(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or_default()
}

/// Copy the backups the target lacks (and did not forget on purpose), with exactly the
/// packs they need that the target does not hold, plus packs the target lost (repair), and
/// index entries for what was copied; manifests last. `reindex`: the target's index files
/// were dropped (re-keyed), so every backup's data is indexed there again (packs it holds
/// are not copied again).
fn copy_backups(
    repo: &Repository,
    target: &dyn Storage,
    copier: &Copier,
    lease: &Lease,
    reindex: bool,
) -> Result<()> {
    let source = repo.storage();
    // Backups listed before the tombstones: a forget running now records a backup before
    // deleting it, so one missing from this listing is found in the tombstones read next.
    let records = repo.records();
    let have_backups = by_name(target.list("backups/")?);
    let tomb = tombstones::read(target, &records)?;
    let manifests: Vec<ObjectInfo> = source
        .list("backups/")?
        .into_iter()
        .filter(|o| crate::id::is_backup_id(object_id(&o.name)))
        .filter(|o| reindex || have_backups.get(&o.name) != Some(&o.size))
        .filter(|o| !tomb.backups.contains(object_id(&o.name)))
        .collect();
    // Re-indexing, every manifest's data is indexed, but only those the target lacks (or
    // holds otherwise) are copied: re-keying already put the others there.
    let differs = |o: &ObjectInfo| have_backups.get(&o.name) != Some(&o.size);

    // What the target holds: blob keys of its indexed packs, except packs a prune there
    // plans to delete (it may be deleting them right now).
    let target_packs = by_name(target.list("data/")?);
    let planned: HashSet<String> = crate::repo::locks::read_plans(target, &records)?
        .into_iter()
        .flat_map(|p| p.packs)
        .collect();
    let mut target_keys: HashSet<Key> = HashSet::new();
    let mut target_indexed: HashSet<Hash> = HashSet::new();
    let mut damaged_index: HashSet<String> = HashSet::new();
    for (name, id) in crate::repo::index::list_index_files(target)? {
        let packs = match repo.read_index_file_from(target, &name, &id) {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => {
                // Its packs count as absent: what is needed is copied again, and a source
                // copy of this file replaces it.
                tracing::warn!("{}/{name}: {e}", target.describe());
                damaged_index.insert(name);
                continue;
            }
        };
        for p in packs {
            target_indexed.insert(p.id);
            let present = target_packs.get(&pack_object_name(&p.id)) == Some(&p.size);
            if present && !planned.contains(&p.id.to_hex()) {
                target_keys.extend(p.frames.iter().flat_map(|f| f.blobs.iter().map(|b| b.id)));
            }
        }
    }

    let index = repo.load_index()?;
    let mut packs_to_copy: HashSet<u32> = HashSet::new();
    let mut need = |key: &Key, what: &str| -> Result<()> {
        if target_keys.contains(key) {
            return Ok(());
        }
        let loc = index.get_key(key).ok_or_else(|| {
            Error::integrity(format!(
                "{what} needs a blob that is missing from {}; not copied",
                repo.location()
            ))
            .hint("run `lifeboat repo check` on the source")
        })?;
        packs_to_copy.insert(index.frames[loc.frame as usize].pack);
        Ok(())
    };
    let mut cache = crate::repo::FrameCache::default();
    for obj in &manifests {
        let m = repo.read_manifest(object_id(&obj.name))?;
        let what = format!("backup {}", m.id);
        crate::repo::reach::walk(repo, &index, &m, &mut cache, &mut |r| {
            use crate::repo::reach::{Next, Reached};
            match r {
                Reached::BadId(hex) => {
                    return Err(Error::integrity(format!(
                        "{what} names a bad list id {hex}"
                    )))
                }
                Reached::Unreadable(_, e) => return Err(e),
                Reached::List(id) | Reached::Blob(id) => need(&id.key(), &what)?,
            }
            Ok(Next::Descend)
        })?;
    }
    // Packs the target lacks: those its index still names were lost or damaged there and are
    // copied again (repair); others are copied if they hold a blob it has nowhere else.
    // Packs whose every blob it holds already (a prune on the source repacked them) are
    // skipped and recorded as dropped, as are packs it dropped before and packs a prune on
    // the source is about to delete. A pack copied here that the target's own backups do
    // not need is dropped by its next prune, and not copied again.
    let mut missing: HashMap<u32, bool> = HashMap::new();
    for (n, p) in index.packs.iter().enumerate() {
        let n = n as u32;
        if target_packs.get(&pack_object_name(&p.id)) == Some(&p.size)
            || packs_to_copy.contains(&n)
            || index.planned.contains(&n)
        {
            continue;
        }
        if target_indexed.contains(&p.id) {
            packs_to_copy.insert(n);
        } else if !tomb.packs.contains(&p.id.to_hex()) {
            missing.insert(n, false);
        }
    }
    if !missing.is_empty() {
        for (key, loc) in index.blobs() {
            let pack = index.frames[loc.frame as usize].pack;
            if let Some(holds_new) = missing.get_mut(&pack) {
                *holds_new |= !target_keys.contains(key);
            }
        }
    }
    let mut duplicates = Vec::new();
    for (n, holds_new) in missing {
        if holds_new {
            packs_to_copy.insert(n);
        } else {
            duplicates.push(index.packs[n as usize].id.to_hex());
        }
    }
    for &n in &packs_to_copy {
        let id = index.packs[n as usize].id.to_hex();
        if planned.contains(&id) {
            return Err(Error::storage(format!(
                "a prune on {} is deleting pack {id}, which this sync needs",
                target.describe()
            ))
            .hint("run `lifeboat sync` again once that prune has finished"));
        }
    }

    // Packs (only those the target lacks or holds damaged: one it holds intact but not
    // indexed needs only its index entry), then their index entries, then the manifests.
    let names: Vec<(String, bool)> = packs_to_copy
        .iter()
        .filter_map(|&n| {
            let p = &index.packs[n as usize];
            let name = pack_object_name(&p.id);
            match target_packs.get(&name) {
                Some(&size) if size == p.size => None,
                Some(_) => Some((name, true)),
                None => Some((name, false)),
            }
        })
        .collect();
    copier.copy_all(names)?;
    let mut files: Vec<u32> = packs_to_copy
        .iter()
        .map(|&n| index.pack_file[n as usize])
        .collect();
    files.sort_unstable();
    files.dedup();
    let copied: HashSet<Hash> = packs_to_copy
        .iter()
        .map(|&n| index.packs[n as usize].id)
        .collect();
    for f in files {
        let id = index.files[f as usize];
        let name = crate::repo::index::index_object_name(&id);
        // Only the packs just made present: an entry for a pack the target lacks (or is
        // deleting) could shadow a copy of a blob that lives elsewhere there.
        let kept: Vec<IndexedPack> = repo
            .read_index_file(&name, &id)?
            .into_iter()
            .filter(|p| copied.contains(&p.id))
            .collect();
        let data = repo.seal(
            crate::repo::crypto::ObjectKind::Index,
            b"",
            crate::repo::index::encode_index_file(&kept)?,
        )?;
        let name = crate::repo::index::index_object_name(&Hash::of(&data));
        if damaged_index.contains(&name) {
            target.delete(&name)?; // the same entries, damaged there: replaced
        }
        crate::storage::put_new_or_same(target, &name, &data)?;
        copier.count(data.len() as u64);
    }
    tombstones::record_dropped(target, &records, &duplicates)?;
    lease.check()?;
    let names = manifests
        .into_iter()
        .filter(|o| differs(o))
        .map(|o| {
            let replace = have_backups.contains_key(&o.name);
            (o.name, replace)
        })
        .collect();
    copier.copy_all(names)
}

/// Copy the segments the target lacks (or holds with another size), except those it
/// removed on purpose. Stored bytes are copied as they are: a segment is sealed with its
/// name, so the copy is authentic under the same name there.
fn copy_segments(repo: &Repository, target: &dyn Storage, copier: &Copier) -> Result<()> {
    let (segments, _) = crate::repo::segment::list(repo.storage())?;
    if segments.is_empty() {
        return Ok(());
    }
    let tomb = tombstones::read(target, &repo.records())?;
    let have = by_name(target.list(crate::repo::segment::PREFIX)?);
    let todo = segments
        .into_iter()
        .filter(|s| !tomb.segment_dropped(&s.stream, s.last_seq))
        .map(|s| (s.object(), s.size))
        .filter(|(name, size)| have.get(name) != Some(size))
        .map(|(name, _)| {
            let replace = have.contains_key(&name);
            (name, replace)
        })
        .collect();
    copier.copy_all(todo)
}

/// Copies objects from one storage to another, several at a time, counting.
struct Copier<'a> {
    /// The source: its storage, and its keys to check what is copied.
    repo: &'a Repository,
    target: &'a dyn Storage,
    parallel: usize,
    copied: AtomicU64,
    bytes: AtomicU64,
    repaired: Mutex<Vec<String>>,
}

impl<'a> Copier<'a> {
    fn new(repo: &'a Repository, target: &'a dyn Storage, parallel: usize) -> Copier<'a> {
        Copier {
            repo,
            target,
            parallel,
            copied: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            repaired: Mutex::new(Vec::new()),
        }
    }

    fn count(&self, bytes: u64) {
        self.copied.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Copy every object under `prefix` that the target lacks (or holds with another size)
    /// and `wanted` accepts.
    fn copy_missing(&self, prefix: &str, wanted: impl Fn(&str) -> bool) -> Result<()> {
        let have = by_name(self.target.list(prefix)?);
        let todo = self
            .repo
            .storage()
            .list(prefix)?
            .into_iter()
            .filter(|o| have.get(&o.name) != Some(&o.size) && wanted(&o.name))
            .map(|o| {
                let replace = have.contains_key(&o.name);
                (o.name, replace)
            })
            .collect();
        self.copy_all(todo)
    }

    fn copy_one(&self, name: &str, replace: bool) -> Result<()> {
        let Some(n) = copy_one(self.repo, self.target, name, replace)? else {
            return Ok(());
        };
        self.count(n);
        if replace {
            if let Ok(mut r) = self.repaired.lock() {
                r.push(name.to_string());
            }
        }
        Ok(())
    }

    /// Copy `(name, replace)` pairs, `parallel` at a time; the first error stops the rest.
    fn copy_all(&self, todo: Vec<(String, bool)>) -> Result<()> {
        let queue = Mutex::new(todo.into_iter());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.parallel.max(1) {
                s.spawn(|| loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((name, replace)) = next else { return };
                    let copied =
                        crate::interrupt::check().and_then(|()| self.copy_one(&name, replace));
                    if let Err(e) = copied {
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                });
            }
        });
        match first_error.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn report(&self) -> SyncReport {
        SyncReport {
            target: self.target.describe(),
            copied_objects: self.copied.load(Ordering::Relaxed),
            copied_bytes: self.bytes.load(Ordering::Relaxed),
            repaired: self.repaired.lock().map(|r| r.clone()).unwrap_or_default(),
            key_files_removed: Vec::new(),
            duration_ms: 0,
            error: None,
        }
    }
}

/// Copy `name` to `target`; `replace`: the target holds it with another size. What is
/// copied is checked first wherever this repository can check it: a content-addressed object
/// against its name, a manifest and the config against the keys. An object that cannot be
/// checked here (a key file, a write-only host's manifest) is copied where the target lacks
/// it, but never replaces the target's copy: junk planted on the source must not overwrite
/// good copies on every replica. Returns the bytes written, None if the target's was kept.
fn copy_one(
    repo: &Repository,
    target: &dyn Storage,
    name: &str,
    replace: bool,
) -> Result<Option<u64>> {
    let source = repo.storage();
    let data = source.get(name)?;
    let damaged = || {
        Error::integrity(format!(
            "{}/{name} is damaged on the source (it does not check against its name or the \
             keys); not copied",
            source.describe()
        ))
        .hint("run `lifeboat repo repair` on the source: it puts back an intact copy from another replica")
    };
    let checked = if let Some(id) = content_addressed(name) {
        if Hash::of(&data) != id {
            return Err(damaged());
        }
        true
    } else if name == "config" {
        check_config(repo, &data).map_err(|_| damaged())?;
        true
    } else if let Some(id) = name
        .strip_prefix("backups/")
        .filter(|_| !repo.is_write_only())
    {
        repo.decode_manifest(id, data.clone())
            .map_err(|_| damaged())?;
        true
    } else if let Some((system_id, file)) = pg_wal_name(name).filter(|_| !repo.is_write_only()) {
        crate::repo::pgwal::open(repo, system_id, file, data.clone()).map_err(|_| damaged())?;
        true
    } else if let Some(s) =
        crate::repo::segment::parse_name(name, data.len() as u64).filter(|_| !repo.is_write_only())
    {
        crate::repo::segment::open(repo, name, data.clone(), &s).map_err(|_| damaged())?;
        true
    } else {
        false
    };
    if replace {
        if !checked {
            tracing::warn!(
                "{}/{name} differs from this repository's copy, which cannot be checked here; \
                 the replica's is left as it is (run `lifeboat --repo {} repo check` there)",
                target.describe(),
                target.describe()
            );
            return Ok(None);
        }
        // A checked copy replaces one of the wrong size (damaged there).
        target.delete(name)?;
    }
    target.put_new(name, &data)?;
    Ok(Some(data.len() as u64))
}

/// `pgwal/<system id>/<file>` split, for names of PostgreSQL's WAL files.
fn pg_wal_name(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix(crate::repo::pgwal::PREFIX)?;
    let (id, file) = rest.split_once('/')?;
    crate::repo::pgwal::WalFile::parse(file)?;
    Some((id.parse().ok()?, file))
}

/// The source's config as stored is the one this repository was opened with, or a later
/// authentic one (a key change meanwhile): never bytes planted since.
fn check_config(repo: &Repository, data: &[u8]) -> Result<()> {
    let (config, mac) = RepoConfig::parse(data, &repo.location())?;
    if config.id != repo.config.id || config.revision < repo.config.revision {
        return Err(Error::integrity("not this repository's current config"));
    }
    match repo.keys() {
        Some(keys) => config.verify(mac.as_deref(), &keys.root),
        // An unencrypted repository authenticates nothing (documented).
        None => Ok(()),
    }
}

/// Compare a target with the repository without copying: the backups it lacks and the packs
/// it lacks (except what it dropped or forgot on purpose), and the key changes a sync would
/// make there. Index files are not counted: a sync writes the target's own. A target that
/// cannot be listed has unknown counts (None) and an error.
pub fn lag(repo: &Repository, target: &dyn Storage) -> Lag {
    let mut lag = Lag {
        target: target.describe(),
        objects_behind: None,
        bytes_behind: None,
        backups: None,
        newest_backup: None,
        key_changes: None,
        error: None,
    };
    let source = repo.storage();
    let records = repo.records();
    let result = (|| -> Result<()> {
        let mut objects = 0;
        let mut bytes = 0;
        let mut key_changes = 0;
        if !target.exists("config")? {
            objects += 1;
        }
        let tomb = tombstones::read(target, &records)?;
        for group in [
            "keys/",
            "data/",
            "backups/",
            crate::repo::segment::PREFIX,
            crate::repo::pgwal::PREFIX,
        ] {
            let target_list = target.list(group)?;
            let source_list = source.list(group)?;
            if group == "keys/" {
                let revoked = revoked_key_files(repo, &source_list, &target_list).len() as u64;
                objects += revoked;
                key_changes += revoked;
            }
            let have = by_name(target_list);
            for o in source_list {
                if group == "keys/" && crate::ops::rekey::is_inventory(&o.name) {
                    continue; // never copied
                }
                if group == crate::repo::segment::PREFIX
                    && crate::repo::segment::parse_name(&o.name, o.size).is_none()
                {
                    continue; // not a segment: never copied
                }
                if group == crate::repo::pgwal::PREFIX && pg_wal_name(&o.name).is_none() {
                    continue; // not a WAL file: never copied
                }
                let id = object_id(&o.name);
                let dropped_segment = crate::repo::segment::parse_name(&o.name, o.size)
                    .is_some_and(|s| tomb.segment_dropped(&s.stream, s.last_seq));
                if have.get(&o.name) != Some(&o.size)
                    && !tomb.packs.contains(id)
                    && !tomb.backups.contains(id)
                    && !dropped_segment
                {
                    objects += 1;
                    bytes += o.size;
                    if group == "keys/" {
                        key_changes += 1;
                    }
                }
            }
            if group == "backups/" {
                let mut ids: Vec<String> = have
                    .keys()
                    .map(|n| object_id(n).to_string())
                    .filter(|id| crate::id::is_backup_id(id))
                    .collect();
                ids.sort();
                lag.backups = Some(ids.len() as u64);
                // The newest one that authenticates there: a planted name (dated ahead) must
                // not make stopped backups look fresh. A write-only host cannot read
                // manifests: it goes by the names.
                lag.newest_backup = if repo.is_write_only() {
                    ids.pop()
                } else {
                    ids.into_iter()
                        .rev()
                        .find(|id| repo.read_manifest_from(target, id).is_ok())
                };
            }
        }
        lag.objects_behind = Some(objects);
        lag.bytes_behind = Some(bytes);
        lag.key_changes = Some(key_changes);
        Ok(())
    })();
    if let Err(e) = result {
        lag.error = Some(e.to_string());
        lag.backups = None;
        lag.newest_backup = None;
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
        .filter(|r| only.is_none_or(|o| crate::config::same_location(o, r)))
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
        // Stopped by a signal: the targets not reached yet are not even contacted.
        crate::interrupt::check()?;
        let started = std::time::Instant::now();
        let result = crate::storage::open(url, true).and_then(|t| sync(repo, t.as_ref(), 4));
        let ms = started.elapsed().as_millis() as u64;
        let report = match result {
            // Named as listed, whatever the storage calls itself: status finds it so.
            Ok(r) => SyncReport {
                target: url.clone(),
                duration_ms: ms,
                ..r
            },
            Err(e) => SyncReport::failed(url, &e, ms),
        };
        crate::ops::sync::record(repo, &report);
        reports.push(report);
    }
    Ok(reports)
}

/// Replicas from the repository (`replica add`) and from the configuration, each once, in
/// one spelling ([`crate::config::normalize_location`]: `/x/` and `file:///x` are `/x`).
/// In a repository whose records are sealed, the list is authentic. In one whose records are
/// plain, anyone who can write the storage could add a location (and have this host send
/// everything there with its own credentials): only those added on this machine count.
pub fn replica_urls(repo: &Repository, configured: &[String]) -> Result<Vec<String>> {
    use crate::config::{normalize_location, same_location};
    let records = repo.records();
    let (list, _) = read_replicas(repo.storage(), &records)?;
    let mut listed = Vec::new();
    if records.is_sealed() {
        listed = list.replicas;
    } else {
        let confirmed = crate::trust::confirmed_replicas(&repo.location());
        for url in list.replicas {
            if confirmed.iter().any(|c| same_location(c, &url)) {
                listed.push(url);
            } else {
                tracing::warn!(
                    "replica {url} is listed in the repository but was not added on this machine; \
                     not used (run `lifeboat replica add {url}` here to send backups to it)"
                );
            }
        }
    }
    let mut urls: Vec<String> = Vec::new();
    for url in listed.iter().chain(configured) {
        let url = normalize_location(url);
        if !urls.contains(&url) {
            urls.push(url);
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
    /// [`key_state`] of the repository at the last successful sync: when it no longer
    /// matches, the target has key changes to receive (told even while it is unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_synced: Option<String>,
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
        None => {
            state.last_success = Some(now);
            state.keys_synced = key_state(repo);
        }
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
        if let Err(e) = crate::storage::local::write_private_file(&path, &data) {
            tracing::warn!("cannot record sync state in {}: {e}", path.display());
        }
    }
}

/// A fingerprint of the repository's authenticated key layout (epoch, data key generations,
/// recipient, key files): it changes with every `key add`, `key remove`, `key passwd` and
/// `key rotate`. None for an unencrypted repository.
pub fn key_state(repo: &Repository) -> Option<String> {
    let section = repo.config.keys.as_ref()?;
    let data = serde_json::to_vec(section).ok()?;
    Some(Hash::of(&data).to_hex())
}

/// Whether the target has key changes to receive: from its listing when it could be read,
/// else from what the last successful sync from this machine sent (None: unknown).
pub fn key_changes_pending(repo: &Repository, lag: &Lag, state: &TargetState) -> Option<bool> {
    if let Some(n) = lag.key_changes {
        return Some(n > 0);
    }
    let now = key_state(repo);
    match (&state.keys_synced, now) {
        (_, None) => Some(false),
        (Some(then), Some(now)) => Some(*then != now),
        (None, Some(_)) => None,
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
