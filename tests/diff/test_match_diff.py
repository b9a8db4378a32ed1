"""Reference and Cython C-FIND matchers agree: same ``paths``, same bools from
``match`` and ``filter_items``, or the same QueryError message, on generated keys
(wildcards, date/time ranges open and closed and malformed, universal keys, UID
lists, PN case, padding, non-ASCII) and items.

Some properties also check the reference against an independent oracle
(``re.fullmatch`` for wildcards, truncation for TM, ``datetime`` for DT with
offsets), so agreement is not agreement on a wrong answer.  Failures hypothesis
finds are kept below as ``@example``s.
"""

from __future__ import annotations

import functools
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ebw.dicom import _match_ref as ref
from ebw.errors import QueryError

if os.environ.get("EBW_NO_EXTENSIONS") == "1":
    fast = pytest.importorskip("ebw._fast.cfind")
else:
    from ebw._fast import cfind as fast  # not built = failure, never a silent skip

EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

STRING_VRS = ["AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"]
ALL_VRS = STRING_VRS + ["UI", "DA", "TM", "DT", "SQ", "DS", "XX"]
PATHS = ["A", "B", "S.C"]

# Characters that matter to the rules, plus non-ASCII ones whose casefold is odd
# (ß -> ss, İ -> i̇, ﬃ -> ffi, Kelvin sign -> k, final sigma), NUL, newline, astral.
SPECIAL = "*?\\^ -+.:=\x00"
NON_ASCII = "éÉßẞİıΣσςﬃ\u212aſ李😀ÿ"
TEXT = "AaBbSsKk019" + SPECIAL + NON_ASCII


# --------------------------------------------------------------------------- comparing


def outcome(module: Any, keys: list[tuple[str, str, str]], items: list[dict[str, str]]) -> Any:
    try:
        q = module.compile_query(keys)
    except QueryError as err:
        return ("QueryError", str(err))
    return ("ok", q.paths, [module.match(q, item) for item in items], module.filter_items(q, items))


def assert_agree(keys: list[tuple[str, str, str]], items: list[dict[str, str]]) -> Any:
    expected = outcome(ref, keys, items)
    got = outcome(fast, keys, items)
    assert got == expected
    if expected[0] == "ok":
        assert expected[3] == [i for i, ok in enumerate(expected[2]) if ok]
    return expected


def single(module: Any, vr: str, key: str, stored: str) -> bool:
    return module.match(module.compile_query([("X", vr, key)]), {"X": stored})


# --------------------------------------------------------------------------- strategies

text = st.text(alphabet=TEXT, max_size=10)
pads = st.sampled_from(["", " ", "  ", "\x00", " \x00"])

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def padded(draw: st.DrawFn, core: st.SearchStrategy[str]) -> str:
    return draw(st.sampled_from(["", "", " "])) + draw(core) + draw(pads)


@functools.cache
def two_digits(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda n: f"{n:02d}")


# DA: mostly 8 digits from a small range of dates so ranges and values collide
_DA_NEAR = st.builds(
    lambda y, m, d: f"{y}{m}{d}",
    st.sampled_from(["2025", "2026"]),
    st.sampled_from(["01", "06", "12"]),
    st.sampled_from(["01", "15", "31"]),
)
da_values = st.one_of(
    _DA_NEAR,
    _DA_NEAR,
    _DA_NEAR,
    st.builds(lambda y, m, d: f"{y}{m}{d}", st.sampled_from(["2025", "2026"]), two_digits(0, 13), two_digits(0, 32)),
    st.text(alphabet="0123456789-x ", max_size=10),
)


DA_FORMS = st.sampled_from(["{a}", "{a}", "{a}-{b}", "{a}-{b}", "-{b}", "{a}-", "{a}-{a}", "-", "{a}\\{b}", "{a}--{b}"])
TM_FORMS = st.sampled_from(["{a}", "{a}", "{a}-{b}", "-{b}", "{a}-", "{a}-{a}", "-", "{a}-{b}-"])
DT_FORMS = st.sampled_from(["{a}", "{a}", "{a}-{b}", "{a}-{b}", "-{b}", "{a}-", "{a}-{a}", "-", "{a}--{b}"])
KEY_ATOMS = st.sampled_from(["*", "?", "S", "s", "MI", "mi", "ß", "SS", "^", "\\", " ", "é", "É", "İ", "i", "ﬃ", "FFI"])
PN_ATOMS = st.sampled_from(["DOE", "Jane", "ß", "STRASSE", "Σίσυφος", "İ", "ﬃ", "^", "K", "\u212a"])


@st.composite
def da_keys(draw: st.DrawFn) -> str:
    a, b = draw(da_values), draw(da_values)
    form = draw(DA_FORMS)
    return form.format(a=a, b=b) + draw(st.sampled_from(["", " "]))


FRACTIONS = {n: st.text(alphabet="0123456789", min_size=1, max_size=n) for n in (6, 7)}
TM_JUNK = st.text(alphabet="0123456789:.-", max_size=14)
DT_JUNK = st.text(alphabet="0123456789+-.", max_size=24)
COLONS = st.sampled_from(["", "", ":"])
TM_NEAR_HH = st.sampled_from(["09", "10", "11"])
TM_NEAR_MS = st.sampled_from(["00", "15", "59"])
TM_NEAR_FRAC = st.sampled_from(["0", "5", "999999", "000001"])
DT_NEAR = [  # month, day, hour, minute, second
    st.sampled_from(v) for v in (["01", "06", "12"], ["01", "15", "28"], ["00", "10", "23"], ["00", "59"], ["00", "59"])
]


@st.composite
def tm_values(draw: st.DrawFn, valid: bool = False) -> str:
    if not valid and draw(st.integers(0, 5)) == 0:
        return draw(TM_JUNK)
    near = draw(st.integers(0, 2)) > 0
    if near:
        fields = [TM_NEAR_HH, TM_NEAR_MS, TM_NEAR_MS, TM_NEAR_FRAC]
    else:
        wide = two_digits(0, 59) if valid else two_digits(0, 61)
        hours = two_digits(0, 23) if valid else two_digits(0, 25)
        fields = [hours, wide, wide, FRACTIONS[6 if valid else 7]]
    parts = [draw(fields[0])]
    n = draw(st.integers(0, 3))
    colon = draw(COLONS)
    if n >= 1:
        parts.append(colon + draw(fields[1]))
    if n >= 2:
        parts.append(colon + draw(fields[2]))
    if n >= 3:
        parts.append("." + draw(fields[3]))
    return "".join(parts)


@st.composite
def tm_keys(draw: st.DrawFn) -> str:
    a, b = draw(tm_values()), draw(tm_values())
    form = draw(TM_FORMS)
    return form.format(a=a, b=b)


OFFSETS = [
    "",
    "",
    "",
    "+0000",
    "-0500",
    "+0100",
    "+1400",
    "-1200",
    "-1459",  # valid ones first
    "+1500",
    "-2027",
    "+0560",
    "-05",
]
VALID_OFFSETS = st.sampled_from(OFFSETS[:9])
ANY_OFFSETS = st.sampled_from(OFFSETS)
YEARS = st.sampled_from(["2025", "2026", "2026", "2024", "0000", "9999"])


@st.composite
def dt_values(draw: st.DrawFn, valid: bool = False) -> str:
    if not valid and draw(st.integers(0, 6)) == 0:
        return draw(DT_JUNK)
    y = draw(YEARS)
    fields = (
        DT_NEAR
        if draw(st.integers(0, 2))
        else [
            two_digits(1, 12) if valid else two_digits(0, 13),
            two_digits(1, 28) if valid else two_digits(0, 32),
            two_digits(0, 23) if valid else two_digits(0, 24),
            two_digits(0, 59) if valid else two_digits(0, 60),
            two_digits(0, 59) if valid else two_digits(0, 61),
        ]
    )
    n = draw(st.integers(0, 5))
    value = y + "".join(draw(f) for f in fields[:n])
    if n == 5 and draw(st.booleans()):
        value += "." + draw(FRACTIONS[6 if valid else 7])
    return value + draw(VALID_OFFSETS if valid else ANY_OFFSETS)


@st.composite
def dt_keys(draw: st.DrawFn) -> str:
    a, b = draw(dt_values()), draw(dt_values())
    form = draw(DT_FORMS)
    return form.format(a=a, b=b)


UIDS = ["1.2.3", "1.2.30", "1.2.840.10008.1.2", "1.2.3.4.5.6.7.8.9", "2.25.1"]


@st.composite
def ui_keys(draw: st.DrawFn) -> str:
    uids = draw(st.lists(st.sampled_from(UIDS + ["", "*", "1.2.?"]), min_size=0, max_size=12))
    return "\\".join(u + draw(pads) for u in uids)


@st.composite
def string_keys(draw: st.DrawFn) -> str:
    """Wildcards, lists, padding, non-ASCII; biased to short alphabets so they match."""
    return "".join(draw(st.lists(KEY_ATOMS, max_size=6)))


STORED_ATOMS = st.sampled_from(["S", "s", "MI", "mi", "ß", "SS", "^", "\\", " ", "é", "É", "İ", "i̇", "ﬃ", "ffi", "x"])
stored_strings = st.one_of(text, st.lists(STORED_ATOMS, max_size=6).map("".join))


UNIVERSALISH = st.sampled_from(["", " ", "*", "**", " * ", "^^", "\\", "*^"])


def _key_strategy(vr: str) -> st.SearchStrategy[str]:
    if vr == "DA":
        core = da_keys()
    elif vr == "TM":
        core = tm_keys()
    elif vr == "DT":
        core = dt_keys()
    elif vr == "UI":
        core = ui_keys()
    elif vr in STRING_VRS:
        core = st.one_of(string_keys(), padded(text))
    else:
        core = text
    return st.one_of(UNIVERSALISH, core, core, core, core)


def _stored_strategy(vr: str) -> st.SearchStrategy[str]:
    if vr == "DA":
        core = da_values
    elif vr == "TM":
        core = tm_values()
    elif vr == "DT":
        core = dt_values()
    elif vr == "UI":
        core = st.sampled_from(UIDS + ["", "*"])
    else:
        core = stored_strings
    part = st.one_of(core, core, core, padded(core)) if vr in ("DA", "TM", "DT") else padded(core)
    return st.lists(part, min_size=1, max_size=3).map("\\".join)


# built once: strategies made inside draws are slow
_KEYS = {vr: _key_strategy(vr) for vr in ALL_VRS}
_STORED = {vr: _stored_strategy(vr) for vr in ALL_VRS}


def key_for(vr: str) -> st.SearchStrategy[str]:
    return _KEYS[vr]


def stored_for(vr: str) -> st.SearchStrategy[str]:
    return _STORED[vr]


@st.composite
def queries(draw: st.DrawFn) -> tuple[list[tuple[str, str, str]], list[dict[str, str]]]:
    keys = []
    vrs = {}
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        vr = vrs.setdefault(path, draw(st.sampled_from(ALL_VRS)))
        keys.append((path, vr, draw(key_for(vr))))
    # stored values near the keys: the key values and their range bounds
    near = {path: sorted({v for p, _vr, k in keys if p == path for v in [k, *k.split("-")] if v}) for path in vrs}
    items = []
    for _ in range(draw(st.integers(0, 5))):
        item = {}
        for path, vr in vrs.items():
            if draw(st.integers(0, 5)):
                if near[path] and draw(st.booleans()):
                    item[path] = draw(st.sampled_from(near[path]))
                else:
                    item[path] = draw(stored_for(vr))
        items.append(item)
    return keys, items


# --------------------------------------------------------------------------- agreement


@EXAMPLES
@given(queries())
@example(q=([("A", "PN", "ß*")], [{"A": "SSx"}, {"A": "ssa^"}, {"A": "ẞ"}]))
@example(q=([("A", "PN", "İ?")], [{"A": "i̇"}, {"A": "İ"}, {"A": "i"}]))
@example(q=([("A", "LO", "*\\?")], [{"A": "\\"}, {"A": " \\x"}]))
@example(q=([("A", "DT", "2026-2027")], [{"A": "2027"}, {"A": "2026-2027"}]))
@example(q=([("A", "DS", "*")], [{}]))
def test_agree_on_generated_queries(q: tuple[list[tuple[str, str, str]], list[dict]]) -> None:
    assert_agree(*q)


@EXAMPLES
@given(
    st.sampled_from(ALL_VRS + ["pn", "", "SQ"]),
    st.text(max_size=12),
    st.lists(st.text(max_size=12), max_size=4),
)
def test_agree_on_arbitrary_text(vr: str, key: str, stored: list[str]) -> None:
    assert_agree([("P", vr, key)], [{"P": s} for s in stored] + [{}])


EXTRA_PRECISION = st.sampled_from(["", "", "", "00", "59", "0000", "5959", "00.5", ".5", "-0500", "+0100"])


@st.composite
def key_and_stored(draw: st.DrawFn, keys: st.SearchStrategy[str], vr: str) -> tuple[str, list[str]]:
    """A key and stored values, half of them a bound of the key with more digits."""
    key = draw(keys)
    bounds = sorted({b for b in [key, *key.split("-")] if b})
    stored = []
    for _ in range(draw(st.integers(0, 6))):
        if bounds and draw(st.booleans()):
            stored.append(draw(st.sampled_from(bounds)) + draw(EXTRA_PRECISION))
        else:
            stored.append(draw(stored_for(vr)))
    return key, stored


@EXAMPLES
@given(key_and_stored(da_keys(), "DA"))
@example(case=("20260101-", ["20260101 ", " 20260101", "20260101\x00"]))
def test_agree_on_da(case: tuple[str, list[str]]) -> None:
    key, stored = case
    assert_agree([("D", "DA", key)], [{"D": s} for s in stored])


@EXAMPLES
@given(key_and_stored(tm_keys(), "TM"))
@example(case=("10", ["105960", "1060", "10:59:60.5"]))
def test_agree_on_tm(case: tuple[str, list[str]]) -> None:
    key, stored = case
    assert_agree([("T", "TM", key)], [{"T": s} for s in stored])


@EXAMPLES
@given(key_and_stored(dt_keys(), "DT"))
@example(case=("2026-0500-0500", ["0500", "2026"]))
@example(case=("0000-", ["00000101", "0000-0500"]))
@example(case=("202402-1459", ["20240229235959.999999+0000", "20240301"]))
def test_agree_on_dt(case: tuple[str, list[str]]) -> None:
    key, stored = case
    assert_agree([("T", "DT", key)], [{"T": s} for s in stored])


@EXAMPLES
@given(ui_keys(), st.lists(stored_for("UI"), max_size=6))
def test_agree_on_uid_lists(key: str, stored: list[str]) -> None:
    assert_agree([("U", "UI", key)], [{"U": s} for s in stored])


@EXAMPLES
@given(
    st.lists(st.sampled_from(UIDS + [f"1.2.9.{i}" for i in range(20)]), min_size=9, max_size=25),
    st.lists(stored_for("UI"), max_size=6),
    st.sampled_from(["UI", "LO", "PN"]),
)
def test_agree_on_long_lists(values: list[str], stored: list[str], vr: str) -> None:
    if vr == "PN":
        values = [v.upper() for v in values]
        stored = [s.upper() if i % 2 else s for i, s in enumerate(stored)]
    assert_agree([("U", vr, "\\".join(values))], [{"U": s} for s in stored])


@st.composite
def pn_cases(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A PN key and stored names made from it by case changes, padding and edits."""
    base = "".join(draw(st.lists(PN_ATOMS, min_size=1, max_size=4)))
    stored = []
    for _ in range(draw(st.integers(1, 5))):
        variants = [base, base.upper(), base.lower(), base.swapcase(), base.casefold()]
        s = draw(st.sampled_from(variants))
        s += draw(st.sampled_from(["", "^", "^^ ", " ", "x"]))
        stored.append(s)
    key = base
    if draw(st.booleans()):
        i = draw(st.integers(0, len(key)))
        key = key[:i] + draw(st.sampled_from(["*", "?", "??", "*^*"])) + key[i + 1 :]
    key += draw(st.sampled_from(["", "^^", " "]))
    return key, stored


@EXAMPLES
@given(pn_cases())
@example(case=("STRASSE", ["straße", "Straße^^"]))
@example(case=("\u212a*", ["k", "K"]))
def test_agree_on_pn_case(case: tuple[str, list[str]]) -> None:
    key, stored = case
    assert_agree([("N", "PN", key)], [{"N": s} for s in stored])


# --------------------------------------------------------------------------- oracles

WILD_ALPHABET = "ab*?" + "Aß\n😀"
SUBJECT_ALPHABET = "abAB" + "ßs\n😀^*?"


def to_regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


@EXAMPLES
@given(
    st.text(alphabet=WILD_ALPHABET, min_size=1, max_size=8),
    st.text(alphabet=SUBJECT_ALPHABET, min_size=1, max_size=10),
    st.sampled_from(["LO", "LT", "PN"]),
)
@example(pattern="a*a*a*b", subject="aaaaaaaaab", vr="LO")
@example(pattern="*?", subject="\n", vr="LT")
@example(pattern="?", subject="ß", vr="PN")  # folds to "ss": two characters
@example(pattern="a*", subject="A^^", vr="PN")
def test_wildcards_agree_with_re_fullmatch(pattern: str, subject: str, vr: str) -> None:
    assume("*" in pattern or "?" in pattern)
    assume(pattern.strip("*") != "")  # a whole key of '*' is universal
    if vr == "PN":
        pat = pattern.rstrip("^").casefold()
        subj = subject.rstrip("^").casefold()
        assume(pat.strip("*") != "" and subj != "")
        expected = re.fullmatch(to_regex(pat), subj, re.DOTALL) is not None
        # IGNORECASE-equivalent for the simple (one-to-one) case folds
        if all(len(c.casefold()) == 1 for c in pattern + subject):
            assert expected == (
                re.fullmatch(to_regex(pattern.rstrip("^")), subject.rstrip("^"), re.DOTALL | re.IGNORECASE) is not None
            )
    else:
        expected = re.fullmatch(to_regex(pattern), subject, re.DOTALL) is not None
    assert single(ref, vr, pattern, subject) is expected
    assert single(fast, vr, pattern, subject) is expected


@EXAMPLES
@given(tm_values(valid=True), tm_values(valid=True))
@example(key="10", stored="105959.999999")
@example(key="10:15", stored="1015")
def test_tm_single_value_is_truncation(key: str, stored: str) -> None:
    k = key.replace(":", "").replace(".", "")
    s = stored.replace(":", "").replace(".", "").ljust(12, "0")
    expected = s[: len(k)] == k
    assert single(ref, "TM", key, stored) is expected
    assert single(fast, "TM", key, stored) is expected


def aware(value: str, upper: bool = False) -> tuple[datetime, bool]:
    """A full-precision DT (14 digits, optional fraction/offset) as a datetime;
    ``upper``: the last microsecond the value's precision covers."""
    m = re.fullmatch(r"(\d{14})(?:\.(\d{1,6}))?(?:([+-])(\d\d)(\d\d))?", value)
    assert m is not None
    frac = m.group(2) or ""
    micro = int(frac.ljust(6, "9" if upper else "0"))
    dt = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(microsecond=micro)
    if m.group(3):
        minutes = int(m.group(4)) * 60 + int(m.group(5))
        offset = timedelta(minutes=-minutes if m.group(3) == "-" else minutes)
        return dt.replace(tzinfo=timezone(offset)), True
    return dt, False


full_dt = st.builds(
    lambda y, mo, d, h, mi, s, frac, off: f"{y}{mo}{d}{h}{mi}{s}{frac}{off}",
    st.sampled_from(["2025", "2026"]),
    two_digits(1, 12),
    two_digits(1, 28),
    two_digits(0, 23),
    two_digits(0, 59),
    two_digits(0, 59),
    st.sampled_from(["", ".5", ".123456"]),
    st.sampled_from(["", "+0000", "-0500", "+0100", "+1400", "-1200"]),
)


@EXAMPLES
@given(full_dt, full_dt, full_dt)
@example(low="20260101000000-0500", high="20260101000000+0000", stored="20260101050000+0000")
def test_dt_ranges_agree_with_datetime(low: str, high: str, stored: str) -> None:
    lo, lo_off = aware(low)
    hi, hi_off = aware(high, upper=True)
    s, s_off = aware(stored)

    def at_least(bound: datetime, bound_off: bool) -> bool:
        if bound_off and s_off:
            return s >= bound
        return s.replace(tzinfo=None) >= bound.replace(tzinfo=None)

    def at_most(bound: datetime, bound_off: bool) -> bool:
        if bound_off and s_off:
            return s <= bound
        return s.replace(tzinfo=None) <= bound.replace(tzinfo=None)

    expected = at_least(lo, lo_off) and at_most(hi, hi_off)
    key = f"{low}-{high}"
    assert single(ref, "DT", key, stored) is expected
    assert single(fast, "DT", key, stored) is expected
