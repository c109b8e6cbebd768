//! The daemon with every kind of source: a PostgreSQL database (its password in the config's
//! URI), a DuckDB file and a folder of config files, each backed up on schedule and drilled,
//! and the password nowhere in what the daemon shows or logs.

mod common;

use common::daemon::{free_port, token_file, Daemon};
use common::postgres::{PgCluster, PASSWORD, PASSWORD_PCT};
use common::Env;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn duckdb_cli() -> PathBuf {
    let p = std::env::var_os("LIFEBOAT_DUCKDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/duckdb"));
    assert!(
        p.exists(),
        "the DuckDB CLI is missing: set LIFEBOAT_DUCKDB or run scripts/test.sh"
    );
    p
}

#[test]
fn postgres_duckdb_and_files_sources_are_backed_up_and_drilled() {
    let env = Env::new();
    let pg = PgCluster::start();
    pg.create_db("shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders(id int primary key, total numeric); \
         INSERT INTO orders SELECT i, i * 1.5 FROM generate_series(1, 500) i;",
    );
    let duck = env.path("analytics.duckdb");
    let out = std::process::Command::new(duckdb_cli())
        .arg(&duck)
        .args([
            "-c",
            "CREATE TABLE events AS SELECT i AS id FROM range(1000) t(i); CHECKPOINT;",
        ])
        .output()
        .expect("duckdb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = env.path("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("app.env"),
        "DATABASE_PASSWORD=hunter2-secret\nPORT=80\n",
    )
    .unwrap();

    let (tok, token) = token_file(&env, "ops");
    let port = free_port();
    let config = format!(
        r#"repo = "{repo}"
[drill]
query = "SELECT count(*) = 500 FROM orders"
[daemon]
listen = "127.0.0.1:{port}"
[[daemon.token]]
name = "ops"
file = "{tok}"
scopes = ["admin"]
[[source]]
name = "shop"
path = "{pg}"
schedule = "every 1h"
drill = "every 1h"
[[source]]
name = "analytics"
path = "{duck}"
schedule = "every 1h"
drill = "every 1h"
[[source]]
name = "conf"
path = "{conf}"
schedule = "every 1h"
"#,
        repo = env.repo().display(),
        tok = tok.display(),
        pg = pg.url("shop"),
        duck = duck.display(),
        conf = conf.display(),
    );
    env.cmd().args(["repo", "init"]).assert().success();
    let config_path = env.path("lifeboat.toml");
    std::fs::write(&config_path, &config).unwrap();
    let pg_bin = pg.bin_dir().to_str().unwrap().to_string();
    let duck_cli = duckdb_cli().to_str().unwrap().to_string();
    let extra = [
        ("LIFEBOAT_PG_BIN", pg_bin.as_str()),
        ("LIFEBOAT_DUCKDB", duck_cli.as_str()),
    ];
    let mut d = Daemon::start_with(&env, &config_path, port, &extra);
    // Every source backed up at start, the two databases drilled after.
    d.wait_until(
        Duration::from_secs(240),
        "three backups and two drills",
        |d| {
            let s = d.get_json("/api/v1/status", &token);
            let sources = s["sources"].as_array().cloned().unwrap_or_default();
            sources.len() == 3
                && sources.iter().all(|x| x["backups"].as_u64() >= Some(1))
                && sources
                    .iter()
                    .filter(|x| x["last_drill"]["rto_ms"].as_u64().is_some())
                    .count()
                    == 2
        },
    );
    let status = d.get_json("/api/v1/status", &token);
    let by_name = |n: &str| {
        status["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name("shop")["kind"], "postgres", "{status}");
    assert_eq!(by_name("analytics")["kind"], "duckdb", "{status}");
    assert_eq!(by_name("conf")["kind"], "files", "{status}");
    for n in ["shop", "analytics"] {
        assert_eq!(by_name(n)["last_drill"]["ok"], true, "{n}: {status}");
    }
    // The files backup was redacted as a CLI backup is.
    let id = by_name("conf")["last_backup"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.path("conf-restored");
    env.cmd()
        .args(["restore", &id, "--output", out.to_str().unwrap()])
        .assert()
        .success();
    let restored = std::fs::read_to_string(out.join("app.env")).unwrap();
    assert!(!restored.contains("hunter2-secret"), "{restored}");
    assert!(restored.contains("PORT=80"), "{restored}");

    // The PostgreSQL password is nowhere the daemon shows or writes.
    let shown = [
        d.get("/api/v1/status", Some(&token)).text(),
        d.get("/api/v1/sources", Some(&token)).text(),
        d.get("/api/v1/backups", Some(&token)).text(),
        d.get("/api/v1/jobs", Some(&token)).text(),
        d.get("/metrics", Some(&token)).text(),
        d.get("/", Some(&token)).text(),
    ];
    let check = Daemon::command(&env, &config_path)
        .arg("--check-config")
        .env("LIFEBOAT_PG_BIN", &pg_bin)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(d.stop(Duration::from_secs(60)).success());
    let log = d.log_text();
    for (what, text) in shown.iter().map(|t| ("API", t.clone())).chain([
        ("log", log),
        (
            "check-config",
            String::from_utf8_lossy(&check.stdout).into_owned(),
        ),
    ]) {
        for secret in [PASSWORD, PASSWORD_PCT, "s3cret"] {
            assert!(
                !text.contains(secret),
                "the password is in the {what}:\n{text}"
            );
        }
    }
    // The source is shown by its password-less key.
    assert!(
        shown[0].contains("postgres://postgres@127.0.0.1"),
        "{}",
        shown[0]
    );
}
