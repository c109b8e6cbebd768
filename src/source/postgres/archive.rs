//! The `pg_dump` archive as Lifeboat stores it: directory format without compression
//! (`pg_dump -Fd -Z0`), one file per table (`<dump id>.dat`, COPY text, one line per row,
//! ending `\.` and two empty lines), large objects as `blob_<oid>.dat` listed in
//! `blobs.toc`, and `toc.dat`, the table of contents.
//!
//! Lifeboat reads `toc.dat` itself (the format of `pg_backup_archiver.c`, archive versions
//! 1.12 to 1.16, PostgreSQL 11 to 17) for three things no client program prints unambiguously:
//! which data file holds which table (to count rows), a checksum of the schema, and the
//! order of the data files (to write a tar archive `pg_restore` reads).

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// The table of contents' file.
pub const TOC: &str = "toc.dat";
/// What ends every table's data file.
pub const DATA_END: &[u8] = b"\\.\n\n\n";

/// One entry of the table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    pub dump_id: i64,
    /// `TABLE`, `TABLE DATA`, `INDEX`, `BLOBS`, …
    pub desc: String,
    pub namespace: String,
    pub tag: String,
    pub defn: String,
    /// The data file (`3342.dat`, `blobs.toc`), empty when the entry has none.
    pub filename: String,
}

/// What `toc.dat` says.
#[derive(Debug, Clone)]
pub struct Toc {
    /// Archive version (major, minor, revision), e.g. (1, 14, 0).
    pub version: (u8, u8, u8),
    pub database: String,
    pub server_version: String,
    pub dump_version: String,
    pub entries: Vec<TocEntry>,
}

impl Toc {
    /// The data files in the order `pg_restore` reads them.
    pub fn data_files(&self) -> impl Iterator<Item = &TocEntry> {
        self.entries.iter().filter(|e| !e.filename.is_empty())
    }

    /// `<file>` → `schema.table`, for the files of table data.
    pub fn table_files(&self) -> BTreeMap<String, String> {
        self.entries
            .iter()
            .filter(|e| e.desc == "TABLE DATA" && !e.filename.is_empty())
            .map(|e| (e.filename.clone(), table_key(&e.namespace, &e.tag)))
            .collect()
    }

    /// SHA-256 over every entry's kind, schema, name and definition, in order: equal for two
    /// dumps of the same schema (no dump ids, times or object ids in it).
    pub fn schema_sha256(&self) -> String {
        let mut h = crate::id::Sha256Stream::default();
        for e in &self.entries {
            for part in [&e.desc, &e.namespace, &e.tag, &e.defn] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
        }
        h.finish_hex()
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(bad("it ends in the middle of an entry"));
        };
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// `WriteInt`: a sign byte, then `int_size` bytes of magnitude, least significant first.
    fn int(&mut self) -> Result<i64> {
        let negative = self.byte()? != 0;
        let n = self.int_size;
        let mut v: i64 = 0;
        for (i, b) in self.bytes(n)?.iter().enumerate() {
            if i < 8 {
                v |= (*b as i64) << (8 * i);
            }
        }
        Ok(if negative { v.wrapping_neg() } else { v })
    }

    /// `WriteStr`: a length (-1 for NULL), then the bytes.
    fn string(&mut self) -> Result<Option<String>> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| bad("a string is too long"))?;
        if len > self.data.len() {
            return Err(bad("a string runs past the end"));
        }
        Ok(Some(String::from_utf8_lossy(self.bytes(len)?).into_owned()))
    }

    fn text(&mut self) -> Result<String> {
        Ok(self.string()?.unwrap_or_default())
    }
}

fn bad(why: &str) -> Error {
    Error::integrity(format!("the dump's {TOC} cannot be read: {why}"))
}

/// Read `toc.dat` of a directory-format archive.
pub fn parse_toc(data: &[u8]) -> Result<Toc> {
    if data.len() < 11 || &data[..5] != b"PGDMP" {
        return Err(bad("it does not start with PGDMP"));
    }
    let version = (data[5], data[6], data[7]);
    let v = (version.0 as u32) << 16 | (version.1 as u32) << 8 | version.2 as u32;
    let ver = |minor: u32| (1 << 16) | (minor << 8);
    if v < ver(12) || v >= ver(17) {
        return Err(Error::usage(format!(
            "the dump's archive version {}.{}.{} is not one this Lifeboat reads (1.12 to 1.16: pg_dump 11 to 17)",
            version.0, version.1, version.2
        ))
        .hint("use the pg_dump of a PostgreSQL version Lifeboat supports, or a newer Lifeboat"));
    }
    let int_size = data[8] as usize;
    if !(1..=8).contains(&int_size) {
        return Err(bad("its integer size is out of range"));
    }
    let mut r = Reader {
        data,
        pos: 11,
        int_size,
    };
    // Compression: an int before 1.15, one byte (the algorithm) from 1.15.
    if v >= ver(15) {
        r.byte()?;
    } else {
        r.int()?;
    }
    for _ in 0..7 {
        r.int()?; // the creation time: sec, min, hour, mday, mon, year, isdst
    }
    let database = r.text()?;
    let server_version = r.text()?;
    let dump_version = r.text()?;
    let count = r.int()?;
    if count < 0 || count as usize > data.len() {
        return Err(bad("its entry count is out of range"));
    }
    // Grown as entries are read: a count from a damaged file must not size an allocation.
    let mut entries = Vec::with_capacity((count as usize).min(4096));
    for _ in 0..count {
        let dump_id = r.int()?;
        r.int()?; // had a data dumper
        r.text()?; // table oid
        r.text()?; // oid
        let tag = r.text()?;
        let desc = r.text()?;
        r.int()?; // section
        let defn = r.text()?;
        r.text()?; // drop statement
        r.text()?; // copy statement
        let namespace = r.text()?;
        r.text()?; // tablespace
        if v >= ver(14) {
            r.text()?; // table access method
        }
        if v >= ver(16) {
            r.int()?; // relkind
        }
        r.text()?; // owner
        r.text()?; // "with oids", always false
        while r.string()?.is_some() {} // dependencies, ended by NULL
        let filename = r.text()?;
        entries.push(TocEntry {
            dump_id,
            desc,
            namespace,
            tag,
            defn,
            filename,
        });
    }
    Ok(Toc {
        version,
        database,
        server_version,
        dump_version,
        entries,
    })
}

/// The largest table of contents or list of large objects Lifeboat reads into memory: real
/// ones are kilobytes to megabytes; a larger one comes from a damaged or forged archive.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// Whether `name` is a table's data file (`<dump id>.dat`), not a large object's.
pub fn is_table_data(name: &str) -> bool {
    name.ends_with(".dat") && !name.starts_with("blob_") && name != TOC
}

/// Whether `name` is a list of large objects: `blobs.toc` (archives before 1.16) or
/// `blobs_<dump id>.toc` (pg_dump 17).
pub fn is_blobs_list(name: &str) -> bool {
    name == "blobs.toc" || (name.starts_with("blobs_") && name.ends_with(".toc"))
}

/// The files the table of contents names must be plain names in the dump's folder, each
/// named once: a path elsewhere would be read (verify) or opened (pg_restore) outside it,
/// and a file named twice would be opened twice.
pub fn check_data_files(toc: &Toc) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for e in toc.data_files() {
        let f = &e.filename;
        let plain = !f.is_empty()
            && !f.starts_with('.')
            && !f.contains('/')
            && !f.contains('\0')
            && f != TOC;
        if !plain {
            return Err(bad(&format!("it names the data file '{f}'")));
        }
        if !seen.insert(f.as_str()) {
            return Err(bad(&format!("it names the data file '{f}' twice")));
        }
    }
    Ok(())
}

/// `schema.table`, each part double-quoted unless it is a plain lower-case name (as
/// PostgreSQL prints identifiers), so no two tables share a key and the key reads back.
pub fn table_key(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_if_needed(schema), quote_if_needed(table))
}

fn quote_if_needed(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The SQL name of a table key: both parts always quoted (a plain name may be a keyword).
pub fn key_to_sql(key: &str) -> Result<String> {
    let (schema, table) = split_key(key)?;
    Ok(format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        table.replace('"', "\"\"")
    ))
}

/// The schema and table names of a key written by [`table_key`].
pub fn split_key(key: &str) -> Result<(String, String)> {
    let bad_key = || Error::integrity(format!("'{key}' is not a schema.table name"));
    let (schema, rest) = take_part(key).ok_or_else(bad_key)?;
    let rest = rest.strip_prefix('.').ok_or_else(bad_key)?;
    let (table, rest) = take_part(rest).ok_or_else(bad_key)?;
    if !rest.is_empty() {
        return Err(bad_key());
    }
    Ok((schema, table))
}

fn take_part(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, c)| *c) == Some('"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some((out, &rest[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find('.').unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// Counts the rows of one table's data file as its bytes go by.
#[derive(Default)]
pub struct RowCounter {
    newlines: u64,
    tail: Vec<u8>,
    bytes: u64,
}

impl RowCounter {
    pub fn update(&mut self, data: &[u8]) {
        self.newlines += memchr::memchr_iter(b'\n', data).count() as u64;
        self.bytes += data.len() as u64;
        self.tail
            .extend_from_slice(&data[data.len().saturating_sub(DATA_END.len())..]);
        let excess = self.tail.len().saturating_sub(DATA_END.len());
        self.tail.drain(..excess);
    }

    /// The rows, or `None` when the file does not end as a complete table's data does.
    pub fn rows(&self) -> Option<u64> {
        (self.tail == DATA_END).then(|| self.newlines - 3)
    }
}

/// A reader that counts rows as it passes bytes on.
pub struct Counting<'a, R> {
    pub inner: R,
    pub counter: &'a mut RowCounter,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.update(&buf[..n]);
        Ok(n)
    }
}

/// Large objects listed in a `blobs.toc` (one `<oid> blob_<oid>.dat` line each).
pub fn count_blobs(blobs_toc: &[u8]) -> u64 {
    blobs_toc
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"blob_") || l.first().is_some_and(u8::is_ascii_digit))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_quote_and_split_back() {
        for (schema, table) in [
            ("public", "pgbench_accounts"),
            ("app", "Mixed Case"),
            ("we\"ird", "a.b"),
            ("1st", "user"),
        ] {
            let key = table_key(schema, table);
            assert_eq!(
                split_key(&key).unwrap(),
                (schema.into(), table.into()),
                "{key}"
            );
        }
        assert_eq!(table_key("app", "Mixed Case"), "app.\"Mixed Case\"");
        assert_eq!(key_to_sql("public.t").unwrap(), "\"public\".\"t\"");
        assert!(split_key("nodot").is_err());
    }

    #[test]
    fn rows_are_counted_across_reads() {
        let data = b"x\t1\n\t2\nmulti\\nline\t3\n\\N\t4\n\\.\n\n\n";
        for cut in 0..data.len() {
            let mut c = RowCounter::default();
            c.update(&data[..cut]);
            c.update(&data[cut..]);
            assert_eq!(c.rows(), Some(4), "cut at {cut}");
        }
        let mut empty = RowCounter::default();
        empty.update(b"\\.\n\n\n");
        assert_eq!(empty.rows(), Some(0));
        let mut cut_short = RowCounter::default();
        cut_short.update(b"x\t1\n\t2\n");
        assert_eq!(cut_short.rows(), None);
    }

    /// A table of contents as pg_dump 15 writes it (archive 1.14, 4-byte ints).
    fn toc_bytes(entries: &[(&str, &str, &str, &str)]) -> Vec<u8> {
        let int = |out: &mut Vec<u8>, v: i64| {
            out.push(u8::from(v < 0));
            out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        };
        let s = |out: &mut Vec<u8>, t: Option<&str>| match t {
            None => int(out, -1),
            Some(t) => {
                int(out, t.len() as i64);
                out.extend_from_slice(t.as_bytes());
            }
        };
        let mut o = b"PGDMP".to_vec();
        o.extend_from_slice(&[1, 14, 0, 4, 8, 3]);
        int(&mut o, 0);
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut o, v);
        }
        s(&mut o, Some("app"));
        s(&mut o, Some("15.18"));
        s(&mut o, Some("15.18"));
        int(&mut o, entries.len() as i64);
        for (i, (desc, ns, tag, file)) in entries.iter().enumerate() {
            int(&mut o, 100 + i as i64);
            int(&mut o, 1);
            s(&mut o, Some("0"));
            s(&mut o, Some("16384"));
            s(&mut o, Some(tag));
            s(&mut o, Some(desc));
            int(&mut o, 2);
            s(&mut o, Some("CREATE ..."));
            s(&mut o, Some(""));
            s(&mut o, None);
            s(&mut o, Some(ns));
            s(&mut o, Some(""));
            s(&mut o, Some("heap"));
            s(&mut o, Some("postgres"));
            s(&mut o, Some("false"));
            s(&mut o, Some("7"));
            s(&mut o, None);
            s(&mut o, Some(file));
        }
        o
    }

    #[test]
    fn a_toc_reads_back() {
        let data = toc_bytes(&[
            ("TABLE", "app", "Mixed Case", ""),
            ("TABLE DATA", "app", "Mixed Case", "101.dat"),
            ("BLOBS", "", "BLOBS", "blobs.toc"),
        ]);
        let toc = parse_toc(&data).unwrap();
        assert_eq!(toc.version, (1, 14, 0));
        assert_eq!(toc.database, "app");
        assert_eq!(toc.entries.len(), 3);
        assert_eq!(
            toc.table_files(),
            BTreeMap::from([("101.dat".to_string(), "app.\"Mixed Case\"".to_string())])
        );
        let files: Vec<&str> = toc.data_files().map(|e| e.filename.as_str()).collect();
        assert_eq!(files, ["101.dat", "blobs.toc"]);
        // Cut anywhere, it is refused, never misread.
        for cut in 0..data.len() {
            assert!(parse_toc(&data[..cut]).is_err(), "cut at {cut}");
        }
    }
}
