"""Helpers for tests of the encounter index on a real LMDB store (no sockets)."""

from __future__ import annotations

import time
from typing import Any

from ebw import config, encounters
from ebw.dicom.find import WorklistIndex
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({}).endpoint
EP = "default"


def apply_message(store: Store, raw: str) -> str:
    """Apply one ADT message (as text) in its own write transaction; its outcome."""
    with store.write() as txn:
        return encounters.apply(store, txn, EP, CFG, parse(raw.encode()), time.time()).outcome


def record(store: Store, key: str) -> dict[str, Any]:
    with store.read() as txn:
        return store.get_encounter(txn, EP, key)


def listed(store: Store, *fields: str) -> list[tuple[str, ...]]:
    """``fields`` of every item a query for everything returns, sorted."""
    items = WorklistIndex(store, EP, lambda: CFG).select([])
    return sorted(tuple(i[f] for f in fields) for i in items)


def a40(cid: str, pid3: str, mrg: str, name: str, when: str = "20261128110000") -> str:
    """A40 merging the patient ``mrg`` (MRG-1) into ``pid3``."""
    return msg("A40", cid, "", pid3=pid3, name=name, mrg=mrg, pv1=False, structure="ADT_A39", when=when)
