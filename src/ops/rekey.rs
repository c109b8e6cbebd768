//! `key rotate --full`: replace the root keys (and with them the id key, the data key, the
//! write-only PSK and the config's MAC key), for when a passphrase or key file may be in the
//! wrong hands. Old data stays readable through the new keys (`keys/past-<epoch>`); whoever
//! holds a retired key can neither read what is written from now on nor write anything the
//! repository accepts: manifests, index files and records are re-sealed under the new keys
//! and, once the rotation is over, accepted only under them.
//!
//! Crash-safe in two commits of the config: (1) the new keys, with `rekeying` set; (2) after
//! every manifest, index file and record is re-sealed, `rekeying` cleared. In between, only
//! the rotation reads objects of earlier epochs; other readers refuse what is not re-sealed
//! yet. Interrupted, the next `key rotate --full` (with the same passphrase, whose new key
//! file step 1 wrote) rotates once more, from there: it never trusts `rekeying` to resume,
//! since whoever holds the keys being revoked could have set it. It runs alone: it holds the
//! prune lock and refuses while a backup or sync runs.
//!
//! Not rewritten: packs. Their frames stay sealed under the old data keys, which a retired
//! key can open; forget and prune the old backups to remove that data. New blob ids use the
//! new id key, so the next backup of each database stores it in full once.

use crate::error::{Error, ErrorKind, Result};
use crate::id::Hash;
use crate::repo::crypto::{KdfParams, MasterKeys, ObjectKind};
use crate::repo::index::index_object_name;
use crate::repo::records::Records;
use crate::repo::{keys, locks, Repository};
use crate::secret::Passphrase;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct RekeyReport {
    pub epoch: u32,
    /// An interrupted rotation was found (and is superseded by this one).
    pub resumed: bool,
    pub manifests: usize,
    pub index_files: usize,
    pub records: usize,
    /// Manifests left as they were (so refused from now on): they did not open (forged or
    /// damaged), or, re-keying a replica, only the replica held them.
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
    let old_records = repo.records();
    let (report, config, new) = locks::as_pruner(repo.storage(), &old_records, |lease| {
        ensure_alone(repo, &old_records)?;
        // Step 1: the new keys, committed with `rekeying` set. Always a new epoch, even
        // after an interrupted rotation: whoever holds the keys being revoked can set
        // `rekeying` in an authentic config, and must not make this a no-op.
        let resumed = section.rekeying;
        let (new, mut next) =
            keys::new_epoch(repo.storage(), unlocked, &section, passphrase, params, host)?;
        let mut config = repo.config.clone();
        config.keys = Some(next.clone());
        lease.check()?;
        let committed = repo.store_config(config, Some(&new.root))?;
        let mut report = RekeyReport {
            epoch: next.epoch,
            resumed,
            key_id: new.key_id.clone(),
            ..Default::default()
        };
        // Step 2: re-seal what decides.
        reseal(repo.storage(), &new.master, None, &mut report)?;
        ensure_alone(repo, &old_records)?;
        lease.check()?;
        // Step 3: only the new keys count.
        next.rekeying = false;
        let mut config = committed;
        config.keys = Some(next.clone());
        let stored = repo.store_config(config, Some(&new.root))?;
        report.key_files_removed = keys::remove_retired(repo.storage(), &new.key_id, next.epoch)?;
        let mut new = new;
        let mut master = (*new.master).clone();
        master.set_generation_epochs(next.data_keys.clone(), false);
        new.master = std::sync::Arc::new(master);
        Ok((report, stored, new))
    })?;
    repo.config = config;
    repo.replace_keys(new);
    Ok(report)
}

fn ensure_alone(repo: &Repository, records: &Records) -> Result<()> {
    let writers: Vec<String> = locks::live_markers(repo.storage(), records)?
        .into_iter()
        .filter(|(name, _)| name != locks::PRUNE_LOCK)
        .map(|(_, m)| m.describe())
        .collect();
    if writers.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InUse,
        format!("the repository is in use: {}", writers.join("; ")),
    )
    .hint("run `lifeboat key rotate --full` again when they have finished (an interrupted rotation resumes)"))
}

/// Re-seal every manifest, index file and record of `storage` under the newest keys, which
/// must be rekeying (opening every epoch's). Re-keying a replica (`source`: the repository,
/// already re-keyed), its manifests are the source's re-sealed ones: one only the replica
/// holds is left out, since nothing can tell it from one a retired key wrote there since the
/// rotation; and its replica lists are left out (a replica's own list sends nothing).
pub fn reseal(
    storage: &dyn crate::storage::Storage,
    keys: &MasterKeys,
    source: Option<&dyn crate::storage::Storage>,
    report: &mut RekeyReport,
) -> Result<()> {
    for obj in storage.list("backups/")? {
        let id = obj.name.rsplit('/').next().unwrap_or_default().to_string();
        if !crate::id::is_backup_id(&id) {
            continue;
        }
        let resealed = match source {
            Some(source) => match source.get(&obj.name) {
                Ok(data) => Ok(data),
                Err(e) if e.kind == ErrorKind::NotFound => {
                    Err("only this replica holds it".to_string())
                }
                Err(e) => return Err(e),
            },
            None => {
                let data = storage.get(&obj.name)?;
                keys.open(ObjectKind::Manifest, id.as_bytes(), &data, &obj.name)
                    .and_then(|plain| keys.seal(ObjectKind::Manifest, id.as_bytes(), &plain))
                    .map_err(|e| e.message)
            }
        };
        match resealed {
            Ok(sealed) => {
                storage.put_replace(&obj.name, &sealed)?;
                report.manifests += 1;
            }
            Err(why) => {
                tracing::warn!(
                    "{}: {} left out of the key rotation: {why}",
                    storage.describe(),
                    obj.name
                );
                report.left_out.push(format!("{}: {why}", obj.name));
            }
        }
    }
    for (name, id) in crate::repo::index::list_index_files(storage)? {
        let data = match storage.get(&name) {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if Hash::of(&data) != id {
            tracing::warn!("{name} is damaged (its content does not match its name); left out");
            continue;
        }
        let plain = match keys.open(ObjectKind::Index, b"", &data, &name) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("{name} left out: {e}");
                continue;
            }
        };
        let sealed = keys.seal(ObjectKind::Index, b"", &plain)?;
        let new_name = index_object_name(&Hash::of(&sealed));
        crate::storage::put_new_or_same(storage, &new_name, &sealed)?;
        if Hash::of(&storage.get(&new_name)?) != Hash::of(&sealed) {
            return Err(Error::integrity(format!(
                "{new_name} did not read back intact"
            )));
        }
        storage.delete(&name)?;
        report.index_files += 1;
    }
    let records = Records::sealed(std::sync::Arc::new(keys.clone()));
    for prefix in RECORD_PREFIXES {
        if source.is_some() && prefix == "replicas/" {
            continue;
        }
        for obj in storage.list(prefix)? {
            let data = match storage.get(&obj.name) {
                Ok(d) => d,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match records.decode::<serde_json::Value>(&obj.name, &data) {
                Ok(value) => {
                    storage.put_replace(&obj.name, &records.encode(&obj.name, &value)?)?;
                    report.records += 1;
                }
                Err(e) => tracing::warn!("{} left out: {e}", obj.name),
            }
        }
    }
    Ok(())
}
