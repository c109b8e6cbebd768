//! Damage to the repository on disk: each kind is detected, named, blamed on exactly the
//! backups it breaks, and never turns into a restored file.
//!
//! Every test backs up two databases with nothing in common (different page layouts, random
//! content, so no page of one dedups against the other), damages an object of the first
//! backup only, and checks that `verify`, `repo check` and `restore` say so about the first
//! and not about the second.

mod common;
use common::*;

use std::path::{Path, PathBuf};

struct Fixture {
    env: Env,
    a: String,
    b: String,
    b_db: PathBuf,
}

fn manifest(env: &Env, id: &str) -> serde_json::Value {
    env.json(&["show", id])
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

fn fixture() -> Fixture {
    let env = Env::new();
    let a_db = env.path("a.db");
    let b_db = env.path("b.db");
    make_random_db(&a_db, "wal", 4_000, 300);
    make_random_db(&b_db, "delete", 3_000, 500);
    let a = env.backup(&a_db);
    let b = env.backup(&b_db);
    let mb = manifest(&env, &b);
    assert_eq!(
        mb["stored"]["reused_blobs"], 0,
        "the fixture needs two backups that share no blob: {mb}"
    );
    Fixture { env, a, b, b_db }
}

impl Fixture {
    /// The object of backup `a` of the given kind (`packs` or `index_files`), as a path.
    fn object_of_a(&self, kind: &str) -> (String, PathBuf) {
        let m = manifest(&self.env, &self.a);
        let ids = strings(&m["stored"][kind]);
        assert_eq!(ids.len(), 1, "{kind}: {ids:?}");
        let id = ids[0].clone();
        let rel = match kind {
            "packs" => format!("data/{}/{}", &id[..2], id),
            _ => format!("index/{id}"),
        };
        let path = self.env.repo().join(&rel);
        assert!(path.is_file(), "{} should exist", path.display());
        (rel, path)
    }

    /// `verify` of the damaged backup fails with code `code` and names `object`.
    fn verify_fails(&self, code: i32, object: &str) {
        let (c, out) = self.env.run(&["verify", &self.a]);
        assert_eq!(c, code, "verify of the damaged backup:\n{out}");
        assert!(out.contains(object), "verify should name {object}:\n{out}");
        let (c, v, err) = self.env.run_json(&["verify", &self.a]);
        assert_eq!(c, code, "{v}\n{err}");
        assert!(
            v.to_string().contains(object),
            "verify --json should name {object}: {v}"
        );
        let (c, out) = self.env.run(&["verify", "--all"]);
        assert_eq!(c, code, "verify --all:\n{out}");
    }

    /// `repo check` fails, names `object`, blames backup a and not backup b.
    fn check_blames_a(&self, read_data: bool, object: &str) {
        let mut args = vec!["repo", "check"];
        if read_data {
            args.push("--read-data");
        }
        let (code, v, err) = self.env.run_json(&args);
        assert_eq!(code, 4, "repo check {read_data}: {v}\n{err}");
        assert_eq!(v["ok"], false);
        let problems = v["problems"].as_array().expect("problems");
        assert!(
            problems
                .iter()
                .any(|p| p["object"].as_str().is_some_and(|o| o.contains(object))),
            "check should name {object}: {v}"
        );
        let blamed: Vec<String> = problems
            .iter()
            .flat_map(|p| strings(&p["backups"]))
            .collect();
        assert!(
            blamed.contains(&self.a),
            "check should blame {}: {v}",
            self.a
        );
        assert!(
            !blamed.contains(&self.b),
            "check blames the intact backup {}: {v}",
            self.b
        );
        // The text form lists them too.
        let (code, out) = self.env.run(&args);
        assert_eq!(code, 4);
        assert!(out.contains(&self.a) && !out.contains(&self.b), "{out}");
    }

    /// Restoring the damaged backup fails with `code` and leaves no file behind.
    fn restore_fails(&self, code: i32) {
        let out = self.env.path("restored-a.db");
        let before = file_names(self.env.dir.path());
        let (c, text) =
            self.env
                .run(&["restore", &self.a, "--output", out.to_str().expect("utf-8")]);
        assert_eq!(c, code, "restore of the damaged backup:\n{text}");
        assert!(!out.exists(), "a failed restore left {}", out.display());
        assert_eq!(
            file_names(self.env.dir.path()),
            before,
            "a failed restore left files"
        );
    }

    /// Restoring the damaged backup over a database fails with `code` and leaves that
    /// database exactly as it was. Run it last: the safety backup it may take is a new backup.
    fn in_place_restore_fails(&self, code: i32) {
        let target = self.env.path("target.db");
        std::fs::copy(&self.b_db, &target).expect("copy");
        let sha = sha256_file(&target);
        let before = file_names(self.env.dir.path());
        let t = target.to_str().expect("utf-8");
        let (c, text) = self
            .env
            .run(&["restore", &self.a, "--db", t, "--yes", "--force"]);
        assert_eq!(c, code, "in-place restore of the damaged backup:\n{text}");
        assert_eq!(
            sha256_file(&target),
            sha,
            "a failed in-place restore changed the database"
        );
        assert_eq!(
            file_names(self.env.dir.path()),
            before,
            "a failed in-place restore left files"
        );
    }

    /// The other backup is untouched: it verifies and restores.
    fn b_still_restores(&self) {
        let v = self.env.json(&["verify", &self.b]);
        assert_eq!(v["ok"], true, "{v}");
        let out = self.env.path("restored-b.db");
        self.env
            .cmd()
            .args(["restore", &self.b, "--output", out.to_str().expect("utf-8")])
            .assert()
            .success();
        assert_eq!(sha256_file(&out), sha256_file(&self.b_db));
    }
}

/// Objects are read-only (0600, written once); tests run as root but say what they mean.
fn writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn flip_byte(p: &Path, at: usize) {
    writable(p);
    let mut bytes = std::fs::read(p).expect("read");
    bytes[at] ^= 0xff;
    std::fs::write(p, bytes).expect("write");
}

#[test]
fn flipped_byte_in_a_pack() {
    let f = fixture();
    let (rel, path) = f.object_of_a("packs");
    let len = std::fs::metadata(&path).expect("pack").len() as usize;
    flip_byte(&path, len / 2);

    f.verify_fails(4, &rel);
    // The cheap check compares sizes only; reading the data finds the damage.
    let (code, v, _) = f.env.run_json(&["repo", "check"]);
    assert_eq!(code, 0, "{v}");
    f.check_blames_a(true, &rel);
    f.restore_fails(4);
    f.b_still_restores();
    f.in_place_restore_fails(4);
}

#[test]
fn truncated_pack() {
    let f = fixture();
    let (rel, path) = f.object_of_a("packs");
    let len = std::fs::metadata(&path).expect("pack").len();
    writable(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(len / 2))
        .expect("truncate");

    f.verify_fails(4, &rel);
    f.check_blames_a(false, &rel);
    f.check_blames_a(true, &rel);
    f.restore_fails(4);
    f.b_still_restores();
    f.in_place_restore_fails(4);
}

#[test]
fn deleted_pack() {
    let f = fixture();
    let (rel, path) = f.object_of_a("packs");
    std::fs::remove_file(&path).expect("delete");

    f.verify_fails(4, &rel);
    f.check_blames_a(false, &rel);
    f.restore_fails(4);
    f.b_still_restores();
    f.in_place_restore_fails(4);
}

#[test]
fn flipped_byte_in_an_index_file() {
    let f = fixture();
    let (rel, path) = f.object_of_a("index_files");
    let len = std::fs::metadata(&path).expect("index").len() as usize;
    flip_byte(&path, len / 2);

    f.verify_fails(4, &rel);
    f.check_blames_a(false, &rel);
    f.check_blames_a(true, &rel);
    f.restore_fails(4);
    f.in_place_restore_fails(4);
    // A damaged index file is skipped: backups that do not need it keep working.
    f.b_still_restores();
}

#[test]
fn deleted_index_file() {
    let f = fixture();
    let (_, path) = f.object_of_a("index_files");
    std::fs::remove_file(&path).expect("delete");

    // Nothing names the lost index file any more; the message says what is missing.
    f.verify_fails(4, "not in any index");
    f.check_blames_a(false, &format!("backups/{}", f.a));
    f.restore_fails(4);
    f.b_still_restores();
    // The pack is still there but nothing indexes it.
    let (_, v, _) = f.env.run_json(&["repo", "check"]);
    assert_eq!(v["unreferenced_packs"], 1, "{v}");
    f.in_place_restore_fails(4);
}

#[test]
fn corrupted_manifest() {
    let f = fixture();
    let rel = format!("backups/{}", f.a);
    let path = f.env.repo().join(&rel);
    writable(&path);
    let mut text = std::fs::read(&path).expect("manifest");
    text.truncate(text.len() / 2); // invalid JSON
    std::fs::write(&path, text).expect("write");

    f.verify_fails(4, &rel);
    f.check_blames_a(false, &rel);
    f.restore_fails(4);
    f.b_still_restores();
    f.in_place_restore_fails(4);
}

#[test]
fn deleted_config() {
    let f = fixture();
    std::fs::remove_file(f.env.repo().join("config")).expect("delete config");

    f.verify_fails(3, "no Lifeboat repository");
    let (code, out) = f.env.run(&["repo", "check"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no Lifeboat repository"), "{out}");
    f.restore_fails(3);
    let (code, out) = f.env.run(&["list"]);
    assert_eq!(code, 3, "{out}");
    f.in_place_restore_fails(3);
}

#[test]
fn backup_after_a_lost_pack_stores_the_pages_again() {
    let f = fixture();
    let (rel, path) = f.object_of_a("packs");
    std::fs::remove_file(&path).expect("delete");

    // The index still lists the lost pack's pages; a new backup must not lean on them.
    let a_db = f.env.path("a.db");
    let (code, v, err) = f.env.run_json(&["backup", a_db.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(err.contains(&rel), "the backup warns about {rel}:\n{err}");
    assert!(
        v["warnings"].to_string().contains(&rel),
        "--json carries the warning: {v}"
    );
    assert_eq!(
        v["reused_blobs"], 0,
        "every page of a.db is stored again: {v}"
    );
    let new_id = v["id"].as_str().expect("id").to_string();
    let verified = f.env.json(&["verify", &new_id]);
    assert_eq!(verified["ok"], true, "{verified}");
    let out = f.env.path("healed.db");
    f.env
        .cmd()
        .args(["restore", &new_id, "--output", out.to_str().expect("utf-8")])
        .assert()
        .success();
    assert_eq!(sha256_file(&out), sha256_file(&a_db));
}

/// Byte ranges `(offset, stored length)` of the frames of a pack that hold page lists
/// (blob kind 1), read from the pack's directory (docs/FORMAT.md).
fn list_frames(pack: &Path) -> Vec<(usize, usize)> {
    let b = std::fs::read(pack).expect("pack");
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as usize;
    let dir_len = u32_at(b.len() - 12);
    let mut i = b.len() - 12 - dir_len;
    let mut found = Vec::new();
    for _ in 0..u32_at(i) {
        i += 4;
        let offset = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes")) as usize;
        let stored = u32_at(i + 8);
        let count = u32_at(i + 17);
        i += 21;
        let mut kinds = Vec::new();
        if b[i] == 1 {
            kinds.push(b[i + 1]);
            i += 6;
        } else {
            i += 1;
            for _ in 0..count {
                kinds.push(b[i]);
                i += 5;
            }
        }
        if kinds.contains(&1) {
            found.push((offset, stored));
        }
        i -= 4; // the next frame's fields start here; the loop adds 4 back
    }
    found
}

#[test]
fn corrupted_page_list_is_reported_by_repo_check() {
    let f = fixture();
    let (rel, path) = f.object_of_a("packs");
    let frames = list_frames(&path);
    assert!(!frames.is_empty(), "pack {rel} holds no page list");
    let (offset, len) = frames[0];
    flip_byte(&path, offset + len / 2);

    // The pack keeps its size, but `repo check` reads every page list to find the pages a
    // backup needs: a list that fails its check must not pass as "no problems found".
    f.check_blames_a(false, &rel);
    f.check_blames_a(true, &rel);
    f.verify_fails(4, &rel);
    f.restore_fails(4);
    f.b_still_restores();
}

/// `lifeboat ARGS --json` on one CPU: one compressor, so frames reach the pack in a fixed
/// order (packs still differ: each has a random salt).
fn run_on_one_cpu(env: &Env, args: &[&str]) -> (i32, serde_json::Value, String) {
    use std::os::unix::process::CommandExt;
    let mut c = env.std_cmd();
    c.args(args).arg("--json");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().expect("run lifeboat");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn backup_never_leans_on_a_damaged_copy_of_the_pack_it_writes() {
    let env = Env::new();
    let db = env.path("a.db");
    make_random_db(&db, "wal", 2_000, 300);
    let d = db.to_str().expect("utf-8");
    let (code, v, err) = run_on_one_cpu(&env, &["backup", d]);
    assert_eq!(code, 0, "{v}\n{err}");
    let first = v["id"].as_str().expect("id").to_string();
    let m = env.json(&["show", &first]);
    let packs = strings(&m["stored"]["packs"]);
    assert_eq!(packs.len(), 1, "{m}");
    let rel = format!("data/{}/{}", &packs[0][..2], packs[0]);
    let path = env.repo().join(&rel);
    let len = std::fs::metadata(&path).expect("pack").len();
    writable(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(len / 2))
        .expect("truncate");

    // The backup stores the lost pages again. Packs carry a random salt, so the new pack
    // can never be the damaged one under its name: each backup commits a complete copy,
    // with or without the read-back check, and restores exactly.
    for extra in [&["--no-verify"][..], &[]] {
        let args: Vec<&str> = ["backup", d].iter().chain(extra).copied().collect();
        let (code, v, err) = run_on_one_cpu(&env, &args);
        assert_eq!(code, 0, "{args:?}: {v}\n{err}");
        let id = v["id"].as_str().expect("id");
        let new_packs = strings(&env.json(&["show", id])["stored"]["packs"]);
        assert!(
            !new_packs.contains(&packs[0]),
            "a new pack, not the damaged one"
        );
        let out = env.path(&format!("restored-{id}.db"));
        env.cmd()
            .args(["restore", id, "--output", out.to_str().expect("utf-8")])
            .assert()
            .success();
        assert_eq!(sha256_file(&out), sha256_file(&db));
    }
    // The damaged copy is still named. (Whether the first backup is blamed too depends on
    // which copy of its pages the check meets first: they are now also in the new packs.)
    let (code, text) = env.run(&["repo", "check"]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains(&rel), "{text}");
    let out = env.path("first.db");
    env.cmd()
        .args(["restore", &first, "--output", out.to_str().expect("utf-8")])
        .assert()
        .success();
}

/// A restore learns late that part of the image is lost: the first page lists are intact and
/// their pages are being restored when a later list turns out to be unreadable. The error
/// names the lost list (not a failure of the restore's own machinery) and no file is left.
#[test]
fn an_index_lost_half_way_through_the_image_is_reported() {
    let env = Env::new();
    let db = env.path("big.db");
    // ~7,000 pages; the second backup changes only the last rows, so its first page lists
    // (1,024 ids each) are those of the first backup and only its last ones are new.
    make_random_db(&db, "wal", 24_000, 1_000);
    env.backup(&db);
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute(
        "UPDATE filler SET payload = randomblob(1000) WHERE id > 23000",
        [],
    )
    .expect("change");
    drop(c);
    let second = env.backup(&db);
    let m = manifest(&env, &second);
    let index_files = strings(&m["stored"]["index_files"]);
    assert_eq!(index_files.len(), 1, "{m}");
    let path = env.repo().join("index").join(&index_files[0]);
    writable(&path);
    std::fs::remove_file(&path).expect("delete");

    let out = env.path("restored.db");
    let before = file_names(env.dir.path());
    let (code, text) = env.run(&["restore", &second, "--output", out.to_str().expect("utf-8")]);
    assert_eq!(code, 4, "{text}");
    assert!(text.contains("not in any index"), "{text}");
    assert!(!out.exists());
    assert_eq!(
        file_names(env.dir.path()),
        before,
        "a failed restore left files"
    );
}
