"""C-FIND key matching: examples of every matching rule, on both implementations.

The rules are in the docstring of ``ebw.dicom._match_ref``; ``impl`` runs each
test on the reference and on the Cython twin ``ebw._fast.cfind``.
"""

from __future__ import annotations

import logging
import os
import sys
import types

import pytest

import ebw.dicom.match as match_selector
from ebw.dicom import _match_ref
from ebw.errors import QueryError
from tests.conftest import fresh_copy

NO_EXTENSIONS = os.environ.get("EBW_NO_EXTENSIONS") == "1"

SPS = "ScheduledProcedureStepSequence."
DA_RULE = "DA must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-"
TM_RULE = "TM must be HH[MM[SS[.F{1,6}]]] or a range A-B, -B, A-"
DT_RULE = "DT must be YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][+/-HHMM] or a range A-B, -B, A-"


def _fast_module() -> types.ModuleType:
    try:
        from ebw._fast import cfind
    except ImportError:
        if NO_EXTENSIONS:
            pytest.skip("ebw._fast.cfind not built and EBW_NO_EXTENSIONS=1")
        raise  # a missing extension must fail the run, not skip half of it
    return cfind


@pytest.fixture(params=["ref", "fast"])
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    return _match_ref if request.param == "ref" else _fast_module()


def one(impl: types.ModuleType, vr: str, key: str, stored: str | None) -> bool:
    """Does a single key ``X`` (``vr``, ``key``) match an item with ``X = stored``?"""
    q = impl.compile_query([("X", vr, key)])
    item = {} if stored is None else {"X": stored}
    return impl.match(q, item)


def query_error(impl: types.ModuleType, keys: list[tuple[str, str, str]]) -> str:
    with pytest.raises(QueryError) as info:
        impl.compile_query(keys)
    assert isinstance(info.value, ValueError)
    return str(info.value)


ITEM = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "555123",
    "PatientBirthDate": "19800101",
    "AccessionNumber": "EB000000000001",
    "StudyInstanceUID": "1.2.3",
    SPS + "Modality": "US",
    SPS + "ScheduledStationAETitle": "US1\\US2",
    SPS + "ScheduledProcedureStepStartDate": "20261128",
    SPS + "ScheduledProcedureStepStartTime": "101500",
}


# --------------------------------------------------------------------------- API


def test_typical_worklist_query(impl: types.ModuleType) -> None:
    keys = [
        ("PatientName", "PN", "doe*"),
        ("PatientID", "LO", ""),
        (SPS + "Modality", "CS", "US"),
        (SPS + "ScheduledProcedureStepStartDate", "DA", "20261128"),
        (SPS + "ScheduledProcedureStepStartTime", "TM", ""),
        (SPS + "ScheduledStationAETitle", "AE", "US2"),
    ]
    q = impl.compile_query(keys)
    assert q.paths == (
        "PatientName",
        SPS + "Modality",
        SPS + "ScheduledProcedureStepStartDate",
        SPS + "ScheduledStationAETitle",
    )
    assert impl.match(q, ITEM) is True
    assert impl.match(q, {**ITEM, SPS + "Modality": "CT"}) is False


def test_paths_keep_input_order_and_duplicates(impl: types.ModuleType) -> None:
    q = impl.compile_query([("B", "LO", "x"), ("A", "LO", "*"), ("A", "LO", "y"), ("B", "SH", "z")])
    assert q.paths == ("B", "A", "B")


def test_all_universal_query_matches_everything(impl: types.ModuleType) -> None:
    q = impl.compile_query([("PatientName", "PN", ""), ("PatientID", "LO", "*"), ("X", "SQ", "")])
    assert q.paths == ()
    assert impl.match(q, {}) is True
    assert impl.filter_items(q, [{}, ITEM, {"PatientName": ""}]) == [0, 1, 2]


def test_empty_key_list(impl: types.ModuleType) -> None:
    q = impl.compile_query([])
    assert q.paths == ()
    assert impl.filter_items(q, []) == []


def test_filter_items_returns_indices_in_order(impl: types.ModuleType) -> None:
    q = impl.compile_query([("PatientID", "LO", "7*")])
    items = [{"PatientID": p} for p in ["71", "17", "", "7", "77", "x7"]] + [{}]
    assert impl.filter_items(q, items) == [0, 3, 4]
    assert impl.filter_items(q, iter(items)) == [0, 3, 4]
    assert impl.filter_items(q, tuple(items)) == [0, 3, 4]


def test_items_may_be_other_mappings(impl: types.ModuleType) -> None:
    class Item(dict):
        pass

    q = impl.compile_query([("PatientID", "LO", "1")])
    assert impl.match(q, Item(PatientID="1")) is True
    assert impl.match(q, types.MappingProxyType({"PatientID": "2"})) is False


def test_all_keys_must_match(impl: types.ModuleType) -> None:
    q = impl.compile_query([("A", "LO", "1"), ("B", "LO", "2")])
    items = [{"A": "1", "B": "2"}, {"A": "1"}, {"B": "2"}, {"A": "1", "B": "3"}]
    assert impl.filter_items(q, items) == [0]


# --------------------------------------------------------------------------- universal / empty


@pytest.mark.parametrize("vr", ["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UI", "DA", "TM", "DT"])
@pytest.mark.parametrize("key", ["", " ", "    "])
def test_empty_key_is_universal_for_every_vr(impl: types.ModuleType, vr: str, key: str) -> None:
    q = impl.compile_query([("X", vr, key)])
    assert q.paths == ()
    assert impl.match(q, {}) and impl.match(q, {"X": ""}) and impl.match(q, {"X": "anything"})


@pytest.mark.parametrize("vr", ["SQ", "DS", "IS", "AS", "US", "OB", "pn", "??"])
def test_empty_key_with_unmatchable_vr_is_universal(impl: types.ModuleType, vr: str) -> None:
    assert impl.compile_query([("X", vr, ""), ("Y", vr, "  ")]).paths == ()


@pytest.mark.parametrize("vr", ["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"])
@pytest.mark.parametrize("key", ["*", "***", "*  "])
def test_star_only_is_universal_for_string_vrs(impl: types.ModuleType, vr: str, key: str) -> None:
    q = impl.compile_query([("X", vr, key)])
    assert q.paths == ()
    assert impl.match(q, {}) is True


def test_leading_spaces_before_star(impl: types.ModuleType) -> None:
    for vr in ("AE", "CS", "SH", "LO"):
        assert impl.compile_query([("X", vr, "  * ")]).paths == ()
    for vr in ("LT", "PN", "ST", "UC", "UR", "UT"):
        assert impl.compile_query([("X", vr, " *")]).paths == ("X",)
        assert one(impl, vr, " *", " A") is True
        assert one(impl, vr, " *", "A") is False


def test_pn_trailing_empty_components_are_padding(impl: types.ModuleType) -> None:
    keys = [("X", "PN", "^^"), ("Y", "PN", "*^^ "), ("Z", "PN", "^")]
    assert impl.compile_query(keys).paths == ()
    assert impl.compile_query([("X", "PN", "*^*")]).paths == ("X",)


def test_star_is_not_universal_for_ui(impl: types.ModuleType) -> None:
    assert impl.compile_query([("X", "UI", "*")]).paths == ("X",)
    assert one(impl, "UI", "*", "1.2") is False
    assert one(impl, "UI", "*", "*") is True


@pytest.mark.parametrize("stored", [None, "", " ", "   ", "\\", " \\ "])
@pytest.mark.parametrize(
    "vr,key",
    [
        ("LO", "A*"),
        ("LO", "?"),
        ("CS", "US"),
        ("PN", "DOE"),
        ("UI", "1.2"),
        ("DA", "-20991231"),
        ("TM", "00-"),
        ("DT", "0000-"),
        ("LO", "X\\*"),
    ],
)
def test_empty_stored_value_never_matches_a_non_universal_key(
    impl: types.ModuleType, vr: str, key: str, stored: str | None
) -> None:
    assert one(impl, vr, key, stored) is False


def test_stored_none_is_empty(impl: types.ModuleType) -> None:
    q = impl.compile_query([("X", "LO", "*A*")])
    assert impl.match(q, {"X": None}) is False


# --------------------------------------------------------------------------- padding


def test_leading_and_trailing_spaces_trimmed_for_ae_cs_sh_lo(impl: types.ModuleType) -> None:
    for vr in ("AE", "CS", "SH", "LO"):
        assert one(impl, vr, "  US ", "US") is True
        assert one(impl, vr, "US", "  US  ") is True
        assert one(impl, vr, "U S", "U S") is True
        assert one(impl, vr, "US", "U S") is False


def test_only_trailing_spaces_trimmed_for_other_string_vrs(impl: types.ModuleType) -> None:
    for vr in ("LT", "ST", "UT", "UC", "UR", "PN"):
        assert one(impl, vr, "AB  ", "AB") is True
        assert one(impl, vr, "AB", "AB   ") is True
        assert one(impl, vr, " AB", "AB") is False
        assert one(impl, vr, "AB", " AB") is False


def test_ui_trailing_nul_and_spaces_are_padding(impl: types.ModuleType) -> None:
    assert one(impl, "UI", "1.2.3\x00", "1.2.3") is True
    assert one(impl, "UI", "1.2.3", "1.2.3\x00") is True
    assert one(impl, "UI", "1.2.3 \x00 ", "1.2.3") is True
    assert one(impl, "UI", " 1.2.3", "1.2.3") is False


# --------------------------------------------------------------------------- exact, case


def test_single_value_is_exact_and_case_sensitive(impl: types.ModuleType) -> None:
    assert one(impl, "LO", "555123", "555123") is True
    assert one(impl, "LO", "555123", "5551234") is False
    assert one(impl, "LO", "55512", "555123") is False
    assert one(impl, "CS", "us", "US") is False
    assert one(impl, "SH", "Eb1", "EB1") is False


def test_pn_is_case_insensitive_by_casefold(impl: types.ModuleType) -> None:
    assert one(impl, "PN", "doe^jane", "DOE^JANE") is True
    assert one(impl, "PN", "DOE^JANE", "doe^Jane") is True
    assert one(impl, "PN", "STRASSE^ERIK", "Straße^Erik") is True
    assert one(impl, "PN", "straße", "STRASSE") is True
    assert one(impl, "PN", "ΣΊΣΥΦΟΣ", "σίσυφος") is True
    assert one(impl, "PN", "DOE^JANE", "DOE^JOHN") is False


def test_pn_is_not_accent_insensitive(impl: types.ModuleType) -> None:
    assert one(impl, "PN", "MULLER", "MÜLLER") is False
    assert one(impl, "PN", "müller", "MÜLLER") is True


def test_pn_trailing_empty_components_ignored(impl: types.ModuleType) -> None:
    assert one(impl, "PN", "DOE^JANE^^", "DOE^JANE") is True
    assert one(impl, "PN", "DOE^JANE", "DOE^JANE^^^ ") is True
    assert one(impl, "PN", "DOE^JANE*^^", "DOE^JANEY^^") is True
    assert one(impl, "PN", "DOE^JANE^^", "DOE^JANE^Q") is False
    assert one(impl, "PN", "DOE", "DOE^JANE") is False


def test_pn_groups_are_literal(impl: types.ModuleType) -> None:
    assert one(impl, "PN", "DOE^JANE", "DOE^JANE=ドウ^ジェーン") is False
    assert one(impl, "PN", "DOE^JANE=*", "DOE^JANE=ドウ^ジェーン") is True


def test_non_ascii_exact(impl: types.ModuleType) -> None:
    assert one(impl, "LO", "Zoë", "Zoë") is True
    assert one(impl, "LO", "Zoe", "Zoë") is False
    assert one(impl, "LO", "李", "李") is True
    assert one(impl, "LO", "a😀", "a😀") is True
    assert one(impl, "LO", "a", "a😀") is False


# --------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    "key,stored,expected",
    [
        ("SMI*", "SMITH^JOHN", True),
        ("SMI*", "SMI", True),
        ("SMI*", "XSMITH", False),
        ("*TH", "SMITH", True),
        ("*TH", "SMITHS", False),
        ("S*H", "SMITH", True),
        ("S*H", "SH", True),
        ("S*H", "S", False),
        ("SM?TH", "SMITH", True),
        ("SM?TH", "SMTH", False),
        ("SM?TH", "SMIITH", False),
        ("??", "AB", True),
        ("??", "A", False),
        ("*?", "A", True),
        ("*A*B*", "xxAyyBzz", True),
        ("*A*B*", "xxByyAzz", False),
        ("A**B", "AB", True),
        ("*", "x", True),
        ("?", "é", True),
        ("?", "😀", True),
        ("a?c", "a\nc", True),
    ],
)
def test_wildcards(impl: types.ModuleType, key: str, stored: str, expected: bool) -> None:
    assert one(impl, "LO", key, stored) is expected


def test_wildcards_case_sensitive_except_pn(impl: types.ModuleType) -> None:
    assert one(impl, "LO", "smi*", "SMITH") is False
    assert one(impl, "PN", "smi*", "SMITH^JOHN") is True
    assert one(impl, "PN", "SMI*", "smith^john") is True
    assert one(impl, "PN", "stra?e", "STRASSE") is False  # ? is one char of the folded "strasse"
    assert one(impl, "PN", "stra??e", "Straße") is True


def test_no_wildcards_for_ui(impl: types.ModuleType) -> None:
    assert one(impl, "UI", "1.2.*", "1.2.3") is False
    assert one(impl, "UI", "1.2.?", "1.2.3") is False
    assert one(impl, "UI", "1.2.?", "1.2.?") is True


# --------------------------------------------------------------------------- lists


def test_uid_list(impl: types.ModuleType) -> None:
    assert one(impl, "UI", "1.2.3\\1.2.4", "1.2.4") is True
    assert one(impl, "UI", "1.2.3\\1.2.4", "1.2.3") is True
    assert one(impl, "UI", "1.2.3\\1.2.4", "1.2") is False
    assert one(impl, "UI", "1.2.3 \\1.2.4\x00", "1.2.4") is True
    assert one(impl, "UI", "\\1.2.3\\", "1.2.3") is True
    assert impl.compile_query([("X", "UI", "\\"), ("Y", "UI", " \\ \x00")]).paths == ()


def test_long_uid_list(impl: types.ModuleType) -> None:
    uids = [f"1.2.840.99.{i}" for i in range(50)]
    q = impl.compile_query([("X", "UI", "\\".join(uids))])
    stored = ["1.2.840.99.49", "1.2.840.99.50", "1.2.840.99.0"]
    assert impl.filter_items(q, [{"X": u} for u in stored]) == [0, 2]
    assert impl.match(q, {"X": "9.9\\1.2.840.99.7 "}) is True


def test_long_pn_list_is_case_insensitive(impl: types.ModuleType) -> None:
    names = [f"NAME{i}^X" for i in range(20)]
    q = impl.compile_query([("X", "PN", "\\".join(names))])
    assert impl.match(q, {"X": "name7^x^^"}) is True
    assert impl.match(q, {"X": "nàme7^x"}) is False
    assert impl.match(q, {"X": "Other\\Name19^X"}) is True


def test_string_key_list_is_or(impl: types.ModuleType) -> None:
    assert one(impl, "CS", "CT\\US", "US") is True
    assert one(impl, "CS", "CT\\US", "MR") is False
    assert one(impl, "CS", "CT\\U*", "US") is True
    assert one(impl, "CS", " CT \\ US ", "US") is True
    # `*` in a list matches any non-empty value; only a whole key of `*` is universal
    assert impl.compile_query([("X", "CS", "CT\\*")]).paths == ("X",)
    assert one(impl, "CS", "CT\\*", "MR") is True
    assert one(impl, "CS", "CT\\*", "") is False


def test_multi_valued_stored_matches_any_value(impl: types.ModuleType) -> None:
    assert one(impl, "AE", "US2", "US1\\US2") is True
    assert one(impl, "AE", "US2", "US1\\ US2 ") is True
    assert one(impl, "AE", "US3", "US1\\US2") is False
    assert one(impl, "AE", "US*", "CT1\\US2") is True
    assert one(impl, "AE", "US1\\US2", "US1\\US2") is True
    assert one(impl, "LO", "*\\*", "\\") is False  # every stored part is empty
    assert one(impl, "DA", "20260101", "20251231\\20260101") is True
    assert one(impl, "UI", "1.2", "1.1\\1.2") is True


# --------------------------------------------------------------------------- DA


@pytest.mark.parametrize(
    "key,stored,expected",
    [
        ("20261128", "20261128", True),
        ("20261128", "20261127", False),
        ("20261128-20261128", "20261128", True),
        ("20261101-20261130", "20261101", True),
        ("20261101-20261130", "20261130", True),
        ("20261101-20261130", "20261201", False),
        ("20261101-20261130", "20261031", False),
        ("-20261130", "19000101", True),
        ("-20261130", "20261201", False),
        ("20261101-", "29991231", True),
        ("20261101-", "20261031", False),
        ("20261130-20261101", "20261115", False),  # reversed: nothing
        ("20261128  ", "20261128 ", True),
        ("20261128", "2026112", False),
        ("20261128", "2026-11-28", False),
        ("20261128", "202611280", False),
        ("-20261130", "2026113x", False),
        ("20260230", "20260230", True),  # DA is shape-only: no calendar check
    ],
)
def test_da(impl: types.ModuleType, key: str, stored: str, expected: bool) -> None:
    assert one(impl, "DA", key, stored) is expected


@pytest.mark.parametrize(
    "key",
    [
        "-",
        "2026112",
        "202611280",
        "2026-11-28",
        "20261128-20261129-",
        "--20261128",
        "x0261128",
        " 20261128",
        "20261128\\20261129",
        "*",
        "2026112?",
        "20261128--",
        "-20261128-",
        "٢٠٢٦١١٢٨",
        "２０２６１１２８",
    ],
)
def test_da_malformed(impl: types.ModuleType, key: str) -> None:
    message = query_error(impl, [("PatientBirthDate", "DA", key)])
    assert message == f"PatientBirthDate: {DA_RULE}"


# --------------------------------------------------------------------------- TM


@pytest.mark.parametrize(
    "key,stored,expected",
    [
        ("10", "100000", True),
        ("10", "105959.999999", True),
        ("10", "10", True),
        ("10", "1059", True),
        ("10", "110000", False),
        ("10", "095959.999999", False),
        ("1015", "101500", True),
        ("1015", "101559.999999", True),
        ("1015", "101600", False),
        ("101500", "101500.9", True),
        ("101500", "101501", False),
        ("101500.5", "101500.59", True),
        ("101500.5", "101500.6", False),
        ("101500.5", "101500", False),
        ("10:15", "101530", True),
        ("10:15:30", "101530", True),
        ("1015", "10:15:30", True),
        ("10-11", "115959.999999", True),
        ("10-11", "120000", False),
        ("10-11", "095959", False),
        ("1015-", "101500", True),
        ("1015-", "101459.999999", False),
        ("-1015", "101559.999999", True),
        ("-1015", "1016", False),
        ("101500-101500", "101500.999999", True),
        ("1200-1100", "1130", False),  # no wrap over midnight
        ("2300-", "235959", True),
        ("10", "1", False),
        ("10", "10:", False),
        ("10", "10.5", False),
        ("10", "2500", False),
        ("10", "1060", False),
        ("10", "101500.", False),
        ("10", "101500.1234567", False),
        ("10", "100060", True),  # leap second: zero-padded stored value inside the key hour
        ("10-10", "105960", False),  # upper bound pads seconds with 59
    ],
)
def test_tm(impl: types.ModuleType, key: str, stored: str, expected: bool) -> None:
    assert one(impl, "TM", key, stored) is expected


@pytest.mark.parametrize(
    "key",
    [
        "-",
        "1",
        "101",
        "10150",
        "1015001",
        "101500.",
        "101500.1234567",
        "10.5",
        "1015.5",
        "24",
        "2400",
        "1060",
        "106000",
        "101561",
        ":10",
        "10:",
        "10::15",
        "1015:",
        "10-11-12",
        "10--11",
        "aa",
        "10\\11",
        "1٠",
        "*",
    ],
)
def test_tm_malformed(impl: types.ModuleType, key: str) -> None:
    message = query_error(impl, [(SPS + "ScheduledProcedureStepStartTime", "TM", key)])
    assert message == f"{SPS}ScheduledProcedureStepStartTime: {TM_RULE}"


# --------------------------------------------------------------------------- DT


@pytest.mark.parametrize(
    "key,stored,expected",
    [
        ("2026", "20261231235959.999999", True),
        ("2026", "2026", True),
        ("2026", "2027", False),
        ("202611", "20261130", True),
        ("202611", "20261201", False),
        ("20261128", "2026112810", True),
        ("2026112810", "20261128105959", True),
        ("2026112810", "20261128110000", False),
        ("20261128101500.5", "20261128101500.5999", True),
        ("20261128101500.5", "20261128101500.6", False),
        ("20260101-20261231", "20260615", True),
        ("20260101-20261231", "20270101", False),
        ("2026-2027", "20271231", True),  # -2027 is no valid offset: a range
        ("2026-2027", "2028", False),
        ("-2026", "2026", True),
        ("-2026", "2027", False),
        ("2026-", "99991231", True),
        ("2026-", "2025", False),
        ("202602", "20260228235959.999999", True),  # upper bound: last day of the month
        ("202402", "20240229", True),
        ("202602-202602", "20260228", True),
        ("2026", "20260229", False),  # not a date: never matches
        ("2026", "2026x", False),
        ("2026", "202613", False),
        ("2026", "20261128+", False),
        ("2026", "20261128+1500", False),
        ("2026", "2026-0500", True),  # no offset on the key: local digits
        # both carry offsets: compared in UTC
        ("20261128100000+0000", "20261128110000+0100", True),
        ("20261128100000+0000", "20261128100000+0100", False),
        ("20261128100000-0500", "20261128150000+0000", True),
        ("20261128-0500", "20261129045959.999999+0000", True),
        ("20261128-0500", "20261129050000+0000", False),
        ("20261128-0500", "20261128040000+0000", False),
        ("20261128-0500", "20261128040000", True),  # stored has no offset: local digits
        ("20261128100000+0100-20261128120000+0100", "20261128100000+0000", True),
        ("20261128100000+0100-20261128120000+0100", "20261128110001+0000", False),
        ("20261128100000+0100-20261128120000", "20261128120000+0000", True),  # upper: local
        ("2026-0500-2027-0500", "20280101045959+0000", True),
        ("2026-0500-2027-0500", "20280101050000+0000", False),
        ("2026-0500-", "20260101045959+0000", False),
        ("2026-0500-", "20260101050000+0000", True),
    ],
)
def test_dt(impl: types.ModuleType, key: str, stored: str, expected: bool) -> None:
    assert one(impl, "DT", key, stored) is expected


@pytest.mark.parametrize(
    "key",
    [
        "-",
        "202",
        "20261",
        "2026112",
        "202613",
        "20260229",
        "20261128240000",
        "202611281060",
        "20261128106000",
        "20261128101561",
        "20261128101500.",
        "2026112810150.5",
        "20261128101500.1234567",
        "2026+1500",
        "2026+0560",
        "2026+050",
        "2026+05000",
        "2026--2027",
        "2026-2027-2028",
        "2026-0500-0500-",
        "2026-0500x",
        "-",
        "--",
        "2026\\2027",
        "*",
        "2026 -2027",
        "x",
    ],
)
def test_dt_malformed(impl: types.ModuleType, key: str) -> None:
    assert query_error(impl, [("X", "DT", key)]) == f"X: {DT_RULE}"


def test_dt_offset_versus_range(impl: types.ModuleType) -> None:
    # "2026-0500": the year 2026 at UTC-05:00, a single value
    assert one(impl, "DT", "2026-0500", "20261231") is True
    assert one(impl, "DT", "2026-0500", "0500") is False
    # "2026-1459": the largest offset that is still an offset
    assert one(impl, "DT", "2026-1459", "20260101") is True
    assert one(impl, "DT", "2026-1500", "20260101") is False  # a range of years 2026..1500


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("vr", ["SQ", "DS", "IS", "AS", "US", "FD", "OB", "pn", "", "XX"])
def test_unmatchable_vr(impl: types.ModuleType, vr: str) -> None:
    message = query_error(impl, [("PatientWeight", vr, "70")])
    assert message == f"PatientWeight: cannot match VR {vr}"


def test_first_bad_key_is_reported(impl: types.ModuleType) -> None:
    message = query_error(impl, [("A", "DA", "x"), ("B", "TM", "x")])
    assert message == f"A: {DA_RULE}"


@pytest.mark.parametrize(
    "vr,key",
    [("DA", "SECRET12"), ("TM", "SECRET"), ("DT", "SECRET"), ("SQ", "SECRET"), ("FL", "SECRET")],
)
def test_error_messages_never_carry_the_value(impl: types.ModuleType, vr: str, key: str) -> None:
    assert "SECRET" not in query_error(impl, [("P", vr, key)])


@pytest.mark.parametrize("keys", [[("X", "LO")], [["X", "LO", "a"]], [("X", "LO", 1)], [(None, "LO", "a")], ["XLO"]])
def test_bad_key_tuples(impl: types.ModuleType, keys: list) -> None:
    with pytest.raises(TypeError, match="keys must be"):
        impl.compile_query(keys)


def test_non_str_stored_value(impl: types.ModuleType) -> None:
    q = impl.compile_query([("X", "LO", "1")])
    with pytest.raises(TypeError, match="X: stored value must be str"):
        impl.match(q, {"X": 1})
    # an untested path may hold anything
    assert impl.match(q, {"X": "1", "Y": 2}) is True


def test_compiled_query_is_opaque_per_implementation() -> None:
    fast = _fast_module()
    with pytest.raises(TypeError):
        fast.match(_match_ref.compile_query([("X", "LO", "1")]), {"X": "1"})
    with pytest.raises(TypeError):
        fast.CompiledQuery()


# --------------------------------------------------------------------------- selector


def test_selector_uses_the_compiled_matcher_unless_disabled() -> None:
    expected = "ref" if NO_EXTENSIONS else "fast"
    assert match_selector.IMPLEMENTATION == expected
    module = _match_ref if NO_EXTENSIONS else _fast_module()
    for name in ("compile_query", "match", "filter_items", "CompiledQuery"):
        assert getattr(match_selector, name) is getattr(module, name)


def test_selector_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("EBW_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "ebw._fast.cfind", None)  # import -> ImportError
    with caplog.at_level(logging.WARNING, logger="ebw.dicom.match"):
        module = fresh_copy(match_selector)
    assert module.IMPLEMENTATION == "ref"
    assert module.match is _match_ref.match
    warnings = [r for r in caplog.records if r.name == "ebw.dicom.match"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_selector_env_var_picks_reference_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EBW_NO_EXTENSIONS", "1")
    with caplog.at_level(logging.DEBUG, logger="ebw.dicom.match"):
        module = fresh_copy(match_selector)
    assert module.IMPLEMENTATION == "ref"
    assert module.compile_query is _match_ref.compile_query
    assert not [r for r in caplog.records if r.name == "ebw.dicom.match"]
