"""The foundation slice end to end: ADT over a real MLLP socket -> LMDB -> MWL C-FIND.

Every test runs a real ``ebw serve`` (2 workers) on loopback and talks to it
with real clients: an MLLP socket, a pynetdicom SCU and DCMTK ``findscu``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from tests.conftest import PHI_SENTINEL, corpus, dcmtk_findscu, msa, run_findscu

pytestmark = pytest.mark.network


def mwl_query(**top: str) -> Dataset:
    ds = Dataset()
    for kw in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "AdmissionID",
        "CurrentPatientLocation",
        "ReferringPhysicianName",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
    ):
        setattr(ds, kw, "")
    sps = Dataset()
    for kw in (
        "Modality",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepStartTime",
        "ScheduledProcedureStepID",
        "ScheduledProcedureStepDescription",
        "ScheduledStationAETitle",
    ):
        setattr(sps, kw, "")
    for k, v in top.items():
        if k.startswith("SPS_"):
            setattr(sps, k[4:], v)
        else:
            setattr(ds, k, v)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def cfind(server, query: Dataset, calling: str = "TESTSCU") -> list[Dataset]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    assert assoc.is_established
    out = []
    try:
        for status, ident in assoc.send_c_find(query, ModalityWorklistInformationFind):
            assert status is not None and "Status" in status, "C-FIND got no response"
            if status.Status in (0xFF00, 0xFF01):
                out.append(ident)
            else:
                assert status.Status == 0x0000, hex(status.Status)
    finally:
        assoc.release()
    return out


def test_a04_is_acked_after_storing_and_listed(server):
    ack = server.send(corpus("001_a04_register.hl7"))
    assert msa(ack) == ("AA", "MSG00001")
    msh = ack.split(b"\r")[0].split(b"|")
    assert msh[8] == b"ACK^A04^ACK"
    assert (msh[2], msh[3], msh[4], msh[5]) == (b"EBW", b"GENHOSP", b"EPIC", b"GENHOSP")

    items = cfind(server, mwl_query())
    assert len(items) == 1
    it = items[0]
    assert str(it.PatientName) == "DOE^JANE^Q^MRS"
    assert it.PatientID == "555123"
    assert it.IssuerOfPatientID == "GENHOSP"
    assert it.PatientBirthDate == "19800101"
    assert it.PatientSex == "F"
    assert it.AdmissionID == "V999"
    assert it.CurrentPatientLocation == "ED-12-A"
    assert str(it.ReferringPhysicianName) == "WILSON^JAMES"
    assert it.RequestedProcedureID == "POCUS"
    assert it.RequestedProcedureDescription == "Point of care ultrasound"
    assert it.AccessionNumber.startswith("EB") and len(it.AccessionNumber) == 14
    assert it.AccessionNumber[2:].isdigit()
    assert it.StudyInstanceUID.startswith("2.25.")
    sps = it.ScheduledProcedureStepSequence[0]
    assert sps.Modality == "US"
    assert sps.ScheduledProcedureStepStartDate == dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    assert sps.ScheduledProcedureStepID == it.AccessionNumber
    assert sps.ScheduledProcedureStepDescription == "Point of care ultrasound"
    # Only what was asked for comes back.
    assert "InstitutionName" not in it


def test_item_is_on_today_list_in_endpoint_timezone(server_factory):
    tz = "Pacific/Kiritimati"  # UTC+14
    s = server_factory(EBW_TIMEZONE=tz).start()
    assert msa(s.send(corpus("001_a04_register.hl7")))[0] == "AA"
    from zoneinfo import ZoneInfo

    today = dt.datetime.now(ZoneInfo(tz)).strftime("%Y%m%d")
    assert len(cfind(s, mwl_query(SPS_ScheduledProcedureStepStartDate=today))) == 1
    assert len(cfind(s, mwl_query(SPS_ScheduledProcedureStepStartDate=f"{today}-"))) == 1
    assert cfind(s, mwl_query(SPS_ScheduledProcedureStepStartDate="19990101")) == []


def test_matching_patient_id_name_wildcards_and_dates(server):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    assert len(cfind(server, mwl_query(PatientID="555123"))) == 1
    assert cfind(server, mwl_query(PatientID="555")) == []
    assert len(cfind(server, mwl_query(PatientName="DOE^J*"))) == 1
    assert len(cfind(server, mwl_query(PatientName="do?^*"))) == 1  # PN: case-insensitive
    assert cfind(server, mwl_query(PatientName="SMITH*")) == []
    assert len(cfind(server, mwl_query(SPS_ScheduledProcedureStepStartDate="20000101-20991231"))) == 1
    assert cfind(server, mwl_query(SPS_ScheduledProcedureStepStartDate="-20000101")) == []


def test_a08_updates_and_a03_removes(server):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    before = cfind(server, mwl_query())[0]
    assert msa(server.send(corpus("002_a08_update.hl7"))) == ("AA", "MSG00002")
    after = cfind(server, mwl_query())
    assert len(after) == 1
    assert str(after[0].PatientName) == "DOE^JANE^QUINN^MRS"
    assert after[0].CurrentPatientLocation == "ED-14-B"
    assert after[0].AccessionNumber == before.AccessionNumber  # same encounter, same number
    assert msa(server.send(corpus("003_a03_discharge.hl7"))) == ("AA", "MSG00003")
    assert cfind(server, mwl_query()) == []


def test_a08_for_unknown_encounter_creates_it(server):
    assert msa(server.send(corpus("002_a08_update.hl7")))[0] == "AA"
    assert len(cfind(server, mwl_query())) == 1


def test_message_without_pid3_gets_ae_and_changes_nothing(server):
    msg = corpus("001_a04_register.hl7").replace(b"555123^^^GENHOSP^MR~9876^^^STATE^PI", b"")
    ack = server.send(msg)
    assert msa(ack) == ("AE", "MSG00001")
    err = [s for s in ack.split(b"\r") if s.startswith(b"ERR")][0].split(b"|")
    assert err[2] == b"PID^1^3" and err[3].startswith(b"101^")
    assert cfind(server, mwl_query()) == []


def test_non_adt_message_gets_ar_with_err(server):
    msg = corpus("001_a04_register.hl7").replace(b"ADT^A04^ADT_A01", b"ORM^O01^ORM_O01")
    ack = server.send(msg)
    assert msa(ack) == ("AR", "MSG00001")
    assert any(s.startswith(b"ERR") and b"|200^" in s for s in ack.split(b"\r"))


def test_garbage_gets_ar(server):
    ack = server.send(b"this is not HL7\r")
    assert msa(ack)[0] == "AR"


def test_message_without_visit_number_keys_by_patient(server):
    base = corpus("001_a04_register.hl7")
    msg = base.replace(b"V999^^^GENHOSP^VN", b"").replace(b"ACCT777^^^GENHOSP^AN", b"")
    assert msa(server.send(msg))[0] == "AA"
    # A second visit-less registration for the same patient updates the same encounter.
    assert msa(server.send(msg.replace(b"ED^12^A", b"ED^20^C").replace(b"MSG00001", b"MSG00009")))[0] == "AA"
    items = cfind(server, mwl_query())
    assert len(items) == 1
    assert items[0].AdmissionID in ("", None)
    assert items[0].CurrentPatientLocation == "ED-20-C"


def test_restart_keeps_the_worklist(server_factory, tmp_path):
    s = server_factory(tmp_path / "d").start()
    assert msa(s.send(corpus("001_a04_register.hl7")))[0] == "AA"
    first = cfind(s, mwl_query())
    assert s.stop() == 0
    s2 = server_factory(tmp_path / "d").start()
    again = cfind(s2, mwl_query())
    assert [i.AccessionNumber for i in again] == [i.AccessionNumber for i in first]
    assert [i.StudyInstanceUID for i in again] == [i.StudyInstanceUID for i in first]
    # The accession counter survives the restart: a new encounter gets a new number.
    msg = corpus("001_a04_register.hl7").replace(b"V999", b"V1000").replace(b"MSG00001", b"MSG00010")
    assert msa(s2.send(msg))[0] == "AA"
    numbers = {i.AccessionNumber for i in cfind(s2, mwl_query())}
    assert len(numbers) == 2


def test_wrong_called_ae_title_is_rejected(server):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="NOTEBW")
    assert assoc.is_rejected


def test_c_echo(server):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_healthz_and_metrics(server):
    assert server.http("/healthz")[0] == 200
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    cfind(server, mwl_query())
    status, body = server.http("/metrics")
    assert status == 200
    text = body.decode()
    assert 'ebw_hl7_messages_total{ack="AA",endpoint="default",event="A04"} 1.0' in text
    assert 'ebw_active_encounters{endpoint="default"} 1.0' in text
    assert "ebw_cfind_queries_total" in text
    assert "ebw_cfind_duration_seconds_bucket" in text
    assert 'ebw_accessions_issued_total{endpoint="default"} 1.0' in text


def test_no_patient_data_in_logs(server):
    msg = corpus("001_a04_register.hl7").replace(b"DOE^JANE", PHI_SENTINEL.encode() + b"^JANE")
    assert msa(server.send(msg))[0] == "AA"
    assert msa(server.send(msg.replace(b"ADT^A04", b"ADT^Z99")))[0] == "AR"
    assert len(cfind(server, mwl_query(PatientName=PHI_SENTINEL + "*"))) == 1
    log = server.read_log()
    assert "MSG00001" in log  # the log does speak (DEBUG), just not about patients
    for secret in (PHI_SENTINEL, "555123", "19800101", "V999"):
        assert secret not in log


@pytest.mark.dcmtk
@pytest.mark.skipif(dcmtk_findscu() is None, reason="DCMTK findscu not installed")
def test_dcmtk_findscu_sees_the_item(server, tmp_path):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    keys = [
        "PatientName=",
        "PatientID=555123",
        "AccessionNumber=",
        "(0040,0100)[0].Modality=US",
        "(0040,0100)[0].ScheduledProcedureStepStartDate=",
    ]
    found = run_findscu(server.dicom_port, [a for k in keys for a in ("-k", k)], tmp_path)
    assert len(found) == 1
    ds = found[0]
    assert ds.PatientID == "555123"
    assert str(ds.PatientName) == "DOE^JANE^Q^MRS"
    assert ds.AccessionNumber.startswith("EB")
