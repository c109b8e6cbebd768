//! How coordination records are stored: locks, plans, pins, verifications, tombstones and
//! replica lists. They drive decisions (what prune deletes, what sync copies, where backups
//! are sent), so in an encrypted repository of format 2 each is sealed under a data key
//! with its object name as associated data: nobody without the keys can write one, and one
//! cannot be moved to another name. A record that fails this is ignored (with a warning
//! naming it), never acted on.
//!
//! Unencrypted repositories (and format 1) keep them as plain JSON: there is no key to
//! authenticate anything with, and whoever can write such a repository can forge backups
//! outright. What matters most there is kept on the client instead (`trust`: the replicas
//! this machine agreed to send data to).

use crate::error::{Error, Result};
use crate::repo::crypto::{MasterKeys, ObjectKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Records {
    /// Sealing keys; None: plain JSON.
    keys: Option<Arc<MasterKeys>>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.keys.is_some() {
            "Records(sealed)"
        } else {
            "Records(plain)"
        })
    }
}

/// The stored bytes of record `name`, or None if it is not there (deleted since listed).
pub fn fetch(storage: &dyn crate::storage::Storage, name: &str) -> Result<Option<Vec<u8>>> {
    crate::storage::get_if_present(storage, name, crate::repo::format::RECORD_MAX)
}

impl Records {
    /// Plain JSON records (unencrypted or format-1 repositories).
    pub fn plain() -> Records {
        Records { keys: None }
    }

    pub fn sealed(keys: Arc<MasterKeys>) -> Records {
        Records { keys: Some(keys) }
    }

    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// The stored bytes of record `name` (its full object name, e.g. `pins/01m8…`).
    pub fn encode<T: Serialize>(&self, name: &str, value: &T) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
        match &self.keys {
            None => Ok(json),
            Some(k) => k.seal(ObjectKind::Record, name.as_bytes(), &json),
        }
    }

    /// The record stored as `name`; an error (Trust) if it is not authentic, Integrity if it
    /// is unreadable.
    pub fn decode<T: DeserializeOwned>(&self, name: &str, data: &[u8]) -> Result<T> {
        let json = match &self.keys {
            None => data.to_vec(),
            Some(k) => k
                .open(ObjectKind::Record, name.as_bytes(), data, name)
                .map_err(|e| {
                    Error::new(
                        crate::error::ErrorKind::Trust,
                        format!("{name} is not authentic: {}", e.message),
                    )
                })?,
        };
        serde_json::from_slice(&json)
            .map_err(|e| Error::integrity(format!("{name} is unreadable: {e}")))
    }

    /// Every authentic record under `prefix`, with its object name. One deleted meanwhile
    /// is skipped; one that is not authentic is ignored with a warning (it decides nothing);
    /// one that is authentic but unreadable is an error, naming it, with `hint`.
    pub fn read_all<T: DeserializeOwned>(
        &self,
        storage: &dyn crate::storage::Storage,
        prefix: &str,
        hint: &str,
    ) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        for obj in storage.list(prefix)? {
            let Some(data) = fetch(storage, &obj.name)? else {
                continue;
            };
            match self.decode(&obj.name, &data) {
                Ok(v) => out.push((obj.name, v)),
                Err(e) if e.kind == crate::error::ErrorKind::Trust => {
                    tracing::warn!("ignored {}: {e}", obj.name)
                }
                Err(e) => return Err(e.hint(hint)),
            }
        }
        Ok(out)
    }

    /// Whether record `name` is there and authentic (a missing one is not; a bad one is not,
    /// with a warning): for pins and verifications, which only their presence says.
    pub fn holds(&self, storage: &dyn crate::storage::Storage, name: &str) -> Result<bool> {
        Ok(fetch(storage, name)?.is_some_and(|data| {
            self.decode_or_warn::<serde_json::Value>(name, &data)
                .is_some()
        }))
    }

    /// [`Records::decode`], or None with a warning: for listings where one bad record must
    /// neither stop the command nor be acted on.
    pub fn decode_or_warn<T: DeserializeOwned>(&self, name: &str, data: &[u8]) -> Option<T> {
        match self.decode(name, data) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("ignored {name}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_are_bound_to_their_names_and_keys() {
        let keys = Arc::new(MasterKeys::generate());
        let r = Records::sealed(keys);
        let data = r
            .encode("pins/a", &serde_json::json!({"pinned": "now"}))
            .unwrap();
        let v: serde_json::Value = r.decode("pins/a", &data).unwrap();
        assert_eq!(v["pinned"], "now");
        assert!(
            r.decode::<serde_json::Value>("pins/b", &data).is_err(),
            "moved"
        );
        let plain = serde_json::to_vec(&serde_json::json!({"pinned": "now"})).unwrap();
        let e = r.decode::<serde_json::Value>("pins/a", &plain).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Trust, "planted plain JSON");
        let other = Records::sealed(Arc::new(MasterKeys::generate()));
        assert!(
            other.decode::<serde_json::Value>("pins/a", &data).is_err(),
            "other keys"
        );
        assert!(Records::plain()
            .decode::<serde_json::Value>("pins/a", &plain)
            .is_ok());
    }
}
