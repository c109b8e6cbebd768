//! Point-in-time restore and the timeline: which base and which segments rebuild a database
//! as it was at a moment, applying them, and the window a database can be restored to.

use crate::error::{Error, IoContext, Result};
use crate::repo::manifest::Manifest;
use crate::repo::segment::{self, SegmentName};
use crate::repo::Repository;
use crate::wal::streams::{self, Stream};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The moment to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Latest,
    Time(jiff::Timestamp),
}

impl At {
    pub fn parse(s: &str) -> Result<At> {
        if s.eq_ignore_ascii_case("latest") || s.eq_ignore_ascii_case("now") {
            return Ok(At::Latest);
        }
        s.parse::<jiff::Timestamp>().map(At::Time).map_err(|e| {
            Error::usage(format!("--at {s}: not a time ({e})")).hint(
                "give an RFC 3339 time with its offset, e.g. 2026-11-11T14:29:59Z or \
                     2026-11-11T15:29:59+01:00, or `latest`",
            )
        })
    }

    fn ns(self) -> Option<i64> {
        match self {
            At::Latest => None,
            At::Time(t) => Some(t.as_nanosecond() as i64),
        }
    }
}

/// What a point-in-time restore reads: a base, then segments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base: Manifest,
    pub stream: String,
    pub segments: Vec<SegmentName>,
    pub at: At,
}

fn time_ns(m: &Manifest) -> i64 {
    m.time
        .parse::<jiff::Timestamp>()
        .map_or(i64::MIN, |t| t.as_nanosecond() as i64)
}

/// The base and segments that rebuild `path` (absolute, as backups record it) at `at`.
pub fn plan(repo: &Repository, path: &str, at: At) -> Result<Plan> {
    let backups = repo.list_backups()?;
    let all = streams::load(repo, &backups)?;
    let mine: Vec<&Stream> = streams::of_source(&all, path)
        .into_iter()
        .filter(|s| !s.bases.is_empty())
        .collect();
    if mine.is_empty() {
        return Err(Error::not_found(format!(
            "no continuous replication of {path} in {}",
            repo.location()
        ))
        .hint("`lifeboat replicate DB` ships it; `lifeboat list --source DB` shows its ordinary backups"));
    }
    let target = at.ns();
    // The newest stream that had a base at or before the moment.
    let stream = match target {
        None => mine.iter().max_by(|a, b| a.id.cmp(&b.id)).copied(),
        Some(t) => mine
            .iter()
            .filter(|s| s.bases.iter().any(|b| time_ns(b) <= t))
            .max_by(|a, b| a.id.cmp(&b.id))
            .copied(),
    };
    let Some(stream) = stream else {
        let oldest = mine
            .iter()
            .flat_map(|s| s.bases.iter())
            .map(|b| b.time.clone())
            .min()
            .unwrap_or_default();
        return Err(Error::not_found(format!(
            "{path} cannot be restored to {}: the oldest moment it can be is {oldest}",
            match at {
                At::Time(t) => t.to_string(),
                At::Latest => "latest".into(),
            }
        ))
        .hint("`lifeboat timeline DB` shows the restorable window"));
    };
    let base = stream
        .bases
        .iter()
        .filter(|b| target.is_none_or(|t| time_ns(b) <= t))
        .max_by_key(|b| (b.wal.as_ref().map_or(0, |w| w.next_seq), time_ns(b)))
        .ok_or_else(|| Error::internal("stream without a base"))?;
    let link = base
        .wal
        .as_ref()
        .ok_or_else(|| Error::internal("base without a link"))?;
    let mut segments = Vec::new();
    // The newest commit known to come before the next segment: the base's moment, then
    // each segment's last commit (ms, rounded up).
    let mut known_until: Option<i64> = None;
    let mut expected = link.next_seq;
    for s in stream.segments_from(link.next_seq) {
        if let Some(t) = target.filter(|&t| s.first_ms > segment::ms_of(t)) {
            // Segments missing just before the first one after the moment (removed by
            // retention, or lost) may hold commits up to it: the state then is unknown,
            // not the base's.
            let before_them = match known_until {
                // Strictly before that last commit, whatever the rounding of its name.
                Some(ms) => segment::ms_of(t) + 2 <= ms,
                None => t <= time_ns(base),
            };
            if s.seq > expected && !before_them {
                return Err(Error::not_found(format!(
                    "{path} cannot be restored to {}: segments {expected} to {} of stream {} \
                     are not in {} (removed by retention, or lost)",
                    at_text(at),
                    s.seq - 1,
                    stream.id,
                    repo.location()
                ))
                .hint(format!(
                    "`lifeboat timeline DB` shows the restorable window; the nearest moments \
                     are {} (base {}) and {}",
                    base.time,
                    base.id,
                    // The base that starts where the segments resume, if one does.
                    stream
                        .bases
                        .iter()
                        .find(|b| b.wal.as_ref().is_some_and(|w| w.next_seq == s.seq))
                        .map(|b| b.time.clone())
                        .unwrap_or_else(|| jiff::Timestamp::from_millisecond(s.first_ms)
                            .map(|t| t.to_string())
                            .unwrap_or_default())
                )));
            }
            break;
        }
        if s.last_seq < expected {
            return Err(Error::integrity(format!(
                "stream {} (database {path}) has two segments numbered {}: two processes \
                 shipped it",
                stream.id, s.seq
            ))
            .hint("run `lifeboat repo check`; restore to a moment before that segment"));
        }
        if s.seq > expected {
            return Err(Error::integrity(format!(
                "segment {expected} of stream {} (database {path}) is missing: commits after \
                 it cannot be restored",
                stream.id
            ))
            .hint("run `lifeboat repo check`; a replica may still have it (`lifeboat sync` from it), or restore to a moment before it"));
        }
        known_until = Some(s.last_ms);
        expected = s.last_seq + 1;
        segments.push(s.clone());
    }
    Ok(Plan {
        base: base.clone(),
        stream: stream.id.clone(),
        segments,
        at,
    })
}

fn at_text(at: At) -> String {
    match at {
        At::Time(t) => t.to_string(),
        At::Latest => "latest".into(),
    }
}

/// The segments that base `m` is the starting point for: from its `next_seq` up to the
/// next base of its stream (or the stream's end), checked to be contiguous.
pub fn plan_span(repo: &Repository, m: &Manifest) -> Result<Option<Plan>> {
    let Some(link) = &m.wal else {
        return Ok(None);
    };
    let backups = repo.list_backups()?;
    let all = streams::load(repo, &backups)?;
    let Some(stream) = all.iter().find(|s| s.id == link.stream) else {
        return Ok(None);
    };
    let until = stream
        .bases
        .iter()
        .filter_map(|b| b.wal.as_ref().map(|w| w.next_seq))
        .filter(|&n| n > link.next_seq)
        .min();
    let segments: Vec<SegmentName> = stream
        .segments_from(link.next_seq)
        .iter()
        .take_while(|s| until.is_none_or(|u| s.seq < u))
        .cloned()
        .collect();
    stream.check_contiguous(link.next_seq, &segments)?;
    Ok(Some(Plan {
        base: m.clone(),
        stream: stream.id.clone(),
        segments,
        at: At::Latest,
    }))
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Applied {
    pub segments: u64,
    pub commits: u64,
    /// Time of the last commit applied (RFC 3339); none when only the base was.
    pub last_commit: Option<String>,
    pub bytes: u64,
}

/// Apply the plan's segments to `file`, which holds the base image: every commit up to the
/// moment, in order; a transaction split over segments is applied only once whole. Each
/// segment is authenticated and checked against its name and the one before it. Returns
/// the database's final size in `bytes`.
pub fn apply(repo: &Repository, plan: &Plan, file: &File, path: &Path) -> Result<Applied> {
    let target = plan.at.ns();
    let mut applied = Applied::default();
    let link = plan
        .base
        .wal
        .as_ref()
        .ok_or_else(|| Error::internal("base without a link"))?;
    let mut page_size = plan
        .base
        .sqlite
        .as_ref()
        .map_or(0, |s| u64::from(s.page_size));
    let mut db_pages = plan.base.logical_bytes() / page_size.max(1);
    let mut prev: Option<blake3::Hash> = None;
    // Parts of a transaction that continues in the next segment: held until it ends.
    let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut held_bytes = 0usize;
    let mut spill: Option<Spill> = None;
    // Segments are fetched a batch at a time, in parallel (on an object store each GET
    // waits a round trip), and applied in order.
    let batch = repo.storage().read_parallelism().clamp(1, 16);
    let mut fetched: std::collections::VecDeque<Result<(segment::Segment, blake3::Hash)>> =
        std::collections::VecDeque::new();
    let mut next_fetch = 0usize;
    'segments: for s in &plan.segments {
        crate::interrupt::check()?;
        if fetched.is_empty() {
            // At most `batch` segments and ~32 MiB stored at once.
            let mut upto = next_fetch;
            let mut bytes = 0u64;
            while upto < plan.segments.len()
                && upto - next_fetch < batch
                && (upto == next_fetch || bytes + plan.segments[upto].size <= 32 << 20)
            {
                bytes += plan.segments[upto].size;
                upto += 1;
            }
            let wanted = &plan.segments[next_fetch..upto];
            fetched = std::thread::scope(|sc| {
                let handles: Vec<_> = wanted
                    .iter()
                    .map(|w| sc.spawn(move || segment::read(repo, repo.storage(), w)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err(Error::internal("a segment reader panicked")))
                    })
                    .collect()
            });
            next_fetch = upto;
        }
        let (seg, hash) = fetched
            .pop_front()
            .ok_or_else(|| Error::internal("segment not fetched"))??;
        // The first segment applied may begin before the base (a compacted one): its chain
        // goes back past the base, not checked; every later one continues the one before.
        if let Some(p) = prev.filter(|_| s.seq > link.next_seq) {
            let want = Some(p.to_hex().to_string());
            if seg.header.prev != want {
                return Err(Error::integrity(format!(
                    "segment {} of stream {} does not follow segment {} (chain broken)",
                    s.seq,
                    s.stream,
                    s.seq - 1
                ))
                .hint("run `lifeboat repo check`; restore to a moment before it"));
            }
        }
        prev = Some(hash);
        let ps = u64::from(seg.header.page_size);
        if page_size == 0 {
            page_size = ps;
        }
        if ps != page_size {
            return Err(Error::integrity(format!(
                "segment {} of stream {} has pages of {ps} bytes, its base {page_size}",
                s.seq, s.stream
            )));
        }
        applied.segments += 1;
        for (c, pages) in seg.commits() {
            if target.is_some_and(|t| c.time_ns > t) {
                break 'segments;
            }
            if c.continues || !held.is_empty() || spill.is_some() {
                for (p, d) in &pages {
                    if held_bytes < 64 << 20 {
                        held.push((*p, d.to_vec()));
                        held_bytes += d.len();
                    } else {
                        let sp = match &mut spill {
                            Some(sp) => sp,
                            None => spill.insert(Spill::new(path)?),
                        };
                        sp.push(*p, d)?;
                    }
                }
                if c.continues {
                    continue;
                }
                for (p, d) in held.drain(..) {
                    write_page(file, path, p, &d, ps)?;
                }
                held_bytes = 0;
                if let Some(sp) = spill.take() {
                    sp.replay(file, path, ps)?;
                }
            } else {
                for (p, d) in pages {
                    write_page(file, path, p, d, ps)?;
                }
            }
            db_pages = u64::from(c.db_pages);
            applied.commits += 1;
            applied.last_commit = Some(
                jiff::Timestamp::from_nanosecond(i128::from(c.time_ns))
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            );
        }
    }
    let bytes = db_pages * page_size;
    file.set_len(bytes).ctx("cannot truncate", path)?;
    applied.bytes = bytes;
    Ok(applied)
}

fn write_page(file: &File, path: &Path, pgno: u32, data: &[u8], ps: u64) -> Result<()> {
    file.write_all_at(data, (u64::from(pgno) - 1) * ps)
        .ctx("cannot write", path)
}

/// Pages of a very large transaction, kept in a temporary file until its last part.
struct Spill {
    file: tempfile::NamedTempFile,
    pages: Vec<u32>,
}

impl Spill {
    fn new(beside: &Path) -> Result<Spill> {
        let dir = beside
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = tempfile::Builder::new()
            .prefix(".lifeboat-spill-")
            .tempfile_in(dir)
            .ctx("cannot create a temporary file in", dir)?;
        Ok(Spill {
            file,
            pages: Vec::new(),
        })
    }

    fn push(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let at = self.pages.len() as u64 * data.len() as u64;
        self.file
            .as_file()
            .write_all_at(data, at)
            .ctx("cannot write", self.file.path())?;
        self.pages.push(pgno);
        Ok(())
    }

    fn replay(self, out: &File, path: &Path, ps: u64) -> Result<()> {
        let mut buf = vec![0u8; ps as usize];
        for (i, &p) in self.pages.iter().enumerate() {
            self.file
                .as_file()
                .read_exact_at(&mut buf, i as u64 * ps)
                .ctx("cannot read", self.file.path())?;
            write_page(out, path, p, &buf, ps)?;
        }
        Ok(())
    }
}

/// A stretch of time a restore cannot stop inside, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub from: String,
    pub to: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub stream: String,
    pub host: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub bases: usize,
    pub segments: usize,
    pub bytes: u64,
}

/// The stretches of stream `s` whose segments are not there (retention removes the
/// segments before the base it keeps for the point-in-time window; older bases it keeps
/// then restore only to their own moment): from the last commit (or base) before them to
/// the first commit (or base) after.
fn missing_spans(s: &Stream) -> Vec<Gap> {
    let mut bases: Vec<(u64, i64)> = s
        .bases
        .iter()
        .filter_map(|b| b.wal.as_ref().map(|w| (w.next_seq, time_ns(b) / 1_000_000)))
        .collect();
    bases.sort_unstable();
    let Some(&(oldest, _)) = bases.first() else {
        return Vec::new();
    };
    let last_seq = s.segments.last().map(|x| x.seq);
    // Where the stream goes on: each segment from the oldest base on, and each base that
    // starts after the last segment. (seq, first ms, last ms, a segment)
    let mut points: Vec<(u64, i64, i64, bool)> = s
        .segments_from(oldest)
        .iter()
        .map(|x| (x.seq, x.first_ms, x.last_ms, true))
        .collect();
    points.extend(
        bases
            .iter()
            .filter(|(n, _)| last_seq.is_none_or(|l| *n > l + 1))
            .map(|&(n, t)| (n, t, t, false)),
    );
    let mut out = Vec::new();
    let mut expected = oldest;
    let mut known = bases[0].1;
    for (seq, first, last, is_segment) in points {
        if seq > expected {
            let from = bases
                .iter()
                .filter(|(n, _)| *n <= expected)
                .map(|&(_, t)| t)
                .max()
                .map_or(known, |t| t.max(known));
            // Restorable again from the base that starts there, if one does.
            let to = bases
                .iter()
                .find(|(n, _)| *n == seq)
                .map_or(first, |&(_, t)| t.min(first));
            out.push(Gap {
                from: rfc_ms(from),
                to: rfc_ms(to),
                why: format!(
                    "segments {expected} to {} are not in the repository (removed by \
                     retention, or lost: `lifeboat repo check`): a restore stops only at a base \
                     in this span",
                    seq - 1
                ),
            });
        }
        expected = expected.max(seq + u64::from(is_segment));
        known = known.max(last);
    }
    out
}

/// The restorable window of a database.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub source: String,
    /// Oldest and newest moment a restore can stop at.
    pub from: Option<String>,
    pub to: Option<String>,
    /// The newest commit shipped, and its age in seconds.
    pub last_commit: Option<String>,
    pub last_commit_age_s: Option<f64>,
    pub gaps: Vec<Gap>,
    pub streams: Vec<StreamSummary>,
    /// A `lifeboat replicate` of it running on this machine: its lag.
    pub live: Option<Live>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Live {
    pub pid: u32,
    pub lag_s: f64,
    pub updated: String,
}

fn rfc_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn timeline(repo: &Repository, path: &str) -> Result<Timeline> {
    let backups = repo.list_backups()?;
    let all = streams::load(repo, &backups)?;
    let mine = streams::of_source(&all, path);
    let mut gaps = Vec::new();
    let mut summaries = Vec::new();
    let mut from: Option<i64> = None;
    let mut to: Option<i64> = None;
    let mut prev_end: Option<i64> = None;
    for s in &mine {
        let Some(first_base) = s.bases.iter().map(|b| time_ns(b) / 1_000_000).min() else {
            continue;
        };
        let end = s.last_ms().unwrap_or(first_base).max(first_base);
        if let Some(e) = prev_end {
            if first_base > e {
                gaps.push(Gap {
                    from: rfc_ms(e),
                    to: rfc_ms(first_base),
                    why: "replication stopped; a new stream began with a base".into(),
                });
            }
        }
        gaps.extend(missing_spans(s));
        for seg in &s.segments {
            if let Some(g) = seg.unseen_since_ms {
                gaps.push(Gap {
                    from: rfc_ms(g),
                    to: rfc_ms(seg.first_ms),
                    why: "Lifeboat was not running (or the WAL was checkpointed behind it): the \
                          commits of this span are restorable only as of its end"
                        .into(),
                });
            }
        }
        from = Some(from.map_or(first_base, |f: i64| f.min(first_base)));
        to = Some(to.map_or(end, |t: i64| t.max(end)));
        prev_end = Some(end);
        summaries.push(StreamSummary {
            stream: s.id.clone(),
            host: s.host.clone(),
            from: Some(rfc_ms(first_base)),
            to: Some(rfc_ms(end)),
            bases: s.bases.len(),
            segments: s.segments.len(),
            bytes: s.segments.iter().map(|x| x.size).sum(),
        });
    }
    let last = mine
        .iter()
        .filter_map(|s| s.segments.last().map(|x| x.last_ms))
        .max();
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let live = crate::wal::replicate::live_statuses()
        .into_iter()
        .find(|l| l.source == path)
        .map(|l| {
            let lag = l
                .oldest_unshipped
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(0.0, |t| {
                    (now_ms - t.as_millisecond()).max(0) as f64 / 1000.0
                });
            Live {
                pid: l.pid,
                lag_s: lag,
                updated: l.updated,
            }
        });
    Ok(Timeline {
        source: path.to_string(),
        from: from.map(rfc_ms),
        to: to.map(rfc_ms),
        last_commit: last.map(rfc_ms),
        last_commit_age_s: last.map(|l| (now_ms - l).max(0) as f64 / 1000.0),
        gaps,
        streams: summaries,
        live,
    })
}
