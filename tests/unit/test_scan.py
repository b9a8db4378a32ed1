"""HL7 segment scanner: examples of every reading rule, on both implementations.

The rules are in the docstring of ``ebw.hl7._scan_ref``; ``impl`` runs each test
on the reference and on the Cython twin ``ebw._fast.hl7scan``.
"""

from __future__ import annotations

import logging
import os
import sys
import types

import pytest

import ebw.hl7.scan as scan_selector
from ebw.errors import ParseError
from ebw.hl7 import _scan_ref
from tests.conftest import fresh_copy

NO_EXTENSIONS = os.environ.get("EBW_NO_EXTENSIONS") == "1"


def _fast_module() -> types.ModuleType:
    try:
        from ebw._fast import hl7scan
    except ImportError:
        if NO_EXTENSIONS:
            pytest.skip("ebw._fast.hl7scan not built and EBW_NO_EXTENSIONS=1")
        raise  # a missing extension must fail the run, not skip half of it
    return hl7scan


@pytest.fixture(params=["ref", "fast"])
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    return _scan_ref if request.param == "ref" else _fast_module()


MSH = b"MSH|^~\\&|SENDAPP|SENDFAC|EBW|RECVFAC|20240102153000||ADT^A01^ADT_A01|MSG00042|P|2.5.1"
EVN = b"EVN|A01|20240102153000"
PID = b"PID|1||555123^^^HOSP^MR~9876^^^STATE^PI||TESTER^ALEX^Q||19800101|F"
NK1 = b"NK1|1|TESTER^SAM|SPO"
PV1 = b"PV1|1|E|ED^12^A||||1234^DOCTOR^DEMO|||EM|||||||||V999^^^HOSP^VN"
ZPV = b"ZPV|local|stuff"


def cr(*segments: bytes) -> bytes:
    return b"\r".join(segments) + b"\r"


def ids(result: tuple[bytes, int, list[tuple[str, list[bytes]]]]) -> list[str]:
    return [seg_id for seg_id, _ in result[2]]


def fields_of(result: tuple[bytes, int, list[tuple[str, list[bytes]]]], seg_id: str) -> list[bytes]:
    return next(fields for sid, fields in result[2] if sid == seg_id)


def parse_error(impl: types.ModuleType, data: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        impl.scan(data)
    return info.value


# --------------------------------------------------------------------------- results


def test_adt_message_fields_are_numbered_like_hl7(impl: types.ModuleType) -> None:
    seps, nseg, segments = impl.scan(cr(MSH, EVN, PID, NK1, PV1, ZPV))
    assert seps == b"|^~\\&"
    assert nseg == 6
    assert [sid for sid, _ in segments] == ["MSH", "EVN", "PID", "PV1"]
    msh = segments[0][1]
    assert msh[:3] == [b"MSH", b"|", b"^~\\&"]
    assert msh[3] == b"SENDAPP"
    assert msh[9] == b"ADT^A01^ADT_A01"
    assert msh[10] == b"MSG00042"
    assert msh[12] == b"2.5.1"
    pid = fields_of(impl.scan(cr(MSH, PID)), "PID")
    assert pid[0] == b"PID"
    assert pid[3] == b"555123^^^HOSP^MR~9876^^^STATE^PI"
    assert pid[5] == b"TESTER^ALEX^Q"
    assert pid[8] == b"F"
    assert fields_of(impl.scan(cr(MSH, PV1)), "PV1")[19] == b"V999^^^HOSP^VN"


def test_result_types_are_exact(impl: types.ModuleType) -> None:
    for data in (cr(MSH, PID, PV1), bytearray(cr(MSH, PID, PV1)), memoryview(cr(MSH, PID, PV1))):
        result = impl.scan(data)
        assert type(result) is tuple and len(result) == 3
        seps, nseg, segments = result
        assert type(seps) is bytes and type(nseg) is int and type(segments) is list
        for item in segments:
            assert type(item) is tuple and len(item) == 2
            assert type(item[0]) is str and type(item[1]) is list
            assert all(type(f) is bytes for f in item[1])


def test_custom_delimiters(impl: types.ModuleType) -> None:
    data = cr(b"MSH#$%!*#APP#FAC", b"PID#1##A$B$C%D*E!x!")
    seps, _, segments = impl.scan(data)
    assert seps == b"#$%!*"
    assert segments[0][1] == [b"MSH", b"#", b"$%!*", b"APP", b"FAC"]
    assert segments[1][1] == [b"PID", b"1", b"", b"A$B$C%D*E!x!"]


@pytest.mark.parametrize(
    ("msh2", "seps"),
    [
        (b"^~\\&", b"|^~\\&"),
        (b"", b"|^~\\&"),
        (b"^", b"|^~\\&"),
        (b"$", b"|$~\\&"),
        (b"$%", b"|$%\\&"),
        (b"$%!", b"|$%!&"),
        (b"^~\\&#", b"|^~\\&"),  # v2.7 truncation character: not in seps
        (b"^~\\&#@@", b"|^~\\&"),
    ],
)
def test_encoding_characters_from_msh2(impl: types.ModuleType, msh2: bytes, seps: bytes) -> None:
    seps_out, _, segments = impl.scan(b"MSH|" + msh2 + b"|A\r")
    assert seps_out == seps
    assert segments[0][1][2] == msh2  # MSH-2 as written


def test_msh_without_msh2(impl: types.ModuleType) -> None:
    assert impl.scan(b"MSH|") == (b"|^~\\&", 1, [("MSH", [b"MSH", b"|", b""])])
    assert impl.scan(b"MSH|\r") == (b"|^~\\&", 1, [("MSH", [b"MSH", b"|", b""])])


def test_field_contents_stay_raw(impl: types.ModuleType) -> None:
    pid = b'PID|1||ID\\F\\1||O\'NEIL\\T\\SONS^ANN~ALIAS^B|""|\\XC3A9\\|caf\xc3\xa9|\xe9'
    fields = fields_of(impl.scan(cr(MSH, pid)), "PID")
    assert fields == pid.split(b"|")  # escapes, components, repetitions, encodings as sent
    assert fields[5] == b"O'NEIL\\T\\SONS^ANN~ALIAS^B"
    assert fields[7:] == [b"\\XC3A9\\", b"caf\xc3\xa9", b"\xe9"]


def test_empty_and_missing_fields(impl: types.ModuleType) -> None:
    result = impl.scan(cr(MSH, b"PID|||", b"PV1|1|E", b"PV2", b"EVN|"))
    assert fields_of(result, "PID") == [b"PID", b"", b"", b""]
    assert fields_of(result, "PV1") == [b"PV1", b"1", b"E"]
    assert fields_of(result, "PV2") == [b"PV2"]  # exactly 3 bytes: a valid segment
    assert fields_of(result, "EVN") == [b"EVN", b""]


def test_wanted_selects_segments_but_nseg_counts_all(impl: types.ModuleType) -> None:
    data = cr(MSH, EVN, PID, NK1, PV1, ZPV)
    assert ids(impl.scan(data)) == ["MSH", "EVN", "PID", "PV1"]
    assert ids(impl.scan(data, frozenset({"ZPV", "NK1"}))) == ["MSH", "NK1", "ZPV"]
    assert ids(impl.scan(data, frozenset())) == ["MSH"]  # MSH always
    assert ids(impl.scan(data, {"PID"})) == ["MSH", "PID"]
    assert {impl.scan(data, w)[1] for w in (frozenset(), impl.DEFAULT_WANTED)} == {6}


def test_repeated_segments_keep_message_order(impl: types.ModuleType) -> None:
    data = cr(MSH, b"PID|1", b"MRG|A", b"PID|2", b"MRG|B")
    assert [(sid, f[1]) for sid, f in impl.scan(data)[2][1:]] == [
        ("PID", b"1"),
        ("MRG", b"A"),
        ("PID", b"2"),
        ("MRG", b"B"),
    ]


def test_later_msh_segment_is_split_like_msh(impl: types.ModuleType) -> None:
    _, nseg, segments = impl.scan(cr(MSH, b"MSH|x|y", b"MSH"), frozenset())
    assert nseg == 3
    assert segments[1] == ("MSH", [b"MSH", b"|", b"x", b"y"])
    assert segments[2] == ("MSH", [b"MSH"])


def test_default_wanted_is_the_same_in_both() -> None:
    fast = _fast_module()
    expected = frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "OBR", "ORC"})
    assert _scan_ref.DEFAULT_WANTED == fast.DEFAULT_WANTED == expected
    assert type(fast.DEFAULT_WANTED) is frozenset


# --------------------------------------------------------------------------- breaks


def test_crlf_is_one_break(impl: types.ModuleType) -> None:
    expected = impl.scan(cr(MSH, PID, PV1))
    assert impl.scan(b"\r\n".join([MSH, PID, PV1]) + b"\r\n") == expected
    assert impl.scan(b"\r\n".join([MSH, PID, PV1])) == expected


def test_lf_before_a_segment_id_is_a_break(impl: types.ModuleType) -> None:
    expected = impl.scan(cr(MSH, PID, PV1))
    assert impl.scan(b"\n".join([MSH, PID, PV1]) + b"\n") == expected
    assert impl.scan(MSH + b"\r" + PID + b"\n" + PV1) == expected
    assert impl.scan(b"\n".join([MSH, PID, PV1])) == expected


def test_lf_inside_a_field_is_data(impl: types.ModuleType) -> None:
    nte = b"NTE|1||line one\nline two\nPV1 is not a segment here\n1AB|digit first\nPv1|lower"
    result = impl.scan(cr(MSH, nte, PV1), frozenset({"NTE", "PV1"}))
    assert result[1] == 3
    assert fields_of(result, "NTE")[3] == (b"line one\nline two\nPV1 is not a segment here\n1AB")
    assert fields_of(result, "NTE")[4:] == [b"digit first\nPv1", b"lower"]


def test_lf_rule_uses_the_message_field_separator(impl: types.ModuleType) -> None:
    data = b"MSH#^~\\&#A\nPID#1\nPV1|not a segment: wrong separator\r"
    result = impl.scan(data)
    assert result[1] == 2
    assert fields_of(result, "PID") == [b"PID", b"1\nPV1|not a segment: wrong separator"]


def test_lf_then_bare_segment_id_at_end_is_data(impl: types.ModuleType) -> None:
    # Rule 2a needs the field separator after the id.
    result = impl.scan(MSH + b"\r" + b"PID|1\nPV1")
    assert result[1] == 2
    assert fields_of(result, "PID") == [b"PID", b"1\nPV1"]


def test_lf_cr_keeps_the_lf_as_data(impl: types.ModuleType) -> None:
    result = impl.scan(MSH + b"\n\r" + b"PID|1\n\r" + PV1 + b"\n\r")
    assert result[1] == 3
    assert result[2][0][1][-1] == b"2.5.1\n"
    assert fields_of(result, "PID") == [b"PID", b"1\n"]
    # ... but the last one is trailing whitespace (rule 2b): a break.
    assert fields_of(result, "PV1")[-1] == b"V999^^^HOSP^VN"


def test_trailing_lf_after_last_segment_is_not_data(impl: types.ModuleType) -> None:
    for tail in (b"\n", b"\n\n", b"\n \t\n", b"\n\r\n", b"\r\n\r\n  ", b"\r\n\t"):
        result = impl.scan(MSH + b"\r" + PV1 + tail)
        assert result[1] == 2, tail
        assert fields_of(result, "PV1")[-1] == b"V999^^^HOSP^VN", tail


def test_trailing_spaces_without_break_stay_in_the_last_field(impl: types.ModuleType) -> None:
    result = impl.scan(MSH + b"\r" + b"PV1|1|I  ")
    assert fields_of(result, "PV1") == [b"PV1", b"1", b"I  "]
    result = impl.scan(MSH + b"\r" + b"PV1|1|I \t\r  \r\n")
    assert fields_of(result, "PV1") == [b"PV1", b"1", b"I \t"]


def test_blank_segments_are_dropped(impl: types.ModuleType) -> None:
    data = MSH + b"\r\r\r\n \r\t\t\r" + PID + b"\r  \n" + PV1 + b"\r \r\n\r\n"
    assert impl.scan(data) == impl.scan(cr(MSH, PID, PV1))


def test_bom_and_leading_whitespace_are_skipped(impl: types.ModuleType) -> None:
    expected = impl.scan(cr(MSH, PID))
    assert impl.scan(b"\xef\xbb\xbf" + cr(MSH, PID)) == expected
    assert impl.scan(b"\xef\xbb\xbf\r\n \t\n" + cr(MSH, PID)) == expected
    assert impl.scan(b"\r\n\r\n  " + cr(MSH, PID)) == expected


def test_bom_later_in_the_message_is_data(impl: types.ModuleType) -> None:
    result = impl.scan(MSH + b"\rPID|\xef\xbb\xbfx\r")
    assert fields_of(result, "PID") == [b"PID", b"\xef\xbb\xbfx"]


def test_many_segments_and_large_messages(impl: types.ModuleType) -> None:
    # > 64 segments (span array growth in the Cython twin) and > 64 KiB (GIL released).
    obx = [b"OBX|%d|TX|||%s" % (i, b"word " * 20) for i in range(1, 1001)]
    data = cr(MSH, PID, *obx, PV1)
    assert len(data) > 100_000
    seps, nseg, segments = impl.scan(data, frozenset({"OBX", "PV1"}))
    assert nseg == 1003
    assert len(segments) == 1002
    assert segments[1] == ("OBX", [b"OBX", b"1", b"TX", b"", b"", b"word " * 20])
    assert segments[1000][1][1] == b"1000"
    assert segments[-1][0] == "PV1"
    with pytest.raises(ParseError) as info:
        impl.scan(data + b"pv1|x\r")
    assert info.value.offset == len(data)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"", "empty message", 0),
        (b"\xef\xbb\xbf", "empty message", 0),
        (b"\xef\xbb\xbf \r\n\t", "empty message", 0),
        (b"\r\n\r\n", "empty message", 0),
        (b"PID|1\rMSH|^~\\&\r", "no MSH segment", 0),
        (b"MS", "no MSH segment", 0),
        (b"msh|^~\\&\r", "no MSH segment", 0),
        (b"\xef\xbb", "no MSH segment", 0),
        (b"\xef\xbb\xbf\r\nPID|", "no MSH segment", 5),
        (b" \xef\xbb\xbfMSH|", "no MSH segment", 1),  # BOM only at the very start
        (b"\x0bMSH|^~\\&\r", "no MSH segment", 0),  # MLLP start block not removed
        (b"MSH", "bad MSH field separator", 3),
        (b"MSHA^~\\&\r", "bad MSH field separator", 3),
        (b"MSHa^~\\&\r", "bad MSH field separator", 3),
        (b"MSH0^~\\&\r", "bad MSH field separator", 3),
        (b"MSH ^~\\&\r", "bad MSH field separator", 3),
        (b"MSH\r", "bad MSH field separator", 3),
        (b"MSH\n", "bad MSH field separator", 3),
        (b"\xef\xbb\xbf\nMSH", "bad MSH field separator", 7),
        (b"MSH|^~\\&\rpid|1\r", "bad segment id", 9),
        (b"MSH|^~\\&\rPI\r", "bad segment id", 9),
        (b"MSH|^~\\&\rP\r", "bad segment id", 9),
        (b"MSH|^~\\&\rPIDX|1\r", "bad segment id", 9),
        (b"MSH|^~\\&\rPID^1\r", "bad segment id", 9),
        (b"MSH|^~\\&\r PID|1\r", "bad segment id", 9),
        (b"MSH|^~\\&\r\tPID|1\r", "bad segment id", 9),
        (b"MSH|^~\\&\r\n\nlower|x\r", "bad segment id", 10),
        (b"MSH|^~\\&\rPID|1\r\xc3\x89VN|1\rbad\r", "bad segment id", 15),
        (b"MSH|^~\\&\rPID|1\rEVN|\r\rPI", "bad segment id", 21),
    ],
)
def test_parse_errors(impl: types.ModuleType, data: bytes, reason: str, offset: int) -> None:
    err = parse_error(impl, data)
    assert (err.reason, err.offset, err.segment) == (reason, offset, "")
    assert isinstance(err, ValueError)


def test_first_bad_segment_is_reported(impl: types.ModuleType) -> None:
    err = parse_error(impl, cr(MSH, PID, b"zz1|a", b"ZZ2", b"bad"))
    assert err.offset == len(MSH) + 1 + len(PID) + 1


def test_errors_never_carry_message_bytes(impl: types.ModuleType) -> None:
    for data in (b"SECRETNAME|x", b"MSHSECRETNAME", cr(MSH, b"SECRETNAME|x")):
        err = parse_error(impl, data)
        assert "SECRET" not in str(err) and "SECRET" not in repr(err)
        assert all("SECRET" not in str(a) for a in err.args)


# --------------------------------------------------------------------------- inputs


def test_bytes_like_inputs(impl: types.ModuleType) -> None:
    data = cr(MSH, PID, PV1)
    expected = impl.scan(data)
    assert impl.scan(bytearray(data)) == expected
    assert impl.scan(memoryview(data)) == expected
    assert impl.scan(memoryview(b"xx" + data + b"yy")[2:-2]) == expected
    assert impl.scan(memoryview(bytearray(data)).cast("B")) == expected
    spread = bytes(b for c in data for b in (c, 0))
    assert impl.scan(memoryview(spread)[::2]) == expected  # not contiguous


def test_not_bytes_is_a_type_error(impl: types.ModuleType) -> None:
    for data in (MSH.decode(), None, 42, [MSH]):
        with pytest.raises(TypeError):
            impl.scan(data)


def test_bytearray_is_not_held_after_scan(impl: types.ModuleType) -> None:
    data = bytearray(cr(MSH, PID))
    impl.scan(data)
    data += b"PV1|1\r"  # resizing fails if a buffer export leaked
    assert impl.scan(data)[1] == 3
    with pytest.raises(ParseError):
        impl.scan(bytearray(b"bad"))


# --------------------------------------------------------------------------- selector


def test_selector_uses_the_compiled_scanner_unless_disabled() -> None:
    expected = "ref" if NO_EXTENSIONS else "fast"
    assert scan_selector.IMPLEMENTATION == expected
    module = _scan_ref if NO_EXTENSIONS else _fast_module()
    assert scan_selector.scan is module.scan


def test_selector_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("EBW_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "ebw._fast.hl7scan", None)  # import -> ImportError
    with caplog.at_level(logging.WARNING, logger="ebw.hl7.scan"):
        module = fresh_copy(scan_selector)
    assert module.IMPLEMENTATION == "ref"
    assert module.scan is _scan_ref.scan
    warnings = [r for r in caplog.records if r.name == "ebw.hl7.scan"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_selector_env_var_picks_reference_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EBW_NO_EXTENSIONS", "1")
    with caplog.at_level(logging.DEBUG, logger="ebw.hl7.scan"):
        module = fresh_copy(scan_selector)
    assert module.IMPLEMENTATION == "ref"
    assert module.scan is _scan_ref.scan
    assert not [r for r in caplog.records if r.name == "ebw.hl7.scan"]
