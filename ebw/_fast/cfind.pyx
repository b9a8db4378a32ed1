# cython: language_level=3
"""C-FIND key matching, compiled.

The Cython twin of :mod:`ebw.dicom._match_ref`, which is the specification:
same public names, signatures, results and exception messages.  Use it through
:mod:`ebw.dicom.match`.

Keys are compiled once into ``cdef`` classes holding C-typed bounds and
pointers into the (kept alive) key strings; matching walks the stored Python
``str`` in place through ``PyUnicode_READ`` (no substrings, no regex).  The
only per-item allocation is ``str.casefold()`` of a non-ASCII stored PN value
(ASCII PN values are lower-cased on the fly) and, for keys with more than
``SET_THRESHOLD`` exact values, the stored part when it is not the whole value.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_KIND, PyUnicode_READ
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t
from libc.string cimport memcmp

from ebw.errors import QueryError

__all__ = ["CompiledQuery", "compile_query", "match", "filter_items"]

cdef extern from *:
    """
    static CYTHON_INLINE int ebw_cfind_ready(PyObject *s) {
    #if PY_VERSION_HEX < 0x030C0000
        return PyUnicode_READY(s);
    #else
        (void)s;
        return 0;
    #endif
    }
    """
    int ebw_cfind_ready(object s) except -1
    bint PyUnicode_IS_ASCII(object s)

cdef frozenset STRING_VRS = frozenset(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"))
cdef frozenset LEADING_TRIM_VRS = frozenset(("AE", "CS", "SH", "LO"))
cdef frozenset KNOWN_VRS = STRING_VRS | frozenset(("UI", "DA", "TM", "DT"))

cdef str DA_RULE = "DA must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-"
cdef str TM_RULE = "TM must be HH[MM[SS[.F{1,6}]]] or a range A-B, -B, A-"
cdef str DT_RULE = "DT must be YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][+/-HHMM] or a range A-B, -B, A-"
cdef str KEYS_RULE = "keys must be (path, vr, value) triples of str"

cdef enum:
    # Above this many exact values a key tests stored parts with a frozenset.
    SET_THRESHOLD = 8
    # trim modes
    T_TRAIL = 0   # trailing spaces
    T_BOTH = 1    # AE CS SH LO: leading and trailing spaces
    T_PN = 2      # trailing spaces, then trailing '^'
    T_UI = 3      # trailing spaces and NULs
    C_SPACE = 32
    C_BACKSLASH = 92


cdef inline unsigned int rd(int kind, void* data, Py_ssize_t i) noexcept:
    return PyUnicode_READ(kind, data, i)


cdef inline bint isdig(unsigned int c) noexcept:
    return 48 <= c <= 57


cdef int trim_mode(str vr):
    if vr == "UI":
        return T_UI
    if vr in LEADING_TRIM_VRS:
        return T_BOTH
    if vr == "PN":
        return T_PN
    return T_TRAIL


cdef str trim(str vr, str s):
    """The padding trim of one value for ``vr`` (compile time only)."""
    if vr == "UI":
        return s.rstrip(" \x00")
    s = s.rstrip(" ")
    if vr in LEADING_TRIM_VRS:
        s = s.lstrip(" ")
    elif vr == "PN":
        s = s.rstrip("^")
    return s


cdef inline void trim_span(int mode, int kind, void* data,
                           Py_ssize_t* pa, Py_ssize_t* pb) noexcept:
    cdef Py_ssize_t a = pa[0]
    cdef Py_ssize_t b = pb[0]
    cdef unsigned int c
    if mode == T_UI:
        while b > a:
            c = rd(kind, data, b - 1)
            if c != C_SPACE and c != 0:
                break
            b -= 1
    else:
        while b > a and rd(kind, data, b - 1) == C_SPACE:
            b -= 1
        if mode == T_BOTH:
            while a < b and rd(kind, data, a) == C_SPACE:
                a += 1
        elif mode == T_PN:
            while b > a and rd(kind, data, b - 1) == 94:  # '^'
                b -= 1
    pa[0] = a
    pb[0] = b


cdef bint all_digits(str s) except -1:
    cdef Py_ssize_t i, n
    cdef int kind
    cdef void* data
    ebw_cfind_ready(s)
    n = len(s)
    kind = PyUnicode_KIND(s)
    data = PyUnicode_DATA(s)
    if n == 0:
        return False
    for i in range(n):
        if not isdig(rd(kind, data, i)):
            return False
    return True


# --------------------------------------------------------------------------
# wildcards

cdef inline unsigned int fold_ascii(unsigned int c, bint lower) noexcept:
    if lower and 65 <= c <= 90:
        return c + 32
    return c


cdef bint wild(int pk, void* pd, Py_ssize_t pn,
               int kind, void* data, Py_ssize_t a, Py_ssize_t b, bint lower) noexcept:
    """Anchored glob of pattern (pk, pd, pn) on data[a:b]; ``lower`` lower-cases
    ASCII letters of the subject on the fly."""
    cdef Py_ssize_t p = 0
    cdef Py_ssize_t i = a
    cdef Py_ssize_t star = -1
    cdef Py_ssize_t mark = 0
    cdef unsigned int pc
    while i < b:
        if p < pn:
            pc = rd(pk, pd, p)
            if pc == 42:  # '*'
                star = p
                mark = i
                p += 1
                continue
            if pc == 63 or pc == fold_ascii(rd(kind, data, i), lower):  # '?'
                p += 1
                i += 1
                continue
        if star >= 0:
            mark += 1
            i = mark
            p = star + 1
        else:
            return False
    while p < pn and rd(pk, pd, p) == 42:
        p += 1
    return p == pn


cdef inline bint equal_span(int kk, void* kd, Py_ssize_t kn,
                            int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                            bint lower) noexcept:
    cdef Py_ssize_t i
    if b - a != kn:
        return False
    if not lower and kk == kind:
        return memcmp(<char*>data + a * kind, kd, kn * kind) == 0
    for i in range(kn):
        if rd(kk, kd, i) != fold_ascii(rd(kind, data, a + i), lower):
            return False
    return True


# --------------------------------------------------------------------------
# TM

cdef int64_t[13] POW10
POW10[0] = 1
for _i in range(1, 13):
    POW10[_i] = POW10[_i - 1] * 10

# digits of the maximum time HHMMSSFFFFFF
cdef int[12] TM_MAX_DIGITS
for _i, _c in enumerate("235959999999"):
    TM_MAX_DIGITS[_i] = ord(_c) - 48


cdef inline int two(int kind, void* data, Py_ssize_t i) noexcept:
    return (rd(kind, data, i) - 48) * 10 + (rd(kind, data, i + 1) - 48)


cdef bint parse_tm(int kind, void* data, Py_ssize_t i, Py_ssize_t n,
                   int64_t* low, int64_t* high) noexcept:
    """Parse data[i:n] as one TM value into its low and high 12-digit numbers."""
    cdef int[12] d
    cdef int nd = 0
    cdef int group, k
    cdef Py_ssize_t nf
    cdef int64_t lo = 0, hi = 0
    for group in range(3):
        if group > 0:
            if i == n:
                break
            if rd(kind, data, i) == 58:  # ':'
                i += 1
        if i + 2 > n or not isdig(rd(kind, data, i)) or not isdig(rd(kind, data, i + 1)):
            return False
        d[nd] = rd(kind, data, i) - 48
        d[nd + 1] = rd(kind, data, i + 1) - 48
        nd += 2
        i += 2
    if nd == 6 and i < n and rd(kind, data, i) == 46:  # '.'
        nf = n - (i + 1)
        if nf < 1 or nf > 6:
            return False
        for k in range(nf):
            if not isdig(rd(kind, data, i + 1 + k)):
                return False
            d[nd] = rd(kind, data, i + 1 + k) - 48
            nd += 1
        i = n
    if i != n:
        return False
    if d[0] * 10 + d[1] > 23:
        return False
    if nd >= 4 and d[2] * 10 + d[3] > 59:
        return False
    if nd >= 6 and d[4] * 10 + d[5] > 60:
        return False
    for k in range(12):
        if k < nd:
            lo = lo * 10 + d[k]
            hi = hi * 10 + d[k]
        else:
            lo = lo * 10
            hi = hi * 10 + TM_MAX_DIGITS[k]
    low[0] = lo
    high[0] = hi
    return True


# --------------------------------------------------------------------------
# DT

cdef struct DTValue:
    int64_t low
    int64_t high
    bint has_offset
    int offset   # minutes east of UTC


cdef inline bint is_leap(int64_t y) noexcept:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


cdef inline int days_in_month(int64_t y, int m) noexcept:
    if m == 2:
        return 29 if is_leap(y) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


@cython.cdivision(True)
cdef int64_t day_number(int64_t y, int64_t m, int64_t d) noexcept:
    # Same as the reference: every division is on a non-negative number.
    cdef int64_t era, yoe, mp, doy, doe
    y = y + 400 - (1 if m <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe


cdef inline int64_t instant(int64_t y, int64_t mo, int64_t d, int64_t h, int64_t mi,
                            int64_t s, int64_t frac) noexcept:
    return (day_number(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000 + frac


cdef inline bint is_offset_at(int kind, void* data, Py_ssize_t j, Py_ssize_t n) noexcept:
    cdef Py_ssize_t k
    if j + 5 > n:
        return False
    for k in range(j + 1, j + 5):
        if not isdig(rd(kind, data, k)):
            return False
    return two(kind, data, j + 1) <= 14 and two(kind, data, j + 3) <= 59


cdef Py_ssize_t parse_dt(int kind, void* data, Py_ssize_t i, Py_ssize_t n,
                         DTValue* out) noexcept:
    """Parse one DT value at data[i:]; return the index after it, or -1."""
    cdef Py_ssize_t j = i, k, nd, nf = 0
    cdef int64_t y, mo = -1, d = -1, h = -1, mi = -1, sec = -1, frac = 0
    cdef int64_t hmo, scale
    cdef unsigned int c
    cdef int minutes
    while j < n and isdig(rd(kind, data, j)):
        j += 1
    nd = j - i
    if nd != 4 and nd != 6 and nd != 8 and nd != 10 and nd != 12 and nd != 14:
        return -1
    if nd == 14 and j < n and rd(kind, data, j) == 46:  # '.'
        k = j + 1
        while k < n and isdig(rd(kind, data, k)):
            k += 1
        nf = k - (j + 1)
        if nf < 1 or nf > 6:
            return -1
        for k in range(j + 1, j + 1 + nf):
            frac = frac * 10 + (rd(kind, data, k) - 48)
        j = j + 1 + nf
    out.has_offset = False
    out.offset = 0
    if j < n:
        c = rd(kind, data, j)
        if c == 43 or c == 45:  # '+' '-'
            if is_offset_at(kind, data, j, n) and (j + 5 == n or rd(kind, data, j + 5) == 45):
                minutes = two(kind, data, j + 1) * 60 + two(kind, data, j + 3)
                out.has_offset = True
                out.offset = -minutes if c == 45 else minutes
                j += 5
            elif c == 43:
                return -1
    y = two(kind, data, i) * 100 + two(kind, data, i + 2)
    if nd >= 6:
        mo = two(kind, data, i + 4)
        if mo < 1 or mo > 12:
            return -1
    if nd >= 8:
        d = two(kind, data, i + 6)
        if d < 1 or d > days_in_month(y, <int>mo):
            return -1
    if nd >= 10:
        h = two(kind, data, i + 8)
        if h > 23:
            return -1
    if nd >= 12:
        mi = two(kind, data, i + 10)
        if mi > 59:
            return -1
    if nd >= 14:
        sec = two(kind, data, i + 12)
        if sec > 60:
            return -1
    scale = POW10[6 - nf]
    out.low = instant(y, 1 if mo < 0 else mo, 1 if d < 0 else d, 0 if h < 0 else h,
                      0 if mi < 0 else mi, 0 if sec < 0 else sec, frac * scale)
    hmo = 12 if mo < 0 else mo
    out.high = instant(y, hmo, days_in_month(y, <int>hmo) if d < 0 else d,
                       23 if h < 0 else h, 59 if mi < 0 else mi, 59 if sec < 0 else sec,
                       frac * scale + scale - 1)
    return j


# --------------------------------------------------------------------------
# compiled keys

cdef class _Key:
    """One non-universal key."""
    cdef readonly str path
    cdef int mode

    cdef int test(self, object stored) except -1:
        if stored is None:
            return 0
        if not isinstance(stored, str):
            raise TypeError(f"{self.path}: stored value must be str")
        return self.test_str(<str>stored)

    cdef int test_str(self, str s) except -1:
        return self.scan(s, False)

    cdef int scan(self, str s, bint lower) except -1:
        """Split ``s`` on backslashes, trim, skip empty parts, test each."""
        cdef Py_ssize_t n, start = 0, end, a, b
        cdef int kind, r
        cdef void* data
        ebw_cfind_ready(s)
        n = len(s)
        kind = PyUnicode_KIND(s)
        data = PyUnicode_DATA(s)
        while True:
            end = start
            while end < n and rd(kind, data, end) != C_BACKSLASH:
                end += 1
            a = start
            b = end
            trim_span(self.mode, kind, data, &a, &b)
            if b > a:
                r = self.part(s, kind, data, a, b, lower)
                if r:
                    return r
            if end >= n:
                return 0
            start = end + 1

    cdef int part(self, str s, int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                  bint lower) except -1:
        return 0


cdef class _StringKey(_Key):
    """UI and the string VRs: exact values and wildcard patterns (OR)."""
    cdef bint pn
    cdef list strings          # keeps the key strings alive
    cdef frozenset exact_set   # None unless many exact values
    cdef Py_ssize_t n_exact, n_pat
    cdef int* ex_kind
    cdef void** ex_data
    cdef Py_ssize_t* ex_len
    cdef int* pat_kind
    cdef void** pat_data
    cdef Py_ssize_t* pat_len

    def __dealloc__(self):
        PyMem_Free(self.ex_kind)
        PyMem_Free(self.ex_data)
        PyMem_Free(self.ex_len)
        PyMem_Free(self.pat_kind)
        PyMem_Free(self.pat_data)
        PyMem_Free(self.pat_len)

    cdef int setup(self, str path, str vr, list values) except -1:
        cdef list exact = []
        cdef list pats = []
        cdef str v
        cdef Py_ssize_t i, m
        self.path = path
        self.mode = trim_mode(vr)
        self.pn = vr == "PN"
        for v in values:
            if vr != "UI" and ("*" in v or "?" in v):
                pats.append(v)
            else:
                exact.append(v)
        self.strings = exact + pats
        self.n_exact = len(exact)
        self.n_pat = len(pats)
        if self.n_exact > SET_THRESHOLD:
            self.exact_set = frozenset(exact)
        m = max(len(self.strings), 1)
        self.ex_kind = <int*>PyMem_Malloc(m * sizeof(int))
        self.ex_data = <void**>PyMem_Malloc(m * sizeof(void*))
        self.ex_len = <Py_ssize_t*>PyMem_Malloc(m * sizeof(Py_ssize_t))
        self.pat_kind = <int*>PyMem_Malloc(m * sizeof(int))
        self.pat_data = <void**>PyMem_Malloc(m * sizeof(void*))
        self.pat_len = <Py_ssize_t*>PyMem_Malloc(m * sizeof(Py_ssize_t))
        if (not self.ex_kind or not self.ex_data or not self.ex_len
                or not self.pat_kind or not self.pat_data or not self.pat_len):
            raise MemoryError()
        for i in range(self.n_exact):
            v = exact[i]
            ebw_cfind_ready(v)
            self.ex_kind[i] = PyUnicode_KIND(v)
            self.ex_data[i] = PyUnicode_DATA(v)
            self.ex_len[i] = len(v)
        for i in range(self.n_pat):
            v = pats[i]
            ebw_cfind_ready(v)
            self.pat_kind[i] = PyUnicode_KIND(v)
            self.pat_data[i] = PyUnicode_DATA(v)
            self.pat_len[i] = len(v)
        return 0

    cdef int test_str(self, str s) except -1:
        if not self.pn:
            return self.scan(s, False)
        ebw_cfind_ready(s)
        if PyUnicode_IS_ASCII(s):
            return self.scan(s, True)     # casefold == lower-case A-Z
        return self.scan(s.casefold(), False)

    cdef int part(self, str s, int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                  bint lower) except -1:
        cdef Py_ssize_t i
        cdef str sub
        if self.exact_set is not None:
            if a == 0 and b == len(s):
                sub = s
            else:
                sub = s[a:b]
            if lower:
                sub = sub.lower()
            if sub in self.exact_set:
                return 1
        else:
            for i in range(self.n_exact):
                if equal_span(self.ex_kind[i], self.ex_data[i], self.ex_len[i],
                              kind, data, a, b, lower):
                    return 1
        for i in range(self.n_pat):
            if wild(self.pat_kind[i], self.pat_data[i], self.pat_len[i],
                    kind, data, a, b, lower):
                return 1
        return 0


cdef class _DAKey(_Key):
    cdef int64_t low, high

    cdef int part(self, str s, int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                  bint lower) except -1:
        cdef int64_t v = 0
        cdef Py_ssize_t i
        cdef unsigned int c
        if b - a != 8:
            return 0
        for i in range(a, b):
            c = rd(kind, data, i)
            if not isdig(c):
                return 0
            v = v * 10 + (c - 48)
        return self.low <= v <= self.high


cdef class _TMKey(_Key):
    cdef int64_t low, high

    cdef int part(self, str s, int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                  bint lower) except -1:
        cdef int64_t t, unused
        if not parse_tm(kind, data, a, b, &t, &unused):
            return 0
        return self.low <= t <= self.high


cdef class _DTKey(_Key):
    cdef bint has_low, has_high
    cdef bint low_has_offset, high_has_offset
    cdef int64_t low, high            # local instants
    cdef int64_t low_utc, high_utc    # minus the bound's offset

    cdef int part(self, str s, int kind, void* data, Py_ssize_t a, Py_ssize_t b,
                  bint lower) except -1:
        cdef DTValue v
        cdef int64_t utc
        if parse_dt(kind, data, a, b, &v) != b:
            return 0
        utc = v.low - <int64_t>v.offset * 60000000
        if self.has_low:
            if self.low_has_offset and v.has_offset:
                if utc < self.low_utc:
                    return 0
            elif v.low < self.low:
                return 0
        if self.has_high:
            if self.high_has_offset and v.has_offset:
                if utc > self.high_utc:
                    return 0
            elif v.low > self.high:
                return 0
        return 1


cdef _DAKey compile_da(str path, str v):
    cdef list parts = v.split("-")
    cdef str p
    cdef _DAKey key
    if len(parts) == 1:
        parts = [v, v]
    if len(parts) != 2 or (parts[0] == "" and parts[1] == ""):
        raise QueryError(f"{path}: {DA_RULE}")
    for p in parts:
        if p != "" and (len(p) != 8 or not all_digits(p)):
            raise QueryError(f"{path}: {DA_RULE}")
    key = _DAKey.__new__(_DAKey)
    key.path = path
    key.mode = T_TRAIL
    key.low = int(parts[0]) if parts[0] else INT64_MIN
    key.high = int(parts[1]) if parts[1] else INT64_MAX
    return key


cdef _TMKey compile_tm(str path, str v):
    cdef list parts = v.split("-")
    cdef str p
    cdef _TMKey key
    cdef int64_t lo, hi
    if len(parts) == 1:
        parts = [v, v]
    if len(parts) != 2 or (parts[0] == "" and parts[1] == ""):
        raise QueryError(f"{path}: {TM_RULE}")
    key = _TMKey.__new__(_TMKey)
    key.path = path
    key.mode = T_TRAIL
    key.low = INT64_MIN
    key.high = INT64_MAX
    p = parts[0]
    if p != "":
        ebw_cfind_ready(p)
        if not parse_tm(PyUnicode_KIND(p), PyUnicode_DATA(p), 0, len(p), &lo, &hi):
            raise QueryError(f"{path}: {TM_RULE}")
        key.low = lo
    p = parts[1]
    if p != "":
        ebw_cfind_ready(p)
        if not parse_tm(PyUnicode_KIND(p), PyUnicode_DATA(p), 0, len(p), &lo, &hi):
            raise QueryError(f"{path}: {TM_RULE}")
        key.high = hi
    return key


cdef _DTKey compile_dt(str path, str v):
    cdef Py_ssize_t n = len(v), j = 0
    cdef int kind = PyUnicode_KIND(v)
    cdef void* data = PyUnicode_DATA(v)
    cdef DTValue first, second
    cdef bint has_first = False, has_second = False
    cdef _DTKey key = _DTKey.__new__(_DTKey)
    key.path = path
    key.mode = T_TRAIL
    if rd(kind, data, 0) != 45:  # '-'
        j = parse_dt(kind, data, 0, n, &first)
        if j < 0:
            raise QueryError(f"{path}: {DT_RULE}")
        has_first = True
        if j == n:
            second = first
            has_second = True
        elif rd(kind, data, j) != 45:
            raise QueryError(f"{path}: {DT_RULE}")
    if not has_second and j + 1 < n:
        if parse_dt(kind, data, j + 1, n, &second) != n:
            raise QueryError(f"{path}: {DT_RULE}")
        has_second = True
    if not has_first and not has_second:
        raise QueryError(f"{path}: {DT_RULE}")
    key.has_low = has_first
    if has_first:
        key.low = first.low
        key.low_has_offset = first.has_offset
        key.low_utc = first.low - <int64_t>first.offset * 60000000
    key.has_high = has_second
    if has_second:
        key.high = second.high
        key.high_has_offset = second.has_offset
        key.high_utc = second.high - <int64_t>second.offset * 60000000
    return key


@cython.final
cdef class CompiledQuery:
    """A compiled C-FIND identifier.  ``paths``: the paths of the keys it
    tests (the non-universal ones), in input order."""
    cdef readonly tuple paths
    cdef tuple keys

    def __init__(self):
        raise TypeError("use compile_query()")

    def __repr__(self):
        return f"<CompiledQuery paths={self.paths!r}>"


cdef inline int match_one(CompiledQuery query, object item) except -1:
    cdef _Key key
    cdef PyObject* found
    cdef object stored
    cdef bint plain = type(item) is dict
    for key in query.keys:
        if plain:
            found = PyDict_GetItemWithError(item, key.path)
            stored = None if found == NULL else <object>found
        else:
            stored = item.get(key.path)
        if not key.test(stored):
            return 0
    return 1


def compile_query(keys):
    """Compile ``(path, vr, value)`` matching keys; see ``ebw.dicom._match_ref``."""
    cdef list compiled = []
    cdef list values
    cdef str path, vr, value, v, part
    cdef _StringKey skey
    cdef CompiledQuery q
    for key in keys:
        if not isinstance(key, tuple) or len(key) != 3:
            raise TypeError(KEYS_RULE)
        if not (isinstance(key[0], str) and isinstance(key[1], str) and isinstance(key[2], str)):
            raise TypeError(KEYS_RULE)
        path = key[0]
        vr = key[1]
        value = key[2]
        v = trim(vr, value)
        if v == "":
            continue
        if vr not in KNOWN_VRS:
            raise QueryError(f"{path}: cannot match VR {vr}")
        if vr in STRING_VRS and v.strip("*") == "":
            continue
        ebw_cfind_ready(v)
        if vr == "DA":
            compiled.append(compile_da(path, v))
        elif vr == "TM":
            compiled.append(compile_tm(path, v))
        elif vr == "DT":
            compiled.append(compile_dt(path, v))
        else:
            values = []
            for part in v.split("\\"):
                part = trim(vr, part)
                if part == "":
                    continue
                if vr == "PN":
                    part = part.casefold()
                values.append(part)
            if values:
                skey = _StringKey.__new__(_StringKey)
                skey.setup(path, vr, values)
                compiled.append(skey)
    q = CompiledQuery.__new__(CompiledQuery)
    q.keys = tuple(compiled)
    q.paths = tuple([(<_Key>k).path for k in compiled])
    return q


def match(CompiledQuery query not None, item):
    """True when ``item`` matches every key of ``query``."""
    return match_one(query, item) == 1


def filter_items(CompiledQuery query not None, items):
    """Indices of the items that match ``query``, in order."""
    cdef list out = []
    cdef Py_ssize_t i
    cdef list lst
    if type(items) is list:
        lst = <list>items
        i = 0
        while i < len(lst):   # re-read the length: a key test can run Python code
            if match_one(query, lst[i]):
                out.append(i)
            i += 1
        return out
    for i, item in enumerate(items):
        if match_one(query, item):
            out.append(i)
    return out
