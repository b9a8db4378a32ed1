"""MWL C-FIND rules through a real association: station AE title, combined date-time,
timezones, access lists, privacy, result caps, C-CANCEL, and DCMTK findscu interop."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from tests.conftest import dcmtk_findscu, msa, run_findscu
from tests.integration.test_lifecycle import load
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def statuses(server, query: Dataset, calling: str = "TESTSCU") -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    assert assoc.is_established
    out = [s.Status for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    assoc.release()
    return out


def admit(server, *names: str) -> None:
    for n in names:
        assert msa(server.send(load(n)))[0] == "AA"


def test_station_ae_title_in_query_does_not_exclude_by_default(server):
    admit(server, "010_a04_register")
    got = cfind(server, mwl_query(SPS_ScheduledStationAETitle="US_CART_7"))
    assert len(got) == 1


def test_strict_station_matching_uses_the_allowed_stations(server_factory):
    s = server_factory(EBW_STATION_AET_MATCHING="strict", EBW_CALLING_AETS="US1,US2").start()
    admit(s, "010_a04_register")
    assert len(cfind(s, mwl_query(SPS_ScheduledStationAETitle="US2"), calling="US2")) == 1
    assert cfind(s, mwl_query(SPS_ScheduledStationAETitle="US9"), calling="US1") == []
    got = cfind(s, mwl_query(), calling="US1")
    assert got[0].ScheduledProcedureStepSequence[0].ScheduledStationAETitle == ["US1", "US2"]


def test_calling_ae_allow_list(server_factory):
    s = server_factory(EBW_CALLING_AETS="US1").start()
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", s.dicom_port, ae_title="EBW")
    assert assoc.is_rejected
    assert cfind(s, mwl_query(), calling="US1") == []


def test_source_address_allow_list(server_factory):
    s = server_factory(EBW_DICOM_ALLOW_FROM="10.0.0.0/8").start()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", s.dicom_port, ae_title="EBW")
    assert not assoc.is_established
    s2 = server_factory(EBW_DICOM_ALLOW_FROM="10.0.0.0/8,127.0.0.1").start()
    assert cfind(s2, mwl_query()) == []


def test_result_cap_refuses_with_a700(server_factory):
    s = server_factory(EBW_CFIND_MAX_RESULTS="1").start()
    admit(s, "010_a04_register", "050_a04_person_visit1")
    assert statuses(s, mwl_query()) == [0xA700]
    assert len(cfind(s, mwl_query(PatientID="L1"))) == 1


def test_confidential_encounters_only_for_queries_naming_the_patient(server_factory):
    s = server_factory(EBW_BROAD_QUERY_MAX="5").start()
    vip = load("010_a04_register").replace(
        b"GREGORY^^^DR|5678^WILSON^JAMES||EM|||||||||LV1", b"GREGORY^^^DR|5678^WILSON^JAMES||EM||||||Y|||LV1"
    )
    assert b"||Y|||LV1" in vip
    assert msa(s.send(vip))[0] == "AA"
    admit(s, "050_a04_person_visit1")
    assert [i.PatientID for i in cfind(s, mwl_query())] == ["S1"]
    assert [i.PatientID for i in cfind(s, mwl_query(PatientName="LIFE*"))] == []
    assert [i.PatientID for i in cfind(s, mwl_query(PatientID="L1"))] == ["L1"]
    assert [i.PatientID for i in cfind(s, mwl_query(PatientName="LIFE^ANNA"))] == ["L1"]
    # keys that match everyone name nobody; a list of IDs names several patients, not one
    assert [i.PatientID for i in cfind(s, mwl_query(PatientName="^^^^"))] == ["S1"]
    assert [i.PatientID for i in cfind(s, mwl_query(AccessionNumber="\\"))] == ["S1"]
    assert [i.PatientID for i in cfind(s, mwl_query(PatientID="L1\\S1"))] == ["S1"]


def test_broad_query_cap(server_factory):
    s = server_factory(EBW_BROAD_QUERY_MAX="1").start()
    admit(s, "010_a04_register", "050_a04_person_visit1")
    assert statuses(s, mwl_query()) == [0xA700]
    assert statuses(s, mwl_query(PatientName="^")) == [0xA700]
    assert statuses(s, mwl_query(PatientID="L1\\S1")) == [0xA700]
    assert statuses(s, mwl_query(PatientID="S1")) == [0xFF00, 0x0000]


def test_combined_start_date_and_time_ranges(server):
    admit(server, "010_a04_register")
    item = cfind(server, mwl_query())[0].ScheduledProcedureStepSequence[0]
    day, start = item.ScheduledProcedureStepStartDate, item.ScheduledProcedureStepStartTime
    if start >= "235800":
        pytest.skip("too close to midnight for this check")
    yesterday = (dt.date(int(day[:4]), int(day[4:6]), int(day[6:])) - dt.timedelta(days=1)).strftime("%Y%m%d")
    hi = (dt.datetime.strptime(start, "%H%M%S") + dt.timedelta(minutes=1)).strftime("%H%M")
    # From yesterday 23:59 to today just after the item's start: only a combined
    # date-time range matches (as two separate keys, 2359-hhmm matches nothing).
    got = cfind(
        server,
        mwl_query(
            SPS_ScheduledProcedureStepStartDate=f"{yesterday}-{day}", SPS_ScheduledProcedureStepStartTime=f"2359-{hi}"
        ),
    )
    assert len(got) == 1
    # Single date + single time (hour precision) also combine.
    assert (
        len(
            cfind(
                server,
                mwl_query(SPS_ScheduledProcedureStepStartDate=day, SPS_ScheduledProcedureStepStartTime=start[:2]),
            )
        )
        == 1
    )
    assert (
        cfind(
            server,
            mwl_query(SPS_ScheduledProcedureStepStartDate=yesterday, SPS_ScheduledProcedureStepStartTime=start[:2]),
        )
        == []
    )


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])  # UTC+14, UTC-11
def test_today_in_far_timezones(server_factory, tz):
    s = server_factory(EBW_TIMEZONE=tz).start()
    admit(s, "010_a04_register")
    today = dt.datetime.now(ZoneInfo(tz)).strftime("%Y%m%d")
    q = mwl_query(SPS_ScheduledProcedureStepStartDate=today)
    q.TimezoneOffsetFromUTC = ""
    got = cfind(s, q)
    assert len(got) == 1
    assert got[0].TimezoneOffsetFromUTC == ("+1400" if "Kiritimati" in tz else "-1100")


def test_query_timezone_offset_is_honoured(server):
    admit(server, "010_a04_register")
    today_plus14 = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=14)).strftime("%Y%m%d")
    q = mwl_query(SPS_ScheduledProcedureStepStartDate=today_plus14)
    q.TimezoneOffsetFromUTC = "+1400"
    got = cfind(server, q)
    assert len(got) == 1 and got[0].TimezoneOffsetFromUTC == "+1400"
    assert got[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate == today_plus14


def test_c_cancel_stops_the_responses(server_factory, monkeypatch):
    """A modality that reads slowly (small receive buffer) cancels after the first
    response: EBW stops long before the 2,000th."""
    import socket as _socket

    from pynetdicom.transport import AssociationSocket

    from bench.feed import Feed
    from ebw.mllp import MllpClient

    original = AssociationSocket._create_socket

    def small_buffer(self, address):  # type: ignore[no-untyped-def]
        sock = original(self, address)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 8192)
        return sock

    monkeypatch.setattr(AssociationSocket, "_create_socket", small_buffer)
    s = server_factory(EBW_FSYNC="off").start()
    feed = Feed(seed=3, prefix="CC")
    n = 2000
    with MllpClient("127.0.0.1", s.hl7_port) as c:
        for _ in range(n):
            e = feed.new_encounter()
            e.patient_class = "E"
            assert msa(c.send(feed.message("A04", e)))[0] == "AA"
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", s.dicom_port, ae_title="EBW")
    seen: list[int] = []
    responses = assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind, msg_id=7)
    for status, _ident in responses:
        seen.append(status.Status)
        if len(seen) == 1:
            assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
    assoc.release()
    assert seen[-1] == 0xFE00
    assert len(seen) < n // 2


def test_unknown_attribute_is_returned_empty_with_ff01(server):
    admit(server, "010_a04_register")
    q = mwl_query()
    q.PatientWeight = None  # return key EBW does not hold: zero length, still FF00
    q.MedicalAlerts = "DIABETES"  # a non-empty key EBW cannot match: ignored, FF01
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
    rsp = list(assoc.send_c_find(q, ModalityWorklistInformationFind))
    assoc.release()
    assert [s.Status for s, _ in rsp] == [0xFF01, 0x0000]
    ident = rsp[0][1]
    assert "PatientWeight" in ident and not ident.PatientWeight


@pytest.mark.dcmtk
@pytest.mark.skipif(dcmtk_findscu() is None, reason="DCMTK findscu not installed")
@pytest.mark.parametrize(
    "keys,expect",
    [
        # what modalities really send: an empty SPS item, a station AE title, a date range, a charset
        (["-k", "(0040,0100)[0]"], 1),
        (["-k", "(0040,0100)[0].ScheduledStationAETitle=ULTRASOUND1", "-k", "(0040,0100)[0].Modality=US"], 1),
        (["-k", "(0040,0100)[0].ScheduledProcedureStepStartDate=19000101-29991231"], 1),
        (["-k", "(0040,0100)[0].ScheduledProcedureStepStartDate=19000101-19000102"], 0),
        (["-k", "SpecificCharacterSet=ISO_IR 100", "-k", "PatientName=M*"], 1),
        (["-k", "PatientName=m?ller*"], 1),
    ],
)
def test_findscu_interop(server, tmp_path, keys, expect):
    admit(server, "033_latin1_8859_1")
    base = ["-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber"]
    found = run_findscu(server.dicom_port, base + keys, tmp_path, calling="ULTRASOUND1")
    assert len(found) == expect
    if expect:
        ds = found[0]
        assert str(ds.PatientName) == "MÜLLER^JOSÉ"
        assert ds.PatientID == "R4"


QUIRKS = (
    '{"OLDUS": ["charset:ISO_IR 100", "no-station-aet"], "TIMEUS": ["date-only", "ignore-modality"],'
    ' "SEQUS": ["empty-sequence-item"], "CHEAPUS": ["charset:ISO_IR 6"]}'
)


def test_quirk_profiles_per_calling_ae(server_factory):
    s = server_factory(
        EBW_QUIRKS=QUIRKS, EBW_STATION_AET_MATCHING="strict", EBW_CALLING_AETS="US1,OLDUS,TIMEUS,SEQUS,CHEAPUS"
    ).start()
    admit(s, "034_utf8_declared")  # ÅSTRÖM^ZOË
    # charset: answered in ISO_IR 100 although the query did not ask; no-station-aet drops the key
    got = cfind(s, mwl_query(SPS_ScheduledStationAETitle="OLDUS"), calling="OLDUS")
    assert got[0].SpecificCharacterSet == "ISO_IR 100" and str(got[0].PatientName) == "ÅSTRÖM^ZOË"
    # strict station matching still applies to everyone else
    assert cfind(s, mwl_query(SPS_ScheduledStationAETitle="OTHER"), calling="US1") == []
    # ASCII only: transliterated, never "?"
    got = cfind(s, mwl_query(), calling="CHEAPUS")
    assert str(got[0].PatientName) == "ASTROM^ZOE" and "SpecificCharacterSet" not in got[0]
    # date-only ignores a time that would exclude the item; ignore-modality ignores "CT"
    q = mwl_query(SPS_ScheduledProcedureStepStartTime="000000-000001", SPS_Modality="CT")
    assert len(cfind(s, q, calling="TIMEUS")) == 1
    assert cfind(s, q, calling="US1") == []
    # an empty SPS item, or none, asks for the whole step (PS3.4 C.2.2.2.6): for everyone,
    # and empty-sequence-item, the profile that did it before, is still accepted
    for sequence in ([Dataset()], []):
        q = Dataset()
        q.PatientID = ""
        q.ScheduledProcedureStepSequence = sequence
        for calling in ("SEQUS", "US1"):
            step = cfind(s, q, calling=calling)[0].ScheduledProcedureStepSequence[0]
            assert step.Modality == "US" and step.ScheduledProcedureStepID and step.ScheduledProcedureStepStartDate
            assert step.ScheduledProcedureStepStatus == "SCHEDULED"


def test_long_answers_respect_a_small_maximum_pdu(server):
    """Responses written as P-DATA by EBW are fragmented to the SCU's maximum PDU length."""
    admit(server, "010_a04_register", "050_a04_person_visit1", "051_a04_person_visit2", "034_utf8_declared")
    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = 128  # each identifier needs several PDVs
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
    got = [
        ident
        for status, ident in assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind)
        if status.Status == 0xFF00
    ]
    assoc.release()
    assert sorted(str(i.PatientName) for i in got) == ["LIFE^ANNA", "PERSON^PETE", "PERSON^PETE", "ÅSTRÖM^ZOË"]
    assert all(i.ScheduledProcedureStepSequence[0].Modality == "US" for i in got)


def test_sequences_inside_the_step_are_returned_empty(server):
    admit(server, "010_a04_register")
    q = mwl_query()
    q.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = []
    q.ReferencedStudySequence = []
    got = cfind(server, q)
    assert len(got) == 1
    step = got[0].ScheduledProcedureStepSequence[0]
    assert "ScheduledProtocolCodeSequence" in step and len(step.ScheduledProtocolCodeSequence) == 0
    assert "ReferencedStudySequence" in got[0] and len(got[0].ReferencedStudySequence) == 0


def test_encounter_based_keys(server):
    """IHE EBIW keys: Admission ID, Institution Name and Department are returned and matched."""
    admit(server, "010_a04_register", "023_a01_admit_v23")
    q = mwl_query(InstitutionalDepartmentName="EM")
    q.InstitutionName = "GENHOSP"
    got = sorted((i.PatientID, i.InstitutionName, i.InstitutionalDepartmentName) for i in cfind(server, q))
    assert got == [("L1", "GENHOSP", "EM"), ("P2", "GENHOSP", "EM")]
    assert cfind(server, mwl_query(InstitutionalDepartmentName="CARD")) == []
    assert [i.AdmissionID for i in cfind(server, mwl_query(AdmissionID="PV2A"))] == ["PV2A"]


def test_issuer_of_admission_id_is_returned_and_matched(server):
    """EBIW R+: Issuer of Admission ID Sequence carries the visit number's assigning authority (PV1-19.4)."""
    admit(server, "010_a04_register", "023_a01_admit_v23")
    q = mwl_query()
    q.IssuerOfAdmissionIDSequence = []  # zero items: return the whole item
    got = {i.AdmissionID: i.IssuerOfAdmissionIDSequence for i in cfind(server, q)}
    assert {k: [x.LocalNamespaceEntityID for x in v] for k, v in got.items()} == {
        "LV1": ["GENHOSP"],
        "PV2A": ["GENHOSP"],
    }
    assert "UniversalEntityID" in got["LV1"][0] and got["LV1"][0].UniversalEntityID in ("", None)
    sub = Dataset()
    sub.LocalNamespaceEntityID = "OTHERHOSP"
    q.IssuerOfAdmissionIDSequence = [sub]
    assert cfind(server, q) == []
    sub.LocalNamespaceEntityID = "GENHOSP"
    q.IssuerOfAdmissionIDSequence = [sub]
    got = cfind(server, q)
    assert len(got) == 2 and all(list(i.IssuerOfAdmissionIDSequence[0].keys()) == [0x00400031] for i in got)


def test_over_long_fields_are_cut_to_their_vr_and_explicit_vr_queries_still_work(server):
    """A feed's over-long fields (an 80-character MRN, a 70,000-character name) must not
    break the worklist: values are cut to their VR's length (LO 64, PN 64 a group), so
    an SCU that offers only Explicit VR Little Endian (2-byte lengths) gets every item."""
    from pydicom.uid import ExplicitVRLittleEndian

    long_id = "9" * 80
    huge_name = "X" * 70_000 + "^JANE"
    msg = (
        load("010_a04_register")
        .replace(b"L1^^^GENHOSP^MR", long_id.encode() + b"^^^GENHOSP^MR")
        .replace(b"LIFE^ANNA", huge_name.encode())
    )
    assert msa(server.send(msg))[0] == "AA"
    admit(server, "050_a04_person_visit1")
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind))
    finally:
        assoc.release()
    assert [s.Status for s, _ in answers] == [0xFF00, 0xFF00, 0x0000]
    items = {str(i.PatientID): i for _s, i in answers[:2]}
    assert long_id[:64] in items and "S1" in items
    assert str(items[long_id[:64]].PatientName) == "X" * 64


@pytest.mark.parametrize("asked", ["ISO_IR 100", "ISO_IR 999", "\\ISO 2022 IR 87"])
def test_an_all_ascii_answer_names_no_character_set(server, asked):
    """Conformance statement section 5: no Specific Character Set when every value is
    ASCII, whatever the query named (an unknown one was echoed back)."""
    admit(server, "010_a04_register")
    q = mwl_query()
    q.SpecificCharacterSet = asked
    (item,) = cfind(server, q)
    assert "SpecificCharacterSet" not in item
