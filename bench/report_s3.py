#!/usr/bin/env python3
"""Format the S3 benchmark results and check Lifeboat's targets.

    report_s3.py RESULTS-S3.tsv

RESULTS-S3.tsv is written by s3.sh, in the format of sqlite.sh's results
(see report.py): "#" header lines, then
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
where bytes are what the tool uploaded (growth of its prefix in the bucket).

Every step is compared with the standard pipeline at the same step:
  full backup    sqlite3 .backup + zstd -3 + aws s3 cp (time, bytes)
  second backup  the same pipeline again on the changed database: a new
                 full .zst uploaded whole (time, bytes); bytes are also
                 compared with zstd -3 of the pages that actually changed
                 (the floor for any page-level incremental)
  restore        aws s3 cp - | zstd -d of the pipeline's latest object
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import aligned, check, failed_check, human, load, ratio  # noqa: E402  (same formatting as sqlite.sh's report)

LIFEBOAT = "lifeboat"
PIPE = "sqlite3+zstd -3+aws s3 cp"
PIPE_RESTORE = "aws s3 cp - | zstd -d"
CHANGED = "changed pages, zstd -3"
LIMIT = 1.2   # Lifeboat / pipeline for time; Lifeboat / changed pages for bytes


def main():
    header, rows, get = load(sys.argv[1])

    changed = get("change", CHANGED)
    ref_tool = {"full backup": PIPE, "second backup": PIPE, "restore": PIPE_RESTORE}

    table = [("step", "tool", "time s", "uploaded", "peak RSS MiB",
              "time vs pipeline", "bytes vs pipeline", "bytes vs changed pages", "notes")]
    for r in rows:
        ref = get(r["step"], ref_tool[r["step"]]) if r["step"] in ref_tool else {}
        table.append((
            r["step"], r["tool"],
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], ref.get("secs")), ratio(r["bytes"], ref.get("bytes")),
            ratio(r["bytes"], changed.get("bytes")) if r["step"] == "second backup" else "-",
            r["note"]))

    out = header + [""] + aligned(table)
    out += ["", "ratios: Lifeboat / the pipeline at the same step; the second backup's"
            " bytes also / zstd -3 of the changed pages", ""]

    lb_full, lb_second = get("full backup", LIFEBOAT), get("second backup", LIFEBOAT)
    lb_restore = get("restore", LIFEBOAT)
    lb_rss = [r["rss"] for r in rows if r["tool"] == LIFEBOAT and r["rss"] is not None]

    def lim(x):
        return None if x is None else x * LIMIT

    targets = [
        (f"full backup time <= {LIMIT:.1f}x pipeline", "s",
         lb_full.get("secs"), lim(get("full backup", PIPE).get("secs")), failed_check(lb_full)),
        (f"restore time <= {LIMIT:.1f}x pipeline", "s",
         lb_restore.get("secs"), lim(get("restore", PIPE_RESTORE).get("secs")),
         failed_check(lb_restore)),
        (f"second backup uploads <= {LIMIT:.1f}x compressed changed pages", "B",
         lb_second.get("bytes"), lim(changed.get("bytes")), failed_check(lb_second)),
        ("peak RSS <= 256 MiB (max over Lifeboat steps)", "KiB",
         max(lb_rss) if lb_rss else None, 256 * 1024),
    ]
    out.append("targets")
    out += check(targets)
    print("\n".join(out))


if __name__ == "__main__":
    main()
