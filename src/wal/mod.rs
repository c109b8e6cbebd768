//! Continuous shipping of SQLite commits and point-in-time restore: `frames` reads a live
//! `-wal` file, `streams` finds what replication stored, `retain` decides what retention
//! keeps of it.
pub mod frames;
pub mod pitr;
pub mod replicate;
pub mod retain;
pub mod streams;
