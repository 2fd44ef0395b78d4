"""Prometheus metrics of one app (its own registry, so several apps can live in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every metric the server exports (Prometheus text at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ia_requests_total", "Requests answered, by route, model and status",
                                ["route", "model", "status"], registry=r)
        self.latency = Histogram("ia_request_latency_seconds", "Request latency", ["route", "model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("ia_queue_seconds", "Time a request waited in its model's queue", ["model"],
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_time = Histogram("ia_inference_seconds", "Compute seconds of the batch a request ran in",
                                        ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("ia_queue_depth", "Requests waiting in a model's batcher", ["model"], registry=r)
        self.batch_size = Histogram("ia_batch_items", "Items in the batch a request ran in", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.items = Counter("ia_items_total", "Inputs processed", ["model"], registry=r)
        self.prompt_tokens = Counter("ia_prompt_tokens_total", "Prompt tokens processed", ["model"], registry=r)
        self.generated_tokens = Counter("ia_generated_tokens_total", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram("ia_time_to_first_token_seconds", "Time to the first generated token", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.load_seconds = Gauge("ia_model_load_seconds", "Seconds a model took to load", ["model"], registry=r)
        self.rejected = Counter("ia_rejected_total", "Requests refused with 429 (queue full)", ["model"], registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
