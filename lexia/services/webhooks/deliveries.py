"""Webhook delivery attempts (API.md §7.3) and the delivery log (§7.4).

One attempt per `webhook.deliver` message. An attempt is claimed by moving `next_attempt_at`
past its own timeout, so two copies of a message never post twice; a worker that dies
mid-attempt leaves a lapsed claim that the sweeper re-enqueues (at-least-once: receivers
de-duplicate on `webhook-id`). Every attempt is recorded with its status code, latency and error,
and counted in the pod-wide `lexia_webhook_attempts_total{outcome}` (Redis).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import msgspec

from lexia.clock import SYSTEM_CLOCK, Clock
from lexia.db.rows import DeliveryRow
from lexia.db.webhooks import DeliveryTable
from lexia.errors import Conflict, NotFound, UrlNotAllowed, ValidationFailed
from lexia.ids import is_id
from lexia.netguard import NetGuard, ResolveError
from lexia.schemas.common import Page, iso, page
from lexia.schemas.webhooks import DeliveryAttempt, WebhookDelivery
from lexia.services.jobs.kinds import JobQueue, kind_of
from lexia.services.jobs.store import parse_filter
from lexia.services.podmetrics import PodMetrics
from lexia.services.webhooks.events import DELIVER, ordered_payload
from lexia.services.webhooks.signing import SecretStore, signature_header

log = logging.getLogger("lexia.webhooks")

USER_AGENT = "Lexia-Webhooks/1"
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
# A claimed attempt owns the delivery for the HTTP timeout plus this margin.
CLAIM_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST got: the status code (None without a response), latency and error text."""

    status_code: int | None
    latency_ms: int
    error: str | None
    permanent: bool = False


def next_delay(delays: Sequence[float], failures: int) -> float | None:
    """Seconds before the next attempt after `failures` failed ones (±10 % jitter), None when spent."""
    if failures > len(delays):
        return None
    return max(0.0, delays[failures - 1] * random.uniform(0.9, 1.1))  # noqa: S311 (jitter, not security)


class Deliverer:
    """Makes delivery attempts: claim, sign, POST to the vetted address, record, schedule the next."""

    def __init__(
        self,
        table: DeliveryTable,
        secrets: SecretStore,
        queue: JobQueue,
        guard: NetGuard,
        *,
        timeout: float,
        delays: Sequence[float],
        transport: httpx.AsyncBaseTransport | None = None,
        pod: PodMetrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._table = table
        self._queue = queue
        self._clock = clock
        self._guard = guard
        self._pod = pod  # counts lexia_webhook_attempts_total; None counts nothing
        self._timeout = timeout
        self._delays = tuple(delays)
        self._secrets = secrets
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout)
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def deliver(self, delivery_id: str) -> str | None:
        """One attempt if the delivery is due; returns the delivery's status afterwards (None if skipped)."""
        claimed = await self._table.claim(
            delivery_id, self._clock.now(), timedelta(seconds=self._timeout + CLAIM_MARGIN)
        )
        if claimed is None:
            return None
        row = claimed.delivery
        body = msgspec.json.encode(ordered_payload(row.payload))
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": row.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(await self._secrets.signing(row.tenant_id), row.id, timestamp, body),
        }
        if claimed.auth_name and claimed.auth_value is not None:
            headers[claimed.auth_name] = claimed.auth_value
        started = self._clock.now()
        outcome = await self._post(row.url, headers, body)
        status = await self._record(row, started, outcome)
        if self._pod is not None:  # last, after the attempt's record and the next one's message; never raises
            await self._pod.webhook_attempt(success=outcome.error is None)
        return status

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult:
        t0 = time.perf_counter()

        def took() -> int:
            return round((time.perf_counter() - t0) * 1000)

        try:
            target = await self._guard.vet(url, param="webhook_url")
        except UrlNotAllowed:
            return AttemptResult(None, took(), "url_not_allowed", permanent=True)
        except ResolveError as exc:
            return AttemptResult(None, took(), f"connection error: {exc}")
        except ValidationFailed:
            return AttemptResult(None, took(), "url_not_allowed", permanent=True)
        request = self._guard.build_request(self._client, "POST", target, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
            await response.aclose()
        except httpx.TimeoutException:
            return AttemptResult(None, took(), "timeout")
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            return AttemptResult(None, took(), f"connection error: {reason}")
        code = response.status_code
        if 300 <= code < 400:
            return AttemptResult(code, took(), "redirect not followed")
        if not 200 <= code < 300:
            return AttemptResult(code, took(), "non-2xx response")
        return AttemptResult(code, took(), None)

    async def _record(self, row: DeliveryRow, started: datetime, outcome: AttemptResult) -> str:
        number = len(row.attempts or []) + 1
        attempt = {
            "number": number,
            "at": iso(started),
            "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms,
            "error": outcome.error,
        }
        delay = None
        if outcome.error is None:
            status = "succeeded"
        elif outcome.permanent or row.manual:
            status = "failed"
        else:
            delay = next_delay(self._delays, number)
            status = "pending" if delay is not None else "failed"
        next_at = started + timedelta(seconds=delay) if delay is not None else None
        await self._table.record(
            row, attempt, status=status, next_attempt_at=next_at, status_code=outcome.status_code
        )
        log.info(
            "webhook %s attempt %d for %s: %s", row.id, number, row.resource_id, outcome.error or outcome.status_code
        )
        if delay is not None:
            await self._queue.enqueue(DELIVER.actor, row.id, queue=DELIVER.queue, delay=delay)
        return status


# -- the delivery log -----------------------------------------------------------------------


def delivery_view(row: DeliveryRow) -> WebhookDelivery:
    """The webhook_delivery object (§7.4)."""
    return WebhookDelivery(
        id=row.id,
        resource_id=row.resource_id,
        event=row.event,
        url=row.url,
        status=row.status,
        payload=ordered_payload(row.payload),
        attempts=msgspec.convert(row.attempts or [], list[DeliveryAttempt]),
        next_attempt_at=iso(row.next_attempt_at) if row.status == "pending" else None,
        created_at=iso(row.created_at) or "",
    )


class DeliveryLog:
    """Tenant-scoped reads of deliveries and the redeliver operation."""

    def __init__(self, table: DeliveryTable, queue: JobQueue, clock: Clock = SYSTEM_CLOCK) -> None:
        self._table = table
        self._queue = queue
        self._clock = clock

    async def _row(self, tenant_id: str, delivery_id: str) -> DeliveryRow:
        row = await self._table.get(tenant_id, delivery_id) if is_id(delivery_id, "whd") else None
        if row is None:
            raise NotFound(f"No webhook delivery with id {delivery_id!r}")
        return row

    async def get(self, tenant_id: str, delivery_id: str) -> WebhookDelivery:
        """One delivery of the tenant with every attempt (404 otherwise)."""
        return delivery_view(await self._row(tenant_id, delivery_id))

    async def page(
        self, tenant_id: str, *, resource_id: str | None, status: str | None, limit: int, after: str | None
    ) -> Page[WebhookDelivery]:
        """Newest first; filters `resource_id` and `status`."""
        status = parse_filter(status, DELIVERY_STATUSES, "status")
        if after is not None and not is_id(after, "whd"):
            raise ValidationFailed("after must be an id starting with whd_", param="after")
        if resource_id is not None and kind_of(resource_id) is None:
            return page([], False)  # no resource has such an id
        rows, more = await self._table.page(
            tenant_id, resource_id=resource_id, status=status, limit=limit, after=after
        )
        return page([delivery_view(r) for r in rows], more)

    async def redeliver(self, tenant_id: str, delivery_id: str) -> WebhookDelivery:
        """Make the delivery pending with one immediate attempt (no automatic retries after it)."""
        await self._row(tenant_id, delivery_id)
        row = await self._table.make_due(tenant_id, delivery_id, self._clock.now())
        if row is None:  # deleted in between (its job was purged)
            raise Conflict(f"Webhook delivery {delivery_id} cannot be redelivered")
        try:
            await self._queue.enqueue(DELIVER.actor, delivery_id, queue=DELIVER.queue)
        except Exception as exc:  # the sweeper enqueues due deliveries it finds
            log.warning("redelivery %s not enqueued (%s); the sweeper will", delivery_id, type(exc).__name__)
        return delivery_view(row)
