"""Webhook events (API.md §7.1): the thin payload of a terminal state and the request's webhook fields.

One delivery per resource and terminal event, written in the same statement as the terminal
state (lexia.services.jobs.lifecycle); lexia.services.webhooks.deliveries makes the attempts.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lexia.db.rows import JobRow
from lexia.db.webhooks import NewDelivery
from lexia.errors import ValidationFailed
from lexia.ids import new_id
from lexia.netguard import NetGuard, ResolveError
from lexia.schemas.common import iso
from lexia.services.jobs.kinds import JobKind, result_url

MAX_AUTH_VALUE = 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}$")
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"})
_ORDER = ("type", "transcript_id", "diarization_id", "job_id", "kind", "status", "error", "result_url", "metadata",
          "timestamp")


@dataclass(frozen=True, slots=True)
class Target:
    """An actor and the queue it listens on."""

    actor: str
    queue: str


# Deliveries have their own queue so they never wait behind long jobs (`--queues webhooks`).
DELIVER = Target("webhook.deliver", "webhooks")


def event_payload(
    row: JobRow, kind: JobKind, status: str, error: dict[str, str] | None, at: datetime
) -> dict[str, Any]:
    """The thin §7.1 body of a terminal event."""
    return {
        "type": f"{kind.noun}.{status}",
        f"{kind.noun}_id": row.id,
        "job_id": row.id,
        "kind": row.kind,
        "status": status,
        "error": error,
        "result_url": result_url(row),
        "metadata": row.metadata,
        "timestamp": iso(at),
    }


def new_delivery(row: JobRow, kind: JobKind, status: str, error: dict[str, str] | None, at: datetime) -> NewDelivery:
    """The delivery of one terminal event (written only if the row has a webhook_url)."""
    payload = event_payload(row, kind, status, error, at)
    return NewDelivery(id=new_id("whd"), event=payload["type"], payload=payload, at=at)


def ordered_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload in its documented field order (jsonb does not keep key order)."""
    out = {k: payload[k] for k in _ORDER if k in payload}
    if isinstance(out.get("error"), dict):
        out["error"] = {"code": out["error"].get("code"), "message": out["error"].get("message")}
    out.update({k: v for k, v in payload.items() if k not in out})
    return out


async def check_webhook(guard: NetGuard, url: str | None, header_name: str | None, header_value: str | None) -> None:
    """§4.3 webhook fields: URL vetted by the SSRF guard; the auth header both-or-neither, a token."""
    if (header_name is None) != (header_value is None):
        raise ValidationFailed(
            "webhook_auth_header_name and webhook_auth_header_value go together", param="webhook_auth_header_name"
        )
    if header_name is not None:
        lowered = header_name.lower()
        if not _TOKEN.match(header_name) or lowered in _HOP_BY_HOP or lowered.startswith(("content-", "webhook-")):
            raise ValidationFailed(
                "webhook_auth_header_name must be a header name other than Host, Content-* or webhook-*",
                param="webhook_auth_header_name",
            )
    if header_value is not None and (len(header_value) > MAX_AUTH_VALUE or any(c in header_value for c in "\r\n\0")):
        raise ValidationFailed(
            f"webhook_auth_header_value must be at most {MAX_AUTH_VALUE} characters on one line",
            param="webhook_auth_header_value",
        )
    if url is not None:
        with contextlib.suppress(ResolveError):  # may resolve later; every attempt is vetted and logged
            await guard.vet(url, param="webhook_url")
    elif header_name is not None:
        raise ValidationFailed("webhook_auth_header_name needs a webhook_url", param="webhook_url")
