//! A throwaway PostgreSQL server for tests: `PgCluster::start()` runs initdb and the server in a
//! temp dir, listening on 127.0.0.1 with scram-sha-256 password auth; dropping it stops the
//! server and removes the dir. A missing PostgreSQL fails the test, never skips it.
//!
//! initdb and the server refuse to run as root: as root (CI, dev containers), they run as the
//! `postgres` system user the Debian package creates, which then owns the temp dir.

use super::server::{encode, port_free, PortPool};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The password of the `postgres` role. Its space, `@`, `:`, `/`, `%`, `?` and `#` must be
/// percent-encoded in a URL (`PASSWORD_PCT`), so URL handling is tested too.
pub const PASSWORD: &str = "s3cret Pg@pw:/%?#";
/// `PASSWORD` percent-encoded, as it appears in `PgCluster::url`.
pub const PASSWORD_PCT: &str = "s3cret%20Pg%40pw%3A%2F%25%3F%23";
/// The superuser initdb creates, the one every client connects as.
pub const USER: &str = "postgres";

const INSTALL_HINT: &str = "install PostgreSQL (apt-get install postgresql), or set \
     LIFEBOAT_PG_BIN to a folder with initdb, pg_ctl and postgres; scripts/test.sh installs it";
/// Startups retried on another port when the server cannot bind its port (taken meanwhile).
const START_ATTEMPTS: u32 = 5;

/// Ports of the clusters of this test process (tests run in parallel threads).
static PORTS: PortPool = PortPool::new();

/// The folder with PostgreSQL's server programs: `$LIFEBOAT_PG_BIN` if set, else the newest
/// `/usr/lib/postgresql/<major>/bin` holding `initdb` (Debian puts neither initdb nor pg_ctl
/// on PATH). Panics with what to install when there is none.
pub fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIFEBOAT_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "LIFEBOAT_PG_BIN={} holds no initdb: {INSTALL_HINT}",
            dir.display()
        );
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => bin,
        None => panic!("no /usr/lib/postgresql/<major>/bin/initdb: {INSTALL_HINT}"),
    }
}

/// The uid and gid to run initdb and the server as: `None` when not root (run as ourselves),
/// else the `postgres` system user's.
fn server_user() -> Option<(u32, u32)> {
    static USER_IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *USER_IDS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = CString::new("postgres").expect("no NUL");
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; getpwnam_r (unlike getpwnam) is safe
        // with other test threads looking users up.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        assert!(
            rc == 0 && !found.is_null(),
            "running as root, and initdb refuses root: the server runs as the `postgres` \
             system user, which does not exist: {INSTALL_HINT}"
        );
        Some((pw.pw_uid, pw.pw_gid))
    })
}

/// `path` and everything below it owned by `uid:gid`.
pub fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            chown_tree(&entry.path(), (uid, gid));
        }
    }
}

/// What `fill` created besides its fixed tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Filled {
    /// The contrib extension created (`hstore`, else `pg_trgm`), `None` if neither is installed.
    pub extension: Option<&'static str>,
}

/// A PostgreSQL server of its own, in a temp dir, on 127.0.0.1. Dropping it stops the server
/// (`pg_ctl -m immediate stop`, else SIGKILL to the postmaster) and removes the dir.
pub struct PgCluster {
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    // Last: removed after `drop` has stopped the server.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// initdb and start a server; panics with initdb's output or the server's log if it cannot.
    pub fn start() -> PgCluster {
        Self::start_with("")
    }

    /// `start`, with `extra` appended to postgresql.conf before the server starts (WAL
    /// archiving, say).
    pub fn start_with(extra: &str) -> PgCluster {
        let bin = pg_bin();
        let owner = server_user();
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .expect("tempdir for PostgreSQL");
        std::fs::create_dir(dir.path().join("sock")).expect("socket dir");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).expect("password file");
        if let Some(ids) = owner {
            // tempfile makes the dir 0700 root: the server's user must own its tree.
            chown_tree(dir.path(), ids);
        }
        let initdb = Self::server_cmd(&bin, "initdb", dir.path(), owner)
            .args(["-D", "data", "-U", USER, "-E", "UTF8", "--no-locale"])
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap_or_else(|e| panic!("run {}/initdb: {e}", bin.display()));
        assert!(
            initdb.status.success(),
            "initdb failed{}:\n{}{}",
            match owner {
                Some(_) => format!(
                    " (run as the postgres user, which must be able to reach {})",
                    dir.path().display()
                ),
                None => String::new(),
            },
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        std::fs::remove_file(&pwfile).expect("remove password file");
        let conf = dir.path().join("data/postgresql.conf");
        append(
            &conf,
            &format!(
                "\n# lifeboat test cluster\n\
                 listen_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{sock}'\n\
                 # Throwaway data: durability only costs time.\n\
                 fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n\
                 # pg_dump -j 4 and pg_restore -j 4 (5 each) alongside the test's own.\n\
                 max_connections = 50\n\
                 shared_buffers = 32MB\n\
                 # Timestamps print the same whatever the machine's zone.\n\
                 timezone = 'UTC'\n\
                 log_timezone = 'UTC'\n\
                 # No background work competing with the test on small CI machines.\n\
                 autovacuum = off\n{extra}\n",
                sock = dir.path().join("sock").display()
            ),
        );
        let mut cluster = PgCluster {
            bin,
            port: 0,
            owner,
            dir,
        };
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = PORTS
                .reserve(&any_free_port, &port_free)
                .expect("found no free port on 127.0.0.1");
            // The last `port` line wins, so a retry only appends another.
            append(&conf, &format!("port = {port}\n"));
            // pg_ctl appends to the log: what this attempt wrote starts here.
            let log_start =
                std::fs::metadata(cluster.dir.path().join("log")).map_or(0, |m| m.len());
            let out = cluster
                .pg_ctl()
                .args(["-w", "-t", "60", "-l", "log", "start"])
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                cluster.port = port;
                return cluster;
            }
            PORTS.release(port);
            let log = std::fs::read(cluster.dir.path().join("log")).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            last_failure = format!(
                "attempt {attempt}: pg_ctl start (port {port}) failed:\n{}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // A port taken between our check and the server's bind: try another. Anything
            // else will not get better.
            if !log.contains("could not bind") && !log.contains("could not create any TCP/IP") {
                cluster.stop();
                panic!("{last_failure}");
            }
        }
        cluster.stop();
        panic!("PostgreSQL failed to start {START_ATTEMPTS} times; {last_failure}");
    }

    /// A server program (`initdb`, `pg_ctl`) run as the server's user in `dir`, with nothing
    /// of ours in its environment.
    fn server_cmd(bin: &Path, program: &str, dir: &Path, owner: Option<(u32, u32)>) -> Command {
        let mut c = Command::new(bin.join(program));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("LANG", "C")
            .current_dir(dir)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = owner {
            // std drops root's supplementary groups too when it changes the uid.
            c.uid(uid).gid(gid);
        }
        c
    }

    fn pg_ctl(&self) -> Command {
        let mut c = Self::server_cmd(&self.bin, "pg_ctl", self.dir.path(), self.owner);
        c.args(["-D", "data"]);
        c
    }

    /// The uid and gid the server runs as, when not the test's own.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// `pg_ctl -D <data> <args>` as the server's user (for a restored data directory).
    pub fn pg_ctl_on(&self, data: &Path) -> Command {
        let mut c = Self::server_cmd(&self.bin, "pg_ctl", self.dir.path(), self.owner);
        c.arg("-D").arg(data);
        c
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder of the server's programs (`pg_bin()` at start).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's temp dir (`data`, `sock`, `log`); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the server's log, for a failing test's message.
    pub fn log(&self) -> String {
        let log = std::fs::read(self.dir.path().join("log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(8000)..]).into_owned()
    }

    /// The postmaster's pid, from `data/postmaster.pid` (`None` once it has stopped).
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// `postgres://postgres:<password, percent-encoded>@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD_PCT}@127.0.0.1:{}/{}",
            self.port,
            encode(db)
        )
    }

    /// `url(db)` without the password, for use with `PGPASSWORD` or a password file.
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{}", self.port, encode(db))
    }

    /// PGHOST, PGPORT and PGUSER for this server; no password.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), USER.into()),
        ]
    }

    /// A client program (`psql`, `pgbench`, ...) of the server's version, connecting over TCP
    /// with the password, with nothing else of ours in its environment.
    pub fn client(&self, program: &str) -> Command {
        let own = self.bin.join(program);
        let path = if own.is_file() {
            own
        } else {
            // Debian's wrappers, which pick the newest installed version.
            Path::new("/usr/bin").join(program)
        };
        let mut c = Command::new(path);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(self.env())
            .env("PGPASSWORD", PASSWORD)
            .env("PGCLIENTENCODING", "UTF8")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        c
    }

    /// Run `sql` (any number of statements, and psql's backslash commands) in `db` through
    /// psql; its unaligned, tuples-only output trimmed, or psql's stderr if it failed.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut child = self
            .client("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db])
            // A field separator no name or test value contains.
            .args(["-F", "\u{1f}", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        // Fed from another thread: psql may fill its stdout before it has read all of `sql`.
        let sql = sql.to_owned();
        let feeder = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
        let out: Output = child.wait_with_output().expect("wait for psql");
        // psql stops reading at the first error (ON_ERROR_STOP): a broken pipe is then normal.
        let _ = feeder.join();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `try_psql`, panicking with psql's stderr (and the server's log) if it failed.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| {
            panic!(
                "psql in {db} failed: {e}\nSQL: {sql}\nserver log:\n{}",
                self.log()
            )
        })
    }

    pub fn create_db(&self, name: &str) {
        self.psql(USER, &format!("CREATE DATABASE {}", quote_ident(name)));
    }

    pub fn drop_db(&self, name: &str) {
        self.psql(
            USER,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        );
    }

    /// Fill `db` with varied data: pgbench's tables (scale 2, 200,000 accounts) and the
    /// schemas `app` and `"Other Schema"` (see `FILL_SQL`), plus a contrib extension if one
    /// is installed.
    pub fn fill(&self, db: &str) -> Filled {
        let out = self
            .client("pgbench")
            .args(["-i", "-s", "2", "-q", db])
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench -i failed:\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.psql(db, FILL_SQL);
        // contrib is a separate package on some systems: whichever is there.
        let extension = if self
            .try_psql(db, "CREATE EXTENSION IF NOT EXISTS hstore")
            .is_ok()
        {
            self.psql(
                db,
                "CREATE TABLE app.attrs (id integer PRIMARY KEY, h hstore);
                 INSERT INTO app.attrs SELECT i, hstore(ARRAY['k', 'n', 'odd key=>'],
                     ARRAY['v' || i, i::text, CASE WHEN i % 2 = 0 THEN NULL ELSE 'x' END])
                 FROM generate_series(1, 200) i;",
            );
            Some("hstore")
        } else if self
            .try_psql(db, "CREATE EXTENSION IF NOT EXISTS pg_trgm")
            .is_ok()
        {
            self.psql(
                db,
                "CREATE INDEX docs_title_trgm ON app.docs USING gin (title gin_trgm_ops)",
            );
            Some("pg_trgm")
        } else {
            None
        };
        Filled { extension }
    }

    /// For every table with rows of its own (ordinary tables, partitions, populated
    /// materialized views; not partitioned parents, not extension members) outside the
    /// system schemas, keyed `schema.table` (names unquoted): its row count and an
    /// order-independent md5 of its rows' text.
    pub fn table_fingerprints(&self, db: &str) -> BTreeMap<String, (u64, String)> {
        // One query per table, generated server-side (format %I quotes names) and run by \gexec.
        let out = self.psql(
            db,
            r"SELECT format('SELECT %L, %L, count(*), md5(coalesce(string_agg(md5(lifeboat_row::text), '''' ORDER BY md5(lifeboat_row::text)), '''')) FROM %I.%I lifeboat_row', n.nspname, c.relname, n.nspname, c.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'm') AND c.relispopulated
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY n.nspname, c.relname
              \gexec",
        );
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\u{1f}').collect();
                assert_eq!(f.len(), 4, "fingerprint line {l:?}");
                let rows = f[2].parse().expect("row count");
                (format!("{}.{}", f[0], f[1]), (rows, f[3].to_string()))
            })
            .collect()
    }

    /// The large objects of `db`: how many, and an md5 of their oids and contents (pg_restore
    /// keeps the oids, so they are part of it).
    pub fn large_object_fingerprint(&self, db: &str) -> (u64, String) {
        let out = self.psql(
            db,
            "SELECT count(*), md5(coalesce(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid), ''))
             FROM pg_largeobject_metadata",
        );
        let (n, md5) = out.split_once('\u{1f}').expect("count and md5");
        (n.parse().expect("large object count"), md5.to_string())
    }

    /// Every sequence of `db` (`schema.sequence`) with its last value (`None` if never used).
    pub fn sequence_values(&self, db: &str) -> BTreeMap<String, Option<i64>> {
        let out = self.psql(
            db,
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
        );
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\u{1f}').collect();
                assert_eq!(f.len(), 3, "sequence line {l:?}");
                let value = (!f[2].is_empty()).then(|| f[2].parse().expect("last_value"));
                (format!("{}.{}", f[0], f[1]), value)
            })
            .collect()
    }

    /// Stop the server now: `pg_ctl -m immediate stop`, else SIGKILL to the postmaster.
    fn stop(&mut self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let stopped = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // SAFETY: kill has no memory preconditions; `pid` is our server's postmaster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: signal 0 only checks that the process exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        if self.port != 0 {
            PORTS.release(self.port);
        }
        // `dir` is removed after this, when the fields are dropped.
    }
}

/// A port the kernel had free on 127.0.0.1 a moment ago (bound to port 0, then released).
pub fn any_free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// `name` as an SQL identifier: double-quoted, inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schemas `app` and `"Other Schema"`: the types and objects a dump and restore must
/// carry, with awkward values (COPY's `\N` and `\.`, tabs, CR LF, every byte, NaN, infinity,
/// JSON null next to SQL NULL, '' next to NULL, TOASTed values). Deterministic: values come
/// from the row number, "random" bytes from its hashes.
pub const FILL_SQL: &str = r#"
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');

CREATE TABLE app.customers (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    mood app.mood,
    updated_at timestamptz
);
INSERT INTO app.customers
SELECT i, 'Customer ' || i, 'c' || i || '@example.com',
       (ARRAY['sad', 'ok', 'happy'])[i % 3 + 1]::app.mood,
       timestamptz '2020-02-29 12:00:00+00' + i * interval '1 day'
FROM generate_series(1, 500) i;

CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON app.customers
    FOR EACH ROW EXECUTE FUNCTION app.touch();

CREATE TABLE app.orders (
    id bigserial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES app.customers (id),
    total numeric(40, 20) NOT NULL CHECK (total >= 0),
    cents bigint GENERATED ALWAYS AS ((total * 100)::bigint) STORED,
    placed_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON app.orders (customer_id, placed_at);
INSERT INTO app.orders (customer_id, total, placed_at)
SELECT i % 500 + 1, i::numeric * 1234567.891 / 7,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '37 minutes 13.123456 seconds'
FROM generate_series(1, 5000) i;

CREATE TABLE app.docs (
    id integer PRIMARY KEY,
    title text NOT NULL,
    body text,
    meta jsonb,
    blob bytea,
    ints integer[],
    tags text[],
    big numeric,
    at timestamptz,
    day date,
    span interval,
    uid uuid,
    flag boolean,
    ratio double precision,
    small real
);
INSERT INTO app.docs
SELECT i,
       'Doc ' || i,
       E'first line\n\tindented with a tab\nback\\slash, \\N and \\. inline\n\\.\n'
           || E'quotes '' " and unicode: üñíçødé 日本語 🚢 #' || i || E'\r\nend',
       jsonb_build_object('id', i, 'tags', jsonb_build_array('a', 'b', i),
                          'nested', jsonb_build_object('ratio', i / 3.0, 'none', NULL,
                                                       'text', E'tab\there "quoted" \\')),
       sha256(int4send(i)) || sha512(int4send(i)),
       ARRAY[i, -i, i * 1000, NULL],
       ARRAY['plain', 'with space', 'comma,inside', '"quoted"', E'back\\slash', NULL, 'ünï', ''],
       CASE WHEN i = 7 THEN 'NaN'::numeric
            ELSE factorial(i % 40 + 30) + 1::numeric(200, 150) / (i + 6) END,
       CASE i WHEN 3 THEN 'infinity'::timestamptz WHEN 4 THEN '-infinity'::timestamptz
            ELSE timestamptz '2024-03-10 01:59:59.999999+00' + i * interval '1 hour 1.5 seconds' END,
       CASE WHEN i = 5 THEN 'infinity'::date ELSE date '1999-12-31' + i END,
       i * interval '1 day 2 hours 3.000004 seconds' - interval '1 month',
       md5(i::text)::uuid,
       CASE i % 3 WHEN 0 THEN true WHEN 1 THEN false END,
       CASE i WHEN 1 THEN 'NaN'::float8 WHEN 2 THEN 'Infinity' WHEN 3 THEN '-Infinity'
            ELSE i / 7.0::float8 END,
       (i / 3.0)::real
FROM generate_series(1, 2000) i;
-- Every byte value, and values big enough to be TOASTed (compressed, and not).
UPDATE app.docs SET blob = (SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), ''), 'hex')
                            FROM generate_series(0, 255) b) WHERE id = 1;
UPDATE app.docs SET body = repeat(body, 500) WHERE id = 2;
UPDATE app.docs SET blob = (SELECT string_agg(sha512(int4send(i)), ''::bytea)
                            FROM generate_series(1, 2000) i) WHERE id = 3;
CREATE INDEX docs_title_idx ON app.docs (title);
CREATE INDEX docs_meta_idx ON app.docs USING gin (meta);

-- NULLs in every column, and the values that look like them.
CREATE TABLE app.sparse (id integer, a text, b integer, c jsonb, d bytea, e timestamptz);
INSERT INTO app.sparse
SELECT CASE WHEN i % 10 = 0 THEN NULL ELSE i END,
       CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN '' WHEN 2 THEN 'NULL' WHEN 3 THEN E'\\N'
            ELSE 'a' || i END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE i END,
       CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 'null'::jsonb ELSE '{}'::jsonb END,
       CASE i % 7 WHEN 0 THEN NULL WHEN 1 THEN ''::bytea ELSE '\x00'::bytea END,
       CASE WHEN i % 2 = 0 THEN NULL ELSE timestamptz '2001-01-01 00:00:00+00' + i * interval '1 s' END
FROM generate_series(1, 1000) i;
INSERT INTO app.sparse VALUES (NULL, NULL, NULL, NULL, NULL, NULL), (NULL, NULL, NULL, NULL, NULL, NULL);

-- Partitioned by range of dates: one leaf per month.
CREATE TABLE app.events (
    id bigint NOT NULL,
    day date NOT NULL,
    kind text NOT NULL,
    payload jsonb,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE TABLE app.events_2024_01 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE app.events_2024_02 PARTITION OF app.events FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE app.events_2024_03 PARTITION OF app.events FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
INSERT INTO app.events
SELECT i, date '2024-01-01' + i % 91, (ARRAY['click', 'view', 'buy'])[i % 3 + 1],
       jsonb_build_object('n', i)
FROM generate_series(1, 3000) i;

-- Large objects, and a table that refers to them by oid.
CREATE TABLE app.attachments (id integer PRIMARY KEY, name text NOT NULL, content oid NOT NULL);
INSERT INTO app.attachments VALUES
    (1, 'hello.txt', lo_from_bytea(0, convert_to(E'hello, large object\n', 'UTF8'))),
    (2, 'empty', lo_from_bytea(0, ''::bytea)),
    (3, 'random.bin', lo_from_bytea(0, (SELECT string_agg(sha512(int4send(i)), ''::bytea)
                                         FROM generate_series(1, 5000) i)));

CREATE VIEW app.customer_totals AS
SELECT c.id, c.name, sum(o.total) AS total, count(*) AS orders
FROM app.customers c JOIN app.orders o ON o.customer_id = c.id
GROUP BY c.id, c.name;
CREATE MATERIALIZED VIEW app.daily_events AS
SELECT day, kind, count(*) AS n FROM app.events GROUP BY day, kind;

CREATE SEQUENCE app.ticket_seq START 1000;
SELECT setval('app.ticket_seq', 4242);

-- Names that need quoting.
CREATE TABLE app."Mixed Case" ("Id" integer PRIMARY KEY, "Weird Column!" text, "select" text);
INSERT INTO app."Mixed Case" SELECT i, 'w' || i, 'kw' || i FROM generate_series(1, 100) i;
CREATE SCHEMA "Other Schema";
CREATE TABLE "Other Schema"."Table.With.Dots" (id integer, "Ünicode Col" text);
INSERT INTO "Other Schema"."Table.With.Dots" SELECT i, 'ü' || i FROM generate_series(1, 50) i;
COMMENT ON TABLE "Other Schema"."Table.With.Dots" IS 'a table in a second schema';
"#;
