"""Key and tenant administration routes (scope admin), always within the caller's tenant."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from msgspec import UNSET

from lexia.api.deps import bool_param, caller, decode_json, list_body, page_params, services
from lexia.api.security import route_opt
from lexia.errors import ValidationFailed
from lexia.schemas.lexia import KeyCreate, KeyPatch, TenantPatch, iso, key_object
from lexia.services.keys import KeyUpdate, check_grantable, normalise_scopes
from lexia.services.tenants import TenantService

Req = Request[Any, Any, Any]


class KeyController(Controller):
    """/v1/admin/keys."""

    path = "/v1/admin/keys"
    opt = route_opt("admin")

    @post("/", status_code=201)
    async def create_key(self, request: Req) -> dict[str, Any]:
        """Create a key in the caller's tenant; the plaintext is returned only here."""
        body = await decode_json(request, KeyCreate)
        me = caller(request)
        scopes = normalise_scopes(body.scopes)
        check_grantable(me, scopes)
        _check_future(body.expires_at)
        key, plaintext = await services(request).keys.create(
            tenant_id=me.tenant_id,
            name=body.name,
            scopes=scopes,
            limits=body.limits.given() if body.limits else None,
            expires_at=body.expires_at,
            created_by=me.id,
        )
        return key_object(key, plaintext)

    @get("/")
    async def list_keys(self, request: Req) -> dict[str, Any]:
        """Keys of the caller's tenant, newest first."""
        page = page_params(request, "key")
        keys, more = await services(request).keys.list(
            caller(request).tenant_id,
            limit=page.limit,
            after=page.after,
            include_revoked=bool_param(request, "include_revoked", False),
        )
        return list_body([key_object(k) for k in keys], more)

    @get("/{key_id:str}")
    async def get_key(self, request: Req) -> dict[str, Any]:
        """One key of the caller's tenant."""
        key_id = request.path_params["key_id"]
        return key_object(await services(request).keys.get(caller(request).tenant_id, key_id))

    @patch("/{key_id:str}")
    async def patch_key(self, request: Req) -> dict[str, Any]:
        """Change name, scopes, limits or expiry."""
        key_id = request.path_params["key_id"]
        me = caller(request)
        keys = services(request).keys
        await keys.get(me.tenant_id, key_id)  # 404 before validating a body for a foreign id
        body = await decode_json(request, KeyPatch)
        fields: dict[str, Any] = {}
        if body.name is not UNSET:
            fields["name"] = body.name
        if body.scopes is not UNSET:
            scopes = normalise_scopes(body.scopes)
            check_grantable(me, scopes)
            fields["scopes"] = scopes
        if body.limits is None:
            fields.update(
                requests_per_minute=None,
                tokens_per_minute=None,
                audio_seconds_per_hour=None,
                max_concurrent_jobs=None,
            )
        elif body.limits is not UNSET:
            fields.update(body.limits.given())
        if body.expires_at is not UNSET:
            _check_future(body.expires_at)
            fields["expires_at"] = body.expires_at
        key = await keys.update(me.tenant_id, key_id, KeyUpdate(fields))
        return key_object(key)

    @delete("/{key_id:str}", status_code=200)
    async def revoke_key(self, request: Req) -> dict[str, Any]:
        """Revoke at once (idempotent)."""
        key_id = request.path_params["key_id"]
        return key_object(await services(request).keys.revoke(caller(request).tenant_id, key_id))


def _check_future(value: Any) -> None:
    from datetime import UTC, datetime

    if value is None:
        return
    if value.tzinfo is None:
        raise ValidationFailed("expires_at must include a time zone (e.g. Z)", param="expires_at")
    if value <= datetime.now(UTC):
        raise ValidationFailed("expires_at must be in the future", param="expires_at")


class TenantController(Controller):
    """/v1/admin/tenant."""

    path = "/v1/admin/tenant"
    opt = route_opt("admin")

    @staticmethod
    def _service(request: Req) -> TenantService:
        retention = services(request).settings.retention
        return TenantService(
            services(request).db, audio_hours=retention.audio_hours, result_days=retention.result_days
        )

    @get("/")
    async def get_tenant(self, request: Req) -> dict[str, Any]:
        """The caller's tenant."""
        return _tenant_object(await self._service(request).get(caller(request).tenant_id))

    @patch("/")
    async def patch_tenant(self, request: Req) -> dict[str, Any]:
        """Change retention defaults."""
        body = await decode_json(request, TenantPatch)
        changes = {
            k: v for k in body.__struct_fields__ if (v := getattr(body, k)) is not UNSET
        }
        tenant = await self._service(request).update(caller(request).tenant_id, changes)
        return _tenant_object(tenant)


def _tenant_object(tenant: Any) -> dict[str, Any]:
    return {
        "object": "tenant",
        "id": tenant.id,
        "audio_retention_hours": tenant.audio_retention_hours,
        "result_retention_days": tenant.result_retention_days,
        "created_at": iso(tenant.created_at),
    }
