"""MLLP framing: whole, byte by byte, random chunks, several frames per read, garbage, caps."""

from __future__ import annotations

import random

import pytest

from ebw.mllp import FrameReader, frame
from tests.conftest import CORPUS

MESSAGES = [p.read_bytes() for p in sorted(CORPUS.glob("*.hl7"))]
STREAM = b"".join(frame(m) for m in MESSAGES)


def feed_all(reader: FrameReader, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        out.extend(reader.feed(c))
    return out


def test_whole_stream_in_one_read():
    assert FrameReader().feed(STREAM) == MESSAGES


def test_byte_by_byte():
    assert feed_all(FrameReader(), [bytes([b]) for b in STREAM]) == MESSAGES


@pytest.mark.parametrize("seed", range(20))
def test_random_chunks(seed):
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(STREAM):
        n = rng.randint(1, 200)
        chunks.append(STREAM[i : i + n])
        i += n
    assert feed_all(FrameReader(), chunks) == MESSAGES


def test_split_inside_end_block():
    f = frame(MESSAGES[0])
    assert feed_all(FrameReader(), [f[:-1], f[-1:]]) == [MESSAGES[0]]


def test_bytes_before_start_block_are_discarded_and_counted():
    r = FrameReader()
    assert r.feed(b"\r\n  junk" + frame(MESSAGES[0])) == [MESSAGES[0]]
    assert r.discarded == 8


def test_lone_fs_inside_message_is_data():
    msg = b"MSH|^~\\&|A\x1cB\r"
    assert FrameReader().feed(frame(msg)) == [msg]


def test_oversized_frame_stops_the_reader_but_keeps_earlier_frames():
    r = FrameReader(max_frame=2048)
    big = b"MSH|^~\\&|X|Y|||||BIG1\r" + b"Z" * 5000
    out = r.feed(frame(MESSAGES[0]) + frame(big) + frame(MESSAGES[1]))
    assert out == [MESSAGES[0]]
    assert r.error is not None and "2048" in str(r.error)
    assert r.partial.startswith(b"MSH|^~\\&|X|Y|||||BIG1")
    assert r.feed(frame(MESSAGES[1])) == []


def test_oversized_frame_detected_before_its_end_arrives():
    r = FrameReader(max_frame=1024)
    r.feed(b"\x0bMSH|^~\\&|" + b"A" * 1000)
    assert r.error is None
    r.feed(b"A" * 100)
    assert r.error is not None


def test_junk_outside_frames_is_counted_but_line_ends_are_not():
    r = FrameReader()
    assert r.feed(b"\r\n\x0bA\x1c\r\n\x0bB\x1c\r") == [b"A", b"B"]
    assert (r.discarded, r.junk) == (3, 0)  # CR LF before the first frame, LF after it
    assert r.feed(b"HELLO\x0bC\x1c\r") == [b"C"]
    assert (r.discarded, r.junk) == (8, 1)
    assert r.feed(b"XX") == [] and r.feed(b"YY\x0bD\x1c\r") == [b"D"]
    assert (r.discarded, r.junk) == (12, 3)  # a run split over two reads counts per read


@pytest.mark.parametrize("split", [None, 1, 7, 40])
def test_a_frame_cut_short_by_a_new_start_block_is_dropped(split):
    """The audit's case: a sender aborts a frame and sends the next message in a new
    frame.  The cut-off message must not be read as one message with the next one's
    MSH in its PV1 (and answered AA); the next message is read whole."""
    a, b = MESSAGES[0], MESSAGES[1]
    stream = b"\x0b" + a[: len(a) // 2] + frame(b)
    chunks = [stream] if split is None else [stream[i : i + split] for i in range(0, len(stream), split)]
    r = FrameReader()
    assert feed_all(r, chunks) == [b]
    assert r.junk == 1 and r.discarded == len(a) // 2
    assert r.feed(frame(a)) == [a]  # and the reader goes on as before
