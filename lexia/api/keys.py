"""API keys (API.md §8.2, scope admin), always within the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Controller, delete, get, patch, post
from msgspec import UNSET

from lexia.api.errors import documented
from lexia.api.params import AfterKey, Limit
from lexia.api.security import secured
from lexia.errors import ValidationFailed
from lexia.schemas.admin import ApiKeyObject, CreatedApiKey, KeyCreate, KeyPatch
from lexia.schemas.common import Page, page
from lexia.services.access.keys import (
    LIMIT_NAMES,
    ApiKey,
    KeyService,
    KeyUpdate,
    check_grantable,
    created_key_view,
    key_view,
    normalise_scopes,
)

BODY_ERRORS = (400, 413, 415, 422)
# Far enough to be valid in every time zone and in PostgreSQL (which stops at year 294276).
LATEST_EXPIRY = datetime(9999, 1, 1, tzinfo=UTC)


def check_expiry(value: datetime | None, now: datetime) -> None:
    """`expires_at`: in the future, with a time zone, before year 9999 (422 otherwise)."""
    if value is None:
        return
    if value.tzinfo is None:
        raise ValidationFailed("expires_at must include a time zone (e.g. Z)", param="expires_at")
    if value <= now:
        raise ValidationFailed("expires_at must be in the future", param="expires_at")
    if value >= LATEST_EXPIRY:
        raise ValidationFailed("expires_at must be before the year 9999", param="expires_at")


class KeyController(Controller):
    """/v1/admin/keys."""

    path = "/v1/admin/keys"
    opt = secured("admin")

    @post("/", status_code=201, responses=documented(*BODY_ERRORS, 404))
    async def create_key(self, data: KeyCreate, caller: ApiKey, keys: KeyService) -> CreatedApiKey:
        """Create a key in the caller's tenant; the plaintext is returned only here."""
        scopes = normalise_scopes(data.scopes)
        check_grantable(caller, scopes)
        check_expiry(data.expires_at, keys.now())
        key, plaintext = await keys.create(
            tenant_id=caller.tenant_id, name=data.name, scopes=scopes,
            limits=data.limits.given() if data.limits else None, expires_at=data.expires_at, created_by=caller.id,
        )
        return created_key_view(key, plaintext)

    @get("/", responses=documented(422))
    async def list_keys(
        self, caller: ApiKey, keys: KeyService, limit: Limit = 20, after: AfterKey = None, include_revoked: bool = False
    ) -> Page[ApiKeyObject]:
        """Keys of the caller's tenant, newest first."""
        found, more = await keys.page(caller.tenant_id, limit=limit, after=after, include_revoked=include_revoked)
        return page([key_view(k) for k in found], more)

    @get("/{key_id:str}", responses=documented(404))
    async def get_key(self, key_id: str, caller: ApiKey, keys: KeyService) -> ApiKeyObject:
        """One key of the caller's tenant."""
        return key_view(await keys.get(caller.tenant_id, key_id))

    @patch("/{key_id:str}", responses=documented(*BODY_ERRORS, 404, 409))
    async def patch_key(self, key_id: str, data: KeyPatch, caller: ApiKey, keys: KeyService) -> ApiKeyObject:
        """Change name, scopes, limits (per field; null = server default) or expiry (null = never)."""
        await keys.get(caller.tenant_id, key_id)  # 404 before judging the body for a foreign id
        fields: dict[str, object] = {}
        if data.name is not UNSET:
            fields["name"] = data.name
        if data.scopes is not UNSET:
            fields["scopes"] = normalise_scopes(data.scopes)
            check_grantable(caller, fields["scopes"])  # type: ignore[arg-type]
        if data.limits is None:
            fields.update(dict.fromkeys(LIMIT_NAMES))
        elif data.limits is not UNSET:
            fields.update(data.limits.given())
        if data.expires_at is not UNSET:
            check_expiry(data.expires_at, keys.now())
            fields["expires_at"] = data.expires_at
        return key_view(await keys.update(caller.tenant_id, key_id, KeyUpdate(fields)))

    @delete("/{key_id:str}", status_code=200, responses=documented(404, 409))
    async def revoke_key(self, key_id: str, caller: ApiKey, keys: KeyService) -> ApiKeyObject:
        """Revoke at once (idempotent); the tenant's last active admin key answers 409."""
        return key_view(await keys.revoke(caller.tenant_id, key_id))
