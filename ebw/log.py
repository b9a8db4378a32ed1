"""Logging setup.  Only this module adds handlers.

EBW never logs patient data at any level: names, identifiers, birth dates,
visit numbers, raw segments and DICOM identifiers stay out of log records.
Log MSH-10, trigger events, endpoints, peers, AE titles, counts, statuses and
durations instead.  pynetdicom's identifier logging is switched off in
``ebw.dicom.scp``.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def setup(level: str = "INFO") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
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
