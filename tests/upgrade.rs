//! The format contract (issue 10): repositories made by the first release (format 1, the
//! fixtures in tests/fixtures/v1, made by tests/fixtures/v1/make.sh with that release's
//! binary) stay readable, are read-only until `repo upgrade`, and upgrade crash-safely on
//! local disk (a kill at every step, aimed with strace) and on the S3 server (the store
//! failing at a chosen object); a repository of a newer format or with unknown features is
//! refused and left untouched.

mod common;
use common::attacker::{edit_config, Storage};
use common::fault_proxy::{FaultProxy, Faults};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const HOST_PW: &str = "host-passphrase";
const OWNER_PW: &str = "fixture-passphrase";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A copy of the fixture database `name` in the test's folder (tests never open the files
/// of the source tree: SQLite would leave -shm files there).
fn fixture_db(env: &Env, name: &str) -> PathBuf {
    let p = env.path(name);
    if !p.exists() {
        std::fs::copy(fixtures().join(name), &p).expect("fixture database");
    }
    p
}

/// A copy of fixture `name` as the test's repository.
fn fixture(env: &Env, name: &str) -> PathBuf {
    copy_dir(&fixtures().join(name), &env.repo());
    env.repo()
}

/// How each fixture is opened: the variables and flags of its reader.
fn reader(name: &str) -> (Vec<(&'static str, String)>, Vec<String>) {
    match name {
        "plain" => (vec![], vec![]),
        "encrypted" => (vec![("LIFEBOAT_PASSWORD", OWNER_PW.into())], vec![]),
        _ => (
            vec![],
            vec![
                "--identity".into(),
                fixtures().join("identity.key").display().to_string(),
            ],
        ),
    }
}

/// The variables of the fixture's writer: none, the owner's passphrase, or (write-only)
/// the backup host's.
fn writer(name: &str) -> Vec<(&'static str, String)> {
    match name {
        "plain" => vec![],
        "encrypted" => vec![("LIFEBOAT_PASSWORD", OWNER_PW.into())],
        _ => vec![("LIFEBOAT_PASSWORD", HOST_PW.into())],
    }
}

fn run(env: &Env, vars: &[(&str, String)], args: &[&str]) -> (i32, String, String) {
    let mut c = env.std_cmd();
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.args(args).output().expect("run lifeboat");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run as the fixture's reader; assert success; parse `--json` output.
fn read_json(env: &Env, name: &str, args: &[&str]) -> Value {
    let (vars, flags) = reader(name);
    let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
    a.extend(args);
    a.push("--json");
    let (code, out, err) = run(env, &vars, &a);
    assert_eq!(code, 0, "{name}: {args:?}:\n{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Both backups of a fixture restore to the databases it was made from.
fn assert_fixture_restores(env: &Env, name: &str) {
    let list = read_json(env, name, &["list"]);
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["trigger"] == "manual")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 2, "{name}: {list}");
    for (id, db) in ids.iter().zip(["app-1.db", "app-2.db"]) {
        let out = env.path(&format!("restored-{name}-{id}.db"));
        read_json(env, name, &["restore", id, "--output", s(&out)]);
        assert_eq!(dump(&out), dump(&fixture_db(env, db)), "{name} {id}");
        assert_eq!(sha256_file(&out), sha256_file(&fixtures().join(db)));
    }
}

#[test]
fn format_1_repositories_stay_readable_and_are_read_only() {
    for name in ["plain", "encrypted", "write-only"] {
        let env = Env::new();
        let repo = fixture(&env, name);
        let show = read_json(&env, name, &["repo", "show"]);
        assert_eq!(show["format_version"], 1, "{show}");
        assert_fixture_restores(&env, name);
        // Writing needs the upgrade, and says so; nothing is written.
        let before = tree(&repo);
        let host = writer(name);
        let db = env.path("new.db");
        drop(make_db(&db, 50));
        let (code, out, err) = run(&env, &host, &["backup", s(&db)]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains("lifeboat repo upgrade"), "{name}: {err}");
        let (code, _, err) = run(&env, &host, &["forget", "--keep-last", "1"]);
        assert_eq!(code, 2, "{name}: {err}");
        assert_eq!(tree(&repo), before, "{name}: the repository is untouched");
    }
}

#[test]
fn upgrade_keeps_every_backup_pin_and_key() {
    for name in ["plain", "encrypted", "write-only"] {
        let env = Env::new();
        let repo = fixture(&env, name);
        let r = read_json(&env, name, &["repo", "upgrade"]);
        assert_eq!(
            (r["from"].as_u64(), r["to"].as_u64()),
            (Some(1), Some(2)),
            "{r}"
        );
        assert_eq!(r["manifests_refused"], serde_json::json!([]), "{r}");
        let show = read_json(&env, name, &["repo", "show"]);
        assert_eq!(show["format_version"], 2, "{show}");
        assert_eq!(show["upgraded_from"], 1, "{show}");
        assert_fixture_restores(&env, name);
        let check = read_json(&env, name, &["repo", "check", "--read-data"]);
        assert_eq!(check["ok"], true, "{check}");
        // Again: nothing to do.
        let again = read_json(&env, name, &["repo", "upgrade"]);
        assert_eq!(again["from"], 2);
        // Writable now: a backup that reuses the old pages, by the fixture's writer.
        let host = writer(name);
        let (code, out, err) = run(
            &env,
            &host,
            &["backup", s(&fixture_db(&env, "app-2.db")), "--json"],
        );
        assert_eq!(code, 0, "{name}: {out}{err}");
        let b: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(b["new_blobs"], 0, "{name}: dedup with format-1 data: {b}");
        // The pin made by the first release still holds (plain and encrypted fixtures).
        if name != "write-only" {
            let list = read_json(&env, name, &["list"]);
            let pinned = list.as_array().unwrap()[1]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let (vars, flags) = reader(name);
            let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
            a.extend(["show", pinned.as_str()]);
            let (code, out, _) = run(&env, &vars, &a);
            assert_eq!(code, 0);
            assert!(out.contains("pinned       yes"), "{name}: {out}");
        }
        // The plaintext recipient file of format 1 is gone; the config carries it.
        if name == "write-only" {
            assert!(!repo.join("keys/recipient").exists());
            assert!(repo.join("keys/recipient-0").exists());
            assert!(show["recipient"]
                .as_str()
                .unwrap()
                .starts_with("lifeboat-recipient-"));
        }
    }
}

#[test]
fn write_only_upgrade_needs_the_identity_and_leaves_out_forged_manifests() {
    let env = Env::new();
    let repo = fixture(&env, "write-only");
    let before = tree(&repo);
    let host = vec![("LIFEBOAT_PASSWORD", HOST_PW.to_string())];
    let (code, _, err) = run(&env, &host, &["repo", "upgrade"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs its identity"), "{err}");
    assert_eq!(tree(&repo), before);
    // Before the upgrade, someone planted a manifest sealed the format-1 way to the public
    // recipient: it names no page list anyone can forge, and is left out.
    let genuine = std::fs::read_dir(repo.join("backups"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let forged_id = "01m95h4nz00000";
    std::fs::copy(genuine.path(), repo.join("backups").join(forged_id)).unwrap();
    let (vars, flags) = reader("write-only");
    let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
    a.extend(["repo", "upgrade", "--json"]);
    let (code, out, err) = run(&env, &vars, &a);
    assert_eq!(code, 4, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["manifests_resealed"], 2, "{r}");
    assert!(
        r["manifests_refused"][0]
            .as_str()
            .unwrap()
            .starts_with(forged_id),
        "{r}"
    );
    // Refused from now on; the genuine backups restore once it is removed.
    let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
    a.push("list");
    let (code, _, err) = run(&env, &vars, &a);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(forged_id), "{err}");
    std::fs::remove_file(repo.join("backups").join(forged_id)).unwrap();
    let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
    a.extend(["--accept-change", "list"]);
    run(&env, &vars, &a);
    assert_fixture_restores(&env, "write-only");
    // The host writes again.
    let (code, out, err) = run(&env, &host, &["backup", s(&fixture_db(&env, "app-1.db"))]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Manifests of `repo` still in the format-1 write-only envelope (version 2, kind 4).
fn format_1_manifests(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("backups"))
        .unwrap()
        .filter(|e| {
            let b = std::fs::read(e.as_ref().unwrap().path()).unwrap();
            b[..2] == [2, 4]
        })
        .count()
}

fn config_format(repo: &Path) -> u64 {
    let v: Value = serde_json::from_slice(&std::fs::read(repo.join("config")).unwrap()).unwrap();
    v["format_version"].as_u64().unwrap()
}

#[test]
fn upgrade_killed_at_any_step_on_local_disk_resumes() {
    // Every object the upgrade replaces is one rename: kill the process at the N-th rename
    // (strace's fault injection), for N across the whole run, and check what it left.
    let keep = Env::new();
    let many_db = fixture_db(&keep, "app-many.db");
    // Renames in the repository: 1 keys/recipient-0, 2..=41 the 40 manifests, 42 the pin,
    // 43 the config, 44 the data key sealed again.
    for n in [1u32, 2, 3, 11, 24, 40, 41, 42, 43, 44] {
        let env = Env::new();
        let repo = fixture(&env, "write-only-many");
        let (vars, flags) = reader("write-only-many");
        let mut c = lifeboat_under_strace(Some(n), &env.path("renames.log"));
        c.current_dir(env.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", env.path("home"))
            .env("LIFEBOAT_REPO", env.repo())
            .args(&flags)
            .args(["repo", "upgrade"]);
        for (k, v) in &vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_ne!(out.status.code(), Some(0), "killed at rename {n}");
        assert_eq!(
            renames_logged(&env.path("renames.log")),
            n,
            "kill at rename {n}"
        );
        // The kill landed where aimed: the config is still format 1 (up to its own rename),
        // and exactly the manifests renamed before it are re-sealed.
        let committed = n > 43;
        assert_eq!(
            config_format(&repo),
            if committed { 2 } else { 1 },
            "kill at rename {n}"
        );
        let resealed = 40 - format_1_manifests(&repo);
        assert_eq!(
            resealed,
            (n.saturating_sub(2) as usize).min(40),
            "kill at rename {n}"
        );
        // Still readable, every backup listed; then the upgrade finishes.
        let list = read_json(&env, "write-only-many", &["list"]);
        assert_eq!(
            list.as_array().unwrap().len(),
            40,
            "after a kill at rename {n}"
        );
        if committed {
            // Interrupted after its config: every command says how to finish it.
            let (vars, flags) = reader("write-only-many");
            let mut a: Vec<&str> = flags.iter().map(String::as_str).collect();
            a.push("list");
            let (code, _, err) = run(&env, &vars, &a);
            assert_eq!(code, 0, "{err}");
            assert!(err.contains("run `lifeboat repo upgrade` again"), "{err}");
        }
        let r = read_json(&env, "write-only-many", &["repo", "upgrade"]);
        assert_eq!(r["to"], 2);
        // The data key ends in format 2's envelope either way.
        assert_eq!(r["data_keys_resealed"], 1, "kill at rename {n}: {r}");
        assert_eq!(
            read_json(&env, "write-only-many", &["repo", "upgrade"])["data_keys_resealed"],
            0
        );
        assert_eq!(config_format(&repo), 2);
        assert_eq!(format_1_manifests(&repo), 0);
        let out = env.path("latest.db");
        read_json(
            &env,
            "write-only-many",
            &["restore", "latest", "--output", s(&out)],
        );
        assert_eq!(dump(&out), dump(&many_db), "after a kill at rename {n}");
    }
}

#[test]
fn upgrade_interrupted_on_s3_resumes() {
    // The store fails (503, no retries) at a chosen object: the 20th manifest, then the
    // config. What was done stays done, the repository stays readable, a second run ends it.
    let env = Env::new();
    let store = Storage::s3("team/repo");
    for e in walk_files(&fixtures().join("write-only-many")) {
        let name = e
            .strip_prefix(fixtures().join("write-only-many"))
            .unwrap()
            .display()
            .to_string();
        store.put(&name, &std::fs::read(&e).unwrap());
    }
    let manifests = store.list("backups/");
    assert_eq!(manifests.len(), 40);
    let (bucket, prefix) = match &store.place {
        common::attacker::Place::S3 { server, prefix } => (server.bucket.clone(), prefix.clone()),
        _ => unreachable!(),
    };
    let upstream = match &store.place {
        common::attacker::Place::S3 { server, .. } => server.addr().to_string(),
        _ => unreachable!(),
    };
    let (vars, flags) = reader("write-only-many");
    let upgrade = |endpoint: &str, also: &[&str]| {
        let mut c = env.std_cmd();
        c.envs(store.env())
            .env("AWS_ENDPOINT", endpoint)
            .env("LIFEBOAT_RETRIES", "0")
            .args(["--repo", &store.url()])
            .args(&flags)
            .args(also);
        for (k, v) in &vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let endpoint = store
        .env()
        .into_iter()
        .find(|(k, _)| *k == "AWS_ENDPOINT")
        .unwrap()
        .1;
    for (stop_at, resealed) in [(manifests[19].clone(), 19usize), ("config".to_string(), 40)] {
        let proxy = FaultProxy::start(
            &upstream,
            Faults {
                down_at: Some(format!("PUT /{bucket}/{prefix}/{stop_at}")),
                ..Faults::default()
            },
        );
        let out = upgrade(&proxy.endpoint(), &["repo", "upgrade"]);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!proxy.log().is_empty(), "the store failed where aimed");
        let config: Value = serde_json::from_slice(&store.get("config").unwrap()).unwrap();
        assert_eq!(config["format_version"], 1, "stopped at {stop_at}");
        let v1 = manifests
            .iter()
            .filter(|m| store.get(m).unwrap()[..2] == [2, 4])
            .count();
        assert_eq!(40 - v1, resealed, "stopped at {stop_at}");
        let out = upgrade(&endpoint, &["list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 40);
    }
    let out = upgrade(&endpoint, &["repo", "upgrade"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&store.get("config").unwrap()).unwrap();
    assert_eq!(config["format_version"], 2);
    let restored = env.path("latest.db");
    let out = upgrade(&endpoint, &["restore", "latest", "--output", s(&restored)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&restored), dump(&fixture_db(&env, "app-many.db")));
}

#[test]
fn newer_formats_and_unknown_features_are_refused_untouched() {
    for (what, edit) in [
        (
            "format 3",
            Box::new(|v: &mut Value| v["format_version"] = 3.into()) as Box<dyn Fn(&mut Value)>,
        ),
        (
            "features content-kinds-9",
            Box::new(|v: &mut Value| v["features"] = serde_json::json!(["content-kinds-9"])),
        ),
    ] {
        for encrypted in [false, true] {
            let env = Env::new();
            let vars: Vec<(&str, String)> = if encrypted {
                vec![("LIFEBOAT_PASSWORD", OWNER_PW.into())]
            } else {
                vec![]
            };
            let mut init = vec!["repo", "init"];
            init.extend(FAST_KDF);
            if encrypted {
                init.push("--encrypt");
            }
            let (code, _, err) = run(&env, &vars, &init);
            assert_eq!(code, 0, "{err}");
            let db = env.path("a.db");
            drop(make_db(&db, 50));
            let (code, _, err) = run(&env, &vars, &["backup", s(&db)]);
            assert_eq!(code, 0, "{err}");
            let store = Storage::local(&env, "repo");
            edit_config(&store, |v| edit(v));
            let before = tree(&env.repo());
            for args in [
                vec!["list"],
                vec!["backup", s(&db)],
                vec!["repo", "upgrade"],
                vec!["prune"],
            ] {
                let (code, _, err) = run(&env, &vars, &args);
                assert_eq!(code, 2, "{what} {args:?}: {err}");
                assert!(
                    err.contains(&format!("made by a newer Lifeboat ({what}")),
                    "{err}"
                );
            }
            assert_eq!(tree(&env.repo()), before, "{what}: untouched");
        }
    }
}

/// Every file under `dir` (but the staging and lock folders) and its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walk_files(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), p))
        .filter(|(n, _)| !n.starts_with("tmp/") && !n.starts_with("locks/"))
        .map(|(n, p)| (n, std::fs::read(p).unwrap()))
        .collect()
}

#[test]
fn a_format_1_replica_is_upgraded_where_it_is_before_a_sync() {
    // A primary and its replica, both format 1 (a copy of the fixture: the same
    // repository); the primary is upgraded; a sync refuses to mix formats and says how.
    let env = Env::new();
    let primary = fixture(&env, "encrypted");
    let replica = env.path("replica");
    copy_dir(&primary, &replica);
    let owner = vec![("LIFEBOAT_PASSWORD", OWNER_PW.to_string())];
    let (code, _, err) = run(&env, &owner, &["repo", "upgrade"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&env, &owner, &["replica", "add", s(&replica)]);
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("is in format 1") && err.contains("repo upgrade"),
        "{err}"
    );
    let (code, _, err) = run(&env, &owner, &["--repo", s(&replica), "repo", "upgrade"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&env, &owner, &["sync"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&env, &owner, &["--repo", s(&replica), "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn upgrade_drops_the_unauthenticated_replica_list() {
    // Format 1 did not authenticate the replica list: one planted before the upgrade must
    // not become authentic by it.
    let env = Env::new();
    let repo = fixture(&env, "encrypted");
    let attacker = env.path("attacker-bucket");
    std::fs::create_dir_all(repo.join("replicas")).unwrap();
    std::fs::write(
        repo.join(format!(
            "replicas/{:016}-deadbeef",
            jiff::Timestamp::now().as_millisecond()
        )),
        serde_json::to_vec(&serde_json::json!({"replicas": [attacker.display().to_string()]}))
            .unwrap(),
    )
    .unwrap();
    let r = read_json(&env, "encrypted", &["repo", "upgrade"]);
    assert_eq!(
        r["replicas_dropped"][0],
        attacker.display().to_string(),
        "{r}"
    );
    let b = read_json(
        &env,
        "encrypted",
        &["backup", s(&fixture_db(&env, "app-2.db"))],
    );
    assert_eq!(b["replication"], serde_json::json!([]), "{b}");
    assert!(!attacker.exists(), "nothing sent to the planted replica");
}

#[test]
fn a_format_2_config_replaced_by_a_format_1_one_is_refused() {
    // Someone without the keys writes a format-1 config (no MAC) over a format-2 one: a
    // machine that never saw the repository still refuses it, since its data keys are in
    // the format-2 envelope.
    let env = Env::new();
    let owner = vec![("LIFEBOAT_PASSWORD", OWNER_PW.to_string())];
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST_KDF);
    let (code, _, err) = run(&env, &owner, &init);
    assert_eq!(code, 0, "{err}");
    let store = Storage::local(&env, "repo");
    edit_config(&store, |v| {
        v["format_version"] = 1.into();
        let o = v.as_object_mut().unwrap();
        o.remove("keys");
        o.remove("mac");
        o.remove("features");
    });
    let mut c = env.std_cmd();
    let o = c
        .env("HOME", env.path("fresh-home"))
        .env("LIFEBOAT_PASSWORD", OWNER_PW)
        .args(["repo", "upgrade"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(9), "{err}");
    assert!(err.contains("an old config was put in its place"), "{err}");
}

#[test]
fn an_upgraded_repository_given_back_its_format_1_config_is_refused() {
    // After `repo upgrade`, the format-1 config it replaced (saved by anyone who could read
    // the storage) is put back: a machine that never saw the repository refuses it too,
    // since the upgrade sealed the data keys again in format 2's envelope.
    let env = Env::new();
    let repo = fixture(&env, "encrypted");
    let old_config = std::fs::read(repo.join("config")).unwrap();
    let r = read_json(&env, "encrypted", &["repo", "upgrade"]);
    assert_eq!(r["data_keys_resealed"], 1, "{r}");
    std::fs::write(repo.join("config"), &old_config).unwrap();
    let o = Out::of(
        env.std_cmd()
            .env("HOME", env.path("fresh-home"))
            .env("LIFEBOAT_PASSWORD", OWNER_PW)
            .args(["list"])
            .output()
            .unwrap(),
    );
    o.fails(
        9,
        "the format-1 config put back",
        "an old config was put in its place",
    );
}

fn fixtures_v2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

/// Repositories of the last release before content kinds (format 2 without the feature
/// `manifest-2`, tests/fixtures/v2): they stay readable and take SQLite backups as manifests
/// of format 1 (which that release reads); a DuckDB or files backup asks for `repo upgrade`,
/// which adds the feature (authenticated in an encrypted repository) and keeps every backup.
#[test]
fn repositories_before_content_kinds_stay_usable_and_upgrade() {
    for name in ["plain", "encrypted"] {
        let env = Env::new();
        copy_dir(&fixtures_v2().join(name), &env.repo());
        let (vars, _) = reader(name);
        let show = read_json(&env, name, &["repo", "show"]);
        assert_eq!(show["format_version"], 2, "{show}");
        assert_eq!(show["features"], serde_json::json!([]), "{show}");
        let old: Vec<String> = read_json(&env, name, &["list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(old.len(), 2, "{name}");
        // Both old backups restore to the databases they were made from.
        for (id, db) in old.iter().zip(["app-1.db", "app-2.db"]) {
            let out = env.path(&format!("{name}-{id}.db"));
            read_json(&env, name, &["restore", id, "--output", s(&out)]);
            assert_eq!(sha256_file(&out), sha256_file(&fixtures_v2().join(db)));
        }
        // A SQLite backup is written as format 1 there.
        let db = env.path("app.db");
        std::fs::copy(fixtures_v2().join("app-2.db"), &db).unwrap();
        let (code, out, err) = run(&env, &vars, &["backup", s(&db), "--json"]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        if name == "plain" {
            let stored: Value = serde_json::from_slice(
                &std::fs::read(env.repo().join("backups").join(&id)).unwrap(),
            )
            .unwrap();
            assert_eq!(stored["format"], 1, "{stored}");
            assert!(
                stored["database"].is_object() && stored.get("sqlite").is_none(),
                "{stored}"
            );
        }
        // Files need the upgrade, and say so; nothing is written.
        let conf = env.path("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("app.toml"), "a = 1\n").unwrap();
        let before = tree(&env.repo());
        let (code, out, err) = run(&env, &vars, &["backup", s(&conf)]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains("lifeboat repo upgrade"), "{err}");
        assert_eq!(
            tree(&env.repo()),
            before,
            "{name}: a refused backup wrote something"
        );
        // The upgrade adds the feature, once.
        let up = read_json(&env, name, &["repo", "upgrade"]);
        assert_eq!(
            up["features_added"],
            serde_json::json!(["manifest-2", "wal-segments", "pg-wal"]),
            "{up}"
        );
        let show = read_json(&env, name, &["repo", "show"]);
        assert_eq!(
            show["features"],
            serde_json::json!(["manifest-2", "wal-segments", "pg-wal"]),
            "{show}"
        );
        let again = read_json(&env, name, &["repo", "upgrade"]);
        assert_eq!(again["features_added"], serde_json::json!([]), "{again}");
        let (code, out, err) = run(&env, &vars, &["backup", s(&conf), "--json"]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert_eq!(
            read_json(&env, name, &["list"]).as_array().unwrap().len(),
            4
        );
        for id in &old {
            let v = read_json(&env, name, &["verify", id]);
            assert_eq!(v["ok"], true, "{v}");
        }
    }
}

/// A repository whose config lists a feature this version does not know was made by a newer
/// Lifeboat: every command refuses it, naming the feature, and changes nothing. (This is
/// what a release before `manifest-2` does with an upgraded repository.)
#[test]
fn an_unknown_feature_is_refused_by_every_command() {
    let env = Env::new();
    copy_dir(&fixtures_v2().join("plain"), &env.repo());
    let path = env.repo().join("config");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["features"] = serde_json::json!(["manifest-2", "wal-segments-9"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let before = tree(&env.repo());
    let db = env.path("app.db");
    std::fs::copy(fixtures_v2().join("app-1.db"), &db).unwrap();
    for args in [
        vec!["list"],
        vec!["backup", s(&db)],
        vec!["prune"],
        vec!["repo", "upgrade"],
    ] {
        let (code, out, err) = run(&env, &[], &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("made by a newer Lifeboat (features wal-segments-9)"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(tree(&env.repo()), before);
}

/// Adding the feature on an object store, encrypted: the store fails the config's PUT (the
/// only write), and the repository is left exactly as it was and usable; the next run
/// upgrades it, and files backups then work.
#[test]
fn adding_the_feature_on_s3_survives_a_failed_write() {
    let env = Env::new();
    let store = Storage::s3("team/v2");
    let root = fixtures_v2().join("encrypted");
    for e in walk_files(&root) {
        let name = e.strip_prefix(&root).unwrap().display().to_string();
        store.put(&name, &std::fs::read(&e).unwrap());
    }
    let (bucket, prefix, upstream) = match &store.place {
        common::attacker::Place::S3 { server, prefix } => (
            server.bucket.clone(),
            prefix.clone(),
            server.addr().to_string(),
        ),
        _ => unreachable!(),
    };
    let run_at = |endpoint: Option<&str>, args: &[&str]| {
        let mut c = env.std_cmd();
        c.envs(store.env())
            .env("LIFEBOAT_RETRIES", "0")
            .env("LIFEBOAT_PASSWORD", OWNER_PW)
            .args(["--repo", &store.url()])
            .args(args);
        if let Some(e) = endpoint {
            c.env("AWS_ENDPOINT", e);
        }
        Out::of(c.output().unwrap())
    };
    let before = store.get("config").unwrap();
    let proxy = FaultProxy::start(
        &upstream,
        Faults {
            down_at: Some(format!("PUT /{bucket}/{prefix}/config")),
            ..Faults::default()
        },
    );
    run_at(Some(&proxy.endpoint()), &["repo", "upgrade"])
        .code(7, "upgrade with the config PUT failing");
    assert!(!proxy.log().is_empty(), "the store failed where aimed");
    assert_eq!(
        store.get("config").unwrap(),
        before,
        "a failed upgrade changed the config"
    );
    let list = run_at(None, &["list", "--json"])
        .ok("list after the failed upgrade")
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let up = run_at(None, &["repo", "upgrade", "--json"])
        .ok("upgrade again")
        .json();
    assert_eq!(
        up["features_added"],
        serde_json::json!(["manifest-2", "wal-segments", "pg-wal"]),
        "{up}"
    );
    let conf = env.path("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.toml"), "a = 1\n").unwrap();
    run_at(None, &["backup", s(&conf)]).ok("files backup after the upgrade");
    let v = run_at(None, &["verify", "--all", "--json"])
        .ok("verify --all")
        .json();
    assert_eq!(v["ok"], true, "{v}");
}

fn fixtures_v3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3")
}

/// Repositories of the release before continuous replication (tests/fixtures/v3, made by
/// the binary of e6d8dc1: feature `manifest-2` only): their backups still restore;
/// `replicate` asks for `repo upgrade` and changes nothing; the upgrade adds `wal-segments`
/// once, after which commits are shipped and a restore to the latest one matches.
#[test]
fn repositories_before_replication_upgrade_for_it() {
    for (name, vars) in [
        ("plain", vec![]),
        (
            "encrypted",
            vec![("LIFEBOAT_PASSWORD", "fixture-passphrase".to_string())],
        ),
    ] {
        let env = Env::new();
        copy_dir(&fixtures_v3().join(name), &env.repo());
        let db = env.path("app.db");
        std::fs::copy(fixtures_v3().join("app.db"), &db).unwrap();
        let json = |args: &[&str]| -> Value {
            let mut a = args.to_vec();
            a.push("--json");
            let (code, out, err) = run(&env, &vars, &a);
            assert_eq!(code, 0, "{name}: {args:?}:\n{out}{err}");
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
        };
        // The release's SQLite backup restores to the database it was made from.
        let list = json(&["list"]);
        let sqlite = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["kind"] == "sqlite" || b["source"]["kind"] == "sqlite")
            .unwrap_or_else(|| panic!("{name}: no SQLite backup in {list}"));
        let id = sqlite["id"].as_str().unwrap().to_string();
        let restored = env.path("restored.db");
        json(&["restore", &id, "--output", s(&restored)]);
        assert_eq!(
            std::fs::read(&restored).unwrap(),
            std::fs::read(&db).unwrap(),
            "{name}: the release's backup restored to other bytes"
        );
        // Replication needs the feature: refused, nothing written.
        let before = tree(&env.repo());
        let (code, out, err) = run(&env, &vars, &["replicate", s(&db)]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains("lifeboat repo upgrade"), "{name}: {err}");
        assert_eq!(
            tree(&env.repo()),
            before,
            "{name}: a refused replicate wrote"
        );
        let up = json(&["repo", "upgrade"]);
        assert_eq!(
            up["features_added"],
            serde_json::json!(["wal-segments", "pg-wal"]),
            "{name}: {up}"
        );
        // Now it ships: rows committed while it runs are in a restore to the latest moment.
        let mut child = env.std_cmd();
        for (k, v) in &vars {
            child.env(k, v);
        }
        let child = child
            .args(["replicate", s(&db), "--json", "--interval", "200ms"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        for i in 0..20 {
            conn.execute(
                "INSERT INTO items(name, qty) VALUES (?1, ?2)",
                rusqlite::params![format!("after upgrade {i}"), i],
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(800));
        // SAFETY: a signal to the child we spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["commits"], 20, "{name}: {report}");
        let latest = env.path("latest.db");
        json(&[
            "restore",
            "--source",
            s(&db),
            "--at",
            "latest",
            "--output",
            s(&latest),
        ]);
        let count = |p: &Path| -> i64 {
            rusqlite::Connection::open(p)
                .unwrap()
                .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&latest), 520, "{name}");
        assert_eq!(count(&latest), count(&db), "{name}");
    }
}

fn fixtures_v4() -> PathBuf {
    fixtures().join("../v4")
}

/// Repositories of the release before PostgreSQL WAL archiving (tests/fixtures/v4, made by
/// the binary of b74595d: features `manifest-2` and `wal-segments`): their backups still
/// restore; `wal-push` asks for `repo upgrade` and stores nothing; the upgrade adds
/// `pg-wal` once, after which a segment is archived and fetched back unchanged.
#[test]
fn repositories_before_wal_archiving_upgrade_for_it() {
    for (name, vars) in [
        ("plain", vec![]),
        (
            "encrypted",
            vec![("LIFEBOAT_PASSWORD", "fixture-passphrase".to_string())],
        ),
    ] {
        let env = Env::new();
        copy_dir(&fixtures_v4().join(name), &env.repo());
        let json = |args: &[&str]| -> Value {
            let mut a = args.to_vec();
            a.push("--json");
            let (code, out, err) = run(&env, &vars, &a);
            assert_eq!(code, 0, "{name}: {args:?}:\n{out}{err}");
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
        };
        let list = json(&["list"]);
        let id = list[0]["id"].as_str().unwrap().to_string();
        let restored = env.path("restored.db");
        json(&["restore", &id, "--output", s(&restored)]);
        assert_eq!(
            std::fs::read(&restored).unwrap(),
            std::fs::read(fixtures_v4().join("app.db")).unwrap(),
            "{name}: the release's backup restored to other bytes"
        );
        // A WAL segment of a (made-up) cluster, as PostgreSQL would hand it over.
        let pgdata = env.path("pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
        let seg_name = "000000010000000000000007";
        let size: u32 = 1 << 20;
        let mut seg = vec![0u8; size as usize];
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&2u16.to_le_bytes());
        seg[4..8].copy_from_slice(&1u32.to_le_bytes());
        seg[8..16].copy_from_slice(&(7u64 * size as u64).to_le_bytes());
        seg[24..32].copy_from_slice(&4242u64.to_le_bytes());
        seg[32..36].copy_from_slice(&size.to_le_bytes());
        seg[36..40].copy_from_slice(&8192u32.to_le_bytes());
        seg[4096..4100].copy_from_slice(b"data");
        let seg_path = pgdata.join("pg_wal").join(seg_name);
        std::fs::write(&seg_path, &seg).unwrap();
        let before = tree(&env.repo());
        let (code, out, err) = run(&env, &vars, &["wal-push", s(&seg_path)]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(err.contains("lifeboat repo upgrade"), "{name}: {err}");
        assert_eq!(
            tree(&env.repo()),
            before,
            "{name}: a refused wal-push wrote"
        );
        let up = json(&["repo", "upgrade"]);
        assert_eq!(
            up["features_added"],
            serde_json::json!(["pg-wal"]),
            "{name}: {up}"
        );
        let (code, out, err) = run(&env, &vars, &["wal-push", s(&seg_path)]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        // wal-fetch reads the cluster's identity from the data directory's pg_control.
        std::fs::create_dir_all(pgdata.join("global")).unwrap();
        let mut control = vec![0u8; 8192];
        control[..8].copy_from_slice(&4242u64.to_le_bytes());
        std::fs::write(pgdata.join("global/pg_control"), control).unwrap();
        let back = env.path("back");
        let (code, out, err) = run(
            &env,
            &vars,
            &["wal-fetch", seg_name, s(&back), "--pgdata", s(&pgdata)],
        );
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert_eq!(std::fs::read(&back).unwrap(), seg, "{name}");
    }
}
