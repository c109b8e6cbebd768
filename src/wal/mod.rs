//! Continuous shipping of SQLite commits and point-in-time restore: `frames` reads a live
//! `-wal` file.
pub mod frames;
