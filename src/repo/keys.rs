//! Keys of an encrypted repository as stored objects:
//!
//! - `keys/<16 hex>`: key files, the root keys wrapped by a passphrase (Argon2id).
//! - `keys/data-<generation>`: data keys, each sealed by the root key of the epoch the config
//!   names for it.
//! - `keys/past-<epoch>`: after `key rotate --full`, the root keys of earlier epochs, sealed
//!   by the current root key (old objects stay readable, and only through the new keys).
//! - `keys/recipient-<epoch>`: write-only repositories: the root keys sealed to the identity
//!   (HPKE base mode), so the identity alone opens the repository. (Format 1 kept the
//!   recipient in a plaintext `keys/recipient`, which is no longer trusted for anything.)
//!
//! What the keys are (epoch, generations, recipient) is in the authenticated config
//! (`repo::format`); a key that opens no authentic config is refused.

use crate::error::{Error, ErrorKind, Result};
use crate::repo::crypto::{
    open_root_from, parse_recipient, recipient_string, seal_root_to, Identity, KdfParams, KeyFile,
    Legacy, MasterKeys, RootKeys,
};
use crate::repo::format::{KeysSection, RepoConfig};
use crate::secret::Passphrase;
use crate::storage::Storage;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An unlocked encrypted repository's keys, and what opened them.
pub struct Unlocked {
    pub master: Arc<MasterKeys>,
    /// The root keys of the current epoch.
    pub root: RootKeys,
    /// Root keys of earlier epochs, oldest first.
    pub past: Vec<RootKeys>,
    /// The key file that opened them, or `identity`.
    pub key_id: String,
    /// Opened by the identity of a write-only repository. Anyone can seal keys to a public
    /// recipient, so only the config's MAC and the local trust state vouch for them; keys
    /// wrapped by a passphrase were wrapped by someone who knew it.
    pub by_identity: bool,
}

const RECIPIENT_V1: &str = "keys/recipient";
/// Key derivation work (KiB × passes) one command spends on key files at most: four times
/// the ceiling of one file, a few seconds. Files are tried cheapest first, so a planted file
/// dearer than the genuine one is never reached, and cheaper ones cost little.
const KDF_BUDGET: u64 = 4 * crate::repo::crypto::MAX_KDF_WORK;

/// `keys/recipient-<epoch>`: the root keys sealed to the identity.
#[derive(Serialize, Deserialize)]
struct RecipientFile {
    /// For people reading the folder; the authenticated config says which recipient counts.
    public: String,
    sealed_root: String,
}

fn key_file_name(id: &str) -> String {
    format!("keys/{id}")
}

pub fn data_key_name(generation: u32) -> String {
    format!("keys/data-{generation:08}")
}

fn past_name(epoch: u32) -> String {
    format!("keys/past-{epoch}")
}

fn recipient_name(epoch: u32) -> String {
    format!("keys/recipient-{epoch}")
}

/// Every key file, oldest first.
pub fn list(storage: &dyn Storage) -> Result<Vec<KeyFile>> {
    let mut out = Vec::new();
    for obj in storage.list("keys/")? {
        let name = obj.name.rsplit('/').next().unwrap_or_default();
        if name.len() != 16 || hex::decode(name).is_err() {
            continue;
        }
        let data = match storage.get_small(&obj.name, crate::repo::format::SMALL_OBJECT_MAX) {
            Ok(d) => d,
            // One oversized or special (planted) key file must not lock out the others.
            Err(e) if matches!(e.kind, ErrorKind::Integrity | ErrorKind::Trust) => {
                tracing::warn!("key file {} skipped: {e}", obj.name);
                continue;
            }
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<KeyFile>(&data) {
            Ok(kf) if kf.id == name => out.push(kf),
            Ok(_) => tracing::warn!("key file {} names another key; skipped", obj.name),
            // One damaged key file must not lock out the other passphrases.
            Err(e) => tracing::warn!("key file {} is damaged and was skipped: {e}", obj.name),
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(out)
}

fn store_key_file(storage: &dyn Storage, kf: &KeyFile) -> Result<()> {
    let data = serde_json::to_vec_pretty(kf).map_err(|e| Error::internal(e.to_string()))?;
    crate::storage::put_new_or_same(storage, &key_file_name(&kf.id), &data)
}

fn store_recipient_file(
    storage: &dyn Storage,
    recipient: &[u8; 32],
    root: &RootKeys,
) -> Result<()> {
    let name = recipient_name(root.epoch);
    let sealed = seal_root_to(recipient, &name, root)?;
    let file = RecipientFile {
        public: recipient_string(recipient),
        sealed_root: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    let data = serde_json::to_vec_pretty(&file).map_err(|e| Error::internal(e.to_string()))?;
    // Never listed by a config before the config that makes it count is written: a leftover
    // of an interrupted run may be replaced.
    storage.put_replace(&name, &data)
}

/// The keys section of a new repository, whose first key file is `key_file`.
pub fn new_section(recipient: Option<[u8; 32]>, key_file: &str) -> KeysSection {
    KeysSection {
        epoch: 0,
        data_keys: vec![0],
        recipient: recipient.map(|r| recipient_string(&r)),
        rekeying: false,
        key_files: vec![key_file.to_string()],
    }
}

/// Store the keys of a new repository (whose config, naming them, is already written):
/// data key generation 0, the identity's copy of the root keys, and its key file `kf`.
pub fn create(
    storage: &dyn Storage,
    root: &RootKeys,
    kf: &KeyFile,
    recipient: Option<[u8; 32]>,
) -> Result<Unlocked> {
    let (data_key, sealed) = root.new_data_key(0)?;
    if !storage.put_new(&data_key_name(0), &sealed)? {
        return Err(Error::usage(format!(
            "{} already has a data key: it is not a new repository",
            storage.describe()
        ))
        .hint("delete the folder if it holds no backups, or choose another --repo"));
    }
    if let Some(public) = &recipient {
        store_recipient_file(storage, public, root)?;
    }
    store_key_file(storage, kf)?;
    Ok(Unlocked {
        master: Arc::new(MasterKeys::new(
            std::slice::from_ref(root),
            vec![data_key],
            recipient,
            Legacy::none(),
        )),
        root: root.clone(),
        past: Vec::new(),
        key_id: kf.id.clone(),
        by_identity: false,
    })
}

fn missing_key_files(storage: &dyn Storage) -> Error {
    // Either being created this very moment (the config is written before the keys) or an
    // interrupted `repo init`.
    Error::not_found(format!(
        "the encrypted repository at {} has no key files (yet)",
        storage.describe()
    ))
    .hint(
        "if `repo init` was interrupted and there are no backups, delete the folder and init \
         again; otherwise restore keys/ from a copy of the repository",
    )
}

/// Open the repository's keys with `passphrase`. Key files are tried cheapest first (the
/// one that worked last time, `preferred`, before all), within `KDF_BUDGET`, and never one
/// whose Argon2 parameters exceed the ceiling: key files planted in the storage cannot stall
/// a command.
pub fn unlock(
    storage: &dyn Storage,
    passphrase: &Passphrase,
    config: &RepoConfig,
    mac: Option<&str>,
    preferred: Option<&str>,
) -> Result<Unlocked> {
    let mut files = list(storage)?;
    if files.is_empty() {
        return Err(missing_key_files(storage));
    }
    // The one that worked here last, then those the (not yet authenticated) config lists,
    // then the rest, cheapest first.
    let listed: Vec<&str> = config
        .keys
        .as_ref()
        .map(|k| k.key_files.iter().take(16).map(String::as_str).collect())
        .unwrap_or_default();
    files.sort_by_key(|k| {
        (
            Some(k.id.as_str()) != preferred,
            !listed.contains(&k.id.as_str()),
            k.params.work(),
        )
    });
    // Which error to report: a key that opened but is not this repository's (retired by a
    // full rotation), else a wrong passphrase, else unusable key files.
    let mut retired: Option<Error> = None;
    let mut wrong: Option<Error> = None;
    let mut other: Option<Error> = None;
    let mut spent = 0u64;
    let mut untried = 0;
    for kf in &files {
        let favoured = Some(kf.id.as_str()) == preferred || listed.contains(&kf.id.as_str());
        if kf.params.within_ceiling().is_ok() && !favoured {
            spent += kf.params.work();
            if spent > KDF_BUDGET {
                untried = files.len() - files.iter().position(|f| f.id == kf.id).unwrap_or(0);
                tracing::warn!(
                    "{} has {} key files; gave up after the cheapest that fit the key derivation budget (planted ones?)",
                    storage.describe(),
                    files.len()
                );
                break;
            }
        }
        match kf.unwrap(passphrase.as_bytes()) {
            Ok(root) => match open_with_root(storage, config, mac, root, &kf.id, false) {
                Ok(u) => return Ok(u),
                // Keys of another epoch (retired) or of another repository: try the others.
                Err(e) if e.kind == ErrorKind::Trust => retired = Some(e),
                Err(e) => return Err(e),
            },
            Err(e) if e.kind == ErrorKind::Auth => wrong = Some(e),
            // A damaged or hostile key file must not stop the others.
            Err(e) => {
                tracing::warn!("key file {} cannot be used: {e}", kf.id);
                other.get_or_insert(e);
            }
        }
    }
    let e = retired
        .or(wrong)
        .or(other)
        .unwrap_or_else(|| Error::new(ErrorKind::Auth, "wrong passphrase"));
    if untried > 0 {
        return Err(Error::new(
            e.kind,
            format!(
                "{}; {untried} of the repository's {} key files were not tried (too many: planted ones?)",
                e.message,
                files.len()
            ),
        )
        .hint("check the passphrase; then look at `keys/` on the storage for key files nobody made"));
    }
    Err(e)
}

/// The identity's copy of the root keys stored as `name` (`keys/recipient-<epoch>`, or
/// format 1's `keys/recipient`), if there is one.
fn read_recipient_file(storage: &dyn Storage, name: &str) -> Result<Option<RecipientFile>> {
    crate::storage::get_if_present(storage, name, crate::repo::format::SMALL_OBJECT_MAX)?
        .map(|data| {
            serde_json::from_slice(&data)
                .map_err(|e| Error::integrity(format!("{name} is unreadable: {e}")))
        })
        .transpose()
}

/// Open a write-only repository with the private identity: full read access.
pub fn unlock_with_identity(
    storage: &dyn Storage,
    identity: &Identity,
    config: &RepoConfig,
    mac: Option<&str>,
) -> Result<Unlocked> {
    let not_write_only = || {
        Error::usage("this repository is not write-only; --identity is not needed")
            .hint("open it with its passphrase")
    };
    let (name, v1) = if config.format_version >= 2 {
        let section = config.keys.as_ref().ok_or_else(not_write_only)?;
        let recipient = section.recipient.as_deref().ok_or_else(not_write_only)?;
        if parse_recipient(recipient)? != identity.public() {
            return Err(Error::new(
                ErrorKind::Auth,
                "this identity does not match the repository's recipient key",
            )
            .hint(format!("the repository's recipient is {recipient}")));
        }
        (recipient_name(section.epoch), false)
    } else {
        (RECIPIENT_V1.to_string(), true)
    };
    let file =
        match read_recipient_file(storage, &name)? {
            Some(file) => file,
            None if v1 => return Err(not_write_only()),
            None => return Err(Error::integrity(format!("{name} is missing")).hint(
                "restore keys/ from a replica; the identity opens the repository only through it",
            )),
        };
    if v1 && parse_recipient(&file.public)? != identity.public() {
        return Err(Error::new(
            ErrorKind::Auth,
            "this identity does not match the repository's recipient key",
        )
        .hint(format!("the repository's recipient is {}", file.public)));
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&file.sealed_root)
        .map_err(|_| Error::integrity(format!("{name} is damaged")))?;
    let root = open_root_from(identity, &name, &sealed, v1).ok_or_else(|| {
        Error::integrity(format!("{name} is damaged, or not sealed to this identity"))
            .hint("restore keys/ from a replica")
    })?;
    let mut unlocked = open_with_root(storage, config, mac, root, "identity", true)?;
    let mut master = (*unlocked.master).clone();
    master.identity = Some(identity.secret);
    if v1 {
        master.recipient = Some(identity.public());
    }
    unlocked.master = Arc::new(master);
    Ok(unlocked)
}

/// Everything the root keys of the current epoch open, once the config is proven theirs.
fn open_with_root(
    storage: &dyn Storage,
    config: &RepoConfig,
    mac: Option<&str>,
    root: RootKeys,
    key_id: &str,
    by_identity: bool,
) -> Result<Unlocked> {
    if config.format_version < 2 {
        return open_format_1(storage, root, key_id, by_identity);
    }
    config.verify(mac, &root)?;
    let section = config
        .keys
        .as_ref()
        .ok_or_else(|| Error::integrity("the config of this encrypted repository lists no keys"))?;
    if root.epoch != section.epoch {
        return Err(Error::new(
            ErrorKind::Trust,
            format!(
                "this key belongs to key epoch {}, the repository is at epoch {}",
                root.epoch, section.epoch
            ),
        ));
    }
    let past = if section.epoch > 0 {
        let name = past_name(section.epoch);
        let sealed = storage
            .get_small(&name, crate::repo::format::SMALL_OBJECT_MAX)
            .map_err(|e| missing_key(e, &name))?;
        let past = root.open_past(&sealed)?;
        if past.len() != section.epoch as usize
            || past.iter().enumerate().any(|(i, r)| r.epoch != i as u32)
        {
            return Err(Error::integrity(format!(
                "{name} does not hold every earlier epoch"
            )));
        }
        past
    } else {
        Vec::new()
    };
    let mut epochs = past.clone();
    epochs.push(root.clone());
    let mut data_keys = Vec::with_capacity(section.data_keys.len());
    for (generation, &epoch) in section.data_keys.iter().enumerate() {
        let name = data_key_name(generation as u32);
        let sealed = storage
            .get_small(&name, crate::repo::format::SMALL_OBJECT_MAX)
            .map_err(|e| missing_key(e, &name))?;
        let sealer = epochs.get(epoch as usize).ok_or_else(|| {
            Error::integrity(format!("the config names key epoch {epoch} for {name}"))
        })?;
        data_keys.push(sealer.open_data_key(generation as u32, &sealed)?);
        if config.upgraded_from.is_some()
            && !sealer.data_key_is_format_2(generation as u32, &sealed)
        {
            tracing::warn!(
                "{name} is still in format 1's envelope: an upgrade was interrupted after its config; run `lifeboat repo upgrade` again to finish it"
            );
        }
    }
    if data_keys.is_empty() {
        return Err(Error::integrity("the config lists no data keys"));
    }
    let recipient = section
        .recipient
        .as_deref()
        .map(parse_recipient)
        .transpose()?;
    let legacy = if config.upgraded_from.is_some() {
        Legacy::upgraded()
    } else {
        Legacy::none()
    };
    let mut master = MasterKeys::new(&epochs, data_keys, recipient, legacy);
    // Even while a full rotation is unfinished (`rekeying`), readers accept manifests, index
    // files and records of the current epoch only: the rotation alone reads the others.
    master.set_generation_epochs(section.data_keys.clone());
    Ok(Unlocked {
        master: Arc::new(master),
        root,
        past,
        key_id: key_id.to_string(),
        by_identity,
    })
}

fn missing_key(e: Error, name: &str) -> Error {
    if e.kind == ErrorKind::NotFound {
        Error::integrity(format!(
            "{name} is missing, though the repository's config lists it (deleted?)"
        ))
        .hint(
            "restore keys/ from a replica: objects sealed with that key cannot be read without it",
        )
    } else {
        e
    }
}

/// Format 1: data keys found by listing, the recipient from the plaintext `keys/recipient`.
/// Only for reading (and `repo upgrade`): nothing here is authenticated.
fn open_format_1(
    storage: &dyn Storage,
    root: RootKeys,
    key_id: &str,
    by_identity: bool,
) -> Result<Unlocked> {
    let mut data_keys = Vec::new();
    loop {
        let generation = data_keys.len() as u32;
        match storage.get_small(
            &data_key_name(generation),
            crate::repo::format::SMALL_OBJECT_MAX,
        ) {
            Ok(sealed) if root.data_key_is_format_2(generation, &sealed) => {
                return Err(Error::new(
                    ErrorKind::Trust,
                    format!(
                        "the config of the repository at {} says format 1, but its data keys are format 2's: an old config was put in its place",
                        storage.describe()
                    ),
                )
                .hint("restore `config` from a replica; do not run `repo upgrade` on it"));
            }
            Ok(sealed) => data_keys.push(root.open_data_key(generation, &sealed)?),
            Err(e) if e.kind == ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if data_keys.is_empty() {
        return Err(Error::integrity(
            "the repository has no data keys (keys/data-00000000 is missing)",
        ));
    }
    let recipient = read_recipient_file(storage, RECIPIENT_V1)?
        .map(|file| parse_recipient(&file.public))
        .transpose()?;
    Ok(Unlocked {
        master: Arc::new(MasterKeys::new(
            std::slice::from_ref(&root),
            data_keys,
            recipient,
            Legacy::format_1(),
        )),
        root,
        past: Vec::new(),
        key_id: key_id.to_string(),
        by_identity,
    })
}

/// Add a key file for another passphrase.
pub fn add(
    storage: &dyn Storage,
    unlocked: &Unlocked,
    passphrase: &Passphrase,
    params: KdfParams,
    host: &str,
) -> Result<KeyFile> {
    let kf = KeyFile::wrap(&unlocked.root, passphrase.as_bytes(), params, host)?;
    store_key_file(storage, &kf)?;
    Ok(kf)
}

/// Remove a key file (returns its full id). The last key and the key in use cannot be
/// removed.
pub fn remove(storage: &dyn Storage, unlocked: &Unlocked, id: &str) -> Result<String> {
    let files = list(storage)?;
    let matching: Vec<&KeyFile> = files.iter().filter(|k| k.id.starts_with(id)).collect();
    let kf = match matching.as_slice() {
        [] => {
            return Err(Error::not_found(format!("no key with id '{id}'"))
                .hint("`lifeboat key list` shows the keys"))
        }
        [one] => *one,
        _ => {
            return Err(
                Error::usage(format!("'{id}' matches several keys")).hint("type more of the id")
            )
        }
    };
    if kf.id == unlocked.key_id {
        return Err(Error::usage("refusing to remove the key in use").hint(
            "open the repository with another passphrase to remove this one, or use `key passwd`",
        ));
    }
    if files.len() < 2 {
        return Err(Error::usage(
            "refusing to remove the last key: the data would be unreadable",
        ));
    }
    storage.delete(&key_file_name(&kf.id))?;
    Ok(kf.id.clone())
}

/// Replace the key in use with one for a new passphrase.
pub fn change_passphrase(
    storage: &dyn Storage,
    unlocked: &Unlocked,
    new: &Passphrase,
    params: KdfParams,
    host: &str,
) -> Result<KeyFile> {
    let kf = add(storage, unlocked, new, params, host)?;
    storage.delete(&key_file_name(&unlocked.key_id))?;
    Ok(kf)
}

/// A new data key generation, stored; the caller commits it by writing the config that
/// lists it (until then it is a leftover nobody uses).
pub fn new_generation(
    storage: &dyn Storage,
    unlocked: &Unlocked,
    section: &KeysSection,
) -> Result<([u8; 32], KeysSection)> {
    let generation = section.data_keys.len() as u32;
    let (key, sealed) = unlocked.root.new_data_key(generation)?;
    // Not listed by the config: a leftover of an interrupted rotation, replaced.
    storage.put_replace(&data_key_name(generation), &sealed)?;
    let mut next = section.clone();
    next.data_keys.push(unlocked.root.epoch);
    Ok((key, next))
}

/// The first step of `key rotate --full`: new root keys for epoch `section.epoch + 1`, which
/// open everything earlier through `keys/past-<epoch>`; a data key of the new epoch; the
/// identity's copy; and a key file for `passphrase`. Returns them and the keys section the
/// caller commits by writing the config under the new root.
pub fn new_epoch(
    storage: &dyn Storage,
    unlocked: &Unlocked,
    section: &KeysSection,
    passphrase: &Passphrase,
    params: KdfParams,
    host: &str,
) -> Result<(Unlocked, KeysSection)> {
    let epoch = section.epoch + 1;
    let root = RootKeys::generate(epoch);
    let mut past = unlocked.past.clone();
    past.push(unlocked.root.clone());
    storage.put_replace(&past_name(epoch), &root.seal_past(&past)?)?;
    let generation = section.data_keys.len() as u32;
    let (data_key, sealed) = root.new_data_key(generation)?;
    storage.put_replace(&data_key_name(generation), &sealed)?;
    let recipient = section
        .recipient
        .as_deref()
        .map(parse_recipient)
        .transpose()?;
    if let Some(r) = &recipient {
        store_recipient_file(storage, r, &root)?;
    }
    let kf = KeyFile::wrap(&root, passphrase.as_bytes(), params, host)?;
    store_key_file(storage, &kf)?;
    let mut next = section.clone();
    next.epoch = epoch;
    next.data_keys.push(epoch);
    next.rekeying = true;
    next.key_files = vec![kf.id.clone()];
    let mut data_keys = unlocked.master.data_keys.clone();
    data_keys.push(data_key);
    let mut epochs = past.clone();
    epochs.push(root.clone());
    let mut master = MasterKeys::new(&epochs, data_keys, recipient, unlocked.master.legacy);
    master.set_generation_epochs(next.data_keys.clone());
    master.identity = unlocked.master.identity;
    Ok((
        Unlocked {
            master: Arc::new(master),
            root,
            past,
            key_id: kf.id,
            by_identity: false,
        },
        next,
    ))
}

/// The key file (listed in the config, or `in_use`) that `passphrase` opens, if any: a full
/// rotation wants a passphrase no key file of the retired keys opens, or whoever puts an
/// old state of the repository back could open it with the new passphrase.
pub fn opened_by(
    storage: &dyn Storage,
    section: &KeysSection,
    in_use: &str,
    passphrase: &Passphrase,
) -> Result<Option<String>> {
    for kf in list(storage)? {
        let listed = kf.id == in_use || section.key_files.iter().take(16).any(|k| *k == kf.id);
        if listed && kf.unwrap(passphrase.as_bytes()).is_ok() {
            return Ok(Some(kf.id));
        }
    }
    Ok(None)
}

/// After a full rotation is committed: remove every key file but `keep` (they open only the
/// retired root keys) and the identity's copies of retired root keys. Returns the key files
/// removed.
pub fn remove_retired(storage: &dyn Storage, keep: &str, epoch: u32) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for kf in list(storage)? {
        if kf.id != keep {
            storage.delete(&key_file_name(&kf.id))?;
            removed.push(kf.id);
        }
    }
    for old in 0..epoch {
        storage.delete(&recipient_name(old))?;
    }
    storage.delete(RECIPIENT_V1)?;
    Ok(removed)
}

/// `repo upgrade` of a write-only repository: the identity's copy of the root keys in the
/// format-2 form (`keys/recipient-0`).
pub fn upgrade_recipient(
    storage: &dyn Storage,
    recipient: &[u8; 32],
    root: &RootKeys,
) -> Result<()> {
    store_recipient_file(storage, recipient, root)
}

/// After `repo upgrade` committed format 2: the data keys of epoch 0 still in format 1's
/// envelope, sealed again in format 2's. Then a format-1 config put back in place of the
/// upgraded one is caught (`open_format_1` finds format-2 data keys). Returns how many.
pub fn reseal_format_1_data_keys(storage: &dyn Storage, unlocked: &Unlocked) -> Result<usize> {
    let root = if unlocked.root.epoch == 0 {
        &unlocked.root
    } else {
        match unlocked.past.first() {
            Some(r) => r,
            None => return Ok(0),
        }
    };
    let mut resealed = 0;
    for (generation, key) in unlocked.master.data_keys.iter().enumerate() {
        let generation = generation as u32;
        let name = data_key_name(generation);
        let Some(sealed) =
            crate::storage::get_if_present(storage, &name, crate::repo::format::SMALL_OBJECT_MAX)?
        else {
            continue;
        };
        if root.data_key_is_format_2(generation, &sealed)
            || root.open_data_key(generation, &sealed).ok().as_ref() != Some(key)
        {
            continue; // already format 2's, or another epoch's
        }
        storage.put_replace(&name, &root.seal_data_key(generation, key)?)?;
        resealed += 1;
    }
    Ok(resealed)
}

/// `repo upgrade`: the data key generations of a format-1 repository (all epoch 0).
pub fn format_1_generations(unlocked: &Unlocked) -> Vec<u32> {
    vec![0; unlocked.master.data_keys.len()]
}

/// Remove the format-1 `keys/recipient` once the upgraded config no longer needs it.
pub fn remove_format_1_recipient(storage: &dyn Storage) -> Result<()> {
    storage.delete(RECIPIENT_V1)
}
