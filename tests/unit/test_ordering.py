"""Out-of-order messages: the patient's data and the encounter keep their own times
(real LMDB, no sockets).  A newer A31 or merge changes the patient, not the encounter:
an older discharge that arrives after it still closes the encounter, and still leaves
the newer name and identity."""

from __future__ import annotations

from tests.data.make_corpus import msg
from tests.unit.index_helpers import a40, apply_message, listed, record

FIELDS = ("PatientID", "AdmissionID", "PatientName")


def _a31(cid: str, mrn: str, name: str, when: str) -> str:
    return msg("A31", cid, mrn, "", name=name, pv1=False, structure="ADT_A05", when=when)


def test_an_older_discharge_after_a_name_change_still_discharges(store):
    """The audit's case: A04 at 10:00, A31 at 10:10, then the A03 of 10:05."""
    assert apply_message(store, msg("A04", "C1", "P1", "V1", name="OLD^NAME", when="20261128100000")) == "created"
    assert apply_message(store, _a31("C2", "P1", "NEW^NAME", "20261128101000")).startswith("person updated on 1")
    assert apply_message(store, msg("A03", "C3", "P1", "V1", name="OLD^NAME", when="20261128100500")) == "a03"
    rec = record(store, "V|GENHOSP|V1")
    assert rec["status"] == "discharged"
    assert rec["patient"]["PatientName"] == "NEW^NAME"  # the older message's name did not win
    assert listed(store, *FIELDS) == []


def test_an_older_name_change_does_not_undo_a_newer_update(store):
    assert apply_message(store, msg("A04", "C1", "P1", "V1", name="FIRST^NAME", when="20261128100000")) == "created"
    assert apply_message(store, msg("A08", "C2", "P1", "V1", name="THIRD^NAME", when="20261128102000")) == "updated"
    assert apply_message(store, _a31("C3", "P1", "SECOND^NAME", "20261128101000")) == "person updated on 0"
    assert record(store, "V|GENHOSP|V1")["patient"]["PatientName"] == "THIRD^NAME"


def test_an_older_update_after_a_merge_keeps_the_surviving_identity(store):
    assert apply_message(store, msg("A04", "C1", "OLD", "V1", name="MERGE^MIA", when="20261128100000")) == "created"
    assert apply_message(store, a40("C2", "NEW^^^GENHOSP^MR", "OLD^^^GENHOSP^MR", "MERGE^MIA")) == "merged"
    late = msg("A08", "C3", "OLD", "V1", name="MERGE^MIA", loc="WARD^2^B^GENHOSP", when="20261128103000")
    assert apply_message(store, late) == "updated"
    rec = record(store, "V|GENHOSP|V1")
    assert rec["patient"]["PatientID"] == "NEW" and rec["patient_key"] == "GENHOSP|NEW"
    assert rec["visit"]["CurrentPatientLocation"] == "WARD-2-B"  # the encounter data did apply
    assert listed(store, *FIELDS) == [("NEW", "V1", "MERGE^MIA")]


def test_a_late_message_does_not_bring_back_a_merged_away_visit_less_encounter(store):
    assert apply_message(store, msg("A04", "C1", "OLD", "", name="FOX^FAY", when="20261128100000")) == "created"
    assert apply_message(store, a40("C2", "NEW^^^GENHOSP^MR", "OLD^^^GENHOSP^MR", "FOX^FAY")) == "merged"
    late = msg("A08", "C3", "OLD", "", name="FOX^FAY", when="20261128103000")
    assert apply_message(store, late) == "stale"
    assert listed(store, *FIELDS) == [("NEW", "", "FOX^FAY")]
    # a message newer than the merge is the EHR's to answer for: applied as sent
    newer = msg("A04", "C4", "OLD", "", name="FOX^FAY", when="20261128120000")
    assert apply_message(store, newer) == "created"
