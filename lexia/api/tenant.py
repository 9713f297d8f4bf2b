"""The caller's tenant (API.md §8.3, scope admin): retention defaults."""

from __future__ import annotations

from litestar import Controller, get, patch
from msgspec import UNSET

from lexia.api.errors import documented
from lexia.api.security import secured
from lexia.schemas.admin import TenantObject, TenantPatch
from lexia.services.access.keys import ApiKey
from lexia.services.access.tenants import TenantService


class TenantController(Controller):
    """/v1/admin/tenant."""

    path = "/v1/admin/tenant"
    opt = secured("admin")

    @get("/", responses=documented(404))
    async def get_tenant(self, caller: ApiKey, tenants: TenantService) -> TenantObject:
        """The caller's tenant with its effective retention defaults."""
        return await tenants.get(caller.tenant_id)

    @patch("/", responses=documented(400, 404, 413, 415, 422))
    async def patch_tenant(self, data: TenantPatch, caller: ApiKey, tenants: TenantService) -> TenantObject:
        """Change retention defaults (null = the server default); they apply to resources created afterwards."""
        changes = {k: v for k in data.__struct_fields__ if (v := getattr(data, k)) is not UNSET}
        return await tenants.update(caller.tenant_id, changes)
