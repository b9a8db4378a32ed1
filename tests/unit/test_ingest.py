"""``ebw.ingest.Hl7Endpoint`` without a server (a stub committer, no store): what it counts."""

from __future__ import annotations

import asyncio
import types

from ebw import config, ingest, metrics
from ebw.hl7.adt import KNOWN_EVENTS
from tests.conftest import msa

CFG = config.load({}).endpoint


class _Committer:
    """Every job 'applies' at once; nothing is stored."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def submit(self, job: object) -> asyncio.Future:
        fut = self.loop.create_future()
        fut.set_result(types.SimpleNamespace(accessions=0, outcome="test"))
        return fut


def _message(msh_9: str, control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128093000||{msh_9}|{control_id}|P|2.5.1\r"
        "EVN||20261128093000\rPID|1||555^^^GENHOSP^MR||DOE^JANE\r"
    ).encode()


def _counted(endpoint: str) -> dict[tuple[str, str], float]:
    """(event, ack) -> messages counted for ``endpoint``."""
    return {
        (s.labels["event"], s.labels["ack"]): s.value
        for family in metrics.hl7_messages.collect()
        for s in family.samples
        if s.name == "ebw_hl7_messages_total" and s.labels["endpoint"] == endpoint
    }


def test_event_label_is_bounded():
    assert all(ingest.event_label(ev) == ev for ev in KNOWN_EVENTS)
    assert ingest.event_label("") == "unknown"
    for hostile in ("Z99", "A99", "a04", "A04 ", "R01", "X" * 1000, "A\x0004", "É"):
        assert ingest.event_label(hostile) == "other"


def test_fifty_unknown_events_are_one_label_value():
    loop = asyncio.new_event_loop()
    try:
        endpoint = ingest.Hl7Endpoint("labels", lambda: CFG, None, _Committer(loop))  # type: ignore[arg-type]

        def send(data: bytes) -> str:
            return msa(loop.run_until_complete(endpoint.handle(data)))[0]

        for i in range(50):
            assert send(_message(f"ADT^Z{i:02d}", f"U{i}")) == "AR"  # 201: unsupported event
        assert send(_message("ORU^R01", "O1")) == "AR"  # 200: not ADT
        assert send(_message("ADT^A04", "K1")) == "AA"
        assert send(b"not HL7") == "AR"
    finally:
        loop.close()
    assert _counted("labels") == {("other", "AR"): 51, ("A04", "AA"): 1, ("unknown", "AR"): 1}


def test_control_ids_in_log_lines_cannot_forge_lines():
    from ebw.hl7.adt import Header

    header = Header(seps=b"|^~\\&", control_id=b"C1\n2026-11-28 ERROR forged\r\x1c\\x")
    assert ingest._cid(header) == "C1\\x0a2026-11-28 ERROR forged\\x0d\\x1c\\x5cx"
    assert ingest._cid(Header(seps=b"|^~\\&", control_id=b"MSG00001")) == "MSG00001"
    assert ingest._cid(None) == "?"


def test_training_and_debugging_messages_are_refused_unless_the_endpoint_takes_them():
    """MSH-11 T or D on a production endpoint: AR 202 at MSH^1^11, journal only (the
    stub committer here applies nothing either way); an endpoint set to take them applies."""
    import dataclasses

    loop = asyncio.new_event_loop()
    try:
        cfg = CFG
        endpoint = ingest.Hl7Endpoint("proc", lambda: cfg, None, _Committer(loop))  # type: ignore[arg-type]

        def answer(processing: str) -> bytes:
            raw = _message("ADT^A04", "P1").replace(b"|P|2.5.1", f"|{processing}|2.5.1".encode())
            return loop.run_until_complete(endpoint.handle(raw))

        for processing in ("P", "", "p", "P^T"):
            assert msa(answer(processing))[0] == "AA", processing
        for processing in ("T", "D", "T^A", "X"):
            ack = answer(processing)
            assert msa(ack)[0] == "AR" and b"|MSH^1^11|202^Unsupported processing ID^HL70357|" in ack, processing
        cfg = dataclasses.replace(CFG, hl7_processing_ids=("P", "T"))
        assert msa(answer("T"))[0] == "AA" and msa(answer("D"))[0] == "AR"
    finally:
        loop.close()
