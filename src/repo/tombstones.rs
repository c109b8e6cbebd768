//! What a repository lacks on purpose, so that `sync` does not copy it back: a replica
//! with its own retention policy forgets backups and prunes packs that the primary still has.
//!
//! - `forgotten/<id>`: `{"backups": [backup ids]}`, written by `forget` before it deletes
//!   the manifests.
//! - `dropped/<id>`: `{"packs": [pack ids]}`, written by `prune` before it deletes packs,
//!   and by `sync` for packs it did not copy because the target holds all their blobs.
//!   Also `{"segments_below": {stream: seq}}`, written by `forget` and `prune` before they
//!   delete continuous-replication segments: the stream's segments numbered below `seq` are
//!   gone on purpose (retention only ever removes the start of a stream).
//!
//! Sync still copies a dropped pack when a backup it copies needs a blob only that pack
//! holds; tombstones save work, they never decide what a backup can rely on.

use crate::error::Result;
use crate::repo::records::Records;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const FORGOTTEN: &str = "forgotten/";
const DROPPED: &str = "dropped/";
/// More records than this of one kind are merged into one by `prune`.
const MERGE_WHEN: usize = 16;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tombstones {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub backups: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub packs: BTreeSet<String>,
    /// Per stream: its segments numbered below this were removed on purpose.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segments_below: BTreeMap<String, u64>,
}

impl Tombstones {
    fn absorb(&mut self, t: Tombstones) {
        self.backups.extend(t.backups);
        self.packs.extend(t.packs);
        for (stream, seq) in t.segments_below {
            let floor = self.segments_below.entry(stream).or_insert(0);
            *floor = (*floor).max(seq);
        }
    }

    /// Whether segment `seq` of `stream` was removed here on purpose.
    pub fn segment_dropped(&self, stream: &str, seq: u64) -> bool {
        self.segments_below.get(stream).is_some_and(|&f| seq < f)
    }
}

/// Every authentic tombstone of the repository at `storage`.
pub fn read(storage: &dyn Storage, records: &Records) -> Result<Tombstones> {
    let mut all = Tombstones::default();
    for prefix in [FORGOTTEN, DROPPED] {
        for (_, t) in read_prefix(storage, records, prefix)? {
            all.absorb(t);
        }
    }
    Ok(all)
}

/// A tombstone that is not authentic is ignored (a planted one would keep backups from
/// being copied to a replica).
fn read_prefix(
    storage: &dyn Storage,
    records: &Records,
    prefix: &str,
) -> Result<Vec<(String, Tombstones)>> {
    records.read_all(
        storage,
        prefix,
        "delete it: at worst sync copies some forgotten data back once",
    )
}

fn write(storage: &dyn Storage, records: &Records, prefix: &str, t: &Tombstones) -> Result<()> {
    let now = jiff::Timestamp::now();
    let name = format!(
        "{prefix}{}",
        crate::id::new_backup_id(now.as_millisecond().max(0) as u64)
    );
    storage.put_replace(&name, &records.encode(&name, t)?)
}

pub fn record_forgotten(storage: &dyn Storage, records: &Records, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let t = Tombstones {
        backups: ids.iter().cloned().collect(),
        ..Default::default()
    };
    write(storage, records, FORGOTTEN, &t)
}

pub fn record_dropped(storage: &dyn Storage, records: &Records, packs: &[String]) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let t = Tombstones {
        packs: packs.iter().cloned().collect(),
        ..Default::default()
    };
    write(storage, records, DROPPED, &t)
}

/// Record that the segments of each stream numbered below its value were removed on purpose
/// (written before they are deleted, so that a sync does not copy them back).
pub fn record_segments_dropped(
    storage: &dyn Storage,
    records: &Records,
    below: &BTreeMap<String, u64>,
) -> Result<()> {
    if below.is_empty() {
        return Ok(());
    }
    let t = Tombstones {
        segments_below: below.clone(),
        ..Default::default()
    };
    write(storage, records, DROPPED, &t)
}

/// Merge many small records into one per kind (written first, then the old ones deleted).
/// Returns how many records were merged away.
pub fn merge(storage: &dyn Storage, records: &Records) -> Result<usize> {
    let mut merged = 0;
    for prefix in [FORGOTTEN, DROPPED] {
        let found = read_prefix(storage, records, prefix)?;
        if found.len() <= MERGE_WHEN {
            continue;
        }
        let mut all = Tombstones::default();
        for (_, t) in found.iter() {
            all.absorb(t.clone());
        }
        write(storage, records, prefix, &all)?;
        for (name, _) in found {
            storage.delete(&name)?;
            merged += 1;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[test]
    fn records_accumulate_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = Records::sealed(std::sync::Arc::new(
            crate::repo::crypto::MasterKeys::generate(),
        ));
        for i in 0..20 {
            record_forgotten(&s, &r, &[format!("b{i}")]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        record_dropped(&s, &r, &["ab".into()]).unwrap();
        let below = |seq| BTreeMap::from([("01m8axc18gnpx3".to_string(), seq)]);
        record_segments_dropped(&s, &r, &below(7)).unwrap();
        record_segments_dropped(&s, &r, &below(3)).unwrap();
        // A tombstone planted without the keys is ignored.
        record_forgotten(&s, &Records::plain(), &["genuine-backup".into()]).unwrap();
        let t = read(&s, &r).unwrap();
        assert_eq!(t.backups.len(), 20);
        assert!(!t.backups.contains("genuine-backup"));
        assert!(t.packs.contains("ab"));
        // Floors merge by the highest: the older record's removal still holds.
        assert!(t.segment_dropped("01m8axc18gnpx3", 6));
        assert!(!t.segment_dropped("01m8axc18gnpx3", 7));
        assert!(!t.segment_dropped("01m8axc18gnpx4", 0));
        assert_eq!(merge(&s, &r).unwrap(), 20);
        assert_eq!(read(&s, &r).unwrap().backups.len(), 20);
        for _ in 0..17 {
            record_segments_dropped(&s, &r, &below(1)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        merge(&s, &r).unwrap();
        assert!(read(&s, &r).unwrap().segment_dropped("01m8axc18gnpx3", 6));
    }
}
