//! The repository format: a config object, write-once packs of compressed frames, index
//! files that locate blobs, and manifests that describe backups. `docs/FORMAT.md` is the
//! specification; this module is its implementation.

pub mod compress;
pub mod crypto;
pub mod fallback;
pub mod format;
pub mod hpke;
pub mod index;
pub mod keys;
pub mod locks;
pub mod manifest;
pub mod pack;
pub mod pgwal;
pub mod reach;
pub mod records;
pub mod replicas;
pub mod segment;
pub mod tombstones;
pub mod tree;
pub mod upgrade;

use crate::error::{Error, ErrorKind, Result};
use crate::id::{is_backup_id, BlobHasher, Hash};
use crate::secret::Passphrase;
use crate::storage::Storage;
use crypto::{KdfParams, ObjectKind, RootKeys};
pub use format::{RepoConfig, ENCRYPTION, FORMAT_VERSION};
use index::{decode_index_file, Index};
use manifest::Manifest;
use pack::pack_object_name;
use records::Records;
use std::collections::BTreeMap;

pub struct Repository {
    storage: Box<dyn Storage>,
    pub config: RepoConfig,
    keys: Option<keys::Unlocked>,
    /// Blob ids of this repository (from `keys`, kept ready: every blob read uses it).
    hasher: BlobHasher,
    /// Backups this process read (authenticated), wrote or deleted: what the local trust
    /// state may record as the newest backup.
    authentic: std::sync::Mutex<BackupsSeen>,
    /// Replicas to read from when the primary's copy of a frame is missing or damaged:
    /// the locations the opener vouches for ([`Repository::set_replica_resolver`]), asked
    /// only when a read needs them; what they served is said once, on drop.
    fallback: fallback::Fallback,
}

impl Drop for Repository {
    fn drop(&mut self) {
        if let Some(warning) = self.take_replica_summary() {
            tracing::warn!("{warning}");
        }
    }
}

/// What one process saw of the repository's backups (see `Repository::newest_authentic`).
#[derive(Default)]
struct BackupsSeen {
    /// Read (and authenticated) or written, and not deleted since.
    present: std::collections::BTreeSet<String>,
    /// Deleted (forget).
    deleted: Vec<String>,
}

pub use fallback::ReplicaResolver;

/// How to create a repository.
pub enum NewRepo<'a> {
    Plain,
    Encrypted {
        passphrase: &'a Passphrase,
        params: KdfParams,
        /// Write-only: content sealed to this X25519 public key (`repo init --recipient`).
        recipient: Option<[u8; 32]>,
    },
}

/// How to unlock an encrypted repository.
pub enum Unlock<'a> {
    /// A passphrase, asked for only if the repository is encrypted.
    Passphrase {
        ask: &'a mut dyn FnMut() -> Result<Passphrase>,
        /// Whether the user gave one without being asked (variable, file, command): then a
        /// repository that says it is not encrypted is refused, since an attacker may have
        /// turned encryption off in its config.
        given: bool,
        /// The key file that opened this repository last time, tried first.
        preferred_key: Option<String>,
    },
    /// The private identity of a write-only repository.
    Identity(&'a crypto::Identity),
}

impl Repository {
    pub fn init(storage: Box<dyn Storage>, kind: NewRepo) -> Result<Repository> {
        if storage.exists("config")? {
            return Err(Error::usage(format!(
                "a repository already exists at {}",
                storage.describe()
            ))
            .hint("use it as it is, or choose another --repo"));
        }
        // Check what can fail before anything is written, so a refused init leaves nothing.
        if let NewRepo::Encrypted { params, .. } = &kind {
            params.validate()?;
        }
        let root = match &kind {
            NewRepo::Plain => None,
            NewRepo::Encrypted { .. } => Some(RootKeys::generate(0)),
        };
        let key_file = match (&kind, &root) {
            (
                NewRepo::Encrypted {
                    passphrase, params, ..
                },
                Some(root),
            ) => Some(crypto::KeyFile::wrap(
                root,
                passphrase.as_bytes(),
                *params,
                &crate::host::hostname(),
            )?),
            _ => None,
        };
        let config = RepoConfig {
            format_version: FORMAT_VERSION,
            features: format::KNOWN_FEATURES
                .iter()
                .map(|f| f.to_string())
                .collect(),
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: jiff::Timestamp::now().to_string(),
            hash: match kind {
                NewRepo::Plain => "blake3",
                NewRepo::Encrypted { .. } => "blake3-keyed",
            }
            .into(),
            encryption: match kind {
                NewRepo::Plain => "none",
                NewRepo::Encrypted { .. } => ENCRYPTION,
            }
            .into(),
            pack_size: 16 << 20,
            keys: match (&kind, &key_file) {
                (NewRepo::Encrypted { recipient, .. }, Some(kf)) => {
                    Some(keys::new_section(*recipient, &kf.id))
                }
                _ => None,
            },
            upgraded_from: None,
            revision: 0,
        };
        // The config decides who created the repository (create-only); only the winner then
        // writes keys. Openers that come in between see "keys not written yet" (NotFound)
        // and retry; see `keys::unlock`.
        let data = config.encode(root.as_ref())?;
        if !storage.put_new("config", &data)?
            && storage.get_small("config", crate::repo::format::SMALL_OBJECT_MAX)? != data
        {
            return Err(Error::usage(format!(
                "a repository was created at {} at the same moment",
                storage.describe()
            )));
        }
        let keys = match (kind, root, key_file) {
            (NewRepo::Encrypted { recipient, .. }, Some(root), Some(kf)) => {
                Some(keys::create(storage.as_ref(), &root, &kf, recipient)?)
            }
            _ => None,
        };
        Ok(Repository {
            storage,
            config,
            hasher: Self::hasher_of(keys.as_ref()),
            authentic: Default::default(),
            keys,
            fallback: Default::default(),
        })
    }

    /// Open a repository; `passphrase` is asked for only if the repository is encrypted.
    pub fn open(storage: Box<dyn Storage>, unlock: Unlock) -> Result<Repository> {
        let data = match storage.get_small("config", crate::repo::format::SMALL_OBJECT_MAX) {
            Ok(d) => d,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "no Lifeboat repository at {}",
                    storage.describe()
                ))
                .hint("check --repo / LIFEBOAT_REPO, or create one with `lifeboat repo init`"))
            }
            Err(e) => return Err(e),
        };
        let (config, mac) = RepoConfig::parse(&data, &storage.describe())?;
        let keys = if !config.is_encrypted() {
            let secret_given = match &unlock {
                Unlock::Passphrase { given, .. } => *given,
                Unlock::Identity(_) => true,
            };
            if secret_given {
                return Err(Error::new(
                    ErrorKind::Trust,
                    format!(
                        "the repository at {} is not encrypted, but a passphrase or identity was given",
                        storage.describe()
                    ),
                )
                .hint("if it was encrypted, someone changed its config to turn encryption off: do not write to it. \
                       If it is meant to be unencrypted, unset LIFEBOAT_PASSWORD (--password-file, --password-command, --identity) for it"));
            }
            None
        } else {
            Some(match unlock {
                Unlock::Passphrase {
                    ask, preferred_key, ..
                } => keys::unlock(
                    storage.as_ref(),
                    &ask()?,
                    &config,
                    mac.as_deref(),
                    preferred_key.as_deref(),
                )?,
                Unlock::Identity(identity) => {
                    keys::unlock_with_identity(storage.as_ref(), identity, &config, mac.as_deref())?
                }
            })
        };
        Ok(Repository {
            storage,
            config,
            hasher: Self::hasher_of(keys.as_ref()),
            authentic: Default::default(),
            keys,
            fallback: Default::default(),
        })
    }

    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether this process can write but not read backups (write-only key).
    pub fn is_write_only(&self) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|k| k.master.recipient.is_some() && k.master.identity.is_none())
    }

    /// The recipient of a write-only repository (from the authenticated config).
    pub fn recipient(&self) -> Option<[u8; 32]> {
        self.keys.as_ref().and_then(|k| k.master.recipient)
    }

    pub fn keys(&self) -> Option<&keys::Unlocked> {
        self.keys.as_ref()
    }

    /// Writers call this first: a format-1 repository is read-only until `repo upgrade`,
    /// since format 1 trusted records nobody authenticated.
    pub fn require_current_format(&self, what: &str) -> Result<()> {
        if self.config.is_current() {
            return Ok(());
        }
        Err(Error::usage(format!(
            "{what} needs the repository at {} in format {FORMAT_VERSION}; it is in format {}",
            self.location(),
            self.config.format_version
        ))
        .hint(if self.recipient().is_some() {
            "run `lifeboat repo upgrade --identity FILE` where the identity is (it takes seconds and keeps every backup); until then it can be read, not written"
        } else {
            "run `lifeboat repo upgrade` (it takes seconds and keeps every backup); until then it can be read, not written"
        }))
    }

    /// What every command that writes checks first: the current format, and no full key
    /// rotation left half done (the rotation that finishes it re-seals what the interrupted
    /// one listed, which could undo a deletion made meanwhile).
    pub fn require_writable(&self, what: &str) -> Result<()> {
        self.require_current_format(what)?;
        if self.config.keys.as_ref().is_some_and(|k| k.rekeying) {
            return Err(Error::new(
                ErrorKind::InUse,
                format!(
                    "{what} waits: a full key rotation of {} was interrupted",
                    self.location()
                ),
            )
            .hint("finish it first: `lifeboat key rotate --full` (with a new passphrase)"));
        }
        Ok(())
    }

    /// How coordination records are sealed here.
    pub fn records(&self) -> Records {
        match &self.keys {
            Some(k) if self.config.is_current() => Records::sealed(k.master.clone()),
            _ => Records::plain(),
        }
    }

    /// Replace the config (a key rotation, an upgrade), authenticated under `root` (the
    /// current root keys unless given: a full rotation commits under the new ones).
    pub fn write_config(&mut self, config: RepoConfig, root: Option<&RootKeys>) -> Result<()> {
        self.config = self.store_config(config, root)?;
        Ok(())
    }

    /// Store `config` and read it back (an object store that lost the write must not leave
    /// us believing it); the caller makes it `self.config`.
    pub fn store_config(
        &self,
        mut config: RepoConfig,
        root: Option<&RootKeys>,
    ) -> Result<RepoConfig> {
        // Format 1 did not authenticate its config: its revision (none was written) counts
        // for nothing.
        let current = if self.config.format_version >= 2 {
            self.config.revision
        } else {
            0
        };
        config.revision = current.max(config.revision).saturating_add(1);
        let root = root.or(self.keys.as_ref().map(|k| &k.root));
        let data = config.encode(root)?;
        self.storage.put_replace("config", &data)?;
        let (stored, mac) = RepoConfig::parse(
            &self
                .storage
                .get_small("config", crate::repo::format::SMALL_OBJECT_MAX)?,
            &self.location(),
        )?;
        if let Some(root) = root {
            stored.verify(mac.as_deref(), root)?;
        }
        Ok(stored)
    }

    /// `key rotate`: a new data key for everything this and later processes write.
    pub fn rotate_data_key(&mut self) -> Result<u32> {
        self.require_writable("key rotate")?;
        let Some(unlocked) = self.keys.as_ref() else {
            return Err(Error::usage("the repository is not encrypted"));
        };
        let section = self
            .config
            .keys
            .clone()
            .ok_or_else(|| Error::internal("encrypted repository without a keys section"))?;
        let (key, next) = keys::new_generation(self.storage.as_ref(), unlocked, &section)?;
        let mut config = self.config.clone();
        config.keys = Some(next);
        self.write_config(config, None)?;
        let k = self
            .keys
            .as_mut()
            .ok_or_else(|| Error::internal("keys vanished"))?;
        Ok(std::sync::Arc::make_mut(&mut k.master).push_data_key(key))
    }

    /// Change the list of key files in the config (`key add`, `key remove`, `key passwd`).
    pub fn update_key_files(&mut self, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        let mut config = self.config.clone();
        let Some(section) = config.keys.as_mut() else {
            return Ok(());
        };
        change(&mut section.key_files);
        self.write_config(config, None)
    }

    /// Replace the keys with those of a full rotation once its config is written.
    pub fn replace_keys(&mut self, unlocked: keys::Unlocked) {
        self.hasher = Self::hasher_of(Some(&unlocked));
        self.keys = Some(unlocked);
    }

    /// How blob ids are computed in this repository.
    pub fn hasher(&self) -> BlobHasher {
        self.hasher.clone()
    }

    fn hasher_of(keys: Option<&keys::Unlocked>) -> BlobHasher {
        match keys {
            Some(k) => k.master.hasher(),
            None => BlobHasher::plain(),
        }
    }

    /// The key epoch new blob ids belong to (recorded in manifests).
    pub fn key_epoch(&self) -> u32 {
        self.keys.as_ref().map_or(0, |k| k.master.epoch())
    }

    /// Encrypt an object in an encrypted repository; pass it through otherwise.
    pub fn seal(&self, kind: ObjectKind, name: &[u8], plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => k.master.seal(kind, name, &plain),
            None => Ok(plain),
        }
    }

    /// Authenticate and decrypt an object sealed by [`Repository::seal`].
    pub fn unseal(
        &self,
        kind: ObjectKind,
        name: &[u8],
        data: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => k.master.open(kind, name, &data, what),
            None => Ok(data),
        }
    }

    /// How to find the locations to read damaged or missing objects from. Only what the
    /// opener vouches for: an authentic replica list, or replicas confirmed on this machine.
    pub fn set_replica_resolver(&self, resolve: ReplicaResolver) {
        self.fallback.set_resolver(resolve);
    }

    /// The replicas reads may fall back to (as the opener vouches for them; none opened).
    pub fn replica_locations(&self) -> Vec<String> {
        self.fallback.locations(self)
    }

    /// Read from the primary alone until the guard is dropped: for commands that judge the
    /// primary (`repo check`), not the data.
    pub fn primary_only(&self) -> PrimaryOnly<'_> {
        self.fallback.set_enabled(false);
        PrimaryOnly(self)
    }

    /// The warning saying what replicas served in place of the primary since the last call
    /// (None if nothing); said by the repository itself when it is dropped, unless taken.
    pub fn take_replica_summary(&self) -> Option<String> {
        fallback::summary(&self.fallback.take())
    }

    /// Note that a replica served pack `pack`'s directory, damaged or missing here.
    pub fn note_replica_pack(&self, replica: &str, pack: &Hash, missing: bool) {
        self.fallback.note(replica, pack, None, missing);
    }

    /// The replicas, opened (see [`Repository::replica_locations`]).
    pub fn replicas(&self) -> &[Box<dyn Storage>] {
        self.fallback.replicas(self)
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub fn location(&self) -> String {
        self.storage.describe()
    }

    /// Read every index file, checking each against its name. A damaged index file is
    /// skipped and named in `Index::damaged`: backups whose blobs it alone located fail with
    /// a clear error, every other backup keeps working, and new backups store those blobs
    /// again instead of trusting them.
    pub fn load_index(&self) -> Result<Index> {
        // Packs that a prune plans to delete are added last, so a blob that also lives in
        // a pack that stays (prune copied it there) is found there.
        let planned = locks::planned_packs(
            &locks::read_plans(self.storage.as_ref(), &self.records()).unwrap_or_default(),
        );
        // So are packs that are missing or truncated here: a later backup stored their pages
        // again in another pack (packs are salted, so never under the same name).
        let present = pack::list_packs(self.storage.as_ref())?;
        let last =
            |p: &index::IndexedPack| planned.contains(&p.id) || present.get(&p.id) != Some(&p.size);
        let mut index = Index::default();
        // Re-read at the end rather than held: a big plan can cover hundreds of packs.
        let mut deferred = Vec::new();
        let mut read: std::collections::HashSet<Hash> = std::collections::HashSet::new();
        // A prune that merges index files stores the merged file before deleting the small
        // ones: if one vanished under us, a second listing finds the merged file.
        for _listing in 0..2 {
            let mut vanished = false;
            for obj in self.storage.list("index/")? {
                let name = obj.name.rsplit('/').next().unwrap_or_default().to_string();
                let Ok(id) = Hash::from_hex(&name) else {
                    continue; // not ours (editor backup file, etc.)
                };
                if !read.insert(id) {
                    continue;
                }
                match self.read_index_file(&obj.name, &id) {
                    Err(e) if e.kind == ErrorKind::NotFound => vanished = true,
                    Ok(packs) if packs.iter().any(last) => {
                        deferred.push((id, obj.name));
                    }
                    Ok(packs) => index.add_file(id, &packs),
                    Err(e) => {
                        tracing::warn!("index file {} is damaged: {e}", obj.name);
                        index.damaged.push(obj.name.clone());
                    }
                }
            }
            if !vanished {
                break;
            }
        }
        for (id, name) in deferred {
            match self.read_index_file(&name, &id) {
                Ok(packs) => index.add_file(id, &packs),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => index.damaged.push(format!("{name} ({e})")),
            }
        }
        index.planned = index
            .packs
            .iter()
            .enumerate()
            .filter(|(_, p)| planned.contains(&p.id))
            .map(|(n, _)| n as u32)
            .collect();
        index.absent = index
            .packs
            .iter()
            .enumerate()
            .filter(|(_, p)| present.get(&p.id) != Some(&p.size))
            .map(|(n, _)| n as u32)
            .collect();
        Ok(index)
    }

    /// Read, check and decode one index file.
    pub fn read_index_file(&self, name: &str, id: &Hash) -> Result<Vec<index::IndexedPack>> {
        self.read_index_file_from(self.storage.as_ref(), name, id)
    }

    /// The same from another copy of this repository (a replica).
    pub fn read_index_file_from(
        &self,
        storage: &dyn Storage,
        name: &str,
        id: &Hash,
    ) -> Result<Vec<index::IndexedPack>> {
        let data = storage.get_small(name, crate::repo::format::INDEX_MAX)?;
        if Hash::of(&data) != *id {
            return Err(Error::integrity("its content does not match its name"));
        }
        let plain = self.unseal(ObjectKind::Index, b"", data, name)?;
        decode_index_file(&plain, name)
    }

    /// Forget blobs whose pack is missing or has the wrong size, so a new backup stores them
    /// again rather than referring to data that is gone. Returns the packs forgotten.
    /// (`load_index` found them, from the same listing of `data/` it orders packs by.)
    pub fn drop_missing_packs(&self, index: &mut Index) -> Vec<String> {
        let missing = std::mem::take(&mut index.absent);
        let names = missing
            .iter()
            .map(|&n| pack_object_name(&index.packs[n as usize].id))
            .collect();
        index.forget_packs(&missing);
        names
    }

    /// All backups, oldest first. An unreadable manifest is an error naming it.
    ///
    /// Tombstones do not filter this list: anyone holding the repository's keys, a
    /// write-only host included, can seal one, and a tombstone copied from a replica is
    /// authentic too. A list that dropped the backups a tombstone names would let such a
    /// record make prune delete data a present backup needs. A forgotten manifest copied
    /// back therefore reappears (and the next `forget` forgets it again).
    pub fn list_backups(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for obj in self.storage.list("backups/")? {
            let id = obj.name.rsplit('/').next().unwrap_or_default();
            if !is_backup_id(id) {
                continue;
            }
            out.push(self.read_manifest(id)?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn read_manifest(&self, id: &str) -> Result<Manifest> {
        self.read_manifest_from(self.storage.as_ref(), id)
    }

    /// Read and authenticate backup `id`'s manifest as another copy of this repository (a
    /// replica) holds it.
    pub fn read_manifest_from(&self, storage: &dyn Storage, id: &str) -> Result<Manifest> {
        let name = format!("backups/{id}");
        let data = storage.get_small(&name, crate::repo::format::MANIFEST_MAX)?;
        self.decode_manifest(id, data)
    }

    /// Authenticate and parse the stored bytes of backup `id`'s manifest (as read from any
    /// copy): a caller that then writes those bytes elsewhere writes exactly what was checked.
    pub fn decode_manifest(&self, id: &str, data: Vec<u8>) -> Result<Manifest> {
        let name = format!("backups/{id}");
        let data = self
            .unseal(ObjectKind::Manifest, id.as_bytes(), data, &name)
            .map_err(|e| {
                if e.kind == ErrorKind::Integrity
                    && self.config.keys.as_ref().is_some_and(|k| k.rekeying)
                {
                    e.hint("a full key rotation was interrupted and this backup is not re-sealed yet: run `lifeboat key rotate --full` again (with a new passphrase) to finish it")
                } else if e.kind == ErrorKind::Integrity {
                    e.hint(format!(
                        "nothing acts on it; if it is damaged, `lifeboat repo repair` replaces \
                         it with a replica's intact copy; if no Lifeboat of yours wrote it \
                         (forged), move {name} out of the repository and run the command again"
                    ))
                } else {
                    e
                }
            })?;
        let m: Manifest = serde_json::from_slice(&data).map_err(|e| {
            Error::integrity(format!("manifest {name} is unreadable: {e}"))
                .hint("the backup cannot be used; run `lifeboat repo check`")
        })?;
        if m.id != id {
            return Err(Error::integrity(format!(
                "manifest {name} describes backup {} (swapped or renamed object)",
                m.id
            )));
        }
        if m.format > manifest::MANIFEST_FORMAT {
            return Err(Error::usage(format!(
                "backup {id} was written by a newer Lifeboat (manifest format {})",
                m.format
            ))
            .hint("use a newer lifeboat to read it"));
        }
        self.note_authentic(id);
        Ok(m)
    }

    /// The newest backup this process read or wrote (and did not delete).
    pub fn newest_authentic(&self) -> Option<String> {
        let seen = self.authentic.lock().unwrap_or_else(|p| p.into_inner());
        seen.present.iter().next_back().cloned()
    }

    /// Whether this process deleted backup `id` (forget).
    pub fn forgot(&self, id: &str) -> bool {
        let seen = self.authentic.lock().unwrap_or_else(|p| p.into_inner());
        seen.deleted.iter().any(|f| f == id)
    }

    /// Note that this process deleted backup `id`.
    pub fn note_forgotten(&self, id: &str) {
        let mut seen = self.authentic.lock().unwrap_or_else(|p| p.into_inner());
        seen.present.remove(id);
        seen.deleted.push(id.to_string());
    }

    fn note_authentic(&self, id: &str) {
        let mut seen = self.authentic.lock().unwrap_or_else(|p| p.into_inner());
        seen.present.insert(id.to_string());
    }

    /// The manifest format new backups are written in: 2 once the repository has the
    /// feature for it (new repositories, or after `repo upgrade`), else 1 (SQLite only), so
    /// that the Lifeboat that made the repository can still read everything in it.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.config.features.iter().any(|f| f == feature)
    }

    pub fn manifest_format(&self) -> u32 {
        if self.config.features.iter().any(|f| f == manifest::FEATURE) {
            manifest::MANIFEST_FORMAT
        } else {
            1
        }
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<u64> {
        let data = m.encode()?;
        let data = self.seal(ObjectKind::Manifest, m.id.as_bytes(), data)?;
        // Same bytes already there: our own write whose answer was lost.
        crate::storage::put_new_or_same(
            self.storage.as_ref(),
            &format!("backups/{}", m.id),
            &data,
        )?;
        self.note_authentic(&m.id);
        Ok(data.len() as u64)
    }

    /// Find a backup by `latest`, a full id or an unambiguous prefix. `source` (a path as
    /// `source::source_key` spells it) narrows every form to the backups of one database.
    ///
    /// `latest` never means a `pre-restore` safety backup (restoring "the latest" twice must
    /// not put back what the first restore replaced), and it is refused when the repository
    /// holds backups of several databases and no source was named.
    pub fn resolve(&self, spec: &str, source: Option<&str>) -> Result<Manifest> {
        // A full id needs only its own manifest: another backup's damaged manifest must not
        // stop this one from being verified or restored.
        let full = spec.to_ascii_lowercase();
        if is_backup_id(&full) && self.storage.exists(&format!("backups/{full}"))? {
            let m = self.read_manifest(&full)?;
            return match source {
                Some(s) if m.source.path != s => Err(Error::not_found(format!(
                    "backup {} is of {}, not of {s}",
                    m.id, m.source.path
                ))
                .hint("drop --source, or give a backup of that database (`lifeboat list --source PATH`)")),
                _ => Ok(m),
            };
        }
        let listed = self.list_backups()?;
        if spec == "latest" {
            return self.pick_latest(listed, source);
        }
        let all: Vec<Manifest> = listed
            .into_iter()
            .filter(|m| source.is_none_or(|s| m.source.path == s))
            .collect();
        if spec.trim().is_empty() {
            return Err(Error::usage("no backup id given")
                .hint("give a backup id, a prefix of one, or `latest`"));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut hits: Vec<Manifest> = all
            .into_iter()
            .filter(|m| m.id.starts_with(&spec_l))
            .collect();
        match hits.len() {
            0 => Err(Error::not_found(match source {
                Some(s) => format!("no backup of {s} with id '{spec}'"),
                None => format!("no backup with id '{spec}'"),
            })
            .hint("`lifeboat list` shows the backups in this repository")),
            1 => Ok(hits.remove(0)),
            n => Err(Error::usage(format!(
                "'{spec}' matches {n} backups: {}",
                hits.iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .hint("type more characters of the id")),
        }
    }

    /// `latest` among `listed` (every backup), narrowed to `source` when one was named.
    ///
    /// A database is a path on a host (as retention groups them): two hosts backing up
    /// `/srv/app.db` into one repository are two databases. When the candidates come from
    /// several hosts and this host is one of them, `latest` means this host's; otherwise it
    /// is ambiguous, so that staging never restores production's newest backup unasked.
    fn pick_latest(&self, listed: Vec<Manifest>, source: Option<&str>) -> Result<Manifest> {
        // Every database here, for the hint when `source` has no backups.
        let others: std::collections::BTreeSet<String> =
            listed.iter().map(|m| m.source.path.clone()).collect();
        let (safety, mut regular): (Vec<Manifest>, Vec<Manifest>) = listed
            .into_iter()
            .filter(|m| source.is_none_or(|s| m.source.path == s))
            .partition(|m| m.trigger == manifest::SAFETY_TRIGGER);
        let databases = |ms: &[Manifest]| -> std::collections::BTreeSet<(String, String)> {
            ms.iter()
                .map(|m| (m.source.path.clone(), m.source.host.clone()))
                .collect()
        };
        let mut found = databases(&regular);
        let paths: std::collections::BTreeSet<&str> =
            found.iter().map(|(p, _)| p.as_str()).collect();
        if found.len() > 1 && paths.len() == 1 {
            let here = crate::host::hostname();
            if found.iter().any(|(_, h)| *h == here) {
                regular.retain(|m| m.source.host == here);
                found = databases(&regular);
            }
        }
        if found.len() > 1 {
            return Err(Error::usage(format!(
                "`latest` is ambiguous: this repository holds backups of {} databases ({})",
                found.len(),
                found
                    .iter()
                    .map(|(p, h)| format!("{p} on {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .hint("name one with --source PATH, or give a backup id (`lifeboat list`)"));
        }
        if let Some(m) = regular.into_iter().next_back() {
            return Ok(m);
        }
        let what = match source {
            Some(s) => format!("no backup of {s} in {}", self.location()),
            None => format!("the repository at {} has no backups", self.location()),
        };
        Err(match safety.last() {
            Some(m) => {
                Error::not_found(format!("{what} (only pre-restore safety backups)")).hint(format!(
                    "`latest` never means a safety backup; to restore the state an in-place \
                     restore replaced, give its id: {} ({})",
                    m.id, m.time
                ))
            }
            None => {
                if source.is_some() && !others.is_empty() {
                    Error::not_found(what).hint(format!(
                        "this repository holds backups of: {}",
                        others.into_iter().collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    Error::not_found(what).hint("take one with `lifeboat backup DB`")
                }
            }
        })
    }

    /// The databases this repository holds backups of (safety backups included), sorted.
    pub fn backup_sources(&self) -> Result<Vec<String>> {
        let set: std::collections::BTreeSet<String> = self
            .list_backups()?
            .into_iter()
            .map(|m| m.source.path)
            .collect();
        Ok(set.into_iter().collect())
    }

    /// The newest backup of each database (path and host) that is not a safety backup
    /// (what `verify` checks when no id is given), oldest first.
    pub fn latest_per_source(&self) -> Result<Vec<Manifest>> {
        // A database is a path on a host.
        let mut newest: BTreeMap<(String, String), Manifest> = BTreeMap::new();
        for m in self.list_backups()? {
            if m.trigger != manifest::SAFETY_TRIGGER {
                newest.insert((m.source.path.clone(), m.source.host.clone()), m);
            }
        }
        let mut out: Vec<Manifest> = newest.into_values().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Read and decompress one frame.
    pub fn read_frame(&self, index: &Index, frame_no: u32) -> Result<Vec<u8>> {
        self.read_frame_with(index, frame_no, &mut compress::Decompressor::default())
    }

    /// Read and decompress one frame, reusing the caller's decompression context. A frame
    /// missing or damaged here is read from the first replica that holds it intact (the
    /// same pack, at the same place), and the replica is tallied for the command's warning.
    pub fn read_frame_with(
        &self,
        index: &Index,
        frame_no: u32,
        decompressor: &mut compress::Decompressor,
    ) -> Result<Vec<u8>> {
        match self.read_frame_from(self.storage.as_ref(), index, frame_no, decompressor) {
            Ok(frame) => Ok(frame),
            Err(e) if e.kind == ErrorKind::Auth => Err(e),
            Err(e) => {
                let missing = e.kind == ErrorKind::NotFound;
                for (n, replica) in self.replicas().iter().enumerate() {
                    match self.replica_frame(n, replica.as_ref(), index, frame_no, decompressor) {
                        Ok(frame) => {
                            let f = &index.frames[frame_no as usize];
                            let pack = &index.packs[f.pack as usize].id;
                            tracing::debug!(
                                "{e}; read frame {} of {} from replica {}",
                                f.offset,
                                pack_object_name(pack),
                                replica.describe()
                            );
                            self.fallback
                                .note(&replica.describe(), pack, Some(f.offset), missing);
                            return Ok(frame.to_vec());
                        }
                        Err(re) => tracing::debug!(
                            "replica {} has no good copy either: {re}",
                            replica.describe()
                        ),
                    }
                }
                Err(self.no_good_copy(index, frame_no, e))
            }
        }
    }

    /// The error for a frame no target holds intact: a missing pack is named as such, and
    /// the replicas tried are named.
    fn no_good_copy(&self, index: &Index, frame_no: u32, e: Error) -> Error {
        let f = &index.frames[frame_no as usize];
        let name = pack_object_name(&index.packs[f.pack as usize].id);
        let e = if e.kind == ErrorKind::NotFound {
            Error::integrity(format!("pack {name} is missing")).hint(
                "the backups that use it cannot be restored from this repository; \
                 run `lifeboat repo check` to list them",
            )
        } else {
            e
        };
        self.tried_replicas(e)
    }

    /// `e`, saying which replicas were tried and had no good copy either (once).
    fn tried_replicas(&self, mut e: Error) -> Error {
        let tried: Vec<String> = self.replicas().iter().map(|r| r.describe()).collect();
        if !tried.is_empty() && !e.message.contains(NO_GOOD_COPY) {
            e.message = format!("{}; {NO_GOOD_COPY} (tried {})", e.message, tried.join(", "));
        }
        e
    }

    /// Frame `frame_no` from replica number `n`, checked like the primary's, through the
    /// small cache of frames read from replicas.
    fn replica_frame(
        &self,
        n: usize,
        replica: &dyn Storage,
        index: &Index,
        frame_no: u32,
        decompressor: &mut compress::Decompressor,
    ) -> Result<std::sync::Arc<Vec<u8>>> {
        let f = &index.frames[frame_no as usize];
        let at = (n, index.packs[f.pack as usize].id, f.offset);
        if let Some(frame) = self.fallback.cached(&at) {
            return Ok(frame);
        }
        let frame =
            std::sync::Arc::new(self.read_frame_from(replica, index, frame_no, decompressor)?);
        self.fallback.cache(at, frame.clone());
        Ok(frame)
    }

    /// Frame `frame_no` from one target, unsealed and decompressed (a missing pack is a
    /// NotFound error).
    fn read_frame_from(
        &self,
        storage: &dyn Storage,
        index: &Index,
        frame_no: u32,
        decompressor: &mut compress::Decompressor,
    ) -> Result<Vec<u8>> {
        let f = &index.frames[frame_no as usize];
        let name = pack_object_name(&index.packs[f.pack as usize].id);
        let stored = storage.get_range(&name, f.offset, f.stored_len as usize)?;
        self.open_frame(index, frame_no, stored, decompressor)
    }

    /// Unseal and decompress the stored bytes of a frame.
    fn open_frame(
        &self,
        index: &Index,
        frame_no: u32,
        stored: Vec<u8>,
        decompressor: &mut compress::Decompressor,
    ) -> Result<Vec<u8>> {
        let f = &index.frames[frame_no as usize];
        let name = pack_object_name(&index.packs[f.pack as usize].id);
        let what = format!("a frame of pack {name} at offset {}", f.offset);
        let stored = self.unseal(ObjectKind::Frame, b"", stored, &what)?;
        decompressor
            .decompress(f.codec, &stored, f.raw_len as usize)
            .map_err(|e| {
                Error::integrity(format!(
                    "pack {name} is corrupted at offset {}: {e}",
                    f.offset
                ))
            })
    }

    /// Read and decompress several frames, handing each to `deliver` (frame number, data)
    /// once, as soon as it is ready: in pack order, not the order given, because frames that
    /// lie side by side in a pack are read with one request (see [`Storage::read_ranges`]).
    /// A frame that cannot be read that way is read on its own with [`read_frame_with`]'s
    /// replica fallback, so the outcome and the errors are those of reading frame by frame.
    /// An error from `deliver` stops the read and is returned.
    ///
    /// [`read_frame_with`]: Repository::read_frame_with
    pub fn read_frames_with(
        &self,
        index: &Index,
        frames: &[u32],
        decompressor: &mut compress::Decompressor,
        deliver: &mut dyn FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let mut order = frames.to_vec();
        order.sort_unstable_by_key(|&n| {
            let f = &index.frames[n as usize];
            (f.pack, f.offset)
        });
        order.dedup();
        let mut rest = &order[..];
        while !rest.is_empty() {
            let len = run_length(index, rest);
            let (run, after) = rest.split_at(len);
            self.read_run(index, run, decompressor, deliver)?;
            rest = after;
        }
        Ok(())
    }

    /// [`Repository::read_frames_with`] for one run of frames of one pack, in offset order.
    fn read_run(
        &self,
        index: &Index,
        run: &[u32],
        decompressor: &mut compress::Decompressor,
        deliver: &mut dyn FnMut(u32, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let Some(&first) = run.first() else {
            return Ok(());
        };
        let name = pack_object_name(&index.packs[index.frames[first as usize].pack as usize].id);
        let ranges: Vec<(u64, usize)> = run
            .iter()
            .map(|&n| {
                let f = &index.frames[n as usize];
                (f.offset, f.stored_len as usize)
            })
            .collect();
        let mut delivered = 0usize;
        // Errors that end the whole read (as opposed to a failed request, after which the
        // frames not yet delivered are read one by one).
        let mut fatal: Option<Error> = None;
        let streamed = self.storage.read_ranges(&name, &ranges, &mut |i, stored| {
            let Some(&n) = run.get(i) else {
                return Err(Error::internal(
                    "storage returned a range that was not asked for",
                ));
            };
            let frame = match self.open_frame(index, n, stored, decompressor) {
                Ok(frame) => Ok(frame),
                // Damaged here: read it again, from a replica if need be.
                Err(_) => self.read_frame_with(index, n, decompressor),
            };
            delivered = i + 1;
            frame.and_then(|frame| deliver(n, frame)).map_err(|e| {
                let stop = Error::new(e.kind, "frame read stopped");
                fatal = Some(e);
                stop
            })
        });
        if let Some(e) = fatal {
            return Err(e);
        }
        if let Err(e) = streamed {
            tracing::debug!("reading {} frames of {name} at once failed: {e}", run.len());
            for &n in &run[delivered..] {
                let frame = self.read_frame_with(index, n, decompressor)?;
                deliver(n, frame)?;
            }
        }
        Ok(())
    }

    /// Read one blob and check it against its id.
    pub fn read_blob(&self, index: &Index, id: &Hash) -> Result<Vec<u8>> {
        self.read_blob_cached(index, id, &mut FrameCache::default())
    }

    /// Read one blob through a cache of the frames read last: the page lists of a backup are
    /// stored side by side, and a file restored from a deduplicated backup reads its chunks
    /// from a few frames at a time (unchanged ones from older backups' frames, changed ones
    /// from the newest), so reading in order decompresses each frame about once.
    pub fn read_blob_cached(
        &self,
        index: &Index,
        id: &Hash,
        cache: &mut FrameCache,
    ) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| missing_blob(index, id))?;
        let frame = match cache.frames.iter().position(|(n, _)| *n == loc.frame) {
            Some(at) => {
                // Most recently used first.
                if let Some(hit) = cache.frames.remove(at) {
                    cache.frames.push_front(hit);
                }
                &cache.frames[0].1
            }
            None => {
                let data = self.read_frame_with(index, loc.frame, &mut cache.decompressor);
                match data {
                    Ok(data) => {
                        cache.frames.push_front((loc.frame, data));
                        cache.frames.truncate(FRAMES_CACHED);
                        &cache.frames[0].1
                    }
                    Err(e) => {
                        return self.read_blob_elsewhere(index, id, &mut cache.decompressor, e)
                    }
                }
            }
        };
        let checked = slice_blob(frame, loc)
            .and_then(|blob| check_blob(index, &self.hasher, id, loc, blob).map(|()| blob));
        match checked {
            Ok(blob) => Ok(blob.to_vec()),
            Err(e) => self.read_blob_elsewhere(index, id, &mut cache.decompressor, e),
        }
    }

    /// A good copy of blob `id` when the copy the index names first fails its check
    /// (`failure`): that frame as a replica holds it (a damaged frame may still
    /// decompress), or another copy the index knows of. `failure`, naming the replicas
    /// tried, if none is good.
    pub fn read_blob_elsewhere(
        &self,
        index: &Index,
        id: &Hash,
        decompressor: &mut compress::Decompressor,
        failure: Error,
    ) -> Result<Vec<u8>> {
        if failure.kind == ErrorKind::Auth {
            return Err(failure);
        }
        if let Some(loc) = index.get(id) {
            for (n, replica) in self.replicas().iter().enumerate() {
                let Ok(frame) =
                    self.replica_frame(n, replica.as_ref(), index, loc.frame, decompressor)
                else {
                    continue;
                };
                if let Ok(blob) = slice_blob(&frame, loc) {
                    if self.hasher.matches(blob, id) {
                        let f = &index.frames[loc.frame as usize];
                        let pack = &index.packs[f.pack as usize].id;
                        // A pack missing here failed in read_frame_with, which tallied it.
                        self.fallback
                            .note(&replica.describe(), pack, Some(f.offset), false);
                        return Ok(blob.to_vec());
                    }
                }
            }
        }
        for loc in index.alternates(id) {
            let Ok(frame) = self.read_frame_with(index, loc.frame, decompressor) else {
                continue;
            };
            if let Ok(blob) = slice_blob(&frame, loc) {
                if self.hasher.matches(blob, id) {
                    tracing::warn!(
                        "blob {} read from its copy in pack {} (the first copy the index names fails its check; run `lifeboat repo check --read-data`)",
                        id.short(),
                        pack_object_name(&index.pack_of(loc).id)
                    );
                    return Ok(blob.to_vec());
                }
            }
        }
        Err(self.tried_replicas(failure))
    }

    /// Bytes stored in the repository (packs, index files, manifests, config).
    pub fn stored_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for prefix in ["data/", "index/", "backups/"] {
            total += self
                .storage
                .list(prefix)?
                .iter()
                .map(|o| o.size)
                .sum::<u64>();
        }
        Ok(total)
    }
}

/// What a read error says once every replica was tried.
const NO_GOOD_COPY: &str = "no replica has a good copy either";

/// Largest gap between two wanted frames of a pack that one read spans: reading a few
/// unwanted bytes costs less than another request.
const MAX_GAP: u64 = 256 << 10;
/// Largest single read of frames, so one request never holds up a reader for long.
const MAX_RUN: u64 = 32 << 20;

/// How many of `frames` (sorted by pack and offset) to read with one request: those of one
/// pack, each starting at most `MAX_GAP` after the previous one ends, `MAX_RUN` bytes at most.
fn run_length(index: &Index, frames: &[u32]) -> usize {
    let Some(&first) = frames.first() else {
        return 0;
    };
    let head = &index.frames[first as usize];
    let mut end = head.offset + u64::from(head.stored_len);
    let mut len = 1;
    for &n in &frames[1..] {
        let f = &index.frames[n as usize];
        let next_end = f.offset + u64::from(f.stored_len);
        if f.pack != head.pack
            || f.offset < end
            || f.offset - end > MAX_GAP
            || next_end - head.offset > MAX_RUN
        {
            break;
        }
        end = next_end;
        len += 1;
    }
    len
}

/// While it lives, reads use the primary alone (see [`Repository::primary_only`]).
pub struct PrimaryOnly<'a>(&'a Repository);

impl Drop for PrimaryOnly<'_> {
    fn drop(&mut self) {
        self.0.fallback.set_enabled(true);
    }
}

/// The frames read last, for [`Repository::read_blob_cached`]: up to [`FRAMES_CACHED`]
/// (~1 MiB each).
#[derive(Default)]
pub struct FrameCache {
    frames: std::collections::VecDeque<(u32, Vec<u8>)>,
    decompressor: compress::Decompressor,
}

/// Frames a [`FrameCache`] keeps: enough for the few sources of a deduplicated file's
/// chunks (measured: restoring a PostgreSQL dump after a day of changes decompressed each
/// frame over and over with a one-frame cache, 3.4x the CPU of a first backup's restore).
pub const FRAMES_CACHED: usize = 8;

pub fn missing_blob(index: &Index, id: &Hash) -> Error {
    let mut msg = format!("blob {} is not in any index", id.to_hex());
    if !index.damaged.is_empty() {
        msg.push_str(&format!(
            " (damaged index files were skipped: {})",
            index.damaged.join(", ")
        ));
    }
    Error::integrity(msg).hint(
        "an index file or pack was lost: `lifeboat repo check` says which, and `lifeboat repo \
         repair` indexes the packs again (copying lost ones from a replica)",
    )
}

pub fn slice_blob<'a>(frame: &'a [u8], loc: &index::BlobLoc) -> Result<&'a [u8]> {
    frame
        .get(loc.offset as usize..(loc.offset as usize + loc.len as usize))
        .ok_or_else(|| Error::integrity("blob lies outside its frame"))
}

pub fn check_blob(
    index: &Index,
    hasher: &BlobHasher,
    id: &Hash,
    loc: &index::BlobLoc,
    blob: &[u8],
) -> Result<()> {
    if !hasher.matches(blob, id) {
        let pack = pack_object_name(&index.pack_of(loc).id);
        return Err(Error::integrity(format!(
            "blob {} in pack {pack} is corrupted (hash mismatch)",
            id.short()
        ))
        .hint("run `lifeboat repo check --read-data` to find every damaged object"));
    }
    Ok(())
}
