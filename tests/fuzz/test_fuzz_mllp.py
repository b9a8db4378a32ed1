"""Fuzzing the MLLP deframer (``ebw.mllp.FrameReader``) with hostile byte streams cut
into arbitrary chunks.

Streams mix start blocks, end blocks, lone 0x1C and CR, garbage, HL7 messages and
frames just under, at and over the size cap.  Properties, for every chunking:

* the frames returned are those of an independent one-shot reading of the documented
  rules (``expected`` below), so the same whatever the chunking, and none is longer
  than ``max_frame``;
* a frame over ``max_frame`` is reported as documented: ``error`` is a
  ``FramingError`` naming the cap, ``partial`` holds the first bytes of that frame
  (at most 4096, at least ``min(4096, max_frame + 1)``), the frames before it are
  returned, and nothing after it ever is;
* bytes outside frames, and frames cut short by a new start block (within the cap),
  are counted in ``discarded`` and not kept;
* memory stays bounded: between feeds nothing is buffered outside a frame, at most
  ``max_frame + 1`` bytes inside one (a frame at the cap plus the 0x1C of a split end
  block), nothing after an error.

Found and fixed (regression test at the end): a frame of exactly ``max_frame`` bytes
was rejected when a read ended between the 0x1C and the 0x0D of its end block (the
reader counted the 0x1C as frame data).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from ebw.errors import FramingError
from ebw.mllp import EB, SB, FrameReader, frame
from tests.fuzz.harness import counted, fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = [p.read_bytes() for p in sorted((ROOT / "tests/corpus/hl7").glob("*.hl7"))]
PARTIAL_MAX = 4096  # FrameReader keeps this much of an oversized frame

# --------------------------------------------------------------------------- the rules, one shot


class Expected:
    """What the documented rules give for the whole ``stream`` read at once."""

    def __init__(self, stream: bytes, max_frame: int) -> None:
        self.frames: list[bytes] = []
        self.discarded = 0
        self.error_at = -1  # offset of the first byte of the oversized frame
        pos, n = 0, len(stream)
        while pos < n:
            sb = stream.find(SB, pos)
            if sb < 0:
                self.discarded += n - pos
                return
            self.discarded += sb - pos
            start = sb + 1
            eb = stream.find(EB, start)
            restart = stream.find(SB, start, eb if eb >= 0 else n)
            if 0 <= restart - start <= max_frame:  # cut short by a new start block: dropped
                self.discarded += restart - start
                pos = restart
                continue
            end = eb if eb >= 0 else n - (1 if stream.endswith(b"\x1c") and n > start else 0)
            if end - start > max_frame:  # over the cap, complete or not
                self.error_at = start
                return
            if eb < 0:
                return  # an incomplete frame, within the cap: waits for more
            self.frames.append(stream[start:eb])
            pos = eb + 2


def read(stream: bytes, cuts: list[int], max_frame: int) -> tuple[FrameReader, list[bytes]]:
    """Feed ``stream`` cut at ``cuts``; check the bounds after every feed."""
    reader = FrameReader(max_frame)
    frames: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        was_failed = reader.error is not None
        got = reader.feed(stream[prev:cut])
        prev = cut
        assert all(isinstance(f, bytes) and len(f) <= max_frame for f in got)
        if was_failed:
            assert got == []  # later bytes are ignored
        frames.extend(got)
        if reader.error is not None or not reader.in_frame:
            assert len(reader.buf) == 0
        else:
            assert len(reader.buf) <= max_frame + 1
    return reader, frames


def check(stream: bytes, cuts: list[int], max_frame: int) -> None:
    cuts = sorted({c for c in cuts if 0 < c < len(stream)})
    want = Expected(stream, max_frame)
    reader, frames = read(stream, cuts, max_frame)
    assert frames == want.frames
    assert reader.discarded == want.discarded
    if want.error_at < 0:
        assert reader.error is None and reader.partial == b""
    else:
        assert isinstance(reader.error, FramingError) and str(max_frame) in str(reader.error)
        partial = reader.partial
        assert stream.startswith(partial, want.error_at)
        assert min(PARTIAL_MAX, max_frame + 1) <= len(partial) <= PARTIAL_MAX
        assert reader.feed(frame(b"MSH|^~\\&|")) == []


# --------------------------------------------------------------------------- strategies


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, int]:
    """(stream, max_frame): pieces of MLLP and garbage, frames near the cap."""
    max_frame = draw(st.integers(1, 48) | st.sampled_from([PARTIAL_MAX - 1, PARTIAL_MAX, PARTIAL_MAX + 10]))
    near_cap = st.integers(max(max_frame - 2, 0), max_frame + 2)
    piece = st.one_of(
        st.sampled_from([SB, EB, b"\x1c", b"\r", b"\x0b\x0b", b"\x1c\x1c\r", b"\r\x1c", SB + EB]),
        st.binary(max_size=12),
        st.sampled_from(MESSAGES).map(frame),
        near_cap.map(lambda k: frame(b"M" * k)),
        st.tuples(near_cap, st.binary(max_size=3)).map(lambda t: frame(b"\x1c\x0b\r" * (t[0] // 3) + t[1])),
        near_cap.map(lambda k: SB + b"X" * k + b"\x1c"),  # frame at the cap whose end block is split
    )
    stream = b"".join(draw(st.lists(piece, max_size=12)))
    return stream, max_frame


def chunkings(stream: bytes) -> st.SearchStrategy[list[int]]:
    n = len(stream)
    return st.one_of(
        st.lists(st.integers(0, n), max_size=20),
        st.just(list(range(n))),  # byte by byte
        st.just([i + 1 for i in range(n) if stream[i] == 0x1C]),  # every read ends after a 0x1C
    )


# --------------------------------------------------------------------------- properties


@fuzz_settings(400)
@given(data=st.data())
@counted
def test_any_chunking_same_frames(data: st.DataObject) -> None:
    stream, max_frame = data.draw(streams(), label="stream, max_frame")
    cuts = data.draw(chunkings(stream), label="cuts")
    check(stream, cuts, max_frame)
    check(stream, [], max_frame)  # one read


@fuzz_settings(200)
@given(data=st.binary(max_size=3000), size=st.integers(1, 300), max_frame=st.sampled_from([1, 16, 1024, 1 << 20]))
@example(data=b"\x0b" + b"A" * 5000, size=7, max_frame=1024)
@counted
def test_arbitrary_bytes_in_fixed_chunks(data: bytes, size: int, max_frame: int) -> None:
    check(data, list(range(size, len(data), size)), max_frame)


@fuzz_settings(50)
@given(garbage=st.binary(max_size=512).filter(lambda b: SB not in b), reads=st.integers(1, 2000))
@counted
def test_garbage_is_not_buffered(garbage: bytes, reads: int) -> None:
    """Garbage without a start block, however much arrives, is counted and dropped."""
    reader = FrameReader(64)
    for _ in range(reads):
        assert reader.feed(garbage) == []
        assert len(reader.buf) == 0 and not reader.in_frame
    assert reader.discarded == reads * len(garbage) and reader.error is None


# --------------------------------------------------------------------------- regression


def test_frame_at_cap_with_split_end_block() -> None:
    """``FrameReader.feed`` failed a frame once ``len(buf) > max_frame`` without an end
    block; when a read ended with the 0x1C of the end block, the buffer held the frame
    plus that 0x1C.  Fixed in ebw/mllp.py: a trailing 0x1C is not counted."""
    message = b"M" * 16
    whole = FrameReader(16)
    assert whole.feed(frame(message)) == [message] and whole.error is None
    split = FrameReader(16)
    f = frame(message)
    assert split.feed(f[:-1]) + split.feed(f[-1:]) == [message]
    assert split.error is None
