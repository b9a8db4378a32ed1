"""The supervisor (parent process): prepare, bind, fork workers, watch them, serve HTTP.

Like gunicorn's arbiter: signal handlers only queue the signal and wake the
main loop; the loop handles them, reaps children with ``waitpid(-1, WNOHANG)``,
checks heartbeats (each worker touches ``run/heartbeat.<pid>`` every second;
stale for ``HEARTBEAT_TIMEOUT`` -> SIGABRT, then SIGKILL) and restarts workers
that died, with backoff.  A worker that exits with ``EXIT_BOOT_ERROR`` could
not boot: the supervisor stops everything instead of looping.

Before forking, the supervisor:
- empties the Prometheus multiprocess directory and exports
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client picks its storage at import);
- opens LMDB once to create/update the default endpoint from the ``EBW_*``
  variables, then closes it (workers open the environment after fork);
- binds every listening socket, so a port in use is reported before anything
  starts, and the workers share them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import select
import shutil
import signal
import socket
import sys
import threading
import time
from typing import Any

from .config import Config, ConfigError, EndpointConfig
from .store import SharedLock

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 30.0
GRACEFUL_TIMEOUT = 9.0  # SIGTERM: everything has exited within 10 s
DEFAULT_ENDPOINT = "default"
TIMERS = -1  # the index of the timer process (``ebw.timers``) among the children
RETIRE_TIMEOUT = 30.0  # seconds to wait for a new generation to be ready before retiring the old


def env_endpoint_settings(
    env: dict[str, Any], last_applied: bytes | None, current: dict[str, Any] | None
) -> dict[str, Any]:
    """The default endpoint's settings once the environment's are applied: the settings
    whose environment value changed since it was last applied (``last_applied``, its
    ``dumps``) take it; every other one keeps its value in ``current`` -- a change made
    through the API stays until that very setting changes in the environment.  First
    start (nothing applied or stored): the environment's, all of them."""
    from .store import dumps, loads

    if current is None or last_applied is None:
        return {**env, **{k: v for k, v in (current or {}).items() if k.startswith("_")}}
    last, now = loads(last_applied), loads(dumps(env))  # compared as stored: lists, not tuples
    return {**current, **{k: v for k, v in env.items() if k not in last or last[k] != now[k]}}


def apply_env_endpoint(store: Any, txn: Any, endpoint: EndpointConfig) -> bool:
    """The default endpoint from the environment (``env_endpoint_settings``): applied
    when the environment's values differ from those last applied (first start, or the
    administrator changed one).  True if the stored settings changed."""
    from .store import dumps

    env = endpoint.to_dict()
    raw = dumps(env)
    meta = store.db["meta"]
    last = txn.get(b"env_endpoint", db=meta)
    if last == raw:
        return False
    txn.put(b"env_endpoint", raw, db=meta)
    current = store.get_endpoint(txn, DEFAULT_ENDPOINT)
    merged = env_endpoint_settings(env, None if last is None else bytes(last), current)
    changed = sorted(k for k in merged if (current or {}).get(k) != merged[k])
    if changed and current is not None:
        log.info("default endpoint: %s changed in the environment", ", ".join(changed))
    return store.put_endpoint(txn, DEFAULT_ENDPOINT, merged)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def bind(host: str, port: int, variable: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = "port already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise ConfigError(variable, str(port), f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data_dir = os.path.abspath(cfg.data_dir)
        self.run_dir = os.path.join(self.data_dir, "run")
        self.metrics_dir = os.path.join(self.run_dir, "metrics")
        self.workers: dict[int, dict[str, Any]] = {}  # pid -> {"index", "started"}
        self.signals: list[int] = []
        self.stopping = False
        self.halt_code: int | None = None
        self.restarts: list[float] = []
        self.pending_restart: list[int] = []
        self.retiring: set[int] = set()  # pids told to stop after a reload: not restarted
        self.respawn_on_exit: set[int] = set()  # pids told to stop and to be started again (timer process)
        self.pending_retire: list[dict[str, Any]] = []  # old generations waiting for the new one
        self.generation = 0
        self.socket_changes: list[tuple[str, Any]] = []  # from the API thread, for the main loop
        self.lock = threading.Lock()
        self.bound: set[socket.socket] = set()  # every listening socket this process holds
        self.fork_guard = SharedLock()  # API requests hold it shared while LMDB is open
        self.sockets: list[Any] = []

    # -- set-up ------------------------------------------------------------------

    def prepare(self) -> None:
        # patient data on disk: files 0600, directories 0700 (LMDB, studies, run files)
        os.umask(0o077)
        os.makedirs(self.data_dir, exist_ok=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(self.metrics_dir, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir

        from .api import ensure_admin
        from .store import Store

        store = Store(self.data_dir, self.cfg.lmdb_map_size_mb, sync=self.cfg.fsync)
        try:
            with store.write() as txn:
                apply_env_endpoint(store, txn, self.cfg.endpoint)
                settings = store.endpoints(txn)
            generated = ensure_admin(store, self.cfg.admin_token or None)
        finally:
            store.close()
        if generated:
            # printed once, on the first start without EBW_ADMIN_TOKEN: only its hash is kept
            print(f"EBW: API administrator token (shown once, keep it): {generated}", file=sys.stderr, flush=True)
        self.endpoints = {ep: EndpointConfig.from_dict(d) for ep, d in settings.items()}

        from .worker import EndpointSockets

        for ep, ecfg in self.endpoints.items():
            prefix = "EBW_" if ep == DEFAULT_ENDPOINT else f"endpoint {ep}: "
            hl7 = bind(ecfg.hl7_host, ecfg.hl7_port, prefix + "HL7_PORT")
            dicom = bind(ecfg.dicom_host, ecfg.dicom_port, prefix + "DICOM_PORT")
            self.sockets.append(EndpointSockets(ep, hl7, dicom))
            self.bound.update((hl7, dicom))

        from .admin import HttpServer

        try:
            from .api import Api

            self.api = Api(self.cfg, self.reconfigure, self.fork_guard)
            https = None
            if self.cfg.http_tls_cert:
                from .tls import server_context

                https = server_context(self.cfg.http_tls_cert, self.cfg.http_tls_key)
            self.http = HttpServer(self.cfg.http_host, self.cfg.http_port, self.health, self.api, https)
        except OSError as exc:
            reason = "port already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(
                "EBW_HTTP_PORT",
                str(self.cfg.http_port),
                f"cannot listen on {self.cfg.http_host}:{self.cfg.http_port}: {reason}",
            ) from None

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        self.prepare()
        from . import metrics

        self.metrics = metrics
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for i in range(self.cfg.workers):
            self.spawn(i)
        self.spawn(TIMERS)
        self.http.start()
        log.info(
            "EBW serving: %d workers, HL7 %s, DICOM %s, HTTP %s:%d",
            self.cfg.workers,
            ", ".join(f"{e.ep}:{e.hl7.getsockname()[1]}" for e in self.sockets),
            ", ".join(f"{e.ep}:{e.dicom.getsockname()[1]}" for e in self.sockets),
            self.cfg.http_host,
            self.cfg.http_port,
        )
        while True:
            self._sleep(1.0)
            while self.signals:
                sig = self.signals.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    self.stopping = True
                elif sig == signal.SIGHUP:
                    self.reload()
            self.reap()
            if self.stopping or self.halt_code is not None:
                break
            self.apply_socket_changes()
            self.retire_when_ready()
            self.check_heartbeats()
            self.respawn()
        return self.shutdown()

    def _on_signal(self, sig: int, frame: Any) -> None:
        self.signals.append(sig)
        try:
            os.write(self.wake_w, b".")
        except OSError:
            pass

    def _sleep(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self.wake_r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self.wake_r, 1024):
                    pass
            except OSError:
                pass

    # -- SIGHUP ------------------------------------------------------------------

    def reload(self) -> None:
        """Read the configuration again (the environment, then ``EBW_ENV_FILE``).

        A bad value is logged (variable and rule) and nothing changes.  Endpoint
        settings are written to LMDB: every worker and the timer process pick them up
        within a second, with no connection dropped.  Listening addresses cannot move
        without a restart (logged, kept).  Other global settings (worker count, MLLP
        limits, journal retention, log level ...) take new workers: each old worker
        is replaced by a new one first, then told to finish what it has in flight and
        exit, so the listening sockets never stop accepting."""
        from . import config

        try:
            new = config.load()
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", exc)
            return
        old_ep, new_ep = self.cfg.endpoint, new.endpoint
        fixed = {"hl7_host", "hl7_port", "dicom_host", "dicom_port"}
        moved = sorted(f for f in fixed if getattr(old_ep, f) != getattr(new_ep, f))
        apply = None
        if moved:
            try:
                apply = self.reconfigure(DEFAULT_ENDPOINT, old_ep, new_ep)
            except Exception as exc:  # noqa: BLE001 - ApiError: a port in use
                log.error("SIGHUP: %s not changed: %s", ", ".join(moved), exc)
                new_ep = dataclasses.replace(new_ep, **{f: getattr(old_ep, f) for f in moved})
        fixed_global = {"data_dir", "http_host", "http_port", "lmdb_map_size_mb", "fsync", "env_file"}
        kept = sorted(f for f in fixed_global if getattr(self.cfg, f) != getattr(new, f))
        if kept:
            log.warning("SIGHUP: %s change at the next restart", ", ".join(kept))
        new = dataclasses.replace(new, endpoint=new_ep, **{f: getattr(self.cfg, f) for f in kept})
        store = self.api._store()  # this process's one environment
        try:
            with store.write() as txn:
                changed = apply_env_endpoint(store, txn, new_ep)
            if new.admin_token and new.admin_token != self.cfg.admin_token:
                from .api import ensure_admin

                ensure_admin(store, new.admin_token)
                log.info("SIGHUP: the administrator token was replaced")
        except BaseException:
            if apply is not None:
                apply(False)
            raise
        if apply is not None:
            apply(True)
        global_changed = dataclasses.replace(new, endpoint=old_ep, admin_token=self.cfg.admin_token) != self.cfg
        self.cfg = new
        log.info(
            "SIGHUP: configuration reloaded (endpoint settings %s, workers %s)",
            "changed" if changed else "unchanged",
            "replaced" if global_changed else "kept",
        )
        if global_changed:
            from . import log as ebw_log

            ebw_log.setup(new.log_level, new.log_format)
            self.replace_workers(timers=True)

    # -- live endpoint changes (API, SIGHUP) --------------------------------------------

    def reconfigure(self, ep: str, old: EndpointConfig | None, new: EndpointConfig | None) -> Any:
        """Bind what an endpoint change needs (any thread).  Raises ApiError 409 for a port
        in use.  Returns ``apply(ok)``: True queues the change for the main loop, which
        starts a new generation of workers on the new set of sockets and retires the old
        one once the new is ready; False closes what was bound here."""
        from .api import ApiError
        from .worker import EndpointSockets

        current = next((s for s in self.sockets if s.ep == ep), None)
        bound: list[socket.socket] = []
        socks = None
        if new is not None:
            try:
                hl7 = dicom = None
                if current and old and (old.hl7_host, old.hl7_port) == (new.hl7_host, new.hl7_port):
                    hl7 = current.hl7
                else:
                    hl7 = self._bind(new.hl7_host, new.hl7_port, "hl7_port")
                    bound.append(hl7)
                if current and old and (old.dicom_host, old.dicom_port) == (new.dicom_host, new.dicom_port):
                    dicom = current.dicom
                else:
                    dicom = self._bind(new.dicom_host, new.dicom_port, "dicom_port")
                    bound.append(dicom)
            except ConfigError as exc:
                for sock in bound:
                    self._close(sock)
                raise ApiError(409, f"{exc.variable}: {exc.rule}", field=exc.variable) from None
            socks = EndpointSockets(ep, hl7, dicom)

        def apply(ok: bool) -> None:
            if not ok:
                for sock in bound:
                    self._close(sock)
                return
            with self.lock:
                self.socket_changes.append((ep, socks))
            self._wake()

        return apply

    def apply_socket_changes(self) -> None:
        with self.lock:
            changes, self.socket_changes = self.socket_changes, []
        if not changes:
            return
        before = {id(x): x for s in self.sockets for x in (s.hl7, s.dicom)}
        for ep, socks in changes:
            self.sockets = [s for s in self.sockets if s.ep != ep]
            if socks is not None:
                self.sockets.append(socks)
        after = {id(x) for s in self.sockets for x in (s.hl7, s.dicom)}
        log.info("listeners changed (%s): starting new workers", ", ".join(sorted({ep for ep, _s in changes})))
        for sid, sock in before.items():
            if sid not in after:  # the old workers keep their own copies until they exit
                self._close(sock)
        self.replace_workers()

    def _bind(self, host: str, port: int, variable: str) -> socket.socket:
        sock = bind(host, port, variable)
        with self.lock:
            self.bound.add(sock)
        return sock

    def _close(self, sock: socket.socket) -> None:
        with self.lock:
            self.bound.discard(sock)
        sock.close()

    def replace_workers(self, timers: bool = False) -> None:
        """A new generation of workers with the current configuration and sockets; the
        old workers are told to finish what they have in flight and exit once the new
        generation is ready (``retire_when_ready``), so nothing is refused meanwhile.
        ``timers``: the timer process is restarted too (after the old one has exited:
        never two at once)."""
        old = [pid for pid, info in self.workers.items() if info["index"] != TIMERS and pid not in self.retiring]
        self.generation += 1
        for index in range(self.cfg.workers):
            self.spawn(index)
        self.pending_retire.append({"pids": old, "gen": self.generation, "since": time.monotonic()})
        if timers:
            for pid, info in list(self.workers.items()):
                if info["index"] == TIMERS and pid not in self.retiring:
                    self.respawn_on_exit.add(pid)
                    self._kill(pid, signal.SIGTERM)

    def retire_when_ready(self) -> None:
        for entry in list(self.pending_retire):
            new = [p for p, i in self.workers.items() if i.get("gen") == entry["gen"] and i["index"] != TIMERS]
            ready = len(new) >= self.cfg.workers and all(
                os.path.exists(os.path.join(self.run_dir, f"ready.{p}")) for p in new
            )
            if ready or time.monotonic() - entry["since"] > RETIRE_TIMEOUT:
                for pid in entry["pids"]:
                    if pid in self.workers:
                        self.retiring.add(pid)
                        self._kill(pid, signal.SIGTERM)
                self.pending_retire.remove(entry)

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b".")
        except OSError:
            pass

    # -- workers -------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        # never fork while an API request has the LMDB environment open in this process:
        # the child could not open it again (py-lmdb refuses a second open per process)
        with self.fork_guard.exclusive(timeout=3600):
            pid = os.fork()
        if pid:
            self.workers[pid] = {"index": index, "started": time.monotonic(), "gen": self.generation}
            return
        # child
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.wake_r)
        os.close(self.wake_w)
        try:
            self.http.httpd.socket.close()
        except OSError:
            pass
        self.api.forget_after_fork()
        # listening sockets this child does not serve (removed endpoints, sockets bound for
        # a change not applied yet): an open copy would keep the port accepting forever
        mine = set() if index == TIMERS else {id(x) for s in self.sockets for x in (s.hl7, s.dicom)}
        with self.lock:
            others = [sock for sock in self.bound if id(sock) not in mine]
        for sock in others:
            sock.close()
        if index == TIMERS:
            from .timers import main as timers_main

            timers_main(self.cfg, self.run_dir)
        from .worker import main

        main(self.cfg, self.sockets, self.run_dir, index)

    def reap(self) -> None:
        from .worker import EXIT_BOOT_ERROR

        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            info = self.workers.pop(pid, None)
            self._forget(pid)
            if info is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            name = "timer process" if info["index"] == TIMERS else f"worker {info['index']}"
            if code == EXIT_BOOT_ERROR:
                log.error("%s (pid %d) could not boot; stopping", name, pid)
                self.halt_code = EXIT_BOOT_ERROR
            elif pid in self.retiring:
                self.retiring.discard(pid)
                log.info("%s (pid %d) replaced: %s", name, pid, _exit_reason(status))
            elif pid in self.respawn_on_exit:
                self.respawn_on_exit.discard(pid)
                log.info("%s (pid %d) replaced: %s", name, pid, _exit_reason(status))
                if not self.stopping:
                    self.spawn(info["index"])
            elif not self.stopping:
                log.warning("%s (pid %d) exited with %s; restarting", name, pid, _exit_reason(status))
                self.metrics.worker_restarts.inc()
                self.pending_restart.append(info["index"])

    def _forget(self, pid: int) -> None:
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
        except OSError:
            pass
        for name in (f"heartbeat.{pid}", f"ready.{pid}", f"timers-ready.{pid}"):
            try:
                os.unlink(os.path.join(self.run_dir, name))
            except FileNotFoundError:
                pass

    def respawn(self) -> None:
        pending = self.pending_restart
        if not pending:
            return
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60]
        if len(self.restarts) >= 10:
            return  # backoff: at most 10 restarts a minute
        self.pending_restart = []
        for index in pending:
            self.restarts.append(now)
            self.spawn(index)

    def check_heartbeats(self) -> None:
        now = time.time()
        for pid, info in list(self.workers.items()):
            path = os.path.join(self.run_dir, f"heartbeat.{pid}")
            try:
                age = now - os.stat(path).st_mtime
            except FileNotFoundError:
                age = time.monotonic() - info["started"]
            if age > HEARTBEAT_TIMEOUT + 5 and info.get("aborted"):
                self._kill(pid, signal.SIGKILL)
            elif age > HEARTBEAT_TIMEOUT and not info.get("aborted"):
                log.error("worker %d (pid %d) missed its heartbeat for %.0f s; aborting it", info["index"], pid, age)
                info["aborted"] = True
                self._kill(pid, signal.SIGABRT)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def health(self) -> tuple[bool, dict[str, Any]]:
        ready = timers = 0
        for pid, info in list(self.workers.items()):
            if pid in self.retiring:
                continue
            if info["index"] == TIMERS:
                timers += os.path.exists(os.path.join(self.run_dir, f"timers-ready.{pid}"))
            else:
                ready += os.path.exists(os.path.join(self.run_dir, f"ready.{pid}"))
        ok = not self.stopping and ready >= self.cfg.workers and timers >= 1
        return ok, {"workers": self.cfg.workers, "ready": ready, "timers": bool(timers)}

    def shutdown(self) -> int:
        log.info("stopping %d workers", len(self.workers))
        for pid in list(self.workers):
            self._kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACEFUL_TIMEOUT
        while self.workers and time.monotonic() < deadline:
            self._sleep(0.1)
            self.reap()
        for pid in list(self.workers):
            log.warning("worker pid %d did not stop in time; killing it", pid)
            self._kill(pid, signal.SIGKILL)
        while self.workers:
            self._sleep(0.1)
            self.reap()
        self.http.stop()
        for s in self.sockets:
            s.hl7.close()
            s.dicom.close()
        return self.halt_code or 0


def serve(cfg: Config) -> int:
    sup = Supervisor(cfg)
    try:
        return sup.run()
    except ConfigError as exc:
        print(f"ebw: configuration error: {exc}", file=sys.stderr)
        return 2
