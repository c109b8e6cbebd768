#!/usr/bin/env python3
"""Format the retention benchmark results and check Lifeboat's targets.

    report_retention.py RESULTS-RETENTION.tsv

RESULTS-RETENTION.tsv is written by retention.sh, in the format of sqlite.sh's
results (see report.py): "#" header lines, then
    step <TAB> tool <TAB> seconds <TAB> bytes <TAB> peak_rss_kib <TAB> note
The steps, and what their bytes are:
  history       the 60 backups (not a benchmark: warm cache); seconds summed,
                peak RSS the largest, bytes the repository size afterwards
  list          listing the backups, cold (the cost of opening the repository)
  forget+prune  the retention step, cold; bytes freed (du -sb before - after).
                For the unencrypted Lifeboat repository it is the sum of the
                "forget" and "prune" rows, two commands timed separately
  repo after    the repository size after pruning, and the days kept
  kept, check   whether the tool kept the policy's days; whether the pruned
                repository checks and verifies (notes only)

Every tool is compared with restic at the same step.  The targets (issue 6)
are for the encrypted Lifeboat repository, the like-for-like comparison with
restic (which always encrypts): forget+prune faster than restic, peak RSS
<= 256 MiB, repository afterwards no larger than restic's.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import aligned, check, failed_check, human, load, ratio  # noqa: E402  (same formatting as sqlite.sh's report)

LB_ENC = "lifeboat (encrypted)"
LB_PLAIN = "lifeboat"
RESTIC = "restic"
COMPARED = ("history", "list", "forget+prune", "repo after")
RETENTION_STEPS = ("forget+prune", "forget", "prune")


def cpu(r):
    """User + system CPU seconds, from the note's "cpu X s" (None if absent)."""
    m = re.search(r"\bcpu ([0-9.]+) s", (r or {}).get("note", ""))
    return float(m.group(1)) if m else None


def main():
    header, rows, get = load(sys.argv[1])

    table = [("step", "tool", "time s", "cpu s", "bytes", "peak RSS MiB",
              "time vs restic", "cpu vs restic", "bytes vs restic", "notes")]
    for r in rows:
        ref = get(r["step"], RESTIC) if r["step"] in COMPARED and r["tool"] != RESTIC else {}
        c = cpu(r)
        table.append((
            r["step"], r["tool"],
            "-" if r["secs"] is None else f"{r['secs']:.2f}",
            "-" if c is None else f"{c:.2f}",
            human(r["bytes"]),
            "-" if r["rss"] is None else f"{r['rss'] / 1024:.0f}",
            ratio(r["secs"], ref.get("secs")), ratio(c, cpu(ref)),
            ratio(r["bytes"], ref.get("bytes")), r["note"]))

    out = header + [""] + aligned(table)
    out += ["", "bytes: history -> repository size after the backups; forget+prune -> bytes freed;"
            " repo after -> repository size after pruning (all du -sb)",
            "cpu: user + system seconds (less skewed than wall time when other work runs)",
            "ratios: the tool / restic at the same step", ""]

    # Summary: before, after, freed, kept, per tool.
    out.append("retention summary")
    for tool in (LB_ENC, LB_PLAIN, RESTIC):
        h, fp, after = get("history", tool), get("forget+prune", tool), get("repo after", tool)
        if not fp.get("secs"):
            out.append(f"  {tool:22} not measured")
            continue
        kept = after.get("note", "").split(":")[0]
        rss = fp.get("rss") or 0
        for step in RETENTION_STEPS[1:]:   # the two-command run's peak is the larger one's
            rss = max(rss, get(step, tool).get("rss") or 0)
        c = cpu(fp)
        out.append(f"  {tool:22} {fp['secs']:7.2f} s  cpu {'-' if c is None else f'{c:.2f}'} s  "
                   f"peak {rss / 1024:4.0f} MiB  "
                   f"repository {human(h.get('bytes'))} -> {human(after.get('bytes'))}, "
                   f"freed {human(fp.get('bytes'))}; {kept}")
    out.append("")

    enc, plain, rst = get("forget+prune", LB_ENC), get("forget+prune", LB_PLAIN), get("forget+prune", RESTIC)
    lb_rss = [r["rss"] for r in rows if r["tool"] in (LB_ENC, LB_PLAIN)
              and r["step"] in RETENTION_STEPS and r["rss"] is not None]
    def broken(tool):
        """Why the tool's retention run does not count: it failed, or left a repository
        that fails its check or verification."""
        c = get("check", tool).get("note") or ""
        return failed_check(get("forget+prune", tool)) or (c if "FAILED" in c else None)

    targets = [
        ("forget+prune time <= 1.0x restic (encrypted repository, one command)", "s",
         enc.get("secs"), rst.get("secs"), broken(LB_ENC)),
        ("repository size after <= restic's (encrypted repository)", "B",
         get("repo after", LB_ENC).get("bytes"), get("repo after", RESTIC).get("bytes"),
         broken(LB_ENC)),
        ("peak RSS <= 256 MiB (max over Lifeboat's forget/prune runs)", "KiB",
         max(lb_rss) if lb_rss else None, 256 * 1024),
        ("also unencrypted: forget + prune time <= 1.0x restic", "s",
         plain.get("secs"), rst.get("secs"), broken(LB_PLAIN)),
        ("also unencrypted: repository size after <= restic's", "B",
         get("repo after", LB_PLAIN).get("bytes"), get("repo after", RESTIC).get("bytes"),
         broken(LB_PLAIN)),
    ]
    out.append("targets (issue 6)")
    out += check(targets)

    # Correctness: same days kept (and the policy's), repositories sound.
    out += ["", "correctness"]
    good = bad = 0
    for r in rows:
        if r["step"] in ("kept", "check"):
            ok = r["note"].startswith("ok") or (r["step"] == "check" and "FAILED" not in r["note"]
                                                 and "skipped" not in r["note"])
            good, bad = good + ok, bad + (not ok)
            out.append(f"  [{'PASS' if ok else 'FAIL'}] {r['step']:5} {r['tool']}: {r['note']}")
    counts = {t: get("repo after", t).get("note", "").split(":")[0] for t in (LB_ENC, LB_PLAIN, RESTIC)}
    same = len(set(counts.values())) == 1 and all(counts.values())
    good, bad = good + same, bad + (not same)
    out.append(f"  [{'PASS' if same else 'FAIL'}] same number of backups kept: "
               + "; ".join(f"{t} {c or 'n/a'}" for t, c in counts.items()))
    out.append(f"  {good} passed, {bad} failed")
    print("\n".join(out))


if __name__ == "__main__":
    main()
