#!/usr/bin/env python3
"""Generate the benchmark SQLite database.

    make_db.py OUT.db ROWS [SEED]

Creates an `events` table that looks like an application's event log:
ids are dense, timestamps increase, user ids are skewed (a few users are
very active), and the payload is small JSON built from realistic vocabularies
plus some high-entropy fields (session ids, IPs, latencies).  The mix is
tuned so that `zstd -3` shrinks the whole file roughly 3x, like real data,
rather than random garbage (incompressible) or repeated text (trivially
compressible), either of which would make a backup-size comparison
meaningless.

The file is written to OUT.db.tmp and renamed at the end so an interrupted
run never leaves a half-built database that looks reusable.

Loading is done with journal_mode=OFF and synchronous=OFF (no crash safety
needed for a throwaway file), and the (user_id, ts) index is built after
the load, which is much faster than maintaining it row by row.  The file is
switched to WAL mode at the end; that setting is persistent in the header.

The module also exports `PayloadGen`, reused by change_db.py so updated and
inserted rows look like the originals.
"""
import os
import random
import sqlite3
import sys
import time

PAGE_SIZE = 4096
TS_START = 1_704_067_200  # 2024-01-01T00:00:00Z
N_USERS = 200_000

KINDS = ["page_view"] * 10 + ["click"] * 5 + ["api_call"] * 4 + [
    "search", "search", "login", "logout", "add_to_cart", "purchase", "error",
]
PATHS = [
    "/", "/home", "/search", "/cart", "/checkout", "/account", "/account/orders",
    "/products/{}", "/products/{}/reviews", "/category/{}", "/api/v1/items/{}",
    "/api/v1/users/{}/prefs", "/blog/{}", "/help/{}",
]
UAS = [
    "Chrome/120.0 (Windows 10)", "Safari/17.2 (macOS 14.2)", "Safari/17.2 (iOS 17.2)",
    "Firefox/121.0 (Linux)", "Chrome/120.0 (Android 14)", "okhttp/4.12.0",
    "python-requests/2.31.0",
]
REFS = ["", "", "google.com", "t.co", "news.ycombinator.com", "duckduckgo.com", "bing.com"]
COUNTRIES = ["US", "US", "US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "NL", "SE", "PL"]
STATUSES = [200] * 30 + [201, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 500, 503]


class PayloadGen:
    """Deterministic generator of (user_id, ts, kind, payload) rows."""

    def __init__(self, seed, ts=TS_START):
        self.r = random.Random(seed)
        self.ts = ts

    def user(self):
        # Squaring a uniform variate skews toward low ids: a few heavy users.
        return 1 + int(N_USERS * self.r.random() ** 2)

    def payload(self, kind):
        r = self.r
        path = r.choice(PATHS)
        if "{}" in path:
            path = path.format(r.randrange(1, 50_000))
        ms = int(r.lognormvariate(3.5, 0.8))
        parts = [
            '{"sid":"%016x"' % r.getrandbits(64),
            '"ip":"%d.%d.%d.%d"' % (r.choice((10, 172, 192, 81, 93)), r.randrange(256),
                                    r.randrange(256), r.randrange(1, 255)),
            '"path":"%s"' % path,
            '"status":%d' % r.choice(STATUSES),
            '"ms":%d' % ms,
            '"ua":"%s"' % r.choice(UAS),
            '"country":"%s"' % r.choice(COUNTRIES),
        ]
        ref = r.choice(REFS)
        if ref:
            parts.append('"ref":"%s"' % ref)
        if kind == "purchase":
            parts.append('"amount_cents":%d,"currency":"USD"' % r.randrange(199, 49_999))
        elif kind == "search":
            parts.append('"q":"%s"' % r.choice(["shoes", "usb c cable", "laptop stand",
                                                   "coffee", "gift card", "headphones"]))
        elif kind == "error":
            parts.append('"err":"%s"' % r.choice(["timeout", "ECONNRESET", "validation"]))
        return ",".join(parts) + "}"

    def row(self):
        """A new event, later than the previous one."""
        self.ts += self.r.randrange(0, 9)
        kind = self.r.choice(KINDS)
        return (self.user(), self.ts, kind, self.payload(kind))


def create_schema(con):
    con.execute("""CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL,
        ts      INTEGER NOT NULL,
        kind    TEXT    NOT NULL,
        payload TEXT    NOT NULL)""")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, rows = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) == 4 else 42
    tmp = out + ".tmp"
    for p in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
        if os.path.exists(p):
            os.remove(p)

    t0 = time.time()
    con = sqlite3.connect(tmp, isolation_level=None)
    con.execute(f"PRAGMA page_size={PAGE_SIZE}")
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-262144")  # 256 MiB: keeps the index build in memory
    create_schema(con)

    gen = PayloadGen(seed)
    batch = 200_000
    done = 0
    while done < rows:
        n = min(batch, rows - done)
        con.execute("BEGIN")
        con.executemany("INSERT INTO events(user_id, ts, kind, payload) VALUES (?,?,?,?)",
                        (gen.row() for _ in range(n)))
        con.execute("COMMIT")
        done += n
        print(f"\r  make_db: {done:,}/{rows:,} rows ({time.time() - t0:.0f}s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print("  make_db: building index on (user_id, ts)", file=sys.stderr)
    con.execute("CREATE INDEX events_user_ts ON events(user_id, ts)")
    con.execute("PRAGMA journal_mode=WAL")  # persistent: every copy opens in WAL mode
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    os.replace(tmp, out)
    for p in (tmp + "-wal", tmp + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    print(f"  make_db: {out}: {os.path.getsize(out):,} bytes in {time.time() - t0:.0f}s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
