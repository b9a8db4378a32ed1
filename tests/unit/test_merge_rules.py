"""Merges move the right patient's encounters, and only those (real LMDB, no sockets).

A patient is an ID with its assigning authority: the same MRN at another hospital is
another person.  A visit-less encounter belongs to its patient: after a merge it is
the survivor's, so the survivor never has two of them open.
"""

from __future__ import annotations

from tests.data.make_corpus import msg
from tests.unit.index_helpers import EP, a40, apply_message, listed, record

FIELDS = ("PatientID", "IssuerOfPatientID", "AdmissionID", "PatientName")


def test_mrg_1_without_an_authority_never_takes_another_hospitals_patient(store):
    assert apply_message(store, msg("A04", "C1", "", "VA", pid3="777^^^HOSPA^MR", name="ALPHA^ANN")) == "created"
    assert apply_message(store, msg("A04", "C2", "", "VB", pid3="777^^^HOSPB^MR", name="BRAVO^BOB")) == "created"
    assert apply_message(store, a40("C3", "888^^^HOSPA^MR", "777", "ALPHA^ANN")) == "merged"
    assert listed(store, *FIELDS) == [("777", "HOSPB", "VB", "BRAVO^BOB"), ("888", "HOSPA", "VA", "ALPHA^ANN")]


def test_mrg_1_without_an_authority_finds_a_patient_stored_without_one(store):
    assert apply_message(store, msg("A04", "C1", "", "VA", pid3="555", name="CHARLIE^CY")) == "created"
    assert apply_message(store, msg("A04", "C2", "", "VB", pid3="555^^^HOSPB^MR", name="DELTA^DI")) == "created"
    assert apply_message(store, a40("C3", "556^^^HOSPA^MR", "555", "CHARLIE^CY")) == "merged"
    assert listed(store, *FIELDS) == [("555", "HOSPB", "VB", "DELTA^DI"), ("556", "HOSPA", "VA", "CHARLIE^CY")]


def test_mrg_1_with_an_authority_takes_exactly_that_patient(store):
    assert apply_message(store, msg("A04", "C1", "", "VA", pid3="777^^^HOSPA^MR", name="ALPHA^ANN")) == "created"
    assert apply_message(store, msg("A04", "C2", "", "VB", pid3="777^^^HOSPB^MR", name="BRAVO^BOB")) == "created"
    assert apply_message(store, a40("C3", "999^^^HOSPB^MR", "777^^^HOSPB^MR", "BRAVO^BOB")) == "merged"
    assert listed(store, *FIELDS) == [("777", "HOSPA", "VA", "ALPHA^ANN"), ("999", "HOSPB", "VB", "BRAVO^BOB")]


def test_a_merged_visit_less_encounter_is_the_survivors_only_one(store):
    """The audit's case: visit-less M2OLD merged into M2NEW, then an A08 and an A03 for
    M2NEW.  The discharge must take the patient off the list."""
    assert apply_message(store, msg("A04", "C1", "M2OLD", "", name="ECHO^EVE", when="20261128100000")) == "created"
    assert apply_message(store, a40("C2", "M2NEW^^^GENHOSP^MR", "M2OLD^^^GENHOSP^MR", "ECHO^EVE")) == "merged"
    assert listed(store, *FIELDS) == [("M2NEW", "GENHOSP", "", "ECHO^EVE")]
    a08 = msg("A08", "C3", "M2NEW", "", name="ECHO^EVE", loc="WARD^1^1^GENHOSP", when="20261128120000")
    assert apply_message(store, a08) == "updated"
    assert listed(store, *FIELDS) == [("M2NEW", "GENHOSP", "", "ECHO^EVE")]
    assert apply_message(store, msg("A03", "C4", "M2NEW", "", name="ECHO^EVE", when="20261128130000")) == "a03"
    assert listed(store, *FIELDS) == []
    with store.read() as txn:
        assert store.get_encounter(txn, EP, "P|GENHOSP|M2OLD") is None
        assert store.get_encounter(txn, EP, "P|GENHOSP|M2NEW")["status"] == "discharged"


def test_merging_two_visit_less_patients_leaves_one_open_encounter(store):
    assert apply_message(store, msg("A04", "C1", "OLD", "", name="FOX^FAY")) == "created"
    assert apply_message(store, msg("A04", "C2", "NEW", "", name="FOX^FAY")) == "created"
    old_accession = record(store, "P|GENHOSP|OLD")["accession"]
    assert apply_message(store, a40("C3", "NEW^^^GENHOSP^MR", "OLD^^^GENHOSP^MR", "FOX^FAY")) == "merged"
    assert listed(store, *FIELDS) == [("NEW", "GENHOSP", "", "FOX^FAY")]
    with store.read() as txn:  # the merged-away encounter's accession number leads to the survivor's
        assert store.get_encounter(txn, EP, "P|GENHOSP|OLD") is None
        assert store.current_key(txn, EP, "P|GENHOSP|OLD") == "P|GENHOSP|NEW"
    assert old_accession
