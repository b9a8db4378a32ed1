"""Peers the harness runs the same load against: DCMTK wlmscpfs, Orthanc's worklist
plugin (both loaded with the same items as .wl files), a baseline MLLP receiver built on
python-hl7, and the bare pynetdicom protocol floor (``bench.floor_scp``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process was given before: the kernel may
    hand the port just closed out again, and a server given the same port for two
    listeners refuses to start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"peer did not listen on {port}")


@dataclass
class Peer:
    name: str
    port: int
    aet: str = ""
    proc: subprocess.Popen[bytes] | None = None
    dirs: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def wlmscpfs(encounters: list[Any], today: str) -> Peer | None:
    """DCMTK wlmscpfs serving ``encounters`` as .wl files (None if not installed)."""
    exe = shutil.which("wlmscpfs")
    if exe is None:
        return None
    from bench.cfind import write_wl_files

    d = tempfile.mkdtemp(prefix="ebw-wlm-")
    write_wl_files(__import__("pathlib").Path(d), "WLM", encounters, today)
    port = free_port()
    proc = subprocess.Popen([exe, "-dfr", "-dfp", d, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return Peer("DCMTK wlmscpfs", port, "WLM", proc, [d])


ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"


def orthanc(encounters: list[Any], today: str) -> Peer | None:
    """Orthanc with its ModalityWorklists plugin over the same .wl files (None if not installed)."""
    exe = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.path.exists("/usr/sbin/Orthanc") else None)
    if exe is None or not os.path.exists(ORTHANC_PLUGIN):
        return None
    import json
    from pathlib import Path

    from bench.cfind import write_wl_files

    d = tempfile.mkdtemp(prefix="ebw-orthanc-")
    write_wl_files(Path(d), "WL", encounters, today)
    port, http = free_port(), free_port()
    cfg = {
        "Name": "bench",
        "StorageDirectory": f"{d}/storage",
        "IndexDirectory": f"{d}/storage",
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFindWorklist": True,
        "DicomModalities": {"bench": ["BENCHSCU", "127.0.0.1", 104]},
        "DicomCheckModalityHost": False,
        "Plugins": [ORTHANC_PLUGIN],
        "Worklists": {"Enable": True, "Database": f"{d}/WL"},
    }
    Path(d, "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([exe, f"{d}/orthanc.json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, timeout=60)
    return Peer("Orthanc worklists", port, "ORTHANC", proc, [d])


def hl7_baseline() -> Peer:
    """python-hl7's asyncio MLLP server: parses each message and answers AA; stores nothing."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.peers.hl7_baseline", str(port)], stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    return Peer("python-hl7 MLLP (parse + ACK, stores nothing)", port, "", proc)


def floor() -> Peer:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.floor_scp", str(port)], stdout=subprocess.PIPE)
    wait_port(port, proc)
    return Peer("floor (bare pynetdicom, 1 fixed item)", port, "FLOOR", proc)
