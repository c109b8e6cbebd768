//! A repository in a local folder. Objects are written to `tmp/`, fsynced, then hard-linked
//! into place: `link(2)` fails if the name exists, which gives create-only semantics that
//! `rename(2)` would not, and a crash leaves only a stray file in `tmp/`.
//!
//! No symbolic link below the repository's folder is followed (the folder itself may be
//! one): whoever can write the folder could otherwise make Lifeboat read files outside it
//! and copy them to a replica, or delete them, with its own privileges (often root's).
//! Every operation walks from the folder one directory at a time with `openat(2)` and
//! `O_NOFOLLOW`, then acts relative to the directory it opened (`linkat`, `renameat`,
//! `unlinkat`), so a link swapped in between a check and the act cannot redirect it. Only
//! regular files are read (`O_NONBLOCK`: a planted FIFO cannot hang a command). What is not
//! covered: the staging folder is handed out as a path (packs are written there by path),
//! so a link swapped in for `tmp/` at that moment makes Lifeboat create a stray file where
//! it points; it never reads or deletes through it.

use super::{ObjectInfo, Storage};
use crate::error::{Error, ErrorKind, IoContext, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct LocalStorage {
    root: PathBuf,
    /// Recently read objects, kept open: a restore reads each pack frame by frame, and a
    /// fresh open per frame loses the kernel's readahead (cold restores waited on the disk).
    open_files: Mutex<Vec<(String, Arc<File>)>>,
}

const OPEN_FILES: usize = 16;
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const STAGING: &str = "tmp";

/// An object name split into its folders and its file name.
struct ObjectPath<'a> {
    dirs: Vec<&'a str>,
    file: &'a str,
}

fn split(name: &str) -> Result<ObjectPath<'_>> {
    let bad = || Error::integrity(format!("'{name}' is not a repository object name"));
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad());
    }
    let file = parts.pop().ok_or_else(bad)?;
    Ok(ObjectPath { dirs: parts, file })
}

fn errno_io(e: rustix::io::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// Whether `file` in folder `dir` is a symbolic link (an `O_NOFOLLOW` open of one fails with
/// ELOOP, or with ENOTDIR when `O_DIRECTORY` is asked for too).
fn is_link(dir: &OwnedFd, file: &str) -> bool {
    rustix::fs::statat(dir, file, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage {
            root: root.into(),
            open_files: Mutex::new(Vec::new()),
        }
    }

    fn open_cached(&self, name: &str) -> Result<Arc<File>> {
        let mut files = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = files.iter().position(|(n, _)| n == name) {
            let entry = files.remove(i);
            let f = entry.1.clone();
            files.push(entry);
            return Ok(f);
        }
        let f = Arc::new(self.open_object(name)?);
        if files.len() == OPEN_FILES {
            files.remove(0);
        }
        files.push((name.to_string(), f.clone()));
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// For messages: where object (or folder) `name` is.
    fn display(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn link_refused(&self, name: &str) -> Error {
        Error::new(
            ErrorKind::Trust,
            format!(
                "{} is a symbolic link; Lifeboat follows no link inside a repository (it could lead outside it)",
                self.display(name).display()
            ),
        )
        .hint("remove the link and find out who made it; to keep a repository on another disk, link (or mount) the repository's folder itself")
    }

    /// The repository's folder (which may be a link), created if `create`. None if it does
    /// not exist and `create` is false.
    fn open_root(&self, create: bool) -> Result<Option<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::open(&self.root, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(rustix::io::Errno::NOENT) if create => {
                create_private_dir(&self.root)?;
                rustix::fs::open(&self.root, flags, Mode::empty())
                    .map(Some)
                    .map_err(|e| Error::io("cannot open", &self.root, errno_io(e)))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("cannot open", &self.root, errno_io(e))),
        }
    }

    /// The folder `dirs` (relative to the repository's), opened one level at a time without
    /// following links; missing levels are created (0700, made durable) if `create`. None if
    /// a level is missing and `create` is false.
    fn open_dir(&self, dirs: &[&str], create: bool) -> Result<Option<OwnedFd>> {
        let Some(mut fd) = self.open_root(create)? else {
            return Ok(None);
        };
        for (i, dir) in dirs.iter().enumerate() {
            let here = || dirs[..=i].join("/");
            let opened = match rustix::fs::openat(&fd, *dir, DIR_FLAGS, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, *dir, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => {
                            return Err(Error::io(
                                "cannot create directory",
                                &self.display(&here()),
                                errno_io(e),
                            ))
                        }
                    }
                    // A new folder (`data/ab/`, or `backups/` on the first backup) is durable
                    // only once the folder holding it is synced; otherwise a crash can lose
                    // the entry, and every object in it, after the manifest that needs them
                    // was committed.
                    rustix::fs::fsync(&fd).map_err(|e| {
                        Error::io("cannot sync directory", &self.display(&here()), errno_io(e))
                    })?;
                    rustix::fs::openat(&fd, *dir, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            fd = match opened {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(_) if is_link(&fd, dir) => return Err(self.link_refused(&here())),
                Err(e) => {
                    return Err(Error::io(
                        "cannot open",
                        &self.display(&here()),
                        errno_io(e),
                    ))
                }
            };
        }
        Ok(Some(fd))
    }

    /// The folder a new object goes in, created if missing.
    fn object_dir(&self, dirs: &[&str]) -> Result<OwnedFd> {
        self.open_dir(dirs, true)?
            .ok_or_else(|| Error::internal("object folder not created"))
    }

    fn not_found(&self, name: &str) -> Error {
        Error::io(
            "cannot read",
            &self.display(name),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    }

    /// Object `name`, opened for reading: a regular file, reached without following links.
    fn open_object(&self, name: &str) -> Result<File> {
        let path = split(name)?;
        let dir = self
            .open_dir(&path.dirs, false)?
            .ok_or_else(|| self.not_found(name))?;
        self.open_regular(&dir, path.file, name)
    }

    /// File `file` of folder `dir` (object `name`), opened for reading: a regular file, not
    /// a link (`O_NOFOLLOW`), and opened without blocking (`O_NONBLOCK`: a FIFO cannot
    /// hold the open).
    fn open_regular(&self, dir: &OwnedFd, file: &str, name: &str) -> Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, file, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(_) if is_link(dir, file) => return Err(self.link_refused(name)),
            Err(e) => return Err(Error::io("cannot read", &self.display(name), errno_io(e))),
        };
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("cannot stat", &self.display(name), errno_io(e)))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(Error::new(
                ErrorKind::Trust,
                format!(
                    "{} is not a regular file; Lifeboat reads nothing else in a repository",
                    self.display(name).display()
                ),
            )
            .hint("remove it and find out who made it"));
        }
        Ok(File::from(fd))
    }

    /// A new private file in the staging folder: the folder, the file's name in it, and
    /// the file.
    fn create_staged(&self) -> Result<(OwnedFd, String, File)> {
        let dir = self
            .open_dir(&[STAGING], true)?
            .ok_or_else(|| Error::internal("staging folder not created"))?;
        let name = format!("{:016x}.tmp", rand::random::<u64>());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, name.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| {
                Error::io(
                    "cannot create file",
                    &self.display(&format!("{STAGING}/{name}")),
                    errno_io(e),
                )
            })?;
        Ok((dir, name, File::from(fd)))
    }

    /// Link a finished, fsynced file of the staging folder to its final name without
    /// replacing anything; the staged name is removed either way.
    fn link_into_place(&self, staging: &OwnedFd, staged: &str, name: &str) -> Result<bool> {
        let unstage = || {
            let _ = rustix::fs::unlinkat(staging, staged, AtFlags::empty());
        };
        let path = match split(name) {
            Ok(p) => p,
            Err(e) => {
                unstage();
                return Err(e);
            }
        };
        let dir = self.object_dir(&path.dirs).inspect_err(|_| unstage())?;
        let created = match rustix::fs::linkat(staging, staged, &dir, path.file, AtFlags::empty()) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => {
                unstage();
                return Err(Error::io("cannot store", &self.display(name), errno_io(e)));
            }
        };
        // Already gone is fine: the object is in place either way.
        match rustix::fs::unlinkat(staging, staged, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(|e| {
            Error::io(
                "cannot remove temporary file",
                &self.display(&format!("{STAGING}/{staged}")),
                errno_io(e),
            )
        })?;
        if created {
            rustix::fs::fsync(&dir).map_err(|e| {
                Error::io("cannot sync directory", &self.display(name), errno_io(e))
            })?;
        }
        Ok(created)
    }
}

/// Create a directory (and parents) readable only by its owner.
pub fn create_private_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .ctx("cannot create directory", path)
}

/// Create a new file readable only by its owner; fails if it exists.
pub fn create_private_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .ctx("cannot create file", path)
}

/// Replace `path` with a private (0600) file holding `data`, atomically: written beside it
/// under a name of this process, synced, renamed over it; nothing is left on failure.
pub fn write_private_file(path: &Path, data: &[u8]) -> Result<()> {
    // Unique per call: a daemon's threads may write the same file at once.
    let tmp = path.with_extension(format!(
        "tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = create_private_file(&tmp)
        .and_then(|mut f| {
            f.write_all(data)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io("cannot write", &tmp, e))
        })
        .and_then(|()| fs::rename(&tmp, path).ctx("cannot write", path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Ask the kernel to start writing a just-written range to disk now, so the fsync at the end
/// waits for the last few megabytes instead of the whole file (it cost 0.45 s per GiB here).
pub fn start_writeback(out: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor we own; it only schedules I/O.
    unsafe {
        libc::sync_file_range(
            out.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Make a directory entry (a new or renamed file) durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .ctx("cannot sync directory", path)
}

impl Storage for LocalStorage {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        if self.exists(name)? {
            return Ok(false);
        }
        let (staging, staged, mut f) = self.create_staged()?;
        if let Err(e) = f.write_all(data).and_then(|_| f.sync_all()) {
            let _ = rustix::fs::unlinkat(&staging, staged.as_str(), AtFlags::empty());
            return Err(Error::io("cannot write", &self.display(STAGING), e));
        }
        self.link_into_place(&staging, &staged, name)
    }

    fn put_replace(&self, name: &str, data: &[u8]) -> Result<()> {
        let path = split(name)?;
        let (staging, staged, mut f) = self.create_staged()?;
        let unstage = || {
            let _ = rustix::fs::unlinkat(&staging, staged.as_str(), AtFlags::empty());
        };
        if let Err(e) = f.write_all(data).and_then(|_| f.sync_all()) {
            unstage();
            return Err(Error::io("cannot write", &self.display(STAGING), e));
        }
        let dir = self.object_dir(&path.dirs).inspect_err(|_| unstage())?;
        // renameat replaces a link at the final name rather than following it.
        if let Err(e) = rustix::fs::renameat(&staging, staged.as_str(), &dir, path.file) {
            unstage();
            return Err(Error::io("cannot store", &self.display(name), errno_io(e)));
        }
        rustix::fs::fsync(&dir)
            .map_err(|e| Error::io("cannot sync directory", &self.display(name), errno_io(e)))
    }

    fn put_file_new(&self, name: &str, staged: &Path) -> Result<bool> {
        let staging_dir = self.display(STAGING);
        let file = staged
            .strip_prefix(&staging_dir)
            .ok()
            .map(Path::as_os_str)
            .filter(|f| !f.is_empty() && !f.as_bytes().contains(&b'/'))
            .ok_or_else(|| {
                Error::internal(format!(
                    "{} is not a file of the staging folder {}",
                    staged.display(),
                    staging_dir.display()
                ))
            })?;
        let file = OsStr::to_string_lossy(file).into_owned();
        let staging = self
            .open_dir(&[STAGING], false)?
            .ok_or_else(|| self.not_found(STAGING))?;
        // Synced through a descriptor opened like any object's: what was swapped in for the
        // staged file (a link, a FIFO) is refused, not followed or waited on.
        let shown = format!("{STAGING}/{file}");
        self.open_regular(&staging, &file, &shown)?
            .sync_all()
            .ctx("cannot sync", staged)?;
        self.link_into_place(&staging, &file, name)
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        self.open_dir(&[STAGING], true)?;
        Ok(self.display(STAGING))
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        self.open_object(name)?
            .read_to_end(&mut out)
            .ctx("cannot read", &self.display(name))?;
        Ok(out)
    }

    fn get_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let f = self.open_object(name)?;
        let size = f.metadata().ctx("cannot stat", &self.display(name))?.len();
        super::check_small(self, name, size, max)?;
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .ctx("cannot read", &self.display(name))?;
        super::check_small(self, name, out.len() as u64, max)?;
        Ok(out)
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = self.open_cached(name)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::integrity(format!(
                    "{} is truncated: wanted {len} bytes at offset {offset}",
                    self.display(name).display()
                ))
            } else {
                Error::io("cannot read", &self.display(name), e)
            }
        })?;
        Ok(buf)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        // Folders still to list, by name: one descriptor open at a time, however many
        // folders there are (each is opened from the repository's folder down, no link
        // followed).
        let mut pending = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir_name) = pending.pop() {
            let dirs: Vec<&str> = if dir_name.is_empty() {
                Vec::new()
            } else {
                dir_name.split('/').collect()
            };
            if dirs.iter().any(|d| d.is_empty() || *d == "." || *d == "..") {
                return Err(Error::integrity(format!(
                    "'{prefix}' is not a repository object name"
                )));
            }
            let Some(fd) = self.open_dir(&dirs, false)? else {
                continue; // missing (or removed since it was listed)
            };
            let here = self.display(&dir_name);
            let entries = rustix::fs::Dir::read_from(&fd)
                .map_err(|e| Error::io("cannot list", &here, errno_io(e)))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("cannot list", &here, errno_io(e)))?;
                let file = entry.file_name().to_bytes();
                if file == b"." || file == b".." {
                    continue;
                }
                let file = String::from_utf8_lossy(file).into_owned();
                let name = if dir_name.is_empty() {
                    file.clone()
                } else {
                    format!("{dir_name}/{file}")
                };
                let stat = match rustix::fs::statat(&fd, file.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(s) => s,
                    // Removed between listing and stat (a temp file being renamed): skip it.
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => {
                        return Err(Error::io("cannot stat", &self.display(&name), errno_io(e)))
                    }
                };
                match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Symlink => tracing::warn!(
                        "{} is a symbolic link; ignored (Lifeboat follows no link inside a repository)",
                        self.display(&name).display()
                    ),
                    FileType::Directory => pending.push(name),
                    FileType::RegularFile => out.push(ObjectInfo {
                        name,
                        size: stat.st_size.max(0) as u64,
                    }),
                    _ => tracing::warn!(
                        "{} is not a regular file; ignored",
                        self.display(&name).display()
                    ),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = split(name)?;
        let Some(dir) = self.open_dir(&path.dirs, false)? else {
            return Ok(false);
        };
        match rustix::fs::statat(&dir, path.file, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) if FileType::from_raw_mode(s.st_mode) == FileType::Symlink => {
                Err(self.link_refused(name))
            }
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("cannot stat", &self.display(name), errno_io(e))),
        }
    }

    fn remove_staged_leftovers(&self, older_than: std::time::Duration) -> Result<usize> {
        let Some(dir) = self.open_dir(&[STAGING], false)? else {
            return Ok(0);
        };
        let here = self.display(STAGING);
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        let entries = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| Error::io("cannot list", &here, errno_io(e)))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot list", &here, errno_io(e)))?;
            let file = entry.file_name();
            if matches!(file.to_bytes(), b"." | b"..") {
                continue;
            }
            let stat = match rustix::fs::statat(&dir, file, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    return Err(Error::io(
                        "cannot stat",
                        &here.join(OsStr::from_bytes(file.to_bytes())),
                        errno_io(e),
                    ))
                }
            };
            if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                continue;
            }
            let written =
                std::time::UNIX_EPOCH + std::time::Duration::new(stat.st_mtime.max(0) as u64, 0);
            if now.duration_since(written).unwrap_or_default() < older_than {
                continue;
            }
            match rustix::fs::unlinkat(&dir, file, AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::io(
                        "cannot delete",
                        &here.join(OsStr::from_bytes(file.to_bytes())),
                        errno_io(e),
                    ))
                }
            }
        }
        Ok(removed)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = split(name)?;
        let Some(dir) = self.open_dir(&path.dirs, false)? else {
            return Ok(());
        };
        // unlinkat removes a link itself, never what it points to.
        match rustix::fs::unlinkat(&dir, path.file, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("cannot delete", &self.display(name), errno_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn put_new_is_create_only_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("repo"));
        assert!(s.put_new("backups/a", b"one").unwrap());
        assert!(!s.put_new("backups/a", b"two").unwrap());
        assert_eq!(s.get("backups/a").unwrap(), b"one");
        let mode = fs::metadata(dir.path().join("repo/backups/a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(s.list("backups/").unwrap().len(), 1);
        assert!(
            s.list("tmp/").unwrap().is_empty(),
            "no temp file left behind"
        );
        assert_eq!(s.get_range("backups/a", 1, 2).unwrap(), b"ne");
        assert_eq!(
            s.get_range("backups/a", 2, 5).unwrap_err().kind,
            crate::error::ErrorKind::Integrity
        );
    }

    #[test]
    fn no_link_inside_the_folder_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"root only").unwrap();
        let s = LocalStorage::new(dir.path().join("repo"));
        s.put_new("backups/a", b"one").unwrap();
        // A file link: not read, not listed.
        std::os::unix::fs::symlink(outside.join("secret"), dir.path().join("repo/keys")).unwrap();
        assert!(s.get("keys").is_err());
        assert!(s.list("").unwrap().iter().all(|o| o.name != "keys"));
        // A folder link: not listed through, not written or deleted through.
        fs::remove_dir_all(dir.path().join("repo/tmp")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join("repo/tmp")).unwrap();
        assert!(s.list("tmp/").is_err());
        assert!(s.delete("tmp/secret").is_err());
        assert!(
            s.put_new("backups/b", b"two").is_err(),
            "staging through a link"
        );
        assert!(s.get("tmp/secret").is_err());
        assert!(s.get("../outside/secret").is_err());
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"root only");
        // The repository's folder itself may be a link.
        let linked = LocalStorage::new(dir.path().join("link-to-repo"));
        std::os::unix::fs::symlink(dir.path().join("repo"), dir.path().join("link-to-repo"))
            .unwrap();
        assert_eq!(linked.get("backups/a").unwrap(), b"one");
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path().join("repo"));
        s.put_new("keys/a", b"one").unwrap();
        let fifo = dir.path().join("repo/keys/0123456789abcdef");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Read without a writer on the other end: refused at once, not a hang.
        let e = s.get("keys/0123456789abcdef").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Trust, "{e}");
        let listed: Vec<String> = s
            .list("keys/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(listed, ["keys/a"]);
        // A FIFO swapped in for a staged file: refused, not waited on.
        let staged = s.staging_dir().unwrap().join("0000000000000001.tmp");
        let c = std::ffi::CString::new(staged.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = s.put_file_new("data/ab/abab", &staged).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Trust, "{e}");
        assert!(!s.exists("data/ab/abab").unwrap());
        assert!(s.get("keys").is_err(), "a folder is not an object");
        assert!(s.get("keys/").is_err());
        assert!(s.get("keys//a").is_err());
    }
}
