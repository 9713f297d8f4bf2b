"""Usage ledger: append-only events written in batches off the request path, summed by query."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db import DatabaseError
from lexia.db.usage import USAGE_COLUMNS, UsageTable
from lexia.errors import NotFound, ValidationFailed
from lexia.ids import is_id
from lexia.logs import Outage
from lexia.schemas.usage import UsageAmounts, UsageReport, UsageRow

log = logging.getLogger("lexia.usage")

KINDS = ("llm", "stt", "diarization")
MAX_RANGE_DAYS = 366
MAX_BUFFERED = 200_000


@dataclass(slots=True)
class UsageEvent:
    """One finished request (or job) and what it consumed."""

    created_at: datetime
    tenant_id: str
    key_id: str
    request_id: str
    route: str
    method: str
    status: int
    latency_ms: float
    kind: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    diarization_seconds: float = 0.0
    requests: int = 1


RollupSlot = tuple[int, str, str, str, str, int]
_as_row = attrgetter(*USAGE_COLUMNS)


class UsageRecorder:
    """Buffers events and writes them in batches; `record` never blocks or awaits."""

    def __init__(
        self,
        table: UsageTable,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        after_flush: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._table = table
        self._interval = flush_interval
        self._batch = batch_size
        self._buffer: list[UsageEvent] = []
        # (unix second, tenant, key, route, method, status) -> [count, latency sum, last request id]
        self._rollup: dict[RollupSlot, list[Any]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._after_flush = after_flush
        self._lock = asyncio.Lock()
        self._stopping = False
        self._outage = Outage(log, "usage ledger writes")

    def record(self, event: UsageEvent) -> None:
        """Queue an event for the next batch; unmetered requests are rolled up per second."""
        if event.kind is None:
            slot = (
                int(event.created_at.timestamp()), event.tenant_id, event.key_id, event.route,
                event.method, event.status,
            )
            self.record_unmetered(slot, event.latency_ms, event.request_id)
            return
        if len(self._buffer) >= MAX_BUFFERED:
            # The database has been unreachable for long: keep the newest, say so once per drop.
            del self._buffer[: self._batch]
            log.error("usage ledger: buffer full, dropped %d oldest events", self._batch)
        self._buffer.append(event)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def record_unmetered(self, slot: RollupSlot, latency_ms: float, request_id: str) -> None:
        """Count a request without metered amounts into its per-second roll-up row (hot path).

        `slot` is (unix second, tenant, key, route, method, status).
        """
        bucket = self._rollup.get(slot)
        if bucket is None:
            self._rollup[slot] = [1, latency_ms, request_id]
        else:
            bucket[0] += 1
            bucket[1] += latency_ms
            bucket[2] = request_id

    async def flush(self) -> int:
        """Write everything buffered now; on failure the events stay buffered."""
        async with self._lock:
            if self._after_flush is not None:
                try:
                    await self._after_flush()
                except DatabaseError as exc:
                    self._outage.failed(exc)
            self._drain_rollup()
            written = 0
            while self._buffer:
                batch = self._buffer[: self._batch * 4]
                try:
                    await self._copy(batch)
                except (*DatabaseError, OSError) as exc:
                    self._outage.failed(exc)  # the events stay buffered for the next flush
                    return written
                del self._buffer[: len(batch)]
                written += len(batch)
            self._outage.ok()
            return written

    def _drain_rollup(self) -> None:
        rollup, self._rollup = self._rollup, {}
        for (second, tenant, key, route, method, status), (count, latency, rid) in rollup.items():
            self._buffer.append(
                UsageEvent(
                    created_at=datetime.fromtimestamp(second, UTC), tenant_id=tenant, key_id=key,
                    request_id=rid, route=route,
                    method=method, status=status, latency_ms=round(latency / count, 3), requests=count,
                )
            )

    async def _copy(self, batch: list[UsageEvent]) -> None:
        """COPY the batch in one transaction (far cheaper per row than INSERT)."""
        await self._table.copy(_as_row(e) for e in batch)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            await self.flush()

    def start(self) -> None:
        """Start the background flusher."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-flusher")

    async def stop(self) -> None:
        """Let the flusher finish its current write (never cancelled mid-COPY), then flush the rest."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A validated GET /v1/usage query."""

    start: date
    end: date
    kind: str | None
    key_id: str | None  # None = every key of the tenant


def parse_usage_query(
    *, start: str | None, end: str | None, kind: str | None, key_id: str | None, caller_key: str, today: date
) -> UsageQuery:
    """Validate the query parameters of §8.5 (dates inclusive, UTC, ≤ 366 days)."""

    def _date(value: str | None, param: str, default: date) -> date:
        if value is None:
            return default
        try:
            return date.fromisoformat(value) if len(value) == 10 else _bad_date(param)
        except ValueError:
            return _bad_date(param)

    end_d = _date(end, "end", today)
    start_d = _date(start, "start", max(end_d, date.min + timedelta(days=29)) - timedelta(days=29))
    if start_d > end_d:
        raise ValidationFailed("start must not be after end", param="start")
    if (end_d - start_d).days + 1 > MAX_RANGE_DAYS:
        raise ValidationFailed(f"the range may span at most {MAX_RANGE_DAYS} days", param="start")
    if kind is not None and kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", param="kind")
    if key_id is None or key_id == "":
        selected: str | None = caller_key
    elif key_id == "all":
        selected = None
    elif is_id(key_id, "key"):
        selected = key_id
    else:
        raise NotFound(f"No API key with id {key_id!r}", param="key_id")
    return UsageQuery(start_d, end_d, kind, selected)


def _bad_date(param: str) -> date:
    raise ValidationFailed(f"{param} must be a date in the form YYYY-MM-DD", param=param)


def event_row(event: UsageEvent) -> dict[str, object]:
    """An event as a dict of ledger columns."""
    return asdict(event)


class UsageReports:
    """Sums of the usage ledger for GET /v1/usage."""

    def __init__(self, table: UsageTable, clock: Clock = SYSTEM_CLOCK) -> None:
        self._table = table
        self._clock = clock

    def query(
        self, *, start: str | None, end: str | None, kind: str | None, key_id: str | None, caller_key: str
    ) -> UsageQuery:
        """Validate §8.5 parameters (dates in UTC, inclusive)."""
        return parse_usage_query(
            start=start, end=end, kind=kind, key_id=key_id, caller_key=caller_key, today=self._clock.now().date()
        )

    async def summarize(self, tenant_id: str, query: UsageQuery) -> UsageReport:
        """Rows per day, key and kind with non-zero usage, plus totals per kind (§8.5)."""
        if query.key_id is not None and not await self._table.key_in_tenant(tenant_id, query.key_id):
            raise NotFound(f"No API key with id {query.key_id!r}", param="key_id")
        lo = datetime.combine(query.start, datetime.min.time(), tzinfo=UTC)
        # The day after `end` (or the last instant there is, for 9999-12-31).
        hi = (
            datetime.combine(query.end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
            if query.end < date.max
            else datetime.max.replace(tzinfo=UTC)
        )
        rows = await self._table.daily_sums(tenant_id, lo, hi, key_id=query.key_id, kind=query.kind)
        data: list[UsageRow] = []
        totals: dict[str, UsageAmounts] = {}
        for row in rows:
            item = UsageRow(
                date=row.day.isoformat(),
                key_id=row.key_id,
                kind=row.kind,
                requests=int(row.requests),
                input_tokens=int(row.input_tokens or 0),
                output_tokens=int(row.output_tokens or 0),
                audio_seconds=round(float(row.audio_seconds or 0.0), 3),
            )
            data.append(item)
            total = totals.setdefault(row.kind, UsageAmounts())
            total.requests += item.requests
            total.input_tokens += item.input_tokens
            total.output_tokens += item.output_tokens
            total.audio_seconds = round(total.audio_seconds + item.audio_seconds, 3)
        kinds = [query.kind] if query.kind else list(KINDS)
        return UsageReport(
            start=query.start.isoformat(),
            end=query.end.isoformat(),
            key_id=query.key_id or "all",
            data=data,
            totals={k: totals.get(k, UsageAmounts()) for k in kinds},
        )
