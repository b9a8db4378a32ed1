"""What EBW writes about a message it could not read names no patient."""

from __future__ import annotations

from ebw.log import shape


def test_a_messages_shape_names_known_segments_only():
    """A line break inside a field starts a "segment" with the field's text: a surname's
    first letters are not a segment ID, and neither is a Z-segment's (site-defined)."""
    raw = (
        b"MSH|^~\\&|EHR|H|EBW|H|20261128||ADT^A04|1|P|2.5.1\r"
        b"PID|1||555^^^H^MR||DOE^JANE\r"
        b"NTE|1||Call\rJOHNSON MARY 555-0142\r"
        b"ZPI|secret\n"
        b"PHIGARBAGE DOE^JANE\r"
    )
    assert shape(raw) == "MSH:48 PID:27 NTE:11 ???:21 ???:10 ???:19"
    for secret in ("JOH", "ZPI", "PHI", "DOE"):
        assert secret not in shape(raw)
    assert shape(b"") == "(empty)"
