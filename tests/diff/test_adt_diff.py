"""The compiled ADT reader (``ebw._fast.adtread``) and its reference (``ebw.hl7.adt``)
agree: the same ``Change`` (every field, dict keys in the same order) or the same
error, on the synthetic feed, on generated ADT messages whose values mix the
delimiters, escape sequences, explicit nulls, whitespace and non-ASCII text of every
charset of HL7 table 0211, under different endpoint mappings; and ``dtm`` agrees
with ``adt.parse_dtm`` on generated HL7 datetimes.

The fuzz properties (tests/fuzz/test_fuzz_hl7.py) compare the two on hostile and
mutated messages too.
"""

from __future__ import annotations

import os
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.feed import Feed
from ebw import config, ingest
from ebw.hl7 import adt
from ebw.hl7.text import CHARSETS

if os.environ.get("EBW_NO_EXTENSIONS") == "1":
    fast = pytest.importorskip("ebw._fast.adtread")
else:
    from ebw._fast import adtread as fast  # not built = failure, never a silent skip

EXAMPLES = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def described(change: adt.Change) -> Any:
    """Everything a ``Change`` holds, dict order included."""
    return (
        change,
        [list(d.items()) for d in (change.patient, change.visit, change.segments)],
        [described(g) for g in change.groups],
    )


def outcome(parse: Any, data: bytes, mapping: adt.Mapping) -> Any:
    try:
        change = parse(data, mapping)
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return (type(exc).__name__, exc.args, vars(exc))
    return ("ok", described(change))


def assert_agree(data: bytes, mapping: adt.Mapping = adt.DEFAULT_MAPPING) -> Any:
    expected = outcome(adt.parse, data, mapping)
    assert outcome(fast.parse, data, mapping) == expected
    return expected


# --------------------------------------------------------------------------- the feed

MAPPINGS = [
    adt.DEFAULT_MAPPING,
    ingest.mapping_for(config.load({}).endpoint),
    adt.Mapping(
        timezone="America/New_York",
        charset="latin_1",
        patient_id_type="",
        patient_id_authority="CHILDRENS",
        visit_number=("PID-18", "PV1-19"),
        location_components=(4, 1, 11),
        location_separator=" / ",
    ),
    adt.Mapping(timezone="Pacific/Kiritimati", charset="ascii", patient_id_type="SS", visit_number=("PID-18",)),
]


@pytest.mark.parametrize("mapping", MAPPINGS, ids=range(len(MAPPINGS)))
def test_the_synthetic_feed_is_read_the_same_and_on_the_compiled_path(mapping, monkeypatch):
    """Every message of the feed the load harness sends (admits, transfers, updates,
    discharges; non-ASCII names; escape sequences) gives the same Change, and none
    of them needs the reference."""
    messages = [m for _, m in Feed(seed=7).stream(3000)]
    for data in messages:
        assert assert_agree(data, mapping)[0] == "ok"

    def not_expected(*args: Any) -> None:
        raise AssertionError("the compiled reader handed a feed message to the reference")

    monkeypatch.setattr(adt, "parse_scanned", not_expected)
    for data in messages:
        fast.parse(data, mapping)


def test_merges_and_unusual_messages_go_to_the_reference(monkeypatch):
    """What the compiled reader leaves to the reference is read by it, with the scan done once."""
    merge = (
        b"MSH|^~\\&|A|B|C|D|20261128093000||ADT^A40|M1|P|2.5.1\rEVN|A40|20261128093000\r"
        b"PID|1||NEW^^^H^MR\rMRG|OLD^^^H^MR\r"
    )
    other_delimiters = b"MSH#$%*@#A#B#C#D#20261128093000##ADT$A01#O1#P#2.5.1\rPID#1##X1$$$H$MR\r"
    assert assert_agree(merge)[0] == "ok" and assert_agree(other_delimiters)[0] == "ok"
    calls = []
    real = adt.parse_scanned
    monkeypatch.setattr(adt, "parse_scanned", lambda scanned, mapping: calls.append(scanned) or real(scanned, mapping))
    monkeypatch.setattr(adt, "scan", None)  # the reference does not scan again
    fast.parse(merge)
    fast.parse(other_delimiters)
    assert len(calls) == 2


# --------------------------------------------------------------------------- generated

PIECES = [
    b"A", b"smith", b"0", b"42", b" ", b"\t", b"^", b"&", b"~", b"\\", b'""', b'"', b"L", b"MR", b"PI", b"H",
    b"\\F\\", b"\\S\\", b"\\T\\", b"\\R\\", b"\\E\\", b"\\X41\\", b"\\X\\", b"\\.br\\", b"\\H\\", b"\\Zq\\",
    "é".encode(), b"\xe9", b"\xff\xfe", "日本".encode(), b"\x1b$B", b"\x85", b"\xa0", b"\x1c", b"\x0b", b"\n",
]  # fmt: skip
# Values the compiled reader takes itself (text that decodes, escape sequences) ...
DECODABLE = [
    b"A", b"smith", b"0", b"42", b" ", b"\t", b"^", b"&", b"~", b'""', b"L", b"MR", b"H", "é".encode(), "日本".encode(),
    b"\\F\\", b"\\S\\", b"\\T\\", b"\\E\\", b"\\X41\\", b"\\.br\\", b"\\H\\", b"\\", b"\x1c",
    "\u0085".encode(), "\u00a0".encode(), "\u2003".encode(),
]  # fmt: skip
# ... and, now and then, bytes that send a message to the reference (no charset reads them).
decodable = st.lists(st.sampled_from(DECODABLE), max_size=7).map(b"".join)
mixed = st.one_of(*[decodable] * 12, st.lists(st.sampled_from(PIECES), max_size=7).map(b"".join))
DIGITS = st.from_regex(r"\A[0-9]{0,16}([+-][0-9]{0,6})?(\.[0-9]{0,3})?\Z").map(str.encode)
datetimes = st.one_of(DIGITS, mixed, st.sampled_from([b"", b'""', b"20261128", b"20260229120000-0500"]))
READ_HERE = sorted(adt.ENCOUNTER_EVENTS | adt.PERSON_EVENTS)
EVENTS = READ_HERE * 6 + sorted(adt.KNOWN_EVENTS) + ["A99", "", "a01", " A04 ", "A01^ADT_A01"]
CODES = [b"ADT"] * 20 + [b"adt", b" ADT", b"ORU", b""]
CHARSET_NAMES = [""] * 20 + ["UNICODE UTF-8"] * 5 + sorted(CHARSETS) + ["UNKNOWN", "UNICODE UTF-8~8859/1", "utf-8"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    values = draw(st.sampled_from([decodable] * 2 + [mixed]))  # for the whole message

    def field(n: int, special: st.SearchStrategy[bytes] | None = None) -> tuple[int, bytes]:
        return n, draw(values if special is None else special)

    msh = b"MSH|^~\\&|" + b"|".join(
        [
            draw(values),
            draw(values),
            b"EBW",
            b"",
            draw(datetimes),
            b"",
            draw(st.sampled_from(CODES)) + b"^" + draw(st.sampled_from(EVENTS)).encode(),
            draw(values),
            b"P",
            b"2.5.1",
            b"",
            b"",
            b"",
            b"",
            b"",
            draw(st.sampled_from(CHARSET_NAMES)).encode(),
        ]
    )
    ident = st.one_of(*[st.sampled_from([b"M1", b"42", b"V-7", "Ü1".encode()])] * 3, values)
    cx = st.one_of(
        st.tuples(ident, values, values, values, st.sampled_from([b"MR", b"PI", b"", b"mr "])).map(
            lambda c: b"^".join(c).rstrip(b"^")
        ),
        st.lists(values, max_size=6).map(b"^".join),
    )
    cx_list = st.one_of(st.lists(cx, min_size=1, max_size=4), st.lists(cx, max_size=4)).map(b"~".join)
    pid = dict([field(3, cx_list), field(5), field(7, datetimes), field(8), field(18, cx_list)])
    pv1 = dict(
        [field(2), field(3), field(7), field(8), field(10), field(16), field(19, cx_list)]
        + [field(44, datetimes), field(45, datetimes)]
    )

    def segment(sid: bytes, fields: dict[int, bytes]) -> bytes:
        last = max(fields) if fields else 0
        return sid + b"|" + b"|".join(fields.get(i, b"") for i in range(1, last + 1))

    segments = [msh]
    if draw(st.booleans()):
        segments.append(b"EVN|" + draw(st.sampled_from([b"", b"A01"])) + b"|" + draw(datetimes))
    if draw(st.sampled_from([True] * 9 + [False])):
        segments.append(segment(b"PID", pid))
    if draw(st.booleans()):
        segments.append(b"PD1|||X")
    if draw(st.sampled_from([True] * 4 + [False])):
        segments.append(segment(b"PV1", pv1))
    if draw(st.sampled_from([False] * 5 + [True])):
        segments.append(b"MRG|" + draw(cx_list) + b"||" + draw(cx) + b"||" + draw(cx))
    if draw(st.booleans()):
        segments.append(segment(b"PID", pid))  # a second PID: only the first is read
    return b"\r".join(s.replace(b"\r", b"") for s in segments) + b"\r"


mappings = st.builds(
    adt.Mapping,
    timezone=st.sampled_from(["UTC", "America/New_York", "Pacific/Kiritimati", "Europe/Berlin"]),
    charset=st.sampled_from(["utf_8"] * 10 + ["latin_1"] * 3 + sorted(set(CHARSETS.values()))),
    patient_id_type=st.sampled_from(["MR", "", "PI", "mr"]),
    patient_id_authority=st.sampled_from(["", "H", "smith"]),
    visit_number=st.sampled_from([("PV1-19", "PID-18"), ("PID-18",), ("PID-18", "PV1-19"), ("PV1-19",)]),
    location_components=st.sampled_from([(1, 2, 3), (4, 1), (11,), (1, 1, 9)]),
    location_separator=st.sampled_from(["-", " / ", ""]),
)


@EXAMPLES
@given(data=messages(), mapping=mappings)
@example(data=b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5.1\rPID|1||X^^^H^MR||\xff^\\F\\\r", mapping=adt.DEFAULT_MAPPING)
@example(
    data=b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5.1|||||ISO IR14\rPID|1||\x83^^^H^MR||X\rPV1||I|\x83\\S\\\r",
    mapping=adt.DEFAULT_MAPPING,
)
def test_generated_messages_agree(data: bytes, mapping: adt.Mapping) -> None:
    assert_agree(data, mapping)


# --------------------------------------------------------------------------- datetimes


ZONES = [ZoneInfo(z) for z in ("UTC", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati")]


@settings(max_examples=1000, deadline=None)
@given(raw=datetimes, zone=st.sampled_from(ZONES))
@example(raw=b"20260229", zone=ZONES[0])  # not a leap year
@example(raw=b"20240229120000+1400", zone=ZONES[0])
@example(raw=b"00010101000000", zone=ZONES[0])
@example(raw=b"0000", zone=ZONES[0])
@example(raw=b"99991231235959-2359", zone=ZONES[0])
@example(raw=b"20261101013000", zone=ZONES[1])  # the repeated hour at the end of DST
@example(raw=b"20260308023000", zone=ZONES[1])  # the hour that does not exist
def test_dtm_agrees_with_parse_dtm(raw: bytes, zone: ZoneInfo) -> None:
    expected = adt.parse_dtm.__wrapped__(raw, zone)
    got = fast.dtm(raw, zone)
    assert got == expected and type(got) is type(expected)
