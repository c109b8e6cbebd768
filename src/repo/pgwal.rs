//! The PostgreSQL WAL archive (`pgwal/<system id>/<file name>`): every file PostgreSQL's
//! `archive_command` hands over (WAL segments, timeline `.history` files, `.backup` labels,
//! `.partial` segments), one write-once object each, under the name PostgreSQL gave it, in a
//! folder per cluster (the system identifier of `pg_control`, which every WAL segment's first
//! page carries too).
//!
//! Stored bytes: zstd of the encoding below, sealed (kind *pgwal*, object name as associated
//! data) in an encrypted repository, so a file cannot be swapped for another one or moved
//! under another name. Encoding: `LBPGW01\n`, u32 length of the header JSON, the header, the
//! file's bytes. The header names the file and carries the BLAKE3 of its bytes, which every
//! read checks.

use crate::error::{Error, Result};
use crate::repo::crypto::ObjectKind;
use crate::repo::Repository;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};

/// The repository feature that says `pgwal/` may hold a WAL archive and manifests may be
/// physical base backups (an older Lifeboat would prune neither correctly).
pub const FEATURE: &str = "pg-wal";
pub const PREFIX: &str = "pgwal/";
const MAGIC: &[u8; 8] = b"LBPGW01\n";
/// The largest WAL segment PostgreSQL makes (`--wal-segsize` at most 1 GiB), plus room.
pub const FILE_MAX: u64 = (1 << 30) + (1 << 20);
const HEADER_MAX: usize = 64 << 10;
/// zstd level for WAL: WAL compresses well at the fastest levels, and `wal-push` must keep
/// up with a busy server.
const LEVEL: i32 = 1;

/// The WAL page header's magic number of each major version (`XLOG_PAGE_MAGIC`).
fn page_magic(major: u32) -> Option<u16> {
    Some(match major {
        10 => 0xD097,
        11 => 0xD098,
        12 => 0xD101,
        13 => 0xD106,
        14 => 0xD10D,
        15 => 0xD110,
        16 => 0xD113,
        17 => 0xD116,
        18 => 0xD118,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalHeader {
    pub format: u32,
    /// The file name PostgreSQL gave it (`000000010000000000000003`, `00000002.history`, …).
    pub name: String,
    pub system_id: String,
    pub size: u64,
    /// Hex BLAKE3 of the file's bytes.
    pub blake3: String,
    /// RFC 3339, when Lifeboat stored it (the file was complete by then).
    pub archived: String,
    pub host: String,
}

/// What kind of file PostgreSQL archived, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalFile {
    /// A WAL segment: timeline and segment number (`log * segments_per_log + seg`, counted
    /// in 16 MiB units of the name, see [`SegNo`]).
    Segment { tli: u32, log: u32, seg: u32 },
    /// The last, partial segment of a timeline a promotion ended.
    Partial { tli: u32, log: u32, seg: u32 },
    /// A timeline's history (`00000002.history`).
    History { tli: u32 },
    /// A base backup's label (`<segment>.<offset>.backup`).
    Backup { tli: u32, log: u32, seg: u32 },
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.len() == 8
        && s.is_ascii()
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn segment_parts(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    Some((hex_u32(&s[..8])?, hex_u32(&s[8..16])?, hex_u32(&s[16..])?))
}

impl WalFile {
    /// Parse a file name as PostgreSQL writes them; anything else is `None`.
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some((tli, log, seg)) = segment_parts(name) {
            return Some(WalFile::Segment { tli, log, seg });
        }
        if let Some(base) = name.strip_suffix(".partial") {
            let (tli, log, seg) = segment_parts(base)?;
            return Some(WalFile::Partial { tli, log, seg });
        }
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFile::History { tli: hex_u32(tli)? });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, offset) = rest.split_once('.')?;
            hex_u32(offset)?;
            let (tli, log, s) = segment_parts(seg)?;
            return Some(WalFile::Backup { tli, log, seg: s });
        }
        None
    }

    pub fn tli(&self) -> u32 {
        match *self {
            WalFile::Segment { tli, .. }
            | WalFile::Partial { tli, .. }
            | WalFile::History { tli }
            | WalFile::Backup { tli, .. } => tli,
        }
    }

    /// The segment number, for files that belong to a segment.
    pub fn segno(&self, seg_size: u64) -> Option<u64> {
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::Backup { log, seg, .. } => Some(segno(log, seg, seg_size)),
            WalFile::History { .. } => None,
        }
    }
}

/// Segments per "log" (the middle 8 hex digits of a name) for a segment size.
fn per_log(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

pub fn segno(log: u32, seg: u32, seg_size: u64) -> u64 {
    log as u64 * per_log(seg_size) + seg as u64
}

/// The name of segment `segno` of timeline `tli`.
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = per_log(seg_size);
    format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per)
}

/// The segment that holds WAL position `lsn`.
pub fn segno_of_lsn(lsn: u64, seg_size: u64) -> u64 {
    lsn / seg_size.max(1)
}

/// `0/2000028` → 0x2000028.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// What the first page of a WAL segment says (its long page header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHead {
    pub tli: u32,
    /// WAL position of the segment's first byte.
    pub page_addr: u64,
    pub system_id: u64,
    pub seg_size: u32,
}

/// Read the long page header at the start of a segment. `None` when the bytes are not a
/// WAL segment's first page (a recycled file of zeros, say).
pub fn segment_head(data: &[u8]) -> Option<SegmentHead> {
    if data.len() < 40 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or([0; 8]));
    let magic = u16_at(0);
    let info = u16_at(2);
    const XLP_LONG_HEADER: u16 = 0x0002;
    if info & XLP_LONG_HEADER == 0 || !(10..=18).any(|v| page_magic(v) == Some(magic)) {
        return None;
    }
    let seg_size = u32_at(32);
    if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
        return None;
    }
    Some(SegmentHead {
        tli: u32_at(4),
        page_addr: u64_at(8),
        system_id: u64_at(24),
        seg_size,
    })
}

/// Check that a segment's bytes are the segment `name` of cluster `system_id`.
pub fn check_segment(name: &str, data: &[u8], system_id: Option<u64>) -> Result<SegmentHead> {
    let bad =
        |why: String| Error::integrity(format!("WAL segment {name} is not a valid segment: {why}"));
    let head = segment_head(data).ok_or_else(|| bad("no WAL page header at its start".into()))?;
    if data.len() as u64 != head.seg_size as u64 {
        return Err(bad(format!(
            "{} bytes where its header says segments are {}",
            data.len(),
            head.seg_size
        )));
    }
    let Some(WalFile::Segment { tli, log, seg }) = WalFile::parse(name) else {
        return Err(bad("not a segment's name".into()));
    };
    let expected = segno(log, seg, head.seg_size as u64) * head.seg_size as u64;
    // The first segment of a new timeline is a copy of its parent's: its first page still
    // names the parent timeline.
    if head.tli > tli || head.page_addr != expected {
        return Err(bad(format!(
            "it starts at {} of timeline {}",
            format_lsn(head.page_addr),
            head.tli
        )));
    }
    if let Some(id) = system_id {
        if head.system_id != id {
            return Err(bad(format!(
                "it belongs to the cluster with system identifier {}, not {id}",
                head.system_id
            )));
        }
    }
    Ok(head)
}

/// The object name of `file` of cluster `system_id`.
pub fn object_name(system_id: u64, file: &str) -> String {
    format!("{PREFIX}{system_id}/{file}")
}

/// Encode, compress and seal `data` (the file `file` of cluster `system_id`) for storage
/// under [`object_name`].
/// `hash`: the BLAKE3 of `data` (the caller has it already).
pub fn seal(
    repo: &Repository,
    system_id: u64,
    file: &str,
    data: &[u8],
    hash: &blake3::Hash,
) -> Result<Vec<u8>> {
    use std::io::Write;
    let header = WalHeader {
        format: 1,
        name: file.to_string(),
        system_id: system_id.to_string(),
        size: data.len() as u64,
        blake3: hash.to_hex().to_string(),
        archived: jiff::Timestamp::now().to_string(),
        host: crate::host::hostname(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| Error::internal(e.to_string()))?;
    let failed =
        |e: std::io::Error| Error::internal(format!("cannot compress WAL file {file}: {e}"));
    let mut enc = zstd::stream::write::Encoder::new(Vec::with_capacity(data.len() / 4), LEVEL)
        .map_err(failed)?;
    enc.write_all(MAGIC).map_err(failed)?;
    enc.write_all(&(header.len() as u32).to_le_bytes())
        .map_err(failed)?;
    enc.write_all(&header).map_err(failed)?;
    enc.write_all(data).map_err(failed)?;
    let compressed = enc.finish().map_err(failed)?;
    let name = object_name(system_id, file);
    repo.seal(ObjectKind::PgWal, name.as_bytes(), compressed)
}

/// Authenticate, decompress and check stored bytes of `file` of cluster `system_id`.
pub fn open(
    repo: &Repository,
    system_id: u64,
    file: &str,
    stored: Vec<u8>,
) -> Result<(WalHeader, Vec<u8>)> {
    let name = object_name(system_id, file);
    let damaged = |why: String| {
        Error::integrity(format!("WAL file {file} in the repository ({name}) is damaged: {why}"))
            .hint("restore from a replica (`lifeboat sync` copies it back), or see `lifeboat timeline` for the window it breaks")
    };
    let compressed = repo.unseal(ObjectKind::PgWal, name.as_bytes(), stored, &name)?;
    let mut encoded = Vec::new();
    let mut dec =
        zstd::stream::read::Decoder::new(&compressed[..]).map_err(|e| damaged(e.to_string()))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut dec, FILE_MAX + HEADER_MAX as u64),
        &mut encoded,
    )
    .map_err(|e| damaged(e.to_string()))?;
    if encoded.len() < MAGIC.len() + 4 || &encoded[..MAGIC.len()] != MAGIC {
        return Err(damaged("not a Lifeboat WAL object".into()));
    }
    let hlen = u32::from_le_bytes(encoded[8..12].try_into().unwrap_or([0; 4])) as usize;
    if hlen > HEADER_MAX || 12 + hlen > encoded.len() {
        return Err(damaged("bad header length".into()));
    }
    let header: WalHeader =
        serde_json::from_slice(&encoded[12..12 + hlen]).map_err(|e| damaged(e.to_string()))?;
    let data = encoded.split_off(12 + hlen);
    if header.name != file || header.system_id != system_id.to_string() {
        return Err(damaged(format!(
            "it holds {} of cluster {}",
            header.name, header.system_id
        )));
    }
    if header.size != data.len() as u64 || blake3::hash(&data).to_hex().as_str() != header.blake3 {
        return Err(damaged(
            "its bytes do not match their recorded checksum".into(),
        ));
    }
    Ok((header, data))
}

/// Read and check `file` of cluster `system_id`; `None` when the repository does not hold it.
pub fn fetch(
    repo: &Repository,
    storage: &dyn Storage,
    system_id: u64,
    file: &str,
) -> Result<Option<(WalHeader, Vec<u8>)>> {
    let name = object_name(system_id, file);
    match crate::storage::get_if_present(storage, &name, FILE_MAX + (1 << 20))? {
        None => Ok(None),
        Some(stored) => open(repo, system_id, file, stored).map(Some),
    }
}

/// One archived file as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: String,
    pub kind: WalFile,
    pub size: u64,
}

/// The files archived for cluster `system_id`, by name (segments in WAL order within a
/// timeline). Objects whose names are not PostgreSQL's are left out.
pub fn list(storage: &dyn Storage, system_id: u64) -> Result<Vec<Listed>> {
    let prefix = format!("{PREFIX}{system_id}/");
    let mut out: Vec<Listed> = storage
        .list(&prefix)?
        .into_iter()
        .filter_map(|o| {
            let file = o.name.strip_prefix(&prefix)?.to_string();
            let kind = WalFile::parse(&file)?;
            Some(Listed {
                file,
                kind,
                size: o.size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The clusters the archive holds files of.
pub fn systems(storage: &dyn Storage) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = storage
        .list(PREFIX)?
        .into_iter()
        .filter_map(|o| {
            let rest = o.name.strip_prefix(PREFIX)?;
            rest.split_once('/')?.0.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_format() {
        const S: u64 = 16 << 20;
        let f = WalFile::parse("000000020000000100000003").unwrap();
        assert_eq!(
            f,
            WalFile::Segment {
                tli: 2,
                log: 1,
                seg: 3
            }
        );
        assert_eq!(f.segno(S), Some(256 + 3));
        assert_eq!(segment_name(2, 259, S), "000000020000000100000003");
        assert_eq!(segment_name(1, 255, S), "0000000100000000000000FF");
        assert_eq!(segment_name(1, 256, S), "000000010000000100000000");
        assert_eq!(
            WalFile::parse("00000002.history"),
            Some(WalFile::History { tli: 2 })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup"),
            Some(WalFile::Backup {
                tli: 1,
                log: 0,
                seg: 2
            })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000005.partial"),
            Some(WalFile::Partial {
                tli: 1,
                log: 0,
                seg: 5
            })
        );
        for bad in [
            "00000001000000000000000",
            "000000010000000000000002x",
            "0000000100000000000000ab",
            "../00000001.history",
            "0000000G.history",
            "000000010000000000000002.backup",
            "0000000\u{e9}000000000000001",
            "0000000\u{e9}.history",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0200_0028), "1/2000028");
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(segno_of_lsn(0x2000028, S), 2);
    }

    fn fake_segment(tli: u32, segno: u64, sysid: u64, size: u32) -> Vec<u8> {
        let mut d = vec![0u8; size as usize];
        d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        d[2..4].copy_from_slice(&2u16.to_le_bytes());
        d[4..8].copy_from_slice(&tli.to_le_bytes());
        d[8..16].copy_from_slice(&(segno * size as u64).to_le_bytes());
        d[24..32].copy_from_slice(&sysid.to_le_bytes());
        d[32..36].copy_from_slice(&size.to_le_bytes());
        d[36..40].copy_from_slice(&8192u32.to_le_bytes());
        d
    }

    #[test]
    fn segments_are_checked_against_their_names() {
        let size = 1 << 20;
        let seg = fake_segment(1, 5, 42, size);
        let name = segment_name(1, 5, size as u64);
        assert_eq!(check_segment(&name, &seg, Some(42)).unwrap().system_id, 42);
        // Another cluster, another position, another timeline, a short file, zeros.
        assert!(check_segment(&name, &seg, Some(43)).is_err());
        assert!(check_segment(&segment_name(1, 6, size as u64), &seg, None).is_err());
        // A new timeline's first segment starts with its parent's page header; a segment
        // claiming a later timeline than its name is refused.
        assert!(check_segment(&segment_name(2, 5, size as u64), &seg, None).is_ok());
        let later = fake_segment(3, 5, 42, size);
        assert!(check_segment(&segment_name(2, 5, size as u64), &later, None).is_err());
        assert!(check_segment(&name, &seg[..size as usize - 1], None).is_err());
        assert!(check_segment(&name, &vec![0u8; size as usize], None).is_err());
    }
}
