"""Load harness (first cut): ADT throughput over MLLP with ACKs, and C-FIND latency.

    python -m bench.load                       # starts its own `ebw serve` in a temp dir
    python -m bench.load --hl7-port 2575 --dicom-port 11112 --aet EBW   # any running server

ADT: K connections, each sending its next message only after the ACK of the
previous one (as MLLP senders do); reports messages/s and ACK latency
percentiles per K.  C-FIND: with N active encounters loaded, times a patient
by ID query, a name wildcard query, and (optionally) the full "today" list.
Synthetic data only (bench.feed).  Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.feed import Feed


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# ------------------------------------------------------------------------------ ADT


async def _adt_run(host: str, port: int, messages: list[bytes], connections: int) -> dict[str, Any]:
    import uvloop  # noqa: F401

    from ebw.mllp import AsyncMllpClient

    per_conn = [messages[i::connections] for i in range(connections)]
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def run_one(batch: list[bytes]) -> None:
        client = await AsyncMllpClient.connect(host, port)
        try:
            for msg in batch:
                t0 = time.perf_counter()
                ack = await client.send(msg)
                latencies.append(time.perf_counter() - t0)
                i = ack.find(b"MSA|")
                code = ack[i + 4 : i + 6].decode() if i >= 0 else "??"
                codes[code] = codes.get(code, 0) + 1
        finally:
            await client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run_one(b) for b in per_conn))
    elapsed = time.perf_counter() - t0
    return {
        "connections": connections,
        "messages": len(messages),
        "seconds": round(elapsed, 3),
        "msg_per_s": round(len(messages) / elapsed, 1),
        "ack_p50_ms": round(pct(latencies, 50) * 1000, 2),
        "ack_p95_ms": round(pct(latencies, 95) * 1000, 2),
        "ack_p99_ms": round(pct(latencies, 99) * 1000, 2),
        "ack_max_ms": round(max(latencies) * 1000, 2),
        "acks": codes,
    }


def adt_run(host: str, port: int, messages: list[bytes], connections: int) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_adt_run(host, port, messages, connections))


# ------------------------------------------------------------------------------ C-FIND


# ------------------------------------------------------------------------------ server


def server_env(
    data_dir: str, hl7_port: int, dicom_port: int, http_port: int, workers: int, fsync: str
) -> dict[str, str]:
    """The environment of a benchmark's own `ebw serve`: loopback listeners, quiet logs."""
    return {
        **os.environ,
        "EBW_DATA_DIR": data_dir,
        "EBW_HL7_HOST": "127.0.0.1",
        "EBW_DICOM_HOST": "127.0.0.1",
        "EBW_HL7_PORT": str(hl7_port),
        "EBW_DICOM_PORT": str(dicom_port),
        "EBW_HTTP_PORT": str(http_port),
        "EBW_WORKERS": str(workers),
        "EBW_FSYNC": fsync,
        "EBW_LOG_LEVEL": "WARNING",
    }


class Server:
    """A throw-away `ebw serve` for the run."""

    def __init__(self, workers: int, fsync: str) -> None:
        from bench.peers import free_port

        self.dir = tempfile.mkdtemp(prefix="ebw-bench-")
        self.hl7_port, self.dicom_port, self.http_port = free_port(), free_port(), free_port()
        env = server_env(self.dir + "/data", self.hl7_port, self.dicom_port, self.http_port, workers, fsync)
        self.log = open(self.dir + "/ebw.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebw", "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"server did not become healthy; its log ends:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        with open(self.dir + "/ebw.log", "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")

    def stop(self) -> None:
        """Stop the server and remove its data directory (a run can leave hundreds of MB)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server's processes have used so far:
        the supervisor and every live process under it (a worker restarted during a
        run loses what it used).  What a message costs the server is the difference
        over a run divided by its messages -- the figure to size a machine with."""
        return process_tree_cpu(self.proc.pid)


def _stat(pid: int | str) -> tuple[int, int]:
    """(parent pid, utime + stime in clock ticks) from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_cpu(pid: int) -> float:
    """utime + stime, in seconds, of one process (all its threads)."""
    return _stat(pid)[1] / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(root: int) -> float:
    """utime + stime, in seconds, of ``root`` and its live descendants (Linux /proc)."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = _stat(entry)
            except OSError:  # gone meanwhile
                continue
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0))[1]
        todo.extend(child for child, (ppid, _ticks) in stats.items() if ppid == pid)
    return total / os.sysconf("SC_CLK_TCK")


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(str(r.get(c, "")).rjust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--hl7-port", type=int, help="MLLP port of a running server (default: start one)")
    p.add_argument("--dicom-port", type=int)
    p.add_argument("--aet", default="EBW")
    p.add_argument("--connections", type=int, action="append", help="concurrent MLLP senders (repeatable)")
    p.add_argument("--messages", type=int, default=20000, help="ADT messages per ADT run")
    p.add_argument("--items", type=int, default=10000, help="active encounters loaded before the C-FIND runs")
    p.add_argument("--repeat", type=int, default=20, help="runs of each C-FIND query per SCU")
    p.add_argument("--scus", type=int, action="append", help="concurrent C-FIND SCUs (repeatable; default 1 and 8)")
    p.add_argument("--full-list", action="store_true", help="also time the full today list (one response per item)")
    p.add_argument("--workers", type=int, default=2, help="workers of the started server")
    p.add_argument("--fsync", default="on", help="EBW_FSYNC of the started server")
    p.add_argument("--json", default="bench/results/load.json")
    args = p.parse_args(argv)
    connections = args.connections or [1, 8]

    server = None
    if args.hl7_port is None:
        server = Server(args.workers, args.fsync)
        args.hl7_port, args.dicom_port = server.hl7_port, server.dicom_port
    result: dict[str, Any] = {"workers": args.workers, "fsync": args.fsync, "adt": [], "cfind": []}
    try:
        feed = Feed(seed=7, prefix="B")
        for k in connections:
            msgs = [m for _ev, m in feed.stream(args.messages, open_target=args.items)]
            row = adt_run(args.host, args.hl7_port, msgs, k)
            result["adt"].append(row)
            print(f"ADT K={k}: {row['msg_per_s']} msg/s", file=sys.stderr)
        # Load N active encounters (admits only), then query.
        load_feed = Feed(seed=11, prefix="Q")
        encs = [load_feed.new_encounter() for _ in range(args.items)]
        for e in encs:
            e.patient_class = "E"
        admits = [load_feed.message("A04", e) for e in encs]
        adt_run(args.host, args.hl7_port, admits, 8)
        from bench.cfind import QUERIES, measure  # the C-FIND client lives there

        target = encs[len(encs) // 2]
        today = time.strftime("%Y%m%d", time.gmtime())
        for name in QUERIES if args.full_list else QUERIES[:2]:
            for scus in args.scus or [1, 8]:
                if name == "all of today" and scus > 1:
                    continue
                row = measure(args.host, args.dicom_port, args.aet, name, target.mrn, today, scus, args.repeat, 60.0)
                result["cfind"].append({**row, "runs": row["queries"], "max_ms": row["p99_ms"]})
        result["cfind_active_items_at_least"] = args.items
    finally:
        if server:
            server.stop()

    print(
        "\nADT over MLLP, each sender waits for its ACK "
        f"(workers={args.workers}, EBW_FSYNC={args.fsync}, ~1.1 kB 17-segment messages):"
    )
    print(
        table(
            result["adt"],
            ["connections", "messages", "msg_per_s", "ack_p50_ms", "ack_p95_ms", "ack_p99_ms", "ack_max_ms", "acks"],
        )
    )
    print(f"\nC-FIND with {args.items} active encounters (each SCU on a held association, TCP_NODELAY):")
    print(table(result["cfind"], ["query", "scus", "matches", "runs", "p50_ms", "p99_ms", "qps"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
