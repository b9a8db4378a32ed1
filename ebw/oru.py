"""ORU^R01 to the EHR: the message for a finished exam, and one delivery attempt.

Layout (``shared/reference/hl7v2-oru.md`` §1-§5; one ORDER_OBSERVATION per exam)::

    MSH|^~\\&|<EBW_ORU_SENDING_APPLICATION>|<..._FACILITY>|<..._RECEIVING_...>|...|<now>||ORU^R01^ORU_R01|<id>|P|2.5.1
    PID   the encounter's latest PID as received in ADT (identity exactly as the EHR sent it)
    PV1   its latest PV1 as received (visit number PV1-19 with its authority)
    ORC|RE||<accession>^<app>||CM|||||||<PV1-7 attending>
    OBR|1||<accession>^<app>|<procedure ID>^<procedure description>^L|||<exam time>|||||||||<PV1-7>||
        <accession>|<app>|||<now>||RAD|<status>
    OBX|1|ST|113014^DICOM Study^DCM||<Study Instance UID>||||||O
    OBX|2|NM|IMAGES^Images^L||<instances>||||||<status>
    OBX|3|RP|VIEWER^Image viewer^L||<EBW_ORU_VIEWER_URL, escaped>^<app>^IM^HTML||||||<status>   (when set)

OBR-4.1/4.2 are the endpoint's Procedure ID/Description (the seed's rule); the
accession number the exam actually carried goes to ORC-3, OBR-3 and OBR-18,
with EBW's application name as its issuer (EI-2, OBR-19).  Times are DTM with
the endpoint's UTC offset.  The message is encoded in UTF-8 with MSH-18
``UNICODE UTF-8`` when it holds non-ASCII text (else ASCII, MSH-18 empty);
an endpoint whose EHR uses 8859/1 (``EBW_HL7_CHARSET``) gets that instead.

``deliver`` sends one message over MLLP and reads one ACK: the outcome is the
ACK code when MSA-2 matches the message's MSH-10, else ``error``/``timeout``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from typing import Any
from zoneinfo import ZoneInfo

from .config import EndpointConfig
from .hl7.text import CHARSETS, escape
from .mllp import MllpClient

log = logging.getLogger(__name__)

STUDY_UID_CODE = "113014^DICOM Study^DCM"


def dtm(ts: float, zone: _dt.tzinfo) -> str:
    """HL7 DTM with UTC offset: ``YYYYMMDDHHMMSS+ZZZZ``."""
    return _dt.datetime.fromtimestamp(ts, zone).strftime("%Y%m%d%H%M%S%z")


def _field(segment: str, n: int) -> str:
    parts = segment.split("|")
    return parts[n] if n < len(parts) else ""


def _fallback_pid(record: dict[str, Any]) -> str:
    """A PID from the stored values, for encounters stored before segments were kept."""
    p = record.get("patient", {})
    ident = escape(p.get("PatientID") or "")
    issuer = escape(p.get("IssuerOfPatientID") or "")
    name = escape(p.get("PatientName") or "").replace("\\S\\", "^")
    return f"PID|1||{ident}^^^{issuer}^MR||{name}||{p.get('PatientBirthDate') or ''}|{p.get('PatientSex') or ''}"


def _fallback_pv1(record: dict[str, Any]) -> str:
    v = record.get("visit", {})
    visit = escape(v.get("AdmissionID") or "")
    issuer = escape(v.get("admission_issuer") or "")
    return f"PV1|1|{escape(v.get('patient_class') or '')}" + "|" * 17 + (f"{visit}^^^{issuer}^VN" if visit else "")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _controls_escaped(segment: str) -> str:
    """A copied segment with its control characters as ``\\Xhh\\`` (as in EBW's ACKs):
    a lone LF or an 0x1C kept from the ADT would break the ORU's segments or its frame."""
    return _CONTROL.sub(lambda m: f"\\X{ord(m[0]):02X}\\", segment)


def build_oru(record: dict[str, Any], exam: dict[str, Any], cfg: EndpointConfig, msh10: str, now: float) -> bytes:
    """The ORU^R01 for ``exam`` of the encounter ``record`` (CR-separated, not framed).

    ``exam``: ``accession`` (the number the exam carried), ``study_uid``,
    ``instances`` (count), ``exam_time`` (epoch seconds or None)."""
    zone = ZoneInfo(cfg.timezone)
    app = escape(cfg.oru_sending_application)
    status = cfg.oru_result_status
    kept = record.get("hl7", {})
    pid = _controls_escaped(kept.get("PID") or _fallback_pid(record))
    pv1 = _controls_escaped(kept.get("PV1") or _fallback_pv1(record))
    attending = _field(pv1, 7).split("~")[0]
    accession = escape(exam.get("accession") or "")
    filler = f"{accession}^{app}" if accession else ""
    exam_time = dtm(exam["exam_time"], zone) if exam.get("exam_time") else ""
    stamp = dtm(now, zone)
    procedure = f"{escape(cfg.procedure_id)}^{escape(cfg.procedure_description)}^L"
    segments = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                app,
                escape(cfg.oru_sending_facility),
                escape(cfg.oru_receiving_application),
                escape(cfg.oru_receiving_facility),
                stamp,
                "",
                "ORU^R01^ORU_R01",
                escape(msh10),
                "P",
                "2.5.1",
            ]
        ),
        pid,
        pv1,
        f"ORC|RE||{filler}||CM|||||||{attending}",
        "|".join(
            [
                "OBR",
                "1",
                "",
                filler,
                procedure,
                "",
                "",
                exam_time,
                *[""] * 8,  # OBR-8 .. OBR-15
                attending,  # OBR-16 ordering provider
                "",
                accession,  # OBR-18 accession number
                app if accession else "",  # OBR-19 its issuer
                "",
                "",
                stamp,  # OBR-22 status change time
                "",
                "RAD",  # OBR-24 diagnostic service section
                status,  # OBR-25 result status
            ]
        ),
        f"OBX|1|ST|{STUDY_UID_CODE}||{escape(exam.get('study_uid') or '')}||||||O",
        f"OBX|2|NM|IMAGES^Images^L||{int(exam.get('instances') or 0)}||||||{status}",
    ]
    if cfg.oru_viewer_url:
        url = cfg.oru_viewer_url.format(study_uid=exam.get("study_uid") or "", accession=exam.get("accession") or "")
        segments.append(f"OBX|3|RP|VIEWER^Image viewer^L||{escape(url)}^{app}^IM^HTML||||||{status}")
    text = "\r".join(segments) + "\r"
    if text.isascii():
        return text.encode("ascii")
    name = "8859/1" if cfg.hl7_charset == "8859/1" else "UNICODE UTF-8"
    try:
        text.encode(CHARSETS[name])
    except UnicodeEncodeError:
        name = "UNICODE UTF-8"
    head, _, rest = text.partition("\r")
    head += "|" * (17 - head.count("|")) + name  # MSH-18 (the field separator is MSH-1)
    return (head + "\r" + rest).encode(CHARSETS[name])


def deliver(host: str, port: int, message: bytes, msh10: str, timeout: float) -> tuple[str, str, str]:
    """Send one ORU and wait for its ACK.  ``(outcome, detail, text)``: outcome is
    ``AA``, ``AE`` or ``AR`` (``CA``/``CE``/``CR`` read as those), or ``timeout`` /
    ``error`` (no usable answer: the caller sends the same message again later); detail
    is EBW's own words or the ACK's error code (kept, shown by the API); text is the
    EHR's own message (ERR-8, MSA-3), which may name the patient: logged at DEBUG only."""
    try:
        with MllpClient(host, port, timeout=timeout) as client:
            ack = client.send(message)
    except TimeoutError:
        return "timeout", f"no ACK from {host}:{port} within {timeout:g} s", ""
    except OSError as exc:  # refused, reset, closed before the ACK
        return "error", f"{host}:{port}: {exc.strerror or exc}", ""
    return read_ack(ack, msh10)


def read_ack(ack: bytes, msh10: str) -> tuple[str, str, str]:
    """(code, detail, text) of an ACK for the message ``msh10`` (see ``deliver``)."""
    sep = ack[3:4] or b"|"
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"MSA"):
            fields = seg.split(sep)
            code = fields[1].decode("latin_1").strip().upper() if len(fields) > 1 else ""
            control = fields[2].decode("latin_1").strip() if len(fields) > 2 else ""
            if control != msh10:
                return "error", f"an ACK for another message (MSA-2 not {msh10!r})", ""
            code = {"CA": "AA", "CE": "AE", "CR": "AR"}.get(code, code)
            if code not in ("AA", "AE", "AR"):
                return "error", f"unknown MSA-1 {code!r}"[:200], ""
            text = fields[3].decode("latin_1", "replace").strip() if len(fields) > 3 else ""
            err_code, err_text = _err(ack, sep)
            return code, err_code, " ".join(x for x in (err_text, text) if x)[:200]
    return "error", "answer without MSA segment", ""


def _err(ack: bytes, sep: bytes) -> tuple[str, str]:
    """ERR-3 (the error code: kept) and ERR-8 (the user message: may name a patient)."""
    for seg in ack.replace(b"\n", b"\r").split(b"\r"):
        if seg.startswith(b"ERR"):
            f = seg.split(sep)
            code = f[3].decode("latin_1", "replace") if len(f) > 3 else ""
            msg = f[8].decode("latin_1", "replace") if len(f) > 8 else ""
            return code[:100], msg
    return "", ""
