"""HL7 scan micro-benchmarks (group "hl7-scan"): one synthetic ADT^A01 message
through the Cython scanner, its pure-Python reference, python-hl7 and hl7apy; and
(group "adt-read") read into an encounter change by the Cython ADT reader and its
reference.

    python -m pytest bench/bench_scan.py --benchmark-only -q

The message is invented and fixed (~1.1 kB, 17 segments): no real patient data.
"""

from __future__ import annotations

import pytest

from ebw._fast import hl7scan as fast
from ebw.hl7 import _scan_ref as ref

SEGMENTS = [
    b"MSH|^~\\&|DEMOEHR|DEMOHOSP|EBW|DEMOHOSP|20240102153000-0500||ADT^A01^ADT_A01|"
    b"MSG0000000042|P|2.5.1|||AL|NE||UNICODE UTF-8",
    b"EVN|A01|20240102153000-0500|||u123^CLERK^ANN|20240102152500-0500",
    b"PID|1||900001^^^DEMOHOSP&1.2.3.4.5&ISO^MR~777000111^^^STATE^PI||SAMPLE^ROBIN^Q^^MS^^L||"
    b"19800101|F|||12 TEST LANE^^SPRINGFIELD^ST^00000^USA^H||^PRN^PH^^^555^0100001|||S||"
    b"AC900001^^^DEMOHOSP^AN",
    b"PD1|||DEMO CLINIC^^1001|4321^FAMILY^PAT",
    b"NK1|1|SAMPLE^CHRIS|SPO^Spouse^HL70063||^PRN^PH^^^555^0100002",
    b"NK1|2|SAMPLE^JORDAN|CHD^Child^HL70063",
    b"PV1|1|I|WARD1^101^A^DEMOHOSP^^^MAIN^2||||1234^HOUSE^DEMO^^^DR|5678^REFER^SAM^^^DR||MED|||"
    b"||||1234^HOUSE^DEMO^^^DR|IP|V900001^^^DEMOHOSP^VN|||||||||||||||||||DEMOHOSP||||||"
    b"20240102152500-0500",
    b"PV2|||CP^Chest pain^LOCAL||||||20240105",
    b"OBX|1|NM|8302-2^Body height^LN||170|cm^centimeter^UCUM|||||F",
    b"OBX|2|NM|29463-7^Body weight^LN||70|kg^kilogram^UCUM|||||F",
    b"AL1|1|DA|70618^Penicillin^RXNORM|MO|Rash",
    b"AL1|2|FA|256349002^Peanut^SCT|SV",
    b"DG1|1||R07.9^Chest pain^I10||20240102|A",
    b"DG1|2||I10^Hypertension^I10||20240102|W",
    b"GT1|1||SAMPLE^ROBIN^Q",
    b"IN1|1|PLAN01^Demo Plan|INS001|DEMO INSURANCE CO",
    b"ZPV|LOCAL|demo extension|42",
]
MESSAGE = b"\r".join(SEGMENTS) + b"\r"
TEXT = MESSAGE.decode("ascii")

assert len(SEGMENTS) == 17 and 1000 <= len(MESSAGE) <= 1200, len(MESSAGE)


def test_message_shape() -> None:
    seps, nseg, segments = fast.scan(MESSAGE)
    assert (seps, nseg) == (b"|^~\\&", 17)
    assert [sid for sid, _ in segments] == ["MSH", "EVN", "PID", "PD1", "PV1", "PV2"]
    assert ref.scan(MESSAGE) == (seps, nseg, segments)


@pytest.mark.benchmark(group="hl7-scan")
def test_scan_fast(benchmark) -> None:
    assert benchmark(fast.scan, MESSAGE)[1] == 17


@pytest.mark.benchmark(group="hl7-scan")
def test_scan_ref(benchmark) -> None:
    assert benchmark(ref.scan, MESSAGE)[1] == 17


@pytest.mark.benchmark(group="hl7-scan")
def test_python_hl7_parse(benchmark) -> None:
    hl7 = pytest.importorskip("hl7")
    assert len(benchmark(hl7.parse, TEXT)) == 17


@pytest.mark.benchmark(group="hl7-scan")
def test_hl7apy_parse_message(benchmark) -> None:
    parser = pytest.importorskip("hl7apy.parser")
    msg = benchmark(parser.parse_message, TEXT, find_groups=False)
    assert msg.msh.msh_10.value == "MSG0000000042"


# Group "adt-read": the same message read into the Change the encounter index applies
# (scan included): the compiled reader against its reference.


@pytest.mark.benchmark(group="adt-read")
def test_adt_read_fast(benchmark) -> None:
    from ebw._fast import adtread

    assert benchmark(adtread.parse, MESSAGE).encounter_key == "V|DEMOHOSP|V900001"


@pytest.mark.benchmark(group="adt-read")
def test_adt_read_ref(benchmark) -> None:
    from ebw.hl7 import adt

    assert benchmark(adt.parse, MESSAGE).encounter_key == "V|DEMOHOSP|V900001"
