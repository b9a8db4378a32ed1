"""Worker memory with a large encounter index: RSS, PSS and private memory per process.

    python -m bench.bench_memory --encounters 1000000 --open 100000 --open 10000
    python -m bench.bench_memory --encounters 100000 --open 10000 --analyze
    python -m bench.bench_memory --analyze-only DIR     # tracemalloc over a kept data dir

1. Build: a data directory with N encounters, M of them open on the default
   endpoint, through the real write path: ``bench.feed`` messages ->
   ``ebw.hl7.adt.parse`` -> the job ``ebw.ingest`` makes of each message
   (``encounters.apply`` + ``Store.journal_append``), run as ``ebw.committer``
   runs a batch: ``--batch`` jobs in one LMDB write transaction,
   the Store opened ``sync=False``; the change feed is pruned per commit as the
   workers do.  Admissions (A01/A04) arrive one per new encounter; once M are
   open, each admission is followed by the discharge (A03) of a random open
   encounter, so the hospital stays at M open encounters.  Discharges carry a
   later event time than any admission (else the ordering rule would ignore
   them as stale).
2. Measure: a real ``ebw serve`` on that directory (``--workers``, free ports).
   For every process (supervisor, timers, workers) RSS, PSS, private and
   anonymous memory (``/proc/<pid>/smaps_rollup``), the part of RSS/PSS that is
   the LMDB map (``data.mdb`` in ``/proc/<pid>/smaps``), the peak RSS (VmHWM)
   and CPU time, at: startup (once the workers' in-memory worklists are
   loaded: RSS and CPU flat), after a C-FIND returning every open item
   (DCMTK ``/usr/bin/findscu``), after a one-patient C-FIND.
3. ``--open`` repeated (descending): after measuring at the first M, more
   encounters are discharged until the next M is left, and it is measured again
   (one build serves several measurements).

``--analyze`` (or ``--analyze-only DIR``): in a separate process, build a
``WorklistIndex`` over the same directory, ``refresh()`` it under tracemalloc,
and count the bytes per item held by each of its structures.

The accession period is set to 1440 minutes and the timezone far from midnight
(``--timezone``), so the timer process does not rotate every open encounter
while memory is measured (see RESULTS.md).  Synthetic data only.  Writes JSON
to ``bench/results/memory-<N>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.feed import Feed
from bench.load import process_cpu, server_env

EP = "default"
MB = 1024 * 1024


def settings_env(data_dir: str, timezone: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The EBW_* settings the build and the server share (endpoint settings)."""
    return {
        "EBW_DATA_DIR": data_dir,
        "EBW_TIMEZONE": timezone,
        "EBW_ACCESSION_PERIOD_MINUTES": "1440",
        "EBW_LMDB_MAP_SIZE_MB": "16384",
        **(extra or {}),
    }


# ------------------------------------------------------------------------------ build


class Builder:
    """Applies synthetic ADT to a data directory through the real code path."""

    def __init__(self, data_dir: str, env: dict[str, str], batch: int, seed: int = 5) -> None:
        from ebw import config
        from ebw.ingest import mapping_for
        from ebw.store import Store

        self.cfg = config.load(env).endpoint
        self.mapping = mapping_for(self.cfg)
        self.store = Store(data_dir, int(env["EBW_LMDB_MAP_SIZE_MB"]), sync=False)
        self.batch = batch
        self.feed = Feed(seed=seed)
        self.rng = random.Random(seed + 1)
        self.open: list[Any] = []  # bench.feed.Encounter of every open encounter
        self.pending: list[bytes] = []
        self.messages = 0
        self.outcomes: dict[str, int] = {}
        self.apply_seconds = 0.0  # parse + apply + journal + commit (not message generation)
        self.n_discharge = 0

    def admit(self) -> None:
        e = self.feed.new_encounter()
        self.open.append(e)
        self._queue(self.feed.message("A04" if e.patient_class in ("E", "O") else "A01", e))

    def discharge_one(self, ts: bytes) -> None:
        i = self.rng.randrange(len(self.open))
        self.open[i], self.open[-1] = self.open[-1], self.open[i]
        e = self.open.pop()
        self.n_discharge += 1
        frame = self.feed.message("A03", e, control_id=f"D{self.n_discharge:010d}")
        old = frame.split(b"|", 7)[6][:14]  # MSH-7 without the offset: the message's timestamp
        self._queue(frame.replace(old, ts))

    def _queue(self, frame: bytes) -> None:
        self.pending.append(frame)
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        import lmdb

        from ebw.hl7.adt import parse
        from ebw.ingest import Hl7Endpoint

        t0 = time.perf_counter()
        # as ebw.ingest: parse (and pack, in _job) on the event loop; the jobs run in the
        # commit thread, as ebw.committer does: all in one write transaction
        endpoint = Hl7Endpoint(EP, lambda: self.cfg, self.store, None)  # type: ignore[arg-type]
        jobs = [endpoint._job(parse(f, self.mapping), self.cfg, f) for f in self.pending]
        store = self.store
        while True:
            try:
                with store.write() as txn:
                    results = [job(txn) for job in jobs]
                    store.prune_changes(txn)  # the workers' commit hook does this (bounded feed)
                break
            except lmdb.MapFullError:
                if not store.grow():
                    raise
        for applied in results:
            self.outcomes[applied.outcome] = self.outcomes.get(applied.outcome, 0) + 1
        self.messages += len(jobs)
        self.pending.clear()
        self.apply_seconds += time.perf_counter() - t0

    def counts(self) -> dict[str, int]:
        with self.store.read() as txn:
            return {
                "encounters": self.store.count_encounters(txn),
                "active": self.store.active_count(txn, EP),
            }

    def close(self) -> None:
        self.flush()
        self.store.close()


def build(b: Builder, n_encounters: int, n_open: int, label: str) -> dict[str, Any]:
    """Admit ``n_encounters`` encounters, keeping ``n_open`` open (discharging one per admission
    beyond that)."""
    ts = b"20261129120000"
    t0 = time.perf_counter()
    a0, m0 = b.apply_seconds, b.messages
    last = t0
    for i in range(n_encounters):
        b.admit()
        if len(b.open) > n_open:
            b.discharge_one(ts)
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            el = last - t0
            print(
                f"  {label}: {i + 1:,}/{n_encounters:,} encounters, {b.messages:,} messages applied, "
                f"{len(b.open):,} open, {el:.0f} s ({(i + 1) / el:,.0f} encounters/s)",
                file=sys.stderr,
                flush=True,
            )
    b.flush()
    return _build_stats(b, t0, a0, m0, n_encounters)


def close_down(b: Builder, n_open: int, label: str) -> dict[str, Any]:
    """Discharge random open encounters until ``n_open`` are left."""
    ts = b"20261129130000"
    t0 = time.perf_counter()
    a0, m0 = b.apply_seconds, b.messages
    n = len(b.open) - n_open
    for _ in range(n):
        b.discharge_one(ts)
    b.flush()
    print(f"  {label}: discharged {n:,}, {len(b.open):,} open", file=sys.stderr, flush=True)
    return _build_stats(b, t0, a0, m0, 0)


def _build_stats(b: Builder, t0: float, a0: float, m0: int, n_enc: int) -> dict[str, Any]:
    wall = time.perf_counter() - t0
    msgs = b.messages - m0
    apply_s = b.apply_seconds - a0
    out = {
        "seconds": round(wall, 1),
        "messages": msgs,
        "messages_per_s": round(msgs / wall, 1) if wall else None,
        "apply_seconds": round(apply_s, 1),
        "apply_messages_per_s": round(msgs / apply_s, 1) if apply_s else None,
        "outcomes": dict(b.outcomes),
        **b.counts(),
    }
    if n_enc:
        out["encounters_per_s"] = round(n_enc / wall, 1)
    return out


# ------------------------------------------------------------------------------ processes


def _kb_fields(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def _lmdb_share(pid: int) -> tuple[int, int]:
    """(Rss, Pss) kB of the data.mdb mapping(s) of a process."""
    rss = pss = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):
                    inside = line.rstrip().endswith("/data.mdb")
                elif inside and head == "Rss:":
                    rss += int(line.split()[1])
                elif inside and head == "Pss:":
                    pss += int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def memory(pid: int) -> dict[str, Any]:
    """Memory of one process, MiB."""
    roll = _kb_fields(f"/proc/{pid}/smaps_rollup")
    status = _kb_fields(f"/proc/{pid}/status")
    lmdb_rss, lmdb_pss = _lmdb_share(pid)
    mib = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return {
        "rss": mib(roll.get("Rss", 0)),
        "pss": mib(roll.get("Pss", 0)),
        "private": mib(roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)),
        "private_dirty": mib(roll.get("Private_Dirty", 0)),
        "anonymous": mib(roll.get("Anonymous", 0)),
        "rss_file": mib(status.get("RssFile", 0)),
        "lmdb_rss": mib(lmdb_rss),
        "lmdb_pss": mib(lmdb_pss),
        "peak_rss": mib(status.get("VmHWM", 0)),
        "cpu_s": round(process_cpu(pid), 2),
    }


class Server:
    """``ebw serve`` on an existing data directory (as bench.load.Server, which makes its own)."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        from bench.peers import free_port

        self.data_dir = env["EBW_DATA_DIR"]
        self.hl7_port, self.dicom_port, self.http_port = free_port(), free_port(), free_port()
        full = {**server_env(self.data_dir, self.hl7_port, self.dicom_port, self.http_port, workers, "on"), **env}
        self.workers = workers
        self.log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")), "ebw-serve.log")
        self.log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebw", "serve"], env=full, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ebw serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                    if r.status == 200 and len(self.roles()) >= workers + 2:
                        self.healthy_after = time.monotonic() - self.started
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become healthy")

    def roles(self) -> dict[str, int]:
        """role -> pid: supervisor, timers, worker<i> (ready files of the run directory)."""
        run = os.path.join(self.data_dir, "run")
        out = {"supervisor": self.proc.pid}
        try:
            names = sorted(os.listdir(run))
        except OSError:
            return out
        workers = sorted(int(n.split(".")[1]) for n in names if n.startswith("ready."))
        for i, pid in enumerate(workers):
            out[f"worker{i}"] = pid
        timers = [int(n.split(".")[1]) for n in names if n.startswith("timers-ready.")]
        if timers:
            out["timers"] = timers[0]
        return out

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {role: memory(pid) for role, pid in self.roles().items()}

    def wait_settled(self, quiet_s: float = 4.0, timeout: float = 900.0) -> float:
        """Wait until every worker's RSS and CPU time stay flat for ``quiet_s`` (their
        worklists are loaded).  Returns the seconds since the server was started."""
        pids = [pid for role, pid in self.roles().items() if role.startswith("worker")]
        hist: list[list[tuple[float, float]]] = [[] for _ in pids]
        deadline = time.monotonic() + timeout
        step = 0.5
        need = int(quiet_s / step)
        while time.monotonic() < deadline:
            for h, pid in zip(hist, pids, strict=True):
                h.append((_kb_fields(f"/proc/{pid}/status").get("VmRSS", 0) / 1024, process_cpu(pid)))
            if all(len(h) > need for h in hist):
                if all(
                    abs(h[-1][0] - h[-1 - need][0]) < 0.5 and h[-1][1] - h[-1 - need][1] < 0.05 * quiet_s for h in hist
                ):
                    return time.monotonic() - self.started - quiet_s
            time.sleep(step)
        raise RuntimeError("worker memory did not settle")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


# ------------------------------------------------------------------------------ C-FIND


def findscu(port: int, today: str, patient_id: str = "") -> dict[str, Any]:
    """A worklist query with DCMTK findscu (C++; -v prints each response, counted here as it
    streams).  The keys a modality typically sends."""
    keys = [
        "PatientName",
        f"PatientID={patient_id}",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "AdmissionID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "(0040,0100)[0].Modality",
        "(0040,0100)[0].ScheduledStationAETitle",
        f"(0040,0100)[0].ScheduledProcedureStepStartDate={'' if patient_id else today}",
        "(0040,0100)[0].ScheduledProcedureStepStartTime",
        "(0040,0100)[0].ScheduledProcedureStepDescription",
    ]
    cmd = ["/usr/bin/findscu", "-v", "-W", "-aet", "BENCHSCU", "-aec", "EBW", "-to", "600", "127.0.0.1", str(port)]
    for k in keys:
        cmd += ["-k", k]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    n = 0
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Find Response" in line and "Pending" in line:
            n += 1
        tail = (tail + [line])[-5:]
    rc = proc.wait()
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"findscu failed ({rc}): {''.join(tail)}")
    return {"matches": n, "seconds": round(elapsed, 2)}


# ------------------------------------------------------------------------------ analysis


def analyze(data_dir: str, map_mb: int = 16384, cold: bool = True) -> dict[str, Any]:
    """In this process: a WorklistIndex over ``data_dir``, loaded under tracemalloc; bytes
    per item by structure and by allocating line.  ``cold``: first drop data.mdb from the
    page cache (fsync + POSIX_FADV_DONTNEED; LMDB maps with MADV_RANDOM), so the LMDB part
    of RSS after the load is the pages the load really read, without the kernel's
    fault-around of neighbouring cached pages."""
    import gc
    import sys as _sys
    import tracemalloc

    from ebw import config
    from ebw.dicom.find import WorklistIndex
    from ebw.store import Store

    def rss() -> float:
        return _kb_fields("/proc/self/status").get("VmRSS", 0) / 1024

    def anon() -> float:
        return _kb_fields("/proc/self/smaps_rollup").get("Anonymous", 0) / 1024

    if cold:
        fd = os.open(os.path.join(data_dir, "lmdb", "data.mdb"), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    store = Store(data_dir, map_mb, sync=False)
    with store.read() as txn:
        settings = store.endpoints(txn)
    cfg = config.EndpointConfig.from_dict(settings[EP]) if EP in settings else config.load({}).endpoint
    gc.collect()
    rss0, anon0 = rss(), anon()
    index = WorklistIndex(store, EP, lambda: cfg)
    t0 = time.perf_counter()
    index.refresh()
    load_s = time.perf_counter() - t0
    gc.collect()
    rss1, anon1 = rss(), anon()
    lmdb_rss, lmdb_pss = _lmdb_share(os.getpid())
    n = len(index._raws)
    n_items = len(index._items)

    # bytes held, each object counted once, by structure
    seen: set[int] = set()

    def size(o: Any) -> int:
        if id(o) in seen:
            return 0
        seen.add(id(o))
        s = _sys.getsizeof(o)
        if isinstance(o, dict):
            s += sum(size(k) + size(v) for k, v in o.items())
        elif isinstance(o, (list, tuple, set, frozenset)):
            s += sum(size(x) for x in o)
        return s

    # things shared with the rest of the process (config values, interned keys) first
    size(cfg.__dict__ if hasattr(cfg, "__dict__") else cfg)
    one = next(iter(index._items.values()), {})
    for k in one:
        size(k)
    breakdown = {
        "_raws (stored records, bytes)": size(index._raws),
        "_items (rendered items, dicts)": size(index._items),
        "_by_pid (PatientID -> set)": size(index._by_pid),
        "_list": size(index._list),
    }
    raw_lens = [len(v) for v in index._raws.values()]
    item_dict = [_sys.getsizeof(v) for v in index._items.values()]
    out: dict[str, Any] = {
        "open_items": n,
        "listed_items": n_items,
        "load_seconds": round(load_s, 2),
        "rss_mib_before": round(rss0, 1),
        "rss_mib_after": round(rss1, 1),
        "anon_mib_growth": round(anon1 - anon0, 1),
        "anon_bytes_per_item": round((anon1 - anon0) * MB / max(n, 1)),
        "page_cache": "cold" if cold else "warm",
        "lmdb_rss_mib": round(lmdb_rss / 1024, 1),
        "lmdb_pages_per_item": round(lmdb_rss / 4 / max(n, 1), 2),
        "structures_mib": {k: round(v / MB, 1) for k, v in breakdown.items()},
        "structures_bytes_per_item": {k: round(v / max(n, 1)) for k, v in breakdown.items()},
        "stored_record_bytes_mean": round(sum(raw_lens) / max(n, 1)),
        "item_dict_bytes_mean": round(sum(item_dict) / max(n_items, 1)),
        "item_keys": len(one),
    }
    # what one record holds (JSON bytes per top-level field), and what 24 rotations add
    if index._raws:
        from ebw import store as _store

        pack = getattr(_store, "pack_record", _store.dumps)  # as the enc db keeps a record
        raw = next(iter(index._raws.values()))
        rec = _store.loads(raw)
        out["record_format"] = "pickle" if bytes(raw[:1]) == b"\x80" else "json"
        out["record_fields_bytes"] = {k: len(pack(v)) for k, v in rec.items()}
        hist = rec.get("accession_history") or []
        if hist:
            acc, ts = hist[-1]
            full = dict(rec, accession_history=[[f"{acc[:-3]}{i:03d}", ts + 300.0 * i] for i in range(24)])
            out["record_bytes_with_24_rotations"] = len(pack(full))
        out["record_bytes"] = len(pack(rec))

    # tracemalloc: a second index, loaded while tracing (the first is kept, so nothing is freed)
    del index
    gc.collect()
    tracemalloc.start(1)
    index2 = WorklistIndex(store, EP, lambda: cfg)
    index2.refresh()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    out["tracemalloc_total_mib"] = round(total / MB, 1)
    out["tracemalloc_bytes_per_item"] = round(total / max(n, 1))
    out["tracemalloc_top"] = [
        {
            "where": f"{os.path.relpath(s.traceback[0].filename, os.getcwd())}:{s.traceback[0].lineno}",
            "mib": round(s.size / MB, 1),
            "bytes_per_item": round(s.size / max(n, 1)),
            "blocks": s.count,
        }
        for s in stats[:12]
    ]
    by_file: dict[str, int] = {}
    for s in stats:
        f = os.path.basename(s.traceback[0].filename)
        by_file[f] = by_file.get(f, 0) + s.size
    out["tracemalloc_by_file_bytes_per_item"] = {
        f: round(v / max(n, 1)) for f, v in sorted(by_file.items(), key=lambda kv: -kv[1])[:8]
    }
    del index2
    store.close()
    return out


def print_analysis(a: dict[str, Any]) -> None:
    print(f"\nWorklistIndex over {a['open_items']:,} open encounters ({a['listed_items']:,} listed), standalone:")
    print(
        f"  load {a['load_seconds']} s; RSS {a['rss_mib_before']} -> {a['rss_mib_after']} MiB; "
        f"anonymous +{a['anon_mib_growth']} MiB = {a['anon_bytes_per_item']:,} B/item"
    )
    for k, v in a["structures_mib"].items():
        print(f"  {k:34s} {v:8.1f} MiB  {a['structures_bytes_per_item'][k]:6,} B/item")
    print(f"  stored record: mean {a['stored_record_bytes_mean']} B; rendered item: {a['item_keys']} keys")
    if "record_fields_bytes" in a:
        print(f"  record fields ({a.get('record_format')}, bytes each): {a['record_fields_bytes']}")
    if "record_bytes_with_24_rotations" in a:
        print(f"  this record after 24 rotations: {a['record_bytes_with_24_rotations']} B (now {a['record_bytes']})")
    print(f"  tracemalloc: {a['tracemalloc_total_mib']} MiB = {a['tracemalloc_bytes_per_item']:,} B/item; top lines:")
    for t in a["tracemalloc_top"]:
        print(f"    {t['mib']:7.1f} MiB {t['bytes_per_item']:6,} B/item  {t['blocks']:>9,} blocks  {t['where']}")
    print(f"  tracemalloc by file (B/item): {a['tracemalloc_by_file_bytes_per_item']}")
    print(
        f"  LMDB map resident after the load ({a['page_cache']} page cache): {a['lmdb_rss_mib']} MiB "
        f"= {a['lmdb_pages_per_item']} pages/item"
    )


# ------------------------------------------------------------------------------ main


def measure(env: dict[str, str], workers: int, b: Builder, timezone: str) -> dict[str, Any]:
    server = Server(env, workers)
    try:
        result: dict[str, Any] = {"healthy_after_s": round(server.healthy_after, 1)}
        result["loaded_after_s"] = round(server.wait_settled(), 1)
        result["roles"] = server.roles()
        states: dict[str, Any] = {"startup": server.snapshot()}
        today = _dt.datetime.now(ZoneInfo(timezone)).strftime("%Y%m%d")
        full = findscu(server.dicom_port, today)
        time.sleep(1.0)
        states["after C-FIND all"] = server.snapshot()
        result["cfind_all"] = full
        pid = b.open[len(b.open) // 2].mrn if b.open else "NONE"
        one = findscu(server.dicom_port, today, patient_id=pid)
        time.sleep(1.0)
        states["after C-FIND one patient"] = server.snapshot()
        result["cfind_one"] = one
        result["states"] = states
        return result
    finally:
        server.stop()


def print_states(title: str, m: dict[str, Any]) -> None:
    print(f"\n{title}")
    print(
        f"  healthy after {m['healthy_after_s']} s, worklists loaded after {m['loaded_after_s']} s; "
        f"C-FIND all: {m['cfind_all']['matches']:,} responses in {m['cfind_all']['seconds']} s; "
        f"one patient: {m['cfind_one']['matches']} in {m['cfind_one']['seconds']} s"
    )
    cols = ["rss", "pss", "private", "anonymous", "lmdb_rss", "lmdb_pss", "peak_rss", "cpu_s"]
    print(f"  {'state':26s} {'process':10s} " + " ".join(f"{c:>9s}" for c in cols) + "   (MiB)")
    for state, procs in m["states"].items():
        for role in sorted(procs, key=lambda r: (not r.startswith("worker"), r)):
            row = procs[role]
            print(f"  {state:26s} {role:10s} " + " ".join(f"{row[c]:>9}" for c in cols))


def _commit() -> str:
    """The commit the measured code is (a checkout's HEAD; a ``COMMIT`` file in an exported copy)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    try:
        return Path("COMMIT").read_text().strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--encounters", type=int, default=100_000)
    p.add_argument("--open", type=int, action="append", help="open encounters (repeatable, descending)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000, help="messages per LMDB write transaction")
    p.add_argument("--timezone", default="America/Los_Angeles", help="EBW_TIMEZONE (keep local midnight away)")
    p.add_argument("--dir", help="work directory (default: a new temp dir); data in DIR/data")
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--analyze", action="store_true", help="tracemalloc breakdown at each open count")
    p.add_argument("--analyze-only", metavar="DATA_DIR", help="only the breakdown, over an existing data dir")
    p.add_argument("--warm", action="store_true", help="analysis: keep data.mdb in the page cache")
    p.add_argument("--json", help="default bench/results/memory-<encounters>.json")
    args = p.parse_args(argv)

    if args.analyze_only:
        a = analyze(args.analyze_only, cold=not args.warm)
        print_analysis(a)
        print(json.dumps(a), file=sys.stderr)
        return 0

    opens = sorted(args.open or [10_000], reverse=True)
    work = args.dir or tempfile.mkdtemp(prefix="ebw-mem-")
    data_dir = os.path.join(work, "data")
    env = settings_env(data_dir, args.timezone)
    result: dict[str, Any] = {
        "encounters": args.encounters,
        "workers": args.workers,
        "batch": args.batch,
        "commit": _commit(),
        "env": {k: v for k, v in env.items() if k != "EBW_DATA_DIR"},
        "runs": [],
    }
    print(f"data directory {data_dir}", file=sys.stderr)
    b = Builder(data_dir, env, args.batch)
    try:
        for i, n_open in enumerate(opens):
            label = f"{args.encounters:,} encounters / {n_open:,} open"
            if i == 0:
                print(f"building {label}", file=sys.stderr, flush=True)
                stats = build(b, args.encounters, n_open, label)
            else:
                print(f"closing down to {label}", file=sys.stderr, flush=True)
                stats = close_down(b, n_open, label)
            b.store.close()  # ebw serve opens the environment itself (one open per process)
            size = os.path.getsize(os.path.join(data_dir, "lmdb", "data.mdb"))
            stats["data_mdb_mib"] = round(size / MB, 1)
            print(f"  build: {json.dumps(stats)}", file=sys.stderr, flush=True)
            run: dict[str, Any] = {"open": n_open, "build": stats}
            run["measure"] = measure(env, args.workers, b, args.timezone)
            print_states(f"{label} (data.mdb {stats['data_mdb_mib']:,} MiB)", run["measure"])
            if args.analyze:
                # cold page cache only at the last measurement: dropping it would change what the
                # next server run finds cached
                warm = ["--warm"] if i + 1 < len(opens) else []
                out = subprocess.run(
                    [sys.executable, "-m", "bench.bench_memory", "--analyze-only", data_dir, *warm],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(out.stdout)
                run["analysis"] = json.loads(out.stderr.strip().splitlines()[-1])
            result["runs"].append(run)
            if i + 1 < len(opens):
                from ebw.store import Store

                b.store = Store(data_dir, int(env["EBW_LMDB_MAP_SIZE_MB"]), sync=False)
    finally:
        try:
            b.store.close()
        except Exception:  # noqa: BLE001 - already closed
            pass
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    path = Path(args.json or f"bench/results/memory-{args.encounters}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
