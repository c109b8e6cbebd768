//! One contract for every storage target, checked at the trait level: local disk, memory,
//! S3 (SeaweedFS), GCS (gcp-storage-emulator) and Azure (Azurite). A new target is added by
//! running `conforms` against it.
//!
//! One test function: object-store targets read their settings from the environment when
//! they are opened, and a variable set while another test thread reads the environment is a
//! data race. Sequentially, each server's variables are set just before its target is opened.

mod common;

use common::azure::AzuriteServer;
use common::gcs::GcsServer;
use common::s3::S3Server;
use common::server::TestStore;
use lifeboat::error::ErrorKind;
use lifeboat::storage::{self, LocalStorage, Storage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every promise of the `Storage` trait, on an empty target.
fn conforms(s: Arc<dyn Storage>) {
    let who = s.describe();
    let ctx = |what: &str| format!("{who}: {what}");

    // Write-once: a second put_new neither succeeds nor changes the object.
    assert!(
        s.put_new("data/ab/ab01", b"first").expect("put_new"),
        "{}",
        ctx("put_new of a new name")
    );
    assert!(
        !s.put_new("data/ab/ab01", b"other").expect("put_new again"),
        "{}",
        ctx("put_new of an existing name")
    );
    assert_eq!(
        s.get("data/ab/ab01").expect("get"),
        b"first",
        "{}",
        ctx("an existing object was changed")
    );

    // Missing objects are NotFound, never an empty object.
    let e = s
        .get("data/ab/missing")
        .expect_err("get of a missing object");
    assert_eq!(
        e.kind,
        ErrorKind::NotFound,
        "{}: {e}",
        ctx("get of a missing object")
    );
    assert!(
        !s.exists("data/ab/missing").expect("exists"),
        "{}",
        ctx("exists of a missing object")
    );
    assert!(
        s.exists("data/ab/ab01").expect("exists"),
        "{}",
        ctx("exists of an object")
    );
    assert_eq!(
        storage::get_if_present(s.as_ref(), "data/ab/missing", 10).expect("get_if_present"),
        None
    );

    // get_small refuses an object larger than it can be, before reading it.
    let big = vec![7u8; 4096];
    assert!(s.put_new("keys/big", &big).expect("put_new"));
    let e = s
        .get_small("keys/big", 100)
        .expect_err("get_small of an oversized object");
    assert_eq!(
        e.kind,
        ErrorKind::Integrity,
        "{}: {e}",
        ctx("get_small over its limit")
    );
    assert_eq!(s.get_small("keys/big", 4096).expect("get_small"), big);

    // Ranged reads: exact bytes; a range past the end is damage (Integrity), never short data.
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert!(s.put_new("data/cd/pack", &data).expect("put_new"));
    assert_eq!(
        s.get_range("data/cd/pack", 0, 10).expect("range"),
        &data[..10]
    );
    assert_eq!(
        s.get_range("data/cd/pack", 99_990, 10).expect("range"),
        &data[99_990..]
    );
    assert_eq!(
        s.get_range("data/cd/pack", 12_345, 6_789).expect("range"),
        &data[12_345..19_134]
    );
    let e = s
        .get_range("data/cd/pack", 99_995, 10)
        .expect_err("a range past the end");
    assert_eq!(
        e.kind,
        ErrorKind::Integrity,
        "{}: {e}",
        ctx("a range past the end")
    );
    let e = s
        .get_range("data/cd/missing", 0, 10)
        .expect_err("a range of a missing object");
    assert_ne!(
        e.kind,
        ErrorKind::Internal,
        "{}: {e}",
        ctx("a range of a missing object")
    );

    // read_ranges hands over every range, in order, with its bytes.
    let ranges = [(0u64, 100usize), (5_000, 1), (50_000, 20_000), (99_999, 1)];
    let mut got = Vec::new();
    s.read_ranges("data/cd/pack", &ranges, &mut |i, bytes| {
        got.push((i, bytes));
        Ok(())
    })
    .expect("read_ranges");
    assert_eq!(got.len(), ranges.len(), "{}", ctx("read_ranges count"));
    for ((i, bytes), &(offset, len)) in got.iter().zip(&ranges) {
        assert_eq!(
            bytes,
            &data[offset as usize..offset as usize + len],
            "{}",
            ctx(&format!("range {i}"))
        );
    }
    // An error from the consumer stops the read and comes back as it is.
    let e = s
        .read_ranges("data/cd/pack", &ranges, &mut |_, _| {
            Err(lifeboat::Error::usage("stop here"))
        })
        .expect_err("the consumer's error");
    assert_eq!(e.message, "stop here", "{}", ctx("read_ranges error"));

    // Listing: everything under a prefix, nested, with sizes; nothing else.
    assert!(s.put_new("backups/01aaaaaaaaaaaa", b"m1").expect("put_new"));
    assert!(s
        .put_new("backups/01bbbbbbbbbbbb", b"m22")
        .expect("put_new"));
    let listed: BTreeMap<String, u64> = s
        .list("data/")
        .expect("list")
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let want: BTreeMap<String, u64> = [
        ("data/ab/ab01".to_string(), 5),
        ("data/cd/pack".to_string(), 100_000),
    ]
    .into();
    assert_eq!(listed, want, "{}", ctx("list data/"));
    let backups: Vec<(String, u64)> = {
        let mut v: Vec<_> = s
            .list("backups/")
            .expect("list")
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        backups,
        vec![
            ("backups/01aaaaaaaaaaaa".to_string(), 2),
            ("backups/01bbbbbbbbbbbb".to_string(), 3)
        ],
        "{}",
        ctx("list backups/")
    );
    assert!(
        s.list("index/")
            .expect("list of an empty prefix")
            .is_empty(),
        "{}",
        ctx("list index/")
    );

    // put_replace creates and replaces (the coordination records).
    s.put_replace("locks/writer", b"one")
        .expect("put_replace new");
    s.put_replace("locks/writer", b"two, longer")
        .expect("put_replace again");
    assert_eq!(
        s.get("locks/writer").expect("get"),
        b"two, longer",
        "{}",
        ctx("put_replace")
    );

    // put_file_new consumes the staged file whether or not it created the object.
    let staging = s.staging_dir().expect("staging_dir");
    for (round, want_created) in [(0, true), (1, false)] {
        let staged = staging.join(format!("conformance-{round}.tmp"));
        std::fs::write(&staged, format!("staged {round}")).expect("stage");
        let created = s
            .put_file_new("data/ef/staged", &staged)
            .expect("put_file_new");
        assert_eq!(
            created,
            want_created,
            "{}",
            ctx(&format!("put_file_new round {round}"))
        );
        assert!(
            !staged.exists(),
            "{}",
            ctx("put_file_new left its staged file")
        );
    }
    assert_eq!(
        s.get("data/ef/staged").expect("get"),
        b"staged 0",
        "{}",
        ctx("put_file_new replaced")
    );

    // Delete removes; deleting what is gone is not an error (a retried delete).
    s.delete("backups/01aaaaaaaaaaaa").expect("delete");
    assert!(
        !s.exists("backups/01aaaaaaaaaaaa").expect("exists"),
        "{}",
        ctx("delete")
    );
    s.delete("backups/01aaaaaaaaaaaa").expect("delete again");
    assert_eq!(
        s.list("backups/").expect("list").len(),
        1,
        "{}",
        ctx("list after delete")
    );

    // Concurrent creators of one name: exactly one wins, and its bytes are what is stored.
    let winners: Vec<(usize, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                scope.spawn(move || {
                    (
                        i,
                        s.put_new("index/race", format!("writer {i}").as_bytes())
                            .expect("racing put_new"),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let won: Vec<usize> = winners
        .iter()
        .filter(|(_, w)| *w)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        won.len(),
        1,
        "{}",
        ctx(&format!("racing put_new winners: {winners:?}"))
    );
    assert_eq!(
        s.get("index/race").expect("get"),
        format!("writer {}", won[0]).as_bytes(),
        "{}",
        ctx("race")
    );

    assert!(s.read_parallelism() >= 1);
}

/// Set `server`'s variables for this process (see the module comment) and open `url`.
fn open_on<S: TestStore>(server: &S, url: &str) -> Arc<dyn Storage> {
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    Arc::from(storage::open(url, false).unwrap_or_else(|e| panic!("open {url}: {e}")))
}

#[test]
fn every_storage_target_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    conforms(Arc::new(LocalStorage::new(dir.path().join("repo"))));
    conforms(Arc::new(
        storage::memory::MemoryStorage::new().expect("memory"),
    ));
    let s3 = S3Server::start();
    conforms(open_on(&s3, &s3.url("conformance")));
    let gcs = GcsServer::start();
    conforms(open_on(&gcs, &gcs.url("conformance")));
    let az = AzuriteServer::start();
    conforms(open_on(&az, &az.url("conformance")));
}
