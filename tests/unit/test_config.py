"""Every configuration rule: a bad value names the variable, the value and the rule."""

from __future__ import annotations

import pytest

from ebw import config
from ebw.errors import ConfigError


def test_defaults():
    cfg = config.load({})
    assert cfg.data_dir == "./ebw-data"
    assert cfg.http_host == "127.0.0.1" and cfg.http_port == 8080
    assert cfg.fsync is True
    assert cfg.workers >= 1
    e = cfg.endpoint
    assert (e.name, e.hl7_host, e.hl7_port, e.dicom_host, e.dicom_port) == (
        "Default",
        "0.0.0.0",
        2575,
        "0.0.0.0",
        11112,
    )
    assert (e.scp_aet, e.procedure_id, e.procedure_description) == ("EBW", "POCUS", "Point of care ultrasound")
    assert (e.timezone, e.modality) == ("UTC", "US")
    assert (e.accession_prefix, e.accession_digits, e.accession_period_minutes) == ("EB", 12, 5)
    assert e.pacs_push_delay_seconds == 0
    assert e.ehr_host is None and e.ehr_port is None
    assert e.pacs_aet is None and e.pacs_host is None and e.pacs_port is None


def test_values_are_read():
    cfg = config.load(
        {
            "EBW_NAME": "ED North",
            "EBW_HL7_PORT": "3000",
            "EBW_DICOM_PORT": "4000",
            "EBW_SCP_AET": "EDNORTH",
            "EBW_TIMEZONE": "America/Chicago",
            "EBW_ACCESSION_PREFIX": "abcd",
            "EBW_ACCESSION_DIGITS": "12",
            "EBW_ACCESSION_PERIOD_MINUTES": "1",
            "EBW_EHR_HOST": "ehr.local",
            "EBW_EHR_PORT": "6661",
            "EBW_WORKERS": "3",
            "EBW_FSYNC": "off",
        }
    )
    e = cfg.endpoint
    assert (e.name, e.hl7_port, e.dicom_port, e.scp_aet, e.timezone) == (
        "ED North",
        3000,
        4000,
        "EDNORTH",
        "America/Chicago",
    )
    assert e.accession_prefix == "ABCD" and e.accession_period_minutes == 1
    assert (e.ehr_host, e.ehr_port) == ("ehr.local", 6661)
    assert cfg.workers == 3 and cfg.fsync is False


BAD = [
    ("EBW_ACCESSION_PREFIX", "E", "2-4 letters"),
    ("EBW_ACCESSION_PREFIX", "EBWXY", "2-4 letters"),
    ("EBW_ACCESSION_PREFIX", "E1", "2-4 letters"),
    ("EBW_ACCESSION_PREFIX", "", "2-4 letters"),
    ("EBW_ACCESSION_DIGITS", "11", "at least 12"),
    ("EBW_ACCESSION_DIGITS", "twelve", "at least 12"),
    ("EBW_ACCESSION_DIGITS", "15", "may not exceed 16"),
    ("EBW_ACCESSION_PERIOD_MINUTES", "0", "from 1 to 1440"),
    ("EBW_ACCESSION_PERIOD_MINUTES", "1441", "from 1 to 1440"),
    ("EBW_ACCESSION_PERIOD_MINUTES", "5m", "from 1 to 1440"),
    ("EBW_HL7_PORT", "0", "from 1 to 65535"),
    ("EBW_HL7_PORT", "65536", "from 1 to 65535"),
    ("EBW_DICOM_PORT", "-1", "from 1 to 65535"),
    ("EBW_HTTP_PORT", "http", "from 1 to 65535"),
    ("EBW_EHR_PORT", "70000", "from 1 to 65535"),
    ("EBW_PACS_PORT", "0", "from 1 to 65535"),
    ("EBW_SCP_AET", "", "1-16 characters"),
    ("EBW_SCP_AET", "    ", "not all spaces"),
    ("EBW_SCP_AET", "A" * 17, "1-16 characters"),
    ("EBW_SCP_AET", "EB\\W", "no backslash"),
    ("EBW_SCP_AET", "EB\x01W", "control characters"),
    ("EBW_PACS_AET", "BAD\\AET", "no backslash"),
    ("EBW_TIMEZONE", "Mars/Olympus", "IANA timezone"),
    ("EBW_TIMEZONE", "", "IANA timezone"),
    ("EBW_TIMEZONE", "../../etc/passwd", "IANA timezone"),
    ("EBW_TIMEZONE", "localtime", "IANA timezone"),
    ("EBW_TIMEZONE", "posix/Europe/Paris", "IANA timezone"),
    ("EBW_WORKERS", "0", "from 1 to 64"),
    ("EBW_FSYNC", "maybe", "'on' or 'off'"),
    ("EBW_HL7_CHARSET", "KLINGON", "table 0211"),
    ("EBW_PATIENT_ID_TYPE", "M-R", "identifier type code"),
    ("EBW_VISIT_NUMBER", "PV1-50", "PV1-19 and/or PID-18"),
    ("EBW_VISIT_NUMBER", "", "PV1-19 and/or PID-18"),
    ("EBW_LOCATION_COMPONENTS", "0", "component numbers 1-11"),
    ("EBW_LOCATION_COMPONENTS", "a,b", "component numbers 1-11"),
    ("EBW_LOCATION_SEPARATOR", "\\", "without backslash"),
    ("EBW_CURATION", "{bad json", "JSON object"),
    ("EBW_CURATION", '{"include": {"colour": ["red"]}}', "unknown field 'colour'"),
    ("EBW_CURATION", '{"max_age_hours": {"E": -1}}', "positive number of hours"),
    ("EBW_CURATION", '{"pending": "yes"}', "true or false"),
    ("EBW_JOURNAL_RETENTION_DAYS", "0", "from 1 to 3650"),
    ("EBW_MODALITY", "U-S", "DICOM code string"),
    ("EBW_MODALITY", "ÉCHO", "DICOM code string"),
    ("EBW_MODALITY", "U" * 17, "at most 16"),
    ("EBW_MODALITY", " ", "must not be empty"),
]


def test_a_bad_admin_token_is_named_but_never_shown():
    """Configuration errors go to stderr and the journal: a credential's value stays out."""
    for value in ("MySecretToken12", "abcdefghijklmnopqrstuvwx_secret_with space"):
        with pytest.raises(ConfigError) as ei:
            config.load({"EBW_ADMIN_TOKEN": value})
        assert str(ei.value).startswith("EBW_ADMIN_TOKEN='***': ") and "ecret" not in str(ei.value)


def test_modality_is_a_code_string_upper_cased():
    """Items carry it and modalities match it case-sensitively: ``us`` would have emptied
    the worklist of every modality asking for ``US``."""
    assert config.load({"EBW_MODALITY": "us"}).endpoint.modality == "US"
    assert config.load({"EBW_MODALITY": "US_2 X"}).endpoint.modality == "US_2 X"


@pytest.mark.parametrize("var,value,rule", BAD)
def test_bad_value_names_variable_value_and_rule(var, value, rule):
    with pytest.raises(ConfigError) as ei:
        config.load({var: value})
    msg = str(ei.value)
    assert ei.value.variable == var
    assert msg.startswith(f"{var}={value!r}: ")
    assert rule in msg
    assert "\n" not in msg


def test_prefix_plus_digits_at_most_16():
    config.load({"EBW_ACCESSION_PREFIX": "EB", "EBW_ACCESSION_DIGITS": "14"})
    config.load({"EBW_ACCESSION_PREFIX": "ABCD", "EBW_ACCESSION_DIGITS": "12"})
    with pytest.raises(ConfigError) as ei:
        config.load({"EBW_ACCESSION_PREFIX": "ABC", "EBW_ACCESSION_DIGITS": "14"})
    assert ei.value.variable == "EBW_ACCESSION_DIGITS"
    assert "exceed 16" in str(ei.value)


def test_ports_must_differ():
    with pytest.raises(ConfigError) as ei:
        config.load({"EBW_HL7_PORT": "11112"})
    assert ei.value.variable == "EBW_DICOM_PORT"


def test_ehr_host_and_port_go_together():
    with pytest.raises(ConfigError) as ei:
        config.load({"EBW_EHR_HOST": "ehr.local"})
    assert ei.value.variable == "EBW_EHR_PORT"


def test_ae_title_edges():
    assert config.load({"EBW_SCP_AET": "A"}).endpoint.scp_aet == "A"
    assert config.load({"EBW_SCP_AET": "A" * 16}).endpoint.scp_aet == "A" * 16
    assert config.load({"EBW_SCP_AET": " EBW "}).endpoint.scp_aet == "EBW"


def test_describe_lists_every_variable():
    text = config.describe()
    for s in config.SETTINGS:
        assert s.env in text


def test_example_environment_file_lists_every_variable():
    from tests.conftest import ROOT

    text = (ROOT / "deploy" / "systemd" / "ebw.env").read_text()
    assert text == config.env_file(), "regenerate with: ebw config --env-file > deploy/systemd/ebw.env"
    for s in config.SETTINGS:
        assert f"#{s.env}=" in text


@pytest.mark.parametrize(
    "value,rule",
    [
        ("[1]", "JSON object"),
        ('{"US1": ["nope"]}', "unknown profile 'nope'"),
        ('{"US1": ["charset:KOI8"]}', "character sets are"),
        ('{"US1": "date-only"}', "list of profile names"),
    ],
)
def test_quirk_profiles_are_checked(value, rule):
    with pytest.raises(ConfigError) as ei:
        config.load({"EBW_QUIRKS": value})
    assert ei.value.variable == "EBW_QUIRKS" and rule in str(ei.value)
