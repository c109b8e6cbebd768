//! DuckDB: a consistent image of a database file, read while a read-only DuckDB process holds
//! the file's shared lock, plus facts (tables, row counts) from that same process.
//!
//! Lifeboat drives the DuckDB command-line tool (`duckdb`, PyPI `duckdb-cli`) rather than
//! linking DuckDB: one process opens the file with `-readonly`, which takes a POSIX read lock
//! on the whole file. While it lives no process can open the file for writing (DuckDB's own
//! rule: a read-write open fails at once on a conflicting lock), so the bytes read directly
//! from the file are one checkpointed state. A read-only open never writes: it replays a
//! write-ahead log (`FILE.wal`) in memory only, so a snapshot refuses a file whose log is not
//! empty (the image would miss the log's commits). docs/DUCKDB.md has the measurements.
//!
//! File layout (DuckDB storage format, version 64 = DuckDB 0.10 to 1.5): a 4 KiB main header
//! (checksum, magic `DUCK` at offset 8, storage version, creating library's version), two
//! 4 KiB database headers (the one with the higher iteration is current; it holds
//! `block_alloc_size`), then blocks of `block_alloc_size` bytes (256 KiB by default) from
//! offset 12 KiB. An image is handed out as the 12 KiB header, then one buffer per block, so
//! an unchanged block is the same chunk in every backup.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::id::Sha256Stream;
use crate::repo::manifest::DuckdbInfo;
use crate::source::{
    is_executable, seconds_from_env, BackedUp, ContentWriter, Cut, Kind, Snapshot, Source,
    SourceFacts,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes before the first block: the main header and the two database headers.
pub const HEADER_BYTES: u64 = 3 * 4096;
/// Where the magic bytes `DUCK` sit in the main header (after its 8-byte checksum).
const MAGIC_OFFSET: usize = 8;
const MAGIC: &[u8; 4] = b"DUCK";
/// DuckDB's block size when the database header does not record one.
const DEFAULT_BLOCK_SIZE: u32 = 262_144;
/// Files next to a database that DuckDB replays on open: the write-ahead log, the log that
/// takes commits during a checkpoint, and the one used while recovering.
pub const SIDECARS: [&str; 3] = [".wal", ".wal.checkpoint", ".wal.recovery"];

/// Facts recorded at backup time and compared after a restore.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DuckdbFacts {
    /// The storage format version in the main header (64 for DuckDB 0.10 to 1.5).
    pub storage_version: u64,
    /// `version()` of the DuckDB that read the snapshot, e.g. `v1.5.6`.
    pub duckdb_version: String,
    /// The DuckDB version that created the file, from the main header, e.g. `v1.5.6`.
    pub created_by: String,
    pub block_size: u32,
    /// `schema.table` → rows. A name holding `.` or `"` is written as a quoted identifier
    /// (`main."a.b"`), so two tables never share a key.
    pub tables: BTreeMap<String, u64>,
    /// SHA-256 of the whole image, hex.
    pub sha256: String,
}

/// How long lifeboat waits for DuckDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a writer to let go of the file (`LIFEBOAT_BUSY_TIMEOUT` seconds, default 30). DuckDB
    /// itself never waits for a lock, so lifeboat retries opening until this has passed.
    pub busy: Duration,
    /// For each answer of the DuckDB process (`LIFEBOAT_DUCKDB_TIMEOUT` seconds, default 300):
    /// a CLI that hangs is killed after this.
    pub answer: Duration,
}

impl Timeouts {
    pub fn from_env() -> Timeouts {
        Timeouts {
            busy: seconds_from_env("LIFEBOAT_BUSY_TIMEOUT", 30),
            answer: seconds_from_env("LIFEBOAT_DUCKDB_TIMEOUT", 300),
        }
    }
}

/// The DuckDB command-line tool: `$LIFEBOAT_DUCKDB`, else `duckdb` on PATH.
pub fn find_cli() -> Result<PathBuf> {
    find_cli_in(
        std::env::var_os("LIFEBOAT_DUCKDB"),
        std::env::var_os("PATH"),
    )
}

const INSTALL_HINT: &str = "install the DuckDB command-line tool with `pip install duckdb-cli` \
     (or from https://duckdb.org/docs/installation), or set LIFEBOAT_DUCKDB to the path of a \
     `duckdb` executable";

fn find_cli_in(var: Option<OsString>, path: Option<OsString>) -> Result<PathBuf> {
    if let Some(p) = var.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(Error::usage(format!(
            "LIFEBOAT_DUCKDB={} is not an executable file",
            p.display()
        ))
        .hint(INSTALL_HINT));
    }
    let found = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("duckdb"))
        .find(|p| is_executable(p));
    found.ok_or_else(|| {
        Error::usage(
            "backing up a DuckDB database needs the DuckDB command-line tool `duckdb`, which is \
             not on PATH and LIFEBOAT_DUCKDB is not set",
        )
        .hint(INSTALL_HINT)
    })
}

/// Whether the file starts like a DuckDB database (magic at offset 8).
pub fn is_duckdb(path: &Path) -> bool {
    let mut head = [0u8; MAGIC_OFFSET + 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head[MAGIC_OFFSET..] == MAGIC)
}

/// What the first 12 KiB say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    storage_version: u64,
    created_by: String,
    block_size: u32,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parse the main header and the current database header.
fn parse_header(h: &[u8]) -> std::result::Result<Header, String> {
    if h.len() < HEADER_BYTES as usize {
        return Err(format!(
            "it has {} bytes, less than DuckDB's {HEADER_BYTES}-byte header",
            h.len()
        ));
    }
    if &h[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Err("no DuckDB magic bytes".into());
    }
    let storage_version = u64_at(h, 12);
    // After the version: 4 flag words, then the creating library's version (32 bytes).
    let desc = &h[52..84];
    let desc = &desc[..desc.iter().position(|&b| b == 0).unwrap_or(desc.len())];
    let created_by = String::from_utf8_lossy(desc).into_owned();
    // Database headers: checksum, iteration, meta block, free list, block count, block size.
    let db_header = |i: usize| {
        let at = 4096 * (1 + i);
        (u64_at(h, at + 8), u64_at(h, at + 40))
    };
    let (a, b) = (db_header(0), db_header(1));
    let (_, alloc) = if b.0 > a.0 { b } else { a };
    let block_size = match alloc {
        0 => DEFAULT_BLOCK_SIZE,
        n if n.is_power_of_two() && (4096..=1 << 24).contains(&n) => n as u32,
        n => return Err(format!("its header gives a block size of {n} bytes")),
    };
    Ok(Header {
        storage_version,
        created_by,
        block_size,
    })
}

/// A consistent image of a DuckDB database file: holds a read-only DuckDB process (and so the
/// file's shared lock: no writer can open the file) until dropped.
pub struct DuckdbSnapshot {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    header: Header,
    version: String,
    db_name: String,
    sha256: Option<String>,
    /// Dropped last: the lock goes only after everything else.
    cli: Cli,
}

impl DuckdbSnapshot {
    /// Open `path` read-only through `cli`, waiting for a writer as `Timeouts::from_env` says.
    pub fn open(cli: &Path, path: &Path) -> Result<DuckdbSnapshot> {
        Self::open_with(cli, path, Timeouts::from_env())
    }

    pub fn open_with(cli: &Path, path: &Path, timeouts: Timeouts) -> Result<DuckdbSnapshot> {
        let path = check_is_duckdb(path)?;
        let opened = open_read_only(cli, &path, timeouts)?;
        // From here on no process can write the file: the log files and the bytes are fixed.
        if let Some((wal, len)) = pending_log(&path) {
            return Err(Error::source(format!(
                "{} has a write-ahead log that is not checkpointed into it ({}, {len} bytes): \
                 a copy of the file alone would miss those commits. No process has the \
                 database open, so its last writer stopped without checkpointing (it crashed or \
                 was killed)",
                path.display(),
                wal.display()
            ))
            .hint(format!(
                "open the database once read-write and close it, with the application or the \
                 DuckDB CLI of the same version: `duckdb {} -c CHECKPOINT` replays the log into \
                 the file and removes it; then run the backup again",
                shell_quote(&path)
            )));
        }
        Self::from_opened(opened, path)
    }

    /// The snapshot of `path` (canonical), which `opened` holds read-only.
    fn from_opened(opened: Opened, path: PathBuf) -> Result<DuckdbSnapshot> {
        let file = std::fs::File::open(&path).ctx("cannot open", &path)?;
        let len = file.metadata().ctx("cannot stat", &path)?.len();
        let mut head = vec![0u8; HEADER_BYTES.min(len) as usize];
        file.read_exact_at(&mut head, 0).ctx("cannot read", &path)?;
        let header = parse_header(&head).map_err(|why| {
            Error::source(format!(
                "{} is not a DuckDB database lifeboat can read: {why}",
                path.display()
            ))
        })?;
        advise_sequential(&file);
        Ok(DuckdbSnapshot {
            path,
            file,
            len,
            header,
            version: opened.version,
            db_name: opened.db_name,
            sha256: None,
            cli: opened.cli,
        })
    }

    /// Bytes of the image (the file's length while the snapshot holds it).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The header chunk: 12288 bytes.
    pub fn header_bytes(&self) -> u64 {
        HEADER_BYTES
    }

    /// From the current database header; 262144 by default.
    pub fn block_size(&self) -> u32 {
        self.header.block_size
    }

    /// Every byte of the image in order: first the 12 KiB header, then one buffer per block
    /// (the last one shorter only if the file does not end on a block boundary, which DuckDB
    /// does not do). Same contract as `Snapshot::read_chunks`: `f` may keep a buffer by
    /// swapping in another.
    pub fn read_chunks(&mut self, f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        // The backup engine hashes what it reads already (`note_sha256`): hashing here too
        // would cost a second SHA-256 pass over the file.
        let mut hasher = self.sha256.is_none().then(Sha256Stream::default);
        let mut buf = Vec::new();
        let mut offset = 0u64;
        while offset < self.len {
            let n = if offset == 0 {
                HEADER_BYTES.min(self.len)
            } else {
                u64::from(self.header.block_size).min(self.len - offset)
            };
            buf.resize(n as usize, 0);
            self.file
                .read_exact_at(&mut buf, offset)
                .ctx("cannot read", &self.path)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf);
            }
            f(&mut buf)?;
            offset += n;
        }
        self.check_still_held()?;
        if let Some(h) = hasher {
            self.sha256 = Some(h.finish_hex());
        }
        Ok(())
    }

    /// The SHA-256 of the image, computed by whoever read it through `read_chunks` (call
    /// before reading: `read_chunks` then skips its own hash).
    pub fn note_sha256(&mut self, hex: String) {
        self.sha256 = Some(hex);
    }

    /// The read-only process still answers (so it still holds the lock) and the file kept its
    /// length: the bytes just read are one state.
    fn check_still_held(&mut self) -> Result<()> {
        let path = self.path.clone();
        self.cli
            .request("SELECT 1 AS alive;")
            .map_err(|e| e.into_error(&path, "lost the read-only DuckDB process of"))?;
        let now = std::fs::metadata(&self.path)
            .ctx("cannot stat", &self.path)?
            .len();
        if now != self.len {
            return Err(Error::source(format!(
                "{} changed length from {} to {now} bytes while a read-only DuckDB process held \
                 it; something wrote it without DuckDB's lock",
                self.path.display(),
                self.len
            )));
        }
        Ok(())
    }

    /// Tables, row counts and the image's hash, all from this snapshot.
    pub fn facts(&mut self) -> Result<DuckdbFacts> {
        let tables = table_counts(&mut self.cli, &self.path, &self.db_name)?;
        let sha256 = match &self.sha256 {
            Some(h) => h.clone(),
            None => {
                let h = sha256_of(&self.file, self.len, &self.path)?;
                self.check_still_held()?;
                h
            }
        };
        Ok(DuckdbFacts {
            storage_version: self.header.storage_version,
            duckdb_version: self.version.clone(),
            created_by: self.header.created_by.clone(),
            block_size: self.header.block_size,
            tables,
            sha256,
        })
    }
}

fn sha256_of(file: &std::fs::File, len: u64, path: &Path) -> Result<String> {
    let mut hasher = Sha256Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let n = (buf.len() as u64).min(len - offset) as usize;
        file.read_exact_at(&mut buf[..n], offset)
            .ctx("cannot read", path)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finish_hex())
}

fn advise_sequential(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advisory syscall on a descriptor we own; it changes no memory of ours.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// The first log file next to `db` that holds anything, with its length.
fn pending_log(db: &Path) -> Option<(PathBuf, u64)> {
    SIDECARS.iter().find_map(|suffix| {
        let p = sidecar(db, suffix);
        let len = std::fs::metadata(&p).ok()?.len();
        (len > 0).then_some((p, len))
    })
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Check that `path` is a DuckDB database file; its canonical path.
fn check_is_duckdb(path: &Path) -> Result<PathBuf> {
    super::open_database_file(path, "DuckDB")?;
    if !is_duckdb(path) {
        return Err(Error::source(format!(
            "{} is not a DuckDB database (no DUCK magic bytes at offset 8)",
            path.display()
        ))
        .hint("point lifeboat at the database file itself, not a .wal file or an export"));
    }
    path.canonicalize().ctx("cannot resolve", path)
}

/// A word for a shell command shown to the user.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A SQL identifier in double quotes.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The facts key of a table: `schema.table`, a part quoted when it holds `.` or `"`.
fn table_key(schema: &str, table: &str) -> String {
    let part = |s: &str| {
        if s.contains(['.', '"']) {
            quote_ident(s)
        } else {
            s.to_string()
        }
    };
    format!("{}.{}", part(schema), part(table))
}

/// A read-only DuckDB process on a database, ready for queries.
struct Opened {
    cli: Cli,
    version: String,
    db_name: String,
}

/// Open `path` (canonical) read-only, retrying while a writer holds it, for up to
/// `timeouts.busy`.
fn open_read_only(cli: &Path, path: &Path, timeouts: Timeouts) -> Result<Opened> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match try_open(cli, path, true, timeouts.answer) {
            Ok(opened) => return Ok(opened),
            Err(Failure::Exited(text)) if is_lock_conflict(&text) => {
                let waited = start.elapsed();
                if waited >= timeouts.busy {
                    return Err(writer_holds(path, &text, timeouts.busy));
                }
                std::thread::sleep(pause.min(timeouts.busy - waited));
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into_error(path, "cannot open")),
        }
    }
}

fn try_open(
    cli: &Path,
    path: &Path,
    read_only: bool,
    answer: Duration,
) -> std::result::Result<Opened, Failure> {
    let mut proc = Cli::spawn(cli, path, read_only, answer)?;
    let rows = proc.request(
        "SELECT current_database() AS db, path, readonly, version() AS version \
         FROM duckdb_databases() WHERE database_name = current_database();",
    )?;
    let row = match rows.as_slice() {
        [row] => row,
        _ => return Err(proc.fail(format!("unexpected answer {rows:?}"))),
    };
    let text = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
    let opened = text("path").map(PathBuf::from);
    let same_file = opened
        .as_deref()
        .and_then(|p| p.canonicalize().ok())
        .is_some_and(|p| p == path);
    if !same_file || row.get("readonly") != Some(&Value::Bool(read_only)) {
        return Err(proc.fail(format!(
            "DuckDB opened {:?} (read-only: {:?}), not {} as asked",
            opened,
            row.get("readonly"),
            path.display()
        )));
    }
    Ok(Opened {
        version: text("version").unwrap_or_default(),
        db_name: text("db").unwrap_or_default(),
        cli: proc,
    })
}

fn is_lock_conflict(stderr: &str) -> bool {
    stderr.contains("Could not set lock on file")
}

/// The pid DuckDB names in a lock conflict ("Conflicting lock is held in PROGRAM (PID 123)").
fn pid_in(stderr: &str) -> Option<u32> {
    let at = stderr.find("(PID ")? + 5;
    let digits: String = stderr[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|&pid| pid != 0)
}

/// Who holds the file: DuckDB's own report, else the processes with it open.
fn holders(path: &Path, stderr: &str) -> String {
    let comm = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let procs: Vec<(u32, Option<String>)> = match pid_in(stderr) {
        Some(pid) => vec![(pid, comm(pid))],
        None => processes_using(path)
            .into_iter()
            .map(|p| (p, comm(p)))
            .collect(),
    };
    let list: Vec<String> = procs
        .iter()
        .map(|(pid, name)| match name {
            Some(n) => format!("pid {pid}, {n}"),
            None => format!("pid {pid}"),
        })
        .collect();
    match list.as_slice() {
        [] => "another process".into(),
        [one] => format!("another process ({one})"),
        _ => format!("other processes ({})", list.join("; ")),
    }
}

/// Processes with `db` open, found through `/proc` (only those this user may inspect).
fn processes_using(db: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == db))
            })
        })
        .collect()
}

fn writer_holds(path: &Path, stderr: &str, waited: Duration) -> Error {
    Error::new(
        ErrorKind::InUse,
        format!(
            "{} has {} open for writing; DuckDB lets only one process open a database file \
             while it writes, and no other process may even read it meanwhile (waited {} s; \
             DuckDB said: {})",
            holders(path, stderr),
            path.display(),
            waited.as_secs_f64(),
            first_line(stderr)
        ),
    )
    .hint(
        "back it up while the application does not hold it: stop the application around the \
         backup (e.g. `systemctl stop app && lifeboat backup …; systemctl start app`), or have \
         the application close or DETACH the database (DuckDB checkpoints it then), run \
         `lifeboat backup` itself and reopen it; or have it write a copy from its own \
         connection (`ATTACH 'copy.duckdb' AS c; COPY FROM DATABASE app TO c; DETACH c`) and \
         back up the copy. LIFEBOAT_BUSY_TIMEOUT sets how many seconds lifeboat waits for the \
         file. docs/DUCKDB.md explains each way",
    )
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Row counts of every table of the open database `db_name`.
fn table_counts(cli: &mut Cli, path: &Path, db_name: &str) -> Result<BTreeMap<String, u64>> {
    let ctx = |e: Failure| e.into_error(path, "cannot read the tables of");
    let rows = cli
        .request(&format!(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = {} \
             ORDER BY schema_name, table_name;",
            quote_literal(db_name)
        ))
        .map_err(ctx)?;
    let mut names = Vec::with_capacity(rows.len());
    for r in &rows {
        match (
            r.get("schema_name").and_then(Value::as_str),
            r.get("table_name").and_then(Value::as_str),
        ) {
            (Some(s), Some(t)) => names.push((s.to_string(), t.to_string())),
            _ => return Err(ctx(cli.fail(format!("unexpected table row {r:?}")))),
        }
    }
    let mut counts = BTreeMap::new();
    // A batch of statements at a time: each answer waits at most `answer`, and what is written
    // to the CLI's input stays well under a pipe's buffer.
    for (batch_no, batch) in names.chunks(100).enumerate() {
        let mut sql = String::new();
        for (i, (schema, table)) in batch.iter().enumerate() {
            sql.push_str(&format!(
                "SELECT {} AS i, count(*) AS n FROM {}.{}.{};\n",
                batch_no * 100 + i,
                quote_ident(db_name),
                quote_ident(schema),
                quote_ident(table)
            ));
        }
        let rows = cli.request(&sql).map_err(ctx)?;
        let mut got = vec![None; batch.len()];
        for r in &rows {
            let i = r.get("i").and_then(Value::as_u64);
            let n = r.get("n").and_then(Value::as_u64);
            let base = batch_no * 100;
            let slot = i.and_then(|i| (i as usize).checked_sub(base));
            match (slot, n) {
                (Some(k), Some(n)) if k < batch.len() => got[k] = Some(n),
                _ => return Err(ctx(cli.fail(format!("unexpected count row {r:?}")))),
            }
        }
        for ((schema, table), n) in batch.iter().zip(got) {
            match n {
                Some(n) => {
                    counts.insert(table_key(schema, table), n);
                }
                None => {
                    return Err(ctx(
                        cli.fail(format!("no row count for {}", table_key(schema, table)))
                    ))
                }
            }
        }
    }
    Ok(counts)
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Open a restored file with DuckDB (read-only: it is not modified) and compare it with the
/// facts recorded at backup time; the mismatches (empty = ok).
pub fn check_restored(cli: &Path, path: &Path, facts: &DuckdbFacts) -> Result<Vec<String>> {
    check_restored_with(cli, path, facts, Timeouts::from_env())
}

pub fn check_restored_with(
    cli: &Path,
    path: &Path,
    facts: &DuckdbFacts,
    timeouts: Timeouts,
) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    if path.is_file() && !is_duckdb(path) {
        bad.push(format!(
            "{} is not a DuckDB database (no DUCK magic bytes)",
            path.display()
        ));
        return Ok(bad);
    }
    let path = check_is_duckdb(path)?;
    for suffix in SIDECARS {
        let p = sidecar(&path, suffix);
        if std::fs::metadata(&p).is_ok_and(|m| m.len() > 0) {
            bad.push(format!(
                "{} exists next to the restored database: DuckDB would replay it into the \
                 database when it opens it, which duplicates or corrupts data",
                p.display()
            ));
        }
    }
    if !bad.is_empty() {
        // Even a read-only open replays those logs (in memory); nothing more to learn.
        return Ok(bad);
    }
    let opened = open_read_only(cli, &path, timeouts)?;
    let mut snap = DuckdbSnapshot::from_opened(opened, path)?;
    let found = snap.facts()?;
    if found.block_size != facts.block_size {
        bad.push(format!(
            "block size is {}, the backup recorded {}",
            found.block_size, facts.block_size
        ));
    }
    if found.storage_version != facts.storage_version {
        bad.push(format!(
            "storage version is {}, the backup recorded {}",
            found.storage_version, facts.storage_version
        ));
    }
    for (table, &rows) in &facts.tables {
        match found.tables.get(table) {
            None => bad.push(format!("table {table} is missing")),
            Some(&n) if n != rows => bad.push(format!(
                "table {table} has {n} rows, the backup recorded {rows}"
            )),
            Some(_) => {}
        }
    }
    for table in found.tables.keys() {
        if !facts.tables.contains_key(table) {
            bad.push(format!("table {table} was not in the backup"));
        }
    }
    if found.sha256 != facts.sha256 {
        bad.push(format!(
            "the file's SHA-256 is {}, the backup recorded {}",
            found.sha256, facts.sha256
        ));
    }
    Ok(bad)
}

/// Replay a pending write-ahead log into the file: open it read-write, `CHECKPOINT`, close.
/// This writes the database, so lifeboat never does it on its own; it is for an explicit
/// request. Fails at once (in use) if any process has the file open.
pub fn checkpoint(cli: &Path, path: &Path, timeouts: Timeouts) -> Result<()> {
    let path = check_is_duckdb(path)?;
    let mut opened = match try_open(cli, &path, false, timeouts.answer) {
        Ok(o) => o,
        Err(Failure::Exited(text)) if is_lock_conflict(&text) => {
            return Err(Error::new(
                ErrorKind::InUse,
                format!(
                    "cannot checkpoint {}: {} has it open (DuckDB said: {})",
                    path.display(),
                    holders(&path, &text).replace("another process", "a process"),
                    first_line(&text)
                ),
            ))
        }
        Err(e) => return Err(e.into_error(&path, "cannot open")),
    };
    opened
        .cli
        .request("CHECKPOINT;")
        .map_err(|e| e.into_error(&path, "cannot checkpoint"))?;
    opened
        .cli
        .finish(timeouts.answer)
        .map_err(|e| e.into_error(&path, "cannot close"))?;
    if let Some((wal, len)) = pending_log(&path) {
        return Err(Error::source(format!(
            "{} still has {} bytes in {} after a checkpoint",
            path.display(),
            len,
            wal.display()
        )));
    }
    Ok(())
}

/// Why a DuckDB process did not answer.
#[derive(Debug)]
enum Failure {
    /// It ended (or was ended after a wrong answer); what it printed on stderr, plus ours.
    Exited(String),
    /// No answer within the timeout; it was killed.
    Timeout(Duration),
    /// It could not be started or written to.
    Io(String),
}

impl Failure {
    fn into_error(self, path: &Path, action: &str) -> Error {
        match self {
            Failure::Exited(text) => Error::source(format!(
                "{action} {} with DuckDB: {}",
                path.display(),
                short(&text)
            )),
            Failure::Timeout(t) => Error::source(format!(
                "{action} {}: the DuckDB process gave no answer within {} s and was stopped",
                path.display(),
                t.as_secs_f64()
            ))
            .hint("LIFEBOAT_DUCKDB_TIMEOUT sets how many seconds lifeboat waits for an answer"),
            Failure::Io(text) => {
                Error::source(format!("{action} {}: {text}", path.display())).hint(INSTALL_HINT)
            }
        }
    }
}

/// At most a few lines of DuckDB's output (its internal errors print a stack trace).
fn short(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut out = lines
        .iter()
        .take(4)
        .copied()
        .collect::<Vec<_>>()
        .join(" | ");
    if lines.len() > 4 {
        out.push_str(" | …");
    }
    if out.is_empty() {
        "it ended without saying why".into()
    } else {
        out
    }
}

/// One DuckDB CLI process in its own process group (the PyPI `duckdb` is a Python wrapper
/// that runs the real binary as its child: killing the group ends both), reading SQL from a
/// pipe and answering in JSON lines.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    answer: Duration,
    seq: u64,
    done: bool,
    /// How our child ended, once reaped.
    status: Option<std::process::ExitStatus>,
}

impl Cli {
    fn spawn(
        cli: &Path,
        db: &Path,
        read_only: bool,
        answer: Duration,
    ) -> std::result::Result<Cli, Failure> {
        let mut cmd = Command::new(cli);
        // No init file (a ~/.duckdbrc could change the output mode); JSON lines out.
        cmd.args(["-init", "/dev/null", "-jsonlines"]);
        if read_only {
            cmd.arg("-readonly");
        }
        // Canonical, so absolute: never taken for an option or `:memory:`.
        cmd.arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Failure::Io(format!("cannot run {}: {e}", cli.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let (etx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            // Keep the start (the error), not a whole stack trace.
            let _ = stderr.take(64 << 10).read_to_end(&mut text);
            let _ = etx.send(String::from_utf8_lossy(&text).into_owned());
        });
        Ok(Cli {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: stderr_rx,
            answer,
            seq: 0,
            done: false,
            status: None,
        })
    }

    /// Run `sql` (one or more statements) and return every row it printed.
    fn request(&mut self, sql: &str) -> std::result::Result<Vec<Map<String, Value>>, Failure> {
        self.seq += 1;
        let end = format!("lifeboat-end-{}", self.seq);
        let text = format!("{sql}\nSELECT '{end}' AS lifeboat_end;\n");
        let written = match self.stdin.as_mut() {
            Some(w) => w.write_all(text.as_bytes()).and_then(|()| w.flush()),
            None => Err(std::io::Error::other("its input is closed")),
        };
        if let Err(e) = written {
            return Err(self.fail(format!("cannot write to the DuckDB process: {e}")));
        }
        let deadline = Instant::now() + self.answer;
        let mut rows = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    if line.is_empty() {
                        continue; // an empty result prints an empty line
                    }
                    match serde_json::from_str::<Value>(line) {
                        Ok(Value::Object(row)) => {
                            if row.get("lifeboat_end").and_then(Value::as_str) == Some(&end) {
                                return Ok(rows);
                            }
                            rows.push(row);
                        }
                        _ => return Err(self.fail(format!("unexpected output {line:?}"))),
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(Failure::Timeout(self.answer));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // It ended: its stderr says why.
                    return Err(self.fail(String::new()));
                }
            }
        }
    }

    /// End the process and collect its stderr, with `why` after it.
    fn fail(&mut self, why: String) -> Failure {
        self.kill();
        let text = self
            .stderr
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        let mut parts: Vec<String> = [text, why]
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .collect();
        if parts.is_empty() {
            if let Some(status) = self.status.filter(|s| !s.success()) {
                parts.push(format!(
                    "it ended ({status}) without a word; is it the DuckDB CLI?"
                ));
            }
        }
        Failure::Exited(parts.join("\n"))
    }

    /// Close its input and wait for it to end on its own (a read-write DuckDB checkpoints
    /// when it closes); killed after `limit`.
    fn finish(&mut self, limit: Duration) -> std::result::Result<(), Failure> {
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.done = true;
                    self.status = Some(status);
                    if status.success() {
                        return Ok(());
                    }
                    let text = self
                        .stderr
                        .recv_timeout(Duration::from_secs(2))
                        .unwrap_or_default();
                    return Err(Failure::Exited(format!("{text}\nit exited with {status}")));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    self.kill();
                    return Err(Failure::Timeout(limit));
                }
                Err(e) => {
                    self.kill();
                    return Err(Failure::Io(format!("cannot wait for DuckDB: {e}")));
                }
            }
        }
    }

    /// Kill the whole process group and reap our child; wait (briefly) until no process of
    /// the group is left, so the file's lock is gone when this returns.
    fn kill(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        drop(self.stdin.take());
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls. The group is ours: its leader is our child and is not yet
        // reaped, so its id cannot have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        self.status = self.child.wait().ok();
        let deadline = Instant::now() + Duration::from_secs(2);
        // SAFETY: signal 0 only checks whether a process of the group exists.
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if !self.done {
            // A read-only process ends as soon as its input closes; kill it if it does not.
            let _ = self.finish(Duration::from_secs(2));
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests;

/// A DuckDB database file as a [`Source`]: its header and blocks, read while a read-only
/// DuckDB process holds the file's lock, stored as a `stream` cut at DuckDB's own block
/// boundaries, with its tables and row counts.
pub struct DuckdbSource {
    path: PathBuf,
    cli: PathBuf,
}

impl DuckdbSource {
    pub fn new(path: &Path) -> Result<DuckdbSource> {
        let path = check_is_duckdb(path)?;
        Ok(DuckdbSource {
            cli: find_cli()?,
            path,
        })
    }
}

/// The snapshot as the engine reads images. The engine hashes what it reads; its SHA-256 is
/// handed back through `note_sha256` before the facts are taken.
struct Image<'a> {
    snap: &'a mut DuckdbSnapshot,
}

impl Snapshot for Image<'_> {
    fn block_size(&self) -> u32 {
        self.snap.block_size()
    }

    fn len(&self) -> u64 {
        self.snap.len()
    }

    fn read_chunks(&mut self, f: &mut dyn FnMut(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        // A placeholder until the engine's hash is known: the snapshot skips its own pass.
        self.snap.note_sha256(String::new());
        self.snap.read_chunks(f)
    }
}

impl Source for DuckdbSource {
    fn kind(&self) -> Kind {
        Kind::Duckdb
    }

    fn back_up(&mut self, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
        let mut snap = DuckdbSnapshot::open(&self.cli, &self.path)?;
        let stored = writer.image(&mut Image { snap: &mut snap }, Cut::Blocks)?;
        snap.note_sha256(stored.sha256.clone());
        let facts = snap.facts()?;
        let info = DuckdbInfo {
            storage_version: facts.storage_version,
            duckdb_version: facts.duckdb_version,
            created_by: facts.created_by,
            header_bytes: snap.header_bytes(),
            block_size: facts.block_size,
            logical_bytes: snap.len(),
            sha256: facts.sha256,
            tables: facts.tables,
        };
        drop(snap); // releases the lock
        Ok(BackedUp {
            content: stored.content,
            facts: SourceFacts::Duckdb(info),
            warnings: Vec::new(),
        })
    }
}

impl From<&DuckdbInfo> for DuckdbFacts {
    fn from(i: &DuckdbInfo) -> DuckdbFacts {
        DuckdbFacts {
            storage_version: i.storage_version,
            duckdb_version: i.duckdb_version.clone(),
            created_by: i.created_by.clone(),
            block_size: i.block_size,
            tables: i.tables.clone(),
            sha256: i.sha256.clone(),
        }
    }
}
