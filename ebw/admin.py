"""HTTP on EBW_HTTP_HOST:EBW_HTTP_PORT: ``GET /healthz``, ``GET /metrics``, ``/api/`` (``ebw.api``).

Runs in the supervisor (threads); ``/api/`` requests open the LMDB environment
for the request only (``ebw.api``).
``/metrics`` aggregates every process's metrics with prometheus_client's
``MultiProcessCollector`` into a fresh registry per scrape, plus the standard
``process_*`` metrics of the supervisor itself (the workers' own figures are
the ``ebw_worker_*`` gauges, see ``ebw.metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # API request bodies larger than this are refused (413)


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
        self, host: str, port: int, health: Callable[[], tuple[bool, dict[str, Any]]], api: Any = None
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "EBW"
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # access log at DEBUG only
                log.debug("http %s " + fmt, self.client_address[0], *args)

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
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def do_POST(self) -> None:  # noqa: N802
                self._write_method("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._write_method("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._write_method("DELETE")

            def _write_method(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
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
                    code, payload = outer.api.handle(method, path, query, self.headers, body)
                except Exception as exc:  # noqa: BLE001 - answered 500, logged without data
                    log.exception("API %s %s failed", method, path.split("/")[2:3])
                    code, payload = 500, {"error": type(exc).__name__}
                self._send(code, json.dumps(payload).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.health = health
        self.api = api
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
