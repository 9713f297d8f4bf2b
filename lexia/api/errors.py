"""One renderer for every error (the OpenAI envelope, framework errors included), the one converter of
validation errors, and the error responses each route documents."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
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
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

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
    UnknownParameter,
    UnsupportedMediaType,
    ValidationFailed,
)
from lexia.logs import Throttle, safe_traceback
from lexia.schemas.common import ErrorResponse
from lexia.services.health import is_outage

log = logging.getLogger("lexia.api")
OUTAGE_LOG_SECONDS = 10.0
_OUTAGE_LOG = Throttle(OUTAGE_LOG_SECONDS)  # a database outage is one line per 10 s, not one per request

_PATH = re.compile(r"at (?:`key` in )?`\$((?:\.[^`.\[]+|\[\d+\])*)`")  # `key` in: a dict key at fault
_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_KEY = re.compile(r"`\$\.([A-Za-z0-9_.]+)\[")  # a dict key or value, e.g. `$.metadata[...]`


def validation_error(message: str) -> LexiaError:
    """The 422 of a msgspec validation message: `param` is the dotted path (`messages.0.content`);
    an unknown field is `unknown_parameter` naming that field."""
    match = _PATH.search(message)
    path = re.sub(r"\[(\d+)\]", r".\1", match.group(1)).lstrip(".") if match else ""
    field = _FIELD.search(message)
    if field:
        path = f"{path}.{field.group(1)}" if path else field.group(1)
    if not path and (key := _KEY.search(message)):
        path = key.group(1)
    text = re.split(r" - at (?:`key` in )?`\$", message, maxsplit=1)[0]
    if "contains unknown field" in message:
        return UnknownParameter(f"Unknown parameter: {path}", param=path or None)
    return ValidationFailed(f"{path}: {text}" if path else text, param=path or None)


def _from_litestar_validation(request: Request[Any, Any, Any], exc: ValidationException) -> LexiaError:
    """Query and path parameters Litestar validated, and a missing JSON body."""
    extra: Any = exc.extra
    first = extra[0] if isinstance(extra, list) and extra and isinstance(extra[0], dict) else {}
    param = first.get("key")
    if first.get("source") == "body" and param == "data":
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json"):
            return UnsupportedMediaType("Content-Type must be application/json", code="unsupported_content_type")
        return InvalidJSON("The request body is not valid JSON")
    message = str(first.get("message") or "Invalid request")
    return ValidationFailed(f"{param}: {message}" if param else message, param=param)


def error_response(exc: LexiaError) -> Response[bytes]:
    """Render a LexiaError as an OpenAI error response."""
    return Response(
        content=msgspec.json.encode(exc.body()), status_code=exc.status, media_type="application/json",
        headers=exc.headers,
    )


def _from_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> LexiaError:
    if isinstance(exc, NotFoundException):
        return NotFound("Unknown route or resource")
    if isinstance(exc, MethodNotAllowedException):
        not_allowed = MethodNotAllowed("Method not allowed for this route")
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        if allow:
            not_allowed.headers["Allow"] = allow
        return not_allowed
    if isinstance(exc, ValidationException):
        return _from_litestar_validation(request, exc)
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        limit = request.route_handler.resolve_request_max_body_size()
        size = f" of {limit} bytes" if limit else ""
        return PayloadTooLarge(f"The request body exceeds the limit{size}", code="request_too_large")
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


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar exception handler for every exception type."""
    if isinstance(exc, LexiaError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = _from_http_exception(request, exc)
    elif isinstance(exc, msgspec.ValidationError):
        error = validation_error(str(exc))
    elif is_outage(exc):
        if count := _OUTAGE_LOG(type(exc).__name__):
            log.error("dependency unavailable: %s (%d requests answered 503 since the last line; at most one "
                      "line per %.0f s)", type(exc).__name__, count, OUTAGE_LOG_SECONDS)
        error = ServiceUnavailable("A backing service (database or Redis) is unavailable; retry shortly")
    else:
        rid = request_id(request.scope)
        # Rendered here, with database drivers' messages withheld, so no handler can print row values.
        trace = safe_traceback((type(exc), exc, exc.__traceback__))
        log.error("unhandled error [%s] %s %s\n%s", rid, request.method, request.url.path, trace)
        error = InternalError(f"Internal server error (request id {rid})")
    return error_response(error)


# -- what each route documents ------------------------------------------------------------------

_DESCRIPTIONS = {
    400: "Malformed request: invalid JSON, bad header or form encoding",
    401: "Missing, malformed, unknown, expired or revoked API key",
    403: "The key lacks the route's scope",
    404: "Unknown id (or another tenant's), or unknown model",
    409: "Conflict with the resource's state",
    410: "The content was deleted",
    413: "Body, upload or audio over its limit",
    415: "Unsupported media type, or unusable audio",
    422: "Invalid field (param names it)",
    429: "A per-key limit is exhausted (Retry-After)",
    500: "Internal or engine failure (the message names the request id)",
    503: "Engine, database or Redis unavailable, or overloaded (Retry-After)",
    504: "Sync processing exceeded its wait limit (Location of the resource)",
}
# Every route can answer 500; every authenticated one also these (400: a malformed query, header or
# body encoding, which Litestar would otherwise document in its own error shape).
SECURED = (400, 401, 403, 429, 503)


def documented(*statuses: int, public: bool = False) -> dict[int, ResponseSpec]:
    """The error responses of a route: the given statuses and 500, plus those of authentication unless public."""
    codes: Iterable[int] = sorted({*statuses, 500, *(() if public else SECURED)})
    return {
        code: ResponseSpec(data_container=ErrorResponse, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in codes
    }
