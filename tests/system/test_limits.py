"""Limits against misbehaving or hostile peers, each configurable: slow senders, too many
MLLP connections (per address and in all), too many DICOM associations."""

from __future__ import annotations

import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ebw.mllp import MllpClient, frame
from tests.conftest import corpus, msa, wait_for
from tests.system.test_metrics import Scrape

pytestmark = pytest.mark.network


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_slow_sender_is_cut_off(server_factory):
    server = server_factory(EBW_MLLP_FRAME_TIMEOUT_SECONDS="2").start()
    msg = frame(corpus("001_a04_register.hl7"))
    with socket.create_connection(("127.0.0.1", server.hl7_port)) as s:
        t0 = time.monotonic()
        closed = False
        for byte in msg[:40]:  # one byte every 0.25 s: never idle, never done
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.25)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed and 1.5 <= time.monotonic() - t0 < 8
    assert "slow sender" in server.read_log()
    assert wait_for(lambda: Scrape(server).total("ebw_mllp_frames_rejected_total", reason="slow_sender") == 1, 5)
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"  # others are served


def test_connections_per_address_are_capped(server_factory):
    server = server_factory(EBW_WORKERS="1", EBW_MLLP_MAX_CONNECTIONS_PER_ADDRESS="3").start()
    clients = [MllpClient("127.0.0.1", server.hl7_port, timeout=10) for _ in range(3)]
    try:
        for c in clients:
            assert msa(c.send(corpus("001_a04_register.hl7")))[0] == "AA"
        extra = socket.create_connection(("127.0.0.1", server.hl7_port))
        assert closed_by_server(extra, 5)
        extra.close()
        clients.pop().close()
        time.sleep(0.3)
        with MllpClient("127.0.0.1", server.hl7_port, timeout=10) as again:
            assert msa(again.send(corpus("002_a08_update.hl7")))[0] == "AA"
    finally:
        for c in clients:
            c.close()
    assert "connection limit reached" in server.read_log()
    assert Scrape(server).total("ebw_mllp_frames_rejected_total", reason="connection_limit") == 1


def test_dicom_associations_are_capped(server_factory):
    server = server_factory(EBW_WORKERS="1", EBW_DICOM_MAX_ASSOCIATIONS="2").start()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    held = [ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
        assert third.is_rejected
    finally:
        for a in held:
            a.release()
    again = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
    deadline = time.monotonic() + 10
    while not again.is_established and time.monotonic() < deadline:
        time.sleep(0.2)
        again = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW")
    assert again.is_established
    again.release()
