"""`ebw serve` as a process: configuration errors, signals, worker crashes, durability."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from bench.feed import Feed
from tests.conftest import corpus, free_port, msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def run_serve(env_overrides: dict[str, str], tmp_path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EBW_DATA_DIR": str(tmp_path / "data"),
        "EBW_HL7_PORT": str(free_port()),
        "EBW_DICOM_PORT": str(free_port()),
        "EBW_HTTP_PORT": str(free_port()),
        "EBW_WORKERS": "1",
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "ebw", "serve"], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "var,value,rule",
    [
        ("EBW_ACCESSION_PREFIX", "E", "2-4 letters"),
        ("EBW_ACCESSION_DIGITS", "11", "at least 12"),
        ("EBW_ACCESSION_DIGITS", "15", "exceed 16"),
        ("EBW_ACCESSION_PERIOD_MINUTES", "0", "1 to 1440"),
        ("EBW_HL7_PORT", "70000", "1 to 65535"),
        ("EBW_SCP_AET", "WAY_TOO_LONG_AE_TITLE", "1-16 characters"),
        ("EBW_SCP_AET", "   ", "not all spaces"),
        ("EBW_TIMEZONE", "Nowhere/Land", "IANA"),
    ],
)
def test_bad_config_exits_nonzero_with_one_line(var, value, rule, tmp_path):
    out = run_serve({var: value}, tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert var in lines[0] and repr(value) in lines[0] and rule in lines[0]
    assert not (tmp_path / "data").exists()  # checked before anything was created or bound


def test_port_in_use_is_reported(tmp_path):
    busy = socket.socket()
    busy.bind(("0.0.0.0", 0))
    busy.listen()
    try:
        out = run_serve({"EBW_HL7_PORT": str(busy.getsockname()[1])}, tmp_path)
    finally:
        busy.close()
    assert out.returncode != 0
    assert "EBW_HL7_PORT" in out.stderr and "in use" in out.stderr


def test_sigterm_stops_cleanly(server):
    assert server.stop(signal.SIGTERM) == 0


def test_killed_worker_is_restarted(server):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    pids = [int(p.split(".")[1]) for p in os.listdir(server.data_dir / "run") if p.startswith("ready.")]
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready = [p for p in os.listdir(server.data_dir / "run") if p.startswith("ready.")]
        if len(ready) == 2 and f"ready.{pids[0]}" not in ready and server.http("/healthz")[0] == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("worker not restarted")
    assert len(cfind(server, mwl_query())) == 1
    assert "ebw_worker_restarts_total 1.0" in server.http("/metrics")[1].decode()


def test_every_acknowledged_message_survives_kill_9(server_factory, tmp_path):
    """SIGKILL the whole process group mid-load: every AA'd admit is on the worklist after restart."""
    s = server_factory(tmp_path / "d").start()
    feed = Feed(seed=5, prefix="K")
    encounters = [feed.new_encounter() for _ in range(2000)]
    for e in encounters:
        e.patient_class = "E"
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(part: list) -> None:
        from ebw.mllp import MllpClient

        try:
            with MllpClient("127.0.0.1", s.hl7_port, timeout=5) as c:
                for e in part:
                    if stop.is_set():
                        return
                    ack = c.send(feed.message("A04", e, control_id=f"C{e.mrn}"))
                    if msa(ack)[0] == "AA":
                        with lock:
                            acked.add(e.mrn)
        except (OSError, ConnectionError):
            return

    threads = [threading.Thread(target=sender, args=(encounters[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    s.kill_group()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 300
    s2 = server_factory(tmp_path / "d").start()
    from ebw.dicom.net import nodelay_scu

    nodelay_scu()
    ids = {str(i.PatientID) for i in cfind(s2, mwl_query(PatientID="KM*"))}
    missing = acked - ids
    assert not missing, f"{len(missing)} acknowledged admits lost"
