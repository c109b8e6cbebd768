//! Damage on the primary of a repository with replicas (issue 11): restore and verify read
//! what the primary lost or damaged from a replica holding a good copy and say so once, with
//! counts; they fail (exit 4, naming the pack and the backup) only when no copy is good.
//! `repo repair` puts the primary right from its replicas, rebuilds lost index files from
//! the packs, and `--dry-run` changes nothing. Every restored file is compared with the
//! source database by the test's own SHA-256.

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const PW: &str = "Repair-Passphrase-8812-otter";

/// A repository (encrypted or not) with one backup per database, each with its own pack
/// and index file (random content: nothing dedups), and optionally a replica.
struct Setup {
    env: Env,
    pw: Option<&'static str>,
    replica: PathBuf,
    /// Source database and backup id.
    backups: Vec<(PathBuf, String)>,
}

impl Setup {
    /// `compressions`: one backup per entry, with that `--compression`.
    fn new(encrypted: bool, compressions: &[&str], replica: bool) -> Setup {
        let env = Env::new();
        let mut s = Setup {
            replica: env.path("replica"),
            env,
            pw: encrypted.then_some(PW),
            backups: Vec::new(),
        };
        if encrypted {
            let mut args = vec!["repo", "init", "--encrypt"];
            args.extend(FAST_KDF);
            s.json(&args);
        }
        for (i, compression) in compressions.iter().enumerate() {
            let db = s.env.path(&format!("db{i}.db"));
            make_random_db(&db, "delete", 3_000 + 100 * i as u32, 400);
            let v = s.json(&[
                "backup",
                db.to_str().expect("utf-8"),
                "--compression",
                compression,
            ]);
            let id = v["id"].as_str().expect("id").to_string();
            s.backups.push((db, id));
        }
        if replica {
            s.json(&["replica", "add", s.replica.to_str().expect("utf-8")]);
        }
        s
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut c = self.env.std_cmd();
        if let Some(pw) = self.pw {
            c.env("LIFEBOAT_PASSWORD", pw);
        }
        Out::of(c.args(args).output().expect("run lifeboat"))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.run(&a).ok(&format!("{args:?}")).json()
    }

    fn id(&self, n: usize) -> &str {
        &self.backups[n].1
    }

    /// The one object of kind `packs` or `index_files` that backup `n` wrote: its name in
    /// the repository.
    fn object(&self, n: usize, kind: &str) -> String {
        let shown = self.json(&["show", self.id(n)]);
        let ids = shown["stored"][kind].as_array().expect("array").clone();
        assert_eq!(ids.len(), 1, "{kind} of backup {n}: {shown}");
        let id = ids[0].as_str().expect("id");
        match kind {
            "packs" => format!("data/{}/{id}", &id[..2]),
            _ => format!("index/{id}"),
        }
    }

    fn primary(&self, rel: &str) -> PathBuf {
        self.env.repo().join(rel)
    }

    fn on_replica(&self, rel: &str) -> PathBuf {
        self.replica.join(rel)
    }

    /// Restore backup `n` to a new file; the run and the file.
    fn restore(&self, n: usize) -> (Out, PathBuf) {
        let out = self
            .env
            .path(&format!("restored-{n}-{:08x}.db", rand_u32()));
        let o = self.run(&[
            "restore",
            self.id(n),
            "--output",
            out.to_str().expect("utf-8"),
        ]);
        (o, out)
    }

    /// Backup `n` restores to exactly its source database.
    fn restores_exactly(&self, n: usize) -> Out {
        let (o, out) = self.restore(n);
        let o = o.ok(&format!("restore of backup {n}"));
        assert_eq!(
            sha256_file(&out),
            sha256_file(&self.backups[n].0),
            "restored backup {n} differs from its source"
        );
        o
    }
}

fn rand_u32() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Flip one byte in the middle of a file (inside a frame, for a pack).
fn flip_middle(p: &Path) {
    writable(p);
    let mut bytes = std::fs::read(p).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(p, bytes).expect("write");
}

/// The fallback is said exactly once, with `counts`, names the replica and `repo repair`,
/// and stderr (not a terminal) holds no colour codes.
fn warned_once(o: &Out, counts: &str, replica: &Path) {
    let err = &o.stderr;
    assert!(
        !err.contains('\x1b'),
        "colour codes on a redirected stderr:\n{err:?}"
    );
    assert_eq!(
        err.matches("lifeboat repo repair").count(),
        1,
        "one warning:\n{err}"
    );
    assert_eq!(
        err.matches("WARN").count(),
        1,
        "nothing else warned:\n{err}"
    );
    assert!(
        err.contains(counts),
        "the warning counts {counts:?}:\n{err}"
    );
    assert!(
        err.contains(&format!("from replica {}", replica.display())),
        "the warning names the replica:\n{err}"
    );
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk_files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

fn objects(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|o| o["object"].as_str().expect("object").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reads fall back to a replica
// ---------------------------------------------------------------------------------------

/// Damaged and missing packs of the primary are read from the replica: the restored files
/// are the databases, and each command says so once.
fn damaged_and_missing_packs_are_read_from_the_replica(encrypted: bool) {
    // Uncompressed, a flipped byte still "decompresses": only the pages' hashes catch it.
    let s = Setup::new(encrypted, &["none", "zstd", "zstd"], true);
    let packs: Vec<String> = (0..3).map(|n| s.object(n, "packs")).collect();
    flip_middle(&s.primary(&packs[0]));
    flip_middle(&s.primary(&packs[1]));
    std::fs::remove_file(s.primary(&packs[2])).expect("delete pack");

    let o = s.restores_exactly(0);
    warned_once(&o, "1 damaged frame from replica", &s.replica);
    assert!(
        o.stderr.contains(&packs[0]),
        "names the pack:\n{}",
        o.stderr
    );
    let o = s.restores_exactly(1);
    warned_once(&o, "1 damaged frame from replica", &s.replica);
    let o = s.restores_exactly(2);
    warned_once(&o, "missing frames from replica", &s.replica);
    assert!(
        o.stderr.contains(&packs[2]),
        "names the pack:\n{}",
        o.stderr
    );

    // verify proves each backup restores, with the same single warning for all three.
    let o = s.run(&["verify", "--all"]).ok("verify --all");
    warned_once(&o, "2 damaged and ", &s.replica);
    assert!(o.stderr.contains("missing frames"), "{}", o.stderr);

    // The primary alone is still damaged, and `repo check` (which judges it alone) says
    // what to run.
    let o = s
        .run(&["repo", "check", "--read-data"])
        .code(4, "repo check of the damaged primary");
    for p in &packs {
        assert!(
            o.stdout.contains(p.as_str()),
            "check names {p}:\n{}",
            o.text()
        );
    }
    assert!(
        o.stdout.contains("hint: run `lifeboat repo repair`"),
        "{}",
        o.text()
    );
    let v = s
        .run(&["repo", "check", "--json"])
        .code(4, "check --json")
        .json();
    assert!(
        v["hint"]
            .as_str()
            .is_some_and(|h| h.contains("repo repair")),
        "{v}"
    );
}

#[test]
fn damaged_and_missing_packs_are_read_from_the_replica_plain() {
    damaged_and_missing_packs_are_read_from_the_replica(false);
}

#[test]
fn damaged_and_missing_packs_are_read_from_the_replica_encrypted() {
    damaged_and_missing_packs_are_read_from_the_replica(true);
}

/// Damage on the primary and on the replica: the restore fails with exit 4, naming the
/// pack and the backup, and leaves no file; `repo repair` cannot fix it and says so.
#[test]
fn damage_on_every_copy_fails_naming_the_pack_and_backup() {
    let s = Setup::new(false, &["none", "zstd"], true);
    let pack = s.object(0, "packs");
    flip_middle(&s.primary(&pack));
    flip_middle(&s.on_replica(&pack));
    let before = file_names(s.env.dir.path());
    let (o, out) = s.restore(0);
    let o = o.fails(4, "restore with no good copy", &pack);
    assert!(
        o.stderr.contains(s.id(0)),
        "names the backup:\n{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("no replica has a good copy"),
        "says the replica was tried:\n{}",
        o.stderr
    );
    assert!(!out.exists());
    assert_eq!(
        file_names(s.env.dir.path()),
        before,
        "a failed restore left files"
    );
    s.run(&["verify", s.id(0)])
        .fails(4, "verify with no good copy", &pack);
    // The other backup is untouched.
    s.restores_exactly(1);

    // A pack missing everywhere: exit 4, "missing".
    let pack1 = s.object(1, "packs");
    std::fs::remove_file(s.primary(&pack1)).expect("delete");
    std::fs::remove_file(s.on_replica(&pack1)).expect("delete");
    let (o, _) = s.restore(1);
    let o = o.fails(4, "restore of a pack missing everywhere", &pack1);
    assert!(o.stderr.contains("missing"), "{}", o.stderr);

    // Repair fixes nothing of this, exits 4, and names both packs and their backups.
    let o = s
        .run(&["repo", "repair", "--json"])
        .code(4, "repair with no good copy");
    let v = o.json();
    assert_eq!(v["ok"], false, "{v}");
    let unrepaired = v["unrepaired"].as_array().expect("unrepaired");
    for (p, id) in [(&pack, s.id(0)), (&pack1, s.id(1))] {
        let u = unrepaired
            .iter()
            .find(|u| u["object"] == p.as_str())
            .unwrap_or_else(|| panic!("{p} is reported: {v}"));
        assert!(u["backups"].to_string().contains(id), "{v}");
    }
    let o = s.run(&["repo", "repair"]).code(4, "repair, text");
    assert!(
        o.stdout.contains(&pack) && o.stdout.contains(s.id(0)),
        "{}",
        o.text()
    );
}

// ---------------------------------------------------------------------------------------
// repo repair
// ---------------------------------------------------------------------------------------

/// A flipped pack, a deleted pack, a deleted index file and a damaged index file: after
/// `repo repair` the primary alone passes `repo check --read-data` (the replica is removed
/// first) and restores every backup exactly, without a word about replicas.
fn repair_from_a_replica(encrypted: bool) {
    let s = Setup::new(encrypted, &["zstd", "zstd", "zstd", "zstd"], true);
    let flipped = s.object(0, "packs");
    let deleted = s.object(1, "packs");
    let lost_index = s.object(2, "index_files");
    let damaged_index = s.object(3, "index_files");
    flip_middle(&s.primary(&flipped));
    std::fs::remove_file(s.primary(&deleted)).expect("delete pack");
    std::fs::remove_file(s.primary(&lost_index)).expect("delete index");
    flip_middle(&s.primary(&damaged_index));
    s.run(&["repo", "check", "--read-data"])
        .code(4, "check before repair");

    let v = s.json(&["repo", "repair"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["dry_run"], false, "{v}");
    let repaired = objects(&v, "repaired");
    for o in [&flipped, &deleted, &damaged_index] {
        assert!(repaired.contains(o), "{o} is repaired: {v}");
    }
    assert!(
        repaired
            .iter()
            .any(|o| o.starts_with("index/") && o != &damaged_index),
        "the lost index file is rebuilt: {v}"
    );
    for pack in [&flipped, &deleted] {
        assert_eq!(
            std::fs::read(s.primary(pack)).expect("repaired pack"),
            std::fs::read(s.on_replica(pack)).expect("replica pack"),
            "{pack} holds the replica's bytes"
        );
    }

    // The primary alone is whole again.
    s.json(&["replica", "remove", s.replica.to_str().expect("utf-8")]);
    let check = s.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    std::fs::remove_dir_all(&s.replica).expect("remove the replica");
    for n in 0..4 {
        let o = s.restores_exactly(n);
        assert!(!o.stderr.contains("replica"), "{}", o.stderr);
    }
    let again = s.json(&["repo", "repair"]);
    assert_eq!(again["repaired"], serde_json::json!([]), "{again}");
}

#[test]
fn repair_from_a_replica_plain() {
    repair_from_a_replica(false);
}

#[test]
fn repair_from_a_replica_encrypted() {
    repair_from_a_replica(true);
}

/// With no replica, lost and damaged index files are rebuilt from the packs (which are
/// self-describing once their blobs are hashed); a damaged pack cannot be repaired.
#[test]
fn repair_rebuilds_index_files_from_packs_without_a_replica() {
    let s = Setup::new(true, &["zstd", "gzip", "zstd"], false);
    let lost = s.object(0, "index_files");
    let damaged = s.object(1, "index_files");
    std::fs::remove_file(s.primary(&lost)).expect("delete index");
    flip_middle(&s.primary(&damaged));
    s.run(&["restore", s.id(0), "--output", "x.db"])
        .code(4, "restore before repair");

    let v = s.json(&["repo", "repair"]);
    assert_eq!(v["ok"], true, "{v}");
    let repaired = v["repaired"].as_array().expect("repaired");
    let rebuilt = repaired
        .iter()
        .find(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.contains("rebuilt from 2 packs"))
        })
        .unwrap_or_else(|| panic!("one index file rebuilt from both packs: {v}"));
    let rebuilt = rebuilt["object"].as_str().expect("name");
    assert!(s.primary(rebuilt).is_file(), "{rebuilt} was written");
    assert!(
        repaired
            .iter()
            .any(|r| r["object"] == damaged.as_str() && r["action"].to_string().contains("removed")),
        "the damaged index file is removed: {v}"
    );
    assert!(!s.primary(&damaged).exists());
    let check = s.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
    for n in 0..3 {
        s.restores_exactly(n);
    }

    // A damaged pack needs a replica: exit 4, naming it and its backup, and a hint.
    let pack = s.object(2, "packs");
    flip_middle(&s.primary(&pack));
    let o = s
        .run(&["repo", "repair"])
        .code(4, "repair of a pack with no replica");
    assert!(
        o.stdout.contains(&pack) && o.stdout.contains(s.id(2)),
        "{}",
        o.text()
    );
    assert!(o.stdout.contains("no replica"), "{}", o.text());
    assert!(o.stdout.contains("hint:"), "{}", o.text());
}

/// `--dry-run` reports what it would repair and changes nothing, on the primary or the
/// replica; the real run then does it.
#[test]
fn repair_dry_run_changes_nothing() {
    let s = Setup::new(false, &["zstd", "zstd"], true);
    let flipped = s.object(0, "packs");
    let lost = s.object(1, "index_files");
    flip_middle(&s.primary(&flipped));
    std::fs::remove_file(s.primary(&lost)).expect("delete index");
    let primary = snapshot(&s.env.repo());
    let replica = snapshot(&s.replica);

    let v = s.json(&["repo", "repair", "--dry-run"]);
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let would = objects(&v, "repaired");
    assert!(would.contains(&flipped), "{v}");
    assert!(would.iter().any(|o| o.starts_with("index/")), "{v}");
    let o = s.run(&["repo", "repair", "--dry-run"]).ok("dry run, text");
    assert!(o.stdout.contains("would be copied from"), "{}", o.stdout);
    assert_eq!(
        snapshot(&s.env.repo()),
        primary,
        "the dry run changed the primary"
    );
    assert_eq!(
        snapshot(&s.replica),
        replica,
        "the dry run changed the replica"
    );
    s.run(&["repo", "check", "--read-data"])
        .code(4, "still damaged");

    let done = s.json(&["repo", "repair"]);
    assert_eq!(
        objects(&done, "repaired"),
        would,
        "the run does what the dry run said"
    );
    let check = s.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

/// A repair runs alone: while a backup (on another host) holds a lock marker it refuses with
/// exit 6 and changes nothing; it leaves no lock of its own behind.
#[test]
fn repair_waits_for_running_writers() {
    let s = Setup::new(false, &["zstd"], true);
    let pack = s.object(0, "packs");
    flip_middle(&s.primary(&pack));
    let now = jiff::Timestamp::now().to_string();
    let marker = serde_json::json!({
        "kind": "backup", "host": "another-host", "pid": 4242,
        "started": now, "refreshed": now,
    });
    let lock = s.env.repo().join("locks/backup-00000000000000aa");
    std::fs::create_dir_all(lock.parent().expect("locks")).expect("locks folder");
    std::fs::write(&lock, marker.to_string()).expect("marker");
    let before = std::fs::read(s.primary(&pack)).expect("pack");
    let o = s
        .run(&["repo", "repair"])
        .fails(6, "repair while a backup runs", "another-host");
    assert!(o.stderr.contains("hint:"), "{}", o.stderr);
    assert_eq!(std::fs::read(s.primary(&pack)).expect("pack"), before);
    assert!(
        !s.env.repo().join("locks/prune").exists(),
        "the lock is released"
    );

    std::fs::remove_file(&lock).expect("the backup ends");
    let v = s.json(&["repo", "repair"]);
    assert_eq!(objects(&v, "repaired"), vec![pack], "{v}");
    assert!(
        !s.env.repo().join("locks/prune").exists(),
        "the lock is released"
    );
}

/// A damaged index file is not removed while a backup's manifest cannot be read: the blobs
/// that backup needs were not counted, and that index file may be what locates them.
#[test]
fn repair_keeps_a_damaged_index_file_while_a_manifest_is_unreadable() {
    let s = Setup::new(false, &["zstd", "zstd"], false);
    let damaged = s.object(1, "index_files");
    flip_middle(&s.primary(&damaged));
    let manifest = s.primary(&format!("backups/{}", s.id(1)));
    let bytes = std::fs::read(&manifest).expect("manifest");
    writable(&manifest);
    std::fs::write(&manifest, &bytes[..bytes.len() / 2]).expect("truncate manifest");
    let o = s
        .run(&["repo", "repair"])
        .code(4, "repair with an unreadable manifest and no replica");
    assert!(
        s.primary(&damaged).exists(),
        "the damaged index file was removed: {}",
        o.text()
    );
    assert!(o.stdout.contains("manifest cannot be read"), "{}", o.text());
}
