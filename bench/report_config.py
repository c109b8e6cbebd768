#!/usr/bin/env python3
"""Format the configuration-folder benchmark results and check Lifeboat's targets.

    report_config.py RESULTS-CONFIG.tsv

RESULTS-CONFIG.tsv is written by config.sh, in the format of sqlite.sh's results (see
report.py): "#" header lines, then
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
Bytes are what the tool stores: Lifeboat's whole repository for the full backup and
`new_stored_bytes` for the second; the archive; restic's repository growth.

Ratios are against `tar -c | zstd -3` at the same step (`zstd -d | tar -x` for the restore).
Targets (the issue's): full backup and restore each under 1 s, an unchanged second backup
stores under 10 KB.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import aligned, check, failed_check, human, load, ratio  # noqa: E402

LIFEBOAT = "lifeboat"
TAR = "tar -c | zstd -3"
UNTAR = "zstd -d | tar -x"
TIME_LIMIT = 1.0          # seconds, full backup and restore
UNCHANGED_LIMIT = 10_000  # bytes stored by a second backup of an unchanged folder


def main():
    header, rows, get = load(sys.argv[1])
    ref_tool = {"full backup": TAR, "second backup": TAR, "restore": UNTAR}

    table = [("step", "tool", "time s", "stored/new bytes", "peak RSS MiB",
              "time vs tar", "bytes vs tar", "notes")]
    for r in rows:
        ref = get(r["step"], ref_tool.get(r["step"], ""))
        table.append((
            r["step"], r["tool"],
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], ref.get("secs")), ratio(r["bytes"], ref.get("bytes")),
            r["note"]))

    out = header + [""] + aligned(table)
    out += ["", "references: backups -> tar -c | zstd -3 at the same step (a second backup"
            " with tar is a new full archive); restore -> zstd -d | tar -x", ""]

    full, second = get("full backup", LIFEBOAT), get("second backup", LIFEBOAT)
    restore = get("restore", LIFEBOAT)
    targets = [
        (f"full backup time <= {TIME_LIMIT:.1f} s", "s",
         full.get("secs"), TIME_LIMIT, failed_check(full)),
        (f"restore time <= {TIME_LIMIT:.1f} s", "s",
         restore.get("secs"), TIME_LIMIT, failed_check(restore)),
        (f"unchanged second backup stores <= {UNCHANGED_LIMIT:,} B", "B",
         second.get("bytes"), UNCHANGED_LIMIT, failed_check(second)),
    ]
    out.append("targets")
    out += check(targets, miss="MISS")
    grew = re.search(r"repo grew (\d+) B", second.get("note") or "")
    if grew:
        out.append(f"  [info] the unchanged second backup grew the repository by {int(grew[1]):,} B"
                   f" in all (its manifest included; new_stored_bytes counts packs and indexes)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
