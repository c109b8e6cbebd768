#!/usr/bin/env python3
"""Analysis helpers of the replication benchmark (replicate.sh).

    replicate_analyze.py events REQS.jsonl PGNO REGEX > EVENTS.tsv   # t_ns seq key first
    replicate_analyze.py lag COMMITS.log EVENTS.tsv [--from NS] [--until NS] [--at NS]...
    replicate_analyze.py window REQS.jsonl [--from S] [--until S] [--match RX] [--exclude RX]
    replicate_analyze.py bucket ENDPOINT BUCKET PREFIX
    replicate_analyze.py seq-at COMMITS.log NS          # returned-by seq, its time, begun-by seq
    replicate_analyze.py commit-times COMMITS.log SEQ   # begin_ns returned_ns
    replicate_analyze.py ltx-seq FILE.ltx PGNO

**Replication lag.** The lag of commit k is (the first instant a restore of the
replica would contain k) - (the instant k committed).  Commit instants come from
the workload's log (replicate_workload.py writes "commit_time_ns<TAB>seq" right
after COMMIT returns).  The other side comes from the uploads themselves, the
same way for both tools: the counting proxy (count_proxy.py) saves the body of
every PUT whose path matches the tool's data objects (Litestream's level-0 LTX
files, Lifeboat's WAL segments), and `events` reads in each the commits it
carries: every transaction of the workload rewrites the one row of
`bench_marker`, whose page (PGNO) holds the text tag "SEQ:%012d".  An object
counts from the instant the proxy finished relaying the server's 2xx answer to
it (for a multipart upload: to CompleteMultipartUpload) *and* to every object
before it in its chain (LTX files by TXID, segments by their stream's sequence
number), since a restore needs them all; a transaction that a segment continues
into the next one counts where it ends.

Reading the tags needs the pages in the clear:
  * LTX (Litestream): a 100-byte header (min TXID at byte 16), then per page
    pgno u32, flags u16 and, when the header's flag 2 says compressed, a u32
    size and an LZ4 block; only page PGNO (bench_marker's, from
    `replicate_workload.py DB --init`) is decompressed, by the LZ4 decoder below;
  * Lifeboat segments (src/repo/segment.rs; unencrypted repository): zstd of
    "LBSEG01\\n", a u32 LE header length, the header JSON (stream, seq,
    page_size, commits with their page lists and `continues`), then the pages
    of every commit in order; decompressed with `zstd -dc`.

`lag` prints p50 / p99 / max / mean (ms) over the commits in [--from, --until)
(ns), the commits no object ever carried, and for each --at instant the newest
seq the replica held then (for the kill test).  `window` counts the proxy's
requests by kind (and bytes) finished in [--from, --until) (seconds), `bucket`
sums the sizes of the objects under a prefix (ListObjectsV2, unsigned: the
benchmark's server runs without auth), `seq-at` is the newest commit at or
before an instant.
"""
import json
import re
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

TAG = re.compile(rb"SEQ:(\d{12})")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# --- decoding uploads ------------------------------------------------------------

def lz4_block(src):
    """Decompress one raw LZ4 block (no frame)."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit = token >> 4
        if lit == 15:
            while True:
                b = src[i]
                i += 1
                lit += b
                if b != 255:
                    break
        out += src[i:i + lit]
        i += lit
        if i >= n:
            break
        off = src[i] | (src[i + 1] << 8)
        i += 2
        mlen = token & 15
        if mlen == 15:
            while True:
                b = src[i]
                i += 1
                mlen += b
                if b != 255:
                    break
        mlen += 4
        start = len(out) - off
        if off >= mlen:
            out += out[start:start + mlen]
        else:
            for k in range(mlen):
                out.append(out[start + k])
    return bytes(out)


def ltx_pages(data):
    """(pgno, blob, compressed) of each page of an LTX file (the v0.5 layout)."""
    if data[:4] != b"LTX1":
        raise ValueError("not an LTX file")
    flags, page_size = struct.unpack(">II", data[4:12])
    compressed = bool(flags & 2)
    i = 100
    while i + 6 <= len(data):
        pgno, _ = struct.unpack(">IH", data[i:i + 6])
        i += 6
        if pgno == 0:
            return
        if compressed:
            (size,) = struct.unpack(">I", data[i:i + 4])
            i += 4
            yield pgno, data[i:i + size], True
            i += size
        else:
            yield pgno, data[i:i + page_size], False
            i += page_size


def tags(data):
    return [int(m.group(1)) for m in TAG.finditer(data)]


def page_tags(page):
    found = tags(page)
    return max(found) if found else None


def decode_object(data, pgno):
    """What one uploaded data object says: (family, order, commits), where commits is
    [(tag, continues)] in commit order (tag: the newest SEQ tag in that commit's copy
    of page PGNO, None if the commit did not carry the page), family and order place
    the object in its chain (a restore needs every object before it); None if the
    object is not one this script reads.

      LTX (Litestream):  family "ltx", order = its minimum TXID; one entry: the
                         last version of page PGNO the file holds.
      Lifeboat segment:  zstd of "LBSEG01\\n", u32 LE header length, the header JSON
                         (stream, seq, page_size, commits: [{pages, continues}]),
                         the pages of every commit in order; family = the stream,
                         order = the segment's seq; one entry per commit.
    """
    if data[:4] == b"LTX1":
        found = []
        for p, blob, comp in ltx_pages(data):
            if p == pgno:
                v = page_tags(lz4_block(blob) if comp else blob)
                if v is not None:
                    found.append(v)
        (min_txid,) = struct.unpack(">Q", data[16:24])
        return "ltx", min_txid, [(max(found) if found else None, False)]
    if data[:4] == ZSTD_MAGIC:
        r = subprocess.run(["zstd", "-dcq"], input=data, stdout=subprocess.PIPE, check=False)
        data = r.stdout
    if data[:8] == b"LBSEG01\n":
        (hlen,) = struct.unpack("<I", data[8:12])
        h = json.loads(data[12:12 + hlen])
        ps, at, commits = h["page_size"], 12 + hlen, []
        for c in h["commits"]:
            tag = None
            for p in c["pages"]:
                if p == pgno:
                    v = page_tags(data[at:at + ps])
                    if v is not None:
                        tag = v if tag is None else max(tag, v)
                at += ps
            commits.append((tag, bool(c.get("continues"))))
        return h["stream"], h["seq"], commits
    return None


def ltx_seq(path, pgno):
    with open(path, "rb") as f:
        got = decode_object(f.read(), pgno)
    return got and got[2][0][0]


def load_reqs(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def events(reqs_path, pgno, regex):
    """(t_ns, seq, key, first) per stored data object matching REGEX: from t_ns on a
    restore can reach commit seq.  t_ns is when the object and every object before it
    in its chain were stored (the proxy relayed their 2xx answers; for a multipart
    upload, CompleteMultipartUpload's); seq is the newest commit completed in it (a
    transaction continued into the next segment counts where it ends); first is the
    oldest tag it carries."""
    rx = re.compile(regex)
    parts = {}   # uploadId -> {partNumber: saved file}
    objs = []    # (family, order, t_ns, key, commits)
    for r in sorted(load_reqs(reqs_path), key=lambda r: r["n"]):
        if not rx.search(r["path"]) or not 200 <= r["status"] < 300:
            continue
        q = urllib.parse.parse_qs(r["query"], keep_blank_values=True)
        data = None
        if r["method"] == "PUT" and "partNumber" in q and "uploadId" in q:
            if r.get("saved"):
                parts.setdefault(q["uploadId"][0], {})[int(q["partNumber"][0])] = r["saved"]
            continue
        if r["method"] == "PUT" and r.get("saved"):
            with open(r["saved"], "rb") as f:
                data = f.read()
        elif r["method"] == "POST" and "uploadId" in q:
            got = parts.pop(q["uploadId"][0], {})
            chunks = []
            for k in sorted(got):
                with open(got[k], "rb") as f:
                    chunks.append(f.read())
            data = b"".join(chunks)
        if data:
            d = decode_object(data, pgno)
            if d is not None:
                objs.append((d[0], d[1], int(r["t1"] * 1e9), r["path"], d[2]))
    out = []
    fams = {}
    for o in objs:
        fams.setdefault(o[0], []).append(o)
    for fam in fams.values():
        fam.sort(key=lambda o: o[1])
        t_chain, pending, newest = 0, None, None
        for _, _, t, key, commits in fam:
            t_chain = max(t_chain, t)
            seen = [tag for tag, _ in commits if tag is not None]
            for tag, cont in commits:
                if tag is not None:
                    pending = tag if pending is None else max(pending, tag)
                if not cont and pending is not None:
                    newest = pending if newest is None else max(newest, pending)
                    pending = None
            if newest is not None:
                out.append((t_chain, newest, key, min(seen) if seen else newest))
    out.sort()
    return out


# --- lag ---------------------------------------------------------------------------

def load_pairs(path):
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.append((int(parts[0]), int(parts[1])))
    return out


def pct(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = -(-p * len(sorted_vals) // 100)   # ceil
    return sorted_vals[max(0, min(len(sorted_vals), int(k)) - 1)]


def lag(commits, evs, t_from=None, t_until=None, at=()):
    evs = sorted(evs)
    times, held, m = [], [], -1
    for t, s in evs:
        m = max(m, s)
        times.append(t)
        held.append(m)
    lags, never = [], 0
    j = 0
    for t, seq in sorted(commits, key=lambda c: c[1]):
        if (t_from is not None and t < t_from) or (t_until is not None and t >= t_until):
            continue
        while j < len(held) and held[j] < seq:
            j += 1
        if j == len(held):
            never += 1
            continue
        lags.append(round(max(0, times[j] - t) / 1e6, 1))
    lags.sort()
    res = {"commits": len(lags) + never, "never_replicated": never,
           "p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99),
           "max_ms": lags[-1] if lags else None,
           "mean_ms": round(sum(lags) / len(lags), 1) if lags else None,
           "objects": len(evs), "held_at": {}}
    for t in at:
        h = [s for tt, s in zip(times, held) if tt <= t]
        res["held_at"][str(t)] = h[-1] if h else None
    return res


# --- requests, bucket, commits -----------------------------------------------------

def window(reqs_path, t_from=None, t_until=None, match=None, exclude=None):
    rx = re.compile(match) if match else None
    ex = re.compile(exclude) if exclude else None
    kinds, total, up, down, last_write = {}, 0, 0, 0, None
    for r in load_reqs(reqs_path):
        if (t_from is not None and r["t1"] < t_from) or (t_until is not None and r["t1"] >= t_until):
            continue
        if (rx and not rx.search(r["path"])) or (ex and ex.search(r["path"])):
            continue
        k = kinds.setdefault(r["kind"], {"requests": 0, "bytes_up": 0, "bytes_down": 0})
        k["requests"] += 1
        k["bytes_up"] += r["up"]
        k["bytes_down"] += r["down"]
        total += 1
        up += r["up"]
        down += r["down"]
        if r["method"] in ("PUT", "POST") and 200 <= r["status"] < 300:
            last_write = max(last_write or 0, r["t1"])
    return {"requests": total, "bytes_up": up, "bytes_down": down, "kinds": kinds,
            "last_write_t1": last_write}


def bucket(endpoint, name, prefix):
    total = count = 0
    token = None
    while True:
        q = {"list-type": "2", "prefix": prefix.rstrip("/") + "/"}
        if token:
            q["continuation-token"] = token
        url = "%s/%s?%s" % (endpoint.rstrip("/"), name, urllib.parse.urlencode(q))
        with urllib.request.urlopen(url, timeout=60) as resp:
            root = ET.fromstring(resp.read())
        ns = {"s": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
        p = "s:" if ns else ""
        for c in root.findall(p + "Contents", ns):
            total += int(c.find(p + "Size", ns).text)
            count += 1
        if (root.findtext(p + "IsTruncated", "false", ns) or "").lower() == "true":
            token = root.findtext(p + "NextContinuationToken", None, ns)
            if not token:
                break
        else:
            break
    return total, count


def seq_at(commits, t):
    """(seq, time) of the newest commit at or before t; (0, None) if none."""
    best = (0, None)
    for ct, s in commits:
        if ct <= t and s > best[0]:
            best = (s, ct)
    return best


def load_begins(path):
    """seq -> begin_ns, from the commit log's third column (when present)."""
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out[int(parts[1])] = int(parts[2])
    return out


def main():
    a = sys.argv[1:]
    cmd = a[0] if a else ""
    if cmd == "events":
        for t, s, key, first in events(a[1], int(a[2]), a[3]):
            print("%d\t%d\t%s\t%d" % (t, s, key, first))
    elif cmd == "lag":
        opts, at, pos, i = {"--from": None, "--until": None}, [], [], 1
        while i < len(a):
            if a[i] in opts:
                opts[a[i]] = int(a[i + 1])
                i += 2
            elif a[i] == "--at":
                at.append(int(a[i + 1]))
                i += 2
            else:
                pos.append(a[i])
                i += 1
        print(json.dumps(lag(load_pairs(pos[0]), load_pairs(pos[1]),
                             opts["--from"], opts["--until"], at)))
    elif cmd == "window":
        opts, i = {"--from": None, "--until": None, "--match": None, "--exclude": None}, 2
        while i < len(a):
            opts[a[i]] = a[i + 1]
            i += 2
        f = lambda x: None if x is None else float(x)  # noqa: E731
        print(json.dumps(window(a[1], f(opts["--from"]), f(opts["--until"]), opts["--match"],
                                opts["--exclude"])))
    elif cmd == "bucket":
        print(*bucket(a[1], a[2], a[3]))
    elif cmd == "seq-at":
        # newest commit returned by NS, its time, and the newest commit begun by NS
        # (one in flight at NS may or may not be in a restore to NS)
        t_at = int(a[2])
        s, t = seq_at(load_pairs(a[1]), t_at)
        begun = [q for q, b in load_begins(a[1]).items() if b <= t_at]
        print(s, t if t is not None else 0, max(begun) if begun else s)
    elif cmd == "commit-times":
        # SEQ -> "begin_ns returned_ns" (0 0 if not in the log)
        seq = int(a[2])
        ret = dict((q, t) for t, q in load_pairs(a[1]))
        print(load_begins(a[1]).get(seq, 0), ret.get(seq, 0))
    elif cmd == "ltx-seq":
        print(ltx_seq(a[1], int(a[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
