"""A full disk: senders get AE (never AA for a change that was not stored), nothing
acknowledged is lost, and the server recovers by itself when space returns."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from bench.feed import Feed
from ebw.mllp import MllpClient
from tests.conftest import msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_gives_ae_and_recovers(server_factory, small_disk):
    server = server_factory(small_disk / "data", EBW_LMDB_MAP_SIZE_MB="16", EBW_WORKERS="1").start()
    filler = small_disk / "filler"
    # leave ~1 MB free
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - 1024 * 1024))
    feed = Feed(seed=31, prefix="D")
    acked, refused = [], []
    with MllpClient("127.0.0.1", server.hl7_port, timeout=30) as c:
        for _ in range(3000):
            e = feed.new_encounter()
            e.patient_class = "I"
            code = msa(c.send(feed.message("A01", e, control_id=f"F{e.mrn}")))[0]
            (acked if code == "AA" else refused).append(e.mrn)
            assert code in ("AA", "AE")
            if len(refused) >= 5:
                break
    assert refused, "the disk never filled"
    assert "not stored" in server.read_log() or "commit failed" in server.read_log()
    filler.unlink()  # space returns
    time.sleep(0.5)
    with MllpClient("127.0.0.1", server.hl7_port, timeout=30) as c:
        e = feed.new_encounter()
        e.patient_class = "I"
        assert msa(c.send(feed.message("A01", e, control_id=f"F{e.mrn}")))[0] == "AA"
        acked.append(e.mrn)
    listed = {str(i.PatientID) for i in cfind(server, mwl_query(PatientID="DM*"))}
    assert set(acked) <= listed and not set(refused) & listed
    print(f"disk full: {len(acked)} AA (all listed), {len(refused)} AE (none listed), AA again after space returned")
