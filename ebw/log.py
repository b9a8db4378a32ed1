"""Logging setup.  Only this module adds handlers.

EBW never logs patient data at any level: names, identifiers, birth dates,
visit numbers, raw segments and DICOM identifiers stay out of log records.
Log MSH-10, trigger events, endpoints, peers, AE titles, counts, statuses and
durations instead.  pynetdicom's identifier logging is switched off in
``ebw.dicom.scp``.
"""

from __future__ import annotations

import json
import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``pid``, ``logger``, ``msg`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "INFO", fmt: str | None = None) -> None:
    """Log to stderr (never to files under the data directory), as text or, with
    ``EBW_LOG_FORMAT=json``, one JSON object per line."""
    fmt = fmt or os.environ.get("EBW_LOG_FORMAT", "text").strip().lower()
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom is chatty at INFO (one line per association and per DIMSE message).
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if os.environ.get("EBW_DICOM_DEBUG") == "1" else logging.WARNING
    )


# HL7 v2 segment IDs a message's shape may name.  Any other line start -- a Z-segment,
# or the text after a line break inside a field, which can be a surname -- is "???".
SEGMENT_IDS = frozenset(
    "ABS ACC ADD AFF AIG AIL AIP AIS AL1 APR ARQ ARV AUT BHS BLC BLG BPO BPX BTS BTX CDM CER "
    "CM0 CM1 CM2 CNS CON CSP CSR CSS CTD CTI DB1 DG1 DRG DSC DSP ECD ECR EDU EQP EQU ERR EVN "
    "FAC FHS FT1 FTS GOL GP1 GP2 GT1 IAM IIM IN1 IN2 IN3 INV IPC ISD LAN LCC LCH LDP LOC LRL "
    "MFA MFE MFI MRG MSA MSH NCK NDS NK1 NPU NSC NST NTE OBR OBX ODS ODT OM1 OM2 OM3 OM4 OM5 "
    "OM6 OM7 ORC ORG OVR PCR PD1 PDA PDC PEO PES PID PR1 PRA PRB PRC PRD PSH PTH PV1 PV2 QAK "
    "QID QPD QRD QRF QRI RCP RDF RDT RF1 RGS RMI ROL RQ1 RQD RXA RXC RXD RXE RXG RXO RXR SAC "
    "SCH SFT SID SPM SPR STF TCC TCD TQ1 TQ2 TXA UAC UB1 UB2 URD URS VAR VTQ".split()
)


def shape(data: bytes, max_segments: int = 40) -> str:
    """A PHI-free description of an HL7 message: segment IDs (known ones only, else
    ``???``) and lengths."""
    parts = []
    for seg in data.replace(b"\n", b"\r").split(b"\r")[:max_segments]:
        if seg:
            sid = seg[:3].decode("latin_1")
            parts.append(f"{sid if sid in SEGMENT_IDS else '???'}:{len(seg)}")
    return " ".join(parts) or "(empty)"
