"""C-STORE SCU: push a finished study to the PACS.

``push_study`` sends every Part-10 file of a study over one association (more
only when the study needs more than 128 presentation contexts) and reports,
per SOP Instance UID, what the PACS accepted and what failed and why.  It
never raises for network or peer problems; retrying is the caller's job (it
passes the instances already sent in ``skip``).

Presentation contexts: one requested context per (SOP Class UID, transfer
syntax) pair present in the files, each with that single transfer syntax so
the PACS accepts or refuses each pair on its own.  For uncompressed
little-endian files (implicit, explicit, deflated explicit VR) both
Implicit and Explicit VR Little Endian are also proposed as fallbacks: if the
file's own syntax is refused but one of these is accepted, pynetdicom
re-encodes the data set (VR form only; the pixel bytes are unchanged).
Nothing else is converted: a compressed or big-endian file whose exact
context is refused fails with "no accepted context" (no transcoding).

Files are sent by path with ``_config.STORE_SEND_CHUNKED_DATASET``: pynetdicom
then streams the encoded data set from the file without decoding it (and
without holding a decoded copy of the pixel data); only the file meta is
read here.  That mode needs an exact (class, syntax) match, which is the
normal case; the fallback conversion above reads the whole data set instead.

No patient data is logged above DEBUG: pynetdicom's identifier and
DIMSE-handler logging is switched off, as in ``ebw.dicom.scp``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt

from .dicom.net import nodelay_scu

log = logging.getLogger(__name__)

_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_HANDLER_LEVEL = "none"
# Send a file path's data set as stored, in chunks, without decoding it.
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # per association (PS3.8)

_LE_FALLBACKS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_CONVERTIBLE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian})
_SENT_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})

NO_CONTEXT = "no accepted context"
REJECTED = "association rejected"
CONNECTION_FAILED = "connection failed"
ABORTED = "aborted"
TIMEOUT = "timeout"
UNREADABLE = "unreadable file"


@dataclass
class PushResult:
    sent: list[str] = field(default_factory=list)
    """SOP Instance UIDs the PACS accepted (success or warning status)."""
    failed: dict[str, str] = field(default_factory=dict)
    """SOP Instance UID -> short reason ("A700", "no accepted context", ...).
    A file whose meta cannot be read is keyed by its file name stem."""

    @property
    def ok(self) -> bool:
        """Nothing failed: every file given (and not skipped) was sent."""
        return not self.failed


@dataclass(frozen=True)
class _Item:
    path: str
    sop_class: str
    sop_instance: str
    ts: str


def _read_item(path: str) -> _Item:
    meta = read_file_meta_info(path)
    return _Item(
        path=path,
        sop_class=str(meta.MediaStorageSOPClassUID),
        sop_instance=str(meta.MediaStorageSOPInstanceUID),
        ts=str(meta.TransferSyntaxUID),
    )


def _contexts_for(items: list[_Item]) -> list[list[tuple[str, str]]]:
    """Requested (class, syntax) contexts grouped per SOP class, first-seen order."""
    per_class: dict[str, dict[tuple[str, str], None]] = {}
    for it in items:
        cxs = per_class.setdefault(it.sop_class, {})
        cxs[(it.sop_class, it.ts)] = None
        if it.ts in _CONVERTIBLE:
            for ts in _LE_FALLBACKS:
                cxs[(it.sop_class, str(ts))] = None
    return [list(cxs) for cxs in per_class.values()]


def _batches(items: list[_Item]) -> list[tuple[list[tuple[str, str]], list[_Item]]]:
    """Split into associations of at most MAX_CONTEXTS contexts; a SOP class's contexts
    stay together (unless one class alone needs more than MAX_CONTEXTS)."""
    units: list[list[tuple[str, str]]] = []
    for group in _contexts_for(items):
        units.extend(group[i : i + MAX_CONTEXTS] for i in range(0, len(group), MAX_CONTEXTS))
    packed: list[list[tuple[str, str]]] = []
    for unit in units:
        if packed and len(packed[-1]) + len(unit) <= MAX_CONTEXTS:
            packed[-1].extend(unit)
        else:
            packed.append(list(unit))
    home: dict[tuple[str, str], int] = {}
    for n, cxs in enumerate(packed):
        for cx in cxs:
            home.setdefault(cx, n)
    out: list[tuple[list[tuple[str, str]], list[_Item]]] = [(cxs, []) for cxs in packed]
    for it in items:
        out[home[(it.sop_class, it.ts)]][1].append(it)
    return [b for b in out if b[1]]


class _Pusher:
    def __init__(self, calling_aet: str, pacs_aet: str, host: str, port: int, timeout: float) -> None:
        self.calling_aet = calling_aet
        self.pacs_aet = pacs_aet
        self.host = host
        self.port = port
        self.timeout = timeout
        self.result = PushResult()

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        ae.maximum_pdu_size = 0
        return ae

    def _fail_all(self, items: list[_Item], reason: str) -> None:
        for it in items:
            self.result.failed[it.sop_instance] = reason

    def push_batch(self, contexts: list[tuple[str, str]], items: list[_Item]) -> None:
        pending = list(items)
        while pending:
            pending = self._one_association(contexts, pending)

    def _one_association(self, contexts: list[tuple[str, str]], pending: list[_Item]) -> list[_Item]:
        """Send what it can over one association; returns the items still to send on a
        new association (only after a local error on a file), else []."""
        opened: list[bool] = []

        def on_open(event: Any) -> None:
            opened.append(True)

        start = time.monotonic()
        try:
            assoc = self._ae().associate(
                self.host,
                self.port,
                contexts=[build_context(cls, ts) for cls, ts in contexts],
                ae_title=self.pacs_aet,
                max_pdu=0,
                evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
            )
        except Exception:  # bad address or AE title: reported, not raised
            log.warning(
                "PACS %s at %s:%s: association request failed", self.pacs_aet, self.host, self.port, exc_info=True
            )
            self._fail_all(pending, CONNECTION_FAILED)
            return []
        if not assoc.is_established:
            if assoc.is_rejected:
                reason = REJECTED
            elif not opened:
                reason = CONNECTION_FAILED
            elif time.monotonic() - start >= self.timeout * 0.9:
                reason = TIMEOUT
            else:
                reason = ABORTED
            self._fail_all(pending, reason)
            return []

        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        msg_id = 0
        try:
            for n, it in enumerate(pending):
                if not assoc.is_established:
                    self._fail_all(pending[n:], ABORTED)
                    return []
                target: Any = it.path
                if (it.sop_class, it.ts) not in accepted:
                    if it.ts in _CONVERTIBLE and any((it.sop_class, str(ts)) in accepted for ts in _LE_FALLBACKS):
                        try:
                            target = dcmread(it.path)  # pynetdicom re-encodes to the accepted LE syntax
                        except Exception:
                            log.warning("PACS push: cannot read %s", it.path, exc_info=True)
                            self.result.failed[it.sop_instance] = UNREADABLE
                            continue
                    else:
                        self.result.failed[it.sop_instance] = NO_CONTEXT
                        continue
                msg_id = msg_id % 65535 + 1
                sent_at = time.monotonic()
                try:
                    status = assoc.send_c_store(target, msg_id=msg_id)
                except RuntimeError:  # association gone between the check and the request
                    self._fail_all(pending[n:], ABORTED)
                    return []
                except Exception:
                    # A local problem with this file (vanished, truncated).  pynetdicom may be
                    # left mid-request: drop this association and carry on with a new one.
                    log.warning("PACS push: cannot send %s", it.path, exc_info=True)
                    self.result.failed[it.sop_instance] = UNREADABLE
                    assoc.abort()
                    return pending[n + 1 :]
                if "Status" not in status:
                    waited = time.monotonic() - sent_at
                    self.result.failed[it.sop_instance] = TIMEOUT if waited >= self.timeout * 0.9 else ABORTED
                    self._fail_all(pending[n + 1 :], ABORTED)
                    return []
                code = int(status.Status)
                if code in _SENT_STATUSES:
                    self.result.sent.append(it.sop_instance)
                    if code:
                        log.debug("PACS %s: warning status %04X for %s", self.pacs_aet, code, it.sop_instance)
                else:
                    self.result.failed[it.sop_instance] = f"{code:04X}"
            return []
        finally:
            if assoc.is_established:
                assoc.release()


def push_study(
    files: list[str],
    calling_aet: str,
    pacs_aet: str,
    host: str,
    port: int,
    timeout: float = 30.0,
    skip: set[str] | frozenset[str] = frozenset(),
) -> PushResult:
    """C-STORE every file (Part-10 paths) to the PACS over one association (or more if
    more than 128 presentation contexts are needed), skipping SOP Instance UIDs in `skip`
    (already sent by an earlier attempt).  Never raises for network/peer problems: they
    are reported in `failed` (every not-yet-sent instance fails with the reason)."""
    nodelay_scu()
    start = time.monotonic()
    pusher = _Pusher(calling_aet, pacs_aet, host, port, timeout)
    items: list[_Item] = []
    seen: set[str] = set(skip)
    skipped = 0
    for path in files:
        path = os.fspath(path)
        try:
            it = _read_item(path)
        except Exception:
            log.warning("PACS push: no readable file meta in %s", path, exc_info=True)
            pusher.result.failed[Path(path).stem] = UNREADABLE
            continue
        if it.sop_instance in seen:
            skipped += 1
            continue
        seen.add(it.sop_instance)
        items.append(it)

    for contexts, batch in _batches(items):
        pusher.push_batch(contexts, batch)

    r = pusher.result
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(r.failed.values()).items()))
    log.info(
        "PACS push to %s at %s:%s: %d sent, %d failed%s, %d skipped in %.2f s",
        pacs_aet,
        host,
        port,
        len(r.sent),
        len(r.failed),
        f" ({reasons})" if reasons else "",
        skipped,
        time.monotonic() - start,
    )
    return r
