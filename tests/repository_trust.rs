//! Repository trust (issue 10): someone who can read and write the storage, but holds no key,
//! plays every attack of the issue against a passphrase-encrypted and a write-only
//! repository, on local disk and on the S3 server; a compromised write-only backup host (who
//! holds a passphrase key) plays the prune attack. Each attack must be refused or detected
//! with a clear error, leave the repository and the source database untouched, and leave
//! every genuine backup restorable, byte for byte, even after `forget --prune`.

mod common;
use common::attacker::{edit_config, Storage};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const HOST_PW: &str = "backup-host-passphrase-4471";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Encrypted with a passphrase that reads and writes.
    Passphrase,
    /// Write-only: the host's passphrase writes, the owner's identity reads.
    WriteOnly,
}

/// A repository with two genuine backups, its source database, the host (passphrase) and
/// the owner (passphrase, or the identity on another machine).
struct Case {
    env: Env,
    store: Storage,
    mode: Mode,
    identity: PathBuf,
    db: PathBuf,
    ids: Vec<String>,
    dumps: Vec<Vec<String>>,
    /// The host's passphrase (a full key rotation gives a new one).
    host_pw: String,
}

impl Case {
    fn new(env: Env, store: Storage, mode: Mode) -> Case {
        let identity = env.path("owner.key");
        Case::with_identity(env, store, mode, identity, true)
    }

    /// `identity`: the owner's identity file (generated here when `generate`).
    fn with_identity(
        env: Env,
        store: Storage,
        mode: Mode,
        identity: PathBuf,
        generate: bool,
    ) -> Case {
        let db = env.path("app.db");
        drop(make_db(&db, 1_500));
        let mut case = Case {
            env,
            store,
            mode,
            identity,
            db,
            ids: Vec::new(),
            dumps: Vec::new(),
            host_pw: HOST_PW.to_string(),
        };
        let mut init = vec!["repo", "init", "--encrypt"];
        let recipient;
        if mode == Mode::WriteOnly {
            if generate {
                case.run(&[], &["key", "generate", "--output", s(&case.identity)])
                    .ok("key generate");
            }
            recipient = recipient_of(&case.identity);
            init.extend(["--recipient", recipient.as_str()]);
        }
        init.extend(FAST_KDF);
        case.host(&init).ok("repo init");
        case.backup();
        let c = rusqlite::Connection::open(&case.db).unwrap();
        c.execute("UPDATE t SET v = 'second' WHERE id % 3 = 0", [])
            .unwrap();
        drop(c);
        case.backup();
        // The owner has used the repository before (its machine remembers it).
        case.owner(&["list"]).ok("owner list");
        case
    }

    fn run_in(&self, home: &str, vars: &[(&str, &str)], args: &[&str]) -> Out {
        let mut c = self.env.std_cmd();
        c.env("HOME", self.env.path(home))
            .envs(self.store.env())
            .args(["--repo", &self.store.url()]);
        for (k, v) in vars {
            c.env(k, v);
        }
        Out::of(c.args(args).output().expect("run lifeboat"))
    }

    /// `lifeboat` with passphrase `pw` on another repository location `url`, as `home`.
    fn elsewhere(&self, home: &str, pw: &str, url: &str, args: &[&str]) -> Out {
        Out::of(
            self.env
                .std_cmd()
                .env("HOME", self.env.path(home))
                .env("LIFEBOAT_PASSWORD", pw)
                .args(["--repo", url])
                .args(args)
                .output()
                .expect("run lifeboat"),
        )
    }

    fn run(&self, vars: &[(&str, &str)], args: &[&str]) -> Out {
        self.run_in("home", vars, args)
    }

    /// The backup host (its passphrase; in write-only mode it cannot read).
    fn host(&self, args: &[&str]) -> Out {
        self.run(&[("LIFEBOAT_PASSWORD", &self.host_pw)], args)
    }

    /// `key rotate --full --yes` by the owner, with a new passphrase that the host uses
    /// from then on.
    fn rotate_full(&mut self, json: bool) -> Out {
        let new_pw = format!("rotated-passphrase-{}", unique());
        let mut args = vec!["key", "rotate", "--full", "--yes"];
        if json {
            args.push("--json");
        }
        let o = match self.mode {
            Mode::Passphrase => self.run(
                &[
                    ("LIFEBOAT_PASSWORD", &self.host_pw),
                    ("LIFEBOAT_NEW_PASSWORD", &new_pw),
                ],
                &args,
            ),
            Mode::WriteOnly => {
                let mut a = vec!["--identity", s(&self.identity)];
                a.extend(args);
                self.run_in("home-owner", &[("LIFEBOAT_NEW_PASSWORD", &new_pw)], &a)
            }
        }
        .ok("key rotate --full");
        self.host_pw = new_pw;
        o
    }

    /// The owner: the same passphrase, or the identity on a machine of its own.
    fn owner(&self, args: &[&str]) -> Out {
        match self.mode {
            Mode::Passphrase => self.host(args),
            Mode::WriteOnly => {
                let mut a = vec!["--identity", s(&self.identity)];
                a.extend(args);
                self.run_in("home-owner", &[], &a)
            }
        }
    }

    fn owner_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        self.owner(&a).ok(&format!("owner {args:?}")).json()
    }

    /// A genuine backup by the host.
    fn backup(&mut self) -> String {
        let o = self.host(&["backup", s(&self.db), "--json"]).ok("backup");
        let id = o.json()["id"].as_str().expect("id").to_string();
        self.ids.push(id.clone());
        self.dumps.push(dump(&self.db));
        id
    }

    /// Every genuine backup restores to exactly the rows it had.
    fn assert_genuine_restore(&self, also: &[&str]) {
        for (n, id) in self.ids.iter().enumerate() {
            let out = self.env.path(&format!("check-{id}-{}.db", unique()));
            let mut args = also.to_vec();
            args.extend(["restore", id.as_str(), "--output", s(&out)]);
            self.owner(&args)
                .ok(&format!("restore of genuine backup {id}"));
            assert_eq!(dump(&out), self.dumps[n], "backup {id} restores its rows");
        }
    }

    fn source_sha(&self) -> String {
        sha256_file(&self.db)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn recipient_of(identity: &Path) -> String {
    let text = std::fs::read_to_string(identity).expect("identity");
    let start = text.find("lifeboat-recipient-").expect("public key");
    text[start..start + "lifeboat-recipient-".len() + 64].to_string()
}

fn local(env: &Env) -> Storage {
    Storage::local(env, "repo")
}

fn s3(_: &Env) -> Storage {
    Storage::s3("victim/repo")
}

/// Run `attack` on a repository of one kind on one kind of storage.
fn in_mode(storage: fn(&Env) -> Storage, mode: Mode, attack: fn(&mut Case)) {
    let env = Env::new();
    let store = storage(&env);
    attack(&mut Case::new(env, store, mode));
}

/// Tests `NAME::local` and `NAME::s3` running `attack` on local disk and on the S3 server:
/// in both modes, or in the one given.
macro_rules! on_both_stores {
    ($name:ident, $attack:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::both_modes(super::local, super::$attack);
            }
            #[test]
            fn s3() {
                super::both_modes(super::s3, super::$attack);
            }
        }
    };
    ($name:ident, $attack:ident, $mode:expr) => {
        mod $name {
            use super::Mode;
            #[test]
            fn local() {
                super::in_mode(super::local, $mode, super::$attack);
            }
            #[test]
            fn s3() {
                super::in_mode(super::s3, $mode, super::$attack);
            }
        }
    };
}

/// Run `attack` on both kinds of repository on one kind of storage.
fn both_modes(storage: fn(&Env) -> Storage, attack: fn(&mut Case)) {
    for mode in [Mode::Passphrase, Mode::WriteOnly] {
        in_mode(storage, mode, attack);
    }
}

// ---------------------------------------------------------------------------------------
// 1. A planted recipient does not redirect future backups.
// ---------------------------------------------------------------------------------------

fn planted_recipient(case: &mut Case) {
    let attacker_key = case.env.path("attacker.key");
    case.run(&[], &["key", "generate", "--output", s(&attacker_key)])
        .ok("attacker key");
    let attacker = recipient_of(&attacker_key);
    let junk = json!({"public": attacker, "sealed_root": "AAAA"});
    let junk = serde_json::to_vec(&junk).unwrap();
    case.store.put("keys/recipient", &junk); // where format 1 looked
    case.store.put("keys/recipient-7", &junk);
    if case.mode == Mode::Passphrase {
        case.store.put("keys/recipient-0", &junk);
    }
    let id = case.backup();
    // The attacker's identity reads nothing; the owner reads the new backup.
    let o = case.run(&[], &["--identity", s(&attacker_key), "list"]);
    assert!(
        [2, 8].contains(&o.code) && !o.stdout.contains(&id),
        "the attacker's identity must not read:\n{}",
        o.text()
    );
    let info = case.owner_json(&["repo", "inspect", &format!("backups/{id}")]);
    assert_eq!(
        info["sealed_to_recipient"],
        case.mode == Mode::WriteOnly,
        "{info}"
    );
    case.assert_genuine_restore(&[]);

    // A config naming the attacker's recipient is not authentic: refused, nothing written.
    edit_config(&case.store, |v| v["keys"]["recipient"] = json!(attacker));
    let before = case.store.snapshot();
    let sha = case.source_sha();
    case.host(&["backup", s(&case.db)]).fails(
        9,
        "backup into a config with a planted recipient",
        "not authenticated",
    );
    assert_eq!(case.store.snapshot(), before, "the repository is untouched");
    assert_eq!(case.source_sha(), sha, "the source is untouched");
}

on_both_stores!(
    planted_recipient_does_not_redirect_backups,
    planted_recipient
);

// ---------------------------------------------------------------------------------------
// 2. Encryption cannot be switched off, and a replaced repository is not accepted.
// ---------------------------------------------------------------------------------------

fn encryption_switched_off(case: &mut Case) {
    let before_config = case.store.get("config").unwrap();
    edit_config(&case.store, |v| {
        v["encryption"] = json!("none");
        v["hash"] = json!("blake3");
        let o = v.as_object_mut().unwrap();
        o.remove("keys");
        o.remove("mac");
    });
    let before = case.store.snapshot();
    let sha = case.source_sha();
    // With a passphrase or identity given, an unencrypted repository is refused.
    case.host(&["backup", s(&case.db)]).fails(
        9,
        "backup with a passphrase into a repository whose config says none",
        "not encrypted, but a passphrase or identity was given",
    );
    case.owner(&["list"])
        .fails(9, "owner list", "not encrypted");
    // Without one, this machine remembers that it was encrypted.
    case.run(&[], &["backup", s(&case.db)]).fails(
        9,
        "backup without a passphrase",
        "encryption was turned off",
    );
    assert_eq!(case.store.snapshot(), before, "nothing written");
    assert_eq!(case.source_sha(), sha);
    case.store.put("config", &before_config);
    case.assert_genuine_restore(&[]);
}

on_both_stores!(encryption_cannot_be_switched_off, encryption_switched_off);

fn replaced_repository(case: &mut Case) {
    // The attacker makes a repository of their own, with their own data, and puts it in
    // place of the victim's.
    let evil_db = case.env.path("evil.db");
    let c = make_db(&evil_db, 10);
    c.execute("UPDATE t SET v = 'attacker was here'", [])
        .unwrap();
    drop(c);
    let evil = Storage::local(&case.env, "evil-repo");
    let evil_run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = case.env.std_cmd();
        c.env("HOME", case.env.path("home-attacker"))
            .args(["--repo", &evil.url()]);
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    match case.mode {
        // A plain one (the victim's passphrase opens no encrypted one of the attacker's).
        Mode::Passphrase => evil_run(&[], &["repo", "init"]),
        // Sealed to the victim's recipient, which is public: the identity opens it.
        Mode::WriteOnly => {
            let recipient = recipient_of(&case.identity);
            let mut init = vec!["repo", "init", "--recipient", recipient.as_str()];
            init.extend(FAST_KDF);
            evil_run(&[("LIFEBOAT_PASSWORD", "attacker")], &init);
        }
    }
    let evil_pw: &[(&str, &str)] = match case.mode {
        Mode::Passphrase => &[],
        Mode::WriteOnly => &[("LIFEBOAT_PASSWORD", "attacker")],
    };
    evil_run(evil_pw, &["backup", s(&evil_db)]);
    case.store.replace_with(&evil);
    let out = case.env.path("restored-evil.db");
    let o = case.owner(&["restore", "latest", "--output", s(&out)]);
    assert_eq!(
        o.code,
        9,
        "restore from a replaced repository:\n{}",
        o.text()
    );
    assert!(
        o.text().contains("not encrypted") || o.text().contains("repository id changed"),
        "{}",
        o.text()
    );
    assert!(!o.text().contains("every page verified"));
    assert!(!out.exists(), "nothing restored");
    if case.mode == Mode::WriteOnly {
        // A machine that never saw the repository cannot tell (documented): it is told
        // this is a first contact, with the fingerprint to compare.
        let o = case.run_in(
            "home-fresh",
            &[],
            &["--identity", s(&case.identity), "repo", "show"],
        );
        assert!(o.text().contains("first use of repository"), "{}", o.text());
    }
}

on_both_stores!(replaced_repository_is_refused, replaced_repository);

// ---------------------------------------------------------------------------------------
// 3. History cannot be forged in a write-only repository, and forget --prune keeps the
//    genuine backups.
// ---------------------------------------------------------------------------------------

fn forged_history(case: &mut Case, forged: &[String]) {
    let before = case.store.snapshot();
    let o = case
        .owner(&["list"])
        .fails(4, "list with a forged backup", "failed authentication");
    assert!(
        forged.iter().any(|f| o.text().contains(f.as_str())),
        "names a forged manifest:\n{}",
        o.text()
    );
    let out = case.env.path("latest.db");
    case.owner(&["restore", "latest", "--output", s(&out)])
        .fails(4, "restore latest", "failed authentication");
    assert!(!out.exists());
    case.owner(&["forget", "--keep-last", "1", "--prune"])
        .fails(4, "forget with a forged backup", "failed authentication");
    assert_eq!(case.store.snapshot(), before, "forget changed nothing");
    case.assert_genuine_restore(&[]);
    // Once the forged manifests are removed (as the error says), retention works.
    for f in forged {
        case.store.delete(f);
    }
    let v = case.owner_json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(v["forget"]["removed"].as_array().unwrap().len(), 1, "{v}");
    let newest = case.ids.len() - 1;
    case.ids.drain(..newest);
    case.dumps.drain(..newest);
    case.assert_genuine_restore(&[]);
}

fn forged_with_own_keys(case: &mut Case) {
    // The attacker's own write-only repository, sealed to the victim's public recipient,
    // with a "newer" backup of their database; its objects are copied into the victim's.
    let recipient = recipient_of(&case.identity);
    let evil = Storage::local(&case.env, "evil-repo");
    let evil_db = case.env.path("evil.db");
    drop(make_db(&evil_db, 10));
    let run = |args: &[&str]| {
        let o = case
            .env
            .std_cmd()
            .env("HOME", case.env.path("home-attacker"))
            .env("LIFEBOAT_PASSWORD", "attacker")
            .args(["--repo", &evil.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let mut init = vec!["repo", "init", "--recipient", recipient.as_str()];
    init.extend(FAST_KDF);
    run(&init);
    let o = run(&[
        "backup",
        s(&evil_db),
        "--time",
        "2099-01-01T00:00:00Z",
        "--json",
    ]);
    let id: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = id["id"].as_str().unwrap().to_string();
    for (name, data) in evil.snapshot() {
        if name.starts_with("data/") || name.starts_with("index/") || name.starts_with("backups/") {
            case.store.put(&name, &data);
        }
    }
    forged_history(case, &[format!("backups/{id}")]);
}

on_both_stores!(
    forged_history_in_write_only_repositories,
    forged_with_own_keys,
    Mode::WriteOnly
);

#[test]
fn format_1_envelopes_cannot_forge_manifests() {
    // The format-1 envelope mixed in no secret: a manifest sealed that way to the
    // repository's recipient is what anyone could write. The manifests of the format-1
    // fixture, sealed to the fixture's identity, are copied into a format-2 repository
    // with the same recipient.
    let env = Env::new();
    let store = local(&env);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let identity = env.path("owner.key");
    std::fs::copy(fixtures.join("identity.key"), &identity).unwrap();
    let mut case = Case::with_identity(env, store, Mode::WriteOnly, identity, false);
    let mut forged = Vec::new();
    for e in std::fs::read_dir(fixtures.join("write-only/backups")).unwrap() {
        let e = e.unwrap();
        let name = format!("backups/{}", e.file_name().to_string_lossy());
        case.store.put(&name, &std::fs::read(e.path()).unwrap());
        forged.push(name);
    }
    forged_history(&mut case, &forged);
}

// ---------------------------------------------------------------------------------------
// 4. A compromised write-only host cannot make prune delete what backups need.
// ---------------------------------------------------------------------------------------

/// The repository (a local copy of it) as the backup host opens it with the library.
fn host_library_repo(case: &Case) -> lifeboat::repo::Repository {
    let work = case.env.path(&format!("host-copy-{}", unique()));
    case.store.download(&work);
    let mut ask = || Ok(lifeboat::secret::Passphrase::new(case.host_pw.clone()));
    lifeboat::repo::Repository::open(
        Box::new(lifeboat::storage::LocalStorage::new(&work)),
        lifeboat::repo::Unlock::Passphrase {
            ask: &mut ask,
            given: true,
            preferred_key: None,
        },
    )
    .expect("the host opens its repository")
}

/// As the backup host, with its passphrase key and the library: an index file naming every
/// blob of every genuine pack at a junk copy, listed before the genuine index files.
fn plant_junk_copies(case: &Case) -> Vec<String> {
    use lifeboat::repo::compress::Codec;
    use lifeboat::repo::crypto::ObjectKind;
    use lifeboat::repo::index::{encode_index_file, index_object_name, IndexedPack};
    use lifeboat::repo::pack::{pack_object_name, PackWriter};

    let repo = host_library_repo(case);
    assert!(repo.is_write_only());
    let genuine: Vec<(String, lifeboat::id::Hash)> =
        lifeboat::repo::index::list_index_files(repo.storage()).unwrap();
    let first = genuine.iter().map(|(n, _)| n.clone()).min().unwrap();
    let mut packs: Vec<IndexedPack> = Vec::new();
    for (name, id) in &genuine {
        packs.extend(repo.read_index_file(name, id).unwrap());
    }
    let staging = case.env.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for attempt in 0..500 {
        let mut junk_packs = Vec::new();
        let mut objects = Vec::new();
        for p in &packs {
            let mut w = PackWriter::create(&staging).unwrap();
            for f in &p.frames {
                let raw = vec![(attempt % 251) as u8; f.raw_len as usize];
                let sealed = repo.seal(ObjectKind::Frame, b"", raw).unwrap();
                w.add_frame(&sealed, f.raw_len, Codec::None, f.blobs.clone())
                    .unwrap();
            }
            let done = w
                .finish(|d| repo.seal(ObjectKind::PackDirectory, b"", d))
                .unwrap();
            objects.push((
                pack_object_name(&done.id),
                std::fs::read(&done.staged).unwrap(),
            ));
            junk_packs.push(IndexedPack {
                id: done.id,
                size: done.size,
                frames: done.frames,
            });
        }
        let index = repo
            .seal(
                ObjectKind::Index,
                b"",
                encode_index_file(&junk_packs).unwrap(),
            )
            .unwrap();
        let name = index_object_name(&lifeboat::id::Hash::of(&index));
        if name < first {
            let names = objects.iter().map(|(n, _)| n.clone()).collect();
            for (n, data) in objects {
                case.store.put(&n, &data);
            }
            case.store.put(&name, &index);
            return names;
        }
    }
    panic!("no junk index file sorted first in 500 tries");
}

fn planted_index(case: &mut Case) {
    let junk = plant_junk_copies(case);
    assert!(!junk.is_empty());
    // Restores read past the junk copies (another copy is intact).
    case.assert_genuine_restore(&[]);
    // Retention keeping every backup, then a prune that repacks everything it can.
    let v = case.owner_json(&["forget", "--keep-last", "10", "--prune"]);
    assert_eq!(v["forget"]["removed"], json!([]), "{v}");
    let v = case.owner_json(&["prune", "--max-unused", "0%"]);
    assert!(v["deleted_packs"].is_number(), "{v}");
    case.assert_genuine_restore(&[]);
    // A second prune (plans swept) deletes nothing genuine either.
    case.owner_json(&["prune", "--max-unused", "0%"]);
    case.assert_genuine_restore(&[]);
    // And check names the junk copies that remain (prune may have deleted them, after
    // checking the genuine copies).
    let remaining: Vec<&String> = junk
        .iter()
        .filter(|n| case.store.get(n).is_some())
        .collect();
    let o = case.owner(&["repo", "check", "--read-data"]);
    match remaining.first() {
        Some(n) => {
            assert_eq!(o.code, 4, "check finds the junk copies:\n{}", o.text());
            assert!(o.text().contains(n.as_str()), "names {n}:\n{}", o.text());
        }
        None => assert_eq!(o.code, 0, "{}", o.text()),
    }
}

on_both_stores!(
    planted_index_cannot_make_prune_delete_needed_data,
    planted_index,
    Mode::WriteOnly
);

// ---------------------------------------------------------------------------------------
// 5. No silent rollback or downgrade.
// ---------------------------------------------------------------------------------------

fn rollback(case: &mut Case) {
    // A second data key generation, then its object deleted: the config lists it.
    case.host(&["key", "rotate"]).ok("key rotate");
    let config_gen2 = case.store.get("config").unwrap();
    case.backup();
    let key1 = case.store.get("keys/data-00000001").unwrap();
    case.store.delete("keys/data-00000001");
    let before = case.store.snapshot();
    case.host(&["backup", s(&case.db)]).fails(
        4,
        "backup without the newest data key",
        "keys/data-00000001 is missing",
    );
    assert_eq!(case.store.snapshot(), before);
    case.store.put("keys/data-00000001", &key1);

    // An older (authentic) config put back: fewer generations than this machine saw.
    case.host(&["key", "rotate"]).ok("second rotation");
    case.store.put("config", &config_gen2);
    let before = case.store.snapshot();
    case.host(&["backup", s(&case.db)]).fails(
        9,
        "backup after the config was rolled back",
        "data key generations went from 3 to 2",
    );
    assert_eq!(case.store.snapshot(), before);

    // The newest backup deleted: what `latest` means would silently change.
    let o = case.host(&["backup", s(&case.db), "--json", "--accept-change"]);
    let o = o.ok("backup accepting the rollback");
    assert!(
        o.stderr.contains("accepted: data key generations"),
        "{}",
        o.stderr
    );
    let id = o.json()["id"].as_str().unwrap().to_string();
    case.ids.push(id.clone());
    case.dumps.push(dump(&case.db));
    case.owner(&["list"]).ok("owner list");
    case.store.delete(&format!("backups/{id}"));
    case.owner(&["restore", "latest", "--output", s(&case.env.path("x.db"))])
        .fails(
            9,
            "restore latest after the newest backup vanished",
            &format!("backup {id}"),
        );
    assert!(!case.env.path("x.db").exists());
    case.ids.pop();
    case.dumps.pop();
    // Accepted deliberately, with a notice; `latest` is then the one before.
    let o = case
        .owner(&["--accept-change", "list"])
        .ok("list accepting the change");
    assert!(
        o.stderr.contains(&format!("accepted: backup {id}")),
        "{}",
        o.stderr
    );
    assert!(o.stdout.contains(case.ids.last().unwrap().as_str()));
    case.assert_genuine_restore(&[]);
}

on_both_stores!(no_silent_rollback, rollback);

// ---------------------------------------------------------------------------------------
// 6. Unauthenticated records decide nothing.
// ---------------------------------------------------------------------------------------

fn planted_records(case: &mut Case) {
    // A replica list naming the attacker's location: nothing is sent there.
    let elsewhere = case.store.sibling("attacker-copy");
    case.store.put(
        &format!(
            "replicas/{:016}-00000000",
            jiff::Timestamp::now().as_millisecond() + 60_000
        ),
        &serde_json::to_vec(&json!({"replicas": [elsewhere]})).unwrap(),
    );
    let o = case.host(&["backup", s(&case.db), "--json"]).ok("backup");
    let report = o.json();
    assert_eq!(report["replication"], json!([]), "{report}");
    assert!(
        o.stderr.contains("ignored replicas/") && o.stderr.contains("is not authentic"),
        "{}",
        o.stderr
    );
    case.ids.push(report["id"].as_str().unwrap().to_string());
    case.dumps.push(dump(&case.db));
    let attacker_copy = match &case.store.place {
        common::attacker::Place::Local(p) => p.with_file_name("attacker-copy").exists(),
        common::attacker::Place::S3 { server, .. } => {
            use common::server::TestStore;
            !server.list(&server.bucket, "attacker-copy/").is_empty()
        }
    };
    assert!(
        !attacker_copy,
        "nothing was sent to the attacker's location"
    );

    // Planted pins and verification marks keep nothing; planted locks and plans and a
    // planted prune lock neither block nor steer prune.
    let oldest = case.ids[0].clone();
    case.store.put(
        &format!("pins/{oldest}"),
        br#"{"pinned":"2026-01-01T00:00:00Z","host":"x"}"#,
    );
    case.store.put(
        &format!("verified/{oldest}"),
        br#"{"verified":"2026-01-01T00:00:00Z","host":"x"}"#,
    );
    let now = jiff::Timestamp::now().to_string();
    let marker = json!({"kind": "backup", "host": "elsewhere", "pid": 1, "started": now,
                        "refreshed": now, "seen_plans": [], "machine": "", "start_ticks": 0,
                        "token": "00"});
    case.store.put(
        "locks/backup-00000000000000aa",
        &serde_json::to_vec(&marker).unwrap(),
    );
    case.store
        .put("locks/prune", &serde_json::to_vec(&marker).unwrap());
    let packs: Vec<String> = case
        .store
        .list("data/")
        .iter()
        .map(|n| n.rsplit('/').next().unwrap().to_string())
        .collect();
    let plan = json!({"id": "01aaaaaaaaaaaa", "created": now, "host": "x", "packs": packs});
    case.store
        .put("plans/01aaaaaaaaaaaa", &serde_json::to_vec(&plan).unwrap());
    let v = case.owner_json(&["forget", "--keep-last", "1", "--prune"]);
    let removed: Vec<String> = v["forget"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert!(
        removed.contains(&oldest),
        "the planted pin kept nothing: {v}"
    );
    assert_eq!(
        v["prune"]["waiting_for"],
        json!([]),
        "a planted lock holds nothing: {v}"
    );
    let keep = case.ids.len() - 1;
    case.ids.drain(..keep);
    case.dumps.drain(..keep);
    case.assert_genuine_restore(&[]);
}

on_both_stores!(planted_records_decide_nothing, planted_records);

fn planted_tombstone(case: &mut Case) {
    // A replica (added by the owner), then a tombstone planted on it for a genuine backup it
    // lost: sync copies the backup back all the same.
    let replica = case.store.sibling("replica");
    case.host(&["replica", "add", &replica]).ok("replica add");
    let id = case.backup();
    // `sibling` of the local store: the folder "replica" beside "repo".
    let replica_store = Storage::local(&case.env, "replica");
    assert!(replica_store.get(&format!("backups/{id}")).is_some());
    replica_store.delete(&format!("backups/{id}"));
    replica_store.put(
        "forgotten/01aaaaaaaaaaaa",
        &serde_json::to_vec(&json!({"backups": [id]})).unwrap(),
    );
    case.host(&["sync"]).ok("sync");
    assert!(
        replica_store.get(&format!("backups/{id}")).is_some(),
        "the forged tombstone kept nothing from the replica"
    );
}

#[test]
fn planted_tombstones_keep_nothing_from_replicas() {
    both_modes(local, planted_tombstone);
}

// ---------------------------------------------------------------------------------------
// 7. A planted key file cannot stall a command.
// ---------------------------------------------------------------------------------------

fn planted_key_files(case: &mut Case) {
    let genuine_name = case
        .store
        .list("keys/")
        .into_iter()
        .find(|n| n.len() == "keys/".len() + 16)
        .unwrap();
    let genuine: Value = serde_json::from_slice(&case.store.get(&genuine_name).unwrap()).unwrap();
    for (i, (memory, passes)) in [(47104u64, 4_000_000_000u64), (4_194_304, 1), (65536, 1)]
        .into_iter()
        .enumerate()
    {
        let id = format!("{:016x}", i);
        let mut planted = genuine.clone();
        planted["id"] = json!(id);
        planted["created"] = json!("2000-01-01T00:00:00Z");
        planted["params"]["memory_kib"] = json!(memory);
        planted["params"]["iterations"] = json!(passes);
        case.store.put(
            &format!("keys/{id}"),
            &serde_json::to_vec(&planted).unwrap(),
        );
    }
    // Forty more that each take a cheap wrong guess: at most 32 key files are tried.
    for i in 0..40 {
        let id = format!("{:016x}", 100 + i);
        let mut planted = genuine.clone();
        planted["id"] = json!(id);
        planted["params"]["memory_kib"] = json!(32);
        case.store.put(
            &format!("keys/{id}"),
            &serde_json::to_vec(&planted).unwrap(),
        );
    }
    let started = std::time::Instant::now();
    case.host(&["key", "list"])
        .ok("key list despite planted key files");
    let o = case.run(
        &[("LIFEBOAT_PASSWORD", "wrong-passphrase")],
        &["key", "list"],
    );
    assert_eq!(o.code, 8, "{}", o.text());
    // On a fresh machine (no key file remembered), the planted ones are tried first, cheap.
    case.run_in(
        "home-fresh",
        &[("LIFEBOAT_PASSWORD", HOST_PW)],
        &["key", "list"],
    )
    .ok("key list on a fresh machine");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "planted key files stalled lifeboat for {:?}",
        started.elapsed()
    );
}

#[test]
fn planted_key_files_cannot_stall_a_command() {
    in_mode(local, Mode::Passphrase, planted_key_files);
}

// ---------------------------------------------------------------------------------------
// 8. Full key rotation revokes copied key files; in-place restores keep no setuid bit and
//    follow no link; disabled TLS checks are said.
// ---------------------------------------------------------------------------------------

fn full_rotation(case: &mut Case) {
    const PW2: &str = "second-person-passphrase-991";
    // A second person's passphrase, and a copy of the whole repository they took.
    let mut args = match case.mode {
        Mode::Passphrase => vec!["key", "add"],
        Mode::WriteOnly => vec!["--identity", s(&case.identity), "key", "add"],
    };
    args.extend(FAST_KDF);
    let vars = [
        ("LIFEBOAT_PASSWORD", HOST_PW),
        ("LIFEBOAT_NEW_PASSWORD", PW2),
    ];
    match case.mode {
        Mode::Passphrase => case.run(&vars, &args),
        Mode::WriteOnly => case.run_in("home-owner", &vars[1..], &args),
    }
    .ok("key add");
    let stolen = case.store.snapshot();
    let r = case.rotate_full(true).json();
    assert_eq!(r["epoch"], 1, "{r}");
    assert!(
        !r["key_files_removed"].as_array().unwrap().is_empty(),
        "{r}"
    );
    // The copied key files open only retired keys.
    for (name, data) in &stolen {
        if name.starts_with("keys/") && case.store.get(name).is_none() {
            case.store.put(name, data);
        }
    }
    case.run(&[("LIFEBOAT_PASSWORD", PW2)], &["list"]).fails(
        9,
        "a retired key file",
        "not authenticated by this repository's keys",
    );
    // Old and new data readable through the new keys; new blob ids: no dedup with the old.
    let o = case
        .host(&["backup", s(&case.db), "--json"])
        .ok("backup after the rotation");
    let b = o.json();
    assert_eq!(b["reused_blobs"], 0, "new id key: {b}");
    case.ids.push(b["id"].as_str().unwrap().to_string());
    case.dumps.push(dump(&case.db));
    case.assert_genuine_restore(&[]);
    // What the second person writes with the retired keys (into their copy, then copied
    // over) is refused.
    let copy = Storage::local(&case.env, "stolen-copy");
    for (name, data) in &stolen {
        copy.put(name, data);
    }
    let o = case
        .env
        .std_cmd()
        .env("HOME", case.env.path("home-thief"))
        .env("LIFEBOAT_PASSWORD", PW2)
        .args(["--repo", &copy.url(), "backup", s(&case.db), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let forged: Value = serde_json::from_slice(&o.stdout).unwrap();
    let forged = format!("backups/{}", forged["id"].as_str().unwrap());
    for (name, data) in copy.snapshot() {
        if case.store.get(&name).is_none() && !name.starts_with("locks/") {
            case.store.put(&name, &data);
        }
    }
    let o = case.owner(&["list"]);
    assert_eq!(
        o.code,
        4,
        "a manifest sealed with retired keys:\n{}",
        o.text()
    );
    assert!(o.text().contains(&forged), "{}", o.text());
    // The next rotation re-seals only what the keys it retires sealed: the forged manifest
    // is left out, and stays refused.
    let r = case.rotate_full(true).json();
    assert_eq!(r["epoch"], 2, "{r}");
    assert!(r["left_out"].to_string().contains(&forged), "{r}");
    let o = case.owner(&["list"]);
    assert_eq!(o.code, 4, "after the second rotation:\n{}", o.text());
    assert!(o.text().contains(&forged), "{}", o.text());
    case.store.delete(&forged);
    case.assert_genuine_restore(&[]);
}

on_both_stores!(full_key_rotation_revokes_copied_keys, full_rotation);

#[test]
fn in_place_restore_follows_no_link_and_copies_no_setuid_bit() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 500));
    env.backup(&db);
    // A link to another file: refused, both left as they were.
    let other = env.path("other.db");
    std::fs::copy(&db, &other).unwrap();
    let link = env.path("link.db");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let before = sha256_file(&other);
    let (code, out) = env.run(&["restore", "latest", "--db", s(&link), "--yes"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is a symbolic link"), "{out}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(sha256_file(&other), before);
    // setuid/setgid bits on the database are not carried over.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let (code, out) = env.run(&["restore", "latest", "--db", s(&db), "--yes"]);
    assert_eq!(code, 0, "{out}");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "restored mode {mode:o}");
}

#[test]
fn disabled_tls_checks_are_said() {
    let env = Env::new();
    let store = s3(&env);
    let db = env.path("app.db");
    drop(make_db(&db, 100));
    let o = env
        .std_cmd()
        .envs(store.env())
        .env("AWS_ALLOW_INVALID_CERTIFICATES", "true")
        .args(["--repo", &store.url(), "repo", "init"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("AWS_ALLOW_INVALID_CERTIFICATES is set: TLS certificates"),
        "{err}"
    );
}

#[test]
fn a_full_rotation_re_keys_the_replicas() {
    // A replica added before the rotation: the rotation syncs it, re-sealing what it holds;
    // afterwards the replica opens with the new key only, restores every backup, and what
    // a retired key writes there is refused.
    let env = Env::new();
    let store = local(&env);
    let mut case = Case::new(env, store, Mode::Passphrase);
    let replica = case.store.sibling("replica");
    case.host(&["replica", "add", &replica]).ok("replica add");
    let old_key_files: Vec<String> = Storage::local(&case.env, "replica")
        .list("keys/")
        .into_iter()
        .filter(|n| n.len() == "keys/".len() + 16)
        .collect();
    case.rotate_full(false);
    let replica_store = Storage::local(&case.env, "replica");
    for k in &old_key_files {
        assert!(
            replica_store.get(k).is_none(),
            "{k} removed from the replica"
        );
    }
    let on_replica = |args: &[&str]| case.elsewhere("home", &case.host_pw, &replica, args);
    let list = on_replica(&["list", "--json"])
        .ok("list the replica")
        .json();
    assert_eq!(list.as_array().unwrap().len(), case.ids.len(), "{list}");
    for (id, rows) in case.ids.iter().zip(&case.dumps) {
        let out = case.env.path(&format!("from-replica-{id}.db"));
        on_replica(&["restore", id, "--output", s(&out)]).ok("restore from the replica");
        assert_eq!(&dump(&out), rows);
    }
    let show = on_replica(&["repo", "show", "--json"]).ok("show").json();
    assert_eq!(show["key_epoch"], 1, "{show}");
}

/// As the backup host: an index file (sorting first) that describes a genuine pack as
/// holding no blob at all.
fn plant_empty_description(case: &Case) -> String {
    use lifeboat::repo::crypto::ObjectKind;
    use lifeboat::repo::index::{encode_index_file, index_object_name, IndexedPack};
    let repo = host_library_repo(case);
    let genuine = lifeboat::repo::index::list_index_files(repo.storage()).unwrap();
    let first = genuine.iter().map(|(n, _)| n.clone()).min().unwrap();
    let mut biggest: Option<IndexedPack> = None;
    for (name, id) in &genuine {
        for p in repo.read_index_file(name, id).unwrap() {
            let n = p.frames.iter().map(|f| f.blobs.len()).sum::<usize>();
            if biggest
                .as_ref()
                .is_none_or(|b| b.frames.iter().map(|f| f.blobs.len()).sum::<usize>() < n)
            {
                biggest = Some(p);
            }
        }
    }
    let mut empty = biggest.expect("a pack");
    for f in &mut empty.frames {
        f.blobs.clear();
    }
    for _ in 0..2000 {
        // Index files are sealed with a random nonce: a new name each time.
        let data = repo
            .seal(
                ObjectKind::Index,
                b"",
                encode_index_file(std::slice::from_ref(&empty)).unwrap(),
            )
            .unwrap();
        let name = index_object_name(&lifeboat::id::Hash::of(&data));
        if name < first {
            case.store.put(&name, &data);
            return lifeboat::repo::pack::pack_object_name(&empty.id);
        }
    }
    panic!("no planted index file sorted first");
}

#[test]
fn a_planted_description_of_a_pack_hides_nothing_from_restore_or_prune() {
    // A compromised backup host describes the pack holding the base pages as empty, in an
    // index file read first; then enough backups for prune to merge index files.
    let env = Env::new();
    let store = local(&env);
    let mut case = Case::new(env, store, Mode::WriteOnly);
    let pack = plant_empty_description(&case);
    for i in 0..17 {
        let c = rusqlite::Connection::open(&case.db).unwrap();
        c.execute(
            "UPDATE t SET v = ?1 WHERE id = ?2",
            rusqlite::params![format!("n{i}"), i + 1],
        )
        .unwrap();
        drop(c);
        case.backup();
    }
    case.assert_genuine_restore(&[]);
    let keep = case.ids.len().to_string();
    for _ in 0..2 {
        let v = case.owner_json(&["forget", "--keep-last", &keep, "--prune"]);
        assert_eq!(v["forget"]["removed"], json!([]), "{v}");
        case.owner_json(&["prune", "--max-unused", "0%"]);
    }
    case.assert_genuine_restore(&[]);
    assert!(
        case.store.get(&pack).is_some() || case.owner(&["repo", "check", "--read-data"]).code == 0,
        "the genuine pack was deleted without its blobs being elsewhere"
    );
}

/// `lifeboat` with `pw` on the repository at `url` (another HOME: the holder of a leaked key).
fn thief(case: &Case, pw: &str, url: &str, args: &[&str]) -> Out {
    case.elsewhere("home-thief", pw, url, args)
}

const LEAKED: &str = "leaked-passphrase-5512";

fn add_leaked_key(case: &Case) {
    let mut args = vec!["key", "add"];
    args.extend(FAST_KDF);
    case.run(
        &[
            ("LIFEBOAT_PASSWORD", HOST_PW),
            ("LIFEBOAT_NEW_PASSWORD", LEAKED),
        ],
        &args,
    )
    .ok("key add");
}

#[test]
fn a_preset_rekeying_flag_does_not_make_a_full_rotation_a_no_op() {
    let env = Env::new();
    let store = local(&env);
    let mut case = Case::new(env, store, Mode::Passphrase);
    add_leaked_key(&case);
    let stolen = case.store.snapshot();
    // The holder of the leaked key writes an authentic config saying a rotation is under way.
    let mut ask = || Ok(lifeboat::secret::Passphrase::new(LEAKED.to_string()));
    let repo = lifeboat::repo::Repository::open(
        Box::new(lifeboat::storage::LocalStorage::new(
            case.store.url().as_str(),
        )),
        lifeboat::repo::Unlock::Passphrase {
            ask: &mut ask,
            given: true,
            preferred_key: None,
        },
    )
    .unwrap();
    let mut config = repo.config.clone();
    config.keys.as_mut().unwrap().rekeying = true;
    repo.store_config(config, None).unwrap();
    // The owner rotates: a new epoch all the same, and the leaked key is revoked.
    let r = case.rotate_full(true).json();
    assert_eq!(r["epoch"], 1, "{r}");
    for (name, data) in &stolen {
        if name.starts_with("keys/") && case.store.get(name).is_none() {
            case.store.put(name, data);
        }
    }
    thief(&case, LEAKED, &case.store.url(), &["list"]).fails(
        9,
        "the leaked key after the rotation",
        "not authenticated",
    );
}

/// A replica where the holder of a retired key planted a backup sealed with it, and a config
/// that asks sync to re-key the replica (`old_config`: the one from before the rotation,
/// authentic under the retired keys; else the current one, edited): sync re-seals nothing
/// of theirs, and the replica refuses the planted backup.
fn replica_re_keyed_on_an_attackers_word(old_config: bool) {
    let env = Env::new();
    let store = local(&env);
    let mut case = Case::new(env, store, Mode::Passphrase);
    let replica = case.store.sibling("replica");
    case.host(&["replica", "add", &replica]).ok("replica add");
    add_leaked_key(&case);
    // The leaked key's holder keeps a copy of the repository as it was.
    let copy = Storage::local(&case.env, "stolen-copy");
    for (name, data) in case.store.snapshot() {
        copy.put(&name, &data);
    }
    case.rotate_full(false);
    let evil = case.env.path("evil.db");
    drop(make_db(&evil, 20));
    // (Its own attempt to replicate there is refused: the replica's keys are newer.)
    let o = thief(&case, LEAKED, &copy.url(), &["backup", s(&evil), "--json"]).fails(
        7,
        "thief backup",
        "newer keys",
    );
    let first: Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
    let forged = format!("backups/{}", first["id"].as_str().unwrap());
    // And a tombstone (forgetting the genuine backups in the copy) for the replica, whose
    // genuine backups are deleted there: sync must copy them back all the same.
    thief(&case, LEAKED, &copy.url(), &["forget", "--keep-last", "1"]).ok("thief forget");
    // And a pin of the planted backup.
    thief(
        &case,
        LEAKED,
        &copy.url(),
        &["pin", first["id"].as_str().unwrap()],
    )
    .ok("thief pin");
    let replica_store = Storage::local(&case.env, "replica");
    assert_eq!(copy.list("forgotten/").len(), 1);
    for id in &case.ids {
        replica_store.delete(&format!("backups/{id}"));
    }
    for (name, data) in copy.snapshot() {
        let genuine_manifest = name.starts_with("backups/") && name != forged;
        if !genuine_manifest
            && (replica_store.get(&name).is_none() || (old_config && name == "config"))
        {
            replica_store.put(&name, &data);
        }
    }
    if !old_config {
        edit_config(&replica_store, |v| v["keys"]["rekeying"] = json!(true));
    }
    case.host(&["sync"]).ok("sync");
    case.elsewhere("home", &case.host_pw, &replica, &["list"])
        .fails(4, "the replica with a planted backup", &forged);
    replica_store.delete(&forged);
    let list = case
        .elsewhere("home", &case.host_pw, &replica, &["list", "--json"])
        .ok("list the replica")
        .json();
    assert_eq!(list.as_array().unwrap().len(), case.ids.len(), "{list}");
    if old_config {
        // Re-keyed on the word of a config the retired key put back: nothing it sealed was
        // re-sealed (every index file there is the current epoch's, the planted pin gone).
        for name in replica_store.list("index/") {
            let v = case
                .elsewhere(
                    "home",
                    &case.host_pw,
                    &replica,
                    &["repo", "inspect", &name, "--json"],
                )
                .ok("inspect")
                .json();
            assert_eq!(v["epoch"], 1, "{name}: {v}");
        }
        let planted_pin = format!("pins/{}", first["id"].as_str().unwrap());
        assert!(replica_store.get(&planted_pin).is_none(), "{planted_pin}");
        // The planted backup's packs are there, but no index file there describes them.
        let source_packs = case.store.list("data/");
        let planted_packs = copy
            .list("data/")
            .into_iter()
            .filter(|p| !source_packs.contains(p))
            .count();
        assert!(planted_packs > 0);
        let check = case
            .elsewhere(
                "home",
                &case.host_pw,
                &replica,
                &["repo", "check", "--json"],
            )
            .ok("check the replica")
            .json();
        assert_eq!(check["unreferenced_packs"], planted_packs, "{check}");
    }
    for (id, rows) in case.ids.iter().zip(&case.dumps) {
        let out = case.env.path(&format!("from-replica-{id}.db"));
        case.elsewhere(
            "home",
            &case.host_pw,
            &replica,
            &["restore", id, "--output", s(&out)],
        )
        .ok("restore from the replica");
        assert_eq!(&dump(&out), rows);
    }
}

#[test]
fn an_edited_replica_config_makes_sync_re_seal_nothing() {
    replica_re_keyed_on_an_attackers_word(false);
}

#[test]
fn an_old_replica_config_makes_sync_re_seal_nothing_a_retired_key_wrote() {
    replica_re_keyed_on_an_attackers_word(true);
}

#[test]
fn links_inside_a_local_repository_are_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let store = local(&env);
    let case = Case::new(env, store, Mode::Passphrase);
    let replica = case.store.sibling("replica");
    case.host(&["replica", "add", &replica]).ok("replica add");
    let root = PathBuf::from(case.store.url());
    // A link posing as a key file, to a file only this user may read: not copied anywhere.
    let secret = case.env.path("secret.txt");
    std::fs::write(&secret, "root-only secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("keys/0123456789abcdef")).unwrap();
    case.host(&["backup", s(&case.db)]).ok("backup");
    for f in walk_files(&case.env.path("replica")) {
        let text = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains("root-only secret"),
            "{}",
            f.display()
        );
    }
    // The staging folder replaced by a link to someone's folder: prune refuses, and the
    // folder is untouched.
    let victim = case.env.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("important.txt"), "keep me").unwrap();
    std::fs::remove_dir_all(root.join("tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("tmp")).unwrap();
    case.host(&["prune"])
        .fails(9, "prune through a linked tmp/", "symbolic link");
    assert_eq!(
        std::fs::read_to_string(victim.join("important.txt")).unwrap(),
        "keep me"
    );
}

/// Tombstones are authentic to anyone holding a key, a write-only host included, and one
/// copied from a replica is authentic too: none may make prune delete data a present
/// backup needs.
fn sealed_tombstone(case: &mut Case) {
    let repo = host_library_repo(case);
    let all: Vec<String> = case.ids.clone();
    let tomb = lifeboat::repo::tombstones::Tombstones {
        backups: all.iter().cloned().collect(),
        ..Default::default()
    };
    let name = "forgotten/01aaaaaaaaaaaa";
    case.store
        .put(name, &repo.records().encode(name, &tomb).unwrap());
    // The same record as a replica of the repository holds it after its own forget.
    let replica = case.store.sibling("replica");
    case.owner(&["replica", "add", &replica]).ok("replica add");
    case.owner(&["sync"]).ok("sync");
    let mut forget = case.env.std_cmd();
    forget
        .env("HOME", case.env.path("home-owner"))
        .args(["--repo", &replica]);
    match case.mode {
        Mode::Passphrase => forget.env("LIFEBOAT_PASSWORD", &case.host_pw),
        Mode::WriteOnly => forget.args(["--identity", s(&case.identity)]),
    };
    Out::of(
        forget
            .args(["forget", "--keep-last", "1", "--prune"])
            .output()
            .unwrap(),
    )
    .ok("forget on the replica");
    let replica_store = Storage::local(&case.env, "replica");
    let replayed = replica_store.list("forgotten/");
    assert_eq!(replayed.len(), 1, "the replica's forget left a tombstone");
    case.store
        .put(&replayed[0], &replica_store.get(&replayed[0]).unwrap());

    let list = case.owner_json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), all.len(), "{list}");
    let v = case.owner_json(&["prune", "--max-unused", "0%"]);
    assert_eq!(v["missing_blobs"], json!(0), "{v}");
    case.assert_genuine_restore(&[]);
    case.owner(&["repo", "check", "--read-data"])
        .ok("check after prune");
}

#[test]
fn sealed_tombstones_make_prune_delete_nothing() {
    both_modes(local, sealed_tombstone);
}

#[test]
fn planted_key_files_do_not_lock_out_a_fresh_machine() {
    let env = Env::new();
    let store = local(&env);
    let case = Case::new(env, store, Mode::Passphrase);
    let genuine_name = case
        .store
        .list("keys/")
        .into_iter()
        .find(|n| n.len() == "keys/".len() + 16)
        .unwrap();
    let genuine: Value = serde_json::from_slice(&case.store.get(&genuine_name).unwrap()).unwrap();
    // Forty-three copies with the default (dear) parameters, dated before the genuine one.
    for i in 0..43 {
        let id = format!("{:016x}", 0xa00 + i);
        let mut planted = genuine.clone();
        planted["id"] = json!(id);
        planted["created"] = json!("2000-01-01T00:00:00Z");
        planted["params"] = json!({"memory_kib": 65536, "iterations": 3, "parallelism": 4});
        case.store.put(
            &format!("keys/{id}"),
            &serde_json::to_vec(&planted).unwrap(),
        );
    }
    case.run_in(
        "home-fresh",
        &[("LIFEBOAT_PASSWORD", HOST_PW)],
        &["key", "list"],
    )
    .ok("a fresh machine opens the repository");
    let o = case.run_in(
        "home-fresh-2",
        &[("LIFEBOAT_PASSWORD", "not-the-passphrase")],
        &["key", "list"],
    );
    assert_eq!(o.code, 8, "{}", o.text());
    assert!(o.text().contains("were not tried"), "{}", o.text());
}

#[test]
fn sync_state_on_this_machine_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let store = local(&env);
    let case = Case::new(env, store, Mode::Passphrase);
    let replica = case.store.sibling("replica");
    case.host(&["replica", "add", &replica]).ok("replica add");
    let state = case.env.path("home/.local/state/lifeboat");
    for f in walk_files(&state) {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let mode = std::fs::metadata(state.join("trust"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_full_rotation_wants_a_passphrase_no_current_key_file_opens() {
    // The same passphrase (or another one the repository has now) would let whoever puts an
    // old copy of the repository back open it on a fresh machine: refused, nothing changed.
    let env = Env::new();
    let store = local(&env);
    let case = Case::new(env, store, Mode::Passphrase);
    add_leaked_key(&case);
    let before = case.store.snapshot();
    for new in [HOST_PW, LEAKED] {
        case.run(
            &[
                ("LIFEBOAT_PASSWORD", HOST_PW),
                ("LIFEBOAT_NEW_PASSWORD", new),
            ],
            &["key", "rotate", "--full", "--yes"],
        )
        .fails(
            2,
            "rotation to a current passphrase",
            "of the keys being retired",
        );
    }
    let after = case.store.snapshot();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after
            .keys()
            .filter(|n| !n.starts_with("locks/"))
            .collect::<Vec<_>>()
    );
    assert_eq!(before["config"], after["config"]);
}

/// Planted objects that would exhaust memory or block a read: an oversized key file and a
/// FIFO (local disk) posing as one are skipped; an oversized config is refused unread.
fn oversized_and_special_files(case: &mut Case) {
    let junk = vec![b'{'; 3 << 20];
    case.store.put("keys/aaaaaaaaaaaaaaaa", &junk);
    if let common::attacker::Place::Local(root) = &case.store.place {
        let fifo = root.join("keys/bbbbbbbbbbbbbbbb");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let started = std::time::Instant::now();
    let list = case.owner_json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), case.ids.len(), "{list}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    if let common::attacker::Place::Local(root) = &case.store.place {
        // A 600 MiB (sparse) index file: reported, never read into memory.
        let giant = root.join(format!("index/{}", "ab".repeat(32)));
        std::fs::File::create(&giant)
            .unwrap()
            .set_len(600 << 20)
            .unwrap();
        let o = case.owner(&["repo", "check", "--json"]).code(4, "check");
        assert!(
            o.stdout.contains("more than such an object ever holds"),
            "{}",
            o.text()
        );
        case.assert_genuine_restore(&[]);
        std::fs::remove_file(giant).unwrap();
    }
    case.store.put("config", &junk);
    case.owner(&["list"]).fails(
        4,
        "an oversized config",
        "more than such an object ever holds",
    );
}

on_both_stores!(
    oversized_and_special_files_stall_nothing,
    oversized_and_special_files,
    Mode::Passphrase
);

#[test]
fn a_forgotten_manifest_copied_back_does_not_stop_prune() {
    // After `forget --prune`, the forgotten manifest is put back (it is authentic): it shows
    // in the list again, but prune goes on (its data is gone) and what is kept restores.
    let env = Env::new();
    let store = local(&env);
    let mut case = Case::new(env, store, Mode::Passphrase);
    let old: Vec<(String, Vec<u8>)> = case
        .store
        .list("backups/")
        .into_iter()
        .map(|n| {
            let d = case.store.get(&n).unwrap();
            (n, d)
        })
        .collect();
    let v = case.owner_json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(v["forget"]["removed"].as_array().unwrap().len(), 1, "{v}");
    for (n, d) in &old {
        case.store.put(n, d);
    }
    let list = case.owner_json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let o = case
        .owner(&["prune", "--json"])
        .ok("prune with the manifest back");
    assert!(o.stderr.contains("its manifest is back"), "{}", o.stderr);
    case.ids.drain(..1);
    case.dumps.drain(..1);
    case.assert_genuine_restore(&[]);
}
