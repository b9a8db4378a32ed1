"""The C-FIND handler's failure path (real LMDB, a stand-in for pynetdicom's event): a
response that cannot be encoded ends the query with 0xC001, counted, not with the
0xC311 pynetdicom sends for a handler that raises."""

from __future__ import annotations

import time
import types

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from ebw import config, encounters
from ebw.dicom import find
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({}).endpoint


def _event() -> types.SimpleNamespace:
    ident = Dataset()
    ident.PatientName = ""
    ident.PatientID = ""
    return types.SimpleNamespace(
        identifier=ident,
        assoc=types.SimpleNamespace(requestor=types.SimpleNamespace(ae_title="TESTSCU"), dul=None),
        context=types.SimpleNamespace(transfer_syntax=ImplicitVRLittleEndian, context_id=1),
        request=types.SimpleNamespace(MessageID=1),
        is_cancelled=False,
    )


def test_a_response_that_cannot_be_encoded_ends_with_c001(tmp_path, monkeypatch):
    store = Store(str(tmp_path), 16, sync=False)
    try:
        for i in range(2):
            with store.write() as txn:
                change = parse(msg("A04", f"C{i}", f"P{i}", f"V{i}").encode())
                encounters.apply(store, txn, CFG.id, CFG, change, time.time())
        handler = find.make_handler(find.WorklistIndex(store, CFG.id, lambda: CFG))
        assert [s for s, _ in handler(_event())] == [0xFF00, 0xFF00]  # the handler works

        def broken(*args, **kwargs):
            raise ValueError("cannot encode")

        monkeypatch.setattr(find, "encode_response", broken)
        before = _count(CFG.id, "C001")
        assert [s for s, _ in handler(_event())] == [find.STATUS_UNABLE]
        assert _count(CFG.id, "C001") == before + 1
    finally:
        store.close()


def _count(ep: str, status: str) -> float:
    from ebw import metrics

    return metrics.cfind_queries.labels(ep, status)._value.get()
