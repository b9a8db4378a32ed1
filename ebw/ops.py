"""Operations on a data dir: ``ebw check``, ``ebw backup``, ``ebw restore``, ``ebw stats``.

``check`` validates what ``ebw serve`` would need, without starting: every
``EBW_*`` value (as ``ebw config --check``), the data dir writable, every
listening port free (a bind test on the address it would use, for the default
endpoint, the endpoints created through the API and the HTTP listener), and
the LMDB store openable with this EBW's schema.

``backup`` takes a consistent hot copy while the server is serving: one LMDB
read transaction (a snapshot: writers go on, LMDB is multi-version) is
copied with compaction (``mdb_env_copy2``) and counted for the manifest in the
same transaction; then the study files are copied.  A study file is written
and synced before the instance is recorded in LMDB and never changes after,
so every file the snapshot refers to exists when the copy starts.  Layout::

    DEST/lmdb/data.mdb     the compacted LMDB snapshot
    DEST/studies/...       the received DICOM files (unless --no-studies)
    DEST/backup.json       when, from where, schema, what the snapshot holds

``restore`` (server stopped: refused while a worker of the data dir is alive
or another process has the LMDB environment open) builds the restored store in
a work directory inside the data dir, carries every counter (``seq:*``:
accession numbers, ORU control ids ...) forward to the larger of the backup's
and the current store's value -- so no accession number or ORU MSH-10 is ever
issued twice, even for numbers issued after the backup -- then moves the
current contents aside (``<data dir>/before-restore-<time>/``) and the restored
ones in.  All inside the data dir: it may be a mount point (a volume) whose
parent the service user cannot write.

``stats`` reads the store in one read transaction (safe while serving).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from . import __version__
from .config import Config, EndpointConfig
from .errors import EbwError
from .store import DBS, SCHEMA_VERSION, dumps, journal_header, loads

MANIFEST = "backup.json"
_U64 = struct.Struct(">Q")


# -- the store, read-only ------------------------------------------------------------


def lmdb_path(data_dir: str) -> str:
    return os.path.join(data_dir, "lmdb")


def has_store(data_dir: str) -> bool:
    return os.path.isfile(os.path.join(lmdb_path(data_dir), "data.mdb"))


class ReadOnlyStore:
    """The LMDB environment of a data dir opened read-only (beside a running server)."""

    def __init__(self, data_dir: str, lock: bool = True) -> None:
        """``lock=False``: for a store no process writes (a backup), possibly on read-only media."""
        path = lmdb_path(data_dir)
        if not has_store(data_dir):
            raise EbwError(f"no LMDB store at {path}")
        try:
            self.env = lmdb.open(
                path,
                readonly=True,
                map_size=0,  # 0: the size the store was last written with
                max_dbs=len(DBS) + 4,
                max_readers=2048,
                lock=lock,
                subdir=True,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise EbwError(f"cannot open the LMDB store at {path}: {exc}") from exc
        self.path = path
        self.db: dict[str, Any] = {}
        try:
            # without a txn argument py-lmdb opens each db in its own read transaction and keeps the
            # handle (handles opened in a read transaction passed in die with it)
            self.db = {name: self.env.open_db(name.encode(), create=False) for name in DBS}
        except lmdb.NotFoundError as exc:
            self.env.close()
            raise EbwError(f"{path} is not an EBW store of schema {SCHEMA_VERSION}: {exc}") from exc
        with self.read() as txn:
            schema = txn.get(b"schema", db=self.db["meta"])
        if schema is None or int(schema) != SCHEMA_VERSION:
            self.env.close()
            found = "none" if schema is None else int(schema)
            raise EbwError(f"{path}: LMDB schema {found}, this EBW reads schema {SCHEMA_VERSION}")

    def _begin(self) -> lmdb.Transaction:
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:  # the server grew the map: adopt its size
            self.env.set_mapsize(0)
            return self.env.begin(buffers=False)

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        txn = self._begin()
        try:
            yield txn
        finally:
            txn.abort()

    def close(self) -> None:
        self.env.close()


def counters(txn: lmdb.Transaction, meta: Any) -> dict[str, int]:
    """Every ``seq:<name>`` counter of the meta db."""
    out = {}
    cur = txn.cursor(db=meta)
    if cur.set_range(b"seq:"):
        for k, v in cur:
            k = bytes(k)
            if not k.startswith(b"seq:"):
                break
            if len(v) == 8:
                out[k[4:].decode()] = _U64.unpack(bytes(v))[0]
    return out


def collect_stats(store: ReadOnlyStore, txn: lmdb.Transaction) -> dict[str, Any]:
    """What the store holds, from one read transaction."""
    db = store.db
    endpoints = {bytes(k).decode(): loads(v) for k, v in txn.cursor(db=db["endpoints"])}
    open_by_ep: dict[str, Counter[str]] = {ep: Counter() for ep in endpoints}
    for k, v in txn.cursor(db=db["active"]):
        ep = bytes(k).split(b"\0", 1)[0].decode()
        open_by_ep.setdefault(ep, Counter())[bytes(v)[:-8].decode()] += 1
    stored_by_ep: Counter[str] = Counter()
    for k in txn.cursor(db=db["enc"]).iternext(values=False):
        stored_by_ep[bytes(k).split(b"\0", 1)[0].decode()] += 1
    exams: dict[str, Counter[str]] = {"state": Counter(), "oru": Counter(), "push": Counter()}
    orphans = 0
    for _k, v in txn.cursor(db=db["exams"]):
        exam = loads(v)
        exams["state"][exam.get("state", "")] += 1
        exams["oru"][(exam.get("oru") or {}).get("state") or "none"] += 1
        exams["push"][(exam.get("push") or {}).get("state") or "none"] += 1
        orphans += bool(exam.get("orphan"))
    oldest = None
    cur = txn.cursor(db=db["journal"])
    if cur.first():
        oldest = journal_header(bytes(cur.value())).get("t")
    info, stat = store.env.info(), store.env.stat()
    used = (info["last_pgno"] + 1) * stat["psize"]
    data_file = os.path.join(store.path, "data.mdb")
    return {
        "schema": SCHEMA_VERSION,
        "endpoints": {
            ep: {
                "name": s.get("name", ""),
                "hl7_port": s.get("hl7_port"),
                "dicom_port": s.get("dicom_port"),
                "scp_aet": s.get("scp_aet", ""),
                "active": open_by_ep.get(ep, Counter())["active"],
                "pending": open_by_ep.get(ep, Counter())["pending"],
                "encounters": stored_by_ep[ep],
            }
            for ep, s in sorted(endpoints.items())
        },
        "encounters": txn.stat(db["enc"])["entries"],
        "journal_entries": txn.stat(db["journal"])["entries"],
        "journal_oldest": oldest,
        "accession_numbers": txn.stat(db["accession"])["entries"],
        "counters": counters(txn, db["meta"]),
        "exams": {k: dict(sorted(v.items())) for k, v in exams.items()},
        "orphan_studies": orphans,
        "lmdb": {
            "map_used_bytes": used,
            "map_size_bytes": info["map_size"],
            "file_bytes": os.path.getsize(data_file) if os.path.exists(data_file) else 0,
        },
    }


def stats(data_dir: str) -> dict[str, Any]:
    store = ReadOnlyStore(data_dir)
    try:
        with store.read() as txn:
            return collect_stats(store, txn)
    finally:
        store.close()


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def format_stats(data_dir: str, s: dict[str, Any]) -> list[str]:
    lm = s["lmdb"]
    share = lm["map_used_bytes"] / lm["map_size_bytes"] * 100 if lm["map_size_bytes"] else 0.0
    lines = [
        f"data dir: {os.path.abspath(data_dir)} (schema {s['schema']})",
        f"LMDB map: {_mib(lm['map_used_bytes'])} used of {_mib(lm['map_size_bytes'])} ({share:.1f}%); "
        f"data.mdb {_mib(lm['file_bytes'])}",
        f"endpoints: {len(s['endpoints'])}",
    ]
    for ep, e in s["endpoints"].items():
        lines.append(
            f"  {ep} ({e['name']}; HL7 {e['hl7_port']}, DICOM {e['dicom_port']}, AE {e['scp_aet']}): "
            f"{e['active']} active encounters, {e['pending']} pending, {e['encounters']} stored"
        )
    oldest = s["journal_oldest"]
    since = f" (oldest {_dt.datetime.fromtimestamp(oldest, _dt.timezone.utc):%Y-%m-%d %H:%M} UTC)" if oldest else ""
    lines += [
        f"encounters stored: {s['encounters']}",
        f"journal entries: {s['journal_entries']}{since}",
        f"accession numbers recorded: {s['accession_numbers']} (counter at {s['counters'].get('accession', 0)})",
    ]
    ex = s["exams"]
    for what in ("state", "oru", "push"):
        counts = ", ".join(f"{k} {v}" for k, v in ex[what].items()) or "none"
        lines.append(f"exams by {what}: {counts}")
    lines.append(f"orphan studies: {s['orphan_studies']}")
    return lines


# -- is a server using the data dir? ----------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid is not ours
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ebw" in f.read()
    except OSError:
        return True


def lmdb_locked(data_dir: str) -> bool:
    """True when another process has the LMDB environment open: each one holds a shared
    fcntl lock on the first byte of ``lock.mdb`` for as long as it has it open."""
    lock = os.path.join(lmdb_path(data_dir), "lock.mdb")
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return True
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def in_use(data_dir: str) -> list[str]:
    """Why the data dir is in use (empty: it is not)."""
    reasons = []
    run = os.path.join(data_dir, "run")
    try:
        names = sorted(os.listdir(run))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    pids = set()
    for name in names:
        kind, _, pid = name.partition(".")
        if kind in ("heartbeat", "ready", "timers-ready") and pid.isdigit() and _pid_alive(int(pid)):
            pids.add(int(pid))
    if pids:
        reasons.append(f"ebw serve is running on {data_dir} (live processes {', '.join(map(str, sorted(pids)))})")
    if lmdb_locked(data_dir):
        reasons.append(f"another process has the LMDB environment {lmdb_path(data_dir)} open")
    return reasons


# -- check ----------------------------------------------------------------------------


def _listeners(cfg: Config, store: ReadOnlyStore | None) -> list[tuple[str, str, int]]:
    """(what, host, port) of every socket ``ebw serve`` would bind, as the supervisor
    would choose them: stored endpoints, the default one from the environment when its
    EBW_* values changed since they were last applied."""
    env_ep = cfg.endpoint.to_dict()
    endpoints: dict[str, dict[str, Any]] = {}
    if store is not None:
        with store.read() as txn:
            endpoints = {bytes(k).decode(): loads(v) for k, v in txn.cursor(db=store.db["endpoints"])}
            applied = txn.get(b"env_endpoint", db=store.db["meta"])
        if applied != dumps(env_ep) or "default" not in endpoints:
            from .supervisor import env_endpoint_settings

            last = None if applied is None else bytes(applied)
            endpoints["default"] = env_endpoint_settings(env_ep, last, endpoints.get("default"))
    else:
        endpoints["default"] = env_ep
    out = [("EBW_HTTP_PORT", cfg.http_host, cfg.http_port)]
    for ep, s in sorted(endpoints.items()):
        e = EndpointConfig.from_dict(s)
        prefix = "EBW_" if ep == "default" else f"endpoint {ep}: "
        out.append((prefix + "HL7_PORT", e.hl7_host, e.hl7_port))
        out.append((prefix + "DICOM_PORT", e.dicom_host, e.dicom_port))
    return out


def port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            s.bind((host, port))
            s.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "port already in use"
        return exc.strerror or str(exc)
    return None


def _dir_problem(data_dir: str) -> str | None:
    """Why the data dir cannot be used (None: it can)."""
    if os.path.exists(data_dir):
        if not os.path.isdir(data_dir):
            return "is not a directory"
        probe = os.path.join(data_dir, f".ebw-check.{os.getpid()}")
        try:
            with open(probe, "wb") as f:
                f.write(b"x")
                f.flush()
                os.fsync(f.fileno())
            os.unlink(probe)
        except OSError as exc:
            return f"is not writable: {exc.strerror or exc}"
        return None
    parent = os.path.dirname(os.path.abspath(data_dir))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and cannot be created ({parent} is not writable)"
    return None


def check(cfg: Config) -> tuple[list[str], list[str]]:
    """(problems, notes) for ``cfg``: one line each."""
    problems: list[str] = []
    notes: list[str] = []
    data_dir = cfg.data_dir
    bad_dir = _dir_problem(data_dir)
    if bad_dir:
        problems.append(f"EBW_DATA_DIR={data_dir!r}: {bad_dir}")
    else:
        notes.append(f"data dir {os.path.abspath(data_dir)} is writable")
    store = None
    if not bad_dir and has_store(data_dir):
        try:
            store = ReadOnlyStore(data_dir)
        except EbwError as exc:
            problems.append(f"EBW_DATA_DIR={data_dir!r}: {exc}")
        else:
            lm = store.env.info()["map_size"]
            notes.append(f"LMDB store opens (schema {SCHEMA_VERSION}, map {_mib(lm)})")
    elif not bad_dir:
        notes.append("no LMDB store yet: created at the first start")
    running = in_use(data_dir) if not bad_dir else []
    try:
        seen: dict[int, str] = {}
        for what, host, port in _listeners(cfg, store):
            if port in seen:
                problems.append(f"{what}={port}: the same port as {seen[port]}")
                continue
            seen[port] = what
            why = port_problem(host, port)
            if why:
                hint = " (ebw serve is running on this data dir)" if running and why.endswith("in use") else ""
                problems.append(f"{what}={port}: cannot listen on {host}:{port}: {why}{hint}")
        notes.append(f"ports checked: {', '.join(str(p) for p in seen)}")
    finally:
        if store is not None:
            store.close()
    return problems, notes


# -- backup ----------------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_studies(src_root: str, dst_root: str) -> tuple[int, int]:
    """Copy every received DICOM file (not the temporaries of writes in flight).
    (files, bytes)."""
    files = size = 0
    if not os.path.isdir(src_root):
        return 0, 0
    for dirpath, _dirs, names in os.walk(src_root):
        rel = os.path.relpath(dirpath, src_root)
        target = os.path.normpath(os.path.join(dst_root, rel))
        made = False
        for name in names:
            if not name.endswith(".dcm"):
                continue
            if not made:
                os.makedirs(target, exist_ok=True)
                made = True
            dst = os.path.join(target, name)
            try:
                shutil.copy2(os.path.join(dirpath, name), dst)
            except FileNotFoundError:
                continue
            _fsync_file(dst)
            files += 1
            size += os.path.getsize(dst)
        if made:
            _fsync_dir(target)
    return files, size


def backup(data_dir: str, dest: str, studies: bool = True) -> dict[str, Any]:
    """Hot copy of ``data_dir`` into ``dest`` (a new or empty directory); the manifest."""
    os.umask(0o077)  # patient data: files 0600, directories 0700, as the server writes them
    data_dir = os.path.abspath(data_dir)
    dest = os.path.abspath(dest)
    if dest == data_dir or dest.startswith(data_dir + os.sep):
        raise EbwError(f"the backup destination {dest} is inside the data dir")
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise EbwError(f"the backup destination {dest} exists and is not an empty directory")
    store = ReadOnlyStore(data_dir)
    t0 = time.time()
    try:
        os.makedirs(os.path.join(dest, "lmdb"), exist_ok=True)
        with store.read() as txn:
            # one read transaction: the copy and the counts are the same snapshot
            store.env.copy(os.path.join(dest, "lmdb"), compact=True, txn=txn)
            counts = collect_stats(store, txn)
    finally:
        store.close()
    _fsync_file(os.path.join(dest, "lmdb", "data.mdb"))
    files = size = 0
    if studies:
        files, size = _copy_studies(os.path.join(data_dir, "studies"), os.path.join(dest, "studies"))
    manifest = {
        "ebw_version": __version__,
        "schema": SCHEMA_VERSION,
        "source": data_dir,
        "snapshot_at": t0,
        "snapshot_at_utc": _dt.datetime.fromtimestamp(t0, _dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_at": time.time(),
        "lmdb_bytes": os.path.getsize(os.path.join(dest, "lmdb", "data.mdb")),
        "studies": {"included": studies, "files": files, "bytes": size},
        "stats": counts,
    }
    tmp = os.path.join(dest, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(dest, MANIFEST))
    _fsync_dir(dest)
    return manifest


# -- restore ----------------------------------------------------------------------------


def _chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirs, names in os.walk(path):
        for n in dirs + names:
            os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


def restore(data_dir: str, src: str, map_size_mb: int) -> dict[str, Any]:
    """Restore the backup ``src`` into ``data_dir`` (server stopped); what was done."""
    os.umask(0o077)  # patient data: files 0600, directories 0700, as the server writes them
    data_dir = os.path.abspath(data_dir.rstrip(os.sep) or os.sep)
    src = os.path.abspath(src)
    busy = in_use(data_dir)
    if busy:
        raise EbwError("; ".join(busy) + ": stop the server before restoring")
    if not has_store(src):
        raise EbwError(f"{src} is not an EBW backup: no lmdb/data.mdb")
    manifest: dict[str, Any] = {}
    if os.path.exists(os.path.join(src, MANIFEST)):
        with open(os.path.join(src, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    backup_store = ReadOnlyStore(src, lock=False)  # checks the schema
    with backup_store.read() as txn:
        restored_counters = counters(txn, backup_store.db["meta"])
    backup_store.close()
    current_counters: dict[str, int] = {}
    if has_store(data_dir):
        try:
            current = ReadOnlyStore(data_dir)
        except EbwError:
            current = None  # unreadable: that is what the restore is for
        if current is not None:
            with current.read() as txn:
                current_counters = counters(txn, current.db["meta"])
            current.close()

    # Everything happens inside the data dir (it may be a mount point, and its parent not
    # writable by the service user): the restored copy is built in a work directory there,
    # then the current entries move to before-restore-<time>/ and the restored ones in.
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(data_dir, exist_ok=True)
    work = os.path.join(data_dir, f".restoring-{stamp}")
    aside = os.path.join(data_dir, f"before-restore-{stamp}")
    os.makedirs(os.path.join(work, "lmdb"))
    try:
        shutil.copyfile(os.path.join(src, "lmdb", "data.mdb"), os.path.join(work, "lmdb", "data.mdb"))
        # counters never go back: numbers issued after the backup are not issued again
        raised: dict[str, tuple[int, int]] = {}
        env = lmdb.open(
            os.path.join(work, "lmdb"), map_size=map_size_mb * 1024 * 1024, max_dbs=len(DBS) + 4, subdir=True
        )
        try:
            with env.begin(write=True) as txn:
                meta = env.open_db(b"meta", txn=txn, create=False)
                for name, value in sorted(current_counters.items()):
                    if value > restored_counters.get(name, 0):
                        txn.put(b"seq:" + name.encode(), _U64.pack(value), db=meta)
                        raised[name] = (restored_counters.get(name, 0), value)
            env.sync(True)
        finally:
            env.close()
        try:
            os.unlink(os.path.join(work, "lmdb", "lock.mdb"))
        except FileNotFoundError:
            pass
        studies_from = src
        if not manifest.get("studies", {}).get("included", True):
            studies_from = data_dir  # a --no-studies backup: keep the files the server has now
        files, _size = _copy_studies(os.path.join(studies_from, "studies"), os.path.join(work, "studies"))
        st = os.stat(data_dir)
        if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
            _chown_tree(work, st.st_uid, st.st_gid)  # the service user keeps its data
        _fsync_dir(os.path.join(work, "lmdb"))
        _fsync_dir(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    moved = []
    os.makedirs(aside)
    for name in sorted(os.listdir(data_dir)):
        if name.startswith((".restoring-", "before-restore-")):
            continue
        os.rename(os.path.join(data_dir, name), os.path.join(aside, name))
        moved.append(name)
    for name in os.listdir(work):
        os.rename(os.path.join(work, name), os.path.join(data_dir, name))
    os.rmdir(work)
    if not moved:
        os.rmdir(aside)
    _fsync_dir(data_dir)
    return {
        "data_dir": data_dir,
        "previous": aside if moved else None,
        "backup_taken": manifest.get("snapshot_at_utc", "unknown"),
        "study_files": files,
        "counters_raised": raised,
    }
