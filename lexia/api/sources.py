"""Audio request bodies: multipart (streamed to disk) or JSON, turned into typed request structs."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import InternalServerException

from lexia.api.deps import KEY_STATE, RL_HEADERS_STATE, caller, caller_limits, decode_json, services
from lexia.api.errors import msgspec_message, msgspec_param
from lexia.errors import (
    ClientDisconnected,
    RateLimited,
    UnknownParameter,
    UnsupportedMediaType,
    ValidationFailed,
)
from lexia.intake import FormData, Spool, StoredAudio, receive_multipart

log = logging.getLogger("lexia.api.audio")

T = TypeVar("T")
Req = Request[Any, Any, Any]
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_FIELD_PATH = re.compile(r"`\$\.([A-Za-z0-9_.]+)")


@dataclass(slots=True)
class AudioBody:
    """A parsed audio request: its fields as plain values and the uploaded file, if any."""

    data: dict[str, Any]
    audio: StoredAudio | None
    multipart: bool


def media_type(request: Req) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _body_chunks(request: Req) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except InternalServerException:
        # Litestar signals an http.disconnect while streaming this way.
        raise ClientDisconnected("The client disconnected while sending the request body") from None


def form_values(
    fields: dict[str, list[str]], *, list_fields: frozenset[str], object_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """§1.1 multipart encoding: `name[]` or repeated list fields, JSON-encoded object fields."""
    data: dict[str, Any] = {}
    for raw_name, values in fields.items():
        name = raw_name.removesuffix("[]")
        if name in list_fields:
            data.setdefault(name, []).extend(values)
            continue
        if len(values) > 1 or name in data:
            raise ValidationFailed(f"{name} was given more than once", param=name)
        value: Any = values[0]
        if name in object_fields:
            try:
                value = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raise ValidationFailed(f"{name} must be a JSON-encoded object", param=name) from None
        data[name] = value
    return data


async def read_audio_body(
    request: Req,
    spool: Spool,
    *,
    allow_json: bool,
    list_fields: frozenset[str],
    object_fields: frozenset[str] = frozenset(),
) -> AudioBody:
    """Receive a multipart body (audio streamed to the spool, 413 past the limit) or a JSON one."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        declared = request.headers.get("content-length")
        form: FormData = await receive_multipart(
            _body_chunks(request),
            request.headers.get("content-type", ""),
            spool,
            max_bytes=services(request).settings.audio.max_upload_bytes,
            content_length=int(declared) if declared and declared.isdigit() else None,
        )
        data = form_values(form.fields, list_fields=list_fields, object_fields=object_fields)
        return AudioBody(data, form.audio, multipart=True)
    if allow_json and (kind == "application/json" or kind.endswith("+json")):
        return AudioBody(await decode_json(request, dict[str, Any]), None, multipart=False)
    accepted = "multipart/form-data or application/json" if allow_json else "multipart/form-data"
    raise UnsupportedMediaType(f"Content-Type must be {accepted}", code="unsupported_content_type")


def convert(data: dict[str, Any], kind: type[T], *, lax: bool) -> T:
    """Fields to a request struct; unknown fields → 422 unknown_parameter where the struct forbids them."""
    try:
        return msgspec.convert(data, kind, strict=not lax)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN.search(text)
        if unknown:
            raise UnknownParameter(f"Unknown parameter: {unknown.group(1)}", param=unknown.group(1)) from None
        fallback = _FIELD_PATH.search(text)  # e.g. `$.metadata[...]` (a dict value or key)
        param = msgspec_param(text) or (fallback.group(1) if fallback else None)
        message = msgspec_message(text).split(" - at `", 1)[0]
        raise ValidationFailed(f"{param}: {message}" if param else message, param=param) from None


async def hold_slot(request: Req, holder: str, lease_seconds: float) -> None:
    """Take one of the key's concurrency slots (429 concurrency_limit_exceeded) and add the Jobs headers."""
    key = caller(request)
    limit = caller_limits(request)["max_concurrent_jobs"]
    svc = services(request)
    try:
        held = await svc.limiter.acquire_slot(key.id, holder, limit, lease_seconds)
    except RateLimited as exc:  # carries its own Retry-After and Jobs headers
        svc.metrics.rate_limited.labels(exc.code).inc()
        raise
    headers: dict[str, str] = request.scope["state"].setdefault(RL_HEADERS_STATE, {})
    headers["X-RateLimit-Limit-Jobs"] = str(limit)
    headers["X-RateLimit-Remaining-Jobs"] = str(max(0, limit - held) if limit > 0 else 0)


async def release_slot(request: Req, holder: str) -> None:
    """Give the slot back."""
    if KEY_STATE in request.scope["state"]:
        await services(request).limiter.release_slot(caller(request).id, holder)
