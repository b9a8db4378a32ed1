"""Duplicate messages (same sender, same MSH-10) are answered and never applied twice:
the encounter record keeps the ids of the messages that changed it, the ``seen`` db those
of other events and of encounters re-keyed away, pruned after the retention (real LMDB)."""

from __future__ import annotations

import time

from ebw import config, encounters
from ebw.hl7.adt import parse
from ebw.store import Store
from tests.data.make_corpus import msg

CFG = config.load({}).endpoint
EP = "default"


def _apply(store: Store, raw: str, now: float | None = None) -> str:
    with store.write() as txn:
        return encounters.apply(store, txn, EP, CFG, parse(raw.encode()), now or time.time()).outcome


def test_a_resent_encounter_message_is_a_duplicate_even_after_later_ones(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    first = msg("A01", "C0", "P1", "V1", when="20261128100000")
    assert _apply(store, first) == "created"
    for i in range(1, encounters.SEEN_KEPT):  # later messages: the first one's id is still kept
        assert _apply(store, msg("A08", f"C{i}", "P1", "V1", name=f"N{i}^X", when=f"202611281001{i:02d}")) == "updated"
    assert _apply(store, first) == "duplicate"
    with store.read() as txn:
        record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
        assert record is not None and record["patient"]["PatientName"].startswith(f"N{encounters.SEEN_KEPT - 1}")
        assert len(record["seen"]) == encounters.SEEN_KEPT
        assert txn.stat(store.db["seen"])["entries"] == 0  # no write of its own per message
    store.close()


def test_a_resend_is_a_duplicate_after_more_later_messages_than_the_record_keeps(tmp_path):
    """The ids a record no longer keeps go to the seen db: a resend with the same event
    time as the messages after it (minute-precision EVN-2, a queue replayed after an
    outage) must not re-open a discharged encounter."""
    store = Store(str(tmp_path), 16, sync=False)
    when = "202611281000"
    first = msg("A04", "E1", "P1", "V1", loc="ED^1^1^GENHOSP", when=when)
    assert _apply(store, first) == "created"
    for i in range(encounters.SEEN_KEPT):
        assert _apply(store, msg("A08", f"E{i + 2}", "P1", "V1", loc="ED^1^15^GENHOSP", when=when)) == "updated"
    assert _apply(store, msg("A03", "E99", "P1", "V1", loc="ED^1^15^GENHOSP", when=when)) == "a03"
    assert _apply(store, first) == "duplicate"
    with store.read() as txn:
        record = store.get_encounter(txn, EP, "V|GENHOSP|V1")
        assert record["status"] == "discharged" and record["visit"]["CurrentPatientLocation"] == "ED-1-15"
        assert len(record["seen"]) == encounters.SEEN_KEPT
        assert txn.stat(store.db["seen"])["entries"] == 2  # E1 and E2, pushed out of the record
    store.close()


def test_person_events_and_rekeyed_encounters_use_the_seen_db(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    assert _apply(store, msg("A01", "C1", "P1", "V1")) == "created"
    a31 = msg("A31", "C2", "P1", "", name="NEW^NAME", pv1=False, structure="ADT_A05")
    assert _apply(store, a31).startswith("person updated")
    assert _apply(store, a31) == "duplicate"
    a08 = msg("A08", "C3", "P1", "V1", name="LATER^NAME", when="20261128100500")
    assert _apply(store, a08) == "updated"
    mrg = "P1^^^GENHOSP^MR||||V1^^^GENHOSP^VN"
    a06 = msg("A06", "C4", "P1", "V2", mrg=mrg, structure="ADT_A06", when="20261128100600")
    assert _apply(store, a06) == "updated"  # visit V1 re-keyed to V2
    with store.read() as txn:
        assert store.get_encounter(txn, EP, "V|GENHOSP|V1") is None
    assert _apply(store, a06) == "duplicate"
    assert _apply(store, a08) == "duplicate"  # its record moved away: the id went to the seen db
    store.close()


def test_old_ids_are_pruned(tmp_path):
    store = Store(str(tmp_path), 16, sync=False)
    with store.write() as txn:
        for i in range(50):
            store.mark_seen(txn, f"default\0A\0B\0C{i:03d}".encode(), 1000.0 if i % 2 else 5000.0)
    start = b""
    for _ in range(10):  # in passes of 7
        with store.write() as txn:
            start = store.prune_seen(txn, before=2000.0, start=start, limit=7)
    with store.read() as txn:
        left = [bytes(k) for k, _v in txn.cursor(db=store.db["seen"])]
    assert left == [f"default\0A\0B\0C{i:03d}".encode() for i in range(0, 50, 2)]
    store.close()


def _apply_as_served(store: Store, raw: str, now: float | None = None) -> str:
    """As the server applies a message: with the digest of its content."""
    data = raw.encode()
    with store.write() as txn:
        change = parse(data)
        digest = encounters.content_digest(data)
        return encounters.apply(store, txn, EP, CFG, change, now or time.time(), digest=digest).outcome


def test_a_control_id_reused_for_another_message_is_applied(tmp_path):
    """A sender whose control ids start again (an interface engine reset) must not have
    its new messages dropped as duplicates: same sender and MSH-10 with other content
    is another message.  The same content is still a duplicate, MSH-7 made anew or not."""
    store = Store(str(tmp_path), 16, sync=False)
    first = msg("A04", "1", "P1", "V1", name="FIRST^PAT")
    assert _apply_as_served(store, first) == "created"
    assert _apply_as_served(store, first) == "duplicate"
    assert _apply_as_served(store, first.replace("20261128100000|", "20261128100500|", 1)) == "duplicate"
    assert _apply_as_served(store, msg("A04", "1", "P2", "V2", name="SECOND^PAT")) == "created"
    # person events keep their ids in the seen db: the same there
    a31 = msg("A31", "2", "P1", "", name="RENAMED^PAT", pv1=False, structure="ADT_A05")
    assert _apply_as_served(store, a31).startswith("person updated")
    assert _apply_as_served(store, a31) == "duplicate"
    assert _apply_as_served(store, msg("A04", "2", "P3", "V3", name="THIRD^PAT")) == "created"
    with store.read() as txn:
        assert {k for k in ("V|GENHOSP|V1", "V|GENHOSP|V2", "V|GENHOSP|V3") if store.get_encounter(txn, EP, k)} == {
            "V|GENHOSP|V1",
            "V|GENHOSP|V2",
            "V|GENHOSP|V3",
        }
    store.close()


def test_content_digest_ignores_the_msh_segment_only():
    a = msg("A04", "1", "P1", "V1").encode()
    assert encounters.content_digest(a) == encounters.content_digest(a.replace(b"20261128100000|", b"X|", 1))
    assert encounters.content_digest(a) == encounters.content_digest(b"\xef\xbb\xbf\r\n" + a)
    assert encounters.content_digest(a) != encounters.content_digest(a.replace(b"TEST^PAT", b"TEST^PAX"))
