//! `lifeboat repo upgrade`: move a repository of format 1 to format 2 without rewriting its
//! data. Packs, index files and format-1 envelopes under data keys stay as they are (they
//! are as authentic as format 2's); what format 1 left unauthenticated is made authentic:
//!
//! 1. write-only repositories: the identity's copy of the root keys in the format-2 form, and
//!    every manifest re-sealed with the PSK envelope, after checking that its page lists
//!    resolve and check against their keyed ids (a manifest planted with the format-1
//!    envelope, which mixed in no secret, names lists nobody could forge, and fails; it is
//!    left out and reported, and format 2 refuses it);
//! 2. encrypted repositories: pins and verifications sealed under the data key (a planted
//!    one can only keep a backup longer); replica lists, tombstones and deletion plans
//!    dropped, since format 1 did not authenticate them (a planted replica list would send
//!    backups elsewhere): replicas are added again with `replica add`;
//! 3. the config: format 2, the key layout and the recipient inside it, authenticated;
//! 4. then the data keys sealed again in format 2's envelope, so that a format-1 config put
//!    back in place of the upgraded one is caught (running `repo upgrade` again finishes this
//!    step if it was interrupted).
//!
//! Crash-safe: until step 3 the repository is still format 1 (and stays readable: format 1
//! readers of this version accept both envelopes); each step can run again. It runs alone:
//! it holds the prune lock and refuses while a backup or sync is running.

use crate::error::{Error, Result};
use crate::id::Hash;
use crate::repo::crypto::{Legacy, MasterKeys};
use crate::repo::format::KNOWN_FEATURES;
use crate::repo::format::{KeysSection, RepoConfig, FORMAT_VERSION};
use crate::repo::records::Records;
use crate::repo::{keys, locks, Repository};
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Default, Serialize)]
pub struct UpgradeReport {
    pub from: u32,
    pub to: u32,
    pub manifests_resealed: usize,
    /// Manifests that failed their check and were left out (forged or damaged).
    pub manifests_refused: Vec<String>,
    pub records_sealed: usize,
    /// Data keys moved from format 1's envelope to format 2's (after the config).
    pub data_keys_resealed: usize,
    /// Replicas named by the format-1 replica list, which could not be authenticated and was
    /// dropped: to be added again with `lifeboat replica add URL`.
    pub replicas_dropped: Vec<String>,
    /// Features added to the config (`manifest-2`: backups of every kind, not only SQLite).
    pub features_added: Vec<String>,
}

/// Records format 1 kept as plain JSON that are sealed as they are: a planted pin or
/// verification can only keep a backup longer.
const RECORDS_KEPT: [&str; 2] = ["pins/", "verified/"];
/// Records that are dropped: a planted replica list would send backups elsewhere, a planted
/// tombstone keep a backup from a replica, a planted plan steer prune. Replicas are added
/// again (`replica add`); tombstones and plans are written again by the next forget and prune.
const RECORDS_DROPPED: [&str; 4] = ["replicas/", "forgotten/", "dropped/", "plans/"];

pub fn upgrade(repo: &mut Repository) -> Result<UpgradeReport> {
    let from = repo.config.format_version;
    if from == FORMAT_VERSION {
        // An upgrade interrupted after its config was committed finishes here.
        let data_keys_resealed = match repo.keys() {
            Some(unlocked) if repo.config.upgraded_from.is_some() => {
                keys::reseal_format_1_data_keys(repo.storage(), unlocked)?
            }
            _ => 0,
        };
        let features_added = add_features(repo)?;
        return Ok(UpgradeReport {
            from,
            to: from,
            data_keys_resealed,
            features_added,
            ..Default::default()
        });
    }
    let write_only = repo.recipient().is_some();
    if write_only && !repo.keys().is_some_and(|k| k.by_identity) {
        return Err(Error::usage(
            "upgrading a write-only repository needs its identity: format 1 did not authenticate \
             its recipient or its manifests, and only the identity can check them",
        )
        .hint("run `lifeboat repo upgrade --identity FILE` where the identity is; until then this host can read nothing and write nothing there"));
    }
    let plain = Records::plain();
    let (report, config) = locks::exclusively(repo.storage(), &plain, "upgrade", |lease| {
        locks::ensure_no_writers(
            repo.storage(),
            &plain,
            "run `repo upgrade` again when they have finished",
        )?;
        upgrade_locked(repo, from, lease)
    })?;
    repo.config = config;
    Ok(report)
}

/// The features this version writes under, added to a format-2 config that lacks them (a
/// repository made before content kinds): one atomic replacement of the config, so a crash
/// leaves it either as it was or upgraded. Manifests already there stay as they are (format
/// 1 manifests are read by every version).
fn add_features(repo: &mut Repository) -> Result<Vec<String>> {
    let missing = missing_features(&repo.config);
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let plain = Records::plain();
    let config = locks::exclusively(repo.storage(), &plain, "upgrade", |lease| {
        locks::ensure_no_writers(
            repo.storage(),
            &plain,
            "run `repo upgrade` again when they have finished",
        )?;
        let mut config = repo.config.clone();
        config.features.extend(missing.iter().cloned());
        lease.check()?;
        repo.store_config(config, None)
    })?;
    repo.config = config;
    Ok(missing)
}

/// The features this version writes under that `config` lacks.
fn missing_features(config: &RepoConfig) -> Vec<String> {
    KNOWN_FEATURES
        .iter()
        .filter(|f| !config.features.iter().any(|have| have == *f))
        .map(|f| f.to_string())
        .collect()
}

fn upgrade_locked(
    repo: &Repository,
    from: u32,
    lease: &locks::Lease,
) -> Result<(UpgradeReport, RepoConfig)> {
    let mut report = UpgradeReport {
        from,
        to: FORMAT_VERSION,
        ..Default::default()
    };
    let mut config = RepoConfig {
        format_version: FORMAT_VERSION,
        upgraded_from: Some(from),
        revision: 0,
        pack_size: repo.config.pack_target(),
        ..repo.config.clone()
    };
    for f in missing_features(&config) {
        config.features.push(f.clone());
        report.features_added.push(f);
    }
    let root = repo.keys().map(|k| k.root.clone());
    if let Some(unlocked) = repo.keys() {
        let recipient = unlocked.master.recipient;
        config.keys = Some(KeysSection {
            epoch: 0,
            data_keys: keys::format_1_generations(unlocked),
            recipient: recipient.map(|r| crate::repo::crypto::recipient_string(&r)),
            rekeying: false,
            key_files: keys::list(repo.storage())?
                .into_iter()
                .map(|k| k.id)
                .collect(),
        });
        // The keys as format 2 sees them: format-1 envelopes accepted only where safe.
        let mut v2 = MasterKeys::new(
            std::slice::from_ref(&unlocked.root),
            unlocked.master.data_keys.clone(),
            recipient,
            Legacy::upgraded(),
        );
        v2.identity = unlocked.master.identity;
        let v2 = Arc::new(v2);
        if let Some(r) = &recipient {
            keys::upgrade_recipient(repo.storage(), r, &unlocked.root)?;
            reseal_manifests(repo, &v2, &mut report)?;
        }
        report.replicas_dropped =
            crate::repo::replicas::read_replicas(repo.storage(), &Records::plain())
                .map(|(list, _)| list.replicas)
                .unwrap_or_default();
        report.records_sealed = seal_records(repo, &Records::sealed(v2))?;
    }
    lease.check()?;
    let stored = repo.store_config(config, root.as_ref())?;
    if repo.recipient().is_some() {
        keys::remove_format_1_recipient(repo.storage())?;
    }
    if let Some(unlocked) = repo.keys() {
        report.data_keys_resealed = keys::reseal_format_1_data_keys(repo.storage(), unlocked)?;
    }
    // The keys in memory still follow format 1's rules: reopen to use the repository further.
    Ok((report, stored))
}

/// Re-seal every manifest of a write-only repository with the format-2 envelope, after
/// checking it names page lists that exist and check against their keyed ids.
fn reseal_manifests(repo: &Repository, v2: &MasterKeys, report: &mut UpgradeReport) -> Result<()> {
    let index = repo.load_index()?;
    let mut cache = crate::repo::FrameCache::default();
    for obj in repo.storage().list("backups/")? {
        let id = obj.name.rsplit('/').next().unwrap_or_default().to_string();
        if !crate::id::is_backup_id(&id) {
            continue;
        }
        let genuine = repo.read_manifest(&id).and_then(|m| {
            let mut pages = 0u64;
            for hex in m.content.lists() {
                let list = repo.read_blob_cached(&index, &Hash::from_hex(hex)?, &mut cache)?;
                pages += (list.len() / 32) as u64;
            }
            if m.content.lists().is_empty() || pages != m.content.items() {
                return Err(Error::integrity("its page lists do not add up"));
            }
            Ok(m)
        });
        match genuine {
            Ok(m) => {
                let data = m.encode()?;
                let sealed = v2.seal(
                    crate::repo::crypto::ObjectKind::Manifest,
                    id.as_bytes(),
                    &data,
                )?;
                repo.storage().put_replace(&obj.name, &sealed)?;
                report.manifests_resealed += 1;
            }
            Err(e) => {
                tracing::warn!("backup {id} left out of the upgrade: {e}");
                report
                    .manifests_refused
                    .push(format!("{id}: {}", e.message));
            }
        }
    }
    Ok(())
}

/// Seal the plain JSON records of format 1 (a re-run finds some sealed already).
fn seal_records(repo: &Repository, sealed: &Records) -> Result<usize> {
    let storage = repo.storage();
    let mut n = 0;
    for prefix in RECORDS_DROPPED {
        for obj in storage.list(prefix)? {
            storage.delete(&obj.name)?;
        }
    }
    for prefix in RECORDS_KEPT {
        for obj in storage.list(prefix)? {
            let Some(data) = crate::repo::records::fetch(storage, &obj.name)? else {
                continue;
            };
            if sealed.decode::<serde_json::Value>(&obj.name, &data).is_ok() {
                continue; // an earlier run sealed it
            }
            match Records::plain().decode::<serde_json::Value>(&obj.name, &data) {
                Ok(value) => {
                    storage.put_replace(&obj.name, &sealed.encode(&obj.name, &value)?)?;
                    n += 1;
                }
                Err(e) => tracing::warn!("{} is unreadable and was left as it is: {e}", obj.name),
            }
        }
    }
    // Markers of dead processes: nothing to keep.
    for obj in storage.list(locks::LOCKS)? {
        if obj.name != locks::PRUNE_LOCK {
            storage.delete(&obj.name)?;
        }
    }
    Ok(n)
}
