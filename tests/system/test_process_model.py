"""The process model from outside: SIGHUP reloads EBW_ENV_FILE without dropping
connections, SIGTERM drains what is in flight, the timer process is restarted."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ebw.mllp import MllpClient
from tests.conftest import corpus, free_port, msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def associate(server, aet: str):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    return ae.associate("127.0.0.1", server.dicom_port, ae_title=aet)


def test_sighup_applies_endpoint_settings_without_dropping_connections(server_factory, tmp_path):
    env_file = tmp_path / "ebw.env"
    env_file.write_text("# test\nEBW_PROCEDURE_ID=POCUS\n")
    server = server_factory(EBW_ENV_FILE=str(env_file)).start()
    with MllpClient("127.0.0.1", server.hl7_port, timeout=10) as held:  # stays open across the reload
        assert msa(held.send(corpus("001_a04_register.hl7")))[0] == "AA"
        assert cfind(server, mwl_query(RequestedProcedureID=""))[0].RequestedProcedureID == "POCUS"
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        env_file.write_text(f"EBW_PROCEDURE_ID=US-POC\nEBW_SCP_AET=EBW2\nEBW_HL7_PORT={busy_port}\n")
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: associate(server, "EBW2").is_established, what="the new AE title")
        q = mwl_query(RequestedProcedureID="")
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW2")
        got = [i for s, i in assoc.send_c_find(q, ModalityWorklistInformationFind) if s.Status == 0xFF00]
        assoc.release()
        assert [i.RequestedProcedureID for i in got] == ["US-POC"]
        assert not associate(server, "EBW").is_established  # the old AE title is refused now
        # the connection opened before the reload still works; the port did not move
        assert msa(held.send(corpus("002_a08_update.hl7")))[0] == "AA"
    busy.close()
    assert "hl7_port not changed" in server.read_log() and "in use" in server.read_log()


def test_sighup_moves_a_listener_to_a_new_port(server_factory, tmp_path):
    env_file = tmp_path / "ebw.env"
    env_file.write_text("")
    server = server_factory(EBW_ENV_FILE=str(env_file)).start()
    old_port = server.hl7_port
    with MllpClient("127.0.0.1", old_port, timeout=10) as held:
        assert msa(held.send(corpus("001_a04_register.hl7")))[0] == "AA"
        new_port = free_port()
        env_file.write_text(f"EBW_HL7_PORT={new_port}\n")
        os.kill(server.proc.pid, signal.SIGHUP)

        def answers() -> bool:
            try:
                with MllpClient("127.0.0.1", new_port, timeout=5) as c:
                    return msa(c.send(corpus("002_a08_update.hl7")))[0] == "AA"
            except OSError:
                return False

        wait_for(answers, what="the new HL7 port")
    server.hl7_port = new_port
    assert server.http("/healthz")[0] == 200


def test_sighup_with_a_bad_value_keeps_the_running_configuration(server_factory, tmp_path):
    env_file = tmp_path / "ebw.env"
    env_file.write_text("EBW_PROCEDURE_ID=POCUS\n")
    server = server_factory(EBW_ENV_FILE=str(env_file)).start()
    env_file.write_text("EBW_ACCESSION_PERIOD_MINUTES=0\n")
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in server.read_log(), what="the reload error")
    assert "EBW_ACCESSION_PERIOD_MINUTES" in server.read_log()
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    assert server.http("/healthz")[0] == 200


def test_sighup_with_new_global_settings_replaces_the_workers(server_factory, tmp_path):
    env_file = tmp_path / "ebw.env"
    env_file.write_text("")
    server = server_factory(EBW_ENV_FILE=str(env_file)).start()
    run = server.data_dir / "run"
    before = {p for p in os.listdir(run) if p.startswith("ready.")}
    env_file.write_text("EBW_MLLP_IDLE_TIMEOUT_SECONDS=120\n")
    os.kill(server.proc.pid, signal.SIGHUP)

    def replaced() -> bool:
        now = {p for p in os.listdir(run) if p.startswith("ready.")}
        return len(now) == 2 and not now & before

    wait_for(replaced, what="new workers")
    assert server.http("/healthz")[0] == 200
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    assert "ebw_worker_restarts_total 0.0" in server.http("/metrics")[1].decode()  # a reload is no crash


@pytest.mark.parametrize("fsync", ["on", "off"])  # commit thread / inline commits
def test_sigterm_answers_what_is_in_flight(server_factory, fsync):
    """Messages sent while SIGTERM arrives are all answered AA (and kept), or refused
    at connect time -- never accepted and then lost."""
    server = server_factory(EBW_FSYNC=fsync).start()
    acked: list[str] = []
    errors: list[Exception] = []

    def sender(n: int) -> None:
        from tests.data.make_corpus import msg

        try:
            with MllpClient("127.0.0.1", server.hl7_port, timeout=10) as c:
                for i in range(200):
                    m = msg("A04", f"T{n}-{i}", f"P{n}-{i}", f"V{n}-{i}").encode()
                    ack = c.send(m)
                    assert msa(ack)[0] == "AA"
                    acked.append(f"V{n}-{i}")
        except (OSError, ConnectionError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 20, what="some messages")
    t0 = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10
    for t in threads:
        t.join(10)
    server.start()
    q = mwl_query()
    q.AdmissionID = ""
    listed = {str(i.AdmissionID) for i in cfind(server, q)}
    assert set(acked) <= listed


def test_a_killed_timer_process_is_restarted(server):
    run = server.data_dir / "run"
    (pid,) = [int(p.split(".")[1]) for p in os.listdir(run) if p.startswith("timers-ready.")]
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        pids = [int(p.split(".")[1]) for p in os.listdir(run) if p.startswith("timers-ready.")]
        return len(pids) == 1 and pids[0] != pid

    wait_for(back, what="a new timer process")
    assert server.health()["timers"] is True
    assert "timer process" in server.read_log()
