//! `forget`, `prune`, `pin` and `unpin`: parse, call the engine, print.

use crate::{bytes, print_result, Ctx};
use clap::Args;
use lifeboat::error::{Error, Result};
use lifeboat::ops::forget::{self, ForgetOptions, ForgetReport};
use lifeboat::ops::policy::{self, parse_count, Age, Count, Policy};
use lifeboat::ops::prune::{self, PruneOptions, PruneReport, DEFAULT_MAX_UNUSED};
use lifeboat::repo::manifest::Manifest;
use serde_json::json;
use std::path::PathBuf;

/// Retention rules on the command line; given any, they replace lifeboat.toml's policies.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Keep rules (given any, they replace lifeboat.toml's policies)")]
pub struct PolicyArgs {
    /// Keep the newest N backups.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_last: Option<Count>,
    /// Keep the newest backup of each of the last N hours that have one (`all` for every).
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_hourly: Option<Count>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_daily: Option<Count>,
    /// Keep the newest backup of each of the last N ISO weeks (Monday-Sunday) that have one.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_weekly: Option<Count>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_monthly: Option<Count>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    keep_yearly: Option<Count>,
    /// Keep every backup within this age of the newest one (e.g. 48h, 30d, 1y6m).
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within: Option<Age>,
    /// Keep the newest backup of every hour within AGE of the newest backup.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within_hourly: Option<Age>,
    /// Keep the newest backup of every day within AGE of the newest backup.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within_daily: Option<Age>,
    /// Keep the newest backup of every week within AGE of the newest backup.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within_weekly: Option<Age>,
    /// Keep the newest backup of every month within AGE of the newest backup.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within_monthly: Option<Age>,
    /// Keep the newest backup of every year within AGE of the newest backup.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_within_yearly: Option<Age>,
    /// Keep every backup with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,
    /// Whatever else the rules say, keep at least the newest N.
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    min_count: Option<Count>,
    /// Keep at most N (the oldest of those the rules keep go first).
    #[arg(long, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    max_count: Option<Count>,
    /// Remove backups older than this (from now), whatever the keep rules say.
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    max_age: Option<Age>,
    /// How long pre-restore safety backups are kept (default 7d).
    #[arg(long, value_name = "AGE", value_parser = Age::parse)]
    keep_pre_restore: Option<Age>,
}

impl PolicyArgs {
    fn policy(&self) -> Option<Policy> {
        let p = Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.clone(),
            keep_within_hourly: self.keep_within_hourly.clone(),
            keep_within_daily: self.keep_within_daily.clone(),
            keep_within_weekly: self.keep_within_weekly.clone(),
            keep_within_monthly: self.keep_within_monthly.clone(),
            keep_within_yearly: self.keep_within_yearly.clone(),
            keep_tag: self.keep_tag.clone(),
            min_count: self.min_count,
            max_count: self.max_count,
            max_age: self.max_age.clone(),
            keep_pre_restore: self.keep_pre_restore.clone(),
        };
        (p != Policy::default()).then_some(p)
    }
}

#[derive(Args)]
pub struct ForgetArgs {
    /// Only backups of this database.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Then run `prune` to free the space.
    #[arg(long)]
    prune: bool,
    /// With --prune: see `prune --max-unused`.
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    max_unused: Option<f64>,
    /// Lift the safety rails: allow removing the newest verified backup, the only backup of
    /// a source, or every backup of a source. Pinned backups stay.
    #[arg(long)]
    force: bool,
    /// Time zone of days, weeks, months (IANA name, UTC or local). Default: `timezone` in
    /// lifeboat.toml, else local.
    #[arg(long, env = "LIFEBOAT_TIMEZONE")]
    timezone: Option<String>,
    /// The primary and every replica, each with its own policy from lifeboat.toml.
    #[arg(long)]
    all_targets: bool,
    // Last: its help heading applies to every argument after it.
    #[command(flatten)]
    rules: PolicyArgs,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Repack partly used packs until at most this share of the repository is unused
    /// (default 5%; 0% repacks everything that has any garbage, 100% never repacks).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    max_unused: Option<f64>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim().trim_end_matches('%');
    t.parse::<f64>()
        .ok()
        .filter(|v| (0.0..=100.0).contains(v))
        .map(|v| v / 100.0)
        .ok_or_else(|| format!("'{s}' is not a percentage from 0% to 100%"))
}

pub fn cmd_forget(ctx: &Ctx, a: ForgetArgs) -> Result<i32> {
    let cli_policy = a.rules.policy();
    if cli_policy.is_none() && ctx.file.retention.is_none() {
        return Err(Error::usage("no retention policy given")
            .hint("add rules such as --keep-daily 7 --keep-weekly 4, or a [retention] section to lifeboat.toml"));
    }
    let tz = policy::time_zone(a.timezone.as_deref().or(ctx.file.timezone.as_deref()))?;
    let repo = ctx.open_repo()?;
    if !a.all_targets {
        let (report, pruned) = forget_on(ctx, &repo, &a, &cli_policy, &tz)?;
        if ctx.json {
            println!("{}", json!({"forget": report, "prune": pruned}));
        } else {
            print_forget_and_prune(&report, pruned.as_ref(), &tz);
        }
        return Ok(0);
    }
    // Every target with its own policy: the primary, then each replica.
    let mut results = Vec::new();
    let mut failed = Vec::new();
    let urls = lifeboat::ops::sync::replica_urls(&repo, &ctx.file.replicas)?;
    let mut targets: Vec<(String, Result<lifeboat::repo::Repository>)> =
        vec![(repo.location(), Ok(repo))];
    for url in urls {
        let opened = lifeboat::storage::open(&url, false).and_then(|s| ctx.open_at(s));
        targets.push((url, opened));
    }
    for (target, opened) in targets {
        if !ctx.json {
            println!("\n== {target}");
        }
        let outcome = opened.and_then(|r| forget_on(ctx, &r, &a, &cli_policy, &tz));
        match outcome {
            Ok((report, pruned)) => {
                if !ctx.json {
                    print_forget_and_prune(&report, pruned.as_ref(), &tz);
                }
                results.push(json!({"target": target, "forget": report, "prune": pruned}));
            }
            Err(e) => {
                if !ctx.json {
                    println!("error: {}", e.message);
                }
                results.push(json!({"target": target, "error": e.message}));
                failed.push(format!("{target}: {}", e.message));
            }
        }
    }
    if ctx.json {
        println!("{}", json!({"targets": results}));
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(
            Error::storage(format!("retention failed on {}", failed.join("; ")))
                .hint("the other targets were done; fix that one and run the command again"),
        )
    }
}

/// Forget (and prune) on one repository, with the policy for that target.
fn forget_on(
    ctx: &Ctx,
    repo: &lifeboat::repo::Repository,
    a: &ForgetArgs,
    cli_policy: &Option<Policy>,
    tz: &jiff::tz::TimeZone,
) -> Result<(ForgetReport, Option<PruneReport>)> {
    let location = repo.location();
    let retention = &ctx.file.retention;
    let policy_for = |m: &Manifest| -> Option<Policy> {
        match (cli_policy, retention) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(r)) => r.policy_for(&location, &m.source.path),
            (None, None) => None,
        }
    };
    let sections = match (cli_policy, retention) {
        (None, Some(r)) => Some(r).filter(|r| r.source_sections(&location).next().is_some()),
        _ => None,
    };
    // Listing every manifest for this check pays only when there are source sections.
    if let Some(r) = sections {
        let known = repo.backup_sources()?;
        for key in r.unmatched_sources(&location, &known) {
            eprintln!(
                "warning: [retention.source.\"{key}\"] in the config names no database with \
                 backups in {location}; its backups follow the general policy. Sources here: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let report = forget::forget(
        repo,
        &ForgetOptions {
            policy_for: &policy_for,
            source: a.source.as_deref().map(lifeboat::source::source_key),
            dry_run: a.dry_run,
            force: a.force,
            now: jiff::Timestamp::now(),
            tz: tz.clone(),
        },
    )?;
    let pruned = if a.prune && !a.dry_run {
        Some(prune::prune(
            repo,
            &PruneOptions {
                dry_run: false,
                max_unused: a.max_unused.unwrap_or(DEFAULT_MAX_UNUSED),
                progress: ctx.progress(),
            },
        )?)
    } else {
        None
    };
    if !a.dry_run {
        ctx.record(repo);
    }
    Ok((report, pruned))
}

fn print_forget_and_prune(
    report: &ForgetReport,
    pruned: Option<&PruneReport>,
    tz: &jiff::tz::TimeZone,
) {
    print_forget(report, tz);
    if let Some(p) = pruned {
        print_prune(p);
    } else if !report.dry_run && !report.removed.is_empty() {
        println!("run `lifeboat prune` to free the space they used");
    }
}

fn print_forget(r: &ForgetReport, tz: &jiff::tz::TimeZone) {
    let mut last_group = None;
    for row in &r.backups {
        let group = (row.source.as_str(), row.host.as_str(), row.policy.as_str());
        if last_group != Some(group) {
            println!(
                "\n{} on {}: {} (time zone {})",
                row.source, row.host, row.policy, r.timezone
            );
            println!("  {:<14}  {:<16}  {:<6}  WHY", "ID", "TIME", "ACTION");
            last_group = Some(group);
        }
        let local = row
            .time
            .parse::<jiff::Timestamp>()
            .map(|t| {
                t.to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_else(|_| row.time.clone());
        println!(
            "  {:<14}  {:<16}  {:<6}  {}",
            row.id,
            local,
            if row.keep { "keep" } else { "remove" },
            row.reasons.join(", ")
        );
    }
    for g in &r.no_policy {
        println!("\n{g}: no retention policy applies; all kept");
    }
    for s in &r.streams {
        println!(
            "\n{} on {}: continuous replication, stream {}",
            s.source, s.host, s.stream
        );
        println!(
            "  {:<8}{} from #{}{} ({})",
            "keep",
            crate::count(s.segments_kept, "segment", "segments"),
            s.keep_from,
            s.base
                .as_ref()
                .map(|b| format!(", base {b}"))
                .unwrap_or_default(),
            s.why
        );
        if s.segments_removed > 0 {
            println!(
                "  {:<8}{} ({})",
                if r.dry_run { "remove" } else { "removed" },
                crate::count(s.segments_removed, "segment", "segments"),
                bytes(s.removed_bytes)
            );
        }
    }
    let total = r.backups.len();
    let segments = if r.segments_removed > 0 {
        format!(
            ", and {} ({})",
            crate::count(r.segments_removed, "segment", "segments"),
            bytes(r.segments_removed_bytes)
        )
    } else {
        String::new()
    };
    println!();
    if r.dry_run {
        println!(
            "would remove {} of {}{segments} (dry run: nothing changed)",
            r.removed.len(),
            crate::count(total, "backup", "backups")
        );
    } else {
        println!(
            "removed {} of {}{segments}",
            r.removed.len(),
            crate::count(total, "backup", "backups")
        );
    }
}

pub fn cmd_prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let report = prune::prune(
        &repo,
        &PruneOptions {
            dry_run: a.dry_run,
            max_unused: a.max_unused.unwrap_or(DEFAULT_MAX_UNUSED),
            progress: ctx.progress(),
        },
    )?;
    // Old continuous-replication segments merged into fewer objects (every commit kept).
    let compaction = lifeboat::wal::compact::compact(&repo, a.dry_run)?;
    if !a.dry_run {
        ctx.record(&repo);
    }
    if ctx.json {
        let mut v = json!(report);
        v["compaction"] = json!(compaction);
        println!("{v}");
    } else {
        print_prune(&report);
        if compaction.segments_merged > 0 || compaction.covered_removed > 0 {
            println!(
                "  segments         {} {} into {} ({} objects fewer){}",
                compaction.segments_merged,
                if a.dry_run {
                    "would be merged"
                } else {
                    "merged"
                },
                compaction.merged_into,
                compaction.objects_saved,
                if compaction.covered_removed > 0 {
                    format!(
                        "; {} left by an interrupted compaction removed",
                        compaction.covered_removed
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(0)
}

fn print_prune(r: &PruneReport) {
    println!(
        "\nprune{}: {} backups, {} packs ({}) surveyed",
        if r.dry_run { " (dry run)" } else { "" },
        r.backups,
        r.packs_before,
        bytes(r.bytes_before)
    );
    println!(
        "  unused packs     {} ({})",
        r.unused_packs,
        bytes(r.unused_bytes)
    );
    println!(
        "  repacked         {} packs ({}){}",
        r.repacked_packs,
        bytes(r.repacked_bytes),
        if r.dry_run {
            String::new()
        } else {
            format!(", {} written", bytes(r.repack_written_bytes))
        }
    );
    if r.missing_blobs > 0 {
        println!(
            "  WARNING          {} blobs that backups need are in no index: prune deleted nothing (run `lifeboat repo repair`: it restores them from a replica or rebuilds the index from the packs; or forget the backups `repo check` names)",
            r.missing_blobs
        );
    }
    if r.pg_wal_removed > 0 {
        println!(
            "  PostgreSQL WAL   {} ({}) older than every base backup{}",
            crate::count(r.pg_wal_removed, "file", "files"),
            bytes(r.pg_wal_removed_bytes),
            if r.dry_run { "" } else { ", deleted" }
        );
    }
    if r.segments_removed > 0 || r.segments_waiting > 0 {
        println!(
            "  segments         {} ({}) no base can use{}{}",
            r.segments_removed,
            bytes(r.segments_removed_bytes),
            if r.dry_run { "" } else { ", deleted" },
            if r.orphan_streams.is_empty() {
                String::new()
            } else {
                format!(
                    "; streams that never stored a base: {}",
                    r.orphan_streams.join(", ")
                )
            }
        );
    }
    if r.segments_waiting > 0 {
        println!(
            "  waiting          {} segments of streams without a base are kept while a backup runs (it may be their first base); the next prune looks again",
            r.segments_waiting
        );
    }
    if r.dry_run {
        println!(
            "would leave about {} in {} packs",
            bytes(r.bytes_after),
            r.packs_after
        );
        return;
    }
    println!(
        "  deleted          {} packs ({}), {} index files rewritten or removed",
        r.deleted_packs,
        bytes(r.deleted_bytes),
        r.deleted_index_files
    );
    if r.compacted_index_files > 0 {
        println!(
            "  index            {} small index files merged",
            r.compacted_index_files
        );
    }
    if r.pending_packs > 0 {
        println!(
            "  waiting          {} packs ({}) are kept until these finish, then the next prune deletes them: {}",
            r.pending_packs,
            bytes(r.pending_bytes),
            r.waiting_for.join("; ")
        );
    }
    let freed = r.freed_bytes();
    println!(
        "freed {}; the repository now holds {} in {} packs",
        if freed >= 0 {
            bytes(freed as u64)
        } else {
            format!("-{}", bytes(freed.unsigned_abs()))
        },
        bytes(r.bytes_after),
        r.packs_after
    );
}

pub fn cmd_pin(ctx: &Ctx, id: &str, source: Option<PathBuf>, pinned: bool) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let source = source.as_deref().map(lifeboat::source::source_key);
    let id = forget::set_pinned(&repo, id, source.as_deref(), pinned)?;
    ctx.record(&repo);
    print_result(
        ctx,
        json!({"id": id, "pinned": pinned}),
        &format!(
            "backup {id} is {}",
            if pinned {
                "pinned: no retention policy removes it"
            } else {
                "no longer pinned"
            }
        ),
    );
    Ok(0)
}
