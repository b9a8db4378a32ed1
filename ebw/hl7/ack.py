"""Original-mode HL7 acknowledgements (MSA-1 AA / AE / AR), built as bytes.

The ACK copies received MSH fields without decoding them: MSH-3/4 <- received
MSH-5/6, MSH-5/6 <- received MSH-3/4, MSH-9 ``ACK^<event>^ACK``, MSH-11/12 (and
MSH-18) copied, MSA-2 = received MSH-10.  AE and AR carry an ERR segment (ERR-2
location, ERR-3 table 0357 code, ERR-4 severity, ERR-8 user message) -- never
patient data.

Whatever arrives, the ACK is well-formed HL7 and survives MLLP framing: it is
written with the message's delimiters when they are usable, else with the
standard ``|^~\\&`` (``ack_separators``); every copied field goes through
``restate`` (delimiters kept in their roles, a control byte becomes ``\\Xhh\\``),
the error text through ``escape_text``.  docs/hl7-interface.md section 5 states
the rules for senders.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import time
from collections.abc import Callable

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

# What an ACK's delimiter may be: printable ASCII that is not a letter or digit
# (segment IDs, codes, control IDs), not + or - (the UTC offset of MSH-7), not .
# (MSH-12 2.5.1), not a space.
DELIMITER_BYTES = frozenset(b"!\"#$%&'()*,/:;<=>?@[\\]^_`{|}~")

# Never copied as they are: the C0 controls (CR, LF, MLLP's 0x0B and 0x1C among them)
# and DEL.  Each is written as the escape sequence <esc>Xhh<esc>.
CONTROL_BYTES = frozenset(range(0x20)) | {0x7F}

_seq = itertools.count(1)


def control_id() -> bytes:
    """A new MSH-10 for an outbound message: unique across processes and restarts
    (milliseconds since the epoch, pid, per-process sequence), at most 20 characters."""
    return f"{int(time.time() * 1000):x}{os.getpid() % 0x10000:04x}{next(_seq) % 0x10000:04x}".encode()


def ack_separators(seps: bytes) -> bytes:
    """The delimiters of the ACK to a message written with ``seps`` (field separator
    and MSH-2 as the scanner gives them): the message's own when they are usable --
    five different ``DELIMITER_BYTES`` -- as a sender expects its own delimiters back;
    else the standard ``|^~\\&``."""
    if len(seps) == 5 and len(set(seps)) == 5 and DELIMITER_BYTES.issuperset(seps):
        return bytes(seps)
    return DEFAULT_SEPS


@functools.lru_cache(maxsize=64)
def _rewriter(seps_in: bytes | None, seps_out: bytes) -> Callable[[bytes], bytes]:
    """``restate`` (``seps_in`` None: ``escape_text``) for one pair of delimiter sets,
    as one compiled substitution: a byte-to-bytes table, applied by ``re.sub`` to
    the bytes that change (none, for an ordinary field)."""
    esc = seps_out[3:4]
    table: dict[int, bytes] = {b: esc + b"X%02X" % b + esc for b in CONTROL_BYTES}
    for code, b in zip(b"FSRET", seps_out, strict=True):
        table[b] = esc + bytes([code]) + esc
    if seps_in is not None:
        # A delimiter of the received field keeps its role.  Where the sender used one
        # byte for two roles, the role it has when the field is split wins:
        # repetition, then component, then subcomponent, then escape.
        for k in (3, 4, 1, 2):  # escape, subcomponent, component, repetition: the last write wins
            table[seps_in[k]] = seps_out[k : k + 1]
    changed = {b: out for b, out in table.items() if out != bytes([b])}
    if not changed:
        return bytes
    pattern = re.compile(b"[" + b"".join(b"\\x%02x" % b for b in sorted(changed)) + b"]")

    def rewrite(raw: bytes) -> bytes:
        return pattern.sub(lambda m: changed[m[0][0]], raw)

    return rewrite


def restate(raw: bytes, seps_in: bytes, seps_out: bytes) -> bytes:
    """A field of a message written with the delimiters ``seps_in``, for a message
    written with ``seps_out``.

    Byte by byte: a repetition, component, subcomponent or escape character of
    ``seps_in`` becomes that of ``seps_out`` (so escape sequences keep their body);
    any other byte that is one of ``seps_out`` is escaped (``\\F\\ \\S\\ \\R\\ \\E\\
    \\T\\``); a control byte (``CONTROL_BYTES``) becomes ``\\Xhh\\``, two upper-case
    hex digits; every other byte is kept.  With the same delimiters in and out, only
    the control bytes change: a field cannot hold its message's field separator.
    """
    return _rewriter(bytes(seps_in), bytes(seps_out))(bytes(raw))


def escape_text(text: str, seps: bytes) -> bytes:
    """``text`` as the value of a field of a message written with ``seps``: ASCII
    (other characters ``?``), every delimiter escaped, control characters ``\\Xhh\\``."""
    return _rewriter(None, bytes(seps))(text.encode("ascii", "replace"))


_stamp: tuple[int, bytes] = (-1, b"")  # (second, MSH-7 for it): formatting took ~4 us an ACK


def _now() -> bytes:
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        lt = time.localtime(second)
        off = lt.tm_gmtoff // 60
        sign = "+" if off >= 0 else "-"
        off = abs(off)
        _stamp = (second, (time.strftime("%Y%m%d%H%M%S", lt) + f"{sign}{off // 60:02d}{off % 60:02d}").encode())
    return _stamp[1]


def build(
    header: Header | None,
    ack: str,
    code: int = 0,
    text: str = "",
    location: str = "",
    event: str = "",
) -> bytes:
    """The ACK message (without MLLP framing) for ``header`` (None: MSH unreadable)."""
    if header is None:
        header = Header(seps=DEFAULT_SEPS)
    key = (
        header.seps,
        header.msh3,
        header.msh4,
        header.msh5,
        header.msh6,
        header.processing_id,
        header.version,
        header.charset,
        event or header.event,
    )
    if sum(len(k) for k in key) <= _CACHED_MAX:
        seps, head, mid, tail, copy = _msh_parts(*key)
    else:  # a sender's outsized fields are not kept
        seps, head, mid, tail, copy = _msh_parts.__wrapped__(*key)
    f = seps[0:1]
    c = seps[1:2]
    segments = [
        head + _now() + mid + control_id() + tail,
        f.join([b"MSA", ack.encode(), copy(header.control_id)]),
    ]
    if ack != "AA":
        loc = location.replace("^", chr(c[0])).encode("latin_1", "replace") if location else b""
        segments.append(
            f.join(
                [
                    b"ERR",
                    b"",
                    loc,
                    str(code).encode() + c + escape_text(_TEXTS.get(code, "Error"), seps) + c + b"HL70357",
                    b"E",
                    b"",
                    b"",
                    b"",
                    escape_text(text or _TEXTS.get(code, "Error"), seps),
                ]
            )
        )
    return b"\r".join(segments) + b"\r"


_CACHED_MAX = 512  # bytes of sender fields above which an ACK's MSH parts are not cached


@functools.lru_cache(maxsize=256)  # one entry per sender, event and delimiters, in practice
def _msh_parts(
    received: bytes,
    msh3: bytes,
    msh4: bytes,
    msh5: bytes,
    msh6: bytes,
    processing_id: bytes,
    version: bytes,
    charset: bytes,
    event: str,
) -> tuple[bytes, bytes, bytes, bytes, Callable[[bytes], bytes]]:
    """What an ACK's MSH is made of around MSH-7 and MSH-10 (which change with every
    ACK): ``(seps, up to MSH-7, MSH-8 and MSH-9, MSH-11 on)`` and the ``restate`` of
    the copied fields."""
    seps = ack_separators(received)
    f = seps[0:1]
    c = seps[1:2]
    copy = _rewriter(bytes(received), bytes(seps))  # restate() of each copied field
    ev = copy(event.encode("latin_1", "replace"))
    head = f.join([b"MSH", seps[1:5], copy(msh5) or b"EBW", copy(msh6), copy(msh3), copy(msh4), b""])
    mid = f + f + (b"ACK" + c + ev + c + b"ACK" if ev else b"ACK") + f
    tail = f + (copy(processing_id) or b"P") + f + (copy(version) or b"2.5.1")
    if charset:
        tail += f * 6 + copy(charset)  # MSH-13 to MSH-17 empty
    return seps, head, mid, tail, copy
