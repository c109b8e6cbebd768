//! The repository's `config` object: format version, features, encryption scheme, and (in
//! encrypted repositories of format 2) the key layout and a MAC under a key derived from the
//! root key, so that nobody without the keys can change what a client acts on: the
//! encryption scheme, the recipient of a write-only repository, how many data keys there
//! are, the features.
//!
//! Versioning: `format_version` is raised only for a change no older reader could survive;
//! everything else goes through `features`, a list of names a reader must know, or refuse to
//! open the repository ("made by a newer Lifeboat"). Format 1 readers refuse format 2 by its
//! version number, which they check.

use crate::error::{Error, Result};
use crate::repo::crypto::RootKeys;
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The most each kind of object may hold: each is read whole into memory, and a planted
// giant one must not exhaust it (a larger one is refused unread, as damaged or planted).
/// Configs, key files, data keys, recipient files.
pub const SMALL_OBJECT_MAX: u64 = 1 << 20;
/// Coordination records (lock markers, plans, pins, tombstones, replica lists).
pub const RECORD_MAX: u64 = 64 << 20;
/// Manifests (their page lists are blobs in packs; a manifest names them).
pub const MANIFEST_MAX: u64 = 64 << 20;
/// Index files (a backup writes one per pack; a rotation's inventory names every object).
pub const INDEX_MAX: u64 = 512 << 20;

/// The format this version writes.
pub const FORMAT_VERSION: u32 = 2;
/// Formats this version reads (format 1 read-only, until `repo upgrade`).
pub const OLDEST_READABLE: u32 = 1;
/// Features this version knows. A repository that lists any other was made by a newer
/// Lifeboat, which may store things this one would misread or delete.
pub const KNOWN_FEATURES: &[&str] = &[
    crate::repo::manifest::FEATURE,
    crate::repo::segment::FEATURE,
    crate::repo::pgwal::FEATURE,
];

/// The encryption scheme name in `config`.
pub const ENCRYPTION: &str = "aes-256-gcm+blake3";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format_version: u32,
    #[serde(default)]
    pub features: Vec<String>,
    pub id: String,
    pub created: String,
    /// Hash naming blobs and objects.
    pub hash: String,
    /// `none`, or `aes-256-gcm+blake3` (see the encryption section of FORMAT.md).
    pub encryption: String,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u64,
    /// Encrypted repositories of format 2: the key layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysSection>,
    /// Set by `repo upgrade`: the format the repository was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgraded_from: Option<u32>,
    /// Raised by every change of the config: the local trust state refuses one that goes
    /// back (an older, authentic config put back).
    #[serde(default)]
    pub revision: u64,
}

/// The keys of an encrypted repository, authenticated with the config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeysSection {
    /// Key epoch: 0 until the first `key rotate --full`, which replaces the root keys.
    pub epoch: u32,
    /// One entry per data-key generation (`keys/data-<generation>`): the epoch whose root key
    /// seals it. The last generation encrypts new objects.
    pub data_keys: Vec<u32>,
    /// Write-only repositories: frames and manifests are sealed to this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// A full key rotation is re-sealing manifests, index files and records. Until it ends,
    /// those not yet re-sealed are refused (run `key rotate --full` again to finish).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rekeying: bool,
    /// The key files (`keys/<id>`) the owners made: tried first, so that key files planted
    /// in the storage cannot crowd them out of a command's key-derivation budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_files: Vec<String>,
}

impl RepoConfig {
    /// The pack size to write, within bounds whatever the config says: a pack is held in
    /// memory while it is written, and a format-1 config was not authenticated.
    pub fn pack_target(&self) -> u64 {
        self.pack_size.clamp(1 << 20, 256 << 20)
    }

    pub fn is_encrypted(&self) -> bool {
        self.encryption != "none"
    }

    /// Whether this version may write to the repository (format 1 must be upgraded first).
    pub fn is_current(&self) -> bool {
        self.format_version == FORMAT_VERSION
    }

    /// Parse a stored config and check that this version can read it. Nothing is
    /// authenticated yet: see [`RepoConfig::verify`].
    pub fn parse(data: &[u8], location: &str) -> Result<(RepoConfig, Option<String>)> {
        let unreadable = |e: String| {
            Error::integrity(format!("the repository config at {location} is unreadable: {e}"))
                .hint("restore `config` from a replica, or compare it with `lifeboat repo show` on another copy")
        };
        let mut value: Value =
            serde_json::from_slice(data).map_err(|e| unreadable(e.to_string()))?;
        let mac = value
            .as_object_mut()
            .and_then(|o| o.remove("mac"))
            .and_then(|m| m.as_str().map(str::to_string));
        let version = value
            .get("format_version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if version > u64::from(FORMAT_VERSION) {
            return Err(newer(
                location,
                &format!("format {version}; this Lifeboat reads up to {FORMAT_VERSION}"),
            ));
        }
        if version < u64::from(OLDEST_READABLE) {
            return Err(unreadable(format!(
                "format_version {version} is not a Lifeboat format"
            )));
        }
        let unknown: Vec<String> = value
            .get("features")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| f.as_str().unwrap_or("?").to_string())
                    .filter(|f| !KNOWN_FEATURES.contains(&f.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if !unknown.is_empty() {
            return Err(newer(location, &format!("features {}", unknown.join(", "))));
        }
        let config: RepoConfig =
            serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
        if !matches!(config.encryption.as_str(), "none" | ENCRYPTION) {
            return Err(newer(
                location,
                &format!("encryption '{}'", config.encryption),
            ));
        }
        if config.format_version >= 2 && config.is_encrypted() && config.keys.is_none() {
            return Err(unreadable(
                "an encrypted repository's config without its keys section".into(),
            ));
        }
        Ok((config, mac))
    }

    /// The bytes the MAC covers: the config as JSON with sorted keys and no spaces, without
    /// the `mac` field.
    fn canonical(&self) -> Result<Vec<u8>> {
        let value = serde_json::to_value(self).map_err(|e| Error::internal(e.to_string()))?;
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        Ok(out)
    }

    /// Check the MAC of an encrypted repository's config (format 2) with the root keys that
    /// opened it. Fails when the config was changed by someone without the keys, or belongs
    /// to other keys (a key file retired by `key rotate --full`, or of another repository).
    pub fn verify(&self, mac: Option<&str>, root: &RootKeys) -> Result<()> {
        if self.format_version < 2 || !self.is_encrypted() {
            return Ok(());
        }
        let expected = hex::encode(root.config_mac(&self.canonical()?));
        match mac {
            Some(m) if constant_time_eq(m.as_bytes(), expected.as_bytes()) => Ok(()),
            _ => Err(Error::new(
                crate::error::ErrorKind::Trust,
                "the repository config is not authenticated by this repository's keys: it was \
                 changed by someone without them, or these keys were retired by a full key rotation",
            )
            .hint("if a key was rotated, ask for a current passphrase; otherwise restore `config` from a replica and find out who can write to this storage")),
        }
    }

    /// The stored form: pretty JSON, with the MAC last where there are keys to compute it.
    pub fn encode(&self, root: Option<&RootKeys>) -> Result<Vec<u8>> {
        let mut value = serde_json::to_value(self).map_err(|e| Error::internal(e.to_string()))?;
        if let (Some(root), true) = (root, self.format_version >= 2 && self.is_encrypted()) {
            let mac = hex::encode(root.config_mac(&self.canonical()?));
            if let Some(o) = value.as_object_mut() {
                o.insert("mac".into(), Value::String(mac));
            }
        }
        serde_json::to_vec_pretty(&value).map_err(|e| Error::internal(e.to_string()))
    }
}

fn newer(location: &str, what: &str) -> Error {
    Error::usage(format!(
        "the repository at {location} was made by a newer Lifeboat ({what})"
    ))
    .hint("use a newer lifeboat; this one leaves the repository untouched")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// JSON with object keys sorted and no whitespace: one byte string per value, whatever
/// order a writer used (serde_json may preserve insertion order when a dependency asks).
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RepoConfig {
        RepoConfig {
            format_version: 2,
            features: vec![],
            id: "ab".repeat(16),
            created: "2026-12-06T00:00:00Z".into(),
            hash: "blake3-keyed".into(),
            encryption: ENCRYPTION.into(),
            pack_size: 16 << 20,
            keys: Some(KeysSection {
                epoch: 0,
                data_keys: vec![0],
                recipient: None,
                rekeying: false,
                key_files: vec![],
            }),
            upgraded_from: None,
            revision: 0,
        }
    }

    #[test]
    fn a_changed_config_fails_its_mac() {
        let root = RootKeys::generate(0);
        let stored = config().encode(Some(&root)).unwrap();
        let (parsed, mac) = RepoConfig::parse(&stored, "r").unwrap();
        parsed.verify(mac.as_deref(), &root).unwrap();
        // Someone without the keys turns encryption off, plants a recipient, drops a data
        // key generation, or removes the MAC: each is detected.
        let text = String::from_utf8(stored.clone()).unwrap();
        for (from, to) in [
            ("\"data_keys\": [\n      0\n    ]", "\"data_keys\": []"),
            ("\"pack_size\": 16777216", "\"pack_size\": 1"),
            ("\"epoch\": 0", "\"epoch\": 1"),
        ] {
            assert!(text.contains(from), "{from} in {text}");
            let changed = text.replace(from, to);
            let (c, m) = RepoConfig::parse(changed.as_bytes(), "r").unwrap();
            assert!(c.verify(m.as_deref(), &root).is_err(), "{to}");
        }
        let mut with_recipient = parsed.clone();
        with_recipient.keys.as_mut().unwrap().recipient = Some("lifeboat-recipient-00".into());
        assert!(with_recipient.verify(mac.as_deref(), &root).is_err());
        assert!(parsed.verify(None, &root).is_err(), "no MAC");
        assert!(
            parsed
                .verify(mac.as_deref(), &RootKeys::generate(0))
                .is_err(),
            "other keys"
        );
        // Key order and spacing do not matter.
        let mut v: Value = serde_json::from_slice(&stored).unwrap();
        let compact = serde_json::to_vec(&v).unwrap();
        let (c, m) = RepoConfig::parse(&compact, "r").unwrap();
        c.verify(m.as_deref(), &root).unwrap();
        v.as_object_mut().unwrap().remove("mac");
    }

    #[test]
    fn newer_formats_and_unknown_features_are_refused() {
        let root = RootKeys::generate(0);
        let mut c = config();
        c.features = vec!["content-kinds-9".into()];
        let e = RepoConfig::parse(&c.encode(Some(&root)).unwrap(), "/r").unwrap_err();
        assert!(
            e.message
                .contains("made by a newer Lifeboat (features content-kinds-9)"),
            "{}",
            e.message
        );
        let mut c = config();
        c.format_version = 3;
        let e = RepoConfig::parse(&c.encode(Some(&root)).unwrap(), "/r").unwrap_err();
        assert!(e.message.contains("format 3"), "{}", e.message);
        let v1 = br#"{"format_version":1,"id":"x","created":"t","hash":"blake3","encryption":"none","pack_size":1}"#;
        let (c, mac) = RepoConfig::parse(v1, "/r").unwrap();
        assert!(!c.is_current() && mac.is_none());
        let mut c = config();
        c.encryption = "rot13".into();
        assert!(RepoConfig::parse(&c.encode(None).unwrap(), "/r").is_err());
    }
}
