#!/usr/bin/env python3
"""Generate the benchmark DuckDB database, and apply the benchmark's changes to it.

    duckdb_db.py make OUT.duckdb ROWS      # a new analytics database of ROWS events
    duckdb_db.py change DB.duckdb a|b      # one of the two changes, then CHECKPOINT
    duckdb_db.py count DB.duckdb           # "events=N users=N products=N" (read-only)

Everything goes through the DuckDB command-line tool: $LIFEBOAT_DUCKDB, else `duckdb` on
PATH (the one Lifeboat itself uses).

The database looks like a product-analytics warehouse: an `events` fact table (dense ids,
increasing timestamps, skewed user ids, a weighted event-type vocabulary, country, device,
page path, product and money columns on commerce events, latencies, a status, and free text
on searches and errors) plus `users` and `products` dimension tables. Every value is derived
from the row number with DuckDB's hash(), so the data is the same at every generation (the
file's block layout may differ, as DuckDB writes in parallel), and rows appended by change (a)
look like the originals. The mix is tuned so that `zstd -3` still finds something to squeeze
in DuckDB's own compressed blocks, as in real files, rather than random bytes.

The changes (each ends with CHECKPOINT, and the CLI's clean close leaves no .wal):
  a  "a typical day": append 1% new events (the next ids, later timestamps), and update a
     contiguous 1% of existing events (ids from 90% of the table on: last week's data) the
     way an identity-stitching job does: visitors who later signed in get the account's
     user_id and session_id, and status 'stitched'
  b  the same UPDATE on 1% of the events chosen at random (hash of the id)
Both changes update the same three columns, so the only difference is where the rows are.

The new file is written to OUT.tmp and renamed at the end, so an interrupted run never
leaves a half-built database that looks reusable.
"""
import os
import shutil
import subprocess
import sys
import time

N_USERS = 2_000_000
N_PRODUCTS = 50_000
EPOCH = "2025-01-01 00:00:00"
MS_PER_EVENT = 400            # 30 M events span ~139 days

# (value, weight): the event types of a web shop's tracking.
EVENT_TYPES = [("page_view", 40), ("click", 18), ("api_call", 12), ("search", 8),
               ("add_to_cart", 6), ("scroll", 5), ("login", 3), ("logout", 2),
               ("purchase", 2), ("signup", 1), ("error", 1), ("refund_request", 1),
               ("share", 1)]
COUNTRIES = ["US"] * 30 + ["DE"] * 8 + ["GB"] * 8 + ["FR"] * 6 + ["IN"] * 6 + ["BR"] * 5 + [
    "CA", "CA", "CA", "JP", "JP", "JP", "ES", "ES", "IT", "IT", "NL", "NL", "SE", "PL", "MX",
    "AU", "AU", "KR", "TR", "AR", "CH", "BE", "AT", "IE", "PT", "NO", "DK", "FI", "NZ", "ZA"]
DEVICES = ["web"] * 45 + ["ios"] * 25 + ["android"] * 25 + ["tablet"] * 4 + ["tv"]
PATHS = ["/", "/home", "/search", "/cart", "/checkout", "/account", "/account/orders",
         "/account/settings", "/help", "/help/returns", "/blog", "/deals", "/category/shoes",
         "/category/shirts", "/category/electronics", "/category/home", "/category/toys",
         "/category/books", "/login", "/signup"]
WORDS = ["red", "blue", "black", "running", "shoes", "shirt", "wireless", "headphones", "usb",
         "cable", "charger", "laptop", "stand", "desk", "lamp", "kids", "toy", "book", "gift",
         "men", "women", "size", "large", "small", "cotton", "leather", "waterproof", "jacket",
         "winter", "summer", "sale", "cheap", "best", "organic", "coffee", "mug", "phone",
         "case", "glass", "steel", "bottle", "backpack", "travel", "camera", "watch", "smart"]
ERRORS = ["timeout contacting payment provider", "inventory service returned 503",
          "card declined: insufficient funds", "address validation failed",
          "rate limit exceeded for client", "session expired during checkout",
          "null pointer in recommendation widget", "image CDN returned 404"]
UTM = ["google/cpc/spring_sale", "facebook/social/retarget", "newsletter/email/weekly",
       "bing/cpc/brand", "instagram/social/influencer", "direct", "direct", "direct",
       "organic", "organic", "organic", "affiliate/partner/coupon"]


def duckdb():
    return os.environ.get("LIFEBOAT_DUCKDB") or shutil.which("duckdb") or sys.exit(
        "no DuckDB CLI: set LIFEBOAT_DUCKDB or put duckdb on PATH (pip install duckdb-cli)")


def run_sql(db, sql, readonly=False):
    args = [duckdb(), "-init", "/dev/null", "-batch", "-noheader", "-csv"]
    if readonly:
        args.append("-readonly")
    p = subprocess.run(args + [db], input=sql, text=True, capture_output=True)
    if p.returncode != 0 or "Error" in p.stderr:
        sys.exit(f"duckdb failed on {db}:\n{p.stderr.strip()[:2000]}")
    return p.stdout


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def pick(values, h):
    """SQL choosing from `values` (a list; repeats weight it) by the hash expression `h`."""
    return f"[{', '.join(lit(v) for v in values)}][CAST(1 + ({h}) % {len(values)} AS BIGINT)]"


def weighted(pairs):
    return [v for v, w in pairs for _ in range(w)]


def macros():
    """Temporary macros: events_of(lo, hi) is the events with ids lo..hi-1."""
    h = lambda salt: f"hash(i, {salt})"   # noqa: E731  one independent 64-bit hash per column
    et = pick(weighted(EVENT_TYPES), h(1))
    return f"""
CREATE OR REPLACE TEMP MACRO skew(x, n) AS CAST(floor(pow((x % 1000003) / 1000003.0, 2.2) * n) AS INTEGER);
CREATE OR REPLACE TEMP MACRO word(x) AS {pick(WORDS, "x")};
CREATE OR REPLACE TEMP MACRO events_of(lo, hi) AS TABLE
SELECT
    i AS event_id,
    TIMESTAMP '{EPOCH}' + to_milliseconds(i * {MS_PER_EVENT} + {h(2)} % {MS_PER_EVENT}) AS ts,
    1 + skew({h(3)}, {N_USERS}) AS user_id,
    CAST(({h(3)} % 1000003) * 1000 + (i // 4000) % 1000 AS BIGINT) AS session_id,
    et AS event_type,
    {pick(COUNTRIES, h(4))} AS country,
    {pick(DEVICES, h(5))} AS device,
    CASE WHEN et IN ('add_to_cart', 'purchase', 'refund_request', 'share', 'click')
         THEN '/product/' || (1 + skew({h(6)}, {N_PRODUCTS}))
         ELSE {pick(PATHS, h(6))} END AS page,
    CASE WHEN et IN ('add_to_cart', 'purchase', 'refund_request', 'share')
         THEN 1 + skew({h(6)}, {N_PRODUCTS}) END AS product_id,
    CASE WHEN et IN ('add_to_cart', 'purchase') THEN CAST(1 + {h(7)} % 4 AS SMALLINT) END AS quantity,
    CASE WHEN et IN ('add_to_cart', 'purchase', 'refund_request')
         THEN CAST((199 + {h(8)} % 25000) / 100.0 AS DECIMAL(12, 2)) END AS amount,
    CAST(5 + pow(({h(9)} % 10007) / 10007.0, 3) * 4000 AS INTEGER) AS duration_ms,
    CASE WHEN et = 'error' THEN 'failed' WHEN {h(10)} % 50 = 0 THEN 'retried' ELSE 'ok' END AS status,
    {pick(UTM, h(11))} AS referrer,
    CASE WHEN et = 'search'
         THEN array_to_string([word({h(12)}),
                               word({h(13)}),
                               word({h(14)})][1:CAST(1 + {h(15)} % 3 AS BIGINT)], ' ')
         WHEN et = 'error'
         THEN {pick(ERRORS, h(12))} || ' (request ' || lower(hex({h(13)})) || ')'
         END AS detail
FROM (SELECT i, {et} AS et FROM range(lo, hi) r(i));
"""


def make(out, rows):
    tmp = out + ".tmp"
    for f in (tmp, tmp + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    t = time.monotonic()
    run_sql(tmp, macros() + f"""
CREATE TABLE users AS
SELECT u AS user_id,
       TIMESTAMP '2022-01-01' + to_seconds(hash(u, 20) % (3 * 365 * 86400)) AS signed_up,
       {pick(COUNTRIES, "hash(u, 21)")} AS country,
       {pick(["free"] * 8 + ["plus", "pro"], "hash(u, 22)")} AS plan,
       'user' || u || '@' || {pick(["gmail.com", "yahoo.com", "outlook.com", "example.org", "proton.me"], "hash(u, 23)")} AS email
FROM range(1, {N_USERS} + 1) r(u);
CREATE TABLE products AS
SELECT p AS product_id,
       {pick(WORDS, "hash(p, 30)")} || ' ' || {pick(WORDS, "hash(p, 31)")} || ' ' || {pick(WORDS, "hash(p, 32)")} AS name,
       {pick([c.split("/")[-1] for c in PATHS if c.startswith("/category/")], "hash(p, 33)")} AS category,
       CAST((199 + hash(p, 34) % 25000) / 100.0 AS DECIMAL(12, 2)) AS list_price
FROM range(1, {N_PRODUCTS} + 1) r(p);
CREATE TABLE events AS SELECT * FROM events_of(0, {rows});
CHECKPOINT;
""")
    for f in (tmp + ".wal",):
        if os.path.exists(f) and os.path.getsize(f):
            sys.exit(f"{f} left behind")
    os.replace(tmp, out)
    print(f"{out}: {rows} events, {os.path.getsize(out)} bytes in {time.monotonic() - t:.0f} s",
          file=sys.stderr)


def change(db, which):
    n = int(run_sql(db, "SELECT count(*) FROM events;", readonly=True).strip())
    k = n // 100
    # Identity stitching: events of visitors who later signed in are given the account's
    # user and session ids, and marked.
    fix = ("user_id = 1 + skew(hash(event_id, 98), %d), "
           "session_id = CAST((hash(event_id, 98) %% 1000003) * 1000 + 999 AS BIGINT), "
           "status = 'stitched'" % N_USERS)
    if which == "a":
        lo = n * 9 // 10
        sql = (f"INSERT INTO events SELECT * FROM events_of({n}, {n + k});\n"
               f"UPDATE events SET {fix} WHERE event_id >= {lo} AND event_id < {lo + k};\n")
        what = f"appended {k} events (ids {n}..{n + k - 1}), updated ids {lo}..{lo + k - 1} (contiguous)"
    elif which == "b":
        sql = f"UPDATE events SET {fix} WHERE hash(event_id, 99) % 100 = 0;\n"
        what = "updated ~1% of events at random (hash(event_id) % 100 = 0)"
    else:
        sys.exit(f"unknown change {which!r} (a or b)")
    out = run_sql(db, macros() + "BEGIN;\n" + sql + "COMMIT;\nCHECKPOINT;\n"
                  "SELECT count(*) FILTER (status = 'stitched'), count(*) FROM events;\n")
    corrected, total = out.strip().splitlines()[-1].split(",")
    for suffix in (".wal", ".wal.checkpoint", ".wal.recovery"):
        if os.path.exists(db + suffix) and os.path.getsize(db + suffix):
            sys.exit(f"{db + suffix} left behind after the change")
    print(f"change ({which}): {what}; {corrected} rows updated, {total} events now")


def count(db):
    out = run_sql(db, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM users), "
                      "(SELECT count(*) FROM products);", readonly=True)
    e, u, p = out.strip().splitlines()[-1].split(",")
    print(f"events={e} users={u} products={p}")


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "make":
        make(a[1], int(a[2]))
    elif len(a) == 3 and a[0] == "change":
        change(a[1], a[2])
    elif len(a) == 2 and a[0] == "count":
        count(a[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
