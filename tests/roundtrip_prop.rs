//! Property test: whatever the schema, values, page size and journal mode, a backup restores
//! to the same logical content and to the exact bytes the manifest's SHA-256 names; and an
//! older backup keeps restoring to its own content after the database changes. Some cases
//! add megabytes of incompressible rows, in repositories whose packs close at 1-3 MiB, so
//! that backups span several frames (1 MiB of pages each) and several packs.
//!
//! `PROPTEST_CASES` sets the number of cases (default 24, split over two tests); a failing
//! case is saved in `tests/roundtrip_prop.proptest-regressions` (commit it) and replayed
//! first by every later run.

mod common;
use common::*;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
enum ColType {
    Integer,
    Real,
    Text,
    Blob,
}

impl ColType {
    fn sql(self) -> &'static str {
        match self {
            ColType::Integer => "INTEGER",
            ColType::Real => "REAL",
            ColType::Text => "TEXT",
            ColType::Blob => "BLOB",
        }
    }
}

/// A value; large TEXT/BLOB values are described by (length, seed) and expanded on insert,
/// so shrinking stays cheap.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(usize, u64),
    Blob(usize, u64),
}

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    common::tree::noise(len, seed)
}

impl Val {
    fn to_sql(&self) -> Sql {
        match *self {
            Val::Null => Sql::Null,
            Val::Int(i) => Sql::Integer(i),
            Val::Real(r) => Sql::Real(r),
            Val::Text(len, seed) => Sql::Text(
                bytes(len, seed)
                    .into_iter()
                    .map(|b| char::from(b'a' + b % 26))
                    .collect(),
            ),
            Val::Blob(len, seed) => Sql::Blob(bytes(len, seed)),
        }
    }
}

#[derive(Debug, Clone)]
struct Table {
    cols: Vec<ColType>,
    indexed: bool,
    rows: Vec<Vec<Val>>,
}

#[derive(Debug, Clone)]
enum Change {
    Update {
        table: usize,
        row: usize,
        col: usize,
        val: Val,
    },
    Delete {
        table: usize,
        row: usize,
    },
    Insert {
        table: usize,
        vals: Vec<Val>,
    },
}

/// Incompressible rows in a table `bulk(id, b)`: `rows` blobs of `size` bytes from `seed`.
#[derive(Debug, Clone, Copy)]
struct Bulk {
    rows: u32,
    size: usize,
    seed: u64,
}

impl Bulk {
    /// A seed of its own for each row (`bytes` ignores the lowest bit of a seed).
    fn row_seed(&self, row: u32) -> u64 {
        self.seed
            .wrapping_add(u64::from(row).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// Raw page bytes per frame (`FRAME_BYTES` in src/ops/backup.rs).
const FRAME_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
struct Case {
    page_size: u32,
    wal: bool,
    auto_vacuum: bool,
    /// Keep the writing connection open during backups (WAL: content still in the -wal).
    keep_open: bool,
    tables: Vec<Table>,
    changes: Vec<Change>,
    bulk: Option<Bulk>,
    /// Packs close at this many MiB (the repository's `pack_size`) instead of 16.
    pack_mib: Option<u64>,
}

fn length() -> impl Strategy<Value = usize> {
    // Mostly small; sometimes larger than any page size, to force overflow pages.
    prop_oneof![
        12 => 0usize..64,
        2 => 600usize..5_000,
        1 => 66_000usize..100_000,
    ]
}

fn val() -> impl Strategy<Value = Val> {
    // Any column can hold any value (SQLite's type affinity), NULLs included.
    prop_oneof![
        1 => Just(Val::Null),
        2 => any::<i64>().prop_map(Val::Int),
        1 => any::<f64>().prop_map(Val::Real),
        2 => (length(), any::<u64>()).prop_map(|(l, s)| Val::Text(l, s)),
        2 => (length(), any::<u64>()).prop_map(|(l, s)| Val::Blob(l, s)),
    ]
}

fn typed_val(t: ColType) -> BoxedStrategy<Val> {
    let typed = match t {
        ColType::Integer => any::<i64>().prop_map(Val::Int).boxed(),
        ColType::Real => any::<f64>().prop_map(Val::Real).boxed(),
        ColType::Text => (length(), any::<u64>())
            .prop_map(|(l, s)| Val::Text(l, s))
            .boxed(),
        ColType::Blob => (length(), any::<u64>())
            .prop_map(|(l, s)| Val::Blob(l, s))
            .boxed(),
    };
    prop_oneof![1 => Just(Val::Null), 6 => typed, 1 => val()].boxed()
}

fn table() -> impl Strategy<Value = Table> {
    let col = prop_oneof![
        Just(ColType::Integer),
        Just(ColType::Real),
        Just(ColType::Text),
        Just(ColType::Blob),
    ];
    (proptest::collection::vec(col, 1..5), any::<bool>()).prop_flat_map(|(cols, indexed)| {
        let row: Vec<BoxedStrategy<Val>> = cols.iter().map(|c| typed_val(*c)).collect();
        proptest::collection::vec(row, 0..25).prop_map(move |rows| Table {
            cols: cols.clone(),
            indexed,
            rows,
        })
    })
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (any::<usize>(), any::<usize>(), any::<usize>(), val())
            .prop_map(|(table, row, col, val)| Change::Update { table, row, col, val }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(table, row)| Change::Delete { table, row }),
        2 => (any::<usize>(), proptest::collection::vec(val(), 4))
            .prop_map(|(table, vals)| Change::Insert { table, vals }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(512u32), Just(1024), Just(4096), Just(65536)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(table(), 1..5),
        proptest::collection::vec(change(), 1..12),
        // 3.3 to 5.9 MB of incompressible rows in a quarter of the cases, mostly with packs
        // of 1 or 2 MiB: several frames, several packs.
        prop_oneof![
            3 => Just(None),
            1 => (550u32..900, 6_000usize..6_500, any::<u64>())
                .prop_map(|(rows, size, seed)| Some(Bulk { rows, size, seed })),
        ],
        prop_oneof![1 => Just(None), 3 => (1u64..=2).prop_map(Some)],
    )
        .prop_map(
            |(page_size, wal, auto_vacuum, keep_open, tables, changes, bulk, pack_mib)| Case {
                page_size,
                wal,
                auto_vacuum,
                keep_open,
                tables,
                changes,
                pack_mib: bulk.and(pack_mib),
                bulk,
            },
        )
}

fn create(path: &Path, c: &Case) -> Connection {
    let conn = Connection::open(path).unwrap();
    // Page size and auto-vacuum only take effect before the first table; WAL after them.
    conn.execute_batch(&format!(
        "PRAGMA page_size={}; PRAGMA auto_vacuum={};",
        c.page_size,
        if c.auto_vacuum { "FULL" } else { "NONE" }
    ))
    .unwrap();
    let mode: String = conn
        .query_row(
            &format!(
                "PRAGMA journal_mode={}",
                if c.wal { "WAL" } else { "DELETE" }
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mode, if c.wal { "wal" } else { "delete" });
    let tx = conn.unchecked_transaction().unwrap();
    for (ti, t) in c.tables.iter().enumerate() {
        let cols: Vec<String> = t
            .cols
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("c{i} {}", ty.sql()))
            .collect();
        tx.execute_batch(&format!("CREATE TABLE t{ti}({});", cols.join(", ")))
            .unwrap();
        if t.indexed {
            tx.execute_batch(&format!("CREATE INDEX t{ti}_c0 ON t{ti}(c0);"))
                .unwrap();
        }
        for row in &t.rows {
            insert(&tx, ti, t.cols.len(), row);
        }
    }
    if let Some(b) = c.bulk {
        tx.execute_batch("CREATE TABLE bulk(id INTEGER PRIMARY KEY, b BLOB);")
            .unwrap();
        for i in 0..b.rows {
            tx.execute(
                "INSERT INTO bulk(id, b) VALUES (?1, ?2)",
                rusqlite::params![i, bytes(b.size, b.row_seed(i))],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let ps: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ps, i64::from(c.page_size));
    conn
}

fn insert(conn: &Connection, table: usize, ncols: usize, vals: &[Val]) {
    let marks: Vec<String> = (1..=ncols).map(|i| format!("?{i}")).collect();
    let params: Vec<Sql> = (0..ncols)
        .map(|i| vals.get(i).map_or(Sql::Null, Val::to_sql))
        .collect();
    conn.execute(
        &format!("INSERT INTO t{table} VALUES ({})", marks.join(", ")),
        rusqlite::params_from_iter(params),
    )
    .unwrap();
}

fn apply(conn: &Connection, c: &Case) {
    let tx = conn.unchecked_transaction().unwrap();
    for ch in &c.changes {
        let rowids = |t: usize| -> Vec<i64> {
            let mut s = tx
                .prepare(&format!("SELECT rowid FROM t{t} ORDER BY rowid"))
                .unwrap();
            s.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        match ch {
            Change::Update {
                table,
                row,
                col,
                val,
            } => {
                let t = table % c.tables.len();
                let ids = rowids(t);
                if ids.is_empty() {
                    continue;
                }
                let col = col % c.tables[t].cols.len();
                tx.execute(
                    &format!("UPDATE t{t} SET c{col} = ?1 WHERE rowid = ?2"),
                    rusqlite::params![val.to_sql(), ids[row % ids.len()]],
                )
                .unwrap();
            }
            Change::Delete { table, row } => {
                let t = table % c.tables.len();
                let ids = rowids(t);
                if ids.is_empty() {
                    continue;
                }
                tx.execute(
                    &format!("DELETE FROM t{t} WHERE rowid = ?1"),
                    [ids[row % ids.len()]],
                )
                .unwrap();
            }
            Change::Insert { table, vals } => {
                let t = table % c.tables.len();
                insert(&tx, t, c.tables[t].cols.len(), vals);
            }
        }
    }
    // Every 10th bulk row gets new bytes: the second backup adds pages to new packs and
    // reuses the rest from several old ones.
    if let Some(b) = c.bulk {
        for i in (0..b.rows).step_by(10) {
            tx.execute(
                "UPDATE bulk SET b = ?1 WHERE id = ?2",
                rusqlite::params![bytes(b.size, !b.row_seed(i)), i],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Restore `id` to a new file and check it against the manifest; returns the logical dump.
fn restore_checked(env: &Env, id: &str, name: &str) -> Vec<String> {
    let out = env.path(name);
    let r = env.json(&["restore", id, "--output", out.to_str().unwrap()]);
    let m = env.json(&["show", id]);
    let sha = m["sqlite"]["sha256"].as_str().unwrap();
    assert_eq!(sha256_file(&out), sha, "restored bytes match the manifest");
    assert_eq!(r["id"], id);
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(len, m["sqlite"]["logical_bytes"].as_u64().unwrap());
    assert_eq!(
        len,
        m["sqlite"]["page_size"].as_u64().unwrap() * m["sqlite"]["page_count"].as_u64().unwrap()
    );
    let conn =
        Connection::open_with_flags(&out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(conn);
    dump(&out)
}

/// Make the repository with packs of `mib` MiB: `repo init`, then its (unauthenticated,
/// unencrypted) config's `pack_size` lowered; lifeboat closes packs at 1 MiB at the least.
fn init_with_pack_size(env: &Env, mib: u64) {
    env.json(&["repo", "init"]);
    let path = env.repo().join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(config["pack_size"], 16 << 20, "{config}");
    config["pack_size"] = (mib << 20).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// What a backup of a case with bulk rows stored: more than two frames of new pages, and
/// with small packs, in several packs (at most a frame over `pack_size` each).
fn spans_frames_and_packs(c: &Case, backup: &serde_json::Value, shown: &serde_json::Value) {
    let Some(b) = c.bulk else { return };
    let raw = num(backup, "new_raw_bytes");
    let bulk_bytes = u64::from(b.rows) * b.size as u64;
    assert!(
        raw >= bulk_bytes && raw > 2 * FRAME_BYTES,
        "{raw} new bytes for {bulk_bytes} bytes of bulk rows: {backup}"
    );
    if let Some(mib) = c.pack_mib {
        // A pack closes once a frame takes it past `pack_size`.
        let packs = shown["stored"]["packs"].as_array().expect("packs").len() as u64;
        let stored = num(backup, "new_stored_bytes");
        assert!(
            stored > (mib << 20) + FRAME_BYTES
                && packs >= 2
                && packs >= stored / ((mib << 20) + 2 * FRAME_BYTES),
            "{stored} bytes in {packs} packs of {mib} MiB: {shown}"
        );
    }
}

fn check(c: &Case) {
    let env = Env::new();
    let db = env.path("prop.db");
    if let Some(mib) = c.pack_mib {
        init_with_pack_size(&env, mib);
    }
    let conn = create(&db, c);
    let conn = if c.keep_open {
        Some(conn)
    } else {
        drop(conn);
        None
    };
    let v1 = dump(&db);
    let b1 = env.json(&["backup", db.to_str().unwrap()]);
    let id1 = b1["id"].as_str().unwrap().to_string();
    let m1 = env.json(&["show", &id1]);
    spans_frames_and_packs(c, &b1, &m1);
    assert_eq!(m1["sqlite"]["page_size"], c.page_size);
    assert_eq!(
        m1["sqlite"]["journal_mode"],
        if c.wal { "wal" } else { "delete" }
    );
    for (i, t) in c.tables.iter().enumerate() {
        assert_eq!(m1["sqlite"]["tables"][format!("t{i}")], t.rows.len());
    }
    if let Some(b) = c.bulk {
        assert_eq!(m1["sqlite"]["tables"]["bulk"], b.rows);
    }
    assert_eq!(restore_checked(&env, &id1, "r1.db"), v1);

    let conn = conn.unwrap_or_else(|| Connection::open(&db).unwrap());
    apply(&conn, c);
    let conn = if c.keep_open {
        Some(conn)
    } else {
        drop(conn);
        None
    };
    let v2 = dump(&db);
    let id2 = env.backup(&db);
    assert_eq!(restore_checked(&env, &id2, "r2.db"), v2);
    // The first backup is unaffected by the second.
    assert_eq!(restore_checked(&env, &id1, "r1-again.db"), v1);
    drop(conn);
}

/// `PROPTEST_CASES` cases in all (24 if unset), split in two halves (`half` 0 and 1) so they
/// run on two test threads. Failures are saved next to this file and replayed first.
fn run_cases(half: u32) {
    let total: u32 = match std::env::var("PROPTEST_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_CASES={v} is not a number")),
        Err(_) => 24,
    };
    let cases = total / 2 + if half == 0 { total % 2 } else { 0 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::default())),
        source_file: Some(file!()),
        max_shrink_iters: 200,
        ..Config::default()
    });
    runner
        .run(&case(), |c| {
            check(&c);
            Ok(())
        })
        .unwrap();
}

#[test]
fn random_databases_round_trip() {
    run_cases(0);
}

#[test]
fn random_databases_round_trip_more() {
    run_cases(1);
}
