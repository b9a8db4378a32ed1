"""What a synced LMDB commit costs by the pages it dirties (``python -m bench.sync_pages``).

A batch of B "messages", each doing R puts under random keys (scattered B-tree pages,
like an encounter record and its indexes) and S appends (sequential pages, like the
journal), committed with ``sync=True`` into an environment that already holds 100,000
random keys in 4 dbs.  Prints the median commit time and what it allows in messages/s.
The point: durable throughput is set by the scattered pages a batch dirties, not by the
number of messages in it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import lmdb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commits", type=int, default=200)
    p.add_argument("--batch", type=int, action="append", help="messages per commit (repeatable; default 1, 16, 64)")
    p.add_argument("--dir", help="where to put the environment (default: a temp dir on /tmp's filesystem)")
    args = p.parse_args()
    d = tempfile.mkdtemp(dir=args.dir)
    try:
        env = lmdb.open(d, map_size=4 << 30, sync=True, metasync=True, max_dbs=10)
        dbs = [env.open_db(f"d{i}".encode()) for i in range(8)]
        with env.begin(write=True) as t:
            for _ in range(100_000):
                k = os.urandom(12)
                for db in dbs[:4]:
                    t.put(k, b"x" * 300, db=db)
        seq = 0
        print(f"{'batch':>5} {'random':>6} {'seq':>4} {'p50 ms':>8} {'p90 ms':>8} {'msg/s':>9}")
        for batch in args.batch or (1, 16, 64):
            for random_puts, seq_puts in ((0, 1), (1, 1), (4, 3)):
                times = []
                for _ in range(args.commits):
                    t0 = time.perf_counter()
                    with env.begin(write=True) as t:
                        for _m in range(batch):
                            for db in dbs[:random_puts]:
                                t.put(os.urandom(12), b"y" * 300, db=db)
                            for j in range(seq_puts):
                                seq += 1
                                t.put(seq.to_bytes(8, "big"), b"z" * 200, db=dbs[4 + j], append=True)
                    times.append(time.perf_counter() - t0)
                times.sort()
                p50, p90 = times[len(times) // 2], times[int(len(times) * 0.9)]
                print(f"{batch:5d} {random_puts:6d} {seq_puts:4d} {p50 * 1e3:8.2f} {p90 * 1e3:8.2f} {batch / p50:9.0f}")
        env.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
