"""Crash tests: SIGKILL mid-load (whole process group, or one worker), then resend what
was not acknowledged: every acknowledged message is kept, resends apply exactly once;
the ORU outbox and the PACS-push schedule survive a SIGKILL too."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from bench.feed import Feed
from ebw.mllp import MllpClient
from tests.conftest import msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network
N = 1500


def load(server, messages: dict[str, bytes], acked: set[str], stop: threading.Event, lock: threading.Lock) -> list:
    """4 senders, each waiting for its ACK; reconnect after a dropped connection."""

    def sender(keys: list[str]) -> None:
        pending = list(keys)
        while pending and not stop.is_set():
            try:
                with MllpClient("127.0.0.1", server.hl7_port, timeout=5) as c:
                    while pending and not stop.is_set():
                        k = pending[0]
                        if msa(c.send(messages[k]))[0] == "AA":
                            with lock:
                                acked.add(k)
                        pending.pop(0)
            except (OSError, ConnectionError):
                time.sleep(0.1)  # the server (or this connection's worker) is gone: reconnect, resend

    keys = list(messages)
    threads = [threading.Thread(target=sender, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    return threads


def worklist(server) -> dict[str, str]:
    items = cfind(server, mwl_query(PatientID="CM*"))
    ids = [str(i.PatientID) for i in items]
    assert len(ids) == len(set(ids)), "an encounter is listed twice"
    return {str(i.PatientID): str(i.AccessionNumber) for i in items}


def admits(seed: int) -> dict[str, bytes]:
    feed = Feed(seed=seed, prefix="C")
    out = {}
    for _ in range(N):
        e = feed.new_encounter()
        e.patient_class = "I"
        out[e.mrn] = feed.message("A01", e, control_id=f"X{e.mrn}")
    return out


def test_kill_9_of_everything_then_resend(server_factory, tmp_path):
    messages = admits(21)
    server = server_factory(tmp_path / "d").start()
    acked: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()
    threads = load(server, messages, acked, stop, lock)
    at = random.Random().randint(150, 900)  # a random moment
    deadline = time.monotonic() + 60
    while len(acked) < at and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill_group()
    stop.set()
    for t in threads:
        t.join(15)
    before = set(acked)
    server = server_factory(tmp_path / "d").start()
    listed = worklist(server)
    assert before <= set(listed), f"{len(before - set(listed))} acknowledged admits lost"
    numbers = {k: listed[k] for k in before}
    # the sender resends everything it cannot prove was stored (here: all of it, same MSH-10)
    acked2: set[str] = set()
    stop2 = threading.Event()
    for t in load(server, messages, acked2, stop2, lock):
        t.join(120)
    assert len(acked2) == N
    final = worklist(server)
    assert len(final) == N  # each exactly once
    assert all(final[k] == numbers[k] for k in before)  # resends were not applied again
    print(f"kill -9 after {len(before)} AAs of {N}; all {N} present once after the resend")


def test_kill_9_of_one_worker_mid_load(server_factory):
    messages = admits(22)
    server = server_factory().start()
    acked: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()
    threads = load(server, messages, acked, stop, lock)
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.005)
    run = server.data_dir / "run"
    victim = sorted(int(p.split(".")[1]) for p in os.listdir(run) if p.startswith("ready."))[0]
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(180)  # the senders reconnect to the surviving worker and go on
    assert len(acked) == N
    assert len(worklist(server)) == N


@pytest.mark.dcmtk
def test_the_outbox_and_push_schedule_survive_kill_9(server_factory, tmp_path):
    from tests.conftest import corpus, free_port
    from tests.integration.test_exam_loop import STORESCP, Ehr, Pacs, api, modality_exam, the_item, wait_for

    if STORESCP is None:
        pytest.skip("DCMTK storescp not installed")
    ehr_port = free_port()
    pacs = Pacs(tmp_path / "pacs")
    env = {
        "EBW_EHR_HOST": "127.0.0.1",
        "EBW_EHR_PORT": str(ehr_port),
        "EBW_PACS_AET": "PACS",
        "EBW_PACS_HOST": "127.0.0.1",
        "EBW_PACS_PORT": str(pacs.port),
        "EBW_PACS_PUSH_DELAY_SECONDS": "4",
    }
    try:
        server = server_factory(tmp_path / "d", **env).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        modality_exam(server, the_item(server), images=2)
        wait_for(lambda: api(server, "/api/exams")["exams"][0]["oru"]["attempts"] >= 1, what="an attempt")
        msh10 = api(server, "/api/exams")["exams"][0]["oru"]["msh10"]
        server.kill_group()  # the EHR is down and the ORU is pending
        ehr = Ehr(ehr_port)
        try:
            server = server_factory(tmp_path / "d", **env).start()
            (oru,) = wait_for(lambda: ehr.messages, timeout=60, what="the ORU after the crash")
            assert f"|{msh10}|" in oru.decode()
            acked = time.monotonic()
            wait_for(lambda: api(server, "/api/exams")["exams"][0]["push"]["state"] == "waiting", what="waiting")
            server.kill_group()  # during the push delay
            server = server_factory(tmp_path / "d", **env).start()
            wait_for(lambda: len(pacs.received()) == 2, timeout=60, what="the push after the second crash")
            assert time.monotonic() - acked >= 3.5
            time.sleep(2)
            assert len(pacs.received()) == 2 and len(ehr.messages) == 1
        finally:
            ehr.close()
    finally:
        pacs.close()
