"""One renderer for every error: the OpenAI envelope, also for the framework's own errors."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lexia.api.requestid import request_id
from lexia.errors import (
    InternalError,
    InvalidJSON,
    InvalidRequest,
    LexiaError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)

log = logging.getLogger("lexia.api")

_PATH = re.compile(r"at `\$((?:\.[^`.\[]+|\[\d+\])*)`")
_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def msgspec_param(message: str) -> str | None:
    """Turn msgspec's `at $.messages[0].content` into `messages.0.content` (plus a named field)."""
    match = _PATH.search(message)
    path = re.sub(r"\[(\d+)\]", r".\1", match.group(1)).lstrip(".") if match else ""
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    return path or None


def is_unknown_field(message: str) -> bool:
    """True for msgspec's 'Object contains unknown field' errors."""
    return "contains unknown field" in message


def msgspec_message(message: str) -> str:
    """msgspec's message without the JSON path suffix."""
    return message.split(" - at `$", 1)[0]


def error_response(exc: LexiaError, request_id_value: str | None = None) -> Response[bytes]:
    """Render a LexiaError as an OpenAI error response."""
    return Response(
        content=msgspec.json.encode(exc.body()),
        status_code=exc.status,
        media_type="application/json",
        headers=exc.headers,
    )


def _from_http_exception(exc: HTTPException) -> LexiaError:
    if isinstance(exc, NotFoundException):
        return NotFound("Unknown route or resource")
    if isinstance(exc, MethodNotAllowedException):
        not_allowed = MethodNotAllowed("Method not allowed for this route")
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        if allow:
            not_allowed.headers["Allow"] = allow
        return not_allowed
    if isinstance(exc, ValidationException):
        return _from_validation(exc)
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        return PayloadTooLarge("The request body is too large", code="request_too_large")
    if isinstance(exc, NotAuthorizedException | PermissionDeniedException):
        return InvalidRequest(str(exc.detail))
    if exc.status_code == 400:
        detail = str(exc.detail)
        if "JSON" in detail or "json" in detail:
            return InvalidJSON("The request body is not valid JSON")
        return InvalidRequest("Malformed request")
    if exc.status_code < 500:
        return InvalidRequest("Malformed request")
    return InternalError("Request failed")


def _from_validation(exc: ValidationException) -> LexiaError:
    extra: Any = exc.extra
    param: str | None = None
    message = "Invalid request"
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
        param = first.get("key")
        message = str(first.get("message") or message)
        if first.get("source") == "body" and "JSON" in str(exc.detail):
            return InvalidJSON("The request body is not valid JSON")
    return ValidationFailed(f"{param}: {message}" if param else message, param=param)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar exception handler for every exception type."""
    if isinstance(exc, LexiaError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = _from_http_exception(exc)
    elif isinstance(exc, msgspec.ValidationError):
        error = ValidationFailed(msgspec_message(str(exc)), param=msgspec_param(str(exc)))
    elif isinstance(exc, DBAPIError | RedisConnectionError | RedisTimeoutError) and _is_outage(exc):
        log.error("dependency unavailable: %s", type(exc).__name__)
        error = ServiceUnavailable("A backing service (database or Redis) is unavailable; retry shortly")
    else:
        rid = request_id(request.scope)
        log.error("unhandled error [%s] %s %s", rid, request.method, request.url.path, exc_info=exc)
        error = InternalError(f"Internal server error (request id {rid})")
    return error_response(error)


def _is_outage(exc: Exception) -> bool:
    """Connection-level failures (not SQL errors in our own queries)."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc, OperationalError | InterfaceError)
    return True
