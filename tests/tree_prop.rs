//! Property test: whatever the folder (names with unicode, spaces and newlines, names that
//! are not UTF-8, empty files and folders, links, files of several content-defined chunks,
//! odd modes and times), a files backup restores it exactly; and a single file of random
//! bytes (a stream cut by content) restores byte for byte, also after an edit in its middle
//! that stores only the chunks around it.
//!
//! `PROPTEST_CASES` sets the number of cases (default 8 per test).

mod common;
use common::tree::{listing, noise};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, Clone)]
enum Node {
    File {
        name: Vec<u8>,
        len: usize,
        seed: u64,
        mode: u32,
        mtime: u64,
    },
    Dir {
        name: Vec<u8>,
        children: Vec<Node>,
        mode: u32,
    },
    Link {
        name: Vec<u8>,
        target: Vec<u8>,
    },
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,8}(\\.conf|\\.toml|)".prop_map(|s| s.into_bytes()),
        "[a-zA-Z0-9 _é☕ü\n.-]{1,12}".prop_map(|s| s.into_bytes()),
        proptest::collection::vec(1u8..=255, 1..10),
    ]
    .prop_filter("a file name", |n| {
        !n.contains(&b'/') && n.as_slice() != b"." && n.as_slice() != b".."
    })
}

fn file() -> impl Strategy<Value = Node> {
    (
        name(),
        prop_oneof![Just(0usize), 1usize..5000, 200_000usize..1_500_000],
        any::<u64>(),
        prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o400)],
        1_000_000_000u64..2_000_000_000,
    )
        .prop_map(|(name, len, seed, mode, mtime)| Node::File {
            name,
            len,
            seed,
            mode,
            mtime,
        })
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        4 => file(),
        1 => (name(), name()).prop_map(|(name, target)| Node::Link { name, target }),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        (
            name(),
            proptest::collection::vec(inner, 0..6),
            prop_oneof![Just(0o755u32), Just(0o700), Just(0o750)],
        )
            .prop_map(|(name, children, mode)| Node::Dir {
                name,
                children,
                mode,
            })
    })
}

/// Create `nodes` in `dir`; duplicate names keep the first.
fn build(dir: &Path, nodes: &[Node]) {
    let mut seen = std::collections::HashSet::new();
    for n in nodes {
        let (Node::File { name, .. } | Node::Dir { name, .. } | Node::Link { name, .. }) = n;
        if !seen.insert(name.clone()) {
            continue;
        }
        let p = dir.join(OsStr::from_bytes(name));
        match n {
            Node::File {
                len,
                seed,
                mode,
                mtime,
                ..
            } => {
                std::fs::write(&p, noise(*len, *seed)).unwrap();
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime))
                    .unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Link { target, .. } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &p).unwrap()
            }
            Node::Dir { children, mode, .. } => {
                std::fs::create_dir(&p).unwrap();
                build(&p, children);
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            }
        }
    }
}

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tree_prop.proptest-regressions"
        )))),
        ..Config::default()
    })
}

#[test]
fn random_folders_round_trip() {
    runner()
        .run(&proptest::collection::vec(node(), 0..8), |nodes| {
            let env = Env::new();
            let src = env.path("src");
            std::fs::create_dir(&src).unwrap();
            build(&src, &nodes);
            let v = env.json(&["backup", src.to_str().unwrap(), "--no-redact"]);
            let out = env.path("out");
            env.json(&[
                "restore",
                v["id"].as_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ]);
            prop_assert_eq!(listing(&out), listing(&src));
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_streams_round_trip_and_an_edit_stores_little() {
    runner()
        .run(
            &(0usize..3_000_000, any::<u64>(), any::<u64>(), 0.0f64..1.0),
            |(len, seed, edit_seed, at)| {
                let env = Env::new();
                let f = env.path("blob.bin");
                let mut data = noise(len, seed);
                std::fs::write(&f, &data).unwrap();
                let v = env.json(&["backup", f.to_str().unwrap()]);
                let out = env.path("out.bin");
                env.json(&[
                    "restore",
                    v["id"].as_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ]);
                prop_assert_eq!(std::fs::read(&out).unwrap(), data.clone());
                // Insert 100 bytes in the middle: only the chunks around the edit are new.
                let pos = (len as f64 * at) as usize;
                data.splice(pos..pos, noise(100, edit_seed));
                std::fs::write(&f, &data).unwrap();
                let w = env.json(&["backup", f.to_str().unwrap()]);
                prop_assert!(num(&w, "new_blobs") <= 3, "{}", w);
                let out2 = env.path("out2.bin");
                env.json(&[
                    "restore",
                    w["id"].as_str().unwrap(),
                    "--output",
                    out2.to_str().unwrap(),
                ]);
                prop_assert_eq!(std::fs::read(&out2).unwrap(), data);
                Ok(())
            },
        )
        .unwrap();
}
