#!/usr/bin/env python3
"""Unit checks of report_pg_physical.py's verdicts on tiny fake results (no benchmark is run).

    python3 -m unittest discover -s bench -p 'test_*.py'     (scripts/test.sh runs it)
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_pg_physical as rp  # noqa: E402
from test_report import md_verdict as verdict, run as run_report  # noqa: E402

GOOD = "checked: server up and recovery ended in 3 s; accounts 500000 sum 0; ..."
BAD = "BAD RESTORE: got 'accounts 499999 ...', want 'accounts 500000 ...'"
SKIPPED = "skipped: SKIP_LIFEBOAT=1 (development run without Lifeboat)"


def rows(lb_full_secs="10", lb_second_bytes="300", lb_restore_secs="20", lb_restore_note=GOOD,
         lb_push_secs="4", lb_rss="200000", enc_note="200 segments of 16 MiB; runs 5 s"):
    return [
        ("full backup", rp.LIFEBOAT, lb_full_secs, "900", lb_rss, "runs 10 11 9 s"),
        ("full backup", rp.PGBACKREST, "10", "1000", "30000", ""),
        ("full backup", rp.BASEBACKUP, "12", "1100", "20000", ""),
        ("second backup", rp.LIFEBOAT, "5", lb_second_bytes, "150000", ""),
        ("second backup", rp.PGBACKREST, "6", "1000", "30000", ""),
        ("restore", rp.LIFEBOAT, lb_restore_secs, "", "100000", lb_restore_note),
        ("restore", rp.PGBACKREST, "20", "", "20000", GOOD),
        ("wal-push", rp.LIFEBOAT, lb_push_secs, "800", "50000", "200 segments of 16 MiB; runs 4 s"),
        ("wal-push", rp.LIFEBOAT_ENC, "5", "810", "60000", enc_note),
        ("wal-push", rp.PGBACKREST, "20", "900", "20000", "200 segments of 16 MiB; runs 20 s"),
        ("wal-push", rp.PGBACKREST_ASYNC, "8", "900", "20000", "200 segments of 16 MiB; runs 8 s"),
    ]


def run(rows_):
    return run_report(rp, rows_)


TARGETS = ("full backup time", "restore time", "second backup stores", "wal-push", "peak RSS")


class PgPhysicalReport(unittest.TestCase):
    def test_all_met_at_the_limits(self):
        # 10 s = pgBackRest's full, 300 B = 0.3x its 1000 B incremental, 200 segments in 4 s = 50/s.
        out = run(rows(lb_full_secs="10", lb_second_bytes="300", lb_restore_secs="20",
                       lb_push_secs="4", lb_rss=str(256 * 1024)))
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "met", out)
        self.assertIn("5 of 5 targets met, 0 missed", out)
        self.assertIn("| 50.0 |", out)    # Lifeboat's segments/s in the table
        self.assertIn("| 0.30x |", out)   # its second backup vs pgBackRest's incremental

    def test_over_the_limits_missed(self):
        out = run(rows(lb_full_secs="10.01", lb_second_bytes="301", lb_restore_secs="20.01",
                       lb_push_secs="4.01", lb_rss=str(256 * 1024 + 1)))
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "missed", out)
        self.assertIn("0 of 5 targets met, 5 missed", out)

    def test_a_bad_restore_fails_however_fast(self):
        out = run(rows(lb_restore_secs="1", lb_restore_note=BAD))
        self.assertEqual(verdict(out, "restore time"), "failed", out)
        self.assertEqual(verdict(out, "peak RSS"), "failed", out)
        self.assertEqual(verdict(out, "full backup time"), "met", out)
        self.assertIn("BAD RESTORE", out)

    def test_a_failed_encrypted_push_fails_the_rss_target_only(self):
        out = run(rows(enc_note="FAILED: exit 8 (see push-lbenc-1.log.err)"))
        self.assertEqual(verdict(out, "peak RSS"), "failed", out)
        self.assertEqual(verdict(out, "wal-push"), "met", out)

    def test_lifeboat_skipped_is_not_measured(self):
        skipped = [(s, t, "", "", "", SKIPPED) if t == rp.LIFEBOAT else (s, t, a, b, c, n)
                   for s, t, a, b, c, n in rows() if t != rp.LIFEBOAT_ENC]
        out = run(skipped)
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "n/a", out)
        self.assertIn("0 of 5 targets met, 0 missed, 5 not measured", out)


if __name__ == "__main__":
    unittest.main()
