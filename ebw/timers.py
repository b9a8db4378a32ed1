"""The timer process: the supervisor's clocked work, in one child process.

The supervisor forks it next to the workers (and restarts it like them); it
opens LMDB after fork, as the workers do.  Every second (``TICK``) it:

- rotates accession numbers (``ebw.accession.rotate_due``) for every endpoint,
  with the endpoint settings read from LMDB at that tick, so a change of
  prefix, digits or period applies to the next number issued.  Rotation is
  done in write transactions of at most ``BATCH`` encounters, so HL7 commits
  from the workers are never held up long;
- every ``PRUNE_EVERY`` seconds, forgets accession numbers older than
  ``EBW_JOURNAL_RETENTION_DAYS`` that no exam used.

A second thread (``ebw.delivery``) completes quiet exams, sends ORUs to the
EHR and pushes studies to PACS when they are due.

Writes go through the same LMDB environment as the workers' (one writer at a
time across processes), synced like theirs (``EBW_FSYNC``): a number is
issued for good before any modality can see it.  The worklists in the
workers pick the new numbers up from the change feed.

Touches ``run/heartbeat.<pid>`` every tick (``run/timers-ready.<pid>`` once up); SIGTERM ends it after the current
transaction.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any

import lmdb

from . import accession, metrics
from .config import Config, EndpointConfig
from .store import Store

log = logging.getLogger(__name__)

TICK = 1.0
BATCH = 500  # encounters rotated per write transaction
PASS_BUDGET = 0.5  # seconds of rotation per endpoint per tick, at most
PRUNE_EVERY = 60.0


class Timers:
    def __init__(self, cfg: Config, run_dir: str, clock: Any = time.time) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.clock = clock
        self.stopping = False
        self.store: Store | None = None
        self._pruned = 0.0
        self._seen_from = b""  # where the next pass over the duplicate-check ids goes on

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.store = Store(self.cfg.data_dir, self.cfg.lmdb_map_size_mb, sync=self.cfg.fsync)
        pid = os.getpid()
        heartbeat = os.path.join(self.run_dir, f"heartbeat.{pid}")
        open(heartbeat, "w").close()
        open(os.path.join(self.run_dir, f"timers-ready.{pid}"), "w").close()
        from .delivery import Delivery

        delivery = Delivery(self.store, os.path.abspath(self.cfg.data_dir), self.endpoints, clock=self.clock)
        delivery.start()
        log.info("timers ready (pid %d)", pid)
        while not self.stopping:
            started = time.monotonic()
            try:
                self.tick(self.clock())
            except Exception:  # noqa: BLE001 - logged; the next tick tries again
                log.exception("timer tick failed")
            os.utime(heartbeat)
            rest = TICK - (time.monotonic() - started)
            if rest > 0 and not self.stopping:
                time.sleep(rest)
        delivery.stop()
        if delivery.thread.is_alive():  # stuck on a peer: the process exits without closing LMDB
            log.warning("timers: a delivery is still in progress; exiting without waiting for it")
            return 0
        self.store.close()
        log.info("timers stopped")
        return 0

    def _stop(self, sig: int, frame: Any) -> None:
        self.stopping = True

    def endpoints(self) -> dict[str, EndpointConfig]:
        assert self.store is not None
        with self.store.read() as txn:
            return {ep: EndpointConfig.from_dict(d) for ep, d in self.store.endpoints(txn).items()}

    def tick(self, now: float) -> dict[str, int]:
        """One round of the clocked work at ``now``; returns numbers rotated per endpoint."""
        assert self.store is not None
        rotated: dict[str, int] = {}
        for ep, cfg in self.endpoints().items():
            rotated[ep] = n = rotate_all_due(self.store, cfg, ep, now, budget=PASS_BUDGET, stop=lambda: self.stopping)
            if n:
                metrics.accessions_issued.labels(ep).inc(n)
                log.debug("%s: %d accession numbers rotated", ep, n)
        if now - self._pruned >= PRUNE_EVERY:
            self._pruned = now
            before = now - self.cfg.journal_retention_days * 86400
            with self.store.write() as txn:
                dropped = self.store.prune_accessions(txn, before, limit=20000)
                self._seen_from = self.store.prune_seen(txn, before, self._seen_from)
            if dropped:
                log.info(
                    "forgot %d unused accession numbers older than %d days", dropped, self.cfg.journal_retention_days
                )
        return rotated


def rotate_all_due(
    store: Store, cfg: EndpointConfig, ep: str, now: float, budget: float = 0.5, stop: Any = lambda: False
) -> int:
    """Rotate every due encounter of ``ep`` (as of ``now``) in batches of ``BATCH``,
    for at most ``budget`` seconds; the rest waits for the next tick."""
    total = 0
    deadline = time.monotonic() + budget
    while not stop():
        try:
            with store.write() as txn:
                n = accession.rotate_due(store, txn, cfg, ep, now, limit=BATCH)
        except lmdb.MapFullError:
            if store.grow():
                continue
            raise
        total += n
        if n < BATCH or time.monotonic() > deadline:
            break
    return total


def main(cfg: Config, run_dir: str) -> None:
    """Entry point in the forked child (never returns)."""
    code = 1
    try:
        code = Timers(cfg, run_dir).run()
    except Exception:  # noqa: BLE001
        log.exception("timers failed")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
