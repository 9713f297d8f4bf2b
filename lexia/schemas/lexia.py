"""Lexia-native request bodies (unknown fields rejected) and response shaping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with millisecond precision and a Z suffix."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


NonNegative = Annotated[int, Meta(ge=0, le=2_000_000_000)]


class KeyLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Per-key limits; null = server default, 0 = unlimited."""

    requests_per_minute: NonNegative | UnsetType | None = UNSET
    tokens_per_minute: NonNegative | UnsetType | None = UNSET
    audio_seconds_per_hour: NonNegative | UnsetType | None = UNSET
    max_concurrent_jobs: NonNegative | UnsetType | None = UNSET

    def given(self) -> dict[str, int | None]:
        """Only the fields the client sent."""
        return {
            k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not UNSET
        }


class KeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/admin/keys."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[str], Meta(min_length=1)]
    limits: KeyLimits | None = None
    expires_at: datetime | None = None


class KeyPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/admin/keys/{id}; absent fields are left unchanged."""

    name: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    scopes: Annotated[list[str], Meta(min_length=1)] | UnsetType = UNSET
    limits: KeyLimits | UnsetType | None = UNSET
    expires_at: datetime | UnsetType | None = UNSET


class TenantPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/admin/tenant."""

    audio_retention_hours: Annotated[int, Meta(ge=0, le=8760)] | UnsetType | None = UNSET
    result_retention_days: Annotated[int, Meta(ge=0, le=3650)] | UnsetType | None = UNSET


def key_object(key: Any, plaintext: str | None = None) -> dict[str, Any]:
    """The api_key object of §8.2."""
    body: dict[str, Any] = {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "tenant": key.tenant_id,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "limits": dict(key.limits),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
    }
    if plaintext is not None:
        body["key"] = plaintext
    return body


def job_resource_fields(row: Any, *, done: bool, queue_position: int | None = None) -> dict[str, Any]:
    """The fields transcripts and diarizations share (§4.2, §5), from `progress` to `deleted_at`."""
    failed = row.status == "error"
    return {
        "progress": round(float(row.progress), 4),
        "queue_position": queue_position if row.status == "queued" else None,
        "error": row.error_message if failed else None,
        "error_code": row.error_code if failed else None,
        "webhook_url": row.webhook_url,
        "webhook_auth": row.webhook_auth_header_name is not None,
        "webhook_auth_header_name": row.webhook_auth_header_name,
        "webhook_status_code": row.webhook_status_code,
        "audio_retention_hours": row.audio_retention_hours,
        "result_retention_days": row.result_retention_days,
        "metadata": row.metadata,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.finished_at) if done else None,
        "expires_at": iso(row.expires_at),
        "deleted_at": iso(row.deleted_at),
    }
