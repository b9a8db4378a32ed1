"""Group commit: one thread per worker commits the queued ADT changes to LMDB in batches.

The event loop parses messages and queues their changes; this thread waits for
the first, opens ONE write transaction -- waiting, if another process is
committing, for LMDB's writer lock -- and then takes everything queued by that
time (so what arrived during the wait shares this commit), has it applied
(should a change fail, the batch runs again with each change in a nested
transaction, so one failing change does not sink its batch), commits -- with
``EBW_FSYNC=on`` that commit returns only once the data is on stable storage --
and only then resolves the futures the loop is waiting on to send ``AA``.  While
a commit syncs, the loop keeps reading and parsing the next messages, which then
share the next sync.

The changes themselves are applied on the event loop's thread, while this thread
waits: py-lmdb releases the GIL around every get and put, and a thread that does
so while another thread runs Python waits for the GIL each time (1.1 us a get
alone, 0.3-1.7 ms with a busy second thread here).  Applied in this thread, a
batch of 8 messages took ~4 ms under load; on the loop, ~1.3 ms.  The transaction is
begun and committed by this thread (LMDB's writer lock belongs to the thread that
took it) and used by one thread at a time, handed over through a lock.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import lmdb

from . import metrics
from .errors import StoreError
from .store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 2048

# A job applies one change inside the given (nested) write transaction and
# returns a result object delivered to the waiting future.
Job = Callable[[Any], Any]


class Committer:
    """``inline=False`` (``EBW_FSYNC=on``): the commit thread above, so the loop keeps
    reading and parsing while a commit syncs.  ``inline=True`` (``EBW_FSYNC=off``, where
    a commit only hands pages to the OS): the event loop commits itself, once per loop
    turn, everything its connections submitted in that turn -- no thread hand-offs
    and no GIL contention: py-lmdb drops the GIL around every get and put, so a
    commit thread pays a GIL hand-off per call while the loop parses (about 20% less
    CPU a message here, see bench/RESULTS.md)."""

    def __init__(
        self, store: Store, loop: asyncio.AbstractEventLoop, name: str = "committer", inline: bool = False
    ) -> None:
        self.store = store
        self.loop = loop
        self.inline = inline
        self.before_commit: list[Callable[[Any], None]] = []  # run in each batch txn, last
        self.queue: queue.SimpleQueue[tuple[Job, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self.pending: list[tuple[Job, asyncio.Future[Any]]] = []  # inline: this loop turn's jobs
        self.calls: queue.SimpleQueue[_LoopCall] = queue.SimpleQueue()  # for the loop's thread
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self._stop_seen = False  # the thread took the stop marker off the queue
        self.thread: threading.Thread | None = None
        if not inline:
            self.thread = threading.Thread(target=self._run, name=name, daemon=True)
            self.thread.start()

    def submit(self, job: Job) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self.inline:
            if not self.pending:
                self.loop.call_soon(self._flush)
            self.pending.append((job, fut))
        else:
            self.queue.put((job, fut))
        return fut

    def stop(self, timeout: float = 10.0) -> None:
        """Finish everything queued, then stop the thread.  Inline: call it from the
        event loop's thread (it commits what is pending there and then).  From the
        loop's thread a committer with a thread runs the batches' changes itself
        while it waits (the loop cannot)."""
        if self.thread is None:
            while self.pending:
                self._flush()
            return
        self.queue.put(None)
        if not self._on_loop_thread():
            self.thread.join(timeout)
            return
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            self._run_calls()
            self.thread.join(0.005)

    # -- changes applied on the loop's thread ----------------------------------------

    def _on_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` run on the event loop's thread while this one waits; its
        result, or its exception raised here."""
        if self.thread is None or threading.get_ident() != self.thread.ident:
            return fn(*args)
        call = _LoopCall(fn, args)
        self.calls.put(call)
        try:
            self.loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:  # the loop is closed: nothing else runs Python now
            self._run_calls()
        return call.result()

    def _run_calls(self) -> None:
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                return
            call.run()
            # Let go of the GIL for a moment: the commit thread, holding LMDB's writer
            # lock (which every process's commits wait for), can commit now instead of
            # after this loop's next switch interval.  +8% msg/s with 2 workers, +13%
            # with 1, at 16 durable connections (bench/RESULTS.md).
            time.sleep(0)

    def _flush(self) -> None:
        batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        if self.pending:
            self.loop.call_soon(self._flush)
        if batch:
            _deliver(batch, self._commit(batch))

    # -- the thread --------------------------------------------------------------

    def _run(self) -> None:
        q = self.queue
        while True:
            first = q.get()
            if first is None:
                return
            batch = [first]  # grows once the writer lock is held: see _take_queued
            results = self._commit(batch)
            self.loop.call_soon_threadsafe(_deliver, batch, results)
            if self._stop_seen:
                return

    def _take_queued(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        """Add what is queued now to ``batch`` (in place).  Called on the loop's thread
        with the write transaction begun, so the batch holds every change submitted
        until then, including those that queued while this worker waited for LMDB's
        writer lock (another worker committing): commits are serialized across
        processes, so fewer, larger ones carry more messages a second."""
        q = self.queue
        while len(batch) < MAX_BATCH and not self._stop_seen:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                return
            if nxt is None:
                self._stop_seen = True
            else:
                batch.append(nxt)

    def _commit(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        t0 = time.perf_counter()
        while True:
            try:
                results = self._apply(batch)
                break
            except lmdb.MapFullError:
                # the batch was rolled back: grow the map and apply it again
                if self.store.grow():
                    log.warning("LMDB map full: grown to %d MiB", self.store.env.info()["map_size"] >> 20)
                    continue
                log.error("LMDB map full and the filesystem has no room to grow it")
                return [StoreError("commit failed: the store is full")] * len(batch)
            except Exception as exc:  # LMDB, or a bug (a hook, say): the batch fails, the committer goes on
                bug = not isinstance(exc, (lmdb.Error, StoreError))
                log.error("LMDB commit of %d changes failed: %s", len(batch), exc, exc_info=bug)
                return [StoreError(f"commit failed: {type(exc).__name__}")] * len(batch)
        metrics.store_commits.inc()
        metrics.store_commit_batch.observe(len(batch))
        metrics.store_commit_duration.observe(time.perf_counter() - t0)
        return results

    def _apply(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        """Every job of the batch in one write transaction.  Jobs run straight in it (a
        nested transaction per job costs ~30 us); if one raises, the whole transaction is
        dropped and the batch runs again with each job in its own nested transaction, so
        the failing change gets its own error and the others commit."""
        try:
            return self._apply_flat(batch)
        except _JobFailed:
            return self._apply_nested(batch)

    def _apply_flat(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        t0 = time.perf_counter()
        with self.store.write() as txn:  # leaving the block on an exception aborts it
            metrics.store_commit_lock_wait.observe(time.perf_counter() - t0)
            return self._on_loop(self._run_flat, txn, batch)

    def _run_flat(self, txn: Any, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        self._take_queued(batch)  # inline, the queue is not used: nothing to take
        try:
            results = [job(txn) for job, _fut in batch]
        except lmdb.MapFullError:
            raise
        except Exception as exc:
            raise _JobFailed from exc
        for hook in self.before_commit:
            hook(txn)
        return results

    def _apply_nested(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        with self.store.write() as txn:
            return self._on_loop(self._run_nested, txn, batch)

    def _run_nested(self, txn: Any, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        env = self.store.env
        results: list[Any] = []
        for job, _fut in batch:
            try:
                with env.begin(write=True, parent=txn) as child:
                    results.append(job(child))
            except lmdb.MapFullError:
                raise
            except Exception as exc:  # one bad change: its own AE, the batch goes on
                log.exception("applying a change failed (%s)", type(exc).__name__)
                results.append(StoreError(f"apply failed: {type(exc).__name__}"))
        for hook in self.before_commit:
            hook(txn)
        return results


class _LoopCall:
    """A function the committer thread has the loop's thread run, and its outcome."""

    __slots__ = ("args", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class _JobFailed(Exception):
    """A job raised while the batch ran without nested transactions."""


def _deliver(batch: list[tuple[Job, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_job, fut), res in zip(batch, results, strict=True):
        if fut.cancelled():
            continue
        if isinstance(res, BaseException):
            fut.set_exception(res)
        else:
            fut.set_result(res)
