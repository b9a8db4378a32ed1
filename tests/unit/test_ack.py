"""Original-mode ACKs."""

from __future__ import annotations

from ebw.hl7 import ack
from ebw.hl7.adt import parse
from tests.conftest import corpus


def test_aa_swaps_sender_and_receiver_and_echoes_control_id():
    h = parse(corpus("001_a04_register.hl7")).header
    out = ack.build(h, "AA").split(b"\r")
    msh = out[0].split(b"|")
    assert msh[:6] == [b"MSH", b"^~\\&", b"EBW", b"GENHOSP", b"EPIC", b"GENHOSP"]
    assert msh[8] == b"ACK^A04^ACK"
    assert msh[10:12] == [b"P", b"2.5.1"]
    assert msh[9] and msh[9] != b"MSG00001" and len(msh[9]) <= 20
    assert out[1] == b"MSA|AA|MSG00001"
    assert not any(s.startswith(b"ERR") for s in out)


def test_custom_separators_are_kept():
    raw = corpus("001_a04_register.hl7").replace(b"|", b"#").replace(b"MSH#^~\\&", b"MSH#^~\\&")
    h = parse(raw).header
    out = ack.build(h, "AE", 207, "x").split(b"\r")
    assert out[0].startswith(b"MSH#^~\\&#")
    assert out[1] == b"MSA#AE#MSG00001"
    assert out[2].startswith(b"ERR###207^")  # ERR-1 empty, ERR-2 empty location, ERR-3 code


def test_err_segment_fields():
    h = parse(corpus("001_a04_register.hl7")).header
    err = ack.build(h, "AR", 201, "Trigger event not supported", "MSH^1^9^1^2").split(b"\r")[2].split(b"|")
    assert err[0] == b"ERR" and err[2] == b"MSH^1^9^1^2"
    assert err[3] == b"201^Unsupported event code^HL70357"
    assert err[4] == b"E" and err[8] == b"Trigger event not supported"


def test_unreadable_message_gets_ar_with_default_separators():
    out = ack.build(None, "AR", 100).split(b"\r")
    assert out[0].startswith(b"MSH|^~\\&|EBW|")
    assert out[1] == b"MSA|AR|"


def test_control_ids_are_unique():
    assert len({ack.control_id() for _ in range(10000)}) == 10000


def test_charset_is_copied_into_msh_18():
    raw = corpus("001_a04_register.hl7").replace(b"|P|2.5.1", b"|P|2.5.1||||||8859/1")
    h = parse(raw).header
    assert h.charset == b"8859/1"
    msh = ack.build(h, "AA").split(b"\r")[0].split(b"|")
    assert len(msh) == 18 and msh[17] == b"8859/1"  # split index n-1 is MSH-n
