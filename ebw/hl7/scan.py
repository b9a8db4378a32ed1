"""Picks the HL7 segment scanner: compiled ``ebw._fast.hl7scan`` unless
``EBW_NO_EXTENSIONS=1``, else (or when it cannot be imported) the pure-Python
reference ``ebw.hl7._scan_ref``.  Both behave identically; the rules are in the
reference's module docstring.

``IMPLEMENTATION`` is ``"fast"`` or ``"ref"``: what was picked.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_WANTED", "IMPLEMENTATION", "scan"]

IMPLEMENTATION: str
if os.environ.get("EBW_NO_EXTENSIONS") == "1":
    from ._scan_ref import DEFAULT_WANTED, scan

    IMPLEMENTATION = "ref"
else:
    try:
        from .._fast.hl7scan import DEFAULT_WANTED, scan

        IMPLEMENTATION = "fast"
    except ImportError as exc:
        from ._scan_ref import DEFAULT_WANTED, scan

        IMPLEMENTATION = "ref"
        log.warning(
            "compiled HL7 scanner ebw._fast.hl7scan unavailable (%s); using the pure-Python reference",
            exc,
        )
