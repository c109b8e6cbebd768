//! The bodies of the daemon's jobs: each opens the repository the way the CLI does, calls
//! the engine, then tells the catalog, the metrics and the webhooks what happened.

use super::config::Source;
use super::jobs::Job;
use super::metrics;
use super::webhooks::Event;
use super::{Daemon, HealthReport};
use crate::error::{Error, ErrorKind, Result};
use crate::ops::verify::Step;
use crate::repo::manifest::Manifest;
use crate::repo::Repository;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The repository, opened for one job the way the CLI opens it (a first start at the
/// default location creates it).
pub(super) fn open(d: &Daemon) -> Result<Repository> {
    let opener = d.opener();
    let (repo, _) = opener.open_or_init(false)?;
    Ok(repo)
}

/// Variables a `before`/`after` command does not inherit: the repository's passphrase (the
/// file it names, `LIFEBOAT_PASSWORD_FILE`, stays for a command that runs lifeboat) and the
/// variables that hold the API's tokens and the webhooks' secrets.
fn secret_variables(file: &crate::config::FileConfig) -> Vec<String> {
    let mut names: Vec<String> = [
        "LIFEBOAT_PASSWORD",
        "LIFEBOAT_NEW_PASSWORD",
        "LIFEBOAT_PASSWORD_COMMAND",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(daemon) = &file.daemon {
        names.extend(daemon.token.iter().filter_map(|t| t.env.clone()));
        names.extend(daemon.webhook.iter().filter_map(|w| w.secret_env.clone()));
    }
    names
}

/// Run a `before`/`after` command with `sh -c`, without the variables in `hidden`, killed
/// after `limit`, or (`stop`) as soon as the daemon is asked to stop: a `before` command is
/// not waited for then, an `after` one is (it may resume what `before` paused).
fn run_command(
    what: &str,
    cmd: &str,
    limit: Duration,
    env: &[(&str, String)],
    hidden: &[String],
    stop: Option<&dyn Fn() -> bool>,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null());
    for name in hidden {
        c.env_remove(name);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    // Its own process group, so a time-out kills what it started too.
    c.process_group(0);
    let mut child = c.spawn().map_err(|e| {
        Error::new(
            ErrorKind::Source,
            format!("cannot run the {what} command: {e}"),
        )
    })?;
    let until = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!("the {what} command failed ({status})"),
                )
                .hint("its output is in the daemon's log; the backup did not run"))
            }
            Ok(None) if stop.is_some_and(|stop| stop()) => {
                // SAFETY: signalling the process group we created.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    format!("the daemon stopped during the {what} command"),
                ));
            }
            Ok(None) if std::time::Instant::now() >= until => {
                // SAFETY: signalling the process group we created.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(Error::new(
                    ErrorKind::Source,
                    format!(
                        "the {what} command did not finish within {}",
                        super::schedule::human_duration(limit)
                    ),
                )
                .hint("raise command_timeout of the source, or make the command quicker"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(Error::internal(format!(
                    "waiting for the {what} command: {e}"
                )))
            }
        }
    }
}

pub fn backup(
    d: &Arc<Daemon>,
    s: &Source,
    job: &Job,
    tags: &[String],
    trigger: &str,
) -> Result<serde_json::Value> {
    let env = |status: &str, id: &str| {
        vec![
            ("LIFEBOAT_SOURCE", s.path.clone()),
            ("LIFEBOAT_SOURCE_NAME", s.name.clone()),
            ("LIFEBOAT_TRIGGER", trigger.to_string()),
            ("LIFEBOAT_BACKUP_STATUS", status.to_string()),
            ("LIFEBOAT_BACKUP_ID", id.to_string()),
        ]
    };
    let hidden = secret_variables(&d.file());
    let started = std::time::Instant::now();
    let result = (|| {
        if let Some(cmd) = &s.before {
            job.with(|v| v.phase = Some("before command".into()));
            run_command(
                "before",
                cmd,
                s.command_timeout,
                &env("", ""),
                &hidden,
                Some(&|| d.stopping()),
            )?;
        }
        take_backup(d, s, job, tags, trigger)
    })();
    if let Some(cmd) = &s.after {
        let (status, id) = match &result {
            Ok((m, _)) => ("ok", m.id.clone()),
            Err(_) => ("failed", String::new()),
        };
        if let Err(e) = run_command(
            "after",
            cmd,
            s.command_timeout,
            &env(status, &id),
            &hidden,
            None,
        ) {
            tracing::warn!("source {}: {e}", s.name);
        }
    }
    let kind = s.kind.map(|k| k.name().to_string()).unwrap_or_default();
    let label = metrics::source(&s.name);
    match result {
        Ok((m, done)) => {
            let kind = m.source.kind.clone();
            d.metrics
                .backups
                .get_or_create(&metrics::BackupLabels {
                    source: s.name.clone(),
                    kind: kind.clone(),
                    status: "success".into(),
                })
                .inc();
            d.metrics
                .backup_duration
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            d.metrics.uploaded.inc_by(m.stored.new_stored_bytes);
            if let Ok(mut c) = d.catalog.write() {
                c.add(&m, done.encrypted);
                c.repo_stored_bytes = Some(done.repo_stored_bytes);
                d.metrics.repo_backups.set(c.len() as i64);
            }
            d.metrics.repo_size.set(done.repo_stored_bytes as i64);
            d.update_source_metrics();
            let mut details = json!({
                "id": m.id, "kind": kind, "trigger": m.trigger, "tags": m.tags,
                "size_bytes": m.logical_bytes(), "stored_bytes": m.stored.new_stored_bytes,
                "duration_ms": m.duration_ms,
            });
            if let Some(f) = &done.replica_failure {
                details["replication_error"] = json!(f);
            }
            d.emit(
                Event::new(
                    "backup.completed",
                    Some(&s.name),
                    format!("backup {} of {} completed", m.id, s.name),
                )
                .backup(&m.id)
                .details(details.clone()),
            );
            job.with(|v| v.backup = Some(m.id.clone()));
            Ok(details)
        }
        Err(e) => {
            if e.kind == ErrorKind::Storage {
                let target = metrics::target(&d.opener().location);
                d.metrics.target_up.get_or_create(&target).set(0);
                d.metrics.target_errors.get_or_create(&target).inc();
            }
            if e.kind != ErrorKind::Interrupted {
                d.metrics
                    .backups
                    .get_or_create(&metrics::BackupLabels {
                        source: s.name.clone(),
                        kind,
                        status: "failure".into(),
                    })
                    .inc();
                d.emit(
                    Event::new(
                        "backup.failed",
                        Some(&s.name),
                        format!("backup of {} failed: {}", s.name, e.message),
                    )
                    .details(json!({"error": e.message, "hint": e.hint, "trigger": trigger})),
                );
            }
            Err(e)
        }
    }
}

struct Done {
    encrypted: bool,
    repo_stored_bytes: u64,
    replica_failure: Option<String>,
}

fn take_backup(
    d: &Arc<Daemon>,
    s: &Source,
    job: &Job,
    tags: &[String],
    trigger: &str,
) -> Result<(Manifest, Done)> {
    let file = d.file();
    let database = PathBuf::from(&s.path);
    let kind = match s.kind {
        Some(k) => k,
        None => crate::source::detect(&database)?,
    };
    if kind == crate::source::Kind::Sqlite {
        crate::source::sqlite::check_is_sqlite(&database)?;
    }
    let mut all_tags = s.tags.clone();
    all_tags.extend(tags.iter().cloned());
    let opts = crate::ops::backup::BackupOptions {
        database,
        kind: Some(kind),
        source: crate::source::SourceOptions {
            files: crate::source::files::FilesOptions {
                exclude: s.exclude.clone(),
                redact: Vec::new(),
                no_redact: false,
            },
            postgres: crate::source::postgres::PgOptions {
                jobs: 1,
                ..Default::default()
            },
            postgres_globals: false,
            postgres_physical: s.physical,
        },
        run: None,
        description: None,
        tags: all_tags,
        trigger: trigger.to_string(),
        compression: crate::engine::compression(&file, None, None)?,
        verify: crate::engine::verify_level(&file, false, false)?,
        progress: job.progress.clone(),
        transfers: crate::engine::transfers(&file)?,
        time: None,
    };
    let repo = open(d)?;
    let opener = d.opener();
    let done = crate::engine::backup_then_replicate(&opener, &repo, std::slice::from_ref(&opts))?;
    for r in &done.replication {
        let up = r.error.is_none();
        d.metrics
            .target_up
            .get_or_create(&metrics::target(&r.target))
            .set(i64::from(up));
        if !up {
            d.metrics
                .target_errors
                .get_or_create(&metrics::target(&r.target))
                .inc();
        }
    }
    let outcome = done
        .outcomes
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("a backup without an outcome"))?;
    let repo_stored_bytes = outcome.repo_stored_bytes;
    let m = outcome.manifest;
    Ok((
        m,
        Done {
            encrypted: repo.is_encrypted(),
            repo_stored_bytes,
            replica_failure: done.failure.map(|e| e.message),
        },
    ))
}

/// The backup a verify or drill works on: the one asked for, else the newest of the source.
fn resolve(repo: &Repository, s: Option<&Source>, id: Option<&str>) -> Result<Manifest> {
    match (id, s) {
        (Some(id), _) => repo.resolve(id, None),
        (None, Some(s)) => repo.resolve("latest", Some(&s.key)),
        (None, None) => Err(Error::usage("no backup named")),
    }
}

fn source_name(d: &Daemon, s: Option<&Source>, m: &Manifest) -> String {
    s.map(|s| s.name.clone())
        .or_else(|| d.config().source(&m.source.path).map(|s| s.name.clone()))
        .unwrap_or_else(|| m.source.path.clone())
}

pub fn verify(
    d: &Arc<Daemon>,
    s: Option<&Source>,
    id: Option<&str>,
    job: &Job,
) -> Result<serde_json::Value> {
    let repo = open(d)?;
    let m = resolve(&repo, s, id)?;
    let name = source_name(d, s, &m);
    job.with(|v| v.backup = Some(m.id.clone()));
    let reports = crate::ops::verify::verify_backups(
        &repo,
        std::slice::from_ref(&m),
        &job.progress,
        &mut |_| {},
    )?;
    let r = reports
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("verify without a report"))?;
    let record = r.ok.then(|| {
        // `record_verified` kept a drill's measured restore time: so does the catalog.
        let mut record = json!({"verified": jiff::Timestamp::now().to_string()});
        let before = d
            .catalog
            .read()
            .ok()
            .and_then(|c| c.get(&m.id).and_then(|e| e.verified.clone()));
        if let (Some(r), Some(old)) = (record.as_object_mut(), before) {
            if old.get("drill") == Some(&json!(true)) {
                r.insert("drill".into(), json!(true));
                r.insert("rto_ms".into(), old["rto_ms"].clone());
            }
        }
        record
    });
    checked(
        d,
        Checked {
            what: "verify",
            name: &name,
            id: &m.id,
            record,
            passed: format!("backup {} of {name} verified", m.id),
            failure: r.first_failure().map(str::to_string),
            details: json!(r),
            hint: "`lifeboat repo check --read-data` names the damaged objects; `lifeboat repo repair` restores them from a replica",
        },
    )
}

/// How a verify or drill ended, for [`checked`].
struct Checked<'a> {
    what: &'static str,
    name: &'a str,
    id: &'a str,
    /// The backup's new verification record (None: it failed).
    record: Option<serde_json::Value>,
    passed: String,
    failure: Option<String>,
    details: serde_json::Value,
    hint: &'static str,
}

/// Tell the catalog, the metrics and the webhooks how a verify or drill ended; a failure
/// becomes the job's error.
fn checked(d: &Daemon, c: Checked) -> Result<serde_json::Value> {
    match c.record {
        Some(record) => {
            if let Ok(mut cat) = d.catalog.write() {
                cat.set_verified(c.id, record);
            }
            d.update_source_metrics();
            d.emit(
                Event::new(&format!("{}.passed", c.what), Some(c.name), c.passed)
                    .backup(c.id)
                    .details(c.details.clone()),
            );
            Ok(c.details)
        }
        None => {
            let failure = c.failure.unwrap_or_else(|| "a step".into());
            let message = format!(
                "{} of backup {} of {} failed at: {failure}",
                c.what, c.id, c.name
            );
            d.emit(
                Event::new(&format!("{}.failed", c.what), Some(c.name), message.clone())
                    .backup(c.id)
                    .details(c.details),
            );
            Err(Error::integrity(message).hint(c.hint))
        }
    }
}

pub fn drill(
    d: &Arc<Daemon>,
    s: Option<&Source>,
    id: Option<&str>,
    job: &Job,
) -> Result<serde_json::Value> {
    let repo = open(d)?;
    let m = resolve(&repo, s, id)?;
    let name = source_name(d, s, &m);
    job.with(|v| v.backup = Some(m.id.clone()));
    let file = d.file();
    let section = file.drill.clone().unwrap_or_default();
    let query = s
        .and_then(|s| s.drill_query.clone())
        .or_else(|| {
            d.config()
                .source(&m.source.path)
                .and_then(|s| s.drill_query.clone())
        })
        .or(section.query);
    let opts = crate::ops::pg::DrillOptions {
        server: section.server,
        query,
        jobs: 2,
    };
    let report = crate::ops::drill::drill(&repo, &m, &opts, &job.progress)?;
    let label = metrics::source(&name);
    d.metrics
        .drill_last_time
        .get_or_create(&label)
        .set(jiff::Timestamp::now().as_second());
    d.metrics
        .drill_last_success
        .get_or_create(&label)
        .set(i64::from(report.ok()));
    if report.ok() {
        d.metrics
            .drill_rto
            .get_or_create(&label)
            .set(report.rto_ms as f64 / 1000.0);
    }
    checked(
        d,
        Checked {
            what: "drill",
            name: &name,
            id: &m.id,
            record: report.ok().then(|| {
                json!({"verified": jiff::Timestamp::now().to_string(), "drill": true, "rto_ms": report.rto_ms})
            }),
            passed: format!(
                "drill of backup {} of {name} passed: restored in {:.1} s",
                m.id,
                report.rto_ms as f64 / 1000.0
            ),
            failure: report.first_failure().map(str::to_string),
            details: json!(report),
            hint: "`lifeboat drill ID` shows every step; `lifeboat repo check --read-data` names damaged objects",
        },
    )
}

/// An age for people: `45s`, `12m`, `3h05m`, `2d4h` (not `10801s`).
fn rounded(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Used fraction of the file system holding `path`.
fn used_ratio(path: &std::path::Path) -> Option<f64> {
    let st = rustix::fs::statvfs(path).ok()?;
    let total = st.f_blocks as f64;
    (total > 0.0).then(|| 1.0 - st.f_bavail as f64 / total)
}

pub fn health(d: &Arc<Daemon>, s: &Source, job: &Job) -> Result<serde_json::Value> {
    let cfg = d.config();
    let mut checks: Vec<Step> = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Step {
            name: name.into(),
            ok,
            detail,
        });
    };
    job.with(|v| v.phase = Some("checking".into()));
    let (newest, previous): (Option<super::catalog::Entry>, Vec<u64>) = match d.catalog.read() {
        Ok(c) => {
            let all: Vec<_> = c.of_source(&s.key).collect();
            let newest = all.last().map(|e| (*e).clone());
            let prev = all
                .iter()
                .rev()
                .skip(1)
                .take(5)
                .map(|e| e.size_bytes)
                .collect();
            (newest, prev)
        }
        Err(_) => (None, Vec::new()),
    };
    match &newest {
        None => check(
            "newest backup",
            false,
            "there is no backup of this source".into(),
        ),
        Some(e) => {
            check("newest backup", true, format!("{} ({})", e.id, e.time));
            let age = jiff::Timestamp::now().as_second() - e.unix;
            match s.schedule.period(&cfg.tz) {
                Some(p) => {
                    let limit = 2 * p.as_secs() as i64 + 60;
                    check(
                        "age",
                        age <= limit,
                        format!(
                            "{} old; the schedule allows {}",
                            rounded(age.max(0) as u64),
                            rounded(limit as u64)
                        ),
                    );
                }
                None => check("age", true, format!("{} old", rounded(age.max(0) as u64))),
            }
            if !previous.is_empty() {
                let mut sorted = previous.clone();
                sorted.sort_unstable();
                let median = sorted[sorted.len() / 2];
                let dropped = (e.size_bytes as f64) < median as f64 * cfg.size_drop;
                check(
                    "size",
                    !dropped,
                    format!(
                        "{} bytes; the previous ones {} bytes (median){}",
                        e.size_bytes,
                        median,
                        if dropped { ": a sudden drop" } else { "" }
                    ),
                );
            }
        }
    }
    let repo = open(d);
    let opener = d.opener();
    match &repo {
        Err(e) => {
            d.metrics
                .target_up
                .get_or_create(&metrics::target(&opener.location))
                .set(0);
            check("repository", false, e.to_string())
        }
        Ok(repo) => {
            let wants = opener.passphrase_configured() || opener.identity.is_some();
            let enc = repo.is_encrypted();
            check(
                "encryption",
                enc || !wants,
                match (enc, wants) {
                    (true, _) => "the repository is encrypted".to_string(),
                    (false, true) => {
                        "a passphrase is configured but the repository is NOT encrypted".into()
                    }
                    (false, false) => "not encrypted (no passphrase configured)".into(),
                },
            );
            let file = d.file();
            match crate::ops::status::status(repo, &file.replicas) {
                Err(e) => check("targets", false, e.to_string()),
                Ok(report) => {
                    if let Ok(mut t) = d.targets.lock() {
                        t.clone_from(&report.targets);
                    }
                    for t in &report.targets {
                        let behind = t
                            .replica
                            .as_ref()
                            .and_then(|r| r.objects_behind)
                            .unwrap_or(0);
                        let failing = t.replica.as_ref().is_some_and(|r| r.failing);
                        let ok = t.error.is_none() && behind == 0 && !failing;
                        d.metrics
                            .target_up
                            .get_or_create(&metrics::target(&t.target))
                            .set(i64::from(t.error.is_none()));
                        check(
                            &format!("{} {}", t.role, t.target),
                            ok,
                            match (&t.error, behind, failing) {
                                (Some(e), _, _) => format!("unreachable: {e}"),
                                (None, n, _) if n > 0 => format!("{n} objects behind"),
                                (None, _, true) => "its last sync failed".into(),
                                _ => "reachable and in sync".into(),
                            },
                        );
                        if let Some(path) = local_path(&t.target) {
                            if let Some(ratio) = used_ratio(&path) {
                                d.metrics
                                    .storage_used
                                    .get_or_create(&metrics::target(&t.target))
                                    .set(ratio);
                                let low = ratio > cfg.storage_warn;
                                check(
                                    &format!("storage {}", t.target),
                                    !low,
                                    format!("{:.0}% used", ratio * 100.0),
                                );
                                if low {
                                    d.emit(
                                        Event::new(
                                            "storage.low",
                                            Some(&s.name),
                                            format!("{} is {:.0}% full", t.target, ratio * 100.0),
                                        )
                                        .details(json!({"target": t.target, "used_ratio": ratio})),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    let report = HealthReport {
        source: s.name.clone(),
        time: jiff::Timestamp::now().to_string(),
        ok,
        checks,
    };
    d.metrics
        .health_ok
        .get_or_create(&metrics::source(&s.name))
        .set(i64::from(ok));
    if let Ok(mut h) = d.health.lock() {
        h.insert(s.name.clone(), report.clone());
    }
    let details = json!(report);
    if ok {
        return Ok(details);
    }
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    d.emit(
        Event::new(
            "health.failed",
            Some(&s.name),
            format!("health check of {} failed: {}", s.name, failed.join("; ")),
        )
        .details(details),
    );
    Err(Error::new(
        ErrorKind::Integrity,
        format!("health check of {} failed: {}", s.name, failed.join("; ")),
    ))
}

/// The folder of a local target (a path or `file://`), None for an object store.
fn local_path(target: &str) -> Option<PathBuf> {
    if let Some(p) = target.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (!target.contains("://")).then(|| PathBuf::from(target))
}

pub fn retention(d: &Arc<Daemon>, job: &Job) -> Result<serde_json::Value> {
    let file = d.file();
    let Some(section) = file.retention.clone() else {
        return Err(Error::usage("no [retention] policy in the config"));
    };
    if d.catalog.read().is_ok_and(|c| c.is_empty()) {
        return Ok(json!({"forgotten": [], "note": "no backups yet"}));
    }
    let repo = open(d)?;
    let location = repo.location();
    let policy_for = |m: &Manifest| -> Option<crate::ops::policy::Policy> {
        section.policy_for(&location, &m.source.path)
    };
    let tz = crate::ops::policy::time_zone(file.timezone.as_deref())?;
    job.with(|v| v.phase = Some("forget".into()));
    let outcome = (|| -> Result<_> {
        let report = crate::ops::forget::forget(
            &repo,
            &crate::ops::forget::ForgetOptions {
                policy_for: &policy_for,
                source: None,
                dry_run: false,
                force: false,
                now: jiff::Timestamp::now(),
                tz,
            },
        )?;
        let pruned = if report.removed.is_empty() && report.segments_removed == 0 {
            None
        } else {
            job.with(|v| v.phase = Some("prune".into()));
            Some(crate::ops::prune::prune(
                &repo,
                &crate::ops::prune::PruneOptions {
                    dry_run: false,
                    max_unused: crate::ops::prune::DEFAULT_MAX_UNUSED,
                    progress: job.progress.clone(),
                },
            )?)
        };
        Ok((report, pruned))
    })();
    match outcome {
        Ok((report, pruned)) => {
            d.opener().record(&repo);
            let freed = pruned.as_ref().map_or(0, |p| p.freed_bytes());
            let details = json!({
                "forgotten": report.removed, "segments_removed": report.segments_removed,
                "freed_bytes": freed, "no_policy": report.no_policy,
            });
            let _ = d.refresh_catalog();
            if !report.removed.is_empty() || report.segments_removed > 0 {
                d.emit(
                    Event::new(
                        "retention.cleanup",
                        None,
                        format!(
                            "retention removed {} backup(s) and {} segment(s), freed {freed} bytes",
                            report.removed.len(),
                            report.segments_removed
                        ),
                    )
                    .details(details.clone()),
                );
            }
            Ok(details)
        }
        Err(e) => {
            if e.kind != ErrorKind::Interrupted {
                d.emit(
                    Event::new(
                        "retention.failed",
                        None,
                        format!("retention failed: {}", e.message),
                    )
                    .details(json!({"error": e.message, "hint": e.hint})),
                );
            }
            Err(e)
        }
    }
}

/// Continuous replication of a SQLite database: runs until the daemon stops.
pub fn replicate(d: &Arc<Daemon>, s: &Source, job: &Job) -> Result<serde_json::Value> {
    let file = d.file();
    let section = file.replicate.clone().unwrap_or_default();
    let (interval, base_every) = section.for_source(&s.key);
    let dur = |t: Option<&str>, default: u64| -> Result<Duration> {
        match t {
            Some(t) => crate::config::parse_duration(t)
                .map_err(|e| Error::usage(format!("[replicate] of the config file: {e}"))),
            None => Ok(Duration::from_secs(default)),
        }
    };
    let database = PathBuf::from(&s.path);
    crate::source::sqlite::check_is_sqlite(&database)?;
    let opts = crate::wal::replicate::ReplicateOptions {
        databases: vec![crate::wal::replicate::SourceSettings {
            path: database,
            interval: dur(interval, 1)?,
            base_every: dur(base_every, 3600)?,
        }],
        compression: crate::engine::compression(&file, None, None)?,
        verify: crate::engine::verify_level(&file, false, false)?,
        transfers: crate::engine::transfers(&file)?,
        configured_replicas: file.replicas.clone(),
        say: Arc::new(|m: &str| tracing::info!("{m}")),
    };
    let repo = open(d)?;
    job.with(|v| v.phase = Some("replicating".into()));
    let reports = crate::wal::replicate::replicate(&repo, &opts)?;
    Ok(json!(reports))
}

/// An API restore: backup `id` to `to` (checked by the API against `restore_dirs`).
pub fn restore(d: &Arc<Daemon>, id: &str, to: PathBuf, job: &Job) -> Result<serde_json::Value> {
    let repo = open(d)?;
    let m = repo.resolve(id, None)?;
    // Checked again now that the job has its turn: the folders on the way may have been
    // replaced (by a link out of restore_dirs) while it waited, or the config reloaded.
    let to = restore_target(d, &to)?;
    let out = crate::engine::restore(
        &repo,
        &m,
        crate::ops::restore::Destination::New {
            path: to,
            overwrite: false,
        },
        &job.progress,
    )?;
    Ok(json!({"id": m.id, "path": out.path, "bytes": out.bytes}))
}

/// Where an API restore may write: a new path whose parent is (under) an allowed folder,
/// with no link on the way.
pub(super) fn restore_target(d: &Daemon, to: &std::path::Path) -> Result<std::path::PathBuf> {
    let cfg = d.config();
    if cfg.restore_dirs.is_empty() {
        return Err(Error::usage("restores through the API are off")
            .hint("list the folders they may write into in [daemon] restore_dirs"));
    }
    if !to.is_absolute()
        || to
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::usage(format!(
            "{} must be an absolute path without ..",
            to.display()
        )));
    }
    let (Some(parent), Some(name)) = (to.parent(), to.file_name()) else {
        return Err(Error::usage(format!("{} names no file", to.display())));
    };
    let parent =
        std::fs::canonicalize(parent).map_err(|e| Error::io("cannot restore into", parent, e))?;
    let allowed = cfg
        .restore_dirs
        .iter()
        .filter_map(|a| std::fs::canonicalize(a).ok())
        .any(|a| parent.starts_with(&a));
    if !allowed {
        return Err(Error::usage(format!(
            "{} is not inside a folder of [daemon] restore_dirs",
            to.display()
        )));
    }
    let target = parent.join(name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(Error::new(
            ErrorKind::InUse,
            format!(
                "{} exists; an API restore never overwrites",
                target.display()
            ),
        )
        .hint("give a new name"));
    }
    Ok(target)
}
