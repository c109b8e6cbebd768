//! Forget: apply a retention policy to a repository's backups and delete the manifests of
//! those it does not keep (their data goes with the next `prune`). Also pins, and the
//! records of passed verifications that the "newest verified" rail relies on.
//!
//! - `pins/<backup id>`: the backup is pinned (never forgotten).
//! - `verified/<backup id>`: `lifeboat verify` passed for it (time and host inside).
//!
//! Continuous replication: the bases and segments of each stream follow `wal::retain` (the
//! point-in-time window of `keep_within`, else the segments from the newest kept base on);
//! the segments it no longer needs are deleted here, after the manifests.

use crate::error::{Error, Result};
use crate::ops::policy::{self, Candidate, Decision, Policy};
use crate::repo::manifest::Manifest;
use crate::repo::segment::SegmentName;
use crate::repo::Repository;
use crate::wal::{retain, streams};
use jiff::tz::TimeZone;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

const PINS: &str = "pins/";
const VERIFIED: &str = "verified/";

/// Which policy applies to one source: chosen per source by the caller (CLI flags, or the
/// `[retention]` sections of lifeboat.toml for this target).
pub type PolicyFor<'a> = dyn Fn(&Manifest) -> Option<Policy> + 'a;

pub struct ForgetOptions<'a> {
    pub policy_for: &'a PolicyFor<'a>,
    /// Only backups of this source path.
    pub source: Option<String>,
    pub dry_run: bool,
    pub force: bool,
    pub now: jiff::Timestamp,
    pub tz: TimeZone,
}

#[derive(Debug, Serialize)]
pub struct ForgetRow {
    pub id: String,
    pub time: String,
    pub source: String,
    pub host: String,
    pub trigger: String,
    pub tags: Vec<String>,
    pub keep: bool,
    pub reasons: Vec<String>,
    /// The policy that decided, in words.
    pub policy: String,
}

/// What retention did with one stream of continuous replication.
#[derive(Debug, Serialize)]
pub struct StreamRow {
    pub stream: String,
    pub source: String,
    pub host: String,
    /// The base kept for the point-in-time window or for the newest commits (also listed,
    /// with the reason "point-in-time base", among the backups).
    pub base: Option<String>,
    /// The first segment kept: those numbered below it go.
    pub keep_from: u64,
    pub segments_kept: usize,
    pub segments_removed: usize,
    pub removed_bytes: u64,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub timezone: String,
    pub backups: Vec<ForgetRow>,
    pub removed: Vec<String>,
    /// Sources left alone because no policy applies to them.
    pub no_policy: Vec<String>,
    /// Streams of continuous replication with a base under a policy.
    pub streams: Vec<StreamRow>,
    pub segments_removed: usize,
    pub segments_removed_bytes: u64,
    /// The segments removed (in a dry run: that would be).
    pub removed_segments: Vec<String>,
}

fn group_of(m: &Manifest) -> String {
    format!("{} on {}", m.source.path, m.source.host)
}

pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    if !opts.dry_run {
        repo.require_writable("forget")?;
    }
    let storage = repo.storage();
    let pinned = ids_under(repo, PINS)?;
    let verified = ids_under(repo, VERIFIED)?;
    let backups: Vec<Manifest> = repo
        .list_backups()?
        .into_iter()
        .filter(|m| opts.source.as_ref().is_none_or(|s| &m.source.path == s))
        .collect();
    if backups.is_empty() {
        return Err(Error::not_found(match &opts.source {
            Some(s) => format!("no backups of {s} in {}", repo.location()),
            None => format!("no backups in {}", repo.location()),
        }));
    }
    // Sources sharing a policy are decided together; each source is its own group.
    let mut by_policy: Vec<(Policy, Vec<usize>)> = Vec::new();
    let mut no_policy = Vec::new();
    for (i, m) in backups.iter().enumerate() {
        let Some(p) = (opts.policy_for)(m) else {
            let g = group_of(m);
            if !no_policy.contains(&g) {
                no_policy.push(g);
            }
            continue;
        };
        match by_policy.iter_mut().find(|(q, _)| *q == p) {
            Some((_, v)) => v.push(i),
            None => by_policy.push((p, vec![i])),
        }
    }
    let mut rows: Vec<ForgetRow> = Vec::new();
    for (p, members) in &by_policy {
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|&i| {
                let m = &backups[i];
                Candidate {
                    id: m.id.clone(),
                    time: backup_time(m),
                    group: group_of(m),
                    tags: m.tags.clone(),
                    pinned: pinned.contains(&m.id),
                    verified: verified.contains(&m.id) || m.verification.as_deref() == Some("full"),
                    pre_restore: m.trigger == crate::repo::manifest::SAFETY_TRIGGER,
                }
            })
            .collect();
        let decisions = policy::apply(&candidates, p, opts.now, &opts.tz, opts.force)?;
        let described = p.describe();
        for (&i, Decision { keep, reasons, .. }) in members.iter().zip(decisions) {
            let m = &backups[i];
            rows.push(ForgetRow {
                id: m.id.clone(),
                time: m.time.clone(),
                source: m.source.path.clone(),
                host: m.source.host.clone(),
                trigger: m.trigger.clone(),
                tags: m.tags.clone(),
                keep,
                reasons,
                policy: described.clone(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.source, &a.host, &a.id).cmp(&(&b.source, &b.host, &b.id)));
    let (stream_rows, doomed) = plan_segments(repo, opts, &backups, &mut rows)?;
    let mut removed = Vec::new();
    if !opts.dry_run {
        // Recorded first, so that a sync from a primary that still has them does not copy
        // them back to this repository.
        let gone: Vec<String> = rows
            .iter()
            .filter(|r| !r.keep)
            .map(|r| r.id.clone())
            .collect();
        crate::repo::tombstones::record_forgotten(storage, &repo.records(), &gone)?;
        let below: BTreeMap<String, u64> = stream_rows
            .iter()
            .filter(|r| r.segments_removed > 0)
            .map(|r| (r.stream.clone(), r.keep_from))
            .collect();
        crate::repo::tombstones::record_segments_dropped(storage, &repo.records(), &below)?;
        for row in rows.iter().filter(|r| !r.keep) {
            // The manifest is the backup: once it is gone, the rest is garbage for prune.
            storage.delete(&format!("backups/{}", row.id))?;
            repo.note_forgotten(&row.id);
            storage.delete(&format!("{VERIFIED}{}", row.id))?;
            removed.push(row.id.clone());
        }
        // Segments after the manifests, each stream from its newest removed segment down:
        // a run stopped half way leaves a stream whose segments resume where a base
        // begins, never a hole a base in the middle needs.
        for s in doomed.iter().rev() {
            storage.delete(&s.object())?;
        }
    } else {
        removed = rows
            .iter()
            .filter(|r| !r.keep)
            .map(|r| r.id.clone())
            .collect();
    }
    Ok(ForgetReport {
        dry_run: opts.dry_run,
        timezone: policy::zone_name(&opts.tz),
        backups: rows,
        removed,
        no_policy,
        streams: stream_rows,
        segments_removed: doomed.len(),
        segments_removed_bytes: doomed.iter().map(|s| s.size).sum(),
        removed_segments: doomed.iter().map(|s| s.object()).collect(),
    })
}

/// Apply `wal::retain` to every stream with a base among `backups` under a policy: keep the
/// bases it needs (changing their rows to kept, "point-in-time base") and return a row per
/// stream with the segments to delete, by stream and sequence number. Streams without a
/// base are left to prune.
///
/// What decides: the bases (authenticated manifests), the policy, and the time of each
/// stream's newest commit, taken from the newest segment that opens (a name alone could be
/// planted). Segments go by their numbers, below a base's `next_seq`: a planted name there
/// is junk, and deleting it harms nothing.
fn plan_segments(
    repo: &Repository,
    opts: &ForgetOptions,
    backups: &[Manifest],
    rows: &mut [ForgetRow],
) -> Result<(Vec<StreamRow>, Vec<SegmentName>)> {
    let all = streams::load(repo, backups)?;
    let by_id: HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    // Each stream under a policy, with the time of its newest commit.
    let mut considered = Vec::new();
    for s in all.iter().filter(|s| !s.bases.is_empty()) {
        let newest_base = s.bases.last().expect("a base");
        let Some(p) = (opts.policy_for)(newest_base) else {
            continue;
        };
        let base_ms = s.bases.iter().filter_map(streams::time_ms).max();
        let last_ms = match s.newest_authentic(repo)? {
            Some(seg) => Some(seg.last_ms.max(base_ms.unwrap_or(i64::MIN))),
            None => base_ms,
        }
        .unwrap_or(i64::MIN);
        considered.push((s, p, last_ms));
    }
    let mut out = Vec::new();
    let mut doomed = Vec::new();
    for &(s, ref p, last_ms) in &considered {
        let newest_of_source = !considered.iter().any(|(o, _, o_last)| {
            o.id != s.id
                && o.path == s.path
                && o.host == s.host
                && (*o_last, &o.id) > (last_ms, &s.id)
        });
        let bases: Vec<retain::Base> = s
            .bases
            .iter()
            .map(|m| retain::Base {
                id: m.id.clone(),
                time_ms: streams::time_ms(m).unwrap_or(i64::MIN),
                next_seq: m.wal.as_ref().map_or(0, |w| w.next_seq),
                kept: by_id.get(&m.id).is_some_and(|&i| rows[i].keep),
            })
            .collect();
        let window = p.keep_within.as_ref().map(|age| {
            (
                age.before(opts.now, &opts.tz).as_millisecond(),
                age.to_string(),
            )
        });
        let d = retain::decide(
            &retain::Facts {
                bases: &bases,
                segments: &s.segments,
                last_ms,
                newest_of_source,
            },
            window.as_ref().map(|(ms, text)| (*ms, text.as_str())),
        );
        let base = d.rescue.map(|i| bases[i].id.clone());
        if let Some(row) = base
            .as_ref()
            .and_then(|id| by_id.get(id))
            .map(|&i| &mut rows[i])
        {
            if !row.keep {
                row.keep = true;
                row.reasons.clear();
            }
            row.reasons.push(retain::POINT_IN_TIME_BASE.to_string());
        }
        let (gone, kept): (Vec<&SegmentName>, Vec<&SegmentName>) =
            s.segments.iter().partition(|g| g.last_seq < d.keep_from);
        out.push(StreamRow {
            stream: s.id.clone(),
            source: s.path.clone(),
            host: s.host.clone(),
            base,
            keep_from: d.keep_from,
            segments_kept: kept.len(),
            segments_removed: gone.len(),
            removed_bytes: gone.iter().map(|g| g.size).sum(),
            why: d.why,
        });
        doomed.extend(gone.into_iter().cloned());
    }
    Ok((out, doomed))
}

fn backup_time(m: &Manifest) -> jiff::Timestamp {
    m.time
        .parse()
        .ok()
        .or_else(|| crate::id::backup_time(&m.id))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The backup ids with an authentic record under `prefix` (`pins/`, `verified/`): a planted
/// pin or verification must not decide what a policy keeps.
fn ids_under(repo: &Repository, prefix: &str) -> Result<HashSet<String>> {
    Ok(records_under(repo, prefix)?.into_keys().collect())
}

/// The authentic records under `prefix`, by backup id (a bad one is left out with a warning).
fn records_under(
    repo: &Repository,
    prefix: &str,
) -> Result<std::collections::HashMap<String, serde_json::Value>> {
    let records = repo.records();
    let mut out = std::collections::HashMap::new();
    for obj in repo.storage().list(prefix)? {
        let Some(id) = obj.name.rsplit('/').next() else {
            continue;
        };
        let Some(data) = crate::repo::records::fetch(repo.storage(), &obj.name)? else {
            continue;
        };
        if let Some(v) = records.decode_or_warn::<serde_json::Value>(&obj.name, &data) {
            out.insert(id.to_string(), v);
        }
    }
    Ok(out)
}

/// Pin or unpin a backup (by id, prefix or `latest`, among those of `source` if given).
/// Returns its id.
pub fn set_pinned(
    repo: &Repository,
    spec: &str,
    source: Option<&str>,
    pinned: bool,
) -> Result<String> {
    repo.require_writable(if pinned { "pin" } else { "unpin" })?;
    let m = repo.resolve(spec, source)?;
    let name = format!("{PINS}{}", m.id);
    if pinned {
        let record = serde_json::json!({
            "pinned": jiff::Timestamp::now().to_string(),
            "host": crate::host::hostname(),
        });
        repo.storage()
            .put_replace(&name, &repo.records().encode(&name, &record)?)?;
    } else {
        repo.storage().delete(&name)?;
    }
    Ok(m.id)
}

/// The ids of the pinned backups (authentic pins only).
pub fn pinned_ids(repo: &Repository) -> Result<HashSet<String>> {
    ids_under(repo, PINS)
}

pub fn is_pinned(repo: &Repository, id: &str) -> Result<bool> {
    repo.records().holds(repo.storage(), &format!("{PINS}{id}"))
}

/// Record that `verify` passed for a backup (the "newest verified" safety rail). A drill's
/// measured restore time recorded before stays true, so it is kept.
pub fn record_verified(repo: &Repository, id: &str) -> Result<()> {
    let name = format!("{VERIFIED}{id}");
    let before = crate::repo::records::fetch(repo.storage(), &name)?.and_then(|data| {
        repo.records()
            .decode_or_warn::<serde_json::Value>(&name, &data)
    });
    let kept = match before {
        Some(v) if v.get("drill") == Some(&serde_json::json!(true)) => serde_json::json!({
            "drill": true,
            "rto_ms": v["rto_ms"],
            "restored_into": v["restored_into"],
        }),
        _ => serde_json::json!({}),
    };
    record_verified_with(repo, id, kept)
}

/// [`record_verified`] with more about how (a drill's `rto_ms`, where it restored).
pub fn record_verified_with(repo: &Repository, id: &str, extra: serde_json::Value) -> Result<()> {
    repo.require_writable("recording a verification")?;
    let mut record = serde_json::json!({
        "verified": jiff::Timestamp::now().to_string(),
        "host": crate::host::hostname(),
        "tool_version": env!("CARGO_PKG_VERSION"),
    });
    if let (Some(r), serde_json::Value::Object(more)) = (record.as_object_mut(), extra) {
        r.extend(more);
    }
    let name = format!("{VERIFIED}{id}");
    repo.storage()
        .put_replace(&name, &repo.records().encode(&name, &record)?)
}

/// The authentic verification record of each backup that has one (`verified/<id>`): when,
/// and for a drill its measured restore time.
pub fn verification_records(
    repo: &Repository,
) -> Result<std::collections::HashMap<String, serde_json::Value>> {
    records_under(repo, VERIFIED)
}
