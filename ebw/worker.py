"""A worker process: uvloop, the LMDB store, and every endpoint's listeners.

Started by the supervisor after fork, with the listening sockets already
bound.  Opens the LMDB environment *after* fork, runs the MLLP acceptors on
uvloop, the DICOM listeners on pynetdicom threads, and the group-commit
thread.  Touches its heartbeat file every second and creates its ready file
once every listener accepts.

Signals: SIGTERM/SIGINT -> stop accepting, answer what is in flight, commit,
exit 0.  SIGQUIT -> exit at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from . import metrics
from .committer import Committer
from .config import Config, EndpointConfig
from .dicom.find import REFRESH_INTERVAL, WorklistIndex
from .dicom.scp import DicomListener
from .dicom.store_scp import StudyIn
from .ingest import Hl7Endpoint
from .mllp import ConnectionLimits, MllpServerProtocol
from .store import Store

log = logging.getLogger(__name__)

EXIT_BOOT_ERROR = 3  # the supervisor halts instead of restarting
DRAIN_TIMEOUT = 6.0  # SIGTERM: seconds to finish in-flight messages and associations

# prometheus_client's process collector family -> the per-worker gauge it feeds.
PROCESS_GAUGES = {
    "process_resident_memory_bytes": metrics.worker_resident_memory,
    "process_virtual_memory_bytes": metrics.worker_virtual_memory,
    "process_cpu_seconds": metrics.worker_cpu_seconds,
    "process_open_fds": metrics.worker_open_fds,
    "process_start_time_seconds": metrics.worker_start_time,
}


@dataclass
class EndpointSockets:
    ep: str
    hl7: socket.socket
    dicom: socket.socket


class Worker:
    def __init__(self, cfg: Config, sockets: list[EndpointSockets], run_dir: str, index: int) -> None:
        self.cfg = cfg
        self.sockets = sockets
        self.run_dir = run_dir
        self.index = index
        self.pid = os.getpid()
        self.endpoints: dict[str, EndpointConfig] = {}
        self.mllp_servers: list[asyncio.AbstractServer] = []
        self.dicom: list[DicomListener] = []
        self.listeners: dict[str, DicomListener] = {}
        self.threads: list[threading.Thread] = []  # joined before LMDB is closed
        self.hl7_endpoints: list[Hl7Endpoint] = []
        self.connections: weakref.WeakSet[MllpServerProtocol] = weakref.WeakSet()
        self._ep_version = 0
        self.stopping: asyncio.Event | None = None
        self._process: Any = None  # prometheus_client ProcessCollector, made on first use

    def run(self) -> int:
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency
            log.warning("uvloop not available; using the default asyncio loop")
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGQUIT, lambda: os._exit(0))
        try:
            self.store = Store(self.cfg.data_dir, self.cfg.lmdb_map_size_mb, sync=self.cfg.fsync)
            with self.store.read() as txn:
                settings = self.store.endpoints(txn)
                for ep in settings:
                    metrics.active_encounters.labels(ep).set(self.store.active_count(txn, ep))
            self._update_lmdb_gauges()
            self.endpoints = {ep: EndpointConfig.from_dict(d) for ep, d in settings.items()}
            with self.store.read() as txn:
                self._ep_version = self.store.endpoints_version(txn)
            self.committer = Committer(self.store, loop, inline=not self.cfg.fsync)
            self.committer.before_commit.append(self._update_gauges)
            self.committer.before_commit.append(self._prune_journal)
            self._commits = 0
            for s in self.sockets:
                if s.ep not in self.endpoints:  # deleted since the supervisor bound it
                    log.warning("worker %d: endpoint %s is gone; not listening for it", self.index, s.ep)
                    continue
                await self._start_endpoint(s)
        except Exception:
            log.exception("worker %d could not boot", self.index)
            return EXIT_BOOT_ERROR
        heartbeat = loop.create_task(self._heartbeat())
        open(os.path.join(self.run_dir, f"ready.{self.pid}"), "w").close()
        log.info("worker %d ready (pid %d)", self.index, self.pid)
        await self.stopping.wait()
        log.info("worker %d stopping", self.index)
        heartbeat.cancel()
        await self._stop()
        return 0

    def _cfg_getter(self, ep: str) -> Any:
        return lambda: self.endpoints[ep]

    async def _start_endpoint(self, s: EndpointSockets) -> None:
        loop = asyncio.get_running_loop()
        get_cfg = self._cfg_getter(s.ep)
        hl7 = Hl7Endpoint(s.ep, get_cfg, self.store, self.committer)
        gauge = metrics.hl7_connections.labels(s.ep)
        max_frame = self.cfg.mllp_max_frame_bytes
        idle = self.cfg.mllp_idle_timeout

        connections = self.connections

        limits = ConnectionLimits(self.cfg.mllp_max_connections, self.cfg.mllp_max_connections_per_address)
        frame_timeout = self.cfg.mllp_frame_timeout
        rejected = {
            reason: metrics.mllp_frames_rejected.labels(s.ep, reason)
            for reason in ("oversize", "slow_sender", "connection_limit", "garbage")
        }

        def on_reject(reason: str, n: int) -> None:
            rejected[reason].inc(n)

        def factory() -> MllpServerProtocol:
            proto = MllpServerProtocol(
                hl7.handle,
                hl7.oversize,
                max_frame,
                idle,
                gauge.inc,
                gauge.dec,
                frame_timeout=frame_timeout,
                admit=limits.admit,
                release=limits.release,
                on_reject=on_reject,
            )
            connections.add(proto)
            return proto

        self.hl7_endpoints.append(hl7)

        cfg = self.endpoints[s.ep]
        hl7_tls = None
        if cfg.hl7_tls_cert:
            from .tls import server_context

            hl7_tls = server_context(cfg.hl7_tls_cert, cfg.hl7_tls_key, cfg.tls_client_ca)
        server = await loop.create_server(
            factory, sock=s.hl7, backlog=1024, ssl=hl7_tls, ssl_handshake_timeout=30 if hl7_tls else None
        )
        self.mllp_servers.append(server)
        index = WorklistIndex(self.store, s.ep, get_cfg)
        study_in = StudyIn(
            self.store, s.ep, get_cfg, os.path.abspath(self.cfg.data_dir), self.cfg.fsync, self.cfg.studies_reserve_mb
        )
        listener = DicomListener(
            index,
            self.endpoints[s.ep],
            s.dicom,
            max_associations=self.cfg.dicom_max_associations,
            study_in=study_in,
            max_pdu=self.cfg.dicom_max_pdu,
        )
        listener.start()
        self.dicom.append(listener)
        self.listeners[s.ep] = listener
        # Load the worklist into memory now, and keep it fresh in the background, so
        # a query does not wait for a bulk of changes (a feed catching up, a rotation).
        fresh = threading.Thread(target=self._keep_fresh, args=(index,), name=f"fresh-{s.ep}", daemon=True)
        fresh.start()
        self.threads.append(fresh)

    def _keep_fresh(self, index: WorklistIndex) -> None:
        failed = False
        while self.stopping is None or not self.stopping.is_set():
            try:
                index.refresh()
                failed = False
            except Exception:  # noqa: BLE001 - the next round (or the next query) tries again
                if not failed:
                    log.exception("refreshing the worklist of %s failed", index.ep)
                failed = True
            time.sleep(REFRESH_INTERVAL)

    def _reload_endpoints(self) -> None:
        """Pick up changed endpoint settings (SIGHUP, later the admin API): they apply
        to the next message and the next association; nothing is dropped."""
        with self.store.read() as txn:
            version = self.store.endpoints_version(txn)
            if version == self._ep_version:
                return
            settings = self.store.endpoints(txn)
        self._ep_version = version
        for ep, d in settings.items():
            new = EndpointConfig.from_dict(d)
            if ep in self.endpoints and new != self.endpoints[ep]:
                self.endpoints[ep] = new
                listener = self.listeners.get(ep)
                if listener is not None:
                    listener.apply(new)
                log.info("endpoint %s: settings reloaded", ep)

    def _update_gauges(self, txn: Any) -> None:
        for ep in self.endpoints:
            metrics.active_encounters.labels(ep).set(self.store.active_count(txn, ep))
        self._update_lmdb_gauges()

    def _update_lmdb_gauges(self) -> None:
        """Map use as of the last committed transaction (inside a write transaction:
        the one before it; the heartbeat catches up within a second)."""
        env = self.store.env
        info = env.info()
        metrics.lmdb_map_used_bytes.set((info["last_pgno"] + 1) * env.stat()["psize"])
        metrics.lmdb_map_size_bytes.set(info["map_size"])

    def _update_process_gauges(self) -> None:
        if self._process is None:
            from prometheus_client import ProcessCollector

            self._process = ProcessCollector(registry=None)
        worker = str(self.index)
        for family in self._process.collect():
            gauge = PROCESS_GAUGES.get(family.name)
            if gauge is not None and family.samples:
                gauge.labels(worker).set(family.samples[0].value)

    def _prune_journal(self, txn: Any) -> None:
        """Every 256th commit, drop journal entries past the retention (a bounded amount)."""
        self._commits += 1
        if self._commits % 256 == 0:
            before = time.time() - self.cfg.journal_retention_days * 86400
            self.store.journal_prune(txn, before, limit=2000)
            self.store.prune_changes(txn)

    async def _heartbeat(self) -> None:
        path = os.path.join(self.run_dir, f"heartbeat.{self.pid}")
        open(path, "w").close()
        while True:
            os.utime(path)
            try:
                self._reload_endpoints()
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.exception("reading endpoint settings failed")
            try:
                self._update_lmdb_gauges()
                self._update_process_gauges()
            except Exception:  # noqa: BLE001 - metrics must never stop the heartbeat
                log.debug("updating the worker gauges failed", exc_info=True)
            await asyncio.sleep(1.0)

    async def _stop(self) -> None:
        """Stop accepting; answer the messages in flight and let open associations
        finish (``DRAIN_TIMEOUT`` at most); close the connections; commit; close LMDB."""
        for server in self.mllp_servers:
            server.close()
        loop = asyncio.get_running_loop()
        for listener in self.dicom:
            await loop.run_in_executor(None, listener.stop)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            busy = sum(h.in_flight for h in self.hl7_endpoints)
            associations = sum(len(listener.ae.active_associations) for listener in self.dicom)
            if not busy and not associations:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("worker %d: stopping with work still in flight", self.index)
        for proto in list(self.connections):
            transport = getattr(proto, "transport", None)
            if transport is not None:
                transport.close()
        if self.committer.inline:
            self.committer.stop()  # commits in this (the loop's) thread: what is pending, now
        else:
            await loop.run_in_executor(None, self.committer.stop)
        for thread in self.threads:
            await loop.run_in_executor(None, thread.join, 5.0)
        self.store.close()


def main(cfg: Config, sockets: list[EndpointSockets], run_dir: str, index: int) -> None:
    """Entry point in the forked child; never returns."""
    code = 1
    try:
        code = Worker(cfg, sockets, run_dir, index).run()
    except BaseException:  # noqa: BLE001
        log.exception("worker %d crashed", index)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
