"""Exam done, end to end with real peers: a pynetdicom modality (MPPS + C-STORE) or DCMTK
storescu sends a study with the worklist's accession number; an MLLP receiver in the test
plays the EHR and checks the ORU; DCMTK storescp plays PACS and receives every instance
after the push delay.  Also: a restart during the delay, the EHR down for a while, AR
dead letters, quiet-time completion, orphans."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, UltrasoundImageStorage

from ebw.mllp import FrameReader, frame
from tests.conftest import corpus, free_port, msa, wait_for
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network
# DCMTK's tools (pynetdicom installs scripts of the same names into the venv)
STORESCP = "/usr/bin/storescp" if os.path.exists("/usr/bin/storescp") else None
STORESCU = "/usr/bin/storescu" if os.path.exists("/usr/bin/storescu") else None


# -- peers ------------------------------------------------------------------------------


class Ehr:
    """An MLLP listener playing the EHR: records every message, answers ``answers`` in turn
    (then AA)."""

    def __init__(self, port: int | None = None, answers: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.answers = list(answers or [])
        self.messages: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = FrameReader(1 << 24)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for msg in reader.feed(data):
                    self.messages.append(msg)
                    code = self.answers.pop(0) if self.answers else "AA"
                    msh10 = field(msg, "MSH", 10)
                    head = f"MSH|^~\\&|EHR|H|EBW||20261128||ACK^R01^ACK|A{len(self.messages)}|P|2.5.1"
                    ack = f"{head}\rMSA|{code}|{msh10}\r"
                    conn.sendall(frame(ack.encode()))

    def close(self) -> None:
        self.running = False
        self.sock.close()


def field(message: bytes, segment: str, n: int) -> str:
    for seg in message.decode("utf-8").split("\r"):
        f = seg.split("|")
        if f[0] == segment:
            if segment == "MSH":
                return f[n - 1] if n - 1 < len(f) else ""
            return f[n] if n < len(f) else ""
    return ""


def segments(message: bytes, name: str) -> list[list[str]]:
    return [s.split("|") for s in message.decode("utf-8").split("\r") if s.startswith(name + "|")]


class Pacs:
    """DCMTK storescp writing every received instance into a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [STORESCP, "-aet", "PACS", "-od", str(directory), "+xa", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("storescp did not start")

    def received(self) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.dir.iterdir()) if p.is_file()]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the modality -----------------------------------------------------------------------


def instance(item: Dataset, study_uid: str, n: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.AccessionNumber = item.AccessionNumber
    ds.PatientID = item.PatientID
    ds.PatientName = item.PatientName
    ds.Modality = "US"
    ds.StudyDate, ds.StudyTime = "20261128", "101500"
    ds.InstanceNumber = n
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes((i + n) % 256 for i in range(256))
    return ds


def modality_exam(server, item: Dataset, images: int = 3, mpps: bool = True, study_uid: str | None = None):
    """MPPS IN PROGRESS, C-STORE the images, MPPS COMPLETED -- one association, as a cart does."""
    study_uid = study_uid or str(item.StudyInstanceUID)
    ae = AE(ae_title="USCART1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    assert assoc.is_established
    sent = []
    try:
        mpps_uid = generate_uid()
        if mpps:
            create = Dataset()
            create.PerformedProcedureStepStatus = "IN PROGRESS"
            create.PerformedProcedureStepStartDate, create.PerformedProcedureStepStartTime = "20261128", "101400"
            step = Dataset()
            step.StudyInstanceUID = study_uid
            step.AccessionNumber = item.AccessionNumber
            create.ScheduledStepAttributesSequence = [step]
            status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, mpps_uid)
            assert status.Status == 0x0000
        for n in range(1, images + 1):
            ds = instance(item, study_uid, n)
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000
            sent.append(ds)
        if mpps:
            done = Dataset()
            done.PerformedProcedureStepStatus = "COMPLETED"
            status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, mpps_uid)
            assert status.Status == 0x0000
    finally:
        assoc.release()
    return sent


def api(server, path: str, method: str = "GET"):
    code, body = server.api(method, path)
    assert code == 200, (code, body)
    return body


def the_item(server) -> Dataset:
    (item,) = cfind(server, mwl_query())
    return item


# -- tests ------------------------------------------------------------------------------


@pytest.mark.dcmtk
@pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp not installed")
def test_exam_to_oru_then_pacs_after_the_delay(server_factory, tmp_path):
    ehr = Ehr()
    pacs = Pacs(tmp_path / "pacs")
    try:
        server = server_factory(
            EBW_EHR_HOST="127.0.0.1",
            EBW_EHR_PORT=str(ehr.port),
            EBW_PACS_AET="PACS",
            EBW_PACS_HOST="127.0.0.1",
            EBW_PACS_PORT=str(pacs.port),
            EBW_PACS_PUSH_DELAY_SECONDS="3",
            EBW_ORU_RECEIVING_APPLICATION="EPIC",
            EBW_ORU_RECEIVING_FACILITY="GENHOSP",
        ).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        item = the_item(server)
        sent = modality_exam(server, item)
        (oru,) = wait_for(lambda: ehr.messages, what="the ORU")
        acked = time.monotonic()
        assert field(oru, "MSH", 9) == "ORU^R01^ORU_R01"
        assert field(oru, "MSH", 5) == "EPIC" and field(oru, "MSH", 6) == "GENHOSP"
        (obr,) = segments(oru, "OBR")
        assert obr[4] == "POCUS^Point of care ultrasound^L"  # OBR-4.1 / 4.2: procedure ID / description
        assert obr[3].split("^")[0] == item.AccessionNumber == obr[18]
        assert field(oru, "ORC", 3).split("^")[0] == item.AccessionNumber
        assert obr[7].startswith("20261128101400")  # exam time: the MPPS start
        assert obr[25] == "F"
        assert field(oru, "PID", 3) == "555123^^^GENHOSP^MR~9876^^^STATE^PI"  # identity exactly as sent
        assert field(oru, "PV1", 19).split("^")[0] == str(item.AdmissionID)
        obx = {s[3]: s[5] for s in segments(oru, "OBX")}
        assert obx["113014^DICOM Study^DCM"] == item.StudyInstanceUID
        assert obx["IMAGES^Images^L"] == "3"
        assert pacs.received() == []  # not before the delay
        got = wait_for(lambda: len(pacs.received()) == 3 and pacs.received(), what="the push to PACS")
        assert time.monotonic() - acked >= 2.5
        assert sorted(d.SOPInstanceUID for d in got) == sorted(d.SOPInstanceUID for d in sent)
        assert all(d.PixelData == s.PixelData for d in got for s in sent if s.SOPInstanceUID == d.SOPInstanceUID)
        # the exam used the number: the encounter has a fresh one already
        assert the_item(server).AccessionNumber != item.AccessionNumber
        wait_for(lambda: api(server, "/api/exams")["exams"][0]["push"]["state"] == "done", what="push recorded")
        (exam,) = api(server, "/api/exams")["exams"]
        assert exam["state"] == "complete" and exam["oru"]["state"] == "sent" and exam["push"]["state"] == "done"
        assert exam["instances"] == 3 and not exam["orphan"] and exam["completed_by"] == "mpps completed"
        metrics = server.http("/metrics")[1].decode()
        assert 'ebw_oru_sent_total{ack="AA",endpoint="default"} 1.0' in metrics
        assert 'ebw_pacs_push_total{endpoint="default",result="done"} 1.0' in metrics
        assert "ebw_pacs_push_lag_seconds_count" in metrics and "ebw_oru_outbox_depth 0.0" in metrics
    finally:
        ehr.close()
        pacs.close()


@pytest.mark.dcmtk
@pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp not installed")
def test_a_restart_during_the_delay_still_pushes_once(server_factory, tmp_path):
    ehr = Ehr()
    pacs = Pacs(tmp_path / "pacs")
    try:
        server = server_factory(
            EBW_EHR_HOST="127.0.0.1",
            EBW_EHR_PORT=str(ehr.port),
            EBW_PACS_AET="PACS",
            EBW_PACS_HOST="127.0.0.1",
            EBW_PACS_PORT=str(pacs.port),
            EBW_PACS_PUSH_DELAY_SECONDS="6",
        ).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        modality_exam(server, the_item(server), images=2)
        wait_for(lambda: ehr.messages, what="the ORU")
        acked = time.monotonic()
        assert server.stop() == 0  # during the delay
        server.start()
        wait_for(lambda: len(pacs.received()) == 2, timeout=40, what="the push after the restart")
        assert time.monotonic() - acked >= 5.5
        time.sleep(2)  # nothing more arrives
        assert len(pacs.received()) == 2 and len(ehr.messages) == 1
    finally:
        ehr.close()
        pacs.close()


def test_the_ehr_down_for_a_while_gets_the_oru_once_it_is_back(server_factory):
    port = free_port()
    server = server_factory(EBW_EHR_HOST="127.0.0.1", EBW_EHR_PORT=str(port)).start()
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    modality_exam(server, the_item(server), images=1)
    wait_for(lambda: api(server, "/api/exams")["exams"][0]["oru"]["attempts"] >= 1, what="a first attempt")
    exam = api(server, "/api/exams")["exams"][0]
    assert exam["oru"]["state"] == "pending" and exam["oru"]["detail"]
    ehr = Ehr(port)
    try:
        (oru,) = wait_for(lambda: ehr.messages, timeout=40, what="the ORU after the EHR is back")
        assert field(oru, "MSH", 10) == exam["oru"]["msh10"]  # the MSH-10 assigned at completion
        wait_for(lambda: api(server, "/api/exams")["exams"][0]["oru"]["state"] == "sent", what="sent")
    finally:
        ehr.close()


def test_ae_is_retried_with_the_same_msh10_and_ar_is_dead_lettered(server_factory):
    ehr = Ehr(answers=["AE", "AA", "AR"])
    try:
        server = server_factory(EBW_EHR_HOST="127.0.0.1", EBW_EHR_PORT=str(ehr.port)).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        modality_exam(server, the_item(server), images=1)
        wait_for(lambda: len(ehr.messages) == 2, timeout=40, what="the retry after AE")
        assert field(ehr.messages[0], "MSH", 10) == field(ehr.messages[1], "MSH", 10)
        wait_for(lambda: api(server, "/api/exams")["exams"][0]["oru"]["state"] == "sent", what="sent")
        # a second exam of the same encounter (the fresh number) is rejected: dead letter
        modality_exam(server, the_item(server), images=1)
        dead = wait_for(lambda: api(server, "/api/exams?oru=dead")["exams"], what="the dead letter")
        assert dead[0]["oru"]["attempts"] == 1
        assert 'ebw_oru_dead_letters_total{endpoint="default"} 1.0' in server.http("/metrics")[1].decode()
        assert api(server, f"/api/exams/default/{dead[0]['study_uid']}/retry-oru", "POST")["oru"]["state"] == "pending"
        wait_for(lambda: api(server, "/api/exams?oru=sent")["count"] == 2, what="the resend")
        assert len(ehr.messages) == 4 and not api(server, "/api/exams?oru=dead")["exams"]
    finally:
        ehr.close()


def test_without_mpps_the_exam_completes_when_quiet_or_by_the_api(server_factory):
    ehr = Ehr()
    try:
        server = server_factory(
            EBW_EHR_HOST="127.0.0.1", EBW_EHR_PORT=str(ehr.port), EBW_EXAM_QUIET_SECONDS="10"
        ).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        item = the_item(server)
        modality_exam(server, item, images=2, mpps=False)
        exam = api(server, "/api/exams")["exams"][0]
        assert exam["state"] == "open" and exam["instances"] == 2
        wait_for(lambda: ehr.messages, timeout=30, what="the ORU after the quiet time")
        assert api(server, "/api/exams")["exams"][0]["completed_by"] == "quiet"
        # another exam, completed at once through the API
        item2 = the_item(server)
        modality_exam(server, item2, images=1, mpps=False)
        uid = str(item2.StudyInstanceUID)
        assert api(server, f"/api/exams/default/{uid}/complete", "POST")["completed_by"] == "api"
        wait_for(lambda: len(ehr.messages) == 2, what="the second ORU")
    finally:
        ehr.close()


def test_a_late_exam_with_a_rotated_number_finds_its_patient_and_strangers_are_orphans(server):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    item = the_item(server)
    modality_exam(server, item, images=1, mpps=False)  # uses the number: the encounter gets a fresh one
    late = the_item(server)
    assert late.AccessionNumber != item.AccessionNumber
    # an exam that still carries the *first* number (a cart that queried long ago)
    modality_exam(server, item, images=1, mpps=False, study_uid=generate_uid())
    stranger = Dataset()
    stranger.AccessionNumber, stranger.PatientID, stranger.PatientName = "ZZ000000000001", "NOBODY", "NO^BODY"
    modality_exam(server, stranger, images=1, mpps=False, study_uid=generate_uid())
    listed = api(server, "/api/exams")["exams"]
    assert len(listed) == 3
    by_orphan = {e["orphan"]: e for e in listed}
    assert sum(e["orphan"] for e in listed) == 1 and by_orphan[True]["accession"] == "ZZ000000000001"
    assert {e["encounter"] for e in listed if not e["orphan"]} == {listed[-1]["encounter"]}
    assert api(server, "/api/exams?orphan=1")["count"] == 1
    assert 'ebw_orphan_studies_total{endpoint="default"} 1.0' in server.http("/metrics")[1].decode()


def test_bad_instances_get_a_failure_status_and_nothing_is_kept(server):
    ae = AE(ae_title="USCART1")
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    bad = Dataset()
    bad.file_meta = FileMetaDataset()
    bad.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    bad.SOPClassUID = UltrasoundImageStorage
    bad.SOPInstanceUID = generate_uid()
    bad.StudyInstanceUID = "../../etc"  # not a UID: never a path
    assert assoc.send_c_store(bad).Status == 0xC000
    assoc.release()
    assert api(server, "/api/exams")["count"] == 0
    assert not (server.data_dir / "studies").exists() or not any((server.data_dir / "studies").rglob("*.dcm"))


@pytest.mark.dcmtk
@pytest.mark.skipif(STORESCU is None, reason="DCMTK storescu not installed")
def test_dcmtk_storescu_sends_a_study(server, tmp_path):
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    item = the_item(server)
    paths = []
    for n in (1, 2):
        ds = instance(item, str(item.StudyInstanceUID), n)
        p = tmp_path / f"img{n}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(str(p))
    out = subprocess.run(
        [STORESCU, "-aet", "DCMTKUS", "-aec", server.scp_aet, "127.0.0.1", str(server.dicom_port), *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    (exam,) = api(server, "/api/exams")["exams"]
    assert exam["instances"] == 2 and exam["accession"] == item.AccessionNumber and not exam["orphan"]
    stored = list((server.data_dir / "studies" / "default" / str(item.StudyInstanceUID)).glob("*.dcm"))
    assert len(stored) == 2 and all(pydicom.dcmread(p).AccessionNumber == item.AccessionNumber for p in stored)
    assert os.path.getsize(stored[0]) > 256


@pytest.mark.dcmtk
@pytest.mark.skipif(STORESCP is None, reason="DCMTK storescp not installed")
def test_without_an_ehr_the_delay_counts_from_completion(server_factory, tmp_path):
    pacs = Pacs(tmp_path / "pacs")
    try:
        server = server_factory(
            EBW_PACS_AET="PACS",
            EBW_PACS_HOST="127.0.0.1",
            EBW_PACS_PORT=str(pacs.port),
            EBW_PACS_PUSH_DELAY_SECONDS="2",
        ).start()
        assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
        modality_exam(server, the_item(server), images=2)
        completed = time.monotonic()
        wait_for(lambda: len(pacs.received()) == 2, what="the push")
        assert time.monotonic() - completed >= 1.5
        # storescp has the files before EBW has recorded the push as done: wait for that too
        wait_for(lambda: api(server, "/api/exams")["exams"][0]["push"]["state"] == "done", what="push recorded")
        (exam,) = api(server, "/api/exams")["exams"]
        assert exam["oru"]["state"] == "none" and exam["push"]["state"] == "done"
    finally:
        pacs.close()


def test_studies_never_eat_the_space_kept_for_adt(server_factory):
    """A reserve bigger than the free space: every image is refused with 0xA700 (the
    modality keeps it), nothing is written, and ADT is still stored."""
    server = server_factory(EBW_STUDIES_RESERVE_MB="10000000").start()
    assert msa(server.send(corpus("001_a04_register.hl7")))[0] == "AA"
    item = the_item(server)
    ae = AE(ae_title="USCART1")
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    try:
        assert assoc.send_c_store(instance(item, str(item.StudyInstanceUID), 1)).Status == 0xA700
    finally:
        assoc.release()
    assert not any((server.data_dir / "studies").rglob("*.dcm")) if (server.data_dir / "studies").exists() else True
    assert api(server, "/api/exams")["count"] == 0
    assert "EBW_STUDIES_RESERVE_MB" in server.read_log()
    assert msa(server.send(corpus("002_a08_update.hl7")))[0] == "AA"
