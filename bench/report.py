#!/usr/bin/env python3
"""Format the benchmark results and check Lifeboat's targets.

    report.py RESULTS.tsv

RESULTS.tsv is written by sqlite.sh.  Lines starting with "#" are header
text printed as-is; every other line is
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
with empty fields where a value does not apply or the tool was skipped.

Each step's ratios are against a reference, chosen to answer the question a
user would ask at that step:
  full backup    time and size vs `sqlite3 .backup` + `zstd -3` (the obvious DIY way)
  second backup  time vs the same tool's full backup (is incremental cheap?);
                 new bytes vs zstd -3 of the pages that actually changed
                 (the floor for any page-level incremental)
  restore        time vs `zstd -d` of the DIY file

Rows of the tool "lifeboat (encrypted)" (the same steps on an encrypted
repository) are in the table with the same references, and are compared with
plain Lifeboat step by step in a separate "encryption overhead" section with
its own targets: time and peak RSS each <= 1.10x unencrypted.
"""
import sys

LIFEBOAT = "lifeboat"
LIFEBOAT_ENC = "lifeboat (encrypted)"
ENC_STEPS = ("full backup", "second backup", "restore")
ENC_LIMIT = 1.10   # encrypted / unencrypted, for time and for peak RSS
DIY = "sqlite3 .backup + zstd -3"
CHANGED = "changed pages, zstd -3"
UNZSTD = "zstd -d"


def num(s):
    return float(s) if s not in ("", None) else None


# Notes the scripts write when a step's own check failed (lib.sh's check_restored, or a
# command that failed): such a step misses its targets, however fast it was.
BAD_NOTES = ("BAD RESTORE", "MISSING OUTPUT")


def failed_check(row):
    """The note of a row whose step failed or whose result failed its check, else None."""
    note = (row or {}).get("note") or ""
    if note.startswith("FAILED") or any(mark in note for mark in BAD_NOTES):
        return note
    return None


def human(n):
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def md_escape(text):
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def md_targets(result):
    """The markdown lines of a targets table (desc, measured, limit, verdict, why per
    target) and the count of those met, missed and not measured."""
    out = ["| target (issue) | measured | limit | verdict |", "|---|---:|---:|---|"]
    for desc, got, limit, verdict, why in result:
        cell = f"**{verdict}**" + (f" ({md_escape(why)})" if why else "")
        out.append(f"| {md_escape(desc)} | {got} | {limit} | {cell} |")
    met = sum(1 for t in result if t[3] == "met")
    missed = sum(1 for t in result if t[3] in ("missed", "failed"))
    out += ["", f"{met} of {len(result)} targets met, {missed} missed, {len(result) - met - missed} not measured"]
    return out


def aligned(table):
    """Rows of cells as text lines, columns padded; the last column (notes) is left ragged.
    The first row is the heading, underlined."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -----")
    return lines


def load(path):
    """Header lines and rows of a results file, and a lookup of one row by step and tool."""
    header, rows = [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                header.append(line[1:].strip())
            elif line:
                step, tool, secs, nbytes, rss, note = (line.split("\t") + [""] * 6)[:6]
                rows.append(dict(step=step, tool=tool, secs=num(secs), bytes=num(nbytes),
                                 rss=num(rss), note=note))

    def get(step, tool):
        return next((r for r in rows if r["step"] == step and r["tool"] == tool), {})

    return header, rows, get


def main():
    header, rows, get = load(sys.argv[1])

    diy, changed, unz = get("full backup", DIY), get("change", CHANGED), get("restore", UNZSTD)

    table = [("step", "tool", "time s", "stored/new bytes", "peak RSS MiB",
              "time vs ref", "bytes vs ref", "notes")]
    for r in rows:
        t_ref = b_ref = None
        if r["step"] == "full backup":
            t_ref, b_ref = diy.get("secs"), diy.get("bytes")
        elif r["step"] == "second backup":
            t_ref = get("full backup", r["tool"]).get("secs")
            b_ref = changed.get("bytes")
        elif r["step"] == "restore":
            t_ref = unz.get("secs")
        table.append((
            r["step"], r["tool"],
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], t_ref), ratio(r["bytes"], b_ref), r["note"]))

    out = header + [""] + aligned(table)
    out += ["", "references: full backup -> sqlite3+zstd; second backup -> time: same tool's"
            " full backup, bytes: changed pages zstd -3; restore -> zstd -d", ""]

    # Targets: (description, measured, limit); measured/limit None => n/a.
    lb_full, lb_second = get("full backup", LIFEBOAT), get("second backup", LIFEBOAT)
    lb_restore = get("restore", LIFEBOAT)
    lb_rss = [r["rss"] for r in rows if r["tool"] == LIFEBOAT and r["rss"] is not None]

    def lim(x, k):
        return None if x is None else x * k

    targets = [
        ("full backup time <= 1.0x sqlite3+zstd", "s",
         lb_full.get("secs"), lim(diy.get("secs"), 1.0), failed_check(lb_full)),
        ("stored size <= 1.05x .zst file", "B",
         lb_full.get("bytes"), lim(diy.get("bytes"), 1.05), failed_check(lb_full)),
        ("second backup time <= 0.5x Lifeboat full", "s",
         lb_second.get("secs"), lim(lb_full.get("secs"), 0.5), failed_check(lb_second)),
        ("new stored bytes <= 1.2x compressed changed pages", "B",
         lb_second.get("bytes"), lim(changed.get("bytes"), 1.2), failed_check(lb_second)),
        ("restore time <= 1.2x zstd -d", "s",
         lb_restore.get("secs"), lim(unz.get("secs"), 1.2), failed_check(lb_restore)),
        ("peak RSS <= 256 MiB (max over Lifeboat steps)", "KiB",
         max(lb_rss) if lb_rss else None, 256 * 1024),
    ]
    out.append("targets")
    out += check(targets)
    out += encryption_overhead(get)
    print("\n".join(out))


def check(targets, miss="FAIL"):
    """Target lines plus a summary line, for (desc, unit, got, limit[, bad]) tuples. `bad`:
    why the measured step itself failed (a restore that is not the database, a command
    that failed): then the target is missed whatever the numbers say (FAIL). `miss`: the
    verdict of a target whose numbers are over the limit (newer reports say MISS)."""
    out = []
    passed = failed = 0
    for desc, unit, got, limit, *rest in targets:
        bad = rest[0] if rest else None
        if bad:
            failed += 1
            verdict, detail = "FAIL", f"the step failed: {bad}"
        elif got is None or limit is None:
            verdict, detail = "n/a ", "not measured"
        else:
            ok = got <= limit
            passed, failed = passed + ok, failed + (not ok)
            verdict = "PASS" if ok else miss
            if unit == "s":
                detail = f"{got:.2f} s vs limit {limit:.2f} s"
            elif unit == "B":
                detail = f"{human(got)} vs limit {human(limit)}"
            else:
                detail = f"{got / 1024:.0f} MiB vs limit {limit / 1024:.0f} MiB"
        out.append(f"  [{verdict}] {desc}: {detail}")
    out.append(f"  {passed} of {len(targets)} targets met, {failed} missed, "
               f"{len(targets) - passed - failed} not measured")
    return out


def encryption_overhead(get):
    """Encrypted vs plain Lifeboat, step by step: a small table and its targets."""
    out = ["", f"encryption overhead ({LIFEBOAT_ENC} / {LIFEBOAT}, same database bytes at each step)"]
    if not any(get(step, LIFEBOAT_ENC) for step in ENC_STEPS):
        out.append("  not measured (BENCH_SKIP_ENCRYPTED=1)")
        return out

    def secs(x):
        return "-" if x is None else f"{x:.2f}"

    def mib(x):
        return "-" if x is None else f"{x / 1024:.0f}"

    table = [("step", "time s plain", "time s enc", "time ratio",
              "RSS MiB plain", "RSS MiB enc", "RSS ratio", "bytes ratio")]
    targets = []
    for step in ENC_STEPS:
        p, e = get(step, LIFEBOAT), get(step, LIFEBOAT_ENC)
        pt, et, pr, er = p.get("secs"), e.get("secs"), p.get("rss"), e.get("rss")
        table.append((step, secs(pt), secs(et), ratio(et, pt), mib(pr), mib(er), ratio(er, pr),
                      ratio(e.get("bytes"), p.get("bytes"))))
        bad = failed_check(e) or failed_check(p)
        targets.append((f"{step} time encrypted <= {ENC_LIMIT:.2f}x unencrypted", "s",
                        et, None if pt is None else pt * ENC_LIMIT, bad))
        targets.append((f"{step} peak RSS encrypted <= {ENC_LIMIT:.2f}x unencrypted", "KiB",
                        er, None if pr is None else pr * ENC_LIMIT, bad))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for i, row in enumerate(table):
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    out += ["  (bytes: stored size for the full backup, repository growth for the second;"
            " ratios are encrypted/unencrypted)", "", "encryption targets"]
    out += check(targets)
    return out


if __name__ == "__main__":
    main()
