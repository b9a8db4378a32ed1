"""The direct identifier encoder writes what pydicom writes for the same response."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from ebw.dicom.find import Query, ResponseEncoder, build_response, encode_response
from ebw.worklist import SPS

ITEM = {
    "PatientName": "MÜLLER^JOSÉ",
    "PatientID": "R4",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "AccessionNumber": "EB000000000001",
    "StudyInstanceUID": "2.25.123",
    "AdmissionID": "V1",
    SPS + "Modality": "US",
    SPS + "ScheduledProcedureStepStartDate": "20261128",
    SPS + "ScheduledProcedureStepStartTime": "101500",
    SPS + "ScheduledStationAETitle": "",
    "IssuerOfAdmissionIDSequence.LocalNamespaceEntityID": "GENHOSP",
}


def pydicom_bytes(ds, explicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = not explicit
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("charset", ["", "ISO_IR 100", "ISO_IR 192"])
@pytest.mark.parametrize("tz", [False, True])
def test_same_bytes_as_pydicom(explicit, charset, tz):
    q = Query(
        top=[
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "AccessionNumber",
            "StudyInstanceUID",
            "PatientWeight",
            "AdmissionID",
        ],
        sps=["Modality", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle"],
        empty_sequences=["ReferencedStudySequence"],
        sps_empty=["ScheduledProtocolCodeSequence"],
        charset=charset,
        timezone_requested=tz,
        sequences={"IssuerOfAdmissionIDSequence": ["LocalNamespaceEntityID", "UniversalEntityID"]},
    )
    ds = build_response(q, ITEM, "+0100")
    assert ds.IssuerOfAdmissionIDSequence[0].LocalNamespaceEntityID == "GENHOSP"
    ds.IssuerOfAdmissionIDSequence.is_undefined_length = False
    ds.IssuerOfAdmissionIDSequence[0].is_undefined_length_sequence_item = False
    ds.ScheduledProcedureStepSequence.is_undefined_length = False
    for item in ds.ScheduledProcedureStepSequence:
        item.is_undefined_length_sequence_item = False
        item.ScheduledProtocolCodeSequence.is_undefined_length = False
    ds.ReferencedStudySequence.is_undefined_length = False
    mine = encode_response(q, ITEM, "+0100", explicit)._ebw_data
    assert mine == pydicom_bytes(ds, explicit)
    # the compiled encoder: the same bytes
    fast = ResponseEncoder(q, "+0100", explicit)
    assert fast.encode(ITEM) == mine
    ascii_item = dict(ITEM, PatientName="MULLER^JOSE")
    assert fast.encode(ascii_item) == encode_response(q, ascii_item, "+0100", explicit)._ebw_data
    no_issuer = dict(ascii_item, **{"IssuerOfAdmissionIDSequence.LocalNamespaceEntityID": ""})
    assert fast.encode(no_issuer) == encode_response(q, no_issuer, "+0100", explicit)._ebw_data


@pytest.mark.parametrize("explicit", [False, True])
def test_a_sequence_with_no_values_has_no_item(explicit):
    q = Query(top=["PatientID"], sequences={"IssuerOfAdmissionIDSequence": ["LocalNamespaceEntityID"]})
    item = dict(ITEM, **{"IssuerOfAdmissionIDSequence.LocalNamespaceEntityID": ""})
    ds = build_response(q, item, "+0000")
    assert len(ds.IssuerOfAdmissionIDSequence) == 0
    ds.IssuerOfAdmissionIDSequence.is_undefined_length = False
    assert encode_response(q, item, "+0000", explicit)._ebw_data == pydicom_bytes(ds, explicit)


TOP_KWS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "AdmissionID",
    "PatientWeight",
    "InstitutionName",
    "RequestedProcedureID",
]
SPS_KWS = ["Modality", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "ScheduledStationAETitle"]


@settings(max_examples=300, deadline=None)
@given(
    top=st.lists(st.sampled_from(TOP_KWS), unique=True),
    sps=st.one_of(st.none(), st.lists(st.sampled_from(SPS_KWS), unique=True)),
    issuer=st.booleans(),
    values=st.dictionaries(st.sampled_from(TOP_KWS + [SPS + k for k in SPS_KWS]), st.text(max_size=9), max_size=8),
    charset=st.sampled_from(["", "ISO_IR 100", "ISO_IR 192"]),
    tz=st.booleans(),
    explicit=st.booleans(),
)
def test_compiled_encoder_agrees(top, sps, issuer, values, charset, tz, explicit):
    q = Query(top=top, sps=sps, charset=charset, timezone_requested=tz)
    if issuer:
        q.sequences["IssuerOfAdmissionIDSequence"] = ["UniversalEntityID", "LocalNamespaceEntityID"]
    item = dict(ITEM, **values)
    fast = ResponseEncoder(q, "-0500", explicit).encode(item)
    slow = encode_response(q, item, "-0500", explicit)._ebw_data
    assert fast == slow
