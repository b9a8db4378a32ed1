"""What is owed on an exam (real LMDB, no sockets): a step discontinued before any image
and then done again is reported; an EHR that was down does not use up the AE attempts."""

from __future__ import annotations

import time

from ebw import config, encounters, exams
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({"EBW_EHR_HOST": "127.0.0.1", "EBW_EHR_PORT": "2575", "EBW_ORU_MAX_ATTEMPTS": "2"}).endpoint
EP = CFG.id
STUDY = ""  # the encounter's, set by _admit
ACCESSION = ""


def _admit(store: Store) -> None:
    """An encounter whose worklist item the exams are made on."""
    global STUDY, ACCESSION
    with store.write() as txn:
        encounters.apply(store, txn, EP, CFG, parse(msg("A04", "C1", "P1", "V1").encode()), time.time())
        record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
    STUDY, ACCESSION = record["study_uid"], record["accession"]


def _mpps(store: Store, uid: str, status: str | None, now: float) -> dict:
    with store.write() as txn:
        if status is None:
            return exams.mpps_started(store, txn, {EP: CFG}, EP, uid, [(STUDY, ACCESSION)], now, now)[0]
        exams.mpps_ended(store, txn, CFG, uid, exams.get_mpps(store, txn, uid), status, now)
        return exams.get(store, txn, EP, STUDY)


def _image(store: Store, sop: str, now: float) -> dict:
    with store.write() as txn:
        return exams.instance_stored(store, txn, {EP: CFG}, EP, STUDY, sop, {"file": sop}, "", None, now)[0]


def test_a_step_discontinued_before_any_image_and_done_again_is_reported(tmp_path):
    """The audit's case: N-CREATE, DISCONTINUED (no image), a second N-CREATE, images,
    COMPLETED.  The exam stayed discontinued: no ORU, no push, not even by hand."""
    store = Store(str(tmp_path), 16, sync=False)
    _admit(store)
    try:
        assert _mpps(store, "1.1", None, 100.0)["state"] == exams.OPEN
        assert _mpps(store, "1.1", "DISCONTINUED", 110.0)["state"] == exams.DISCONTINUED
        assert _mpps(store, "1.2", None, 120.0)["state"] == exams.OPEN
        for i in range(3):
            _image(store, f"1.3.{i}", 130.0 + i)
        exam = _mpps(store, "1.2", "COMPLETED", 140.0)
        assert exam["state"] == exams.COMPLETE and exam["instances"] == 3
        assert exam["oru"]["state"] == "pending" and exam["oru"]["msh10"]
    finally:
        store.close()


def test_images_after_a_discontinued_step_open_the_exam_again(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    _admit(store)
    try:
        _mpps(store, "1.1", None, 100.0)
        assert _mpps(store, "1.1", "DISCONTINUED", 110.0)["state"] == exams.DISCONTINUED
        exam = _image(store, "1.3.1", 120.0)
        assert exam["state"] == exams.OPEN and exam["oru"]["state"] == ""
        assert exams.quiet(exam, CFG, 120.0 + CFG.exam_quiet_seconds)  # then completed as any exam
    finally:
        store.close()


def test_only_answers_count_towards_the_attempts(tmp_path):
    """EBW_ORU_MAX_ATTEMPTS=2: an EHR down (refused, then silent) and then one AE must
    not dead-letter the result; the second AE does."""
    store = Store(str(tmp_path), 16, sync=False)
    _admit(store)
    try:
        _mpps(store, "1.1", None, 100.0)
        _image(store, "1.3.1", 101.0)
        exam = _mpps(store, "1.1", "COMPLETED", 102.0)
        for n, outcome in enumerate(["error", "timeout", "AE", "AE"]):
            with store.write() as txn:
                exam = exams.oru_outcome(store, txn, exam, CFG, outcome, "101", 200.0 + n)
            assert exam["oru"]["state"] == ("dead" if n == 3 else "pending"), outcome
        assert exam["oru"]["attempts"] == 4
    finally:
        store.close()


def test_a_study_tied_by_its_study_uid_alone_carries_the_items_number(tmp_path):
    """The audit's case: images with the worklist item's Study Instance UID and no
    Accession Number.  The ORU went out without a number, and the number stayed on the
    worklist for the next exam, which was then filed into this one."""
    store = Store(str(tmp_path), 16, sync=False)
    _admit(store)
    try:
        exam = _image(store, "1.3.1", time.time())
        assert exam["key"] == "V|GENHOSP|V1" and not exam["orphan"]
        assert exam["accession"] == ACCESSION  # ORC-3, OBR-3, OBR-18 of its ORU
        with store.read() as txn:
            record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
        assert record["accession"] != ACCESSION and record["study_uid"] != STUDY  # a fresh item for the next exam
    finally:
        store.close()
