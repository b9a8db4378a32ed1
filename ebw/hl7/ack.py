"""Original-mode HL7 acknowledgements (MSA-1 AA / AE / AR), built as bytes.

The ACK copies the received MSH fields byte for byte (no decode/re-encode):
MSH-3/4 <- received MSH-5/6, MSH-5/6 <- received MSH-3/4, MSH-9
``ACK^<event>^ACK``, MSH-11/12 copied, MSA-2 = received MSH-10.  AE and AR
carry an ERR segment (ERR-2 location, ERR-3 table 0357 code, ERR-4 severity,
ERR-8 user message) -- never patient data.
"""

from __future__ import annotations

import itertools
import os
import time

from .adt import Header

DEFAULT_SEPS = b"|^~\\&"

_TEXTS = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing ID",
    203: "Unsupported version ID",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_seq = itertools.count(1)


def control_id() -> bytes:
    """A new MSH-10 for an outbound message: unique across processes and restarts
    (milliseconds since the epoch, pid, per-process sequence), at most 20 characters."""
    return f"{int(time.time() * 1000):x}{os.getpid() % 0x10000:04x}{next(_seq) % 0x10000:04x}".encode()


def _now() -> bytes:
    t = time.time()
    lt = time.localtime(t)
    off = lt.tm_gmtoff // 60
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (time.strftime("%Y%m%d%H%M%S", lt) + f"{sign}{off // 60:02d}{off % 60:02d}").encode()


def build(
    header: Header | None,
    ack: str,
    code: int = 0,
    text: str = "",
    location: str = "",
    event: str = "",
) -> bytes:
    """The ACK message (without MLLP framing) for ``header`` (None: MSH unreadable)."""
    seps = header.seps if header is not None else DEFAULT_SEPS
    f = seps[0:1]
    c = seps[1:2]
    if header is None:
        header = Header(seps=DEFAULT_SEPS)
    ev = (event or header.event).encode("latin_1", "replace")
    msh = f.join(
        [
            b"MSH",
            seps[1:5],
            header.msh5 or b"EBW",
            header.msh6,
            header.msh3,
            header.msh4,
            _now(),
            b"",
            b"ACK" + c + ev + c + b"ACK" if ev else b"ACK",
            control_id(),
            header.processing_id or b"P",
            header.version or b"2.5.1",
        ]
    )
    if header.charset:
        msh += f * 6 + header.charset  # MSH-13 to MSH-17 empty
    segments = [msh, f.join([b"MSA", ack.encode(), header.control_id])]
    if ack != "AA":
        err_text = (text or _TEXTS.get(code, "Error")).encode("ascii", "replace")
        for bad in (f, c, seps[2:3], seps[3:4], seps[4:5]):
            err_text = err_text.replace(bad, b" ")
        loc = location.replace("^", chr(c[0])).encode("ascii", "replace") if location else b""
        segments.append(
            f.join(
                [
                    b"ERR",
                    b"",
                    loc,
                    str(code).encode() + c + _TEXTS.get(code, "Error").encode() + c + b"HL70357",
                    b"E",
                    b"",
                    b"",
                    b"",
                    err_text,
                ]
            )
        )
    return b"\r".join(segments) + b"\r"
