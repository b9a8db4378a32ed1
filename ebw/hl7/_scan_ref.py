"""HL7 v2 segment scanner, pure-Python reference.  This module is the specification.

``ebw._fast.hl7scan`` is its Cython twin: same names, same signature, same results
(types included) and the same :class:`~ebw.errors.ParseError` reasons and offsets.
Code should import ``scan`` from :mod:`ebw.hl7.scan`, which picks one of the two.

``scan(data, wanted=DEFAULT_WANTED) -> (seps, nseg, segments)``

Input
    ``data`` is one HL7 message, the MLLP frame payload without ``0x0B`` /
    ``0x1C 0x0D``: ``bytes``, ``bytearray`` or ``memoryview`` (anything else raises
    ``TypeError``; a memoryview is read as ``bytes(data)``).  ``wanted`` is a
    container (normally a frozenset) of 3-character segment ids as ``str``.

Output
    ``seps``
        5 bytes: field separator, component, repetition, escape, subcomponent.  The
        field separator is MSH-1, the byte right after ``MSH``; the other four are
        the first four bytes of MSH-2 (the encoding characters: the bytes after the
        field separator up to the next field separator or the end of the MSH
        segment).  Positions MSH-2 does not fill take the standard ``^ ~ \\ &``; a
        5th MSH-2 byte (the v2.7 truncation character) and any further bytes are
        ignored.  MSH-2 is not validated otherwise.
    ``nseg``
        the number of segments in the message (after the dropping of rule 3),
        wanted or not, MSH included.
    ``segments``
        ``[(segment_id, fields), ...]`` in message order for every segment whose id
        is ``"MSH"`` or is in ``wanted`` (tested as ``seg_id == "MSH" or seg_id in
        wanted``).  ``fields`` is a list of ``bytes`` in which the index is the HL7
        field number:

        * other segments: ``segment.split(field_sep)``, so ``fields[0]`` is the
          id and ``fields[n]`` is SEG-n;  ``b"PV1"`` alone gives ``[b"PV1"]``;
        * MSH: ``[b"MSH", field_sep, MSH-2, MSH-3, ...]``, i.e. ``fields[1]`` is the
          one separator byte and the rest is ``segment[4:].split(field_sep)``.
          A later segment with id MSH (e.g. a batch that should not be here) is
          split the same way; exactly ``b"MSH"`` gives ``[b"MSH"]``.

        Field contents are the raw bytes: no unescaping, no component split, no
        decoding, LF bytes that are data (rule 2) stay in the field.

Reading rules (tolerant)
    1. *Start.*  A UTF-8 BOM (``EF BB BF``) at the very start is skipped, then any
       run of CR, LF, space and tab.  If nothing is left: ``"empty message"``,
       offset 0.  The next bytes must be ``MSH``, else ``"no MSH segment"`` at the
       offset where the first segment starts (0 unless a BOM or whitespace came
       first).  The byte after ``MSH`` is the field separator; if it is missing or
       is an ASCII letter or digit, CR, LF or space: ``"bad MSH field separator"``
       at the offset where it should be (3 without BOM or leading whitespace).
    2. *Segment breaks*, scanning left to right from the ``M`` of ``MSH``:

       * every CR (``0x0D``) ends a segment; an LF right after a CR belongs to the
         break (``CR LF`` is one break);
       * an LF not consumed that way (a "lone LF", which includes the LF of
         ``LF CR``) ends a segment only when either (a) the next four bytes are
         ``[A-Z][A-Z0-9][A-Z0-9]`` followed by the field separator, or (b) every
         byte after it up to the end of ``data`` is CR, LF, space or tab (so a
         message whose last segment ends in LF does not keep that LF as data).
         Otherwise the LF is data and stays in the segment.  In ``LF CR`` the LF
         is therefore data unless (a) or (b) applies, and the CR is a break.
    3. *Dropped segments.*  Segments that are empty or consist only of space, tab
       and LF bytes are dropped (not counted in ``nseg``); this covers blank
       lines and trailing whitespace after the last segment.  Whitespace inside
       or at the end of a non-blank segment is kept.
    4. *Segment ids.*  The id is the first 3 bytes of a segment, which must be
       ``[A-Z0-9]`` (decoded as ASCII), and a 4th byte, if present, must be the
       field separator.  Otherwise (including segments shorter than 3 bytes):
       ``"bad segment id"`` at the offset where the segment starts.  Segments are
       checked in order, so the first bad one is reported.
    5. Offsets are byte offsets into ``data`` as given (BOM included).  Errors
       carry ``reason`` and ``offset`` only, never message bytes.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterator

from ebw.errors import ParseError

__all__ = ["DEFAULT_WANTED", "scan"]

DEFAULT_WANTED: frozenset[str] = frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "OBR", "ORC"})

# Reasons, shared word for word with the Cython twin.
EMPTY_MESSAGE = "empty message"
NO_MSH = "no MSH segment"
BAD_FIELD_SEPARATOR = "bad MSH field separator"
BAD_SEGMENT_ID = "bad segment id"

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_OUTER_WHITESPACE = b"\r\n \t"  # skipped before MSH; "trailing whitespace" for rule 2b
_BLANK = b" \t\n"  # a segment made only of these is dropped (it cannot hold a CR)
_DEFAULT_ENCODING = b"^~\\&"
_UPPER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ID_CHARS = _UPPER | frozenset(b"0123456789")
_SEGMENT_ID = re.compile(rb"[A-Z0-9]{3}")
NOT_A_DELIMITER = frozenset(  # not a field separator, nor any delimiter (ebw.hl7.adt)
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789\r\n "
)
_BREAK = re.compile(rb"\r\n?|\n")  # candidate segment breaks; a lone LF is checked


def scan(
    data: bytes | bytearray | memoryview, wanted: Container[str] = DEFAULT_WANTED
) -> tuple[bytes, int, list[tuple[str, list[bytes]]]]:
    """Split one HL7 v2 message into segments and fields (rules: module docstring)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"scan() needs bytes, bytearray or memoryview, not {type(data).__name__}")
    buf = bytes(data)
    start = _message_start(buf)
    fs = buf[start + 3]
    nseg = 0
    segments: list[tuple[str, list[bytes]]] = []
    for seg_start, seg_end in _segment_spans(buf, start, fs):
        segment = buf[seg_start:seg_end]
        if not segment.strip(_BLANK):
            continue
        seg_id = _segment_id(segment, fs, seg_start)
        nseg += 1
        if seg_id == "MSH" or seg_id in wanted:
            segments.append((seg_id, _fields(segment, fs, seg_id)))
    # The first span starts at "MSH" + separator, so segments[0] is that MSH.
    encoding = segments[0][1][2][:4]
    seps = bytes([fs]) + encoding + _DEFAULT_ENCODING[len(encoding) :]
    return seps, nseg, segments


def _message_start(buf: bytes) -> int:
    """Offset of the ``M`` of the first MSH (rules 1 and 5)."""
    pos = len(_BOM) if buf.startswith(_BOM) else 0
    while pos < len(buf) and buf[pos] in _OUTER_WHITESPACE:
        pos += 1
    if pos == len(buf):
        raise ParseError(EMPTY_MESSAGE, offset=0)
    if buf[pos : pos + 3] != b"MSH":
        raise ParseError(NO_MSH, offset=pos)
    if pos + 3 >= len(buf) or buf[pos + 3] in NOT_A_DELIMITER:
        raise ParseError(BAD_FIELD_SEPARATOR, offset=pos + 3)
    return pos


def _segment_spans(buf: bytes, start: int, fs: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every segment, blank ones included (rule 2)."""
    tail = len(buf.rstrip(_OUTER_WHITESPACE))  # > start: buf[start] is the M of MSH
    seg_start = start
    for brk in _BREAK.finditer(buf, start):
        at = brk.start()
        if buf[at] == _LF and not (at >= tail or _starts_segment(buf, at + 1, fs)):
            continue  # a lone LF inside a segment is data
        yield seg_start, at
        seg_start = brk.end()
    yield seg_start, len(buf)


def _starts_segment(buf: bytes, pos: int, fs: int) -> bool:
    """Rule 2a: ``[A-Z][A-Z0-9]{2}`` and the field separator at ``pos``."""
    return (
        pos + 3 < len(buf)
        and buf[pos] in _UPPER
        and buf[pos + 1] in _ID_CHARS
        and buf[pos + 2] in _ID_CHARS
        and buf[pos + 3] == fs
    )


def _segment_id(segment: bytes, fs: int, offset: int) -> str:
    """Rule 4; ``offset`` is where ``segment`` starts in the data."""
    if not _SEGMENT_ID.match(segment) or (len(segment) > 3 and segment[3] != fs):
        raise ParseError(BAD_SEGMENT_ID, offset=offset)
    return segment[:3].decode("ascii")


def _fields(segment: bytes, fs: int, seg_id: str) -> list[bytes]:
    """Field list whose indexes are the HL7 field numbers."""
    if len(segment) == 3:
        return [segment]
    rest = segment[4:].split(bytes([fs]))
    if seg_id == "MSH":
        return [segment[:3], segment[3:4], *rest]
    return [segment[:3], *rest]
