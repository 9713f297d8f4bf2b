"""The OpenAPI document says what the decoders enforce (schemathesis holds it to that: docs/reliability.md).

Litestar generates the document from the handlers; two things it gets wrong are put right here,
once, on the generated objects (so /openapi.json and the /docs page agree):

- request bodies are documented with msgspec's schema of the structs they are decoded into
  (Litestar's drops constraints inside unions, such as `minimum` of an optional integer, and
  never says `additionalProperties: false` for a struct that refuses unknown fields);
- text fields of Lexia's own bodies (structs that refuse unknown fields) may not hold NUL
  characters (PostgreSQL cannot store one; the decoder answers 422), so their strings carry a
  pattern that says so;
- query and header parameters are never null, so optional ones are documented as their type,
  not as `oneOf [type, null]` (a fuzzer would otherwise send the text "null").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, cast

import msgspec
from litestar.openapi.spec import OpenAPI, Operation, Parameter, PathItem, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: OpenAPI) -> Iterable[Operation]:
    """Every operation of the document."""
    for item in (doc.paths or {}).values():
        if isinstance(item, PathItem):
            for method in _METHODS:
                operation = getattr(item, method)
                if isinstance(operation, Operation):
                    yield operation


def request_components(doc: OpenAPI, body_types: Iterable[Any]) -> list[str]:
    """Replace the components of request structs with msgspec's schemas of them; their names."""
    schemas = doc.components.schemas if doc.components else None
    if schemas is None:
        return []
    _, components = msgspec.json.schema_components(list(body_types), ref_template="#/components/schemas/{name}")
    for name, component in components.items():
        if component.get("additionalProperties") is False:
            forbid_nul(component)
        # Litestar serializes plain dicts as they are (dropping None values, i.e. `default: null`).
        schemas[name] = cast(Schema, component)
    return sorted(components)


NO_NUL = "^[^\\u0000]*$"


def forbid_nul(node: Any) -> Any:
    """Give every string of a JSON Schema (values and object keys) the no-NUL pattern; the schema."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not {"pattern", "enum", "const", "format"} & set(node):
            node["pattern"] = NO_NUL
        names = node.get("propertyNames")
        if isinstance(names, dict) and "pattern" not in names:
            names["pattern"] = NO_NUL
        for key, value in node.items():
            if key not in ("propertyNames", "enum", "const", "default"):
                forbid_nul(value)
    elif isinstance(node, list):
        for item in node:
            forbid_nul(item)
    return node


def _without_null(schema: Schema | Reference | None) -> Schema | Reference | None:
    """`oneOf [X, null]` plus keywords -> X plus the keywords."""
    if not isinstance(schema, Schema) or not schema.one_of:
        return schema
    options = [o for o in schema.one_of if not (isinstance(o, Schema) and o.type == OpenAPIType.NULL)]
    if len(options) != 1 or not isinstance(options[0], Schema) or len(options) == len(schema.one_of):
        return schema
    inner = options[0]
    merged = {f.name: getattr(inner, f.name) for f in dataclasses.fields(Schema) if getattr(inner, f.name) is not None}
    outer = {f.name: getattr(schema, f.name) for f in dataclasses.fields(Schema) if getattr(schema, f.name) is not None}
    return Schema(**{**merged, **{k: v for k, v in outer.items() if k != "one_of"}})


def plain_parameters(doc: OpenAPI) -> int:
    """Query, path and header parameters documented without a null alternative, and free-text
    query parameters with the no-NUL pattern (any NUL in a query is 422); how many changed."""
    changed = 0
    for operation in operations(doc):
        for parameter in operation.parameters or ():
            if not isinstance(parameter, Parameter):
                continue
            plain = _without_null(parameter.schema)
            if (
                parameter.param_in == "query" and isinstance(plain, Schema) and plain.type == OpenAPIType.STRING
                and plain.enum is None and plain.pattern is None and plain.format is None
            ):
                plain = dataclasses.replace(plain, pattern=NO_NUL)
            if plain is not parameter.schema:
                parameter.schema = plain
                changed += 1
    return changed


def finalize(doc: OpenAPI, body_types: Iterable[Any]) -> OpenAPI:
    """Apply every correction to the generated document (in place); the document."""
    request_components(doc, body_types)
    plain_parameters(doc)
    return doc
