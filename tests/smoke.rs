mod common;
use common::*;

#[test]
fn backup_restore_round_trip() {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 500));
    let id = env.backup(&db);
    let out = env.path("restored.db");
    env.cmd()
        .args(["restore", &id, "--output", out.to_str().unwrap()])
        .assert()
        .success();
    assert_eq!(dump(&db), dump(&out));
}
