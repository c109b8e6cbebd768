#!/usr/bin/env python3
"""Format postgres.sh's results as Markdown and check the issue's targets.

    report_postgres.py RESULTS-POSTGRES.tsv

RESULTS-POSTGRES.tsv: "#" header lines (printed as-is), then rows of
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
(the format of report.py), empty fields where a value does not apply.  Steps: "full
backup", "second backup" (bytes: what the backup added to the repository, or a new
file's size), "restore", "drill".

Ratios, per step, against the reference a user would compare with:
  full backup    time and bytes vs `pg_dump | zstd -T0 -3`
  second backup  bytes vs a new `pg_dump | zstd -T0 -3` of the changed database
                 (and restic's growth in the targets)
  restore        time vs `pg_restore -j2`
Targets (verdicts met / missed; "failed" when the measured step itself failed or its
restore did not give the source's row counts, whatever the numbers):
  full backup time <= 1.1x pg_dump | zstd;  second backup <= 0.3x a new compressed dump;
  second backup < restic's;  restore time <= 1.1x pg_restore -j2;  peak RSS <= 256 MiB.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The same results format, checks and formatting as the SQLite report.
from report import failed_check as failed, human, load as load_results, md_escape, md_targets, ratio  # noqa: E402

LIFEBOAT = "lifeboat"
LIFEBOAT_ENC = "lifeboat (encrypted)"
FC = "pg_dump -Fc"
ZSTD = "pg_dump | zstd -T0 -3"
RESTIC = "restic --stdin (plain dump)"
PG_RESTORE = "pg_restore -j2"
RSS_LIMIT_KIB = 256 * 1024


def load(path):
    header, rows, _ = load_results(path)
    return header, rows


def targets(get, rows):
    """(description, measured text, limit text, verdict) for each target of the issue."""
    lb_full, z_full = get("full backup", LIFEBOAT), get("full backup", ZSTD)
    lb_2, z_2, rs_2 = get("second backup", LIFEBOAT), get("second backup", ZSTD), get("second backup", RESTIC)
    lb_r, pg_r = get("restore", LIFEBOAT), get("restore", PG_RESTORE)
    lb_rows = [r for r in rows if r["tool"].startswith(LIFEBOAT)]
    rss = [r["rss"] for r in lb_rows if r["rss"] is not None]

    def scaled(row, key, k):
        v = row.get(key)
        return None if v is None else v * k

    # (description, unit, measured, limit, strict, why failed)
    spec = [
        ("full backup time <= 1.1x `pg_dump | zstd -T0 -3`", "s",
         lb_full.get("secs"), scaled(z_full, "secs", 1.1), False, failed(lb_full) or failed(z_full)),
        ("second backup stores <= 0.3x a new `pg_dump | zstd -T0 -3`", "B",
         lb_2.get("bytes"), scaled(z_2, "bytes", 0.3), False, failed(lb_2) or failed(z_2)),
        ("second backup stores less than restic (`--stdin`, plain dump)", "B",
         lb_2.get("bytes"), rs_2.get("bytes"), True, failed(lb_2) or failed(rs_2)),
        ("restore time <= 1.1x `pg_restore -j2`", "s",
         lb_r.get("secs"), scaled(pg_r, "secs", 1.1), False, failed(lb_r) or failed(pg_r)),
        ("peak RSS <= 256 MiB (largest over Lifeboat's steps)", "KiB",
         max(rss) if rss else None, RSS_LIMIT_KIB, False,
         next((failed(r) for r in lb_rows if failed(r)), None)),
    ]
    out = []
    for desc, unit, got, limit, strict, why in spec:
        fmt = {"s": lambda v: f"{v:.2f} s", "B": human, "KiB": lambda v: f"{v / 1024:.0f} MiB"}[unit]
        if why:
            verdict = "failed"
        elif got is None or limit is None:
            verdict = "n/a"
        else:
            verdict = "met" if (got < limit if strict else got <= limit) else "missed"
        out.append((desc, "-" if got is None else fmt(got),
                    "-" if limit is None else ("< " if strict else "<= ") + fmt(limit), verdict,
                    why or ""))
    return out


def report(header, rows):
    def get(step, tool):
        return next((r for r in rows if r["step"] == step and r["tool"] == tool), {})

    def ref(step):
        if step == "full backup":
            z = get(step, ZSTD)
            return z.get("secs"), z.get("bytes")
        if step == "second backup":
            return None, get(step, ZSTD).get("bytes")
        if step == "restore":
            return get(step, PG_RESTORE).get("secs"), None
        return None, None

    out = ["## PostgreSQL: Lifeboat vs pg_dump, zstd, restic, pg_restore", ""]
    out += [f"- {h}" for h in header] + [""]
    out.append("| step | tool | time s | bytes | peak RSS MiB | time vs ref | bytes vs ref | notes |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        t_ref, b_ref = ref(r["step"])
        out.append("| " + " | ".join([
            r["step"], md_escape(f"`{r['tool']}`"),
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], t_ref), ratio(r["bytes"], b_ref), md_escape(r["note"])]) + " |")
    out += ["", "References: full backup -> `pg_dump | zstd -T0 -3` (time and bytes); second backup ->"
            " bytes of a new `pg_dump | zstd -T0 -3` of the changed database; restore -> `pg_restore -j2`.", ""]

    out += md_targets(targets(get, rows))
    return "\n".join(out)


def main():
    header, rows = load(sys.argv[1])
    print(report(header, rows))


if __name__ == "__main__":
    main()
