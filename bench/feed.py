"""Synthetic, deterministic HL7 v2.5.1 ADT feed (invented people, never real patients).

``Feed(seed).message(event, patient)`` builds a ~1.1 kB, 17-segment message
like an enterprise EHR sends; ``Feed.stream(n)`` a realistic mix of admits,
transfers, updates and discharges over a pool of encounters.  Used by the
load harness and by the tests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

FAMILY = [
    "SMITH",
    "JOHNSON",
    "GARCÍA",
    "MÜLLER",
    "NGUYEN",
    "O'BRIEN",
    "KOWALSKI",
    "DUBOIS",
    "ÅSTRÖM",
    "ROSSI",
    "TANAKA",
    "PATEL",
    "SILVA",
    "IVANOV",
    "MARTIN",
    "BROWN",
    "LÓPEZ",
    "SCHMIDT",
    "KIM",
    "JØRGENSEN",
]
GIVEN = [
    "JANE",
    "JOHN",
    "MARÍA",
    "JOSÉ",
    "LEA",
    "ZOË",
    "AHMED",
    "ANNA",
    "LUCAS",
    "CHLOÉ",
    "NOAH",
    "SØREN",
    "EMMA",
    "OLIVER",
    "AMÉLIE",
    "LIAM",
    "MIA",
    "ETHAN",
    "ISABELLA",
    "FRANÇOIS",
]
FACILITIES = ["GENHOSP", "NORTHMC", "WESTCLINIC", "CHILDRENS"]
UNITS = ["ED", "ICU", "MED1", "SURG2", "L&D", "PEDS", "ORTHO", "CARD"]
CLASSES = ["E", "E", "E", "I", "I", "O"]


@dataclass
class Encounter:
    mrn: str
    visit: str
    facility: str
    family: str
    given: str
    birth: str
    sex: str
    unit: str
    room: int
    bed: str
    patient_class: str


class Feed:
    def __init__(self, seed: int = 1, prefix: str = "") -> None:
        self.rng = random.Random(seed)
        self.seq = 0
        self.prefix = prefix
        self.open: list[Encounter] = []
        self.n_enc = 0

    def new_encounter(self) -> Encounter:
        r = self.rng
        self.n_enc += 1
        n = self.n_enc
        return Encounter(
            mrn=f"{self.prefix}M{n:08d}",
            visit=f"{self.prefix}V{n:09d}",
            facility=r.choice(FACILITIES),
            family=r.choice(FAMILY),
            given=r.choice(GIVEN),
            birth=f"{r.randint(1930, 2024)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}",
            sex=r.choice("MFFMU"),
            unit=r.choice(UNITS),
            room=r.randint(1, 60),
            bed=r.choice("ABCD"),
            patient_class=r.choice(CLASSES),
        )

    def message(self, event: str, e: Encounter, control_id: str | None = None) -> bytes:
        self.seq += 1
        cid = control_id or f"{self.prefix}C{self.seq:010d}"
        ts = f"2026112{self.rng.randint(0, 8)}{self.rng.randint(0, 23):02d}{self.rng.randint(0, 59):02d}00"
        structure = {"A03": "ADT_A03", "A02": "ADT_A02"}.get(event, "ADT_A01")
        unit = e.unit.replace("&", "\\T\\")
        segs = [
            f"MSH|^~\\&|EPIC|{e.facility}|EBW|{e.facility}|{ts}-0500||ADT^{event}^{structure}|{cid}|P|2.5.1||||||UNICODE UTF-8",
            f"EVN|{event}|{ts}-0500|||U{self.rng.randint(100, 999)}^CLERK^ANN|{ts}-0500",
            f"PID|1||{e.mrn}^^^{e.facility}&1.2.840.114350.1.13.{FACILITIES.index(e.facility)}&ISO^MR~{self.rng.randint(100000000, 999999999)}^^^SSA^SS"
            f"||{e.family}^{e.given}^{chr(65 + self.rng.randint(0, 25))}^^^^L||{e.birth}|{e.sex}||2106-3^White^HL70005"
            f"|{self.rng.randint(1, 9999)} MAIN ST^^SPRINGFIELD^IL^{self.rng.randint(10000, 99999)}^USA^H||^PRN^PH^^^555^{self.rng.randint(1000000, 9999999)}"
            f"||ENG|M|CHR|{e.visit}A^^^{e.facility}^AN|||N||||||||N",
            "PD1|||GENERAL PRACTICE^^1234|1234^PRIMARY^PAT^^^DR",
            f"NK1|1|{e.family}^SPOUSE^^^^^L|SPO^Spouse^HL70063|{self.rng.randint(1, 9999)} MAIN ST^^SPRINGFIELD^IL|^PRN^PH^^^555^{self.rng.randint(1000000, 9999999)}",
            f"PV1|1|{e.patient_class}|{unit}^{e.room}^{e.bed}^{e.facility}^^^{e.facility}^{self.rng.randint(1, 6)}||||"
            f"{self.rng.randint(1000, 9999)}^HOUSE^GREGORY^^^DR^MD^^^^^^NPI|{self.rng.randint(1000, 9999)}^WILSON^JAMES^^^DR^MD||MED|||||||"
            f"{self.rng.randint(1000, 9999)}^CUDDY^LISA^^^DR|{e.patient_class}|{e.visit}^^^{e.facility}^VN|SP||||||||||||||||||{e.facility}||||||{ts}-0500",
            "PV2|||R10.9^Abdominal pain^I10||||||||||||||||||||N",
            "ROL|1|AD|PP^Primary Care Provider^HL70443|1234^PRIMARY^PAT^^^DR",
            "OBX|1|NM|8302-2^Body height^LN||170|cm^centimeter^UCUM|||||F",
            "OBX|2|NM|29463-7^Body weight^LN||72|kg^kilogram^UCUM|||||F",
            "AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives",
            "DG1|1||R10.9^Abdominal pain, unspecified^I10|||A",
            "GT1|1||GUARANTOR^SELF||1 MAIN ST^^SPRINGFIELD^IL",
            "IN1|1|BCBS^Blue Cross^HL70072|12345|BLUE CROSS||||GRP001|||||||||||||||||||||||||||||||||POL123456",
            "IN2|1||EMPLOYER INC",
            "ZPV|custom|segment|data",
            "ACC|20261127^^|01^Motor Vehicle",
        ]
        return ("\r".join(segs) + "\r").encode("utf-8")

    def stream(self, n: int, open_target: int = 1000) -> Iterator[tuple[str, bytes]]:
        """n messages: admits until ``open_target`` encounters are open, then a mix
        (~30% admit/register, 25% transfer, 30% update, 15% discharge)."""
        r = self.rng
        for _ in range(n):
            if len(self.open) < open_target // 2:
                roll = 0.0
            else:
                roll = r.random()
            if roll < 0.30 or not self.open:
                e = self.new_encounter()
                self.open.append(e)
                ev = "A04" if e.patient_class in ("E", "O") else "A01"
            elif roll < 0.55:
                e = r.choice(self.open)
                e.unit, e.room = r.choice(UNITS), r.randint(1, 60)
                ev = "A02"
            elif roll < 0.85:
                e = r.choice(self.open)
                ev = "A08"
            else:
                e = self.open.pop(r.randrange(len(self.open)))
                ev = "A03"
            yield ev, self.message(ev, e)
