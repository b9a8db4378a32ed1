"""Operations commands against real data dirs: ``ebw check``, ``ebw backup`` of a serving
server under write load, ``ebw restore`` (server stopped) and ``ebw stats``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ebw.mllp import MllpClient
from tests.conftest import EbwServer, free_port, msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def adt(event: str, n: int, control_id: str | None = None, patient_class: str = "E") -> bytes:
    """An ADT message for patient ``P<n>`` with visit ``V<n>``."""
    cid = control_id or f"OPS{event}{n:06d}"
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128093000||ADT^{event}^ADT_A01|{cid}|P|2.5.1\r"
        f"EVN|{event}|20261128093000\r"
        f"PID|1||P{n}^^^GENHOSP^MR||OPS^PATIENT{n}||19800101|F\r"
        f"PV1|1|{patient_class}|ED^{n % 40}^A^GENHOSP||||1234^HOUSE^GREGORY|||EM|||||||||V{n}^^^GENHOSP^VN\r"
    ).encode()


def ebw(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebw", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def worklist(server: EbwServer) -> dict[str, tuple[str, str, str, str]]:
    """Patient ID -> (accession, study UID, admission ID, location) of every item."""
    return {
        str(it.PatientID): (
            str(it.AccessionNumber),
            str(it.StudyInstanceUID),
            str(it.AdmissionID),
            str(it.CurrentPatientLocation),
        )
        for it in cfind(server, mwl_query())
    }


class Load(threading.Thread):
    """Registers new patients over one MLLP connection as fast as they are acknowledged."""

    def __init__(self, server: EbwServer, start: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.n = start
        self.acked: list[tuple[float, str]] = []  # (time the AA arrived, patient ID)
        self.sent: set[str] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with MllpClient("127.0.0.1", self.server.hl7_port, timeout=10) as client:
                while not self.stop.is_set():
                    self.n += 1
                    self.sent.add(f"P{self.n}")
                    assert msa(client.send(adt("A04", self.n)))[0] == "AA"
                    self.acked.append((time.monotonic(), f"P{self.n}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_backup_under_load_restores_the_acknowledged_worklist(server_factory, tmp_path: Path) -> None:
    server = server_factory().start()
    for n in range(1, 21):
        assert msa(server.send(adt("A04", n)))[0] == "AA"
    assert msa(server.send(adt("A03", 5)))[0] == "AA"  # one discharged: not on the list, kept in the index
    load = Load(server, start=1000)
    load.start()
    while len(load.acked) < 20 and load.is_alive():
        time.sleep(0.01)
    t0 = time.monotonic()
    acked_before = {pid for t, pid in load.acked if t < t0} | {f"P{n}" for n in range(1, 21) if n != 5}
    before = worklist(server)  # everything acknowledged before t0, as a modality saw it
    assert acked_before <= before.keys()

    dest = tmp_path / "backup"
    out = ebw(server.env, "backup", str(dest))
    assert out.returncode == 0, out.stderr
    assert "taken at" in out.stdout
    time.sleep(0.3)  # the load goes on after the snapshot: those messages are not in the backup
    load.stop.set()
    load.join(10)
    assert load.error is None, load.error
    assert len(load.acked) > 40, "the load did not run while the backup was taken"

    manifest = json.loads((dest / "backup.json").read_text())
    assert (dest / "lmdb" / "data.mdb").stat().st_mode & 0o077 == 0  # patient data: owner only
    in_backup = manifest["stats"]["endpoints"]["default"]["active"]
    live_counter = json.loads(ebw(server.env, "stats", "--json").stdout)["counters"]["accession"]

    # refused while the server runs
    out = ebw(server.env, "restore", str(dest))
    assert out.returncode == 1 and "stop the server" in out.stderr, out.stderr

    server.stop()
    out = ebw(server.env, "restore", str(dest))
    assert out.returncode == 0, out.stderr
    aside = [p for p in server.data_dir.iterdir() if p.name.startswith("before-restore-")]
    assert len(aside) == 1 and (aside[0] / "lmdb" / "data.mdb").exists()  # the previous data, kept
    assert f"kept at {aside[0]}" in out.stdout
    assert "carried forward" in out.stdout  # numbers issued after the backup are not issued again
    assert sorted(p.name for p in (dest / "lmdb").iterdir()) == ["data.mdb"]  # the backup is only read

    stats = json.loads(ebw(server.env, "stats", "--json").stdout)
    assert stats["endpoints"]["default"]["active"] == in_backup
    assert stats["journal_entries"] == manifest["stats"]["journal_entries"]
    assert stats["counters"]["accession"] == live_counter

    server.start()
    after = worklist(server)
    assert len(after) == in_backup
    # every message acknowledged before the backup started, exactly as it was listed
    assert {pid: after.get(pid) for pid in acked_before} == {pid: before[pid] for pid in acked_before}
    assert after.keys() <= acked_before | load.sent
    assert "P5" not in after
    # a new encounter gets a number above any issued before the restore
    assert msa(server.send(adt("A04", 99999)))[0] == "AA"
    number = int(worklist(server)["P99999"][0][2:])
    assert number > live_counter


def test_check_catches_a_bad_value_a_port_in_use_and_a_bad_data_dir(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EBW_DATA_DIR": str(tmp_path / "data"),
        "EBW_HL7_HOST": "127.0.0.1",
        "EBW_DICOM_HOST": "127.0.0.1",
        "EBW_HL7_PORT": str(free_port()),
        "EBW_DICOM_PORT": str(free_port()),
        "EBW_HTTP_PORT": str(free_port()),
    }
    out = ebw(env, "check")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("configuration OK")

    out = ebw({**env, "EBW_ACCESSION_DIGITS": "11"}, "check")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "ebw: configuration error: EBW_ACCESSION_DIGITS='11': the number of accession digits is at least 12"
    ]
    out = ebw({**env, "EBW_ACCESSION_DIGITS": "11", "EBW_TIMEZONE": "Nowhere"}, "check")  # one line per problem
    assert out.returncode == 2
    assert [line.split("=")[0] for line in out.stderr.strip().splitlines()] == [
        "ebw: configuration error: EBW_TIMEZONE",
        "ebw: configuration error: EBW_ACCESSION_DIGITS",
    ]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = ebw({**env, "EBW_DICOM_PORT": str(port)}, "check")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [f"ebw check: EBW_DICOM_PORT={port}: cannot listen on 127.0.0.1:{port}: port already in use"]

    (tmp_path / "file").write_text("not a directory")
    out = ebw({**env, "EBW_DATA_DIR": str(tmp_path / "file")}, "check")
    assert out.returncode == 2
    assert "EBW_DATA_DIR=" in out.stderr and "is not a directory" in out.stderr


def test_check_names_every_port_of_a_running_server(server) -> None:
    out = ebw(server.env, "check")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    for var, port in (
        ("EBW_HTTP_PORT", server.http_port),
        ("EBW_HL7_PORT", server.hl7_port),
        ("EBW_DICOM_PORT", server.dicom_port),
    ):
        assert any(
            line.startswith(f"ebw check: {var}={port}:") and "running on this data dir" in line for line in lines
        )


def test_stats_prints_the_counts_while_serving(server) -> None:
    for n in range(1, 4):
        assert msa(server.send(adt("A04", n)))[0] == "AA"
    assert msa(server.send(adt("A05", 4, patient_class="I")))[0] == "AA"  # pre-admission: pending
    assert msa(server.send(adt("A03", 2)))[0] == "AA"
    assert msa(server.send(b"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128||ORM^O01|X1|P|2.5.1\r"))[0] == "AR"

    deadline = time.monotonic() + 10
    while True:  # the rejected message's journal entry is written after its ACK
        s = json.loads(ebw(server.env, "stats", "--json").stdout)
        if s["journal_entries"] == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    ep = s["endpoints"]["default"]
    assert (ep["active"], ep["pending"], ep["encounters"]) == (2, 1, 4)
    assert s["journal_entries"] == 6
    assert s["accession_numbers"] == s["counters"]["accession"] >= 3
    assert 0 < s["lmdb"]["map_used_bytes"] < s["lmdb"]["map_size_bytes"] == 256 * 1024 * 1024

    out = ebw(server.env, "stats")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"default (Default; HL7 {server.hl7_port}, DICOM {server.dicom_port}, AE EBW): 2 active encounters" in text
    assert "1 pending, 4 stored" in text
    assert "journal entries: 6" in text
    assert "endpoints: 1" in text
    assert "LMDB map:" in text and "of 256.0 MiB" in text
