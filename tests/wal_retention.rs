//! Continuous replication and the repository-wide commands: `forget` keeps a point-in-time
//! window (or the segments from the newest kept base on), `prune` removes only segments no
//! base can use and never waits for a stream, `sync` copies segments without bringing back
//! what a replica removed on purpose, and `repo check` follows each stream from its bases.
//!
//! Repositories are built with the library: bases through `backup_prepared` with a `WalLink`
//! (a real SQLite database that changes between them), segments written as `replicate`
//! writes them (`segment::seal` + a create-only put), one an hour, chained by `prev`.

mod common;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use lifeboat::ops::backup::{backup_prepared, BackupOptions};
use lifeboat::ops::check;
use lifeboat::ops::forget::{self, ForgetOptions, ForgetReport};
use lifeboat::ops::policy::{Age, Policy};
use lifeboat::ops::prune::{self, PruneOptions, PruneReport};
use lifeboat::ops::VerifyLevel;
use lifeboat::repo::compress::{Codec, Compression};
use lifeboat::repo::manifest::WalLink;
use lifeboat::repo::segment::{self, CommitRec, Segment, SegmentHeader, SegmentName, WalPos};
use lifeboat::repo::{NewRepo, Repository, Unlock};
use lifeboat::storage::LocalStorage;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const H: i64 = 3_600_000;
const PASSWORD: &str = "wal retention test";

fn fast_kdf() -> lifeboat::repo::crypto::KdfParams {
    lifeboat::repo::crypto::KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

fn open_repo(path: &Path, encrypted: bool) -> Repository {
    let mut ask = || Ok(lifeboat::secret::Passphrase::new(PASSWORD.into()));
    Repository::open(
        Box::new(LocalStorage::new(path)),
        Unlock::Passphrase {
            ask: &mut ask,
            given: encrypted,
            preferred_key: None,
        },
    )
    .expect("open the repository")
}

fn init_repo(path: &Path, encrypted: bool) -> Repository {
    let pw = lifeboat::secret::Passphrase::new(PASSWORD.into());
    let kind = if encrypted {
        NewRepo::Encrypted {
            passphrase: &pw,
            params: fast_kdf(),
            recipient: None,
        }
    } else {
        NewRepo::Plain
    };
    Repository::init(Box::new(LocalStorage::new(path)), kind).expect("init");
    open_repo(path, encrypted)
}

/// A repository, a database, and what `replicate` would write into it.
struct Lab {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: Repository,
    db: PathBuf,
    conn: rusqlite::Connection,
    /// The newest segment written of each stream: its number and hash (the next's `prev`).
    prev: HashMap<String, (u64, blake3::Hash)>,
    /// The moment the history is built around (forget's "now").
    now: Timestamp,
}

impl Lab {
    fn new(encrypted: bool) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let repo = init_repo(&root.join("repo"), encrypted);
        let db = root.join("app.db");
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);",
        )
        .expect("schema");
        let lab = Lab {
            _dir: dir,
            root,
            repo,
            db,
            conn,
            prev: HashMap::new(),
            now: Timestamp::now(),
        };
        lab.change(50);
        lab
    }

    fn repo_path(&self) -> PathBuf {
        self.root.join("repo")
    }

    /// Add `rows` rows of random bytes (new pages for the next base).
    fn change(&self, rows: u32) {
        for _ in 0..rows {
            let v: Vec<u8> = (0..600).map(|_| rand::random::<u8>()).collect();
            self.conn
                .execute("INSERT INTO t(v) VALUES (?1)", [v])
                .expect("insert");
        }
    }

    fn ms_ago(&self, hours: f64) -> i64 {
        self.now.as_millisecond() - (hours * H as f64) as i64
    }

    fn backup_at(&self, ms: i64, wal: Option<WalLink>) -> String {
        self.change(30);
        let opts = BackupOptions {
            database: self.db.clone(),
            kind: Some(lifeboat::source::Kind::Sqlite),
            source: Default::default(),
            run: None,
            description: None,
            tags: Vec::new(),
            trigger: "manual".into(),
            compression: Compression::new(Codec::Zstd, None).expect("zstd"),
            verify: VerifyLevel::None,
            progress: lifeboat::progress::Progress::hidden(),
            transfers: 2,
            time: Some(Timestamp::from_millisecond(ms).expect("time")),
        };
        backup_prepared(&self.repo, &opts, None, wal)
            .expect("backup")
            .manifest
            .id
    }

    /// A base of `stream` at `ms`: the database after the segments below `next_seq`.
    fn base(&self, stream: &str, next_seq: u64, ms: i64) -> String {
        let link = WalLink {
            stream: stream.into(),
            next_seq,
            pos: WalPos {
                salt1: 1,
                salt2: 2,
                ckpt_seq: 0,
                offset: 32,
                cksum: [0, 0],
            },
        };
        self.backup_at(ms, Some(link))
    }

    /// Segment `seq` of `stream` with two commits, at `first_ms` and `last_ms`, chained to
    /// the previous one written; stored as `replicate` stores it.
    fn segment(&mut self, stream: &str, seq: u64, first_ms: i64, last_ms: i64) -> SegmentName {
        let prev = self
            .prev
            .get(stream)
            .filter(|(n, _)| n + 1 == seq)
            .map(|(_, h)| h.to_hex().to_string());
        let seg = self.make_segment(stream, seq, first_ms, last_ms, prev);
        let encoded = seg.encode().expect("encode");
        self.prev
            .insert(stream.into(), (seq, blake3::hash(&encoded)));
        self.store(&seg)
    }

    fn make_segment(
        &self,
        stream: &str,
        seq: u64,
        first_ms: i64,
        last_ms: i64,
        prev: Option<String>,
    ) -> Segment {
        make_segment(&self.source(), stream, seq, first_ms, last_ms, prev)
    }

    fn source(&self) -> String {
        lifeboat::source::source_key(&self.db)
    }

    fn store(&self, seg: &Segment) -> SegmentName {
        let name = seg.object_name();
        let sealed =
            segment::seal(&self.repo, &name, &seg.encode().expect("encode")).expect("seal");
        assert!(self.repo.storage().put_new(&name, &sealed).expect("put"));
        segment::parse_name(&name, sealed.len() as u64).expect("a segment name")
    }

    /// Segments `seqs` of `stream`, one an hour: segment n holds commits of the hour that
    /// starts `n` hours after `start_ms`.
    fn hourly(&mut self, stream: &str, seqs: std::ops::Range<u64>, start_ms: i64) {
        for n in seqs {
            let t = start_ms + n as i64 * H;
            self.segment(stream, n, t + 60_000, t + 59 * 60_000);
        }
    }

    fn seqs(&self, stream: &str) -> Vec<u64> {
        segment::list(self.repo.storage())
            .expect("list")
            .0
            .into_iter()
            .filter(|s| s.stream == stream)
            .map(|s| s.seq)
            .collect()
    }

    fn ids(&self) -> Vec<String> {
        self.repo
            .list_backups()
            .expect("list")
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    fn forget(&self, policy: Policy, dry_run: bool) -> ForgetReport {
        forget::forget(
            &self.repo,
            &ForgetOptions {
                policy_for: &move |_| Some(policy.clone()),
                source: None,
                dry_run,
                force: false,
                now: self.now,
                tz: TimeZone::UTC,
            },
        )
        .expect("forget")
    }

    fn prune(&self, dry_run: bool) -> PruneReport {
        prune::prune(
            &self.repo,
            &PruneOptions {
                dry_run,
                max_unused: 0.0,
                progress: lifeboat::progress::Progress::hidden(),
            },
        )
        .expect("prune")
    }

    fn check(&self, read_data: bool) -> check::CheckReport {
        check::check(&self.repo, read_data).expect("check")
    }
}

/// Segment `seq` of `stream` of the database `source` (on this host), with two commits of
/// one page each, at `first_ms` and `last_ms`.
fn make_segment(
    source: &str,
    stream: &str,
    seq: u64,
    first_ms: i64,
    last_ms: i64,
    prev: Option<String>,
) -> Segment {
    let ps = 4096usize;
    let commit = |ms: i64, page: u32| CommitRec {
        time_ns: ms * 1_000_000,
        db_pages: 3,
        pages: vec![page],
        unseen_since_ns: None,
        continues: false,
    };
    let mut data = vec![seq as u8; ps];
    data.extend(std::iter::repeat_n(!(seq as u8), ps));
    Segment {
        header: SegmentHeader {
            format: segment::SEGMENT_FORMAT,
            stream: stream.into(),
            seq,
            path: source.into(),
            host: lifeboat::host::hostname(),
            page_size: ps as u32,
            prev,
            wal: None,
            commits: vec![commit(first_ms, 2), commit(last_ms, 3)],
            last_seq: None,
            ends: None,
        },
        data,
    }
}

fn stream_id(ms: i64) -> String {
    lifeboat::id::new_backup_id(ms as u64)
}

fn within(age: &str) -> Policy {
    Policy {
        keep_within: Some(Age::parse(age).expect("age")),
        ..Default::default()
    }
}

fn problems(r: &check::CheckReport) -> Vec<String> {
    r.problems
        .iter()
        .map(|p| format!("{}: {}", p.object, p.problem))
        .collect()
}

/// Six daily bases (130 h ago to 10 h ago) and a segment an hour since the first: with
/// `keep_within 36h` the anchor is the base of 58 h ago (the newest at or before the window's
/// start, 36 h ago), which the policy alone would forget (it keeps backups within 36 h of
/// the newest). It is kept as the point-in-time base, with every segment from its
/// `next_seq` on; the older bases and segments go. The dry run says all of it and changes
/// nothing; the repository then checks clean, reading every segment too.
fn window_history(encrypted: bool) {
    let mut lab = Lab::new(encrypted);
    let start = lab.ms_ago(130.0);
    let s = stream_id(start);
    let bases: Vec<String> = (0..6)
        .map(|k| lab.base(&s, 24 * k, start + 24 * k as i64 * H))
        .collect();
    lab.hourly(&s, 0..130, start);
    assert!(lab.check(true).ok, "{:?}", problems(&lab.check(true)));

    let dry = lab.forget(within("36h"), true);
    assert_eq!(
        dry.removed,
        bases[..3].to_vec(),
        "bases older than the anchor go"
    );
    let anchor = dry.backups.iter().find(|r| r.id == bases[3]).expect("row");
    assert!(anchor.keep);
    assert_eq!(anchor.reasons, ["point-in-time base"]);
    assert_eq!(dry.streams.len(), 1);
    let row = &dry.streams[0];
    assert_eq!(row.base.as_deref(), Some(bases[3].as_str()));
    assert_eq!(
        (row.keep_from, row.segments_kept, row.segments_removed),
        (72, 58, 72)
    );
    assert_eq!(dry.segments_removed, 72);
    assert_eq!(dry.removed_segments.len(), 72);
    assert!(dry.removed_segments[0].starts_with(&format!("wal/{s}/0000000000000000-")));
    assert_eq!(lab.seqs(&s).len(), 130, "a dry run changes nothing");
    assert_eq!(lab.ids().len(), 6);

    let done = lab.forget(within("36h"), false);
    assert_eq!(done.removed, dry.removed);
    assert_eq!(done.removed_segments, dry.removed_segments);
    assert!(done.segments_removed_bytes > 0);
    assert_eq!(lab.seqs(&s), (72..130).collect::<Vec<_>>());
    assert_eq!(lab.ids(), bases[3..].to_vec());
    let tomb = lifeboat::repo::tombstones::read(lab.repo.storage(), &lab.repo.records())
        .expect("tombstones");
    assert!(tomb.segment_dropped(&s, 71) && !tomb.segment_dropped(&s, 72));

    // The window is whole: from the anchor's time to the last commit, no break.
    let report = lab.check(true);
    assert!(report.ok, "{:?}", problems(&report));
    assert_eq!(report.wal.segments_read, 58);
    let st = &report.wal.streams[0];
    let anchor_time = Timestamp::from_millisecond(start + 72 * H).expect("t");
    assert_eq!(st.restorable_from, Some(anchor_time.to_string()));
    assert!(st.restorable_to.is_some());

    // Forgetting again changes nothing; prune frees the forgotten bases' pages and leaves
    // the segments alone.
    let again = lab.forget(within("36h"), false);
    assert!(again.removed.is_empty() && again.segments_removed == 0);
    let pruned = lab.prune(false);
    assert!(
        pruned.deleted_packs > 0 || pruned.repacked_packs > 0,
        "{pruned:?}"
    );
    assert_eq!(pruned.segments_removed, 0);
    assert_eq!(lab.seqs(&s).len(), 58);
    assert!(lab.check(true).ok);
}

#[test]
fn keep_within_keeps_the_window_restorable_and_removes_the_rest() {
    window_history(false);
}

#[test]
fn keep_within_in_an_encrypted_repository() {
    window_history(true);
}

/// A source whose `replicate` was restarted: the old stream ended 80 h ago, the new one runs.
/// With `keep_within 24h` every segment of the old stream goes (its bases follow the
/// policy), the new stream keeps its window. A second source idle for longer than the
/// window keeps the segments after its newest base: its last state stays restorable.
#[test]
fn streams_that_ended_before_the_window() {
    let mut lab = Lab::new(false);
    let old = stream_id(lab.ms_ago(100.0));
    let t0 = lab.ms_ago(100.0);
    lab.base(&old, 0, t0);
    lab.hourly(&old, 0..20, t0);
    let new = stream_id(lab.ms_ago(60.0));
    let t1 = lab.ms_ago(60.0);
    let b1 = lab.base(&new, 0, t1);
    lab.hourly(&new, 0..59, t1);

    let r = lab.forget(within("24h"), false);
    let by_stream: HashMap<&str, &forget::StreamRow> =
        r.streams.iter().map(|s| (s.stream.as_str(), s)).collect();
    assert_eq!(by_stream[old.as_str()].segments_removed, 20);
    assert!(lab.seqs(&old).is_empty());
    // The new stream's only base is older than the window: it is the anchor.
    assert_eq!(by_stream[new.as_str()].base.as_deref(), Some(b1.as_str()));
    assert_eq!(lab.seqs(&new).len(), 59);
    assert!(lab.ids().contains(&b1));
    assert!(lab.check(false).ok);

    // An idle source: one stream, last commit 50 h ago, window 24 h.
    let mut idle = Lab::new(false);
    let t = idle.ms_ago(100.0);
    let s = stream_id(t);
    idle.base(&s, 0, t);
    let newest = idle.base(&s, 20, t + 20 * H);
    idle.hourly(&s, 0..50, t);
    let r = idle.forget(within("24h"), false);
    assert_eq!(r.streams[0].keep_from, 20, "{:?}", r.streams);
    assert_eq!(idle.seqs(&s), (20..50).collect::<Vec<_>>());
    assert!(idle.ids().contains(&newest));
    assert!(idle.check(true).ok);
}

/// Without `keep_within`: the segments from the newest kept base on stay, earlier ones go.
/// When the policy keeps no base of the stream (an ordinary backup is newer, `keep_last 1`),
/// the newest base is kept all the same: the commits shipped after it need it.
#[test]
fn without_a_window_segments_follow_the_newest_kept_base() {
    let mut lab = Lab::new(false);
    let t = lab.ms_ago(72.0);
    let s = stream_id(t);
    let bases: Vec<String> = (0..3)
        .map(|k| lab.base(&s, 24 * k, t + k as i64 * 24 * H))
        .collect();
    lab.hourly(&s, 0..71, t);
    let daily = Policy {
        keep_daily: Some(2),
        ..Default::default()
    };
    let r = lab.forget(daily, false);
    assert_eq!(r.removed, vec![bases[0].clone()]);
    assert_eq!(r.streams[0].keep_from, 48, "from the newest kept base");
    assert_eq!(lab.seqs(&s), (48..71).collect::<Vec<_>>());
    assert!(lab.check(true).ok);

    let ordinary = lab.backup_at(lab.ms_ago(0.5), None);
    let last = Policy {
        keep_last: Some(1),
        ..Default::default()
    };
    let r = lab.forget(last, false);
    let row = r.backups.iter().find(|b| b.id == bases[2]).expect("row");
    assert!(row.keep, "{row:?}");
    assert_eq!(row.reasons, ["point-in-time base"]);
    assert_eq!(lab.ids(), vec![bases[2].clone(), ordinary]);
    assert_eq!(lab.seqs(&s), (48..71).collect::<Vec<_>>());
}

/// A segment planted under a newer name with old times (in an encrypted repository, where
/// it cannot be sealed) must not make a running stream look ended: forget reads the newest
/// segment that opens. The junk is removed by nobody's word but its own number (it is below
/// no base) and reported by `repo check --read-data`.
#[test]
fn forget_judges_a_stream_by_segments_that_open() {
    let mut lab = Lab::new(true);
    let old_t = lab.ms_ago(100.0);
    let old = stream_id(old_t);
    lab.base(&old, 0, old_t);
    lab.hourly(&old, 0..10, old_t);
    let t = lab.ms_ago(30.0);
    let s = stream_id(t);
    lab.base(&s, 0, t);
    lab.hourly(&s, 0..29, t);
    // Junk named as segment 29, dated 90 h ago: by names alone, the stream ended before the
    // window and the old stream would be the newest.
    let junk = segment::object_name(&s, 29, lab.ms_ago(90.0), lab.ms_ago(89.0), None, 29);
    lab.repo
        .storage()
        .put_new(&junk, b"not sealed by anyone with the keys")
        .expect("plant");
    let r = lab.forget(within("24h"), false);
    let row = r.streams.iter().find(|x| x.stream == s).expect("row");
    assert_eq!(row.segments_removed, 0, "{row:?}");
    assert_eq!(lab.seqs(&s).len(), 30);
    assert!(lab.seqs(&old).is_empty(), "the old stream did end");
    let checked = lab.check(true);
    assert!(!checked.ok);
    assert!(
        problems(&checked).iter().any(|p| p.starts_with(&junk)),
        "{:?}",
        problems(&checked)
    );
}

/// Prune removes what no base can use: a stream without a base that shipped nothing for a
/// day, and segments numbered below a stream's oldest base. A stream without a base that
/// shipped within the day stays (its first base may be coming), and so does every orphan
/// while a backup runs (it may be that base). Removed segments are recorded, so a sync
/// does not bring them back.
#[test]
fn prune_removes_only_segments_no_base_can_use() {
    let mut lab = Lab::new(false);
    let dead = stream_id(lab.ms_ago(50.0));
    lab.hourly(&dead, 0..5, lab.ms_ago(50.0));
    let starting = stream_id(lab.ms_ago(3.0));
    lab.hourly(&starting, 0..2, lab.ms_ago(3.0));
    let t = lab.ms_ago(20.0);
    let s = stream_id(t);
    lab.base(&s, 10, t + 10 * H);
    lab.hourly(&s, 0..20, t);
    // Junk under wal/ that is not a segment: left alone (check names it).
    lab.repo
        .storage()
        .put_new(&format!("wal/{s}/notes.txt"), b"x")
        .expect("junk");

    // While a backup runs (perhaps the dead stream's first base), orphans wait.
    let records = lab.repo.records();
    let waiting =
        lifeboat::repo::locks::as_writer(lab.repo.storage(), &records, "backup", true, |_, _| {
            Ok(lab.prune(false))
        })
        .expect("prune during a backup");
    assert_eq!(waiting.segments_waiting, 7, "{waiting:?}");
    assert_eq!(waiting.segments_removed, 10, "below the base: not waiting");
    assert_eq!(lab.seqs(&dead).len(), 5);
    assert_eq!(lab.seqs(&s), (10..20).collect::<Vec<_>>());

    let dry = lab.prune(true);
    assert_eq!(
        (dry.segments_removed, dry.orphan_streams.clone()),
        (5, vec![dead.clone()])
    );
    assert_eq!(lab.seqs(&dead).len(), 5);
    let done = lab.prune(false);
    assert_eq!(done.segments_removed, 5);
    assert!(lab.seqs(&dead).is_empty());
    assert_eq!(lab.seqs(&starting).len(), 2);
    assert!(lab
        .repo
        .storage()
        .exists(&format!("wal/{s}/notes.txt"))
        .expect("exists"));
    let tomb = lifeboat::repo::tombstones::read(lab.repo.storage(), &lab.repo.records())
        .expect("tombstones");
    assert!(tomb.segment_dropped(&dead, 4) && tomb.segment_dropped(&s, 9));
    assert!(!tomb.segment_dropped(&starting, 0));
    let report = lab.check(true);
    assert!(report.ok, "{:?}", problems(&report));
    assert_eq!(report.wal.not_segments, vec![format!("wal/{s}/notes.txt")]);
    assert!(report.wal.orphan_streams.is_empty(), "the young one is not");
}

/// "Prune while replicate runs": a stream ships a segment every few milliseconds while
/// forget and prune run; prune frees the forgotten backups' space without waiting, and the
/// stream is whole afterwards. Only while a base is being stored (a writer marker that has
/// not seen prune's plan) do the planned packs wait, for the next prune.
#[test]
fn prune_frees_space_while_a_stream_ships_segments() {
    let mut lab = Lab::new(false);
    let t = lab.ms_ago(48.0);
    let s = stream_id(t);
    let old: Vec<String> = (0..3)
        .map(|k| lab.backup_at(t - (3 - k) * H, None))
        .collect();
    lab.base(&s, 0, t);
    lab.hourly(&s, 0..40, t);
    let policy = Policy {
        keep_last: Some(1),
        ..Default::default()
    };
    let r = lab.forget(policy, false);
    assert_eq!(r.removed, old);

    // The replicating process: appends segments 40.. until told to stop.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let repo_path = lab.repo_path();
    let source = lab.source();
    let prev0 = lab.prev.get(&s).map(|(_, h)| *h);
    let shipped = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let repo = open_repo(&repo_path, false);
            let mut n = 40u64;
            let mut prev = prev0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = t + n as i64 * H;
                let seg = make_segment(
                    &source,
                    &s,
                    n,
                    at,
                    at + 1000,
                    prev.map(|h| h.to_hex().to_string()),
                );
                let encoded = seg.encode().expect("encode");
                let name = seg.object_name();
                let sealed = segment::seal(&repo, &name, &encoded).expect("seal");
                repo.storage().put_new(&name, &sealed).expect("put");
                prev = Some(blake3::hash(&encoded));
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            n
        });
        let started = std::time::Instant::now();
        let pruned = lab.prune(false);
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        assert!(pruned.deleted_packs > 0, "{pruned:?}");
        assert!(pruned.freed_bytes() > 0);
        assert_eq!(pruned.pending_packs, 0, "nothing waits for the stream");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer")
    });
    assert!(shipped > 40);
    let report = lab.check(true);
    assert!(report.ok, "{:?}", problems(&report));
    assert_eq!(report.wal.segments_read as u64, shipped);

    // A base being stored holds a writer marker: what prune plans meanwhile waits for it.
    let newer = lab.base(&s, shipped, lab.ms_ago(0.2));
    let r = lab.forget(
        Policy {
            keep_last: Some(1),
            ..Default::default()
        },
        false,
    );
    assert!(r.removed.iter().all(|id| id != &newer));
    let records = lab.repo.records();
    let during =
        lifeboat::repo::locks::as_writer(lab.repo.storage(), &records, "backup", true, |_, _| {
            Ok(lab.prune(false))
        })
        .expect("prune during a base");
    assert_eq!(during.deleted_packs, 0);
    assert!(during.pending_packs > 0, "{during:?}");
    let after = lab.prune(false);
    assert!(after.deleted_packs > 0, "{after:?}");
    assert!(lab.check(true).ok);
}

/// Sync copies the segments a replica lacks (after the bases); what the replica's own
/// forget removed is not copied back, and what the primary removed stays on the replica
/// (as forgotten backups do) until the replica's retention removes it.
#[test]
fn sync_copies_segments_and_keeps_the_replicas_retention() {
    let mut lab = Lab::new(true);
    let t = lab.ms_ago(100.0);
    let s = stream_id(t);
    for k in 0..4 {
        lab.base(&s, 24 * k, t + k as i64 * 24 * H);
    }
    lab.hourly(&s, 0..90, t);
    let replica_path = lab.root.join("replica");
    let replica = LocalStorage::new(&replica_path);
    let r = lifeboat::ops::sync::sync(&lab.repo, &replica, 2).expect("sync");
    assert!(r.copied_objects > 90);
    let there = open_repo(&replica_path, true);
    let on_replica = |stream: &str| -> Vec<u64> {
        segment::list(&LocalStorage::new(&replica_path))
            .expect("list")
            .0
            .into_iter()
            .filter(|x| x.stream == stream)
            .map(|x| x.seq)
            .collect()
    };
    assert_eq!(on_replica(&s), (0..90).collect::<Vec<_>>());
    assert!(check::check(&there, true).expect("check").ok);

    // The replica keeps a window of 48 h: its forget removes segments below its anchor.
    let policy = within("48h");
    let r = forget::forget(
        &there,
        &ForgetOptions {
            policy_for: &|_| Some(policy.clone()),
            source: None,
            dry_run: false,
            force: false,
            now: lab.now,
            tz: TimeZone::UTC,
        },
    )
    .expect("forget on the replica");
    assert_eq!(r.streams[0].keep_from, 48);
    assert_eq!(on_replica(&s), (48..90).collect::<Vec<_>>());

    // New segments on the primary reach the replica; the removed ones do not come back.
    lab.hourly(&s, 90..95, t);
    lifeboat::ops::sync::sync(&lab.repo, &replica, 2).expect("sync");
    assert_eq!(on_replica(&s), (48..95).collect::<Vec<_>>());
    let lag = lifeboat::ops::sync::lag(&lab.repo, &replica);
    assert_eq!(lag.objects_behind, Some(0), "{lag:?}");

    // The primary forgets more than the replica: the replica keeps its segments.
    let r = lab.forget(within("12h"), false);
    assert!(r.segments_removed > 0);
    lifeboat::ops::sync::sync(&lab.repo, &replica, 2).expect("sync");
    assert_eq!(on_replica(&s), (48..95).collect::<Vec<_>>());
    assert!(check::check(&there, true).expect("check").ok);
}

/// `repo check` on names alone: a missing segment in the middle of a stream is damage
/// (exit 4 from the command), a run missing before a base is what retention leaves, and an
/// old stream without a base is a warning. With `--read-data` a segment that does not
/// continue the one before (wrong `prev`) is damage too.
#[test]
fn check_follows_each_stream_from_its_bases() {
    let mut lab = Lab::new(false);
    let t = lab.ms_ago(30.0);
    let s = stream_id(t);
    lab.base(&s, 0, t);
    let b2 = lab.base(&s, 10, t + 10 * H);
    lab.hourly(&s, 0..20, t);
    let orphan = stream_id(lab.ms_ago(40.0));
    lab.hourly(&orphan, 0..2, lab.ms_ago(40.0));
    let r = lab.check(false);
    assert!(r.ok, "{:?}", problems(&r));
    assert_eq!(r.wal.orphan_streams, vec![orphan.clone()]);
    assert_eq!(r.wal.segments, 22);

    // Retention's shape: segments 0..9 gone, the stream resumes where a base begins.
    let (all, _) = segment::list(lab.repo.storage()).expect("list");
    for x in all.iter().filter(|x| x.stream == s && x.seq < 10) {
        lab.repo.storage().delete(&x.object()).expect("delete");
    }
    let r = lab.check(true);
    assert!(r.ok, "{:?}", problems(&r));
    let row = r.wal.streams.iter().find(|x| x.stream == s).expect("row");
    let b2_time = lab
        .repo
        .read_manifest(&b2)
        .expect("manifest")
        .time
        .parse::<Timestamp>()
        .expect("time");
    assert_eq!(row.restorable_from, Some(b2_time.to_string()));

    // Damage: segment 14 lost.
    let lost = all
        .iter()
        .find(|x| x.stream == s && x.seq == 14)
        .expect("14");
    lab.repo.storage().delete(&lost.object()).expect("delete");
    let r = lab.check(false);
    assert!(!r.ok);
    let p = problems(&r);
    assert!(p.len() == 1 && p[0].contains("segments 14 to 14"), "{p:?}");

    // A segment 14 that does not continue 13: names are fine, reading finds it.
    let bad = lab.make_segment(
        &s,
        14,
        t + 14 * H + 60_000,
        t + 14 * H + 59 * 60_000,
        Some("00".repeat(32)),
    );
    lab.store(&bad);
    assert!(lab.check(false).ok);
    let r = lab.check(true);
    let p = problems(&r);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("does not continue segment 13"), "{p:?}");
    assert!(p[1].contains("does not continue segment 14"), "{p:?}");

    // A fork: another segment 16 (other times), as a second process would ship it.
    let fork = lab.make_segment(&s, 16, t + 16 * H + 1000, t + 16 * H + 2000, None);
    lab.store(&fork);
    let r = lab.check(false);
    let p = problems(&r);
    assert!(
        p.len() == 1 && p[0].contains("two segments numbered 16"),
        "{p:?}"
    );
}

/// Outside the window, a base the policy keeps (pinned here) restores to its own moment, and
/// a moment between it and the anchor is refused (its commits were removed), never answered
/// with the older base's state; `timeline` shows that span as a gap.
#[test]
fn a_moment_retention_removed_is_refused_not_guessed() {
    use lifeboat::wal::pitr::{self, At};
    let mut lab = Lab::new(false);
    let start = lab.ms_ago(130.0);
    let s = stream_id(start);
    let bases: Vec<String> = (0..6)
        .map(|k| lab.base(&s, 24 * k, start + 24 * k as i64 * H))
        .collect();
    lab.hourly(&s, 0..130, start);
    forget::set_pinned(&lab.repo, &bases[0], None, true).expect("pin");
    let r = lab.forget(within("36h"), false);
    assert_eq!(r.removed, bases[1..3].to_vec());
    assert_eq!(lab.seqs(&s), (72..130).collect::<Vec<_>>());

    let source = lab.source();
    let at = |ms: i64| At::Time(Timestamp::from_millisecond(ms).expect("t"));
    let e = pitr::plan(&lab.repo, &source, at(start + 10 * H)).expect_err("refused");
    assert!(e.message.contains("cannot be restored"), "{e}");
    assert!(e.message.contains("segments 0 to 71"), "{e}");
    let p = pitr::plan(&lab.repo, &source, at(start)).expect("the pinned base's moment");
    assert_eq!(
        (p.base.id.as_str(), p.segments.len()),
        (bases[0].as_str(), 0)
    );
    let p = pitr::plan(&lab.repo, &source, at(start + 77 * H + 30 * 60_000)).expect("window");
    assert_eq!(p.base.id, bases[3]);
    assert_eq!(
        p.segments.iter().map(|x| x.seq).collect::<Vec<_>>(),
        (72..78).collect::<Vec<_>>()
    );

    let t = pitr::timeline(&lab.repo, &source).expect("timeline");
    let removed: Vec<_> = t
        .gaps
        .iter()
        .filter(|g| g.why.contains("removed by retention"))
        .collect();
    assert_eq!(removed.len(), 1, "{:?}", t.gaps);
    let base0 = Timestamp::from_millisecond(start).expect("t").to_string();
    assert_eq!(removed[0].from, base0);
    assert!(lab.check(true).ok);
}

/// End to end, with the real binary: `replicate` runs while an old backup is forgotten
/// (`forget --keep-within 1h`, whose window the running stream is in) and `prune` frees its
/// space without waiting for the replication; commits go on being shipped; after SIGTERM,
/// `restore --source DB --at T` gives the database as it was at each moment noted, and the
/// repository checks clean, every segment read.
#[test]
fn replicate_runs_while_prune_frees_space_and_the_window_restores() {
    use std::time::{Duration, Instant};
    let env = common::Env::new();
    let db = env.path("app.db");
    let dbs = db.to_str().expect("utf-8");
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=10000; \
         CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);",
    )
    .expect("schema");
    let add = |rows: u32| {
        let tx = conn.unchecked_transaction().expect("tx");
        for _ in 0..rows {
            let v: Vec<u8> = (0..500).map(|_| rand::random::<u8>()).collect();
            tx.execute("INSERT INTO t(v) VALUES (?1)", [v])
                .expect("insert");
        }
        tx.commit().expect("commit");
    };
    add(400);
    // A backup from two days ago whose pages then go away: what prune will free.
    let two_days_ago = Timestamp::now() - jiff::SignedDuration::from_hours(48);
    let old = env.json(&["backup", dbs, "--time", &two_days_ago.to_string()]);
    let old = old["id"].as_str().expect("id").to_string();
    conn.execute("DELETE FROM t", []).expect("delete");
    add(400);

    let child = env
        .std_cmd()
        .args([
            "replicate",
            dbs,
            "--interval",
            "200ms",
            "--base-every",
            "1h",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replicate");
    let listed =
        |env: &common::Env| -> usize { env.json(&["list"]).as_array().map_or(0, |a| a.len()) };
    let started = Instant::now();
    while listed(&env) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no base after a minute"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Moments to restore to: after each commit has been shipped, before the next one.
    let mut moments: Vec<(String, Vec<String>)> = Vec::new();
    let note = |moments: &mut Vec<(String, Vec<String>)>| {
        std::thread::sleep(Duration::from_millis(800));
        moments.push((Timestamp::now().to_string(), common::dump(&db)));
        std::thread::sleep(Duration::from_millis(300));
    };
    for k in 0..3 {
        add(20);
        conn.execute("UPDATE t SET v = zeroblob(100) WHERE id % 7 = ?1", [k])
            .expect("update");
        note(&mut moments);
    }

    let f = env.json(&["forget", "--keep-within", "1h"]);
    assert_eq!(f["forget"]["removed"], serde_json::json!([old]), "{f}");
    let stream = &f["forget"]["streams"][0];
    // Only segments shipped before the base was taken (below its next_seq) may go.
    assert!(stream["segments_kept"].as_u64().expect("n") >= 3, "{f}");
    let base = stream["base"]
        .as_str()
        .expect("the base is the anchor")
        .to_string();
    let row = f["forget"]["backups"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["id"] == base.as_str())
        .expect("row")
        .clone();
    assert!(
        row["reasons"].to_string().contains("point-in-time base"),
        "{row}"
    );

    let t = Instant::now();
    let p = env.json(&["prune"]);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(p["deleted_packs"].as_u64().expect("n") > 0, "{p}");
    assert_eq!(
        p["pending_packs"], 0,
        "prune waited for the replication: {p}"
    );

    for k in 3..5 {
        add(20);
        conn.execute("DELETE FROM t WHERE id % 11 = ?1", [k])
            .expect("delete");
        note(&mut moments);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "replicate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (i, (at, expected)) in moments.iter().enumerate() {
        let target = env.path(&format!("at-{i}.db"));
        env.json(&[
            "restore",
            "--source",
            dbs,
            "--at",
            at,
            "--output",
            target.to_str().expect("utf-8"),
        ]);
        assert!(
            &common::dump(&target) == expected,
            "restore --at {at} differs"
        );
    }
    let c = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
    assert_eq!(
        c["wal"]["streams"].as_array().map(|a| a.len()),
        Some(1),
        "{c}"
    );
    assert!(c["wal"]["segments_read"].as_u64().expect("n") >= 5, "{c}");
}
