"""The Modality Worklist C-FIND handler: identifier -> matching items -> responses.

Steps, per query:
1. ``parse_identifier``: flatten the request identifier into matching keys
   ``(path, vr, value)`` (``ScheduledProcedureStepSequence.Modality`` ...)
   and remember which attributes were requested (the response carries
   exactly those, zero-length when unknown).
2. ``WorklistIndex.select``: read the endpoint's active items from LMDB in one
   short read transaction (by Patient ID when the query names one exactly),
   fill in query-time values (``ebw.worklist.Renderer``), match them with
   ``ebw.dicom.match`` (Cython), and return the matches as a list -- no
   transaction stays open while responses are sent.
3. The handler yields one Pending response per item, checking C-CANCEL
   between responses.

Attributes EBW does not hold are returned zero-length; a non-empty key on
such an attribute is not used for selection and the responses carry Pending
status 0xFF01 (PS3.4 K.2.2.1.1.2).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import logging
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .. import curation, metrics
from ..config import EndpointConfig
from ..errors import QueryError
from ..store import Store, loads
from ..worklist import ITEM_SEQUENCES, SPS, START_DATETIME, VRS, Renderer, make_item
from . import match, quirks
from ._match_ref import trim  # the matcher's padding rules (its specification)
from .encode import (
    PreEncoded,
    element_writer,
    encode_identifier,
    find_rsp_command,
    install,
    is_text,
    p_data_pdus,
    sequence_writer,
)

install()

log = logging.getLogger(__name__)

SPS_KEYWORD = "ScheduledProcedureStepSequence"
NEVER_MATCHED = frozenset({"SpecificCharacterSet", "TimezoneOffsetFromUTC"})

STATUS_PENDING = 0xFF00
STATUS_PENDING_UNSUPPORTED_KEYS = 0xFF01
STATUS_CANCEL = 0xFE00
STATUS_BAD_IDENTIFIER = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700
SEND_AHEAD = 8  # responses queued ahead of the network at most
REFRESH_INTERVAL = 0.5  # seconds between background refreshes of a worker's worklists
IN_FLIGHT_BYTES = 64 * 1024  # direct writes: unsent bytes in the kernel at most
STATUS_UNABLE = 0xC001


@dataclass
class Query:
    keys: list[tuple[str, str, str]] = field(default_factory=list)
    top: list[str] = field(default_factory=list)  # requested top-level keywords, in order
    sps: list[str] | None = None  # requested SPS keywords; None when the SPS sequence was not asked for
    empty_sequences: list[str] = field(default_factory=list)  # other sequences requested: returned empty
    sps_empty: list[str] = field(default_factory=list)  # sequences requested inside the SPS item: returned empty
    # other sequences EBW fills (``ITEM_SEQUENCES``): keyword -> requested keywords in its item
    sequences: dict[str, list[str]] = field(default_factory=dict)
    unsupported: bool = False
    charset: str = ""
    timezone_requested: bool = False
    timezone: str = ""  # (0008,0201) value sent by the SCU, if any
    fixed_charset: str = ""  # quirk profile "charset:<name>": always answer in it


def _value(elem: Any) -> str:
    v = elem.value
    if v is None:
        return ""
    if elem.VM > 1:
        return "\\".join(str(x) for x in v)
    return str(v)


def _elements(ds: Dataset, where: str = "") -> Iterator[Any]:
    """The elements of ``ds`` in tag order, decoded.  pynetdicom hands over the
    identifier undecoded and pydicom decodes each element when it is first read; one
    it cannot decode (a value length that does not fit its VR, a sequence that does
    not parse, text in an unusable character set ...) makes the identifier unusable:
    ``QueryError`` naming the attribute, never the value.  So does a known attribute
    sent (explicit VR) as a sequence when it is not one, or the other way round: the
    response could not be encoded for it."""
    for tag in sorted(ds.keys()):
        name = keyword_for_tag(tag) or str(Tag(tag))
        try:
            elem = ds[tag]
            if elem.VR != "SQ":
                _value(elem)  # text (PN) can be decoded lazily: do it here
        except Exception as exc:  # noqa: BLE001 - only pydicom's decoding runs in here
            raise QueryError(f"{where}{name}: cannot be decoded ({type(exc).__name__})") from None
        if elem.keyword and (elem.VR == "SQ") != (dictionary_VR(tag) == "SQ"):
            raise QueryError(f"{where}{name}: sent as VR {elem.VR}, defined as {dictionary_VR(tag)}")
        yield elem


def _charset(ds: Dataset) -> str:
    """The identifier's Specific Character Set, ``\\``-joined; "" when absent or not
    printable ASCII text (a value the response could not echo: an SCU's reader may
    fail on it)."""
    try:
        cs = ds.get("SpecificCharacterSet")
    except Exception as exc:  # noqa: BLE001 - pydicom's decoding
        raise QueryError(f"SpecificCharacterSet: cannot be decoded ({type(exc).__name__})") from None
    if isinstance(cs, (list, MultiValue)) and all(isinstance(x, str) for x in cs):
        cs = "\\".join(cs)
    if not isinstance(cs, str) or not (cs.isascii() and cs.replace("\\", " ").isprintable()):
        return ""
    return cs


def parse_identifier(ds: Dataset) -> Query:
    q = Query()
    q.charset = _charset(ds)
    for elem in _elements(ds):
        kw = elem.keyword
        if not kw:
            if elem.tag.is_private or elem.tag.element == 0:
                continue
            q.unsupported = q.unsupported or bool(elem.value)
            continue
        if kw in NEVER_MATCHED:
            if kw == "TimezoneOffsetFromUTC":
                q.timezone_requested = True
                q.timezone = _value(elem).strip()
            continue
        if elem.VR == "SQ":
            if kw == SPS_KEYWORD:
                q.sps = []
                items = elem.value or []
                if len(items) > 1:
                    raise QueryError("ScheduledProcedureStepSequence: a query sequence holds one item")
                for sub in _elements(items[0], SPS) if items else []:
                    skw = sub.keyword
                    if not skw:
                        q.unsupported = q.unsupported or bool(sub.value)
                        continue
                    if sub.VR == "SQ":  # e.g. Scheduled Protocol Code Sequence: EBW holds none
                        q.sps_empty.append(skw)
                        if sub.value and any(len(item) for item in sub.value):
                            q.unsupported = True
                        continue
                    q.sps.append(skw)
                    path = SPS + skw
                    if path in VRS:
                        q.keys.append((path, VRS[path], _value(sub)))
                    elif _value(sub):
                        q.unsupported = True
                if not q.sps and not q.sps_empty:
                    # no item, or an empty one: universal, the whole step is returned (PS3.4 C.2.2.2.6)
                    q.sps = list(quirks.SPS_RETURN)
            elif kw in ITEM_SEQUENCES:
                items = elem.value or []
                if len(items) > 1:
                    raise QueryError(f"{kw}: a query sequence holds one item")
                wanted = q.sequences[kw] = []
                for sub in _elements(items[0], f"{kw}.") if items else []:
                    skw = sub.keyword
                    if not skw or sub.VR == "SQ":
                        q.unsupported = q.unsupported or bool(sub.value)
                        continue
                    wanted.append(skw)
                    path = f"{kw}.{skw}"
                    if path in VRS:
                        q.keys.append((path, VRS[path], _value(sub)))
                    elif _value(sub):
                        q.unsupported = True
                if not wanted:  # an empty item (or none) asks for the whole item
                    wanted.extend(ITEM_SEQUENCES[kw])
            else:
                q.empty_sequences.append(kw)
                if elem.value and any(len(item) for item in elem.value):
                    q.unsupported = True
            continue
        q.top.append(kw)
        if kw in VRS:
            q.keys.append((kw, VRS[kw], _value(elem)))
        elif _value(elem):
            q.unsupported = True
    return q


STATION = SPS + "ScheduledStationAETitle"
START_DATE = SPS + "ScheduledProcedureStepStartDate"
START_TIME = SPS + "ScheduledProcedureStepStartTime"
# keys that name the patient (or the patient's encounter) when given a single value
IDENTIFYING = ("PatientID", "PatientName", "AccessionNumber", "AdmissionID")


def _universal(value: str) -> bool:
    v = value.strip()
    return v == "" or set(v) == {"*"}


def combine_start(keys: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """SPS Start Date + Time given in the same form (both single values or both
    ranges) are matched as one date-time (PS3.4 C.2.2.2.5.4; dcm4che does the
    same): ``20261128``+``0800-1700`` is not combined, ``20261127-20261128`` +
    ``2200-0600`` is 27th 22:00 to 28th 06:00."""
    values = {p: v.strip() for p, _vr, v in keys}
    d, t = values.get(START_DATE, ""), values.get(START_TIME, "")
    if _universal(d) or _universal(t) or ("-" in d) != ("-" in t):
        return keys
    if "-" in d:
        d_lo, _, d_hi = d.partition("-")
        t_lo, _, t_hi = t.partition("-")
        lo = d_lo + t_lo.replace(":", "") if d_lo else ""
        hi = d_hi + t_hi.replace(":", "") if d_hi else ""
        combined = f"{lo}-{hi}"
    else:
        combined = d + t.replace(":", "")
    out = [k for k in keys if k[0] not in (START_DATE, START_TIME)]
    out.append((START_DATETIME, "DT", combined))
    return out


def names_patient(keys: list[tuple[str, str, str]]) -> bool:
    """True when a query names a patient: a single value (no wildcard) on one of
    Patient ID, Patient's Name, Accession Number or Admission ID.

    Read as the matcher reads the key: its padding trimmed (for PN the empty trailing
    components too) and split on ``\\``.  ``^^^^``, a lone ``\\`` or spaces match
    everyone and name nobody; a list of values names several patients, not one."""
    for p, vr, v in keys:
        if p in IDENTIFYING:
            values = [t for t in (trim(vr, part) for part in v.split("\\")) if t]
            if len(values) == 1 and "*" not in values[0] and "?" not in values[0]:
                return True
    return False


def query_zone(offset: str) -> _dt.tzinfo | None:
    """The zone a query's Timezone Offset From UTC (``+HHMM``/``-HHMM``) names, if valid."""
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isascii() and offset[1:].isdigit():
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        if minutes <= 14 * 60:
            return _dt.timezone(_dt.timedelta(minutes=minutes if offset[0] == "+" else -minutes))
    return None


class Refused(Exception):
    """A query refused by a limit (answered 0xA700 with an error comment)."""


class WorklistIndex:
    """The worklist of one endpoint, kept in memory per worker process.

    Loaded from LMDB once, then refreshed before each query from the store's
    change feed (``Store.changes_since``), so every worker sees the others'
    writes without re-reading the whole index.  Items are decoded and
    rendered (``Renderer``) once per change, and again only when the endpoint's
    settings, the day or the query's timezone change.  Matching runs in
    ``ebw.dicom.match`` (Cython) over a list of the listed items.
    """

    def __init__(self, store: Store, ep: str, get_cfg: Callable[[], EndpointConfig]) -> None:
        self.store = store
        self.ep = ep
        self.get_cfg = get_cfg
        self._lock = threading.Lock()
        self._prefix = ep.encode() + b"\x00"
        self._seq = -1  # change-feed position; -1: nothing loaded yet
        self._tag: tuple[Any, ...] = ()
        self._items: dict[bytes, dict[str, Any]] = {}  # listed items, rendered under _tag
        self._by_pid: dict[str, set[bytes]] = {}
        self._list: list[dict[str, Any]] = []
        self._list_stale = True

    def refresh(self) -> None:
        """Bring the in-memory worklist up to date now (the worker calls this in the
        background every ``REFRESH_INTERVAL``, so a query rarely has more than a few
        changes to read)."""
        cfg = self.get_cfg()
        zone = self._tag[2] if self._tag else None
        renderer = Renderer(cfg, time.time(), zone)
        with self._lock:
            self._refresh(cfg, renderer)

    def select(
        self, keys: list[tuple[str, str, str]], now: float | None = None, zone: _dt.tzinfo | None = None
    ) -> list[dict[str, Any]]:
        """The items matching ``keys`` (as ``parse_identifier`` gives them), after the
        endpoint's station AE title rule, combined date-time matching, curation,
        privacy (confidential encounters only for queries that name the patient)
        and result caps (``Refused``).  ``zone``: the query's own timezone."""
        cfg = self.get_cfg()
        if cfg.station_aet_matching != "strict":
            keys = [k for k in keys if k[0] != STATION]
        keys = combine_start(keys)
        named = names_patient(keys)
        compiled = match.compile_query(keys)
        now = time.time() if now is None else now
        renderer = Renderer(cfg, now, zone)
        patient_id = _exact(keys, "PatientID")
        with self._lock:
            self._refresh(cfg, renderer)
            if patient_id is not None:
                candidates = [self._items[k] for k in self._by_pid.get(patient_id, ())]
            else:
                if self._list_stale:
                    self._list = list(self._items.values())
                    self._list_stale = False
                candidates = self._list
        found = []
        for i in match.filter_items(compiled, candidates):
            item = candidates[i]
            expires = item["_expires"]
            if expires is not None and now >= expires:
                continue
            if not named and item["_vip"] and item["_vip"] in cfg.vip_values:
                continue
            found.append(item)
        if cfg.cfind_max_results and len(found) > cfg.cfind_max_results:
            raise Refused(f"more than {cfg.cfind_max_results} matches: refine the query")
        if not named and cfg.broad_query_max and len(found) > cfg.broad_query_max:
            raise Refused(f"more than {cfg.broad_query_max} matches for a query that names no patient")
        return found

    def _refresh(self, cfg: EndpointConfig, renderer: Renderer) -> None:
        """Bring the in-memory worklist up to date (caller holds the lock): the changed
        encounters from the change feed, or every open one again when the feed does not
        reach back, the settings changed or the day did (read from LMDB: only the
        rendered items are kept in memory)."""
        tag = (cfg, renderer.midnight_ts, renderer.zone)
        rules = curation.rules_of(cfg.curation)
        with self.store.read() as txn:
            seq = self.store.change_seq(txn)
            full = self._seq < 0 or tag != self._tag
            released = False
            changed: set[bytes] = set()
            if not full and seq != self._seq:
                feed = self.store.changes_since(txn, self._seq)
                if feed is None:
                    full = True
                else:
                    n = len(self._prefix)
                    changed = {k[n:] for k in feed if k.startswith(self._prefix)}
            if full:
                self._tag = tag
                self._items, self._by_pid = {}, {}
                for enc_key, raw in self.store.iter_active_raw(txn, self.ep):
                    self._set_item(bytes(enc_key), _listing(loads(raw), rules, renderer))
                self._list_stale = True
                released = True
            elif changed:
                active, enc = self.store.db["active"], self.store.db["enc"]
                for enc_key in changed:
                    dbkey = self._prefix + enc_key
                    raw = txn.get(dbkey, db=enc) if txn.get(dbkey, db=active) is not None else None
                    self._set_item(enc_key, None if raw is None else _listing(loads(raw), rules, renderer))
                self._list_stale = True
            self._seq = seq
        if released:
            self.store.release_mapped_pages()  # the records read are in memory now

    def _set_item(self, enc_key: bytes, item: dict[str, Any] | None) -> None:
        old = self._items.pop(enc_key, None)
        if old is not None:
            keys = self._by_pid.get(old["PatientID"])
            if keys is not None:
                keys.discard(enc_key)
                if not keys:
                    del self._by_pid[old["PatientID"]]
        if item is not None:
            self._items[enc_key] = item
            self._by_pid.setdefault(item["PatientID"], set()).add(enc_key)

    def timezone_offset(self, now: float | None = None, zone: _dt.tzinfo | None = None) -> str:
        return Renderer(self.get_cfg(), time.time() if now is None else now, zone).offset


def _listing(record: dict[str, Any], rules: curation.Rules, renderer: Renderer) -> dict[str, Any] | None:
    """The rendered item (with ``_expires``: when it leaves the list by age, or
    None), or None when the curation rules leave the encounter out."""
    facts = curation.facts_of(record)
    listed, _reasons = rules.decide(facts, record.get("status", ""), 0.0)
    if not listed:
        return None
    limit = rules.max_age_seconds(facts["patient_class"])
    item = renderer.render(make_item(record))
    item["_expires"] = None if limit is None else curation.opened_at(record) + limit
    return item


def _exact(keys: list[tuple[str, str, str]], path: str) -> str | None:
    """The value of a single-value (no wildcard) key on ``path``, else None."""
    for p, _vr, value in keys:
        if p == path:
            v = value.strip()
            if v and "*" not in v and "?" not in v and "\\" not in v:
                return v
    return None


# ------------------------------------------------------------------------------ responses


def _charset_for(values: list[str], requested: str, fixed: str = "") -> tuple[str, str]:
    """(Specific Character Set, Python codec) for a response holding ``values``:
    none when all ASCII; the quirk profile's fixed one; ``ISO_IR 100`` when the
    query asked for it and the values fit; else ``ISO_IR 192``."""
    text = "".join(values)
    if fixed:
        # ISO_IR 6 is the default repertoire: never named in a response
        return ("" if text.isascii() or fixed == "ISO_IR 6" else fixed), quirks.CHARSETS[fixed]
    if text.isascii():
        return "", "ascii"
    if requested.upper().replace("-", "_") in ("ISO_IR 100",):
        try:
            text.encode("latin_1")
            return "ISO_IR 100", "latin_1"
        except UnicodeEncodeError:
            pass
    return "ISO_IR 192", "utf_8"


def _response_values(q: Query, item: dict[str, Any]) -> tuple[list[str], list[str], str, str]:
    """Values of the requested top-level and SPS keys, then those of ``q.sequences`` (in
    order), and the character set to send them in."""
    values = [item.get(kw, "") if kw in VRS else "" for kw in q.top]
    sps_values = [item.get(SPS + kw, "") for kw in q.sps] if q.sps is not None else []
    for seq, kws in q.sequences.items():
        sps_values += [item.get(f"{seq}.{kw}", "") for kw in kws]
    charset, codec = _charset_for(values + sps_values, q.charset, q.fixed_charset)
    if q.fixed_charset:
        values = [quirks.transliterate(v, codec) for v in values]
        sps_values = [quirks.transliterate(v, codec) for v in sps_values]
    # all ASCII: no Specific Character Set (the default repertoire), whatever the query
    # named -- an echo would repeat a character set EBW does not know or does not use
    return values, sps_values, charset, codec


def encode_response(q: Query, item: dict[str, Any], tz_offset: str, explicit: bool) -> PreEncoded:
    """The response identifier as bytes (see ``ebw.dicom.encode``); same content as
    ``build_response``."""
    values, sps_values, charset, codec = _response_values(q, item)
    top = list(zip(q.top, values, strict=True))
    if charset:
        top.append(("SpecificCharacterSet", charset))
    if q.timezone_requested:
        top.append(("TimezoneOffsetFromUTC", tz_offset))
    sps, sequences = _split_sequences(q, sps_values)
    return PreEncoded(encode_identifier(top, sps, q.empty_sequences, codec, explicit, q.sps_empty, sequences), explicit)


def _split_sequences(
    q: Query, values: list[str]
) -> tuple[list[tuple[str, str]] | None, list[tuple[str, list[tuple[str, str]] | None]]]:
    """The SPS item's (keyword, value) pairs, and each other sequence's item (None -- no
    item -- when EBW holds none of its values for this encounter)."""
    n = len(q.sps) if q.sps is not None else 0
    sps = list(zip(q.sps, values[:n], strict=True)) if q.sps is not None else None
    sequences: list[tuple[str, list[tuple[str, str]] | None]] = []
    for seq, kws in q.sequences.items():
        part = values[n : n + len(kws)]
        n += len(kws)
        sequences.append((seq, list(zip(kws, part, strict=True)) if any(part) else None))
    return sps, sequences


class ResponseEncoder:
    """``encode_response`` compiled for one query: tags, VRs and element heads are
    resolved once, so an item costs a few microseconds.  ``encode(item)`` returns the
    same bytes as ``encode_response(q, item, tz, explicit)._ebw_data``, or None when
    the query has a fixed character set (quirk profile: the caller then uses
    ``encode_response``, which transliterates)."""

    def __init__(self, q: Query, tz_offset: str, explicit: bool) -> None:
        self.usable = not q.fixed_charset
        self.requested_charset = q.charset
        self.top_keys = [kw if kw in VRS else "" for kw in q.top]
        # (tag, kind, writer, text VR?) in tag order.  kind: >= 0 index of a top-level
        # value; -1 constant bytes; -2 the SPS item; -3 - j other sequence j; -9 charset
        plan: list[tuple[int, int, Any, bool]] = []
        for i, kw in enumerate(q.top):
            tag, write = element_writer(kw, explicit)
            plan.append((tag, i, write, is_text(kw)))
        tag, self.charset_writer = element_writer("SpecificCharacterSet", explicit)
        plan.append((tag, -9, self.charset_writer, False))
        if q.timezone_requested:
            tag, write = element_writer("TimezoneOffsetFromUTC", explicit)
            plan.append((tag, -1, write(tz_offset.encode("ascii", "replace")), False))
        for kw in q.empty_sequences:
            plan.append((element_writer(kw, explicit)[0], -1, sequence_writer(kw, explicit)(None), False))
        self.sps_paths = [SPS + kw for kw in q.sps] if q.sps is not None else []
        self.sps_plan: list[tuple[int, int, Any, bool]] = []
        if q.sps is not None:
            for i, kw in enumerate(q.sps):
                tag, write = element_writer(kw, explicit)
                self.sps_plan.append((tag, i, write, is_text(kw)))
            for kw in q.sps_empty:
                self.sps_plan.append((element_writer(kw, explicit)[0], -1, sequence_writer(kw, explicit)(None), False))
            self.sps_plan.sort(key=lambda e: e[0])
            plan.append((element_writer(SPS_KEYWORD, explicit)[0], -2, sequence_writer(SPS_KEYWORD, explicit), False))
        self.seq_paths: list[list[str]] = []
        self.seq_plans: list[list[tuple[int, Any, bool]]] = []
        for j, (seq, kws) in enumerate(q.sequences.items()):
            self.seq_paths.append([f"{seq}.{kw}" for kw in kws])
            entries = sorted(((*element_writer(kw, explicit), k) for k, kw in enumerate(kws)), key=lambda e: e[0])
            self.seq_plans.append([(k, write, is_text(kws[k])) for _tag, write, k in entries])
            plan.append((element_writer(seq, explicit)[0], -3 - j, sequence_writer(seq, explicit), False))
        plan.sort(key=lambda e: e[0])
        self.plan = plan

    def encode(self, item: dict[str, Any]) -> bytes | None:
        if not self.usable:
            return None
        get = item.get
        top = [get(k, "") if k else "" for k in self.top_keys]
        sps = [get(p, "") for p in self.sps_paths]
        seqs = [[get(p, "") for p in paths] for paths in self.seq_paths]
        text = "".join(top) + "".join(sps) + "".join("".join(v) for v in seqs)
        if text.isascii():
            charset, codec = "", ""
        else:
            charset, codec = _charset_for([text], self.requested_charset)

        def enc(value: str, text_vr: bool) -> bytes:
            if not codec:
                return value.encode()
            return value.encode(codec if text_vr else "ascii", "replace")

        out = []
        for _tag, kind, arg, text_vr in self.plan:
            if kind >= 0:
                out.append(arg(enc(top[kind], text_vr)))
            elif kind == -1:
                out.append(arg)
            elif kind == -9:
                if charset:
                    out.append(arg(charset.encode("ascii", "replace")))
            elif kind == -2:
                body = b"".join(w(enc(sps[i], t)) if i >= 0 else w for _tag2, i, w, t in self.sps_plan)
                out.append(arg(body))
            else:
                j = -3 - kind
                values = seqs[j]
                if any(values):
                    out.append(arg(b"".join(w(enc(values[k], t)) for k, w, t in self.seq_plans[j])))
                else:
                    out.append(arg(None))
        return b"".join(out)


def build_response(q: Query, item: dict[str, Any], tz_offset: str) -> Dataset:
    """The response identifier as a pydicom Dataset (for big-endian or deflated transfer syntaxes)."""
    values, sps_values, charset, _codec = _response_values(q, item)
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    if q.timezone_requested:
        ds.TimezoneOffsetFromUTC = tz_offset
    for kw, v in zip(q.top, values, strict=True):
        setattr(ds, kw, v if v != "" else None)
    sps, sequences = _split_sequences(q, sps_values)
    if sps is not None:
        sub = Dataset()
        for kw, v in sps:
            setattr(sub, kw, v if v != "" else None)
        for kw in q.sps_empty:
            setattr(sub, kw, Sequence([]))
        ds.ScheduledProcedureStepSequence = Sequence([sub])
    for seq, pairs in sequences:
        items = []
        if pairs is not None:
            sub = Dataset()
            for kw, v in pairs:
                setattr(sub, kw, v if v != "" else None)
            items.append(sub)
        setattr(ds, seq, Sequence(items))
    for kw in q.empty_sequences:
        setattr(ds, kw, Sequence([]))
    return ds


class _Cancel:
    """``event.is_cancelled`` consumes pynetdicom's record of the C-CANCEL: ask once, remember."""

    def __init__(self, event: Any) -> None:
        self.event = event
        self.seen = False

    def __call__(self) -> bool:
        if not self.seen and self.event.is_cancelled:
            self.seen = True
        return self.seen


def _wait_unsent_below(sock: socket.socket, limit: int, event: Any, cancelled: _Cancel) -> None:
    """Keep at most ``limit`` bytes unsent in the kernel, so a C-CANCEL still finds
    responses to stop (Linux SIOCOUTQ; elsewhere no wait)."""
    try:
        for _ in range(20_000):
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            if unsent <= limit or cancelled() or not event.assoc.is_established:
                return
            time.sleep(0.0005)
    except (OSError, AttributeError):
        return


def _raw_socket(event: Any) -> socket.socket | None:
    """The association's plain TCP socket when it is safe to write to it directly:
    nothing queued in pynetdicom's DUL (so no PDU is half-sent), no TLS."""
    dul = getattr(event.assoc, "dul", None)
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket) or dul.to_provider_queue.qsize():
        return None
    return sock


def make_handler(index: WorklistIndex) -> Callable[..., Iterator[tuple[int, Dataset | None]]]:
    ep = index.ep

    def handle_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        t0 = time.perf_counter()
        try:
            q = parse_identifier(event.identifier)
            quirks.apply(q, quirks.for_calling(index.get_cfg().quirks, event.assoc.requestor.ae_title))
            zone = query_zone(q.timezone)
            items = index.select(q.keys, zone=zone)
        except Refused as exc:
            log.info("%s: C-FIND from %s refused: %s", ep, event.assoc.requestor.ae_title, exc)
            metrics.cfind_queries.labels(ep, "A700").inc()
            status_ds = Dataset()
            status_ds.Status = STATUS_OUT_OF_RESOURCES
            status_ds.ErrorComment = str(exc)[:64]
            yield status_ds, None
            return
        except QueryError as exc:
            log.info("%s: C-FIND from %s refused: %s", ep, event.assoc.requestor.ae_title, exc)
            metrics.cfind_queries.labels(ep, "A900").inc()
            yield STATUS_BAD_IDENTIFIER, None
            return
        except Exception as exc:  # noqa: BLE001 - answered with a failure status, logged without data
            log.exception("%s: C-FIND failed (%s)", ep, type(exc).__name__)
            metrics.cfind_queries.labels(ep, "C001").inc()
            yield STATUS_UNABLE, None
            return
        metrics.cfind_duration.labels(ep).observe(time.perf_counter() - t0)
        metrics.cfind_matches.labels(ep).observe(len(items))
        log.debug("%s: C-FIND from %s: %d matches", ep, event.assoc.requestor.ae_title, len(items))
        try:
            yield from _respond(event, index, q, items, zone)
        except Exception as exc:  # noqa: BLE001 - an item that cannot be encoded: 0xC001, counted, logged
            log.exception("%s: C-FIND responses failed (%s)", ep, type(exc).__name__)
            metrics.cfind_queries.labels(ep, "C001").inc()
            yield STATUS_UNABLE, None

    return handle_find


def _respond(
    event: Any, index: WorklistIndex, q: Query, items: list[dict[str, Any]], zone: _dt.tzinfo | None
) -> Iterator[tuple[int, Dataset | None]]:
    """The Pending responses to a C-FIND and its final status (see ``make_handler``)."""
    ep = index.ep
    status = STATUS_PENDING_UNSUPPORTED_KEYS if q.unsupported else STATUS_PENDING
    tz = index.timezone_offset(zone=zone) if q.timezone_requested else ""
    outq = getattr(getattr(event.assoc, "dul", None), "to_provider_queue", None)
    ts = event.context.transfer_syntax
    direct = ts in (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
    explicit = ts == ExplicitVRLittleEndian
    sock = _raw_socket(event) if direct and len(items) > 1 else None
    if sock is not None:
        # Long answers: write the Pending responses straight to the socket (pynetdicom
        # spends ~1 ms per response in DIMSE/DUL); pynetdicom sends the final status.
        command = find_rsp_command(event.request.MessageID, status)
        cx_id = event.context.context_id
        max_pdu = event.assoc.requestor.maximum_length or 0
        buf = bytearray()
        cancelled = _Cancel(event)
        fast = ResponseEncoder(q, tz, explicit)
        try:
            for item in items:
                if cancelled():
                    if buf:
                        sock.sendall(buf)
                    metrics.cfind_queries.labels(ep, "FE00").inc()
                    yield STATUS_CANCEL, None
                    return
                data = fast.encode(item)
                if data is None:
                    data = encode_response(q, item, tz, explicit)._ebw_data
                buf += p_data_pdus(cx_id, command, data, max_pdu)
                if len(buf) > 16384:
                    sock.sendall(buf)
                    buf.clear()
                    _wait_unsent_below(sock, IN_FLIGHT_BYTES, event, cancelled)
            if buf:
                sock.sendall(buf)
        except OSError as exc:
            log.info("%s: C-FIND responses to %s interrupted: %s", ep, event.assoc.requestor.ae_title, exc)
            return
        metrics.cfind_queries.labels(ep, "0000").inc()
        return
    for item in items:
        # Backpressure: pynetdicom queues responses without bound; keep the queue
        # short so memory stays flat and a C-CANCEL is seen within a few responses.
        if outq is not None:
            waited = 0
            while outq.qsize() > SEND_AHEAD and waited < 60_000 and event.assoc.is_established:
                time.sleep(0.0005)
                waited += 1
        if event.is_cancelled:
            metrics.cfind_queries.labels(ep, "FE00").inc()
            yield STATUS_CANCEL, None
            return
        yield status, (encode_response(q, item, tz, explicit) if direct else build_response(q, item, tz))
    metrics.cfind_queries.labels(ep, "0000").inc()
