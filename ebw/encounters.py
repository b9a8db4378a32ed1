"""Applies ADT changes to the encounter index, inside one LMDB write transaction.

An encounter's status is ``active`` or ``pending`` (open: in the ``active``
db, listed on the worklist subject to the endpoint's curation rules), or
``discharged``, ``cancelled``, ``deleted`` (closed: not listed).

==================  =======================================================
event               effect
==================  =======================================================
A01, A04            create or update; active (re-opens a closed encounter)
A05, A14            create or update; pending (an active one stays active)
A02                 transfer: new location (the old one kept for A12)
A06, A07            class change (PV1-2); with MRG-5 the visit number changes
A08                 update; unknown encounter: created active (upsert)
A12                 cancel transfer: location back (PV1-3 of the message,
                    else the location before the last A02)
A13                 cancel discharge: active again
A03                 discharged; unknown encounter: recorded as discharged
A11, A38            cancel admit / pre-admit: cancelled
A23                 delete visit: deleted
A28                 person added: no encounter change
A31                 demographics of every encounter of that patient
A29                 person deleted: every encounter of that patient deleted
A40, A34, A47       patient merge / identifier change: every encounter of
                    the prior patient (MRG-1) moves to the surviving one
A35                 account merge: the encounter keyed by MRG-3 moves to PID-18
A36, A18            A34 + A35
others              recognised, no change (counted)
==================  =======================================================

Updates follow HL7 snapshot rules: a field not sent keeps its stored value,
the explicit null ``""`` clears it.

Duplicates: a message whose MSH-10 was already applied from the same sender
(MSH-3/MSH-4) on this endpoint, with the same content (``content_digest``), is
not applied again (``duplicate``) and is answered as the first time (AA); a
sender that reuses a control id for another message (a counter reset) has it
applied.  For encounter events the encounter record
itself keeps the last ``SEEN_KEPT`` message ids that changed it (no extra
write per message: what a synced commit costs is the pages it writes); the
ids it no longer keeps, those of other events and of an encounter re-keyed
away are kept in the ``seen`` db, pruned after EBW_JOURNAL_RETENTION_DAYS.

Ordering: a message whose event time (EVN-2, else MSH-7) is older than the
last change applied to the encounter does not overwrite newer data
(``stale``, still AA) -- except cancel events (A11, A12, A13, A38, A23),
which always apply.  The patient's data keeps its own time (``patient_when``):
an A31 or a merge is newer patient data, not a newer encounter, so an older
encounter event arriving after it still changes the encounter (a discharge
still closes it) but leaves the newer name and identity.  A message for a key
merged or re-keyed away by a newer change is stale too.
"""

from __future__ import annotations

import zlib
from typing import Any

from .accession import issue as issue_accession
from .accession import remember
from .config import EndpointConfig
from .hl7.adt import Change
from .store import Store, dedupe_key, patient_ident

ACTIVATE = frozenset({"A01", "A04"})
PENDING = frozenset({"A05", "A14"})
UPDATE = frozenset({"A02", "A06", "A07", "A08", "A12"})
CANCELS = frozenset({"A11", "A12", "A13", "A38", "A23"})
CLOSE = {"A03": "discharged", "A11": "cancelled", "A38": "cancelled", "A23": "deleted"}
PATIENT_MERGE = frozenset({"A40", "A34", "A47", "A36", "A18"})
ACCOUNT_MERGE = frozenset({"A35", "A36", "A18"})
OPEN = ("active", "pending")
SEEN_KEPT = 16  # message ids an encounter record keeps for the duplicate check


class Applied:
    """What one change did: ``outcome`` and the accession numbers it issued (metrics)."""

    __slots__ = ("outcome", "accessions")

    def __init__(self, outcome: str, accessions: int = 0) -> None:
        self.outcome = outcome
        self.accessions = accessions


def apply(
    store: Store,
    txn: Any,
    ep: str,
    cfg: EndpointConfig,
    change: Change,
    now: float,
    reuse: dict[str, list[list[Any]]] | None = None,
    digest: bytes = b"",
) -> Applied:
    """Apply one change.  ``reuse`` (replay only) maps encounter keys to the accession
    history they had before the index was rebuilt: those numbers are given back
    instead of new ones, so no number is ever issued twice.  ``digest`` is
    ``content_digest`` of the message (b"": the duplicate check looks at MSH-10 alone)."""
    h = change.header
    dk = dedupe_key(ep, h.msh3, h.msh4, h.control_id) if h.control_id else b""
    c = _Ctx(store, txn, ep, cfg, now, reuse, dk, digest if dk else b"")
    if change.event in _ENCOUNTER_EVENTS:
        return _encounter_event(c, change)  # the duplicate check is the record's
    if dk and store.seen(txn, dk, c.digest):
        return Applied("duplicate")
    result = _dispatch(c, change)
    if dk:
        store.mark_seen(txn, dk, now, c.digest)
    return result


def content_digest(message: bytes) -> bytes:
    """4 bytes that tell one message's content from another's, for the duplicate check:
    the CRC-32 of everything after its MSH segment (a resend whose MSH-7 was made anew
    is the same message).  A sender that reuses a control id for another message is
    applied.  Only messages with the same sender and MSH-10 are compared, so 32 bits
    are plenty; CRC-32 costs a fraction of a microsecond a message."""
    start, n = 0, len(message)
    while start < n and message[start] in _LEADING:  # a BOM or blank lines before the MSH
        start += 1
    cut = message.find(b"\r", start)
    lf = message.find(b"\n", start, cut if cut >= 0 else n)
    if lf >= 0 or cut < 0:
        cut = lf if lf >= 0 else n
    return zlib.crc32(memoryview(message)[cut:]).to_bytes(4, "big")


_LEADING = frozenset(b"\xef\xbb\xbf\r\n\t ")


_SEEN_MARK = "\x01"  # a record's seen entry with a content digest: mark, 8 hex digits, id


def _seen_entry(msg_id: str, digest: bytes) -> str:
    return f"{_SEEN_MARK}{digest.hex()}{msg_id}" if digest else msg_id


def _split_seen(entry: str) -> tuple[str, bytes]:
    """(id, digest) of a record's seen entry (entries of older releases: no digest)."""
    if entry.startswith(_SEEN_MARK):
        return entry[9:], bytes.fromhex(entry[1:9])
    return entry, b""


class _Ctx:
    __slots__ = ("store", "txn", "ep", "cfg", "now", "issued", "reuse", "msg_id", "digest", "seen_entry")

    def __init__(
        self,
        store: Store,
        txn: Any,
        ep: str,
        cfg: EndpointConfig,
        now: float,
        reuse: dict[str, list[list[Any]]] | None = None,
        dk: bytes = b"",
        digest: bytes = b"",
    ) -> None:
        self.store, self.txn, self.ep, self.cfg, self.now = store, txn, ep, cfg, now
        self.issued = 0
        self.reuse = reuse
        self.msg_id = dk.decode("latin_1")  # this message's duplicate-check id ("" = none)
        self.digest = digest  # and its content (content_digest)
        self.seen_entry = _seen_entry(self.msg_id, digest) if self.msg_id else ""

    def get(self, enc_key: str) -> dict[str, Any] | None:
        return self.store.get_encounter(self.txn, self.ep, enc_key)

    def put(self, enc_key: str, record: dict[str, Any], old_ident: tuple[str, str] | None) -> None:
        """Store the record and keep the open index and accession in step with its status."""
        if record["status"] in OPEN and not record["accession"] and self.reuse and self.reuse.get(enc_key):
            # replay: the number the encounter had before the rebuild (still in the accession db)
            record["accession"], record["accession_ts"], record["study_uid"] = self.reuse.pop(enc_key)[-1]
        if record["status"] in OPEN and not record["accession"]:
            record["accession"], record["study_uid"] = issue_accession(
                self.store, self.txn, self.cfg, self.ep, enc_key, self.now
            )
            record["accession_ts"] = self.now
            remember(record)
            self.issued += 1
        self.store.put_encounter(self.txn, self.ep, enc_key, record, old_ident)
        if record["status"] in OPEN:
            self.store.set_open(self.txn, self.ep, enc_key, record["status"], record["accession_ts"])
        else:
            self.store.set_closed(self.txn, self.ep, enc_key)


def _merge(target: dict[str, Any], values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is not None:
            target[k] = v


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


def _keep_segments(record: dict[str, Any], change: Change, pid_only: bool = False) -> None:
    """The latest PID (and PV1) as received: ORUs copy the identity the EHR sent."""
    if change.segments:
        kept = record.setdefault("hl7", {})
        kept["PID"] = change.segments.get("PID", kept.get("PID", ""))
        if not pid_only and "PV1" in change.segments:
            kept["PV1"] = change.segments["PV1"]


def _stamp(record: dict[str, Any], change: Change, now: float) -> None:
    """The encounter changed (``when``: the newest event time applied to it)."""
    record["event"] = change.event
    record["updated"] = now
    if change.when is not None:
        record["when"] = max(change.when, record.get("when") or change.when)


def _stamp_person(record: dict[str, Any], change: Change, now: float) -> None:
    """The patient's demographics or identity changed, not the encounter: an A31 or a
    merge moves ``patient_when`` only, so an older encounter event that arrives after it
    (a discharge sent before the name change) still closes the encounter."""
    record["updated"] = now
    if change.when is not None:
        record["patient_when"] = max(change.when, _patient_when(record) or change.when)


def _patient_when(record: dict[str, Any]) -> float | None:
    """The newest event time of the patient data on the record (records written before
    the two were kept apart have only ``when``)."""
    last = record.get("patient_when")
    return record.get("when") if last is None else last


def _is_stale(record: dict[str, Any], change: Change) -> bool:
    last = record.get("when")
    return change.event not in CANCELS and change.when is not None and last is not None and change.when < last


def _is_stale_person(record: dict[str, Any], change: Change) -> bool:
    """The patient data of ``change`` is older than the record's.  Cancels are no
    exception: they always apply to the encounter, and an older one leaves the newer
    patient data as it is."""
    last = _patient_when(record)
    return change.when is not None and last is not None and change.when < last


_ENCOUNTER_EVENTS = ACTIVATE | PENDING | UPDATE | frozenset(CLOSE) | {"A13"}


def _dispatch(c: _Ctx, change: Change) -> Applied:
    ev = change.event
    if ev in _ENCOUNTER_EVENTS:
        return _encounter_event(c, change)
    if ev == "A31":
        return _update_person(c, change)
    if ev == "A29":
        return _delete_person(c, change)
    if ev in PATIENT_MERGE or ev in ACCOUNT_MERGE:
        outcome = "merged"
        for group in [change, *change.groups]:
            _merge_group(c, group)
        return Applied(outcome, c.issued)
    return Applied("ignored")


def _is_duplicate(c: _Ctx, record: dict[str, Any] | None) -> bool:
    if not c.msg_id:
        return False
    if record is not None:
        seen = record.get("seen") or ()
        if c.seen_entry in seen or c.msg_id in seen:  # same id and content; or an id kept without
            return True
    return c.store.seen(c.txn, c.msg_id.encode("latin_1"), c.digest)  # ids pushed out or re-keyed away


def _encounter_event(c: _Ctx, change: Change) -> Applied:
    ev = change.event
    enc_key = change.encounter_key
    record = c.get(enc_key)
    if _is_duplicate(c, record):
        return Applied("duplicate")
    if record is None and _moved_since(c, enc_key, change):
        return Applied("stale")  # it would bring back a key merged or re-keyed away after it
    if ev in ("A06", "A07") and change.prior_visit_key and change.prior_visit_key != enc_key:
        _rekey(c, change.prior_visit_key, enc_key)
        record = c.get(enc_key)
    created = record is None
    if record is not None and _is_stale(record, change):
        return Applied("stale")
    old_ident = None if record is None else patient_ident(record)
    if record is None:
        record = _new_record(change, c.now)
    # the patient data of an event older than the record's (a newer A31 or merge) stays
    newer_patient = created or not _is_stale_person(record, change)
    status = record["status"]

    if ev == "A02" and not created:
        record["prior_location"] = {k: record["visit"].get(k) for k in _LOCATION}
    if ev == "A12" and change.visit.get("CurrentPatientLocation") is None:
        _merge(record["visit"], record.get("prior_location") or {})
    if newer_patient:
        record["patient_key"] = change.patient_key
        _merge(record["patient"], change.patient)
        if change.when is not None:
            record["patient_when"] = max(change.when, _patient_when(record) or change.when)
    _merge(record["visit"], change.visit)
    if newer_patient:
        _keep_segments(record, change)
    elif change.segments.get("PV1"):
        record.setdefault("hl7", {})["PV1"] = change.segments["PV1"]

    if ev in ACTIVATE or ev == "A13":
        status = "active"
        if ev == "A13":
            record["visit"]["discharge_time"] = ""
    elif ev in PENDING:
        status = status if status == "active" else "pending"
    elif ev in CLOSE:
        status = CLOSE[ev]
    elif created:  # A02/A06/A07/A08/A12 for an unknown encounter: upsert
        status = "active"
    record["status"] = status
    _stamp(record, change, c.now)
    if c.msg_id:
        seen = record.get("seen") or []
        for pushed_out in seen[: max(len(seen) + 1 - SEEN_KEPT, 0)]:
            # kept on in the seen db: a resend with the same event time as the messages
            # after it is not caught by the ordering rule
            msg_id, digest = _split_seen(pushed_out)
            c.store.mark_seen(c.txn, msg_id.encode("latin_1"), c.now, digest)
        record["seen"] = [*seen[1 - SEEN_KEPT :], c.seen_entry]
    c.put(enc_key, record, old_ident)
    return Applied("created" if created else ev.lower() if ev in CLOSE else "updated", c.issued)


_LOCATION = ("CurrentPatientLocation", "InstitutionName", "point_of_care")


def _moved_since(c: _Ctx, enc_key: str, change: Change) -> bool:
    """``enc_key`` was re-keyed or merged into another encounter by a change newer than
    ``change`` (a late message for a merged-away visit-less encounter, say)."""
    if change.when is None or change.event in CANCELS:
        return False
    moved = c.store.current_key(c.txn, c.ep, enc_key)
    if moved == enc_key:
        return False
    target = c.get(moved)
    if target is None:
        return False
    latest = max(target.get("when") or 0.0, _patient_when(target) or 0.0)
    return change.when < latest


def _update_person(c: _Ctx, change: Change) -> Applied:
    """A31: the patient's demographics on every encounter of that patient."""
    pid, issuer = change.patient.get("PatientID") or "", change.patient.get("IssuerOfPatientID") or ""
    n = 0
    for enc_key in c.store.encounters_of_patient(c.txn, c.ep, pid, issuer):
        record = c.get(enc_key)
        if record is None or _is_stale_person(record, change):
            continue
        ident = patient_ident(record)
        _merge(record["patient"], change.patient)
        _keep_segments(record, change, pid_only=True)
        _stamp_person(record, change, c.now)  # a person event: the encounter's last event stays
        c.put(enc_key, record, ident)
        n += 1
    return Applied(f"person updated on {n}", c.issued)


def _delete_person(c: _Ctx, change: Change) -> Applied:
    pid, issuer = change.patient.get("PatientID") or "", change.patient.get("IssuerOfPatientID") or ""
    for enc_key in c.store.encounters_of_patient(c.txn, c.ep, pid, issuer):
        record = c.get(enc_key)
        if record is not None:
            ident = patient_ident(record)
            record["status"] = "deleted"
            _stamp(record, change, c.now)
            c.put(enc_key, record, ident)
    return Applied("person deleted", c.issued)


def _merge_group(c: _Ctx, change: Change) -> None:
    ev = change.event
    if ev in PATIENT_MERGE and change.prior_patient is not None:
        prior_id, prior_issuer = change.prior_patient
        new = (change.patient.get("PatientID") or "", change.patient.get("IssuerOfPatientID") or "")
        for enc_key in _prior_encounters(c, prior_id, prior_issuer, new[1]):
            record = c.get(enc_key)
            if record is None:
                continue
            ident = patient_ident(record)
            if ident == new:
                continue
            _merge(record["patient"], change.patient)
            _keep_segments(record, change, pid_only=True)
            record["patient_key"] = change.patient_key
            record.setdefault("merged_from", []).append(list(ident))
            record["event"] = change.event
            _stamp_person(record, change, c.now)
            c.put(enc_key, record, ident)
            if enc_key == f"P|{ident[1]}|{ident[0]}":
                # the prior patient's visit-less encounter becomes the survivor's (one per
                # patient): under the survivor's key, or closed into the one it has
                _rekey(c, enc_key, f"P|{change.patient_key}")
    if ev in ACCOUNT_MERGE and change.prior_account_key and change.prior_account_key != change.encounter_key:
        _rekey(c, change.prior_account_key, change.encounter_key, change)


def _prior_encounters(c: _Ctx, prior_id: str, prior_issuer: str, survivor_issuer: str) -> list[str]:
    """Encounter keys of the prior patient of a merge (``MRG-1``).  Patients are an ID
    and its assigning authority: the same MRN from another authority is another
    patient.  An ``MRG-1`` without an authority names the prior patient within the
    surviving patient's authority (``PID-3``), else a patient stored without one."""
    if prior_issuer:
        return c.store.encounters_of_patient(c.txn, c.ep, prior_id, prior_issuer)
    keys = c.store.encounters_of_patient(c.txn, c.ep, prior_id, survivor_issuer)
    if not keys and survivor_issuer:
        keys = c.store.encounters_of_patient(c.txn, c.ep, prior_id, "")
    return keys


def _rekey(c: _Ctx, old_key: str, new_key: str, change: Change | None = None) -> None:
    """Move an encounter to a new key (visit number / account change).  If the new
    key already exists the old encounter is closed as merged into it."""
    record = c.get(old_key)
    if record is None:
        return
    target = c.get(new_key)
    # close the old key: it must never be listed again; its accession numbers now lead to new_key
    for entry in record.get("seen") or ():  # a resend of a message it had must stay a duplicate
        msg_id, digest = _split_seen(entry)
        c.store.mark_seen(c.txn, msg_id.encode("latin_1"), c.now, digest)
    c.store.set_closed(c.txn, c.ep, old_key)
    c.store.delete_encounter(c.txn, c.ep, old_key)
    c.store.set_moved(c.txn, c.ep, old_key, new_key)
    if target is not None:
        return
    record["key"] = new_key
    if change is not None:
        _merge(record["patient"], change.patient)
        _merge(record["visit"], change.visit)
        _keep_segments(record, change)
        _stamp(record, change, c.now)
    c.put(new_key, record, None)
