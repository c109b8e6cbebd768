//! Reading a live SQLite `-wal` file: its header, and the frames of the transactions
//! committed after a known position, checked the way SQLite checks them (salts, and the
//! running checksum over every frame since the header).
//!
//! Written by hand: no crate reads a WAL that another process is appending to. The format:
//! <https://www.sqlite.org/fileformat2.html#walformat>. A frame is valid when its salts equal
//! the header's and its checksum continues the chain; frames after the last valid commit
//! frame (a transaction being written, or an older generation's leftovers) are not read.

use crate::error::{Error, IoContext, Result};
use crate::repo::segment::WalPos;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER_LEN: u64 = 32;
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub page_size: u32,
    pub ckpt_seq: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub cksum: [u32; 2],
    /// Checksums are computed over big-endian words.
    pub big_endian: bool,
}

impl WalHeader {
    /// The position of the first frame of this generation.
    pub fn start(&self) -> WalPos {
        WalPos {
            salt1: self.salt1,
            salt2: self.salt2,
            ckpt_seq: self.ckpt_seq,
            offset: HEADER_LEN,
            cksum: self.cksum,
        }
    }

    pub fn same_generation(&self, pos: &WalPos) -> bool {
        self.salt1 == pos.salt1 && self.salt2 == pos.salt2 && self.ckpt_seq == pos.ckpt_seq
    }

    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.page_size)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// SQLite's WAL checksum: over 32-bit words taken in pairs, continuing from `s`.
pub fn checksum(big_endian: bool, mut s: [u32; 2], data: &[u8]) -> [u32; 2] {
    for pair in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(pair, 0), be32(pair, 4))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s[0] = s[0].wrapping_add(x0).wrapping_add(s[1]);
        s[1] = s[1].wrapping_add(x1).wrapping_add(s[0]);
    }
    s
}

/// Parse a WAL header; None when it is not a valid one (a file being created or truncated).
pub fn parse_header(b: &[u8]) -> Option<WalHeader> {
    if b.len() < HEADER_LEN as usize {
        return None;
    }
    let magic = be32(b, 0);
    let big_endian = match magic {
        MAGIC_BE => true,
        MAGIC_LE => false,
        _ => return None,
    };
    if be32(b, 4) != 3_007_000 {
        return None;
    }
    let page_size = be32(b, 8);
    let page_size = if page_size == 1 { 65536 } else { page_size };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let cksum = [be32(b, 24), be32(b, 28)];
    if checksum(big_endian, [0, 0], &b[..24]) != cksum {
        return None;
    }
    Some(WalHeader {
        page_size,
        ckpt_seq: be32(b, 12),
        salt1: be32(b, 16),
        salt2: be32(b, 20),
        cksum,
        big_endian,
    })
}

/// A transaction found in the WAL: its frames are `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundCommit {
    pub start: u64,
    pub end: u64,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    /// The running checksum after its commit frame.
    pub cksum: [u32; 2],
}

/// What a scan found.
#[derive(Debug)]
pub enum Scan {
    /// The same generation: the transactions committed after the position (maybe none), and
    /// the position after the last of them.
    Continues {
        commits: Vec<FoundCommit>,
        end: WalPos,
    },
    /// The WAL was restarted (or truncated and begun again): a new header.
    Restarted(WalHeader),
    /// No valid header (empty, or being rewritten): nothing to read now.
    NoHeader,
}

/// The `-wal` file of a database, read through its own descriptor (the `-wal` file holds no
/// POSIX locks, so opening and closing it cannot disturb SQLite's).
pub struct WalFile {
    path: PathBuf,
    file: Option<File>,
}

pub fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

impl WalFile {
    pub fn new(db: &Path) -> WalFile {
        WalFile {
            path: wal_path(db),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (opened on first use; a missing file is None).
    fn file(&mut self) -> Result<Option<&File>> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io("cannot open", &self.path, e)),
            }
        }
        Ok(self.file.as_ref())
    }

    pub fn size(&mut self) -> Result<u64> {
        let path = self.path.clone();
        match self.file()? {
            Some(f) => Ok(f.metadata().ctx("cannot stat", &path)?.len()),
            None => Ok(0),
        }
    }

    pub fn header(&mut self) -> Result<Option<WalHeader>> {
        let path = self.path.clone();
        let Some(f) = self.file()? else {
            return Ok(None);
        };
        let mut b = [0u8; HEADER_LEN as usize];
        let n = read_at_most(f, &mut b, 0).ctx("cannot read", &path)?;
        Ok(parse_header(&b[..n]))
    }

    /// The transactions committed after `pos`, up to frame `max_frame` (1-based): the last
    /// one SQLite's WAL index shows committed. A commit frame can be in the file before its
    /// transaction is committed (SQLite syncs the file, then publishes the frame in the
    /// index; a failed sync leaves it there, to be overwritten), so frames past the index are
    /// never taken.
    pub fn scan(&mut self, pos: &WalPos, max_frame: u32) -> Result<Scan> {
        let Some(h) = self.header()? else {
            return Ok(Scan::NoHeader);
        };
        if !h.same_generation(pos) {
            return Ok(Scan::Restarted(h));
        }
        let path = self.path.clone();
        let Some(f) = self.file()? else {
            return Ok(Scan::NoHeader);
        };
        let frame_len = h.frame_len() as usize;
        // Reads of up to 64 frames at a time.
        let per_read = 64usize;
        let mut buf = vec![0u8; frame_len * per_read];
        let mut at = pos.offset;
        let mut cksum = pos.cksum;
        let mut commits = Vec::new();
        let mut txn_start = at;
        let mut end = *pos;
        'outer: loop {
            let n = read_at_most(f, &mut buf, at).ctx("cannot read", &path)?;
            let whole = n / frame_len;
            if whole == 0 {
                break;
            }
            for frame in buf[..whole * frame_len].chunks_exact(frame_len) {
                if (at - HEADER_LEN) / frame_len as u64 >= u64::from(max_frame) {
                    break 'outer;
                }
                let pgno = be32(frame, 0);
                let commit = be32(frame, 4);
                if be32(frame, 8) != h.salt1 || be32(frame, 12) != h.salt2 || pgno == 0 {
                    break 'outer;
                }
                let c = checksum(h.big_endian, cksum, &frame[..8]);
                let c = checksum(h.big_endian, c, &frame[FRAME_HEADER_LEN as usize..]);
                if c != [be32(frame, 16), be32(frame, 20)] {
                    break 'outer;
                }
                cksum = c;
                at += frame_len as u64;
                if commit != 0 {
                    commits.push(FoundCommit {
                        start: txn_start,
                        end: at,
                        db_pages: commit,
                        cksum,
                    });
                    txn_start = at;
                    end = WalPos {
                        offset: at,
                        cksum,
                        ..*pos
                    };
                }
            }
            if whole < per_read {
                break;
            }
        }
        Ok(Scan::Continues { commits, end })
    }

    /// Whether the file still holds the frames up to `pos`: the same generation, and the frame
    /// ending at `pos` carries the checksum recorded there. (After a restart of Lifeboat.)
    pub fn holds(&mut self, pos: &WalPos) -> Result<bool> {
        let Some(h) = self.header()? else {
            return Ok(false);
        };
        if !h.same_generation(pos) {
            return Ok(false);
        }
        if pos.offset == HEADER_LEN {
            return Ok(h.cksum == pos.cksum);
        }
        let frame_len = h.frame_len();
        if pos.offset < HEADER_LEN + frame_len || (pos.offset - HEADER_LEN) % frame_len != 0 {
            return Ok(false);
        }
        let path = self.path.clone();
        let Some(f) = self.file()? else {
            return Ok(false);
        };
        let mut b = [0u8; FRAME_HEADER_LEN as usize];
        let n = read_at_most(f, &mut b, pos.offset - frame_len).ctx("cannot read", &path)?;
        Ok(n == b.len()
            && be32(&b, 8) == h.salt1
            && be32(&b, 12) == h.salt2
            && [be32(&b, 16), be32(&b, 20)] == pos.cksum)
    }

    /// The frames of `[start, end)` (read again after a scan found them valid): `f(page
    /// number, page)` for each, in order, read `batch` frames at a time.
    pub fn read_frames(
        &mut self,
        page_size: u32,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(u32, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let file = self
            .file()?
            .ok_or_else(|| Error::source(format!("{} disappeared", path.display())))?;
        let frame_len = FRAME_HEADER_LEN as usize + page_size as usize;
        let mut buf = vec![0u8; frame_len * 64];
        let mut at = start;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = read_at_most(file, &mut buf[..want], at).ctx("cannot read", &path)?;
            if n < want {
                return Err(Error::source(format!(
                    "{} was truncated while its frames were read",
                    path.display()
                )));
            }
            for frame in buf[..want].chunks_exact(frame_len) {
                f(be32(frame, 0), &frame[FRAME_HEADER_LEN as usize..])?;
            }
            at += want as u64;
        }
        Ok(())
    }
}

fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn db_in_wal_mode(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        (path, conn)
    }

    #[test]
    fn commits_are_found_after_a_position_and_only_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = db_in_wal_mode(dir.path());
        let mut wal = WalFile::new(&path);
        let h = wal.header().unwrap().unwrap();
        let Scan::Continues { commits, end } = wal.scan(&h.start(), u32::MAX).unwrap() else {
            panic!("not continuing")
        };
        assert_eq!(commits.len(), 1, "CREATE TABLE");
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        let Scan::Continues { commits, end: end2 } = wal.scan(&end, u32::MAX).unwrap() else {
            panic!("not continuing")
        };
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].start, end.offset);
        // Only as far as the index shows committed.
        let first_end = ((commits[0].end - HEADER_LEN) / h.frame_len()) as u32;
        let Scan::Continues {
            commits: capped, ..
        } = wal.scan(&end, first_end).unwrap()
        else {
            panic!("not continuing")
        };
        assert_eq!(capped, commits[..1]);
        assert_eq!(end2.offset, wal.size().unwrap());
        // A torn last frame (a transaction being written) is not read.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(wal.path())
            .unwrap();
        f.set_len(end2.offset - 100).unwrap();
        let Scan::Continues { commits, .. } = wal.scan(&end, u32::MAX).unwrap() else {
            panic!("not continuing")
        };
        assert_eq!(commits.len(), 1);
        // A flipped byte in the first frame after the position breaks the chain there.
        let mut b = [0u8; 1];
        f.read_at(&mut b, end.offset + 30).unwrap();
        f.write_at(&[b[0] ^ 1], end.offset + 30).unwrap();
        let Scan::Continues { commits, .. } = wal.scan(&end, u32::MAX).unwrap() else {
            panic!("not continuing")
        };
        assert!(commits.is_empty());
        assert!(wal.holds(&end).unwrap());
        let mut moved = end;
        moved.cksum[0] ^= 1;
        assert!(!wal.holds(&moved).unwrap());
    }

    #[test]
    fn a_restarted_wal_is_seen_as_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = db_in_wal_mode(dir.path());
        let mut wal = WalFile::new(&path);
        let h = wal.header().unwrap().unwrap();
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        match wal.scan(&h.start(), u32::MAX).unwrap() {
            Scan::Restarted(h2) => {
                assert_eq!(h2.salt1, h.salt1.wrapping_add(1));
                assert_eq!(h2.ckpt_seq, h.ckpt_seq + 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
