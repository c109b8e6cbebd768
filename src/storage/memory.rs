//! A storage target in memory: the reference implementation of the `Storage` contract, for
//! tests of the engine that need no disk or server (and a yardstick for the conformance
//! suite every real target passes).

use super::{check_small, ObjectInfo, Storage};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// `put_file_new` consumes files staged here.
    staging: tempfile::TempDir,
}

impl MemoryStorage {
    pub fn new() -> Result<MemoryStorage> {
        let staging = super::staging_tempdir("lifeboat-memory-")?;
        Ok(MemoryStorage {
            objects: Mutex::new(BTreeMap::new()),
            staging,
        })
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self, name: &str) -> Error {
        Error::not_found(format!("cannot read {}/{name}: not found", self.describe()))
    }
}

impl Storage for MemoryStorage {
    fn describe(&self) -> String {
        "memory:".into()
    }

    fn put_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        let mut objects = self.objects();
        if objects.contains_key(name) {
            return Ok(false);
        }
        objects.insert(name.to_string(), data.to_vec());
        Ok(true)
    }

    fn put_file_new(&self, name: &str, staged: &Path) -> Result<bool> {
        let data = std::fs::read(staged).map_err(|e| Error::io("cannot read", staged, e))?;
        let _ = std::fs::remove_file(staged);
        self.put_new(name, &data)
    }

    fn staging_dir(&self) -> Result<PathBuf> {
        Ok(self.staging.path().to_path_buf())
    }

    fn put_replace(&self, name: &str, data: &[u8]) -> Result<()> {
        self.objects().insert(name.to_string(), data.to_vec());
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.objects()
            .get(name)
            .cloned()
            .ok_or_else(|| self.missing(name))
    }

    fn get_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let data = self.get(name)?;
        check_small(self, name, data.len() as u64, max)?;
        Ok(data)
    }

    fn get_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let objects = self.objects();
        let data = objects.get(name).ok_or_else(|| self.missing(name))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(len).and_then(|end| data.get(start..end)) {
            Some(bytes) => Ok(bytes.to_vec()),
            None => Err(Error::integrity(format!(
                "{}/{name} is truncated: wanted {len} bytes at offset {offset}, it has {}",
                self.describe(),
                data.len()
            ))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, data)| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
            })
            .collect())
    }

    fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.objects().contains_key(name))
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.objects().remove(name);
        Ok(())
    }
}
