"""Accession numbers: issue, rotation every period and at local midnight, use by an exam.

A number is ``<prefix><counter value zero-padded to digits>`` (prefix 2-4
letters, at least 12 digits, at most 16 characters: DICOM SH).  The counter
is one LMDB value shared by every endpoint and process (``seq:accession`` in
the meta db), incremented inside the write transaction that records the
number, so it never goes back -- not across processes, crashes or restarts.
Since a prefix is letters only and the number digits only, two numbers are
equal only if their counter values are: a number is never issued twice,
whatever the prefix and digits were or become.  Every issued number is
recorded (``accession`` db, keyed by counter value) with its encounter and
issue time, so a late exam still finds its patient; unused numbers are
forgotten after ``EBW_JOURNAL_RETENTION_DAYS``, numbers used by an exam are
kept.

Rotation (the seed's "Accession Number Generation" period): every open
encounter gets a new number once its current one is ``period`` old, and at
local midnight in the endpoint's timezone (so "today's" worklist never shows
a start date of yesterday).  The timer process (``ebw.timers``) runs
``rotate_due`` every second; the order is kept by the ``due`` db (issue time
-> encounter), so a pass costs what it rotates.  A settings change applies
to the next number issued; numbers already issued, and those bound to an exam,
never change.

Encounters the worklist does not show (curation rules, or older than the
maximum age of their patient class: an ED visit never discharged) get no new
numbers; they are looked at again a period later, or at their next ADT change.

Use by an exam (``consume``): when an MPPS or a stored image carries an
encounter's *current* number, the number is flagged as used and the
encounter gets a fresh one at once, so two successive exams never share it.

The Study Instance UID that goes with a number is derived from it
(``2.25.<UUID-5 of the number under this installation's random namespace>``),
so the accession db need not store it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import uuid
from typing import Any
from zoneinfo import ZoneInfo

from . import curation
from .config import EndpointConfig
from .errors import StoreError
from .store import Store, patient_ident

OPEN = ("active", "pending")


def format_accession(prefix: str, digits: int, number: int) -> str:
    text = str(number)
    if len(text) > digits:
        raise StoreError(f"accession numbers with {digits} digits are exhausted")
    return prefix + text.zfill(digits)


def study_uid(store: Store, txn: Any, accession: str) -> str:
    """The Study Instance UID of an accession number (PS3.5 B.2: UUID-derived, root 2.25):
    ``uuid.uuid5(<installation id>, accession)`` as an integer."""
    return f"2.25.{uuid5_int(store.install_id(txn), accession)}"


_UUID5_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))  # variant and version bits
_UUID5_SET = (0x8000 << 48) | (5 << 76)  # RFC 4122 variant, version 5


def uuid5_int(namespace: uuid.UUID, name: str) -> int:
    """``uuid.uuid5(namespace, name).int``, without making the UUID objects (a third of
    the time; it runs for every number issued)."""
    digest = hashlib.sha1(namespace.bytes + name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:16], "big") & _UUID5_CLEAR | _UUID5_SET


def issue(store: Store, txn: Any, cfg: EndpointConfig, ep: str, enc_key: str, now: float) -> tuple[str, str]:
    """Issue the next number to an encounter inside ``txn``: ``(accession, study UID)``."""
    while True:
        number = store.next_seq(txn, "accession")
        accession = format_accession(cfg.accession_prefix, cfg.accession_digits, number)
        if store.bind_accession(txn, number, accession, ep, enc_key, now):
            return accession, study_uid(store, txn, accession)


HISTORY = 24  # recent numbers kept in the encounter record (the API's worklist view)


def remember(record: dict[str, Any]) -> None:
    """Add the record's current number to its short history (newest last)."""
    history = record.get("accession_history") or []
    history.append([record["accession"], record["accession_ts"]])
    record["accession_history"] = history[-HISTORY:]


def listed(cfg: EndpointConfig, record: dict[str, Any], now: float) -> bool:
    """Whether the endpoint's worklist shows the encounter at ``now`` (curation rules and
    maximum age, as a query would decide)."""
    rules = curation.rules_of(cfg.curation)
    facts = curation.facts_of(record)
    if not rules.decide(facts, record.get("status", ""), 0.0)[0]:
        return False
    limit = rules.max_age_seconds(facts["patient_class"])
    return limit is None or now < curation.opened_at(record) + limit


def rotate(
    store: Store, txn: Any, cfg: EndpointConfig, ep: str, enc_key: str, now: float, only_listed: bool = False
) -> str | None:
    """Give an open encounter a new number now; None if it is not open.  With
    ``only_listed``, an encounter its worklist does not show (curation, age) gets no
    number: it is looked at again one period later (or at its next ADT change)."""
    record = store.get_encounter(txn, ep, enc_key)
    if record is None or record.get("status") not in OPEN:
        store.set_closed(txn, ep, enc_key)  # a stale entry: nothing to rotate
        return None
    if only_listed and not listed(cfg, record, now):
        store.set_open(txn, ep, enc_key, record["status"], now)  # parked: due again in a period
        return None
    record["accession"], record["study_uid"] = issue(store, txn, cfg, ep, enc_key, now)
    record["accession_ts"] = now
    remember(record)
    ident = patient_ident(record)
    store.put_encounter(txn, ep, enc_key, record, ident)
    store.set_open(txn, ep, enc_key, record["status"], now)
    return record["accession"]


def due_before(cfg: EndpointConfig, now: float, zone: _dt.tzinfo | None = None) -> float:
    """Numbers issued before this time are due: older than the period, or issued
    before local midnight (the endpoint's timezone)."""
    local = _dt.datetime.fromtimestamp(now, zone or ZoneInfo(cfg.timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    # "older than the period": issued at or before now - period
    return max(now - cfg.accession_period_minutes * 60 + 1e-6, midnight)


def rotate_due(store: Store, txn: Any, cfg: EndpointConfig, ep: str, now: float, limit: int = 1000) -> int:
    """Rotate up to ``limit`` encounters of ``ep`` whose number is due, oldest first
    (those the worklist does not show are parked for a period instead).  Returns how
    many got a new number."""
    n = 0
    for enc_key in store.due(txn, ep, due_before(cfg, now), limit):
        if rotate(store, txn, cfg, ep, enc_key, now, only_listed=True) is not None:
            n += 1
    return n


def consume(store: Store, txn: Any, accession: str, now: float, configs: dict[str, EndpointConfig]) -> dict[str, Any]:
    """An exam used ``accession``.  Flags it as used (kept for good) and, if it is the
    encounter's current number, issues a fresh one at once.  Returns what is known:
    ``{"ep", "key", "encounter" (record or None), "fresh" (new number or None)}``, or
    ``{}`` for a number EBW does not know."""
    found = store.lookup_accession(txn, accession)
    if found is None:
        return {}
    store.mark_accession_used(txn, accession)
    ep, enc_key = found["ep"], found["key"]
    record = store.get_encounter(txn, ep, enc_key)
    fresh = None
    cfg = configs.get(ep)
    if record is not None and record.get("accession") == accession and record.get("status") in OPEN and cfg:
        fresh = rotate(store, txn, cfg, ep, enc_key, now)
        record = store.get_encounter(txn, ep, enc_key)
    return {"ep": ep, "key": enc_key, "encounter": record, "fresh": fresh}
