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
enc            ``ep\\0<encounter key>``                encounter record (``pack_record``: plain-type
                                                       pickle; JSON before 2026-11-28, still read)
active         ``ep\\0<encounter key>``                ``active`` / ``pending`` + 8-byte issue time of
                                                       the current accession: open encounters
due            ``ep\\0`` + 8-byte issue time + enc key  b"" -- open encounters by the issue time of
                                                       their accession number (rotation order)
moved          ``ep\\0<old encounter key>``            new encounter key (visit re-key / merge)
exams          ``ep\\0<Study Instance UID>``           exam record (JSON, ``ebw.exams``): the study,
                                                       its encounter, ORU and PACS push state
instances      ``ep\\0<study>\\0<SOP Instance UID>``   instance (JSON): file, SOP class, transfer syntax
mpps           ``<MPPS SOP Instance UID>``             MPPS (JSON): endpoint, status, studies
exam_open      ``ep\\0<Study Instance UID>``           b"" -- exams with work left (ORU, push)
ehr / pacs     ``<id>``                                EHR connection / PACS destination (JSON, API)
orgs           ``<id>``                                organization (JSON): name, primary worklist
users          ``<id>``                                API user (JSON): role, SHA-256 of the token
tokens         SHA-256 of a token (hex)                user id
audit          8-byte sequence number                  who changed what, when (JSON)
seen           ``ep\\0MSH-3\\0MSH-4\\0MSH-10``        time applied (8-byte float): duplicate check
changes        8-byte sequence number                  ``ep\\0<encounter key>`` changed (feed for the
                                                       workers' in-memory worklists; bounded)
journal        8-byte sequence number                  every message received, verbatim: header
                                                       length (+0x8000), JSON header, the bytes as
                                                       received (older entries: raw deflate)
patient        ``ep\\0<PatientID>\\0<issuer>\\0<enc key>`` b"" -- every encounter of a patient
accession      8-byte number (the shared counter)      issue time, flags, ``<accession>\\0ep\\0<enc key>``
                                                       -- kept for EBW_JOURNAL_RETENTION_DAYS,
                                                       numbers used by an exam for good
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

import contextlib
import ctypes
import io
import json
import mmap
import os
import pickle
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import lmdb

from .errors import StoreError

SCHEMA_VERSION = 2
SEP = b"\x00"
DBS = (
    "meta",
    "endpoints",
    "enc",
    "active",
    "due",
    "moved",
    "patient",
    "accession",
    "seen",
    "journal",
    "changes",
    "exams",
    "instances",
    "mpps",
    "exam_open",
    "ehr",
    "pacs",
    "orgs",
    "users",
    "tokens",
    "audit",
)
INDEX_DBS = ("enc", "active", "due", "moved", "patient", "seen", "changes")  # rebuilt by `ebw replay`

_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_ACC = struct.Struct(">dB")  # accession db value head: issue time, flags
ACC_USED = 1  # the number was used by an exam (MPPS or stored image)
_U16 = struct.Struct(">H")


_RAW = 0x8000  # journal entry flag (in the header length): the message is stored as received


def pack_message(raw: bytes) -> bytes:
    """A received message as the journal keeps it: as received.  (Entries written before
    this release are raw deflate; both are read.  Deflate cost ~40 us a message on the
    ingest path for a 43% smaller journal; the journal is pruned after
    EBW_JOURNAL_RETENTION_DAYS, so the bytes were the cheaper resource.)"""
    return raw


def journal_header(value: bytes) -> dict[str, Any]:
    """The JSON header of a journal entry (receive time, endpoint, sender, ACK ...)."""
    n = _U16.unpack(value[:2])[0] & ~_RAW
    return loads(value[2 : 2 + n])  # type: ignore[no-any-return]


def _unpack_journal(value: bytes) -> tuple[dict[str, Any], bytes]:
    n = _U16.unpack(value[:2])[0]
    body = value[2 + (n & ~_RAW) :]
    return journal_header(value), bytes(body) if n & _RAW else zlib.decompress(body, -12)


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # made once: dumps runs per message


def dumps(obj: Any) -> bytes:
    return _JSON.encode(obj).encode("utf-8")


def pack_record(record: dict[str, Any]) -> bytes:
    """An encounter record as the ``enc`` db keeps it: pickle protocol 5 of plain types
    (dict, list, str, int, float, bool, None).  Read and written once or more for every
    message, where JSON cost ~2x as much; ``loads`` reads both (records written before
    this release are JSON)."""
    return pickle.dumps(record, 5)


class _PlainUnpickler(pickle.Unpickler):
    """Reads plain-type pickles only: a record never names a class, so any global it
    asks for is refused (a crafted value cannot run code)."""

    def find_class(self, module: str, name: str) -> Any:
        raise StoreError(f"stored record names {module}.{name}: refused")


def loads(raw: bytes | memoryview) -> Any:
    data = bytes(raw)
    if data[:1] == b"\x80":  # pickle (encounter records), else JSON
        return _PlainUnpickler(io.BytesIO(data)).load()
    return json.loads(data)


def key(*parts: str) -> bytes:
    return "\x00".join(parts).encode("utf-8")  # = SEP.join of each part's UTF-8: NUL is one byte


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
        self._install: uuid.UUID | None = None
        self._rw = SharedLock()
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
                txn.put(b"install", uuid.uuid4().bytes, db=meta)
            elif int(raw) != SCHEMA_VERSION:
                raise StoreError(f"LMDB schema {int(raw)} found, this EBW reads schema {SCHEMA_VERSION}")

    def install_id(self, txn: lmdb.Transaction) -> uuid.UUID:
        """This installation's random namespace (made once, kept in the meta db)."""
        if self._install is None:
            raw = txn.get(b"install", db=self.db["meta"])
            if raw is None:
                raise StoreError("LMDB environment has no installation id")
            self._install = uuid.UUID(bytes=bytes(raw))
        return self._install

    def close(self) -> None:
        self.env.close()

    def release_mapped_pages(self) -> int:
        """Drop this process's page-table entries for the LMDB map (madvise DONTNEED on
        the read-only file mapping): the pages stay in the OS page cache, shared, and a
        later read maps them again.  After a worker has read every open encounter into
        memory, its RSS then shows what it holds itself instead of the file pages the
        load touched (the kernel maps cached pages around each fault).  Returns the
        bytes of mapping advised; 0 where unsupported."""
        target = os.path.realpath(os.path.join(self.path, "data.mdb"))
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            done = 0
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and parts[5].strip() == target and "w" not in parts[1]:
                        start, end = (int(x, 16) for x in parts[0].split("-"))
                        size = ctypes.c_size_t(end - start)
                        if libc.madvise(ctypes.c_void_p(start), size, mmap.MADV_DONTNEED) == 0:
                            done += end - start
            return done
        except (OSError, AttributeError, ValueError):
            return 0

    # -- transactions ------------------------------------------------------
    #
    # LMDB lets a process change its map size only while it has no transaction
    # open, so every transaction holds ``_rw`` shared and a resize holds it
    # exclusively.  When another process grew the map, beginning a transaction
    # fails with MapResizedError: adopt the new size and begin again.

    @contextlib.contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self._rw.shared(), self._begin(False) as txn:
            yield txn

    @contextlib.contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        with self._rw.shared(), self._begin(True) as txn:
            yield txn

    def _begin(self, write: bool) -> lmdb.Transaction:
        try:
            return self.env.begin(write=write, buffers=False)
        except lmdb.MapResizedError:
            pass
        self._rw.release_shared()
        try:
            with self._rw.exclusive():
                self.env.set_mapsize(0)  # adopt the size another process set
        finally:
            self._rw.acquire_shared()
        return self.env.begin(write=write, buffers=False)

    def grow(self) -> bool:
        """The map is full: make it bigger (twice the size, or used + 64 MiB if more),
        as far as the filesystem has room.  Call with no transaction open in this
        thread.  False if it cannot grow."""
        with self._rw.exclusive():
            info = self.env.info()
            size, used = info["map_size"], (info["last_pgno"] + 1) * self.env.stat()["psize"]
            st = os.statvfs(self.path)
            on_disk = os.path.getsize(os.path.join(self.path, "data.mdb"))
            room = st.f_bavail * st.f_frsize + on_disk
            new = min(max(size * 2, used + 64 * 1024 * 1024), room)
            new -= new % (1024 * 1024)
            if new <= size:
                return False
            self.env.set_mapsize(new)
        return True

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

    def put_endpoint(self, txn: lmdb.Transaction, ep_id: str, settings: dict[str, Any]) -> bool:
        """Store an endpoint's settings; True (and the settings version moves on, so
        every process picks them up) if they changed."""
        raw = dumps(settings)
        if txn.get(ep_id.encode(), db=self.db["endpoints"]) == raw:
            return False
        txn.put(ep_id.encode(), raw, db=self.db["endpoints"])
        self.next_seq(txn, "endpoints")
        return True

    def endpoints_version(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq:endpoints", db=self.db["meta"])
        return _U64.unpack(raw)[0] if raw else 0

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
        txn.put(k, pack_record(record), db=self.db["enc"])
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

    def has_encounters(self, txn: lmdb.Transaction, ep: str) -> bool:
        """Does the index hold any encounter of endpoint ``ep`` (open or closed)?"""
        prefix = ep.encode("utf-8") + SEP
        cur = txn.cursor(db=self.db["enc"])
        return bool(cur.set_range(prefix)) and bytes(cur.key()).startswith(prefix)

    def count_encounters(self, txn: lmdb.Transaction) -> int:
        return txn.stat(self.db["enc"])["entries"]

    # -- the worklist (open encounters) -----------------------------------------

    def set_open(self, txn: lmdb.Transaction, ep: str, enc_key: str, status: str, issued: float) -> None:
        """Put an open encounter (status ``active`` or ``pending``) in the ``active`` db,
        and in the ``due`` db under ``issued``, the issue time of its accession number."""
        k = key(ep, enc_key)
        value = status.encode() + _F64.pack(issued)
        old = txn.get(k, db=self.db["active"])
        if old == value:
            return
        txn.put(k, value, db=self.db["active"])
        old_status, old_issued = _split_active(old)
        if old_issued != issued:
            if old is not None:
                txn.delete(_due_key(ep, old_issued, enc_key), db=self.db["due"])
            txn.put(_due_key(ep, issued, enc_key), b"", db=self.db["due"])
        delta = (status == "active") - (old_status == b"active")
        if delta:
            self.add_count(txn, f"active:{ep}", delta)

    def set_closed(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> None:
        k = key(ep, enc_key)
        old = txn.get(k, db=self.db["active"])
        if old is None:
            return
        txn.delete(k, db=self.db["active"])
        old_status, old_issued = _split_active(old)
        txn.delete(_due_key(ep, old_issued, enc_key), db=self.db["due"])
        if old_status == b"active":
            self.add_count(txn, f"active:{ep}", -1)

    def due(self, txn: lmdb.Transaction, ep: str, before: float, limit: int) -> list[str]:
        """Keys of open encounters of ``ep`` whose accession number was issued before
        ``before``, oldest first, at most ``limit``."""
        prefix = ep.encode() + SEP
        cur = txn.cursor(db=self.db["due"])
        out: list[str] = []
        if not cur.set_range(prefix):
            return out
        n = len(prefix)
        for k in cur.iternext(values=False):
            if not k.startswith(prefix) or _F64.unpack(k[n : n + 8])[0] >= before or len(out) >= limit:
                break
            out.append(k[n + 8 :].decode("utf-8"))
        return out

    def set_moved(self, txn: lmdb.Transaction, ep: str, old_key: str, new_key: str) -> None:
        """Remember that an encounter key became another (re-key or merge), so an accession
        number issued under the old key still finds the encounter."""
        txn.put(key(ep, old_key), new_key.encode("utf-8"), db=self.db["moved"])

    def current_key(self, txn: lmdb.Transaction, ep: str, enc_key: str) -> str:
        """Follow re-keys and merges from ``enc_key`` to the encounter's key now."""
        for _ in range(64):  # a chain of moves; bounded against a cycle
            raw = txn.get(key(ep, enc_key), db=self.db["moved"])
            if raw is None:
                break
            enc_key = bytes(raw).decode("utf-8")
        return enc_key

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

    def bind_accession(
        self, txn: lmdb.Transaction, number: int, accession: str, ep: str, enc_key: str, issued: float
    ) -> bool:
        """Record that ``accession`` (counter value ``number``) was issued to an encounter.
        False if that number is already recorded (it is then not issued again)."""
        value = _ACC.pack(issued, 0) + accession.encode() + SEP + key(ep, enc_key)
        return bool(txn.put(_U64.pack(number), value, db=self.db["accession"], overwrite=False))

    def _accession_entry(self, txn: lmdb.Transaction, accession: str) -> tuple[bytes, bytes] | None:
        i = len(accession)
        while i and accession[i - 1] in "0123456789":
            i -= 1
        if i == len(accession) or len(accession) - i > 19:
            return None
        k = _U64.pack(int(accession[i:]))
        raw = txn.get(k, db=self.db["accession"])
        if raw is None:
            return None
        raw = bytes(raw)
        text = raw[_ACC.size :].split(SEP, 1)[0]
        return (k, raw) if text == accession.encode() else None

    def lookup_accession(self, txn: lmdb.Transaction, accession: str) -> dict[str, Any] | None:
        """Who an issued accession number belongs to: ``{"ep", "key", "issued", "used"}``,
        ``key`` following later re-keys and merges; None if unknown (or pruned)."""
        entry = self._accession_entry(txn, accession)
        if entry is None:
            return None
        _k, raw = entry
        issued, flags = _ACC.unpack(raw[: _ACC.size])
        _text, ep, enc_key = raw[_ACC.size :].split(SEP, 2)
        ep_s = ep.decode()
        return {
            "ep": ep_s,
            "key": self.current_key(txn, ep_s, enc_key.decode("utf-8")),
            "issued": issued,
            "used": bool(flags & ACC_USED),
        }

    def mark_accession_used(self, txn: lmdb.Transaction, accession: str) -> bool:
        """Flag a number as used by an exam: kept for good.  False if unknown."""
        entry = self._accession_entry(txn, accession)
        if entry is None:
            return False
        k, raw = entry
        issued, flags = _ACC.unpack(raw[: _ACC.size])
        txn.put(k, _ACC.pack(issued, flags | ACC_USED) + raw[_ACC.size :], db=self.db["accession"])
        return True

    def prune_accessions(self, txn: lmdb.Transaction, before: float, limit: int = 5000) -> int:
        """Forget up to ``limit`` numbers issued before ``before`` and never used by an exam,
        oldest first (numbers are issued in time order).  The counter never goes back, so a
        forgotten number is still never issued again."""
        cur = txn.cursor(db=self.db["accession"])
        n = seen = 0
        if not cur.first():
            return 0
        while seen < limit:
            raw = cur.value()
            issued, flags = _ACC.unpack(raw[: _ACC.size])
            if issued >= before:
                break
            seen += 1
            if flags & ACC_USED:
                if not cur.next():
                    break
                continue
            cur.delete()
            n += 1
            if cur.key() == b"":
                break
        return n

    # -- duplicates --------------------------------------------------------------

    def seen(self, txn: lmdb.Transaction, dk: bytes, digest: bytes = b"") -> bool:
        """Was the message ``dk`` (sender and MSH-10) applied, with this content digest?
        An id kept without a digest (older releases) matches any content."""
        raw = txn.get(dk, db=self.db["seen"])
        if raw is None:
            return False
        kept = bytes(raw[8:])
        return not kept or not digest or kept == digest

    def mark_seen(self, txn: lmdb.Transaction, dk: bytes, now: float, digest: bytes = b"") -> None:
        txn.put(dk, struct.pack(">d", now) + digest, db=self.db["seen"])

    def prune_seen(self, txn: lmdb.Transaction, before: float, start: bytes, limit: int = 20000) -> bytes:
        """Look at up to ``limit`` duplicate-check ids from ``start`` on (key order: the db
        has no time order), forget those recorded before ``before``; returns where to go on
        next time (b"" = from the beginning)."""
        cur = txn.cursor(db=self.db["seen"])
        if not (cur.set_range(start) if start else cur.first()):
            return b""
        for _ in range(limit):
            if _F64.unpack(cur.value()[:8])[0] < before:
                if not cur.delete() or not cur.key():
                    return b""
            elif not cur.next():
                return b""
        return bytes(cur.key())

    # -- journal -----------------------------------------------------------------

    def journal_append(self, txn: lmdb.Transaction, header: dict[str, Any] | bytes, packed: bytes) -> int:
        """Keep one received message verbatim with its header (receive time, endpoint,
        sender, ACK code ...: a dict, or its ``dumps`` already made).  ``packed`` is
        ``pack_message(raw)``, done by the caller outside the commit.  Keys are
        sequential, so appends touch few pages."""
        seq = self.next_seq(txn, "journal")
        head = header if isinstance(header, bytes) else dumps(header)
        if len(head) >= _RAW:
            raise StoreError("journal header too long")
        txn.put(_U64.pack(seq), _U16.pack(len(head) | _RAW) + head + packed, db=self.db["journal"], append=True)
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
            if journal_header(cur.value()).get("t", 0) >= before:
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


def _split_active(value: bytes | None) -> tuple[bytes | None, float]:
    """(status, accession issue time) of an ``active`` db value."""
    if value is None:
        return None, 0.0
    value = bytes(value)
    return value[:-8], _F64.unpack(value[-8:])[0]


def _due_key(ep: str, issued: float, enc_key: str) -> bytes:
    return ep.encode() + SEP + _F64.pack(issued) + enc_key.encode("utf-8")


class SharedLock:
    """Many holders of the shared side, or one of the exclusive side (no preference:
    a thread may nest shared holds without deadlock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    def acquire_shared(self) -> None:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if not self._shared:
                self._cond.notify_all()

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self, timeout: float = 30.0) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._exclusive or self._shared:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError("LMDB map resize: transactions of this process stay open")
                self._cond.wait(left)
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
