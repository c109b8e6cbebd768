//! `lifeboat drill` of SQLite, DuckDB-free and files backups: restored into a throwaway
//! folder, checked, the check query run, the restore time recorded — and a damaged backup
//! fails the drill naming the damage.

mod common;
use common::*;

#[test]
fn a_sqlite_drill_restores_checks_runs_the_query_and_records_the_rto() {
    let env = Env::new();
    let db = env.path("app.db");
    make_db(&db, 500);
    let id = env.backup(&db);
    std::fs::write(
        env.path("lifeboat.toml"),
        "[drill]\nquery = \"SELECT count(*) = 500 FROM t\"\n",
    )
    .unwrap();
    let (code, v, err) = env.run_json(&["--config", "lifeboat.toml", "drill", &id]);
    assert_eq!(code, 0, "{v}\n{err}");
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["restore", "integrity_check", "check query"], "{v}");
    assert!(v["rto_ms"].as_u64().is_some(), "{v}");
    // Recorded beside the backup: list shows it as verified by a drill, with its RTO.
    let list = env.json(&["list"]);
    let row = &list.as_array().unwrap()[0];
    assert_eq!(row["verified"]["drill"], true, "{row}");
    assert_eq!(row["verified"]["rto_ms"], v["rto_ms"], "{row}");

    // A later verify keeps the drill's measured restore time (it is still true).
    env.cmd().args(["verify", &id]).assert().success();
    let row = &env.json(&["list"]).as_array().unwrap()[0].clone();
    assert_eq!(row["verified"]["drill"], true, "{row}");
    assert_eq!(row["verified"]["rto_ms"], v["rto_ms"], "{row}");

    // A query that is false fails the drill (exit 4), and names the step.
    std::fs::write(
        env.path("lifeboat.toml"),
        "[drill]\nquery = \"SELECT count(*) = 501 FROM t\"\n",
    )
    .unwrap();
    let (code, out) = env.run(&["--config", "lifeboat.toml", "drill", &id]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("FAILED at: check query"), "{out}");
}

#[test]
fn a_drill_of_a_damaged_backup_fails_and_names_it() {
    let env = Env::new();
    let db = env.path("app.db");
    make_db(&db, 2000);
    let id = env.backup(&db);
    let m = env.json(&["show", &id]);
    let pack = m["stored"]["packs"][0].as_str().unwrap().to_string();
    let path = env.repo().join("data").join(&pack[..2]).join(&pack);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (code, out) = env.run(&["drill", &id]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("FAIL") && out.contains("restore"), "{out}");
    // Not recorded as verified.
    let list = env.json(&["list"]);
    assert!(list.as_array().unwrap()[0]["verified"].is_null(), "{list}");
}

#[test]
fn a_files_drill_restores_the_tree() {
    let env = Env::new();
    let dir = env.path("conf");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "hello").unwrap();
    std::fs::write(dir.join("sub/b.txt"), "world").unwrap();
    let id = env.backup(&dir);
    let (code, v, err) = env.run_json(&["drill", &id]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["steps"][0]["name"], "restore");
    // The general check query is SQL: said to be not run for a tree, never silently dropped.
    std::fs::write(env.path("lifeboat.toml"), "[drill]\nquery = \"SELECT 1\"\n").unwrap();
    let (code, v, err) = env.run_json(&["--config", "lifeboat.toml", "drill", &id]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["steps"][1]["name"], "check query", "{v}");
    assert!(
        v["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("not run"),
        "{v}"
    );
}
