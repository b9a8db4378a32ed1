"""``ebw.hl7.reader`` picks the compiled ADT reader unless told not to, and falls back
to the reference (with one warning) when it cannot be imported.  That the two read
every message the same is tests/diff/test_adt_diff.py's."""

from __future__ import annotations

import logging
import os
import sys

import pytest

import ebw.hl7.reader as reader
from ebw.hl7 import adt
from tests.conftest import fresh_copy

NO_EXTENSIONS = os.environ.get("EBW_NO_EXTENSIONS") == "1"


def test_the_server_reads_with_the_compiled_reader_unless_disabled() -> None:
    if NO_EXTENSIONS:
        assert reader.IMPLEMENTATION == "ref" and reader.parse is adt.parse
    else:
        from ebw._fast import adtread  # not built = failure, never a silent skip

        assert reader.IMPLEMENTATION == "fast" and reader.parse is adtread.parse


def test_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("EBW_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "ebw._fast.adtread", None)  # import -> ImportError
    with caplog.at_level(logging.WARNING, logger="ebw.hl7.reader"):
        module = fresh_copy(reader)
    assert module.IMPLEMENTATION == "ref" and module.parse is adt.parse
    if not NO_EXTENSIONS:  # (without the scanner, the reference is picked before trying)
        warnings = [r for r in caplog.records if r.name == "ebw.hl7.reader"]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_env_var_picks_the_reference_silently(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("EBW_NO_EXTENSIONS", "1")
    with caplog.at_level(logging.DEBUG, logger="ebw.hl7.reader"):
        module = fresh_copy(reader)
    assert module.IMPLEMENTATION == "ref" and module.parse is adt.parse
    assert not [r for r in caplog.records if r.name == "ebw.hl7.reader"]
