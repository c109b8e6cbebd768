#!/usr/bin/env python3
"""The write workload of the replication benchmark (replicate.sh).

    replicate_workload.py DB LOG [--rate 200] [--secs 60] [--burst 20]
                          [--burst-bytes 5000000] [--seed 11]
    replicate_workload.py DB --init        # create bench_marker, print its root page

Opens the live database the way an application does (WAL mode, synchronous=
NORMAL, busy_timeout 5000, the default autocheckpoint) and commits:

  1. small transactions at RATE per second for SECS seconds, each inserting one
     `events` row (a realistic payload, from make_db.PayloadGen) and updating the
     payload of a random existing row, on a fixed schedule (transaction i is due
     at start + i/RATE; a late one runs at once, so the count is always
     RATE x SECS);
  2. then a burst of BURST large transactions back to back, each inserting
     ~BURST_BYTES of new `events` rows.

Every transaction also sets the one row of `bench_marker` to its sequence
number (seq, 1, 2, 3 ... continuing from the value found), both as an integer
and as the text tag "SEQ:%012d" (replicate_lag.py finds the tag in replicated
pages).  After each COMMIT returns, "commit_time_ns<TAB>seq<TAB>begin_ns" is
appended to LOG (line-buffered, so a reader sees each commit as soon as it is
made): commit_time_ns is when COMMIT returned, begin_ns when the transaction
was about to BEGIN, so the commit reached the WAL somewhere in between (COMMIT
may also run SQLite's auto-checkpoint before it returns).  A
restored copy tells which commit it holds: SELECT seq FROM bench_marker.

The same seed gives the same transactions, so both tools see identical work.
At the end one JSON line goes to stdout: the seq ranges of the two phases, the
achieved rate, the worst lateness against the schedule and the times.
"""
import argparse
import json
import os
import random
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_db import PayloadGen  # noqa: E402  (rows like the rest of the table)


def connect(path):
    con = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    con.execute("PRAGMA busy_timeout=5000")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def init(con):
    """Create bench_marker (one row, seq 0) if missing; return (root page, seq)."""
    con.execute("CREATE TABLE IF NOT EXISTS bench_marker(seq INTEGER NOT NULL, tag TEXT NOT NULL)")
    if con.execute("SELECT count(*) FROM bench_marker").fetchone()[0] == 0:
        con.execute("INSERT INTO bench_marker VALUES (0, ?)", ("SEQ:%012d" % 0,))
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='bench_marker'").fetchone()[0]
    return root, con.execute("SELECT seq FROM bench_marker").fetchone()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("db")
    ap.add_argument("log", nargs="?")
    ap.add_argument("--init", action="store_true")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--secs", type=float, default=60)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--burst-bytes", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()

    con = connect(a.db)
    if a.init:
        root, seq = init(con)
        print(root, seq)
        return
    if not a.log:
        ap.error("LOG is required")
    _, seq = init(con)
    max_id, max_ts = con.execute("SELECT max(id), max(ts) FROM events").fetchone()
    gen = PayloadGen(a.seed, ts=max_ts)
    pick = random.Random(a.seed + 1)
    log = open(a.log, "a", buffering=1)

    def commit(body):
        nonlocal seq
        seq += 1
        t0 = time.time_ns()
        con.execute("BEGIN IMMEDIATE")
        body()
        con.execute("UPDATE bench_marker SET seq = ?, tag = ?", (seq, "SEQ:%012d" % seq))
        con.execute("COMMIT")
        t = time.time_ns()
        log.write("%d\t%d\t%d\n" % (t, seq, t0))
        return t

    def small():
        con.execute("INSERT INTO events(user_id, ts, kind, payload) VALUES (?,?,?,?)", gen.row())
        con.execute("UPDATE events SET payload = ? WHERE id = ?",
                    (gen.payload("click"), pick.randint(1, max_id)))

    rows_per_burst = max(1, a.burst_bytes // 250)   # rows average ~250 B with their index entry

    def large():
        con.executemany("INSERT INTO events(user_id, ts, kind, payload) VALUES (?,?,?,?)",
                        (gen.row() for _ in range(rows_per_burst)))

    n_small = int(round(a.rate * a.secs))
    first = seq + 1
    start = time.monotonic()
    t_start = time.time_ns()
    worst_late = 0.0
    for i in range(n_small):
        due = start + i / a.rate
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            worst_late = max(worst_late, now - due)
        commit(small)
    small_secs = time.monotonic() - start
    small_last = seq
    t_burst = time.time_ns()
    for _ in range(a.burst):
        commit(large)
    t_end = time.time_ns()
    con.close()
    print(json.dumps({
        "small": [first, small_last], "burst": [small_last + 1, seq],
        "rate_target": a.rate, "rate_achieved": round(n_small / small_secs, 1),
        "worst_late_ms": round(worst_late * 1000, 1),
        "t_start_ns": t_start, "t_burst_ns": t_burst, "t_end_ns": t_end,
        "burst_rows_per_txn": rows_per_burst,
        "burst_secs": round((t_end - t_burst) / 1e9, 2)}))


if __name__ == "__main__":
    main()
