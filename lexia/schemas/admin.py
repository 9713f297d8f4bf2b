"""Key and tenant administration (API.md §8.2, §8.3): request bodies (unknown fields rejected) and objects."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

NonNegative = Annotated[int, Meta(ge=0, le=2_000_000_000)]
KeyName = Annotated[str, Meta(min_length=1, max_length=100)]
Scope = Literal["llm", "stt", "diarization", "jobs", "usage", "admin", "*"]
Scopes = Annotated[list[Scope], Meta(min_length=1)]
Expiry = Annotated[datetime, Meta(extra_json_schema={"format": "date-time"})]


class KeyLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Per-key limits; null = server default, 0 = unlimited."""

    requests_per_minute: NonNegative | UnsetType | None = UNSET
    tokens_per_minute: NonNegative | UnsetType | None = UNSET
    audio_seconds_per_hour: NonNegative | UnsetType | None = UNSET
    max_concurrent_jobs: NonNegative | UnsetType | None = UNSET

    def given(self) -> dict[str, int | None]:
        """Only the fields the client sent."""
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not UNSET}


class KeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/admin/keys."""

    name: KeyName
    scopes: Scopes
    limits: KeyLimits | None = None
    expires_at: Expiry | None = None


class KeyPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/admin/keys/{id}; absent fields are left unchanged."""

    name: KeyName | UnsetType = UNSET
    scopes: Scopes | UnsetType = UNSET
    limits: KeyLimits | UnsetType | None = UNSET
    expires_at: Expiry | UnsetType | None = UNSET


class TenantPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /v1/admin/tenant; null = back to the server default."""

    audio_retention_hours: Annotated[int, Meta(ge=0, le=8760)] | UnsetType | None = UNSET
    result_retention_days: Annotated[int, Meta(ge=0, le=3650)] | UnsetType | None = UNSET


class KeyLimitValues(msgspec.Struct, kw_only=True):
    """A key's own limits as stored (null = the server default, 0 = unlimited)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    audio_seconds_per_hour: int | None
    max_concurrent_jobs: int | None


class ApiKeyObject(msgspec.Struct, kw_only=True):
    """The api_key object (§8.2); its secret is never part of it."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    tenant: str
    prefix: str
    scopes: list[str]
    limits: KeyLimitValues
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    created_at: str
    created_by: str | None


class CreatedApiKey(ApiKeyObject, kw_only=True):
    """The creation response: the api_key object plus the plaintext `key`, shown only here."""

    key: str


class TenantObject(msgspec.Struct, kw_only=True):
    """The tenant object (§8.3) with its effective retention defaults."""

    object: Literal["tenant"] = "tenant"
    id: str
    audio_retention_hours: int
    result_retention_days: int
    created_at: str
