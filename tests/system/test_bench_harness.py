"""The load harness is a tool users run: its commands work end to end (small loads)."""

from __future__ import annotations

import json

import pytest

from bench import harness

pytestmark = pytest.mark.network


def test_adt_cfind_and_compare(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert harness.main(["adt", "-k", "2", "--messages", "200", "--fsync", "off", "--json", str(a)]) == 0
    rows = json.loads(a.read_text())["rows"]
    assert rows[0]["messages"] == 200 and rows[0]["acks"] == {"AA": 200} and rows[0]["errors"] == 0
    assert rows[0]["server_cpu_us_per_msg"] > 0  # what a message cost the server it started
    assert (
        harness.main(["adt", "-k", "2", "--messages", "200", "--rate", "400", "--fsync", "off", "--json", str(b)]) == 0
    )
    paced = json.loads(b.read_text())["rows"][0]
    assert paced["msg_per_s"] <= 440  # the rate is a ceiling
    harness.main(["compare", str(a), str(b)])
    assert "B/A" in capsys.readouterr().out
    c = tmp_path / "c.json"
    argv = ["cfind", "--items", "60", "-m", "2", "--queries", "6", "--assoc", "both", "--json", str(c)]
    assert harness.main(argv) == 0
    rows = json.loads(c.read_text())["rows"]
    by = {(r["query"], r["assoc"]): r for r in rows}
    assert by[("today", "held")]["queries"] + by[("patient", "held")]["queries"] + by[("name", "held")]["queries"] == 12
    assert all(r["errors"] == 0 for r in rows)
    assert by[("patient", "fresh")]["matches"] in (0, 1.0) and by[("patient", "held")]["queries"] > 0


def test_replaying_a_directory_of_real_messages(tmp_path):
    out = tmp_path / "r.json"
    argv = ["adt", "-k", "1", "--messages", "30", "--replay", "tests/corpus/hl7", "--fsync", "off", "--json", str(out)]
    assert harness.main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["messages"] == 30 and sum(row["acks"].values()) == 30


def test_ebw_bench_is_the_entry_point(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ebw",
            "bench",
            "adt",
            "-k",
            "1",
            "--messages",
            "50",
            "--fsync",
            "off",
            "--json",
            str(tmp_path / "e.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "msg_per_s" in out.stdout and json.loads((tmp_path / "e.json").read_text())["rows"][0]["messages"] == 50


def test_process_tree_cpu_counts_the_children(tmp_path):
    """The server's CPU figure is its supervisor's and every process under it."""
    import subprocess
    import sys
    import time

    from bench.load import process_tree_cpu

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(30)"
    code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {spin!r}])\n{spin}"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while process_tree_cpu(parent.pid) < 1.1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_tree_cpu(parent.pid) >= 1.1  # 0.6 s each, parent and child
        assert process_tree_cpu(2**22 + 7) == 0.0  # no such process
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


def test_the_throwaway_server_leaves_nothing_behind():
    """Each run's `ebw serve` gets a fresh data directory; stopping it removes the
    directory (a 20,000-message run leaves ~270 MB of LMDB), and stopping twice is harmless."""
    import os

    from bench.load import Server

    server = Server(workers=1, fsync="off")
    assert os.path.isdir(server.dir + "/data")
    server.stop()
    assert not os.path.exists(server.dir) and server.proc.returncode is not None
    server.stop()


def test_free_ports_are_never_handed_out_twice():
    """A server's three listeners get three different ports (the kernel may give the
    port just closed again: once a test server refused to start over it)."""
    from bench.peers import free_port

    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200


def test_the_store_ceiling_does_the_work_it_times(tmp_path, capsys):
    """`ebw bench ceiling` runs the server's read, apply and commit path in one and two
    processes on one LMDB environment: every message it counts is in the journal."""
    out = tmp_path / "ceiling.json"
    assert harness.main(["ceiling", "--messages", "40", "-p", "1", "-p", "2", "-b", "8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["fsync"], r["processes"]) for r in rows] == [("on", 1), ("on", 2), ("off", 1), ("off", 2)]
    for r in rows:
        assert r["stored"] == 40 * r["processes"]
        assert r["msg_per_s"] > 0 and r["commit_ms"] > 0 and r["cpu_us_per_msg"] > 0
    assert "msg_per_s" in capsys.readouterr().out
