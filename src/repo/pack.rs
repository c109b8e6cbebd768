//! Pack files: many compressed frames in one write-once object, with a directory at the end
//! so a pack can be understood (and an index rebuilt) from the pack alone.
//!
//! ```text
//! "LBPACK01" | frame | frame | … | directory | u32 LE directory length | "LBPKDIR1"
//! ```
//! A frame is a group of blobs compressed together (pages compress better in groups than one
//! by one; dedup still works per blob). The directory uses the same encoding as index files.

use crate::error::{Error, IoContext, Result};
use crate::id::Hash;
use crate::repo::compress::Codec;
use crate::storage::local::create_private_file;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const PACK_MAGIC: &[u8; 8] = b"LBPACK01";
pub const DIR_MAGIC: &[u8; 8] = b"LBPKDIR1";

/// What a blob holds. Stored as one byte; new kinds (e.g. a delta against another blob)
/// get new codes, and readers reject codes they do not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// Database content: a page, or later a chunk of a dump stream.
    Data = 0,
    /// A list of blob ids (the page list of a backup, split into chunks).
    List = 1,
}

impl BlobKind {
    pub fn from_code(c: u8) -> Result<BlobKind> {
        match c {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::List),
            _ => Err(Error::integrity(format!(
                "unknown blob kind {c} (written by a newer lifeboat?)"
            ))),
        }
    }
}

/// One blob's place inside the decompressed bytes of its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: Hash,
    pub kind: BlobKind,
    pub offset: u32,
    pub len: u32,
}

/// One frame's place inside its pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEntry {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
    pub blobs: Vec<BlobEntry>,
}

pub fn encode_frames(frames: &[FrameEntry], out: &mut Vec<u8>) {
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&f.offset.to_le_bytes());
        out.extend_from_slice(&f.stored_len.to_le_bytes());
        out.extend_from_slice(&f.raw_len.to_le_bytes());
        out.push(f.codec.code());
        out.extend_from_slice(&(f.blobs.len() as u32).to_le_bytes());
        for b in &f.blobs {
            out.extend_from_slice(&b.id.0);
            out.push(b.kind as u8);
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.len.to_le_bytes());
        }
    }
}

/// A bounds-checked little-endian reader: directories come from storage, so every length is
/// untrusted and a short buffer is an integrity error, not a panic.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'a str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'a str) -> Self {
        Reader { buf, what }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::integrity(format!("{} is truncated", self.what)));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn hash(&mut self) -> Result<Hash> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(Hash(a))
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

pub fn decode_frames(r: &mut Reader) -> Result<Vec<FrameEntry>> {
    let n = r.u32()? as usize;
    let mut frames = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let offset = r.u64()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let codec = Codec::from_code(r.u8()?)?;
        let count = r.u32()? as usize;
        let mut blobs = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let id = r.hash()?;
            let kind = BlobKind::from_code(r.u8()?)?;
            let offset = r.u32()?;
            let len = r.u32()?;
            if u64::from(offset) + u64::from(len) > u64::from(raw_len) {
                return Err(Error::integrity(format!(
                    "blob {} lies outside its frame",
                    id.short()
                )));
            }
            blobs.push(BlobEntry {
                id,
                kind,
                offset,
                len,
            });
        }
        frames.push(FrameEntry {
            offset,
            stored_len,
            raw_len,
            codec,
            blobs,
        });
    }
    Ok(frames)
}

/// A pack being written to a local staging file. The pack's name is the BLAKE3 hash of its
/// bytes, computed as they are written so the file is never read twice.
pub struct PackWriter {
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
    frames: Vec<FrameEntry>,
}

/// A finished pack, staged locally and ready to be stored under `data/<id>`.
pub struct FinishedPack {
    pub id: Hash,
    pub size: u64,
    pub staged: PathBuf,
    pub frames: Vec<FrameEntry>,
}

pub fn pack_object_name(id: &Hash) -> String {
    let hex = id.to_hex();
    format!("data/{}/{}", &hex[..2], hex)
}

impl PackWriter {
    pub fn create(staging_dir: &Path) -> Result<PackWriter> {
        let path = staging_dir.join(format!("pack-{:016x}.tmp", rand::random::<u64>()));
        let file = create_private_file(&path)?;
        let mut w = PackWriter {
            file,
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
            frames: Vec::new(),
        };
        w.write(PACK_MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).ctx("cannot write", &self.path)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Append one compressed frame; `blobs` give each blob's place in the raw frame.
    pub fn add_frame(
        &mut self,
        stored: &[u8],
        raw_len: u32,
        codec: Codec,
        blobs: Vec<BlobEntry>,
    ) -> Result<()> {
        let offset = self.len;
        self.write(stored)?;
        self.frames.push(FrameEntry {
            offset,
            stored_len: stored.len() as u32,
            raw_len,
            codec,
            blobs,
        });
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn finish(mut self) -> Result<FinishedPack> {
        let mut dir = Vec::new();
        encode_frames(&self.frames, &mut dir);
        let dir_len = dir.len() as u32;
        dir.extend_from_slice(&dir_len.to_le_bytes());
        dir.extend_from_slice(DIR_MAGIC);
        self.write(&dir)?;
        self.file.sync_all().ctx("cannot sync", &self.path)?;
        Ok(FinishedPack {
            id: Hash(*self.hasher.finalize().as_bytes()),
            size: self.len,
            staged: self.path,
            frames: self.frames,
        })
    }

    /// Remove the staging file of a pack that will not be finished.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parse the directory at the end of a whole pack held in memory.
pub fn read_directory(pack: &[u8], name: &str) -> Result<Vec<FrameEntry>> {
    let what = format!("pack {name}");
    let bad = || Error::integrity(format!("{what} has no valid directory (truncated?)"));
    if pack.len() < PACK_MAGIC.len() + 12 || &pack[..8] != PACK_MAGIC {
        return Err(bad());
    }
    let tail = &pack[pack.len() - 12..];
    if &tail[4..] != DIR_MAGIC {
        return Err(bad());
    }
    let dir_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    let end = pack.len() - 12;
    if dir_len > end - 8 {
        return Err(bad());
    }
    let mut r = Reader::new(&pack[end - dir_len..end], &what);
    let frames = decode_frames(&mut r)?;
    if !r.is_empty() {
        return Err(bad());
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_frames() -> impl Strategy<Value = Vec<FrameEntry>> {
        proptest::collection::vec(
            (
                any::<u64>(),
                any::<u32>(),
                0u8..4,
                proptest::collection::vec((any::<[u8; 32]>(), 0u8..2, 0u32..1000), 0..5),
            )
                .prop_map(|(offset, stored_len, codec, blobs)| FrameEntry {
                    offset,
                    stored_len,
                    raw_len: 2000,
                    codec: Codec::from_code(codec).unwrap(),
                    blobs: blobs
                        .into_iter()
                        .map(|(id, kind, off)| BlobEntry {
                            id: Hash(id),
                            kind: BlobKind::from_code(kind).unwrap(),
                            offset: off,
                            len: 1000,
                        })
                        .collect(),
                }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn directory_round_trips(frames in arb_frames()) {
            let mut buf = Vec::new();
            encode_frames(&frames, &mut buf);
            let mut r = Reader::new(&buf, "test");
            prop_assert_eq!(decode_frames(&mut r).unwrap(), frames);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn truncated_directories_are_errors_not_panics(frames in arb_frames(), cut in 0usize..200) {
            let mut buf = Vec::new();
            encode_frames(&frames, &mut buf);
            if cut < buf.len() {
                buf.truncate(cut);
                let mut r = Reader::new(&buf, "test");
                prop_assert!(decode_frames(&mut r).is_err());
            }
        }
    }

    #[test]
    fn written_pack_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let blob = BlobEntry {
            id: Hash::of(b"abc"),
            kind: BlobKind::Data,
            offset: 0,
            len: 3,
        };
        w.add_frame(b"abc", 3, Codec::None, vec![blob.clone()])
            .unwrap();
        let p = w.finish().unwrap();
        let bytes = std::fs::read(&p.staged).unwrap();
        assert_eq!(Hash::of(&bytes), p.id);
        let frames = read_directory(&bytes, "t").unwrap();
        assert_eq!(frames[0].blobs, vec![blob]);
        assert!(read_directory(&bytes[..bytes.len() - 1], "t").is_err());
    }
}
