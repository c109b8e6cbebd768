//! PLACEHOLDER until the DuckDB module lands.
use crate::error::{Error, Result};
use std::path::Path;
pub const SIDECARS: &[&str] = &[".wal"];
pub struct DuckdbSource;
impl DuckdbSource {
    pub fn new(_path: &Path) -> Result<DuckdbSource> {
        Err(Error::usage("duckdb not yet"))
    }
}
impl super::Source for DuckdbSource {
    fn kind(&self) -> super::Kind {
        super::Kind::Duckdb
    }
    fn back_up(&mut self, _w: &mut dyn super::ContentWriter) -> Result<super::BackedUp> {
        Err(Error::usage("duckdb not yet"))
    }
}
