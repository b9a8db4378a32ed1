"""C-STORE push of a finished study to a PACS (``ebw.pacs.push_study``) against real peers:
DCMTK ``storescp`` and pynetdicom Storage SCPs that reject, fail, refuse a transfer
syntax, or never answer."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from ebw.pacs import MAX_CONTEXTS, PushResult, _batches, _read_item, push_study
from tests.conftest import PHI_SENTINEL, free_port

pytestmark = pytest.mark.network

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
STORESCP = "/usr/bin/storescp"
needs_storescp = pytest.mark.skipif(not shutil.which(STORESCP), reason="DCMTK storescp not installed")


# --- a synthetic study ---------------------------------------------------------------------


def make_instance(
    path: Path, sop_class: str, ts: str, study_uid: str, *, frames: int = 1, rgb: bool = False, n: int = 0
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = PHI_SENTINEL + "^TEST"
    ds.PatientID = "PID" + PHI_SENTINEL
    ds.Modality = "US"
    ds.InstanceNumber = n + 1
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    samples = 3 if rgb else 1
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if ts == JPEGBaseline8Bit:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        fake = [b"\xff\xd8\xff\xe0" + bytes([n, f]) * 8 + b"\xff\xd9" for f in range(frames)]
        ds.PixelData = encapsulate(fake)
        ds["PixelData"].VR = "OB"
    else:
        size = 16 * 16 * samples * frames
        ds.PixelData = bytes((i * 7 + n * 31) % 256 for i in range(size))
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Study:
    files: list[str]
    uids: list[str]
    by_uid: dict[str, Path] = field(default_factory=dict)


def build_study(d: Path, extra: list[tuple[str, str, dict[str, Any]]] = ()) -> Study:
    """3 US images (one implicit VR, one RGB) + 1 US multi-frame, explicit VR LE unless said."""
    d.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    spec: list[tuple[str, str, dict[str, Any]]] = [
        (US_IMAGE, ExplicitVRLittleEndian, {}),
        (US_IMAGE, ImplicitVRLittleEndian, {}),
        (US_IMAGE, ExplicitVRLittleEndian, {"rgb": True}),
        (US_MULTIFRAME, ExplicitVRLittleEndian, {"frames": 3}),
        *extra,
    ]
    files, uids, by_uid = [], [], {}
    for n, (cls, ts, kw) in enumerate(spec):
        p = make_instance(d / f"tmp{n}.dcm", cls, ts, study_uid, n=n, **kw)
        uid = pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
        final = p.rename(d / f"{uid}.dcm")
        files.append(str(final))
        uids.append(uid)
        by_uid[uid] = final
    return Study(files, uids, by_uid)


@pytest.fixture
def study(tmp_path) -> Study:
    return build_study(tmp_path / "study")


# --- peers ---------------------------------------------------------------------------------


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"storescp exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


@pytest.fixture
def storescp(tmp_path) -> Iterator[Any]:
    procs: list[subprocess.Popen] = []

    def start(*flags: str) -> tuple[int, Path]:
        out = tmp_path / f"pacs{len(procs)}"
        out.mkdir()
        port = free_port()
        proc = subprocess.Popen(
            [STORESCP, "-aet", "PACS", "-od", str(out), "+xa", *flags, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        wait_listening(port, proc)
        return port, out

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PynetPacs:
    """A pynetdicom Storage SCP in a thread, AE title PACS, called AE title checked."""

    def __init__(
        self,
        contexts: list[tuple[str, list[str]]] | None = None,
        statuses: dict[str, int] | None = None,
        hang_on: set[str] = frozenset(),
        all_storage: bool = False,
    ) -> None:
        self.received: dict[str, Dataset] = {}
        self.statuses = statuses or {}
        self.hang_on = hang_on
        self.release = threading.Event()
        self.associations = 0
        ae = AE(ae_title="PACS")
        ae.require_called_aet = True
        ae.maximum_pdu_size = 0
        if all_storage:
            ae.supported_contexts = StoragePresentationContexts
        elif contexts is None:
            contexts = [(cls, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for cls in (US_IMAGE, US_MULTIFRAME)]
        for cls, tss in contexts or []:
            ae.add_supported_context(cls, tss)
        self.ae = ae
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self._on_store),
                (evt.EVT_CONN_OPEN, _nodelay),
                (evt.EVT_ESTABLISHED, self._on_established),
            ],
        )
        self.port = self.server.server_address[1]

    def _on_established(self, event: Any) -> None:
        self.associations += 1

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        uid = ds.SOPInstanceUID
        if uid in self.hang_on:
            self.release.wait(30)
            return 0x0000
        code = self.statuses.get(uid, 0x0000)
        if code in (0x0000, 0xB000, 0xB006, 0xB007):
            self.received[uid] = ds
        return code

    def close(self) -> None:
        self.release.set()
        self.ae.shutdown()


@pytest.fixture
def pynet_pacs() -> Iterator[Any]:
    peers: list[PynetPacs] = []

    def start(**kw: Any) -> PynetPacs:
        p = PynetPacs(**kw)
        peers.append(p)
        return p

    yield start
    for p in peers:
        p.close()


def push(port: int, study_files: list[str], **kw: Any) -> tuple[PushResult, float]:
    t = time.monotonic()
    r = push_study(study_files, "EBW", kw.pop("pacs_aet", "PACS"), "127.0.0.1", port, **kw)
    return r, time.monotonic() - t


def pixel_bytes(path_or_ds: Any) -> bytes:
    ds = path_or_ds if isinstance(path_or_ds, Dataset) else pydicom.dcmread(path_or_ds)
    return bytes(ds.PixelData)


def no_phi_logged(caplog) -> None:
    for rec in caplog.records:
        if rec.levelno > logging.DEBUG:
            assert PHI_SENTINEL not in rec.getMessage(), rec.getMessage()


# --- DCMTK storescp ------------------------------------------------------------------------


@pytest.mark.dcmtk
@needs_storescp
def test_whole_study_arrives_at_storescp(tmp_path, storescp, caplog):
    caplog.set_level(logging.INFO)
    st = build_study(tmp_path / "study", extra=[(US_MULTIFRAME, JPEGBaseline8Bit, {"frames": 2})])
    port, out = storescp()
    r, secs = push(port, st.files)
    assert r.ok and r.failed == {}
    assert sorted(r.sent) == sorted(st.uids)
    got = {}
    for f in out.iterdir():
        ds = pydicom.dcmread(f)
        got[ds.SOPInstanceUID] = ds
    assert sorted(got) == sorted(st.uids)
    for uid, src in st.by_uid.items():
        orig = pydicom.dcmread(src)
        assert got[uid].file_meta.TransferSyntaxUID == orig.file_meta.TransferSyntaxUID
        assert bytes(got[uid].PixelData) == bytes(orig.PixelData)
        assert got[uid].PatientName == orig.PatientName
    line = [rec.getMessage() for rec in caplog.records if rec.name == "ebw.pacs" and rec.levelno == logging.INFO]
    assert len(line) == 1 and "PACS" in line[0] and f"127.0.0.1:{port}" in line[0] and "5 sent, 0 failed" in line[0]
    no_phi_logged(caplog)


@pytest.mark.dcmtk
@needs_storescp
def test_storescp_abort_fails_the_rest_as_aborted(study, storescp):
    port, out = storescp("--abort-after")
    r, secs = push(port, study.files, timeout=10)
    assert r.sent == []
    assert r.failed == {u: "aborted" for u in study.uids}
    assert secs < 8


# --- pynetdicom SCPs -----------------------------------------------------------------------


def test_skip_sends_only_the_rest(study, pynet_pacs):
    pacs = pynet_pacs()
    r, _ = push(pacs.port, study.files, skip={study.uids[0], study.uids[2]})
    assert r.ok
    assert sorted(r.sent) == sorted([study.uids[1], study.uids[3]])
    assert sorted(pacs.received) == sorted(r.sent)
    for uid in r.sent:
        assert pixel_bytes(pacs.received[uid]) == pixel_bytes(study.by_uid[uid])
    r, _ = push(pacs.port, study.files, skip=set(study.uids))
    assert r.ok and r.sent == [] and r.failed == {}


def test_pacs_down_every_instance_connection_failed(study):
    port = free_port()  # nothing listens there
    r, secs = push(port, study.files, timeout=5)
    assert not r.ok
    assert r.sent == []
    assert r.failed == {u: "connection failed" for u in study.uids}
    assert secs < 5


def test_wrong_called_ae_title_is_rejected(study, pynet_pacs, caplog):
    caplog.set_level(logging.INFO)
    pacs = pynet_pacs()
    r, _ = push(pacs.port, study.files, pacs_aet="NOTPACS")
    assert r.failed == {u: "association rejected" for u in study.uids}
    assert r.sent == [] and pacs.received == {}
    assert any("0 sent, 4 failed (association rejected: 4)" in rec.getMessage() for rec in caplog.records)


def test_failure_status_for_one_instance(study, pynet_pacs, caplog):
    caplog.set_level(logging.INFO)
    bad, warned = study.uids[1], study.uids[2]
    pacs = pynet_pacs(statuses={bad: 0xA700, warned: 0xB000})
    r, _ = push(pacs.port, study.files)
    assert r.failed == {bad: "A700"}
    assert not r.ok
    assert sorted(r.sent) == sorted(set(study.uids) - {bad})
    assert sorted(pacs.received) == sorted(r.sent)
    assert pacs.associations == 1
    no_phi_logged(caplog)


def test_unaccepted_transfer_syntax_is_not_transcoded(tmp_path, pynet_pacs):
    """The PACS takes US images in explicit VR only and US multi-frame in implicit VR only:
    the uncompressed files go with the LE fallback, the JPEG one fails."""
    st = build_study(tmp_path / "study", extra=[(US_MULTIFRAME, JPEGBaseline8Bit, {"frames": 2})])
    jpeg = st.uids[-1]
    pacs = pynet_pacs(contexts=[(US_IMAGE, [ExplicitVRLittleEndian]), (US_MULTIFRAME, [ImplicitVRLittleEndian])])
    r, _ = push(pacs.port, st.files)
    assert r.failed == {jpeg: "no accepted context"}
    assert sorted(r.sent) == sorted(set(st.uids) - {jpeg})
    for uid in r.sent:
        ds = pacs.received[uid]
        want = ExplicitVRLittleEndian if ds.SOPClassUID == US_IMAGE else ImplicitVRLittleEndian
        assert ds.file_meta.TransferSyntaxUID == want
        assert pixel_bytes(ds) == pixel_bytes(st.by_uid[uid])


def test_peer_never_answers_times_out(study, pynet_pacs):
    pacs = pynet_pacs(hang_on={study.uids[1]})
    r, secs = push(pacs.port, study.files, timeout=1)
    assert r.sent == [study.uids[0]]
    assert r.failed == {study.uids[1]: "timeout", study.uids[2]: "aborted", study.uids[3]: "aborted"}
    assert secs < 10


def test_more_than_128_contexts_use_several_associations(tmp_path, pynet_pacs):
    uids = [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
    classes = [c for c in uids if uid_to_service_class(c) is StorageServiceClass][:70]
    d = tmp_path / "many"
    d.mkdir()
    files = [
        str(make_instance(d / f"{n}.dcm", cls, ExplicitVRLittleEndian, "1.2.3", n=n)) for n, cls in enumerate(classes)
    ]
    batches = _batches([_read_item(f) for f in files])
    assert len(batches) == 2 and all(len(cxs) <= MAX_CONTEXTS for cxs, _ in batches)
    pacs = pynet_pacs(all_storage=True)
    r, _ = push(pacs.port, files)
    assert r.ok and len(r.sent) == 70
    assert pacs.associations == 2


def test_unreadable_file_is_reported_not_raised(study, pynet_pacs, tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    pacs = pynet_pacs()
    r, _ = push(pacs.port, [*study.files, str(junk)])
    assert r.failed == {"junk": "unreadable file"}
    assert sorted(r.sent) == sorted(study.uids)


def test_exact_context_files_are_streamed_without_decoding(study, pynet_pacs, monkeypatch):
    import pynetdicom.association

    def no_decode(*a: Any, **kw: Any) -> Dataset:
        raise AssertionError("data set decoded")

    monkeypatch.setattr(pynetdicom.association, "dcmread", no_decode)
    monkeypatch.setattr("ebw.pacs.dcmread", no_decode)
    pacs = pynet_pacs()
    r, _ = push(pacs.port, study.files)
    assert r.ok and sorted(r.sent) == sorted(study.uids)
    for uid in r.sent:
        assert pixel_bytes(pacs.received[uid]) == pixel_bytes(study.by_uid[uid])


def test_file_vanishing_mid_push_fails_only_that_file(study, pynet_pacs, monkeypatch):
    import ebw.pacs

    gone = study.uids[1]
    real = ebw.pacs._read_item

    def read_then_delete(path: str):
        it = real(path)
        if it.sop_instance == gone:
            Path(path).unlink()
        return it

    monkeypatch.setattr(ebw.pacs, "_read_item", read_then_delete)
    pacs = pynet_pacs()
    r, _ = push(pacs.port, study.files)
    assert r.failed == {gone: "unreadable file"}
    assert sorted(r.sent) == sorted(set(study.uids) - {gone})
    assert pacs.associations == 2  # a fresh association after the local error
