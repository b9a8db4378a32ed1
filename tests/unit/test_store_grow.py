"""A full LMDB map is grown, not turned into lost messages; other processes adopt the
new size (real LMDB, a real second process)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os

import pytest

from ebw.committer import Committer
from ebw.store import Store


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
def test_a_full_map_grows_and_every_change_commits(tmp_path, inline):
    store = Store(str(tmp_path), 1, sync=False)  # 1 MiB: full after a few hundred KiB
    size0 = store.env.info()["map_size"]

    async def main() -> list[int]:
        committer = Committer(store, asyncio.get_running_loop(), inline=inline)
        blob = os.urandom(4000)

        def job(i: int):
            def run(txn):
                txn.put(f"k{i:05d}".encode(), blob, db=store.db["meta"])
                return i

            return run

        try:
            return list(await asyncio.gather(*(committer.submit(job(i)) for i in range(2000))))
        finally:
            committer.stop()

    assert asyncio.run(main()) == list(range(2000))  # 8 MB of values: every one committed
    assert store.env.info()["map_size"] > size0
    with store.read() as txn:
        assert sum(1 for k, _ in txn.cursor(db=store.db["meta"]) if k.startswith(b"k")) == 2000
    store.close()


def _reader(path: str, ready, go, out) -> None:
    store = Store(path, 1, sync=False)
    with store.read() as txn:
        txn.get(b"schema", db=store.db["meta"])
    ready.set()
    go.wait(30)
    with store.read() as txn:  # the map was grown by the other process meanwhile
        out.put(sum(1 for _ in txn.cursor(db=store.db["meta"])))
    store.close()


def test_another_process_adopts_the_grown_map(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    Store(str(tmp_path), 1, sync=False).close()
    child = ctx.Process(target=_reader, args=(str(tmp_path), ready, go, out))
    child.start()
    assert ready.wait(30)
    store = Store(str(tmp_path), 1, sync=False)
    assert store.grow()
    with store.write() as txn:
        for i in range(500):
            txn.put(f"k{i}".encode(), os.urandom(4000), db=store.db["meta"])
    go.set()
    assert out.get(timeout=30) >= 500
    child.join(30)
    assert child.exitcode == 0
    store.close()
