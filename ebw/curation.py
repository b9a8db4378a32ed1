"""Curation: which open encounters an endpoint's worklist shows.

Rules are a JSON object (``EBW_CURATION`` for the default endpoint)::

    {
      "include": {"patient_class": ["E", "O"], "facility": ["GENHOSP"]},
      "exclude": {"point_of_care": ["PSYCH"], "service": ["OBS"]},
      "pending": false,
      "max_age_hours": {"E": 24, "O": 24, "*": null}
    }

- ``include``: for each field listed, the encounter's value must be one of the
  values (fields not listed are not constrained).  ``exclude``: an encounter
  whose value for a listed field is one of the values is left out.
  Fields: ``patient_class`` (PV1-2), ``facility`` (PV1-3.4), ``point_of_care``
  (PV1-3.1), ``service`` (PV1-10), ``event`` (the trigger event that last
  changed the encounter).  Values compare case-insensitively.
- ``pending``: pre-admitted / pending encounters (A05, A14) are listed too.
- ``max_age_hours``: per patient class (``*``: any other class), encounters
  never discharged leave the worklist this many hours after they opened
  (the later of admission PV1-44 and first receipt by EBW); ``null`` means never.  Default: emergency and
  outpatient 24 h, inpatients never.

Rules are applied when a query is answered, so a change takes effect at once
for every encounter already in the index.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

FIELDS = ("patient_class", "facility", "point_of_care", "service", "event")
DEFAULT_MAX_AGE_HOURS: dict[str, float | None] = {"E": 24, "O": 24, "*": None}


@dataclass(frozen=True)
class Rules:
    include: dict[str, frozenset[str]] = field(default_factory=dict)
    exclude: dict[str, frozenset[str]] = field(default_factory=dict)
    pending: bool = False
    max_age_hours: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_MAX_AGE_HOURS))

    def max_age_seconds(self, patient_class: str) -> float | None:
        hours = self.max_age_hours.get(patient_class.upper(), self.max_age_hours.get("*"))
        return None if hours is None else hours * 3600.0

    def decide(self, facts: dict[str, str], status: str, age_seconds: float) -> tuple[bool, list[str]]:
        """(listed, reasons): whether an open encounter is on the worklist, rule by rule."""
        reasons: list[str] = []
        listed = True
        if status == "pending" and not self.pending:
            listed = False
            reasons.append("pending (pre-admit) encounters are not listed (rule 'pending' is false)")
        elif status not in ("active", "pending"):
            listed = False
            reasons.append(f"encounter is {status or 'unknown'}")
        for f, allowed in self.include.items():
            v = (facts.get(f) or "").upper()
            if v not in allowed:
                listed = False
                reasons.append(f"{f} {v or '(empty)'} is not in include.{f}")
            else:
                reasons.append(f"{f} {v} is in include.{f}")
        for f, banned in self.exclude.items():
            v = (facts.get(f) or "").upper()
            if v in banned:
                listed = False
                reasons.append(f"{f} {v} is in exclude.{f}")
        limit = self.max_age_seconds(facts.get("patient_class") or "")
        if limit is not None and age_seconds > limit:
            listed = False
            reasons.append(f"open for {age_seconds / 3600:.1f} h, over max_age_hours {limit / 3600:g} for its class")
        return listed, reasons


def parse(raw: str) -> Rules:
    """Parse curation JSON; raises ValueError with the rule broken."""
    if not raw.strip():
        return Rules()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON object (see README, 'Curation')") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object (see README, 'Curation')")
    unknown = set(data) - {"include", "exclude", "pending", "max_age_hours"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; keys are include, exclude, pending, max_age_hours")
    sets: dict[str, dict[str, frozenset[str]]] = {}
    for part in ("include", "exclude"):
        value = data.get(part, {})
        if not isinstance(value, dict):
            raise ValueError(f"{part} must map fields to lists of values")
        out = {}
        for f, vals in value.items():
            if f not in FIELDS:
                raise ValueError(f"{part}: unknown field {f!r}; fields are {', '.join(FIELDS)}")
            if isinstance(vals, str):
                vals = [vals]
            if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
                raise ValueError(f"{part}.{f} must be a list of strings")
            out[f] = frozenset(v.upper() for v in vals)
        sets[part] = out
    pending = data.get("pending", False)
    if not isinstance(pending, bool):
        raise ValueError("pending must be true or false")
    ages: dict[str, float | None] = dict(DEFAULT_MAX_AGE_HOURS)
    raw_ages = data.get("max_age_hours", {})
    if not isinstance(raw_ages, dict):
        raise ValueError("max_age_hours must map patient classes to hours or null")
    for cls, hours in raw_ages.items():
        if hours is not None and (not isinstance(hours, (int, float)) or isinstance(hours, bool) or hours <= 0):
            raise ValueError(f"max_age_hours.{cls} must be a positive number of hours or null")
        ages[cls.upper()] = None if hours is None else float(hours)
    return Rules(include=sets["include"], exclude=sets["exclude"], pending=pending, max_age_hours=ages)


@functools.lru_cache(maxsize=64)
def rules_of(raw: str) -> Rules:
    """Parsed rules of an endpoint's (already validated) curation JSON, cached."""
    return parse(raw)


def facts_of(record: dict[str, Any]) -> dict[str, str]:
    v = record.get("visit", {})
    return {
        "patient_class": v.get("patient_class") or "",
        "facility": v.get("InstitutionName") or "",
        "point_of_care": v.get("point_of_care") or "",
        "service": v.get("service") or "",
        "event": record.get("event") or "",
    }


def opened_at(record: dict[str, Any]) -> float:
    """When the encounter's age starts: the later of its admission (PV1-44) and the
    time EBW first received it, so a late-sent registration still shows."""
    created = float(record.get("created") or 0.0)
    admit = record.get("visit", {}).get("admit_time")
    try:
        return max(float(admit), created) if admit else created
    except ValueError:
        return created
