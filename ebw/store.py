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
active         ``ep\\0<encounter key>``                worklist item of an active encounter (JSON)
active_pid     ``ep\\0<PatientID>\\0<encounter key>``  b"" -- active items by Patient ID
patient        ``ep\\0<patient key>\\0<encounter key>`` b"" -- every encounter of a patient
accession      ``<accession number>``                  ``ep\\0<encounter key>`` -- never deleted
=============  ======================================  ==========================================

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
from collections.abc import Iterator
from typing import Any

import lmdb

from .errors import StoreError

SCHEMA_VERSION = 1
SEP = b"\x00"
DBS = ("meta", "endpoints", "enc", "active", "active_pid", "patient", "accession")

_U64 = struct.Struct(">Q")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(raw: bytes | memoryview) -> Any:
    return json.loads(bytes(raw))


def key(*parts: str) -> bytes:
    return SEP.join(p.encode("utf-8") for p in parts)


def split_key(raw: bytes) -> list[str]:
    return [p.decode("utf-8") for p in bytes(raw).split(SEP)]


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

    def put_encounter(self, txn: lmdb.Transaction, ep: str, enc_key: str, record: dict[str, Any]) -> None:
        txn.put(key(ep, enc_key), dumps(record), db=self.db["enc"])
        pk = record.get("patient_key")
        if pk:
            txn.put(key(ep, pk, enc_key), b"", db=self.db["patient"])

    def delete_encounter(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> None:
        record = self.get_encounter(txn, ep, enc_key)
        if record is None:
            return
        self.set_inactive(txn, ep, enc_key)
        txn.delete(key(ep, enc_key), db=self.db["enc"])
        if record.get("patient_key"):
            txn.delete(key(ep, record["patient_key"], enc_key), db=self.db["patient"])

    def unlink_patient(self, txn: lmdb.Transaction, ep: str, patient_key: str, enc_key: str) -> None:
        txn.delete(key(ep, patient_key, enc_key), db=self.db["patient"])

    def encounters_of_patient(self, txn: lmdb.Transaction, ep: str, patient_key: str) -> list[str]:
        prefix = key(ep, patient_key) + SEP
        out = []
        cur = txn.cursor(db=self.db["patient"])
        if cur.set_range(prefix):
            for k in cur.iternext(values=False):
                k = bytes(k)
                if not k.startswith(prefix):
                    break
                out.append(k[len(prefix) :].decode("utf-8"))
        return out

    def count_encounters(self, txn: lmdb.Transaction) -> int:
        return txn.stat(self.db["enc"])["entries"]

    # -- the worklist (active items) -----------------------------------------

    def set_active(self, txn: lmdb.Transaction, ep: str, enc_key: str, item: dict[str, Any]) -> None:
        """Put (or replace) the worklist item of an active encounter."""
        k = key(ep, enc_key)
        old = txn.get(k, db=self.db["active"])
        if old is not None:
            old_pid = loads(old).get("PatientID", "")
            if old_pid != item.get("PatientID", ""):
                txn.delete(key(ep, old_pid, enc_key), db=self.db["active_pid"])
        else:
            self.add_count(txn, f"active:{ep}", 1)
        txn.put(k, dumps(item), db=self.db["active"])
        txn.put(key(ep, item.get("PatientID", ""), enc_key), b"", db=self.db["active_pid"])

    def set_inactive(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> None:
        k = key(ep, enc_key)
        old = txn.get(k, db=self.db["active"])
        if old is None:
            return
        txn.delete(k, db=self.db["active"])
        txn.delete(key(ep, loads(old).get("PatientID", ""), enc_key), db=self.db["active_pid"])
        self.add_count(txn, f"active:{ep}", -1)

    def active_count(self, txn: lmdb.Transaction, ep: str) -> int:
        return self.get_count(txn, f"active:{ep}")

    def iter_active_raw(self, txn: lmdb.Transaction, ep: str) -> Iterator[tuple[bytes, bytes]]:
        """(encounter key bytes, item JSON bytes) for every active item of ``ep``."""
        prefix = ep.encode() + SEP
        cur = txn.cursor(db=self.db["active"])
        if not cur.set_range(prefix):
            return
        n = len(prefix)
        for k, v in cur:
            if not k.startswith(prefix):
                break
            yield k[n:], v

    def active_by_patient_id(self, txn: lmdb.Transaction, ep: str, patient_id: str) -> Iterator[tuple[bytes, bytes]]:
        prefix = key(ep, patient_id) + SEP
        cur = txn.cursor(db=self.db["active_pid"])
        active = self.db["active"]
        if not cur.set_range(prefix):
            return
        n = len(prefix)
        for k in cur.iternext(values=False):
            if not k.startswith(prefix):
                break
            enc_key = k[n:]
            v = txn.get(ep.encode() + SEP + enc_key, db=active)
            if v is not None:
                yield enc_key, v

    # -- accession numbers -----------------------------------------------------

    def accession_taken(self, txn: lmdb.Transaction, accession: str) -> bool:
        return txn.get(accession.encode(), db=self.db["accession"]) is not None

    def bind_accession(self, txn: lmdb.Transaction, accession: str, ep: str, enc_key: str) -> None:
        if not txn.put(accession.encode(), key(ep, enc_key), db=self.db["accession"], overwrite=False):
            raise StoreError("accession number already issued")

    def accession_owner(self, txn: lmdb.Transaction, accession: str) -> tuple[str, str] | None:
        raw = txn.get(accession.encode(), db=self.db["accession"])
        if raw is None:
            return None
        ep, enc_key = bytes(raw).split(SEP, 1)
        return ep.decode(), enc_key.decode()
