//! Physical PostgreSQL backups against a real server: WAL archived into Lifeboat by the
//! server's own `archive_command`, base backups, point-in-time restores to recorded instants
//! (each restored data directory started and compared with what was recorded), drills, a
//! damaged WAL segment, `wal-push` killed mid-upload and retried by PostgreSQL, and the
//! errors an operator meets (archiving off, no replication privilege, a file pushed with
//! other bytes).

mod common;

use common::postgres::{chown_tree, PgCluster};
use common::s3::S3Server;
use common::server::TestStore;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A cluster archiving its WAL into a Lifeboat repository, and Lifeboat run as the
/// server's user (PostgreSQL runs `archive_command` as itself, so the repository and
/// Lifeboat's state must be that user's).
struct Archiving {
    pg: PgCluster,
    dir: tempfile::TempDir,
    bin: PathBuf,
    repo: String,
    env: Vec<(String, String)>,
}

impl Archiving {
    /// `repo`: a location and what Lifeboat needs to reach it; `None` for a local folder.
    /// `wrap`: the archive command's body, given the plain `wal-push` command line.
    fn start(
        repo: Option<(String, Vec<(String, String)>)>,
        wrap: &dyn Fn(&str, &Path) -> String,
    ) -> Archiving {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pgphys-")
            .tempdir()
            .expect("tempdir");
        // The server's user runs this copy (the build folder may not be theirs to reach).
        let bin = dir.path().join("lifeboat");
        std::fs::copy(common::lifeboat_bin(), &bin).expect("copy lifeboat");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        let (location, extra) =
            repo.unwrap_or_else(|| (dir.path().join("repo").display().to_string(), Vec::new()));
        let mut env = vec![
            ("HOME".to_string(), dir.path().display().to_string()),
            (
                "XDG_STATE_HOME".to_string(),
                dir.path().join("state").display().to_string(),
            ),
        ];
        env.extend(extra);
        let exports: String = env
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        let push = format!("{} --repo '{}' wal-push \"$1\"", bin.display(), location);
        let script = dir.path().join("archive.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\n{exports}{}\n", wrap(&push, dir.path())),
        )
        .expect("archive script");
        let owner = probe_owner();
        if let Some(ids) = owner {
            chown_tree(dir.path(), ids);
        }
        let a = Archiving {
            pg: PgCluster::start_with(&format!(
                "archive_mode = on\nwal_level = replica\narchive_command = '/bin/sh {} %p'\n\
                 archive_timeout = 0\n",
                script.display()
            )),
            dir,
            bin,
            repo: location,
            env,
        };
        a
    }

    fn lifeboat(&self) -> Command {
        self.lifeboat_at(&self.repo)
    }

    fn lifeboat_at(&self, repo: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LIFEBOAT_PG_BIN", self.pg.bin_dir())
            .arg("--repo")
            .arg(repo)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.pg.owner() {
            std::os::unix::process::CommandExt::uid(&mut c, uid);
            std::os::unix::process::CommandExt::gid(&mut c, gid);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.lifeboat().args(args).output().expect("run lifeboat")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lifeboat {args:?} failed ({:?}): {}{}\nserver log: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.pg.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn uri(&self) -> String {
        self.pg.url("")
    }

    fn sql(&self, sql: &str) -> String {
        self.pg.psql("postgres", sql).trim().to_string()
    }

    /// Switch to a new segment and wait until the server has archived the one it closed.
    fn archive_now(&self) {
        let closed = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            // (The last archived file may be a `.backup` label after that segment.)
            if last.get(..24).is_some_and(|seg| seg >= closed.as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "segment {closed} not archived after 60 s (last {last}); log: {}",
                self.pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn base_backup(&self) -> String {
        let out = self.ok(&["--json", "backup", &self.uri(), "--physical"]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("backup json");
        v["id"].as_str().expect("backup id").to_string()
    }

    /// Restore `id` into a new data directory with `target` args, start it on a free port
    /// and return that port.
    fn restore_and_start(&self, id: &str, name: &str, target: &[&str]) -> (PathBuf, u16) {
        let data = self.dir.path().join(name);
        let port = common::postgres::any_free_port();
        let port_s = port.to_string();
        let mut args = vec!["restore", id, "--pgdata"];
        let data_s = data.display().to_string();
        args.push(&data_s);
        args.extend(target);
        args.extend(["--port", &port_s, "--start"]);
        self.ok(&args);
        (data, port)
    }

    fn sql_on(&self, port: u16, sql: &str) -> String {
        let out = self
            .pg
            .client("psql")
            .env("PGPORT", port.to_string())
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql on {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&self, data: &Path) {
        let _ = self
            .pg
            .pg_ctl_on(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The uid/gid the test clusters run as (root's tests run them as `postgres`).
fn probe_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns null or static storage, read at once.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// `2026-12-07 00:09:17.584013+00` → RFC 3339.
fn rfc3339(pg_time: &str) -> String {
    let t = pg_time.trim().replacen(' ', "T", 1);
    match t.strip_suffix("+00") {
        Some(base) => format!("{base}Z"),
        None => t,
    }
}

const DIGEST: &str =
    "SELECT md5(coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '')) FROM ledger";

/// One recorded moment: the time right after a commit, and the ledger's digest then.
struct Moment {
    at: String,
    digest: String,
    xid: String,
}

/// Commits to `ledger`, each followed by the time and the digest, while pgbench writes
/// alongside.
fn record_moments(a: &Archiving, n: usize) -> Vec<Moment> {
    a.sql("CREATE TABLE ledger (id serial PRIMARY KEY, v text NOT NULL)");
    let mut bench =
        a.pg.client("pgbench")
            .args(["-c", "2", "-j", "2", "-T", "600", "-n", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbench");
    let mut moments = Vec::new();
    for i in 0..n {
        let xid = a.sql(&format!(
            "BEGIN; INSERT INTO ledger (v) SELECT md5(random()::text) FROM generate_series(1, {}); \
             UPDATE ledger SET v = md5(v) WHERE id % 5 = {}; SELECT txid_current(); COMMIT;",
            1 + i % 4,
            i % 5
        ));
        let at = rfc3339(&a.sql("SELECT clock_timestamp()"));
        let digest = a.sql(DIGEST);
        moments.push(Moment {
            at,
            digest,
            xid: xid.lines().last().unwrap_or_default().to_string(),
        });
        if i % 10 == 9 {
            a.sql("SELECT pg_switch_wal()");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = bench.kill();
    let _ = bench.wait();
    moments
}

fn pick(n: usize, count: usize) -> Vec<usize> {
    let mut picked: Vec<usize> = (0..count)
        .map(|_| (common::server::random() % n as u64) as usize)
        .collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

fn init_pgbench(a: &Archiving) {
    let out =
        a.pg.client("pgbench")
            .args(["-i", "-s", "2", "-q", "postgres"])
            .output()
            .expect("pgbench -i");
    assert!(
        out.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn plain(push: &str, _: &Path) -> String {
    format!("exec {push}")
}

#[test]
fn point_in_time_restores_are_exact_and_drills_name_a_damaged_segment() {
    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    init_pgbench(&a);
    let base = a.base_backup();
    let moments = record_moments(&a, 40);
    a.archive_now();
    let final_digest = a.sql(DIGEST);

    // The manifest's facts.
    let show: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "show", &base])).expect("show json");
    let phys = &show["postgres"]["physical"];
    assert_eq!(show["postgres"]["dump_format"], "physical", "{show}");
    assert_eq!(phys["timeline"], 1, "{show}");
    assert_eq!(
        phys["system_id"].as_str().unwrap(),
        a.sql("SELECT system_identifier FROM pg_control_system()"),
        "{show}"
    );
    assert!(phys["start_lsn"].as_str().unwrap().contains('/'), "{show}");
    let text = a.ok(&["show", &base]);
    assert!(
        text.contains("system id") && text.contains("timeline 1"),
        "{text}"
    );
    // verify rebuilds it and checks it against PostgreSQL's own manifest and the archive.
    let text = a.ok(&["verify", &base]);
    assert!(
        text.contains("files match PostgreSQL's backup manifest")
            && text.contains("WAL the backup needs"),
        "{text}"
    );
    // It is a data directory, not a dump.
    let out = a.run(&["restore", &base, "--output", "x.dump"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pgdata"));

    // Random recorded instants, each restored into its own data directory and started.
    for (n, i) in pick(moments.len(), 6).into_iter().enumerate() {
        let m = &moments[i];
        let (data, port) = a.restore_and_start(&base, &format!("at{n}"), &["--at", &m.at]);
        let got = a.sql_on(port, DIGEST);
        assert_eq!(got, m.digest, "restore to {} (commit {i}) differs", m.at);
        assert_eq!(a.sql_on(port, "SELECT pg_is_in_recovery()"), "f");
        // Nothing of the moments after it.
        let rows = a.sql_on(port, "SELECT count(*) FROM ledger");
        let want: usize = (0..=i).map(|k| 1 + k % 4).sum();
        assert_eq!(rows, want.to_string(), "rows at moment {i}");
        a.stop(&data);
    }
    // A transaction id: the state right after that transaction.
    let m = &moments[moments.len() / 2];
    let (data, port) = a.restore_and_start(&base, "xid", &["--xid", &m.xid]);
    assert_eq!(a.sql_on(port, DIGEST), m.digest, "restore to xid {}", m.xid);
    a.stop(&data);
    // The end of the archive.
    let (data, port) = a.restore_and_start(&base, "latest", &["--at", "latest"]);
    assert_eq!(
        a.sql_on(port, DIGEST),
        final_digest,
        "restore to the end of the archive"
    );
    a.stop(&data);
    // A non-empty folder is refused, untouched.
    let busy = a.dir.path().join("latest").display().to_string();
    let out = a.run(&["restore", &base, "--pgdata", &busy]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert!(Path::new(&busy).join("PG_VERSION").exists());

    // The window: this base backup, consistent, restorable to the newest segment.
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).expect("timeline json");
    let b = &t["base_backups"][0];
    assert_eq!(b["id"], base.as_str(), "{t}");
    assert_eq!(b["consistent"], true, "{t}");
    assert!(b["broken_at"].is_null(), "{t}");
    assert_eq!(t["timelines"][0]["gaps"], serde_json::json!([]), "{t}");
    assert!(t["newest_age_s"].as_i64().unwrap() < 600, "{t}");

    // A drill replays everything and passes; the record says so.
    let out = a.ok(&["drill", &base, "--physical"]);
    assert!(out.contains("OK: this backup restores"), "{out}");
    let listed = a.ok(&["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&base) && l.contains("drill")),
        "{listed}"
    );

    // A damaged segment after the base: the drill fails and names it.
    let system_id = phys["system_id"].as_str().unwrap();
    let wal_dir = Path::new(&a.repo).join("pgwal").join(system_id);
    let victim = t["timelines"][0]["last_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let path = wal_dir.join(&victim);
    let mut bytes = std::fs::read(&path).expect("read segment object");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).expect("damage segment");
    let out = a.run(&["drill", &base]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&victim) && text.contains("damaged"), "{text}");
    // `repo check` sees nothing wrong without reading; reading, it names the segment.
    a.ok(&["repo", "check"]);
    let out = a.run(&["repo", "check", "--read-data"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains(&victim) && text.contains(&base), "{text}");
    // wal-fetch of it: 128 + 4, so PostgreSQL stops recovery instead of ending it early.
    let dest = a.dir.path().join("fetched");
    let pgdata = a.pg.dir().join("data").display().to_string();
    let fetch = |repo: &str, file: &str| -> (Option<i32>, String) {
        let out = a
            .lifeboat_at(repo)
            .args([
                "wal-fetch",
                file,
                &dest.display().to_string(),
                "--pgdata",
                &pgdata,
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = fetch(&a.repo, &victim);
    assert_eq!(code, Some(132), "{err}");
    assert!(!dest.exists());
    // A repository that is not there (a mount gone): a failure, not "not archived".
    let gone = a.dir.path().join("no-such-repo").display().to_string();
    let (code, err) = fetch(&gone, &victim);
    assert_eq!(code, Some(131), "{err}");
    // Even a usage error is above 125.
    let out = a.run(&["wal-fetch", "--no-such-flag"]);
    assert!(out.status.code().unwrap_or(0) > 125, "{:?}", out.status);
    // A file the archive does not hold: 1, at once.
    let (code, err) = fetch(&a.repo, "0000000900000000000000AA");
    assert_eq!(code, Some(1), "{err}");
}

#[test]
fn archiving_and_restore_through_an_s3_server() {
    let s3 = S3Server::start();
    let env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let a = Archiving::start(Some((s3.url("pg"), env)), &plain);
    a.ok(&["repo", "init"]);
    init_pgbench(&a);
    let base = a.base_backup();
    let moments = record_moments(&a, 12);
    a.archive_now();
    let m = &moments[pick(moments.len(), 1)[0]];
    let (data, port) = a.restore_and_start(&base, "s3at", &["--at", &m.at]);
    assert_eq!(
        a.sql_on(port, DIGEST),
        m.digest,
        "restore to {} from S3",
        m.at
    );
    a.stop(&data);
    let keys = s3.list(&s3.bucket, "pg/pgwal/");
    assert!(keys.len() > 3, "{keys:?}");
}

#[test]
fn wal_push_killed_mid_upload_is_retried_and_nothing_is_lost() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is needed (scripts/test.sh installs it)"
    );
    // The first archive_command is killed (SIGKILL) as it links its first object into
    // place; PostgreSQL sees the failure and calls again.
    let wrap = |push: &str, dir: &Path| {
        let d = dir.display();
        format!(
            "if [ ! -e {d}/killed-once ]; then\n  touch {d}/killed-once\n  \
             strace -f -qq -y -o {d}/strace.log -e trace=linkat \
             -e inject=linkat:signal=SIGKILL:when=1 {push}\n  exit 1\nfi\nexec {push}"
        )
    };
    let a = Archiving::start(None, &wrap);
    a.ok(&["repo", "init"]);
    let base = a.base_backup();
    let moments = record_moments(&a, 15);
    a.archive_now();
    let log = a.dir.path().join("strace.log");
    assert!(
        common::killed_in(&log, "linkat"),
        "the kill did not land: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let calls = common::strace_calls(&log, Path::new(&a.repo));
    assert_eq!(
        calls.last().map(|c| c.folder.as_str()),
        Some("pgwal"),
        "{calls:?}"
    );
    // Every segment from the base on is there, and the end state restores exactly.
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).expect("timeline json");
    assert_eq!(t["timelines"][0]["gaps"], serde_json::json!([]), "{t}");
    assert_eq!(t["base_backups"][0]["consistent"], true, "{t}");
    let last = moments.last().unwrap();
    let (data, port) = a.restore_and_start(&base, "after-kill", &["--at", "latest"]);
    assert_eq!(a.sql_on(port, DIGEST), last.digest);
    a.stop(&data);
    let check = a.ok(&["repo", "check"]);
    assert!(!check.contains("ERROR"), "{check}");
}

#[test]
fn operator_errors_are_named() {
    // Archiving off: no base backup, nothing committed.
    let pg = PgCluster::start();
    let env = common::Env::new();
    let out = env
        .std_cmd()
        .args([
            "--repo",
            &env.repo().display().to_string(),
            "backup",
            &pg.url(""),
            "--physical",
            "--init",
        ])
        .env("LIFEBOAT_PG_BIN", pg.bin_dir())
        .output()
        .expect("lifeboat");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("archive_mode = off") && err.contains("wal-push"),
        "{err}"
    );
    assert!(!err.contains(common::postgres::PASSWORD), "{err}");

    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    // A role without REPLICATION.
    a.sql("CREATE ROLE clerk LOGIN PASSWORD 'pw1'");
    let uri = format!("postgres://clerk:pw1@127.0.0.1:{}/postgres", a.pg.port());
    let out = a.run(&["backup", &uri, "--physical"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("REPLICATION"), "{err}");
    let listed = a.ok(&["--json", "list"]);
    assert!(!listed.contains("physical"), "{listed}");

    // wal-push: the same bytes twice succeed; other bytes under the name fail, untouched.
    a.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    a.archive_now();
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).expect("timeline json");
    let seg = t["timelines"][0]["last_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let fake = a.dir.path().join("fake/pg_wal");
    std::fs::create_dir_all(&fake).unwrap();
    if let Some(ids) = a.pg.owner() {
        chown_tree(&a.dir.path().join("fake"), ids);
    }
    let pgdata = a.pg.dir().join("data").display().to_string();
    let copy = fake.join(&seg).display().to_string();
    a.ok(&["wal-fetch", &seg, &copy, "--pgdata", &pgdata]);
    let original = std::fs::read(&copy).unwrap();
    a.ok(&["wal-push", &copy, "--pgdata", &pgdata]);
    let mut changed = original.clone();
    let at = changed.len() - 100;
    changed[at] ^= 1;
    std::fs::write(&copy, &changed).unwrap();
    let out = a.run(&["wal-push", &copy, "--pgdata", &pgdata]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("other bytes") && err.contains(&seg), "{err}");
    let back = a.dir.path().join("back");
    a.ok(&[
        "wal-fetch",
        &seg,
        &back.display().to_string(),
        "--pgdata",
        &pgdata,
    ]);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        original,
        "the archived segment changed"
    );
}

#[test]
fn base_backups_store_changed_pages_and_retention_keeps_whole_chains() {
    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    init_pgbench(&a);
    let backup = |a: &Archiving| -> serde_json::Value {
        let out = a.ok(&["--json", "backup", &a.uri(), "--physical"]);
        serde_json::from_str(out.trim()).expect("backup json")
    };
    backup(&a);
    a.sql("CREATE TABLE ledger (id serial PRIMARY KEY, v text NOT NULL)");
    a.sql("INSERT INTO ledger (v) VALUES ('one'), ('two')");
    a.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 1000 = 0");
    a.archive_now();
    let second = backup(&a);
    // Block level: the second base stores the pages that changed, not the relation files.
    let total = second["logical_bytes"].as_u64().unwrap();
    let new = second["new_raw_bytes"].as_u64().unwrap();
    assert!(total > 20 << 20, "{second}");
    assert!(
        new * 10 < total,
        "the second base backup stored {new} of {total} bytes anew: {second}"
    );
    a.sql("INSERT INTO ledger (v) VALUES ('three')");
    a.archive_now();
    let final_digest = a.sql(DIGEST);

    // A replica gets the archive too, and restores from it alone.
    let replica = a.dir.path().join("replica").display().to_string();
    a.ok(&["replica", "add", &replica]);

    // Forget the first base backup: prune deletes only the WAL before the second's start.
    let t0: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).expect("timeline");
    let segments_before = t0["timelines"][0]["segments"].as_u64().unwrap();
    a.ok(&["forget", "--keep-last", "1", "--prune"]);
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).expect("timeline");
    let bases = t["base_backups"].as_array().unwrap();
    assert_eq!(bases.len(), 1, "{t}");
    assert_eq!(bases[0]["id"], second["id"], "{t}");
    assert_eq!(bases[0]["consistent"], true, "{t}");
    let first_left = t["timelines"][0]["first_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let show: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "show", second["id"].as_str().unwrap()])).unwrap();
    assert_eq!(
        first_left,
        show["postgres"]["physical"]["start_wal"].as_str().unwrap(),
        "prune must keep everything from the kept base's start on, and nothing before: {t}"
    );
    assert!(
        t["timelines"][0]["segments"].as_u64().unwrap() < segments_before,
        "{t0}\n{t}"
    );
    let id = second["id"].as_str().unwrap();
    let (data, port) = a.restore_and_start(id, "kept", &["--at", "latest"]);
    assert_eq!(a.sql_on(port, DIGEST), final_digest);
    a.stop(&data);

    // From the replica alone (the primary gone).
    std::fs::rename(&a.repo, a.dir.path().join("primary-gone")).unwrap();
    let data = a.dir.path().join("from-replica");
    let port = common::postgres::any_free_port().to_string();
    let out = a
        .lifeboat_at(&replica)
        .args(["--accept-change", "restore", id, "--pgdata"])
        .arg(&data)
        .args(["--at", "latest", "--port", &port, "--start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.sql_on(port.parse().unwrap(), DIGEST), final_digest);
    a.stop(&data);
}

#[test]
fn an_encrypted_archive_survives_a_full_key_rotation() {
    let pw = |p: &str| ("LIFEBOAT_PASSWORD".to_string(), p.to_string());
    let repo_dir = tempfile::Builder::new()
        .prefix("lifeboat-pgenc-")
        .tempdir()
        .unwrap();
    let location = repo_dir.path().join("repo").display().to_string();
    if let Some(ids) = probe_owner() {
        chown_tree(repo_dir.path(), ids);
    }
    let a = Archiving::start(Some((location.clone(), vec![pw("first secret")])), &plain);
    a.ok(&["repo", "init", "--encrypt"]);
    let base = a.base_backup();
    let moments = record_moments(&a, 8);
    a.archive_now();
    // Nothing of the WAL is readable in the repository.
    let system_id = a.sql("SELECT system_identifier FROM pg_control_system()");
    let wal_dir = Path::new(&location).join("pgwal").join(&system_id);
    let names: Vec<_> = std::fs::read_dir(&wal_dir).unwrap().flatten().collect();
    assert!(names.len() > 2, "{names:?}");
    let needle = moments[0].digest.as_bytes();
    for n in &names {
        let bytes = std::fs::read(n.path()).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
    let out = a
        .lifeboat()
        .args(["key", "rotate", "--full", "--yes"])
        .env("LIFEBOAT_NEW_PASSWORD", "second secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (Not the last moment: recovery must see a commit after the target to stop there.)
    let m = &moments[moments.len() - 2];
    let data = a.dir.path().join("rotated");
    let port = common::postgres::any_free_port().to_string();
    let out = a
        .lifeboat()
        .env("LIFEBOAT_PASSWORD", "second secret")
        .args(["restore", &base, "--pgdata"])
        .arg(&data)
        .args(["--at", &m.at, "--port", &port, "--start"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        a.pg.log()
    );
    assert_eq!(a.sql_on(port.parse().unwrap(), DIGEST), m.digest);
    a.stop(&data);
}

#[test]
fn gaps_in_the_archive_are_named_with_the_window_they_break() {
    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    let first = a.base_backup();
    a.sql("CREATE TABLE ledger (id serial PRIMARY KEY, v text NOT NULL)");
    for i in 0..4 {
        a.sql(&format!("INSERT INTO ledger (v) VALUES ('row {i}')"));
        a.archive_now();
    }
    let second = a.base_backup();
    a.archive_now();
    let show = |id: &str| -> serde_json::Value {
        serde_json::from_str(&a.ok(&["--json", "show", id])).unwrap()
    };
    let (s1, s2) = (show(&first), show(&second));
    let p1 = &s1["postgres"]["physical"];
    let p2 = &s2["postgres"]["physical"];
    let wal_dir = Path::new(&a.repo)
        .join("pgwal")
        .join(p1["system_id"].as_str().unwrap());
    // A segment after the first base backup's end (and before the second's start) goes.
    let after_first = {
        let stop = p1["stop_wal"].as_str().unwrap();
        let next = u64::from_str_radix(&stop[16..], 16).unwrap() + 1;
        format!("{}{:08X}", &stop[..16], next)
    };
    assert!(
        after_first.as_str() < p2["start_wal"].as_str().unwrap(),
        "{s1}{s2}"
    );
    std::fs::remove_file(wal_dir.join(&after_first)).expect("remove a segment");
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).unwrap();
    let gaps = &t["timelines"][0]["gaps"];
    assert_eq!(
        gaps,
        &serde_json::json!([[after_first, after_first]]),
        "{t}"
    );
    let b1 = t["base_backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == first.as_str())
        .unwrap();
    assert_eq!(b1["consistent"], true, "{t}");
    assert_eq!(b1["broken_at"], after_first.as_str(), "{t}");
    let text = a.ok(&["timeline", &a.uri()]);
    assert!(
        text.contains("GAP") && text.contains(&after_first),
        "{text}"
    );
    let out = a.run(&["repo", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&after_first) && text.contains(&first),
        "{text}"
    );
    // Restoring the first backup says where its window ends.
    let data = a.dir.path().join("gap").display().to_string();
    let out = a.run(&["restore", &first, "--pgdata", &data]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains(&after_first),
        "{err}"
    );

    // The second base backup's own WAL goes: it cannot be restored, and nothing is written.
    std::fs::remove_file(wal_dir.join(p2["start_wal"].as_str().unwrap())).unwrap();
    let out = a.run(&["timeline", &a.uri()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("NOT RESTORABLE"), "{text}");
    let data = a.dir.path().join("broken");
    let out = a.run(&["restore", &second, "--pgdata", &data.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains(p2["start_wal"].as_str().unwrap()), "{err}");
    assert!(!data.exists());
    let out = a.run(&["drill", &second]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(p2["start_wal"].as_str().unwrap()));
}

#[test]
fn a_promoted_copy_archives_its_new_timeline() {
    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    let base = a.base_backup();
    let moments = record_moments(&a, 6);
    a.archive_now();
    // Restored with archiving kept on (it replaces the original), to a moment in the
    // middle: it promotes to timeline 2 and archives into the same repository.
    let m = &moments[2];
    let (data, port) = a.restore_and_start(&base, "promoted", &["--at", &m.at, "--archive"]);
    a.sql_on(port, "INSERT INTO ledger (v) VALUES ('after promotion')");
    let closed = a.sql_on(port, "SELECT pg_walfile_name(pg_switch_wal())");
    assert!(closed.starts_with("00000002"), "{closed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = a.sql_on(
            port,
            "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count FROM pg_stat_archiver",
        );
        if last.get(..24).is_some_and(|seg| seg >= closed.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "timeline 2 not archived: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = a.sql_on(port, "SELECT failed_count FROM pg_stat_archiver");
    assert_eq!(failed, "0", "the new timeline's first segment was refused");
    a.stop(&data);
    let t: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "timeline", &a.uri()])).unwrap();
    let tls: Vec<u64> = t["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tl| tl["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tls, vec![1, 2], "{t}");
    // The base backup still drills (on its own timeline) and restores along timeline 1.
    let out = a.ok(&["drill", &base]);
    assert!(out.contains("OK"), "{out}");
    let (data, port) = a.restore_and_start(&base, "tl1", &["--at", "latest", "--timeline", "1"]);
    assert_eq!(a.sql_on(port, DIGEST), moments.last().unwrap().digest);
    a.stop(&data);
}

#[test]
fn tablespaces_come_back_inside_the_data_directory() {
    let a = Archiving::start(None, &plain);
    a.ok(&["repo", "init"]);
    let ts = a.dir.path().join("ts_one");
    std::fs::create_dir(&ts).unwrap();
    if let Some(ids) = a.pg.owner() {
        chown_tree(&ts, ids);
    }
    a.sql(&format!(
        "CREATE TABLESPACE ts_one LOCATION '{}'",
        ts.display()
    ));
    a.sql("CREATE TABLE ledger (id serial PRIMARY KEY, v text NOT NULL) TABLESPACE ts_one");
    a.sql("INSERT INTO ledger (v) SELECT md5(g::text) FROM generate_series(1, 5000) g");
    let base = a.base_backup();
    a.sql("INSERT INTO ledger (v) VALUES ('after the backup')");
    a.archive_now();
    let want = a.sql(DIGEST);
    let show: serde_json::Value = serde_json::from_str(&a.ok(&["--json", "show", &base])).unwrap();
    let spaces = &show["postgres"]["physical"]["tablespaces"];
    assert_eq!(spaces[0]["location"], ts.display().to_string(), "{show}");
    let oid = spaces[0]["oid"].as_u64().unwrap();
    let (data, port) = a.restore_and_start(&base, "with-ts", &["--at", "latest"]);
    assert_eq!(a.sql_on(port, DIGEST), want);
    // Inside the restored data directory, not over the original's location.
    let inside = data.join("pg_tblspc").join(oid.to_string());
    assert!(
        std::fs::symlink_metadata(&inside).unwrap().is_dir(),
        "{inside:?}"
    );
    a.stop(&data);
    assert_eq!(a.sql("SELECT count(*) FROM ledger"), "5001");
}
