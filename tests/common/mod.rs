//! Shared helpers for integration tests: each test gets its own folder, repository and HOME,
//! and runs the real `lifeboat` binary.
#![allow(dead_code)]

pub mod attacker;
pub mod azure;
pub mod daemon;
pub mod fault_proxy;
pub mod gcs;
pub mod postgres;
pub mod s3;
pub mod server;
pub mod store_scenarios;
pub mod tree;
pub mod webhook_receiver;

use assert_cmd::Command;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// `lifeboat` with HOME, the repository and the temp dir inside this test's folder.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("lifeboat").expect("binary");
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("LIFEBOAT_REPO", self.repo())
            // Tests back up into a fresh folder, as `backup --init` does.
            .env("LIFEBOAT_INIT", "1")
            .env("LIFEBOAT_TEMP_DIR", self.dir.path());
        c
    }

    /// Run `lifeboat ARGS --json`, assert success, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cmd().args(args).arg("--json").output().expect("run");
        assert!(
            out.status.success(),
            "lifeboat {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).expect("json on stdout")
    }

    /// Back up `db` and return the new backup id.
    pub fn backup(&self, db: &Path) -> String {
        let v = self.json(&["backup", db.to_str().expect("utf-8 path")]);
        v["id"].as_str().expect("id").to_string()
    }
}

/// A WAL-mode database with a table `t(id, v)` of `rows` rows.
pub fn make_db(path: &Path, rows: u32) -> Connection {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);",
    )
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..rows {
        tx.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [format!("row {i} {}", "x".repeat((i % 200) as usize))],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
    c
}

/// Every row of every table, in a canonical order: the logical content of a database.
pub fn dump(path: &Path) -> Vec<String> {
    // Read-only: a missing file is an error, not an empty database.
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()
        })
        .expect("tables");
    let mut out = Vec::new();
    for t in tables {
        let mut s = c
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
            .expect("select");
        let n = s.column_count();
        let rows = s
            .query_map([], |r| {
                let mut line = format!("{t}:");
                for i in 0..n {
                    line.push_str(&format!("{:?}|", r.get_ref(i)?));
                }
                Ok(line)
            })
            .expect("rows");
        for r in rows {
            out.push(r.expect("row"));
        }
    }
    out
}

// ---- Helpers for the process-level tests (live, crash, corruption, concurrency) ----

/// Path of the `lifeboat` binary under test.
pub fn lifeboat_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))
}

impl Env {
    /// A plain `std::process::Command` for `lifeboat` with the same environment as `cmd()`,
    /// for tests that spawn it in the background and wait for or kill it.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(lifeboat_bin());
        self.setup(&mut c);
        c
    }

    /// Give `c` (a `lifeboat` command, or strace running one) the environment `std_cmd`
    /// gives: this test's folder, HOME, repository and temp dir, and nothing else.
    pub fn setup(&self, c: &mut std::process::Command) {
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("LIFEBOAT_REPO", self.repo())
            // Tests back up into a fresh folder, as `backup --init` does.
            .env("LIFEBOAT_INIT", "1")
            .env("LIFEBOAT_TEMP_DIR", self.dir.path())
            .stdin(std::process::Stdio::null());
    }

    /// Run `lifeboat ARGS` (whatever the outcome): the exit code and stdout + stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out = self.std_cmd().args(args).output().expect("run lifeboat");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Run `lifeboat ARGS --json` (whatever the outcome): the exit code, stdout parsed as
    /// JSON (`Null` if it is not JSON) and stderr.
    pub fn run_json(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = self
            .std_cmd()
            .args(args)
            .arg("--json")
            .output()
            .expect("run lifeboat");
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A database with one table `filler(id, payload)` of `rows` rows of `payload` random bytes
/// each, in `journal_mode`, written in one transaction. Random content means no two pages
/// are alike, so nothing dedups and nothing compresses much.
pub fn make_random_db(path: &Path, journal_mode: &str, rows: u32, payload: u32) {
    let c = Connection::open(path).expect("open");
    let mode: String = c
        .query_row(&format!("PRAGMA journal_mode={journal_mode}"), [], |r| {
            r.get(0)
        })
        .expect("journal mode");
    assert_eq!(mode, journal_mode.to_ascii_lowercase());
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS filler(id INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
    )
    .expect("schema");
    c.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
         INSERT INTO filler(payload) SELECT randomblob(?2) FROM s",
        [rows, payload],
    )
    .expect("fill");
}

/// SHA-256 of a file's bytes, in hex (the form manifests record). Uses coreutils'
/// `sha256sum`, so the tests do not depend on whichever hashing crate lifeboat uses.
pub fn sha256_file(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// The lines `PRAGMA integrity_check` returns for the database at `path` (`["ok"]` if sound).
pub fn integrity_check(path: &Path) -> Vec<String> {
    let c = Connection::open(path).expect("open");
    let mut s = c.prepare("PRAGMA integrity_check").expect("prepare");
    let lines = s
        .query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .collect::<Result<Vec<_>, _>>()
        .expect("integrity_check rows");
    lines
}

/// Poll `cond` every 2 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Names of the files directly in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every file below `dir` (none if it does not exist), in no particular order.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `lifeboat` under strace, logging to `log` every `renameat(2)`: how a local repository
/// replaces an object (std's `rename(2)`, used for files outside the repository such as the
/// trust state, is another syscall and not counted). With `kill_at`, the process is killed
/// (SIGKILL) at that rename, before it happens. Fails the test if strace is missing.
pub fn lifeboat_under_strace(kill_at: Option<u32>, log: &Path) -> std::process::Command {
    lifeboat_under_strace_at("renameat", kill_at, log)
}

/// `lifeboat` under strace, logging every `syscall` (e.g. `linkat`, `rename`) to `log`. With
/// `kill_at` = N, the process is killed (SIGKILL) when one of its threads enters its N-th
/// such call, before the call happens: strace counts per thread, so N is the N-th of the
/// thread that gets there first. Fails the test if strace is missing.
pub fn lifeboat_under_strace_at(
    syscall: &str,
    kill_at: Option<u32>,
    log: &Path,
) -> std::process::Command {
    let mut c = strace_cmd();
    // -y: file descriptors with their paths, so `strace_calls` can tell which folder a call
    // acts in. `syscall` may be a list (`linkat,unlinkat`) when nothing is killed.
    c.args(["-f", "-qq", "-y", "-o"])
        .arg(log)
        .args(["-e", &format!("trace={syscall}")]);
    if let Some(n) = kill_at {
        c.arg("-e")
            .arg(format!("inject={syscall}:signal=SIGKILL:when={n}"));
    }
    c.arg(lifeboat_bin());
    c
}

/// `strace`, after checking that it runs: a missing strace fails the test, never skips it.
pub fn strace_cmd() -> std::process::Command {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is needed (scripts/test.sh installs it)"
    );
    std::process::Command::new("strace")
}

/// The lines of a strace log that record a `syscall` (`name(` at the start of the call).
pub fn calls_logged(log: &Path, syscall: &str) -> Vec<String> {
    let call = format!(" {syscall}(");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&call))
        .map(str::to_string)
        .collect()
}

/// Whether the last `syscall` in a strace log never returned: the process was killed as it
/// entered it (strace logs `= ?`, or `<unfinished ...>` with no `resumed` line after it when
/// other threads were logged meanwhile).
pub fn killed_in(log: &Path, syscall: &str) -> bool {
    let (call, resumed) = (format!(" {syscall}("), format!("<... {syscall} resumed>"));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rfind(|l| l.contains(&call) || l.contains(&resumed))
        .is_some_and(|l| l.ends_with("= ?") || l.ends_with("<unfinished ...>"))
}

/// One call in a strace log written with `-f -y`.
#[derive(Debug, Clone, PartialEq)]
pub struct StraceCall {
    /// The thread that made it.
    pub tid: String,
    pub syscall: String,
    /// The top folder of the repository (`data`, `index`, `locks`, `plans`, `tmp`, ...) the
    /// call acts in: for `linkat` and `renameat`, where the object goes. The whole path of
    /// the folder when it is outside the repository.
    pub folder: String,
}

/// The calls of a strace log (`-f -y`), in order; `repo`: the repository they act in.
pub fn strace_calls(log: &Path, repo: &Path) -> Vec<StraceCall> {
    let repo = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let prefix = format!("{}/", repo.display());
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (tid, rest) = l.split_once(char::is_whitespace)?;
            let rest = rest.trim_start();
            let (syscall, args) = rest.split_once('(')?;
            if !syscall
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return None; // `<... resumed>`, `+++ exited`, `--- SIGKILL`
            }
            // The paths strace prints after file descriptors: `4</path/to/folder>`.
            let mut folders = Vec::new();
            let bytes = args.as_bytes();
            for (i, _) in args.match_indices('<') {
                if i > 0 && bytes[i - 1].is_ascii_digit() {
                    if let Some(end) = args[i + 1..].find('>') {
                        folders.push(&args[i + 1..i + 1 + end]);
                    }
                }
            }
            let folder = folders.last()?;
            let folder = match folder.strip_prefix(&prefix) {
                Some(inside) => inside.split('/').next().unwrap_or(inside).to_string(),
                None => folder.to_string(),
            };
            Some(StraceCall {
                tid: tid.to_string(),
                syscall: syscall.to_string(),
                folder,
            })
        })
        .collect()
}

/// A step of a run to kill a process at: the `nth` `syscall` that acts in `folder` (see
/// `StraceCall`), counted over the whole run.
#[derive(Debug, Clone, Copy)]
pub struct Aim<'a> {
    pub what: &'a str,
    pub syscall: &'a str,
    pub folder: &'a str,
    pub nth: usize,
}

impl Aim<'_> {
    /// The `kill_at` for `lifeboat_under_strace_at(self.syscall, ..)` that kills the process
    /// at this step, from the calls of an uninterrupted run. strace counts per thread: the
    /// step must be the first call of its number in its thread to come (else the test fails
    /// here, rather than kill elsewhere).
    pub fn kill_at(&self, probe: &[StraceCall]) -> u32 {
        let mut seen = 0;
        for (p, c) in probe.iter().enumerate() {
            if c.syscall != self.syscall || c.folder != self.folder {
                continue;
            }
            seen += 1;
            if seen < self.nth {
                continue;
            }
            let of_thread = |tid: &str| {
                probe[..p]
                    .iter()
                    .filter(|x| x.tid == tid && x.syscall == self.syscall)
                    .count()
            };
            let n = of_thread(&c.tid) + 1;
            let others: Vec<&String> = probe[..p]
                .iter()
                .map(|x| &x.tid)
                .filter(|t| **t != c.tid && of_thread(t) >= n)
                .collect();
            assert!(
                others.is_empty(),
                "{}: another thread makes its {n}th {} first: cannot aim there: {probe:#?}",
                self.what,
                self.syscall
            );
            return n as u32;
        }
        panic!(
            "{}: an uninterrupted run makes no {} #{} in {}: {probe:#?}",
            self.what, self.syscall, self.nth, self.folder
        );
    }

    /// Whether the run logged in `log` was killed at this step: its last `syscall`, which
    /// never returned, is the `nth` in `folder`.
    pub fn landed(&self, log: &Path, repo: &Path) -> bool {
        let calls = strace_calls(log, repo);
        let last = calls.iter().rfind(|c| c.syscall == self.syscall);
        killed_in(log, self.syscall)
            && last.is_some_and(|c| c.folder == self.folder)
            && calls
                .iter()
                .filter(|c| c.syscall == self.syscall && c.folder == self.folder)
                .count()
                == self.nth
    }
}

/// How many renames `lifeboat_under_strace` logged.
pub fn renames_logged(log: &Path) -> u32 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("renameat("))
        .count() as u32
}

/// The unsigned integer `v[field]` (a field path like `prune.deleted_packs` goes down into
/// objects): the test fails when it is missing or not a number, instead of comparing `None`
/// (which `Option`'s ordering puts below every number).
pub fn num(v: &serde_json::Value, field: &str) -> u64 {
    let x = field.split('.').fold(v, |x, k| &x[k]);
    x.as_u64()
        .unwrap_or_else(|| panic!("field {field} is missing or not a number in {v}"))
}

/// Argon2id parameters that make a test's key derivation cheap (`repo init`, `key add`).
pub const FAST_KDF: [&str; 4] = ["--argon2-memory", "64", "--argon2-iterations", "1"];

/// Copy the folder `from` (files and folders) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// One run of `lifeboat`: exit code, stdout, stderr.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn of(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.text()))
    }
    pub fn ok(self, what: &str) -> Out {
        assert_eq!(self.code, 0, "{what} failed:\n{}", self.text());
        self
    }
    pub fn code(self, code: i32, what: &str) -> Out {
        assert_eq!(self.code, code, "{what}: wrong exit code:\n{}", self.text());
        self
    }
    /// Exit `code`, and the output says `says`.
    pub fn fails(self, code: i32, what: &str, says: &str) -> Out {
        let o = self.code(code, what);
        assert!(
            o.text().contains(says),
            "{what} should say {says:?}:\n{}",
            o.text()
        );
        o
    }
}
