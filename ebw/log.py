"""Logging setup.  Only this module adds handlers.

EBW never logs patient data at any level: names, identifiers, birth dates,
visit numbers, raw segments and DICOM identifiers stay out of log records.
Log MSH-10, trigger events, endpoints, peers, AE titles, counts, statuses and
durations instead.  pynetdicom's identifier logging is switched off in
``ebw.dicom.scp``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``pid``, ``logger``, ``msg`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str | None = None) -> None:
    """Log to stderr (never to files under the data directory), as text or, with
    ``EBW_LOG_FORMAT=json``, one JSON object per line."""
    fmt = fmt or os.environ.get("EBW_LOG_FORMAT", "text").strip().lower()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom is chatty at INFO (one line per association and per DIMSE message).
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if os.environ.get("EBW_DICOM_DEBUG") == "1" else logging.WARNING
    )


def shape(data: bytes, max_segments: int = 40) -> str:
    """A PHI-free description of an HL7 message: segment ids and lengths."""
    parts = []
    for seg in data.replace(b"\n", b"\r").split(b"\r")[:max_segments]:
        if seg:
            sid = seg[:3].decode("ascii", "replace") if seg[:3].isalnum() else "???"
            parts.append(f"{sid}:{len(seg)}")
    return " ".join(parts) or "(empty)"
