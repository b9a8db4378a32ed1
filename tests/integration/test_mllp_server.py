"""The MLLP acceptor over real sockets: pipelining, chunking, size cap, idle timeout, many connections."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ebw.mllp import FrameReader, MllpClient, frame
from tests.conftest import corpus, msa, wait_for

pytestmark = pytest.mark.network


def recv_frames(sock: socket.socket, n: int, timeout: float = 10) -> list[bytes]:
    sock.settimeout(timeout)
    reader = FrameReader()
    out: list[bytes] = []
    while len(out) < n:
        data = sock.recv(65536)
        if not data:
            break
        out.extend(reader.feed(data))
    return out


def numbered(i: int) -> bytes:
    return corpus("001_a04_register.hl7").replace(b"MSG00001", f"P{i:05d}".encode()).replace(b"V999", f"PV{i}".encode())


def test_pipelined_frames_in_one_write_are_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server.hl7_port)) as s:
        s.sendall(b"".join(frame(numbered(i)) for i in range(20)) + frame(b"garbage\r") + frame(numbered(20)))
        acks = recv_frames(s, 22)
    assert [msa(a)[1] for a in acks[:20]] == [f"P{i:05d}" for i in range(20)]
    assert msa(acks[20])[0] == "AR"
    assert msa(acks[21]) == ("AA", "P00020")


def test_frame_sent_byte_by_byte(server):
    with socket.create_connection(("127.0.0.1", server.hl7_port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in frame(numbered(1)):
            s.send(bytes([b]))
        assert msa(recv_frames(s, 1)[0]) == ("AA", "P00001")


def test_oversized_frame_gets_ar_then_close(server_factory):
    srv = server_factory(EBW_MLLP_MAX_FRAME_BYTES="2048").start()
    big = corpus("001_a04_register.hl7") + b"NTE|1||" + b"X" * 4000 + b"\r"
    with socket.create_connection(("127.0.0.1", srv.hl7_port)) as s:
        s.sendall(frame(numbered(1)) + frame(big))
        acks = recv_frames(s, 2)
        assert msa(acks[0])[0] == "AA"
        assert msa(acks[1]) == ("AR", "MSG00001")
        assert b"too large" in acks[1]
        s.settimeout(5)
        assert s.recv(10) == b""  # closed by the server
    assert wait_for(lambda: _rejected(srv, "oversize") == 1, 5)


def test_junk_between_frames_is_counted_line_ends_are_not(server_factory):
    srv = server_factory().start()
    with socket.create_connection(("127.0.0.1", srv.hl7_port)) as s:
        s.sendall(frame(numbered(1)) + b"\r\n" + frame(numbered(2)) + b"GET / HTTP/1.0\r\n\r\n" + frame(numbered(3)))
        assert [msa(a) for a in recv_frames(s, 3)] == [("AA", f"P0000{i}") for i in (1, 2, 3)]
    assert wait_for(lambda: _rejected(srv, "garbage") == 1, 5)


def _rejected(server, reason: str) -> float:
    from tests.system.test_metrics import Scrape

    return Scrape(server).total("ebw_mllp_frames_rejected_total", reason=reason)


def test_idle_connection_is_closed(server_factory):
    srv = server_factory(EBW_MLLP_IDLE_TIMEOUT_SECONDS="1").start()
    with socket.create_connection(("127.0.0.1", srv.hl7_port)) as s:
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 0.5 < time.monotonic() - t0 < 8


def test_many_concurrent_connections(server):
    errors: list[BaseException] = []
    codes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            with MllpClient("127.0.0.1", server.hl7_port, timeout=30) as c:
                for j in range(5):
                    code = msa(c.send(numbered(i * 10 + j)))[0]
                    with lock:
                        codes.append(code)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert codes.count("AA") == 500
    metrics = server.http("/metrics")[1].decode()
    assert 'ebw_hl7_messages_total{ack="AA",endpoint="default",event="A04"} 500.0' in metrics
