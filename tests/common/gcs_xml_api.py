"""gcp-storage-emulator with the parts of GCS's XML API that object_store uses.

object_store's GCS client (0.14) talks the XML API for objects: PUT, GET (with Range), HEAD and
DELETE on /BUCKET/OBJECT, and ListObjectsV2-style listing (GET /BUCKET?list-type=2). The emulator
(PyPI gcp-storage-emulator 2026.7.19, pinned by scripts/test.sh) implements the JSON API fully but
of the XML API only PUT and GET, without the ETag / Last-Modified / x-goog-generation headers that
object_store requires, and answers 501 to HEAD, DELETE and XML listing. This launcher adds those
routes on top of the emulator's own storage (objects, sizes, checksums, generations all come from
it) and then runs the emulator's usual command line:

    python3 gcs_xml_api.py start --host=127.0.0.1 --port=PORT --in-memory

It also honours `x-goog-if-generation-match` on PUT (object_store sends 0 for create-only puts),
which the emulator ignores: a put onto an existing object fails with 412, as on GCS. Requests are
still served one at a time (the emulator is a single-threaded HTTP/1.0 server), so races between
writers are not exercised by this server. Used by tests/common/gcs.rs.
"""

import email.utils
import re
import sys
from datetime import datetime, timezone
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import escape

from gcp_storage_emulator import __main__ as emulator_main
from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

# The emulator's route for /BUCKET/OBJECT, replaced by ours, which also matches the
# percent-encoded bucket names that object_store sends (every non-alphanumeric byte encoded).
EMULATOR_OBJECT_ROUTE = r"^/(?P<bucket_name>[-.\w]+)/(?P<object_id>.*[^/]+)$"
OBJECT_ROUTE = r"^/(?P<bucket_name>[-.%\w]+)/(?P<object_id>.*[^/]+)$"
BUCKET_ROUTE = r"^/(?P<bucket_name>[-.%\w]+)$"
GENERATION_MATCH = "x-goog-if-generation-match"
MAX_KEYS = 1000


def _timestamp(obj):
    return datetime.strptime(obj["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc
    )


def _meta_headers(obj):
    """The headers GCS's XML API puts on GET, HEAD and PUT answers."""
    return {
        "ETag": '"{}"'.format(obj["etag"]),
        "Last-Modified": email.utils.format_datetime(_timestamp(obj), usegmt=True),
        "x-goog-generation": str(obj["generation"]),
        "x-goog-metageneration": str(obj.get("metageneration", "1")),
        "x-goog-stored-content-length": str(obj["size"]),
    }


def _precondition_failed(response):
    response.status = HTTPStatus.PRECONDITION_FAILED
    response["Content-type"] = "application/xml"
    response._content = (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code>"
        "<Message>At least one of the pre-conditions you specified did not hold.</Message>"
        "</Error>"
    )


def xml_put(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    # The raw body whatever its Content-Type (request.data would parse JSON bodies) and even empty.
    content = server._decode_raw_data(
        server._read_raw_data(request._request_handler), request._request_handler
    ) or b""
    wanted = request.get_header(GENERATION_MATCH)
    if wanted is not None:
        try:
            current = str(storage.get_file_obj(bucket, name)["generation"])
        except NotFound:
            current = "0"
        if current != wanted.strip():
            return _precondition_failed(response)
    content_type = request.get_header("Content-Type", "application/octet-stream")
    obj = objects._make_object_resource(
        request.base_url, bucket, name, content_type, str(len(content))
    )
    obj = objects._checksums(content, obj)
    try:
        storage.create_file(bucket, name, content, obj)
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    for k, v in _meta_headers(obj).items():
        response[k] = v


def xml_get(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    objects.download(request, response, storage)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        for k, v in _meta_headers(storage.get_file_obj(bucket, name)).items():
            response[k] = v


def xml_delete(request, response, storage, *args, **kwargs):
    objects.delete(request, response, storage)
    if response.status == HTTPStatus.OK:
        response.status = HTTPStatus.NO_CONTENT


def xml_list(request, response, storage, *args, **kwargs):
    """ListObjectsV2: prefix, delimiter, start-after, continuation-token, max-keys."""
    query = request.query
    if query.get("list-type", [""])[0] != "2":
        response.status = HTTPStatus.NOT_IMPLEMENTED
        return
    arg = lambda k: query[k][0] if k in query else None
    prefix, delimiter = arg("prefix") or "", arg("delimiter")
    after = arg("continuation-token") or arg("start-after") or ""
    max_keys = int(arg("max-keys") or MAX_KEYS)
    try:
        files, prefixes = storage.get_file_list(
            request.params["bucket_name"], prefix or None, delimiter
        )
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    entries = [(f["name"], f) for f in files] + [(p, None) for p in prefixes]
    entries = sorted(e for e in entries if e[0] > after)
    page, truncated = entries[:max_keys], len(entries) > max_keys
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>",
        "<ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'>",
        "<Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount><MaxKeys>{}</MaxKeys>".format(
            escape(request.params["bucket_name"]), escape(prefix), len(page), max_keys
        ),
        "<IsTruncated>{}</IsTruncated>".format("true" if truncated else "false"),
    ]
    if truncated:
        out.append(
            "<NextContinuationToken>{}</NextContinuationToken>".format(escape(page[-1][0]))
        )
    for key, f in page:
        if f is None:
            out.append("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>".format(escape(key)))
        else:
            out.append(
                "<Contents><Key>{}</Key><Generation>{}</Generation><LastModified>{}</LastModified>"
                "<ETag>\"{}\"</ETag><Size>{}</Size></Contents>".format(
                    escape(key),
                    f["generation"],
                    _timestamp(f).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    escape(f["etag"]),
                    f["size"],
                )
            )
    out.append("</ListBucketResult>")
    response["Content-type"] = "application/xml"
    response._content = "".join(out)


def do_HEAD(handler):
    """HEAD /BUCKET/OBJECT: the GET headers without the body (the emulator has no HEAD)."""
    match = re.fullmatch(OBJECT_ROUTE, urlparse(handler.path).path)
    obj = None
    if match:
        try:
            obj = handler.storage.get_file_obj(
                unquote(match["bucket_name"]), unquote(match["object_id"])
            )
        except NotFound:
            pass
    if obj is None:
        handler.send_response(HTTPStatus.NOT_FOUND.value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    handler.send_response(HTTPStatus.OK.value)
    for k, v in _meta_headers(obj).items():
        handler.send_header(k, v)
    handler.send_header("Content-Type", obj.get("contentType") or "application/octet-stream")
    handler.send_header("Content-Length", str(obj["size"]))
    handler.end_headers()


def install():
    routes = []
    for regex, handlers in server.HANDLERS:
        if regex == EMULATOR_OBJECT_ROUTE:
            regex = OBJECT_ROUTE
            handlers = {server.GET: xml_get, server.PUT: xml_put, server.DELETE: xml_delete}
        routes.append((regex, handlers))
    assert any(r == OBJECT_ROUTE for r, _ in routes), "emulator's XML object route not found"
    # Last, so /wipe and the JSON API's /b/... routes keep precedence.
    routes.append((BUCKET_ROUTE, {server.GET: xml_list}))
    server.HANDLERS = tuple(routes)
    server.RequestHandler.do_HEAD = do_HEAD


if __name__ == "__main__":
    install()
    emulator_main.main(sys.argv[1:])
