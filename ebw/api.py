"""The JSON API on the HTTP port (``/api/``), described by ``GET /api/openapi.json``.

Resources (all in LMDB, so every process sees them):

- ``/api/endpoints``: EBW endpoints with every parameter of the seed's settings
  screen plus curation, field mapping and access lists.  Values are checked with
  the same rules (and messages) as the ``EBW_*`` variables: 422 names the field
  and the rule.  Creating an endpoint, or changing its ports, binds its
  listeners in the supervisor first (409 if a port is in use) and then replaces
  the workers one generation at a time, so the new listeners answer in every
  worker without a restart and no connection is dropped.  Other changes are
  picked up by every worker within a second.
- ``/api/ehr-connections`` and ``/api/pacs-destinations``: ORU destinations and
  PACS destinations that endpoints refer to (``ehr_connection_id``,
  ``pacs_destination_id``); a change applies to every endpoint using them.
- ``/api/organizations``: each with a ``primary_worklist`` (an endpoint id).
- ``/api/endpoints/{id}/worklist``: the active items (paging, search), each
  with its recent accession numbers; ``/api/exams``: studies received, ORU and
  PACS-push state, dead letters (``ebw.exams``).
- ``/api/users`` (administrators): bearer tokens, stored as SHA-256 hashes and
  shown once; ``connectivity`` ``read`` or ``read_write``; ``admin``.
  ``/api/audit``: who changed what, when (setting names and values, never
  patient data).

Authentication: ``Authorization: Bearer <token>`` on every ``/api/`` path but
the OpenAPI document: 401 without a valid token, 403 when the role does not
allow the operation.  The first administrator's token comes from
``EBW_ADMIN_TOKEN`` or is generated at the first start and printed once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from . import config as config_mod
from . import exams
from .config import Config, EndpointConfig
from .store import Store, dumps, loads

log = logging.getLogger(__name__)

ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_FAILURES, FAIL_WINDOW = 20, 60.0  # failed authentications per source address per window: then 429

# API field -> EndpointConfig attribute (and the EBW_* variable whose rule applies)
ENDPOINT_FIELDS: dict[str, str] = {
    "display_name": "name",
    "hl7_host": "hl7_host",
    "hl7_port": "hl7_port",
    "dicom_host": "dicom_host",
    "dicom_port": "dicom_port",
    "scp_aet": "scp_aet",
    "procedure_id": "procedure_id",
    "procedure_description": "procedure_description",
    "pacs_push_delay_seconds": "pacs_push_delay_seconds",
    "timezone": "timezone",
    "modality": "modality",
    "accession_prefix": "accession_prefix",
    "accession_digits": "accession_digits",
    "accession_period_minutes": "accession_period_minutes",
    "curation": "curation",
    "hl7_charset": "hl7_charset",
    "patient_id_type": "patient_id_type",
    "patient_id_authority": "patient_id_authority",
    "visit_number": "visit_number",
    "location_components": "location_components",
    "location_separator": "location_separator",
    "station_aet_matching": "station_aet_matching",
    "calling_aets": "calling_aets",
    "dicom_allow_from": "dicom_allow_from",
    "cfind_max_results": "cfind_max_results",
    "vip_values": "vip_values",
    "hl7_processing_ids": "hl7_processing_ids",
    "broad_query_max": "broad_query_max",
    "quirks": "quirks",
    "exam_quiet_seconds": "exam_quiet_seconds",
    "oru_result_status": "oru_result_status",
    "oru_viewer_url": "oru_viewer_url",
}
EHR_FIELDS: dict[str, str] = {  # EHR connection field -> EndpointConfig attribute
    "host": "ehr_host",
    "port": "ehr_port",
    "sending_application": "oru_sending_application",
    "sending_facility": "oru_sending_facility",
    "receiving_application": "oru_receiving_application",
    "receiving_facility": "oru_receiving_facility",
    "ack_timeout_seconds": "oru_ack_timeout_seconds",
    "max_attempts": "oru_max_attempts",
}
PACS_FIELDS: dict[str, str] = {"aet": "pacs_aet", "host": "pacs_host", "port": "pacs_port"}
PORT_FIELDS = ("hl7_host", "hl7_port", "dicom_host", "dicom_port")
SETTINGS = {s.attr: s for s in config_mod.SETTINGS}


class ApiError(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.payload = {"error": message, **extra}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _setting_value(attr: str, value: Any, field: str) -> Any:
    """Check one value with the rule of its EBW_* variable; 422 names the field and the rule."""
    s = SETTINGS[attr]
    if isinstance(value, bool):
        raise ApiError(422, f"{field}: must be given as a string or number", field=field)
    if isinstance(value, list | tuple):
        raw = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        raw = json.dumps(value)
    else:
        raw = "" if value is None else str(value)
    try:
        return s.parse(raw)
    except ValueError as exc:
        raise ApiError(422, f"{field}: {exc}", field=field, rule=str(exc)) from None


class Api:
    """Routes ``/api/`` requests.  ``reconfigure(ep, old, new)`` (the supervisor) binds the
    listening sockets an endpoint change needs (ApiError 409 for a port in use) and
    returns ``apply(ok)``: called after the change is committed (True: replace the
    workers so they serve the new sockets and drop removed ones) or failed (False:
    release what was bound)."""

    def __init__(self, cfg: Config, reconfigure: Callable[..., Callable[[bool], None]], guard: Any = None) -> None:
        self.cfg = cfg
        self.reconfigure = reconfigure
        self.guard = guard  # held shared during a request (the supervisor does not fork meanwhile)
        self.store: Store | None = None
        self._open_lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}  # source address -> times of failed authentications
        self._fail_lock = threading.Lock()

    def _store(self) -> Store:
        """The supervisor's one LMDB environment (py-lmdb opens an environment once per
        process), opened on first use and shared by every request thread."""
        with self._open_lock:
            if self.store is None:
                self.store = Store(self.cfg.data_dir, self.cfg.lmdb_map_size_mb, sync=self.cfg.fsync)
            return self.store

    def forget_after_fork(self) -> None:
        """In a forked child: close the inherited environment (only this process's handles
        and mappings; the parent's are untouched) so the child can open its own."""
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- dispatch -------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: Any, body: bytes, peer: str = "") -> tuple[int, Any]:
        if self.guard is None:
            return self._handle(method, path, query, headers, body, peer)
        with self.guard.shared():
            return self._handle(method, path, query, headers, body, peer)

    def _handle(self, method: str, path: str, query: str, headers: Any, body: bytes, peer: str) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] != ["api"]:
            return 404, {"error": "not found"}
        if parts[1:] == ["openapi.json"] and method == "GET":
            from .openapi import document

            return 200, document()
        try:
            store = self._store()
        except Exception as exc:  # noqa: BLE001
            log.exception("API: cannot open the store")
            return 503, {"error": f"store unavailable: {type(exc).__name__}"}
        try:
            user = self._authenticate(store, headers, peer)
            data: Any = None
            if body:
                try:
                    data = json.loads(body)
                except ValueError:
                    raise ApiError(400, "the body is not JSON") from None
            return self._route(store, user, method, parts[1:], parse_qs(query), data)
        except ApiError as exc:
            return exc.code, exc.payload

    def _authenticate(self, store: Store, headers: Any, peer: str = "") -> dict[str, Any]:
        now = time.monotonic()
        with self._fail_lock:
            recent = [t for t in self._failures.get(peer, []) if now - t < FAIL_WINDOW]
            self._failures[peer] = recent
            if len(recent) >= MAX_FAILURES:
                raise ApiError(429, f"too many failed sign-ins from this address; try again in {FAIL_WINDOW:.0f} s")
        auth = (headers.get("Authorization") or "").strip()
        user = None
        if auth.lower().startswith("bearer "):
            # looked up by its SHA-256: the comparison never depends on how much of a token matches
            digest = token_hash(auth[7:].strip())
            with store.read() as txn:
                user_id = txn.get(digest.encode(), db=store.db["tokens"])
                user = None if user_id is None else _get(store, txn, "users", bytes(user_id).decode())
        if user is None:
            with self._fail_lock:
                self._failures.setdefault(peer, []).append(now)
            log.info("API: authentication failed from %s", peer or "?")
            if not auth:
                raise ApiError(401, "authentication required: Authorization: Bearer <token>")
            raise ApiError(401, "unknown or revoked token")
        return user

    def _route(
        self, store: Store, user: dict[str, Any], method: str, parts: list[str], q: dict[str, list[str]], data: Any
    ) -> tuple[int, Any]:
        if not parts:
            raise ApiError(404, "not found")
        head, rest = parts[0], parts[1:]
        collections: dict[str, tuple[str, Any]] = {
            "endpoints": ("connectivity", self.endpoints),
            "ehr-connections": ("connectivity", self.ehr_connections),
            "pacs-destinations": ("connectivity", self.pacs_destinations),
            "organizations": ("connectivity", self.organizations),
            "exams": ("connectivity", self.exams_route),
            "users": ("admin", self.users),
            "audit": ("admin", self.audit),
        }
        if head not in collections:
            raise ApiError(404, "not found")
        area, fn = collections[head]
        write = method in ("POST", "PUT", "DELETE")
        if area == "admin" and not user.get("admin"):
            raise ApiError(403, "administrators only")
        if area == "connectivity" and not user.get("admin"):
            role = user.get("connectivity", "")
            if role not in ("read", "read_write") or (write and role != "read_write"):
                raise ApiError(403, f"connectivity {'read_write' if write else 'read'} role required")
        return fn(store, user, method, rest, q, data)

    # -- audit ------------------------------------------------------------------------

    def _audit(self, store: Store, txn: Any, user: dict[str, Any], action: str, kind: str, oid: str, what: Any) -> None:
        seq = store.next_seq(txn, "audit")
        entry = {
            "seq": seq,
            "at": time.time(),
            "user": user["name"],
            "user_id": user["id"],
            "action": action,
            "object": kind,
            "id": oid,
            "changes": what,
        }
        txn.put(seq.to_bytes(8, "big"), dumps(entry), db=store.db["audit"])
        log.info("audit: %s %s %s %s", user["name"], action, kind, oid)

    def audit(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        if method != "GET" or rest:
            raise ApiError(405, "GET /api/audit only")
        limit = _int_arg(q, "limit", 200)
        out = []
        with store.read() as txn:
            cur = txn.cursor(db=store.db["audit"])
            if cur.last():
                for _k, v in cur.iterprev():
                    out.append(loads(v))
                    if len(out) >= limit:
                        break
        return 200, {"count": len(out), "entries": out}

    # -- endpoints ----------------------------------------------------------------------

    def endpoints(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        if not rest:
            if method == "GET":
                with store.read() as txn:
                    eps = store.endpoints(txn)
                    links = _links(store, txn)
                return 200, {"endpoints": [endpoint_view(ep, d, links) for ep, d in sorted(eps.items())]}
            if method == "POST":
                return self._save_endpoint(store, user, None, _object(data))
            raise ApiError(405, f"{method} not allowed on /api/endpoints")
        ep = rest[0]
        if len(rest) == 2 and rest[1] == "worklist" and method == "GET":
            return self.worklist(store, ep, q)
        if len(rest) != 1:
            raise ApiError(404, "not found")
        if method == "GET":
            with store.read() as txn:
                d = store.get_endpoint(txn, ep)
                links = _links(store, txn)
            if d is None:
                raise ApiError(404, f"no endpoint {ep!r}")
            return 200, endpoint_view(ep, d, links)
        if method == "PUT":
            return self._save_endpoint(store, user, ep, _object(data))
        if method == "DELETE":
            return self._delete_endpoint(store, user, ep)
        raise ApiError(405, f"{method} not allowed here")

    def _save_endpoint(self, store: Store, user: dict[str, Any], ep: str | None, data: dict[str, Any]):
        creating = ep is None
        with store.read() as txn:
            old = None if creating else store.get_endpoint(txn, ep or "")
            if not creating and old is None:
                raise ApiError(404, f"no endpoint {ep!r}")
            links = _links(store, txn)
            existing = store.endpoints(txn)
            if creating:
                # the id of a deleted endpoint whose encounters are kept is never given again:
                # its patients would be on the new endpoint's worklist
                taken = _TakenIds(existing, lambda oid: store.has_encounters(txn, oid))
                ep = str(data.get("id") or "").strip() or _new_id(data.get("display_name") or "ebw", taken)
                if not ID.match(ep):
                    raise ApiError(422, "id: 1-32 lower-case letters, digits or '-'", field="id")
                if ep in existing:
                    raise ApiError(409, f"endpoint {ep!r} exists")
                if ep in taken:
                    kept = f"id {ep!r} was a deleted endpoint's, whose encounters are kept: choose another"
                    raise ApiError(409, kept, field="id")
        assert ep is not None
        unknown = set(data) - set(ENDPOINT_FIELDS) - {"id", "ehr_connection_id", "pacs_destination_id"}
        if unknown:
            field = sorted(unknown)[0]
            raise ApiError(422, f"{field}: unknown field", field=field)
        base = dict(old) if old else _defaults()
        base["id"] = ep
        for field, attr in ENDPOINT_FIELDS.items():
            if field in data:
                base[attr] = _setting_value(attr, data[field], field)
        for field, kind in (("ehr_connection_id", "ehr"), ("pacs_destination_id", "pacs")):
            if field in data:
                ref = data[field]
                if ref not in (None, "") and ref not in links[kind]:
                    raise ApiError(422, f"{field}: no such {kind} connection {ref!r}", field=field)
                base[f"_{kind}_id"] = ref or None
        base = _resolve(base, links)
        if len(base["accession_prefix"]) + base["accession_digits"] > 16:
            raise ApiError(
                422,
                "accession_digits: the accession prefix plus digits may not exceed 16 characters",
                field="accession_digits",
            )
        if base["hl7_port"] == base["dicom_port"]:
            raise ApiError(422, "dicom_port: must differ from hl7_port", field="dicom_port")
        for other, d in existing.items():
            if other == ep:
                continue
            for f in ("hl7_port", "dicom_port"):
                taken = {d.get("hl7_port"): "hl7_port", d.get("dicom_port"): "dicom_port"}
                if base[f] in taken:
                    raise ApiError(409, f"{f}: port {base[f]} is used by endpoint {other!r}", field=f)
        for port_field in ("hl7_port", "dicom_port"):
            if base[port_field] == self.cfg.http_port:
                raise ApiError(409, f"port {self.cfg.http_port} is EBW's HTTP port", field=port_field)
        new_cfg = EndpointConfig.from_dict(base)
        old_cfg = None if old is None else EndpointConfig.from_dict(old)
        apply = None
        if old_cfg is None or any(getattr(old_cfg, f) != getattr(new_cfg, f) for f in PORT_FIELDS):
            apply = self.reconfigure(ep, old_cfg, new_cfg)  # binds the new listeners; 409 if in use
        try:
            with store.write() as txn:
                store.put_endpoint(txn, ep, base)
                changed = {
                    f: _jsonable(base[a]) for f, a in ENDPOINT_FIELDS.items() if not old or old.get(a) != base[a]
                }
                self._audit(store, txn, user, "create" if creating else "update", "endpoint", ep, changed)
        except BaseException:
            if apply is not None:
                apply(False)  # release the sockets bound for it
            raise
        if apply is not None:
            apply(True)  # new workers with the new listeners; the old ones drain
        return (201 if creating else 200), endpoint_view(ep, base, links)

    def _delete_endpoint(self, store: Store, user: dict[str, Any], ep: str):
        with store.write() as txn:
            d = store.get_endpoint(txn, ep)
            if d is None:
                raise ApiError(404, f"no endpoint {ep!r}")
            for org in _all(store, txn, "orgs"):
                if org.get("primary_worklist") == ep:
                    raise ApiError(409, f"endpoint {ep!r} is the primary worklist of organization {org['id']!r}")
            txn.delete(ep.encode(), db=store.db["endpoints"])
            store.next_seq(txn, "endpoints")
            self._audit(store, txn, user, "delete", "endpoint", ep, {})
        self.reconfigure(ep, EndpointConfig.from_dict(d), None)(True)
        return 200, {"deleted": ep}

    # -- the worklist view ----------------------------------------------------------------

    def worklist(self, store: Store, ep: str, q: dict[str, list[str]]):
        from .dicom.find import WorklistIndex

        with store.read() as txn:
            d = store.get_endpoint(txn, ep)
        if d is None:
            raise ApiError(404, f"no endpoint {ep!r}")
        cfg = EndpointConfig.from_dict(d)
        offset = _int_arg(q, "offset", 0)
        limit = min(_int_arg(q, "limit", 50), 500)
        search = ((q.get("q") or [""])[0]).strip().upper()
        items = WorklistIndex(store, ep, lambda: cfg).select([])
        histories = {}
        with store.read() as txn:
            for _k, raw in store.iter_active_raw(txn, ep):
                r = loads(raw)
                histories[r["accession"]] = r.get("accession_history", [])
        rows = []
        for it in items:
            row = {
                "patient_name": it["PatientName"],
                "patient_id": it["PatientID"],
                "issuer": it["IssuerOfPatientID"],
                "birth_date": it["PatientBirthDate"],
                "sex": it["PatientSex"],
                "admission_id": it["AdmissionID"],
                "location": it["CurrentPatientLocation"],
                "department": it["InstitutionalDepartmentName"],
                "accession": it["AccessionNumber"],
                "study_uid": it["StudyInstanceUID"],
                "scheduled": it["ScheduledProcedureStepSequence._StartDateTime"],
                "accession_history": [
                    {"accession": a, "issued": ts} for a, ts in histories.get(it["AccessionNumber"], [])
                ],
            }
            hay = " ".join(str(row[k]) for k in ("patient_name", "patient_id", "admission_id", "location", "accession"))
            if search and search not in hay.upper():
                continue
            rows.append(row)
        rows.sort(key=lambda r: (r["patient_name"], r["patient_id"]))
        return 200, {"endpoint": ep, "total": len(rows), "offset": offset, "items": rows[offset : offset + limit]}

    # -- EHR connections, PACS destinations, organizations -------------------------------

    def ehr_connections(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        return self._crud(store, user, method, rest, data, "ehr", "ehr connection", _check_ehr)

    def pacs_destinations(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        return self._crud(store, user, method, rest, data, "pacs", "pacs destination", _check_pacs)

    def organizations(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        def check(d: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
            out = dict(old or {})
            _only(d, {"name", "primary_worklist", "id"})
            if "name" in d or old is None:
                out["name"] = _name(d.get("name"))
            if "primary_worklist" in d:
                ref = d["primary_worklist"]
                with store.read() as txn:
                    if ref not in (None, "") and store.get_endpoint(txn, str(ref)) is None:
                        raise ApiError(422, f"primary_worklist: no endpoint {ref!r}", field="primary_worklist")
                out["primary_worklist"] = ref or None
            out.setdefault("primary_worklist", None)
            return out

        return self._crud(store, user, method, rest, data, "orgs", "organization", check)

    def _crud(
        self,
        store: Store,
        user: dict[str, Any],
        method: str,
        rest: list[str],
        data: Any,
        db: str,
        kind: str,
        check: Callable[[dict[str, Any], dict[str, Any] | None], dict[str, Any]],
    ):
        if not rest:
            if method == "GET":
                with store.read() as txn:
                    return 200, {"items": list(_all(store, txn, db))}
            if method != "POST":
                raise ApiError(405, f"{method} not allowed here")
            d = _object(data)
            obj = check(d, None)
            with store.write() as txn:
                oid = str(d.get("id") or "").strip() or _new_id(
                    obj.get("name") or kind, {o["id"] for o in _all(store, txn, db)}
                )
                if not ID.match(oid):
                    raise ApiError(422, "id: 1-32 lower-case letters, digits or '-'", field="id")
                if _get(store, txn, db, oid) is not None:
                    raise ApiError(409, f"{kind} {oid!r} exists")
                obj["id"] = oid
                _put(store, txn, db, oid, obj)
                self._audit(store, txn, user, "create", kind, oid, obj)
            return 201, obj
        oid = rest[0]
        if len(rest) != 1:
            raise ApiError(404, "not found")
        with store.read() as txn:
            old = _get(store, txn, db, oid)
        if old is None:
            raise ApiError(404, f"no {kind} {oid!r}")
        if method == "GET":
            return 200, old
        if method == "PUT":
            obj = check(_object(data), old)
            obj["id"] = oid
            with store.write() as txn:
                _put(store, txn, db, oid, obj)
                self._audit(store, txn, user, "update", kind, oid, {k: v for k, v in obj.items() if old.get(k) != v})
                if db in ("ehr", "pacs"):
                    _refresh_endpoints(store, txn)
            return 200, obj
        if method == "DELETE":
            with store.write() as txn:
                ref = "_ehr_id" if db == "ehr" else "_pacs_id"
                users = [ep for ep, d in store.endpoints(txn).items() if d.get(ref) == oid] if db != "orgs" else []
                if users:
                    raise ApiError(409, f"{kind} {oid!r} is used by endpoint {users[0]!r}")
                txn.delete(oid.encode(), db=store.db[db])
                self._audit(store, txn, user, "delete", kind, oid, {})
            return 200, {"deleted": oid}
        raise ApiError(405, f"{method} not allowed here")

    # -- users ------------------------------------------------------------------------

    def users(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        if not rest and method == "GET":
            with store.read() as txn:
                return 200, {"users": [_public_user(u) for u in _all(store, txn, "users")]}
        if not rest and method == "POST":
            d = _object(data)
            _only(d, {"name", "connectivity", "admin"})
            name = _name(d.get("name"))
            role = d.get("connectivity", "read")
            if role not in ("read", "read_write"):
                raise ApiError(422, "connectivity: must be read or read_write", field="connectivity")
            admin = d.get("admin", False)
            if not isinstance(admin, bool):
                raise ApiError(422, "admin: must be true or false", field="admin")
            token = secrets.token_urlsafe(32)
            with store.write() as txn:
                uid = f"u{store.next_seq(txn, 'users')}"
                new = {"id": uid, "name": name, "connectivity": role, "admin": admin, "created": time.time()}
                new["token_sha256"] = token_hash(token)
                _put(store, txn, "users", uid, new)
                txn.put(new["token_sha256"].encode(), uid.encode(), db=store.db["tokens"])
                self._audit(store, txn, user, "create", "user", uid, _public_user(new))
            return 201, {**_public_user(new), "token": token}
        if len(rest) != 1:
            raise ApiError(405 if not rest else 404, "not allowed")
        uid = rest[0]
        with store.write() as txn:
            target = _get(store, txn, "users", uid)
            if target is None:
                raise ApiError(404, f"no user {uid!r}")
            if method == "GET":
                return 200, _public_user(target)
            if method == "PUT":
                d = _object(data)
                _only(d, {"name", "connectivity", "admin"})
                if "name" in d:
                    target["name"] = _name(d["name"])
                if "connectivity" in d:
                    if d["connectivity"] not in ("read", "read_write"):
                        raise ApiError(422, "connectivity: must be read or read_write", field="connectivity")
                    target["connectivity"] = d["connectivity"]
                if "admin" in d:
                    if not isinstance(d["admin"], bool):
                        raise ApiError(422, "admin: must be true or false", field="admin")
                    target["admin"] = d["admin"]
                _put(store, txn, "users", uid, target)
                self._audit(store, txn, user, "update", "user", uid, {k: d[k] for k in d})
                return 200, _public_user(target)
            if method == "DELETE":
                if uid == user["id"]:
                    raise ApiError(409, "you cannot delete yourself")
                txn.delete(uid.encode(), db=store.db["users"])
                txn.delete(target["token_sha256"].encode(), db=store.db["tokens"])
                self._audit(store, txn, user, "delete", "user", uid, {})
                return 200, {"deleted": uid}
        raise ApiError(405, f"{method} not allowed here")

    # -- exams -------------------------------------------------------------------------

    def exams_route(self, store: Store, user: dict[str, Any], method: str, rest: list[str], q: Any, data: Any):
        if method == "GET" and not rest:
            return 200, self.list_exams(store, q)
        if method == "GET" and len(rest) == 2:
            with store.read() as txn:
                exam = exams.get(store, txn, rest[0], rest[1])
            if exam is None:
                raise ApiError(404, "no such exam")
            return 200, public_exam(exam)
        if method == "POST" and len(rest) == 3 and rest[2] in ("complete", "retry-oru"):
            return self.act(store, user, rest[0], rest[1], rest[2])
        raise ApiError(405 if rest else 404, "not allowed here")

    def list_exams(self, store: Store, q: dict[str, list[str]]) -> dict[str, Any]:
        def arg(name: str) -> str:
            return (q.get(name) or [""])[0]

        limit = int(arg("limit")) if arg("limit").isdigit() else 200
        with store.read() as txn:
            found = [
                e
                for e in exams.all_exams(store, txn, arg("endpoint") or None)
                if (not arg("orphan") or e["orphan"] == (arg("orphan") in ("1", "true", "yes")))
                and (not arg("oru") or e["oru"]["state"] == arg("oru"))
                and (not arg("state") or e["state"] == arg("state"))
            ]
        found.sort(key=lambda e: e["first_at"], reverse=True)
        return {"count": len(found), "exams": [public_exam(e) for e in found[:limit]]}

    def act(self, store: Store, user: dict[str, Any], ep: str, study_uid: str, action: str) -> tuple[int, Any]:
        with store.write() as txn:
            exam = exams.get(store, txn, ep, study_uid)
            settings = store.get_endpoint(txn, ep)
            if exam is None or settings is None:
                raise ApiError(404, "no such exam")
            cfg = EndpointConfig.from_dict(settings)
            now = time.time()
            if action == "complete":
                if exam["state"] != exams.OPEN:
                    raise ApiError(409, f"exam is {exam['state']}", exam=public_exam(exam))
                exam = exams.complete(store, txn, exam, cfg, "api", now)
            else:
                if exam["oru"]["state"] != "dead":
                    raise ApiError(409, f"ORU is {exam['oru']['state'] or 'not due'}", exam=public_exam(exam))
                exam["oru"].update(state="pending", attempts=0, next_at=now)
                exams.put(store, txn, exam)
            self._audit(store, txn, user, action, "exam", f"{ep}/{study_uid}", {})
        return 200, public_exam(exam)


# -- helpers ------------------------------------------------------------------------------


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _only(d: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(d) - allowed
    if unknown:
        field = sorted(unknown)[0]
        raise ApiError(422, f"{field}: unknown field", field=field)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 64:
        raise ApiError(422, "name: 1-64 characters", field="name")
    return value.strip()


def _int_arg(q: dict[str, list[str]], name: str, default: int) -> int:
    raw = (q.get(name) or [""])[0]
    return int(raw) if raw.isdigit() else default


class _TakenIds:
    """Ids a new endpoint may not have: those in use, and those of deleted endpoints
    that left encounters behind."""

    def __init__(self, existing: dict[str, Any], has_data: Callable[[str], bool]) -> None:
        self.existing, self.has_data = existing, has_data

    def __contains__(self, oid: object) -> bool:
        return oid in self.existing or (isinstance(oid, str) and self.has_data(oid))


def _new_id(name: str, taken: Any) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")[:24] or "x"
    if not base[0].isalnum():
        base = "x" + base
    oid, n = base, 1
    while oid in taken:
        n += 1
        oid = f"{base}-{n}"
    return oid


def _get(store: Store, txn: Any, db: str, oid: str) -> dict[str, Any] | None:
    raw = txn.get(oid.encode(), db=store.db[db])
    return None if raw is None else loads(raw)


def _put(store: Store, txn: Any, db: str, oid: str, obj: dict[str, Any]) -> None:
    txn.put(oid.encode(), dumps(obj), db=store.db[db])


def _all(store: Store, txn: Any, db: str) -> list[dict[str, Any]]:
    return [loads(v) for _k, v in txn.cursor(db=store.db[db])]


def _links(store: Store, txn: Any) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        "ehr": {o["id"]: o for o in _all(store, txn, "ehr")},
        "pacs": {o["id"]: o for o in _all(store, txn, "pacs")},
    }


def _defaults() -> dict[str, Any]:
    """A new endpoint's settings: every EBW_* default (not the environment's values)."""
    cfg = config_mod.load({}).endpoint
    return cfg.to_dict()


def _resolve(base: dict[str, Any], links: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Copy the referenced EHR connection and PACS destination into the endpoint's settings
    (what the workers and the timer process read)."""
    out = dict(base)
    ehr = links["ehr"].get(out.get("_ehr_id") or "")
    if ehr is not None:
        for field, attr in EHR_FIELDS.items():
            out[attr] = ehr.get(field, out.get(attr))
    elif out.get("_ehr_id") is None and "_ehr_id" in out:
        out["ehr_host"] = out["ehr_port"] = None
    pacs = links["pacs"].get(out.get("_pacs_id") or "")
    if pacs is not None:
        for field, attr in PACS_FIELDS.items():
            out[attr] = pacs.get(field)
    elif out.get("_pacs_id") is None and "_pacs_id" in out:
        out["pacs_aet"] = out["pacs_host"] = out["pacs_port"] = None
    return out


def _refresh_endpoints(store: Store, txn: Any) -> None:
    links = _links(store, txn)
    for ep, d in store.endpoints(txn).items():
        if d.get("_ehr_id") or d.get("_pacs_id"):
            store.put_endpoint(txn, ep, _resolve(d, links))


def _check_ehr(d: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    _only(d, {"id", "name", *EHR_FIELDS})
    out = dict(old or {})
    out["name"] = _name(d.get("name", out.get("name")))
    for field, attr in EHR_FIELDS.items():
        if field in d:
            out[field] = _setting_value(attr, d[field], field)
        elif old is None:
            default = SETTINGS[attr].parse(SETTINGS[attr].default)
            out[field] = default
    if not out.get("host") or not out.get("port"):
        raise ApiError(422, "host, port: an EHR connection needs both", field="host" if not out.get("host") else "port")
    return out


def _check_pacs(d: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    _only(d, {"id", "name", *PACS_FIELDS})
    out = dict(old or {})
    out["name"] = _name(d.get("name", out.get("name")))
    for field, attr in PACS_FIELDS.items():
        if field in d:
            out[field] = _setting_value(attr, d[field], field)
        if not out.get(field):
            raise ApiError(422, f"{field}: required", field=field)
    return out


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def endpoint_view(ep: str, d: dict[str, Any], links: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ep}
    for field, attr in ENDPOINT_FIELDS.items():
        out[field] = _jsonable(d.get(attr))
    out["ehr_connection_id"] = d.get("_ehr_id")
    out["pacs_destination_id"] = d.get("_pacs_id")
    out["ehr"] = {f: d.get(a) for f, a in EHR_FIELDS.items()}
    out["pacs"] = {f: d.get(a) for f, a in PACS_FIELDS.items()}
    return out


def _public_user(u: dict[str, Any]) -> dict[str, Any]:
    return {k: u[k] for k in ("id", "name", "connectivity", "admin", "created")}


def public_exam(exam: dict[str, Any]) -> dict[str, Any]:
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


def ensure_admin(store: Store, token: str | None) -> str | None:
    """The first administrator: ``EBW_ADMIN_TOKEN`` (its hash kept, the user created or
    its token replaced), or, with no users at all, a generated token -- returned so the
    caller prints it once."""
    generated = None
    with store.write() as txn:
        users = _all(store, txn, "users")
        admin = next((u for u in users if u["id"] == "admin"), None)
        if token is None and users:
            return None
        if token is None:
            token = generated = secrets.token_urlsafe(32)
        digest = token_hash(token)
        if admin is not None and admin.get("token_sha256") == digest:
            return None
        if admin is not None:
            txn.delete(admin["token_sha256"].encode(), db=store.db["tokens"])
        new = {"id": "admin", "name": "admin", "connectivity": "read_write", "admin": True, "created": time.time()}
        new["token_sha256"] = digest
        _put(store, txn, "users", "admin", new)
        txn.put(digest.encode(), b"admin", db=store.db["tokens"])
    return generated
