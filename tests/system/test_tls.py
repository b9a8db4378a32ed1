"""TLS on every listener, with real clients: Python's ssl, openssl s_client, pynetdicom;
mutual TLS with a client CA; configuration errors for bad certificate settings."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ebw.mllp import FrameReader, frame
from tests.conftest import corpus, msa
from tests.integration.test_slice import mwl_query

pytestmark = pytest.mark.network
OPENSSL = shutil.which("openssl")


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    if OPENSSL is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    p = {k: str(d / f"{k}.pem") for k in ("ca", "ca_key", "server", "server_key", "client", "client_key")}
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=EBW test CA",
        "-keyout",
        p["ca_key"],
        "-out",
        p["ca"],
    )
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("client", "USCART1")):
        csr = str(d / f"{name}.csr")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", p[f"{name}_key"], "-out", csr)
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            p["ca"],
            "-CAkey",
            p["ca_key"],
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            p[name],
        )
    return p


def client_ctx(pki: dict[str, str], cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if cert:
        ctx.load_cert_chain(pki["client"], pki["client_key"])
    return ctx


def mllp_tls(port: int, ctx: ssl.SSLContext, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(frame(message))
            reader = FrameReader(1 << 20)
            while True:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                frames = reader.feed(data)
                if frames:
                    return frames[0]


def tls_env(pki: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "EBW_HL7_TLS_CERT": pki["server"],
        "EBW_HL7_TLS_KEY": pki["server_key"],
        "EBW_DICOM_TLS_CERT": pki["server"],
        "EBW_DICOM_TLS_KEY": pki["server_key"],
        "EBW_HTTP_TLS_CERT": pki["server"],
        "EBW_HTTP_TLS_KEY": pki["server_key"],
        **extra,
    }


def start_tls_server(server_factory, pki, **extra):
    """A server with TLS on every listener; its ``http()`` (used for readiness) speaks HTTPS."""
    server = server_factory(**tls_env(pki, **extra))
    ctx = client_ctx(pki)

    def https(self, path: str):  # type: ignore[no-untyped-def]
        try:
            with urllib.request.urlopen(f"https://localhost:{self.http_port}{path}", timeout=5, context=ctx) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    server.http = https.__get__(server)  # type: ignore[method-assign]
    return server.start()


def test_mllp_dicom_and_https_over_tls(server_factory, pki):
    server = start_tls_server(server_factory, pki)
    assert server.http("/healthz")[0] == 200  # HTTPS
    with pytest.raises((urllib.error.URLError, OSError)):  # plain HTTP on the HTTPS port
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5).read()
    ack = mllp_tls(server.hl7_port, client_ctx(pki), corpus("001_a04_register.hl7"))
    assert msa(ack) == ("AA", "MSG00001")
    with pytest.raises((ConnectionError, OSError)):  # plain MLLP on a TLS port gets nothing
        with socket.create_connection(("127.0.0.1", server.hl7_port), timeout=3) as s:
            s.sendall(frame(corpus("002_a08_update.hl7")))
            if not s.recv(100):
                raise ConnectionError("closed")
    # DICOM: pynetdicom SCU with TLS
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="EBW", tls_args=(client_ctx(pki), "localhost"))
    assert assoc.is_established
    got = [i for s, i in assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind) if s.Status == 0xFF00]
    assoc.release()
    assert [str(i.PatientID) for i in got] == ["555123"]


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_s_client_speaks_mllp_over_tls(server_factory, pki):
    import select
    import time

    server = start_tls_server(server_factory, pki)
    cmd = [
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{server.hl7_port}",
        "-CAfile",
        pki["ca"],
        "-quiet",
        "-verify_return_error",
        "-servername",
        "localhost",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame(corpus("001_a04_register.hl7")))
        proc.stdin.flush()
        got = b""
        deadline = time.monotonic() + 20
        while b"MSA|" not in got and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    break
                got += chunk
        assert b"MSA|AA|MSG00001" in got
    finally:
        proc.kill()
        proc.wait(5)


def test_mutual_tls_requires_a_client_certificate(server_factory, pki):
    server = start_tls_server(server_factory, pki, EBW_TLS_CLIENT_CA=pki["ca"])
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        mllp_tls(server.hl7_port, client_ctx(pki), corpus("001_a04_register.hl7"))
    assert msa(mllp_tls(server.hl7_port, client_ctx(pki, cert=True), corpus("001_a04_register.hl7")))[0] == "AA"
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assert not ae.associate(
        "127.0.0.1", server.dicom_port, ae_title="EBW", tls_args=(client_ctx(pki), "localhost")
    ).is_established
    assoc = ae.associate(
        "127.0.0.1", server.dicom_port, ae_title="EBW", tls_args=(client_ctx(pki, cert=True), "localhost")
    )
    assert assoc.is_established
    assoc.release()


def test_bad_tls_settings_are_configuration_errors(tmp_path, pki):
    from tests.system.test_serve import run_serve

    out = run_serve({"EBW_HL7_TLS_CERT": pki["server"]}, tmp_path)
    assert out.returncode == 2 and "EBW_HL7_TLS_KEY" in out.stderr and "set together" in out.stderr
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    out = run_serve({"EBW_DICOM_TLS_CERT": str(bogus), "EBW_DICOM_TLS_KEY": pki["server_key"]}, tmp_path)
    assert out.returncode == 2 and "EBW_DICOM_TLS_CERT" in out.stderr and "cannot load" in out.stderr
    out = run_serve({"EBW_HTTP_TLS_CERT": str(tmp_path / "missing.pem"), "EBW_HTTP_TLS_KEY": "x"}, tmp_path)
    assert out.returncode == 2 and "EBW_HTTP_TLS_CERT" in out.stderr and "readable file" in out.stderr
    assert Path(pki["ca"]).exists()


def test_dcmtk_findscu_over_mutual_tls(server_factory, pki):
    from tests.conftest import dcmtk_findscu

    findscu = dcmtk_findscu()
    if findscu is None:
        pytest.skip("DCMTK findscu not installed")
    server = start_tls_server(server_factory, pki, EBW_TLS_CLIENT_CA=pki["ca"])
    assert msa(mllp_tls(server.hl7_port, client_ctx(pki, cert=True), corpus("001_a04_register.hl7")))[0] == "AA"
    cmd = [
        findscu,
        "-v",
        "-W",
        "+tls",
        pki["client_key"],
        pki["client"],
        "+cf",
        pki["ca"],
        "-aet",
        "FINDSCU",
        "-aec",
        "EBW",
        "127.0.0.1",
        str(server.dicom_port),
        "-k",
        "PatientID=555123",
        "-k",
        "PatientName",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-800:] + out.stderr[-800:]
    assert "555123" in out.stdout + out.stderr
    plain = subprocess.run(cmd[:3] + cmd[8:], capture_output=True, text=True, timeout=60)  # no TLS: refused
    assert "555123" not in plain.stdout + plain.stderr
