//! The index: which pack and frame hold each blob. Every backup that stores new packs writes
//! one index file listing them (`index/<hash>`); opening a repository reads them all into a
//! compact in-memory map (30-50 bytes per blob, so 9-13 MiB for a 1 GiB database).
//!
//! ```text
//! "LBINDEX1" | zstd( u32 pack count | per pack: [32] pack id, u64 size, frames with blob ids )
//! ```

use crate::error::{Error, Result};
use crate::id::{Hash, HashMapById, Key, KeyMap};
use crate::repo::compress::Codec;
use crate::repo::pack::{decode_frames, encode_frames, BlobKind, FrameEntry, Reader};

pub const INDEX_MAGIC: &[u8; 8] = b"LBINDEX1";

/// A pack as the index knows it.
#[derive(Debug, Clone)]
pub struct PackRef {
    pub id: Hash,
    pub size: u64,
}

/// Where a frame lives.
#[derive(Debug, Clone, Copy)]
pub struct FrameLoc {
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: Codec,
}

/// Where a blob lives: its frame and its byte range in the decompressed frame.
#[derive(Debug, Clone, Copy)]
pub struct BlobLoc {
    pub frame: u32,
    pub offset: u32,
    pub len: u32,
    pub kind: BlobKind,
}

/// A pack and its frames, as written by one backup.
#[derive(Debug, Clone)]
pub struct IndexedPack {
    pub id: Hash,
    pub size: u64,
    pub frames: Vec<FrameEntry>,
}

#[derive(Default)]
pub struct Index {
    pub packs: Vec<PackRef>,
    pub frames: Vec<FrameLoc>,
    blobs: KeyMap<BlobLoc>,
    /// Further copies of blobs stored more than once (two backups racing, a prune's repack,
    /// or an index entry that turns out wrong): read when the first copy fails its check.
    alternates: KeyMap<Vec<BlobLoc>>,
    pack_numbers: HashMapById<u32>,
    /// Digests of the descriptions of each pack: the same description met again (an
    /// interrupted compaction leaves a pack in two files) adds nothing.
    described: HashMapById<Vec<Hash>>,
    /// Index files this index was built from.
    pub files: Vec<Hash>,
    /// Per pack, the index file (in `files`) that first described it.
    pub pack_file: Vec<u32>,
    /// Index files that could not be read (named for warnings; see `repo check`).
    pub damaged: Vec<String>,
    /// Packs (numbers) that a prune plans to delete: readable, but not to be reused.
    pub planned: std::collections::HashSet<u32>,
    /// Packs (numbers) missing or of the wrong size when the index was loaded.
    pub absent: std::collections::HashSet<u32>,
}

impl Index {
    pub fn get(&self, id: &Hash) -> Option<&BlobLoc> {
        self.blobs.get(&id.key())
    }

    pub fn get_key(&self, key: &Key) -> Option<&BlobLoc> {
        self.blobs.get(key)
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.blobs.contains_key(&id.key())
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn blobs(&self) -> impl Iterator<Item = (&Key, &BlobLoc)> {
        self.blobs.iter()
    }

    /// Other places the blob `id` is stored, besides [`Index::get`]'s.
    pub fn alternates(&self, id: &Hash) -> &[BlobLoc] {
        self.alternates
            .get(&id.key())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn pack_of(&self, loc: &BlobLoc) -> &PackRef {
        &self.packs[self.frames[loc.frame as usize].pack as usize]
    }

    /// Add a pack's frames. A blob stored twice (two backups racing) keeps its first place;
    /// the second is kept as an alternate (and is garbage for prune to collect). A pack
    /// described by several index files (the same description twice, or one that is wrong:
    /// damaged, or planted by a backup host) gets the blobs of every description: each blob
    /// is checked against its id when read, so a wrong one can only fail, never hide others.
    pub fn add_pack(&mut self, pack: &IndexedPack) {
        let pack_no = match self.pack_numbers.get(&pack.id) {
            Some(&n) => n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push(PackRef {
                    id: pack.id,
                    size: pack.size,
                });
                self.pack_numbers.insert(pack.id, n);
                n
            }
        };
        let digest = description_digest(pack);
        let seen = self.described.entry(pack.id).or_default();
        if seen.contains(&digest) {
            return;
        }
        seen.push(digest);
        for f in &pack.frames {
            let frame_no = self.frames.len() as u32;
            self.frames.push(FrameLoc {
                pack: pack_no,
                offset: f.offset,
                stored_len: f.stored_len,
                raw_len: f.raw_len,
                codec: f.codec,
            });
            for b in &f.blobs {
                let loc = BlobLoc {
                    frame: frame_no,
                    offset: b.offset,
                    len: b.len,
                    kind: b.kind,
                };
                match self.blobs.entry(b.id) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(loc);
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {
                        self.alternates.entry(b.id).or_default().push(loc);
                    }
                }
            }
        }
    }

    /// Add the packs of one index file.
    pub fn add_file(&mut self, file: Hash, packs: &[IndexedPack]) {
        let file_no = self.files.len() as u32;
        for pack in packs {
            self.add_pack(pack);
        }
        self.pack_file.resize(self.packs.len(), file_no);
        self.files.push(file);
    }

    /// Drop every blob stored in one of `packs` (pack numbers).
    pub fn forget_packs(&mut self, packs: &std::collections::HashSet<u32>) {
        if packs.is_empty() {
            return;
        }
        let frames = &self.frames;
        let gone = |loc: &BlobLoc| packs.contains(&frames[loc.frame as usize].pack);
        self.alternates.retain(|_, alts| {
            alts.retain(|l| !gone(l));
            !alts.is_empty()
        });
        let lost: Vec<Key> = self
            .blobs
            .iter()
            .filter(|(_, loc)| gone(loc))
            .map(|(k, _)| *k)
            .collect();
        for key in lost {
            // Another copy, if any, takes its place (the retain above left no empty list).
            match self.alternates.remove(&key) {
                Some(mut alts) => {
                    self.blobs.insert(key, alts.remove(0));
                    if !alts.is_empty() {
                        self.alternates.insert(key, alts);
                    }
                }
                None => {
                    self.blobs.remove(&key);
                }
            }
        }
    }

    /// Total stored size of the packs known to the index.
    pub fn pack_bytes(&self) -> u64 {
        self.packs.iter().map(|p| p.size).sum()
    }
}

/// A digest of what a description says of its pack (frames, blobs and their keys).
pub fn description_digest(pack: &IndexedPack) -> Hash {
    let mut bytes = pack.id.0.to_vec();
    bytes.extend_from_slice(&pack.size.to_le_bytes());
    encode_frames(&pack.frames, &mut bytes, true);
    Hash::of(&bytes)
}

pub fn encode_index_file(packs: &[IndexedPack]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    body.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        body.extend_from_slice(&p.id.0);
        body.extend_from_slice(&p.size.to_le_bytes());
        encode_frames(&p.frames, &mut body, true);
    }
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(
        &zstd::bulk::compress(&body, 3)
            .map_err(|e| Error::internal(format!("cannot compress index: {e}")))?,
    );
    Ok(out)
}

pub fn decode_index_file(data: &[u8], name: &str) -> Result<Vec<IndexedPack>> {
    let what = format!("index file {name}");
    if data.len() < 8 || &data[..8] != INDEX_MAGIC {
        return Err(Error::integrity(format!("{what} is not an index file")));
    }
    // An index is a few dozen bytes per blob; refuse to inflate past a sane bound.
    let body = zstd::bulk::decompress(&data[8..], 1 << 31)
        .map_err(|e| Error::integrity(format!("{what} does not decompress: {e}")))?;
    let mut r = Reader::new(&body, &what);
    let n = r.u32()? as usize;
    let mut packs = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let id = r.hash()?;
        let size = r.u64()?;
        let frames = decode_frames(&mut r, true)?;
        packs.push(IndexedPack { id, size, frames });
    }
    if !r.is_empty() {
        return Err(Error::integrity(format!("{what} has trailing bytes")));
    }
    Ok(packs)
}

/// The index files under `index/` of `storage`: object name and id (names that are not
/// ids, such as an editor's backup file, are skipped).
pub fn list_index_files(storage: &dyn crate::storage::Storage) -> Result<Vec<(String, Hash)>> {
    Ok(storage
        .list("index/")?
        .into_iter()
        .filter_map(|o| {
            let id = Hash::from_hex(o.name.rsplit('/').next()?).ok()?;
            Some((o.name, id))
        })
        .collect())
}

pub fn index_object_name(id: &Hash) -> String {
    format!("index/{}", id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::BlobEntry;

    /// A one-byte data blob holding `content`, at `offset` in its frame.
    fn blob(content: &[u8], offset: u32) -> BlobEntry {
        BlobEntry {
            id: Hash::of(content).key(),
            kind: BlobKind::Data,
            offset,
            len: 1,
        }
    }

    /// Pack `name` described as one frame holding `blobs`.
    fn described(name: &[u8], blobs: Vec<BlobEntry>) -> IndexedPack {
        IndexedPack {
            id: Hash::of(name),
            size: 100,
            frames: vec![FrameEntry {
                offset: 8,
                stored_len: 10,
                raw_len: 2,
                codec: Codec::Zstd,
                blobs,
            }],
        }
    }

    #[test]
    fn index_file_round_trips_and_first_copy_wins() {
        let pack = |name: &[u8]| described(name, vec![blob(b"a", 0), blob(b"b", 1)]);
        let file = encode_index_file(&[pack(b"p1"), pack(b"p2")]).unwrap();
        let packs = decode_index_file(&file, "x").unwrap();
        assert_eq!(packs.len(), 2);
        let mut index = Index::default();
        for p in &packs {
            index.add_pack(p);
        }
        assert_eq!(index.blob_count(), 2);
        let loc = index.get(&Hash::of(b"b")).unwrap();
        assert_eq!(index.pack_of(loc).id, Hash::of(b"p1"));
        // The second copy is an alternate, and takes over when the first pack is forgotten.
        let alts = index.alternates(&Hash::of(b"b"));
        assert_eq!(alts.len(), 1);
        assert_eq!(index.pack_of(&alts[0]).id, Hash::of(b"p2"));
        index.forget_packs(&[0].into_iter().collect());
        let loc = index.get(&Hash::of(b"b")).unwrap();
        assert_eq!(index.pack_of(loc).id, Hash::of(b"p2"));
        assert!(index.alternates(&Hash::of(b"b")).is_empty());
        assert_eq!(index.blob_count(), 2);
        assert!(decode_index_file(&file[..file.len() - 3], "x").is_err());
    }

    #[test]
    fn a_second_description_of_a_pack_adds_its_blobs_and_a_repeat_adds_nothing() {
        let describe = |blobs| described(b"p", blobs);
        let mut index = Index::default();
        // A description that lists nothing (wrong, or planted) comes first.
        index.add_pack(&describe(vec![]));
        index.add_pack(&describe(vec![blob(b"a", 0), blob(b"b", 1)]));
        index.add_pack(&describe(vec![blob(b"a", 0), blob(b"b", 1)]));
        assert_eq!(index.packs.len(), 1);
        assert_eq!(index.blob_count(), 2);
        assert!(
            index.alternates(&Hash::of(b"a")).is_empty(),
            "the repeat added nothing"
        );
        assert_eq!(index.frames.len(), 2);
    }
}
