"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
            "kt_model_info", "The loaded model (value 1)", ["version", "name"], registry=r
        )
        self.reloads = Counter("kt_model_reloads", "Model reload attempts", ["outcome"], registry=r)

    def set_model(self, version: str, name: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, name=name).set(1)
