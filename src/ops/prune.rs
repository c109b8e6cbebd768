//! Garbage collection: delete packs no backup needs, repack packs that are mostly unused,
//! and drop their index entries, without ever deleting data a running backup may reuse.
//!
//! One run: (1) survey: which blobs the backups reference, and per pack how many bytes are
//! live; (2) repack the worst packs until at most `max_unused` of the repository is unused,
//! writing new packs and index files; (3) write a deletion *plan* naming the unused and
//! repacked packs; (4) sweep every plan that no live writer can still be using (see
//! `repo::locks`): survey again, this time preferring copies outside the plans, delete the
//! planned packs that hold no needed blob, rewrite the index files that named them, delete
//! the plan. A plan a running backup has not seen waits for the next prune.
//!
//! Continuous-replication segments are not packs: prune deletes those no base can use, the
//! segments of a stream numbered below its oldest base's `next_seq`, and every segment of a
//! stream that has no base and shipped nothing for a day (a `replicate` killed before its
//! first base was stored). Nothing here waits for `replicate`: it holds a writer marker only
//! while it stores a base, and the packs a base may reuse are protected by the plans as for
//! any backup.
//!
//! Memory is bounded by the referenced blob keys (16 bytes and a bit per distinct blob the
//! kept backups need) plus one index file and one pack at a time; the full index is never
//! loaded.

use crate::error::{Error, ErrorKind, Result};
use crate::id::{Hash, Key};
use crate::ops::backup::{check_written, store_pack, FRAME_BYTES};
use crate::progress::Progress;
use crate::repo::compress::{Codec, Compression, Compressor, Decompressor};
use crate::repo::crypto::ObjectKind;
use crate::repo::index::{
    encode_index_file, index_object_name, list_index_files, Index, IndexedPack,
};
use crate::repo::locks::{self, Lease, Plan};
use crate::repo::pack::{
    list_packs, pack_object_name, BlobEntry, BlobKind, FrameEntry, PackWriter,
};
use crate::repo::reach::{self, Next, Reached};
use crate::repo::{FrameCache, Repository};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

pub struct PruneOptions {
    pub dry_run: bool,
    /// Fraction of the repository's pack bytes allowed to stay unused (restic's
    /// `--max-unused`); partly used packs are repacked until the rest is under it.
    pub max_unused: f64,
    pub progress: Progress,
}

pub const DEFAULT_MAX_UNUSED: f64 = 0.05;

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub backups: usize,
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Packs holding no needed blob (found this run).
    pub unused_packs: usize,
    pub unused_bytes: u64,
    /// Partly used packs whose live blobs were (or would be) copied to new packs.
    pub repacked_packs: usize,
    pub repacked_bytes: u64,
    pub repack_written_bytes: u64,
    pub deleted_packs: usize,
    pub deleted_bytes: u64,
    pub deleted_index_files: usize,
    pub written_index_files: usize,
    /// Small index files merged into bigger ones (fewer reads to open the repository).
    pub compacted_index_files: usize,
    /// Leftovers of killed runs removed from the local staging folder `tmp/`.
    pub temp_files_removed: usize,
    /// Planned packs left for a later prune, because a running writer may still use them.
    pub pending_packs: usize,
    pub pending_bytes: u64,
    pub waiting_for: Vec<String>,
    /// Blobs some backup needs that no pack holds (a damaged repository; see `repo check`).
    pub missing_blobs: u64,
    /// Packs kept although planned: they hold blobs backups need whose other copy, named by
    /// an index file, failed its check (a damaged or planted index entry; see `repo check`).
    pub kept_unverified: Vec<String>,
    pub packs_after: usize,
    pub bytes_after: u64,
    /// Estimated bytes in packs that no backup needs, after this run.
    pub unused_bytes_after: u64,
    /// Continuous-replication segments no base can use, deleted (in a dry run: found).
    pub segments_removed: usize,
    pub segments_removed_bytes: u64,
    /// Streams without a base whose segments those include.
    pub orphan_streams: Vec<String>,
    /// Segments of streams without a base left for a later prune: a backup is running,
    /// which may be that stream's first base.
    pub segments_waiting: usize,
    /// Archived PostgreSQL WAL files no base backup needs (below each cluster's oldest base
    /// backup), deleted (in a dry run: found).
    pub pg_wal_removed: usize,
    pub pg_wal_removed_bytes: u64,
}

impl PruneReport {
    /// Bytes freed: deleted minus written by repacking, and segments deleted.
    pub fn freed_bytes(&self) -> i64 {
        self.bytes_before as i64 - self.bytes_after as i64
            + if self.dry_run {
                0
            } else {
                (self.segments_removed_bytes + self.pg_wal_removed_bytes) as i64
            }
    }
}

pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::usage("--max-unused must be between 0% and 100%"));
    }
    if repo.is_write_only() {
        return Err(Error::usage(
            "prune reads the backups' page lists, which a write-only key cannot",
        )
        .hint("run prune where the identity is, with --identity FILE"));
    }
    if opts.dry_run {
        return plan_and_sweep(repo, opts, None);
    }
    repo.require_writable("prune")?;
    locks::as_pruner(repo.storage(), &repo.records(), |lease| {
        plan_and_sweep(repo, opts, Some(lease))
    })
}

/// `lease`: the prune lock (None for a dry run, which changes nothing).
fn plan_and_sweep(
    repo: &Repository,
    opts: &PruneOptions,
    lease: Option<&Lease>,
) -> Result<PruneReport> {
    let check_lease = || lease.map_or(Ok(()), |l| l.check());
    let storage = repo.storage();
    let records = repo.records();
    let plans = locks::read_plans(storage, &records)?;
    let already_planned: HashSet<Hash> = locks::planned_packs(&plans);
    let started = std::time::Instant::now();
    let survey = Survey::take(repo, &already_planned, &opts.progress, opts.max_unused)?;
    tracing::info!(elapsed = ?started.elapsed(), packs = survey.packs.len(), "surveyed");
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        backups: survey.backups,
        packs_before: survey.packs.len(),
        bytes_before: survey.packs.values().map(|p| p.size).sum(),
        missing_blobs: survey.referenced.missing(),
        ..Default::default()
    };

    // Blobs a backup needs that no index file locates: the repository needs repair, and
    // which pack might still hold them is unknown. Delete nothing.
    if report.missing_blobs > 0 {
        tracing::warn!(
            "{} blobs that backups need are in no index; prune deleted nothing",
            report.missing_blobs
        );
        let all: Vec<crate::storage::ObjectInfo> = storage.list("data/")?;
        report.packs_after = all.len();
        report.bytes_after = all.iter().map(|o| o.size).sum();
        return Ok(report);
    }
    // What is unused now, and what to repack.
    let keep_unindexed = !survey.damaged_index.is_empty();
    let mut doomed: Vec<Hash> = Vec::new();
    for (id, p) in &survey.packs {
        if already_planned.contains(id) || p.live_blobs > 0 {
            continue;
        }
        if !p.indexed && keep_unindexed {
            continue; // it may hold what a damaged index file located
        }
        doomed.push(*id);
        report.unused_packs += 1;
        report.unused_bytes += p.size;
    }
    let repack = choose_repack(&survey, &already_planned, opts.max_unused);
    report.repacked_packs = repack.len();
    report.repacked_bytes = repack.iter().map(|id| survey.packs[id].size).sum();
    if opts.dry_run {
        report.pending_packs = already_planned.len();
        report.packs_after = report.packs_before - report.unused_packs - report.repacked_packs;
        report.bytes_after = report.bytes_before - report.unused_bytes - report.repacked_bytes
            + repack
                .iter()
                .map(|id| survey.packs[id].live_size())
                .sum::<u64>();
        report.unused_bytes_after = survey.unused_bytes_except(&doomed, &repack);
        prune_segments(repo, &survey.bases, &mut report, None)?;
        prune_pg_wal(repo, &mut report, None)?;
        return Ok(report);
    }
    // What the repack stored. A pack the repack produced may already have been there, from
    // an earlier prune killed after storing it and before indexing it: the survey called
    // it unused, but it now holds the only copy of what it repacked, so it must stay.
    let mut fresh: HashSet<Hash> = HashSet::new();
    let mut written = Vec::new();
    if !repack.is_empty() {
        written = repack_packs(repo, &survey, &repack, &opts.progress)?;
        tracing::info!(elapsed = ?started.elapsed(), packs = written.len(), "repacked");
        report.repack_written_bytes = written.iter().map(|p| p.size).sum();
        report.written_index_files += written.len();
        fresh.extend(written.iter().map(|p| p.id));
        doomed.extend(repack.iter().copied());
    }
    doomed.retain(|id| !fresh.contains(id));
    check_lease()?;
    if !doomed.is_empty() {
        let mut names: Vec<String> = doomed.iter().map(|h| h.to_hex()).collect();
        names.sort();
        locks::write_plan(storage, &records, names)?;
    }
    let doomed: HashSet<Hash> = doomed.into_iter().collect();
    let bases = survey.bases.clone();
    sweep(
        repo,
        opts,
        &mut report,
        Some((survey, doomed)),
        &written,
        &check_lease,
    )?;
    tracing::info!(elapsed = ?started.elapsed(), deleted = report.deleted_packs, "swept");
    if report.missing_blobs == 0 {
        prune_segments(repo, &bases, &mut report, Some(&check_lease))?;
        prune_pg_wal(repo, &mut report, Some(&check_lease))?;
    }
    compact_index(repo, &mut report)?;
    tracing::info!(elapsed = ?started.elapsed(), "index compacted");
    crate::repo::tombstones::merge(storage, &records)?;
    report.temp_files_removed = remove_temp_files(repo)?;

    let after: Vec<crate::storage::ObjectInfo> = storage.list("data/")?;
    report.packs_after = after.len();
    report.bytes_after = after.iter().map(|o| o.size).sum();
    Ok(report)
}

/// Delete the archived PostgreSQL WAL no base backup needs: per cluster, the files of
/// segments numbered below the first segment of its oldest physical base backup (a kept
/// base needs everything from its start on, to be consistent and to replay to the end of
/// its window). Timeline histories stay (tiny; recovery reads them to pick a timeline), and
/// a cluster without a base backup keeps all of its WAL (its first base may be under way).
/// Manifests are authenticated; a planted file name below the floor is junk either way.
fn prune_pg_wal(
    repo: &Repository,
    report: &mut PruneReport,
    lease: Option<&dyn Fn() -> Result<()>>,
) -> Result<()> {
    use crate::repo::pgwal::{self, WalFile};
    let storage = repo.storage();
    let systems = pgwal::systems(storage)?;
    if systems.is_empty() {
        return Ok(());
    }
    let mut floors: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for m in repo.list_backups()? {
        let Ok(p) = crate::ops::pg_physical::physical_info(&m) else {
            continue;
        };
        let size = p.wal_segment_size.max(1 << 20);
        let Some(start) = WalFile::parse(&p.start_wal).and_then(|f| f.segno(size)) else {
            continue;
        };
        let e = floors.entry(p.system_id.clone()).or_insert((start, size));
        e.0 = e.0.min(start);
    }
    let mut doomed = Vec::new();
    for id in systems {
        let Some(&(floor, size)) = floors.get(&id.to_string()) else {
            continue;
        };
        for l in pgwal::list(storage, id)? {
            if l.kind.segno(size).is_some_and(|n| n < floor) {
                doomed.push((pgwal::object_name(id, &l.file), l.size));
            }
        }
    }
    report.pg_wal_removed = doomed.len();
    report.pg_wal_removed_bytes = doomed.iter().map(|(_, s)| s).sum();
    let Some(check_lease) = lease else {
        return Ok(()); // a dry run
    };
    for (name, _) in doomed {
        crate::interrupt::check()?;
        check_lease()?;
        storage.delete(&name)?;
    }
    Ok(())
}

/// A stream without a base that shipped nothing for this long is a `replicate` that never
/// stored its first base (killed, or failing): its segments can never be applied.
pub const ORPHAN_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Delete the segments no base can use (see the module comment). `bases`: per stream with a
/// base, the lowest `next_seq` of its bases, from the survey; a base stored since only
/// starts later in its stream. `lease`: None for a dry run, which only counts.
///
/// Below a base, segments go by their numbers: a restore never reads them, and a planted
/// name there is junk. A stream without a base goes by the time of its newest commit, taken
/// from the newest segment that opens (a name alone could be planted to look old); one
/// none of whose segments opens holds nothing that can be applied.
fn prune_segments(
    repo: &Repository,
    bases: &BTreeMap<String, u64>,
    report: &mut PruneReport,
    lease: Option<&dyn Fn() -> Result<()>>,
) -> Result<()> {
    use crate::repo::segment::{self, SegmentName};
    let storage = repo.storage();
    let (all, _) = segment::list(storage)?;
    if all.is_empty() {
        return Ok(());
    }
    let mut by_stream: BTreeMap<&str, Vec<&SegmentName>> = BTreeMap::new();
    for s in &all {
        by_stream.entry(&s.stream).or_default().push(s);
    }
    // A running backup may be the first base of a stream that has none yet.
    let base_running = locks::live_markers(storage, &repo.records())?
        .iter()
        .any(|(name, m)| name != locks::PRUNE_LOCK && m.kind == "backup");
    let young = jiff::Timestamp::now().as_millisecond() - ORPHAN_AFTER.as_millis() as i64;
    let mut below: BTreeMap<String, u64> = BTreeMap::new();
    let mut doomed: Vec<&SegmentName> = Vec::new();
    for (stream, segs) in by_stream {
        let floor = match bases.get(stream) {
            Some(&floor) => floor,
            None if base_running => {
                report.segments_waiting += segs.len();
                continue;
            }
            None => {
                let s = crate::wal::streams::Stream {
                    id: stream.to_string(),
                    path: String::new(),
                    host: String::new(),
                    bases: Vec::new(),
                    segments: segs.iter().map(|s| (*s).clone()).collect(),
                    covered: Vec::new(),
                };
                if s.newest_authentic(repo)?
                    .is_some_and(|n| n.last_ms >= young)
                {
                    continue; // shipping now: its first base may still come
                }
                report.orphan_streams.push(stream.to_string());
                segs.iter().map(|s| s.last_seq + 1).max().unwrap_or(0)
            }
        };
        // A compacted segment that reaches the floor holds commits above it: kept.
        let gone: Vec<&SegmentName> = segs.into_iter().filter(|s| s.last_seq < floor).collect();
        if !gone.is_empty() {
            below.insert(stream.to_string(), floor);
            doomed.extend(gone);
        }
    }
    report.segments_removed = doomed.len();
    report.segments_removed_bytes = doomed.iter().map(|s| s.size).sum();
    let Some(check_lease) = lease else {
        return Ok(()); // a dry run
    };
    if doomed.is_empty() {
        return Ok(());
    }
    crate::interrupt::check()?;
    check_lease()?;
    // Recorded first, so that a sync does not copy them back; deleted newest first.
    crate::repo::tombstones::record_segments_dropped(storage, &repo.records(), &below)?;
    for s in doomed.iter().rev() {
        storage.delete(&s.object())?;
    }
    Ok(())
}

/// Delete what every eligible plan names and no backup needs. `prior` is this run's survey
/// and the packs it planned: when no backup has been committed since, it still holds.
fn sweep(
    repo: &Repository,
    opts: &PruneOptions,
    report: &mut PruneReport,
    prior: Option<(Survey, HashSet<Hash>)>,
    written: &[IndexedPack],
    check_lease: &dyn Fn() -> Result<()>,
) -> Result<()> {
    let storage = repo.storage();
    let records = repo.records();
    let fresh: HashSet<Hash> = written.iter().map(|p| p.id).collect();
    let plans = locks::read_plans(storage, &records)?;
    if plans.is_empty() {
        return Ok(());
    }
    let markers = locks::live_markers(storage, &records)?;
    let (eligible, waiting): (Vec<Plan>, Vec<Plan>) = plans.into_iter().partition(|plan| {
        markers.iter().all(|(name, m)| {
            name == locks::PRUNE_LOCK
                || !locks::touches_packs(m)
                || m.seen_plans
                    .as_ref()
                    .is_some_and(|seen| seen.contains(&plan.id))
        })
    });
    if !waiting.is_empty() {
        report.waiting_for = markers
            .iter()
            .filter(|(name, _)| name != locks::PRUNE_LOCK)
            .map(|(_, m)| m.describe())
            .collect();
    }
    if eligible.is_empty() {
        let pending = locks::planned_packs(&waiting);
        report.pending_packs = pending.len();
        if let Some((survey, _)) = &prior {
            report.pending_bytes = pending
                .iter()
                .filter_map(|id| survey.packs.get(id).map(|p| p.size))
                .sum();
        }
        return Ok(());
    }
    let planned = locks::planned_packs(&eligible);
    // A backup committed since this run's survey may need planned packs: then survey again,
    // preferring copies outside the plans. Otherwise the survey stands: this run's planned
    // packs hold no needed blob that is not also elsewhere (unused, or copied by the
    // repack), and older plans' packs were claimed last in it.
    let now: HashSet<String> = storage
        .list("backups/")?
        .into_iter()
        .map(|o| o.name.rsplit('/').next().unwrap_or_default().to_string())
        .filter(|id| crate::id::is_backup_id(id))
        .collect();
    let (survey, doomed_now) = match prior {
        Some((survey, doomed)) if now.is_subset(&survey.manifests) => (survey, doomed),
        other => {
            drop(other);
            // Copies in any plan are claimed last, as readers read them last.
            let all_planned: HashSet<Hash> = planned
                .union(&locks::planned_packs(&waiting))
                .copied()
                .collect();
            (
                Survey::take(repo, &all_planned, &opts.progress, opts.max_unused)?,
                HashSet::new(),
            )
        }
    };
    report.missing_blobs = survey.referenced.missing();
    if report.missing_blobs > 0 {
        return Ok(()); // see plan_and_sweep: nothing is deleted from a damaged repository
    }
    let keep_unindexed = !survey.damaged_index.is_empty();
    let mut delete: HashSet<Hash> = planned
        .iter()
        .filter(|id| !fresh.contains(id))
        .filter(|id| match survey.packs.get(id) {
            Some(_) if doomed_now.contains(id) => true,
            Some(p) => p.live_blobs == 0 && (p.indexed || !keep_unindexed),
            None => false, // already gone
        })
        .copied()
        .collect();
    let waiting_packs = locks::planned_packs(&waiting);
    report.pending_packs = waiting_packs.difference(&delete).count();
    report.pending_bytes = waiting_packs
        .iter()
        .filter(|id| !delete.contains(id))
        .filter_map(|id| survey.packs.get(id).map(|p| p.size))
        .sum();

    // Never on trust: every needed blob a doomed pack holds must have a copy elsewhere that
    // has been read and checked. Packs without one stay (an index file pointing at a junk
    // copy, planted or damaged, must not make prune delete the genuine one).
    let keep = unverified_copies(repo, &survey, &delete, written)?;
    if !keep.is_empty() {
        delete.retain(|p| !keep.contains(p));
        report.kept_unverified = keep.iter().map(pack_object_name).collect();
        report.kept_unverified.sort();
    }
    // The last point to stop on a signal: once deleting starts, it finishes (seconds).
    crate::interrupt::check()?;
    // Still the only prune, and not taken for dead while surveying?
    check_lease()?;
    // Index entries first, then packs: a crash in between leaves unindexed packs (garbage
    // the next prune finds), never an index naming a pack that is gone.
    for file in &survey.index_files {
        if !file.packs.iter().any(|p| delete.contains(p)) {
            continue;
        }
        let remaining: Vec<IndexedPack> = if file.packs.iter().all(|p| delete.contains(p)) {
            Vec::new()
        } else {
            repo.read_index_file(&file.name, &file.id)?
                .into_iter()
                .filter(|p| !delete.contains(&p.id))
                .collect()
        };
        if !remaining.is_empty() {
            let data = repo.seal(ObjectKind::Index, b"", encode_index_file(&remaining)?)?;
            let name = index_object_name(&Hash::of(&data));
            crate::storage::put_new_or_same(storage, &name, &data)?;
            report.written_index_files += 1;
        }
        storage.delete(&file.name)?;
        report.deleted_index_files += 1;
    }
    let mut dropped: Vec<String> = delete.iter().map(|h| h.to_hex()).collect();
    dropped.sort();
    crate::repo::tombstones::record_dropped(storage, &records, &dropped)?;
    for id in &delete {
        storage.delete(&pack_object_name(id))?;
        report.deleted_packs += 1;
        report.deleted_bytes += survey.packs.get(id).map_or(0, |p| p.size);
    }
    for plan in &eligible {
        storage.delete(&locks::plan_object(&plan.id))?;
    }
    Ok(())
}

/// The packs of `delete` that must stay: those holding a blob some backup needs of which no
/// copy outside `delete` has been read and found intact (copies in packs this run wrote and
/// checked count as read).
fn unverified_copies(
    repo: &Repository,
    survey: &Survey,
    delete: &HashSet<Hash>,
    written: &[IndexedPack],
) -> Result<HashSet<Hash>> {
    // Needed blobs that doomed packs hold, and which doomed packs hold each.
    let mut needed: HashMap<Key, Vec<Hash>> = HashMap::new();
    for file in &survey.index_files {
        if !file.packs.iter().any(|p| delete.contains(p)) {
            continue;
        }
        for p in repo.read_index_file(&file.name, &file.id)? {
            if !delete.contains(&p.id) {
                continue;
            }
            for b in p.frames.iter().flat_map(|f| &f.blobs) {
                if survey.referenced.position(&b.id).is_some() {
                    needed.entry(b.id).or_default().push(p.id);
                }
            }
        }
    }
    // Packs no index file describes (leftovers of killed backups, or whose index file was
    // deleted): what they hold is known only by reading them.
    let hasher = repo.hasher();
    let mut decompressor = Decompressor::default();
    for id in delete {
        if survey.packs.get(id).is_none_or(|u| u.indexed) {
            continue;
        }
        let name = pack_object_name(id);
        let data = repo.storage().get(&name)?;
        if Hash::of(&data) != *id {
            continue; // damaged: nothing in it can be relied on, and nothing is lost with it
        }
        let open_dir = |d: &[u8]| repo.unseal(ObjectKind::PackDirectory, b"", d.to_vec(), &name);
        let Ok(frames) = crate::repo::pack::read_directory(&data, &name, open_dir) else {
            continue;
        };
        for f in frames {
            let stored = data
                .get(f.offset as usize..(f.offset + u64::from(f.stored_len)) as usize)
                .unwrap_or_default();
            let raw = repo
                .unseal(ObjectKind::Frame, b"", stored.to_vec(), &name)
                .and_then(|plain| decompressor.decompress(f.codec, &plain, f.raw_len as usize));
            let Ok(raw) = raw else { continue };
            for b in &f.blobs {
                let Some(blob) = raw.get(b.offset as usize..(b.offset + b.len) as usize) else {
                    continue;
                };
                for blob_id in hasher.all_ids(blob) {
                    if survey.referenced.position(&blob_id.key()).is_some() {
                        needed.entry(blob_id.key()).or_default().push(*id);
                    }
                }
            }
        }
    }
    for b in written
        .iter()
        .flat_map(|p| &p.frames)
        .flat_map(|f| &f.blobs)
    {
        needed.remove(&b.id);
    }
    if needed.is_empty() {
        return Ok(HashSet::new());
    }
    // The other copies the index files name, frame by frame, read and checked.
    let mut candidates: Vec<(Hash, FrameEntry)> = Vec::new();
    for file in &survey.index_files {
        let decoded = match repo.read_index_file(&file.name, &file.id) {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for p in decoded {
            let present = survey.packs.get(&p.id).is_some_and(|u| u.size == p.size);
            if delete.contains(&p.id) || !present {
                continue;
            }
            for f in p.frames {
                if f.blobs.iter().any(|b| needed.contains_key(&b.id)) {
                    candidates.push((p.id, f));
                }
            }
        }
    }
    candidates.sort_by_key(|(p, f)| (*p, f.offset));
    for (pack, f) in candidates {
        if !f.blobs.iter().any(|b| needed.contains_key(&b.id)) {
            continue; // checked through another copy meanwhile
        }
        let name = pack_object_name(&pack);
        let raw = repo
            .storage()
            .get_range(&name, f.offset, f.stored_len as usize)
            .and_then(|stored| repo.unseal(ObjectKind::Frame, b"", stored, &name))
            .and_then(|plain| decompressor.decompress(f.codec, &plain, f.raw_len as usize));
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("a copy in {name} cannot be read: {e}");
                continue;
            }
        };
        for b in &f.blobs {
            let intact = raw
                .get(b.offset as usize..(b.offset + b.len) as usize)
                .is_some_and(|blob| hasher.matches_key(blob, &b.id));
            if intact {
                needed.remove(&b.id);
            } else if needed.contains_key(&b.id) {
                tracing::warn!(
                    "{name} does not hold blob {} where an index file says it does",
                    b.id.short()
                );
            }
        }
    }
    let keep: HashSet<Hash> = needed.into_values().flatten().collect();
    for p in &keep {
        tracing::warn!(
            "prune kept {}: it holds blobs backups need that no other copy holds intact",
            pack_object_name(p)
        );
    }
    Ok(keep)
}

/// Staging files untouched for this long belong to no running command: a pack being written
/// is touched continuously, and a lock marker lives there for the milliseconds it takes to
/// store it.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Remove the staging files of killed runs (`tmp/` of a local repository), but only when no
/// writer is running (a running backup's pack is staged there until it is stored) and only
/// those not written for `LEFTOVER_AGE`: a writer starting now stages its lock marker there
/// before the marker can be seen.
fn remove_temp_files(repo: &Repository) -> Result<usize> {
    let storage = repo.storage();
    let writers = locks::live_markers(storage, &repo.records())?;
    if writers
        .iter()
        .any(|(name, m)| name != locks::PRUNE_LOCK && locks::touches_packs(m))
    {
        return Ok(0);
    }
    storage.remove_staged_leftovers(LEFTOVER_AGE)
}

/// A repack reads neighbouring frames of a pack with one request up to this span.
const FETCH_SPAN: u64 = 8 << 20;

/// Index files with fewer packs than this are merged when there are `COMPACT_WHEN` of them.
const SMALL_INDEX_PACKS: usize = 32;
const COMPACT_WHEN: usize = 16;
/// Packs per merged index file: bounds the memory of merging (~0.5 MiB decoded per pack).
const MERGED_INDEX_PACKS: usize = 64;

/// Merge the many one-pack index files that backups write into files of up to
/// `MERGED_INDEX_PACKS` packs: opening a repository on an object store costs a request per
/// index file. The merged file is stored before the small ones are deleted, so a reader that
/// finds one gone re-lists and reads the merged one (`Repository::load_index`).
fn compact_index(repo: &Repository, report: &mut PruneReport) -> Result<()> {
    let storage = repo.storage();
    // A running backup reads its own index files back before committing: leave them be.
    let writers = locks::live_markers(storage, &repo.records())?;
    if writers
        .iter()
        .any(|(name, m)| name != locks::PRUNE_LOCK && locks::touches_packs(m))
    {
        return Ok(());
    }
    let mut small = Vec::new();
    for (name, id) in list_index_files(storage)? {
        let packs = match repo.read_index_file(&name, &id) {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(_) => continue, // damaged: left for `repo check` to name
        };
        if packs.len() < SMALL_INDEX_PACKS {
            small.push((name, id, packs.len()));
        }
    }
    if small.len() < COMPACT_WHEN {
        return Ok(());
    }
    // Listed after the index files: a pack an index file names was stored before that file,
    // so one missing from this later listing is really gone.
    let present = list_packs(storage)?;
    let mut group: Vec<IndexedPack> = Vec::new();
    let mut merged_names: Vec<String> = Vec::new();
    let mut seen: HashSet<Hash> = HashSet::new();
    let flush = |group: &mut Vec<IndexedPack>,
                 merged_names: &mut Vec<String>,
                 report: &mut PruneReport|
     -> Result<()> {
        // A group of one file is that file: nothing to merge (and in an unencrypted
        // repository, where index files are deterministic, the "merged" file would be that
        // very file, deleted below).
        if merged_names.len() < 2 {
            merged_names.clear();
            group.clear();
            return Ok(());
        }
        let data = repo.seal(ObjectKind::Index, b"", encode_index_file(group)?)?;
        let name = index_object_name(&Hash::of(&data));
        crate::storage::put_new_or_same(storage, &name, &data)?;
        if Hash::of(&storage.get(&name)?) != Hash::of(&data) {
            return Err(Error::integrity(format!(
                "{name} did not read back intact; prune stopped before deleting anything"
            )));
        }
        report.written_index_files += 1;
        group.clear();
        for old in merged_names.drain(..) {
            if old != name {
                storage.delete(&old)?;
                report.compacted_index_files += 1;
            }
        }
        Ok(())
    };
    for (name, id, _) in small {
        let packs = match repo.read_index_file(&name, &id) {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for p in packs {
            // Entries of packs that are gone (or truncated) and repeated descriptions are
            // dropped; a pack described differently keeps every description (which one is
            // right is decided by reading blobs, never here).
            let digest = crate::repo::index::description_digest(&p);
            if present.get(&p.id) == Some(&p.size) && seen.insert(digest) {
                group.push(p);
            }
        }
        merged_names.push(name);
        if group.len() >= MERGED_INDEX_PACKS {
            flush(&mut group, &mut merged_names, report)?;
        }
    }
    flush(&mut group, &mut merged_names, report)
}

/// The blobs backups reference, as sorted 16-byte keys, and which have been found a home.
struct Referenced {
    keys: Vec<Key>,
    claimed: Vec<u64>,
}

impl Referenced {
    fn build(mut keys: Vec<Key>) -> Referenced {
        keys.sort_unstable();
        keys.dedup();
        let words = keys.len().div_ceil(64);
        Referenced {
            keys,
            claimed: vec![0; words],
        }
    }

    /// Claim `key` for this copy: true if it is needed and no earlier copy claimed it.
    fn claim(&mut self, key: &Key) -> bool {
        let Ok(i) = self.keys.binary_search(key) else {
            return false;
        };
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.claimed[word] & bit != 0 {
            return false;
        }
        self.claimed[word] |= bit;
        true
    }

    fn position(&self, key: &Key) -> Option<usize> {
        self.keys.binary_search(key).ok()
    }

    fn missing(&self) -> u64 {
        let claimed: u64 = self.claimed.iter().map(|w| u64::from(w.count_ones())).sum();
        self.keys.len() as u64 - claimed
    }
}

/// How much of one pack is needed.
#[derive(Debug, Default, Clone)]
struct PackUse {
    size: u64,
    indexed: bool,
    live_blobs: u64,
    live_raw: u64,
    dead_raw: u64,
    /// Raw bytes a repack would free: frames wholly unused, and frames whose unused share
    /// exceeds the tolerance (the others are copied as they are, garbage and all).
    reclaim_raw: u64,
    /// The index files that describe it (for repacking): usually one; more when a pack is
    /// described differently (a wrong description must not hide the blobs of the right one).
    index_files: Vec<usize>,
    /// Digests of the descriptions counted, so a repeated one counts once.
    descriptions: Vec<Hash>,
}

impl PackUse {
    /// Stored bytes attributable to live blobs (pro rata by raw size).
    fn live_size(&self) -> u64 {
        let raw = self.live_raw + self.dead_raw;
        if raw == 0 {
            return 0;
        }
        (self.size as u128 * self.live_raw as u128 / raw as u128) as u64
    }
}

struct IndexFile {
    id: Hash,
    name: String,
    packs: Vec<Hash>,
}

struct Survey {
    backups: usize,
    /// The unused share tolerated inside a frame (`--max-unused`).
    max_unused: f64,
    /// Ids of the backups surveyed.
    manifests: HashSet<String>,
    /// Per stream of continuous replication with a base: the lowest `next_seq` of its bases.
    bases: BTreeMap<String, u64>,
    packs: HashMap<Hash, PackUse>,
    index_files: Vec<IndexFile>,
    damaged_index: Vec<String>,
    referenced: Referenced,
}

impl Survey {
    /// Look at every pack, index file and backup. Copies in `planned` packs are claimed
    /// last, so a blob that also lives elsewhere is counted there.
    fn take(
        repo: &Repository,
        planned: &HashSet<Hash>,
        progress: &Progress,
        max_unused: f64,
    ) -> Result<Survey> {
        let storage = repo.storage();
        let mut packs: HashMap<Hash, PackUse> = list_packs(storage)?
            .into_iter()
            .map(|(id, size)| {
                let usage = PackUse {
                    size,
                    ..Default::default()
                };
                (id, usage)
            })
            .collect();
        // Pass 1: where the page lists are (they are few), and what each index file holds.
        let mut lists = Index::default();
        let mut index_files = Vec::new();
        let mut damaged_index = Vec::new();
        for (name, id) in list_index_files(storage)? {
            let file = match repo.read_index_file(&name, &id) {
                Ok(f) => f,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!("index file {name} is damaged: {e}");
                    damaged_index.push(name);
                    continue;
                }
            };
            for p in &file {
                if packs.get(&p.id).is_some_and(|u| u.size == p.size) {
                    lists.add_pack(&only_lists(p));
                }
            }
            index_files.push(IndexFile {
                id,
                name,
                packs: file.iter().map(|p| p.id).collect(),
            });
        }
        let (manifests, bases, referenced) = referenced_blobs(repo, &lists, progress)?;
        let backups = manifests.len();
        drop(lists);
        let mut referenced = referenced;

        // Pass 2: claim each needed blob at its first copy, planned packs last.
        let (first, last): (Vec<usize>, Vec<usize>) = (0..index_files.len())
            .partition(|&i| !index_files[i].packs.iter().any(|p| planned.contains(p)));
        for i in first.into_iter().chain(last) {
            let file = &index_files[i];
            let decoded = match repo.read_index_file(&file.name, &file.id) {
                Ok(d) => d,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for p in &decoded {
                let Some(usage) = packs.get_mut(&p.id) else {
                    continue; // the pack is gone: its entries help no one
                };
                if usage.size != p.size {
                    continue; // truncated copy
                }
                let digest = crate::repo::index::description_digest(p);
                if usage.descriptions.contains(&digest) {
                    continue; // already counted through another file
                }
                usage.descriptions.push(digest);
                usage.indexed = true;
                if !usage.index_files.contains(&i) {
                    usage.index_files.push(i);
                }
                for f in &p.frames {
                    let (mut live, mut dead) = (0u64, 0u64);
                    for b in &f.blobs {
                        if referenced.claim(&b.id) {
                            usage.live_blobs += 1;
                            live += u64::from(b.len);
                        } else {
                            dead += u64::from(b.len);
                        }
                    }
                    usage.live_raw += live;
                    usage.dead_raw += dead;
                    if live == 0 || rewrites(live, dead, max_unused) {
                        usage.reclaim_raw += dead;
                    }
                }
            }
        }
        Ok(Survey {
            backups,
            max_unused,
            manifests,
            bases,
            packs,
            index_files,
            damaged_index,
            referenced,
        })
    }

    fn unused_bytes_except(&self, gone: &[Hash], repacked: &[Hash]) -> u64 {
        self.packs
            .iter()
            .filter(|(id, _)| !gone.contains(id) && !repacked.contains(id))
            .map(|(_, p)| p.size - p.live_size().min(p.size))
            .sum()
    }
}

/// The same pack with only its list blobs (frame offsets stay valid).
fn only_lists(p: &IndexedPack) -> IndexedPack {
    IndexedPack {
        id: p.id,
        size: p.size,
        frames: p
            .frames
            .iter()
            .map(|f| FrameEntry {
                blobs: f
                    .blobs
                    .iter()
                    .filter(|b| b.kind == BlobKind::List)
                    .cloned()
                    .collect(),
                ..f.clone()
            })
            .collect(),
    }
}

/// Every blob (pages and page lists) some backup needs. Each distinct list is read once;
/// keys are merged into a sorted set in batches so memory stays near the final set's size.
fn referenced_blobs(
    repo: &Repository,
    lists: &Index,
    progress: &Progress,
) -> Result<(HashSet<String>, BTreeMap<String, u64>, Referenced)> {
    const BATCH: usize = 1 << 22;
    let backups = repo.list_backups()?;
    // A manifest that `forget` removed and someone copied back, whose data a prune already
    // deleted: none of its page lists is left. It must not stop every later prune (its
    // pages are unknown either way); any other unreadable list still stops this one.
    let forgotten = crate::repo::tombstones::read(repo.storage(), &repo.records())?.backups;
    let gone = |m: &crate::repo::manifest::Manifest| {
        forgotten.contains(&m.id)
            && m.content
                .roots()
                .iter()
                .all(|hex| Hash::from_hex(hex).is_ok_and(|id| lists.get(&id).is_none()))
    };
    let mut seen_lists: HashSet<Hash> = HashSet::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut pending: Vec<Key> = Vec::new();
    let mut cache = FrameCache::default();
    let mut bases: BTreeMap<String, u64> = BTreeMap::new();
    progress.start("survey", backups.len() as u64);
    for m in &backups {
        if gone(m) {
            tracing::warn!(
                "backup {} was forgotten and its data pruned, but its manifest is back (copied back from an old copy?); prune ignores it: delete backups/{}",
                m.id,
                m.id
            );
            continue;
        }
        // What a backup of another kind references is unknown to this version: deleting
        // anything could break it.
        reach::known_kind(m).map_err(|e| Error {
            message: format!("{}; prune changed nothing", e.message),
            ..e
        })?;
        reach::walk(repo, lists, m, &mut cache, &mut |r| {
            match r {
                Reached::BadId(hex) => {
                    return Err(Error::integrity(format!(
                        "backup {} names a bad list id {hex}",
                        m.id
                    )))
                }
                Reached::List(id) => {
                    if !seen_lists.insert(id) {
                        return Ok(Next::Skip);
                    }
                    pending.push(id.key());
                }
                // A list that cannot be read hides which pages its backup needs: deleting
                // anything could take the last copy of one. Stop before anything is deleted
                // (the backup may be repairable from a replica).
                Reached::Unreadable(_, e) => {
                    return Err(Error::new(
                        e.kind,
                        format!(
                            "cannot read a page list of backup {}: {}; prune deleted nothing",
                            m.id, e.message
                        ),
                    )
                    .hint("run `lifeboat repo check`; repair the repository (or forget that backup) before pruning"))
                }
                Reached::Blob(id) => pending.push(id.key()),
            }
            if pending.len() >= BATCH {
                merge_sorted(&mut keys, &mut pending);
            }
            Ok(Next::Descend)
        })?;
        if let Some(w) = &m.wal {
            let lowest = bases.entry(w.stream.clone()).or_insert(w.next_seq);
            *lowest = (*lowest).min(w.next_seq);
        }
        progress.inc(1);
    }
    merge_sorted(&mut keys, &mut pending);
    progress.finish();
    let ids = backups.into_iter().map(|m| m.id).collect();
    Ok((ids, bases, Referenced::build(keys)))
}

/// Merge `pending` into the sorted set `keys`. In place (extend, sort, dedup) rather than
/// into a new vector: a large vector grows by remapping its pages, so the peak stays near
/// the final size instead of twice it.
fn merge_sorted(keys: &mut Vec<Key>, pending: &mut Vec<Key>) {
    if pending.is_empty() {
        return;
    }
    keys.reserve_exact(pending.len());
    keys.append(pending);
    keys.sort_unstable();
    keys.dedup();
    pending.shrink_to(1 << 20);
}

/// Whether a repack rewrites a frame with `live` and `dead` raw bytes, rather than copying
/// it as stored: when its unused share is above the tolerance. Copying is ~10x cheaper than
/// decompressing and recompressing, and a frame of a backup a few pages changed since is
/// mostly live.
fn rewrites(live: u64, dead: u64, max_unused: f64) -> bool {
    dead > 0 && dead as f64 > max_unused * (live + dead) as f64
}

/// The partly used packs to rewrite: most wasteful first, until what stays unused is at
/// most `max_unused` of the pack bytes that remain.
fn choose_repack(survey: &Survey, planned: &HashSet<Hash>, max_unused: f64) -> Vec<Hash> {
    let mut partial: Vec<(&Hash, &PackUse)> = survey
        .packs
        .iter()
        .filter(|(id, p)| {
            p.indexed && p.live_blobs > 0 && p.reclaim_raw > 0 && !planned.contains(id)
        })
        .collect();
    let gain = |p: &PackUse| p.reclaim_raw as f64 / (p.live_raw + p.dead_raw) as f64;
    partial.sort_by(|a, b| gain(b.1).total_cmp(&gain(a.1)).then_with(|| a.0.cmp(b.0)));
    let kept: Vec<&PackUse> = survey
        .packs
        .iter()
        .filter(|(id, p)| p.live_blobs > 0 && !planned.contains(id))
        .map(|(_, p)| p)
        .collect();
    let mut total: u64 = kept.iter().map(|p| p.size).sum();
    let mut unused: u64 = kept
        .iter()
        .map(|p| p.size - p.live_size().min(p.size))
        .sum();
    let mut chosen = Vec::new();
    for (id, p) in partial {
        if unused as f64 <= max_unused * total as f64 {
            break;
        }
        let freed = ((p.size as f64 * gain(p)) as u64).min(unused);
        unused -= freed;
        total -= freed;
        chosen.push(*id);
    }
    chosen
}

/// A frame ready for a pack: stored bytes and its entry (offset filled in by the writer).
struct ReadyFrame {
    stored: Vec<u8>,
    raw_len: u32,
    codec: Codec,
    blobs: Vec<BlobEntry>,
}

/// Copy the needed blobs of `repack` into new packs (with their index files), checked by
/// reading them back. Whole frames whose every blob is needed are copied as stored; the
/// others are decompressed and their needed blobs recompressed together. One worker per
/// core reads, checks and recompresses packs; one writer appends frames to new packs.
fn repack_packs(
    repo: &Repository,
    survey: &Survey,
    repack: &[Hash],
    progress: &Progress,
) -> Result<Vec<IndexedPack>> {
    let storage = repo.storage();
    let staging = storage.staging_dir()?;
    let wanted: HashSet<&Hash> = repack.iter().collect();
    let mut by_file: Vec<usize> = repack
        .iter()
        .flat_map(|id| survey.packs[id].index_files.iter().copied())
        .collect();
    by_file.sort_unstable();
    by_file.dedup();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let compression = Compression::new(Codec::Zstd, None)?;
    // One bit per referenced blob (a blob is copied once), not a set of keys: bounded by
    // what the backups reference, whatever the share of the repository repacked.
    let copied: Mutex<Vec<u64>> = Mutex::new(vec![0; survey.referenced.keys.len().div_ceil(64)]);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let fail = |e: Error| {
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };
    let failed = || first_error.lock().map(|e| e.is_some()).unwrap_or(true);
    progress.start(
        "repack",
        repack.iter().map(|id| survey.packs[id].size).sum(),
    );
    let written = std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<IndexedPack>(workers);
        let (frame_tx, frame_rx) = bounded::<ReadyFrame>(workers * 4);
        for _ in 0..workers {
            let (job_rx, frame_tx) = (job_rx.clone(), frame_tx.clone());
            let (copied, fail, failed) = (&copied, &fail, &failed);
            s.spawn(move || {
                let mut worker = RepackWorker::new(repo, survey, copied, frame_tx, compression);
                for p in job_rx {
                    if failed() {
                        return;
                    }
                    let size = p.size;
                    if let Err(e) = worker.repack(p) {
                        fail(e);
                        return;
                    }
                    progress.inc(size);
                }
                if let Err(e) = worker.flush() {
                    fail(e);
                }
            });
        }
        drop((job_rx, frame_tx));
        let writer = s.spawn(|| write_frames(repo, &staging, frame_rx));
        // Feed the workers pack by pack, from the index files that describe them.
        let fed = (|| -> Result<()> {
            for i in by_file {
                let file = &survey.index_files[i];
                for p in repo.read_index_file(&file.name, &file.id)? {
                    if wanted.contains(&p.id) && job_tx.send(p).is_err() {
                        return Ok(()); // the workers stopped on an error, reported below
                    }
                }
            }
            Ok(())
        })();
        drop(job_tx);
        if let Err(e) = fed {
            fail(e);
        }
        writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("repack writer panicked")))
    });
    progress.finish();
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let written = written?;
    let index_files: Vec<Hash> = written.iter().map(|(_, f)| *f).collect();
    let packs: Vec<IndexedPack> = written.into_iter().map(|(p, _)| p).collect();
    check_written(repo, &packs, &index_files)?;
    Ok(packs)
}

/// One repack worker: takes packs, sends frames of their needed blobs to the writer.
struct RepackWorker<'a> {
    repo: &'a Repository,
    survey: &'a Survey,
    /// Blobs already copied by any worker, a bit per referenced blob.
    copied: &'a Mutex<Vec<u64>>,
    out: Sender<ReadyFrame>,
    /// The raw frame being filled: bytes and entries.
    frame: (Vec<u8>, Vec<BlobEntry>),
    compressor: Compressor,
    decompressor: Decompressor,
    max_unused: f64,
}

impl<'a> RepackWorker<'a> {
    fn new(
        repo: &'a Repository,
        survey: &'a Survey,
        copied: &'a Mutex<Vec<u64>>,
        out: Sender<ReadyFrame>,
        compression: Compression,
    ) -> RepackWorker<'a> {
        RepackWorker {
            repo,
            survey,
            copied,
            out,
            frame: (Vec::new(), Vec::new()),
            compressor: Compressor::new(compression),
            decompressor: Decompressor::default(),
            max_unused: survey.max_unused,
        }
    }

    fn send(&self, f: ReadyFrame) -> Result<()> {
        self.out
            .send(f)
            .map_err(|_| Error::internal("repack writer stopped"))
    }

    /// Claim the blobs of a frame that are needed and not copied yet.
    fn claim(&self, blobs: &[BlobEntry]) -> Vec<bool> {
        let mut copied = self.copied.lock().unwrap_or_else(|p| p.into_inner());
        blobs
            .iter()
            .map(|b| match self.survey.referenced.position(&b.id) {
                Some(i) => {
                    let (word, bit) = (i / 64, 1u64 << (i % 64));
                    let first = copied[word] & bit == 0;
                    copied[word] |= bit;
                    first
                }
                None => false,
            })
            .collect()
    }

    fn repack(&mut self, p: IndexedPack) -> Result<()> {
        // Stopping between packs is as safe as failing there: nothing is deleted yet.
        crate::interrupt::check()?;
        let name = pack_object_name(&p.id);
        let needed: Vec<Vec<bool>> = p.frames.iter().map(|f| self.claim(&f.blobs)).collect();
        let wanted: u64 = p
            .frames
            .iter()
            .zip(&needed)
            .filter(|(_, n)| n.iter().any(|&x| x))
            .map(|(f, _)| u64::from(f.stored_len))
            .sum();
        let outside = || Error::integrity(format!("{name}: a frame lies outside the pack"));
        if wanted * 2 >= p.size {
            // Most of the pack: read it whole and check it by its name (cheaper than
            // decompressing the frames copied as they are).
            let data = self.repo.storage().get(&name)?;
            if Hash::of(&data) != p.id {
                return Err(Error::integrity(format!(
                    "{name} is damaged (its content does not match its name); prune stopped before deleting anything"
                ))
                .hint("run `lifeboat repo check --read-data` to see which backups it affects"));
            }
            // A pack that matches its name is as it was written, but only an index file
            // says what its blobs are: in a write-only repository, whose backup hosts hold
            // the keys that seal index files, check every blob all the same.
            let trusted = self.repo.recipient().is_none();
            for (f, needed) in p.frames.into_iter().zip(needed) {
                let range = f.offset as usize..f.offset as usize + f.stored_len as usize;
                let stored = data.get(range).ok_or_else(outside)?;
                self.take_frame(&name, f, &needed, stored, trusted)?;
            }
            return Ok(());
        }
        // A small part (typically the page lists of forgotten backups are the rest): read
        // only the frames that hold needed blobs, neighbours in one request, and check
        // each blob against its id instead of the pack against its name.
        let mut frames: Vec<(FrameEntry, Vec<bool>)> = p
            .frames
            .into_iter()
            .zip(needed)
            .filter(|(_, n)| n.iter().any(|&x| x))
            .collect();
        frames.sort_by_key(|(f, _)| f.offset);
        let mut i = 0;
        while i < frames.len() {
            let start = frames[i].0.offset;
            let mut end = start + u64::from(frames[i].0.stored_len);
            let mut j = i + 1;
            while j < frames.len() && frames[j].0.offset == end && end - start < FETCH_SPAN {
                end += u64::from(frames[j].0.stored_len);
                j += 1;
            }
            let data = self
                .repo
                .storage()
                .get_range(&name, start, (end - start) as usize)?;
            for (f, needed) in frames[i..j].iter() {
                let from = (f.offset - start) as usize;
                let stored = data
                    .get(from..from + f.stored_len as usize)
                    .ok_or_else(outside)?;
                self.take_frame(&name, f.clone(), needed, stored, false)?;
            }
            i = j;
        }
        Ok(())
    }

    /// Pass on the needed blobs of one frame: the whole frame as stored when all are needed,
    /// else those blobs into the frame being filled. `checked`: the bytes are known intact
    /// (their pack matched its name); otherwise each blob is checked against its id.
    fn take_frame(
        &mut self,
        name: &str,
        f: FrameEntry,
        needed: &[bool],
        stored: &[u8],
        checked: bool,
    ) -> Result<()> {
        let live: u64 = f
            .blobs
            .iter()
            .zip(needed)
            .filter(|(_, n)| **n)
            .map(|(b, _)| u64::from(b.len))
            .sum();
        // All needed, or so nearly that rewriting it is not worth it: copied as stored.
        let all = live > 0 && !rewrites(live, u64::from(f.raw_len) - live, self.max_unused);
        if all && checked {
            return self.send(ReadyFrame {
                stored: stored.to_vec(),
                raw_len: f.raw_len,
                codec: f.codec,
                blobs: f.blobs,
            });
        }
        if !needed.iter().any(|&n| n) {
            return Ok(());
        }
        let plain = self
            .repo
            .unseal(ObjectKind::Frame, b"", stored.to_vec(), name)?;
        let raw = self
            .decompressor
            .decompress(f.codec, &plain, f.raw_len as usize)?;
        let hasher = self.repo.hasher();
        // A frame copied as stored brings its unused blobs along, indexed: check them too.
        for (b, _) in f.blobs.iter().zip(needed).filter(|(_, n)| **n || all) {
            let blob = raw
                .get(b.offset as usize..(b.offset + b.len) as usize)
                .filter(|blob| checked || hasher.matches_key(blob, &b.id))
                .ok_or_else(|| {
                    Error::integrity(format!(
                        "{name} is damaged (a blob fails its check); prune stopped before deleting anything"
                    ))
                    .hint("run `lifeboat repo check --read-data` to see which backups it affects")
                })?;
            if !all {
                self.frame.1.push(BlobEntry {
                    offset: self.frame.0.len() as u32,
                    ..b.clone()
                });
                self.frame.0.extend_from_slice(blob);
                if self.frame.0.len() >= FRAME_BYTES {
                    self.flush()?;
                }
            }
        }
        if all {
            // Every blob checked: the frame goes on as stored.
            self.send(ReadyFrame {
                stored: stored.to_vec(),
                raw_len: f.raw_len,
                codec: f.codec,
                blobs: f.blobs,
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.frame.1.is_empty() {
            return Ok(());
        }
        let (raw, blobs) = std::mem::take(&mut self.frame);
        let compressed = self.compressor.compress(&raw)?;
        let stored = self.repo.seal(ObjectKind::Frame, b"", compressed)?;
        self.send(ReadyFrame {
            stored,
            raw_len: raw.len() as u32,
            codec: Codec::Zstd,
            blobs,
        })
    }
}

/// Append frames to new packs; store each (with its index file) once full.
fn write_frames(
    repo: &Repository,
    staging: &std::path::Path,
    frames: Receiver<ReadyFrame>,
) -> Result<Vec<(IndexedPack, Hash)>> {
    let mut written = Vec::new();
    let mut writer: Option<PackWriter> = None;
    let result = (|| -> Result<()> {
        for f in frames {
            if writer.is_none() {
                writer = Some(PackWriter::create(staging)?);
            }
            if let Some(w) = writer.as_mut() {
                w.add_frame(&f.stored, f.raw_len, f.codec, f.blobs)?;
                if w.len() >= repo.config.pack_target() {
                    if let Some(w) = writer.take() {
                        let stored = store_pack(repo, w)?;
                        written.push((stored.pack, stored.index_file));
                    }
                }
            }
        }
        if let Some(w) = writer.take() {
            if !w.is_empty() {
                let stored = store_pack(repo, w)?;
                written.push((stored.pack, stored.index_file));
            } else {
                w.abandon();
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Some(w) = writer.take() {
            w.abandon();
        }
        return Err(e); // the workers' sends now fail, and they stop
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_mostly_live_are_copied_and_the_rest_rewritten() {
        assert!(!rewrites(95, 5, 0.05), "5% unused is within 5%");
        assert!(rewrites(90, 10, 0.05));
        assert!(rewrites(99, 1, 0.0), "0% rewrites anything with garbage");
        assert!(!rewrites(100, 0, 0.0), "nothing to gain");
    }

    #[test]
    fn merging_keeps_a_sorted_set() {
        let k = |n: u8| Key([n; 16]);
        let mut keys = vec![k(1), k(5)];
        let mut pending = vec![k(5), k(3), k(9), k(3)];
        merge_sorted(&mut keys, &mut pending);
        assert_eq!(keys, vec![k(1), k(3), k(5), k(9)]);
        let mut r = Referenced::build(keys);
        assert!(r.claim(&k(3)));
        assert!(!r.claim(&k(3)), "second copy is not needed");
        assert!(!r.claim(&k(4)), "not referenced");
        assert_eq!(r.missing(), 3);
    }
}
