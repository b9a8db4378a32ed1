"""The whole EBW exception tree.

Errors carry locations (segment id, field index, byte offset, MSH-10 ...),
never field contents, so ``str(exc)`` is always safe to log.  Plain Python:
the Cython modules in ``ebw._fast`` import it too.
"""

from __future__ import annotations


class EbwError(Exception):
    """Base of every error EBW raises on purpose."""


SECRET_VARIABLES = frozenset({"EBW_ADMIN_TOKEN"})  # their values are never shown


class ConfigError(EbwError, ValueError):
    """A setting is invalid.  The message names the variable, the value and the rule --
    except a secret's value (``SECRET_VARIABLES``), shown as ``'***'``: the message goes
    to stderr, logs and journals."""

    def __init__(self, variable: str, value: object, rule: str) -> None:
        self.variable = variable
        self.value = value
        self.rule = rule
        shown = "***" if variable in SECRET_VARIABLES else value
        super().__init__(f"{variable}={shown!r}: {rule}")


class Hl7Error(EbwError):
    """A problem with an inbound HL7 message or stream."""


class FramingError(Hl7Error):
    """MLLP framing broken (oversized frame, garbage)."""


class ParseError(Hl7Error, ValueError):
    """The bytes are not an HL7 v2 message we can read.

    ``offset`` is the byte offset where reading failed (or -1), ``segment`` the
    segment id when known.  Never carries message contents.
    """

    def __init__(self, reason: str, offset: int = -1, segment: str = "") -> None:
        self.reason = reason
        self.offset = offset
        self.segment = segment
        where = []
        if segment:
            where.append(f"segment {segment}")
        if offset >= 0:
            where.append(f"byte {offset}")
        super().__init__(reason + (f" ({', '.join(where)})" if where else ""))


class RejectError(Hl7Error):
    """The message is readable but must be answered with AE or AR.

    ``ack`` is ``"AE"`` or ``"AR"``, ``code`` an HL7 table 0357 code,
    ``location`` an ERR-2 error location like ``"PID^1^3"``.
    """

    def __init__(self, ack: str, code: int, text: str, location: str = "") -> None:
        self.ack = ack
        self.code = code
        self.text = text
        self.location = location
        super().__init__(f"{ack} {code}: {text}" + (f" at {location}" if location else ""))


class StoreError(EbwError):
    """The LMDB store could not read or commit."""


class QueryError(EbwError, ValueError):
    """A C-FIND identifier cannot be used (answered with 0xA900)."""
