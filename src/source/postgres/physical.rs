//! Physical base backups of a whole PostgreSQL cluster: `pg_basebackup` over the replication
//! protocol, in tar form, into a private folder that Lifeboat follows as it is written (see
//! `follow`), each tar's files stored as they stream by. Relation files are cut into their
//! 8 KiB pages, so the next base backup stores only the pages that changed, never a whole
//! 1 GiB segment again.
//!
//! The backup needs the WAL from its start to its stop position to be consistent: WAL
//! archiving (`archive_command = 'lifeboat wal-push %p'`) must be on, and the server waits
//! until the last segment is archived before pg_basebackup ends (`--wal-method=none`). The
//! engine checks that those segments are in the repository before the manifest is written.
//!
//! Tablespaces come as one tar each (`<oid>.tar`) and are stored under `pg_tblspc/<oid>/`,
//! the paths `backup_manifest` gives them.

use super::conn::PgTarget;
use super::follow::DumpFolder;
use super::tools::{self, client_failure, Psql};
use crate::error::{Error, Result};
use crate::repo::manifest::{Content, PhysicalInfo, PostgresInfo, Tablespace};
use crate::repo::pgwal;
use crate::repo::tree::{EntryKind, TreeEntry};
use crate::source::{BackedUp, Chunking, ContentWriter, SourceFacts, TreeWriter};
use std::io::Read;
use std::process::{Command, Stdio};

/// Take a base backup of the cluster `target` connects to.
pub fn back_up(target: &PgTarget, writer: &mut dyn ContentWriter) -> Result<BackedUp> {
    let work = super::work_dir("basebackup")?;
    let env = target.client_env(work.path())?;
    // Any database will do for the questions; the backup itself is of the whole cluster.
    let asking = if target.names_database() {
        target.clone()
    } else {
        target.with_database("postgres")
    };
    let (psql, server) = super::connect(&asking, &env)?;
    let checks = preflight(&psql, target)?;
    let major = server.version_num / 10000;
    let basebackup = tools::find("pg_basebackup", Some(major))?;
    let dir = work.path().join("base");
    crate::storage::local::create_private_dir(&dir)?;
    let mut cmd = Command::new(&basebackup.path);
    // --no-sync: every file is stored and deleted at once, never read from this disk again.
    cmd.args([
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-password",
        "--no-sync",
        "--label=lifeboat",
    ])
    .arg(format!("--pgdata={}", dir.display()))
    .arg(format!("--dbname={}", asking.conn_uri()))
    .env("PGAPPNAME", "lifeboat")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(super::private_file(
        &work.path().join("pg_basebackup.err"),
    )?));
    env.apply(&mut cmd);
    let mut folder = DumpFolder::start(&dir, cmd, &basebackup.path)?;
    let mut got = Ingested::default();
    let content = writer.tree(&mut |tree| ingest(&mut folder, tree, &mut got));
    let status = folder.wait();
    let stderr = std::fs::read_to_string(work.path().join("pg_basebackup.err")).unwrap_or_default();
    match status {
        Ok(s) if s.success() => {}
        Ok(_) => return Err(client_failure("pg_basebackup", &asking, &stderr)),
        Err(e) => return Err(e),
    }
    let content: Content = content?;
    let physical = got.facts(checks.system_id, checks.wal_segment_size)?;
    let info = PostgresInfo {
        database: String::new(),
        server: target.server(),
        user: target.user(),
        server_version: server.version,
        server_version_num: server.version_num,
        client_version: basebackup.version.clone(),
        dump_format: "physical".into(),
        database_bytes: checks.cluster_bytes,
        physical: Some(Box::new(physical)),
        ..PostgresInfo::default()
    };
    let mut warnings = Vec::new();
    for line in stderr.lines().filter(|l| l.contains("WARNING")) {
        warnings.push(format!("pg_basebackup: {line}"));
    }
    Ok(BackedUp {
        content,
        facts: SourceFacts::Postgres(info),
        warnings,
    })
}

/// The system identifier of the cluster at `uri` (asked of the server).
pub fn system_id_of_server(uri: &str) -> Result<u64> {
    let target = PgTarget::parse(uri)?;
    let target = if target.names_database() {
        target
    } else {
        target.with_database("postgres")
    };
    let work = super::work_dir("ask")?;
    let env = target.client_env(work.path())?;
    let (psql, _) = super::connect(&target, &env)?;
    let id = psql.value("SELECT system_identifier FROM pg_control_system()")?;
    id.trim()
        .parse()
        .map_err(|_| Error::source(format!("unexpected system identifier {id:?}")))
}

struct Preflight {
    system_id: u64,
    wal_segment_size: u64,
    cluster_bytes: u64,
}

/// What makes a base backup useless or impossible, said before one is taken: WAL archiving
/// off (nothing could make the backup consistent), `wal_level = minimal`, a role without the
/// replication privilege.
fn preflight(psql: &Psql, target: &PgTarget) -> Result<Preflight> {
    let rows = psql.query(
        "SELECT current_setting('wal_level'), current_setting('archive_mode'), \
         current_setting('archive_command'), \
         (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
         (SELECT system_identifier FROM pg_control_system()), \
         current_setting('wal_segment_size', true), \
         (SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database)",
    )?;
    let row = rows
        .into_iter()
        .next()
        .filter(|r| r.len() == 7)
        .ok_or_else(|| Error::source("the server did not answer Lifeboat's questions"))?;
    let server = target.display();
    if row[0] == "minimal" {
        return Err(Error::source(format!(
            "{server} runs with wal_level = minimal: its WAL cannot rebuild a base backup"
        ))
        .hint("set wal_level = replica (and archive_mode = on, archive_command = 'lifeboat wal-push %p') in postgresql.conf, then restart the server"));
    }
    if row[1] == "off" {
        return Err(Error::source(format!(
            "{server} runs with archive_mode = off: a base backup without its WAL archived cannot be restored"
        ))
        .hint("set archive_mode = on and archive_command = 'lifeboat --repo REPO wal-push %p' in postgresql.conf, then restart the server (docs/POSTGRES.md, physical backups)"));
    }
    if row[2].trim().is_empty() || row[2] == "(disabled)" {
        return Err(Error::source(format!(
            "{server} has archive_mode = {} but no archive_command: WAL is not archived",
            row[1]
        ))
        .hint("set archive_command = 'lifeboat --repo REPO wal-push %p' in postgresql.conf and reload the server"));
    }
    if row[3] != "t" {
        return Err(Error::source(format!(
            "role {} may not take base backups of {server} (no REPLICATION privilege)",
            target.user()
        ))
        .hint(format!(
            "ALTER ROLE {} REPLICATION; and a `host replication` line for it in pg_hba.conf",
            target.user()
        )));
    }
    let system_id = row[4]
        .parse::<u64>()
        .map_err(|_| Error::source(format!("unexpected system identifier {:?}", row[4])))?;
    let wal_segment_size = parse_size(&row[5]).unwrap_or(16 << 20);
    Ok(Preflight {
        system_id,
        wal_segment_size,
        cluster_bytes: row[6].parse().unwrap_or(0),
    })
}

/// `16MB` (how `current_setting('wal_segment_size')` shows it) in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match &s[digits..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(n * unit)
}

/// What the tars said, for the manifest.
#[derive(Default)]
struct Ingested {
    backup_label: Option<String>,
    tablespace_map: Option<String>,
    manifest: Option<Vec<u8>>,
    files: u64,
    bytes: u64,
}

/// Paths of `base.tar` are the data directory's; those of `<oid>.tar` go under
/// `pg_tblspc/<oid>/`.
fn tar_prefix(name: &str) -> Option<String> {
    if name == "base.tar" {
        return Some(String::new());
    }
    let oid = name.strip_suffix(".tar")?;
    (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("pg_tblspc/{oid}/"))
}

fn ingest(folder: &mut DumpFolder, tree: &mut dyn TreeWriter, got: &mut Ingested) -> Result<()> {
    let mut entries: Vec<TreeEntry> = Vec::new();
    while let Some(name) = folder.next_file()? {
        if name == "backup_manifest" {
            // Renamed into place once complete (pg_basebackup has exited by now).
            let path = folder.path(&name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
            let (chunks, size) = tree.store(&name, &mut &bytes[..], Chunking::FILES)?;
            entries.push(file_entry(name, 0o600, 0, size, chunks));
            got.manifest = Some(bytes);
            continue;
        }
        let Some(prefix) = tar_prefix(&name) else {
            continue; // backup_manifest.tmp, renamed before it was read
        };
        if !prefix.is_empty() {
            entries.push(dir_entry(
                prefix.trim_end_matches('/').to_string(),
                0o700,
                0,
            ));
        }
        {
            let growing = std::io::BufReader::with_capacity(1 << 20, folder.open(&name)?);
            let mut archive = tar::Archive::new(growing);
            let tar_error = |e: std::io::Error| {
                crate::error::Error::carried_by(e).unwrap_or_else(|e| {
                    Error::source(format!("pg_basebackup's {name} cannot be read: {e}"))
                })
            };
            for entry in archive.entries().map_err(tar_error)? {
                let mut entry = entry.map_err(tar_error)?;
                if let Some(e) = store_entry(&prefix, &mut entry, tree, got)? {
                    entries.push(e);
                }
            }
        }
        let _ = std::fs::remove_file(folder.path(&name));
    }
    if got.backup_label.is_none() {
        // pg_basebackup failed before its data directory's tar; its exit status says why.
        return Ok(());
    }
    tree.add(dir_entry(String::new(), 0o700, 0), None)?;
    // Folders before what they hold, names in byte order, as a files backup walks them.
    entries.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    entries.dedup_by(|a, b| a.path == b.path);
    for e in entries {
        tree.add(e, None)?;
    }
    Ok(())
}

/// Store one tar entry; the tree entry to add for it.
fn store_entry<R: Read>(
    prefix: &str,
    entry: &mut tar::Entry<R>,
    tree: &mut dyn TreeWriter,
    got: &mut Ingested,
) -> Result<Option<TreeEntry>> {
    let raw = entry.path_bytes().into_owned();
    let rel = String::from_utf8(raw)
        .map_err(|_| Error::source("pg_basebackup sent a file name that is not UTF-8"))?;
    let rel = rel.trim_start_matches("./").trim_end_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::source(format!(
            "pg_basebackup sent an unexpected path {rel:?}"
        )));
    }
    let path = format!("{prefix}{rel}");
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o600) & 0o7777;
    let mtime_ns = header.mtime().unwrap_or(0) as i64 * 1_000_000_000;
    let kind = header.entry_type();
    if kind.is_dir() {
        return Ok(Some(dir_entry(path, mode, mtime_ns)));
    }
    if kind.is_symlink() {
        let target = entry
            .link_name_bytes()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        return Ok(Some(TreeEntry {
            kind: EntryKind::Symlink,
            target: Some(target),
            ..dir_entry(path, 0o777, mtime_ns)
        }));
    }
    if !kind.is_file() {
        return Ok(None);
    }
    let size = entry.size();
    if prefix.is_empty() && (rel == "backup_label" || rel == "tablespace_map") {
        let mut text = String::new();
        entry
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| Error::source(format!("pg_basebackup's {rel} cannot be read: {e}")))?;
        let (chunks, stored) = tree.store(&path, &mut text.as_bytes(), Chunking::FILES)?;
        if rel == "backup_label" {
            got.backup_label = Some(text);
        } else {
            got.tablespace_map = Some(text);
        }
        got.files += 1;
        got.bytes += stored;
        return Ok(Some(file_entry(path, mode, mtime_ns, stored, chunks)));
    }
    // Relation files (and the SLRU files) are whole pages; other files are small.
    let chunking = if size > 0 && size % 8192 == 0 {
        Chunking::PAGES
    } else {
        Chunking::FILES
    };
    let (chunks, stored) = tree.store(&path, entry, chunking)?;
    if stored != size {
        return Err(Error::source(format!(
            "pg_basebackup's {path} ended after {stored} of {size} bytes"
        )));
    }
    got.files += 1;
    got.bytes += stored;
    Ok(Some(file_entry(path, mode, mtime_ns, stored, chunks)))
}

fn dir_entry(path: String, mode: u32, mtime_ns: i64) -> TreeEntry {
    TreeEntry {
        path,
        path_hex: None,
        kind: EntryKind::Dir,
        mode,
        mtime_ns,
        size: 0,
        target: None,
        target_hex: None,
        chunks: Vec::new(),
    }
}

fn file_entry(path: String, mode: u32, mtime_ns: i64, size: u64, chunks: Vec<String>) -> TreeEntry {
    TreeEntry {
        kind: EntryKind::File,
        size,
        chunks,
        ..dir_entry(path, mode, mtime_ns)
    }
}

/// A `backup_label`'s fields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Label {
    pub start_lsn: u64,
    pub start_wal: String,
    pub checkpoint_lsn: u64,
    pub timeline: u32,
    pub start_time: String,
}

pub fn parse_label(text: &str) -> Result<Label> {
    let mut l = Label::default();
    let bad = || Error::source("pg_basebackup's backup_label is not as expected");
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "START WAL LOCATION" => {
                // `0/2000028 (file 000000010000000000000002)`
                let (lsn, rest) = value.split_once(' ').ok_or_else(bad)?;
                l.start_lsn = pgwal::parse_lsn(lsn).ok_or_else(bad)?;
                l.start_wal = rest
                    .trim_start_matches("(file ")
                    .trim_end_matches(')')
                    .to_string();
            }
            "CHECKPOINT LOCATION" => l.checkpoint_lsn = pgwal::parse_lsn(value).ok_or_else(bad)?,
            "START TIMELINE" => l.timeline = value.trim().parse().map_err(|_| bad())?,
            "START TIME" => l.start_time = value.trim().to_string(),
            _ => {}
        }
    }
    if l.start_lsn == 0 || l.timeline == 0 || pgwal::WalFile::parse(&l.start_wal).is_none() {
        return Err(bad());
    }
    Ok(l)
}

/// `2026-12-07 00:00:43 UTC` → RFC 3339.
fn label_time(text: &str) -> String {
    let t = text.trim_end_matches(" UTC").replace(' ', "T");
    match t.parse::<jiff::civil::DateTime>() {
        Ok(dt) if text.ends_with(" UTC") => jiff::tz::TimeZone::UTC
            .to_timestamp(dt)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| text.to_string()),
        _ => text.to_string(),
    }
}

/// The stop position from `backup_manifest`'s `WAL-Ranges` (the last range's end).
fn manifest_stop(manifest: &[u8]) -> Result<(u32, u64)> {
    #[derive(serde::Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        ranges: Vec<Range>,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| Error::source(format!("pg_basebackup's backup_manifest: {e}")))?;
    let last = m
        .ranges
        .last()
        .ok_or_else(|| Error::source("pg_basebackup's backup_manifest has no WAL range"))?;
    let end = pgwal::parse_lsn(&last.end)
        .ok_or_else(|| Error::source("pg_basebackup's backup_manifest: bad End-LSN"))?;
    Ok((last.timeline, end))
}

impl Ingested {
    fn facts(&self, system_id: u64, seg_size: u64) -> Result<PhysicalInfo> {
        let label = parse_label(self.backup_label.as_deref().unwrap_or(""))?;
        let manifest = self.manifest.as_deref().ok_or_else(|| {
            Error::source("pg_basebackup wrote no backup_manifest").hint(
                "Lifeboat needs pg_basebackup 13 or later, and the server must not run with manifests disabled",
            )
        })?;
        let (stop_tli, stop_lsn) = manifest_stop(manifest)?;
        let mut tablespaces = Vec::new();
        for line in self.tablespace_map.as_deref().unwrap_or("").lines() {
            if let Some((oid, location)) = line.split_once(' ') {
                if let Ok(oid) = oid.parse() {
                    tablespaces.push(Tablespace {
                        oid,
                        location: location.to_string(),
                    });
                }
            }
        }
        // The stop position is the first byte after the backup's end record: when it is the
        // start of a segment, the end record is in the segment before.
        let stop_segno = pgwal::segno_of_lsn(stop_lsn.saturating_sub(1), seg_size);
        Ok(PhysicalInfo {
            system_id: system_id.to_string(),
            timeline: label.timeline,
            start_lsn: pgwal::format_lsn(label.start_lsn),
            stop_lsn: pgwal::format_lsn(stop_lsn),
            checkpoint_lsn: pgwal::format_lsn(label.checkpoint_lsn),
            start_wal: label.start_wal,
            stop_wal: pgwal::segment_name(stop_tli, stop_segno, seg_size),
            wal_segment_size: seg_size,
            start_time: label_time(&label.start_time),
            stop_time: jiff::Timestamp::now().to_string(),
            tablespaces,
            files: self.files,
            data_bytes: self.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_are_read() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                     CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-12-07 00:00:43 UTC\n\
                     LABEL: lifeboat\nSTART TIMELINE: 1\n";
        let l = parse_label(label).unwrap();
        assert_eq!(l.start_lsn, 0x2000028);
        assert_eq!(l.checkpoint_lsn, 0x2000060);
        assert_eq!(l.start_wal, "000000010000000000000002");
        assert_eq!(l.timeline, 1);
        assert_eq!(label_time(&l.start_time), "2026-12-07T00:00:43Z");
        assert!(parse_label("START TIMELINE: 1\n").is_err());
        let m = br#"{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000" } ],
            "Manifest-Checksum": "x"}"#;
        assert_eq!(manifest_stop(m).unwrap(), (1, 0x3000000));
        let got = Ingested {
            backup_label: Some(label.into()),
            tablespace_map: Some("16384 /srv/ts one\n".into()),
            manifest: Some(m.to_vec()),
            files: 3,
            bytes: 10,
        };
        let f = got.facts(7, 16 << 20).unwrap();
        // 0/3000000 is the start of segment 3: the end record is in segment 2.
        assert_eq!(f.stop_wal, "000000010000000000000002");
        assert_eq!(f.tablespaces[0].location, "/srv/ts one");
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(tar_prefix("16384.tar").as_deref(), Some("pg_tblspc/16384/"));
        assert_eq!(tar_prefix("base.tar").as_deref(), Some(""));
        assert_eq!(tar_prefix("backup_manifest.tmp"), None);
        assert_eq!(tar_prefix("../x.tar"), None);
    }
}
