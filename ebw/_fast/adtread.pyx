"""ADT reader, compiled twin of ``ebw.hl7.adt.parse`` (the specification).

``parse(data, mapping)`` returns what ``ebw.hl7.adt.parse`` returns, or raises
what it raises, for every input; ``tests/diff/test_adt_diff.py`` and the HL7 fuzz
properties hold the two together.

Shape: the message is scanned once (the compiled scanner).  The common message --
standard delimiters ``|^~\\&``, a trigger event that opens, moves, updates or closes
an encounter (no merge), a PID, and text that decodes with the endpoint's charset --
is read here: components are found with ``memchr`` on the field bytes and only the
values kept become ``str`` (a value with an escape sequence is resolved by the
reference's ``Decoder.unescape``).  Any other message (nonstandard delimiters,
merges, ignored or unknown events, missing segments, text that needs the charset
fallback) goes to the reference, ``adt.parse_scanned``, with the scan already done;
so do all errors.

Why each rule keeps the result the same:
  * the reference splits bytes on delimiters before decoding the pieces it reads
    (or, for ASCII without escapes, decodes first: the same pieces); so does this;
  * a value without the escape character unescapes to its decoded bytes; one with
    it is unescaped by the reference's code (a fallback there sends the message to
    the reference);
  * a value read here is decoded exactly when the reference decodes it (same
    order, same short cuts), so a decode that would have set ``charset_fallback``
    sends the message to the reference instead;
  * a datetime of the usual shape (digits, then an optional ``+ZZZZ``/``-ZZZZ``) is
    computed here (``dtm``, held to ``parse_dtm`` by its own property test), any
    other by the reference's ``parse_dtm``; ``str`` methods (strip, upper) are the
    same methods.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memchr

from datetime import datetime as _datetime
from zoneinfo import ZoneInfo

from ebw._fast.hl7scan import scan
from ebw.hl7 import adt as _adt
from ebw.hl7.adt import (
    DEFAULT_MAPPING,
    IGNORED_EVENTS,
    KNOWN_EVENTS,
    MERGE_EVENTS,
    XCN_ORDER,
    XPN_ORDER,
    Change,
    Header,
    parse_dtm,
)
from ebw.hl7.text import Decoder

__all__ = ["dtm", "parse"]

cdef bytes STANDARD_SEPS = b"|^~\\&"
cdef bytes NULL_BYTES = b'""'
cdef str NULL_TEXT = '""'
cdef char COMP = b'^'
cdef char REP = b'~'
cdef char SUB = b'&'
cdef char ESC = b'\\'


class _OffPath(Exception):
    """Internal: the message is not one this reader takes; the reference reads it."""


# --------------------------------------------------------------------------- bytes


cdef bytes _fld(list fields, Py_ssize_t n):
    """SEG-n as raw bytes, b"" when absent (``text.field``)."""
    return <bytes>fields[n] if n < len(fields) else b""


cdef bytes _piece(bytes raw, char delim, Py_ssize_t k):
    """``at(raw.split(delim), k)``: the k-th (1-based) piece, b"" past the end."""
    cdef const char* p = PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    cdef Py_ssize_t start = 0, end, i = 1
    cdef const char* hit
    if k < 1:
        return b""
    while i < k:
        hit = <const char*>memchr(p + start, delim, <size_t>(n - start))
        if hit == NULL:
            return b""
        start = hit - p + 1
        i += 1
    hit = <const char*>memchr(p + start, delim, <size_t>(n - start))
    end = n if hit == NULL else hit - p
    if start == 0 and end == n:
        return raw
    return PyBytes_FromStringAndSize(p + start, end - start)


cdef bint _is_ascii(bytes raw):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(raw)
    for i in range(n):
        if p[i] >= 0x80:
            return False
    return True


cdef dict _codecs = {}  # (MSH-18, endpoint charset) -> codec, as Decoder picks it


cdef str _codec(bytes msh18, str default):
    k = (msh18, default)
    codec = _codecs.get(k)
    if codec is None:
        codec = Decoder(msh18, STANDARD_SEPS, default).codec
        if len(_codecs) < 256:  # MSH-18 is the sender's: keep the cache bounded
            _codecs[k] = codec
    return <str>codec


cdef class _Text:
    """How one message's values become text: ``text.Decoder`` without its fallback."""

    cdef str codec
    cdef bytes msh18
    cdef str default
    cdef object decoder  # a text.Decoder, made for the first value with an escape sequence

    def __cinit__(self, bytes msh18, str default):
        self.msh18 = msh18
        self.default = default
        self.codec = _codec(msh18, default)
        self.decoder = None

    cdef str decode(self, bytes raw):
        """``Decoder.decode`` when it does not fall back: ASCII as ASCII, else the
        codec; text the codec cannot decode is the reference's to read."""
        if _is_ascii(raw):
            return PyUnicode_DecodeASCII(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL)
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError:
            raise _OffPath()

    cdef str leaf(self, bytes raw):
        """``Decoder.unescape`` of one value (a component or subcomponent)."""
        if memchr(PyBytes_AS_STRING(raw), ESC, <size_t>PyBytes_GET_SIZE(raw)) == NULL:
            return self.decode(raw)
        if self.decoder is None:
            self.decoder = Decoder(self.msh18, STANDARD_SEPS, self.default)
        text = self.decoder.unescape(raw)
        if self.decoder.fell_back:
            raise _OffPath()
        return text

# --------------------------------------------------------------------------- datetimes


cdef inline bint _digit(unsigned char c) noexcept:
    return c >= 0x30 and c <= 0x39  # '0'-'9'


cdef inline int _two(const unsigned char* p) noexcept:
    return (p[0] - 0x30) * 10 + (p[1] - 0x30)


cdef long long _days_from_civil(long long y, long long m, long long d) noexcept:
    """Days from 1970-01-01 to y-m-d, proleptic Gregorian (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    cdef long long era = (y if y >= 0 else y - 399) // 400
    cdef long long yoe = y - era * 400
    cdef long long doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef object _dtm(bytes raw, object zone):
    """``adt.parse_dtm`` of the usual value: ``YYYY[MM[DD[HH[MM[SS]]]]]``, then
    ``+ZZZZ``/``-ZZZZ`` or nothing.  Any other value is the reference's to read."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), nd = 0
    cdef int year, month = 1, day = 1, hour = 0, minute = 0, second = 0, dim, offset = 0
    cdef bint has_offset = False
    while nd < n and _digit(p[nd]):
        nd += 1
    if nd < 4 or nd > 14 or nd % 2:
        return parse_dtm(raw, zone)
    if nd < n:
        if (n - nd != 5 or (p[nd] != 0x2B and p[nd] != 0x2D)  # '+' '-'
                or not (_digit(p[nd + 1]) and _digit(p[nd + 2]) and _digit(p[nd + 3]) and _digit(p[nd + 4]))):
            return parse_dtm(raw, zone)
        has_offset = True
        offset = _two(p + nd + 1) * 60 + _two(p + nd + 3)
        if p[nd] == 0x2D:
            offset = -offset
    year = _two(p) * 100 + _two(p + 2)
    if year < 1:
        return parse_dtm(raw, zone)
    if nd >= 6:
        month = _two(p + 4)
    if nd >= 8:
        day = _two(p + 6)
    if nd >= 10:
        hour = _two(p + 8)
    if nd >= 12:
        minute = _two(p + 10)
    if nd >= 14:
        second = _two(p + 12)
    if month < 1 or month > 12:
        return None
    if month == 2:
        dim = 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        dim = 30
    else:
        dim = 31
    if day < 1 or day > dim or hour >= 24 or minute >= 60 or second >= 60:
        return None
    if has_offset:
        return <double>(_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
                        - offset * 60)
    try:
        return _datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp() + 0.0
    except ValueError:
        return None  # as the reference


def dtm(raw, zone):
    """``adt.parse_dtm(raw, zone)``, compiled for the usual values (for the tests)."""
    return _dtm(bytes(raw), zone)


# --------------------------------------------------------------------------- fields


cdef object _value(bytes raw, _Text tx):
    """Tri-state: None when not sent, "" for the explicit null, else the text."""
    if PyBytes_GET_SIZE(raw) == 0:
        return None
    if raw == NULL_BYTES:
        return ""
    return tx.leaf(raw).strip()


cdef tuple _cx(bytes rep, _Text tx):
    """(id, authority, type code) of one CX repetition."""
    ident = tx.leaf(_piece(rep, COMP, 1)).strip()
    comp4 = _piece(rep, COMP, 4)
    authority = tx.leaf(_piece(comp4, SUB, 1)).strip() or tx.leaf(_piece(comp4, SUB, 2)).strip()
    return ident, authority, tx.leaf(_piece(rep, COMP, 5)).strip().upper()


cdef object _pn(bytes raw, _Text tx, tuple order):
    """HL7 XPN/XCN -> DICOM PN (family^given^middle^prefix^suffix)."""
    if PyBytes_GET_SIZE(raw) == 0:
        return None
    if raw == NULL_BYTES:
        return ""
    parts = [tx.leaf(_piece(raw, COMP, i)).strip() for i in order]
    return "^".join(parts).rstrip("^")


cdef object _choose_id(bytes raw, _Text tx, object mapping):
    """``adt._choose_id``: the repetition the mapping names, else the first with an id."""
    want_type = mapping.patient_id_type.upper()
    want_auth = mapping.patient_id_authority
    first = None
    if PyBytes_GET_SIZE(raw) == 0:
        return None
    for rep in dict.fromkeys(raw.split(b"~")):  # in order, each value once
        if PyBytes_GET_SIZE(rep) == 0 or PyBytes_AS_STRING(rep)[0] == COMP:
            continue  # CX-1 empty
        i = _cx(rep, tx)
        if not i[0] or i[0] == NULL_TEXT:
            continue
        if (not want_type or i[2] == want_type) and (not want_auth or i[1] == want_auth):
            return i
        if first is None:
            first = i
    return first


cdef void _read_pid(object change, list pid, _Text tx, object mapping) except *:
    chosen = _choose_id(_fld(pid, 3), tx, mapping)
    if chosen is None:
        raise _OffPath()  # the reference answers AE 101
    change.patient_key = f"{chosen[1]}|{chosen[0]}"
    p = change.patient
    p["PatientID"] = chosen[0]
    p["IssuerOfPatientID"] = chosen[1]
    # PID-5: the legal name (XPN-7 = L) if present, else the first repetition.
    raw5 = _fld(pid, 5)
    if PyBytes_GET_SIZE(raw5):
        names = raw5.split(b"~")
        name_raw = <bytes>names[0]
        for n in names:
            if _piece(<bytes>n, COMP, 7).upper() == b"L":
                name_raw = <bytes>n
                break
        p["PatientName"] = _pn(name_raw, tx, XPN_ORDER)
    else:
        p["PatientName"] = None
    birth = _fld(pid, 7)
    if birth == NULL_BYTES:
        p["PatientBirthDate"] = ""
    elif PyBytes_GET_SIZE(birth):
        digits = _piece(birth, COMP, 1)[:8].decode("latin_1")
        p["PatientBirthDate"] = digits if len(digits) == 8 and digits.isascii() and digits.isdigit() else ""
    sex = _value(_piece(_fld(pid, 8), COMP, 1), tx)
    if sex is not None:
        sex = sex.upper()
        p["PatientSex"] = sex if sex in ("M", "F") else ("O" if sex else "")


cdef void _read_pv1(object change, list pv1, _Text tx, object zone, object mapping) except *:
    v = change.visit
    v["patient_class"] = _value(_piece(_fld(pv1, 2), COMP, 1), tx)
    loc = _fld(pv1, 3)
    if loc == NULL_BYTES:
        v["CurrentPatientLocation"] = ""
        v["point_of_care"] = ""
        v["InstitutionName"] = ""
    elif PyBytes_GET_SIZE(loc):
        parts = []
        for i in mapping.location_components:
            if i < 1:
                raise _OffPath()  # settings allow 1-11; anything else is the reference's
            parts.append(tx.leaf(_piece(loc, COMP, i)).strip())
        point_of_care = tx.leaf(_piece(loc, COMP, 1)).strip()
        institution = tx.leaf(_piece(_piece(loc, COMP, 4), SUB, 1)).strip()
        v["CurrentPatientLocation"] = mapping.location_separator.join([x for x in parts if x])[:64]
        v["point_of_care"] = point_of_care
        v["InstitutionName"] = institution[:64]
    attending = _fld(pv1, 7)
    if PyBytes_GET_SIZE(attending):
        v["ScheduledPerformingPhysicianName"] = _pn(_piece(attending, REP, 1), tx, XCN_ORDER)
    referring = _fld(pv1, 8)
    if PyBytes_GET_SIZE(referring):
        v["ReferringPhysicianName"] = _pn(_piece(referring, REP, 1), tx, XCN_ORDER)
    v["service"] = _value(_piece(_fld(pv1, 10), COMP, 1), tx)
    v["vip"] = _value(_piece(_fld(pv1, 16), COMP, 1), tx)
    admit = _piece(_fld(pv1, 44), COMP, 1)
    if PyBytes_GET_SIZE(admit):
        t = _dtm(admit, zone) if admit != NULL_BYTES else None
        v["admit_time"] = None if t is None else str(t)
    disch = _piece(_piece(_fld(pv1, 45), REP, 1), COMP, 1)
    if PyBytes_GET_SIZE(disch):
        t = _dtm(disch, zone) if disch != NULL_BYTES else None
        v["discharge_time"] = "" if disch == NULL_BYTES else (None if t is None else str(t))


cdef str _encounter_key(object change, list pid, object pv1, _Text tx, object mapping):
    cdef bytes rep
    for source in mapping.visit_number:
        if source == "PV1-19":
            if pv1 is None:
                continue
            rep, tag = _piece(_fld(<list>pv1, 19), REP, 1), "V"
        else:  # PID-18
            rep, tag = _piece(_fld(pid, 18), REP, 1), "A"
        ident, authority, _ = _cx(rep, tx)
        if ident and ident != NULL_TEXT:
            change.visit["AdmissionID"] = ident
            change.visit["admission_issuer"] = authority
            return f"{tag}|{authority}|{ident}"
    change.visit.setdefault("AdmissionID", "")
    return f"P|{change.patient_key}"


cdef str _segment_text(list fields, _Text tx):
    """``text.segment_text`` for the standard delimiters: the segment as received."""
    return tx.decode(b"|".join(fields))


# --------------------------------------------------------------------------- message


cdef object _header(bytes seps, list msh, Py_ssize_t nseg):
    """``adt.parse_header`` for the standard delimiters."""
    msg_type = _fld(msh, 9)
    return Header(
        seps,
        _fld(msh, 3),
        _fld(msh, 4),
        _fld(msh, 5),
        _fld(msh, 6),
        _piece(_fld(msh, 7), COMP, 1),
        _piece(msg_type, COMP, 1).decode("latin_1").strip().upper(),
        _piece(msg_type, COMP, 2).decode("latin_1").strip().upper(),
        _fld(msh, 10),
        _fld(msh, 11),
        _fld(msh, 12),
        _fld(msh, 18),
        nseg,
    )


cdef object _read(tuple scanned, object mapping):
    seps, nseg, segments = scanned
    if seps != STANDARD_SEPS:
        raise _OffPath()
    header = _header(seps, <list>(segments[0][1]), nseg)
    event = header.event
    if header.code != "ADT" or event not in KNOWN_EVENTS or event in IGNORED_EVENTS or event in MERGE_EVENTS:
        raise _OffPath()  # the reference rejects these, or reads EVN-1, or merges
    evn = pid = pv1 = None
    for sid, fields in segments:
        if sid == "PID":
            if pid is None:
                pid = fields
        elif sid == "PV1":
            if pv1 is None:
                pv1 = fields
        elif sid == "EVN":
            if evn is None:
                evn = fields
        elif sid == "MRG" and (event == "A06" or event == "A07"):
            raise _OffPath()  # an A06/A07 with MRG is read as a merge too
    if pid is None:
        raise _OffPath()  # AE 100
    tx = _Text(header.charset, mapping.charset)
    zone = ZoneInfo(mapping.timezone)
    change = Change(header, event)
    when_raw = _piece(_fld(<list>evn, 2), COMP, 1) if evn is not None else b""
    change.when = _dtm(when_raw or header.msh7, zone)
    _read_pid(change, <list>pid, tx, mapping)
    change.segments["PID"] = _segment_text(<list>pid, tx)
    if pv1 is not None:
        change.has_pv1 = True
        _read_pv1(change, <list>pv1, tx, zone, mapping)
        change.segments["PV1"] = _segment_text(<list>pv1, tx)
    change.encounter_key = _encounter_key(change, <list>pid, pv1, tx, mapping)
    return change


def parse(data, mapping=DEFAULT_MAPPING):
    """Scan and read one ADT message the way ``mapping`` says (``adt.parse``)."""
    scanned = scan(data)
    try:
        return _read(scanned, mapping)
    except _OffPath:
        return _adt.parse_scanned(scanned, mapping)
