#!/usr/bin/env python3
"""Format the replication benchmark's results and check issue 13's targets.

    report_replicate.py RESULTS-REPLICATE.tsv

RESULTS-REPLICATE.tsv is written by replicate.sh: "#" header lines, then
    metric <TAB> tool <TAB> value <TAB> note
The metric's last word is its unit (B, KiB, s, ms; none: a count).  The table
puts Lifeboat and Litestream side by side with their ratio; notes follow it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import aligned, human  # noqa: E402  (same formatting as the other reports)

LB, LS = "lifeboat", "litestream"
BAD = ("FAILED", "BAD RESTORE", "MISSING OUTPUT")


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def load(path):
    header, rows = [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                header.append(line[1:].strip())
            elif line:
                metric, tool, value, note = (line.split("\t") + [""] * 4)[:4]
                rows.append(dict(metric=metric, tool=tool, value=num(value), raw=value, note=note))
    return header, rows


def unit(metric):
    last = metric.split()[-1]
    return last if last in ("B", "KiB", "s", "ms") else ""


def fmt(metric, v):
    if v is None:
        return "-"
    u = unit(metric)
    if u == "B":
        return human(v)
    if u == "KiB":
        return f"{v / 1024:.0f} MiB"
    if u == "s":
        return f"{v:.2f} s"
    if u == "ms":
        return f"{v:.0f} ms"
    return f"{v:.0f}"


def main():
    header, rows = load(sys.argv[1])
    metrics = []
    for r in rows:
        if r["metric"] not in metrics:
            metrics.append(r["metric"])

    def get(metric, tool):
        return next((r for r in rows if r["metric"] == metric and r["tool"] == tool), {})

    def val(metric, tool):
        return get(metric, tool).get("value")

    def bad(metric, tool):
        note = get(metric, tool).get("note") or ""
        return note if any(note.startswith(b) or b in note for b in BAD) else None

    table = [("metric", LB, LS, "lifeboat / litestream", "")]
    for m in metrics:
        a, b = val(m, LB), val(m, LS)
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        table.append((m.rsplit(" ", 1)[0] if unit(m) else m, fmt(m, a), fmt(m, b), ratio, ""))
    out = header + [""] + aligned(table) + ["", "notes"]
    for m in metrics:
        for tool in (LB, LS):
            note = get(m, tool).get("note")
            if note:
                out.append(f"  {m} ({tool}): {note}")

    rss = [v for v in (val("peak RSS KiB", LB), val("kill: peak RSS KiB after restart", LB))
           if v is not None]

    def lim(metric, k):
        v = val(metric, LS)
        return None if v is None else v * k

    targets = [
        ("replication lag p99 <= 1 s", "ms", val("lag p99 ms", LB), 1000, bad("lag p99 ms", LB)),
        ("after kill -9 + restart, nothing committed > 1 s before the kill is lost", "",
         val("kill: lost commits older than kill-1s", LB), 0,
         bad("kill: lost commits older than kill-1s", LB)),
        ("after kill -9 + restart, <= 1 MB re-shipped (estimate; Lifeboat's own count in the notes)", "B", val("kill: re-shipped (estimate) B", LB),
         1_000_000, None),
        ("stored bytes <= 0.5x Litestream's", "B", val("stored B", LB), lim("stored B", 0.5), None),
        ("requests <= 0.5x Litestream's (whole run)", "", val("requests", LB),
         lim("requests", 0.5), None),
        ("CPU <= Litestream's (whole run)", "s", val("CPU s", LB), lim("CPU s", 1.0), None),
        ("restore to latest <= 0.5x Litestream's time", "s", val("restore latest s", LB),
         lim("restore latest s", 0.5), bad("restore latest s", LB) or bad("restore latest s", LS)),
        ("peak RSS <= 128 MiB (replicate, both runs)", "KiB", max(rss) if rss else None,
         128 * 1024, None),
    ]
    out += ["", "targets (issue 13)"]
    passed = failed = 0
    for desc, u, got, limit, why in targets:
        if why:
            verdict, detail = "FAIL", f"the step failed: {why}"
            failed += 1
        elif got is None or limit is None:
            verdict, detail = "n/a ", "not measured"
        else:
            ok = got <= limit
            passed += ok
            failed += not ok
            verdict = "PASS" if ok else "MISS"
            if u == "B":
                detail = f"{human(got)} vs limit {human(limit)}"
            elif u == "KiB":
                detail = f"{got / 1024:.0f} MiB vs limit {limit / 1024:.0f} MiB"
            elif u == "s":
                detail = f"{got:.2f} s vs limit {limit:.2f} s"
            elif u == "ms":
                detail = f"{got:.0f} ms vs limit {limit:.0f} ms"
            else:
                detail = f"{got:.0f} vs limit {limit:.0f}"
        out.append(f"  [{verdict}] {desc}: {detail}")
    out.append(f"  {passed} of {len(targets)} targets met, {failed} missed, "
               f"{len(targets) - passed - failed} not measured")

    def r(metric):
        a, b = val(metric, LB), val(metric, LS)
        return f"{a / b:.2f}x" if a is not None and b else "-"

    out.append("  (the workload window alone, without the initial copy: requests "
               f"{r('requests, workload window')}, CPU {r('CPU, workload window s')}, "
               f"uploaded {r('uploaded, workload window B')} of Litestream's)")
    print("\n".join(out))


if __name__ == "__main__":
    main()
