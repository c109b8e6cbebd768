#!/usr/bin/env python3
"""Unit checks of the benchmark reports' verdicts (no benchmark is run): a step whose own
check failed (a restore that is not the database, a command that failed, a pruned
repository that fails its check) misses its targets however fast it was.

    python3 -m unittest discover -s bench -p 'test_*.py'     (scripts/test.sh runs it)
"""
import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
import report_config  # noqa: E402
import report_duckdb  # noqa: E402
import report_retention  # noqa: E402
import report_s3  # noqa: E402


def run(module, rows):
    """The report `module` prints for a results file of `rows` (tuples of 6 fields)."""
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write("# test results\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    out = io.StringIO()
    argv = sys.argv
    try:
        sys.argv = [module.__file__, f.name]
        with contextlib.redirect_stdout(out):
            module.main()
    finally:
        sys.argv = argv
        os.unlink(f.name)
    return out.getvalue()


def verdict(text, target):
    """PASS, FAIL or n/a of the target line that starts with `target`."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line[7:].startswith(target):
            return line[1:5].strip()
    raise AssertionError(f"no target {target!r} in:\n{text}")


def target_row(text, target):
    """The cells (desc, measured, limit, verdict) of the row of a targets table
    (report.md_targets) whose description starts with `target`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 4 and cells[0].startswith(target):
            return cells
    raise AssertionError(f"no target {target!r} in:\n{text}")


def md_verdict(text, target):
    """The verdict (met, missed, failed, n/a) of that row."""
    return target_row(text, target)[3].split("**")[1]


GOOD = "quick_check ok, 100 rows, byte-identical to source"
BAD = "BAD RESTORE: quick_check=ok rows=99 want=100"


def sqlite_rows(lb_restore_note, lb_restore_secs="1.00", enc_note=GOOD):
    return [
        ("full backup", report.DIY, "10", "1000", "1000", ""),
        ("full backup", report.LIFEBOAT, "5", "900", "1000", "json: ..."),
        ("change", report.CHANGED, "", "100", "", ""),
        ("second backup", report.LIFEBOAT, "1", "100", "1000", "json: ..."),
        ("restore", report.UNZSTD, "2", "", "1000", GOOD),
        ("restore", report.LIFEBOAT, lb_restore_secs, "", "1000", lb_restore_note),
        ("full backup", report.LIFEBOAT_ENC, "5", "900", "1000", "json: ..."),
        ("second backup", report.LIFEBOAT_ENC, "1", "100", "1000", "json: ..."),
        ("restore", report.LIFEBOAT_ENC, "1.00", "", "1000", enc_note),
    ]


class SqliteReport(unittest.TestCase):
    def test_a_good_fast_restore_passes(self):
        out = run(report, sqlite_rows(GOOD))
        self.assertEqual(verdict(out, "restore time"), "PASS", out)
        self.assertEqual(verdict(out, "restore time encrypted"), "PASS", out)

    def test_a_bad_restore_fails_its_time_target(self):
        out = run(report, sqlite_rows(BAD))
        self.assertEqual(verdict(out, "restore time"), "FAIL", out)
        self.assertIn("BAD RESTORE", out)
        # The encryption overhead compares with it: no verdict from a bad restore either.
        self.assertEqual(verdict(out, "restore time encrypted"), "FAIL", out)
        self.assertEqual(verdict(out, "full backup time"), "PASS", out)

    def test_a_missing_output_or_failed_restore_fails(self):
        for note, secs in [("MISSING OUTPUT", "1.00"), ("FAILED (see x.err)", "")]:
            out = run(report, sqlite_rows(note, secs))
            self.assertEqual(verdict(out, "restore time"), "FAIL", out)

    def test_a_bad_encrypted_restore_fails_the_overhead_target(self):
        out = run(report, sqlite_rows(GOOD, enc_note=BAD))
        self.assertEqual(verdict(out, "restore time"), "PASS", out)
        self.assertEqual(verdict(out, "restore time encrypted"), "FAIL", out)

    def test_skipped_is_not_measured(self):
        out = run(report, sqlite_rows("skipped: no working binary or repository", ""))
        self.assertEqual(verdict(out, "restore time"), "n/a", out)


class S3Report(unittest.TestCase):
    def rows(self, note):
        return [
            ("full backup", report_s3.PIPE, "10", "1000", "1000", ""),
            ("full backup", report_s3.LIFEBOAT, "5", "900", "1000", ""),
            ("change", report_s3.CHANGED, "", "100", "", ""),
            ("second backup", report_s3.LIFEBOAT, "1", "100", "1000", ""),
            ("restore", report_s3.PIPE_RESTORE, "2", "", "1000", GOOD),
            ("restore", report_s3.LIFEBOAT, "1", "", "1000", note),
        ]

    def test_restore_verdicts(self):
        self.assertEqual(verdict(run(report_s3, self.rows(GOOD)), "restore time"), "PASS")
        self.assertEqual(verdict(run(report_s3, self.rows(BAD)), "restore time"), "FAIL")


class DuckdbReport(unittest.TestCase):
    def rows(self, a_bytes="40", full_note="json: ...", restore_note=GOOD):
        D, L = report_duckdb.DIY, report_duckdb.LIFEBOAT
        return [
            ("full backup", L, "9", "1000", "1000", full_note),
            ("full backup", D, "10", "1000", "1000", ""),
            ("change (a)", report_duckdb.CHANGED, "", "30", "", ""),
            ("second backup (a)", L, "1", a_bytes, "1000", ""),
            ("second backup (a)", D, "10", "1000", "1000", ""),
            ("second backup (b)", L, "3", "400", "1000", ""),
            ("second backup (b)", D, "10", "1000", "1000", ""),
            ("restore", D, "2", "", "1000", GOOD),
            ("restore", L, "2", "", "1000", restore_note),
        ]

    def test_verdicts(self):
        good = run(report_duckdb, self.rows())
        self.assertEqual(verdict(good, "full backup time"), "PASS", good)
        self.assertEqual(verdict(good, "second backup (a)"), "PASS", good)
        self.assertIn("0.40x a new compressed copy", good)
        over = run(report_duckdb, self.rows(a_bytes="60"))
        self.assertEqual(verdict(over, "second backup (a)"), "MISS", over)

    def test_a_failed_step_fails(self):
        out = run(report_duckdb, self.rows(full_note="FAILED: exit 2 (see x.err)"))
        self.assertEqual(verdict(out, "full backup time"), "FAIL", out)
        out = run(report_duckdb, self.rows(restore_note=BAD))
        self.assertIn("[FAIL] restore", out)


class ConfigReport(unittest.TestCase):
    def rows(self, second_bytes="0", restore_note=GOOD):
        L = report_config.LIFEBOAT
        return [
            ("full backup", L, "0.3", "1000", "1000", ""),
            ("second backup", L, "0.2", second_bytes, "1000", "json: ...; repo grew 3000 B"),
            ("restore", L, "0.5", "", "1000", restore_note),
        ]

    def test_verdicts(self):
        good = run(report_config, self.rows())
        for target in ("full backup time", "restore time", "unchanged second backup"):
            self.assertEqual(verdict(good, target), "PASS", good)
        self.assertIn("3,000 B", good)
        self.assertEqual(verdict(run(report_config, self.rows("20000")), "unchanged second backup"), "MISS")
        self.assertEqual(verdict(run(report_config, self.rows(restore_note=BAD)), "restore time"), "FAIL")


class RetentionReport(unittest.TestCase):
    def rows(self, check_note):
        rows = []
        for tool in (report_retention.LB_ENC, report_retention.LB_PLAIN, report_retention.RESTIC):
            secs = "1" if tool != report_retention.RESTIC else "2"
            rows += [
                ("forget+prune", tool, secs, "100", "1000", "cpu 1 s"),
                ("repo after", tool, "", "500" if tool != report_retention.RESTIC else "900",
                 "", "11: ..."),
                ("check", tool, "", "", "", check_note if tool != report_retention.RESTIC
                 else "restic check --read-data ok"),
            ]
        return rows

    def test_a_repository_that_fails_its_check_fails_the_targets(self):
        good = run(report_retention, self.rows("repo check --read-data ok; verify latest ok"))
        self.assertEqual(verdict(good, "forget+prune time"), "PASS", good)
        bad = run(report_retention, self.rows("repo check --read-data FAILED: exit 4"))
        self.assertEqual(verdict(bad, "forget+prune time"), "FAIL", bad)
        self.assertEqual(verdict(bad, "repository size after"), "FAIL", bad)


if __name__ == "__main__":
    unittest.main()
