"""Out-of-order messages: the patient's data and the encounter keep their own times
(real LMDB, no sockets).  A newer A31 or merge changes the patient, not the encounter:
an older discharge that arrives after it still closes the encounter, and still leaves
the newer name and identity."""

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


def _record(store: Store, key: str) -> dict:
    with store.read() as txn:
        return store.get_encounter(txn, EP, key)


def _listed(store: Store) -> list[tuple[str, str, str]]:
    items = WorklistIndex(store, EP, lambda: CFG).select([])
    return sorted((i["PatientID"], i["AdmissionID"], i["PatientName"]) for i in items)


def _a31(cid: str, mrn: str, name: str, when: str) -> str:
    return msg("A31", cid, mrn, "", name=name, pv1=False, structure="ADT_A05", when=when)


def test_an_older_discharge_after_a_name_change_still_discharges(tmp_path):
    """The audit's case: A04 at 10:00, A31 at 10:10, then the A03 of 10:05."""
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "P1", "V1", name="OLD^NAME", when="20261128100000")) == "created"
        assert _apply(store, _a31("C2", "P1", "NEW^NAME", "20261128101000")).startswith("person updated on 1")
        assert _apply(store, msg("A03", "C3", "P1", "V1", name="OLD^NAME", when="20261128100500")) == "a03"
        record = _record(store, "V|GENHOSP|V1")
        assert record["status"] == "discharged"
        assert record["patient"]["PatientName"] == "NEW^NAME"  # the older message's name did not win
        assert _listed(store) == []
    finally:
        store.close()


def test_an_older_name_change_does_not_undo_a_newer_update(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "P1", "V1", name="FIRST^NAME", when="20261128100000")) == "created"
        assert _apply(store, msg("A08", "C2", "P1", "V1", name="THIRD^NAME", when="20261128102000")) == "updated"
        assert _apply(store, _a31("C3", "P1", "SECOND^NAME", "20261128101000")) == "person updated on 0"
        assert _record(store, "V|GENHOSP|V1")["patient"]["PatientName"] == "THIRD^NAME"
    finally:
        store.close()


def test_an_older_update_after_a_merge_keeps_the_surviving_identity(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "OLD", "V1", name="MERGE^MIA", when="20261128100000")) == "created"
        a40 = msg(
            "A40", "C2", "NEW", "", name="MERGE^MIA", mrg="OLD^^^GENHOSP^MR", pv1=False, structure="ADT_A39",
            when="20261128110000",
        )  # fmt: skip
        assert _apply(store, a40) == "merged"
        late = msg("A08", "C3", "OLD", "V1", name="MERGE^MIA", loc="WARD^2^B^GENHOSP", when="20261128103000")
        assert _apply(store, late) == "updated"
        record = _record(store, "V|GENHOSP|V1")
        assert record["patient"]["PatientID"] == "NEW" and record["patient_key"] == "GENHOSP|NEW"
        assert record["visit"]["CurrentPatientLocation"] == "WARD-2-B"  # the encounter data did apply
        assert _listed(store) == [("NEW", "V1", "MERGE^MIA")]
    finally:
        store.close()


def test_a_late_message_does_not_bring_back_a_merged_away_visit_less_encounter(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        assert _apply(store, msg("A04", "C1", "OLD", "", name="FOX^FAY", when="20261128100000")) == "created"
        a40 = msg(
            "A40", "C2", "NEW", "", name="FOX^FAY", mrg="OLD^^^GENHOSP^MR", pv1=False, structure="ADT_A39",
            when="20261128110000",
        )  # fmt: skip
        assert _apply(store, a40) == "merged"
        late = msg("A08", "C3", "OLD", "", name="FOX^FAY", when="20261128103000")
        assert _apply(store, late) == "stale"
        assert _listed(store) == [("NEW", "", "FOX^FAY")]
        # a message newer than the merge is the EHR's to answer for: applied as sent
        newer = msg("A04", "C4", "OLD", "", name="FOX^FAY", when="20261128120000")
        assert _apply(store, newer) == "created"
    finally:
        store.close()
