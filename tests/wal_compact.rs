//! Compaction of continuous-replication segments, through the library: a stream of old
//! segments restores to every commit the same before and after compaction, with fewer
//! objects; a compaction interrupted after writing its merged segment leaves nothing a
//! restore trips on, and the next run removes the leftovers.

use lifeboat::ops::backup::{backup_prepared, BackupOptions};
use lifeboat::ops::restore::Destination;
use lifeboat::progress::Progress;
use lifeboat::repo::compress::{Codec, Compression};
use lifeboat::repo::manifest::WalLink;
use lifeboat::repo::segment::{self, CommitRec, Segment, SegmentHeader, WalPos};
use lifeboat::repo::{NewRepo, Repository};
use lifeboat::wal::pitr::At;
use std::path::Path;

const PS: usize = 4096;

fn make_db(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(20000));",
    )
    .unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// Page `p` as commit `k` writes it.
fn page(k: usize, p: u32) -> Vec<u8> {
    (0..PS)
        .map(|i| (k * 31 + p as usize * 7 + i) as u8)
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repository,
    db: std::path::PathBuf,
    out: std::path::PathBuf,
    /// (commit time ns, expected bytes of the database after it)
    states: Vec<(i64, Vec<u8>)>,
}

/// A base, then 30 segments of one commit each, 2 hours old, 4 s apart (two minutes'
/// worth: two merged segments expected), the stream's newest one young.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    make_db(&db);
    let repo = Repository::init(
        lifeboat::storage::open(dir.path().join("repo").to_str().unwrap(), true).unwrap(),
        NewRepo::Plain,
    )
    .unwrap();
    let stream = lifeboat::id::new_backup_id(1_700_000_000_000);
    let opts = BackupOptions {
        database: db.clone(),
        kind: Some(lifeboat::source::Kind::Sqlite),
        source: Default::default(),
        run: None,
        description: None,
        tags: Vec::new(),
        trigger: "replicate".into(),
        compression: Compression::new(Codec::Zstd, None).unwrap(),
        verify: lifeboat::ops::VerifyLevel::Written,
        progress: Progress::hidden(),
        transfers: 2,
        // The base is older than every commit.
        time: Some(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3)),
    };
    let pos = WalPos {
        salt1: 0,
        salt2: 0,
        ckpt_seq: 0,
        offset: 0,
        cksum: [0, 0],
    };
    backup_prepared(
        &repo,
        &opts,
        None,
        Some(WalLink {
            stream: stream.clone(),
            next_seq: 0,
            pos,
        }),
    )
    .unwrap();
    let mut state = std::fs::read(&db).unwrap();
    let start = jiff::Timestamp::now().as_nanosecond() as i64 - 2 * 3_600_000_000_000;
    // Aligned on a minute, so 30 commits 4 s apart are two minute groups.
    let start = start - start.rem_euclid(60_000_000_000);
    let mut states = Vec::new();
    let mut prev: Option<blake3::Hash> = None;
    for k in 0..31usize {
        let young = k == 30;
        let time = if young {
            jiff::Timestamp::now().as_nanosecond() as i64
        } else {
            start + k as i64 * 4_000_000_000
        };
        // Each commit rewrites page 2 and one more, and sometimes grows the file.
        let pages = vec![2u32, 3 + (k % 5) as u32 + (k / 10) as u32];
        let mut data = Vec::new();
        for &p in &pages {
            let bytes = page(k, p);
            let at = (p as usize - 1) * PS;
            if state.len() < at + PS {
                state.resize(at + PS, 0);
            }
            state[at..at + PS].copy_from_slice(&bytes);
            data.extend(bytes);
        }
        let db_pages = (state.len() / PS) as u32;
        states.push((time, state.clone()));
        let seg = Segment {
            header: SegmentHeader {
                format: segment::SEGMENT_FORMAT,
                stream: stream.clone(),
                seq: k as u64,
                path: db.display().to_string(),
                host: lifeboat::host::hostname(),
                page_size: PS as u32,
                prev: prev.map(|h| h.to_hex().to_string()),
                wal: Some(pos),
                commits: vec![CommitRec {
                    time_ns: time,
                    db_pages,
                    pages,
                    unseen_since_ns: None,
                    continues: false,
                }],
                last_seq: None,
                ends: None,
            },
            data,
        };
        let encoded = seg.encode().unwrap();
        prev = Some(blake3::hash(&encoded));
        let name = seg.object_name();
        let sealed = segment::seal(&repo, &name, &encoded).unwrap();
        assert!(repo.storage().put_new(&name, &sealed).unwrap());
    }
    let out = dir.path().join("out.db");
    Fixture {
        _dir: dir,
        repo,
        db,
        out,
        states,
    }
}

fn restore_at(f: &Fixture, at: At) -> Vec<u8> {
    let _ = std::fs::remove_file(&f.out);
    lifeboat::engine::restore_at(
        &f.repo,
        &f.db.display().to_string(),
        at,
        Destination::New {
            path: f.out.clone(),
            overwrite: false,
        },
        &Progress::hidden(),
    )
    .unwrap();
    std::fs::read(&f.out).unwrap()
}

fn assert_every_commit_restores(f: &Fixture, when: &str) {
    for (i, (time, expected)) in f.states.iter().enumerate() {
        let at = jiff::Timestamp::from_nanosecond(i128::from(*time) + 500_000_000).unwrap();
        assert!(
            restore_at(f, At::Time(at)) == *expected,
            "{when}: commit {i} restored to other bytes"
        );
    }
    assert!(
        restore_at(f, At::Latest) == f.states.last().unwrap().1,
        "{when}: latest"
    );
}

fn segment_objects(repo: &Repository) -> usize {
    repo.storage().list("wal/").unwrap().len()
}

#[test]
fn compaction_keeps_every_commit_with_fewer_objects() {
    let f = fixture();
    assert_eq!(segment_objects(&f.repo), 31);
    assert_every_commit_restores(&f, "before");
    let dry = lifeboat::wal::compact::compact(&f.repo, true).unwrap();
    assert_eq!(segment_objects(&f.repo), 31, "a dry run wrote");
    let r = lifeboat::wal::compact::compact(&f.repo, false).unwrap();
    assert_eq!(r.segments_merged, dry.segments_merged);
    // 30 old segments over two minutes: two merged segments; the young one stays.
    assert_eq!((r.segments_merged, r.merged_into), (30, 2), "{r:?}");
    assert_eq!(segment_objects(&f.repo), 3);
    assert_every_commit_restores(&f, "after");
    // Nothing left to do.
    let again = lifeboat::wal::compact::compact(&f.repo, false).unwrap();
    assert_eq!(again.segments_merged, 0, "{again:?}");
}

#[test]
fn an_interrupted_compaction_leaves_restores_intact_and_is_cleaned_up() {
    let f = fixture();
    // What a compaction killed after storing its merged segment leaves: the merged segment
    // and every segment it holds.
    let names = segment::list(f.repo.storage()).unwrap().0;
    let parts: Vec<_> = names[..15]
        .iter()
        .map(|s| segment::read(&f.repo, f.repo.storage(), s).unwrap())
        .collect();
    let merged = segment::merge(parts).unwrap();
    let name = merged.object_name();
    let sealed = segment::seal(&f.repo, &name, &merged.encode().unwrap()).unwrap();
    f.repo.storage().put_new(&name, &sealed).unwrap();
    assert_eq!(segment_objects(&f.repo), 32);
    assert_every_commit_restores(&f, "with leftovers");
    let r = lifeboat::wal::compact::compact(&f.repo, false).unwrap();
    assert_eq!(r.covered_removed, 15, "{r:?}");
    assert_every_commit_restores(&f, "cleaned up");
}

/// A name planted by someone without the keys, claiming to be a compacted segment that holds
/// the whole stream: prune deletes nothing because of it, and restores use the real segments.
#[test]
fn a_planted_covering_name_deletes_nothing_and_misleads_no_restore() {
    let f = fixture();
    let names = segment::list(f.repo.storage()).unwrap().0;
    let first = &names[0];
    let last = &names[names.len() - 2];
    let planted = segment::object_name(
        &first.stream,
        first.seq,
        first.first_ms,
        last.last_ms,
        None,
        last.last_seq,
    );
    f.repo.storage().put_new(&planted, b"junk").unwrap();
    let r = lifeboat::wal::compact::compact(&f.repo, false).unwrap();
    assert_eq!(r.covered_removed, 0, "{r:?}");
    for n in &names {
        assert!(
            f.repo.storage().exists(&n.object()).unwrap(),
            "{} was deleted",
            n.object()
        );
    }
    assert_every_commit_restores(&f, "with a planted covering name");
}

/// A real segment deleted and a name with a later time planted in its place: a restore to a
/// moment of the deleted segment's commit must not stop before it and call that the state.
#[test]
fn a_planted_late_name_in_place_of_a_deleted_segment_is_not_believed() {
    let f = fixture();
    let names = segment::list(f.repo.storage()).unwrap().0;
    let victim = &names[10];
    f.repo.storage().delete(&victim.object()).unwrap();
    let far = victim.last_ms + 86_400_000;
    let planted = segment::object_name(&victim.stream, victim.seq, far, far, None, victim.seq);
    f.repo.storage().put_new(&planted, b"junk").unwrap();
    let (time, _) = &f.states[10];
    let at = jiff::Timestamp::from_nanosecond(i128::from(*time) + 500_000_000).unwrap();
    let _ = std::fs::remove_file(&f.out);
    let r = lifeboat::engine::restore_at(
        &f.repo,
        &f.db.display().to_string(),
        At::Time(at),
        Destination::New {
            path: f.out.clone(),
            overwrite: false,
        },
        &Progress::hidden(),
    );
    let e = r.err().expect("a restore past a planted name must fail");
    assert_eq!(e.kind, lifeboat::ErrorKind::Integrity, "{e}");
    assert!(e.message.contains("does not open"), "{e}");
    assert!(!f.out.exists());
    // Before the last commit known ahead of it (segment 9's): still exact, whatever the
    // planted name says.
    let (time, expected) = &f.states[8];
    let at = jiff::Timestamp::from_nanosecond(i128::from(*time) + 500_000_000).unwrap();
    assert!(restore_at(&f, At::Time(at)) == *expected);
}
