"""Builds the Cython extensions in ebw/_fast.

A failed cythonize or compile fails the install: a green test run must never
have tested only the pure-Python fallback by accident.

EBW_DEBUG_BUILD=1 turns on annotated HTML, line tracing and the EBW_DEBUG
compile-time flag for internal asserts.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("EBW_DEBUG_BUILD") == "1"

directives = {
    "language_level": "3",
    # Bounds checks stay on by default: these modules read untrusted bytes.
    # Hot loops that check lengths by hand switch them off locally.
    "boundscheck": True,
    "wraparound": False,
    "cdivision": True,
    "embedsignature": True,
}
macros = []
if DEBUG:
    directives.update({"linetrace": True, "profile": True})
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1"), ("EBW_DEBUG", "1")]

extensions = [
    Extension(
        "ebw._fast.hl7scan",
        ["ebw/_fast/hl7scan.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2"],
    ),
    Extension(
        "ebw._fast.adtread",
        ["ebw/_fast/adtread.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2"],
    ),
    Extension(
        "ebw._fast.cfind",
        ["ebw/_fast/cfind.pyx"],
        define_macros=macros,
        extra_compile_args=["-O2"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=DEBUG,
        compile_time_env={"EBW_DEBUG": DEBUG},
    ),
)
