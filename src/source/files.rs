//! Files and folders (an application's configuration) as a [`Source`]: a tree in path order,
//! each file cut by content, values of secret-looking keys redacted in the formats
//! `source::redact` understands.
//!
//! Nothing is followed: a symbolic link is stored as a link, and special files (sockets,
//! FIFOs, devices) are skipped with a warning. A file that changes while it is read is stored
//! as read; configuration is small and read whole when it is redacted. A name replaced while
//! the walk passes it (a file swapped for a link, a folder for a link to another folder)
//! stops the backup: every name is looked at and opened relative to its folder's descriptor,
//! never through a link.

use super::redact::{format_of, Redactor};
use super::{BackedUp, ContentWriter, Kind, Source, SourceFacts, TreeWriter};
use crate::error::{Error, IoContext, Result};
use crate::repo::manifest::{FilesInfo, RedactedFile};
use crate::repo::tree::{encode_name, EntryKind, TreeEntry};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of a files backup (`--exclude`, `--redact`, `--no-redact`).
#[derive(Debug, Clone, Default)]
pub struct FilesOptions {
    /// Globs over paths relative to the backed-up folder (`*.log`, `cache/**`); a folder
    /// that matches is skipped whole.
    pub exclude: Vec<String>,
    /// Key patterns whose values are redacted besides the defaults.
    pub redact: Vec<String>,
    /// Store every file as it is.
    pub no_redact: bool,
}

/// Files of a format that is redacted are read whole; a larger one cannot be redacted and
/// stops the backup, like any other file that cannot be (storing it as it is would store its
/// secrets).
const REDACT_MAX: u64 = 16 << 20;

pub struct FilesSource {
    root: PathBuf,
    exclude: globset::GlobSet,
    redactor: Option<Redactor>,
    opts: FilesOptions,
}

impl FilesSource {
    pub fn new(root: &Path, opts: &FilesOptions) -> Result<FilesSource> {
        let mut set = globset::GlobSetBuilder::new();
        for pattern in &opts.exclude {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map_err(|e| {
                    Error::usage(format!("--exclude '{pattern}' is not a valid pattern: {e}"))
                })?;
            set.add(glob);
        }
        let exclude = set
            .build()
            .map_err(|e| Error::usage(format!("--exclude patterns: {e}")))?;
        // `--redact` adds to the defaults: naming one more key must never stop the
        // passwords from being redacted.
        let redactor = if opts.no_redact {
            None
        } else {
            Some(Redactor::new(&patterns(opts))?)
        };
        Ok(FilesSource {
            root: root.to_path_buf(),
            exclude,
            redactor,
            opts: opts.clone(),
        })
    }

    fn excluded(&self, rel: &Path) -> bool {
        !rel.as_os_str().is_empty() && self.exclude.is_match(rel)
    }
}

/// What the walk counted.
#[derive(Default)]
struct Walked {
    info: FilesInfo,
    /// Files stored as they are whose names say they usually hold secrets.
    unredacted: Vec<String>,
}

/// File names that usually hold secrets in a format Lifeboat does not redact: each one
/// stored is named in a warning, so that it is excluded if it should be.
const CREDENTIAL_FILES: &[&str] = &[
    ".npmrc",
    ".pypirc",
    ".netrc",
    ".pgpass",
    ".htpasswd",
    ".git-credentials",
    "credentials",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "id_rsa",
    "id_ed25519",
    "id_ecdsa",
    "*.properties",
    "*secret*",
    "*password*",
    "*token*",
];

fn looks_like_credentials(file_name: &str) -> bool {
    let name = file_name.to_ascii_lowercase();
    CREDENTIAL_FILES
        .iter()
        .any(|p| match (p.strip_prefix('*'), p.strip_suffix('*')) {
            (Some(rest), _) if rest.ends_with('*') => name.contains(&rest[..rest.len() - 1]),
            (Some(suffix), _) => name.ends_with(suffix),
            (None, _) => name == *p,
        })
}

impl Source for FilesSource {
    fn kind(&self) -> Kind {
        Kind::Files
    }

    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
        let mut walked = Walked::default();
        let content = writer.tree(&mut |tree| {
            walked = Walked::default();
            self.walk(tree, &mut walked)
        })?;
        let mut info = walked.info;
        // What the tree stored (after redaction), as the engine counted it.
        info.bytes = content.logical_bytes();
        info.excluded = self.opts.exclude.clone();
        info.redaction = self.redactor.as_ref().map(|_| patterns(&self.opts));
        let mut warnings = Vec::new();
        let unredacted = &walked.unredacted;
        if !unredacted.is_empty() {
            let more = match unredacted.len() {
                n if n > 5 => format!(" and {} more", n - 5),
                _ => String::new(),
            };
            warnings.push(format!(
                "stored as they are, in a format Lifeboat does not redact, though their names \
                 usually hold secrets: {}{more}; --exclude those that hold secrets",
                unredacted[..unredacted.len().min(5)].join(", ")
            ));
        }
        Ok(BackedUp {
            content,
            facts: SourceFacts::Files(info),
            warnings,
        })
    }
}

/// One name the walk has still to add: `name` in the folder `parent` (the current directory
/// for the root, whose `name` is then its whole path), at `rel` in the tree.
struct Pending {
    rel: PathBuf,
    parent: Option<Arc<OwnedFd>>,
    name: OsString,
}

/// Folders are opened `O_NOFOLLOW` and read through their descriptors, and every name is
/// looked at and opened relative to the descriptor of its folder (`statat`, `openat` with
/// `O_NOFOLLOW`, `O_NONBLOCK`), and must still be what was looked at (device and inode): a
/// name swapped for a link (or a FIFO) between the look and the open, or a folder swapped for
/// a link to another, can never make the backup read a file outside the folder (say
/// /etc/shadow, when root backs up a folder its application can write) nor hang on a FIFO.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

impl FilesSource {
    /// Add the root and everything under it, in path order (a folder, then its names sorted
    /// by bytes, each followed by what it holds). Iterative: a folder nested thousands deep
    /// must not overflow the stack.
    fn walk(&self, tree: &mut dyn TreeWriter, walked: &mut Walked) -> Result<()> {
        let mut stack = vec![Pending {
            rel: PathBuf::new(),
            parent: None,
            name: self.root.clone().into_os_string(),
        }];
        while let Some(p) = stack.pop() {
            crate::interrupt::check()?;
            if let Some((dir, names)) = self.add(&p, tree, walked)? {
                let dir = Arc::new(dir);
                for name in names.into_iter().rev() {
                    let rel = p.rel.join(&name);
                    if self.excluded(&rel) {
                        continue;
                    }
                    stack.push(Pending {
                        rel,
                        parent: Some(dir.clone()),
                        name,
                    });
                }
            }
        }
        Ok(())
    }

    /// Add one entry; for a folder, its open descriptor and its names, sorted.
    fn add(
        &self,
        p: &Pending,
        tree: &mut dyn TreeWriter,
        walked: &mut Walked,
    ) -> Result<Option<(OwnedFd, Vec<OsString>)>> {
        let full = if p.rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(&p.rel)
        };
        let at = p.parent.as_deref().map_or(rustix::fs::CWD, |d| d.as_fd());
        let name = p.name.as_os_str();
        let io = |e: rustix::io::Errno| unreadable(&full, std::io::Error::from(e));
        let st = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
        let (path, path_hex) = encode_name(p.rel.as_os_str().as_bytes());
        let mut entry = TreeEntry {
            path,
            path_hex,
            kind: EntryKind::File,
            mode: st.st_mode as u32 & 0o7777,
            mtime_ns: (st.st_mtime as i64)
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            size: 0,
            target: None,
            target_hex: None,
            chunks: Vec::new(),
        };
        let ft = FileType::from_raw_mode(st.st_mode as _);
        // The file opened must be the one looked at: not a link, nor anything else swapped in.
        let open = |flags: OFlags| -> Result<OwnedFd> {
            let fd = rustix::fs::openat(at, name, flags, Mode::empty()).map_err(|e| {
                if matches!(e, Errno::LOOP | Errno::NOTDIR) {
                    changed(&full)
                } else {
                    io(e)
                }
            })?;
            let now = rustix::fs::fstat(&fd).map_err(io)?;
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                return Err(changed(&full));
            }
            Ok(fd)
        };
        if ft == FileType::Symlink {
            // EINVAL: no longer a link.
            let target = rustix::fs::readlinkat(at, name, Vec::new()).map_err(|e| {
                if e == Errno::INVAL {
                    changed(&full)
                } else {
                    io(e)
                }
            })?;
            let (t, t_hex) = encode_name(target.as_bytes());
            entry.kind = EntryKind::Symlink;
            entry.target = Some(t);
            entry.target_hex = t_hex;
            walked.info.symlinks += 1;
            tree.add(entry, None)?;
            return Ok(None);
        }
        if ft == FileType::Directory {
            let dir = open(DIR_FLAGS)?;
            entry.kind = EntryKind::Dir;
            walked.info.dirs += 1;
            tree.add(entry, None)?;
            let mut names = Vec::new();
            for e in rustix::fs::Dir::read_from(&dir).map_err(io)? {
                let e = e.map_err(io)?;
                let n = e.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(OsStr::from_bytes(n).to_os_string());
                }
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            return Ok(Some((dir, names)));
        }
        if ft != FileType::RegularFile {
            tracing::warn!("skipped {}: not a file, folder or link", full.display());
            return Ok(None);
        }
        walked.info.files += 1;
        let file_name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let format = format_of(&file_name);
        if self.redactor.is_some() && format.is_none() && looks_like_credentials(&file_name) {
            walked.unredacted.push(p.rel.display().to_string());
        }
        let mut file = std::fs::File::from(open(FILE_FLAGS)?);
        let len = file.metadata().ctx("cannot read", &full)?.len();
        let unredactable = |why: String| {
            Error::source(format!("{} could not be redacted: {why}", full.display()))
                .hint("exclude it (--exclude PATTERN) or store it as it is (--no-redact)")
        };
        match (&self.redactor, format) {
            (Some(_), Some(format)) if len > REDACT_MAX => {
                return Err(unredactable(format!(
                    "a {format} file larger than {} MiB is not read",
                    REDACT_MAX >> 20
                )))
            }
            (Some(redactor), Some(format)) => {
                let mut data = Vec::with_capacity(len as usize);
                std::io::Read::read_to_end(&mut file, &mut data).ctx("cannot read", &full)?;
                let redaction = redactor.redact(format, &data);
                if let Some(w) = redaction.warning {
                    return Err(unredactable(w));
                }
                if !redaction.keys.is_empty() {
                    walked.info.redacted.push(RedactedFile {
                        path: entry.path.clone(),
                        keys: redaction.keys,
                    });
                }
                tree.add(entry, Some(&mut redaction.data.as_slice()))?;
            }
            _ => tree.add(entry, Some(&mut file))?,
        }
        Ok(None)
    }
}

/// A name that was replaced (by a link, a FIFO, another file) between the walk's look at it
/// and its open.
fn changed(path: &Path) -> Error {
    Error::source(format!(
        "{} changed while it was backed up (it was replaced, by a link or another file); \
         nothing of it was read",
        path.display()
    ))
    .hint("run the backup again when nothing is replacing files in the folder")
}

/// The key patterns redacted: the defaults and those given with `--redact`.
fn patterns(opts: &FilesOptions) -> Vec<String> {
    let mut all = Redactor::default_patterns();
    for p in &opts.redact {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    all
}

fn unreadable(path: &Path, e: std::io::Error) -> Error {
    super::unreadable(path, "cannot read", e)
        .hint("check the permissions for the user running lifeboat, or --exclude that path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_file_names() {
        for yes in [
            ".npmrc",
            "server.pem",
            "tls.KEY",
            "id_rsa",
            "db-password.txt",
            "app.properties",
            "credentials",
        ] {
            assert!(looks_like_credentials(yes), "{yes}");
        }
        for no in [
            "nginx.conf",
            "README.md",
            "keys.txt",
            "credentials.md5",
            "app.log",
        ] {
            assert!(!looks_like_credentials(no), "{no}");
        }
    }
}
