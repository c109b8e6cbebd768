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
    for (i, s) in stream.segments_from(link.next_seq).iter().enumerate() {
        if target.is_some_and(|t| s.first_ms > segment::ms_of(t)) {
            break;
        }
        let expected = link.next_seq + i as u64;
        if s.seq != expected {
            return Err(Error::integrity(format!(
                "segment {expected} of stream {} (database {path}) is missing: commits after \
                 it cannot be restored",
                stream.id
            ))
            .hint("run `lifeboat repo check`; a replica may still have it (`lifeboat sync` from it), or restore to a moment before it"));
        }
        segments.push(s.clone());
    }
    Ok(Plan {
        base: base.clone(),
        stream: stream.id.clone(),
        segments,
        at,
    })
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
    'segments: for s in &plan.segments {
        crate::interrupt::check()?;
        let (seg, hash) = segment::read(repo, repo.storage(), s)?;
        if s.seq > link.next_seq {
            let want = prev.map(|h| h.to_hex().to_string());
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
