"""Every Prometheus metric, defined in one place.

Multi-process: the supervisor empties ``PROMETHEUS_MULTIPROC_DIR`` and exports
it before forking (prometheus_client picks its storage at import time, so
this module must be imported only after that); ``/metrics`` builds a fresh
registry with ``MultiProcessCollector`` per scrape.  Labels stay few:
endpoint, event, ack.  Never a patient or encounter id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

hl7_messages = Counter(
    "ebw_hl7_messages_total",
    "HL7 messages answered, by endpoint, trigger event and ACK code.",
    ["endpoint", "event", "ack"],
)
hl7_ack_duration = Histogram(
    "ebw_hl7_ack_duration_seconds",
    "Time from a complete MLLP frame to its ACK being written (includes the durable commit).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
hl7_charset_fallback = Counter(
    "ebw_hl7_charset_fallback_total",
    "Messages whose declared character set did not decode and fell back to UTF-8/cp1252.",
    ["endpoint"],
)
mllp_connections = Gauge(
    "ebw_mllp_connections",
    "Open MLLP connections.",
    ["endpoint"],
    multiprocess_mode="livesum",
)
mllp_frames_rejected = Counter(
    "ebw_mllp_frames_rejected_total",
    "MLLP frames rejected for framing reasons (oversized, garbage).",
    ["endpoint", "reason"],
)
store_commits = Counter("ebw_store_commits_total", "LMDB write transactions committed.")
store_commit_batch = Histogram(
    "ebw_store_commit_batch_messages",
    "Messages applied per LMDB commit (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
store_commit_duration = Histogram(
    "ebw_store_commit_duration_seconds",
    "Duration of an LMDB write transaction including its sync.",
    buckets=LATENCY_BUCKETS,
)
active_encounters = Gauge(
    "ebw_active_encounters",
    "Active encounters on the worklist, by endpoint (read from the store after each commit).",
    ["endpoint"],
    multiprocess_mode="mostrecent",
)
cfind_queries = Counter(
    "ebw_cfind_queries_total",
    "C-FIND queries answered, by endpoint and final status.",
    ["endpoint", "status"],
)
cfind_duration = Histogram(
    "ebw_cfind_duration_seconds",
    "Time to select the matching worklist items for a C-FIND (before the responses are sent).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
cfind_matches = Histogram(
    "ebw_cfind_matches",
    "Worklist items returned per C-FIND.",
    ["endpoint"],
    buckets=(0, 1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000),
)
accessions_issued = Counter(
    "ebw_accessions_issued_total",
    "Accession numbers issued.",
    ["endpoint"],
)
worker_restarts = Counter(
    "ebw_worker_restarts_total",
    "Worker processes restarted by the supervisor after an unexpected exit.",
)
