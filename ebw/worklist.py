"""Encounter -> worklist item, and accession numbers.

A worklist item is stored flat, keyed by attribute path (``PatientName``,
``ScheduledProcedureStepSequence.Modality`` ...), the same shape the C-FIND
matcher (``ebw.dicom.match``) works on.  What comes from the endpoint's
settings (Requested Procedure ID/Description, Modality) and the scheduled
date/time are filled in when a query is answered, so a settings change
applies at once.

Accession numbers are issued and rotated by ``ebw.accession``.

Scheduled date/time (documented in README, "Scheduled date and time"): an
encounter-based worklist has no schedule, so every active item must be on
*today's* list in the endpoint's timezone.  The reported SPS start is the
time the item's current accession number was issued.  Numbers are rotated
every period and at local midnight (``ebw.accession``); until the rotation
after midnight has run (seconds), an item issued yesterday reports local
midnight today.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any
from zoneinfo import ZoneInfo

from .config import EndpointConfig

SPS = "ScheduledProcedureStepSequence."
# SPS start date + time as one DT value, for combined date-time matching (PS3.4 C.2.2.2.5.4)
START_DATETIME = SPS + "_StartDateTime"

# Other sequences EBW fills: one item, these attributes (paths "<sequence>.<keyword>").
# EBIW: Issuer of Admission ID Sequence is R+ (the visit number's assigning authority).
ISSUER_OF_ADMISSION = "IssuerOfAdmissionIDSequence."
ITEM_SEQUENCES: dict[str, tuple[str, ...]] = {
    "IssuerOfAdmissionIDSequence": ("LocalNamespaceEntityID", "UniversalEntityID", "UniversalEntityIDType"),
}

# Attribute paths of a stored item (besides the ones filled in at query time).
ITEM_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
ITEM_VISIT = (
    "AdmissionID",
    "CurrentPatientLocation",
    "InstitutionName",
    "ReferringPhysicianName",
)

# The VR of every attribute path EBW can match and return.
VRS: dict[str, str] = {
    "PatientName": "PN",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "AdmissionID": "LO",
    "CurrentPatientLocation": "LO",
    "InstitutionName": "LO",
    "InstitutionalDepartmentName": "LO",
    "ReferringPhysicianName": "PN",
    "RequestingPhysician": "PN",
    "AccessionNumber": "SH",
    "StudyInstanceUID": "UI",
    "RequestedProcedureID": "SH",
    "RequestedProcedureDescription": "LO",
    SPS + "Modality": "CS",
    SPS + "ScheduledStationAETitle": "AE",
    SPS + "ScheduledProcedureStepStartDate": "DA",
    SPS + "ScheduledProcedureStepStartTime": "TM",
    SPS + "ScheduledPerformingPhysicianName": "PN",
    SPS + "ScheduledProcedureStepDescription": "LO",
    SPS + "ScheduledProcedureStepID": "SH",
    SPS + "ScheduledProcedureStepLocation": "SH",
    SPS + "ScheduledProcedureStepStatus": "CS",
    START_DATETIME: "DT",
    ISSUER_OF_ADMISSION + "LocalNamespaceEntityID": "LO",  # UT in the dictionary; matched like LO
    ISSUER_OF_ADMISSION + "UniversalEntityID": "LO",
    ISSUER_OF_ADMISSION + "UniversalEntityIDType": "CS",
}


def _dicom_text(value: str | None) -> str:
    """A single DICOM string value: the backslash is DICOM's value separator, and
    control characters are not allowed in PN/LO/SH, so both become spaces."""
    if not value:
        return ""
    if "\\" in value or not value.isprintable():
        value = "".join(" " if (c == "\\" or not c.isprintable()) else c for c in value)
    return value


# Item keys built once: every item then shares these strings instead of holding its own
# copies (about 1 kB an item; a worker keeps every open encounter's item in memory).
_SPS_SCHEDULEDPERFORMINGPHYSICIANNAME = SPS + "ScheduledPerformingPhysicianName"
_SPS_SCHEDULEDPROCEDURESTEPID = SPS + "ScheduledProcedureStepID"
_SPS_SCHEDULEDPROCEDURESTEPLOCATION = SPS + "ScheduledProcedureStepLocation"
_SPS_MODALITY = SPS + "Modality"
_SPS_SCHEDULEDSTATIONAETITLE = SPS + "ScheduledStationAETitle"
_SPS_SCHEDULEDPROCEDURESTEPSTARTDATE = SPS + "ScheduledProcedureStepStartDate"
_SPS_SCHEDULEDPROCEDURESTEPSTARTTIME = SPS + "ScheduledProcedureStepStartTime"
_SPS_SCHEDULEDPROCEDURESTEPDESCRIPTION = SPS + "ScheduledProcedureStepDescription"
_SPS_SCHEDULEDPROCEDURESTEPSTATUS = SPS + "ScheduledProcedureStepStatus"
_ISSUER_LOCAL = ISSUER_OF_ADMISSION + "LocalNamespaceEntityID"


def _pn(value: str | None) -> str:
    """A PN value within its VR's length: 64 characters a component group."""
    text = _dicom_text(value)
    if len(text) <= 64:
        return text
    return "=".join(group[:64] for group in text.split("="))


def make_item(record: dict[str, Any]) -> dict[str, Any]:
    """The worklist item of an open encounter record.  Values longer than their VR
    allows (LO 64 characters, PN 64 a component group) are cut to it: a feed's
    over-long field must not make the item unencodable (Explicit VR lengths)."""
    p = record.get("patient", {})
    v = record.get("visit", {})
    item: dict[str, Any] = {k: _dicom_text(p.get(k))[:64] for k in ITEM_PATIENT}
    item["PatientName"] = _pn(p.get("PatientName"))
    item.update({k: _dicom_text(v.get(k))[:64] for k in ITEM_VISIT})
    item["ReferringPhysicianName"] = _pn(v.get("ReferringPhysicianName"))
    attending = _pn(v.get("ScheduledPerformingPhysicianName"))
    item["RequestingPhysician"] = attending
    item["AccessionNumber"] = record["accession"]
    item["StudyInstanceUID"] = record["study_uid"]
    item[_SPS_SCHEDULEDPERFORMINGPHYSICIANNAME] = attending
    item[_SPS_SCHEDULEDPROCEDURESTEPID] = record["accession"]
    item[_SPS_SCHEDULEDPROCEDURESTEPLOCATION] = _dicom_text(v.get("point_of_care"))[:16]
    # EBIW: the department is the hospital service (PV1-10), else the point of care (PV1-3.1)
    item["InstitutionalDepartmentName"] = _dicom_text(v.get("service") or v.get("point_of_care"))[:64]
    item[_ISSUER_LOCAL] = _dicom_text(v.get("admission_issuer"))[:64] if v.get("AdmissionID") else ""
    item["_ts"] = record["accession_ts"]
    item["_vip"] = (v.get("vip") or "").upper()
    return item


class Renderer:
    """Fills in query-time values of stored items for one endpoint.

    Caches the day boundary so rendering 100,000 items costs one datetime
    conversion per distinct issue time at most.
    """

    def __init__(self, cfg: EndpointConfig, now: float, zone: _dt.tzinfo | None = None) -> None:
        self.cfg = cfg
        self.zone = zone or ZoneInfo(cfg.timezone)
        self.station = "\\".join(cfg.calling_aets) if cfg.station_aet_matching == "strict" else ""
        local_now = _dt.datetime.fromtimestamp(now, self.zone)
        self.today = local_now.strftime("%Y%m%d")
        midnight = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
        self.midnight_ts = midnight.timestamp()
        self.offset = _utc_offset(local_now)

    def render(self, item: dict[str, Any]) -> dict[str, Any]:
        """``item`` (from ``make_item``) with the query-time values filled in, in place."""
        ts = item.get("_ts") or 0.0
        if ts < self.midnight_ts:
            start_date, start_time = self.today, "000000"
        else:
            stamp = _dt.datetime.fromtimestamp(ts, self.zone).strftime("%Y%m%d%H%M%S")
            start_date, start_time = stamp[:8], stamp[8:]
        cfg = self.cfg
        item["RequestedProcedureID"] = cfg.procedure_id
        item["RequestedProcedureDescription"] = cfg.procedure_description
        item[_SPS_MODALITY] = cfg.modality
        item[_SPS_SCHEDULEDSTATIONAETITLE] = self.station
        item[_SPS_SCHEDULEDPROCEDURESTEPSTARTDATE] = start_date
        item[_SPS_SCHEDULEDPROCEDURESTEPSTARTTIME] = start_time
        item[START_DATETIME] = start_date + start_time
        item[_SPS_SCHEDULEDPROCEDURESTEPDESCRIPTION] = cfg.procedure_description
        item[_SPS_SCHEDULEDPROCEDURESTEPSTATUS] = "SCHEDULED"
        return item


def _utc_offset(local: _dt.datetime) -> str:
    off = local.utcoffset() or _dt.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
