"""Every Prometheus metric, defined in one place.

Multi-process: the supervisor empties ``PROMETHEUS_MULTIPROC_DIR`` and exports
it before forking (prometheus_client picks its storage at import time, so
this module must be imported only after that); ``/metrics`` builds a fresh
registry with ``MultiProcessCollector`` per scrape.  Labels stay few:
endpoint, event, ack, status, reason, worker.  Never a patient or encounter id.

Gauges and their multi-process modes: ``livesum`` for what each live worker
holds (open connections; dropped with the worker's files when it dies);
``mostrecent`` for state every worker reads from the one shared LMDB
environment (the latest write wins, whichever worker made it); ``liveall`` for
the per-worker process gauges (one sample per live worker, labelled with its
index and, added by prometheus_client, its ``pid``).  Counters and histograms
of dead workers are kept (the supervisor removes only live-gauge files).

The standard ``process_*`` collector cannot aggregate processes: the scrape
adds it for the supervisor (the process serving ``/metrics``) only; workers
export the same figures as ``ebw_worker_*``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

hl7_messages = Counter(
    "ebw_hl7_messages_total",
    "HL7 messages answered, by endpoint, trigger event and ACK code "
    "(event: a known ADT trigger event, 'other' for any other, 'unknown' when none was read).",
    ["endpoint", "event", "ack"],
)
hl7_ack_seconds = Histogram(
    "ebw_hl7_ack_seconds",
    "Time from a complete MLLP frame to its ACK being written (includes the durable commit).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
hl7_charset_fallback = Counter(
    "ebw_hl7_charset_fallback_total",
    "Messages whose declared character set did not decode and fell back to UTF-8/cp1252.",
    ["endpoint"],
)
hl7_connections = Gauge(
    "ebw_hl7_connections",
    "Open MLLP connections, by endpoint (summed over live workers).",
    ["endpoint"],
    multiprocess_mode="livesum",
)
mllp_frames_rejected = Counter(
    "ebw_mllp_frames_rejected_total",
    "MLLP input refused before HL7 parsing, by reason: oversize (frame over the cap, AR then "
    "close), slow_sender (frame unfinished after EBW_MLLP_FRAME_TIMEOUT_SECONDS), "
    "connection_limit (connection refused), garbage (bytes outside any frame, line ends aside, "
    "or a frame cut short by a new start block).",
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
store_commit_lock_wait = Histogram(
    "ebw_store_commit_lock_wait_seconds",
    "Time a commit waited for LMDB's writer lock, held by another process's commit (commits are "
    "serialized across processes: a long wait means the workers queue on each other's syncs).",
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
    "C-FIND queries answered, by endpoint and final DIMSE status as 4 upper-case hex digits "
    "(0000 success, FE00 cancelled, A700 refused: out of resources, A900 identifier does not match SOP class, "
    "C001 unable to process).",
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
lmdb_map_used_bytes = Gauge(
    "ebw_lmdb_map_used_bytes",
    "Bytes of the LMDB map in use: (last page number + 1) * page size.",
    multiprocess_mode="mostrecent",
)
lmdb_map_size_bytes = Gauge(
    "ebw_lmdb_map_size_bytes",
    "Size of the LMDB map (EBW_LMDB_MAP_SIZE_MB); writes fail once the used bytes reach it.",
    multiprocess_mode="mostrecent",
)

# Per-worker process figures (the ``process_*`` collector of prometheus_client reads
# only its own process).  Updated by each worker about once a second.
worker_resident_memory = Gauge(
    "ebw_worker_resident_memory_bytes",
    "Resident memory of a worker process.",
    ["worker"],
    multiprocess_mode="liveall",
)
worker_virtual_memory = Gauge(
    "ebw_worker_virtual_memory_bytes",
    "Virtual memory of a worker process.",
    ["worker"],
    multiprocess_mode="liveall",
)
worker_cpu_seconds = Gauge(
    "ebw_worker_cpu_seconds",
    "User and system CPU time a worker process has used.",
    ["worker"],
    multiprocess_mode="liveall",
)
worker_open_fds = Gauge(
    "ebw_worker_open_fds",
    "Open file descriptors of a worker process.",
    ["worker"],
    multiprocess_mode="liveall",
)
worker_start_time = Gauge(
    "ebw_worker_start_time_seconds",
    "Start time of a worker process, in seconds since the epoch.",
    ["worker"],
    multiprocess_mode="liveall",
)

# -- exams: studies in, ORU to the EHR, push to PACS --------------------------------

studies_received = Counter(
    "ebw_dicom_instances_received_total",
    "DICOM instances received (C-STORE), by endpoint and answer status (0000 stored, A700, C000).",
    ["endpoint", "status"],
)
orphan_studies = Counter(
    "ebw_orphan_studies_total",
    "Studies received that match no encounter (no known accession number or study UID).",
    ["endpoint"],
)
oru_sent = Counter(
    "ebw_oru_sent_total",
    "ORU delivery attempts to the EHR, by outcome (AA, AE, AR, timeout, error).",
    ["endpoint", "ack"],
)
oru_dead_letters = Counter(
    "ebw_oru_dead_letters_total",
    "ORUs given up on (AR, or AE too many times): listed at /api/exams?oru=dead.",
    ["endpoint"],
)
oru_outbox_depth = Gauge(
    "ebw_oru_outbox_depth",
    "ORUs waiting to be acknowledged by the EHR.",
    multiprocess_mode="mostrecent",
)
pacs_push = Counter(
    "ebw_pacs_push_total",
    "Study pushes to PACS, by result (done, failed: retried later).",
    ["endpoint", "result"],
)
pacs_push_lag = Histogram(
    "ebw_pacs_push_lag_seconds",
    "Time from when a study was due at PACS (ORU acknowledged + push delay) to when it was all stored.",
    ["endpoint"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
