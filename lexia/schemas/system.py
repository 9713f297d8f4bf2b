"""System routes and the model list (API.md §2, §3.1)."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from lexia.schemas.common import ErrorDetail


class Root(msgspec.Struct, kw_only=True):
    """GET /: name, version and links."""

    name: str
    version: str
    docs: str
    openapi: str
    health: str
    ready: str


class Health(msgspec.Struct, kw_only=True):
    """GET /health: the process serves HTTP."""

    status: Literal["ok"] = "ok"
    version: str


class Readiness(msgspec.Struct, kw_only=True):
    """GET /ready: each dependency `ok`, `fail` or `disabled`; on 503 also an error object."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
    error: ErrorDetail | UnsetType = UNSET


class Model(msgspec.Struct, kw_only=True):
    """An OpenAI model object with Lexia's `kind`, `status`, `aliases` (and `context_length` for LLMs)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lexia"
    kind: str
    status: str
    aliases: list[str]
    context_length: int | UnsetType | None = UNSET


class ModelList(msgspec.Struct, kw_only=True):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[Model]
