"""C-FIND key matching: the pure-Python reference (the specification).

``ebw._fast.cfind`` is a Cython twin of this module: same public names,
signatures, results and exception messages.  ``tests/diff`` checks that they
agree.  Use them through :mod:`ebw.dicom.match`.

API
===

``compile_query(keys) -> CompiledQuery``
    ``keys`` is a list of ``(path, vr, value)`` string triples, one per
    matching key of the C-FIND identifier (sequences already flattened into
    ``Seq.Attr`` paths, SpecificCharacterSet already dropped).  Universal keys
    are dropped.  ``CompiledQuery.paths`` is the tuple of the paths of the kept
    keys, in input order.
``match(query, item) -> bool``
    ``item`` is a ``dict[str, str]`` of attribute path -> stored DICOM string
    value.  A missing path, ``None`` or ``""`` is an empty (unknown) value.
    The item matches when every kept key matches.
``filter_items(query, items) -> list[int]``
    Indices of the matching items, in order.

Errors: :class:`ebw.errors.QueryError` (a ``ValueError``) names the attribute
path and the rule, never the key value.  ``TypeError`` for keys or stored
values that are not ``str``.

Rules
=====

Trimming ("padding trim"), by VR, for key values and stored values alike:

* every VR: trailing spaces are removed;
* AE, CS, SH, LO: leading spaces too;
* UI: trailing NULs too (the UI padding character; spaces and NULs in any
  order at the end);
* PN: after the trailing spaces, trailing ``^`` (empty trailing components),
  so ``DOE^JANE^^`` equals ``DOE^JANE``.  ``=`` component groups are compared
  literally.

1. Universal keys.  The whole key value is trimmed.  If it is empty, the key is
   universal, whatever its VR (even an unknown VR or SQ: a return key).  For
   the string VRs AE CS LO LT PN SH ST UC UR UT a trimmed value made only of
   ``*`` is universal too (for PN that includes ``*^^``).  Universal keys are
   dropped at compile time and match every item, even one with an empty value.
2. VR not one of the string VRs, UI, DA, TM, DT (including SQ) and the key is
   not universal: ``QueryError("<path>: cannot match VR <vr>")``.
3. Stored values.  The stored value is split on ``\\`` (a multi-valued
   attribute, e.g. ScheduledStationAETitle ``A\\B``) and every part is trimmed
   as above.  Empty parts are skipped.  The key matches when ANY non-empty part
   matches it.  A missing or empty stored value (or one made only of empty
   parts) therefore never matches a non-universal key.
4. UI: the key is a list of UIDs separated by ``\\``; each is trimmed and empty
   ones are dropped (a key left with no UID is universal).  A stored part
   matches when it equals one of them exactly.  ``*``/``?`` are literal.
5. String VRs: the key value may hold several values separated by ``\\``
   (PS3.4 C.2.2.2.8 leaves their meaning undefined without extended
   negotiation; EBW treats them like a UID list: OR).  Each value is trimmed,
   empty ones are dropped (none left: universal).  A value containing ``*`` or
   ``?`` is a wildcard pattern: anchored, ``*`` = any sequence (also empty),
   ``?`` = exactly one character, no escape.  Otherwise the stored part must
   equal the value exactly.  Case-sensitive, except PN.  A ``*``-only value in
   a list (``FOO\\*``) is a pattern that matches any non-empty stored part; only
   a whole key of ``*`` is universal.
6. PN: both the key values and the stored parts are trimmed (including
   trailing ``^``) and then ``str.casefold()``-ed before exact or wildcard
   comparison, so matching is case-insensitive (full Unicode case folding;
   ``ß`` == ``SS``; ``?`` matches one character of the folded form).  No
   accent folding, no component-wise matching.
7. DA (``YYYYMMDD``; exactly 8 ASCII digits, no calendar check): the key is
   ``A`` (== ``A-A``), ``A-B``, ``-B`` or ``A-`` (bounds inclusive).  Any other
   shape (wrong length, non-digits, several ``-``, a lone ``-``, ``\\``) raises
   ``QueryError("<path>: DA must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD,
   -YYYYMMDD, YYYYMMDD-")``.  A stored part that is not 8 digits never matches;
   otherwise 8-digit strings compare in order.  ``A-B`` with A > B matches
   nothing.
8. TM: a value is ``HH[[:]MM[[:]SS[.F{1,6}]]]`` (ASCII digits; the ACR-NEMA
   ``:`` is allowed only between the pairs and ignored; HH 00-23, MM 00-59,
   SS 00-60).  Every value becomes a 12-digit ``HHMMSSFFFFFF`` number: as a
   lower bound (and for stored values) missing digits are zeros; as an upper
   bound missing minutes/seconds are 59 and missing fraction digits 9
   (``10`` -> ``105959999999``).  The key is ``A`` (== ``A-A``, i.e. compared
   at the key's precision: ``10`` matches 10:00:00-10:59:59.999999), ``A-B``,
   ``-B`` or ``A-``; ranges never wrap midnight.  Anything else raises
   ``QueryError("<path>: TM must be HH[MM[SS[.F{1,6}]]] or a range A-B, -B,
   A-")``.  An unparseable stored part never matches.
9. DT: a value is ``YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]`` (ASCII digits;
   month 01-12, day 01-last day of that month, HH 00-23, MM 00-59, SS 00-60;
   the fraction only after the seconds).  ``&ZZXX`` is a UTC offset: ``+`` or
   ``-`` then exactly 4 digits with hours 00-14 and minutes 00-59.  Telling
   the offset from the range separator, scanning a value left to right: after
   the digits, a ``-`` that is followed by exactly 4 digits which form a valid
   offset and then by the end of the key or another ``-`` is an offset;
   otherwise that ``-`` is the range separator.  (So ``2026-0500`` is the year
   2026 at UTC-05:00, ``2026-2027`` is a range of years, and ``-2027`` is an
   open range: an offset needs a value in front of it.)  A ``+`` after the
   digits must start a valid offset.  The key is ``A`` (== ``A-A``), ``A-B``,
   ``-B`` or ``A-``.  Bounds: the lower bound pads missing parts with the
   minimum (month 01, day 01, 00:00:00.000000), the upper bound with the
   maximum (month 12, the last day of the month -- equivalent to ``31`` for
   valid dates --, 23:59:59.999999); a stored value pads with the minimum.
   Comparison is on the instant these digits name (proleptic Gregorian
   microseconds).  Per bound: if that bound and the stored value both carry an
   offset, both are converted to UTC first; otherwise the local digits are
   compared as given.  Anything else raises ``QueryError("<path>: DT must be
   YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][+/-HHMM] or a range A-B, -B, A-")``.  A
   stored part that does not parse as one value never matches.
10. DA, TM and DT keys are never split on ``\\``: a ``\\`` makes them malformed.
"""

from __future__ import annotations

from ebw.errors import QueryError

__all__ = ["CompiledQuery", "compile_query", "match", "filter_items"]

STRING_VRS = frozenset(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"))
LEADING_TRIM_VRS = frozenset(("AE", "CS", "SH", "LO"))
KNOWN_VRS = STRING_VRS | {"UI", "DA", "TM", "DT"}

DIGITS = "0123456789"

DA_RULE = "DA must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-"
TM_RULE = "TM must be HH[MM[SS[.F{1,6}]]] or a range A-B, -B, A-"
DT_RULE = "DT must be YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][+/-HHMM] or a range A-B, -B, A-"
KEYS_RULE = "keys must be (path, vr, value) triples of str"


# --------------------------------------------------------------------------
# trimming


def trim(vr: str, s: str) -> str:
    """The padding trim of one value for ``vr``."""
    if vr == "UI":
        return s.rstrip(" \x00")
    s = s.rstrip(" ")
    if vr in LEADING_TRIM_VRS:
        s = s.lstrip(" ")
    elif vr == "PN":
        s = s.rstrip("^")
    return s


def is_digits(s: str) -> bool:
    """True when ``s`` is non-empty and made only of ASCII digits."""
    return s != "" and all(c in DIGITS for c in s)


# --------------------------------------------------------------------------
# wildcards


def wildcard_match(pattern: str, s: str) -> bool:
    """Anchored match of ``pattern`` (``*`` any run, ``?`` one char) on ``s``.

    Greedy with backtracking to the last ``*``: equivalent to ``re.fullmatch``
    of the translated pattern with ``re.DOTALL``.
    """
    p = 0
    i = 0
    star = -1  # index in pattern of the last '*' seen
    mark = 0  # index in s where that '*' currently ends
    while i < len(s):
        if p < len(pattern) and pattern[p] == "*":
            star = p
            mark = i
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == s[i]):
            p += 1
            i += 1
        elif star >= 0:
            mark += 1
            i = mark
            p = star + 1
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


# --------------------------------------------------------------------------
# TM


def parse_tm(s: str):
    """Parse one TM value; return its digits (``HHMMSS`` + fraction, no
    separators) or ``None`` when it is malformed."""
    n = len(s)
    i = 0
    digits = ""
    for group in range(3):  # HH, MM, SS
        if group > 0:
            if i == n:
                break
            if s[i] == ":":
                i += 1
        pair = s[i : i + 2]
        if len(pair) != 2 or not is_digits(pair):
            return None
        digits += pair
        i += 2
    if len(digits) == 6 and i < n and s[i] == ".":
        frac = s[i + 1 :]
        if not (1 <= len(frac) <= 6 and is_digits(frac)):
            return None
        digits += frac
        i = n
    if i != n:
        return None
    hh = int(digits[0:2])
    if hh > 23:
        return None
    if len(digits) >= 4 and int(digits[2:4]) > 59:
        return None
    if len(digits) >= 6 and int(digits[4:6]) > 60:
        return None
    return digits


def tm_low(digits: str) -> int:
    """``HHMMSSFFFFFF`` as a number, missing digits zero."""
    return int(digits.ljust(12, "0"))


def tm_high(digits: str) -> int:
    """``HHMMSSFFFFFF`` as a number, missing parts at their maximum."""
    maximum = "235959999999"
    return int(digits + maximum[len(digits) :])


# --------------------------------------------------------------------------
# DT


def is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def day_number(y: int, m: int, d: int) -> int:
    """Days since an arbitrary fixed origin (proleptic Gregorian), y >= 0."""
    # H. Hinnant's days_from_civil, shifted by one 400-year era so that every
    # division is on a non-negative number.
    y = y + 400 - (1 if m <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe


def instant(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: int) -> int:
    """Microseconds since the fixed origin."""
    return ((day_number(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1_000_000) + frac


def is_offset_at(s: str, j: int) -> bool:
    """True when ``s[j:j+5]`` is ``+HHMM``/``-HHMM`` with a valid offset."""
    body = s[j + 1 : j + 5]
    if len(body) != 4 or not is_digits(body):
        return False
    return int(body[0:2]) <= 14 and int(body[2:4]) <= 59


def parse_dt(s: str, i: int):
    """Parse one DT value starting at ``s[i]``.

    Returns ``(low, high, offset_minutes_or_None, end_index)`` where ``low``
    and ``high`` are the instants of the value padded with the minimum and the
    maximum, or ``None`` when malformed.
    """
    n = len(s)
    j = i
    while j < n and s[j] in DIGITS:
        j += 1
    digits = s[i:j]
    if len(digits) not in (4, 6, 8, 10, 12, 14):
        return None
    frac = ""
    if len(digits) == 14 and j < n and s[j] == ".":
        k = j + 1
        while k < n and s[k] in DIGITS:
            k += 1
        frac = s[j + 1 : k]
        if not 1 <= len(frac) <= 6:
            return None
        j = k
    offset = None
    if j < n and s[j] in "+-":
        if is_offset_at(s, j) and (j + 5 == n or s[j + 5] == "-"):
            minutes = int(s[j + 1 : j + 3]) * 60 + int(s[j + 3 : j + 5])
            offset = -minutes if s[j] == "-" else minutes
            j += 5
        elif s[j] == "+":
            return None
    y = int(digits[0:4])
    mo = int(digits[4:6]) if len(digits) >= 6 else None
    d = int(digits[6:8]) if len(digits) >= 8 else None
    h = int(digits[8:10]) if len(digits) >= 10 else None
    mi = int(digits[10:12]) if len(digits) >= 12 else None
    sec = int(digits[12:14]) if len(digits) >= 14 else None
    if mo is not None and not 1 <= mo <= 12:
        return None
    if d is not None and not 1 <= d <= days_in_month(y, mo):
        return None
    if h is not None and h > 23:
        return None
    if mi is not None and mi > 59:
        return None
    if sec is not None and sec > 60:
        return None
    low = instant(
        y,
        1 if mo is None else mo,
        1 if d is None else d,
        0 if h is None else h,
        0 if mi is None else mi,
        0 if sec is None else sec,
        int(frac.ljust(6, "0")),
    )
    hmo = 12 if mo is None else mo
    high = instant(
        y,
        hmo,
        days_in_month(y, hmo) if d is None else d,
        23 if h is None else h,
        59 if mi is None else mi,
        59 if sec is None else sec,
        int(frac + "999999"[len(frac) :]),
    )
    return low, high, offset, j


# --------------------------------------------------------------------------
# compiled keys


class _Key:
    """One non-universal key.  ``test_part`` decides on one trimmed,
    non-empty stored part."""

    def __init__(self, path: str, vr: str) -> None:
        self.path = path
        self.vr = vr

    def prepare(self, part: str) -> str:
        return part

    def test_part(self, part: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def test(self, stored) -> bool:
        if stored is None:
            return False
        if not isinstance(stored, str):
            raise TypeError(f"{self.path}: stored value must be str")
        for part in stored.split("\\"):
            part = trim(self.vr, part)
            if part == "":
                continue
            if self.test_part(self.prepare(part)):
                return True
        return False


class _StringKey(_Key):
    """UI and the string VRs: a list of exact values and wildcard patterns."""

    def __init__(self, path: str, vr: str, values: list[str]) -> None:
        super().__init__(path, vr)
        self.exact = []
        self.patterns = []
        for v in values:
            if vr != "UI" and ("*" in v or "?" in v):
                self.patterns.append(v)
            else:
                self.exact.append(v)

    def prepare(self, part: str) -> str:
        return part.casefold() if self.vr == "PN" else part

    def test_part(self, part: str) -> bool:
        if part in self.exact:
            return True
        return any(wildcard_match(p, part) for p in self.patterns)


class _DAKey(_Key):
    def __init__(self, path: str, low: str | None, high: str | None) -> None:
        super().__init__(path, "DA")
        self.low = low
        self.high = high

    def test_part(self, part: str) -> bool:
        if len(part) != 8 or not is_digits(part):
            return False
        if self.low is not None and part < self.low:
            return False
        if self.high is not None and part > self.high:
            return False
        return True


class _TMKey(_Key):
    def __init__(self, path: str, low: int | None, high: int | None) -> None:
        super().__init__(path, "TM")
        self.low = low
        self.high = high

    def test_part(self, part: str) -> bool:
        digits = parse_tm(part)
        if digits is None:
            return False
        t = tm_low(digits)
        if self.low is not None and t < self.low:
            return False
        if self.high is not None and t > self.high:
            return False
        return True


class _DTKey(_Key):
    """``low``/``high``: ``(instant, offset_minutes_or_None)`` or ``None``."""

    def __init__(self, path: str, low, high) -> None:
        super().__init__(path, "DT")
        self.low = low
        self.high = high

    def test_part(self, part: str) -> bool:
        parsed = parse_dt(part, 0)
        if parsed is None or parsed[3] != len(part):
            return False
        t, _, offset, _ = parsed
        if self.low is not None:
            bound, bound_offset = self.low
            if bound_offset is not None and offset is not None:
                if t - offset * 60_000_000 < bound - bound_offset * 60_000_000:
                    return False
            elif t < bound:
                return False
        if self.high is not None:
            bound, bound_offset = self.high
            if bound_offset is not None and offset is not None:
                if t - offset * 60_000_000 > bound - bound_offset * 60_000_000:
                    return False
            elif t > bound:
                return False
        return True


def _compile_da(path: str, v: str) -> _DAKey:
    parts = v.split("-")
    if len(parts) == 1:
        parts = [v, v]
    if len(parts) != 2 or parts == ["", ""]:
        raise QueryError(f"{path}: {DA_RULE}")
    for p in parts:
        if p != "" and (len(p) != 8 or not is_digits(p)):
            raise QueryError(f"{path}: {DA_RULE}")
    return _DAKey(path, parts[0] or None, parts[1] or None)


def _compile_tm(path: str, v: str) -> _TMKey:
    parts = v.split("-")
    if len(parts) == 1:
        parts = [v, v]
    if len(parts) != 2 or parts == ["", ""]:
        raise QueryError(f"{path}: {TM_RULE}")
    bounds = []
    for p in parts:
        if p == "":
            bounds.append(None)
            continue
        digits = parse_tm(p)
        if digits is None:
            raise QueryError(f"{path}: {TM_RULE}")
        bounds.append(digits)
    low = None if bounds[0] is None else tm_low(bounds[0])
    high = None if bounds[1] is None else tm_high(bounds[1])
    return _TMKey(path, low, high)


def _compile_dt(path: str, v: str) -> _DTKey:
    n = len(v)
    first = None
    j = 0
    if v[0] != "-":
        first = parse_dt(v, 0)
        if first is None:
            raise QueryError(f"{path}: {DT_RULE}")
        j = first[3]
        if j == n:  # single value: its own range
            return _DTKey(path, (first[0], first[2]), (first[1], first[2]))
        if v[j] != "-":
            raise QueryError(f"{path}: {DT_RULE}")
    # v[j] is the range separator
    second = None
    if j + 1 < n:
        second = parse_dt(v, j + 1)
        if second is None or second[3] != n:
            raise QueryError(f"{path}: {DT_RULE}")
    if first is None and second is None:
        raise QueryError(f"{path}: {DT_RULE}")
    low = None if first is None else (first[0], first[2])
    high = None if second is None else (second[1], second[2])
    return _DTKey(path, low, high)


class CompiledQuery:
    """A compiled C-FIND identifier.  ``paths``: the paths of the keys it
    tests (the non-universal ones), in input order."""

    def __init__(self, keys: list[_Key]) -> None:
        self.keys = keys
        self.paths = tuple(k.path for k in keys)

    def __repr__(self) -> str:
        return f"<CompiledQuery paths={self.paths!r}>"


def compile_query(keys: list[tuple[str, str, str]]) -> CompiledQuery:
    """Compile ``(path, vr, value)`` matching keys; see the module docstring."""
    compiled: list[_Key] = []
    for key in keys:
        if not isinstance(key, tuple) or len(key) != 3:
            raise TypeError(KEYS_RULE)
        path, vr, value = key
        if not (isinstance(path, str) and isinstance(vr, str) and isinstance(value, str)):
            raise TypeError(KEYS_RULE)
        v = trim(vr, value)
        if v == "":
            continue  # universal
        if vr not in KNOWN_VRS:
            raise QueryError(f"{path}: cannot match VR {vr}")
        if vr in STRING_VRS and all(c == "*" for c in v):
            continue  # universal
        if vr == "DA":
            compiled.append(_compile_da(path, v))
        elif vr == "TM":
            compiled.append(_compile_tm(path, v))
        elif vr == "DT":
            compiled.append(_compile_dt(path, v))
        else:
            values = []
            for part in v.split("\\"):
                part = trim(vr, part)
                if part == "":
                    continue
                if vr == "PN":
                    part = part.casefold()
                values.append(part)
            if values:
                compiled.append(_StringKey(path, vr, values))
    return CompiledQuery(compiled)


def match(query: CompiledQuery, item: dict[str, str]) -> bool:
    """True when ``item`` matches every key of ``query``."""
    for key in query.keys:
        if not key.test(item.get(key.path)):
            return False
    return True


def filter_items(query: CompiledQuery, items: list[dict[str, str]]) -> list[int]:
    """Indices of the items that match ``query``, in order."""
    return [i for i, item in enumerate(items) if match(query, item)]
