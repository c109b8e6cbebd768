//! The replica list: which targets hold copies of this repository. A repository record,
//! stored as versioned objects `replicas/<ms>-<rand>` (write-once even for a setting), sealed
//! like every record so that nobody without the keys can redirect backups.

use crate::error::{Error, ErrorKind, Result};
use crate::repo::records::Records;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};

/// The replica list, stored in the primary as versioned objects `replicas/<time>-<rand>`;
/// the newest version wins (write-once even for settings).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaList {
    pub replicas: Vec<String>,
}

/// The newest authentic version of the replica list, and its object name. Versions that are
/// not authentic (planted to send backups elsewhere) are skipped with a warning.
pub fn read_replicas(
    storage: &dyn Storage,
    records: &Records,
) -> Result<(ReplicaList, Option<String>)> {
    let mut versions = storage.list("replicas/")?;
    // Newest first, by the time in the name (as a number: a planted name of another width
    // must not sort past the real ones).
    versions.sort_by(|a, b| (version_ms(&b.name), &b.name).cmp(&(version_ms(&a.name), &a.name)));
    // A version dated far ahead (a key holder's, to win over every later change) is ignored.
    let latest = jiff::Timestamp::now().as_millisecond() + 24 * 3600 * 1000;
    for v in versions {
        if version_ms(&v.name).is_some_and(|ms| ms > latest) {
            tracing::warn!("ignored {}: dated more than a day ahead", v.name);
            continue;
        }
        let Some(data) = crate::repo::records::fetch(storage, &v.name)? else {
            continue;
        };
        match records.decode::<ReplicaList>(&v.name, &data) {
            Ok(list) => return Ok((list, Some(v.name))),
            Err(e) if e.kind == ErrorKind::Trust => tracing::warn!("ignored {}: {e}", v.name),
            Err(e) => {
                return Err(Error::integrity(format!("{} is unreadable: {e}", v.name))
                    .hint("delete it; the version before it then counts"))
            }
        }
    }
    Ok((ReplicaList::default(), None))
}

/// The milliseconds in a replica list version's name (`replicas/<ms>-<rand>`).
pub fn version_ms(name: &str) -> Option<i64> {
    name.rsplit('/').next()?.split('-').next()?.parse().ok()
}

/// Store a new version of the replica list; returns its object name.
pub fn write_replicas(
    storage: &dyn Storage,
    records: &Records,
    list: &ReplicaList,
) -> Result<String> {
    // Named after the newest authentic version, whatever its time says: this one must win.
    let newest_ms = read_replicas(storage, records)?
        .1
        .as_deref()
        .and_then(version_ms)
        .unwrap_or(0);
    let name = format!(
        "replicas/{:016}-{:08x}",
        jiff::Timestamp::now()
            .as_millisecond()
            .max(newest_ms.saturating_add(1)),
        rand::random::<u32>()
    );
    storage.put_new(&name, &records.encode(&name, list)?)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[test]
    fn replica_lists_dated_far_ahead_win_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = Records::sealed(std::sync::Arc::new(
            crate::repo::crypto::MasterKeys::generate(),
        ));
        // An authentic list (a key holder's) named at the end of time.
        let planted = format!("replicas/{}-00000000", i64::MAX);
        let evil = ReplicaList {
            replicas: vec!["s3://elsewhere/x".into()],
        };
        s.put_new(&planted, &r.encode(&planted, &evil).unwrap())
            .unwrap();
        assert_eq!(read_replicas(&s, &r).unwrap().0.replicas.len(), 0);
        let mine = ReplicaList {
            replicas: vec!["/backup/replica".into()],
        };
        write_replicas(&s, &r, &mine).unwrap();
        assert_eq!(read_replicas(&s, &r).unwrap().0.replicas, mine.replicas);
    }
}
