"""Hardening that can be checked from outside: file modes, log format, no patient data in
the logs of a whole exam cycle, throttled failed sign-ins."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from tests.conftest import PHI_SENTINEL, corpus, msa
from tests.integration.test_exam_loop import Ehr, modality_exam
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def test_data_files_are_private(server):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    for root, dirs, files in os.walk(server.data_dir):
        for d in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
            assert mode & 0o077 == 0, (d, oct(mode))
        for f in files:
            mode = stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode)
            assert mode & 0o077 == 0, (f, oct(mode))


def test_json_logs_and_no_patient_data_in_a_whole_exam_cycle(server_factory):
    """ADT, C-FIND, MPPS, C-STORE, ORU (answered AE with the name in its text, then AA):
    the DEBUG log of all of it names no patient, and every line is JSON."""
    ehr = Ehr(answers=["AE"])
    try:
        server = server_factory(
            EBW_LOG_FORMAT="json", EBW_LOG_LEVEL="INFO", EBW_EHR_HOST="127.0.0.1", EBW_EHR_PORT=str(ehr.port)
        ).start()
        msg = corpus("001_a04_register.hl7").replace(b"DOE^JANE", PHI_SENTINEL.encode() + b"^JANE")
        assert msa(server.send(msg))[0] == "AA"
        (item,) = cfind(server, mwl_query(PatientName=PHI_SENTINEL + "*"))
        modality_exam(server, item, images=1)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(ehr.messages) < 2:
            time.sleep(0.2)
        assert len(ehr.messages) == 2
    finally:
        ehr.close()
    log = server.read_log()
    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and {"ts", "level", "pid", "logger", "msg"} <= set(records[0])
    assert any("ORU MSH-10" in r["msg"] for r in records)
    for secret in (PHI_SENTINEL, "555123", "19800101", "V999", "JANE"):
        assert secret not in log


def test_failed_sign_ins_are_throttled(server):
    codes = [server.api("GET", "/api/endpoints", token=f"wrong-{i}")[0] for i in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    assert server.api("GET", "/api/endpoints")[0] == 429  # from this address, for a while, even with a good token
