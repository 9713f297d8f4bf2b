"""LexiaError tree: each class carries its HTTP status and OpenAI error type and code."""

from __future__ import annotations

from typing import Any, ClassVar


class LexiaError(Exception):
    """Base of every error a client may see; rendered in the OpenAI error envelope."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(LexiaError):
    """400: body not parseable or malformed request."""

    status = 400
    type = "invalid_request_error"
    code = "malformed_request"


class InvalidJSON(InvalidRequest):
    """400: the body is not valid JSON."""

    code = "invalid_json"


class AudioTooShort(InvalidRequest):
    """400: the audio is shorter than the minimum the engines can work on (as OpenAI answers)."""

    code = "audio_too_short"


class ContextLengthExceeded(InvalidRequest):
    """400: prompt plus requested output exceed the model context."""

    code = "context_length_exceeded"


class AuthenticationFailed(LexiaError):
    """401: missing, malformed, unknown, expired or revoked key."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str = "invalid_api_key") -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": 'Bearer realm="lexia"'})


class PermissionDenied(LexiaError):
    """403: the key lacks the scope the route requires."""

    status = 403
    type = "permission_error"
    code = "insufficient_scope"


class NotFound(LexiaError):
    """404: unknown route or id, or another tenant's resource."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """404: the model is not served for this route."""

    code = "model_not_found"

    def __init__(self, model: str, *, param: str | None = "model") -> None:
        shown = model if len(model) <= 200 else model[:200] + "…"
        super().__init__(f"The model '{shown}' does not exist or is not served here", param=param)


class MethodNotAllowed(LexiaError):
    """405: wrong method for the route."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(LexiaError):
    """409: the resource's state forbids the operation."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class Gone(LexiaError):
    """410: content of a deleted or expired resource."""

    status = 410
    type = "invalid_request_error"
    code = "deleted"


class PayloadTooLarge(LexiaError):
    """413: over a size or duration limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(LexiaError):
    """431: the request's headers together exceed the server's limit."""

    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


class UnsupportedMediaType(LexiaError):
    """415: request media type or audio not usable."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_type"


class AudioDecodeError(UnsupportedMediaType):
    """415: audio empty, without an audio stream or undecodable."""

    code = "audio_decode_failed"


class ValidationFailed(LexiaError):
    """422: a field is missing or invalid."""

    status = 422
    type = "invalid_request_error"
    code = "validation_error"


class UnknownParameter(ValidationFailed):
    """422: a field this route does not accept."""

    code = "unknown_parameter"


class RateLimited(LexiaError):
    """429: a per-key limit is exhausted; carries Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int,
        code: str = "rate_limit_exceeded",
        headers: dict[str, str] | None = None,
    ) -> None:
        merged = dict(headers or {})
        merged["Retry-After"] = str(max(1, retry_after))
        super().__init__(message, code=code, headers=merged)
        self.retry_after = max(1, retry_after)


class InternalError(LexiaError):
    """500: unexpected failure; the message names the request id."""


class ServiceUnavailable(LexiaError):
    """503: a dependency or engine is down, or the server is overloaded."""

    status = 503
    type = "server_error"
    code = "dependency_unavailable"

    def __init__(
        self, message: str, *, code: str = "dependency_unavailable", retry_after: int = 5
    ) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class EngineUnavailable(ServiceUnavailable):
    """503: engine disabled, not loaded or failing its check."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, code="engine_unavailable", retry_after=retry_after)


class Overloaded(ServiceUnavailable):
    """503: the LLM or job queue is full."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, code="overloaded", retry_after=retry_after)


class ProcessingTimeout(LexiaError):
    """504: a sync route exceeded its wait limit."""

    status = 504
    type = "server_error"
    code = "processing_timeout"


class InvalidURL(ValidationFailed):
    """422: a URL that is not http(s), has user info, or is too long."""

    code = "invalid_url"


class UrlNotAllowed(ValidationFailed):
    """422: the SSRF guard refused the target address (API.md §7.5)."""

    code = "url_not_allowed"


class AudioFetchFailed(ValidationFailed):
    """422: an audio_url download failed (status, network error or timeout)."""

    code = "audio_fetch_failed"


class UnsupportedLanguage(ValidationFailed):
    """422: the STT model does not know this language."""

    code = "unsupported_language"


class ClientDisconnected(InvalidRequest):
    """400: the client went away while its request body was being received."""


class TranscriptionFailed(LexiaError):
    """500: the STT engine failed on a sync route."""

    code = "transcription_failed"


class DiarizationFailed(LexiaError):
    """500: the diarization engine failed on a sync route."""

    code = "diarization_failed"
