"""Group commit: a batch runs in one write transaction; a change that fails gets its own
error and leaves nothing behind, the others of its batch commit (real LMDB)."""

from __future__ import annotations

import asyncio

import pytest

from ebw.committer import Committer
from ebw.errors import StoreError
from ebw.store import Store


def _run(store: Store, jobs: list, inline: bool = False) -> list:
    async def main() -> list:
        committer = Committer(store, asyncio.get_running_loop(), inline=inline)
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


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
@pytest.mark.parametrize("bad", [[], [0], [3], [1, 5], list(range(8))])
def test_a_failing_change_fails_alone(tmp_path, bad, inline):
    store = Store(str(tmp_path), 16, sync=False)
    results = _run(store, [_put(store, i, i in bad) for i in range(8)], inline)
    for i, r in enumerate(results):
        if i in bad:
            assert isinstance(r, StoreError) and "apply failed" in str(r)
        else:
            assert r == i
    with store.read() as txn:
        kept = sorted(int(bytes(k)[1:]) for k, _ in txn.cursor(db=store.db["meta"]) if bytes(k).startswith(b"k"))
    assert kept == [i for i in range(8) if i not in bad]
    store.close()


@pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])
def test_hooks_run_only_in_transactions_that_commit(tmp_path, inline):
    store = Store(str(tmp_path), 16, sync=False)
    runs: list[int] = []

    def hook(txn) -> None:
        runs.append(1)
        store.add_count(txn, "hook", 1)

    async def main() -> None:
        committer = Committer(store, asyncio.get_running_loop(), inline=inline)
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


def test_inline_commits_once_per_loop_turn(tmp_path):
    """EBW_FSYNC=off: what the connections submit in one loop turn shares one commit."""
    store = Store(str(tmp_path), 16, sync=False)
    commits: list[int] = []

    async def main() -> None:
        committer = Committer(store, asyncio.get_running_loop(), inline=True)
        committer.before_commit.append(lambda txn: commits.append(1))
        first = [committer.submit(_put(store, i)) for i in range(10)]  # one turn
        assert await asyncio.gather(*first) == list(range(10))
        assert await committer.submit(_put(store, 10)) == 10  # a later turn
        committer.submit(_put(store, 11))
        committer.stop()  # flushes what is pending

    asyncio.run(main())
    assert len(commits) == 3
    with store.read() as txn:
        assert txn.get(b"k11", db=store.db["meta"]) == b"v"
    store.close()


def test_thread_committer_applies_on_the_loop_thread(tmp_path):
    """EBW_FSYNC=on: the commit thread begins and commits, the changes run on the loop's
    thread (py-lmdb hands the GIL over on every get and put, slow from a second thread)."""
    import threading

    store = Store(str(tmp_path), 16, sync=False)
    ran_on: set[int] = set()

    def job(txn):
        ran_on.add(threading.get_ident())
        txn.put(b"k", b"v", db=store.db["meta"])
        return 1

    async def main() -> int:
        committer = Committer(store, asyncio.get_running_loop(), inline=False)
        try:
            return sum(await asyncio.gather(*(committer.submit(job) for _ in range(5))))
        finally:
            committer.stop()

    assert asyncio.run(main()) == 5
    assert ran_on == {threading.main_thread().ident}
    store.close()


def test_stop_on_the_loop_thread_commits_what_is_queued(tmp_path):
    """stop() called on the loop's thread with changes still queued runs them itself
    (the loop it would hand them to is the caller) instead of waiting forever."""
    store = Store(str(tmp_path), 16, sync=False)

    async def main() -> list:
        committer = Committer(store, asyncio.get_running_loop(), inline=False)
        futs = [committer.submit(_put(store, i)) for i in range(20)]
        committer.stop()  # blocks this loop: the queued changes must commit anyway
        return [f.result() if f.done() else await f for f in futs]

    assert asyncio.run(main()) == list(range(20))
    with store.read() as txn:
        assert all(txn.get(f"k{i}".encode(), db=store.db["meta"]) == b"v" for i in range(20))
    store.close()


def test_a_failing_hook_fails_its_batch_not_the_committer(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    calls = []

    def hook(txn) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug in a hook")

    async def main() -> tuple:
        committer = Committer(store, asyncio.get_running_loop(), inline=False)
        committer.before_commit.append(hook)
        try:
            first = await asyncio.gather(committer.submit(_put(store, 1)), return_exceptions=True)
            second = await committer.submit(_put(store, 2))
            return first[0], second
        finally:
            committer.stop()

    first, second = asyncio.run(main())
    assert isinstance(first, StoreError) and second == 2
    store.close()


def test_changes_queued_while_waiting_for_the_writer_lock_share_the_commit(tmp_path):
    """The batch is taken once LMDB's writer lock is held: what queued while another
    writer (another worker) committed joins it, rather than waiting for one more
    commit of its own."""
    import threading

    store = Store(str(tmp_path), 16, sync=False)
    commits: list[int] = []
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with store.env.begin(write=True):  # the writer lock, as another process holds it
            held.set()
            release.wait(10)

    async def main() -> list:
        committer = Committer(store, asyncio.get_running_loop(), inline=False)
        committer.before_commit.append(lambda txn: commits.append(1))
        blocker = threading.Thread(target=other_writer)
        blocker.start()
        held.wait(10)
        try:
            first = committer.submit(_put(store, 0))
            await asyncio.sleep(0.2)  # the commit thread took it and waits for the lock
            rest = [committer.submit(_put(store, i)) for i in range(1, 6)]
            release.set()
            return await asyncio.gather(first, *rest)
        finally:
            release.set()
            blocker.join()
            committer.stop()

    waited_before = _lock_wait_sum()
    assert asyncio.run(main()) == list(range(6))
    assert commits == [1]
    assert _lock_wait_sum() - waited_before >= 0.15  # ebw_store_commit_lock_wait_seconds saw the wait
    store.close()


def _lock_wait_sum() -> float:
    from ebw import metrics

    (family,) = metrics.store_commit_lock_wait.collect()
    return next(s.value for s in family.samples if s.name.endswith("_sum"))
