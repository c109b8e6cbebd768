//! Files backups (content kind `tree`): a folder of configuration backed up with the real
//! binary and restored byte for byte with its modes, times, links, empty files and folders;
//! secrets redacted and listed, never stored; an unchanged folder stores nothing new; runs of
//! several sources; a damaged object or a kill during the backup never passes for a good
//! backup.

mod common;
use common::tree::{listing, mtime_ns, noise};
use common::*;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn set_mtime(p: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(p)
        .or_else(|_| std::fs::File::open(p))
        .expect("open")
        .set_modified(t)
        .expect("set mtime");
}

/// A folder with every kind of entry a tree keeps.
fn awkward_folder(root: &Path) {
    std::fs::create_dir_all(root.join("conf.d/empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("nested/deeper/deepest")).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    std::fs::write(root.join("café ☕.conf"), "ünïcode = yes\n").unwrap();
    std::fs::write(root.join("odd\nname.txt"), "a name with a newline\n").unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt")),
        "a name that is not UTF-8\n",
    )
    .unwrap();
    std::fs::write(root.join("nested/deeper/deepest/leaf.ini"), "[a]\nb = c\n").unwrap();
    // Several content-defined chunks.
    std::fs::write(root.join("nested/big.bin"), noise(3 << 20, 7)).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("conf.d/private.conf"), "x = 1\n").unwrap();
    std::fs::set_permissions(
        root.join("conf.d/private.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("run.sh", root.join("current")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    for (i, p) in [
        "empty.txt",
        "run.sh",
        "nested/big.bin",
        "conf.d/private.conf",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(p), 1_600_000_000 + i as u64 * 1000);
    }
    std::fs::set_permissions(
        root.join("conf.d/empty-dir"),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
}

#[test]
fn a_folder_round_trips_with_modes_times_links_and_odd_names() {
    let env = Env::new();
    let src = env.path("myapp");
    awkward_folder(&src);
    let v = env.json(&["backup", s(&src), "--no-redact"]);
    assert_eq!(v["kind"], "files", "{v}");
    assert_eq!(v["content"], "tree", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let m = env.json(&["show", &id]);
    assert_eq!(m["source"]["kind"], "files");
    assert_eq!(m["files"]["files"], 8, "{m}");
    assert_eq!(m["files"]["symlinks"], 2, "{m}");
    assert_eq!(m["files"]["redaction"], serde_json::Value::Null, "{m}");
    let out = env.path("restored");
    let r = env.json(&["restore", &id, "--output", s(&out)]);
    assert_eq!(r["files"], 8, "{r}");
    assert_eq!(listing(&out), listing(&src), "the restored folder differs");
    // The root folder's own mode and time come back too.
    let (a, b) = (
        std::fs::metadata(&src).unwrap(),
        std::fs::metadata(&out).unwrap(),
    );
    assert_eq!(a.mode() & 0o7777, b.mode() & 0o7777);
    assert_eq!(mtime_ns(&a), mtime_ns(&b));
    let verified = env.json(&["verify", &id]);
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn a_single_file_and_kind_override() {
    let env = Env::new();
    let conf = env.path("app.conf");
    std::fs::write(&conf, "listen = 8080\n").unwrap();
    let id = env.json(&["backup", s(&conf)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.path("app.conf.restored");
    env.json(&["restore", &id, "--output", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"listen = 8080\n");
    // A SQLite database kept as a plain file.
    let db = env.path("app.db");
    drop(make_db(&db, 50));
    let v = env.json(&["backup", s(&db), "--kind", "files"]);
    assert_eq!(v["kind"], "files", "{v}");
    let out = env.path("app.db.restored");
    env.json(&["restore", v["id"].as_str().unwrap(), "--output", s(&out)]);
    assert_eq!(sha256_file(&out), sha256_file(&db));
    // A file named like a database that is not one is refused, unless --kind files says to
    // keep it as it is.
    let notes = env.path("notes.db");
    std::fs::write(&notes, "not a database\n").unwrap();
    let (code, said) = env.run(&["backup", s(&notes)]);
    assert_eq!(code, 5, "{said}");
    let v = env.json(&["backup", s(&notes), "--kind", "files"]);
    assert_eq!(v["kind"], "files", "{v}");
}

#[test]
fn excluded_paths_are_left_out() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(src.join("cache/deep")).unwrap();
    std::fs::write(src.join("cache/deep/blob"), "x").unwrap();
    std::fs::write(src.join("app.log"), "log").unwrap();
    std::fs::write(src.join("sub.d"), "keep").unwrap();
    std::fs::write(src.join("settings.toml"), "a = 1\n").unwrap();
    let v = env.json(&[
        "backup",
        s(&src),
        "--exclude",
        "*.log",
        "--exclude",
        "cache",
    ]);
    let m = env.json(&["show", v["id"].as_str().unwrap()]);
    assert_eq!(
        m["files"]["excluded"],
        serde_json::json!(["*.log", "cache"])
    );
    let out = env.path("out");
    env.json(&["restore", v["id"].as_str().unwrap(), "--output", s(&out)]);
    assert_eq!(
        file_names(&out),
        vec!["settings.toml".to_string(), "sub.d".to_string()]
    );
}

/// Real-looking configuration of every format Lifeboat redacts.
fn config_with_secrets(root: &Path) -> Vec<&'static str> {
    std::fs::create_dir_all(root.join("k8s")).unwrap();
    std::fs::write(
        root.join(".env"),
        "# app settings\nRAILS_ENV=production\nDB_PASSWORD=env-secret-4711\nDATABASE_URL=postgres://app:dsn-secret-99@db:5432/app\n",
    )
    .unwrap();
    std::fs::write(
        root.join("config.toml"),
        "# main config\n[server]\nport = 8080\n\n[database]\nuser = \"app\"\npassword = \"toml-secret-123\" # keep this comment\n",
    )
    .unwrap();
    std::fs::write(
        root.join("k8s/values.yaml"),
        "# helm values\nimage: app:1.2\nupstream:\n  api_token: yaml-secret-abc\n  user: admin\n",
    )
    .unwrap();
    std::fs::write(
        root.join("settings.json"),
        "{\n  \"service\": {\"name\": \"app\", \"api_key\": \"json-secret-xyz\"}\n}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app.ini"),
        "; ini comment\n[mail]\nhost = smtp\nsecret = ini-secret-777\n",
    )
    .unwrap();
    vec![
        "env-secret-4711",
        "dsn-secret-99",
        "toml-secret-123",
        "yaml-secret-abc",
        "json-secret-xyz",
        "ini-secret-777",
    ]
}

fn every_file_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for f in walk_files(dir) {
        all.extend(std::fs::read(&f).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_are_redacted_listed_and_never_stored() {
    let env = Env::new();
    let src = env.path("myapp");
    let secrets = config_with_secrets(&src);
    // Uncompressed, so a secret that reached the repository would show in its bytes.
    let v = env.json(&["backup", s(&src), "--compression", "none"]);
    let id = v["id"].as_str().unwrap().to_string();
    let stored = every_file_bytes(&env.repo());
    for secret in &secrets {
        assert!(
            !contains(&stored, secret),
            "{secret} reached the repository"
        );
    }
    assert!(
        contains(&stored, "keep this comment"),
        "the test can see stored text"
    );
    let m = env.json(&["show", &id]);
    let redacted: BTreeMap<String, Vec<String>> = m["files"]["redacted"]
        .as_array()
        .expect("redacted files")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        redacted.keys().cloned().collect::<Vec<_>>(),
        vec![
            ".env",
            "app.ini",
            "config.toml",
            "k8s/values.yaml",
            "settings.json"
        ],
        "{m}"
    );
    assert!(redacted[".env"].contains(&"DB_PASSWORD".to_string()), "{m}");
    assert!(
        redacted[".env"].contains(&"DATABASE_URL".to_string()),
        "{m}"
    );
    assert!(
        redacted["config.toml"].contains(&"database.password".to_string()),
        "{m}"
    );
    assert!(
        redacted["k8s/values.yaml"].contains(&"upstream.api_token".to_string()),
        "{m}"
    );
    assert!(
        redacted["settings.json"].contains(&"service.api_key".to_string()),
        "{m}"
    );
    assert!(
        redacted["app.ini"].contains(&"mail.secret".to_string()),
        "{m}"
    );
    let text = m.to_string();
    for secret in &secrets {
        assert!(!text.contains(secret), "{secret} is in the manifest");
    }
    // The restore says what to fill in, and keeps the files' shape.
    let out = env.path("out");
    let (code, said) = env.run(&["restore", &id, "--output", s(&out)]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("fill these in") && said.contains("config.toml: database.password"),
        "{said}"
    );
    let toml = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        toml.starts_with("# main config\n[server]\nport = 8080\n"),
        "{toml}"
    );
    assert!(
        toml.contains("# keep this comment") && toml.contains("user = \"app\""),
        "{toml}"
    );
    assert!(!toml.contains("toml-secret-123"), "{toml}");
    let env_file = std::fs::read_to_string(out.join(".env")).unwrap();
    assert!(
        env_file.contains("RAILS_ENV=production") && env_file.contains("postgres://app:"),
        "{env_file}"
    );
    // --no-redact keeps them; --redact replaces the default patterns.
    let v = env.json(&["backup", s(&src), "--no-redact"]);
    let out2 = env.path("out2");
    env.json(&["restore", v["id"].as_str().unwrap(), "--output", s(&out2)]);
    assert!(std::fs::read_to_string(out2.join("config.toml"))
        .unwrap()
        .contains("toml-secret-123"));
    // --redact adds keys: the defaults stay redacted.
    let v = env.json(&["backup", s(&src), "--redact", "user"]);
    let m = env.json(&["show", v["id"].as_str().unwrap()]);
    let listed = m["files"]["redacted"].to_string();
    assert!(
        listed.contains("database.user") && listed.contains("database.password"),
        "{m}"
    );
}

/// A file of a known format that cannot be read well enough to know where its values are
/// (a Helm template) stops the backup, naming it: it is never stored with its secrets.
#[test]
fn a_file_that_cannot_be_redacted_stops_the_backup() {
    let env = Env::new();
    let src = env.path("chart");
    std::fs::create_dir_all(src.join("templates")).unwrap();
    std::fs::write(
        src.join("templates/secret.yaml"),
        "{{- if .Values.enabled }}\napiVersion: v1\nkind: Secret\ndata:\n  password: {{ .Values.pw | quote }}\n{{- end }}\n",
    )
    .unwrap();
    let (code, said) = env.run(&["backup", s(&src)]);
    assert_eq!(code, 5, "{said}");
    assert!(
        said.contains("templates/secret.yaml") && said.contains("--no-redact"),
        "{said}"
    );
    assert!(
        !env.repo().join("backups").exists() || file_names(&env.repo().join("backups")).is_empty()
    );
    // Excluded, the rest is backed up.
    std::fs::write(src.join("values.yaml"), "password: hunter2\n").unwrap();
    let v = env.json(&["backup", s(&src), "--exclude", "templates"]);
    let m = env.json(&["show", v["id"].as_str().unwrap()]);
    assert_eq!(m["files"]["redacted"][0]["path"], "values.yaml", "{m}");
}

#[test]
fn an_unchanged_folder_stores_almost_nothing() {
    let env = Env::new();
    let src = env.path("etc");
    for i in 0..2000 {
        let dir = src.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i}.conf")),
            format!("key{i} = value {i}\n"),
        )
        .unwrap();
    }
    let first = env.json(&["backup", s(&src)]);
    assert!(num(&first, "new_blobs") >= 2000, "{first}");
    let second = env.json(&["backup", s(&src)]);
    assert!(num(&second, "new_stored_bytes") < 10_000, "{second}");
    assert_eq!(num(&second, "new_blobs"), 0, "{second}");
    // One changed file: its chunk and the one tree blob holding it.
    std::fs::write(src.join("d07/f7.conf"), "key7 = changed\n").unwrap();
    let third = env.json(&["backup", s(&src)]);
    assert_eq!(num(&third, "new_blobs"), 1, "{third}");
    assert!(num(&third, "new_stored_bytes") < 64 << 10, "{third}");
    let out = env.path("out");
    env.json(&[
        "restore",
        third["id"].as_str().unwrap(),
        "--output",
        s(&out),
    ]);
    assert_eq!(listing(&out).len(), listing(&src).len());
    assert_eq!(
        std::fs::read_to_string(out.join("d07/f7.conf")).unwrap(),
        "key7 = changed\n"
    );
}

#[test]
fn restore_never_writes_over_a_folder_without_yes() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.conf"), "new\n").unwrap();
    let id = env.json(&["backup", s(&src)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.path("existing");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("a.conf"), "old\n").unwrap();
    std::fs::write(out.join("other"), "untouched\n").unwrap();
    let (code, said) = env.run(&["restore", &id, "--output", s(&out)]);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("already exists") && said.contains("--yes"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("a.conf")).unwrap(),
        "old\n"
    );
    // With --yes, files of the same names are replaced and others left alone.
    env.json(&["restore", &id, "--output", s(&out), "--yes"]);
    assert_eq!(
        std::fs::read_to_string(out.join("a.conf")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("other")).unwrap(),
        "untouched\n"
    );
    // A files backup is never restored "in place" over a database path.
    let (code, said) = env.run(&["restore", &id, "--db", s(&env.path("x.db")), "--yes"]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("restored to a folder"), "{said}");
    // Nothing half-restored is left beside the target.
    let leftovers: Vec<String> = file_names(env.dir.path())
        .into_iter()
        .filter(|n| n.contains("lifeboat-") && n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_run_of_several_sources_shares_one_id_and_restores_together() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 200));
    let conf = env.path("myapp");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.toml"), "port = 1\n").unwrap();
    let v = env.json(&["backup", s(&db), s(&conf), "--tag", "pre-upgrade"]);
    let run = v["run"].as_str().expect("run id").to_string();
    let backups = v["backups"].as_array().expect("backups");
    assert_eq!(backups.len(), 2, "{v}");
    assert_eq!(
        backups[0]["time"], backups[1]["time"],
        "one time for the run"
    );
    let list = env.json(&["list"]);
    let in_run: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["run"] == run.as_str())
        .collect();
    assert_eq!(in_run.len(), 2, "{list}");
    assert!(in_run
        .iter()
        .all(|m| m["tags"] == serde_json::json!(["pre-upgrade"])));
    // `latest` of each source still works.
    let latest = env.json(&["show", "latest", "--source", s(&conf)]);
    assert_eq!(latest["source"]["kind"], "files");
    let dir = env.path("restored");
    let r = env.json(&["restore", "--run", &run[..8], "--output-dir", s(&dir)]);
    assert_eq!(r["run"], run.as_str(), "{r}");
    assert_eq!(sha256_file(&dir.join("app.db")), sha256_file(&db));
    assert_eq!(
        std::fs::read_to_string(dir.join("myapp/app.toml")).unwrap(),
        "port = 1\n"
    );
    let (code, said) = env.run(&["restore", "--run", "zzzz", "--output-dir", s(&dir)]);
    assert_eq!(code, 3, "{said}");
}

/// A flipped byte in any object a files backup needs fails its restore (exit 4) and its
/// verify, and leaves no half-restored folder.
#[test]
fn damage_to_a_files_backup_is_detected() {
    let env = Env::new();
    let src = env.path("myapp");
    awkward_folder(&src);
    let id = env.json(&["backup", s(&src), "--no-redact"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let packs: Vec<PathBuf> = walk_files(&env.repo().join("data"));
    assert!(!packs.is_empty());
    for pack in &packs {
        let good = std::fs::read(pack).unwrap();
        let mut bad = good.clone();
        let at = bad.len() / 3;
        bad[at] ^= 0x40;
        std::fs::write(pack, &bad).unwrap();
        let out = env.path("out");
        let (code, said) = env.run(&["restore", &id, "--output", s(&out)]);
        assert_eq!(code, 4, "damaged {}: {said}", pack.display());
        assert!(!out.exists(), "a damaged restore left {}", out.display());
        let (code, v, _) = env.run_json(&["verify", &id]);
        assert_ne!(code, 0, "{v}");
        std::fs::write(pack, &good).unwrap();
    }
    let out = env.path("out");
    env.json(&["restore", &id, "--output", s(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

/// kill -9 while a files backup stores its chunks: no backup appears, the repository checks
/// clean, and the next backup completes and restores.
#[test]
fn kill_during_a_files_backup_leaves_no_backup_and_a_sound_repository() {
    let env = Env::new();
    let src = env.path("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..120 {
        std::fs::write(src.join(format!("f{i:03}.bin")), noise(1 << 20, i + 1)).unwrap();
    }
    env.json(&["repo", "init"]);
    let mut child = env
        .std_cmd()
        .args(["backup", s(&src)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let packs = env.repo().join("data");
    let landed = wait_until(std::time::Duration::from_secs(60), || {
        !walk_files(&packs).is_empty()
    });
    assert!(landed, "the backup stored no pack before the kill");
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "killed mid-way, not finished");
    assert!(
        file_names(&env.repo().join("backups")).is_empty(),
        "no backup was committed"
    );
    let check = env.json(&["repo", "check"]);
    assert_eq!(check["ok"], true, "{check}");
    let v = env.json(&["backup", s(&src)]);
    assert!(
        num(&v, "reused_blobs") > 0,
        "the stored chunks are reused: {v}"
    );
    let out = env.path("out");
    env.json(&["restore", v["id"].as_str().unwrap(), "--output", s(&out)]);
    assert_eq!(listing(&out), listing(&src));
}

/// Files backups replicate like SQLite backups: the reachability walk follows
/// tree blobs to file chunks, so a replica restores the folder, and prune keeps what trees
/// need.
#[test]
fn files_backups_replicate_and_survive_prune() {
    let env = Env::new();
    let src = env.path("myapp");
    awkward_folder(&src);
    let replica = env.path("replica");
    env.json(&["repo", "init"]);
    env.json(&["replica", "add", s(&replica)]);
    env.json(&["backup", s(&src), "--no-redact"]);
    std::fs::write(src.join("nested/big.bin"), noise(2 << 20, 99)).unwrap();
    let second = env.json(&["backup", s(&src), "--no-redact"]);
    assert_eq!(
        second["replication"][0]["error"],
        serde_json::Value::Null,
        "{second}"
    );
    // Forget the first backup and prune: the second still restores, from both copies.
    let f = env.json(&["forget", "--keep-last", "1", "--prune"]);
    let listed = env.json(&["list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{f}");
    assert!(
        num(&f["prune"], "deleted_packs") + num(&f["prune"], "repacked_packs") > 0,
        "{f}"
    );
    env.json(&["sync"]);
    for repo in [env.repo(), replica.clone()] {
        let out = env.path(&format!(
            "out-{}",
            repo.file_name().unwrap().to_string_lossy()
        ));
        env.json(&[
            "--repo",
            s(&repo),
            "restore",
            second["id"].as_str().unwrap(),
            "--output",
            s(&out),
        ]);
        assert_eq!(
            listing(&out),
            listing(&src),
            "restored from {}",
            repo.display()
        );
    }
    let check = env.json(&["repo", "check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check}");
}

/// A file whose name usually holds secrets, in a format Lifeboat does not redact, is stored
/// as it is and named in a warning (and the warning goes once it is excluded).
#[test]
fn unredacted_credential_files_are_named_in_a_warning() {
    let env = Env::new();
    let src = env.path("home");
    std::fs::create_dir_all(src.join("certs")).unwrap();
    std::fs::write(
        src.join(".npmrc"),
        "//registry.npmjs.org/:_authToken=npm_secret\n",
    )
    .unwrap();
    std::fs::write(
        src.join("certs/server.key"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(src.join("app.toml"), "port = 1\n").unwrap();
    let v = env.json(&["backup", s(&src)]);
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains(".npmrc") && warnings.contains("certs/server.key"),
        "{v}"
    );
    assert!(!warnings.contains("app.toml"), "{v}");
    let v = env.json(&[
        "backup",
        s(&src),
        "--exclude",
        ".npmrc",
        "--exclude",
        "certs",
    ]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}
