#!/usr/bin/env python3
"""Format pg_physical.sh's results as Markdown and check the issue's targets.

    report_pg_physical.py RESULTS-PG-PHYSICAL.tsv

RESULTS-PG-PHYSICAL.tsv: "#" header lines (printed as-is), then rows of
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
(the format of report.py), empty fields where a value does not apply.  Steps: "full
backup", "second backup" (bytes: what the backup added, archived WAL left out), "restore",
"wal-push" (seconds: the whole loop, one call per segment; its note starts with
"N segments", which gives the segments per second).

Every step's ratios are against pgBackRest's row of the same step (its full backup, its
incremental, its restore, its synchronous archive-push).
Targets (verdicts met / missed; "failed" when the measured step itself failed or its
restore did not come up with the source's data, whatever the numbers):
  full backup time <= pgBackRest's;  restore time <= pgBackRest's;
  second backup stores <= 0.3x pgBackRest's incremental;
  wal-push >= 50 segments/s (Lifeboat, unencrypted repository, local disk);
  peak RSS <= 256 MiB (the largest over Lifeboat's rows).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The same results format, checks and formatting as the other reports.
from report import failed_check as failed, human, load as load_results, md_escape, md_targets, ratio  # noqa: E402

LIFEBOAT = "lifeboat"
LIFEBOAT_ENC = "lifeboat (encrypted)"
PGBACKREST = "pgbackrest"
PGBACKREST_ASYNC = "pgbackrest (archive-async)"
BASEBACKUP = "pg_basebackup -Ft -Z zstd -X none"
RSS_LIMIT_KIB = 256 * 1024
SECOND_LIMIT = 0.3     # Lifeboat's second backup / pgBackRest's incremental, in bytes
SEGS_PER_SEC = 50.0    # wal-push, Lifeboat unencrypted


def load(path):
    header, rows, _ = load_results(path)
    return header, rows


def segments_per_sec(row):
    """Segments per second of a wal-push row (its note starts with "N segments"), or None."""
    m = re.match(r"(\d+) segments", (row or {}).get("note") or "")
    secs = (row or {}).get("secs")
    if not m or not secs or failed(row):
        return None
    return int(m.group(1)) / secs


def targets(get, rows):
    """(description, measured text, limit text, verdict, why failed) for each target."""
    lb_full, br_full = get("full backup", LIFEBOAT), get("full backup", PGBACKREST)
    lb_2, br_2 = get("second backup", LIFEBOAT), get("second backup", PGBACKREST)
    lb_r, br_r = get("restore", LIFEBOAT), get("restore", PGBACKREST)
    lb_w = get("wal-push", LIFEBOAT)
    lb_rows = [r for r in rows if r["tool"].startswith(LIFEBOAT)]
    rss = [r["rss"] for r in lb_rows if r["rss"] is not None]

    def scaled(row, key, k):
        v = row.get(key)
        return None if v is None else v * k

    # (description, unit, measured, limit, at least (else at most), why failed)
    spec = [
        ("full backup time <= pgBackRest's full backup", "s",
         lb_full.get("secs"), br_full.get("secs"), False, failed(lb_full) or failed(br_full)),
        ("restore time <= pgBackRest's restore", "s",
         lb_r.get("secs"), br_r.get("secs"), False, failed(lb_r) or failed(br_r)),
        (f"second backup stores <= {SECOND_LIMIT}x pgBackRest's incremental", "B",
         lb_2.get("bytes"), scaled(br_2, "bytes", SECOND_LIMIT), False, failed(lb_2) or failed(br_2)),
        (f"wal-push >= {SEGS_PER_SEC:.0f} segments/s (unencrypted, local disk)", "seg/s",
         segments_per_sec(lb_w), SEGS_PER_SEC, True, failed(lb_w)),
        ("peak RSS <= 256 MiB (largest over Lifeboat's steps)", "KiB",
         max(rss) if rss else None, RSS_LIMIT_KIB, False,
         next((failed(r) for r in lb_rows if failed(r)), None)),
    ]
    fmts = {"s": lambda v: f"{v:.2f} s", "B": human, "KiB": lambda v: f"{v / 1024:.0f} MiB",
            "seg/s": lambda v: f"{v:.1f} seg/s"}
    out = []
    for desc, unit, got, limit, at_least, why in spec:
        fmt = fmts[unit]
        if why:
            verdict = "failed"
        elif got is None or limit is None:
            verdict = "n/a"
        else:
            verdict = "met" if (got >= limit if at_least else got <= limit) else "missed"
        out.append((desc, "-" if got is None else fmt(got),
                    "-" if limit is None else (">= " if at_least else "<= ") + fmt(limit), verdict,
                    why or ""))
    return out


def report(header, rows):
    def get(step, tool):
        return next((r for r in rows if r["step"] == step and r["tool"] == tool), {})

    out = ["## PostgreSQL physical backups: Lifeboat vs pgBackRest and pg_basebackup", ""]
    out += [f"- {h}" for h in header] + [""]
    out.append("| step | tool | time s | bytes | peak RSS MiB | seg/s | time vs pgBackRest"
               " | bytes vs pgBackRest | notes |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ref = get(r["step"], PGBACKREST)
        sps = segments_per_sec(r) if r["step"] == "wal-push" else None
        out.append("| " + " | ".join([
            r["step"], md_escape(f"`{r['tool']}`"),
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            "-" if sps is None else f"{sps:.1f}",
            ratio(r["secs"], ref.get("secs")), ratio(r["bytes"], ref.get("bytes")),
            md_escape(r["note"])]) + " |")
    out += ["", "Ratios against pgBackRest's row of the same step: its full backup, its"
            " incremental (`--type=incr`), its restore, its synchronous `archive-push`."
            " Bytes leave archived WAL out, except in wal-push (the repository after the pushes).", ""]

    out += md_targets(targets(get, rows))
    return "\n".join(out)


def main():
    header, rows = load(sys.argv[1])
    print(report(header, rows))


if __name__ == "__main__":
    main()
