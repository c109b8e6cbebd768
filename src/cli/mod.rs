//! Subcommand groups of the `lifeboat` binary that are big enough for a file of their own.

pub mod argv;
pub mod pg_physical;
pub mod repair;
pub mod retention;
