//! The streams of continuous replication in a repository, as listings show them: each
//! stream's bases (manifests with a `wal` link) and segments (by name). Timeline, restore to
//! a time, retention and checks all start here; what a segment holds is authenticated only
//! when it is read (`repo::segment::read`).

use crate::error::{ErrorKind, Result};
use crate::repo::manifest::Manifest;
use crate::repo::segment::{self, SegmentName};
use crate::repo::Repository;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    /// Source path and host, from its bases (empty when it has none).
    pub path: String,
    pub host: String,
    /// Its bases, oldest first.
    pub bases: Vec<Manifest>,
    /// Its segments, by sequence number; a compacted segment stands for those it holds.
    pub segments: Vec<SegmentName>,
    /// Segments a compacted one holds too (left by a compaction that stopped before it
    /// deleted them): never read, removed by prune.
    pub covered: Vec<SegmentName>,
}

impl Stream {
    /// The segments holding sequence number `seq` and those after it, in order.
    pub fn segments_from(&self, seq: u64) -> &[SegmentName] {
        let at = self.segments.partition_point(|s| s.last_seq < seq);
        &self.segments[at..]
    }

    /// Check that `segments` (from [`Stream::segments_from`]) follow each other from `seq`
    /// on: each one begins where the one before ended.
    pub fn check_contiguous(&self, seq: u64, segments: &[SegmentName]) -> Result<()> {
        let mut expected = seq;
        for s in segments {
            if s.seq > expected {
                return Err(crate::error::Error::integrity(format!(
                    "segment {expected} of stream {} (database {}) is missing: commits after \
                     it cannot be restored",
                    self.id, self.path
                ))
                .hint("run `lifeboat repo check`; a replica may still have it (`lifeboat sync` from it), or restore to a moment before it"));
            }
            if s.last_seq < expected {
                return Err(crate::error::Error::integrity(format!(
                    "stream {} (database {}) has two segments numbered {}: two processes \
                     shipped it",
                    self.id, self.path, s.seq
                ))
                .hint("run `lifeboat repo check`; restore to a moment before that segment"));
            }
            expected = s.last_seq + 1;
        }
        Ok(())
    }

    /// Time of the newest commit shipped, in ms (the newest base's time when no segment).
    pub fn last_ms(&self) -> Option<i64> {
        self.segments.last().map(|s| s.last_ms).or_else(|| {
            self.bases
                .last()
                .and_then(|b| b.time.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond())
        })
    }
}

/// Milliseconds since the epoch of a manifest's time (None if it does not parse).
pub fn time_ms(m: &Manifest) -> Option<i64> {
    m.time
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

impl Stream {
    /// The newest segment that opens (is authentic and what its name says), and with it the
    /// time of the stream's newest commit that can be relied on: a name alone is not
    /// authenticated, and junk planted under a newer name must not make a stream look
    /// ended (or alive). Segments that do not open are skipped with a warning; None when
    /// none opens. A storage error (not a check that failed) is returned.
    pub fn newest_authentic(&self, repo: &Repository) -> Result<Option<&SegmentName>> {
        for s in self.segments.iter().rev() {
            match segment::read(repo, repo.storage(), s) {
                Ok(_) => return Ok(Some(s)),
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::Integrity | ErrorKind::Trust | ErrorKind::NotFound
                    ) =>
                {
                    tracing::warn!("{}: {e}", s.object());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Every stream, oldest first (stream ids sort by the time they were started). `backups` are
/// the repository's manifests (`list_backups`), passed in so a caller that has them already
/// does not read them again.
pub fn load(repo: &Repository, backups: &[Manifest]) -> Result<Vec<Stream>> {
    let (segments, _) = segment::list(repo.storage())?;
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let new = |id: &str| Stream {
        id: id.to_string(),
        path: String::new(),
        host: String::new(),
        bases: Vec::new(),
        segments: Vec::new(),
        covered: Vec::new(),
    };
    for m in backups {
        if let Some(link) = &m.wal {
            let s = streams
                .entry(link.stream.clone())
                .or_insert_with(|| new(&link.stream));
            s.path = m.source.path.clone();
            s.host = m.source.host.clone();
            s.bases.push(m.clone());
        }
    }
    for seg in segments {
        streams
            .entry(seg.stream.clone())
            .or_insert_with(|| new(&seg.stream))
            .segments
            .push(seg);
    }
    let mut out: Vec<Stream> = streams.into_values().collect();
    for s in &mut out {
        s.bases
            .sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        let (kept, covered) = effective(std::mem::take(&mut s.segments));
        s.covered = covered;
        s.segments = kept;
    }
    Ok(out)
}

/// The segments of one stream a reader uses, in order, and those a compacted segment also
/// holds (a compaction's leftovers). Widest first among those that begin at one number; a
/// segment inside the range of one kept before it is covered, unless it has the same range
/// (a fork, which restores and checks report).
pub fn effective(mut segments: Vec<SegmentName>) -> (Vec<SegmentName>, Vec<SegmentName>) {
    segments.sort_by(|a, b| a.seq.cmp(&b.seq).then(b.last_seq.cmp(&a.last_seq)));
    let mut kept: Vec<SegmentName> = Vec::with_capacity(segments.len());
    let mut covered = Vec::new();
    for seg in segments {
        match kept.last() {
            Some(k)
                if seg.last_seq <= k.last_seq
                    && !(seg.seq == k.seq && seg.last_seq == k.last_seq) =>
            {
                covered.push(seg)
            }
            _ => kept.push(seg),
        }
    }
    (kept, covered)
}

/// The streams of the database at `path` (absolute, as manifests record it).
pub fn of_source<'a>(streams: &'a [Stream], path: &str) -> Vec<&'a Stream> {
    streams.iter().filter(|s| s.path == path).collect()
}
