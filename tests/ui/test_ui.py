"""The administration web page (``/ui/``) in a real headless Chromium against a real
``ebw serve``: sign in with a token, add an endpoint through the form and query its new
DICOM port, watch ADT arrive in View Worklist (refresh, search, accession history),
the API's 422/409/403 messages shown next to their fields, organizations' Primary Worklist.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (skipped,
with the reason, when one is missing).  ``EBW_UI_SCREENSHOTS=docs`` writes the README's
screenshots (``docs/ui-worklist.png``, ``docs/ui-endpoint.png``); otherwise they go to the
test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from bench.feed import Feed
from tests.conftest import ADMIN_TOKEN, corpus, free_port, msa
from tests.integration.test_api import find, wait_for

pytestmark = [pytest.mark.network, pytest.mark.ui]

INSTALL = "apt-get install chromium chromium-driver"
WAIT = 20.0  # seconds for anything the page shows


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    binary = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    if binary is None:
        pytest.skip(f"chromium not installed: {INSTALL}")
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.skip(f"chromium-driver not installed: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    # a driver path given: Selenium Manager (which would download one) is not used
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


class Ui:
    """The page as an administrator uses it, on one server."""

    def __init__(self, driver, server) -> None:
        self.d = driver
        self.server = server

    def go(self, path: str) -> None:
        self.d.get(f"http://127.0.0.1:{self.server.http_port}{path}")

    def path(self) -> str:
        return self.d.current_url.split(str(self.server.http_port), 1)[1]

    def until(self, predicate, what: str, timeout: float = WAIT):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_d):
            try:
                return predicate()
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        from selenium.common.exceptions import TimeoutException

        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(check)
        except TimeoutException:
            page = self.d.execute_script("return document.getElementById('main')?.innerText || ''")
            raise AssertionError(
                f"timed out waiting for {what} on {self.d.current_url}; the page shows:\n{page}"
            ) from None

    def el(self, css: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, css)

    def shown(self, css: str):
        return self.until(lambda: self.el(css).is_displayed() and self.el(css), css)

    def text_in(self, css: str, text: str) -> str:
        return self.until(lambda: text in self.el(css).text and self.el(css).text, f"{text!r} in {css}")

    def type(self, field_id: str, value: str) -> None:
        box = self.shown(f"#{field_id}")  # pages render once their API calls answer
        box.clear()
        box.send_keys(value)

    def choose(self, select_id: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.shown(f"#{select_id}")).select_by_value(value)

    def sign_in(self, token: str = ADMIN_TOKEN, then: str = "/ui/endpoints") -> None:
        self.go("/ui/login")
        self.type("token", token)
        self.el("#signin").click()
        self.until(lambda: self.path() == then, f"the page {then}")

    def shot(self, name: str, tmp_path: Path) -> Path:
        where = Path(os.environ.get("EBW_UI_SCREENSHOTS") or tmp_path)
        where.mkdir(parents=True, exist_ok=True)
        out = where / name
        # the whole page, from the top, nothing focused
        self.d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
        size = self.d.get_window_size()
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(size["width"], max(size["height"], height + 100))
        try:
            assert self.d.save_screenshot(str(out)), out
        finally:
            self.d.set_window_size(size["width"], size["height"])
        return out


def test_the_page_and_its_assets_are_served_with_strict_headers(server):
    """No browser needed: the routes, content types and headers; concurrent API calls."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    def get(path: str, token: str | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        resp.body = resp.read()
        conn.close()
        return resp

    resp = get("/ui/")
    assert resp.status == 302 and resp.getheader("Location") == "/ui/endpoints"
    for path in ("/ui/login", "/ui/endpoints", "/ui/endpoints/new", "/ui/endpoints/x/worklist", "/ui/organizations"):
        resp = get(path)
        assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
        assert b'<script src="/ui/app.js"' in resp.body and b"http" not in resp.body  # nothing from elsewhere
        assert "default-src 'self'" in resp.getheader("Content-Security-Policy")
        assert resp.getheader("X-Frame-Options") == "DENY"
    assert get("/ui/app.js").getheader("Content-Type").startswith("text/javascript")
    assert get("/ui/style.css").getheader("Content-Type").startswith("text/css")
    resp = get("/api/endpoints/default/worklist", ADMIN_TOKEN)
    assert resp.status == 200 and resp.getheader("Cache-Control") == "no-store"
    # a page loads several resources at once: every one is answered
    paths = ["/api/endpoints", "/api/ehr-connections", "/api/pacs-destinations", "/api/organizations"] * 4
    with ThreadPoolExecutor(8) as pool:
        assert {r.status for r in pool.map(lambda p: get(p, ADMIN_TOKEN), paths)} == {200}


def test_sign_in_add_an_endpoint_and_watch_its_worklist(driver, server, tmp_path):
    ui = Ui(driver, server)
    code, ehr = server.api("POST", "/api/ehr-connections", {"name": "Epic", "host": "127.0.0.1", "port": free_port()})
    assert code == 201
    # no token yet: any page sends the user to sign in (and back afterwards)
    ui.go("/ui/")
    ui.until(lambda: ui.path().startswith("/ui/login?next="), "the sign-in page")
    ui.type("token", "not-a-token")
    ui.el("#signin").click()
    ui.text_in("#token-error", "Unknown or revoked token")
    ui.type("token", ADMIN_TOKEN)
    ui.el("#signin").click()
    ui.until(lambda: ui.path() == "/ui/endpoints", "the connectivity list")
    row = ui.shown("#endpoints tr[data-id=default]")
    assert f"127.0.0.1:{server.dicom_port}" in row.text and "EBW" in row.text
    assert "Edit" in row.text and "View Worklist" in row.text

    # + Add: the form with every seed parameter
    ui.el("#add-endpoint").click()
    ui.shown("#display_name")
    hl7_port, dicom_port = free_port(), free_port()
    for field_id, value in {
        "display_name": "ED North",
        "procedure_id": "US-ED",
        "procedure_description": "ED bedside ultrasound",
        "pacs_push_delay_seconds": "30",
        "timezone": "Europe/Paris",
        "hl7_host": "127.0.0.1",
        "hl7_port": str(hl7_port),
        "accession_prefix": "EDN",
        "accession_digits": "12",
        "accession_period_minutes": "10",
        "scp_aet": "EDNORTH",
        "dicom_host": "127.0.0.1",
        "dicom_port": str(dicom_port),
    }.items():
        ui.type(field_id, value)
    ui.choose("ehr_connection_id", ehr["id"])
    for label in ("Display Name", "Procedure ID", "PACS Push Delay", "Number of Digits", "Accession Number Generation"):
        assert label in ui.el("#endpoint-form").text
    ui.shot("ui-endpoint.png", tmp_path)
    ui.el("#save").click()
    ui.until(lambda: ui.path() == "/ui/endpoints", "the list after saving")
    ui.text_in(".notice.success", "Added ED North")
    row = ui.shown("#endpoints tr[data-id=ed-north]")
    assert f"127.0.0.1:{dicom_port}" in row.text and "EDNORTH" in row.text and "Epic" in row.text
    code, ep = server.api("GET", "/api/endpoints/ed-north")
    assert code == 200 and ep["timezone"] == "Europe/Paris" and ep["accession_period_minutes"] == 10
    assert ep["ehr_connection_id"] == ehr["id"] and ep["pacs_push_delay_seconds"] == 30

    # the new DICOM port answers with its AE title
    wait_for(lambda: find(dicom_port, "EDNORTH") is not None, what="the new DICOM listener")
    assert find(dicom_port, "EDNORTH") == []

    # View Worklist: empty, then ADT arrives and the table refreshes by itself
    row.find_element("link text", "View Worklist").click()
    ui.until(lambda: ui.path() == "/ui/endpoints/ed-north/worklist", "View Worklist")
    ui.text_in("#wl-empty", "No active items")
    ui.text_in("#wl-meta", "EDNORTH")
    from ebw.mllp import MllpClient

    feed = Feed(seed=7, prefix="UI")
    with MllpClient("127.0.0.1", hl7_port, timeout=10) as c:
        assert msa(c.send(corpus("001_a04_register.hl7")))[0] == "AA"
        for _ in range(4):
            e = feed.new_encounter()
            assert msa(c.send(feed.message("A04" if e.patient_class in "EO" else "A01", e)))[0] == "AA"
    ui.until(lambda: len(ui.els("#worklist tr.item")) == 5, "five items after a refresh", timeout=15)
    (item,) = [i for i in find(dicom_port, "EDNORTH") if i.PatientID == "555123"]
    doe = ui.until(lambda: next(r.text for r in ui.els("#worklist tr.item") if "555123" in r.text), "DOE's row")
    assert "DOE, JANE" in doe and item.AccessionNumber in doe and item.AccessionNumber.startswith("EDN")
    assert ui.el("#wl-range").text == "1\u20135 of 5"

    # the accession history opens under its row (and stays open across refreshes)
    def expand_doe():
        row = next(r for r in ui.els("#worklist tr.item") if "555123" in r.text)
        row.find_element("css selector", "button.expand").click()
        return True

    ui.until(expand_doe, "a click on DOE's history button")
    history = ui.shown("#worklist tr.history:not([hidden])")
    assert item.AccessionNumber in history.text and "current" in history.text
    assert len(ui.els("#worklist button.expand[aria-expanded=true]")) == 1
    ui.shot("ui-worklist.png", tmp_path)

    # search filters the table (on the server), and clearing it brings everything back
    ui.type("q", "doe")
    ui.until(lambda: [r.text for r in ui.els("#worklist tr.item")] == [doe], "only DOE")
    ui.type("q", "nobody-by-this-name")
    ui.text_in("#wl-empty", "No active item matches")
    assert not ui.el("#worklist").is_displayed()
    ui.el("#q").clear()
    ui.el("#q").send_keys(" ")
    ui.until(lambda: len(ui.els("#worklist tr.item")) == 5, "every item again")
    # the page never stores patient data in the browser
    stored = driver.execute_script("return [localStorage.length, JSON.stringify(sessionStorage)]")
    assert stored[0] == 0 and "555123" not in stored[1] and "DOE" not in stored[1]


def test_api_messages_are_shown_next_to_their_field_and_roles_apply(driver, server):
    ui = Ui(driver, server)
    ui.sign_in()
    ui.go("/ui/endpoints/default")
    ui.shown("#accession_digits")
    assert ui.el("#display_name").get_attribute("value") == "Default"
    # 422: the rule, next to the field the API names
    ui.type("accession_digits", "11")
    ui.el("#save").click()
    message = ui.text_in("#accession_digits-error", "the number of accession digits is at least 12")
    assert ui.el("#accession_digits").get_attribute("aria-invalid") == "true"
    assert "accession_digits" not in message  # the rule itself, not the field's name
    assert ui.el("#hl7_port-error").text == ""
    # 409: a port in use, next to the port
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        ui.type("accession_digits", "12")
        ui.type("hl7_port", str(busy.getsockname()[1]))
        ui.el("#save").click()
        ui.text_in("#hl7_port-error", "in use")
        assert ui.el("#accession_digits-error").text == ""
    finally:
        busy.close()
    # a valid change is saved
    ui.type("hl7_port", str(server.hl7_port))
    ui.type("procedure_description", "Bedside ultrasound")
    ui.el("#save").click()
    ui.text_in("#form-status", "Saved")
    assert server.api("GET", "/api/endpoints/default")[1]["procedure_description"] == "Bedside ultrasound"

    # a read-only user sees the pages; Save and Add answer with the 403 message
    code, reader = server.api("POST", "/api/users", {"name": "Reader", "connectivity": "read"})
    assert code == 201
    ui.el("#signout").click()
    ui.until(lambda: ui.path().startswith("/ui/login"), "the sign-in page")
    ui.sign_in(reader["token"])
    ui.shown("#endpoints tr[data-id=default]")
    ui.go("/ui/endpoints/default")
    ui.type("procedure_id", "RO")
    ui.el("#save").click()
    ui.text_in("#form-error", "connectivity read_write role required")
    ui.go("/ui/organizations")
    ui.type("org-name", "Read Only Clinic")
    ui.el("#org-add").click()
    ui.text_in("#org-error", "connectivity read_write role required")
    assert server.api("GET", "/api/organizations")[1]["items"] == []
    # the token revoked: the next call sends the user back to sign in
    assert server.api("DELETE", f"/api/users/{reader['id']}")[0] == 200
    ui.go("/ui/endpoints")
    ui.until(lambda: ui.path().startswith("/ui/login?next=%2Fui%2Fendpoints"), "the sign-in page")
    ui.text_in("#main", "not accepted")
    assert driver.execute_script("return sessionStorage.getItem('ebw.token')") is None


def test_organizations_get_a_primary_worklist(driver, server):
    ui = Ui(driver, server)
    ui.sign_in(then="/ui/endpoints")
    ui.go("/ui/organizations")
    ui.text_in("#no-orgs", "No organizations yet")
    ui.el("#org-add").click()  # no name
    ui.text_in("#org-name-error", "1-64 characters")
    ui.type("org-name", "General Hospital")
    ui.choose("org-primary", "default")
    ui.el("#org-add").click()
    ui.text_in(".notice.success", "Added organization General Hospital")
    (org,) = server.api("GET", "/api/organizations")[1]["items"]
    assert org["name"] == "General Hospital" and org["primary_worklist"] == "default"
    from selenium.webdriver.support.ui import Select

    select = Select(ui.el(f"#org-primary-{org['id']}"))
    assert select.first_selected_option.get_attribute("value") == "default"
    assert "Default (default)" in [o.text for o in select.options]
    select.select_by_value("")
    ui.el(f"#org-save-{org['id']}").click()
    ui.text_in(f"#org-msg-{org['id']}", "Saved")
    assert server.api("GET", f"/api/organizations/{org['id']}")[1]["primary_worklist"] is None
    select.select_by_value("default")
    ui.el(f"#org-save-{org['id']}").click()
    ui.until(lambda: server.api("GET", f"/api/organizations/{org['id']}")[1]["primary_worklist"] == "default", "save")
