#!/usr/bin/env python3
"""A counting HTTP proxy for S3 traffic (stdlib only).

    count_proxy.py --listen PORT --upstream http://HOST:PORT --log REQS.jsonl
                   --counts COUNTS.json [--save-bodies REGEX DIR] [--port-file F]

Every request a client sends to 127.0.0.1:PORT is forwarded as it is (method,
path, query, headers except hop-by-hop ones, body streamed) to the upstream S3
server, and the answer is streamed back.  Each request is classified by kind:

  PUT     PUT of an object (including multipart parts and server-side copies)
  GET     GET of an object (ranged or whole)
  LIST    GET on a bucket (ListObjects / ListObjectsV2 / ListMultipartUploads ...)
  HEAD    HEAD of an object or bucket
  DELETE  DELETE of an object (or of a multipart upload)
  POST    POST: multipart create/complete, and multi-object delete (?delete),
          which is also counted under "DELETE (batch)" in the details

and counted with the bytes of the request body (up) and of the answer's body
(down).  One JSON line per finished request goes to --log (start and end time,
method, kind, path, query, status, bytes up/down), which is what the
benchmark uses for time-resolved questions ("what was uploaded after the
restart"); the totals go to --counts, rewritten every second and on SIGTERM /
SIGINT (then the proxy exits 0) or SIGUSR1.

--save-bodies REGEX DIR keeps the body of every successful PUT whose path
matches REGEX in DIR (file name: the request's sequence number), aws-chunked
framing removed; the log line names the file.  The benchmark uses it to read
which commit a replication object carries.

One upstream connection per request: on loopback that costs ~0.1 ms and
never forwards a request on a connection the server has closed.
"""
import argparse
import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
       "trailer", "transfer-encoding", "upgrade", "expect", "proxy-connection"}
BUF = 1 << 20


def classify(method, path, query):
    """(kind, detail) of one S3 request."""
    parts = [p for p in path.split("/") if p]
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    on_bucket = len(parts) <= 1
    if method == "GET":
        if on_bucket:
            return "LIST", "LIST" + (" (v2)" if q.get("list-type") == ["2"] else "")
        return "GET", "GET"
    if method == "PUT":
        if "partNumber" in q:
            return "PUT", "PUT part"
        if on_bucket:
            return "PUT", "PUT bucket"
        return "PUT", "PUT"
    if method == "POST":
        if "delete" in q:
            return "POST", "DELETE (batch)"
        if "uploads" in q:
            return "POST", "POST create multipart"
        if "uploadId" in q:
            return "POST", "POST complete multipart"
        return "POST", "POST"
    if method == "DELETE":
        return "DELETE", "DELETE multipart" if "uploadId" in q else "DELETE"
    if method == "HEAD":
        return "HEAD", "HEAD"
    return method, method


def decode_aws_chunked(data):
    """The payload of an aws-chunked body: "hex[;ext]\\r\\n" data "\\r\\n" ... "0..." trailers."""
    out, i = bytearray(), 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2


class Stats:
    def __init__(self, log_path, counts_path):
        self.lock = threading.Lock()
        self.seq = 0
        self.kinds = {}     # kind -> {"requests", "bytes_up", "bytes_down", "errors"}
        self.details = {}   # detail -> requests
        self.log = open(log_path, "a", buffering=1)
        self.counts_path = counts_path
        self.started = time.time()

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def add(self, rec):
        with self.lock:
            k = self.kinds.setdefault(rec["kind"], {"requests": 0, "bytes_up": 0,
                                                    "bytes_down": 0, "errors": 0})
            k["requests"] += 1
            k["bytes_up"] += rec["up"]
            k["bytes_down"] += rec["down"]
            if rec["status"] >= 400 or rec["status"] == 0:
                k["errors"] += 1
            self.details[rec["detail"]] = self.details.get(rec["detail"], 0) + 1
            self.log.write(json.dumps(rec) + "\n")

    def dump(self):
        with self.lock:
            doc = {"since": self.started, "at": time.time(), "kinds": self.kinds,
                   "details": self.details,
                   "requests": sum(k["requests"] for k in self.kinds.values()),
                   "bytes_up": sum(k["bytes_up"] for k in self.kinds.values()),
                   "bytes_down": sum(k["bytes_down"] for k in self.kinds.values())}
            tmp = self.counts_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
            os.replace(tmp, self.counts_path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):   # quiet: the JSON log says it all
        pass

    def _proxy(self):
        srv = self.server
        t0 = time.time()
        split = urllib.parse.urlsplit(self.path)
        path, query = split.path, split.query
        kind, detail = classify(self.command, path, query)
        n = srv.stats.next_seq()
        up = down = status = 0
        saved = None
        keep = (self.command == "PUT" and srv.save_re is not None
                and srv.save_re.search(path) is not None)
        body_copy = bytearray() if keep else None
        try:
            conn = http.client.HTTPConnection(srv.up_host, srv.up_port, timeout=600)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP:
                    conn.putheader(k, v)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            length = int(self.headers.get("Content-Length") or 0)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if chunked:
                while True:
                    line = self.rfile.readline()
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass   # trailers: dropped
                        conn.send(b"0\r\n\r\n")
                        break
                    data = self.rfile.read(size)
                    self.rfile.readline()
                    conn.send(b"%x\r\n" % len(data) + data + b"\r\n")
                    up += len(data)
                    if keep:
                        body_copy += data
            else:
                left = length
                while left > 0:
                    data = self.rfile.read(min(BUF, left))
                    if not data:
                        raise ConnectionError("client closed mid-body")
                    conn.send(data)
                    left -= len(data)
                    up += len(data)
                    if keep:
                        body_copy += data
            resp = conn.getresponse()
            status = resp.status
            self.send_response_only(resp.status, resp.reason)
            rlen = resp.getheader("Content-Length")
            for k, v in resp.getheaders():
                if k.lower() not in HOP:
                    self.send_header(k, v)
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            rechunk = rlen is None and not no_body
            if rechunk:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not no_body:
                while True:
                    data = resp.read(BUF)
                    if not data:
                        break
                    down += len(data)
                    self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n" if rechunk else data)
                if rechunk:
                    self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            conn.close()
            if keep and 200 <= status < 300:
                payload = bytes(body_copy)
                enc = self.headers.get("Content-Encoding", "") + \
                    self.headers.get("x-amz-content-sha256", "")
                if "aws-chunked" in enc or "STREAMING-" in enc:
                    try:
                        payload = decode_aws_chunked(payload)
                    except (ValueError, IndexError):
                        pass
                saved = os.path.join(srv.save_dir, "%08d" % n)
                with open(saved, "wb") as f:
                    f.write(payload)
        except Exception as e:   # a client killed mid-request, an upstream error: logged
            self.close_connection = True
            if not status:
                try:
                    self.send_error(502, str(e)[:100])
                except Exception:
                    pass
        rec = {"n": n, "t0": t0, "t1": time.time(), "method": self.command, "kind": kind,
               "detail": detail, "path": path, "query": query, "status": status,
               "up": up, "down": down}
        if saved:
            rec["saved"] = saved
        srv.stats.add(rec)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--counts", required=True)
    ap.add_argument("--port-file", help="write the port listened on here once ready")
    ap.add_argument("--save-bodies", nargs=2, metavar=("REGEX", "DIR"))
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.upstream)
    srv = ThreadingHTTPServer(("127.0.0.1", a.listen), Handler)
    srv.daemon_threads = True
    srv.up_host, srv.up_port = u.hostname, u.port or 80
    srv.stats = Stats(a.log, a.counts)
    srv.save_re = srv.save_dir = None
    if a.save_bodies:
        srv.save_re = re.compile(a.save_bodies[0])
        srv.save_dir = a.save_bodies[1]
        os.makedirs(srv.save_dir, exist_ok=True)

    def stop(signum, frame):
        srv.stats.dump()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, lambda s, f: srv.stats.dump())

    def ticker():
        while True:
            time.sleep(1)
            srv.stats.dump()

    threading.Thread(target=ticker, daemon=True).start()
    srv.stats.dump()
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.replace(a.port_file + ".tmp", a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
