//! When commits happened. A thread wakes on every write to the `-wal` file (inotify) and
//! notes the moment SQLite's WAL index (the `-shm` header: the last committed frame and the
//! WAL's salts) moved on. The replication loop reads the frames later (after a checkpoint, a
//! slow target, a moment of contention for the write lock) and dates each commit by when it
//! appeared, not when it was read.
//!
//! The `-shm` file carries SQLite's locks (POSIX byte-range locks, which closing any
//! descriptor of the file drops for the whole process): its descriptor is opened once and
//! kept until every connection has closed.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A commit boundary as the WAL index shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexState {
    pub salt1: u32,
    pub salt2: u32,
    /// The last committed frame (1-based; 0: none).
    pub mx_frame: u32,
}

/// The WAL index header (<https://www.sqlite.org/walformat.html#the_wal_index_file_format>):
/// two copies of 48 bytes, equal when no writer is changing them; native byte order, the
/// salts copied byte for byte from the WAL header (big-endian).
pub fn read_index(shm: &File) -> Option<IndexState> {
    let mut b = [0u8; 96];
    for _ in 0..4 {
        if shm.read_exact_at(&mut b, 0).is_err() {
            return None;
        }
        if b[..48] == b[48..] && b[12] != 0 {
            return Some(IndexState {
                mx_frame: u32::from_ne_bytes([b[16], b[17], b[18], b[19]]),
                salt1: u32::from_be_bytes([b[32], b[33], b[34], b[35]]),
                salt2: u32::from_be_bytes([b[36], b[37], b[38], b[39]]),
            });
        }
        std::thread::yield_now();
    }
    None
}

pub fn shm_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-shm");
    PathBuf::from(p)
}

/// The moments the WAL index moved on, oldest first.
#[derive(Default)]
pub struct Clock {
    seen: Mutex<VecDeque<(IndexState, i64)>>,
}

const KEPT: usize = 1 << 16;

impl Clock {
    fn note(&self, state: IndexState, ns: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= KEPT {
            seen.pop_front();
        }
        seen.push_back((state, ns));
    }

    /// When frame `frame` of the generation with these salts was first seen committed; None
    /// if it never was (then the reader's own time is the best known).
    pub fn time_of(&self, salt1: u32, salt2: u32, frame: u32) -> Option<i64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Earlier commits of this generation are dated already.
        while seen
            .front()
            .is_some_and(|(s, _)| s.salt1 == salt1 && s.salt2 == salt2 && s.mx_frame < frame)
        {
            seen.pop_front();
        }
        seen.iter()
            .find(|(s, _)| s.salt1 == salt1 && s.salt2 == salt2 && s.mx_frame >= frame)
            .map(|&(_, ns)| ns)
    }

    /// Watch until `stop`: note each change of the WAL index, and tell `wake`.
    pub fn run(
        &self,
        shm: &File,
        wal: &Path,
        db: &Path,
        stop: &AtomicBool,
        wake: &crossbeam_channel::Sender<()>,
    ) {
        let watch = Watch::new(wal, db);
        let mut last = read_index(shm);
        while !stop.load(Ordering::SeqCst) {
            let woken = watch.wait(Duration::from_millis(10));
            // The index is updated just after the last frame is written (and an update of a
            // mapped file raises no event): look again for a few milliseconds after a write.
            let tries = if woken { 6 } else { 1 };
            for i in 0..tries {
                let now = read_index(shm);
                if now.is_some() && now != last {
                    if let Some(state) = now {
                        // When the index moved on, not when the frame was written: the
                        // commit counts once synced and published (the sync may take long).
                        let ns = crate::wal::replicate::now_ns();
                        tracing::debug!(?state, ns, "commit seen");
                        self.note(state, ns);
                    }
                    last = now;
                    let _ = wake.try_send(());
                    break;
                }
                if i + 1 < tries {
                    std::thread::sleep(Duration::from_micros(500 << i));
                }
            }
        }
    }
}

/// Wakes on writes to the `-wal` file (inotify), or after a timeout.
struct Watch {
    fd: Option<std::os::fd::OwnedFd>,
    wal: PathBuf,
    watching_wal: std::cell::Cell<bool>,
}

impl Watch {
    fn new(wal: &Path, db: &Path) -> Watch {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).ok();
        if let Some(fd) = &fd {
            // The folder, for the `-wal` file's creation (it may not exist yet).
            let dir = db
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let _ = inotify::add_watch(fd, dir, inotify::WatchFlags::CREATE);
        }
        let w = Watch {
            fd,
            wal: wal.to_path_buf(),
            watching_wal: std::cell::Cell::new(false),
        };
        w.watch_wal();
        w
    }

    fn watch_wal(&self) {
        use rustix::fs::inotify;
        if let (Some(fd), false) = (&self.fd, self.watching_wal.get()) {
            let ok = inotify::add_watch(fd, &self.wal, inotify::WatchFlags::MODIFY).is_ok();
            self.watching_wal.set(ok);
        }
    }

    /// Whether something happened before the timeout.
    fn wait(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout);
            return false;
        };
        self.watch_wal();
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack, a descriptor we own.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if ready > 0 {
            let mut buf = [0u8; 4096];
            // Drain the queue: one wake-up covers every event so far.
            // SAFETY: reading into a buffer we own from a descriptor we own.
            while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_header_tells_the_last_commit_and_the_salts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let shm = File::open(shm_path(&db)).unwrap();
        let a = read_index(&shm).unwrap();
        let wal = crate::wal::frames::WalFile::new(&db)
            .header()
            .unwrap()
            .unwrap();
        assert_eq!((a.salt1, a.salt2), (wal.salt1, wal.salt2));
        c.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let b = read_index(&shm).unwrap();
        assert_eq!(b.mx_frame, a.mx_frame + 1);
        let clock = Clock::default();
        clock.note(a, 10);
        clock.note(b, 20);
        assert_eq!(clock.time_of(a.salt1, a.salt2, a.mx_frame), Some(10));
        assert_eq!(clock.time_of(a.salt1, a.salt2, b.mx_frame), Some(20));
        assert_eq!(clock.time_of(a.salt1 ^ 1, a.salt2, 1), None);
    }
}
