"""HL7 v2 segment scanner, compiled twin of ``ebw.hl7._scan_ref`` (the specification).

Same names, signature, results and ``ParseError`` reasons/offsets as the reference;
``tests/diff/test_scan_diff.py`` holds the two together.

Shape:
  * ``scan`` takes the buffer once (``PyObject_GetBuffer``, PyBUF_SIMPLE) and keeps
    the export until it returns, so a bytearray cannot be resized under us;
  * pass 1 (``_find_segments``) is pure C over pointer + length: it finds the
    segment breaks with ``memchr``, drops blank segments, checks segment ids and
    records ``(start, end)`` spans.  It does not touch Python objects, so for big
    messages it runs without the GIL;
  * pass 2 (``_build``) creates the Python results from the spans.

Every read of ``p[i]`` is preceded by a check that ``i < n`` (or lies inside a span
that pass 1 checked); ``memchr`` is only given ranges inside ``[0, n)``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport Py_INCREF, PyObject
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy

from ebw.errors import ParseError

cdef extern from *:
    """
    #ifndef EBW_DEBUG
    #define EBW_DEBUG 0
    #endif
    """
    bint EBW_DEBUG

__all__ = ["DEFAULT_WANTED", "scan"]

DEFAULT_WANTED = frozenset({"MSH", "EVN", "PID", "PD1", "PV1", "PV2", "MRG", "OBR", "ORC"})

# Reasons, word for word as in the reference.
EMPTY_MESSAGE = "empty message"
NO_MSH = "no MSH segment"
BAD_FIELD_SEPARATOR = "bad MSH field separator"
BAD_SEGMENT_ID = "bad segment id"

ctypedef unsigned char uchar

cdef enum:
    CR = 0x0D
    LF = 0x0A
    SP = 0x20
    TAB = 0x09
    # Below this many bytes pass 1 keeps the GIL: a 1 kB ADT scans in well under a
    # microsecond, less than a GIL hand-off, and releasing it can make this thread
    # wait a whole switch interval to get it back when other threads are busy.
    NOGIL_MIN_BYTES = 64 * 1024
    SPANS_ON_STACK = 64

cdef enum Status:
    OK = 0
    ERR_EMPTY
    ERR_NO_MSH
    ERR_BAD_FS
    ERR_BAD_ID
    ERR_NO_MEMORY

cdef struct Span:
    Py_ssize_t start
    Py_ssize_t end

cdef struct SpanList:
    Span* items      # points at the caller's stack array until it overflows
    Py_ssize_t count
    Py_ssize_t capacity
    bint on_heap


# --------------------------------------------------------------------------- bytes


cdef inline bint _is_upper(uchar c) noexcept nogil:
    return c >= b'A' and c <= b'Z'


cdef inline bint _is_id_char(uchar c) noexcept nogil:
    return (c >= b'A' and c <= b'Z') or (c >= b'0' and c <= b'9')


cdef inline bint _is_outer_whitespace(uchar c) noexcept nogil:
    """CR, LF, space, tab: skipped before MSH and after the last segment."""
    return c == CR or c == LF or c == SP or c == TAB


cdef inline bint _is_blank(uchar c) noexcept nogil:
    """Space, tab, LF: what a dropped (blank) segment may consist of."""
    return c == SP or c == TAB or c == LF


cdef inline bint _bad_field_separator(uchar c) noexcept nogil:
    return (_is_id_char(c) or (c >= b'a' and c <= b'z')
            or c == CR or c == LF or c == SP)


cdef inline Py_ssize_t _find(const uchar* p, Py_ssize_t pos, Py_ssize_t n, uchar c) noexcept nogil:
    """Offset of the first ``c`` in ``p[pos:n]``, or ``n``."""
    if pos >= n:
        return n
    cdef const void* hit = memchr(p + pos, c, <size_t>(n - pos))
    if hit == NULL:
        return n
    return <const uchar*>hit - p


# --------------------------------------------------------------------------- pass 1


cdef Status _message_start(const uchar* p, Py_ssize_t n, Py_ssize_t* start) noexcept nogil:
    """Rule 1: ``start`` = offset of the ``M`` of MSH, or the offset of the error."""
    cdef Py_ssize_t pos = 0
    if n >= 3 and p[0] == 0xEF and p[1] == 0xBB and p[2] == 0xBF:
        pos = 3
    while pos < n and _is_outer_whitespace(p[pos]):
        pos += 1
    if pos == n:
        start[0] = 0
        return ERR_EMPTY
    if not (pos + 3 <= n and p[pos] == b'M' and p[pos + 1] == b'S' and p[pos + 2] == b'H'):
        start[0] = pos
        return ERR_NO_MSH
    if pos + 3 >= n or _bad_field_separator(p[pos + 3]):
        start[0] = pos + 3
        return ERR_BAD_FS
    start[0] = pos
    return OK


cdef inline bint _starts_segment(const uchar* p, Py_ssize_t n, Py_ssize_t pos, uchar fs) noexcept nogil:
    """Rule 2a: ``[A-Z][A-Z0-9]{2}`` and the field separator at ``pos``."""
    return (pos + 3 < n and _is_upper(p[pos]) and _is_id_char(p[pos + 1])
            and _is_id_char(p[pos + 2]) and p[pos + 3] == fs)


cdef Status _grow(SpanList* spans) noexcept nogil:
    cdef Py_ssize_t capacity = spans.capacity * 2
    cdef Span* items
    if spans.on_heap:
        items = <Span*>realloc(spans.items, <size_t>capacity * sizeof(Span))
    else:
        items = <Span*>malloc(<size_t>capacity * sizeof(Span))
        if items != NULL:
            memcpy(items, spans.items, <size_t>spans.count * sizeof(Span))
    if items == NULL:
        return ERR_NO_MEMORY
    spans.items = items
    spans.capacity = capacity
    spans.on_heap = True
    return OK


cdef Status _add_segment(const uchar* p, Py_ssize_t start, Py_ssize_t end, uchar fs,
                         SpanList* spans, Py_ssize_t* err_offset) noexcept nogil:
    """Rules 3 and 4 for the segment ``p[start:end]`` (``end <= n``)."""
    cdef Py_ssize_t i = start
    while i < end and _is_blank(p[i]):
        i += 1
    if i == end:
        return OK  # empty or blank: dropped
    if not (end - start >= 3 and _is_id_char(p[start]) and _is_id_char(p[start + 1])
            and _is_id_char(p[start + 2]) and (end - start == 3 or p[start + 3] == fs)):
        err_offset[0] = start
        return ERR_BAD_ID
    if spans.count == spans.capacity and _grow(spans) != OK:
        return ERR_NO_MEMORY
    spans.items[spans.count].start = start
    spans.items[spans.count].end = end
    spans.count += 1
    return OK


cdef Status _find_segments(const uchar* p, Py_ssize_t n, Py_ssize_t start, uchar fs,
                           SpanList* spans, Py_ssize_t* err_offset) noexcept nogil:
    """Rule 2: walk the breaks from ``start``; stops at the first bad segment."""
    cdef Py_ssize_t tail = n  # where the trailing run of whitespace begins
    while tail > start and _is_outer_whitespace(p[tail - 1]):
        tail -= 1
    cdef Py_ssize_t seg_start = start
    cdef Py_ssize_t brk, brk_end
    cdef Py_ssize_t next_cr = _find(p, start, n, CR)
    cdef Py_ssize_t next_lf = _find(p, start, n, LF)
    cdef Status status
    while next_cr < n or next_lf < n:
        if next_cr < next_lf:
            brk = next_cr
            brk_end = brk + 1
            if brk_end < n and p[brk_end] == LF:
                brk_end += 1  # CR LF is one break
            next_cr = _find(p, brk_end, n, CR)
            if next_lf < brk_end:
                next_lf = _find(p, brk_end, n, LF)
        else:
            brk = next_lf
            brk_end = brk + 1
            next_lf = _find(p, brk_end, n, LF)
            if not (brk >= tail or _starts_segment(p, n, brk_end, fs)):
                continue  # a lone LF inside a segment is data
        status = _add_segment(p, seg_start, brk, fs, spans, err_offset)
        if status != OK:
            return status
        seg_start = brk_end
    return _add_segment(p, seg_start, n, fs, spans, err_offset)


# --------------------------------------------------------------------------- pass 2


cdef list _fields(const uchar* p, Py_ssize_t start, Py_ssize_t end, uchar fs, bint is_msh):
    """Field list of the checked segment ``p[start:end]``; index = HL7 field number."""
    cdef list fields = [PyBytes_FromStringAndSize(<const char*>p + start, 3)]
    if end - start == 3:
        return fields
    if is_msh:
        fields.append(PyBytes_FromStringAndSize(<const char*>p + start + 3, 1))
    cdef Py_ssize_t pos = start + 4  # p[start + 3] is the field separator
    cdef Py_ssize_t stop
    while True:
        stop = _find(p, pos, end, fs)
        fields.append(PyBytes_FromStringAndSize(<const char*>p + pos, stop - pos))
        if stop == end:
            return fields
        pos = stop + 1


cdef bytes _separators(const uchar* p, const Span* msh, uchar fs):
    """Field separator + MSH-2 (first 4 bytes), defaults for the missing ones."""
    cdef uchar seps[5]
    seps[0] = fs
    seps[1] = b'^'
    seps[2] = b'~'
    seps[3] = b'\\'
    seps[4] = b'&'
    cdef Py_ssize_t pos = msh.start + 4
    cdef Py_ssize_t k = 1
    while k < 5 and pos < msh.end and p[pos] != fs:
        seps[k] = p[pos]
        k += 1
        pos += 1
    return PyBytes_FromStringAndSize(<const char*>seps, 5)


# One str per segment id ever seen ([A-Z0-9]{3}: at most 46,656, a few MB at worst),
# created once and kept: segment ids repeat in every message, and a cached str also
# keeps its hash for the ``in wanted`` test.  ~10% of a typical scan.
cdef PyObject* _id_cache[36 * 36 * 36]


cdef inline Py_ssize_t _id_digit(uchar c) noexcept nogil:
    """'0'-'9' -> 0-9, 'A'-'Z' -> 10-35 (``c`` already checked by _is_id_char)."""
    return c - 0x30 if c <= b'9' else c - 0x41 + 10  # 0x30 '0', 0x41 'A'


cdef str _segment_id(const uchar* p):
    """The id ``p[0:3]`` as a str; pass 1 checked the bytes, checked again here."""
    cdef Py_ssize_t slot
    cdef str seg_id
    if not (_is_id_char(p[0]) and _is_id_char(p[1]) and _is_id_char(p[2])):
        return PyUnicode_DecodeASCII(<const char*>p, 3, NULL)  # bytes changed under us
    slot = _id_digit(p[0]) * 36 * 36 + _id_digit(p[1]) * 36 + _id_digit(p[2])
    if _id_cache[slot] != NULL:
        return <str>_id_cache[slot]
    seg_id = PyUnicode_DecodeASCII(<const char*>p, 3, NULL)
    Py_INCREF(seg_id)  # the cache's reference, never released
    _id_cache[slot] = <PyObject*>seg_id
    return seg_id


cdef tuple _build(const uchar* p, Py_ssize_t n, const SpanList* spans, uchar fs, object wanted):
    if spans.count == 0:  # cannot happen (see _scan); never read items[0] regardless
        raise SystemError("hl7scan: no MSH span")
    cdef list segments = []
    cdef Py_ssize_t k, start, end
    cdef bint is_msh
    cdef str seg_id
    for k in range(spans.count):
        start = spans.items[k].start
        end = spans.items[k].end
        if EBW_DEBUG:
            assert 0 <= start and start + 3 <= end and end <= n, "span out of range"
        seg_id = _segment_id(p + start)
        is_msh = p[start] == b'M' and p[start + 1] == b'S' and p[start + 2] == b'H'
        if is_msh or seg_id in wanted:
            segments.append((seg_id, _fields(p, start, end, fs, is_msh)))
    return _separators(p, &spans.items[0], fs), spans.count, segments


cdef object _error(Status status, Py_ssize_t offset):
    if status == ERR_EMPTY:
        return ParseError(EMPTY_MESSAGE, offset=offset)
    if status == ERR_NO_MSH:
        return ParseError(NO_MSH, offset=offset)
    if status == ERR_BAD_FS:
        return ParseError(BAD_FIELD_SEPARATOR, offset=offset)
    if status == ERR_BAD_ID:
        return ParseError(BAD_SEGMENT_ID, offset=offset)
    return MemoryError()


# --------------------------------------------------------------------------- API


cdef tuple _scan(const uchar* p, Py_ssize_t n, object wanted):
    cdef Py_ssize_t start = 0
    cdef Status status = _message_start(p, n, &start)
    if status != OK:
        raise _error(status, start)
    cdef uchar fs = p[start + 3]  # _message_start checked start + 3 < n
    cdef Span on_stack[SPANS_ON_STACK]
    cdef SpanList spans
    spans.items = on_stack
    spans.count = 0
    spans.capacity = SPANS_ON_STACK
    spans.on_heap = False
    cdef Py_ssize_t err_offset = -1
    try:
        if n >= NOGIL_MIN_BYTES:
            with nogil:
                status = _find_segments(p, n, start, fs, &spans, &err_offset)
        else:
            status = _find_segments(p, n, start, fs, &spans, &err_offset)
        if status == ERR_NO_MEMORY:
            raise MemoryError()
        # Segments before a bad one are built first, in order, as the reference
        # does: the same ``in wanted`` calls happen before the ParseError.
        # spans.count >= 1 here: the first span is the MSH that _message_start saw.
        result = _build(p, n, &spans, fs, wanted)
        if status != OK:
            raise _error(status, err_offset)
        return result
    finally:
        if spans.on_heap:
            free(spans.items)


def scan(data, wanted=DEFAULT_WANTED):
    """Split one HL7 v2 message into segments and fields: ``(seps, nseg, segments)``.

    The rules are those of ``ebw.hl7._scan_ref`` (its module docstring is the
    specification); ``hl7scan.pyi`` has the types.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"scan() needs bytes, bytearray or memoryview, not {type(data).__name__}")
    if isinstance(data, memoryview) and not data.c_contiguous:
        data = bytes(data)  # what the reference reads; PyBUF_SIMPLE needs contiguity
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _scan(<const uchar*>view.buf, view.len, wanted)
    finally:
        PyBuffer_Release(&view)
