"""The JSON API on the HTTP port: exams (studies received, ORU and PACS push state).

    GET  /api/exams                      every exam (newest first; ?limit=N, default 200)
         ?orphan=1                       ... that match no encounter
         ?oru=dead | pending | sent      ... by ORU state (dead = the dead letters)
         ?state=open | complete | discontinued
         ?endpoint=<id>
    POST /api/exams/<endpoint>/<Study Instance UID>/complete    complete an exam now
    POST /api/exams/<endpoint>/<Study Instance UID>/retry-oru   send a dead-lettered ORU again

Exams are listed without patient data: endpoint, study UID, accession number,
encounter key (the visit number the EHR sent), states, counts and times.
Runs in the supervisor: each request opens the LMDB environment briefly.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, unquote

from . import exams
from .config import Config, EndpointConfig
from .store import Store


class Api:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def _store(self) -> Store:
        return Store(self.cfg.data_dir, self.cfg.lmdb_map_size_mb, sync=self.cfg.fsync)

    def handle(self, method: str, path: str, query: str) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] != ["api", "exams"]:
            return 404, {"error": "not found"}
        if method == "GET" and len(parts) == 2:
            return 200, self.list_exams(parse_qs(query))
        if method == "GET" and len(parts) == 4:
            return self.one(parts[2], parts[3])
        if method == "POST" and len(parts) == 5 and parts[4] in ("complete", "retry-oru"):
            return self.act(parts[2], parts[3], parts[4])
        if len(parts) in (2, 4, 5):
            return 405, {"error": f"{method} not allowed here"}
        return 404, {"error": "not found"}

    def list_exams(self, q: dict[str, list[str]]) -> dict[str, Any]:
        def arg(name: str) -> str:
            return (q.get(name) or [""])[0]

        limit = int(arg("limit")) if arg("limit").isdigit() else 200
        store = self._store()
        try:
            with store.read() as txn:
                found = [
                    e
                    for e in exams.all_exams(store, txn, arg("endpoint") or None)
                    if (not arg("orphan") or e["orphan"] == (arg("orphan") in ("1", "true", "yes")))
                    and (not arg("oru") or e["oru"]["state"] == arg("oru"))
                    and (not arg("state") or e["state"] == arg("state"))
                ]
        finally:
            store.close()
        found.sort(key=lambda e: e["first_at"], reverse=True)
        return {"count": len(found), "exams": [public(e) for e in found[:limit]]}

    def one(self, ep: str, study_uid: str) -> tuple[int, Any]:
        store = self._store()
        try:
            with store.read() as txn:
                exam = exams.get(store, txn, ep, study_uid)
        finally:
            store.close()
        return (404, {"error": "no such exam"}) if exam is None else (200, public(exam))

    def act(self, ep: str, study_uid: str, action: str) -> tuple[int, Any]:
        store = self._store()
        try:
            with store.write() as txn:
                exam = exams.get(store, txn, ep, study_uid)
                settings = store.get_endpoint(txn, ep)
                if exam is None or settings is None:
                    return 404, {"error": "no such exam"}
                cfg = EndpointConfig.from_dict(settings)
                now = time.time()
                if action == "complete":
                    if exam["state"] != exams.OPEN:
                        return 409, {"error": f"exam is {exam['state']}", "exam": public(exam)}
                    exam = exams.complete(store, txn, exam, cfg, "api", now)
                else:
                    if exam["oru"]["state"] != "dead":
                        return 409, {"error": f"ORU is {exam['oru']['state'] or 'not due'}", "exam": public(exam)}
                    exam["oru"].update(state="pending", attempts=0, next_at=now)
                    exams.put(store, txn, exam)
        finally:
            store.close()
        return 200, public(exam)


def public(exam: dict[str, Any]) -> dict[str, Any]:
    """An exam as the API shows it (no patient data)."""
    oru, push = exam["oru"], exam["push"]
    return {
        "endpoint": exam["ep"],
        "study_uid": exam["study_uid"],
        "accession": exam["accession"],
        "encounter": exam["key"],
        "orphan": exam["orphan"],
        "state": exam["state"],
        "completed_by": exam["completed_by"],
        "instances": exam["instances"],
        "first_at": exam["first_at"],
        "last_at": exam["last_at"],
        "completed_at": exam["completed_at"],
        "oru": {k: oru[k] for k in ("state", "msh10", "attempts", "detail", "sent_at")},
        "push": {
            "state": push["state"],
            "due_at": push["due_at"],
            "attempts": push["attempts"],
            "sent": len(push["sent"]),
            "detail": push["detail"],
            "done_at": push["done_at"],
        },
    }
