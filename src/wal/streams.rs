//! The streams of continuous replication in a repository, as listings show them: each
//! stream's bases (manifests with a `wal` link) and segments (by name). Timeline, restore to
//! a time, retention and checks all start here; what a segment holds is authenticated only
//! when it is read (`repo::segment::read`).

use crate::error::Result;
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
    /// Its segments, by sequence number.
    pub segments: Vec<SegmentName>,
}

impl Stream {
    /// The segments from `seq` on, in order.
    pub fn segments_from(&self, seq: u64) -> &[SegmentName] {
        let at = self.segments.partition_point(|s| s.seq < seq);
        &self.segments[at..]
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
    }
    Ok(out)
}

/// The streams of the database at `path` (absolute, as manifests record it).
pub fn of_source<'a>(streams: &'a [Stream], path: &str) -> Vec<&'a Stream> {
    streams.iter().filter(|s| s.path == path).collect()
}
