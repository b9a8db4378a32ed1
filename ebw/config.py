"""Every setting EBW reads, declared once: environment name, default, parser, rule, help.

Configuration comes from ``EBW_*`` environment variables.  ``load()`` checks
every rule before anything listens and raises :class:`~ebw.errors.ConfigError`
naming the variable, the value and the rule; ``ebw serve`` prints that one line
and exits non-zero.

Global settings apply to the process; the ``endpoint`` settings describe the
*default endpoint*, created at first start and updated from these variables at
every start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

# ---------------------------------------------------------------------------
# parsers / rules: each takes the raw string and returns the value or raises
# ValueError with the rule as its message.


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"must be an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}")
        return value

    parse.rule = f"an integer from {lo} to {hi}"  # type: ignore[attr-defined]
    return parse


def _port(raw: str) -> int:
    return _int_range(1, 65535)(raw)


def _optional_port(raw: str) -> int | None:
    return None if raw.strip() == "" else _port(raw)


def _text(max_len: int = 64) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        if not value:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        if any(ord(c) < 32 or c == "\\" for c in value):
            raise ValueError("must not contain backslashes or control characters")
        return value

    return parse


def code_string(raw: str) -> str:
    """A DICOM CS value (PS3.5 6.2): upper-case letters, digits, space and underscore, at
    most 16 characters.  Lower-case letters are upper-cased (``us`` -> ``US``): the value
    is matched as the modalities send it, case-sensitively."""
    value = raw.strip().upper()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > 16:
        raise ValueError("must be at most 16 characters")
    if not all(c.isascii() and (c.isalnum() or c in " _") for c in value):
        raise ValueError("must be a DICOM code string: letters, digits, space and underscore only")
    return value


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a host name or IP address")
    return value


def _optional_host(raw: str) -> str | None:
    return None if raw.strip() == "" else _host(raw)


def ae_title(raw: str) -> str:
    """AE title rule (PS3.5 AE VR): 1-16 characters, no backslash or control
    characters, not all spaces.  Leading/trailing spaces are not significant."""
    if len(raw) > 16:
        raise ValueError("an AE title is 1-16 characters")
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in raw):
        raise ValueError("an AE title has no backslash or control characters")
    value = raw.strip()
    if not value:
        raise ValueError("an AE title is 1-16 characters, not all spaces")
    if any(ord(c) > 126 for c in value):
        raise ValueError("an AE title uses ASCII characters only")
    return value


def _optional_ae_title(raw: str) -> str | None:
    return None if raw.strip() == "" else ae_title(raw)


_NOT_A_ZONE_NAME = frozenset({"localtime", "posixrules", "Factory"})  # files of the tz database, not zones


def timezone(raw: str) -> str:
    value = raw.strip()
    if not value or value in _NOT_A_ZONE_NAME or value.startswith(("posix/", "right/")):
        # "localtime" is whatever the host is set to: a modality's zone must be named
        raise ValueError("must be a known IANA timezone name, e.g. America/New_York")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be a known IANA timezone name, e.g. America/New_York") from None
    return value


_PREFIX_RE = re.compile(r"[A-Za-z]{2,4}")


def accession_prefix(raw: str) -> str:
    value = raw.strip()
    if not _PREFIX_RE.fullmatch(value):
        raise ValueError("the accession prefix is 2-4 letters (A-Z)")
    return value.upper()


def accession_digits(raw: str) -> int:
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise ValueError("the number of accession digits is an integer of at least 12") from None
    if value < 12:
        raise ValueError("the number of accession digits is at least 12")
    if value > 14:
        raise ValueError("the accession prefix plus digits may not exceed 16 characters")
    return value


def _fsync(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError("must be 'on' or 'off'")


def _workers(raw: str) -> int:
    if raw.strip() == "":
        return os.cpu_count() or 1
    return _int_range(1, 64)(raw)


def _size_mb(raw: str) -> int:
    return _int_range(16, 1024 * 1024)(raw)


def _curation(raw: str) -> str:
    from .curation import parse

    parse(raw)  # raises ValueError naming the rule
    return raw.strip()


def _hl7_charset(raw: str) -> str:
    from .hl7.text import CHARSETS

    value = raw.strip().upper()
    if value not in CHARSETS:
        raise ValueError("must be an HL7 table 0211 name, e.g. UNICODE UTF-8, 8859/1, ASCII")
    return value


def _id_type(raw: str) -> str:
    value = raw.strip().upper()
    if len(value) > 10 or not value.isalnum() and value:
        raise ValueError("must be an HL7 identifier type code (letters/digits, e.g. MR) or empty")
    return value


def _optional_text(raw: str) -> str:
    value = raw.strip()
    if len(value) > 64 or "\\" in value:
        raise ValueError("must be at most 64 characters without backslash")
    return value


def _visit_sources(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip().upper() for p in raw.split(",") if p.strip())
    if not parts or any(p not in ("PV1-19", "PID-18") for p in parts) or len(set(parts)) != len(parts):
        raise ValueError("must list PV1-19 and/or PID-18, comma-separated, in the order to try")
    return parts


def _location_components(raw: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        parts = ()
    if not parts or any(not 1 <= p <= 11 for p in parts):
        raise ValueError("must list PV1-3 (PL) component numbers 1-11, comma-separated, e.g. 1,2,3")
    return parts


def _separator(raw: str) -> str:
    if len(raw) > 3 or "\\" in raw or any(ord(c) < 32 for c in raw):
        raise ValueError("must be at most 3 printable characters without backslash")
    return raw


def _admin_token(raw: str) -> str:
    value = raw.strip()
    if value and (len(value) < 16 or any(c.isspace() for c in value)):
        raise ValueError("must be at least 16 characters without spaces")
    return value


def _optional_file(raw: str) -> str:
    value = raw.strip()
    if value and not os.path.isfile(value):
        raise ValueError("must be a readable file")
    return value


def _hl7_value(raw: str) -> str:
    value = raw.strip()
    if len(value) > 64 or any(c in value for c in "|^~\\&\r\n"):
        raise ValueError("must be at most 64 characters without HL7 delimiters (| ^ ~ \\ &)")
    return value


def _result_status(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("F", "R", "P"):
        raise ValueError("must be one of F, R, P (HL7 table 0123)")
    return value


def _url_template(raw: str) -> str:
    value = raw.strip()
    if value and not value.lower().startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL (with {study_uid} and/or {accession})")
    try:
        value.format(study_uid="1.2.3", accession="EB1")
    except (KeyError, IndexError, ValueError):
        raise ValueError("only {study_uid} and {accession} may appear in braces") from None
    return value


def _choice(*values: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in values:
            raise ValueError("must be one of " + ", ".join(values))
        return value

    return parse


def _ae_list(raw: str) -> tuple[str, ...]:
    return tuple(ae_title(p) for p in raw.split(",") if p.strip())


def _address_list(raw: str) -> tuple[str, ...]:
    import ipaddress

    out = []
    for p in raw.split(","):
        p = p.strip()
        if not p:
            continue
        try:
            out.append(str(ipaddress.ip_network(p, strict=False)))
        except ValueError:
            raise ValueError("must list IP addresses or networks (CIDR), comma-separated") from None
    return tuple(out)


def _value_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip().upper() for p in raw.split(",") if p.strip())


def _processing_ids(raw: str) -> tuple[str, ...]:
    """HL7 table 0103 processing IDs: P production, T training, D debugging."""
    values = tuple(p.strip().upper() for p in raw.split(",") if p.strip())
    if not values or any(v not in ("P", "T", "D") for v in values):
        raise ValueError("must be a comma-separated list of P, T, D (HL7 table 0103)")
    return values


def _quirks(raw: str) -> str:
    from .dicom.quirks import parse

    parse(raw)  # raises ValueError naming the rule
    return raw.strip()


def _log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return value


# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    default: str
    parse: Callable[[str], Any]
    help: str
    scope: str = "global"  # "global" or "endpoint"


SETTINGS: tuple[Setting, ...] = (
    # -- global
    Setting(
        "EBW_ENV_FILE",
        "env_file",
        "",
        str,
        "A file of EBW_* settings (KEY=VALUE lines, # comments) read at start and again on SIGHUP; "
        "its values override the environment.",
    ),
    Setting("EBW_DATA_DIR", "data_dir", "./ebw-data", str, "Directory for the LMDB store and runtime files."),
    Setting("EBW_WORKERS", "workers", "", _workers, "Worker processes (default: CPU count)."),
    Setting("EBW_HTTP_HOST", "http_host", "127.0.0.1", _host, "Address of the HTTP listener (/healthz, /metrics)."),
    Setting("EBW_HTTP_PORT", "http_port", "8080", _port, "Port of the HTTP listener."),
    Setting(
        "EBW_FSYNC",
        "fsync",
        "on",
        _fsync,
        "'on': ACK only after the change is on stable storage (fdatasync). "
        "'off': ACK once the change survives a process crash (not a power cut).",
    ),
    Setting(
        "EBW_LMDB_MAP_SIZE_MB",
        "lmdb_map_size_mb",
        "4096",
        _size_mb,
        "Maximum size of the LMDB store in MiB (the file grows sparsely up to it).",
    ),
    Setting(
        "EBW_MLLP_MAX_FRAME_BYTES",
        "mllp_max_frame_bytes",
        "1048576",
        _int_range(1024, 64 * 1024 * 1024),
        "Largest MLLP frame accepted; a bigger one gets AR and the connection is closed.",
    ),
    Setting(
        "EBW_MLLP_IDLE_TIMEOUT_SECONDS",
        "mllp_idle_timeout",
        "600",
        _int_range(1, 86400),
        "An MLLP connection with no traffic for this long is closed.",
    ),
    Setting(
        "EBW_MLLP_FRAME_TIMEOUT_SECONDS",
        "mllp_frame_timeout",
        "60",
        _int_range(1, 3600),
        "A started MLLP frame must be complete within this long, else the connection is closed (slow senders).",
    ),
    Setting(
        "EBW_MLLP_MAX_CONNECTIONS",
        "mllp_max_connections",
        "1000",
        _int_range(1, 100000),
        "Open MLLP connections per endpoint and worker process; more are closed at once.",
    ),
    Setting(
        "EBW_MLLP_MAX_CONNECTIONS_PER_ADDRESS",
        "mllp_max_connections_per_address",
        "100",
        _int_range(1, 100000),
        "Open MLLP connections from one source address per endpoint and worker process.",
    ),
    Setting(
        "EBW_DICOM_MAX_ASSOCIATIONS",
        "dicom_max_associations",
        "64",
        _int_range(1, 1000),
        "Concurrent DICOM associations per endpoint and worker process; more are rejected (A-ASSOCIATE-RJ).",
    ),
    Setting(
        "EBW_DICOM_MAX_PDU",
        "dicom_max_pdu",
        "262144",
        _int_range(4096, 16 * 1024 * 1024),
        "Largest P-DATA PDU EBW accepts from a peer (bytes).",
    ),
    Setting(
        "EBW_STUDIES_RESERVE_MB",
        "studies_reserve_mb",
        "1024",
        _int_range(0, 10_000_000),
        "Free space (MiB) kept on the data directory's filesystem for the encounter index: a C-STORE "
        "that would leave less is refused with 0xA700 (Out of Resources; the modality keeps the images), "
        "so studies waiting for an unreachable PACS cannot stop ADT from being stored.",
    ),
    Setting(
        "EBW_JOURNAL_RETENTION_DAYS",
        "journal_retention_days",
        "30",
        _int_range(1, 3650),
        "Days every received message is kept verbatim in the journal (for replay and audit).",
    ),
    Setting("EBW_LOG_LEVEL", "log_level", "INFO", _log_level, "Log level (no patient data is logged at any level)."),
    Setting(
        "EBW_LOG_FORMAT",
        "log_format",
        "text",
        _choice("text", "json"),
        "Log lines on stderr: text, or json (one object per line).",
    ),
    Setting("EBW_HTTP_TLS_CERT", "http_tls_cert", "", _optional_file, "PEM certificate: HTTPS on the HTTP port."),
    Setting("EBW_HTTP_TLS_KEY", "http_tls_key", "", _optional_file, "PEM private key for HTTPS."),
    Setting(
        "EBW_ADMIN_TOKEN",
        "admin_token",
        "",
        _admin_token,
        "Bearer token of the first API administrator (at least 16 characters). Unset: one is generated at "
        "the first start and printed once.",
    ),
    # -- the default endpoint
    Setting("EBW_NAME", "name", "Default", _text(64), "Display name of the default endpoint.", "endpoint"),
    Setting("EBW_HL7_HOST", "hl7_host", "0.0.0.0", _host, "Address of the MLLP listener.", "endpoint"),
    Setting("EBW_HL7_PORT", "hl7_port", "2575", _port, "Port of the MLLP listener.", "endpoint"),
    Setting("EBW_DICOM_HOST", "dicom_host", "0.0.0.0", _host, "Address of the DICOM listener.", "endpoint"),
    Setting("EBW_DICOM_PORT", "dicom_port", "11112", _port, "Port of the DICOM listener.", "endpoint"),
    Setting(
        "EBW_SCP_AET", "scp_aet", "EBW", ae_title, "AE title of the worklist SCP (the called AE title).", "endpoint"
    ),
    Setting(
        "EBW_PROCEDURE_ID",
        "procedure_id",
        "POCUS",
        _text(16),
        "RequestedProcedureID of every item; OBR-4.1 of ORUs.",
        "endpoint",
    ),
    Setting(
        "EBW_PROCEDURE_DESCRIPTION",
        "procedure_description",
        "Point of care ultrasound",
        _text(64),
        "RequestedProcedureDescription of every item; OBR-4.2 of ORUs.",
        "endpoint",
    ),
    Setting(
        "EBW_TIMEZONE",
        "timezone",
        "UTC",
        timezone,
        "IANA timezone of the modalities: item dates/times are given and queries read in it.",
        "endpoint",
    ),
    Setting(
        "EBW_MODALITY",
        "modality",
        "US",
        code_string,
        "Modality of the scheduled procedure step (a DICOM code string, e.g. US; upper-cased).",
        "endpoint",
    ),
    Setting(
        "EBW_ACCESSION_PREFIX",
        "accession_prefix",
        "EB",
        accession_prefix,
        "Accession number prefix: 2-4 letters.",
        "endpoint",
    ),
    Setting(
        "EBW_ACCESSION_DIGITS",
        "accession_digits",
        "12",
        accession_digits,
        "Digits after the prefix: at least 12; prefix + digits at most 16.",
        "endpoint",
    ),
    Setting(
        "EBW_ACCESSION_PERIOD_MINUTES",
        "accession_period_minutes",
        "5",
        _int_range(1, 1440),
        "Minutes before an encounter gets a new accession number (1-1440).",
        "endpoint",
    ),
    Setting(
        "EBW_PACS_PUSH_DELAY_SECONDS",
        "pacs_push_delay_seconds",
        "0",
        _int_range(0, 7 * 86400),
        "Delay between the ORU to the EHR and the push of the study to PACS.",
        "endpoint",
    ),
    Setting(
        "EBW_HL7_CHARSET",
        "hl7_charset",
        "UNICODE UTF-8",
        _hl7_charset,
        "Character set of messages whose MSH-18 is empty (HL7 table 0211 name).",
        "endpoint",
    ),
    Setting(
        "EBW_PATIENT_ID_TYPE",
        "patient_id_type",
        "MR",
        _id_type,
        "PID-3 repetition used as Patient ID: identifier type code (CX-5); empty: the first.",
        "endpoint",
    ),
    Setting(
        "EBW_PATIENT_ID_AUTHORITY",
        "patient_id_authority",
        "",
        _optional_text,
        "... and assigning authority (CX-4.1 or CX-4.2); empty: any.",
        "endpoint",
    ),
    Setting(
        "EBW_VISIT_NUMBER",
        "visit_number",
        "PV1-19,PID-18",
        _visit_sources,
        "Where the visit number (Admission ID, encounter key) comes from, in order.",
        "endpoint",
    ),
    Setting(
        "EBW_LOCATION_COMPONENTS",
        "location_components",
        "1,2,3",
        _location_components,
        "PV1-3 components shown as CurrentPatientLocation (point of care, room, bed ...).",
        "endpoint",
    ),
    Setting(
        "EBW_LOCATION_SEPARATOR",
        "location_separator",
        "-",
        _separator,
        "Separator between those components (empty components are left out).",
        "endpoint",
    ),
    Setting(
        "EBW_CURATION",
        "curation",
        "",
        _curation,
        "Curation rules (JSON): which open encounters the worklist shows; see README 'Curation'.",
        "endpoint",
    ),
    Setting(
        "EBW_STATION_AET_MATCHING",
        "station_aet_matching",
        "ignore",
        _choice("ignore", "strict"),
        "'ignore': a Scheduled Station AE Title in a query does not exclude items (they are not scheduled "
        "to a station); 'strict': items are scheduled to the EBW_CALLING_AETS stations and matched.",
        "endpoint",
    ),
    Setting(
        "EBW_CALLING_AETS",
        "calling_aets",
        "",
        _ae_list,
        "Calling AE titles allowed to query, comma-separated; empty: any.",
        "endpoint",
    ),
    Setting(
        "EBW_DICOM_ALLOW_FROM",
        "dicom_allow_from",
        "",
        _address_list,
        "Source addresses/networks (CIDR) allowed to connect to the DICOM port; empty: any.",
        "endpoint",
    ),
    Setting(
        "EBW_CFIND_MAX_RESULTS",
        "cfind_max_results",
        "0",
        _int_range(0, 10_000_000),
        "A query matching more items is refused with 0xA700; 0: no limit.",
        "endpoint",
    ),
    Setting(
        "EBW_HL7_PROCESSING_IDS",
        "hl7_processing_ids",
        "P",
        _processing_ids,
        "MSH-11 processing IDs applied (P production, T training, D debugging); others are answered "
        "AR 202 and kept in the journal only, so training and test messages never reach a live worklist. "
        "An empty MSH-11 counts as P.",
        "endpoint",
    ),
    Setting(
        "EBW_VIP_VALUES",
        "vip_values",
        "Y,VIP",
        _value_list,
        "PV1-16 (VIP indicator) values that make an encounter confidential: left out of queries that "
        "do not name the patient.",
        "endpoint",
    ),
    Setting(
        "EBW_BROAD_QUERY_MAX",
        "broad_query_max",
        "0",
        _int_range(0, 10_000_000),
        "A query that does not name a patient matching more items is refused with 0xA700; 0: no limit.",
        "endpoint",
    ),
    Setting(
        "EBW_QUIRKS",
        "quirks",
        "",
        _quirks,
        'Quirk profiles per calling AE title (JSON), e.g. {"OLDUS": ["charset:ISO_IR 100"]}; '
        "see README 'Quirk profiles'.",
        "endpoint",
    ),
    Setting("EBW_EHR_HOST", "ehr_host", "", _optional_host, "Host of the EHR's MLLP listener for ORUs.", "endpoint"),
    Setting("EBW_EHR_PORT", "ehr_port", "", _optional_port, "Port of the EHR's MLLP listener for ORUs.", "endpoint"),
    Setting(
        "EBW_ORU_SENDING_APPLICATION",
        "oru_sending_application",
        "EBW",
        _text(64),
        "MSH-3 of ORUs to the EHR.",
        "endpoint",
    ),
    Setting("EBW_ORU_SENDING_FACILITY", "oru_sending_facility", "", _hl7_value, "MSH-4 of ORUs.", "endpoint"),
    Setting("EBW_ORU_RECEIVING_APPLICATION", "oru_receiving_application", "", _hl7_value, "MSH-5 of ORUs.", "endpoint"),
    Setting("EBW_ORU_RECEIVING_FACILITY", "oru_receiving_facility", "", _hl7_value, "MSH-6 of ORUs.", "endpoint"),
    Setting(
        "EBW_ORU_RESULT_STATUS",
        "oru_result_status",
        "F",
        _result_status,
        "OBR-25 / OBX-11 result status of ORUs (F final, R results stored - not verified, P preliminary).",
        "endpoint",
    ),
    Setting(
        "EBW_ORU_VIEWER_URL",
        "oru_viewer_url",
        "",
        _url_template,
        "Image viewer link sent in an RP OBX, with {study_uid} and {accession} filled in (empty: no link).",
        "endpoint",
    ),
    Setting(
        "EBW_ORU_ACK_TIMEOUT_SECONDS",
        "oru_ack_timeout_seconds",
        "30",
        _int_range(1, 600),
        "Seconds to wait for the EHR's ACK of an ORU before sending it again (same MSH-10).",
        "endpoint",
    ),
    Setting(
        "EBW_ORU_MAX_ATTEMPTS",
        "oru_max_attempts",
        "10",
        _int_range(1, 1000),
        "ORUs answered AE this many times are dead-lettered (AR at once; no answer: retried until answered).",
        "endpoint",
    ),
    Setting(
        "EBW_EXAM_QUIET_SECONDS",
        "exam_quiet_seconds",
        "300",
        _int_range(10, 86400),
        "An exam without a completing MPPS is complete when no image of it arrived for this long.",
        "endpoint",
    ),
    Setting(
        "EBW_HL7_TLS_CERT", "hl7_tls_cert", "", _optional_file, "PEM certificate (chain) for MLLP over TLS.", "endpoint"
    ),
    Setting("EBW_HL7_TLS_KEY", "hl7_tls_key", "", _optional_file, "PEM private key for MLLP over TLS.", "endpoint"),
    Setting("EBW_DICOM_TLS_CERT", "dicom_tls_cert", "", _optional_file, "PEM certificate for DICOM TLS.", "endpoint"),
    Setting("EBW_DICOM_TLS_KEY", "dicom_tls_key", "", _optional_file, "PEM private key for DICOM TLS.", "endpoint"),
    Setting(
        "EBW_TLS_CLIENT_CA",
        "tls_client_ca",
        "",
        _optional_file,
        "PEM CA bundle: MLLP and DICOM over TLS then require client certificates it signed (mutual TLS).",
        "endpoint",
    ),
    Setting("EBW_PACS_AET", "pacs_aet", "", _optional_ae_title, "AE title of the PACS.", "endpoint"),
    Setting("EBW_PACS_HOST", "pacs_host", "", _optional_host, "Host of the PACS.", "endpoint"),
    Setting("EBW_PACS_PORT", "pacs_port", "", _optional_port, "Port of the PACS.", "endpoint"),
)


@dataclass(frozen=True)
class EndpointConfig:
    """One EBW endpoint: an MLLP listener feeding one worklist served on one DICOM port."""

    name: str
    hl7_host: str
    hl7_port: int
    dicom_host: str
    dicom_port: int
    scp_aet: str
    procedure_id: str
    procedure_description: str
    timezone: str
    modality: str
    accession_prefix: str
    accession_digits: int
    accession_period_minutes: int
    pacs_push_delay_seconds: int
    curation: str = ""
    hl7_charset: str = "UNICODE UTF-8"
    patient_id_type: str = "MR"
    patient_id_authority: str = ""
    visit_number: tuple[str, ...] = ("PV1-19", "PID-18")
    location_components: tuple[int, ...] = (1, 2, 3)
    location_separator: str = "-"
    station_aet_matching: str = "ignore"
    calling_aets: tuple[str, ...] = ()
    dicom_allow_from: tuple[str, ...] = ()
    cfind_max_results: int = 0
    vip_values: tuple[str, ...] = ("Y", "VIP")
    hl7_processing_ids: tuple[str, ...] = ("P",)
    broad_query_max: int = 0
    quirks: str = ""
    oru_sending_application: str = "EBW"
    oru_sending_facility: str = ""
    oru_receiving_application: str = ""
    oru_receiving_facility: str = ""
    oru_result_status: str = "F"
    oru_viewer_url: str = ""
    oru_ack_timeout_seconds: int = 30
    oru_max_attempts: int = 10
    exam_quiet_seconds: int = 300
    hl7_tls_cert: str = ""
    hl7_tls_key: str = ""
    dicom_tls_cert: str = ""
    dicom_tls_key: str = ""
    tls_client_ca: str = ""
    ehr_host: str | None = None
    ehr_port: int | None = None
    pacs_aet: str | None = None
    pacs_host: str | None = None
    pacs_port: int | None = None
    id: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EndpointConfig:
        values = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in (
            "visit_number",
            "location_components",
            "calling_aets",
            "dicom_allow_from",
            "vip_values",
            "hl7_processing_ids",
        ):
            if k in values:
                values[k] = tuple(values[k])
        return cls(**values)


@dataclass(frozen=True)
class Config:
    env_file: str
    data_dir: str
    workers: int
    http_host: str
    http_port: int
    fsync: bool
    lmdb_map_size_mb: int
    mllp_max_frame_bytes: int
    mllp_idle_timeout: int
    journal_retention_days: int
    log_level: str
    endpoint: EndpointConfig
    admin_token: str = ""
    log_format: str = "text"
    mllp_frame_timeout: int = 60
    mllp_max_connections: int = 1000
    mllp_max_connections_per_address: int = 100
    dicom_max_associations: int = 64
    dicom_max_pdu: int = 262144
    studies_reserve_mb: int = 1024
    http_tls_cert: str = ""
    http_tls_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def problems(environ: Mapping[str, str] | None = None) -> list[ConfigError]:
    """Every setting that is bad on its own (``ebw check`` lists them all); when there is
    none, the first rule between settings that fails, if any."""
    env = os.environ if environ is None else environ
    if env.get("EBW_ENV_FILE"):
        try:
            env = {**env, **read_env_file(env["EBW_ENV_FILE"])}
        except ConfigError as exc:
            return [exc]
    out = []
    for s in SETTINGS:
        raw = env.get(s.env)
        try:
            s.parse(s.default if raw is None else raw)
        except ValueError as exc:
            out.append(ConfigError(s.env, s.default if raw is None else raw, str(exc)))
    if not out:
        try:
            load(env)
        except ConfigError as exc:
            out.append(exc)
    return out


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Read and check every setting.  Raises ConfigError on the first bad one."""
    env = os.environ if environ is None else environ
    if env.get("EBW_ENV_FILE"):
        env = {**env, **read_env_file(env["EBW_ENV_FILE"])}
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None:
            raw = s.default
        try:
            values[s.attr] = s.parse(raw)
        except ValueError as exc:
            raise ConfigError(s.env, raw, str(exc)) from None

    # Cross-field rules.
    prefix, digits = values["accession_prefix"], values["accession_digits"]
    if len(prefix) + digits > 16:
        raise ConfigError(
            "EBW_ACCESSION_DIGITS",
            env.get("EBW_ACCESSION_DIGITS", str(digits)),
            f"the accession prefix ({len(prefix)} letters) plus digits may not exceed 16 characters",
        )
    ports = [
        ("EBW_HL7_PORT", values["hl7_port"]),
        ("EBW_DICOM_PORT", values["dicom_port"]),
        ("EBW_HTTP_PORT", values["http_port"]),
    ]
    seen: dict[int, str] = {}
    for name, port in ports:
        if port in seen:
            raise ConfigError(name, str(port), f"must differ from {seen[port]}")
        seen[port] = name
    for host_var, port_var, host, port in (
        ("EBW_EHR_HOST", "EBW_EHR_PORT", values["ehr_host"], values["ehr_port"]),
        ("EBW_PACS_HOST", "EBW_PACS_PORT", values["pacs_host"], values["pacs_port"]),
    ):
        if (host is None) != (port is None):
            missing = port_var if port is None else host_var
            raise ConfigError(missing, "", f"must be set together with {host_var if port is None else port_var}")

    from .tls import check_pair

    for cert_var, key_var, cert, key in (
        ("EBW_HL7_TLS_CERT", "EBW_HL7_TLS_KEY", values["hl7_tls_cert"], values["hl7_tls_key"]),
        ("EBW_DICOM_TLS_CERT", "EBW_DICOM_TLS_KEY", values["dicom_tls_cert"], values["dicom_tls_key"]),
        ("EBW_HTTP_TLS_CERT", "EBW_HTTP_TLS_KEY", values["http_tls_cert"], values["http_tls_key"]),
    ):
        if bool(cert) != bool(key):
            missing = key_var if cert else cert_var
            raise ConfigError(missing, "", f"must be set together with {cert_var if cert else key_var}")
        if cert:
            problem = check_pair(cert, key, values["tls_client_ca"] if "HTTP" not in cert_var else "")
            if problem:
                raise ConfigError(cert_var, cert, f"cannot load the certificate, key or client CA: {problem}")

    endpoint_fields = {s.attr for s in SETTINGS if s.scope == "endpoint"}
    endpoint = EndpointConfig(**{k: v for k, v in values.items() if k in endpoint_fields})
    glob = {k: v for k, v in values.items() if k not in endpoint_fields}
    return Config(endpoint=endpoint, **glob)


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines and ``#`` comments ignored; optional ``export``;
    a value may be quoted), as systemd's EnvironmentFile reads them."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError("EBW_ENV_FILE", path, f"cannot read the file: {exc.strerror or exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.replace("_", "").isalnum():
            raise ConfigError("EBW_ENV_FILE", path, f"line {n} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if name != "EBW_ENV_FILE":
            out[name] = value
    return out


def env_file() -> str:
    """An example environment file: every variable, commented out, with its default and rule."""
    lines = [
        "# EBW settings: every variable with its default and rule (`ebw config --env-file`).",
        "# Uncomment and change what you need.",
        "",
    ]
    for s in SETTINGS:
        lines += [f"# {s.help}", f"#{s.env}={s.default}", ""]
    return "\n".join(lines)


def describe() -> str:
    """Every variable with its default and rule, for ``ebw config``."""
    lines = []
    for s in SETTINGS:
        default = s.default if s.default != "" else "(unset)"
        if s.env == "EBW_WORKERS":
            default = "(CPU count)"
        lines.append(f"{s.env}={default}\n    {s.help}")
    return "\n".join(lines)
