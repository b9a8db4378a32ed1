"""HL7 v2 segment scanner (Cython), the compiled twin of ``ebw.hl7._scan_ref``.

Import ``scan`` from :mod:`ebw.hl7.scan`, which picks this module or the reference.
The reading rules are in the module docstring of ``ebw.hl7._scan_ref``.
"""

from collections.abc import Container

__all__ = ["DEFAULT_WANTED", "scan"]

DEFAULT_WANTED: frozenset[str]
"""Segments split into fields by default: MSH EVN PID PD1 PV1 PV2 MRG OBR ORC."""

EMPTY_MESSAGE: str
NO_MSH: str
BAD_FIELD_SEPARATOR: str
BAD_SEGMENT_ID: str

def scan(
    data: bytes | bytearray | memoryview, wanted: Container[str] = ...
) -> tuple[bytes, int, list[tuple[str, list[bytes]]]]:
    """Split one HL7 v2 message (an MLLP payload) into segments and fields.

    Returns ``(seps, nseg, segments)``:

    * ``seps``: 5 bytes, field separator (MSH-1) then component, repetition,
      escape and subcomponent characters from MSH-2 (``^~\\&`` fill the gaps);
    * ``nseg``: how many non-blank segments the message has, wanted or not;
    * ``segments``: ``(segment_id, fields)`` in message order for MSH and every
      segment whose id is in ``wanted``; ``fields[n]`` is field n as raw bytes
      (for MSH: ``[b"MSH", MSH-1, MSH-2, MSH-3, ...]``).

    Accepts a UTF-8 BOM, leading whitespace, CR, CR LF and LF segment breaks
    (an LF is a break only before ``[A-Z][A-Z0-9]{2}`` + field separator, or
    before trailing whitespace), blank segments (dropped).

    Raises ``ebw.errors.ParseError`` with ``reason`` one of ``"empty message"``,
    ``"no MSH segment"``, ``"bad MSH field separator"``, ``"bad segment id"`` and
    ``offset`` the byte offset in ``data``; ``TypeError`` for other input types.
    """
