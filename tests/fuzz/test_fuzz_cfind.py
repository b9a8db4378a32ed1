"""Fuzzing the C-FIND identifier path: hostile query Datasets -> ``parse_identifier`` ->
``compile_query`` (Cython and pure-Python) -> matching.

Identifiers are built by hypothesis: attributes of the worklist model
(``ebw.worklist.VRS``, the Scheduled Procedure Step and ``ITEM_SEQUENCES`` items),
other public attributes, private and unknown tags, group lengths; each with a value
for its VR or a hostile one (very long, backslashes, wildcards, ``-``,
``20261301-``, malformed dates and times, NUL, non-ASCII) and sometimes another VR
altogether; sequences with 0, 1 or 2 items, nested and empty.  They are used as
built, and also encoded and decoded again the way pynetdicom hands them to the SCP.

Properties:

* ``parse_identifier`` returns a ``Query`` whose keys are ``(path, VRS[path], str)``
  for model paths, or raises ``QueryError``; nothing else;
* ``compile_query`` of those keys (as given, and after ``combine_start`` as
  ``WorklistIndex.select`` does) raises nothing but ``QueryError``, and the Cython
  (``ebw._fast.cfind``) and reference (``ebw.dicom._match_ref``) matchers agree:
  same ``QueryError`` message, or same ``paths``, same ``match`` and
  ``filter_items`` results on a few random items;
* the response encoders accept every parsed query: ``ResponseEncoder.encode`` gives
  the bytes of ``encode_response``, and pydicom reads them back.

Found and fixed (regression test at the end): a Timezone Offset From UTC with non-ASCII
digits (``+²³00``, from ISO_IR 100 bytes B2 B3) passed ``str.isdigit`` and ``int()``
raised ValueError: the query was answered 0xC001 instead of being read as having no
valid offset.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom.dsutils import decode

from ebw.dicom import _match_ref as ref
from ebw.dicom import find
from ebw.errors import QueryError
from ebw.worklist import ITEM_SEQUENCES, SPS, START_DATETIME, VRS
from tests.fuzz.harness import counted, fuzz_settings

if os.environ.get("EBW_NO_EXTENSIONS") == "1":
    fast = pytest.importorskip("ebw._fast.cfind")
else:
    from ebw._fast import cfind as fast  # not built = failure, never a silent skip

# pydicom warns about every invalid value it is given: that is the point here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# --------------------------------------------------------------------------- keywords

MODEL_TOP = sorted(p for p in VRS if "." not in p)
MODEL_SPS = sorted(p[len(SPS) :] for p in VRS if p.startswith(SPS) and p != START_DATETIME)
OTHER_TOP = [
    "SpecificCharacterSet", "TimezoneOffsetFromUTC", "StudyDate", "PatientAge", "PatientWeight", "NumberOfFrames",
    "PatientComments", "Modality", "ScheduledProcedureStepStartDate", "PregnancyStatus", "MedicalAlerts",
    "PatientBirthTime", "AcquisitionDateTime", "PixelData", "SmallestImagePixelValue", "RequestedProcedurePriority",
    "ReasonForTheRequestedProcedure", "PatientState", "ReferencedStudySequence", "ReferencedPatientSequence",
    "RequestedProcedureCodeSequence", "OtherPatientIDsSequence",
]  # fmt: skip
OTHER_SPS = [
    "ScheduledProtocolCodeSequence", "ScheduledStationName", "CommentsOnTheScheduledProcedureStep",
    "PreMedication", "ScheduledProcedureStepEndDate", "PatientName", "AccessionNumber", "SpecificCharacterSet",
    "ScheduledProcedureStepSequence",
]  # fmt: skip
TOP_KEYWORDS = MODEL_TOP + ["ScheduledProcedureStepSequence", *ITEM_SEQUENCES, *OTHER_TOP]
ITEM_KEYWORDS = {
    "ScheduledProcedureStepSequence": MODEL_SPS + OTHER_SPS,
    **{seq: [*kws, "PatientName", "ScheduledProtocolCodeSequence", "StudyDate"] for seq, kws in ITEM_SEQUENCES.items()},
}
# (tag, VR): private creator and data, unknown public tags, a group length
ODD_TAGS = [(0x00090010, "LO"), (0x00091001, "LO"), (0x00111000, "UN"), (0x00091002, "SQ"), (0x00330001, "LO"),
            (0x00109999, "UN"), (0x00100000, "UL"), (0x00400000, "UL")]  # fmt: skip
WRONG_VRS = ["SQ", "US", "OB", "UN", "DS", "LO", "DA", "TM", "DT", "UI", "PN", "AT", "FL"]

# --------------------------------------------------------------------------- values

KEY_VALUES = [
    "", " ", "*", "**", "?", "*^*", "^", "=", "-", "--", "- ", "20261128", "20261301-", "2026-", "-20261128",
    "20261128-20261127", "20260230", "2026112", "20261128-", "0800-1700", "0800", "25:00", "12:60", "1200.1234567",
    "12:00:00.5", "2200-0600", "-0700", "+1400", "+1500", "+\xb2\xb300", "+0530", "2026112812-0500",
    "20261128080000.123456+0100", "2026-2027", "DOE^JANE", "doe*", "D?E", "A\\B", "\\", "\\\\", "*\\", "\\*",
    "ß", "İ", "李", "\x00", "\x1b$B", " X ", "1.2.840.10008", "1.2.3\x00", "US", "SCHEDULED", "ISO_IR 100",
    "ISO_IR 192", "ISO 2022 IR 87", "\\ISO 2022 IR 87", "EB000000000001", "1\\2\\3",
]  # fmt: skip
ALPHABET = "*?\\-^= .:+0123456789ABZabs\u00df\u0130\u674e\x00\xb2\x1b"
key_text = st.one_of(
    st.sampled_from(KEY_VALUES),
    st.text(alphabet=ALPHABET, max_size=24),
    st.lists(st.sampled_from(KEY_VALUES), min_size=2, max_size=3).map("-".join),
    st.lists(st.sampled_from(KEY_VALUES), min_size=2, max_size=3).map("\\".join),
    st.tuples(st.integers(65, 12_000), st.sampled_from(["A", "*", "?a", "\\", "9", "-"])).map(lambda t: t[1] * t[0]),
)


def values_for(vr: str, kw: str, depth: int) -> st.SearchStrategy[Any]:
    if vr == "SQ":
        if depth >= 2:
            return st.just([])
        sub = ITEM_KEYWORDS.get(kw, TOP_KEYWORDS)
        return st.lists(st.lists(elements(sub, depth + 1), max_size=5), max_size=2)  # items
    if vr in ("US", "SS", "UL", "SL"):
        return st.none() | st.integers(0, 65535) | st.lists(st.integers(0, 65535), max_size=3)
    if vr in ("FL", "FD"):
        return st.none() | st.floats(allow_nan=True)
    if vr == "AT":
        return st.none() | st.integers(0, 0xFFFFFFFF)
    if vr in ("OB", "OW", "UN"):
        return st.none() | st.binary(max_size=20)
    return st.none() | key_text


@st.composite
def elements(draw: st.DrawFn, keywords: list[str], depth: int = 0) -> tuple[int, str, Any]:
    """(tag, VR, value) of one attribute; a ``bytes`` value for a non-binary VR, or
    ``RAW`` as the VR, asks for an undecoded element (``_dataset``)."""
    if draw(st.integers(0, 9)) == 0:
        tag, vr = draw(st.sampled_from(ODD_TAGS))
        kw = ""
    else:
        kw = draw(st.sampled_from(keywords))
        tag = tag_for_keyword(kw)
        vr = dictionary_VR(tag).split(" or ")[0]
        if draw(st.integers(0, 9)) == 0:
            vr = draw(st.sampled_from(WRONG_VRS))  # what an explicit-VR SCU may send
    if vr != "SQ" and draw(st.integers(0, 3)) == 0:
        return tag, vr, draw(raw_values)
    if vr == "SQ" and draw(st.integers(0, 9)) == 0:
        return tag, vr, draw(st.binary(max_size=24))  # a sequence that does not decode
    return tag, vr, draw(values_for(vr, kw, depth))


# undecoded values: text in the usual codecs, or any bytes (any length, for any VR)
raw_values = st.one_of(
    st.tuples(key_text, st.sampled_from(["utf_8", "latin_1", "iso2022_jp", "ascii"])).map(
        lambda t: t[0].encode(t[1], "replace")
    ),
    st.binary(max_size=24),
)
BINARY_VRS = frozenset({"OB", "OW", "UN"})


def _dataset(elems: list[tuple[int, str, Any]]) -> Dataset:
    """The identifier ``elems`` describe.  Hypothesis draws the descriptions, not
    Datasets: a Dataset holding an element that does not decode cannot even be
    printed.  A list value is a sequence's items; a ``bytes`` value (other than
    OB/OW/UN) goes in undecoded, as pydicom's reader (used by pynetdicom's ``decode``)
    leaves it: ``Dataset({tag: RawDataElement})``, converted when first read."""
    found: dict[Tag, Any] = {}
    for tag, vr, value in elems:
        if isinstance(value, list) and vr == "SQ":
            found[Tag(tag)] = DataElement(tag, vr, Sequence([_dataset(item) for item in value]))
            continue
        if not (isinstance(value, bytes) and vr not in BINARY_VRS):
            try:
                found[Tag(tag)] = DataElement(tag, vr, value)
                continue
            except (ValueError, TypeError, OverflowError):  # pydicom refuses it: send it undecoded instead
                value = value.encode("utf_8", "replace") if isinstance(value, str) else b"\x00\x00\x00"
        found[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True, True, False)
    return Dataset(found)


identifiers = st.lists(elements(TOP_KEYWORDS), max_size=12)  # build with _dataset

ITEM_PATHS = sorted(VRS)
stored_text = st.one_of(
    st.sampled_from(KEY_VALUES + ["DOE^JANE^^", "doe^jane", "20261128", "080000", "20261128080000", "A\\B\\", ""]),
    st.text(alphabet=ALPHABET, max_size=12),
)
items = st.lists(st.dictionaries(st.sampled_from(ITEM_PATHS), stored_text, max_size=8), max_size=4)


# --------------------------------------------------------------------------- checks


def parse(ds: Dataset) -> find.Query | None:
    """``parse_identifier``: a well-formed Query, or None for QueryError (nothing else)."""
    try:
        q = find.parse_identifier(ds)
    except QueryError:
        return None
    assert isinstance(q, find.Query)
    for path, vr, value in q.keys:
        assert VRS[path] == vr and isinstance(value, str)
    assert all(isinstance(kw, str) and kw for kw in q.top)
    assert q.sps is None or all(isinstance(kw, str) and kw for kw in q.sps)
    assert isinstance(q.charset, str) and isinstance(q.timezone, str)
    zone = find.query_zone(q.timezone)
    assert zone is None or zone.utcoffset(None) is not None
    return q


def match_outcome(module: Any, keys: list[tuple[str, str, str]], found: list[dict[str, str]]) -> Any:
    try:
        q = module.compile_query(keys)
    except QueryError as err:
        return ("QueryError", str(err))
    return ("ok", q.paths, [module.match(q, item) for item in found], module.filter_items(q, found))


def check_matchers(keys: list[tuple[str, str, str]], found: list[dict[str, str]]) -> None:
    for ks in (keys, find.combine_start(keys)):
        expected = match_outcome(ref, ks, found)
        assert match_outcome(fast, ks, found) == expected
        if expected[0] == "ok":
            assert expected[3] == [i for i, ok in enumerate(expected[2]) if ok]


def check_responses(q: find.Query, item: dict[str, str]) -> None:
    for explicit in (False, True):
        slow = find.encode_response(q, item, "+0100", explicit)._ebw_data
        quick = find.ResponseEncoder(q, "+0100", explicit).encode(item)
        assert quick is None or quick == slow
        back = decode(io.BytesIO(slow), not explicit, True)  # the element structure parses
        assert set(back.keys()) >= {tag_for_keyword(kw) for kw in q.top}
    find.build_response(q, item, "+0100")


def wire(ds: Dataset, implicit: bool) -> Dataset | None:
    """``ds`` as the SCP receives it (encoded, then decoded lazily), if pydicom can
    encode it and pynetdicom decode it."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_dataset(fp, ds)
    except Exception:  # noqa: BLE001 - values pydicom cannot write: no SCU can send them either
        return None
    try:
        return decode(io.BytesIO(fp.getvalue()), implicit, True)
    except Exception:  # noqa: BLE001 - fails in ``event.identifier``, before EBW's code (answered 0xC001)
        return None  # e.g. a Specific Character Set that is a sequence: read while decoding


# --------------------------------------------------------------------------- properties


@fuzz_settings(300)
@given(elems=identifiers, found=items)
# Found by this property: parse_identifier let pydicom's decoding errors out (the SCP
# answered 0xC001 after logging a traceback).  Fixed in ebw/dicom/find.py: QueryError.
@example(elems=[(0x00100000, "UL", b"0")], found=[])  # BytesLengthException: group length of 1 byte
@example(elems=[(0x001021C0, "US", b" ")], found=[])  # BytesLengthException: US of 1 byte
@example(elems=[(0x00400100, "SQ", [[(0x00400002, "US", b"x")]])], found=[])  # ... inside the SPS item
@example(elems=[(0x00090010, "LO", b"ACME"), (0x00091002, "SQ", b"\x00")], found=[])  # OSError: private SQ
@example(elems=[(0x00080005, "US", 5)], found=[])  # TypeError: "\\".join(5), Specific Character Set as US
@example(elems=[(0x00080005, "US", b"\x05\x00"), (0x00100010, "PN", b"DOE")], found=[])  # TypeError in pydicom
@counted
def test_identifier_to_matchers(elems: list[tuple[int, str, Any]], found: list[dict[str, str]]) -> None:
    q = parse(_dataset(elems))
    if q is not None:
        check_matchers(q.keys, found)


@fuzz_settings(200)
@given(elems=identifiers, implicit=st.booleans())
@counted
def test_identifier_over_the_wire(elems: list[tuple[int, str, Any]], implicit: bool) -> None:
    received = wire(_dataset(elems), implicit)
    assume(received is not None)
    q = parse(received)
    if q is not None:
        check_matchers(q.keys, [])


@fuzz_settings(150)
@given(elems=identifiers, item=st.dictionaries(st.sampled_from(ITEM_PATHS), stored_text))
# Found by this property (fixed in parse_identifier): Accession Number sent as an (empty)
# sequence was listed as a sequence to return, and ResponseEncoder and encode_response
# wrote different bytes for it; a Specific Character Set with a NUL was echoed in
# every response and pydicom could not read them back.
@example(elems=[(0x00080050, "SQ", b"")], item={})
@example(elems=[(0x00080005, "CS", "\x000")], item={})
@counted
def test_responses_to_any_query(elems: list[tuple[int, str, Any]], item: dict[str, str]) -> None:
    q = parse(_dataset(elems))
    if q is not None:
        check_responses(q, item)


@fuzz_settings(300)
@given(keys=st.lists(st.tuples(st.sampled_from(ITEM_PATHS), key_text), max_size=6), found=items)
# always tried: a lone "-" on both start date and time (combined into a DT "-"), a month 13
@example(
    keys=[(SPS + "ScheduledProcedureStepStartDate", "-"), (SPS + "ScheduledProcedureStepStartTime", "-")], found=[]
)
@example(keys=[(SPS + "ScheduledProcedureStepStartDate", "20261301-")], found=[{}])
@counted
def test_model_keys_to_matchers(keys: list[tuple[str, str]], found: list[dict[str, str]]) -> None:
    """Keys on model paths with hostile values, straight to the matchers."""
    check_matchers([(path, VRS[path], value) for path, value in keys], found)


# --------------------------------------------------------------------------- regression


def test_query_zone_ignores_non_ascii_digits() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.TimezoneOffsetFromUTC = "+\xb2\xb300"  # bytes 2B B2 B3 30 30 in ISO_IR 100
    q = find.parse_identifier(ds)
    assert find.query_zone(q.timezone) is None  # raised ValueError before the fix
