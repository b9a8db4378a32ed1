"""ADT reader (Cython), the compiled twin of ``ebw.hl7.adt.parse``.

Import ``parse`` from :mod:`ebw.hl7.reader`, which picks this module or the reference.
"""

from ebw.hl7.adt import Change, Mapping

__all__ = ["parse"]

def parse(data: bytes | bytearray | memoryview, mapping: Mapping = ...) -> Change:
    """What ``ebw.hl7.adt.parse(data, mapping)`` returns, or raises what it raises."""
