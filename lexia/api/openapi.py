"""Request bodies in the OpenAPI document.

Handlers read their bodies themselves (to control error codes and the order of checks), so
Litestar cannot see what they accept. This module adds each body to the generated document:
the msgspec structs the handlers decode with, as JSON Schema components, and for uploads a
multipart form with the binary `file` part.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, Reference, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from lexia.schemas.audio import TranscriptionForm, TranslationForm
from lexia.schemas.diarization import DiarizationRequest
from lexia.schemas.lexia import KeyCreate, KeyPatch, TenantPatch
from lexia.schemas.openai import ChatCompletionRequest, CompletionRequest
from lexia.schemas.transcripts import TranscriptRequest

JSON = "application/json"
MULTIPART = "multipart/form-data"

# (path, method) -> (struct, media types). Uploads are multipart with a `file` part; the
# Lexia job routes also take JSON with `audio_url` instead of a file.
BODIES: dict[tuple[str, str], tuple[type[msgspec.Struct], tuple[str, ...]]] = {
    ("/v1/chat/completions", "post"): (ChatCompletionRequest, (JSON,)),
    ("/v1/completions", "post"): (CompletionRequest, (JSON,)),
    ("/v1/audio/transcriptions", "post"): (TranscriptionForm, (MULTIPART,)),
    ("/v1/audio/translations", "post"): (TranslationForm, (MULTIPART,)),
    ("/v1/transcriptions", "post"): (TranscriptRequest, (MULTIPART, JSON)),
    ("/v1/transcriptions/sync", "post"): (TranscriptRequest, (MULTIPART, JSON)),
    ("/v1/diarization", "post"): (DiarizationRequest, (MULTIPART, JSON)),
    ("/v1/diarization/sync", "post"): (DiarizationRequest, (MULTIPART, JSON)),
    ("/v1/admin/keys", "post"): (KeyCreate, (JSON,)),
    ("/v1/admin/keys/{key_id}", "patch"): (KeyPatch, (JSON,)),
    ("/v1/admin/tenant", "patch"): (TenantPatch, (JSON,)),
}

_REF = "#/components/schemas/{name}"


def _upload(ref: Reference) -> Schema:
    """The struct's fields plus the audio file, as form parts."""
    file_part = Schema(
        type=OpenAPIType.OBJECT,
        properties={"file": Schema(type=OpenAPIType.STRING, format=cast(Any, "binary"), description="The audio")},
    )
    return Schema(all_of=[ref, file_part])


def document_request_bodies(openapi: OpenAPI) -> int:
    """Add the request body of every route in BODIES to `openapi`; return how many were added.

    A route missing from the document (docs of a disabled part) is skipped.
    """
    structs = sorted({struct for struct, _ in BODIES.values()}, key=lambda s: s.__name__)
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    if openapi.components.schemas is None:
        openapi.components.schemas = {}
    # msgspec writes plain JSON Schema dicts; the document serialises them as they are.
    openapi.components.schemas.update(cast(dict[str, Schema], components))
    added = 0
    for (path, method), (struct, media_types) in BODIES.items():
        item = (openapi.paths or {}).get(path)
        operation = getattr(item, method, None) if item is not None else None
        if operation is None:
            continue
        ref = Reference(ref=_REF.format(name=struct.__name__))
        content = {
            media: OpenAPIMediaType(schema=_upload(ref) if media == MULTIPART else ref) for media in media_types
        }
        operation.request_body = RequestBody(content=content, required=True)
        added += 1
    return added
