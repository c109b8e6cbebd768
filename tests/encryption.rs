//! Encrypted repositories (issue 4), through the real binary: round trips, nothing readable at
//! rest, wrong and missing passphrases, tampering of every kind of object, key management,
//! Argon2id parameters, passphrase sources, and secrets never reaching any output.
//!
//! Key files use tiny Argon2id costs (64 KiB, 1 pass) except where the defaults are tested.

/// Where a pack's first frame starts: after "LBPACK01" and 16 bytes of salt.
const FRAMES: usize = 8 + 16;

mod common;
use common::*;

use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PW: &str = "Correct-Horse-7731-battery";
const PW2: &str = "Second-Passphrase-9904-zephyr";
const WRONG: &str = "Wrong-Passphrase-5521-quince";
const FAST: [&str; 4] = ["--argon2-memory", "64", "--argon2-iterations", "1"];

/// A table name and a row value that must never be readable in the repository.
const TABLE: &str = "zebra_ledger_accounts";
const ROW_VALUE: &str = "pelican-4417-distinctive-row-value";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Run `lifeboat ARGS` with extra environment variables (stdin is not a terminal).
fn run_vars(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Out {
    let mut c = env.std_cmd();
    for (k, v) in vars {
        c.env(k, v);
    }
    Out::of(c.args(args).output().expect("run lifeboat"))
}

/// Run `lifeboat ARGS` with `LIFEBOAT_PASSWORD=pw` (none if `pw` is None).
fn run(env: &Env, pw: Option<&str>, args: &[&str]) -> Out {
    match pw {
        Some(p) => run_vars(env, &[("LIFEBOAT_PASSWORD", p)], args),
        None => run_vars(env, &[], args),
    }
}

/// Run `lifeboat ARGS --json` with passphrase `pw`, assert success, parse stdout.
fn json(env: &Env, pw: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    run(env, Some(pw), &a).ok(&format!("{args:?}")).json()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `repo init --encrypt` with fast Argon2id parameters and passphrase `PW`.
fn init_encrypted(env: &Env) {
    let mut args = vec!["repo", "init", "--encrypt"];
    args.extend(FAST);
    let v = json(env, PW, &args);
    assert_eq!(v["encryption"], "aes-256-gcm+blake3", "{v}");
}

/// Back up `db` with passphrase `pw`; the backup's JSON report.
fn backup(env: &Env, pw: &str, db: &Path) -> Value {
    json(env, pw, &["backup", s(db)])
}

/// A WAL database with a distinctive table name and row values, `rows` rows.
fn make_secret_db(path: &Path, rows: u32) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open");
    c.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; CREATE TABLE {TABLE}(id INTEGER PRIMARY KEY, v TEXT);"
    ))
    .expect("schema");
    let tx = c.unchecked_transaction().expect("tx");
    for i in 0..rows {
        tx.execute(
            &format!("INSERT INTO {TABLE}(v) VALUES (?1)"),
            [format!("{ROW_VALUE} {i}")],
        )
        .expect("insert");
    }
    tx.commit().expect("commit");
    c
}

/// Every file under `dir`, recursively, with its bytes (keys are paths relative to `dir`).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `rel` is a key file (`keys/<16 hex>`, JSON) or the config.
fn is_json_object(rel: &str) -> bool {
    rel == "config"
        || rel
            .strip_prefix("keys/")
            .is_some_and(|n| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn pack_rel(id: &str) -> String {
    format!("data/{}/{}", &id[..2], id)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

/// Make a stored object writable (objects are 0600; tests may run as another user too).
fn writable(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn flip_byte(p: &Path, at: usize) {
    writable(p);
    let mut bytes = std::fs::read(p).expect("read");
    assert!(at < bytes.len(), "{} has only {} bytes", p.display(), at);
    bytes[at] ^= 0x01;
    std::fs::write(p, bytes).expect("write");
}

fn set_len(p: &Path, len: u64) {
    writable(p);
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}

/// Restore `id` to a new file in a fresh folder; the restored path.
fn restore(env: &Env, pw: &str, id: &str, name: &str) -> PathBuf {
    let out = env.path(name);
    run(env, Some(pw), &["restore", id, "--output", s(&out)]).ok("restore");
    out
}

/// Restored `out` equals backup `id`: its bytes hash to what the manifest recorded, and its
/// rows are the source's.
fn assert_restores(env: &Env, pw: &str, id: &str, expected_dump: &[String]) {
    let m = json(env, pw, &["show", id]);
    let out = restore(env, pw, id, &format!("restored-{id}-{}.db", rand_suffix()));
    assert_eq!(
        sha256_file(&out),
        m["sqlite"]["sha256"].as_str().expect("sha256"),
        "restored bytes differ from the manifest's SHA-256"
    );
    assert_eq!(dump(&out), expected_dump, "restored rows differ");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What `repo inspect` says of the sealed object at `offset` of `object` (the header is
/// masked: only the repository's keys tell its kind and data-key generation).
fn inspect(env: &Env, pw: &str, object: &str, offset: usize) -> (u64, u64) {
    let v = json(
        env,
        pw,
        &["repo", "inspect", object, "--offset", &offset.to_string()],
    );
    assert_eq!(v["envelope"], 2, "{v}");
    (
        v["kind"].as_u64().expect("kind"),
        v["generation"].as_u64().expect("generation"),
    )
}

// ---------------------------------------------------------------------------------------
// 1. Round trip
// ---------------------------------------------------------------------------------------

#[test]
fn round_trip_backup_list_show_verify_restore_and_dedup() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    let conn = make_secret_db(&db, 3_000);

    let b1 = backup(&env, PW, &db);
    let id1 = b1["id"].as_str().expect("id").to_string();
    assert!(b1["new_blobs"].as_u64().unwrap() > 0, "{b1}");

    let list = json(&env, PW, &["list"]);
    let rows = list.as_array().expect("list");
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["id"], id1.as_str());
    assert_eq!(rows[0]["source"], s(&db.canonicalize().unwrap()));
    // The text form works too.
    let text = run(&env, Some(PW), &["list"]).ok("list");
    assert!(text.stdout.contains(&id1), "{}", text.stdout);

    let m1 = json(&env, PW, &["show", &id1]);
    assert_eq!(m1["id"], id1.as_str());
    assert_eq!(m1["sqlite"]["sha256"], b1["sha256"]);
    assert_eq!(m1["sqlite"]["tables"][TABLE], 3_000, "{m1}");
    run(&env, Some(PW), &["show", "latest"]).ok("show");

    let v = json(&env, PW, &["verify", &id1]);
    assert_eq!(v["ok"], true, "{v}");
    run(&env, Some(PW), &["verify"]).ok("verify (text)");

    let dump1 = dump(&db);
    assert_restores(&env, PW, &id1, &dump1);

    // A small change: the second backup stores only what changed.
    conn.execute(
        &format!("UPDATE {TABLE} SET v = 'changed' WHERE id = 7"),
        [],
    )
    .expect("update");
    let b2 = backup(&env, PW, &db);
    let id2 = b2["id"].as_str().expect("id").to_string();
    assert!(
        b2["reused_blobs"].as_u64().unwrap() > 0,
        "the second backup should dedup against the first: {b2}"
    );
    assert!(
        b2["new_blobs"].as_u64().unwrap() < b1["new_blobs"].as_u64().unwrap(),
        "{b2}"
    );
    let dump2 = dump(&db);
    assert_ne!(dump1, dump2);
    let v = json(&env, PW, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    assert_restores(&env, PW, &id2, &dump2);
    assert_restores(&env, PW, &id1, &dump1);

    let c = json(&env, PW, &["repo", "check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");
}

// ---------------------------------------------------------------------------------------
// 2. Nothing readable at rest
// ---------------------------------------------------------------------------------------

#[test]
fn nothing_readable_at_rest() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("quokka_private_ledger.db");
    make_secret_db(&db, 2_000);
    let db_abs = db.canonicalize().unwrap();
    // Uncompressed frames: whatever is not encrypted would be in plain sight.
    let id = json(&env, PW, &["backup", s(&db), "--compression", "none"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    backup(&env, PW, &db); // and a zstd one

    let files = tree(&env.repo());
    assert!(files.keys().any(|k| k.starts_with("data/")), "{files:?}");
    assert!(files.keys().any(|k| k.starts_with("index/")));
    assert!(files.keys().any(|k| k.starts_with("backups/")));
    assert!(
        files.contains_key("keys/data-00000000"),
        "{:?}",
        files.keys()
    );
    let needles: [&[u8]; 5] = [
        TABLE.as_bytes(),
        ROW_VALUE.as_bytes(),
        s(&db_abs).as_bytes(),
        b"quokka_private_ledger",
        PW.as_bytes(),
    ];
    for (rel, bytes) in &files {
        if is_json_object(rel) {
            // Key files and config are JSON by design, but never hold the passphrase or data.
            for n in &needles {
                assert!(
                    !contains(bytes, n),
                    "{rel} contains {:?}",
                    String::from_utf8_lossy(n)
                );
            }
            continue;
        }
        for n in &needles {
            assert!(
                !contains(bytes, n),
                "{rel} contains {:?} in the clear",
                String::from_utf8_lossy(n)
            );
        }
    }

    // Manifests are sealed objects of kind 4, not JSON.
    let manifests: Vec<_> = files
        .iter()
        .filter(|(k, _)| k.starts_with("backups/"))
        .collect();
    assert_eq!(manifests.len(), 2);
    for (rel, bytes) in &manifests {
        assert!(
            serde_json::from_slice::<Value>(bytes).is_err(),
            "{rel} is readable JSON"
        );
        let v = json(&env, PW, &["repo", "inspect", rel]);
        assert_eq!(
            (v["envelope"].as_u64(), v["kind"].as_u64()),
            (Some(2), Some(4)),
            "{rel}: {v}"
        );
        assert!(!contains(bytes, b"\"sha256\""), "{rel}");
    }
    assert!(files.contains_key(&format!("backups/{id}")));

    let show = json(&env, PW, &["repo", "show"]);
    assert_eq!(show["encrypted"], true, "{show}");
    assert_eq!(show["encryption"], "aes-256-gcm+blake3", "{show}");
    assert_eq!(show["key_files"], 1, "{show}");
    assert_eq!(show["data_key_generations"], 1, "{show}");
    let text = run(&env, Some(PW), &["repo", "show"]).ok("repo show");
    assert!(text.stdout.contains("ENCRYPTED"), "{}", text.stdout);
    let config: Value = serde_json::from_slice(&files["config"]).expect("config is JSON");
    assert_eq!(config["encryption"], "aes-256-gcm+blake3");

    // Control: the same database in an unencrypted repository is readable, so the search
    // above would have found it.
    let plain = env.path("plain-repo");
    run(&env, None, &["--repo", s(&plain), "repo", "init"]).ok("plain init");
    run(
        &env,
        None,
        &[
            "--repo",
            s(&plain),
            "backup",
            s(&db),
            "--compression",
            "none",
        ],
    )
    .ok("plain backup");
    run(&env, None, &["--repo", s(&plain), "key", "list"]).code(2, "key list, plain repo");
    let plain_files = tree(&plain);
    assert!(
        plain_files
            .values()
            .any(|b| contains(b, ROW_VALUE.as_bytes())),
        "control: an unencrypted repository should show the row value"
    );
    assert!(
        plain_files
            .values()
            .any(|b| contains(b, s(&db_abs).as_bytes())),
        "control: an unencrypted manifest should show the source path"
    );
}

#[test]
fn two_encrypted_repositories_store_the_same_database_differently() {
    let env = Env::new();
    let db = env.path("same.db");
    make_secret_db(&db, 1_500);
    let repos = [env.path("r1"), env.path("r2")];
    let mut packs = Vec::new();
    let mut shas = Vec::new();
    for r in &repos {
        let mut args = vec!["--repo", s(r), "repo", "init", "--encrypt"];
        args.extend(FAST);
        run(&env, Some(PW), &args).ok("init");
        let b = json(&env, PW, &["--repo", s(r), "backup", s(&db)]);
        shas.push(b["sha256"].as_str().unwrap().to_string());
        let files: Vec<(String, Vec<u8>)> = tree(r)
            .into_iter()
            .filter(|(k, _)| k.starts_with("data/"))
            .collect();
        assert_eq!(files.len(), 1, "one pack expected");
        packs.push(files.into_iter().next().unwrap());
    }
    assert_eq!(shas[0], shas[1], "same database");
    let ((n1, p1), (n2, p2)) = (&packs[0], &packs[1]);
    assert_ne!(n1, n2, "pack names (hashes of the bytes) differ");
    assert_ne!(p1, p2, "pack bytes differ");
    // Not just different nonces on identical layouts: the first frames' ciphertexts differ
    // from their first byte on (after the 24-byte nonce and the 6-byte masked header).
    let c1 = &p1[FRAMES + 30..FRAMES + 30 + 64];
    let c2 = &p2[FRAMES + 30..FRAMES + 30 + 64];
    assert_ne!(c1, c2);
    assert_ne!(
        &p1[FRAMES + 6..FRAMES + 30],
        &p2[FRAMES + 6..FRAMES + 30],
        "nonces differ"
    );
    // And index files (which hold the keyed blob ids) differ too.
    let idx = |r: &Path| {
        tree(r)
            .into_iter()
            .filter(|(k, _)| k.starts_with("index/"))
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_ne!(idx(&repos[0]), idx(&repos[1]));
}

// ---------------------------------------------------------------------------------------
// 3. Wrong and missing passphrases
// ---------------------------------------------------------------------------------------

#[test]
fn wrong_passphrase_is_refused_and_writes_nothing() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    let conn = make_secret_db(&db, 500);
    let id = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    conn.execute(&format!("DELETE FROM {TABLE} WHERE id < 50"), [])
        .expect("change");
    let before = tree(&env.repo());
    let out = env.path("out.db");

    let cases: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["backup", s(&db)],
        vec!["restore", &id, "--output", s(&out)],
        vec!["restore", "latest", "--output", s(&out)],
        vec!["verify"],
        vec!["show", &id],
        vec!["repo", "show"],
        vec!["repo", "check"],
        vec!["key", "list"],
        vec!["key", "rotate"],
    ];
    for args in &cases {
        let o = run(&env, Some(WRONG), args).code(8, &format!("{args:?}"));
        assert!(
            o.stderr.contains("wrong passphrase"),
            "{args:?}: the message should say the passphrase is wrong:\n{}",
            o.text()
        );
        assert!(!o.text().contains(WRONG), "{args:?} printed the passphrase");
        let mut a = args.clone();
        a.push("--json");
        let o = run(&env, Some(WRONG), &a).code(8, &format!("{a:?}"));
        let v = o.json();
        assert_eq!(v["error"]["kind"], "Auth", "{v}");
        assert_eq!(v["error"]["exit_code"], 8, "{v}");
        assert!(!out.exists(), "{args:?} created the output file");
        assert_eq!(tree(&env.repo()), before, "{args:?} changed the repository");
    }
    // Key management with a wrong passphrase changes nothing either.
    let o = run_vars(
        &env,
        &[("LIFEBOAT_PASSWORD", WRONG), ("LIFEBOAT_NEW_PASSWORD", PW2)],
        &["key", "add"],
    );
    assert_eq!(o.code, 8, "{}", o.text());
    assert_eq!(tree(&env.repo()), before, "key add changed the repository");

    // The right passphrase still works, and nothing was added by the failed backup.
    let list = json(&env, PW, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn missing_passphrase_without_a_terminal_is_refused_with_a_hint() {
    let env = Env::new();
    // repo init --encrypt with no passphrase source: refused, nothing created.
    let mut args = vec!["repo", "init", "--encrypt"];
    args.extend(FAST);
    let o = run(&env, None, &args).code(8, "init without passphrase");
    assert!(o.stderr.contains("passphrase"), "{}", o.stderr);
    assert!(
        !env.repo().join("config").exists(),
        "a repository was created"
    );

    init_encrypted(&env);
    let db = env.path("src.db");
    make_secret_db(&db, 200);
    let id = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let before = tree(&env.repo());
    let out = env.path("out.db");
    for args in [
        vec!["list"],
        vec!["backup", s(&db)],
        vec!["restore", &id, "--output", s(&out)],
        vec!["verify"],
    ] {
        let o = run(&env, None, &args).code(8, &format!("{args:?} without passphrase"));
        assert!(
            o.stderr.contains("no passphrase was given"),
            "{args:?}: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains("hint:")
                && o.stderr.contains("LIFEBOAT_PASSWORD")
                && o.stderr.contains("--password-file"),
            "{args:?}: the hint should say how to give one: {}",
            o.stderr
        );
        assert!(!out.exists());
        assert_eq!(tree(&env.repo()), before, "{args:?} changed the repository");
    }
    let (code, v, _) = env.run_json(&["list"]);
    assert_eq!(code, 8);
    assert_eq!(v["error"]["kind"], "Auth", "{v}");
    assert!(v["error"]["hint"].as_str().is_some(), "{v}");
}

// ---------------------------------------------------------------------------------------
// 4. Tampering
// ---------------------------------------------------------------------------------------

/// An encrypted repository with two backups of one database (the second after a change, so
/// it has a pack of its own).
struct Fx {
    env: Env,
    ids: [String; 2],
    dumps: [Vec<String>; 2],
}

fn tamper_fixture() -> Fx {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    let conn = make_secret_db(&db, 3_000);
    let a = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let da = dump(&db);
    conn.execute(&format!("UPDATE {TABLE} SET v = 'new' WHERE id > 2900"), [])
        .expect("change");
    let b = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let db_ = dump(&db);
    Fx {
        env,
        ids: [a, b],
        dumps: [da, db_],
    }
}

impl Fx {
    fn manifest(&self, n: usize) -> Value {
        json(&self.env, PW, &["show", &self.ids[n]])
    }

    /// The single object of `kind` (`packs` / `index_files`) backup `n` wrote: (name, path).
    fn object(&self, n: usize, kind: &str) -> (String, PathBuf) {
        let ids = strings(&self.manifest(n)["stored"][kind]);
        assert_eq!(ids.len(), 1, "{kind}: {ids:?}");
        let rel = match kind {
            "packs" => pack_rel(&ids[0]),
            _ => format!("index/{}", ids[0]),
        };
        let p = self.env.repo().join(&rel);
        assert!(p.is_file(), "{}", p.display());
        (rel, p)
    }

    fn manifest_path(&self, n: usize) -> PathBuf {
        self.env.repo().join("backups").join(&self.ids[n])
    }

    /// verify of backup `n` exits 4 naming `object`; restore --output exits 4 and leaves
    /// nothing behind.
    fn detected(&self, n: usize, object: &str) {
        let id = &self.ids[n];
        let o = run(&self.env, Some(PW), &["verify", id]);
        assert_eq!(o.code, 4, "verify of the tampered backup:\n{}", o.text());
        assert!(
            o.text().contains(object),
            "verify should name {object}:\n{}",
            o.text()
        );
        let o = run(&self.env, Some(PW), &["verify", id, "--json"]);
        assert_eq!(o.code, 4, "verify --json:\n{}", o.text());
        assert!(o.text().contains(object), "{}", o.text());

        let out_dir = self.env.path(&format!("out-{}", rand_suffix()));
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("restored.db");
        let o = run(&self.env, Some(PW), &["restore", id, "--output", s(&out)]);
        assert_eq!(o.code, 4, "restore of the tampered backup:\n{}", o.text());
        assert!(
            o.text().contains(object),
            "restore should name {object}:\n{}",
            o.text()
        );
        assert!(!out.exists(), "a failed restore left {}", out.display());
        assert_eq!(file_names(&out_dir), Vec::<String>::new(), "leftover files");
    }

    /// Backup `n` is intact: verifies and restores to its rows.
    fn intact(&self, n: usize) {
        let v = json(&self.env, PW, &["verify", &self.ids[n]]);
        assert_eq!(v["ok"], true, "{v}");
        assert_restores(&self.env, PW, &self.ids[n], &self.dumps[n]);
    }

    /// `repo check --read-data` exits 4 naming `object`.
    fn check_names(&self, object: &str) {
        let o = run(
            &self.env,
            Some(PW),
            &["repo", "check", "--read-data", "--json"],
        );
        assert_eq!(o.code, 4, "repo check --read-data:\n{}", o.text());
        assert!(
            o.stdout.contains(object),
            "check should name {object}: {}",
            o.stdout
        );
    }

    /// Restoring backup `n` either fails with 4 leaving nothing, or writes exactly the
    /// backed-up database: never a database from unauthenticated bytes.
    /// Damage a restore never reads (a pack's directory or tail): verify reports it, naming
    /// the pack; a restore either refuses or writes exactly the backed-up database.
    fn verify_reports(&self, n: usize, object: &str) {
        let id = &self.ids[n];
        for args in [
            vec!["verify", id.as_str()],
            vec!["verify", id.as_str(), "--json"],
        ] {
            let o = run(&self.env, Some(PW), &args);
            assert_eq!(o.code, 4, "{args:?} of the tampered backup:\n{}", o.text());
            assert!(
                o.text().contains(object),
                "{args:?} should name {object}:\n{}",
                o.text()
            );
        }
        self.restore_is_exact_or_refused(n);
    }

    fn restore_is_exact_or_refused(&self, n: usize) {
        let out_dir = self.env.path(&format!("out-{}", rand_suffix()));
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("restored.db");
        let o = run(
            &self.env,
            Some(PW),
            &["restore", &self.ids[n], "--output", s(&out)],
        );
        if o.code == 0 {
            let m = self.manifest(n);
            assert_eq!(sha256_file(&out), m["sqlite"]["sha256"].as_str().unwrap());
            assert_eq!(dump(&out), self.dumps[n]);
        } else {
            assert_eq!(o.code, 4, "{}", o.text());
            assert_eq!(file_names(&out_dir), Vec::<String>::new());
        }
    }
}

#[test]
fn tampered_frame_in_a_pack_is_detected() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    // "LBPACK01" and the salt, then the first sealed frame: a 24-byte nonce and a 6-byte
    // masked header, then ciphertext.
    flip_byte(&path, FRAMES + 30 + 100);
    f.detected(0, &rel);
    f.check_names(&rel);
}

#[test]
fn tampered_frame_header_is_detected() {
    // The nonce and the (masked) header are authenticated too.
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    flip_byte(&path, FRAMES + 10); // inside the first frame's nonce
    f.detected(0, &rel);
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    flip_byte(&path, FRAMES + 25); // the masked kind byte
    f.detected(0, &rel);
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    flip_byte(&path, FRAMES + 27); // the masked generation
    f.detected(0, &rel);
}

#[test]
fn tampered_pack_directory_is_detected_by_check_and_never_restored_from() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    // The sealed directory ends 12 bytes before the end (u32 length, "LBPKDIR1").
    flip_byte(&path, len - 12 - 5);
    f.check_names(&rel);
    f.restore_is_exact_or_refused(0);
}

/// The brief: a flipped byte in a pack's directory makes `verify` exit 4 naming the pack.
/// verify and restore read only the frames the backup needs (located by the index), never
/// the pack directory, so they report "OK: this backup restores" for a pack that has been
/// modified; only `repo check --read-data` notices. See the report.
#[test]
fn tampered_pack_directory_fails_verify() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len - 12 - 5);
    f.verify_reports(0, &rel);
}

#[test]
fn truncated_pack_is_detected() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    let len = std::fs::metadata(&path).unwrap().len();
    set_len(&path, len / 2);
    f.detected(0, &rel);
    f.check_names(&rel);
}

/// Cutting only a pack's tail (its directory) leaves every frame readable: verify reports the
/// damage (it checks each used pack's length and directory), plain `repo check` compares
/// sizes, and a restore still writes exactly the backed-up database.
#[test]
fn pack_truncated_by_its_tail_fails_verify() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "packs");
    let len = std::fs::metadata(&path).unwrap().len();
    set_len(&path, len - 1);
    let o = run(&f.env, Some(PW), &["repo", "check", "--json"]);
    assert_eq!(o.code, 4, "plain repo check compares sizes:\n{}", o.text());
    assert!(o.stdout.contains(&rel), "{}", o.stdout);
    f.verify_reports(0, &rel);
}

#[test]
fn tampered_index_file_is_detected() {
    let f = tamper_fixture();
    let (rel, path) = f.object(0, "index_files");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);
    f.detected(0, &rel);
}

#[test]
fn tampered_index_file_renamed_to_its_new_hash_is_detected() {
    // Index files are named by the (unkeyed) hash of their bytes, so an attacker can give a
    // modified one a matching name: the seal must catch it.
    let f = tamper_fixture();
    let (_, path) = f.object(0, "index_files");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);
    let bytes = std::fs::read(&path).unwrap();
    let new_name = blake3::hash(&bytes).to_hex().to_string();
    let new_rel = format!("index/{new_name}");
    std::fs::rename(&path, f.env.repo().join(&new_rel)).unwrap();
    f.detected(0, &new_rel);
    let o = run(&f.env, Some(PW), &["verify", &f.ids[0]]);
    assert!(
        o.text().contains("failed authentication"),
        "the seal, not the name, should reject it:\n{}",
        o.text()
    );
}

#[test]
fn tampered_manifest_is_detected() {
    let f = tamper_fixture();
    let path = f.manifest_path(0);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);
    f.detected(0, &format!("backups/{}", f.ids[0]));
    // The other backup, addressed by its full id, is unaffected.
    f.intact(1);
    // Listing (which reads every manifest) names the bad one.
    let o = run(&f.env, Some(PW), &["list"]).code(4, "list");
    assert!(o.text().contains(&f.ids[0]), "{}", o.text());
}

#[test]
fn swapped_manifests_are_detected() {
    let f = tamper_fixture();
    let (a, b) = (f.manifest_path(0), f.manifest_path(1));
    let a_bytes = std::fs::read(&a).unwrap();
    writable(&b);
    std::fs::write(&b, &a_bytes).unwrap(); // backups/B now holds A's sealed manifest
    f.detected(1, &format!("backups/{}", f.ids[1]));
    f.intact(0);

    // And a full exchange of the two.
    let f = tamper_fixture();
    let (a, b) = (f.manifest_path(0), f.manifest_path(1));
    let tmp = f.env.path("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&b, &a).unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    f.detected(0, &format!("backups/{}", f.ids[0]));
    f.detected(1, &format!("backups/{}", f.ids[1]));
}

#[test]
fn pack_replaced_by_another_pack_of_the_repository_is_detected() {
    let f = tamper_fixture();
    let (rel_a, pa) = f.object(0, "packs");
    let (_, pb) = f.object(1, "packs");
    writable(&pa);
    std::fs::copy(&pb, &pa).unwrap();
    f.detected(0, &rel_a);

    let f = tamper_fixture();
    let (_, pa) = f.object(0, "packs");
    let (rel_b, pb) = f.object(1, "packs");
    writable(&pb);
    std::fs::copy(&pa, &pb).unwrap();
    f.detected(1, &rel_b);
}

#[test]
fn pack_replaced_by_a_pack_of_identical_layout_is_detected() {
    // Two two-page databases with nothing in common, stored uncompressed: their packs have
    // frames at the same offsets with the same lengths, so a frame of one opens where the
    // other's frame is expected (frames are not bound to their pack). The keyed blob ids
    // must still catch the substitution.
    let env = Env::new();
    init_encrypted(&env);
    let mut ids = Vec::new();
    let mut packs = Vec::new();
    for name in ["t_one", "t_two"] {
        let d = env.path(&format!("{name}.db"));
        let c = rusqlite::Connection::open(&d).unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE {name}(id INTEGER PRIMARY KEY, b BLOB);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10)
             INSERT INTO {name}(b) SELECT randomblob(300) FROM s;"
        ))
        .unwrap();
        drop(c);
        let b = json(&env, PW, &["backup", s(&d), "--compression", "none"]);
        assert_eq!(b["page_count"], 2, "{b}");
        assert_eq!(b["reused_blobs"], 0, "{b}");
        let id = b["id"].as_str().unwrap().to_string();
        let m = json(&env, PW, &["show", &id]);
        let p = strings(&m["stored"]["packs"]);
        assert_eq!(p.len(), 1);
        ids.push(id);
        packs.push(pack_rel(&p[0]));
    }
    let (p1, p2) = (env.repo().join(&packs[0]), env.repo().join(&packs[1]));
    let (b1, b2) = (std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(b1.len(), b2.len(), "the packs should have the same layout");
    writable(&p1);
    std::fs::copy(&p2, &p1).unwrap();
    let o = run(&env, Some(PW), &["verify", &ids[0]]);
    assert_eq!(o.code, 4, "{}", o.text());
    assert!(o.text().contains(&packs[0]), "{}", o.text());
    let out = env.path("out.db");
    let o = run(&env, Some(PW), &["restore", &ids[0], "--output", s(&out)]);
    assert_eq!(o.code, 4, "{}", o.text());
    assert!(!out.exists());
    // The pack that was copied is still fine where it belongs.
    let v = json(&env, PW, &["verify", &ids[1]]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn tampered_data_key_is_an_integrity_error() {
    let f = tamper_fixture();
    let p = f.env.repo().join("keys/data-00000000");
    let len = std::fs::metadata(&p).unwrap().len() as usize;
    flip_byte(&p, len / 2);
    let o = run(&f.env, Some(PW), &["list"]);
    assert_eq!(o.code, 4, "{}", o.text());
    assert!(o.text().contains("data key 0"), "{}", o.text());
}

// ---------------------------------------------------------------------------------------
// 5. Keys
// ---------------------------------------------------------------------------------------

fn key_list(env: &Env, pw: &str) -> Value {
    json(env, pw, &["key", "list"])
}

fn key_add(env: &Env, pw: &str, new: &str, extra: &[&str]) -> String {
    let mut args = vec!["key", "add", "--json"];
    args.extend(extra);
    let o = run_vars(
        env,
        &[("LIFEBOAT_PASSWORD", pw), ("LIFEBOAT_NEW_PASSWORD", new)],
        &args,
    )
    .ok("key add");
    o.json()["added"].as_str().expect("added").to_string()
}

#[test]
fn key_add_list_remove() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    make_secret_db(&db, 800);
    let id = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let rows = dump(&db);

    let first = key_list(&env, PW)["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = key_add(&env, PW, PW2, &FAST);
    assert_ne!(first, second);
    assert!(env.repo().join("keys").join(&second).is_file());

    // Both passphrases open the repository; each sees itself in use.
    for (pw, mine, other) in [(PW, &first, &second), (PW2, &second, &first)] {
        let v = key_list(&env, pw);
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "{v}");
        let in_use: Vec<&str> = keys
            .iter()
            .filter(|k| k["in_use"] == true)
            .map(|k| k["id"].as_str().unwrap())
            .collect();
        assert_eq!(in_use, [mine.as_str()], "{v}");
        assert!(keys.iter().any(|k| k["id"] == other.as_str()));
        assert_eq!(v["data_key_generations"], 1);
        assert_eq!(json(&env, pw, &["list"]).as_array().unwrap().len(), 1);
    }
    assert_eq!(json(&env, PW, &["repo", "show"])["key_files"], 2);
    let text = run(&env, Some(PW), &["key", "list"]).ok("key list");
    assert!(
        text.stdout.contains(&format!("*{first}")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&second), "{}", text.stdout);

    // The key in use cannot be removed.
    let o = run(&env, Some(PW), &["key", "remove", &first]).code(2, "remove in use");
    assert!(o.stderr.contains("in use"), "{}", o.stderr);
    assert!(env.repo().join("keys").join(&first).is_file());
    // Unknown and ambiguous ids.
    run(&env, Some(PW), &["key", "remove", "ffffffffffffffff"]).code(3, "unknown key");
    run(&env, Some(PW), &["key", "remove", ""]).code(2, "ambiguous key");
    assert_eq!(key_list(&env, PW)["keys"].as_array().unwrap().len(), 2);

    // Remove the other one (by a prefix): its passphrase no longer opens anything.
    let v = json(&env, PW, &["key", "remove", &second[..10]]);
    assert!(v["removed"].is_string(), "{v}");
    assert!(!env.repo().join("keys").join(&second).exists());
    let o = run(&env, Some(PW2), &["list"]).code(8, "removed passphrase");
    assert!(o.stderr.contains("wrong passphrase"), "{}", o.stderr);
    assert_restores(&env, PW, &id, &rows);

    // The last key cannot be removed (it is also the one in use).
    run(&env, Some(PW), &["key", "remove", &first]).code(2, "remove last key");
    assert!(env.repo().join("keys").join(&first).is_file());
    assert_eq!(key_list(&env, PW)["keys"].as_array().unwrap().len(), 1);

    // Removing the in-use key works from another passphrase.
    let third = key_add(&env, PW, PW2, &FAST);
    json(&env, PW2, &["key", "remove", &first]);
    run(&env, Some(PW), &["list"]).code(8, "removed first passphrase");
    let v = key_list(&env, PW2);
    assert_eq!(v["keys"].as_array().unwrap().len(), 1);
    assert_eq!(v["keys"][0]["id"], third.as_str());
    assert_restores(&env, PW2, &id, &rows);
}

#[test]
fn key_add_reads_new_password_file_and_refuses_an_empty_one() {
    let env = Env::new();
    init_encrypted(&env);
    let f = env.path("new-pw");
    std::fs::write(&f, format!("{PW2}\nignored second line\n")).unwrap();
    let mut args = vec!["key", "add", "--new-password-file", s(&f)];
    args.extend(FAST);
    run(&env, Some(PW), &args).ok("key add --new-password-file");
    assert_eq!(key_list(&env, PW2)["keys"].as_array().unwrap().len(), 2);
    run(&env, Some("ignored second line"), &["list"]).code(8, "second line");

    // An empty new passphrase (file, or variable) is refused and adds nothing.
    std::fs::write(&f, "\nsomething\n").unwrap();
    run(&env, Some(PW), &args).code(2, "empty new passphrase file");
    let o = run_vars(
        &env,
        &[("LIFEBOAT_PASSWORD", PW), ("LIFEBOAT_NEW_PASSWORD", "")],
        &["key", "add"],
    );
    assert_eq!(o.code, 2, "{}", o.text());
    // No new passphrase at all, stdin not a terminal: refused with a hint.
    let o = run(&env, Some(PW), &["key", "add"]);
    assert_eq!(o.code, 8, "{}", o.text());
    assert!(o.stderr.contains("LIFEBOAT_NEW_PASSWORD"), "{}", o.stderr);
    assert_eq!(key_list(&env, PW)["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn key_passwd_replaces_the_passphrase() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    make_secret_db(&db, 500);
    let id = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let rows = dump(&db);
    let old_key = key_list(&env, PW)["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec!["key", "passwd", "--json"];
    args.extend(FAST);
    let v = run_vars(
        &env,
        &[("LIFEBOAT_PASSWORD", PW), ("LIFEBOAT_NEW_PASSWORD", PW2)],
        &args,
    )
    .ok("key passwd")
    .json();
    assert_eq!(v["removed"], old_key.as_str(), "{v}");
    let new_key = v["added"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert!(!env.repo().join("keys").join(&old_key).exists());

    let o = run(&env, Some(PW), &["list"]).code(8, "old passphrase after passwd");
    assert!(o.stderr.contains("wrong passphrase"), "{}", o.stderr);
    let v = key_list(&env, PW2);
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["keys"][0]["id"], new_key);
    assert_eq!(v["keys"][0]["in_use"], true);
    assert_restores(&env, PW2, &id, &rows);
    // New backups work with the new passphrase.
    backup(&env, PW2, &db);
}

#[test]
fn key_rotate_adds_a_generation_and_keeps_old_data_readable() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    let conn = make_secret_db(&db, 2_000);
    let b0 = backup(&env, PW, &db);
    let id0 = b0["id"].as_str().unwrap().to_string();
    let rows0 = dump(&db);
    // A second passphrase added before the rotation opens the new generation too.
    key_add(&env, PW, PW2, &FAST);

    let v = json(&env, PW, &["key", "rotate"]);
    assert_eq!(v["data_key_generation"], 1, "{v}");
    assert!(env.repo().join("keys/data-00000001").is_file());
    assert_eq!(json(&env, PW, &["repo", "show"])["data_key_generations"], 2);
    assert_eq!(key_list(&env, PW2)["data_key_generations"], 2);

    conn.execute(
        &format!("UPDATE {TABLE} SET v = 'rotated' WHERE id < 100"),
        [],
    )
    .expect("change");
    let b1 = backup(&env, PW, &db);
    let id1 = b1["id"].as_str().unwrap().to_string();
    let rows1 = dump(&db);
    assert!(
        b1["reused_blobs"].as_u64().unwrap() > 0,
        "dedup across rotation: {b1}"
    );

    // Generation in the headers: old manifest 0, new manifest 1; new pack frames, pack
    // directory and index file 1.
    let repo = env.repo();
    assert_eq!(inspect(&env, PW, &format!("backups/{id0}"), 0), (4, 0));
    assert_eq!(inspect(&env, PW, &format!("backups/{id1}"), 0), (4, 1));
    let man1 = json(&env, PW, &["show", &id1]);
    let pack1_rel = pack_rel(&strings(&man1["stored"]["packs"])[0]);
    let pack1 = std::fs::read(repo.join(&pack1_rel)).unwrap();
    assert_eq!(
        inspect(&env, PW, &pack1_rel, FRAMES),
        (1, 1),
        "first frame of the new pack"
    );
    let dir_len =
        u32::from_le_bytes(pack1[pack1.len() - 12..pack1.len() - 8].try_into().unwrap()) as usize;
    assert_eq!(
        inspect(&env, PW, &pack1_rel, pack1.len() - 12 - dir_len),
        (2, 1),
        "new pack directory"
    );
    let idx1 = format!("index/{}", strings(&man1["stored"]["index_files"])[0]);
    assert_eq!(inspect(&env, PW, &idx1, 0), (3, 1), "new index file");
    let man0 = json(&env, PW, &["show", &id0]);
    let pack0_rel = pack_rel(&strings(&man0["stored"]["packs"])[0]);
    assert_eq!(
        inspect(&env, PW, &pack0_rel, FRAMES),
        (1, 0),
        "old pack untouched"
    );

    // Both backups verify and restore, with either passphrase.
    let v = json(&env, PW, &["verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_restores(&env, PW, &id0, &rows0);
    assert_restores(&env, PW, &id1, &rows1);
    assert_restores(&env, PW2, &id1, &rows1);
    let c = json(&env, PW2, &["repo", "check", "--read-data"]);
    assert_eq!(c["ok"], true, "{c}");

    // A second rotation: generation 2.
    assert_eq!(
        json(&env, PW2, &["key", "rotate"])["data_key_generation"],
        2
    );
    let b2 = backup(&env, PW2, &db);
    let m2 = format!("backups/{}", b2["id"].as_str().unwrap());
    assert_eq!(inspect(&env, PW, &m2, 0), (4, 2));
    assert_eq!(json(&env, PW, &["verify", "--all"])["ok"], true);

    // A data key generation cannot be moved to another generation's name.
    let d1 = repo.join("keys/data-00000001");
    let d2 = repo.join("keys/data-00000002");
    writable(&d1);
    std::fs::copy(&d2, &d1).unwrap();
    let o = run(&env, Some(PW), &["list"]);
    assert_eq!(o.code, 4, "{}", o.text());
    assert!(o.text().contains("data key 1"), "{}", o.text());
}

/// Several key files exist so that losing one passphrase (or one file) does not lose the
/// data. Today a damaged key file of *another* passphrase makes every passphrase fail:
/// `keys::list` turns one unparsable key file into an error for the whole repository, and
/// `keys::unlock` stops at the first key file whose unwrap fails with anything but `Auth`
/// (e.g. out-of-range Argon2 parameters), without trying the others.
#[test]
fn damaged_key_file_of_another_passphrase_does_not_lock_out_the_others() {
    let env = Env::new();
    init_encrypted(&env);
    let db = env.path("src.db");
    make_secret_db(&db, 200);
    let id = backup(&env, PW, &db)["id"].as_str().unwrap().to_string();
    let rows = dump(&db);
    let first = key_list(&env, PW)["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = key_add(&env, PW, PW2, &FAST);

    // Out-of-range parameters in the first key file: PW2's key must still be tried.
    let path = env.repo().join("keys").join(&first);
    let original = std::fs::read(&path).unwrap();
    let mut kf: Value = serde_json::from_slice(&original).unwrap();
    kf["params"]["memory_kib"] = 1.into();
    writable(&path);
    std::fs::write(&path, serde_json::to_vec_pretty(&kf).unwrap()).unwrap();
    let o = run(&env, Some(PW2), &["list"]);
    assert_eq!(
        o.code,
        0,
        "a damaged key file of another passphrase locks PW2 out:\n{}",
        o.text()
    );
    std::fs::write(&path, &original).unwrap();

    // A truncated (unparsable) second key file: PW's own key must still open.
    let path = env.repo().join("keys").join(&second);
    let bytes = std::fs::read(&path).unwrap();
    writable(&path);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&env, Some(PW), &["list"]);
    assert_eq!(
        o.code,
        0,
        "a damaged key file of another passphrase locks PW out:\n{}",
        o.text()
    );
    assert_restores(&env, PW, &id, &rows);
}

// ---------------------------------------------------------------------------------------
// 6. Argon2id parameters
// ---------------------------------------------------------------------------------------

#[test]
fn argon2_parameters_are_recorded_and_honoured() {
    let env = Env::new();
    let args = [
        "repo",
        "init",
        "--encrypt",
        "--argon2-memory",
        "96",
        "--argon2-iterations",
        "2",
        "--argon2-parallelism",
        "1",
    ];
    run(&env, Some(PW), &args).ok("init");
    let second = key_add(
        &env,
        PW,
        PW2,
        &[
            "--argon2-memory",
            "256",
            "--argon2-iterations",
            "1",
            "--argon2-parallelism",
            "2",
        ],
    );
    let v = key_list(&env, PW);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        assert_eq!(k["kdf"], "argon2id");
        let p = &k["params"];
        let want = if k["id"] == second.as_str() {
            (256, 1, 2)
        } else {
            (96, 2, 1)
        };
        assert_eq!(
            (
                p["memory_kib"].as_u64().unwrap(),
                p["iterations"].as_u64().unwrap(),
                p["parallelism"].as_u64().unwrap()
            ),
            want,
            "{v}"
        );
    }
    let text = run(&env, Some(PW), &["key", "list"]).ok("key list");
    assert!(text.stdout.contains("96, 2, 1"), "{}", text.stdout);
    assert!(text.stdout.contains("256, 1, 2"), "{}", text.stdout);

    // The parameters in the key file are the ones used: edited, it no longer opens.
    let db = env.path("src.db");
    make_secret_db(&db, 100);
    backup(&env, PW, &db);
    let first = keys.iter().find(|k| k["id"] != second.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = env.repo().join("keys").join(&first);
    let original = std::fs::read(&path).unwrap();
    for (field, value) in [("iterations", 3), ("memory_kib", 128), ("parallelism", 2)] {
        let mut kf: Value = serde_json::from_slice(&original).unwrap();
        kf["params"][field] = value.into();
        writable(&path);
        std::fs::write(&path, serde_json::to_vec_pretty(&kf).unwrap()).unwrap();
        let o = run(&env, Some(PW), &["list"]);
        assert_eq!(o.code, 8, "edited {field}: {}", o.text());
        assert!(o.stderr.contains("wrong passphrase"), "{}", o.stderr);
        // The other key is untouched and still opens.
        run(&env, Some(PW2), &["list"]).ok("other key");
    }
    std::fs::write(&path, &original).unwrap();
    run(&env, Some(PW), &["list"]).ok("restored key file");

    // Other fields are bound too: the salt, and the id (associated data of the wrapping).
    let mut kf: Value = serde_json::from_slice(&original).unwrap();
    kf["salt"] = "AAAAAAAAAAAAAAAAAAAAAA==".into();
    std::fs::write(&path, serde_json::to_vec_pretty(&kf).unwrap()).unwrap();
    run(&env, Some(PW), &["list"]).code(8, "edited salt");
    std::fs::write(&path, &original).unwrap();
}

#[test]
fn default_argon2_parameters() {
    let env = Env::new();
    // `backup` into no repository with a passphrase configured creates an encrypted one,
    // with the default costs.
    let db = env.path("src.db");
    make_secret_db(&db, 100);
    let o = run(&env, Some(PW), &["backup", s(&db)]).ok("first backup");
    assert!(o.stderr.contains("encrypted repository"), "{}", o.stderr);
    let v = key_list(&env, PW);
    assert_eq!(
        v["keys"][0]["params"],
        serde_json::json!({"memory_kib": 65536, "iterations": 3, "parallelism": 4}),
        "{v}"
    );
    assert_eq!(json(&env, PW, &["repo", "show"])["encrypted"], true);
    // And `repo init --encrypt` without parameters.
    let r2 = env.path("r2");
    run(
        &env,
        Some(PW),
        &["--repo", s(&r2), "repo", "init", "--encrypt"],
    )
    .ok("init");
    let v = json(&env, PW, &["--repo", s(&r2), "key", "list"]);
    assert_eq!(v["keys"][0]["params"]["memory_kib"], 65536, "{v}");
    assert_eq!(v["keys"][0]["params"]["iterations"], 3, "{v}");
    // Nonsensical parameters are a usage error, and create nothing.
    let r3 = env.path("r3");
    let o = run(
        &env,
        Some(PW),
        &[
            "--repo",
            s(&r3),
            "repo",
            "init",
            "--encrypt",
            "--argon2-memory",
            "1",
        ],
    );
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(!r3.join("config").exists());
}

/// An init that fails (here: Argon2 parameters out of range) must not leave anything that
/// breaks the next one. It leaves `keys/data-00000000` behind; `keys::create` ignores that
/// `put_new` of the new data key returned false, so the next init "succeeds" with a key file
/// whose root key cannot open the stale data key: every later command fails with exit 4.
#[test]
fn init_after_a_failed_init_gives_a_working_repository() {
    let env = Env::new();
    let o = run(
        &env,
        Some(PW),
        &["repo", "init", "--encrypt", "--argon2-memory", "1"],
    );
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(!env.repo().join("config").exists());
    run(&env, Some(PW), &{
        let mut a = vec!["repo", "init", "--encrypt"];
        a.extend(FAST);
        a
    })
    .ok("init after a failed init");
    assert_eq!(json(&env, PW, &["repo", "show"])["encrypted"], true);
    let list = json(&env, PW, &["list"]);
    assert_eq!(list, serde_json::json!([]), "a new repository: {list}");
    // And it holds a backup that restores.
    let db = env.path("src.db");
    make_secret_db(&db, 300);
    let id = json(&env, PW, &["backup", s(&db)])["id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = env.path("restored.db");
    run(&env, Some(PW), &["restore", &id, "--output", s(&out)]).ok("restore");
    assert_eq!(dump(&out), dump(&db));
}

/// The same with `backup` creating the repository: a backup reported as successful must be
/// restorable. Today it is sealed with a data key that was never stored: lost for good.
#[test]
fn first_backup_after_a_failed_init_is_restorable() {
    let env = Env::new();
    run(
        &env,
        Some(PW),
        &["repo", "init", "--encrypt", "--argon2-memory", "1"],
    )
    .code(2, "bad params");
    let db = env.path("src.db");
    make_secret_db(&db, 300);
    // The backup creates the encrypted repository the failed init did not.
    let o = run(&env, Some(PW), &["backup", s(&db), "--json"]).ok("first backup");
    let id = o.json()["id"].as_str().expect("id").to_string();
    assert_eq!(json(&env, PW, &["repo", "show"])["encrypted"], true);
    let o = run(&env, Some(PW), &["verify", &id]);
    assert_eq!(
        o.code,
        0,
        "backup {id} exited 0 but cannot be read back:\n{}",
        o.text()
    );
    let out = env.path("restored.db");
    run(&env, Some(PW), &["restore", &id, "--output", s(&out)]).ok("restore");
    assert_eq!(sha256_file(&out), sha256_file(&db));
    assert_eq!(dump(&out), dump(&db));
}

/// Concurrent first backups with a passphrase configured all create the encrypted
/// repository at once (the Argon2id evaluation between writing `keys/data-00000000` and
/// `config` makes the window ~0.2 s wide). Plain repositories handle this (see
/// tests/concurrency.rs); here every backup that reports success must be readable, and the
/// repository must open.
#[test]
fn concurrent_first_backups_into_a_new_encrypted_repository() {
    // The race is timing-dependent: a few rounds make hitting it near-certain.
    for round in 0..3 {
        let env = Env::new();
        let dbs: Vec<PathBuf> = (0..3)
            .map(|i| {
                let db = env.path(&format!("db{i}.db"));
                make_random_db(&db, "wal", 200, 300);
                db
            })
            .collect();
        let children: Vec<_> = dbs
            .iter()
            .map(|db| {
                env.std_cmd()
                    .env("LIFEBOAT_PASSWORD", PW)
                    .args(["backup", s(db), "--json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        let mut ok_ids = Vec::new();
        let mut report = String::new();
        for c in children {
            let o = c.wait_with_output().expect("wait");
            report.push_str(&format!(
                "exit {:?}: {}{}\n",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
            if o.status.success() {
                let v: Value = serde_json::from_slice(&o.stdout).expect("json");
                ok_ids.push(v["id"].as_str().unwrap().to_string());
            }
        }
        let o = run(&env, Some(PW), &["list", "--json"]);
        assert_eq!(
            o.code,
            0,
            "round {round}: the new repository does not open:\n{}\nbackups:\n{report}",
            o.text()
        );
        for id in &ok_ids {
            let o = run(&env, Some(PW), &["verify", id]);
            assert_eq!(o.code, 0, "backup {id} reported success:\n{}", o.text());
        }
        assert_eq!(
            ok_ids.len(),
            3,
            "every first backup should succeed:\n{report}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 7. Secrets never leak
// ---------------------------------------------------------------------------------------

fn with<'x>(a: &[&'x str], extra: &[&'x str]) -> Vec<&'x str> {
    [a, extra].concat()
}

#[test]
fn secrets_never_appear_in_any_output() {
    const CMD_SECRET: &str = "Cmd-Secret-6612-marmot";
    let env = Env::new();
    let db = env.path("src.db");
    let conn = make_secret_db(&db, 1_000);
    let out1 = env.path("restored.db");
    let pwfile = env.path("pw");
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    let mut outputs: Vec<(String, Out)> = Vec::new();
    let pw_vars: &[(&str, &str)] = &[("LIFEBOAT_PASSWORD", PW), ("LIFEBOAT_NEW_PASSWORD", PW2)];

    let mut session = |vars: &[(&str, &str)], args: &[&str], expect: i32| {
        let o = run_vars(&env, vars, args);
        assert_eq!(o.code, expect, "{args:?}:\n{}", o.text());
        outputs.push((format!("{args:?}"), o));
    };
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST);
    session(pw_vars, &init, 0);
    for verbosity in [None, Some("-v"), Some("-vv")] {
        for json_flag in [false, true] {
            let mut extra: Vec<&str> = verbosity.into_iter().collect();
            if json_flag {
                extra.push("--json");
            }
            conn.execute(&format!("UPDATE {TABLE} SET v = v || 'x' WHERE id = 3"), [])
                .unwrap();
            session(pw_vars, &with(&["backup", s(&db)], &extra), 0);
            session(pw_vars, &with(&["list"], &extra), 0);
            session(pw_vars, &with(&["show", "latest"], &extra), 0);
            session(pw_vars, &with(&["verify"], &extra), 0);
            session(pw_vars, &with(&["repo", "show"], &extra), 0);
            session(pw_vars, &with(&["repo", "stats"], &extra), 0);
            session(pw_vars, &with(&["repo", "check", "--read-data"], &extra), 0);
            session(pw_vars, &with(&["key", "list"], &extra), 0);
            let _ = std::fs::remove_file(&out1);
            session(
                pw_vars,
                &with(&["restore", "latest", "--output", s(&out1)], &extra),
                0,
            );
            session(&[("LIFEBOAT_PASSWORD", WRONG)], &with(&["list"], &extra), 8);
            session(&[], &with(&["list"], &extra), 8);
        }
    }
    let mut add = vec!["key", "add", "-vv"];
    add.extend(FAST);
    session(pw_vars, &add, 0);
    let mut add_json = add.clone();
    add_json.push("--json");
    session(pw_vars, &add_json, 0);
    session(pw_vars, &["key", "rotate", "-vv"], 0);
    session(pw_vars, &["key", "rotate", "--json"], 0);
    session(&[("LIFEBOAT_PASSWORD", PW2)], &["key", "list", "-vv"], 0);
    let mut passwd = vec!["key", "passwd", "-vv"];
    passwd.extend(FAST);
    session(
        &[
            ("LIFEBOAT_PASSWORD", PW2),
            ("LIFEBOAT_NEW_PASSWORD", CMD_SECRET),
        ],
        &passwd,
        0,
    );
    // Every log of every crate.
    session(
        &[
            ("LIFEBOAT_PASSWORD", PW),
            ("LIFEBOAT_LOG", "trace"),
            ("RUST_LOG", "trace"),
        ],
        &["backup", s(&db)],
        0,
    );
    session(
        &[("LIFEBOAT_PASSWORD", WRONG), ("LIFEBOAT_LOG", "trace")],
        &["list"],
        8,
    );
    // Passphrase sources: a file, and a command whose text holds a secret.
    session(&[], &["--password-file", s(&pwfile), "list", "-vv"], 0);
    let cmd = format!("echo {PW} # {CMD_SECRET}");
    session(&[], &["--password-command", &cmd, "list", "-vv"], 0);
    session(
        &[("LIFEBOAT_PASSWORD_COMMAND", &cmd)],
        &["verify", "-vv"],
        0,
    );
    let failing = format!("echo {CMD_SECRET} >/dev/null; exit 3");
    session(&[], &["--password-command", &failing, "list", "-vv"], 8);
    session(&[], &["--password-command", &failing, "list", "--json"], 8);
    // A wrong passphrase from a command.
    let wrong_cmd = format!("echo {WRONG}");
    session(&[], &["--password-command", &wrong_cmd, "list", "-vv"], 8);
    // Help and usage errors, with every secret in the environment.
    let all_vars: &[(&str, &str)] = &[
        ("LIFEBOAT_PASSWORD", PW),
        ("LIFEBOAT_NEW_PASSWORD", PW2),
        ("LIFEBOAT_PASSWORD_COMMAND", &cmd),
        (
            "LIFEBOAT_PASSWORD_FILE",
            "/nonexistent/Cmd-Secret-6612-marmot",
        ),
        (
            "LIFEBOAT_NEW_PASSWORD_FILE",
            "/nonexistent/Cmd-Secret-6612-marmot",
        ),
    ];
    session(all_vars, &["--help"], 0);
    session(all_vars, &["key", "add", "--help"], 0);
    session(all_vars, &["key", "passwd", "--help"], 0);
    session(all_vars, &["repo", "init", "--help"], 0);
    session(all_vars, &["backup", "--help"], 0);
    session(all_vars, &["list", "--no-such-flag"], 2);
    session(all_vars, &["list", "--no-such-flag", "--json"], 2);

    assert!(outputs.len() > 80, "{}", outputs.len());
    for (args, o) in &outputs {
        for secret in [PW, PW2, WRONG, CMD_SECRET] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{args} printed a secret ({secret}):\n{}",
                o.text()
            );
        }
    }
    // -v really logs something, so the check above covers the logs.
    assert!(
        outputs
            .iter()
            .any(|(a, o)| a.contains("-v") && o.stderr.contains("INFO")),
        "-v should log"
    );

    // Key files and data keys are private, as are the repository's folders.
    let repo = env.repo();
    let mut key_objects = 0;
    for e in std::fs::read_dir(repo.join("keys")).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", e.path().display());
        key_objects += 1;
    }
    assert!(
        key_objects >= 5,
        "2 key files and 3 data keys: {key_objects}"
    );
    for d in [repo.clone(), repo.join("keys")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", d.display());
    }
    // No secret in any stored object either.
    for (rel, bytes) in tree(&repo) {
        for secret in [PW, PW2, CMD_SECRET] {
            assert!(!contains(&bytes, secret.as_bytes()), "{rel} holds a secret");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 8. Passphrase sources
// ---------------------------------------------------------------------------------------

#[test]
fn password_file_and_command_use_the_first_line() {
    let env = Env::new();
    let pwfile = env.path("pw");
    std::fs::write(&pwfile, format!("{PW}\nsecond line\n")).unwrap();
    // init from a file
    let mut args = vec!["--password-file", s(&pwfile), "repo", "init", "--encrypt"];
    args.extend(FAST);
    run(&env, None, &args).ok("init --password-file");
    // the same passphrase via the variable
    run(&env, Some(PW), &["list"]).ok("LIFEBOAT_PASSWORD");
    // via a command printing two lines
    let cmd = format!("printf '%s\\n%s\\n' '{PW}' 'other line'");
    run(&env, None, &["--password-command", &cmd, "list"]).ok("--password-command");
    run_vars(&env, &[("LIFEBOAT_PASSWORD_COMMAND", &cmd)], &["list"]).ok("command from env");
    run_vars(&env, &[("LIFEBOAT_PASSWORD_FILE", s(&pwfile))], &["list"]).ok("file from env");
    // A file without a trailing newline, and CRLF line ends.
    std::fs::write(&pwfile, PW).unwrap();
    run(&env, None, &["--password-file", s(&pwfile), "list"]).ok("no newline");
    std::fs::write(&pwfile, format!("{PW}\r\nx\r\n")).unwrap();
    run(&env, None, &["--password-file", s(&pwfile), "list"]).ok("CRLF");
    // The whole line counts: the second line or a prefix is wrong.
    std::fs::write(&pwfile, format!("second line\n{PW}\n")).unwrap();
    run(&env, None, &["--password-file", s(&pwfile), "list"]).code(8, "second line");
    run(&env, Some(&PW[..PW.len() - 1]), &["list"]).code(8, "prefix");
    run(&env, Some(&format!("{PW} ")), &["list"]).code(8, "trailing space");
    // An explicit file wins over the variable.
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    run(&env, Some(WRONG), &["--password-file", s(&pwfile), "list"]).ok("file over variable");
    // A missing file is an error naming it, not a prompt.
    let missing = env.path("no-such-file");
    let o = run(&env, None, &["--password-file", s(&missing), "list"]);
    assert_eq!(o.code, 3, "{}", o.text());
    assert!(o.stderr.contains("no-such-file"), "{}", o.stderr);
    // A failing command.
    let o = run(&env, None, &["--password-command", "exit 3", "list"]);
    assert_eq!(o.code, 8, "{}", o.text());
    assert!(o.stderr.contains("password command failed"), "{}", o.stderr);
}

#[test]
fn empty_passphrase_is_refused() {
    let env = Env::new();
    let pwfile = env.path("pw");
    std::fs::write(&pwfile, "\nsecond line\n").unwrap();
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST);
    // At init: from the variable, a file, a command. Nothing is created.
    let o = run(&env, Some(""), &init);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("empty"), "{}", o.stderr);
    let mut a = vec!["--password-file", s(&pwfile)];
    a.extend(&init);
    run(&env, None, &a).code(2, "empty file");
    std::fs::write(&pwfile, "").unwrap();
    run(&env, None, &a).code(2, "zero-byte file");
    let mut a = vec!["--password-command", "echo"];
    a.extend(&init);
    run(&env, None, &a).code(2, "empty command output");
    let mut a = vec!["--password-command", "true"];
    a.extend(&init);
    run(&env, None, &a).code(2, "no command output");
    assert!(
        !env.repo().join("config").exists(),
        "a repository was created"
    );

    // When opening.
    init_encrypted(&env);
    run(&env, Some(""), &["list"]).code(2, "empty when opening");
    let db = env.path("src.db");
    make_secret_db(&db, 10);
    let before = tree(&env.repo());
    run(&env, Some(""), &["backup", s(&db)]).code(2, "empty at backup");
    assert_eq!(tree(&env.repo()), before);
    // And as a new passphrase.
    let o = run_vars(
        &env,
        &[("LIFEBOAT_PASSWORD", PW), ("LIFEBOAT_NEW_PASSWORD", "")],
        &["key", "passwd"],
    );
    assert_eq!(o.code, 2, "{}", o.text());
    run(&env, Some(PW), &["list"]).ok("passphrase unchanged");
}
