"""The deployment files and interface documents agree with the server.

- The Grafana dashboard and the Prometheus alerting rules query only metrics a running
  server exports (scraped after HL7, C-FIND and a whole exam loop with a dead-lettered ORU,
  a PACS push and an orphan study); their PromQL parses and the rules pass their unit tests
  (promtool, when installed).
- The systemd unit verifies (systemd-analyze, when installed) and keeps its hardening.
- The Dockerfile, compose.yaml, the Kubernetes manifests and the Grafana provisioning agree
  on image, ports, data path and health path.
- docs/dicom-conformance.md lists exactly the SOP classes and transfer syntaxes a live
  association gets accepted; docs/hl7-interface.md exactly the trigger events the server
  answers AA (anything else: AR 201).
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from pydicom.uid import UID, AllTransferSyntaxes, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom import sop_class as sop_classes
from pynetdicom.sop_class import ModalityWorklistInformationFind, UltrasoundImageStorage

from ebw.dicom import store_scp
from ebw.hl7.adt import KNOWN_EVENTS
from tests.conftest import ROOT, free_port, msa
from tests.integration.test_exam_loop import Ehr, modality_exam
from tests.integration.test_slice import cfind, mwl_query

pytestmark = pytest.mark.network

DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs"
PROMTOOL = shutil.which("promtool")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package: prometheus)")


# -- PromQL -----------------------------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    label values, ranges and Grafana variables left out)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)
    text = re.sub(r"(?<![\w:])[\d.]+(?:ms|[smhdwy]|\d)*(?![\w:])", " ", text)  # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        following = text[m.end() :].lstrip()[:1]
        if following == "(" or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "ebw-dashboard.json").read_text())


def dashboard_exprs() -> list[str]:
    exprs = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard()["panels"])
    for var in dashboard()["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict) and "label_values(" in q.get("query", ""):
            inner = re.match(r"label_values\((.*),\s*\w+\)$", q["query"])
            assert inner, q
            exprs.append(inner.group(1))
    return exprs


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "ebw-alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$site", ".*")
        .replace("$endpoint", ".*")
    )


def test_metric_name_extraction() -> None:
    e = 'sum by (site, le) (rate(ebw_a_bucket{site=~"$site", ack=~"AE|AR"}[$__rate_interval])) / ebw_b offset 1h'
    assert metric_names(e) == {"ebw_a_bucket", "ebw_b"}
    assert metric_names('up{job="ebw"} == 0') == {"up"}
    assert metric_names("histogram_quantile(0.99, x_bucket) > 0.5 and deriv(y[30m]) > 0") == {"x_bucket", "y"}


class Pacs:
    """A pynetdicom Storage SCP playing the PACS."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event) -> int:  # type: ignore[no-untyped-def]
        self.received.append(str(event.request.AffectedSOPClassUID))
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def adt(event: str, n: int, msh18: str = "", name: str = "DEPLOY^TEST") -> bytes:
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128093000||ADT^{event}^ADT_A01|DEP{event}{n}|P|2.5.1"
        + ("|" * 6 + msh18 if msh18 else "")
        + f"\rEVN|{event}|20261128093000\r"
        f"PID|1||D{n}^^^GENHOSP^MR||{name}||19800101|F|||||||||ACCT{n}^^^GENHOSP^AN\r"
        f"PV1|1|E|ED^1^A^GENHOSP||||1234^HOUSE^GREGORY|||EM|||||||||V{n}^^^GENHOSP^VN\r"
        + (f"MRG|OLD{n}^^^GENHOSP^MR||OLDACCT{n}^^^GENHOSP^AN\r" if event in MERGE else "")
    ).encode("utf-8")


MERGE = {"A18", "A34", "A35", "A36", "A40", "A47"}


def test_dashboard_and_alerts_query_only_exported_metrics(server_factory) -> None:
    ehr = Ehr(answers=["AR"])  # the ORU is dead-lettered, then the study is pushed
    pacs = Pacs()
    try:
        server = server_factory(
            EBW_EHR_HOST="127.0.0.1",
            EBW_EHR_PORT=str(ehr.port),
            EBW_PACS_AET="PACS",
            EBW_PACS_HOST="127.0.0.1",
            EBW_PACS_PORT=str(pacs.port),
        ).start()
        assert msa(server.send(adt("A04", 1)))[0] == "AA"
        # a declared charset that does not decode: counted as a fallback
        assert msa(server.send(adt("A08", 1, msh18="ASCII", name="DÉPLOY^TEST")))[0] == "AA"
        assert msa(server.send(adt("A99", 2)))[0] == "AR"
        (item,) = cfind(server, mwl_query(PatientID="D1"))
        modality_exam(server, item, images=1, mpps=True)
        orphan = Dataset()
        orphan.AccessionNumber, orphan.PatientID, orphan.PatientName = "XX000000000999", "NOBODY", "NOBODY^X"
        modality_exam(server, orphan, images=1, mpps=False, study_uid=generate_uid())

        deadline = time.monotonic() + 30
        while True:
            status, body = server.http("/metrics")
            assert status == 200
            samples = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
            if {"ebw_pacs_push_lag_seconds_count", "ebw_oru_dead_letters_total"} <= samples:
                break
            assert time.monotonic() < deadline, "the exam loop did not finish: " + server.read_log()[-3000:]
            time.sleep(0.3)
        assert pacs.received and set(pacs.received) <= conformance_classes("SCU")
    finally:
        ehr.close()
        pacs.close()

    used = {name for e in dashboard_exprs() for name in metric_names(e)}
    assert used, "no metric found in the dashboard"
    assert used - samples == set(), "the dashboard queries metrics the server does not export"
    for want in (
        "ebw_hl7_messages_total",
        "ebw_hl7_ack_seconds_bucket",
        "ebw_hl7_connections",
        "ebw_cfind_queries_total",
        "ebw_cfind_duration_seconds_bucket",
        "ebw_cfind_matches_bucket",
        "ebw_active_encounters",
        "ebw_accessions_issued_total",
        "ebw_oru_outbox_depth",
        "ebw_oru_dead_letters_total",
        "ebw_pacs_push_lag_seconds_bucket",
        "ebw_worker_restarts_total",
        "ebw_lmdb_map_used_bytes",
        "ebw_lmdb_map_size_bytes",
    ):
        assert want in used, f"the dashboard has no panel on {want}"

    alert_used = {name for r in alert_rules() for name in metric_names(r["expr"])}
    assert alert_used - samples == {"up"}, "the alerts query metrics the server does not export"


def test_dashboard_structure() -> None:
    d = dashboard()
    assert d["uid"] and d["title"]
    names = {v["name"] for v in d["templating"]["list"]}
    assert {"datasource", "site", "endpoint"} <= names
    ids = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            ids.append(p["id"])
            for t in p.get("targets", []):
                assert t["datasource"]["uid"] == "${datasource}", p["title"]
            walk(p.get("panels", []))

    walk(d["panels"])
    assert len(ids) == len(set(ids))


@needs_promtool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    rules = [
        {"record": f"ebw_dashboard:expr_{n}", "expr": grafana_to_promql(e)} for n, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_prometheus_rules_and_config_check() -> None:
    prom = DEPLOY / "prometheus"
    for cmd in (
        ["check", "rules", "ebw-alerts.yml"],
        ["test", "rules", "ebw-alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        out = subprocess.run([PROMTOOL, *cmd], cwd=prom, capture_output=True, text=True)
        assert out.returncode == 0, " ".join(cmd) + ":\n" + out.stdout + out.stderr
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    for want in (
        "EbwHl7FeedSilent",
        "EbwHl7Rejections",
        "EbwHl7AckSlow",
        "EbwOruOutboxGrowing",
        "EbwOruDeadLetters",
        "EbwPacsPushFailing",
        "EbwWorkerRestarts",
        "EbwLmdbMapNearlyFull",
        "EbwOrphanStudies",
    ):
        assert want in names
    tested = set(re.findall(r"alertname: (\w+)", (prom / "ebw-alerts.test.yml").read_text()))
    assert {"EbwHl7FeedSilent", "EbwOruDeadLetters", "EbwPacsPushFailing"} <= tested


# -- systemd ------------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((DEPLOY / "systemd" / "ebw.service").read_text())
    return cp


def test_systemd_unit_hardening() -> None:
    svc = unit()["Service"]
    assert svc["User"] == "ebw" and svc["Group"] == "ebw"
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("EnvironmentFile", "/etc/ebw/ebw.env"),
        ("CapabilityBoundingSet", ""),
    ):
        assert svc[key] == value, key
    text = (DEPLOY / "systemd" / "ebw.service").read_text()
    envs = dict(kv.split("=", 1) for line in text.splitlines() if line.startswith("Environment=") for kv in [line[12:]])
    assert envs["EBW_DATA_DIR"] in svc["ReadWritePaths"].split()
    assert envs["EBW_ENV_FILE"] == svc["EnvironmentFile"]
    assert shlex.split(svc["ExecStart"])[1:] == ["serve"]
    assert "2" in svc["RestartPreventExitStatus"].split()  # a configuration error is not retried


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies() -> None:
    path = DEPLOY / "systemd" / "ebw.service"
    out = subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)
    # Only the host's state may differ from a target machine: the binary is not installed here.
    # Anything else (unknown key, bad value, bad section) is an error in the unit.
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and not re.search(r"Command .* is not executable|Failed to resolve (user|group)", line)
    ]
    assert problems == [], "\n".join(problems)
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=30", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in out.stderr and "unrecognized" in out.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250+")
    assert out.returncode == 0, "exposure above 3.0:\n" + out.stdout[-2000:] + out.stderr


# -- containers and Kubernetes -------------------------------------------------------------------


class Dockerfile:
    def __init__(self, path: Path) -> None:
        text = path.read_text().replace("\\\n", " ")
        self.lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        stages = [n for n, ln in enumerate(self.lines) if ln.upper().startswith("FROM ")]
        assert len(stages) >= 2, "multi-stage build expected"
        self.runtime = self.lines[stages[-1] :]

    def instr(self, name: str) -> list[str]:
        return [ln.split(None, 1)[1] for ln in self.runtime if ln.split(None, 1)[0].upper() == name]

    def env(self) -> dict[str, str]:
        out = {}
        for args in self.instr("ENV"):
            for tok in shlex.split(args):
                k, _, v = tok.partition("=")
                out[k] = v
        return out


def test_dockerfile() -> None:
    df = Dockerfile(DEPLOY / "docker" / "Dockerfile")
    stages = [ln for ln in df.lines if ln.upper().startswith("FROM ")]
    assert [ln.split()[-1] for ln in stages] == ["build", "runtime"], stages
    build_stage = "\n".join(df.lines[: df.lines.index(df.runtime[0])])
    assert "pip install" in build_stage
    for pyx in sorted((DEPLOY.parent / "ebw" / "_fast").glob("*.pyx")):  # every compiled module checked
        assert f"ebw._fast.{pyx.stem}" in build_stage, pyx.name
    assert "COPY --from=build /opt/ebw /opt/ebw" in df.runtime
    env = df.env()
    assert env["EBW_DATA_DIR"] == "/var/lib/ebw" and env["EBW_HTTP_HOST"] == "0.0.0.0"
    assert json.loads(df.instr("VOLUME")[0]) == ["/var/lib/ebw"]
    assert set(df.instr("EXPOSE")[0].split()) == {"2575/tcp", "11112/tcp", "8080/tcp"}
    (user,) = df.instr("USER")
    assert user.split(":")[0] not in ("0", "root")
    (health,) = df.instr("HEALTHCHECK")
    assert "/healthz" in health and "127.0.0.1" in health
    assert json.loads(df.instr("ENTRYPOINT")[0]) == ["/opt/ebw/bin/ebw"]
    assert json.loads(df.instr("CMD")[0]) == ["serve"]
    # what the build copies is not excluded from the context
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    for src in ("pyproject.toml", "setup.py", "README.md", "ebw"):
        assert f"!{src}" in ignore, src


def docker_facts() -> dict:
    df = Dockerfile(DEPLOY / "docker" / "Dockerfile")
    env = df.env()
    return {
        "ports": {int(p.split("/")[0]) for p in df.instr("EXPOSE")[0].split()},
        "data_dir": env["EBW_DATA_DIR"],
        "http_port": int(env["EBW_HTTP_PORT"]),
        "hl7_port": int(env["EBW_HL7_PORT"]),
        "dicom_port": int(env["EBW_DICOM_PORT"]),
        "uid": int(df.instr("USER")[0].split(":")[0]),
    }


def test_compose_consistent_with_dockerfile() -> None:
    facts = docker_facts()
    compose_dir = DEPLOY / "docker"
    compose = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    ebw = compose["services"]["ebw"]
    assert (compose_dir / ebw["build"]["context"] / ebw["build"]["dockerfile"]).resolve() == (
        compose_dir / "Dockerfile"
    ).resolve()
    assert ebw["image"] == "ebw:0.1.0"
    published = {int(str(p).rsplit(":", 1)[-1]) for p in ebw["ports"]}
    assert published == facts["ports"]
    assert any(v.endswith(":" + facts["data_dir"]) for v in ebw["volumes"])
    assert ebw["environment"]["EBW_DATA_DIR"] == facts["data_dir"]
    assert ebw["environment"]["EBW_HTTP_HOST"] == "0.0.0.0"
    assert int(ebw["environment"]["EBW_WORKERS"]) >= 1
    # every bind mount exists
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (compose_dir / src).exists(), f"{name}: {src}"
    # Prometheus scrapes the ebw service on its HTTP port, with the alert rules loaded
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "ebw"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"ebw:{facts['http_port']}"]
    assert job["static_configs"][0]["labels"]["site"]
    assert prom["rule_files"] == ["ebw-alerts.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]
    assert "../prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
    # Grafana: the provisioned datasource is the compose Prometheus; the dashboard is where the provider looks
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "ebw.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = compose["services"]["grafana"]
    assert any(v.startswith("../grafana/ebw-dashboard.json:" + path + "/") for v in grafana["volumes"])
    assert any(v.startswith("../grafana/provisioning:/etc/grafana/provisioning") for v in grafana["volumes"])


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_consistent_with_dockerfile() -> None:
    facts = docker_facts()
    docs = k8s_docs()
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    kust = next(d for d in docs if d["kind"] == "Kustomization")
    for res in kust["resources"]:
        assert (DEPLOY / "kubernetes" / res).exists(), res

    (sts,) = by_kind["StatefulSet"]
    spec = sts["spec"]
    assert spec["replicas"] == 1, "LMDB is single-host: one replica per instance"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ebw:0.1.0"
    assert container.get("args", ["serve"]) == ["serve"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(p["protocol"] == "TCP" for p in container["ports"])
    assert set(ports.values()) == facts["ports"]
    assert ports["http"] == facts["http_port"] and ports["mllp"] == facts["hl7_port"]
    assert ports["dicom"] == facts["dicom_port"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and ports[get["port"]] == facts["http_port"], probe
    (claim,) = spec["volumeClaimTemplates"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert mount["mountPath"] == facts["data_dir"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pod["securityContext"]["runAsUser"] == facts["uid"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 15

    (cm,) = by_kind["ConfigMap"]
    assert container["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]
    env = cm["data"]
    assert env["EBW_DATA_DIR"] == facts["data_dir"] and env["EBW_HTTP_HOST"] == "0.0.0.0"
    assert int(env["EBW_HTTP_PORT"]) == facts["http_port"] and int(env["EBW_HL7_PORT"]) == facts["hl7_port"]
    assert int(env["EBW_DICOM_PORT"]) == facts["dicom_port"]
    from ebw import config

    config.load({k: v for k, v in env.items()})  # every value passes the server's rules

    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert spec["serviceName"] in services and services[spec["serviceName"]]["spec"]["clusterIP"] == "None"
    exposed = set()
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["protocol"] == "TCP" and p["targetPort"] in ports
            assert p["port"] == ports[p["targetPort"]]
            exposed.add(p["targetPort"])
    assert exposed == {"mllp", "dicom", "http"}

    (sm,) = by_kind["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics" and ep["port"] == "http"
    scraped = [
        s for s in services.values() if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(scraped) == 1 and any(p["name"] == "http" for p in scraped[0]["spec"]["ports"])
    assert "site" in sm["spec"]["targetLabels"] and "site" in scraped[0]["metadata"]["labels"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomization_renders() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "kubernetes")], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0 and "unknown command" in out.stderr:
        pytest.skip("this kubectl has no kustomize")
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted(kinds) == sorted(d["kind"] for d in k8s_docs() if d["kind"] != "Kustomization")


# -- interface documents --------------------------------------------------------------------------


def conformance_rows() -> list[list[str]]:
    rows = []
    for line in (DOCS / "dicom-conformance.md").read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[0-9]+(\.[0-9]+)+", cells[2]):
            rows.append(cells)
    return rows


def conformance_classes(role: str) -> set[str]:
    return {r[2] for r in conformance_rows() if r[0] == role}


def conformance_syntaxes(group: str) -> set[str]:
    return {r[2] for r in conformance_rows() if r[0] == group}


def conformance_groups(role: str) -> dict[str, str]:
    return {r[2]: r[3] for r in conformance_rows() if r[0] == role}


ALL_SOP_CLASSES = sorted({str(v) for k, v in vars(sop_classes).items() if isinstance(v, UID) and not k.startswith("_")})
ALL_SYNTAXES = sorted({str(u) for u in AllTransferSyntaxes})


def accepted(server, contexts: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs a live association accepts, one context each."""
    ae = AE(ae_title="CONFTEST")
    anchor = ("1.2.840.10008.1.1", "1.2.840.10008.1.2")  # Verification: an association needs one accepted context
    out: set[tuple[str, str]] = set()
    for i in range(0, len(contexts), 120):
        batch = contexts[i : i + 120]
        ae.requested_contexts = []
        for cls, ts in batch if anchor in batch else [*batch, anchor]:
            ae.add_requested_context(cls, ts)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
        assert assoc.is_established
        got = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        out |= got & set(batch)
        assoc.release()
    return out


def test_conformance_statement_matches_the_server(server) -> None:
    scp = conformance_classes("SCP")
    # the code's lists
    code = {str(ModalityWorklistInformationFind), "1.2.840.10008.1.1", "1.2.840.10008.3.1.2.3.3"}
    code |= set(store_scp.STORAGE_CLASSES)
    assert scp == code
    assert conformance_classes("SCU") == set(store_scp.STORAGE_CLASSES)
    assert conformance_syntaxes("TS-STORAGE") == set(store_scp.TRANSFER_SYNTAXES)
    groups = conformance_groups("SCP")
    assert {groups[c] for c in store_scp.STORAGE_CLASSES} == {"TS-STORAGE"}
    assert {groups[c] for c in scp - set(store_scp.STORAGE_CLASSES)} == {"TS-BASIC"}

    # the live AE: of every SOP class pynetdicom knows, exactly the listed ones are accepted
    implicit = "1.2.840.10008.1.2"
    assert scp <= set(ALL_SOP_CLASSES)
    got = accepted(server, [(c, implicit) for c in ALL_SOP_CLASSES])
    assert {c for c, _ in got} == scp
    # and per SOP class exactly the transfer syntaxes of its group
    for cls in (str(UltrasoundImageStorage), str(ModalityWorklistInformationFind), "1.2.840.10008.3.1.2.3.3"):
        got = accepted(server, [(cls, ts) for ts in ALL_SYNTAXES])
        assert {ts for _, ts in got} == conformance_syntaxes(groups[cls]), cls

    # a C-ECHO and a C-FIND on the accepted contexts work
    ae = AE(ae_title="CONFTEST")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.scp_aet)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert cfind(server, mwl_query()) == []


def hl7_events() -> list[str]:
    text = (DOCS / "hl7-interface.md").read_text()
    section = text[text.index("## 3.") : text.index("## 4.")]
    return re.findall(r"^\| (A\d\d) \|", section, flags=re.M)


def test_hl7_spec_lists_exactly_the_accepted_events(server) -> None:
    listed = hl7_events()
    assert len(listed) == len(set(listed))
    assert set(listed) == set(KNOWN_EVENTS)
    from ebw.mllp import MllpClient

    with MllpClient("127.0.0.1", server.hl7_port, timeout=10) as client:
        for n, ev in enumerate(sorted(listed)):
            code, control = msa(client.send(adt(ev, 100 + n)))
            assert (code, control) == ("AA", f"DEP{ev}{100 + n}"), ev
        for ev in ("A19", "A99", "Z01"):  # not listed: not accepted
            ack = client.send(adt(ev, 1))
            assert msa(ack)[0] == "AR", ev
            err = [s for s in ack.split(b"\r") if s.startswith(b"ERR")]
            assert err and err[0].split(b"|")[3].startswith(b"201^"), ev
        ack = client.send(b"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128||ORM^O01|X1|P|2.5.1\r")
        assert msa(ack)[0] == "AR" and b"|200^" in ack
        ack = client.send(b"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128||ADT^A04|X2|P|2.5.1\rPID|1\r")
        assert msa(ack)[0] == "AE" and b"|101^" in ack
