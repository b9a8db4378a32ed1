"""Exams: studies received from modalities, tied to encounters, and what is owed on them.

An exam is one study (Study Instance UID) on one endpoint.  Its record (LMDB
``exams`` db, JSON) holds:

- ``accession``: the number the study carried (or its MPPS); ``key``: the
  encounter it belongs to, found by that number -- any number ever issued to
  the encounter, so rotation between the modality's query and the exam does
  not matter -- else by Study Instance UID (an encounter's current study),
  else none: ``orphan`` (counted in ``ebw_orphan_studies_total``, listed in the
  API).  The first time an exam uses an encounter's *current* number, the
  encounter gets a fresh one (``ebw.accession.consume``).
- ``state``: ``open`` while images arrive; ``complete`` on MPPS COMPLETED (or
  DISCONTINUED with images), when no image arrived for
  ``EBW_EXAM_QUIET_SECONDS`` (and no MPPS is in progress), or by the API;
  ``discontinued`` (MPPS DISCONTINUED, no image): nothing is sent -- until an
  image or a new MPPS comes for the study, which opens it again.
- ``oru``: the ORU outbox entry -- ``pending`` (``msh10`` assigned once, kept
  on every resend), ``sent``, ``dead`` (AR, or AE ``EBW_ORU_MAX_ATTEMPTS``
  times: timeouts and refused connections do not count), or ``none`` (no EHR
  configured).
- ``push``: the PACS push -- ``waiting`` until ``due`` (ORU acknowledged or
  dead-lettered + ``EBW_PACS_PUSH_DELAY_SECONDS``; with no EHR, exam
  completion + the delay), then ``pending`` until every instance is stored;
  ``done``; ``none`` (no PACS configured).

Exams with work left are also in ``exam_open``; the timer process
(``ebw.delivery``) walks that small set every second.  Everything here runs
inside the caller's write transaction: an instance is acknowledged to the
modality only after its file and its record are stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from . import accession
from .config import EndpointConfig
from .store import SEP, Store, dumps, key, loads

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
OPEN, COMPLETE, DISCONTINUED = "open", "complete", "discontinued"


def valid_uid(uid: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a file name."""
    return 0 < len(uid) <= 64 and UID.match(uid) is not None


def get(store: Store, txn: Any, ep: str, study_uid: str) -> dict[str, Any] | None:
    raw = txn.get(key(ep, study_uid), db=store.db["exams"])
    return None if raw is None else loads(raw)


def put(store: Store, txn: Any, exam: dict[str, Any]) -> None:
    k = key(exam["ep"], exam["study_uid"])
    txn.put(k, dumps(exam), db=store.db["exams"])
    if _work_left(exam):
        txn.put(k, b"", db=store.db["exam_open"])
    else:
        txn.delete(k, db=store.db["exam_open"])


def _work_left(exam: dict[str, Any]) -> bool:
    if exam["state"] == DISCONTINUED:
        return False
    if exam["state"] == OPEN:
        return True
    return exam["oru"]["state"] == "pending" or exam["push"]["state"] in ("waiting", "pending")


def open_exams(store: Store, txn: Any) -> list[dict[str, Any]]:
    """Every exam with work left, oldest completion first (the ORU order)."""
    out = []
    db = store.db["exams"]
    for k in txn.cursor(db=store.db["exam_open"]).iternext(values=False):
        raw = txn.get(k, db=db)
        if raw is not None:
            out.append(loads(raw))
    out.sort(key=lambda e: (e.get("completed_at") or float("inf"), e.get("first_at") or 0.0))
    return out


def all_exams(store: Store, txn: Any, ep: str | None = None) -> Iterator[dict[str, Any]]:
    cur = txn.cursor(db=store.db["exams"])
    prefix = ep.encode() + SEP if ep else b""
    if not cur.set_range(prefix):
        return
    for k, v in cur:
        if not bytes(k).startswith(prefix):
            break
        yield loads(v)


def new_exam(ep: str, study_uid: str, now: float) -> dict[str, Any]:
    return {
        "ep": ep,
        "study_uid": study_uid,
        "accession": "",
        "key": "",
        "orphan": False,
        "state": OPEN,
        "instances": 0,
        "first_at": now,
        "last_at": now,
        "exam_time": None,
        "mpps": {},
        "completed_at": None,
        "completed_by": "",
        "oru": {"state": "", "msh10": "", "attempts": 0, "next_at": 0.0, "detail": "", "sent_at": None},
        "push": {"state": "", "due_at": None, "attempts": 0, "next_at": 0.0, "sent": [], "detail": "", "done_at": None},
    }


def _link(
    store: Store, txn: Any, exam: dict[str, Any], accession_number: str, now: float, cfgs: dict[str, EndpointConfig]
) -> None:
    """Tie a new exam to its encounter: by accession number (consuming it), else by
    Study Instance UID, else it is an orphan."""
    ep = exam["ep"]
    if accession_number:
        exam["accession"] = accession_number
        used = accession.consume(store, txn, accession_number, now, cfgs)
        if used and used["ep"] == ep:
            exam["key"] = used["key"]
            return
    found, number = _encounter_by_study(store, txn, ep, exam["study_uid"])
    if found:
        # the study is the worklist item's: its number is the exam's (the ORU's ORC-3,
        # OBR-3, OBR-18) and is used up, as when the images carry it
        exam["key"] = found
        if not exam["accession"]:
            exam["accession"] = number
        if number:
            accession.consume(store, txn, number, now, cfgs)
        return
    exam["orphan"] = True


def _encounter_by_study(store: Store, txn: Any, ep: str, study_uid: str) -> tuple[str, str]:
    """(key, current accession number) of the open encounter whose current Study Instance
    UID is ``study_uid`` (a scan of the endpoint's open encounters: only for studies that
    carry no known accession number); ("", "") if none."""
    needle = study_uid.encode()
    for enc_key, raw in store.iter_active_raw(txn, ep):
        if needle in raw:
            record = loads(raw)
            if record.get("study_uid") == study_uid:
                return bytes(enc_key).decode("utf-8"), record.get("accession") or ""
    return "", ""


def instance_stored(
    store: Store,
    txn: Any,
    cfgs: dict[str, EndpointConfig],
    ep: str,
    study_uid: str,
    sop_uid: str,
    info: dict[str, Any],
    accession_number: str,
    exam_time: float | None,
    now: float,
) -> tuple[dict[str, Any], bool]:
    """Record one received instance (its file is already written).  Returns the exam and
    whether the exam is new and an orphan (for the metric)."""
    exam = get(store, txn, ep, study_uid)
    created = exam is None
    if exam is None:
        exam = new_exam(ep, study_uid, now)
        _link(store, txn, exam, accession_number, now, cfgs)
    elif exam["state"] == DISCONTINUED:
        _reopen(exam)  # images after a step discontinued before any: the exam goes on
    ikey = key(ep, study_uid, sop_uid)
    if txn.get(ikey, db=store.db["instances"]) is None:
        exam["instances"] += 1
    txn.put(ikey, dumps(info), db=store.db["instances"])
    exam["last_at"] = now
    if exam_time and not exam.get("exam_time"):
        exam["exam_time"] = exam_time
    if exam["state"] != OPEN and exam["push"]["state"] == "done":
        # an image after the push: push again (the rest is skipped as already sent)
        exam["push"].update(state="pending", next_at=now)
    put(store, txn, exam)
    return exam, created and exam["orphan"]


def instances(store: Store, txn: Any, ep: str, study_uid: str) -> list[tuple[str, dict[str, Any]]]:
    """(SOP Instance UID, info) of every instance of a study."""
    prefix = key(ep, study_uid) + SEP
    cur = txn.cursor(db=store.db["instances"])
    out = []
    if cur.set_range(prefix):
        for k, v in cur:
            if not bytes(k).startswith(prefix):
                break
            out.append((bytes(k)[len(prefix) :].decode(), loads(v)))
    return out


def complete(
    store: Store, txn: Any, exam: dict[str, Any], cfg: EndpointConfig, by: str, now: float, discontinued: bool = False
) -> dict[str, Any]:
    """Mark an exam complete and queue what is owed: the ORU (EHR configured) and the
    PACS push (PACS configured).  Completing twice changes nothing."""
    if exam["state"] != OPEN:
        return exam
    exam["completed_at"] = now
    exam["completed_by"] = by
    if discontinued and not exam["instances"]:
        exam["state"] = DISCONTINUED
        exam["oru"]["state"] = exam["push"]["state"] = "none"
        put(store, txn, exam)
        return exam
    exam["state"] = COMPLETE
    if cfg.ehr_host and cfg.ehr_port and not exam["orphan"]:
        exam["oru"].update(state="pending", msh10=f"EBW{store.next_seq(txn, 'oru'):012d}", next_at=now)
        exam["push"]["state"] = "waiting" if _pacs(cfg) else "none"
    else:
        # no EHR (or no patient to report on): the delay counts from completion
        exam["oru"]["state"] = "none"
        if _pacs(cfg):
            exam["push"].update(state="waiting", due_at=now + cfg.pacs_push_delay_seconds)
        else:
            exam["push"]["state"] = "none"
    put(store, txn, exam)
    return exam


def _reopen(exam: dict[str, Any]) -> None:
    """A discontinued exam (no image, nothing owed) open again: a new MPPS or an image
    came for its study, and what it brings is reported and pushed as for any exam."""
    fresh = new_exam(exam["ep"], exam["study_uid"], exam["first_at"])
    exam.update(state=OPEN, completed_at=None, completed_by="", oru=fresh["oru"], push=fresh["push"])


def _pacs(cfg: EndpointConfig) -> bool:
    return bool(cfg.pacs_host and cfg.pacs_port and cfg.pacs_aet)


def oru_outcome(
    store: Store, txn: Any, exam: dict[str, Any], cfg: EndpointConfig, outcome: str, detail: str, now: float
) -> dict[str, Any]:
    """Record one delivery attempt of the exam's ORU (``outcome`` as ``ebw.oru.deliver``)."""
    oru = exam["oru"]
    oru["attempts"] += 1
    oru["detail"] = detail[:200]
    if outcome == "AE":  # only answers count towards EBW_ORU_MAX_ATTEMPTS, not an EHR that was down
        oru["errors"] = oru.get("errors", 0) + 1
    if outcome == "AA":
        oru.update(state="sent", sent_at=now)
    elif outcome == "AR" or (outcome == "AE" and oru["errors"] >= cfg.oru_max_attempts):
        oru["state"] = "dead"
    else:  # AE (retried a bounded number of times), timeout, connection error (until answered)
        oru["next_at"] = now + backoff(oru["attempts"])
    if oru["state"] in ("sent", "dead") and exam["push"]["state"] == "waiting" and exam["push"]["due_at"] is None:
        exam["push"]["due_at"] = now + cfg.pacs_push_delay_seconds
    put(store, txn, exam)
    return exam


def push_outcome(
    store: Store, txn: Any, exam: dict[str, Any], sent: list[str], failed: dict[str, str], now: float
) -> dict[str, Any]:
    push = exam["push"]
    push["attempts"] += 1
    push["sent"] = sorted(set(push["sent"]) | set(sent))
    if failed:
        push["state"] = "pending"
        push["next_at"] = now + backoff(push["attempts"])
        reasons = sorted(set(failed.values()))
        push["detail"] = f"{len(failed)} not stored: {', '.join(reasons)}"[:200]
    else:
        push.update(state="done", done_at=now, detail="")
    put(store, txn, exam)
    return exam


def backoff(attempts: int) -> float:
    """10 s, 20 s, 40 s ... at most 5 minutes between attempts."""
    return float(min(300, 10 * 2 ** max(0, attempts - 1)))


# -- MPPS ------------------------------------------------------------------------------


def get_mpps(store: Store, txn: Any, uid: str) -> dict[str, Any] | None:
    raw = txn.get(uid.encode(), db=store.db["mpps"])
    return None if raw is None else loads(raw)


def put_mpps(store: Store, txn: Any, uid: str, mpps: dict[str, Any]) -> None:
    txn.put(uid.encode(), dumps(mpps), db=store.db["mpps"])


def mpps_started(
    store: Store,
    txn: Any,
    cfgs: dict[str, EndpointConfig],
    ep: str,
    uid: str,
    studies: list[tuple[str, str]],
    start: float | None,
    now: float,
) -> list[dict[str, Any]]:
    """N-CREATE IN PROGRESS: ``studies`` are (Study Instance UID, accession number) of the
    scheduled steps performed.  Creates (or joins) their exams; the accession numbers
    are used from now on."""
    out = []
    for study_uid, acc in studies:
        exam = get(store, txn, ep, study_uid)
        if exam is None:
            exam = new_exam(ep, study_uid, now)
            _link(store, txn, exam, acc, now, cfgs)
        elif exam["state"] == DISCONTINUED:
            _reopen(exam)  # the step done again after it was discontinued before any image
        exam["mpps"][uid] = "IN PROGRESS"
        if start and not exam.get("exam_time"):
            exam["exam_time"] = start
        put(store, txn, exam)
        out.append(exam)
    put_mpps(store, txn, uid, {"ep": ep, "status": "IN PROGRESS", "studies": [s for s, _a in studies], "at": now})
    return out


def mpps_ended(
    store: Store, txn: Any, cfg: EndpointConfig, uid: str, mpps: dict[str, Any], status: str, now: float
) -> None:
    """N-SET COMPLETED / DISCONTINUED: the exams of the step are complete."""
    mpps["status"] = status
    mpps["ended"] = now
    put_mpps(store, txn, uid, mpps)
    for study_uid in mpps["studies"]:
        exam = get(store, txn, mpps["ep"], study_uid)
        if exam is None:
            continue
        exam["mpps"][uid] = status
        put(store, txn, exam)
        if not any(s == "IN PROGRESS" for s in exam["mpps"].values()):
            complete(store, txn, exam, cfg, f"mpps {status.lower()}", now, discontinued=status == "DISCONTINUED")


def quiet(exam: dict[str, Any], cfg: EndpointConfig, now: float) -> bool:
    """An open exam with images, no MPPS in progress and no image for the quiet time."""
    return (
        exam["state"] == OPEN
        and exam["instances"] > 0
        and not any(s == "IN PROGRESS" for s in exam["mpps"].values())
        and now - exam["last_at"] >= cfg.exam_quiet_seconds
    )


def counts(store: Store, txn: Any) -> dict[str, int]:
    """Gauges: ORUs waiting in the outbox, pushes waiting or pending."""
    out = {"oru_pending": 0, "push_waiting": 0}
    for exam in open_exams(store, txn):
        out["oru_pending"] += exam["oru"]["state"] == "pending"
        out["push_waiting"] += exam["push"]["state"] in ("waiting", "pending")
    return out
