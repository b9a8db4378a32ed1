"""C-FIND matching throughput: reference vs Cython over 10,000 synthetic items.

Run: ``pytest bench/bench_match.py --benchmark-only --benchmark-group-by=group``
(the file is named ``bench_*``, so pass it explicitly).  ``extra_info`` carries
``items_per_s`` (items matched per second, from the mean) and ``matches``.

Items are invented and deterministic (fixed seed); SPS start dates are spread
over today +/- 3 days so the "today" query selects about a seventh of them.
"""

from __future__ import annotations

import datetime
import random
import types

import pytest

from ebw.dicom import _match_ref

fast = pytest.importorskip("ebw._fast.cfind")

N_ITEMS = 10_000
SPS = "ScheduledProcedureStepSequence."
SYLLABLES = [
    "SMI",
    "TH",
    "KOR",
    "VAL",
    "EN",
    "BRO",
    "DAN",
    "MER",
    "IS",
    "OL",
    "TAR",
    "QUI",
    "NE",
    "LO",
    "ZA",
]
GIVEN = ["ALEX", "SAM", "KIM", "ROBIN", "JO", "MAX", "NOA", "RENE", "ELI", "TONI"]
MODALITIES = ["US", "US", "US", "CT", "MR", "CR", "XA", "DX"]


def make_items(n: int = N_ITEMS, seed: int = 20261128) -> list[dict[str, str]]:
    rng = random.Random(seed)
    today = datetime.date.today()
    items = []
    for i in range(n):
        birth = f"{rng.randint(1930, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        start_time = f"{rng.randint(7, 18):02d}{rng.choice(['00', '15', '30', '45'])}00"
        family = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        start = today + datetime.timedelta(days=rng.randint(-3, 3))
        items.append(
            {
                "PatientName": f"{family}^{rng.choice(GIVEN)}^{rng.choice(['', 'Q', 'J'])}",
                "PatientID": f"{rng.randrange(10**6):06d}",
                "PatientBirthDate": birth,
                "PatientSex": rng.choice("MFO"),
                "AccessionNumber": f"EB{i:012d}",
                "StudyInstanceUID": f"1.2.826.0.1.3680043.10.999.{i}",
                "RequestedProcedureID": f"RP{i:08d}",
                SPS + "Modality": rng.choice(MODALITIES),
                SPS + "ScheduledStationAETitle": rng.choice(["US1", "US2", "CT1", "US1\\US2", ""]),
                SPS + "ScheduledProcedureStepStartDate": start.strftime("%Y%m%d"),
                SPS + "ScheduledProcedureStepStartTime": start_time,
                SPS + "ScheduledProcedureStepID": f"SPS{i:08d}",
            }
        )
    return items


ITEMS = make_items()


def _queries() -> dict[str, list[tuple[str, str, str]]]:
    today = datetime.date.today().strftime("%Y%m%d")
    return {
        "today+modality": [
            ("PatientName", "PN", ""),
            ("PatientID", "LO", ""),
            (SPS + "Modality", "CS", "US"),
            (SPS + "ScheduledProcedureStepStartDate", "DA", today),
            (SPS + "ScheduledProcedureStepStartTime", "TM", ""),
            (SPS + "ScheduledStationAETitle", "AE", ""),
        ],
        "patient-id": [("PatientName", "PN", ""), ("PatientID", "LO", ITEMS[4321]["PatientID"])],
        "name-SMI*": [("PatientName", "PN", "SMI*"), ("PatientID", "LO", "")],
    }


QUERIES = _queries()
IMPLS = {"ref": _match_ref, "fast": fast}


@pytest.mark.parametrize("impl_name", ["ref", "fast"])
@pytest.mark.parametrize("query_name", list(QUERIES))
def test_filter_items(benchmark, query_name: str, impl_name: str) -> None:
    impl: types.ModuleType = IMPLS[impl_name]
    benchmark.group = "cfind-match"
    q = impl.compile_query(QUERIES[query_name])
    result = benchmark(impl.filter_items, q, ITEMS)
    # both implementations select the same items
    assert result == _match_ref.filter_items(_match_ref.compile_query(QUERIES[query_name]), ITEMS)
    assert result, "the query should select something"
    benchmark.extra_info["matches"] = len(result)
    if benchmark.stats is not None:
        benchmark.extra_info["items_per_s"] = round(len(ITEMS) / benchmark.stats.stats.mean)
