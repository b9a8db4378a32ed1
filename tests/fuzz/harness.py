"""What every fuzz property shares: its hypothesis settings, a hard per-example
deadline, and a count of the examples each property ran.

Environment (read once, at import):

``EBW_FUZZ_EXAMPLES``
    max_examples of every property (default: each property's own, a few hundred,
    so ``make test`` stays short).  ``python -m bench.fuzz`` sets it high.
``EBW_FUZZ_DEADLINE_MS``
    hypothesis ``deadline`` per example (default 5000 ms; a typical example takes a
    few ms and the largest inputs ~200 ms, so this catches something pathological,
    not a busy machine).
``EBW_FUZZ_HANG_SECONDS``
    hard per-example limit (default 20 s).  A faulthandler watchdog thread dumps
    every thread's stack and exits the process with status 1 when an example runs
    longer: this also catches a loop inside compiled code, which hypothesis's
    deadline (checked after the example returns) and a Python signal handler
    (run between bytecodes) cannot.
``EBW_FUZZ_TALLY``
    a file to write ``{"<module>::<property>": [examples run, seconds]}`` to (JSON) at
    exit; used by ``python -m bench.fuzz``.
"""

from __future__ import annotations

import atexit
import collections
import faulthandler
import functools
import json
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("EBW_FUZZ_EXAMPLES") or 0)
DEADLINE_MS = int(os.environ.get("EBW_FUZZ_DEADLINE_MS") or 5000)
HANG_SECONDS = float(os.environ.get("EBW_FUZZ_HANG_SECONDS") or 20)

# examples run per property (shrinking and replays included) and the seconds they took,
# by "<module>::<test function>"
RUNS: collections.Counter[str] = collections.Counter()
SECONDS: collections.Counter[str] = collections.Counter()


def fuzz_settings(default_examples: int) -> settings:
    """Settings of one property: ``default_examples`` unless ``EBW_FUZZ_EXAMPLES`` is set."""
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=timedelta(milliseconds=DEADLINE_MS),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


def counted(test: Callable[..., Any]) -> Callable[..., Any]:
    """Count the examples of a property and run each under the hard deadline.
    Goes below ``@given`` (it wraps the function hypothesis calls per example)."""

    name = f"{test.__module__.rsplit('.', 1)[-1]}::{test.__name__}"

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        RUNS[name] += 1
        t0 = time.perf_counter()
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            return test(*args, **kwargs)
        finally:
            faulthandler.cancel_dump_traceback_later()
            SECONDS[name] += time.perf_counter() - t0

    return run


def _write_tally() -> None:
    path = os.environ.get("EBW_FUZZ_TALLY")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({name: [n, SECONDS[name]] for name, n in RUNS.items()}, f)


atexit.register(_write_tally)
