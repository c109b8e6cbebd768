//! Restore: manifest → page lists → blobs, each checked against its id (which pins every
//! byte of the image) → a new file, fsynced before it is renamed into place.
//!
//! Worker threads rebuild batches of pages (reading and decompressing the frames they need)
//! while this thread writes batches in order, so decompression and writing overlap.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::id::{Hash, Sha256Stream};
use crate::ops::backup::{backup, BackupOptions};
use crate::ops::VerifyLevel;
use crate::progress::Progress;
use crate::repo::compress::{Compression, Decompressor};
use crate::repo::index::Index;
use crate::repo::manifest::Manifest;
use crate::repo::pack::BlobKind;
use crate::repo::{check_blob, missing_blob, slice_blob, FrameCache, Repository};
use crate::source::sqlite::{check_is_sqlite, processes_using};
use crate::storage::local::{create_private_file, start_writeback, sync_dir};
use crossbeam_channel::bounded;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Pages per unit of work. Large enough that few frames straddle two workers' batches (each
/// would be decompressed twice), small enough to bound the frames held in flight.
const BATCH_BLOCKS: usize = 2048;
/// Decompressed frames each worker keeps: pages of one backup are mostly stored in order, so
/// a few suffice, and each pinned frame is 1 MiB of memory per worker.
const FRAME_CACHE: usize = 4;
/// Bytes per `writev`: large write calls into the page cache cost 4-10x more kernel time per
/// byte on the machines measured here.
const WRITE_BYTES: usize = 128 << 10;

/// A checked page, still inside its decompressed frame: workers hand pages to the writer
/// without copying them.
struct Piece {
    frame: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        &self.frame[self.start..self.start + self.len]
    }
}

/// Write pieces in order with `writev`, merging neighbours from the same frame.
fn write_pieces(out: &mut File, pieces: &[Piece]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice> = Vec::with_capacity(64);
    let mut pending = 0usize;
    let mut run: Option<(&Piece, usize)> = None; // first piece of the run, run length
    let flush = |slices: &mut Vec<std::io::IoSlice>, out: &mut File| -> std::io::Result<()> {
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = out.write_vectored(bufs)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            std::io::IoSlice::advance_slices(&mut bufs, n);
        }
        slices.clear();
        Ok(())
    };
    for p in pieces {
        let extends = run.is_some_and(|(first, len)| {
            Arc::ptr_eq(&first.frame, &p.frame) && first.start + len == p.start
        });
        match run.as_mut() {
            Some((_, len)) if extends => *len += p.len,
            _ => {
                if let Some((first, len)) = run.take() {
                    slices.push(std::io::IoSlice::new(
                        &first.frame[first.start..first.start + len],
                    ));
                }
                run = Some((p, p.len));
            }
        }
        pending += p.len;
        if pending >= WRITE_BYTES {
            if let Some((first, len)) = run.take() {
                slices.push(std::io::IoSlice::new(
                    &first.frame[first.start..first.start + len],
                ));
            }
            flush(&mut slices, out)?;
            pending = 0;
        }
    }
    if let Some((first, len)) = run.take() {
        slices.push(std::io::IoSlice::new(
            &first.frame[first.start..first.start + len],
        ));
    }
    flush(&mut slices, out)
}

pub struct ImageStats {
    pub bytes: u64,
    pub blocks: u64,
    /// SHA-256 of the image, when asked for.
    pub sha256: Option<String>,
}

/// Every id in the backup's page lists, in order, in batches.
fn for_each_id_batch(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    f: &mut dyn FnMut(Vec<Hash>) -> Result<()>,
) -> Result<()> {
    let mut batch = Vec::with_capacity(BATCH_BLOCKS);
    let mut cache = FrameCache::default();
    for list_hex in &m.content.lists {
        let list_id = Hash::from_hex(list_hex)?;
        let list = repo.read_blob_cached(index, &list_id, &mut cache)?;
        if list.len() % 32 != 0 {
            return Err(Error::integrity(format!(
                "page list {} is malformed",
                list_id.short()
            )));
        }
        for chunk in list.chunks_exact(32) {
            let mut h = [0u8; 32];
            h.copy_from_slice(chunk);
            batch.push(Hash(h));
            if batch.len() == BATCH_BLOCKS {
                f(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(BATCH_BLOCKS),
                ))?;
            }
        }
    }
    if !batch.is_empty() {
        f(batch)?;
    }
    Ok(())
}

/// Rebuild the database image of `m` into `out`, checking every blob against its id: with
/// the ids of the page lists checked too, the manifest's list of list ids pins every byte,
/// so a restore needs no whole-image checksum. `image_sha256` also computes the SHA-256
/// recorded at backup time (what `verify` reports), at ~1 s per GiB on its own thread.
pub fn write_image(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    out: &mut File,
    out_path: &Path,
    image_sha256: bool,
    progress: &Progress,
) -> Result<ImageStats> {
    if m.content.kind != "pages" {
        return Err(Error::usage(format!(
            "backup {} holds '{}' content, which this lifeboat cannot restore",
            m.id, m.content.kind
        )));
    }
    let block_size = m.content.block_size as usize;
    let workers = repo.storage().read_parallelism().clamp(1, 8);
    progress.start("restore", m.content.blocks * block_size as u64);
    let mut blocks = 0u64;
    let sha256 = std::thread::scope(|s| -> Result<Option<String>> {
        // The SHA-256 runs beside the writer: both are sequential, and together on one thread
        // they were the slowest stage.
        let (sha_tx, sha_rx) = bounded::<Vec<Piece>>(2);
        let hasher = image_sha256.then(|| {
            s.spawn(move || {
                let mut sha = Sha256Stream::default();
                for batch in sha_rx {
                    for p in &batch {
                        sha.update(p.bytes());
                    }
                }
                sha.finish_hex()
            })
        });
        let (job_tx, job_rx) = bounded::<(u64, Vec<Hash>)>(workers);
        let (done_tx, done_rx) = bounded::<(u64, Result<Vec<Piece>>)>(workers);
        let planner = s.spawn(move || {
            let mut n = 0u64;
            for_each_id_batch(repo, index, m, &mut |batch| {
                job_tx
                    .send((n, batch))
                    .map_err(|_| Error::internal("restore stopped"))?;
                n += 1;
                Ok(())
            })
        });
        for _ in 0..workers {
            let rx = job_rx.clone();
            let tx = done_tx.clone();
            s.spawn(move || {
                let mut cache: Vec<(u32, Arc<Vec<u8>>)> = Vec::new();
                let mut dec = Decompressor::default();
                for (n, ids) in rx {
                    let r = build_batch(repo, index, &ids, block_size, &mut cache, &mut dec);
                    let failed = r.is_err();
                    if tx.send((n, r)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        let mut waiting: BTreeMap<u64, Vec<Piece>> = BTreeMap::new();
        let mut next = 0u64;
        let mut failure = None;
        for (n, r) in done_rx.iter() {
            match r {
                Ok(bytes) => {
                    waiting.insert(n, bytes);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            while let Some(batch) = waiting.remove(&next) {
                write_pieces(out, &batch).ctx("cannot write", out_path)?;
                start_writeback(
                    out,
                    blocks * block_size as u64,
                    (batch.len() * block_size) as u64,
                );
                blocks += batch.len() as u64;
                progress.inc((batch.len() * block_size) as u64);
                if hasher.is_some() {
                    sha_tx
                        .send(batch)
                        .map_err(|_| Error::internal("SHA-256 thread stopped"))?;
                }
                next += 1;
            }
        }
        drop((done_rx, sha_tx));
        let sha256 = match hasher {
            Some(h) => Some(
                h.join()
                    .map_err(|_| Error::internal("SHA-256 thread panicked"))?,
            ),
            None => None,
        };
        let planned = planner
            .join()
            .unwrap_or_else(|_| Err(Error::internal("restore planner panicked")));
        if let Some(e) = failure {
            return Err(e);
        }
        planned?;
        if !waiting.is_empty() {
            return Err(Error::internal("restore lost a batch"));
        }
        Ok(sha256)
    })?;
    progress.finish();
    if blocks != m.content.blocks {
        return Err(Error::integrity(format!(
            "backup {} lists {} pages but its manifest says {}",
            m.id, blocks, m.content.blocks
        )));
    }
    Ok(ImageStats {
        bytes: blocks * block_size as u64,
        blocks,
        sha256,
    })
}

fn build_batch(
    repo: &Repository,
    index: &Index,
    ids: &[Hash],
    block_size: usize,
    cache: &mut Vec<(u32, Arc<Vec<u8>>)>,
    dec: &mut Decompressor,
) -> Result<Vec<Piece>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let loc = index.get(id).ok_or_else(|| missing_blob(index, id))?;
        if loc.kind != BlobKind::Data || loc.len as usize != block_size {
            return Err(Error::integrity(format!(
                "blob {} is not a {block_size}-byte page",
                id.short()
            )));
        }
        let frame = match cache.iter().position(|(f, _)| *f == loc.frame) {
            Some(i) => cache[i].1.clone(),
            None => {
                let data = Arc::new(repo.read_frame_with(index, loc.frame, dec)?);
                // A handful of frames is enough: pages of one backup are mostly stored in order.
                if cache.len() == FRAME_CACHE {
                    cache.remove(0);
                }
                cache.push((loc.frame, data.clone()));
                data
            }
        };
        let blob = slice_blob(&frame, loc)?;
        check_blob(index, repo.hasher(), id, loc, blob)?;
        out.push(Piece {
            frame,
            start: loc.offset as usize,
            len: loc.len as usize,
        });
    }
    Ok(out)
}

/// A temporary file beside `target`, removed on drop unless kept.
pub struct TempFile {
    pub path: PathBuf,
    pub file: Option<File>,
    keep: bool,
}

impl TempFile {
    pub fn beside(target: &Path) -> Result<TempFile> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "restore".into());
        Self::in_dir(dir, &name)
    }

    pub fn in_dir(dir: &Path, name: &str) -> Result<TempFile> {
        if !dir.is_dir() {
            return Err(
                Error::not_found(format!("folder {} does not exist", dir.display()))
                    .hint("create it first, or choose another path"),
            );
        }
        let path = dir.join(format!(
            ".{name}.lifeboat-{:08x}.tmp",
            rand::random::<u32>()
        ));
        let file = create_private_file(&path)?;
        Ok(TempFile {
            path,
            file: Some(file),
            keep: false,
        })
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
    }
}

/// Rebuild into a temp file beside `target`, check the SHA-256 and fsync. The caller renames.
fn rebuild_beside(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    target: &Path,
    progress: &Progress,
) -> Result<(TempFile, ImageStats)> {
    let mut tmp = TempFile::beside(target)?;
    let path = tmp.path.clone();
    let file = tmp
        .file
        .as_mut()
        .ok_or_else(|| Error::internal("temp file closed"))?;
    let started = std::time::Instant::now();
    let stats = write_image(repo, index, m, file, &path, false, progress)?;
    tracing::info!(elapsed = ?started.elapsed(), "image written and checked");
    file.sync_all().ctx("cannot sync", &path)?;
    tracing::info!(elapsed = ?started.elapsed(), "image synced to disk");
    Ok((tmp, stats))
}

pub struct RestoreOutcome {
    pub backup_id: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// Id of the safety backup taken before an in-place restore.
    pub safety_backup: Option<String>,
    /// Where the old files were moved when no safety backup could be taken.
    pub moved_aside: Vec<PathBuf>,
}

/// Restore to a new file that needs no Lifeboat to open.
pub fn restore_to_file(
    repo: &Repository,
    m: &Manifest,
    output: &Path,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    if output.exists() {
        return Err(Error::usage(format!("{} already exists", output.display()))
            .hint("choose another --output, or use --db to replace a database in place"));
    }
    let index = repo.load_index()?;
    let (mut tmp, stats) = rebuild_beside(repo, &index, m, output, progress)?;
    // link(2) rather than rename(2): a file that appeared meanwhile is never replaced.
    std::fs::hard_link(&tmp.path, output).map_err(|e| Error::io("cannot create", output, e))?;
    std::fs::remove_file(&tmp.path).ctx("cannot remove", &tmp.path)?;
    tmp.keep();
    sync_parent(output)?;
    Ok(RestoreOutcome {
        backup_id: m.id.clone(),
        path: output.to_path_buf(),
        bytes: stats.bytes,
        safety_backup: None,
        moved_aside: Vec::new(),
    })
}

fn sync_parent(p: &Path) -> Result<()> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Refuse when another process has the database open, naming it.
pub fn ensure_not_in_use(db: &Path) -> Result<()> {
    let users = processes_using(db);
    if users.is_empty() {
        return Ok(());
    }
    let who: Vec<String> = users
        .iter()
        .map(|(pid, name)| format!("{name} (pid {pid})"))
        .collect();
    Err(Error::new(
        ErrorKind::InUse,
        format!("{} is open by {}", db.display(), who.join(", ")),
    )
    .hint("stop the application that uses it, then run the restore again"))
}

/// Replace a database in place: safety backup of the current one, rebuild beside it,
/// verify, fsync, remove stale `-wal`/`-shm`/`-journal`, rename into place.
pub fn restore_in_place(
    repo: &Repository,
    m: &Manifest,
    db: &Path,
    compression: Compression,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let exists = db.exists();
    if exists {
        ensure_not_in_use(db)?;
    }
    let mut safety_backup = None;
    let mut moved_aside = Vec::new();
    if exists {
        let safety = backup(
            repo,
            &BackupOptions {
                database: db.to_path_buf(),
                description: Some(format!("before restoring backup {}", m.id)),
                tags: vec!["pre-restore".into()],
                trigger: "pre-restore".into(),
                compression,
                verify: VerifyLevel::Written,
                progress: progress.clone(),
                transfers: crate::ops::backup::DEFAULT_TRANSFERS,
                time: None,
            },
        );
        match safety {
            Ok(o) => safety_backup = Some(o.manifest.id),
            // A damaged database is the usual reason to restore: keep its files instead.
            Err(e) if e.kind == ErrorKind::Source => {
                tracing::warn!("no safety backup of {}: {e}", db.display());
            }
            Err(e) => {
                return Err(Error::new(
                    e.kind,
                    format!("the safety backup of {} failed: {e}", db.display()),
                )
                .hint(
                    "nothing was changed; fix the cause, or restore to a new file with --output",
                ))
            }
        }
    }
    let index = repo.load_index()?;
    let (mut tmp, stats) = rebuild_beside(repo, &index, m, db, progress)?;
    if let Ok(meta) = std::fs::metadata(db) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let _ = std::fs::set_permissions(
            &tmp.path,
            std::fs::Permissions::from_mode(meta.mode() & 0o7777),
        );
        let _ = std::os::unix::fs::chown(&tmp.path, Some(meta.uid()), Some(meta.gid()));
    }
    if exists {
        ensure_not_in_use(db)?;
    }
    if exists && safety_backup.is_none() {
        let stamp = jiff::Timestamp::now().as_second();
        for suffix in ["", "-wal", "-journal"] {
            let from = sidecar(db, suffix);
            if from.exists() {
                // `<db>.lifeboat-old-N` keeps its sidecars as `<db>.lifeboat-old-N-wal` etc.,
                // so SQLite still pairs them when the kept copy is opened.
                let to = sidecar(db, &format!(".lifeboat-old-{stamp}{suffix}"));
                std::fs::rename(&from, &to).ctx("cannot move aside", &from)?;
                moved_aside.push(to);
            }
        }
    }
    // Stale sidecars would be replayed into (or roll back) the new file: remove them first.
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = sidecar(db, suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &p, e)),
        }
    }
    std::fs::rename(&tmp.path, db).ctx("cannot move restored database into place at", db)?;
    tmp.keep();
    sync_parent(db)?;
    Ok(RestoreOutcome {
        backup_id: m.id.clone(),
        path: db.to_path_buf(),
        bytes: stats.bytes,
        safety_backup,
        moved_aside,
    })
}

/// Whether `db` looks like a database we may replace (used to word confirmations).
pub fn describe_target(db: &Path) -> String {
    match check_is_sqlite(db) {
        Ok(()) => format!("the SQLite database {}", db.display()),
        Err(_) if db.exists() => format!("the file {}", db.display()),
        Err(_) => format!("{} (new file)", db.display()),
    }
}
