//! Helpers for the retention tests (tests/retention.rs, tests/prune_concurrency.rs,
//! tests/prune_crash.rs): a runner for `lifeboat` on a local or S3 repository, made-up
//! backup times, database changes, and the checks every test ends with (repo check clean,
//! every backup verifies and restores to its recorded SHA-256).
//!
//! Included with `#[path = "common/retention_support.rs"] mod support;` next to `mod common;`.
#![allow(dead_code)]

use crate::common::{sha256_file, Env};
use rusqlite::Connection;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// `lifeboat` on one repository: the test's local one, or another location (an S3 URL)
/// with the variables it needs.
pub struct Runner<'a> {
    pub env: &'a Env,
    /// Replaces `LIFEBOAT_REPO` when set.
    pub repo: Option<String>,
    pub vars: Vec<(String, String)>,
}

impl<'a> Runner<'a> {
    pub fn local(env: &'a Env) -> Runner<'a> {
        Runner {
            env,
            repo: None,
            vars: Vec::new(),
        }
    }

    pub fn at(env: &'a Env, repo: &str, vars: &[(&str, String)]) -> Runner<'a> {
        Runner {
            env,
            repo: Some(repo.to_string()),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// The same runner with one more variable.
    pub fn with(&self, key: &str, value: &str) -> Runner<'a> {
        let mut vars = self.vars.clone();
        vars.push((key.to_string(), value.to_string()));
        Runner {
            env: self.env,
            repo: self.repo.clone(),
            vars,
        }
    }

    pub fn location(&self) -> String {
        self.repo
            .clone()
            .unwrap_or_else(|| self.env.repo().display().to_string())
    }

    pub fn cmd(&self) -> std::process::Command {
        let mut c = self.env.std_cmd();
        if let Some(r) = &self.repo {
            c.env("LIFEBOAT_REPO", r);
        }
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Exit code, stdout and stderr of `lifeboat ARGS`.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().expect("run lifeboat");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Exit code, stdout as JSON (`Null` if not JSON) and stderr of `lifeboat ARGS --json`.
    pub fn run_json(&self, args: &[&str]) -> (i32, Value, String) {
        let (code, out, err) = self.run(&[args, &["--json"]].concat());
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }

    /// `lifeboat ARGS --json`, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        let (code, v, err) = self.run_json(args);
        assert_eq!(code, 0, "lifeboat {args:?} failed: {v}\n{err}");
        v
    }

    /// Start `lifeboat ARGS --json` in the background, output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd()
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lifeboat")
    }

    /// Back up `db`, recording `time` (RFC 3339) if given; returns the backup's JSON report.
    pub fn backup_at(&self, db: &Path, time: Option<&str>) -> Value {
        let mut args = vec!["backup", db.to_str().expect("utf-8 path")];
        if let Some(t) = time {
            args.extend(["--time", t]);
        }
        self.json(&args)
    }

    /// Backup ids, oldest first.
    pub fn ids(&self) -> Vec<String> {
        ids_of(&self.json(&["list"]))
    }

    /// `repo check` (with `--read-data` if asked) passes with no problem; its report.
    pub fn check_clean(&self, read_data: bool, context: &str) -> Value {
        let mut args = vec!["repo", "check"];
        if read_data {
            args.push("--read-data");
        }
        let (code, v, err) = self.run_json(&args);
        assert_eq!(code, 0, "{context}: repo check failed: {v}\n{err}");
        assert_eq!(v["ok"], true, "{context}: {v}");
        assert_eq!(
            v["problems"].as_array().map(Vec::len),
            Some(0),
            "{context}: {v}"
        );
        v
    }

    /// `verify --all` passes for every backup there is; returns how many there are.
    pub fn verify_all(&self, context: &str) -> usize {
        let (code, v, err) = self.run_json(&["verify", "--all"]);
        assert_eq!(code, 0, "{context}: verify --all failed: {v}\n{err}");
        assert_eq!(v["ok"], true, "{context}: {v}");
        v["backups"]
            .as_array()
            .unwrap_or_else(|| panic!("{context}: no backups in {v}"))
            .len()
    }

    /// Restore `id` to a new file and return that file's SHA-256; it must equal the SHA-256
    /// its manifest recorded.
    pub fn restore_matches_manifest(&self, id: &str) -> String {
        let out = self.env.path(&format!("restored-{id}-{}.db", unique()));
        let (code, _, err) = self.run(&["restore", id, "--output", out.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "restore {id}: {err}");
        let sha = sha256_file(&out);
        let m = self.json(&["show", id]);
        assert_eq!(
            m["sqlite"]["sha256"].as_str(),
            Some(sha.as_str()),
            "backup {id} restores to the SHA-256 its manifest records"
        );
        std::fs::remove_file(&out).expect("remove restored file");
        sha
    }

    pub fn stats(&self) -> Value {
        self.json(&["repo", "stats"])
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Ids in a `list --json` answer, in its order.
pub fn ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list is an array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// What `forget --json` decided: id -> (keep, reasons).
pub fn decisions(forget: &Value) -> BTreeMap<String, (bool, Vec<String>)> {
    let rows = forget["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("no backups in {forget}"));
    rows.iter()
        .map(|r| {
            let reasons = r["reasons"]
                .as_array()
                .expect("reasons")
                .iter()
                .map(|x| x.as_str().expect("reason").to_string())
                .collect();
            (
                r["id"].as_str().expect("id").to_string(),
                (r["keep"].as_bool().expect("keep"), reasons),
            )
        })
        .collect()
}

/// The ids `forget --json` reports removed (or, in a dry run, would remove).
pub fn removed(forget: &Value) -> BTreeSet<String> {
    forget["removed"]
        .as_array()
        .unwrap_or_else(|| panic!("no removed in {forget}"))
        .iter()
        .map(|x| x.as_str().expect("id").to_string())
        .collect()
}

/// Noon UTC, `days` days before today (UTC). Days >= 1 are always in the past.
pub fn noon_days_ago(days: i64) -> jiff::Timestamp {
    let now = jiff::Timestamp::now().as_second();
    let midnight = now - now.rem_euclid(86_400);
    jiff::Timestamp::from_second(midnight + 12 * 3600 - days * 86_400).expect("timestamp")
}

pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// `YYYY-MM-DD` of `t` in UTC.
pub fn utc_day(t: jiff::Timestamp) -> String {
    let z = t.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day())
}

/// `YYYY-Www` (ISO week) of `t` in UTC.
pub fn utc_iso_week(t: jiff::Timestamp) -> String {
    let w = t.to_zoned_datetime(jiff::tz::TimeZone::UTC).iso_week_date();
    format!("{:04}-W{:02}", w.year(), w.week())
}

/// Change a database made by `make_random_db`: rewrite every `step`-th row (from `offset`)
/// among the first `max_id` with fresh random bytes, and add `add` rows.
pub fn churn(db: &Path, step: u32, offset: u32, max_id: u32, add: u32) {
    let c = Connection::open(db).expect("open");
    c.execute(
        "UPDATE filler SET payload = randomblob(length(payload)) WHERE id % ?1 = ?2 AND id <= ?3",
        [step, offset % step, max_id],
    )
    .expect("update");
    c.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1) \
         INSERT INTO filler(payload) SELECT randomblob(200) FROM s",
        [add],
    )
    .expect("insert");
    // Fold the WAL into the file so a byte copy of the file is the whole database.
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// Every file under `root` (relative path -> size): to show that a command changed nothing.
pub fn tree(root: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(rel.display().to_string(), meta.len());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The files under `dir` of a local repository (e.g. `plans`, `locks`, `tmp`).
pub fn files_under(repo: &Path, dir: &str) -> Vec<PathBuf> {
    tree(&repo.join(dir))
        .keys()
        .map(|k| repo.join(dir).join(k))
        .collect()
}

/// Sum of the sizes of the packs of a local repository.
pub fn pack_bytes(repo: &Path) -> u64 {
    tree(&repo.join("data")).values().sum()
}

/// Send `signal` (e.g. "STOP", "CONT", "KILL") to a process with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Wait for `child` and return (exit code, stdout JSON or Null, stderr).
pub fn finish(child: Child) -> (i32, Value, String) {
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
