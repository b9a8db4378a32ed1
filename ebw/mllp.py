"""MLLP framing (``0x0B <message> 0x1C 0x0D``), the asyncio server protocol and small clients.

Protocol code only: it knows frames and connections, not HL7 semantics or the
store.  The server side hands each complete frame to a ``handler`` coroutine
that returns the ACK bytes; frames of one connection are answered strictly in
order, one at a time (a sender that pipelines still gets its ACKs in order).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import FramingError

log = logging.getLogger(__name__)

SB = b"\x0b"
EB = b"\x1c\x0d"
MAX_QUEUED = 64  # frames buffered per connection before reading pauses


def frame(message: bytes) -> bytes:
    return SB + message + EB


class FrameReader:
    """Incremental MLLP deframer.

    ``feed(data)`` returns the complete frames found so far.  Bytes before a
    start block are discarded (counted in ``discarded``), and so is a frame cut
    short by a new start block (counted in ``junk`` too).  A frame growing past
    ``max_frame`` stops the reader: ``error`` is then a :class:`FramingError`
    and ``partial`` holds the frame's first bytes (to find MSH-10 for the AR);
    frames completed before it are still returned, later bytes are ignored.
    """

    def __init__(self, max_frame: int = 1024 * 1024) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()
        self.in_frame = False
        self.scanned = 0  # bytes of buf already searched for the end block
        self.discarded = 0
        self.junk = 0  # runs of discarded bytes that were not just line ends
        self.partial = b""
        self.error: FramingError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        if self.error is not None:
            return frames
        buf = self.buf
        buf += data
        while buf:
            if not self.in_frame:
                i = buf.find(SB)
                if i < 0:
                    self._discard(len(buf))
                    break
                if i:
                    self._discard(i)
                del buf[: i + 1]
                self.in_frame = True
                self.scanned = 0
            j = buf.find(EB, max(self.scanned - 1, 0))
            k = buf.find(SB, self.scanned, j if j >= 0 else len(buf))
            if 0 <= k <= self.max_frame:
                # A start block inside a frame: the sender gave up on that frame and began
                # another (a message cannot hold 0x0B).  The cut-off frame is dropped, not
                # answered -- it would be read as the start of one message and the end of
                # the next -- and counted as junk.  (Past the cap it is over the cap.)
                self.discarded += k
                self.junk += 1
                del buf[: k + 1]
                self.scanned = 0
                continue
            if j < 0:
                self.scanned = len(buf)
                # a read may end inside the end block: its 0x1C is not part of the frame
                if len(buf) - buf.endswith(EB[:1]) > self.max_frame:
                    self._fail()
                break
            if j > self.max_frame:
                self._fail()
                break
            frames.append(bytes(buf[:j]))
            del buf[: j + 2]
            self.in_frame = False
        return frames

    def _discard(self, n: int) -> None:
        """Drop the first ``n`` bytes of the buffer (outside any frame).  Line ends between
        frames are usual; anything else counts as junk (``junk``: runs of it)."""
        if self.buf[:n].strip(b"\r\n\t "):
            self.junk += 1
        self.discarded += n
        if n == len(self.buf):
            self.buf.clear()

    def _fail(self) -> None:
        self.partial = bytes(self.buf[:4096])
        self.buf.clear()
        self.in_frame = False
        self.error = FramingError(f"frame exceeds {self.max_frame} bytes")


Handler = Callable[[bytes], Awaitable[bytes]]


class ConnectionLimits:
    """Open connections of one listener in this process: at most ``total``, and at most
    ``per_address`` from one source address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self.open = 0
        self.by_address: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        if self.open >= self.total or self.by_address.get(address, 0) >= self.per_address:
            return False
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        n = self.by_address.get(address, 1) - 1
        if n:
            self.by_address[address] = n
        else:
            self.by_address.pop(address, None)


class MllpServerProtocol(asyncio.Protocol):
    """One MLLP connection.

    ``handler(frame) -> ack`` answers each message; ``oversize(partial) -> ack``
    answers a frame over the size cap, after which the connection is closed.
    """

    def __init__(
        self,
        handler: Handler,
        oversize: Callable[[bytes], bytes],
        max_frame: int,
        idle_timeout: float,
        on_open: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
        frame_timeout: float = 60.0,
        admit: Callable[[str], bool] | None = None,
        release: Callable[[str], None] | None = None,
        on_reject: Callable[[str, int], None] | None = None,
    ) -> None:
        self.on_reject = on_reject  # (reason, count): oversize, slow_sender, connection_limit, garbage
        self.frame_timeout = frame_timeout
        self.frame_started: float | None = None  # when the frame being received began
        self.admit = admit  # connection limits: may this source address connect?
        self.release = release
        self.admitted = False
        self.handler = handler
        self.oversize = oversize
        self.reader = FrameReader(max_frame)
        self.idle_timeout = idle_timeout
        self.on_open = on_open
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.last_activity = time.monotonic()
        self.idle_handle: asyncio.TimerHandle | None = None
        self.paused = False
        self.closing = False
        self.peer = "?"

    # -- asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.address = peer[0] if peer else "?"
        if self.admit is not None:
            if not self.admit(self.address):
                log.warning("MLLP %s: connection limit reached; closing", self.peer)
                self._reject("connection_limit")
                self.closing = True
                transport.close()
                return
            self.admitted = True
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._serve())
        self.idle_handle = loop.call_later(min(self.idle_timeout, self.frame_timeout), self._check_idle)
        if self.on_open:
            self.on_open()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.closing:
            return
        junk = self.reader.junk
        for f in self.reader.feed(data):
            self.queue.put_nowait(f)
        if self.reader.junk != junk:
            self._reject("garbage")  # bytes outside any frame, not just line ends
        if self.reader.in_frame:
            if self.frame_started is None:
                self.frame_started = self.last_activity
        else:
            self.frame_started = None
        if self.reader.error is not None:
            log.warning("MLLP %s: %s; answering AR and closing", self.peer, self.reader.error)
            self._reject("oversize")
            self.queue.put_nowait(None)
            self.closing = True
            return
        if self.queue.qsize() > MAX_QUEUED and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def eof_received(self) -> bool:
        # Half-close: answer what we have, then close.
        self.queue.put_nowait(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.admitted and self.release is not None:
            self.admitted = False
            self.release(self.address)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        self.queue.put_nowait(None)
        if self.on_close:
            self.on_close()
            self.on_close = None

    def _reject(self, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(reason, 1)

    # -- work -------------------------------------------------------------------

    async def _serve(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    if self.reader.error is not None:
                        transport.write(frame(self.oversize(self.reader.partial)))
                    break
                ack = await self.handler(item)
                if transport.is_closing():
                    return
                transport.write(frame(ack))
                self.last_activity = time.monotonic()
                if self.paused and self.queue.qsize() < MAX_QUEUED // 2:
                    transport.resume_reading()
                    self.paused = False
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("MLLP %s: handler failed; closing connection", self.peer)
        finally:
            if not transport.is_closing():
                transport.close()

    def _check_idle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        now = time.monotonic()
        idle = now - self.last_activity
        if self.frame_started is not None and now - self.frame_started >= self.frame_timeout:
            log.warning(
                "MLLP %s: a frame unfinished after %.0f s; closing (slow sender)", self.peer, self.frame_timeout
            )
            self._reject("slow_sender")
            self.closing = True
            self.transport.close()
            return
        if idle >= self.idle_timeout and self.queue.empty():
            log.info("MLLP %s: idle for %.0f s; closing", self.peer, idle)
            self.closing = True
            self.queue.put_nowait(None)
            return
        loop = asyncio.get_running_loop()
        wait = self.idle_timeout - idle
        if self.frame_started is not None:
            wait = min(wait, self.frame_timeout - (now - self.frame_started))
        self.idle_handle = loop.call_later(max(wait, 0.5), self._check_idle)


# ------------------------------------------------------------------------------ clients


class MllpClient:
    """Blocking MLLP client: send a message, wait for its ACK.  For ``ebw send`` and tests."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader(64 * 1024 * 1024)
        self.pending: list[bytes] = []

    def send(self, message: bytes) -> bytes:
        self.sock.sendall(frame(message))
        return self.recv()

    def recv(self) -> bytes:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the ACK arrived")
            self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMllpClient:
    """asyncio MLLP client for load generation: one message in flight, as MLLP senders do."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.deframer = FrameReader(64 * 1024 * 1024)
        self.pending: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> AsyncMllpClient:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, message: bytes) -> bytes:
        self.writer.write(frame(message))
        while not self.pending:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("connection closed before the ACK arrived")
            self.pending.extend(self.deframer.feed(data))
        return self.pending.pop(0)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
