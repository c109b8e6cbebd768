//! Following `pg_dump -Fd` as it writes: each file of the dump folder is read while pg_dump
//! still writes it (to its end, then waiting for more), so chunking, compression and upload
//! run at the same time as the dump instead of after it, and each file is deleted once it is
//! stored, so the temporary folder never holds much more than what is being written.
//!
//! pg_dump creates, writes and closes every file once: inotify tells which files appeared
//! (in order) and which pg_dump has closed; a file is complete when closed, or when pg_dump
//! has exited.

use super::tools::Guarded;
use crate::error::{Error, Result};
use rustix::fs::inotify;
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

/// How long a reader at the end of a growing file waits before looking again.
const WAIT: Duration = Duration::from_millis(10);

/// The dump folder and the pg_dump writing into it.
pub struct DumpFolder {
    dir: PathBuf,
    inotify: OwnedFd,
    seen: HashSet<String>,
    waiting: VecDeque<String>,
    closed: HashSet<String>,
    child: Guarded,
    exited: Option<ExitStatus>,
}

impl DumpFolder {
    /// Watch `dir` (created empty by the caller), then start `pg_dump` writing into it.
    pub fn start(
        dir: &Path,
        mut pg_dump: std::process::Command,
        program: &Path,
    ) -> Result<DumpFolder> {
        let watch_error = |e: rustix::io::Errno| {
            Error::io("cannot watch the dump folder", dir, std::io::Error::from(e))
        };
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .map_err(watch_error)?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::CREATE | inotify::WatchFlags::CLOSE_WRITE,
        )
        .map_err(watch_error)?;
        let child = Guarded::spawn(&mut pg_dump, program)?;
        Ok(DumpFolder {
            dir: dir.to_path_buf(),
            inotify: fd,
            seen: HashSet::new(),
            waiting: VecDeque::new(),
            closed: HashSet::new(),
            child,
            exited: None,
        })
    }

    /// Take in what happened: files created and closed, pg_dump's exit. Waits up to `wait`
    /// for something to happen.
    fn poll(&mut self, wait: Duration) -> Result<()> {
        crate::interrupt::check()?;
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(|e| Error::io("cannot wait for", Path::new("pg_dump"), e))?;
        }
        let mut pfd = libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = if self.exited.is_some() {
            0
        } else {
            wait.as_millis() as i32
        };
        // SAFETY: one valid pollfd on the stack, for a descriptor we own.
        unsafe { libc::poll(&mut pfd, 1, timeout) };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                        continue;
                    };
                    if name.is_empty() {
                        continue;
                    }
                    let name = name.to_string();
                    if event.events().contains(inotify::ReadFlags::CLOSE_WRITE) {
                        self.closed.insert(name.clone());
                    }
                    if self.seen.insert(name.clone()) {
                        self.waiting.push_back(name);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::io(
                        "cannot watch the dump folder",
                        &self.dir,
                        std::io::Error::from(e),
                    ))
                }
            }
        }
        if self.exited.is_some() {
            // Anything the events missed (the queue can overflow): the folder's listing.
            let mut late: Vec<String> = std::fs::read_dir(&self.dir)
                .map_err(|e| Error::io("cannot list", &self.dir, e))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !self.seen.contains(n))
                .collect();
            late.sort();
            for n in late {
                self.seen.insert(n.clone());
                self.waiting.push_back(n);
            }
        }
        Ok(())
    }

    /// The next file pg_dump created, in creation order; `None` once pg_dump has exited and
    /// every file was handed out.
    pub fn next_file(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(n) = self.waiting.pop_front() {
                return Ok(Some(n));
            }
            if self.exited.is_some() {
                self.poll(Duration::ZERO)?;
                return Ok(self.waiting.pop_front());
            }
            self.poll(Duration::from_millis(50))?;
        }
    }

    /// Open `name` for reading as it grows.
    pub fn open(&mut self, name: &str) -> Result<Growing<'_>> {
        let path = self.dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        Ok(Growing {
            file,
            name: name.to_string(),
            folder: self,
            read: 0,
            freed: 0,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Wait for pg_dump to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        loop {
            self.poll(Duration::from_millis(50))?;
            if let Some(s) = self.exited {
                return Ok(s);
            }
        }
    }

    fn complete(&self, name: &str) -> bool {
        self.exited.is_some() || self.closed.contains(name)
    }
}

impl Drop for DumpFolder {
    /// A dump abandoned (an error, an interruption) stops pg_dump and its workers.
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A file of the dump folder, read while pg_dump writes it: at its current end, a read waits
/// for more until pg_dump has closed the file.
pub struct Growing<'a> {
    file: std::fs::File,
    name: String,
    folder: &'a mut DumpFolder,
    /// Bytes read, and bytes whose room was given back to the file system.
    read: u64,
    freed: u64,
}

/// Room given back in steps of this many bytes.
const FREE_STEP: u64 = 64 << 20;

impl Growing<'_> {
    /// Give back the room of what was read (a hole punched at the file's start): a 100 GB
    /// tar needs no 100 GB of temporary space. Where the file system cannot, the file
    /// stays until it is deleted whole.
    fn free_read(&mut self) {
        if self.read - self.freed < FREE_STEP {
            return;
        }
        let upto = self.read - self.read % FREE_STEP;
        let _ = rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            self.freed,
            upto - self.freed,
        );
        self.freed = upto;
    }
}

impl Read for Growing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.file.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                self.free_read();
                return Ok(n);
            }
            if self.folder.complete(&self.name) {
                // Closed after the read above came up empty: what it wrote last is there now.
                let n = self.file.read(buf)?;
                self.read += n as u64;
                return Ok(n);
            }
            self.folder.poll(WAIT).map_err(std::io::Error::other)?;
        }
    }
}
