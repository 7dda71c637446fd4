"""Background jobs on rq: dead-letter replay, erase, exports, rollup verification, alerts.

The query API enqueues them by name (``jobs.tasks.*``) and reads their state; `abacus jobs` (or a
thread of `abacus serve`) runs them. Each is idempotent: rq may run one again after a crash.
"""
