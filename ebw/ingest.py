"""The HL7 side of an endpoint: MLLP frame in, ADT change durably applied, ACK out.

``AA`` is sent only after the write transaction holding the message's change
has committed (see ``ebw.committer``); a commit failure is answered ``AE``
(207, the sender should resend).  Unreadable messages get ``AR``, readable
ones that cannot be applied ``AE``/``AR`` with an ERR segment; nothing is
stored for them.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from json.encoder import encode_basestring as _json_str  # a JSON string, as store.dumps writes it
from typing import Any

from . import encounters, metrics
from .committer import Committer
from .config import EndpointConfig
from .errors import ParseError, RejectError, StoreError
from .hl7 import ack as hl7ack
from .hl7._scan_ref import BAD_SEGMENT_ID
from .hl7.adt import KNOWN_EVENTS, Change, Header, Mapping, parse_header
from .hl7.reader import parse
from .hl7.scan import scan
from .hl7.text import CHARSETS
from .log import shape
from .store import Store, pack_message

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def mapping_for(cfg: EndpointConfig) -> Mapping:
    """How an endpoint's settings say its feed is read."""
    return Mapping(
        timezone=cfg.timezone,
        charset=CHARSETS[cfg.hl7_charset],
        patient_id_type=cfg.patient_id_type,
        patient_id_authority=cfg.patient_id_authority,
        visit_number=tuple(cfg.visit_number),
        location_components=tuple(cfg.location_components),
        location_separator=cfg.location_separator,
    )


class Hl7Endpoint:
    """Answers the MLLP frames of one endpoint."""

    def __init__(self, ep: str, get_cfg: Callable[[], EndpointConfig], store: Store, committer: Committer) -> None:
        self.ep = ep
        self.get_cfg = get_cfg
        self.store = store
        self.committer = committer
        self.in_flight = 0  # messages received and not yet answered
        # metric children, looked up once rather than per message
        self._ack_seconds = metrics.hl7_ack_seconds.labels(ep)
        self._counted: dict[tuple[str, str], Any] = {}  # (event label, ACK code) -> counter

    async def handle(self, frame: bytes) -> bytes:
        t0 = time.perf_counter()
        cfg = self.get_cfg()
        event = ""
        self.in_flight += 1
        try:
            try:
                change = parse(frame, mapping_for(cfg))
            except RejectError as exc:
                header = _header_of(frame)
                event = header.event if header else ""
                log.info("%s: MSH-10 %s answered %s %d (%s)", self.ep, _cid(header), exc.ack, exc.code, exc.text)
                self._journal_only(frame, header, exc.ack, event)
                return self._answer(header, exc.ack, exc.code, exc.text, exc.location, event)
            except ParseError as exc:
                log.info("%s: unreadable message answered AR: %s; shape %s", self.ep, exc, shape(frame))
                code = 100 if exc.reason == "no MSH segment" else 102
                header = _header_of(frame)
                self._journal_only(frame, header, "AR", "")
                return self._answer(header, "AR", code, f"Unreadable message: {exc.reason}", "MSH", "")
            event = change.event
            processing = change.header.processing_id.split(change.header.seps[1:2])[0].strip().upper()
            if (processing.decode("latin_1") or "P") not in cfg.hl7_processing_ids:
                # training or debugging messages on an endpoint that takes production only
                log.info("%s: MSH-10 %s answered AR 202 (processing ID not accepted)", self.ep, _cid(change.header))
                self._journal_only(frame, change.header, "AR", event)
                return self._answer(change.header, "AR", 202, "Unsupported processing ID", "MSH^1^11", event)
            if change.charset_fallback:
                metrics.hl7_charset_fallback.labels(self.ep).inc()
            try:
                applied = await self.committer.submit(self._job(change, cfg, frame))
            except StoreError as exc:
                log.error("%s: MSH-10 %s not stored: %s", self.ep, _cid(change.header), exc)
                return self._answer(change.header, "AE", 207, "Not stored, please resend", "", event)
            if applied.accessions:
                metrics.accessions_issued.labels(self.ep).inc(applied.accessions)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: MSH-10 %s %s %s", self.ep, _cid(change.header), event, applied.outcome)
            return self._answer(change.header, "AA", 0, "", "", event)
        finally:
            self.in_flight -= 1
            self._ack_seconds.observe(time.perf_counter() - t0)

    def _job(self, change: Change, cfg: EndpointConfig, frame: bytes) -> Callable[[Any], encounters.Applied]:
        store, ep = self.store, self.ep

        # here, not in the write transaction (which holds LMDB's writer lock)
        packed = pack_message(frame)
        parts = _journal_header_parts(ep, change.header, "AA", change.event)
        digest = encounters.content_digest(frame)

        def job(txn: Any) -> encounters.Applied:
            now = time.time()
            applied = encounters.apply(store, txn, ep, cfg, change, now, digest=digest)
            store.journal_append(txn, _journal_header_json(now, parts, applied.outcome), packed)
            return applied

        return job

    def _journal_only(self, frame: bytes, header: Header | None, ack: str, event: str) -> None:
        """Keep a rejected message in the journal too (its ACK does not wait for that)."""
        store, ep = self.store, self.ep
        packed = pack_message(frame)

        def job(txn: Any) -> None:
            store.journal_append(txn, _journal_header(time.time(), ep, header, ack, event, "rejected"), packed)

        self.committer.submit(job).add_done_callback(_ignore_result)

    def _answer(self, header: Header | None, code: str, err: int, text: str, location: str, event: str) -> bytes:
        label = event_label(event)
        counter = self._counted.get((label, code))
        if counter is None:
            counter = self._counted[(label, code)] = metrics.hl7_messages.labels(self.ep, label, code)
        counter.inc()
        return hl7ack.build(header, code, err, text, location, event)

    def oversize(self, partial: bytes) -> bytes:
        """AR for a frame over the size cap (the connection is closed after it)."""
        header = _header_of(partial)
        log.warning("%s: MSH-10 %s frame over the size cap", self.ep, _cid(header))
        return self._answer(header, "AR", 207, "Message too large", "", header.event if header else "")


def event_label(event: str) -> str:
    """The ``event`` label of ``ebw_hl7_messages_total``: a trigger event EBW knows
    (``adt.KNOWN_EVENTS``, the list of docs/hl7-interface.md section 3) by its name,
    ``unknown`` when none could be read, ``other`` for anything else.  The label set
    stays bounded whatever senders put in MSH-9 (each value is a time series kept
    for the life of the process)."""
    if not event:
        return "unknown"
    return event if event in KNOWN_EVENTS else "other"


def _journal_header(now: float, ep: str, header: Header | None, ack: str, event: str, outcome: str) -> dict[str, Any]:
    h = {"t": now, "ep": ep, "ack": ack, "ev": event, "outcome": outcome}
    if header is not None:
        h["cid"] = header.control_id.decode("latin_1")
        h["from"] = (header.msh3 + b"/" + header.msh4).decode("latin_1")
    return h


def _journal_header_parts(ep: str, header: Header | None, ack: str, event: str) -> tuple[bytes, bytes]:
    """The JSON of ``_journal_header`` around its two values known only in the write
    transaction (receive time, outcome), made before it: ``_journal_header_json``
    then gives exactly ``store.dumps(_journal_header(...))``."""
    pre = f',"ep":{_json_str(ep)},"ack":{_json_str(ack)},"ev":{_json_str(event)},"outcome":'
    if header is None:
        return pre.encode("utf-8"), b"}"
    cid = _json_str(header.control_id.decode("latin_1"))
    sender = _json_str((header.msh3 + b"/" + header.msh4).decode("latin_1"))
    return pre.encode("utf-8"), f',"cid":{cid},"from":{sender}}}'.encode()


def _journal_header_json(now: float, parts: tuple[bytes, bytes], outcome: str) -> bytes:
    return b'{"t":' + float.__repr__(now).encode() + parts[0] + _json_str(outcome).encode("utf-8") + parts[1]


def _ignore_result(fut: Any) -> None:
    if not fut.cancelled():
        fut.exception()


_MSH_ONLY = frozenset({"MSH"})


def _header_of(data: bytes) -> Header | None:
    """The MSH of a message that could not be fully read, if it is readable.

    The MSH is read as ``parse`` reads it: the whole message is scanned (leading
    BOM and blank lines skipped, segment breaks found by the same rules), so MSH-10
    is the same bytes.  When a later segment has a bad ID, the message up to that
    segment is scanned again with ``ZZZ`` in its place.  That finds every break
    before it exactly as in the whole message: the break before a bad segment is a
    CR (a lone LF breaks only before a valid segment ID or trailing whitespace), and
    a bad segment, like ``ZZZ``, holds something other than whitespace.
    """
    try:
        seps, nseg, segments = scan(data, _MSH_ONLY)
    except ParseError as exc:
        if exc.reason != BAD_SEGMENT_ID or exc.offset <= 0:
            return None  # empty, no MSH, bad field separator: no MSH to read
        try:
            seps, nseg, segments = scan(data[: exc.offset] + b"ZZZ", _MSH_ONLY)
        except ParseError:
            return None
        nseg -= 1
    return parse_header(seps, segments[0][1], nseg)


_LOG_SAFE = {i: f"\\x{i:02x}" for i in [*range(32), 127, 92]}  # control bytes and the backslash


def _cid(header: Header | None) -> str:
    """MSH-10 for a log line: control bytes written as ``\\xNN``, so a crafted MSH-10
    cannot start a fake log line."""
    return header.control_id.decode("latin_1").translate(_LOG_SAFE) if header else "?"
