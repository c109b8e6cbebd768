//! Replicas: `replica add` copies everything, every backup then updates every replica, `sync`
//! catches up and repairs, `status` shows lag, restore reads a lost object from a replica,
//! and a replica that cannot be written fails the command without harming the primary.

mod common;
use common::s3::S3Server;
use common::server::TestStore;
use common::*;

#[test]
fn replicas_follow_backups_and_serve_lost_objects() {
    let env = Env::new();
    let db = env.path("app.db");
    let conn = make_db(&db, 2_000);
    let first = env.backup(&db);
    let first_content = dump(&db);
    let copy1 = env.path("copy1");
    let copy2 = env.path("copy2");
    for c in [&copy1, &copy2] {
        let r = env.json(&["replica", "add", c.to_str().unwrap()]);
        assert!(
            r["targets"][0]["copied_objects"].as_u64().unwrap() >= 4,
            "{r}"
        );
    }
    let list = env.json(&["replica", "list"]);
    assert_eq!(list["replicas"].as_array().unwrap().len(), 2);

    conn.execute("UPDATE t SET v = 'new' WHERE id < 50", [])
        .unwrap();
    drop(conn);
    let b = env.json(&["backup", db.to_str().unwrap()]);
    let second = b["id"].as_str().unwrap().to_string();
    let replication = b["replication"].as_array().unwrap();
    assert_eq!(replication.len(), 2, "{b}");
    assert!(replication.iter().all(|r| r["error"].is_null()), "{b}");

    // Each replica is a complete repository of its own.
    for c in [&copy1, &copy2] {
        let v = env.json(&["--repo", c.to_str().unwrap(), "verify", "--all"]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    }
    let status = env.json(&["status"]);
    let targets = status["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{status}");
    for t in &targets[1..] {
        assert_eq!(t["objects_behind"], 0, "{t}");
        assert_eq!(t["backups"], 2, "{t}");
        assert_eq!(t["newest_backup"], second.as_str(), "{t}");
        assert!(t["last_success"].is_string(), "{t}");
    }

    // A replica that lost objects is behind, and `sync` brings it back.
    std::fs::remove_dir_all(copy2.join("data")).unwrap();
    let status = env.json(&["status"]);
    assert!(
        status["targets"][2]["objects_behind"].as_u64().unwrap() > 0,
        "{status}"
    );
    let s = env.json(&["sync", "--target", copy2.to_str().unwrap()]);
    assert!(
        s["targets"][0]["copied_objects"].as_u64().unwrap() > 0,
        "{s}"
    );
    let v = env.json(&["--repo", copy2.to_str().unwrap(), "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");

    // The primary loses a pack: restore reads it from a replica and says so.
    let shown = env.json(&["show", &first]);
    let pack_id = shown["stored"]["packs"][0].as_str().unwrap().to_string();
    let pack = env.repo().join("data").join(&pack_id[..2]).join(&pack_id);
    std::fs::remove_file(&pack).unwrap();
    let out = env.path("restored.db");
    let r = env
        .cmd()
        .args(["restore", &first, "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("from replica"),
        "the fallback is reported: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    // What it restored is the database as it was backed up, not just a file.
    assert_eq!(dump(&out), first_content, "the restore from the replica");
    assert_eq!(integrity_check(&out), ["ok"]);
    assert_eq!(
        sha256_file(&out),
        shown["database"]["sha256"].as_str().expect("sha256"),
        "{shown}"
    );
    let (code, _) = env.run(&["repo", "check"]);
    assert_eq!(code, 4, "the primary itself is still reported as damaged");

    let removed = env.json(&["replica", "remove", copy1.to_str().unwrap()]);
    assert_eq!(removed["removed"], copy1.to_str().unwrap());
    assert_eq!(
        env.json(&["replica", "list"])["replicas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_unwritable_replica_fails_the_backup_but_not_the_primary() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 500));
    env.backup(&db);
    let good = env.path("good");
    env.json(&["replica", "add", good.to_str().unwrap()]);
    // A target that cannot be written is refused by `replica add`...
    std::fs::write(env.path("blocker"), b"x").unwrap();
    let (code, _) = env.run(&[
        "replica",
        "add",
        env.path("blocker/replica").to_str().unwrap(),
    ]);
    assert_eq!(code, 7, "adding an unusable target fails");
    let mut list = env.json(&["replica", "list"]);
    assert_eq!(list["replicas"].as_array().unwrap().len(), 1);
    // ...and one that breaks later fails the backup that cannot reach it.
    let bad = env.path("bad");
    env.json(&["replica", "add", bad.to_str().unwrap()]);
    std::fs::remove_dir_all(&bad).unwrap();
    std::fs::write(&bad, b"not a folder any more").unwrap();
    let (code, out) = env.run(&["backup", db.to_str().unwrap()]);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("replication failed"), "{out}");
    assert!(out.contains("hint:"), "{out}");
    // The backup itself is on the primary and on the good replica.
    list = env.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let v = env.json(&["--repo", good.to_str().unwrap(), "verify", "--all"]);
    assert_eq!(v["backups"].as_array().unwrap().len(), 2, "{v}");
    let status = env.json(&["status"]);
    let bad_row = status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == bad.to_str().unwrap())
        .cloned()
        .expect("the failing replica is listed");
    assert!(bad_row["last_error"].is_string(), "{status}");
}

#[test]
fn a_replica_on_s3() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("replica");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    env.backup(&db);
    let run = |args: &[&str]| {
        let out = env
            .cmd()
            .envs(s3.env())
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    run(&["replica", "add", &url]);
    run(&["backup", db.to_str().unwrap()]);
    let v = run(&["--repo", &url, "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    let status = run(&["status"]);
    assert_eq!(status["targets"][1]["objects_behind"], 0, "{status}");
}

#[test]
fn a_replica_with_its_own_credential_variables() {
    let env = Env::new();
    let s3 = S3Server::start();
    let url = s3.url("elsewhere");
    let db = env.path("app.db");
    drop(make_db(&db, 1_000));
    env.backup(&db);
    // Only prefixed variables: the replica's provider differs from the primary's.
    let prefixed: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (format!("REPLICA_{k}"), v))
        .collect();
    let run = |args: &[&str]| {
        env.cmd()
            .envs(prefixed.clone())
            .args(args)
            .arg("--json")
            .output()
            .unwrap()
    };
    let out = run(&["replica", "add", &url]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no credentials without the section"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials for s3://"));

    std::fs::write(
        env.path("lifeboat.toml"),
        format!("[target.\"{url}\"]\nenv_prefix = \"REPLICA_\"\n"),
    )
    .unwrap();
    let out = run(&["replica", "add", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--repo", &url, "verify", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
}
