#!/usr/bin/env python3
"""Unit checks of report_postgres.py's verdicts on tiny fake results (no benchmark is run).

    python3 -m unittest discover -s bench -p 'test_*.py'     (scripts/test.sh runs it)
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_postgres as rp  # noqa: E402
from test_report import md_verdict as verdict, run as run_report  # noqa: E402

GOOD = "9 tables, row counts equal to the source's"
BAD = "BAD RESTORE: row counts differ from the source's: < public.docs 1000;> public.docs 999;"


def rows(lb_full_secs="10", lb_second_bytes="250", restic_second_bytes="300",
         lb_restore_secs="20", lb_restore_note=GOOD, lb_rss="200000", enc_note="1 run"):
    return [
        ("full backup", rp.LIFEBOAT, lb_full_secs, "900", lb_rss, "runs 10 11 9 s"),
        ("full backup", rp.FC, "30", "1200", "20000", ""),
        ("full backup", rp.ZSTD, "10", "1000", "30000", ""),
        ("full backup", rp.LIFEBOAT_ENC, "11", "900", "210000", enc_note),
        ("full backup", rp.RESTIC, "15", "1100", "90000", ""),
        ("second backup", rp.LIFEBOAT, "5", lb_second_bytes, "150000", ""),
        ("second backup", rp.ZSTD, "10", "1000", "30000", ""),
        ("second backup", rp.RESTIC, "15", restic_second_bytes, "90000", ""),
        ("second backup", rp.FC, "30", "1200", "20000", ""),
        ("restore", rp.LIFEBOAT, lb_restore_secs, "", "100000", lb_restore_note),
        ("restore", rp.PG_RESTORE, "20", "", "20000", GOOD),
    ]


def run(rows_):
    return run_report(rp, rows_)


class PostgresReport(unittest.TestCase):
    def test_all_met_at_the_limits(self):
        out = run(rows(lb_full_secs="11", lb_second_bytes="300", restic_second_bytes="301",
                       lb_restore_secs="22", lb_rss=str(256 * 1024)))
        for t in ("full backup time", "second backup stores <= 0.3x", "second backup stores less",
                  "restore time", "peak RSS"):
            self.assertEqual(verdict(out, t), "met", out)
        self.assertIn("5 of 5 targets met, 0 missed", out)
        self.assertIn("| 1.10x |", out)   # Lifeboat's full backup time vs pg_dump | zstd

    def test_over_the_limits_missed(self):
        out = run(rows(lb_full_secs="11.1", lb_second_bytes="301", lb_restore_secs="22.1",
                       lb_rss=str(256 * 1024 + 1)))
        self.assertEqual(verdict(out, "full backup time"), "missed", out)
        self.assertEqual(verdict(out, "second backup stores <= 0.3x"), "missed", out)
        self.assertEqual(verdict(out, "restore time"), "missed", out)
        self.assertEqual(verdict(out, "peak RSS"), "missed", out)
        # restic stored 300: Lifeboat's 301 is not less.
        self.assertEqual(verdict(out, "second backup stores less"), "missed", out)

    def test_equal_to_restic_is_not_less(self):
        out = run(rows(lb_second_bytes="300", restic_second_bytes="300"))
        self.assertEqual(verdict(out, "second backup stores less"), "missed", out)
        self.assertEqual(verdict(out, "second backup stores <= 0.3x"), "met", out)

    def test_a_bad_restore_fails_however_fast(self):
        out = run(rows(lb_restore_secs="1", lb_restore_note=BAD))
        self.assertEqual(verdict(out, "restore time"), "failed", out)
        self.assertEqual(verdict(out, "peak RSS"), "failed", out)
        self.assertEqual(verdict(out, "full backup time"), "met", out)
        self.assertIn("BAD RESTORE", out)

    def test_a_failed_encrypted_backup_fails_the_rss_target(self):
        out = run(rows(enc_note="FAILED: exit 1 (see x.err)"))
        self.assertEqual(verdict(out, "peak RSS"), "failed", out)

    def test_without_restic_not_measured(self):
        out = run([r for r in rows() if r[1] != rp.RESTIC])
        self.assertEqual(verdict(out, "second backup stores less"), "n/a", out)
        self.assertIn("4 of 5 targets met, 0 missed, 1 not measured", out)


if __name__ == "__main__":
    unittest.main()
