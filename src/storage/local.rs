//! A repository in a local folder. Objects are written to `tmp/`, fsynced, then hard-linked
//! into place: `link(2)` fails if the name exists, which gives create-only semantics that
//! `rename(2)` would not, and a crash leaves only a stray file in `tmp/`.
//!
//! No symbolic link below the repository's folder is followed (the folder itself may be
//! one): whoever can write the folder could otherwise make Lifeboat read files outside it
//! and copy them to a replica, or delete them, with its own privileges (often root's).

use super::{ObjectInfo, Storage};
use crate::error::{Error, IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
        let p = self.path(name)?;
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .ctx("cannot open", &p)?,
        );
        if files.len() == OPEN_FILES {
            files.remove(0);
        }
        files.push((name.to_string(), f.clone()));
        Ok(f)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of object `name`, refusing one that leaves the folder or goes through a
    /// symbolic link.
    fn path(&self, name: &str) -> Result<PathBuf> {
        let mut p = self.root.clone();
        for part in Path::new(name).components() {
            match part {
                std::path::Component::Normal(c) => p.push(c),
                _ => {
                    return Err(Error::integrity(format!(
                        "'{name}' is not a repository object name"
                    )))
                }
            }
            if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Error::new(
                    crate::error::ErrorKind::Trust,
                    format!(
                        "{} is a symbolic link; Lifeboat follows no link inside a repository (it could lead outside it)",
                        p.display()
                    ),
                )
                .hint("remove the link and find out who made it; to keep a repository on another disk, link (or mount) the repository's folder itself"));
            }
        }
        Ok(p)
    }

    fn temp_path(&self) -> Result<PathBuf> {
        let dir = self.staging_dir()?;
        Ok(dir.join(format!("{:016x}.tmp", rand::random::<u64>())))
    }

    /// Link a finished, fsynced temp file to its final name without replacing anything.
    fn link_into_place(&self, tmp: &Path, name: &str) -> Result<bool> {
        let dest = self.path(name)?;
        if let Some(parent) = dest.parent() {
            let mut created = Vec::new();
            let mut dir = Some(parent);
            while let Some(d) = dir.filter(|d| !d.exists()) {
                created.push(d);
                dir = d.parent();
            }
            create_private_dir(parent)?;
            // A new directory (`data/ab/`, or `backups/` on the first backup) is durable only
            // once the directory holding it is synced; otherwise a crash can lose the entry,
            // and every object in it, after the manifest that needs them was committed.
            for d in created.iter().rev() {
                if let Some(up) = d.parent() {
                    sync_dir(up)?;
                }
            }
        }
        let created = match fs::hard_link(tmp, &dest) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                let _ = fs::remove_file(tmp);
                return Err(Error::io("cannot store", &dest, e));
            }
        };
        fs::remove_file(tmp).ctx("cannot remove temporary file", tmp)?;
        if created {
            if let Some(parent) = dest.parent() {
                sync_dir(parent)?;
            }
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
        if self.path(name)?.exists() {
            return Ok(false);
        }
        let tmp = self.temp_path()?;
        let mut f = create_private_file(&tmp)?;
        let written = f.write_all(data).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("cannot write", &tmp, e));
        }
        self.link_into_place(&tmp, name)
    }

    fn put_replace(&self, name: &str, data: &[u8]) -> Result<()> {
        let tmp = self.temp_path()?;
        let mut f = create_private_file(&tmp)?;
        let dest = match self.path(name) {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let written = f
            .write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("cannot write", &tmp, e))
            .and_then(|_| match dest.parent() {
                Some(parent) => create_private_dir(parent),
                None => Ok(()),
            })
            .and_then(|_| fs::rename(&tmp, &dest).ctx("cannot store", &dest));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn put_file_new(&self, name: &str, staged: &Path) -> Result<bool> {
        File::open(staged)
            .and_then(|f| f.sync_all())
            .ctx("cannot sync", staged)?;
        self.link_into_place(staged, name)
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        let dir = self.path("tmp")?;
        create_private_dir(&dir)?;
        Ok(dir)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        let p = self.path(name)?;
        let mut out = Vec::new();
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .and_then(|mut f| f.read_to_end(&mut out))
            .ctx("cannot read", &p)?;
        Ok(out)
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let p = self.path(name)?;
        let f = self.open_cached(name)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::integrity(format!(
                    "{} is truncated: wanted {len} bytes at offset {offset}",
                    p.display()
                ))
            } else {
                Error::io("cannot read", &p, e)
            }
        })?;
        Ok(buf)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let base = if prefix.trim_end_matches('/').is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        if !base.exists() {
            return Ok(out);
        }
        let mut stack = vec![base];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).ctx("cannot list", &dir)? {
                let entry = entry.ctx("cannot list", &dir)?;
                if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                    tracing::warn!(
                        "{} is a symbolic link; ignored (Lifeboat follows no link inside a repository)",
                        entry.path().display()
                    );
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Removed between listing and stat (a temp file being renamed): skip it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("cannot stat", &entry.path(), e)),
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if let Ok(rel) = entry.path().strip_prefix(&self.root) {
                    out.push(ObjectInfo {
                        name: rel.to_string_lossy().into_owned(),
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.path(name)?.exists())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let p = self.path(name)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot delete", &p, e)),
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
}
