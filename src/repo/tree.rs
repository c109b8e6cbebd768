//! Trees (content kind `tree`): files and folders as *tree blobs*, each a JSON document
//! `{"entries": [...]}` of entries in path order, stored as list blobs (they name the chunk
//! blobs of their files). A tree blob ends after an entry whose path hashes to 0 mod
//! `NODE_CUT` (or at `NODE_MAX_ENTRIES`), so the cut points depend on the paths alone: a file
//! added, removed or changed rewrites the one tree blob holding it, and an unchanged tree
//! stores nothing new.

use crate::error::{Error, Result};
use crate::id::Hash;
use serde::{Deserialize, Serialize};

/// One entry in 64, on average, ends a tree blob.
const NODE_CUT: u64 = 64;
/// A tree blob never holds more entries than this (each is ~200 bytes, plus its chunk ids).
const NODE_MAX_ENTRIES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// A file, folder or symbolic link of a tree. Unknown fields are refused: a newer Lifeboat
/// that adds one referring to blobs must not have this one prune them (the tree blob then
/// reads as unreadable, which stops prune).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeEntry {
    /// Relative to the tree's root, `/`-separated; `""` is the root itself (a backup of a
    /// single file has only that entry). A name that is not UTF-8 is in `path_hex` (raw
    /// bytes) and `path` holds a lossy spelling for messages.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default)]
    pub size: u64,
    /// A symbolic link's target (raw bytes in `target_hex` when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    /// A file's content: chunk ids, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
}

impl TreeEntry {
    /// The path as raw bytes.
    pub fn path_bytes(&self) -> Result<Vec<u8>> {
        decode_name(&self.path, self.path_hex.as_deref())
    }

    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.target {
            Some(t) => decode_name(t, self.target_hex.as_deref()).map(Some),
            None => Ok(None),
        }
    }

    pub fn chunk_ids(&self) -> Result<Vec<Hash>> {
        self.chunks.iter().map(|h| Hash::from_hex(h)).collect()
    }
}

/// `(text, hex)` for a name: the text when it is UTF-8, else a lossy text and the raw bytes.
pub fn encode_name(raw: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(raw) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(raw).into_owned(),
            Some(hex::encode(raw)),
        ),
    }
}

fn decode_name(text: &str, hex: Option<&str>) -> Result<Vec<u8>> {
    match hex {
        Some(h) => hex::decode(h)
            .map_err(|_| Error::integrity(format!("tree entry '{text}' has a malformed name"))),
        None => Ok(text.as_bytes().to_vec()),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Node {
    entries: Vec<TreeEntry>,
}

/// A file of at least this many chunks has a tree blob of its own: its long list of chunk
/// ids is not stored again when a small file beside it changes (a dump's `toc.dat` changes
/// every time; its tables mostly do not).
pub const NODE_ALONE_CHUNKS: usize = 16;

/// Whether a tree blob ends after the entry with this path.
pub fn ends_node(path: &[u8], entries_in_node: usize) -> bool {
    if entries_in_node >= NODE_MAX_ENTRIES {
        return true;
    }
    let h = blake3::hash(path);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first) % NODE_CUT == 0
}

pub fn encode_node(entries: &[TreeEntry]) -> Result<Vec<u8>> {
    serde_json::to_vec(&Node {
        entries: entries.to_vec(),
    })
    .map_err(|e| Error::internal(format!("cannot encode a tree blob: {e}")))
}

pub fn decode_node(data: &[u8], id: &Hash) -> Result<Vec<TreeEntry>> {
    serde_json::from_slice::<Node>(data)
        .map(|n| n.entries)
        .map_err(|e| Error::integrity(format!("tree blob {} is malformed: {e}", id.short())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_round_trip() {
        let raw = b"caf\xe9\nname".to_vec();
        let (text, hex) = encode_name(&raw);
        assert!(hex.is_some());
        let e = TreeEntry {
            path: text,
            path_hex: hex,
            kind: EntryKind::File,
            mode: 0o600,
            mtime_ns: 1,
            size: 0,
            target: None,
            target_hex: None,
            chunks: vec![],
        };
        let data = encode_node(std::slice::from_ref(&e)).unwrap();
        let back = decode_node(&data, &Hash([0; 32])).unwrap();
        assert_eq!(back[0].path_bytes().unwrap(), raw);
        assert_eq!(encode_name("ünï\ncode".as_bytes()).1, None);
    }

    #[test]
    fn fields_of_a_newer_lifeboat_are_refused() {
        let newer = br#"{"entries": [{"path": "a", "kind": "file", "mode": 420, "mtime_ns": 0, "extents": ["ab"]}]}"#;
        assert!(decode_node(newer, &Hash([0; 32])).is_err());
        let newer = br#"{"entries": [], "overflow": ["ab"]}"#;
        assert!(decode_node(newer, &Hash([0; 32])).is_err());
    }

    #[test]
    fn cut_points_depend_on_the_path_alone() {
        let cuts: Vec<bool> = (0..4096)
            .map(|i| ends_node(format!("etc/file-{i}").as_bytes(), 1))
            .collect();
        let n = cuts.iter().filter(|c| **c).count();
        assert!((20..150).contains(&n), "{n} cuts in 4096 entries");
        assert!(ends_node(b"x", NODE_MAX_ENTRIES));
    }
}
