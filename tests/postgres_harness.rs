//! The PostgreSQL test harness (tests/common/postgres.rs) itself: a real server on 127.0.0.1
//! with password auth, varied data, fingerprints that see every row, and nothing left running.

mod common;

use common::postgres::{PgCluster, PASSWORD, PASSWORD_PCT};
use std::net::TcpStream;
use std::time::Instant;

#[test]
fn fill_and_fingerprints() {
    let t = Instant::now();
    let pg = PgCluster::start();
    let started = t.elapsed();
    pg.create_db("shop");
    let filled = pg.fill("shop");
    eprintln!(
        "start {started:?}, start + create_db + fill {:?}, extension {:?}",
        t.elapsed(),
        filled.extension
    );

    let fp = pg.table_fingerprints("shop");
    let rows = |key: &str| {
        fp.get(key)
            .unwrap_or_else(|| panic!("no {key} in {fp:#?}"))
            .0
    };
    assert_eq!(rows("public.pgbench_accounts"), 200_000);
    assert_eq!(rows("public.pgbench_branches"), 2);
    assert_eq!(rows("public.pgbench_history"), 0);
    assert_eq!(rows("app.docs"), 2000);
    assert_eq!(rows("app.sparse"), 1002);
    assert_eq!(rows("app.Mixed Case"), 100);
    assert_eq!(rows("Other Schema.Table.With.Dots"), 50);
    assert_eq!(rows("app.daily_events"), 91 * 3);
    // The partitioned table's rows are in its leaves, each counted once; the parent has none
    // of its own.
    let leaves = [
        rows("app.events_2024_01"),
        rows("app.events_2024_02"),
        rows("app.events_2024_03"),
    ];
    assert_eq!(leaves, [1022, 957, 1021]);
    assert_eq!(leaves.iter().sum::<u64>(), 3000);
    assert!(!fp.contains_key("app.events"), "{fp:#?}");
    assert!(!fp.keys().any(|k| k.starts_with("pg_catalog.")));
    if filled.extension == Some("hstore") {
        assert_eq!(rows("app.attrs"), 200);
    }
    for (key, (_, md5)) in &fp {
        assert_eq!(md5.len(), 32, "{key}: {md5:?}");
    }

    // Stable, and it sees a change to one value of one row (and only in that table).
    assert_eq!(pg.table_fingerprints("shop"), fp);
    pg.psql(
        "shop",
        "UPDATE app.docs SET blob = blob || '\\x00'::bytea WHERE id = 1999",
    );
    let changed = pg.table_fingerprints("shop");
    let differ: Vec<&String> = fp.keys().filter(|k| changed[*k] != fp[*k]).collect();
    assert_eq!(differ, ["app.docs"]);
    assert_eq!(changed["app.docs"].0, 2000);

    let lo = pg.large_object_fingerprint("shop");
    assert_eq!(lo.0, 3);
    assert_eq!(lo.1.len(), 32);
    assert_eq!(pg.large_object_fingerprint("shop"), lo);
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT length(lo_get(content)) FROM app.attachments ORDER BY id"
        ),
        "20\n0\n320000"
    );
    assert_eq!(pg.sequence_values("shop")["app.ticket_seq"], Some(4242));

    // Awkward text comes back as written.
    let body = pg.psql("shop", "SELECT body FROM app.docs WHERE id = 5");
    assert_eq!(
        body,
        "first line\n\tindented with a tab\nback\\slash, \\N and \\. inline\n\\.\n\
         quotes ' \" and unicode: üñíçødé 日本語 🚢 #5\r\nend"
    );

    // The URL carries the percent-encoded password, which the server accepts.
    assert_eq!(common::server::encode(PASSWORD), PASSWORD_PCT);
    let url = pg.url("shop");
    assert_eq!(
        url,
        format!(
            "postgres://postgres:{PASSWORD_PCT}@127.0.0.1:{}/shop",
            pg.port()
        )
    );
    let out = pg
        .client("psql")
        .env_remove("PGPASSWORD")
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            &url,
            "-c",
            "SELECT current_user, current_database()",
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "postgres|shop");

    pg.create_db("scratch");
    let dbs = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database";
    assert_eq!(
        pg.psql("postgres", dbs),
        "postgres,scratch,shop,template0,template1"
    );
    pg.drop_db("scratch");
    assert_eq!(
        pg.psql("postgres", dbs),
        "postgres,shop,template0,template1"
    );
}

/// Password authentication is really on over TCP: a wrong or missing password is refused.
#[test]
fn wrong_password_is_refused() {
    let pg = PgCluster::start();
    assert_eq!(
        pg.psql("postgres", "SHOW password_encryption"),
        "scram-sha-256"
    );
    let psql = |password: Option<&str>| {
        let mut c = pg.client("psql");
        c.env_remove("PGPASSWORD")
            .args(["-X", "-w", "-d", "postgres", "-c", "SELECT 1"]);
        if let Some(p) = password {
            c.env("PGPASSWORD", p);
        }
        c.output().expect("psql")
    };
    let wrong = psql(Some("wrong"));
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("password authentication failed for user \"postgres\""),
        "{stderr}"
    );
    let none = psql(None);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("no password supplied"), "{stderr}");
    assert!(psql(Some(PASSWORD)).status.success());
}

/// Dropping a cluster stops its server (its port refuses connections, its postmaster is gone)
/// and removes its dir, and leaves another cluster running.
#[test]
fn drop_stops_the_server() {
    let a = PgCluster::start();
    let b = PgCluster::start();
    assert_ne!(a.port(), b.port());
    let (port, dir) = (a.port(), a.dir().to_path_buf());
    let pid = a.postmaster_pid().expect("postmaster.pid");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(a);
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "port {port} still accepts connections");
    assert!(!dir.exists(), "{} is left", dir.display());
    // Gone, or a zombie waiting for a parent that does not reap it.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "postmaster {pid} still runs: {state}"
    );
    assert_eq!(b.psql("postgres", "SELECT 1"), "1");
}
