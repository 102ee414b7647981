"""The SLURM poller's Prometheus metrics, served with the hub's at ``/hub/metrics``
(prometheus_client's default registry), defined beside the code that observes them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SLURM_POLL_DURATION_SECONDS = Histogram(
    "uws_slurm_poll_duration_seconds",
    "Seconds one SLURM status poll cycle takes (one squeue for every job, and sacct for the vanished)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)

SLURM_POLL_FAILURES = Counter(
    "uws_slurm_poll_failures",
    "SLURM status poll cycles that failed (squeue errors or timeouts; retried with backoff)",
)
