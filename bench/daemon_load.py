#!/usr/bin/env python3
"""The measuring side of daemon.sh: a small HTTP client for the daemon's API and a sampler
of its process.  Every command prints one line of `key=value` fields (what daemon.sh
records) and exits 1, with the reason on stderr, when what it measured is wrong.

    daemon_load.py ready URL START_EPOCH TIMEOUT_S
        poll /api/v1/health/ready every 10 ms until 200: ready_s (since START_EPOCH)
    daemon_load.py settle URL TOKEN SOURCES TIMEOUT_S
        wait until /api/v1/status shows SOURCES sources, each with a backup, and no job
        queued or running; then every job must have succeeded: settle_s jobs
    daemon_load.py jobs URL TOKEN
        the jobs the daemon ran so far: jobs failed unfinished
    daemon_load.py latency URL TOKEN PATH N CONNS [--count C] [--total T] [--source S]
                           [--backups B] [--metric NAME=VALUE]
        N GET requests of PATH over CONNS keep-alive connections (threads, N/CONNS each),
        bearer TOKEN; every answer must be 200 and pass the checks (checked on the first
        answer of each connection and the last): n p50_ms p99_ms max_ms rps bytes
    daemon_load.py idle PID SECONDS
        CPU (utime + stime of every thread) and memory of PID over SECONDS: seconds cpu_s
        cpu_pct rss_kib hwm_kib threads wakeups_per_s
    daemon_load.py mem PID
        rss_kib hwm_kib threads
"""
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    """The nearest-rank percentile p (0 < p <= 100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def fields(**kw):
    """key=value fields, floats to 3 decimals."""
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items())


def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def connect(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def get(conn, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def cmd_ready(url, start, timeout):
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        try:
            c = connect(url)
            status, _ = get(c, "/api/v1/health/ready")
            c.close()
            if status == 200:
                print(fields(ready_s=time.time() - float(start)))
                return
        except OSError:
            pass
        time.sleep(0.01)
    die(f"not ready after {timeout} s")


def cmd_settle(url, token, sources, timeout):
    t0 = time.time()
    deadline = t0 + float(timeout)
    last = None
    while time.time() < deadline:
        try:
            c = connect(url)
            status, body = get(c, "/api/v1/status", token)
            c.close()
            if status == 200:
                s = json.loads(body)
                srcs = s["sources"]
                backed = sum(1 for x in srcs if x.get("last_backup"))
                running = s["daemon"]["jobs_running"] + sum(len(x["running"]) for x in srcs)
                last = f"{len(srcs)} sources, {backed} with a backup, {running} jobs running"
                if len(srcs) == int(sources) and backed == int(sources) and running == 0:
                    jobs = list_jobs(url, token)
                    bad = [j for j in jobs if j["state"] != "succeeded"]
                    if bad:
                        die(f"{len(bad)} of {len(jobs)} jobs did not succeed: {bad[0]['kind']} of"
                            f" {bad[0]['source']} {bad[0]['state']}: {bad[0].get('error')}")
                    print(fields(settle_s=time.time() - t0, jobs=len(jobs)))
                    return
            else:
                last = f"status {status}"
        except (OSError, ValueError, KeyError) as e:
            last = repr(e)
        time.sleep(0.2)
    die(f"not settled after {timeout} s: {last}")


def list_jobs(url, token):
    c = connect(url)
    status, body = get(c, "/api/v1/jobs", token)
    c.close()
    if status != 200:
        die(f"GET /api/v1/jobs: status {status}")
    return json.loads(body)["jobs"]


def cmd_jobs(url, token):
    jobs = list_jobs(url, token)
    print(fields(jobs=len(jobs), failed=sum(1 for j in jobs if j["state"] == "failed"),
                 unfinished=sum(1 for j in jobs if j["state"] in ("queued", "running"))))


def check(path, body, opts):
    """Why the answer `body` of `path` is wrong, or None."""
    if path.startswith("/metrics"):
        text = body.decode("utf-8", "replace")
        for want in opts.get("metric", []):
            name, value = want.split("=", 1)
            line = next((ln for ln in text.splitlines() if ln.split(" ")[0] == name), None)
            if line is None:
                return f"no {name} in /metrics"
            if float(line.split(" ")[1]) != float(value):
                return f"{line!r}, want {value}"
        return None
    doc = json.loads(body)
    if "count" in opts and doc.get("count") != int(opts["count"]):
        return f"count {doc.get('count')}, want {opts['count']}"
    if "total" in opts and doc.get("total") != int(opts["total"]):
        return f"total {doc.get('total')}, want {opts['total']}"
    if "source" in opts:
        bad = [b["source"] for b in doc.get("backups", []) if b["source"] != opts["source"]]
        if bad:
            return f"{len(bad)} backups of another source ({bad[0]})"
    if "backups" in opts:
        got = doc.get("daemon", {}).get("backups")
        if got != int(opts["backups"]):
            return f"status says {got} backups, want {opts['backups']}"
    return None


def cmd_latency(url, token, path, n, conns, opts):
    n, conns = int(n), int(conns)
    per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    times, sizes, errors = [[] for _ in range(conns)], [0] * conns, []
    go = threading.Barrier(conns + 1)

    def worker(i):
        c = connect(url)
        try:
            status, body = get(c, path, token)   # warm-up: the connection, then timed requests
            why = check(path, body, opts) if status == 200 else f"status {status}: {body[:200]!r}"
            go.wait()
            for k in range(per[i]):
                t = time.perf_counter()
                status, body = get(c, path, token)
                times[i].append(time.perf_counter() - t)
                if status != 200:
                    why = why or f"status {status}: {body[:200]!r}"
                sizes[i] = len(body)
                if k == per[i] - 1 and not why:
                    why = check(path, body, opts)
            if why:
                errors.append(why)
        except Exception as e:   # noqa: BLE001 - any failure of a worker is the run's failure
            errors.append(repr(e))
            if not go.broken:
                go.abort()
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    try:
        go.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        die(f"GET {path}: {errors[0]}")
    flat = [x * 1000 for ts in times for x in ts]
    print(fields(n=len(flat), p50_ms=percentile(flat, 50), p99_ms=percentile(flat, 99),
                 max_ms=max(flat), rps=len(flat) / wall, bytes=max(sizes)))


def proc_cpu(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()[0] if v.split() else ""
    return out


def wakeups(pid):
    """Context switches of every thread of PID so far (each is a wake-up or a preemption)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(f"{pid}/task/{tid}")
        except OSError:
            continue   # a thread that ended meanwhile
        total += int(st.get("voluntary_ctxt_switches", 0)) + int(st.get("nonvoluntary_ctxt_switches", 0))
    return total


def cmd_idle(pid, seconds):
    seconds = float(seconds)
    c0, w0, t0 = proc_cpu(pid), wakeups(pid), time.monotonic()
    time.sleep(seconds)
    c1, w1, t1 = proc_cpu(pid), wakeups(pid), time.monotonic()
    st = proc_status(pid)
    span = t1 - t0
    print(fields(seconds=span, cpu_s=c1 - c0, cpu_pct=100 * (c1 - c0) / span,
                 rss_kib=int(st["VmRSS"]), hwm_kib=int(st["VmHWM"]), threads=int(st["Threads"]),
                 wakeups_per_s=(w1 - w0) / span))


def cmd_mem(pid):
    st = proc_status(pid)
    print(fields(rss_kib=int(st["VmRSS"]), hwm_kib=int(st["VmHWM"]), threads=int(st["Threads"])))


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "latency":
        pos, opts, i = [], {}, 0
        while i < len(args):
            if args[i].startswith("--"):
                key = args[i][2:]
                if key == "metric":
                    opts.setdefault("metric", []).append(args[i + 1])
                else:
                    opts[key] = args[i + 1]
                i += 2
            else:
                pos.append(args[i])
                i += 1
        cmd_latency(*pos, opts)
    elif cmd in ("ready", "settle", "jobs", "idle", "mem"):
        {"ready": cmd_ready, "settle": cmd_settle, "jobs": cmd_jobs, "idle": cmd_idle,
         "mem": cmd_mem}[cmd](*args)
    else:
        die(__doc__)


if __name__ == "__main__":
    main(sys.argv)
