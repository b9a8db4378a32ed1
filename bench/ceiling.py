"""What the store path allows with no network at all (``ebw bench ceiling``, ``python -m bench.ceiling``).

The server's own per-message work -- the ADT reader, the apply step (lifecycle
rules, encounter record, open index, accession numbers, change feed, journal) and
the LMDB commit -- run in P processes on one environment, as P workers would, each
committing batches of B messages as fast as it can, with ``EBW_FSYNC`` on and off.
No MLLP, no ACK, no event loop, no worklist refresh, no load generator: what is left
is an upper bound on what any front end could reach with this store on this machine.
With 16 connections and 2 workers, each commit of a worker holds about 8 messages.

Prints messages/s, the mean commit (begin to committed, synced with fsync on), the CPU
a message (user + system) and the journal entries stored (every message, or the run
did not do the work it claims).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
from typing import Any


def _worker(args: tuple[str, int, int, int, bool, bool, Any]) -> tuple[float, float, float, int]:
    data_dir, index, messages, batch, sync, parse_in_loop, barrier = args
    from bench.feed import Feed
    from ebw import config, ingest
    from ebw.hl7.reader import parse
    from ebw.store import Store

    ep_cfg = config.load({"EBW_DATA_DIR": data_dir}).endpoint
    mapping = ingest.mapping_for(ep_cfg)
    frames = [m for _, m in Feed(seed=1000 + index, prefix=f"P{index}").stream(messages)]
    changes = [None if parse_in_loop else parse(m, mapping) for m in frames]
    store = Store(data_dir, sync=sync)
    endpoint = ingest.Hl7Endpoint(ep_cfg.id, lambda: ep_cfg, store, None)  # type: ignore[arg-type]
    barrier.wait()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    commit_time = 0.0
    commits = 0
    for i in range(0, messages, batch):
        chunk = frames[i : i + batch]
        parsed = [parse(m, mapping) for m in chunk] if parse_in_loop else changes[i : i + batch]
        jobs = [endpoint._job(c, ep_cfg, m) for c, m in zip(parsed, chunk, strict=True)]
        c0 = time.perf_counter()
        with store.write() as txn:
            for job in jobs:
                job(txn)
        commit_time += time.perf_counter() - c0
        commits += 1
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    store.close()
    return elapsed, commit_time, cpu, commits


def run(processes: int, messages: int, batch: int, sync: bool, parse_in_loop: bool) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="ebw-ceiling-")
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Manager() as manager, ctx.Pool(processes) as pool:
            barrier = manager.Barrier(processes)
            out = pool.map(_worker, [(d, i, messages, batch, sync, parse_in_loop, barrier) for i in range(processes)])
        wall = max(o[0] for o in out)
        total = processes * messages
        from ebw.store import Store

        store = Store(d)
        with store.read() as txn:  # every message is in the journal: the work was done
            stored = txn.stat(store.db["journal"])["entries"]
        store.close()
        return {
            "processes": processes,
            "batch": batch,
            "fsync": "on" if sync else "off",
            "parse": parse_in_loop,
            "msg_per_s": round(total / wall),
            "commit_ms": round(sum(o[1] for o in out) / sum(o[3] for o in out) * 1e3, 2),
            "cpu_us_per_msg": round(sum(o[2] for o in out) / total * 1e6),
            "stored": stored,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ebw bench ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=10_000, help="messages per process")
    p.add_argument("-p", "--processes", type=int, action="append", help="repeatable; default 1 and 2")
    p.add_argument("-b", "--batch", type=int, action="append", help="messages per commit; default 8, 16, 64")
    p.add_argument("--no-parse", action="store_true", help="read the messages before the clock starts")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    cols = ["processes", "batch", "fsync", "msg_per_s", "commit_ms", "cpu_us_per_msg", "stored"]
    print("  ".join(f"{c:>14}" for c in cols))
    rows = []
    for sync in (True, False):
        for procs in args.processes or [1, 2]:
            for batch in args.batch or [8, 16, 64]:
                row = run(procs, args.messages, batch, sync, not args.no_parse)
                print("  ".join(f"{row[c]!s:>14}" for c in cols), flush=True)
                rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
