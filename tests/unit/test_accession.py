"""Accession numbers: issue, rotation (period and local midnight), use by an exam,
settings changes, pruning, and uniqueness across processes -- on a real LMDB, with an
injected clock (nothing sleeps)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os
import signal
import struct
import tempfile
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebw import accession, config, encounters
from ebw.dicom.find import WorklistIndex
from ebw.hl7.adt import parse
from ebw.store import Store
from ebw.timers import Timers
from ebw.worklist import SPS
from tests.data.make_corpus import msg

BASE = config.load({"EBW_TIMEZONE": "UTC"}).endpoint  # period 5 minutes, prefix EB, 12 digits
T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.timezone.utc).timestamp()


def admit(store: Store, cfg, n: int, now: float, ep: str = "default") -> None:
    for i in range(n):
        change = parse(msg("A04", f"M{now}-{i}", f"P{i}", f"V{i}", name=f"PAT^{i}").encode())
        with store.write() as txn:
            encounters.apply(store, txn, ep, cfg, change, now)


def current(store: Store, ep: str = "default") -> dict[str, tuple[str, float]]:
    """Visit number -> (accession, issue time) of every open encounter."""
    out = {}
    with store.read() as txn:
        for _k, raw in store.iter_active_raw(txn, ep):
            from ebw.store import loads

            r = loads(raw)
            out[r["visit"]["AdmissionID"]] = (r["accession"], r["accession_ts"])
    return out


def rotate(store: Store, cfg, now: float) -> int:
    with store.write() as txn:
        return accession.rotate_due(store, txn, cfg, "default", now, limit=10_000)


def test_a_number_is_issued_on_admission_and_rotated_each_period(store):
    admit(store, BASE, 3, T0)
    first = current(store)
    assert all(a.startswith("EB") and len(a) == 14 and ts == T0 for a, ts in first.values())
    assert rotate(store, BASE, T0 + 299) == 0  # not yet 5 minutes
    assert rotate(store, BASE, T0 + 300) == 3
    second = current(store)
    assert all(second[v][0] != first[v][0] and second[v][1] == T0 + 300 for v in first)
    assert rotate(store, BASE, T0 + 301) == 0  # counted from the new number's issue time
    assert rotate(store, BASE, T0 + 600) == 3
    # every number ever issued still leads to its encounter
    with store.read() as txn:
        for v, (acc, _ts) in first.items():
            found = store.lookup_accession(txn, acc)
            assert found is not None and found["key"].endswith(v)


def test_the_worklist_shows_the_new_number_and_its_issue_time(store):
    admit(store, BASE, 1, T0)
    index = WorklistIndex(store, "default", lambda: BASE)
    before = index.select([], now=T0 + 10)[0]
    rotate(store, BASE, T0 + 300)
    after = index.select([], now=T0 + 310)[0]  # the in-memory worklist follows the change feed
    assert after["AccessionNumber"] != before["AccessionNumber"]
    assert after[SPS + "ScheduledProcedureStepStartTime"] == "100500"
    assert after[SPS + "ScheduledProcedureStepID"] == after["AccessionNumber"]
    assert after["StudyInstanceUID"] != before["StudyInstanceUID"]


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Berlin"])
def test_local_midnight_rotates_so_today_shows_every_encounter(store, tz):
    cfg = dataclasses.replace(BASE, timezone=tz, accession_period_minutes=60)
    zone = ZoneInfo(tz)
    late = dt.datetime(2026, 11, 28, 23, 58, tzinfo=zone).timestamp()
    admit(store, cfg, 2, late)
    after_midnight = late + 180  # 00:01 local, long before the 60-minute period
    assert rotate(store, cfg, after_midnight) == 2
    index = WorklistIndex(store, "default", lambda: cfg)
    items = index.select([(SPS + "ScheduledProcedureStepStartDate", "DA", "20261129")], now=after_midnight)
    assert len(items) == 2
    assert {i[SPS + "ScheduledProcedureStepStartTime"] for i in items} == {"000100"}
    assert rotate(store, cfg, after_midnight + 60) == 0


def test_an_exam_using_the_current_number_gets_the_encounter_a_fresh_one(store):
    admit(store, BASE, 1, T0)
    ((acc, _ts),) = current(store).values()
    with store.write() as txn:
        used = accession.consume(store, txn, acc, T0 + 30, {"default": BASE})
    assert used["fresh"] and used["fresh"] != acc and used["encounter"]["accession"] == used["fresh"]
    ((now_acc, now_ts),) = current(store).values()
    assert now_acc == used["fresh"] and now_ts == T0 + 30
    with store.write() as txn:
        again = accession.consume(store, txn, acc, T0 + 40, {"default": BASE})  # a second image, same exam
        assert again["fresh"] is None and again["key"] == used["key"]
        assert store.lookup_accession(txn, acc)["used"] is True
        assert accession.consume(store, txn, "EB999999999999", T0, {"default": BASE}) == {}
        assert accession.consume(store, txn, "not a number", T0, {"default": BASE}) == {}


def test_settings_changes_apply_to_new_numbers_only(store):
    admit(store, BASE, 1, T0)
    ((old, _),) = current(store).values()
    changed = dataclasses.replace(BASE, accession_prefix="POC", accession_digits=13, accession_period_minutes=1)
    admit(store, changed, 1, T0 + 1)  # an update of the same encounter: number unchanged
    assert current(store)["V0"][0] == old
    assert rotate(store, changed, T0 + 60) == 1  # the new, shorter period applies at once
    ((new, _),) = current(store).values()
    assert new.startswith("POC") and len(new) == 16
    assert int(new[3:]) > int(old[2:])
    with store.read() as txn:
        assert store.lookup_accession(txn, old)["key"] == store.lookup_accession(txn, new)["key"]


def test_numbers_survive_a_visit_rekey(store):
    admit(store, BASE, 1, T0)
    ((old, _),) = current(store).values()
    change = parse(msg("A08", "RK1", "P0", "V0-NEW", name="PAT^0").encode())
    change.prior_visit_key = change.encounter_key.replace("V0-NEW", "V0")
    with store.write() as txn:
        encounters._rekey(
            encounters._Ctx(store, txn, "default", BASE, T0 + 1), change.prior_visit_key, change.encounter_key
        )
    with store.read() as txn:
        assert store.lookup_accession(txn, old)["key"] == change.encounter_key


def test_unused_numbers_are_forgotten_after_the_retention_used_ones_kept(store):
    admit(store, BASE, 2, T0)
    for k in range(1, 4):
        rotate(store, BASE, T0 + 300 * k)
    numbers = []
    with store.read() as txn:
        for _k, v in txn.cursor(db=store.db["accession"]):
            numbers.append(bytes(v)[9:].split(b"\0")[0].decode())
    assert len(numbers) == 8
    with store.write() as txn:
        accession.consume(store, txn, numbers[0], T0 + 901, {"default": BASE})
        assert store.prune_accessions(txn, before=T0 + 600) == 3  # 4 issued before T0+600, one used
    with store.read() as txn:
        assert store.lookup_accession(txn, numbers[0])["used"]
        assert store.lookup_accession(txn, numbers[1]) is None
        assert store.lookup_accession(txn, numbers[-1]) is not None


def test_the_timer_tick_rotates_every_endpoint(store, tmp_path):
    with store.write() as txn:
        store.put_endpoint(txn, "default", BASE.to_dict())
        store.put_endpoint(txn, "ward", dataclasses.replace(BASE, accession_period_minutes=1).to_dict())
    admit(store, BASE, 2, T0)
    admit(store, BASE, 3, T0, ep="ward")
    timers = Timers(config.load({"EBW_DATA_DIR": str(tmp_path)}), str(tmp_path), clock=lambda: T0 + 60)
    timers.store = store
    assert timers.tick(T0 + 60) == {"default": 0, "ward": 3}
    assert timers.tick(T0 + 300) == {"default": 2, "ward": 3}


# -- uniqueness across processes ------------------------------------------------------


def _issuer(data_dir: str, schedule: list[tuple[str, int]], rounds: int, out: str) -> None:
    store = Store(data_dir, 64, sync=False)
    issued = []
    for i in range(rounds):
        prefix, digits = schedule[i % len(schedule)]
        cfg = dataclasses.replace(BASE, accession_prefix=prefix, accession_digits=digits)
        with store.write() as txn:
            acc, _uid = accession.issue(store, txn, cfg, "default", f"E{os.getpid()}-{i}", time.time())
        issued.append(acc)
        with open(out, "a") as f:  # written after the commit: every line is a number issued for good
            f.write(acc + "\n")
    store.close()


schedules = st.lists(
    st.tuples(st.sampled_from(["EB", "EBW", "AB", "POCU"]), st.sampled_from([12, 13])), min_size=1, max_size=4
).map(lambda s: [(p, min(d, 16 - len(p))) for p, d in s])


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(schedules, min_size=3, max_size=4))
def test_concurrent_processes_never_issue_the_same_number(per_process):
    """Several processes issue numbers into one LMDB at once, switching prefix and digits
    back and forth; one is SIGKILLed mid-way.  No number is ever issued twice."""
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as d:
        Store(d, 64, sync=False).close()
        procs, outs = [], []
        for n, schedule in enumerate(per_process):
            out = os.path.join(d, f"out{n}")
            p = ctx.Process(target=_issuer, args=(d, schedule, 300, out))
            p.start()
            procs.append(p)
            outs.append(out)
        deadline = time.monotonic() + 30
        while not os.path.exists(outs[0]) and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(procs[0].pid, signal.SIGKILL)
        for p in procs:
            p.join(60)
        numbers = []
        for out in outs:
            if os.path.exists(out):
                numbers += open(out).read().split()
        assert len(numbers) == len(set(numbers))
        # ... and a new process after the kill continues the same counter
        store = Store(d, 64, sync=False)
        with store.write() as txn:
            nxt, _ = accession.issue(store, txn, BASE, "default", "after", time.time())
            recorded = {struct.unpack(">Q", k)[0] for k, _v in txn.cursor(db=store.db["accession"])}
        store.close()
        assert nxt not in numbers
        assert int(nxt[2:]) == max(recorded)
        assert all(int(x.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) in recorded for x in numbers)


def test_encounters_off_the_worklist_get_no_new_numbers(store):
    """An ED visit never discharged leaves the list after 24 h (curation max age): it is
    parked instead of rotated, and looked at again a period later."""
    admit(store, BASE, 1, T0)  # patient class E
    assert rotate(store, BASE, T0 + 300) == 1
    day = T0 + 25 * 3600
    ((acc, ts),) = current(store).values()
    assert rotate(store, BASE, day) == 0
    assert current(store)["V0"] == (acc, ts)
    assert rotate(store, BASE, day + 1) == 0  # parked: not due again until a period later
    with store.read() as txn:
        assert store.due(txn, "default", day + 301, 10) != []
    keep = dataclasses.replace(BASE, curation='{"max_age_hours": {"E": null}}')
    assert rotate(store, keep, day + 300) == 1  # a curation change brings it back within a period


@settings(max_examples=300, deadline=None)
@given(namespace=st.uuids(), name=st.text())
def test_study_uid_integer_is_uuid5(namespace, name):
    """The Study Instance UID (2.25.<int>) is uuid5(installation id, accession) exactly:
    UIDs issued before and after the faster computation are the same."""
    import uuid

    assert accession.uuid5_int(namespace, name) == uuid.uuid5(namespace, name).int
