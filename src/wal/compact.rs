//! Compaction of continuous-replication segments: runs of old segments are merged into one
//! object each (one per minute once they are an hour old, one per hour once a day old), so a
//! long point-in-time window is a few thousand objects rather than one per second. Every
//! commit is kept: a restore still stops at any commit. `prune` runs it.
//!
//! Crash safety: the merged segment is stored (create-only, named by the range it covers)
//! before the segments it holds are deleted; a compaction stopped between the two leaves
//! both, and readers use the merged one (`streams` counts the others as covered, which the
//! next compaction or prune deletes).

use crate::error::Result;
use crate::repo::segment::{self, SegmentName};
use crate::repo::Repository;
use crate::wal::streams::{self, Stream};
use serde::Serialize;

/// A merged segment holds at most this much stored data.
const MERGED_MAX: u64 = 64 << 20;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Default, Clone, Serialize)]
pub struct CompactReport {
    /// Segments merged, and the merged segments they became.
    pub segments_merged: u64,
    pub merged_into: u64,
    /// Leftovers of an interrupted compaction removed.
    pub covered_removed: u64,
    /// Objects fewer after the run.
    pub objects_saved: u64,
    /// Runs left as they were because a segment in them does not open (`repo check`).
    pub skipped_damaged: u64,
}

/// The group a segment that ended at `last_ms` belongs to at `now_ms` (None: too young to
/// compact).
fn bucket(first_ms: i64, last_ms: i64, now_ms: i64) -> Option<(i64, i64)> {
    let age = now_ms - last_ms;
    let width = if age >= DAY_MS {
        HOUR_MS
    } else if age >= HOUR_MS {
        MINUTE_MS
    } else {
        return None;
    };
    Some((width, first_ms.div_euclid(width)))
}

/// Compact every stream (`dry_run`: count only).
pub fn compact(repo: &Repository, dry_run: bool) -> Result<CompactReport> {
    let mut report = CompactReport::default();
    if repo.is_write_only() || !repo.has_feature(segment::FEATURE) {
        return Ok(report);
    }
    let backups = repo.list_backups()?;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for stream in streams::load(repo, &backups)? {
        for c in &stream.covered {
            if !dry_run {
                repo.storage().delete(&c.object())?;
            }
            report.covered_removed += 1;
        }
        for run in runs(&stream, now_ms) {
            crate::interrupt::check()?;
            report.segments_merged += run.len() as u64;
            report.merged_into += 1;
            report.objects_saved += run.len() as u64 - 1;
            if !dry_run {
                // A segment that does not open (damaged, or planted by someone without the
                // keys) is left for `repo check` to report; it must not stop every prune.
                if let Err(e) = merge_run(repo, &run) {
                    if e.kind != crate::error::ErrorKind::Integrity
                        && e.kind != crate::error::ErrorKind::Trust
                    {
                        return Err(e);
                    }
                    tracing::warn!("segments of stream {} not compacted: {e}", stream.id);
                    report.segments_merged -= run.len() as u64;
                    report.merged_into -= 1;
                    report.objects_saved -= run.len() as u64 - 1;
                    report.skipped_damaged += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Runs of at least two consecutive segments of `stream` in one group.
fn runs(stream: &Stream, now_ms: i64) -> Vec<Vec<SegmentName>> {
    let mut out = Vec::new();
    let mut cur: Vec<SegmentName> = Vec::new();
    let mut cur_key = None;
    let mut cur_bytes = 0u64;
    // The stream's newest segment stays as it is: a restarting `replicate` reads it.
    let n = stream.segments.len().saturating_sub(1);
    for s in &stream.segments[..n] {
        let key = bucket(s.first_ms, s.last_ms, now_ms);
        let follows = cur.last().is_some_and(|p| p.last_seq + 1 == s.seq);
        // A segment that begins after a gap starts a group: its name carries the gap.
        let joins = key.is_some()
            && key == cur_key
            && follows
            && s.unseen_since_ms.is_none()
            && cur_bytes + s.size <= MERGED_MAX;
        if !joins {
            if cur.len() >= 2 {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
            cur_bytes = 0;
            cur_key = key;
            if key.is_none() {
                continue;
            }
        }
        cur_bytes += s.size;
        cur.push(s.clone());
    }
    if cur.len() >= 2 {
        out.push(cur);
    }
    out
}

fn merge_run(repo: &Repository, run: &[SegmentName]) -> Result<()> {
    let parts = run
        .iter()
        .map(|s| segment::read(repo, repo.storage(), s))
        .collect::<Result<Vec<_>>>()?;
    let merged = segment::merge(parts)?;
    let name = merged.object_name();
    let encoded = merged.encode()?;
    let sealed = segment::seal(repo, &name, &encoded)?;
    crate::storage::put_new_or_same(repo.storage(), &name, &sealed)?;
    // Read back before the parts go: what replaces them must open.
    let parsed = segment::parse_name(&name, sealed.len() as u64)
        .ok_or_else(|| crate::error::Error::internal("merged segment name"))?;
    segment::read(repo, repo.storage(), &parsed)?;
    for s in run {
        repo.storage().delete(&s.object())?;
    }
    tracing::info!(segments = run.len(), %name, "segments compacted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_segments_are_left_and_old_ones_group_by_minute_then_hour() {
        let now = 10 * DAY_MS;
        assert_eq!(bucket(now - 1000, now - 500, now), None);
        assert_eq!(
            bucket(now - 2 * HOUR_MS, now - 2 * HOUR_MS + 10, now),
            Some((MINUTE_MS, (now - 2 * HOUR_MS) / MINUTE_MS))
        );
        assert_eq!(
            bucket(now - 3 * DAY_MS, now - 3 * DAY_MS, now),
            Some((HOUR_MS, (now - 3 * DAY_MS) / HOUR_MS))
        );
    }

    fn name(seq: u64, first_ms: i64, gap: bool) -> SegmentName {
        SegmentName {
            stream: "01m8axc18gnpx3".into(),
            seq,
            first_ms,
            last_ms: first_ms + 10,
            unseen_since_ms: gap.then_some(first_ms - 5),
            last_seq: seq,
            size: 100,
        }
    }

    #[test]
    fn runs_are_consecutive_within_a_group_and_break_at_gaps() {
        let now = 10 * DAY_MS;
        let t = now - 2 * HOUR_MS;
        let t = t - t.rem_euclid(MINUTE_MS);
        let stream = Stream {
            id: "01m8axc18gnpx3".into(),
            path: "/db".into(),
            host: "h".into(),
            bases: Vec::new(),
            segments: vec![
                name(0, t, false),
                name(1, t + 1000, false),
                name(2, t + 2000, true), // a gap: starts its own group
                name(3, t + 3000, false),
                name(5, t + 4000, false), // 4 missing: not consecutive
                name(6, t + MINUTE_MS, false),
                name(7, now - 10, false), // young
                name(8, now - 5, false),  // the newest: never
            ],
            covered: Vec::new(),
        };
        let seqs: Vec<Vec<u64>> = runs(&stream, now)
            .iter()
            .map(|r| r.iter().map(|s| s.seq).collect())
            .collect();
        assert_eq!(seqs, vec![vec![0, 1], vec![2, 3]]);
    }
}
