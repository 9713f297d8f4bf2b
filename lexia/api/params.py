"""Typed query and header parameters shared by several routes (documented in /openapi.json)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from litestar.params import Parameter

from lexia.ids import id_pattern
from lexia.services.access.idempotency import HEADER
from lexia.services.access.usage import KINDS as USAGE_KINDS
from lexia.services.jobs.kinds import KINDS as JOB_KINDS
from lexia.services.jobs.kinds import STATUSES
from lexia.services.webhooks.deliveries import DELIVERY_STATUSES

Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size, 1..100 (§1.5)")]
After = Annotated[str | None, Parameter(description="List items older than this id (§1.5)")]


def after_of(*prefixes: str) -> Any:
    """`after` of a list whose ids have these prefixes (422 for another value)."""
    return Parameter(
        description="List items older than this id (§1.5)", schema_extra={"pattern": id_pattern(*prefixes)}
    )


AfterTranscript = Annotated[str | None, after_of("tr")]
AfterDiarization = Annotated[str | None, after_of("dz")]
AfterJob = Annotated[str | None, after_of("tr", "dz")]
AfterDelivery = Annotated[str | None, after_of("whd")]
AfterKey = Annotated[str | None, after_of("key")]
IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header=HEADER, required=False, description="§1.7: 1..255 printable ASCII characters",
        schema_extra={"pattern": "^[!-~]([ -~]*[!-~])?$", "maxLength": 255},
    ),
]


def one_of(values: Sequence[str], description: str) -> Any:
    """A query filter documented with its allowed values (the service answers 422 for others)."""
    return Parameter(description=description, schema_extra={"enum": list(values)})


StatusFilter = Annotated[str | None, one_of(STATUSES, "Only resources in this status")]
JobKindFilter = Annotated[str | None, one_of(tuple(JOB_KINDS), "Only jobs of this kind")]
DeliveryStatusFilter = Annotated[str | None, one_of(DELIVERY_STATUSES, "Only deliveries in this state")]
UsageKindFilter = Annotated[str | None, one_of(USAGE_KINDS, "Only usage of this kind")]
UsageDate = Annotated[
    str | None, Parameter(description="A UTC date, YYYY-MM-DD (inclusive)", schema_extra={"format": "date"})
]
