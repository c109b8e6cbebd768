#!/usr/bin/env python3
"""Unit checks of the replication benchmark's helpers (no benchmark is run): the proxy's
request kinds, the decoding of Litestream's LTX files and Lifeboat's segments, the lag
arithmetic, and report_replicate.py's verdicts.

    python3 -m unittest discover -s bench -p 'test_*.py'     (scripts/test.sh runs it)
"""
import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import count_proxy  # noqa: E402
import replicate_analyze as an  # noqa: E402
import report_replicate  # noqa: E402

PS = 512   # page size of the synthetic files


def page(seq):
    """A page holding bench_marker's tag for commit `seq`."""
    body = b"\x0d" + b"\0" * 40 + b"SEQ:%012d" % seq
    return body + b"\0" * (PS - len(body))


def lz4_literals(data):
    """An LZ4 block of only literals (valid input for any LZ4 decoder)."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    out, rest = bytearray([0xF0]), n - 15
    while rest >= 255:
        out.append(255)
        rest -= 255
    out.append(rest)
    return bytes(out) + data


def ltx(min_txid, pages):
    """An LTX file (compressed pages) with `pages`: [(pgno, bytes)]."""
    head = b"LTX1" + struct.pack(">III", 2, PS, 10) + struct.pack(">QQ", min_txid, min_txid)
    head += b"\0" * (100 - len(head))
    body = b""
    for pgno, data in pages:
        block = lz4_literals(data)
        body += struct.pack(">IHI", pgno, 0, len(block)) + block
    return head + body + struct.pack(">IH", 0, 0)


def segment(stream, seq, commits):
    """A Lifeboat segment encoding (uncompressed): commits = [([(pgno, bytes)], continues)]."""
    header = {"format": 1, "stream": stream, "seq": seq, "page_size": PS,
              "commits": [{"time_ns": 0, "db_pages": 9, "pages": [p for p, _ in pages],
                           "continues": cont} for pages, cont in commits]}
    h = json.dumps(header).encode()
    data = b"".join(d for pages, _ in commits for _, d in pages)
    return b"LBSEG01\n" + struct.pack("<I", len(h)) + h + data + b"\0" * 32


class Decoding(unittest.TestCase):
    def test_lz4_with_a_match(self):
        # "abcd" as literals, then a match of 8 at offset 4 -> "abcd" * 3
        block = bytes([0x44]) + b"abcd" + struct.pack("<H", 4)
        self.assertEqual(an.lz4_block(block), b"abcd" * 3)

    def test_ltx_page_of_bench_marker(self):
        data = ltx(7, [(3, page(1)), (5, page(42)), (6, page(99))])
        self.assertEqual(an.decode_object(data, 5), ("ltx", 7, [(42, False)]))

    def test_segment_commits_and_continuation(self):
        seg = segment("s1", 4, [([(2, b"\0" * PS), (5, page(10))], False),
                                ([(5, page(11)), (8, b"\0" * PS)], True)])
        fam, order, commits = an.decode_object(seg, 5)
        self.assertEqual((fam, order, commits), ("s1", 4, [(10, False), (11, True)]))


class Events(unittest.TestCase):
    def write_log(self, d, objs):
        """objs: [(t1, path, body)] -> a proxy log with saved bodies."""
        log = os.path.join(d, "reqs.jsonl")
        with open(log, "w") as f:
            for n, (t1, path, body) in enumerate(objs):
                saved = os.path.join(d, "%d" % n)
                with open(saved, "wb") as b:
                    b.write(body)
                f.write(json.dumps({"n": n, "t0": t1, "t1": t1, "method": "PUT", "kind": "PUT",
                                    "detail": "PUT", "path": path, "query": "", "status": 200,
                                    "up": len(body), "down": 0, "saved": saved}) + "\n")
        return log

    def test_a_continued_commit_counts_where_it_ends_and_chains_wait(self):
        with tempfile.TemporaryDirectory() as d:
            log = self.write_log(d, [
                (10.0, "/b/p/wal/s/0", segment("s", 0, [([(5, page(1))], False)])),
                # segment 2 is stored before segment 1: it counts once 1 is there
                (11.0, "/b/p/wal/s/2", segment("s", 2, [([(5, page(3))], False)])),
                (12.0, "/b/p/wal/s/1", segment("s", 1, [([(5, page(2))], True)])),
            ])
            ev = [(t, s) for t, s, _, _ in an.events(log, 5, "/wal/")]
            self.assertEqual(ev, [(10_000_000_000, 1), (12_000_000_000, 1), (12_000_000_000, 3)])

    def test_lag(self):
        commits = [(1_000_000_000 + i * 100_000_000, i + 1) for i in range(10)]  # 1.0 .. 1.9 s
        events = [(1_500_000_000, 5), (2_500_000_000, 10)]
        res = an.lag(commits, events, at=[2_000_000_000])
        self.assertEqual(res["never_replicated"], 0)
        self.assertEqual(res["max_ms"], 1000.0)     # commit 6 at 1.5 s, stored at 2.5 s
        self.assertEqual(res["p50_ms"], 500.0)
        self.assertEqual(res["held_at"]["2000000000"], 5)
        self.assertEqual(an.lag(commits, events[:1])["never_replicated"], 5)


class ProxyKinds(unittest.TestCase):
    def test_kinds(self):
        c = count_proxy.classify
        self.assertEqual(c("GET", "/bench", "list-type=2&prefix=x%2F")[0], "LIST")
        self.assertEqual(c("GET", "/bench/x/0000/1-1.ltx", "")[0], "GET")
        self.assertEqual(c("PUT", "/bench/x/y", "partNumber=1&uploadId=u"), ("PUT", "PUT part"))
        self.assertEqual(c("POST", "/bench", "delete"), ("POST", "DELETE (batch)"))
        self.assertEqual(c("DELETE", "/bench/x/y", "")[0], "DELETE")
        self.assertEqual(c("HEAD", "/bench/x/y", "")[0], "HEAD")


def report(rows):
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write("# test results\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    out, argv = io.StringIO(), sys.argv
    try:
        sys.argv = ["report_replicate.py", f.name]
        with contextlib.redirect_stdout(out):
            report_replicate.main()
    finally:
        sys.argv = argv
        os.unlink(f.name)
    return out.getvalue()


def verdict(text, target):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line[7:].startswith(target):
            return line[1:5].strip()
    raise AssertionError(f"no target {target!r} in:\n{text}")


OK = "integrity ok, seq 100 (expected)"


class Verdicts(unittest.TestCase):
    def rows(self, lb_restore_note=OK):
        return [
            ("lag p99 ms", "lifeboat", "800", ""), ("lag p99 ms", "litestream", "1500", ""),
            ("stored B", "lifeboat", "100", ""), ("stored B", "litestream", "300", ""),
            ("requests", "lifeboat", "60", ""), ("requests", "litestream", "100", ""),
            ("CPU s", "lifeboat", "1", ""), ("CPU s", "litestream", "2", ""),
            ("peak RSS KiB", "lifeboat", str(100 * 1024), ""),
            ("restore latest s", "lifeboat", "1", lb_restore_note),
            ("restore latest s", "litestream", "3", OK),
            ("kill: lost commits older than kill-1s", "lifeboat", "0", OK),
            ("kill: re-shipped (estimate) B", "lifeboat", "2000000", ""),
        ]

    def test_verdicts(self):
        text = report(self.rows())
        self.assertEqual(verdict(text, "replication lag p99"), "PASS")
        self.assertEqual(verdict(text, "stored bytes"), "PASS")
        self.assertEqual(verdict(text, "requests"), "MISS")          # 60 > 0.5 x 100
        self.assertEqual(verdict(text, "after kill -9 + restart, <= 1 MB"), "MISS")
        self.assertEqual(verdict(text, "restore to latest"), "PASS")
        self.assertEqual(verdict(text, "peak RSS"), "PASS")

    def test_a_bad_restore_fails_however_fast(self):
        text = report(self.rows("BAD RESTORE: integrity=ok seq=99 want=100 (at least 100)"))
        self.assertEqual(verdict(text, "restore to latest"), "FAIL")

    def test_without_litestream_ratios_are_not_measured(self):
        text = report([r for r in self.rows() if r[1] == "lifeboat"])
        self.assertEqual(verdict(text, "stored bytes"), "n/a")
        self.assertEqual(verdict(text, "replication lag p99"), "PASS")


if __name__ == "__main__":
    unittest.main()
