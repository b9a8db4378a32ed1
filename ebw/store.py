"""The LMDB encounter index: environment, key layout, transactions.

One LMDB environment under ``$EBW_DATA_DIR/lmdb`` shared by every worker
process (each opens it *after* fork; the supervisor opens none).  LMDB allows
one writer at a time across processes, so write transactions stay short and
each one carries a whole batch of messages (group commit, see
``ebw.committer``).

Named databases and keys (``ep`` = endpoint id, ``\\0`` separates parts):

=============  ======================================  ==========================================
db             key                                     value
=============  ======================================  ==========================================
meta           ``schema`` / ``seq:<name>``             schema version / 8-byte counters
endpoints      ``ep``                                  endpoint settings (JSON)
enc            ``ep\\0<encounter key>``                encounter record (JSON)
active         ``ep\\0<encounter key>``                ``active`` / ``pending``: open encounters
seen           ``ep\\0MSH-3\\0MSH-4\\0MSH-10``        time applied (8-byte float): duplicate check
changes        8-byte sequence number                  ``ep\\0<encounter key>`` changed (feed for the
                                                       workers' in-memory worklists; bounded)
journal        8-byte sequence number                  every message received, verbatim: header
                                                       length, JSON header, raw deflate of the bytes
patient        ``ep\\0<PatientID>\\0<issuer>\\0<enc key>`` b"" -- every encounter of a patient
accession      ``<accession number>``                  ``ep\\0<encounter key>`` -- never deleted
=============  ======================================  ==========================================

Writes are kept to few pages per message (what a synced commit costs is the
number of distinct pages it writes): an update of a known encounter rewrites
only its ``enc`` record; the indexes change only when membership changes.

Durability: with ``sync=True`` (the default, ``EBW_FSYNC=on``) a commit
returns only after LMDB has synced data and meta pages, so an acknowledged
change survives a power cut.  ``EBW_FSYNC=off`` opens the environment with
``sync=False``: commits land in the OS page cache and survive a process
crash, not a power cut.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import lmdb

from .errors import StoreError

SCHEMA_VERSION = 1
SEP = b"\x00"
DBS = ("meta", "endpoints", "enc", "active", "patient", "accession", "seen", "journal", "changes")
INDEX_DBS = ("enc", "active", "patient", "seen", "changes")  # rebuilt by `ebw replay`

_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


def pack_message(raw: bytes) -> bytes:
    """A received message as the journal keeps it (raw deflate, small window: cheap)."""
    c = zlib.compressobj(1, zlib.DEFLATED, -12)
    return c.compress(raw) + c.flush()


def _unpack_journal(value: bytes) -> tuple[dict[str, Any], bytes]:
    n = _U16.unpack(value[:2])[0]
    return loads(value[2 : 2 + n]), zlib.decompress(value[2 + n :], -12)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(raw: bytes | memoryview) -> Any:
    return json.loads(bytes(raw))


def key(*parts: str) -> bytes:
    return SEP.join(p.encode("utf-8") for p in parts)


def split_key(raw: bytes) -> list[str]:
    return [p.decode("utf-8") for p in bytes(raw).split(SEP)]


def dedupe_key(ep: str, msh3: bytes, msh4: bytes, msh10: bytes) -> bytes:
    return SEP.join((ep.encode(), bytes(msh3), bytes(msh4), bytes(msh10)))


def patient_ident(record: dict[str, Any]) -> tuple[str, str]:
    p = record.get("patient", {})
    return p.get("PatientID") or "", p.get("IssuerOfPatientID") or ""


class Store:
    """An open LMDB environment with EBW's named databases."""

    def __init__(self, data_dir: str, map_size_mb: int = 4096, sync: bool = True) -> None:
        self.path = os.path.join(data_dir, "lmdb")
        os.makedirs(self.path, exist_ok=True)
        try:
            self.env = lmdb.open(
                self.path,
                map_size=map_size_mb * 1024 * 1024,
                max_dbs=len(DBS) + 4,
                max_readers=2048,
                sync=sync,
                metasync=sync,
                readahead=False,
                lock=True,
                subdir=True,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open LMDB environment at {self.path}: {exc}") from exc
        with self.env.begin(write=True) as txn:
            self.db = {name: self.env.open_db(name.encode(), txn=txn, create=True) for name in DBS}
            meta = self.db["meta"]
            raw = txn.get(b"schema", db=meta)
            if raw is None:
                txn.put(b"schema", str(SCHEMA_VERSION).encode(), db=meta)
            elif int(raw) != SCHEMA_VERSION:
                raise StoreError(f"LMDB schema {int(raw)} found, this EBW reads schema {SCHEMA_VERSION}")

    def close(self) -> None:
        self.env.close()

    # -- transactions ------------------------------------------------------

    def read(self) -> lmdb.Transaction:
        return self.env.begin(write=False, buffers=False)

    def write(self) -> lmdb.Transaction:
        return self.env.begin(write=True)

    # -- counters ----------------------------------------------------------

    def next_seq(self, txn: lmdb.Transaction, name: str) -> int:
        """Increment and return the counter ``name`` (starts at 1) inside ``txn``."""
        k = b"seq:" + name.encode()
        raw = txn.get(k, db=self.db["meta"])
        value = (_U64.unpack(raw)[0] if raw else 0) + 1
        txn.put(k, _U64.pack(value), db=self.db["meta"])
        return value

    def get_count(self, txn: lmdb.Transaction, name: str) -> int:
        raw = txn.get(b"count:" + name.encode(), db=self.db["meta"])
        return struct.unpack(">q", raw)[0] if raw else 0

    def add_count(self, txn: lmdb.Transaction, name: str, delta: int) -> int:
        k = b"count:" + name.encode()
        raw = txn.get(k, db=self.db["meta"])
        value = (struct.unpack(">q", raw)[0] if raw else 0) + delta
        txn.put(k, struct.pack(">q", value), db=self.db["meta"])
        return value

    # -- endpoints ---------------------------------------------------------

    def put_endpoint(self, txn: lmdb.Transaction, ep_id: str, settings: dict[str, Any]) -> None:
        txn.put(ep_id.encode(), dumps(settings), db=self.db["endpoints"])

    def get_endpoint(self, txn: lmdb.Transaction, ep_id: str) -> dict[str, Any] | None:
        raw = txn.get(ep_id.encode(), db=self.db["endpoints"])
        return None if raw is None else loads(raw)

    def endpoints(self, txn: lmdb.Transaction) -> dict[str, dict[str, Any]]:
        return {bytes(k).decode(): loads(v) for k, v in txn.cursor(db=self.db["endpoints"])}

    # -- encounters --------------------------------------------------------

    def get_encounter(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> dict[str, Any] | None:
        raw = txn.get(key(ep, enc_key), db=self.db["enc"])
        return None if raw is None else loads(raw)

    def put_encounter(
        self,
        txn: lmdb.Transaction,
        ep: str,
        enc_key: str,
        record: dict[str, Any],
        old_ident: tuple[str, str] | None,
    ) -> None:
        """Store ``record``.  ``old_ident`` is ``patient_ident()`` of the record it
        replaces (None: a new encounter), to keep the patient index right."""
        k = key(ep, enc_key)
        txn.put(k, dumps(record), db=self.db["enc"])
        self._note_change(txn, k)
        new_ident = patient_ident(record)
        if new_ident != old_ident:
            if old_ident is not None:
                txn.delete(key(ep, *old_ident, enc_key), db=self.db["patient"])
            txn.put(key(ep, *new_ident, enc_key), b"", db=self.db["patient"])

    def delete_encounter(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> None:
        record = self.get_encounter(txn, ep, enc_key)
        if record is None:
            return
        self.set_closed(txn, ep, enc_key)
        txn.delete(key(ep, enc_key), db=self.db["enc"])
        self._note_change(txn, key(ep, enc_key))
        txn.delete(key(ep, *patient_ident(record), enc_key), db=self.db["patient"])

    # -- change feed: lets each worker refresh its in-memory worklist incrementally --

    def _note_change(self, txn: lmdb.Transaction, enc_db_key: bytes) -> None:
        seq = self.next_seq(txn, "changes")
        txn.put(_U64.pack(seq), enc_db_key, db=self.db["changes"], append=True)

    def change_seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq:changes", db=self.db["meta"])
        return _U64.unpack(raw)[0] if raw else 0

    def changes_since(self, txn: lmdb.Transaction, seq: int) -> list[bytes] | None:
        """``ep\\0<encounter key>`` of every encounter changed after ``seq``, or None
        when the feed no longer reaches back that far (read everything again)."""
        cur = txn.cursor(db=self.db["changes"])
        if seq and (not cur.first() or _U64.unpack(cur.key())[0] > seq + 1):
            return None if self.change_seq(txn) > seq else []
        out = []
        if cur.set_range(_U64.pack(seq + 1)):
            out = [bytes(v) for v in cur.iternext(keys=False, values=True)]
        return out

    def prune_changes(self, txn: lmdb.Transaction, keep: int = 200_000, limit: int = 5000) -> int:
        """Drop the oldest change-feed entries beyond the last ``keep``."""
        last = self.change_seq(txn)
        cur = txn.cursor(db=self.db["changes"])
        n = 0
        while n < limit and cur.first() and _U64.unpack(cur.key())[0] <= last - keep:
            cur.delete()
            n += 1
        return n

    def encounters_of_patient(
        self, txn: lmdb.Transaction, ep: str, patient_id: str, issuer: str | None = None
    ) -> list[str]:
        """Encounter keys of a Patient ID (any issuer when ``issuer`` is None)."""
        prefix = key(ep, patient_id) + SEP
        if issuer is not None:
            prefix += issuer.encode("utf-8") + SEP
        out = []
        cur = txn.cursor(db=self.db["patient"])
        if cur.set_range(prefix):
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    break
                out.append(k.rsplit(SEP, 1)[1].decode("utf-8"))
        return out

    def count_encounters(self, txn: lmdb.Transaction) -> int:
        return txn.stat(self.db["enc"])["entries"]

    # -- the worklist (open encounters) -----------------------------------------

    def set_open(self, txn: lmdb.Transaction, ep: str, enc_key: str, status: str) -> None:
        """Put an open encounter (status ``active`` or ``pending``) in the ``active`` db."""
        k = key(ep, enc_key)
        value = status.encode()
        old = txn.get(k, db=self.db["active"])
        if old == value:
            return
        txn.put(k, value, db=self.db["active"])
        delta = (status == "active") - (old == b"active")
        if delta:
            self.add_count(txn, f"active:{ep}", delta)

    def set_closed(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> None:
        k = key(ep, enc_key)
        old = txn.get(k, db=self.db["active"])
        if old is None:
            return
        txn.delete(k, db=self.db["active"])
        if old == b"active":
            self.add_count(txn, f"active:{ep}", -1)

    def active_count(self, txn: lmdb.Transaction, ep: str) -> int:
        return self.get_count(txn, f"active:{ep}")

    def iter_active_raw(self, txn: lmdb.Transaction, ep: str) -> Iterator[tuple[bytes, bytes]]:
        """(encounter key bytes, encounter record JSON) for every active encounter of ``ep``."""
        prefix = ep.encode() + SEP
        cur = txn.cursor(db=self.db["active"])
        enc = self.db["enc"]
        if not cur.set_range(prefix):
            return
        n = len(prefix)
        for k in cur.iternext(values=False):
            if not k.startswith(prefix):
                break
            v = txn.get(k, db=enc)
            if v is not None:
                yield k[n:], v

    # -- accession numbers -----------------------------------------------------

    def accession_taken(self, txn: lmdb.Transaction, accession: str) -> bool:
        return txn.get(accession.encode(), db=self.db["accession"]) is not None

    def bind_accession(self, txn: lmdb.Transaction, accession: str, ep: str, enc_key: str) -> None:
        if not txn.put(accession.encode(), key(ep, enc_key), db=self.db["accession"], overwrite=False):
            raise StoreError("accession number already issued")

    def rebind_accession(self, txn: lmdb.Transaction, accession: str, ep: str, enc_key: str) -> None:
        """Point an issued number at the encounter's new key (visit re-key); never frees it."""
        txn.put(accession.encode(), key(ep, enc_key), db=self.db["accession"])

    # -- duplicates --------------------------------------------------------------

    def seen(self, txn: lmdb.Transaction, dk: bytes) -> bool:
        return txn.get(dk, db=self.db["seen"]) is not None

    def mark_seen(self, txn: lmdb.Transaction, dk: bytes, now: float) -> None:
        txn.put(dk, struct.pack(">d", now), db=self.db["seen"])

    # -- journal -----------------------------------------------------------------

    def journal_append(self, txn: lmdb.Transaction, header: dict[str, Any], packed: bytes) -> int:
        """Keep one received message verbatim with its header (receive time, endpoint,
        sender, ACK code ...).  ``packed`` is ``pack_message(raw)``, done by the caller
        outside the commit.  Keys are sequential, so appends touch few pages."""
        seq = self.next_seq(txn, "journal")
        head = dumps(header)
        txn.put(_U64.pack(seq), _U16.pack(len(head)) + head + packed, db=self.db["journal"], append=True)
        return seq

    def journal(self, txn: lmdb.Transaction, start: int = 0) -> Iterator[tuple[int, dict[str, Any], bytes]]:
        """(sequence, header, raw message) from ``start`` on, in order."""
        cur = txn.cursor(db=self.db["journal"])
        if not cur.set_range(_U64.pack(start)):
            return
        for k, v in cur:
            head, raw = _unpack_journal(v)
            yield _U64.unpack(k)[0], head, raw

    def journal_prune(self, txn: lmdb.Transaction, before: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` of the oldest entries received before ``before``."""
        cur = txn.cursor(db=self.db["journal"])
        n = 0
        if not cur.first():
            return 0
        while n < limit:
            n_head = _U16.unpack(cur.value()[:2])[0]
            if loads(cur.value()[2 : 2 + n_head]).get("t", 0) >= before:
                break
            cur.delete()
            n += 1
            if cur.key() == b"":
                break
        return n

    def drop_index(self, txn: lmdb.Transaction) -> None:
        """Empty the encounter index (not the journal, the accession numbers or counters)."""
        for name in INDEX_DBS:
            txn.drop(self.db[name], delete=False)
        cur = txn.cursor(db=self.db["meta"])
        if cur.set_range(b"count:"):
            while cur.key().startswith(b"count:"):
                if not cur.delete():
                    break
