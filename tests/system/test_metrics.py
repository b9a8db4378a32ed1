"""One scrape of ``/metrics`` shows every metric of every worker (prometheus multi-process mode).

A real ``ebw serve`` with 2 workers: HL7 over several MLLP connections, a few
C-FINDs, then ``GET /metrics`` parsed with prometheus_client's parser.  Which
worker accepts a connection is the kernel's choice, so the test checks the
aggregated values only; killing both original workers one after the other
makes every counted message a dead worker's, so nothing may drop.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.feed import Feed
from tests.conftest import EbwServer, msa
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network

EP = {"endpoint": "default"}
# Every label any ebw_* metric may carry (``pid``: added by prometheus_client to per-worker gauges).
ALLOWED_LABELS = {"endpoint", "event", "ack", "status", "reason", "worker", "pid", "le"}
WORKER_GAUGES = (
    "ebw_worker_resident_memory_bytes",
    "ebw_worker_virtual_memory_bytes",
    "ebw_worker_cpu_seconds",
    "ebw_worker_open_fds",
    "ebw_worker_start_time_seconds",
)


class Scrape:
    """The samples of one ``GET /metrics``, by sample name."""

    def __init__(self, server: EbwServer) -> None:
        status, body = server.http("/metrics")
        assert status == 200
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(body.decode()):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[s.name].append((s.labels, s.value))

    def get(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lb, v) for lb, v in self.samples.get(name, []) if labels.items() <= lb.items()]

    def total(self, name: str, **labels: str) -> float:
        return sum(v for _, v in self.get(name, **labels))

    def one(self, name: str, **labels: str) -> float:
        found = self.get(name, **labels)
        assert len(found) == 1, (name, labels, found)
        return found[0][1]

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for lb, v in self.get(name):
            out[tuple(lb[k] for k in keys)] += v
        return dict(out)


def worker_pids(server: EbwServer) -> set[int]:
    return {int(p.split(".")[1]) for p in os.listdir(server.data_dir / "run") if p.startswith("ready.")}


def wait_for(server: EbwServer, check, what: str, timeout: float = 15.0) -> Scrape:
    """Scrape until ``check(scrape)`` holds (restarts and heartbeats take their time)."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape(server)
        if check(scrape):
            return scrape
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout} s")
        time.sleep(0.1)


def live_workers(pids: set[int]):
    """A check: the per-worker gauges show exactly these pids, as workers 0 and 1."""

    def check(scrape: Scrape) -> bool:
        for name in WORKER_GAUGES:
            found = scrape.get(name)
            if {int(lb["pid"]) for lb, _ in found} != pids or sorted(lb["worker"] for lb, _ in found) != ["0", "1"]:
                return False
        return True

    return check


def kill_and_wait(server: EbwServer, pid: int, restarts: int) -> Scrape:
    before = worker_pids(server)
    os.kill(pid, signal.SIGKILL)

    def restarted(scrape: Scrape) -> bool:
        now = worker_pids(server)
        return (
            scrape.one("ebw_worker_restarts_total") == restarts
            and len(now) == 2
            and pid not in now
            and live_workers(now)(scrape)
            and server.http("/healthz")[0] == 200
        )

    scrape = wait_for(server, restarted, f"restart #{restarts} after kill -9 of {pid}", timeout=30)
    assert len(worker_pids(server) - before) == 1
    return scrape


def test_one_scrape_shows_every_metric_of_every_worker(server):
    from ebw.mllp import MllpClient

    assert server.env["EBW_WORKERS"] == "2"
    pids = worker_pids(server)
    assert len(pids) == 2
    feed = Feed(seed=7, prefix="MT")
    encounters = [feed.new_encounter() for _ in range(12)]
    for e in encounters:
        e.patient_class = "E"
    sent: dict[tuple[str, str], int] = defaultdict(int)

    # 4 MLLP connections open at once, 3 admits on each (plus one rejected message first).
    clients = [MllpClient("127.0.0.1", server.hl7_port, timeout=10) for _ in range(4)]
    try:
        bad = feed.message("A04", encounters[0]).replace(b"ADT^A04", b"ADT^Z99")
        assert msa(clients[0].send(bad))[0] == "AR"
        sent["other", "AR"] += 1  # an event EBW does not know is no label value of its own
        for i, e in enumerate(encounters):
            assert msa(clients[i % 4].send(feed.message("A04", e)))[0] == "AA"
            sent["A04", "AA"] += 1
        assert msa(clients[1].send(feed.message("A08", encounters[1])))[0] == "AA"
        sent["A08", "AA"] += 1
        assert msa(clients[2].send(feed.message("A03", encounters[2])))[0] == "AA"
        sent["A03", "AA"] += 1
        # Every connection has been answered, so every worker has counted it open.
        open_now = Scrape(server)
        assert open_now.total("ebw_hl7_connections", **EP) == 4
    finally:
        for c in clients:
            c.close()
    n_messages = sum(sent.values())
    active = len(encounters) - 1  # one discharged

    # C-FINDs: 3 for everything, 1 for a single patient.
    for _ in range(3):
        assert len(cfind(server, mwl_query())) == active
    assert len(cfind(server, mwl_query(PatientID=encounters[5].mrn))) == 1
    n_queries, n_matches = 4, 3 * active + 1

    s = wait_for(server, live_workers(pids), "per-worker gauges of both workers")
    s = wait_for(server, lambda sc: sc.total("ebw_hl7_connections") == 0, "connections closed")

    # Types.
    for name, typ in {
        "ebw_hl7_messages": "counter",
        "ebw_hl7_ack_seconds": "histogram",
        "ebw_hl7_connections": "gauge",
        "ebw_cfind_queries": "counter",
        "ebw_cfind_duration_seconds": "histogram",
        "ebw_cfind_matches": "histogram",
        "ebw_active_encounters": "gauge",
        "ebw_accessions_issued": "counter",
        "ebw_worker_restarts": "counter",
        "ebw_lmdb_map_used_bytes": "gauge",
        "ebw_lmdb_map_size_bytes": "gauge",
        **dict.fromkeys(WORKER_GAUGES, "gauge"),
    }.items():
        assert s.types.get(name) == typ, (name, s.types.get(name))
    # The old names are gone.
    assert not s.get("ebw_hl7_ack_duration_seconds_count") and not s.get("ebw_mllp_connections")

    # HL7: every message counted once, by event and ACK code, and timed.
    assert s.by("ebw_hl7_messages_total", "endpoint", "event", "ack") == {
        ("default", ev, ack): float(n) for (ev, ack), n in sent.items()
    }
    assert s.one("ebw_hl7_ack_seconds_count", **EP) == n_messages
    assert s.one("ebw_hl7_ack_seconds_bucket", le="+Inf", **EP) == n_messages
    assert 0 < s.one("ebw_hl7_ack_seconds_sum", **EP) < 60
    assert {tuple(sorted(lb)) for lb, _ in s.get("ebw_hl7_connections")} == {("endpoint",)}

    # C-FIND.
    assert s.by("ebw_cfind_queries_total", "endpoint", "status") == {("default", "0000"): n_queries}
    assert s.one("ebw_cfind_duration_seconds_count", **EP) == n_queries
    assert s.one("ebw_cfind_matches_count", **EP) == n_queries
    assert s.one("ebw_cfind_matches_sum", **EP) == n_matches
    assert s.one("ebw_cfind_matches_bucket", le="1.0", **EP) == 1  # the single-patient query

    # The worklist and the store.
    assert s.one("ebw_active_encounters", **EP) == active
    assert s.one("ebw_accessions_issued_total", **EP) == len(encounters)
    assert s.one("ebw_worker_restarts_total") == 0
    map_size = s.one("ebw_lmdb_map_size_bytes")
    assert map_size == int(server.env["EBW_LMDB_MAP_SIZE_MB"]) * 1024 * 1024
    assert 0 < s.one("ebw_lmdb_map_used_bytes") < map_size

    # Process figures: the supervisor's standard process_*, each worker's ebw_worker_*.
    assert s.one("process_resident_memory_bytes") > 0
    assert s.one("process_cpu_seconds_total") >= 0
    for lb, v in s.get("ebw_worker_resident_memory_bytes") + s.get("ebw_worker_open_fds"):
        assert v > 0, lb
    for lb, v in s.get("ebw_worker_start_time_seconds"):
        assert time.time() - 600 < v <= time.time(), lb

    # No patient data in any label.
    secrets = {x for e in encounters for x in (e.mrn, e.visit, e.family, e.given, e.birth)}
    for name, found in s.samples.items():
        for lb, _ in found:
            if name.startswith("ebw_"):
                assert set(lb) <= ALLOWED_LABELS, (name, lb)
            for value in lb.values():
                assert not any(x in value for x in secrets), (name, lb)

    # kill -9 both original workers in turn: the restarts are counted, and the counters
    # and histograms of the dead workers stay in the sums; the store-read gauges hold.
    first, second = sorted(pids)
    after = kill_and_wait(server, first, restarts=1)
    after = kill_and_wait(server, second, restarts=2)
    assert not worker_pids(server) & pids
    assert after.total("ebw_hl7_messages_total") == n_messages
    assert after.by("ebw_hl7_messages_total", "endpoint", "event", "ack") == s.by(
        "ebw_hl7_messages_total", "endpoint", "event", "ack"
    )
    assert after.one("ebw_hl7_ack_seconds_count", **EP) == n_messages
    assert after.total("ebw_cfind_queries_total") == n_queries
    assert after.one("ebw_cfind_matches_sum", **EP) == n_matches
    assert after.one("ebw_accessions_issued_total", **EP) == len(encounters)
    assert after.one("ebw_active_encounters", **EP) == active
    assert after.one("ebw_lmdb_map_used_bytes") >= s.one("ebw_lmdb_map_used_bytes")
    assert after.total("ebw_hl7_connections") == 0
    # And the restarted workers serve and count as before.
    assert len(cfind(server, mwl_query())) == active
    assert Scrape(server).total("ebw_cfind_queries_total") == n_queries + 1


def test_unknown_events_do_not_grow_the_event_label(server):
    """A sender cannot create label values: 50 different unknown trigger events over
    MLLP are counted under one ``event="other"``, the known ones under their names."""
    from ebw.hl7.adt import KNOWN_EVENTS
    from ebw.mllp import MllpClient

    feed = Feed(seed=11, prefix="UE")
    e = feed.new_encounter()
    with MllpClient("127.0.0.1", server.hl7_port, timeout=10) as client:
        assert msa(client.send(feed.message("A04", e)))[0] == "AA"
        for i in range(50):
            unknown = feed.message("A08", e).replace(b"ADT^A08", f"ADT^Q{i:02d}".encode())
            assert msa(client.send(unknown))[0] == "AR"
    s = Scrape(server)
    counted = s.by("ebw_hl7_messages_total", "event", "ack")
    assert counted == {("A04", "AA"): 1, ("other", "AR"): 50}
    assert {lb["event"] for lb, _ in s.get("ebw_hl7_messages_total")} <= KNOWN_EVENTS | {"other", "unknown"}
