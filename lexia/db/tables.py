"""SQLAlchemy Core tables mirroring sql/ (the migrations are the source of truth)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()


def _ts(name: str, **kw: object) -> Column[object]:
    return Column(name, DateTime(timezone=True), **kw)  # type: ignore[arg-type]


tenants = Table(
    "tenants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("audio_retention_hours", Integer),
    Column("result_retention_days", Integer),
    _ts("created_at", nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("requests_per_minute", Integer),
    Column("tokens_per_minute", Integer),
    Column("audio_seconds_per_hour", Integer),
    Column("max_concurrent_jobs", Integer),
    _ts("expires_at"),
    _ts("revoked_at"),
    _ts("last_used_at"),
    _ts("created_at", nullable=False),
    Column("created_by", Text),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    _ts("created_at", nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("route", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("kind", Text),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("audio_seconds", Float, nullable=False),
    Column("diarization_seconds", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("stage", Text),
    Column("progress", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("options", JSONB, nullable=False),
    Column("result", JSONB),
    Column("error_code", Text),
    Column("error_message", Text),
    Column("warnings", JSONB, nullable=False),
    Column("audio_path", Text),
    Column("audio_url", Text),
    Column("audio_filename", Text),
    Column("audio_duration", Float),
    Column("webhook_url", Text),
    Column("webhook_auth_header_name", Text),
    Column("webhook_auth_header_value", Text),
    Column("webhook_status_code", Integer),
    Column("metadata", JSONB),
    Column("audio_retention_hours", Integer, nullable=False),
    Column("result_retention_days", Integer, nullable=False),
    Column("idempotency_key", Text),
    _ts("created_at", nullable=False),
    _ts("started_at"),
    _ts("finished_at"),
    _ts("lease_expires_at"),
    _ts("expires_at"),
    _ts("audio_expires_at"),
    _ts("deleted_at"),
    Column("idempotency_fingerprint", Text),
    _ts("idempotency_expires_at"),
    _ts("enqueued_at"),
    Column("enqueues", Integer, nullable=False),
    Column("worker", Text),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("attempts", JSONB, nullable=False),
    _ts("next_attempt_at"),
    _ts("created_at", nullable=False),
    Column("manual", Boolean, nullable=False),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    _ts("previous_expires_at"),
    _ts("created_at", nullable=False),
)
