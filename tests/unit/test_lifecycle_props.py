"""Property tests of the encounter index (real LMDB in a temp dir, no sockets).

Random sequences of ADT events over a few patients and visits must never
leave a worklist item under a merged-away identifier, and never show an
encounter whose last lifecycle event closed it.
"""

from __future__ import annotations

import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebw import config, encounters
from ebw.dicom.find import WorklistIndex
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({}).endpoint
PATIENTS = ["PA", "PB", "PC"]
VISITS = ["V1", "V2", "V3"]
OPENING = ["A01", "A04", "A08", "A02", "A13"]  # A02/A08 only open an encounter they create
CLOSING = ["A03", "A11", "A23"]

event = st.one_of(
    st.tuples(st.sampled_from(OPENING + CLOSING + ["A31"]), st.sampled_from(PATIENTS), st.sampled_from(VISITS)),
    st.tuples(st.just("A40"), st.sampled_from(PATIENTS), st.sampled_from(PATIENTS)),
)


def build(i: int, ev: str, a: str, b: str) -> bytes:
    when = f"2026112810{i // 60:02d}{i % 60:02d}"
    if ev == "A40":  # merge patient a into b
        return msg(
            "A40", f"C{i}", b, "", name=f"NAME^{b}", mrg=f"{a}^^^GENHOSP^MR", pv1=False, structure="ADT_A39", when=when
        ).encode()
    if ev == "A31":
        return msg("A31", f"C{i}", a, "", name=f"NEW^{a}", pv1=False, structure="ADT_A05", when=when).encode()
    # visit numbers are per patient so merges move whole encounters
    return msg(ev, f"C{i}", a, f"{a}{b}", name=f"NAME^{a}", when=when).encode()


def _ids(items: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((i["PatientID"], i["AdmissionID"], i["PatientName"]) for i in items)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=25))
def test_random_event_sequences_keep_the_worklist_consistent(events):
    with tempfile.TemporaryDirectory() as d:
        store = Store(d, 64, sync=False)
        try:
            live = WorklistIndex(store, "default", lambda: CFG)  # refreshed from the change feed
            merged_away: set[str] = set()
            # model: encounter (visit key) -> open?  and visit -> current owner patient
            open_state: dict[str, bool] = {}
            owner: dict[str, str] = {}
            for i, (ev, a, b) in enumerate(events):
                change = parse(build(i, ev, a, b))
                with store.write() as txn:
                    encounters.apply(store, txn, "default", CFG, change, time.time())
                fresh = WorklistIndex(store, "default", lambda: CFG).select([])
                assert _ids(live.select([])) == _ids(fresh)
                if ev == "A40":
                    if a != b:
                        merged_away.add(a)
                        merged_away.discard(b)
                        for v, p in owner.items():
                            if p == a:
                                owner[v] = b
                elif ev != "A31":
                    visit = f"{a}{b}"
                    merged_away.discard(a)
                    owner.setdefault(visit, a)
                    owner[visit] = a
                    if ev in ("A02", "A08"):  # updates: an unknown encounter is created open, else unchanged
                        open_state.setdefault(visit, True)
                    else:
                        open_state[visit] = ev in OPENING
            items = WorklistIndex(store, "default", lambda: CFG).select([])
            ids = [it["PatientID"] for it in items]
            listed = {it["AdmissionID"] for it in items}
            # nothing stays under a merged-away identifier
            assert not (set(ids) & merged_away)
            # a closed encounter is never shown; an open one always is
            assert listed == {v for v, is_open in open_state.items() if is_open}
            # each open encounter is shown under its current owner
            for it in items:
                assert owner[it["AdmissionID"]] == it["PatientID"]
        finally:
            store.close()
