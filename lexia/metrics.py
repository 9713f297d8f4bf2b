"""Prometheus metrics of one process, in their own registry (no globals).

Most metrics count what this process does. Two are pod-wide: `lexia_job_duration_seconds` and
`lexia_webhook_attempts_total` are recorded in Redis by whichever process finishes a job or a
delivery attempt (lexia.services.podmetrics) and exposed here by `PodCollector` from the last
snapshot the API's /metrics handler loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Upper bounds of lexia_job_duration_seconds (seconds); +Inf is implied.
JOB_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
JOB_SECONDS = ("lexia_job_duration_seconds", "Job duration from start to terminal state")
WEBHOOK_ATTEMPTS = ("lexia_webhook_attempts", "Webhook delivery attempts")


def le_label(bound: float) -> str:
    """A bucket bound as Prometheus writes its `le` label (1 -> "1.0", 0.1 -> "0.1")."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class HistogramTotals:
    """One histogram series: per-bucket counts (not cumulative, one per JOB_BUCKETS bound), count and sum.

    Observations above the last bound are in `count` only (the +Inf bucket is `count`).
    """

    buckets: tuple[int, ...]
    count: int
    sum: float

    def cumulative(self, bounds: Iterable[float]) -> list[tuple[str, float]]:
        """Prometheus buckets: (`le`, observations <= le), ending with ("+Inf", count)."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(bounds, self.buckets, strict=True):
            running += n
            out.append((le_label(bound), float(min(running, self.count))))
        out.append(("+Inf", float(self.count)))
        return out


@dataclass(frozen=True, slots=True)
class PodTotals:
    """Pod-wide totals read from Redis: job durations per kind, webhook attempts per outcome."""

    job_durations: Mapping[str, HistogramTotals] = field(default_factory=dict)
    webhook_attempts: Mapping[str, int] = field(default_factory=dict)


class PodCollector(Collector):
    """Yields the pod-wide metrics from the latest snapshot (nothing until one was loaded).

    A failed refresh keeps the previous snapshot, so a Redis outage never makes counters go back.
    """

    def __init__(self, bounds: tuple[float, ...] = JOB_BUCKETS) -> None:
        self.bounds = bounds
        self.totals: PodTotals | None = None

    def update(self, totals: PodTotals) -> None:
        """Replace the snapshot (one reference assignment: safe against a concurrent scrape)."""
        self.totals = totals

    def describe(self) -> Iterable[Metric]:
        """The metric names this collector owns (so the registry refuses duplicates)."""
        return [
            HistogramMetricFamily(*JOB_SECONDS, labels=["kind"]),
            CounterMetricFamily(*WEBHOOK_ATTEMPTS, labels=["outcome"]),
        ]

    def collect(self) -> Iterator[Metric]:
        """Both families, with one series per kind and outcome of the snapshot."""
        totals = self.totals
        durations = HistogramMetricFamily(*JOB_SECONDS, labels=["kind"])
        attempts = CounterMetricFamily(*WEBHOOK_ATTEMPTS, labels=["outcome"])
        if totals is not None:
            for kind, series in sorted(totals.job_durations.items()):
                durations.add_metric([kind], series.cumulative(self.bounds), series.sum)
            for outcome, count in sorted(totals.webhook_attempts.items()):
                attempts.add_metric([outcome], float(count))
        yield durations
        yield attempts


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
        # lexia_job_duration_seconds and lexia_webhook_attempts_total: pod-wide, from Redis.
        self.pod = PodCollector()
        r.register(self.pod)
        self.engine_up = Gauge("lexia_engine_up", "Engine loaded and healthy", ["engine"], registry=r)
        self.llm_queue = Gauge("lexia_llm_queued", "LLM requests waiting for the engine", registry=r)
        self.rate_limited = Counter(
            "lexia_rate_limited", "Requests refused by a limit", ["limit"], registry=r
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
