"""From a scanned HL7 message to an ADT change the encounter index can apply.

``parse(data)`` runs the segment scanner (Cython, ``ebw.hl7.scan``) and reads
only the fields the encounter index needs.  It raises
:class:`~ebw.errors.ParseError` when the bytes are not HL7 (answered AR) and
:class:`~ebw.errors.RejectError` when the message is readable but must be
answered AE/AR (wrong message type, missing PID-3 ...).

Values are kept in their DICOM form where the worklist needs them (PN with the
HL7 XPN prefix/suffix swap, DA dates), with three states per field:
``None`` (not sent: keep what is stored), ``""`` (explicit HL7 null ``""``:
clear it) or the value.

Encounter key (documented rule, README "Encounter identity"):
1. ``V|<authority>|<PV1-19.1>`` when PV1-19 (visit number) is valued;
2. else ``A|<authority>|<PID-18.1>`` when PID-18 (account number) is valued;
3. else ``P|<patient key>``: feeds without visit numbers get one open
   visit-less encounter per patient (a new A01/A04 for that patient updates it).
Patient key: ``<authority>|<id>`` of the PID-3 repetition whose identifier
type (CX-5) is ``MR``, else of the first repetition; authority is CX-4.1, else
CX-4.2, else empty.
"""

from __future__ import annotations

import calendar as _calendar
import datetime as _dt
import functools
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..errors import ParseError, RejectError
from ._scan_ref import NOT_A_DELIMITER
from .scan import scan
from .text import NULL, Decoder, at, comps, reps, segment_text, subs
from .text import field as fld

# Trigger events and what they do to the encounter (see ebw.encounters).
ENCOUNTER_EVENTS = frozenset(
    {"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A14", "A23", "A38"}
)
PERSON_EVENTS = frozenset({"A28", "A29", "A31"})
MERGE_EVENTS = frozenset({"A18", "A34", "A35", "A36", "A40", "A47"})
# Recognised ADT events that do not concern encounters: AA, counted, no change.
IGNORED_EVENTS = frozenset(
    {
        "A09",
        "A10",
        "A15",
        "A16",
        "A17",
        "A20",
        "A21",
        "A22",
        "A24",
        "A25",
        "A26",
        "A27",
        "A30",
        "A32",
        "A33",
        "A37",
        "A39",
        "A41",
        "A42",
        "A43",
        "A44",
        "A45",
        "A46",
        "A48",
        "A49",
        "A50",
        "A51",
        "A52",
        "A53",
        "A54",
        "A55",
        "A60",
        "A61",
        "A62",
    }
)
KNOWN_EVENTS = ENCOUNTER_EVENTS | PERSON_EVENTS | MERGE_EVENTS | IGNORED_EVENTS


@dataclass(frozen=True)
class Mapping:
    """How an endpoint reads its feed (README, "Field mapping")."""

    timezone: str = "UTC"  # datetimes without an offset are read in it
    charset: str = "utf_8"  # Python codec used when MSH-18 is empty
    patient_id_type: str = "MR"  # PID-3 repetition with this CX-5 (empty: the first one)
    patient_id_authority: str = ""  # ... and this assigning authority (empty: any)
    visit_number: tuple[str, ...] = ("PV1-19", "PID-18")  # where the visit number comes from, in order
    location_components: tuple[int, ...] = (1, 2, 3)  # PV1-3 components shown as CurrentPatientLocation
    location_separator: str = "-"


DEFAULT_MAPPING = Mapping()


@dataclass(slots=True)
class Header:
    """The MSH fields EBW needs, raw as received (``ack.build`` copies them through
    ``ack.restate``)."""

    seps: bytes
    msh3: bytes = b""
    msh4: bytes = b""
    msh5: bytes = b""
    msh6: bytes = b""
    msh7: bytes = b""
    code: str = ""
    event: str = ""
    control_id: bytes = b""
    processing_id: bytes = b""
    version: bytes = b""
    charset: bytes = b""
    nseg: int = 0


@dataclass(slots=True)
class Change:
    """One ADT message, reduced to what the encounter index stores."""

    header: Header
    event: str
    patient_key: str = ""
    encounter_key: str = ""
    # "when": the instant the event was recorded (EVN-2, else MSH-7), UTC epoch seconds or None
    when: float | None = None
    patient: dict[str, str | None] = field(default_factory=dict)
    visit: dict[str, str | None] = field(default_factory=dict)
    # MRG: the prior (non-surviving) patient (PatientID, issuer), account and visit keys
    prior_patient: tuple[str, str] | None = None
    prior_account_key: str = ""
    prior_visit_key: str = ""
    # further PID/MRG groups of a repeating merge (A40 may carry several)
    groups: list[Change] = field(default_factory=list)
    has_pv1: bool = False
    charset_fallback: bool = False
    # the PID and PV1 segments as received (standard delimiters), copied into ORUs
    segments: dict[str, str] = field(default_factory=dict)

    @property
    def control_id(self) -> str:
        return self.header.control_id.decode("latin_1")


def parse_header(seps: bytes, msh: list[bytes], nseg: int) -> Header:
    h = Header(seps=seps, nseg=nseg)
    h.msh3, h.msh4, h.msh5, h.msh6 = fld(msh, 3), fld(msh, 4), fld(msh, 5), fld(msh, 6)
    h.msh7 = at(comps(fld(msh, 7), seps), 1)
    msg_type = comps(fld(msh, 9), seps)
    h.code = at(msg_type, 1).decode("latin_1").strip().upper()
    h.event = at(msg_type, 2).decode("latin_1").strip().upper()
    h.control_id = fld(msh, 10)
    h.processing_id = fld(msh, 11)
    h.version = fld(msh, 12)
    h.charset = fld(msh, 18)
    return h


def parse(data: bytes, mapping: Mapping = DEFAULT_MAPPING) -> Change:
    """Scan and read one ADT message the way ``mapping`` says.

    This is the reference reader.  ``ebw.hl7.reader.parse`` is what the server calls:
    the compiled twin ``ebw._fast.adtread`` unless ``EBW_NO_EXTENSIONS=1``, which
    gives the same result (or raises the same error) for every input."""
    return parse_scanned(scan(data), mapping)


BAD_ENCODING_CHARACTERS = "bad MSH-2 encoding characters"
_NOT_A_DELIMITER = NOT_A_DELIMITER  # what the scanner refuses as a field separator


def parse_scanned(scanned: tuple[bytes, int, list], mapping: Mapping = DEFAULT_MAPPING) -> Change:
    """``parse`` of a message already scanned (``scan(data)``, the whole result).

    The five delimiters (MSH-1 and MSH-2, positions MSH-2 leaves out taking the
    standard ones) must differ from each other and be neither letters, digits, CR, LF
    nor space: else the message cannot be split as its sender meant (``^^\\&`` makes
    every repetition a component), and it is unreadable (AR 102), not misread."""
    seps, nseg, segments = scanned
    if len(set(seps)) != 5 or not _NOT_A_DELIMITER.isdisjoint(seps):
        raise ParseError(BAD_ENCODING_CHARACTERS, offset=0, segment="MSH")
    msh = segments[0][1]
    header = parse_header(seps, msh, nseg)
    if header.code != "ADT":
        raise RejectError("AR", 200, "Unsupported message type", "MSH^1^9^1^1")
    event = header.event
    first: dict[str, list[bytes]] = {}
    for sid, fields in segments:
        first.setdefault(sid, fields)
    if not event:
        evn = first.get("EVN")
        event = fld(evn, 1).decode("latin_1").strip().upper() if evn else ""
    if event not in KNOWN_EVENTS:
        raise RejectError("AR", 201, "Unsupported event code", "MSH^1^9^1^2")
    dec = Decoder(header.charset, seps, mapping.charset)
    change = Change(header=header, event=event)
    zone = ZoneInfo(mapping.timezone)

    evn = first.get("EVN")
    when_raw = at(comps(fld(evn, 2), seps), 1) if evn else b""
    change.when = parse_dtm(when_raw or header.msh7, zone)

    if event in IGNORED_EVENTS:
        return change

    pid = first.get("PID")
    if pid is None:
        raise RejectError("AE", 100, "PID segment missing", "PID")
    _read_pid(change, pid, seps, dec, mapping)
    change.segments["PID"] = segment_text(pid, seps, dec)
    pv1 = first.get("PV1")
    if pv1 is not None:
        change.has_pv1 = True
        _read_pv1(change, pv1, seps, dec, zone, mapping)
        change.segments["PV1"] = segment_text(pv1, seps, dec)
    change.encounter_key = _encounter_key(change, pid, pv1, seps, dec, mapping)
    if event in MERGE_EVENTS or (event in ("A06", "A07") and "MRG" in first):
        _read_merge_groups(change, segments, seps, dec, mapping, required=event in MERGE_EVENTS)
    change.charset_fallback = dec.fell_back
    return change


MAX_MERGE_GROUPS = 1000  # PID/MRG pairs in one merge message (real ones carry a few)


def _read_merge_groups(
    change: Change, segments: list, seps: bytes, dec: Decoder, mapping: Mapping, required: bool
) -> None:
    """Pair each MRG with the PID before it; the first pair fills ``change``.  More than
    ``MAX_MERGE_GROUPS`` pairs are refused (AR): each is a merge applied in the write
    transaction, and tens of thousands would stall the worker for seconds."""
    if sum(1 for sid, _f in segments if sid == "PID") > MAX_MERGE_GROUPS:
        raise RejectError("AR", 207, f"Too many PID/MRG groups (at most {MAX_MERGE_GROUPS})", "PID")
    current: Change | None = None
    n = 0
    for sid, fields in segments:
        if sid == "PID":
            if n == 0:
                current = change
            else:
                current = Change(header=change.header, event=change.event, when=change.when)
                _read_pid(current, fields, seps, dec, mapping)
                current.segments["PID"] = segment_text(fields, seps, dec)
                current.encounter_key = _encounter_key(current, fields, None, seps, dec, mapping)
                change.groups.append(current)
            n += 1
        elif sid == "MRG" and current is not None:
            _read_mrg(current, fields, seps, dec, mapping)
            current = None
    if required:
        for n, group in enumerate([change, *change.groups], 1):
            _check_merge_group(change.event, group, n)


def _check_merge_group(event: str, group: Change, n: int) -> None:
    """Each PID/MRG pair of a merge names what the event merges (AE 101 if not): the
    prior patient (``MRG-1``) for A34, A40 and A47, the prior account (``MRG-3``) for
    A35, either for A36 and A18.  A pair that names nothing would be answered AA and
    merge nothing."""
    has_patient, has_account = group.prior_patient is not None, bool(group.prior_account_key)
    if event == "A35":
        if not has_account:
            raise RejectError("AE", 101, "Required field missing: MRG-3 prior account number", f"MRG^{n}^3")
    elif event in ("A36", "A18"):
        if not has_patient and not has_account:
            raise RejectError("AE", 101, "Required field missing: MRG segment", f"MRG^{n}^1")
    elif not has_patient:
        raise RejectError("AE", 101, "Required field missing: MRG-1 prior patient identifier", f"MRG^{n}^1")


# --------------------------------------------------------------------------- PID / PV1


def _text_comps(raw: bytes, seps: bytes, dec: Decoder) -> list[str] | None:
    """The components of ``raw`` as text when it needs no unescaping (``Decoder.plain``;
    the usual case), else None.  The field readers take the same values from these as
    from unescaping each component of the bytes."""
    t = dec.plain(raw)
    return None if t is None else t.split(chr(seps[1]))


def _pick(tc: list[str], order: tuple[int, ...]) -> list[str]:
    """Components ``order`` (1-based) of ``tc``, stripped; "" past its end."""
    n = len(tc)
    return [tc[i - 1].strip() if i <= n else "" for i in order]


def _cx(raw_rep: bytes, seps: bytes, dec: Decoder) -> tuple[str, str, str]:
    """(id, authority, type code) of one CX repetition."""
    tc = _text_comps(raw_rep, seps, dec)
    if tc is not None:
        n = len(tc)
        ap = tc[3].split(chr(seps[4])) if n > 3 else [""]
        auth = ap[0].strip() or (ap[1].strip() if len(ap) > 1 else "")
        return tc[0].strip(), auth, (tc[4].strip().upper() if n > 4 else "")
    c = comps(raw_rep, seps)
    ident = dec.unescape(at(c, 1)).strip()
    auth_parts = subs(at(c, 4), seps)
    authority = dec.unescape(at(auth_parts, 1)).strip() or dec.unescape(at(auth_parts, 2)).strip()
    return ident, authority, dec.unescape(at(c, 5)).strip().upper()


def _value(raw: bytes, dec: Decoder) -> str | None:
    """Tri-state: None when not sent, "" for the explicit null, else the text."""
    if raw == b"":
        return None
    if raw == b'""':
        return ""
    return dec.unescape(raw).strip()


def _pn(raw: bytes, seps: bytes, dec: Decoder, order: tuple[int, ...]) -> str | None:
    """HL7 XPN/XCN -> DICOM PN (family^given^middle^prefix^suffix)."""
    if raw == b"":
        return None
    if raw == b'""':
        return ""
    tc = _text_comps(raw, seps, dec)
    if tc is not None:
        parts = _pick(tc, order)
    else:
        c = comps(raw, seps)
        parts = [dec.unescape(at(c, i)).strip() for i in order]
    return "^".join(parts).rstrip("^")


XPN_ORDER = (1, 2, 3, 5, 4)  # family, given, middle, prefix (XPN-5), suffix (XPN-4)
XCN_ORDER = (2, 3, 4, 6, 5)  # XCN-1 is the ID


def _choose_id(raw: bytes, seps: bytes, dec: Decoder, mapping: Mapping) -> tuple[str, str, str] | None:
    """(id, authority, type) of the repetition of the CX list ``raw`` (PID-3, MRG-1)
    that the mapping names (type and/or authority), else of the first with an id.

    Repetitions are read in order, and only until the named one: a repetition seen
    before or with an empty CX-1 cannot change the choice and is not decoded.  A
    field of a million repetitions (a hostile 1 MB PID-3) then costs one split and
    one ``dict`` build, not a million decodes; only distinct repetitions with an id,
    before the one chosen, are decoded, each once.
    """
    want_type, want_auth = mapping.patient_id_type.upper(), mapping.patient_id_authority
    cs = seps[1:2]
    first = None
    for rep in dict.fromkeys(reps(raw, seps)):  # in order, each value once
        if not rep or rep.startswith(cs):
            continue  # CX-1 empty
        i = _cx(rep, seps, dec)
        if not i[0] or i[0] == NULL:
            continue
        if (not want_type or i[2] == want_type) and (not want_auth or i[1] == want_auth):
            return i
        if first is None:
            first = i
    return first


def _read_pid(change: Change, pid: list[bytes], seps: bytes, dec: Decoder, mapping: Mapping) -> None:
    chosen = _choose_id(fld(pid, 3), seps, dec, mapping)
    if chosen is None:
        raise RejectError("AE", 101, "Required field missing: patient identifier list", "PID^1^3")
    change.patient_key = f"{chosen[1]}|{chosen[0]}"
    p = change.patient
    p["PatientID"] = chosen[0]
    p["IssuerOfPatientID"] = chosen[1]
    # PID-5: the legal name (XPN-7 = L) if present, else the first repetition.
    names = reps(fld(pid, 5), seps)
    name_raw = b""
    if names:
        name_raw = next((n for n in dict.fromkeys(names) if at(comps(n, seps), 7).upper() == b"L"), names[0])
    p["PatientName"] = _pn(name_raw, seps, dec, XPN_ORDER) if names else None
    birth = fld(pid, 7)
    if birth == b'""':
        p["PatientBirthDate"] = ""
    elif birth:
        digits = at(comps(birth, seps), 1)[:8].decode("latin_1")
        p["PatientBirthDate"] = digits if len(digits) == 8 and _ascii_digits(digits) else ""
    sex = _value(at(comps(fld(pid, 8), seps), 1), dec)
    if sex is not None:
        sex = sex.upper()
        p["PatientSex"] = sex if sex in ("M", "F") else ("O" if sex else "")


def _read_pv1(change: Change, pv1: list[bytes], seps: bytes, dec: Decoder, zone: ZoneInfo, mapping: Mapping) -> None:
    v = change.visit
    v["patient_class"] = _value(at(comps(fld(pv1, 2), seps), 1), dec)
    loc = fld(pv1, 3)
    if loc == b'""':  # the location cleared: all three parts read from it
        v["CurrentPatientLocation"] = ""
        v["point_of_care"] = ""
        v["InstitutionName"] = ""
    elif loc:
        tc = _text_comps(loc, seps, dec)
        if tc is not None:
            parts = _pick(tc, mapping.location_components)
            point_of_care = tc[0].strip()
            institution = tc[3].split(chr(seps[4]))[0].strip() if len(tc) > 3 else ""
        else:
            c = comps(loc, seps)
            parts = [dec.unescape(at(c, i)).strip() for i in mapping.location_components]
            point_of_care = dec.unescape(at(c, 1)).strip()
            institution = dec.unescape(at(subs(at(c, 4), seps), 1)).strip()
        v["CurrentPatientLocation"] = mapping.location_separator.join(x for x in parts if x)[:64]
        v["point_of_care"] = point_of_care
        v["InstitutionName"] = institution[:64]
    attending = reps(fld(pv1, 7), seps)
    if attending:
        v["ScheduledPerformingPhysicianName"] = _pn(attending[0], seps, dec, XCN_ORDER)
    referring = reps(fld(pv1, 8), seps)
    if referring:
        v["ReferringPhysicianName"] = _pn(referring[0], seps, dec, XCN_ORDER)
    v["service"] = _value(at(comps(fld(pv1, 10), seps), 1), dec)
    v["vip"] = _value(at(comps(fld(pv1, 16), seps), 1), dec)
    admit = at(comps(fld(pv1, 44), seps), 1)
    if admit:
        t = parse_dtm(admit, zone) if admit != b'""' else None
        v["admit_time"] = None if t is None else str(t)
    disch = at(comps(at(reps(fld(pv1, 45), seps), 1), seps), 1)
    if disch:
        t = parse_dtm(disch, zone) if disch != b'""' else None
        v["discharge_time"] = "" if disch == b'""' else (None if t is None else str(t))


def _encounter_key(
    change: Change, pid: list[bytes], pv1: list[bytes] | None, seps: bytes, dec: Decoder, mapping: Mapping
) -> str:
    for source in mapping.visit_number:
        if source == "PV1-19":
            if pv1 is None:
                continue
            rep, tag = at(reps(fld(pv1, 19), seps), 1), "V"
        else:  # PID-18
            rep, tag = at(reps(fld(pid, 18), seps), 1), "A"
        ident, authority, _ = _cx(rep, seps, dec)
        if ident and ident != NULL:
            change.visit["AdmissionID"] = ident
            change.visit["admission_issuer"] = authority
            return f"{tag}|{authority}|{ident}"
    change.visit.setdefault("AdmissionID", "")
    return f"P|{change.patient_key}"


def _read_mrg(change: Change, mrg: list[bytes], seps: bytes, dec: Decoder, mapping: Mapping) -> None:
    chosen = _choose_id(fld(mrg, 1), seps, dec, mapping)
    if chosen is not None:
        change.prior_patient = (chosen[0], chosen[1])
    ident, authority, _ = _cx(at(reps(fld(mrg, 3), seps), 1), seps, dec)
    if ident:
        change.prior_account_key = f"A|{authority}|{ident}"
    ident, authority, _ = _cx(at(reps(fld(mrg, 5), seps), 1), seps, dec)
    if ident:
        change.prior_visit_key = f"V|{authority}|{ident}"


# --------------------------------------------------------------------------- datetimes


def _ascii_digits(s: str) -> bool:
    """0-9 only.  ``str.isdigit`` alone also accepts the superscripts ``²³¹`` that a
    latin-1 decode yields (bytes B2 B3 B9), on which ``int()`` raises."""
    return s.isascii() and s.isdigit()


@functools.lru_cache(maxsize=4096)  # a feed repeats its timestamps (same second, same admit time)
def parse_dtm(raw: bytes, zone: ZoneInfo) -> float | None:
    """HL7 DTM/TS ``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`` -> UTC epoch seconds.

    Any precision is accepted; missing parts take their lowest value.  Without
    an offset the value is read in ``zone`` (the endpoint's timezone).  Returns
    None for an empty or unreadable value.
    """
    s = raw.decode("latin_1", "replace").strip()
    if not s:
        return None
    offset_min: int | None = None
    k = max(s.find("+", 4), s.find("-", 4))
    if k > 0:
        off = s[k + 1 :]
        if len(off) < 4 or not _ascii_digits(off[:4]):
            return None
        offset_min = int(off[:2]) * 60 + int(off[2:4])
        if s[k] == "-":
            offset_min = -offset_min
        s = s[:k]
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        if not _ascii_digits(f):
            return None
        frac = float("0." + f)
    n = len(s)
    if n < 4 or n > 14 or n % 2 or not _ascii_digits(s):
        return None
    year = int(s[0:4])
    month = int(s[4:6]) if n >= 6 else 1
    day = int(s[6:8]) if n >= 8 else 1
    hour = int(s[8:10]) if n >= 10 else 0
    minute = int(s[10:12]) if n >= 12 else 0
    second = int(s[12:14]) if n >= 14 else 0
    if not (
        1 <= month <= 12
        and 1 <= day <= _calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 60
    ):
        return None
    if offset_min is not None:
        return _calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset_min * 60 + frac
    try:
        return _dt.datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp() + frac
    except ValueError:
        return None
