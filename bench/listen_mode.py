"""How worker processes should share a listening port: one socket inherited from the
supervisor (what EBW does) or one SO_REUSEPORT socket per worker.  Measured with an
MLLP echo (no parsing, no storage) so only the accept/dispatch path differs.

    python -m bench.listen_mode [--workers 2] [--connections 16] [--messages 40000]

Prints messages/s, ACK p50/p99, how the connections spread over the workers, and what
happens to connections waiting in the backlog of a worker that is killed (with
SO_REUSEPORT each worker has its own accept queue: the kernel resets what was queued
there; with one shared socket another worker takes them).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import sys
import time

from bench.load import adt_run, table
from bench.peers import free_port

MLLP_END = b"\x1c\r"


def _serve(sock: socket.socket | None, port: int, counts: object, index: int) -> None:
    import uvloop

    if sock is None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = transport
            self.buf = b""
            counts[index] += 1  # type: ignore[index]

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while (end := self.buf.find(MLLP_END)) >= 0:
                msg, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
                cid = msg.split(b"\r", 1)[0].split(b"|")[9] if msg.count(b"|") > 9 else b""
                self.t.write(b"\x0bMSH|^~\\&|E|E|||||ACK|1|P|2.5.1\rMSA|AA|" + cid + b"\r\x1c\r")  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


def run(mode: str, workers: int, connections: int, messages: list[bytes]) -> dict[str, object]:
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("i", workers)
    port = free_port()
    shared = None
    if mode == "inherited":
        shared = socket.socket()
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        shared.bind(("127.0.0.1", port))
        shared.listen(1024)
    procs = [ctx.Process(target=_serve, args=(shared, port, counts, i), daemon=True) for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    try:
        r = adt_run("127.0.0.1", port, messages, connections)
        spread = list(counts)
        # a killed worker: connections queued at that moment (opened, not yet accepted)
        os.kill(procs[0].pid, signal.SIGSTOP)  # stop accepting, keep the socket open
        waiting = []
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            waiting.append(s)
        os.kill(procs[0].pid, signal.SIGKILL)
        time.sleep(0.2)
        lost = 0
        for s in waiting:
            try:
                s.sendall(b"\x0bMSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5.1\r\x1c\r")
                s.settimeout(2)
                if not s.recv(100):
                    lost += 1
            except OSError:
                lost += 1
            finally:
                s.close()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if shared is not None:
            shared.close()
    return {
        "mode": mode,
        "workers": workers,
        "connections": connections,
        "msg_per_s": r["msg_per_s"],
        "ack_p50_ms": r["ack_p50_ms"],
        "ack_p99_ms": r["ack_p99_ms"],
        "connections_per_worker": spread,
        "queued_lost_when_a_worker_dies": f"{lost}/32",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.listen_mode", description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--messages", type=int, default=40000)
    args = p.parse_args(argv)
    msg = b"MSH|^~\\&|EPIC|H|EBW|H|20261128||ADT^A01^ADT_A01|C1|P|2.5.1\rPID|1||X^^^H^MR||DOE^JANE\r"
    messages = [msg] * args.messages
    rows = [
        run(mode, args.workers, args.connections, messages)
        for mode in ("inherited", "reuseport", "inherited", "reuseport")
    ]
    print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
