"""The administration API through a real server: tokens and roles, every resource, the
env-variable rules on every field, live endpoints across workers, the audit log."""

from __future__ import annotations

import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ebw.mllp import MllpClient
from tests.conftest import corpus, free_port, msa, wait_for
from tests.integration.test_slice import mwl_query

pytestmark = pytest.mark.network


def find(port: int, aet: str) -> list | None:
    """C-FIND all items on ``port``/``aet``; None if the association is refused."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return None
    try:
        return [i for s, i in assoc.send_c_find(mwl_query(), ModalityWorklistInformationFind) if s.Status == 0xFF00]
    finally:
        assoc.release()


def new_endpoint(server, **fields):
    body = {
        "display_name": "ED North",
        "hl7_host": "127.0.0.1",
        "hl7_port": free_port(),
        "dicom_host": "127.0.0.1",
        "dicom_port": free_port(),
        "scp_aet": "EDNORTH",
        "procedure_id": "US-ED",
        "procedure_description": "ED bedside ultrasound",
        "accession_prefix": "EDN",
        **fields,
    }
    code, ep = server.api("POST", "/api/endpoints", body)
    assert code == 201, ep
    return ep


def test_tokens_roles_and_the_openapi_document(server):
    assert server.api("GET", "/api/endpoints", token=None)[0] == 401
    assert server.api("GET", "/api/endpoints", token="not-a-token")[0] == 401
    code, doc = server.api("GET", "/api/openapi.json", token=None)
    assert code == 200 and doc["openapi"].startswith("3.") and "/api/endpoints/{id}/worklist" in doc["paths"]
    assert "/api/exams/{endpoint}/{study_uid}" in doc["paths"]  # every path the README documents
    assert "accession_digits" in doc["components"]["schemas"]["Endpoint"]["properties"]
    code, reader = server.api("POST", "/api/users", {"name": "Reader", "connectivity": "read"})
    assert code == 201 and len(reader["token"]) > 20
    code, writer = server.api("POST", "/api/users", {"name": "Writer", "connectivity": "read_write"})
    assert code == 201
    # the token is shown once: never listed
    code, users = server.api("GET", "/api/users")
    assert code == 200 and all("token" not in u and "token_sha256" not in u for u in users["users"])
    r, w = reader["token"], writer["token"]
    assert server.api("GET", "/api/endpoints", token=r)[0] == 200
    assert server.api("GET", "/api/exams", token=r)[0] == 200
    assert server.api("GET", "/api/endpoints/default/worklist", token=r)[0] == 200
    assert server.api("POST", "/api/organizations", {"name": "X"}, token=r)[0] == 403
    assert server.api("PUT", "/api/endpoints/default", {"procedure_id": "X"}, token=r)[0] == 403
    assert server.api("GET", "/api/users", token=w)[0] == 403  # users: administrators only
    assert server.api("GET", "/api/audit", token=w)[0] == 403
    assert server.api("PUT", "/api/endpoints/default", {"procedure_id": "POC2"}, token=w)[0] == 200
    # revoke: delete the user, the token stops working
    assert server.api("DELETE", f"/api/users/{reader['id']}")[0] == 200
    assert server.api("GET", "/api/endpoints", token=r)[0] == 401
    code, audit = server.api("GET", "/api/audit")
    assert code == 200
    seen = [(e["user"], e["action"], e["object"]) for e in audit["entries"]]
    assert ("Writer", "update", "endpoint") in seen and ("admin", "delete", "user") in seen
    entry = next(e for e in audit["entries"] if e["object"] == "endpoint")
    assert entry["changes"] == {"procedure_id": "POC2"} and entry["at"] > 0


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("accession_digits", 11, "the number of accession digits is at least 12"),
        ("accession_prefix", "E1", "the accession prefix is 2-4 letters (A-Z)"),
        ("accession_period_minutes", 0, "1"),
        ("timezone", "Mars/Olympus", "timezone"),
        ("scp_aet", "A" * 17, "16"),
        ("hl7_port", 70000, "from 1 to 65535"),
        ("pacs_push_delay_seconds", -1, ""),
        ("curation", '{"include": {"colour": ["red"]}}', "colour"),
        ("no_such_field", "x", "unknown field"),
    ],
)
def test_every_field_is_checked_with_the_variable_rule(server, field, value, rule):
    code, body = server.api("PUT", "/api/endpoints/default", {field: value})
    assert code == 422, body
    assert body["field"] == field and rule in body["error"]


def test_cross_field_rules_and_ports_in_use(server):
    code, body = server.api("PUT", "/api/endpoints/default", {"accession_prefix": "ABCD", "accession_digits": 13})
    assert code == 422 and body["field"] == "accession_digits" and "16" in body["error"]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        code, body = server.api(
            "POST",
            "/api/endpoints",
            {
                "display_name": "B",
                "hl7_host": "127.0.0.1",
                "hl7_port": busy.getsockname()[1],
                "dicom_port": free_port(),
            },
        )
        assert code == 409 and "in use" in body["error"]
    finally:
        busy.close()
    code, body = server.api("POST", "/api/endpoints", {"display_name": "C", "hl7_port": server.dicom_port})
    assert code == 409 and "default" in body["error"]
    assert server.api("GET", "/api/endpoints")[1]["endpoints"][0]["id"] == "default"  # nothing was created
    code, body = server.api("PUT", "/api/endpoints/default", {"dicom_port": server.http_port})
    assert code == 409 and body["field"] == "dicom_port"  # the form shows it next to that field
    # malformed requests get a 4xx answer, not a 500 or none
    assert server.api("GET", "/api/audit?limit=abc")[0] == 200
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=5) as s:
        s.sendall(b"POST /api/endpoints HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_a_new_endpoint_answers_in_every_worker_without_a_restart(server):
    pid_before = server.proc.pid
    ep = new_endpoint(server)
    assert ep["id"] == "ed-north" and ep["accession_prefix"] == "EDN"
    # the new DICOM port answers (many associations: the kernel spreads them over the workers)
    wait_for(lambda: find(ep["dicom_port"], "EDNORTH") is not None, what="the new DICOM listener")
    for _ in range(8):
        assert find(ep["dicom_port"], "EDNORTH") == []
    assert find(ep["dicom_port"], "EBW") is None  # its own AE title only
    # ADT on its HL7 port lands on its worklist, with its settings
    with MllpClient("127.0.0.1", ep["hl7_port"], timeout=10) as c:
        assert msa(c.send(corpus("001_a04_register.hl7")))[0] == "AA"
    (item,) = find(ep["dicom_port"], "EDNORTH")
    assert item.AccessionNumber.startswith("EDN") and item.RequestedProcedureID == "US-ED"
    assert find(server.dicom_port, "EBW") == []  # not on the default endpoint
    code, view = server.api("GET", f"/api/endpoints/{ep['id']}/worklist?q=doe")
    assert code == 200 and view["total"] == 1
    row = view["items"][0]
    assert row["patient_id"] == "555123" and row["accession"] == item.AccessionNumber
    assert row["accession_history"][-1]["accession"] == item.AccessionNumber
    assert server.api("GET", f"/api/endpoints/{ep['id']}/worklist?q=nobody")[1]["total"] == 0
    assert server.proc.pid == pid_before and server.http("/healthz")[0] == 200


def test_changes_are_live_and_a_deleted_endpoint_stops_listening(server):
    ep = new_endpoint(server)
    wait_for(lambda: find(ep["dicom_port"], "EDNORTH") is not None, what="the new DICOM listener")
    # settings: applied without new listeners
    assert server.api("PUT", f"/api/endpoints/{ep['id']}", {"scp_aet": "EDN2", "accession_prefix": "ZZ"})[0] == 200
    wait_for(lambda: find(ep["dicom_port"], "EDN2") is not None, what="the new AE title")
    time.sleep(1.5)  # one worker has it; every worker has it within a second (README): then both
    with MllpClient("127.0.0.1", ep["hl7_port"], timeout=10) as c:
        assert msa(c.send(corpus("001_a04_register.hl7")))[0] == "AA"
    (item,) = find(ep["dicom_port"], "EDN2")
    assert item.AccessionNumber.startswith("ZZ")  # the next number issued
    # a new DICOM port: the old one closes once the old workers have drained
    new_port = free_port()
    assert server.api("PUT", f"/api/endpoints/{ep['id']}", {"dicom_port": new_port})[0] == 200
    wait_for(lambda: find(new_port, "EDN2") is not None, what="the moved DICOM listener")
    wait_for(lambda: _refused(ep["dicom_port"]), what="the old port to close")
    assert server.api("DELETE", f"/api/endpoints/{ep['id']}")[0] == 200
    wait_for(lambda: _refused(new_port) and _refused(ep["hl7_port"]), what="the deleted endpoint's ports to close")
    assert server.api("GET", f"/api/endpoints/{ep['id']}")[0] == 404
    assert find(server.dicom_port, "EBW") == []  # the default endpoint never stopped
    # the deleted endpoint's id is not given again: its encounters are kept, and a new
    # endpoint under that id would list them (another site's patients)
    again = new_endpoint(server, scp_aet="EDAGAIN")
    assert again["id"] != ep["id"]
    wait_for(lambda: find(again["dicom_port"], "EDAGAIN") == [], what="the new endpoint's empty worklist")
    code, body = server.api("POST", "/api/endpoints", {"id": ep["id"], "display_name": "ED North"})
    assert code == 409 and body["field"] == "id"


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_ehr_connections_pacs_destinations_and_organizations(server):
    code, ehr = server.api(
        "POST",
        "/api/ehr-connections",
        {"name": "Epic", "host": "127.0.0.1", "port": 6661, "receiving_application": "EPIC"},
    )
    assert code == 201 and ehr["sending_application"] == "EBW"
    assert server.api("POST", "/api/ehr-connections", {"name": "Bad", "host": "127.0.0.1", "port": 0})[0] == 422
    code, pacs = server.api(
        "POST", "/api/pacs-destinations", {"name": "Main PACS", "aet": "PACS1", "host": "10.0.0.5", "port": 104}
    )
    assert code == 201
    assert server.api("POST", "/api/pacs-destinations", {"name": "X", "aet": "", "host": "h", "port": 104})[0] == 422
    code, ep = server.api(
        "PUT", "/api/endpoints/default", {"ehr_connection_id": ehr["id"], "pacs_destination_id": pacs["id"]}
    )
    assert code == 200 and ep["ehr"]["host"] == "127.0.0.1" and ep["ehr"]["receiving_application"] == "EPIC"
    assert ep["pacs"] == {"aet": "PACS1", "host": "10.0.0.5", "port": 104}
    # a change of the connection applies to every endpoint using it
    assert server.api("PUT", f"/api/ehr-connections/{ehr['id']}", {"port": 6662})[0] == 200
    assert server.api("GET", "/api/endpoints/default")[1]["ehr"]["port"] == 6662
    assert server.api("DELETE", f"/api/ehr-connections/{ehr['id']}")[0] == 409  # in use
    assert server.api("PUT", "/api/endpoints/default", {"ehr_connection_id": "nope"})[0] == 422
    # organizations with a primary worklist
    code, org = server.api("POST", "/api/organizations", {"name": "General Hospital", "primary_worklist": "default"})
    assert code == 201 and org["primary_worklist"] == "default"
    assert server.api("POST", "/api/organizations", {"name": "X", "primary_worklist": "missing"})[0] == 422
    assert server.api("DELETE", "/api/endpoints/default")[0] == 409  # a primary worklist
    assert server.api("GET", "/api/organizations")[1]["items"][0]["name"] == "General Hospital"
    assert (
        server.api("PUT", f"/api/organizations/{org['id']}", {"primary_worklist": None})[1]["primary_worklist"] is None
    )


def test_api_changes_to_the_default_endpoint_survive_a_restart(server):
    assert server.api("PUT", "/api/endpoints/default", {"procedure_description": "From the API"})[0] == 200
    server.stop()
    server.start()
    assert server.api("GET", "/api/endpoints/default")[1]["procedure_description"] == "From the API"


def test_the_debug_access_log_leaves_out_query_strings(server_factory):
    """A worklist search (``?q=``) is a patient's name: the access log, at DEBUG, keeps
    the path and drops the query."""
    s = server_factory(EBW_LOG_LEVEL="DEBUG").start()
    assert s.api("GET", "/api/endpoints/default/worklist?q=ZELDA")[0] == 200
    wait_for(lambda: "/api/endpoints/default/worklist?..." in s.read_log(), what="the access log line")
    assert "ZELDA" not in s.read_log()
