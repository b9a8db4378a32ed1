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


def _header(msh: bytes):
    return parse(msh + b"\rEVN|A04\rPID|1||555^^^H^MR\r").header


def test_control_bytes_in_copied_fields_become_hex_escapes():
    h = _header(b"MSH|^~\\&|SEND\x0bAPP|FAC|EBW|GENHOSP|20261128||ADT^A04|CID\x1c|P\x7f|2.5.1\x00")
    out = ack.build(h, "AA")
    assert out.count(b"\r") == 2 and not set(out.replace(b"\r", b"")) & ack.CONTROL_BYTES
    msh, msa = (seg.split(b"|") for seg in out.split(b"\r")[:2])
    assert msh[4] == b"SEND\\X0B\\APP"
    assert msh[10:12] == [b"P\\X7F\\", b"2.5.1\\X00\\"]
    assert msa == [b"MSA", b"AA", b"CID\\X1C\\"]


def test_copied_fields_keep_their_components_and_escape_sequences():
    h = _header(b"MSH|^~\\&|APP^1.2.3^ISO|FAC&X~Y|EBW|GENHOSP|20261128||ADT^A04|C\\F\\ID|P|2.5.1")
    msh, msa = (seg.split(b"|") for seg in ack.build(h, "AA").split(b"\r")[:2])
    assert msh[4:6] == [b"APP^1.2.3^ISO", b"FAC&X~Y"]
    assert msa[2] == b"C\\F\\ID"


def test_error_text_is_escaped():
    h = parse(corpus("001_a04_register.hl7")).header
    out = ack.build(h, "AE", 207, "two\r\nlines | a^b~c\\d&e é")
    assert out.count(b"\r") == 3
    err = out.split(b"\r")[2].split(b"|")
    assert err[8] == b"two\\X0D\\\\X0A\\lines \\F\\ a\\S\\b\\R\\c\\E\\d\\T\\e ?"


def test_restate():
    std, hashes = b"|^~\\&", b"#^~\\&"
    assert ack.restate(b"A^B~C\\F\\D&E", std, std) == b"A^B~C\\F\\D&E"  # same delimiters: as received
    assert ack.restate(b"A\rB\nC", std, std) == b"A\\X0D\\B\\X0A\\C"
    assert ack.restate(b"A|B", hashes, std) == b"A\\F\\B"  # data in a #-separated message
    assert ack.restate(b"A$B%C!E!D@", b"#$%!@", std) == b"A^B~C\\E\\D&"  # other delimiters, same roles
    assert ack.restate(b"A^B", b"#^~^&", std) == b"A^B"  # one byte, two roles: component wins
    assert ack.restate(b"A\nB", b"|\n~\\&", std) == b"A^B"  # an LF component separator
    assert ack.escape_text("a|b\x1c", std) == b"a\\F\\b\\X1C\\"


def test_ack_separators():
    for usable in (b"|^~\\&", b"#^~\\&", b"!$%@/", b"|^~\\_"):
        assert ack.ack_separators(usable) == usable
    for unusable in (
        b"~^~\\&",  # the repetition character is the field separator
        b"+^~\\&",  # the sign of MSH-7's UTC offset
        b"|^~\\.",  # in MSH-12 2.5.1
        b"\x1c^~\\&",  # MLLP's end block
        b"|\n~\\&",  # a segment break
        b"|\xd8~\\&",  # not ASCII
        b"|A~\\&",  # a letter
        b"| ~\\&",  # a space
    ):
        assert ack.ack_separators(unusable) == b"|^~\\&"


def test_unusable_delimiters_are_answered_with_the_standard_ones():
    raw = corpus("001_a04_register.hl7").replace(b"|", b"+").replace(b"MSG00001", b"MSG|00001")
    h = parse(raw).header
    out = ack.build(h, "AA").split(b"\r")
    assert out[0].startswith(b"MSH|^~\\&|EBW|GENHOSP|EPIC|GENHOSP|")
    assert out[1] == b"MSA|AA|MSG\\F\\00001"
