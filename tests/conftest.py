"""Shared fixtures: free ports, a real ``ebw serve`` subprocess, MLLP helpers, a PHI sentinel."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.peers import free_port  # one helper (and one set of ports handed out) with the harness

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus" / "hl7"

# A name no real patient has: tests assert it never reaches a log record.
PHI_SENTINEL = "ZZSENTINELNAME"


def fresh_copy(module: types.ModuleType) -> types.ModuleType:
    """Run a module's file again as a private module (``sys.modules`` untouched):
    lets a test see what a selector picks under another environment."""
    spec = importlib.util.spec_from_file_location(module.__name__, module.__file__)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def dcmtk_findscu() -> str | None:
    """DCMTK's findscu by path (pynetdicom installs an app of the same name into the venv)."""
    for cand in ("/usr/bin/findscu", "/usr/local/bin/findscu"):
        if shutil.which(cand):
            return cand
    return None


def run_findscu(port: int, keys: list[str], out_dir: Path, calling: str = "FINDSCU", called: str = "EBW") -> list:
    """Worklist query with DCMTK findscu (``keys``: its ``-k`` arguments, flags included);
    returns the response datasets it wrote."""
    import pydicom

    cmd = [
        dcmtk_findscu() or "findscu",
        "-v",
        "-W",
        "-aet",
        calling,
        "-aec",
        called,
        "127.0.0.1",
        str(port),
        *keys,
        "-X",
        "-od",
        str(out_dir),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return [pydicom.dcmread(f) for f in sorted(out_dir.glob("rsp*.dcm"))]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK (with whatever field separator it uses)."""
    sep = ack[3:4] or b"|"
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA"):
            f = seg.split(sep)
            return f[1].decode(), (f[2].decode() if len(f) > 2 else "")
    raise AssertionError("no MSA segment in ACK")


ADMIN_TOKEN = "test-admin-token-0123456789"  # EBW_ADMIN_TOKEN of every test server


class EbwServer:
    """``python -m ebw serve`` on loopback with its own data dir and ports."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.hl7_port = free_port()
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "EBW_DATA_DIR": str(data_dir),
            "EBW_HL7_HOST": "127.0.0.1",
            "EBW_DICOM_HOST": "127.0.0.1",
            "EBW_HL7_PORT": str(self.hl7_port),
            "EBW_DICOM_PORT": str(self.dicom_port),
            "EBW_HTTP_PORT": str(self.http_port),
            "EBW_WORKERS": "2",
            "EBW_LMDB_MAP_SIZE_MB": "256",
            "EBW_LOG_LEVEL": "DEBUG",
            "EBW_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        self.env.update(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"ebw-{self.hl7_port}.log"

    @property
    def scp_aet(self) -> str:
        return self.env.get("EBW_SCP_AET", "EBW")

    def start(self, timeout: float = 30.0) -> EbwServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebw", "serve"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ebw serve exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                status, _ = self.http("/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ebw serve not healthy after {timeout} s:\n{self.read_log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        self.log.close()
        return code

    def kill_group(self) -> None:
        """SIGKILL the supervisor and every worker at once (power-cut style crash)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.log.close()

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api(self, method: str, path: str, body: object = None, token: str | None = ADMIN_TOKEN) -> tuple[int, object]:
        """A JSON API call: (status, decoded body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", method=method, data=data)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def health(self) -> dict:
        return json.loads(self.http("/healthz")[1])

    def read_log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def send(self, message: bytes) -> bytes:
        from ebw.mllp import MllpClient

        with MllpClient("127.0.0.1", self.hl7_port, timeout=10) as c:
            return c.send(message)


@pytest.fixture
def server_factory(tmp_path):
    servers: list[EbwServer] = []

    def make(data_dir: Path | None = None, **env: str) -> EbwServer:
        s = EbwServer(data_dir or tmp_path / f"data{len(servers)}", **env)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def server(server_factory) -> EbwServer:
    return server_factory().start()
