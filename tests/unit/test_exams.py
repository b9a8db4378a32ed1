"""What is owed on an exam (real LMDB, no sockets): a step discontinued before any image
and then done again is reported; an EHR that was down does not use up the AE attempts."""

from __future__ import annotations

import time

import pytest

from ebw import config, encounters, exams
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({"EBW_EHR_HOST": "127.0.0.1", "EBW_EHR_PORT": "2575", "EBW_ORU_MAX_ATTEMPTS": "2"}).endpoint
EP = CFG.id


class Item:
    """An admitted encounter's worklist item, and a modality's exam on it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.write() as txn:
            encounters.apply(store, txn, EP, CFG, parse(msg("A04", "C1", "P1", "V1").encode()), time.time())
            record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
        self.study, self.accession = record["study_uid"], record["accession"]

    def mpps(self, uid: str, status: str | None, now: float) -> dict:
        """N-CREATE (``status`` None) or N-SET ``status`` of the step ``uid``; the exam."""
        store = self.store
        with store.write() as txn:
            if status is None:
                return exams.mpps_started(store, txn, {EP: CFG}, EP, uid, [(self.study, self.accession)], now, now)[0]
            exams.mpps_ended(store, txn, CFG, uid, exams.get_mpps(store, txn, uid), status, now)
            return exams.get(store, txn, EP, self.study)

    def image(self, sop: str, now: float) -> dict:
        """One instance of the study, with no accession number; the exam."""
        store = self.store
        with store.write() as txn:
            return exams.instance_stored(store, txn, {EP: CFG}, EP, self.study, sop, {"file": sop}, "", None, now)[0]


@pytest.fixture
def item(store: Store) -> Item:
    return Item(store)


def test_a_step_discontinued_before_any_image_and_done_again_is_reported(item):
    """The audit's case: N-CREATE, DISCONTINUED (no image), a second N-CREATE, images,
    COMPLETED.  The exam stayed discontinued: no ORU, no push, not even by hand."""
    assert item.mpps("1.1", None, 100.0)["state"] == exams.OPEN
    assert item.mpps("1.1", "DISCONTINUED", 110.0)["state"] == exams.DISCONTINUED
    assert item.mpps("1.2", None, 120.0)["state"] == exams.OPEN
    for i in range(3):
        item.image(f"1.3.{i}", 130.0 + i)
    exam = item.mpps("1.2", "COMPLETED", 140.0)
    assert exam["state"] == exams.COMPLETE and exam["instances"] == 3
    assert exam["oru"]["state"] == "pending" and exam["oru"]["msh10"]


def test_images_after_a_discontinued_step_open_the_exam_again(item):
    item.mpps("1.1", None, 100.0)
    assert item.mpps("1.1", "DISCONTINUED", 110.0)["state"] == exams.DISCONTINUED
    exam = item.image("1.3.1", 120.0)
    assert exam["state"] == exams.OPEN and exam["oru"]["state"] == ""
    assert exams.quiet(exam, CFG, 120.0 + CFG.exam_quiet_seconds)  # then completed as any exam


def test_only_answers_count_towards_the_attempts(store, item):
    """EBW_ORU_MAX_ATTEMPTS=2: an EHR down (refused, then silent) and then one AE must
    not dead-letter the result; the second AE does."""
    item.mpps("1.1", None, 100.0)
    item.image("1.3.1", 101.0)
    exam = item.mpps("1.1", "COMPLETED", 102.0)
    for n, outcome in enumerate(["error", "timeout", "AE", "AE"]):
        with store.write() as txn:
            exam = exams.oru_outcome(store, txn, exam, CFG, outcome, "101", 200.0 + n)
        assert exam["oru"]["state"] == ("dead" if n == 3 else "pending"), outcome
    assert exam["oru"]["attempts"] == 4


def test_a_study_tied_by_its_study_uid_alone_carries_the_items_number(store, item):
    """The audit's case: images with the worklist item's Study Instance UID and no
    Accession Number.  The ORU went out without a number, and the number stayed on the
    worklist for the next exam, which was then filed into this one."""
    exam = item.image("1.3.1", time.time())
    assert exam["key"] == "V|GENHOSP|V1" and not exam["orphan"]
    assert exam["accession"] == item.accession  # ORC-3, OBR-3, OBR-18 of its ORU
    with store.read() as txn:
        record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
    assert record["accession"] != item.accession and record["study_uid"] != item.study  # a fresh item for the next exam
