#!/usr/bin/env python3
"""Apply a realistic day-of-traffic change to the benchmark database.

    change_db.py DB [SEED [SCALE]]

Relative to N, the largest id (the row count while ids are dense):
  * update 1.0% of rows chosen at random (new payload, as an app would when
    it enriches or corrects an event),
  * insert 0.5% new rows at the end (ids and timestamps continue),
  * delete 0.2% of rows chosen at random,
(SCALE, default 1, multiplies all three; retention.sh uses 0.1 so that 60
days of history fit on disk), each in 1,000-row transactions, the way an
application commits, with the common WAL settings (synchronous=NORMAL,
default auto-checkpoint).  The scattered updates and deletes touch pages
all over the table and index, which is exactly what makes incremental
backup hard.

Finishes with PRAGMA wal_checkpoint(TRUNCATE) so the main file holds every
change (needed for the page comparison and for file-level tools like restic).
Prints one line: "updated U inserted I deleted D in S s".
"""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_db import PayloadGen  # noqa: E402  (same vocabularies as the original rows)

TXN_ROWS = 1000


def in_txns(con, sql, rows):
    """Execute `sql` for each row, committing every TXN_ROWS rows."""
    for i in range(0, len(rows), TXN_ROWS):
        con.execute("BEGIN")
        con.executemany(sql, rows[i:i + TXN_ROWS])
        con.execute("COMMIT")


def main():
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__)
    db = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) >= 3 else 7
    scale = float(sys.argv[3]) if len(sys.argv) == 4 else 1.0
    t0 = time.time()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    max_id, max_ts = con.execute("SELECT max(id), max(ts) FROM events").fetchone()
    n = max_id

    gen = PayloadGen(seed, ts=max_ts)
    r = gen.r
    m = int(n * scale)   # == n at scale 1 (the default): the same counts as ever
    n_upd, n_ins, n_del = m // 100, m // 200, m // 500
    # Disjoint random victims for updates and deletes, in random order.  Ids
    # are dense in a fresh database; after earlier runs' deletes (retention.sh
    # applies one change per day) victims that are gone are replaced by more
    # draws among the rows that exist.  A fresh database draws none: its change
    # is the same as ever.
    want = n_upd + n_del
    victims = r.sample(range(1, n + 1), want)
    kinds = dict(con.execute(
        "SELECT id, kind FROM events WHERE id IN (%s)" % ",".join(map(str, victims))))
    if len(kinds) < want:
        seen = set(victims)
        victims = [v for v in victims if v in kinds]
        while len(victims) < want:
            v = r.randint(1, n)
            if v not in seen:
                seen.add(v)
                row = con.execute("SELECT kind FROM events WHERE id = ?", (v,)).fetchone()
                if row:
                    kinds[v] = row[0]
                    victims.append(v)
    upd_ids, del_ids = victims[:n_upd], victims[n_upd:]

    updates = [(gen.payload(kinds[i]), i) for i in upd_ids]
    in_txns(con, "UPDATE events SET payload = ? WHERE id = ?", updates)

    inserts = [gen.row() for _ in range(n_ins)]
    in_txns(con, "INSERT INTO events(user_id, ts, kind, payload) VALUES (?,?,?,?)", inserts)

    in_txns(con, "DELETE FROM events WHERE id = ?", [(i,) for i in del_ids])

    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    print(f"updated {n_upd} inserted {n_ins} deleted {n_del} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
