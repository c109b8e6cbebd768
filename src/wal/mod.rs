//! Continuous shipping of SQLite commits and point-in-time restore: `frames` reads a live
//! `-wal` file, `streams` finds what replication stored.
pub mod frames;
pub mod pitr;
pub mod replicate;
pub mod streams;
