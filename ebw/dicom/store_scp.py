"""Studies in: the Storage SCP (C-STORE) and the MPPS SCP (N-CREATE / N-SET) of an endpoint.

C-STORE: the instance is written as a DICOM Part-10 file (the bytes as
received, with file meta) to ``$EBW_DATA_DIR/studies/<endpoint>/<Study
Instance UID>/<SOP Instance UID>.dcm`` -- a temporary file, synced (with
``EBW_FSYNC=on``), then renamed -- and recorded in LMDB (``ebw.exams``) in a
synced commit; only then is Success returned.  A missing or malformed Study
or SOP Instance UID is refused with 0xC000 (cannot understand), a write or
commit failure with 0xA700 (out of resources): the modality keeps the image
and sends it again.

MPPS: N-CREATE must be IN PROGRESS (else 0x0106); it ties the step's
studies (Scheduled Step Attributes Sequence: Study Instance UID, Accession
Number) to their encounters and uses the accession numbers (the encounter gets
a fresh one).  N-SET is accepted while the step is IN PROGRESS (else 0x0110);
COMPLETED or DISCONTINUED completes its exams.  Unknown instance: 0x0112;
duplicate N-CREATE: 0x0111.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from .. import exams, metrics
from ..config import EndpointConfig
from ..store import Store

log = logging.getLogger(__name__)

# What point-of-care devices send: ultrasound (single and multi-frame), secondary
# capture, encapsulated PDF, structured reports.
STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "UltrasoundImageStorage",
    "1.2.840.10008.5.1.4.1.1.3.1": "UltrasoundMultiFrameImageStorage",
    "1.2.840.10008.5.1.4.1.1.7": "SecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.2": "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.4": "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.104.1": "EncapsulatedPDFStorage",
    "1.2.840.10008.5.1.4.1.1.88.11": "BasicTextSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.22": "EnhancedSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.33": "ComprehensiveSRStorage",
}
# Uncompressed, deflated and the usual compressed ultrasound syntaxes.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
]

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_INVALID_VALUE = 0x0106
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_DUPLICATE = 0x0111
STATUS_NO_SUCH_INSTANCE = 0x0112


def add_contexts(ae: Any) -> None:
    for uid in STORAGE_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    ae.add_supported_context(ModalityPerformedProcedureStep)


def study_dir(data_dir: str, ep: str, study_uid: str) -> str:
    return os.path.join(data_dir, "studies", ep, study_uid)


def dicom_time(date: str, tm: str, offset: str, zone: _dt.tzinfo) -> float | None:
    """Epoch seconds of a DICOM DA + TM (in ``offset`` (+HHMM) if valid, else ``zone``)."""
    date = (date or "").strip()
    tm = (tm or "").strip().replace(":", "")
    if len(date) != 8 or not date.isdigit():
        return None
    digits = (tm.split(".")[0] + "000000")[:6] if tm[:2].isdigit() else "000000"
    try:
        local = _dt.datetime.strptime(date + digits, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        delta = _dt.timedelta(minutes=minutes if offset[0] == "+" else -minutes)
        return float(calendar.timegm(local.timetuple())) - delta.total_seconds()
    return local.replace(tzinfo=zone).timestamp()


class ReserveReached(Exception):
    """A study would eat into the disk space kept for the encounter index."""


class StudyIn:
    """The C-STORE and MPPS handlers of one endpoint (in a worker process)."""

    def __init__(
        self,
        store: Store,
        ep: str,
        get_cfg: Callable[[], EndpointConfig],
        data_dir: str,
        fsync: bool,
        reserve_mb: int = 0,
    ) -> None:
        self.store = store
        self.ep = ep
        self.get_cfg = get_cfg
        self.data_dir = data_dir
        self.fsync = fsync
        self.reserve = reserve_mb * 1024 * 1024  # bytes kept free for the encounter index

    def _room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes leave the reserve free on the data filesystem."""
        st = os.statvfs(self.data_dir)
        return st.f_bavail * st.f_frsize - size >= self.reserve

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_N_CREATE, self.on_n_create),
            (evt.EVT_N_SET, self.on_n_set),
        ]

    # -- C-STORE -------------------------------------------------------------------

    def on_store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            ds = event.dataset
            study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
            sop_uid = str(ds.get("SOPInstanceUID", "") or event.request.AffectedSOPInstanceUID or "").strip()
            if not exams.valid_uid(study_uid) or not exams.valid_uid(sop_uid):
                log.info("%s: C-STORE from %s refused: no valid Study/SOP Instance UID", self.ep, calling)
                metrics.studies_received.labels(self.ep, "C000").inc()
                return STATUS_CANNOT_UNDERSTAND
            cfg = self.get_cfg()
            zone = ZoneInfo(cfg.timezone)
            exam_time = dicom_time(
                str(ds.get("StudyDate", "") or ""),
                str(ds.get("StudyTime", "") or ""),
                str(ds.get("TimezoneOffsetFromUTC", "") or ""),
                zone,
            )
            accession_number = str(ds.get("AccessionNumber", "") or "").strip()
            sop_class = str(event.request.AffectedSOPClassUID or "")
            path = self._write(event, study_uid, sop_uid)
        except ReserveReached as exc:
            log.error("%s: C-STORE from %s refused: %s", self.ep, calling, exc)
            metrics.studies_received.labels(self.ep, "A700").inc()
            return STATUS_OUT_OF_RESOURCES
        except (OSError, ValueError, AttributeError, KeyError) as exc:
            log.error("%s: C-STORE from %s not stored: %s", self.ep, calling, type(exc).__name__)
            metrics.studies_received.labels(self.ep, "A700").inc()
            return STATUS_OUT_OF_RESOURCES
        info = {
            "file": os.path.relpath(path, self.data_dir),
            "sop_class": sop_class,
            "ts": str(event.context.transfer_syntax),
            "at": time.time(),
        }
        try:
            with self.store.write() as txn:
                exam, orphan = exams.instance_stored(
                    self.store,
                    txn,
                    {self.ep: cfg},
                    self.ep,
                    study_uid,
                    sop_uid,
                    info,
                    accession_number,
                    exam_time,
                    time.time(),
                )
        except Exception as exc:  # noqa: BLE001 - answered with a failure status; the file is rewritten on resend
            log.exception("%s: C-STORE from %s: recording failed (%s)", self.ep, calling, type(exc).__name__)
            metrics.studies_received.labels(self.ep, "A700").inc()
            return STATUS_OUT_OF_RESOURCES
        if orphan:
            metrics.orphan_studies.labels(self.ep).inc()
            log.warning("%s: study from %s matches no encounter: orphan (see /api/exams?orphan=1)", self.ep, calling)
        metrics.studies_received.labels(self.ep, "0000").inc()
        log.debug("%s: instance %d of an exam stored (from %s)", self.ep, exam["instances"], calling)
        return STATUS_SUCCESS

    def _write(self, event: Any, study_uid: str, sop_uid: str) -> str:
        data = event.encoded_dataset()  # preamble + file meta + the dataset bytes as received
        if not self._room_for(len(data)):
            raise ReserveReached(f"storing {len(data)} bytes would leave less than EBW_STUDIES_RESERVE_MB free")
        directory = study_dir(self.data_dir, self.ep, study_uid)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, sop_uid + ".dcm")
        tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.fsync:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return path

    # -- MPPS ------------------------------------------------------------------------

    def on_n_create(self, event: Any) -> tuple[int, Dataset | None]:
        req = event.request
        uid = str(req.AffectedSOPInstanceUID or "")
        ds = event.attribute_list
        status = str(ds.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        if not exams.valid_uid(uid):
            return STATUS_INVALID_VALUE, None
        if status != "IN PROGRESS":
            log.info("%s: MPPS N-CREATE refused: status %r is not IN PROGRESS", self.ep, status)
            return STATUS_INVALID_VALUE, None
        studies = []
        for step in ds.get("ScheduledStepAttributesSequence", []) or []:
            study_uid = str(step.get("StudyInstanceUID", "") or "").strip()
            acc = str(step.get("AccessionNumber", "") or "").strip()
            if exams.valid_uid(study_uid):
                studies.append((study_uid, acc))
        cfg = self.get_cfg()
        start = dicom_time(
            str(ds.get("PerformedProcedureStepStartDate", "") or ""),
            str(ds.get("PerformedProcedureStepStartTime", "") or ""),
            "",
            ZoneInfo(cfg.timezone),
        )
        try:
            with self.store.write() as txn:
                if exams.get_mpps(self.store, txn, uid) is not None:
                    return STATUS_DUPLICATE, None
                exams.mpps_started(self.store, txn, {self.ep: cfg}, self.ep, uid, studies, start, time.time())
        except Exception as exc:  # noqa: BLE001
            log.exception("%s: MPPS N-CREATE failed (%s)", self.ep, type(exc).__name__)
            return STATUS_PROCESSING_FAILURE, None
        log.info("%s: MPPS started (%d studies) by %s", self.ep, len(studies), event.assoc.requestor.ae_title)
        return STATUS_SUCCESS, ds

    def on_n_set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID or "")
        mods = event.modification_list
        new_status = str(mods.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        if new_status and new_status not in ("IN PROGRESS", "COMPLETED", "DISCONTINUED"):
            return STATUS_INVALID_VALUE, None
        cfg = self.get_cfg()
        try:
            with self.store.write() as txn:
                mpps = exams.get_mpps(self.store, txn, uid)
                if mpps is None or mpps.get("ep") != self.ep:
                    return STATUS_NO_SUCH_INSTANCE, None
                if mpps["status"] != "IN PROGRESS":
                    return STATUS_PROCESSING_FAILURE, None
                if new_status in ("COMPLETED", "DISCONTINUED"):
                    exams.mpps_ended(self.store, txn, cfg, uid, mpps, new_status, time.time())
        except Exception as exc:  # noqa: BLE001
            log.exception("%s: MPPS N-SET failed (%s)", self.ep, type(exc).__name__)
            return STATUS_PROCESSING_FAILURE, None
        if new_status in ("COMPLETED", "DISCONTINUED"):
            log.info("%s: MPPS %s by %s", self.ep, new_status, event.assoc.requestor.ae_title)
        return STATUS_SUCCESS, mods
