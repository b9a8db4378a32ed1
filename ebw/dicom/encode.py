"""Direct encoding of C-FIND response identifiers, bypassing pydicom Datasets.

Profiling an "all of today" answer showed pydicom dominating: building a
Dataset per item and writing it cost ~45% of the SCP's time.  A worklist
response holds only short strings and one sequence, so EBW writes the bytes
itself (little endian, implicit or explicit VR; a sequence of one item with
defined lengths) and hands pynetdicom a ``PreEncoded`` identifier that its
encoder passes through (``install()`` patches ``pynetdicom.service_class.encode``
once).  ``tests/unit/test_encode.py`` checks the bytes against pydicom's own
encoding of the same values.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

import pynetdicom.service_class as _sc
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

_TEXT_PAD = b" "
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


class PreEncoded(Dataset):
    """An identifier already encoded for one little-endian transfer syntax."""

    def __init__(self, data: bytes, explicit: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_ebw_data", data)
        object.__setattr__(self, "_ebw_explicit", explicit)


@lru_cache(maxsize=1024)
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    vr = dictionary_VR(tag)
    return tag, vr.split(" or ")[0]


TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC"})  # encoded in the Specific Character Set


def is_text(keyword: str) -> bool:
    return _tag_vr(keyword)[1] in TEXT_VRS


def _value_bytes(vr: str, value: str, codec: str) -> bytes:
    raw = value.encode(codec if vr in TEXT_VRS else "ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else _TEXT_PAD
    return raw


def _element(tag: int, vr: str, payload: bytes, explicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack("<I", len(payload)) + payload
    if vr in _LONG_VRS:
        return head + vr.encode() + b"\x00\x00" + struct.pack("<I", len(payload)) + payload
    return head + vr.encode() + struct.pack("<H", len(payload)) + payload


def encode_identifier(
    top: list[tuple[str, str]],
    sps: list[tuple[str, str]] | None,
    empty_sequences: list[str],
    codec: str,
    explicit: bool,
    sps_empty: tuple[str, ...] | list[str] = (),
    sequences: tuple[tuple[str, list[tuple[str, str]] | None], ...] | list[Any] = (),
) -> bytes:
    """Encode (keyword, value) pairs, the SPS item (with ``sps_empty`` sequences in it),
    ``sequences`` -- (keyword, the (keyword, value) pairs of its one item, or None for
    no item) -- and empty sequences, in tag order."""
    elems: list[tuple[int, bytes]] = []
    for seq_kw, pairs in sequences:
        body = b""
        if pairs is not None:
            sub = []
            for kw, value in pairs:
                tag, vr = _tag_vr(kw)
                sub.append((tag, _element(tag, vr, _value_bytes(vr, value, codec), explicit)))
            sub.sort()
            inner = b"".join(e for _, e in sub)
            body = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
        tag, _vr = _tag_vr(seq_kw)
        elems.append((tag, _element(tag, "SQ", body, explicit)))
    for kw, value in top:
        tag, vr = _tag_vr(kw)
        elems.append((tag, _element(tag, vr, _value_bytes(vr, value, codec), explicit)))
    if sps is not None:
        item_elems = []
        for kw, value in sps:
            tag, vr = _tag_vr(kw)
            item_elems.append((tag, _element(tag, vr, _value_bytes(vr, value, codec), explicit)))
        for kw in sps_empty:
            tag, _vr = _tag_vr(kw)
            item_elems.append((tag, _element(tag, "SQ", b"", explicit)))
        item_elems.sort()
        body = b"".join(e for _, e in item_elems)
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
        tag, _vr = _tag_vr("ScheduledProcedureStepSequence")
        elems.append((tag, _element(tag, "SQ", item, explicit)))
    for kw in empty_sequences:
        tag, _vr = _tag_vr(kw)
        elems.append((tag, _element(tag, "SQ", b"", explicit)))
    elems.sort()
    return b"".join(e for _, e in elems)


_installed = False


def install() -> None:
    """Let pynetdicom's C-FIND SCP send ``PreEncoded`` identifiers as they are."""
    global _installed
    if _installed:
        return
    original = _sc.encode

    def encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
        if isinstance(ds, PreEncoded):
            if is_little_endian and not deflated and ds._ebw_explicit != is_implicit_vr:
                return ds._ebw_data
            raise ValueError("identifier pre-encoded for another transfer syntax")
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    _sc.encode = encode
    _installed = True


# -- Pending C-FIND responses written straight to the association's socket ---------

MWL_FIND_UID = b"1.2.840.10008.5.1.4.31"  # 22 bytes: even, no padding


def _us(tag_elem: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, tag_elem, 2, value)


def find_rsp_command(message_id: int, status: int) -> bytes:
    """A C-FIND-RSP command set (implicit VR little endian, as PS3.7 requires) with a data set."""
    body = (
        struct.pack("<HHI", 0x0000, 0x0002, len(MWL_FIND_UID))
        + MWL_FIND_UID
        + _us(0x0100, 0x8020)  # Command Field: C-FIND-RSP
        + _us(0x0120, message_id)  # Message ID Being Responded To
        + _us(0x0800, 0x0001)  # Command Data Set Type: present
        + _us(0x0900, status)
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def p_data_pdus(context_id: int, command: bytes, dataset: bytes, max_pdu: int) -> bytes:
    """P-DATA-TF PDUs (PS3.8 9.3.5) carrying one DIMSE message: the command in one PDV,
    the data set in as many PDVs as the peer's maximum PDU length requires."""
    out = [_pdv_pdu(context_id, 0x03, command)]  # command, last fragment
    room = max_pdu - 6 if max_pdu else len(dataset) or 1
    for i in range(0, len(dataset), room):
        last = i + room >= len(dataset)
        out.append(_pdv_pdu(context_id, 0x02 if last else 0x00, dataset[i : i + room]))
    return b"".join(out)


def _pdv_pdu(context_id: int, control: int, data: bytes) -> bytes:
    item = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBI", 0x04, 0x00, len(item)) + item


# -- one query, many items: a compiled encoder --------------------------------------

_PACK_H = struct.Struct("<H").pack
_PACK_I = struct.Struct("<I").pack


def element_writer(keyword: str, explicit: bool) -> tuple[int, Any]:
    """(tag, f) where ``f(raw value bytes)`` returns the whole element, padded to even length
    (the same bytes ``_element(tag, vr, _value_bytes(...))`` gives for an ASCII value)."""
    tag, vr = _tag_vr(keyword)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    pad = b"\x00" if vr == "UI" else _TEXT_PAD
    if not explicit:

        def implicit(raw: bytes) -> bytes:
            if len(raw) & 1:
                raw += pad
            return head + _PACK_I(len(raw)) + raw

        return tag, implicit
    if vr in _LONG_VRS:
        long_head = head + vr.encode() + b"\x00\x00"

        def explicit_long(raw: bytes) -> bytes:
            if len(raw) & 1:
                raw += pad
            return long_head + _PACK_I(len(raw)) + raw

        return tag, explicit_long
    short_head = head + vr.encode()

    def explicit_short(raw: bytes) -> bytes:
        if len(raw) & 1:
            raw += pad
        return short_head + _PACK_H(len(raw)) + raw

    return tag, explicit_short


def sequence_writer(keyword: str, explicit: bool) -> Any:
    """``f(item body bytes or None)``: the sequence element with one item (or none)."""
    _tag, write = element_writer(keyword, explicit)  # SQ: a long VR, no padding needed

    def seq(body: bytes | None) -> bytes:
        if body is None:
            return write(b"")
        return write(b"\xfe\xff\x00\xe0" + _PACK_I(len(body)) + body)

    return seq
