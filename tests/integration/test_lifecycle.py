"""Table tests: the ADT corpus (tests/data/adt) through real MLLP, checked with real C-FIND.

Each scenario sends its messages in order; after each message the ACK code is
checked and, for each patient named, the worklist items (PatientName,
AdmissionID, CurrentPatientLocation) returned by a C-FIND on that Patient ID.
Scenarios use disjoint patients, so they share one server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EbwServer, msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network

DATA = Path(__file__).resolve().parent.parent / "data" / "adt"


def load(name: str) -> bytes:
    return (DATA / f"{name}.hl7").read_bytes()


Items = list[tuple[str, str, str]]
Step = tuple[str, str, dict[str, Items]]

SCENARIOS: dict[str, list[Step]] = {
    "ed lifecycle: register, update, transfer, cancel transfer, discharge, cancel discharge, cancel admit": [
        ("010_a04_register", "AA", {"L1": [("LIFE^ANNA", "LV1", "ED-1-A")]}),
        ("011_a08_update_name", "AA", {"L1": [("LIFE^ANNA^MARIE", "LV1", "ED-1-A")]}),
        ("012_a02_transfer", "AA", {"L1": [("LIFE^ANNA^MARIE", "LV1", "ICU-7-B")]}),
        ("013_a12_cancel_transfer", "AA", {"L1": [("LIFE^ANNA^MARIE", "LV1", "ED-1-A")]}),
        ("014_a03_discharge", "AA", {"L1": []}),
        ("015_a13_cancel_discharge", "AA", {"L1": [("LIFE^ANNA^MARIE", "LV1", "ED-1-A")]}),
        ("016_a11_cancel_admit", "AA", {"L1": []}),
    ],
    "pre-admit is pending (not listed by default), cancelled by A38": [
        ("020_a05_preadmit", "AA", {"P1": []}),
        ("021_a14_pending_admit", "AA", {"P1": []}),
        ("022_a38_cancel_preadmit", "AA", {"P1": []}),
    ],
    "inpatient v2.3 admit, class change with new visit number (MRG-5), back to outpatient": [
        ("023_a01_admit_v23", "AA", {"P2": [("INPAT^IRIS", "PV2A", "MED1-22-A")]}),
        ("024_a06_class_change_new_visit", "AA", {"P2": [("INPAT^IRIS", "PV2B", "MED1-22-A")]}),
        ("025_a07_to_outpatient", "AA", {"P2": [("INPAT^IRIS", "PV2B", "CLINIC-1")]}),
    ],
    "real-world formats": [
        ("030_lf_separators", "AA", {"R1": [("LINEFEED^LUKE", "RV1", "ED-1-A")]}),
        ("031_crlf_separators", "AA", {"R2": [("CRLF^CARL", "RV2", "ED-1-A")]}),
        ("032_utf8_bom", "AA", {"R3": [("BOM^BELLA", "RV3", "ED-1-A")]}),
        ("033_latin1_8859_1", "AA", {"R4": [("MÜLLER^JOSÉ", "RV4", "ED-1-A")]}),
        ("034_utf8_declared", "AA", {"R5": [("ÅSTRÖM^ZOË", "RV5", "ED-1-A")]}),
        ("035_escapes", "AA", {"R6": [("O&BRIEN SONS^MARYA", "RV6", "ED|X-1-A")]}),
        ("036_z_segments", "AA", {"R7": [("ZED^ZACK", "RV7", "ED-1-A")]}),
        ("037_v28_truncation_char", "AA", {"R8": [("EIGHT^EVA", "RV8", "ED-1-A")]}),
        ("038_custom_separators", "AA", {"R9": [("HASH^HANK", "RV9", "ED-1-A")]}),
        ("039_missing_trailing_fields", "AA", {"R10": [("SHORT^SAM", "", "")]}),
        ("040_account_number_only", "AA", {"R11": [("ACCOUNT^ALI", "ACC11", "ED-1-A")]}),
        ("041_no_visit_no_account", "AA", {"R12": [("NOVISIT^NORA", "", "ED-1-A")]}),
        ("045_repeated_pid3_mr_second", "AA", {"R16": [("REPEAT^RITA", "RV16", "ED-1-A")]}),
        ("048_legal_name_repetition", "AA", {"R19": [("LEGAL^LENA", "RV19", "ED-1-A")]}),
    ],
    "timestamps: fractions and offsets, minutes only, a stale update does not overwrite": [
        ("042_timestamps_fraction_offset", "AA", {"R13": [("TIME^TOM", "RV13", "ED-1-A")]}),
        ("043_timestamp_minutes_only", "AA", {"R13": [("TIME^TOMMY", "RV13", "ED-1-A")]}),
        ("044_stale_update_ignored", "AA", {"R13": [("TIME^TOMMY", "RV13", "ED-1-A")]}),
    ],
    "A08 for an unknown encounter creates it; A03 for an unknown one is recorded, not listed": [
        ("046_a08_unknown_creates", "AA", {"R17": [("UPSERT^UMA", "RV17", "ED-1-A")]}),
        ("049_explicit_null_birthdate", "AA", {"R17": [("UPSERT^UMA", "RV17", "ED-1-A")]}),
        ("047_a03_unknown_recorded", "AA", {"R18": []}),
    ],
    "person events: A31 updates every encounter, A28 creates none, A29 deletes": [
        ("050_a04_person_visit1", "AA", {"S1": [("PERSON^PETE", "SV1", "ED-1-A")]}),
        ("051_a04_person_visit2", "AA", {"S1": [("PERSON^PETE", "SV1", "ED-1-A"), ("PERSON^PETE", "SV2", "ED-2-B")]}),
        ("052_a31_update_person", "AA", {"S1": [("PERSON^PETER", "SV1", "ED-1-A"), ("PERSON^PETER", "SV2", "ED-2-B")]}),
        ("053_a28_add_person", "AA", {"S9": []}),
        ("054_a29_delete_person", "AA", {"S1": []}),
    ],
    "merges and identifier changes: nothing stays under the old identifier": [
        ("060_a04_old_mrn", "AA", {"MOLD": [("MERGE^MIA", "MV1", "ED-1-A")]}),
        ("061_a40_merge_patient", "AA", {"MOLD": [], "MNEW": [("MERGE^MIA", "MV1", "ED-1-A")]}),
        ("062_a04_old_mrn_2", "AA", {"MOLD2": [("MERGE^MAX", "MV2", "ED-1-A")]}),
        ("063_a34_merge_id_only", "AA", {"MOLD2": [], "MNEW2": [("MERGE^MAX", "MV2", "ED-1-A")]}),
        ("064_a04_account_keyed", "AA", {"MACC": [("ACCT^AMY", "OLDACCT", "ED-1-A")]}),
        ("065_a35_merge_account", "AA", {"MACC": [("ACCT^AMY", "NEWACCT", "ED-1-A")]}),
        ("066_a04_both_old", "AA", {"MB1": [("BOTH^BEN", "BACC1", "ED-1-A")]}),
        ("067_a36_merge_both", "AA", {"MB1": [], "MB2": [("BOTH^BEN", "BACC2", "ED-1-A")]}),
        ("068_a04_legacy_old", "AA", {"MLEG1": [("LEGACY^LEO", "MLV", "ED-1-A")]}),
        ("069_a18_legacy_merge", "AA", {"MLEG1": [], "MLEG2": [("LEGACY^LEO", "MLV", "ED-1-A")]}),
        ("070_a04_rename_old", "AA", {"MREN1": [("RENAME^RAY", "MRV", "ED-1-A")]}),
        ("071_a47_change_identifier", "AA", {"MREN1": [], "MREN2": [("RENAME^RAY", "MRV", "ED-1-A")]}),
        ("072_a04_two_to_merge_a", "AA", {"MTWO1": [("TWO^TESS", "MTV1", "ED-1-A")]}),
        ("073_a04_two_to_merge_b", "AA", {"MTWO2": [("TWO^TARA", "MTV2", "ED-1-A")]}),
        (
            "074_a40_two_pairs",
            "AA",
            {
                "MTWO1": [],
                "MTWO2": [],
                "MTWOX": [("TWO^TESS", "MTV1", "ED-1-A")],
                "MTWOY": [("TWO^TARA", "MTV2", "ED-1-A")],
            },
        ),
    ],
    "delete visit, ignored events and errors change nothing": [
        ("080_a04_to_delete", "AA", {"D1": [("DELETE^DAN", "DV1", "ED-1-A")]}),
        ("081_a23_delete_visit", "AA", {"D1": []}),
        ("082_a60_allergy_ignored", "AA", {"D1": []}),
        ("083_orm_not_adt", "AR", {"D1": []}),
        ("084_unknown_event", "AR", {"D1": []}),
        ("085_missing_pid3", "AE", {}),
        ("086_not_hl7", "AR", {}),
    ],
    # (that the resend is not applied again is test_dedupe's: here it would change nothing)
    "a resent MSH-10 is answered the same; one reused for other content is applied": [
        ("087_duplicate_a04", "AA", {"D7": [("DUP^DORA", "DV7", "ED-1-A")]}),
        ("087_duplicate_a04", "AA", {"D7": [("DUP^DORA", "DV7", "ED-1-A")]}),
        ("088_duplicate_resend_changed", "AA", {"D7": [("DUP^CHANGED", "DV7", "ED-1-A")]}),
    ],
}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    s = EbwServer(tmp_path_factory.mktemp("lifecycle") / "data").start()
    yield s
    s.stop()


def worklist(server: EbwServer, patient_id: str) -> Items:
    items = cfind(server, mwl_query(PatientID=patient_id))
    return sorted((str(i.PatientName), i.AdmissionID or "", i.CurrentPatientLocation or "") for i in items)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(shared_server, scenario):
    for name, ack_code, expected in SCENARIOS[scenario]:
        ack = shared_server.send(load(name))
        assert msa(ack)[0] == ack_code, f"{name}: {ack!r}"
        for patient_id, items in expected.items():
            assert worklist(shared_server, patient_id) == sorted(items), f"after {name}, patient {patient_id}"


def test_every_corpus_message_is_used():
    used = {name for steps in SCENARIOS.values() for name, _, _ in steps}
    files = {p.stem for p in DATA.glob("*.hl7")}
    assert files == used
    assert len(files) >= 40


def test_accession_follows_the_encounter_through_merges(shared_server):
    """Merged items keep their accession number and Study Instance UID."""
    before = cfind(shared_server, mwl_query(PatientID="MB2")) or cfind(shared_server, mwl_query(PatientID="MB1"))
    assert len(before) == 1 and before[0].AccessionNumber


def test_pending_listed_when_curation_says_so(server_factory):
    s = server_factory(EBW_CURATION='{"pending": true}').start()
    assert msa(s.send(load("020_a05_preadmit")))[0] == "AA"
    assert worklist(s, "P1") == [("PRE^PAUL", "PV1A", "ED-1-A")]
    assert msa(s.send(load("022_a38_cancel_preadmit")))[0] == "AA"
    assert worklist(s, "P1") == []


def test_curation_include_and_exclude(server_factory):
    s = server_factory(
        EBW_CURATION='{"include": {"patient_class": ["E"]}, "exclude": {"point_of_care": ["ICU"]}}'
    ).start()
    for name in ("010_a04_register", "023_a01_admit_v23"):
        assert msa(s.send(load(name)))[0] == "AA"
    assert worklist(s, "L1") == [("LIFE^ANNA", "LV1", "ED-1-A")]
    assert worklist(s, "P2") == []  # inpatient: not included
    assert msa(s.send(load("012_a02_transfer")))[0] == "AA"
    assert worklist(s, "L1") == []  # moved to the ICU: excluded


def test_stale_emergency_encounters_expire(server_factory):
    s = server_factory(EBW_CURATION='{"max_age_hours": {"E": 0.0001}}').start()
    assert msa(s.send(load("010_a04_register")))[0] == "AA"
    import time

    time.sleep(0.5)
    assert worklist(s, "L1") == []


def test_non_ascii_names_reach_dicom_with_the_right_character_set(server_factory):
    s = server_factory().start()
    assert msa(s.send(load("034_utf8_declared")))[0] == "AA"
    assert msa(s.send(load("039_missing_trailing_fields")))[0] == "AA"
    default = cfind(s, mwl_query(PatientID="R5"))
    assert default[0].SpecificCharacterSet == "ISO_IR 192" and str(default[0].PatientName) == "ÅSTRÖM^ZOË"
    latin = mwl_query(PatientID="R5")
    latin.SpecificCharacterSet = "ISO_IR 100"
    got = cfind(s, latin)
    assert got[0].SpecificCharacterSet == "ISO_IR 100" and str(got[0].PatientName) == "ÅSTRÖM^ZOË"
    plain = cfind(s, mwl_query(PatientID="R10"))
    assert "SpecificCharacterSet" not in plain[0]  # all ASCII: default repertoire
