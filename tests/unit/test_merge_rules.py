"""Merges move the right patient's encounters, and only those (real LMDB, no sockets).

A patient is an ID with its assigning authority: the same MRN at another hospital is
another person.  A visit-less encounter belongs to its patient: after a merge it is
the survivor's, so the survivor never has two of them open.
"""

from __future__ import annotations

import time

from ebw import config, encounters
from ebw.dicom.find import WorklistIndex
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({}).endpoint
EP = "default"


def _apply(store: Store, raw: str) -> str:
    with store.write() as txn:
        return encounters.apply(store, txn, EP, CFG, parse(raw.encode()), time.time()).outcome


def _listed(store: Store) -> list[tuple[str, str, str, str]]:
    items = WorklistIndex(store, EP, lambda: CFG).select([])
    return sorted((i["PatientID"], i["IssuerOfPatientID"], i["AdmissionID"], i["PatientName"]) for i in items)


def _a40(cid: str, pid3: str, mrg: str, name: str, when: str = "20261128110000") -> str:
    return msg("A40", cid, "", pid3=pid3, name=name, mrg=mrg, pv1=False, structure="ADT_A39", when=when)


def test_mrg_1_without_an_authority_never_takes_another_hospitals_patient(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "", "VA", pid3="777^^^HOSPA^MR", name="ALPHA^ANN")) == "created"
        assert _apply(store, msg("A04", "C2", "", "VB", pid3="777^^^HOSPB^MR", name="BRAVO^BOB")) == "created"
        assert _apply(store, _a40("C3", "888^^^HOSPA^MR", "777", "ALPHA^ANN")) == "merged"
        assert _listed(store) == [("777", "HOSPB", "VB", "BRAVO^BOB"), ("888", "HOSPA", "VA", "ALPHA^ANN")]
    finally:
        store.close()


def test_mrg_1_without_an_authority_finds_a_patient_stored_without_one(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "", "VA", pid3="555", name="CHARLIE^CY")) == "created"
        assert _apply(store, msg("A04", "C2", "", "VB", pid3="555^^^HOSPB^MR", name="DELTA^DI")) == "created"
        assert _apply(store, _a40("C3", "556^^^HOSPA^MR", "555", "CHARLIE^CY")) == "merged"
        assert _listed(store) == [("555", "HOSPB", "VB", "DELTA^DI"), ("556", "HOSPA", "VA", "CHARLIE^CY")]
    finally:
        store.close()


def test_mrg_1_with_an_authority_takes_exactly_that_patient(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "", "VA", pid3="777^^^HOSPA^MR", name="ALPHA^ANN")) == "created"
        assert _apply(store, msg("A04", "C2", "", "VB", pid3="777^^^HOSPB^MR", name="BRAVO^BOB")) == "created"
        assert _apply(store, _a40("C3", "999^^^HOSPB^MR", "777^^^HOSPB^MR", "BRAVO^BOB")) == "merged"
        assert _listed(store) == [("777", "HOSPA", "VA", "ALPHA^ANN"), ("999", "HOSPB", "VB", "BRAVO^BOB")]
    finally:
        store.close()


def test_a_merged_visit_less_encounter_is_the_survivors_only_one(tmp_path):
    """The audit's case: visit-less M2OLD merged into M2NEW, then an A08 and an A03 for
    M2NEW.  The discharge must take the patient off the list."""
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "M2OLD", "", name="ECHO^EVE", when="20261128100000")) == "created"
        assert _apply(store, _a40("C2", "M2NEW^^^GENHOSP^MR", "M2OLD^^^GENHOSP^MR", "ECHO^EVE")) == "merged"
        assert _listed(store) == [("M2NEW", "GENHOSP", "", "ECHO^EVE")]
        a08 = msg("A08", "C3", "M2NEW", "", name="ECHO^EVE", loc="WARD^1^1^GENHOSP", when="20261128120000")
        assert _apply(store, a08) == "updated"
        assert _listed(store) == [("M2NEW", "GENHOSP", "", "ECHO^EVE")]
        assert _apply(store, msg("A03", "C4", "M2NEW", "", name="ECHO^EVE", when="20261128130000")) == "a03"
        assert _listed(store) == []
        with store.read() as txn:
            assert store.get_encounter(txn, EP, "P|GENHOSP|M2OLD") is None
            assert store.get_encounter(txn, EP, "P|GENHOSP|M2NEW")["status"] == "discharged"
    finally:
        store.close()


def test_merging_two_visit_less_patients_leaves_one_open_encounter(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "OLD", "", name="FOX^FAY")) == "created"
        assert _apply(store, msg("A04", "C2", "NEW", "", name="FOX^FAY")) == "created"
        old_accession = _accession(store, "P|GENHOSP|OLD")
        assert _apply(store, _a40("C3", "NEW^^^GENHOSP^MR", "OLD^^^GENHOSP^MR", "FOX^FAY")) == "merged"
        assert _listed(store) == [("NEW", "GENHOSP", "", "FOX^FAY")]
        with store.read() as txn:  # the merged-away encounter's accession number leads to the survivor's
            assert store.get_encounter(txn, EP, "P|GENHOSP|OLD") is None
            assert store.current_key(txn, EP, "P|GENHOSP|OLD") == "P|GENHOSP|NEW"
        assert old_accession
    finally:
        store.close()


def _accession(store: Store, key: str) -> str:
    with store.read() as txn:
        return store.get_encounter(txn, EP, key)["accession"]
