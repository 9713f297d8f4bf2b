"""GET /v1/usage (API.md §8.5, scope usage): sums of the usage ledger per day, key and kind."""

from __future__ import annotations

from litestar import Controller, get

from lexia.api.errors import documented
from lexia.api.params import UsageDate, UsageKindFilter
from lexia.api.security import secured
from lexia.schemas.usage import UsageReport
from lexia.services.access.keys import ApiKey
from lexia.services.access.usage import UsageReports


class UsageController(Controller):
    """/v1/usage."""

    path = "/v1/usage"
    opt = secured("usage")

    @get("/", responses=documented(404, 422))
    async def usage(
        self, *, caller: ApiKey, usage_reports: UsageReports, start: UsageDate = None, end: UsageDate = None,
        kind: UsageKindFilter = None, key_id: str | None = None,
    ) -> UsageReport:
        """Usage of the calling key (or `key_id`, or `all` keys of the tenant) between two UTC dates."""
        query = usage_reports.query(start=start, end=end, kind=kind, key_id=key_id, caller_key=caller.id)
        return await usage_reports.summarize(caller.tenant_id, query)
