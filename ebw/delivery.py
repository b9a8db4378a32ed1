"""What is owed on finished exams, delivered by the timer process: ORUs and PACS pushes.

Every ``TICK`` the delivery thread of the timer process reads the exams with
work left (``ebw.exams``, LMDB ``exam_open``) and, in order of completion:

1. completes open exams that have been quiet for ``EBW_EXAM_QUIET_SECONDS``;
2. sends each pending ORU whose retry time has come (``ebw.oru``): built
   from the encounter *now* (latest PID/PV1), with the MSH-10 assigned when
   the exam completed, so a resend after a crash or a timeout carries the
   same MSH-10 and the EHR can drop the duplicate.  One ORU at a time per
   endpoint, oldest first; an endpoint whose EHR does not answer is not
   tried again before its backoff;
3. pushes each study whose push is due (ORU acknowledged + the endpoint's
   ``EBW_PACS_PUSH_DELAY_SECONDS``) to PACS (``ebw.pacs``), skipping the
   instances an earlier attempt stored.

State changes are committed (synced) right after each attempt; nothing is
held in memory across ticks, so a restart -- even during a push delay --
resumes from LMDB: the push happens once, at its time.  Network calls are
made outside any LMDB transaction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from . import exams, metrics, oru
from .config import EndpointConfig
from .store import Store

log = logging.getLogger(__name__)

TICK = 1.0


class Delivery:
    def __init__(self, store: Store, data_dir: str, endpoints: Any, clock: Any = time.time) -> None:
        self.store = store
        self.data_dir = data_dir
        self.endpoints = endpoints  # () -> {ep: EndpointConfig}, read each round
        self.clock = clock
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._ehr_retry: dict[str, float] = {}  # ep -> no ORU to this EHR before this time

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 8.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.round(self.clock())
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("delivery round failed")
            self.stopping.wait(max(0.0, TICK - (time.monotonic() - started)))

    def round(self, now: float) -> dict[str, int]:
        """One pass over the exams with work left; returns what was done (for tests)."""
        done = {"completed": 0, "oru": 0, "push": 0}
        cfgs: dict[str, EndpointConfig] = self.endpoints()
        with self.store.read() as txn:
            pending = exams.open_exams(self.store, txn)
        for exam in pending:
            if self.stopping.is_set():
                break
            cfg = cfgs.get(exam["ep"])
            if cfg is None:
                continue
            if exams.quiet(exam, cfg, now):
                exam = self._complete_quiet(exam, cfg, now)
                done["completed"] += 1
            if exam["oru"]["state"] == "pending" and exam["oru"]["next_at"] <= now:
                if self._ehr_retry.get(exam["ep"], 0.0) <= now:
                    exam = self._send_oru(exam, cfg, now)
                    done["oru"] += 1
            push = exam["push"]
            due = push["due_at"] is not None and push["due_at"] <= now and push["next_at"] <= now
            if push["state"] in ("waiting", "pending") and due:
                self._push(exam, cfg, now)
                done["push"] += 1
        with self.store.read() as txn:
            metrics.oru_outbox_depth.set(exams.counts(self.store, txn)["oru_pending"])
        return done

    def _complete_quiet(self, exam: dict[str, Any], cfg: EndpointConfig, now: float) -> dict[str, Any]:
        with self.store.write() as txn:
            fresh = exams.get(self.store, txn, exam["ep"], exam["study_uid"])
            if fresh is None or not exams.quiet(fresh, cfg, now):
                return fresh or exam
            log.info("%s: exam complete (no image for %d s)", exam["ep"], cfg.exam_quiet_seconds)
            return exams.complete(self.store, txn, fresh, cfg, "quiet", now)

    def _send_oru(self, exam: dict[str, Any], cfg: EndpointConfig, now: float) -> dict[str, Any]:
        ep = exam["ep"]
        with self.store.read() as txn:
            record = self.store.get_encounter(txn, ep, self.store.current_key(txn, ep, exam["key"]))
        if record is None:
            outcome, detail, text = "AR", "the encounter is no longer known", ""  # nothing to report on
            metrics.oru_sent.labels(ep, "unsent").inc()
        else:
            msh10 = exam["oru"]["msh10"]
            message = oru.build_oru(record, exam, cfg, msh10, now)
            assert cfg.ehr_host is not None and cfg.ehr_port is not None
            t0 = time.monotonic()
            outcome, detail, text = oru.deliver(cfg.ehr_host, cfg.ehr_port, message, msh10, cfg.oru_ack_timeout_seconds)
            metrics.oru_sent.labels(ep, outcome).inc()
            log.info(
                "%s: ORU MSH-10 %s attempt %d: %s (%.0f ms)",
                ep,
                msh10,
                exam["oru"]["attempts"] + 1,
                outcome,
                (time.monotonic() - t0) * 1000,
            )
            if outcome != "AA" and text:  # the EHR's own text: it may name the patient
                log.debug("%s: ORU MSH-10 %s: %s", ep, msh10, text)
        if outcome in ("timeout", "error"):
            self._ehr_retry[ep] = now + exams.backoff(exam["oru"]["attempts"] + 1)
        else:
            self._ehr_retry.pop(ep, None)
        with self.store.write() as txn:
            fresh = exams.get(self.store, txn, ep, exam["study_uid"]) or exam
            fresh = exams.oru_outcome(self.store, txn, fresh, cfg, outcome, detail, self.clock())
        if fresh["oru"]["state"] == "dead":
            metrics.oru_dead_letters.labels(ep).inc()
            log.error("%s: ORU MSH-10 %s dead-lettered (see /api/exams?oru=dead)", ep, fresh["oru"]["msh10"])
        return fresh

    def _push(self, exam: dict[str, Any], cfg: EndpointConfig, now: float) -> None:
        from .pacs import push_study

        ep = exam["ep"]
        with self.store.read() as txn:
            files = [
                os.path.join(self.data_dir, info["file"])
                for _sop, info in exams.instances(self.store, txn, ep, exam["study_uid"])
            ]
        assert cfg.pacs_aet and cfg.pacs_host and cfg.pacs_port
        result = push_study(
            files,
            cfg.scp_aet,
            cfg.pacs_aet,
            cfg.pacs_host,
            cfg.pacs_port,
            skip=set(exam["push"]["sent"]),
        )
        end = self.clock()
        with self.store.write() as txn:
            fresh = exams.get(self.store, txn, ep, exam["study_uid"]) or exam
            fresh = exams.push_outcome(self.store, txn, fresh, result.sent, result.failed, end)
        if fresh["push"]["state"] == "done":
            metrics.pacs_push.labels(ep, "done").inc()
            metrics.pacs_push_lag.labels(ep).observe(max(0.0, end - (fresh["push"]["due_at"] or end)))
        else:
            metrics.pacs_push.labels(ep, "failed").inc()
            log.warning("%s: push to PACS incomplete (%s); retried later", ep, fresh["push"]["detail"])
