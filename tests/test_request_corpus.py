"""gunicorn's request corpus, sent byte for byte to both our servers (issue 21).

gunicorn keeps a black-box corpus of raw HTTP/1.1 requests (`tests/requests/valid/*.http`, each
with a `.py` giving the parse it must give, and `tests/requests/invalid/*.http`, each with a
`.py` naming the error). It is MIT-licensed, but this repository holds no code from another
one: the test fetches the pinned source distribution from the package index at test time
(`pip download --no-deps --no-binary :all: gunicorn==27.0.1`, checked against its SHA-256) into
`~/.cache/asgi_lab/` (or `$ASGI_LAB_CACHE`), and is skipped, saying why, only when it cannot
be had. The `.py` files are Python that imports gunicorn, so they are read in a subprocess with
the sdist's own `gunicorn` package on its path, never in the test process.

Each file is sent as raw bytes to one ASGI and one WSGI server (one server per kind for the
whole corpus) whose app answers with what it was given as JSON; the client then half-closes
(so a server never waits for bytes that will not come) and reads until the server closes.
A file has one of two outcomes, asserted for every file on both servers:

- SERVED: every request answered 2xx with the expected method, path, query, version,
  headers and body (for WSGI, the headers as PEP 3333 environ keys);
- REFUSED: the server answered 4xx/5xx, or closed with fewer 2xx answers than requests; the
  last answer's status is asserted too: 400, unless `REFUSAL_STATUS` names another.

gunicorn's expectation is the default; `DIFFERENCES` lists each file where ours is another, with
the RFC text that decides it. In short, we refuse where gunicorn serves: an HTTP/1.1 request
without Host (RFC 9112 §3.2's MUST: 400; each such file, valid or invalid, is then sent again
with `Host: corpus` added, so the rest of it is still checked, and that decides its outcome),
a fragment in the target, a transfer coding other than chunked (501 before a final chunked,
400 when chunked is not last), a body cut short by EOF, a blank line before the request line
(h11), CONNECT, and HTTP/1.0 keep-alive (h11 closes). We serve where gunicorn refuses: a
longer request line and larger or more header fields (our limits), a method that is a token
gunicorn does not allow (`-bl`), obs-fold (unfolded, RFC 9112 §5.2), a bare LF line end (RFC
9112 §2.2's MAY), `Content-Length: 5, 5` (RFC 9112 §6.3), and forbidden trailer fields
(dropped). Chunk lines are read as strictly as gunicorn reads them (`invalid/chunked_09`-`14`:
`http11.strict_chunk_lines`). And the ASGI app gets a header whose name holds `_`, which gunicorn and our
WSGI server drop (`ASGI_HEADERS`). Request trailers are not compared: neither spec gives an app
any.

Skipped, because each sets a gunicorn option with no counterpart here (`GUNICORN_ONLY` gives
each reason): the PROXY protocol files (`valid/pp_01`-`05`, `invalid/pp_01`-`03`), gunicorn's
own size limits (`valid/024`, `026`, `invalid/010`-`013`, `limit_header_default_01`),
`permit_obsolete_folding` (`valid/compat_obs_fold`, `compat_obs_fold_huge`),
`permit_unconventional_http_method` and `casefold_http_method` (`valid/031compat`, `031compat2`),
`header_map` (`valid/040_compat`, `invalid/040`, `chunked_07`), `strip_header_spaces`
(`valid/028`, whose `Content-Length : 3` RFC 9112 §5.1 says to refuse: `test_security.py` checks
that we do) and `forwarded_allow_ips` (`invalid/019`).

Run `pytest tests/test_request_corpus.py -rsP` to see every file, its outcome and why, and the
skipped ones with their reason (printed by the skip test).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote_to_bytes

import h11
import pytest

from asgi_lab import serve_in_background
from rawhttp import read_body

GUNICORN_VERSION = "27.0.1"
SDIST_SHA256 = "b1514965361c8b7e8107a80aa2a92636878df1ccfac6dd204a676426e04d9e3e"
SDIST_NAME = f"gunicorn-{GUNICORN_VERSION}.tar.gz"
ROOT = f"gunicorn-{GUNICORN_VERSION}"


# -- Getting the corpus ------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("ASGI_LAB_CACHE") or Path.home() / ".cache" / "asgi_lab")


def fetch_corpus() -> Path:
    """The unpacked sdist (only its `gunicorn/` package and `tests/requests/`), downloaded once.
    Raises RuntimeError, saying why, when it cannot be had."""
    cache = cache_dir()
    unpacked = cache / ROOT
    if (unpacked / "tests" / "requests" / "valid").is_dir() and (unpacked / "gunicorn").is_dir():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST_NAME
    if not sdist.exists():
        with tempfile.TemporaryDirectory(dir=cache) as download:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--no-deps", "--no-binary", ":all:", f"gunicorn=={GUNICORN_VERSION}", "-d", download],
                capture_output=True, text=True, timeout=300)
            got = Path(download) / SDIST_NAME
            if result.returncode != 0 or not got.exists():
                raise RuntimeError(f"pip download gunicorn=={GUNICORN_VERSION} failed: "
                                   f"{(result.stderr or result.stdout).strip()[-500:]}")
            got.replace(sdist)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sdist.unlink()
        raise RuntimeError(f"{SDIST_NAME} has SHA-256 {digest}, expected {SDIST_SHA256}: deleted")
    with tempfile.TemporaryDirectory(dir=cache) as staging, tarfile.open(sdist) as archive:
        wanted = [member for member in archive.getmembers()
                  if member.name.startswith((f"{ROOT}/gunicorn/", f"{ROOT}/tests/requests/"))]
        try:
            archive.extractall(staging, members=wanted, filter="data")
        except TypeError:  # Python before 3.11.4 has no extraction filters
            archive.extractall(staging, members=[m for m in wanted if m.isfile() or m.isdir()])
        os.replace(Path(staging) / ROOT, unpacked)  # whole or not at all
    return unpacked


LOADER = r"""
# Runs in a subprocess with the sdist's own gunicorn first on sys.path: each .py of the corpus
# is executed with `uri` and `cfg` defined, as gunicorn's harness gives them.
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
from gunicorn.config import Config

def uri(target):
    rest, _, fragment = target.partition("#")
    if not rest.startswith("/") and "://" in rest:
        rest = "/" + rest.split("://", 1)[1].partition("/")[2]
    path, _, query = rest.partition("?")
    return {"raw": target, "path": path, "query": query, "fragment": fragment}

defaults = {name: setting.value for name, setting in Config().settings.items()}
out = {}
for kind in ("valid", "invalid"):
    for py in sorted((root / "tests" / "requests" / kind).glob("*.py")):
        space = {"uri": uri, "cfg": Config(), "__name__": "corpus_" + py.stem}
        exec(compile(py.read_text(), str(py), "exec"), space)
        settings = {name: repr(setting.value) for name, setting in space["cfg"].settings.items()
                    if setting.value != defaults[name]}
        expect = space["request"]
        if kind == "valid":
            expect = [dict(r, body=r["body"].decode("latin-1") if isinstance(r["body"], bytes)
                           else r["body"]) for r in
                      (expect if isinstance(expect, list) else [expect])]
        else:
            expect = expect.__name__
        out[f"{kind}/{py.stem}"] = {"settings": settings, "expect": expect}
print(json.dumps(out))
"""


def load_corpus() -> dict:
    root = fetch_corpus()
    result = subprocess.run([sys.executable, "-c", LOADER, str(root)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    if result.returncode != 0:
        raise RuntimeError(f"reading the corpus's .py files failed: {result.stderr[-800:]}")
    corpus = json.loads(result.stdout)
    for name, case in corpus.items():
        case["data"] = decode_http_file((root / "tests" / "requests" / f"{name}.http").read_bytes())
    return corpus


def decode_http_file(text: bytes) -> bytes:
    """The bytes a `.http` file stands for. The corpus writes requests readably: the file's
    line breaks are not data; `\\r\\n`, `\\n`, `\\t`, `\\0` and `\\xHH` spell the bytes."""
    text = text.replace(b"\n", b"")
    out = bytearray()
    escapes = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0"}
    i = 0
    while i < len(text):
        if text[i:i + 1] == b"\\":
            code = text[i + 1:i + 2]
            if code in escapes:
                out += escapes[code]
                i += 2
                continue
            if code == b"x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            raise ValueError(f"unknown escape {text[i:i + 4]!r}")
        out.append(text[i])
        i += 1
    return bytes(out)


# -- The servers and the exchange -------------------------------------------------------------

def wsgi_app(environ, start_response):
    body = environ["wsgi.input"].read()
    said = {"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"], "version": environ["SERVER_PROTOCOL"],
            "headers": {key: value for key, value in environ.items()
                        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")},
            "body": body.decode("latin-1")}
    payload = json.dumps(said).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if body is None:
        return
    said = {"method": scope["method"], "path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"), "version": "HTTP/" + scope["http_version"],
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
            "body": body.decode("latin-1")}
    payload = json.dumps(said).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def send_raw(address, data: bytes, timeout: float = 3.0) -> bytes:
    """Send `data`, half-close, and read until the server closes (bounded)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused early and closed: read what it said
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            received += chunk
        return received


def responses(raw: bytes, methods) -> list[tuple[int, bytes]]:
    """(status, body) of each complete response in `raw`, unframed by an h11 client."""
    out = []
    methods = list(methods)
    while raw:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=methods.pop(0) if methods else "GET", target="/",
                                headers=[("Host", "x")]))
        client.receive_data(raw)
        status, body = None, b""
        try:
            while True:
                event = client.next_event()
                if type(event) is h11.Response:
                    status = event.status_code
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    break
                elif event is h11.NEED_DATA:
                    client.receive_data(b"")
                else:
                    break
        except h11.RemoteProtocolError:
            break
        if status is None:
            break
        out.append((status, body))
        raw = client.trailing_data[0]
    return out


# -- What each file must give ------------------------------------------------------------------

SERVED, REFUSED = "served", "refused"

GUNICORN_ONLY = {
    # name: why it is skipped. Each sets a gunicorn option (`cfg.set(...)` in its .py) that
    # changes the outcome and has no counterpart in our servers.
    "valid/024": "limit_request_line=8200, limit_request_field_size=8210: gunicorn's limits",
    "valid/026": "limit_request_field_size=8210: gunicorn's per-field limit",
    "valid/028": "strip_header_spaces: accepts `Content-Length : 3`, which RFC 9112 §5.1 says a "
                 "server MUST reject with 400 (we do; see test_whitespace_before_the_colon_is_400)",
    "valid/031compat": "permit_unconventional_http_method and casefold_http_method",
    "valid/031compat2": "permit_unconventional_http_method",
    "valid/040_compat": "header_map='dangerous': passes a header name with `_` to WSGI as if it had `-`",
    "valid/compat_obs_fold": "permit_obsolete_folding (our servers unfold always: see obs_fold_01)",
    "valid/compat_obs_fold_huge": "permit_obsolete_folding (our servers unfold always: see obs_fold_01)",
    "invalid/010": "limit_request_field_size=10",
    "invalid/011": "limit_request_fields=2",
    "invalid/012": "limit_request_field_size=98",
    "invalid/013": "limit_request_field_size=14 with permit_obsolete_folding",
    "invalid/019": "forwarded_allow_ips='*': gunicorn's X-Forwarded-Proto checks (we read no proxy headers)",
    "invalid/040": "header_map='refuse' (by default both gunicorn and our WSGI server drop the header)",
    "invalid/chunked_07": "header_map='refuse'",
    "invalid/limit_header_default_01": "limit_request_field_size=0",
    **{f"{kind}/pp_0{n}": "proxy_protocol: the PROXY protocol line of HAProxy, which we do not speak"
       for kind, count in (("valid", 5), ("invalid", 3)) for n in range(1, count + 1)},
}

DIFFERENCES = {
    # name: (our outcome, why), where gunicorn's is the other one. Each is a decision.
    "valid/025_line": (REFUSED, "Transfer-Encoding: gzip,chunked: 501. RFC 9112 §6.1, \"A server "
                       "that receives a request message with a transfer coding it does not "
                       "understand SHOULD respond with 501 (Not Implemented)\": both servers decode "
                       "chunked only (h11), so the app would get a gzip-coded body it was not told "
                       "of (gunicorn passes it on; `http11.transfer_coding_refusal`)"),
    "valid/025": (REFUSED, "two Transfer-Encoding lines, gzip then chunked, one list (RFC 9110 "
                  "§5.3): 501, as valid/025_line"),
    "valid/029": (REFUSED, "Transfer-Encoding identity then chunked: 501, as valid/025_line; "
                  "`identity` is not a transfer coding since RFC 7230 dropped it"),
    "valid/030": (REFUSED, "as valid/029"),
    "valid/rfc9112_smuggle_gzip_chunked_01": (REFUSED, "as valid/025_line"),
    "valid/rfc9112_smuggle_te_identity_chunked_01": (REFUSED, "as valid/029"),
    "valid/022": (REFUSED, "an HTTP/1.0 request with `Connection: Keep-Alive`, then another: RFC "
                  "9112 §9.3, the connection persists only if the server \"wishes to honor the "
                  "HTTP/1.0 keep-alive mechanism\"; h11 does not, so the first is answered and the "
                  "connection closed"),
    "valid/099": (REFUSED, "Content-Length 17914 and 8,599 bytes, then EOF: RFC 9112 §8, a message "
                  "whose body is cut short by the connection closing is incomplete; both servers "
                  "answer 400 rather than hand the app a short body"),
    "valid/rfc9112_leading_crlf_01": (REFUSED, "an empty line before the request line: RFC 9112 §2.2 "
                                      "says a server SHOULD ignore it; h11 refuses it, and a "
                                      "SHOULD is not worth parsing by hand"),
    "valid/rfc9112_target_authority_connect_01": (REFUSED, "CONNECT: 501, a proxy tunnel (RFC 9110 "
                                                  "§9.3.6) is not what an app server offers"),
    "valid/rfc9112_target_authority_ipv6_01": (REFUSED, "CONNECT, as the one above"),
    "valid/005": (REFUSED, "a fragment in the target: origin-form is `absolute-path [ \"?\" query ]` "
                  "(RFC 9112 §3.2.1) and RFC 3986 §3.4 ends a query at `#`: 400 (gunicorn strips it)"),
    "invalid/003c": (SERVED, "method `-bl`: RFC 9110 §9.1, `method = token`, and `-` is a tchar "
                     "(§5.6.2); gunicorn allows fewer methods unless told otherwise. Refused as it "
                     "is (no Host), served once the Host is added"),
    "invalid/017": (SERVED, "an 8 KiB header field: within our `max_header_bytes` (gunicorn's "
                    "limit_request_field_size is 8190)"),
    "invalid/006": (SERVED, "a 4 KiB request line: gunicorn's limit is 4094; RFC 9112 §3 "
                    "RECOMMENDS supporting at least 8000 octets, our `max_target_bytes` is 8 KiB"),
    "invalid/007": (SERVED, "an 8 KiB header field: within our `max_header_bytes`"),
    "invalid/008": (SERVED, "an 8 KiB and a 4 KiB header field: within our `max_header_bytes`"),
    "invalid/009": (SERVED, "103 header fields (gunicorn allows 100): we limit the head's bytes, "
                    "not its number of fields"),
    "invalid/obs_fold_01": (SERVED, "obs-fold: RFC 9112 §5.2, a server MUST either reject it with "
                            "400 or replace each obs-fold with SP; h11 replaces it"),
    "invalid/rfc9112_bare_lf_01": (SERVED, "a bare LF ending a header line: RFC 9112 §2.2, a "
                                   "recipient MAY recognize a single LF as a line terminator (h11 does)"),
    "invalid/rfc9112_smuggle_cl_list_form_01": (SERVED, "`Content-Length: 5, 5`: RFC 9112 §6.3 (5) "
                                                "processes a list of equal valid values as that one "
                                                "value; h11 does, and the app sees one Content-Length"),
    "invalid/rfc9110_trailer_forbidden_cl_01": (SERVED, "a Content-Length trailer: both servers drop "
                                                "every request trailer (ASGI and PEP 3333 have no "
                                                "place for one): none is merged into the header "
                                                "section (RFC 9110 §6.5.1 forbids it unless the "
                                                "field's definition allows it) or used for framing"),
    "invalid/rfc9110_trailer_forbidden_host_01": (SERVED, "a Host trailer: dropped, as above"),
    "invalid/rfc9110_trailer_forbidden_te_01": (SERVED, "a Transfer-Encoding trailer: dropped, as above"),
}


REFUSAL_STATUS = {
    # name: the status of the last answer to a refused file, where it is not 400.
    **{name: 501 for name in ("valid/025", "valid/025_line", "valid/029", "valid/030",
                              "valid/rfc9112_smuggle_gzip_chunked_01",
                              "valid/rfc9112_smuggle_te_identity_chunked_01",  # §6.1's 501
                              "valid/rfc9112_target_authority_connect_01",
                              "valid/rfc9112_target_authority_ipv6_01")},  # CONNECT
    "invalid/version_02": 505,  # HTTP/2.0 on an HTTP/1.1 connection (RFC 9110 §15.6.6)
    "valid/022": None,  # no error: the HTTP/1.0 request is answered, then the connection closed
}
"""400 for every other refused file, among them those where chunked is not the final coding
or comes twice (`invalid/chunked_03`, `04`, `06`, `08`, `rfc9112_te_not_chunked_final_01`:
RFC 9112 §6.3 says 400, not 501, even if the other coding is unknown)."""


def expected_outcome(name: str) -> str:
    if name in DIFFERENCES:
        return DIFFERENCES[name][0]
    return SERVED if name.startswith("valid/") else REFUSED


def lacks_host(case: dict) -> bool:
    """A file with an HTTP/1.1 request that carries no Host: RFC 9112 §3.2, "A server MUST
    respond with a 400 (Bad Request) status code to any HTTP/1.1 request message that lacks a
    Host header field". We answer 400, then send it again with `Host: corpus` after each
    request line, so the rest of the file is still checked: an invalid file must then be
    refused for what it was written to show, not for its missing Host. (A valid file says
    which requests it holds; for an invalid one, its bytes are looked at.)"""
    if isinstance(case["expect"], list):
        return any(request["version"] == [1, 1]
                   and not any(name == "HOST" for name, _ in request["headers"])
                   for request in case["expect"])
    return b" HTTP/1.1\r\n" in case["data"] and not HOST_LINE.search(case["data"])


HOST_LINE = re.compile(rb"(?im)^host:")


def with_host(case: dict) -> tuple[bytes, list | str]:
    data = case["data"].replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: corpus\r\n")
    if not isinstance(case["expect"], list):
        return data, case["expect"]
    expect = [dict(request, headers=[["HOST", "corpus"], *request["headers"]])
              if request["version"] == [1, 1] else request for request in case["expect"]]
    return data, expect


ASGI_HEADERS = {
    # gunicorn drops a header whose name holds `_` (so does our WSGI server: in environ,
    # `Content_Length` and `Content-Length` would both be CONTENT_LENGTH). ASGI has no such
    # clash: the app gets every header with its own name, as the www spec asks.
    "valid/040": [["transfer_encoding", "tricked"], ["content-length", "7"],
                  ["content_length", "-1E23"]],
}


def said_by_asgi(request: dict, name: str = "") -> dict:
    """What the ASGI app must report for one expected request (gunicorn's names upper-cased)."""
    headers = ASGI_HEADERS.get(name) or [[key.lower(), value] for key, value in request["headers"]]
    target = request["uri"]["raw"]
    if not target.startswith("/") and "://" in target:  # absolute-form: the target's authority
        authority = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]  # is the host
        headers = [["host", authority], *(pair for pair in headers if pair[0] != "host")]
    return {"method": request["method"], "path": request["uri"]["path"],
            "query": request["uri"]["query"], "version": "HTTP/%d.%d" % tuple(request["version"]),
            "headers": headers, "body": request["body"]}


def said_by_wsgi(request: dict, name: str = "") -> dict:
    """What the WSGI app must report: PEP 3333 environ keys, the path percent-decoded."""
    said = said_by_asgi(request)
    environ: dict[str, str] = {}
    for name, value in said["headers"]:
        if "_" in name:
            continue  # dropped, as nginx, Apache and gunicorn drop them (see wsgi/environ.py)
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        environ[key] = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value \
            if key in environ else value
    path = unquote_to_bytes(said["path"].encode("latin-1")).decode("latin-1")
    return dict(said, path=path, headers=environ)


@pytest.fixture(scope="module")
def corpus():
    try:
        return load_corpus()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"GUNICORN'S REQUEST CORPUS IS NOT AVAILABLE, NOTHING WAS CHECKED: {error}")


@pytest.fixture(scope="module")
def servers():
    with serve_in_background(asgi_app, kind="asgi", name="test-corpus-asgi", lifespan="off",
                             access_log=False) as asgi, \
         serve_in_background(wsgi_app, kind="wsgi", name="test-corpus-wsgi", access_log=False) as wsgi:
        yield {"asgi": asgi, "wsgi": wsgi}


def outcome(server, data: bytes, expect) -> tuple[str, list]:
    """SERVED with what each app said, or REFUSED with the statuses seen. A valid file is
    served when each of its requests got a 2xx; an invalid one when every answer was a 2xx."""
    methods = [request["method"] for request in expect] if isinstance(expect, list) else []
    answers = responses(send_raw(server.address, data), methods)
    statuses = [status for status, _ in answers]
    assert all(200 <= status < 300 or 400 <= status < 600 for status in statuses), statuses
    wanted = len(expect) if isinstance(expect, list) else max(1, len(answers))
    if len(answers) == wanted and all(200 <= status < 300 for status in statuses):
        return SERVED, [json.loads(body) for _, body in answers]
    return REFUSED, statuses


def check_file(server, kind: str, name: str, case: dict) -> str | None:
    """None when the file gives the outcome we chose, else what went wrong."""
    data, expect = case["data"], case["expect"]
    if lacks_host(case):
        got, seen = outcome(server, data, expect)
        own = REFUSAL_STATUS.get(name, 400)  # h11 may meet the file's own fault before the Host
        if got != REFUSED or own is not None and seen[-1:] not in ([400], [own]):
            return f"{got} {seen} without Host (RFC 9112 §3.2 says 400)"
        data, expect = with_host(case)
    want = expected_outcome(name)
    got, seen = outcome(server, data, expect)
    if got != want:
        return f"{got} {seen}, expected {want}"
    if got == REFUSED:
        status = REFUSAL_STATUS.get(name, 400)
        if status is None and not all(200 <= seen_status < 300 for seen_status in seen):
            return f"refused with {seen}, expected a close after the 2xx answers"
        if status is not None and seen[-1:] != [status]:
            return f"refused with {seen}, expected {status} last"
    if got == SERVED and isinstance(expect, list):
        said = said_by_wsgi if kind == "wsgi" else said_by_asgi
        for request, app_saw in zip(expect, seen):
            if app_saw != said(request, name):
                return f"the app saw {app_saw}, expected {said(request, name)}"
    return None


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_every_file_of_the_corpus_gives_the_outcome_we_chose(kind, corpus, servers):
    """All of gunicorn's request files (143 in 27.0.1) on one server: each must be served with
    gunicorn's expected parse or refused, as `expected_outcome` says; the failures are listed."""
    assert set(DIFFERENCES) | set(GUNICORN_ONLY) | set(REFUSAL_STATUS) <= set(corpus), \
        "the tables name a file not in the corpus"
    assert all(expected_outcome(name) == REFUSED for name in REFUSAL_STATUS)
    assert not set(DIFFERENCES) & set(GUNICORN_ONLY)
    failures = {}
    checked = 0
    for name, case in corpus.items():
        if name in GUNICORN_ONLY:
            continue
        problem = check_file(servers[kind], kind, name, case)
        checked += 1
        if problem:
            failures[name] = problem
        note = DIFFERENCES[name][1] if name in DIFFERENCES else "as gunicorn"
        status = f" {REFUSAL_STATUS.get(name, 400)}" if expected_outcome(name) == REFUSED else ""
        print(f"{kind} {name:46} {expected_outcome(name) + status:12} {note}")
    assert not failures, "\n".join(f"{name}: {problem}" for name, problem in failures.items())
    assert checked == len(corpus) - len(GUNICORN_ONLY) > 100


def test_the_skipped_files_are_the_ones_that_set_a_gunicorn_option(corpus):
    """A file is skipped if, and only if, its .py changes a gunicorn setting from its default."""
    assert len(corpus) == 143  # the pinned 27.0.1: 62 valid files, 81 invalid
    assert set(GUNICORN_ONLY) == {name for name, case in corpus.items() if case["settings"]}
    for name, reason in GUNICORN_ONLY.items():
        print(f"skipped {name:40} {reason}")
