"""Offline tools on the data dir: ``ebw replay`` and ``ebw explain``.

``replay`` (server stopped, same ``EBW_*`` variables) discards the encounter
index and rebuilds it from the journal, applying every message that was
acknowledged ``AA`` in the order received, with its receive time.  Accession
numbers are kept: an encounter gets back the numbers it had (they stay bound
to it), a new one gets a new number from the shared counter, so no number is
ever issued twice.  ``--dry-run`` rebuilds into a temporary directory and
reports without touching the data dir.

``explain`` tells, for a Patient ID or a visit number, why each of its
encounters is or is not on an endpoint's worklist, rule by rule.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from . import curation, encounters
from .config import Config, EndpointConfig
from .errors import EbwError, ParseError, RejectError
from .hl7.reader import parse
from .ingest import mapping_for
from .store import Store, loads, split_key

COMMIT_EVERY = 5000


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    active: int = 0
    encounters: int = 0
    accessions_kept: int = 0
    accessions_new: int = 0
    seconds: float = 0.0


def server_running(data_dir: str) -> bool:
    """True when a live ``ebw serve`` uses this data dir (fresh worker heartbeats)."""
    run = os.path.join(data_dir, "run")
    try:
        names = os.listdir(run)
    except FileNotFoundError:
        return False
    now = time.time()
    for name in names:
        if name.startswith("heartbeat."):
            try:
                if now - os.stat(os.path.join(run, name)).st_mtime < 5:
                    return True
            except FileNotFoundError:
                continue
    return False


def _saved_accessions(store: Store, txn: Any) -> dict[str, dict[str, list[list[Any]]]]:
    """ep -> encounter key -> [[current accession, issue time, study UID]], from the index
    about to be discarded (earlier numbers stay in the accession db)."""
    saved: dict[str, dict[str, list[list[Any]]]] = {}
    for k, v in txn.cursor(db=store.db["enc"]):
        ep, enc_key = split_key(k)
        record = loads(v)
        if record.get("accession"):
            current = [record["accession"], record.get("accession_ts", 0.0), record.get("study_uid", "")]
            saved.setdefault(ep, {})[enc_key] = [current]
    return saved


def replay(cfg: Config, dry_run: bool = False, progress: Any = None, observe: Any = None) -> ReplayReport:
    """Rebuild the index from the journal (see module doc).  ``observe(store, txn, t)``,
    if given, is called before each message is applied, with its receive time, and
    once at the end with ``t=None``."""
    if server_running(cfg.data_dir):
        raise EbwError(f"a server is running on {cfg.data_dir}: stop it before replaying")
    t0 = time.monotonic()
    source = Store(cfg.data_dir, cfg.lmdb_map_size_mb, sync=True)
    tmp = tempfile.TemporaryDirectory(prefix="ebw-replay-") if dry_run else None
    target = Store(tmp.name, cfg.lmdb_map_size_mb, sync=False) if tmp else source
    report = ReplayReport()
    try:
        with source.read() as rtxn:
            endpoints = {ep: EndpointConfig.from_dict(d) for ep, d in source.endpoints(rtxn).items()}
            saved = _saved_accessions(source, rtxn)
        if dry_run:
            with target.write() as txn:
                for ep, ecfg in endpoints.items():
                    target.put_endpoint(txn, ep, ecfg.to_dict())
        else:
            with target.write() as txn:
                target.drop_index(txn)
        kept_before = sum(len(v) for v in saved.values())
        with source.read() as rtxn:
            journal = source.journal(rtxn)
            done = False
            while not done:
                with target.write() as txn:
                    for n, (_seq, head, raw) in enumerate(journal):
                        if observe is not None:
                            observe(target, txn, float(head.get("t", 0.0)))
                        ep = head.get("ep", "")
                        ecfg = endpoints.get(ep)
                        if head.get("ack") != "AA" or ecfg is None:
                            report.skipped += 1
                        else:
                            try:
                                change = parse(raw, mapping_for(ecfg))
                                with target.env.begin(write=True, parent=txn) as child:
                                    applied = encounters.apply(
                                        target,
                                        child,
                                        ep,
                                        ecfg,
                                        change,
                                        float(head.get("t", 0.0)),
                                        reuse=saved.get(ep),
                                        digest=encounters.content_digest(raw),
                                    )
                                report.accessions_new += applied.accessions
                                report.replayed += 1
                            except (ParseError, RejectError, EbwError):
                                report.failed += 1
                        if n + 1 >= COMMIT_EVERY:
                            break
                    else:
                        done = True
                if progress:
                    progress(report)
        with target.read() as txn:
            report.active = sum(target.active_count(txn, ep) for ep in endpoints)
            report.encounters = target.count_encounters(txn)
            if observe is not None:
                observe(target, txn, None)
        report.accessions_kept = kept_before - sum(len(v) for v in saved.values())
    finally:
        if target is not source:
            target.close()
        source.close()
        if tmp:
            tmp.cleanup()
    report.seconds = time.monotonic() - t0
    return report


@dataclass
class RulesReport:
    samples: list[tuple[float, int, int]]  # (time, listed under the current rules, under the candidate)
    entering: list[str]  # encounter keys the candidate would add to today's list
    leaving: list[str]  # ... and take off it
    replay: ReplayReport


def dry_run_rules(cfg: Config, candidate: str, ep: str = "default", step_seconds: float = 3600.0) -> RulesReport:
    """Replay the journal in a temporary directory and compare, over time, the list the
    current curation rules give with the one ``candidate`` (curation JSON) would give."""
    new_rules = curation.parse(candidate)
    samples: list[tuple[float, int, int]] = []
    state: dict[str, Any] = {"next": None, "old": None}

    def listing(store: Store, txn: Any, now: float) -> tuple[set[str], set[str]]:
        if state["old"] is None:
            found = store.get_endpoint(txn, ep)
            if found is None:
                raise EbwError(f"no endpoint {ep!r}")
            state["old"] = curation.rules_of(EndpointConfig.from_dict(found).curation)
        old_set, new_set = set(), set()
        for enc_key, raw in store.iter_active_raw(txn, ep):
            record = loads(raw)
            facts, status = curation.facts_of(record), record.get("status", "")
            age = now - curation.opened_at(record)
            if state["old"].decide(facts, status, age)[0]:
                old_set.add(enc_key.decode())
            if new_rules.decide(facts, status, age)[0]:
                new_set.add(enc_key.decode())
        return old_set, new_set

    final: dict[str, set[str]] = {}

    def observe(store: Store, txn: Any, t: float | None) -> None:
        if t is None:  # the end of the journal: compare the lists as they would be now
            final["old"], final["new"] = listing(store, txn, time.time())
            return
        if state["next"] is None:
            state["next"] = t - t % step_seconds + step_seconds
        while t >= state["next"]:
            old_set, new_set = listing(store, txn, state["next"])
            samples.append((state["next"], len(old_set), len(new_set)))
            state["next"] += step_seconds

    report = replay(cfg, dry_run=True, observe=observe)
    return RulesReport(
        samples,
        sorted(final.get("new", set()) - final.get("old", set())),
        sorted(final.get("old", set()) - final.get("new", set())),
        report,
    )


def explain(cfg: Config, patient_id: str | None = None, visit: str | None = None) -> list[str]:
    """Lines explaining each matching encounter's place on each endpoint's worklist."""
    store = Store(cfg.data_dir, cfg.lmdb_map_size_mb, sync=True)
    out: list[str] = []
    now = time.time()
    try:
        with store.read() as txn:
            endpoints = {ep: EndpointConfig.from_dict(d) for ep, d in store.endpoints(txn).items()}
            for ep, ecfg in endpoints.items():
                rules = curation.rules_of(ecfg.curation)
                keys: list[str] = []
                if patient_id:
                    keys = store.encounters_of_patient(txn, ep, patient_id)
                if visit:
                    prefix = ep.encode() + b"\x00"
                    for k in txn.cursor(db=store.db["enc"]).iternext(values=False):
                        if k.startswith(prefix) and k.decode("utf-8").rsplit("|", 1)[-1] == visit:
                            keys.append(k[len(prefix) :].decode("utf-8"))
                for enc_key in keys:
                    record = store.get_encounter(txn, ep, enc_key)
                    if record is None:
                        continue
                    facts = curation.facts_of(record)
                    age = now - curation.opened_at(record)
                    listed, reasons = rules.decide(facts, record.get("status", ""), age)
                    out.append(
                        f"endpoint {ep} ({ecfg.name}) encounter {enc_key}: status {record.get('status')}, "
                        f"last event {record.get('event')}, accession {record.get('accession') or '-'}: "
                        + ("ON the worklist" if listed else "NOT on the worklist")
                    )
                    out.extend(f"  - {r}" for r in reasons)
                    if listed and not reasons:
                        out.append("  - open and no curation rule leaves it out")
    finally:
        store.close()
    return out
