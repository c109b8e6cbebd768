//! Restores of physical PostgreSQL base backups: a data directory with the recovery settings
//! that replay the archived WAL to a chosen moment (`restore --pgdata`), optionally started
//! and watched until recovery ends (`--start`); drills that do all of that in a throwaway
//! server; and the window the archive can restore (`timeline`).

use crate::error::{Error, ErrorKind, Result};
use crate::ops::verify::VerifyReport;
use crate::progress::Progress;
use crate::repo::manifest::{Manifest, PhysicalInfo};
use crate::repo::pgwal::{self, Listed, WalFile};
use crate::repo::Repository;
use crate::source::postgres::cluster::{self, Cluster};
use crate::source::postgres::tools;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay every archived WAL file (the newest state the archive holds).
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// `recovery_target_time` (RFC 3339, or as PostgreSQL reads it).
    Time(String),
    Lsn(String),
    Xid(String),
}

/// A time as PostgreSQL's settings read it (`2026-11-11 14:29:59.5+00`; it refuses
/// RFC 3339's `T` and `Z`).
fn pg_time(t: &str) -> String {
    match t.parse::<jiff::Timestamp>() {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string(),
        Err(_) => t.to_string(),
    }
}

impl RecoveryTarget {
    fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            RecoveryTarget::Latest => Vec::new(),
            RecoveryTarget::Immediate => vec![("recovery_target", "immediate".into())],
            RecoveryTarget::Time(t) => vec![("recovery_target_time", pg_time(t))],
            RecoveryTarget::Lsn(l) => vec![("recovery_target_lsn", l.clone())],
            RecoveryTarget::Xid(x) => vec![("recovery_target_xid", x.clone())],
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Latest => "the end of the archived WAL".into(),
            RecoveryTarget::Immediate => "the end of the backup (consistent)".into(),
            RecoveryTarget::Time(t) => format!("time {t}"),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Xid(x) => format!("transaction {x}"),
        }
    }
}

/// The physical facts of a backup, or a usage error naming what it is instead.
pub fn physical_info(m: &Manifest) -> Result<&PhysicalInfo> {
    m.postgres
        .as_ref()
        .and_then(|p| p.physical.as_deref())
        .ok_or_else(|| {
            Error::usage(format!(
                "backup {} of {} is not a physical PostgreSQL base backup",
                m.id, m.source.path
            ))
            .hint("--pgdata restores backups taken with `lifeboat backup postgres://… --physical`; restore a dump with --to or --output")
        })
}

/// Check a recovery target against the backup: a time before the backup ended cannot be
/// reached from it.
pub fn check_target(m: &Manifest, target: &RecoveryTarget, timeline: Option<&str>) -> Result<()> {
    let info = physical_info(m)?;
    if let Some(t) = timeline {
        if !matches!(t, "latest" | "current") && t.parse::<u32>().map_or(true, |n| n == 0) {
            return Err(Error::usage(format!(
                "--timeline {t:?}: give latest, current or a timeline number"
            )));
        }
    }
    match target {
        RecoveryTarget::Time(t) => {
            let at: jiff::Timestamp = t.parse().map_err(|e| {
                Error::usage(format!("--at {t:?} is not a time: {e}"))
                    .hint("write it as RFC 3339, e.g. 2026-11-11T14:29:59Z")
            })?;
            let end: jiff::Timestamp = info
                .stop_time
                .parse()
                .map_err(|_| Error::integrity("the manifest's stop_time is malformed"))?;
            if at < end {
                return Err(Error::usage(format!(
                    "backup {} ended at {}, after {t}: it cannot be restored to an earlier moment",
                    m.id, info.stop_time
                ))
                .hint("pick an older base backup (`lifeboat list`), or use `--at` with `latest` as the backup id to let Lifeboat pick"));
            }
        }
        RecoveryTarget::Lsn(l) => {
            let lsn = pgwal::parse_lsn(l).ok_or_else(|| {
                Error::usage(format!(
                    "--lsn {l:?} is not a WAL position (like 0/16B3740)"
                ))
            })?;
            let stop = pgwal::parse_lsn(&info.stop_lsn).unwrap_or(0);
            if lsn < stop {
                return Err(Error::usage(format!(
                    "backup {} is consistent only from {}, after {l}",
                    m.id, info.stop_lsn
                ))
                .hint("pick an older base backup"));
            }
        }
        RecoveryTarget::Xid(x) if x.parse::<u64>().is_err() => {
            return Err(Error::usage(format!("--xid {x:?} is not a transaction id")));
        }
        _ => {}
    }
    Ok(())
}

/// The newest physical backup of `source` that ended at or before `at` (for `--at`
/// without a backup id).
pub fn pick_base<'a>(
    manifests: &'a [Manifest],
    source: Option<&str>,
    at: Option<&jiff::Timestamp>,
) -> Option<&'a Manifest> {
    manifests
        .iter()
        .filter(|m| source.is_none_or(|s| m.source.path == s))
        .filter_map(|m| Some((m, physical_info(m).ok()?)))
        .filter(|(_, p)| {
            at.is_none_or(|at| {
                p.stop_time
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|end| end <= *at)
            })
        })
        .max_by(|a, b| a.1.stop_time.cmp(&b.1.stop_time))
        .map(|(m, _)| m)
}

#[derive(Debug, Clone)]
pub struct PgdataOptions {
    pub pgdata: PathBuf,
    pub target: RecoveryTarget,
    /// The `restore_command` written into the settings (the CLI knows how it was called).
    pub restore_command: String,
    /// Listen on this port (the restored settings keep the original server's otherwise).
    pub port: Option<u16>,
    /// Start the server and wait until recovery has ended.
    pub start: bool,
    /// `recovery_target_timeline`: `latest` (PostgreSQL's default), `current` or a number.
    pub timeline: Option<String>,
    /// Keep WAL archiving on in the restored server (it replaces the original). Off by
    /// default: a copy beside the original must not archive into its repository, where a
    /// new timeline would change what later restores follow.
    pub archive: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PgdataRestored {
    pub id: String,
    pub pgdata: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub target: String,
    pub settings_file: PathBuf,
    /// Tablespaces restored inside the data directory (`pg_tblspc/<oid>`) rather than at
    /// their original locations.
    pub tablespaces_inside: Vec<u32>,
    /// With `--start`: the server is running and has finished recovery.
    pub started: bool,
    /// What the operator should know (a gap in the WAL after the backup).
    pub warnings: Vec<String>,
    pub start_ms: u64,
}

/// Restore base backup `m` into a new data directory and set up its recovery.
pub fn restore_pgdata(
    repo: &Repository,
    m: &Manifest,
    opts: &PgdataOptions,
    progress: &Progress,
) -> Result<PgdataRestored> {
    let info = physical_info(m)?.clone();
    check_target(m, &opts.target, opts.timeline.as_deref())?;
    // Whatever would fail after the restore fails before it.
    check_conf_value("the restore command", &opts.restore_command)?;
    for (k, v) in opts.target.settings() {
        check_conf_value(k, &v)?;
    }
    let chain = Chain::of(repo, &info)?;
    if let Some(missing) = chain.missing_for_consistency() {
        return Err(Error::integrity(format!(
            "WAL segment {missing}, which base backup {} needs to be consistent, is not in the \
             archive: the backup cannot be restored",
            m.id
        ))
        .hint("restore another base backup (`lifeboat timeline postgres://…` shows which are restorable), or put the segment back from a replica (`lifeboat repo repair`)"));
    }
    let mut warnings = Vec::new();
    if let Some(gap) = chain.gap_name() {
        warnings.push(format!(
            "WAL segment {gap} is missing from the archive: recovery cannot go past {} \
             (WAL archived after the gap is unreachable from this backup)",
            chain.last_name().unwrap_or_default()
        ));
    }
    prepare_empty(&opts.pgdata)?;
    // Built under another name, with its recovery set up, then renamed: a data directory
    // under the asked name is always one that recovers from the archive.
    let building = building_name(&opts.pgdata)?;
    if std::fs::symlink_metadata(&building).is_ok() {
        std::fs::remove_dir_all(&building)
            .map_err(|e| Error::io("cannot remove a killed restore's", &building, e))?;
    }
    let mut target = crate::ops::restore_tree::FolderTarget::new(building.clone(), false);
    let outcome = crate::ops::restore::restore(repo, m, &mut target, progress)?;
    // Removed if anything fails before it is renamed into place.
    let mut guard = RemoveOnDrop(Some(building.clone()));
    let done = outcome.tree.unwrap_or_default();
    let mut restored = PgdataRestored {
        id: m.id.clone(),
        pgdata: opts.pgdata.clone(),
        files: done.files,
        bytes: done.bytes,
        target: opts.target.describe(),
        warnings,
        ..Default::default()
    };
    restored.tablespaces_inside = keep_tablespaces_inside(&building, &info)?;
    if remove_standby_signal(&building)? {
        restored.warnings.push(
            "the backup was taken of a standby: its standby.signal was removed so that the copy \
             recovers and promotes (put it back, with primary_conninfo, to make it a standby)"
                .into(),
        );
    }
    write_recovery(&building, m, opts)?;
    std::fs::rename(&building, &opts.pgdata)
        .map_err(|e| Error::io("cannot create", &opts.pgdata, e))?;
    guard.0 = None;
    crate::storage::local::sync_dir(
        opts.pgdata
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    restored.settings_file = opts.pgdata.join("postgresql.auto.conf");
    if opts.start {
        let started = Instant::now();
        start_and_wait(&opts.pgdata)?;
        restored.started = true;
        restored.start_ms = started.elapsed().as_millis() as u64;
    }
    Ok(restored)
}

/// A folder removed when dropped (unless taken out).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// `<pgdata>.lifeboat-restoring`: where a data directory is built.
fn building_name(pgdata: &Path) -> Result<PathBuf> {
    let name = pgdata
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} names no folder", pgdata.display())))?;
    let mut building = name.to_os_string();
    building.push(".lifeboat-restoring");
    Ok(pgdata.with_file_name(building))
}

/// A data directory goes where nothing is: a missing path, or an empty folder (removed so
/// the restore can build it beside and rename it into place).
fn prepare_empty(pgdata: &Path) -> Result<()> {
    match std::fs::read_dir(pgdata) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::usage(format!(
                    "{} is not empty: a data directory is restored only into a new or empty folder",
                    pgdata.display()
                ))
                .hint("choose another --pgdata, or move the old data directory away first (stop its server)"));
            }
            std::fs::remove_dir(pgdata).map_err(|e| Error::io("cannot replace", pgdata, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::usage(format!(
            "{} is a file, not a folder",
            pgdata.display()
        ))),
        Err(e) => Err(Error::io("cannot read", pgdata, e)),
    }
}

/// Tablespaces come back as folders inside the data directory (`pg_tblspc/<oid>`): their
/// original locations may belong to the running server this backup was taken of. Without
/// `tablespace_map`, PostgreSQL uses those folders where they are.
fn keep_tablespaces_inside(pgdata: &Path, info: &PhysicalInfo) -> Result<Vec<u32>> {
    let map = pgdata.join("tablespace_map");
    if map.exists() {
        std::fs::remove_file(&map).map_err(|e| Error::io("cannot remove", &map, e))?;
    }
    Ok(info.tablespaces.iter().map(|t| t.oid).collect())
}

/// What a drill's server must not take from the backed-up settings: commands and libraries
/// (a superuser of the source could make the drill host run anything: a library named by a
/// path is loaded from the data directory the backup brought), a primary to follow, recovery
/// targets, and what only the source's host has (certificates, a pid file elsewhere).
/// Given on the server's command line, where they win over every file and `include`.
fn drill_overrides(cluster: &Cluster) -> Result<Vec<(&'static str, String)>> {
    let mut o: Vec<(&'static str, String)> = [
        "archive_command",
        "archive_library",
        "recovery_end_command",
        "archive_cleanup_command",
        "ssl_passphrase_command",
        "primary_conninfo",
        "primary_slot_name",
        "session_preload_libraries",
        "local_preload_libraries",
        "external_pid_file",
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
    ]
    .into_iter()
    .map(|k| (k, String::new()))
    .collect();
    o.push(("ssl", "off".into()));
    o.push(("dynamic_library_path", "$libdir".into()));
    // Preloaded libraries the data may need (an extension's) are kept when they are plain
    // names from the installation's library folder; one named by a path is dropped.
    let preload = cluster::effective_setting(cluster, "shared_preload_libraries")?;
    let kept: Vec<&str> = preload
        .split(',')
        .map(|l| l.trim().trim_matches('"'))
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .collect();
    o.push(("shared_preload_libraries", kept.join(",")));
    Ok(o)
}

fn remove_standby_signal(data: &Path) -> Result<bool> {
    let signal = data.join("standby.signal");
    match std::fs::remove_file(&signal) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove", &signal, e)),
    }
}

/// Every recovery target setting (PostgreSQL accepts one at most).
const RECOVERY_TARGETS: [&str; 5] = [
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
];

/// Tablespaces restored as folders in `pg_tblspc/` are "in-place" tablespaces to
/// PostgreSQL, which recovery refuses unless this is on.
const IN_PLACE_TABLESPACES: &str =
    "# tablespaces restored inside the data directory (pg_tblspc/OID)\nallow_in_place_tablespaces = on\n";

fn has_tablespaces(pgdata: &Path) -> bool {
    std::fs::read_dir(pgdata.join("pg_tblspc")).is_ok_and(|mut rd| rd.next().is_some())
}

/// A value for postgresql.conf, quoted: its parser reads `\\` escapes and `''`. A control
/// character (a line break would start a new setting) is refused by the callers'
/// [`check_conf_value`].
fn conf_quote(v: &str) -> String {
    cluster::quote_setting(v)
}

#[cfg(test)]
mod conf_tests {
    use super::*;

    #[test]
    fn settings_are_quoted_for_postgresql() {
        assert_eq!(conf_quote("a'b"), "'a''b'");
        assert_eq!(conf_quote("C:\\x\\t"), "'C:\\\\x\\\\t'");
        assert!(check_conf_value("x", "a\nrestore_command = 'evil'").is_err());
        assert!(check_conf_value("x", "/srv/it's fine").is_ok());
        assert_eq!(
            pg_time("2026-11-11T14:29:59.5Z"),
            "2026-11-11 14:29:59.5+00"
        );
    }
}

/// Refuse what no setting should hold (a line break would start a new one).
fn check_conf_value(what: &str, v: &str) -> Result<()> {
    if v.chars().any(char::is_control) {
        return Err(Error::usage(format!(
            "{what} holds a control character, which cannot go into postgresql.auto.conf"
        )));
    }
    Ok(())
}

/// `recovery.signal`, and the recovery settings appended to `postgresql.auto.conf`.
fn write_recovery(pgdata: &Path, m: &Manifest, opts: &PgdataOptions) -> Result<()> {
    check_conf_value("the restore command", &opts.restore_command)?;
    let signal = pgdata.join("recovery.signal");
    crate::storage::local::write_private_file(&signal, b"")?;
    let mut text = format!(
        "\n# Added by `lifeboat restore` of backup {} ({}), {}\nrestore_command = {}\n\
         recovery_target_timeline = {}\nrecovery_target_inclusive = on\n\
         recovery_min_apply_delay = 0\n",
        m.id.replace(|c: char| c.is_control(), ""),
        m.time.replace(|c: char| c.is_control(), ""),
        jiff::Timestamp::now(),
        conf_quote(&opts.restore_command),
        conf_quote(opts.timeline.as_deref().unwrap_or("latest"))
    );
    if !opts.archive {
        text.push_str(
            "# A restored copy does not archive into the original's repository (lifeboat \
             restore --archive keeps archiving on)\narchive_mode = off\n",
        );
    }
    // Targets the backed-up settings (or an earlier restore) left are emptied first:
    // PostgreSQL refuses several, and a stale one would stop recovery somewhere else.
    for k in RECOVERY_TARGETS {
        text.push_str(&format!("{k} = ''\n"));
    }
    for (k, v) in opts.target.settings() {
        check_conf_value(k, &v)?;
        text.push_str(&format!("{k} = {}\n", conf_quote(&v)));
    }
    if opts.target != RecoveryTarget::Latest {
        text.push_str("recovery_target_action = 'promote'\n");
    }
    if let Some(port) = opts.port {
        text.push_str(&format!("port = {port}\n"));
    }
    if has_tablespaces(pgdata) {
        text.push_str(IN_PLACE_TABLESPACES);
    }
    cluster::append_conf(&pgdata.join("postgresql.auto.conf"), &text)?;
    Ok(())
}

/// Start the server on a restored data directory (`pg_ctl`, as the `postgres` user when
/// root) and wait until recovery has ended: the server accepts connections and has removed
/// `recovery.signal`.
fn start_and_wait(pgdata: &Path) -> Result<()> {
    let major = data_major(pgdata)?;
    let pg_ctl = tools::find_exact("pg_ctl", major)?;
    let log = pgdata.join("log");
    std::fs::create_dir_all(&log).map_err(|e| Error::io("cannot create", &log, e))?;
    let log = log.join("lifeboat-start.log");
    let mut cmd = std::process::Command::new(&pg_ctl.path);
    cmd.arg("start")
        .current_dir(pgdata)
        .arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "3600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = cluster::system_user("postgres").ok_or_else(|| {
            Error::usage("PostgreSQL does not run as root, and there is no `postgres` user")
                .hint("restore without --start, hand the folder to the server's user, and start it as that user")
        })?;
        cluster::chown_tree(pgdata, uid, gid)?;
        // The server (and the restore_command it runs) is the postgres user's: none of
        // root's environment (a passphrase, cloud keys) goes with it.
        let home = cluster::system_user_home("postgres").ok_or_else(|| {
            Error::usage("the postgres user has no home folder for Lifeboat's WAL notes")
                .hint("give the postgres user a home, or start the server yourself with HOME set")
        })?;
        cluster::clean_env(&mut cmd, &home);
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::io("cannot run", &pg_ctl.path, e))?;
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut last: Vec<&str> = text.lines().rev().take(6).collect();
        last.reverse();
        last.join("\n  ")
    };
    if !out.status.success() {
        return Err(recovery_failed(&log_tail(), &log));
    }
    let deadline =
        Instant::now() + crate::source::seconds_from_env("LIFEBOAT_RECOVERY_TIMEOUT", 86_400);
    loop {
        crate::interrupt::check()?;
        let pid = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap_or_default();
        if pid.is_empty() {
            return Err(recovery_failed(&log_tail(), &log));
        }
        let ready = pid.lines().nth(7).is_some_and(|l| l.trim() == "ready");
        if ready && !pgdata.join("recovery.signal").exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                Error::source("recovery did not end within LIFEBOAT_RECOVERY_TIMEOUT").hint(
                    format!("the server is still running; see {}", log.display()),
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The restored server stopped: what its log says, and what to do about the usual causes.
fn recovery_failed(tail: &str, log: &Path) -> Error {
    let hint = if tail.contains("recovery ended before configured recovery target was reached") {
        format!(
            "the archive ends before the target (no commit after it was archived yet): restore again with `--at latest`, or a moment the archive covers (`lifeboat timeline`); see {}",
            log.display()
        )
    } else if tail.contains("could not restore file") || tail.contains("restore_command") {
        format!(
            "`lifeboat wal-fetch` failed for the server (as the server's user: it must reach the repository, and an encrypted one needs its passphrase); see {}",
            log.display()
        )
    } else {
        format!("see {}", log.display())
    };
    Error::source(format!(
        "the restored server stopped before recovery ended:\n  {tail}"
    ))
    .hint(hint)
}

/// The major version a data directory was written by (its `PG_VERSION`).
fn data_major(pgdata: &Path) -> Result<u32> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::integrity(format!("{} holds {text:?}, not a version", path.display())))
}

/// The archived WAL a base backup needs and what follows it, on the backup's own timeline.
struct Chain<'a> {
    system_id: u64,
    seg_size: u64,
    listing: std::borrow::Cow<'a, [Listed]>,
    /// The first and last segment the backup needs to be consistent.
    start: u64,
    stop: u64,
    /// The last segment of the unbroken run from `start`, and the first missing one after
    /// it when a later segment exists.
    last: Option<u64>,
    gap: Option<u64>,
    timeline: u32,
}

impl<'a> Chain<'a> {
    /// The chain of one backup, from a listing of its cluster's archive.
    fn of(repo: &Repository, info: &PhysicalInfo) -> Result<Chain<'static>> {
        let listing = pgwal::list(repo.storage(), parse_system_id(info)?)?;
        Chain::in_listing(std::borrow::Cow::Owned(listing), info)
    }

    /// The chain of one backup in `listing` (of its cluster: several backups share one).
    fn in_listing(
        listing: std::borrow::Cow<'a, [Listed]>,
        info: &PhysicalInfo,
    ) -> Result<Chain<'a>> {
        let seg_size = info.wal_segment_size.max(1 << 20);
        let segno = |name: &str, what: &str| {
            WalFile::parse(name)
                .and_then(|f| f.segno(seg_size))
                .ok_or_else(|| Error::integrity(format!("the manifest's {what} is malformed")))
        };
        let start = segno(&info.start_wal, "start_wal")?;
        let stop = segno(&info.stop_wal, "stop_wal")?;
        let (last, gap) = run_from(&listing, start, info.timeline, seg_size);
        Ok(Chain {
            system_id: parse_system_id(info)?,
            seg_size,
            listing,
            start,
            stop,
            last,
            gap,
            timeline: info.timeline,
        })
    }

    fn consistent(&self) -> bool {
        self.last.is_some_and(|l| l >= self.stop)
    }

    /// The first segment the backup needs that the archive lacks.
    fn missing_for_consistency(&self) -> Option<String> {
        (!self.consistent()).then(|| {
            pgwal::segment_name(
                self.timeline,
                self.last.map_or(self.start, |l| l + 1),
                self.seg_size,
            )
        })
    }

    fn gap_name(&self) -> Option<String> {
        self.gap
            .map(|g| pgwal::segment_name(self.timeline, g, self.seg_size))
    }

    fn last_name(&self) -> Option<String> {
        self.last
            .and_then(|l| archived_name(&self.listing, l, self.timeline, self.seg_size))
    }
}

/// The manifest's system identifier.
fn parse_system_id(info: &PhysicalInfo) -> Result<u64> {
    info.system_id
        .parse()
        .map_err(|_| Error::integrity("the manifest's system_id is malformed"))
}

/// The archive of one cluster, as `timeline` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    pub system_id: String,
    pub source: String,
    pub timelines: Vec<TimelineWindow>,
    /// The newest segment archived, when, and how long ago.
    pub newest_segment: Option<String>,
    pub newest_archived: Option<String>,
    pub newest_age_s: Option<i64>,
    pub base_backups: Vec<BaseWindow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineWindow {
    pub timeline: u32,
    pub first_segment: String,
    pub last_segment: String,
    pub segments: usize,
    pub bytes: u64,
    /// Missing segments between the first and the last: `[first missing, last missing]`.
    pub gaps: Vec<[String; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseWindow {
    pub id: String,
    pub timeline: u32,
    /// Restorable from (the end of the backup) …
    pub from: String,
    /// … to the end of the unbroken WAL after it (when that segment was archived).
    pub to: Option<String>,
    pub to_segment: Option<String>,
    /// The first segment missing after the backup, which ends its window.
    pub broken_at: Option<String>,
    /// False when WAL the backup itself needs is missing: it cannot be restored.
    pub consistent: bool,
}

/// The unbroken run of segments from `first` on (any timeline at or after `tli` for each
/// number): its last segment number, and the first missing one when a later segment
/// exists (a gap, not just the end).
fn run_from(listing: &[Listed], first: u64, tli: u32, seg_size: u64) -> (Option<u64>, Option<u64>) {
    // Only the backup's own timeline: another timeline's segment of the same number (a
    // fork, or a name planted in the listing, which is not authenticated) must not hide a
    // gap in this one.
    let have: std::collections::BTreeSet<u64> = listing
        .iter()
        .filter(|l| matches!(l.kind, WalFile::Segment { .. }) && l.kind.tli() == tli)
        .filter_map(|l| l.kind.segno(seg_size))
        .collect();
    let mut last = None;
    let mut n = first;
    while have.contains(&n) {
        last = Some(n);
        n += 1;
    }
    let gap = have.range(n..).next().map(|_| n);
    (last, gap)
}

/// The name of segment `n` of timeline `tli`, when archived.
fn archived_name(listing: &[Listed], n: u64, tli: u32, seg_size: u64) -> Option<String> {
    listing
        .iter()
        .filter(|l| matches!(l.kind, WalFile::Segment { .. }) && l.kind.tli() == tli)
        .find(|l| l.kind.segno(seg_size) == Some(n))
        .map(|l| l.file.clone())
}

/// When a segment was archived (read from its header).
fn archived_at(repo: &Repository, system_id: u64, file: &str) -> Option<String> {
    pgwal::fetch(repo, repo.storage(), system_id, file)
        .ok()
        .flatten()
        .map(|(h, _)| h.archived)
}

/// The restorable window of cluster `system_id`: per timeline, the segments and gaps; per
/// base backup, from its end to the end of the unbroken WAL after it.
pub fn timeline(repo: &Repository, system_id: u64, source: &str) -> Result<TimelineReport> {
    let listing = pgwal::list(repo.storage(), system_id)?;
    let manifests = repo.list_backups()?;
    let bases: Vec<(&Manifest, &PhysicalInfo)> = manifests
        .iter()
        .filter_map(|m| Some((m, physical_info(m).ok()?)))
        .filter(|(_, p)| p.system_id == system_id.to_string())
        .collect();
    let seg_size = bases
        .first()
        .map(|(_, p)| p.wal_segment_size)
        .unwrap_or(16 << 20);
    let mut by_tli: BTreeMap<u32, Vec<(u64, &Listed)>> = BTreeMap::new();
    for l in &listing {
        if let (WalFile::Segment { tli, .. }, Some(n)) = (l.kind, l.kind.segno(seg_size)) {
            by_tli.entry(tli).or_default().push((n, l));
        }
    }
    let mut timelines = Vec::new();
    for (tli, segs) in &by_tli {
        let mut gaps = Vec::new();
        for w in segs.windows(2) {
            if w[1].0 > w[0].0 + 1 {
                gaps.push([
                    pgwal::segment_name(*tli, w[0].0 + 1, seg_size),
                    pgwal::segment_name(*tli, w[1].0 - 1, seg_size),
                ]);
            }
        }
        timelines.push(TimelineWindow {
            timeline: *tli,
            first_segment: segs[0].1.file.clone(),
            last_segment: segs[segs.len() - 1].1.file.clone(),
            segments: segs.len(),
            bytes: segs.iter().map(|(_, l)| l.size).sum(),
            gaps,
        });
    }
    let newest = listing
        .iter()
        .filter(|l| matches!(l.kind, WalFile::Segment { .. }))
        .max_by_key(|l| (l.kind.segno(seg_size), l.kind.tli()));
    let newest_archived = newest.and_then(|l| archived_at(repo, system_id, &l.file));
    let newest_age_s = newest_archived
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| jiff::Timestamp::now().as_second() - t.as_second());
    let mut base_backups = Vec::new();
    for (m, p) in bases {
        let Ok(chain) = Chain::in_listing(std::borrow::Cow::Borrowed(&listing), p) else {
            continue;
        };
        let to_segment = chain.last_name().filter(|_| chain.consistent());
        let to = to_segment
            .as_deref()
            .and_then(|f| archived_at(repo, system_id, f));
        base_backups.push(BaseWindow {
            id: m.id.clone(),
            timeline: p.timeline,
            from: p.stop_time.clone(),
            to,
            to_segment,
            broken_at: chain.missing_for_consistency().or_else(|| chain.gap_name()),
            consistent: chain.consistent(),
        });
    }
    Ok(TimelineReport {
        system_id: system_id.to_string(),
        source: source.to_string(),
        timelines,
        newest_segment: newest.map(|l| l.file.clone()),
        newest_archived,
        newest_age_s,
        base_backups,
    })
}

/// The system identifier of the cluster a URI names: from its physical backups in the
/// repository (no server needed), else asked of the server.
pub fn system_id_for(
    repo: &Repository,
    source_key: &str,
    ask: &dyn Fn() -> Result<u64>,
) -> Result<u64> {
    let manifests = repo.list_backups()?;
    if let Some(p) = manifests
        .iter()
        .rev()
        .filter(|m| m.source.path == source_key)
        .find_map(|m| physical_info(m).ok())
    {
        return p
            .system_id
            .parse()
            .map_err(|_| Error::integrity("a manifest's system_id is malformed"));
    }
    ask()
}

/// Drill a physical base backup: restore it into a throwaway server's folder, check its
/// files against PostgreSQL's own backup manifest, replay the archived WAL to its end
/// (every segment read, authenticated and checked by Lifeboat as recovery asks for it),
/// start the server, run the check query, stop it.
pub fn drill(
    repo: &Repository,
    m: &Manifest,
    query: Option<&str>,
    progress: &Progress,
) -> Result<crate::ops::pg::DrillReport> {
    let info = physical_info(m)?.clone();
    let pg = m.postgres.clone().unwrap_or_default();
    let major = pg.server_version_num / 10000;
    let mut report = crate::ops::pg::DrillReport {
        check: VerifyReport::new(&m.id),
        restored_into: format!("a throwaway PostgreSQL {major} server"),
        rto_ms: 0,
    };
    let started = Instant::now();
    let mut cluster = Cluster::prepare(major, "postgres", true)?;
    let data = cluster.data();
    let mut target = crate::ops::restore_tree::FolderTarget::new(data.clone(), false);
    match crate::ops::restore::restore(repo, m, &mut target, progress) {
        Ok(outcome) => report.check.push(
            "read and check every object",
            true,
            format!(
                "{} files, every chunk matches its id",
                outcome.tree.map_or(0, |t| t.files)
            ),
        ),
        Err(e) if matches!(e.kind, ErrorKind::Integrity | ErrorKind::NotFound) => {
            report
                .check
                .push("read and check every object", false, e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let (ok, detail) = verify_backup_manifest(&cluster.bin().join("pg_verifybackup"), &data);
    report.check.push(MANIFEST_STEP, ok, detail);
    keep_tablespaces_inside(&data, &info)?;
    // The drill replays the backup's own timeline (`recovery_target_timeline = 'current'`):
    // a later timeline may be another restore's, whose WAL was never archived in full.
    let chain = Chain::of(repo, &info)?;
    if let Some(missing) = chain.missing_for_consistency() {
        report.check.push(
            WAL_STEP,
            false,
            format!(
                "segment {missing} is not in the archive: the backup cannot be made consistent"
            ),
        );
        return Ok(report);
    }
    match chain.gap_name() {
        None => report.check.push(
            "WAL chain after the backup",
            true,
            format!("unbroken to {}", chain.last_name().unwrap_or_default()),
        ),
        Some(gap) => report.check.push(
            "WAL chain after the backup",
            false,
            format!("segment {gap} is missing: WAL archived after it cannot be replayed"),
        ),
    };
    let (system_id, seg_size) = (chain.system_id, chain.seg_size);
    // What recovery will ask for, in the order it will: timeline histories, then segments.
    let mut plan: Vec<String> = chain
        .listing
        .iter()
        .filter(|l| matches!(l.kind, WalFile::History { .. }))
        .map(|l| l.file.clone())
        .collect();
    for n in chain.start..=chain.last.unwrap_or(chain.stop) {
        plan.extend(archived_name(&chain.listing, n, chain.timeline, seg_size));
    }
    let feed = Feed::create(cluster.dir(), &plan, cluster.run_as())?;
    let conf = format!(
        "restore_command = {}\nrecovery_target_timeline = 'current'\narchive_mode = off\n\
         hba_file = {}\nident_file = {}\nhot_standby = on\n{}",
        conf_quote(&format!(
            "/bin/sh '{}' %f %p",
            feed.script.display().to_string().replace('\'', "'\\''")
        )),
        conf_quote(&feed.hba.display().to_string()),
        conf_quote(&feed.ident.display().to_string()),
        if has_tablespaces(&data) {
            IN_PLACE_TABLESPACES
        } else {
            ""
        }
    );
    crate::storage::local::write_private_file(&data.join("recovery.signal"), b"")?;
    // A backup of a standby brings standby.signal: the drill recovers, it does not follow.
    remove_standby_signal(&data)?;
    cluster.hand_over_data()?;
    let overrides = drill_overrides(&cluster)?;
    let fed = std::thread::scope(|s| {
        let feeder = s.spawn(|| feed.run(repo, system_id, seg_size, &plan));
        let launched = cluster.launch(&conf, &overrides);
        let ended = launched.and_then(|()| wait_recovered(&mut cluster, &data, &feed.failed));
        feed.stop();
        let fed = feeder
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the WAL feeder panicked")));
        (ended, fed)
    });
    match fed {
        (_, Err(e)) => {
            report
                .check
                .push("replay the archived WAL", false, e.to_string());
            return Ok(report);
        }
        (Err(e), Ok(_)) => {
            let asked = std::fs::read_to_string(feed.dir.join("requests.log")).unwrap_or_default();
            report.check.push(
                "replay the archived WAL",
                false,
                format!("{e} (asked: {})", asked.replace('\n', " ")),
            );
            return Ok(report);
        }
        (Ok(()), Ok(n)) => {
            report.rto_ms = started.elapsed().as_millis() as u64;
            report.check.push(
                "replay the archived WAL",
                true,
                format!("{n} WAL files replayed; recovery ended, the server accepts connections"),
            )
        }
    };
    let target = cluster.target_as("postgres", &pg.user)?;
    drill_queries(&target, cluster.dir(), &info, query, &mut report.check)?;
    report.record(repo, &m.id);
    Ok(report)
}

/// `verify` of a base backup rebuilt in `data`: its files against PostgreSQL's own backup
/// manifest, and the WAL it needs in the archive. (`drill` also replays it.)
pub fn check_restored(
    repo: &Repository,
    m: &Manifest,
    data: &Path,
) -> Vec<(&'static str, bool, String)> {
    let major = m
        .postgres
        .as_ref()
        .map_or(0, |p| p.server_version_num / 10000);
    let files = match tools::find("pg_verifybackup", Some(major)) {
        Ok(client) => verify_backup_manifest(&client.path, data),
        Err(e) => (false, e.to_string()),
    };
    let wal = match physical_info(m).and_then(|info| Chain::of(repo, info)) {
        Ok(c) => match c.missing_for_consistency() {
            None => (
                true,
                format!(
                    "in the archive (through {})",
                    c.last_name().unwrap_or_default()
                ),
            ),
            Some(missing) => (false, format!("segment {missing} is not in the archive")),
        },
        Err(e) => (false, e.to_string()),
    };
    vec![(MANIFEST_STEP, files.0, files.1), (WAL_STEP, wal.0, wal.1)]
}

const MANIFEST_STEP: &str = "files match PostgreSQL's backup manifest";
const WAL_STEP: &str = "WAL the backup needs";

/// `pg_verifybackup`: every restored file against the checksums PostgreSQL wrote in its
/// backup manifest when it sent them (the WAL is checked separately).
fn verify_backup_manifest(program: &Path, data: &Path) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(["--no-parse-wal", "--quiet"])
        .arg(data)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => (true, "pg_verifybackup: every checksum matches".into()),
        Ok(o) => (false, String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => (false, format!("cannot run {}: {e}", program.display())),
    }
}

/// Wait until the drill's server has ended recovery and accepts connections.
fn wait_recovered(
    cluster: &mut Cluster,
    data: &Path,
    feed_failed: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let deadline =
        Instant::now() + crate::source::seconds_from_env("LIFEBOAT_RECOVERY_TIMEOUT", 86_400);
    loop {
        crate::interrupt::check()?;
        if feed_failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::source("the WAL feed failed"));
        }
        if !cluster.running() {
            return Err(Error::source(format!(
                "the server stopped during recovery: {}",
                cluster.log_tail(4)
            )));
        }
        if !data.join("recovery.signal").exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::source(
                "recovery did not end within LIFEBOAT_RECOVERY_TIMEOUT",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn drill_queries(
    target: &crate::source::postgres::conn::PgTarget,
    work: &Path,
    info: &PhysicalInfo,
    query: Option<&str>,
    report: &mut VerifyReport,
) -> Result<()> {
    let env = target.client_env(work)?;
    let psql = tools::Psql {
        client: tools::find("psql", None)?,
        target,
        env: &env,
    };
    let stop = pgwal::parse_lsn(&info.stop_lsn)
        .map(pgwal::format_lsn)
        .ok_or_else(|| Error::integrity("the manifest's stop_lsn is malformed"))?;
    let sql = format!(
        "SELECT NOT pg_is_in_recovery(), pg_current_wal_lsn() >= '{stop}'::pg_lsn, \
         (SELECT count(*) FROM pg_database WHERE datallowconn), pg_current_wal_lsn()"
    );
    match psql.query(&sql) {
        Ok(rows) => {
            let row = rows.into_iter().next().unwrap_or_default();
            let ok = row.first().is_some_and(|v| v == "t") && row.get(1).is_some_and(|v| v == "t");
            report.push(
                "server recovered past the backup",
                ok,
                format!(
                    "{} databases, WAL at {} (backup ended at {})",
                    row.get(2).map_or("?", |s| s),
                    row.get(3).map_or("?", |s| s),
                    info.stop_lsn
                ),
            );
        }
        Err(e) => {
            report.push("server recovered past the backup", false, e.to_string());
        }
    }
    if let Some(q) = query {
        let r = psql.value(q);
        let ok = matches!(&r, Ok(v) if !matches!(v.trim(), "" | "f" | "false" | "0"));
        report.push(
            "check query",
            ok,
            match r {
                Ok(v) => format!("returned {}", v.trim()),
                Err(e) => e.to_string(),
            },
        );
    }
    Ok(())
}

/// The drill's WAL supply: Lifeboat fetches, authenticates and checks every file recovery
/// will ask for, a few ahead, into a folder the server's `restore_command` (a small shell
/// script) takes them from. A damaged file stops recovery (exit 200: PostgreSQL aborts
/// rather than ending recovery early) and the drill reports it by name.
struct Feed {
    dir: PathBuf,
    script: PathBuf,
    hba: PathBuf,
    ident: PathBuf,
    run_as: Option<(u32, u32)>,
    stop: std::sync::atomic::AtomicBool,
    /// The feeder failed (the server is told through the folder; this tells the drill).
    failed: std::sync::atomic::AtomicBool,
}

/// Files fetched ahead of recovery, at most.
const FEED_AHEAD: usize = 8;

impl Feed {
    fn create(work: &Path, plan: &[String], run_as: Option<(u32, u32)>) -> Result<Feed> {
        let dir = work.join("wal-feed");
        let planned = dir.join("plan");
        crate::storage::local::create_private_dir(&dir)?;
        crate::storage::local::create_private_dir(&planned)?;
        for name in plan {
            crate::storage::local::write_private_file(&planned.join(name), b"")?;
        }
        let script = work.join("fetch-wal.sh");
        let d = dir.display().to_string().replace('\'', "'\\''");
        let text = format!(
            "#!/bin/sh\n# restore_command of a Lifeboat drill: files Lifeboat fetched and checked.\n\
             d='{d}'\necho \"$1\" >> \"$d/requests.log\"\n[ -e \"$d/plan/$1\" ] || exit 1\necho \"$1\" > \"$d/asked\"\nwhile :; do\n\
             \x20 if [ -e \"$d/$1\" ]; then mv -f \"$d/$1\" \"$2\" && exit 0; exit 200; fi\n\
             \x20 [ -e \"$d/failed\" ] && exit 200\n\
             \x20 if [ -e \"$d/end\" ]; then [ -e \"$d/$1\" ] && continue; exit 1; fi\n\
             \x20 sleep 0.05\ndone\n"
        );
        crate::storage::local::write_private_file(&script, text.as_bytes())?;
        let hba = work.join("drill_hba.conf");
        crate::storage::local::write_private_file(&hba, b"local all all trust\n")?;
        let ident = work.join("drill_ident.conf");
        crate::storage::local::write_private_file(&ident, b"")?;
        if let Some((uid, gid)) = run_as {
            for p in [&dir, &planned, &script, &hba, &ident] {
                cluster::chown_tree(p, uid, gid)?;
            }
        }
        Ok(Feed {
            dir,
            script,
            hba,
            ident,
            run_as,
            stop: std::sync::atomic::AtomicBool::new(false),
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Segments supplied and not taken yet. Those behind the last one recovery asked for
    /// (it took another timeline's) are removed: recovery will not ask for them.
    fn pending(&self, seg_size: u64) -> usize {
        let asked = std::fs::read_to_string(self.dir.join("asked"))
            .ok()
            .and_then(|a| WalFile::parse(a.trim()))
            .and_then(|f| f.segno(seg_size));
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(f @ WalFile::Segment { .. }) = WalFile::parse(&name) else {
                continue;
            };
            match (f.segno(seg_size), asked) {
                (Some(s), Some(a)) if s < a => {
                    let _ = std::fs::remove_file(e.path());
                }
                _ => n += 1,
            }
        }
        n
    }

    /// Supply every planned file in order; the number supplied. Any failure is marked in
    /// the folder (the script then stops recovery) and in `failed` (the drill stops
    /// waiting).
    fn run(
        &self,
        repo: &Repository,
        system_id: u64,
        seg_size: u64,
        plan: &[String],
    ) -> Result<usize> {
        let result = self.supply(repo, system_id, seg_size, plan);
        if let Err(e) = &result {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = self.put("failed", e.to_string().as_bytes());
        }
        result
    }

    fn supply(
        &self,
        repo: &Repository,
        system_id: u64,
        seg_size: u64,
        plan: &[String],
    ) -> Result<usize> {
        let mut n = 0;
        for name in plan {
            while self.pending(seg_size) >= FEED_AHEAD {
                if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(n);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(n);
            }
            let got = pgwal::fetch(repo, repo.storage(), system_id, name)?;
            let (_, data) = got.ok_or_else(|| {
                Error::not_found(format!("WAL file {name} disappeared from the repository"))
            })?;
            if matches!(WalFile::parse(name), Some(WalFile::Segment { .. })) {
                pgwal::check_segment(name, &data, Some(system_id))?;
            }
            self.put(name, &data)?;
            n += 1;
        }
        self.put("end", b"")?;
        Ok(n)
    }

    /// Write `name` in the feed folder (which the server's user owns): created new under a
    /// temporary name without following links, handed over through its descriptor, then
    /// renamed into place.
    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("cannot create", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| Error::io("cannot hand over", &tmp, e))?;
        }
        drop(f);
        let path = self.dir.join(name);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot write", &path, e))
    }
}

/// What `repo check` found of the PostgreSQL WAL archive.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchiveCheck {
    /// Clusters with archived WAL.
    pub clusters: usize,
    pub files: usize,
    pub bytes: u64,
    /// Files opened, authenticated and checked (with `--read-data`).
    pub files_read: usize,
}

/// A problem `repo check` reports: the object, what is wrong, and the backups it affects.
pub type ArchiveProblem = (String, String, Vec<String>);

/// Check the archive against the physical base backups: each one's WAL is all there, and
/// no segment is missing after it (a gap ends the window of every backup before it). With
/// `read_data`, every archived file is read, authenticated and checked against its header
/// (and a segment against its page header).
pub fn check_archive(
    repo: &Repository,
    manifests: &[Manifest],
    read_data: bool,
    bytes_read: &mut u64,
) -> Result<(ArchiveCheck, Vec<ArchiveProblem>)> {
    let mut report = ArchiveCheck::default();
    let mut problems: Vec<ArchiveProblem> = Vec::new();
    let systems = pgwal::systems(repo.storage())?;
    report.clusters = systems.len();
    let physical: Vec<(&Manifest, &PhysicalInfo)> = manifests
        .iter()
        .filter_map(|m| Some((m, physical_info(m).ok()?)))
        .collect();
    // One listing per cluster, for every backup of it and the read below.
    let mut listings: BTreeMap<u64, Vec<Listed>> = BTreeMap::new();
    for id in &systems {
        listings.insert(*id, pgwal::list(repo.storage(), *id)?);
    }
    for &(m, info) in &physical {
        let id = parse_system_id(info)?;
        let listing = match listings.get(&id) {
            Some(l) => std::borrow::Cow::Borrowed(l.as_slice()),
            None => std::borrow::Cow::Owned(Vec::new()),
        };
        let chain = Chain::in_listing(listing, info)?;
        if let Some(missing) = chain.missing_for_consistency() {
            problems.push((
                pgwal::object_name(chain.system_id, &missing),
                "missing: a base backup needs it to be consistent".into(),
                vec![m.id.clone()],
            ));
        } else if let Some(gap) = chain.gap_name() {
            let name = pgwal::object_name(chain.system_id, &gap);
            match problems.iter_mut().find(|p| p.0 == name) {
                Some(p) => p.2.push(m.id.clone()),
                None => problems.push((
                    name,
                    "missing: the WAL archived after it cannot be replayed (a gap)".into(),
                    vec![m.id.clone()],
                )),
            }
        }
    }
    for (&id, listing) in &listings {
        report.files += listing.len();
        report.bytes += listing.iter().map(|l| l.size).sum::<u64>();
        if !read_data {
            continue;
        }
        for l in listing {
            crate::interrupt::check()?;
            let read = pgwal::fetch(repo, repo.storage(), id, &l.file).and_then(|got| {
                let (_, data) = got.ok_or_else(|| Error::not_found("gone"))?;
                if matches!(l.kind, WalFile::Segment { .. }) {
                    pgwal::check_segment(&l.file, &data, Some(id))?;
                }
                Ok(data.len())
            });
            match read {
                Ok(n) => {
                    report.files_read += 1;
                    *bytes_read += n as u64;
                }
                // Pruned since the listing.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => {
                    let affected = physical
                        .iter()
                        .filter(|(_, p)| p.system_id == id.to_string())
                        .filter(|(_, p)| {
                            let size = p.wal_segment_size.max(1 << 20);
                            let start = WalFile::parse(&p.start_wal).and_then(|f| f.segno(size));
                            matches!((start, l.kind.segno(size)), (Some(s), Some(n)) if n >= s)
                        })
                        .map(|(m, _)| m.id.clone())
                        .collect();
                    problems.push((pgwal::object_name(id, &l.file), e.message, affected));
                }
            }
        }
    }
    Ok((report, problems))
}
