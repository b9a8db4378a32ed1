"""HTTP on EBW_HTTP_HOST:EBW_HTTP_PORT: ``GET /healthz``, ``GET /metrics``, ``/api/`` (``ebw.api``),
``/ui/`` (the administration web page: ``ebw/ui/``, static files, no build step).

Runs in the supervisor (threads); ``/api/`` requests open the LMDB environment
for the request only (``ebw.api``).
``/metrics`` aggregates every process's metrics with prometheus_client's
``MultiProcessCollector`` into a fresh registry per scrape, plus the standard
``process_*`` metrics of the supervisor itself (the workers' own figures are
the ``ebw_worker_*`` gauges, see ``ebw.metrics``).
``/ui/`` answers the same page (``index.html``) for every path but its two assets
(``app.js``, ``style.css``): the page routes itself and reads everything through
``/api/``.  API answers carry ``Cache-Control: no-store`` (the worklist view has
patient data); the page is served with a strict Content-Security-Policy (no inline
script, nothing from another origin).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)
_QUERY = re.compile(r"\?\S*")  # a request target's query string

MAX_BODY = 1 << 20  # API request bodies larger than this are refused (413)

UI_ASSETS = {  # /ui/<name> -> content type; every other /ui/ path is index.html
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
UI_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _ui_file(name: str) -> bytes:
    return resources.files("ebw").joinpath("ui").joinpath(name).read_bytes()


def _metrics_payload() -> tuple[bytes, str]:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        ProcessCollector,
        generate_latest,
        multiprocess,
    )

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    ProcessCollector(registry=registry)  # this process (the supervisor) only
    return generate_latest(registry), CONTENT_TYPE_LATEST


class HttpServer:
    """Small threaded HTTP server; ``health()`` returns (ok, details)."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        api: Any = None,
        ssl_context: Any = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "EBW"
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # access log at DEBUG only
                log.debug("http %s " + fmt, self.client_address[0], *args)

            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                # without the query string: a worklist search (?q=) is a patient's name
                line = self.requestline
                if "?" in line:
                    line = _QUERY.sub("?...", line, count=1)
                self.log_message('"%s" %s %s', line, str(getattr(code, "value", code)), str(size))

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, details = outer.health()
                    body = json.dumps({"status": "ok" if ok else "starting", **details}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                elif path == "/metrics":
                    body, ctype = _metrics_payload()
                    self._send(200, body, ctype)
                elif path.startswith("/api/") and outer.api is not None:
                    self._api("GET")
                elif path in ("/ui", "/ui/"):
                    self._send(302, b"", "text/plain", {"Location": "/ui/endpoints"})
                elif path.startswith("/ui/"):
                    self._ui(path[4:])
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def do_POST(self) -> None:  # noqa: N802
                self._write_method("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._write_method("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._write_method("DELETE")

            def _write_method(self, method: str) -> None:
                raw_length = (self.headers.get("Content-Length") or "0").strip()
                if not raw_length.isdigit():
                    self._send(400, b'{"error": "Content-Length must be a number of bytes"}', "application/json")
                    self.close_connection = True
                    return
                length = int(raw_length)
                if length > MAX_BODY:
                    self._send(413, b'{"error": "request body too large"}', "application/json")
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                if self.path.startswith("/api/") and outer.api is not None:
                    self._api(method, body)
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def _api(self, method: str, body: bytes = b"") -> None:
                path, _, query = self.path.partition("?")
                try:
                    code, payload = outer.api.handle(method, path, query, self.headers, body, self.client_address[0])
                except Exception as exc:  # noqa: BLE001 - answered 500, logged without data
                    log.exception("API %s %s failed", method, path.split("/")[2:3])
                    code, payload = 500, {"error": type(exc).__name__}
                self._send(code, json.dumps(payload).encode(), "application/json", API_HEADERS)

            def _ui(self, name: str) -> None:
                ctype = UI_ASSETS.get(name)
                try:
                    body = _ui_file(name if ctype else "index.html")
                except OSError:
                    log.exception("UI file missing from the package")
                    self._send(500, b"the web page is not installed", "text/plain")
                    return
                self._send(200, body, ctype or "text/html; charset=utf-8", UI_HEADERS)

            def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        self.health = health
        self.api = api
        # ebw.api opens the LMDB environment per request, and py-lmdb refuses to open one
        # environment twice in a process: concurrent requests (a page loads several
        # resources at once) would get 503 "store unavailable".  API calls take
        # milliseconds, so they are answered one at a time.
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:  # HTTPS; the handshake happens in the request's thread
            self.httpd.socket = ssl_context.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
