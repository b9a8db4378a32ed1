"""The write path's building blocks: accession issuance and LMDB commit batching.

Run: ``pytest bench/bench_store.py --benchmark-only`` (``extra_info`` carries the
per-second figures).  A real LMDB in a temporary directory; ``sync=True`` runs pay
one synced commit each, as an acknowledged HL7 message does.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import pytest

from ebw import accession, config
from ebw.store import Store

CFG = config.load({}).endpoint


@pytest.fixture
def store():
    with tempfile.TemporaryDirectory() as d:
        s = Store(d, 1024, sync=True)
        yield s
        s.close()


def test_accession_issue_in_one_transaction(benchmark, store) -> None:
    """Numbers issued inside an open write transaction (what an admit or a rotation costs)."""
    txn_holder = {}

    def setup():
        txn_holder["txn"] = store.env.begin(write=True)
        return (), {}

    def issue_100():
        txn = txn_holder["txn"]
        for i in range(100):
            accession.issue(store, txn, CFG, "default", f"E{i}", time.time())
        txn.abort()

    benchmark.pedantic(issue_100, setup=setup, rounds=30)
    benchmark.extra_info["numbers_per_s"] = round(100 / benchmark.stats.stats.mean)


@pytest.mark.parametrize("batch", [1, 16, 100])
def test_synced_commit_batching(benchmark, store, batch) -> None:
    """One synced commit carrying ``batch`` 1 kB records: records/s as the batch grows
    (group commit is what makes durable ADT throughput possible)."""
    value = os.urandom(1024)
    counter = {"n": 0}

    def commit():
        with store.write() as txn:
            for _ in range(batch):
                counter["n"] += 1
                txn.put(counter["n"].to_bytes(8, "big"), value, db=store.db["journal"], append=True)

    benchmark.pedantic(commit, rounds=max(20, 400 // batch), warmup_rounds=2)
    benchmark.extra_info["records_per_s"] = round(batch / benchmark.stats.stats.mean)
    benchmark.extra_info["commits_per_s"] = round(1 / benchmark.stats.stats.mean)


def test_rotation_pass(benchmark) -> None:
    """Rotating 1,000 due encounters (the timer process's batch) in one synced commit."""
    from ebw import encounters
    from ebw.hl7.adt import parse
    from tests.data.make_corpus import msg

    with tempfile.TemporaryDirectory() as d:
        store = Store(d, 1024, sync=True)
        now = time.time()
        with store.write() as txn:
            for i in range(1000):
                encounters.apply(
                    store, txn, "default", CFG, parse(msg("A01", f"R{i}", f"P{i}", f"V{i}", cls="I").encode()), now
                )
        state = {"t": now}

        def rotate():
            state["t"] += 300
            with store.write() as txn:
                return accession.rotate_due(
                    store, txn, dataclasses.replace(CFG, timezone="UTC"), "default", state["t"], 1000
                )

        n = benchmark.pedantic(rotate, rounds=5)
        assert n == 1000
        benchmark.extra_info["rotations_per_s"] = round(1000 / benchmark.stats.stats.mean)
        store.close()
