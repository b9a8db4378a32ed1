"""The journal keeps every message as received; entries written by earlier releases
(raw deflate) are still read, pruned and counted (real LMDB).  Encounter records: plain-type
pickle, older JSON ones still read."""

from __future__ import annotations

import os
import pickle
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebw.errors import StoreError
from ebw.store import Store, dumps, journal_header, loads, pack_record

MSG = "MSH|^~\\&|EHR|H|EBW|H|20261128||ADT^A01|C1|P|2.5.1\rPID|1||4711^^^H^MR||Müller^Jörg\r".encode()


def _old_entry(header: dict, raw: bytes) -> bytes:
    head = dumps(header)
    c = zlib.compressobj(1, zlib.DEFLATED, -12)
    return struct.pack(">H", len(head)) + head + c.compress(raw) + c.flush()


def test_new_and_old_entries_read_back_verbatim(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    with store.write() as txn:
        seq = store.next_seq(txn, "journal")
        txn.put(struct.pack(">Q", seq), _old_entry({"t": 1.0, "ep": "default"}, MSG), db=store.db["journal"])
        store.journal_append(txn, {"t": 2.0, "ep": "default"}, MSG)
    with store.read() as txn:
        got = list(store.journal(txn))
        first = bytes(txn.get(struct.pack(">Q", 1), db=store.db["journal"]))
    assert [(s, h["t"], raw) for s, h, raw in got] == [(1, 1.0, MSG), (2, 2.0, MSG)]
    assert journal_header(first) == {"t": 1.0, "ep": "default"}
    with store.write() as txn:
        assert store.journal_prune(txn, before=1.5) == 1  # the old entry's time is read too
    with store.read() as txn:
        assert [s for s, _h, _raw in store.journal(txn)] == [2]
    store.close()


def test_records_round_trip_and_a_crafted_pickle_is_refused():
    record = {"key": "V|H|1", "patient": {"PatientName": "Müller^Jörg"}, "when": 1.5, "x": [None, True, ""]}
    assert loads(pack_record(record)) == record
    assert loads(dumps(record)) == record  # records written before pack_record: JSON
    with pytest.raises(StoreError, match="refused"):
        loads(pickle.dumps(os.system))


def _rss_of_map(path: str) -> int:
    rss, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return rss


def test_released_map_pages_leave_the_data_readable(tmp_path):
    store = Store(str(tmp_path), 64, sync=False)
    with store.write() as txn:
        for i in range(20000):
            txn.put(b"k%05d" % i, os.urandom(200), db=store.db["meta"])
    with store.read() as txn:
        values = [bytes(v) for _k, v in txn.cursor(db=store.db["meta"]) if bytes(_k).startswith(b"k")]
    data = os.path.realpath(os.path.join(store.path, "data.mdb"))
    before = _rss_of_map(data)
    assert before > 1 << 20 and store.release_mapped_pages() > 0
    assert _rss_of_map(data) < before // 4  # the page cache keeps them; this process no longer maps them
    with store.read() as txn:
        assert [bytes(v) for _k, v in txn.cursor(db=store.db["meta"]) if bytes(_k).startswith(b"k")] == values
    store.close()


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.text(), min_size=1, max_size=4))
def test_db_keys_are_the_parts_utf8_joined_by_nul(parts):
    """``store.key`` (every index key) is the parts' UTF-8 joined by NUL, as written so far."""
    from ebw import store

    assert store.key(*parts) == store.SEP.join(p.encode("utf-8") for p in parts)
    if all("\x00" not in p for p in parts):
        assert store.split_key(store.key(*parts)) == parts


_text = st.text(st.characters(codec="utf-8"), max_size=12)
_field = st.binary(max_size=12)


@settings(max_examples=400, deadline=None)
@given(
    now=st.floats(min_value=0, max_value=4e9) | st.sampled_from([1795920416.1080353, 0.1, 1e16]),
    ep=_text,
    ack=st.sampled_from(["AA", "AE", "AR"]),
    event=_text,
    outcome=_text,
    fields=st.none() | st.tuples(_field, _field, _field),
)
def test_journal_header_made_in_two_parts_is_the_same_json(now, ep, ack, event, outcome, fields):
    """The journal header the ingest job writes, mostly made before the write transaction,
    is byte for byte ``dumps`` of the header dict (quotes, backslashes, control bytes and
    non-ASCII in the sender's MSH-3/4/10 included)."""
    from ebw import ingest
    from ebw.hl7.adt import Header

    header = None if fields is None else Header(seps=b"|^~\\&", msh3=fields[0], msh4=fields[1], control_id=fields[2])
    parts = ingest._journal_header_parts(ep, header, ack, event)
    made = ingest._journal_header_json(now, parts, outcome)
    assert made == dumps(ingest._journal_header(now, ep, header, ack, event, outcome))
    assert journal_header(struct.pack(">H", len(made) | 0x8000) + made)["outcome"] == outcome
