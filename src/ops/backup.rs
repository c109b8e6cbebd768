//! Backup: source → chunks (pages, blocks, or content-defined chunks of files) → dedup
//! against the index → compress in frames → packs → index file → (check what was written)
//! → manifest, last.
//!
//! A [`Source`] takes its snapshot and hands the content to the [`ContentWriter`] here: an
//! image, or a tree of files. The stages run at once on bounded channels, so memory does not
//! grow with the source: the front reads and hashes chunks and decides what is new (a
//! [`Sink`]); a pool compresses frames of new blobs; one writer thread appends frames to
//! packs and stores finished packs.

use crate::error::{Error, ErrorKind, Result};
use crate::id::{new_backup_id, BlobHasher, Hash, HashSetById, Sha256Stream};
use crate::ops::verify::{verify_manifest, VerifyReport};
use crate::ops::VerifyLevel;
use crate::progress::Progress;
use crate::repo::compress::{Compression, Compressor};
use crate::repo::crypto::ObjectKind;
use crate::repo::index::{encode_index_file, index_object_name, Index, IndexedPack};
use crate::repo::manifest::{Content, Manifest, SourceInfo, StoredInfo};
use crate::repo::pack::{pack_object_name, BlobEntry, BlobKind, PackWriter};
use crate::repo::tree::{encode_node, ends_node, TreeEntry, NODE_ALONE_CHUNKS};
use crate::repo::{locks, Repository};
use crate::source::{
    Chunking, ContentWriter, Cut, Kind, Snapshot, SourceFacts, StoredImage, TreeWriter,
};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// New blobs are compressed together in frames of about this many raw bytes: groups of
/// 256 pages of 4 KiB compress within 1% of a whole-file zstd stream, single pages 28% worse.
pub const FRAME_BYTES: usize = 1 << 20;
/// Page ids per list blob: a small change rewrites only the lists it touches.
pub const IDS_PER_LIST: usize = 1024;
/// Packs uploaded at once by default.
pub const DEFAULT_TRANSFERS: usize = 4;

/// A trigger (or a tag the API is given) as callers may name it: short, printable, no
/// spaces — it is shown in lists, URLs and webhooks.
pub fn check_label(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{what} {s:?}: 1 to 64 letters, digits, - _ . :"
        )))
    }
}

pub struct BackupOptions {
    /// The database file, or the folder or file of a files backup.
    pub database: PathBuf,
    /// The kind of source; found from the path when not given.
    pub kind: Option<Kind>,
    /// Options of a files or PostgreSQL backup.
    pub source: crate::source::SourceOptions,
    /// The run this backup belongs to (several sources backed up by one command).
    pub run: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub trigger: String,
    pub compression: Compression,
    pub verify: VerifyLevel,
    pub progress: Progress,
    /// Packs uploaded at once (`transfers` in lifeboat.toml, `LIFEBOAT_TRANSFERS`).
    pub transfers: usize,
    /// Record this time instead of now (`backup --time`, for imported history).
    pub time: Option<jiff::Timestamp>,
}

pub struct BackupOutcome {
    pub manifest: Manifest,
    /// Total bytes in the repository after this backup.
    pub repo_stored_bytes: u64,
    /// The full verification, when it was asked for.
    pub verify: Option<VerifyReport>,
    /// Problems noticed in the repository that did not stop this backup.
    pub warnings: Vec<String>,
}

struct RawFrame {
    data: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl RawFrame {
    fn new() -> RawFrame {
        RawFrame {
            data: Vec::with_capacity(FRAME_BYTES + (64 << 10)),
            blobs: Vec::new(),
        }
    }
    fn push(&mut self, id: Hash, kind: BlobKind, bytes: &[u8]) {
        self.blobs.push(BlobEntry {
            id: id.key(),
            kind,
            offset: self.data.len() as u32,
            len: bytes.len() as u32,
        });
        self.data.extend_from_slice(bytes);
    }
}

struct StoredFrame {
    stored: Vec<u8>,
    codec: crate::repo::compress::Codec,
    raw_len: u32,
    blobs: Vec<BlobEntry>,
}

/// What the front stages stored, over every pipeline of one backup.
#[derive(Default, Clone, Copy)]
struct Counts {
    new_blobs: u64,
    reused_blobs: u64,
    new_raw_bytes: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.new_blobs += o.new_blobs;
        self.reused_blobs += o.reused_blobs;
        self.new_raw_bytes += o.new_raw_bytes;
    }
}

/// What an image's front stages learned.
#[derive(Default)]
struct ReadSummary {
    sha256: String,
    lists: Vec<Hash>,
    blobs: u64,
    bytes: u64,
    counts: Counts,
}

const PIPELINE_STOPPED: &str = "backup pipeline stopped";

pub fn backup(repo: &Repository, opts: &BackupOptions) -> Result<BackupOutcome> {
    backup_prepared(repo, opts, None, None)
}

/// [`backup`] of a source already opened (a snapshot taken at a chosen moment: a base of
/// continuous replication), its manifest carrying `wal` when given.
pub fn backup_prepared(
    repo: &Repository,
    opts: &BackupOptions,
    source: Option<Box<dyn crate::source::Source>>,
    wal: Option<crate::repo::manifest::WalLink>,
) -> Result<BackupOutcome> {
    // The marker tells a concurrent prune that this backup may reuse any pack it indexed.
    repo.require_writable("backup")?;
    locks::as_writer(
        repo.storage(),
        &repo.records(),
        "backup",
        true,
        |plans, lease| backup_marked(repo, opts, source, wal, plans, lease),
    )
    .map_err(|e| match e.kind {
        ErrorKind::Interrupted => e.hint(
            "the backup was not committed (no manifest); the pages it had stored are kept and \
             indexed, so the next backup does not store them again; its lock marker was removed",
        ),
        _ => e,
    })
}

fn backup_marked(
    repo: &Repository,
    opts: &BackupOptions,
    prepared: Option<Box<dyn crate::source::Source>>,
    wal: Option<crate::repo::manifest::WalLink>,
    plans: &[locks::Plan],
    lease: &locks::Lease,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let now = opts.time.unwrap_or_else(jiff::Timestamp::now);
    let id = new_backup_id(now.as_millisecond().max(0) as u64);
    if opts.verify == VerifyLevel::Full && repo.is_write_only() {
        return Err(Error::usage(
            "--verify reads the backup back, which a write-only key cannot do",
        )
        .hint("back up with the default check here, and run `lifeboat verify --identity FILE` where the identity is"));
    }
    // The kind given (`--kind`) is never second-guessed from the file's header.
    let kind = match opts.kind {
        Some(k) => k,
        None => crate::source::detect(&opts.database)?,
    };
    let source_name = crate::source::source_name(&opts.database, kind, &opts.source)?;
    let mut source = match prepared {
        Some(s) => s,
        None if kind == Kind::Postgres => crate::source::open(&opts.database, kind, &opts.source)?,
        None => crate::source::open(&absolute(&opts.database)?, kind, &opts.source)?,
    };
    let format = repo.manifest_format();
    if format < 2 && kind != Kind::Sqlite {
        return Err(Error::usage(format!(
            "this repository holds SQLite backups only (it was made by an earlier Lifeboat); \
             backing up {} ({}) needs its format upgraded",
            source_name,
            kind.name()
        ))
        .hint("run `lifeboat repo upgrade` (Lifeboat versions before this one can then no longer open the repository)"));
    }
    let mut index = repo.load_index()?;
    let mut warnings: Vec<String> = index
        .damaged
        .iter()
        .map(|f| format!("index file {f} is damaged; backups that need it may not restore (run `lifeboat repo repair`)"))
        .collect();
    for pack in repo.drop_missing_packs(&mut index) {
        warnings.push(format!(
            "pack {pack} is missing or truncated; its pages are stored again by this backup, \
             older backups that use it cannot be restored unless a replica has it (run `lifeboat repo repair`)"
        ));
    }
    // Packs a prune plans to delete are not reused: their pages are stored again. The plans
    // seen when the marker was written count even if a prune has swept them since.
    let seen = locks::planned_packs(plans);
    let mut planned = std::mem::take(&mut index.planned);
    planned.extend(
        (0..index.packs.len() as u32).filter(|&n| seen.contains(&index.packs[n as usize].id)),
    );
    index.forget_packs(&planned);
    tracing::info!(elapsed = ?started.elapsed(), blobs = index.blob_count(), "index loaded");
    let compression = opts.compression;
    let mut writer = Writer {
        repo,
        index: &index,
        staging: repo.storage().staging_dir()?,
        compression,
        transfers: opts.transfers,
        progress: &opts.progress,
        packs: Vec::new(),
        counts: Counts::default(),
    };
    let mut backed = source.back_up(&mut writer)?;
    drop(source);
    warnings.append(&mut backed.warnings);
    let Writer { packs, counts, .. } = writer;
    tracing::info!(elapsed = ?started.elapsed(), new = counts.new_blobs, "content read and stored");

    let new_stored_bytes: u64 = packs.iter().map(|p| p.pack.size + p.index_size).sum();
    let index_files: Vec<Hash> = packs.iter().map(|p| p.index_file).collect();
    let packs: Vec<IndexedPack> = packs.into_iter().map(|p| p.pack).collect();
    if opts.verify != VerifyLevel::None {
        check_written(repo, &packs, &index_files)?;
    }
    tracing::info!(elapsed = ?started.elapsed(), "index written and checked");
    for p in &packs {
        index.add_pack(p);
    }

    let mut manifest = Manifest {
        format,
        id,
        time: now.to_string(),
        source: SourceInfo {
            kind: kind.name().into(),
            path: source_name,
            host: crate::host::hostname(),
        },
        run: opts.run.clone(),
        description: opts.description.clone(),
        tags: opts.tags.clone(),
        trigger: opts.trigger.clone(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        duration_ms: 0,
        verification: None,
        sqlite: None,
        duckdb: None,
        files: None,
        postgres: None,
        content: backed.content,
        stored: StoredInfo {
            compression: compression.codec.name().into(),
            level: compression.level,
            new_blobs: counts.new_blobs,
            reused_blobs: counts.reused_blobs,
            new_raw_bytes: counts.new_raw_bytes,
            new_stored_bytes,
            packs: packs.iter().map(|p| p.id.to_hex()).collect(),
            index_files: index_files.iter().map(|h| h.to_hex()).collect(),
        },
        wal,
    };
    match backed.facts {
        SourceFacts::Sqlite(f) => manifest.sqlite = Some(f),
        SourceFacts::Duckdb(f) => manifest.duckdb = Some(f),
        SourceFacts::Files(f) => manifest.files = Some(f),
        SourceFacts::Postgres(f) => manifest.postgres = Some(f),
    }
    if let Some(physical) = manifest.postgres.as_ref().and_then(|p| p.physical.as_ref()) {
        crate::ops::pgwal::require_feature(repo)?;
        crate::ops::pgwal::await_backup_wal(repo, physical)?;
    }

    let verify = if opts.verify == VerifyLevel::Full {
        let report = verify_manifest(repo, &index, &manifest, &opts.progress)?;
        if !report.ok {
            return Err(Error::integrity(format!(
                "the new backup failed verification ({}); it was not committed",
                report.first_failure().unwrap_or("unknown step")
            ))
            .hint("run `lifeboat repo check --read-data`; the storage may be failing"));
        }
        Some(report)
    } else {
        None
    };

    manifest.verification = Some(
        match opts.verify {
            VerifyLevel::None => "none",
            VerifyLevel::Written => "written",
            VerifyLevel::Full => "full",
        }
        .into(),
    );
    manifest.duration_ms = started.elapsed().as_millis() as u64;
    // A backup paused long enough to look dead may reuse packs a prune has since deleted.
    lease.check()?;
    repo.write_manifest(&manifest)?;
    Ok(BackupOutcome {
        repo_stored_bytes: repo.stored_bytes()?,
        manifest,
        verify,
        warnings,
    })
}

/// The engine's [`ContentWriter`]: each image or tree a source hands over runs through one
/// pipeline; the packs stored and the counts add up over the backup.
struct Writer<'a> {
    repo: &'a Repository,
    index: &'a Index,
    staging: PathBuf,
    compression: Compression,
    transfers: usize,
    progress: &'a Progress,
    packs: Vec<StoredPack>,
    counts: Counts,
}

impl Writer<'_> {
    /// Run `front` (which decides what is new and sends frames of new blobs) against the
    /// compressors and the pack writer.
    fn pipeline<T>(
        &mut self,
        front: impl FnOnce(Sender<RawFrame>) -> Result<(T, Counts)>,
    ) -> Result<T> {
        let repo = self.repo;
        let workers = worker_threads();
        let compression = self.compression;
        let pack_size = repo.config.pack_target();
        let staging = self.staging.as_path();
        let transfers = self.transfers;
        let (value, counts, packs) = std::thread::scope(|s| {
            let (raw_tx, raw_rx) = bounded::<RawFrame>(workers * 2);
            let (stored_tx, stored_rx) = bounded::<StoredFrame>(workers * 2);
            let compressors: Vec<_> = (0..workers)
                .map(|_| {
                    let rx = raw_rx.clone();
                    let tx = stored_tx.clone();
                    s.spawn(move || compress_frames(repo, compression, rx, tx))
                })
                .collect();
            drop((raw_rx, stored_tx));
            let writer =
                s.spawn(move || write_packs(repo, staging, pack_size, transfers, stored_rx));
            let read = front(raw_tx);
            // Join every compressor before looking at results, so none outlives an error.
            let joined: Vec<Result<()>> = compressors
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::internal("compressor panicked")))
                })
                .collect();
            let compressed = joined.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()));
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(Error::internal("pack writer panicked")));
            // Report the first real cause: a full disk in the writer shows up in the reader
            // only as a closed channel.
            match (read, compressed, written) {
                (Ok((v, c)), Ok(()), Ok(p)) => Ok((v, c, p)),
                (_, _, Err(e)) => Err(e),
                (_, Err(e), _) if e.message != PIPELINE_STOPPED => Err(e),
                (Err(e), _, _) => Err(e),
                (_, Err(e), _) => Err(e),
            }
        })?;
        self.packs.extend(packs);
        self.counts.add(counts);
        Ok(value)
    }
}

impl ContentWriter for Writer<'_> {
    fn image(&mut self, snap: &mut dyn Snapshot, cut: Cut) -> Result<StoredImage> {
        let index = self.index;
        let hasher = self.repo.hasher();
        let progress = self.progress;
        let block = snap.block_size() as usize;
        if block == 0 {
            return Err(Error::source("the source reports blocks of 0 bytes"));
        }
        let len = snap.len();
        progress.start("backup", len);
        let summary = self.pipeline(move |raw_tx| {
            let workers = worker_threads();
            std::thread::scope(|s| {
                // Blob ids are computed by a pool (BLAKE3 per page is the costliest per-page
                // step after SHA-256), then put back in order for dedup and the lists.
                let (chunk_tx, chunk_rx) = bounded::<(u64, Vec<u8>)>(workers * 4);
                let (hashed_tx, hashed_rx) = bounded::<HashedChunk>(workers * 4);
                let (spare_tx, spare_rx) = bounded::<Vec<u8>>(workers * 8);
                for _ in 0..workers {
                    let rx = chunk_rx.clone();
                    let tx = hashed_tx.clone();
                    let hasher = hasher.clone();
                    s.spawn(move || hash_blocks(hasher, block, rx, tx));
                }
                drop((chunk_rx, hashed_tx));
                let collector = s.spawn(move || {
                    let to = (raw_tx, spare_tx);
                    collect_blocks(index, hasher, block, cut, hashed_rx, to, progress)
                });
                let read = read_image(snap, chunk_tx, spare_rx);
                let collected = collector
                    .join()
                    .unwrap_or_else(|_| Err(Error::internal("page collector panicked")));
                match (read, collected) {
                    (Ok(sha256), Ok(mut sum)) => {
                        sum.sha256 = sha256;
                        let counts = sum.counts;
                        Ok((sum, counts))
                    }
                    (Err(e), Err(c)) if e.message == PIPELINE_STOPPED => Err(c),
                    (Err(e), _) => Err(e),
                    (_, Err(c)) => Err(c),
                }
            })
        })?;
        progress.finish();
        if summary.bytes != len {
            return Err(Error::source(format!(
                "read {} bytes of an image of {len}",
                summary.bytes
            )));
        }
        let lists = summary.lists.iter().map(|h| h.to_hex()).collect();
        let content = match cut {
            Cut::Pages => Content::Pages {
                block_size: block as u32,
                blocks: summary.blobs,
                ids_per_list: IDS_PER_LIST as u32,
                lists,
            },
            Cut::Blocks => Content::Stream {
                bytes: summary.bytes,
                chunks: summary.blobs,
                ids_per_list: IDS_PER_LIST as u32,
                lists,
            },
        };
        Ok(StoredImage {
            content,
            sha256: summary.sha256,
        })
    }

    fn tree(&mut self, walk: &mut dyn FnMut(&mut dyn TreeWriter) -> Result<()>) -> Result<Content> {
        let index = self.index;
        let hasher = self.repo.hasher();
        let progress = self.progress;
        progress.start("backup", 0);
        let content = self.pipeline(move |raw_tx| {
            let mut tree = TreeBuilder {
                sink: Sink::new(index, hasher.clone(), raw_tx),
                seed: cdc_seed(&hasher),
                node: Vec::new(),
                nodes: Vec::new(),
                entries: 0,
                bytes: 0,
                progress,
            };
            walk(&mut tree)?;
            tree.flush_node()?;
            let TreeBuilder {
                sink,
                nodes,
                entries,
                bytes,
                ..
            } = tree;
            let counts = sink.finish()?;
            Ok((
                Content::Tree {
                    entries,
                    bytes,
                    nodes: nodes.iter().map(|h| h.to_hex()).collect(),
                },
                counts,
            ))
        })?;
        progress.finish();
        Ok(content)
    }
}

/// Threads per pool of a backup (compressors, hashers): one per core, 1 to 8.
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// The chunker's gear seed: secret in an encrypted repository (derived from the id key), so
/// chunk boundaries, which the sizes of stored frames could reveal, do not fingerprint
/// content.
fn cdc_seed(hasher: &BlobHasher) -> u64 {
    let id = hasher.id(b"lifeboat content-defined chunking seed");
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(first)
}

/// The tree's front stage: cuts each file into chunks, stores new ones, and groups the
/// entries into tree blobs.
struct TreeBuilder<'a> {
    sink: Sink<'a>,
    seed: u64,
    node: Vec<TreeEntry>,
    nodes: Vec<Hash>,
    entries: u64,
    bytes: u64,
    progress: &'a Progress,
}

impl TreeBuilder<'_> {
    fn flush_node(&mut self) -> Result<()> {
        if self.node.is_empty() {
            return Ok(());
        }
        let data = encode_node(&self.node)?;
        let id = self.sink.hasher.id(&data);
        self.sink.put(id, BlobKind::List, &data)?;
        self.nodes.push(id);
        self.node.clear();
        Ok(())
    }
}

impl TreeWriter for TreeBuilder<'_> {
    fn add(&mut self, mut entry: TreeEntry, data: Option<&mut dyn std::io::Read>) -> Result<()> {
        crate::interrupt::check()?;
        if let Some(data) = data {
            let (chunks, size) = self.store(&entry.path, data, Chunking::FILES)?;
            entry.chunks = chunks;
            entry.size = size;
        }
        self.bytes += entry.size;
        let path = entry.path_bytes()?;
        let alone = entry.chunks.len() >= NODE_ALONE_CHUNKS;
        if alone {
            self.flush_node()?;
        }
        self.node.push(entry);
        self.entries += 1;
        if alone || ends_node(&path, self.node.len()) {
            self.flush_node()?;
        }
        Ok(())
    }

    fn store(
        &mut self,
        path: &str,
        data: &mut dyn std::io::Read,
        chunking: Chunking,
    ) -> Result<(Vec<String>, u64)> {
        let mut size = 0u64;
        let mut chunks = Vec::new();
        if chunking.min == chunking.max {
            // Fixed blocks (pages): a changed page is a new chunk, its neighbours stay.
            let mut buf = vec![0u8; chunking.max as usize];
            loop {
                let n = read_full(data, &mut buf).map_err(|e| chunk_read_error(path, e))?;
                if n == 0 {
                    break;
                }
                let id = self.sink.hasher.id(&buf[..n]);
                self.sink.put(id, BlobKind::Data, &buf[..n])?;
                size += n as u64;
                self.progress.inc(n as u64);
                chunks.push(id.to_hex());
            }
            return Ok((chunks, size));
        }
        let chunker = fastcdc::v2020::StreamCDC::with_level_and_seed(
            data,
            chunking.min,
            chunking.avg,
            chunking.max,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        );
        for chunk in chunker {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => chunk_read_error(path, io),
                other => Error::source(format!("cannot read {path}: {other}")),
            })?;
            let id = self.sink.hasher.id(&chunk.data);
            self.sink.put(id, BlobKind::Data, &chunk.data)?;
            size += chunk.data.len() as u64;
            self.progress.inc(chunk.data.len() as u64);
            chunks.push(id.to_hex());
        }
        Ok((chunks, size))
    }
}

/// Read until `buf` is full or the reader ends; the bytes read.
fn read_full(data: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match data.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader's error: the Lifeboat error it carries (a source that failed while its bytes
/// were read), else an I/O error on `path`.
fn chunk_read_error(path: &str, io: std::io::Error) -> Error {
    Error::carried_by(io).unwrap_or_else(|io| Error::io("cannot read", Path::new(path), io))
}

/// Dedup and framing: a blob not in the index (nor already sent by this pipeline) joins a
/// frame of its kind; full frames go to the compressors.
struct Sink<'a> {
    index: &'a Index,
    hasher: BlobHasher,
    pending: HashSetById,
    frame: RawFrame,
    list_frame: RawFrame,
    tx: Sender<RawFrame>,
    counts: Counts,
}

impl<'a> Sink<'a> {
    fn new(index: &'a Index, hasher: BlobHasher, tx: Sender<RawFrame>) -> Sink<'a> {
        Sink {
            index,
            hasher,
            pending: HashSetById::default(),
            frame: RawFrame::new(),
            list_frame: RawFrame::new(),
            tx,
            counts: Counts::default(),
        }
    }

    /// Store blob `id` unless it is stored already.
    fn put(&mut self, id: Hash, kind: BlobKind, bytes: &[u8]) -> Result<()> {
        let new = !self.index.contains(&id) && self.pending.insert(id);
        if kind == BlobKind::Data {
            if new {
                self.counts.new_blobs += 1;
            } else {
                self.counts.reused_blobs += 1;
            }
        }
        if !new {
            return Ok(());
        }
        self.counts.new_raw_bytes += bytes.len() as u64;
        let frame = match kind {
            BlobKind::Data => &mut self.frame,
            BlobKind::List => &mut self.list_frame,
        };
        frame.push(id, kind, bytes);
        if frame.data.len() >= FRAME_BYTES {
            let full = std::mem::replace(frame, RawFrame::new());
            self.tx
                .send(full)
                .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
        }
        Ok(())
    }

    /// Send the last frames.
    fn finish(mut self) -> Result<Counts> {
        for f in [&mut self.frame, &mut self.list_frame] {
            if !f.blobs.is_empty() {
                let last = std::mem::replace(f, RawFrame::new());
                self.tx
                    .send(last)
                    .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
            }
        }
        Ok(self.counts)
    }
}

/// A chunk of the image with the ids of its blobs, in read order `seq`.
struct HashedChunk {
    seq: u64,
    data: Vec<u8>,
    ids: Vec<Hash>,
}

/// Stage 1: read the image in order and hash it with SHA-256 while each 128 KiB chunk is
/// still in this core's cache (from memory, on another thread, it ran at two thirds of the
/// speed). Chunks go on to the hashers; their buffers come back through `spare`.
fn read_image(
    snap: &mut dyn Snapshot,
    tx: Sender<(u64, Vec<u8>)>,
    spare: Receiver<Vec<u8>>,
) -> Result<String> {
    let mut sha = Sha256Stream::default();
    let mut seq = 0u64;
    snap.read_chunks(&mut |chunk: &mut Vec<u8>| {
        // Stopping here lets the pipeline drain: the pages read so far are stored and
        // indexed (the next backup reuses them), and no manifest is written.
        crate::interrupt::check()?;
        sha.update(chunk);
        let next = spare.try_recv().unwrap_or_default();
        tx.send((seq, std::mem::replace(chunk, next)))
            .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
        seq += 1;
        Ok(())
    })?;
    Ok(sha.finish_hex())
}

/// Stage 2 (a pool): the BLAKE3 id of every blob of a chunk: blocks of `block` bytes, the
/// last one shorter if the chunk ends mid-block (`collect_blocks` refuses that for pages).
fn hash_blocks(
    hasher: BlobHasher,
    block: usize,
    rx: Receiver<(u64, Vec<u8>)>,
    tx: Sender<HashedChunk>,
) {
    for (seq, data) in rx {
        let ids = data.chunks(block).map(|p| hasher.id(p)).collect();
        if tx.send(HashedChunk { seq, data, ids }).is_err() {
            return;
        }
    }
}

/// Stage 3: in image order, decide which blobs are new, group them into frames, and build
/// the lists of ids. `to`: where frames of new blobs go, and where read buffers go back.
fn collect_blocks(
    index: &Index,
    hasher: BlobHasher,
    block: usize,
    cut: Cut,
    rx: Receiver<HashedChunk>,
    to: (Sender<RawFrame>, Sender<Vec<u8>>),
    progress: &Progress,
) -> Result<ReadSummary> {
    let (tx, spare) = to;
    let mut sum = ReadSummary::default();
    let mut sink = Sink::new(index, hasher, tx);
    let mut list: Vec<u8> = Vec::with_capacity(IDS_PER_LIST * 32);
    let flush_list = |list: &mut Vec<u8>, sink: &mut Sink, sum: &mut ReadSummary| {
        let id = sink.hasher.id(list);
        sum.lists.push(id);
        sink.put(id, BlobKind::List, list)?;
        list.clear();
        Ok::<(), Error>(())
    };
    let mut waiting: BTreeMap<u64, HashedChunk> = BTreeMap::new();
    let mut next = 0u64;
    for hashed in rx {
        waiting.insert(hashed.seq, hashed);
        while let Some(chunk) = waiting.remove(&next) {
            next += 1;
            // Content `pages` promises blocks of one size: a source that hands over part of
            // a page is a bug, caught before it becomes a backup that cannot restore.
            if cut == Cut::Pages && chunk.data.len() % block != 0 {
                return Err(Error::internal(format!(
                    "the source handed over {} bytes, not whole pages of {block}",
                    chunk.data.len()
                )));
            }
            for (blob, id) in chunk.data.chunks(block).zip(&chunk.ids) {
                sum.blobs += 1;
                sum.bytes += blob.len() as u64;
                list.extend_from_slice(&id.0);
                sink.put(*id, BlobKind::Data, blob)?;
                if list.len() == IDS_PER_LIST * 32 {
                    flush_list(&mut list, &mut sink, &mut sum)?;
                }
            }
            progress.inc(chunk.data.len() as u64);
            let _ = spare.try_send(chunk.data);
        }
    }
    if !waiting.is_empty() {
        return Err(Error::internal(PIPELINE_STOPPED));
    }
    if !list.is_empty() || sum.lists.is_empty() {
        flush_list(&mut list, &mut sink, &mut sum)?;
    }
    sum.counts = sink.finish()?;
    Ok(sum)
}

/// Stage 2: compress frames.
fn compress_frames(
    repo: &Repository,
    compression: Compression,
    rx: Receiver<RawFrame>,
    tx: Sender<StoredFrame>,
) -> Result<()> {
    let mut compressor = Compressor::new(compression);
    for f in rx {
        // Compress, then encrypt (in an encrypted repository): ciphertext does not compress.
        let stored = repo.seal(ObjectKind::Frame, b"", compressor.compress(&f.data)?)?;
        tx.send(StoredFrame {
            stored,
            codec: compression.codec,
            raw_len: f.data.len() as u32,
            blobs: f.blobs,
        })
        .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
    }
    Ok(())
}

/// Stage 3: append frames to packs; store each pack once it is full.
/// A pack this backup stored, and the index file that describes it.
pub(crate) struct StoredPack {
    pub pack: IndexedPack,
    pub index_file: Hash,
    index_size: u64,
}

/// Append frames to packs; finished packs are stored by `transfers` uploader threads while
/// the next pack fills (on an object store each upload is a round trip or several).
fn write_packs(
    repo: &Repository,
    staging: &Path,
    pack_size: u64,
    transfers: usize,
    rx: Receiver<StoredFrame>,
) -> Result<Vec<StoredPack>> {
    let done = std::sync::Mutex::new(Vec::new());
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let fail = |e: Error| {
        if let Ok(mut slot) = first_error.lock() {
            slot.get_or_insert(e);
        }
    };
    std::thread::scope(|s| {
        let (up_tx, up_rx) = bounded::<PackWriter>(transfers.max(1));
        for _ in 0..transfers.max(1) {
            let up_rx = up_rx.clone();
            let (done, fail) = (&done, &fail);
            s.spawn(move || {
                for w in up_rx {
                    match store_pack(repo, w) {
                        Ok(p) => {
                            if let Ok(mut d) = done.lock() {
                                d.push(p);
                            }
                        }
                        Err(e) => fail(e),
                    }
                }
            });
        }
        drop(up_rx);
        let mut current: Option<PackWriter> = None;
        let result = (|| -> Result<()> {
            for f in rx.iter() {
                if current.is_none() {
                    current = Some(PackWriter::create(staging)?);
                }
                if let Some(w) = current.as_mut() {
                    w.add_frame(&f.stored, f.raw_len, f.codec, f.blobs)?;
                    if w.len() >= pack_size {
                        if let Some(w) = current.take() {
                            up_tx
                                .send(w)
                                .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
                        }
                    }
                }
            }
            if let Some(w) = current.take() {
                up_tx
                    .send(w)
                    .map_err(|_| Error::internal(PIPELINE_STOPPED))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            if let Some(w) = current.take() {
                w.abandon();
            }
            fail(e);
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(done.into_inner().unwrap_or_default())
}

/// Store a finished pack, then at once the index file describing it: a backup interrupted
/// later still leaves its stored packs indexed, so the next run does not upload them again.
pub(crate) fn store_pack(repo: &Repository, w: PackWriter) -> Result<StoredPack> {
    let p = w.finish(|dir| repo.seal(ObjectKind::PackDirectory, b"", dir))?;
    let name = pack_object_name(&p.id);
    if !repo.storage().put_file_new(&name, &p.staged)? {
        existing_copy_intact(repo, &name, &p.id)?;
    }
    let pack = IndexedPack {
        id: p.id,
        size: p.size,
        frames: p.frames,
    };
    let data = repo.seal(
        ObjectKind::Index,
        b"",
        encode_index_file(std::slice::from_ref(&pack))?,
    )?;
    let index_file = Hash::of(&data);
    let index_name = index_object_name(&index_file);
    if !repo.storage().put_new(&index_name, &data)? {
        existing_copy_intact(repo, &index_name, &index_file)?;
    }
    Ok(StoredPack {
        pack,
        index_file,
        index_size: data.len() as u64,
    })
}

/// An object this backup stores already exists under its name, which is the hash of its
/// bytes: normally the very same bytes. But a damaged copy (say a truncated pack, whose pages
/// this backup stores again in an identical pack) keeps its name, and relying on it would
/// commit a backup that cannot be restored.
fn existing_copy_intact(repo: &Repository, name: &str, id: &Hash) -> Result<()> {
    if Hash::of(&repo.storage().get(name)?) == *id {
        return Ok(());
    }
    Err(Error::integrity(format!(
        "{name} is damaged (its content does not match its name) and this backup needs to \
         store it again; the backup was not committed"
    ))
    .hint(
        "move that file out of the repository (keep it if you want to investigate), then run \
         the backup again; `lifeboat repo check` lists the older backups it affects",
    ))
}

/// Read back every object this backup wrote and check it against its name: catches a write
/// that the storage acknowledged but did not keep, before the manifest makes it count.
pub(crate) fn check_written(
    repo: &Repository,
    packs: &[IndexedPack],
    index_files: &[Hash],
) -> Result<()> {
    let bad = |name: &str, why: &str| {
        Error::integrity(format!(
            "{name} did not read back intact ({why}); the backup was not committed"
        ))
        .hint("the storage may be failing; run `lifeboat repo check --read-data`")
    };
    for p in packs {
        let name = pack_object_name(&p.id);
        let data = repo.storage().get(&name)?;
        if data.len() as u64 != p.size {
            return Err(bad(&name, "wrong size"));
        }
        if Hash::of(&data) != p.id {
            return Err(bad(&name, "hash mismatch"));
        }
    }
    for id in index_files {
        let name = index_object_name(id);
        if Hash::of(&repo.storage().get(&name)?) != *id {
            return Err(bad(&name, "hash mismatch"));
        }
    }
    Ok(())
}

pub fn absolute(p: &Path) -> Result<PathBuf> {
    p.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(format!("{} does not exist", p.display()))
            .hint("check the path; `lifeboat demo` creates a sample database to try"),
        _ => crate::source::unreadable(p, "cannot resolve", e),
    })
}
