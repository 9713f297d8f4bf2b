"""Typed rows: what the query modules hand to the services (never SQLAlchemy Row objects)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of `jobs`: a transcription or diarization and its job (they share the id)."""

    id: str
    tenant_id: str
    key_id: str
    kind: str
    mode: str
    status: str
    stage: str | None
    progress: float
    attempts: int
    options: dict[str, Any]
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    warnings: list[dict[str, str]]
    audio_path: str | None
    audio_url: str | None
    audio_filename: str | None
    audio_duration: float | None
    webhook_url: str | None
    webhook_auth_header_name: str | None
    webhook_auth_header_value: str | None = field(repr=False)  # a secret: never in logs or reprs
    webhook_status_code: int | None
    metadata: dict[str, str] | None
    audio_retention_hours: int
    result_retention_days: int
    idempotency_key: str | None = field(repr=False)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    expires_at: datetime | None
    audio_expires_at: datetime | None
    deleted_at: datetime | None
    idempotency_fingerprint: str | None = field(repr=False)
    idempotency_expires_at: datetime | None
    enqueued_at: datetime | None
    enqueues: int
    worker: str | None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One row of `api_keys`, without its hash."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    scopes: list[str]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    audio_seconds_per_hour: int | None
    max_concurrent_jobs: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    created_by: str | None


@dataclass(frozen=True, slots=True)
class TenantRow:
    """One row of `tenants`; retention fields are None where the server default applies."""

    id: str
    audio_retention_hours: int | None
    result_retention_days: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One row of `webhook_deliveries`."""

    id: str
    tenant_id: str
    resource_id: str
    event: str
    url: str
    status: str
    payload: dict[str, Any]
    attempts: list[dict[str, Any]]
    next_attempt_at: datetime | None
    created_at: datetime
    manual: bool


@dataclass(frozen=True, slots=True)
class SecretRow:
    """One row of `webhook_secrets`."""

    tenant_id: str
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_expires_at: datetime | None
    created_at: datetime


def _names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind))


JOB_FIELDS = _names(JobRow)
KEY_FIELDS = _names(KeyRow)
TENANT_FIELDS = _names(TenantRow)
DELIVERY_FIELDS = _names(DeliveryRow)
SECRET_FIELDS = _names(SecretRow)


def job_row(row: Any) -> JobRow:
    """A JobRow from a SQLAlchemy row holding the jobs columns (extra columns are ignored)."""
    values = row._mapping
    return JobRow(*(values[name] for name in JOB_FIELDS))


def key_row(row: Any) -> KeyRow:
    """A KeyRow from a SQLAlchemy row of api_keys."""
    values = row._mapping
    return KeyRow(*(values[name] for name in KEY_FIELDS))


def tenant_row(row: Any) -> TenantRow:
    """A TenantRow from a SQLAlchemy row of tenants."""
    values = row._mapping
    return TenantRow(*(values[name] for name in TENANT_FIELDS))


def delivery_row(row: Any) -> DeliveryRow:
    """A DeliveryRow from a SQLAlchemy row of webhook_deliveries."""
    values = row._mapping
    return DeliveryRow(*(values[name] for name in DELIVERY_FIELDS))


def secret_row(row: Any) -> SecretRow:
    """A SecretRow from a SQLAlchemy row of webhook_secrets."""
    values = row._mapping
    return SecretRow(*(values[name] for name in SECRET_FIELDS))
