"""Long fuzz run: the hypothesis properties of ``tests/fuzz`` with many more examples.

    python -m bench.fuzz                       # 10 minutes, every target
    python -m bench.fuzz --minutes 120         # a longer run (e.g. overnight: --minutes 600)
    python -m bench.fuzz --examples 20000      # one round, 20,000 examples per target, no time limit
    python -m bench.fuzz -k "hl7 or mllp"      # only the targets pytest's -k selects
    python -m bench.fuzz --keep-going          # do not stop at the first failing round

The targets are the tests of ``tests/fuzz`` (HL7 scanner twins / ADT parser / ACKs,
MLLP deframing, C-FIND identifier -> matchers / responses); ``make test`` runs them
with a few hundred examples each.  This runs them in rounds: each round is one
``pytest tests/fuzz`` in a fresh interpreter with ``EBW_FUZZ_EXAMPLES=N`` (examples per
target; the first round uses ``--examples``, default 2,000, later ones are sized from
the measured rate so the run ends on time), and hypothesis starts every round from new
random seeds.  A subprocess per round means a crash of the interpreter (a segfault in
a Cython module) or a hang (each example runs under a hard deadline,
``EBW_FUZZ_HANG_SECONDS``, default 20 s: the watchdog dumps the stacks and exits) is
reported as such instead of ending the run silently.

At the end it prints, per target, the examples run (shrinking included) and their
time.  A failing round's pytest output (hypothesis prints the smallest failing input
and an ``@reproduce_failure`` line) is written to ``bench/results/fuzz-<time>.log``.
Hypothesis keeps failing inputs in ``.hypothesis/`` and replays them first in later
runs, ``make test`` included, until they pass: add them as ``@example``s when you fix
them.  Known bugs outside the fuzz suite's files are skipped here (``known_bug`` tests).

Environment passed through: ``EBW_FUZZ_DEADLINE_MS`` (hypothesis deadline per example,
default 5000), ``EBW_FUZZ_HANG_SECONDS``, ``EBW_NO_EXTENSIONS`` (the selectors then
use the pure-Python twins; the twin comparisons still import the Cython modules).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 10.0  # a round's pytest start-up (imports, collection), roughly


def run_round(examples: int, select: str, seed: int | None) -> tuple[int, dict[str, list[float]], str, float]:
    """One ``pytest tests/fuzz``: (return code, tally, output, seconds)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        tally_path = f.name
    env = {**os.environ, "EBW_FUZZ_EXAMPLES": str(examples), "EBW_FUZZ_TALLY": tally_path}
    cmd = [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", "--timeout=0"]
    cmd += ["-k", f"not known_bug and ({select})" if select else "not known_bug"]
    if seed is not None:
        cmd.append(f"--hypothesis-seed={seed}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    try:
        with open(tally_path, encoding="utf-8") as f:
            tally = json.load(f)
    except (OSError, ValueError):
        tally = {}  # the interpreter did not exit normally
    finally:
        os.unlink(tally_path)
    return proc.returncode, tally, proc.stdout + proc.stderr, seconds


def verdict(code: int, output: str) -> str:
    if code == 0:
        return "passed"
    if code < 0:
        return f"CRASHED (signal {-code})"
    if "Timeout (0:" in output:
        return "HUNG (an example exceeded the hard deadline)"
    if code == 1:
        return "FAILED"
    if code == 5:
        return "no tests selected"
    return f"pytest exit code {code}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--minutes", type=float, default=None, help="time budget (default 10, or one round with --examples)"
    )
    ap.add_argument("--examples", type=int, default=None, help="examples per target in the first round (default 2000)")
    ap.add_argument("-k", dest="select", default="", help="pytest -k expression selecting targets")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed of the first round (then seed+1, ...)")
    ap.add_argument("--keep-going", action="store_true", help="run more rounds after a failing one")
    args = ap.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (None if args.examples else 10.0)
    examples = args.examples or 2000
    deadline = time.monotonic() + minutes * 60 if minutes is not None else None

    runs: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    failures: list[tuple[int, str, Path]] = []
    rnd = 0
    while True:
        rnd += 1
        seed = None if args.seed is None else args.seed + rnd - 1
        code, tally, output, took = run_round(examples, args.select, seed)
        for name, (n, s) in tally.items():
            runs[name] += int(n)
            seconds[name] += s
        result = verdict(code, output)
        print(f"round {rnd}: {examples} examples/target, {took:.0f} s, {result}", flush=True)
        if code != 0:
            results = ROOT / "bench" / "results"
            results.mkdir(parents=True, exist_ok=True)
            log = results / f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}-round{rnd}.log"
            log.write_text(output, encoding="utf-8")
            failures.append((rnd, result, log))
            print(f"  pytest output: {log}", flush=True)
            for line in output.splitlines():
                if line.startswith(("FAILED", "ERROR")) or "Timeout (0:" in line:
                    print("  " + line, flush=True)
            if not args.keep_going or code == 5:
                break
        if deadline is None:
            break
        remaining = deadline - time.monotonic()
        if remaining < STARTUP_SECONDS * 2:
            break
        # size the next round from this one's rate, so the run ends near the deadline
        per_example = max(took - STARTUP_SECONDS, 1.0) / examples
        examples = int(min(examples * 4, max(100, (remaining - STARTUP_SECONDS) / per_example)))

    width = max([len(n) for n in runs] + [6])
    print(f"\n{'target':<{width}}  {'examples':>9}  {'seconds':>8}  {'ex/s':>7}")
    for name in sorted(runs):
        rate = runs[name] / seconds[name] if seconds[name] else 0.0
        print(f"{name:<{width}}  {runs[name]:>9}  {seconds[name]:>8.1f}  {rate:>7.0f}")
    print(f"{'total':<{width}}  {sum(runs.values()):>9}  {sum(seconds.values()):>8.1f}")
    if failures:
        print(f"\n{len(failures)} failing round(s): " + "; ".join(f"round {r}: {v} ({log})" for r, v, log in failures))
        return 1
    print("\nno failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
