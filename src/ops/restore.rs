//! Restore: manifest → page lists → blobs, each checked against its id (which pins every
//! byte of the image) → a new file, fsynced before it is renamed into place.
//!
//! Pages are restored in *storage order*: the image is taken in chunks (`CHUNK_BLOCKS`
//! pages), and a chunk's pages are sorted by where they are stored (pack, frame, offset), so
//! each frame a chunk needs is loaded once, however scattered its pages are in the image (a
//! database backed up for weeks and repacked by prune has its pages in frames of many days,
//! and image order then loaded a 1 MiB frame for nearly every 4 KiB page). Each page is
//! written at its place in the image with positional writes.
//!
//! Four stages overlap, connected by bounded queues:
//! * a planner thread walks the page lists, cuts each sorted chunk into batches of pages,
//!   and decides which frame each page is read from: a frame is *loaded* (read and
//!   decompressed) once and serves the pages that follow until it drops out of a small cache.
//!   It gathers the loads of each pack into *fetches*, so frames that lie together are read
//!   with one request;
//! * reader threads run the fetches: one ranged read per fetch, streamed and decompressed
//!   frame by frame, each frame published for the workers as soon as it is ready;
//! * worker threads check each page of a batch against its id, as its frame arrives;
//! * this thread writes the batches, in the order planned, each page at its place. The
//!   image's SHA-256, when asked for, is computed by reading the finished file back.
//!
//! Memory is bounded by the batches between the planner and the writer (`IN_FLIGHT`): each
//! pins the frames its pages come from until it is written, and fetches only ever hold the
//! frames of batches already planned.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::id::{Hash, Sha256Stream};
use crate::ops::backup::{backup, BackupOptions};
use crate::ops::VerifyLevel;
use crate::progress::Progress;
use crate::repo::compress::{BufferPool, Compression, Decompressor};
use crate::repo::index::{BlobLoc, Index};
use crate::repo::manifest::{Content, Manifest};
use crate::repo::pack::BlobKind;
use crate::repo::{check_blob, missing_blob, slice_blob, Repository};
use crate::source::sqlite::{check_is_sqlite, processes_using};
use crate::storage::local::{create_private_file, start_writeback, sync_dir};
use crossbeam_channel::bounded;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Pages of the image sorted into storage order at a time: 256 MiB of 4 KiB pages, with 4 MiB
/// of ids and places.
const CHUNK_BLOCKS: usize = 64 << 10;
/// Pages per unit of work: enough that a batch's frames are read with few requests, few
/// enough to bound the frames held in flight.
const BATCH_BLOCKS: usize = 2048;
/// Most frames one batch loads. A batch whose pages come from many frames is cut short, so
/// its memory stays bounded (each load is a 1 MiB decompressed frame).
const BATCH_LOADS: usize = 8;
/// Decompressed frames kept for later pages. Pages of one backup are stored in order, so the
/// pages of an image come from a few frames at a time (one per backup that wrote pages in
/// the region).
const FRAME_CACHE: usize = 16;
/// Batches between the planner and the writer, per reader thread. Each batch pins the frames
/// of its pages until it is written, so frames in memory are at most `FRAME_CACHE` +
/// (batches + 1) x `BATCH_LOADS`: 120 MiB with the 4 readers of an object store (and up to
/// 16 spare buffers, `BufferPool`).
const IN_FLIGHT_PER_READER: usize = 3;
/// Batches a fetch may wait for more frames of its pack before it is sent, with `in_flight`
/// batches between planner and writer: long enough for few, long requests (a local S3
/// server spends ~4 ms of CPU per GET, whatever its size), short enough that the frames
/// arrive before they are needed. At most `in_flight`, or the planner could wait for the
/// writer to finish a batch whose frames it has not sent.
fn fetch_ahead(in_flight: usize) -> u64 {
    (in_flight as u64 * 2 / 3).max(1)
}
/// Span of a pack after which a fetch is sent without waiting.
const FETCH_BYTES: u64 = 32 << 20;
/// Frames of page lists read at a time (each list blob lies in one frame).
const LIST_FRAMES: usize = 2;
/// Bytes per `writev`: large write calls into the page cache cost 4-10x more kernel time per
/// byte on the machines measured here.
const WRITE_BYTES: usize = 128 << 10;

/// A decompressed frame. Its buffer goes back to the pool once no page needs it.
struct Frame {
    data: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

/// A checked page, still inside its decompressed frame: workers hand pages to the writer
/// without copying them.
struct Piece {
    /// Where it goes in the image.
    pos: u64,
    frame: Arc<Frame>,
    start: usize,
    len: usize,
}

/// Write pieces at their places with `pwritev`: one call per run of adjacent places (at
/// most `WRITE_BYTES`), merging neighbours that lie together in one frame. Returns the span
/// of the image written, (start, end).
fn write_pieces_at(out: &File, pieces: &mut [Piece]) -> std::io::Result<(u64, u64)> {
    pieces.sort_unstable_by_key(|p| p.pos);
    let span = match (pieces.first(), pieces.last()) {
        (Some(a), Some(b)) => (a.pos, b.pos + b.len as u64),
        _ => (0, 0),
    };
    let mut slices: Vec<std::io::IoSlice> = Vec::with_capacity(64);
    let mut i = 0;
    while i < pieces.len() {
        let start = pieces[i].pos;
        let mut end = start + pieces[i].len as u64;
        let mut j = i + 1;
        while j < pieces.len()
            && pieces[j].pos == end
            && end + pieces[j].len as u64 - start <= WRITE_BYTES as u64
        {
            end += pieces[j].len as u64;
            j += 1;
        }
        let mut k = i;
        while k < j {
            let p = &pieces[k];
            let mut len = p.len;
            k += 1;
            while k < j
                && Arc::ptr_eq(&pieces[k].frame, &p.frame)
                && pieces[k].start == p.start + len
            {
                len += pieces[k].len;
                k += 1;
            }
            slices.push(std::io::IoSlice::new(&p.frame[p.start..p.start + len]));
        }
        pwrite_all(out, &mut slices, start)?;
        slices.clear();
        i = j;
    }
    Ok(span)
}

/// `pwritev` until every slice is written.
fn pwrite_all(out: &File, slices: &mut [std::io::IoSlice], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut bufs = slices;
    while !bufs.is_empty() {
        let count = bufs.len().min(1024) as libc::c_int;
        // SAFETY: `IoSlice` has the layout of `iovec` on Unix, and the slices outlive the call.
        let n = unsafe {
            libc::pwritev(
                out.as_raw_fd(),
                bufs.as_ptr() as *const libc::iovec,
                count,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        std::io::IoSlice::advance_slices(&mut bufs, n as usize);
    }
    Ok(())
}

/// SHA-256 of the first `len` bytes of a file, read back sequentially.
fn sha256_of_file(file: &File, len: u64) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut sha = Sha256Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        sha.update(&buf[..n]);
        at += n as u64;
    }
    Ok(sha.finish_hex())
}

pub struct ImageStats {
    pub bytes: u64,
    pub blocks: u64,
    /// SHA-256 of the image, when asked for.
    pub sha256: Option<String>,
}

/// Every id in the backup's page lists, in order. The lists' frames are read a few at a
/// time, with as few requests as their places in the packs allow.
pub(crate) fn for_each_id(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    f: &mut dyn FnMut(Hash) -> Result<()>,
) -> Result<()> {
    let lists = m
        .content
        .lists()
        .iter()
        .map(|hex| Hash::from_hex(hex))
        .collect::<Result<Vec<Hash>>>()?;
    let mut dec = Decompressor::default();
    let hasher = repo.hasher();
    let mut rest = &lists[..];
    while !rest.is_empty() {
        // The next lists, as many as lie in LIST_FRAMES frames.
        let mut frames: Vec<u32> = Vec::with_capacity(LIST_FRAMES);
        let mut take = 0;
        for id in rest {
            let Some(loc) = index.get(id) else {
                break; // reported when it is the next list to read
            };
            if !frames.contains(&loc.frame) {
                if frames.len() == LIST_FRAMES {
                    break;
                }
                frames.push(loc.frame);
            }
            take += 1;
        }
        // A first list missing from the index is taken alone, and reported below.
        let (now, later) = rest.split_at(take.max(1));
        let mut read: HashMap<u32, Vec<u8>> = HashMap::with_capacity(frames.len());
        repo.read_frames_with(index, &frames, &mut dec, &mut |n, data| {
            read.insert(n, data);
            Ok(())
        })?;
        for list_id in now {
            let loc = index
                .get(list_id)
                .ok_or_else(|| missing_blob(index, list_id))?;
            let frame = read
                .get(&loc.frame)
                .ok_or_else(|| Error::internal("a page list's frame was not read"))?;
            let checked = slice_blob(frame, loc)
                .and_then(|list| check_blob(index, &hasher, list_id, loc, list).map(|()| list));
            // A replica, or another copy the index knows of, may hold it intact.
            let alternate;
            let list = match checked {
                Ok(list) => list,
                Err(e) => {
                    alternate = repo.read_blob_elsewhere(index, list_id, &mut dec, e)?;
                    &alternate[..]
                }
            };
            if list.len() % 32 != 0 {
                return Err(Error::integrity(format!(
                    "page list {} is malformed",
                    list_id.short()
                )));
            }
            for chunk in list.chunks_exact(32) {
                let mut h = [0u8; 32];
                h.copy_from_slice(chunk);
                f(Hash(h))?;
            }
        }
        rest = later;
    }
    Ok(())
}

/// One page of the image: its place, its id, where it lies, and which load of its frame it
/// uses.
struct PageRef {
    pos: u64,
    id: Hash,
    loc: BlobLoc,
    load: u64,
}

/// A unit of work for the workers: pages in storage order, and the loads that no later batch
/// uses, freed once this batch is written.
#[derive(Default)]
struct Job {
    pages: Vec<PageRef>,
    retire: Vec<u64>,
    /// Loads this batch makes (first uses), to cut batches that would hold too many frames.
    loads: usize,
}

/// Frame loads for a reader, (load, frame): frames of one pack, read with one request (or
/// a few, where the frames have large gaps between them).
#[derive(Default)]
struct Fetch {
    loads: Vec<(u64, u32)>,
}

/// A fetch being gathered: its pack, the span of the pack it reads, and the first batch that
/// needs it.
struct Gathering {
    pack: u32,
    start: u64,
    end: u64,
    first_job: u64,
    fetch: Fetch,
}

/// Cuts the image's pages into jobs, and decides which frames are loaded when and with
/// which request. It keeps the frame numbers of the last `FRAME_CACHE` loads: a page in one
/// of them uses that load, any other page makes a new load, and the least recently used load
/// is retired. New loads join the fetch gathered for their pack; a fetch is sent when it
/// spans `FETCH_BYTES` of the pack, or `fetch_ahead` batches after the first batch that needs
/// it.
struct Planner<'a> {
    index: &'a Index,
    /// Pages of one size (content `pages`), or chunks of any size (`stream`).
    block_size: Option<usize>,
    fetch_ahead: u64,
    /// (frame, load), least recently used first.
    cache: Vec<(u32, u64)>,
    loads: u64,
    job: Job,
    /// Number of the job being built.
    jobs: u64,
    gathering: Vec<Gathering>,
    /// Fetches ready to send, in the order they were closed.
    ready: Vec<Fetch>,
}

impl<'a> Planner<'a> {
    fn new(index: &'a Index, block_size: Option<usize>, fetch_ahead: u64) -> Self {
        Planner {
            index,
            block_size,
            fetch_ahead,
            cache: Vec::with_capacity(FRAME_CACHE),
            loads: 0,
            job: Job::default(),
            jobs: 0,
            gathering: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Where a page lies, checking that it is one.
    fn locate(&self, id: &Hash) -> Result<BlobLoc> {
        let loc = *self
            .index
            .get(id)
            .ok_or_else(|| missing_blob(self.index, id))?;
        match self.block_size {
            _ if loc.kind != BlobKind::Data => Err(Error::integrity(format!(
                "blob {} is not a page or chunk of data",
                id.short()
            ))),
            Some(block) if loc.len as usize != block => Err(Error::integrity(format!(
                "blob {} is not a {block}-byte page",
                id.short()
            ))),
            _ => Ok(()),
        }?;
        Ok(loc)
    }

    /// Plan a chunk of the image, (place, id, where it lies), in storage order, handing each
    /// finished job and the fetches that became ready to `send`. Leaves `chunk` empty.
    fn add_chunk(
        &mut self,
        chunk: &mut Vec<(u64, Hash, BlobLoc)>,
        send: &mut dyn FnMut(Option<Job>, Vec<Fetch>) -> Result<()>,
    ) -> Result<()> {
        let frames = &self.index.frames;
        // Sorted only when that saves loads: a chunk of a fresh backup already comes in
        // storage order, and kept in image order it is written sequentially (measured ~20%
        // faster from S3 than the same pages sorted).
        if loads_in_order(chunk.iter().map(|c| c.2.frame)) > 2 * distinct_frames(chunk) {
            chunk.sort_unstable_by_key(|&(pos, _, loc)| {
                let f = &frames[loc.frame as usize];
                (f.pack, f.offset, loc.offset, pos)
            });
        }
        for (pos, id, loc) in chunk.drain(..) {
            let job = self.add(pos, id, loc);
            send(job, self.take_fetches())?;
        }
        Ok(())
    }

    /// Add the next page; returns a finished job, if this page completed or cut one. Fetches
    /// may become ready too (`take_fetches`).
    fn add(&mut self, pos: u64, id: Hash, loc: BlobLoc) -> Option<Job> {
        let mut done = None;
        let load = match self.cache.iter().rposition(|&(f, _)| f == loc.frame) {
            Some(i) => {
                let hit = self.cache.remove(i);
                self.cache.push(hit);
                hit.1
            }
            None => {
                if self.job.loads >= BATCH_LOADS {
                    done = Some(self.close_job());
                }
                self.new_load(loc.frame)
            }
        };
        self.job.pages.push(PageRef { pos, id, loc, load });
        if done.is_none() && self.job.pages.len() >= BATCH_BLOCKS {
            done = Some(self.close_job());
        }
        done
    }

    fn new_load(&mut self, frame: u32) -> u64 {
        let load = self.loads;
        self.loads += 1;
        if self.cache.len() >= FRAME_CACHE {
            let (_, old) = self.cache.remove(0);
            self.job.retire.push(old);
        }
        self.cache.push((frame, load));
        self.job.loads += 1;
        self.gather(load, frame);
        load
    }

    /// Add a load to the fetch gathered for its pack, or start one. Frames of one pack are
    /// needed in nearly, not exactly, the order they are stored (a backup compresses frames on
    /// several threads), so a fetch takes any frame of its pack, and its reader sorts them.
    fn gather(&mut self, load: u64, frame: u32) {
        let f = &self.index.frames[frame as usize];
        let (start, end) = (f.offset, f.offset + u64::from(f.stored_len));
        let i = match self.gathering.iter().position(|g| g.pack == f.pack) {
            Some(i) => i,
            None => {
                self.gathering.push(Gathering {
                    pack: f.pack,
                    start,
                    end,
                    first_job: self.jobs,
                    fetch: Fetch::default(),
                });
                self.gathering.len() - 1
            }
        };
        let g = &mut self.gathering[i];
        g.start = g.start.min(start);
        g.end = g.end.max(end);
        g.fetch.loads.push((load, frame));
        if g.end - g.start >= FETCH_BYTES {
            let g = self.gathering.remove(i);
            self.ready.push(g.fetch);
        }
    }

    /// End the job being built, and send the fetches that have waited `fetch_ahead` batches.
    fn close_job(&mut self) -> Job {
        let jobs = self.jobs;
        let (due, keep): (Vec<Gathering>, Vec<Gathering>) = std::mem::take(&mut self.gathering)
            .into_iter()
            .partition(|g| g.first_job + self.fetch_ahead <= jobs);
        self.gathering = keep;
        self.ready.extend(due.into_iter().map(|g| g.fetch));
        self.jobs += 1;
        std::mem::take(&mut self.job)
    }

    fn take_fetches(&mut self) -> Vec<Fetch> {
        std::mem::take(&mut self.ready)
    }

    /// The last job, which retires every load still kept, and the last fetches.
    fn finish(mut self) -> (Option<Job>, Vec<Fetch>) {
        tracing::debug!(
            "restore plan: {} batches, {} frame loads",
            self.jobs + 1,
            self.loads
        );
        let job = (!self.job.pages.is_empty()).then(|| {
            let mut job = std::mem::take(&mut self.job);
            job.retire
                .extend(self.cache.drain(..).map(|(_, load)| load));
            job
        });
        let mut fetches = self.take_fetches();
        fetches.extend(self.gathering.drain(..).map(|g| g.fetch));
        (job, fetches)
    }
}

/// A load's outcome, as the workers see it.
enum Loaded {
    Frame(Arc<Frame>),
    /// The load failed: the batches that need it fail with this error.
    Failed(Error),
}

/// Decompressed frames by load number, shared by all threads: readers publish them, workers
/// wait for them, and the writer retires them once no batch needs them.
struct Loads {
    state: Mutex<LoadsState>,
    published: Condvar,
    /// Buffers of retired frames, for the readers to decompress into.
    pool: Arc<BufferPool>,
}

struct LoadsState {
    frames: HashMap<u64, Loaded>,
    /// Reader threads still running: once none is, a load not yet published never will be.
    readers: usize,
}

impl Loads {
    fn new(readers: usize) -> Self {
        Loads {
            state: Mutex::new(LoadsState {
                frames: HashMap::new(),
                readers,
            }),
            published: Condvar::new(),
            pool: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadsState> {
        // A thread that panicked holding the lock leaves a usable map: keep going (that
        // thread's loads are published as failed).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, load: u64, outcome: Loaded) {
        self.lock().frames.insert(load, outcome);
        self.published.notify_all();
    }

    fn wait(&self, load: u64) -> Result<Arc<Frame>> {
        let mut state = self.lock();
        loop {
            match state.frames.get(&load) {
                Some(Loaded::Frame(f)) => return Ok(f.clone()),
                Some(Loaded::Failed(e)) => return Err(e.clone()),
                None if state.readers == 0 => {
                    return Err(Error::internal("the restore readers stopped"))
                }
                None => {
                    state = self
                        .published
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }

    fn retire(&self, loads: &[u64]) {
        let mut state = self.lock();
        for load in loads {
            state.frames.remove(load);
        }
    }
}

/// Held by each reader thread: when the last one ends, however it ends, workers still
/// waiting for a frame are woken with an error instead of waiting forever.
struct ReaderAlive<'a>(&'a Loads);

impl Drop for ReaderAlive<'_> {
    fn drop(&mut self) {
        self.0.lock().readers -= 1;
        self.0.published.notify_all();
    }
}

/// The loads of a fetch still to publish: whatever ends the fetch early (an error, a panic)
/// publishes them as failed, so no worker waits for them forever.
struct Pending<'a> {
    loads: &'a Loads,
    left: Vec<(u64, u32)>,
    why: Error,
}

impl Pending<'_> {
    fn publish(&mut self, frame: u32, data: Vec<u8>) {
        let data = Arc::new(Frame {
            data,
            pool: self.loads.pool.clone(),
        });
        self.left.retain(|&(load, f)| {
            if f == frame {
                self.loads.publish(load, Loaded::Frame(data.clone()));
            }
            f != frame
        });
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for &(load, _) in &self.left {
            self.loads.publish(load, Loaded::Failed(self.why.clone()));
        }
    }
}

/// Read, decompress and publish the frames of one fetch; a frame that cannot be read is
/// published as failed, for the batches that need it to report.
fn run_fetch(
    repo: &Repository,
    index: &Index,
    fetch: Fetch,
    loads: &Loads,
    dec: &mut Decompressor,
) {
    let frames: Vec<u32> = fetch.loads.iter().map(|&(_, frame)| frame).collect();
    let mut pending = Pending {
        loads,
        left: fetch.loads,
        why: Error::internal("a restore reader stopped"),
    };
    let read = repo.read_frames_with(index, &frames, dec, &mut |frame, data| {
        pending.publish(frame, data);
        Ok(())
    });
    if let Err(e) = read {
        pending.why = e;
    }
}

/// A built batch: its pages, and the loads to retire once it is written.
struct Built {
    pieces: Vec<Piece>,
    retire: Vec<u64>,
}

/// Rebuild the database image of `m` into `out`, checking every blob against its id: with
/// the ids of the page lists checked too, the manifest's list of list ids pins every byte,
/// so a restore needs no whole-image checksum. `image_sha256` also computes the SHA-256
/// recorded at backup time (what `verify` reports), reading the finished file back (~1 s per
/// GiB).
pub fn write_image(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    out: &mut File,
    out_path: &Path,
    image_sha256: bool,
    progress: &Progress,
) -> Result<ImageStats> {
    let (block_size, items) = match &m.content {
        Content::Pages {
            block_size, blocks, ..
        } => (Some(*block_size as usize), *blocks),
        Content::Stream { chunks, .. } => (None, *chunks),
        other => {
            return Err(Error::usage(format!(
                "backup {} holds '{}' content, which is not restored as one file",
                m.id,
                other.kind()
            )))
        }
    };
    let image_bytes = m.logical_bytes();
    // Readers wait on requests and decompress; workers check pages, which is CPU work only.
    let readers = repo.storage().read_parallelism().clamp(1, 8);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    progress.start("restore", image_bytes);
    let mut blocks = 0u64;
    let mut written = 0u64;
    let loads = Loads::new(readers);
    // Set when the planner stops because a later stage did: its error is then not the cause.
    let stopped = &AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        // The planner takes a ticket per batch and the writer returns it once the batch is
        // written: that bounds the batches (and so the frames) in memory.
        let in_flight = (IN_FLIGHT_PER_READER * readers).max(workers);
        let (ticket_tx, ticket_rx) = bounded::<()>(in_flight);
        for _ in 0..in_flight {
            let _ = ticket_tx.send(());
        }
        let (job_tx, job_rx) = bounded::<(u64, Job)>(in_flight);
        let (fetch_tx, fetch_rx) = crossbeam_channel::unbounded::<Fetch>();
        let (done_tx, done_rx) = bounded::<(u64, Result<Built>)>(in_flight);
        let planner = s.spawn(move || {
            let mut n = 0u64;
            let mut send = |job: Option<Job>, fetches: Vec<Fetch>| -> Result<()> {
                let stop = || {
                    stopped.store(true, Ordering::Relaxed);
                    Error::internal("restore stopped")
                };
                for fetch in fetches {
                    fetch_tx.send(fetch).map_err(|_| stop())?;
                }
                if let Some(job) = job {
                    ticket_rx.recv().map_err(|_| stop())?;
                    job_tx.send((n, job)).map_err(|_| stop())?;
                    n += 1;
                }
                Ok(())
            };
            let mut plan = Planner::new(index, block_size, fetch_ahead(in_flight));
            let mut chunk = Vec::with_capacity(CHUNK_BLOCKS.min(items as usize));
            let mut pos = 0u64;
            for_each_id(repo, index, m, &mut |id| {
                let loc = plan.locate(&id)?;
                chunk.push((pos, id, loc));
                pos += u64::from(loc.len);
                if chunk.len() >= CHUNK_BLOCKS {
                    plan.add_chunk(&mut chunk, &mut send)?;
                }
                Ok(())
            })?;
            plan.add_chunk(&mut chunk, &mut send)?;
            let (job, fetches) = plan.finish();
            send(job, fetches)
        });
        for _ in 0..readers {
            let rx = fetch_rx.clone();
            let loads = &loads;
            s.spawn(move || {
                let _alive = ReaderAlive(loads);
                let mut dec = Decompressor::with_pool(loads.pool.clone());
                for fetch in rx {
                    // Even after a failed fetch: every batch waiting for a frame gets an
                    // answer, and the first failure is what the writer reports.
                    run_fetch(repo, index, fetch, loads, &mut dec);
                }
            });
        }
        drop(fetch_rx);
        for _ in 0..workers {
            let rx = job_rx.clone();
            let tx = done_tx.clone();
            let loads = &loads;
            s.spawn(move || {
                for (n, job) in rx {
                    let r = build_job(repo, index, job, loads);
                    let failed = r.is_err();
                    if tx.send((n, r)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx));
        let mut waiting: BTreeMap<u64, Built> = BTreeMap::new();
        let mut next = 0u64;
        let mut failure = None;
        for (n, r) in done_rx.iter() {
            if let Err(e) = crate::interrupt::check() {
                failure = Some(e);
                break;
            }
            match r {
                Ok(built) => {
                    waiting.insert(n, built);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            while let Some(Built { mut pieces, retire }) = waiting.remove(&next) {
                let (start, end) =
                    write_pieces_at(out, &mut pieces).ctx("cannot write", out_path)?;
                if end > start {
                    start_writeback(out, start, end - start);
                }
                blocks += pieces.len() as u64;
                let bytes: u64 = pieces.iter().map(|p| p.len as u64).sum();
                written += bytes;
                progress.inc(bytes);
                drop(pieces);
                loads.retire(&retire);
                let _ = ticket_tx.send(());
                next += 1;
            }
        }
        // Dropping the tickets' sender stops a planner waiting for one.
        drop((done_rx, ticket_tx));
        let planned = planner
            .join()
            .unwrap_or_else(|_| Err(Error::internal("restore planner panicked")));
        // A planner that failed on its own (say, on a damaged page list) leaves batches
        // waiting for frames it never sent: their errors are consequences, its is the cause.
        match (planned, failure) {
            (Err(e), _) if !stopped.load(Ordering::Relaxed) => return Err(e),
            (_, Some(e)) | (Err(e), None) => return Err(e),
            (Ok(()), None) => {}
        }
        if !waiting.is_empty() {
            return Err(Error::internal("restore lost a batch"));
        }
        Ok(())
    })?;
    progress.finish();
    if blocks != items || written != image_bytes {
        return Err(Error::integrity(format!(
            "backup {} lists {blocks} blobs of {written} bytes but its manifest says {items} of \
             {image_bytes}",
            m.id
        )));
    }
    // Pages were written out of order: the image's SHA-256 reads the finished file back (from
    // the page cache, which holds what was just written).
    let sha256 = if image_sha256 {
        Some(sha256_of_file(out, written).ctx("cannot read back", out_path)?)
    } else {
        None
    };
    Ok(ImageStats {
        bytes: written,
        blocks,
        sha256,
    })
}

/// Build one batch: check each page against its id, as its frame arrives.
fn build_job(repo: &Repository, index: &Index, job: Job, loads: &Loads) -> Result<Built> {
    // Pages come from a few loads at a time: remember the last ones rather than taking the
    // shared lock for every page.
    let mut recent: Vec<(u64, Arc<Frame>)> = Vec::with_capacity(4);
    let mut pieces = Vec::with_capacity(job.pages.len());
    let hasher = repo.hasher();
    for page in &job.pages {
        let frame = match recent.iter().position(|(l, _)| *l == page.load) {
            Some(i) => Ok(recent[i].1.clone()),
            None => loads.wait(page.load).inspect(|frame| {
                if recent.len() == 4 {
                    recent.remove(0);
                }
                recent.push((page.load, frame.clone()));
            }),
        };
        let checked = frame.and_then(|frame| {
            slice_blob(&frame, &page.loc)
                .and_then(|blob| check_blob(index, &hasher, &page.id, &page.loc, blob))
                .map(|()| frame)
        });
        match checked {
            Ok(frame) => pieces.push(Piece {
                pos: page.pos,
                frame,
                start: page.loc.offset as usize,
                len: page.loc.len as usize,
            }),
            // A replica, or another copy the index knows of, may hold it intact.
            Err(e) => {
                let blob = repo.read_blob_elsewhere(
                    index,
                    &page.id,
                    &mut crate::repo::compress::Decompressor::default(),
                    e,
                )?;
                let len = blob.len();
                pieces.push(Piece {
                    pos: page.pos,
                    frame: Arc::new(Frame {
                        data: blob,
                        pool: loads.pool.clone(),
                    }),
                    start: 0,
                    len,
                });
            }
        }
    }
    Ok(Built {
        pieces,
        retire: job.retire,
    })
}

/// The folder of `target` and its file name, for temporary names beside it.
pub(crate) fn beside(target: &Path) -> (&Path, String) {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    (dir, name)
}

/// A temporary file beside `target`, removed on drop unless kept.
pub struct TempFile {
    pub path: PathBuf,
    pub file: Option<File>,
    keep: bool,
}

impl TempFile {
    pub fn beside(target: &Path) -> Result<TempFile> {
        let (dir, name) = beside(target);
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

/// What a point-in-time restore does to the rebuilt image before it is synced: apply the
/// commits after the base (`wal::pitr`). Returns the image's final size.
pub type Replay = Box<dyn FnMut(&Repository, &File, &Path) -> Result<u64>>;

/// Rebuild into a temp file beside `target`, check the SHA-256, replay, fsync. The caller
/// renames.
fn rebuild_beside(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    target: &Path,
    progress: &Progress,
    replay: Option<&mut Replay>,
) -> Result<(TempFile, ImageStats)> {
    let mut tmp = TempFile::beside(target)?;
    let path = tmp.path.clone();
    let file = tmp
        .file
        .as_mut()
        .ok_or_else(|| Error::internal("temp file closed"))?;
    let started = std::time::Instant::now();
    let stats = write_image(repo, index, m, file, &path, false, progress).map_err(|e| {
        if e.kind != ErrorKind::Integrity {
            return e;
        }
        let mut e = Error {
            message: format!("backup {} cannot be restored: {}", m.id, e.message),
            ..e
        };
        if e.hint.is_none() {
            e = e.hint(
                "run `lifeboat repo check --read-data` to list every backup the damage affects",
            );
        }
        e
    })?;
    tracing::info!(elapsed = ?started.elapsed(), "image written and checked");
    let mut stats = stats;
    if let Some(replay) = replay {
        stats.bytes = replay(repo, file, &path)?;
        tracing::info!(elapsed = ?started.elapsed(), "commits after the base applied");
    }
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
    /// What a files backup restored (entries, redacted keys).
    pub tree: Option<crate::ops::restore_tree::TreeRestored>,
}

/// The restore seam: where a backup goes and how it is put there. [`restore`] drives each
/// target through the same four steps under a reader marker (a concurrent prune deletes
/// nothing they read): nothing at the destination changes before `commit`.
pub trait RestoreTarget {
    /// Check the destination before anything is read, and keep what it would lose (an
    /// in-place restore's safety backup).
    fn prepare(&mut self, repo: &Repository, m: &Manifest, progress: &Progress) -> Result<()>;
    /// Rebuild the backup beside the destination, checking every blob against its id.
    fn write(
        &mut self,
        repo: &Repository,
        index: &Index,
        m: &Manifest,
        progress: &Progress,
    ) -> Result<()>;
    /// Check what was written against what the manifest recorded.
    fn verify(&mut self, m: &Manifest) -> Result<()>;
    /// Put it in place, durably.
    fn commit(&mut self, m: &Manifest) -> Result<RestoreOutcome>;
}

/// Restore backup `m` to `target`.
pub fn restore(
    repo: &Repository,
    m: &Manifest,
    target: &mut dyn RestoreTarget,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    crate::repo::locks::as_reader(repo.storage(), &repo.records(), "restore", || {
        let index = repo.load_index()?;
        restore_marked(repo, &index, m, target, progress)
    })
}

/// `restore`, for a caller that holds a reader marker already (verify).
pub(crate) fn restore_marked(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    target: &mut dyn RestoreTarget,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    crate::repo::reach::known_kind(m)?;
    target.prepare(repo, m, progress)?;
    target.write(repo, index, m, progress)?;
    target.verify(m)?;
    target.commit(m)
}

/// Where a restore writes, as the CLI and the engine name it.
pub enum Destination {
    /// A new file or folder (a folder's files: an existing folder with `overwrite`).
    New { path: PathBuf, overwrite: bool },
    /// Replace a database file, after a safety backup of it.
    InPlace {
        db: PathBuf,
        compression: Compression,
    },
}

/// The target for backup `m` at `to`: an image (SQLite, DuckDB) restores to a file, a tree
/// to a folder.
pub fn target_for(m: &Manifest, to: Destination) -> Result<Box<dyn RestoreTarget>> {
    let tree = matches!(m.content, Content::Tree { .. });
    Ok(match (to, tree) {
        (Destination::New { path, overwrite }, true) => Box::new(
            crate::ops::restore_tree::FolderTarget::new(path, overwrite),
        ),
        (Destination::New { path, .. }, false) => Box::new(NewFile::new(path, image_kind(m).ok())),
        (Destination::InPlace { db, compression }, false) => {
            Box::new(InPlace::new(db, image_kind(m)?, compression))
        }
        (Destination::InPlace { .. }, true) => {
            return Err(Error::usage(format!(
                "backup {} is of files ({}), which are restored to a folder",
                m.id, m.source.path
            ))
            .hint("give --output DIR (a new folder; with --yes an existing one, whose files of the same names are replaced)"))
        }
    })
}

/// What an image's kind means for files beside it.
#[derive(Debug, Clone, Copy)]
pub struct ImageKind {
    pub kind: crate::source::Kind,
    /// Files beside the database that belong to it (`-wal` …): stale ones would be replayed
    /// into the restored file, so they are removed.
    pub sidecars: &'static [&'static str],
    /// Those moved aside with a database that could not be backed up first.
    pub kept_sidecars: &'static [&'static str],
}

pub fn image_kind(m: &Manifest) -> Result<ImageKind> {
    let kind = crate::source::Kind::parse(&m.source.kind)?;
    use crate::source::{duckdb, sqlite, Kind};
    let (sidecars, kept_sidecars) = match kind {
        Kind::Sqlite => (sqlite::SIDECARS, sqlite::KEPT_SIDECARS),
        Kind::Duckdb => (&duckdb::SIDECARS[..], &duckdb::SIDECARS[..]),
        Kind::Files | Kind::Postgres => (&[][..], &[][..]),
    };
    Ok(ImageKind {
        kind,
        sidecars,
        kept_sidecars,
    })
}

/// Rebuild the image beside `target`; an interruption says `state` of the target.
fn rebuild_image(
    repo: &Repository,
    index: &Index,
    m: &Manifest,
    target: &Path,
    progress: &Progress,
    state: String,
    replay: Option<&mut Replay>,
) -> Result<(TempFile, ImageStats)> {
    rebuild_beside(repo, index, m, target, progress, replay).map_err(|e| interrupted_hint(e, state))
}

fn take_rebuilt(slot: &mut Option<(TempFile, ImageStats)>) -> Result<(TempFile, ImageStats)> {
    slot.take()
        .ok_or_else(|| Error::internal("restore committed before it was written"))
}

/// Check the size of a rebuilt image against the manifest (a replayed image has the size
/// of its last commit).
fn check_image_size(m: &Manifest, stats: Option<&ImageStats>, replayed: bool) -> Result<()> {
    let written = stats.map_or(0, |s| s.bytes);
    if replayed {
        return Ok(());
    }
    if written != m.logical_bytes() {
        return Err(Error::integrity(format!(
            "backup {} rebuilt to {written} bytes, not the {} its manifest records",
            m.id,
            m.logical_bytes()
        )));
    }
    Ok(())
}

/// A new file that needs no Lifeboat to open.
pub struct NewFile {
    output: PathBuf,
    kind: Option<ImageKind>,
    rebuilt: Option<(TempFile, ImageStats)>,
    replay: Option<Replay>,
}

impl NewFile {
    /// `kind` (when known) names the files beside the output that would be read with it.
    pub fn new(output: PathBuf, kind: Option<ImageKind>) -> NewFile {
        NewFile {
            output,
            kind,
            rebuilt: None,
            replay: None,
        }
    }

    /// Apply `replay` to the image before it is put in place.
    pub fn with_replay(mut self, replay: Replay) -> NewFile {
        self.replay = Some(replay);
        self
    }
}

impl RestoreTarget for NewFile {
    fn prepare(&mut self, _: &Repository, _: &Manifest, _: &Progress) -> Result<()> {
        if self.output.exists() {
            return Err(
                Error::usage(format!("{} already exists", self.output.display()))
                    .hint("choose another --output, or use --db to replace a database in place"),
            );
        }
        // A leftover `-wal` (SQLite) or `.wal` (DuckDB) under the new file's name would be
        // replayed into it by the first program that opens it.
        for suffix in self.kind.map_or(&[][..], |k| k.sidecars) {
            let stale = sidecar(&self.output, suffix);
            if std::fs::symlink_metadata(&stale).is_ok() {
                return Err(Error::usage(format!(
                    "{} exists: the database would replay it into the restored {} when it \
                     opens it",
                    stale.display(),
                    self.output.display()
                ))
                .hint("move it away, or choose another --output"));
            }
        }
        Ok(())
    }

    fn write(
        &mut self,
        repo: &Repository,
        index: &Index,
        m: &Manifest,
        progress: &Progress,
    ) -> Result<()> {
        let state = format!("{} was not created", self.output.display());
        self.rebuilt = Some(rebuild_image(
            repo,
            index,
            m,
            &self.output,
            progress,
            state,
            self.replay.as_mut(),
        )?);
        Ok(())
    }

    fn verify(&mut self, m: &Manifest) -> Result<()> {
        check_image_size(
            m,
            self.rebuilt.as_ref().map(|(_, s)| s),
            self.replay.is_some(),
        )
    }

    fn commit(&mut self, m: &Manifest) -> Result<RestoreOutcome> {
        let (mut tmp, stats) = take_rebuilt(&mut self.rebuilt)?;
        let output = &self.output;
        // link(2) rather than rename(2): a file that appeared meanwhile is never replaced.
        std::fs::hard_link(&tmp.path, output).map_err(|e| Error::io("cannot create", output, e))?;
        std::fs::remove_file(&tmp.path).ctx("cannot remove", &tmp.path)?;
        tmp.keep();
        sync_parent(output)?;
        Ok(RestoreOutcome {
            backup_id: m.id.clone(),
            path: output.clone(),
            bytes: stats.bytes,
            safety_backup: None,
            moved_aside: Vec::new(),
            tree: None,
        })
    }
}

/// What an interrupted restore left: `state` of the target, and no temporary file.
fn interrupted_hint(e: Error, state: String) -> Error {
    if e.kind != crate::error::ErrorKind::Interrupted {
        return e;
    }
    e.hint(format!(
        "{state}; the partly written copy was removed. Run the restore again to finish it"
    ))
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

/// Refuse an in-place target that is a directory, or a symbolic link: the restore would
/// replace the link with a file (and its owner and mode would be the link target's, which
/// someone who can write the folder could point anywhere, say at a setuid program).
pub fn check_in_place_target(db: &Path) -> Result<()> {
    match std::fs::symlink_metadata(db) {
        Ok(meta) if meta.is_dir() => Err(Error::usage(format!(
            "{} is a directory, not a database file",
            db.display()
        ))
        .hint("give the path of the database file itself")),
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = std::fs::read_link(db)
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            Err(Error::usage(format!(
                "{} is a symbolic link (to {target}); an in-place restore replaces a file, not a link",
                db.display()
            ))
            .hint("give the path of the database file itself with --db"))
        }
        _ => Ok(()),
    }
}

/// Replace a database in place: safety backup of the current one, rebuild beside it,
/// check, fsync, remove stale sidecars (`-wal`, `.wal` …), rename into place.
pub struct InPlace {
    db: PathBuf,
    kind: ImageKind,
    compression: Compression,
    exists: bool,
    safety_backup: Option<String>,
    rebuilt: Option<(TempFile, ImageStats)>,
    replay: Option<Replay>,
}

impl InPlace {
    pub fn new(db: PathBuf, kind: ImageKind, compression: Compression) -> InPlace {
        InPlace {
            db,
            kind,
            compression,
            exists: false,
            safety_backup: None,
            rebuilt: None,
            replay: None,
        }
    }

    /// Apply `replay` to the image before it is put in place.
    pub fn with_replay(mut self, replay: Replay) -> InPlace {
        self.replay = Some(replay);
        self
    }

    /// "`db` is unchanged (its safety backup … is kept)", for an interrupted restore.
    fn unchanged(&self) -> String {
        format!(
            "{} is unchanged{}",
            self.db.display(),
            match &self.safety_backup {
                Some(id) => format!(" (its safety backup {id} is kept)"),
                None => String::new(),
            }
        )
    }
}

impl RestoreTarget for InPlace {
    fn prepare(&mut self, repo: &Repository, m: &Manifest, progress: &Progress) -> Result<()> {
        let db = &self.db;
        check_in_place_target(db)?;
        self.exists = db.exists();
        if !self.exists {
            return Ok(());
        }
        ensure_not_in_use(db)?;
        let safety = backup(
            repo,
            &BackupOptions {
                database: db.to_path_buf(),
                kind: Some(self.kind.kind),
                source: Default::default(),
                run: None,
                description: Some(format!("before restoring backup {}", m.id)),
                tags: vec!["pre-restore".into()],
                trigger: crate::repo::manifest::SAFETY_TRIGGER.into(),
                compression: self.compression,
                verify: VerifyLevel::Written,
                progress: progress.clone(),
                transfers: crate::ops::backup::DEFAULT_TRANSFERS,
                time: None,
            },
        );
        match safety {
            Ok(o) => self.safety_backup = Some(o.manifest.id),
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
        Ok(())
    }

    fn write(
        &mut self,
        repo: &Repository,
        index: &Index,
        m: &Manifest,
        progress: &Progress,
    ) -> Result<()> {
        let state = self.unchanged();
        self.rebuilt = Some(rebuild_image(
            repo,
            index,
            m,
            &self.db,
            progress,
            state,
            self.replay.as_mut(),
        )?);
        Ok(())
    }

    fn verify(&mut self, m: &Manifest) -> Result<()> {
        check_image_size(
            m,
            self.rebuilt.as_ref().map(|(_, s)| s),
            self.replay.is_some(),
        )
    }

    fn commit(&mut self, m: &Manifest) -> Result<RestoreOutcome> {
        let (mut tmp, stats) = take_rebuilt(&mut self.rebuilt)?;
        let db = &self.db;
        // The new file takes the old one's owner and permission bits, never setuid, setgid or
        // sticky bits (a database is not a program), and never a link target's.
        if let Ok(meta) = std::fs::symlink_metadata(db) {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if meta.file_type().is_file() {
                let _ = std::os::unix::fs::chown(&tmp.path, Some(meta.uid()), Some(meta.gid()));
                let _ = std::fs::set_permissions(
                    &tmp.path,
                    std::fs::Permissions::from_mode(meta.mode() & 0o777),
                );
            }
        }
        if self.exists {
            ensure_not_in_use(db)?;
        }
        let mut moved_aside = Vec::new();
        if self.exists && self.safety_backup.is_none() {
            let stamp = jiff::Timestamp::now().as_second();
            for suffix in std::iter::once(&"").chain(self.kind.kept_sidecars) {
                let from = sidecar(db, suffix);
                if from.exists() {
                    // `<db>.lifeboat-old-N` keeps its sidecars as `<db>.lifeboat-old-N-wal`
                    // etc., so the database still pairs them when the kept copy is opened.
                    let to = sidecar(db, &format!(".lifeboat-old-{stamp}{suffix}"));
                    std::fs::rename(&from, &to).ctx("cannot move aside", &from)?;
                    moved_aside.push(to);
                }
            }
        }
        // Stale sidecars would be replayed into (or roll back) the new file: remove them first.
        for suffix in self.kind.sidecars {
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
            safety_backup: self.safety_backup.take(),
            moved_aside,
            tree: None,
        })
    }
}

/// Whether `db` looks like a database we may replace (used to word confirmations).
pub fn describe_target(db: &Path) -> String {
    if crate::source::duckdb::is_duckdb(db) {
        return format!("the DuckDB database {}", db.display());
    }
    match check_is_sqlite(db) {
        Ok(()) => format!("the SQLite database {}", db.display()),
        Err(_) if db.exists() => format!("the file {}", db.display()),
        Err(_) => format!("{} (new file)", db.display()),
    }
}

/// Frame loads the planner's cache would make for frames in this order.
fn loads_in_order(frames: impl Iterator<Item = u32>) -> usize {
    let mut cache: Vec<u32> = Vec::with_capacity(FRAME_CACHE);
    let mut loads = 0;
    for f in frames {
        if let Some(i) = cache.iter().position(|&c| c == f) {
            cache.remove(i);
        } else {
            loads += 1;
            if cache.len() == FRAME_CACHE {
                cache.remove(0);
            }
        }
        cache.push(f);
    }
    loads
}

fn distinct_frames(chunk: &[(u64, Hash, BlobLoc)]) -> usize {
    let mut frames: Vec<u32> = chunk.iter().map(|c| c.2.frame).collect();
    frames.sort_unstable();
    frames.dedup();
    frames.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::compress::Codec;
    use crate::repo::index::IndexedPack;
    use crate::repo::pack::{BlobEntry, FrameEntry};
    use std::collections::HashSet;

    const PAGE: u32 = 16;
    const PAGES_PER_FRAME: u32 = 64;

    /// Page ids of `packs` packs of `frames` frames each; page `p` of frame `f` of pack `k`.
    fn page_id(k: u32, f: u32, p: u32) -> Hash {
        Hash::of(format!("{k}/{f}/{p}").as_bytes())
    }

    fn index(packs: u32, frames: u32) -> Index {
        let mut index = Index::default();
        for k in 0..packs {
            let entries = (0..frames)
                .map(|f| FrameEntry {
                    offset: 8 + u64::from(f) * 1000,
                    stored_len: 1000,
                    raw_len: PAGE * PAGES_PER_FRAME,
                    codec: Codec::Zstd,
                    blobs: (0..PAGES_PER_FRAME)
                        .map(|p| BlobEntry {
                            id: page_id(k, f, p).key(),
                            kind: BlobKind::Data,
                            offset: p * PAGE,
                            len: PAGE,
                        })
                        .collect(),
                })
                .collect();
            index.add_pack(&IndexedPack {
                id: Hash::of(&k.to_le_bytes()),
                size: 8 + u64::from(frames) * 1000,
                frames: entries,
            });
        }
        index
    }

    /// An image like a database after several backups: mostly pack 0 in order, runs of
    /// changed pages from the other packs (stored a little out of order, as parallel
    /// compression does), and now and then a page from far away.
    fn image(packs: u32, frames: u32, pages: usize) -> Vec<Hash> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        let mut cursors = vec![0u32; packs as usize];
        (0..pages)
            .map(|i| {
                let k = if next(3) == 0 { 1 + next(packs - 1) } else { 0 };
                let c = &mut cursors[k as usize];
                *c += 1;
                let mut f = (*c / PAGES_PER_FRAME) % frames;
                if next(50) == 0 {
                    f = next(frames); // far away
                } else if next(4) == 0 {
                    f = (f + 1) % frames; // the next frame was stored first
                }
                page_id(k, f, i as u32 % PAGES_PER_FRAME)
            })
            .collect()
    }

    /// Runs the planner like `write_image` does, in chunks of `chunk` pages: the jobs, and
    /// the fetches with the number of jobs closed when each was sent.
    fn plan(
        index: &Index,
        ids: &[Hash],
        ahead: u64,
        chunk: usize,
    ) -> (Vec<Job>, Vec<(usize, Fetch)>) {
        let mut plan = Planner::new(index, Some(PAGE as usize), ahead);
        let mut jobs: Vec<Job> = Vec::new();
        let mut fetches: Vec<(usize, Fetch)> = Vec::new();
        let mut send = |job: Option<Job>, ready: Vec<Fetch>| -> Result<()> {
            fetches.extend(ready.into_iter().map(|f| (jobs.len(), f)));
            jobs.extend(job);
            Ok(())
        };
        for (n, part) in ids.chunks(chunk).enumerate() {
            let mut pages: Vec<(u64, Hash, BlobLoc)> = part
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let pos = ((n * chunk + i) as u64) * u64::from(PAGE);
                    (pos, *id, plan.locate(id).unwrap())
                })
                .collect();
            plan.add_chunk(&mut pages, &mut send).unwrap();
        }
        let (last, rest) = plan.finish();
        jobs.extend(last);
        fetches.extend(rest.into_iter().map(|f| (usize::MAX, f)));
        (jobs, fetches)
    }

    /// Runs the planner like `write_image` does and checks what the other stages rely on.
    #[test]
    fn plans_are_complete_ordered_and_bounded() {
        let index = index(4, 400);
        let ids = image(4, 400, 60_000);
        let in_flight = 12;
        let ahead = fetch_ahead(in_flight);
        let (jobs, fetches) = plan(&index, &ids, ahead, 20_000);

        // Every load is fetched exactly once, with frames of one pack per fetch.
        let mut frame_of = HashMap::new();
        let mut sent_after = HashMap::new();
        for (closed, f) in &fetches {
            let packs: HashSet<u32> = f
                .loads
                .iter()
                .map(|&(_, frame)| index.frames[frame as usize].pack)
                .collect();
            assert_eq!(packs.len(), 1);
            for &(load, frame) in &f.loads {
                assert!(
                    frame_of.insert(load, frame).is_none(),
                    "load {load} fetched twice"
                );
                sent_after.insert(load, *closed);
            }
        }

        let mut retired: HashMap<u64, usize> = HashMap::new();
        let mut first_use: HashMap<u64, usize> = HashMap::new();
        let mut pages = Vec::new();
        for (n, job) in jobs.iter().enumerate() {
            assert!(job.pages.len() <= BATCH_BLOCKS);
            let mut new = HashSet::new();
            for p in &job.pages {
                assert_eq!(frame_of[&p.load], p.loc.frame, "a page uses its own frame");
                assert!(
                    !retired.contains_key(&p.load),
                    "load {} used after retiring",
                    p.load
                );
                if *first_use.entry(p.load).or_insert(n) == n {
                    new.insert(p.load);
                }
                pages.push((p.pos, p.id));
            }
            assert!(
                new.len() <= BATCH_LOADS,
                "job {n} loads {} frames",
                new.len()
            );
            for &load in &job.retire {
                assert!(
                    retired.insert(load, n).is_none(),
                    "load {load} retired twice"
                );
            }
        }
        pages.sort_unstable_by_key(|&(pos, _)| pos);
        let places: Vec<u64> = (0..ids.len() as u64).map(|i| i * u64::from(PAGE)).collect();
        assert_eq!(
            pages.iter().map(|&(pos, _)| pos).collect::<Vec<_>>(),
            places,
            "every place once"
        );
        assert_eq!(
            pages.into_iter().map(|(_, id)| id).collect::<Vec<_>>(),
            ids,
            "each page at its place"
        );
        assert_eq!(
            first_use.len(),
            frame_of.len(),
            "every load fetched is used"
        );
        assert_eq!(retired.len(), frame_of.len(), "every load is retired");
        // A batch's frames are sent before the planner can wait for the writer to finish
        // that batch: by the time `ahead` more batches are closed.
        for (load, first) in first_use {
            let closed = sent_after[&load];
            assert!(
                closed == usize::MAX && first + ahead as usize >= jobs.len() - 1
                    || closed <= first + ahead as usize,
                "load {load} of job {first} sent after {closed} jobs"
            );
        }
        // Few, long fetches: the point of gathering them.
        assert!(
            fetches.len() * 8 < frame_of.len(),
            "{} fetches",
            fetches.len()
        );
    }

    /// Pages scattered over many frames (a database backed up for weeks, then repacked):
    /// each frame is loaded at most once per chunk, where image order loaded one for nearly
    /// every page.
    #[test]
    fn chunks_already_in_storage_order_are_not_sorted_and_scattered_ones_are() {
        // Pages of a fresh backup: frames in order, each once.
        let in_order = (0..1000u32).map(|i| i / 256);
        assert_eq!(loads_in_order(in_order), 4);
        // Pages alternating over more frames than the cache holds: a load per page.
        let scattered = (0..1000u32).map(|i| i % (FRAME_CACHE as u32 + 1));
        assert_eq!(loads_in_order(scattered), 1000);
    }

    #[test]
    fn scattered_pages_load_each_frame_once_per_chunk() {
        let (packs, frames) = (4, 100);
        let index = index(packs, frames);
        // Every page of every frame once, shuffled.
        let mut ids: Vec<Hash> = (0..packs)
            .flat_map(|k| {
                (0..frames).flat_map(move |f| (0..PAGES_PER_FRAME).map(move |p| page_id(k, f, p)))
            })
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for i in (1..ids.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ids.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let chunk = 8192;
        let (jobs, fetches) = plan(&index, &ids, fetch_ahead(12), chunk);
        let frame_of: HashMap<u64, u32> = fetches
            .iter()
            .flat_map(|(_, f)| f.loads.iter().copied())
            .collect();
        // The frames loaded for the pages of each chunk.
        let mut loaded: HashMap<u64, HashSet<u64>> = HashMap::new();
        let mut pages = 0;
        for job in &jobs {
            for p in &job.pages {
                let c = p.pos / (chunk as u64 * u64::from(PAGE));
                loaded.entry(c).or_default().insert(p.load);
                pages += 1;
            }
        }
        assert_eq!(pages, ids.len());
        for (c, loads) in &loaded {
            let distinct: HashSet<u32> = loads.iter().map(|l| frame_of[l]).collect();
            assert_eq!(
                loads.len(),
                distinct.len(),
                "chunk {c} loads a frame more than once"
            );
        }
        // At most one load per frame per chunk in all.
        let chunks = ids.len().div_ceil(chunk);
        assert!(frame_of.len() <= chunks * (packs * frames) as usize);
        assert!(
            fetches.len() * 8 < frame_of.len(),
            "{} fetches",
            fetches.len()
        );
    }
}
