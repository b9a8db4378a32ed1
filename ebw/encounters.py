"""Applies ADT changes to the encounter index, inside one LMDB write transaction.

Status of an encounter: ``active`` (on the worklist), ``pending`` (pre-admit,
not on the worklist), ``discharged``, ``cancelled``.

=========  ================================================================
event      effect
=========  ================================================================
A01, A04   create or update the encounter; active (issues an accession
           number when it has none)
A02, A08   update (A02: the new location); creates the encounter when unknown (upsert), active
A03        discharged: leaves the worklist; an unknown encounter is recorded
           as discharged
others     recognised ADT events that do not concern encounters: no change
=========  ================================================================

Updates follow HL7 snapshot rules: a field not sent keeps its stored value,
the explicit null ``""`` clears it.
"""

from __future__ import annotations

from typing import Any

from .config import EndpointConfig
from .hl7.adt import Change
from .store import Store, patient_ident
from .worklist import issue_accession

ACTIVATE = frozenset({"A01", "A04"})
UPDATE = frozenset({"A02", "A08"})
DISCHARGE = frozenset({"A03"})


def _merge(target: dict[str, Any], values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is not None:
            target[k] = v


class Applied:
    """What one change did: ``outcome`` and the issued accession numbers (metrics)."""

    __slots__ = ("outcome", "accessions")

    def __init__(self, outcome: str, accessions: int = 0) -> None:
        self.outcome = outcome
        self.accessions = accessions


def apply(store: Store, txn: Any, ep: str, cfg: EndpointConfig, change: Change, now: float) -> Applied:
    ev = change.event
    if ev in ACTIVATE or ev in UPDATE:
        return _upsert(store, txn, ep, cfg, change, now, status="active")
    if ev in DISCHARGE:
        return _discharge(store, txn, ep, cfg, change, now)
    return Applied("ignored")


def _new_record(change: Change, now: float) -> dict[str, Any]:
    return {
        "key": change.encounter_key,
        "patient_key": change.patient_key,
        "status": "",
        "patient": {},
        "visit": {},
        "accession": "",
        "accession_ts": 0.0,
        "study_uid": "",
        "created": now,
    }


def _stamp(record: dict[str, Any], change: Change, now: float) -> None:
    record["event"] = change.event
    record["updated"] = now
    if change.when is not None:
        record["when"] = change.when


def _upsert(store: Store, txn: Any, ep: str, cfg: EndpointConfig, change: Change, now: float, status: str) -> Applied:
    enc_key = change.encounter_key
    record = store.get_encounter(txn, ep, enc_key)
    created = record is None
    old_ident = None if record is None else patient_ident(record)
    if record is None:
        record = _new_record(change, now)
    record["patient_key"] = change.patient_key
    _merge(record["patient"], change.patient)
    _merge(record["visit"], change.visit)
    record["status"] = status
    _stamp(record, change, now)
    issued = 0
    if status == "active" and not record["accession"]:
        record["accession"], record["study_uid"] = issue_accession(store, txn, cfg, ep, enc_key, now)
        record["accession_ts"] = now
        issued = 1
    store.put_encounter(txn, ep, enc_key, record, old_ident)
    if status == "active":
        store.set_active(txn, ep, enc_key)
    else:
        store.set_inactive(txn, ep, enc_key)
    return Applied("created" if created else "updated", issued)


def _discharge(store: Store, txn: Any, ep: str, cfg: EndpointConfig, change: Change, now: float) -> Applied:
    enc_key = change.encounter_key
    record = store.get_encounter(txn, ep, enc_key)
    old_ident = None if record is None else patient_ident(record)
    if record is None:
        record = _new_record(change, now)
    _merge(record["patient"], change.patient)
    _merge(record["visit"], change.visit)
    record["status"] = "discharged"
    _stamp(record, change, now)
    store.put_encounter(txn, ep, enc_key, record, old_ident)
    store.set_inactive(txn, ep, enc_key)
    return Applied("discharged")
