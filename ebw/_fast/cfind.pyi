"""C-FIND key matching (Cython), the compiled twin of ``ebw.dicom._match_ref``.

Import from :mod:`ebw.dicom.match`, which picks this module or the reference.
The matching rules are in the module docstring of ``ebw.dicom._match_ref``.
"""

from collections.abc import Iterable, Mapping

__all__ = ["CompiledQuery", "compile_query", "match", "filter_items"]

class CompiledQuery:
    """A compiled C-FIND identifier; made only by :func:`compile_query`."""

    @property
    def paths(self) -> tuple[str, ...]:
        """Paths of the keys this query tests (the non-universal ones), in input order."""

def compile_query(keys: Iterable[tuple[str, str, str]]) -> CompiledQuery:
    """Compile the matching keys ``(path, vr, value)`` of one C-FIND identifier.

    ``path`` is an attribute keyword or ``Sequence.Keyword``; ``vr`` its VR;
    ``value`` the key value as received (several values separated by ``\\``).
    Universal keys (empty after padding trim, or only ``*`` for string VRs) are
    dropped.

    Raises ``ebw.errors.QueryError`` naming the path and the rule (never the
    value) for a malformed DA/TM/DT key or a non-universal key whose VR cannot
    be matched (``"<path>: cannot match VR <vr>"``); ``TypeError`` when a key
    is not a ``(str, str, str)`` tuple.
    """

def match(query: CompiledQuery, item: Mapping[str, str | None]) -> bool:
    """True when ``item`` (attribute path -> stored DICOM string value; missing,
    ``None`` or ``""`` = empty) matches every key of ``query``.

    Raises ``TypeError`` when a stored value that is tested is not a ``str``.
    """

def filter_items(query: CompiledQuery, items: Iterable[Mapping[str, str | None]]) -> list[int]:
    """Indices of the items that match ``query``, in order."""
