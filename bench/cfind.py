"""C-FIND benchmark: EBW against the protocol floor and DCMTK wlmscpfs, in one run.

    python -m bench.cfind                          # 10,000 items; 1 and 8 concurrent SCUs
    python -m bench.cfind --items 10000 --items 100000

For each item count, EBW is loaded over MLLP (EBW_FSYNC=off to load fast),
then each query -- one patient by ID, a name wildcard, all of today -- is
timed with 1 and 8 concurrent SCUs (separate processes), TCP_NODELAY on the
client, on an association held open across the queries (as a modality that
polls does; "all of today" with one SCU, at 10,000 items); one patient is also
timed with an association per query (set-up + C-FIND + release).  All of today
also goes to DCMTK findscu, quiet (-q: the client only receives and parses)
and verbose (-v: it prints every dataset; the responses are counted there).
The protocol floor is a bare pynetdicom SCP answering one fixed item
(bench/floor_scp.py).  wlmscpfs serves the same items
as .wl files (10,000 items at most: it re-reads every file per query).
Prints a table with p50/p99 latency, queries/s and the ratios; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.feed import Feed
from bench.load import Server, adt_run, pct, table

QUERIES = ("patient by ID", "name wildcard", "all of today")


def _query(name: str, target_pid: str, today: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    for kw in (
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "AdmissionID",
        "StudyInstanceUID",
        "PatientBirthDate",
        "PatientSex",
    ):
        setattr(ds, kw, "")
    sps = Dataset()
    sps.Modality = ""
    sps.ScheduledProcedureStepStartDate = today if name == "all of today" else ""
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledStationAETitle = ""
    ds.ScheduledProcedureStepSequence = [sps]
    if name == "patient by ID":
        ds.PatientID = target_pid
    elif name == "name wildcard":
        ds.PatientName = "KOWALSKI^ZO*"
    return ds


def _worker(args: tuple[str, int, str, str, str, str, int, float, bool]) -> tuple[list[float], int]:
    """One SCU: ``repeat`` queries, timed one by one.  ``held``: all on one association
    (set up before timing starts), as a modality polling the worklist does; else one
    association per query (set-up, C-FIND, release timed together)."""
    host, port, aet, name, pid, today, repeat, budget, held = args
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    from ebw.dicom.net import nodelay_scu

    nodelay_scu()
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    times, matches = [], 0
    q = _query(name, pid, today)
    deadline = time.monotonic() + budget
    assoc = ae.associate(host, port, ae_title=aet) if held else None
    for _ in range(repeat):
        t0 = time.perf_counter()
        if not held:
            assoc = ae.associate(host, port, ae_title=aet)
        assert assoc is not None and assoc.is_established, "association rejected"
        n = 0
        for status, _ident in assoc.send_c_find(q, ModalityWorklistInformationFind):
            if status and status.Status in (0xFF00, 0xFF01):
                n += 1
        if not held:
            assoc.release()
        times.append(time.perf_counter() - t0)
        matches = n
        if time.monotonic() > deadline:
            break
    if held and assoc is not None:
        assoc.release()
    return times, matches


def findscu_all(host: str, port: int, aet: str, today: str, verbose: bool) -> dict[str, Any]:
    """All of today to DCMTK findscu (a C++ client: the pynetdicom SCU is itself
    ~1 ms per response, which would hide the server's speed).  Quiet, findscu only
    receives and parses the responses; ``-v`` also prints every dataset (and lets the
    responses be counted)."""
    cmd = [
        "/usr/bin/findscu",
        "-v" if verbose else "-q",
        "-W",
        "-aet",
        "BENCHSCU",
        "-aec",
        aet,
        host,
        str(port),
        "-k",
        "PatientName",
        "-k",
        "PatientID",
        "-k",
        "AccessionNumber",
        "-k",
        f"(0040,0100)[0].ScheduledProcedureStepStartDate={today}",
        "-k",
        "(0040,0100)[0].Modality",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"findscu failed: {out.stderr[-500:]}")
    n = (out.stdout + out.stderr).count("Find Response") if verbose else ""
    return {
        "query": "all of today (findscu -v)" if verbose else "all of today (findscu, quiet)",
        "assoc": "fresh",
        "scus": 1,
        "matches": n,
        "queries": 1,
        "p50_ms": round(elapsed * 1000, 1),
        "p99_ms": round(elapsed * 1000, 1),
        "qps": round(1 / elapsed, 2),
    }


def measure(
    host: str,
    port: int,
    aet: str,
    name: str,
    pid: str,
    today: str,
    scus: int,
    repeat: int,
    budget: float,
    held: bool = True,
) -> dict[str, Any]:
    with ProcessPoolExecutor(scus) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(_worker, [(host, port, aet, name, pid, today, repeat, budget, held)] * scus))
        wall = time.perf_counter() - t0
    times = [t for r in results for t in r[0]]
    return {
        "query": name,
        "assoc": "held" if held else "fresh",
        "scus": scus,
        "matches": results[0][1],
        "queries": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p99_ms": round(pct(times, 99) * 1000, 1),
        "qps": round(len(times) / wall, 1),
    }


def plan(scus_list: list[int]) -> list[tuple[str, bool, int]]:
    """(query, held association?, SCUs) measured per server: every query on a held
    association; one patient also with an association per query; all of today with one SCU."""
    out = [(name, True, scus) for name in QUERIES for scus in scus_list if name != "all of today" or scus == 1]
    return out + [("patient by ID", False, scus) for scus in scus_list]


def write_wl_files(directory: Path, aet: str, encounters: list[Any], today: str) -> None:
    """The same items as DCMTK worklist files (DIR/AET/*.wl plus the lockfile wlmscpfs wants)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    d = directory / aet
    d.mkdir(parents=True, exist_ok=True)
    (d / "lockfile").touch()
    for i, e in enumerate(encounters):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = f"{e.family}^{e.given}"
        ds.PatientID = e.mrn
        ds.PatientBirthDate = e.birth
        ds.PatientSex = e.sex if e.sex in "MF" else "O"
        ds.AccessionNumber = f"EB{i + 1:012d}"
        ds.AdmissionID = e.visit
        ds.StudyInstanceUID = generate_uid()
        ds.RequestedProcedureID = "POCUS"
        ds.RequestedProcedureDescription = "Point of care ultrasound"
        sps = Dataset()
        sps.Modality = "US"
        sps.ScheduledStationAETitle = ""
        sps.ScheduledProcedureStepStartDate = today
        sps.ScheduledProcedureStepStartTime = "000000"
        sps.ScheduledProcedureStepID = ds.AccessionNumber
        ds.ScheduledProcedureStepSequence = [sps]
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(d / f"item{i:06d}.wl", enforce_file_format=True)


def start(cmd: list[str], ready: str | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if ready:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if ready not in line:
            raise RuntimeError(f"{cmd[0]} did not start: {line}")
    else:
        time.sleep(1.0)
    return proc


def main(argv: list[str] | None = None) -> int:
    from bench.peers import free_port

    p = argparse.ArgumentParser(
        prog="python -m bench.cfind", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--items", type=int, action="append", help="active encounters (repeatable)")
    p.add_argument("--scus", type=int, action="append", help="concurrent SCUs (repeatable)")
    p.add_argument("--repeat", type=int, default=20, help="queries per SCU (fewer for 'all of today')")
    p.add_argument("--budget", type=float, default=20.0, help="seconds per SCU per measurement, at most")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default="bench/results/cfind.json")
    args = p.parse_args(argv)
    sizes = args.items or [10000]
    scus_list = args.scus or [1, 8]
    today = time.strftime("%Y%m%d", time.gmtime())
    rows: list[dict[str, Any]] = []
    floor_port = free_port()
    floor = start([sys.executable, "-m", "bench.floor_scp", str(floor_port)], ready="ready")
    try:
        for held in (True, False):
            for scus in scus_list:
                r = measure(
                    "127.0.0.1",
                    floor_port,
                    "FLOOR",
                    "patient by ID",
                    "FLOOR1",
                    today,
                    scus,
                    args.repeat,
                    args.budget,
                    held,
                )
                rows.append({"server": "floor (bare pynetdicom, 1 fixed item)", "items": 1, **r})
    finally:
        floor.terminate()
        floor.wait()
    for n in sizes:
        feed = Feed(seed=11, prefix="Q")
        encs = [feed.new_encounter() for _ in range(n)]
        for e in encs:
            e.patient_class = "I"  # inpatients: never expire, whatever the message dates
        pid = encs[len(encs) // 2].mrn
        server = Server(args.workers, "off")
        try:
            t0 = time.perf_counter()
            adt_run("127.0.0.1", server.hl7_port, [feed.message("A01", e) for e in encs], 8)
            print(f"loaded {n} encounters in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            # warm-up: every worker has loaded the list into memory before timing starts
            measure("127.0.0.1", server.dicom_port, "EBW", "patient by ID", pid, today, 2, 4, 120)
            for name, held, scus in plan(scus_list):
                if name == "all of today" and n > 10000:
                    continue  # 100,000 responses to a pynetdicom SCU take minutes
                rep = args.repeat if name != "all of today" else 2
                r = measure("127.0.0.1", server.dicom_port, "EBW", name, pid, today, scus, rep, args.budget, held)
                rows.append({"server": "EBW", "items": n, **r})
                print(f"EBW {n} {name} {r['assoc']} x{scus}: p50 {r['p50_ms']} ms", file=sys.stderr)
            if n <= 10000 and os.path.exists("/usr/bin/findscu"):
                for verbose in (False, True):
                    r = findscu_all("127.0.0.1", server.dicom_port, "EBW", today, verbose)
                    rows.append({"server": "EBW", "items": n, **r})
        finally:
            server.stop()
        if n <= 10000 and shutil.which("wlmscpfs"):
            wl_dir = Path(tempfile.mkdtemp(prefix="ebw-wl-"))
            try:
                write_wl_files(wl_dir, "WLM", encs, today)
                port = free_port()
                wl = start(["wlmscpfs", "-dfr", "-dfp", str(wl_dir), str(port)])
                try:
                    for name, held, scus in plan(scus_list):
                        rep = max(2, args.repeat // 10)
                        r = measure("127.0.0.1", port, "WLM", name, pid, today, scus, rep, args.budget, held)
                        rows.append({"server": "DCMTK wlmscpfs", "items": n, **r})
                        print(f"wlmscpfs {n} {name} {r['assoc']} x{scus}: p50 {r['p50_ms']} ms", file=sys.stderr)
                    if os.path.exists("/usr/bin/findscu"):
                        for verbose in (False, True):
                            r = findscu_all("127.0.0.1", port, "WLM", today, verbose)
                            rows.append({"server": "DCMTK wlmscpfs", "items": n, **r})
                finally:
                    wl.terminate()
                    wl.wait()
            finally:
                shutil.rmtree(wl_dir, ignore_errors=True)
    # ratios: wlmscpfs / EBW at the same size, query and concurrency; EBW / floor for one patient
    index = {(r["server"], r["items"], r["query"], r["assoc"], r["scus"]): r for r in rows}
    floors = {(r["assoc"], r["scus"]): r for r in rows if r["server"].startswith("floor")}
    for r in rows:
        if r["server"] == "EBW":
            wl = index.get(("DCMTK wlmscpfs", r["items"], r["query"], r["assoc"], r["scus"]))
            r["wlmscpfs_ratio"] = round(wl["p50_ms"] / r["p50_ms"], 1) if wl else ""
            floor = floors.get((r["assoc"], r["scus"]))
            if r["query"] == "patient by ID" and floor:
                r["vs_floor"] = round(r["p50_ms"] / floor["p50_ms"], 2)
    print(
        "\nC-FIND, client TCP_NODELAY; assoc: held = queries on one open association, "
        "fresh = association set-up + C-FIND + release per query "
        f"(EBW: {args.workers} workers; wlmscpfs_ratio = wlmscpfs p50 / EBW p50; vs_floor = EBW p50 / floor p50)"
    )
    print(
        table(
            rows,
            [
                "server",
                "items",
                "query",
                "assoc",
                "scus",
                "matches",
                "queries",
                "p50_ms",
                "p99_ms",
                "qps",
                "wlmscpfs_ratio",
                "vs_floor",
            ],
        )
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
