"""Group commit: a batch runs in one write transaction; a change that fails gets its own
error and leaves nothing behind, the others of its batch commit (real LMDB)."""

from __future__ import annotations

import asyncio

import pytest

from ebw.committer import Committer
from ebw.errors import StoreError
from ebw.store import Store


def _run(store: Store, jobs: list) -> list:
    async def main() -> list:
        committer = Committer(store, asyncio.get_running_loop())
        try:
            futs = [committer.submit(j) for j in jobs]  # queued at once: one batch
            return list(await asyncio.gather(*futs, return_exceptions=True))
        finally:
            committer.stop()

    return asyncio.run(main())


def _put(store: Store, i: int, fail: bool = False):
    def job(txn):
        txn.put(f"k{i}".encode(), b"v", db=store.db["meta"])
        if fail:
            raise ValueError("bad change")  # after a write: that write must not survive
        return i

    return job


@pytest.mark.parametrize("bad", [[], [0], [3], [1, 5], list(range(8))])
def test_a_failing_change_fails_alone(tmp_path, bad):
    store = Store(str(tmp_path), 16, sync=False)
    results = _run(store, [_put(store, i, i in bad) for i in range(8)])
    for i, r in enumerate(results):
        if i in bad:
            assert isinstance(r, StoreError) and "apply failed" in str(r)
        else:
            assert r == i
    with store.read() as txn:
        kept = sorted(int(bytes(k)[1:]) for k, _ in txn.cursor(db=store.db["meta"]) if bytes(k).startswith(b"k"))
    assert kept == [i for i in range(8) if i not in bad]
    store.close()


def test_hooks_run_only_in_transactions_that_commit(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    runs: list[int] = []

    def hook(txn) -> None:
        runs.append(1)
        store.add_count(txn, "hook", 1)

    async def main() -> None:
        committer = Committer(store, asyncio.get_running_loop())
        committer.before_commit.append(hook)
        try:
            jobs = [_put(store, i, i % 3 == 2) for i in range(12)]
            await asyncio.gather(*(committer.submit(j) for j in jobs), return_exceptions=True)
        finally:
            committer.stop()

    asyncio.run(main())
    with store.read() as txn:
        assert store.get_count(txn, "hook") == len(runs) >= 1  # never in a dropped transaction
    store.close()
