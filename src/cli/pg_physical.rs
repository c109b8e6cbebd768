//! `wal-push`, `wal-fetch`, `restore --pgdata`, `timeline postgres://…` and physical drills:
//! the PostgreSQL archive commands and what reads the archive.

use crate::{human_age, print_error, Ctx};
use lifeboat::error::{Error, ErrorKind, Result};
use lifeboat::ops::pg_physical::{self, PgdataOptions, RecoveryTarget};
use lifeboat::ops::pgwal;
use serde_json::json;
use std::path::{Path, PathBuf};

/// `wal-push PATH`: PostgreSQL's archive_command.
pub fn cmd_wal_push(ctx: &Ctx, path: &Path, pgdata: Option<PathBuf>) -> Result<i32> {
    let opts = pgwal::PushOptions {
        pgdata,
        parallel: env_count("LIFEBOAT_WAL_PUSH_PARALLEL", 4),
        batch: env_count("LIFEBOAT_WAL_PUSH_BATCH", 64),
    };
    let open = || ctx.open_repo();
    let storage = lifeboat::storage::open(&ctx.opener.location, false)?;
    let report = pgwal::push(&ctx.opener.location, storage.as_ref(), &open, path, &opts)?;
    if ctx.json {
        println!("{}", json!(report));
    } else if !report.stored.is_empty() {
        tracing::info!(
            "stored {} ({} files, {} bytes)",
            report.file,
            report.stored.len(),
            report.stored_bytes
        );
    }
    Ok(0)
}

fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| (1..=1024).contains(n))
        .unwrap_or(default)
}

/// `wal-fetch FILE DEST`: PostgreSQL's restore_command. Exit 0 when written, 1 when the
/// archive does not hold the file, and 128 + the usual code on any failure: PostgreSQL
/// treats an exit status above 125 as fatal and stops recovery, where any other would make
/// it end recovery early and promote a database that is missing WAL.
pub fn cmd_wal_fetch(ctx: &Ctx, file: &str, dest: &Path, pgdata: Option<PathBuf>) -> Result<i32> {
    let opts = pgwal::FetchOptions {
        pgdata,
        ahead: env_count("LIFEBOAT_WAL_PREFETCH", 16),
        parallel: env_count("LIFEBOAT_WAL_FETCH_PARALLEL", 4),
    };
    let result = lifeboat::storage::open(&ctx.opener.location, false).and_then(|storage| {
        let open = || ctx.open_repo();
        pgwal::fetch(
            &ctx.opener.location,
            storage.as_ref(),
            &open,
            file,
            dest,
            &opts,
        )
    });
    match result {
        Ok(report) => {
            if ctx.json {
                println!("{}", json!(report));
            }
            Ok(if report.found { 0 } else { 1 })
        }
        Err(e) => {
            if ctx.json {
                println!("{}", json!({ "error": crate::error_json(&e) }));
            }
            print_error(&e);
            Ok(crate::wal_fetch_failure(e.exit_code()))
        }
    }
}

/// The `restore_command` a restored data directory gets: this binary, with the options
/// that found the repository (never a passphrase itself).
fn restore_command(ctx: &Ctx) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "lifeboat".into());
    let mut words = vec![exe, "--repo".into(), ctx.opener.location.clone()];
    if let Some(c) = &ctx.config_path {
        words.push("--config".into());
        words.push(absolute(c));
    }
    if let Some(f) = &ctx.opener.passphrase.file {
        words.push("--password-file".into());
        words.push(absolute(f));
    }
    if let Some(i) = &ctx.opener.identity {
        words.push("--identity".into());
        words.push(absolute(i));
    }
    let mut cmd: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
    cmd.extend(["wal-fetch".into(), "%f".into(), "%p".into()]);
    cmd.join(" ")
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// A word for /bin/sh: as it is when plain, else single-quoted.
fn shell_quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@+,".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// What `restore --pgdata` was asked for.
pub struct PgdataArgs {
    pub id: Option<String>,
    pub source: Option<String>,
    pub pgdata: PathBuf,
    pub at: Option<String>,
    pub lsn: Option<String>,
    pub xid: Option<String>,
    pub immediate: bool,
    pub start: bool,
    pub port: Option<u16>,
    pub timeline: Option<String>,
    pub archive: bool,
}

pub fn cmd_restore_pgdata(ctx: &Ctx, a: PgdataArgs) -> Result<i32> {
    let target = match (&a.at, &a.lsn, &a.xid, a.immediate) {
        (Some(t), None, None, false) if t == "latest" => RecoveryTarget::Latest,
        (Some(t), None, None, false) => RecoveryTarget::Time(t.clone()),
        (None, Some(l), None, false) => RecoveryTarget::Lsn(l.clone()),
        (None, None, Some(x), false) => RecoveryTarget::Xid(x.clone()),
        (None, None, None, true) => RecoveryTarget::Immediate,
        (None, None, None, false) => RecoveryTarget::Latest,
        _ => return Err(Error::usage(
            "give one recovery target: --at TIME, --at latest, --lsn LSN, --xid XID or --immediate",
        )),
    };
    let repo = ctx.open_repo()?;
    let source = a.source.as_deref().map(|s| crate::source_key(Path::new(s)));
    if source.is_none() && a.id.as_deref().unwrap_or("latest") == "latest" {
        // `latest` of which cluster: refused when the repository holds several.
        let all = repo.list_backups()?;
        let mut clusters: Vec<&str> = all
            .iter()
            .filter(|m| pg_physical::physical_info(m).is_ok())
            .map(|m| m.source.path.as_str())
            .collect();
        clusters.sort_unstable();
        clusters.dedup();
        if clusters.len() > 1 {
            return Err(Error::usage(format!(
                "the repository holds base backups of several clusters ({}): which one?",
                clusters.join(", ")
            ))
            .hint("add --source postgres://USER@HOST:PORT/, or give a backup id"));
        }
    }
    let id = a.id.as_deref().unwrap_or("latest");
    let m = match (&target, id) {
        // `--at T` with `latest`: the newest base backup that ended by T.
        (RecoveryTarget::Time(t), "latest") => {
            let at: jiff::Timestamp = t.parse().map_err(|e| {
                Error::usage(format!("--at {t:?} is not a time: {e}"))
                    .hint("write it as RFC 3339, e.g. 2026-11-11T14:29:59Z")
            })?;
            let all = repo.list_backups()?;
            pg_physical::pick_base(&all, source.as_deref(), Some(&at))
                .cloned()
                .ok_or_else(|| {
                    Error::not_found(format!("no physical base backup ended by {t}"))
                        .hint("`lifeboat list` shows the backups; `lifeboat timeline postgres://…` the restorable window")
                })?
        }
        (_, "latest") => {
            let all = repo.list_backups()?;
            pg_physical::pick_base(&all, source.as_deref(), None)
                .cloned()
                .ok_or_else(|| {
                    Error::not_found(format!("no physical base backup in {}", repo.location()))
                        .hint(
                            "take one with `lifeboat backup postgres://USER@HOST:PORT/ --physical`",
                        )
                })?
        }
        _ => repo.resolve(id, source.as_deref())?,
    };
    ctx.record(&repo);
    // As root, --start runs the server as postgres with none of root's environment: its
    // restore_command must find the passphrase in a file that user can read.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if a.start
        && root
        && repo.is_encrypted()
        && ctx.opener.passphrase.file.is_none()
        && ctx.opener.identity.is_none()
    {
        return Err(Error::usage(
            "with --start as root, the server (run as postgres, without root's environment) cannot get the repository's passphrase",
        )
        .hint("give --password-file FILE (readable by postgres; it goes into restore_command), or restore without --start and start the server yourself"));
    }
    if !ctx.json {
        eprintln!(
            "restoring base backup {} of {} (taken {}, {} ago) into {}, recovery to {}",
            m.id,
            m.source.path,
            m.time,
            human_age(crate::age_of(&m.time)),
            a.pgdata.display(),
            target.describe()
        );
    }
    let opts = PgdataOptions {
        pgdata: a.pgdata.clone(),
        target,
        restore_command: restore_command(ctx),
        port: a.port,
        start: a.start,
        timeline: a.timeline.clone(),
        archive: a.archive,
    };
    let done = pg_physical::restore_pgdata(&repo, &m, &opts, &ctx.progress())?;
    for w in &done.warnings {
        eprintln!("warning: {w}");
    }
    if ctx.json {
        println!("{}", json!(done));
        return Ok(0);
    }
    println!(
        "restored {} files ({}) into {}",
        done.files,
        crate::bytes(done.bytes),
        done.pgdata.display()
    );
    println!(
        "recovery settings added to {} (recovery.signal, restore_command, target: {})",
        done.settings_file.display(),
        done.target
    );
    if !done.tablespaces_inside.is_empty() {
        println!(
            "tablespaces {:?} are restored inside the data directory (pg_tblspc/OID), not at their original locations",
            done.tablespaces_inside
        );
    }
    if !a.archive {
        println!(
            "WAL archiving is off in the restored server (archive_mode = off at the end of {}): \
             if it now replaces the original, remove that line and restart it, or restore with --archive",
            done.settings_file.display()
        );
    }
    if done.started {
        println!(
            "the server is running: recovery ended after {:.1} s and it accepts connections",
            done.start_ms as f64 / 1000.0
        );
    } else {
        println!(
            "start it as the server's user: pg_ctl -D {} start  (restore_command runs lifeboat as that user: \
             it must reach the repository, and an encrypted one needs LIFEBOAT_PASSWORD_FILE or --password-file)",
            done.pgdata.display()
        );
    }
    Ok(0)
}

/// `timeline postgres://…`: the restorable window of a cluster's archive.
pub fn cmd_pg_timeline(ctx: &Ctx, uri: &str) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let key = lifeboat::source::postgres::PgSource::physical(uri)?.source_key();
    let ask = || lifeboat::source::postgres::physical::system_id_of_server(uri);
    let system_id = pg_physical::system_id_for(&repo, &key, &ask)?;
    let t = pg_physical::timeline(&repo, system_id, &key)?;
    ctx.record(&repo);
    if ctx.json {
        println!("{}", json!(t));
        return Ok(0);
    }
    println!("{} (system identifier {})", t.source, t.system_id);
    if t.timelines.is_empty() {
        println!("  no WAL archived yet");
    }
    for tl in &t.timelines {
        println!(
            "  timeline {:<3} {} .. {}  {} segments, {}",
            tl.timeline,
            tl.first_segment,
            tl.last_segment,
            tl.segments,
            crate::bytes(tl.bytes)
        );
        for [a, b] in &tl.gaps {
            if a == b {
                println!("    GAP: {a} is missing");
            } else {
                println!("    GAP: {a} .. {b} are missing");
            }
        }
    }
    match (&t.newest_segment, &t.newest_archived, t.newest_age_s) {
        (Some(s), Some(at), Some(age)) => {
            println!("  newest WAL   {s}, archived {at} ({age} s ago)")
        }
        (Some(s), _, _) => println!("  newest WAL   {s}"),
        _ => {}
    }
    if t.base_backups.is_empty() {
        println!(
            "  no physical base backup: take one with `lifeboat backup {} --physical`",
            t.source
        );
    }
    for b in &t.base_backups {
        let window = match (&b.to, b.consistent) {
            (_, false) => "NOT RESTORABLE".to_string(),
            (Some(to), true) => format!("{} .. {}", b.from, to),
            (None, true) => format!("{} ..", b.from),
        };
        print!(
            "  base {}  timeline {}  restorable {}",
            b.id, b.timeline, window
        );
        match &b.broken_at {
            Some(seg) if !b.consistent => println!("  (missing {seg}, which it needs)"),
            Some(seg) => println!("  (window ends: {seg} is missing)"),
            None => println!(),
        }
    }
    Ok(if t.base_backups.iter().any(|b| !b.consistent) {
        ErrorKind::Integrity.exit_code()
    } else {
        0
    })
}
