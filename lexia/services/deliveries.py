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
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from lexia.db.tables import jobs, webhook_deliveries
from lexia.errors import Conflict, NotFound, UrlNotAllowed, ValidationFailed
from lexia.ids import is_id
from lexia.netguard import NetGuard, ResolveError
from lexia.schemas.lexia import iso
from lexia.services.jobs import DELIVER_ACTOR, JobQueue
from lexia.services.podmetrics import PodMetrics
from lexia.services.webhooks import SecretStore, ordered_payload, signature_header

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
        db: AsyncEngine,
        queue: JobQueue,
        guard: NetGuard,
        *,
        timeout: float,
        delays: Sequence[float],
        transport: httpx.AsyncBaseTransport | None = None,
        pod: PodMetrics | None = None,
    ) -> None:
        self._db = db
        self._queue = queue
        self._guard = guard
        self._pod = pod  # counts lexia_webhook_attempts_total; None counts nothing
        self._timeout = timeout
        self._delays = tuple(delays)
        self._secrets = SecretStore(db)
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout)
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def _claim(self, delivery_id: str) -> Any:
        now = datetime.now(UTC)
        stmt = (
            webhook_deliveries.update()
            .where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.next_attempt_at <= now + timedelta(seconds=1),
            )
            .values(next_attempt_at=now + timedelta(seconds=self._timeout + CLAIM_MARGIN))
            .returning(webhook_deliveries)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                return None, None
            auth = (
                await conn.execute(
                    sa.select(jobs.c.webhook_auth_header_name, jobs.c.webhook_auth_header_value).where(
                        jobs.c.id == row.resource_id
                    )
                )
            ).first()
        return row, auth

    async def deliver(self, delivery_id: str) -> str | None:
        """One attempt if the delivery is due; returns the delivery's status afterwards (None if skipped)."""
        row, auth = await self._claim(delivery_id)
        if row is None:
            return None
        body = msgspec.json.encode(ordered_payload(row.payload))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": row.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(await self._secrets.signing(row.tenant_id), row.id, timestamp, body),
        }
        if auth is not None and auth.webhook_auth_header_name and auth.webhook_auth_header_value is not None:
            headers[auth.webhook_auth_header_name] = auth.webhook_auth_header_value
        started = datetime.now(UTC)
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

    async def _record(self, row: Any, started: datetime, outcome: AttemptResult) -> str:
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
        async with self._db.begin() as conn:
            await conn.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == row.id)
                .values(
                    attempts=webhook_deliveries.c.attempts.op("||")(sa.cast([attempt], JSONB)),
                    status=status,
                    next_attempt_at=next_at,
                    manual=False,
                )
            )
            await conn.execute(
                jobs.update().where(jobs.c.id == row.resource_id).values(webhook_status_code=outcome.status_code)
            )
        log.info(
            "webhook %s attempt %d for %s: %s", row.id, number, row.resource_id, outcome.error or outcome.status_code
        )
        if delay is not None:
            await self._queue.enqueue(DELIVER_ACTOR, row.id, delay=delay)
        return status


# -- the delivery log -----------------------------------------------------------------------


def delivery_object(row: Any) -> dict[str, Any]:
    """The webhook_delivery object (§7.4)."""
    return {
        "id": row.id,
        "object": "webhook_delivery",
        "resource_id": row.resource_id,
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "payload": ordered_payload(row.payload),
        "attempts": [
            {k: a.get(k) for k in ("number", "at", "status_code", "latency_ms", "error")} for a in row.attempts or []
        ],
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "created_at": iso(row.created_at),
    }


class DeliveryLog:
    """Tenant-scoped reads of deliveries and the redeliver operation."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def get(self, tenant_id: str, delivery_id: str) -> Any:
        """One delivery of the tenant (404 otherwise)."""
        if not is_id(delivery_id, "whd"):
            raise NotFound(f"No webhook delivery with id {delivery_id!r}")
        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(webhook_deliveries).where(
                        webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.tenant_id == tenant_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"No webhook delivery with id {delivery_id!r}")
        return row

    async def list(
        self, tenant_id: str, *, resource_id: str | None, status: str | None, limit: int, after: str | None
    ) -> tuple[list[Any], bool]:
        """Newest first; return (page, has_more)."""
        query = sa.select(webhook_deliveries).where(webhook_deliveries.c.tenant_id == tenant_id)
        if resource_id is not None:
            query = query.where(webhook_deliveries.c.resource_id == resource_id)
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        if after is not None:
            query = query.where(webhook_deliveries.c.id < after)
        query = query.order_by(webhook_deliveries.c.id.desc()).limit(limit + 1)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return list(rows[:limit]), len(rows) > limit

    async def redeliver(self, tenant_id: str, delivery_id: str, queue: JobQueue) -> Any:
        """Make the delivery pending with one immediate attempt (no automatic retries after it)."""
        await self.get(tenant_id, delivery_id)
        now = datetime.now(UTC)
        stmt = (
            webhook_deliveries.update()
            .where(webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.tenant_id == tenant_id)
            .values(
                # A finished delivery gets exactly one more attempt; a pending one is simply due now.
                manual=webhook_deliveries.c.status != "pending",
                status="pending",
                next_attempt_at=now,
            )
            .returning(webhook_deliveries)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:  # deleted in between (its job was purged)
            raise Conflict(f"Webhook delivery {delivery_id} cannot be redelivered")
        try:
            await queue.enqueue(DELIVER_ACTOR, delivery_id)
        except Exception as exc:  # the sweeper enqueues due deliveries it finds
            log.warning("redelivery %s not enqueued (%s); the sweeper will", delivery_id, type(exc).__name__)
        return row
