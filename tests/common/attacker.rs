//! The attacker's hands on a repository: someone who can read, write and delete objects of
//! the storage (a local folder or an S3 bucket on the real test server) but holds no key.
//! Used by tests/repository_trust.rs to plant, replace, roll back and forge objects behind
//! lifeboat's back, and to take a snapshot proving a refused command changed nothing.

use super::s3::S3Server;
use super::server::TestStore;
use super::Env;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub enum Place {
    Local(PathBuf),
    S3 { server: S3Server, prefix: String },
}

pub struct Storage {
    pub place: Place,
}

impl Storage {
    /// A folder of the test's own.
    pub fn local(env: &Env, name: &str) -> Storage {
        Storage {
            place: Place::Local(env.path(name)),
        }
    }

    /// A prefix in the bucket of a fresh S3 server.
    pub fn s3(prefix: &str) -> Storage {
        Storage {
            place: Place::S3 {
                server: S3Server::start(),
                prefix: prefix.to_string(),
            },
        }
    }

    /// Another location on the same place (another folder, another prefix of the bucket).
    pub fn sibling(&self, name: &str) -> String {
        match &self.place {
            Place::Local(p) => p.with_file_name(name).display().to_string(),
            Place::S3 { server, .. } => server.url(name),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.place, Place::S3 { .. })
    }

    /// The repository location lifeboat is given.
    pub fn url(&self) -> String {
        match &self.place {
            Place::Local(p) => p.display().to_string(),
            Place::S3 { server, prefix } => server.url(prefix),
        }
    }

    /// Variables a lifeboat process needs to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.place {
            Place::Local(_) => Vec::new(),
            Place::S3 { server, .. } => server.env(),
        }
    }

    fn key(&self, name: &str) -> String {
        match &self.place {
            Place::Local(_) => name.to_string(),
            Place::S3 { prefix, .. } => format!("{prefix}/{name}"),
        }
    }

    /// The object `name` (relative to the repository), if it exists.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        match &self.place {
            Place::Local(root) => std::fs::read(root.join(name)).ok(),
            Place::S3 { server, .. } => {
                let r = server.get(&server.bucket, &self.key(name));
                (r.status == 200).then_some(r.body)
            }
        }
    }

    pub fn put(&self, name: &str, data: &[u8]) {
        match &self.place {
            Place::Local(root) => {
                let path = root.join(name);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, data).expect("write");
            }
            Place::S3 { server, .. } => {
                let r = server.put(&server.bucket, &self.key(name), data);
                assert_eq!(r.status, 200, "attacker's PUT {name}");
            }
        }
    }

    pub fn delete(&self, name: &str) {
        match &self.place {
            Place::Local(root) => {
                let _ = std::fs::remove_file(root.join(name));
            }
            Place::S3 { server, .. } => {
                server.delete(&server.bucket, &self.key(name));
            }
        }
    }

    /// Names (relative to the repository) under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut names = match &self.place {
            Place::Local(root) => super::walk_files(root)
                .into_iter()
                .filter_map(|p| Some(p.strip_prefix(root).ok()?.display().to_string()))
                .filter(|n| n.starts_with(prefix))
                .collect(),
            Place::S3 { server, prefix: p } => server
                .list(&server.bucket, &format!("{p}/{prefix}"))
                .into_iter()
                .filter_map(|k| k.strip_prefix(&format!("{p}/")).map(str::to_string))
                .collect::<Vec<_>>(),
        };
        names.sort();
        names
    }

    /// Every object and its bytes, except the local staging folder and the locks (which
    /// readers write and remove as a courtesy): what "the repository is untouched" compares.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.list("")
            .into_iter()
            .filter(|n| !n.starts_with("tmp/") && !n.starts_with("locks/"))
            .filter_map(|n| Some((n.clone(), self.get(&n)?)))
            .collect()
    }

    /// Replace the whole repository with `other`'s objects (the attacker's own repository).
    pub fn replace_with(&self, other: &Storage) {
        for n in self.list("") {
            self.delete(&n);
        }
        for (n, data) in other.snapshot() {
            self.put(&n, &data);
        }
    }

    /// Copy the whole repository into a local folder (to work on it with the library).
    pub fn download(&self, to: &Path) {
        for (n, data) in self.snapshot() {
            let path = to.join(&n);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, data).expect("write");
        }
    }
}

/// A config object edited the way an attacker would: parse, change, write back (the MAC,
/// if any, left as it was unless the edit removes it).
pub fn edit_config(store: &Storage, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&store.get("config").expect("config")).expect("config json");
    edit(&mut v);
    store.put("config", &serde_json::to_vec_pretty(&v).expect("json"));
}
