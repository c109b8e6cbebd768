//! PostgreSQL logical backups end to end, against a real server (tests/common/postgres.rs):
//!
//! - a backup restores (`restore --to NEW --create`, and `restore --output` read by a plain
//!   `pg_restore`) to exactly the same rows of every table, large objects and sequences, and
//!   its manifest's facts (rows per table, large objects, schema checksum) match the source;
//! - a second backup stores only what changed, an unchanged database's next one almost
//!   nothing; `--schema` and `--exclude-table` choose what is dumped;
//! - `drill` restores into a throwaway cluster or a given server, compares, runs the check
//!   query, records the restore time, and fails (exit 4, no verification record, no database
//!   left behind) when the query says so or a stored object is damaged;
//! - a wrong password, an unreachable server and a missing database fail with their own exit
//!   codes and commit nothing;
//! - `kill -9` during a backup commits nothing, leaves the earlier backups restorable and
//!   the next backup working, and no pg_dump of the killed backup running;
//! - `--all-databases` backs up every database plus the roles (globals);
//! - the password is in no output, no file of the repository or the test's folder, and no
//!   command line or environment of a child process.

mod common;

use common::postgres::{PgCluster, PASSWORD, PASSWORD_PCT, USER};
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What betrays the password, in every spelling a leak could take: as typed, percent-encoded,
/// and escaped for a pgpass file (its first part, before the `:`, is in all of them).
const SECRETS: [&str; 4] = [PASSWORD, PASSWORD_PCT, "s3cret Pg@pw", "s3cret%20Pg%40pw"];

/// A cluster, a repository, and every byte lifeboat printed (checked for the password).
struct Pg {
    env: Env,
    pg: PgCluster,
    said: Mutex<Vec<u8>>,
}

impl Pg {
    fn start() -> Pg {
        Pg {
            env: Env::new(),
            pg: PgCluster::start(),
            said: Mutex::new(Vec::new()),
        }
    }

    /// `lifeboat` with the test's environment and the harness's PostgreSQL programs.
    fn cmd(&self) -> std::process::Command {
        let mut c = self.env.std_cmd();
        c.env("LIFEBOAT_PG_BIN", common::postgres::pg_bin());
        c
    }

    fn record(&self, out: &Out) {
        let mut said = self.said.lock().unwrap();
        said.extend_from_slice(out.stdout.as_bytes());
        said.extend_from_slice(out.stderr.as_bytes());
    }

    /// Run `lifeboat ARGS`, whatever the outcome.
    fn run(&self, args: &[&str]) -> Out {
        let out = Out::of(self.cmd().args(args).output().expect("run lifeboat"));
        self.record(&out);
        out
    }

    /// `lifeboat ARGS --json`, which must succeed: its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        self.run(&all).ok(&format!("{args:?}")).json()
    }

    /// Back up database `db` with `extra` arguments: the backup's JSON.
    fn backup(&self, db: &str, extra: &[&str]) -> Value {
        let url = self.pg.url(db);
        let mut args = vec!["backup", url.as_str()];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    fn manifest(&self, id: &str) -> Value {
        self.json(&["show", id])
    }

    fn list(&self) -> Vec<Value> {
        self.json(&["list"])
            .as_array()
            .expect("list is an array")
            .clone()
    }

    /// Restore backup `id` into a new database `db` (`--create`).
    fn restore_to(&self, id: &str, db: &str) {
        let url = self.pg.url(db);
        self.json(&["restore", id, "--to", &url, "--create", "--jobs", "2"]);
    }

    /// Databases of the server whose name is like `pattern`.
    fn databases_like(&self, pattern: &str) -> String {
        self.pg.psql(
            "postgres",
            &format!(
                "SELECT coalesce(string_agg(datname, ','), '') FROM pg_database \
                 WHERE datname LIKE '{pattern}'"
            ),
        )
    }

    /// The password is in nothing lifeboat printed and no file of the test's folder (the
    /// repository, HOME, the temp dir, restored files).
    fn assert_no_secret(&self) {
        let said = self.said.lock().unwrap();
        assert!(!said.is_empty(), "nothing was recorded");
        for secret in SECRETS {
            assert!(
                !contains(&said, secret),
                "lifeboat printed the password ({secret:?}):\n{}",
                String::from_utf8_lossy(&said)
            );
        }
        let files = walk_files(self.env.dir.path());
        // The manifests are readable as they are: a password stored with them would show.
        let witness = format!("{USER}@127.0.0.1:{}", self.pg.port());
        assert!(
            files.iter().any(|f| f.starts_with(self.env.repo())
                && contains(&std::fs::read(f).unwrap_or_default(), &witness)),
            "no file of the repository under {} names {witness}: the search proves nothing",
            self.env.dir.path().display()
        );
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_default();
            for secret in SECRETS {
                assert!(
                    !contains(&bytes, secret),
                    "{} holds the password ({secret:?})",
                    f.display()
                );
            }
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

/// A manifest's table key (`app."Mixed Case"`) as the harness spells it (`app.Mixed Case`):
/// each part unquoted.
fn unquote_key(key: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = key;
    loop {
        let part;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().map(|(_, c)| *c) == Some('"') {
                        chars.next();
                        name.push('"');
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated quote in {key:?}"));
            part = name;
            rest = &quoted[end..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            part = rest[..end].to_string();
            assert!(
                part.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "unquoted part {part:?} of {key:?} is not a plain name"
            );
            rest = &rest[end..];
        }
        parts.push(part);
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => {
                assert!(rest.is_empty(), "trailing {rest:?} in {key:?}");
                break;
            }
        }
    }
    assert_eq!(parts.len(), 2, "{key:?} is not schema.table");
    parts.join(".")
}

/// The manifest's `postgres.tables`, keyed as the harness keys them.
fn manifest_tables(m: &Value) -> BTreeMap<String, u64> {
    m["postgres"]["tables"]
        .as_object()
        .unwrap_or_else(|| panic!("no postgres.tables in {m}"))
        .iter()
        .map(|(k, v)| (unquote_key(k), v.as_u64().expect("row count")))
        .collect()
}

/// The tables with data of their own a dump has a data file for: the harness's fingerprints
/// without the materialized views (pg_dump refreshes those; it does not copy their rows).
fn dumped_rows(pg: &PgCluster, db: &str) -> BTreeMap<String, u64> {
    let matviews: BTreeSet<String> = pg
        .psql(
            db,
            "SELECT schemaname || '.' || matviewname FROM pg_matviews",
        )
        .lines()
        .map(str::to_string)
        .collect();
    pg.table_fingerprints(db)
        .into_iter()
        .filter(|(k, _)| !matviews.contains(k))
        .map(|(k, (rows, _))| (k, rows))
        .collect()
}

/// The repository's packs (`data/xx/ID`).
fn packs(env: &Env) -> BTreeSet<PathBuf> {
    walk_files(&env.repo().join("data")).into_iter().collect()
}

/// Bytes in the repository's staging folder (`tmp/`, packs being written).
fn staged_bytes(env: &Env) -> u64 {
    walk_files(&env.repo().join("tmp"))
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// The files of Lifeboat's PostgreSQL work folders in the test's temp dir (`lifeboat-pg-*`:
/// a dump, its password file), left when Lifeboat was killed.
fn work_leftovers(env: &Env) -> Vec<PathBuf> {
    file_names(env.dir.path())
        .iter()
        .filter(|n| n.starts_with("lifeboat-pg-"))
        .flat_map(|n| walk_files(&env.path(n)))
        .collect()
}

fn leftover_bytes(env: &Env) -> u64 {
    work_leftovers(env)
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// A database of a few small tables (no pgbench), for tests that need content, not variety.
fn small_fill(pg: &PgCluster, db: &str) {
    pg.psql(
        db,
        "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes SELECT g, md5(g::text) || ' note' FROM generate_series(1, 20000) g;
         CREATE SCHEMA extra;
         CREATE TABLE extra.\"Tags\" (tag text);
         INSERT INTO extra.\"Tags\" SELECT 'tag ' || g FROM generate_series(1, 300) g;",
    );
}

/// A filled database backed up with `--jobs 2` comes back identical (every table's rows,
/// large objects, sequences) through `restore --to --create` and through `restore --output`
/// read by a plain `pg_restore`; the manifest's facts match the source.
#[test]
fn a_backup_restores_every_row_large_object_and_sequence() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("shop");
    p.pg.fill("shop");
    let source_fp = p.pg.table_fingerprints("shop");
    let source_lo = p.pg.large_object_fingerprint("shop");
    let source_seq = p.pg.sequence_values("shop");
    assert_eq!(source_lo.0, 3);

    let b = p.backup("shop", &["--jobs", "2"]);
    let id = id_of(&b);
    assert_eq!(b["kind"], "postgres", "{b}");
    let m = p.manifest(&id);
    let info = &m["postgres"];
    assert_eq!(
        m["source"]["path"],
        format!("postgres://{USER}@127.0.0.1:{}/shop", p.pg.port()),
        "{m}"
    );
    assert_eq!(info["database"], "shop");
    assert_eq!(info["server"], format!("127.0.0.1:{}", p.pg.port()));
    assert_eq!(info["user"], USER);
    assert_eq!(info["dump_format"], "directory");
    assert!(num(info, "server_version_num") >= 110000, "{info}");
    assert_eq!(
        num(info, "server_version_num"),
        p.pg.psql("shop", "SHOW server_version_num")
            .parse::<u64>()
            .unwrap()
    );
    assert!(num(info, "database_bytes") > 1_000_000, "{info}");
    assert!(
        info["client_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    let sha = info["schema_sha256"].as_str().expect("schema_sha256");
    assert!(
        sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit()),
        "{sha:?}"
    );
    assert_eq!(num(info, "large_objects"), source_lo.0);
    // Quoted as SQL when not a plain lower-case name.
    let keys: BTreeSet<&str> = info["tables"]
        .as_object()
        .expect("tables")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(keys.contains("app.\"Mixed Case\""), "{keys:?}");
    assert!(
        keys.contains("\"Other Schema\".\"Table.With.Dots\""),
        "{keys:?}"
    );
    assert!(keys.contains("public.pgbench_accounts"), "{keys:?}");
    assert_eq!(manifest_tables(&m), dumped_rows(&p.pg, "shop"));
    // Every table of the source is in the dump: the only ones left out are matviews.
    assert_eq!(
        source_fp.len() - manifest_tables(&m).len(),
        1,
        "only app.daily_events has no data file: {keys:?}"
    );
    let v = p.json(&["verify", &id]);
    assert_eq!(v["ok"], true, "{v}");

    // restore --to NEW --create: the same rows, large objects and sequence values.
    p.restore_to(&id, "shop_copy");
    assert_eq!(p.pg.table_fingerprints("shop_copy"), source_fp);
    assert_eq!(p.pg.large_object_fingerprint("shop_copy"), source_lo);
    assert_eq!(p.pg.sequence_values("shop_copy"), source_seq);
    assert_eq!(
        p.pg.psql(
            "shop_copy",
            "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'"
        ),
        p.pg.psql(
            "shop",
            "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'"
        )
    );

    // Into a database that has tables, without --clean: refused, the database untouched.
    let before = p.pg.table_fingerprints("shop_copy");
    let url = p.pg.url("shop_copy");
    let out = p.run(&["restore", &id, "--to", &url]);
    assert_ne!(
        out.code,
        0,
        "restore over a non-empty database:\n{}",
        out.text()
    );
    assert!(out.stderr.contains("error:"), "{}", out.text());
    assert_eq!(p.pg.table_fingerprints("shop_copy"), before);

    // restore --output: a tar archive a plain pg_restore reads, without Lifeboat.
    let tar = p.env.path("shop.tar");
    p.json(&["restore", &id, "--output", s(&tar)]);
    let head = std::fs::read(&tar).expect("archive");
    assert_eq!(&head[257..262], b"ustar", "a tar archive");
    p.pg.create_db("shop_tar");
    let out =
        p.pg.client("pg_restore")
            .args(["--exit-on-error", "-d", "shop_tar"])
            .arg(&tar)
            .output()
            .expect("pg_restore");
    assert!(
        out.status.success(),
        "pg_restore of the --output archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.pg.table_fingerprints("shop_tar"), source_fp);
    assert_eq!(p.pg.large_object_fingerprint("shop_tar"), source_lo);
    assert_eq!(p.pg.sequence_values("shop_tar"), source_seq);

    p.assert_no_secret();
    eprintln!("round trip: {:?}", t.elapsed());
}

/// 1% of a table changed stores a fraction of the first backup, nothing changed almost
/// nothing, and the second restores with the change; `--schema` and `--exclude-table` decide
/// which tables are dumped.
#[test]
fn a_second_backup_stores_only_what_changed_and_scope_options_choose_tables() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("shop");
    let filled = p.pg.fill("shop");
    let first = p.backup("shop", &[]);
    let first_bytes = num(&first, "new_stored_bytes");

    // About 1% of the accounts, spread over the whole table.
    p.pg.psql(
        "shop",
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0",
    );
    let changed_fp = p.pg.table_fingerprints("shop");
    let second = p.backup("shop", &[]);
    let second_bytes = num(&second, "new_stored_bytes");
    let third = p.backup("shop", &[]);
    let third_bytes = num(&third, "new_stored_bytes");
    eprintln!(
        "new_stored_bytes: first {first_bytes}, second (1% of accounts updated) {second_bytes}, \
         third (unchanged) {third_bytes}"
    );
    assert!(
        (second_bytes as f64) < 0.3 * first_bytes as f64,
        "a 1% change stored {second_bytes} B, the first backup {first_bytes} B: {second}"
    );
    assert!(
        (third_bytes as f64) < 0.05 * first_bytes as f64,
        "an unchanged database stored {third_bytes} B, the first backup {first_bytes} B: {third}"
    );

    // The second has the change.
    let second_id = id_of(&second);
    p.restore_to(&second_id, "shop_second");
    assert_eq!(p.pg.table_fingerprints("shop_second"), changed_fp);
    assert_eq!(
        p.pg.psql(
            "shop_second",
            "SELECT sum(abalance) FROM pgbench_accounts WHERE aid % 100 = 0"
        ),
        "2000"
    );

    // --schema app: only that schema's tables, all of them.
    let app = p.backup("shop", &["--schema", "app"]);
    let m = p.manifest(&id_of(&app));
    let tables = manifest_tables(&m);
    let all = dumped_rows(&p.pg, "shop");
    let app_tables: BTreeMap<String, u64> = all
        .iter()
        .filter(|(k, _)| k.starts_with("app."))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(app_tables.len() >= 8, "{app_tables:?}");
    assert_eq!(tables, app_tables, "{m}");
    assert_eq!(m["postgres"]["schemas"], serde_json::json!(["app"]));
    // pg_dump --schema leaves out the extensions of other schemas (app.attrs uses hstore,
    // in public): into a new database, the restore may fail, and then leaves no database.
    let source = p.pg.table_fingerprints("shop");
    let url = p.pg.url("shop_app_new");
    let out = p.run(&["restore", &id_of(&app), "--to", &url, "--create"]);
    if out.code == 0 {
        let restored = p.pg.table_fingerprints("shop_app_new");
        let want: BTreeMap<_, _> = source
            .iter()
            .filter(|(k, _)| k.starts_with("app."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(restored, want);
    } else {
        eprintln!("--schema app restored with --create: {}", out.stderr.trim());
        assert_eq!(p.databases_like("shop\\_app\\_new"), "", "{}", out.text());
    }
    // Into an existing database that has the extension (no tables: empty enough).
    p.pg.create_db("shop_app");
    if let Some(ext) = filled.extension {
        p.pg.psql("shop_app", &format!("CREATE EXTENSION {ext}"));
    }
    let url = p.pg.url("shop_app");
    p.json(&["restore", &id_of(&app), "--to", &url]);
    let restored = p.pg.table_fingerprints("shop_app");
    let app_fp: BTreeMap<_, _> = source
        .iter()
        .filter(|(k, _)| k.starts_with("app."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(restored, app_fp);

    // --exclude-table: that table (and only it) left out.
    let ex = p.backup(
        "shop",
        &[
            "--exclude-table",
            "app.sparse",
            "--exclude-table",
            "public.pgbench_history",
        ],
    );
    let m = p.manifest(&id_of(&ex));
    let mut want = all.clone();
    want.remove("app.sparse");
    want.remove("public.pgbench_history");
    assert_eq!(manifest_tables(&m), want, "{m}");
    assert_eq!(
        m["postgres"]["excluded_tables"],
        serde_json::json!(["app.sparse", "public.pgbench_history"])
    );

    p.assert_no_secret();
    eprintln!("dedup and scope: {:?}", t.elapsed());
}

/// The drill's step called `name` (the test fails when there is none).
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name:?} in {report}"))
}

/// `lifeboat drill ARGS --json`: exit code and report.
fn drill(p: &Pg, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = p.run(&all);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("drill printed no JSON ({e}):\n{}", out.text()));
    (out.code, v)
}

/// `drill` passes in a throwaway local cluster and on a given server (leaving no database
/// there), records the restore time `list` and `show` report, and fails (exit 4) when the
/// check query of lifeboat.toml says false.
#[test]
fn drill_restores_compares_runs_the_check_query_and_records_the_restore_time() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("shop");
    p.pg.fill("shop");
    let id = id_of(&p.backup("shop", &[]));
    let m = p.manifest(&id);
    assert_eq!(m["verified"], Value::Null, "not drilled yet: {m}");

    // A throwaway local cluster.
    let (code, r) = drill(&p, &[&id]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], id.as_str());
    for name in [
        "read and check every object",
        "pg_restore",
        "tables match",
        "row counts match",
        "large objects match",
    ] {
        assert_eq!(step(&r, name)["ok"], true, "{name}: {r}");
    }
    let rows: u64 = manifest_tables(&m).values().sum();
    assert!(
        step(&r, "row counts match")["detail"]
            .as_str()
            .unwrap()
            .contains(&rows.to_string()),
        "{r}"
    );
    let rto = num(&r, "rto_ms");
    assert!(rto > 0, "{r}");
    let row = p
        .list()
        .into_iter()
        .find(|b| b["id"] == id.as_str())
        .expect("listed");
    assert_eq!(num(&row, "verified.rto_ms"), rto, "{row}");
    assert_eq!(num(&p.manifest(&id), "verified.rto_ms"), rto);

    // On the harness's server: the drill's database is made there, then dropped.
    let server = p.pg.url("postgres");
    let (code, r) = drill(&p, &[&id, "--drill-server", &server]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(step(&r, "row counts match")["ok"], true, "{r}");
    assert_eq!(p.databases_like("lifeboat\\_drill\\_%"), "", "{r}");
    let into = r["restored_into"].as_str().expect("restored_into");
    assert!(into.contains(&format!("127.0.0.1:{}", p.pg.port())), "{r}");

    // The check query of lifeboat.toml runs in the restored database.
    let config = p.env.path("lifeboat.toml");
    std::fs::write(
        &config,
        "[drill]\nquery = \"SELECT count(*) = 200000 FROM pgbench_accounts\"\n",
    )
    .unwrap();
    let (code, r) = drill(&p, &[&id, "--drill-server", &server]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(step(&r, "check query")["ok"], true, "{r}");
    std::fs::write(&config, "[drill]\nquery = \"SELECT false\"\n").unwrap();
    let (code, r) = drill(&p, &[&id, "--drill-server", &server]);
    assert_eq!(
        code, 4,
        "a check query that says false fails the drill: {r}"
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(step(&r, "check query")["ok"], false, "{r}");
    assert_eq!(step(&r, "row counts match")["ok"], true, "{r}");
    assert_eq!(p.databases_like("lifeboat\\_drill\\_%"), "", "{r}");
    std::fs::remove_file(&config).unwrap();

    p.assert_no_secret();
    eprintln!("drill: {:?}", t.elapsed());
}

/// A damaged pack fails the drill at "read and check every object" (exit 4), before
/// anything is restored, with no database left behind and no verification recorded.
#[test]
fn drill_of_a_damaged_backup_fails_and_records_nothing() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("notes");
    small_fill(&p.pg, "notes");
    p.pg.psql(
        "notes",
        "CREATE TABLE noise AS SELECT g, sha512(int4send(g)) AS h FROM generate_series(1, 20000) g",
    );
    let id = id_of(&p.backup("notes", &[]));
    let packs = packs(&p.env);
    let pack = packs
        .iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().len())
        .expect("a pack");
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pack, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(pack, &bytes).unwrap();

    let server = p.pg.url("postgres");
    let (code, r) = drill(&p, &[&id, "--drill-server", &server]);
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(step(&r, "read and check every object")["ok"], false, "{r}");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "pg_restore"),
        "nothing is restored from a damaged backup: {r}"
    );
    assert_eq!(p.databases_like("lifeboat\\_drill\\_%"), "", "{r}");
    let row = p
        .list()
        .into_iter()
        .find(|b| b["id"] == id.as_str())
        .expect("listed");
    assert_eq!(row["verified"], Value::Null, "{row}");
    assert_eq!(p.manifest(&id)["verified"], Value::Null);
    // verify says so too.
    let out = p.run(&["verify", &id]);
    assert_eq!(out.code, 4, "{}", out.text());

    p.assert_no_secret();
    eprintln!("damaged drill: {:?}", t.elapsed());
}

/// A wrong password, a closed port and a missing database: their own exit codes and
/// messages (without the password), in text and JSON, and nothing committed or stored.
#[test]
fn wrong_password_unreachable_server_and_missing_database_commit_nothing() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("notes");
    small_fill(&p.pg, "notes");
    let good = p.backup("notes", &[]);
    let listed = p.list();
    assert_eq!(listed.len(), 1);
    let manifests = file_names(&p.env.repo().join("backups"));
    let packs_before = packs(&p.env);

    let port = p.pg.port();
    let wrong_pw = "Wr0ng pw:/@x";
    let wrong_pct = common::server::encode(wrong_pw);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (
            "wrong password",
            format!("postgres://{USER}:{wrong_pct}@127.0.0.1:{port}/notes"),
            5,
            "refused the login",
        ),
        (
            "unreachable server",
            format!("postgres://{USER}:{PASSWORD_PCT}@127.0.0.1:{closed}/notes"),
            5,
            "cannot reach",
        ),
        ("missing database", p.pg.url("no_such_db"), 3, "no_such_db"),
    ];
    for (what, url, code, says) in &cases {
        let out = p.run(&["backup", url]);
        eprintln!("{what}: exit {}: {}", out.code, out.stderr.trim());
        assert_eq!(out.code, *code, "{what}:\n{}", out.text());
        assert!(out.stderr.contains("error:"), "{what}:\n{}", out.text());
        assert!(out.stderr.contains("hint:"), "{what}:\n{}", out.text());
        assert!(
            out.stderr.contains(says),
            "{what} should say {says:?}:\n{}",
            out.text()
        );
        for secret in [wrong_pw, wrong_pct.as_str(), PASSWORD, PASSWORD_PCT] {
            assert!(
                !out.text().contains(secret),
                "{what}: {secret:?} in\n{}",
                out.text()
            );
        }
        let out = p.run(&["backup", url, "--json"]);
        assert_eq!(out.code, *code, "{what} --json:\n{}", out.text());
        let v = out.json();
        assert!(v["error"].is_object(), "{what}: {v}");
        assert!(v.to_string().contains(says), "{what}: {v}");
        for secret in [wrong_pw, wrong_pct.as_str()] {
            assert!(
                !out.text().contains(secret),
                "{what}: {secret:?} in\n{}",
                out.text()
            );
        }
        assert_eq!(p.list(), listed, "{what} committed a backup");
        assert_eq!(
            file_names(&p.env.repo().join("backups")),
            manifests,
            "{what}"
        );
        assert_eq!(packs(&p.env), packs_before, "{what} stored a pack");
    }
    assert!(p.list()[0]["id"] == good["id"]);

    p.assert_no_secret();
    eprintln!("errors: {:?}", t.elapsed());
}

/// Every process below `root` (children, their children...).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some(pp) = proc_stat(pid).map(|s| s.1) {
            parent.insert(pid, pp);
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// A process's state letter and parent, from /proc/PID/stat (`None` once gone).
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut f = after.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What a sampler of the children of a process saw.
#[derive(Default)]
struct Sampled {
    /// Program names (comm) of the children seen.
    programs: BTreeSet<String>,
    /// pg_dump processes seen (pids).
    pg_dumps: BTreeSet<i32>,
    /// Command lines or environments that held the password.
    leaks: Vec<String>,
    samples: u64,
}

/// Sample the command lines and environments of every process below `root` until `stop`.
fn sample_children(root: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Sampled> {
    std::thread::spawn(move || {
        let mut seen = Sampled::default();
        while !stop.load(Ordering::Relaxed) {
            let children = descendants(root);
            // Lifeboat's own command line, once it runs clients (it hides a URI's password
            // at its start): what `ps` shows of it to every user.
            let mut pids = children.clone();
            if !children.is_empty() {
                pids.push(root);
            }
            for pid in pids {
                let name = comm(pid);
                for what in ["cmdline", "environ"] {
                    let bytes = std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
                    for secret in SECRETS {
                        if contains(&bytes, secret) {
                            seen.leaks.push(format!(
                                "{name} ({pid}) {what}: {}",
                                String::from_utf8_lossy(&bytes).replace('\0', " ")
                            ));
                        }
                    }
                }
                if pid == root {
                    continue;
                }
                if name == "pg_dump" {
                    seen.pg_dumps.insert(pid);
                }
                seen.programs.insert(name);
            }
            seen.samples += 1;
            std::thread::sleep(Duration::from_millis(3));
        }
        seen
    })
}

/// `kill -9` while pg_dump runs and packs are being written: no backup, a sound repository,
/// no pg_dump (nor its workers) carrying on, the leftovers removed by the next run, the
/// earlier backup restorable and the next backup good; the children of that backup never
/// have the password on their command line or in their environment.
#[test]
fn kill_9_during_a_backup_commits_nothing_and_leaves_no_pg_dump_running() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("shop");
    small_fill(&p.pg, "shop");
    let earlier = id_of(&p.backup("shop", &[]));
    let earlier_fp = p.pg.table_fingerprints("shop");
    p.pg.psql(
        "shop",
        "CREATE TABLE big AS SELECT g, md5(g::text) || repeat(md5(random()::text), 20) AS t \
         FROM generate_series(1, 300000) g",
    );
    let manifests = file_names(&p.env.repo().join("backups"));
    let packs_before = packs(&p.env);
    let mut findings: Vec<String> = Vec::new();

    // Killed once it has stored a pack of the big table, while pg_dump still runs.
    let url = p.pg.url("shop");
    let started = Instant::now();
    let mut child = p
        .cmd()
        .args(["backup", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeboat");
    let pid = child.id() as i32;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_children(pid, stop.clone());
    // pg_dump processes below lifeboat, with their parents.
    let mut pg_dumps: Vec<(i32, i32)> = Vec::new();
    let landed = wait_until(Duration::from_secs(60), || {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        pg_dumps = descendants(pid)
            .into_iter()
            .filter(|d| comm(*d) == "pg_dump")
            .filter_map(|d| Some((d, proc_stat(d)?.1)))
            .collect();
        // Chunks of the dump compressed into a pack being written (or a finished pack),
        // while pg_dump still dumps with its workers.
        pg_dumps.len() >= 2 && (staged_bytes(&p.env) > 0 || packs(&p.env) != packs_before)
    });
    let running = child.try_wait().unwrap().is_none();
    child.kill().expect("kill -9");
    let status = child.wait().expect("wait");
    let killed_after = started.elapsed();
    // pg_dump, the killed process's child, and its workers do not carry on alone: how long
    // each lives on, and what they write meanwhile.
    let at_kill = leftover_bytes(&p.env);
    let killed = Instant::now();
    let mut died: BTreeMap<i32, Duration> = BTreeMap::new();
    wait_until(Duration::from_secs(60), || {
        for (d, _) in &pg_dumps {
            if !alive(*d) {
                died.entry(*d).or_insert_with(|| killed.elapsed());
            }
        }
        died.len() == pg_dumps.len()
    });
    let written_after = leftover_bytes(&p.env).saturating_sub(at_kill);
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.join().unwrap();
    let out = Out::of(child.wait_with_output().expect("output"));
    p.record(&out);
    assert!(
        landed && running,
        "the backup ended before it stored anything:\n{}",
        out.text()
    );
    assert!(!status.success());
    assert!(
        !pg_dumps.is_empty(),
        "pg_dump was not running when lifeboat was killed ({killed_after:?}): too late to \
         prove anything about it"
    );
    assert_eq!(
        file_names(&p.env.repo().join("backups")),
        manifests,
        "a killed backup committed a manifest"
    );
    let lives: Vec<String> = pg_dumps
        .iter()
        .map(|(d, parent)| {
            let role = if *parent == pid {
                "pg_dump"
            } else {
                "pg_dump worker"
            };
            format!(
                "{role} {d} (child of {parent}) died {:?} after the kill",
                died[d]
            )
        })
        .collect();
    eprintln!(
        "killed after {killed_after:?} ({} B staged, {} new packs, {at_kill} B of dump files); \
         then {written_after} B more written; {}",
        staged_bytes(&p.env),
        packs(&p.env).len() - packs_before.len(),
        lives.join("; ")
    );
    // Killing them takes a moment; a dump going on does not.
    if died.values().any(|d| *d > Duration::from_millis(300)) || written_after > 8 << 20 {
        findings.push(format!(
            "pg_dump ran on after lifeboat was killed, writing {written_after} B more of a dump \
             nothing will read: {}",
            lives.join("; ")
        ));
    }
    assert!(!sampled.pg_dumps.is_empty(), "{:?}", sampled.programs);
    assert!(sampled.leaks.is_empty(), "{:#?}", sampled.leaks);

    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' \
                    AND application_name = 'lifeboat'";
    let gone = wait_until(Duration::from_secs(5), || {
        p.pg.psql("postgres", sessions) == "0"
    });
    if !gone {
        findings.push(format!(
            "5 s after the kill, {} lifeboat sessions (pg_dump) still read the database",
            p.pg.psql("postgres", sessions)
        ));
    }
    // What the killed backup left in its temporary folder (the password file, the dump) is
    // there until a next Lifeboat removes it.
    eprintln!(
        "left by the killed backup: {} files, {} B, password file: {}",
        work_leftovers(&p.env).len(),
        leftover_bytes(&p.env),
        work_leftovers(&p.env).iter().any(|f| f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("pgpass")))
    );

    // Nothing committed, the repository sound, the earlier backup restores.
    assert_eq!(p.list().len(), 1);
    let check = p.json(&["repo", "check"]);
    assert_eq!(check["ok"], true, "{check}");
    p.restore_to(&earlier, "shop_earlier");
    assert_eq!(p.pg.table_fingerprints("shop_earlier"), earlier_fp);
    let left = work_leftovers(&p.env);
    if !left.is_empty() {
        findings.push(format!(
            "after the next restore, the killed backup's temporary files are still there: \
             {left:?}"
        ));
    }

    // The next backup works; no child of it has the password on its command line or in its
    // environment.
    let child = p
        .cmd()
        .args(["backup", &url, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeboat");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_children(child.id() as i32, stop.clone());
    let out = Out::of(child.wait_with_output().expect("backup"));
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.join().unwrap();
    p.record(&out);
    let next = out.ok("backup after the kill").json();
    eprintln!(
        "{} samples of the children of a backup: {:?}",
        sampled.samples, sampled.programs
    );
    assert!(
        sampled.programs.contains("pg_dump") && sampled.programs.contains("psql"),
        "the sampler saw no pg_dump or psql: {:?}",
        sampled.programs
    );
    assert!(sampled.leaks.is_empty(), "{:#?}", sampled.leaks);
    let m = p.manifest(&id_of(&next));
    assert_eq!(m["postgres"]["tables"]["public.big"], 300000, "{m}");
    let v = p.json(&["verify", &id_of(&next)]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(p.list().len(), 2);

    assert!(
        findings.is_empty(),
        "after kill -9 of a backup:\n{}",
        findings.join("\n")
    );
    p.assert_no_secret();
    eprintln!("kill: {:?}", t.elapsed());
}

/// `--all-databases`: one backup per database and one of the roles (globals), in one run,
/// each restorable; the globals restore to SQL that creates the roles.
#[test]
fn all_databases_backs_up_each_database_and_the_roles() {
    let t = Instant::now();
    let p = Pg::start();
    p.pg.create_db("alpha");
    p.pg.fill("alpha");
    p.pg.create_db("beta");
    small_fill(&p.pg, "beta");
    p.pg.psql(
        "postgres",
        "CREATE ROLE lifeboat_reader LOGIN PASSWORD 'reader pw'; \
         GRANT CONNECT ON DATABASE beta TO lifeboat_reader",
    );
    let alpha_fp = p.pg.table_fingerprints("alpha");
    let beta_fp = p.pg.table_fingerprints("beta");
    assert_ne!(alpha_fp, beta_fp);

    let server = p.pg.url("");
    let run = p.json(&["backup", &server, "--all-databases"]);
    let backups = run["backups"].as_array().unwrap_or_else(|| panic!("{run}"));
    let base = format!("postgres://{USER}@127.0.0.1:{}/", p.pg.port());
    let by_source: BTreeMap<String, String> = backups
        .iter()
        .map(|b| (b["source"].as_str().expect("source").to_string(), id_of(b)))
        .collect();
    let want: BTreeSet<String> = ["", "alpha", "beta", "postgres"]
        .iter()
        .map(|d| format!("{base}{d}"))
        .collect();
    assert_eq!(
        by_source.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "{run}"
    );
    assert_eq!(p.list().len(), 4);
    for (source, id) in &by_source {
        let m = p.manifest(id);
        assert_eq!(m["run"], run["run"], "{m}");
        let format = if source == &base {
            "globals"
        } else {
            "directory"
        };
        assert_eq!(m["postgres"]["dump_format"], format, "{source}: {m}");
    }
    assert_eq!(
        manifest_tables(&p.manifest(&by_source[&format!("{base}alpha")])),
        dumped_rows(&p.pg, "alpha")
    );

    p.restore_to(&by_source[&format!("{base}alpha")], "alpha_copy");
    assert_eq!(p.pg.table_fingerprints("alpha_copy"), alpha_fp);
    p.restore_to(&by_source[&format!("{base}beta")], "beta_copy");
    assert_eq!(p.pg.table_fingerprints("beta_copy"), beta_fp);
    p.restore_to(&by_source[&format!("{base}postgres")], "postgres_copy");
    assert_eq!(
        p.pg.table_fingerprints("postgres_copy"),
        p.pg.table_fingerprints("postgres")
    );

    let globals = p.env.path("g.sql");
    p.json(&["restore", &by_source[&base], "--output", s(&globals)]);
    let sql = std::fs::read_to_string(&globals).expect("globals");
    assert!(sql.contains("CREATE ROLE lifeboat_reader"), "{sql}");
    assert!(sql.contains("CREATE ROLE postgres"), "{sql}");
    assert!(!sql.contains("reader pw"), "only the role's hash: {sql}");

    p.assert_no_secret();
    eprintln!("all databases: {:?}", t.elapsed());
}

/// A password given as a URI parameter (`?password=`) is taken out like one in the user part,
/// and the other parameters reach libpq as written (a `%20` stays a space: re-encoded as `+`,
/// `options` would name the setting `+statement_timeout` and the server refuse it); a
/// `--create` restore drops what a killed restore left under `<db>_lifeboat_incomplete` and
/// renames the new database into place; `--create` over an existing database and a backup of
/// a URI without a database are refused without touching anything.
#[test]
fn password_parameters_incomplete_leftovers_and_refusals() {
    let p = Pg::start();
    p.pg.create_db("shop");
    small_fill(&p.pg, "shop");
    let url = format!(
        "postgres://{USER}@127.0.0.1:{}/shop?options=-c%20statement_timeout%3D0&password={PASSWORD_PCT}",
        p.pg.port()
    );
    let b = p.json(&["backup", &url]);
    let id = id_of(&b);
    let m = p.manifest(&id);
    assert_eq!(
        m["source"]["path"],
        format!("postgres://{USER}@127.0.0.1:{}/shop", p.pg.port()),
        "{m}"
    );
    assert_eq!(manifest_tables(&m)["public.notes"], 20000, "{m}");

    // What a killed `--create` restore leaves: a database under the name that says so.
    p.pg.create_db("copy_lifeboat_incomplete");
    p.pg.psql("copy_lifeboat_incomplete", "CREATE TABLE half (x int)");
    p.restore_to(&id, "copy");
    assert_eq!(
        p.databases_like("copy%"),
        "copy",
        "the leftover is gone, the copy in place"
    );
    assert_eq!(p.pg.psql("copy", "SELECT count(*) FROM notes"), "20000");
    assert_eq!(
        p.pg.psql(
            "copy",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'half'"
        ),
        "0"
    );

    // --create over an existing database: refused, the database as it was.
    p.pg.psql("copy", "DELETE FROM notes WHERE id <= 10");
    let again = p.run(&["restore", &id, "--to", &p.pg.url("copy"), "--create"]);
    let again = again.code(2, "restore --create over an existing database");
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(p.pg.psql("copy", "SELECT count(*) FROM notes"), "19990");

    // A URI naming the server, not a database: refused, nothing backed up.
    let before = p.list().len();
    let server = format!(
        "postgres://{USER}:{PASSWORD_PCT}@127.0.0.1:{}/",
        p.pg.port()
    );
    let refused = p
        .run(&["backup", &server])
        .code(2, "backup of a URI without a database");
    assert!(
        refused.stderr.contains("names a server"),
        "{}",
        refused.stderr
    );
    assert_eq!(p.list().len(), before);
    p.assert_no_secret();
}

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if contains(&cmdline, needle) && proc_stat(pid).is_some_and(|(state, _)| state != 'Z') {
            pids.push(pid);
        }
    }
    pids
}

/// A drill killed with -9 while its throwaway cluster runs leaves no server behind: the
/// server is Lifeboat's child in a process group its watchdog kills.
#[test]
fn a_killed_drill_leaves_no_server_running() {
    let p = Pg::start();
    p.pg.create_db("shop");
    small_fill(&p.pg, "shop");
    let id = id_of(&p.backup("shop", &[]));
    let marker = format!("{}", p.env.dir.path().display());
    let mut child = p
        .cmd()
        .args(["drill", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the drill");
    // The kill must land while the cluster runs: wait for its postmaster to appear.
    let deadline = Instant::now() + Duration::from_secs(60);
    let servers = loop {
        let found: Vec<i32> = processes_mentioning(&marker)
            .into_iter()
            .filter(|&pid| comm(pid) == "postgres")
            .collect();
        if !found.is_empty() {
            break found;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the drill ended before its cluster was seen"
        );
        assert!(Instant::now() < deadline, "no drill cluster started");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9 the drill");
    child.wait().expect("reap");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<i32> = servers.iter().copied().filter(|&pid| alive(pid)).collect();
        let more = processes_mentioning(&marker);
        if left.is_empty() && more.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "10 s after the kill, the drill's server still runs: {left:?} {more:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
