//! Lifeboat: consistent, deduplicated, verified backups of live databases.
//!
//! The data path is one straight line through the modules:
//! `source` (consistent snapshot) → `ops::backup` (hash, dedup) → `repo::compress` →
//! `repo::pack` → `storage`; `ops::restore` and `ops::verify` walk it backwards.

pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod error;
pub mod host;
pub mod id;
pub mod interrupt;
pub mod ops;
pub mod progress;
pub mod repo;
pub mod secret;
pub mod source;
pub mod storage;
pub mod trust;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
