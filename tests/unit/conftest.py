from __future__ import annotations

from collections.abc import Iterator

import pytest

from ebw.store import Store


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """A fresh LMDB store, unsynced (test data), closed afterwards."""
    s = Store(str(tmp_path), 64, sync=False)
    yield s
    s.close()
