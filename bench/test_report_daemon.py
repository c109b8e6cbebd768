#!/usr/bin/env python3
"""Unit checks of report_daemon.py's parsing and verdicts on tiny fake results, and of
daemon_load.py's percentile and answer checks (no daemon is run).

    python3 -m unittest discover -s bench -p 'test_*.py'     (scripts/test.sh runs it)
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon_load as dl  # noqa: E402
import report_daemon as rd  # noqa: E402
from test_report import md_verdict as verdict, run as run_report, target_row  # noqa: E402


def lat(case, repo, conns, p99, p50="0.5", note=None):
    return ("latency", case, repo, conns,
            f"n=2000 p50_ms={p50} p99_ms={p99} max_ms=60.0 rps=900.5 bytes=31738", note or f"GET /{case}")


def rows(cpu="0.100", rss="20800", backups="10000", list_p99="3.0", list4_p99="9.0", src_p99="2.0",
         status_p99="4.0", enc_status_p99="5.0", metrics_p99="1.0", idle_note="10 sources"):
    return [
        ("setup", "repository", "repo", "-", "backups=10000 secs=0 bytes=17000000 cached=1", "made earlier"),
        ("idle", "fresh", "repo", "-",
         f"seconds=60.010 cpu_s=0.060 cpu_pct={cpu} rss_kib={rss} hwm_kib=22000 threads=3 wakeups_per_s=14.1",
         idle_note),
        ("start", "loaded", "repo", "-", f"ready_s=1.234 backups={backups} rss_kib=40000 hwm_kib=45000 threads=3",
         "spawn to ready"),
        ("idle", "loaded", "repo", "-",
         "seconds=60.000 cpu_s=0.600 cpu_pct=1.000 rss_kib=40000 hwm_kib=45000 threads=3 wakeups_per_s=14.0",
         "refresh every 30 s"),
        lat("list", "repo", "1", list_p99, p50="0.25"),
        lat("list-source", "repo", "1", src_p99),
        lat("status", "repo", "1", status_p99),
        lat("metrics", "repo", "1", metrics_p99),
        lat("list", "repo", "4", list4_p99),
        lat("list-all", "repo", "1", "400.0"),   # info: no target however slow
        lat("status", "repo-enc", "1", enc_status_p99),
        ("memory", "loaded", "repo", "-", "rss_kib=50000 hwm_kib=52000 threads=3", "after"),
        ("cli", "list", "repo", "1", "runs=5 median_s=0.500 max_s=0.600 rss_kib=30000 backups=10000",
         "lifeboat list --json"),
    ]


def run(rows_):
    return run_report(rd, rows_)


TARGETS = ("idle CPU", "idle RSS", "GET /api/v1/backups p99", "GET /api/v1/backups?source=",
           "GET /api/v1/status", "GET /metrics")


class DaemonReport(unittest.TestCase):
    def test_all_met(self):
        out = run(rows())
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "met", out)
        self.assertIn("6 of 6 targets met, 0 missed", out)
        # The worst p99 of list is the 4-connection run's, and it says so.
        self.assertEqual(target_row(out, "GET /api/v1/backups p99")[1], "9.00 ms (worst: plain, 4 conn.)")
        self.assertEqual(target_row(out, "GET /api/v1/status")[1], "5.00 ms (worst: encrypted, 1 conn.)")
        # 0.1% of a core is 3.6 CPU seconds an hour; the list's p50 against the CLI's 0.5 s.
        self.assertIn("| 0.100 | 3.6 |", out)
        self.assertIn("| 0.0005x |", out)

    def test_at_the_limits(self):
        # RSS and p99 limits are inclusive, the CPU one strict.
        out = run(rows(cpu="0.999", rss=str(64 * 1024), list4_p99="50.0", src_p99="50", status_p99="50",
                       enc_status_p99="50", metrics_p99="20"))
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "met", out)
        out = run(rows(cpu="1.0", rss=str(64 * 1024 + 1), list4_p99="50.01", src_p99="50.01",
                       status_p99="1", enc_status_p99="50.01", metrics_p99="20.01"))
        for t in TARGETS:
            self.assertEqual(verdict(out, t), "missed", out)
        self.assertIn("0 of 6 targets met, 6 missed", out)

    def test_a_failed_run_fails_its_target_however_fast_the_others(self):
        r = rows()
        r.append(("latency", "list-source", "repo", "4", "", "FAILED: GET /api/v1/backups?source=db005: count 99, want 100"))
        r[1] = ("idle", "fresh", "repo", "-", "", "FAILED: the repository holds 11 backups after the window, not 10")
        out = run(r)
        self.assertEqual(verdict(out, "GET /api/v1/backups?source="), "failed", out)
        self.assertEqual(verdict(out, "idle CPU"), "failed", out)
        self.assertEqual(verdict(out, "idle RSS"), "failed", out)
        self.assertEqual(verdict(out, "GET /api/v1/status"), "met", out)
        self.assertIn("count 99, want 100", out)

    def test_fewer_backups_leave_the_latency_targets_unmeasured(self):
        out = run(rows(backups="1000", list4_p99="500"))
        for t in TARGETS[2:]:
            self.assertEqual(verdict(out, t), "n/a", out)
        self.assertIn("1,000 backups, not 10,000", out)
        self.assertEqual(verdict(out, "idle CPU"), "met", out)
        self.assertIn("2 of 6 targets met, 0 missed, 4 not measured", out)

    def test_nothing_measured(self):
        out = run([])
        self.assertIn("0 of 6 targets met, 0 missed, 6 not measured", out)

    def test_fields_parse(self):
        self.assertEqual(rd.parse_fields("a=1 b=2.5 c=x"), {"a": 1.0, "b": 2.5, "c": "x"})
        self.assertEqual(rd.parse_fields(""), {})
        with self.assertRaises(ValueError):
            rd.parse_fields("a=1 oops")


class LoadClient(unittest.TestCase):
    def test_percentile_nearest_rank(self):
        values = list(range(1, 101))   # 1..100
        self.assertEqual(dl.percentile(values, 50), 50)
        self.assertEqual(dl.percentile(values, 99), 99)
        self.assertEqual(dl.percentile(values, 100), 100)
        self.assertEqual(dl.percentile([7], 99), 7)
        self.assertEqual(dl.percentile([3, 1, 2], 50), 2)

    def test_checks_of_answers(self):
        body = json.dumps({"count": 2, "total": 10, "backups": [{"source": "/a"}, {"source": "/a"}]}).encode()
        self.assertIsNone(dl.check("/api/v1/backups", body, {"count": "2", "total": "10", "source": "/a"}))
        self.assertIn("count 2, want 3", dl.check("/api/v1/backups", body, {"count": "3"}))
        self.assertIn("another source", dl.check("/api/v1/backups", body, {"source": "/b"}))
        status = json.dumps({"daemon": {"backups": 9}}).encode()
        self.assertIn("9 backups, want 10", dl.check("/api/v1/status", status, {"backups": "10"}))
        metrics = b"# HELP x\nlifeboat_repository_backups 10\nlifeboat_repository_backups_x 3\n"
        self.assertIsNone(dl.check("/metrics", metrics, {"metric": ["lifeboat_repository_backups=10"]}))
        self.assertIn("want 11", dl.check("/metrics", metrics, {"metric": ["lifeboat_repository_backups=11"]}))
        self.assertIn("no lifeboat_nope", dl.check("/metrics", metrics, {"metric": ["lifeboat_nope=1"]}))


if __name__ == "__main__":
    unittest.main()
