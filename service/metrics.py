"""Prometheus metrics, one registry per app (so several apps can live in one test process).

With several uvicorn workers (`KT_WORKERS > 1`) `python -m service` sets PROMETHEUS_MULTIPROC_DIR
before the workers start: every worker then writes its values to files there and any worker's
`/metrics` reports the sum over all of them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when several worker processes serve, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
_LENGTH_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 500, 1000)


class Metrics:
    """Request, inference, store and history-length metrics of one service instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kt_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "kt_http_request_duration_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "kt_inference_duration_seconds",
            "Encoding + ONNX Runtime run per scoring call",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_batch = Histogram(
            "kt_inference_batch_rows",
            "Learners per ORT run",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.store_latency = Histogram(
            "kt_store_duration_seconds",
            "History store call latency by operation",
            ["op", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.history_length = Histogram(
            "kt_history_length",
            "Stored events per learner at prediction time",
            buckets=_LENGTH_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "kt_model_info",
            "The loaded model (value 1; per worker `pid` with several workers)",
            ["version", "name"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter("kt_model_reloads", "Model reload attempts", ["outcome"], registry=r)
        self.stale_events = Counter(
            "kt_stale_events",
            "New events older than the learner's whole stored window (not stored)",
            registry=r,
        )
        self._model_labels: tuple[str, str] | None = None

    def set_model(self, version: str, name: str) -> None:
        if self._model_labels is not None and multiprocess_dir():
            # the files keep every label set ever written: mark the old model as gone
            self.model_info.labels(*self._model_labels).set(0)
        else:
            self.model_info.clear()
        self.model_info.labels(version=version, name=name).set(1)
        self._model_labels = (version, name)

    def exposition(self) -> bytes:
        """The text exposition: this process's registry, or every worker's in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def process_exited(self) -> None:
        """Drop this worker's live gauges from the shared directory (multiprocess mode)."""
        if multiprocess_dir():
            prometheus_multiprocess.mark_process_dead(os.getpid())
