//! Keys of an encrypted repository as stored objects: key files `keys/<id>` (root keys
//! wrapped by a passphrase) and data keys `keys/data-<generation>` (sealed by the root key).

use crate::error::{Error, ErrorKind, Result};
use crate::repo::crypto::{
    recipient_string, seal_to, Identity, KdfParams, KeyFile, MasterKeys, ObjectKind, RootKeys,
};
use crate::secret::Passphrase;
use crate::storage::Storage;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// An unlocked encrypted repository's keys, and which key file opened them.
pub struct Unlocked {
    pub master: MasterKeys,
    pub root: RootKeys,
    pub key_id: String,
}

const RECIPIENT_OBJECT: &str = "keys/recipient";

/// `keys/recipient` of a write-only repository: the public key content is sealed to, and the
/// root keys sealed to it too, so the identity alone opens the repository.
#[derive(Serialize, Deserialize)]
struct RecipientFile {
    public: String,
    sealed_root: String,
}

fn key_file_name(id: &str) -> String {
    format!("keys/{id}")
}

fn data_key_name(generation: u32) -> String {
    format!("keys/data-{generation:08}")
}

/// Every key file, oldest first.
pub fn list(storage: &dyn Storage) -> Result<Vec<KeyFile>> {
    let mut out = Vec::new();
    for obj in storage.list("keys/")? {
        let name = obj.name.rsplit('/').next().unwrap_or_default();
        if name.starts_with("data-") || name.len() != 16 || hex::decode(name).is_err() {
            continue;
        }
        let data = storage.get(&obj.name)?;
        match serde_json::from_slice::<KeyFile>(&data) {
            Ok(kf) => out.push(kf),
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

/// New root keys, data key generation 0 and one key file for `passphrase`; with a
/// `recipient`, the repository is write-only for every passphrase.
pub fn create(
    storage: &dyn Storage,
    passphrase: &Passphrase,
    params: KdfParams,
    host: &str,
    recipient: Option<[u8; 32]>,
) -> Result<Unlocked> {
    let root = RootKeys::generate();
    let (data_key, sealed) = root.new_data_key(0)?;
    if !storage.put_new(&data_key_name(0), &sealed)? && storage.get(&data_key_name(0))? != sealed {
        return Err(Error::usage(format!(
            "{} already has a data key: it is not a new repository",
            storage.describe()
        ))
        .hint("delete the folder if it holds no backups, or choose another --repo"));
    }
    if let Some(public) = &recipient {
        let plain = serde_json::to_vec(&root).map_err(|e| Error::internal(e.to_string()))?;
        let sealed_root = seal_to(public, ObjectKind::RootKeys, b"", &plain)?;
        let file = RecipientFile {
            public: recipient_string(public),
            sealed_root: base64::engine::general_purpose::STANDARD.encode(sealed_root),
        };
        let data = serde_json::to_vec_pretty(&file).map_err(|e| Error::internal(e.to_string()))?;
        crate::storage::put_new_or_same(storage, RECIPIENT_OBJECT, &data)?;
    }
    let kf = KeyFile::wrap(&root, passphrase.as_bytes(), params, host)?;
    store_key_file(storage, &kf)?;
    let mut master = root.with_data_keys(vec![data_key]);
    master.recipient = recipient;
    Ok(Unlocked {
        master,
        root,
        key_id: kf.id,
    })
}

fn read_recipient(storage: &dyn Storage) -> Result<Option<RecipientFile>> {
    match storage.get(RECIPIENT_OBJECT) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::integrity(format!("{RECIPIENT_OBJECT} is unreadable: {e}"))),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The recipient public key of a write-only repository, if it is one.
pub fn recipient(storage: &dyn Storage) -> Result<Option<[u8; 32]>> {
    read_recipient(storage)?
        .map(|r| crate::repo::crypto::parse_recipient(&r.public))
        .transpose()
}

/// Open a write-only repository with the private identity: full read access.
pub fn unlock_with_identity(storage: &dyn Storage, identity: &Identity) -> Result<Unlocked> {
    let Some(file) = read_recipient(storage)? else {
        return Err(
            Error::usage("this repository is not write-only; --identity is not needed")
                .hint("open it with its passphrase"),
        );
    };
    let public = crate::repo::crypto::parse_recipient(&file.public)?;
    if public != identity.public() {
        return Err(Error::new(
            ErrorKind::Auth,
            "this identity does not match the repository's recipient key",
        )
        .hint(format!("the repository's recipient is {}", file.public)));
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&file.sealed_root)
        .map_err(|_| Error::integrity(format!("{RECIPIENT_OBJECT} is damaged")))?;
    let reader = MasterKeys {
        id_key: [0; 32],
        data_keys: Vec::new(),
        recipient: Some(public),
        identity: Some(identity.secret),
    };
    let plain = reader.open(ObjectKind::RootKeys, b"", &sealed, RECIPIENT_OBJECT)?;
    let root: RootKeys = serde_json::from_slice(&plain)
        .map_err(|_| Error::integrity(format!("{RECIPIENT_OBJECT} is damaged")))?;
    let mut master = root.with_data_keys(read_data_keys(storage, &root)?);
    master.recipient = Some(public);
    master.identity = Some(identity.secret);
    Ok(Unlocked {
        master,
        root,
        key_id: "identity".into(),
    })
}

/// Open the repository's keys with `passphrase` (tries every key file).
pub fn unlock(storage: &dyn Storage, passphrase: &Passphrase) -> Result<Unlocked> {
    let files = list(storage)?;
    if files.is_empty() {
        // Either being created this very moment (the config is written before the keys) or
        // an interrupted `repo init`.
        return Err(Error::not_found(format!(
            "the encrypted repository at {} has no key files (yet)",
            storage.describe()
        ))
        .hint(
            "if `repo init` was interrupted and there are no backups, delete the folder and \
             init again; otherwise restore keys/ from a copy of the repository",
        ));
    }
    let mut last = None;
    for kf in &files {
        match kf.unwrap(passphrase.as_bytes()) {
            Ok(root) => {
                let mut master = root.with_data_keys(read_data_keys(storage, &root)?);
                master.recipient = recipient(storage)?;
                return Ok(Unlocked {
                    master,
                    root,
                    key_id: kf.id.clone(),
                });
            }
            Err(e) if e.kind == ErrorKind::Auth => last = Some(e),
            // A damaged key file (bad parameters, bad base64) must not stop the others.
            Err(e) => {
                tracing::warn!("key file {} cannot be used: {e}", kf.id);
                if last.is_none() {
                    last = Some(e);
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::new(ErrorKind::Auth, "wrong passphrase")))
}

fn read_data_keys(storage: &dyn Storage, root: &RootKeys) -> Result<Vec<[u8; 32]>> {
    let mut keys = Vec::new();
    loop {
        let generation = keys.len() as u32;
        let name = data_key_name(generation);
        match storage.get(&name) {
            Ok(sealed) => keys.push(root.open_data_key(generation, &sealed)?),
            Err(e) if e.kind == ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    if keys.is_empty() {
        return Err(Error::integrity(
            "the repository has no data keys (keys/data-00000000 is missing)",
        ));
    }
    Ok(keys)
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

/// Remove a key file. The last key and the key in use cannot be removed.
pub fn remove(storage: &dyn Storage, unlocked: &Unlocked, id: &str) -> Result<()> {
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
    storage.delete(&key_file_name(&kf.id))
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

/// A new data key generation for everything written from now on.
pub fn rotate(storage: &dyn Storage, unlocked: &mut Unlocked) -> Result<u32> {
    let generation = unlocked.master.data_keys.len() as u32;
    let (key, sealed) = unlocked.root.new_data_key(generation)?;
    if !storage.put_new(&data_key_name(generation), &sealed)? {
        return Err(Error::usage(
            "another rotation happened at the same moment; run it again",
        ));
    }
    unlocked.master.push_data_key(key);
    Ok(generation)
}
