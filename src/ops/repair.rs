//! `repo repair`: put right on the primary what `repo check --read-data` finds damaged or
//! missing, from its replicas and from its own packs.
//!
//! - Index files and packs are named by the BLAKE3 of their bytes: one that is missing, or
//!   whose bytes do not match its name (or that does not open), is replaced by a replica's
//!   copy of the same name whose bytes do, written create-only if it was missing and with
//!   an atomic replace if it was damaged.
//! - A manifest that does not open is replaced by a replica's copy that opens (authenticated
//!   under this repository's keys) and names the same backup. Missing manifests are not
//!   copied: a backup only a replica holds may have been forgotten here on purpose.
//! - Blobs that a backup needs and no readable index file locates (an index file lost, or
//!   damaged with no good copy anywhere) are indexed again: the packs that hold them are
//!   read and every blob in them hashed (a pack's directory gives the frames and blob
//!   sizes, the hash gives the ids): first the primary's own packs that no index file
//!   describes, then, for what is still missing, packs only a replica holds (copied here).
//!   The new descriptions go into one new index file; damaged index files that nothing
//!   replaced are then removed, once every blob the backups need is indexed.
//!
//! It runs alone: it holds the repository's exclusive lock (backups and prunes wait) and
//! refuses while a writer runs. `--dry-run` reads and reports, takes no lock, writes nothing.

use crate::error::{Error, ErrorKind, Result};
use crate::id::{Hash, Key};
use crate::repo::crypto::ObjectKind;
use crate::repo::index::{
    encode_index_file, index_object_name, list_index_files, Index, IndexedPack,
};
use crate::repo::locks::{self, Lease};
use crate::repo::manifest::Manifest;
use crate::repo::pack::{pack_object_name, read_directory, FrameEntry};
use crate::repo::reach::{self, Next, Reached};
use crate::repo::{compress, Repository};
use crate::storage::Storage;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub struct RepairOptions {
    pub dry_run: bool,
}

/// An object put right (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    pub object: String,
    /// What was wrong with it.
    pub problem: String,
    /// What was done: "copied from REPLICA", "rebuilt from packs …", "removed".
    pub action: String,
}

/// Something that could not be put right, and the backups that cannot be restored because
/// of it.
#[derive(Debug, Clone, Serialize)]
pub struct Unrepaired {
    pub object: String,
    pub problem: String,
    pub backups: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub location: String,
    pub dry_run: bool,
    /// Nothing is left that could not be repaired.
    pub ok: bool,
    /// The replicas good copies were looked for on.
    pub replicas: Vec<String>,
    /// Configured replicas that could not be opened (unreachable, or no repository there):
    /// nothing was looked for on them.
    pub replicas_unreachable: Vec<String>,
    pub backups: usize,
    pub index_files: usize,
    pub packs: usize,
    pub bytes_read: u64,
    pub repaired: Vec<Repaired>,
    pub unrepaired: Vec<Unrepaired>,
}

/// Markers of processes that only read: a repair replaces objects atomically under them.
const READERS: [&str; 3] = ["restore", "verify", "check"];

pub fn repair(repo: &Repository, opts: &RepairOptions) -> Result<RepairReport> {
    if repo.is_write_only() {
        return Err(Error::usage(
            "repo repair reads the backups' manifests and page lists, which a write-only key cannot",
        )
        .hint("run it where the identity is, with --identity FILE"));
    }
    let result = if opts.dry_run {
        Repair::new(repo, opts, None).run()
    } else {
        repo.require_writable("repo repair")?;
        let storage = repo.storage();
        let records = repo.records();
        locks::exclusively(storage, &records, "repair", |lease| {
            let writers: Vec<String> = locks::live_markers(storage, &records)?
                .into_iter()
                .filter(|(name, m)| {
                    name != locks::PRUNE_LOCK && !READERS.contains(&m.kind.as_str())
                })
                .map(|(_, m)| m.describe())
                .collect();
            if !writers.is_empty() {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!(
                        "repo repair waits: the repository is in use by {}",
                        writers.join("; ")
                    ),
                )
                .hint("run it again when they have finished (a lock of a process that died goes stale after 30 minutes)"));
            }
            Repair::new(repo, opts, Some(lease)).run()
        })
    };
    // What the reads took from replicas is in the report; no warning to run a repair.
    let _ = repo.take_replica_summary();
    result
}

/// A pack read and described blob by blob: its frames, and for each blob the keys it has
/// under every id key (current first).
struct Scanned {
    id: Hash,
    size: u64,
    frames: Vec<FrameEntry>,
    keys: Vec<Vec<Vec<Key>>>,
    /// The replica it comes from and its bytes, if the primary lacks it.
    from: Option<(String, Vec<u8>)>,
}

impl Scanned {
    fn holds_any(&self, keys: &HashSet<Key>) -> bool {
        self.keys
            .iter()
            .flatten()
            .flatten()
            .any(|k| keys.contains(k))
    }

    /// Its description for an index file: each blob under the key a backup needs, if one
    /// does, else under the current id key.
    fn describe(&self, needed: &HashSet<Key>) -> IndexedPack {
        let mut frames = self.frames.clone();
        for (f, keys) in frames.iter_mut().zip(&self.keys) {
            for (b, ks) in f.blobs.iter_mut().zip(keys) {
                b.id = ks
                    .iter()
                    .find(|k| needed.contains(k))
                    .or(ks.first())
                    .copied()
                    .unwrap_or(b.id);
            }
        }
        IndexedPack {
            id: self.id,
            size: self.size,
            frames,
        }
    }
}

/// What the readable backups need that the index lacks or cannot give.
#[derive(Default)]
struct Needs {
    /// Blobs needed and in no index file.
    missing: HashSet<Key>,
    /// Per backup, how many of its blobs are in no index file.
    missing_by_backup: BTreeMap<String, u64>,
    /// Per pack (index number), the backups that need a blob in it.
    by_pack: HashMap<u32, BTreeSet<String>>,
    /// Page lists that could not be read: backup, pack (if indexed), error.
    unreadable: Vec<(String, Option<u32>, String)>,
}

struct Repair<'a> {
    repo: &'a Repository,
    storage: &'a dyn Storage,
    dry_run: bool,
    lease: Option<&'a Lease>,
    report: RepairReport,
}

impl<'a> Repair<'a> {
    fn new(repo: &'a Repository, opts: &RepairOptions, lease: Option<&'a Lease>) -> Self {
        let opened: Vec<String> = repo.replicas().iter().map(|r| r.describe()).collect();
        let unreachable = repo
            .replica_locations()
            .into_iter()
            .filter(|l| !opened.iter().any(|o| crate::config::same_location(o, l)))
            .collect();
        Repair {
            repo,
            storage: repo.storage(),
            dry_run: opts.dry_run,
            lease,
            report: RepairReport {
                location: repo.location(),
                dry_run: opts.dry_run,
                ok: true,
                replicas: opened,
                replicas_unreachable: unreachable,
                backups: 0,
                index_files: 0,
                packs: 0,
                bytes_read: 0,
                repaired: Vec::new(),
                unrepaired: Vec::new(),
            },
        }
    }

    fn replicas(&self) -> &'a [Box<dyn Storage>] {
        self.repo.replicas()
    }

    fn fixed(&mut self, object: &str, problem: &str, action: String) {
        tracing::info!("{object}: {problem}: {action}");
        self.report.repaired.push(Repaired {
            object: object.into(),
            problem: problem.into(),
            action,
        });
    }

    fn unrepaired(&mut self, object: &str, problem: String, backups: BTreeSet<String>) {
        self.report.unrepaired.push(Unrepaired {
            object: object.into(),
            problem,
            backups,
        });
    }

    /// Store `data` as `name` on the primary: create-only where it was missing, an atomic
    /// replace where it was damaged. Nothing in a dry run.
    fn write(&self, name: &str, data: &[u8], replace: bool) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        if let Some(lease) = self.lease {
            lease.check()?;
        }
        if replace {
            self.storage.put_replace(name, data)
        } else {
            crate::storage::put_new_or_same(self.storage, name, data)
        }
    }

    fn run(mut self) -> Result<RepairReport> {
        let records = self.repo.records();
        let planned = locks::planned_packs(&locks::read_plans(self.storage, &records)?);
        let (mut index, damaged_index) = self.index_files(&planned)?;
        let manifests = self.manifests()?;
        // Which packs the backups use (lists read from a replica where need be): a pack a
        // prune planned to delete counts only if a backup still needs it.
        let used = self.needs(&index, &manifests).by_pack;
        let bad_packs = self.packs(&index, &planned, &used)?;

        // Blobs the backups need that no index file locates: index the packs holding them.
        let mut needs = self.needs(&index, &manifests);
        // Each rebuilt pack with its description (the keys chosen when it was found).
        let mut rebuilt: Vec<(IndexedPack, Scanned)> = Vec::new();
        if !needs.missing.is_empty() {
            let mut candidates = self.unindexed_packs(&index, &planned)?;
            let mut asked_replicas = false;
            loop {
                let before = rebuilt.len();
                let (hold, rest): (Vec<Scanned>, Vec<Scanned>) = candidates
                    .into_iter()
                    .partition(|s| s.holds_any(&needs.missing));
                candidates = rest;
                for s in hold {
                    let described = s.describe(&needs.missing);
                    index.add_pack(&described);
                    rebuilt.push((described, s));
                }
                // Lists found again name more pages: look again.
                needs = self.needs(&index, &manifests);
                if needs.missing.is_empty() {
                    break;
                }
                if rebuilt.len() == before {
                    if asked_replicas {
                        break;
                    }
                    asked_replicas = true;
                    candidates.extend(self.replica_packs(&index, &needs.missing)?);
                }
            }
            if !rebuilt.is_empty() {
                self.store_rebuilt(rebuilt)?;
            }
        }

        // Damaged index files nothing replaced: removed once nothing is missing any more
        // (whatever they located is indexed again), else left for a later repair.
        // A backup whose manifest could not be read names blobs nobody counted: while one
        // is left, a damaged index file may still be the only thing locating them.
        let every_manifest_read = manifests.len() == self.report.backups;
        let complete =
            needs.missing.is_empty() && needs.unreadable.is_empty() && every_manifest_read;
        for (name, problem) in damaged_index {
            if complete {
                if !self.dry_run {
                    if let Some(lease) = self.lease {
                        lease.check()?;
                    }
                    self.storage.delete(&name)?;
                }
                self.fixed(
                    &name,
                    &problem,
                    "removed: no replica holds a good copy, and every blob the backups need is indexed without it".into(),
                );
            } else {
                let backups = needs.missing_by_backup.keys().cloned().collect();
                self.unrepaired(
                    &name,
                    if every_manifest_read {
                        format!("{problem}; no replica holds a good copy, and the packs it described were not all found")
                    } else {
                        format!("{problem}; no replica holds a good copy, and it is kept while a backup's manifest cannot be read (it may locate what that backup needs)")
                    },
                    backups,
                );
            }
        }
        for (pack_no, problem) in bad_packs {
            let backups = needs.by_pack.get(&pack_no).cloned().unwrap_or_default();
            let name = pack_object_name(&index.packs[pack_no as usize].id);
            let problem = if backups.is_empty() {
                format!("{problem} (no backup needs what it holds)")
            } else {
                problem
            };
            self.unrepaired(&name, problem, backups);
        }
        for (backup, pack, error) in std::mem::take(&mut needs.unreadable) {
            let object = match pack {
                Some(p) => pack_object_name(&index.packs[p as usize].id),
                None => format!("backups/{backup}"),
            };
            if let Some(u) = self
                .report
                .unrepaired
                .iter_mut()
                .find(|u| u.object == object)
            {
                u.backups.insert(backup);
                continue;
            }
            self.unrepaired(&object, error, [backup].into());
        }
        for (backup, n) in &needs.missing_by_backup {
            self.unrepaired(
                &format!("backups/{backup}"),
                format!("{n} blobs it needs are in no index file, and no pack here or on a replica holds them"),
                [backup.clone()].into(),
            );
        }
        self.report.ok = self.report.unrepaired.is_empty();
        Ok(self.report)
    }

    /// Read every index file; one that fails its check is replaced by a replica's good copy
    /// of the same name. Returns the index and the damaged files nothing replaced.
    /// Files naming packs a prune plans to delete or that are missing or of the wrong size
    /// are added last (as `Repository::load_index` does), so a blob that also lives in a
    /// sound pack is found there.
    fn index_files(&mut self, planned: &HashSet<Hash>) -> Result<(Index, Vec<(String, String)>)> {
        let present = crate::repo::pack::list_packs(self.storage)?;
        let mut files: Vec<(Hash, Vec<IndexedPack>)> = Vec::new();
        let mut damaged = Vec::new();
        for (name, id) in list_index_files(self.storage)? {
            self.report.index_files += 1;
            let e = match self.repo.read_index_file(&name, &id) {
                Ok(packs) => {
                    files.push((id, packs));
                    continue;
                }
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) if e.kind == ErrorKind::Integrity => e,
                Err(e) => return Err(e),
            };
            let problem = e.to_string();
            let mut good = None;
            for replica in self.replicas() {
                let Ok(data) = replica.get_small(&name, crate::repo::format::INDEX_MAX) else {
                    continue;
                };
                if Hash::of(&data) != id {
                    continue;
                }
                if let Ok(packs) = self.repo.read_index_file_from(replica.as_ref(), &name, &id) {
                    good = Some((replica.describe(), data, packs));
                    break;
                }
            }
            match good {
                Some((from, data, packs)) => {
                    self.write(&name, &data, true)?;
                    files.push((id, packs));
                    self.fixed(&name, &problem, format!("replaced by the copy on {from}"));
                }
                None => damaged.push((name, problem)),
            }
        }
        let last = |packs: &[IndexedPack]| {
            packs
                .iter()
                .any(|p| planned.contains(&p.id) || present.get(&p.id) != Some(&p.size))
        };
        files.sort_by_key(|(_, packs)| last(packs));
        let mut index = Index::default();
        for (id, packs) in files {
            index.add_file(id, &packs);
        }
        Ok((index, damaged))
    }

    /// Read every pack the index names (but those a prune is deleting and no backup uses)
    /// and check its bytes against its name; a missing or damaged one is replaced by a
    /// replica's good copy. Returns the packs that stay missing or damaged, and what is wrong
    /// with each.
    fn packs(
        &mut self,
        index: &Index,
        planned: &HashSet<Hash>,
        used: &HashMap<u32, BTreeSet<String>>,
    ) -> Result<BTreeMap<u32, String>> {
        let present: HashMap<String, u64> = self
            .storage
            .list("data/")?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        let mut bad = BTreeMap::new();
        for (n, pack) in index.packs.iter().enumerate() {
            // Each object is put right on its own: stopping between two is safe.
            crate::interrupt::check()?;
            if planned.contains(&pack.id) && !used.contains_key(&(n as u32)) {
                continue;
            }
            self.report.packs += 1;
            let name = pack_object_name(&pack.id);
            let problem = if !present.contains_key(&name) {
                Some(("missing".to_string(), false))
            } else {
                match self.storage.get(&name) {
                    Ok(data) => {
                        self.report.bytes_read += data.len() as u64;
                        (Hash::of(&data) != pack.id).then(|| {
                            (
                                format!("damaged: its {} bytes do not match its name", data.len()),
                                true,
                            )
                        })
                    }
                    Err(e) if e.kind == ErrorKind::NotFound => Some(("missing".into(), false)),
                    Err(e) if e.kind == ErrorKind::Integrity => Some((e.to_string(), true)),
                    Err(e) => return Err(e),
                }
            };
            let Some((problem, replace)) = problem else {
                continue;
            };
            match self.pack_from_replicas(&pack.id)? {
                Some((from, data)) => {
                    self.write(&name, &data, replace)?;
                    self.fixed(&name, &problem, format!("copied from {from}"));
                }
                None => {
                    let why = if self.replicas().is_empty() {
                        format!("{problem}; there is no replica to copy it from")
                    } else {
                        format!("{problem}; no replica holds a good copy")
                    };
                    bad.insert(n as u32, why);
                }
            }
        }
        Ok(bad)
    }

    /// The first replica copy of pack `id` whose bytes match its name.
    fn pack_from_replicas(&mut self, id: &Hash) -> Result<Option<(String, Vec<u8>)>> {
        let name = pack_object_name(id);
        for replica in self.replicas() {
            match replica.get(&name) {
                Ok(data) if Hash::of(&data) == *id => {
                    self.report.bytes_read += data.len() as u64;
                    return Ok(Some((replica.describe(), data)));
                }
                Ok(_) => tracing::info!("{}/{name} is damaged too", replica.describe()),
                Err(e) => tracing::info!("{}/{name}: {e}", replica.describe()),
            }
        }
        Ok(None)
    }

    /// Every manifest that opens; one that does not is replaced by a replica's copy that
    /// does.
    fn manifests(&mut self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for obj in self.storage.list("backups/")? {
            let id = obj.name.rsplit('/').next().unwrap_or_default().to_string();
            if !crate::id::is_backup_id(&id) {
                continue;
            }
            self.report.backups += 1;
            let e = match self.repo.read_manifest(&id) {
                Ok(m) => {
                    out.push(m);
                    continue;
                }
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) if e.kind == ErrorKind::Integrity => e,
                Err(e) => return Err(e),
            };
            let mut good = None;
            for replica in self.replicas() {
                // One download, checked and then written as it is: a second read could
                // return other bytes than the ones that passed.
                let Ok(data) = replica.get_small(&obj.name, crate::repo::format::MANIFEST_MAX)
                else {
                    continue;
                };
                if let Ok(m) = self.repo.decode_manifest(&id, data.clone()) {
                    good = Some((replica.describe(), data, m));
                    break;
                }
            }
            match good {
                Some((from, data, m)) => {
                    self.write(&obj.name, &data, true)?;
                    self.fixed(
                        &obj.name,
                        &e.to_string(),
                        format!("replaced by the copy on {from}"),
                    );
                    out.push(m);
                }
                None => {
                    let why = if self.replicas().is_empty() {
                        format!("{e}; there is no replica to copy it from")
                    } else {
                        format!("{e}; no replica holds a good copy")
                    };
                    self.unrepaired(&obj.name, why, [id].into());
                }
            }
        }
        Ok(out)
    }

    /// What the backups need: their page lists (read through the index, from a replica if
    /// need be) and the pages they list.
    fn needs(&self, index: &Index, manifests: &[Manifest]) -> Needs {
        let mut needs = Needs::default();
        let mut cache = crate::repo::FrameCache::default();
        for m in manifests {
            let mut packs: HashSet<u32> = HashSet::new();
            let mut missing = 0u64;
            let mut need = |key: Key, needs: &mut Needs| match index.get_key(&key) {
                Some(loc) => {
                    packs.insert(index.frames[loc.frame as usize].pack);
                }
                None => {
                    needs.missing.insert(key);
                    missing += 1;
                }
            };
            let walked = reach::walk(self.repo, index, m, &mut cache, &mut |r| {
                match r {
                    Reached::BadId(hex) => needs.unreadable.push((
                        m.id.clone(),
                        None,
                        format!("its manifest names a page list {hex:?} that is not an id"),
                    )),
                    Reached::List(id) => {
                        need(id.key(), &mut needs);
                        if !index.contains(&id) {
                            return Ok(Next::Skip);
                        }
                    }
                    Reached::Unreadable(id, e) => {
                        let pack = index
                            .get(&id)
                            .map(|loc| index.frames[loc.frame as usize].pack);
                        needs.unreadable.push((m.id.clone(), pack, e.to_string()));
                    }
                    Reached::Blob(id) => need(id.key(), &mut needs),
                }
                Ok(Next::Descend)
            });
            // Only an unknown content kind stops a walk here: nothing it needs is known.
            if let Err(e) = walked {
                needs.unreadable.push((m.id.clone(), None, e.to_string()));
            }
            if missing > 0 {
                needs.missing_by_backup.insert(m.id.clone(), missing);
            }
            for p in packs {
                needs.by_pack.entry(p).or_default().insert(m.id.clone());
            }
        }
        needs
    }

    /// The primary's packs that no readable index file describes (and no prune is
    /// deleting), read and described; a damaged one is replaced by a replica's good copy
    /// first.
    fn unindexed_packs(&mut self, index: &Index, planned: &HashSet<Hash>) -> Result<Vec<Scanned>> {
        let indexed: HashSet<Hash> = index.packs.iter().map(|p| p.id).collect();
        let mut out = Vec::new();
        for (id, _) in crate::repo::pack::list_packs(self.storage)? {
            if indexed.contains(&id) || planned.contains(&id) {
                continue;
            }
            let name = pack_object_name(&id);
            let data = match self.storage.get(&name) {
                Ok(d) => d,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) if e.kind == ErrorKind::Integrity => {
                    tracing::info!("{name}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.report.bytes_read += data.len() as u64;
            let data = if Hash::of(&data) == id {
                data
            } else {
                match self.pack_from_replicas(&id)? {
                    Some((from, good)) => {
                        self.write(&name, &good, true)?;
                        self.fixed(
                            &name,
                            "damaged: its bytes do not match its name",
                            format!("copied from {from}"),
                        );
                        good
                    }
                    None => {
                        tracing::info!(
                            "{name} is damaged and not described by any index file; left as it is"
                        );
                        continue;
                    }
                }
            };
            match self.scan(id, &data) {
                Ok(s) => out.push(s),
                Err(e) => tracing::info!("{name} cannot be indexed again: {e}"),
            }
        }
        Ok(out)
    }

    /// Packs that only a replica holds and that, as its index files say, hold some of
    /// `missing`: read there, checked against their names and described.
    fn replica_packs(&mut self, index: &Index, missing: &HashSet<Key>) -> Result<Vec<Scanned>> {
        let mut seen: HashSet<Hash> = index.packs.iter().map(|p| p.id).collect();
        let mut out = Vec::new();
        for replica in self.replicas() {
            let Ok(files) = list_index_files(replica.as_ref()) else {
                continue;
            };
            for (name, id) in files {
                let Ok(packs) = self.repo.read_index_file_from(replica.as_ref(), &name, &id) else {
                    continue;
                };
                for p in packs {
                    let holds = p
                        .frames
                        .iter()
                        .any(|f| f.blobs.iter().any(|b| missing.contains(&b.id)));
                    if !holds || !seen.insert(p.id) {
                        continue;
                    }
                    let pack = pack_object_name(&p.id);
                    let data = match replica.get(&pack) {
                        Ok(d) if Hash::of(&d) == p.id => d,
                        _ => continue,
                    };
                    self.report.bytes_read += data.len() as u64;
                    match self.scan(p.id, &data) {
                        Ok(mut s) => {
                            s.from = Some((replica.describe(), data));
                            out.push(s);
                        }
                        Err(e) => tracing::info!("{}/{pack}: {e}", replica.describe()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Describe a whole pack from its bytes: its directory, and the ids of its blobs.
    fn scan(&self, id: Hash, data: &[u8]) -> Result<Scanned> {
        let name = pack_object_name(&id);
        let frames = read_directory(data, &name, |d| {
            self.repo.unseal(
                ObjectKind::PackDirectory,
                b"",
                d.to_vec(),
                &format!("the directory of pack {name}"),
            )
        })?;
        let hasher = self.repo.hasher();
        let mut dec = compress::Decompressor::default();
        let mut keys = Vec::with_capacity(frames.len());
        for f in &frames {
            let what = format!("a frame of pack {name} at offset {}", f.offset);
            let stored = usize::try_from(f.offset)
                .ok()
                .and_then(|start| data.get(start..start.checked_add(f.stored_len as usize)?))
                .ok_or_else(|| Error::integrity(format!("{what} lies outside the pack")))?;
            let raw = self
                .repo
                .unseal(ObjectKind::Frame, b"", stored.to_vec(), &what)
                .and_then(|plain| dec.decompress(f.codec, &plain, f.raw_len as usize))?;
            let mut frame_keys = Vec::with_capacity(f.blobs.len());
            for b in &f.blobs {
                let blob = raw
                    .get(b.offset as usize..(b.offset as usize + b.len as usize))
                    .ok_or_else(|| Error::integrity(format!("a blob of {what} lies outside it")))?;
                frame_keys.push(hasher.all_ids(blob).iter().map(Hash::key).collect());
            }
            keys.push(frame_keys);
        }
        Ok(Scanned {
            id,
            size: data.len() as u64,
            frames,
            keys,
            from: None,
        })
    }

    /// Copy the packs only replicas held, then one index file describing every rebuilt
    /// pack.
    fn store_rebuilt(&mut self, rebuilt: Vec<(IndexedPack, Scanned)>) -> Result<()> {
        let mut from_primary = Vec::new();
        for (_, s) in &rebuilt {
            let name = pack_object_name(&s.id);
            match &s.from {
                Some((replica, data)) => {
                    self.write(&name, data, false)?;
                    self.fixed(
                        &name,
                        "missing, and described by no index file here",
                        format!("copied from {replica}"),
                    );
                }
                None => from_primary.push(name),
            }
        }
        let packs: Vec<IndexedPack> = rebuilt.into_iter().map(|(p, _)| p).collect();
        let data = self
            .repo
            .seal(ObjectKind::Index, b"", encode_index_file(&packs)?)?;
        let name = index_object_name(&Hash::of(&data));
        self.write(&name, &data, false)?;
        let blobs: usize = packs
            .iter()
            .flat_map(|p| p.frames.iter().map(|f| f.blobs.len()))
            .sum();
        let n = match packs.len() {
            1 => "1 pack".to_string(),
            n => format!("{n} packs"),
        };
        let action = if from_primary.is_empty() {
            format!("written: rebuilt from {n} copied from a replica ({blobs} blobs hashed)")
        } else {
            format!(
                "written: rebuilt from {n} ({blobs} blobs hashed): {}",
                packs
                    .iter()
                    .map(|p| pack_object_name(&p.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        self.fixed(
            &name,
            "blobs the backups need were in no readable index file",
            action,
        );
        Ok(())
    }
}
