"""The ORU^R01 builder and ACK reading (no sockets), and PID/PV1 kept as received."""

from __future__ import annotations

import dataclasses

import pytest

from ebw import config
from ebw.hl7.adt import parse
from ebw.oru import build_oru, read_ack
from tests.data.make_corpus import msg

CFG = config.load({"EBW_TIMEZONE": "America/Chicago"}).endpoint
EXAM = {"accession": "EB000000000042", "study_uid": "2.25.7", "instances": 4, "exam_time": 1795860000.0}


def segs(raw: bytes, codec: str = "ascii") -> dict[str, list[str]]:
    return {s[:3]: s.split("|") for s in raw.decode(codec).split("\r") if s}


def record_of(message: str) -> dict:
    ch = parse(message.encode("utf-8"))
    return {"patient": ch.patient, "visit": ch.visit, "hl7": ch.segments}


def test_fields_the_ehr_files_the_result_by():
    rec = record_of(msg("A04", "C1", "MRN1", "V1", name="DOE^JANE"))
    out = segs(build_oru(rec, EXAM, CFG, "EBW000000000007", 1795861000.0))
    assert out["MSH"][8] == "ORU^R01^ORU_R01" and out["MSH"][9] == "EBW000000000007" and out["MSH"][11] == "2.5.1"
    assert out["MSH"][6].endswith("-0600")  # DTM with the endpoint's offset
    assert out["PID"][3] == "MRN1^^^GENHOSP^MR" and out["PV1"][19] == "V1^^^GENHOSP^VN"
    obr = out["OBR"]
    assert obr[4] == "POCUS^Point of care ultrasound^L"
    assert obr[3] == "EB000000000042^EBW" and obr[18] == "EB000000000042" and obr[19] == "EBW"
    assert obr[7] == "20261128040000-0600" and obr[25] == "F" and obr[16] == obr[16] and obr[24] == "RAD"
    assert out["ORC"][1] == "RE" and out["ORC"][3] == "EB000000000042^EBW" and out["ORC"][5] == "CM"
    assert len(out["MSH"]) == 12  # ASCII: no MSH-18


def test_non_ascii_declares_the_character_set():
    rec = record_of(msg("A04", "C1", "MRN1", "V1", name="MÜLLER^JOSÉ"))
    raw = build_oru(rec, EXAM, CFG, "X1", 1795861000.0)
    assert segs(raw, "utf-8")["MSH"][17] == "UNICODE UTF-8" and "MÜLLER".encode() in raw
    latin = dataclasses.replace(CFG, hl7_charset="8859/1")
    raw = build_oru(rec, EXAM, latin, "X1", 1795861000.0)
    assert segs(raw, "latin_1")["MSH"][17] == "8859/1" and "MÜLLER".encode("latin_1") in raw


def test_the_viewer_link_is_escaped_and_settings_are_used():
    cfg = dataclasses.replace(
        CFG,
        oru_viewer_url="https://viewer.example/s?uid={study_uid}&acc={accession}",
        oru_result_status="R",
        procedure_id="US-POC",
        procedure_description="Bedside ultrasound",
        oru_sending_facility="ED",
        oru_receiving_application="EPIC",
    )
    out = segs(build_oru(record_of(msg("A04", "C1", "M", "V")), EXAM, cfg, "X", 1795861000.0))
    assert out["MSH"][3] == "ED" and out["MSH"][4] == "EPIC"
    assert out["OBR"][4] == "US-POC^Bedside ultrasound^L" and out["OBR"][25] == "R"
    raw = build_oru(record_of(msg("A04", "C1", "M", "V")), EXAM, cfg, "X", 1795861000.0).decode()
    assert (
        "OBX|3|RP|VIEWER^Image viewer^L||https://viewer.example/s?uid=2.25.7\\T\\acc=EB000000000042^EBW^IM^HTML" in raw
    )


def test_segments_sent_with_other_delimiters_are_restated():
    message = msg("A04", "C1", "MRN1", "V1", name="OXBRIEN^PAT").replace("|", "#").replace("OXBRIEN", "O|BRIEN")
    ch = parse(message.encode())
    assert ch.segments["PID"].startswith("PID|1||MRN1^^^GENHOSP^MR||O\\F\\BRIEN^PAT")


@pytest.mark.parametrize(
    ("ack", "expect"),
    [
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\rMSA|AA|X1\r", "AA"),
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\rMSA|CA|X1\r", "AA"),
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\rMSA|AE|X1\rERR||PID^1^3|204|E||||Unknown patient\r", "AE"),
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\rMSA|CR|X1\r", "AR"),
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\rMSA|AA|OTHER\r", "error"),
        (b"MSH|^~\\&|E|H|EBW||1||ACK|1|P|2.5.1\r", "error"),
    ],
)
def test_reading_the_ack(ack, expect):
    code, detail, text = read_ack(ack, "X1")
    assert code == expect
    if b"ERR" in ack:  # the code is kept (the API shows it); the EHR's words are not
        assert (detail, text) == ("204", "Unknown patient")


def test_control_bytes_kept_from_the_adt_are_escaped_in_the_oru():
    """A lone LF is data in an ADT field (docs/hl7-interface.md section 2), and so is an
    0x1C: copied raw, one would split the ORU's PID for a reader that breaks on LF, the
    other end its MLLP frame.  They go out as \\Xhh\\, as in EBW's ACKs."""
    raw = msg("A04", "C1", "MRN1", "V1", name="DOE^JANE")
    pid = next(s for s in raw.split("\r") if s.startswith("PID"))
    fields = pid.split("|")
    fields[11] = "1 MAIN ST\n2ND FLOOR^^TOWN"
    fields[13] = "555\x1c0142"
    rec = record_of(raw.replace(pid, "|".join(fields)))
    assert "\n" in rec["hl7"]["PID"]  # kept as received
    out = build_oru(rec, EXAM, CFG, "X1", 1795861000.0)
    assert b"\n" not in out and b"\x1c" not in out
    got = segs(out)["PID"]
    assert got[11] == "1 MAIN ST\\X0A\\2ND FLOOR^^TOWN" and got[13] == "555\\X1C\\0142"
