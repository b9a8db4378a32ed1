"""The journal, `ebw replay` and `ebw explain` against a real data dir."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import corpus, msa
from tests.integration.test_lifecycle import load
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def ebw(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebw", *args], env=server.env, capture_output=True, text=True, timeout=120
    )


def test_replay_rebuilds_the_same_worklist_and_keeps_accessions(server_factory, tmp_path):
    s = server_factory(tmp_path / "d").start()
    for name in (
        "010_a04_register",
        "012_a02_transfer",
        "050_a04_person_visit1",
        "060_a04_old_mrn",
        "061_a40_merge_patient",
        "080_a04_to_delete",
        "081_a23_delete_visit",
        "083_orm_not_adt",
    ):
        s.send(load(name))
    before = sorted((i.PatientID, i.AccessionNumber, i.CurrentPatientLocation) for i in cfind(s, mwl_query()))
    assert len(before) == 3
    assert ebw(s, "replay").returncode == 1  # refused while the server runs
    s.stop()

    dry = ebw(s, "replay", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and "7 messages replayed, 1 skipped" in dry.stdout and "3 active" in dry.stdout
    out = ebw(s, "replay")
    assert out.returncode == 0, out.stderr
    assert "7 messages replayed" in out.stdout and "3 active" in out.stdout and "new 0" in out.stdout

    s2 = server_factory(tmp_path / "d").start()
    after = sorted((i.PatientID, i.AccessionNumber, i.CurrentPatientLocation) for i in cfind(s2, mwl_query()))
    assert after == before
    # the counter went on: a new encounter gets a number never issued before
    assert msa(s2.send(corpus("001_a04_register.hl7")))[0] == "AA"
    numbers = [i.AccessionNumber for i in cfind(s2, mwl_query())]
    assert len(numbers) == len(set(numbers)) == 4


def test_explain_gives_the_reasons(server_factory, tmp_path):
    s = server_factory(tmp_path / "d", EBW_CURATION='{"include": {"patient_class": ["E"]}}').start()
    s.send(load("010_a04_register"))
    s.send(load("023_a01_admit_v23"))
    on = ebw(s, "explain", "--patient", "L1")
    assert on.returncode == 0 and "ON the worklist" in on.stdout and "patient_class E is in include" in on.stdout
    off = ebw(s, "explain", "--visit", "PV2A")
    assert "NOT on the worklist" in off.stdout and "patient_class I is not in include.patient_class" in off.stdout
    assert ebw(s, "explain", "--patient", "NOBODY").returncode == 1


def test_dry_run_of_candidate_rules(server_factory, tmp_path):
    s = server_factory(tmp_path / "d").start()
    for name in ("010_a04_register", "023_a01_admit_v23", "050_a04_person_visit1"):
        assert msa(s.send(load(name)))[0] == "AA"
    s.stop()
    out = ebw(s, "dry-run", '{"include": {"patient_class": ["I"]}}', "--step-minutes", "0.001")
    assert out.returncode == 0, out.stderr
    assert "replayed 3 messages" in out.stdout
    assert "2 encounters would enter the list, 0 would leave it" not in out.stdout
    assert "0 encounters would enter the list, 2 would leave it" in out.stdout
    assert "  - V|GENHOSP|LV1" in out.stdout
    bad = ebw(s, "dry-run", '{"include": {"nope": []}}')
    assert bad.returncode == 2 and "unknown field" in bad.stderr
