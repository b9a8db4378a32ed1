"""Quirk profiles: named query normalisations for modalities that send odd queries.

Chosen per calling AE title in the endpoint's settings (``EBW_QUIRKS``, JSON)
rather than as global switches::

    {"US_CART_7": ["no-station-aet", "date-only"], "OLDUS": ["charset:ISO_IR 100"], "*": []}

``*`` applies to calling AE titles not listed.  Profiles:

``no-station-aet``
    Drop a Scheduled Station AE Title key, even in strict station matching
    (modalities that put their own AE title there).
``empty-sequence-item``
    A Scheduled Procedure Step Sequence sent without an item (or with an empty
    one) asks for the whole step: every SPS attribute EBW holds is returned.
    This is what every query gets now (PS3.4 C.2.2.2.6); the name is still
    accepted, so settings that list it stay valid.
``date-only``
    Ignore SPS Start Time keys: match on the date alone (modalities that send
    the current time, or a time range, with "today").
``ignore-modality``
    Ignore a Modality key (modalities that ask for their own modality while
    the endpoint's items carry another, e.g. ``OT``).
``charset:<Specific Character Set>``
    Always answer in this character set (e.g. ``ISO_IR 100`` for modalities
    that cannot read UTF-8); characters it cannot hold are transliterated
    (é -> e), never sent as ``?``.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from typing import Any

PROFILES = ("no-station-aet", "empty-sequence-item", "date-only", "ignore-modality")
CHARSETS = {"ISO_IR 6": "ascii", "ISO_IR 100": "latin_1", "ISO_IR 101": "iso8859_2", "ISO_IR 192": "utf_8"}
SPS = "ScheduledProcedureStepSequence."
SPS_RETURN = (
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)


@functools.lru_cache(maxsize=64)
def parse(raw: str) -> dict[str, tuple[str, ...]]:
    """Validate ``EBW_QUIRKS``; raises ValueError naming the rule broken."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON object mapping calling AE titles to lists of profile names") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object mapping calling AE titles to lists of profile names")
    out = {}
    for aet, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{aet}: must be a list of profile names")
        for n in names:
            if n.startswith("charset:"):
                if n[8:] not in CHARSETS:
                    raise ValueError(f"{aet}: {n!r}: character sets are {', '.join(CHARSETS)}")
            elif n not in PROFILES:
                raise ValueError(f"{aet}: unknown profile {n!r}; profiles are {', '.join(PROFILES)}, charset:<name>")
        out[aet.strip()] = tuple(names)
    return out


def for_calling(raw: str, calling_aet: str) -> tuple[str, ...]:
    table = parse(raw)
    return table.get(calling_aet.strip(), table.get("*", ()))


def apply(q: Any, profiles: tuple[str, ...]) -> None:
    """Normalise a parsed query (``ebw.dicom.find.Query``) in place."""
    drop: set[str] = set()
    for p in profiles:
        if p == "no-station-aet":
            drop.add(SPS + "ScheduledStationAETitle")
        elif p == "date-only":
            drop.add(SPS + "ScheduledProcedureStepStartTime")
        elif p == "ignore-modality":
            drop.add(SPS + "Modality")
        elif p == "empty-sequence-item":
            if q.sps is not None and not q.sps:
                q.sps = list(SPS_RETURN)
        elif p.startswith("charset:"):
            q.fixed_charset = p[8:]
    if drop:
        q.keys = [k for k in q.keys if k[0] not in drop]


def transliterate(text: str, codec: str) -> str:
    """``text`` made encodable in ``codec``: accents dropped (é -> e), the rest ``?``-free."""
    try:
        text.encode(codec)
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        try:
            ch.encode(codec)
            out.append(ch)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            try:
                base.encode(codec)
                out.append(base)
            except UnicodeEncodeError:
                out.append("_")
    return "".join(out)
