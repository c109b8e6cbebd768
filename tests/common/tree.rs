//! Folders as the tests compare them: everything a files backup must put back.

use super::sha256_file;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Everything a restore must put back, per relative path (as raw bytes): kind, permission
/// bits, modification time (ns), and the content's SHA-256 or the link's target.
pub fn listing(root: &Path) -> BTreeMap<Vec<u8>, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .as_os_str()
                .as_bytes()
                .to_vec();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            let what = if meta.file_type().is_symlink() {
                format!("link -> {:?}", std::fs::read_link(&p).expect("readlink"))
            } else if meta.is_dir() {
                walk(root, &p, out);
                format!("dir {:o} {}", meta.mode() & 0o7777, mtime_ns(&meta))
            } else {
                format!(
                    "file {:o} {} {} {}",
                    meta.mode() & 0o7777,
                    mtime_ns(&meta),
                    meta.len(),
                    sha256_file(&p)
                )
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}
