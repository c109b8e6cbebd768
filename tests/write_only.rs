//! Write-only repositories: a backup host with a passphrase can back up and deduplicate but
//! cannot list, verify or restore; the identity generated elsewhere can.

mod common;
use common::*;
use std::path::Path;

const FAST_KDF: [&str; 4] = ["--argon2-memory", "64", "--argon2-iterations", "1"];

fn recipient_of(identity: &Path) -> String {
    let text = std::fs::read_to_string(identity).expect("identity");
    let start = text
        .find("lifeboat-recipient-")
        .expect("public key in the comment");
    text[start..start + "lifeboat-recipient-".len() + 64].to_string()
}

#[test]
fn write_only_host_backs_up_but_cannot_read_and_the_identity_can() {
    let env = Env::new();
    let identity = env.path("identity.key");
    let generated = env.json(&["key", "generate", "--output", identity.to_str().unwrap()]);
    let recipient = generated["recipient"]
        .as_str()
        .expect("recipient")
        .to_string();
    assert_eq!(recipient, recipient_of(&identity));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the identity is private");
    // Never overwritten.
    let (code, _) = env.run(&["key", "generate", "--output", identity.to_str().unwrap()]);
    assert_eq!(code, 2);

    let host = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("LIFEBOAT_PASSWORD", "backup-host-pass").args(args);
        c
    };
    let mut init = vec!["repo", "init", "--recipient", recipient.as_str()];
    init.extend(FAST_KDF);
    host(&init).assert().success();

    let db = env.path("app.db");
    drop(make_db(&db, 2_000));
    // Uncompressed, so that the search for plaintext below would find it were it not sealed.
    let out = host(&[
        "backup",
        db.to_str().unwrap(),
        "--json",
        "--compression",
        "none",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = first["id"].as_str().unwrap().to_string();

    // Deduplication still works on the host: a second backup stores no new pages.
    let out = host(&["backup", db.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(second["new_blobs"], 0, "{second}");

    // The host cannot read: list, show, verify, restore, --verify all refuse with code 8.
    for args in [
        vec!["list"],
        vec!["show", id.as_str()],
        vec!["verify", id.as_str()],
        vec!["restore", id.as_str(), "--output", "never.db"],
    ] {
        let out = host(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(8),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("write-only"), "{args:?} says why: {err}");
    }
    assert!(!env.path("never.db").exists());
    let out = host(&["backup", db.to_str().unwrap(), "--verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let show = host(&["repo", "show", "--json"]).output().unwrap();
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(show["write_only"], true, "{show}");

    // The identity (and no passphrase) reads everything.
    let ident = identity.to_str().unwrap();
    let list = env.json(&["--identity", ident, "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = env.json(&["--identity", ident, "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    let restored = env.path("restored.db");
    env.cmd()
        .args(["--identity", ident, "restore", &id, "--output"])
        .arg(&restored)
        .assert()
        .success();
    assert_eq!(dump(&restored), dump(&db));
    let (code, out) = env.run(&["--identity", ident, "repo", "check", "--read-data"]);
    assert_eq!(code, 0, "{out}");

    // Another identity is refused.
    let other = env.path("other.key");
    env.json(&["key", "generate", "--output", other.to_str().unwrap()]);
    let (code, out) = env.run(&["--identity", other.to_str().unwrap(), "list"]);
    assert_eq!(code, 8, "{out}");

    // Nothing in the repository names the table or holds the rows; the same backup in an
    // unencrypted repository does (the control that proves the search can find them).
    let markers = ["row 1999", "CREATE TABLE"];
    let found = |repo: &Path| -> Vec<(String, &str)> {
        let mut found = Vec::new();
        for f in walk_files(repo) {
            let bytes = std::fs::read(&f).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for m in markers {
                if text.contains(m) {
                    found.push((f.display().to_string(), m));
                }
            }
        }
        found
    };
    let leaked = found(&env.repo());
    assert!(
        leaked.is_empty(),
        "the repository holds plaintext: {leaked:?}"
    );
    let plain = env.path("plain-repo");
    env.json(&[
        "--repo",
        plain.to_str().unwrap(),
        "backup",
        db.to_str().unwrap(),
        "--compression",
        "none",
    ]);
    let seen: Vec<&str> = found(&plain).into_iter().map(|(_, m)| m).collect();
    for m in markers {
        assert!(
            seen.contains(&m),
            "the search finds {m:?} in an unencrypted repository: {seen:?}"
        );
    }
}
