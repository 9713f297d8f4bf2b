"""Prometheus metrics of one process, in their own registry (no globals)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric of API.md §2; label values never contain secrets."""

    def __init__(self, *, per_key: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.per_key = per_key
        r = self.registry
        self.requests = Counter(
            "lexia_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "lexia_http_request_duration_seconds", "HTTP request duration", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.llm_tokens = Counter(
            "lexia_llm_tokens", "LLM tokens", ["model", "direction"], registry=r
        )
        self.audio_seconds = Counter(
            "lexia_audio_seconds", "Audio seconds processed", ["kind"], registry=r
        )
        self.jobs = Gauge("lexia_jobs", "Jobs by kind and status", ["kind", "status"], registry=r)
        self.job_seconds = Histogram(
            "lexia_job_duration_seconds", "Job duration", ["kind"], registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.engine_up = Gauge("lexia_engine_up", "Engine loaded and healthy", ["engine"], registry=r)
        self.llm_queue = Gauge("lexia_llm_queued", "LLM requests waiting for the engine", registry=r)
        self.rate_limited = Counter(
            "lexia_rate_limited", "Requests refused by a limit", ["limit"], registry=r
        )
        self.webhook_attempts = Counter(
            "lexia_webhook_attempts", "Webhook delivery attempts", ["outcome"], registry=r
        )
        if per_key:
            self.key_requests = Counter(
                "lexia_key_requests", "Requests per key", ["key_id"], registry=r
            )

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration (label children cached per route)."""
        children = self._children.get((route, method, status))
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route),
            )
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4."""
        return generate_latest(self.registry)
