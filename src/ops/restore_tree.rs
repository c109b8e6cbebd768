//! Restore of a `tree` backup (files and folders) into a folder: every chunk checked against
//! its id, modes and modification times put back, links recreated as links.
//!
//! A new folder is built beside the target under a temporary name and renamed into place
//! when complete, so an interrupted restore leaves no half-restored folder. Over an existing
//! folder (`overwrite`, the CLI's `--yes`) each file is written to a temporary name and
//! renamed over the old one.
//!
//! Entry paths come from the repository, which may be written by an attacker: a path that is
//! absolute, holds `..` or `.`, or whose parent is not a folder of the same tree is refused,
//! and nothing is created through a symbolic link (a link in the tree, or one already in an
//! existing target folder).

use crate::error::{Error, IoContext, Result};
use crate::id::Hash;
use crate::ops::restore::{RestoreOutcome, RestoreTarget};
use crate::progress::Progress;
use crate::repo::index::Index;
use crate::repo::manifest::{Content, Manifest};
use crate::repo::tree::{decode_node, EntryKind, TreeEntry};
use crate::repo::{FrameCache, Repository};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TreeRestored {
    pub path: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Files whose secret values were redacted at backup time and must be filled in.
    pub redacted: Vec<crate::repo::manifest::RedactedFile>,
}

/// The restore target of a tree: a new folder, built under a temporary name beside it and
/// renamed into place when complete; or, with `overwrite`, an existing folder whose files of
/// the same names are replaced one by one.
pub struct FolderTarget {
    output: PathBuf,
    overwrite: bool,
    exists: bool,
    /// The folder being built (removed unless committed).
    staging: Option<PathBuf>,
    done: TreeRestored,
}

impl FolderTarget {
    pub fn new(output: PathBuf, overwrite: bool) -> FolderTarget {
        FolderTarget {
            output,
            overwrite,
            exists: false,
            staging: None,
            done: TreeRestored::default(),
        }
    }
}

impl Drop for FolderTarget {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            let _ = std::fs::remove_dir_all(&staging).or_else(|_| std::fs::remove_file(&staging));
        }
    }
}

impl RestoreTarget for FolderTarget {
    fn prepare(&mut self, _: &Repository, m: &Manifest, _: &Progress) -> Result<()> {
        if !matches!(m.content, Content::Tree { .. }) {
            return Err(Error::usage(format!(
                "backup {} is a database image, not files",
                m.id
            )));
        }
        self.exists = std::fs::symlink_metadata(&self.output).is_ok();
        if self.exists && !self.overwrite {
            return Err(
                Error::usage(format!("{} already exists", self.output.display())).hint(
                    "choose a new --output folder, or add --yes to write over the files of the same names there",
                ),
            );
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
        let Content::Tree { nodes, bytes, .. } = &m.content else {
            return Err(Error::internal("a folder target for an image"));
        };
        progress.start("restore", *bytes);
        self.done = TreeRestored {
            path: self.output.clone(),
            redacted: m
                .files
                .as_ref()
                .map(|f| f.redacted.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let root = if self.exists {
            self.output.clone()
        } else {
            let staging = staging_beside(&self.output)?;
            self.staging = Some(staging.clone());
            staging
        };
        let mut w = TreeWriterFs::new(repo, index, root);
        w.restore_all(nodes, &mut self.done, progress)?;
        w.finish_dirs()?;
        progress.finish();
        Ok(())
    }

    fn verify(&mut self, m: &Manifest) -> Result<()> {
        let Content::Tree { entries, bytes, .. } = &m.content else {
            return Err(Error::internal("a folder target for an image"));
        };
        let d = &self.done;
        let restored = d.files + d.dirs + d.symlinks;
        if restored != *entries || d.bytes != *bytes {
            return Err(Error::integrity(format!(
                "backup {} restored {restored} entries of {} bytes, not the {entries} of {bytes} \
                 its manifest records",
                m.id, d.bytes
            )));
        }
        Ok(())
    }

    fn commit(&mut self, m: &Manifest) -> Result<RestoreOutcome> {
        if let Some(staging) = self.staging.take() {
            // rename(2) of a folder does not replace a file, or a folder that is not empty,
            // that appeared meanwhile; but rename(2) of a file (or link: a tree whose root is
            // one) replaces any file, so those are linked into place, as a new image is.
            let is_dir = std::fs::symlink_metadata(&staging).is_ok_and(|m| m.is_dir());
            let put = if is_dir {
                std::fs::rename(&staging, &self.output)
            } else {
                std::fs::hard_link(&staging, &self.output)
                    .and_then(|()| std::fs::remove_file(&staging))
            };
            if let Err(e) = put {
                self.staging = Some(staging);
                return Err(Error::io("cannot create", &self.output, e));
            }
            crate::storage::local::sync_dir(
                self.output
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?;
        }
        Ok(RestoreOutcome {
            backup_id: m.id.clone(),
            path: self.output.clone(),
            bytes: self.done.bytes,
            safety_backup: None,
            moved_aside: Vec::new(),
            tree: Some(std::mem::take(&mut self.done)),
        })
    }
}

/// A new, private name beside `target` for building the restore.
fn staging_beside(target: &Path) -> Result<PathBuf> {
    let (dir, name) = crate::ops::restore::beside(target);
    if !dir.is_dir() {
        return Err(
            Error::not_found(format!("folder {} does not exist", dir.display()))
                .hint("create it first, or choose another --output"),
        );
    }
    Ok(dir.join(format!(
        ".{name}.lifeboat-{:08x}.tmp",
        rand::random::<u32>()
    )))
}

/// A folder of the tree being restored, held open: every name inside it is created,
/// replaced and timed relative to this descriptor, so a folder swapped for a link meanwhile
/// (by someone who can write the target) cannot send a file elsewhere.
struct OpenDir {
    rel: Vec<u8>,
    fd: OwnedFd,
    mode: u32,
    mtime_ns: i64,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

struct TreeWriterFs<'a> {
    repo: &'a Repository,
    index: &'a Index,
    root: PathBuf,
    cache: FrameCache,
    /// The folders from the root to the last one entered. Entries come in path order (a
    /// folder, then what it holds), so an entry's parent is on this stack, and a folder is
    /// complete (its mode and time can be set) when it is popped.
    open: Vec<OpenDir>,
    root_is_file: bool,
}

impl<'a> TreeWriterFs<'a> {
    fn new(repo: &'a Repository, index: &'a Index, root: PathBuf) -> Self {
        TreeWriterFs {
            repo,
            index,
            root,
            cache: FrameCache::default(),
            open: Vec::new(),
            root_is_file: false,
        }
    }

    fn restore_all(
        &mut self,
        nodes: &[String],
        out: &mut TreeRestored,
        progress: &Progress,
    ) -> Result<()> {
        for hex in nodes {
            let id = Hash::from_hex(hex)?;
            let data = self
                .repo
                .read_blob_cached(self.index, &id, &mut self.cache)?;
            for entry in decode_node(&data, &id)? {
                crate::interrupt::check()?;
                self.restore_entry(&entry, out, progress)?;
            }
        }
        Ok(())
    }

    fn shown(&self, raw: &[u8]) -> PathBuf {
        if raw.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(raw))
        }
    }

    /// The open folder an entry goes in and its name there, after checking its path is one
    /// a tree can hold: `path_inside` the folders restored so far, its parent being the
    /// folder entered last or one above it.
    fn place(&mut self, raw: &[u8]) -> Result<(usize, Vec<u8>)> {
        // The name shown is the one that would be written (`path_hex` when present), never
        // the text beside it, which a forged entry may make look harmless.
        let bad = || {
            Error::integrity(format!(
                "the backup holds a file named '{}', which is not a path inside the folder; \
                 nothing is written outside it",
                String::from_utf8_lossy(raw)
            ))
            .hint("the repository may have been tampered with: run `lifeboat repo check`")
        };
        if self.root_is_file {
            return Err(bad());
        }
        if !path_inside(raw, |parent| self.open.iter().any(|d| d.rel == parent)) {
            return Err(bad());
        }
        let (parent, name) = match raw.iter().rposition(|&b| b == b'/') {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => (&b""[..], raw),
        };
        // Folders entered since the parent are complete: entries come in path order.
        while self.open.last().is_some_and(|d| d.rel != parent) {
            self.close_dir()?;
        }
        Ok((self.open.len() - 1, name.to_vec()))
    }

    /// Set the mode and time of the folder entered last, now complete, and close it.
    fn close_dir(&mut self) -> Result<()> {
        if let Some(d) = self.open.pop() {
            let path = self.shown(&d.rel);
            rustix::fs::fchmod(&d.fd, Mode::from_raw_mode(d.mode & 0o7777))
                .map_err(|e| Error::io("cannot set the mode of", &path, e.into()))?;
            rustix::fs::futimens(&d.fd, &timestamps(d.mtime_ns))
                .map_err(|e| Error::io("cannot set the time of", &path, e.into()))?;
        }
        Ok(())
    }

    /// Close every folder still open, the root last; then make everything written durable
    /// with one `syncfs` of the file system holding it (a restore of 2,000 small files spent
    /// most of its time in one fsync per file).
    fn finish_dirs(&mut self) -> Result<()> {
        let root = match self.open.first() {
            Some(d) => Some(d.fd.try_clone().ctx("cannot open", &self.root)?),
            None => None,
        };
        while !self.open.is_empty() {
            self.close_dir()?;
        }
        if let Some(root) = root {
            rustix::fs::syncfs(&root)
                .map_err(|e| Error::io("cannot sync the files under", &self.root, e.into()))?;
        }
        Ok(())
    }

    fn restore_entry(
        &mut self,
        entry: &TreeEntry,
        out: &mut TreeRestored,
        progress: &Progress,
    ) -> Result<()> {
        let raw = entry.path_bytes()?;
        if raw.is_empty() {
            return self.restore_root(entry, out, progress);
        }
        let (at, name) = self.place(&raw)?;
        let path = self.shown(&raw);
        let name = OsStr::from_bytes(&name);
        let dir = &self.open[at].fd;
        let existing = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode as _)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(Error::io("cannot read", &path, e.into())),
        };
        let is_dir = existing == Some(FileType::Directory);
        match entry.kind {
            EntryKind::Dir => {
                match existing {
                    Some(_) if is_dir => {}
                    Some(_) => {
                        return Err(Error::usage(format!(
                            "{} exists and is not a folder",
                            path.display()
                        ))
                        .hint("move it away, or restore to a new folder"))
                    }
                    None => rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| Error::io("cannot create", &path, e.into()))?,
                }
                let fd = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| Error::io("cannot open", &path, e.into()))?;
                self.open.push(OpenDir {
                    rel: raw,
                    fd,
                    mode: entry.mode,
                    mtime_ns: entry.mtime_ns,
                });
                out.dirs += 1;
            }
            EntryKind::Symlink => {
                let target = entry.target_bytes()?.ok_or_else(|| {
                    Error::integrity(format!("link {} has no target", entry.path))
                })?;
                if is_dir {
                    return Err(Error::usage(format!(
                        "{} exists and is a folder",
                        path.display()
                    )));
                }
                if existing.is_some() {
                    rustix::fs::unlinkat(dir, name, AtFlags::empty())
                        .map_err(|e| Error::io("cannot replace", &path, e.into()))?;
                }
                rustix::fs::symlinkat(OsStr::from_bytes(&target), dir, name)
                    .map_err(|e| Error::io("cannot create link", &path, e.into()))?;
                rustix::fs::utimensat(
                    dir,
                    name,
                    &timestamps(entry.mtime_ns),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("cannot set the time of", &path, e.into()))?;
                out.symlinks += 1;
            }
            EntryKind::File => {
                if is_dir {
                    return Err(Error::usage(format!(
                        "{} exists and is a folder",
                        path.display()
                    )));
                }
                let written = self.write_file_at(at, name, entry, &path, progress)?;
                out.files += 1;
                out.bytes += written;
            }
        }
        Ok(())
    }

    /// The tree's root: a folder (created here, or the existing target with `--yes`), or the
    /// single file of a one-file backup.
    fn restore_root(
        &mut self,
        entry: &TreeEntry,
        out: &mut TreeRestored,
        progress: &Progress,
    ) -> Result<()> {
        if !self.open.is_empty() || self.root_is_file {
            return Err(Error::integrity(
                "the backup names the root of its tree twice",
            ));
        }
        let root = self.root.clone();
        match entry.kind {
            EntryKind::Dir => {
                if std::fs::symlink_metadata(&root).is_err() {
                    crate::storage::local::create_private_dir(&root)?;
                }
                let fd = rustix::fs::openat(rustix::fs::CWD, &root, DIR_FLAGS, Mode::empty())
                    .map_err(|e| match e {
                        Errno::LOOP | Errno::NOTDIR => Error::usage(format!(
                            "{} is not a folder (or is a link to one)",
                            root.display()
                        ))
                        .hint("restore to a new folder"),
                        e => Error::io("cannot open", &root, e.into()),
                    })?;
                self.open.push(OpenDir {
                    rel: Vec::new(),
                    fd,
                    mode: entry.mode,
                    mtime_ns: entry.mtime_ns,
                });
                out.dirs += 1;
            }
            EntryKind::File => {
                self.root_is_file = true;
                let written = self.write_file(entry, &root, progress)?;
                out.files += 1;
                out.bytes += written;
            }
            EntryKind::Symlink => {
                // A backup of a link alone: the link, never what it points to.
                self.root_is_file = true;
                let target = entry.target_bytes()?.ok_or_else(|| {
                    Error::integrity(format!("link {} has no target", root.display()))
                })?;
                if std::fs::symlink_metadata(&root).is_ok() {
                    std::fs::remove_file(&root).ctx("cannot replace", &root)?;
                }
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &root)
                    .ctx("cannot create link", &root)?;
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &root,
                    &timestamps(entry.mtime_ns),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::io("cannot set the time of", &root, e.into()))?;
                out.symlinks += 1;
            }
        }
        Ok(())
    }

    /// Write a file's chunks to a new temporary name in the open folder `at`, then rename
    /// it over `name` there.
    fn write_file_at(
        &mut self,
        at: usize,
        name: &OsStr,
        entry: &TreeEntry,
        path: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let tmp_name = format!(".lifeboat-{:016x}.tmp", rand::random::<u64>());
        let dir = self.open[at].fd.try_clone().ctx("cannot open", path)?;
        let flags = OFlags::WRONLY
            .union(OFlags::CREATE)
            .union(OFlags::EXCL)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        let fd = rustix::fs::openat(&dir, tmp_name.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| Error::io("cannot create a file beside", path, e.into()))?;
        let mut file = std::fs::File::from(fd);
        let written = self.fill(&mut file, entry, path, progress).and_then(|n| {
            finish_file(&file, entry, path)?;
            rustix::fs::renameat(&dir, tmp_name.as_str(), &dir, name)
                .map_err(|e| Error::io("cannot create", path, e.into()))?;
            Ok(n)
        });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp_name.as_str(), AtFlags::empty());
        }
        written
    }

    /// Write a one-file tree to a temporary file beside `path`, then rename it there.
    fn write_file(&mut self, entry: &TreeEntry, path: &Path, progress: &Progress) -> Result<u64> {
        let mut tmp = crate::ops::restore::TempFile::beside(path)?;
        let mut file = tmp
            .file
            .take()
            .ok_or_else(|| Error::internal("temp file closed"))?;
        let written = self.fill(&mut file, entry, path, progress)?;
        finish_file(&file, entry, path)?;
        file.sync_all().ctx("cannot sync", path)?;
        drop(file);
        std::fs::rename(&tmp.path, path).map_err(|e| Error::io("cannot create", path, e))?;
        tmp.keep();
        Ok(written)
    }

    /// A file's chunks, each checked against its id, written to `file`; its size checked.
    fn fill(
        &mut self,
        file: &mut std::fs::File,
        entry: &TreeEntry,
        path: &Path,
        progress: &Progress,
    ) -> Result<u64> {
        let ids = entry.chunk_ids()?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(FILL_THREADS);
        if ids.len() >= PARALLEL_FILL_CHUNKS && threads > 1 {
            let written =
                fill_parallel(self.repo, self.index, file, &ids, threads, path, progress)?;
            return check_size(entry, written);
        }
        let mut written = 0u64;
        let mut w = std::io::BufWriter::new(&mut *file);
        for id in ids {
            let chunk = self
                .repo
                .read_blob_cached(self.index, &id, &mut self.cache)?;
            w.write_all(&chunk).ctx("cannot write", path)?;
            written += chunk.len() as u64;
            progress.inc(chunk.len() as u64);
        }
        w.flush().ctx("cannot write", path)?;
        check_size(entry, written)
    }
}

/// Files of at least this many chunks (a PostgreSQL relation segment is 131,072 pages) are
/// filled by several threads, each reading, checking and writing a stretch of the file:
/// reading a chunk (decompress, decrypt, hash) costs more CPU than writing it.
const PARALLEL_FILL_CHUNKS: usize = 1024;
const FILL_THREADS: usize = 4;

fn check_size(entry: &TreeEntry, written: u64) -> Result<u64> {
    if written != entry.size {
        return Err(Error::integrity(format!(
            "{} restores to {written} bytes but the backup recorded {}",
            entry.path, entry.size
        )));
    }
    Ok(written)
}

/// Fill `file` with the chunks `ids` using `threads` threads, each its own stretch of
/// consecutive chunks (neighbours share frames) written at its offset, known from the
/// index's chunk lengths; every chunk checked against its id as ever.
fn fill_parallel(
    repo: &Repository,
    index: &Index,
    file: &std::fs::File,
    ids: &[Hash],
    threads: usize,
    path: &Path,
    progress: &Progress,
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut offsets = Vec::with_capacity(ids.len());
    let mut total = 0u64;
    for id in ids {
        offsets.push(total);
        total += index.get(id).map(|l| l.len as u64).ok_or_else(|| {
            Error::integrity(format!(
                "{} needs blob {}, which no index file locates",
                path.display(),
                id.short()
            ))
        })?;
    }
    let per = ids.len().div_ceil(threads);
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(per)
            .enumerate()
            .map(|(t, part)| {
                let start = offsets[t * per];
                s.spawn(move || -> Result<u64> {
                    let mut cache = FrameCache::default();
                    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
                    let mut at = start;
                    let mut written = 0u64;
                    for id in part {
                        crate::interrupt::check()?;
                        let chunk = repo.read_blob_cached(index, id, &mut cache)?;
                        buf.extend_from_slice(&chunk);
                        progress.inc(chunk.len() as u64);
                        if buf.len() >= 1 << 20 {
                            file.write_all_at(&buf, at).ctx("cannot write", path)?;
                            at += buf.len() as u64;
                            written += buf.len() as u64;
                            buf.clear();
                        }
                    }
                    file.write_all_at(&buf, at).ctx("cannot write", path)?;
                    Ok(written + buf.len() as u64)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a restore thread panicked")))
            })
            .collect()
    });
    let mut written = 0;
    for r in results {
        written += r?;
    }
    if written != total {
        return Err(Error::integrity(format!(
            "{} restored {written} bytes where its chunks hold {total}",
            path.display()
        )));
    }
    Ok(written)
}

/// Mode and time of a written file (made durable with the rest of the tree, by
/// `finish_dirs`). Never setuid or setgid: owners are not restored, so the file belongs to
/// whoever restores it, and a program that ran as its owner (or one an unencrypted
/// repository's writer chose) would run as root after a restore by root.
fn finish_file(file: &std::fs::File, entry: &TreeEntry, path: &Path) -> Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(entry.mode & 0o1777))
        .ctx("cannot set the mode of", path)?;
    rustix::fs::futimens(file, &timestamps(entry.mtime_ns))
        .map_err(|e| Error::io("cannot set the time of", path, e.into()))
}

fn timestamps(mtime_ns: i64) -> rustix::fs::Timestamps {
    let ts = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// Whether `raw` (a non-empty entry path) names something inside the tree: relative, no
/// empty, `.` or `..` component, no NUL, and its parent is a folder of the tree already
/// restored (so nothing is reached through a link, or through a folder the tree does not
/// hold).
fn path_inside(raw: &[u8], is_dir: impl Fn(&[u8]) -> bool) -> bool {
    if raw.starts_with(b"/") || raw.contains(&0) {
        return false;
    }
    let parts: Vec<&[u8]> = raw.split(|&b| b == b'/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == b"." || *p == b"..")
    {
        return false;
    }
    let parent = &raw[..raw.len() - parts[parts.len() - 1].len()];
    let parent = parent.strip_suffix(b"/").unwrap_or(parent);
    is_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn only_paths_inside_restored_folders_are_written() {
        let dirs: HashSet<Vec<u8>> = [b"".to_vec(), b"etc".to_vec(), b"etc/app".to_vec()]
            .into_iter()
            .collect();
        for ok in [
            &b"a.conf"[..],
            b"etc/x",
            b"etc/app/y.toml",
            b"etc/app/..hidden",
            b"caf\xe9",
        ] {
            assert!(
                path_inside(ok, |p| dirs.contains(p)),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"../escape"[..],
            b"/etc/passwd",
            b"etc/../../x",
            b"etc//x",
            b"./x",
            b"etc/app/.",
            b"nul\0byte",
            // A parent the tree did not restore as a folder (a link named `link`).
            b"link/passwd",
            b"etc/missing/x",
        ] {
            assert!(
                !path_inside(bad, |p| dirs.contains(p)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
