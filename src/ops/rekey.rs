//! `key rotate --full`: replace the root keys (and with them the id key, the data key, the
//! write-only PSK and the config's MAC key), for when a passphrase or key file may be in the
//! wrong hands. Old data stays readable through the new keys (`keys/past-<epoch>`); whoever
//! holds a retired key can neither read what is written from now on nor write anything the
//! repository accepts: manifests, index files and records are re-sealed under the new keys
//! and accepted only under them.
//!
//! What is re-sealed is decided before anything changes, and only by the keys being
//! retired: the *inventory* (names and content hashes) of every manifest, index file and
//! record sealed under the current epoch. An object of an older epoch was refused before
//! the rotation and stays refused (whoever held an older retired key may have written it);
//! one written while the rotation runs is not in the inventory. The inventory is sealed
//! under the new keys (`keys/inventory-<epoch>`) before the config names them.
//!
//! Crash-safe in two commits of the config: (1) the new keys, with `rekeying` set; (2) after
//! the inventory is re-sealed, `rekeying` cleared. Interrupted, the next `key rotate --full`
//! rotates once more, from there, re-sealing what the interrupted one had in its inventory
//! and had not re-sealed yet (unchanged since, by content hash) besides what its own epoch
//! sealed. It never trusts `rekeying` to resume: whoever holds the keys being revoked could
//! have set it. It runs alone: it holds the prune lock and refuses while a backup or sync
//! runs.
//!
//! Not rewritten: packs. Their frames stay sealed under the old data keys, which a retired
//! key can open; forget and prune the old backups to remove that data. New blob ids use the
//! new id key, so the next backup of each database stores it in full once.

use crate::error::{Error, Result};
use crate::id::Hash;
use crate::repo::crypto::{KdfParams, MasterKeys, ObjectKind};
use crate::repo::index::index_object_name;
use crate::repo::records::Records;
use crate::repo::{keys, locks, Repository};
use crate::secret::Passphrase;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
pub struct RekeyReport {
    pub epoch: u32,
    /// An interrupted rotation was found (and is superseded by this one).
    pub resumed: bool,
    pub manifests: usize,
    pub index_files: usize,
    pub records: usize,
    /// Manifests left as they were (so refused from now on): they did not open under the
    /// keys being retired (forged, damaged, or sealed by an older retired key), changed
    /// since the rotation began, or, re-keying a replica, only the replica held them.
    pub left_out: Vec<String>,
    /// Key files removed: they opened only the retired keys.
    pub key_files_removed: Vec<String>,
    pub key_id: String,
}

const RECORD_PREFIXES: [&str; 6] = [
    "pins/",
    "verified/",
    "forgotten/",
    "dropped/",
    "replicas/",
    "plans/",
];

const INVENTORY_PREFIX: &str = "keys/inventory-";

fn inventory_name(epoch: u32) -> String {
    format!("{INVENTORY_PREFIX}{epoch}")
}

/// Whether `name` is a rotation's inventory (sync does not copy those to replicas).
pub fn is_inventory(name: &str) -> bool {
    name.starts_with(INVENTORY_PREFIX)
}

/// What a rotation may re-seal: object name to the hash of its content when the rotation
/// began.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Inventory {
    objects: BTreeMap<String, String>,
}

impl Inventory {
    fn holds(&self, name: &str, content: &Hash) -> bool {
        self.objects
            .get(name)
            .is_some_and(|h| *h == content.to_hex())
    }
}

/// The kind and associated data an object is sealed with, by its name.
fn sealing_of(name: &str) -> Option<(ObjectKind, Vec<u8>)> {
    if let Some(id) = name.strip_prefix("backups/") {
        return crate::id::is_backup_id(id).then(|| (ObjectKind::Manifest, id.as_bytes().to_vec()));
    }
    if name.starts_with("index/") {
        return Some((ObjectKind::Index, Vec::new()));
    }
    if name.starts_with(crate::repo::pgwal::PREFIX) {
        return Some((ObjectKind::PgWal, name.as_bytes().to_vec()));
    }
    // Continuous-replication segments are sealed with their names, under the current epoch's
    // data key like manifests: a full rotation must re-seal them too, or no restore to a
    // moment could read them afterwards.
    if crate::repo::segment::parse_name(name, 0).is_some() {
        return Some((ObjectKind::Segment, name.as_bytes().to_vec()));
    }
    RECORD_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
        .then(|| (ObjectKind::Record, name.as_bytes().to_vec()))
}

/// Every manifest, index file and record of `storage`, by name.
fn sealed_objects(storage: &dyn Storage) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let prefixes = [
        "backups/",
        "index/",
        crate::repo::pgwal::PREFIX,
        crate::repo::segment::PREFIX,
    ];
    for prefix in prefixes.into_iter().chain(RECORD_PREFIXES) {
        names.extend(
            storage
                .list(prefix)?
                .into_iter()
                .map(|o| o.name)
                .filter(|n| sealing_of(n).is_some()),
        );
    }
    Ok(names)
}

/// `storage.get`, None if the object is gone.
fn get_if_present(storage: &dyn Storage, name: &str) -> Result<Option<Vec<u8>>> {
    use crate::repo::format::{INDEX_MAX, MANIFEST_MAX, RECORD_MAX};
    let max = if name.starts_with("backups/") {
        MANIFEST_MAX
    } else if name.starts_with("index/") || is_inventory(name) {
        INDEX_MAX
    } else if name.starts_with(crate::repo::pgwal::PREFIX) {
        crate::repo::pgwal::FILE_MAX + (1 << 20)
    } else if name.starts_with(crate::repo::segment::PREFIX) {
        crate::repo::segment::SEGMENT_MAX
    } else {
        RECORD_MAX
    };
    crate::storage::get_if_present(storage, name, max)
}

pub fn rotate_full(
    repo: &mut Repository,
    passphrase: &Passphrase,
    params: KdfParams,
    host: &str,
) -> Result<RekeyReport> {
    repo.require_current_format("key rotate --full")?;
    let Some(unlocked) = repo.keys() else {
        return Err(Error::usage("the repository is not encrypted"));
    };
    if repo.is_write_only() {
        return Err(Error::usage(
            "a full key rotation re-seals every manifest, which a write-only key cannot read",
        )
        .hint("run `lifeboat key rotate --full --identity FILE` where the identity is"));
    }
    let section = repo
        .config
        .keys
        .clone()
        .ok_or_else(|| Error::internal("encrypted repository without a keys section"))?;
    if let Some(id) = keys::opened_by(repo.storage(), &section, &unlocked.key_id, passphrase)? {
        return Err(Error::usage(format!(
            "the new passphrase opens key file {id} of the keys being retired"
        ))
        .hint("a full rotation needs a passphrase no current key file opens: give a new one (LIFEBOAT_NEW_PASSWORD or --new-password-file)"));
    }
    let old_records = repo.records();
    let (report, config, new) =
        locks::exclusively(repo.storage(), &old_records, "key rotation", |lease| {
            ensure_alone(repo, &old_records)?;
            let resumed = section.rekeying;
            let mut report = RekeyReport {
                resumed,
                ..Default::default()
            };
            // What is re-sealed, decided by the keys being retired alone.
            let earlier = if resumed {
                read_inventory(repo.storage(), &unlocked.master, section.epoch)?
            } else {
                Inventory::default()
            };
            let inventory =
                take_inventory(repo.storage(), &unlocked.master, &earlier, &mut report)?;
            // Step 1: the new keys, committed with `rekeying` set. Always a new epoch, even
            // after an interrupted rotation: whoever holds the keys being revoked can set
            // `rekeying` in an authentic config, and must not make this a no-op.
            let (new, mut next) =
                keys::new_epoch(repo.storage(), unlocked, &section, passphrase, params, host)?;
            let name = inventory_name(next.epoch);
            let plain =
                serde_json::to_vec(&inventory).map_err(|e| Error::internal(e.to_string()))?;
            repo.storage().put_replace(
                &name,
                &new.master
                    .seal(ObjectKind::Inventory, name.as_bytes(), &plain)?,
            )?;
            let mut config = repo.config.clone();
            config.keys = Some(next.clone());
            lease.check()?;
            let committed = repo.store_config(config, Some(&new.root))?;
            report.epoch = next.epoch;
            report.key_id = new.key_id.clone();
            // Step 2: re-seal what the inventory names.
            for (name, hash) in &inventory.objects {
                let data = get_if_present(repo.storage(), name)?;
                let unchanged = data.as_ref().is_some_and(|d| Hash::of(d).to_hex() == *hash);
                match data {
                    Some(data) if unchanged => {
                        reseal_one(repo.storage(), &new.master, name, &data, &mut report)?
                    }
                    Some(_) => left_out(
                        repo.storage(),
                        name,
                        "it changed since the rotation began",
                        &mut report,
                    ),
                    None => {}
                }
            }
            ensure_alone(repo, &old_records)?;
            lease.check()?;
            // Step 3: only the new keys count.
            next.rekeying = false;
            let mut config = committed;
            config.keys = Some(next.clone());
            let stored = repo.store_config(config, Some(&new.root))?;
            report.key_files_removed =
                keys::remove_retired(repo.storage(), &new.key_id, next.epoch)?;
            for o in repo.storage().list(INVENTORY_PREFIX)? {
                repo.storage().delete(&o.name)?;
            }
            Ok((report, stored, new))
        })?;
    repo.config = config;
    repo.replace_keys(new);
    Ok(report)
}

fn ensure_alone(repo: &Repository, records: &Records) -> Result<()> {
    locks::ensure_no_writers(
        repo.storage(),
        records,
        "run `lifeboat key rotate --full` again when they have finished (with a new passphrase; it rotates once more, from where an interrupted one stopped)",
    )
}

/// The inventory an interrupted rotation to `epoch` wrote (sealed under that epoch's keys,
/// the current ones). Missing or not authentic: empty, and objects it named that the
/// interrupted rotation had not re-sealed yet are left out.
fn read_inventory(storage: &dyn Storage, keys: &MasterKeys, epoch: u32) -> Result<Inventory> {
    let name = inventory_name(epoch);
    let Some(data) = get_if_present(storage, &name)? else {
        tracing::warn!(
            "{name} is missing: what the interrupted rotation had not re-sealed is left out"
        );
        return Ok(Inventory::default());
    };
    let opened = keys
        .open(ObjectKind::Inventory, name.as_bytes(), &data, &name)
        .and_then(|plain| {
            serde_json::from_slice(&plain)
                .map_err(|e| Error::integrity(format!("{name} is unreadable: {e}")))
        });
    match opened {
        Ok(inventory) => Ok(inventory),
        Err(e) => {
            tracing::warn!(
                "{name} ignored: {e}; what the interrupted rotation had not re-sealed is left out"
            );
            Ok(Inventory::default())
        }
    }
}

/// Every manifest, index file and record that the current keys (strictly: their epoch
/// only) open, or that an interrupted rotation's inventory names with the same content.
fn take_inventory(
    storage: &dyn Storage,
    current: &MasterKeys,
    earlier: &Inventory,
    report: &mut RekeyReport,
) -> Result<Inventory> {
    let mut inventory = Inventory::default();
    for name in sealed_objects(storage)? {
        let Some((kind, bound)) = sealing_of(&name) else {
            continue;
        };
        let Some(data) = get_if_present(storage, &name)? else {
            continue;
        };
        let hash = Hash::of(&data);
        let index_intact = kind != ObjectKind::Index || index_object_name(&hash) == name;
        let eligible = index_intact
            && (earlier.holds(&name, &hash) || current.open(kind, &bound, &data, &name).is_ok());
        if eligible {
            inventory.objects.insert(name, hash.to_hex());
        } else {
            left_out(
                storage,
                &name,
                "it does not open under the keys being retired (forged, damaged, or sealed by an older retired key)",
                report,
            );
        }
    }
    Ok(inventory)
}

fn left_out(storage: &dyn Storage, name: &str, why: &str, report: &mut RekeyReport) {
    tracing::warn!(
        "{}: {name} left out of the key rotation: {why}",
        storage.describe()
    );
    if name.starts_with("backups/") {
        report.left_out.push(format!("{name}: {why}"));
    }
}

/// Re-seal one object under `keys` (the newest epoch's): in place, or, for an index file
/// (named by its content), under its new name, the old one deleted once the new one reads
/// back intact. The caller has decided it may be re-sealed.
fn reseal_one(
    storage: &dyn Storage,
    keys: &MasterKeys,
    name: &str,
    data: &[u8],
    report: &mut RekeyReport,
) -> Result<()> {
    let Some((kind, bound)) = sealing_of(name) else {
        return Ok(());
    };
    let plain = match keys.open_any_epoch(kind, &bound, data, name) {
        Ok((plain, _)) => plain,
        Err(e) => {
            left_out(storage, name, &e.message, report);
            return Ok(());
        }
    };
    let sealed = keys.seal(kind, &bound, &plain)?;
    match kind {
        ObjectKind::Index => {
            let new_name = index_object_name(&Hash::of(&sealed));
            crate::storage::put_new_or_same(storage, &new_name, &sealed)?;
            if Hash::of(&storage.get(&new_name)?) != Hash::of(&sealed) {
                return Err(Error::integrity(format!(
                    "{new_name} did not read back intact"
                )));
            }
            storage.delete(name)?;
            report.index_files += 1;
        }
        ObjectKind::Manifest => {
            storage.put_replace(name, &sealed)?;
            report.manifests += 1;
        }
        _ => {
            storage.put_replace(name, &sealed)?;
            report.records += 1;
        }
    }
    Ok(())
}

/// Re-key a replica that has not seen the rotation to the current epoch, whose config is
/// authentic under `replica_epoch`'s keys. Nothing the replica holds is re-sealed on its
/// own word: that config may be an old one put back by whoever holds a retired key, with
/// objects they sealed. Its manifests become the source's (re-sealed by the rotation there);
/// one only the replica holds is left out (nothing can tell it from one a retired key wrote
/// there). Its index files are deleted: the sync that follows indexes the packs the
/// replica holds again from the source's index (copying none it has). A pin is kept (re-
/// sealed) if the replica's epoch sealed it and it names a backup of the source (at worst
/// it keeps a genuine backup longer); every other record (tombstones, plans, verifications,
/// replica lists, other pins) is deleted: at worst the next sync copies data the replica
/// had forgotten back once, its next prune plans again, a backup is verified again.
pub fn reseal_replica(
    target: &dyn Storage,
    keys: &MasterKeys,
    source: &dyn Storage,
    replica_epoch: u32,
) -> Result<RekeyReport> {
    let mut report = RekeyReport {
        epoch: keys.epoch(),
        ..Default::default()
    };
    for name in sealed_objects(target)? {
        let Some((kind, bound)) = sealing_of(&name) else {
            continue;
        };
        match kind {
            ObjectKind::Manifest => match get_if_present(source, &name)? {
                Some(data) => {
                    target.put_replace(&name, &data)?;
                    report.manifests += 1;
                }
                None => left_out(target, &name, "only this replica holds it", &mut report),
            },
            ObjectKind::Index => {
                target.delete(&name)?;
                report.index_files += 1;
            }
            _ => {
                let pinned = name.strip_prefix("pins/").map(|id| format!("backups/{id}"));
                let keep = match &pinned {
                    Some(backup) if source.exists(backup)? => get_if_present(target, &name)?
                        .filter(|data| {
                            keys.open_any_epoch(kind, &bound, data, &name).is_ok_and(
                                |(_, epoch)| epoch == replica_epoch || epoch == keys.epoch(),
                            )
                        }),
                    _ => None,
                };
                match keep {
                    Some(data) => reseal_one(target, keys, &name, &data, &mut report)?,
                    None => target.delete(&name)?,
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_sealed_with_their_names() {
        assert_eq!(
            sealing_of("backups/01m8axcdefghjk"),
            Some((ObjectKind::Manifest, b"01m8axcdefghjk".to_vec()))
        );
        assert_eq!(
            sealing_of("pins/01m8axcdefghjk"),
            Some((ObjectKind::Record, b"pins/01m8axcdefghjk".to_vec()))
        );
        assert_eq!(
            sealing_of("index/00ff").map(|(k, _)| k),
            Some(ObjectKind::Index)
        );
        assert_eq!(sealing_of("backups/not-an-id"), None);
        assert_eq!(sealing_of("locks/prune"), None);
        assert_eq!(sealing_of("keys/inventory-3"), None);
    }
}
