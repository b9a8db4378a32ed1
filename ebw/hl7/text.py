"""HL7 v2 field text: character sets (MSH-18), component splitting, unescaping.

Rules (see shared reference hl7v2-adt.md §3, §4):
- Split into repetitions / components / subcomponents on raw bytes first,
  unescape afterwards (an unescaped ``^`` would split a component).
- Decode with the codec MSH-18 names; on failure retry UTF-8, then cp1252
  (which decodes any byte), and report the fallback to the caller.
- ``""`` (two quotation marks) is an explicit null: "delete the stored value".
"""

from __future__ import annotations

NULL = '""'

# HL7 table 0211 -> Python codec.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin_1",
    "8859/2": "iso8859_2",
    "8859/3": "iso8859_3",
    "8859/4": "iso8859_4",
    "8859/5": "iso8859_5",
    "8859/6": "iso8859_6",
    "8859/7": "iso8859_7",
    "8859/8": "iso8859_8",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "UNICODE UTF-8": "utf_8",
    "UTF-8": "utf_8",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR14": "shift_jis",
    "KS X 1001": "euc_kr",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
}


class Decoder:
    """Decodes the fields of one message with the codec its MSH-18 names."""

    __slots__ = ("codec", "fell_back", "seps")

    def __init__(self, msh18: bytes, seps: bytes, default: str = "utf_8") -> None:
        name = msh18.split(seps[2:3])[0].decode("ascii", "replace").strip().upper() if msh18 else ""
        self.codec = CHARSETS.get(name, "utf_8") if name else default
        self.fell_back = False
        self.seps = seps

    def decode(self, raw: bytes) -> str:
        if raw.isascii():
            return raw.decode("ascii")
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError:
            self.fell_back = True
            try:
                return raw.decode("utf_8")
            except UnicodeDecodeError:
                return raw.decode("cp1252", "replace")

    def plain(self, raw: bytes) -> str | None:
        """``raw`` as text if it is ASCII without the escape character, else None.  Then
        splitting that text on a delimiter gives exactly what unescaping each piece of
        the split bytes would (the fast path of the field readers)."""
        if raw.isascii() and self.seps[3:4] not in raw:
            return raw.decode("ascii")
        return None

    def unescape(self, raw: bytes) -> str:
        """Decode one leaf value (a component or subcomponent) and resolve escapes."""
        esc = self.seps[3:4]
        if esc not in raw:
            return self.decode(raw)
        pending = bytearray()
        i, n = 0, len(raw)
        field_s, comp_s, rep_s, _esc_s, sub_s = (self.seps[k : k + 1] for k in range(5))
        while i < n:
            start = raw.find(esc, i)
            if start < 0:
                pending += raw[i:]
                break
            pending += raw[i:start]  # the text up to the escape character, in one piece
            j = raw.find(esc, start + 1)
            if j < 0:  # unterminated escape: keep it literally
                pending += raw[start:]
                break
            seq = raw[start + 1 : j]
            i = j + 1
            code, arg = seq[:1], seq[1:]
            if code == b"F":
                pending += field_s
            elif code == b"S":
                pending += comp_s
            elif code == b"T":
                pending += sub_s
            elif code == b"R":
                pending += rep_s
            elif code == b"E":
                pending += esc
            elif code == b"X":
                try:
                    pending += bytes.fromhex(arg.decode("ascii"))
                except ValueError:
                    pass
            elif seq == b".br":
                pending += b"\n"
            elif code in (b"H", b"N", b"Z", b"C", b"M", b"P", b"."):
                pass  # highlighting, local escapes, charset switches, formatting: dropped
            else:
                pending += esc + seq + esc
        return self.decode(bytes(pending))


def field(fields: list[bytes], n: int) -> bytes:
    """SEG-n as raw bytes, b"" when absent (trailing fields may be omitted)."""
    return fields[n] if n < len(fields) else b""


def reps(raw: bytes, seps: bytes) -> list[bytes]:
    return raw.split(seps[2:3]) if raw else []


def comps(raw: bytes, seps: bytes) -> list[bytes]:
    return raw.split(seps[1:2])


def subs(raw: bytes, seps: bytes) -> list[bytes]:
    return raw.split(seps[4:5])


def at(parts: list[bytes], n: int) -> bytes:
    """1-based component access with bounds check."""
    return parts[n - 1] if 0 < n <= len(parts) else b""


def escape(text: str, seps: bytes = b"|^~\\&") -> str:
    """Escape text for an outbound HL7 field (escape char first)."""
    f, c, r, e, s = (chr(b) for b in seps[:5])
    text = text.replace(e, f"{e}E{e}")
    text = text.replace(f, f"{e}F{e}").replace(c, f"{e}S{e}").replace(r, f"{e}R{e}").replace(s, f"{e}T{e}")
    return text.replace("\r\n", f"{e}.br{e}").replace("\r", f"{e}.br{e}").replace("\n", f"{e}.br{e}")


STANDARD_SEPS = b"|^~\\&"


def segment_text(fields: list[bytes], seps: bytes, dec: Decoder) -> str:
    """A segment as text with the standard delimiters ``|^~\\&``, escape sequences kept
    (``\\F\\``, ``\\S\\`` ...), for copying it into an outbound message."""
    if seps[:5] == STANDARD_SEPS:
        return dec.decode(seps[0:1].join(fields))
    out = [dec.decode(fields[0])]
    for raw in fields[1:]:
        out.append(
            "~".join(
                "^".join(
                    "&".join(_restate(dec.decode(sub), chr(seps[3])) for sub in comp.split(seps[4:5]))
                    for comp in rep.split(seps[1:2])
                )
                for rep in raw.split(seps[2:3])
            )
            if raw
            else ""
        )
    return "|".join(out)


def _restate(text: str, esc: str) -> str:
    """One atomic value written with another escape character -> standard delimiters:
    plain text is escaped for ``|^~\\&``, escape sequences get ``\\`` around them."""
    parts = text.split(esc)  # even: plain text; odd: the body of an escape sequence
    return "".join(escape(p) if i % 2 == 0 else f"\\{p}\\" for i, p in enumerate(parts))
