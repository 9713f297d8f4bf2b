"""Request bodies: strict JSON decoding (the StrictBody DTO), audio bodies (multipart streamed to
disk, or JSON), the multipart encoding rules of API.md §1.1, and how upload routes document theirs.

Every body is decoded in msgspec's strict mode and every failure goes through one converter
(`lexia.api.errors.validation_error`): `param` is the dotted path of the field at fault. Text
fields of Lexia-native bodies may not contain NUL characters (PostgreSQL cannot store them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import msgspec
from litestar import Request
from litestar.dto import AbstractDTO
from litestar.exceptions import InternalServerException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.typing import FieldDefinition

from lexia.api.errors import validation_error
from lexia.api.openapi import forbid_nul
from lexia.errors import (
    ClientDisconnected,
    InvalidJSON,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from lexia.netguard import MAX_URL_LENGTH, URL_PATTERN

T = TypeVar("T")
Req = Request[Any, Any, Any]
JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(request: Req) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(media: str) -> bool:
    """application/json or any +json type."""
    return media == JSON or media.endswith("+json")


def _strict_fields(kind: Any) -> bool:
    """Lexia-native bodies forbid unknown fields; OpenAI mirrors tolerate them (and any text)."""
    config = getattr(kind, "__struct_config__", None)
    return bool(config is not None and config.forbid_unknown_fields)


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or dict key) holding a NUL character, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, msgspec.Struct):
        items: Any = ((name, getattr(value, name)) for name in value.__struct_fields__)
    elif isinstance(value, dict):
        for key in value:
            if isinstance(key, str) and "\x00" in key:
                return path or "body"  # the key itself cannot name the field: the object holding it
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for name, item in items:
        found = find_nul(item, f"{path}.{name}" if path else str(name))
        if found is not None:
            return found
    return None


def reject_nul(value: Any) -> None:
    """422 naming the field when a text field holds a NUL character."""
    found = find_nul(value)
    if found is not None:
        raise ValidationFailed(f"{found}: text may not contain NUL characters", param=found)


# Untyped JSON: a number beyond a double's range becomes ±inf, for the field's type to refuse
# (422 naming it, as a typed decode does) instead of failing the whole body.
_UNTYPED = msgspec.json.Decoder(float_hook=float)
NOT_JSON = "The request body is not valid JSON"
TOO_DEEP = "The request body nests deeper than the server parses"


def parse_json(body: bytes | str) -> Any:
    """Untyped JSON: 400 invalid_json when unparseable, also when nested past the parser's depth."""
    try:
        return _UNTYPED.decode(body)
    except msgspec.DecodeError:
        raise InvalidJSON(NOT_JSON) from None
    except RecursionError:
        raise InvalidJSON(TOO_DEEP) from None


def decode_json(body: bytes, kind: type[T]) -> T:
    """A JSON body into `kind` (strict): 400 invalid_json, 422 naming the field.

    msgspec stops at the first problem, so a field refused before a syntax error further on is
    checked again: a body that is not JSON is 400 whatever its fields (§1.2 check order).
    """
    try:
        value = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raw = parse_json(body)
        if not _float_for_int(exc):
            raise validation_error(str(exc)) from None
        return convert(integral_floats(raw), kind, lax=False)
    except msgspec.DecodeError:
        raise InvalidJSON(NOT_JSON) from None
    except RecursionError:
        raise InvalidJSON(TOO_DEEP) from None
    if _strict_fields(kind) or kind is dict[str, Any]:
        reject_nul(value)
    return value


def _float_for_int(exc: msgspec.ValidationError) -> bool:
    """msgspec refused a float where an int (or an optional int) belongs."""
    message = str(exc)
    return message.startswith("Expected `int") and "got `float`" in message


def integral_floats(value: Any) -> Any:
    """Numbers such as 2.0 as ints, everywhere in parsed JSON.

    JSON Schema's "integer" includes 2.0 and many clients write whole numbers that way; msgspec's
    strict mode refuses a float for an int field, so a body refused for that alone is converted
    again with whole floats as ints (float fields take ints unchanged).
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: integral_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats(v) for v in value]
    return value


def convert(data: dict[str, Any], kind: type[T], *, lax: bool) -> T:
    """Fields already parsed (a JSON object, or multipart fields in lax mode) into `kind`."""
    try:
        try:
            value = msgspec.convert(data, kind, strict=not lax)
        except msgspec.ValidationError as exc:
            if lax or not _float_for_int(exc):
                raise
            value = msgspec.convert(integral_floats(data), kind, strict=True)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    if _strict_fields(kind):
        reject_nul(value)
    return value


class StrictBody(AbstractDTO[T]):
    """The app's DTO for `data` parameters: strict msgspec decoding with Lexia's errors.

    Litestar decodes request bodies in lax mode (a string "2" is accepted for an integer) and
    reports failures in its own shape; this DTO keeps JSON strict, answers 415 for another media
    type, and documents the body as the struct it is (Litestar generates its schema).
    """

    _types: ClassVar[dict[str, Any]] = {}  # handler id -> the `data` annotation

    @classmethod
    def body_types(cls) -> list[Any]:
        """Every `data` annotation seen (the JSON request bodies)."""
        return list(cls._types.values())

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[Any, None, None]:
        """Unused: no transfer model is generated."""
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        """Unused: no transfer model is generated."""
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Remember the body type of a handler."""
        if field_definition.name == "data":
            cls._types[handler_id] = field_definition.annotation

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any) -> Any:
        """The body's schema, as Litestar generates it for the struct."""
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(field_definition.annotation))

    def decode_bytes(self, value: bytes) -> Any:
        """Decode a JSON body strictly (415 for another media type)."""
        connection = self.asgi_connection
        media = connection.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not is_json(media):
            raise UnsupportedMediaType("Content-Type must be application/json", code="unsupported_content_type")
        return decode_json(value, self._types[connection.route_handler.handler_id])

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        """Unused for JSON bodies."""
        return convert(value, self._types[self.asgi_connection.route_handler.handler_id], lax=False)


# -- audio bodies -------------------------------------------------------------------------------


async def body_chunks(request: Req) -> AsyncIterator[bytes]:
    """The raw body as it arrives (a disconnect becomes ClientDisconnected)."""
    try:
        async for chunk in request.stream():
            yield chunk
    except InternalServerException:
        # Litestar signals an http.disconnect while streaming this way.
        raise ClientDisconnected("The client disconnected while sending the request body") from None


async def read_json_object(request: Req, limit: int) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes (413 request_too_large beyond)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The JSON body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The JSON body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = parse_json(b"".join(chunks))
    if not isinstance(raw, dict):
        raise ValidationFailed("The request body must be a JSON object")
    return raw


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
                value = _UNTYPED.decode(value)
            except (msgspec.DecodeError, RecursionError):
                raise ValidationFailed(f"{name} must be a JSON-encoded object", param=name) from None
        data[name] = value
    return data


@dataclass(frozen=True, slots=True)
class FormShape:
    """How a route's multipart fields are encoded: its list fields and its JSON-object fields."""

    lists: frozenset[str] = frozenset()
    objects: frozenset[str] = frozenset()


# -- documenting upload bodies ------------------------------------------------------------------


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """A JSON Schema with its local `$defs` references replaced by their definitions."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _not_null(node: Any) -> Any:
    """A field schema without its `null` alternative (form fields and required fields are never null)."""
    if isinstance(node, dict) and "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest} if len(options) == 1 else {**rest, "anyOf": options}
    return node


URL_FIELD = {"pattern": URL_PATTERN, "maxLength": MAX_URL_LENGTH}  # exactly what netguard.parse accepts
BINARY = {"type": "string", "format": "binary"}


def upload_schemas(
    kind: type[msgspec.Struct], *, json_alternative: bool, without: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """The multipart (and JSON) body schemas of an upload route, from the struct the route decodes.

    Multipart: the struct's fields (never null) and the audio as `file`; JSON: the fields with
    `audio_url` required. Fields the decoder refuses are refused by the schema (additionalProperties).
    """
    schema = msgspec.json.schema(kind)
    fields = _inline(schema, schema.get("$defs", {}))
    if _strict_fields(kind):
        forbid_nul(fields)
    props = {name: node for name, node in fields["properties"].items() if name not in without}
    for name in ("audio_url", "webhook_url"):
        if name in props:
            props[name] = {"anyOf": [{**_not_null(props[name]), **URL_FIELD}, {"type": "null"}]}
    form = {name: _not_null(node) for name, node in props.items()}
    base = {k: v for k, v in fields.items() if k not in ("properties", "required", "title", "description")}
    required = list(fields.get("required", ()))
    multipart: dict[str, Any] = {**base, "type": "object", "properties": {**form, "file": BINARY}}
    if not json_alternative:
        multipart["required"] = [*required, "file"]
        return {MULTIPART: multipart}
    # Multipart also takes `audio` for `file`, or an `audio_url` instead of either (exactly one
    # source): a `oneOf` of required sets would say so, but fuzzers cannot generate binary parts
    # under it, so the form is documented with `file` and JSON with `audio_url`.
    multipart["properties"].pop("audio_url", None)
    multipart["required"] = [*required, "file"]
    body = {
        **base, "type": "object", "properties": {**props, "audio_url": form["audio_url"]},
        "required": [*required, "audio_url"],
    }
    return {MULTIPART: multipart, JSON: body}


def upload_operation(
    kind: type[msgspec.Struct], *, json_alternative: bool, without: tuple[str, ...] = ()
) -> type[Operation]:
    """An Operation class documenting a streamed upload body (see `upload_schemas`); fields in
    `without` are refused on this route (422) and left out of its schema."""
    content = {
        media: OpenAPIMediaType(schema=cast(Schema, schema))
        for media, schema in upload_schemas(kind, json_alternative=json_alternative, without=without).items()
    }
    body = RequestBody(content=content, required=True, description=f"{kind.__name__} fields and the audio")

    @dataclass
    class UploadOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    UploadOperation.__name__ = f"{kind.__name__}Upload"
    return UploadOperation
