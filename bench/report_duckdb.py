#!/usr/bin/env python3
"""Format the DuckDB benchmark results and check Lifeboat's targets.

    report_duckdb.py RESULTS-DUCKDB.tsv

RESULTS-DUCKDB.tsv is written by duckdb.sh, in the format of sqlite.sh's results (see
report.py): "#" header lines, then
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
Bytes are what the tool stores: Lifeboat's whole repository for the full backup and
`new_stored_bytes` for a second backup; the .zst file; the export folder.

References:
  full backup         cp + zstd -T0 -3 (time, bytes)
  second backup (x)   "a new compressed copy": cp + zstd of the changed file, at the same
                      step (time, bytes); bytes also vs zstd -3 of the blocks the change made
                      new (the floor for any block-level incremental)
  restore             zstd -d of that copy

Targets (the issue's): full backup time <= 1.0x cp + zstd; second backup (a) stores <= 0.05x
a new compressed copy. Second backup (b) (1% of rows updated at random) is reported, not
judged.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import aligned, check, failed_check, human, load, ratio  # noqa: E402

LIFEBOAT = "lifeboat"
DIY = "cp + zstd -T0 -3"
PARQUET = "EXPORT DATABASE parquet"
CHANGED = "new blocks, zstd -3"
UNZSTD = "zstd -d"
FULL_TIME_LIMIT = 1.0      # Lifeboat full backup / cp + zstd
A_BYTES_LIMIT = 0.05       # Lifeboat second backup (a) / a new compressed copy


def main():
    header, rows, get = load(sys.argv[1])

    def refs(step):
        """(time ref, bytes ref, floor) of a step."""
        if step == "full backup":
            d = get(step, DIY)
            return d.get("secs"), d.get("bytes"), None
        if step.startswith("second backup"):
            d = get(step, DIY)
            x = step[len("second backup"):].strip()
            return d.get("secs"), d.get("bytes"), get(f"change {x}", CHANGED).get("bytes")
        if step == "restore":
            return get(step, UNZSTD).get("secs"), None, None
        return None, None, None

    table = [("step", "tool", "time s", "stored/new bytes", "peak RSS MiB",
              "time vs ref", "bytes vs ref", "bytes vs new blocks", "notes")]
    for r in rows:
        t_ref, b_ref, floor = refs(r["step"])
        table.append((
            r["step"], r["tool"],
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], t_ref), ratio(r["bytes"], b_ref), ratio(r["bytes"], floor),
            r["note"]))

    out = header + [""] + aligned(table)
    out += ["", "references: full backup and second backups -> cp + zstd at the same step (a"
            " second backup's reference is a new compressed copy); restore -> zstd -d;"
            " 'new blocks' -> zstd -3 of the blocks the change made new", ""]

    lb_full = get("full backup", LIFEBOAT)
    lb_a, lb_b = get("second backup (a)", LIFEBOAT), get("second backup (b)", LIFEBOAT)
    copy_a, copy_b = get("second backup (a)", DIY), get("second backup (b)", DIY)

    def lim(x, k):
        return None if x is None else x * k

    targets = [
        (f"full backup time <= {FULL_TIME_LIMIT:.1f}x cp + zstd", "s",
         lb_full.get("secs"), lim(get("full backup", DIY).get("secs"), FULL_TIME_LIMIT),
         failed_check(lb_full)),
        (f"second backup (a) stores <= {A_BYTES_LIMIT:.2f}x a new compressed copy", "B",
         lb_a.get("bytes"), lim(copy_a.get("bytes"), A_BYTES_LIMIT), failed_check(lb_a)),
    ]
    out.append("targets")
    out += check(targets, miss="MISS")
    b, cb = lb_b.get("bytes"), copy_b.get("bytes")
    floor_b = get("change (b)", CHANGED)
    out.append(f"  [info] second backup (b) (1% of rows updated at random) stores "
               f"{human(b)} = {ratio(b, cb)} a new compressed copy ({human(cb)}), "
               f"{ratio(b, floor_b.get('bytes'))} the new blocks' zstd -3; "
               f"{floor_b.get('note') or 'blocks not measured'}")
    lb_restore, unz = get("restore", LIFEBOAT), get("restore", UNZSTD)
    bad = failed_check(lb_restore)
    if bad:
        out.append(f"  [FAIL] restore of backup (b): {bad}")
    elif lb_restore.get("secs") is not None:
        out.append(f"  [info] restore of backup (b): {lb_restore['secs']:.2f} s ="
                   f" {ratio(lb_restore['secs'], unz.get('secs'))} zstd -d; {lb_restore['note']}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
