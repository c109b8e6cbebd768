//! Continuous-replication segments (`wal/<stream>/<name>`): the pages of the SQLite
//! transactions committed during one interval, each with the time Lifeboat saw it commit,
//! chained to the segment before. A *stream* starts at a base (an ordinary backup whose
//! manifest names the stream, see `Manifest::wal`) and grows by one write-once segment per
//! interval in which something was committed; a restore to time T rebuilds the newest base
//! at or before T and applies the commits of the segments after it up to T.
//!
//! Stored bytes: zstd of the encoding below, sealed (kind *segment*, name as associated data)
//! in an encrypted repository. Encoding: `LBSEG01\n`, u32 length of the header JSON, the
//! header, the pages of every commit in order, BLAKE3 of everything before it.

use crate::error::{Error, Result};
use crate::repo::crypto::ObjectKind;
use crate::repo::Repository;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};

/// The repository feature that says segments may be stored (an older Lifeboat would not
/// keep the bases they need, nor copy or check them).
pub const FEATURE: &str = "wal-segments";
pub const PREFIX: &str = "wal/";
pub const SEGMENT_FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"LBSEG01\n";
/// Largest stored segment read back; writers cut segments at [`TARGET_DATA`] of pages.
pub const SEGMENT_MAX: u64 = 128 << 20;
/// Page bytes at which a writer closes a segment early (a burst, a `VACUUM`).
pub const TARGET_DATA: usize = 8 << 20;
const HEADER_MAX: usize = 32 << 20;

/// Where a SQLite WAL stood after a commit: enough to tell, after a restart, whether the
/// `-wal` file still continues from there (same salts, checksum chain intact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalPos {
    pub salt1: u32,
    pub salt2: u32,
    pub ckpt_seq: u32,
    /// Byte offset of the next frame in the `-wal` file.
    pub offset: u64,
    /// The running checksum at that offset.
    pub cksum: [u32; 2],
}

/// One committed transaction: its pages (in WAL order; a page may repeat, the later wins)
/// and the database size after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRec {
    /// Nanoseconds since the Unix epoch when Lifeboat saw the commit.
    pub time_ns: i64,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    pub pages: Vec<u32>,
    /// The commits since this time were not seen one by one (Lifeboat was not running, or
    /// the database changed outside the WAL): this record holds their combined result, so a
    /// restore to a time in `[unseen_since_ns, time_ns)` gives the state before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_since_ns: Option<i64>,
    /// The transaction's pages continue in the next segment (a transaction larger than a
    /// segment); every part carries the same time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continues: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    pub format: u32,
    pub stream: String,
    pub seq: u64,
    /// The database, as in manifests.
    pub path: String,
    pub host: String,
    pub page_size: u32,
    /// Hex BLAKE3 of the previous segment's encoding (none for the stream's first).
    pub prev: Option<String>,
    /// The WAL position after the last commit here.
    pub wal: Option<WalPos>,
    pub commits: Vec<CommitRec>,
    /// A compacted segment: it holds the commits of segments `seq..=last_seq`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// A compacted segment: hex BLAKE3 of the encoding of segment `last_seq` as it was first
    /// stored, which the next segment's `prev` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub header: SegmentHeader,
    /// The pages of every commit, in order.
    pub data: Vec<u8>,
}

/// What a segment's object name says (checked against the sealed header when read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub stream: String,
    pub seq: u64,
    /// First and last commit time, milliseconds since the epoch.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Its first commit stands for commits not seen one by one since this time (ms).
    pub unseen_since_ms: Option<i64>,
    /// The last sequence number it covers (`seq` but for a compacted segment).
    pub last_seq: u64,
    pub size: u64,
}

impl SegmentName {
    pub fn object(&self) -> String {
        object_name(
            &self.stream,
            self.seq,
            self.first_ms,
            self.last_ms,
            self.unseen_since_ms,
            self.last_seq,
        )
    }

    /// How many segments it stands for (more than one once compacted).
    pub fn covers(&self) -> u64 {
        self.last_seq - self.seq + 1
    }
}

pub fn object_name(
    stream: &str,
    seq: u64,
    first_ms: i64,
    last_ms: i64,
    unseen_since_ms: Option<i64>,
    last_seq: u64,
) -> String {
    let mut name = format!("{PREFIX}{stream}/{seq:016x}-{first_ms}-{last_ms}");
    if let Some(g) = unseen_since_ms {
        name.push_str(&format!("-g{g}"));
    }
    if last_seq != seq {
        name.push_str(&format!("-to{last_seq:016x}"));
    }
    name
}

/// Parse `wal/<stream>/<seq>-<first ms>-<last ms>[-g<ms>][-to<last seq>]`; None for
/// anything else.
pub fn parse_name(name: &str, size: u64) -> Option<SegmentName> {
    let rest = name.strip_prefix(PREFIX)?;
    let (stream, leaf) = rest.split_once('/')?;
    if !crate::id::is_backup_id(stream) {
        return None;
    }
    let mut parts = leaf.split('-');
    let seq = parts.next()?;
    if seq.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let first_ms: i64 = parts.next()?.parse().ok()?;
    let last_ms: i64 = parts.next()?.parse().ok()?;
    let mut unseen_since_ms = None;
    let mut last_seq = seq;
    for part in parts {
        if let Some(g) = part.strip_prefix('g') {
            unseen_since_ms = Some(g.parse::<i64>().ok()?);
        } else if let Some(to) = part.strip_prefix("to") {
            last_seq = u64::from_str_radix(to, 16).ok()?;
        } else {
            return None;
        }
    }
    if first_ms > last_ms || last_seq < seq {
        return None;
    }
    let parsed = SegmentName {
        stream: stream.to_string(),
        seq,
        first_ms,
        last_ms,
        unseen_since_ms,
        last_seq,
        size,
    };
    // One spelling per segment: the name must be exactly what a writer makes of it.
    (parsed.object() == name).then_some(parsed)
}

/// Every segment in `storage`, by stream then sequence number; names that are not segments
/// are returned apart (for `repo check`).
pub fn list(storage: &dyn Storage) -> Result<(Vec<SegmentName>, Vec<String>)> {
    let mut segments = Vec::new();
    let mut strange = Vec::new();
    for o in storage.list(PREFIX)? {
        match parse_name(&o.name, o.size) {
            Some(s) => segments.push(s),
            None => strange.push(o.name),
        }
    }
    segments.sort();
    Ok((segments, strange))
}

/// Milliseconds of a nanosecond time, rounded down.
pub fn ms_of(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

impl Segment {
    pub fn first_ns(&self) -> i64 {
        self.header.commits.first().map_or(0, |c| c.time_ns)
    }

    pub fn last_ns(&self) -> i64 {
        self.header.commits.last().map_or(0, |c| c.time_ns)
    }

    pub fn object_name(&self) -> String {
        object_name(
            &self.header.stream,
            self.header.seq,
            ms_of(self.first_ns()),
            // Rounded up: a restore to the last commit's millisecond must include it.
            ms_of(self.last_ns() + 999_999),
            self.header
                .commits
                .first()
                .and_then(|c| c.unseen_since_ns)
                .map(ms_of),
            self.header.last_seq.unwrap_or(self.header.seq),
        )
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| Error::internal(e.to_string()))?;
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + self.data.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.data);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        Ok(out)
    }

    /// Decode and check an encoding: checksum, lengths, page numbers, page counts.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Segment> {
        let bad = |why: &str| Error::integrity(format!("segment {what} is damaged: {why}"));
        if bytes.len() < MAGIC.len() + 4 + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not a segment encoding"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        let len = u32::from_le_bytes([body[8], body[9], body[10], body[11]]) as usize;
        if len > HEADER_MAX || 12 + len > body.len() {
            return Err(bad("header length out of range"));
        }
        let header: SegmentHeader = serde_json::from_slice(&body[12..12 + len])
            .map_err(|e| bad(&format!("header: {e}")))?;
        if header.format != SEGMENT_FORMAT {
            return Err(Error::usage(format!(
                "segment {what} is of format {}, written by a newer Lifeboat",
                header.format
            ))
            .hint("use a Lifeboat at least as new as the one replicating"));
        }
        let data = body[12 + len..].to_vec();
        let ps = header.page_size as usize;
        if !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(bad("page size out of range"));
        }
        let pages: usize = header.commits.iter().map(|c| c.pages.len()).sum();
        if pages.checked_mul(ps) != Some(data.len()) {
            return Err(bad("page data does not match the page lists"));
        }
        let mut last = i64::MIN;
        for (i, c) in header.commits.iter().enumerate() {
            if c.pages.contains(&0) || c.db_pages == 0 {
                return Err(bad("page number 0"));
            }
            if c.time_ns < last {
                return Err(bad("commit times go backwards"));
            }
            if c.continues && i + 1 != header.commits.len() {
                return Err(bad("a continued commit that is not the last"));
            }
            last = c.time_ns;
        }
        if header.commits.is_empty() {
            return Err(bad("no commits"));
        }
        Ok(Segment { header, data })
    }

    /// Each commit with its pages: `(commit, [(page number, bytes)])`.
    pub fn commits(&self) -> impl Iterator<Item = (&CommitRec, Vec<(u32, &[u8])>)> {
        let ps = self.header.page_size as usize;
        let mut at = 0usize;
        self.header.commits.iter().map(move |c| {
            let pages = c
                .pages
                .iter()
                .map(|&p| {
                    let page = &self.data[at..at + ps];
                    at += ps;
                    (p, page)
                })
                .collect();
            (c, pages)
        })
    }
}

/// The stored bytes of a segment under `name` (compressed; sealed when encrypted).
pub fn seal(repo: &Repository, name: &str, encoded: &[u8]) -> Result<Vec<u8>> {
    let compressed = zstd::bulk::compress(encoded, 3)
        .map_err(|e| Error::internal(format!("cannot compress a segment: {e}")))?;
    repo.seal(ObjectKind::Segment, name.as_bytes(), compressed)
}

/// Read, authenticate and decode segment `s` from `storage`; checks that it is what its name
/// says. Returns the segment and the hash the next segment's `prev` names: the BLAKE3 of its
/// encoding, or for a compacted segment that of the last segment it holds (`ends`).
pub fn read(
    repo: &Repository,
    storage: &dyn Storage,
    s: &SegmentName,
) -> Result<(Segment, blake3::Hash)> {
    let name = s.object();
    let stored = storage.get_small(&name, SEGMENT_MAX)?;
    open(repo, &name, stored, s)
}

/// [`read`], for bytes already fetched.
pub fn open(
    repo: &Repository,
    name: &str,
    stored: Vec<u8>,
    s: &SegmentName,
) -> Result<(Segment, blake3::Hash)> {
    let compressed = repo.unseal(ObjectKind::Segment, name.as_bytes(), stored, name)?;
    let encoded = zstd::bulk::decompress(&compressed, SEGMENT_MAX as usize * 2)
        .map_err(|e| Error::integrity(format!("segment {name} is damaged: {e}")))?;
    let seg = Segment::decode(&encoded, name)?;
    let h = &seg.header;
    if h.stream != s.stream || h.seq != s.seq || seg.object_name() != name {
        return Err(Error::integrity(format!(
            "segment {name} holds segment {} of stream {} ({} commits): it is not what its \
             name says",
            h.seq,
            h.stream,
            h.commits.len()
        )));
    }
    let chain = match &h.ends {
        None => blake3::hash(&encoded),
        Some(hex) => blake3::Hash::from_hex(hex)
            .map_err(|_| Error::integrity(format!("segment {name} is damaged: bad `ends`")))?,
    };
    Ok((seg, chain))
}

/// One segment holding the commits of `parts` (consecutive segments of one stream, in
/// order, each with its chain hash from [`read`]): compaction.
pub fn merge(parts: Vec<(Segment, blake3::Hash)>) -> Result<Segment> {
    let mut iter = parts.into_iter();
    let (first, mut chain) = iter
        .next()
        .ok_or_else(|| Error::internal("nothing to merge"))?;
    let mut out = first;
    for (next, hash) in iter {
        let h = &next.header;
        let expected = out.header.last_seq.unwrap_or(out.header.seq) + 1;
        if h.stream != out.header.stream
            || h.seq != expected
            || h.page_size != out.header.page_size
            || h.prev.as_deref() != Some(chain.to_hex().as_str())
        {
            return Err(Error::integrity(format!(
                "segment {} of stream {} does not follow segment {} (not merged)",
                h.seq,
                h.stream,
                expected - 1
            )));
        }
        if out.header.commits.last().is_some_and(|c| c.continues) && h.commits.is_empty() {
            return Err(Error::internal("a continued commit without its end"));
        }
        let last = h.last_seq.unwrap_or(h.seq);
        out.header.wal = h.wal;
        out.header.commits.extend(next.header.commits);
        out.data.extend_from_slice(&next.data);
        out.header.last_seq = Some(last);
        chain = hash;
    }
    if out.header.last_seq.is_some() {
        out.header.ends = Some(chain.to_hex().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64, commits: &[(i64, &[u32])]) -> Segment {
        let ps = 512;
        let mut data = Vec::new();
        let commits = commits
            .iter()
            .map(|(t, pages)| {
                for &p in *pages {
                    data.extend(std::iter::repeat_n((p as u8) ^ (*t as u8), ps));
                }
                CommitRec {
                    time_ns: *t,
                    db_pages: pages.iter().copied().max().unwrap_or(1),
                    pages: pages.to_vec(),
                    unseen_since_ns: None,
                    continues: false,
                }
            })
            .collect();
        Segment {
            header: SegmentHeader {
                format: SEGMENT_FORMAT,
                stream: "01m8axc18gnpx3".into(),
                seq,
                path: "/srv/app.db".into(),
                host: "h".into(),
                page_size: ps as u32,
                prev: None,
                wal: None,
                commits,
                last_seq: None,
                ends: None,
            },
            data,
        }
    }

    #[test]
    fn encoding_round_trips_and_every_flipped_byte_is_caught() {
        let seg = sample(7, &[(1_000_000_000, &[1, 3]), (2_500_000_000, &[2])]);
        let bytes = seg.encode().unwrap();
        assert_eq!(Segment::decode(&bytes, "x").unwrap(), seg);
        for i in (0..bytes.len()).step_by(97) {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(
                Segment::decode(&bad, "x").is_err(),
                "flip at {i} not caught"
            );
        }
        assert!(Segment::decode(&bytes[..bytes.len() - 1], "x").is_err());
        let pages: Vec<(u32, u8)> = seg
            .commits()
            .flat_map(|(_, p)| p.into_iter().map(|(n, b)| (n, b[0])).collect::<Vec<_>>())
            .collect();
        assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3, 2]);
    }

    #[test]
    fn names_carry_stream_seq_and_times() {
        let seg = sample(0x2a, &[(1_000_000_001, &[1]), (2_000_000_001, &[1])]);
        let name = seg.object_name();
        assert_eq!(name, "wal/01m8axc18gnpx3/000000000000002a-1000-2001");
        let parsed = parse_name(&name, 9).unwrap();
        assert_eq!(
            (parsed.seq, parsed.first_ms, parsed.last_ms),
            (42, 1000, 2001)
        );
        assert_eq!(parsed.object(), name);
        let mut gap = seg.clone();
        gap.header.commits[0].unseen_since_ns = Some(500_000_000);
        let name = gap.object_name();
        assert_eq!(name, "wal/01m8axc18gnpx3/000000000000002a-1000-2001-g500");
        assert_eq!(parse_name(&name, 0).unwrap().unseen_since_ms, Some(500));
        let mut merged = gap.clone();
        merged.header.last_seq = Some(0x30);
        let name = merged.object_name();
        assert_eq!(
            name,
            "wal/01m8axc18gnpx3/000000000000002a-1000-2001-g500-to0000000000000030"
        );
        let parsed = parse_name(&name, 0).unwrap();
        assert_eq!((parsed.seq, parsed.last_seq, parsed.covers()), (42, 48, 7));
        for bad in [
            "wal/01m8axc18gnpx3/000000000000002a-01-2",
            "wal/01m8axc18gnpx3/000000000000002a-1-2-x5",
            "wal/01m8axc18gnpx3/000000000000002a-1-2-g5-g6",
            "wal/x/000000000000002a-1-2",
            "wal/01m8axc18gnpx3/2a-1-2",
            "wal/01m8axc18gnpx3/000000000000002a-3-2",
            "data/01m8axc18gnpx3/000000000000002a-1-2",
        ] {
            assert!(parse_name(bad, 0).is_none(), "{bad}");
        }
    }
}
