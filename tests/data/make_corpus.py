"""Writes the ADT corpus in tests/data/adt/ (run: python tests/data/make_corpus.py).

The files are committed; this script documents how each was made.  Every
message uses invented people.  Versions 2.3 to 2.8, CR/LF/CRLF, a BOM,
8859/1 and UTF-8, escapes, Z-segments, custom separators, missing trailing
fields, every lifecycle event EBW handles, and the error cases.
"""

from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parent / "adt"


def msg(
    event: str,
    cid: str,
    mrn: str,
    visit: str = "",
    *,
    name: str = "TEST^PAT",
    cls: str = "E",
    loc: str = "ED^1^A^GENHOSP",
    when: str = "20261128100000",
    version: str = "2.5.1",
    msh18: str = "",
    structure: str = "ADT_A01",
    account: str = "",
    pv1: bool = True,
    extra: list[str] | None = None,
    mrg: str | None = None,
    code: str = "ADT",
    pid3: str | None = None,
    birth: str = "19700101",
    sex: str = "F",
    service: str = "EM",
) -> str:
    msh9 = f"{code}^{event}" + (f"^{structure}" if version != "2.3" else "")
    msh = f"MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|{when}||{msh9}|{cid}|P|{version}"
    if msh18:
        msh += "||||||" + msh18
    segs = [msh, f"EVN|{event}|{when}"]
    ident = pid3 if pid3 is not None else f"{mrn}^^^GENHOSP^MR"
    acct = f"{account}^^^GENHOSP^AN" if account else ""
    segs.append(f"PID|1||{ident}||{name}||{birth}|{sex}||||||||||{acct}")
    segs += extra or []
    if mrg is not None:
        segs.append(f"MRG|{mrg}")
    if pv1:
        vn = f"{visit}^^^GENHOSP^VN" if visit else ""
        segs.append(f"PV1|1|{cls}|{loc}||||1234^HOUSE^GREGORY^^^DR|5678^WILSON^JAMES||{service}|||||||||{vn}")
    return "\r".join(segs) + "\r"


def corpus() -> dict[str, bytes]:
    m: dict[str, str | bytes] = {}
    # -- lifecycle of one ED encounter (patient L1, visit LV1)
    m["010_a04_register"] = msg("A04", "L01", "L1", "LV1", name="LIFE^ANNA", when="20261128100000")
    m["011_a08_update_name"] = msg("A08", "L02", "L1", "LV1", name="LIFE^ANNA^MARIE", when="20261128100100")
    m["012_a02_transfer"] = msg(
        "A02",
        "L03",
        "L1",
        "LV1",
        name="LIFE^ANNA^MARIE",
        loc="ICU^7^B^GENHOSP",
        when="20261128100200",
        structure="ADT_A02",
    )
    m["013_a12_cancel_transfer"] = msg(
        "A12", "L04", "L1", "LV1", name="LIFE^ANNA^MARIE", loc="", when="20261128100300", structure="ADT_A12"
    )
    m["014_a03_discharge"] = msg(
        "A03", "L05", "L1", "LV1", name="LIFE^ANNA^MARIE", when="20261128100400", structure="ADT_A03"
    )
    m["015_a13_cancel_discharge"] = msg("A13", "L06", "L1", "LV1", name="LIFE^ANNA^MARIE", when="20261128100500")
    m["016_a11_cancel_admit"] = msg(
        "A11", "L07", "L1", "LV1", name="LIFE^ANNA^MARIE", when="20261128100600", structure="ADT_A09"
    )
    # -- pre-admit (patient P1)
    m["020_a05_preadmit"] = msg("A05", "P01", "P1", "PV1A", cls="P", name="PRE^PAUL", structure="ADT_A05")
    m["021_a14_pending_admit"] = msg(
        "A14", "P02", "P1", "PV1A", cls="P", name="PRE^PAUL", structure="ADT_A05", when="20261128100100"
    )
    m["022_a38_cancel_preadmit"] = msg(
        "A38", "P03", "P1", "PV1A", name="PRE^PAUL", structure="ADT_A38", when="20261128100200"
    )
    m["023_a01_admit_v23"] = msg(
        "A01", "P04", "P2", "PV2A", cls="I", name="INPAT^IRIS", version="2.3", loc="MED1^22^A^GENHOSP"
    )
    m["024_a06_class_change_new_visit"] = msg(
        "A06",
        "P05",
        "P2",
        "PV2B",
        cls="I",
        name="INPAT^IRIS",
        structure="ADT_A06",
        mrg="P2^^^GENHOSP^MR||||PV2A^^^GENHOSP^VN",
        when="20261128100100",
        loc="MED1^22^A^GENHOSP",
    )
    m["025_a07_to_outpatient"] = msg(
        "A07",
        "P06",
        "P2",
        "PV2B",
        cls="O",
        name="INPAT^IRIS",
        structure="ADT_A06",
        when="20261128100200",
        loc="CLINIC^1^^GENHOSP",
    )
    # -- real-world formats (each its own patient R<n>)
    m["030_lf_separators"] = msg("A04", "R01", "R1", "RV1", name="LINEFEED^LUKE").replace("\r", "\n")
    m["031_crlf_separators"] = msg("A04", "R02", "R2", "RV2", name="CRLF^CARL").replace("\r", "\r\n")
    m["032_utf8_bom"] = b"\xef\xbb\xbf" + msg("A04", "R03", "R3", "RV3", name="BOM^BELLA").encode()
    m["033_latin1_8859_1"] = msg("A04", "R04", "R4", "RV4", name="MÜLLER^JOSÉ", msh18="8859/1").encode("latin_1")
    m["034_utf8_declared"] = msg("A04", "R05", "R5", "RV5", name="ÅSTRÖM^ZOË", msh18="UNICODE UTF-8").encode()
    m["035_escapes"] = msg(
        "A04", "R06", "R6", "RV6", name="O\\T\\BRIEN\\E\\SONS^MARY\\X41\\", loc="ED\\F\\X^1^A^GENHOSP"
    )
    m["036_z_segments"] = msg("A04", "R07", "R7", "RV7", name="ZED^ZACK", extra=["ZPD|custom|1", "ZPV|x^y~z|\\S\\"])
    m["037_v28_truncation_char"] = msg("A04", "R08", "R8", "RV8", name="EIGHT^EVA", version="2.8").replace(
        "MSH|^~\\&|", "MSH|^~\\&#|"
    )
    m["038_custom_separators"] = (
        msg("A04", "R09", "R9", "RV9", name="HASH^HANK").replace("|", "#").replace("MSH#^~\\&#", "MSH#^~\\&#")
    )
    m["039_missing_trailing_fields"] = (
        "MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128100000||ADT^A04|R10|P|2.4\r"
        "EVN|A04\rPID|1||R10^^^GENHOSP^MR||SHORT^SAM\rPV1|1|E\r"
    )
    m["040_account_number_only"] = msg("A04", "R11", "R11", "", name="ACCOUNT^ALI", account="ACC11")
    m["041_no_visit_no_account"] = msg("A04", "R12", "R12", "", name="NOVISIT^NORA")
    m["042_timestamps_fraction_offset"] = msg(
        "A04", "R13", "R13", "RV13", name="TIME^TOM", when="20261128100000.1234-0500"
    )
    m["043_timestamp_minutes_only"] = msg("A08", "R14", "R13", "RV13", name="TIME^TOMMY", when="202611281601")
    m["044_stale_update_ignored"] = msg("A08", "R15", "R13", "RV13", name="TIME^OLD", when="20261128090000")
    m["045_repeated_pid3_mr_second"] = msg(
        "A04", "R16", "", "RV16", name="REPEAT^RITA", pid3="999-99-9999^^^SSA^SS~R16^^^GENHOSP^MR"
    )
    m["046_a08_unknown_creates"] = msg("A08", "R17", "R17", "RV17", name="UPSERT^UMA")
    m["047_a03_unknown_recorded"] = msg("A03", "R18", "R18", "RV18", name="GONE^GUS", structure="ADT_A03")
    m["048_legal_name_repetition"] = msg("A04", "R19", "R19", "RV19", name="NICK^NICKY^^^^^N~LEGAL^LENA^^^^^L")
    m["049_explicit_null_birthdate"] = msg("A08", "R20", "R17", "RV17", name="UPSERT^UMA", birth='""')
    # -- person events (patient S1 with two encounters)
    m["050_a04_person_visit1"] = msg("A04", "S01", "S1", "SV1", name="PERSON^PETE")
    m["051_a04_person_visit2"] = msg("A04", "S02", "S1", "SV2", name="PERSON^PETE", loc="ED^2^B^GENHOSP")
    m["052_a31_update_person"] = msg(
        "A31", "S03", "S1", "", name="PERSON^PETER", structure="ADT_A05", when="20261128100100", pv1=False
    )
    m["053_a28_add_person"] = msg("A28", "S04", "S9", "", name="NEW^NED", structure="ADT_A05", pv1=False)
    m["054_a29_delete_person"] = msg(
        "A29", "S05", "S1", "", name="PERSON^PETER", structure="ADT_A21", when="20261128100200", pv1=False
    )
    # -- merges
    m["060_a04_old_mrn"] = msg("A04", "M01", "MOLD", "MV1", name="MERGE^MIA")
    m["061_a40_merge_patient"] = msg(
        "A40",
        "M02",
        "MNEW",
        "",
        name="MERGE^MIA",
        structure="ADT_A39",
        mrg="MOLD^^^GENHOSP^MR",
        pv1=False,
        when="20261128100100",
    )
    m["062_a04_old_mrn_2"] = msg("A04", "M03", "MOLD2", "MV2", name="MERGE^MAX")
    m["063_a34_merge_id_only"] = msg(
        "A34",
        "M04",
        "MNEW2",
        "",
        name="MERGE^MAX",
        structure="ADT_A30",
        mrg="MOLD2^^^GENHOSP^MR",
        pv1=False,
        when="20261128100100",
    )
    m["064_a04_account_keyed"] = msg("A04", "M05", "MACC", "", name="ACCT^AMY", account="OLDACCT")
    m["065_a35_merge_account"] = msg(
        "A35",
        "M06",
        "MACC",
        "",
        name="ACCT^AMY",
        account="NEWACCT",
        structure="ADT_A30",
        mrg="MACC^^^GENHOSP^MR||OLDACCT^^^GENHOSP^AN",
        pv1=False,
        when="20261128100100",
    )
    m["066_a04_both_old"] = msg("A04", "M07", "MB1", "", name="BOTH^BEN", account="BACC1")
    m["067_a36_merge_both"] = msg(
        "A36",
        "M08",
        "MB2",
        "",
        name="BOTH^BEN",
        account="BACC2",
        structure="ADT_A30",
        mrg="MB1^^^GENHOSP^MR||BACC1^^^GENHOSP^AN",
        pv1=False,
        when="20261128100100",
    )
    m["068_a04_legacy_old"] = msg("A04", "M09", "MLEG1", "MLV", name="LEGACY^LEO")
    m["069_a18_legacy_merge"] = msg(
        "A18",
        "M10",
        "MLEG2",
        "MLV",
        name="LEGACY^LEO",
        structure="ADT_A18",
        mrg="MLEG1^^^GENHOSP^MR",
        when="20261128100100",
    )
    m["070_a04_rename_old"] = msg("A04", "M11", "MREN1", "MRV", name="RENAME^RAY")
    m["071_a47_change_identifier"] = msg(
        "A47",
        "M12",
        "MREN2",
        "",
        name="RENAME^RAY",
        structure="ADT_A30",
        mrg="MREN1^^^GENHOSP^MR",
        pv1=False,
        when="20261128100100",
    )
    m["072_a04_two_to_merge_a"] = msg("A04", "M13", "MTWO1", "MTV1", name="TWO^TESS")
    m["073_a04_two_to_merge_b"] = msg("A04", "M14", "MTWO2", "MTV2", name="TWO^TARA")
    m["074_a40_two_pairs"] = (
        "MSH|^~\\&|EPIC|GENHOSP|EBW|GENHOSP|20261128100100||ADT^A40^ADT_A39|M15|P|2.5.1\r"
        "EVN|A40|20261128100100\r"
        "PID|1||MTWOX^^^GENHOSP^MR||TWO^TESS\rMRG|MTWO1^^^GENHOSP^MR\r"
        "PID|1||MTWOY^^^GENHOSP^MR||TWO^TARA\rMRG|MTWO2^^^GENHOSP^MR\r"
    )
    # -- deletes, ignored events and errors
    m["080_a04_to_delete"] = msg("A04", "D01", "D1", "DV1", name="DELETE^DAN")
    m["081_a23_delete_visit"] = msg(
        "A23", "D02", "D1", "DV1", name="DELETE^DAN", structure="ADT_A21", when="20261128100100"
    )
    m["082_a60_allergy_ignored"] = msg("A60", "D03", "D1", "", name="DELETE^DAN", structure="ADT_A60", pv1=False)
    m["083_orm_not_adt"] = msg("O01", "D04", "D1", "DV1", code="ORM", structure="ORM_O01")
    m["084_unknown_event"] = msg("Z99", "D05", "D1", "DV1")
    m["085_missing_pid3"] = msg("A04", "D06", "", "DV6", pid3="")
    m["086_not_hl7"] = b"Hello, this is not an HL7 message\r"
    m["087_duplicate_a04"] = msg("A04", "D07", "D7", "DV7", name="DUP^DORA")
    m["088_duplicate_resend_changed"] = msg("A04", "D07", "D7", "DV7", name="DUP^CHANGED")
    return {k: (v.encode("utf-8") if isinstance(v, str) else v) for k, v in m.items()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.hl7"):
        old.unlink()
    for name, data in corpus().items():
        (OUT / f"{name}.hl7").write_bytes(data)
    print(f"wrote {len(corpus())} messages to {OUT}")
