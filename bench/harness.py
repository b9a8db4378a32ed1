"""EBW's load-test harness (``ebw bench ...`` or ``python -m bench.harness ...``).

Size a server before a go-live: ADT over MLLP as EHRs send it, C-FIND as modalities
query, both at once, and the same load against the tools people would pick instead.

    ebw bench adt    [--target HOST:PORT] [-k 1 -k 16] [--messages N | --duration S] [--rate R] [--replay DIR]
    ebw bench cfind  [--target HOST:PORT --aet AET] [--items N] [-m 1 -m 8] [--assoc held|fresh|both]
                     [--mix today=1,patient=6,name=3] [--queries N | --duration S]
    ebw bench mixed  [--items N] [--rate R] [-k K] [-m M] [--duration S]
    ebw bench peers  [--items N] [--messages N]    # EBW vs wlmscpfs, Orthanc, python-hl7, the floor
    ebw bench compare A.json B.json
    ebw bench ceiling [--messages N] [-p 1 -p 2] [-b 8 -b 16]   # the store path alone, no network

Without ``--target`` the harness starts its own ``ebw serve`` (``--workers``,
``--fsync``) in a temporary directory and, for C-FIND, loads ``--items`` synthetic
encounters first.  ADT senders wait for each ACK before the next message (as MLLP
senders do); ``--rate`` paces the total over all connections.  C-FIND SCUs are
separate processes with ``TCP_NODELAY``; ``held`` keeps one association per SCU
for all its queries, ``fresh`` opens one per query.  Every run prints a summary
(throughput, p50/p95/p99/max, errors, ACK codes or statuses) and writes JSON
(``--json``) that ``compare`` reads.  Synthetic data only (``bench.feed``:
invented people, non-ASCII names, several facilities, 20-segment messages), or
``--replay`` a directory of real messages (one per file, MLLP-framed or one
segment per line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.feed import Feed
from bench.load import Server, pct, table

MIX_DEFAULT = "today=1,patient=6,name=3"


# -- progress --------------------------------------------------------------------------


class Progress:
    """A live line on stderr (tqdm when installed): count, rate, elapsed."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.count = label, total, 0
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._bar: Any = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit="msg", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            threading.Thread(target=self._tick, daemon=True).start()

    def add(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            dt = time.perf_counter() - self.t0
            of = f"/{self.total}" if self.total else ""
            print(f"\r{self.label}: {self.count}{of}  {self.count / dt:,.0f}/s  {dt:.0f} s", end="", file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)


# -- ADT -------------------------------------------------------------------------------


def message_source(args: argparse.Namespace, seed: int = 7) -> Iterator[bytes]:
    if args.replay:
        from ebw.cli import _read_messages

        files = sorted(p for p in Path(args.replay).rglob("*") if p.is_file())
        messages = [m for f in files for m in _read_messages(str(f))]
        if not messages:
            raise SystemExit(f"no HL7 messages in {args.replay}")
        while True:  # replay the directory as often as the run needs
            yield from messages
    feed = Feed(seed=seed, prefix=f"H{seed}")
    for _ev, m in feed.stream(10**12, open_target=args.open_target):
        yield m


class _Sender(asyncio.Protocol):
    """One MLLP connection of the load: sends a message, waits for its ACK, sends the next
    (as MLLP senders do).  A Protocol, not streams: the generator must stay far below the
    server's cost per message (it reaches 60,000+ msg/s against a fixed-ACK echo here)."""

    def __init__(self, run: _AdtRun, first_at: float) -> None:
        self.run = run
        self.buf = b""
        self.t0 = 0.0
        self.next_at = first_at
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._next()

    def _next(self) -> None:
        run = self.run
        msg = run.take()
        if msg is None:
            self._finish()
            return
        if run.interval:
            delay = self.next_at - time.perf_counter()
            self.next_at += run.interval
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._send, msg)
                return
        self._send(msg)

    def _send(self, msg: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.t0 = time.perf_counter()
        self.transport.write(msg)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        j = buf.find(b"\x1c\r")
        if j < 0:
            self.buf = buf
            return
        ack, self.buf = buf[:j], buf[j + 2 :]
        run = self.run
        run.latencies.append(time.perf_counter() - self.t0)
        k = ack.find(b"MSA")
        code = ack[k + 4 : k + 6].decode("latin_1") if k >= 0 else "??"
        run.codes[code] = run.codes.get(code, 0) + 1
        run.acked += 1
        if run.progress is not None and not run.acked % 500:
            run.progress.add(500)
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.run.errors.append(type(exc).__name__ if exc else "closed by the server")
            self.done.set_result(None)

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


class _AdtRun:
    """The shared state of one ADT run: the messages (framed ahead of time), results."""

    def __init__(
        self,
        source: Iterator[bytes],
        count: int | None,
        duration: float | None,
        rate: float | None,
        connections: int,
        progress: Progress | None,
    ) -> None:
        from ebw.mllp import frame

        self.frame = frame
        self.source = source
        # Made before the clock starts, so the generator's own work is not in the figures.
        # Duration runs make enough for the rate (else 30,000 msg/s, at most 300,000
        # messages) and go on generating in the run if they run out.
        ahead = count if count is not None else int(min((duration or 0) * (rate or 30_000), 300_000))
        self.ready = [frame(next(source)) for _ in range(ahead)]
        self.ready.reverse()
        self.count, self.rate, self.progress = count, rate, progress
        self.interval = connections / rate if rate else 0.0
        self.latencies: list[float] = []
        self.codes: dict[str, int] = {}
        self.errors: list[str] = []
        self.sent = self.acked = 0
        self.deadline: float | None = None
        self.duration = duration

    def start(self) -> None:
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + self.duration if self.duration else None

    def take(self) -> bytes | None:
        if self.count is not None and self.sent >= self.count:
            return None
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return None
        self.sent += 1
        return self.ready.pop() if self.ready else self.frame(next(self.source))


async def _adt(
    host: str,
    port: int,
    source: Iterator[bytes],
    connections: int,
    count: int | None,
    duration: float | None,
    rate: float | None,
    progress: Progress | None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _AdtRun(source, count, duration, rate, connections, progress)
    run.start()
    senders: list[_Sender] = []
    for i in range(connections):
        first_at = time.perf_counter() + (run.interval * i / connections if run.interval else 0.0)
        try:
            _t, proto = await loop.create_connection(lambda at=first_at: _Sender(run, at), host, port)
        except OSError as exc:
            run.errors.append(f"connect: {exc}")
            continue
        senders.append(proto)
    await asyncio.gather(*(s.done for s in senders))
    elapsed = time.perf_counter() - run.t_start
    if progress is not None:
        progress.add(run.acked % 500)
    latencies = run.latencies
    done = len(latencies)
    return {
        "kind": "adt",
        "connections": connections,
        "rate_target": rate,
        "messages": done,
        "seconds": round(elapsed, 3),
        "msg_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "p50_ms": _ms(latencies, 50),
        "p95_ms": _ms(latencies, 95),
        "p99_ms": _ms(latencies, 99),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        "acks": run.codes,
        "errors": len(run.errors),
        "error_kinds": sorted(set(run.errors))[:5],
    }


def _ms(values: list[float], p: float) -> float | None:
    return round(pct(values, p) * 1000, 2) if values else None


def run_adt(
    host: str,
    port: int,
    source: Iterator[bytes],
    connections: int,
    count: int | None,
    duration: float | None,
    rate: float | None,
    label: str = "ADT",
) -> dict[str, Any]:
    import uvloop

    progress = Progress(f"{label} k={connections}", count)
    try:
        return uvloop.run(_adt(host, port, source, connections, count, duration, rate, progress))
    finally:
        progress.close()


# -- C-FIND ----------------------------------------------------------------------------


def parse_mix(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in ("today", "patient", "name"):
            raise SystemExit(f"--mix: unknown query {name!r} (today, patient, name)")
        out.append((name.strip(), int(weight or 1)))
    return out


def _query(kind: str, pid: str, name: str, today: str) -> Any:
    from bench.cfind import _query as base

    q = base({"today": "all of today", "patient": "patient by ID", "name": "name wildcard"}[kind], pid, today)
    if kind == "name":
        q.PatientName = name
    return q


def _scu(args: tuple[Any, ...]) -> dict[str, Any]:
    """One SCU process: queries from the mix until ``queries`` or ``deadline``."""
    host, port, aet, held, mix, targets, today, queries, deadline, seed = args
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    from ebw.dicom.net import nodelay_scu

    nodelay_scu()
    rng = random.Random(seed)
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    kinds = [k for k, w in mix for _ in range(w)]
    out: dict[str, Any] = {
        "lat": {k: [] for k, _w in mix},
        "matches": {k: [] for k, _w in mix},
        "errors": 0,
        "status": {},
    }
    assoc = None
    n = 0
    while (queries is None or n < queries) and (deadline is None or time.time() < deadline):
        kind = rng.choice(kinds)
        pid, name = rng.choice(targets)
        q = _query(kind, pid, name, today)
        t0 = time.perf_counter()
        try:
            if assoc is None or not assoc.is_established:
                assoc = ae.associate(host, port, ae_title=aet)
                if not assoc.is_established:
                    out["errors"] += 1
                    assoc = None
                    time.sleep(0.1)
                    continue
            matches = 0
            for status, _ident in assoc.send_c_find(q, ModalityWorklistInformationFind):
                code = f"{status.Status:04X}" if status and "Status" in status else "none"
                if code in ("FF00", "FF01"):
                    matches += 1
                else:
                    out["status"][code] = out["status"].get(code, 0) + 1
            if not held:
                assoc.release()
                assoc = None
        except Exception:  # noqa: BLE001 - counted as an error of the run
            out["errors"] += 1
            assoc = None
            continue
        out["lat"][kind].append(time.perf_counter() - t0)
        out["matches"][kind].append(matches)
        n += 1
    if assoc is not None:
        assoc.release()
    return out


def run_cfind(
    host: str,
    port: int,
    aet: str,
    scus: int,
    held: bool,
    mix: list[tuple[str, int]],
    targets: list[tuple[str, str]],
    queries: int | None,
    duration: float | None,
) -> list[dict[str, Any]]:
    today = time.strftime("%Y%m%d")
    deadline = time.time() + duration if duration else None
    jobs = [(host, port, aet, held, mix, targets, today, queries, deadline, i) for i in range(scus)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(scus) as pool:
        results = list(pool.map(_scu, jobs))
    wall = time.perf_counter() - t0
    rows = []
    for kind, _w in mix:
        lat = [x for r in results for x in r["lat"][kind]]
        matches = [x for r in results for x in r["matches"][kind]]
        rows.append(
            {
                "kind": "cfind",
                "query": kind,
                "assoc": "held" if held else "fresh",
                "scus": scus,
                "queries": len(lat),
                "matches": round(statistics.mean(matches), 1) if matches else 0,
                "qps": round(len(lat) / wall, 1),
                "p50_ms": _ms(lat, 50),
                "p95_ms": _ms(lat, 95),
                "p99_ms": _ms(lat, 99),
                "max_ms": round(max(lat) * 1000, 1) if lat else None,
            }
        )
    errors = sum(r["errors"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["status"].items():
            statuses[k] = statuses.get(k, 0) + v
    for row in rows:
        row["errors"] = errors
        row["statuses"] = statuses
    return rows


def load_items(server_port: int, n: int, seed: int = 11) -> list[tuple[str, str]]:
    """Admit ``n`` encounters over MLLP (8 connections); return (patient ID, name wildcard)
    targets for the queries."""
    feed = Feed(seed=seed, prefix="Q")
    encs = [feed.new_encounter() for _ in range(n)]
    for e in encs:
        e.patient_class = "I"  # inpatients: never leave the list by age
    source = iter([feed.message("A01", e) for e in encs])
    run_adt("127.0.0.1", server_port, source, 8, n, None, None, label=f"loading {n} encounters")
    return [(e.mrn, f"{e.family}^{e.given[:2]}*") for e in encs[:: max(1, n // 200)]], encs  # type: ignore[return-value]


# -- commands --------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[str, int, Server | None]:
    if args.target:
        host, _, port = args.target.rpartition(":")
        return host or "127.0.0.1", int(port), None
    server = Server(args.workers, args.fsync)
    return "127.0.0.1", server.hl7_port, server


def cmd_adt(args: argparse.Namespace) -> list[dict[str, Any]]:
    host, port, server = _target(args)
    rows = []
    try:
        for k in args.connections or [1, 16]:
            cpu0 = server.cpu_seconds() if server else 0.0
            row = run_adt(
                host,
                port,
                message_source(args, seed=k),
                k,
                args.messages if not args.duration else None,
                args.duration,
                args.rate,
            )
            if server and row.get("messages"):
                # what a message cost the server it started (not known for --target)
                row["server_cpu_us_per_msg"] = round((server.cpu_seconds() - cpu0) / row["messages"] * 1e6)
            rows.append(row)
    finally:
        if server:
            server.stop()
    print(
        table(
            rows,
            [
                "connections",
                "messages",
                "seconds",
                "msg_per_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "server_cpu_us_per_msg",
                "acks",
                "errors",
            ],
        )
    )
    return rows


def cmd_cfind(args: argparse.Namespace) -> list[dict[str, Any]]:
    mix = parse_mix(args.mix)
    server = None
    if args.target:
        host, _, port = args.target.rpartition(":")
        host, dport = host or "127.0.0.1", int(port)
        targets = [(p, "*") for p in (args.patient_id or ["UNKNOWN"])]
    else:
        server = Server(args.workers, "off")
        host, dport = "127.0.0.1", server.dicom_port
        targets, _encs = load_items(server.hl7_port, args.items)
    rows: list[dict[str, Any]] = []
    try:
        modes = {"held": [True], "fresh": [False], "both": [True, False]}[args.assoc]
        for held in modes:
            for m in args.scus or [1, 8]:
                rows += run_cfind(
                    host,
                    dport,
                    args.aet,
                    m,
                    held,
                    mix,
                    targets,
                    args.queries if not args.duration else None,
                    args.duration,
                )
    finally:
        if server:
            server.stop()
    print(
        table(
            rows,
            ["query", "assoc", "scus", "queries", "matches", "qps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors"],
        )
    )
    return rows


def cmd_mixed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """C-FIND latency idle, then under an ADT load at ``--rate`` (or as fast as possible)."""
    server = Server(args.workers, args.fsync)
    rows: list[dict[str, Any]] = []
    try:
        targets, _encs = load_items(server.hl7_port, args.items)
        mix = parse_mix(args.mix)
        m = (args.scus or [4])[0]
        for row in run_cfind("127.0.0.1", server.dicom_port, "EBW", m, True, mix, targets, None, args.duration):
            rows.append({**row, "phase": "idle"})
        result: dict[str, Any] = {}

        def adt() -> None:
            result.update(
                run_adt(
                    "127.0.0.1",
                    server.hl7_port,
                    message_source(args),
                    (args.connections or [16])[0],
                    None,
                    args.duration + 2,
                    args.rate,
                    label="ADT under query load",
                )
            )

        t = threading.Thread(target=adt)
        t.start()
        time.sleep(1.0)
        for row in run_cfind("127.0.0.1", server.dicom_port, "EBW", m, True, mix, targets, None, args.duration):
            rows.append({**row, "phase": "under ADT load"})
        t.join()
        rows.append({**result, "phase": "ADT during the queries", "query": "ADT"})
    finally:
        server.stop()
    print(
        table(rows, ["phase", "query", "scus", "queries", "qps", "p50_ms", "p95_ms", "p99_ms", "msg_per_s", "errors"])
    )
    return rows


def cmd_peers(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same loads against EBW and the peers, in one run; prints the ratios."""
    from bench import peers

    rows: list[dict[str, Any]] = []
    today = time.strftime("%Y%m%d")
    # ADT: EBW (durable) vs python-hl7's MLLP server (parses, stores nothing)
    baseline = peers.hl7_baseline()
    server = Server(args.workers, args.fsync)
    try:
        for k in args.connections or [16]:
            for name, port in (("EBW (EBW_FSYNC=" + args.fsync + ")", server.hl7_port), (baseline.name, baseline.port)):
                r = run_adt("127.0.0.1", port, message_source(args, seed=k), k, args.messages, None, None, label=name)
                rows.append({"server": name, **r})
        targets, encs = load_items(server.hl7_port, args.items)
        mix = [("patient", 1)]
        floor = peers.floor()
        others = [p for p in (peers.wlmscpfs(encs, today), peers.orthanc(encs, today)) if p is not None]
        try:
            wl_targets = [(e.mrn, "*") for e in encs[:: max(1, len(encs) // 50)]]
            for name, port, aet, tg in [
                ("EBW", server.dicom_port, "EBW", targets),
                (floor.name, floor.port, floor.aet, [("FLOOR1", "*")]),
                *[(p.name, p.port, p.aet, wl_targets) for p in others],
            ]:
                for held in (True, False):
                    n = args.queries if name in ("EBW", floor.name) else max(3, args.queries // 10)
                    for row in run_cfind("127.0.0.1", port, aet, 1, held, mix, tg, n, None):
                        rows.append({"server": name, **row})
        finally:
            floor.stop()
            for p in others:
                p.stop()
    finally:
        server.stop()
        baseline.stop()
    # ratios
    by = {(r["server"], r.get("kind"), r.get("connections"), r.get("assoc")): r for r in rows}
    for r in rows:
        if r.get("kind") == "adt" and r["server"].startswith("EBW"):
            b = by.get((baseline.name, "adt", r["connections"], None))
            r["vs_baseline"] = round(r["msg_per_s"] / b["msg_per_s"], 1) if b and b["msg_per_s"] else ""
        if r.get("kind") == "cfind" and r["server"] == "EBW":
            for other in rows:
                if other.get("kind") == "cfind" and other["assoc"] == r["assoc"] and other["server"] != "EBW":
                    key = "vs_floor" if other["server"].startswith("floor") else f"x_{other['server'].split()[-1]}"
                    if other["server"].startswith("floor"):
                        r[key] = round(r["p50_ms"] / other["p50_ms"], 2)
                    else:
                        r[key] = round(other["p50_ms"] / r["p50_ms"], 1)
    print(
        table(
            [r for r in rows if r.get("kind") == "adt"],
            ["server", "connections", "messages", "msg_per_s", "p50_ms", "p99_ms", "acks", "vs_baseline"],
        )
    )
    print()
    cols = [
        "server",
        "query",
        "assoc",
        "queries",
        "matches",
        "p50_ms",
        "p99_ms",
        "qps",
        "vs_floor",
        "x_wlmscpfs",
        "x_worklists",
    ]
    print(table([r for r in rows if r.get("kind") == "cfind"], cols))
    return rows


def cmd_compare(args: argparse.Namespace) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in args.files)
    ra, rb = a.get("rows", a), b.get("rows", b)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r.get("server", ""),
            r.get("kind"),
            r.get("query", ""),
            r.get("assoc", ""),
            r.get("connections", r.get("scus")),
            r.get("phase", ""),
        )

    index = {key(r): r for r in rb}
    out = []
    for r in ra:
        o = index.get(key(r))
        if o is None:
            continue
        metric = "msg_per_s" if r.get("kind") == "adt" else "qps"
        out.append(
            {
                "what": " ".join(str(x) for x in key(r) if x not in ("", None)),
                f"{metric} A": r.get(metric),
                f"{metric} B": o.get(metric),
                "B/A": round(o[metric] / r[metric], 2) if r.get(metric) else "",
                "p50 A": r.get("p50_ms"),
                "p50 B": o.get("p50_ms"),
                "p99 A": r.get("p99_ms"),
                "p99 B": o.get("p99_ms"),
            }
        )
    if not out:
        raise SystemExit("nothing in common between the two runs")
    cols = list(out[0])
    print(table(out, cols))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ebw bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(s: argparse.ArgumentParser) -> None:
        s.add_argument("--workers", type=int, default=2, help="workers of the server the harness starts")
        s.add_argument("--fsync", default="on", choices=["on", "off"], help="EBW_FSYNC of that server")
        s.add_argument("--json", help="write the rows here (default bench/results/<command>-<time>.json)")

    s = sub.add_parser("adt", help="ADT over MLLP with ACKs")
    common(s)
    s.add_argument("--target", help="HOST:PORT of any MLLP listener (default: start EBW)")
    s.add_argument("-k", "--connections", type=int, action="append", help="concurrent connections (repeatable)")
    s.add_argument("--messages", type=int, default=20000)
    s.add_argument("--duration", type=float, help="seconds per run instead of --messages")
    s.add_argument("--rate", type=float, help="target messages/s over all connections (default: as fast as possible)")
    s.add_argument("--replay", help="directory of real HL7 messages to send instead of the synthetic feed")
    s.add_argument("--open-target", type=int, default=1000, help="open encounters the synthetic feed keeps")
    s = sub.add_parser("cfind", help="C-FIND with a query mix")
    common(s)
    s.add_argument("--target", help="HOST:PORT of any MWL SCP (default: start EBW and load --items)")
    s.add_argument("--aet", default="EBW")
    s.add_argument("--patient-id", action="append", help="with --target: patient IDs to query")
    s.add_argument("--items", type=int, default=10000)
    s.add_argument("-m", "--scus", type=int, action="append")
    s.add_argument("--assoc", choices=["held", "fresh", "both"], default="both")
    s.add_argument("--mix", default=MIX_DEFAULT, help=f"query weights (default {MIX_DEFAULT})")
    s.add_argument("--queries", type=int, default=50, help="queries per SCU")
    s.add_argument("--duration", type=float)
    s = sub.add_parser("mixed", help="C-FIND latency idle and under ADT load")
    common(s)
    s.add_argument("--items", type=int, default=2000)
    s.add_argument("--rate", type=float)
    s.add_argument("-k", "--connections", type=int, action="append")
    s.add_argument("-m", "--scus", type=int, action="append")
    s.add_argument("--mix", default="patient=6,name=3")
    s.add_argument("--duration", type=float, default=15.0)
    s.add_argument("--replay")
    s.add_argument("--open-target", type=int, default=1000)
    s = sub.add_parser("peers", help="the same loads against EBW, wlmscpfs, Orthanc, python-hl7 and the floor")
    common(s)
    s.add_argument("--items", type=int, default=10000)
    s.add_argument("--messages", type=int, default=5000)
    s.add_argument("--queries", type=int, default=30)
    s.add_argument("-k", "--connections", type=int, action="append")
    s.add_argument("--replay")
    s.add_argument("--open-target", type=int, default=1000)
    s = sub.add_parser("compare", help="ratios between two JSON results")
    s.add_argument("files", nargs=2)
    s = sub.add_parser(
        "ceiling",
        help="the server's store path alone (read, apply, commit), no network: ebw bench ceiling --help",
    )  # its options are its own: handed to bench.ceiling as they are
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ceiling"]:
        from bench import ceiling

        return ceiling.main(argv[1:])
    args = p.parse_args(argv)
    if args.cmd == "compare":
        cmd_compare(args)
        return 0
    rows = {"adt": cmd_adt, "cfind": cmd_cfind, "mixed": cmd_mixed, "peers": cmd_peers}[args.cmd](args)
    path = Path(args.json or f"bench/results/{args.cmd}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": args.cmd, "argv": sys.argv[1:], "rows": rows}, indent=2, default=str))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
