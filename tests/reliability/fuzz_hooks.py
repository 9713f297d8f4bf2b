"""Schemathesis hooks for Lexia's fuzz run (loaded through `hooks` in the generated config).

`positive_data_acceptance` fails whenever a schema-valid request is refused. A few of Lexia's
rules cannot be written in JSON Schema (they depend on the time, on another field or parameter,
on the audio's bytes or on the network); those refusals are listed in RULES with the reason, and
`positive_data_acceptance_or_documented_rule` (which replaces the built-in check) accepts exactly
them: the same operation, status, error code and `param`. Anything else still fails.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import schemathesis
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free


@dataclass(frozen=True)
class Rule:
    """A refusal of schema-valid input that the schema cannot express."""

    operations: str  # regex over "METHOD /path"
    statuses: tuple[int, ...]
    code: str  # the error envelope's `code`
    param: str  # regex over the envelope's `param` ("" for null)
    why: str


AUDIO_UPLOADS = r"POST /v1/(audio/(transcriptions|translations)|transcriptions(/sync)?|diarization(/sync)?)"
JOB_UPLOADS = r"POST /v1/(transcriptions|diarization)(/sync)?"
LLM = r"POST /v1/(chat/)?completions"
AUDIO_ERRORS = (400, 413, 415)

RULES: tuple[Rule, ...] = (
    # The audio's bytes: a schema says "binary"; only decoding tells audio from anything else.
    Rule(AUDIO_UPLOADS, AUDIO_ERRORS, "audio_decode_failed", "file|audio", "the bytes are not audio"),
    Rule(AUDIO_UPLOADS, AUDIO_ERRORS, "empty_audio", "file|audio", "an empty file or one without samples"),
    Rule(AUDIO_UPLOADS, AUDIO_ERRORS, "no_audio_stream", "file|audio", "a container without an audio stream"),
    Rule(AUDIO_UPLOADS, AUDIO_ERRORS, "audio_too_short", "file|audio", "audio under 0.1 s"),
    Rule(AUDIO_UPLOADS, AUDIO_ERRORS, "audio_too_long", "file|audio", "audio over the configured maximum"),
    # The network: whether a host resolves, answers and is public is known only when it is fetched.
    Rule(JOB_UPLOADS, (400, 413, 415, 422), "audio_fetch_failed", "audio_url", "the sync routes fetch audio_url"),
    Rule(JOB_UPLOADS, (422,), "url_not_allowed", "audio_url|webhook_url", "the host resolves to a private address"),
    Rule(JOB_UPLOADS, (422,), "invalid_url", "audio_url|webhook_url", "a host name httpx cannot encode (IDNA)"),
    # The engine: the languages a speech model knows are the engine's, not the schema's.
    Rule(AUDIO_UPLOADS, (400, 422), "unsupported_language", "language|language_code", "the model lacks it"),
    # Two fields together (JSON Schema could say some with dependentSchemas; generators ignore them).
    Rule(JOB_UPLOADS, (422,), "validation_error",
         "word_boost|num_speakers|min_speakers|max_speakers|speakers_expected|speaker_options(\\..*)?"
         "|(speaker_options\\.)?(min|max)_speakers_expected|language_detection|language_code"
         "|webhook_url|webhook_auth_header_name|webhook_auth_header_value",
         "an alias and its field together, speaker hints that contradict each other, a count over the"
         " server's maximum (a setting), language_detection against language_code, the webhook header"
         " pair, a webhook header name HTTP reserves"),
    Rule(AUDIO_UPLOADS, (422,), "validation_error", "keyterms_prompt|word_boost|prompt",
         "keyterms counted in characters across items"),
    Rule(r"POST /v1/audio/transcriptions", (422,), "validation_error",
         "speakers_expected|(min|max)_speakers_expected|timestamp_granularities|stream|response_format",
         "speaker hints or word timestamps against the response format, stream with a non-streaming format"),
    Rule(LLM, (422,), "validation_error",
         "messages(\\.\\d+(\\..*)?)?|prompt|n|stream_options|min_tokens|tool_choice|top_logprobs|stop"
         "|logit_bias|tools(\\..*)?|response_format(\\..*)?|max_tokens|max_completion_tokens",
         "role-specific message fields, n over the server's maximum (a setting), stream_options without"
         " stream, min_tokens over max_tokens, tool_choice without tools, top_logprobs without logprobs,"
         " logit_bias keys that are not token ids"),
    Rule(LLM, (400,), "context_length_exceeded", "messages|prompt|max_tokens|max_completion_tokens",
         "the prompt's length in tokens"),
    # The time: a key's expiry must lie in the future when the request arrives (and before 10000).
    Rule(r"(POST|PATCH) /v1/admin/keys.*", (422,), "validation_error", "expires_at", "expiry in the past"),
    # Two parameters together: start after end, or a range over 366 days.
    Rule(r"GET /v1/usage", (422,), "validation_error", "start", "start after end or a range over 366 days"),
    # A resource's state: deleted resources answer 410, exports of unfinished ones 409.
    Rule(r".*", (410,), "deleted", "", "the resource (or its audio) was deleted"),
    Rule(r"GET /v1/(transcriptions|diarization)/.*", (409,), "not_ready", "", "not completed yet"),
)


if os.environ.get("LEXIA_FUZZ_NO_RULES"):  # the harness's self-test: the check must then fail
    RULES = ()


def documented(operation: str, status: int, body: Any) -> Rule | None:
    """The rule that explains this refusal, if any."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code, param = error.get("code"), error.get("param") or ""
    for rule in RULES:
        if (
            status in rule.statuses
            and rule.code == code
            and re.fullmatch(rule.operations, operation)
            and re.fullmatch(rule.param, str(param))
        ):
            return rule
    return None


def _excused(check: Any, excuse: Any, ctx: Any, response: Any, case: Any) -> bool | None:
    """Run a built-in check; a failure stands unless `excuse(case, status, body)` explains it."""
    try:
        return check(ctx, response, case)  # type: ignore[no-any-return]
    except Failure as failure:
        try:
            body = json.loads(response.content or b"null")
        except ValueError:
            raise failure from None
        if not excuse(case, response.status_code, body):
            raise
        return None


def _tombstone(case: Any, status: int, body: Any) -> bool:
    return isinstance(body, dict) and bool(
        body.get("revoked_at") or body.get("deleted_at") or body.get("status") == "cancelled"
    )


@schemathesis.check
def positive_data_acceptance_or_documented_rule(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, except refusals that a documented rule explains."""
    return _excused(positive_data_acceptance, lambda c, status, body: documented(c.operation.label, status, body)
                    is not None, ctx, response, case)


@schemathesis.check
def use_after_free_or_tombstone(ctx: Any, response: Any, case: Any) -> bool | None:
    """use_after_free, except the records Lexia keeps on purpose after a DELETE.

    DELETE /v1/admin/keys/{id} revokes the key: GET shows it with `revoked_at` (API.md §8.2).
    DELETE of a transcript or diarization erases its content and keeps a tombstone with
    `deleted_at` (API.md §4.5); exports of it answer 410. DELETE /v1/jobs/{id} cancels the job:
    GET shows it `cancelled` (API.md §5).
    """
    return _excused(use_after_free, _tombstone, ctx, response, case)
