#!/usr/bin/env python3
"""Format daemon.sh's results as Markdown and check the issue's targets.

    report_daemon.py RESULTS-DAEMON.tsv

RESULTS-DAEMON.tsv: "#" header lines (printed as-is), then rows of
    step <TAB> case <TAB> repo <TAB> conns <TAB> fields <TAB> note
fields being space-separated key=value numbers; a row whose note starts with "FAILED" is a
measurement that failed (no fields).  Steps and their fields:
  setup    repository: backups secs bytes cached
  idle     fresh (10 sources, a new repository) / loaded (the repository of 10,000 backups):
           seconds cpu_s cpu_pct rss_kib hwm_kib threads wakeups_per_s
  start    loaded: ready_s backups rss_kib hwm_kib threads
  latency  list / list-source / status / metrics / list-all, per repo (repo: plain,
           repo-enc: encrypted) and connections: n p50_ms p99_ms max_ms rps bytes
  memory   loaded: rss_kib hwm_kib threads (after the latency runs)
  cli      list / list-source: runs median_s max_s rss_kib backups (`lifeboat list --json`)

Ratios: each list row's p50 against the median wall time of `lifeboat list --json` (same
repository, same filter): what a cron script pays today for the same answer.
Targets (verdicts met / missed; "failed" when the measurement itself failed):
  idle CPU < 1% of one core and idle RSS <= 64 MiB (idle/fresh);
  p99 <= 50 ms of list, list-source and status, the largest p99 over every run of the
  endpoint (connections, plain and encrypted), with 10,000 backups ("n/a" with fewer);
  /metrics p99 <= 20 ms (same rule).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import human, md_escape, md_targets  # noqa: E402

FULL_BACKUPS = 10_000
IDLE_CPU_PCT = 1.0        # strictly less than
IDLE_RSS_KIB = 64 * 1024
API_P99_MS = 50.0
SCRAPE_P99_MS = 20.0
ENDPOINTS = {
    "list": "GET /api/v1/backups",
    "list-source": "GET /api/v1/backups?source=…",
    "status": "GET /api/v1/status",
    "metrics": "GET /metrics",
    "list-all": "GET /api/v1/backups?limit=10000 (info)",
}
REPOS = {"repo": "plain", "repo-enc": "encrypted"}


def parse_fields(text):
    """{key: float} of "k=v k=v" (a value that is not a number is kept as text)."""
    out = {}
    for item in (text or "").split():
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"field {item!r} is not key=value")
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def load(path):
    header, rows = [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                header.append(line[1:].strip())
            elif line.strip():
                step, case, repo, conns, fields, note = (line.split("\t") + [""] * 6)[:6]
                rows.append(dict(step=step, case=case, repo=repo, conns=conns,
                                 f=parse_fields(fields), note=note))
    return header, rows


def failed(row):
    note = (row or {}).get("note") or ""
    return note if note.startswith("FAILED") else None


def ms(v):
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


def backups_of(rows):
    """The backup count the API runs were made with (the start rows'), or None."""
    counts = [r["f"].get("backups") for r in rows if r["step"] == "start" and not failed(r)]
    counts = [c for c in counts if c is not None]
    return int(min(counts)) if counts else None


def target(desc, got, limit, fmt, below=False, why=None, na=None):
    """A row of md_targets: at most `limit` (strictly below when `below`)."""
    if why:
        verdict = "failed"
    elif got is None:
        verdict = "n/a"
    elif na:
        verdict, why = "n/a", na
    else:
        verdict = "met" if (got < limit if below else got <= limit) else "missed"
    return (desc, "-" if got is None else fmt(got), ("< " if below else "<= ") + fmt(limit),
            verdict, why or "")


def worst_p99(rows, case):
    """The largest p99 over the latency rows of `case`, the row it came from, and the note of
    a failed run of it (if any)."""
    runs = [r for r in rows if r["step"] == "latency" and r["case"] == case]
    bad = next((failed(r) for r in runs if failed(r)), None)
    ok = [r for r in runs if not failed(r) and "p99_ms" in r["f"]]
    if not ok:
        return None, None, bad
    top = max(ok, key=lambda r: r["f"]["p99_ms"])
    return top["f"]["p99_ms"], top, bad


def targets(rows):
    def get(step, case):
        return next((r for r in rows if r["step"] == step and r["case"] == case), None)

    idle = get("idle", "fresh")
    n = backups_of(rows)
    na = None if n is None or n >= FULL_BACKUPS else f"measured with {n:,} backups, not {FULL_BACKUPS:,}"
    out = [
        target("idle CPU < 1% of one core (10 sources, after their first backups)",
               (idle or {}).get("f", {}).get("cpu_pct"), IDLE_CPU_PCT, lambda v: f"{v:.3f}%",
               below=True, why=failed(idle)),
        target("idle RSS <= 64 MiB (10 sources)", (idle or {}).get("f", {}).get("rss_kib"),
               IDLE_RSS_KIB, lambda v: f"{v / 1024:.1f} MiB", why=failed(idle)),
    ]
    for case, limit in (("list", API_P99_MS), ("list-source", API_P99_MS),
                        ("status", API_P99_MS), ("metrics", SCRAPE_P99_MS)):
        p99, top, bad = worst_p99(rows, case)
        where = "" if top is None else f" (worst: {REPOS.get(top['repo'], top['repo'])}, {top['conns']} conn.)"
        desc = f"{ENDPOINTS[case]} p99 <= {limit:.0f} ms with 10,000 backups"
        row = target(desc, p99, limit, lambda v: f"{v:.2f} ms", why=bad, na=na)
        out.append((row[0], row[1] + where, *row[2:]))
    return out


def report(header, rows):
    def get(step, case, repo):
        return next((r for r in rows if r["step"] == step and r["case"] == case and r["repo"] == repo), None)

    out = ["## lifeboat daemon: idle cost and API latency", ""]
    out += [f"- {h}" for h in header] + [""]

    out += ["### Idle, start and memory", "",
            "| measure | repository | CPU %/core | CPU s/hour | RSS MiB | peak RSS MiB | threads"
            " | wake-ups/s | start to ready s | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["step"] not in ("idle", "start", "memory"):
            continue
        f = r["f"]
        cpu = f.get("cpu_pct")
        out.append("| " + " | ".join([
            f"{r['step']} ({r['case']})", REPOS.get(r["repo"], r["repo"]),
            "-" if cpu is None else f"{cpu:.3f}",
            "-" if cpu is None else f"{cpu * 36:.1f}",   # % of a core -> CPU seconds per hour
            mib(f.get("rss_kib")), mib(f.get("hwm_kib")),
            "-" if f.get("threads") is None else f"{f['threads']:.0f}",
            "-" if f.get("wakeups_per_s") is None else f"{f['wakeups_per_s']:.1f}",
            "-" if f.get("ready_s") is None else f"{f['ready_s']:.2f}",
            md_escape(r["note"])]) + " |")

    out += ["", "### API latency (client side, keep-alive)", "",
            "| endpoint | repository | conns | requests | p50 ms | p99 ms | max ms | req/s | bytes"
            " | CLI `list --json` s | p50 vs CLI | notes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["step"] != "latency":
            continue
        f = r["f"]
        cli = get("cli", r["case"], r["repo"]) if r["case"] in ("list", "list-source") else None
        cli_s = (cli or {}).get("f", {}).get("median_s") if cli and not failed(cli) else None
        p50 = f.get("p50_ms")
        out.append("| " + " | ".join([
            md_escape(ENDPOINTS.get(r["case"], r["case"])), REPOS.get(r["repo"], r["repo"]), r["conns"],
            "-" if f.get("n") is None else f"{f['n']:.0f}",
            ms(p50), ms(f.get("p99_ms")), ms(f.get("max_ms")),
            "-" if f.get("rps") is None else f"{f['rps']:.0f}",
            human(f.get("bytes")),
            "-" if cli_s is None else f"{cli_s:.3f}",
            f"{p50 / 1000 / cli_s:.4f}x" if p50 is not None and cli_s else "-",
            md_escape(r["note"])]) + " |")

    out += ["", "### `lifeboat list --json` (the CLI a cron script runs today)", "",
            "| filter | repository | runs | median s | max s | peak RSS MiB | backups | notes |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["step"] != "cli":
            continue
        f = r["f"]
        out.append("| " + " | ".join([
            "all" if r["case"] == "list" else "--source", REPOS.get(r["repo"], r["repo"]),
            "-" if f.get("runs") is None else f"{f['runs']:.0f}",
            "-" if f.get("median_s") is None else f"{f['median_s']:.3f}",
            "-" if f.get("max_s") is None else f"{f['max_s']:.3f}",
            mib(f.get("rss_kib")),
            "-" if f.get("backups") is None else f"{f['backups']:.0f}",
            md_escape(r["note"])]) + " |")

    setup = [r for r in rows if r["step"] == "setup"]
    if setup:
        out += [""] + [f"- data: {REPOS.get(r['repo'], r['repo'])} repository, "
                       f"{r['f'].get('backups', 0):.0f} backups, {human(r['f'].get('bytes'))}; "
                       + ("cached" if r["f"].get("cached") else f"made in {r['f'].get('secs', 0):.0f} s")
                       + f" ({md_escape(r['note'])})" for r in setup]
    out += ["", "Latency is measured by the client (Python http.client, one request at a time per"
            " connection), so it includes the client's own cost. \"p50 vs CLI\": the API's p50 over"
            " the median wall time of `lifeboat list --json` with the same filter on the same"
            " repository. CPU s/hour: the idle window's CPU extrapolated to an hour.", ""]
    out += md_targets(targets(rows))
    return "\n".join(out)


def main():
    header, rows = load(sys.argv[1])
    print(report(header, rows))


if __name__ == "__main__":
    main()
