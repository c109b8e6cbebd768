//! PostgreSQL WAL archiving: `wal-push` (PostgreSQL's `archive_command`), `wal-fetch` (its
//! `restore_command`), and what the archive holds (`timeline`, the chain a base backup
//! needs).
//!
//! `wal-push` is called once per file and must not say "saved" before the file is durable
//! in the repository. To keep up with a busy server it pushes ahead: the call for one
//! segment also stores the segments PostgreSQL has already marked ready
//! (`pg_wal/archive_status/*.ready`), several at a time, with one opening of the repository
//! (one key derivation) for all of them, and notes each one stored in a local spool; the
//! calls for those segments then find the note, check the file against it and return at
//! once. A note is written only after its object is stored, so a crash loses nothing: at
//! worst a segment is pushed again, which finds the same bytes already there.
//!
//! `wal-fetch` answers "not in the archive" from a listing-free existence check before any
//! key is derived, and fetches the next segments ahead into the spool, so recovery does not
//! wait for one round trip (and one key derivation) per segment.

use crate::error::{Error, ErrorKind, Result};
use crate::repo::pgwal::{self, WalFile};
use crate::repo::Repository;
use crate::storage::Storage;
use std::path::{Path, PathBuf};

/// How `wal-push` works ahead.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Files stored at once.
    pub parallel: usize,
    /// Most files one call stores (itself and the ready ones after it).
    pub batch: usize,
    /// The cluster's data directory, for the system identifier of files that do not carry
    /// it (`.history`, `.backup`); default: the parent of the file's `pg_wal`, else the
    /// current directory (PostgreSQL runs archive_command there).
    pub pgdata: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            parallel: 4,
            batch: 64,
            pgdata: None,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PushReport {
    pub file: String,
    pub system_id: String,
    /// It was stored by an earlier call (which pushed ahead), or was already in the
    /// repository with the same bytes.
    pub already: bool,
    /// Files this call stored, itself included.
    pub stored: Vec<String>,
    pub stored_bytes: u64,
}

/// Local notes of what was pushed and fetched ahead, per repository and cluster
/// (`$XDG_STATE_HOME/lifeboat/pgwal/<location hash>/<system id>/`).
struct Spool {
    dir: PathBuf,
}

impl Spool {
    fn open(location: &str, system_id: u64) -> Result<Spool> {
        let key = blake3::hash(crate::trust::normalize_location(location).as_bytes());
        let home = crate::trust::state_home();
        if home.is_relative() {
            // It would land in the data directory (PostgreSQL's working directory), and
            // from there in every base backup.
            return Err(Error::usage(
                "neither HOME nor XDG_STATE_HOME is set: Lifeboat has no folder for its notes of the WAL it archived",
            )
            .hint("set HOME (or XDG_STATE_HOME) in the environment PostgreSQL runs archive_command and restore_command with"));
        }
        let dir = home
            .join("pgwal")
            .join(&key.to_hex()[..16])
            .join(system_id.to_string());
        for sub in ["pushed", "ahead"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io("cannot create", &d, e))?;
        }
        let mut p = dir.clone();
        // Private all the way up to lifeboat's state folder.
        for _ in 0..3 {
            let _ =
                std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o700));
            if !p.pop() {
                break;
            }
        }
        for sub in ["pushed", "ahead"] {
            let _ = std::fs::set_permissions(
                dir.join(sub),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            );
        }
        Ok(Spool { dir })
    }

    /// Whether `file` (at `path`) is noted as pushed: with bytes of checksum `hash`, or,
    /// without one, unchanged since it was noted (same size, modification time and inode:
    /// PostgreSQL never rewrites a segment it has completed, so the bytes need not be
    /// read again).
    fn noted(&self, file: &str, path: &Path, hash: Option<&str>) -> bool {
        let Ok(note) = std::fs::read_to_string(self.dir.join("pushed").join(file)) else {
            return false;
        };
        let mut parts = note.split_whitespace();
        let (Some(noted_hash), noted_ident) = (parts.next(), parts.next()) else {
            return false;
        };
        match hash {
            Some(h) => h == noted_hash,
            None => noted_ident.is_some_and(|i| Some(i.to_string()) == file_ident(path)),
        }
    }

    fn note_pushed(&self, file: &str, hash: &str, path: &Path) -> Result<()> {
        let ident = file_ident(path).unwrap_or_default();
        crate::storage::local::write_private_file(
            &self.dir.join("pushed").join(file),
            format!("{hash} {ident}\n").as_bytes(),
        )
    }

    /// Forget notes of segments far behind `file` (PostgreSQL has long moved on).
    fn trim_pushed(&self, keep: usize) {
        let Ok(rd) = std::fs::read_dir(self.dir.join("pushed")) else {
            return;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        if names.len() <= keep {
            return;
        }
        names.sort();
        for n in &names[..names.len() - keep] {
            let _ = std::fs::remove_file(self.dir.join("pushed").join(n));
        }
    }

    /// Held while pushing: one pusher per cluster at a time, the others wait and then find
    /// their file noted.
    fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("cannot open", &path, e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("cannot lock", &path, std::io::Error::from(e)))?;
        Ok(f)
    }

    fn ahead(&self, file: &str) -> PathBuf {
        self.dir.join("ahead").join(file)
    }
}

/// Size, modification time, change time, inode and device of a file: what changes when
/// its bytes do.
fn file_ident(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}.{}:{}.{}:{}:{}",
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
        m.dev()
    ))
}

/// The system identifier in `pgdata/global/pg_control` (its first 8 bytes).
pub fn system_id_of(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::io("cannot read", &path, e)
            .hint("run it in the cluster's data directory (PostgreSQL does), or give --pgdata DIR")
    })?;
    if bytes.len() < 8 {
        return Err(Error::source(format!("{} is too short", path.display())));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(id))
}

fn data_dir_of(file: &Path, given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    if dir.file_name().is_some_and(|n| n == "pg_wal") {
        return dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    }
    PathBuf::from(".")
}

fn file_name(path: &Path, what: &str) -> Result<(String, WalFile)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let kind = WalFile::parse(&name).ok_or_else(|| {
        Error::usage(format!(
            "{what}: {name:?} is not the name of a WAL segment, .history, .backup or .partial file"
        ))
        .hint(if what == "wal-push" {
            "archive_command = 'lifeboat --repo REPO wal-push %p'"
        } else {
            "restore_command = 'lifeboat --repo REPO wal-fetch %f %p'"
        })
    })?;
    Ok((name, kind))
}

/// Read a file PostgreSQL archives, and the cluster it belongs to.
fn read_wal_file(path: &Path, name: &str, kind: WalFile, pgdata: &Path) -> Result<(Vec<u8>, u64)> {
    let data = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    if data.len() as u64 > pgwal::FILE_MAX {
        return Err(Error::source(format!(
            "{} is larger than any WAL segment",
            path.display()
        )));
    }
    let system_id = match kind {
        WalFile::Segment { .. } => {
            pgwal::check_segment(name, &data, None)
                .map_err(|e| Error::source(e.message))?
                .system_id
        }
        WalFile::Partial { .. } => {
            pgwal::segment_head(&data)
                .ok_or_else(|| {
                    Error::source(format!(
                        "{} does not start with a WAL page header",
                        path.display()
                    ))
                })?
                .system_id
        }
        _ => system_id_of(pgdata)?,
    };
    Ok((data, system_id))
}

/// Store `data` as `file` of `system_id`: created, or already there with the same bytes
/// (`false`); other bytes under that name are an error and nothing is overwritten.
fn store(
    repo: &Repository,
    system_id: u64,
    file: &str,
    data: &[u8],
    hash: &blake3::Hash,
) -> Result<bool> {
    let sealed = pgwal::seal(repo, system_id, file, data, hash)?;
    let name = pgwal::object_name(system_id, file);
    if repo.storage().put_new(&name, &sealed)? {
        return Ok(true);
    }
    if repo.is_write_only() {
        // Sealed to the identity: this host cannot read it back to compare. The spool's
        // note (checked first) covers the ordinary case of a file pushed again.
        tracing::warn!(
            "{name} is in the repository already; a write-only host cannot compare its bytes"
        );
        return Ok(false);
    }
    let same = match pgwal::fetch(repo, repo.storage(), system_id, file) {
        Ok(Some((header, _))) => header.blake3 == hash.to_hex().as_str(),
        Ok(None) => false,
        Err(e) if e.kind == ErrorKind::Integrity => {
            return Err(Error::integrity(format!(
                "the repository holds a damaged copy of WAL file {file} ({name}): {}",
                e.message
            ))
            .hint("delete that object (it is damaged; PostgreSQL still has the file and retries), or restore it from a replica"))
        }
        Err(e) => return Err(e),
    };
    if !same {
        return Err(Error::integrity(format!(
            "the repository already holds WAL file {file} of cluster {system_id} with other \
             bytes; nothing was overwritten"
        ))
        .hint("two servers with the same system identifier archive into one repository (a restored copy of this cluster that did not start a new timeline?): give each its own repository, or stop the copy's archiving"));
    }
    Ok(false)
}

/// The segments after `file` that PostgreSQL has marked ready to archive, in order.
fn ready_after(wal_dir: &Path, file: &str, limit: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let seg = n.strip_suffix(".ready")?.to_string();
            matches!(WalFile::parse(&seg), Some(WalFile::Segment { .. })).then_some(seg)
        })
        .filter(|n| n.as_str() > file)
        .collect();
    names.sort();
    names.truncate(limit);
    names
}

/// `wal-push PATH`: store the file PostgreSQL hands over, durably, and the ready segments
/// after it. `storage` is the repository's storage opened without keys (enough to see that
/// a noted file is there); `open` opens the repository, only when something must be stored.
pub fn push(
    location: &str,
    storage: &dyn Storage,
    open: &dyn Fn() -> Result<Repository>,
    path: &Path,
    opts: &PushOptions,
) -> Result<PushReport> {
    let (file, kind) = file_name(path, "wal-push")?;
    let pgdata = data_dir_of(path, opts.pgdata.as_deref());
    let system_id = system_id_of_file(path, kind, &pgdata)?;
    let mut report = PushReport {
        file: file.clone(),
        system_id: system_id.to_string(),
        ..Default::default()
    };
    let spool = Spool::open(location, system_id)?;
    let object = pgwal::object_name(system_id, &file);
    // Noted as pushed, and there (a repository made anew at the same location does not
    // have what its predecessor's notes say).
    if spool.noted(&file, path, None) && storage.exists(&object)? {
        report.already = true;
        return Ok(report);
    }
    let _lock = spool.lock()?;
    let wal_dir = path.parent().unwrap_or(Path::new("."));
    let mut todo = vec![file.clone()];
    if matches!(kind, WalFile::Segment { .. }) {
        todo.extend(ready_after(wal_dir, &file, opts.batch.saturating_sub(1)));
    }
    let ctx = PushContext {
        spool: &spool,
        storage,
        wal_dir,
        system_id,
        pgdata: &pgdata,
    };
    for (name, r) in ctx.push_all(open, &todo, opts)? {
        match r {
            Ok(Some(bytes)) => {
                report.stored.push(name);
                report.stored_bytes += bytes;
            }
            Ok(None) => report.already |= name == file,
            Err(e) if name == file => return Err(e),
            // PostgreSQL pushes it itself later, and gets the error then.
            Err(e) => tracing::warn!("pushing {name} ahead failed: {e}"),
        }
    }
    report.stored.sort();
    spool.trim_pushed(4 * opts.batch.max(16));
    Ok(report)
}

/// What every file of one `wal-push` call shares.
struct PushContext<'a> {
    spool: &'a Spool,
    storage: &'a dyn Storage,
    wal_dir: &'a Path,
    system_id: u64,
    pgdata: &'a Path,
}

impl PushContext<'_> {
    /// Push `todo` (the call's own file first), several at a time; per file, its size when
    /// this call stored it, `None` when it was there already.
    #[allow(clippy::type_complexity)]
    fn push_all(
        &self,
        open: &dyn Fn() -> Result<Repository>,
        todo: &[String],
        opts: &PushOptions,
    ) -> Result<Vec<(String, Result<Option<u64>>)>> {
        // Only what is not noted yet needs the repository (and its key derivation).
        let mut work = Vec::new();
        let mut out = Vec::new();
        for (i, name) in todo.iter().enumerate() {
            let path = self.wal_dir.join(name);
            let there = self.spool.noted(name, &path, None)
                && self
                    .storage
                    .exists(&pgwal::object_name(self.system_id, name))?;
            if there {
                out.push((name.clone(), Ok(None)));
            } else if i == 0 || path.exists() {
                work.push(name.clone());
            }
        }
        if work.is_empty() {
            return Ok(out);
        }
        let repo = open()?;
        repo.require_writable("wal-push")?;
        require_feature(&repo)?;
        // As a writer, with a marker: a full key rotation (which re-seals the archive)
        // waits for it, and it does not store anything while one runs.
        crate::repo::locks::as_writer(
            repo.storage(),
            &repo.records(),
            crate::repo::locks::WAL_PUSH,
            false,
            |_, lease| {
                lease.check()?;
                let next = std::sync::atomic::AtomicUsize::new(0);
                let results = std::sync::Mutex::new(Vec::new());
                std::thread::scope(|s| {
                    for _ in 0..opts.parallel.clamp(1, 32).min(work.len()) {
                        s.spawn(|| loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(name) = work.get(i) else { break };
                            let own = i == 0 && name == &todo[0];
                            let r = lease.check().and_then(|()| self.push_one(&repo, name, own));
                            if let Ok(mut all) = results.lock() {
                                all.push((name.clone(), r));
                            }
                        });
                    }
                });
                out.extend(results.into_inner().unwrap_or_default());
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Push one file; its size when this call stored it. `own`: the file PostgreSQL asked
    /// for (any error is reported); a file pushed ahead that is not a whole segment of this
    /// cluster yet is left to its own call.
    fn push_one(&self, repo: &Repository, name: &str, own: bool) -> Result<Option<u64>> {
        let path = self.wal_dir.join(name);
        let kind = WalFile::parse(name).ok_or_else(|| Error::internal("not a WAL file name"))?;
        let data = match read_wal_file(&path, name, kind, self.pgdata) {
            Ok((data, id)) if id == self.system_id => data,
            Ok(_) if own => return Err(Error::source(format!("{name} changed cluster"))),
            Err(e) if own => return Err(e),
            _ => return Ok(None),
        };
        let hash = blake3::hash(&data);
        let hex = hash.to_hex().to_string();
        if self.spool.noted(name, &path, Some(&hex))
            && repo
                .storage()
                .exists(&pgwal::object_name(self.system_id, name))?
        {
            self.spool.note_pushed(name, &hex, &path)?;
            return Ok(None);
        }
        let created = store(repo, self.system_id, name, &data, &hash)?;
        self.spool.note_pushed(name, &hex, &path)?;
        Ok(created.then_some(data.len() as u64))
    }
}

/// The cluster a file belongs to: a segment's first page says; other files are the data
/// directory's.
fn system_id_of_file(path: &Path, kind: WalFile, pgdata: &Path) -> Result<u64> {
    if !matches!(kind, WalFile::Segment { .. } | WalFile::Partial { .. }) {
        return system_id_of(pgdata);
    }
    let mut head = [0u8; 64];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    std::io::Read::read_exact(&mut f, &mut head).map_err(|e| Error::io("cannot read", path, e))?;
    pgwal::segment_head(&head)
        .map(|h| h.system_id)
        .ok_or_else(|| {
            Error::source(format!(
                "{} does not start with a WAL page header",
                path.display()
            ))
        })
}

pub fn require_feature(repo: &Repository) -> Result<()> {
    if repo.has_feature(pgwal::FEATURE) {
        return Ok(());
    }
    Err(Error::usage(format!(
        "the repository at {} was made before PostgreSQL WAL archiving: it cannot hold WAL yet",
        repo.location()
    ))
    .hint("run `lifeboat repo upgrade` (Lifeboat versions before this one can then no longer open the repository)"))
}

/// How `wal-fetch` works ahead.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Segments fetched ahead into the spool.
    pub ahead: usize,
    pub parallel: usize,
    /// The data directory being recovered (default: the current directory, where
    /// PostgreSQL runs restore_command), for its system identifier.
    pub pgdata: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            ahead: 16,
            parallel: 4,
            pgdata: None,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FetchReport {
    pub file: String,
    pub found: bool,
    /// Served from what an earlier call fetched ahead.
    pub from_spool: bool,
    pub fetched_ahead: usize,
}

/// `wal-fetch FILE DEST`: write archived `file` to `dest`. `found: false` when the archive
/// does not hold it (PostgreSQL asks for files that may not exist). `storage` is the
/// repository's storage, opened without keys; `open` opens the repository.
pub fn fetch(
    location: &str,
    storage: &dyn Storage,
    open: &dyn Fn() -> Result<Repository>,
    file: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchReport> {
    let (file, kind) = file_name(Path::new(file), "wal-fetch")?;
    let pgdata = opts.pgdata.clone().unwrap_or_else(|| PathBuf::from("."));
    let system_id = system_id_of(&pgdata)?;
    let spool = Spool::open(location, system_id)?;
    let mut report = FetchReport {
        file: file.clone(),
        ..Default::default()
    };
    let ahead_path = spool.ahead(&file);
    if ahead_path.exists() {
        let bytes =
            std::fs::read(&ahead_path).map_err(|e| Error::io("cannot read", &ahead_path, e))?;
        write_dest(dest, &bytes)?;
        let _ = std::fs::remove_file(&ahead_path);
        report.found = true;
        report.from_spool = true;
        return Ok(report);
    }
    // Before any key is derived: most "not found" answers end here. But only a repository
    // can answer "not there": a location without one (a mount that went away, a deleted
    // bucket) is an error, or PostgreSQL would end recovery early.
    if !storage.exists(&pgwal::object_name(system_id, &file))? {
        if !storage.exists("config")? {
            return Err(Error::not_found(format!(
                "there is no repository at {location}: cannot tell whether WAL file {file} was archived"
            ))
            .hint("check that the repository's storage is reachable (a mount, a bucket) and that restore_command names it"));
        }
        return Ok(report);
    }
    let repo = open()?;
    let Some((_, data)) = pgwal::fetch(&repo, repo.storage(), system_id, &file)? else {
        return Ok(report);
    };
    if matches!(kind, WalFile::Segment { .. }) {
        pgwal::check_segment(&file, &data, Some(system_id))?;
    }
    write_dest(dest, &data)?;
    report.found = true;
    if let WalFile::Segment { tli, .. } = kind {
        let seg_size = data.len() as u64;
        drop(data);
        clear_ahead(&spool, &file);
        let Some(first) = kind.segno(seg_size) else {
            return Ok(report);
        };
        let names: Vec<String> = (1..=opts.ahead as u64)
            .map(|i| pgwal::segment_name(tli, first + i, seg_size))
            .filter(|n| !spool.ahead(n).exists())
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let fetched = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..opts.parallel.clamp(1, 32).min(names.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    match fetch_ahead(&repo, &spool, system_id, name) {
                        Ok(true) => {
                            fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        // The call for that segment fetches it again and reports the error.
                        Err(e) => tracing::warn!("fetching {name} ahead failed: {e}"),
                    }
                });
            }
        });
        report.fetched_ahead = fetched.into_inner();
    }
    Ok(report)
}

fn fetch_ahead(repo: &Repository, spool: &Spool, system_id: u64, name: &str) -> Result<bool> {
    let Some((_, data)) = pgwal::fetch(repo, repo.storage(), system_id, name)? else {
        return Ok(false);
    };
    pgwal::check_segment(name, &data, Some(system_id))?;
    crate::storage::local::write_private_file(&spool.ahead(name), &data)?;
    Ok(true)
}

/// Drop what was fetched ahead and is behind `file` now, or older than a day (another
/// recovery's leftovers).
fn clear_ahead(spool: &Spool, file: &str) {
    let Ok(rd) = std::fs::read_dir(spool.dir.join("ahead")) else {
        return;
    };
    let day = std::time::Duration::from_secs(86_400);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old || name.as_str() < file {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Write `dest` whole or not at all.
fn write_dest(dest: &Path, data: &[u8]) -> Result<()> {
    crate::storage::local::write_private_file(dest, data)
}

/// Wait until the WAL segments a base backup needs (`start_wal` to `stop_wal` on its
/// timeline) are in the repository: the server waited for them to be archived, but to
/// whichever archive `archive_command` names. A base backup without them cannot be
/// restored, so it is not committed.
pub fn await_backup_wal(
    repo: &Repository,
    info: &crate::repo::manifest::PhysicalInfo,
) -> Result<()> {
    let system_id: u64 = info
        .system_id
        .parse()
        .map_err(|_| Error::internal("bad system id"))?;
    let needed = backup_segments(info)?;
    let wait = crate::source::seconds_from_env("LIFEBOAT_WAL_WAIT", 60);
    let deadline = std::time::Instant::now() + wait;
    loop {
        crate::interrupt::check()?;
        let mut missing = None;
        for name in &needed {
            if !repo
                .storage()
                .exists(&pgwal::object_name(system_id, name))?
            {
                missing = Some(name.clone());
                break;
            }
        }
        let Some(missing) = missing else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(Error::source(format!(
                "WAL segment {missing}, which this base backup needs, did not reach the \
                 repository {} within {} s; the backup was not committed",
                repo.location(),
                wait.as_secs()
            ))
            .hint("archive_command must push into this repository: archive_command = 'lifeboat --repo REPO wal-push %p' (see the server's log for archiving failures; LIFEBOAT_WAL_WAIT sets the wait)"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The segments from a base backup's start to its stop, on its timeline.
pub fn backup_segments(info: &crate::repo::manifest::PhysicalInfo) -> Result<Vec<String>> {
    let size = info.wal_segment_size.max(1 << 20);
    let segno = |name: &str| {
        WalFile::parse(name)
            .and_then(|f| f.segno(size))
            .ok_or_else(|| Error::integrity(format!("a manifest names WAL file {name:?}")))
    };
    let (first, last) = (segno(&info.start_wal)?, segno(&info.stop_wal)?);
    if last < first || last - first > 1 << 20 {
        return Err(Error::integrity("a manifest's WAL range is malformed"));
    }
    Ok((first..=last)
        .map(|n| pgwal::segment_name(info.timeline, n, size))
        .collect())
}
