"""Picks the C-FIND key matcher: compiled ``ebw._fast.cfind`` unless
``EBW_NO_EXTENSIONS=1``, else (or when it cannot be imported, with one logged
WARNING) the pure-Python reference ``ebw.dicom._match_ref``.  Both behave
identically; the matching rules are in the reference's module docstring.

``IMPLEMENTATION`` is ``"fast"`` or ``"ref"``: what was picked.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

__all__ = ["IMPLEMENTATION", "CompiledQuery", "compile_query", "filter_items", "match"]

IMPLEMENTATION: str
if os.environ.get("EBW_NO_EXTENSIONS") == "1":
    from ._match_ref import CompiledQuery, compile_query, filter_items, match

    IMPLEMENTATION = "ref"
else:
    try:
        from .._fast.cfind import CompiledQuery, compile_query, filter_items, match

        IMPLEMENTATION = "fast"
    except ImportError as exc:
        from ._match_ref import CompiledQuery, compile_query, filter_items, match

        IMPLEMENTATION = "ref"
        log.warning(
            "compiled C-FIND matcher ebw._fast.cfind unavailable (%s); using the pure-Python reference",
            exc,
        )
