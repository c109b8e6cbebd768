//! Continuous shipping of SQLite commits and point-in-time restore: `frames` reads a live
//! `-wal` file, `clock` dates its commits, `replicate` ships them, `streams` finds what replication stored, `pitr`
//! restores a moment, `retain` decides what retention keeps of it, `compact` merges old
//! segments.
pub mod clock;
pub mod compact;
pub mod frames;
pub mod pitr;
pub mod replicate;
pub mod retain;
pub mod streams;
