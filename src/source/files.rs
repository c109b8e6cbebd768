//! Files and folders (an application's configuration) as a [`Source`]: a tree in path order,
//! each file cut by content, values of secret-looking keys redacted in the formats
//! `source::redact` understands.
//!
//! Nothing is followed: a symbolic link is stored as a link, and special files (sockets,
//! FIFOs, devices) are skipped with a warning. A file that changes while it is read is stored
//! as read; configuration is small and read whole when it is redacted.

use super::redact::{format_of, Redactor};
use super::{BackedUp, ContentWriter, Kind, Source, SourceFacts, TreeWriter};
use crate::error::{Error, IoContext, Result};
use crate::repo::manifest::{FilesInfo, RedactedFile};
use crate::repo::tree::{encode_name, EntryKind, TreeEntry};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Files larger than this are stored as they are, never redacted (read whole otherwise).
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
}

impl Source for FilesSource {
    fn kind(&self) -> Kind {
        Kind::Files
    }

    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
        let mut walked = Walked::default();
        let content = writer.tree(&mut |tree| {
            walked = Walked::default();
            self.walk(Path::new(""), tree, &mut walked)
        })?;
        let mut info = walked.info;
        info.excluded = self.opts.exclude.clone();
        info.redaction = self.redactor.as_ref().map(|_| patterns(&self.opts));
        Ok(BackedUp {
            content,
            facts: SourceFacts::Files(info),
        })
    }
}

impl FilesSource {
    /// Add `rel` (relative to the root; empty for the root) and, for a folder, everything
    /// under it, in path order.
    fn walk(&self, rel: &Path, tree: &mut dyn TreeWriter, walked: &mut Walked) -> Result<()> {
        let full = if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let meta = std::fs::symlink_metadata(&full).map_err(|e| unreadable(&full, e))?;
        let (path, path_hex) = encode_name(rel.as_os_str().as_bytes());
        let mut entry = TreeEntry {
            path,
            path_hex,
            kind: EntryKind::File,
            mode: meta.mode() & 0o7777,
            mtime_ns: mtime_ns(&meta),
            size: 0,
            target: None,
            target_hex: None,
            chunks: Vec::new(),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| unreadable(&full, e))?;
            let (t, t_hex) = encode_name(target.as_os_str().as_bytes());
            entry.kind = EntryKind::Symlink;
            entry.target = Some(t);
            entry.target_hex = t_hex;
            walked.info.symlinks += 1;
            return tree.add(entry, None);
        }
        if ft.is_dir() {
            entry.kind = EntryKind::Dir;
            walked.info.dirs += 1;
            tree.add(entry, None)?;
            let mut names: Vec<_> = std::fs::read_dir(&full)
                .map_err(|e| unreadable(&full, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(|e| unreadable(&full, e))?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let child = rel.join(&name);
                if self.excluded(&child) {
                    continue;
                }
                self.walk(&child, tree, walked)?;
            }
            return Ok(());
        }
        if !ft.is_file() {
            tracing::warn!("skipped {}: not a file, folder or link", full.display());
            return Ok(());
        }
        walked.info.files += 1;
        let file_name = full
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let format = format_of(&file_name);
        let mut file = std::fs::File::open(&full).map_err(|e| unreadable(&full, e))?;
        match (&self.redactor, format) {
            (Some(redactor), Some(format)) if meta.len() <= REDACT_MAX => {
                let mut data = Vec::with_capacity(meta.len() as usize);
                std::io::Read::read_to_end(&mut file, &mut data).ctx("cannot read", &full)?;
                let redaction = redactor.redact(format, &data);
                if let Some(w) = &redaction.warning {
                    return Err(Error::source(format!(
                        "{} could not be redacted: {w}",
                        full.display()
                    ))
                    .hint("exclude it (--exclude PATTERN) or store it as it is (--no-redact)"));
                }
                if !redaction.keys.is_empty() {
                    walked.info.redacted.push(RedactedFile {
                        path: entry.path.clone(),
                        keys: redaction.keys.clone(),
                    });
                }
                walked.info.bytes += redaction.data.len() as u64;
                tree.add(entry, Some(&mut redaction.data.as_slice()))
            }
            _ => {
                let mut counted = CountingReader {
                    inner: &mut file,
                    n: 0,
                };
                tree.add(entry, Some(&mut counted))?;
                walked.info.bytes += counted.n;
                Ok(())
            }
        }
    }
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

struct CountingReader<'a> {
    inner: &'a mut std::fs::File,
    n: u64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn unreadable(path: &Path, e: std::io::Error) -> Error {
    super::unreadable(path, "cannot read", e)
        .hint("check the permissions for the user running lifeboat, or --exclude that path")
}
