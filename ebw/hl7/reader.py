"""Picks the ADT reader: compiled ``ebw._fast.adtread`` unless ``EBW_NO_EXTENSIONS=1``,
else (or when it cannot be imported) the reference ``ebw.hl7.adt.parse``.  Both
give the same ``Change`` or raise the same error for every message; the rules are
in ``ebw.hl7.adt``.

``IMPLEMENTATION`` is ``"fast"`` or ``"ref"``: what was picked.
"""

from __future__ import annotations

import logging
import os

from .scan import IMPLEMENTATION as _SCAN

log = logging.getLogger(__name__)

__all__ = ["IMPLEMENTATION", "parse"]

IMPLEMENTATION: str
if os.environ.get("EBW_NO_EXTENSIONS") == "1" or _SCAN != "fast":
    from .adt import parse

    IMPLEMENTATION = "ref"
else:
    try:
        from .._fast.adtread import parse

        IMPLEMENTATION = "fast"
    except ImportError as exc:
        from .adt import parse

        IMPLEMENTATION = "ref"
        log.warning("compiled ADT reader ebw._fast.adtread unavailable (%s); using the pure-Python reference", exc)
