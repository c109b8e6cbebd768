//! Repository health: `repo check` (is everything every backup needs present and intact,
//! and which backups does any damage affect) and `repo stats`.

use crate::error::Result;
use crate::id::Hash;
use crate::repo::crypto::ObjectKind;
use crate::repo::index::{decode_index_file, Index, IndexedPack};
use crate::repo::manifest::Manifest;
use crate::repo::pack::{pack_object_name, read_directory};
use crate::repo::reach::{self, Next, Reached};
use crate::repo::{compress, Repository};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Debug, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
    /// Backups that cannot be restored because of it.
    pub backups: BTreeSet<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct CheckReport {
    pub ok: bool,
    pub read_data: bool,
    pub backups: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub bytes_read: u64,
    /// Packs no index mentions: left by an interrupted backup, harmless, removed by prune.
    pub unreferenced_packs: usize,
    pub unreferenced_bytes: u64,
    /// Files left in `tmp/` by interrupted writers.
    pub temp_files: usize,
    /// Lock markers of processes that are gone (killed): ignored by everyone, removed by
    /// the next prune. Each: object name and who held it.
    pub stale_locks: Vec<String>,
    pub problems: Vec<Problem>,
    /// What to do about the problems, if any.
    pub hint: Option<String>,
    /// Continuous replication: streams and segments (their damage is among `problems`).
    pub wal: WalCheck,
    /// PostgreSQL's archived WAL (`pgwal/`).
    pub pg_wal: crate::ops::pg_physical::ArchiveCheck,
}

/// What `repo check` found of continuous replication (`wal/`).
#[derive(Debug, Serialize, Default)]
pub struct WalCheck {
    pub streams: Vec<StreamCheck>,
    pub segments: usize,
    pub segment_bytes: u64,
    /// Segments opened (authenticated) and their chain followed: with `--read-data`.
    pub segments_read: usize,
    /// Names under `wal/` that are not segments: junk, ignored by everyone.
    pub not_segments: Vec<String>,
    /// Streams without a base that shipped nothing for a day (`prune` removes them).
    pub orphan_streams: Vec<String>,
    /// Segments a compacted segment holds too (an interrupted compaction's leftovers; the
    /// next prune removes them).
    pub covered_segments: usize,
}

/// One stream of continuous replication, as `repo check` found it.
#[derive(Debug, Serialize, Default)]
pub struct StreamCheck {
    pub stream: String,
    /// The database and host, from its bases (none without a base).
    pub source: Option<String>,
    pub host: Option<String>,
    pub bases: usize,
    pub segments: usize,
    pub bytes: u64,
    /// Segments numbered below its oldest base's: no restore uses them; prune removes them.
    pub before_oldest_base: usize,
    /// The stretch a restore `--at` any moment of works for (RFC 3339), when there is one:
    /// from the first base after the stream's last break (retention's or damage) to its
    /// newest commit.
    pub restorable_from: Option<String>,
    pub restorable_to: Option<String>,
}

/// Check the primary alone: what replicas hold does not hide its damage (`repo repair`
/// copies it back).
pub fn check(repo: &Repository, read_data: bool) -> Result<CheckReport> {
    // The marker keeps a concurrent prune from deleting what this check is reading.
    crate::repo::locks::as_reader(repo.storage(), &repo.records(), "check", || {
        check_marked(repo, read_data)
    })
}

fn check_marked(repo: &Repository, read_data: bool) -> Result<CheckReport> {
    let _primary = repo.primary_only();
    let storage = repo.storage();
    let mut report = CheckReport {
        read_data,
        ..Default::default()
    };
    let mut problems: Vec<Problem> = Vec::new();
    let problem = |object: String, what: String| Problem {
        object,
        problem: what,
        backups: BTreeSet::new(),
    };

    // Manifests first: a backup commits its index file before its manifest, so every backup
    // listed here finds its index below even if it committed while this check runs.
    let manifests = storage.list("backups/")?;

    // Packs a prune is deleting: expected to vanish; a problem only if a backup needs them.
    let planned = crate::repo::locks::planned_packs(&crate::repo::locks::read_plans(
        storage,
        &repo.records(),
    )?);

    // Index files, one by one, so a bad one is reported rather than fatal. Those naming
    // planned packs come last, so blobs a prune copied elsewhere are found at the copy.
    let mut index = Index::default();
    let mut indexed: HashMap<Hash, IndexedPack> = HashMap::new();
    let mut listing = storage.list("index/")?;
    if !planned.is_empty() {
        let names_planned = |name: &str| -> bool {
            let id = Hash::from_hex(name.rsplit('/').next().unwrap_or_default());
            id.and_then(|id| repo.read_index_file(name, &id))
                .is_ok_and(|packs| packs.iter().any(|p| planned.contains(&p.id)))
        };
        // Stable: files naming no planned pack keep their order, ahead of the others.
        listing.sort_by_cached_key(|o| names_planned(&o.name));
    }
    for obj in listing {
        let name = obj.name.rsplit('/').next().unwrap_or_default();
        let Ok(id) = Hash::from_hex(name) else {
            continue;
        };
        let data = match storage.get_small(&obj.name, crate::repo::format::INDEX_MAX) {
            Ok(d) => d,
            // Rewritten or merged by a prune since the listing.
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => continue,
            Err(e) if e.kind == crate::error::ErrorKind::Integrity => {
                problems.push(problem(obj.name.clone(), e.message));
                continue;
            }
            Err(e) => return Err(e),
        };
        report.bytes_read += data.len() as u64;
        if Hash::of(&data) != id {
            problems.push(problem(
                obj.name.clone(),
                "corrupted (hash mismatch)".into(),
            ));
            continue;
        }
        let decoded = repo
            .unseal(ObjectKind::Index, b"", data, &obj.name)
            .and_then(|plain| decode_index_file(&plain, &obj.name));
        match decoded {
            Ok(packs) => {
                for p in packs {
                    index.add_pack(&p);
                    if read_data {
                        indexed.insert(p.id, p);
                    }
                }
            }
            Err(e) => problems.push(problem(obj.name.clone(), e.to_string())),
        }
        report.index_files += 1;
    }
    report.blobs = index.blob_count();
    report.packs = index.packs.len();

    // Packs: present, right size, and with --read-data intact down to every blob.
    let on_disk: HashMap<String, u64> = storage
        .list("data/")?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let mut bad_packs: HashMap<u32, usize> = HashMap::new();
    let mut planned_gone: HashMap<u32, String> = HashMap::new();
    let mut referenced = HashSet::new();
    for (pack_no, pack) in index.packs.iter().enumerate() {
        crate::interrupt::check()?; // reading every pack can take hours
        let name = pack_object_name(&pack.id);
        referenced.insert(name.clone());
        let what = match on_disk.get(&name) {
            None if planned.contains(&pack.id) => {
                planned_gone.insert(pack_no as u32, name.clone());
                None
            }
            None => Some("missing".to_string()),
            Some(&size) if size != pack.size => Some(format!(
                "wrong size: {size} bytes instead of {} (truncated?)",
                pack.size
            )),
            Some(_) if read_data => match indexed.get(&pack.id) {
                Some(p) => check_pack_data(repo, p, &name, &mut report.bytes_read),
                None => Some("not described by any readable index file".into()),
            },
            Some(_) => None,
        };
        if let Some(what) = what {
            bad_packs.insert(pack_no as u32, problems.len());
            problems.push(problem(name, what));
        }
    }
    for (name, size) in &on_disk {
        if !referenced.contains(name) {
            report.unreferenced_packs += 1;
            report.unreferenced_bytes += size;
        }
    }
    report.temp_files = storage.list("tmp/")?.len();
    report.stale_locks = crate::repo::locks::stale_markers(storage, &repo.records())?
        .into_iter()
        .map(|(name, m)| format!("{name} ({})", m.describe()))
        .collect();

    // Backups: every list and page resolvable, and which backups each problem breaks.
    let mut bases: Vec<Manifest> = Vec::new();
    let mut physical: Vec<Manifest> = Vec::new();
    for obj in manifests {
        let id = obj.name.rsplit('/').next().unwrap_or_default().to_string();
        if !crate::id::is_backup_id(&id) {
            continue;
        }
        report.backups += 1;
        let m = match repo.read_manifest(&id) {
            Ok(m) => m,
            Err(e) => {
                let mut p = problem(obj.name.clone(), e.to_string());
                p.backups.insert(id);
                problems.push(p);
                continue;
            }
        };
        if m.wal.is_some() {
            bases.push(m.clone());
        }
        if crate::ops::pg_physical::physical_info(&m).is_ok() {
            physical.push(m.clone());
        }
        let mut missing = 0u64;
        let mut list_cache = crate::repo::FrameCache::default();
        let blame = |h: &Hash, problems: &mut Vec<Problem>, missing: &mut u64| match index.get(h) {
            None => *missing += 1,
            Some(loc) => {
                let pack = index.frames[loc.frame as usize].pack;
                if let Some(&i) = bad_packs.get(&pack) {
                    problems[i].backups.insert(m.id.clone());
                } else if let Some(name) = planned_gone.get(&pack) {
                    // Deleted by a prune although this backup needs it from there.
                    match problems.iter_mut().find(|p| &p.object == name) {
                        Some(p) => {
                            p.backups.insert(m.id.clone());
                        }
                        None => {
                            let mut p = problem(name.clone(), "missing (deleted by prune)".into());
                            p.backups.insert(m.id.clone());
                            problems.push(p);
                        }
                    }
                }
            }
        };
        let walked = reach::walk(repo, &index, &m, &mut list_cache, &mut |r| {
            match r {
                Reached::BadId(_) => missing += 1,
                Reached::List(id) | Reached::Blob(id) => blame(&id, &mut problems, &mut missing),
                // A missing list is counted above, and a missing or wrong-size pack is
                // blamed above. A list that is there but fails its check (damage inside
                // a pack of the right size) is a problem too, named by its pack.
                Reached::Unreadable(id, e) => {
                    if let Some(loc) = index.get(&id) {
                        let object = pack_object_name(&index.pack_of(loc).id);
                        match problems.iter_mut().find(|p| p.object == object) {
                            Some(p) => {
                                p.backups.insert(m.id.clone());
                            }
                            None => {
                                let mut p = problem(object, e.to_string());
                                p.backups.insert(m.id.clone());
                                problems.push(p);
                            }
                        }
                    }
                }
            }
            Ok(Next::Descend)
        });
        // Only an unknown content kind stops the walk: this version cannot check it.
        if let Err(e) = walked {
            let mut p = problem(obj.name.clone(), e.to_string());
            p.backups.insert(m.id.clone());
            problems.push(p);
            continue;
        }
        if missing > 0 {
            let mut p = problem(
                obj.name.clone(),
                format!("{missing} blobs it needs are in no index"),
            );
            p.backups.insert(m.id.clone());
            problems.push(p);
        }
    }
    report.wal = check_segments(
        repo,
        &bases,
        read_data,
        &mut problems,
        &mut report.bytes_read,
    )?;
    let (pg_wal, pg_problems) =
        crate::ops::pg_physical::check_archive(repo, &physical, read_data, &mut report.bytes_read)?;
    report.pg_wal = pg_wal;
    for (object, what, backups) in pg_problems {
        let mut p = problem(object, what);
        p.backups.extend(backups);
        problems.push(p);
    }
    report.ok = problems.is_empty();
    report.problems = problems;
    if !report.ok {
        report.hint = Some(repair_hint(&repo.replica_locations()));
    }
    Ok(report)
}

/// Check the streams of continuous replication against their bases (`bases`: the
/// manifests with a `wal` link). Per stream with a base, from its oldest base's `next_seq`
/// on, segment numbers must follow each other. Retention removes the start of a stream, so
/// a run of missing segments that ends where one of its bases begins (or below a number
/// this repository recorded removing) is what retention left: point-in-time restores start
/// after it. Any other is damage. With `read_data`, every segment is opened (authenticated,
/// and what its name says) and must continue the one before (`prev`). Without it only names
/// are looked at: a stream may hold hundreds of thousands of segments, one request each.
fn check_segments(
    repo: &Repository,
    bases: &[Manifest],
    read_data: bool,
    problems: &mut Vec<Problem>,
    bytes_read: &mut u64,
) -> Result<WalCheck> {
    use crate::repo::segment::{self, SegmentName};
    use crate::wal::streams::time_ms;
    let storage = repo.storage();
    let (segments, strange) = segment::list(storage)?;
    let mut out = WalCheck {
        segments: segments.len(),
        segment_bytes: segments.iter().map(|s| s.size).sum(),
        not_segments: strange,
        ..Default::default()
    };
    let mut streams: BTreeMap<&str, (Vec<&Manifest>, Vec<SegmentName>)> = BTreeMap::new();
    for m in bases {
        if let Some(w) = &m.wal {
            streams.entry(&w.stream).or_default().0.push(m);
        }
    }
    for s in &segments {
        streams.entry(&s.stream).or_default().1.push(s.clone());
    }
    let floors = if segments.is_empty() {
        Default::default()
    } else {
        crate::repo::tombstones::read(storage, &repo.records())?.segments_below
    };
    let rfc = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| ms.to_string())
    };
    let orphan_ms = jiff::Timestamp::now().as_millisecond()
        - crate::ops::prune::ORPHAN_AFTER.as_millis() as i64;
    for (stream, (mut bases, segs)) in streams {
        bases.sort_by_key(|m| m.wal.as_ref().map_or(0, |w| w.next_seq));
        // Segments a compacted one holds too are a compaction's leftovers (prune removes
        // them), not a fork.
        let (segs, covered) = crate::wal::streams::effective(segs);
        out.covered_segments += covered.len();
        let segs: Vec<&SegmentName> = segs.iter().collect();
        if read_data {
            read_stream(repo, &segs, &bases, problems, &mut out, bytes_read)?;
        }
        let mut row = StreamCheck {
            stream: stream.to_string(),
            source: bases.first().map(|m| m.source.path.clone()),
            host: bases.first().map(|m| m.source.host.clone()),
            bases: bases.len(),
            segments: segs.len(),
            bytes: segs.iter().map(|s| s.size).sum(),
            ..Default::default()
        };
        // Two segments with one number: two processes shipped the stream (a fork); a restore
        // through that number cannot know which one happened.
        for pair in segs.windows(2).filter(|p| p[0].seq == p[1].seq) {
            problems.push(Problem {
                object: pair[1].object(),
                problem: format!(
                    "two segments numbered {} in stream {stream} ({} and this one): the stream \
                     was forked (shipped by two processes); a restore stops there",
                    pair[0].seq,
                    pair[0].object()
                ),
                backups: BTreeSet::new(),
            });
        }
        let Some(oldest) = bases.first().and_then(|m| m.wal.as_ref()) else {
            if segs.last().is_some_and(|s| s.last_ms < orphan_ms) {
                out.orphan_streams.push(stream.to_string());
            }
            out.streams.push(row);
            continue;
        };
        row.before_oldest_base = segs.iter().filter(|s| s.last_seq < oldest.next_seq).count();
        let starts: BTreeMap<u64, &Manifest> = bases
            .iter()
            .filter_map(|m| m.wal.as_ref().map(|w| (w.next_seq, *m)))
            .collect();
        let floor = floors.get(stream).copied();
        // Present segments from the oldest base on, then the starts of bases beyond the
        // last one: each is where the stream is expected to go on from.
        let last_seq = segs.last().map(|s| s.last_seq);
        let resumes = starts
            .keys()
            .copied()
            .filter(|&n| last_seq.is_none_or(|l| n > l + 1));
        let points: Vec<(u64, Option<&SegmentName>)> = segs
            .iter()
            .filter(|s| s.last_seq >= oldest.next_seq)
            .map(|s| (s.seq, Some(*s)))
            .chain(resumes.map(|n| (n, None)))
            .collect();
        let mut expected = oldest.next_seq;
        let mut run_start = oldest.next_seq;
        let mut before: Option<&SegmentName> = None;
        for (seq, s) in points {
            if seq > expected {
                run_start = seq;
                let retention = starts.contains_key(&seq) || floor.is_some_and(|f| seq <= f);
                if !retention {
                    let from = before
                        .map_or_else(String::new, |b| format!(" between {} and", rfc(b.last_ms)));
                    let to = s.map_or_else(String::new, |s| rfc(s.first_ms));
                    problems.push(Problem {
                        object: s.map_or_else(
                            || format!("{}{stream}/", segment::PREFIX),
                            |s| s.object(),
                        ),
                        problem: format!(
                            "segments {expected} to {} of stream {stream} are missing: no \
                             restore to a time{from} {to}",
                            seq - 1
                        ),
                        backups: BTreeSet::new(),
                    });
                }
            }
            // A segment is followed by the number after its last; a base goes on from its own.
            expected = expected.max(s.map_or(seq, |s| s.last_seq + 1));
            if s.is_some() {
                before = s;
            }
        }
        // Restorable: from the first base at or after the stream's last break, to its newest
        // commit (or newest base).
        row.restorable_from = starts
            .range(run_start..)
            .next()
            .and_then(|(_, m)| time_ms(m))
            .map(rfc);
        let newest = segs
            .last()
            .filter(|s| s.last_seq >= run_start)
            .map(|s| s.last_ms)
            .into_iter()
            .chain(bases.iter().filter_map(|m| time_ms(m)))
            .max();
        if row.restorable_from.is_some() {
            row.restorable_to = newest.map(rfc);
        }
        out.streams.push(row);
    }
    Ok(out)
}

/// Open every segment of one stream, in order: authentic, what its name says, from the
/// stream's source, and continuing the one before it.
fn read_stream(
    repo: &Repository,
    segs: &[&crate::repo::segment::SegmentName],
    bases: &[&Manifest],
    problems: &mut Vec<Problem>,
    out: &mut WalCheck,
    bytes_read: &mut u64,
) -> Result<()> {
    let source = bases.first().map(|m| (&m.source.path, &m.source.host));
    let mut prev: Option<(u64, blake3::Hash)> = None;
    for s in segs {
        crate::interrupt::check()?;
        let opened = crate::repo::segment::read(repo, repo.storage(), s);
        let damaged = |what: String| Problem {
            object: s.object(),
            problem: what,
            backups: BTreeSet::new(),
        };
        let (seg, hash) = match opened {
            Ok(x) => x,
            // Deleted by a forget or prune since the listing.
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
                prev = None;
                continue;
            }
            Err(e)
                if matches!(
                    e.kind,
                    crate::error::ErrorKind::Integrity | crate::error::ErrorKind::Trust
                ) =>
            {
                problems.push(damaged(e.message));
                prev = None;
                continue;
            }
            Err(e) => return Err(e),
        };
        out.segments_read += 1;
        *bytes_read += s.size;
        let h = &seg.header;
        if let Some((path, host)) = source {
            if (&h.path, &h.host) != (path, host) {
                problems.push(damaged(format!(
                    "it holds commits of {} on {}, its stream's bases are of {path} on {host}",
                    h.path, h.host
                )));
            }
        }
        if let Some((n, hash)) = prev {
            if n + 1 == h.seq && h.prev.as_deref() != Some(hash.to_hex().as_str()) {
                problems.push(damaged(format!(
                    "it does not continue segment {n} of its stream (its `prev` names another)"
                )));
            }
        }
        prev = Some((h.last_seq.unwrap_or(h.seq), hash));
    }
    Ok(())
}

/// What `repo check` suggests for damage: `repo repair`, and what it can do here.
fn repair_hint(replicas: &[String]) -> String {
    if replicas.is_empty() {
        "run `lifeboat repo repair`: it rebuilds lost or damaged index files from the packs. \
         A damaged or missing pack or manifest needs a replica to be repaired from (`lifeboat \
         replica add URL` of a copy that holds it); otherwise the backups listed cannot be \
         restored and `lifeboat forget ID` removes them"
            .into()
    } else {
        format!(
            "run `lifeboat repo repair`: it copies good copies of damaged or missing objects \
             from the replicas ({}) and rebuilds lost index files from the packs",
            replicas.join(", ")
        )
    }
}

/// Read a whole pack: its hash, its directory against the index, every frame and blob.
fn check_pack_data(
    repo: &Repository,
    indexed: &IndexedPack,
    name: &str,
    bytes_read: &mut u64,
) -> Option<String> {
    let data = match repo.storage().get(name) {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    *bytes_read += data.len() as u64;
    if Hash::of(&data) != indexed.id {
        return Some("corrupted (hash mismatch)".into());
    }
    let open_dir = |d: &[u8]| {
        repo.unseal(
            ObjectKind::PackDirectory,
            b"",
            d.to_vec(),
            &format!("the directory of pack {name}"),
        )
    };
    let frames = match read_directory(&data, name, open_dir) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    let same_shape = frames.len() == indexed.frames.len()
        && frames.iter().zip(&indexed.frames).all(|(a, b)| {
            (a.offset, a.stored_len, a.raw_len, a.codec)
                == (b.offset, b.stored_len, b.raw_len, b.codec)
                && a.blobs.len() == b.blobs.len()
                && a.blobs
                    .iter()
                    .zip(&b.blobs)
                    .all(|(x, y)| (x.kind, x.offset, x.len) == (y.kind, y.offset, y.len))
        });
    if !same_shape {
        return Some("its directory does not match the index".into());
    }
    let mut dec = compress::Decompressor::default();
    let hasher = repo.hasher();
    for f in &indexed.frames {
        let start = f.offset as usize;
        let Some(stored) = data.get(start..start + f.stored_len as usize) else {
            return Some(format!("frame at {} lies outside the pack", f.offset));
        };
        let what = format!("frame at {}", f.offset);
        let raw = match repo
            .unseal(ObjectKind::Frame, b"", stored.to_vec(), &what)
            .and_then(|plain| dec.decompress(f.codec, &plain, f.raw_len as usize))
        {
            Ok(r) => r,
            Err(e) => return Some(format!("frame at {}: {e}", f.offset)),
        };
        for b in &f.blobs {
            let slice = raw.get(b.offset as usize..(b.offset + b.len) as usize);
            if !slice.is_some_and(|s| hasher.matches_key(s, &b.id)) {
                return Some(format!("blob {} is corrupted", b.id.short()));
            }
        }
    }
    None
}

/// Packs holding the blobs of backup `m` (its lists and pages), by index pack number.
pub fn packs_used_by(repo: &Repository, index: &Index, m: &Manifest) -> Result<BTreeSet<u32>> {
    let mut packs = BTreeSet::new();
    let mut cache = crate::repo::FrameCache::default();
    reach::walk(repo, index, m, &mut cache, &mut |r| match r {
        Reached::BadId(hex) => Err(crate::error::Error::integrity(format!(
            "backup {} names a bad list id {hex}",
            m.id
        ))),
        Reached::Unreadable(_, e) => Err(e),
        Reached::List(id) | Reached::Blob(id) => {
            if let Some(loc) = index.get(&id) {
                packs.insert(index.frames[loc.frame as usize].pack);
            }
            Ok(Next::Descend)
        }
    })?;
    Ok(packs)
}

/// Check a pack's length and directory against the index without reading its frames: what
/// a restore does not read, but a damaged pack would show. A pack damaged or missing here
/// that a replica holds intact is no problem (the reads fall back to it; the replica is
/// tallied for the command's warning).
pub fn pack_structure_problem(repo: &Repository, index: &Index, pack_no: u32) -> Option<String> {
    let (problem, missing) = structure_problem_in(repo, repo.storage(), index, pack_no)?;
    for replica in repo.replicas() {
        if structure_problem_in(repo, replica.as_ref(), index, pack_no).is_none() {
            let pack = &index.packs[pack_no as usize].id;
            repo.note_replica_pack(&replica.describe(), pack, missing);
            return None;
        }
    }
    Some(problem)
}

/// [`pack_structure_problem`] of the pack as `storage` holds it, and whether it is missing.
fn structure_problem_in(
    repo: &Repository,
    storage: &dyn crate::storage::Storage,
    index: &Index,
    pack_no: u32,
) -> Option<(String, bool)> {
    let pack = &index.packs[pack_no as usize];
    let name = pack_object_name(&pack.id);
    let fail = |why: String| Some((format!("{name}: {why}"), false));
    if pack.size < 20 {
        return fail("impossibly small".into());
    }
    let tail = match storage.get_range(&name, pack.size - 12, 12) {
        Ok(t) => t,
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
            return Some((format!("{name}: {e}"), true))
        }
        Err(e) => return fail(e.to_string()),
    };
    if &tail[4..] != crate::repo::pack::DIR_MAGIC {
        return fail("its end is not a pack directory (truncated or extended?)".into());
    }
    let dir_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if dir_len + 20 > pack.size {
        return fail("its directory length is impossible".into());
    }
    let sealed = match storage.get_range(&name, pack.size - 12 - dir_len, dir_len as usize) {
        Ok(d) => d,
        Err(e) => return fail(e.to_string()),
    };
    let what = format!("the directory of pack {name}");
    let dir = match repo.unseal(ObjectKind::PackDirectory, b"", sealed, &what) {
        Ok(d) => d,
        Err(e) => return Some((e.to_string(), false)),
    };
    let mut r = crate::repo::pack::Reader::new(&dir, &what);
    let frames = match crate::repo::pack::decode_frames(&mut r, false) {
        Ok(f) => f,
        Err(e) => return Some((e.to_string(), false)),
    };
    let expected: Vec<_> = index.frames.iter().filter(|f| f.pack == pack_no).collect();
    let same = frames.len() == expected.len()
        && frames.iter().zip(&expected).all(|(a, b)| {
            (a.offset, a.stored_len, a.raw_len, a.codec)
                == (b.offset, b.stored_len, b.raw_len, b.codec)
        });
    if !same {
        return fail("its directory does not match the index".into());
    }
    None
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub location: String,
    pub format_version: u32,
    pub encryption: String,
    pub backups: usize,
    pub sources: BTreeMap<String, usize>,
    /// Sum of the database sizes of all backups.
    pub logical_bytes: u64,
    /// Bytes of distinct blobs before compression.
    pub unique_bytes: u64,
    /// Bytes of packs, index files and manifests.
    pub stored_bytes: u64,
    pub packs: usize,
    pub blobs: usize,
    pub index_files: usize,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
}

pub fn stats(repo: &Repository) -> Result<Stats> {
    let index = repo.load_index()?;
    let backups = repo.list_backups()?;
    let mut sources = BTreeMap::new();
    for m in &backups {
        *sources.entry(m.source.path.clone()).or_insert(0) += 1;
    }
    let logical: u64 = backups.iter().map(|m| m.logical_bytes()).sum();
    let unique: u64 = index.blobs().map(|(_, l)| u64::from(l.len)).sum();
    let packs = index.pack_bytes();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(Stats {
        location: repo.location(),
        format_version: repo.config.format_version,
        encryption: repo.config.encryption.clone(),
        backups: backups.len(),
        sources,
        logical_bytes: logical,
        unique_bytes: unique,
        stored_bytes: repo.stored_bytes()?,
        packs: index.packs.len(),
        blobs: index.blob_count(),
        index_files: index.files.len(),
        dedup_ratio: ratio(logical, unique),
        compression_ratio: ratio(unique, packs),
    })
}
